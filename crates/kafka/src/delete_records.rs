//! DeleteRecords (21) v0–v2: raise partitions' log start offsets.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

/// An offset of -1 asks to delete up to the high watermark.
pub const HIGH_WATERMARK: i64 = -1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRecordsRequest {
    /// (topic, [(partition, offset)])
    pub topics: Vec<(String, Vec<(i32, i64)>)>,
    pub timeout_ms: i32,
}

pub fn decode(reader: &mut Reader<'_>, version: i16) -> Result<DeleteRecordsRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::DeleteRecords, version);
    let count = reader.array_len_v(flexible, "topics")?.unwrap_or(0);
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let name = reader.string_v(flexible, "topic name")?.to_string();
        let n = reader.array_len_v(flexible, "partitions")?.unwrap_or(0);
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            let index = reader.i32("partition")?;
            let offset = reader.i64("offset")?;
            reader.tagged_fields_v(flexible)?;
            partitions.push((index, offset));
        }
        reader.tagged_fields_v(flexible)?;
        topics.push((name, partitions));
    }
    let timeout_ms = reader.i32("timeout")?;
    reader.tagged_fields_v(flexible)?;
    Ok(DeleteRecordsRequest { topics, timeout_ms })
}

/// (partition, low watermark, error code)
pub type PartitionDeleted = (i32, i64, i16);

pub fn response(topics: Vec<(String, Vec<PartitionDeleted>)>) -> DeleteRecordsResponse {
    DeleteRecordsResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                DeleteRecordsTopicResult::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, low, code)| {
                                DeleteRecordsPartitionResult::default()
                                    .with_partition_index(index)
                                    .with_low_watermark(low)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
