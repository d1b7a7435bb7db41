//! DescribeConfigs (key 32), versions 1-4: a topic's effective configs with where each comes
//! from, and this broker's settings as read-only entries. Synonyms (the topic value, the
//! broker default, Kafka's default) when asked; types (v3+) always; documentation (v3+) when asked.

use std::collections::BTreeSet;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use super::alter_configs::{check_broker_name, unsupported_resource, RESOURCE_BROKER, RESOURCE_TOPIC};
use super::create_topics::{config_source, Refusal};
use super::{decode_body, Request};
use crate::config::Config;
use crate::server::Broker;
use crate::topic_config::{self, ConfigType, Source};

/// Kafka's config source for a broker setting from its static config file.
const SOURCE_STATIC_BROKER: i8 = 4;

/// One config as described, before it becomes a wire entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    name: String,
    value: String,
    source: i8,
    read_only: bool,
    config_type: ConfigType,
    doc: &'static str,
    /// (name, value, source), most specific first.
    synonyms: Vec<(String, String, i8)>,
}

/// What the request asks to see in each entry.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    synonyms: bool,
    documentation: bool,
    version: i16,
}

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: DescribeConfigsRequest = decode_body(body, request.version)?;
    let wanted = Wanted {
        synonyms: req.include_synonyms,
        documentation: request.version >= 3 && req.include_documentation,
        version: request.version,
    };
    let results = req
        .resources
        .iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match describe(broker, r) {
                Ok(entries) => result.with_configs(entries.iter().map(|e| entry(e, wanted)).collect()),
                Err((error, message)) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    Ok(Some(ResponseKind::DescribeConfigs(
        DescribeConfigsResponse::default().with_results(results),
    )))
}

fn describe(broker: &Broker, r: &DescribeConfigsResource) -> Result<Vec<Entry>, Refusal> {
    let name = r.resource_name.as_str();
    let entries = match r.resource_type {
        RESOURCE_TOPIC => {
            let snapshot = broker.meta.snapshot();
            let topic = snapshot
                .topics
                .get(name)
                .ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("topic `{name}` does not exist")))?;
            topic_entries(&topic.configs, broker.meta.broker_defaults())
        }
        RESOURCE_BROKER => {
            check_broker_name(name, broker.config.node_id)?;
            // The empty name means the cluster-wide dynamic defaults: there are none.
            if name.is_empty() {
                Vec::new()
            } else {
                broker_entries(&broker.config)
            }
        }
        other => return Err(unsupported_resource(other)),
    };
    Ok(match &r.configuration_keys {
        None => entries,
        Some(keys) => {
            let keys: BTreeSet<&str> = keys.iter().map(|k| k.as_str()).collect();
            entries.into_iter().filter(|e| keys.contains(e.name.as_str())).collect()
        }
    })
}

/// A topic's effective configs: its own values, else the broker's defaults, else Kafka's.
pub(crate) fn topic_entries(topic: &std::collections::BTreeMap<String, String>, broker_defaults: &[(String, String)]) -> Vec<Entry> {
    let effective = topic_config::Effective::resolve(broker_defaults, topic);
    effective
        .entries()
        .map(|(name, value, source)| {
            let def = topic_config::def(name).expect("effective configs are defined ones");
            let broker_name = topic_config::broker_synonym(name);
            let mut synonyms = Vec::new();
            if let Some(v) = topic.get(name) {
                synonyms.push((name.to_owned(), v.clone(), config_source(Source::Topic)));
            }
            if let Some((_, v)) = broker_defaults.iter().rev().find(|(k, _)| k == name) {
                synonyms.push((broker_name.to_owned(), v.clone(), config_source(Source::Broker)));
            }
            synonyms.push((broker_name.to_owned(), def.default.to_owned(), config_source(Source::Default)));
            Entry {
                name: name.to_owned(),
                value: value.to_owned(),
                source: config_source(source),
                read_only: false,
                config_type: topic_config::config_type(name),
                doc: def.doc,
                synonyms,
            }
        })
        .collect()
}

/// This broker's settings, read-only: Kafka's names where Kafka has the same setting, the
/// config file's keys otherwise, and the topic defaults under their broker-wide names.
pub(crate) fn broker_entries(config: &Config) -> Vec<Entry> {
    let setting = |name: &str, value: String, config_type: ConfigType, doc: &'static str| Entry {
        name: name.to_owned(),
        value: value.clone(),
        source: SOURCE_STATIC_BROKER,
        read_only: true,
        config_type,
        doc,
        synonyms: vec![(name.to_owned(), value, SOURCE_STATIC_BROKER)],
    };
    let mut entries = vec![
        setting(
            "node.id",
            config.node_id.to_string(),
            ConfigType::Int,
            "this broker's id (config file: node_id)",
        ),
        setting(
            "broker.id",
            config.node_id.to_string(),
            ConfigType::Int,
            "this broker's id (config file: node_id)",
        ),
        setting(
            "listeners",
            format!("PLAINTEXT://{}", config.listen),
            ConfigType::List,
            "the address the Kafka listener binds (listen)",
        ),
        setting(
            "advertised.listeners",
            format!("PLAINTEXT://{}:{}", config.advertised_host, config.advertised_port),
            ConfigType::List,
            "the address clients are told to connect to (advertised_listener)",
        ),
        setting(
            "log.dirs",
            config.data_dir.display().to_string(),
            ConfigType::String,
            "directory of partitions and metadata (data_dir)",
        ),
        setting(
            "num.partitions",
            config.default_partitions.to_string(),
            ConfigType::Int,
            "partitions of an auto-created topic (default_partitions)",
        ),
        setting(
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "create topics on first use by Metadata (auto_create_topics)",
        ),
        setting(
            "socket.request.max.bytes",
            config.request_bytes_max.to_string(),
            ConfigType::Int,
            "largest request frame accepted (request_bytes_max)",
        ),
        setting(
            "max.connections",
            config.connections_max.to_string(),
            ConfigType::Int,
            "most client connections (connections_max)",
        ),
        setting(
            "log.retention.check.interval.ms",
            config.retention_check_interval_ms.to_string(),
            ConfigType::Long,
            "how often retention runs (retention_check_interval_ms)",
        ),
        setting("shards", config.shards.to_string(), ConfigType::Int, "shards, one per core"),
        setting(
            "pin_shards",
            config.pin_shards.to_string(),
            ConfigType::Boolean,
            "whether shard i is pinned to CPU i",
        ),
        setting(
            "requests_in_flight_max",
            config.requests_in_flight_max.to_string(),
            ConfigType::Int,
            "requests one connection may have in flight before the broker stops reading it",
        ),
    ];
    for d in topic_config::DEFS {
        let name = topic_config::broker_synonym(d.name);
        let set = config.topic_defaults.iter().rev().find(|(k, _)| k == d.name);
        let mut synonyms = Vec::new();
        if let Some((_, v)) = set {
            synonyms.push((name.to_owned(), v.clone(), SOURCE_STATIC_BROKER));
        }
        synonyms.push((name.to_owned(), d.default.to_owned(), config_source(Source::Default)));
        entries.push(Entry {
            name: name.to_owned(),
            value: set.map_or(d.default, |(_, v)| v.as_str()).to_owned(),
            source: if set.is_some() {
                SOURCE_STATIC_BROKER
            } else {
                config_source(Source::Default)
            },
            read_only: true,
            config_type: topic_config::config_type(d.name),
            doc: d.doc,
            synonyms,
        });
    }
    entries
}

/// The wire entry; config_type and documentation exist from v3.
fn entry(e: &Entry, wanted: Wanted) -> DescribeConfigsResourceResult {
    let synonyms = if wanted.synonyms {
        e.synonyms
            .iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_value(Some(StrBytes::from_string(value.clone())))
                    .with_source(*source)
            })
            .collect()
    } else {
        Vec::new()
    };
    let r = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(e.name.clone()))
        .with_value(Some(StrBytes::from_string(e.value.clone())))
        .with_read_only(e.read_only)
        .with_config_source(e.source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms);
    if wanted.version >= 3 {
        r.with_config_type(e.config_type as i8)
            .with_documentation(wanted.documentation.then(|| StrBytes::from_static_str(e.doc)))
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn topic_values_come_first_with_their_sources_and_synonyms() {
        let mut topic = BTreeMap::new();
        topic.insert("retention.ms".to_owned(), "1000".to_owned());
        let defaults = vec![
            ("retention.ms".to_owned(), "5000".to_owned()),
            ("segment.bytes".to_owned(), "65536".to_owned()),
        ];
        let entries = topic_entries(&topic, &defaults);
        assert_eq!(entries.len(), topic_config::DEFS.len());
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap().clone();
        let r = get("retention.ms");
        assert_eq!((r.value.as_str(), r.source, r.read_only), ("1000", 1, false));
        assert_eq!(
            r.synonyms,
            vec![
                ("retention.ms".to_owned(), "1000".to_owned(), 1),
                ("log.retention.ms".to_owned(), "5000".to_owned(), 4),
                ("log.retention.ms".to_owned(), "604800000".to_owned(), 5),
            ]
        );
        let s = get("segment.bytes");
        assert_eq!((s.value.as_str(), s.source), ("65536", 4));
        let c = get("cleanup.policy");
        assert_eq!((c.value.as_str(), c.source, c.config_type), ("delete", 5, ConfigType::List));
        assert_eq!(c.synonyms.len(), 1);
    }

    #[test]
    fn broker_settings_are_read_only_and_show_topic_defaults() {
        let mut config = crate::config::Config::merge(Default::default(), Default::default()).unwrap();
        config.topic_defaults = vec![("retention.ms".to_owned(), "5000".to_owned())];
        let entries = broker_entries(&config);
        assert!(entries.iter().all(|e| e.read_only));
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(get("log.retention.ms").value, "5000");
        assert_eq!(get("log.retention.ms").source, 4);
        assert_eq!(get("log.segment.bytes").source, 5);
        assert_eq!(get("node.id").value, config.node_id.to_string());
        assert_eq!(get("advertised.listeners").value, "PLAINTEXT://127.0.0.1:9092");
        let names: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), entries.len(), "each setting once");
    }

    #[test]
    fn every_version_encodes_with_everything_asked_for() {
        let config = crate::config::Config::merge(Default::default(), Default::default()).unwrap();
        let mut topic = BTreeMap::new();
        topic.insert("retention.ms".to_owned(), "1000".to_owned());
        for (synonyms, documentation) in [(false, false), (true, true)] {
            super::super::assert_encodes(ApiKey::DescribeConfigs, |v| {
                let wanted = Wanted {
                    synonyms,
                    documentation: documentation && v >= 3,
                    version: v,
                };
                ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(vec![
                    DescribeConfigsResult::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(StrBytes::from_static_str("t"))
                        .with_configs(topic_entries(&topic, &[]).iter().map(|e| entry(e, wanted)).collect()),
                    DescribeConfigsResult::default()
                        .with_resource_type(RESOURCE_BROKER)
                        .with_resource_name(StrBytes::from_static_str("1"))
                        .with_configs(broker_entries(&config).iter().map(|e| entry(e, wanted)).collect()),
                    DescribeConfigsResult::default()
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(StrBytes::from_static_str("no")))
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(StrBytes::from_static_str("u")),
                ]))
            });
        }
    }
}
