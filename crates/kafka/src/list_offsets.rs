//! ListOffsets (key 2), v1–v7: earliest (-2), latest (-1), max timestamp (-3), or by time.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    pub isolation_level: i8,
    /// (topic, [(partition, timestamp)])
    pub topics: Vec<(String, Vec<(i32, i64)>)>,
}

pub fn decode(reader: &mut Reader<'_>, version: i16) -> Result<ListOffsetsRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::ListOffsets, version);
    reader.i32("replica id")?;
    let isolation_level = if version >= 2 {
        reader.i8("isolation level")?
    } else {
        0
    };
    let topics = reader.topics(flexible, |reader| {
        let index = reader.i32("partition")?;
        if version >= 4 {
            reader.i32("current leader epoch")?;
        }
        Ok((index, reader.i64("timestamp")?))
    })?;
    reader.tagged_fields_v(flexible)?;
    Ok(ListOffsetsRequest {
        isolation_level,
        topics,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFound {
    pub index: i32,
    pub error_code: i16,
    pub timestamp: i64,
    pub offset: i64,
}

/// The response at `version`: the leader epoch exists from v4 only.
pub fn response(version: i16, topics: Vec<(String, Vec<OffsetFound>)>) -> ListOffsetsResponse {
    let leader_epoch = if version >= 4 { 0 } else { -1 };
    ListOffsetsResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                ListOffsetsTopicResponse::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|p| {
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p.index)
                                    .with_error_code(p.error_code)
                                    .with_timestamp(p.timestamp)
                                    .with_offset(p.offset)
                                    .with_leader_epoch(leader_epoch)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
