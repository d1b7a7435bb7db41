//! IncrementalAlterConfigs (key 44), versions 0-1: SET, DELETE (back to the default), APPEND
//! and SUBTRACT (list configs only, such as cleanup.policy) on a topic's configs; the rest of
//! the set stays. Shares validation and reconfiguration with AlterConfigs.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use super::alter_configs::{
    change_topic_configs, check_broker_name, read_only_broker, unsupported_resource, RESOURCE_BROKER, RESOURCE_TOPIC,
};
use super::create_topics::Refusal;
use super::{decode_body, Request};
use crate::server::Broker;
use crate::topic_config::{self, Effective};

/// One change to one config.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: IncrementalAlterConfigsRequest = decode_body(body, request.version)?;
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
    Ok(Some(ResponseKind::IncrementalAlterConfigs(
        IncrementalAlterConfigsResponse::default().with_responses(responses),
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
            let changes = parse_changes(
                r.configs
                    .iter()
                    .map(|c| (c.name.as_str(), c.config_operation, c.value.as_ref().map(|v| v.as_str()))),
            )?;
            change_topic_configs(broker, name, validate_only, move |current, defaults| {
                Ok(apply(current, defaults, &changes))
            })
            .await
        }
        RESOURCE_BROKER => {
            check_broker_name(name, broker.config.node_id)?;
            read_only_broker(r.configs.iter().map(|c| c.name.as_str()))
        }
        other => Err(unsupported_resource(other)),
    }
}

/// Reads the request's operations: each key once, a known operation, a value where it needs
/// one, and APPEND/SUBTRACT only on list configs.
fn parse_changes<'a>(entries: impl Iterator<Item = (&'a str, i8, Option<&'a str>)>) -> Result<Vec<(String, Change)>, Refusal> {
    let mut changes = Vec::new();
    let mut keys = BTreeSet::new();
    for (key, op, value) in entries {
        if !keys.insert(key) {
            return Err((ResponseError::InvalidRequest, format!("config `{key}` given twice")));
        }
        let needs_value = |v: Option<&str>| {
            v.map(str::to_owned)
                .ok_or_else(|| (ResponseError::InvalidRequest, format!("null value for config `{key}`")))
        };
        let change = match op {
            0 => Change::Set(needs_value(value)?),
            1 => Change::Delete,
            2 | 3 => {
                if !topic_config::is_list(key) {
                    let what = if op == 2 { "append" } else { "subtract" };
                    return Err((
                        ResponseError::InvalidConfig,
                        format!("config `{key}` is not a list; {what} is allowed only for list configs such as cleanup.policy"),
                    ));
                }
                let v = needs_value(value)?;
                if op == 2 {
                    Change::Append(v)
                } else {
                    Change::Subtract(v)
                }
            }
            other => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("unknown config operation {other} for `{key}`"),
                ))
            }
        };
        if change == Change::Delete && topic_config::def(key).is_none() {
            return Err((ResponseError::InvalidConfig, format!("unknown topic config `{key}`")));
        }
        changes.push((key.to_owned(), change));
    }
    Ok(changes)
}

/// The topic's config set after the changes. APPEND and SUBTRACT start from the effective value
/// (the topic's own, else the broker's default, else Kafka's), as Kafka does.
fn apply(
    current: &BTreeMap<String, String>,
    broker_defaults: &[(String, String)],
    changes: &[(String, Change)],
) -> BTreeMap<String, String> {
    let effective = Effective::resolve(broker_defaults, current);
    let mut next = current.clone();
    for (key, change) in changes {
        let items = |v: &str| -> Vec<String> { v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect() };
        let base = || match next.get(key) {
            Some(v) => items(v),
            None if topic_config::def(key).is_some() => items(effective.get(key)),
            None => Vec::new(),
        };
        match change {
            Change::Set(v) => {
                next.insert(key.clone(), v.clone());
            }
            Change::Delete => {
                next.remove(key);
            }
            Change::Append(v) => {
                let mut list = base();
                for item in items(v) {
                    if !list.contains(&item) {
                        list.push(item);
                    }
                }
                next.insert(key.clone(), list.join(","));
            }
            Change::Subtract(v) => {
                let gone = items(v);
                let list: Vec<String> = base().into_iter().filter(|i| !gone.contains(i)).collect();
                next.insert(key.clone(), list.join(","));
            }
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn set_delete_append_subtract() {
        let current = set(&[("retention.ms", "1000"), ("segment.bytes", "65536")]);
        let changes = parse_changes(
            [
                ("retention.ms", 1, None),
                ("retention.bytes", 0, Some("5000")),
                ("cleanup.policy", 2, Some("compact")),
            ]
            .into_iter(),
        )
        .unwrap();
        let next = apply(&current, &[], &changes);
        assert_eq!(
            next,
            set(&[
                ("segment.bytes", "65536"),
                ("retention.bytes", "5000"),
                ("cleanup.policy", "delete,compact")
            ])
        );
        // Appending what is there changes nothing; subtracting leaves the rest.
        let again = apply(
            &next,
            &[],
            &parse_changes([("cleanup.policy", 2, Some("delete"))].into_iter()).unwrap(),
        );
        assert_eq!(again["cleanup.policy"], "delete,compact");
        let less = apply(
            &next,
            &[],
            &parse_changes([("cleanup.policy", 3, Some("delete"))].into_iter()).unwrap(),
        );
        assert_eq!(less["cleanup.policy"], "compact");
        // A broker default is the starting point when the topic has no value of its own.
        let defaults = vec![("cleanup.policy".to_owned(), "compact".to_owned())];
        let from_broker = apply(
            &BTreeMap::new(),
            &defaults,
            &parse_changes([("cleanup.policy", 2, Some("delete"))].into_iter()).unwrap(),
        );
        assert_eq!(from_broker["cleanup.policy"], "compact,delete");
        // Subtracting everything leaves an empty list, which validation then refuses.
        let empty = apply(
            &BTreeMap::new(),
            &[],
            &parse_changes([("cleanup.policy", 3, Some("delete"))].into_iter()).unwrap(),
        );
        assert_eq!(empty["cleanup.policy"], "");
        assert!(super::super::alter_configs::validate_configs(&[], &empty).is_err());
    }

    #[test]
    fn bad_operations_are_refused() {
        let refused = |entries: Vec<(&'static str, i8, Option<&'static str>)>| parse_changes(entries.into_iter()).unwrap_err();
        let (code, message) = refused(vec![("retention.ms", 2, Some("5"))]);
        assert_eq!(code, ResponseError::InvalidConfig);
        assert!(message.contains("retention.ms"), "{message}");
        assert_eq!(refused(vec![("retention.ms", 3, Some("5"))]).0, ResponseError::InvalidConfig);
        assert_eq!(refused(vec![("retention.ms", 0, None)]).0, ResponseError::InvalidRequest);
        assert_eq!(refused(vec![("retention.ms", 4, Some("1"))]).0, ResponseError::InvalidRequest);
        assert_eq!(
            refused(vec![("retention.ms", 0, Some("1")), ("retention.ms", 1, None)]).0,
            ResponseError::InvalidRequest
        );
        assert_eq!(refused(vec![("no.such", 1, None)]).0, ResponseError::InvalidConfig);
    }

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::IncrementalAlterConfigs, |_| {
            ResponseKind::IncrementalAlterConfigs(IncrementalAlterConfigsResponse::default().with_responses(vec![
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
