//! OffsetCommit (key 8), versions 2-9: a group's consumed positions, written durably to
//! `__consumer_offsets` before the answer.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, ResponseKind};

use super::{decode_body, now_ms, Request};
use crate::groups::offsets::Committed;
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: OffsetCommitRequest = decode_body(body, request.version)?;
    let generation = req.generation_id_or_member_epoch;
    commit_and_answer!(
        broker,
        req,
        generation,
        None,
        OffsetCommitResponseTopic,
        OffsetCommitResponsePartition,
        OffsetCommitResponse,
        OffsetCommit
    )
}

/// OffsetCommit and TxnOffsetCommit carry the same fields in distinct generated types: this is
/// the body of both handlers, written once. `$req` is the decoded request; `$txn` the producer
/// id whose transaction the offsets belong to (`None` for a plain commit).
macro_rules! commit_and_answer {
    ($broker:expr, $req:ident, $generation:expr, $txn:expr, $topic:ident, $partition:ident, $response:ident, $kind:ident) => {{
        let asked = $req
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
            $req.member_id.to_string(),
            $req.group_instance_id.as_ref().map(|i| i.to_string()),
            $generation,
        );
        let codes = super::offset_commit::commit_all($broker, $req.group_id.0.to_string(), member, $txn, asked).await;
        let topics = $req
            .topics
            .into_iter()
            .zip(codes)
            .map(|(t, codes)| {
                $topic::default().with_name(t.name).with_partitions(
                    t.partitions
                        .iter()
                        .zip(codes)
                        .map(|(p, code)| $partition::default().with_partition_index(p.partition_index).with_error_code(code))
                        .collect(),
                )
            })
            .collect();
        Ok(Some(ResponseKind::$kind($response::default().with_topics(topics))))
    }};
}
pub(super) use commit_and_answer;

/// One partition's commit as a request carries it: (partition, offset, leader epoch, metadata).
pub(super) type AskedCommit = (i32, i64, i32, Option<String>);

/// OffsetCommit and TxnOffsetCommit alike: the partitions that exist are committed on the
/// group's coordinator (as producer `txn`'s pending offsets when given), the others get
/// UNKNOWN_TOPIC_OR_PARTITION. Returns the error code of each asked partition, in order.
pub(super) async fn commit_all(
    broker: &Broker,
    group_id: String,
    member: (String, Option<String>, i32),
    txn: Option<i64>,
    asked: Vec<(String, Vec<AskedCommit>)>,
) -> Vec<Vec<i16>> {
    let now = now_ms();
    let meta = broker.meta.snapshot();
    // Per partition of the request: an error found here, or the index of its commit.
    let mut slots: Vec<Vec<Result<usize, i16>>> = Vec::with_capacity(asked.len());
    let mut commits = Vec::new();
    for (name, partitions) in asked {
        let topic = meta.topics.get(name.as_str());
        slots.push(
            partitions
                .into_iter()
                .map(|(partition, offset, leader_epoch, metadata)| match topic {
                    Some(topic) if (0..topic.partitions()).contains(&partition) => {
                        let committed = Committed {
                            offset,
                            leader_epoch,
                            metadata: metadata.unwrap_or_default(),
                            commit_timestamp_ms: now,
                        };
                        commits.push((name.clone(), partition, committed));
                        Ok(commits.len() - 1)
                    }
                    _ => Err(ResponseError::UnknownTopicOrPartition.code()),
                })
                .collect(),
        );
    }
    let codes = if commits.is_empty() {
        Vec::new()
    } else {
        let (id, n) = (group_id.clone(), commits.len());
        crate::groups::on_coordinator(
            broker,
            &group_id,
            move |c| async move { c.commit(&id, member, commits, txn, now).await },
        )
        .await
        .unwrap_or_else(|e| vec![e.code(); n])
    };
    slots
        .into_iter()
        .map(|slots| {
            slots
                .into_iter()
                .map(|slot| match slot {
                    Ok(i) => codes[i],
                    Err(code) => code,
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::OffsetCommit, |_| {
            ResponseKind::OffsetCommit(
                OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![OffsetCommitResponsePartition::default().with_partition_index(0)])]),
            )
        });
    }
}
