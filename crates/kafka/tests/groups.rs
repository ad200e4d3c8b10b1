//! The consumer-group, offset and producer-id APIs: our request decoders against the
//! kafka-protocol crate's encoders, our responses through its decoders, at every served
//! version; every prefix of every request frame is an error, never a panic.

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, InitProducerIdRequest, InitProducerIdResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, ProducerId, SyncGroupRequest,
    SyncGroupResponse, TopicName, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use weir_kafka::{
    api, coordinator, decode_request, encode_response, error_code, group, group_admin,
    group_offsets, producer_id, Decoded, Request, RequestId, Response,
};

mod common;
use common::{frame, response_body};

fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn group_id(value: &str) -> GroupId {
    GroupId(s(value))
}

fn topic(value: &str) -> TopicName {
    TopicName(s(value))
}

/// The versions served of `key`, checked against what this file expects.
fn served(key: ApiKey, expected: (i16, i16)) -> std::ops::RangeInclusive<i16> {
    let (_, min, max) = api::supported_range(key as i16).expect("served");
    assert_eq!((min, max), expected, "{key:?}");
    min..=max
}

/// Encodes `body` as a client would, checks that every proper prefix of the frame is refused,
/// and decodes the whole frame.
fn decode<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Request {
    let bytes = frame(key, version, 13, body);
    for cut in 0..bytes.len() {
        assert!(
            decode_request(&bytes[..cut]).is_err(),
            "{key:?} v{version}: prefix {cut} of {} decoded",
            bytes.len()
        );
    }
    match decode_request(&bytes) {
        Ok(Decoded::Request { header, request }) => {
            assert_eq!(header.id.correlation_id, 13);
            assert_eq!(header.client_id, Some("codec-test"));
            request
        }
        other => panic!("{key:?} v{version}: {other:?}"),
    }
}

/// Encodes `response` for a request at `version` and decodes it as a client would, checking
/// that nothing is left over.
fn through_client<T: Decodable>(key: ApiKey, version: i16, response: Response) -> T {
    let id = RequestId {
        api_key: key as i16,
        api_version: version,
        correlation_id: 21,
    };
    let out =
        encode_response(id, &response, false).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
    let (correlation, mut body) = response_body(&out, key, version);
    assert_eq!(correlation, 21);
    let decoded =
        T::decode(&mut body, version).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
    assert!(
        body.is_empty(),
        "{key:?} v{version}: {} bytes left",
        body.len()
    );
    decoded
}

#[test]
fn served_versions_are_in_key_order_and_named() {
    for pair in api::SUPPORTED.windows(2) {
        assert!((pair[0].0 as i16) < (pair[1].0 as i16), "{pair:?}");
    }
    for (key, _, _) in api::SUPPORTED {
        assert!(api::name(*key as i16).is_some(), "{key:?} has no name");
    }
    assert_eq!(api::name(ApiKey::OffsetDelete as i16), Some("OffsetDelete"));
}

#[test]
fn error_codes_are_kafkas() {
    for (ours, theirs) in [
        (
            error_code::UNKNOWN_SERVER_ERROR,
            ResponseError::UnknownServerError,
        ),
        (
            error_code::OFFSET_OUT_OF_RANGE,
            ResponseError::OffsetOutOfRange,
        ),
        (error_code::CORRUPT_MESSAGE, ResponseError::CorruptMessage),
        (
            error_code::UNKNOWN_TOPIC_OR_PARTITION,
            ResponseError::UnknownTopicOrPartition,
        ),
        (
            error_code::MESSAGE_TOO_LARGE,
            ResponseError::MessageTooLarge,
        ),
        (
            error_code::OFFSET_METADATA_TOO_LARGE,
            ResponseError::OffsetMetadataTooLarge,
        ),
        (
            error_code::COORDINATOR_LOAD_IN_PROGRESS,
            ResponseError::CoordinatorLoadInProgress,
        ),
        (
            error_code::COORDINATOR_NOT_AVAILABLE,
            ResponseError::CoordinatorNotAvailable,
        ),
        (error_code::NOT_COORDINATOR, ResponseError::NotCoordinator),
        (
            error_code::INVALID_TOPIC_EXCEPTION,
            ResponseError::InvalidTopicException,
        ),
        (
            error_code::INVALID_REQUIRED_ACKS,
            ResponseError::InvalidRequiredAcks,
        ),
        (
            error_code::ILLEGAL_GENERATION,
            ResponseError::IllegalGeneration,
        ),
        (
            error_code::INCONSISTENT_GROUP_PROTOCOL,
            ResponseError::InconsistentGroupProtocol,
        ),
        (error_code::INVALID_GROUP_ID, ResponseError::InvalidGroupId),
        (
            error_code::UNKNOWN_MEMBER_ID,
            ResponseError::UnknownMemberId,
        ),
        (
            error_code::INVALID_SESSION_TIMEOUT,
            ResponseError::InvalidSessionTimeout,
        ),
        (
            error_code::REBALANCE_IN_PROGRESS,
            ResponseError::RebalanceInProgress,
        ),
        (
            error_code::INVALID_COMMIT_OFFSET_SIZE,
            ResponseError::InvalidCommitOffsetSize,
        ),
        (
            error_code::UNSUPPORTED_VERSION,
            ResponseError::UnsupportedVersion,
        ),
        (
            error_code::TOPIC_ALREADY_EXISTS,
            ResponseError::TopicAlreadyExists,
        ),
        (
            error_code::INVALID_PARTITIONS,
            ResponseError::InvalidPartitions,
        ),
        (
            error_code::INVALID_REPLICATION_FACTOR,
            ResponseError::InvalidReplicationFactor,
        ),
        (error_code::INVALID_CONFIG, ResponseError::InvalidConfig),
        (error_code::INVALID_REQUEST, ResponseError::InvalidRequest),
        (
            error_code::OUT_OF_ORDER_SEQUENCE_NUMBER,
            ResponseError::OutOfOrderSequenceNumber,
        ),
        (
            error_code::DUPLICATE_SEQUENCE_NUMBER,
            ResponseError::DuplicateSequenceNumber,
        ),
        (
            error_code::INVALID_PRODUCER_EPOCH,
            ResponseError::InvalidProducerEpoch,
        ),
        (
            error_code::INVALID_TXN_STATE,
            ResponseError::InvalidTxnState,
        ),
        (
            error_code::INVALID_PRODUCER_ID_MAPPING,
            ResponseError::InvalidProducerIdMapping,
        ),
        (
            error_code::INVALID_TRANSACTION_TIMEOUT,
            ResponseError::InvalidTransactionTimeout,
        ),
        (
            error_code::CONCURRENT_TRANSACTIONS,
            ResponseError::ConcurrentTransactions,
        ),
        (
            error_code::KAFKA_STORAGE_ERROR,
            ResponseError::KafkaStorageError,
        ),
        (
            error_code::UNKNOWN_PRODUCER_ID,
            ResponseError::UnknownProducerId,
        ),
        (error_code::NON_EMPTY_GROUP, ResponseError::NonEmptyGroup),
        (
            error_code::GROUP_ID_NOT_FOUND,
            ResponseError::GroupIdNotFound,
        ),
        (
            error_code::MEMBER_ID_REQUIRED,
            ResponseError::MemberIdRequired,
        ),
        (
            error_code::GROUP_MAX_SIZE_REACHED,
            ResponseError::GroupMaxSizeReached,
        ),
        (
            error_code::FENCED_INSTANCE_ID,
            ResponseError::FencedInstanceId,
        ),
        (
            error_code::GROUP_SUBSCRIBED_TO_TOPIC,
            ResponseError::GroupSubscribedToTopic,
        ),
        (error_code::INVALID_RECORD, ResponseError::InvalidRecord),
        (
            error_code::UNSTABLE_OFFSET_COMMIT,
            ResponseError::UnstableOffsetCommit,
        ),
        (error_code::PRODUCER_FENCED, ResponseError::ProducerFenced),
        (error_code::UNKNOWN_TOPIC_ID, ResponseError::UnknownTopicId),
        (
            error_code::TRANSACTIONAL_ID_NOT_FOUND,
            ResponseError::TransactionalIdNotFound,
        ),
    ] {
        assert_eq!(ours, theirs.code(), "{theirs:?}");
    }
    assert_eq!(error_code::NONE, 0);
}

#[test]
fn find_coordinator_at_every_version() {
    for version in served(ApiKey::FindCoordinator, (0, 4)) {
        let (request, expected) = match version {
            0 => (
                FindCoordinatorRequest::default().with_key(s("group-a")),
                coordinator::FindCoordinatorRequest {
                    key_type: coordinator::KEY_TYPE_GROUP,
                    keys: vec!["group-a".into()],
                },
            ),
            1..=3 => (
                FindCoordinatorRequest::default()
                    .with_key(s("txn-ü"))
                    .with_key_type(1),
                coordinator::FindCoordinatorRequest {
                    key_type: coordinator::KEY_TYPE_TRANSACTION,
                    keys: vec!["txn-ü".into()],
                },
            ),
            _ => (
                FindCoordinatorRequest::default()
                    .with_key_type(1)
                    .with_coordinator_keys(vec![s("t1"), s(""), s("t3")]),
                coordinator::FindCoordinatorRequest {
                    key_type: coordinator::KEY_TYPE_TRANSACTION,
                    keys: vec!["t1".into(), "".into(), "t3".into()],
                },
            ),
        };
        let Request::FindCoordinator(decoded) = decode(ApiKey::FindCoordinator, version, &request)
        else {
            panic!("v{version}: not FindCoordinator");
        };
        assert_eq!(decoded, expected, "v{version}");

        let found = vec![
            coordinator::CoordinatorFound {
                key: "t1".into(),
                error_code: 0,
                error_message: None,
                node_id: 3,
                host: "broker-3".into(),
                port: 9093,
            },
            coordinator::CoordinatorFound {
                key: "t3".into(),
                error_code: error_code::COORDINATOR_NOT_AVAILABLE,
                error_message: Some("loading".into()),
                node_id: -1,
                host: "".into(),
                port: -1,
            },
        ];
        let built = coordinator::response(version, found.clone());
        let response: FindCoordinatorResponse = through_client(
            ApiKey::FindCoordinator,
            version,
            Response::FindCoordinator(built.clone()),
        );
        assert_eq!(response, built, "v{version}");
        if version >= 4 {
            assert_eq!(response.coordinators.len(), 2);
            let second = &response.coordinators[1];
            assert_eq!(second.key.as_str(), "t3");
            assert_eq!(second.error_code, 15);
            assert_eq!(second.error_message.as_deref(), Some("loading"));
            assert_eq!((second.node_id.0, second.port), (-1, -1));
            assert_eq!(response.coordinators[0].node_id.0, 3);
        } else {
            assert_eq!(response.node_id.0, 3);
            assert_eq!(response.host.as_str(), "broker-3");
            assert_eq!(response.port, 9093);
            assert_eq!(response.error_code, 0);
            assert!(response.coordinators.is_empty());
            // An error alone.
            let built = coordinator::response(version, found[1..].to_vec());
            let response: FindCoordinatorResponse = through_client(
                ApiKey::FindCoordinator,
                version,
                Response::FindCoordinator(built),
            );
            assert_eq!(response.error_code, 15);
            assert_eq!(response.node_id.0, -1);
            if version >= 1 {
                assert_eq!(response.error_message.as_deref(), Some("loading"));
            }
        }
    }
}

#[test]
fn join_group_at_every_version() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    for version in served(ApiKey::JoinGroup, (0, 9)) {
        let mut request = JoinGroupRequest::default()
            .with_group_id(group_id("grp"))
            .with_session_timeout_ms(10_000)
            .with_member_id(s("member-1"))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"\x00\x01range-meta")),
                JoinGroupRequestProtocol::default().with_name(s("roundrobin")),
            ]);
        if version >= 1 {
            request = request.with_rebalance_timeout_ms(60_000);
        }
        if version >= 5 {
            request = request.with_group_instance_id(Some(s("instance-1")));
        }
        if version >= 8 {
            request = request.with_reason(Some(s("rejoin")));
        }
        let Request::JoinGroup(decoded) = decode(ApiKey::JoinGroup, version, &request) else {
            panic!("v{version}: not JoinGroup");
        };
        assert_eq!(
            decoded,
            group::JoinGroupRequest {
                group_id: "grp".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: if version >= 1 { 60_000 } else { 10_000 },
                member_id: "member-1".into(),
                group_instance_id: (version >= 5).then(|| "instance-1".into()),
                protocol_type: "consumer".into(),
                protocols: vec![
                    ("range".into(), b"\x00\x01range-meta".to_vec()),
                    ("roundrobin".into(), vec![]),
                ],
                reason: (version >= 8).then(|| "rejoin".into()),
            },
            "v{version}"
        );
        // A member joining without reason or instance id: nulls where the version has them.
        if version >= 8 {
            let Request::JoinGroup(decoded) = decode(
                ApiKey::JoinGroup,
                version,
                &request
                    .clone()
                    .with_reason(None)
                    .with_group_instance_id(None),
            ) else {
                panic!("v{version}: not JoinGroup");
            };
            assert_eq!((decoded.reason, decoded.group_instance_id), (None, None));
        }

        let result = group::JoinGroupResult {
            error_code: 0,
            generation_id: 5,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            leader: "member-1".into(),
            skip_assignment: true,
            member_id: "member-1".into(),
            members: vec![
                group::JoinedMember {
                    member_id: "member-1".into(),
                    group_instance_id: Some("instance-1".into()),
                    metadata: Bytes::from_static(b"meta-1"),
                },
                group::JoinedMember {
                    member_id: "member-2".into(),
                    group_instance_id: None,
                    metadata: Bytes::new(),
                },
            ],
        };
        let built = group::join_response(version, result.clone());
        let response: JoinGroupResponse = through_client(
            ApiKey::JoinGroup,
            version,
            Response::JoinGroup(built.clone()),
        );
        assert_eq!(response, built, "v{version}");
        assert_eq!(response.generation_id, 5);
        assert_eq!(response.protocol_name.as_deref(), Some("range"));
        assert_eq!(response.leader.as_str(), "member-1");
        assert_eq!(response.member_id.as_str(), "member-1");
        assert_eq!(
            response.protocol_type.as_deref(),
            (version >= 7).then_some("consumer")
        );
        assert_eq!(response.skip_assignment, version >= 9);
        assert_eq!(response.members.len(), 2);
        assert_eq!(response.members[0].metadata, Bytes::from_static(b"meta-1"));
        assert_eq!(
            response.members[0].group_instance_id.as_deref(),
            (version >= 5).then_some("instance-1")
        );
        assert_eq!(response.members[1].member_id.as_str(), "member-2");

        // An error: no protocol chosen, which versions before 7 cannot send as null.
        let failed = group::JoinGroupResult {
            error_code: error_code::MEMBER_ID_REQUIRED,
            generation_id: group::NO_GENERATION,
            protocol_type: None,
            protocol_name: None,
            leader: "".into(),
            skip_assignment: false,
            member_id: "member-9".into(),
            members: vec![],
        };
        let response: JoinGroupResponse = through_client(
            ApiKey::JoinGroup,
            version,
            Response::JoinGroup(group::join_response(version, failed)),
        );
        assert_eq!(response.error_code, 79);
        assert_eq!(response.generation_id, -1);
        assert_eq!(
            response.protocol_name.as_deref(),
            (version < 7).then_some("")
        );
        assert_eq!(response.member_id.as_str(), "member-9");
    }
}

#[test]
fn sync_group_at_every_version() {
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    for version in served(ApiKey::SyncGroup, (0, 5)) {
        let mut request = SyncGroupRequest::default()
            .with_group_id(group_id("grp"))
            .with_generation_id(5)
            .with_member_id(s("member-1"))
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(s("member-1"))
                    .with_assignment(Bytes::from_static(b"assignment-1")),
                SyncGroupRequestAssignment::default().with_member_id(s("member-2")),
            ]);
        if version >= 3 {
            request = request.with_group_instance_id(Some(s("instance-1")));
        }
        if version >= 5 {
            request = request
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("range")));
        }
        let Request::SyncGroup(decoded) = decode(ApiKey::SyncGroup, version, &request) else {
            panic!("v{version}: not SyncGroup");
        };
        assert_eq!(
            decoded,
            group::SyncGroupRequest {
                group_id: "grp".into(),
                generation_id: 5,
                member_id: "member-1".into(),
                group_instance_id: (version >= 3).then(|| "instance-1".into()),
                protocol_type: (version >= 5).then(|| "consumer".into()),
                protocol_name: (version >= 5).then(|| "range".into()),
                assignments: vec![
                    ("member-1".into(), b"assignment-1".to_vec()),
                    ("member-2".into(), vec![]),
                ],
            },
            "v{version}"
        );

        for error_code in [0, error_code::REBALANCE_IN_PROGRESS] {
            let built = group::sync_response(
                version,
                group::SyncGroupResult {
                    error_code,
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some("range".into()),
                    assignment: Bytes::from_static(b"yours"),
                },
            );
            let response: SyncGroupResponse = through_client(
                ApiKey::SyncGroup,
                version,
                Response::SyncGroup(built.clone()),
            );
            assert_eq!(response, built, "v{version}");
            assert_eq!(response.error_code, error_code);
            assert_eq!(response.assignment, Bytes::from_static(b"yours"));
            assert_eq!(
                response.protocol_name.as_deref(),
                (version >= 5).then_some("range")
            );
            assert_eq!(
                response.protocol_type.as_deref(),
                (version >= 5).then_some("consumer")
            );
        }
    }
}

#[test]
fn heartbeat_at_every_version() {
    for version in served(ApiKey::Heartbeat, (0, 4)) {
        let mut request = HeartbeatRequest::default()
            .with_group_id(group_id("grp"))
            .with_generation_id(9)
            .with_member_id(s("member-1"));
        if version >= 3 {
            request = request.with_group_instance_id(Some(s("instance-1")));
        }
        let Request::Heartbeat(decoded) = decode(ApiKey::Heartbeat, version, &request) else {
            panic!("v{version}: not Heartbeat");
        };
        assert_eq!(
            decoded,
            group::HeartbeatRequest {
                group_id: "grp".into(),
                generation_id: 9,
                member_id: "member-1".into(),
                group_instance_id: (version >= 3).then(|| "instance-1".into()),
            }
        );
        let built = group::heartbeat_response(error_code::REBALANCE_IN_PROGRESS);
        let response: HeartbeatResponse = through_client(
            ApiKey::Heartbeat,
            version,
            Response::Heartbeat(built.clone()),
        );
        assert_eq!(response, built);
        assert_eq!(response.error_code, 27);
    }
}

#[test]
fn leave_group_at_every_version() {
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    for version in served(ApiKey::LeaveGroup, (0, 5)) {
        let (request, expected) = if version <= 2 {
            (
                LeaveGroupRequest::default()
                    .with_group_id(group_id("grp"))
                    .with_member_id(s("member-1")),
                vec![group::LeavingMember {
                    member_id: "member-1".into(),
                    group_instance_id: None,
                    reason: None,
                }],
            )
        } else {
            let reason = |r: &str| (version >= 5).then(|| s(r));
            (
                LeaveGroupRequest::default()
                    .with_group_id(group_id("grp"))
                    .with_members(vec![
                        MemberIdentity::default()
                            .with_member_id(s("member-1"))
                            .with_group_instance_id(Some(s("instance-1")))
                            .with_reason(reason("shutting down")),
                        MemberIdentity::default()
                            .with_member_id(s(""))
                            .with_group_instance_id(Some(s("instance-2"))),
                        MemberIdentity::default()
                            .with_member_id(s("member-3"))
                            .with_group_instance_id(None),
                    ]),
                vec![
                    group::LeavingMember {
                        member_id: "member-1".into(),
                        group_instance_id: Some("instance-1".into()),
                        reason: (version >= 5).then(|| "shutting down".into()),
                    },
                    group::LeavingMember {
                        member_id: "".into(),
                        group_instance_id: Some("instance-2".into()),
                        reason: None,
                    },
                    group::LeavingMember {
                        member_id: "member-3".into(),
                        group_instance_id: None,
                        reason: None,
                    },
                ],
            )
        };
        let Request::LeaveGroup(decoded) = decode(ApiKey::LeaveGroup, version, &request) else {
            panic!("v{version}: not LeaveGroup");
        };
        assert_eq!(
            decoded,
            group::LeaveGroupRequest {
                group_id: "grp".into(),
                members: expected,
            },
            "v{version}"
        );

        let members = vec![
            group::MemberLeft {
                member_id: "member-1".into(),
                group_instance_id: Some("instance-1".into()),
                error_code: error_code::UNKNOWN_MEMBER_ID,
            },
            group::MemberLeft {
                member_id: "member-3".into(),
                group_instance_id: None,
                error_code: 0,
            },
        ];
        let built = group::leave_response(version, 0, members.clone());
        let response: LeaveGroupResponse = through_client(
            ApiKey::LeaveGroup,
            version,
            Response::LeaveGroup(built.clone()),
        );
        assert_eq!(response, built, "v{version}");
        if version <= 2 {
            // One member, whose error is the response's.
            assert_eq!(response.error_code, 25);
            assert!(response.members.is_empty());
        } else {
            assert_eq!(response.error_code, 0);
            assert_eq!(response.members.len(), 2);
            assert_eq!(response.members[0].error_code, 25);
            assert_eq!(
                response.members[0].group_instance_id.as_deref(),
                Some("instance-1")
            );
            assert_eq!(response.members[1].member_id.as_str(), "member-3");
            assert_eq!(response.members[1].group_instance_id, None);
        }
        // A group-level error wins at every version.
        let built = group::leave_response(version, error_code::NOT_COORDINATOR, members);
        let response: LeaveGroupResponse =
            through_client(ApiKey::LeaveGroup, version, Response::LeaveGroup(built));
        assert_eq!(response.error_code, 16);
    }
}

#[test]
fn offset_commit_at_every_version() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    for version in served(ApiKey::OffsetCommit, (2, 8)) {
        let partition = |index: i32, offset: i64, metadata: Option<&str>| {
            let p = OffsetCommitRequestPartition::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
                .with_committed_metadata(metadata.map(s));
            if version >= 6 {
                p.with_committed_leader_epoch(index + 3)
            } else {
                p
            }
        };
        let mut request = OffsetCommitRequest::default()
            .with_group_id(group_id("grp"))
            .with_generation_id_or_member_epoch(7)
            .with_member_id(s("member-1"))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![
                        partition(0, 42, Some("meta")),
                        partition(1, 0, None),
                        partition(2, i64::MAX, Some("")),
                    ]),
                OffsetCommitRequestTopic::default().with_name(topic("empty")),
            ]);
        if version <= 4 {
            request = request.with_retention_time_ms(86_400_000);
        }
        if version >= 7 {
            request = request.with_group_instance_id(Some(s("instance-1")));
        }
        let Request::OffsetCommit(decoded) = decode(ApiKey::OffsetCommit, version, &request) else {
            panic!("v{version}: not OffsetCommit");
        };
        let epoch = |index: i32| if version >= 6 { index + 3 } else { -1 };
        assert_eq!(
            decoded,
            group_offsets::OffsetCommitRequest {
                group_id: "grp".into(),
                generation_id: 7,
                member_id: "member-1".into(),
                group_instance_id: (version >= 7).then(|| "instance-1".into()),
                retention_time_ms: if version <= 4 { 86_400_000 } else { -1 },
                topics: vec![
                    (
                        "orders".into(),
                        vec![
                            group_offsets::CommitPartition {
                                index: 0,
                                offset: 42,
                                leader_epoch: epoch(0),
                                metadata: Some("meta".into()),
                            },
                            group_offsets::CommitPartition {
                                index: 1,
                                offset: 0,
                                leader_epoch: epoch(1),
                                metadata: None,
                            },
                            group_offsets::CommitPartition {
                                index: 2,
                                offset: i64::MAX,
                                leader_epoch: epoch(2),
                                metadata: Some("".into()),
                            },
                        ]
                    ),
                    ("empty".into(), vec![]),
                ],
            },
            "v{version}"
        );

        let built = group_offsets::commit_response(vec![
            (
                "orders".into(),
                vec![(0, 0), (1, error_code::ILLEGAL_GENERATION)],
            ),
            ("empty".into(), vec![]),
        ]);
        let response: OffsetCommitResponse = through_client(
            ApiKey::OffsetCommit,
            version,
            Response::OffsetCommit(built.clone()),
        );
        assert_eq!(response, built, "v{version}");
        assert_eq!(response.topics[0].name.0.as_str(), "orders");
        assert_eq!(response.topics[0].partitions[1].partition_index, 1);
        assert_eq!(response.topics[0].partitions[1].error_code, 22);
    }
}

#[test]
fn offset_fetch_at_every_version() {
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    let expected_topics = || {
        Some(vec![
            ("orders".to_string(), vec![0, 1, 2]),
            ("payments".to_string(), vec![]),
        ])
    };
    for version in served(ApiKey::OffsetFetch, (1, 8)) {
        let mut requests = Vec::new();
        if version <= 7 {
            let topics = vec![
                OffsetFetchRequestTopic::default()
                    .with_name(topic("orders"))
                    .with_partition_indexes(vec![0, 1, 2]),
                OffsetFetchRequestTopic::default().with_name(topic("payments")),
            ];
            let mut request = OffsetFetchRequest::default()
                .with_group_id(group_id("grp"))
                .with_topics(Some(topics));
            if version >= 7 {
                request = request.with_require_stable(true);
            }
            requests.push((
                request.clone(),
                group_offsets::OffsetFetchRequest {
                    groups: vec![("grp".into(), expected_topics())],
                    require_stable: version >= 7,
                },
            ));
            if version >= 2 {
                requests.push((
                    request.with_topics(None),
                    group_offsets::OffsetFetchRequest {
                        groups: vec![("grp".into(), None)],
                        require_stable: version >= 7,
                    },
                ));
            }
        } else {
            let topics = vec![
                OffsetFetchRequestTopics::default()
                    .with_name(topic("orders"))
                    .with_partition_indexes(vec![0, 1, 2]),
                OffsetFetchRequestTopics::default().with_name(topic("payments")),
            ];
            requests.push((
                OffsetFetchRequest::default()
                    .with_groups(vec![
                        OffsetFetchRequestGroup::default()
                            .with_group_id(group_id("g1"))
                            .with_topics(Some(topics)),
                        OffsetFetchRequestGroup::default()
                            .with_group_id(group_id("g2"))
                            .with_topics(None),
                    ])
                    .with_require_stable(true),
                group_offsets::OffsetFetchRequest {
                    groups: vec![("g1".into(), expected_topics()), ("g2".into(), None)],
                    require_stable: true,
                },
            ));
        }
        for (request, expected) in requests {
            let Request::OffsetFetch(decoded) = decode(ApiKey::OffsetFetch, version, &request)
            else {
                panic!("v{version}: not OffsetFetch");
            };
            assert_eq!(decoded, expected, "v{version}");
        }

        let committed = group_offsets::FetchedGroup {
            group_id: "g1".into(),
            error_code: 0,
            topics: vec![(
                "orders".into(),
                vec![
                    group_offsets::FetchedOffset {
                        index: 0,
                        offset: 42,
                        leader_epoch: 3,
                        metadata: Some("meta".into()),
                        error_code: 0,
                    },
                    group_offsets::FetchedOffset {
                        index: 1,
                        offset: group_offsets::NO_OFFSET,
                        leader_epoch: group_offsets::NO_LEADER_EPOCH,
                        metadata: Some("".into()),
                        error_code: 0,
                    },
                    group_offsets::FetchedOffset {
                        index: 2,
                        offset: 7,
                        leader_epoch: 1,
                        metadata: None,
                        error_code: error_code::UNSTABLE_OFFSET_COMMIT,
                    },
                ],
            )],
        };
        let failed = group_offsets::FetchedGroup {
            group_id: "g2".into(),
            error_code: error_code::COORDINATOR_LOAD_IN_PROGRESS,
            topics: vec![(
                "orders".into(),
                vec![group_offsets::FetchedOffset {
                    index: 0,
                    offset: group_offsets::NO_OFFSET,
                    leader_epoch: group_offsets::NO_LEADER_EPOCH,
                    metadata: Some("".into()),
                    error_code: 0,
                }],
            )],
        };
        let built = group_offsets::fetch_response(version, vec![committed, failed.clone()]);
        let response: OffsetFetchResponse = through_client(
            ApiKey::OffsetFetch,
            version,
            Response::OffsetFetch(built.clone()),
        );
        assert_eq!(response, built, "v{version}");
        if version >= 8 {
            assert!(response.topics.is_empty());
            assert_eq!(response.groups.len(), 2);
            let g1 = &response.groups[0];
            assert_eq!(g1.group_id.0.as_str(), "g1");
            let partitions = &g1.topics[0].partitions;
            assert_eq!(g1.topics[0].name.0.as_str(), "orders");
            assert_eq!(
                (
                    partitions[0].committed_offset,
                    partitions[0].committed_leader_epoch
                ),
                (42, 3)
            );
            assert_eq!(partitions[0].metadata.as_deref(), Some("meta"));
            assert_eq!(partitions[1].committed_offset, -1);
            assert_eq!(partitions[2].error_code, 88);
            assert_eq!(partitions[2].metadata, None);
            assert_eq!(response.groups[1].error_code, 14);
        } else {
            assert!(response.groups.is_empty());
            assert_eq!(response.error_code, 0);
            let partitions = &response.topics[0].partitions;
            assert_eq!(response.topics[0].name.0.as_str(), "orders");
            assert_eq!(partitions[0].committed_offset, 42);
            assert_eq!(
                partitions[0].committed_leader_epoch,
                if version >= 5 { 3 } else { -1 }
            );
            assert_eq!(partitions[0].metadata.as_deref(), Some("meta"));
            assert_eq!(partitions[2].error_code, 88);

            // A group error: top-level from v2, on every partition in v1.
            let built = group_offsets::fetch_response(version, vec![failed.clone()]);
            let response: OffsetFetchResponse =
                through_client(ApiKey::OffsetFetch, version, Response::OffsetFetch(built));
            let partition_error = response.topics[0].partitions[0].error_code;
            if version >= 2 {
                assert_eq!((response.error_code, partition_error), (14, 0));
            } else {
                assert_eq!((response.error_code, partition_error), (0, 14));
            }
        }
    }
}

#[test]
fn offset_delete_at_version_0() {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    for version in served(ApiKey::OffsetDelete, (0, 0)) {
        let request = OffsetDeleteRequest::default()
            .with_group_id(group_id("grp"))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                        OffsetDeleteRequestPartition::default().with_partition_index(4),
                    ]),
                OffsetDeleteRequestTopic::default().with_name(topic("none")),
            ]);
        let Request::OffsetDelete(decoded) = decode(ApiKey::OffsetDelete, version, &request) else {
            panic!("not OffsetDelete");
        };
        assert_eq!(
            decoded,
            group_offsets::OffsetDeleteRequest {
                group_id: "grp".into(),
                topics: vec![("orders".into(), vec![0, 4]), ("none".into(), vec![])],
            }
        );
        let built = group_offsets::delete_response(
            0,
            vec![(
                "orders".into(),
                vec![(0, 0), (4, error_code::GROUP_SUBSCRIBED_TO_TOPIC)],
            )],
        );
        let response: OffsetDeleteResponse = through_client(
            ApiKey::OffsetDelete,
            version,
            Response::OffsetDelete(built.clone()),
        );
        assert_eq!(response, built);
        assert_eq!(response.topics[0].partitions[1].error_code, 86);
        let response: OffsetDeleteResponse = through_client(
            ApiKey::OffsetDelete,
            version,
            Response::OffsetDelete(group_offsets::delete_response(
                error_code::NON_EMPTY_GROUP,
                vec![],
            )),
        );
        assert_eq!(response.error_code, 68);
    }
}

#[test]
fn list_groups_at_every_version() {
    for version in served(ApiKey::ListGroups, (0, 4)) {
        let mut request = ListGroupsRequest::default();
        if version >= 4 {
            request = request.with_states_filter(vec![s("Stable"), s("Empty")]);
        }
        let Request::ListGroups(decoded) = decode(ApiKey::ListGroups, version, &request) else {
            panic!("v{version}: not ListGroups");
        };
        let states = if version >= 4 {
            vec!["Stable".to_string(), "Empty".to_string()]
        } else {
            vec![]
        };
        assert_eq!(decoded, group_admin::ListGroupsRequest { states });

        let built = group_admin::list_response(
            version,
            0,
            vec![
                group_admin::GroupListing {
                    group_id: "g1".into(),
                    protocol_type: "consumer".into(),
                    state: group_admin::STATE_STABLE.into(),
                },
                group_admin::GroupListing {
                    group_id: "g2".into(),
                    protocol_type: "".into(),
                    state: group_admin::STATE_EMPTY.into(),
                },
            ],
        );
        let response: ListGroupsResponse = through_client(
            ApiKey::ListGroups,
            version,
            Response::ListGroups(built.clone()),
        );
        assert_eq!(response, built, "v{version}");
        assert_eq!(response.groups.len(), 2);
        assert_eq!(response.groups[0].group_id.0.as_str(), "g1");
        assert_eq!(response.groups[0].protocol_type.as_str(), "consumer");
        assert_eq!(
            response.groups[0].group_state.as_str(),
            if version >= 4 { "Stable" } else { "" }
        );
    }
}

#[test]
fn describe_groups_at_every_version() {
    for version in served(ApiKey::DescribeGroups, (0, 5)) {
        for include in [false, true] {
            let mut request =
                DescribeGroupsRequest::default().with_groups(vec![group_id("g1"), group_id("g2")]);
            if version >= 3 {
                request = request.with_include_authorized_operations(include);
            }
            let Request::DescribeGroups(decoded) =
                decode(ApiKey::DescribeGroups, version, &request)
            else {
                panic!("v{version}: not DescribeGroups");
            };
            assert_eq!(
                decoded,
                group_admin::DescribeGroupsRequest {
                    groups: vec!["g1".into(), "g2".into()],
                    include_authorized_operations: version >= 3 && include,
                }
            );

            let groups = vec![
                group_admin::GroupDescription {
                    error_code: 0,
                    group_id: "g1".into(),
                    state: group_admin::STATE_STABLE.into(),
                    protocol_type: "consumer".into(),
                    protocol_data: "range".into(),
                    members: vec![group_admin::MemberDescription {
                        member_id: "member-1".into(),
                        group_instance_id: Some("instance-1".into()),
                        client_id: "client".into(),
                        client_host: "/127.0.0.1".into(),
                        metadata: Bytes::from_static(b"subscription"),
                        assignment: Bytes::from_static(b"assignment"),
                    }],
                },
                group_admin::GroupDescription {
                    error_code: 0,
                    group_id: "g2".into(),
                    state: group_admin::STATE_DEAD.into(),
                    protocol_type: "".into(),
                    protocol_data: "".into(),
                    members: vec![],
                },
            ];
            let built = group_admin::describe_response(version, groups, include);
            let response: DescribeGroupsResponse = through_client(
                ApiKey::DescribeGroups,
                version,
                Response::DescribeGroups(built.clone()),
            );
            assert_eq!(response, built, "v{version}");
            let g1 = &response.groups[0];
            assert_eq!(g1.group_id.0.as_str(), "g1");
            assert_eq!(g1.group_state.as_str(), "Stable");
            assert_eq!(g1.protocol_data.as_str(), "range");
            let member = &g1.members[0];
            assert_eq!(member.client_host.as_str(), "/127.0.0.1");
            assert_eq!(member.member_assignment, Bytes::from_static(b"assignment"));
            assert_eq!(
                member.group_instance_id.as_deref(),
                (version >= 4).then_some("instance-1")
            );
            assert_eq!(
                g1.authorized_operations,
                if version >= 3 && include {
                    group_admin::GROUP_AUTHORIZED_OPERATIONS
                } else {
                    i32::MIN
                }
            );
            assert_eq!(response.groups[1].group_state.as_str(), "Dead");
        }
    }
}

#[test]
fn delete_groups_at_every_version() {
    for version in served(ApiKey::DeleteGroups, (0, 2)) {
        let request =
            DeleteGroupsRequest::default().with_groups_names(vec![group_id("g1"), group_id("g2")]);
        let Request::DeleteGroups(decoded) = decode(ApiKey::DeleteGroups, version, &request) else {
            panic!("v{version}: not DeleteGroups");
        };
        assert_eq!(
            decoded,
            group_admin::DeleteGroupsRequest {
                groups: vec!["g1".into(), "g2".into()],
            }
        );
        let built = group_admin::delete_response(vec![
            ("g1".into(), 0),
            ("g2".into(), error_code::GROUP_ID_NOT_FOUND),
        ]);
        let response: DeleteGroupsResponse = through_client(
            ApiKey::DeleteGroups,
            version,
            Response::DeleteGroups(built.clone()),
        );
        assert_eq!(response, built);
        assert_eq!(response.results[1].group_id.0.as_str(), "g2");
        assert_eq!(response.results[1].error_code, 69);
    }
}

#[test]
fn init_producer_id_at_every_version() {
    for version in served(ApiKey::InitProducerId, (0, 4)) {
        for transactional_id in [None, Some("txn-1")] {
            let mut request = InitProducerIdRequest::default()
                .with_transactional_id(transactional_id.map(|t| TransactionalId(s(t))))
                .with_transaction_timeout_ms(60_000);
            if version >= 3 {
                request = request
                    .with_producer_id(ProducerId(1234))
                    .with_producer_epoch(5);
            }
            let Request::InitProducerId(decoded) =
                decode(ApiKey::InitProducerId, version, &request)
            else {
                panic!("v{version}: not InitProducerId");
            };
            assert_eq!(
                decoded,
                producer_id::InitProducerIdRequest {
                    transactional_id: transactional_id.map(str::to_string),
                    transaction_timeout_ms: 60_000,
                    producer_id: if version >= 3 { 1234 } else { -1 },
                    producer_epoch: if version >= 3 { 5 } else { -1 },
                },
                "v{version}"
            );
        }
        let built = producer_id::response(0, 1234, 6);
        let response: InitProducerIdResponse = through_client(
            ApiKey::InitProducerId,
            version,
            Response::InitProducerId(built.clone()),
        );
        assert_eq!(response, built);
        assert_eq!((response.producer_id.0, response.producer_epoch), (1234, 6));
        let response: InitProducerIdResponse = through_client(
            ApiKey::InitProducerId,
            version,
            Response::InitProducerId(producer_id::response(
                error_code::PRODUCER_FENCED,
                producer_id::NO_PRODUCER_ID,
                producer_id::NO_PRODUCER_EPOCH,
            )),
        );
        assert_eq!(response.error_code, 90);
        assert_eq!((response.producer_id.0, response.producer_epoch), (-1, -1));
    }
}

#[test]
fn huge_declared_lengths_in_group_requests_are_refused() {
    // JoinGroup v0: group "g", session timeout, member "", protocol type "c", one protocol
    // "p" whose metadata declares 2^31-1 bytes.
    let mut bytes = vec![0, 11, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    bytes.extend_from_slice(&[0, 1, b'g', 0, 0, 0x27, 0x10, 0, 0, 0, 1, b'c']);
    bytes.extend_from_slice(&[0, 0, 0, 1, 0, 1, b'p', 0x7f, 0xff, 0xff, 0xff]);
    assert!(decode_request(&bytes).is_err());
    // The same with 2^31-1 protocols.
    let mut bytes = vec![0, 11, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    bytes.extend_from_slice(&[0, 1, b'g', 0, 0, 0x27, 0x10, 0, 0, 0, 1, b'c']);
    bytes.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    assert!(decode_request(&bytes).is_err());
    // OffsetFetch v1 with null topics, which only v2+ may send.
    let mut bytes = vec![0, 9, 0, 1, 0, 0, 0, 1, 0xff, 0xff];
    bytes.extend_from_slice(&[0, 1, b'g', 0xff, 0xff, 0xff, 0xff]);
    assert!(decode_request(&bytes).is_err());
}
