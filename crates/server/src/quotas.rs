//! Client quotas at the edge: charges a Produce's request bytes or a Fetch's record bytes to
//! the client id's quota (`weir_broker::quota`) and writes the throttle into the response.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir_broker::quota::Kind;
use weir_kafka::Response;

use crate::broker::Broker;

/// Charges `response`'s request to `client_id` and returns the throttle, also set as the
/// response's `throttle_time_ms` (Produce and Fetch from v1). `request_bytes` is the Produce
/// frame's size; a Fetch is charged its record bytes.
pub(crate) fn charge(
    broker: &Broker,
    client_id: Option<&str>,
    request_bytes: usize,
    version: i16,
    response: &mut Response,
) -> Duration {
    if !broker.quotas_on.load(Ordering::Relaxed) {
        return Duration::ZERO;
    }
    let (kind, bytes) = match response {
        Response::Produce(_) => (Kind::Produce, request_bytes),
        Response::Fetch(r) => {
            let bytes = r
                .responses
                .iter()
                .flat_map(|t| t.partitions.iter())
                .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
                .sum();
            (Kind::Fetch, bytes)
        }
        _ => return Duration::ZERO,
    };
    let throttle = broker
        .quotas
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(client_id.unwrap_or(""), kind, bytes as u64, Instant::now());
    let ms = i32::try_from(throttle.as_millis()).unwrap_or(i32::MAX);
    if version >= 1 && ms > 0 {
        match response {
            Response::Produce(r) => r.throttle_time_ms = ms,
            Response::Fetch(r) => r.throttle_time_ms = ms,
            _ => {}
        }
    }
    throttle
}
