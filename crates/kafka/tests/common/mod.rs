//! What the codec tests share: request frames from kafka-protocol's encoders, response frames
//! taken apart for its decoders.

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A request frame (without its size prefix) as a client sends it.
pub fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Vec<u8> {
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

/// The correlation id and body of a response frame, after checking its size prefix.
pub fn response_body(bytes: &[u8], key: ApiKey, version: i16) -> (i32, bytes::Bytes) {
    let size = i32::from_be_bytes(bytes[..4].try_into().expect("size")) as usize;
    assert_eq!(size, bytes.len() - 4);
    let mut buf = bytes::Bytes::copy_from_slice(&bytes[4..]);
    let header = ResponseHeader::decode(&mut buf, key.response_header_version(version))
        .expect("response header");
    (header.correlation_id, buf)
}
