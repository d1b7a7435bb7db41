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
    let group_id = req.group_id.0.to_string();
    let now = now_ms();
    let meta = broker.meta.snapshot();
    // Per partition of the request: an error found here, or the index of its commit.
    let mut slots: Vec<Vec<Result<usize, i16>>> = Vec::with_capacity(req.topics.len());
    let mut commits = Vec::new();
    for t in &req.topics {
        let topic = meta.topics.get(t.name.0.as_str());
        slots.push(
            t.partitions
                .iter()
                .map(|p| match topic {
                    Some(topic) if p.partition_index >= 0 && p.partition_index < topic.partitions() => {
                        commits.push((
                            t.name.0.to_string(),
                            p.partition_index,
                            Committed {
                                offset: p.committed_offset,
                                leader_epoch: p.committed_leader_epoch,
                                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                                commit_timestamp_ms: now,
                            },
                        ));
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
        let member = (
            req.member_id.to_string(),
            req.group_instance_id.as_ref().map(|i| i.to_string()),
            req.generation_id_or_member_epoch,
        );
        let (id, n) = (group_id.clone(), commits.len());
        crate::groups::on_coordinator(broker, &group_id, move |c| async move {
            c.commit(&id, member, commits, None, now).await
        })
        .await
        .unwrap_or_else(|e| vec![e.code(); n])
    };
    let topics = req
        .topics
        .into_iter()
        .zip(slots)
        .map(|(t, slots)| {
            OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(
                t.partitions
                    .iter()
                    .zip(slots)
                    .map(|(p, slot)| {
                        let code = match slot {
                            Ok(i) => codes[i],
                            Err(code) => code,
                        };
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                    })
                    .collect(),
            )
        })
        .collect();
    Ok(Some(ResponseKind::OffsetCommit(
        OffsetCommitResponse::default().with_topics(topics),
    )))
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
