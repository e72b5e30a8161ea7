//! `--verify`: what a write puts in every 512-byte sector, the check a read applies,
//! and the [`Tracker`] that knows which write each block must hold.
//!
//! Every sector a write carries:
//!
//! ```text
//! byte 0       8        16           24      32                              512
//!      | magic | sector | generation | seed  | body: 60 words from (sector,  |
//!      |       |        |            |       | generation, seed)             |
//! ```
//!
//! (little-endian u64s). `magic` is `FXPERFV2`; `sector` is the 512-byte sector
//! number on the device (so misdirected writes are caught); `generation` is
//! `writer core index << 48 | pass << 40 | that core's write count in the pass` (so
//! no two writes of a run share one); `seed` is the run's seed (so data left by an
//! earlier run is not taken for this run's). The body is a pure function of the
//! header, so every byte of the sector is checked, not just the header.
//!
//! A read checks every sector of its buffer, and against the [`Tracker`]: when no
//! write to its blocks was in flight while it was, each sector must hold the
//! generation of the last write acknowledged there; anything else is a lost (or
//! misplaced) write. A sector of zeros is "never written": an error where the run
//! wrote (after the fill, everywhere).

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::stats::Mismatch;

pub const SECTOR: usize = 512;
pub const MAGIC: u64 = u64::from_le_bytes(*b"FXPERFV2");
/// Bits of `generation` below the writer's core index.
pub const GEN_CORE_SHIFT: u32 = 48;
/// Bits of `generation` below the pass (0: fill, 1: workload).
pub const GEN_PASS_SHIFT: u32 = 40;
/// An expectation that accepts any generation (the tracker does not know).
pub const ANY: u64 = u64::MAX;
/// Words of the body, after the 32-byte header.
const BODY_WORDS: usize = (SECTOR - 32) / 8;

/// The generation of write `n` of `core` in pass `pass`.
pub fn generation(core: u32, pass: u64, n: u64) -> u64 {
    (u64::from(core) << GEN_CORE_SHIFT)
        | (pass << GEN_PASS_SHIFT)
        | (n & ((1 << GEN_PASS_SHIFT) - 1))
}

/// Where the body's words of one sector start.
fn body_base(sector: u64, generation: u64, seed: u64) -> u64 {
    let mut z = sector ^ generation.rotate_left(21) ^ seed.rotate_left(42);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Word `k` of a body: an arithmetic sequence from a well-mixed start, so every word
/// of a sector differs, two headers never share a body, and stamping and checking
/// cost an add and a compare per word (the loops vectorise).
fn body_word(base: u64, k: usize) -> u64 {
    base.wrapping_add((k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn word(s: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"))
}

/// Fills every sector of `buf`, the first being device sector `first_sector`.
pub fn stamp(buf: &mut [u8], first_sector: u64, generation: u64, seed: u64) {
    for (i, sector) in buf.chunks_exact_mut(SECTOR).enumerate() {
        let n = first_sector + i as u64;
        sector[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        sector[8..16].copy_from_slice(&n.to_le_bytes());
        sector[16..24].copy_from_slice(&generation.to_le_bytes());
        sector[24..32].copy_from_slice(&seed.to_le_bytes());
        let base = body_base(n, generation, seed);
        for (k, w) in sector[32..].chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&body_word(base, k).to_le_bytes());
        }
    }
}

/// What a sector held instead of what it should.
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
    /// A valid header, but the body differs from what that write put there, first at
    /// byte `offset` of the sector.
    BadData { offset: u16 },
    /// Another write's data than the last one acknowledged there, with none in
    /// flight: a lost (or misplaced) write.
    Stale { expected: u64, found: u64 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NeverWritten => f.write_str("zeros where this run wrote a header"),
            Self::BadMagic { found } => write!(f, "no header (first 8 bytes {found:#018x})"),
            Self::WrongSector { found } => write!(f, "the header of sector {found}"),
            Self::WrongSeed { found } => write!(f, "a header from another run (seed {found:#x})"),
            Self::BadGeneration { found } => write!(f, "a header with bad generation {found:#x}"),
            Self::BadData { offset } => {
                write!(f, "corrupt data at byte {offset} of the sector (header intact)")
            }
            Self::Stale { expected, found } => write!(
                f,
                "stale data: write {found:#x} where write {expected:#x} was acknowledged last (a lost write)"
            ),
        }
    }
}

/// Checks one sector that should be device sector `want`, written by generation
/// `expected` ([`ANY`]: any write of this run). `Ok(false)`: zeros, allowed
/// because nothing is known to have been written there.
fn check_sector(
    s: &[u8],
    want: u64,
    seed: u64,
    cores: u32,
    expect_written: bool,
    expected: u64,
) -> Result<bool, Problem> {
    let magic = word(s, 0);
    if magic != MAGIC {
        if magic == 0 && word(s, 8) == 0 && word(s, 24) == 0 {
            if expect_written || expected != ANY {
                return Err(Problem::NeverWritten);
            }
            return Ok(false);
        }
        return Err(Problem::BadMagic { found: magic });
    }
    let found = word(s, 8);
    if found != want {
        return Err(Problem::WrongSector { found });
    }
    let sd = word(s, 24);
    if sd != seed {
        return Err(Problem::WrongSeed { found: sd });
    }
    let g = word(s, 16);
    if (g >> GEN_CORE_SHIFT) >= u64::from(cores) {
        return Err(Problem::BadGeneration { found: g });
    }
    let base = body_base(want, g, seed);
    let body = &s[32..];
    let diff = body.chunks_exact(8).enumerate().fold(0, |acc, (k, w)| {
        acc | (u64::from_le_bytes(w.try_into().expect("8 bytes")) ^ body_word(base, k))
    });
    if diff != 0 {
        let k = (0..BODY_WORDS)
            .find(|&k| word(body, k * 8) != body_word(base, k))
            .expect("a word differs");
        let good = body_word(base, k).to_le_bytes();
        let byte = (0..8).find(|&b| body[k * 8 + b] != good[b]).unwrap_or(0);
        return Err(Problem::BadData {
            offset: (32 + k * 8 + byte) as u16,
        });
    }
    if expected != ANY && g != expected {
        return Err(Problem::Stale { expected, found: g });
    }
    Ok(true)
}

/// Sectors a read found good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Holding this run's data.
    pub sectors: u64,
    /// Of those, the ones whose generation was known (and matched).
    pub tracked: u64,
}

/// Checks every sector of `buf` (device sector `first_sector` onwards);
/// `expected(sector)` is the generation that sector must hold ([`ANY`]: any).
/// Returns what held this run's data, or the first bad sector.
pub fn check(
    buf: &[u8],
    first_sector: u64,
    seed: u64,
    cores: u32,
    expect_written: bool,
    expected: impl Fn(u64) -> u64,
) -> Result<Checked, (u64, Problem)> {
    let mut ok = Checked::default();
    for (i, s) in buf.chunks_exact(SECTOR).enumerate() {
        let want = first_sector + i as u64;
        let exp = expected(want);
        match check_sector(s, want, seed, cores, expect_written, exp) {
            Ok(stamped) => {
                ok.sectors += u64::from(stamped);
                ok.tracked += u64::from(exp != ANY);
            }
            Err(p) => return Err((want, p)),
        }
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

/// What the run knows about each unit of the range (`unit_blocks` device blocks: every
/// request starts and ends on a unit boundary, so a write covers whole units): the
/// generation its sectors hold, and what is in flight there.
///
/// Cores own disjoint parts of the range in every pass and passes run one after the
/// other, so one core at a time touches a unit: plain loads and stores, `Relaxed`.
/// The reactors' mailboxes order a pass's end (the results sent home) before the next
/// pass's start (its jobs sent out).
pub struct Tracker {
    unit_blocks: u64,
    sectors_per_unit: u64,
    units: Box<[Unit]>,
}

#[derive(Default)]
struct Unit {
    /// The generation the unit's sectors hold, or [`ANY`] when unknown (before the
    /// fill; after overlapping or failed writes).
    expect: AtomicU64,
    /// Writes started on the unit (wrapping).
    version: AtomicU32,
    /// Writes in flight on the unit.
    writing: AtomicU32,
}

/// What a request noted about its units when it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticket {
    /// No write was in flight on its units.
    quiet: bool,
    /// The sum of its units' versions (after its own start, for a write).
    versions: u64,
}

/// Bytes the tracker keeps per unit.
pub const TRACKER_UNIT_BYTES: u64 = size_of::<Unit>() as u64;

impl Tracker {
    /// Every unit unknown, for a range of `range_blocks` blocks of `block_size` bytes.
    pub fn new(range_blocks: u64, unit_blocks: u64, block_size: u32) -> Self {
        let n = range_blocks.div_ceil(unit_blocks);
        Self {
            unit_blocks,
            sectors_per_unit: unit_blocks * u64::from(block_size) / SECTOR as u64,
            units: (0..n)
                .map(|_| Unit {
                    expect: AtomicU64::new(ANY),
                    ..Unit::default()
                })
                .collect(),
        }
    }

    fn span(&self, lba: u64, blocks: u64) -> &[Unit] {
        let r: Range<usize> =
            (lba / self.unit_blocks) as usize..(lba + blocks).div_ceil(self.unit_blocks) as usize;
        &self.units[r]
    }

    fn versions(units: &[Unit]) -> u64 {
        units
            .iter()
            .map(|u| u64::from(u.version.load(Ordering::Relaxed)))
            .sum()
    }

    /// A write of `blocks` blocks at `lba` starts.
    pub fn start_write(&self, lba: u64, blocks: u64) -> Ticket {
        let units = self.span(lba, blocks);
        let mut quiet = true;
        for u in units {
            let w = u.writing.load(Ordering::Relaxed);
            quiet &= w == 0;
            u.writing.store(w + 1, Ordering::Relaxed);
            let v = u.version.load(Ordering::Relaxed);
            u.version.store(v.wrapping_add(1), Ordering::Relaxed);
        }
        Ticket {
            quiet,
            versions: Self::versions(units),
        }
    }

    /// The write started with `t` ended. Its units hold `generation` if it succeeded
    /// and no other write to them overlapped it; otherwise what they hold is unknown.
    pub fn end_write(&self, lba: u64, blocks: u64, t: Ticket, generation: u64, ok: bool) {
        let units = self.span(lba, blocks);
        for u in units {
            let w = u.writing.load(Ordering::Relaxed);
            u.writing.store(w.saturating_sub(1), Ordering::Relaxed);
        }
        let alone = ok && t.quiet && Self::versions(units) == t.versions;
        let g = if alone { generation } else { ANY };
        for u in units {
            u.expect.store(g, Ordering::Relaxed);
        }
    }

    /// A read of `blocks` blocks at `lba` starts.
    pub fn start_read(&self, lba: u64, blocks: u64) -> Ticket {
        let units = self.span(lba, blocks);
        Ticket {
            quiet: units.iter().all(|u| u.writing.load(Ordering::Relaxed) == 0),
            versions: Self::versions(units),
        }
    }

    /// Whether no write touched the read's blocks while it was in flight: then what
    /// it returned must be what [`Tracker::expected`] says.
    pub fn read_was_quiet(&self, lba: u64, blocks: u64, t: Ticket) -> bool {
        t.quiet && Self::versions(self.span(lba, blocks)) == t.versions
    }

    /// The generation device sector `sector` holds ([`ANY`]: unknown).
    pub fn expected(&self, sector: u64) -> u64 {
        self.units
            .get((sector / self.sectors_per_unit) as usize)
            .map_or(ANY, |u| u.expect.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests;
