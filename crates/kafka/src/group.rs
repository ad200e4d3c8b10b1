//! Group membership: JoinGroup (11) v0–v9, SyncGroup (14) v0–v5, Heartbeat (12) v0–v4,
//! LeaveGroup (13) v0–v5.

use bytes::Bytes;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

/// The generation of a member that is not in a generation (yet): OffsetCommit from a client
/// outside any group, a join before the first generation.
pub const NO_GENERATION: i32 = -1;
/// The member id a member sends before the coordinator has given it one.
pub const NO_MEMBER_ID: &str = "";

fn nullable(
    reader: &mut Reader<'_>,
    flexible: bool,
    what: &'static str,
) -> Result<Option<String>, DecodeError> {
    Ok(reader
        .nullable_string_v(flexible, what)?
        .map(str::to_string))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupRequest {
    pub group_id: String,
    pub session_timeout_ms: i32,
    /// v0 has none: the session timeout stands in, as in Kafka.
    pub rebalance_timeout_ms: i32,
    pub member_id: String,
    /// Static membership (v5+).
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    /// (protocol name, its metadata), in the member's order of preference.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// Why the member (re)joins (v8+).
    pub reason: Option<String>,
}

pub fn decode_join(reader: &mut Reader<'_>, version: i16) -> Result<JoinGroupRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::JoinGroup, version);
    let group_id = reader.string_v(flexible, "group id")?.to_string();
    let session_timeout_ms = reader.i32("session timeout")?;
    let rebalance_timeout_ms = if version >= 1 {
        reader.i32("rebalance timeout")?
    } else {
        session_timeout_ms
    };
    let member_id = reader.string_v(flexible, "member id")?.to_string();
    let group_instance_id = if version >= 5 {
        nullable(reader, flexible, "group instance id")?
    } else {
        None
    };
    let protocol_type = reader.string_v(flexible, "protocol type")?.to_string();
    let count = reader.array_len_v(flexible, "protocols")?.unwrap_or(0);
    let mut protocols = Vec::with_capacity(count);
    for _ in 0..count {
        let name = reader.string_v(flexible, "protocol name")?.to_string();
        let metadata = reader.bytes_v(flexible, "protocol metadata")?.to_vec();
        reader.tagged_fields_v(flexible)?;
        protocols.push((name, metadata));
    }
    let reason = if version >= 8 {
        nullable(reader, flexible, "reason")?
    } else {
        None
    };
    reader.tagged_fields_v(flexible)?;
    Ok(JoinGroupRequest {
        group_id,
        session_timeout_ms,
        rebalance_timeout_ms,
        member_id,
        group_instance_id,
        protocol_type,
        protocols,
        reason,
    })
}

/// A member as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    /// Sent from v5.
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupResult {
    pub error_code: i16,
    pub generation_id: i32,
    /// Sent from v7.
    pub protocol_type: Option<String>,
    /// The chosen protocol; None (on an error) is sent as "" before v7, where it cannot be null.
    pub protocol_name: Option<String>,
    pub leader: String,
    /// v9+: the leader is a static member rejoining and must not assign again (KIP-814).
    pub skip_assignment: bool,
    pub member_id: String,
    /// Every member with its metadata for the leader; empty for the others.
    pub members: Vec<JoinedMember>,
}

pub fn join_response(version: i16, result: JoinGroupResult) -> JoinGroupResponse {
    let protocol_name = match result.protocol_name {
        None if version < 7 => Some(StrBytes::default()),
        name => name.map(StrBytes::from_string),
    };
    let mut response = JoinGroupResponse::default()
        .with_error_code(result.error_code)
        .with_generation_id(result.generation_id)
        .with_protocol_name(protocol_name)
        .with_leader(StrBytes::from_string(result.leader))
        .with_member_id(StrBytes::from_string(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|m| {
                    let member = JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_metadata(m.metadata);
                    if version >= 5 {
                        member
                            .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                    } else {
                        member
                    }
                })
                .collect(),
        );
    if version >= 7 {
        response = response.with_protocol_type(result.protocol_type.map(StrBytes::from_string));
    }
    if version >= 9 {
        response = response.with_skip_assignment(result.skip_assignment);
    }
    response
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    /// v3+.
    pub group_instance_id: Option<String>,
    /// v5+: to be checked against the group's.
    pub protocol_type: Option<String>,
    /// v5+: to be checked against the group's.
    pub protocol_name: Option<String>,
    /// The leader's (member id, assignment); empty from the other members.
    pub assignments: Vec<(String, Vec<u8>)>,
}

pub fn decode_sync(reader: &mut Reader<'_>, version: i16) -> Result<SyncGroupRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::SyncGroup, version);
    let group_id = reader.string_v(flexible, "group id")?.to_string();
    let generation_id = reader.i32("generation id")?;
    let member_id = reader.string_v(flexible, "member id")?.to_string();
    let group_instance_id = if version >= 3 {
        nullable(reader, flexible, "group instance id")?
    } else {
        None
    };
    let (protocol_type, protocol_name) = if version >= 5 {
        (
            nullable(reader, flexible, "protocol type")?,
            nullable(reader, flexible, "protocol name")?,
        )
    } else {
        (None, None)
    };
    let count = reader.array_len_v(flexible, "assignments")?.unwrap_or(0);
    let mut assignments = Vec::with_capacity(count);
    for _ in 0..count {
        let member = reader.string_v(flexible, "member id")?.to_string();
        let assignment = reader.bytes_v(flexible, "assignment")?.to_vec();
        reader.tagged_fields_v(flexible)?;
        assignments.push((member, assignment));
    }
    reader.tagged_fields_v(flexible)?;
    Ok(SyncGroupRequest {
        group_id,
        generation_id,
        member_id,
        group_instance_id,
        protocol_type,
        protocol_name,
        assignments,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupResult {
    pub error_code: i16,
    /// Sent from v5.
    pub protocol_type: Option<String>,
    /// Sent from v5.
    pub protocol_name: Option<String>,
    /// This member's assignment.
    pub assignment: Bytes,
}

pub fn sync_response(version: i16, result: SyncGroupResult) -> SyncGroupResponse {
    let response = SyncGroupResponse::default()
        .with_error_code(result.error_code)
        .with_assignment(result.assignment);
    if version >= 5 {
        response
            .with_protocol_type(result.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(result.protocol_name.map(StrBytes::from_string))
    } else {
        response
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    /// v3+.
    pub group_instance_id: Option<String>,
}

pub fn decode_heartbeat(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<HeartbeatRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::Heartbeat, version);
    let group_id = reader.string_v(flexible, "group id")?.to_string();
    let generation_id = reader.i32("generation id")?;
    let member_id = reader.string_v(flexible, "member id")?.to_string();
    let group_instance_id = if version >= 3 {
        nullable(reader, flexible, "group instance id")?
    } else {
        None
    };
    reader.tagged_fields_v(flexible)?;
    Ok(HeartbeatRequest {
        group_id,
        generation_id,
        member_id,
        group_instance_id,
    })
}

pub fn heartbeat_response(error_code: i16) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(error_code)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    /// v3+.
    pub group_instance_id: Option<String>,
    /// v5+.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupRequest {
    pub group_id: String,
    /// One member before v3 (the sender), a batch from v3.
    pub members: Vec<LeavingMember>,
}

pub fn decode_leave(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<LeaveGroupRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::LeaveGroup, version);
    let group_id = reader.string_v(flexible, "group id")?.to_string();
    let members = if version <= 2 {
        vec![LeavingMember {
            member_id: reader.string("member id")?.to_string(),
            group_instance_id: None,
            reason: None,
        }]
    } else {
        let count = reader.array_len_v(flexible, "members")?.unwrap_or(0);
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let member_id = reader.string_v(flexible, "member id")?.to_string();
            let group_instance_id = nullable(reader, flexible, "group instance id")?;
            let reason = if version >= 5 {
                nullable(reader, flexible, "reason")?
            } else {
                None
            };
            reader.tagged_fields_v(flexible)?;
            members.push(LeavingMember {
                member_id,
                group_instance_id,
                reason,
            });
        }
        members
    };
    reader.tagged_fields_v(flexible)?;
    Ok(LeaveGroupRequest { group_id, members })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLeft {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error_code: i16,
}

/// The response at `version`. Before v3 there is only the top-level error: when `error_code`
/// is NONE the first member's error takes its place, as Kafka does.
pub fn leave_response(
    version: i16,
    error_code: i16,
    members: Vec<MemberLeft>,
) -> LeaveGroupResponse {
    if version < 3 {
        let code = match (error_code, members.first()) {
            (0, Some(member)) => member.error_code,
            _ => error_code,
        };
        return LeaveGroupResponse::default().with_error_code(code);
    }
    LeaveGroupResponse::default()
        .with_error_code(error_code)
        .with_members(
            members
                .into_iter()
                .map(|m| {
                    MemberResponse::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                        .with_error_code(m.error_code)
                })
                .collect(),
        )
}

/// The topic partitions in a consumer-protocol assignment (what a "consumer" group's leader
/// hands each member in SyncGroup): `version i16, [topic string, [partition i32]], user_data`.
/// The bytes come from a client: `None` if they do not read as one.
pub fn consumer_assignment(bytes: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut reader = Reader::new(bytes);
    reader.i16("version").ok()?;
    let topics = reader.array_len("topics").ok()?.unwrap_or(0);
    let mut out = Vec::new();
    for _ in 0..topics {
        let topic = reader.string("topic").ok()?.to_string();
        let count = reader.array_len("partitions").ok()?.unwrap_or(0);
        let mut partitions = Vec::new();
        for _ in 0..count {
            partitions.push(reader.i32("partition").ok()?);
        }
        out.push((topic, partitions));
    }
    Some(out)
}

/// A consumer-protocol subscription (version 0): what a "consumer" member sends in JoinGroup
/// as its metadata: `version i16, [topic string], user_data bytes (null)`.
pub fn consumer_subscription(topics: &[String]) -> Vec<u8> {
    let mut out = 0i16.to_be_bytes().to_vec();
    out.extend((topics.len() as i32).to_be_bytes());
    for topic in topics {
        out.extend((topic.len() as i16).to_be_bytes());
        out.extend(topic.as_bytes());
    }
    out.extend((-1i32).to_be_bytes());
    out
}

/// The topics of a consumer-protocol subscription (any version: later versions only add
/// fields after these). The bytes come from a client: `None` if they do not read as one.
pub fn consumer_subscription_topics(bytes: &[u8]) -> Option<Vec<String>> {
    let mut reader = Reader::new(bytes);
    reader.i16("version").ok()?;
    let topics = reader.array_len("topics").ok()?.unwrap_or(0);
    (0..topics)
        .map(|_| reader.string("topic").ok().map(str::to_string))
        .collect()
}

/// A consumer-protocol assignment (version 0), as a group leader hands it to a member.
pub fn encode_consumer_assignment(assigned: &[(String, Vec<i32>)]) -> Vec<u8> {
    let mut out = 0i16.to_be_bytes().to_vec();
    out.extend((assigned.len() as i32).to_be_bytes());
    for (topic, partitions) in assigned {
        out.extend((topic.len() as i16).to_be_bytes());
        out.extend(topic.as_bytes());
        out.extend((partitions.len() as i32).to_be_bytes());
        for p in partitions {
            out.extend(p.to_be_bytes());
        }
    }
    out.extend((-1i32).to_be_bytes());
    out
}

#[cfg(test)]
mod assignment_tests {
    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let topics = vec!["orders".to_string(), "refunds".to_string()];
        let bytes = super::consumer_subscription(&topics);
        assert_eq!(super::consumer_subscription_topics(&bytes), Some(topics));
        assert_eq!(super::consumer_subscription_topics(&bytes[..5]), None);
        let assigned = vec![("orders".to_string(), vec![0, 2])];
        let bytes = super::encode_consumer_assignment(&assigned);
        assert_eq!(super::consumer_assignment(&bytes), Some(assigned));
    }

    #[test]
    fn a_consumer_assignment_reads_and_garbage_does_not() {
        let mut bytes = vec![0, 1, 0, 0, 0, 1, 0, 6];
        bytes.extend(b"orders");
        bytes.extend([0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            super::consumer_assignment(&bytes),
            Some(vec![("orders".to_string(), vec![0, 3])])
        );
        assert_eq!(super::consumer_assignment(&[]), Some(vec![]));
        for cut in 1..bytes.len() - 4 {
            assert_eq!(super::consumer_assignment(&bytes[..cut]), None, "cut {cut}");
        }
        assert_eq!(
            super::consumer_assignment(&[0, 1, 0x7f, 0xff, 0xff, 0xff]),
            None
        );
    }
}
