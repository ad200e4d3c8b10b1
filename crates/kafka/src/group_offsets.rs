//! Committed offsets of groups: OffsetCommit (8) v2–v8, OffsetFetch (9) v1–v8, OffsetDelete
//! (47) v0.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{ApiKey, GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

/// The offset OffsetFetch answers for a partition without a committed offset.
pub const NO_OFFSET: i64 = -1;
/// A leader epoch that is not known (or not sent at the request's version).
pub const NO_LEADER_EPOCH: i32 = -1;
/// The retention of an OffsetCommit v2–v4 that leaves it to the broker (and of every v5+).
pub const DEFAULT_RETENTION: i64 = -1;

/// (partition, error code): the per-partition answer of OffsetCommit and OffsetDelete.
pub type PartitionError = (i32, i16);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPartition {
    pub index: i32,
    pub offset: i64,
    /// v6+; [`NO_LEADER_EPOCH`] before.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    pub group_id: String,
    /// [`crate::group::NO_GENERATION`] from a client committing outside a group.
    pub generation_id: i32,
    /// "" from a client committing outside a group.
    pub member_id: String,
    /// v7+.
    pub group_instance_id: Option<String>,
    /// v2–v4 only; [`DEFAULT_RETENTION`] otherwise.
    pub retention_time_ms: i64,
    pub topics: Vec<(String, Vec<CommitPartition>)>,
}

pub fn decode_commit(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<OffsetCommitRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::OffsetCommit, version);
    let group_id = reader.string_v(flexible, "group id")?.to_string();
    let generation_id = reader.i32("generation id")?;
    let member_id = reader.string_v(flexible, "member id")?.to_string();
    let group_instance_id = if version >= 7 {
        reader
            .nullable_string_v(flexible, "group instance id")?
            .map(str::to_string)
    } else {
        None
    };
    let retention_time_ms = if version <= 4 {
        reader.i64("retention time")?
    } else {
        DEFAULT_RETENTION
    };
    let topics = reader.topics(flexible, |reader| {
        let index = reader.i32("partition")?;
        let offset = reader.i64("committed offset")?;
        let leader_epoch = if version >= 6 {
            reader.i32("committed leader epoch")?
        } else {
            NO_LEADER_EPOCH
        };
        let metadata = reader
            .nullable_string_v(flexible, "committed metadata")?
            .map(str::to_string);
        Ok(CommitPartition {
            index,
            offset,
            leader_epoch,
            metadata,
        })
    })?;
    reader.tagged_fields_v(flexible)?;
    Ok(OffsetCommitRequest {
        group_id,
        generation_id,
        member_id,
        group_instance_id,
        retention_time_ms,
        topics,
    })
}

pub fn commit_response(topics: Vec<(String, Vec<PartitionError>)>) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                OffsetCommitResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, code)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// The topics of one group to fetch: None for all the group has offsets for.
pub type FetchTopics = Option<Vec<(String, Vec<i32>)>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    /// (group id, topics): one group before v8, a batch from v8.
    pub groups: Vec<(String, FetchTopics)>,
    /// v7+: answer UNSTABLE_OFFSET_COMMIT for partitions with pending transactional commits.
    pub require_stable: bool,
}

/// `[name, [partition]]`, nullable; partitions carry no tagged fields of their own.
fn fetch_topics(reader: &mut Reader<'_>, flexible: bool) -> Result<FetchTopics, DecodeError> {
    let Some(count) = reader.array_len_v(flexible, "topics")? else {
        return Ok(None);
    };
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let name = reader.string_v(flexible, "topic name")?.to_string();
        let partitions = reader.int32s_v(flexible, "partition indexes")?;
        reader.tagged_fields_v(flexible)?;
        topics.push((name, partitions));
    }
    Ok(Some(topics))
}

pub fn decode_fetch(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<OffsetFetchRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::OffsetFetch, version);
    let groups = if version <= 7 {
        let group_id = reader.string_v(flexible, "group id")?.to_string();
        let topics = fetch_topics(reader, flexible)?;
        if topics.is_none() && version < 2 {
            return Err(DecodeError::Invalid {
                what: "topics",
                reason: "null in OffsetFetch v1",
            });
        }
        vec![(group_id, topics)]
    } else {
        let count = reader.array_len_v(flexible, "groups")?.unwrap_or(0);
        let mut groups = Vec::with_capacity(count);
        for _ in 0..count {
            let group_id = reader.string_v(flexible, "group id")?.to_string();
            let topics = fetch_topics(reader, flexible)?;
            reader.tagged_fields_v(flexible)?;
            groups.push((group_id, topics));
        }
        groups
    };
    let require_stable = if version >= 7 {
        reader.bool("require stable")?
    } else {
        false
    };
    reader.tagged_fields_v(flexible)?;
    Ok(OffsetFetchRequest {
        groups,
        require_stable,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub index: i32,
    /// [`NO_OFFSET`] when nothing is committed.
    pub offset: i64,
    /// Sent from v5.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub error_code: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedGroup {
    pub group_id: String,
    pub error_code: i16,
    pub topics: Vec<(String, Vec<FetchedOffset>)>,
}

/// The response at `version`: v8 lists every group; v1–v7 answer the first group in the
/// top-level fields. v1 has no group-level error code, so there (as in Kafka) a group error
/// is reported on every partition that has none of its own.
pub fn fetch_response(version: i16, groups: Vec<FetchedGroup>) -> OffsetFetchResponse {
    let response = OffsetFetchResponse::default();
    if version >= 8 {
        return response.with_groups(groups.into_iter().map(batched_group).collect());
    }
    let Some(group) = groups.into_iter().next() else {
        return response;
    };
    let group_error = group.error_code;
    let topics = group
        .topics
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            let error_code = if version < 2 && p.error_code == 0 {
                                group_error
                            } else {
                                p.error_code
                            };
                            let partition = OffsetFetchResponsePartition::default()
                                .with_partition_index(p.index)
                                .with_committed_offset(p.offset)
                                .with_metadata(p.metadata.map(StrBytes::from_string))
                                .with_error_code(error_code);
                            if version >= 5 {
                                partition.with_committed_leader_epoch(p.leader_epoch)
                            } else {
                                partition
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    let response = response.with_topics(topics);
    if version >= 2 {
        response.with_error_code(group_error)
    } else {
        response
    }
}

/// One group of an OffsetFetch v8 response.
fn batched_group(group: FetchedGroup) -> OffsetFetchResponseGroup {
    let topics = group
        .topics
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopics::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(p.index)
                                .with_committed_offset(p.offset)
                                .with_committed_leader_epoch(p.leader_epoch)
                                .with_metadata(p.metadata.map(StrBytes::from_string))
                                .with_error_code(p.error_code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponseGroup::default()
        .with_group_id(GroupId(StrBytes::from_string(group.group_id)))
        .with_error_code(group.error_code)
        .with_topics(topics)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDeleteRequest {
    pub group_id: String,
    /// (topic, [partition])
    pub topics: Vec<(String, Vec<i32>)>,
}

pub fn decode_delete(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<OffsetDeleteRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::OffsetDelete, version);
    let group_id = reader.string_v(flexible, "group id")?.to_string();
    let topics = reader.topics(flexible, |reader| reader.i32("partition"))?;
    reader.tagged_fields_v(flexible)?;
    Ok(OffsetDeleteRequest { group_id, topics })
}

/// `error_code` is the group's (e.g. GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP); the partitions
/// carry their own (e.g. GROUP_SUBSCRIBED_TO_TOPIC).
pub fn delete_response(
    error_code: i16,
    topics: Vec<(String, Vec<PartitionError>)>,
) -> OffsetDeleteResponse {
    OffsetDeleteResponse::default()
        .with_error_code(error_code)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, code)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}
