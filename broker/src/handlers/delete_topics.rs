//! DeleteTopics (key 20), versions 1-6 (by name; v6 also by topic id): removes the topic from
//! the metadata, then has each owner shard close its partitions' logs and delete their
//! directories before answering.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use shard::{Op, OpResult, ShardId, TopicPartition};

use super::create_topics::Refusal;
use super::{decode_body, Request};
use crate::metadata::TopicMeta;
use crate::server::Broker;

/// What the request names: a topic by name, or (v6) by id.
enum Target {
    Name(String),
    Id(uuid::Uuid),
}

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: DeleteTopicsRequest = decode_body(body, request.version)?;
    let version = request.version;
    let targets: Vec<Result<Target, Refusal>> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| match (&t.name, t.topic_id.is_nil()) {
                (Some(name), true) => Ok(Target::Name(name.0.to_string())),
                (None, false) => Ok(Target::Id(t.topic_id)),
                (Some(_), false) => Err((ResponseError::InvalidRequest, "give a topic name or a topic id, not both".into())),
                (None, true) => Err((ResponseError::InvalidRequest, "neither a topic name nor a topic id".into())),
            })
            .collect()
    } else {
        req.topic_names.iter().map(|n| Ok(Target::Name(n.0.to_string()))).collect()
    };
    let mut results = Vec::with_capacity(targets.len());
    for (i, target) in targets.into_iter().enumerate() {
        // What the request said, echoed when the topic cannot be found.
        let (asked_name, asked_id) = if version >= 6 {
            (req.topics[i].name.as_ref().map(|n| n.0.to_string()), req.topics[i].topic_id)
        } else {
            (Some(req.topic_names[i].0.to_string()), uuid::Uuid::nil())
        };
        let outcome = match target {
            Ok(target) => delete(broker, target).await,
            Err(refusal) => Err(refusal),
        };
        results.push(match outcome {
            Ok(topic) => result(Some(&topic.name), topic.uuid(), None, version),
            Err((error, message)) => result(asked_name.as_deref(), asked_id, Some((error, message)), version),
        });
    }
    Ok(Some(ResponseKind::DeleteTopics(
        DeleteTopicsResponse::default().with_responses(results),
    )))
}

/// One topic's answer; the topic id exists from v6, the error message from v5.
fn result(name: Option<&str>, id: uuid::Uuid, error: Option<Refusal>, version: i16) -> DeletableTopicResult {
    let mut r = DeletableTopicResult::default().with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_owned()))));
    if version >= 6 {
        r = r.with_topic_id(id);
    }
    if let Some((error, message)) = error {
        r = r.with_error_code(error.code());
        if version >= 5 {
            r = r.with_error_message(Some(StrBytes::from_string(message)));
        }
    }
    r
}

/// Removes the topic from the metadata, then drops its partitions on their owners.
async fn delete(broker: &Broker, target: Target) -> Result<TopicMeta, Refusal> {
    let meta = broker.meta.clone();
    // Deleting frees space: on a full disk its metadata write may use the reserve.
    let change = move || {
        meta.update_freeing(|m, _| {
            let name = match &target {
                Target::Name(n) => n.clone(),
                Target::Id(id) => match m.topic_by_id(*id) {
                    Some(t) => t.name.clone(),
                    None => return Err((ResponseError::UnknownTopicId, format!("no topic has id {id}"))),
                },
            };
            if crate::internal::is_internal(&name) {
                return Err((ResponseError::InvalidRequest, format!("`{name}` is internal and cannot be deleted")));
            }
            m.topics
                .remove(&name)
                .ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("topic `{name}` does not exist")))
        })
    };
    // The metadata write fsyncs: keep it off the shard's reactor.
    let topic = match glommio::executor().spawn_blocking(change).await {
        Ok(Ok(topic)) => topic,
        Ok(Err(refusal)) => return Err(refusal),
        Err(e) => {
            tracing::error!(target: "broker", error = %e, "writing metadata failed");
            return Err((ResponseError::KafkaStorageError, format!("writing metadata: {e}")));
        }
    };
    tracing::info!(target: "broker", topic = %topic.name, partitions = topic.partitions(), "topic deleted");
    let mut by_owner: BTreeMap<ShardId, Vec<Op>> = BTreeMap::new();
    for (p, &owner) in topic.placement.iter().enumerate() {
        by_owner.entry(ShardId(owner)).or_default().push(Op::Drop {
            tp: TopicPartition::new(topic.name.clone(), p as i32),
        });
    }
    let calls = by_owner.into_iter().map(|(owner, ops)| broker.router.call(owner, ops));
    let mut failure: Option<shard::Error> = None;
    for results in futures::future::join_all(calls).await {
        let errors: Vec<shard::Error> = match results {
            Ok(results) => results
                .into_iter()
                .filter_map(|r| match r {
                    OpResult::Dropped(Err(e)) => Some(e),
                    _ => None,
                })
                .collect(),
            Err(e) => vec![e],
        };
        for e in errors {
            // The topic is gone from the metadata; its files may not be: an operator must look.
            tracing::error!(target: "broker", topic = %topic.name, error = %e, "deleting a partition's files failed");
            failure.get_or_insert(e);
        }
    }
    match failure {
        None => Ok(topic),
        Some(e) => Err((crate::errors::response_error(&e), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes_successes_and_errors() {
        super::super::assert_encodes(ApiKey::DeleteTopics, |v| {
            ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(vec![
                result(Some("t"), uuid::Uuid::from_u128(7), None, v),
                result(
                    Some("u"),
                    uuid::Uuid::nil(),
                    Some((ResponseError::UnknownTopicOrPartition, "no".into())),
                    v,
                ),
            ]))
        });
        // Only v6 names topics by id, so only v6 answers without a name.
        super::super::assert_encodes_at(ApiKey::DeleteTopics, 6, |v| {
            ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(vec![result(
                None,
                uuid::Uuid::from_u128(9),
                Some((ResponseError::UnknownTopicId, "no".into())),
                v,
            )]))
        });
    }
}
