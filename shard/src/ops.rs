//! Operations one shard asks of a partition's owner, and their results. They cross threads,
//! so they own their data (`Bytes`), never a borrowed or thread-bound buffer.

use std::any::Any;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use iouring_storage::{AbortedTxn, AppendInfo, LogOffsets, TimestampHit};

use crate::{Result, TopicPartition};

/// One operation on one partition (or, for `WaitData`, several of the owner's partitions).
#[derive(Debug)]
pub enum Op {
    /// Append one record batch. With `durable`, answer after the group commit that covers it;
    /// without, answer once appended and commit in the background. An idempotent producer's
    /// retry of a batch already in the log is answered with the original offsets
    /// (`AppendInfo::duplicate`), durable ones when `durable`.
    Append {
        tp: TopicPartition,
        batch: Bytes,
        leader_epoch: i32,
        now_ms: i64,
        durable: bool,
    },
    /// Whole durable batches from `offset`, up to `max_bytes` (the first batch whole).
    Read {
        tp: TopicPartition,
        offset: u64,
        max_bytes: usize,
    },
    /// As `Read`, for a read_committed consumer: only batches below the last stable offset,
    /// with the aborted transactions that overlap the batches returned.
    ReadCommitted {
        tp: TopicPartition,
        offset: u64,
        max_bytes: usize,
    },
    /// Writes a transaction marker (commit or abort) for the producer's transaction on this
    /// partition, answered once it is durable with its offset. Refused below the producer's
    /// epoch (`ProducerError::InvalidEpoch`) or the last marker's coordinator epoch
    /// (`ProducerError::CoordinatorFenced`); written even if no transaction is open, as Kafka
    /// does.
    WriteTxnMarker {
        tp: TopicPartition,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    },
    Offsets {
        tp: TopicPartition,
    },
    /// The first batch whose max timestamp is at or after `timestamp`.
    FindTimestamp {
        tp: TopicPartition,
        timestamp: i64,
    },
    /// The batch with the largest max timestamp.
    MaxTimestamp {
        tp: TopicPartition,
    },
    /// Completes when any watched partition has durable data at or after its offset, or after
    /// `timeout`.
    WaitData {
        watches: Vec<(TopicPartition, u64)>,
        timeout: Duration,
    },
    /// Closes the partition's log and deletes its directory.
    Drop {
        tp: TopicPartition,
    },
    /// Applies the partition's current configuration, read from the provider, to its open log
    /// (see `PartitionLog::set_config`); a log not open yet opens with it anyway. Reading it
    /// here rather than carrying it keeps two reconfigures that cross on the mesh from leaving
    /// the older config in force.
    Reconfigure {
        tp: TopicPartition,
    },
    /// Raises the log start to `before` (whole segments below it are deleted), or to the
    /// durable end when `None`.
    DeleteRecords {
        tp: TopicPartition,
        before: Option<u64>,
    },
    /// Runs work of the crate above on this shard, with the service it registered here
    /// (`Partitions::set_service`): how the broker reaches state that one shard owns and that
    /// is not a partition log, such as a consumer group's coordinator.
    Run(Task),
}

/// What a task returns: the caller downcasts it to the type it expects.
pub type TaskOutput = Box<dyn Any + Send>;

/// The future a task makes on the owner shard; it may hold thread-bound state.
pub type TaskFuture = futures::future::LocalBoxFuture<'static, TaskOutput>;

/// Work sent to a shard. The closure crosses threads, so it owns what it captures; the future
/// it makes runs on the owner shard only.
pub struct Task(pub Box<dyn FnOnce(Rc<dyn Any>) -> TaskFuture + Send>);

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Task")
    }
}

/// Whole batches read from a partition, as chunks to send in order: one chunk for a read
/// from the log, two per batch for one served by the batch cache (the stamped header prefix
/// and the rest of the producer's bytes), so cache hits cross shards without a copy.
#[derive(Debug, Clone)]
pub struct ReadData {
    pub chunks: Vec<Bytes>,
    pub first_offset: u64,
    pub next_offset: u64,
}

impl ReadData {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batches in one buffer: free for one chunk, a copy otherwise. For callers that
    /// parse the bytes rather than send them.
    pub fn contiguous(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            chunks => {
                let mut joined = Vec::with_capacity(self.len());
                for c in chunks {
                    joined.extend_from_slice(c);
                }
                Bytes::from(joined)
            }
        }
    }
}

/// What a read_committed read gave: batches below the last stable offset, the log's offsets,
/// and the aborted transactions overlapping the batches returned (empty when there are none).
#[derive(Debug)]
pub struct CommittedRead {
    pub data: Option<ReadData>,
    pub offsets: LogOffsets,
    pub aborted: Vec<AbortedTxn>,
}

/// The result of one `Op`, in the same position as the op.
#[derive(Debug)]
pub enum OpResult {
    Appended(Result<(AppendInfo, LogOffsets)>),
    Read(Result<(Option<ReadData>, LogOffsets)>),
    ReadCommitted(Result<CommittedRead>),
    /// The marker's offset, durable.
    MarkerWritten(Result<u64>),
    Offsets(Result<LogOffsets>),
    Timestamp(Result<Option<TimestampHit>>),
    Waited,
    Dropped(Result<()>),
    Reconfigured(Result<()>),
    /// The offsets after the deletion; `log_start` is the new start.
    RecordsDeleted(Result<LogOffsets>),
    /// What a task returned; an error when the shard has no service registered yet.
    Ran(Result<TaskOutput>),
}
