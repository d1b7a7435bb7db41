//! Transactions with librdkafka against the real broker binary: an exactly-once
//! consume-transform-produce loop where every other transaction aborts, read back by a
//! read_committed and a read_uncommitted consumer; the group's committed offsets moving only
//! with committed transactions; a second instance fencing the first; a transaction left open
//! past its timeout being aborted; and DescribeTransactions and ListTransactions.

mod common;
mod raw_client;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::BrokerProcess;
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest, ListTransactionsResponse, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const WAIT_MAX: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 2;
const INPUT: usize = 200;
const CHUNK: usize = 20;

fn start_broker() -> BrokerProcess {
    BrokerProcess::start(&["--group-initial-rebalance-delay-ms", "0"])
}

fn create_topics(broker: &BrokerProcess, names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let results = futures::executor::block_on(admin.create_topics(&topics, &AdminOptions::new().operation_timeout(Some(WAIT_MAX))))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

fn transactional_producer(broker: &BrokerProcess, id: &str, timeout_ms: &str) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    producer.init_transactions(WAIT_MAX).expect("init_transactions");
    producer
}

fn consumer(broker: &BrokerProcess, group: &str, isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer")
}

fn assign_all(c: &BaseConsumer, topic: &str) {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("offset");
    }
    c.assign(&tpl).expect("assign");
}

/// Polls until `count` records arrived, then a little longer to prove there are no more.
fn read(c: &BaseConsumer, count: usize) -> Vec<(i32, i64, String)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT_MAX;
    while out.len() < count {
        assert!(Instant::now() < deadline, "{} of {count} records", out.len());
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("consumer error");
            out.push((
                m.partition(),
                m.offset(),
                String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap(),
            ));
        }
    }
    let settle = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < settle {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("consumer error");
            panic!(
                "a record beyond the {count} expected: partition {} offset {}",
                m.partition(),
                m.offset()
            );
        }
    }
    out
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, value: &str) {
    producer
        .send(BaseRecord::<(), _>::to(topic).partition(partition).payload(value))
        .expect("queued");
}

#[test]
fn consume_transform_produce_with_half_the_transactions_aborted() {
    let broker = start_broker();
    create_topics(&broker, &["eos-in", "eos-out"]);
    let plain: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("producer");
    for i in 0..INPUT {
        send(&plain, "eos-in", (i % 2) as i32, &format!("in-{i}"));
    }
    plain.flush(WAIT_MAX).expect("input written");

    let input = consumer(&broker, "eos-group", "read_committed");
    assign_all(&input, "eos-in");
    let records = read(&input, INPUT);
    let producer = transactional_producer(&broker, "eos-transformer", "60000");
    let mut committed_outputs = Vec::new();
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    let mut committed_positions: BTreeMap<i32, i64> = BTreeMap::new();
    for (k, chunk) in records.chunks(CHUNK).enumerate() {
        producer.begin_transaction().expect("begin");
        for (p, offset, value) in chunk {
            let out = value.replace("in-", "out-");
            send(&producer, "eos-out", *p, &out);
            positions.insert(*p, offset + 1);
            if k % 2 == 0 {
                committed_outputs.push(out);
            }
        }
        let mut offsets = TopicPartitionList::new();
        for (&p, &next) in &positions {
            offsets.add_partition_offset("eos-in", p, Offset::Offset(next)).expect("offset");
        }
        let metadata = input.group_metadata().expect("group metadata");
        producer
            .send_offsets_to_transaction(&offsets, &metadata, WAIT_MAX)
            .expect("send offsets");
        // A BaseProducer's delivery reports are served by polling, which flush does.
        producer.flush(WAIT_MAX).expect("flushed");
        if k % 2 == 0 {
            producer.commit_transaction(WAIT_MAX).expect("commit");
            committed_positions = positions.clone();
        } else {
            producer.abort_transaction(WAIT_MAX).expect("abort");
        }
    }

    // read_committed: exactly the outputs of committed transactions, in order per partition.
    let committed_reader = consumer(&broker, "reader-committed", "read_committed");
    assign_all(&committed_reader, "eos-out");
    let mut seen: Vec<String> = read(&committed_reader, committed_outputs.len())
        .into_iter()
        .map(|(_, _, v)| v)
        .collect();
    seen.sort();
    committed_outputs.sort();
    assert_eq!(seen, committed_outputs);

    // read_uncommitted: everything written, aborted transactions too (markers are not records).
    let everything = consumer(&broker, "reader-uncommitted", "read_uncommitted");
    assign_all(&everything, "eos-out");
    assert_eq!(read(&everything, INPUT).len(), INPUT);

    // The group's offsets moved with the committed transactions only.
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition("eos-in", p);
    }
    let stored = input.committed_offsets(tpl, WAIT_MAX).expect("committed offsets");
    let stored: BTreeMap<i32, i64> = stored
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), o),
            other => panic!("partition {}: {other:?}", e.partition()),
        })
        .collect();
    assert_eq!(stored, committed_positions);
    assert!(broker.problems().is_empty(), "{:?}", broker.problems());
}

#[test]
fn a_new_instance_fences_the_old_and_a_timed_out_transaction_is_aborted() {
    let broker = start_broker();
    create_topics(&broker, &["fenced"]);
    let old = transactional_producer(&broker, "fence-me", "60000");
    old.begin_transaction().expect("begin");
    send(&old, "fenced", 0, "from-the-old-instance");
    old.flush(WAIT_MAX).expect("flushed");
    // The new instance aborts the old one's open transaction and takes over.
    let new = transactional_producer(&broker, "fence-me", "60000");
    let err = old.commit_transaction(WAIT_MAX).expect_err("the old instance is fenced");
    assert!(err.to_string().to_lowercase().contains("fenc"), "{err}");
    new.begin_transaction().expect("begin");
    send(&new, "fenced", 0, "from-the-new-instance");
    new.commit_transaction(WAIT_MAX).expect("commit");

    // A transaction open past its timeout is aborted by the coordinator.
    let slow = transactional_producer(&broker, "too-slow", "1000");
    slow.begin_transaction().expect("begin");
    send(&slow, "fenced", 1, "never-committed");
    slow.flush(WAIT_MAX).expect("flushed");
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        slow.commit_transaction(WAIT_MAX).is_err(),
        "the timed-out transaction cannot commit"
    );

    let reader = consumer(&broker, "fence-reader", "read_committed");
    assign_all(&reader, "fenced");
    let values: Vec<String> = read(&reader, 1).into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(values, vec!["from-the-new-instance".to_owned()]);

    // The coordinator reports the transactional ids.
    let mut conn = raw_client::Conn::open(&broker);
    let listed: ListTransactionsResponse = conn.call(
        ApiKey::ListTransactions,
        1,
        &ListTransactionsRequest::default().with_duration_filter(-1),
    );
    let ids: Vec<String> = listed.transaction_states.iter().map(|s| s.transactional_id.0.to_string()).collect();
    assert_eq!(ids, vec!["fence-me".to_owned(), "too-slow".to_owned()]);
    let described: DescribeTransactionsResponse = conn.call(
        ApiKey::DescribeTransactions,
        0,
        &DescribeTransactionsRequest::default().with_transactional_ids(vec![
            TransactionalId(StrBytes::from_static_str("fence-me")),
            TransactionalId(StrBytes::from_static_str("nobody")),
        ]),
    );
    let fence_me = &described.transaction_states[0];
    assert_eq!((fence_me.error_code, fence_me.transaction_state.as_str()), (0, "CompleteCommit"));
    assert!(fence_me.producer_epoch >= 2, "fenced twice over: epoch {}", fence_me.producer_epoch);
    assert_eq!(described.transaction_states[1].error_code, 105, "TRANSACTIONAL_ID_NOT_FOUND");
}

/// Compaction and transactions: a value written by an aborted transaction never counts as its
/// key's latest, so compaction keeps the committed value it would otherwise have hidden (and
/// removes the aborted records).
#[test]
fn compaction_keeps_committed_values_over_aborted_ones() {
    let broker = BrokerProcess::start(&["--compaction-check-interval-ms", "200"]);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client");
    let topic = NewTopic::new("compacted-txn", 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "65536")
        .set("min.cleanable.dirty.ratio", "0.01");
    for r in futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).expect("create") {
        r.expect("created");
    }
    let producer = transactional_producer(&broker, "compacting", "60000");
    let keyed = |key: &str, value: &str| {
        producer
            .send(BaseRecord::to("compacted-txn").partition(0).key(key).payload(value))
            .expect("queued");
    };
    producer.begin_transaction().expect("begin");
    keyed("k", "committed");
    producer.commit_transaction(WAIT_MAX).expect("commit");
    producer.begin_transaction().expect("begin");
    keyed("k", "aborted");
    producer.flush(WAIT_MAX).expect("flushed");
    producer.abort_transaction(WAIT_MAX).expect("abort");
    // Filler with keys of its own rolls the segments, so the above is sealed and cleanable.
    // (In transactions of 50: a batch must fit in one 64 KiB segment.)
    for chunk in 0..4 {
        producer.begin_transaction().expect("begin");
        for i in chunk * 50..(chunk + 1) * 50 {
            keyed(&format!("filler-{i}"), &"f".repeat(800));
        }
        producer.commit_transaction(WAIT_MAX).expect("commit");
    }

    let deadline = Instant::now() + WAIT_MAX;
    while !broker.log().contains("bytes_before") {
        assert!(Instant::now() < deadline, "compaction never ran on compacted-txn");
        std::thread::sleep(Duration::from_millis(200));
    }
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "compacted-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("compacted-txn", 0, Offset::Beginning).expect("offset");
    reader.assign(&tpl).expect("assign");
    let mut values = BTreeMap::new();
    let deadline = Instant::now() + WAIT_MAX;
    while values.len() < 201 {
        assert!(Instant::now() < deadline, "read {} keys", values.len());
        if let Some(m) = reader.poll(Duration::from_millis(100)) {
            let m = m.expect("consumer error");
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            values.insert(key, String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(values.get("k").map(String::as_str), Some("committed"));
}
