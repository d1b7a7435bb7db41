//! AddOffsetsToTxn (key 25), versions 0-4: the group's offsets join the producer's transaction
//! (TxnOffsetCommit then sends them to the group's coordinator).

use bytes::Bytes;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ResponseKind};

use super::{decode_body, now_ms, Request};
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: AddOffsetsToTxnRequest = decode_body(body, request.version)?;
    let id = req.transactional_id.0.to_string();
    let producer = (req.producer_id.0, req.producer_epoch);
    let (txn, group) = (id.clone(), req.group_id.0.to_string());
    let code = crate::txn::on_coordinator(
        broker,
        &id,
        move |c| async move { c.add_offsets(&txn, producer, group, now_ms()).await },
    )
    .await
    .and_then(|r| r)
    .err()
    .map_or(0, |e| e.code());
    Ok(Some(ResponseKind::AddOffsetsToTxn(
        AddOffsetsToTxnResponse::default().with_error_code(code),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::AddOffsetsToTxn, |_| {
            ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(51))
        });
    }
}
