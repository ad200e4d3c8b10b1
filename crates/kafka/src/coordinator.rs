//! FindCoordinator (10) v0–v4: which broker coordinates a group or a transactional id.

use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::{ApiKey, BrokerId};
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

/// The key is a consumer group id.
pub const KEY_TYPE_GROUP: i8 = 0;
/// The key is a transactional id.
pub const KEY_TYPE_TRANSACTION: i8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorRequest {
    /// [`KEY_TYPE_GROUP`] (v0 knows no other) or [`KEY_TYPE_TRANSACTION`].
    pub key_type: i8,
    /// The keys to look up: exactly one before v4, a batch from v4.
    pub keys: Vec<String>,
}

pub fn decode(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<FindCoordinatorRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::FindCoordinator, version);
    let single = if version <= 3 {
        Some(reader.string_v(flexible, "coordinator key")?.to_string())
    } else {
        None
    };
    let key_type = if version >= 1 {
        reader.i8("key type")?
    } else {
        KEY_TYPE_GROUP
    };
    let keys = match single {
        Some(key) => vec![key],
        None => reader.strings_v(flexible, "coordinator keys")?,
    };
    reader.tagged_fields_v(flexible)?;
    Ok(FindCoordinatorRequest { key_type, keys })
}

/// The answer for one key. On an error Kafka answers node -1, host "" and port -1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorFound {
    pub key: String,
    pub error_code: i16,
    pub error_message: Option<String>,
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// The response at `version`: v0–v3 answer one key in the top-level fields (the first of
/// `found`; none leaves them at their defaults), v4 lists every key.
pub fn response(version: i16, found: Vec<CoordinatorFound>) -> FindCoordinatorResponse {
    let response = FindCoordinatorResponse::default();
    if version >= 4 {
        return response.with_coordinators(
            found
                .into_iter()
                .map(|c| {
                    Coordinator::default()
                        .with_key(StrBytes::from_string(c.key))
                        .with_node_id(BrokerId(c.node_id))
                        .with_host(StrBytes::from_string(c.host))
                        .with_port(c.port)
                        .with_error_code(c.error_code)
                        .with_error_message(c.error_message.map(StrBytes::from_string))
                })
                .collect(),
        );
    }
    let Some(c) = found.into_iter().next() else {
        return response;
    };
    let mut response = response
        .with_error_code(c.error_code)
        .with_node_id(BrokerId(c.node_id))
        .with_host(StrBytes::from_string(c.host))
        .with_port(c.port);
    if version >= 1 {
        response = response.with_error_message(c.error_message.map(StrBytes::from_string));
    }
    response
}
