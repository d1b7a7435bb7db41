//! SyncGroup (key 14), versions 0-5: the leader hands out assignments; every member waits for
//! its own.

use bytes::Bytes;
use kafka_protocol::messages::{ResponseKind, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{decode_body, now_ms, Request};
use crate::groups::group::{SyncAnswer, SyncRequest};
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: SyncGroupRequest = decode_body(body, request.version)?;
    let group_id = req.group_id.0.to_string();
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        generation: req.generation_id,
        protocol_type: req.protocol_type.as_ref().map(|p| p.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|p| p.to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let id = group_id.clone();
    let answer = crate::groups::on_coordinator(broker, &group_id, move |c| async move { c.sync(&id, sync, now_ms()).await })
        .await
        .unwrap_or_else(|e| SyncAnswer {
            error: e.code(),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        });
    Ok(Some(ResponseKind::SyncGroup(response(answer, request.version))))
}

fn response(a: SyncAnswer, version: i16) -> SyncGroupResponse {
    let r = SyncGroupResponse::default().with_error_code(a.error).with_assignment(a.assignment);
    // The protocol type and name exist from v5.
    if version >= 5 {
        r.with_protocol_type(a.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(a.protocol_name.map(StrBytes::from_string))
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::SyncGroup, |v| {
            ResponseKind::SyncGroup(response(
                SyncAnswer {
                    error: 0,
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some("range".into()),
                    assignment: Bytes::from_static(b"a"),
                },
                v,
            ))
        });
    }
}
