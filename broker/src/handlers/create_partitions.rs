//! CreatePartitions (key 37), versions 0-3: grows a topic to `count` partitions (never shrinks
//! it), placing the new ones on the least loaded shards. Their logs open on first use.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use super::create_topics::{Refusal, PARTITIONS_PER_TOPIC_MAX};
use super::{decode_body, Request};
use crate::metadata::ClusterMeta;
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: CreatePartitionsRequest = decode_body(body, request.version)?;
    let mut results = Vec::with_capacity(req.topics.len());
    let mut seen = std::collections::HashSet::new();
    for t in req.topics {
        let outcome = if !seen.insert(t.name.0.to_string()) {
            Err((ResponseError::InvalidRequest, "topic listed twice in one request".to_owned()))
        } else {
            match check_assignments(&t, broker.config.node_id) {
                Ok(()) => grow(broker, &t, req.validate_only).await,
                Err(r) => Err(r),
            }
        };
        results.push(result(t.name.0.clone(), outcome.err()));
    }
    Ok(Some(ResponseKind::CreatePartitions(
        CreatePartitionsResponse::default().with_results(results),
    )))
}

fn result(name: StrBytes, error: Option<Refusal>) -> CreatePartitionsTopicResult {
    let r = CreatePartitionsTopicResult::default().with_name(name.into());
    match error {
        None => r,
        Some((error, message)) => r
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message))),
    }
}

/// Explicit assignments may name only this node, one replica each.
fn check_assignments(t: &CreatePartitionsTopic, node_id: i32) -> Result<(), Refusal> {
    let Some(assignments) = &t.assignments else { return Ok(()) };
    if assignments.iter().any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node_id) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!("this cluster has one node, {node_id}; each new partition has exactly it as replica"),
        ));
    }
    Ok(())
}

/// The new placement of a topic grown to `count` partitions, or why it cannot be.
pub(crate) fn grown_placement(
    m: &ClusterMeta,
    shards: usize,
    name: &str,
    count: i32,
    assignments: Option<usize>,
) -> Result<Vec<usize>, Refusal> {
    let Some(topic) = m.topics.get(name) else {
        return Err((ResponseError::UnknownTopicOrPartition, format!("topic `{name}` does not exist")));
    };
    let current = topic.partitions();
    if count < current {
        return Err((
            ResponseError::InvalidPartitions,
            format!("topic `{name}` has {current} partitions; partitions cannot be removed (asked for {count})"),
        ));
    }
    if count == current {
        return Err((
            ResponseError::InvalidPartitions,
            format!("topic `{name}` already has {count} partitions"),
        ));
    }
    if count > PARTITIONS_PER_TOPIC_MAX {
        return Err((
            ResponseError::InvalidPartitions,
            format!("{count} partitions is more than {PARTITIONS_PER_TOPIC_MAX}"),
        ));
    }
    let added = (count - current) as usize;
    if assignments.is_some_and(|n| n != added) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!("{} assignments for {added} new partitions", assignments.unwrap_or(0)),
        ));
    }
    let mut placement = topic.placement.clone();
    placement.extend(shard::placement::assign(&m.shard_load(shards), added).into_iter().map(|s| s.0));
    Ok(placement)
}

async fn grow(broker: &Broker, t: &CreatePartitionsTopic, validate_only: bool) -> Result<(), Refusal> {
    let (name, count, assignments) = (t.name.0.to_string(), t.count, t.assignments.as_ref().map(Vec::len));
    if validate_only {
        return grown_placement(&broker.meta.snapshot(), broker.meta.shards(), &name, count, assignments).map(|_| ());
    }
    let meta = broker.meta.clone();
    let change = move || {
        meta.update(|m, shards| {
            let placement = grown_placement(m, shards, &name, count, assignments)?;
            let topic = m.topics.get_mut(&name).expect("checked by grown_placement");
            let before = topic.partitions();
            topic.placement = placement;
            Ok((before, topic.partitions()))
        })
    };
    // The metadata write fsyncs: keep it off the shard's reactor.
    match glommio::executor().spawn_blocking(change).await {
        Ok(Ok((before, after))) => {
            tracing::info!(target: "broker", topic = %t.name.0, before, after, "partitions added");
            Ok(())
        }
        Ok(Err(refusal)) => Err(refusal),
        Err(e) => {
            tracing::error!(target: "broker", error = %e, "writing metadata failed");
            Err((ResponseError::KafkaStorageError, format!("writing metadata: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metadata::add_topic;
    use kafka_protocol::messages::ApiKey;

    fn cluster() -> ClusterMeta {
        let mut m = ClusterMeta {
            format_version: 1,
            cluster_id: "c".into(),
            topics: BTreeMap::new(),
            producer_ids_reserved: 0,
        };
        add_topic(&mut m, 2, "a", 3, BTreeMap::new());
        add_topic(&mut m, 2, "b", 2, BTreeMap::new());
        m
    }

    #[test]
    fn grows_onto_the_least_loaded_shards_and_never_shrinks() {
        let m = cluster();
        // Loads: a = [0, 1, 0], b = [1, 0] -> shard 0 has 3, shard 1 has 2.
        assert_eq!(m.shard_load(2), vec![3, 2]);
        let p = grown_placement(&m, 2, "b", 5, None).unwrap();
        assert_eq!(&p[..2], &m.topics["b"].placement[..], "existing partitions stay put");
        assert_eq!(&p[2..], &[1, 0, 1]);
        let shrink = grown_placement(&m, 2, "a", 2, None).unwrap_err();
        assert_eq!(shrink.0, ResponseError::InvalidPartitions);
        assert!(shrink.1.contains("cannot be removed"), "{}", shrink.1);
        assert_eq!(
            grown_placement(&m, 2, "a", 3, None).unwrap_err().0,
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            grown_placement(&m, 2, "zz", 3, None).unwrap_err().0,
            ResponseError::UnknownTopicOrPartition
        );
        assert_eq!(
            grown_placement(&m, 2, "a", 5, Some(1)).unwrap_err().0,
            ResponseError::InvalidReplicaAssignment
        );
        assert!(grown_placement(&m, 2, "a", 5, Some(2)).is_ok());
        assert_eq!(
            grown_placement(&m, 2, "a", PARTITIONS_PER_TOPIC_MAX + 1, None).unwrap_err().0,
            ResponseError::InvalidPartitions
        );
    }

    #[test]
    fn assignments_must_name_only_this_node() {
        use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
        use kafka_protocol::messages::BrokerId;
        let with = |ids: Vec<i32>| {
            CreatePartitionsTopic::default().with_assignments(Some(vec![
                CreatePartitionsAssignment::default().with_broker_ids(ids.into_iter().map(BrokerId).collect())
            ]))
        };
        assert!(check_assignments(&with(vec![1]), 1).is_ok());
        assert!(check_assignments(&CreatePartitionsTopic::default(), 1).is_ok());
        for bad in [vec![2], vec![1, 1], vec![]] {
            assert_eq!(
                check_assignments(&with(bad), 1).unwrap_err().0,
                ResponseError::InvalidReplicaAssignment
            );
        }
    }

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::CreatePartitions, |_| {
            ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(vec![
                result(StrBytes::from_static_str("a"), None),
                result(
                    StrBytes::from_static_str("b"),
                    Some((ResponseError::InvalidPartitions, "no".into())),
                ),
            ]))
        });
    }
}
