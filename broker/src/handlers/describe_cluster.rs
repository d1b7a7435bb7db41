//! DescribeCluster (key 60), versions 0-2: the one broker (this node, at its advertised
//! address), the cluster id, and this node as the controller. Asking for controller endpoints
//! (v1+ endpoint type 2) is refused, as a Kafka broker does.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use super::{decode_body, Request};
use crate::server::Broker;

/// Kafka's "operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: DescribeClusterRequest = decode_body(body, request.version)?;
    let endpoint_type = if request.version >= 1 {
        req.endpoint_type
    } else {
        ENDPOINT_TYPE_BROKERS
    };
    let cluster_id = broker.meta.snapshot().cluster_id.clone();
    let host = broker.config.advertised_host.clone();
    Ok(Some(ResponseKind::DescribeCluster(response(
        broker.config.node_id,
        &host,
        broker.config.advertised_port,
        &cluster_id,
        endpoint_type,
    ))))
}

fn response(node_id: i32, host: &str, port: u16, cluster_id: &str, endpoint_type: i8) -> DescribeClusterResponse {
    let r = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(cluster_id.to_owned()))
        .with_controller_id(BrokerId(node_id))
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    if endpoint_type != ENDPOINT_TYPE_BROKERS {
        // The response carries endpoint type 1 whatever was asked: only brokers are described.
        return r
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_string(format!(
                "endpoint type {endpoint_type} is not supported; this node is a broker"
            ))));
    }
    r.with_brokers(vec![DescribeClusterBroker::default()
        .with_broker_id(BrokerId(node_id))
        .with_host(StrBytes::from_string(host.to_owned()))
        .with_port(i32::from(port))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn describes_this_node_as_broker_and_controller() {
        let r = response(3, "h", 9, "c", ENDPOINT_TYPE_BROKERS);
        assert_eq!(r.controller_id, BrokerId(3));
        assert_eq!(r.brokers.len(), 1);
        assert_eq!(
            (r.brokers[0].broker_id, r.brokers[0].host.as_str(), r.brokers[0].port),
            (BrokerId(3), "h", 9)
        );
        let controllers = response(3, "h", 9, "c", 2);
        assert_eq!(controllers.error_code, ResponseError::UnsupportedEndpointType.code());
        assert!(controllers.brokers.is_empty());
    }

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::DescribeCluster, |_| {
            ResponseKind::DescribeCluster(response(1, "localhost", 9092, "cluster", ENDPOINT_TYPE_BROKERS))
        });
        super::super::assert_encodes(ApiKey::DescribeCluster, |_| {
            ResponseKind::DescribeCluster(response(1, "localhost", 9092, "cluster", 2))
        });
    }
}
