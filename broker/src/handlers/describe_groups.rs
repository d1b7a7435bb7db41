//! DescribeGroups (key 15), versions 0-6: state, protocol and members (with their metadata
//! and assignments) of each group. An unknown group is "Dead" (GROUP_ID_NOT_FOUND from v6).

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use super::{decode_body, Request};
use crate::groups::GroupView;
use crate::server::Broker;

/// "Not asked for", in authorized_operations.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;
/// DESCRIBE (8), READ (3) and DELETE (6) on a group: everything, as there are no ACLs yet.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: DescribeGroupsRequest = decode_body(body, request.version)?;
    let version = request.version;
    let operations = if req.include_authorized_operations {
        GROUP_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    let asks = req.groups.into_iter().map(|id| async move {
        let name = id.0.to_string();
        let view = crate::groups::on_coordinator(broker, &name.clone(), move |c| async move { c.describe(&name) }).await;
        (id, view)
    });
    let groups = futures::future::join_all(asks)
        .await
        .into_iter()
        .map(|(id, view)| described(id, view, version, operations))
        .collect();
    Ok(Some(ResponseKind::DescribeGroups(
        DescribeGroupsResponse::default().with_groups(groups),
    )))
}

fn described(id: GroupId, view: Result<Option<GroupView>, ResponseError>, version: i16, operations: i32) -> DescribedGroup {
    // Authorized operations exist from v3.
    let g = DescribedGroup::default()
        .with_group_id(id)
        .with_authorized_operations(if version >= 3 { operations } else { OPERATIONS_NOT_REQUESTED });
    match view {
        Err(e) => g.with_error_code(e.code()),
        Ok(None) => {
            let g = g.with_group_state(StrBytes::from_static_str("Dead"));
            if version >= 6 {
                g.with_error_code(ResponseError::GroupIdNotFound.code())
            } else {
                g
            }
        }
        Ok(Some(view)) => g
            .with_group_state(StrBytes::from_static_str(view.state.name()))
            .with_protocol_type(StrBytes::from_string(view.protocol_type))
            .with_protocol_data(StrBytes::from_string(view.protocol))
            .with_members(
                view.members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(StrBytes::from_string(m.member_id))
                            // The instance id exists from v4.
                            .with_group_instance_id(if version >= 4 {
                                m.instance_id.map(StrBytes::from_string)
                            } else {
                                None
                            })
                            .with_client_id(StrBytes::from_string(m.client_id))
                            .with_client_host(StrBytes::from_string(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment)
                    })
                    .collect(),
            ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::group::{GroupState, MemberView};
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::DescribeGroups, |v| {
            let view = GroupView {
                state: GroupState::Stable,
                protocol_type: "consumer".into(),
                protocol: "range".into(),
                members: vec![MemberView {
                    member_id: "m".into(),
                    instance_id: Some("i".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    metadata: Bytes::from_static(b"x"),
                    assignment: Bytes::from_static(b"y"),
                }],
            };
            ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(vec![
                described(GroupId(StrBytes::from_static_str("g")), Ok(Some(view)), v, GROUP_OPERATIONS),
                described(GroupId(StrBytes::from_static_str("h")), Ok(None), v, GROUP_OPERATIONS),
            ]))
        });
    }
}
