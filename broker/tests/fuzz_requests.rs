//! Random and mutated request frames, property-based: in process through `handlers::parse` and
//! the request body decoders, for every API and version in `handlers::APIS`; and over TCP
//! through the whole running broker, handlers included. Nothing may panic or abort, and the
//! broker must keep serving.
//!
//! The seeds are valid requests of every API the broker serves; the mutations flip, set,
//! insert and remove bytes, cut the frame short, and write huge counts (i32::MAX, a varint of
//! u32::MAX) anywhere, which is how kafka-protocol's eager `Vec::with_capacity` aborted the
//! process before `broker::alloc`. This binary installs that allocator too, as the broker does:
//! without it the in-process test aborts.
//!
//! Bounded for CI: 4096 cases in process, 1000 over TCP (about a second each). More, locally:
//! `PROPTEST_CASES=100000 cargo test -p broker --test fuzz_requests`.

mod common;
mod raw_client;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, RequestHeader,
    RequestKind,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};

use common::BrokerProcess;
use raw_client::*;

#[global_allocator]
static ALLOCATOR: broker::alloc::ReservingAllocator = broker::alloc::ReservingAllocator;

/// The topic the seeds name; the TCP test creates it.
const TOPIC: &str = "fuzz";

/// A valid request of `key` at `version`: a realistic one for the APIs written here, else the
/// request kafka-protocol decodes from filler bytes (so an API added to `APIS` is fuzzed from
/// the day it is added, if less deeply).
fn seed(key: ApiKey, version: i16) -> RequestKind {
    let name = || topic(TOPIC);
    match key {
        ApiKey::Produce => {
            let data = TopicProduceData::default().with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(&[b"fuzz value"], 1_000)))]);
            let data = if version >= 13 { data } else { data.with_name(name()) };
            RequestKind::Produce(
                ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(1_000)
                    .with_topic_data(vec![data]),
            )
        }
        ApiKey::Fetch => {
            let topic = FetchTopic::default().with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)]);
            let topic = if version >= 13 { topic } else { topic.with_topic(name()) };
            RequestKind::Fetch(
                FetchRequest::default()
                    .with_max_wait_ms(0)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![topic]),
            )
        }
        ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default().with_replica_id((-1).into()).with_topics(
            vec![ListOffsetsTopic::default().with_name(name()).with_partitions(vec![
                    ListOffsetsPartition::default().with_partition_index(0).with_timestamp(0),
                ])],
        )),
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name()))])),
        ),
        ApiKey::ApiVersions if version >= 3 => RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("fuzz"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        ),
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default().with_timeout_ms(1_000).with_topics(
            vec![CreatableTopic::default()
                .with_name(topic("fuzz-created"))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("60000")))])],
        )),
        other => [0u8, 1]
            .iter()
            .find_map(|&fill| RequestKind::decode(other, &mut Bytes::from(vec![fill; 256]), version).ok())
            .unwrap_or_else(|| panic!("no seed for {other:?} v{version}: write one in seed()")),
    }
}

/// Request header and body, without the size prefix.
fn seed_frame(key: ApiKey, version: i16, correlation: i32) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    seed(key, version)
        .encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("seed {key:?} v{version} does not encode: {e}"));
    buf.to_vec()
}

/// One edit of a frame. Positions are `Index`es, scaled to the frame as it is then.
#[derive(Debug, Clone)]
enum Mutation {
    Xor(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
    /// Overwrite four bytes with a big-endian i32: array counts, string lengths, sizes.
    I32(Index, i32),
    /// Overwrite two bytes with a big-endian i16: versions, keys, short string lengths.
    I16(Index, i16),
    /// Insert an unsigned varint: compact array and string lengths, tagged field counts.
    Varint(Index, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, m)| Mutation::Xor(i, m)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (
            any::<Index>(),
            prop_oneof![Just(i32::MAX), Just(i32::MIN), Just(-1), Just(-2), Just(0x00ff_ffff), any::<i32>()]
        )
            .prop_map(|(i, v)| Mutation::I32(i, v)),
        (any::<Index>(), prop_oneof![Just(i16::MAX), Just(-1), Just(-2), any::<i16>()]).prop_map(|(i, v)| Mutation::I16(i, v)),
        (
            any::<Index>(),
            prop_oneof![Just(u32::MAX), Just(u32::MAX / 2), Just(0), any::<u32>()]
        )
            .prop_map(|(i, v)| Mutation::Varint(i, v)),
    ]
}

fn overwrite(frame: &mut [u8], at: &Index, bytes: &[u8]) {
    if frame.len() >= bytes.len() {
        let i = at.index(frame.len() - bytes.len() + 1);
        frame[i..i + bytes.len()].copy_from_slice(bytes);
    }
}

fn apply(frame: &mut Vec<u8>, m: &Mutation) {
    let len = frame.len();
    match m {
        Mutation::Xor(at, mask) if len > 0 => frame[at.index(len)] ^= mask,
        Mutation::Set(at, b) if len > 0 => frame[at.index(len)] = *b,
        Mutation::Insert(at, bytes) => {
            let i = at.index(len + 1);
            frame.splice(i..i, bytes.iter().copied());
        }
        Mutation::Remove(at, n) if len > 0 => {
            let i = at.index(len);
            frame.drain(i..(i + n).min(len));
        }
        Mutation::Truncate(at) => frame.truncate(at.index(len + 1)),
        Mutation::I32(at, v) => overwrite(frame, at, &v.to_be_bytes()),
        Mutation::I16(at, v) => overwrite(frame, at, &v.to_be_bytes()),
        Mutation::Varint(at, v) => {
            let mut bytes = Vec::new();
            let mut v = *v;
            while v >= 0x80 {
                bytes.push(v as u8 | 0x80);
                v >>= 7;
            }
            bytes.push(v as u8);
            let i = at.index(len + 1);
            frame.splice(i..i, bytes);
        }
        _ => {}
    }
}

/// A seed of any API and version the broker serves.
fn seed_strategy() -> impl Strategy<Value = (ApiKey, i16)> {
    (any::<Index>(), any::<Index>()).prop_map(|(api, version)| {
        let (key, min, max) = broker::handlers::APIS[api.index(broker::handlers::APIS.len())];
        (key, min + version.index((max - min + 1) as usize) as i16)
    })
}

/// Frames without the size prefix: mostly mutated seeds, some pure noise, some a valid header
/// with a noise body.
fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => (seed_strategy(), prop::collection::vec(mutation(), 0..6)).prop_map(|((key, version), mutations)| {
            let mut frame = seed_frame(key, version, 1);
            for m in &mutations {
                apply(&mut frame, m);
            }
            frame
        }),
        1 => prop::collection::vec(any::<u8>(), 0..96),
        1 => (seed_strategy(), prop::collection::vec(any::<u8>(), 0..96)).prop_map(|((key, version), noise)| {
            let mut frame = seed_frame(key, version, 1);
            let header_bytes = frame.len() - encoded_len(&seed(key, version), version);
            frame.truncate(header_bytes);
            frame.extend_from_slice(&noise);
            frame
        }),
    ]
}

fn encoded_len(request: &RequestKind, version: i16) -> usize {
    let mut buf = BytesMut::new();
    request.encode(&mut buf, version).unwrap();
    buf.len()
}

/// What the broker's reader and handlers do with a frame before any side effect: parse the
/// header, then decode the body, refusing trailing bytes. `Err` is a refusal, which is fine;
/// a panic or an abort is not.
fn decode_like_the_broker(frame: &[u8]) -> Result<(), String> {
    let frame = Bytes::copy_from_slice(frame);
    let request = broker::handlers::parse(&frame)?;
    if request.api_versions_fallback {
        return Ok(());
    }
    let mut body = frame.slice(request.body_start..);
    RequestKind::decode(request.api_key, &mut body, request.version).map_err(|e| e.to_string())?;
    if body.has_remaining() {
        return Err(format!("{} bytes left after the body", body.remaining()));
    }
    Ok(())
}

#[test]
fn every_seed_decodes() {
    // The seeds are valid, so the fuzzing starts from requests the broker accepts.
    for &(key, min, max) in broker::handlers::APIS {
        for version in min..=max {
            let frame = seed_frame(key, version, 1);
            decode_like_the_broker(&frame).unwrap_or_else(|e| panic!("seed {key:?} v{version}: {e}"));
        }
    }
}

/// `PROPTEST_CASES` if set, else the bounded number CI runs.
fn cases(ci: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(ci)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4096), ..ProptestConfig::default() })]

    #[test]
    fn mutated_frames_never_panic_the_decoders(frame in frame_strategy()) {
        let _ = decode_like_the_broker(&frame);
    }
}

/// A bounded stream of mutated frames through the whole broker, one connection each: the
/// process survives every one, and afterwards serves a well-behaved client.
#[test]
fn mutated_frames_over_tcp_never_kill_the_broker() {
    let b = BrokerProcess::start(&[]);
    {
        let mut c = Conn::open(&b);
        let _: kafka_protocol::messages::MetadataResponse = c.call(ApiKey::Metadata, 12, &metadata_request(TOPIC));
    }
    let b = RefCell::new(b);
    let mut runner = TestRunner::new(Config {
        cases: cases(1000),
        // A broker that died stays dead: shrinking against it would blame innocent frames.
        max_shrink_iters: 0,
        failure_persistence: None,
        ..Config::default()
    });
    // A declared size other than the frame's, one time in eight.
    let strategy = (frame_strategy(), prop_oneof![7 => Just(None), 1 => any::<i32>().prop_map(Some)]);
    let result = runner.run(&strategy, |(frame, size)| {
        let size = size.unwrap_or(frame.len() as i32);
        let mut bytes = Vec::with_capacity(4 + frame.len());
        bytes.put_i32(size);
        bytes.extend_from_slice(&frame);
        let mut s = TcpStream::connect(b.borrow().bootstrap()).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        // The broker may close early and reset the rest: ignore send errors.
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(Shutdown::Write);
        // Read whatever comes until the broker closes (or a long poll outlasts our patience).
        let mut sink = [0u8; 4096];
        while let Ok(n) = s.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        prop_assert!(
            b.borrow_mut().is_running(),
            "this frame killed the broker: size {size}, {:02x?}\n{}",
            frame,
            b.borrow().log()
        );
        Ok(())
    });
    let mut b = b.into_inner();
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_serves(&mut b);
    assert_no_panic_or_error(&b);
}
