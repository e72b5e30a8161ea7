//! Argument checks shared by the server (authoritative) and `ferroxctl`. Sizes with
//! units follow the one rule of [`ferrox_bdev::size`].
//!
//! Node labels (`--labels zone=z1,rack=r1`) and the `spread` of a placement follow
//! Kubernetes' label syntax, so the labels a CSI driver or an operator already uses
//! for failure domains carry over unchanged:
//!
//! * a key is an optional prefix and a name, `[prefix/]name`. The prefix is a DNS
//!   subdomain: at most [`MAX_LABEL_PREFIX`] characters, dot-separated parts of
//!   lower-case letters, digits and '-', each 1 to 63 characters and beginning and
//!   ending with a letter or digit (`topology.kubernetes.io/zone`);
//! * a name and a value are 1 to [`MAX_LABEL`] characters matching
//!   `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`. Unlike Kubernetes, a value is never
//!   empty: an empty value would make "" a failure domain of its own;
//! * the key `node` is reserved: `spread node` means the node itself
//!   ([`crate::placement::SPREAD_NODE`]), so no label may compete with it.
//!
//! Volume labels (`CreateVolumeRequest.labels`) are free-form metadata with their own,
//! looser check in the server; these rules are for node labels and placement.

use std::collections::BTreeMap;

pub use ferrox_bdev::size::human;

use crate::error::ControlError;
use crate::placement::{MAX_REPLICAS, SPREAD_NODE};

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

/// Longest label key name, and longest label value.
pub const MAX_LABEL: usize = 63;

/// Longest DNS prefix of a label key.
pub const MAX_LABEL_PREFIX: usize = 253;

/// A label key name or value: why it is not `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
/// of 1 to [`MAX_LABEL`] characters.
fn label_segment(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > MAX_LABEL {
        return Err(format!(
            "is {} characters long, more than {MAX_LABEL}",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains {c:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if !s.starts_with(alnum) || !s.ends_with(alnum) {
        return Err("must begin and end with a letter or digit".into());
    }
    Ok(())
}

/// A label key prefix: why it is not a DNS subdomain.
fn dns_prefix(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > MAX_LABEL_PREFIX {
        return Err(format!(
            "is {} characters long, more than {MAX_LABEL_PREFIX}",
            s.len()
        ));
    }
    for part in s.split('.') {
        let ok = (1..=63).contains(&part.len())
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-');
        if !ok {
            return Err(format!(
                "is not a DNS name: {part:?} must be 1 to 63 lower-case letters, digits \
                 and '-', beginning and ending with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// A label key: `[prefix/]name` (see the module's rules). `node` passes here; node
/// labels refuse it in [`node_labels`].
pub fn label_key(field: &'static str, key: &str) -> Result<(), ControlError> {
    match key.split_once('/') {
        Some((prefix, name)) => {
            dns_prefix(prefix).map_err(|why| {
                ControlError::invalid(field, format!("key {key:?}: prefix {prefix:?} {why}"))
            })?;
            label_segment(name).map_err(|why| {
                ControlError::invalid(field, format!("key {key:?}: name {name:?} {why}"))
            })
        }
        None => label_segment(key)
            .map_err(|why| ControlError::invalid(field, format!("key {key:?} {why}"))),
    }
}

/// The value of label `key`.
pub fn label_value(field: &'static str, key: &str, value: &str) -> Result<(), ControlError> {
    label_segment(value)
        .map_err(|why| ControlError::invalid(field, format!("value {value:?} of {key:?} {why}")))
}

/// A node's labels: every key and value, and no key `node`.
pub fn node_labels(
    field: &'static str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ControlError> {
    for (k, v) in labels {
        label_key(field, k)?;
        if k == SPREAD_NODE {
            return Err(ControlError::invalid(
                field,
                format!("key {k:?} is reserved: spread over {k:?} means the node itself"),
            ));
        }
        label_value(field, k, v)?;
    }
    Ok(())
}

/// Parses a node's `--labels` (`zone=z1,rack=r1`; empty: none) and checks them as
/// [`node_labels`] does. A key given twice is refused, not overwritten.
pub fn parse_labels(
    field: &'static str,
    text: &str,
) -> Result<BTreeMap<String, String>, ControlError> {
    let mut labels = BTreeMap::new();
    if text.is_empty() {
        return Ok(labels);
    }
    for item in text.split(',') {
        if item.is_empty() {
            return Err(ControlError::invalid(
                field,
                format!("{text:?} has an empty label; write key=value,key=value"),
            ));
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(ControlError::invalid(
                field,
                format!("{item:?} has no '='; write key=value"),
            ));
        };
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ControlError::invalid(
                field,
                format!("key {k:?} is given twice"),
            ));
        }
    }
    node_labels(field, &labels)?;
    Ok(labels)
}

/// The number of replicas of a volume: 1 to [`MAX_REPLICAS`]. (`CreateVolumeRequest`
/// reads an unset 0 as 1 before it asks.)
pub fn replicas(field: &'static str, n: u32) -> Result<(), ControlError> {
    if !(1..=MAX_REPLICAS).contains(&n) {
        return Err(ControlError::invalid(
            field,
            format!("must be 1 to {MAX_REPLICAS}, not {n}"),
        ));
    }
    Ok(())
}

/// The failure-domain key of a placement: a label key, or `node` (also for empty),
/// which it returns. Whether any node has that label is for placement to say
/// ([`crate::placement::PlacementError::UnknownSpread`]).
pub fn spread<'a>(field: &'static str, key: &'a str) -> Result<&'a str, ControlError> {
    if key.is_empty() || key == SPREAD_NODE {
        return Ok(SPREAD_NODE);
    }
    label_key(field, key)?;
    Ok(key)
}

/// A node's `--labels` (`zone=z1, rack=r1`: spaces around items ignored), checked as
/// [`parse_labels`] checks them; the message leads with what was wrong.
pub fn labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let text = s.split(',').map(str::trim).collect::<Vec<_>>().join(",");
    parse_labels("labels", text.trim_matches(',')).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
