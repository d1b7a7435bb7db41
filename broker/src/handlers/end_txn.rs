//! EndTxn (key 26), versions 0-4: commits or aborts the producer's open transaction; answered
//! once every marker is durable. Version 5 (KIP-890's epoch bump per transaction) is not served.

use bytes::Bytes;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ResponseKind};

use super::{decode_body, now_ms, Request};
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: EndTxnRequest = decode_body(body, request.version)?;
    let id = req.transactional_id.0.to_string();
    let producer = (req.producer_id.0, req.producer_epoch);
    let (txn, commit) = (id.clone(), req.committed);
    let code = crate::txn::on_coordinator(
        broker,
        &id,
        move |c| async move { c.end_txn(&txn, producer, commit, now_ms()).await },
    )
    .await
    .and_then(|r| r)
    .err()
    .map_or(0, |e| e.code());
    Ok(Some(ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(code))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::EndTxn, |_| {
            ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(48))
        });
    }
}
