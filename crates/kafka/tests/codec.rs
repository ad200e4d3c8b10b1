//! Our request decoders against the kafka-protocol crate's encoders (what real clients send),
//! and our responses through its decoders (what real clients read), for every served version.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{
    metadata_request::MetadataRequestTopic, ApiKey, ApiVersionsRequest, ApiVersionsResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use weir_kafka::{api, decode_request, encode_response, Decoded, Request, RequestId, Response};

mod common;
use common::{frame, response_body};

#[test]
fn metadata_requests_decode_at_every_version() {
    let (_, min, max) = api::supported_range(ApiKey::Metadata as i16).expect("served");
    for version in min..=max {
        for topics in [vec![], vec!["orders"], vec!["a", "bb", "ccc-ü"]] {
            let mut request = MetadataRequest::default().with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))
                    })
                    .collect(),
            ));
            if version >= 4 {
                request = request.with_allow_auto_topic_creation(false);
            }
            let bytes = frame(ApiKey::Metadata, version, 7, &request);
            let decoded = decode_request(&bytes).expect("decode");
            let Decoded::Request { header, request } = decoded else {
                panic!("v{version}: not a request");
            };
            assert_eq!(header.id.correlation_id, 7);
            assert_eq!(header.client_id, Some("codec-test"));
            let Request::Metadata(m) = request else {
                panic!("not metadata")
            };
            if version == 0 && topics.is_empty() {
                assert_eq!(m.topics, None, "v0: empty means all");
            } else {
                let names: Vec<_> = m
                    .topics
                    .expect("topics")
                    .into_iter()
                    .map(|t| t.name.expect("name"))
                    .collect();
                assert_eq!(names, topics, "v{version}");
            }
            assert_eq!(m.allow_auto_topic_creation, version < 4, "v{version}");
        }
        // Null topics (all) from v1.
        if version >= 1 {
            let request = MetadataRequest::default().with_topics(None);
            let bytes = frame(ApiKey::Metadata, version, 8, &request);
            let Ok(Decoded::Request {
                request: Request::Metadata(m),
                ..
            }) = decode_request(&bytes)
            else {
                panic!("v{version}: decode");
            };
            assert_eq!(m.topics, None);
        }
    }
}

#[test]
fn api_versions_round_trip_and_kip_511_fallback() {
    for version in 0..=4 {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("librdkafka"))
            .with_client_software_version(StrBytes::from_static_str("2.0.2"));
        let bytes = frame(ApiKey::ApiVersions, version, 42, &request);
        let Ok(Decoded::Request {
            header,
            request: Request::ApiVersions(r),
        }) = decode_request(&bytes)
        else {
            panic!("v{version}: decode");
        };
        if version >= 3 {
            assert_eq!(r.client_software_name.as_deref(), Some("librdkafka"));
        }
        let out = encode_response(
            header.id,
            &Response::ApiVersions(weir_kafka::api_versions::response(0)),
            false,
        )
        .expect("encode");
        let (correlation, mut body) = response_body(&out, ApiKey::ApiVersions, version);
        assert_eq!(correlation, 42);
        let response = ApiVersionsResponse::decode(&mut body, version).expect("decode response");
        assert_eq!(response.error_code, 0);
        let metadata = response
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Metadata as i16)
            .expect("metadata listed");
        assert_eq!((metadata.min_version, metadata.max_version), (0, 12));
    }

    // A version from the future: a v0 body with UNSUPPORTED_VERSION and our ranges.
    let mut bytes = BytesMut::new();
    bytes.put_i16(ApiKey::ApiVersions as i16);
    bytes.put_i16(99);
    bytes.put_i32(5);
    bytes.put_slice(&[0xde, 0xad]); // a header and body we cannot parse
    let decoded = decode_request(&bytes).expect("decode");
    let Decoded::ApiVersionsFallback(id) = decoded else {
        panic!("expected the fallback, got {decoded:?}");
    };
    assert_eq!(
        id,
        RequestId {
            api_key: 18,
            api_version: 99,
            correlation_id: 5
        }
    );
    let out = encode_response(
        id,
        &Response::ApiVersions(weir_kafka::api_versions::response(
            weir_kafka::api_versions::UNSUPPORTED_VERSION,
        )),
        true,
    )
    .expect("encode");
    let (correlation, mut body) = response_body(&out, ApiKey::ApiVersions, 0);
    assert_eq!(correlation, 5);
    let response = ApiVersionsResponse::decode(&mut body, 0).expect("v0 body");
    assert_eq!(response.error_code, 35);
    assert!(response
        .api_keys
        .iter()
        .any(|k| k.api_key == 18 && k.max_version == 4));
}

#[test]
fn metadata_response_decodes_at_every_version() {
    let node = weir_kafka::metadata::Node {
        node_id: 0,
        host: "127.0.0.1".into(),
        port: 9092,
    };
    let topics = [weir_kafka::metadata::TopicInfo {
        name: "orders".into(),
        topic_id: [7; 16],
        error_code: 0,
        partitions: vec![
            weir_kafka::metadata::PartitionInfo {
                index: 0,
                error_code: 0,
            },
            weir_kafka::metadata::PartitionInfo {
                index: 1,
                error_code: 0,
            },
        ],
    }];
    for version in 0..=12 {
        let id = RequestId {
            api_key: 3,
            api_version: version,
            correlation_id: 11,
        };
        let out = encode_response(
            id,
            &Response::Metadata(weir_kafka::metadata::response(&node, "weir", &topics)),
            false,
        )
        .expect("encode");
        let (correlation, mut body) = response_body(&out, ApiKey::Metadata, version);
        assert_eq!(correlation, 11);
        let response = MetadataResponse::decode(&mut body, version).expect("decode");
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.brokers[0].port, 9092);
        assert_eq!(response.topics[0].partitions.len(), 2);
        assert_eq!(
            response.topics[0].name.as_ref().map(|n| n.0.as_str()),
            Some("orders")
        );
    }
}

#[test]
fn unknown_keys_and_garbage_are_handled_without_panicking() {
    let mut bytes = BytesMut::new();
    bytes.put_i16(999);
    bytes.put_i16(0);
    bytes.put_i32(1);
    assert!(matches!(
        decode_request(&bytes),
        Ok(Decoded::Unsupported(_))
    ));
    // Metadata v0 declaring 2^31-1 topics in 4 bytes: refused, nothing allocated.
    let mut bytes = BytesMut::new();
    bytes.put_i16(3);
    bytes.put_i16(0);
    bytes.put_i32(1);
    bytes.put_i16(-1); // client id null
    bytes.put_slice(&[0x7f, 0xff, 0xff, 0xff]);
    assert!(decode_request(&bytes).is_err());
    // Every prefix of a valid request is an error, never a panic.
    let request = MetadataRequest::default().with_topics(Some(vec![]));
    let full = frame(ApiKey::Metadata, 12, 1, &request);
    for cut in 0..full.len() {
        assert!(decode_request(&full[..cut]).is_err(), "prefix {cut}");
    }
}

#[test]
fn produce_fetch_list_offsets_requests_decode_at_every_version() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, ProduceRequest};

    let records = bytes::Bytes::from_static(b"pretend-these-are-record-batches");
    for version in 3..=12 {
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1500)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(2)
                        .with_records(Some(records.clone())),
                    PartitionProduceData::default()
                        .with_index(5)
                        .with_records(None),
                ])]);
        let bytes = frame(ApiKey::Produce, version, 3, &request);
        let Ok(Decoded::Request {
            request: Request::Produce(p),
            ..
        }) = decode_request(&bytes)
        else {
            panic!("produce v{version}");
        };
        assert_eq!((p.acks, p.timeout_ms), (-1, 1500));
        assert_eq!(p.topics[0].name, "orders");
        let part = &p.topics[0].partitions[0];
        assert_eq!(part.index, 2);
        let range = part.records.clone().expect("records");
        assert_eq!(&bytes[range], &records[..], "v{version}: records range");
        assert_eq!(p.topics[0].partitions[1].records, None);
    }
    for version in 4..=12 {
        let request = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(52428800)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(1)
                    .with_fetch_offset(42)
                    .with_partition_max_bytes(1048576)])]);
        let bytes = frame(ApiKey::Fetch, version, 4, &request);
        let Ok(Decoded::Request {
            request: Request::Fetch(f),
            ..
        }) = decode_request(&bytes)
        else {
            panic!("fetch v{version}");
        };
        assert_eq!(
            (f.max_wait_ms, f.min_bytes, f.max_bytes),
            (500, 1, 52428800)
        );
        assert_eq!(f.topics[0].name, "orders");
        assert_eq!(
            f.topics[0].partitions[0],
            weir_kafka::fetch::FetchPartition {
                index: 1,
                fetch_offset: 42,
                partition_max_bytes: 1048576
            }
        );
    }
    for version in 1..=7 {
        let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2)])]);
        let bytes = frame(ApiKey::ListOffsets, version, 5, &request);
        let Ok(Decoded::Request {
            request: Request::ListOffsets(l),
            ..
        }) = decode_request(&bytes)
        else {
            panic!("list offsets v{version}");
        };
        assert_eq!(l.topics, vec![("orders".to_string(), vec![(0, -2)])]);
    }
}

#[test]
fn produce_fetch_list_offsets_responses_encode_at_every_served_version() {
    use kafka_protocol::messages::{FetchResponse, ListOffsetsResponse, ProduceResponse};
    use weir_kafka::{fetch, list_offsets, produce};
    let id = |key: ApiKey, version| RequestId {
        api_key: key as i16,
        api_version: version,
        correlation_id: 77,
    };
    for version in 3..=12 {
        let response = produce::response(vec![(
            "orders".into(),
            vec![produce::PartitionResult {
                index: 0,
                error_code: 0,
                base_offset: 41,
                log_append_time_ms: -1,
                log_start_offset: 0,
                error_message: None,
            }],
        )]);
        let out = encode_response(
            id(ApiKey::Produce, version),
            &Response::Produce(response),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (_, mut body) = response_body(&out, ApiKey::Produce, version);
        let decoded = ProduceResponse::decode(&mut body, version).expect("decode");
        assert_eq!(decoded.responses[0].partition_responses[0].base_offset, 41);
    }
    for version in 4..=12 {
        let response = fetch::response(vec![(
            "orders".into(),
            vec![fetch::FetchedPartition {
                index: 0,
                error_code: 0,
                high_watermark: 10,
                log_start_offset: 0,
                records: bytes::Bytes::from_static(b"batches"),
            }],
        )]);
        let out = encode_response(
            id(ApiKey::Fetch, version),
            &Response::Fetch(response),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (_, mut body) = response_body(&out, ApiKey::Fetch, version);
        let decoded = FetchResponse::decode(&mut body, version).expect("decode");
        let part = &decoded.responses[0].partitions[0];
        assert_eq!(part.high_watermark, 10);
        assert_eq!(part.records.as_deref(), Some(&b"batches"[..]));
    }
    for version in 1..=7 {
        let response = list_offsets::response(
            version,
            vec![(
                "orders".into(),
                vec![list_offsets::OffsetFound {
                    index: 0,
                    error_code: 0,
                    timestamp: -1,
                    offset: 5,
                }],
            )],
        );
        let out = encode_response(
            id(ApiKey::ListOffsets, version),
            &Response::ListOffsets(response),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (_, mut body) = response_body(&out, ApiKey::ListOffsets, version);
        let decoded = ListOffsetsResponse::decode(&mut body, version).expect("decode");
        assert_eq!(decoded.topics[0].partitions[0].offset, 5);
    }
}

#[test]
fn admin_requests_and_responses_at_every_version() {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{
        CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
        CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    };
    use weir_kafka::admin;
    let id = |key: ApiKey, version| RequestId {
        api_key: key as i16,
        api_version: version,
        correlation_id: 9,
    };
    for version in 2..=7 {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("new-topic")))
                .with_num_partitions(3)
                .with_replication_factor(1)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("60000")))])])
            .with_timeout_ms(1000)
            .with_validate_only(true);
        let bytes = frame(ApiKey::CreateTopics, version, 1, &request);
        let Ok(Decoded::Request {
            request: Request::CreateTopics(c),
            ..
        }) = decode_request(&bytes)
        else {
            panic!("create topics v{version}");
        };
        assert!(c.validate_only);
        assert_eq!(c.topics[0].name, "new-topic");
        assert_eq!(c.topics[0].num_partitions, 3);
        assert_eq!(
            c.topics[0].configs,
            vec![("retention.ms".to_string(), Some("60000".to_string()))]
        );
        for error_code in [0, 36] {
            let response = admin::create_topics_response(
                version,
                vec![admin::CreatedTopic {
                    name: "new-topic".into(),
                    topic_id: [1; 16],
                    error_code,
                    error_message: (error_code != 0).then(|| "exists".into()),
                    num_partitions: 3,
                }],
            );
            let out = encode_response(
                id(ApiKey::CreateTopics, version),
                &Response::CreateTopics(response),
                false,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let (_, mut body) = response_body(&out, ApiKey::CreateTopics, version);
            let decoded = CreateTopicsResponse::decode(&mut body, version).expect("decode");
            assert_eq!(decoded.topics[0].error_code, error_code);
        }
    }
    for version in 1..=6 {
        let mut request = DeleteTopicsRequest::default().with_timeout_ms(1000);
        if version >= 6 {
            request = request.with_topics(vec![DeleteTopicState::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("old"))))]);
        } else {
            request = request.with_topic_names(vec![TopicName(StrBytes::from_static_str("old"))]);
        }
        let bytes = frame(ApiKey::DeleteTopics, version, 1, &request);
        let Ok(Decoded::Request {
            request: Request::DeleteTopics(d),
            ..
        }) = decode_request(&bytes)
        else {
            panic!("delete topics v{version}");
        };
        assert_eq!(d.topics[0].0.as_deref(), Some("old"));
        let response = admin::delete_topics_response(version, vec![("old".into(), [2; 16], 0)]);
        let out = encode_response(
            id(ApiKey::DeleteTopics, version),
            &Response::DeleteTopics(response),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (_, mut body) = response_body(&out, ApiKey::DeleteTopics, version);
        DeleteTopicsResponse::decode(&mut body, version).expect("decode");
    }
    for version in 0..=3 {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("grow")))
                .with_count(6)])
            .with_timeout_ms(1000);
        let bytes = frame(ApiKey::CreatePartitions, version, 1, &request);
        let Ok(Decoded::Request {
            request: Request::CreatePartitions(c),
            ..
        }) = decode_request(&bytes)
        else {
            panic!("create partitions v{version}");
        };
        assert_eq!(c.topics, vec![("grow".to_string(), 6)]);
        let response =
            admin::create_partitions_response(vec![("grow".into(), 37, Some("no".into()))]);
        let out = encode_response(
            id(ApiKey::CreatePartitions, version),
            &Response::CreatePartitions(response),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (_, mut body) = response_body(&out, ApiKey::CreatePartitions, version);
        let decoded = CreatePartitionsResponse::decode(&mut body, version).expect("decode");
        assert_eq!(decoded.results[0].error_code, 37);
    }
}

#[test]
fn config_and_delete_records_responses_encode_at_every_served_version() {
    use weir_kafka::{configs, delete_records};
    let id = |key: ApiKey, version| RequestId {
        api_key: key as i16,
        api_version: version,
        correlation_id: 3,
    };
    let described = || {
        configs::describe_response(vec![configs::Described {
            resource_type: configs::RESOURCE_TOPIC,
            name: "t".into(),
            error_code: 0,
            error_message: None,
            entries: vec![configs::ConfigEntry {
                name: "retention.ms".into(),
                value: "1000".into(),
                is_default: false,
                read_only: false,
            }],
        }])
    };
    let altered = || vec![(configs::RESOURCE_TOPIC, "t".to_string(), 0i16, None)];
    for (key, versions) in [
        (ApiKey::DescribeConfigs, 1..=4),
        (ApiKey::AlterConfigs, 0..=2),
        (ApiKey::IncrementalAlterConfigs, 0..=1),
        (ApiKey::DeleteRecords, 0..=2),
    ] {
        for version in versions {
            let response = match key {
                ApiKey::DescribeConfigs => Response::DescribeConfigs(described()),
                ApiKey::AlterConfigs => Response::AlterConfigs(configs::alter_response(altered())),
                ApiKey::IncrementalAlterConfigs => {
                    Response::IncrementalAlterConfigs(configs::incremental_response(altered()))
                }
                _ => Response::DeleteRecords(delete_records::response(vec![(
                    "t".into(),
                    vec![(0, 5, 0)],
                )])),
            };
            encode_response(id(key, version), &response, false)
                .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
        }
    }
    // v4 as a client reads it: the entry's type is Kafka's, and no documentation was asked for.
    let bytes = encode_response(
        id(ApiKey::DescribeConfigs, 4),
        &Response::DescribeConfigs(described()),
        false,
    )
    .expect("encodes");
    let (_, mut body) = response_body(&bytes, ApiKey::DescribeConfigs, 4);
    let decoded =
        kafka_protocol::messages::DescribeConfigsResponse::decode(&mut body, 4).expect("decodes");
    let entry = &decoded.results[0].configs[0];
    assert_eq!(entry.config_type, 5, "retention.ms is a LONG");
    assert_eq!(entry.documentation, None);
}

#[test]
fn describe_cluster_round_trips_at_every_version() {
    use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};
    use weir_kafka::describe_cluster;
    use weir_kafka::metadata::Node;
    let (_, min, max) = api::supported_range(ApiKey::DescribeCluster as i16).expect("served");
    let node = Node {
        node_id: 0,
        host: "broker.example".into(),
        port: 9092,
    };
    for version in min..=max {
        let mut request = DescribeClusterRequest::default()
            .with_include_cluster_authorized_operations(version % 2 == 0);
        if version >= 1 {
            request = request.with_endpoint_type(1);
        }
        let bytes = frame(ApiKey::DescribeCluster, version, 11, &request);
        let Ok(Decoded::Request {
            request: Request::DescribeCluster(decoded),
            ..
        }) = decode_request(&bytes)
        else {
            panic!("v{version}: not decoded");
        };
        assert_eq!(
            decoded.include_cluster_authorized_operations,
            version % 2 == 0
        );
        for cut in 0..bytes.len() {
            assert!(
                decode_request(&bytes[..cut]).is_err(),
                "v{version} cut {cut}"
            );
        }
        let id = RequestId {
            api_key: ApiKey::DescribeCluster as i16,
            api_version: version,
            correlation_id: 11,
        };
        let built = describe_cluster::response(version, &decoded, &node, "cluster-x");
        let encoded =
            encode_response(id, &Response::DescribeCluster(built), false).expect("encodes");
        let (correlation, mut body) = response_body(&encoded, ApiKey::DescribeCluster, version);
        assert_eq!(correlation, 11);
        let response = DescribeClusterResponse::decode(&mut body, version).expect("decodes");
        assert_eq!(response.error_code, 0);
        assert_eq!(response.cluster_id.as_str(), "cluster-x");
        assert_eq!(response.controller_id.0, 0);
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.brokers[0].host.as_str(), "broker.example");
        assert_eq!(response.brokers[0].port, 9092);
    }
    // Controllers are not exposed separately: UNSUPPORTED_ENDPOINT_TYPE.
    let request = describe_cluster::DescribeClusterRequest {
        include_cluster_authorized_operations: false,
        endpoint_type: 2,
    };
    let built = describe_cluster::response(1, &request, &node, "c");
    assert_eq!(built.error_code, 115);
    assert!(built.brokers.is_empty());
}
