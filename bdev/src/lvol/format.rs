//! The on-disk format: the label, the two metadata slots, the log's records (the
//! allocation records of version 3, the journal records of version 4), and their
//! checks.
//!
//! Byte layouts are drawn in the module documentation of `lvol`; this file is their
//! only reader and writer. Every decoder checks before it trusts: magic, then format
//! version (so a newer pool is refused even if its layout moved), then checksums, then
//! the meaning of every field (ranges, references, uniqueness).

use std::collections::{BTreeMap, HashSet};

use crate::BdevInfo;

use super::LvolError;

mod log;

pub(crate) use log::{
    decode_record_header, encode_change, encode_record, Change, LogEntry, LogPos, Replay,
};

pub(crate) const LABEL_MAGIC: [u8; 8] = *b"FRXLVOL\0";
pub(crate) const META_MAGIC: [u8; 8] = *b"FRXMETA\0";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 4;
/// The first format version with an allocation log.
pub(crate) const LOG_VERSION: u32 = 3;
/// The first format version whose log is a journal of every change (volume records
/// written, volumes deleted, allocations), and whose label says how many volumes the
/// pool holds.
pub(crate) const JOURNAL_VERSION: u32 = 4;
pub(crate) const LOG_MAGIC: [u8; 8] = *b"FRXLOGR\0";
pub(crate) const LOG_HEADER_LEN: usize = 64;
pub(crate) const LOG_ENTRY_LEN: usize = 16;
/// Bytes of the label that carry data (the crc covers `0..LABEL_CRC_AT`).
pub(crate) const LABEL_LEN: usize = 256;
const LABEL_CRC_AT: usize = 252;
/// Bytes reserved for the label at the start of the device (at least one block).
pub(crate) const LABEL_REGION: u64 = 4096;
pub(crate) const META_HEADER_LEN: usize = 64;
pub(crate) const VOL_RECORD_LEN: usize = 128;
pub(crate) const RUN_LEN: usize = 16;
/// Longest pool or volume name, in bytes of UTF-8.
pub const MAX_NAME: usize = 63;
/// Most volumes (snapshots and clones included) a pool of this format holds: a pool
/// formatted on a device of at least [`FULL_SCALE_BYTES`] holds this many; a smaller
/// one holds one per 32 KiB of device, at least [`OLD_MAX_VOLUMES`].
pub const MAX_VOLUMES: usize = 65_536;
/// Most volumes a pool formatted before version 4 holds (its slots were sized for
/// this many records at format time).
pub const OLD_MAX_VOLUMES: usize = 1024;
/// Device bytes per volume a version-4 pool plans room for.
const BYTES_PER_VOLUME: u64 = 32 << 10;
/// The smallest device whose pool holds [`MAX_VOLUMES`] (2 GiB).
pub const FULL_SCALE_BYTES: u64 = MAX_VOLUMES as u64 * BYTES_PER_VOLUME;
/// A cluster-map entry with no cluster.
pub(crate) const NONE: u32 = u32::MAX;

/// Where everything is, fixed at format time and recorded in the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Label {
    pub version: u32,
    pub block_size: u32,
    pub uuid: [u8; 16],
    pub name: String,
    pub cluster_size: u64,
    pub slot_offset: [u64; 2],
    pub slot_size: u64,
    pub data_offset: u64,
    pub clusters: u64,
    pub device_blocks: u64,
    /// The allocation log (format version 3; 0 bytes before).
    pub log_offset: u64,
    pub log_size: u64,
    /// Most volumes the pool holds (recorded from format version 4; before, 1024).
    pub max_volumes: u32,
}

/// One volume as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VolMeta {
    pub id: u64,
    pub uuid: [u8; 16],
    pub name: String,
    /// Bytes; always a multiple of the cluster size.
    pub size: u64,
    /// The volume this one reads through where it owns no cluster.
    pub parent: Option<u64>,
    /// The parent is consulted only for volume clusters below this index.
    pub backing: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub thin: bool,
    pub read_only: bool,
    /// Volume cluster -> pool cluster owned by this volume, or [`NONE`].
    pub map: Vec<u32>,
}

impl VolMeta {
    pub fn owned(&self) -> usize {
        self.map.iter().filter(|&&c| c != NONE).count()
    }
}

/// The whole metadata image of one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub generation: u64,
    pub next_id: u64,
    /// By volume id (so in creation order).
    pub vols: BTreeMap<u64, VolMeta>,
    /// Pool clusters from this index on have not been written since the pool was
    /// formatted with a zeroed data area: they read as zeroes, so allocating one needs
    /// no zeroing. Every mapped cluster is below it. The number of clusters when the
    /// data area was not zeroed (or the pool predates format version 2).
    pub clean_from: u64,
}

#[cfg(test)]
impl Meta {
    /// The volumes of `vols` by id (tests build metadata this way).
    pub fn vols_of(vols: Vec<VolMeta>) -> BTreeMap<u64, VolMeta> {
        vols.into_iter().map(|v| (v.id, v)).collect()
    }
}

/// The body's trailer (format version 2): `clean_from`.
pub(crate) const TRAILER_LEN: usize = 8;

fn put(buf: &mut [u8], at: usize, v: &[u8]) {
    buf[at..at + v.len()].copy_from_slice(v);
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put_name(buf: &mut [u8], at: usize, name: &str) {
    buf[at] = name.len() as u8;
    put(buf, at + 1, name.as_bytes());
}

fn name_at(b: &[u8], at: usize) -> Option<String> {
    let len = usize::from(b[at]);
    if len == 0 || len > MAX_NAME {
        return None;
    }
    String::from_utf8(b[at + 1..at + 1 + len].to_vec()).ok()
}

/// Checks a pool or volume name.
pub(crate) fn check_name(name: &str) -> Result<(), LvolError> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') || name.contains('/') {
        return Err(LvolError::Invalid(format!(
            "name {name:?} must be 1 to {MAX_NAME} bytes without '/' or NUL"
        )));
    }
    Ok(())
}

fn align_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

impl Label {
    /// Lays out a new pool on `dev`.
    #[cfg(test)]
    pub fn plan(
        dev: &BdevInfo,
        name: &str,
        uuid: [u8; 16],
        cluster_size: u64,
    ) -> Result<Self, LvolError> {
        Self::plan_version(dev, name, uuid, cluster_size, FORMAT_VERSION)
    }

    /// Lays out a new pool of format `version` (3 or 4): version 3 is what older
    /// builds formatted, kept so tests can build such a pool and load it.
    pub fn plan_version(
        dev: &BdevInfo,
        name: &str,
        uuid: [u8; 16],
        cluster_size: u64,
        version: u32,
    ) -> Result<Self, LvolError> {
        check_name(name)?;
        if !(LOG_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(LvolError::Invalid(format!(
                "format version {version} cannot be written (only {LOG_VERSION} to {FORMAT_VERSION})"
            )));
        }
        let bs = u64::from(dev.block_size);
        if !cluster_size.is_power_of_two() || cluster_size < bs.max(4096) || cluster_size > 1 << 30
        {
            return Err(LvolError::Invalid(format!(
                "cluster size {cluster_size} must be a power of two from max(4096, block size {bs}) to 1 GiB"
            )));
        }
        let dev_bytes = dev.num_blocks * bs;
        let upper = dev_bytes / cluster_size;
        // A slot holds the largest image: every volume record and one run per cluster.
        let max_volumes = if version >= JOURNAL_VERSION {
            (dev_bytes / BYTES_PER_VOLUME).clamp(OLD_MAX_VOLUMES as u64, MAX_VOLUMES as u64)
        } else {
            OLD_MAX_VOLUMES as u64
        };
        let slot_size = align_up(
            META_HEADER_LEN as u64
                + max_volumes * VOL_RECORD_LEN as u64
                + TRAILER_LEN as u64
                + upper * RUN_LEN as u64,
            bs,
        );
        let a = align_up(LABEL_REGION, bs);
        let b = a + slot_size;
        // The log: 1/256 of the device, from 64 KiB to 4 MiB.
        let log_offset = b + slot_size;
        let log_size = align_up((dev_bytes / 256).clamp(64 << 10, 4 << 20), bs);
        let data_offset = align_up(log_offset + log_size, cluster_size);
        let clusters = dev_bytes.saturating_sub(data_offset) / cluster_size;
        if clusters == 0 || clusters >= u64::from(NONE >> 1) {
            return Err(LvolError::Invalid(format!(
                "device {:?} of {dev_bytes} bytes gives {clusters} data clusters of {cluster_size} bytes after {data_offset} bytes of metadata",
                dev.name
            )));
        }
        Ok(Self {
            version,
            block_size: dev.block_size,
            uuid,
            name: name.to_string(),
            cluster_size,
            slot_offset: [a, b],
            slot_size,
            data_offset,
            clusters,
            device_blocks: dev.num_blocks,
            log_offset,
            log_size,
            max_volumes: max_volumes as u32,
        })
    }

    /// Most volumes the pool holds.
    pub fn max_volumes(&self) -> usize {
        self.max_volumes as usize
    }

    pub fn encode(&self) -> [u8; LABEL_LEN] {
        let mut b = [0u8; LABEL_LEN];
        put(&mut b, 0, &LABEL_MAGIC);
        put(&mut b, 8, &self.version.to_le_bytes());
        put(&mut b, 12, &self.block_size.to_le_bytes());
        put(&mut b, 16, &self.uuid);
        put_name(&mut b, 32, &self.name);
        put(&mut b, 96, &self.cluster_size.to_le_bytes());
        put(&mut b, 104, &self.slot_offset[0].to_le_bytes());
        put(&mut b, 112, &self.slot_offset[1].to_le_bytes());
        put(&mut b, 120, &self.slot_size.to_le_bytes());
        put(&mut b, 128, &self.data_offset.to_le_bytes());
        put(&mut b, 136, &self.clusters.to_le_bytes());
        put(&mut b, 144, &self.device_blocks.to_le_bytes());
        if self.version >= LOG_VERSION {
            put(&mut b, 152, &self.log_offset.to_le_bytes());
            put(&mut b, 160, &self.log_size.to_le_bytes());
        }
        if self.version >= JOURNAL_VERSION {
            put(&mut b, 168, &self.max_volumes.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b[..LABEL_CRC_AT]);
        put(&mut b, LABEL_CRC_AT, &crc.to_le_bytes());
        b
    }

    /// Reads a label back, checking magic, version, checksum and geometry in that
    /// order.
    pub fn decode(b: &[u8], dev: &BdevInfo) -> Result<Self, LvolError> {
        let corrupt = |what: String, offset: u64| LvolError::Corrupt {
            device: dev.name.clone(),
            what,
            offset,
        };
        if b.len() < LABEL_LEN || b[..8] != LABEL_MAGIC {
            return Err(LvolError::NotAPool {
                device: dev.name.clone(),
            });
        }
        let version = u32_at(b, 8);
        if version > FORMAT_VERSION {
            return Err(LvolError::NewerFormat {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(corrupt("label format version 0".into(), 8));
        }
        let crc = u32_at(b, LABEL_CRC_AT);
        let want = crc32c::crc32c(&b[..LABEL_CRC_AT]);
        if crc != want {
            return Err(corrupt(
                format!("label checksum {crc:#010x}, computed {want:#010x}"),
                LABEL_CRC_AT as u64,
            ));
        }
        let name = name_at(b, 32).ok_or_else(|| corrupt("label pool name".into(), 32))?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        let l = Self {
            version,
            block_size: u32_at(b, 12),
            uuid,
            name,
            cluster_size: u64_at(b, 96),
            slot_offset: [u64_at(b, 104), u64_at(b, 112)],
            slot_size: u64_at(b, 120),
            data_offset: u64_at(b, 128),
            clusters: u64_at(b, 136),
            device_blocks: u64_at(b, 144),
            log_offset: if version >= LOG_VERSION {
                u64_at(b, 152)
            } else {
                0
            },
            log_size: if version >= LOG_VERSION {
                u64_at(b, 160)
            } else {
                0
            },
            max_volumes: if version >= JOURNAL_VERSION {
                u32_at(b, 168)
            } else {
                OLD_MAX_VOLUMES as u32
            },
        };
        let bs = u64::from(dev.block_size);
        if l.block_size != dev.block_size {
            return Err(corrupt(
                format!(
                    "label block size {} differs from the device's {}",
                    l.block_size, dev.block_size
                ),
                12,
            ));
        }
        let dev_bytes = dev.num_blocks * bs;
        let max_ok = (1..=MAX_VOLUMES as u64).contains(&u64::from(l.max_volumes))
            && l.slot_size
                >= (META_HEADER_LEN + TRAILER_LEN) as u64
                    + u64::from(l.max_volumes) * VOL_RECORD_LEN as u64;
        if !max_ok {
            return Err(corrupt(
                format!(
                    "label volume limit {} outside 1..={MAX_VOLUMES} or larger than its {}-byte slots hold",
                    l.max_volumes, l.slot_size
                ),
                168,
            ));
        }
        let geometry_ok = l.cluster_size.is_power_of_two()
            && l.cluster_size >= bs
            && l.slot_size > META_HEADER_LEN as u64
            && l.slot_size & (bs - 1) == 0
            && l.slot_offset[0] >= LABEL_LEN as u64
            && l.slot_offset[0] & (bs - 1) == 0
            && l.slot_offset[1] >= l.slot_offset[0] + l.slot_size
            && l.slot_offset[1] & (bs - 1) == 0
            && l.data_offset >= l.slot_offset[1] + l.slot_size
            && (l.version < LOG_VERSION
                || (l.log_offset >= l.slot_offset[1] + l.slot_size
                    && l.log_offset & (bs - 1) == 0
                    && l.log_size >= bs
                    && l.log_size & (bs - 1) == 0
                    && l.log_offset
                        .checked_add(l.log_size)
                        .is_some_and(|e| e <= l.data_offset)))
            && l.data_offset & (l.cluster_size - 1) == 0
            && l.clusters > 0
            && l.clusters < u64::from(NONE >> 1)
            && l.clusters
                .checked_mul(l.cluster_size)
                .and_then(|d| d.checked_add(l.data_offset))
                .is_some_and(|end| end <= dev_bytes);
        if !geometry_ok {
            return Err(corrupt(
                format!("label geometry does not fit the {dev_bytes}-byte device: {l:?}"),
                96,
            ));
        }
        Ok(l)
    }
}

/// Serialises a metadata image; `Err` when it would not fit its slot.
pub(crate) fn encode_meta(m: &Meta, label: &Label) -> Result<Vec<u8>, LvolError> {
    let mut b = ImageBuilder::new(m.vols.len());
    for v in m.vols.values() {
        b.push(v, label);
    }
    b.finish(m.generation, m.next_id, m.clean_from, label)
}

/// A whole image built a volume at a time (any order), so that a large one can be
/// built in steps.
pub(crate) struct ImageBuilder {
    body: Vec<u8>,
    count: usize,
}

impl ImageBuilder {
    /// For about `vols` volumes.
    pub fn new(vols: usize) -> Self {
        Self {
            body: Vec::with_capacity(vols * VOL_RECORD_LEN + TRAILER_LEN),
            count: 0,
        }
    }

    pub fn push(&mut self, v: &VolMeta, label: &Label) {
        encode_vol(&mut self.body, v, label);
        self.count += 1;
    }

    /// The image; `Err` when it holds more volumes than the pool does or would not
    /// fit its slot.
    pub fn finish(
        self,
        generation: u64,
        next_id: u64,
        clean_from: u64,
        label: &Label,
    ) -> Result<Vec<u8>, LvolError> {
        let Self { mut body, count } = self;
        if count > label.max_volumes() {
            return Err(LvolError::MetadataFull(format!(
                "{count} volumes, the pool holds at most {}",
                label.max_volumes
            )));
        }
        // A pool formatted by version 1 keeps writing version-1 images (no trailer):
        // an older build must still read its newest generation. Such a pool has no
        // clean clusters.
        let version = label.version.min(FORMAT_VERSION);
        if version >= 2 {
            body.extend_from_slice(&clean_from.to_le_bytes());
        } else {
            debug_assert_eq!(clean_from, label.clusters);
        }
        let len = META_HEADER_LEN + body.len();
        let padded = align_up(len as u64, u64::from(label.block_size));
        if padded > label.slot_size {
            return Err(LvolError::MetadataFull(format!(
                "the image needs {padded} bytes, a slot holds {}",
                label.slot_size
            )));
        }
        let mut out = vec![0u8; padded as usize];
        put(&mut out, 0, &META_MAGIC);
        put(&mut out, 8, &version.to_le_bytes());
        put(&mut out, 12, &(count as u32).to_le_bytes());
        put(&mut out, 16, &label.uuid);
        put(&mut out, 32, &generation.to_le_bytes());
        put(&mut out, 40, &(len as u64).to_le_bytes());
        put(&mut out, 48, &next_id.to_le_bytes());
        put(&mut out, 56, &crc32c::crc32c(&body).to_le_bytes());
        let hcrc = crc32c::crc32c(&out[..60]);
        put(&mut out, 60, &hcrc.to_le_bytes());
        put(&mut out, META_HEADER_LEN, &body);
        Ok(out)
    }
}

/// Appends volume `v`'s record and its runs to `out`.
fn encode_vol(out: &mut Vec<u8>, v: &VolMeta, label: &Label) {
    let runs = runs_of(&v.map);
    let mut rec = [0u8; VOL_RECORD_LEN];
    put(&mut rec, 0, &v.id.to_le_bytes());
    put(&mut rec, 8, &v.uuid);
    put(&mut rec, 24, &v.size.to_le_bytes());
    put(&mut rec, 32, &v.parent.unwrap_or(0).to_le_bytes());
    put(&mut rec, 40, &v.backing.to_le_bytes());
    put(&mut rec, 48, &v.created.to_le_bytes());
    let flags = u32::from(v.thin) | (u32::from(v.read_only) << 1);
    put(&mut rec, 56, &flags.to_le_bytes());
    put(&mut rec, 60, &(runs.len() as u32).to_le_bytes());
    put_name(&mut rec, 64, &v.name);
    debug_assert_eq!(v.map.len() as u64, v.size / label.cluster_size);
    out.extend_from_slice(&rec);
    for (vc, pc, len) in runs {
        out.extend_from_slice(&vc.to_le_bytes());
        out.extend_from_slice(&pc.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
}

/// Decodes the volume record at `b[at..]` and its runs, which must end by `end`;
/// checks the record alone (id below `next_id`, size, runs inside the volume and the
/// pool, no volume cluster twice). Returns it and where the next record starts.
fn decode_vol(
    b: &[u8],
    at: usize,
    end: usize,
    next_id: u64,
    label: &Label,
) -> Result<(VolMeta, usize), String> {
    if at + VOL_RECORD_LEN > end {
        return Err("the record runs past its end".into());
    }
    let r = &b[at..at + VOL_RECORD_LEN];
    let cs = label.cluster_size;
    let id = u64_at(r, 0);
    let size = u64_at(r, 24);
    let parent = u64_at(r, 32);
    let flags = u32_at(r, 56);
    let nruns = u32_at(r, 60) as usize;
    let name = name_at(r, 64).ok_or("bad name")?;
    if id == 0 || id >= next_id {
        return Err(format!("id {id} outside 1..next id {next_id}"));
    }
    if size & (cs - 1) != 0 || size / cs > u64::from(NONE >> 1) {
        return Err(format!("size {size} is not a valid cluster multiple"));
    }
    let nclusters = (size / cs) as usize;
    let runs_at = at + VOL_RECORD_LEN;
    if nruns > (end - runs_at) / RUN_LEN {
        return Err(format!("{nruns} runs run past the end"));
    }
    let mut map = vec![NONE; nclusters];
    for k in 0..nruns {
        let run = &b[runs_at + k * RUN_LEN..runs_at + (k + 1) * RUN_LEN];
        let (vc, pc, n) = (u64_at(run, 0), u32_at(run, 8), u32_at(run, 12));
        let fits_vol = vc
            .checked_add(u64::from(n))
            .is_some_and(|e| e <= nclusters as u64);
        let fits_pool = u64::from(pc) + u64::from(n) <= label.clusters;
        if n == 0 || !fits_vol || !fits_pool {
            return Err(format!("run {k} ({vc}, {pc}, {n}) out of range"));
        }
        for j in 0..n {
            let v = vc as usize + j as usize;
            if map[v] != NONE {
                return Err(format!("volume cluster {v} mapped twice"));
            }
            map[v] = pc + j;
        }
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&r[8..24]);
    let v = VolMeta {
        id,
        uuid,
        name,
        size,
        parent: (parent != 0).then_some(parent),
        backing: u64_at(r, 40),
        created: u64_at(r, 48),
        thin: flags & 1 != 0,
        read_only: flags & 2 != 0,
        map,
    };
    Ok((v, runs_at + nruns * RUN_LEN))
}

/// Runs of consecutive volume clusters in consecutive pool clusters.
fn runs_of(map: &[u32]) -> Vec<(u64, u32, u32)> {
    let mut runs: Vec<(u64, u32, u32)> = Vec::new();
    for (vc, &pc) in map.iter().enumerate() {
        if pc == NONE {
            continue;
        }
        if let Some(last) = runs.last_mut() {
            if last.0 + u64::from(last.2) == vc as u64 && last.1.checked_add(last.2) == Some(pc) {
                last.2 += 1;
                continue;
            }
        }
        runs.push((vc as u64, pc, 1));
    }
    runs
}

/// What one slot's header says, before its body is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotHeader {
    pub generation: u64,
    pub len: u64,
    pub version: u32,
}

/// Checks a slot header; `Err` says what is wrong, for the log and the error.
pub(crate) fn decode_header(b: &[u8], label: &Label) -> Result<SlotHeader, String> {
    if b[..8] != META_MAGIC {
        return Err("no metadata magic".into());
    }
    let version = u32_at(b, 8);
    if version > FORMAT_VERSION {
        return Err(format!("metadata format version {version} is newer"));
    }
    let hcrc = u32_at(b, 60);
    if hcrc != crc32c::crc32c(&b[..60]) {
        return Err("header checksum mismatch".into());
    }
    if b[16..32] != label.uuid {
        return Err("metadata belongs to another pool (uuid differs)".into());
    }
    let len = u64_at(b, 40);
    if len < META_HEADER_LEN as u64 || len > label.slot_size {
        return Err(format!("image length {len} outside the slot"));
    }
    Ok(SlotHeader {
        generation: u64_at(b, 32),
        len,
        version,
    })
}

/// Decodes and validates a whole image (`b` holds at least the header's length).
/// `Err` carries what is wrong and its byte offset inside the slot.
pub(crate) fn decode_meta(b: &[u8], label: &Label) -> Result<Meta, (String, u64)> {
    let h = decode_header(b, label).map_err(|e| (e, 0))?;
    let len = h.len as usize;
    let body = &b[META_HEADER_LEN..len];
    if u32_at(b, 56) != crc32c::crc32c(body) {
        return Err(("body checksum mismatch".into(), 56));
    }
    let count = u32_at(b, 12) as usize;
    if count > label.max_volumes() {
        return Err((
            format!(
                "{count} volumes, more than the {} it holds",
                label.max_volumes
            ),
            12,
        ));
    }
    let next_id = u64_at(b, 48);
    let mut at = META_HEADER_LEN;
    let mut vols = BTreeMap::new();
    let mut used = vec![false; label.clusters as usize];
    for i in 0..count {
        let rec_at = at as u64;
        let bad = |what: String| (format!("volume record {i}: {what}"), rec_at);
        let (v, next) = decode_vol(b, at, len, next_id, label).map_err(bad)?;
        for (vc, &p) in v.map.iter().enumerate().filter(|(_, &p)| p != NONE) {
            if std::mem::replace(&mut used[p as usize], true) {
                return Err(bad(format!(
                    "cluster {p} (volume cluster {vc}) mapped twice"
                )));
            }
        }
        if vols.contains_key(&v.id) {
            return Err(bad(format!("volume id {} appears twice", v.id)));
        }
        vols.insert(v.id, v);
        at = next;
    }
    let clean_from = if h.version >= 2 {
        if at + TRAILER_LEN != len {
            return Err((
                format!(
                    "the trailer ends at {}, the image at {len}",
                    at + TRAILER_LEN
                ),
                at as u64,
            ));
        }
        let c = u64_at(b, at);
        if c > label.clusters {
            return Err((
                format!("clean_from {c} beyond the {} clusters", label.clusters),
                at as u64,
            ));
        }
        if let Some(p) = used.iter().rposition(|&u| u).filter(|&p| p as u64 >= c) {
            return Err((
                format!("cluster {p} is mapped but at or above clean_from {c}"),
                at as u64,
            ));
        }
        c
    } else {
        label.clusters
    };
    let m = Meta {
        generation: h.generation,
        next_id,
        vols,
        clean_from,
    };
    check_references(&m).map_err(|e| (e, META_HEADER_LEN as u64))?;
    Ok(m)
}

/// Unique names; parents exist, are read-only, and form no cycle. Each chain is
/// walked only up to a volume already checked, so this costs what the pool holds
/// however deep its chains.
pub(crate) fn check_references(m: &Meta) -> Result<(), String> {
    let mut names = HashSet::new();
    for v in m.vols.values() {
        if !names.insert(v.name.as_str()) {
            return Err(format!("volume name {:?} appears twice", v.name));
        }
    }
    let mut good: HashSet<u64> = HashSet::with_capacity(m.vols.len());
    let mut path: HashSet<u64> = HashSet::new();
    for v in m.vols.values() {
        path.clear();
        let mut cur = v;
        while !good.contains(&cur.id) {
            path.insert(cur.id);
            let Some(p) = cur.parent else { break };
            let Some(pv) = m.vols.get(&p) else {
                return Err(format!("volume {:?} names a missing parent {p}", cur.name));
            };
            if !pv.read_only {
                return Err(format!(
                    "parent {:?} of {:?} is writable",
                    pv.name, cur.name
                ));
            }
            if path.contains(&p) {
                return Err(format!("volume {:?} is its own ancestor", pv.name));
            }
            cur = pv;
        }
        good.extend(path.drain());
    }
    Ok(())
}
