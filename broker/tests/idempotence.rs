//! The idempotent producer against the real broker binary: InitProducerId, Kafka's answers to
//! duplicate, out-of-order and old-epoch batches over the raw protocol (also after a clean
//! restart and a SIGKILL), and librdkafka with `enable.idempotence=true` through a proxy that
//! drops the connection after the broker has taken a produce request but before the client
//! sees the answer: every record must land exactly once, in order.

mod common;
mod raw_client;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::BrokerProcess;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, MetadataResponse, ProducerId, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use raw_client::{metadata_request, produce, producer_batch, topic, Conn};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Longest any wait may take before the test fails (a debug build on a loaded machine).
const WAIT_MAX: Duration = Duration::from_secs(120);

/// Kafka error codes the tests expect.
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_REQUEST: i16 = 42;

fn init_producer_id(c: &mut Conn, version: i16, txn: Option<&str>, pid: i64, epoch: i16) -> InitProducerIdResponse {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(txn.map(|t| TransactionalId(StrBytes::from_string(t.to_owned()))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch);
    c.call(ApiKey::InitProducerId, version, &request)
}

#[test]
fn raw_batches_get_kafkas_answers_and_duplicates_are_found_after_restart_and_kill_9() {
    let mut b = BrokerProcess::start(&[]);
    let mut c = Conn::open(&b);
    let created: MetadataResponse = c.call(ApiKey::Metadata, 12, &metadata_request("idem"));
    assert_eq!(created.topics[0].error_code, 0);

    // Every version hands out a fresh id at epoch 0; KIP-360's id and epoch get a fresh id
    // too, as Kafka answers idempotent (non-transactional) producers.
    let mut ids = HashSet::new();
    for version in 0..=5 {
        let r = init_producer_id(&mut c, version, None, -1, -1);
        assert_eq!((r.error_code, r.producer_epoch), (0, 0), "v{version}");
        assert!(r.producer_id.0 >= 0 && ids.insert(r.producer_id.0));
    }
    let bumped = init_producer_id(&mut c, 4, None, *ids.iter().next().unwrap(), 0);
    assert_eq!(bumped.error_code, 0);
    assert!(ids.insert(bumped.producer_id.0), "a fresh id, not a reused one");
    assert_eq!(init_producer_id(&mut c, 4, None, 5, -1).error_code, INVALID_REQUEST);
    assert_eq!(init_producer_id(&mut c, 4, Some(""), -1, -1).error_code, INVALID_REQUEST);
    // A transactional id goes to the transaction coordinator: a fresh id at epoch 0 the first time.
    let txn = init_producer_id(&mut c, 4, Some("txn"), -1, -1);
    assert_eq!((txn.error_code, txn.producer_epoch), (0, 0));
    assert!(ids.insert(txn.producer_id.0), "a fresh id for the transactional id");

    let pid = init_producer_id(&mut c, 4, None, -1, -1).producer_id.0;
    assert_eq!(produce(&mut c, "idem", producer_batch(pid, 0, 0, 3, false, false)), (0, 0));
    assert_eq!(produce(&mut c, "idem", producer_batch(pid, 0, 3, 2, false, false)), (0, 3));
    // Retries of either batch: the original offsets, nothing appended.
    assert_eq!(produce(&mut c, "idem", producer_batch(pid, 0, 0, 3, false, false)), (0, 0));
    assert_eq!(produce(&mut c, "idem", producer_batch(pid, 0, 3, 2, false, false)), (0, 3));
    // A gap.
    assert_eq!(
        produce(&mut c, "idem", producer_batch(pid, 0, 9, 1, false, false)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    // A new epoch starts at 0 and fences the old one.
    assert_eq!(produce(&mut c, "idem", producer_batch(pid, 1, 0, 1, false, false)), (0, 5));
    assert_eq!(
        produce(&mut c, "idem", producer_batch(pid, 0, 5, 1, false, false)).0,
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(produce(&mut c, "idem", producer_batch(pid, 1, 1, 1, false, false)), (0, 6));
    drop(c);

    b.stop();
    b.restart();
    let mut c = Conn::open(&b);
    assert_eq!(
        produce(&mut c, "idem", producer_batch(pid, 1, 1, 1, false, false)),
        (0, 6),
        "after a clean restart"
    );
    assert_eq!(
        produce(&mut c, "idem", producer_batch(pid, 0, 5, 1, false, false)).0,
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(produce(&mut c, "idem", producer_batch(pid, 1, 2, 1, false, false)), (0, 7));
    drop(c);

    b.kill();
    b.restart();
    let mut c = Conn::open(&b);
    assert_eq!(
        produce(&mut c, "idem", producer_batch(pid, 1, 2, 1, false, false)),
        (0, 7),
        "after kill -9"
    );
    assert_eq!(
        produce(&mut c, "idem", producer_batch(pid, 1, 4, 1, false, false)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(produce(&mut c, "idem", producer_batch(pid, 1, 3, 1, false, false)), (0, 8));
    // Producer ids are never reused after a restart either.
    let after = init_producer_id(&mut c, 4, None, -1, -1).producer_id.0;
    assert!(!ids.contains(&after) && after != pid);
    raw_client::assert_no_panic_or_error(&b);
}

/// A TCP proxy in front of the broker that, for every `drop_every`-th produce request (up to
/// `drops_max`), forwards the request, waits for the broker's answer, throws it away and
/// closes both connections: the write landed, and the client must retry it.
struct FaultyProxy {
    port: u16,
    drops: Arc<AtomicUsize>,
}

impl FaultyProxy {
    fn start(listener: TcpListener, broker_port: u16, drop_every: usize, drops_max: usize) -> FaultyProxy {
        let port = listener.local_addr().unwrap().port();
        let drops = Arc::new(AtomicUsize::new(0));
        let produces = Arc::new(AtomicUsize::new(0));
        let d = drops.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", broker_port)) else {
                    continue;
                };
                let doomed = Arc::new(Mutex::new(HashSet::<i32>::new()));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (doomed2, produces, drops) = (doomed.clone(), produces.clone(), d.clone());
                // Client to broker: mark the produce requests whose answers get lost.
                std::thread::spawn(move || {
                    let (mut from, mut to) = (c2, s2);
                    while let Some(frame) = read_frame(&mut from) {
                        let api_key = i16::from_be_bytes([frame[4], frame[5]]);
                        let correlation = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
                        if api_key == ApiKey::Produce as i16 {
                            let n = produces.fetch_add(1, Ordering::SeqCst) + 1;
                            if n % drop_every == 0 && drops.fetch_add(1, Ordering::SeqCst) < drops_max {
                                doomed2.lock().unwrap().insert(correlation);
                            }
                        }
                        if to.write_all(&frame).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                });
                // Broker to client: a doomed answer closes both sides instead.
                std::thread::spawn(move || {
                    let (mut from, mut to) = (server, client);
                    while let Some(frame) = read_frame(&mut from) {
                        let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                        if doomed.lock().unwrap().remove(&correlation) {
                            break;
                        }
                        if to.write_all(&frame).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                });
            }
        });
        FaultyProxy { port, drops }
    }

    /// Connections dropped so far (the counter runs past `drops_max` while it declines more).
    fn dropped(&self, drops_max: usize) -> usize {
        self.drops.load(Ordering::SeqCst).min(drops_max)
    }
}

/// One size-prefixed frame, prefix included; `None` when the peer closed.
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).ok()?;
    let len = i32::from_be_bytes(size);
    let mut frame = vec![0u8; 4 + usize::try_from(len).ok()?];
    frame[..4].copy_from_slice(&size);
    s.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

/// Where a record landed (partition, offset), or why it did not.
type Delivery = Result<(i32, i64), String>;

/// Delivery reports by record index.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<BTreeMap<usize, Delivery>>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let d = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        assert!(self.0.lock().unwrap().insert(index, d).is_none(), "two reports for record {index}");
    }
}

#[test]
fn librdkafka_retries_after_dropped_connections_land_every_record_exactly_once_in_order() {
    const PARTITIONS: i32 = 3;
    const RECORDS: usize = 3000;
    const DROPS_MAX: usize = 12;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let advertised = format!("127.0.0.1:{proxy_port}");
    let b = BrokerProcess::start(&["--advertised-listener", &advertised]);
    let proxy = FaultyProxy::start(listener, b.port, 4, DROPS_MAX);
    let bootstrap = format!("127.0.0.1:{}", proxy.port);

    let mut c = Conn::open(&b);
    let create = kafka_protocol::messages::CreateTopicsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(topic("exactly-once"))
            .with_num_partitions(PARTITIONS)
            .with_replication_factor(1),
    ]);
    let created: kafka_protocol::messages::CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &create);
    assert_eq!(created.topics[0].error_code, 0);

    let producer: BaseProducer<Reports> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("batch.num.messages", "40")
        .set("retry.backoff.ms", "20")
        // Reconnect at once after a drop (the default backoff grows to 10 s).
        .set("reconnect.backoff.ms", "10")
        .set("reconnect.backoff.max.ms", "100")
        .set("message.timeout.ms", "120000")
        .create_with_context(Reports::default())
        .expect("create producer");
    let mut sent: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for i in 0..RECORDS {
        let partition = (i % PARTITIONS as usize) as i32;
        let value = format!("record {i}");
        sent.entry(partition).or_default().push(value.clone());
        let mut record = BaseRecord::<(), str, usize>::with_opaque_to("exactly-once", i)
            .partition(partition)
            .payload(value.as_str());
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    assert!(Instant::now() < deadline, "producer queue stayed full");
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        // Spread the records over many requests, so that several connections get dropped.
        if i % 100 == 99 {
            producer.poll(Duration::from_millis(20));
        }
    }
    producer.flush(WAIT_MAX).expect("every record delivered");
    let reports = producer.context().0.lock().unwrap().clone();
    assert_eq!(reports.len(), RECORDS);
    let failed: Vec<_> = reports.iter().filter(|(_, d)| d.is_err()).take(5).collect();
    assert!(failed.is_empty(), "failed deliveries: {failed:?}");
    let dropped = proxy.dropped(DROPS_MAX);
    assert!(dropped > 0, "the proxy dropped no connection: the test proved nothing");

    // Read everything back: each partition holds exactly what was sent to it, in order, at
    // offsets 0.. without a gap, and each delivery report names the offset it was read at.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "idempotence-test-assign-only")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()
        .expect("create consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("exactly-once", p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut read: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let deadline = Instant::now() + WAIT_MAX;
    while read.values().map(Vec::len).sum::<usize>() < RECORDS {
        assert!(
            Instant::now() < deadline,
            "read only {} records",
            read.values().map(Vec::len).sum::<usize>()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consumer error");
            let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            read.entry(m.partition()).or_default().push((m.offset(), value));
        }
    }
    for p in 0..PARTITIONS {
        let got = &read[&p];
        let values: Vec<&String> = got.iter().map(|(_, v)| v).collect();
        let expected: Vec<&String> = sent[&p].iter().collect();
        assert_eq!(values, expected, "partition {p}: every record once, in order");
        assert!(
            got.iter().enumerate().all(|(i, (o, _))| *o == i as i64),
            "partition {p}: offsets 0.. without gaps"
        );
        let (_, high) = consumer.fetch_watermarks("exactly-once", p, WAIT_MAX).unwrap();
        assert_eq!(high, got.len() as i64, "partition {p}: nothing more in the log");
    }
    for (i, d) in &reports {
        let (p, o) = d.as_ref().unwrap();
        assert_eq!(
            read[p][*o as usize].1,
            format!("record {i}"),
            "record {i}'s delivery report names its offset"
        );
    }
    eprintln!("{dropped} connections dropped after a produce request reached the broker");
    raw_client::assert_no_panic_or_error(&b);
}
