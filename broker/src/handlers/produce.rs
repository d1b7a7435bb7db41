//! Produce (key 0), versions 3-13: each partition's batch goes to its owner shard (one mesh
//! message per owner); acks=all answers after the group commit that covers the batch, acks=1
//! after the append, acks=0 not at all. Idempotent producers' batches are checked by the log
//! (`iouring_storage` producer state): a retry is answered with the original offsets.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use shard::{Op, OpResult, ShardId, TopicPartition};

use super::{decode_body, now_ms, Request};
use crate::server::Broker;

/// Attribute bit of a batch whose timestamps are the broker's (LogAppendTime).
const ATTRIBUTE_LOG_APPEND_TIME: i16 = 0x08;

/// Where one partition's answer goes in the response.
struct Slot {
    topic: usize,
    partition: usize,
    /// The batch's size, for the bytes-in metrics.
    bytes: usize,
}

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: ProduceRequest = decode_body(body, request.version)?;
    let durable = match req.acks {
        -1 => true,
        0 | 1 => false,
        other => return Ok(Some(error_response(&req, ResponseError::InvalidRequiredAcks, other))),
    };
    let meta = broker.meta.snapshot();
    let now = now_ms();
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
    let mut by_owner: BTreeMap<ShardId, (Vec<Op>, Vec<Slot>)> = BTreeMap::new();
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for (ti, t) in req.topic_data.into_iter().enumerate() {
        let topic = if request.version >= 13 {
            meta.topic_by_id(t.topic_id)
        } else {
            meta.topics.get(t.name.0.as_str())
        };
        topics.push(topic);
        let mut partitions = Vec::with_capacity(t.partition_data.len());
        for (pi, p) in t.partition_data.into_iter().enumerate() {
            let mut answer = PartitionProduceResponse::default()
                .with_index(p.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let Some(topic) = topic else {
                let missing = if request.version >= 13 {
                    ResponseError::UnknownTopicId
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                partitions.push(answer.with_error_code(missing.code()));
                continue;
            };
            if crate::internal::is_internal(&topic.name) {
                // Only their coordinators write the internal topics (Kafka answers the same).
                partitions.push(answer.with_error_code(ResponseError::InvalidTopicException.code()));
                continue;
            }
            let tp = TopicPartition::new(topic.name.clone(), p.index);
            let Some(owner) = crate::metadata::MetaStore::owner(&meta, &tp) else {
                partitions.push(answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let effective = broker.meta.effective(topic);
            let Some(records) = p.records else {
                partitions.push(answer.with_error_code(ResponseError::CorruptMessage.code()));
                continue;
            };
            if records.len() > effective.max_message_bytes() {
                partitions.push(answer.with_error_code(ResponseError::MessageTooLarge.code()));
                continue;
            }
            if holds_more_than_one_batch(&records) {
                // Produce v3+ carries exactly one batch per partition; Kafka answers more with
                // INVALID_RECORD (the log would call it a length mismatch, CORRUPT_MESSAGE).
                partitions.push(answer.with_error_code(ResponseError::InvalidRecord.code()).with_error_message(Some(
                    StrBytes::from_static_str("produce requests carry exactly one record batch per partition"),
                )));
                continue;
            }
            let batch = if effective.log_append_time() {
                answer = answer.with_log_append_time_ms(now);
                match stamp_log_append_time(&records, now) {
                    Ok(b) => b,
                    Err(e) => {
                        let code = crate::errors::code(&shard::Error::Storage {
                            tp: tp.to_string(),
                            source: e.into(),
                        });
                        partitions.push(answer.with_error_code(code));
                        continue;
                    }
                }
            } else {
                records
            };
            partitions.push(answer);
            let bytes = batch.len();
            let entry = by_owner.entry(owner).or_default();
            entry.0.push(Op::Append {
                tp,
                batch,
                leader_epoch: 0,
                now_ms: now,
                durable,
            });
            entry.1.push(Slot {
                topic: ti,
                partition: pi,
                bytes,
            });
        }
        let name = if request.version >= 13 { t.name } else { t.name.clone() };
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(t.topic_id)
                .with_partition_responses(partitions),
        );
    }

    for (slot, result) in super::call_owners(broker, by_owner).await {
        let answer = &mut responses[slot.topic].partition_responses[slot.partition];
        match result {
            Ok(OpResult::Appended(Ok((info, offsets)))) => {
                // A duplicate (an idempotent producer's retry) gets the original batch's
                // offsets, and under LogAppendTime its time, as Kafka answers it.
                if let Some(topic) = topics[slot.topic] {
                    let messages = info.last_offset - info.base_offset + 1;
                    broker.metrics.produced(&topic.name, slot.bytes as u64, messages);
                }
                answer.base_offset = info.base_offset as i64;
                if info.duplicate && answer.log_append_time_ms != -1 {
                    answer.log_append_time_ms = info.max_timestamp;
                }
                if request.version >= 5 {
                    answer.log_start_offset = offsets.log_start as i64;
                }
            }
            Ok(OpResult::Appended(Err(e))) => {
                crate::errors::log_if_serious(&e);
                answer.error_code = crate::errors::code(&e);
                answer.error_message = Some(StrBytes::from_string(e.to_string()));
            }
            Ok(other) => anyhow::bail!("append answered with {other:?}"),
            Err(code) => answer.error_code = code,
        }
    }
    if req.acks == 0 {
        return Ok(None);
    }
    Ok(Some(ResponseKind::Produce(ProduceResponse::default().with_responses(responses))))
}

/// Whether `records` starts with a whole v2 batch and has another one after it.
fn holds_more_than_one_batch(records: &Bytes) -> bool {
    match iouring_storage::BatchHeader::parse(records) {
        Ok(first) => first.total_bytes < records.len() && iouring_storage::BatchHeader::parse(&records[first.total_bytes..]).is_ok(),
        Err(_) => false,
    }
}

/// Rewrites a batch for LogAppendTime: the attribute bit and max timestamp, then its CRC.
/// The batch is validated first, so a corrupt batch is refused, never re-hashed into a valid one.
fn stamp_log_append_time(records: &Bytes, now: i64) -> Result<Bytes, iouring_storage::BatchError> {
    iouring_storage::validate(records, usize::MAX, iouring_storage::CountCheck::Exact)?;
    let mut b = BytesMut::from(&records[..]);
    let attributes = i16::from_be_bytes([b[21], b[22]]) | ATTRIBUTE_LOG_APPEND_TIME;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[35..43].copy_from_slice(&now.to_be_bytes());
    let crc = iouring_storage::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(b.freeze())
}

fn error_response(req: &ProduceRequest, error: ResponseError, acks: i16) -> ResponseKind {
    tracing::debug!(target: "broker", acks, "produce with invalid acks");
    let responses = req
        .topic_data
        .iter()
        .map(|t| {
            let partitions = t
                .partition_data
                .iter()
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(error.code())
                        .with_base_offset(-1)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partition_responses(partitions)
        })
        .collect();
    ResponseKind::Produce(ProduceResponse::default().with_responses(responses))
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_batches_are_recognised_and_one_with_trailing_garbage_is_not() {
        let one = iouring_storage::testing::build_batch(2, 30, 0, 0);
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert!(super::holds_more_than_one_batch(&bytes::Bytes::from(two)));
        assert!(!super::holds_more_than_one_batch(&bytes::Bytes::from(one.clone())));
        let mut garbage = one;
        garbage.extend_from_slice(&[1, 2, 3]);
        assert!(!super::holds_more_than_one_batch(&bytes::Bytes::from(garbage)));
    }
}
