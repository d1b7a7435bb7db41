//! JoinGroup (key 11), versions 0-9: a member joins or rejoins its group; the answer waits
//! until the rebalance completes (see `groups::group`).

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use super::{decode_body, now_ms, Request};
use crate::groups::group::{JoinAnswer, JoinRequest};
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: JoinGroupRequest = decode_body(body, request.version)?;
    let group_id = req.group_id.0.to_string();
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: request.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: String::new(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout; Kafka uses the session timeout.
        rebalance_timeout_ms: if request.version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        require_known_member_id: request.version >= 4,
    };
    let member_id = join.member_id.clone();
    let id = group_id.clone();
    let answer = crate::groups::on_coordinator(broker, &group_id, move |c| async move { c.join(&id, join, now_ms()).await })
        .await
        .unwrap_or_else(|e| JoinAnswer {
            error: e.code(),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id,
            members: Vec::new(),
        });
    Ok(Some(ResponseKind::JoinGroup(response(answer, request.version))))
}

fn response(a: JoinAnswer, version: i16) -> JoinGroupResponse {
    let members = a
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id))
                // The instance id exists from v5.
                .with_group_instance_id(if version >= 5 {
                    m.instance_id.map(StrBytes::from_string)
                } else {
                    None
                })
                .with_metadata(m.metadata)
        })
        .collect();
    // The protocol name is nullable (and the protocol type present) from v7.
    let (protocol_type, protocol_name) = if version >= 7 {
        (
            a.protocol_type.map(StrBytes::from_string),
            a.protocol_name.map(StrBytes::from_string),
        )
    } else {
        (None, Some(StrBytes::from_string(a.protocol_name.unwrap_or_default())))
    };
    JoinGroupResponse::default()
        .with_error_code(a.error)
        .with_generation_id(a.generation)
        .with_protocol_type(protocol_type)
        .with_protocol_name(protocol_name)
        .with_leader(StrBytes::from_string(a.leader))
        .with_member_id(StrBytes::from_string(a.member_id))
        .with_members(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::group::JoinedMember;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::JoinGroup, |v| {
            ResponseKind::JoinGroup(response(
                JoinAnswer {
                    error: 0,
                    generation: 3,
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some("range".into()),
                    leader: "m1".into(),
                    member_id: "m1".into(),
                    members: vec![JoinedMember {
                        member_id: "m1".into(),
                        instance_id: Some("i1".into()),
                        metadata: Bytes::from_static(b"meta"),
                    }],
                },
                v,
            ))
        });
    }
}
