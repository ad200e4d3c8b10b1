//! Config APIs: DescribeConfigs (32) v1–v4, AlterConfigs (33) v0–v2, IncrementalAlterConfigs
//! (44) v0–v1.

use kafka_protocol::messages::alter_configs_response::{
    AlterConfigsResourceResponse, AlterConfigsResponse,
};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse as IncrementalResourceResponse, IncrementalAlterConfigsResponse,
};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

/// Kafka's resource types.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Kafka's config sources (DescribeConfigs v1+).
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// Incremental operations.
pub const OP_SET: i8 = 0;
pub const OP_DELETE: i8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeResource {
    pub resource_type: i8,
    pub name: String,
    /// None: every key.
    pub keys: Option<Vec<String>>,
}

pub fn decode_describe(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<Vec<DescribeResource>, DecodeError> {
    let flexible = is_flexible(ApiKey::DescribeConfigs, version);
    let count = reader.array_len_v(flexible, "resources")?.unwrap_or(0);
    let mut resources = Vec::with_capacity(count);
    for _ in 0..count {
        let resource_type = reader.i8("resource type")?;
        let name = reader.string_v(flexible, "resource name")?.to_string();
        let keys = match reader.array_len_v(flexible, "configuration keys")? {
            None => None,
            Some(n) => {
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(reader.string_v(flexible, "configuration key")?.to_string());
                }
                Some(keys)
            }
        };
        reader.tagged_fields_v(flexible)?;
        resources.push(DescribeResource {
            resource_type,
            name,
            keys,
        });
    }
    reader.bool("include synonyms")?;
    if version >= 3 {
        reader.bool("include documentation")?;
    }
    reader.tagged_fields_v(flexible)?;
    Ok(resources)
}

/// One described config entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub is_default: bool,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub resource_type: i8,
    pub name: String,
    pub error_code: i16,
    pub error_message: Option<String>,
    pub entries: Vec<ConfigEntry>,
}

/// Kafka's type of a config, as DescribeConfigs (v3+) reports it: 1 BOOLEAN, 2 STRING, 3 INT,
/// 5 LONG, 7 LIST; 0 UNKNOWN for a name this table lacks.
pub fn config_type(name: &str) -> i8 {
    match name {
        "auto.create.topics.enable" => 1,
        "log.dirs" | "cleanup.policy" => 7,
        "segment.bytes"
        | "index.interval.bytes"
        | "max.message.bytes"
        | "num.partitions"
        | "socket.request.max.bytes"
        | "broker.id" => 3,
        "segment.ms" | "retention.bytes" | "retention.ms" | "flush.messages" | "flush.ms" => 5,
        _ => 0,
    }
}

pub fn describe_response(results: Vec<Described>) -> DescribeConfigsResponse {
    DescribeConfigsResponse::default().with_results(
        results
            .into_iter()
            .map(|r| {
                DescribeConfigsResult::default()
                    .with_error_code(r.error_code)
                    .with_error_message(r.error_message.map(StrBytes::from_string))
                    .with_resource_type(r.resource_type)
                    .with_resource_name(StrBytes::from_string(r.name))
                    .with_configs(
                        r.entries
                            .into_iter()
                            .map(|e| {
                                DescribeConfigsResourceResult::default()
                                    .with_config_type(config_type(&e.name))
                                    // Documentation is not served: null, as Kafka sends when
                                    // it is not asked for.
                                    .with_documentation(None)
                                    .with_name(StrBytes::from_string(e.name))
                                    .with_value(Some(StrBytes::from_string(e.value)))
                                    .with_read_only(e.read_only)
                                    .with_config_source(if e.is_default {
                                        SOURCE_DEFAULT
                                    } else if e.read_only {
                                        SOURCE_STATIC_BROKER
                                    } else {
                                        SOURCE_TOPIC
                                    })
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterResource {
    pub resource_type: i8,
    pub name: String,
    /// (key, operation, value). AlterConfigs entries are all OP_SET, and replace the whole set.
    pub entries: Vec<(String, i8, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterRequest {
    pub resources: Vec<AlterResource>,
    pub validate_only: bool,
    /// IncrementalAlterConfigs (true) or AlterConfigs (false, which replaces every setting).
    pub incremental: bool,
}

fn decode_alter(
    reader: &mut Reader<'_>,
    flexible: bool,
    incremental: bool,
) -> Result<AlterRequest, DecodeError> {
    let count = reader.array_len_v(flexible, "resources")?.unwrap_or(0);
    let mut resources = Vec::with_capacity(count);
    for _ in 0..count {
        let resource_type = reader.i8("resource type")?;
        let name = reader.string_v(flexible, "resource name")?.to_string();
        let n = reader.array_len_v(flexible, "configs")?.unwrap_or(0);
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let key = reader.string_v(flexible, "config name")?.to_string();
            let op = if incremental {
                reader.i8("config operation")?
            } else {
                OP_SET
            };
            let value = reader
                .nullable_string_v(flexible, "config value")?
                .map(str::to_string);
            reader.tagged_fields_v(flexible)?;
            entries.push((key, op, value));
        }
        reader.tagged_fields_v(flexible)?;
        resources.push(AlterResource {
            resource_type,
            name,
            entries,
        });
    }
    let validate_only = reader.bool("validate only")?;
    reader.tagged_fields_v(flexible)?;
    Ok(AlterRequest {
        resources,
        validate_only,
        incremental,
    })
}

pub fn decode_alter_configs(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<AlterRequest, DecodeError> {
    decode_alter(reader, is_flexible(ApiKey::AlterConfigs, version), false)
}

pub fn decode_incremental(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<AlterRequest, DecodeError> {
    decode_alter(
        reader,
        is_flexible(ApiKey::IncrementalAlterConfigs, version),
        true,
    )
}

/// (resource type, name, error code, message) per resource.
pub type Altered = (i8, String, i16, Option<String>);

pub fn alter_response(results: Vec<Altered>) -> AlterConfigsResponse {
    AlterConfigsResponse::default().with_responses(
        results
            .into_iter()
            .map(|(resource_type, name, code, message)| {
                AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(StrBytes::from_string(name))
                    .with_error_code(code)
                    .with_error_message(message.map(StrBytes::from_string))
            })
            .collect(),
    )
}

pub fn incremental_response(results: Vec<Altered>) -> IncrementalAlterConfigsResponse {
    IncrementalAlterConfigsResponse::default().with_responses(
        results
            .into_iter()
            .map(|(resource_type, name, code, message)| {
                IncrementalResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(StrBytes::from_string(name))
                    .with_error_code(code)
                    .with_error_message(message.map(StrBytes::from_string))
            })
            .collect(),
    )
}
