//! Bounds of the shard runtime, each with its reason.

use std::time::Duration;

/// Messages queued on one mesh channel before a sender waits: backpressure between cores.
pub const MESH_CHANNEL_DEPTH_MAX: usize = 1024;

/// How long start-up waits for every executor to report that its reactor runs.
pub const STARTUP_WAIT_MAX: Duration = Duration::from_secs(30);

/// Longest long-poll wait one op may ask for; Kafka clients ask for at most a few seconds.
pub const WAIT_DATA_MAX: Duration = Duration::from_secs(60);

/// Threads of each shard's blocking pool (glommio's default is 1): a filesystem-wide commit
/// sync (`log_sync = "filesystem"`) runs there, and must not wait behind an unlink of a large
/// segment (hundreds of milliseconds with online discard), which also runs there.
pub const BLOCKING_THREADS_PER_SHARD: usize = 2;

/// Most partitions one shard owns. Each holds at least one write buffer.
pub const PARTITIONS_PER_SHARD_MAX: usize = 100_000;

/// Bytes of recently appended batches one shard keeps to serve tailing consumers without disk
/// I/O (see `batch_cache.rs`). A consumer that falls further behind than this reads the disk,
/// and at a high produce rate it does not catch up (see ARCHITECTURE.md, Measured hazards),
/// so the cache must outlast the stalls a shared machine has: 256 MiB is about 0.8 s of one
/// shard's half of 670 MB/s. With 64 MiB (0.2 s), 1 of 2 three-minute runs at 657,730 msg/s (soak
/// topic settings) and the harness soak lost the consumer to the disk; with 256 MiB neither of
/// 2 did, and 20 s runs showed no cost in latency (3 alternating runs each). Charged per batch
/// length plus a fixed overhead; a lower bound of what it keeps alive, since a cached batch
/// shares its produce request's frame.
pub const BATCH_CACHE_BYTES_PER_SHARD_DEFAULT: usize = 256 * 1024 * 1024;

/// Keys one compaction pass maps to their latest offset (16-byte hash and 8-byte offset each,
/// about 24 MiB of map at most, per shard, since a shard compacts one partition at a time).
/// Kafka bounds its cleaner's map the same way (`log.cleaner.dedupe.buffer.size`).
pub const COMPACTION_KEYS_MAX: usize = 500_000;

/// Bytes compaction reads from a segment at a time.
pub const COMPACTION_READ_BYTES: usize = 1024 * 1024;
