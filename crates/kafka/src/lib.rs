//! `weir-kafka`: the Kafka wire protocol, the only crate that knows API keys and versions.
//!
//! Requests come from peers, so they are decoded here with a bounded reader ([`wire`]); no
//! declared length is trusted beyond the bytes actually received. Responses are built and
//! encoded with the `kafka-protocol` crate's message types.

pub mod admin;
pub mod api;
pub mod api_versions;
pub mod client_quotas;
pub mod configs;
pub mod coordinator;
pub mod delete_records;
pub mod describe_cluster;
mod error;
pub mod error_code;
pub mod fetch;
pub mod frame;
pub mod group;
pub mod group_admin;
pub mod group_offsets;
pub mod header;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
pub mod producer_id;
pub mod wire;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;

pub use error::DecodeError;
pub use header::{RequestHeader, RequestId};

/// A decoded request Weir serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Produce(produce::ProduceRequest),
    Fetch(fetch::FetchRequest),
    ListOffsets(list_offsets::ListOffsetsRequest),
    ApiVersions(api_versions::ApiVersionsRequest),
    Metadata(metadata::MetadataRequest),
    CreateTopics(admin::CreateTopicsRequest),
    DeleteTopics(admin::DeleteTopicsRequest),
    CreatePartitions(admin::CreatePartitionsRequest),
    DeleteRecords(delete_records::DeleteRecordsRequest),
    DescribeConfigs(Vec<configs::DescribeResource>),
    AlterConfigs(configs::AlterRequest),
    FindCoordinator(coordinator::FindCoordinatorRequest),
    JoinGroup(group::JoinGroupRequest),
    SyncGroup(group::SyncGroupRequest),
    Heartbeat(group::HeartbeatRequest),
    LeaveGroup(group::LeaveGroupRequest),
    OffsetCommit(group_offsets::OffsetCommitRequest),
    OffsetFetch(group_offsets::OffsetFetchRequest),
    OffsetDelete(group_offsets::OffsetDeleteRequest),
    ListGroups(group_admin::ListGroupsRequest),
    DescribeGroups(group_admin::DescribeGroupsRequest),
    DeleteGroups(group_admin::DeleteGroupsRequest),
    InitProducerId(producer_id::InitProducerIdRequest),
    DescribeCluster(describe_cluster::DescribeClusterRequest),
    DescribeClientQuotas(client_quotas::DescribeClientQuotasRequest),
    AlterClientQuotas(client_quotas::AlterClientQuotasRequest),
}

/// What a request frame turned out to be.
#[derive(Debug)]
pub enum Decoded<'a> {
    Request {
        header: RequestHeader<'a>,
        request: Request,
    },
    /// ApiVersions at a version we do not serve: answer with the KIP-511 fallback, keep the
    /// connection open for the client's retry.
    ApiVersionsFallback(RequestId),
    /// An API key or version we do not serve. Kafka closes the connection; so do we.
    Unsupported(RequestId),
}

/// Decodes one request frame (without its size prefix).
pub fn decode_request(frame: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let mut reader = wire::Reader::new(frame);
    let id = header::decode_id(&mut reader)?;
    let Some((key, min, max)) = api::supported_range(id.api_key) else {
        return Ok(Decoded::Unsupported(id));
    };
    if !(min..=max).contains(&id.api_version) {
        return Ok(if key == ApiKey::ApiVersions {
            Decoded::ApiVersionsFallback(id)
        } else {
            Decoded::Unsupported(id)
        });
    }
    let header = header::decode_rest(&mut reader, id, key)?;
    let version = id.api_version;
    let request = match key {
        ApiKey::Produce => Request::Produce(produce::decode(&mut reader, version)?),
        ApiKey::Fetch => Request::Fetch(fetch::decode(&mut reader, version)?),
        ApiKey::ListOffsets => Request::ListOffsets(list_offsets::decode(&mut reader, version)?),
        ApiKey::ApiVersions => Request::ApiVersions(api_versions::decode(&mut reader, version)?),
        ApiKey::Metadata => Request::Metadata(metadata::decode(&mut reader, version)?),
        ApiKey::CreateTopics => {
            Request::CreateTopics(admin::decode_create_topics(&mut reader, version)?)
        }
        ApiKey::DeleteTopics => {
            Request::DeleteTopics(admin::decode_delete_topics(&mut reader, version)?)
        }
        ApiKey::CreatePartitions => {
            Request::CreatePartitions(admin::decode_create_partitions(&mut reader, version)?)
        }
        ApiKey::DeleteRecords => {
            Request::DeleteRecords(delete_records::decode(&mut reader, version)?)
        }
        ApiKey::DescribeConfigs => {
            Request::DescribeConfigs(configs::decode_describe(&mut reader, version)?)
        }
        ApiKey::AlterConfigs => {
            Request::AlterConfigs(configs::decode_alter_configs(&mut reader, version)?)
        }
        ApiKey::IncrementalAlterConfigs => {
            Request::AlterConfigs(configs::decode_incremental(&mut reader, version)?)
        }
        ApiKey::FindCoordinator => {
            Request::FindCoordinator(coordinator::decode(&mut reader, version)?)
        }
        ApiKey::JoinGroup => Request::JoinGroup(group::decode_join(&mut reader, version)?),
        ApiKey::SyncGroup => Request::SyncGroup(group::decode_sync(&mut reader, version)?),
        ApiKey::Heartbeat => Request::Heartbeat(group::decode_heartbeat(&mut reader, version)?),
        ApiKey::LeaveGroup => Request::LeaveGroup(group::decode_leave(&mut reader, version)?),
        ApiKey::OffsetCommit => {
            Request::OffsetCommit(group_offsets::decode_commit(&mut reader, version)?)
        }
        ApiKey::OffsetFetch => {
            Request::OffsetFetch(group_offsets::decode_fetch(&mut reader, version)?)
        }
        ApiKey::OffsetDelete => {
            Request::OffsetDelete(group_offsets::decode_delete(&mut reader, version)?)
        }
        ApiKey::ListGroups => Request::ListGroups(group_admin::decode_list(&mut reader, version)?),
        ApiKey::DescribeGroups => {
            Request::DescribeGroups(group_admin::decode_describe(&mut reader, version)?)
        }
        ApiKey::DeleteGroups => {
            Request::DeleteGroups(group_admin::decode_delete(&mut reader, version)?)
        }
        ApiKey::InitProducerId => {
            Request::InitProducerId(producer_id::decode(&mut reader, version)?)
        }
        ApiKey::DescribeClientQuotas => {
            Request::DescribeClientQuotas(client_quotas::decode_describe(&mut reader, version)?)
        }
        ApiKey::AlterClientQuotas => {
            Request::AlterClientQuotas(client_quotas::decode_alter(&mut reader, version)?)
        }
        ApiKey::DescribeCluster => {
            Request::DescribeCluster(describe_cluster::decode(&mut reader, version)?)
        }
        _ => return Ok(Decoded::Unsupported(id)),
    };
    Ok(Decoded::Request { header, request })
}

/// A response ready to encode.
pub enum Response {
    Produce(kafka_protocol::messages::ProduceResponse),
    Fetch(kafka_protocol::messages::FetchResponse),
    ListOffsets(kafka_protocol::messages::ListOffsetsResponse),
    ApiVersions(kafka_protocol::messages::ApiVersionsResponse),
    Metadata(kafka_protocol::messages::MetadataResponse),
    CreateTopics(kafka_protocol::messages::CreateTopicsResponse),
    DeleteTopics(kafka_protocol::messages::DeleteTopicsResponse),
    CreatePartitions(kafka_protocol::messages::CreatePartitionsResponse),
    DeleteRecords(kafka_protocol::messages::DeleteRecordsResponse),
    DescribeConfigs(kafka_protocol::messages::DescribeConfigsResponse),
    AlterConfigs(kafka_protocol::messages::AlterConfigsResponse),
    IncrementalAlterConfigs(kafka_protocol::messages::IncrementalAlterConfigsResponse),
    FindCoordinator(kafka_protocol::messages::FindCoordinatorResponse),
    JoinGroup(kafka_protocol::messages::JoinGroupResponse),
    SyncGroup(kafka_protocol::messages::SyncGroupResponse),
    Heartbeat(kafka_protocol::messages::HeartbeatResponse),
    LeaveGroup(kafka_protocol::messages::LeaveGroupResponse),
    OffsetCommit(kafka_protocol::messages::OffsetCommitResponse),
    OffsetFetch(kafka_protocol::messages::OffsetFetchResponse),
    OffsetDelete(kafka_protocol::messages::OffsetDeleteResponse),
    ListGroups(kafka_protocol::messages::ListGroupsResponse),
    DescribeGroups(kafka_protocol::messages::DescribeGroupsResponse),
    DeleteGroups(kafka_protocol::messages::DeleteGroupsResponse),
    InitProducerId(kafka_protocol::messages::InitProducerIdResponse),
    DescribeCluster(kafka_protocol::messages::DescribeClusterResponse),
    DescribeClientQuotas(kafka_protocol::messages::DescribeClientQuotasResponse),
    AlterClientQuotas(kafka_protocol::messages::AlterClientQuotasResponse),
}

/// A response that cannot be encoded at the request's version: a bug of ours (a field set that
/// the version lacks), reported instead of panicking.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the response to API key {api_key} v{version}: {reason}")]
pub struct EncodeError {
    pub api_key: i16,
    pub version: i16,
    pub reason: String,
}

fn encode_failed<E: std::fmt::Display>(api_key: i16, version: i16) -> impl Fn(E) -> EncodeError {
    move |e| EncodeError {
        api_key,
        version,
        reason: e.to_string(),
    }
}

/// Encodes a whole response frame (size prefix, header, body) for the request `id`. A fallback
/// ApiVersions response is encoded at v0, as KIP-511 requires.
pub fn encode_response(
    id: RequestId,
    response: &Response,
    fallback: bool,
) -> Result<bytes::Bytes, EncodeError> {
    let (key, version) = match response {
        Response::ApiVersions(_) if fallback => (ApiKey::ApiVersions, 0),
        Response::ApiVersions(_) => (ApiKey::ApiVersions, id.api_version),
        Response::Metadata(_) => (ApiKey::Metadata, id.api_version),
        Response::Produce(_) => (ApiKey::Produce, id.api_version),
        Response::Fetch(_) => (ApiKey::Fetch, id.api_version),
        Response::ListOffsets(_) => (ApiKey::ListOffsets, id.api_version),
        Response::CreateTopics(_) => (ApiKey::CreateTopics, id.api_version),
        Response::DeleteTopics(_) => (ApiKey::DeleteTopics, id.api_version),
        Response::CreatePartitions(_) => (ApiKey::CreatePartitions, id.api_version),
        Response::DeleteRecords(_) => (ApiKey::DeleteRecords, id.api_version),
        Response::DescribeConfigs(_) => (ApiKey::DescribeConfigs, id.api_version),
        Response::AlterConfigs(_) => (ApiKey::AlterConfigs, id.api_version),
        Response::IncrementalAlterConfigs(_) => (ApiKey::IncrementalAlterConfigs, id.api_version),
        Response::FindCoordinator(_) => (ApiKey::FindCoordinator, id.api_version),
        Response::JoinGroup(_) => (ApiKey::JoinGroup, id.api_version),
        Response::SyncGroup(_) => (ApiKey::SyncGroup, id.api_version),
        Response::Heartbeat(_) => (ApiKey::Heartbeat, id.api_version),
        Response::LeaveGroup(_) => (ApiKey::LeaveGroup, id.api_version),
        Response::OffsetCommit(_) => (ApiKey::OffsetCommit, id.api_version),
        Response::OffsetFetch(_) => (ApiKey::OffsetFetch, id.api_version),
        Response::OffsetDelete(_) => (ApiKey::OffsetDelete, id.api_version),
        Response::ListGroups(_) => (ApiKey::ListGroups, id.api_version),
        Response::DescribeGroups(_) => (ApiKey::DescribeGroups, id.api_version),
        Response::DeleteGroups(_) => (ApiKey::DeleteGroups, id.api_version),
        Response::InitProducerId(_) => (ApiKey::InitProducerId, id.api_version),
        Response::DescribeCluster(_) => (ApiKey::DescribeCluster, id.api_version),
        Response::DescribeClientQuotas(_) => (ApiKey::DescribeClientQuotas, id.api_version),
        Response::AlterClientQuotas(_) => (ApiKey::AlterClientQuotas, id.api_version),
    };
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // size, filled in below
    let error = encode_failed(key as i16, version);
    let header = ResponseHeader::default().with_correlation_id(id.correlation_id);
    header
        .encode(&mut buf, key.response_header_version(version))
        .map_err(&error)?;
    match response {
        Response::ApiVersions(body) => body.encode(&mut buf, version),
        Response::Metadata(body) => body.encode(&mut buf, version),
        Response::Produce(body) => body.encode(&mut buf, version),
        Response::Fetch(body) => body.encode(&mut buf, version),
        Response::ListOffsets(body) => body.encode(&mut buf, version),
        Response::CreateTopics(body) => body.encode(&mut buf, version),
        Response::DeleteTopics(body) => body.encode(&mut buf, version),
        Response::CreatePartitions(body) => body.encode(&mut buf, version),
        Response::DeleteRecords(body) => body.encode(&mut buf, version),
        Response::DescribeConfigs(body) => body.encode(&mut buf, version),
        Response::AlterConfigs(body) => body.encode(&mut buf, version),
        Response::IncrementalAlterConfigs(body) => body.encode(&mut buf, version),
        Response::FindCoordinator(body) => body.encode(&mut buf, version),
        Response::JoinGroup(body) => body.encode(&mut buf, version),
        Response::SyncGroup(body) => body.encode(&mut buf, version),
        Response::Heartbeat(body) => body.encode(&mut buf, version),
        Response::LeaveGroup(body) => body.encode(&mut buf, version),
        Response::OffsetCommit(body) => body.encode(&mut buf, version),
        Response::OffsetFetch(body) => body.encode(&mut buf, version),
        Response::OffsetDelete(body) => body.encode(&mut buf, version),
        Response::ListGroups(body) => body.encode(&mut buf, version),
        Response::DescribeGroups(body) => body.encode(&mut buf, version),
        Response::DeleteGroups(body) => body.encode(&mut buf, version),
        Response::InitProducerId(body) => body.encode(&mut buf, version),
        Response::DescribeCluster(body) => body.encode(&mut buf, version),
        Response::DescribeClientQuotas(body) => body.encode(&mut buf, version),
        Response::AlterClientQuotas(body) => body.encode(&mut buf, version),
    }
    .map_err(error)?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}
