//! `--verify` headers: every 512-byte sector a write carries starts with
//!
//! ```text
//! byte 0       8        16           24      32
//!      | magic | sector | generation | seed  |
//! ```
//!
//! (little-endian u64s). `magic` is `FXPERFV1`; `sector` is the 512-byte sector
//! number on the device (so misdirected writes are caught); `generation` is
//! `writer core index << 48 | that core's write count`; `seed` is the run's seed (so
//! data left by an earlier run is not taken for this run's). A read checks every
//! sector of its buffer. A sector of zeros is "never written": an error only when the
//! run wrote the whole range first.

use crate::stats::Mismatch;

pub const SECTOR: usize = 512;
pub const MAGIC: u64 = u64::from_le_bytes(*b"FXPERFV1");
/// Bits of `generation` below the writer's core index.
pub const GEN_CORE_SHIFT: u32 = 48;

/// Writes a header at the start of every sector of `buf`, the first being device
/// sector `first_sector`.
pub fn stamp(buf: &mut [u8], first_sector: u64, generation: u64, seed: u64) {
    for (i, sector) in buf.chunks_exact_mut(SECTOR).enumerate() {
        sector[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        sector[8..16].copy_from_slice(&(first_sector + i as u64).to_le_bytes());
        sector[16..24].copy_from_slice(&generation.to_le_bytes());
        sector[24..32].copy_from_slice(&seed.to_le_bytes());
    }
}

/// What a sector held instead of a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// All zeros where the run had written.
    NeverWritten,
    /// Not a header at all (the first 8 bytes, as a little-endian u64).
    BadMagic { found: u64 },
    /// A header for another sector (a misdirected write or read).
    WrongSector { found: u64 },
    /// A header from another run.
    WrongSeed { found: u64 },
    /// A writer core that does not exist in this run.
    BadGeneration { found: u64 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NeverWritten => f.write_str("zeros where this run wrote a header"),
            Self::BadMagic { found } => write!(f, "no header (first 8 bytes {found:#018x})"),
            Self::WrongSector { found } => write!(f, "the header of sector {found}"),
            Self::WrongSeed { found } => write!(f, "a header from another run (seed {found:#x})"),
            Self::BadGeneration { found } => write!(f, "a header with bad generation {found:#x}"),
        }
    }
}

/// Checks every sector of `buf` (device sector `first_sector` onwards). Returns the
/// number of sectors that held this run's headers, or the first bad one.
pub fn check(
    buf: &[u8],
    first_sector: u64,
    seed: u64,
    cores: u32,
    expect_written: bool,
) -> Result<u64, (u64, Problem)> {
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    let mut ok = 0;
    for (i, sector) in buf.chunks_exact(SECTOR).enumerate() {
        let want = first_sector + i as u64;
        let magic = word(sector, 0);
        if magic != MAGIC {
            if magic == 0 && word(sector, 8) == 0 && word(sector, 24) == 0 {
                if expect_written {
                    return Err((want, Problem::NeverWritten));
                }
                continue;
            }
            return Err((want, Problem::BadMagic { found: magic }));
        }
        let found = word(sector, 8);
        if found != want {
            return Err((want, Problem::WrongSector { found }));
        }
        let s = word(sector, 24);
        if s != seed {
            return Err((want, Problem::WrongSeed { found: s }));
        }
        let g = word(sector, 16);
        if (g >> GEN_CORE_SHIFT) >= u64::from(cores) {
            return Err((want, Problem::BadGeneration { found: g }));
        }
        ok += 1;
    }
    Ok(ok)
}

/// A mismatch as reported: the device LBA holding the bad sector.
pub fn mismatch(sector: u64, block_size: u32, problem: Problem) -> Mismatch {
    Mismatch {
        lba: sector * SECTOR as u64 / u64::from(block_size),
        sector,
        problem,
    }
}

#[cfg(test)]
mod tests;
