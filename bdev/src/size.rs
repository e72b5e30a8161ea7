//! Sizes as people type them: one rule for every input of every Ferrox tool (the
//! daemon's TOML and flags, `ferroxctl`, `ferrox-perf`), and [`human`] to print them.
//!
//! | written | read as |
//! |---|---|
//! | `4096`, `4096B` | bytes |
//! | `4k`, `4K`, `4Ki`, `4KiB` (and `m`, `g`, `t`) | binary: ×1024, ×1024², ×1024³, ×1024⁴ |
//! | `4kB`, `4KB`, `4MB`, `4GB`, `4TB` | decimal: ×1000, ×1000², ×1000³, ×1000⁴ |
//!
//! The way `numfmt` and the SI/IEC standards spell them: an `i` (or no `B` at all)
//! means powers of 1024, a bare `B` after the prefix means powers of 1000. Case is not
//! significant (`10gib`, `10G`, `10gb` and `10GB` all parse). Space may separate the
//! number from its unit. A fraction is read exactly (`1.5GiB`), and must come to a
//! whole number of bytes; a size beyond `u64::MAX` bytes is an error.
//!
//! `ferroxctl`, `ferrox-perf` and the control plane read `kB`/`MB`/`GB`/`TB` as
//! binary before this rule; they use [`parse_legacy_binary`], which refuses those
//! spellings with both readings and the spellings to use, so that no input is ever
//! silently read as a different size. The daemon always read them as decimal and
//! accepts them ([`parse`]).

/// What a unit counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// No unit, or `B`.
    Bytes,
    /// `k`, `Ki`, `KiB` …: powers of 1024.
    Binary,
    /// `kB`, `MB`, `GB`, `TB`: powers of 1000.
    Decimal,
}

/// A parsed size: its bytes and how its unit counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub bytes: u64,
    pub base: Base,
}

/// The rule in one line, for error messages.
pub const RULE: &str =
    "k, m, g, t, KiB, MiB, GiB, TiB are powers of 1024; kB, MB, GB, TB are powers of 1000";

/// Why a size was refused. Every message starts with the text as given, quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    #[error("{text:?}: expected bytes, or a number with a unit ({RULE})")]
    NoNumber { text: String },
    #[error("{text:?}: unknown unit {unit:?} ({RULE})")]
    UnknownUnit { text: String, unit: String },
    #[error("{text:?} is not a whole number of bytes")]
    NotWhole { text: String },
    #[error("{text:?} has more decimal places than a size can use")]
    TooPrecise { text: String },
    #[error("{text:?} is more than {} bytes", u64::MAX)]
    TooLarge { text: String },
    /// A decimal unit given to a tool that read it as binary before: `bytes` is the
    /// decimal reading.
    #[error("{}", was_binary(text, *bytes, tool))]
    WasBinary {
        text: String,
        bytes: u64,
        tool: &'static str,
    },
}

/// `"10GB": GB is decimal (10,000,000,000 bytes) but ferroxctl read it as 10 GiB
/// before; write 10GiB or 10G for binary, or 10000000000`.
fn was_binary(text: &str, bytes: u64, tool: &str) -> String {
    let (number, unit) = split(text);
    let (binary, short) = match unit.bytes().next().map(|c| c.to_ascii_lowercase()) {
        Some(b'k') => ("KiB", "K"),
        Some(b'm') => ("MiB", "M"),
        Some(b'g') => ("GiB", "G"),
        _ => ("TiB", "T"),
    };
    format!(
        "{text:?}: {unit} is decimal ({} bytes) but {tool} read it as {number} {binary} \
         before; write {number}{binary} or {number}{short} for binary, or {bytes}",
        grouped(bytes)
    )
}

/// Parses a size by the rule above, to bytes.
pub fn parse(text: &str) -> Result<u64, SizeError> {
    parse_spelled(text).map(|s| s.bytes)
}

/// Parses a size by the rule above, and says how its unit counted.
pub fn parse_spelled(text: &str) -> Result<Size, SizeError> {
    let (number, unit) = split(text);
    let owned = || text.to_string();
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(SizeError::NoNumber { text: owned() });
    }
    let (base, mult) = unit_of(unit).ok_or_else(|| SizeError::UnknownUnit {
        text: owned(),
        unit: unit.to_string(),
    })?;
    // Exact arithmetic in u128: at most 20 integer digits (u64::MAX has 20) and 20
    // fraction digits, times at most 2^40, stays far below u128::MAX.
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if int.len() > 20 {
        return Err(SizeError::TooLarge { text: owned() });
    }
    if frac.len() > 20 {
        return Err(SizeError::TooPrecise { text: owned() });
    }
    let digits = |s: &str| s.parse::<u128>().unwrap_or(0); // only digits, or empty
    let scale = 10u128.pow(frac.len() as u32);
    let frac_bytes = digits(frac) * mult;
    if frac_bytes % scale != 0 {
        return Err(SizeError::NotWhole { text: owned() });
    }
    let bytes = digits(int) * mult + frac_bytes / scale;
    let bytes = u64::try_from(bytes).map_err(|_| SizeError::TooLarge { text: owned() })?;
    Ok(Size { bytes, base })
}

/// Parses a size for `tool`, which read `kB`/`MB`/`GB`/`TB` as binary before this
/// rule: those spellings are refused, naming both readings and what to write instead.
/// Every other spelling reads as [`parse`] reads it.
pub fn parse_legacy_binary(text: &str, tool: &'static str) -> Result<u64, SizeError> {
    let s = parse_spelled(text)?;
    if s.base != Base::Decimal {
        return Ok(s.bytes);
    }
    Err(SizeError::WasBinary {
        text: text.to_string(),
        bytes: s.bytes,
        tool,
    })
}

/// "10 GiB", "1.5 GiB", "100 B": binary units, one decimal place when not whole.
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

/// The number (digits and dots) and the unit (the rest, spaces between skipped).
fn split(text: &str) -> (&str, &str) {
    let t = text.trim();
    let at = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(at);
    (number, unit.trim_start())
}

fn unit_of(unit: &str) -> Option<(Base, u128)> {
    let u = unit.to_ascii_lowercase();
    let (prefix, rest) = match u.char_indices().nth(1) {
        Some((i, _)) => u.split_at(i),
        None if u.is_empty() || u == "b" => return Some((Base::Bytes, 1)),
        None => (u.as_str(), ""),
    };
    let power = match prefix {
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        _ => return None,
    };
    match rest {
        "" | "i" | "ib" => Some((Base::Binary, 1024u128.pow(power))),
        "b" => Some((Base::Decimal, 1000u128.pow(power))),
        _ => None,
    }
}

/// 10000000000 as "10,000,000,000".
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
