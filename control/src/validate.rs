//! Argument checks shared by the server (authoritative) and `ferroxctl`. Sizes with
//! units follow the one rule of [`ferrox_bdev::size`].

pub use ferrox_bdev::size::human;

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

/// A label key or value: 1 to 63 bytes of ASCII letters, digits, '.', '_' and '-',
/// starting and ending with a letter or digit (Kubernetes' rule for values).
fn label_part(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("{what} {s:?} must be 1 to 63 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} {s:?} contains {c:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(s.chars().next()) || !alnum(s.chars().last()) {
        return Err(format!(
            "{what} {s:?} must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// Node labels, `zone=z1,rack=r1`: keys are lowercase, unique, and not `node`
/// (placement's name for the node itself).
pub fn labels(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    if s.trim().is_empty() {
        return Ok(out);
    }
    for item in s.split(',') {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected KEY=VALUE"))?;
        let (k, v) = (k.trim(), v.trim());
        label_part("key", k)?;
        if k.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!("key {k:?} must be lowercase"));
        }
        if k == "node" {
            return Err("key \"node\" is reserved (it names the node itself)".into());
        }
        label_part("value", v).map_err(|e| format!("{k}: {e}"))?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("key {k:?} is given twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
