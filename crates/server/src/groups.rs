//! The group APIs on the connection's side: each request goes to the shard coordinating its
//! group (see `coordinator`), and the answer is encoded at the request's version.

use std::sync::Arc;

use tokio::sync::oneshot;
use weir_broker::group::{JoinRequest, JoinResponse, SyncRequest, SyncResponse};
use weir_kafka::coordinator::{CoordinatorFound, FindCoordinatorRequest};
use weir_kafka::group::{
    HeartbeatRequest, JoinGroupRequest, JoinGroupResult, JoinedMember, LeaveGroupRequest,
    MemberLeft, SyncGroupRequest, SyncGroupResult,
};
use weir_kafka::group_admin::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupDescription, GroupListing, ListGroupsRequest,
    MemberDescription,
};
use weir_kafka::group_offsets::{
    FetchedGroup, FetchedOffset, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest,
};
use weir_kafka::{coordinator, error_code, group, group_admin, group_offsets, Response};

use crate::broker::Broker;
use crate::coordinator::{group_error_code, CommitPart, GroupMsg};
use crate::partition::ShardMsg;

/// Sends `msg` to the shard coordinating `group` and waits for the answer; `None` when that
/// shard is gone (shutdown).
pub(crate) async fn ask<T>(
    broker: &Broker,
    group: &str,
    msg: impl FnOnce(oneshot::Sender<T>) -> GroupMsg,
) -> Option<T> {
    let (reply, answer) = oneshot::channel();
    broker
        .group_mailbox(group)
        .send(ShardMsg::Group(msg(reply)))
        .await
        .ok()?;
    answer.await.ok()
}

pub(crate) fn find_coordinator(
    broker: &Broker,
    version: i16,
    request: FindCoordinatorRequest,
) -> Response {
    let node = broker.node();
    let found = request
        .keys
        .into_iter()
        .map(|key| {
            // A single node coordinates every group (and, later, every transactional id).
            let known_type = matches!(
                request.key_type,
                coordinator::KEY_TYPE_GROUP | coordinator::KEY_TYPE_TRANSACTION
            );
            let (error_code, error_message) = if !known_type {
                (
                    error_code::INVALID_REQUEST,
                    Some(format!("unknown coordinator key type {}", request.key_type)),
                )
            } else if key.is_empty() && request.key_type == coordinator::KEY_TYPE_GROUP {
                (error_code::INVALID_GROUP_ID, None)
            } else {
                (error_code::NONE, None)
            };
            CoordinatorFound {
                key,
                error_code,
                error_message,
                node_id: node.node_id,
                host: node.host.clone(),
                port: node.port,
            }
        })
        .collect();
    Response::FindCoordinator(coordinator::response(version, found))
}

pub(crate) async fn join(
    broker: &Arc<Broker>,
    version: i16,
    client_id: &str,
    client_host: &str,
    request: JoinGroupRequest,
) -> Response {
    let fail = |code| {
        let response = JoinResponse {
            member_id: request.member_id.clone(),
            ..JoinResponse::default()
        };
        (code, response)
    };
    let answer = if request.group_id.is_empty() {
        fail(error_code::INVALID_GROUP_ID)
    } else {
        let group = request.group_id.clone();
        let joining = JoinRequest {
            member_id: request.member_id.clone(),
            group_instance_id: request.group_instance_id.clone(),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            session_timeout_ms: request.session_timeout_ms.max(0) as u64,
            rebalance_timeout_ms: request.rebalance_timeout_ms.max(0) as u64,
            protocol_type: request.protocol_type.clone(),
            protocols: request.protocols.clone(),
            require_known_member_id: version >= 4,
        };
        match ask(broker, &group, |reply| GroupMsg::Join {
            group: group.clone(),
            request: joining,
            reply,
        })
        .await
        {
            Some(response) => response.coded(),
            None => fail(error_code::COORDINATOR_NOT_AVAILABLE),
        }
    };
    let (code, response) = answer;
    Response::JoinGroup(group::join_response(
        version,
        JoinGroupResult {
            error_code: code,
            generation_id: if code == error_code::NONE {
                response.generation_id
            } else {
                -1
            },
            protocol_type: response.protocol_type,
            protocol_name: response.protocol_name,
            leader: response.leader,
            skip_assignment: false,
            member_id: response.member_id,
            members: response
                .members
                .into_iter()
                .map(|m| JoinedMember {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    metadata: m.metadata.into(),
                })
                .collect(),
        },
    ))
}

/// A coordinator answer with its error mapped to Kafka's code.
trait Coded: Sized {
    fn coded(self) -> (i16, Self);
}

impl Coded for JoinResponse {
    fn coded(self) -> (i16, JoinResponse) {
        (self.error.map_or(error_code::NONE, group_error_code), self)
    }
}

impl Coded for SyncResponse {
    fn coded(self) -> (i16, SyncResponse) {
        (self.error.map_or(error_code::NONE, group_error_code), self)
    }
}

pub(crate) async fn sync(
    broker: &Arc<Broker>,
    version: i16,
    request: SyncGroupRequest,
) -> Response {
    let group = request.group_id.clone();
    let syncing = SyncRequest {
        generation_id: request.generation_id,
        member_id: request.member_id,
        group_instance_id: request.group_instance_id,
        protocol_type: request.protocol_type,
        protocol_name: request.protocol_name,
        assignments: request.assignments,
    };
    let (code, response) = if group.is_empty() {
        (error_code::INVALID_GROUP_ID, SyncResponse::default())
    } else {
        match ask(broker, &group, |reply| GroupMsg::Sync {
            group: group.clone(),
            request: syncing,
            reply,
        })
        .await
        {
            Some(response) => response.coded(),
            None => (
                error_code::COORDINATOR_NOT_AVAILABLE,
                SyncResponse::default(),
            ),
        }
    };
    Response::SyncGroup(group::sync_response(
        version,
        SyncGroupResult {
            error_code: code,
            protocol_type: response.protocol_type,
            protocol_name: response.protocol_name,
            assignment: response.assignment.into(),
        },
    ))
}

pub(crate) async fn heartbeat(broker: &Arc<Broker>, request: HeartbeatRequest) -> Response {
    let group = request.group_id.clone();
    let code = if group.is_empty() {
        error_code::INVALID_GROUP_ID
    } else {
        ask(broker, &group, |reply| GroupMsg::Heartbeat {
            group: group.clone(),
            member_id: request.member_id,
            instance_id: request.group_instance_id,
            generation: request.generation_id,
            reply,
        })
        .await
        .unwrap_or(error_code::COORDINATOR_NOT_AVAILABLE)
    };
    Response::Heartbeat(group::heartbeat_response(code))
}

pub(crate) async fn leave(
    broker: &Arc<Broker>,
    version: i16,
    request: LeaveGroupRequest,
) -> Response {
    let group = request.group_id.clone();
    let members: Vec<(String, Option<String>)> = request
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
        .collect();
    let (code, codes) = if group.is_empty() {
        (error_code::INVALID_GROUP_ID, Vec::new())
    } else {
        ask(broker, &group, |reply| GroupMsg::Leave {
            group: group.clone(),
            members: members.clone(),
            reply,
        })
        .await
        .unwrap_or((error_code::COORDINATOR_NOT_AVAILABLE, Vec::new()))
    };
    let left = request
        .members
        .into_iter()
        .enumerate()
        .map(|(i, m)| MemberLeft {
            member_id: m.member_id,
            group_instance_id: m.group_instance_id,
            error_code: codes.get(i).copied().unwrap_or(code),
        })
        .collect();
    Response::LeaveGroup(group::leave_response(version, code, left))
}

pub(crate) async fn commit(broker: &Arc<Broker>, request: OffsetCommitRequest) -> Response {
    let group = request.group_id.clone();
    let every = |code: i16| {
        request
            .topics
            .iter()
            .map(|(t, parts)| (t.clone(), parts.iter().map(|p| (p.index, code)).collect()))
            .collect::<Vec<_>>()
    };
    if group.is_empty() {
        return Response::OffsetCommit(group_offsets::commit_response(every(
            error_code::INVALID_GROUP_ID,
        )));
    }
    // Offsets only for partitions that exist, as Kafka.
    let snapshot = broker.topics.snapshot();
    let mut unknown = Vec::new();
    let mut offsets = Vec::new();
    for (topic, parts) in &request.topics {
        let partitions = snapshot.get(topic).map_or(0, |t| t.partitions);
        let mut known = Vec::new();
        for p in parts {
            if (0..partitions).contains(&p.index) {
                known.push(CommitPart {
                    partition: p.index,
                    offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata: p.metadata.clone(),
                });
            } else {
                unknown.push((topic.clone(), p.index));
            }
        }
        if !known.is_empty() {
            offsets.push((topic.clone(), known));
        }
    }
    let committed = if offsets.is_empty() {
        Vec::new()
    } else {
        let fallback = offsets
            .iter()
            .map(|(t, parts)| {
                let codes = parts
                    .iter()
                    .map(|p| (p.partition, error_code::COORDINATOR_NOT_AVAILABLE))
                    .collect();
                (t.clone(), codes)
            })
            .collect();
        ask(broker, &group, |reply| GroupMsg::Commit {
            group: group.clone(),
            generation: request.generation_id,
            member_id: request.member_id.clone(),
            instance_id: request.group_instance_id.clone(),
            offsets,
            reply,
        })
        .await
        .unwrap_or(fallback)
    };
    // Answer in request order.
    let code_of = |topic: &str, p: i32| {
        if unknown.iter().any(|(t, q)| t == topic && *q == p) {
            return error_code::UNKNOWN_TOPIC_OR_PARTITION;
        }
        committed
            .iter()
            .find(|(t, _)| t == topic)
            .and_then(|(_, codes)| codes.iter().find(|(q, _)| *q == p))
            .map_or(error_code::UNKNOWN_TOPIC_OR_PARTITION, |(_, code)| *code)
    };
    let topics = request
        .topics
        .iter()
        .map(|(t, parts)| {
            (
                t.clone(),
                parts
                    .iter()
                    .map(|p| (p.index, code_of(t, p.index)))
                    .collect(),
            )
        })
        .collect();
    Response::OffsetCommit(group_offsets::commit_response(topics))
}

pub(crate) async fn fetch(
    broker: &Arc<Broker>,
    version: i16,
    request: OffsetFetchRequest,
) -> Response {
    let mut groups = Vec::with_capacity(request.groups.len());
    for (group, topics) in request.groups {
        let fetched = if group.is_empty() {
            Err(error_code::INVALID_GROUP_ID)
        } else {
            ask(broker, &group, |reply| GroupMsg::Fetch {
                group: group.clone(),
                topics,
                reply,
            })
            .await
            .ok_or(error_code::COORDINATOR_NOT_AVAILABLE)
        };
        groups.push(match fetched {
            Ok(topics) => FetchedGroup {
                group_id: group,
                error_code: error_code::NONE,
                topics: topics
                    .into_iter()
                    .map(|(t, parts)| {
                        let parts = parts
                            .into_iter()
                            .map(|p| FetchedOffset {
                                index: p.partition,
                                offset: p.offset,
                                leader_epoch: p.leader_epoch,
                                metadata: Some(p.metadata),
                                error_code: p.error_code,
                            })
                            .collect();
                        (t, parts)
                    })
                    .collect(),
            },
            Err(code) => FetchedGroup {
                group_id: group,
                error_code: code,
                topics: Vec::new(),
            },
        });
    }
    Response::OffsetFetch(group_offsets::fetch_response(version, groups))
}

pub(crate) async fn delete_offsets(broker: &Arc<Broker>, request: OffsetDeleteRequest) -> Response {
    let group = request.group_id.clone();
    let (code, topics) = if group.is_empty() {
        (error_code::INVALID_GROUP_ID, Vec::new())
    } else {
        ask(broker, &group, |reply| GroupMsg::DeleteOffsets {
            group: group.clone(),
            topics: request.topics.clone(),
            reply,
        })
        .await
        .unwrap_or((error_code::COORDINATOR_NOT_AVAILABLE, Vec::new()))
    };
    Response::OffsetDelete(group_offsets::delete_response(code, topics))
}

pub(crate) async fn list(
    broker: &Arc<Broker>,
    version: i16,
    request: ListGroupsRequest,
) -> Response {
    let mut listed = Vec::new();
    let mut code = error_code::NONE;
    for mailbox in &broker.mailboxes {
        let (reply, answer) = oneshot::channel();
        let sent = mailbox
            .send(ShardMsg::Group(GroupMsg::List { reply }))
            .await;
        match (sent, answer.await) {
            (Ok(()), Ok(groups)) => listed.extend(groups),
            _ => code = error_code::COORDINATOR_NOT_AVAILABLE,
        }
    }
    let wanted = |state: &str| {
        request.states.is_empty() || request.states.iter().any(|s| s.eq_ignore_ascii_case(state))
    };
    let groups = listed
        .into_iter()
        .filter(|(_, _, state)| wanted(state))
        .map(|(group_id, protocol_type, state)| GroupListing {
            group_id,
            protocol_type,
            state: state.to_string(),
        })
        .collect();
    Response::ListGroups(group_admin::list_response(version, code, groups))
}

pub(crate) async fn describe(
    broker: &Arc<Broker>,
    version: i16,
    request: DescribeGroupsRequest,
) -> Response {
    let mut described = Vec::with_capacity(request.groups.len());
    for group in request.groups {
        let found = if group.is_empty() {
            None
        } else {
            ask(broker, &group, |reply| GroupMsg::Describe {
                group: group.clone(),
                reply,
            })
            .await
        };
        described.push(match found {
            Some(d) => GroupDescription {
                error_code: d.error_code,
                group_id: group,
                state: d.state.to_string(),
                protocol_type: d.protocol_type,
                protocol_data: d.protocol,
                members: d
                    .members
                    .into_iter()
                    .map(|m| MemberDescription {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        metadata: m.metadata.into(),
                        assignment: m.assignment.into(),
                    })
                    .collect(),
            },
            None => GroupDescription {
                error_code: if group.is_empty() {
                    error_code::INVALID_GROUP_ID
                } else {
                    error_code::COORDINATOR_NOT_AVAILABLE
                },
                group_id: group,
                state: group_admin::STATE_DEAD.to_string(),
                protocol_type: String::new(),
                protocol_data: String::new(),
                members: Vec::new(),
            },
        });
    }
    Response::DescribeGroups(group_admin::describe_response(
        version,
        described,
        request.include_authorized_operations,
    ))
}

pub(crate) async fn delete(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> Response {
    let mut results = Vec::with_capacity(request.groups.len());
    for group in request.groups {
        let code = if group.is_empty() {
            error_code::INVALID_GROUP_ID
        } else {
            ask(broker, &group, |reply| GroupMsg::Delete {
                group: group.clone(),
                reply,
            })
            .await
            .unwrap_or(error_code::COORDINATOR_NOT_AVAILABLE)
        };
        results.push((group, code));
    }
    Response::DeleteGroups(group_admin::delete_response(results))
}
