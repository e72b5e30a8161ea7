//! Argument checks shared by the server (authoritative) and `ferroxctl`, and sizes
//! with units.

use crate::error::ControlError;

/// Longest object name (the lvol metadata limit).
pub const MAX_NAME: usize = ferrox_bdev::lvol::MAX_NAME;

/// The prefix of generated subsystem NQNs: `<prefix><volume>`.
pub const NQN_PREFIX: &str = "nqn.2026-11.io.ferrox:volume:";

/// A pool, volume or snapshot name: 1 to [`MAX_NAME`] bytes of ASCII letters, digits,
/// '.', '_' and '-', not starting with '.' or '-'.
pub fn name(field: &'static str, s: &str) -> Result<(), ControlError> {
    if s.is_empty() {
        return Err(ControlError::invalid(field, "must not be empty"));
    }
    if s.len() > MAX_NAME {
        return Err(ControlError::invalid(
            field,
            format!("{s:?} is {} bytes long, more than {MAX_NAME}", s.len()),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ControlError::invalid(
            field,
            format!("{s:?} contains {c:?}; use letters, digits, '.', '_' and '-'"),
        ));
    }
    if s.starts_with(['.', '-']) {
        return Err(ControlError::invalid(
            field,
            format!("{s:?} must not start with '.' or '-'"),
        ));
    }
    Ok(())
}

/// A non-zero multiple of `unit`.
pub fn size(field: &'static str, bytes: u64, unit: u64) -> Result<(), ControlError> {
    if bytes == 0 {
        return Err(ControlError::invalid(field, "must not be zero"));
    }
    if bytes.rem_euclid(unit) != 0 {
        return Err(ControlError::invalid(
            field,
            format!(
                "{bytes} ({}) is not a multiple of {} ({unit} bytes)",
                human(bytes),
                human(unit)
            ),
        ));
    }
    Ok(())
}

/// An NVMe Qualified Name.
pub fn nqn(field: &'static str, s: &str) -> Result<(), ControlError> {
    ferrox_nvme_spec::validate_nqn(s)
        .map_err(|e| ControlError::invalid(field, format!("{s:?} is not a valid NQN: {e}")))
}

/// Parses "10GiB", "512MiB", "4096", "1.5GiB", "1G" (binary units; "k/M/G/T" mean KiB…).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (use B, KiB, MiB, GiB, TiB)")),
    };
    if num.is_empty() {
        return Err(format!("{s:?}: no number"));
    }
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("{s:?}: too large"));
    }
    let f: f64 = num.parse().map_err(|_| format!("{s:?}: not a number"))?;
    let bytes = f * mult as f64;
    if !(0.0..1.8e19).contains(&bytes) || bytes.fract() != 0.0 {
        return Err(format!("{s:?}: not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// "10.0 GiB".
pub fn human(bytes: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}

#[cfg(test)]
mod tests;
