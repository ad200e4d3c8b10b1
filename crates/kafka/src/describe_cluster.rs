//! DescribeCluster (60) v0–v2: the cluster id, the controller and the brokers. Admin clients
//! (Java's `describeCluster`, krafka) ask it instead of Metadata on newer brokers.

use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::StrBytes;

use crate::error::DecodeError;
use crate::metadata::Node;
use crate::wire::Reader;

/// `endpoint_type` 1: the brokers' listeners (2 would be controllers, which a single node
/// does not expose separately).
pub const ENDPOINT_BROKERS: i8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeClusterRequest {
    pub include_cluster_authorized_operations: bool,
    /// v1+: which endpoints (1 brokers, 2 controllers); 1 before v1.
    pub endpoint_type: i8,
}

/// Every version is flexible.
pub fn decode(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<DescribeClusterRequest, DecodeError> {
    let include_cluster_authorized_operations = reader.bool("include authorized operations")?;
    let endpoint_type = if version >= 1 {
        reader.i8("endpoint type")?
    } else {
        ENDPOINT_BROKERS
    };
    if version >= 2 {
        reader.bool("include fenced brokers")?;
    }
    reader.skip_tagged_fields()?;
    Ok(DescribeClusterRequest {
        include_cluster_authorized_operations,
        endpoint_type,
    })
}

/// The one-node cluster: this node is its only broker and its controller. An endpoint type
/// other than brokers is answered with UNSUPPORTED_ENDPOINT_TYPE (119), as Kafka.
pub fn response(
    version: i16,
    request: &DescribeClusterRequest,
    node: &Node,
    cluster_id: &str,
) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(cluster_id.to_string()))
        .with_cluster_authorized_operations(i32::MIN);
    if version >= 1 {
        response = response.with_endpoint_type(request.endpoint_type);
    }
    if request.endpoint_type != ENDPOINT_BROKERS {
        return response
            .with_error_code(crate::error_code::UNSUPPORTED_ENDPOINT_TYPE)
            .with_controller_id(BrokerId(-1));
    }
    response
        .with_controller_id(BrokerId(node.node_id))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(node.node_id))
            .with_host(StrBytes::from_string(node.host.clone()))
            .with_port(node.port)
            .with_rack(None)])
}
