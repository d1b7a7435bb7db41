//! ListTransactions (key 66), versions 0-1: every transactional id on every shard, filtered by
//! state, producer id and (v1) how long the transaction has been open. Version 2's id pattern
//! (a Java regular expression) is not served.

use bytes::Bytes;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, ProducerId, ResponseKind, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use shard::ShardId;

use super::{decode_body, now_ms, Request};
use crate::server::Broker;
use crate::txn::state::TxnState;

/// Every state a filter may name.
const STATES: [TxnState; 6] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
];

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: ListTransactionsRequest = decode_body(body, request.version)?;
    let calls = (0..broker.meta.shards())
        .map(|s| crate::internal::on_shard(&broker.router, ShardId(s), |services| async move { services.txns.list() }));
    let mut error = 0;
    let mut all = Vec::new();
    for answer in futures::future::join_all(calls).await {
        match answer {
            Ok(list) => all.extend(list),
            Err(e) => error = e.code(),
        }
    }
    let unknown_states: Vec<StrBytes> = req
        .state_filters
        .iter()
        .filter(|f| !STATES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let now = now_ms();
    all.retain(|v| {
        (req.state_filters.is_empty() || req.state_filters.iter().any(|f| f.as_str() == v.meta.state.name()))
            && (req.producer_id_filters.is_empty() || req.producer_id_filters.iter().any(|p| p.0 == v.meta.producer_id))
            && (req.duration_filter < 0 || (v.meta.state == TxnState::Ongoing && now - v.meta.start_ms > req.duration_filter))
    });
    all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    let states = all
        .into_iter()
        .map(|v| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(v.transactional_id)))
                .with_producer_id(ProducerId(v.meta.producer_id))
                .with_transaction_state(StrBytes::from_static_str(v.meta.state.name()))
        })
        .collect();
    Ok(Some(ResponseKind::ListTransactions(
        ListTransactionsResponse::default()
            .with_error_code(error)
            .with_unknown_state_filters(unknown_states)
            .with_transaction_states(states),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::ListTransactions, |_| {
            ResponseKind::ListTransactions(
                ListTransactionsResponse::default().with_transaction_states(vec![TransactionState::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_static_str("t")))
                    .with_producer_id(ProducerId(3))
                    .with_transaction_state(StrBytes::from_static_str("Ongoing"))]),
            )
        });
    }
}
