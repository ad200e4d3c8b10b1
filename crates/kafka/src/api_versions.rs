//! ApiVersions (key 18), v0–v4, with KIP-511's fallback for versions we do not know.

use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::ApiKey;

use crate::api::{is_flexible, SUPPORTED};
use crate::error::DecodeError;
use crate::wire::Reader;

pub use crate::error_code::UNSUPPORTED_VERSION;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsRequest {
    pub client_software_name: Option<String>,
    pub client_software_version: Option<String>,
}

pub fn decode(reader: &mut Reader<'_>, version: i16) -> Result<ApiVersionsRequest, DecodeError> {
    if version < 3 {
        return Ok(ApiVersionsRequest {
            client_software_name: None,
            client_software_version: None,
        });
    }
    let flexible = is_flexible(ApiKey::ApiVersions, version);
    let name = reader
        .string_v(flexible, "client software name")?
        .to_string();
    let software = reader
        .string_v(flexible, "client software version")?
        .to_string();
    reader.tagged_fields_v(flexible)?;
    Ok(ApiVersionsRequest {
        client_software_name: Some(name),
        client_software_version: Some(software),
    })
}

/// Our ranges, with `error_code` (0, or UNSUPPORTED_VERSION for the KIP-511 fallback, which is
/// encoded as v0 so any client can read it).
pub fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}
