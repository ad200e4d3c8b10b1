//! The REST routes. Each reaches the broker the way a Kafka request does: partitions through
//! their owners' mailboxes, groups through their coordinators, topics through the registry.
//! The routes are listed once, in [`ROUTES`], which `/openapi.json` is checked against.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::oneshot;
use weir_broker::topics::{Topic, TopicError};
use weir_kafka::error_code;

use super::http::{Request, Response};
use super::records::{self, Encoding, NewRecord};
use crate::broker::Broker;
use crate::coordinator::GroupMsg;
use crate::partition::{FetchOutcome, PartitionSummary, ProduceOutcome, ShardMsg};

/// Every route: method and path pattern (`{name}` is one path segment), as in `/openapi.json`.
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/topics"),
    ("POST", "/topics"),
    ("GET", "/topics/{topic}"),
    ("DELETE", "/topics/{topic}"),
    ("POST", "/topics/{topic}/records"),
    ("GET", "/topics/{topic}/partitions/{partition}/records"),
    ("GET", "/groups"),
    ("GET", "/groups/{group}"),
    ("GET", "/groups/{group}/offsets"),
    ("GET", "/ws"),
];

/// The dashboard: one page, its script and styles inline, nothing fetched from elsewhere.
const DASHBOARD: &str = include_str!("dashboard/index.html");

/// The OpenAPI document served at `/openapi.json`.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// Longest `wait_ms` a REST fetch may ask for (as a Kafka Fetch's `max_wait_ms`).
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// Stored bytes a REST fetch turns into JSON on the reactor; more goes to the blocking pool.
const DECODE_ON_REACTOR_BYTES: usize = 256 * 1024;
/// `max_bytes` of a REST fetch that does not say.
const FETCH_MAX_BYTES_DEFAULT: u64 = 1024 * 1024;

pub(crate) async fn route(broker: &Arc<Broker>, request: &Request) -> Response {
    let segments: Vec<&str> = request.segments.iter().map(String::as_str).collect();
    let method = request.method.as_str();
    // A JSON body must say so. Besides being right, this keeps other sites' pages from posting
    // here through a visitor's browser: a cross-site request with this content type needs a
    // CORS preflight, which is not granted.
    let json = request
        .header("content-type")
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if method == "POST" && !json {
        return Response::error(
            415,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        );
    }
    let response = match (method, segments.as_slice()) {
        ("GET", []) => Response::new(200, "text/html; charset=utf-8", DASHBOARD),
        ("GET", ["health"]) => Response::new(200, "text/plain", "ok\n"),
        ("GET", ["metrics"]) => Response::new(
            200,
            "text/plain; version=0.0.4",
            crate::metrics::render(broker),
        ),
        ("GET", ["openapi.json"]) => Response::new(200, "application/json", OPENAPI),
        ("GET", ["topics"]) => list_topics(broker),
        ("POST", ["topics"]) => create_topic(broker, &request.body).await,
        ("GET", ["topics", topic]) => describe_topic(broker, topic).await,
        ("DELETE", ["topics", topic]) => delete_topic(broker, topic).await,
        ("POST", ["topics", topic, "records"]) => produce(broker, topic, &request.body).await,
        ("GET", ["topics", topic, "partitions", partition, "records"]) => {
            fetch(broker, topic, partition, request).await
        }
        ("GET", ["groups"]) => list_groups(broker).await,
        ("GET", ["groups", group]) => describe_group(broker, group).await,
        ("GET", ["groups", group, "offsets"]) => group_offsets(broker, group).await,
        // An upgrade is taken before routing; this is a plain GET.
        ("GET", ["ws"]) => Response::error(
            426,
            "upgrade_required",
            "/ws is a WebSocket: open it with Upgrade: websocket",
        )
        .with_header("upgrade", "websocket"),
        _ => {
            let allowed: Vec<&str> = ROUTES
                .iter()
                .filter(|(_, pattern)| matches(pattern, &segments))
                .map(|(m, _)| *m)
                .collect();
            if allowed.is_empty() {
                Response::error(404, "not_found", format!("no route {}", request.path))
            } else {
                Response::error(
                    405,
                    "method_not_allowed",
                    format!(
                        "{} {} is not served; use {}",
                        method,
                        request.path,
                        allowed.join(", ")
                    ),
                )
                .with_header("allow", allowed.join(", "))
            }
        }
    };
    response
}

/// Whether a route pattern matches the path's segments.
pub(crate) fn matches(pattern: &str, segments: &[&str]) -> bool {
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    parts.len() == segments.len()
        && parts
            .iter()
            .zip(segments)
            .all(|(p, s)| p.starts_with('{') || p == s)
}

fn body_error(message: impl Into<String>) -> Response {
    Response::error(400, "bad_request", message)
}

fn unknown_topic(topic: &str) -> Response {
    Response::error(
        404,
        "unknown_topic",
        format!("topic {topic:?} does not exist"),
    )
}

/// The HTTP answer for a Kafka error code from a partition owner or a coordinator.
fn kafka_error(code: i16, message: Option<String>) -> Response {
    let (status, name, default) = match code {
        error_code::OFFSET_OUT_OF_RANGE => {
            (416, "offset_out_of_range", "the offset is outside the log")
        }
        error_code::CORRUPT_MESSAGE => (400, "corrupt_message", "the records are malformed"),
        error_code::UNKNOWN_TOPIC_OR_PARTITION => (
            404,
            "unknown_topic_or_partition",
            "no such topic or partition",
        ),
        error_code::MESSAGE_TOO_LARGE => (
            413,
            "message_too_large",
            "the batch is over the topic's max.message.bytes",
        ),
        error_code::INVALID_GROUP_ID => (400, "invalid_group_id", "invalid group id"),
        error_code::GROUP_ID_NOT_FOUND => (404, "group_not_found", "no such group"),
        error_code::COORDINATOR_NOT_AVAILABLE | error_code::COORDINATOR_LOAD_IN_PROGRESS => (
            503,
            "coordinator_not_available",
            "the group's coordinator is not available; retry",
        ),
        error_code::KAFKA_STORAGE_ERROR => {
            (503, "storage_error", "the partition's log is not available")
        }
        _ => (500, "kafka_error", "the broker failed the request"),
    };
    let message = message.unwrap_or_else(|| format!("{default} (Kafka error code {code})"));
    Response::error(status, name, message)
}

fn topic_error(error: &TopicError) -> Response {
    let (status, name) = match error {
        TopicError::InvalidName(_) => (400, "invalid_topic"),
        TopicError::Exists(_) => (409, "topic_exists"),
        TopicError::InvalidPartitions(_) | TopicError::PartitionsCannotShrink { .. } => {
            (400, "invalid_partitions")
        }
        TopicError::Config(_) | TopicError::Invalid(_) => (400, "invalid_config"),
        TopicError::Unknown(_) => (404, "unknown_topic"),
        TopicError::Io { .. } | TopicError::Corrupt { .. } => (500, "storage_error"),
    };
    Response::error(status, name, error.to_string())
}

fn topic_id(topic: &Topic) -> String {
    topic.id.iter().map(|b| format!("{b:02x}")).collect()
}

fn list_topics(broker: &Broker) -> Response {
    let topics: Vec<Value> = broker
        .topics
        .snapshot()
        .values()
        .map(|t| json!({"name": t.name, "id": topic_id(t), "partitions": t.partitions}))
        .collect();
    Response::json(200, &json!({ "topics": topics }))
}

/// `{"name", "partitions"?, "configs"?: {"retention.ms": "..."}}`; 201 with the topic.
async fn create_topic(broker: &Arc<Broker>, body: &[u8]) -> Response {
    let doc: Value = match serde_json::from_slice(body) {
        Ok(doc) => doc,
        Err(e) => return body_error(format!("the body is not JSON: {e}")),
    };
    let Some(doc) = doc.as_object() else {
        return body_error("the body must be a JSON object");
    };
    if let Some(key) = doc
        .keys()
        .find(|k| !["name", "partitions", "configs"].contains(&k.as_str()))
    {
        return body_error(format!(
            "unknown field {key:?} (expected name, partitions, configs)"
        ));
    }
    let Some(name) = doc.get("name").and_then(Value::as_str) else {
        return body_error("\"name\" must be the topic's name");
    };
    let partitions = match doc.get("partitions") {
        None | Some(Value::Null) => broker.config.num_partitions,
        Some(p) => match p.as_i64().and_then(|p| i32::try_from(p).ok()) {
            Some(p) => p,
            None => return body_error("\"partitions\" must be an integer"),
        },
    };
    let mut entries = Vec::new();
    match doc.get("configs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(configs)) => {
            for (key, value) in configs {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return body_error(format!("configs.{key} must be a string or a number")),
                };
                entries.push((key.clone(), Some(value)));
            }
        }
        Some(_) => return body_error("\"configs\" must be an object of Kafka topic configs"),
    }
    let config = match crate::admin::topic_config(&entries) {
        Ok(config) => config,
        Err(e) => return Response::error(400, "invalid_config", e),
    };
    let b = broker.clone();
    let creating = name.to_string();
    match tokio::task::spawn_blocking(move || b.topics.create(&creating, partitions, config)).await
    {
        Ok(Ok(topic)) => Response::json(
            201,
            &json!({"name": topic.name, "id": topic_id(&topic), "partitions": topic.partitions}),
        ),
        Ok(Err(e)) => topic_error(&e),
        Err(_) => Response::error(500, "internal", "topic creation failed"),
    }
}

/// Each partition's summary, asked of all owners at once.
async fn summaries(broker: &Broker, topic: &Arc<Topic>) -> Vec<Result<PartitionSummary, i16>> {
    let mut pending = Vec::new();
    for partition in 0..topic.partitions {
        let (reply, answer) = oneshot::channel();
        let msg = ShardMsg::Describe {
            topic: topic.clone(),
            partition,
            reply,
        };
        let sent = broker.mailbox(&topic.name, partition).send(msg).await;
        pending.push(sent.ok().map(|()| answer));
    }
    let mut out = Vec::new();
    for answer in pending {
        let summary = match answer {
            Some(answer) => answer.await.unwrap_or(Err(error_code::KAFKA_STORAGE_ERROR)),
            None => Err(error_code::KAFKA_STORAGE_ERROR),
        };
        out.push(summary);
    }
    out
}

async fn describe_topic(broker: &Arc<Broker>, name: &str) -> Response {
    let Some(topic) = broker.topics.get(name) else {
        return unknown_topic(name);
    };
    let partitions: Vec<Value> = summaries(broker, &topic)
        .await
        .into_iter()
        .enumerate()
        .map(|(p, summary)| match summary {
            Ok(s) => json!({
                "partition": p,
                "log_start_offset": s.log_start_offset,
                "high_watermark": s.log_end_offset,
                "size_bytes": s.size_bytes,
            }),
            Err(code) => json!({"partition": p, "error": format!("Kafka error code {code}")}),
        })
        .collect();
    let configs: serde_json::Map<String, Value> = topic
        .config
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
    Response::json(
        200,
        &json!({
            "name": topic.name,
            "id": topic_id(&topic),
            "partitions": partitions,
            "configs": configs,
        }),
    )
}

async fn delete_topic(broker: &Arc<Broker>, name: &str) -> Response {
    if broker.topics.get(name).is_none() {
        return unknown_topic(name);
    }
    match crate::admin::delete_topic(broker, name).await {
        Ok(_) => Response::new(204, "", Vec::new()),
        Err(code) if code == error_code::UNKNOWN_TOPIC_OR_PARTITION => unknown_topic(name),
        Err(code) => kafka_error(code, None),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Appends the records, one batch per partition, as a Kafka producer with acks=all would:
/// keyed records without a partition go where the Java client would put them (murmur2), the
/// unkeyed ones of one request together to one partition, the next request's to the next.
async fn produce(broker: &Arc<Broker>, name: &str, body: &[u8]) -> Response {
    let Some(topic) = broker.topics.get(name) else {
        return unknown_topic(name);
    };
    let records = match records::parse_produce(body) {
        Ok(records) => records,
        Err(e) => return body_error(e),
    };
    let (status, body) = produce_records(broker, &topic, records).await;
    Response::json(status, &body)
}

/// Appends parsed records to `topic`: (HTTP status, JSON answer), for REST and WebSocket.
pub(crate) async fn produce_records(
    broker: &Arc<Broker>,
    topic: &Arc<Topic>,
    records: Vec<NewRecord>,
) -> (u16, Value) {
    let name = topic.name.as_str();
    let n = topic.partitions;
    if let Some((i, p)) = records
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.partition.filter(|p| *p >= n).map(|p| (i, p)))
    {
        let message = format!("records[{i}]: partition {p} does not exist; topic {name:?} has {n}");
        return (
            404,
            json!({"error": "unknown_partition", "message": message}),
        );
    }
    let sticky = (broker.http_round_robin.fetch_add(1, Ordering::Relaxed) % n as usize) as i32;
    let partition_of = |r: &NewRecord| match (r.partition, &r.key) {
        (Some(p), _) => p,
        (None, Some(key)) => weir_broker::partitioner::partition_for_key(key, n),
        (None, None) => sticky,
    };
    let chosen: Vec<i32> = records.iter().map(partition_of).collect();
    let mut partitions: Vec<i32> = chosen.clone();
    partitions.sort_unstable();
    partitions.dedup();
    let now = now_ms();
    let mut pending = Vec::new();
    for &partition in &partitions {
        let batch: Vec<&NewRecord> = records
            .iter()
            .zip(&chosen)
            .filter(|(_, p)| **p == partition)
            .map(|(r, _)| r)
            .collect();
        let bytes = records::batch_of(&batch, now);
        let size = bytes.len() as u64;
        let (reply, answer) = oneshot::channel();
        let msg = ShardMsg::Produce {
            topic: topic.clone(),
            partition,
            records: bytes,
            wait_durable: true,
            reply,
        };
        let sent = broker.mailbox(name, partition).send(msg).await;
        pending.push((partition, size, sent.ok().map(|()| answer)));
    }
    let mut outcomes = std::collections::HashMap::new();
    for (partition, size, answer) in pending {
        let outcome = match answer {
            Some(answer) => answer
                .await
                .unwrap_or_else(|_| ProduceOutcome::error(error_code::KAFKA_STORAGE_ERROR)),
            None => ProduceOutcome::error(error_code::KAFKA_STORAGE_ERROR),
        };
        if outcome.error_code == error_code::NONE {
            let counters = broker.metrics.topic(name);
            counters.bytes_in.fetch_add(size, Ordering::Relaxed);
            counters
                .records_in
                .fetch_add(outcome.records, Ordering::Relaxed);
        }
        outcomes.insert(partition, outcome);
    }
    // Each record's place: its partition's base offset plus its rank in that batch.
    let mut rank = std::collections::HashMap::new();
    let mut failed = None;
    let results: Vec<Value> = chosen
        .iter()
        .map(|p| {
            let outcome = &outcomes[p];
            let k = rank.entry(*p).or_insert(0i64);
            let at = *k;
            *k += 1;
            if outcome.error_code == error_code::NONE {
                json!({"partition": p, "offset": outcome.base_offset + at})
            } else {
                failed.get_or_insert((outcome.error_code, outcome.message.clone()));
                json!({"partition": p, "error": outcome.message.clone()
                    .unwrap_or_else(|| format!("Kafka error code {}", outcome.error_code))})
            }
        })
        .collect();
    match failed {
        None => (200, json!({ "offsets": results })),
        Some((code, message)) => {
            // The status of the first failure; the body still says which records were written.
            let error = kafka_error(code, message);
            let mut body: Value = serde_json::from_slice(&error.body).unwrap_or_else(|_| json!({}));
            body["offsets"] = Value::Array(results);
            (error.status, body)
        }
    }
}

fn query_number<T: std::str::FromStr>(
    request: &Request,
    name: &str,
) -> Result<Option<T>, Response> {
    match request.query(name) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| body_error(format!("{name}={v:?} is not a valid number"))),
    }
}

/// `?offset=` (default: the log start), `max_bytes=` (of stored batches, default 1 MiB; the
/// first batch is whole whatever its size, as with Kafka), `max_records=`, `wait_ms=` (long
/// poll when nothing is there yet, default 0), `encoding=base64|utf8`.
async fn fetch(broker: &Arc<Broker>, name: &str, partition: &str, request: &Request) -> Response {
    let Some(topic) = broker.topics.get(name) else {
        return unknown_topic(name);
    };
    let partition = match partition.parse::<i32>() {
        Ok(p) if (0..topic.partitions).contains(&p) => p,
        _ => {
            return Response::error(
                404,
                "unknown_partition",
                format!(
                    "partition {partition:?} does not exist; topic {name:?} has {}",
                    topic.partitions
                ),
            )
        }
    };
    let parsed = (|| {
        Ok::<_, Response>((
            query_number::<i64>(request, "offset")?,
            query_number::<u64>(request, "max_bytes")?.unwrap_or(FETCH_MAX_BYTES_DEFAULT),
            query_number::<usize>(request, "max_records")?
                .unwrap_or(broker.config.http_fetch_max_records),
            query_number::<u64>(request, "wait_ms")?.unwrap_or(0),
            Encoding::parse(request.query("encoding")).map_err(body_error)?,
        ))
    })();
    let (offset, max_bytes, max_records, wait_ms, encoding) = match parsed {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let max_bytes = max_bytes.clamp(1, broker.config.fetch_max_bytes as u64);
    let max_records = max_records.clamp(1, broker.config.http_fetch_max_records.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms).min(FETCH_WAIT_MAX);
    let mut offset = offset;
    loop {
        let start = match offset {
            Some(offset) => offset,
            None => match summaries_of(broker, &topic, partition).await {
                Ok(s) => s.log_start_offset,
                Err(code) => return kafka_error(code, None),
            },
        };
        offset = Some(start);
        let outcome = crate::connection::ask(broker, name, partition, |reply| ShardMsg::Fetch {
            topic: topic.clone(),
            partition,
            offset: start,
            max_bytes: Some(max_bytes),
            reply,
        })
        .await
        .unwrap_or_else(|| FetchOutcome::error(error_code::KAFKA_STORAGE_ERROR));
        if outcome.error_code != error_code::NONE {
            let mut error = kafka_error(outcome.error_code, None);
            if outcome.error_code == error_code::OFFSET_OUT_OF_RANGE {
                if let Ok(s) = summaries_of(broker, &topic, partition).await {
                    error = Response::json(
                        416,
                        &json!({
                            "error": "offset_out_of_range",
                            "message": format!("offset {start} is outside the log [{}, {}]", s.log_start_offset, s.log_end_offset),
                            "log_start_offset": s.log_start_offset,
                            "high_watermark": s.log_end_offset,
                        }),
                    );
                }
            }
            return error;
        }
        let waiting = outcome.records.is_empty() && tokio::time::Instant::now() < deadline;
        if let (true, Some(mut end)) = (waiting, outcome.end) {
            // Long poll: woken when the log end moves, never by polling.
            let _ = tokio::time::timeout_at(deadline, end.changed()).await;
            continue;
        }
        let budget = broker.config.http_decompressed_batch_max_bytes;
        let decoded = if outcome.records.len() <= DECODE_ON_REACTOR_BYTES {
            records::decode(&outcome.records, start, max_records, encoding, budget)
        } else {
            // Decompressing and encoding megabytes is CPU work the reactor must not do.
            let bytes = outcome.records.clone();
            tokio::task::spawn_blocking(move || {
                records::decode(&bytes, start, max_records, encoding, budget)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        };
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(e) => return Response::error(500, "unreadable_records", e),
        };
        // The records this client gets (a fetch may start inside a batch and stop at
        // max_records), and the stored bytes read for them.
        let counters = broker.metrics.topic(name);
        let records = decoded.records.len() as u64;
        counters.records_out.fetch_add(records, Ordering::Relaxed);
        let bytes = outcome.records.len() as u64;
        counters.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        return Response::json(
            200,
            &json!({
                "topic": name,
                "partition": partition,
                "log_start_offset": outcome.log_start_offset,
                "high_watermark": outcome.high_watermark,
                "next_offset": decoded.next_offset,
                "records": decoded.records,
            }),
        );
    }
}

async fn summaries_of(
    broker: &Broker,
    topic: &Arc<Topic>,
    partition: i32,
) -> Result<PartitionSummary, i16> {
    crate::connection::ask(broker, &topic.name, partition, |reply| ShardMsg::Describe {
        topic: topic.clone(),
        partition,
        reply,
    })
    .await
    .unwrap_or(Err(error_code::KAFKA_STORAGE_ERROR))
}

async fn list_groups(broker: &Arc<Broker>) -> Response {
    let mut groups = Vec::new();
    for mailbox in &broker.mailboxes {
        let (reply, answer) = oneshot::channel();
        if mailbox
            .send(ShardMsg::Group(GroupMsg::List { reply }))
            .await
            .is_err()
        {
            return kafka_error(error_code::COORDINATOR_NOT_AVAILABLE, None);
        }
        match answer.await {
            Ok(listed) => groups.extend(listed),
            Err(_) => return kafka_error(error_code::COORDINATOR_NOT_AVAILABLE, None),
        }
    }
    groups.sort();
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(id, protocol_type, state)| json!({"group": id, "protocol_type": protocol_type, "state": state}))
        .collect();
    Response::json(200, &json!({ "groups": groups }))
}

async fn describe_group(broker: &Arc<Broker>, group: &str) -> Response {
    let found = crate::groups::ask(broker, group, |reply| GroupMsg::Describe {
        group: group.to_string(),
        reply,
    })
    .await;
    let Some(d) = found else {
        return kafka_error(error_code::COORDINATOR_NOT_AVAILABLE, None);
    };
    if d.error_code != error_code::NONE {
        return kafka_error(d.error_code, None);
    }
    if d.state == weir_kafka::group_admin::STATE_DEAD {
        return Response::error(
            404,
            "group_not_found",
            format!("group {group:?} does not exist"),
        );
    }
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            let assignment = weir_kafka::group::consumer_assignment(&m.assignment)
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| json!({"topic": topic, "partitions": partitions}))
                .collect::<Vec<_>>();
            json!({
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "assignment": assignment,
            })
        })
        .collect();
    Response::json(
        200,
        &json!({
            "group": group,
            "state": d.state,
            "protocol_type": d.protocol_type,
            "protocol": d.protocol,
            "members": members,
        }),
    )
}

/// Every committed offset of the group, with each partition's high watermark and the lag.
async fn group_offsets(broker: &Arc<Broker>, group: &str) -> Response {
    let fetched = crate::groups::ask(broker, group, |reply| GroupMsg::Fetch {
        group: group.to_string(),
        topics: None,
        reply,
    })
    .await;
    let Some(topics) = fetched else {
        return kafka_error(error_code::COORDINATOR_NOT_AVAILABLE, None);
    };
    let mut offsets = Vec::new();
    let mut total_lag = 0i64;
    for (name, parts) in topics {
        let known = broker.topics.get(&name);
        for part in parts {
            if part.error_code != error_code::NONE || part.offset < 0 {
                continue;
            }
            let end = match &known {
                Some(topic) if part.partition < topic.partitions => {
                    summaries_of(broker, topic, part.partition)
                        .await
                        .ok()
                        .map(|s| s.log_end_offset)
                }
                _ => None,
            };
            let lag = end.map(|end| (end - part.offset).max(0));
            total_lag += lag.unwrap_or(0);
            offsets.push(json!({
                "topic": name,
                "partition": part.partition,
                "committed_offset": part.offset,
                "metadata": part.metadata,
                "high_watermark": end,
                "lag": lag,
            }));
        }
    }
    if offsets.is_empty() {
        // A group that never committed and has no members is as good as unknown.
        let described = crate::groups::ask(broker, group, |reply| GroupMsg::Describe {
            group: group.to_string(),
            reply,
        })
        .await;
        if described.is_some_and(|d| d.state == weir_kafka::group_admin::STATE_DEAD) {
            return Response::error(
                404,
                "group_not_found",
                format!("group {group:?} does not exist"),
            );
        }
    }
    Response::json(
        200,
        &json!({"group": group, "offsets": offsets, "lag": total_lag}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_patterns_match_segments() {
        assert!(matches("/topics/{topic}", &["topics", "orders"]));
        assert!(!matches("/topics/{topic}", &["topics"]));
        assert!(matches(
            "/topics/{topic}/partitions/{partition}/records",
            &["topics", "t", "partitions", "0", "records"]
        ));
        assert!(!matches("/groups/{group}/offsets", &["groups", "g", "lag"]));
    }

    /// Every route is in the OpenAPI document with its method, and the document has no other.
    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented = Vec::new();
        for (path, operations) in paths {
            for method in operations.as_object().expect("operations").keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
