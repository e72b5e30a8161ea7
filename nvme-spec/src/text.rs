//! Fixed-size text fields: space-padded ASCII (serial number, model, transport address)
//! and NUL-terminated UTF-8 (NQNs).

use super::nqn::NqnError;

/// Fills `field` with `s` followed by `pad` bytes. A too-long `s` is truncated at a
/// character boundary; returns whether it fit.
pub fn copy_padded(field: &mut [u8], s: &str, pad: u8) -> bool {
    let mut len = s.len().min(field.len());
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    field[..len].copy_from_slice(&s.as_bytes()[..len]);
    field[len..].fill(pad);
    len == s.len()
}

/// The field without trailing spaces and NULs.
#[must_use]
pub fn trim_padded(field: &[u8]) -> &[u8] {
    let end = field
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i + 1);
    &field[..end]
}

/// Reads a NUL-terminated UTF-8 string (such as an NQN field) from a fixed-size field.
///
/// # Errors
/// [`NqnError::NotTerminated`] if the field has no NUL; [`NqnError::InvalidUtf8`] if the
/// bytes before it are not UTF-8.
pub fn read_nul_terminated(field: &[u8]) -> Result<&str, NqnError> {
    let end = field
        .iter()
        .position(|&b| b == 0)
        .ok_or(NqnError::NotTerminated)?;
    core::str::from_utf8(&field[..end]).map_err(|_| NqnError::InvalidUtf8)
}

/// Writes `s` into `field` followed by NULs up to the end.
///
/// # Errors
/// [`NqnError::TooLong`] if `s` and its terminator do not fit; [`NqnError::ContainsNul`]
/// if `s` holds a NUL.
pub fn write_nul_terminated(field: &mut [u8], s: &str) -> Result<(), NqnError> {
    if s.len() >= field.len() {
        return Err(NqnError::TooLong {
            len: s.len(),
            max: field.len().saturating_sub(1),
        });
    }
    if s.as_bytes().contains(&0) {
        return Err(NqnError::ContainsNul);
    }
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()..].fill(0);
    Ok(())
}
