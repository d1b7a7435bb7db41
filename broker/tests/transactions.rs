//! The partition side of transactions against the real broker binary, over the raw protocol:
//! an open transaction holds the last stable offset, so a read_committed Fetch stops before it
//! while read_uncommitted sees everything, ListOffsets answers "latest" by isolation level,
//! control batches from clients and old-epoch transactional batches are refused, and all of
//! it holds after a kill -9. Markers need the coordinator; they are tested in the shard crate.

mod common;
mod raw_client;

use common::BrokerProcess;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataResponse};
use raw_client::{batch, metadata_request, produce, producer_batch, topic, Conn};

const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_RECORD: i16 = 87;

/// A Fetch v11 of partition 0 from `offset`: (high watermark, last stable offset, base and
/// last offset of each batch returned, aborted transactions listed or None).
#[allow(clippy::type_complexity)]
fn fetch(c: &mut Conn, offset: i64, isolation_level: i8) -> (i64, i64, Vec<(i64, i64)>, Option<usize>) {
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation_level)
        .with_topics(vec![FetchTopic::default().with_topic(topic("txn")).with_partitions(vec![
            FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20),
        ])]);
    let response: FetchResponse = c.call(ApiKey::Fetch, 11, &request);
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let records = p.records.clone().unwrap_or_default();
    let mut batches = Vec::new();
    let mut at = 0;
    while at + 61 <= records.len() {
        let base = i64::from_be_bytes(records[at..at + 8].try_into().unwrap());
        let len = 12 + i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
        let delta = i32::from_be_bytes(records[at + 23..at + 27].try_into().unwrap());
        batches.push((base, base + i64::from(delta)));
        at += len;
    }
    assert_eq!(at, records.len(), "whole batches");
    (
        p.high_watermark,
        p.last_stable_offset,
        batches,
        p.aborted_transactions.as_ref().map(Vec::len),
    )
}

fn latest(c: &mut Conn, isolation_level: i8) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_isolation_level(isolation_level)
        .with_topics(vec![ListOffsetsTopic::default().with_name(topic("txn")).with_partitions(vec![
            ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1),
        ])]);
    let response: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 5, &request);
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

/// What a consumer of each isolation level sees while producer 4242's transaction is open at
/// offset 1 and the log ends at 4.
fn assert_open_transaction_holds_the_last_stable_offset(c: &mut Conn) {
    let (hw, lso, batches, aborted) = fetch(c, 0, 1);
    assert_eq!((hw, lso), (4, 1));
    assert_eq!(batches, vec![(0, 0)], "read_committed stops before the open transaction");
    assert_eq!(aborted, Some(0), "read_committed lists aborted transactions (none here)");
    assert_eq!(fetch(c, 1, 1).2, vec![], "nothing at the last stable offset yet");
    let (hw, lso, batches, _) = fetch(c, 0, 0);
    assert_eq!((hw, lso), (4, 1), "read_uncommitted reports the last stable offset too");
    assert_eq!(batches, vec![(0, 0), (1, 2), (3, 3)], "read_uncommitted sees everything");
    assert_eq!(latest(c, 1), 1);
    assert_eq!(latest(c, 0), 4);
}

#[test]
fn an_open_transaction_holds_read_committed_fetches_at_the_last_stable_offset() {
    let mut b = BrokerProcess::start(&[]);
    let mut c = Conn::open(&b);
    let created: MetadataResponse = c.call(ApiKey::Metadata, 12, &metadata_request("txn"));
    assert_eq!(created.topics[0].error_code, 0);

    assert_eq!(produce(&mut c, "txn", batch(&[b"plain"], 1_700_000_000_000)), (0, 0));
    assert_eq!(produce(&mut c, "txn", producer_batch(4242, 0, 0, 2, true, false)), (0, 1));
    assert_eq!(produce(&mut c, "txn", batch(&[b"after"], 1_700_000_000_000)), (0, 3));
    assert_open_transaction_holds_the_last_stable_offset(&mut c);

    // Clients never write control batches; an older epoch of a transactional producer is
    // fenced. Neither appends anything.
    assert_eq!(produce(&mut c, "txn", producer_batch(4243, 0, 0, 1, true, true)).0, INVALID_RECORD);
    assert_eq!(
        produce(&mut c, "txn", producer_batch(4242, -1, 2, 1, true, false)).0,
        INVALID_PRODUCER_EPOCH
    );
    assert_open_transaction_holds_the_last_stable_offset(&mut c);
    drop(c);

    // The open transaction survives a kill -9 (replayed from the active segment).
    b.kill();
    b.restart();
    let mut c = Conn::open(&b);
    assert_open_transaction_holds_the_last_stable_offset(&mut c);
    b.stop();
}
