//! Our request decoders against the kafka-protocol crate's encoders (what real clients send),
//! and our responses through its decoders (what real clients read), for every served version.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{
    metadata_request::MetadataRequestTopic, ApiKey, ApiVersionsRequest, ApiVersionsResponse,
    MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use weir_kafka::{api, decode_request, encode_response, Decoded, Request, RequestId, Response};

fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("codec-test")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    buf.to_vec()
}

fn response_body(bytes: &[u8], key: ApiKey, version: i16) -> (i32, bytes::Bytes) {
    let size = i32::from_be_bytes(bytes[..4].try_into().expect("size")) as usize;
    assert_eq!(size, bytes.len() - 4);
    let mut buf = bytes::Bytes::copy_from_slice(&bytes[4..]);
    let header = ResponseHeader::decode(&mut buf, key.response_header_version(version))
        .expect("response header");
    (header.correlation_id, buf)
}

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
        );
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
    );
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
        );
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
