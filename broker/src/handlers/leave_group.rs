//! LeaveGroup (key 13), versions 0-5: members leave (one by member id before v3, a batch of
//! member or instance ids from v3), and the rest rebalance.

use bytes::Bytes;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse, ResponseKind};

use super::{decode_body, now_ms, Request};
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: LeaveGroupRequest = decode_body(body, request.version)?;
    let group_id = req.group_id.0.to_string();
    let batched = request.version >= 3;
    let members: Vec<(String, Option<String>)> = if batched {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let (id, asked) = (group_id.clone(), members.clone());
    let result = crate::groups::on_coordinator(broker, &group_id, move |c| async move { c.leave(&id, &asked, now_ms()) })
        .await
        .and_then(|r| r);
    let response = match result {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(codes) if batched => LeaveGroupResponse::default().with_members(
            req.members
                .into_iter()
                .zip(codes)
                .map(|(m, code)| {
                    MemberResponse::default()
                        .with_member_id(m.member_id)
                        .with_group_instance_id(m.group_instance_id)
                        .with_error_code(code)
                })
                .collect(),
        ),
        Ok(codes) => LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0)),
    };
    Ok(Some(ResponseKind::LeaveGroup(response)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::LeaveGroup, |v| {
            let r = LeaveGroupResponse::default();
            ResponseKind::LeaveGroup(if v >= 3 {
                r.with_members(vec![MemberResponse::default()
                    .with_member_id(StrBytes::from_static_str("m"))
                    .with_error_code(25)])
            } else {
                r.with_error_code(25)
            })
        });
    }
}
