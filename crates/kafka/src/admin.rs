//! Topic administration: CreateTopics (19) v2–v7, DeleteTopics (20) v1–v6 (by name),
//! CreatePartitions (37) v0–v3.

use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's default.
    pub num_partitions: i32,
    /// -1: the broker's default.
    pub replication_factor: i16,
    /// Manual assignment: for each partition, the brokers holding it.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicsRequest {
    pub topics: Vec<NewTopic>,
    pub timeout_ms: i32,
    pub validate_only: bool,
}

pub fn decode_create_topics(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<CreateTopicsRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::CreateTopics, version);
    let count = reader.array_len_v(flexible, "topics")?.unwrap_or(0);
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let name = reader.string_v(flexible, "topic name")?.to_string();
        let num_partitions = reader.i32("partitions")?;
        let replication_factor = reader.i16("replication factor")?;
        let n = reader.array_len_v(flexible, "assignments")?.unwrap_or(0);
        let mut assignments = Vec::with_capacity(n);
        for _ in 0..n {
            let partition = reader.i32("partition")?;
            let brokers = reader.int32s_v(flexible, "broker ids")?;
            reader.tagged_fields_v(flexible)?;
            assignments.push((partition, brokers));
        }
        let n = reader.array_len_v(flexible, "configs")?.unwrap_or(0);
        let mut configs = Vec::with_capacity(n);
        for _ in 0..n {
            let key = reader.string_v(flexible, "config name")?.to_string();
            let value = reader
                .nullable_string_v(flexible, "config value")?
                .map(str::to_string);
            reader.tagged_fields_v(flexible)?;
            configs.push((key, value));
        }
        reader.tagged_fields_v(flexible)?;
        topics.push(NewTopic {
            name,
            num_partitions,
            replication_factor,
            assignments,
            configs,
        });
    }
    let timeout_ms = reader.i32("timeout")?;
    let validate_only = reader.bool("validate only")?;
    reader.tagged_fields_v(flexible)?;
    Ok(CreateTopicsRequest {
        topics,
        timeout_ms,
        validate_only,
    })
}

/// The result for one topic of CreateTopics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    pub name: String,
    pub topic_id: [u8; 16],
    pub error_code: i16,
    pub error_message: Option<String>,
    pub num_partitions: i32,
}

pub fn create_topics_response(version: i16, topics: Vec<CreatedTopic>) -> CreateTopicsResponse {
    CreateTopicsResponse::default().with_topics(
        topics
            .into_iter()
            .map(|t| {
                let mut result = CreatableTopicResult::default()
                    .with_name(TopicName(StrBytes::from_string(t.name)))
                    .with_error_code(t.error_code)
                    .with_error_message(t.error_message.map(StrBytes::from_string));
                if version >= 5 && t.error_code == 0 {
                    result = result
                        .with_num_partitions(t.num_partitions)
                        .with_replication_factor(1);
                }
                if version >= 7 {
                    result = result.with_topic_id(uuid::Uuid::from_bytes(t.topic_id));
                }
                result
            })
            .collect(),
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicsRequest {
    /// By name, or (v6) by id when the name is null.
    pub topics: Vec<(Option<String>, [u8; 16])>,
    pub timeout_ms: i32,
}

pub fn decode_delete_topics(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<DeleteTopicsRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::DeleteTopics, version);
    let count = reader.array_len_v(flexible, "topics")?.unwrap_or(0);
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        if version >= 6 {
            let name = reader.nullable_string_v(flexible, "topic name")?;
            let id = reader.uuid("topic id")?;
            reader.tagged_fields_v(flexible)?;
            topics.push((name.map(str::to_string), id));
        } else {
            let name = reader.string_v(flexible, "topic name")?.to_string();
            topics.push((Some(name), [0; 16]));
        }
    }
    let timeout_ms = reader.i32("timeout")?;
    reader.tagged_fields_v(flexible)?;
    Ok(DeleteTopicsRequest { topics, timeout_ms })
}

pub fn delete_topics_response(
    version: i16,
    results: Vec<(String, [u8; 16], i16)>,
) -> DeleteTopicsResponse {
    DeleteTopicsResponse::default().with_responses(
        results
            .into_iter()
            .map(|(name, id, error_code)| {
                let mut result = DeletableTopicResult::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                    .with_error_code(error_code);
                if version >= 6 {
                    result = result.with_topic_id(uuid::Uuid::from_bytes(id));
                }
                result
            })
            .collect(),
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePartitionsRequest {
    /// (topic, new total partition count)
    pub topics: Vec<(String, i32)>,
    pub timeout_ms: i32,
    pub validate_only: bool,
}

pub fn decode_create_partitions(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<CreatePartitionsRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::CreatePartitions, version);
    let count = reader.array_len_v(flexible, "topics")?.unwrap_or(0);
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let name = reader.string_v(flexible, "topic name")?.to_string();
        let total = reader.i32("count")?;
        if let Some(n) = reader.array_len_v(flexible, "assignments")? {
            for _ in 0..n {
                reader.int32s_v(flexible, "broker ids")?;
                reader.tagged_fields_v(flexible)?;
            }
        }
        reader.tagged_fields_v(flexible)?;
        topics.push((name, total));
    }
    let timeout_ms = reader.i32("timeout")?;
    let validate_only = reader.bool("validate only")?;
    reader.tagged_fields_v(flexible)?;
    Ok(CreatePartitionsRequest {
        topics,
        timeout_ms,
        validate_only,
    })
}

pub fn create_partitions_response(
    results: Vec<(String, i16, Option<String>)>,
) -> CreatePartitionsResponse {
    CreatePartitionsResponse::default().with_results(
        results
            .into_iter()
            .map(|(name, error_code, message)| {
                CreatePartitionsTopicResult::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_error_code(error_code)
                    .with_error_message(message.map(StrBytes::from_string))
            })
            .collect(),
    )
}
