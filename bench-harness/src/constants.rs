//! Every bound of the benchmark runner, with its reason.

use std::time::Duration;

/// How long each raw disk measurement runs: long enough to pass the device's write cache
/// warm-up, short enough that four measurements fit a CI run.
pub const DISK_MEASURE: Duration = Duration::from_secs(3);

/// The raw O_DIRECT read: 16 reads of 512 KiB in flight, the best fio found here (1838 MB/s
/// over segment files one day, 1392 over a fresh file another, when this reader gave 1383). The
/// broker's read-ahead keeps up to 4 windows of up to 4 MiB in flight per shard, so the disk
/// sees at least that depth; 1 MiB reads split into two requests on the CI machine's virtio
/// disk (254 segments at most, see ARCHITECTURE.md) and read slower (1347 MB/s at depth 16,
/// 1280 at the append's depth of 4, single runs).
pub const DISK_READ_BYTES: usize = 512 * 1024;
pub const DISK_READ_DEPTH: usize = 16;

/// The raw append file never grows past this, whatever the device's speed, so the baseline
/// cannot fill a shared disk.
pub const DISK_BYTES_MAX: u64 = 8 * 1024 * 1024 * 1024;

/// fdatasync latency: iterations of write-then-fdatasync, at most, and for at most this long.
pub const FSYNC_ITERATIONS_MAX: usize = 5_000;
pub const FSYNC_MEASURE: Duration = Duration::from_secs(2);

/// Bytes written before each fdatasync: one small aligned block, the floor of what a group
/// commit writes.
pub const FSYNC_WRITE_BYTES: usize = 4096;

/// Loopback TCP bandwidth: one connection, writes of this size, for this long.
pub const TCP_CHUNK_BYTES: usize = 1024 * 1024;
pub const TCP_MEASURE: Duration = Duration::from_secs(2);

/// memcpy bandwidth: copies between two buffers of this size (far larger than the caches).
pub const MEMCPY_BYTES: usize = 64 * 1024 * 1024;
pub const MEMCPY_MEASURE: Duration = Duration::from_secs(1);

/// Fallback O_DIRECT alignment, only if the device's logical block size cannot be read.
pub const ALIGNMENT_FALLBACK_BYTES: usize = 4096;

/// The broker's memory and I/O counters are sampled this often.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// How long the broker may take to start (recovery of an empty directory takes milliseconds;
/// the rest is slack for a loaded machine).
pub const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the broker may take to stop after SIGTERM (it makes everything durable first).
pub const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// librdkafka's local queue (`queue.buffering.max.kbytes`): like perf's accumulator, a bound
/// on what the client holds before the broker acknowledges it.
pub const RDKAFKA_QUEUE_KBYTES_MAX: u32 = 16 * 1024;

/// Latencies in µs up to a minute in the librdkafka driver's histogram.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// How often the brokers the harness starts apply retention. At hundreds of MB/s, Kafka's
/// 5-minute default let a soak's topics fill 62 GB of free disk in 94 s, before retention
/// first ran (and the broker then crashed in the disk-full path).
pub const RETENTION_CHECK_INTERVAL_MS: u64 = 1000;

/// A soak run's topics keep this much per partition (`retention.bytes`), in segments of
/// `SOAK_SEGMENT_BYTES`: 16 partitions then hold at most about 5 GiB on disk.
pub const SOAK_RETENTION_BYTES: u64 = 256 * 1024 * 1024;
pub const SOAK_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Targets from the issue, printed as PASS or MISS; they never fail a run.
pub const TARGET_APPEND_RATIO_MIN: f64 = 0.70;
pub const TARGET_PUBLISH_P99_US_MAX: u64 = 5_000;
pub const TARGET_PUBLISH_P999_US_MAX: u64 = 20_000;
pub const TARGET_END_TO_END_P99_US_MAX: u64 = 10_000;

/// Resident memory counts as flat over the soak while it grows less than this.
pub const TARGET_MEMORY_GROWTH_MAX: f64 = 0.10;

/// The soak's first minute is warm-up for memory (the batch cache fills, buffers settle); the
/// memory rule starts after it.
pub const SOAK_SETTLE_S: f64 = 60.0;

/// The memory rule compares the median resident memory of a window this long after the
/// settling minute with that of the soak's last window of the same length. Memory at a steady
/// load moves by a fifth within seconds (buffers, the allocator), so two single samples could
/// decide the rule by where each happened to fall; a median of about 60 samples (one a
/// second) cannot, and a leak still shows as the later window sitting higher.
pub const SOAK_MEMORY_WINDOW_S: f64 = 60.0;

const _: () = assert!(FSYNC_WRITE_BYTES % 512 == 0);
const _: () = assert!(MEMCPY_BYTES > 0 && TCP_CHUNK_BYTES > 0);

/// The largest request frame the producer sink reads (perf's requests stay under 4 MiB).
pub const SINK_REQUEST_BYTES_MAX: i32 = 64 * 1024 * 1024;
/// The most partitions a sink topic may have (perf's workloads allow 100,000): a larger count
/// is refused rather than allocated.
pub const SINK_PARTITIONS_MAX: i32 = 100_000;

/// perf alone against the sink: warm-up and measured seconds, at most (shorter if the run's
/// `--warmup-s` or `--duration-s` is).
pub const PERF_ALONE_WARMUP_S: u64 = 2;
pub const PERF_ALONE_DURATION_S: u64 = 10;

/// perf alone sending at least this many times as fast as in a run against a broker means
/// perf's own cost did not set that run's pace.
pub const PERF_HEADROOM_MIN: f64 = 1.5;
