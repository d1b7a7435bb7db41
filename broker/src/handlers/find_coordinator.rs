//! FindCoordinator (key 10), versions 0-6: where a group's coordinator is. On one node it is
//! always this broker, for groups (key type 0) and transactional ids (key type 1) alike.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use super::{decode_body, Request};
use crate::server::Broker;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: FindCoordinatorRequest = decode_body(body, request.version)?;
    let batched = request.version >= 4;
    let keys = if batched {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    let answers: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let error = match req.key_type {
                KEY_TYPE_GROUP => crate::groups::coordinator_shard(broker, &key).err(),
                KEY_TYPE_TRANSACTION => crate::txn::coordinator_shard(broker, &key).err(),
                _ => Some(ResponseError::InvalidRequest),
            };
            let c = Coordinator::default().with_key(key);
            match error {
                None => c
                    .with_node_id(BrokerId(broker.config.node_id))
                    .with_host(StrBytes::from_string(broker.config.advertised_host.clone()))
                    .with_port(i32::from(broker.config.advertised_port)),
                Some(e) => c.with_node_id(BrokerId(-1)).with_port(-1).with_error_code(e.code()),
            }
        })
        .collect();
    let response = if batched {
        FindCoordinatorResponse::default().with_coordinators(answers)
    } else {
        let c = answers.into_iter().next().unwrap_or_default();
        let r = FindCoordinatorResponse::default()
            .with_error_code(c.error_code)
            .with_node_id(c.node_id)
            .with_host(c.host)
            .with_port(c.port);
        // The error message exists from v1.
        if request.version >= 1 && c.error_code != 0 {
            r.with_error_message(Some(StrBytes::from_static_str("no coordinator available")))
        } else {
            r
        }
    };
    Ok(Some(ResponseKind::FindCoordinator(response)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::FindCoordinator, |v| {
            let r = FindCoordinatorResponse::default();
            ResponseKind::FindCoordinator(if v >= 4 {
                r.with_coordinators(vec![Coordinator::default()
                    .with_key(StrBytes::from_static_str("g"))
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("h"))
                    .with_port(9092)])
            } else {
                r.with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("h"))
                    .with_port(9092)
            })
        });
    }
}
