//! Monitoring against the real broker binary: librdkafka produces and consumes records of a
//! known size, then `/metrics` must count exactly those bytes and records, parse with
//! Prometheus's own `promtool check metrics`, and the shipped alert rules must pass
//! `promtool check rules` (promtool comes from Debian's `prometheus` package, see
//! `scripts/ci-deps/40-prometheus.sh`). `/ready` answers 503 while partitions recover, and
//! `/health` and `/ready` 200 once the broker is up; with metrics turned off `/metrics` answers
//! 404 while the broker keeps serving.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{http_get, run_client, BrokerProcess};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// Longest any wait may take before the test fails (a debug build on a loaded 2-core machine).
const WAIT_MAX: Duration = Duration::from_secs(90);

/// Records produced, each alone in its batch, and the size of each value.
const RECORDS: usize = 100;
const VALUE_BYTES: usize = 100;

/// Bytes of a zigzag varint (Kafka's record fields).
fn varint_bytes(value: i64) -> usize {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let mut n = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        n += 1;
    }
    n
}

/// Size of a v2 batch holding one record with no key, no headers and a `value_len` value:
/// the 61-byte batch header, then the record (attributes, timestamp delta 0, offset delta 0,
/// key length -1, value length, value, header count 0) behind its length.
fn one_record_batch_bytes(value_len: usize) -> usize {
    let body = 1 + varint_bytes(0) + varint_bytes(0) + varint_bytes(-1) + varint_bytes(value_len as i64) + value_len + varint_bytes(0);
    61 + varint_bytes(body as i64) + body
}

/// Samples of the scrape: `name{labels}` to value.
fn parse(scrape: &str) -> BTreeMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of every series of `name` whose labels contain each of `labels` (`key="value"`).
fn sum(samples: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
            n == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

fn scrape(broker: &BrokerProcess) -> String {
    let (status, body) = http_get(&broker.admin(), "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// `promtool` with `args`, `input` on stdin: panics with its output unless it exits 0 silently
/// (it prints lint problems, such as a counter without `_total`, and exits non-zero on them).
fn promtool(args: &[&str], input: &[u8]) -> String {
    let run = run_client(Command::new("promtool").args(args), input, Duration::from_secs(60));
    let out = format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.is_some_and(|s| s.success()), "promtool {args:?} failed\n{out}");
    out
}

fn monitoring_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../monitoring")
}

#[test]
fn metrics_count_exactly_what_a_real_client_produced_and_consumed_and_pass_promtool() {
    let broker = BrokerProcess::start(&[]);
    for path in ["/health", "/ready"] {
        assert_eq!(http_get(&broker.admin(), path).0, 200, "{path}");
    }
    let topic = "metered";

    // One record per batch, so every batch's size is known exactly.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "false")
        .set("compression.codec", "none")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .set("acks", "all")
        .create()
        .expect("create producer");
    let value = vec![b'v'; VALUE_BYTES];
    for _ in 0..RECORDS {
        producer
            .send(BaseRecord::<(), [u8]>::to(topic).partition(0).payload(&value))
            .expect("queue a record");
        producer.flush(WAIT_MAX).expect("record delivered");
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        // librdkafka refuses assign() without one; no group API is used.
        .set("group.id", "metrics-test-assign-only")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + WAIT_MAX;
    let mut read = 0;
    while read < RECORDS {
        assert!(Instant::now() < deadline, "read {read} of {RECORDS} records");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("a record, not an error");
            assert_eq!(m.payload().map(<[u8]>::len), Some(VALUE_BYTES));
            read += 1;
        }
    }
    drop(consumer);

    let batch = one_record_batch_bytes(VALUE_BYTES) as f64;
    let n = RECORDS as f64;
    let text = scrape(&broker);
    let m = parse(&text);
    let topic_label = format!("topic=\"{topic}\"");
    let t = [topic_label.as_str()];
    assert_eq!(sum(&m, "kafka_messages_in_total", &[]), n, "broker-wide messages in");
    assert_eq!(sum(&m, "kafka_topic_messages_in_total", &t), n, "topic messages in");
    assert_eq!(sum(&m, "kafka_bytes_in_total", &[]), n * batch, "broker-wide bytes in");
    assert_eq!(sum(&m, "kafka_topic_bytes_in_total", &t), n * batch, "topic bytes in");
    assert_eq!(sum(&m, "kafka_messages_out_total", &[]), n, "broker-wide messages out");
    assert_eq!(sum(&m, "kafka_topic_messages_out_total", &t), n, "topic messages out");
    assert_eq!(sum(&m, "kafka_bytes_out_total", &[]), n * batch, "broker-wide bytes out");
    assert_eq!(sum(&m, "kafka_topic_bytes_out_total", &t), n * batch, "topic bytes out");

    // Every produce request was counted, timed, and none failed.
    let produce = ["api=\"Produce\""];
    let produced = sum(&m, "kafka_requests_total", &produce);
    assert!(produced >= n, "{produced} produce requests for {RECORDS} batches");
    assert_eq!(sum(&m, "kafka_request_duration_seconds_count", &produce), produced);
    assert_eq!(sum(&m, "kafka_request_queue_duration_seconds_count", &produce), produced);
    assert_eq!(sum(&m, "kafka_request_errors_total", &produce), 0.0);
    assert!(sum(&m, "kafka_requests_total", &["api=\"Fetch\""]) >= 1.0);
    for always in [
        "kafka_under_replicated_partitions",
        "kafka_offline_partitions",
        "kafka_under_min_isr_partitions",
    ] {
        assert_eq!(m.get(always), Some(&0.0), "{always}");
    }
    assert_eq!(m.get("broker_ready"), Some(&1.0));
    assert!(m.get("broker_disk_free_bytes").is_some_and(|&v| v > 0.0));
    assert!(m.get("process_resident_memory_bytes").is_some_and(|&v| v > 0.0));

    // Gauges and log counters are sampled by each shard every few seconds: wait for a sample
    // taken after the consumer's reads (each counts as a batch-cache hit or miss), then check
    // it against the same truth.
    let log_size = format!("kafka_log_size_bytes{{topic=\"{topic}\",partition=\"0\"}}");
    let deadline = Instant::now() + WAIT_MAX;
    let m = loop {
        let m = parse(&scrape(&broker));
        let cache_reads = sum(&m, "broker_batch_cache_hits_total", &[]) + sum(&m, "broker_batch_cache_misses_total", &[]);
        if cache_reads >= 1.0 {
            assert_eq!(m.get(&log_size), Some(&(n * batch)));
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "log size and batch count never reached the produced figures: {m:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(sum(&m, "broker_appended_batches_total", &[]), n);
    assert_eq!(sum(&m, "broker_disk_used_bytes", &[]), n * batch);
    assert_eq!(
        sum(&m, "broker_group_commit_bytes_total", &[]),
        n * batch,
        "every byte committed once"
    );
    let commits = sum(&m, "broker_group_commits_total", &[]);
    assert!((1.0..=n).contains(&commits), "{commits} group commits");
    // The test topic's one partition, and the 16 of each internal topic (`__consumer_offsets`,
    // `__transaction_state`), all open from start-up.
    assert_eq!(sum(&m, "broker_partitions", &[]), 1.0 + 16.0 + 16.0);

    // Prometheus's own parser and linter accept the exposition.
    promtool(&["check", "metrics"], text.as_bytes());

    // The shipped dashboard and alert rules only use series the broker serves (the consumer
    // lag series wait for consumer groups), and METRICS.md documents every series served.
    let served: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    for file in ["grafana-dashboard.json", "alerts.yml"] {
        let content = std::fs::read_to_string(monitoring_dir().join(file)).unwrap();
        for name in metric_names(&content) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            if name.starts_with("kafka_consumergroup_lag_") {
                continue;
            }
            assert!(
                served.contains(&name.as_str()) || served.contains(&base),
                "{file} uses {name}, which /metrics does not serve"
            );
        }
    }
    let documented = std::fs::read_to_string(monitoring_dir().join("METRICS.md")).unwrap();
    for name in &served {
        assert!(
            documented.contains(&format!("`{name}{{")) || documented.contains(&format!("`{name}`")),
            "METRICS.md does not document {name}"
        );
    }
}

/// Every word in `text` that looks like one of the broker's metric names.
fn metric_names(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| ["kafka_", "broker_", "process_"].iter().any(|p| w.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_fire_on_their_unit_tests() {
    let rules = monitoring_dir().join("alerts.yml");
    assert!(rules.exists(), "{} is missing", rules.display());
    promtool(&["check", "rules", rules.to_str().unwrap()], b"");
    // Each MSK alarm fires on the series that should raise it (alerts_test.yml).
    let tests = monitoring_dir().join("alerts_test.yml");
    promtool(&["test", "rules", tests.to_str().unwrap()], b"");
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool has no offline query checker, but it parses recording rules: each panel's
    // query becomes one, with Grafana's variables replaced by what they stand for.
    let text = std::fs::read_to_string(monitoring_dir().join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has a query");
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*")
                .replace("$topic", ".*");
            queries += 1;
            rules.push_str(&format!(
                "      - record: dashboard:query{queries}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    assert!(queries >= 20, "{queries} queries");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), rules).unwrap();
    promtool(&["check", "rules", file.path().to_str().unwrap()], b"");
}

#[test]
fn with_metrics_off_the_admin_listener_still_answers_and_metrics_say_404() {
    let broker = BrokerProcess::start(&["--metrics-enabled", "false"]);
    assert_eq!(http_get(&broker.admin(), "/health").0, 200);
    assert_eq!(http_get(&broker.admin(), "/ready").0, 200);
    assert_eq!(http_get(&broker.admin(), "/metrics").0, 404);
    assert_eq!(http_get(&broker.admin(), "/nothing-here").0, 404);
}

/// Kills the hand-started broker if the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path`'s status, or `None` while nothing listens.
fn try_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn ready_answers_503_while_partitions_recover_and_200_once_every_shard_serves() {
    // 300 partitions take a debug build a few hundred milliseconds to recover at start-up.
    let mut broker = BrokerProcess::start(&["--default-partitions", "300"]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("create producer");
    let metadata = producer
        .client()
        .fetch_metadata(Some("many"), WAIT_MAX)
        .expect("metadata auto-creates the topic");
    assert_eq!(metadata.topics()[0].partitions().len(), 300);
    drop(producer);
    broker.stop();

    // Started by hand, so that /ready can be watched while the shards recover.
    let child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--listen")
        .arg(broker.bootstrap())
        .arg("--admin-listen")
        .arg(broker.admin())
        .arg("--data-dir")
        .arg(&broker.data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the broker");
    let _child = KillOnDrop(child);
    let deadline = Instant::now() + WAIT_MAX;
    let mut answers = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "/ready never answered 200: {answers:?}");
        match try_status(&broker.admin(), "/ready") {
            Some(200) => break,
            Some(status) => {
                answers.push(status);
                assert_eq!(try_status(&broker.admin(), "/health"), Some(200), "alive while recovering");
            }
            None => {}
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!answers.is_empty(), "no answer from /ready before it said 200");
    assert!(answers.iter().all(|&s| s == 503), "{answers:?}");
    // Ready means the Kafka listener takes clients.
    assert!(std::net::TcpStream::connect(broker.bootstrap()).is_ok());
}

/// The lag of `group` on partition 0 of `topic` as /metrics reports it, once it equals
/// `offsets` (the shard publishes every few seconds): (offset lag, time lag in seconds).
fn wait_for_lag(broker: &BrokerProcess, group: &str, topic: &str, offsets: f64) -> (f64, f64) {
    let labels = [
        format!("group=\"{group}\""),
        format!("topic=\"{topic}\""),
        "partition=\"0\"".to_owned(),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let m = parse(&scrape(broker));
        let lag = sum(&m, "kafka_consumergroup_lag_offsets", &labels);
        let published = m
            .keys()
            .any(|k| k.starts_with("kafka_consumergroup_lag_offsets{") && labels.iter().all(|l| k.contains(l)));
        if published && lag == offsets {
            return (lag, sum(&m, "kafka_consumergroup_lag_seconds", &labels));
        }
        assert!(
            Instant::now() < deadline,
            "lag of {group} never reached {offsets}: last {lag} (published: {published})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A real consumer group: its lag rises while the consumer stops reading (records keep
/// arriving), and falls to zero once it has caught up and committed.
#[test]
fn consumer_lag_rises_while_the_group_is_paused_and_falls_to_zero_once_it_catches_up() {
    let broker = BrokerProcess::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let (topic, group) = ("lagging", "lag-group");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("producer");
    let produce = |n: usize| {
        for i in 0..n {
            producer
                .send(BaseRecord::<(), _>::to(topic).partition(0).payload(&format!("record-{i}")))
                .expect("queued");
        }
        producer.flush(WAIT_MAX).expect("delivered");
    };
    produce(10);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let consume = |n: usize| {
        let mut got = 0;
        let deadline = Instant::now() + WAIT_MAX;
        while got < n {
            assert!(Instant::now() < deadline, "{got} of {n} records");
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                m.expect("consumer error");
                got += 1;
            }
        }
        consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync).expect("commit");
    };
    consume(10);
    assert_eq!(wait_for_lag(&broker, group, topic, 0.0), (0.0, 0.0), "caught up");

    // Paused: the group reads nothing while 25 more records arrive.
    produce(25);
    std::thread::sleep(Duration::from_millis(1100));
    let (_, seconds) = wait_for_lag(&broker, group, topic, 25.0);
    assert!(seconds >= 1.0, "the oldest unread record is over a second old: {seconds}");

    // Caught up again.
    consume(25);
    assert_eq!(wait_for_lag(&broker, group, topic, 0.0), (0.0, 0.0), "caught up again");
}
