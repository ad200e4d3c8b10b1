//! `weir-kafka`: the Kafka wire protocol, the only crate that knows API keys and versions.
//!
//! Requests come from peers, so they are decoded here with a bounded reader ([`wire`]); no
//! declared length is trusted beyond the bytes actually received. Responses are built and
//! encoded with the `kafka-protocol` crate's message types.

pub mod admin;
pub mod api;
pub mod api_versions;
pub mod configs;
pub mod delete_records;
mod error;
pub mod error_code;
pub mod fetch;
pub mod frame;
pub mod header;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
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
    }
    .map_err(error)?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}
