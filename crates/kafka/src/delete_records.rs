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
    let topics = reader.topics(flexible, |reader| {
        Ok((reader.i32("partition")?, reader.i64("offset")?))
    })?;
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
