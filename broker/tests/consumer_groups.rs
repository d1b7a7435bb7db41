//! Consumer groups with real clients against the real broker binary: librdkafka consumers
//! joining and leaving one group over 12 partitions, and kafka-python consumers committing,
//! resuming after a restart and a kill -9, seeking, and looking up offsets by time
//! (`tests/python/groups_test.py`).
//!
//! The rdkafka test keeps one ordered log of what every consumer read and what each
//! successful synchronous commit covered. Nothing may be read again at an offset below one
//! already committed for its partition (a commit is a promise that the group moved past it),
//! and every record must be read at least once.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::BrokerProcess;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

/// Longest any wait may take before the test fails; generous for a debug build on a loaded
/// 2-core machine, never part of what is asserted.
const WAIT_MAX: Duration = Duration::from_secs(120);

const PARTITIONS: i32 = 12;
const RECORDS_PER_PARTITION: i64 = 400;

/// One event, in the order it happened across all consumers.
#[derive(Debug, Clone)]
enum Event {
    Read { consumer: usize, partition: i32, offset: i64 },
    Committed { consumer: usize, partition: i32, next: i64 },
}

struct Member {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// One member's bookkeeping, shared with librdkafka's rebalance callbacks: what it read and
/// has not committed yet, per partition, and how often it was given partitions.
struct MemberState {
    id: usize,
    topic: String,
    events: Arc<Mutex<Vec<Event>>>,
    pending: Mutex<BTreeMap<i32, i64>>,
    assigned: Arc<AtomicUsize>,
}

impl MemberState {
    /// Commits what was read of `partitions` (all when `None`), synchronously, and logs the
    /// commit if it succeeded. A commit refused because the group moved on is fine: those
    /// records may be read again; only a commit that succeeded is a promise.
    fn commit(&self, consumer: &BaseConsumer<MemberState>, partitions: Option<&[i32]>) {
        let mut pending = self.pending.lock().unwrap();
        let chosen: Vec<(i32, i64)> = pending
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|only| only.contains(p)))
            .map(|(&p, &next)| (p, next))
            .collect();
        if chosen.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for &(p, next) in &chosen {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(next)).expect("offset");
            pending.remove(&p);
        }
        if consumer.commit(&tpl, CommitMode::Sync).is_ok() {
            let mut log = self.events.lock().unwrap();
            for (partition, next) in chosen {
                log.push(Event::Committed {
                    consumer: self.id,
                    partition,
                    next,
                });
            }
        }
    }
}

impl ClientContext for MemberState {}

impl ConsumerContext for MemberState {
    /// Before partitions go, what was read of them is committed, as a careful application does;
    /// offsets of partitions it no longer owns are never committed later.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            self.commit(consumer, Some(&revoked));
            self.pending.lock().unwrap().retain(|p, _| !revoked.contains(p));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if tpl.count() > 0 {
                self.assigned.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn start_broker() -> BrokerProcess {
    // No initial rebalance delay: members join as soon as they ask (Kafka's default is 3 s).
    BrokerProcess::start(&["--group-initial-rebalance-delay-ms", "0"])
}

fn produce(broker: &BrokerProcess, topic: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for p in 0..PARTITIONS {
        for i in 0..RECORDS_PER_PARTITION {
            let value = format!("{p}:{i}");
            loop {
                match producer.send(BaseRecord::<(), _>::to(topic).partition(p).payload(&value)) {
                    Ok(()) => break,
                    Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => panic!("send: {e}"),
                }
            }
        }
    }
    producer.flush(WAIT_MAX).expect("every record delivered");
}

/// A group member that reads slowly (so that membership changes overlap its work) and commits
/// what it read, synchronously, every few records.
/// What every member of one churn run shares.
struct Churn<'a> {
    broker: &'a BrokerProcess,
    topic: &'a str,
    group: &'a str,
    strategy: &'a str,
    events: Arc<Mutex<Vec<Event>>>,
    /// Records read by all members.
    read: Arc<AtomicUsize>,
}

fn member(run: &Churn<'_>, id: usize, assigned: Arc<AtomicUsize>) -> Member {
    let (broker, topic, group, strategy) = (run.broker, run.topic, run.group, run.strategy);
    let (events, read) = (run.events.clone(), run.read.clone());
    let state = MemberState {
        id,
        topic: topic.to_owned(),
        events: events.clone(),
        pending: Mutex::new(BTreeMap::new()),
        assigned,
    };
    let consumer: BaseConsumer<MemberState> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("client.id", format!("member-{id}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("partition.assignment.strategy", strategy)
        .create_with_context(state)
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let stop = Arc::new(AtomicBool::new(false));
    let halt = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut since_commit = 0;
        while !halt.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    events.lock().unwrap().push(Event::Read {
                        consumer: id,
                        partition: m.partition(),
                        offset: m.offset(),
                    });
                    read.fetch_add(1, Ordering::Relaxed);
                    consumer.context().pending.lock().unwrap().insert(m.partition(), m.offset() + 1);
                    since_commit += 1;
                    std::thread::sleep(Duration::from_millis(2));
                    if since_commit >= 25 {
                        consumer.context().commit(&consumer, None);
                        since_commit = 0;
                    }
                }
                Some(Err(e)) => panic!("member {id}: consumer error: {e}"),
                None => {
                    consumer.context().commit(&consumer, None);
                    since_commit = 0;
                }
            }
        }
        consumer.context().commit(&consumer, None);
        // Dropping the consumer closes it, which leaves the group.
        drop(consumer);
    });
    Member { stop, handle }
}

fn stop(m: Member) {
    m.stop.store(true, Ordering::Relaxed);
    m.handle.join().expect("member thread panicked");
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The committed position of every partition, as a fresh client sees it.
fn committed(broker: &BrokerProcess, topic: &str, group: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let answer = consumer.committed_offsets(tpl, WAIT_MAX).expect("committed offsets");
    answer
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                other => panic!("partition {} has no committed offset: {other:?}", e.partition()),
            };
            (e.partition(), offset)
        })
        .collect()
}

#[test]
fn members_join_and_leave_and_nothing_committed_is_read_twice_or_lost() {
    churn("range,roundrobin");
}

/// The same with librdkafka's cooperative incremental rebalancing (KIP-429), which the
/// classic protocol carries: members give up only the partitions that move.
#[test]
fn cooperative_sticky_members_join_and_leave_and_nothing_committed_is_read_twice_or_lost() {
    churn("cooperative-sticky");
}

fn churn(strategy: &str) {
    let broker = start_broker();
    let topic = "groups-churn";
    let group = "churn";
    create_topic(&broker, topic, PARTITIONS);
    produce(&broker, topic);
    let total = (PARTITIONS as i64 * RECORDS_PER_PARTITION) as usize;

    let events = Arc::new(Mutex::new(Vec::new()));
    let read = Arc::new(AtomicUsize::new(0));
    let reads_at = |n: usize| {
        let read = read.clone();
        move || read.load(Ordering::Relaxed) >= n
    };
    let assigned: Vec<Arc<AtomicUsize>> = (0..=4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let run = Churn {
        broker: &broker,
        topic,
        group,
        strategy,
        events: events.clone(),
        read: read.clone(),
    };
    let join = |id: usize| member(&run, id, assigned[id].clone());
    let first = join(1);
    wait_for("the first member to read", reads_at(total / 6));
    let second = join(2);
    wait_for("two members to read", reads_at(total / 3));
    let third = join(3);
    wait_for("three members to read", reads_at(total / 2));
    stop(first);
    wait_for("the rest after the first left", reads_at(2 * total / 3));
    let fourth = join(4);
    wait_for("the fourth member to be given partitions", || {
        assigned[4].load(Ordering::Relaxed) > 0
    });
    // Run until every partition's commit reaches its end.
    wait_for("every partition committed to its end", || {
        let log = events.lock().unwrap();
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        for e in log.iter() {
            if let Event::Committed { partition, next, .. } = e {
                let end = ends.entry(*partition).or_default();
                *end = (*end).max(*next);
            }
        }
        ends.len() == PARTITIONS as usize && ends.values().all(|&e| e == RECORDS_PER_PARTITION)
    });
    for m in [second, third, fourth] {
        stop(m);
    }

    let log = events.lock().unwrap().clone();
    // Per partition, the highest committed position so far and the member that committed it.
    let mut committed_to: BTreeMap<i32, (i64, usize)> = BTreeMap::new();
    let mut seen: BTreeMap<i32, Vec<bool>> = (0..PARTITIONS).map(|p| (p, vec![false; RECORDS_PER_PARTITION as usize])).collect();
    let mut readers: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, e) in log.iter().enumerate() {
        match *e {
            Event::Read {
                consumer,
                partition,
                offset,
            } => {
                let (floor, by) = committed_to.get(&partition).copied().unwrap_or((0, 0));
                assert!(
                    offset >= floor,
                    "event {i}: member {consumer} read partition {partition} offset {offset}, below {floor} committed by member {by}"
                );
                assert!((0..RECORDS_PER_PARTITION).contains(&offset), "offset {offset} out of range");
                seen.get_mut(&partition).expect("known partition")[offset as usize] = true;
                *readers.entry(consumer).or_default() += 1;
            }
            Event::Committed { consumer, partition, next } => {
                let c = committed_to.entry(partition).or_default();
                if next > c.0 {
                    *c = (next, consumer);
                }
            }
        }
    }
    for (p, offsets) in &seen {
        let missing: Vec<usize> = offsets.iter().enumerate().filter(|(_, s)| !**s).map(|(o, _)| o).collect();
        assert!(missing.is_empty(), "partition {p}: never read offsets {missing:?}");
    }
    for id in 1..=3 {
        assert!(readers.get(&id).copied().unwrap_or(0) > 0, "member {id} read nothing: {readers:?}");
    }
    let rebalances: Vec<usize> = assigned[1..].iter().map(|a| a.load(Ordering::Relaxed)).collect();
    assert!(
        rebalances.iter().all(|&n| n > 0),
        "every member was given partitions: {rebalances:?}"
    );
    let duplicates = log.iter().filter(|e| matches!(e, Event::Read { .. })).count() - total;
    eprintln!(
        "read {} records, {duplicates} of them again after a rebalance (never a committed one); per member {readers:?}; \
         assignments per member {rebalances:?}",
        total + duplicates
    );
    let stored = committed(&broker, topic, group);
    assert_eq!(
        stored,
        (0..PARTITIONS).map(|p| (p, RECORDS_PER_PARTITION)).collect::<BTreeMap<_, _>>()
    );
}

fn create_topic(broker: &BrokerProcess, name: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new().operation_timeout(Some(WAIT_MAX))))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// Committed offsets, including those of a group that is gone, survive a clean restart and a
/// kill -9, and a group's consumers resume exactly where it committed.
#[test]
fn kafka_python_commits_survive_restart_and_kill_9() {
    let mut broker = start_broker();
    run_case(&broker, "commit");
    broker.stop();
    broker.restart();
    run_case(&broker, "resume_after_restart");
    broker.kill();
    broker.restart();
    run_case(&broker, "resume_after_kill");
}

#[test]
fn kafka_python_seek_offsets_for_times_and_commit_metadata_in_a_group() {
    let broker = start_broker();
    run_case(&broker, "seek_in_group");
}

#[test]
fn kafka_python_two_members_split_the_partitions() {
    let broker = start_broker();
    run_case(&broker, "two_members");
}

#[test]
fn kafka_python_admin_lists_describes_and_deletes_groups() {
    let broker = start_broker();
    run_case(&broker, "admin_groups");
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/groups_test.py");

fn run_case(broker: &BrokerProcess, case: &str) {
    let bootstrap = broker.bootstrap();
    let args = [std::ffi::OsStr::new(&bootstrap), std::ffi::OsStr::new(case)];
    common::run_python_case(broker, SCRIPT, &args, case, WAIT_MAX);
}

/// Counts every rebalance event (partitions assigned or revoked) a consumer sees.
struct Rebalances(Arc<AtomicUsize>);

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_) | Rebalance::Revoke(_)) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn static_member(broker: &BrokerProcess, topic: &str, instance: &str, events: Arc<AtomicUsize>) -> BaseConsumer<Rebalances> {
    let consumer: BaseConsumer<Rebalances> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "static-group")
        .set("group.instance.id", instance)
        .set("session.timeout.ms", "30000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.auto.commit", "false")
        .create_with_context(Rebalances(events))
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Polls `consumers` for `time`, serving their group protocol.
fn serve(consumers: &[&BaseConsumer<Rebalances>], time: Duration) {
    let until = Instant::now() + time;
    while Instant::now() < until {
        for c in consumers {
            let _ = c.poll(Duration::from_millis(20));
        }
    }
}

/// Static membership (KIP-345): a member that restarts with the same group.instance.id within
/// its session timeout takes its place back without a rebalance, so the other member keeps
/// its partitions undisturbed.
#[test]
fn a_static_member_restarts_without_disturbing_the_other() {
    let broker = start_broker();
    create_topic(&broker, "static-topic", 4);
    let (a_events, b_events) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = static_member(&broker, "static-topic", "instance-a", a_events.clone());
    let b = static_member(&broker, "static-topic", "instance-b", b_events.clone());
    let deadline = Instant::now() + WAIT_MAX;
    while a.assignment().map_or(0, |t| t.count()) + b.assignment().map_or(0, |t| t.count()) != 4
        || a.assignment().map_or(0, |t| t.count()) == 0
        || b.assignment().map_or(0, |t| t.count()) == 0
    {
        assert!(Instant::now() < deadline, "the two static members never split the 4 partitions");
        serve(&[&a, &b], Duration::from_millis(100));
    }
    // Let the group settle, then note what b has seen so far.
    serve(&[&a, &b], Duration::from_secs(2));
    let b_before = b_events.load(Ordering::Relaxed);
    let b_assignment = b.assignment().expect("assignment");

    // a goes away without leaving (a static member does not send LeaveGroup) and comes back.
    drop(a);
    let a = static_member(&broker, "static-topic", "instance-a", Arc::new(AtomicUsize::new(0)));
    let deadline = Instant::now() + WAIT_MAX;
    while a.assignment().map_or(0, |t| t.count()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the restarted static member never got its partitions back"
        );
        serve(&[&a, &b], Duration::from_millis(100));
    }
    serve(&[&a, &b], Duration::from_secs(2));
    assert_eq!(b_events.load(Ordering::Relaxed), b_before, "the other member saw no rebalance");
    assert_eq!(b.assignment().expect("assignment"), b_assignment);
    assert_eq!(a.assignment().expect("assignment").count() + b_assignment.count(), 4);
}
