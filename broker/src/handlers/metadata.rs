//! Metadata (key 3), versions 0-13: this broker is the only node and leads every partition.
//! Unknown topics are created when auto-creation is on and the request allows it.

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::Request;
use crate::metadata::TopicMeta;
use crate::server::Broker;

/// Kafka's "operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// With no ACLs every operation is allowed. Bits are Kafka's AclOperation codes: READ 3,
/// WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11.
const TOPIC_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

/// CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11,
/// IDEMPOTENT_WRITE 12.
const CLUSTER_OPERATIONS_ALL: i32 = (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req = decode_request(body, request.version)?;
    // v0-v3 have no flag: auto-creation applies.
    let allow_create = broker.config.auto_create_topics && (request.version < 4 || req.allow_auto_topic_creation);
    let node = BrokerId(broker.config.node_id);
    // Clients that ask (v8+) get the operations they may perform, not the "omitted" marker:
    // kafka-python fails on the marker when it asked for them.
    let topic_ops = if req.include_topic_authorized_operations {
        TOPIC_OPERATIONS_ALL
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let cluster_ops = if req.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS_ALL
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let mut topics = Vec::new();
    match req.topics {
        None => {
            for t in broker.meta.snapshot().topics.values() {
                topics.push(describe(t, node, request.version, topic_ops));
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
                    (Some(t), _) => topics.push(describe(&t, node, request.version, topic_ops)),
                    (None, Some(name)) => {
                        let topic = if allow_create {
                            super::create_topics::auto_create(broker, name.0.as_str()).await
                        } else {
                            Err(ResponseError::UnknownTopicOrPartition)
                        };
                        match topic {
                            Ok(t) => topics.push(describe(&t, node, request.version, topic_ops)),
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
        .with_cluster_authorized_operations(cluster_ops);
    Ok(Some(ResponseKind::Metadata(response)))
}

/// Decodes the request body, refusing trailing bytes except in one shape a real client sends.
///
/// librdkafka (2.12 and earlier; confluentinc/librdkafka#5049) writes the null topic array of
/// an all-topics request at v9+ as a 4-byte placeholder of zeros instead of a 1-byte varint.
/// The body then decodes as "all topics" (varint 0), with the flags read from the placeholder's
/// zeros and 3 bytes left over. Kafka ignores trailing bytes, so it serves these requests; so do
/// we, for that shape only: the answer (every topic) is the one the client meant, and
/// auto-creation does not apply to an all-topics request.
fn decode_request(body: &mut Bytes, version: i16) -> anyhow::Result<MetadataRequest> {
    let req = MetadataRequest::decode(body, version)?;
    if body.has_remaining() && !(version >= 9 && req.topics.is_none()) {
        anyhow::bail!("{} bytes left after the request body", body.remaining());
    }
    body.advance(body.remaining());
    Ok(req)
}

fn describe(t: &TopicMeta, node: BrokerId, version: i16, topic_ops: i32) -> MetadataResponseTopic {
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
        .with_is_internal(crate::internal::is_internal(&t.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(topic_ops)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::protocol::Encodable;

    use super::*;

    /// The body librdkafka 2.12.1 sends for `rd_kafka_metadata(all_topics=1)` at v13, as
    /// captured on the wire: a 4-byte topic count placeholder, then AllowAutoTopicCreation,
    /// IncludeTopicAuthorizedOperations and empty tagged fields.
    const LIBRDKAFKA_ALL_TOPICS_V13: [u8; 7] = [0, 0, 0, 0, 1, 0, 0];

    #[test]
    fn librdkafka_all_topics_request_with_a_4_byte_null_array_is_served() {
        let mut body = Bytes::from_static(&LIBRDKAFKA_ALL_TOPICS_V13);
        let req = decode_request(&mut body, 13).unwrap();
        assert_eq!(req.topics, None, "all topics");
        assert!(!body.has_remaining());
    }

    #[test]
    fn trailing_bytes_after_other_requests_are_still_refused() {
        // One named topic ("t"), then the same 3 stray bytes.
        let mut named = BytesMut::new();
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("t"))))
            ]))
            .encode(&mut named, 13)
            .unwrap();
        named.extend_from_slice(&[1, 0, 0]);
        assert!(decode_request(&mut named.freeze(), 13).is_err());
        // Before v9 the array count is an INT32, so there is no such quirk to forgive.
        let mut old = BytesMut::new();
        MetadataRequest::default().with_topics(None).encode(&mut old, 8).unwrap();
        old.extend_from_slice(&[0]);
        assert!(decode_request(&mut old.freeze(), 8).is_err());
    }
}
