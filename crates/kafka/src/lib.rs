//! `weir-kafka`: the Kafka wire protocol, the only crate that knows API keys and versions.
//!
//! Requests come from peers, so they are decoded here with a bounded reader ([`wire`]); no
//! declared length is trusted beyond the bytes actually received. Responses are built and
//! encoded with the `kafka-protocol` crate's message types.

pub mod api;
pub mod api_versions;
mod error;
pub mod frame;
pub mod header;
pub mod metadata;
pub mod wire;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;

pub use error::DecodeError;
pub use header::{RequestHeader, RequestId};

/// A decoded request Weir serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    ApiVersions(api_versions::ApiVersionsRequest),
    Metadata(metadata::MetadataRequest),
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
        ApiKey::ApiVersions => Request::ApiVersions(api_versions::decode(&mut reader, version)?),
        ApiKey::Metadata => Request::Metadata(metadata::decode(&mut reader, version)?),
        _ => return Ok(Decoded::Unsupported(id)),
    };
    Ok(Decoded::Request { header, request })
}

/// A response ready to encode.
pub enum Response {
    ApiVersions(kafka_protocol::messages::ApiVersionsResponse),
    Metadata(kafka_protocol::messages::MetadataResponse),
}

/// Encodes a whole response frame (size prefix, header, body) for the request `id`. A fallback
/// ApiVersions response is encoded at v0, as KIP-511 requires.
pub fn encode_response(id: RequestId, response: &Response, fallback: bool) -> Vec<u8> {
    let (key, version) = match response {
        Response::ApiVersions(_) if fallback => (ApiKey::ApiVersions, 0),
        Response::ApiVersions(_) => (ApiKey::ApiVersions, id.api_version),
        Response::Metadata(_) => (ApiKey::Metadata, id.api_version),
    };
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // size, filled in below
    let header = ResponseHeader::default().with_correlation_id(id.correlation_id);
    // Encoding our own, well-formed values into a BytesMut cannot fail.
    header
        .encode(&mut buf, key.response_header_version(version))
        .expect("response header encodes");
    match response {
        Response::ApiVersions(body) => body.encode(&mut buf, version),
        Response::Metadata(body) => body.encode(&mut buf, version),
    }
    .expect("response body encodes");
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}
