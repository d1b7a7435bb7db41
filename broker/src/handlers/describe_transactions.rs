//! DescribeTransactions (key 65), version 0: state, producer, timeout, start and partitions of
//! each transactional id (TRANSACTIONAL_ID_NOT_FOUND for an unknown one).

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{decode_body, Request};
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: DescribeTransactionsRequest = decode_body(body, request.version)?;
    let asks = req.transactional_ids.into_iter().map(|id| async move {
        let name = id.0.to_string();
        let found = crate::txn::on_coordinator(broker, &name.clone(), move |c| async move { c.describe(&name) }).await;
        let state = TransactionState::default().with_transactional_id(id);
        match found {
            Err(e) => state.with_error_code(e.code()),
            Ok(None) => state.with_error_code(ResponseError::TransactionalIdNotFound.code()),
            Ok(Some(m)) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (t, p) in &m.partitions {
                    match topics.last_mut() {
                        Some(last) if last.topic.0.as_str() == t => last.partitions.push(*p),
                        _ => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(StrBytes::from_string(t.clone())))
                                .with_partitions(vec![*p]),
                        ),
                    }
                }
                state
                    .with_transaction_state(StrBytes::from_static_str(m.state.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.producer_epoch)
                    .with_topics(topics)
            }
        }
    });
    let states = futures::future::join_all(asks).await;
    Ok(Some(ResponseKind::DescribeTransactions(
        DescribeTransactionsResponse::default().with_transaction_states(states),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, TransactionalId};

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::DescribeTransactions, |_| {
            ResponseKind::DescribeTransactions(DescribeTransactionsResponse::default().with_transaction_states(vec![
                TransactionState::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_static_str("t")))
                    .with_transaction_state(StrBytes::from_static_str("Ongoing"))
                    .with_topics(vec![TopicData::default()
                        .with_topic(TopicName(StrBytes::from_static_str("a")))
                        .with_partitions(vec![0, 1])]),
            ]))
        });
    }
}
