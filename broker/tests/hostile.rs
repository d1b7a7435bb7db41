//! Hostile and broken clients against the real broker binary. Each test sends what a correct
//! client never would, then checks that the broker still runs, said what happened (a Kafka
//! error code, or a closed connection and a log line), kept its memory bounded, lost no data,
//! and still serves a well-behaved client.
//!
//! The clients are raw sockets (`raw_client`), so that they can send exactly the bytes a test
//! wants. The property-based counterpart, random and mutated frames, is `fuzz_requests.rs`.

mod common;
mod raw_client;

use std::io::{ErrorKind, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    ProduceRequest, ProduceResponse, ResponseHeader,
};
use kafka_protocol::protocol::Decodable;

use common::BrokerProcess;
use raw_client::*;

/// The broker's default `request_bytes_max`.
const REQUEST_BYTES_MAX: usize = 100 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;

/// A v2 batch from raw parts with a correct CRC: one record (`records_count` 1) whose encoded
/// bytes (or compressed stream) are `records`.
fn raw_batch(attributes: i16, timestamp: i64, max_timestamp: i64, records: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(61 + records.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes()); // batch length
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // CRC, below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp.to_be_bytes()); // base timestamp
    b.extend_from_slice(&max_timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&1i32.to_be_bytes()); // records count
    b.extend_from_slice(records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.into()
}

/// Unsigned LEB128, Kafka's varint after zigzag.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn produce(c: &mut Conn, name: &str, partitions: &[(i32, Option<Bytes>)]) -> ProduceResponse {
    let data = partitions
        .iter()
        .map(|(p, records)| PartitionProduceData::default().with_index(*p).with_records(records.clone()))
        .collect();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic(name)).with_partition_data(data)]);
    c.call(ApiKey::Produce, 8, &request)
}

/// The offset ListOffsets answers for `timestamp` (-1: the log end).
fn list_offset(c: &mut Conn, name: &str, partition: i32, timestamp: i64) -> (i16, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default().with_name(topic(name)).with_partitions(vec![
            ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp),
        ])]);
    let response: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 5, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset)
}

fn create_topic(c: &mut Conn, name: &str, partitions: i32) {
    // Auto-creation gives `default_partitions` (1); for more, ask CreateTopics.
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let response: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &request);
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
}

#[test]
fn truncated_frames_and_connections_closed_mid_frame() {
    let mut b = BrokerProcess::start(&[]);
    // Half a size prefix, then gone.
    let mut c = Conn::open(&b);
    c.send_raw(&[0, 0]);
    drop(c);
    // A frame that promises 100 bytes and delivers 10.
    let mut c = Conn::open(&b);
    c.send_raw(&raw_frame(100, &[0u8; 10]));
    drop(c);
    assert_logged(&b, "connection closed mid-request");
    // A whole frame whose body stops short: Metadata v1 declaring 3 topics, carrying one.
    let mut body = 3i32.to_be_bytes().to_vec();
    body.extend_from_slice(&1i16.to_be_bytes());
    body.push(b'x');
    let mut c = Conn::open(&b);
    c.send_raw(&header_v1_frame(ApiKey::Metadata as i16, 1, &body));
    assert!(c.closed_by_broker());
    assert_warned(&b, "Not enough bytes remaining");
    // A frame that ends inside its request header.
    let mut c = Conn::open(&b);
    c.send_raw(&raw_frame(9, &[0, 3, 0, 1, 0, 0, 0, 1, 0]));
    assert!(c.closed_by_broker());
    assert_warned(&b, "bad Metadata request header");
    assert_serves(&mut b);
    assert_no_panic_or_error(&b);
}

#[test]
fn clients_vanishing_mid_frame_leave_no_memory_behind() {
    let mut b = BrokerProcess::start(&[]);
    assert_serves(&mut b);
    let baseline = memory_bytes(&b, "VmRSS");
    // Many connections each declare a 64 MiB frame and send 4 MiB of it. Only what arrives may
    // cost memory, not what is declared (64 x 64 MiB = 4 GiB).
    const CONNECTIONS: usize = 64;
    const SENT: usize = 4 << 20;
    let mut conns: Vec<Conn> = (0..CONNECTIONS)
        .map(|_| {
            let mut c = Conn::open(&b);
            let mut bytes = raw_frame(64 << 20, &header_v1_frame(ApiKey::Produce as i16, 3, &[])[4..]);
            bytes.resize(4 + SENT, 0xAB);
            c.send_raw(&bytes);
            c
        })
        .collect();
    // Wait until the broker has read what was sent.
    let sent = (CONNECTIONS * SENT) as u64;
    let deadline = Instant::now() + IO_TIMEOUT;
    while memory_bytes(&b, "VmRSS") < baseline + sent * 3 / 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let open = memory_bytes(&b, "VmRSS");
    eprintln!("half-sent frames: broker resident {} MiB -> {} MiB", baseline / MIB, open / MIB);
    assert!(
        open < baseline + sent + 128 * MIB,
        "{CONNECTIONS} half-sent frames of 64 MiB cost {} MiB (baseline {} MiB, {} MiB sent)",
        open / MIB,
        baseline / MIB,
        sent / MIB
    );
    // Then they all vanish: everything must be freed.
    for c in &mut conns {
        c.stream.shutdown(Shutdown::Both).unwrap();
    }
    drop(conns);
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut now = memory_bytes(&b, "VmRSS");
    while now > baseline + 64 * MIB && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        now = memory_bytes(&b, "VmRSS");
    }
    assert!(
        now <= baseline + 64 * MIB,
        "memory not freed after the clients left: {} MiB now, {} MiB before",
        now / MIB,
        baseline / MIB
    );
    assert_logged(&b, "connection closed mid-request");
    assert_serves(&mut b);
    assert_no_panic_or_error(&b);
}

#[test]
fn negative_tiny_and_over_limit_sizes_close_the_connection() {
    let mut b = BrokerProcess::start(&[]);
    for size in [-1, i32::MIN, 0, 7, REQUEST_BYTES_MAX as i32 + 1, i32::MAX] {
        let mut c = Conn::open(&b);
        // Some bytes after the prefix, so the broker has something it must not wait for.
        c.send_raw(&raw_frame(size, &[0u8; 16]));
        assert!(c.closed_by_broker(), "size {size}");
        assert_warned(&b, &format!("size={size}"));
    }
    assert_warned(&b, "request size out of bounds");
    // The largest allowed frame is read in full (and refused for what it holds, not its size).
    let mut c = Conn::open(&b);
    let mut big = raw_frame(REQUEST_BYTES_MAX as i32, &header_v1_frame(ApiKey::Metadata as i16, 1, &[])[4..]);
    big.resize(4 + REQUEST_BYTES_MAX, 0);
    c.send_raw(&big);
    assert!(c.closed_by_broker());
    assert_warned(&b, "left after the request body");
    assert_serves(&mut b);
    assert_no_panic_or_error(&b);
}

#[test]
fn unknown_api_keys_close_the_connection() {
    let mut b = BrokerProcess::start(&[]);
    // A key Kafka defines that this broker does not serve (whichever is first, as APIs get added).
    let unsupported = ApiKey::iter()
        .find(|k| broker::handlers::supported(*k).is_none())
        .expect("some Kafka API is not served");
    for (key, needle) in [
        (9999i16, "unknown API key 9999".to_owned()),
        (-1, "unknown API key -1".to_owned()),
        (
            unsupported as i16,
            format!("API {unsupported:?} (key {}) is not supported", unsupported as i16),
        ),
    ] {
        let mut c = Conn::open(&b);
        c.send_raw(&header_v1_frame(key, 0, &[0u8; 8]));
        assert!(c.closed_by_broker(), "key {key}");
        assert_warned(&b, &needle);
    }
    assert_serves(&mut b);
    assert_no_panic_or_error(&b);
}

#[test]
fn unsupported_versions() {
    let mut b = BrokerProcess::start(&[]);
    let (_, api_versions_max) = broker::handlers::supported(ApiKey::ApiVersions).unwrap();
    // ApiVersions above our maximum: the v0 fallback, UNSUPPORTED_VERSION and our list, and
    // the connection stays open so the client can retry at a version we support.
    for version in [api_versions_max + 1, i16::MAX] {
        let mut c = Conn::open(&b);
        // The body is whatever the newer version holds; the broker must not try to read it.
        c.send_raw(&header_v1_frame(ApiKey::ApiVersions as i16, version, &[0xff; 13]));
        let mut f = c.recv_frame().unwrap();
        let header = ResponseHeader::decode(&mut f, 0).unwrap();
        assert_eq!(header.correlation_id, 7);
        let response = ApiVersionsResponse::decode(&mut f, 0).unwrap();
        assert_eq!(response.error_code, 35, "UNSUPPORTED_VERSION");
        let listed: Vec<(i16, i16, i16)> = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        let ours: Vec<(i16, i16, i16)> = broker::handlers::APIS.iter().map(|&(k, min, max)| (k as i16, min, max)).collect();
        assert_eq!(listed, ours);
        let retry: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert_eq!(retry.error_code, 0);
    }
    // Any other API at a version we do not serve: the connection closes.
    for &(key, min, max) in broker::handlers::APIS {
        if key == ApiKey::ApiVersions {
            continue;
        }
        for version in [max + 1, min - 1, -1, i16::MIN] {
            if (min..=max).contains(&version) {
                continue;
            }
            let mut c = Conn::open(&b);
            c.send_raw(&header_v1_frame(key as i16, version, &[0u8; 8]));
            assert!(c.closed_by_broker(), "{key:?} v{version}");
            assert_warned(&b, &format!("{key:?} version {version} is not supported"));
        }
    }
    assert_serves(&mut b);
    assert_no_panic_or_error(&b);
}

#[test]
fn garbage_headers_close_the_connection() {
    let mut b = BrokerProcess::start(&[]);
    let frames: Vec<(&str, Vec<u8>)> = vec![
        // Client id longer than the frame.
        (
            "client id past the end",
            raw_frame(12, &[0, 3, 0, 1, 0, 0, 0, 1, 0x7f, 0xff, b'a', b'b']),
        ),
        // Client id that is not UTF-8.
        ("client id not UTF-8", {
            let mut v = vec![0, 3, 0, 1, 0, 0, 0, 1, 0, 2, 0xc3, 0x28];
            v.extend_from_slice(&0i32.to_be_bytes());
            raw_frame(v.len() as i32, &v)
        }),
        // Header v2 (Metadata v12) whose tagged fields claim 2^32 - 1 entries.
        ("tagged fields past the end", {
            let v = [0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f];
            raw_frame(v.len() as i32, &v)
        }),
        // Just noise: a key no API has.
        ("noise", raw_frame(32, &[0x5a; 32])),
    ];
    for (what, bytes) in frames {
        let mut c = Conn::open(&b);
        c.send_raw(&bytes);
        assert!(c.closed_by_broker(), "{what}");
    }
    assert_warned(&b, "bad Metadata request header");
    assert_warned(&b, "unknown API key 23130");
    assert_serves(&mut b);
    assert_no_panic_or_error(&b);
}

/// Regression test for kafka-protocol 0.18 sizing a `Vec` from an array count on the wire
/// before reading any element: an 18-byte Metadata request declaring 2^31 - 1 topics asked for
/// 154 GB, the allocation failed, and the process aborted ("memory allocation of 154618822584
/// bytes failed", exit by SIGABRT). `broker::alloc` turns such allocations into lazily backed
/// reservations.
#[test]
fn huge_declared_array_counts_do_not_abort_the_broker() {
    let mut b = BrokerProcess::start(&[]);
    let i32_max = i32::MAX.to_be_bytes();
    let u32_max_varint = [0xff, 0xff, 0xff, 0xff, 0x0f];
    let mut frames: Vec<(&str, Vec<u8>)> = vec![
        (
            "Metadata v0, 2^31 - 1 topics",
            header_v1_frame(ApiKey::Metadata as i16, 0, &i32_max),
        ),
        ("Metadata v4, 2^31 - 1 topics", {
            let mut body = i32_max.to_vec();
            body.push(1);
            header_v1_frame(ApiKey::Metadata as i16, 4, &body)
        }),
        ("Fetch v4, 2^31 - 1 topics", {
            let mut body = Vec::new();
            body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
            body.extend_from_slice(&0i32.to_be_bytes()); // max wait
            body.extend_from_slice(&0i32.to_be_bytes()); // min bytes
            body.extend_from_slice(&0i32.to_be_bytes()); // max bytes
            body.push(0); // isolation level
            body.extend_from_slice(&i32_max);
            header_v1_frame(ApiKey::Fetch as i16, 4, &body)
        }),
        ("Produce v3, one topic with 2^31 - 1 partitions", {
            let mut body = Vec::new();
            body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id
            body.extend_from_slice(&1i16.to_be_bytes()); // acks
            body.extend_from_slice(&1000i32.to_be_bytes()); // timeout
            body.extend_from_slice(&1i32.to_be_bytes()); // one topic
            body.extend_from_slice(&1i16.to_be_bytes());
            body.push(b't');
            body.extend_from_slice(&i32_max);
            header_v1_frame(ApiKey::Produce as i16, 3, &body)
        }),
        (
            "CreateTopics v2, 2^31 - 1 topics",
            header_v1_frame(ApiKey::CreateTopics as i16, 2, &i32_max),
        ),
        ("ListOffsets v1, 2^31 - 1 topics", {
            let mut body = (-1i32).to_be_bytes().to_vec();
            body.extend_from_slice(&i32_max);
            header_v1_frame(ApiKey::ListOffsets as i16, 1, &body)
        }),
    ];
    // Flexible versions: compact arrays declaring 2^32 - 2 elements, after a v2 header.
    let mut metadata_v12 = vec![0, 3, 0, 12, 0, 0, 0, 7, 0xff, 0xff, 0];
    metadata_v12.extend_from_slice(&u32_max_varint);
    frames.push(("Metadata v12, 2^32 - 2 topics", raw_frame(metadata_v12.len() as i32, &metadata_v12)));
    let mut metadata_v12_nested = vec![0, 3, 0, 12, 0, 0, 0, 7, 0xff, 0xff, 0, 2];
    metadata_v12_nested.extend_from_slice(&[0u8; 16]); // topic id
    metadata_v12_nested.push(2); // name "x"
    metadata_v12_nested.push(b'x');
    metadata_v12_nested.extend_from_slice(&u32_max_varint); // tagged fields: 2^32 - 1
    frames.push((
        "Metadata v12, 2^32 - 1 tagged fields",
        raw_frame(metadata_v12_nested.len() as i32, &metadata_v12_nested),
    ));
    for (what, bytes) in &frames {
        let mut c = Conn::open(&b);
        c.send_raw(bytes);
        assert!(c.closed_by_broker(), "{what}");
        assert!(b.is_running(), "{what} killed the broker:\n{}", b.log());
    }
    assert_warned(&b, "Metadata v0: Not enough bytes remaining");
    // The reservations were never backed by memory.
    let peak = memory_bytes(&b, "VmHWM");
    assert!(peak < 512 * MIB, "peak resident memory {} MiB", peak / MIB);
    assert_serves(&mut b);
    assert_no_panic_or_error(&b);
}

#[test]
fn slow_reader_is_bounded_by_backpressure() {
    let mut b = BrokerProcess::start(&[]);
    let mut c = Conn::open(&b);
    // 1.25 MiB in 20 batches of 64 KiB, so each Fetch below answers with about 1 MiB.
    let value = vec![0x42u8; 64 * 1024];
    create_topic(&mut c, "slow", 1);
    for _ in 0..20 {
        let r = produce(&mut c, "slow", &[(0, Some(batch(&[&value], 1)))]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0, "{r:?}");
    }
    assert_serves(&mut b);
    let baseline = memory_bytes(&b, "VmRSS");

    // A client that sends Fetch after Fetch and never reads a response. Each request carries
    // a 16 KiB client id so that its requests, too, fill the socket buffers quickly.
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic("slow")).with_partitions(vec![
            FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20),
        ])]);
    let client_id = "s".repeat(16 * 1024);
    let mut slow = Conn::open(&b);
    slow.stream.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    const REQUESTS_MAX: usize = 1500;
    let mut sent = 0;
    let mut blocked = false;
    while sent < REQUESTS_MAX {
        let bytes = frame(ApiKey::Fetch, 11, sent as i32, &client_id, &fetch);
        match slow.stream.write_all(&bytes) {
            Ok(()) => sent += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                blocked = true;
                break;
            }
            Err(e) => panic!("sending to the broker: {e}"),
        }
    }
    let now = memory_bytes(&b, "VmRSS");
    eprintln!(
        "slow reader: blocked after {sent} requests; broker resident {} MiB -> {} MiB",
        baseline / MIB,
        now / MIB
    );
    assert!(
        blocked,
        "the broker read all {sent} requests of a client that reads nothing: no backpressure"
    );
    // Bound: requests_in_flight_max (32) + 2 requests of 16 KiB and responses of 1 MiB.
    assert!(
        now < baseline + 128 * MIB,
        "a slow reader grew the broker from {} MiB to {} MiB after {sent} requests",
        baseline / MIB,
        now / MIB
    );
    // The shard is not stuck behind the slow client.
    assert_serves(&mut b);
    drop(slow);
    // And the data is all there.
    let all = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_bytes(4 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic("slow")).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_partition_max_bytes(4 << 20),
        ])]);
    let response: FetchResponse = c.call(ApiKey::Fetch, 11, &all);
    let records = response.responses[0].partitions[0].records.clone().unwrap_or_default();
    assert!(records.len() >= 20 * value.len(), "{} bytes fetched", records.len());
    assert_eq!(list_offset(&mut c, "slow", 0, -1), (0, 20));
    assert_no_panic_or_error(&b);
}

#[test]
fn corrupt_batches_get_a_kafka_error_and_append_nothing() {
    let mut b = BrokerProcess::start(&[]);
    let mut c = Conn::open(&b);
    create_topic(&mut c, "corrupt", 2);
    let good = batch(&[b"kept"], 1_000);
    let r = produce(&mut c, "corrupt", &[(0, Some(good.clone()))]);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(list_offset(&mut c, "corrupt", 0, -1), (0, 1));

    let bad_crc = {
        let mut v = good.to_vec();
        let last = v.len() - 1;
        v[last] ^= 0xff;
        Bytes::from(v)
    };
    let truncated = good.slice(..good.len() - 3);
    let short = good.slice(..20);
    let wrong_magic = {
        let mut v = good.to_vec();
        v[16] = 1;
        Bytes::from(v)
    };
    let two_batches = {
        let mut v = good.to_vec();
        v.extend_from_slice(&good);
        Bytes::from(v)
    };
    let count_mismatch = {
        let mut v = good.to_vec();
        v[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&v[21..]);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(v)
    };
    // CORRUPT_MESSAGE (2) for damage, UNSUPPORTED_FOR_MESSAGE_FORMAT (43) for a magic other than
    // 2, INVALID_RECORD (87) for a count that disagrees with the offsets and, as Kafka answers
    // produce v3+, for more than one batch (broker/src/errors.rs, handlers/produce.rs).
    let cases: Vec<(&str, Option<Bytes>, i16)> = vec![
        ("bad CRC", Some(bad_crc), 2),
        ("truncated", Some(truncated), 2),
        ("shorter than a header", Some(short), 2),
        ("wrong magic", Some(wrong_magic), 43),
        ("two batches", Some(two_batches), 87),
        ("count mismatch", Some(count_mismatch), 87),
        ("null records", None, 2),
        ("empty records", Some(Bytes::new()), 2),
    ];
    for (what, records, code) in cases {
        // Alongside a good batch for the other partition, which must be appended.
        let r = produce(&mut c, "corrupt", &[(0, records), (1, Some(good.clone()))]);
        let answers = &r.responses[0].partition_responses;
        assert_eq!(answers[0].error_code, code, "{what}: {r:?}");
        assert_eq!(answers[0].base_offset, -1, "{what}");
        assert_eq!(answers[1].error_code, 0, "{what}: the good partition: {r:?}");
        assert_eq!(list_offset(&mut c, "corrupt", 0, -1), (0, 1), "{what}: nothing appended");
    }
    assert_eq!(list_offset(&mut c, "corrupt", 1, -1), (0, 8), "every good batch appended");
    // The batch written before is intact.
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic("corrupt")).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20),
        ])]);
    let response: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch);
    let records = response.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(records.len(), good.len());
    assert_eq!(&records[16..], &good[16..], "the stored batch is the one produced");
    assert_serves(&mut b);
    assert_no_panic_or_error(&b);
}

/// Batches that pass the CRC check can still be hostile inside: ListOffsets by timestamp looks
/// inside a batch for the exact record, and must neither trust the counts it finds there nor
/// inflate a compressed stream without bound.
#[test]
fn hostile_records_inside_valid_batches_stay_bounded() {
    let mut b = BrokerProcess::start(&[]);
    let mut c = Conn::open(&b);
    let now = 1_700_000_000_000i64;

    // A zstd frame of RLE blocks: 4 bytes for every 128 KiB of 0x7e, 1 GiB in all. As records,
    // 0x7e repeated is well formed (length 63, timestamp delta 63, ...), so a walk that trusts
    // it goes on until a bound stops it.
    let mut bomb = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
    let blocks = 8192;
    for i in 0..blocks {
        let last = u32::from(i == blocks - 1);
        let header: u32 = (128 * 1024) << 3 | 1 << 1 | last;
        bomb.extend_from_slice(&header.to_le_bytes()[..3]);
        bomb.push(0x7e);
    }
    const ZSTD: i16 = 4;
    // One record declaring 2^31 - 1 headers.
    let mut record = vec![0u8]; // attributes
    varint(zigzag(0), &mut record); // timestamp delta
    varint(zigzag(0), &mut record); // offset delta
    varint(zigzag(-1), &mut record); // null key
    varint(zigzag(-1), &mut record); // null value
    varint(zigzag(i32::MAX.into()), &mut record); // header count
    let mut headers_bomb = Vec::new();
    varint(zigzag(record.len() as i64), &mut headers_bomb);
    headers_bomb.extend_from_slice(&record);

    for (name, batch) in [
        ("zstd-bomb", raw_batch(ZSTD, now, now + 1000, &bomb)),
        ("headers-bomb", raw_batch(0, now, now, &headers_bomb)),
    ] {
        create_topic(&mut c, name, 1);
        let r = produce(&mut c, name, &[(0, Some(batch))]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0, "{name}: {r:?}");
    }
    assert_serves(&mut b);
    let before = memory_bytes(&b, "VmHWM");
    // The bomb's records are all at now + 63: looking for now + 100 walks them all.
    for (name, timestamp) in [("zstd-bomb", now + 100), ("headers-bomb", now)] {
        let (error, offset) = list_offset(&mut c, name, 0, timestamp);
        assert_eq!((error, offset), (0, 0), "{name}");
        assert!(b.is_running(), "{name} killed the broker:\n{}", b.log());
    }
    let peak = memory_bytes(&b, "VmHWM");
    assert!(
        peak < before + 128 * MIB,
        "looking inside hostile batches raised peak memory from {} MiB to {} MiB",
        before / MIB,
        peak / MIB
    );
    assert_serves(&mut b);
    assert_no_panic_or_error(&b);
}

#[test]
fn idle_and_stalled_connections_are_closed_after_the_idle_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "connections_max_idle_ms = 300\n").unwrap();
    let mut b = BrokerProcess::start(&["--config", config.to_str().unwrap()]);
    // One client sends nothing at all, another stops halfway through a frame.
    let mut idle = Conn::open(&b);
    let mut stalled = Conn::open(&b);
    stalled.send_raw(&raw_frame(100, &[0u8; 10]));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(idle.closed_by_broker(), "an idle connection outlived the idle limit");
    assert!(stalled.closed_by_broker(), "a stalled frame kept its connection");
    assert_logged(&b, "idle connection closed");
    assert_logged(&b, "connection closed mid-request");
    assert_serves(&mut b);
    assert_no_panic_or_error(&b);
}

/// The internal topics are the coordinators' alone: Metadata lists them as internal, a
/// client's produce to them gets INVALID_TOPIC_EXCEPTION and DeleteTopics INVALID_REQUEST,
/// as Kafka answers.
#[test]
fn clients_cannot_write_or_delete_the_internal_topics() {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, MetadataRequest, MetadataResponse};
    let mut b = BrokerProcess::start(&[]);
    let mut c = Conn::open(&b);
    let all: MetadataResponse = c.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None));
    let internal: Vec<String> = all
        .topics
        .iter()
        .filter(|t| t.is_internal)
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert_eq!(internal, vec!["__consumer_offsets".to_owned(), "__transaction_state".to_owned()]);
    for name in &internal {
        let forged = batch(&[b"forged"], 1_700_000_000_000);
        assert_eq!(raw_client::produce(&mut c, name, forged).0, 17, "produce to {name}");
        let request = DeleteTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![DeleteTopicState::default().with_name(Some(topic(name)))]);
        let response: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 6, &request);
        assert_eq!(response.responses[0].error_code, 42, "delete {name}");
    }
    assert_serves(&mut b);
}
