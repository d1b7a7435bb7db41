//! Log compaction against the real broker binary with librdkafka: keyed records and tombstones
//! written to compacted topics with small segments, checked against a model of what must
//! survive, before and after a restart.
//!
//! The model is the last write per key. Once the workload is all in sealed segments (filler
//! records with keys of their own roll the segment it ends in), compaction must leave exactly
//! one record per live key, holding its last value; a deleted key keeps only its tombstone
//! while delete.retention.ms lasts, and nothing once it has passed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::BrokerProcess;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const WAIT_MAX: Duration = Duration::from_secs(120);
const PARTITIONS: i32 = 2;
const KEYS: u64 = 150;
const WRITES: u64 = 4000;
const FILLER: u64 = 1500;

/// What one key's records must come down to.
type Model = BTreeMap<String, Option<String>>;

fn start_broker() -> BrokerProcess {
    BrokerProcess::start(&["--compaction-check-interval-ms", "200"])
}

fn create_topic(broker: &BrokerProcess, name: &str, delete_retention_ms: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "65536")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", delete_retention_ms);
    let results = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new().operation_timeout(Some(WAIT_MAX))))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// A small deterministic generator (xorshift), so that a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `words` random 16-digit hex words: values that compress little, so segments fill.
    fn noise(&mut self, words: usize) -> String {
        (0..words).map(|_| format!("{:016x}", self.next())).collect()
    }
}

/// Writes the workload (random keys, about one write in eight a tombstone), then filler
/// records with keys of their own, and returns the model of the workload's keys.
fn produce(broker: &BrokerProcess, topic: &str, seed: u64, compression: &str) -> Model {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "2")
        .set("batch.num.messages", "50")
        .set("compression.type", compression)
        .create()
        .expect("producer");
    let mut rng = Rng(seed);
    let mut model = Model::new();
    let send = |key: String, value: Option<String>| loop {
        let record = BaseRecord::<String, String>::to(topic).key(&key);
        let record = match &value {
            Some(v) => record.payload(v),
            None => record,
        };
        match producer.send(record) {
            Ok(()) => break,
            Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("send: {e}"),
        }
    };
    for i in 0..WRITES {
        let key = format!("key-{}", rng.next() % KEYS);
        let value = (rng.next() % 8 != 0).then(|| format!("{key}-write-{i}-{}", rng.noise(6)));
        model.insert(key.clone(), value.clone());
        send(key, value);
    }
    for i in 0..FILLER {
        let value = format!("filler-{i}-{}", rng.noise(12));
        send(format!("filler-{i}"), Some(value));
    }
    producer.flush(WAIT_MAX).expect("every record delivered");
    model
}

/// Every record of the topic, in order per partition: (key, value).
fn read_all(broker: &BrokerProcess, topic: &str) -> Vec<(String, Option<String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "compaction-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("offset");
        let (_, high) = consumer.fetch_watermarks(topic, p, WAIT_MAX).expect("watermarks");
        ends.insert(p, high);
    }
    consumer.assign(&tpl).expect("assign");
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT_MAX;
    while ends.iter().any(|(p, &end)| positions.get(p).copied().unwrap_or(0) < end) {
        assert!(Instant::now() < deadline, "read stalled at {positions:?} of {ends:?}");
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let key = String::from_utf8(m.key().expect("every record has a key").to_vec()).unwrap();
                let value = m.payload().map(|v| String::from_utf8(v.to_vec()).unwrap());
                positions.insert(m.partition(), m.offset() + 1);
                out.push((key, value));
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
        }
    }
    out
}

/// Whether the workload's keys have come down to the model: one record per key, its last
/// write; with `tombstones_kept`, deleted keys keep exactly their tombstone, else none.
fn matches_model(read: &[(String, Option<String>)], model: &Model, tombstones_kept: bool) -> Result<(), String> {
    let mut seen: BTreeMap<&str, Vec<&Option<String>>> = BTreeMap::new();
    let mut fillers = 0;
    for (k, v) in read {
        if k.starts_with("filler-") {
            fillers += 1;
        } else {
            seen.entry(k.as_str()).or_default().push(v);
        }
    }
    if fillers != FILLER {
        return Err(format!("{fillers} filler records instead of {FILLER}"));
    }
    for (key, last) in model {
        let records = seen.remove(key.as_str()).unwrap_or_default();
        let want: Vec<&Option<String>> = match last {
            Some(_) => vec![last],
            None if tombstones_kept => vec![last],
            None => vec![],
        };
        if records != want {
            return Err(format!(
                "{key}: {} records, last {:?}; the model says {want:?}",
                records.len(),
                records.last()
            ));
        }
    }
    match seen.keys().next() {
        Some(stranger) => Err(format!("{stranger} is not in the model")),
        None => Ok(()),
    }
}

fn wait_for_model(broker: &BrokerProcess, topic: &str, model: &Model, tombstones_kept: bool) {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let read = read_all(broker, topic);
        match matches_model(&read, model, tombstones_kept) {
            Ok(()) => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            Err(why) => panic!("{topic} never came down to the model ({} records): {why}", read.len()),
        }
    }
}

#[test]
fn compaction_keeps_the_latest_value_per_key_and_drops_expired_tombstones() {
    let mut broker = start_broker();
    create_topic(&broker, "compacted-drop", "0");
    create_topic(&broker, "compacted-keep", "86400000");
    // Uncompressed batches in one topic, LZ4 in the other: rebuilt batches are recompressed.
    let drop_model = produce(&broker, "compacted-drop", 0x9e37_79b9_7f4a_7c15, "none");
    let keep_model = produce(&broker, "compacted-keep", 0x2545_f491_4f6c_dd1d, "lz4");
    assert!(drop_model.values().any(Option::is_none), "the workload deletes some keys");
    wait_for_model(&broker, "compacted-drop", &drop_model, false);
    wait_for_model(&broker, "compacted-keep", &keep_model, true);
    assert!(broker.log().contains("bytes_before"), "the broker logged its compaction passes");

    // What compaction left is what a restart finds.
    broker.stop();
    broker.restart();
    matches_model(&read_all(&broker, "compacted-drop"), &drop_model, false).expect("after a restart");
    matches_model(&read_all(&broker, "compacted-keep"), &keep_model, true).expect("after a restart");
    assert!(broker.problems().is_empty(), "{:?}", broker.problems());
}
