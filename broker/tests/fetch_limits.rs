//! Fetch byte limits over many partitions, from the batch cache and from disk: a response
//! holds whole batches, contiguous from each fetch offset, within `max_bytes` (the first batch
//! always) and each partition's `partition_max_bytes`; the response is shared among the
//! partitions that have data, and a partition alone gets what the others leave.

mod common;
mod raw_client;

use bytes::Bytes;
use common::BrokerProcess;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, MetadataResponse};
use kafka_protocol::records::RecordBatchDecoder;
use raw_client::{assert_no_panic_or_error, batch, metadata_request, produce_to, topic, Conn};

const PARTITIONS: i32 = 4;
const VALUE_BYTES: usize = 64 * 1024;
/// Batches produced to each partition in `full`, and to partition 0 only in `lopsided`.
const BATCHES: i64 = 12;

/// Creates `name` (auto-creation, with the broker's default partition count).
fn create(c: &mut Conn, name: &str) {
    let created: MetadataResponse = c.call(ApiKey::Metadata, 12, &metadata_request(name));
    assert_eq!(created.topics[0].error_code, 0);
    assert_eq!(created.topics[0].partitions.len(), PARTITIONS as usize);
}

/// Fetches `name` from `offsets[p]` of each partition; returns each partition's record bytes.
fn fetch(c: &mut Conn, name: &str, offsets: &[i64], max_bytes: i32, partition_max_bytes: i32) -> Vec<Bytes> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic(name)).with_partitions(
            offsets
                .iter()
                .enumerate()
                .map(|(p, &offset)| {
                    FetchPartition::default()
                        .with_partition(p as i32)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(partition_max_bytes)
                })
                .collect(),
        )]);
    let response: FetchResponse = c.call(ApiKey::Fetch, 11, &request);
    let partitions = &response.responses[0].partitions;
    assert_eq!(partitions.len(), offsets.len());
    partitions
        .iter()
        .map(|p| {
            assert_eq!(p.error_code, 0, "partition {}", p.partition_index);
            p.records.clone().unwrap_or_default()
        })
        .collect()
}

/// The offsets of the records in `records`, which must decode as whole batches.
fn offsets_in(records: &Bytes) -> Vec<i64> {
    let mut buf = records.clone();
    let mut offsets = Vec::new();
    while !buf.is_empty() {
        let set = RecordBatchDecoder::decode(&mut buf).expect("whole, valid batches");
        offsets.extend(set.records.iter().map(|r| r.offset));
    }
    offsets
}

/// Checks one response against the limits; returns the next offset of each partition.
fn check(got: &[Bytes], from: &[i64], max_bytes: usize, partition_max_bytes: usize, batch_bytes: usize) -> Vec<i64> {
    let total: usize = got.iter().map(Bytes::len).sum();
    assert!(
        total <= max_bytes.max(batch_bytes),
        "{total} bytes in a response of at most {max_bytes}"
    );
    got.iter()
        .zip(from)
        .map(|(records, &offset)| {
            assert!(records.len() <= partition_max_bytes.max(batch_bytes), "{} bytes", records.len());
            let offsets = offsets_in(records);
            if let Some(&first) = offsets.first() {
                assert_eq!(first, offset, "records start at the fetch offset");
                assert_eq!(offsets, (first..first + offsets.len() as i64).collect::<Vec<_>>(), "contiguous");
            }
            offset + offsets.len() as i64
        })
        .collect()
}

/// Reads everything with small responses, checking each; returns how many fetches it took
/// and how many of them served more than one partition.
fn read_all(c: &mut Conn, name: &str, ends: &[i64], max_bytes: usize, partition_max_bytes: usize, batch_bytes: usize) -> (usize, usize) {
    let mut at = vec![0i64; ends.len()];
    let (mut fetches, mut shared) = (0, 0);
    while at != ends {
        let got = fetch(c, name, &at, max_bytes as i32, partition_max_bytes as i32);
        at = check(&got, &at, max_bytes, partition_max_bytes, batch_bytes);
        fetches += 1;
        shared += usize::from(got.iter().filter(|r| !r.is_empty()).count() > 1);
        assert!(fetches < 1000, "no progress: at {at:?} of {ends:?}");
    }
    (fetches, shared)
}

#[test]
fn responses_keep_to_the_byte_limits_from_cache_and_from_disk() {
    let mut b = BrokerProcess::start(&["--default-partitions", &PARTITIONS.to_string()]);
    let mut c = Conn::open(&b);
    let value = vec![0x5au8; VALUE_BYTES];
    let one = batch(&[&value], 1);
    let batch_bytes = one.len();
    create(&mut c, "full");
    for _ in 0..BATCHES {
        for p in 0..PARTITIONS {
            assert_eq!(produce_to(&mut c, "full", p, one.clone()).0, 0);
        }
    }
    let ends = vec![BATCHES; PARTITIONS as usize];
    for place in ["batch cache", "disk"] {
        // 4 batches per response over 4 partitions: each response serves several of them.
        let (fetches, shared) = read_all(&mut c, "full", &ends, 4 * batch_bytes + 100, 1 << 20, batch_bytes);
        assert!(
            fetches >= (BATCHES as usize * PARTITIONS as usize) / 4,
            "{place}: {fetches} fetches"
        );
        assert!(
            shared * 2 >= fetches,
            "{place}: only {shared} of {fetches} responses served more than one partition"
        );
        // The partition limit binds: 2 batches each.
        let got = fetch(&mut c, "full", &[0; PARTITIONS as usize], 64 << 20, 2 * batch_bytes as i32 + 100);
        check(&got, &[0; PARTITIONS as usize], 64 << 20, 2 * batch_bytes + 100, batch_bytes);
        assert!(
            got.iter().all(|r| r.len() == 2 * batch_bytes),
            "{place}: {:?}",
            got.iter().map(Bytes::len).collect::<Vec<_>>()
        );
        // A limit below one batch still serves the first batch whole, and only it.
        let got = fetch(&mut c, "full", &[0; PARTITIONS as usize], 1, 1);
        assert_eq!(
            got.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![batch_bytes, 0, 0, 0],
            "{place}"
        );
        if place == "batch cache" {
            // Empty the cache: after a restart every read goes to the disk.
            b.stop();
            b.restart();
            c = Conn::open(&b);
        }
    }

    // One partition with data, three empty: it gets what they leave, up to its own limit.
    create(&mut c, "lopsided");
    for _ in 0..BATCHES {
        assert_eq!(produce_to(&mut c, "lopsided", 0, one.clone()).0, 0);
    }
    let got = fetch(&mut c, "lopsided", &[0; PARTITIONS as usize], 8 * batch_bytes as i32 + 100, 1 << 20);
    check(&got, &[0; PARTITIONS as usize], 8 * batch_bytes + 100, 1 << 20, batch_bytes);
    assert_eq!(got[0].len(), 8 * batch_bytes, "the lone partition filled the response");
    assert_no_panic_or_error(&b);
}
