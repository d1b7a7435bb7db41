//! One shard's partitions: opening logs on first use, executing ops on them, and
//! background housekeeping (retention).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{select, select_all, FutureExt};
use glommio::sync::Semaphore;
use iouring_storage::{LogConfig, PartitionLog};

use crate::constants::{PARTITIONS_PER_SHARD_MAX, WAIT_DATA_MAX};
use crate::ops::{Op, OpResult, ReadData};
use crate::{Error, Result, ShardId, TopicPartition};

/// Tells a shard how to configure a partition's log, or that the partition does not exist.
/// The broker answers from its current metadata.
pub type LogConfigProvider = Arc<dyn Fn(&TopicPartition) -> Option<LogConfig> + Send + Sync>;

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
}

impl Partitions {
    pub(crate) fn new(shard: ShardId, data_dir: PathBuf, provider: LogConfigProvider) -> Self {
        Partitions {
            shard,
            data_dir,
            provider,
            logs: RefCell::new(HashMap::new()),
            open_lock: Semaphore::new(1),
            append_tails: RefCell::new(HashMap::new()),
        }
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
        match op {
            Op::Append {
                tp,
                batch,
                leader_epoch,
                now_ms,
                durable,
            } => OpResult::Appended(self.append(&tp, batch, leader_epoch, now_ms, durable).await),
            Op::Read { tp, offset, max_bytes } => OpResult::Read(self.read(&tp, offset, max_bytes).await),
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
        let (my_turn_done, next_waits_on) = oneshot::channel::<()>();
        let previous = self.append_tails.borrow_mut().insert(tp.clone(), next_waits_on);
        if let Some(previous) = previous {
            // Resolves (as Canceled) when the previous append drops its sender.
            let _ = previous.await;
        }
        let log = self.get(tp).await?;
        let storage = |source| Error::Storage {
            tp: tp.to_string(),
            source,
        };
        let info = log.append(&batch, leader_epoch, now_ms).await.map_err(storage)?;
        // The offsets are assigned: the next append may go while this one waits for the disk.
        drop(my_turn_done);
        if durable {
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

    async fn read(&self, tp: &TopicPartition, offset: u64, max_bytes: usize) -> Result<(Option<ReadData>, iouring_storage::LogOffsets)> {
        let log = self.get(tp).await?;
        let read = log.read(offset, max_bytes).await.map_err(|source| Error::Storage {
            tp: tp.to_string(),
            source,
        })?;
        // Results cross threads; the O_DIRECT buffer does not, so it is copied once here.
        let data = read.map(|r| ReadData {
            bytes: Bytes::copy_from_slice(&r.bytes),
            first_offset: r.first_offset,
            next_offset: r.next_offset,
        });
        Ok((data, log.offsets()))
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
        if let Some(log) = log {
            let _ = log.close().await;
        }
        let dir = self.data_dir.join(tp.dir_name());
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Storage {
                tp: tp.to_string(),
                source: iouring_storage::Error::Io {
                    op: "deleting partition",
                    path: dir,
                    source: e,
                },
            }),
        }
    }

    /// Applies retention to every open partition; errors are logged per partition.
    pub async fn enforce_retention(&self, now_ms: i64) {
        let logs: Vec<(TopicPartition, PartitionLog)> = self.logs.borrow().iter().map(|(tp, l)| (tp.clone(), l.clone())).collect();
        for (tp, log) in logs {
            if let Err(e) = log.enforce_retention(now_ms).await {
                tracing::warn!(target: "shard", %tp, error = %e, "retention failed");
            }
        }
    }

    /// Commits and closes every log (clean shutdown).
    pub async fn close_all(&self) {
        let logs: Vec<(TopicPartition, PartitionLog)> = self.logs.borrow_mut().drain().collect();
        for (tp, log) in logs {
            if let Err(e) = log.close().await {
                tracing::warn!(target: "shard", %tp, error = %e, "closing partition failed");
            }
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
}
