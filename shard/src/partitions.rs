//! One shard's partitions: opening logs on first use, executing ops on them, the batch cache
//! that serves tailing reads, and background housekeeping (retention).

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{select, select_all, FutureExt};
use glommio::sync::Semaphore;
use iouring_storage::{AbortedTxn, LogConfig, LogOffsets, Marker, PartitionLog, ReadBatches};

use crate::batch_cache::{BatchCache, BatchCacheStats};
use crate::compaction::{self, Compactor, PassStats};
use crate::constants::{PARTITIONS_PER_SHARD_MAX, WAIT_DATA_MAX};
use crate::ops::{CommittedRead, Op, OpResult, ReadData};
use crate::{Error, Result, ShardId, TopicPartition};

/// Tells a shard how to configure a partition's log, or that the partition does not exist.
/// The broker answers from its current metadata.
pub type LogConfigProvider = Arc<dyn Fn(&TopicPartition) -> Option<LogConfig> + Send + Sync>;

/// Marks a partition directory that is being deleted: `<topic>-<partition>~deleted-<pid>`.
/// `~` is not legal in a Kafka topic name, so no live partition directory ever matches.
pub const DELETED_SUFFIX: &str = "~deleted-";

/// Removes partition directories a deletion left behind (a crash between rename and removal).
/// Called once at start-up, before any shard opens a partition.
pub fn remove_deleted(data_dir: &std::path::Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_deleted = name
            .rsplit_once(DELETED_SUFFIX)
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if is_deleted && entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The partitions one shard owns.
pub struct Partitions {
    shard: ShardId,
    data_dir: PathBuf,
    provider: LogConfigProvider,
    logs: RefCell<HashMap<TopicPartition, PartitionLog>>,
    /// Serializes opening, so two requests never open the same directory twice.
    open_lock: Semaphore,
    /// Per partition, the end of the chain of appends: the receiver the next append waits on
    /// before it starts (see `append`).
    append_tails: RefCell<HashMap<TopicPartition, oneshot::Receiver<()>>>,
    /// Recently appended batches of every partition here, for reads at the tail.
    cache: BatchCache,
    /// The state the crate above keeps on this shard, handed to `Op::Run` tasks.
    service: RefCell<Option<Rc<dyn Any>>>,
    compactor: RefCell<Option<Arc<dyn Compactor>>>,
    /// Per compacted partition, the first offset the last compaction pass did not clean.
    clean_ends: RefCell<HashMap<TopicPartition, u64>>,
}

/// A read of a partition this shard owns.
#[derive(Debug)]
pub enum LocalRead {
    /// Served by the batch cache, without disk I/O.
    Cached(ReadData),
    /// Read from the log: the O_DIRECT buffer itself, which cannot leave this thread.
    Log(ReadBatches),
}

impl Partitions {
    #[cfg(test)]
    pub(crate) fn new(shard: ShardId, data_dir: PathBuf, provider: LogConfigProvider) -> Self {
        Self::with_cache_bytes_max(shard, data_dir, provider, crate::constants::BATCH_CACHE_BYTES_PER_SHARD_DEFAULT)
    }

    pub(crate) fn with_cache_bytes_max(shard: ShardId, data_dir: PathBuf, provider: LogConfigProvider, cache_bytes_max: usize) -> Self {
        Partitions {
            shard,
            data_dir,
            provider,
            logs: RefCell::new(HashMap::new()),
            open_lock: Semaphore::new(1),
            append_tails: RefCell::new(HashMap::new()),
            cache: BatchCache::new(cache_bytes_max),
            service: RefCell::new(None),
            compactor: RefCell::new(None),
            clean_ends: RefCell::new(HashMap::new()),
        }
    }

    /// Registers the state that `Op::Run` tasks on this shard receive. Tasks that arrive
    /// before it is registered fail with `Error::ServiceMissing`.
    pub fn set_service(&self, service: Rc<dyn Any>) {
        *self.service.borrow_mut() = Some(service);
    }

    /// Hits, misses and size of this shard's batch cache.
    pub fn batch_cache_stats(&self) -> BatchCacheStats {
        self.cache.stats()
    }

    /// The open log of `tp`, opening (and recovering) it on first use.
    pub async fn get(&self, tp: &TopicPartition) -> Result<PartitionLog> {
        if let Some(log) = self.logs.borrow().get(tp) {
            return Ok(log.clone());
        }
        let _permit = self.open_lock.acquire_permit(1).await.map_err(|_| Error::ShardGone(self.shard.0))?;
        if let Some(log) = self.logs.borrow().get(tp) {
            return Ok(log.clone());
        }
        let Some(mut config) = (self.provider)(tp) else {
            return Err(Error::UnknownPartition(tp.to_string()));
        };
        if self.logs.borrow().len() >= PARTITIONS_PER_SHARD_MAX {
            return Err(Error::TooManyPartitions {
                shard: self.shard.0,
                max: PARTITIONS_PER_SHARD_MAX,
            });
        }
        config.dir = self.data_dir.join(tp.dir_name());
        let log = PartitionLog::open(config).await.map_err(|source| Error::Storage {
            tp: tp.to_string(),
            source,
        })?;
        self.logs.borrow_mut().insert(tp.clone(), log.clone());
        Ok(log)
    }

    /// Partitions open on this shard.
    pub fn open_partitions(&self) -> Vec<TopicPartition> {
        self.logs.borrow().keys().cloned().collect()
    }

    /// Runs one op against this shard's partitions.
    pub async fn execute(&self, op: Op) -> OpResult {
        // Any op that may change a log other than by appending (truncation, deletion, a new
        // config, and whatever comes later) makes its cached batches suspect: they are
        // forgotten before it starts and again once it is done, together with any append that
        // went in meanwhile.
        let changes_log = match &op {
            Op::Append { .. }
            | Op::Read { .. }
            | Op::ReadCommitted { .. }
            | Op::WriteTxnMarker { .. }
            | Op::Offsets { .. }
            | Op::FindTimestamp { .. }
            | Op::MaxTimestamp { .. }
            | Op::WaitData { .. }
            | Op::Run(_) => None,
            Op::Drop { tp } | Op::Reconfigure { tp } | Op::DeleteRecords { tp, .. } => Some(tp.clone()),
        };
        if let Some(tp) = &changes_log {
            self.cache.remove(tp);
        }
        let result = self.execute_op(op).await;
        if let Some(tp) = &changes_log {
            self.cache.remove(tp);
        }
        result
    }

    async fn execute_op(&self, op: Op) -> OpResult {
        match op {
            Op::Append {
                tp,
                batch,
                leader_epoch,
                now_ms,
                durable,
            } => OpResult::Appended(self.append(&tp, batch, leader_epoch, now_ms, durable).await),
            Op::Read { tp, offset, max_bytes } => OpResult::Read(self.read(&tp, offset, max_bytes).await),
            Op::ReadCommitted { tp, offset, max_bytes } => OpResult::ReadCommitted(self.read_committed(&tp, offset, max_bytes).await),
            Op::WriteTxnMarker {
                tp,
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
                now_ms,
            } => OpResult::MarkerWritten(
                self.write_txn_marker(&tp, producer_id, producer_epoch, Marker { commit, coordinator_epoch }, now_ms)
                    .await,
            ),
            Op::Offsets { tp } => OpResult::Offsets(self.get(&tp).await.map(|log| log.offsets())),
            Op::FindTimestamp { tp, timestamp } => OpResult::Timestamp(match self.get(&tp).await {
                Ok(log) => log.find_by_timestamp(timestamp).await.map_err(|source| Error::Storage {
                    tp: tp.to_string(),
                    source,
                }),
                Err(e) => Err(e),
            }),
            Op::MaxTimestamp { tp } => OpResult::Timestamp(match self.get(&tp).await {
                Ok(log) => log.max_timestamp().await.map_err(|source| Error::Storage {
                    tp: tp.to_string(),
                    source,
                }),
                Err(e) => Err(e),
            }),
            Op::WaitData { watches, timeout } => {
                self.wait_data(watches, timeout).await;
                OpResult::Waited
            }
            Op::Drop { tp } => OpResult::Dropped(self.drop_partition(&tp).await),
            Op::Reconfigure { tp } => OpResult::Reconfigured(self.reconfigure(&tp).await),
            Op::DeleteRecords { tp, before } => OpResult::RecordsDeleted(self.delete_records(&tp, before).await),
            Op::Run(task) => {
                let service = self.service.borrow().clone();
                OpResult::Ran(match service {
                    Some(service) => Ok((task.0)(service).await),
                    None => Err(Error::ServiceMissing(self.shard.0)),
                })
            }
        }
    }

    async fn append(
        &self,
        tp: &TopicPartition,
        batch: Bytes,
        leader_epoch: i32,
        now_ms: i64,
        durable: bool,
    ) -> Result<(iouring_storage::AppendInfo, iouring_storage::LogOffsets)> {
        // Appends to one partition take effect in the order they reached this shard, which
        // keeps the order of the requests on one connection (Kafka's ordering guarantee for a
        // producer with several requests in flight). The place in line is taken before the
        // first await: opening the log on first use waits on `open_lock`, and without the line
        // an append arriving after the open would overtake those queued during it. Nor is the
        // log's append lock alone enough: a glommio Semaphore waiter polled while the permit is
        // momentarily free takes it ahead of the waiter woken for it. (Ops run in detached
        // tasks and are never cancelled midway, which would let the next one go early.)
        let (my_turn_done, log) = self.append_turn(tp).await?;
        let storage = |source| Error::Storage {
            tp: tp.to_string(),
            source,
        };
        let info = log.append(&batch, leader_epoch, now_ms).await.map_err(storage)?;
        // Still in line, so the cache sees this partition's batches in offset order. A
        // duplicate (an idempotent producer's retry) appended nothing: its offsets are the
        // original batch's, which is cached already or older than the cache.
        if !info.duplicate {
            self.cache.insert(tp, batch, info.base_offset, info.last_offset, leader_epoch);
        }
        // The offsets are assigned: the next append may go while this one waits for the disk.
        drop(my_turn_done);
        if durable {
            // For a duplicate too: its original batch may still be on its way to the disk.
            log.wait_durable(info.last_offset + 1).await.map_err(storage)?;
        } else {
            // Nobody waits, but readers only see durable data: commit soon, grouped with others.
            let log = log.clone();
            glommio::spawn_local(async move {
                if let Err(e) = log.commit().await {
                    tracing::warn!(target: "shard", error = %e, "background commit failed");
                }
            })
            .detach();
        }
        Ok((info, log.offsets()))
    }

    /// Takes `tp`'s place in its append order (see `append`), waits for the appends ahead of
    /// it and opens the log. Dropping the returned sender lets the next append go.
    async fn append_turn(&self, tp: &TopicPartition) -> Result<(oneshot::Sender<()>, PartitionLog)> {
        let (my_turn_done, next_waits_on) = oneshot::channel::<()>();
        let previous = self.append_tails.borrow_mut().insert(tp.clone(), next_waits_on);
        if let Some(previous) = previous {
            // Resolves (as Canceled) when the previous append drops its sender.
            let _ = previous.await;
        }
        Ok((my_turn_done, self.writable(tp).await?))
    }

    /// The open log of `tp`, for a write. A log poisoned by a full disk is closed and opened
    /// again (recovered) once its filesystem has room, so that space freed by retention,
    /// DeleteRecords, a deleted topic or anything outside the broker brings the partition back
    /// without a restart; until then writes get its storage error. Recovery keeps everything
    /// that was reported durable.
    async fn writable(&self, tp: &TopicPartition) -> Result<PartitionLog> {
        let log = self.get(tp).await?;
        if !log.poisoned_by_full_disk() || !log.has_room_to_append() {
            return Ok(log);
        }
        {
            let _permit = self.open_lock.acquire_permit(1).await.map_err(|_| Error::ShardGone(self.shard.0))?;
            let still_open = self.logs.borrow().get(tp).is_some_and(|open| open.same_log(&log));
            if still_open {
                self.logs.borrow_mut().remove(tp);
                // Recovery cuts what never became durable, and new appends take those offsets
                // again: cached batches past the durable end would be stale.
                self.cache.remove(tp);
                tracing::warn!(target: "shard", %tp, cause = ?log.poisoned(), "the disk has room again: reopening the partition a full disk poisoned");
                if let Err(e) = log.close().await {
                    tracing::warn!(target: "shard", %tp, error = %e, "closing the poisoned log failed");
                }
            }
        }
        self.get(tp).await
    }

    /// Writes a transaction marker in the partition's append order (see `append`) and waits
    /// for it to be durable; the batch cache gets it like any appended batch.
    async fn write_txn_marker(
        &self,
        tp: &TopicPartition,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        now_ms: i64,
    ) -> Result<u64> {
        let (my_turn_done, log) = self.append_turn(tp).await?;
        let storage = |source| Error::Storage {
            tp: tp.to_string(),
            source,
        };
        // Markers carry the leader epoch of the partition; with one node it is always 0, as
        // the produce path stamps it.
        let leader_epoch = 0;
        let (info, batch) = log
            .append_marker(producer_id, producer_epoch, marker, leader_epoch, now_ms)
            .await
            .map_err(storage)?;
        self.cache
            .insert(tp, Bytes::from(batch), info.base_offset, info.last_offset, leader_epoch);
        drop(my_turn_done);
        log.wait_durable(info.last_offset + 1).await.map_err(storage)?;
        Ok(info.base_offset)
    }

    /// Whole durable batches of `tp` from `offset`, up to `max_bytes` (the first batch whole),
    /// as `PartitionLog::read` gives them: from the batch cache when it holds the batch
    /// containing `offset`, else from the log.
    pub async fn read_local(&self, tp: &TopicPartition, offset: u64, max_bytes: usize) -> Result<(Option<LocalRead>, LogOffsets)> {
        self.read_local_isolated(tp, offset, max_bytes, false).await
    }

    /// As `read_local`, for a read_committed consumer: only batches below the last stable
    /// offset, plus the aborted transactions overlapping what was read.
    pub async fn read_local_committed(
        &self,
        tp: &TopicPartition,
        offset: u64,
        max_bytes: usize,
    ) -> Result<(Option<LocalRead>, LogOffsets, Vec<AbortedTxn>)> {
        let log = self.get(tp).await?;
        let (read, offsets) = self.read_local_isolated(tp, offset, max_bytes, true).await?;
        let next = match &read {
            Some(LocalRead::Cached(d)) => Some(d.next_offset),
            Some(LocalRead::Log(r)) => Some(r.next_offset),
            None => None,
        };
        let aborted = next.map_or_else(Vec::new, |next| log.aborted_transactions(offset, next));
        Ok((read, offsets, aborted))
    }

    async fn read_local_isolated(
        &self,
        tp: &TopicPartition,
        offset: u64,
        max_bytes: usize,
        committed: bool,
    ) -> Result<(Option<LocalRead>, LogOffsets)> {
        let log = self.get(tp).await?;
        let offsets = log.offsets();
        let max_bytes = max_bytes.clamp(1, iouring_storage::constants::READ_BYTES_MAX);
        // The cache serves durable batches only; for read_committed, only those below the
        // last stable offset.
        let readable = if committed {
            LogOffsets {
                durable_end: offsets.last_stable,
                ..offsets
            }
        } else {
            offsets
        };
        if let Some(hit) = self.cache.read(tp, offset, max_bytes, readable) {
            let data = ReadData {
                chunks: hit.chunks,
                first_offset: hit.first_offset,
                next_offset: hit.next_offset,
            };
            return Ok((Some(LocalRead::Cached(data)), offsets));
        }
        let read = if committed {
            log.read_committed(offset, max_bytes).await
        } else {
            log.read(offset, max_bytes).await
        }
        .map_err(|source| Error::Storage {
            tp: tp.to_string(),
            source,
        })?;
        Ok((read.map(LocalRead::Log), log.offsets()))
    }

    async fn read_committed(&self, tp: &TopicPartition, offset: u64, max_bytes: usize) -> Result<CommittedRead> {
        let (read, offsets, aborted) = self.read_local_committed(tp, offset, max_bytes).await?;
        Ok(CommittedRead {
            data: read.map(Self::owned),
            offsets,
            aborted,
        })
    }

    /// A local read as owned chunks that can cross threads.
    fn owned(read: LocalRead) -> ReadData {
        match read {
            LocalRead::Cached(data) => data,
            // Results cross threads; the O_DIRECT buffer does not, so it is copied once here.
            LocalRead::Log(r) => ReadData {
                chunks: vec![Bytes::copy_from_slice(&r.bytes)],
                first_offset: r.first_offset,
                next_offset: r.next_offset,
            },
        }
    }

    async fn read(&self, tp: &TopicPartition, offset: u64, max_bytes: usize) -> Result<(Option<ReadData>, LogOffsets)> {
        let (read, offsets) = self.read_local(tp, offset, max_bytes).await?;
        Ok((read.map(Self::owned), offsets))
    }

    async fn wait_data(&self, watches: Vec<(TopicPartition, u64)>, timeout: Duration) {
        let timeout = timeout.min(WAIT_DATA_MAX);
        let mut waits = Vec::new();
        for (tp, offset) in watches {
            if let Ok(log) = self.get(&tp).await {
                waits.push(async move { log.wait_for_data(offset).await }.boxed_local());
            }
        }
        if waits.is_empty() {
            glommio::timer::sleep(timeout).await;
            return;
        }
        let any = select_all(waits);
        let timer = glommio::timer::sleep(timeout);
        futures::pin_mut!(timer);
        let _ = select(any, timer).await;
    }

    /// Gives the open log of `tp` the provider's current config. Waits for an open in
    /// progress, which may have read the config before the change, and applies it there too.
    /// A partition that no longer exists is left alone: a `Drop` follows.
    async fn reconfigure(&self, tp: &TopicPartition) -> Result<()> {
        let _permit = self.open_lock.acquire_permit(1).await.map_err(|_| Error::ShardGone(self.shard.0))?;
        let log = self.logs.borrow().get(tp).cloned();
        let Some(log) = log else { return Ok(()) };
        let Some(mut config) = (self.provider)(tp) else { return Ok(()) };
        config.dir = self.data_dir.join(tp.dir_name());
        log.set_config(config).map_err(|source| Error::Storage {
            tp: tp.to_string(),
            source,
        })
    }

    async fn delete_records(&self, tp: &TopicPartition, before: Option<u64>) -> Result<iouring_storage::LogOffsets> {
        let log = self.get(tp).await?;
        let before = before.unwrap_or_else(|| log.offsets().durable_end);
        log.delete_records_before(before).await.map_err(|source| Error::Storage {
            tp: tp.to_string(),
            source,
        })?;
        Ok(log.offsets())
    }

    async fn drop_partition(&self, tp: &TopicPartition) -> Result<()> {
        // Under the open lock: an open in progress (which read the config before the topic
        // went) finishes first, so its log is closed here and never outlives its directory.
        let _permit = self.open_lock.acquire_permit(1).await.map_err(|_| Error::ShardGone(self.shard.0))?;
        let log = self.logs.borrow_mut().remove(tp);
        self.clean_ends.borrow_mut().remove(tp);
        // The partition's place in the append order goes too (an append still in flight
        // keeps its own sender; a later one starts a fresh chain).
        self.append_tails.borrow_mut().remove(tp);
        if let Some(log) = log {
            let _ = log.close().await;
        }
        let dir = self.data_dir.join(tp.dir_name());
        let storage = |op: &'static str, path: std::path::PathBuf, source: std::io::Error| Error::Storage {
            tp: tp.to_string(),
            source: iouring_storage::Error::Io { op, path, source },
        };
        // Renamed out of the way first (atomic, and durable with the directory fsync), so a
        // topic created again under the same name never finds the old data, even if removing
        // the files fails or a crash interrupts it; `remove_deleted` clears what is left.
        let doomed = self
            .data_dir
            .join(format!("{}{DELETED_SUFFIX}{}", tp.dir_name(), std::process::id()));
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(storage("renaming deleted partition", dir, e)),
        }
        // On the executor's blocking thread: freeing a segment's blocks can take hundreds of
        // milliseconds (see `iouring_storage`'s `remove_file`), which this shard's other
        // partitions must not wait for.
        let data_dir = self.data_dir.clone();
        glommio::executor()
            .spawn_blocking(move || {
                std::fs::File::open(&data_dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| ("syncing data directory", data_dir, e))?;
                std::fs::remove_dir_all(&doomed).map_err(|e| ("deleting partition", doomed, e))
            })
            .await
            .map_err(|(op, path, e)| storage(op, path, e))
    }

    /// Applies retention to every open partition; errors are logged per partition.
    pub async fn enforce_retention(&self, now_ms: i64) {
        let logs: Vec<(TopicPartition, PartitionLog)> = self.logs.borrow().iter().map(|(tp, l)| (tp.clone(), l.clone())).collect();
        for (tp, log) in logs {
            if let Err(e) = log.enforce_retention(now_ms).await {
                tracing::warn!(target: "shard", %tp, error = %e, "retention failed");
            }
            self.cache.discard_below(&tp, log.offsets().log_start);
        }
    }

    /// Registers what compaction needs to know about records (see `compaction.rs`).
    pub fn set_compactor(&self, compactor: Arc<dyn Compactor>) {
        *self.compactor.borrow_mut() = Some(compactor);
    }

    /// Runs one compaction pass over every open compacted partition, one at a time.
    pub async fn compact(&self, now_ms: i64) -> Vec<(TopicPartition, PassStats)> {
        let Some(compactor) = self.compactor.borrow().clone() else {
            return Vec::new();
        };
        let logs: Vec<(TopicPartition, PartitionLog)> = self.logs.borrow().iter().map(|(tp, l)| (tp.clone(), l.clone())).collect();
        let mut done = Vec::new();
        for (tp, log) in logs {
            let Some(policy) = compactor.policy(&tp) else {
                continue;
            };
            // What was cleaned is remembered only while the shard runs: after a restart the
            // first pass looks at everything again.
            let log_end = log.offsets().log_end;
            let first_dirty = self.clean_ends.borrow().get(&tp).copied().filter(|&e| e <= log_end).unwrap_or(0);
            match compaction::compact_partition(&tp, &log, &compactor, policy, first_dirty, now_ms).await {
                Ok(stats) => {
                    self.clean_ends.borrow_mut().insert(tp.clone(), stats.clean_end);
                    if stats.segments_rewritten > 0 {
                        // Cached batches may hold records the rewrite removed.
                        self.cache.remove(&tp);
                        tracing::info!(
                            target: "shard",
                            %tp,
                            segments = stats.segments_rewritten,
                            bytes_before = stats.bytes_before,
                            bytes_after = stats.bytes_after,
                            "compacted"
                        );
                    }
                    done.push((tp, stats));
                }
                Err(e) => tracing::warn!(target: "shard", %tp, error = %e, "compaction failed"),
            }
        }
        done
    }

    /// Commits and closes every log (clean shutdown).
    pub async fn close_all(&self) {
        self.cache.clear();
        let logs: Vec<(TopicPartition, PartitionLog)> = self.logs.borrow_mut().drain().collect();
        for (tp, log) in logs {
            if let Err(e) = log.close().await {
                tracing::warn!(target: "shard", %tp, error = %e, "closing partition failed");
            }
        }
    }
}

#[cfg(test)]
mod deleted_tests {
    #[test]
    fn only_deletion_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["t-0~deleted-123", "a.deleted-12", "t-0", "t.deleted-1-0", "__cluster_metadata"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(super::remove_deleted(dir.path()).unwrap(), 1);
        assert!(!dir.path().join("t-0~deleted-123").exists());
        for kept in ["a.deleted-12", "t-0", "t.deleted-1-0", "__cluster_metadata"] {
            assert!(dir.path().join(kept).exists(), "{kept} was removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_config() -> LogConfig {
        let mut c = LogConfig::new("");
        c.segment_bytes = 1024 * 1024;
        c.write_buffer_bytes = 64 * 1024;
        c.preallocate_step_bytes = 64 * 1024;
        c.batch_bytes_max = 32 * 1024;
        c
    }

    fn run<Fut: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> Fut + Send + 'static) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(f)
            .expect("spawn executor")
            .join()
            .expect("executor ran");
    }

    /// Runs `f` with a shard's partitions in a fresh directory, every topic on `small_config`.
    fn with_partitions<Fut: std::future::Future<Output = ()> + 'static>(f: impl FnOnce(Partitions) -> Fut + Send + 'static) {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_owned();
        run(move || async move {
            let provider: LogConfigProvider = Arc::new(|_: &TopicPartition| Some(small_config()));
            f(Partitions::new(ShardId(0), data_dir, provider)).await
        });
    }

    #[test]
    fn reconfigure_delete_records_and_drop_reach_the_open_log() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_owned();
        run(move || async move {
            let current = Arc::new(std::sync::Mutex::new(small_config()));
            let c = current.clone();
            let provider: LogConfigProvider = Arc::new(move |tp: &TopicPartition| (tp.topic == "t").then(|| c.lock().unwrap().clone()));
            let parts = Partitions::new(ShardId(0), data_dir.clone(), provider);
            let tp = TopicPartition::new("t", 0);
            // Not open yet: nothing to reconfigure, and it stays closed.
            assert!(matches!(
                parts.execute(Op::Reconfigure { tp: tp.clone() }).await,
                OpResult::Reconfigured(Ok(()))
            ));
            assert!(parts.open_partitions().is_empty());
            for i in 0..20 {
                let batch = Bytes::from(iouring_storage::testing::build_batch(2, 1000, i, i));
                let r = parts.append(&tp, batch, 0, 0, true).await.unwrap();
                assert_eq!(r.0.base_offset, i as u64 * 2);
            }
            current.lock().unwrap().segment_bytes = 64 * 1024;
            assert!(matches!(
                parts.execute(Op::Reconfigure { tp: tp.clone() }).await,
                OpResult::Reconfigured(Ok(()))
            ));
            let log = parts.get(&tp).await.unwrap();
            assert_eq!(log.config().segment_bytes, 64 * 1024);
            assert_eq!(log.config().dir, data_dir.join("t-0"), "the directory never changes");
            current.lock().unwrap().segment_bytes = 1;
            assert!(matches!(
                parts.execute(Op::Reconfigure { tp: tp.clone() }).await,
                OpResult::Reconfigured(Err(Error::Storage { .. }))
            ));
            assert_eq!(log.config().segment_bytes, 64 * 1024, "a refused config changes nothing");

            match parts
                .execute(Op::DeleteRecords {
                    tp: tp.clone(),
                    before: Some(7),
                })
                .await
            {
                OpResult::RecordsDeleted(Ok(o)) => assert_eq!(o.log_start, 7),
                other => panic!("{other:?}"),
            }
            match parts
                .execute(Op::DeleteRecords {
                    tp: tp.clone(),
                    before: None,
                })
                .await
            {
                OpResult::RecordsDeleted(Ok(o)) => assert_eq!((o.log_start, o.durable_end), (40, 40)),
                other => panic!("{other:?}"),
            }
            let unknown = TopicPartition::new("u", 0);
            assert!(matches!(
                parts.execute(Op::DeleteRecords { tp: unknown, before: None }).await,
                OpResult::RecordsDeleted(Err(Error::UnknownPartition(_)))
            ));

            assert!(matches!(
                parts.execute(Op::Drop { tp: tp.clone() }).await,
                OpResult::Dropped(Ok(()))
            ));
            assert!(!data_dir.join("t-0").exists());
            assert!(parts.open_partitions().is_empty());
        });
    }

    fn read_op(tp: &TopicPartition, offset: u64, max_bytes: usize) -> Op {
        Op::Read {
            tp: tp.clone(),
            offset,
            max_bytes,
        }
    }

    async fn read_data(parts: &Partitions, tp: &TopicPartition, offset: u64, max_bytes: usize) -> Option<ReadData> {
        match parts.execute(read_op(tp, offset, max_bytes)).await {
            OpResult::Read(Ok((data, _))) => data,
            other => panic!("{other:?}"),
        }
    }

    /// A transactional batch of producer `pid` at epoch 0 with `records` records.
    fn txn_batch(pid: i64, seq: i32, records: i32) -> Bytes {
        let mut b = iouring_storage::testing::build_batch(records, 200, 0, 0);
        b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = iouring_storage::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    fn marker_op(tp: &TopicPartition, pid: i64, epoch: i16, commit: bool) -> Op {
        Op::WriteTxnMarker {
            tp: tp.clone(),
            producer_id: pid,
            producer_epoch: epoch,
            commit,
            coordinator_epoch: 0,
            now_ms: 0,
        }
    }

    async fn read_committed(parts: &Partitions, tp: &TopicPartition, offset: u64) -> CommittedRead {
        let op = Op::ReadCommitted {
            tp: tp.clone(),
            offset,
            max_bytes: 1 << 20,
        };
        match parts.execute(op).await {
            OpResult::ReadCommitted(Ok(r)) => r,
            other => panic!("read_committed answered {other:?}"),
        }
    }

    #[test]
    fn markers_end_transactions_and_read_committed_stops_at_the_last_stable_offset() {
        with_partitions(|parts| async move {
            let tp = TopicPartition::new("t", 0);
            let plain = || Bytes::from(iouring_storage::testing::build_batch(1, 100, 0, 0));
            parts.append(&tp, plain(), 0, 0, true).await.unwrap(); // 0
            parts.append(&tp, txn_batch(1, 0, 2), 0, 0, true).await.unwrap(); // 1..=2
            parts.append(&tp, plain(), 0, 0, true).await.unwrap(); // 3
            let (_, offsets) = parts.append(&tp, txn_batch(2, 0, 1), 0, 0, true).await.unwrap(); // 4
            assert_eq!((offsets.last_stable, offsets.durable_end), (1, 5));
            // Cache and log alike stop before the open transaction; read_uncommitted does not.
            let r = read_committed(&parts, &tp, 0).await;
            let data = r.data.expect("the batch below the open transaction");
            assert_eq!((data.first_offset, data.next_offset), (0, 1));
            assert!(read_committed(&parts, &tp, 1).await.data.is_none());
            assert_eq!(read_data(&parts, &tp, 0, 1 << 20).await.unwrap().next_offset, 5);

            // Producer 1 aborts, producer 2 commits: everything is stable, one abort is listed.
            let abort = match parts.execute(marker_op(&tp, 1, 0, false)).await {
                OpResult::MarkerWritten(Ok(o)) => o,
                other => panic!("marker answered {other:?}"),
            };
            assert_eq!(abort, 5);
            assert!(matches!(
                parts.execute(marker_op(&tp, 2, 0, true)).await,
                OpResult::MarkerWritten(Ok(6))
            ));
            let hits = parts.batch_cache_stats().hits;
            let r = read_committed(&parts, &tp, 0).await;
            assert_eq!((r.offsets.last_stable, r.offsets.durable_end), (7, 7));
            let data = r.data.unwrap();
            assert_eq!(data.next_offset, 7, "markers included");
            drop(data);
            assert!(parts.batch_cache_stats().hits > hits, "served from the cache, markers too");
            assert_eq!(
                r.aborted,
                vec![iouring_storage::AbortedTxn {
                    producer_id: 1,
                    first_offset: 1,
                    last_offset: 5
                }]
            );
            // The stored markers are Kafka's control batches, and the cache serves them byte for
            // byte as the log stores them.
            let log = parts.get(&tp).await.unwrap();
            let stored = log.read(5, 1).await.unwrap().unwrap();
            assert_eq!(
                iouring_storage::parse_marker(&stored.bytes),
                Some(Marker {
                    commit: false,
                    coordinator_epoch: 0
                })
            );
            let cached = read_committed(&parts, &tp, 5).await.data.unwrap().contiguous();
            assert_eq!(&cached[..stored.bytes.len()], &stored.bytes[..]);
            // A read past the aborted range lists nothing.
            assert!(read_committed(&parts, &tp, 6).await.aborted.is_empty());
            // A marker from an older epoch is refused.
            parts.append(&tp, txn_batch(3, 0, 1), 0, 0, true).await.unwrap();
            let bumped = Op::WriteTxnMarker {
                tp: tp.clone(),
                producer_id: 3,
                producer_epoch: 1,
                commit: false,
                coordinator_epoch: 0,
                now_ms: 0,
            };
            assert!(matches!(parts.execute(bumped).await, OpResult::MarkerWritten(Ok(8))));
            assert!(matches!(
                parts.execute(marker_op(&tp, 3, 0, false)).await,
                OpResult::MarkerWritten(Err(Error::Storage {
                    source: iouring_storage::Error::Producer(iouring_storage::ProducerError::InvalidEpoch { .. }),
                    ..
                }))
            ));
        });
    }

    #[test]
    fn an_idempotent_retry_gets_the_original_offsets_and_is_not_cached_twice() {
        with_partitions(|parts| async move {
            let tp = TopicPartition::new("t", 0);
            let idempotent = |seq: i32| {
                let mut b = iouring_storage::testing::build_batch(2, 100, 0, 0);
                b[43..51].copy_from_slice(&42i64.to_be_bytes());
                b[51..53].copy_from_slice(&0i16.to_be_bytes());
                b[53..57].copy_from_slice(&seq.to_be_bytes());
                let crc = iouring_storage::compute_crc(&b);
                b[17..21].copy_from_slice(&crc.to_be_bytes());
                Bytes::from(b)
            };
            for seq in [0, 2] {
                let (info, _) = parts.append(&tp, idempotent(seq), 0, 0, true).await.unwrap();
                assert!(!info.duplicate);
            }
            for durable in [true, false] {
                let (info, offsets) = parts.append(&tp, idempotent(0), 0, 0, durable).await.unwrap();
                assert!(info.duplicate);
                assert_eq!((info.base_offset, info.last_offset), (0, 1));
                assert_eq!(offsets.log_end, 4, "nothing appended");
            }
            assert_eq!(parts.batch_cache_stats().entries, 2);
            let gap = parts.append(&tp, idempotent(6), 0, 0, true).await.unwrap_err();
            assert!(matches!(
                gap,
                Error::Storage {
                    source: iouring_storage::Error::Producer(iouring_storage::ProducerError::OutOfOrderSequence { .. }),
                    ..
                }
            ));
        });
    }

    #[test]
    fn tailing_reads_come_from_the_batch_cache_byte_for_byte_as_the_log_stores_them() {
        with_partitions(|parts| async move {
            let tp = TopicPartition::new("t", 0);
            for i in 0..10 {
                let mut batch = iouring_storage::testing::build_batch(3, 500, i, i);
                // What a producer leaves in the fields the log stamps.
                batch[0..8].copy_from_slice(&[0xEE; 8]);
                batch[12..16].copy_from_slice(&[0x77; 4]);
                let durable = i % 2 == 0;
                let (info, _) = parts.append(&tp, Bytes::from(batch), 5, 0, durable).await.unwrap();
                assert_eq!(info.base_offset, i as u64 * 3);
            }
            let log = parts.get(&tp).await.unwrap();
            log.wait_durable(30).await.unwrap();
            let before = parts.batch_cache_stats();
            assert_eq!((before.entries, before.hits, before.misses), (10, 0, 0));

            // A consumer at offset 7 (inside the third batch), read twice, and a local read.
            let from_log = log.read(7, 4000).await.unwrap().unwrap();
            for _ in 0..2 {
                let cached = read_data(&parts, &tp, 7, 4000).await.unwrap();
                assert_eq!(cached.contiguous(), &from_log.bytes[..], "stamped exactly as stored");
                assert_eq!(
                    (cached.first_offset, cached.next_offset),
                    (from_log.first_offset, from_log.next_offset)
                );
                assert!(cached.chunks.len() > 1, "served as shared chunks, not a copy of the log");
            }
            let (local, offsets) = parts.read_local(&tp, 29, 1).await.unwrap();
            assert_eq!(offsets.durable_end, 30);
            let Some(LocalRead::Cached(last)) = local else {
                panic!("{local:?}")
            };
            assert_eq!(last.contiguous(), &log.read(29, 1).await.unwrap().unwrap().bytes[..]);
            // At the durable end there is nothing to serve, from the cache or the log.
            assert!(read_data(&parts, &tp, 30, 4000).await.is_none());
            let after = parts.batch_cache_stats();
            assert_eq!((after.hits, after.misses), (3, 0));

            // Anything that changes the log other than an append drops its cached batches;
            // reads go to the log and still see the same bytes.
            match parts
                .execute(Op::DeleteRecords {
                    tp: tp.clone(),
                    before: Some(3),
                })
                .await
            {
                OpResult::RecordsDeleted(Ok(o)) => assert_eq!(o.log_start, 3),
                other => panic!("{other:?}"),
            }
            assert_eq!(parts.batch_cache_stats().entries, 0);
            let from_disk = read_data(&parts, &tp, 7, 4000).await.unwrap();
            assert_eq!(from_disk.chunks.len(), 1);
            assert_eq!(from_disk.contiguous(), &from_log.bytes[..]);
            assert_eq!(parts.batch_cache_stats().misses, 1);

            // New appends are cached again; a dropped partition leaves nothing behind.
            let batch = Bytes::from(iouring_storage::testing::build_batch(1, 10, 0, 0));
            parts.append(&tp, batch, 5, 0, true).await.unwrap();
            assert!(read_data(&parts, &tp, 30, 4000).await.unwrap().chunks.len() == 2);
            assert_eq!(parts.batch_cache_stats().hits, 4);
            assert!(matches!(
                parts.execute(Op::Drop { tp: tp.clone() }).await,
                OpResult::Dropped(Ok(()))
            ));
            assert_eq!(parts.batch_cache_stats().entries, 0);
        });
    }

    #[test]
    fn the_cache_budget_bounds_memory_and_old_data_comes_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_owned();
        run(move || async move {
            let provider: LogConfigProvider = Arc::new(|_: &TopicPartition| Some(small_config()));
            let parts = Partitions::with_cache_bytes_max(ShardId(0), data_dir, provider, 16 * 1024);
            let (a, b) = (TopicPartition::new("a", 0), TopicPartition::new("b", 0));
            for i in 0..20 {
                for tp in [&a, &b] {
                    let batch = Bytes::from(iouring_storage::testing::build_batch(1, 1000, i, i));
                    parts.append(tp, batch, 0, 0, true).await.unwrap();
                }
                assert!(parts.batch_cache_stats().bytes <= 16 * 1024);
            }
            let stats = parts.batch_cache_stats();
            assert!(stats.entries > 2 && stats.entries < 40, "{stats:?}");
            for tp in [&a, &b] {
                let log = parts.get(tp).await.unwrap();
                for offset in [0, 19] {
                    let read = read_data(&parts, tp, offset, 1 << 20).await.unwrap();
                    assert_eq!(read.contiguous(), &log.read(offset, 1 << 20).await.unwrap().unwrap().bytes[..]);
                }
            }
            let stats = parts.batch_cache_stats();
            assert_eq!((stats.hits, stats.misses), (2, 2), "old data from the log, the tail from the cache");
        });
    }
}
