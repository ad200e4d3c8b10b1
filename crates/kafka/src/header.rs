//! The request header.

use kafka_protocol::messages::ApiKey;

use crate::error::DecodeError;
use crate::wire::Reader;

/// The first 8 bytes of every request: enough to answer it, even when nothing else parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader<'a> {
    pub id: RequestId,
    pub client_id: Option<&'a str>,
}

/// Reads the api key, version and correlation id.
pub fn decode_id(reader: &mut Reader<'_>) -> Result<RequestId, DecodeError> {
    Ok(RequestId {
        api_key: reader.i16("api key")?,
        api_version: reader.i16("api version")?,
        correlation_id: reader.i32("correlation id")?,
    })
}

/// Reads the rest of the header of a request to `key` at `id.api_version`: the client id, and
/// tagged fields in header v2 (flexible versions). The client id stays a non-compact string in
/// header v2.
pub fn decode_rest<'a>(
    reader: &mut Reader<'a>,
    id: RequestId,
    key: ApiKey,
) -> Result<RequestHeader<'a>, DecodeError> {
    let version = key.request_header_version(id.api_version);
    let client_id = if version >= 1 {
        reader.nullable_string("client id")?
    } else {
        None
    };
    if version >= 2 {
        reader.skip_tagged_fields()?;
    }
    Ok(RequestHeader { id, client_id })
}
