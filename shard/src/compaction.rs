//! Log compaction of a shard's partitions (cleanup.policy=compact): keep the latest record per
//! key in sealed segments, and drop tombstones once they are older than delete.retention.ms.
//!
//! What a key is belongs to the crate above: it gives a `Compactor` that lists a batch's
//! records and rebuilds a batch with fewer of them. This module decides which records go and
//! drives `iouring_storage::SegmentRewrite`.
//!
//! A pass over one partition, like Kafka's cleaner:
//! 1. If the dirty part (sealed data at or after the first offset not yet cleaned) is less than
//!    `min_cleanable_dirty_ratio` of the sealed data, do nothing.
//! 2. Map each key of the dirty sealed segments to its latest offset, up to
//!    `COMPACTION_KEYS_MAX` keys (the map stops at a batch boundary when full; the rest waits
//!    for the next pass). Keys are 128-bit hashes, as Kafka's cleaner keeps 128-bit MD5s.
//! 3. Rewrite every sealed segment below the map's end, oldest first: a keyed record goes if
//!    the map holds a later offset for its key; a tombstone goes once its batch's max timestamp
//!    is older than delete.retention.ms; a batch of an aborted transaction goes whole (and never
//!    enters the map). Keyless records and control batches stay. A segment that would lose
//!    nothing is left alone. Only segments below the last stable offset are cleaned.
//!
//! Oldest first matters: a tombstone is only dropped in the same pass that drops the older
//! values of its key, which lie in earlier segments and are rewritten before it.
//!
//! The active segment is never compacted. Work is bounded (one partition at a time, one key
//! map, one rewrite buffer) and yields to the reactor between batches, so appends go on.

use std::collections::HashMap;
use std::sync::Arc;

use iouring_storage::{BatchHeader, PartitionLog, SegmentInfo};

use crate::constants::{COMPACTION_KEYS_MAX, COMPACTION_READ_BYTES};
use crate::{Error, Result, TopicPartition};

/// A compacted partition's settings (`delete.retention.ms`, `min.cleanable.dirty.ratio`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionPolicy {
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
}

/// One record as compaction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKey {
    pub offset: u64,
    /// A 128-bit hash of the key; `None` for a record without a key.
    pub key: Option<u128>,
    /// The value is null.
    pub tombstone: bool,
}

/// What compaction needs from the crate that knows the record format.
pub trait Compactor: Send + Sync {
    /// The partition's compaction settings, or `None` if it is not compacted.
    fn policy(&self, tp: &TopicPartition) -> Option<CompactionPolicy>;
    /// Visits every record of one stored batch (a control batch has none to visit).
    fn records(&self, batch: &[u8], visit: &mut dyn FnMut(RecordKey)) -> std::result::Result<(), String>;
    /// The batch with only the records for which `keep(offset)` holds, same base offset and
    /// offset range; `None` when none is kept.
    fn retain(&self, batch: &[u8], keep: &dyn Fn(u64) -> bool) -> std::result::Result<Option<Vec<u8>>, String>;
}

/// What one pass did to a partition.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    pub segments_rewritten: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The first offset not cleaned by this pass.
    pub clean_end: u64,
}

fn storage(tp: &TopicPartition) -> impl Fn(iouring_storage::Error) -> Error + '_ {
    move |source| Error::Storage {
        tp: tp.to_string(),
        source,
    }
}

fn bad_data(tp: &TopicPartition, detail: String) -> Error {
    Error::Compaction {
        tp: tp.to_string(),
        detail,
    }
}

/// Whole batches of `seg` at or after `from`, handed to `each` one by one.
async fn for_each_batch(
    tp: &TopicPartition,
    log: &PartitionLog,
    seg: &SegmentInfo,
    from: u64,
    mut each: impl FnMut(&[u8], &BatchHeader) -> Result<()>,
) -> Result<()> {
    let mut next = Some(from.max(seg.base_offset));
    while let Some(from) = next {
        next = read_chunk(tp, log, seg, from, &mut each).await?;
    }
    Ok(())
}

/// Runs one compaction pass over `tp`, whose first dirty offset is `first_dirty`.
pub(crate) async fn compact_partition(
    tp: &TopicPartition,
    log: &PartitionLog,
    compactor: &Arc<dyn Compactor>,
    policy: CompactionPolicy,
    first_dirty: u64,
    now_ms: i64,
) -> Result<PassStats> {
    // Only segments wholly below the last stable offset: an open transaction's records may
    // still abort (Kafka cleans up to the first unstable offset too).
    let last_stable = log.offsets().last_stable;
    let sealed: Vec<SegmentInfo> = log
        .sealed_segments()
        .into_iter()
        .take_while(|s| s.next_offset <= last_stable)
        .collect();
    // Records of aborted transactions go whole and never count as a key's latest value, as in
    // Kafka's cleaner: otherwise an aborted write could outlive the committed one it hid.
    let aborted = log.aborted_transactions(0, u64::MAX);
    let is_aborted = |h: &BatchHeader| {
        h.is_transactional()
            && !h.is_control()
            && aborted
                .iter()
                .any(|a| a.producer_id == h.producer_id && (a.first_offset..=a.last_offset).contains(&(h.base_offset as u64)))
    };
    let mut stats = PassStats {
        clean_end: first_dirty,
        ..PassStats::default()
    };
    let total: u64 = sealed.iter().map(|s| s.size_bytes).sum();
    let dirty: u64 = sealed.iter().filter(|s| s.next_offset > first_dirty).map(|s| s.size_bytes).sum();
    if total == 0 || (dirty as f64) < policy.min_cleanable_dirty_ratio * total as f64 {
        return Ok(stats);
    }

    // The latest offset of each key in the dirty sealed segments.
    let mut latest: HashMap<u128, u64> = HashMap::new();
    let mut map_end = first_dirty;
    'segments: for seg in sealed.iter().filter(|s| s.next_offset > first_dirty) {
        let mut full = false;
        for_each_batch(tp, log, seg, first_dirty, |batch, h| {
            if full {
                return Ok(());
            }
            if latest.len() >= COMPACTION_KEYS_MAX {
                full = true;
                return Ok(());
            }
            if is_aborted(h) {
                map_end = h.last_offset() as u64 + 1;
                return Ok(());
            }
            compactor
                .records(batch, &mut |r| {
                    if let Some(k) = r.key {
                        latest.insert(k, r.offset);
                    }
                })
                .map_err(|e| bad_data(tp, format!("batch at {}: {e}", h.base_offset)))?;
            map_end = h.last_offset() as u64 + 1;
            Ok(())
        })
        .await?;
        if full {
            break 'segments;
        }
        map_end = seg.next_offset;
    }

    let horizon_ms = now_ms.saturating_sub(policy.delete_retention_ms);
    let goes = |r: &RecordKey, max_timestamp: i64| match r.key {
        None => false,
        Some(k) => latest.get(&k).is_some_and(|&o| o > r.offset) || (r.tombstone && max_timestamp < horizon_ms),
    };
    for seg in sealed.iter().filter(|s| s.base_offset < map_end) {
        // First pass: does anything go? Only then is the segment rewritten.
        let mut any = false;
        for_each_batch(tp, log, seg, seg.base_offset, |batch, h| {
            if !any && is_aborted(h) {
                any = true;
            }
            if !any {
                compactor
                    .records(batch, &mut |r| any |= goes(&r, h.max_timestamp))
                    .map_err(|e| bad_data(tp, format!("batch at {}: {e}", h.base_offset)))?;
            }
            Ok(())
        })
        .await?;
        if !any {
            continue;
        }
        let mut rewrite = log.rewrite_segment(seg.base_offset).await.map_err(storage(tp))?;
        // Batches to push are gathered per read chunk (the push is async, the visit is not).
        let mut next = Some(seg.base_offset);
        while let Some(from) = next {
            let mut keep: Vec<Vec<u8>> = Vec::new();
            next = read_chunk(tp, log, seg, from, |batch, h| {
                if is_aborted(h) {
                    return Ok(());
                }
                let mut dropped = Vec::new();
                compactor
                    .records(batch, &mut |r| {
                        if goes(&r, h.max_timestamp) {
                            dropped.push(r.offset);
                        }
                    })
                    .map_err(|e| bad_data(tp, format!("batch at {}: {e}", h.base_offset)))?;
                if dropped.is_empty() {
                    keep.push(batch.to_vec());
                } else if let Some(rebuilt) = compactor
                    .retain(batch, &|o| !dropped.contains(&o))
                    .map_err(|e| bad_data(tp, format!("batch at {}: {e}", h.base_offset)))?
                {
                    keep.push(rebuilt);
                }
                Ok(())
            })
            .await?;
            for b in &keep {
                rewrite.push(b).await.map_err(storage(tp))?;
            }
        }
        let after = rewrite.data_bytes();
        if rewrite.finish().await.map_err(storage(tp))? {
            stats.segments_rewritten += 1;
            stats.bytes_before += seg.size_bytes;
            stats.bytes_after += after;
        }
    }
    stats.clean_end = map_end;
    Ok(stats)
}

/// Reads one chunk of whole batches of `seg` from `from` and hands each to `each`. Returns
/// where the next chunk starts, or `None` at the segment's end.
async fn read_chunk(
    tp: &TopicPartition,
    log: &PartitionLog,
    seg: &SegmentInfo,
    from: u64,
    mut each: impl FnMut(&[u8], &BatchHeader) -> Result<()>,
) -> Result<Option<u64>> {
    let Some(read) = log.read(from, COMPACTION_READ_BYTES).await.map_err(storage(tp))? else {
        return Ok(None);
    };
    if read.first_offset >= seg.next_offset {
        return Ok(None);
    }
    let mut rest: &[u8] = &read.bytes;
    while !rest.is_empty() {
        let h = BatchHeader::parse(rest).map_err(|e| bad_data(tp, e.to_string()))?;
        if h.total_bytes > rest.len() {
            return Err(bad_data(tp, format!("batch at {} cut short", h.base_offset)));
        }
        if h.base_offset as u64 >= seg.next_offset {
            return Ok(None);
        }
        each(&rest[..h.total_bytes], &h)?;
        rest = &rest[h.total_bytes..];
    }
    glommio::yield_if_needed().await;
    Ok((read.next_offset < seg.next_offset).then_some(read.next_offset))
}
