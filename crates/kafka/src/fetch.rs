//! Fetch (key 1), v4–v12 (topics by name), sessionless: every request names all it wants, and
//! responses carry session id 0, which tells clients that no session was created.

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub index: i32,
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopic {
    pub name: String,
    pub partitions: Vec<FetchPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub isolation_level: i8,
    pub topics: Vec<FetchTopic>,
}

pub fn decode(reader: &mut Reader<'_>, version: i16) -> Result<FetchRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::Fetch, version);
    reader.i32("replica id")?;
    let max_wait_ms = reader.i32("max wait")?;
    let min_bytes = reader.i32("min bytes")?;
    let max_bytes = reader.i32("max bytes")?;
    let isolation_level = reader.i8("isolation level")?;
    if version >= 7 {
        reader.i32("session id")?;
        reader.i32("session epoch")?;
    }
    let topics = reader
        .topics(flexible, |reader| {
            let index = reader.i32("partition")?;
            if version >= 9 {
                reader.i32("current leader epoch")?;
            }
            let fetch_offset = reader.i64("fetch offset")?;
            if version >= 12 {
                reader.i32("last fetched epoch")?;
            }
            if version >= 5 {
                reader.i64("log start offset")?;
            }
            let partition_max_bytes = reader.i32("partition max bytes")?;
            Ok(FetchPartition {
                index,
                fetch_offset,
                partition_max_bytes,
            })
        })?
        .into_iter()
        .map(|(name, partitions)| FetchTopic { name, partitions })
        .collect();
    if version >= 7 {
        // Forgotten topics only matter to sessions, which Weir does not keep.
        let count = reader
            .array_len_v(flexible, "forgotten topics")?
            .unwrap_or(0);
        for _ in 0..count {
            reader.string_v(flexible, "forgotten topic")?;
            let partitions = reader
                .array_len_v(flexible, "forgotten partitions")?
                .unwrap_or(0);
            for _ in 0..partitions {
                reader.i32("forgotten partition")?;
            }
            reader.tagged_fields_v(flexible)?;
        }
    }
    if version >= 11 {
        reader.string_v(flexible, "rack id")?;
    }
    reader.tagged_fields_v(flexible)?;
    Ok(FetchRequest {
        max_wait_ms,
        min_bytes,
        max_bytes,
        isolation_level,
        topics,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
}

pub fn response(topics: Vec<(String, Vec<FetchedPartition>)>) -> FetchResponse {
    FetchResponse::default().with_responses(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(name)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.index)
                                    .with_error_code(p.error_code)
                                    .with_high_watermark(p.high_watermark)
                                    .with_last_stable_offset(p.high_watermark)
                                    .with_log_start_offset(p.log_start_offset)
                                    .with_aborted_transactions(Some(Vec::new()))
                                    .with_records(Some(p.records))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
