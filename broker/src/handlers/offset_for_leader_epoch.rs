//! OffsetForLeaderEpoch (key 23), versions 2-4: where an epoch's log ends, as consumers ask to
//! detect truncation (KIP-320). This node has led every partition in epoch 0 since its
//! creation, so epoch 0 ends at the high watermark, and there is no later epoch. A current
//! leader epoch other than 0 is fenced (older) or unknown (newer), as Kafka answers.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ResponseKind};
use shard::{Op, OpResult, ShardId, TopicPartition};

use super::{decode_body, Request};
use crate::metadata::MetaStore;
use crate::server::Broker;

/// The only leader epoch there has been.
const LEADER_EPOCH: i32 = 0;
/// Kafka's "no epoch": a current leader epoch of -1 skips fencing; as the asked epoch it means
/// undefined.
const NO_EPOCH: i32 = -1;

/// Where one partition's answer goes in the response, and the epoch it asked about.
struct Slot {
    topic: usize,
    partition: usize,
    leader_epoch: i32,
}

/// Kafka's check of the requester's current leader epoch against ours.
fn fencing(current_leader_epoch: i32) -> Option<ResponseError> {
    match current_leader_epoch {
        NO_EPOCH | LEADER_EPOCH => None,
        e if e < LEADER_EPOCH => Some(ResponseError::FencedLeaderEpoch),
        _ => Some(ResponseError::UnknownLeaderEpoch),
    }
}

/// (leader_epoch, end_offset) for an asked epoch, given the high watermark: epoch 0 ends there;
/// an epoch after it is unknown (-1, -1), as Kafka answers for an epoch beyond its latest.
fn end_of(leader_epoch: i32, high_watermark: u64) -> (i32, i64) {
    if leader_epoch == LEADER_EPOCH {
        (LEADER_EPOCH, high_watermark as i64)
    } else {
        (NO_EPOCH, -1)
    }
}

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: OffsetForLeaderEpochRequest = decode_body(body, request.version)?;
    let meta = broker.meta.snapshot();
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut by_owner: BTreeMap<ShardId, (Vec<Op>, Vec<Slot>)> = BTreeMap::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let answer = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(NO_EPOCH)
                .with_end_offset(-1);
            let tp = TopicPartition::new(t.topic.0.to_string(), p.partition);
            let Some(owner) = MetaStore::owner(&meta, &tp) else {
                partitions.push(answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            if let Some(error) = fencing(p.current_leader_epoch) {
                partitions.push(answer.with_error_code(error.code()));
                continue;
            }
            partitions.push(answer);
            let entry = by_owner.entry(owner).or_default();
            entry.0.push(Op::Offsets { tp });
            entry.1.push(Slot {
                topic: ti,
                partition: pi,
                leader_epoch: p.leader_epoch,
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    for (slot, result) in super::call_owners(broker, by_owner).await {
        let answer = &mut topics[slot.topic].partitions[slot.partition];
        match result {
            Ok(OpResult::Offsets(Ok(offsets))) => {
                (answer.leader_epoch, answer.end_offset) = end_of(slot.leader_epoch, offsets.durable_end);
            }
            Ok(OpResult::Offsets(Err(e))) => answer.error_code = crate::errors::code(&e),
            Ok(other) => anyhow::bail!("offsets answered with {other:?}"),
            Err(code) => answer.error_code = code,
        }
    }
    Ok(Some(ResponseKind::OffsetForLeaderEpoch(
        OffsetForLeaderEpochResponse::default().with_topics(topics),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn epoch_zero_ends_at_the_high_watermark_and_later_epochs_are_fenced_or_unknown() {
        assert_eq!(fencing(NO_EPOCH), None);
        assert_eq!(fencing(0), None);
        assert_eq!(fencing(1), Some(ResponseError::UnknownLeaderEpoch));
        assert_eq!(fencing(-2), Some(ResponseError::FencedLeaderEpoch));
        assert_eq!(end_of(0, 42), (0, 42));
        assert_eq!(end_of(3, 42), (NO_EPOCH, -1), "an epoch after the latest");
        assert_eq!(end_of(NO_EPOCH, 42), (NO_EPOCH, -1));
    }

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::OffsetForLeaderEpoch, |_| {
            ResponseKind::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default().with_topics(vec![
                OffsetForLeaderTopicResult::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        EpochEndOffset::default().with_partition(0).with_leader_epoch(0).with_end_offset(42),
                        EpochEndOffset::default()
                            .with_partition(1)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1)
                            .with_error_code(ResponseError::FencedLeaderEpoch.code()),
                    ]),
            ]))
        });
    }
}
