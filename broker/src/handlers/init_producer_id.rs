//! InitProducerId (key 22), versions 0-5: producer ids for idempotent and transactional
//! producers.
//!
//! As Kafka 3.x answers (`KafkaApis.handleInitProducerIdRequest`, `TransactionCoordinator`):
//! a producer id and epoch must be given together or not at all (INVALID_REQUEST otherwise);
//! without a transactional id the request is accepted blindly and answered with a new producer
//! id at epoch 0, even when it names its current id and epoch (KIP-360: for an idempotent
//! producer Kafka gives a fresh id rather than bumping the epoch). An empty transactional id is
//! INVALID_REQUEST, as in Kafka. Any other transactional id goes to its transaction coordinator
//! (`txn::TxnCoordinator::init_producer_id`), which keeps its producer id and bumps the epoch.
//!
//! Ids come from blocks reserved durably in the cluster metadata (`MetaStore::next_producer_id`),
//! shared by every shard, so none is ever handed out twice, restarts included.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId, ResponseKind};

use super::{decode_body, Request};
use crate::server::Broker;

/// Kafka's "no producer id" and "no epoch".
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: InitProducerIdRequest = decode_body(body, request.version)?;
    let response = match refusal(&req) {
        Some(error) => error_response(error),
        None if req.transactional_id.is_some() => {
            let id = req.transactional_id.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            let given = (req.producer_id.0 != NO_PRODUCER_ID).then_some((req.producer_id.0, req.producer_epoch));
            let (txn, timeout_ms) = (id.clone(), req.transaction_timeout_ms);
            let answer = crate::txn::on_coordinator(broker, &id, move |c| async move {
                c.init_producer_id(&txn, timeout_ms, given, super::now_ms()).await
            })
            .await
            .and_then(|r| r);
            match answer {
                Ok((pid, epoch)) => InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch),
                Err(e) => error_response(e),
            }
        }
        None => match crate::metadata::allocate_producer_id(&broker.meta).await {
            Ok(id) => {
                tracing::debug!(target: "broker", producer_id = id, "producer id handed out");
                InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(id))
                    .with_producer_epoch(0)
            }
            Err(e) => {
                tracing::error!(target: "broker", error = %e, "reserving producer ids failed");
                error_response(ResponseError::UnknownServerError)
            }
        },
    };
    Ok(Some(ResponseKind::InitProducerId(response)))
}

/// Why the request cannot get a producer id, if it cannot.
fn refusal(req: &InitProducerIdRequest) -> Option<ResponseError> {
    let given_id = req.producer_id.0 != NO_PRODUCER_ID;
    let given_epoch = req.producer_epoch != NO_PRODUCER_EPOCH;
    if given_id != given_epoch {
        return Some(ResponseError::InvalidRequest);
    }
    match &req.transactional_id {
        Some(id) if id.is_empty() => Some(ResponseError::InvalidRequest),
        _ => None,
    }
}

fn error_response(error: ResponseError) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(error.code())
        .with_producer_id(ProducerId(NO_PRODUCER_ID))
        .with_producer_epoch(NO_PRODUCER_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, TransactionalId};
    use kafka_protocol::protocol::StrBytes;

    fn request(txn: Option<&str>, pid: i64, epoch: i16) -> InitProducerIdRequest {
        InitProducerIdRequest::default()
            .with_transactional_id(txn.map(|t| TransactionalId(StrBytes::from_string(t.to_owned()))))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
    }

    #[test]
    fn answers_as_kafka_does() {
        assert_eq!(refusal(&request(None, -1, -1)), None);
        // KIP-360: an idempotent producer naming its id and epoch gets a fresh id.
        assert_eq!(refusal(&request(None, 7, 3)), None);
        assert_eq!(refusal(&request(None, 7, -1)), Some(ResponseError::InvalidRequest));
        assert_eq!(refusal(&request(None, -1, 0)), Some(ResponseError::InvalidRequest));
        assert_eq!(refusal(&request(Some(""), -1, -1)), Some(ResponseError::InvalidRequest));
        assert_eq!(refusal(&request(Some("txn"), -1, -1)), None, "the transaction coordinator answers");
    }

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::InitProducerId, |_| {
            ResponseKind::InitProducerId(InitProducerIdResponse::default().with_producer_id(ProducerId(5)))
        });
        super::super::assert_encodes(ApiKey::InitProducerId, |_| {
            ResponseKind::InitProducerId(error_response(ResponseError::CoordinatorNotAvailable))
        });
    }
}
