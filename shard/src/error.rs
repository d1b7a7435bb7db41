//! Errors of the shard runtime and of partition operations.

/// Result of a shard operation.
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting shard {shard}: {detail}")]
    Startup { shard: usize, detail: String },
    #[error("unknown partition {0}")]
    UnknownPartition(String),
    #[error("partition {tp}: {source}")]
    Storage { tp: String, source: iouring_storage::Error },
    #[error("shard {0} is gone")]
    ShardGone(usize),
    #[error("compacting {tp}: {detail}")]
    Compaction { tp: String, detail: String },
    #[error("shard {0} has no service registered yet (still starting)")]
    ServiceMissing(usize),
    #[error("shard {shard} owns {max} partitions already")]
    TooManyPartitions { shard: usize, max: usize },
}
