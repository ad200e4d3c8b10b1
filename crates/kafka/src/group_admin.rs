//! Group administration: ListGroups (16) v0–v4, DescribeGroups (15) v0–v5, DeleteGroups (42)
//! v0–v2.

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::{ApiKey, GroupId};
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

/// Kafka's names of a classic group's states, as ListGroups and DescribeGroups send them.
pub const STATE_EMPTY: &str = "Empty";
pub const STATE_PREPARING_REBALANCE: &str = "PreparingRebalance";
pub const STATE_COMPLETING_REBALANCE: &str = "CompletingRebalance";
pub const STATE_STABLE: &str = "Stable";
/// Also what DescribeGroups answers (with no error) for a group that does not exist.
pub const STATE_DEAD: &str = "Dead";

/// The operations a group supports (READ, DELETE, DESCRIBE as a bit field of Kafka's ACL
/// operation codes 3, 6, 8): all of them are allowed, since Weir has no authorizer.
pub const GROUP_AUTHORIZED_OPERATIONS: i32 = 1 << 3 | 1 << 6 | 1 << 8;
/// DescribeGroups v3+ when the operations were not asked for.
pub const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListGroupsRequest {
    /// v4+: only groups in these states; empty for all.
    pub states: Vec<String>,
}

pub fn decode_list(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<ListGroupsRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::ListGroups, version);
    let states = if version >= 4 {
        reader.strings_v(flexible, "states filter")?
    } else {
        Vec::new()
    };
    reader.tagged_fields_v(flexible)?;
    Ok(ListGroupsRequest { states })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    /// Sent from v4.
    pub state: String,
}

pub fn list_response(
    version: i16,
    error_code: i16,
    groups: Vec<GroupListing>,
) -> ListGroupsResponse {
    ListGroupsResponse::default()
        .with_error_code(error_code)
        .with_groups(
            groups
                .into_iter()
                .map(|g| {
                    let listed = ListedGroup::default()
                        .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                        .with_protocol_type(StrBytes::from_string(g.protocol_type));
                    if version >= 4 {
                        listed.with_group_state(StrBytes::from_string(g.state))
                    } else {
                        listed
                    }
                })
                .collect(),
        )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupsRequest {
    pub groups: Vec<String>,
    /// v3+.
    pub include_authorized_operations: bool,
}

pub fn decode_describe(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<DescribeGroupsRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::DescribeGroups, version);
    let groups = reader.strings_v(flexible, "groups")?;
    let include_authorized_operations = if version >= 3 {
        reader.bool("include authorized operations")?
    } else {
        false
    };
    reader.tagged_fields_v(flexible)?;
    Ok(DescribeGroupsRequest {
        groups,
        include_authorized_operations,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    /// Sent from v4.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub error_code: i16,
    pub group_id: String,
    /// One of the `STATE_*` names.
    pub state: String,
    pub protocol_type: String,
    /// The chosen protocol (the assignor for consumers); "" outside a generation.
    pub protocol_data: String,
    pub members: Vec<MemberDescription>,
}

/// The response at `version`; v3+ carries [`GROUP_AUTHORIZED_OPERATIONS`] when the request
/// asked for them.
pub fn describe_response(
    version: i16,
    groups: Vec<GroupDescription>,
    include_authorized_operations: bool,
) -> DescribeGroupsResponse {
    let authorized_operations = if version >= 3 && include_authorized_operations {
        GROUP_AUTHORIZED_OPERATIONS
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    DescribeGroupsResponse::default().with_groups(
        groups
            .into_iter()
            .map(|g| {
                DescribedGroup::default()
                    .with_error_code(g.error_code)
                    .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                    .with_group_state(StrBytes::from_string(g.state))
                    .with_protocol_type(StrBytes::from_string(g.protocol_type))
                    .with_protocol_data(StrBytes::from_string(g.protocol_data))
                    .with_authorized_operations(authorized_operations)
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|m| {
                                let member = DescribedGroupMember::default()
                                    .with_member_id(StrBytes::from_string(m.member_id))
                                    .with_client_id(StrBytes::from_string(m.client_id))
                                    .with_client_host(StrBytes::from_string(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment);
                                if version >= 4 {
                                    member.with_group_instance_id(
                                        m.group_instance_id.map(StrBytes::from_string),
                                    )
                                } else {
                                    member
                                }
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupsRequest {
    pub groups: Vec<String>,
}

pub fn decode_delete(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<DeleteGroupsRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::DeleteGroups, version);
    let groups = reader.strings_v(flexible, "groups")?;
    reader.tagged_fields_v(flexible)?;
    Ok(DeleteGroupsRequest { groups })
}

/// (group id, error code) per group.
pub fn delete_response(results: Vec<(String, i16)>) -> DeleteGroupsResponse {
    DeleteGroupsResponse::default().with_results(
        results
            .into_iter()
            .map(|(group_id, code)| {
                DeletableGroupResult::default()
                    .with_group_id(GroupId(StrBytes::from_string(group_id)))
                    .with_error_code(code)
            })
            .collect(),
    )
}
