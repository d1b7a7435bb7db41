//! Bounds of the shard runtime, each with its reason.

use std::time::Duration;

/// Messages queued on one mesh channel before a sender waits: backpressure between cores.
pub const MESH_CHANNEL_DEPTH_MAX: usize = 1024;

/// How long start-up waits for every executor to report that its reactor runs.
pub const STARTUP_WAIT_MAX: Duration = Duration::from_secs(30);

/// Longest long-poll wait one op may ask for; Kafka clients ask for at most a few seconds.
pub const WAIT_DATA_MAX: Duration = Duration::from_secs(60);

/// Most partitions one shard owns. Each holds at least one write buffer.
pub const PARTITIONS_PER_SHARD_MAX: usize = 100_000;
