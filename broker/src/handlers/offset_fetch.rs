//! OffsetFetch (key 9), versions 1-9: a group's committed offsets (-1 where none), for given
//! partitions or, with no topics, every one committed. One group before v8, a batch from v8.

use bytes::Bytes;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{decode_body, Request};
use crate::groups::FetchedOffset;
use crate::server::Broker;

/// One group's answer: its offsets by topic, or a group-level error.
type GroupOffsets = Result<Vec<(String, Vec<FetchedOffset>)>, i16>;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: OffsetFetchRequest = decode_body(body, request.version)?;
    let version = request.version;
    if version >= 8 {
        let asks = req.groups.into_iter().map(|g| {
            let name = g.group_id.0.to_string();
            let topics = g
                .topics
                .map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
            async move { (g.group_id, fetch(broker, name, topics).await) }
        });
        let groups = futures::future::join_all(asks)
            .await
            .into_iter()
            .map(|(id, offsets)| group_v8(id, offsets, version))
            .collect();
        return Ok(Some(ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_groups(groups))));
    }
    let topics = req
        .topics
        .map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
    let offsets = fetch(broker, req.group_id.0.to_string(), topics).await;
    Ok(Some(ResponseKind::OffsetFetch(single(offsets, version))))
}

async fn fetch(broker: &Broker, group_id: String, topics: Option<Vec<(String, Vec<i32>)>>) -> GroupOffsets {
    let id = group_id.clone();
    let offsets = crate::groups::on_coordinator(broker, &group_id, move |c| async move { c.fetch(&id, topics) })
        .await
        .map_err(|e| e.code())?;
    let mut by_topic: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for o in offsets {
        match by_topic.iter_mut().find(|(t, _)| *t == o.0) {
            Some((_, list)) => list.push(o),
            None => by_topic.push((o.0.clone(), vec![o])),
        }
    }
    Ok(by_topic)
}

/// (offset, leader epoch, metadata) as OffsetFetch reports them; -1 where nothing is committed.
fn fields(o: &FetchedOffset, version: i16) -> (i64, i32, Option<StrBytes>) {
    let (offset, epoch, metadata) = match &o.2 {
        Some(c) => (c.offset, c.leader_epoch, c.metadata.clone()),
        None => (-1, -1, String::new()),
    };
    // The leader epoch exists from v5.
    (offset, if version >= 5 { epoch } else { -1 }, Some(StrBytes::from_string(metadata)))
}

fn single(offsets: GroupOffsets, version: i16) -> OffsetFetchResponse {
    match offsets {
        Err(code) => {
            let r = OffsetFetchResponse::default();
            // The group-level error code exists from v2.
            if version >= 2 {
                r.with_error_code(code)
            } else {
                r
            }
        }
        Ok(by_topic) => OffsetFetchResponse::default().with_topics(
            by_topic
                .into_iter()
                .map(|(t, list)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t)))
                        .with_partitions(
                            list.iter()
                                .map(|o| {
                                    let (offset, epoch, metadata) = fields(o, version);
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(o.1)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(metadata)
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}

fn group_v8(id: GroupId, offsets: GroupOffsets, version: i16) -> OffsetFetchResponseGroup {
    match offsets {
        Err(code) => OffsetFetchResponseGroup::default().with_group_id(id).with_error_code(code),
        Ok(by_topic) => OffsetFetchResponseGroup::default().with_group_id(id).with_topics(
            by_topic
                .into_iter()
                .map(|(t, list)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(StrBytes::from_string(t)))
                        .with_partitions(
                            list.iter()
                                .map(|o| {
                                    let (offset, epoch, metadata) = fields(o, version);
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(o.1)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(metadata)
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::offsets::Committed;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes() {
        let offsets = || -> GroupOffsets {
            Ok(vec![(
                "t".to_owned(),
                vec![
                    (
                        "t".to_owned(),
                        0,
                        Some(Committed {
                            offset: 5,
                            leader_epoch: 0,
                            metadata: "m".into(),
                            commit_timestamp_ms: 1,
                        }),
                    ),
                    ("t".to_owned(), 1, None),
                ],
            )])
        };
        super::super::assert_encodes(ApiKey::OffsetFetch, |v| {
            ResponseKind::OffsetFetch(if v >= 8 {
                OffsetFetchResponse::default().with_groups(vec![group_v8(GroupId(StrBytes::from_static_str("g")), offsets(), v)])
            } else {
                single(offsets(), v)
            })
        });
    }
}
