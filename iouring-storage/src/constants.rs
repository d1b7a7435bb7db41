//! Bounds of the partition log, each with the reason for its value.
//!
//! Configurable values are checked against these at `LogConfig::validate`; the
//! rest bound memory and work directly. Hitting a bound means backpressure or a
//! clear error, never unbounded growth.

/// Size of the Kafka v2 record batch header, up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;

/// Bytes before the CRC-covered region: base offset, length, leader epoch, magic, crc.
pub const BATCH_CRC_START: usize = 21;

/// Bytes of the batch that the `batchLength` field does not count (base offset and the field itself).
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;

/// Largest batch the log accepts at all, whatever the topic config says. Kafka's own
/// `message.max.bytes` tops out in practice far below this; it bounds one read and one scan step.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest segment file. Index entries store positions as u32, so a segment must stay below 4 GiB.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;

/// Smallest segment size accepted: below this, rolling dominates the cost of appending.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;

/// Largest write buffer per partition log: with `WRITES_IN_FLIGHT_MAX` buffers in flight this
/// bounds one log's buffered memory to about 16 MiB * 17.
pub const WRITE_BUFFER_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Smallest write buffer. One device block is the floor; 64 KiB keeps writes efficient.
pub const WRITE_BUFFER_BYTES_MIN: usize = 64 * 1024;

/// Most writes one log keeps in flight. Beyond this an append waits for the oldest write.
pub const WRITES_IN_FLIGHT_MAX: usize = 16;

/// Group commits one log runs at once. A second one lets appenders that just missed a commit
/// start the next while the first one's fdatasync runs: one log alone on its core, 8 appenders
/// of 16 KiB batches, made 0.79 and 0.87 of the raw disk with 2 against 0.59 and 0.54 with 1
/// (`append_throughput`, 2 alternating runs each). But while other logs on the thread commit,
/// the disk is busy anyway and a second fdatasync (each writes the inode, then flushes the
/// device cache) only adds requests: the broker's max-throughput workload (16 partitions)
/// produced 1243 to 1298 MB/s with 2 in flight everywhere and 1337 to 1442 MB/s with 1 (3
/// alternating runs each). So a log starts its second commit only while no other log on its
/// thread is committing.
pub const COMMITS_IN_FLIGHT_MAX: usize = 2;

/// Largest single read the log serves: bounds the memory one fetch can pin.
pub const READ_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Readers a log remembers for read-ahead (`read_ahead.rs`): a consumer group behind the tail,
/// plus the odd one-off reader (a lag probe, a second group) that must not make it forget.
pub const READ_AHEAD_STREAMS_MAX: usize = 4;

/// Windows read ahead of one reader: the one it reads from and the next, being read.
pub const READ_AHEAD_WINDOWS_MAX: usize = 2;

/// A window holds this many reads of the reader's last size, within the bounds below: enough
/// to overlap a few fetches' network and client time with the disk.
pub const READ_AHEAD_WINDOW_READS: usize = 8;

/// Smallest window: a reader of small fetches still gets disk reads several times larger,
/// and the thread budget below still covers every partition of a fetch spread over many. A
/// consumer of 1,000 partitions reads about 8 KiB of each per 8 MiB fetch: windows of 1 MiB
/// gave 32 partitions per thread windows and left the rest to reads of 8 KiB plus index slack,
/// which on the CI machine's disk were bound by requests a second, not bytes (a backlog of
/// 1,000 MB read at 97 to 112 MB/s, 1.8 bytes read per byte served); windows of 64 KiB cover
/// them all (138 MB/s, 1.2 bytes read per byte served, a fifth of the reads; single runs).
pub const READ_AHEAD_WINDOW_BYTES_MIN: usize = 64 * 1024;

/// Largest window.
pub const READ_AHEAD_WINDOW_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Read-ahead memory per thread, over all its logs: 8 readers of 1 MiB fetches with both
/// windows full. Beyond it, readers fall back to plain reads.
pub const READ_AHEAD_BYTES_PER_THREAD_MAX: usize = 64 * 1024 * 1024;

/// Window reads in flight per thread, over all its logs; the others wait their turn. A
/// consumer of 1,000 partitions behind the batch cache waits on hundreds of small windows per
/// fetch: at 16 instead of 4 it read 76.6 and 99.2 MB/s instead of 52.0 and 40.1 beside
/// producers at 270,000 to 310,000 msg/s (`3-thousand-partitions.toml`, `log_sync =
/// "filesystem"`, 2 alternating runs each). A backlog of 16 partitions, read in large windows,
/// hardly changed (`6-backlog-drain.toml --rate 550000`, 3 alternating runs each: drained in
/// 4.95, 5.00 and 4.71 s against 4.54, 3.91 and 4.67 s; publish p99 2.5, 4.0 and 2.6 s against
/// 3.8, 4.0 and 2.7 s).
pub const READ_AHEAD_READS_IN_FLIGHT_MAX: usize = 16;

/// A reader silent for this long has moved on (to the batch cache, or away): its windows may
/// be dropped to make room for another's.
pub const READ_AHEAD_IDLE_MS: u64 = 1000;

/// Chunk size used when scanning a segment (recovery, index rebuild, timestamp search).
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// Most index entries per segment: one per `index_interval_bytes` of a 4 GiB segment at the
/// smallest interval. Bounds the in-memory index.
pub const INDEX_ENTRIES_MAX: usize = (SEGMENT_BYTES_MAX / INDEX_INTERVAL_BYTES_MIN as u64) as usize;

/// Smallest distance between two sparse index entries.
pub const INDEX_INTERVAL_BYTES_MIN: u32 = 1024;

/// Preallocation step bounds: large steps keep ext4 O_DIRECT writes off the file-growing path.
pub const PREALLOCATE_STEP_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Batches remembered per idempotent producer for duplicate detection: Kafka's bound on
/// `max.in.flight.requests.per.connection` with idempotence, so every batch a producer may
/// still retry is recognised.
pub const PRODUCER_BATCHES_MAX: usize = 5;

/// Idempotent producers remembered per partition. Each costs about 200 bytes (with its
/// `PRODUCER_BATCHES_MAX` batches) in memory and 172 in the segment-roll snapshot, so this
/// bounds both at under 1 MiB per partition. At the bound, the producer whose last batch is
/// oldest is forgotten, as Kafka's `producer.id.expiration.ms` would forget it first; it may
/// then start again at any sequence.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 4096;

/// Buffer of a segment rewrite (compaction): one rewrite holds one, whatever the segment size.
pub const REWRITE_BUFFER_BYTES: usize = 1024 * 1024;

const _: () = assert!(BATCH_HEADER_BYTES > BATCH_CRC_START);
const _: () = assert!(REWRITE_BUFFER_BYTES % 4096 == 0);
const _: () = assert!(PRODUCER_BATCHES_MAX <= u8::MAX as usize);
const _: () = assert!(PRODUCERS_PER_PARTITION_MAX <= u32::MAX as usize);
const _: () = assert!(WRITE_BUFFER_BYTES_MIN % 4096 == 0);
const _: () = assert!(WRITE_BUFFER_BYTES_MAX % 4096 == 0);
const _: () = assert!(SCAN_CHUNK_BYTES % 4096 == 0);
const _: () = assert!(BATCH_BYTES_MAX <= READ_BYTES_MAX);
const _: () = assert!(READ_AHEAD_WINDOW_BYTES_MIN <= READ_AHEAD_WINDOW_BYTES_MAX);
// 1,000 partitions over two threads, each reader with both windows at the smallest size.
const _: () = assert!(500 * READ_AHEAD_WINDOWS_MAX * READ_AHEAD_WINDOW_BYTES_MIN <= READ_AHEAD_BYTES_PER_THREAD_MAX);
const _: () = assert!(READ_AHEAD_WINDOWS_MAX * READ_AHEAD_WINDOW_BYTES_MAX <= READ_AHEAD_BYTES_PER_THREAD_MAX);
const _: () = assert!(SEGMENT_BYTES_MIN % 4096 == 0);
