//! CreateTopics (key 19), versions 2-7, and the auto-creation Metadata uses.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use super::{decode_body, Request};
use crate::metadata::{add_topic, valid_topic_name, TopicMeta};
use crate::server::Broker;
use crate::topic_config::{self, Source};

/// Most partitions one topic may have.
pub(super) const PARTITIONS_PER_TOPIC_MAX: i32 = 100_000;

/// A refused creation: the Kafka error and a message for the client.
pub type Refusal = (ResponseError, String);

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: CreateTopicsRequest = decode_body(body, request.version)?;
    let mut results = Vec::with_capacity(req.topics.len());
    let mut seen = std::collections::HashSet::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        if !seen.insert(name.clone()) {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str("topic listed twice in one request"))),
            );
            continue;
        }
        let mut configs = BTreeMap::new();
        let mut refusal: Option<Refusal> = None;
        for c in &t.configs {
            let Some(value) = &c.value else { continue };
            if let Err(reason) = topic_config::validate_one(c.name.as_str(), value.as_str()) {
                refusal = Some((ResponseError::InvalidConfig, format!("{}: {reason}", c.name.as_str())));
                break;
            }
            configs.insert(c.name.to_string(), value.to_string());
        }
        let mut partitions = t.num_partitions;
        if refusal.is_none() && !t.assignments.is_empty() {
            if partitions != -1 || t.replication_factor != -1 {
                refusal = Some((
                    ResponseError::InvalidRequest,
                    "give either assignments or num_partitions and replication_factor".into(),
                ));
            } else if t
                .assignments
                .iter()
                .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != broker.config.node_id)
            {
                refusal = Some((
                    ResponseError::InvalidReplicaAssignment,
                    format!("this cluster has one node, {}", broker.config.node_id),
                ));
            } else {
                partitions = t.assignments.len() as i32;
            }
        }
        if refusal.is_none() && !matches!(t.replication_factor, -1 | 1) {
            refusal = Some((
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {} is larger than the 1 node of this cluster",
                    t.replication_factor
                ),
            ));
        }
        let created = match refusal {
            Some(r) => Err(r),
            None => create(broker, &name, partitions, configs, req.validate_only).await,
        };
        result = match created {
            Ok(topic) => {
                let effective = broker.meta.effective(&topic);
                let configs = effective
                    .entries()
                    .map(|(k, v, source)| {
                        CreatableTopicConfigs::default()
                            .with_name(StrBytes::from_static_str(k))
                            .with_value(Some(StrBytes::from_string(v.to_owned())))
                            .with_config_source(config_source(source))
                    })
                    .collect();
                if request.version >= 5 {
                    let result = result
                        .with_num_partitions(topic.partitions())
                        .with_replication_factor(1)
                        .with_configs(Some(configs));
                    if request.version >= 7 {
                        result.with_topic_id(topic.uuid())
                    } else {
                        result
                    }
                } else {
                    result
                }
            }
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        };
        results.push(result);
    }
    Ok(Some(ResponseKind::CreateTopics(
        CreateTopicsResponse::default().with_topics(results),
    )))
}

/// DescribeConfigs' source codes: 1 topic, 4 static broker config, 5 default.
pub fn config_source(source: Source) -> i8 {
    match source {
        Source::Topic => 1,
        Source::Broker => 4,
        Source::Default => 5,
    }
}

/// Creates a topic (or checks that it could be, with `validate_only`).
pub async fn create(
    broker: &Broker,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<TopicMeta, Refusal> {
    valid_topic_name(name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    let partitions = if partitions == -1 {
        broker.config.default_partitions
    } else {
        partitions
    };
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
        return Err((
            ResponseError::InvalidPartitions,
            format!("{partitions} partitions is not between 1 and {PARTITIONS_PER_TOPIC_MAX}"),
        ));
    }
    let meta = broker.meta.clone();
    let name = name.to_owned();
    let change = move || {
        meta.update(|m, shards| {
            if m.topics.contains_key(&name) {
                return Err((ResponseError::TopicAlreadyExists, format!("topic `{name}` already exists")));
            }
            let mut scratch = m.clone();
            let topic = add_topic(if validate_only { &mut scratch } else { m }, shards, &name, partitions, configs);
            Ok(topic)
        })
    };
    // The metadata write fsyncs: keep it off the shard's reactor.
    let outcome = glommio::executor().spawn_blocking(change).await;
    match outcome {
        Ok(Ok(topic)) => {
            if !validate_only {
                tracing::info!(target: "broker", topic = %topic.name, partitions = topic.partitions(), "topic created");
            }
            Ok(topic)
        }
        Ok(Err(refusal)) => Err(refusal),
        Err(e) => {
            tracing::error!(target: "broker", error = %e, "writing metadata failed");
            Err((ResponseError::KafkaStorageError, format!("writing metadata: {e}")))
        }
    }
}

/// Creates a topic with the defaults on first use; a concurrent creation counts as success.
pub async fn auto_create(broker: &Broker, name: &str) -> Result<TopicMeta, ResponseError> {
    match create(broker, name, -1, BTreeMap::new(), false).await {
        Ok(t) => Ok(t),
        Err((ResponseError::TopicAlreadyExists, _)) => broker
            .meta
            .snapshot()
            .topics
            .get(name)
            .cloned()
            .ok_or(ResponseError::UnknownTopicOrPartition),
        Err((e, _)) => Err(e),
    }
}
