//! Every bound in the load generator, with its reason.

/// Requests in flight on one connection (`max_in_flight` in a workload). Kafka's producer allows
/// 5 by default; more than this only hides a slow broker behind client-side queueing.
pub const IN_FLIGHT_MAX: usize = 64;

/// Bytes of records a producer holds that are not yet sent (Kafka's `buffer.memory`, per
/// producer). Hitting it stops message generation until responses free a slot: backpressure,
/// and at a fixed rate the wait counts in the latency (coordinated omission is corrected).
pub const ACCUMULATOR_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Largest produce request built (several partitions' batches). Kafka's broker accepts 100 MiB
/// (`socket.request.max.bytes`); a few MiB amortise the request overhead already.
pub const REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;

/// `timeout_ms` of a produce request: how long the broker may wait for the acknowledgement
/// (Kafka's `request.timeout.ms` default).
pub const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// Largest response frame read. Fetch responses are asked for at most `FETCH_BYTES_MAX`; a
/// frame far beyond that is a protocol error, not something to allocate.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// `max_bytes` of one fetch: Kafka's `fetch.max.bytes` default, as librdkafka's. A consumer
/// reads at most this per round trip, so it is also the consumer's ceiling: with 8 MiB, the
/// consumer of `3-thousand-partitions.toml` made about 29 fetches a second, at most 245 MB/s
/// against 220 to 260 MB/s produced, and fell behind the batch cache in 3 of 5 runs (none of 5
/// with 50 MiB). A consumer that keeps up gets small responses either way.
pub const FETCH_BYTES_MAX: i32 = 50 * 1024 * 1024;

/// `partition_max_bytes` of one fetch (Kafka's `max.partition.fetch.bytes` default).
pub const PARTITION_FETCH_BYTES_MAX: i32 = 1024 * 1024;

/// `max_wait_ms` of a fetch: short, so that a consumer notices the end of a run quickly.
pub const FETCH_WAIT_MS: i32 = 100;

/// Largest message a workload may ask for (`message_size`): Kafka's default `max.message.bytes`
/// is about 1 MiB per batch.
pub const MESSAGE_BYTES_MAX: usize = 1024 * 1024;

/// Smallest message: the first 8 bytes of every value carry its intended send time, which
/// end-to-end latency is measured from.
pub const MESSAGE_BYTES_MIN: usize = 8;

/// Largest batch (`batch_bytes`), below the broker's `max.message.bytes`.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Producers or consumers per topic: each is at least one thread.
pub const CLIENTS_PER_TOPIC_MAX: u32 = 256;

/// Topics in a workload.
pub const TOPICS_MAX: u32 = 1024;

/// Partitions per topic.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 100_000;

/// Messages generated per pass of a producer's loop before it looks at its connections again,
/// so that sending is never starved by generation at maximum rate.
pub const MESSAGES_PER_PASS_MAX: usize = 1024;

/// Latencies are recorded in microseconds up to this (a minute); larger ones are clamped.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// Threads flush their local histograms and counters into the shared ones this often, so that
/// a hot loop never takes a lock per message.
pub const STATS_FLUSH_INTERVAL_MS: u64 = 50;

/// After the producers stop, consumers may take this long to read what was acknowledged.
pub const DRAIN_TIMEOUT_MS: u64 = 10_000;

/// How long a run waits for a new topic's partitions to have leaders.
pub const TOPIC_READY_TIMEOUT_MS: u64 = 30_000;

/// Socket read timeout: a broker silent this long is a failure, not a slow response.
pub const SOCKET_TIMEOUT_MS: u64 = 30_000;

/// The workload's duration and warm-up, in seconds: a day is more than any benchmark needs.
pub const DURATION_S_MAX: u64 = 24 * 3600;

/// Largest `consumer_backlog_mb`: 1 TB, more than any disk here holds; the backlog phase also
/// ends when the producers stop.
pub const CONSUMER_BACKLOG_MB_MAX: u64 = 1_000_000;

const _: () = assert!(BATCH_BYTES_MAX <= REQUEST_BYTES_MAX);
const _: () = assert!(MESSAGE_BYTES_MAX <= BATCH_BYTES_MAX);
const _: () = assert!((PARTITION_FETCH_BYTES_MAX as usize) <= (FETCH_BYTES_MAX as usize));
const _: () = assert!(FETCH_BYTES_MAX as usize <= RESPONSE_BYTES_MAX);

/// Largest key space whose keys and partitions are computed once, before a run, rather than
/// per message (`keys`): a million keys take about 18 MB, shared by all producers.
pub const KEY_TABLE_KEYS_MAX: u64 = 1 << 20;

/// Kafka's error code for a fetch position outside the partition's log (OFFSET_OUT_OF_RANGE).
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
