//! One partition's log: segments, append with group commit, reads, roll, retention, truncation
//! and recovery.
//!
//! A `PartitionLog` lives on one executor thread (it is not `Send`). Clones share the log.
//! Mutations of the segment list and of the writer happen under `append_lock`; no `RefCell`
//! borrow is ever held across an `.await`.
//!
//! # Segment recycling
//!
//! A new segment file is preallocated with `fallocate`, which on ext4 leaves its blocks
//! unwritten: the first write to each block converts it, and the fdatasync that makes the
//! write durable must then also write the inode (without a journal, one or two synchronous 4 KiB
//! writes before the cache flush). Deleting a segment frees its blocks, which with online
//! discard costs a discard of the whole file. So, like PostgreSQL's WAL recycling, when
//! retention or `delete_records_before` removes segments, the log keeps one data file under
//! `segment::spare_path` instead of unlinking it, and the next roll renames it to the new
//! segment's name: its blocks are written, and a commit into them is the data write and a
//! cache flush.
//!
//! The spare still holds its old batches. They are never served: reads stop at the durable
//! end. Recovery scans the active segment up to the file's size, and a stale batch there looks
//! valid (CRC and all), so it relies on offsets: the spare only ever holds batches of this
//! partition below the first segment's base (retention and delete records remove segments
//! wholly below the log start, and nothing lowers the first base: truncation stops at it), so
//! every stale batch's base offset is below what the scan expects, and the scan stops there.
//! A spare is kept only when nothing else holds the file open: a read under way would
//! otherwise read the new segment's data at the old one's positions. A write that finds the
//! filesystem full (an append's preallocation, DeleteRecords' new log start) deletes the spare
//! and tries once more, then deletes the spares of the other logs on its thread and tries again
//! (`with_room`).

use std::cell::{Ref, RefCell, RefMut};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use glommio::io::{DmaFile, ReadResult};
use glommio::sync::Semaphore;

use crate::batch::{self, BatchHeader, CountCheck, Marker};
use crate::config::{LogConfig, SyncScope};
use crate::constants::{BATCH_HEADER_BYTES, COMMITS_IN_FLIGHT_MAX, READ_BYTES_MAX};
use crate::error::BatchError;
use crate::error::{Error, Result};
use crate::fs_sync::{self, SyncGroup};
use crate::index::{SegmentIndex, SegmentSummary};
use crate::notify::Notify;
use crate::producer_state::{self, AbortedTxn, Check, ProducerState};
use crate::read_ahead::{self, ReadAhead};
use crate::segment;
use crate::writer::Writer;

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
    /// The batch was a retry of one already in the log (same idempotent producer, epoch and
    /// sequences): nothing was appended, and the offsets are the original batch's. It may not
    /// be durable yet; `wait_durable(last_offset + 1)` as for a fresh append.
    pub duplicate: bool,
}

/// A sealed segment, announced once its data and indexes are durable and it will not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: u64,
    pub next_offset: u64,
    pub size_bytes: u64,
    pub max_timestamp: i64,
    pub log_path: PathBuf,
    pub index_path: PathBuf,
    pub time_index_path: PathBuf,
}

/// Whole batches read from one segment. `bytes` is the O_DIRECT read buffer itself, sliced.
pub struct ReadBatches {
    pub bytes: ReadResult,
    /// Base offset of the first batch (it may be below the requested offset).
    pub first_offset: u64,
    /// Offset after the last batch returned.
    pub next_offset: u64,
}

impl std::fmt::Debug for ReadBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBatches")
            .field("len", &self.bytes.len())
            .field("first_offset", &self.first_offset)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

/// Result of a search by timestamp: the first batch whose max timestamp is at or after the target.
/// Finding the exact record inside the batch needs its records, which only the broker parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampHit {
    pub batch_base_offset: u64,
    pub batch_last_offset: u64,
    pub max_timestamp: i64,
}

/// Counters of one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// Group commits completed, each one fdatasync of the active segment (or, with
    /// `SyncScope::Filesystem`, a wait for a `syncfs` shared with the thread's other logs).
    pub group_commits: u64,
    /// Time spent in those syncs, in microseconds: with `group_commits`, the mean sync
    /// latency, without this crate depending on a metrics library.
    pub fsync_us_total: u64,
    /// Bytes those group commits made durable: with `group_commits`, the mean commit size.
    pub committed_bytes: u64,
    /// Batches appended since the log was opened.
    pub appended_batches: u64,
    /// Segments that reused a deleted segment's file since the log was opened.
    pub segments_recycled: u64,
    pub segments: usize,
    pub size_bytes: u64,
}

/// Offsets the log currently spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    /// First offset still in the log.
    pub log_start: u64,
    /// Everything below this is durable and readable.
    pub durable_end: u64,
    /// Next offset to be assigned.
    pub log_end: u64,
    /// The last stable offset (KIP-98): the first offset of the oldest open transaction, or
    /// the durable end when none is open; never above the durable end nor below the log
    /// start. read_committed readers see only what lies below it.
    pub last_stable: u64,
}

struct Segment {
    base_offset: u64,
    file: Rc<DmaFile>,
    /// Bytes of whole batches appended, durable or not.
    data_bytes: u64,
    /// Bytes that are durable and may be read.
    durable_bytes: u64,
    next_offset: u64,
    index: SegmentIndex,
    /// Clock value of the first append, for `segment_ms`.
    first_append_ms: Option<i64>,
}

impl Segment {
    fn info(&self, dir: &Path) -> SegmentInfo {
        SegmentInfo {
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            size_bytes: self.data_bytes,
            max_timestamp: self.index.max_timestamp(),
            log_path: segment::log_path(dir, self.base_offset),
            index_path: segment::index_path(dir, self.base_offset),
            time_index_path: segment::time_index_path(dir, self.base_offset),
        }
    }
}

struct State {
    segments: BTreeMap<u64, Segment>,
    writer: Writer,
    log_end: u64,
    durable_end: u64,
    poisoned: Option<String>,
    /// The poisoning failure was the filesystem saying it is full (ENOSPC).
    poisoned_by_full_disk: bool,
    closed: bool,
    /// Group commits in progress, at most `COMMITS_IN_FLIGHT_MAX`.
    commits_running: usize,
    /// The log end the newest running commit covers: waiters below it join that commit.
    commit_covers: u64,
    /// Bumped by truncation, so a commit that started before it does not publish stale offsets.
    truncations: u64,
    /// Bumped by each installed segment rewrite (compaction).
    rewrites: u64,
    fdatasyncs: u64,
    fsync_us_total: u64,
    committed_bytes: u64,
    appended_batches: u64,
    /// The persisted log start (`log_start.rs`); the log starts at the larger of this and the
    /// first segment's base (retention may have deleted past it).
    log_start_offset: u64,
    /// Idempotent producers' epochs and last batches (`producer_state.rs`); changed only under
    /// the append lock.
    producers: ProducerState,
    /// A deleted segment's file waits at `segment::spare_path` for the next roll.
    spare: bool,
    /// The active segment is a recycled file: its tail beyond the data holds stale batches.
    active_recycled: bool,
    segments_recycled: u64,
}

impl State {
    fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log always has an active segment")
    }

    fn log_start(&self) -> u64 {
        let first = *self.segments.keys().next().expect("a log always has an active segment");
        first.max(self.log_start_offset)
    }

    /// Changes whenever durable segment bytes may change in place (truncation, a compaction
    /// rewrite): what a reader read ahead before is stale then.
    fn content_generation(&self) -> u64 {
        self.truncations + self.rewrites
    }

    fn last_stable(&self) -> u64 {
        let open = self.producers.first_unstable().unwrap_or(u64::MAX);
        open.min(self.durable_end).max(self.log_start())
    }
}

type SealListener = Box<dyn FnMut(&SegmentInfo)>;

struct Inner {
    /// Fixed for the life of the open log; `config.dir` always equals it.
    dir: PathBuf,
    /// Replaced whole by `set_config`; never borrowed across an `.await`.
    config: RefCell<LogConfig>,
    state: RefCell<State>,
    append_lock: Semaphore,
    /// Held while detached segments' files are deleted outside the append lock; truncation
    /// takes it after the append lock, so no name it makes free again is still being deleted.
    deleting: Semaphore,
    durable_changed: Notify,
    seal_listener: RefCell<Option<SealListener>>,
    /// Where recent readers stopped, and the segment bytes read ahead of them.
    read_ahead: RefCell<ReadAhead>,
    /// The thread's commits on this filesystem, with `SyncScope::Filesystem`.
    sync_group: Option<Rc<SyncGroup>>,
}

/// One partition's log. See the crate documentation for the format and guarantees.
#[derive(Clone)]
pub struct PartitionLog {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.inner.dir)
            .field("offsets", &self.offsets())
            .finish()
    }
}

impl PartitionLog {
    /// Opens the log in `config.dir`, creating it if empty, and recovers from any crash: the
    /// active segment is scanned from its start (the last clean point) and truncated at the
    /// first invalid batch; sealed segments with missing or damaged indexes are rescanned.
    pub async fn open(config: LogConfig) -> Result<PartitionLog> {
        config.validate()?;
        let state = crate::recovery::recover(&config).await?;
        let sync_group = match config.sync {
            SyncScope::Segment => None,
            SyncScope::Filesystem => Some(fs_sync::group_for(&config.dir).map_err(|e| Error::io("opening for syncfs", &config.dir, e))?),
        };
        let inner = Rc::new(Inner {
            dir: config.dir.clone(),
            config: RefCell::new(config),
            state: RefCell::new(state.into_state()),
            append_lock: Semaphore::new(1),
            deleting: Semaphore::new(1),
            durable_changed: Notify::default(),
            seal_listener: RefCell::new(None),
            read_ahead: RefCell::new(ReadAhead::default()),
            sync_group,
        });
        THREAD_LOGS.with_borrow_mut(|logs| {
            logs.retain(|l| l.strong_count() > 0);
            logs.push(Rc::downgrade(&inner));
        });
        Ok(PartitionLog { inner })
    }

    /// The configuration in force now (a copy: `set_config` may replace it).
    pub fn config(&self) -> LogConfig {
        self.cfg().clone()
    }

    fn cfg(&self) -> Ref<'_, LogConfig> {
        self.inner.config.borrow()
    }

    pub fn offsets(&self) -> LogOffsets {
        let st = self.state();
        LogOffsets {
            log_start: st.log_start(),
            durable_end: st.durable_end,
            log_end: st.log_end,
            last_stable: st.last_stable(),
        }
    }

    /// The aborted transactions that overlap `[from, to)` (last offset at or after `from`, first
    /// offset below `to`), by last offset: what a read_committed fetch of that range lists so
    /// the client drops those producers' batches. Kept in memory; see `producer_state.rs`.
    pub fn aborted_transactions(&self, from: u64, to: u64) -> Vec<AbortedTxn> {
        self.state().producers.aborted_between(from, to)
    }

    /// Counters for tests and metrics.
    pub fn stats(&self) -> LogStats {
        let st = self.state();
        LogStats {
            group_commits: st.fdatasyncs,
            fsync_us_total: st.fsync_us_total,
            committed_bytes: st.committed_bytes,
            appended_batches: st.appended_batches,
            segments_recycled: st.segments_recycled,
            segments: st.segments.len(),
            size_bytes: st.segments.values().map(|s| s.data_bytes).sum(),
        }
    }

    /// Total bytes of all segments' data.
    pub fn size_bytes(&self) -> u64 {
        self.state().segments.values().map(|s| s.data_bytes).sum()
    }

    /// All sealed segments, oldest first (the active one is not sealed).
    pub fn sealed_segments(&self) -> Vec<SegmentInfo> {
        let st = self.state();
        let n = st.segments.len();
        st.segments.values().take(n - 1).map(|s| s.info(&self.inner.dir)).collect()
    }

    /// Calls `listener` for every segment sealed from now on, after its files are durable.
    pub fn set_seal_listener(&self, listener: impl FnMut(&SegmentInfo) + 'static) {
        *self.inner.seal_listener.borrow_mut() = Some(Box::new(listener));
    }

    /// Why the log refuses writes, if it does.
    pub fn poisoned(&self) -> Option<String> {
        self.state().poisoned.clone()
    }

    /// Whether the log refuses writes because the filesystem was full when it wrote. Its
    /// owner may close it and open it again (recovery) once the filesystem has room
    /// (`has_room_to_append`): nothing reported durable is lost, and what was not is cut, as
    /// after a crash.
    pub fn poisoned_by_full_disk(&self) -> bool {
        self.state().poisoned_by_full_disk
    }

    /// Whether `other` is a handle to this same open log (not another opening of its files).
    pub fn same_log(&self, other: &PartitionLog) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether the filesystem holding the log has a write buffer's worth free: room for the
    /// next flush to preallocate what it writes.
    pub fn has_room_to_append(&self) -> bool {
        rustix::fs::statvfs(self.dir())
            .is_ok_and(|st| st.f_bavail.saturating_mul(st.f_frsize.max(1)) >= self.cfg().write_buffer_bytes as u64)
    }

    /// Reconfigures the open log. Takes effect from the next check of each setting: segment
    /// size and age at the next append, `batch_bytes_max` at the next append, retention at the
    /// next `enforce_retention`, `index_interval_bytes` from the next segment.
    ///
    /// What the open log's write path was sized with stays: `dir`, `write_buffer_bytes`,
    /// `writes_in_flight_max`, `preallocate_step_bytes` (the active segment's writer and
    /// preallocation use them), `initial_offset` (meaningful only for an empty directory) and
    /// `recycle_segments` and `sync` (settings of the broker, not of the topic whose configs
    /// change).
    /// They take the new values when the log is next opened. The merged config is validated
    /// whole; on error nothing changes.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        let merged = {
            let current = self.cfg();
            LogConfig {
                dir: current.dir.clone(),
                write_buffer_bytes: current.write_buffer_bytes,
                writes_in_flight_max: current.writes_in_flight_max,
                preallocate_step_bytes: current.preallocate_step_bytes,
                initial_offset: current.initial_offset,
                recycle_segments: current.recycle_segments,
                sync: current.sync,
                ..config
            }
        };
        merged.validate()?;
        tracing::debug!(target: "iouring_storage", dir = %self.dir().display(), config = ?merged, "log reconfigured");
        *self.inner.config.borrow_mut() = merged;
        Ok(())
    }

    fn state(&self) -> Ref<'_, State> {
        self.inner.state.borrow()
    }

    fn state_mut(&self) -> RefMut<'_, State> {
        self.inner.state.borrow_mut()
    }

    fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn check_writable(&self) -> Result<()> {
        let st = self.state();
        if let Some(cause) = &st.poisoned {
            return Err(Error::Poisoned {
                dir: self.dir().to_owned(),
                cause: cause.clone(),
            });
        }
        if st.closed {
            return Err(Error::Closed {
                dir: self.dir().to_owned(),
            });
        }
        Ok(())
    }

    /// Marks the log poisoned: from now on it refuses appends. Never retried here; see
    /// `poisoned_by_full_disk` for when reopening recovers it.
    fn poison(&self, cause: String) -> Error {
        self.poison_with(cause, false)
    }

    /// `poison`, saying whether the failure was the filesystem being full.
    fn poison_with(&self, cause: String, storage_full: bool) -> Error {
        tracing::error!(target: "iouring_storage", dir = %self.dir().display(), %cause, storage_full, "partition log poisoned");
        let mut st = self.state_mut();
        if st.poisoned.is_none() {
            st.poisoned = Some(cause.clone());
            st.poisoned_by_full_disk = storage_full;
        }
        drop(st);
        self.inner.durable_changed.notify_all();
        Error::Poisoned {
            dir: self.dir().to_owned(),
            cause,
        }
    }

    /// The `deleting` permit; taken only while holding the append lock, so the order is fixed.
    async fn deleting(&self) -> Result<glommio::sync::Permit<'_>> {
        self.inner.deleting.acquire_permit(1).await.map_err(|_| Error::Closed {
            dir: self.dir().to_owned(),
        })
    }

    async fn lock(&self) -> Result<glommio::sync::Permit<'_>> {
        self.inner.append_lock.acquire_permit(1).await.map_err(|_| Error::Closed {
            dir: self.dir().to_owned(),
        })
    }

    /// Validates one record batch (exactly one, as producers send it) and appends it, stamping
    /// the base offset and `partition_leader_epoch`. The batch is not durable yet: call
    /// [`PartitionLog::commit`] or [`PartitionLog::wait_durable`]. `now_ms` drives `segment_ms`.
    pub async fn append(&self, batch_bytes: &[u8], partition_leader_epoch: i32, now_ms: i64) -> Result<AppendInfo> {
        let header = batch::validate(batch_bytes, self.cfg().batch_bytes_max, CountCheck::Exact)?;
        // Only the log writes control batches (`append_marker`); Kafka's LogValidator refuses
        // them from clients too.
        if header.is_control() {
            return Err(BatchError::ControlFromClient {
                attributes: header.attributes,
            }
            .into());
        }
        let _permit = self.lock().await?;
        self.check_writable()?;
        // Under the lock and before any byte is written, so the check sees every earlier batch
        // and a refused or duplicate batch leaves no trace.
        let check = self.state().producers.check(&header)?;
        let idempotent = match check {
            Check::Duplicate(original) => {
                tracing::debug!(target: "iouring_storage", dir = %self.dir().display(), producer_id = header.producer_id, first_offset = original.first_offset, "duplicate batch answered with its original offsets");
                return Ok(AppendInfo {
                    base_offset: original.first_offset,
                    last_offset: original.last_offset,
                    max_timestamp: original.max_timestamp,
                    duplicate: true,
                });
            }
            Check::Append { idempotent } => idempotent,
        };
        let info = self.append_locked(batch_bytes, &header, partition_leader_epoch, now_ms).await?;
        if idempotent {
            self.state_mut().producers.record(&header, info.base_offset);
        }
        Ok(info)
    }

    /// Appends a transaction marker for `producer_id` (Kafka's control batch, built here: see
    /// `batch.rs`), ending its open transaction on this partition: a commit lets the last
    /// stable offset pass it, an abort adds it to the aborted transactions. A marker for a
    /// producer with no open transaction is written too, as Kafka does. Refused with
    /// `ProducerError::InvalidEpoch` below the producer's epoch and `CoordinatorFenced` below
    /// the last marker's coordinator epoch. Returns where it landed and the batch as written
    /// before stamping (for a cache); like `append`, it is not durable yet.
    pub async fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        partition_leader_epoch: i32,
        now_ms: i64,
    ) -> Result<(AppendInfo, Vec<u8>)> {
        let bytes = batch::control_batch(producer_id, producer_epoch, marker, now_ms);
        let header = BatchHeader::parse(&bytes).expect("a batch the log built parses");
        let _permit = self.lock().await?;
        self.check_writable()?;
        self.state()
            .producers
            .check_marker(producer_id, producer_epoch, marker.coordinator_epoch)?;
        let info = self.append_locked(&bytes, &header, partition_leader_epoch, now_ms).await?;
        self.state_mut()
            .producers
            .record_marker(producer_id, producer_epoch, marker, info.base_offset);
        Ok((info, bytes))
    }

    /// Writes a checked batch at the log end and indexes it. Caller holds the append lock.
    async fn append_locked(
        &self,
        batch_bytes: &[u8],
        header: &BatchHeader,
        partition_leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        if self.roll_due(header.total_bytes as u64, now_ms) {
            self.roll_locked().await?;
        }
        let base_offset = self.state().log_end;
        let mut head = [0u8; BATCH_HEADER_BYTES];
        head.copy_from_slice(&batch_bytes[..BATCH_HEADER_BYTES]);
        batch::stamp(&mut head, base_offset as i64, partition_leader_epoch);
        let position = self.state().writer.data_end();
        self.write_locked(&head).await?;
        self.write_locked(&batch_bytes[BATCH_HEADER_BYTES..]).await?;

        let last_offset = base_offset + header.last_offset_delta as u64;
        let mut st = self.state_mut();
        st.log_end = last_offset + 1;
        st.appended_batches += 1;
        let seg = st.active_mut();
        let relative = u32::try_from(base_offset - seg.base_offset).expect("segment offsets fit u32");
        let pos32 = u32::try_from(position).expect("segment size below 4 GiB");
        seg.index.on_batch(relative, pos32, header.total_bytes as u32, header.max_timestamp);
        seg.data_bytes = position + header.total_bytes as u64;
        seg.next_offset = last_offset + 1;
        seg.first_append_ms.get_or_insert(now_ms);
        Ok(AppendInfo {
            base_offset,
            last_offset,
            max_timestamp: header.max_timestamp,
            duplicate: false,
        })
    }

    fn roll_due(&self, batch_bytes: u64, now_ms: i64) -> bool {
        let st = self.state();
        let seg = st.active();
        if seg.data_bytes == 0 {
            return false;
        }
        let full = seg.data_bytes + batch_bytes > self.cfg().segment_bytes;
        let old = match (self.cfg().segment_ms, seg.first_append_ms) {
            (Some(limit), Some(first)) => now_ms.saturating_sub(first) >= limit,
            _ => false,
        };
        // Relative offsets in the index are u32.
        let offsets_full = st.log_end - seg.base_offset > u64::from(u32::MAX) / 2;
        full || old || offsets_full
    }

    /// Copies `data` into the write buffer, handing full buffers to the disk.
    async fn write_locked(&self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = self.state_mut().writer.copy_in(data);
            data = &data[n..];
            if self.state().writer.is_full() {
                self.flush_locked().await?;
            }
        }
        Ok(())
    }

    /// Submits the write buffer (whole or a dirty tail). Waits first for an overlapping write
    /// and for room under `writes_in_flight_max`, and preallocates the file ahead of the write.
    async fn flush_locked(&self) -> Result<()> {
        loop {
            let wait = {
                let mut st = self.state_mut();
                if let Err(e) = st.writer.reap() {
                    drop(st);
                    return Err(self.poison(e));
                }
                st.writer.must_wait_for(self.cfg().writes_in_flight_max)
            };
            match wait {
                Some(op) => op.wait().await.map_err(|e| self.poison(e))?,
                None => break,
            }
        }
        let (file, end, allocated) = {
            let st = self.state();
            (st.writer.file.clone(), st.writer.next_write_end(), st.writer.allocated)
        };
        if end > allocated {
            // Grow by what the segment already holds (doubling), from one write buffer up to
            // the configured step: a busy segment soon preallocates in large steps, while an
            // idle partition (there may be thousands) reserves at most one buffer's worth.
            let step = self.cfg().preallocate_step_bytes;
            let grow = allocated.clamp(self.cfg().write_buffer_bytes as u64, step);
            let target = end.max(allocated + grow);
            // With no room to reserve ahead, reserve what this write needs: the log fills the
            // disk before it fails, rather than failing a step short of full, and gives spares
            // back only when even that finds no room.
            let attempt = || async {
                match file.pre_allocate(target, false).await {
                    Err(e) if is_storage_full(&e) && end < target => file.pre_allocate(end, false).await.map(|()| end),
                    done => done.map(|()| target),
                }
            };
            let allocated = self.with_room(is_storage_full, attempt).await.map_err(|e| {
                let full = is_storage_full(&e);
                self.poison_with(format!("preallocating segment to {end} bytes or more: {e}"), full)
            })?;
            self.state_mut().writer.allocated = allocated;
        }
        self.state_mut().writer.submit();
        Ok(())
    }

    /// Writes everything appended so far and waits for it; then one fdatasync. Caller holds
    /// the append lock or has captured the ops to wait for. Returns the durable end.
    async fn sync_locked(&self) -> Result<u64> {
        if self.state().writer.is_dirty() {
            self.flush_locked().await?;
        }
        let (ops, file, log_end, data_end, base, truncations) = {
            let st = self.state();
            (
                st.writer.pending(),
                st.writer.file.clone(),
                st.log_end,
                st.writer.data_end(),
                st.active().base_offset,
                st.truncations,
            )
        };
        self.finish_commit(ops, file, log_end, data_end, base, truncations).await
    }

    async fn finish_commit(
        &self,
        ops: Vec<Rc<crate::writer::WriteOp>>,
        file: Rc<DmaFile>,
        log_end: u64,
        data_end: u64,
        base: u64,
        truncations: u64,
    ) -> Result<u64> {
        for op in ops {
            op.wait().await.map_err(|e| self.poison(e))?;
        }
        let fsync_started = std::time::Instant::now();
        match &self.inner.sync_group {
            None => file.fdatasync().await.map_err(|e| {
                let full = is_storage_full(&e);
                self.poison_with(format!("fdatasync of segment {base}: {e}"), full)
            })?,
            Some(group) => group
                .sync()
                .await
                .map_err(|e| self.poison_with(format!("syncing the filesystem for segment {base}: {e}"), false))?,
        }
        let mut st = self.state_mut();
        // Counted for every completed group commit: the count was never bumped before, which
        // left the grouping test in tests/log.rs unable to fail.
        st.fdatasyncs += 1;
        st.fsync_us_total += fsync_started.elapsed().as_micros() as u64;
        if st.truncations == truncations {
            st.durable_end = st.durable_end.max(log_end);
            let grown = match st.segments.get_mut(&base) {
                Some(seg) => {
                    let grown = data_end.saturating_sub(seg.durable_bytes);
                    seg.durable_bytes = seg.durable_bytes.max(data_end);
                    grown
                }
                None => 0,
            };
            st.committed_bytes += grown;
        }
        let durable = st.durable_end;
        drop(st);
        self.inner.durable_changed.notify_all();
        Ok(durable)
    }

    /// Group commit: makes everything appended before this call durable, sharing one
    /// fdatasync with every concurrent caller. Returns the durable end offset.
    pub async fn commit(&self) -> Result<u64> {
        let target = self.state().log_end;
        self.wait_durable(target).await
    }

    /// Waits until every offset below `offset` is durable, leading a group commit if none is
    /// running. Returns the durable end offset (at least `offset`).
    pub async fn wait_durable(&self, offset: u64) -> Result<u64> {
        loop {
            let listen = {
                let st = self.state();
                if let Some(cause) = &st.poisoned {
                    return Err(Error::Poisoned {
                        dir: self.dir().to_owned(),
                        cause: cause.clone(),
                    });
                }
                if st.durable_end >= offset {
                    return Ok(st.durable_end);
                }
                if offset > st.log_end {
                    return Err(Error::OffsetOutOfRange {
                        offset,
                        log_start: st.log_start(),
                        log_end: st.log_end,
                    });
                }
                // Join a running commit that covers us, or wait for a free slot. A second commit
                // of this log only while no other log on this thread is committing: see
                // `COMMITS_IN_FLIGHT_MAX`.
                let busy = st.commits_running >= COMMITS_IN_FLIGHT_MAX
                    || (st.commits_running > 0 && THREAD_COMMITS_RUNNING.get() > st.commits_running);
                if st.commit_covers >= offset || busy {
                    Some(self.inner.durable_changed.listen())
                } else {
                    None
                }
            };
            match listen {
                Some(l) => l.await,
                None => {
                    let _slot = CommitSlot::take(self);
                    self.commit_once().await?;
                }
            }
        }
    }

    /// Waits until there is durable data at or after `offset` (the durable end moves past it),
    /// or the log is truncated, poisoned or closed. Long-polling fetches park here.
    pub async fn wait_for_data(&self, offset: u64) {
        loop {
            let listen = {
                let st = self.state();
                if st.durable_end > offset || st.poisoned.is_some() || st.closed {
                    return;
                }
                self.inner.durable_changed.listen()
            };
            listen.await;
        }
    }

    /// One group commit: under the append lock only long enough to submit the dirty tail, then
    /// the writes and the fdatasync run while appends continue. Up to `COMMITS_IN_FLIGHT_MAX`
    /// commits run at once; appenders that find no free slot wait and share the next one. Each
    /// commit waits for every write submitted before it, so the durable end only ever covers
    /// data an fdatasync made durable.
    async fn commit_once(&self) -> Result<u64> {
        let captured = {
            let _permit = self.lock().await?;
            if self.state().writer.is_dirty() {
                self.flush_locked().await?;
            }
            let mut st = self.state_mut();
            st.commit_covers = st.commit_covers.max(st.log_end);
            (
                st.writer.pending(),
                st.writer.file.clone(),
                st.log_end,
                st.writer.data_end(),
                st.active().base_offset,
                st.truncations,
            )
        };
        let (ops, file, log_end, data_end, base, truncations) = captured;
        self.finish_commit(ops, file, log_end, data_end, base, truncations).await
    }

    /// Seals the active segment and starts a new one at the log end. Caller holds the lock.
    async fn roll_locked(&self) -> Result<()> {
        self.sync_locked().await?;
        let dir = self.dir().to_owned();
        let (file, base, data_bytes, summary, index) = {
            let st = self.state();
            let seg = st.active();
            let summary = SegmentSummary {
                data_bytes: seg.data_bytes,
                next_offset: seg.next_offset,
                max_timestamp: seg.index.max_timestamp(),
            };
            (seg.file.clone(), seg.base_offset, seg.data_bytes, summary, seg.index.clone())
        };
        let new_base = self.state().log_end;
        // The producer state as of the new segment's base, so that opening the log replays only
        // the active segment.
        let snapshot = self.state().producers.encode(new_base);
        // Three independent durable writes, run at once (each waits on its own fdatasync), all
        // finished before the new segment exists (the directory fsync below covers the names):
        // the sealed segment cut to its data (giving back the preallocated tail), its index
        // files, and the producer snapshot.
        let seal = async {
            segment::truncate_durably(&file, data_bytes).await.map_err(|e| {
                (
                    format!("cutting sealed segment {base} to its data: {e}"),
                    e.kind() == std::io::ErrorKind::StorageFull,
                )
            })
        };
        let index = async {
            segment::store_index(&dir, base, &index, summary)
                .await
                .map_err(|e| (format!("writing index of segment {base}: {e}"), e.is_storage_full()))
        };
        let snapshot = async {
            segment::write_file_durably(&producer_state::snapshot_path(&dir, new_base), &snapshot)
                .await
                .map_err(|e| (format!("writing producer snapshot at {new_base}: {e}"), e.is_storage_full()))
        };
        futures_lite::future::try_zip(seal, futures_lite::future::try_zip(index, snapshot))
            .await
            .map_err(|(cause, full)| self.poison_with(cause, full))?;
        let path = segment::log_path(&dir, new_base);
        let recycled = self.take_spare(&path);
        let new_file = segment::open_data_file(&path, !recycled)
            .await
            .map_err(|e| self.poison_with(e.to_string(), e.is_storage_full()))?;
        // A new file has no preallocation yet: the first write grows it (see `flush_locked`).
        // A recycled one is allocated and written to its size.
        segment::sync_dir(&dir)
            .await
            .map_err(|e| self.poison_with(e.to_string(), e.is_storage_full()))?;
        let allocated = if recycled {
            new_file
                .file_size()
                .await
                .map_err(|e| self.poison(format!("sizing recycled segment {new_base}: {e}")))?
        } else {
            0
        };
        let capacity = self.cfg().write_buffer_bytes;
        let writer = Writer::open(new_file.clone(), capacity, 0, allocated)
            .await
            .map_err(|e| self.poison(format!("sizing the write alignment of segment {new_base}: {e}")))?;

        let info = {
            let mut st = self.state_mut();
            let sealed = st.active().info(&dir);
            st.writer = writer;
            st.active_recycled = recycled;
            st.segments.insert(
                new_base,
                Segment {
                    base_offset: new_base,
                    file: new_file,
                    data_bytes: 0,
                    durable_bytes: 0,
                    next_offset: new_base,
                    index: SegmentIndex::new(self.cfg().index_interval_bytes),
                    first_append_ms: None,
                },
            );
            sealed
        };
        tracing::debug!(target: "iouring_storage", dir = %dir.display(), base, new_base, "segment rolled");
        if let Some(listener) = self.inner.seal_listener.borrow_mut().as_mut() {
            listener(&info);
        }
        Ok(())
    }

    /// Renames the spare file, if there is one, to `path` (the new segment's). Synchronous, as
    /// is `keep_as_spare`, so neither sees the other half done. A spare that cannot be renamed
    /// is forgotten: the roll creates a file as usual.
    fn take_spare(&self, path: &Path) -> bool {
        if !self.state().spare {
            return false;
        }
        self.state_mut().spare = false;
        let spare = segment::spare_path(self.dir());
        match std::fs::rename(&spare, path) {
            Ok(()) => {
                self.state_mut().segments_recycled += 1;
                true
            }
            Err(e) => {
                tracing::warn!(target: "iouring_storage", path = %spare.display(), error = %e, "cannot reuse the spare segment file; creating a new one");
                false
            }
        }
    }

    /// Runs `attempt`, and while it finds the filesystem full (`full`), gives spare files back
    /// and runs it again: first this log's spare (its own reserve), then those of the other
    /// logs on this thread. Still full, it asks the other threads for theirs
    /// (`release_spares_if_wanted`) and returns the failure: they answer on their own time.
    async fn with_room<T, E, Fut>(&self, full: impl Fn(&E) -> bool, attempt: impl Fn() -> Fut) -> std::result::Result<T, E>
    where
        Fut: std::future::Future<Output = std::result::Result<T, E>>,
    {
        let mut outcome = attempt().await;
        if outcome.as_ref().is_err_and(&full) && self.release_spare().await {
            outcome = attempt().await;
        }
        if outcome.as_ref().is_err_and(&full) && release_thread_spares().await {
            outcome = attempt().await;
        }
        if outcome.as_ref().is_err_and(&full) {
            let wanted = SPARES_WANTED.fetch_add(1, Ordering::Relaxed) + 1;
            // This thread has none left to give.
            SPARES_WANTED_SEEN.set(wanted);
        }
        outcome
    }

    /// Deletes the spare file to give its blocks back, for a write that found the filesystem
    /// full. Renamed out of the way first, synchronously like `take_spare` and `keep_as_spare`,
    /// so that a spare kept meanwhile is not the file removed; recovery removes a leftover
    /// `.tmp`. Returns whether blocks were given back.
    async fn release_spare(&self) -> bool {
        if !self.state().spare {
            return false;
        }
        self.state_mut().spare = false;
        let spare = segment::spare_path(self.dir());
        let doomed = spare.with_extension("spare.tmp");
        if let Err(e) = std::fs::rename(&spare, &doomed) {
            tracing::warn!(target: "iouring_storage", path = %spare.display(), error = %e, "cannot release the spare segment file");
            return false;
        }
        match segment::remove_file("releasing the spare segment file", doomed).await {
            Ok(()) => {
                tracing::warn!(target: "iouring_storage", dir = %self.dir().display(), "filesystem full: released the spare segment file");
                true
            }
            Err(e) => {
                tracing::warn!(target: "iouring_storage", error = %e, "cannot release the spare segment file");
                false
            }
        }
    }

    /// Renames a detached segment's data file to the spare name if recycling is on, there is
    /// no spare yet, and no read holds the file (see "Segment recycling"). Returns whether it
    /// did; the caller then deletes only the segment's other files, or else the whole segment.
    fn keep_as_spare(&self, seg: &Segment) -> bool {
        if !self.cfg().recycle_segments || self.state().spare || Rc::strong_count(&seg.file) > 1 {
            return false;
        }
        let from = segment::log_path(self.dir(), seg.base_offset);
        match std::fs::rename(&from, segment::spare_path(self.dir())) {
            Ok(()) => {
                self.state_mut().spare = true;
                true
            }
            Err(e) => {
                tracing::warn!(target: "iouring_storage", path = %from.display(), error = %e, "cannot keep a deleted segment's file as the spare; deleting it");
                false
            }
        }
    }

    /// Seals the active segment now, if it holds data.
    pub async fn roll(&self) -> Result<()> {
        let _permit = self.lock().await?;
        self.check_writable()?;
        if self.state().active().data_bytes == 0 {
            return Ok(());
        }
        self.roll_locked().await
    }

    /// Reads whole durable batches from the segment holding `offset`: the batch containing it
    /// first, then following batches while the total stays within `max_bytes`. The first batch
    /// is returned whole even if larger. Empty at the durable end; an error outside the log.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<Option<ReadBatches>> {
        self.read_below(offset, max_bytes, false).await
    }

    /// As `read`, for a read_committed consumer: only batches below the last stable offset
    /// (an open transaction's batches and everything after them wait for its marker).
    pub async fn read_committed(&self, offset: u64, max_bytes: usize) -> Result<Option<ReadBatches>> {
        self.read_below(offset, max_bytes, true).await
    }

    async fn read_below(&self, offset: u64, max_bytes: usize, committed: bool) -> Result<Option<ReadBatches>> {
        let max_bytes = max_bytes.clamp(1, READ_BYTES_MAX);
        let mut offset = offset;
        loop {
            let (file, base, start_pos, end_pos, path, limit, generation) = {
                let st = self.state();
                let (log_start, durable_end) = (st.log_start(), st.durable_end);
                if offset < log_start || offset > st.log_end {
                    return Err(Error::OffsetOutOfRange {
                        offset,
                        log_start,
                        log_end: st.log_end,
                    });
                }
                let limit = if committed { st.last_stable() } else { durable_end };
                if offset >= limit {
                    return Ok(None);
                }
                let (&base, seg) = st.segments.range(..=offset).next_back().expect("offset is at or above log start");
                let relative = u32::try_from(offset - base).unwrap_or(u32::MAX);
                let (_, pos) = seg.index.lookup(relative);
                (
                    seg.file.clone(),
                    base,
                    u64::from(pos),
                    seg.durable_bytes,
                    segment::log_path(self.dir(), base),
                    limit,
                    st.content_generation(),
                )
            };
            // A reader that continues where it stopped, or repeats its last read, has a stream,
            // positioned at the batch itself (no index slack) or where that read started.
            let stream = self.inner.read_ahead.borrow_mut().take(generation, offset);
            let mut stream = stream.unwrap_or_else(|| read_ahead::Stream::new(generation, base, offset, start_pos));
            // Its windows may hold the batches; else read from its position, which for a new
            // stream is the index entry's.
            let served = if stream.base == base {
                stream.serve(max_bytes, limit).await.map_err(|detail| Error::Corrupt {
                    what: "segment",
                    path: path.clone(),
                    detail,
                })?
            } else {
                read_ahead::Served::Miss
            };
            let found = match served {
                read_ahead::Served::Batches { batches, end_pos } => Some((batches, end_pos)),
                read_ahead::Served::AtLimit => {
                    self.inner.read_ahead.borrow_mut().put(stream);
                    return Ok(None);
                }
                read_ahead::Served::Miss => {
                    // A stream that continues in its segment knows the batch's own position;
                    // a new one starts at the index entry, up to an index interval before it.
                    let at = if stream.base == base && stream.sequential {
                        ReadAt::Batch(stream.next_pos)
                    } else {
                        ReadAt::IndexEntry(start_pos)
                    };
                    self.read_from(&file, &path, offset, at, end_pos, max_bytes, limit).await?
                }
            };
            if let Some((found, end_pos)) = found {
                stream.advance(base, found.next_offset, end_pos);
                self.read_ahead_of(&mut stream, &file, max_bytes);
                self.inner.read_ahead.borrow_mut().put(stream);
                return Ok(Some(found));
            }
            // Nothing at or after `offset` in this segment: continue in the next one.
            let next = self.state().segments.range(base + 1..).next().map(|(&b, _)| b);
            match next {
                Some(b) if b > offset => offset = b,
                _ => return Ok(None),
            }
        }
    }

    /// Starts reading the next window ahead of `stream`, if it reads sequentially, its segment
    /// has durable bytes beyond its windows, and the thread's read-ahead budget has room (after
    /// dropping idle readers' windows, if it had none).
    fn read_ahead_of(&self, stream: &mut read_ahead::Stream, file: &Rc<DmaFile>, max_bytes: usize) {
        let (segment_end, active) = {
            let st = self.state();
            match st.segments.get(&stream.base) {
                Some(seg) => (seg.durable_bytes, st.active().base_offset == stream.base),
                None => return,
            }
        };
        let Some((start, len)) = stream.next_window(segment_end, active, max_bytes) else {
            return;
        };
        let window = read_ahead::Window::reserve(start, len).or_else(|| {
            drop_idle_read_ahead();
            read_ahead::Window::reserve(start, len)
        });
        let Some(window) = window else { return };
        stream.windows.push_back(window.clone());
        let file = file.clone();
        // Detached: nothing awaits the task itself (its readers wait on the window), and a
        // dropped `Task` would cancel it.
        glommio::spawn_local(async move {
            let _turn = read_ahead::read_turn().await;
            let bytes = file.read_at(start, len).await.ok();
            window.complete(bytes);
        })
        .detach();
    }

    /// Whole batches from the one holding `offset`, within `end` bytes of the file and below
    /// offset `limit` (batches never straddle it: it is a batch's base or the durable end),
    /// with the file position after the last one returned.
    ///
    /// From an index entry at or below `offset` (at most about one index interval before the
    /// batch holding it), one read of that slack plus `max_bytes` usually serves: the batches
    /// before `offset` are skipped in memory. From the batch's own position (a reader that
    /// continues where it stopped) the slack is one batch header. A second read is needed only
    /// when the skipped batches fill the whole buffer, or the first batch wanted does not end
    /// inside it.
    #[allow(clippy::too_many_arguments)]
    async fn read_from(
        &self,
        file: &DmaFile,
        path: &Path,
        offset: u64,
        at: ReadAt,
        end: u64,
        max_bytes: usize,
        limit: u64,
    ) -> Result<Option<(ReadBatches, u64)>> {
        let corrupt = |detail: String| Error::Corrupt {
            what: "segment",
            path: path.to_owned(),
            detail,
        };
        let (mut pos, slack) = match at {
            // At least the first batch's header, to learn its size if `max_bytes` is smaller.
            ReadAt::Batch(pos) => (pos, BATCH_HEADER_BYTES),
            ReadAt::IndexEntry(pos) => (pos, self.cfg().index_interval_bytes as usize + BATCH_HEADER_BYTES),
        };
        let mut want = max_bytes.saturating_add(slack).min(READ_BYTES_MAX);
        loop {
            if pos >= end {
                return Ok(None);
            }
            let len = (want as u64).min(end - pos) as usize;
            let bytes = file.read_at(pos, len).await.map_err(|e| Error::io("reading segment", path, e))?;
            match read_ahead::select(&bytes, pos, offset, max_bytes, limit).map_err(corrupt)? {
                read_ahead::Selection::Before { at } => {
                    if pos + at as u64 > end {
                        return Err(corrupt(format!("batch before {} extends past the durable data", pos + at as u64)));
                    }
                    if at == 0 {
                        return Err(corrupt(format!("{} bytes at {pos} hold no batch header", bytes.len())));
                    }
                    // Every batch read ends before `offset`: go on after them, reading more at once.
                    pos += at as u64;
                    want = want.saturating_mul(2).min(READ_BYTES_MAX);
                }
                read_ahead::Selection::AtLimit => return Ok(None),
                read_ahead::Selection::Partial { at, total_bytes } => {
                    // The first batch is not whole in the buffer: read again from it.
                    if pos + (at + total_bytes) as u64 > end {
                        return Err(corrupt(format!("batch at {} extends past the durable data", pos + at as u64)));
                    }
                    pos += at as u64;
                    want = max_bytes.max(total_bytes);
                }
                read_ahead::Selection::Batches {
                    at,
                    taken,
                    first_offset,
                    next_offset,
                } => {
                    let found = ReadBatches {
                        bytes: ReadResult::slice(&bytes, at, taken).expect("slice within the read"),
                        first_offset,
                        next_offset,
                    };
                    return Ok(Some((found, pos + (at + taken) as u64)));
                }
            }
        }
    }

    /// The first durable batch whose max timestamp is at or after `timestamp`, if any.
    pub async fn find_by_timestamp(&self, timestamp: i64) -> Result<Option<TimestampHit>> {
        let log_start = self.state().log_start();
        let candidates: Vec<(Rc<DmaFile>, u64, u64, u64, PathBuf)> = {
            let st = self.state();
            st.segments
                .values()
                .filter(|s| s.index.max_timestamp() >= timestamp && s.durable_bytes > 0 && s.next_offset > log_start)
                .map(|s| {
                    let (_, pos) = s.index.lookup_time(timestamp);
                    (
                        s.file.clone(),
                        s.base_offset,
                        u64::from(pos),
                        s.durable_bytes,
                        segment::log_path(self.dir(), s.base_offset),
                    )
                })
                .collect()
        };
        for (file, _base, pos, end, path) in candidates {
            let mut hit = None;
            segment::scan(&file, &path, pos, 0, end, false, |h, _| {
                // Batches wholly below the log start were deleted by `delete_records_before`.
                if h.max_timestamp >= timestamp && h.last_offset() as u64 >= log_start {
                    hit = Some(TimestampHit {
                        batch_base_offset: h.base_offset as u64,
                        batch_last_offset: h.last_offset() as u64,
                        max_timestamp: h.max_timestamp,
                    });
                    false
                } else {
                    true
                }
            })
            .await?;
            if hit.is_some() {
                return Ok(hit);
            }
        }
        Ok(None)
    }

    /// The largest max timestamp in the log and the batch holding it (Kafka's MAX_TIMESTAMP).
    pub async fn max_timestamp(&self) -> Result<Option<TimestampHit>> {
        let best = {
            let st = self.state();
            let log_start = st.log_start();
            st.segments
                .values()
                .filter(|s| s.next_offset > log_start)
                .map(|s| s.index.max_timestamp())
                .max()
        };
        match best {
            Some(ts) if ts > i64::MIN => self.find_by_timestamp(ts).await,
            _ => Ok(None),
        }
    }

    /// Raises the log start to `offset` (Kafka's DeleteRecords): reads below it fail with
    /// `OffsetOutOfRange`, `offsets().log_start` reports it, and whole segments below it are
    /// deleted. The new start is durable before any segment goes (see `log_start.rs`). An offset
    /// at or below the current start changes nothing; one beyond the durable end (the high
    /// watermark) is refused. Returns the log start afterwards.
    pub async fn delete_records_before(&self, offset: u64) -> Result<u64> {
        let permit = self.lock().await?;
        self.check_writable()?;
        let (log_start, durable_end, log_end) = {
            let st = self.state();
            (st.log_start(), st.durable_end, st.log_end)
        };
        if offset > durable_end {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        if offset <= log_start {
            return Ok(log_start);
        }
        // With still no room once the spares are gone, nothing has changed (the old start
        // file stands) and the log stays writable: refusing the request is enough.
        let stored = self
            .with_room(Error::is_storage_full, || crate::log_start::store(self.dir(), offset))
            .await;
        match stored {
            Ok(()) => {}
            Err(e) if e.is_storage_full() => return Err(e),
            Err(e) => return Err(self.poison(format!("persisting log start offset {offset}: {e}"))),
        }
        let doomed: Vec<u64> = {
            let mut st = self.state_mut();
            st.log_start_offset = offset;
            let sealed = st.segments.len() - 1;
            st.segments
                .values()
                .take(sealed)
                .take_while(|s| s.next_offset <= offset)
                .map(|s| s.base_offset)
                .collect()
        };
        let removed = self.detach_segments(&doomed);
        self.forget_aborted_below_start();
        let deleting = self.deleting().await?;
        drop(permit);
        self.delete_segment_files(removed, true).await?;
        drop(deleting);
        tracing::info!(target: "iouring_storage", dir = %self.dir().display(), log_start = offset, segments_deleted = doomed.len(), "records deleted");
        Ok(offset)
    }

    /// Deletes sealed segments beyond `retention_bytes` (oldest first, never below the limit)
    /// and those whose newest batch is older than `retention_ms`. Returns the deleted bases.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<Vec<u64>> {
        let permit = self.lock().await?;
        let doomed: Vec<u64> = {
            let cfg = self.cfg();
            let st = self.state();
            let mut total: u64 = st.segments.values().map(|s| s.data_bytes).sum();
            let sealed = st.segments.len() - 1;
            let mut doomed = Vec::new();
            for seg in st.segments.values().take(sealed) {
                let too_big = cfg.retention_bytes.is_some_and(|limit| total - seg.data_bytes >= limit);
                let too_old = cfg
                    .retention_ms
                    .is_some_and(|ms| seg.index.max_timestamp() < now_ms.saturating_sub(ms));
                if !(too_big || too_old) {
                    break;
                }
                total -= seg.data_bytes;
                doomed.push(seg.base_offset);
            }
            doomed
        };
        let removed = self.detach_segments(&doomed);
        self.forget_aborted_below_start();
        // Appends go on while the files go: their bases are below the log start, which only a
        // truncation below it can lower, and truncation waits for `deleting`.
        let deleting = self.deleting().await?;
        drop(permit);
        self.delete_segment_files(removed, true).await?;
        drop(deleting);
        if !doomed.is_empty() {
            tracing::info!(target: "iouring_storage", dir = %self.dir().display(), segments = doomed.len(), log_start = self.offsets().log_start, "retention deleted segments");
        }
        Ok(doomed)
    }

    /// Aborted transactions that end below the log start can no longer be read past: gone
    /// from memory now, and from the next snapshot.
    fn forget_aborted_below_start(&self) {
        let mut st = self.state_mut();
        let start = st.log_start();
        st.producers.forget_aborted_below(start);
    }

    /// The partition directory.
    pub(crate) fn dir_path(&self) -> PathBuf {
        self.inner.dir.clone()
    }

    /// Puts a rewritten segment (`rewrite.rs`), durable at `tmp_path`, in place of sealed
    /// segment `base`, if that still holds `original_bytes`: rename over the old file, then
    /// the index files, then the in-memory segment. Returns whether it did.
    pub(crate) async fn install_rewrite(
        &self,
        base: u64,
        original_bytes: u64,
        tmp_path: &Path,
        index: SegmentIndex,
        summary: SegmentSummary,
    ) -> Result<bool> {
        let _permit = self.lock().await?;
        self.check_writable()?;
        {
            let st = self.state();
            let sealed = st.segments.len() - 1;
            let unchanged = st
                .segments
                .values()
                .take(sealed)
                .any(|s| s.base_offset == base && s.data_bytes == original_bytes);
            if !unchanged {
                return Ok(false);
            }
        }
        let dir = self.dir().to_owned();
        let path = segment::log_path(&dir, base);
        std::fs::rename(tmp_path, &path).map_err(|e| Error::io("installing rewritten segment", &path, e))?;
        let installed = async {
            segment::sync_dir(&dir).await?;
            segment::store_index(&dir, base, &index, summary).await?;
            segment::sync_dir(&dir).await?;
            segment::open_data_file(&path, false).await
        }
        .await;
        // The old data is gone from the directory; an error here leaves this log unable to
        // say what is on disk, so it stops taking writes until reopened (which rebuilds).
        let file = installed.map_err(|e| self.poison(format!("installing rewritten segment {base}: {e}")))?;
        let mut st = self.state_mut();
        let seg = st.segments.get_mut(&base).expect("checked under the append lock");
        seg.file = file;
        seg.data_bytes = summary.data_bytes;
        seg.durable_bytes = summary.data_bytes;
        seg.index = index;
        st.rewrites += 1;
        Ok(true)
    }

    /// Removes segments from the map first (readers stop seeing them), then their files.
    async fn delete_segments(&self, bases: &[u64]) -> Result<()> {
        let removed = self.detach_segments(bases);
        self.delete_segment_files(removed, false).await
    }

    /// Takes sealed segments out of the log (caller holds the append lock), so that no read or
    /// append finds them; `delete_segment_files` then deletes their files. That second step
    /// needs the lock only when a base may come back (truncation): retention and delete
    /// records take segments below the log start, and run it under `deleting` instead, which
    /// truncation (the one way below the log start) waits for.
    fn detach_segments(&self, bases: &[u64]) -> Vec<Segment> {
        let mut st = self.state_mut();
        bases.iter().filter_map(|b| st.segments.remove(b)).collect()
    }

    /// `recycle`: the segments lie wholly below the first remaining segment's base, so one of
    /// their files may become the spare.
    async fn delete_segment_files(&self, removed: Vec<Segment>, recycle: bool) -> Result<()> {
        if removed.is_empty() {
            return Ok(());
        }
        let dir = self.dir().to_owned();
        // A sealed segment's snapshot goes with it; the newest, at the active segment's base,
        // stays.
        for seg in removed {
            if recycle && self.keep_as_spare(&seg) {
                segment::delete_segment_companions("deleting segment file", &dir, seg.base_offset).await?;
                continue;
            }
            segment::delete_segment("deleting segment file", &dir, seg.base_offset, seg.file).await?;
        }
        segment::sync_dir(&dir).await
    }

    /// Removes every batch at or after `offset` (a batch straddling it goes whole), as a
    /// follower does before fetching from a new leader. The log end becomes the base of the
    /// first removed batch. Durable before it returns.
    pub async fn truncate_to(&self, offset: u64) -> Result<u64> {
        let _permit = self.lock().await?;
        let _deleting = self.deleting().await?;
        self.check_writable()?;
        if offset >= self.state().log_end {
            return Ok(self.state().log_end);
        }
        // Finish every write first, so none lands after the cut.
        self.sync_locked().await?;
        let dir = self.dir().to_owned();
        // The first segment's base, not the log start: a cut below a start raised by
        // `delete_records_before` cuts there, and the start comes down with the end.
        let (first_base, later): (u64, Vec<u64>) = {
            let st = self.state();
            let first_base = *st.segments.keys().next().expect("a log always has an active segment");
            let later = st
                .segments
                .range(offset.max(first_base) + 1..)
                .map(|(&b, _)| b)
                .filter(|&b| b >= offset)
                .collect();
            (first_base, later)
        };
        // Newest first, so a crash part-way leaves a contiguous log.
        for b in later.iter().rev() {
            self.delete_segments(&[*b]).await?;
        }
        let target = offset.max(first_base);
        let (file, base, end) = {
            let st = self.state();
            let (&base, seg) = st.segments.range(..=target).next_back().expect("target is at or above log start");
            (seg.file.clone(), base, seg.data_bytes)
        };
        let path = segment::log_path(&dir, base);
        // One scan finds the first batch reaching `target` and rebuilds the index of the rest.
        let mut index = SegmentIndex::new(self.cfg().index_interval_bytes);
        let mut cut: Option<(u64, u64)> = None;
        let scan = segment::scan(&file, &path, 0, base, end, false, |h, p| {
            if h.last_offset() as u64 >= target {
                cut = Some((p, h.base_offset as u64));
                return false;
            }
            index.on_batch(
                (h.base_offset as u64 - base) as u32,
                p as u32,
                h.total_bytes as u32,
                h.max_timestamp,
            );
            true
        })
        .await?;
        let (cut_pos, new_end) = cut.unwrap_or((scan.valid_bytes, scan.next_offset));
        segment::truncate_durably(&file, cut_pos)
            .await
            .map_err(|e| self.poison(format!("truncating segment {base}: {e}")))?;
        for p in [segment::index_path(&dir, base), segment::time_index_path(&dir, base)] {
            let _ = std::fs::remove_file(p);
        }
        segment::sync_dir(&dir).await?;
        // A cut below the persisted log start moves the start down with it, or the log would
        // start after its end.
        let lower_start = self.state().log_start_offset > new_end;
        if lower_start {
            crate::log_start::store(&dir, new_end)
                .await
                .map_err(|e| self.poison(format!("persisting log start offset {new_end}: {e}")))?;
        }
        let capacity = self.cfg().write_buffer_bytes;
        // The file is cut already: a writer that cannot start leaves the log unusable.
        let writer = Writer::open(file.clone(), capacity, cut_pos, cut_pos)
            .await
            .map_err(|e| self.poison(format!("reading the tail block of segment {base} after truncation: {e}")))?;
        let replay: Vec<producer_state::ReplaySegment> = {
            let mut st = self.state_mut();
            st.truncations += 1;
            if lower_start {
                st.log_start_offset = new_end;
            }
            st.log_end = new_end;
            st.durable_end = new_end;
            st.commit_covers = new_end;
            st.writer = writer;
            // The cut file holds no stale tail, whichever segment is active now.
            st.active_recycled = false;
            let seg = st.segments.get_mut(&base).expect("segment kept");
            seg.data_bytes = cut_pos;
            seg.durable_bytes = cut_pos;
            seg.next_offset = new_end;
            seg.index = index;
            st.segments
                .values()
                .map(|s| (s.base_offset, s.file.clone(), s.data_bytes))
                .collect()
        };
        // The producer state forgets the removed batches: rebuilt from a snapshot at or below
        // the new end (later ones describe removed data) and the batches after it.
        // A failure here would leave the state describing removed batches: poison.
        producer_state::remove_snapshots_above(&dir, new_end)
            .map_err(|e| self.poison(format!("removing producer snapshots above {new_end}: {e}")))?;
        let producers = producer_state::rebuild(&dir, &replay, new_end)
            .await
            .map_err(|e| self.poison(format!("rebuilding producer state after truncation: {e}")))?;
        self.state_mut().producers = producers;
        self.inner.durable_changed.notify_all();
        tracing::info!(target: "iouring_storage", dir = %dir.display(), offset, new_end, "log truncated");
        Ok(new_end)
    }

    /// Cuts a recycled active segment's file to its data, so that the next open finds the
    /// clean end instead of the stale batches beyond it (which it would report as damage).
    async fn cut_recycled_tail(&self) -> Result<()> {
        if !self.state().active_recycled {
            return Ok(());
        }
        let (file, base, data_bytes) = {
            let st = self.state();
            (st.writer.file.clone(), st.active().base_offset, st.active().data_bytes)
        };
        segment::truncate_durably(&file, data_bytes)
            .await
            .map_err(|e| self.poison(format!("cutting recycled segment {base} to its data: {e}")))?;
        self.state_mut().active_recycled = false;
        Ok(())
    }

    /// Commits everything and refuses further appends. Reads keep working.
    pub async fn close(&self) -> Result<()> {
        let _permit = self.lock().await?;
        if self.state().poisoned.is_none() && !self.state().closed {
            self.sync_locked().await?;
            self.cut_recycled_tail().await?;
        } else {
            // A poisoned log may still have writes on their way to the disk. They must land
            // before the log is closed: a log opened again on the same files must not have
            // its new writes overwritten by old ones. Their outcome no longer matters.
            let pending = self.state().writer.pending();
            for op in pending {
                let _ = op.wait().await;
            }
        }
        self.state_mut().closed = true;
        self.inner.read_ahead.borrow_mut().clear();
        self.inner.durable_changed.notify_all();
        Ok(())
    }
}

/// The recovered state handed from recovery to the log.
pub(crate) struct RecoveredSegment {
    pub base_offset: u64,
    pub file: Rc<DmaFile>,
    pub data_bytes: u64,
    pub next_offset: u64,
    pub index: SegmentIndex,
}

pub(crate) struct Recovered {
    pub segments: Vec<RecoveredSegment>,
    pub writer: Writer,
    /// The persisted log start, at most the log end.
    pub log_start_offset: u64,
    pub producers: ProducerState,
    /// A spare segment file is in the directory.
    pub spare: bool,
}

impl Recovered {
    fn into_state(self) -> State {
        let log_end = self.segments.last().expect("recovery yields an active segment").next_offset;
        let segments = self
            .segments
            .into_iter()
            .map(|s| {
                (
                    s.base_offset,
                    Segment {
                        base_offset: s.base_offset,
                        file: s.file,
                        data_bytes: s.data_bytes,
                        durable_bytes: s.data_bytes,
                        next_offset: s.next_offset,
                        index: s.index,
                        first_append_ms: None,
                    },
                )
            })
            .collect();
        let mut st = State {
            segments,
            writer: self.writer,
            log_end,
            durable_end: log_end,
            poisoned: None,
            poisoned_by_full_disk: false,
            closed: false,
            commits_running: 0,
            commit_covers: log_end,
            truncations: 0,
            rewrites: 0,
            fdatasyncs: 0,
            fsync_us_total: 0,
            committed_bytes: 0,
            appended_batches: 0,
            log_start_offset: self.log_start_offset,
            producers: self.producers,
            spare: self.spare,
            active_recycled: false,
            segments_recycled: 0,
        };
        // The newest snapshot may list aborts whose segments retention has deleted since.
        let start = st.log_start();
        st.producers.forget_aborted_below(start);
        st
    }
}

/// ENOSPC, however glommio wrapped it.
fn is_storage_full(e: &glommio::GlommioError<()>) -> bool {
    use glommio::GlommioError::{EnhancedIoError, IoError};
    matches!(e, IoError(source) | EnhancedIoError { source, .. } if source.kind() == std::io::ErrorKind::StorageFull)
}

thread_local! {
    /// Group commits running on this thread, over all its logs (a log never leaves its thread).
    static THREAD_COMMITS_RUNNING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The logs opened on this thread, for an append that finds the filesystem full.
    static THREAD_LOGS: RefCell<Vec<std::rc::Weak<Inner>>> = const { RefCell::new(Vec::new()) };
    /// The value of `SPARES_WANTED` this thread last answered.
    static SPARES_WANTED_SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Bumped by a write that found the filesystem full after giving back every spare on its own
/// thread: a log and its spare never leave their thread, so the other threads give theirs back
/// when they next look (`release_spares_if_wanted`).
static SPARES_WANTED: AtomicU64 = AtomicU64::new(0);

/// Gives back the spare file of every open log on this thread if a write on another thread
/// found the filesystem full since this thread last looked. Cheap when nothing was asked (one
/// atomic load): meant for a periodic task on every thread that opens logs. Returns whether
/// any blocks were given back.
pub async fn release_spares_if_wanted() -> bool {
    let wanted = SPARES_WANTED.load(Ordering::Relaxed);
    if wanted == SPARES_WANTED_SEEN.get() {
        return false;
    }
    SPARES_WANTED_SEEN.set(wanted);
    release_thread_spares().await
}

/// Drops the read-ahead windows of every reader on this thread that has been idle for
/// `READ_AHEAD_IDLE_MS`, for a reader that found the thread's read-ahead budget spent.
fn drop_idle_read_ahead() {
    let now = std::time::Instant::now();
    THREAD_LOGS.with_borrow(|logs| {
        for inner in logs.iter().filter_map(std::rc::Weak::upgrade) {
            if let Ok(mut ra) = inner.read_ahead.try_borrow_mut() {
                ra.drop_idle(now);
            }
        }
    });
}

/// Deletes the spare file of every open log on this thread, for an append that found the
/// filesystem full with no spare of its own. Returns whether any blocks were given back.
async fn release_thread_spares() -> bool {
    let holders: Vec<PartitionLog> = THREAD_LOGS.with_borrow(|logs| {
        logs.iter()
            .filter_map(std::rc::Weak::upgrade)
            .map(|inner| PartitionLog { inner })
            .filter(|log| log.state().spare && !log.state().closed)
            .collect()
    });
    let mut released = false;
    for log in holders {
        released |= log.release_spare().await;
    }
    released
}

/// Where `read_from` starts reading a segment.
#[derive(Debug, Clone, Copy)]
enum ReadAt {
    /// The position of the batch holding the offset.
    Batch(u64),
    /// An index entry at or below the offset: the batch may start up to an index interval on.
    IndexEntry(u64),
}

/// One running group commit, counted in its log and on its thread until dropped (also when the
/// commit's future is dropped halfway), which then wakes the log's waiters.
struct CommitSlot<'a> {
    log: &'a PartitionLog,
}

impl<'a> CommitSlot<'a> {
    fn take(log: &'a PartitionLog) -> Self {
        log.state_mut().commits_running += 1;
        THREAD_COMMITS_RUNNING.set(THREAD_COMMITS_RUNNING.get() + 1);
        CommitSlot { log }
    }
}

impl Drop for CommitSlot<'_> {
    fn drop(&mut self) {
        self.log.state_mut().commits_running -= 1;
        THREAD_COMMITS_RUNNING.set(THREAD_COMMITS_RUNNING.get() - 1);
        self.log.inner.durable_changed.notify_all();
    }
}
