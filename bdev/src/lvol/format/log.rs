//! The log's records: allocation records (format version 3) and journal records
//! (version 4), and their replay onto the image they extend. Layouts are drawn in the
//! module documentation of `lvol`.

use std::collections::{HashMap, HashSet};

use super::{
    align_up, decode_vol, encode_vol, put, u32_at, u64_at, Label, Meta, VolMeta, JOURNAL_VERSION,
    LOG_ENTRY_LEN, LOG_HEADER_LEN, LOG_MAGIC, LOG_VERSION, NONE, VOL_RECORD_LEN,
};

/// One allocation a log record carries: volume cluster `vc` of volume `vol` is now
/// pool cluster `pc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogEntry {
    pub vol: u64,
    pub vc: u32,
    pub pc: u32,
}

/// What a log record's header says, before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    /// The record's format version (3: allocations only; 4: a journal record).
    pub version: u32,
    /// The generation this record makes.
    pub generation: u64,
    /// The generation of the full image it extends.
    pub base: u64,
    pub clean_from: u64,
    /// Bytes of body after the header.
    pub body: usize,
    /// Bytes on disk (a block multiple).
    pub len: u64,
}

/// Serialises a version-3 log record: generation `generation` extends full image
/// `base` by `entries` and sets `clean_from`.
pub(crate) fn encode_record(
    generation: u64,
    base: u64,
    clean_from: u64,
    entries: &[LogEntry],
    label: &Label,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * LOG_ENTRY_LEN);
    put_entries(&mut body, entries);
    seal_record(
        LOG_VERSION,
        entries.len() as u32,
        generation,
        base,
        clean_from,
        &body,
        label,
    )
}

fn put_entries(out: &mut Vec<u8>, entries: &[LogEntry]) {
    for e in entries {
        out.extend_from_slice(&e.vol.to_le_bytes());
        out.extend_from_slice(&e.vc.to_le_bytes());
        out.extend_from_slice(&e.pc.to_le_bytes());
    }
}

/// A header (version, field 12, generations, clean_from, checksums) before `body`,
/// zero padded to a block multiple.
fn seal_record(
    version: u32,
    field12: u32,
    generation: u64,
    base: u64,
    clean_from: u64,
    body: &[u8],
    label: &Label,
) -> Vec<u8> {
    let len = align_up(
        (LOG_HEADER_LEN + body.len()) as u64,
        u64::from(label.block_size),
    );
    let mut out = vec![0u8; len as usize];
    put(&mut out, 0, &LOG_MAGIC);
    put(&mut out, 8, &version.to_le_bytes());
    put(&mut out, 12, &field12.to_le_bytes());
    put(&mut out, 16, &label.uuid);
    put(&mut out, 32, &generation.to_le_bytes());
    put(&mut out, 40, &base.to_le_bytes());
    put(&mut out, 48, &clean_from.to_le_bytes());
    put(&mut out, 56, &crc32c::crc32c(body).to_le_bytes());
    let hcrc = crc32c::crc32c(&out[..60]);
    put(&mut out, 60, &hcrc.to_le_bytes());
    put(&mut out, LOG_HEADER_LEN, body);
    out
}

/// One committed change to the metadata, as a journal record (format version 4)
/// carries it: applied in the order deletes, upserts, frees, allocations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Change {
    pub next_id: u64,
    pub clean_from: u64,
    /// Volumes that are gone.
    pub deletes: Vec<u64>,
    /// Volumes created or changed: each one's whole record (the old one is replaced).
    pub upserts: Vec<VolMeta>,
    /// Clusters volumes give up: volume cluster `vc` of `vol`, now pool cluster
    /// `pc`, is unmapped.
    pub frees: Vec<LogEntry>,
    /// Allocations into volumes that already exist.
    pub entries: Vec<LogEntry>,
}

/// Bytes of a journal record's body before its entries.
const JOURNAL_BODY_HEADER: usize = 24;

/// Serialises a journal record (format version 4): generation `generation` extends
/// full image `base` by `c`.
pub(crate) fn encode_change(generation: u64, base: u64, c: &Change, label: &Label) -> Vec<u8> {
    let mut body = Vec::with_capacity(
        JOURNAL_BODY_HEADER
            + (c.entries.len() + c.frees.len()) * LOG_ENTRY_LEN
            + c.deletes.len() * 8
            + c.upserts.len() * VOL_RECORD_LEN,
    );
    body.extend_from_slice(&c.next_id.to_le_bytes());
    body.extend_from_slice(&(c.entries.len() as u32).to_le_bytes());
    body.extend_from_slice(&(c.deletes.len() as u32).to_le_bytes());
    body.extend_from_slice(&(c.upserts.len() as u32).to_le_bytes());
    body.extend_from_slice(&(c.frees.len() as u32).to_le_bytes());
    put_entries(&mut body, &c.entries);
    put_entries(&mut body, &c.frees);
    for d in &c.deletes {
        body.extend_from_slice(&d.to_le_bytes());
    }
    for v in &c.upserts {
        encode_vol(&mut body, v, label);
    }
    seal_record(
        JOURNAL_VERSION,
        body.len() as u32,
        generation,
        base,
        c.clean_from,
        &body,
        label,
    )
}

/// Checks a record header found `room` bytes before the end of the log. `Err` says
/// why it does not continue the log: the end of the log, a torn write, or damage.
/// A pool's log holds records of its own format version only.
pub(crate) fn decode_record_header(
    b: &[u8],
    label: &Label,
    room: u64,
) -> Result<RecordHeader, String> {
    if b[..8] != LOG_MAGIC {
        return Err("no record magic".into());
    }
    let version = u32_at(b, 8);
    let want = label.version.min(JOURNAL_VERSION);
    if version != want {
        return Err(format!("record version {version}, the pool's is {want}"));
    }
    if u32_at(b, 60) != crc32c::crc32c(&b[..60]) {
        return Err("record header checksum mismatch".into());
    }
    if b[16..32] != label.uuid {
        return Err("a record of another pool".into());
    }
    let field12 = u64::from(u32_at(b, 12));
    let body = if version >= JOURNAL_VERSION {
        field12
    } else {
        field12 * LOG_ENTRY_LEN as u64
    };
    let len = align_up(LOG_HEADER_LEN as u64 + body, u64::from(label.block_size));
    if len > room {
        return Err(format!("a record of {len} bytes runs past the log"));
    }
    Ok(RecordHeader {
        version,
        generation: u64_at(b, 32),
        base: u64_at(b, 40),
        clean_from: u64_at(b, 48),
        body: body as usize,
        len,
    })
}

/// Where commits go next: the slot holding the full image the log extends (the next
/// full image goes to the other one) and the end of the log's valid records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogPos {
    pub base_slot: usize,
    pub base_generation: u64,
    pub tail: u64,
}

/// A full image being brought up to date by the log records that extend it.
pub(crate) struct Replay {
    pub meta: Meta,
    used: Vec<bool>,
    /// Volume ids by name.
    names: HashMap<String, u64>,
    /// One past the highest pool cluster mapped since the image (it only grows, as
    /// `clean_from` does).
    top: u64,
}

impl Replay {
    pub fn new(meta: Meta, label: &Label) -> Self {
        let mut used = vec![false; label.clusters as usize];
        let mut top = 0;
        for v in meta.vols.values() {
            for &p in v.map.iter().filter(|&&p| p != NONE) {
                used[p as usize] = true;
                top = top.max(u64::from(p) + 1);
            }
        }
        let names = meta.vols.values().map(|v| (v.name.clone(), v.id)).collect();
        Self {
            meta,
            used,
            names,
            top,
        }
    }

    /// Applies a whole record (`b`: its `h.len` bytes). A body checksum mismatch is
    /// `Ok(false)` (a torn write: the log ends before it) and changes nothing; a
    /// record that contradicts the metadata despite valid checksums is `Err` (damage,
    /// never silently used), and leaves the replay unusable. Parents are checked
    /// after the last record ([`check_references`]).
    pub fn apply(&mut self, h: &RecordHeader, b: &[u8], label: &Label) -> Result<bool, String> {
        let end = LOG_HEADER_LEN + h.body;
        if u32_at(b, 56) != crc32c::crc32c(&b[LOG_HEADER_LEN..end]) {
            return Ok(false);
        }
        let bad = |what: String| format!("generation {}: {what}", h.generation);
        let mut entries_at = (LOG_HEADER_LEN, h.body / LOG_ENTRY_LEN);
        if h.version >= JOURNAL_VERSION {
            let body = &b[LOG_HEADER_LEN..end];
            if body.len() < JOURNAL_BODY_HEADER {
                return Err(bad(format!("a body of {} bytes", body.len())));
            }
            let next_id = u64_at(body, 0);
            let ne = u32_at(body, 8) as usize;
            let nd = u32_at(body, 12) as usize;
            let nu = u32_at(body, 16) as usize;
            let nf = u32_at(body, 20) as usize;
            let room = body.len() - JOURNAL_BODY_HEADER;
            let fixed = ((ne + nf) as u64 * LOG_ENTRY_LEN as u64)
                .checked_add(nd as u64 * 8)
                .and_then(|x| x.checked_add(nu as u64 * VOL_RECORD_LEN as u64));
            if fixed.is_none_or(|f| f > room as u64) {
                return Err(bad(format!(
                    "{ne} allocations, {nf} frees, {nd} deletes and {nu} volume records do not fit its body"
                )));
            }
            if next_id < self.meta.next_id {
                return Err(bad(format!(
                    "next id {next_id} below {}",
                    self.meta.next_id
                )));
            }
            entries_at = (LOG_HEADER_LEN + JOURNAL_BODY_HEADER, ne);
            let frees_at = entries_at.0 + ne * LOG_ENTRY_LEN;
            let mut at = frees_at + nf * LOG_ENTRY_LEN;
            let mut gone = Vec::with_capacity(nd);
            for k in 0..nd {
                let id = u64_at(b, at + k * 8);
                gone.push(id);
            }
            at += nd * 8;
            let mut new = Vec::with_capacity(nu);
            for k in 0..nu {
                let (v, next) = decode_vol(b, at, end, next_id, label)
                    .map_err(|e| bad(format!("volume record {k}: {e}")))?;
                new.push(v);
                at = next;
            }
            if at != end {
                return Err(bad(format!("the body ends at {end}, its contents at {at}")));
            }
            self.meta.next_id = next_id;
            for id in gone {
                let v = self
                    .meta
                    .vols
                    .remove(&id)
                    .ok_or_else(|| bad(format!("deletes a missing volume {id}")))?;
                self.forget(&v);
            }
            for v in &new {
                if let Some(old) = self.meta.vols.remove(&v.id) {
                    self.forget(&old);
                }
            }
            for v in new {
                if self.meta.vols.contains_key(&v.id) {
                    return Err(bad(format!("volume id {} written twice", v.id)));
                }
                if self.names.insert(v.name.clone(), v.id).is_some() {
                    return Err(bad(format!("volume name {:?} appears twice", v.name)));
                }
                for (vc, &p) in v.map.iter().enumerate().filter(|(_, &p)| p != NONE) {
                    if std::mem::replace(&mut self.used[p as usize], true) {
                        return Err(bad(format!(
                            "volume {} maps cluster {p} (volume cluster {vc}), which is in use",
                            v.id
                        )));
                    }
                    self.top = self.top.max(u64::from(p) + 1);
                }
                self.meta.vols.insert(v.id, v);
            }
            if self.meta.vols.len() > label.max_volumes() {
                return Err(bad(format!(
                    "{} volumes, more than the {} the pool holds",
                    self.meta.vols.len(),
                    label.max_volumes
                )));
            }
            let frees = b[frees_at..frees_at + nf * LOG_ENTRY_LEN].chunks_exact(LOG_ENTRY_LEN);
            for (i, e) in frees.enumerate() {
                let (vol, vc, pc) = (u64_at(e, 0), u32_at(e, 8) as usize, u32_at(e, 12));
                let v = self
                    .meta
                    .vols
                    .get_mut(&vol)
                    .ok_or_else(|| bad(format!("free {i}: no volume {vol}")))?;
                if v.map.get(vc) != Some(&pc) {
                    return Err(bad(format!(
                        "free {i}: volume {vol} cluster {vc} is not pool cluster {pc}"
                    )));
                }
                v.map[vc] = NONE;
                self.used[pc as usize] = false;
            }
        }
        self.apply_entries(
            h,
            &b[entries_at.0..entries_at.0 + entries_at.1 * LOG_ENTRY_LEN],
            label,
        )?;
        Ok(true)
    }

    /// Returns a removed volume's clusters and name.
    fn forget(&mut self, v: &VolMeta) {
        for &p in v.map.iter().filter(|&&p| p != NONE) {
            self.used[p as usize] = false;
        }
        self.names.remove(&v.name);
    }

    /// Applies allocation entries (all of them or, on `Err`, none), then the
    /// record's `clean_from` and generation.
    fn apply_entries(&mut self, h: &RecordHeader, raw: &[u8], label: &Label) -> Result<(), String> {
        let bad = |i: usize, what: String| format!("generation {} entry {i}: {what}", h.generation);
        let mut entries = Vec::with_capacity(raw.len() / LOG_ENTRY_LEN);
        let mut vcs = HashSet::new();
        let mut pcs = HashSet::new();
        let mut top = self.top;
        for (i, e) in raw.chunks_exact(LOG_ENTRY_LEN).enumerate() {
            let (vol, vc, pc) = (u64_at(e, 0), u32_at(e, 8) as usize, u32_at(e, 12));
            let v = self
                .meta
                .vols
                .get(&vol)
                .ok_or_else(|| bad(i, format!("no volume {vol}")))?;
            if v.read_only {
                return Err(bad(i, format!("volume {vol} is a snapshot")));
            }
            if vc >= v.map.len() || v.map[vc] != NONE || !vcs.insert((vol, vc)) {
                return Err(bad(
                    i,
                    format!("volume cluster {vc} is not an unmapped one"),
                ));
            }
            if u64::from(pc) >= label.clusters || self.used[pc as usize] || !pcs.insert(pc) {
                return Err(bad(i, format!("pool cluster {pc} is not a free one")));
            }
            top = top.max(u64::from(pc) + 1);
            entries.push((vol, vc, pc));
        }
        if h.clean_from > label.clusters || top > h.clean_from {
            return Err(format!(
                "generation {}: clean_from {} outside {top}..={}",
                h.generation, h.clean_from, label.clusters
            ));
        }
        for (vol, vc, pc) in entries {
            self.meta.vols.get_mut(&vol).expect("checked").map[vc] = pc;
            self.used[pc as usize] = true;
        }
        self.top = top;
        self.meta.clean_from = h.clean_from;
        self.meta.generation = h.generation;
        Ok(())
    }
}
