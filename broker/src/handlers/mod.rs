//! The Kafka APIs: one file per API, all registered in `APIS` with the versions supported.
//!
//! Architecture invariant: Kafka error codes are chosen here, at the handler boundary
//! (`errors.rs`); the shard and storage crates report their own errors.

mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_configs;
mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_transactions;
mod end_txn;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;
mod txn_offset_commit;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseKind};
use kafka_protocol::protocol::Decodable;

use crate::server::Broker;

/// Every API this broker serves, with the versions it supports.
pub const APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::InitProducerId, 0, 5),
];

/// The versions of `key` this broker supports.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    APIS.iter().find(|(k, _, _)| *k == key).map(|&(_, min, max)| (min, max))
}

/// A request frame whose header was decoded.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    /// Where the body starts in the frame.
    pub body_start: usize,
    /// ApiVersions at a version above ours: answer with the v0 fallback.
    pub api_versions_fallback: bool,
}

/// What the connection does with a handled request.
pub enum Outcome {
    Respond(crate::frame::Frame),
    NoResponse,
    Close(String),
}

/// Decodes the request header; an error says why the connection should close.
pub fn parse(frame: &Bytes) -> Result<Request, String> {
    if frame.len() < 8 {
        return Err(format!("frame of {} bytes has no header", frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(key).map_err(|_| format!("unknown API key {key}"))?;
    let Some((min, max)) = supported(api_key) else {
        return Err(format!("API {api_key:?} (key {key}) is not supported"));
    };
    if api_key == ApiKey::ApiVersions && version > max {
        let header = RequestHeader::default()
            .with_request_api_key(key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id);
        return Ok(Request {
            api_key,
            version,
            header,
            body_start: frame.len(),
            api_versions_fallback: true,
        });
    }
    if version < min || version > max {
        return Err(format!("{api_key:?} version {version} is not supported (supported: {min}..={max})"));
    }
    let mut buf = frame.clone();
    let header = RequestHeader::decode(&mut buf, api_key.request_header_version(version))
        .map_err(|e| format!("bad {api_key:?} request header: {e}"))?;
    let body_start = frame.len() - buf.remaining();
    Ok(Request {
        api_key,
        version,
        header,
        body_start,
        api_versions_fallback: false,
    })
}

/// Runs the handler of one request and encodes its response frame.
pub async fn handle(broker: &Broker, request: Request, frame: Bytes) -> Outcome {
    let mut body = frame.slice(request.body_start..);
    if request.api_key == ApiKey::Fetch {
        // Fetch builds its own frame, with record bytes spliced in rather than copied.
        return match fetch::handle(broker, &request, &mut body).await {
            Ok(frame) => Outcome::Respond(frame),
            Err(e) => Outcome::Close(format!("{:?} v{}: {e:#}", request.api_key, request.version)),
        };
    }
    let result: anyhow::Result<Option<ResponseKind>> = match request.api_key {
        ApiKey::ApiVersions => api_versions::handle(broker, &request, &mut body),
        ApiKey::Metadata => metadata::handle(broker, &request, &mut body).await,
        ApiKey::Produce => produce::handle(broker, &request, &mut body).await,
        ApiKey::ListOffsets => list_offsets::handle(broker, &request, &mut body).await,
        ApiKey::CreateTopics => create_topics::handle(broker, &request, &mut body).await,
        ApiKey::DeleteTopics => delete_topics::handle(broker, &request, &mut body).await,
        ApiKey::DeleteRecords => delete_records::handle(broker, &request, &mut body).await,
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch::handle(broker, &request, &mut body).await,
        ApiKey::DescribeConfigs => describe_configs::handle(broker, &request, &mut body).await,
        ApiKey::AlterConfigs => alter_configs::handle(broker, &request, &mut body).await,
        ApiKey::CreatePartitions => create_partitions::handle(broker, &request, &mut body).await,
        ApiKey::IncrementalAlterConfigs => incremental_alter_configs::handle(broker, &request, &mut body).await,
        ApiKey::DescribeCluster => describe_cluster::handle(broker, &request, &mut body).await,
        ApiKey::FindCoordinator => find_coordinator::handle(broker, &request, &mut body).await,
        ApiKey::JoinGroup => join_group::handle(broker, &request, &mut body).await,
        ApiKey::SyncGroup => sync_group::handle(broker, &request, &mut body).await,
        ApiKey::Heartbeat => heartbeat::handle(broker, &request, &mut body).await,
        ApiKey::LeaveGroup => leave_group::handle(broker, &request, &mut body).await,
        ApiKey::OffsetCommit => offset_commit::handle(broker, &request, &mut body).await,
        ApiKey::OffsetFetch => offset_fetch::handle(broker, &request, &mut body).await,
        ApiKey::ListGroups => list_groups::handle(broker, &request, &mut body).await,
        ApiKey::DescribeGroups => describe_groups::handle(broker, &request, &mut body).await,
        ApiKey::DeleteGroups => delete_groups::handle(broker, &request, &mut body).await,
        ApiKey::OffsetDelete => offset_delete::handle(broker, &request, &mut body).await,
        ApiKey::AddPartitionsToTxn => add_partitions_to_txn::handle(broker, &request, &mut body).await,
        ApiKey::AddOffsetsToTxn => add_offsets_to_txn::handle(broker, &request, &mut body).await,
        ApiKey::EndTxn => end_txn::handle(broker, &request, &mut body).await,
        ApiKey::TxnOffsetCommit => txn_offset_commit::handle(broker, &request, &mut body).await,
        ApiKey::DescribeTransactions => describe_transactions::handle(broker, &request, &mut body).await,
        ApiKey::ListTransactions => list_transactions::handle(broker, &request, &mut body).await,
        ApiKey::InitProducerId => init_producer_id::handle(broker, &request, &mut body).await,
        other => Err(anyhow::anyhow!("no handler for {other:?}")),
    };
    match result {
        Ok(Some(response)) => {
            if let ResponseKind::Produce(p) = &response {
                if p.responses.iter().flat_map(|t| &t.partition_responses).any(|p| p.error_code != 0) {
                    broker.metrics.request_error(ApiKey::Produce);
                }
            }
            // ApiVersions always answers with a v0 header, and the fallback with a v0 body.
            let version = if request.api_versions_fallback { 0 } else { request.version };
            match encode(request.api_key, version, request.header.correlation_id, &response) {
                Ok(bytes) => Outcome::Respond(crate::frame::Frame::single(bytes)),
                Err(e) => Outcome::Close(format!("encoding {:?} v{version} response: {e}", request.api_key)),
            }
        }
        Ok(None) => Outcome::NoResponse,
        Err(e) => Outcome::Close(format!("{:?} v{}: {e:#}", request.api_key, request.version)),
    }
}

/// Size prefix, response header, body.
pub use crate::frame::encode_plain as encode;

/// Ops grouped by owner shard, each with the slot its answer goes to.
pub(crate) type ByOwner<S> = std::collections::BTreeMap<shard::ShardId, (Vec<shard::Op>, Vec<S>)>;

/// Sends every owner its ops (one mesh message each, all at once) and pairs each result with
/// its slot. A call that fails answers each of its slots with that failure's Kafka error code.
pub(crate) async fn call_owners<S>(broker: &Broker, by_owner: ByOwner<S>) -> Vec<(S, Result<shard::OpResult, i16>)> {
    let calls = by_owner
        .into_iter()
        .map(|(owner, (ops, slots))| async move { (broker.router.call(owner, ops).await, slots) });
    let mut answers = Vec::new();
    for (results, slots) in futures::future::join_all(calls).await {
        match results {
            Ok(results) => answers.extend(slots.into_iter().zip(results.into_iter().map(Ok))),
            Err(e) => {
                let code = crate::errors::code(&e);
                answers.extend(slots.into_iter().map(|s| (s, Err(code))));
            }
        }
    }
    answers
}

/// Decodes a request body, refusing trailing bytes (a sign of a mis-framed request).
pub fn decode_body<T: Decodable>(body: &mut Bytes, version: i16) -> anyhow::Result<T> {
    let value = T::decode(body, version)?;
    if body.has_remaining() {
        anyhow::bail!("{} bytes left after the request body", body.remaining());
    }
    Ok(value)
}

/// Milliseconds since the Unix epoch, the clock Kafka timestamps use.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Test support: encodes the response `build(version)` makes at every version of `key` this
/// broker supports, failing on any that kafka-protocol refuses (a field set in a version that
/// lacks it), and checks the frame decodes back.
#[cfg(test)]
pub(crate) fn assert_encodes(key: ApiKey, build: impl Fn(i16) -> ResponseKind) {
    let (min, max) = supported(key).expect("registered in APIS");
    for version in min..=max {
        assert_encodes_at(key, version, &build);
    }
}

/// [`assert_encodes`] at one version.
#[cfg(test)]
pub(crate) fn assert_encodes_at(key: ApiKey, version: i16, build: impl Fn(i16) -> ResponseKind) {
    let response = build(version);
    let frame = encode(key, version, 7, &response).unwrap_or_else(|e| panic!("{key:?} v{version} does not encode: {e:#}"));
    let mut body = frame.slice(4..);
    let header = kafka_protocol::messages::ResponseHeader::decode(&mut body, key.response_header_version(version)).expect("header decodes");
    assert_eq!(header.correlation_id, 7);
    let decoded = ResponseKind::decode(key, &mut body, version).unwrap_or_else(|e| panic!("{key:?} v{version} does not decode: {e:#}"));
    assert!(!body.has_remaining(), "{key:?} v{version}: bytes left after the body");
    let mut again = bytes::BytesMut::new();
    decoded.encode(&mut again, version).expect("re-encodes");
    assert_eq!(&again[..], &frame[frame.len() - again.len()..], "{key:?} v{version} round trip");
}
