//! Metadata (key 3), v0–v12.

use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

/// A topic a Metadata request names: by name, or (v10+) by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRef {
    pub name: Option<String>,
    pub topic_id: [u8; 16],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRequest {
    /// None: all topics.
    pub topics: Option<Vec<TopicRef>>,
    pub allow_auto_topic_creation: bool,
}

pub fn decode(reader: &mut Reader<'_>, version: i16) -> Result<MetadataRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::Metadata, version);
    let count = reader.array_len_v(flexible, "topics")?;
    let topics = match count {
        // v0 has no null: an empty array means all topics.
        Some(0) if version == 0 => None,
        None if version == 0 => {
            return Err(DecodeError::Invalid {
                what: "topics",
                reason: "null in Metadata v0",
            })
        }
        None => None,
        Some(n) => {
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let topic_id = if version >= 10 {
                    reader.uuid("topic id")?
                } else {
                    [0; 16]
                };
                let name = if version >= 10 {
                    reader.nullable_string_v(flexible, "topic name")?
                } else {
                    Some(reader.string_v(flexible, "topic name")?)
                };
                reader.tagged_fields_v(flexible)?;
                topics.push(TopicRef {
                    name: name.map(str::to_string),
                    topic_id,
                });
            }
            Some(topics)
        }
    };
    let allow_auto_topic_creation = if version >= 4 {
        reader.bool("allow auto topic creation")?
    } else {
        true
    };
    if (8..=10).contains(&version) {
        reader.bool("include cluster authorized operations")?;
    }
    if version >= 8 {
        reader.bool("include topic authorized operations")?;
    }
    reader.tagged_fields_v(flexible)?;
    Ok(MetadataRequest {
        topics,
        allow_auto_topic_creation,
    })
}

/// The one broker of a single-node cluster, as Metadata advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub index: i32,
    pub error_code: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: [u8; 16],
    pub error_code: i16,
    pub partitions: Vec<PartitionInfo>,
}

/// Builds the response: every partition led by `node`, which is also the controller.
pub fn response(node: &Node, cluster_id: &str, topics: &[TopicInfo]) -> MetadataResponse {
    let leader = BrokerId(node.node_id);
    let topics = topics
        .iter()
        .map(|t| {
            MetadataResponseTopic::default()
                .with_error_code(t.error_code)
                .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
                .with_topic_id(uuid_of(t.topic_id))
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_error_code(p.error_code)
                                .with_partition_index(p.index)
                                .with_leader_id(leader)
                                .with_leader_epoch(0)
                                .with_replica_nodes(vec![leader])
                                .with_isr_nodes(vec![leader])
                        })
                        .collect(),
                )
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(leader)
            .with_host(StrBytes::from_string(node.host.clone()))
            .with_port(node.port)])
        .with_cluster_id(Some(StrBytes::from_string(cluster_id.to_string())))
        .with_controller_id(leader)
        .with_topics(topics)
}

fn uuid_of(bytes: [u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(bytes)
}
