//! Heartbeat (key 12), versions 0-4: keeps a member's session alive; REBALANCE_IN_PROGRESS
//! tells it to join again.

use bytes::Bytes;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse, ResponseKind};

use super::{decode_body, now_ms, Request};
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: HeartbeatRequest = decode_body(body, request.version)?;
    let group_id = req.group_id.0.to_string();
    let (id, member, instance, generation) = (
        group_id.clone(),
        req.member_id.to_string(),
        req.group_instance_id.as_ref().map(|i| i.to_string()),
        req.generation_id,
    );
    let code = crate::groups::on_coordinator(broker, &group_id, move |c| async move {
        c.heartbeat(&id, &member, instance.as_deref(), generation, now_ms())
    })
    .await
    .unwrap_or_else(|e| e.code());
    Ok(Some(ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::Heartbeat, |_| {
            ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(27))
        });
    }
}
