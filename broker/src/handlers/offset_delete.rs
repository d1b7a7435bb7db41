//! OffsetDelete (key 47), version 0: deletes a group's committed offsets of some partitions,
//! unless a member is subscribed to the topic (GROUP_SUBSCRIBED_TO_TOPIC).

use bytes::Bytes;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{decode_body, now_ms, Request};
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: OffsetDeleteRequest = decode_body(body, request.version)?;
    let name = req.group_id.0.to_string();
    let topics: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()))
        .collect();
    let id = name.clone();
    let result = crate::groups::on_coordinator(broker, &name, move |c| async move { c.delete_offsets(&id, topics, now_ms()).await })
        .await
        .and_then(|r| r);
    let response = match result {
        Err(e) => OffsetDeleteResponse::default().with_error_code(e.code()),
        Ok(answers) => {
            let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
            for (t, p, code) in answers {
                let partition = OffsetDeleteResponsePartition::default()
                    .with_partition_index(p)
                    .with_error_code(code);
                match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
                    Some(x) => x.partitions.push(partition),
                    None => topics.push(
                        OffsetDeleteResponseTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t)))
                            .with_partitions(vec![partition]),
                    ),
                }
            }
            OffsetDeleteResponse::default().with_topics(topics)
        }
    };
    Ok(Some(ResponseKind::OffsetDelete(response)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::OffsetDelete, |_| {
            ResponseKind::OffsetDelete(
                OffsetDeleteResponse::default().with_topics(vec![OffsetDeleteResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![OffsetDeleteResponsePartition::default().with_error_code(86)])]),
            )
        });
    }
}
