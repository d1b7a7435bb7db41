//! One shard's partitions: opening logs on first use, executing ops on them, and
//! background housekeeping (retention).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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
}

impl Partitions {
    pub(crate) fn new(shard: ShardId, data_dir: PathBuf, provider: LogConfigProvider) -> Self {
        Partitions {
            shard,
            data_dir,
            provider,
            logs: RefCell::new(HashMap::new()),
            open_lock: Semaphore::new(1),
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
        let log = self.get(tp).await?;
        let storage = |source| Error::Storage {
            tp: tp.to_string(),
            source,
        };
        let info = log.append(&batch, leader_epoch, now_ms).await.map_err(storage)?;
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

    async fn drop_partition(&self, tp: &TopicPartition) -> Result<()> {
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
