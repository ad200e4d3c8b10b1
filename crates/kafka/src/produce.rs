//! Produce (key 0), v3–v12 (topics by name). Records are not copied here: the request says
//! where each partition's record batches lie in the frame.

use std::ops::Range;

use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    pub index: i32,
    /// Byte range of the partition's record batches in the request frame; None when null.
    pub records: Option<Range<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopic {
    pub name: String,
    pub partitions: Vec<ProducePartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub transactional_id: Option<String>,
    pub acks: i16,
    pub timeout_ms: i32,
    pub topics: Vec<ProduceTopic>,
}

pub fn decode(reader: &mut Reader<'_>, version: i16) -> Result<ProduceRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::Produce, version);
    let transactional_id = reader
        .nullable_string_v(flexible, "transactional id")?
        .map(str::to_string);
    let acks = reader.i16("acks")?;
    let timeout_ms = reader.i32("timeout")?;
    let topics = reader
        .topics(flexible, |reader| {
            let index = reader.i32("partition")?;
            let len = if flexible {
                reader.compact_array_len("records")?
            } else {
                reader.array_len("records")?
            };
            let records = match len {
                None => None,
                Some(len) => {
                    let start = reader.position();
                    reader.skip(len, "records")?;
                    Some(start..start + len)
                }
            };
            Ok(ProducePartition { index, records })
        })?
        .into_iter()
        .map(|(name, partitions)| ProduceTopic { name, partitions })
        .collect();
    reader.tagged_fields_v(flexible)?;
    Ok(ProduceRequest {
        transactional_id,
        acks,
        timeout_ms,
        topics,
    })
}

/// The outcome for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionResult {
    pub index: i32,
    pub error_code: i16,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    pub error_message: Option<String>,
}

pub fn response(topics: Vec<(String, Vec<PartitionResult>)>) -> ProduceResponse {
    ProduceResponse::default().with_responses(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_responses(
                        partitions
                            .into_iter()
                            .map(|p| {
                                PartitionProduceResponse::default()
                                    .with_index(p.index)
                                    .with_error_code(p.error_code)
                                    .with_base_offset(p.base_offset)
                                    .with_log_append_time_ms(p.log_append_time_ms)
                                    .with_log_start_offset(p.log_start_offset)
                                    .with_error_message(p.error_message.map(StrBytes::from_string))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
