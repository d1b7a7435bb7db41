//! AlterConfigs (key 33), versions 0-2: replaces a topic's whole config set (keys left out go
//! back to their defaults), and the config changes IncrementalAlterConfigs shares: validation,
//! the metadata write, and reconfiguring every open log of the topic on its owner shard, so
//! changes take effect without a restart. Broker configs are read-only (the config file).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use shard::{Op, OpResult, ShardId, TopicPartition};

use super::create_topics::Refusal;
use super::{decode_body, Request};
use crate::metadata::TopicMeta;
use crate::server::Broker;
use crate::topic_config::{self, Effective};

/// Kafka's config resource types.
pub(super) const RESOURCE_TOPIC: i8 = 2;
pub(super) const RESOURCE_BROKER: i8 = 4;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: AlterConfigsRequest = decode_body(body, request.version)?;
    let mut responses = Vec::with_capacity(req.resources.len());
    let mut seen = BTreeSet::new();
    for r in &req.resources {
        let outcome = if !seen.insert((r.resource_type, r.resource_name.to_string())) {
            Err((ResponseError::InvalidRequest, "resource listed twice in one request".to_owned()))
        } else {
            alter(broker, r, req.validate_only).await
        };
        responses.push(response(r.resource_type, r.resource_name.clone(), outcome.err()));
    }
    Ok(Some(ResponseKind::AlterConfigs(
        AlterConfigsResponse::default().with_responses(responses),
    )))
}

fn response(resource_type: i8, resource_name: StrBytes, error: Option<Refusal>) -> AlterConfigsResourceResponse {
    let r = AlterConfigsResourceResponse::default()
        .with_resource_type(resource_type)
        .with_resource_name(resource_name);
    match error {
        None => r,
        Some((error, message)) => r
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message))),
    }
}

async fn alter(broker: &Broker, r: &AlterConfigsResource, validate_only: bool) -> Result<(), Refusal> {
    let name = r.resource_name.as_str();
    match r.resource_type {
        RESOURCE_TOPIC => {
            let configs = new_config_set(r.configs.iter().map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))))?;
            change_topic_configs(broker, name, validate_only, move |_, _| Ok(configs)).await
        }
        RESOURCE_BROKER => {
            check_broker_name(name, broker.config.node_id)?;
            read_only_broker(r.configs.iter().map(|c| c.name.as_str()))
        }
        other => Err(unsupported_resource(other)),
    }
}

/// The config set AlterConfigs asks for: every key once, none null.
fn new_config_set<'a>(entries: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> Result<BTreeMap<String, String>, Refusal> {
    let mut configs = BTreeMap::new();
    for (k, v) in entries {
        let Some(v) = v else {
            return Err((ResponseError::InvalidRequest, format!("null value for config `{k}`")));
        };
        if configs.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err((ResponseError::InvalidRequest, format!("config `{k}` given twice")));
        }
    }
    Ok(configs)
}

/// A broker resource is this node (by id) or the cluster default (empty name).
pub(super) fn check_broker_name(name: &str, node_id: i32) -> Result<(), Refusal> {
    if name.is_empty() || name == node_id.to_string() {
        Ok(())
    } else {
        Err((
            ResponseError::InvalidRequest,
            format!("unexpected broker id `{name}`: this node is {node_id}"),
        ))
    }
}

/// Broker configs come from the broker's config file; nothing changes them at run time.
pub(super) fn read_only_broker<'a>(mut keys: impl Iterator<Item = &'a str>) -> Result<(), Refusal> {
    match keys.next() {
        None => Ok(()),
        Some(k) => Err((
            ResponseError::InvalidRequest,
            format!("cannot update broker config `{k}` dynamically: broker configs are read-only, set them in the config file"),
        )),
    }
}

pub(super) fn unsupported_resource(resource_type: i8) -> Refusal {
    (
        ResponseError::InvalidRequest,
        format!("config resource type {resource_type} is not supported (topics are 2, brokers 4)"),
    )
}

/// Checks a topic's whole config set: each value, then the log configuration they make together.
pub(super) fn validate_configs(broker_defaults: &[(String, String)], configs: &BTreeMap<String, String>) -> Result<(), Refusal> {
    for (k, v) in configs {
        topic_config::validate_one(k, v).map_err(|reason| {
            let message = if topic_config::def(k).is_some() {
                format!("invalid value `{v}` for config `{k}`: {reason}")
            } else {
                reason
            };
            (ResponseError::InvalidConfig, message)
        })?;
    }
    Effective::resolve(broker_defaults, configs)
        .log_config()
        .validate()
        .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))
}

/// Replaces the configs of topic `name` with what `change` makes of its current ones (given
/// them and the broker defaults), validates the result, writes the metadata, and reconfigures
/// the topic's open logs. With `validate_only`, stops after validation.
pub(super) async fn change_topic_configs<F>(broker: &Broker, name: &str, validate_only: bool, change: F) -> Result<(), Refusal>
where
    F: FnOnce(&BTreeMap<String, String>, &[(String, String)]) -> Result<BTreeMap<String, String>, Refusal> + Send + 'static,
{
    let unknown = || (ResponseError::UnknownTopicOrPartition, format!("topic `{name}` does not exist"));
    if validate_only {
        let snapshot = broker.meta.snapshot();
        let topic = snapshot.topics.get(name).ok_or_else(unknown)?;
        let defaults = broker.meta.broker_defaults();
        return validate_configs(defaults, &change(&topic.configs, defaults)?);
    }
    let meta = broker.meta.clone();
    let owned_name = name.to_owned();
    let write = move || {
        let defaults = meta.broker_defaults().to_vec();
        meta.update(|m, _| {
            let topic = m.topics.get_mut(&owned_name).ok_or_else(unknown_topic(&owned_name))?;
            let configs = change(&topic.configs, &defaults)?;
            validate_configs(&defaults, &configs)?;
            topic.configs = configs;
            Ok(topic.clone())
        })
    };
    // The metadata write fsyncs: keep it off the shard's reactor.
    let topic = match glommio::executor().spawn_blocking(write).await {
        Ok(Ok(topic)) => topic,
        Ok(Err(refusal)) => return Err(refusal),
        Err(e) => {
            tracing::error!(target: "broker", error = %e, "writing metadata failed");
            return Err((ResponseError::KafkaStorageError, format!("writing metadata: {e}")));
        }
    };
    tracing::info!(target: "broker", topic = %topic.name, configs = ?topic.configs, "topic configs changed");
    reconfigure(broker, &topic).await
}

fn unknown_topic(name: &str) -> impl FnOnce() -> Refusal + '_ {
    move || (ResponseError::UnknownTopicOrPartition, format!("topic `{name}` does not exist"))
}

/// Has every owner of the topic's partitions apply the current config to its open logs.
async fn reconfigure(broker: &Broker, topic: &TopicMeta) -> Result<(), Refusal> {
    let mut by_owner: BTreeMap<ShardId, Vec<Op>> = BTreeMap::new();
    for (p, &owner) in topic.placement.iter().enumerate() {
        by_owner.entry(ShardId(owner)).or_default().push(Op::Reconfigure {
            tp: TopicPartition::new(topic.name.clone(), p as i32),
        });
    }
    let calls = by_owner.into_iter().map(|(owner, ops)| broker.router.call(owner, ops));
    let mut failure = None;
    for results in futures::future::join_all(calls).await {
        let errors: Vec<shard::Error> = match results {
            Ok(results) => results
                .into_iter()
                .filter_map(|r| match r {
                    OpResult::Reconfigured(Err(e)) => Some(e),
                    _ => None,
                })
                .collect(),
            Err(e) => vec![e],
        };
        for e in errors {
            // The metadata has the new configs (a restart applies them); the open log does not.
            tracing::error!(target: "broker", topic = %topic.name, error = %e, "reconfiguring a partition failed");
            failure.get_or_insert((crate::errors::response_error(&e), e.to_string()));
        }
    }
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn config_sets_are_validated_whole_and_errors_name_the_key() {
        assert!(validate_configs(&[], &set(&[("retention.ms", "1000"), ("cleanup.policy", "compact,delete")])).is_ok());
        let (code, message) = validate_configs(&[], &set(&[("retention.ms", "soon")])).unwrap_err();
        assert_eq!(code, ResponseError::InvalidConfig);
        assert!(message.contains("`retention.ms`") && message.contains("soon"), "{message}");
        let (code, message) = validate_configs(&[], &set(&[("no.such", "1")])).unwrap_err();
        assert_eq!(code, ResponseError::InvalidConfig);
        assert!(message.contains("no.such"), "{message}");
        let (_, message) = validate_configs(&[], &set(&[("segment.bytes", "100")])).unwrap_err();
        assert!(message.contains("segment.bytes"), "{message}");
    }

    #[test]
    fn alter_configs_refuses_nulls_and_repeats() {
        let ok = new_config_set([("a", Some("1")), ("b", Some("2"))].into_iter()).unwrap();
        assert_eq!(ok, set(&[("a", "1"), ("b", "2")]));
        assert_eq!(
            new_config_set([("a", None)].into_iter()).unwrap_err().0,
            ResponseError::InvalidRequest
        );
        assert_eq!(
            new_config_set([("a", Some("1")), ("a", Some("2"))].into_iter()).unwrap_err().0,
            ResponseError::InvalidRequest
        );
    }

    #[test]
    fn broker_resources_are_this_node_and_read_only() {
        assert!(check_broker_name("1", 1).is_ok());
        assert!(check_broker_name("", 1).is_ok());
        assert_eq!(check_broker_name("2", 1).unwrap_err().0, ResponseError::InvalidRequest);
        assert!(read_only_broker(std::iter::empty()).is_ok());
        let (code, message) = read_only_broker(["log.retention.ms"].into_iter()).unwrap_err();
        assert_eq!(code, ResponseError::InvalidRequest);
        assert!(message.contains("log.retention.ms"));
    }

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::AlterConfigs, |_| {
            ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(vec![
                response(RESOURCE_TOPIC, StrBytes::from_static_str("t"), None),
                response(
                    RESOURCE_BROKER,
                    StrBytes::from_static_str("1"),
                    Some((ResponseError::InvalidRequest, "read-only".into())),
                ),
            ]))
        });
    }
}
