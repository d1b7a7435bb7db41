//! TxnOffsetCommit (key 28), versions 0-5: offsets a transactional producer commits for a
//! group; they stay pending in the group until the transaction ends (`groups::Coordinator::
//! complete_txn`), visible if it commits.

use bytes::Bytes;
use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::{ResponseKind, TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::offset_commit::commit_all;
use super::{decode_body, Request};
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: TxnOffsetCommitRequest = decode_body(body, request.version)?;
    let asked = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
                    (p.partition_index, p.committed_offset, p.committed_leader_epoch, metadata)
                })
                .collect();
            (t.name.0.to_string(), partitions)
        })
        .collect();
    let member = (
        req.member_id.to_string(),
        req.group_instance_id.as_ref().map(|i| i.to_string()),
        req.generation_id,
    );
    let codes = commit_all(broker, req.group_id.0.to_string(), member, Some(req.producer_id.0), asked).await;
    let topics = req
        .topics
        .into_iter()
        .zip(codes)
        .map(|(t, codes)| {
            TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(
                t.partitions
                    .iter()
                    .zip(codes)
                    .map(|(p, code)| {
                        TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                    })
                    .collect(),
            )
        })
        .collect();
    Ok(Some(ResponseKind::TxnOffsetCommit(
        TxnOffsetCommitResponse::default().with_topics(topics),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::TxnOffsetCommit, |_| {
            ResponseKind::TxnOffsetCommit(
                TxnOffsetCommitResponse::default().with_topics(vec![TxnOffsetCommitResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![TxnOffsetCommitResponsePartition::default().with_partition_index(2)])]),
            )
        });
    }
}
