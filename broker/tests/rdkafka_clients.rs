//! librdkafka (through the rdkafka crate) against the real broker binary: every compression
//! codec, every acks level, 1 MiB records, 1,000 partitions, many connections at once, a clean
//! restart and a SIGKILL, long polls, and CreateTopics through the AdminClient.
//!
//! Each test checks what it reads back against what the producer was told was written: the
//! content byte for byte (key, value, headers), the order in each partition, and the count
//! exactly (offsets run from 0 without gaps up to the high watermark).
//!
//! Consumers here `assign()` partitions from the beginning and never subscribe or commit, so
//! that each test checks the data path alone (groups have `tests/consumer_groups.rs`);
//! librdkafka refuses `assign()` without a `group.id`, so one is set and otherwise unused. The
//! idempotent producer is off here; `idempotence.rs` tests it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::BrokerProcess;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{self, Compression, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext, PurgeConfig};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Longest any single wait in these tests may take before the test fails: generous, because a
/// debug build on a loaded 2-core machine is slow, and never part of what a test asserts.
const WAIT_MAX: Duration = Duration::from_secs(90);

/// The `group.id` librdkafka needs before it allows `assign()`; no group API is ever used.
const UNUSED_GROUP: &str = "rdkafka-tests-assign-only";

/// Prints the end of the broker's log if the test fails, while the log still exists: declare it
/// after the broker, so that it is dropped first.
struct LogOnFailure(std::path::PathBuf);

impl LogOnFailure {
    fn new(broker: &BrokerProcess) -> LogOnFailure {
        LogOnFailure(broker.log_path().to_owned())
    }
}

impl Drop for LogOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(100)..];
            eprintln!("--- last {} lines of the broker log ---\n{}", tail.len(), tail.join("\n"));
        }
    }
}

/// One record as sent, and as it must be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Record {
        Record {
            key: Some(key.into()),
            value: Some(value.into()),
            headers: Vec::new(),
        }
    }

    fn from_message(m: &impl Message) -> Record {
        Record {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default(),
        }
    }
}

/// What a delivery report said: `(partition, offset)` (a negative offset when acks=0: nobody
/// told the producer), or the error.
type Delivery = Result<(i32, i64), KafkaError>;

/// The context of consumers and admin clients: prints librdkafka's log when `RDKAFKA_DEBUG` is
/// set (nothing reads it otherwise).
#[derive(Clone, Copy)]
struct Logged;

impl ClientContext for Logged {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if std::env::var_os("RDKAFKA_DEBUG").is_some() {
            eprintln!("librdkafka {level:?} {fac}: {message}");
        }
    }
}

impl ConsumerContext for Logged {}

/// Collects delivery reports by the record's index, shared with the test thread. A second
/// report for one record is noted, not asserted: a panic cannot unwind out of librdkafka's
/// callback.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<ReportLog>>);

#[derive(Default)]
struct ReportLog {
    by_index: BTreeMap<usize, Delivery>,
    repeated: Vec<usize>,
}

impl Reports {
    fn acknowledged(&self) -> usize {
        self.0.lock().unwrap().by_index.values().filter(|d| d.is_ok()).count()
    }

    /// Every report so far; fails if a record had two.
    fn all(&self) -> BTreeMap<usize, Delivery> {
        let log = self.0.lock().unwrap();
        assert!(log.repeated.is_empty(), "records with two delivery reports: {:?}", log.repeated);
        log.by_index.clone()
    }
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        Logged.log(level, fac, message);
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let delivery = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        let mut log = self.0.lock().unwrap();
        if log.by_index.insert(index, delivery).is_some() {
            log.repeated.push(index);
        }
    }
}

/// Settings every client gets. `RDKAFKA_DEBUG=<librdkafka debug contexts>` (for example
/// `protocol,msg,fetch`) prints librdkafka's own log while debugging a failure.
fn client_config(broker: &BrokerProcess) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.bootstrap());
    if let Ok(debug) = std::env::var("RDKAFKA_DEBUG") {
        config.set("debug", debug).set_log_level(RDKafkaLogLevel::Debug);
    }
    config
}

/// A producer with the idempotent producer off and `settings` on top.
fn producer(broker: &BrokerProcess, settings: &[(&str, &str)]) -> BaseProducer<Reports> {
    let mut config = client_config(broker);
    config
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    config.create_with_context(Reports::default()).expect("create producer")
}

/// Queues one record, waiting (bounded) while librdkafka's queue is full.
fn send(producer: &BaseProducer<Reports>, topic: &str, partition: Option<i32>, r: &Record, index: usize) {
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
    for (key, value) in &r.headers {
        headers = headers.insert(Header {
            key: key.as_str(),
            value: value.as_deref(),
        });
    }
    let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, index).headers(headers);
    if let Some(key) = &r.key {
        record = record.key(key.as_slice());
    }
    if let Some(value) = &r.value {
        record = record.payload(value.as_slice());
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                assert!(Instant::now() < deadline, "producer queue still full after {WAIT_MAX:?}");
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("queueing record {index} for {topic} failed: {e}"),
        }
    }
}

/// Waits until every queued record has its delivery report.
fn flush(producer: &BaseProducer<Reports>) {
    if let Err(e) = producer.flush(WAIT_MAX) {
        panic!(
            "producer did not deliver within {WAIT_MAX:?} ({e}); {} records still in flight",
            producer.in_flight_count()
        );
    }
}

/// Sends `records` in order, each to its partition or the partitioner's choice, and returns
/// their delivery reports in the same order.
fn send_all(producer: &BaseProducer<Reports>, topic: &str, records: &[(Option<i32>, Record)]) -> Vec<Delivery> {
    let first = producer.context().0.lock().unwrap().by_index.len();
    for (i, (partition, r)) in records.iter().enumerate() {
        send(producer, topic, *partition, r, first + i);
    }
    flush(producer);
    let reports = producer.context().all();
    (first..first + records.len())
        .map(|i| {
            reports
                .get(&i)
                .unwrap_or_else(|| panic!("no delivery report for record {i} after flush"))
                .clone()
        })
        .collect()
}

/// Like `send_all`, and every record must have been acknowledged.
fn send_all_ok(producer: &BaseProducer<Reports>, topic: &str, records: &[(Option<i32>, Record)]) -> Vec<(i32, i64)> {
    send_all(producer, topic, records)
        .into_iter()
        .enumerate()
        .map(|(i, d)| d.unwrap_or_else(|e| panic!("record {i} to {topic} was not delivered: {e}")))
        .collect()
}

fn admin(broker: &BrokerProcess) -> AdminClient<Logged> {
    client_config(broker).create_with_context(Logged).expect("create admin client")
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(WAIT_MAX))
        .operation_timeout(Some(WAIT_MAX))
}

/// Creates a topic through CreateTopics, which must succeed.
fn create_topic(broker: &BrokerProcess, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = futures::executor::block_on(admin(broker).create_topics([&topic], &admin_options()))
        .unwrap_or_else(|e| panic!("CreateTopics {name} failed: {e}"));
    assert_eq!(results, vec![Ok(name.to_owned())], "creating topic {name}");
}

/// A consumer that reads by assignment only; `settings` go on top.
fn consumer(broker: &BrokerProcess, settings: &[(&str, &str)]) -> BaseConsumer<Logged> {
    let mut config = client_config(broker);
    config
        .set("group.id", UNUSED_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // An offset out of range is an error here, never a silent jump.
        .set("auto.offset.reset", "error");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    config.create_with_context(Logged).expect("create consumer")
}

fn assign_from_beginning(consumer: &BaseConsumer<Logged>, topic: &str, partitions: &[i32]) {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("valid offset");
    }
    consumer.assign(&tpl).expect("assign");
}

/// What a consumer read: each partition's records with their offsets, in the order received,
/// and each partition's high watermark afterwards.
#[derive(Debug, Default)]
struct Read {
    partitions: BTreeMap<i32, Vec<(i64, Record)>>,
    high_watermarks: BTreeMap<i32, i64>,
}

impl Read {
    fn count(&self) -> usize {
        self.partitions.values().map(Vec::len).sum()
    }
}

/// Polls until `count` records have arrived, failing on any consumer error or once `within`
/// has passed.
fn poll_until(consumer: &BaseConsumer<Logged>, count: usize, read: &mut Read, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while read.count() < count {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {count} records after {within:?}",
            read.count()
        );
        match consumer.poll(Duration::from_millis(50)) {
            None => {}
            Some(Ok(m)) => read
                .partitions
                .entry(m.partition())
                .or_default()
                .push((m.offset(), Record::from_message(&m))),
            Some(Err(e)) => panic!("{what}: consumer error after {} records: {e}", read.count()),
        }
    }
}

/// Reads `partitions` of `topic` from the beginning until `count` records have arrived, then
/// asks for each partition's watermarks, so that a record beyond `count` cannot go unseen.
fn consume(broker: &BrokerProcess, topic: &str, partitions: &[i32], count: usize) -> Read {
    let consumer = consumer(broker, &[]);
    assign_from_beginning(&consumer, topic, partitions);
    let mut read = Read::default();
    poll_until(&consumer, count, &mut read, WAIT_MAX, topic);
    read.high_watermarks = watermarks(broker, topic, partitions);
    read
}

/// Each partition's high watermark; the low one must be 0 (nothing is deleted here). Asked by
/// a client of its own: responses on one connection go out in request order, so behind a
/// consumer's parked fetch every ListOffsets would wait out the long poll.
fn watermarks(broker: &BrokerProcess, topic: &str, partitions: &[i32]) -> BTreeMap<i32, i64> {
    let client = consumer(broker, &[]);
    partitions
        .iter()
        .map(|&p| {
            let (low, high) = client
                .fetch_watermarks(topic, p, WAIT_MAX)
                .unwrap_or_else(|e| panic!("watermarks of {topic}-{p}: {e}"));
            assert_eq!(low, 0, "log start of {topic}-{p}");
            (p, high)
        })
        .collect()
}

/// The exact check: per partition, the records read are the records sent there, in the order
/// they were sent, at offsets 0, 1, 2, ... up to the high watermark; where the delivery report
/// gave an offset, it is the one the record was read at. With one producer per topic and no
/// retries, a partition's offsets follow the send order.
fn check_exact(read: &Read, sent: &[(Option<i32>, Record)], deliveries: &[Delivery]) {
    assert_eq!(sent.len(), deliveries.len());
    let mut expected: BTreeMap<i32, Vec<(i64, &Record)>> = BTreeMap::new();
    for (i, ((_, record), delivery)) in sent.iter().zip(deliveries).enumerate() {
        let (partition, offset) = delivery.as_ref().unwrap_or_else(|e| panic!("record {i} was not delivered: {e}"));
        expected.entry(*partition).or_default().push((*offset, record));
    }
    for (partition, got) in &read.partitions {
        assert!(
            expected.contains_key(partition),
            "partition {partition}: read {} records, none were sent there",
            got.len()
        );
    }
    for (partition, want) in &expected {
        let got = read.partitions.get(partition).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            got.len(),
            want.len(),
            "partition {partition}: read {} records, sent {}",
            got.len(),
            want.len()
        );
        for (position, ((offset, record), (acked, sent))) in got.iter().zip(want).enumerate() {
            assert_eq!(
                *offset, position as i64,
                "partition {partition}: offsets must run from 0 without gaps"
            );
            if *acked >= 0 {
                assert_eq!(
                    *offset, *acked,
                    "partition {partition}: record #{position} sent there was acknowledged at offset {acked}, so \
                     it was appended out of send order"
                );
            }
            assert!(
                record == *sent,
                "partition {partition} offset {offset}: read {} but sent {}",
                describe(record),
                describe(sent)
            );
        }
        let high = read.high_watermarks.get(partition).copied();
        assert_eq!(
            high,
            Some(want.len() as i64),
            "partition {partition}: high watermark must equal the records sent"
        );
    }
}

/// A short description of a record for failure messages (values can be 1 MiB).
fn describe(r: &Record) -> String {
    let bytes = |b: &Option<Vec<u8>>| match b {
        None => "null".to_owned(),
        Some(b) => format!("{} bytes {:?}", b.len(), String::from_utf8_lossy(&b[..b.len().min(40)])),
    };
    let headers: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}={}", bytes(v))).collect();
    format!("{{key: {}, value: {}, headers: {headers:?}}}", bytes(&r.key), bytes(&r.value))
}

/// Deterministic bytes that do not compress: xorshift from `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every batch's compression codec (attributes bits 0-2) in a partition's segment files, read
/// from the data directory: the segments hold Kafka record batches as the producer sent them.
fn codecs_on_disk(broker: &BrokerProcess, topic: &str, partition: i32) -> Vec<u8> {
    let dir = broker.data_dir.join(format!("{topic}-{partition}"));
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let mut codecs = Vec::new();
    for path in segments {
        let bytes = std::fs::read(&path).unwrap();
        let mut pos = 0;
        // base offset (8), batch length (4), leader epoch (4), magic (1), crc (4), attributes (2).
        while pos + 23 <= bytes.len() {
            let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
            if len <= 0 {
                break; // the zeroed, preallocated tail
            }
            let attributes = i16::from_be_bytes([bytes[pos + 21], bytes[pos + 22]]);
            codecs.push((attributes & 0x7) as u8);
            pos += 12 + len as usize;
        }
    }
    codecs
}

/// One request and its response over a fresh connection, with kafka-protocol's codecs: for
/// the two things librdkafka cannot be made to do here (ask for ApiVersions, produce LZ4).
fn raw_call<Req: Encodable, Resp: Decodable>(broker: &BrokerProcess, api: ApiKey, version: i16, request: &Req) -> Resp {
    let mut frame = BytesMut::from(&[0u8; 4][..]);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("rdkafka-tests")))
        .encode(&mut frame, api.request_header_version(version))
        .expect("encode request header");
    request.encode(&mut frame, version).expect("encode request");
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    let mut stream = TcpStream::connect(broker.bootstrap()).expect("connect");
    stream.set_read_timeout(Some(WAIT_MAX)).unwrap();
    stream.write_all(&frame).expect("send request");
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: no response: {e}"));
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("read response");
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, api.response_header_version(version)).expect("response header");
    assert_eq!(header.correlation_id, 7);
    Resp::decode(&mut body, version).expect("decode response")
}

/// Whether the broker lists `api` in ApiVersions.
fn advertises(broker: &BrokerProcess, api: ApiKey) -> bool {
    let response: ApiVersionsResponse = raw_call(broker, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
    response.api_keys.iter().any(|k| k.api_key == api as i16)
}

/// Produces `records` to one partition as a single batch compressed with `compression`,
/// encoded by kafka-protocol, with acks=all; returns the base offset.
fn produce_batch(broker: &BrokerProcess, topic: &str, partition: i32, compression: Compression, records: &[Record]) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let batch: Vec<records::Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: records::NO_PARTITION_LEADER_EPOCH,
            producer_id: records::NO_PRODUCER_ID,
            producer_epoch: records::NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch where offset - sequence changes; this keeps one
            // batch (Produce v3+ takes exactly one), with no base sequence (-1), as a producer
            // that is not idempotent sends.
            sequence: records::NO_SEQUENCE + i as i32,
            timestamp: now,
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                .collect(),
        })
        .collect();
    let mut encoded = BytesMut::new();
    RecordBatchEncoder::encode(&mut encoded, &batch, &RecordEncodeOptions { version: 2, compression }).expect("encode batch");
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(encoded.freeze()))])]);
    let response: ProduceResponse = raw_call(broker, ApiKey::Produce, 9, &request);
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, 0, "producing a {compression:?} batch to {topic}-{partition}");
    answer.base_offset
}

#[test]
fn every_compression_codec_round_trips_keys_values_and_headers() {
    let broker = BrokerProcess::start(&[]);
    let _log = LogOnFailure::new(&broker);
    // Kafka's codec ids, as batch attributes carry them.
    let codecs = [("none", 0u8), ("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)];
    for (codec, _) in codecs {
        create_topic(&broker, &format!("codec-{codec}"), 2, &[]);
    }
    let records: Vec<(Option<i32>, Record)> = (0..400u64)
        .map(|i| {
            // Compressible text of varying length, and now and then a record that is not.
            let mut value = format!("value {i} ").repeat(1 + (i as usize * 7) % 60).into_bytes();
            if i % 50 == 7 {
                value = noise(i, 3000);
            }
            let mut r = Record::new(format!("key-{}", i % 17), value);
            r.headers = vec![
                ("seq".to_owned(), Some(i.to_be_bytes().to_vec())),
                ("trace".to_owned(), Some(noise(i, (i % 5) as usize))),
                ("seq".to_owned(), Some(b"duplicate header names are kept".to_vec())),
                ("null-value".to_owned(), None),
            ];
            match i % 97 {
                3 => r.key = None,
                5 => r.value = None, // a tombstone
                11 => r.headers.clear(),
                _ => {}
            }
            (Some((i % 2) as i32), r)
        })
        .collect();
    // librdkafka compresses with LZ4 only if the broker lists FindCoordinator, its sign of a
    // Kafka 0.9+ broker (rdkafka_feature.c); otherwise it sends those batches uncompressed,
    // silently, and the check below would fail for lz4.
    assert!(advertises(&broker, ApiKey::FindCoordinator), "FindCoordinator is advertised");
    for (codec, id) in codecs {
        let topic = format!("codec-{codec}");
        let p = producer(&broker, &[("compression.type", codec), ("acks", "all")]);
        let deliveries = send_all(&p, &topic, &records);
        let read = consume(&broker, &topic, &[0, 1], records.len());
        check_exact(&read, &records, &deliveries);
        // librdkafka sends a batch uncompressed when compressing would not make it smaller;
        // every other batch must carry the codec asked for.
        for partition in [0, 1] {
            let on_disk = codecs_on_disk(&broker, &topic, partition);
            assert!(!on_disk.is_empty(), "{topic}-{partition}: no batches on disk");
            assert!(
                on_disk.iter().all(|&c| c == id || c == 0) && on_disk.contains(&id),
                "{topic}-{partition}: batch codecs on disk {on_disk:?}, expected {id} ({codec})"
            );
        }
    }

    // Whatever librdkafka sends, its consumer must read every codec from this broker: batches
    // compressed by another encoder (kafka-protocol), LZ4 among them. Its headers are a map, so
    // these records have no repeated header names.
    let raw: Vec<Record> = records
        .iter()
        .take(150)
        .map(|(_, r)| {
            let mut r = r.clone();
            r.headers.retain(|(k, _)| k != "seq");
            r
        })
        .collect();
    let compressions = [
        (Compression::None, 0u8),
        (Compression::Gzip, 1),
        (Compression::Snappy, 2),
        (Compression::Lz4, 3),
        (Compression::Zstd, 4),
    ];
    for (compression, id) in compressions {
        let topic = format!("raw-{id}");
        create_topic(&broker, &topic, 1, &[]);
        let (first, second) = raw.split_at(raw.len() / 2);
        let bases = [
            produce_batch(&broker, &topic, 0, compression, first),
            produce_batch(&broker, &topic, 0, compression, second),
        ];
        assert_eq!(bases, [0, first.len() as i64], "{compression:?} batches' base offsets");
        assert_eq!(codecs_on_disk(&broker, &topic, 0), vec![id, id], "{topic}: batch codecs on disk");
        let sent: Vec<_> = raw.iter().map(|r| (Some(0), r.clone())).collect();
        let deliveries: Vec<Delivery> = (0..raw.len()).map(|i| Ok((0, i as i64))).collect();
        let read = consume(&broker, &topic, &[0], raw.len());
        check_exact(&read, &sent, &deliveries);
    }
}

#[test]
fn acks_0_1_and_all_each_deliver_everything() {
    let broker = BrokerProcess::start(&[]);
    let _log = LogOnFailure::new(&broker);
    for acks in ["0", "1", "all"] {
        let topic = format!("acks-{acks}");
        create_topic(&broker, &topic, 3, &[]);
        let records: Vec<(Option<i32>, Record)> = (0..600)
            .map(|i| (None, Record::new(format!("k{}", i % 31), format!("acks={acks} record {i}"))))
            .collect();
        let p = producer(&broker, &[("acks", acks)]);
        let deliveries = send_all(&p, &topic, &records);
        if acks == "0" {
            // Nothing comes back: the report says where the record went, never its offset
            // (librdkafka fills in a negative placeholder).
            assert!(
                deliveries.iter().all(|d| matches!(d, Ok((_, o)) if *o < 0)),
                "acks=0 reports: {deliveries:?}"
            );
        }
        // With acks 0 and 1 the broker commits in the background; the consumer waits for it.
        let read = consume(&broker, &topic, &[0, 1, 2], records.len());
        check_exact(&read, &records, &deliveries);
    }
}

#[test]
fn one_mib_records_round_trip_and_a_record_over_the_limit_is_refused() {
    let broker = BrokerProcess::start(&[]);
    let _log = LogOnFailure::new(&broker);
    const MIB: usize = 1024 * 1024;

    // A topic that allows 2 MiB batches takes 1 MiB values whole.
    create_topic(&broker, "big", 2, &[("max.message.bytes", "2097152")]);
    let records: Vec<(Option<i32>, Record)> = (0..12u64)
        .map(|i| {
            let mut r = Record::new(format!("big-{i}"), noise(i, MIB));
            r.headers = vec![("i".to_owned(), Some(i.to_be_bytes().to_vec()))];
            (Some((i % 2) as i32), r)
        })
        .collect();
    let p = producer(&broker, &[("acks", "all"), ("message.max.bytes", "3145728")]);
    let deliveries = send_all(&p, "big", &records);
    let read = consume(&broker, "big", &[0, 1], records.len());
    check_exact(&read, &records, &deliveries);

    // The default limit (max.message.bytes 1048588): a value just under 1 MiB fits, one just
    // over is refused by the broker (librdkafka's own limit is raised so it sends it).
    create_topic(&broker, "default-limit", 1, &[]);
    let under = Record::new("under", noise(1, MIB - 1024));
    let over = Record::new("over", noise(2, MIB + 1024));
    let after = Record::new("after", b"the partition still takes records".to_vec());
    let sent = send_all(
        &p,
        "default-limit",
        &[(Some(0), under.clone()), (Some(0), over), (Some(0), after.clone())],
    );
    assert!(sent[0].is_ok(), "under the limit: {:?}", sent[0]);
    assert_eq!(
        sent[1],
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)),
        "over the limit"
    );
    assert!(sent[2].is_ok(), "after the refusal: {:?}", sent[2]);
    let kept = [(Some(0), under), (Some(0), after)];
    let read = consume(&broker, "default-limit", &[0], kept.len());
    check_exact(&read, &kept, &[sent[0].clone(), sent[2].clone()]);
}

#[test]
fn a_thousand_partitions_across_shards_keep_every_record_in_order() {
    let broker = BrokerProcess::start(&["--shards", "2"]);
    let _log = LogOnFailure::new(&broker);
    const PARTITIONS: i32 = 1000;
    const PER_PARTITION: i32 = 10;
    create_topic(&broker, "wide", PARTITIONS, &[]);
    // Keyed records, to every partition in turn, so each partition gets several in order.
    let records: Vec<(Option<i32>, Record)> = (0..PARTITIONS * PER_PARTITION)
        .map(|i| {
            let partition = i % PARTITIONS;
            let r = Record::new(format!("key-{partition}"), format!("record {i} for partition {partition}"));
            (Some(partition), r)
        })
        .collect();
    let p = producer(&broker, &[("acks", "all")]);
    let deliveries = send_all(&p, "wide", &records);
    let all: Vec<i32> = (0..PARTITIONS).collect();
    let read = consume(&broker, "wide", &all, records.len());
    check_exact(&read, &records, &deliveries);
    assert_eq!(read.partitions.len(), PARTITIONS as usize, "every partition has records");
}

#[test]
fn fifty_producers_and_four_consumers_at_once() {
    let broker = BrokerProcess::start(&[]);
    let _log = LogOnFailure::new(&broker);
    const PRODUCERS: usize = 50;
    const PER_PRODUCER: usize = 100;
    const CONSUMERS: usize = 4;
    const PARTITIONS: [i32; 4] = [0, 1, 2, 3];
    create_topic(&broker, "crowd", PARTITIONS.len() as i32, &[]);
    let total = PRODUCERS * PER_PRODUCER;
    let record = |producer: usize, seq: usize| {
        let mut r = Record::new(format!("producer-{producer}"), format!("producer {producer} record {seq}"));
        r.headers = vec![("seq".to_owned(), Some(seq.to_string().into_bytes()))];
        r
    };

    std::thread::scope(|s| {
        // Consumers first, so they read while the producers write.
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|c| {
                let broker = &broker;
                s.spawn(move || {
                    let consumer = consumer(broker, &[]);
                    assign_from_beginning(&consumer, "crowd", &PARTITIONS);
                    let mut read = Read::default();
                    poll_until(&consumer, total, &mut read, WAIT_MAX, &format!("consumer {c}"));
                    read.high_watermarks = watermarks(broker, "crowd", &PARTITIONS);
                    read
                })
            })
            .collect();
        // Each producer its own client and connections; half with acks=all, half with acks=1.
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|n| {
                let broker = &broker;
                s.spawn(move || {
                    let acks = if n % 2 == 0 { "all" } else { "1" };
                    let p = producer(broker, &[("acks", acks)]);
                    let records: Vec<_> = (0..PER_PRODUCER).map(|seq| (None, record(n, seq))).collect();
                    send_all_ok(&p, "crowd", &records)
                })
            })
            .collect();
        let acked: Vec<Vec<(i32, i64)>> = producers.into_iter().map(|h| h.join().expect("producer thread")).collect();

        // Where every record must be, by the delivery reports.
        let mut at: BTreeMap<(i32, i64), Record> = BTreeMap::new();
        for (n, offsets) in acked.iter().enumerate() {
            // The key picks one partition for all of a producer's records, in send order.
            assert!(
                offsets.windows(2).all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1),
                "producer {n}: {offsets:?}"
            );
            for (seq, &place) in offsets.iter().enumerate() {
                assert!(at.insert(place, record(n, seq)).is_none(), "two records acknowledged at {place:?}");
            }
        }
        assert_eq!(at.len(), total);
        for (c, handle) in consumers.into_iter().enumerate() {
            let read = handle.join().expect("consumer thread");
            assert_eq!(read.count(), total, "consumer {c}");
            for (&partition, got) in &read.partitions {
                for (position, (offset, r)) in got.iter().enumerate() {
                    assert_eq!(*offset, position as i64, "consumer {c} partition {partition}: offsets without gaps");
                    assert_eq!(
                        at.get(&(partition, *offset)),
                        Some(r),
                        "consumer {c} read partition {partition} offset {offset}"
                    );
                }
                assert_eq!(
                    read.high_watermarks[&partition],
                    got.len() as i64,
                    "consumer {c} partition {partition}"
                );
            }
        }
    });
}

#[test]
fn acknowledged_records_survive_a_clean_restart() {
    let mut broker = BrokerProcess::start(&[]);
    let _log = LogOnFailure::new(&broker);
    create_topic(&broker, "restart", 3, &[]);
    let records: Vec<(Option<i32>, Record)> = (0..1500)
        .map(|i| (None, Record::new(format!("k{}", i % 13), format!("before the restart {i}"))))
        .collect();
    let deliveries = send_all(&producer(&broker, &[("acks", "all")]), "restart", &records);
    broker.stop();
    broker.restart();
    let read = consume(&broker, "restart", &[0, 1, 2], records.len());
    check_exact(&read, &records, &deliveries);

    // And the log takes more after the restart, continuing its offsets.
    let more: Vec<(Option<i32>, Record)> = (0..300)
        .map(|i| (None, Record::new(format!("k{}", i % 13), format!("after the restart {i}"))))
        .collect();
    let more_deliveries = send_all(&producer(&broker, &[("acks", "all")]), "restart", &more);
    let all: Vec<_> = records.iter().chain(&more).cloned().collect();
    let all_deliveries: Vec<_> = deliveries.into_iter().chain(more_deliveries).collect();
    let read = consume(&broker, "restart", &[0, 1, 2], all.len());
    check_exact(&read, &all, &all_deliveries);
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let mut broker = BrokerProcess::start(&[]);
    let _log = LogOnFailure::new(&broker);
    const PARTITIONS: [i32; 3] = [0, 1, 2];
    create_topic(&broker, "crash", PARTITIONS.len() as i32, &[]);
    let record = |i: usize| {
        let mut r = Record::new(i.to_string(), noise(i as u64, 100 + i % 900));
        r.headers = vec![("i".to_owned(), Some(i.to_string().into_bytes()))];
        r
    };

    // A producer writes with acks=all until told to stop; SIGKILL lands while it writes.
    let p = producer(&broker, &[("acks", "all")]);
    let reports = p.context().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                send(&p, "crash", None, &record(sent), sent);
                sent += 1;
                p.poll(Duration::ZERO);
                if p.in_flight_count() > 2000 {
                    p.poll(Duration::from_millis(5));
                }
            }
            // The broker is dead: give up on what is still queued or in flight.
            p.purge(PurgeConfig::default().queue().inflight());
            flush(&p);
            sent
        })
    };
    let deadline = Instant::now() + WAIT_MAX;
    while reports.acknowledged() < 3000 {
        assert!(
            Instant::now() < deadline,
            "only {} records acknowledged after {WAIT_MAX:?}",
            reports.acknowledged()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.kill();
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().expect("producer thread");
    let acked: BTreeMap<(i32, i64), usize> = reports
        .all()
        .iter()
        .filter_map(|(&i, d)| d.as_ref().ok().map(|&place| (place, i)))
        .collect();
    assert!(acked.len() >= 3000);

    broker.restart();
    let high = watermarks(&broker, "crash", &PARTITIONS);
    let count = high.values().sum::<i64>() as usize;
    assert!(
        count >= acked.len(),
        "{count} records after the crash, {} acknowledged",
        acked.len()
    );
    eprintln!(
        "kill -9: {sent} records sent, {} acknowledged, {count} in the log after the restart",
        acked.len()
    );
    let read = consume(&broker, "crash", &PARTITIONS, count);
    assert_eq!(read.count(), count);
    assert_eq!(read.high_watermarks, high, "nothing is appended after the restart");

    // Every acknowledged record is where its report said, byte for byte; anything else is a
    // record that was sent but not yet acknowledged, in send order, never twice.
    let mut seen = BTreeSet::new();
    for (&partition, got) in &read.partitions {
        let mut last = None;
        for (position, (offset, r)) in got.iter().enumerate() {
            assert_eq!(*offset, position as i64, "partition {partition}: offsets without gaps");
            let i: usize = String::from_utf8(r.key.clone().expect("key"))
                .expect("utf-8 key")
                .parse()
                .expect("numeric key");
            assert!(i < sent, "partition {partition} offset {offset}: record {i} was never sent");
            assert_eq!(*r, record(i), "partition {partition} offset {offset}");
            assert!(seen.insert(i), "record {i} appears twice");
            assert!(last < Some(i), "partition {partition}: record {i} after {last:?}");
            last = Some(i);
        }
    }
    for (&(partition, offset), &i) in &acked {
        let got = read.partitions.get(&partition).and_then(|g| g.get(offset as usize));
        assert_eq!(
            got.map(|(_, r)| r),
            Some(&record(i)),
            "acknowledged record {i} at partition {partition} offset {offset} is missing or different"
        );
    }
}

#[test]
fn a_long_poll_returns_a_record_produced_while_it_waits() {
    let broker = BrokerProcess::start(&[]);
    let _log = LogOnFailure::new(&broker);
    const PARTITIONS: [i32; 4] = [0, 1, 2, 3];
    create_topic(&broker, "long-poll", PARTITIONS.len() as i32, &[]);
    // The consumer asks the broker to hold each fetch for up to 30 s (the broker's own cap).
    // A record must come back well before a fetch that was not woken up would return: the
    // bound below is generous, and still shorter than that 30 s.
    let waiting = consumer(&broker, &[("fetch.wait.max.ms", "30000")]);
    assign_from_beginning(&waiting, "long-poll", &PARTITIONS);
    let p = producer(&broker, &[("acks", "all")]);
    let mut read = Read::default();
    // The partitions sit on different shards: wake-ups must cross them.
    let mut sent = Vec::new();
    let mut deliveries: Vec<Delivery> = Vec::new();
    for (n, partition) in [3, 0, 1].into_iter().enumerate() {
        // Let the consumer's fetch park on the empty log first.
        let parked = Instant::now() + Duration::from_secs(2);
        while Instant::now() < parked {
            assert!(waiting.poll(Duration::from_millis(100)).is_none(), "nothing was produced yet");
        }
        let r = Record::new(format!("late-{n}"), format!("produced while the fetch waited {n}"));
        sent.push((Some(partition), r.clone()));
        let delivered = send_all_ok(&p, "long-poll", &[(Some(partition), r)]);
        deliveries.push(Ok(delivered[0]));
        let started = Instant::now();
        let what = format!("record {n} to partition {partition}, acknowledged at {:?}", delivered[0]);
        poll_until(&waiting, sent.len(), &mut read, Duration::from_secs(20), &what);
        eprintln!("long poll: record {n} consumed {:?} after its acknowledgement", started.elapsed());
    }
    read.high_watermarks = watermarks(&broker, "long-poll", &PARTITIONS);
    read.high_watermarks.retain(|p, _| [3, 0, 1].contains(p));
    check_exact(&read, &sent, &deliveries);
}

#[test]
fn the_admin_client_creates_topics_with_partitions_and_configs() {
    let broker = BrokerProcess::start(&[]);
    let _log = LogOnFailure::new(&broker);
    let admin = admin(&broker);
    let options = admin_options();
    let create = |topics: &[&NewTopic<'_>], options: &AdminOptions| {
        futures::executor::block_on(admin.create_topics(topics.iter().copied(), options)).expect("CreateTopics")
    };

    let configured = NewTopic::new("configured", 7, TopicReplication::Fixed(1))
        .set("max.message.bytes", "2000000")
        .set("retention.ms", "3600000")
        .set("cleanup.policy", "delete");
    let plain = NewTopic::new("plain", 1, TopicReplication::Fixed(1));
    assert_eq!(
        create(&[&configured, &plain], &options),
        vec![Ok("configured".to_owned()), Ok("plain".to_owned())]
    );

    // Refusals, each with Kafka's error code.
    let again = NewTopic::new("configured", 3, TopicReplication::Fixed(1));
    let bad_config = NewTopic::new("bad-config", 1, TopicReplication::Fixed(1)).set("retention.ms", "soon");
    let unknown_config = NewTopic::new("unknown-config", 1, TopicReplication::Fixed(1)).set("no.such.config", "1");
    let too_many_replicas = NewTopic::new("three-replicas", 1, TopicReplication::Fixed(3));
    let no_partitions = NewTopic::new("no-partitions", 0, TopicReplication::Fixed(1));
    let bad_name = NewTopic::new("bad name", 1, TopicReplication::Fixed(1));
    assert_eq!(
        create(
            &[&again, &bad_config, &unknown_config, &too_many_replicas, &no_partitions, &bad_name],
            &options
        ),
        vec![
            Err(("configured".to_owned(), RDKafkaErrorCode::TopicAlreadyExists)),
            Err(("bad-config".to_owned(), RDKafkaErrorCode::InvalidConfig)),
            Err(("unknown-config".to_owned(), RDKafkaErrorCode::InvalidConfig)),
            Err(("three-replicas".to_owned(), RDKafkaErrorCode::InvalidReplicationFactor)),
            Err(("no-partitions".to_owned(), RDKafkaErrorCode::InvalidPartitions)),
            Err(("bad name".to_owned(), RDKafkaErrorCode::InvalidTopic)),
        ]
    );

    // validate_only checks and creates nothing.
    let dry = NewTopic::new("dry-run", 5, TopicReplication::Fixed(1));
    assert_eq!(
        create(&[&dry], &admin_options().validate_only(true)),
        vec![Ok("dry-run".to_owned())]
    );

    // Metadata shows what was created, and only that (besides the internal topics).
    let metadata = admin.inner().fetch_metadata(None, WAIT_MAX).expect("Metadata for all topics");
    let topics: BTreeMap<&str, usize> = metadata.topics().iter().map(|t| (t.name(), t.partitions().len())).collect();
    assert_eq!(
        topics,
        BTreeMap::from([
            ("__consumer_offsets", 16),
            ("__transaction_state", 16),
            ("configured", 7),
            ("plain", 1)
        ])
    );

    // The configs took effect: 1.5 MiB fits under this topic's limit, not under the default.
    let p = producer(&broker, &[("acks", "all"), ("message.max.bytes", "3145728")]);
    let big = Record::new("big", noise(9, 1536 * 1024));
    let sent = send_all(&p, "configured", &[(Some(6), big.clone())]);
    assert!(sent[0].is_ok(), "1.5 MiB on a topic whose limit is 2000000 bytes: {:?}", sent[0]);
    let refused = send_all(&p, "plain", &[(Some(0), big.clone())]);
    assert_eq!(
        refused[0],
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)),
        "1.5 MiB on a topic with the default limit"
    );
    let read = consume(&broker, "configured", &[6], 1);
    check_exact(&read, &[(Some(6), big)], &sent);
}

/// A consumer far behind the batch cache (1 MiB per shard here) reads everything from the log,
/// through the read-ahead windows of `iouring-storage/src/read_ahead.rs`, across segment
/// boundaries: every record arrives once, in order, byte for byte, and the broker says that
/// read-ahead served reads.
#[test]
fn a_consumer_behind_the_batch_cache_reads_everything_through_the_read_ahead() {
    let broker = BrokerProcess::start(&["--batch-cache-bytes", "2097152"]);
    let _log = LogOnFailure::new(&broker);
    create_topic(&broker, "behind", 2, &[("segment.bytes", "8388608")]);
    // About 40 MB of incompressible 10 KiB values: many segments and read-ahead windows per
    // partition, far more than the cache holds.
    let records: Vec<(Option<i32>, Record)> = (0..4000u64)
        .map(|i| (None, Record::new(format!("k{i}"), noise(i, 10 * 1024))))
        .collect();
    let deliveries = send_all(&producer(&broker, &[("acks", "all"), ("linger.ms", "5")]), "behind", &records);
    let read = consume(&broker, "behind", &[0, 1], records.len());
    check_exact(&read, &records, &deliveries);
    // The shards publish their read-ahead counter every few seconds.
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let (status, body) = common::http_get(&broker.admin(), "/metrics");
        assert_eq!(status, 200);
        let served: f64 = body
            .lines()
            .filter(|l| l.starts_with("broker_read_ahead_served_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if served > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no read was served by read-ahead:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
