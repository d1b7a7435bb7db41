//! TxnOffsetCommit (key 28), versions 0-5: offsets a transactional producer commits for a
//! group; they stay pending in the group until the transaction ends (`groups::Coordinator::
//! complete_txn`), visible if it commits.

use bytes::Bytes;
use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::{ResponseKind, TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::offset_commit::commit_and_answer;
use super::{decode_body, Request};
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: TxnOffsetCommitRequest = decode_body(body, request.version)?;
    let (generation, producer) = (req.generation_id, Some(req.producer_id.0));
    commit_and_answer!(
        broker,
        req,
        generation,
        producer,
        TxnOffsetCommitResponseTopic,
        TxnOffsetCommitResponsePartition,
        TxnOffsetCommitResponse,
        TxnOffsetCommit
    )
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
