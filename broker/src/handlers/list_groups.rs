//! ListGroups (key 16), versions 0-5: every group on every shard, filtered by state (v4) and
//! type (v5; all groups here are "classic").

use bytes::Bytes;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use shard::ShardId;

use super::{decode_body, Request};
use crate::server::Broker;

const GROUP_TYPE: &str = "classic";

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: ListGroupsRequest = decode_body(body, request.version)?;
    let calls = (0..broker.meta.shards())
        .map(|s| crate::internal::on_shard(&broker.router, ShardId(s), |services| async move { services.groups.list() }));
    let mut groups = Vec::new();
    let mut error = 0;
    for answer in futures::future::join_all(calls).await {
        match answer {
            Ok(list) => groups.extend(list),
            // A shard still loading its groups: say so, as Kafka does while a coordinator loads.
            Err(e) => error = e.code(),
        }
    }
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    groups.retain(|(_, _, state)| states.is_empty() || states.contains(&state.name().to_lowercase()));
    if !types.is_empty() && !types.iter().any(|t| t == GROUP_TYPE) {
        groups.clear();
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let listed = groups
        .into_iter()
        .map(|(id, protocol_type, state)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id)))
                .with_protocol_type(StrBytes::from_string(protocol_type));
            // The state exists from v4, the type from v5.
            let g = if request.version >= 4 {
                g.with_group_state(StrBytes::from_static_str(state.name()))
            } else {
                g
            };
            if request.version >= 5 {
                g.with_group_type(StrBytes::from_static_str(GROUP_TYPE))
            } else {
                g
            }
        })
        .collect();
    Ok(Some(ResponseKind::ListGroups(
        ListGroupsResponse::default().with_error_code(error).with_groups(listed),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::ListGroups, |v| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_protocol_type(StrBytes::from_static_str("consumer"));
            let g = if v >= 4 {
                g.with_group_state(StrBytes::from_static_str("Stable"))
            } else {
                g
            };
            let g = if v >= 5 {
                g.with_group_type(StrBytes::from_static_str(GROUP_TYPE))
            } else {
                g
            };
            ResponseKind::ListGroups(ListGroupsResponse::default().with_groups(vec![g]))
        });
    }
}
