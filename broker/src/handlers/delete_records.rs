//! DeleteRecords (key 21), versions 0-2: raises each partition's log start offset (offset -1
//! means the high watermark); whole segments below it are deleted and consumers from the
//! earliest offset start there. Answers with the new start (the low watermark).

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, ResponseKind};
use shard::{Op, OpResult, ShardId, TopicPartition};

use super::{decode_body, Request};
use crate::metadata::MetaStore;
use crate::server::Broker;

/// Kafka's "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// Where one partition's answer goes in the response.
struct Slot {
    topic: usize,
    partition: usize,
}

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: DeleteRecordsRequest = decode_body(body, request.version)?;
    let meta = broker.meta.snapshot();
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut by_owner: BTreeMap<ShardId, (Vec<Op>, Vec<Slot>)> = BTreeMap::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let answer = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
            let Some(owner) = MetaStore::owner(&meta, &tp) else {
                partitions.push(answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let before = match p.offset {
                HIGH_WATERMARK => None,
                o if o >= 0 => Some(o as u64),
                _ => {
                    partitions.push(answer.with_error_code(ResponseError::OffsetOutOfRange.code()));
                    continue;
                }
            };
            partitions.push(answer);
            let entry = by_owner.entry(owner).or_default();
            entry.0.push(Op::DeleteRecords { tp, before });
            entry.1.push(Slot { topic: ti, partition: pi });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    for (slot, result) in super::call_owners(broker, by_owner).await {
        let answer = &mut topics[slot.topic].partitions[slot.partition];
        match result {
            Ok(OpResult::RecordsDeleted(Ok(offsets))) => answer.low_watermark = offsets.log_start as i64,
            Ok(OpResult::RecordsDeleted(Err(e))) => {
                crate::errors::log_if_serious(&e);
                answer.error_code = crate::errors::code(&e);
            }
            Ok(other) => anyhow::bail!("delete records answered with {other:?}"),
            Err(code) => answer.error_code = code,
        }
    }
    Ok(Some(ResponseKind::DeleteRecords(
        DeleteRecordsResponse::default().with_topics(topics),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::DeleteRecords, |_| {
            ResponseKind::DeleteRecords(
                DeleteRecordsResponse::default().with_topics(vec![DeleteRecordsTopicResult::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        DeleteRecordsPartitionResult::default()
                            .with_partition_index(0)
                            .with_low_watermark(42),
                        DeleteRecordsPartitionResult::default()
                            .with_partition_index(1)
                            .with_low_watermark(-1)
                            .with_error_code(ResponseError::OffsetOutOfRange.code()),
                    ])]),
            )
        });
    }
}
