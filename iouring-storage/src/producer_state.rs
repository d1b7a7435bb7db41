//! Idempotent producer state of one partition (KIP-98): for each producer id, its epoch and the
//! metadata of its last `PRODUCER_BATCHES_MAX` batches, so that a retried batch is recognised
//! and answered with the offsets it got the first time, and a gap or an old epoch is refused.
//!
//! The rules follow Kafka's `ProducerStateManager`/`ProducerAppendInfo` (3.x) for batches that
//! come from clients, checked in this order under the log's append lock, before any byte of the
//! batch is written:
//!
//! 1. producer id below 0: not idempotent, no check;
//! 2. base sequence below 0 with a producer id: refused (Kafka's `LogValidator`: INVALID_RECORD);
//! 3. same epoch as the producer's and the same first and last sequence as one of its cached
//!    batches: a duplicate; nothing is appended and the original offsets are the answer;
//! 4. epoch below the producer's: refused (INVALID_PRODUCER_EPOCH);
//! 5. a newer epoch must start at sequence 0; the same epoch must continue at the sequence after
//!    the last one (wrapping from `i32::MAX` to 0); anything else is out of order;
//! 6. an unknown producer may start at any sequence (Kafka accepts it since KIP-360: its state
//!    may have been removed with the segments that held it).
//!
//! Transactions (KIP-98) on top: a transactional batch (attribute `0x10`) opens a transaction
//! for its producer unless one is open, recording the transaction's first offset; a marker
//! (`record_marker`, written by the log for the coordinator) closes it. Open transactions hold
//! the last stable offset (`first_unstable`) at their first offset. An abort adds
//! (producer id, first offset, marker offset) to the aborted list, which read_committed
//! fetches use to drop aborted batches; an abort with no open transaction adds an entry that
//! covers the marker alone, as Kafka does. Markers are checked as Kafka's
//! `appendEndTxnMarker` does: an epoch below the producer's is refused (INVALID_PRODUCER_EPOCH
//! since Kafka 2.7), and so is a coordinator epoch below the last marker's; a marker at a newer
//! epoch moves the producer to it and forgets its batches. Control batches from clients never
//! get here (the log refuses them).
//!
//! The state is snapshotted when a segment rolls (`<base offset>.snapshot`, the state of every
//! batch below that offset) and rebuilt at open from the newest valid snapshot plus the batch
//! headers after it (and the marker record of each control batch).
//!
//! Snapshot format (little-endian), written durably (temporary file, fdatasync, rename,
//! directory fsync) and zero padded to the device alignment. Version 2 (written now):
//!
//! | bytes    | field |
//! |----------|-------|
//! | 0..4     | magic `KPSN` |
//! | 4..6     | format version u16 = 2 |
//! | 6..8     | reserved, zero |
//! | 8..16    | offset u64: the state covers every batch below it |
//! | 16..20   | producer count u32, at most `PRODUCERS_PER_PARTITION_MAX` |
//! | 20..24   | aborted transaction count u32 |
//! | then     | per producer (24 bytes): producer id i64, epoch i16, batch count u8 (0..=5), flags u8 (bit 0: a transaction is open; other bits zero), coordinator epoch i32, first offset of the open transaction u64 (zero when none) |
//! | then     | per batch, oldest first: first sequence i32, last sequence i32, first offset u64, last offset u64, max timestamp i64 (32 bytes) |
//! | then     | per aborted transaction, by last offset ascending (24 bytes): producer id i64, first offset u64, last offset u64 (the abort marker's) |
//! | last 4   | CRC-32C u32 of every byte before it |
//!
//! Version 1 (still read): no aborted count (the producers start at byte 20), producers of 12
//! bytes (producer id i64, epoch i16, batch count u8 in 1..=5, reserved u8 zero), no aborted
//! transactions; its producers have no open transaction and coordinator epoch -1.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::batch::{BatchHeader, Marker};
use crate::constants::{PRODUCERS_PER_PARTITION_MAX, PRODUCER_BATCHES_MAX};
use crate::error::{ProducerError, Result};
use crate::segment;

const MAGIC: &[u8; 4] = b"KPSN";
const FORMAT_VERSION: u16 = 2;
const HEAD_BYTES_V1: usize = 20;
const HEAD_BYTES: usize = 24;
const PRODUCER_BYTES_V1: usize = 12;
const PRODUCER_BYTES: usize = 24;
const BATCH_BYTES: usize = 32;
const ABORTED_BYTES: usize = 24;
const CRC_BYTES: usize = 4;
const FLAG_OPEN_TXN: u8 = 1;

/// An aborted transaction of one producer: readers in read_committed mode drop that
/// producer's batches from `first_offset` up to the abort marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    pub last_offset: u64,
}

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first, at most `PRODUCER_BATCHES_MAX`; empty after a marker moved the producer to
    /// a new epoch.
    batches: VecDeque<BatchMeta>,
    /// First offset of the producer's open transaction on this partition.
    txn_first: Option<u64>,
    /// Coordinator epoch of the last marker (-1 before any).
    coordinator_epoch: i32,
}

impl ProducerEntry {
    fn new(epoch: i16) -> Self {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(PRODUCER_BATCHES_MAX),
            txn_first: None,
            coordinator_epoch: -1,
        }
    }
}

/// What the producer check says about a batch about to be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Append it, then `record` it (`idempotent` says whether there is anything to record).
    Append { idempotent: bool },
    /// A retry of a batch already in the log: append nothing, answer with these offsets.
    Duplicate(BatchMeta),
}

/// The last sequence of a batch: Kafka's `DefaultRecordBatch.incrementSequence`, which wraps
/// from `i32::MAX` to 0.
pub(crate) fn last_sequence(base_sequence: i32, last_offset_delta: i32) -> i32 {
    if base_sequence > i32::MAX - last_offset_delta {
        last_offset_delta - (i32::MAX - base_sequence) - 1
    } else {
        base_sequence + last_offset_delta
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions by first offset (each producer has at most one), so the last stable
    /// offset is the first key.
    open_txns: BTreeMap<u64, i64>,
    /// Aborted transactions by last offset ascending (markers are appended in offset order).
    aborted: VecDeque<AbortedTxn>,
}

impl ProducerState {
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// Checks a client's batch against the state; changes nothing.
    pub(crate) fn check(&self, h: &BatchHeader) -> std::result::Result<Check, ProducerError> {
        if h.producer_id < 0 || h.is_control() {
            return Ok(Check::Append { idempotent: false });
        }
        if h.base_sequence < 0 {
            return Err(ProducerError::InvalidSequence {
                producer_id: h.producer_id,
                sequence: h.base_sequence,
            });
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return Ok(Check::Append { idempotent: true });
        };
        let first_seq = h.base_sequence;
        let last_seq = last_sequence(first_seq, h.last_offset_delta);
        if h.producer_epoch == entry.epoch {
            if let Some(dup) = entry.batches.iter().find(|b| b.first_seq == first_seq && b.last_seq == last_seq) {
                return Ok(Check::Duplicate(*dup));
            }
        }
        if h.producer_epoch < entry.epoch {
            return Err(ProducerError::InvalidEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current_epoch: entry.epoch,
            });
        }
        // No batch at this epoch yet (a marker moved the producer to it): the next sequence is
        // 0, as Kafka's `inSequence(NO_SEQUENCE, seq)` says.
        let last = entry.batches.back().map_or(-1, |b| b.last_seq);
        let ok = if h.producer_epoch != entry.epoch {
            first_seq == 0 || entry.epoch == -1
        } else {
            entry.epoch == -1 || (last == -1 && first_seq == 0) || (last >= 0 && in_sequence(last, first_seq))
        };
        if !ok {
            return Err(ProducerError::OutOfOrderSequence {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                sequence: first_seq,
                last_sequence: last,
                current_epoch: entry.epoch,
            });
        }
        Ok(Check::Append { idempotent: true })
    }

    /// Records a batch now in the log at `first_offset` (appended, or found by replay). With
    /// `PRODUCERS_PER_PARTITION_MAX` producers known, a new one evicts the producer whose last
    /// batch is oldest, as Kafka's producer id expiration would first.
    pub(crate) fn record(&mut self, h: &BatchHeader, first_offset: u64) {
        if h.producer_id < 0 || h.is_control() || h.base_sequence < 0 {
            return;
        }
        self.make_room_for(h.producer_id);
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry::new(h.producer_epoch));
        if h.is_transactional() && entry.txn_first.is_none() {
            entry.txn_first = Some(first_offset);
            self.open_txns.insert(first_offset, h.producer_id);
        }
        if entry.epoch != h.producer_epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_BATCHES_MAX {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h.base_sequence, h.last_offset_delta),
            first_offset,
            last_offset: first_offset + h.last_offset_delta.max(0) as u64,
            max_timestamp: h.max_timestamp,
        });
    }

    /// With `PRODUCERS_PER_PARTITION_MAX` producers known and `pid` not among them, forgets
    /// the producer whose last batch is oldest, preferring one without an open transaction
    /// (forgetting an open transaction would move the last stable offset past it).
    fn make_room_for(&mut self, pid: i64) {
        if self.producers.contains_key(&pid) || self.producers.len() < PRODUCERS_PER_PARTITION_MAX {
            return;
        }
        let age = |e: &ProducerEntry| (e.txn_first.is_some(), e.batches.back().map_or(0, |b| b.last_offset));
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, e)| age(e))
            .map(|(&pid, _)| pid)
            .expect("the map is full, so not empty");
        if let Some(first) = self.producers.remove(&oldest).and_then(|e| e.txn_first) {
            tracing::warn!(target: "iouring_storage", producer_id = oldest, first, "producer with an open transaction forgotten at the producer bound");
            self.open_txns.remove(&first);
        }
    }

    /// Checks a transaction marker about to be written for `producer_id`; changes nothing.
    pub(crate) fn check_marker(&self, producer_id: i64, epoch: i16, coordinator_epoch: i32) -> std::result::Result<(), ProducerError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidEpoch {
                producer_id,
                epoch,
                current_epoch: entry.epoch,
            });
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(ProducerError::CoordinatorFenced {
                producer_id,
                coordinator_epoch,
                current_coordinator_epoch: entry.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records a transaction marker now in the log at `offset` (written, or found by replay):
    /// the producer's transaction ends, and an abort joins the aborted list.
    pub(crate) fn record_marker(&mut self, producer_id: i64, epoch: i16, marker: Marker, offset: u64) {
        if producer_id < 0 {
            return;
        }
        self.make_room_for(producer_id);
        let entry = self.producers.entry(producer_id).or_insert_with(|| ProducerEntry::new(epoch));
        if entry.epoch != epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = marker.coordinator_epoch;
        let first = entry.txn_first.take();
        if let Some(f) = first {
            self.open_txns.remove(&f);
        }
        if !marker.commit {
            self.aborted.push_back(AbortedTxn {
                producer_id,
                first_offset: first.unwrap_or(offset),
                last_offset: offset,
            });
        }
    }

    /// The first offset of the oldest open transaction, if any: the last stable offset cannot
    /// pass it.
    pub(crate) fn first_unstable(&self) -> Option<u64> {
        self.open_txns.keys().next().copied()
    }

    /// The aborted transactions that overlap `[from, to)`: last offset at or after `from`, first
    /// offset below `to` (Kafka's `collectAbortedTxns`), by last offset.
    pub(crate) fn aborted_between(&self, from: u64, to: u64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted.range(start..).filter(|a| a.first_offset < to).copied().collect()
    }

    /// Forgets the aborted transactions that end below `offset` (the log start moved past
    /// them: no read can reach them).
    pub(crate) fn forget_aborted_below(&mut self, offset: u64) {
        while self.aborted.front().is_some_and(|a| a.last_offset < offset) {
            self.aborted.pop_front();
        }
    }

    /// The snapshot of this state as of `offset` (format in the module documentation).
    pub(crate) fn encode(&self, offset: u64) -> Vec<u8> {
        let batches: usize = self.producers.values().map(|e| e.batches.len()).sum();
        let mut b = Vec::with_capacity(
            HEAD_BYTES + self.producers.len() * PRODUCER_BYTES + batches * BATCH_BYTES + self.aborted.len() * ABORTED_BYTES + CRC_BYTES,
        );
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&(self.producers.len() as u32).to_le_bytes());
        let aborted = u32::try_from(self.aborted.len()).expect("aborted transactions fit u32");
        b.extend_from_slice(&aborted.to_le_bytes());
        // Sorted, so equal states give equal files.
        let mut pids: Vec<&i64> = self.producers.keys().collect();
        pids.sort_unstable();
        for pid in pids {
            let e = &self.producers[pid];
            b.extend_from_slice(&pid.to_le_bytes());
            b.extend_from_slice(&e.epoch.to_le_bytes());
            b.push(e.batches.len() as u8);
            b.push(if e.txn_first.is_some() { FLAG_OPEN_TXN } else { 0 });
            b.extend_from_slice(&e.coordinator_epoch.to_le_bytes());
            b.extend_from_slice(&e.txn_first.unwrap_or(0).to_le_bytes());
            for m in &e.batches {
                b.extend_from_slice(&m.first_seq.to_le_bytes());
                b.extend_from_slice(&m.last_seq.to_le_bytes());
                b.extend_from_slice(&m.first_offset.to_le_bytes());
                b.extend_from_slice(&m.last_offset.to_le_bytes());
                b.extend_from_slice(&m.max_timestamp.to_le_bytes());
            }
        }
        for a in &self.aborted {
            b.extend_from_slice(&a.producer_id.to_le_bytes());
            b.extend_from_slice(&a.first_offset.to_le_bytes());
            b.extend_from_slice(&a.last_offset.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a snapshot of either version (padding included) into its offset and state, or
    /// says what is wrong. Nothing is sized from the file beyond what the file itself holds.
    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<(u64, ProducerState), String> {
        if bytes.len() < HEAD_BYTES_V1 + CRC_BYTES {
            return Err(format!("{} bytes, shorter than an empty snapshot", bytes.len()));
        }
        if &bytes[0..4] != MAGIC {
            return Err(format!("magic {:02x?} is not KPSN", &bytes[0..4]));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != 1 && version != FORMAT_VERSION {
            return Err(format!("format version {version} is neither 1 nor {FORMAT_VERSION}"));
        }
        let v2 = version == FORMAT_VERSION;
        if bytes[6..8] != [0, 0] {
            return Err("reserved bytes are not zero".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let offset = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let count = u32_at(16);
        if count > PRODUCERS_PER_PARTITION_MAX {
            return Err(format!("{count} producers, more than {PRODUCERS_PER_PARTITION_MAX}"));
        }
        let (aborted_count, mut at) = if v2 {
            if bytes.len() < HEAD_BYTES + CRC_BYTES {
                return Err("file ends inside the header".into());
            }
            (u32_at(20), HEAD_BYTES)
        } else {
            (0, HEAD_BYTES_V1)
        };
        let producer_bytes = if v2 { PRODUCER_BYTES } else { PRODUCER_BYTES_V1 };
        let mut state = ProducerState::default();
        for _ in 0..count {
            let Some(p) = bytes.get(at..at + producer_bytes) else {
                return Err("file ends inside a producer".into());
            };
            let pid = i64::from_le_bytes(p[0..8].try_into().expect("8 bytes"));
            let epoch = i16::from_le_bytes([p[8], p[9]]);
            let n = usize::from(p[10]);
            let min_batches = if v2 { 0 } else { 1 };
            if pid < 0 || n < min_batches || n > PRODUCER_BATCHES_MAX || p[11] & !FLAG_OPEN_TXN != 0 || (!v2 && p[11] != 0) {
                return Err(format!("producer {pid}: bad entry ({n} batches)"));
            }
            let mut entry = ProducerEntry::new(epoch);
            if v2 {
                entry.coordinator_epoch = i32::from_le_bytes(p[12..16].try_into().expect("4 bytes"));
                let first = u64::from_le_bytes(p[16..24].try_into().expect("8 bytes"));
                if p[11] & FLAG_OPEN_TXN != 0 {
                    if first >= offset || state.open_txns.insert(first, pid).is_some() {
                        return Err(format!("producer {pid}: open transaction at {first} is inconsistent"));
                    }
                    entry.txn_first = Some(first);
                } else if first != 0 {
                    return Err(format!("producer {pid}: transaction offset without a transaction"));
                }
            }
            at += producer_bytes;
            for _ in 0..n {
                let Some(m) = bytes.get(at..at + BATCH_BYTES) else {
                    return Err("file ends inside a batch".into());
                };
                let meta = BatchMeta {
                    first_seq: i32::from_le_bytes(m[0..4].try_into().expect("4 bytes")),
                    last_seq: i32::from_le_bytes(m[4..8].try_into().expect("4 bytes")),
                    first_offset: u64::from_le_bytes(m[8..16].try_into().expect("8 bytes")),
                    last_offset: u64::from_le_bytes(m[16..24].try_into().expect("8 bytes")),
                    max_timestamp: i64::from_le_bytes(m[24..32].try_into().expect("8 bytes")),
                };
                let ordered = entry
                    .batches
                    .back()
                    .is_none_or(|prev: &BatchMeta| prev.last_offset < meta.first_offset);
                if meta.first_seq < 0 || meta.last_offset < meta.first_offset || meta.last_offset >= offset || !ordered {
                    return Err(format!("producer {pid}: batch {meta:?} is inconsistent"));
                }
                entry.batches.push_back(meta);
                at += BATCH_BYTES;
            }
            if state.producers.insert(pid, entry).is_some() {
                return Err(format!("producer {pid} appears twice"));
            }
        }
        // Checked against the file before anything is sized from the count.
        if aborted_count > (bytes.len() - at) / ABORTED_BYTES {
            return Err(format!("{aborted_count} aborted transactions declared, more than the file holds"));
        }
        state.aborted.reserve(aborted_count);
        for _ in 0..aborted_count {
            let a = &bytes[at..at + ABORTED_BYTES];
            let txn = AbortedTxn {
                producer_id: i64::from_le_bytes(a[0..8].try_into().expect("8 bytes")),
                first_offset: u64::from_le_bytes(a[8..16].try_into().expect("8 bytes")),
                last_offset: u64::from_le_bytes(a[16..24].try_into().expect("8 bytes")),
            };
            let ordered = state.aborted.back().is_none_or(|prev| prev.last_offset < txn.last_offset);
            if txn.producer_id < 0 || txn.first_offset > txn.last_offset || txn.last_offset >= offset || !ordered {
                return Err(format!("aborted transaction {txn:?} is inconsistent"));
            }
            state.aborted.push_back(txn);
            at += ABORTED_BYTES;
        }
        let Some(crc) = bytes.get(at..at + CRC_BYTES) else {
            return Err("file ends before the CRC".into());
        };
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&bytes[..at]);
        if stored != computed {
            return Err(format!("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}"));
        }
        if bytes[at + CRC_BYTES..].iter().any(|&b| b != 0) {
            return Err("padding bytes are not zero".into());
        }
        Ok((offset, state))
    }
}

/// `<dir>/<offset as 20 digits>.snapshot`.
pub(crate) fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".snapshot")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Offsets of the snapshots in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<u64>> {
    let mut offsets = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| crate::error::Error::io("listing partition directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| crate::error::Error::io("listing partition directory", dir, e))?;
        if let Some(o) = entry.file_name().to_str().and_then(parse_snapshot_name) {
            offsets.push(o);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Removes the snapshots above `end` (a truncation or a crash took their data).
pub(crate) fn remove_snapshots_above(dir: &Path, end: u64) -> Result<()> {
    for o in list_snapshots(dir)?.into_iter().filter(|&o| o > end) {
        let p = snapshot_path(dir, o);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::error::Error::io("removing stale producer snapshot", p, e)),
        }
    }
    Ok(())
}

/// Removes the snapshots that belong to no segment: a crash between writing a roll's
/// snapshot and creating its segment leaves one that retention would never delete.
pub(crate) fn remove_orphan_snapshots(dir: &Path, segment_bases: &[u64]) -> Result<()> {
    for o in list_snapshots(dir)?.into_iter().filter(|o| !segment_bases.contains(o)) {
        let p = snapshot_path(dir, o);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::error::Error::io("removing orphan producer snapshot", p, e)),
        }
    }
    Ok(())
}

/// A segment to replay: base offset, file, bytes of whole batches.
pub(crate) type ReplaySegment = (u64, Rc<DmaFile>, u64);

/// Rebuilds the state of a log whose batches end at `end`: the newest valid snapshot at or
/// below `end`, then the headers of every batch from its offset on. Damaged snapshots are
/// reported and skipped (an older one, or the start of the log, is used instead).
pub(crate) async fn rebuild(dir: &Path, segments: &[ReplaySegment], end: u64) -> Result<ProducerState> {
    let mut from = 0u64;
    let mut state = ProducerState::default();
    for o in list_snapshots(dir)?.into_iter().rev().filter(|&o| o <= end) {
        let path = snapshot_path(dir, o);
        let Some(bytes) = segment::read_small_file(&path).await? else {
            continue;
        };
        match ProducerState::decode(&bytes) {
            Ok((offset, s)) if offset == o => {
                from = o;
                state = s;
                break;
            }
            Ok((offset, _)) => {
                tracing::warn!(target: "iouring_storage", path = %path.display(), offset, "producer snapshot names another offset; skipped")
            }
            Err(why) => tracing::warn!(target: "iouring_storage", path = %path.display(), %why, "producer snapshot is damaged; skipped"),
        }
    }
    for (base, file, data_bytes) in segments {
        let next_base = segments.iter().map(|s| s.0).find(|&b| b > *base).unwrap_or(u64::MAX);
        if next_base <= from {
            continue;
        }
        let path = segment::log_path(dir, *base);
        // Headers alone, except that a control batch stops the scan so its marker record can
        // be read; the scan then goes on after it.
        let (mut pos, mut expected) = (0u64, *base);
        loop {
            let mut control: Option<(BatchHeader, u64)> = None;
            segment::scan(file, &path, pos, expected, *data_bytes, false, |h, p| {
                if h.is_control() {
                    control = Some((*h, p));
                    return false;
                }
                if h.base_offset as u64 >= from {
                    state.record(h, h.base_offset as u64);
                }
                true
            })
            .await?;
            let Some((h, p)) = control else { break };
            if h.base_offset as u64 >= from && h.producer_id >= 0 {
                let bytes = file
                    .read_at(p, h.total_bytes)
                    .await
                    .map_err(|e| crate::error::Error::io("reading transaction marker", &path, e))?;
                if let Some(marker) = crate::batch::parse_marker(&bytes) {
                    state.record_marker(h.producer_id, h.producer_epoch, marker, h.base_offset as u64);
                }
            }
            pos = p + h.total_bytes as u64;
            expected = h.last_offset() as u64 + 1;
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testing::build_batch;
    use proptest::prelude::*;

    fn header(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        let mut b = build_batch(records, 8, 1, 2);
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        BatchHeader::parse(&b).unwrap()
    }

    /// Checks then records, as the log does; returns the check.
    fn append(s: &mut ProducerState, h: &BatchHeader, offset: u64) -> std::result::Result<Check, ProducerError> {
        let c = s.check(h)?;
        if let Check::Append { .. } = c {
            s.record(h, offset);
        }
        Ok(c)
    }

    #[test]
    fn batches_without_a_producer_id_are_never_checked() {
        let mut s = ProducerState::default();
        for pid in [-1, -2, i64::MIN] {
            let h = header(pid, -1, -1, 3);
            assert_eq!(append(&mut s, &h, 0), Ok(Check::Append { idempotent: false }));
            assert_eq!(append(&mut s, &h, 0), Ok(Check::Append { idempotent: false }));
        }
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_negative_sequence_with_a_producer_id_is_refused() {
        let s = ProducerState::default();
        assert!(matches!(s.check(&header(7, 0, -1, 1)), Err(ProducerError::InvalidSequence { .. })));
        assert!(matches!(
            s.check(&header(7, 0, i32::MIN, 1)),
            Err(ProducerError::InvalidSequence { .. })
        ));
    }

    #[test]
    fn each_of_the_last_five_batches_is_a_duplicate_with_its_original_offsets() {
        let mut s = ProducerState::default();
        let mut offset = 100;
        let mut appended = Vec::new();
        for i in 0..7 {
            let h = header(9, 0, i * 2, 2);
            assert_eq!(append(&mut s, &h, offset), Ok(Check::Append { idempotent: true }));
            appended.push((h, offset));
            offset += 2;
        }
        for (h, first) in &appended[2..] {
            match s.check(h) {
                Ok(Check::Duplicate(m)) => {
                    assert_eq!((m.first_offset, m.last_offset), (*first, first + 1));
                    assert_eq!((m.first_seq, m.last_seq), (h.base_sequence, h.base_sequence + 1));
                }
                other => panic!("batch at {first} not a duplicate: {other:?}"),
            }
        }
        // Older than the last five: no longer known, so its sequence is out of order.
        for (h, _) in &appended[..2] {
            assert!(matches!(s.check(h), Err(ProducerError::OutOfOrderSequence { .. })));
        }
        // A batch overlapping a cached one but with another range is no duplicate.
        assert!(matches!(
            s.check(&header(9, 0, 12, 1)),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn gaps_and_repeats_are_out_of_order() {
        let mut s = ProducerState::default();
        append(&mut s, &header(1, 3, 0, 5), 0).unwrap();
        assert!(matches!(
            s.check(&header(1, 3, 6, 1)),
            Err(ProducerError::OutOfOrderSequence {
                sequence: 6,
                last_sequence: 4,
                ..
            })
        ));
        assert!(matches!(
            s.check(&header(1, 3, 4, 1)),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
        assert_eq!(s.check(&header(1, 3, 5, 1)), Ok(Check::Append { idempotent: true }));
    }

    #[test]
    fn an_older_epoch_is_refused_and_a_newer_one_must_start_at_zero() {
        let mut s = ProducerState::default();
        append(&mut s, &header(1, 3, 0, 1), 0).unwrap();
        assert!(matches!(
            s.check(&header(1, 2, 1, 1)),
            Err(ProducerError::InvalidEpoch {
                epoch: 2,
                current_epoch: 3,
                ..
            })
        ));
        // Even a batch that would be a duplicate under the old epoch.
        assert!(matches!(s.check(&header(1, 2, 0, 1)), Err(ProducerError::InvalidEpoch { .. })));
        assert!(matches!(
            s.check(&header(1, 4, 1, 1)),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
        assert_eq!(append(&mut s, &header(1, 4, 0, 1), 1), Ok(Check::Append { idempotent: true }));
        // The new epoch forgets the old batches.
        assert!(matches!(s.check(&header(1, 3, 0, 1)), Err(ProducerError::InvalidEpoch { .. })));
        assert!(matches!(s.check(&header(1, 4, 0, 1)), Ok(Check::Duplicate(m)) if m.first_offset == 1));
    }

    #[test]
    fn an_unknown_producer_may_start_at_any_sequence() {
        let mut s = ProducerState::default();
        assert_eq!(append(&mut s, &header(5, 0, 42, 1), 0), Ok(Check::Append { idempotent: true }));
        assert_eq!(s.check(&header(5, 0, 43, 1)), Ok(Check::Append { idempotent: true }));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 1), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(last_sequence(i32::MAX, i32::MAX), i32::MAX - 1);
        let mut s = ProducerState::default();
        append(&mut s, &header(1, 0, i32::MAX - 1, 2), 0).unwrap();
        assert_eq!(s.check(&header(1, 0, 0, 1)), Ok(Check::Append { idempotent: true }));
        assert!(matches!(
            s.check(&header(1, 0, 1, 1)),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
        append(&mut s, &header(1, 0, 0, 1), 2).unwrap();
        assert_eq!(s.check(&header(1, 0, 1, 1)), Ok(Check::Append { idempotent: true }));
        // A batch that wraps inside itself.
        append(&mut s, &header(2, 0, i32::MAX, 3), 3).unwrap();
        assert_eq!(s.check(&header(2, 0, 2, 1)), Ok(Check::Append { idempotent: true }));
        assert!(matches!(s.check(&header(2, 0, i32::MAX, 3)), Ok(Check::Duplicate(m)) if m.last_seq == 1 && m.first_offset == 3));
    }

    #[test]
    fn control_batches_are_not_checked_or_recorded() {
        let mut s = ProducerState::default();
        let mut h = header(1, 0, 0, 1);
        h.attributes |= crate::batch::ATTRIBUTE_CONTROL;
        assert_eq!(append(&mut s, &h, 0), Ok(Check::Append { idempotent: false }));
        assert_eq!(s.len(), 0);
    }

    fn txn_header(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        let mut h = header(pid, epoch, seq, records);
        h.attributes |= crate::batch::ATTRIBUTE_TRANSACTIONAL;
        h
    }

    fn abort(ce: i32) -> Marker {
        Marker {
            commit: false,
            coordinator_epoch: ce,
        }
    }

    #[test]
    fn transactions_open_at_their_first_batch_and_end_at_their_marker() {
        let mut s = ProducerState::default();
        append(&mut s, &header(5, 0, 0, 1), 0).unwrap();
        assert_eq!(s.first_unstable(), None, "idempotent, not transactional");
        append(&mut s, &txn_header(1, 0, 0, 2), 1).unwrap();
        append(&mut s, &txn_header(2, 0, 0, 2), 3).unwrap();
        append(&mut s, &txn_header(1, 0, 2, 2), 5).unwrap();
        assert_eq!(s.first_unstable(), Some(1));
        s.record_marker(
            1,
            0,
            Marker {
                commit: true,
                coordinator_epoch: 0,
            },
            7,
        );
        assert_eq!(s.first_unstable(), Some(3));
        s.record_marker(2, 0, abort(0), 8);
        assert_eq!(s.first_unstable(), None);
        assert_eq!(
            s.aborted_between(0, u64::MAX),
            vec![AbortedTxn {
                producer_id: 2,
                first_offset: 3,
                last_offset: 8
            }]
        );
        // The sequence goes on across transactions at one epoch.
        assert_eq!(s.check(&txn_header(1, 0, 4, 1)), Ok(Check::Append { idempotent: true }));
        // Fencing: an old epoch, or an old coordinator.
        assert!(matches!(s.check_marker(1, -1, 0), Err(ProducerError::InvalidEpoch { .. })));
        s.record_marker(1, 2, abort(3), 9);
        assert!(matches!(s.check_marker(1, 2, 2), Err(ProducerError::CoordinatorFenced { .. })));
        assert_eq!(s.check_marker(1, 2, 3), Ok(()));
        assert_eq!(s.check_marker(99, 0, 0), Ok(()), "an unknown producer's marker is written");
        // The marker moved producer 1 to epoch 2 with no batches: it starts at sequence 0.
        assert!(matches!(
            s.check(&txn_header(1, 2, 5, 1)),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
        assert_eq!(s.check(&txn_header(1, 2, 0, 1)), Ok(Check::Append { idempotent: true }));
        assert!(matches!(s.check(&txn_header(1, 0, 6, 1)), Err(ProducerError::InvalidEpoch { .. })));
        s.forget_aborted_below(9);
        assert_eq!(s.aborted_between(0, u64::MAX).len(), 1, "the lone abort at 9 stays");
        s.forget_aborted_below(10);
        assert!(s.aborted_between(0, u64::MAX).is_empty());
    }

    #[test]
    fn producers_with_open_transactions_are_evicted_last() {
        let mut s = ProducerState::default();
        append(&mut s, &txn_header(0, 0, 0, 1), 0).unwrap();
        for pid in 1..PRODUCERS_PER_PARTITION_MAX as i64 {
            append(&mut s, &header(pid, 0, 0, 1), pid as u64).unwrap();
        }
        append(&mut s, &header(1_000_000, 0, 0, 1), 1_000_000).unwrap();
        assert!(s.producers.contains_key(&0), "the open transaction is kept");
        assert!(!s.producers.contains_key(&1));
        assert_eq!(s.first_unstable(), Some(0));
    }

    /// A version 1 snapshot, as the code before transactions wrote it.
    fn encode_v1(s: &ProducerState, offset: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&(s.producers.len() as u32).to_le_bytes());
        let mut pids: Vec<&i64> = s.producers.keys().collect();
        pids.sort_unstable();
        for pid in pids {
            let e = &s.producers[pid];
            b.extend_from_slice(&pid.to_le_bytes());
            b.extend_from_slice(&e.epoch.to_le_bytes());
            b.push(e.batches.len() as u8);
            b.push(0);
            for m in &e.batches {
                b.extend_from_slice(&m.first_seq.to_le_bytes());
                b.extend_from_slice(&m.last_seq.to_le_bytes());
                b.extend_from_slice(&m.first_offset.to_le_bytes());
                b.extend_from_slice(&m.last_offset.to_le_bytes());
                b.extend_from_slice(&m.max_timestamp.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn version_1_snapshots_still_load() {
        let mut s = ProducerState::default();
        for pid in 0..3 {
            for k in 0..3 {
                append(&mut s, &header(pid, 1, k, 1), (pid * 10 + i64::from(k)) as u64).unwrap();
            }
        }
        let v1 = encode_v1(&s, 100);
        assert_eq!(ProducerState::decode(&v1), Ok((100, s.clone())));
        let mut padded = v1.clone();
        padded.resize(4096, 0);
        assert_eq!(ProducerState::decode(&padded), Ok((100, s)));
        for i in 0..v1.len() {
            let mut bad = v1.clone();
            bad[i] ^= 0x01;
            assert!(ProducerState::decode(&bad).is_err(), "flipped byte {i} went unnoticed");
        }
    }

    #[test]
    fn a_huge_declared_aborted_count_is_refused_without_allocating_for_it() {
        let mut bytes = ProducerState::default().encode(5);
        bytes[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ProducerState::decode(&bytes).unwrap_err().contains("more than the file holds"));
    }

    #[test]
    fn the_producer_whose_last_batch_is_oldest_is_evicted_at_the_bound() {
        let mut s = ProducerState::default();
        for pid in 0..PRODUCERS_PER_PARTITION_MAX as i64 {
            append(&mut s, &header(pid, 0, 0, 1), pid as u64).unwrap();
        }
        // Producer 0 appends again, so producer 1 is now the oldest.
        append(&mut s, &header(0, 0, 1, 1), 1_000_000).unwrap();
        append(&mut s, &header(1_000_000, 0, 0, 1), 1_000_001).unwrap();
        assert_eq!(s.len(), PRODUCERS_PER_PARTITION_MAX);
        assert!(s.producers.contains_key(&0));
        assert!(!s.producers.contains_key(&1));
        // An evicted producer is unknown again: any sequence goes.
        assert_eq!(s.check(&header(1, 0, 7, 1)), Ok(Check::Append { idempotent: true }));
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_refused_with_a_reason() {
        let mut s = ProducerState::default();
        for (i, pid) in [3i64, 1, 2].into_iter().enumerate() {
            for k in 0..(i as i32 * 3 + 1) {
                append(&mut s, &header(pid, i as i16, k, 1), (i * 100) as u64 + k as u64).unwrap();
            }
        }
        // An aborted transaction, an open one, and a producer a marker left without batches.
        append(&mut s, &txn_header(8, 0, 0, 1), 300).unwrap();
        s.record_marker(8, 0, abort(4), 301);
        append(&mut s, &txn_header(9, 0, 0, 1), 302).unwrap();
        s.record_marker(10, 3, abort(1), 303);
        let bytes = s.encode(1000);
        assert_eq!(ProducerState::decode(&bytes), Ok((1000, s.clone())));
        let mut padded = bytes.clone();
        padded.resize(4096, 0);
        assert_eq!(ProducerState::decode(&padded), Ok((1000, s.clone())));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(ProducerState::decode(&bad).is_err(), "flipped byte {i} went unnoticed");
        }
        for n in 0..bytes.len() {
            assert!(ProducerState::decode(&bytes[..n]).is_err(), "truncated to {n} bytes");
        }
        let mut trailing = padded;
        trailing[4000] = 1;
        assert!(ProducerState::decode(&trailing).is_err());
        assert!(ProducerState::decode(&[0u8; 4096]).is_err());
        // A batch at or beyond the snapshot's own offset cannot be in it.
        assert!(ProducerState::decode(&s.encode(200)).unwrap_err().contains("inconsistent"));
        assert!(ProducerState::decode(&s.encode(303)).unwrap_err().contains("inconsistent"));
    }

    #[test]
    fn a_huge_declared_producer_count_is_refused_without_allocating_for_it() {
        let mut bytes = ProducerState::default().encode(5);
        bytes[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ProducerState::decode(&bytes).unwrap_err().contains("more than"));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ProducerState::decode(&bytes);
        }

        #[test]
        fn checks_never_panic_and_replay_equals_append(
            ops in proptest::collection::vec((0i64..4, -1i16..3, -2i32..8, 1i32..4, 0u8..4), 0..64)
        ) {
            let mut live = ProducerState::default();
            let mut log = Vec::new();
            let mut offset = 0u64;
            for (pid, epoch, seq, records, kind) in ops {
                // kind: 0 idempotent batch, 1 transactional batch, 2 commit, 3 abort.
                if kind >= 2 {
                    let m = Marker { commit: kind == 2, coordinator_epoch: 0 };
                    if live.check_marker(pid, epoch, 0).is_ok() {
                        live.record_marker(pid, epoch, m, offset);
                        log.push((None, Some((pid, epoch, m)), offset));
                        offset += 1;
                    }
                    continue;
                }
                let h = if kind == 1 { txn_header(pid, epoch, seq, records) } else { header(pid, epoch, seq, records) };
                if let Ok(Check::Append { .. }) = live.check(&h) {
                    live.record(&h, offset);
                    log.push((Some(h), None, offset));
                    offset += records as u64;
                }
            }
            if let Some(first) = live.first_unstable() {
                prop_assert!(first < offset);
            }
            let mut replayed = ProducerState::default();
            for (h, m, o) in &log {
                if let Some(h) = h {
                    replayed.record(h, *o);
                }
                if let Some((pid, epoch, m)) = m {
                    replayed.record_marker(*pid, *epoch, *m, *o);
                }
            }
            prop_assert_eq!(&replayed, &live);
            let (at, decoded) = ProducerState::decode(&live.encode(offset)).unwrap();
            prop_assert_eq!(at, offset);
            prop_assert_eq!(decoded, live);
        }
    }
}
