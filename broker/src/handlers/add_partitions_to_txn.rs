//! AddPartitionsToTxn (key 24), versions 0-3: a transactional producer names the partitions it
//! is about to write to. Versions 4-5 (brokers verifying for each other, KIP-890) are not
//! served. An unknown partition fails the request: it gets UNKNOWN_TOPIC_OR_PARTITION and the
//! others OPERATION_NOT_ATTEMPTED, as in Kafka.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ResponseKind};
use shard::TopicPartition;

use super::{decode_body, now_ms, Request};
use crate::metadata::MetaStore;
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: AddPartitionsToTxnRequest = decode_body(body, request.version)?;
    let meta = broker.meta.snapshot();
    let asked: Vec<(String, i32)> = req
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |&p| (t.name.0.to_string(), p)))
        .collect();
    let unknown = |(t, p): &(String, i32)| MetaStore::owner(&meta, &TopicPartition::new(t.clone(), *p)).is_none();
    let result: Result<(), ResponseError> = if asked.iter().any(unknown) {
        Err(ResponseError::OperationNotAttempted)
    } else {
        let id = req.v3_and_below_transactional_id.0.to_string();
        let producer = (req.v3_and_below_producer_id.0, req.v3_and_below_producer_epoch);
        let partitions = asked.clone();
        let txn = id.clone();
        crate::txn::on_coordinator(broker, &id, move |c| async move {
            c.add_partitions(&txn, producer, partitions, now_ms()).await
        })
        .await
        .and_then(|r| r)
    };
    let topics = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            let code = match &result {
                                Ok(()) => 0,
                                Err(ResponseError::OperationNotAttempted) if unknown(&(t.name.0.to_string(), p)) => {
                                    ResponseError::UnknownTopicOrPartition.code()
                                }
                                Err(e) => e.code(),
                            };
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(Some(ResponseKind::AddPartitionsToTxn(
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::AddPartitionsToTxn, |_| {
            ResponseKind::AddPartitionsToTxn(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(vec![
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_results_by_partition(vec![AddPartitionsToTxnPartitionResult::default().with_partition_index(1)]),
            ]))
        });
    }
}
