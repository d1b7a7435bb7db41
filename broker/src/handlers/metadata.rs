//! Metadata (key 3), versions 0-13: this broker is the only node and leads every partition.
//! Unknown topics are created when auto-creation is on and the request allows it.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{decode_body, Request};
use crate::metadata::TopicMeta;
use crate::server::Broker;

/// Kafka's "operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: MetadataRequest = decode_body(body, request.version)?;
    // v0-v3 have no flag: auto-creation applies.
    let allow_create = broker.config.auto_create_topics && (request.version < 4 || req.allow_auto_topic_creation);
    let node = BrokerId(broker.config.node_id);
    let mut topics = Vec::new();
    match req.topics {
        None => {
            for t in broker.meta.snapshot().topics.values() {
                topics.push(describe(t, node, request.version));
            }
        }
        Some(wanted) => {
            for w in wanted {
                let snapshot = broker.meta.snapshot();
                let found = match &w.name {
                    Some(name) => snapshot.topics.get(name.0.as_str()).cloned(),
                    None => snapshot.topic_by_id(w.topic_id).cloned(),
                };
                match (found, w.name) {
                    (Some(t), _) => topics.push(describe(&t, node, request.version)),
                    (None, Some(name)) => {
                        let topic = if allow_create {
                            super::create_topics::auto_create(broker, name.0.as_str()).await
                        } else {
                            Err(ResponseError::UnknownTopicOrPartition)
                        };
                        match topic {
                            Ok(t) => topics.push(describe(&t, node, request.version)),
                            Err(e) => topics.push(
                                MetadataResponseTopic::default()
                                    .with_error_code(e.code())
                                    .with_name(Some(name))
                                    .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                            ),
                        }
                    }
                    (None, None) => topics.push(
                        MetadataResponseTopic::default()
                            .with_error_code(ResponseError::UnknownTopicId.code())
                            .with_topic_id(w.topic_id)
                            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                    ),
                }
            }
        }
    }
    let host = StrBytes::from_string(broker.config.advertised_host.clone());
    let response = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(i32::from(broker.config.advertised_port))])
        .with_cluster_id(Some(StrBytes::from_string(broker.meta.snapshot().cluster_id.clone())))
        .with_controller_id(node)
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    Ok(Some(ResponseKind::Metadata(response)))
}

fn describe(t: &TopicMeta, node: BrokerId, version: i16) -> MetadataResponseTopic {
    // leader_epoch exists from v7; topic ids from v10.
    let epoch = if version >= 7 { 0 } else { -1 };
    let partitions = (0..t.partitions())
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(node)
                .with_leader_epoch(epoch)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(if version >= 10 { t.uuid() } else { Default::default() })
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
