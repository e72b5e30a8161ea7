//! NVMe Qualified Names (NVMe base 2.0 section 4.5).

/// Longest NQN in bytes, excluding the NUL terminator.
pub const NQN_MAX_LEN: usize = 223;
/// Size of an NQN field in Connect data, Identify Controller and discovery log entries.
pub const NQN_FIELD_LEN: usize = 256;
/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Prefix of an NQN made from a UUID; 36 UUID characters follow.
pub const UUID_NQN_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// Why a string is not a valid NQN, or why an NQN field could not be read or written.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NqnError {
    /// The NQN is empty.
    #[error("NQN is empty")]
    Empty,
    /// The NQN is longer than allowed.
    #[error("NQN is {len} bytes long, more than the {max}-byte limit")]
    TooLong {
        /// Length in bytes.
        len: usize,
        /// Largest allowed length in bytes.
        max: usize,
    },
    /// The NQN does not start with `nqn.`.
    #[error("NQN does not start with \"nqn.\"")]
    MissingPrefix,
    /// The date after `nqn.` is not `yyyy-mm.`.
    #[error("NQN date is not of the form yyyy-mm followed by '.'")]
    InvalidDate,
    /// The month of the date is not 01–12.
    #[error("NQN month {0:02} is not in 01-12")]
    InvalidMonth(u8),
    /// Nothing follows the date.
    #[error("NQN has no reverse domain name after the date")]
    MissingDomain,
    /// The reverse domain name has an empty label or a character other than
    /// letters, digits and '-'.
    #[error("NQN reverse domain name is not a valid domain name")]
    InvalidDomain,
    /// A ':' is not followed by a naming-authority string.
    #[error("NQN has nothing after ':'")]
    EmptyUserString,
    /// A UUID NQN does not end with a canonical 8-4-4-4-12 hexadecimal UUID.
    #[error("NQN UUID is not a canonical 36-character UUID")]
    InvalidUuid,
    /// The string holds a NUL byte.
    #[error("NQN contains a NUL byte")]
    ContainsNul,
    /// The string holds a control character (ESC, BEL, a line break …), which would
    /// rewrite the terminal or forge lines in the log of whoever prints it.
    #[error("NQN contains a control or invisible formatting character at byte {offset}")]
    ControlCharacter {
        /// Byte offset of the first one.
        offset: usize,
    },
    /// A fixed-size NQN field has no NUL terminator.
    #[error("NQN field is not NUL-terminated")]
    NotTerminated,
    /// A fixed-size NQN field is not UTF-8.
    #[error("NQN field is not valid UTF-8")]
    InvalidUtf8,
}

/// Checks that `nqn` is a valid NVMe Qualified Name.
///
/// Accepted forms:
/// - `nqn.yyyy-mm.<reverse domain>` optionally followed by `:<string>` with a non-empty
///   string (this covers [`DISCOVERY_NQN`]). The year is four digits, the month 01–12, and
///   the reverse domain is one or more non-empty dot-separated labels of ASCII letters,
///   digits and '-'.
/// - [`UUID_NQN_PREFIX`] followed by a canonical UUID (hex digits of either case).
///
/// The whole name is at most [`NQN_MAX_LEN`] bytes and holds no NUL and no other
/// control character (C0, DEL or C1): the name is UTF-8, and printed by tools and logs.
///
/// # Errors
/// The first rule broken, as an [`NqnError`].
pub fn validate_nqn(nqn: &str) -> Result<(), NqnError> {
    if nqn.is_empty() {
        return Err(NqnError::Empty);
    }
    if nqn.len() > NQN_MAX_LEN {
        return Err(NqnError::TooLong {
            len: nqn.len(),
            max: NQN_MAX_LEN,
        });
    }
    if nqn.as_bytes().contains(&0) {
        return Err(NqnError::ContainsNul);
    }
    if let Some((offset, _)) = nqn
        .char_indices()
        .find(|&(_, c)| c.is_control() || is_invisible_format(c))
    {
        return Err(NqnError::ControlCharacter { offset });
    }
    if let Some(uuid) = nqn.strip_prefix(UUID_NQN_PREFIX) {
        return if is_canonical_uuid(uuid) {
            Ok(())
        } else {
            Err(NqnError::InvalidUuid)
        };
    }
    let rest = nqn.strip_prefix("nqn.").ok_or(NqnError::MissingPrefix)?;
    let bytes = rest.as_bytes();
    let date_ok = bytes.len() >= 8
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5..7].iter().all(u8::is_ascii_digit)
        && bytes[7] == b'.';
    if !date_ok {
        return Err(NqnError::InvalidDate);
    }
    let month = (bytes[5] - b'0') * 10 + (bytes[6] - b'0');
    if !(1..=12).contains(&month) {
        return Err(NqnError::InvalidMonth(month));
    }
    let after_date = &rest[8..];
    let (domain, user) = match after_date.split_once(':') {
        Some((domain, user)) => (domain, Some(user)),
        None => (after_date, None),
    };
    if domain.is_empty() {
        return Err(NqnError::MissingDomain);
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !domain.split('.').all(label_ok) {
        return Err(NqnError::InvalidDomain);
    }
    if user.is_some_and(str::is_empty) {
        return Err(NqnError::EmptyUserString);
    }
    Ok(())
}

/// Characters that reorder or hide text when printed (bidirectional overrides and
/// isolates, zero-width characters, line and paragraph separators, the BOM): a name
/// holding one can show as another name in a table or a log.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// Whether `nqn` is the well-known discovery NQN.
#[must_use]
pub fn is_discovery_nqn(nqn: &str) -> bool {
    nqn == DISCOVERY_NQN
}

fn is_canonical_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests;
