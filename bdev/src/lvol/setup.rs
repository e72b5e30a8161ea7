//! Start-up on the base device: formatting a new pool, and loading the label and the
//! newest valid metadata generation of an existing one.

use super::engine::io_err;
use super::format::{
    check_references, decode_record_header, encode_meta, Label, LogPos, Meta, Replay,
};
use super::io::BaseIo;
use super::LvolError;
use crate::Ops;

/// Reads the label and the newest valid metadata generation: the newest valid full
/// image, brought up to date by the log records that extend it.
pub(crate) async fn load_meta(
    io: &BaseIo,
    dev: &crate::BdevInfo,
) -> Result<(Label, Meta, LogPos), LvolError> {
    let bs = io.bs;
    let lb = io.read(0, bs).await.map_err(io_err("reading the label"))?;
    let label = Label::decode(&lb, dev)?;
    let mut cands = Vec::new();
    let mut why = Vec::new();
    for (i, &off) in label.slot_offset.iter().enumerate() {
        let h = io
            .read(off, bs)
            .await
            .map_err(io_err("reading a metadata slot"))?;
        match super::format::decode_header(&h, &label) {
            Ok(h) => cands.push((h.generation, i, h.len)),
            Err(e) => why.push(format!("slot {i} at byte {off}: {e}")),
        }
    }
    cands.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
    for (generation, i, len) in cands {
        let off = label.slot_offset[i];
        let b = io
            .read(off, len.div_ceil(bs) * bs)
            .await
            .map_err(io_err("reading a metadata slot"))?;
        match super::format::decode_meta(&b, &label) {
            Ok(m) => {
                if !why.is_empty() {
                    tracing::warn!(pool = %label.name, generation, skipped = ?why, "lvol: using an older metadata generation");
                }
                let (m, tail) = replay_log(io, dev, &label, m).await?;
                let pos = LogPos {
                    base_slot: i,
                    base_generation: generation,
                    tail,
                };
                return Ok((label, m, pos));
            }
            Err((e, at)) => why.push(format!(
                "slot {i} generation {generation}: {e} at byte {}",
                off + at
            )),
        }
    }
    Err(LvolError::Corrupt {
        device: dev.name.clone(),
        what: format!("no valid metadata generation ({})", why.join("; ")),
        offset: label.slot_offset[0],
    })
}

/// Applies the log records that extend full image `base`, in order, up to the first
/// one that does not continue it (the end of the log, a torn write, or a record of an
/// older image); returns the result and the end of the applied records.
async fn replay_log(
    io: &BaseIo,
    dev: &crate::BdevInfo,
    label: &Label,
    base: Meta,
) -> Result<(Meta, u64), LvolError> {
    let bs = io.bs;
    let base_generation = base.generation;
    let mut r = Replay::new(base, label);
    let mut tail = 0;
    while tail < label.log_size {
        let off = label.log_offset + tail;
        let hb = io.read(off, bs).await.map_err(io_err("reading the log"))?;
        let Ok(h) = decode_record_header(&hb, label, label.log_size - tail) else {
            break;
        };
        if h.base != base_generation || h.generation != r.meta.generation + 1 {
            break;
        }
        let b = if h.len > bs {
            io.read(off, h.len)
                .await
                .map_err(io_err("reading the log"))?
        } else {
            hb
        };
        match r.apply(&h, &b, label) {
            Ok(true) => tail += h.len,
            Ok(false) => {
                tracing::warn!(pool = %label.name, generation = h.generation, "lvol: the last allocation record was torn; the log ends before it");
                break;
            }
            Err(what) => {
                return Err(LvolError::Corrupt {
                    device: dev.name.clone(),
                    what: format!("metadata log: {what}"),
                    offset: off,
                })
            }
        }
    }
    // Journal records may change parents: the result must still form a forest of
    // snapshots.
    if tail > 0 {
        check_references(&r.meta).map_err(|what| LvolError::Corrupt {
            device: dev.name.clone(),
            what: format!(
                "metadata log up to generation {}: {what}",
                r.meta.generation
            ),
            offset: label.log_offset,
        })?;
    }
    Ok((r.meta, tail))
}

/// Writes a fresh pool: label erased, an empty generation 1 (in slot B) and an empty
/// log, then the label.
pub(crate) async fn format(io: &BaseIo, label: &Label) -> Result<(Meta, LogPos), LvolError> {
    let bs = io.bs as usize;
    let e = io_err("formatting");
    io.write(0, &vec![0u8; bs]).await.map_err(&e)?;
    io.flush().await.map_err(&e)?;
    // A data area zeroed now lets allocations skip zeroing (see `Meta::clean_from`);
    // only where zeroing writes no data.
    let ops = io.chan.info().ops;
    let cheap = ops.contains(Ops::WRITE_ZEROES | Ops::CHEAP_ZEROES);
    let clean_from = match cheap {
        true => match io
            .zero_all(label.data_offset, label.clusters * label.cluster_size)
            .await
        {
            Ok(()) => 0,
            Err(err) => {
                // Not fatal: clusters are then zeroed as they are allocated.
                tracing::warn!(pool = %label.name, error = %err, "lvol: cannot zero the data area at format; zeroing clusters on first use");
                label.clusters
            }
        },
        false => label.clusters,
    };
    let meta = Meta {
        generation: 1,
        next_id: 1,
        vols: Default::default(),
        clean_from,
    };
    let img = encode_meta(&meta, label)?;
    io.write(label.slot_offset[1], &img).await.map_err(&e)?;
    io.write(label.slot_offset[0], &vec![0u8; bs])
        .await
        .map_err(&e)?;
    if label.log_size > 0 {
        io.write(label.log_offset, &vec![0u8; bs])
            .await
            .map_err(&e)?;
    }
    io.flush().await.map_err(&e)?;
    let mut lb = vec![0u8; bs];
    lb[..super::format::LABEL_LEN].copy_from_slice(&label.encode());
    io.write(0, &lb).await.map_err(&e)?;
    io.flush().await.map_err(&e)?;
    let log = LogPos {
        base_slot: 1,
        base_generation: meta.generation,
        tail: 0,
    };
    Ok((meta, log))
}
