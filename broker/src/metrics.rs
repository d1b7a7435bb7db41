//! The broker's metrics: every name in one place, the Prometheus recorder, the handles each
//! shard registers once (with a `shard` label, so no two cores ever bump the same atomic) and
//! bumps per batch or per request, never per record, and the gauges sampled off the hot path.
//! `monitoring/METRICS.md` maps each name to its Amazon MSK CloudWatch counterpart.
//!
//! With `metrics_enabled = false` no recorder is installed: every handle is the facade's no-op
//! and the per-topic lookups are skipped, which is what the overhead benchmark compares against.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use shard::TopicPartition;

/// Metric names, Prometheus style: snake case, unit last, `_total` on counters.
pub mod names {
    pub const BYTES_IN: &str = "kafka_bytes_in_total";
    pub const BYTES_OUT: &str = "kafka_bytes_out_total";
    pub const MESSAGES_IN: &str = "kafka_messages_in_total";
    pub const MESSAGES_OUT: &str = "kafka_messages_out_total";
    pub const TOPIC_BYTES_IN: &str = "kafka_topic_bytes_in_total";
    pub const TOPIC_BYTES_OUT: &str = "kafka_topic_bytes_out_total";
    pub const TOPIC_MESSAGES_IN: &str = "kafka_topic_messages_in_total";
    pub const TOPIC_MESSAGES_OUT: &str = "kafka_topic_messages_out_total";
    pub const REQUESTS: &str = "kafka_requests_total";
    pub const REQUEST_ERRORS: &str = "kafka_request_errors_total";
    pub const REQUEST_DURATION: &str = "kafka_request_duration_seconds";
    pub const REQUEST_QUEUE_DURATION: &str = "kafka_request_queue_duration_seconds";
    pub const CONNECTIONS: &str = "kafka_connections";
    pub const UNDER_REPLICATED: &str = "kafka_under_replicated_partitions";
    pub const OFFLINE: &str = "kafka_offline_partitions";
    pub const UNDER_MIN_ISR: &str = "kafka_under_min_isr_partitions";
    pub const LOG_SIZE: &str = "kafka_log_size_bytes";
    pub const CONSUMER_LAG_OFFSETS: &str = "kafka_consumergroup_lag_offsets";
    pub const CONSUMER_LAG_SECONDS: &str = "kafka_consumergroup_lag_seconds";
    pub const PARTITIONS: &str = "broker_partitions";
    pub const GROUP_COMMITS: &str = "broker_group_commits_total";
    pub const GROUP_COMMIT_BYTES: &str = "broker_group_commit_bytes_total";
    pub const FSYNC_MEAN_SECONDS: &str = "broker_group_commit_fsync_mean_seconds";
    pub const APPENDED_BATCHES: &str = "broker_appended_batches_total";
    pub const SEGMENTS_RECYCLED: &str = "broker_segments_recycled_total";
    pub const BATCH_CACHE_HITS: &str = "broker_batch_cache_hits_total";
    pub const BATCH_CACHE_MISSES: &str = "broker_batch_cache_misses_total";
    pub const BATCH_CACHE_BYTES: &str = "broker_batch_cache_bytes";
    pub const READ_AHEAD_BYTES: &str = "broker_read_ahead_bytes";
    pub const READ_AHEAD_SERVED: &str = "broker_read_ahead_served_total";
    pub const WRITE_BUFFER_BYTES_MAX: &str = "broker_write_buffer_bytes_max";
    pub const MESH_MESSAGES: &str = shard::MESH_MESSAGES_METRIC;
    pub const DISK_USED: &str = "broker_disk_used_bytes";
    pub const DISK_FREE: &str = "broker_disk_free_bytes";
    pub const DISK_SIZE: &str = "broker_disk_size_bytes";
    pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
    pub const READY: &str = "broker_ready";
}

/// Histogram buckets for durations, in seconds: from 100 µs (a cached fetch, an ApiVersions)
/// to 30 s (the longest long poll a fetch may ask for).
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often each shard samples its gauges (partitions, log sizes, cache, group commits).
/// Prometheus scrapes every 15 s or more; a walk over a shard's partitions every 5 s is cheap
/// against that and keeps the values fresh.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// A gauge nobody has set for this long disappears from `/metrics`: the size of a deleted
/// partition, the lag of a group that is gone. Every live gauge is set at least once per
/// `SAMPLE_INTERVAL`, per scrape (disk, memory, ready) or per lag evaluation; a cached gauge
/// handle that expired would never come back, so each one is set by the sampler.
pub const GAUGE_IDLE_MAX: Duration = Duration::from_secs(120);

/// Installs the Prometheus recorder as the process's metrics recorder and describes every
/// metric. Call once, before the shards start, so their handles reach it.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(SECONDS_BUCKETS)?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_MAX))
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_counter!(
        BYTES_IN,
        Unit::Bytes,
        "Record batch bytes appended by produce requests (BytesInPerSec)."
    );
    describe_counter!(
        BYTES_OUT,
        Unit::Bytes,
        "Record batch bytes sent in fetch responses (BytesOutPerSec)."
    );
    describe_counter!(MESSAGES_IN, Unit::Count, "Records appended by produce requests (MessagesInPerSec).");
    describe_counter!(MESSAGES_OUT, Unit::Count, "Records sent in fetch responses.");
    describe_counter!(TOPIC_BYTES_IN, Unit::Bytes, "Record batch bytes appended, per topic.");
    describe_counter!(TOPIC_BYTES_OUT, Unit::Bytes, "Record batch bytes sent to consumers, per topic.");
    describe_counter!(TOPIC_MESSAGES_IN, Unit::Count, "Records appended, per topic.");
    describe_counter!(TOPIC_MESSAGES_OUT, Unit::Count, "Records sent to consumers, per topic.");
    describe_counter!(REQUESTS, Unit::Count, "Requests handled, per API.");
    describe_counter!(
        REQUEST_ERRORS,
        Unit::Count,
        "Requests that failed or answered an error code, per API."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from a request read whole to its response ready, per API."
    );
    describe_histogram!(
        REQUEST_QUEUE_DURATION,
        Unit::Seconds,
        "Time from a request read whole to its handler starting, per API."
    );
    describe_gauge!(CONNECTIONS, Unit::Count, "Open client connections.");
    describe_gauge!(
        UNDER_REPLICATED,
        Unit::Count,
        "Partitions with fewer in-sync replicas than replicas (0 on one node)."
    );
    describe_gauge!(OFFLINE, Unit::Count, "Partitions without a leader (0 on one node).");
    describe_gauge!(
        UNDER_MIN_ISR,
        Unit::Count,
        "Partitions with fewer in-sync replicas than min.insync.replicas (0 on one node)."
    );
    describe_gauge!(LOG_SIZE, Unit::Bytes, "Bytes of a partition's log on disk.");
    describe_gauge!(
        CONSUMER_LAG_OFFSETS,
        Unit::Count,
        "Offsets between a partition's high watermark and a group's committed offset (OffsetLag)."
    );
    describe_gauge!(
        CONSUMER_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest record a group has not committed, 0 when caught up (EstimatedTimeLag)."
    );
    describe_gauge!(PARTITIONS, Unit::Count, "Partitions open on a shard (PartitionCount).");
    describe_counter!(
        GROUP_COMMITS,
        Unit::Count,
        "Group commits, each one fdatasync of a partition's active segment."
    );
    describe_counter!(GROUP_COMMIT_BYTES, Unit::Bytes, "Bytes made durable by group commits.");
    describe_gauge!(
        FSYNC_MEAN_SECONDS,
        Unit::Seconds,
        "Mean fdatasync time of the group commits in the last sample interval."
    );
    describe_counter!(APPENDED_BATCHES, Unit::Count, "Record batches appended to logs.");
    describe_counter!(
        SEGMENTS_RECYCLED,
        Unit::Count,
        "New segments that reused the file of a segment retention deleted."
    );
    describe_counter!(BATCH_CACHE_HITS, Unit::Count, "Reads served by the shard's batch cache.");
    describe_counter!(
        BATCH_CACHE_MISSES,
        Unit::Count,
        "Reads of durable data the batch cache could not serve."
    );
    describe_gauge!(BATCH_CACHE_BYTES, Unit::Bytes, "Memory charged to the shard's batch cache.");
    describe_gauge!(
        READ_AHEAD_BYTES,
        Unit::Bytes,
        "Memory held by segment bytes read ahead of readers behind the batch cache."
    );
    describe_counter!(
        READ_AHEAD_SERVED,
        Unit::Count,
        "Log reads served from bytes read ahead, without waiting for a disk read of their own."
    );
    describe_gauge!(
        WRITE_BUFFER_BYTES_MAX,
        Unit::Bytes,
        "Most memory the shard's logs may hold in write buffers."
    );
    describe_counter!(
        MESH_MESSAGES,
        Unit::Count,
        "Messages sent to other shards over the cross-core mesh."
    );
    describe_gauge!(DISK_USED, Unit::Bytes, "Bytes of the logs a shard owns.");
    describe_gauge!(DISK_FREE, Unit::Bytes, "Free bytes on the data directory's filesystem.");
    describe_gauge!(DISK_SIZE, Unit::Bytes, "Size of the data directory's filesystem.");
    describe_gauge!(RESIDENT_MEMORY, Unit::Bytes, "Resident memory of the broker process.");
    describe_gauge!(READY, Unit::Count, "1 once every shard has recovered and listens, else 0.");
}

/// Publishes one consumer group's lag on one partition. The group coordinator calls this for
/// every partition a group has committed an offset for, each time it evaluates lag (at least
/// once per `GAUGE_IDLE_MAX`, or the series disappears; that is also how a deleted group's
/// series go away). `lag_offsets` is the high watermark minus the committed offset (MSK
/// OffsetLag); `lag_seconds` is now minus the timestamp of the batch holding the committed
/// offset, 0 when the group has caught up (MSK EstimatedTimeLag; see
/// `groups::Coordinator::publish_lag`). Not on any hot
/// path: labels are allocated per call.
pub fn record_consumer_lag(group: &str, topic: &str, partition: i32, lag_offsets: u64, lag_seconds: f64) {
    let labels = [
        ("group", group.to_owned()),
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ];
    metrics::gauge!(names::CONSUMER_LAG_OFFSETS, &labels).set(lag_offsets as f64);
    metrics::gauge!(names::CONSUMER_LAG_SECONDS, &labels).set(lag_seconds);
}

/// One API's handles on one shard.
struct ApiMetrics {
    requests: Counter,
    errors: Counter,
    duration: Histogram,
    queue: Histogram,
}

/// One topic's handles on one shard.
struct TopicMetrics {
    bytes_in: Counter,
    bytes_out: Counter,
    messages_in: Counter,
    messages_out: Counter,
}

/// One shard's metric handles, registered once and bumped without contention: each carries
/// this shard's label, so its atomic is touched by this core only (and read by the scrape).
pub struct ShardMetrics {
    enabled: bool,
    shard: String,
    bytes_in: Counter,
    bytes_out: Counter,
    messages_in: Counter,
    messages_out: Counter,
    connections: Gauge,
    /// Indexed by API key.
    apis: Vec<Option<ApiMetrics>>,
    /// Registered on a topic's first batch through this shard.
    topics: RefCell<HashMap<String, TopicMetrics>>,
}

impl ShardMetrics {
    pub fn new(shard: usize, enabled: bool) -> ShardMetrics {
        let label = shard.to_string();
        let s = || [("shard", label.clone())];
        let max_key = crate::handlers::APIS.iter().map(|&(k, _, _)| k as i16).max().unwrap_or(0);
        let mut apis: Vec<Option<ApiMetrics>> = (0..=max_key).map(|_| None).collect();
        for &(key, _, _) in crate::handlers::APIS {
            let labels = [("api", format!("{key:?}")), ("shard", label.clone())];
            apis[key as i16 as usize] = Some(ApiMetrics {
                requests: metrics::counter!(names::REQUESTS, &labels),
                errors: metrics::counter!(names::REQUEST_ERRORS, &labels),
                duration: metrics::histogram!(names::REQUEST_DURATION, &labels),
                queue: metrics::histogram!(names::REQUEST_QUEUE_DURATION, &labels),
            });
        }
        ShardMetrics {
            enabled,
            bytes_in: metrics::counter!(names::BYTES_IN, &s()),
            bytes_out: metrics::counter!(names::BYTES_OUT, &s()),
            messages_in: metrics::counter!(names::MESSAGES_IN, &s()),
            messages_out: metrics::counter!(names::MESSAGES_OUT, &s()),
            connections: metrics::gauge!(names::CONNECTIONS, &s()),
            shard: label,
            apis,
            topics: RefCell::new(HashMap::new()),
        }
    }

    fn with_topic(&self, topic: &str, f: impl FnOnce(&TopicMetrics)) {
        let mut topics = self.topics.borrow_mut();
        if let Some(t) = topics.get(topic) {
            f(t);
            return;
        }
        let labels = [("topic", topic.to_owned()), ("shard", self.shard.clone())];
        let t = topics.entry(topic.to_owned()).or_insert_with(|| TopicMetrics {
            bytes_in: metrics::counter!(names::TOPIC_BYTES_IN, &labels),
            bytes_out: metrics::counter!(names::TOPIC_BYTES_OUT, &labels),
            messages_in: metrics::counter!(names::TOPIC_MESSAGES_IN, &labels),
            messages_out: metrics::counter!(names::TOPIC_MESSAGES_OUT, &labels),
        });
        f(t);
    }

    /// One batch of `messages` records and `bytes` bytes appended to `topic`.
    pub fn produced(&self, topic: &str, bytes: u64, messages: u64) {
        if !self.enabled {
            return;
        }
        self.bytes_in.increment(bytes);
        self.messages_in.increment(messages);
        self.with_topic(topic, |t| {
            t.bytes_in.increment(bytes);
            t.messages_in.increment(messages);
        });
    }

    /// Batches of `messages` records and `bytes` bytes of `topic` put in a fetch response.
    pub fn fetched(&self, topic: &str, bytes: u64, messages: u64) {
        if !self.enabled {
            return;
        }
        self.bytes_out.increment(bytes);
        self.messages_out.increment(messages);
        self.with_topic(topic, |t| {
            t.bytes_out.increment(bytes);
            t.messages_out.increment(messages);
        });
    }

    fn api(&self, api: ApiKey) -> Option<&ApiMetrics> {
        if !self.enabled {
            return None;
        }
        self.apis.get(api as i16 as usize).and_then(Option::as_ref)
    }

    /// A request's handler starts, `waited` after the request was read whole.
    pub fn request_started(&self, api: ApiKey, waited: Duration) {
        if let Some(a) = self.api(api) {
            a.requests.increment(1);
            a.queue.record(waited.as_secs_f64());
        }
    }

    /// A request's response is ready (or it failed), `took` after it was read whole.
    pub fn request_finished(&self, api: ApiKey, took: Duration, failed: bool) {
        if let Some(a) = self.api(api) {
            a.duration.record(took.as_secs_f64());
            if failed {
                a.errors.increment(1);
            }
        }
    }

    /// A request answered with an error code for at least one of its partitions.
    pub fn request_error(&self, api: ApiKey) {
        if let Some(a) = self.api(api) {
            a.errors.increment(1);
        }
    }

    pub fn set_connections(&self, open: usize) {
        self.connections.set(open as f64);
    }
}

/// Cumulative counters of a shard's logs, summed.
#[derive(Debug, Default, Clone, Copy)]
struct LogTotals {
    group_commits: u64,
    fsync_us: u64,
    committed_bytes: u64,
    appended_batches: u64,
    segments_recycled: u64,
}

impl LogTotals {
    fn add(&mut self, s: &iouring_storage::LogStats) {
        self.group_commits += s.group_commits;
        self.fsync_us += s.fsync_us_total;
        self.committed_bytes += s.committed_bytes;
        self.appended_batches += s.appended_batches;
        self.segments_recycled += s.segments_recycled;
    }

    fn absorb(&mut self, other: &LogTotals) {
        self.group_commits += other.group_commits;
        self.fsync_us += other.fsync_us;
        self.committed_bytes += other.committed_bytes;
        self.appended_batches += other.appended_batches;
        self.segments_recycled += other.segments_recycled;
    }
}

/// Samples one shard's gauges and log counters every `SAMPLE_INTERVAL` until `stop` is set.
/// Log counters live in each log (iouring-storage knows nothing of metrics); a partition that
/// closes keeps counting through the last totals seen for it, so the shard's counters never
/// go backwards when a topic is deleted.
pub async fn run_sampler(broker: Rc<crate::server::Broker>, stop: std::sync::Arc<AtomicBool>) {
    let (shard, partitions) = (broker.shard.0, broker.partitions.clone());
    let s = || [("shard", shard.to_string())];
    let partitions_gauge = metrics::gauge!(names::PARTITIONS, &s());
    let disk_used = metrics::gauge!(names::DISK_USED, &s());
    let cache_bytes = metrics::gauge!(names::BATCH_CACHE_BYTES, &s());
    let write_buffers = metrics::gauge!(names::WRITE_BUFFER_BYTES_MAX, &s());
    let cache_hits = metrics::counter!(names::BATCH_CACHE_HITS, &s());
    let cache_misses = metrics::counter!(names::BATCH_CACHE_MISSES, &s());
    let read_ahead_bytes = metrics::gauge!(names::READ_AHEAD_BYTES, &s());
    let read_ahead_served = metrics::counter!(names::READ_AHEAD_SERVED, &s());
    let group_commits = metrics::counter!(names::GROUP_COMMITS, &s());
    let commit_bytes = metrics::counter!(names::GROUP_COMMIT_BYTES, &s());
    let appended = metrics::counter!(names::APPENDED_BATCHES, &s());
    let recycled = metrics::counter!(names::SEGMENTS_RECYCLED, &s());
    // The facade's counters are integers, so fsync time is published as the mean over the
    // last interval rather than as a seconds counter.
    let fsync_mean = metrics::gauge!(names::FSYNC_MEAN_SECONDS, &s());
    let mut previous = LogTotals::default();
    let mut sizes: HashMap<TopicPartition, (Gauge, LogTotals)> = HashMap::new();
    let mut retired = LogTotals::default();
    loop {
        let open = partitions.open_partitions();
        let mut totals = retired;
        let mut used = 0u64;
        let mut buffers = 0u64;
        let mut seen = std::collections::HashSet::with_capacity(open.len());
        for tp in open {
            // Open already: `get` answers from the map without I/O.
            let Ok(log) = partitions.get(&tp).await else { continue };
            let stats = log.stats();
            let config = log.config();
            buffers += ((config.writes_in_flight_max + 1) * config.write_buffer_bytes) as u64;
            used += stats.size_bytes;
            let mut now = LogTotals::default();
            now.add(&stats);
            totals.add(&stats);
            let entry = sizes.entry(tp.clone()).or_insert_with(|| {
                let labels = [("topic", tp.topic.to_string()), ("partition", tp.partition.to_string())];
                (metrics::gauge!(names::LOG_SIZE, &labels), LogTotals::default())
            });
            entry.0.set(stats.size_bytes as f64);
            entry.1 = now;
            seen.insert(tp);
        }
        sizes.retain(|tp, (_, last)| {
            let keep = seen.contains(tp);
            if !keep {
                retired.absorb(last);
            }
            keep
        });
        partitions_gauge.set(seen.len() as f64);
        // Set on every change too; set here as well so that it never goes idle and expires.
        broker.metrics.set_connections(broker.open_connections());
        disk_used.set(used as f64);
        write_buffers.set(buffers as f64);
        let cache = partitions.batch_cache_stats();
        cache_bytes.set(cache.bytes as f64);
        cache_hits.absolute(cache.hits);
        cache_misses.absolute(cache.misses);
        let read_ahead = iouring_storage::read_ahead_stats();
        read_ahead_bytes.set(read_ahead.bytes as f64);
        read_ahead_served.absolute(read_ahead.reads_served);
        group_commits.absolute(totals.group_commits);
        commit_bytes.absolute(totals.committed_bytes);
        appended.absolute(totals.appended_batches);
        recycled.absolute(totals.segments_recycled);
        let commits = totals.group_commits.saturating_sub(previous.group_commits);
        let fsync_us = totals.fsync_us.saturating_sub(previous.fsync_us);
        fsync_mean.set(if commits == 0 {
            0.0
        } else {
            fsync_us as f64 / commits as f64 / 1e6
        });
        previous = totals;
        if shard == 0 {
            // One node, no replication: every partition has its leader and all its replicas.
            // The series exist so that dashboards and alerts work unchanged when replication
            // lands.
            for name in [names::UNDER_REPLICATED, names::OFFLINE, names::UNDER_MIN_ISR] {
                metrics::gauge!(name).set(0.0);
            }
        }
        let tick = glommio::timer::sleep(SAMPLE_INTERVAL);
        futures::pin_mut!(tick);
        let halt = crate::server::stopped(&stop);
        futures::pin_mut!(halt);
        if let futures::future::Either::Right(_) = futures::future::select(tick, halt).await {
            return;
        }
    }
}

/// Gauges read at scrape time, on the admin thread: the data directory's filesystem and the
/// process's resident memory.
pub fn sample_process(data_dir: &std::path::Path, ready: bool) {
    match rustix::fs::statvfs(data_dir) {
        Ok(st) => {
            let block = st.f_frsize.max(1);
            metrics::gauge!(names::DISK_FREE).set((st.f_bavail.saturating_mul(block)) as f64);
            metrics::gauge!(names::DISK_SIZE).set((st.f_blocks.saturating_mul(block)) as f64);
        }
        Err(e) => tracing::debug!(target: "broker", error = %e, "statvfs of the data directory failed"),
    }
    if let Some(rss) = resident_bytes() {
        metrics::gauge!(names::RESIDENT_MEMORY).set(rss as f64);
    }
    metrics::gauge!(names::READY).set(if ready { 1.0 } else { 0.0 });
}

/// Resident set size from `/proc/self/statm` (second field, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(f: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, f);
        handle.render()
    }

    #[test]
    fn consumer_lag_is_published_under_the_documented_names_and_labels() {
        let text = rendered(|| record_consumer_lag("billing", "orders", 3, 42, 1.5));
        assert!(
            text.contains("kafka_consumergroup_lag_offsets{group=\"billing\",topic=\"orders\",partition=\"3\"} 42\n"),
            "{text}"
        );
        assert!(
            text.contains("kafka_consumergroup_lag_seconds{group=\"billing\",topic=\"orders\",partition=\"3\"} 1.5\n"),
            "{text}"
        );
    }

    #[test]
    fn batches_count_per_topic_and_broker_wide_and_nothing_when_disabled() {
        let text = rendered(|| {
            let on = ShardMetrics::new(1, true);
            on.produced("a", 100, 3);
            on.produced("a", 50, 2);
            on.produced("b", 10, 1);
            on.fetched("a", 150, 5);
            on.request_started(ApiKey::Produce, Duration::from_micros(30));
            on.request_finished(ApiKey::Produce, Duration::from_millis(2), true);
            let off = ShardMetrics::new(2, false);
            off.produced("a", 1000, 1000);
            off.request_started(ApiKey::Produce, Duration::ZERO);
        });
        for line in [
            "kafka_bytes_in_total{shard=\"1\"} 160",
            "kafka_messages_in_total{shard=\"1\"} 6",
            "kafka_topic_bytes_in_total{topic=\"a\",shard=\"1\"} 150",
            "kafka_topic_messages_in_total{topic=\"b\",shard=\"1\"} 1",
            "kafka_topic_bytes_out_total{topic=\"a\",shard=\"1\"} 150",
            "kafka_messages_out_total{shard=\"1\"} 5",
            "kafka_requests_total{api=\"Produce\",shard=\"1\"} 1",
            "kafka_request_errors_total{api=\"Produce\",shard=\"1\"} 1",
            "kafka_request_duration_seconds_count{api=\"Produce\",shard=\"1\"} 1",
            "kafka_bytes_in_total{shard=\"2\"} 0",
            "kafka_requests_total{api=\"Produce\",shard=\"2\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
        assert!(
            !text.contains("topic=\"a\",shard=\"2\""),
            "a disabled shard registers no topic series"
        );
    }
}
