//! The thread-per-core runtime: one pinned glommio executor per core, partition placement, the
//! cross-core mesh, and each core's partitions.
//!
//! Architecture invariant: shards share nothing. A partition's log is touched only by its owner
//! shard; other shards reach it by message passing over the mesh. No lock on the data path.
//!
//! Architecture invariant: this crate does not know the Kafka wire protocol; it moves record
//! batches and offsets. The broker maps them to Kafka requests and error codes.

mod batch_cache;
pub mod compaction;
pub mod constants;
mod error;
mod mesh;
pub mod ops;
mod partitions;
pub mod placement;
mod runtime;
mod topic_partition;

pub use batch_cache::BatchCacheStats;
pub use error::{Error, Result};
pub use ops::{CommittedRead, Op, OpResult, ReadData, Task, TaskFuture, TaskOutput};
pub use partitions::{remove_deleted, LocalRead, LogConfigProvider, Partitions, DELETED_SUFFIX};
pub use runtime::{start, Router, RuntimeConfig, ShardContext, ShardSet, MESH_MESSAGES_METRIC};
pub use topic_partition::{ShardId, TopicPartition};
