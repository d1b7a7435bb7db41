//! Opening a partition directory after a clean stop or a crash.
//!
//! Sealed segments were fully fdatasync'ed, truncated to their data and indexed before the next
//! segment was created, so they are trusted when their index files are intact and agree with
//! the data size. The active (last) segment is scanned from its start, the last clean point:
//! every batch's length, magic, count, CRC-32C and offset order is checked, and the file is cut
//! at the first invalid batch (torn tail, zero padding, garbage, or an older batch: a recycled
//! file's previous contents, see "Segment recycling" in `log.rs`). A sealed segment whose index
//! is missing or damaged is rescanned the same way; if that scan finds corruption, the log ends
//! there and every later segment is deleted, so nothing after the first invalid batch is served.
//! The persisted log start offset (`log_start.rs`) is read last; segments a crash left wholly
//! below it are deleted.

use std::path::Path;

use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::index::{SegmentIndex, SegmentSummary};
use crate::log::{Recovered, RecoveredSegment};
use crate::segment;
use crate::writer::Writer;

pub(crate) async fn recover(config: &LogConfig) -> Result<Recovered> {
    let dir = config.dir.as_path();
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating partition directory", dir, e))?;
    segment::probe_device(dir).await?;
    let bases = list_segments(dir)?;
    remove_temporaries(dir)?;

    let mut segments: Vec<RecoveredSegment> = Vec::new();
    let mut cut_after: Option<usize> = None;
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        if let Some(prev) = segments.last() {
            if base < prev.next_offset {
                tracing::warn!(target: "iouring_storage", dir = %dir.display(), base, prev_next = prev.next_offset, "segment overlaps its predecessor; log ends before it");
                cut_after = Some(i);
                break;
            }
        }
        let path = segment::log_path(dir, base);
        let file = segment::open_data_file(&path, false).await?;
        let file_bytes = file.file_size().await.map_err(|e| Error::io("sizing segment", &path, e))?;
        if !is_last {
            match segment::load_index(dir, base, config.index_interval_bytes, file_bytes).await? {
                Ok((index, summary)) => {
                    segments.push(RecoveredSegment {
                        base_offset: base,
                        file,
                        data_bytes: summary.data_bytes,
                        next_offset: summary.next_offset,
                        index,
                    });
                    continue;
                }
                Err(why) => {
                    tracing::warn!(target: "iouring_storage", dir = %dir.display(), base, %why, "rebuilding index of sealed segment")
                }
            }
        }
        let mut index = SegmentIndex::new(config.index_interval_bytes);
        let end = segment::scan(&file, &path, 0, base, file_bytes, true, |h, pos| {
            index.on_batch(
                (h.base_offset as u64 - base) as u32,
                pos as u32,
                h.total_bytes as u32,
                h.max_timestamp,
            );
            true
        })
        .await?;
        if end.valid_bytes < file_bytes {
            let why = end.stopped.as_deref().unwrap_or("end of data");
            let benign = why == "zero padding" && is_last;
            if benign {
                tracing::debug!(target: "iouring_storage", dir = %dir.display(), base, valid = end.valid_bytes, "active segment ends at zero padding");
            } else {
                tracing::warn!(target: "iouring_storage", dir = %dir.display(), base, valid = end.valid_bytes, file_bytes, %why, "truncating segment at first invalid batch");
            }
            segment::truncate_durably(&file, end.valid_bytes)
                .await
                .map_err(|e| Error::io("truncating segment", &path, e))?;
            if !is_last {
                cut_after = Some(i + 1);
            }
        }
        if !is_last && cut_after.is_none() {
            let summary = SegmentSummary {
                data_bytes: end.valid_bytes,
                next_offset: end.next_offset,
                max_timestamp: index.max_timestamp(),
            };
            segment::store_index(dir, base, &index, summary).await?;
        }
        segments.push(RecoveredSegment {
            base_offset: base,
            file,
            data_bytes: end.valid_bytes,
            next_offset: end.next_offset,
            index,
        });
        if cut_after.is_some() {
            break;
        }
    }
    if let Some(from) = cut_after {
        // Newest first, so a crash part-way still leaves a contiguous prefix.
        for &base in bases[from..].iter().rev() {
            for p in [
                segment::log_path(dir, base),
                segment::index_path(dir, base),
                segment::time_index_path(dir, base),
            ] {
                segment::remove_file("deleting segment after corruption", p).await?;
            }
        }
    }

    if segments.is_empty() {
        let base = config.initial_offset;
        let path = segment::log_path(dir, base);
        let file = segment::open_data_file(&path, true).await?;
        segments.push(RecoveredSegment {
            base_offset: base,
            file,
            data_bytes: 0,
            next_offset: base,
            index: SegmentIndex::new(config.index_interval_bytes),
        });
    }
    let log_start_offset = recover_log_start(dir, &mut segments).await?;
    // The last segment is the active one: it may not keep stale index files, which would
    // describe a smaller segment after more appends.
    let active = segments.last().expect("at least one segment");
    for p in [
        segment::index_path(dir, active.base_offset),
        segment::time_index_path(dir, active.base_offset),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing stale active index", p, e)),
        }
    }
    segment::sync_dir(dir).await?;

    let path = segment::log_path(dir, active.base_offset);
    let allocated = active.file.file_size().await.map_err(|e| Error::io("sizing segment", &path, e))?;
    let writer = Writer::open(active.file.clone(), config.write_buffer_bytes, active.data_bytes, allocated)
        .await
        .map_err(|e| Error::io("reading tail block", &path, e))?;
    let log_end = active.next_offset;
    // Snapshots above the recovered end describe data a crash or corruption took back.
    crate::producer_state::remove_snapshots_above(dir, log_end)?;
    let replay: Vec<crate::producer_state::ReplaySegment> =
        segments.iter().map(|s| (s.base_offset, s.file.clone(), s.data_bytes)).collect();
    let producers = crate::producer_state::rebuild(dir, &replay, log_end).await?;
    // Only now: such a snapshot (at the log end) may just have spared the replay.
    let bases: Vec<u64> = segments.iter().map(|s| s.base_offset).collect();
    crate::producer_state::remove_orphan_snapshots(dir, &bases)?;
    tracing::info!(target: "iouring_storage", dir = %dir.display(), segments = segments.len(), log_end, producers = producers.len(), "partition log opened");
    Ok(Recovered {
        segments,
        writer,
        log_start_offset,
        producers,
        spare: segment::spare_path(dir).exists(),
    })
}

/// Reads the persisted log start (see `log_start.rs`) and finishes what a crash interrupted:
/// sealed segments wholly below it are deleted. A damaged file is reported and removed (the
/// start falls back to the first segment's base); a start beyond the log end (the data above it
/// was lost to corruption) is lowered to the log end and rewritten.
async fn recover_log_start(dir: &Path, segments: &mut Vec<RecoveredSegment>) -> Result<u64> {
    let path = crate::log_start::path(dir);
    let start = match crate::log_start::load(dir).await? {
        None => return Ok(0),
        Some(Ok(start)) => start,
        Some(Err(why)) => {
            tracing::warn!(target: "iouring_storage", path = %path.display(), %why, "log start offset file is damaged; the log starts at its first segment");
            std::fs::remove_file(&path).map_err(|e| Error::io("removing damaged log start file", &path, e))?;
            return Ok(0);
        }
    };
    let below = segments
        .iter()
        .take(segments.len() - 1)
        .take_while(|s| s.next_offset <= start)
        .count();
    let doomed: Vec<RecoveredSegment> = segments.drain(..below).collect();
    for s in doomed {
        segment::delete_segment("deleting segment below the log start", dir, s.base_offset, s.file).await?;
    }
    if below > 0 {
        tracing::info!(target: "iouring_storage", dir = %dir.display(), segments = below, log_start = start, "deleted segments below the log start");
    }
    let log_end = segments.last().expect("the active segment is kept").next_offset;
    if start > log_end {
        tracing::warn!(target: "iouring_storage", dir = %dir.display(), log_start = start, log_end, "log start offset beyond the recovered log end; lowered to it");
        crate::log_start::store(dir, log_end).await?;
        return Ok(log_end);
    }
    Ok(start)
}

/// Base offsets of the segments in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("listing partition directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("listing partition directory", dir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(segment::parse_log_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Removes half-written index files and index files whose segment is gone.
fn remove_temporaries(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("listing partition directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("listing partition directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let orphan_index = name
            .strip_suffix(".index")
            .or_else(|| name.strip_suffix(".timeindex"))
            .is_some_and(|stem| !dir.join(format!("{stem}.log")).exists());
        if name.ends_with(".tmp") || name == ".device-probe" || orphan_index {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io("removing leftover file", entry.path(), e))?;
        }
    }
    Ok(())
}
