//! WebSocket at `GET /ws`: subscribe to partitions and have records pushed as they are
//! appended, and produce, over one socket. Messages are JSON text frames:
//!
//! ```text
//! → {"op":"subscribe","topic":"orders","partitions":[0,1],"from":"latest"|"earliest"|17,
//!    "encoding":"utf8"}                       ← {"type":"subscribed","topic":..,"partitions":[{"partition":0,"offset":17},..]}
//! → {"op":"unsubscribe","topic":"orders"}    ← {"type":"unsubscribed","topic":..,"partitions":[..]}
//! → {"op":"produce","ref":1,"topic":"orders","records":[..]}
//!                                             ← {"type":"produced","ref":1,"offsets":[..]}
//!                                             ← {"type":"records","topic":..,"partition":0,"records":[..]}
//!                                             ← {"type":"error","ref"?,"error":code,"message":..}
//! ```
//!
//! Liveness: the server pings every `ws_ping_interval_ms`; a client that sends nothing (no pong,
//! no message) for twice that is closed. Memory: a connection holds one partial frame of at most
//! `ws_max_message_bytes` and the socket's kernel buffer; records reach it from the shard's feed
//! (built once for all subscribers) or, when it fell behind, from its own reads at its pace.
//! A client that takes no bytes for `http_idle_timeout_ms` is closed.

mod feed;
pub(crate) mod frame;
mod group;
mod subscription;

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::http::{Conn, Request, Response};
use super::records::{self, Encoding};
use crate::broker::Broker;
use crate::partition::ShardMsg;
use frame::Violation;

/// Whether a request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade(request: &Request) -> bool {
    request.header_has("upgrade", "websocket")
}

/// The handshake's checks (RFC 6455 §4.2.1): the accept key, or the refusal.
pub(crate) fn handshake(request: &Request) -> Result<String, Response> {
    if request.method != "GET" {
        return Err(
            Response::error(405, "method_not_allowed", "a WebSocket opens with GET")
                .with_header("allow", "GET"),
        );
    }
    // A page on another site must not use the visitor's browser to read or write here
    // (cross-site WebSocket hijacking): a browser's Origin must name this host. Clients that
    // are not browsers send no Origin.
    if let Some(origin) = request.header("origin") {
        let origin_host = origin.split_once("://").map_or(origin, |(_, host)| host);
        let host = request.header("host").unwrap_or_default();
        if !origin_host.eq_ignore_ascii_case(host) {
            return Err(Response::error(
                403,
                "forbidden_origin",
                format!("a page from {origin} may not open a WebSocket to {host}"),
            ));
        }
    }
    if !request.header_has("connection", "upgrade") {
        return Err(Response::error(
            400,
            "bad_request",
            "Connection: Upgrade is missing",
        ));
    }
    if request.header("sec-websocket-version") != Some("13") {
        return Err(Response::error(
            426,
            "upgrade_required",
            "only WebSocket version 13 is served",
        )
        .with_header("sec-websocket-version", "13"));
    }
    match request.header("sec-websocket-key") {
        Some(key) if key.len() == 24 => Ok(frame::accept_key(key)),
        _ => Err(Response::error(
            400,
            "bad_request",
            "Sec-WebSocket-Key must be 16 bytes in base64",
        )),
    }
}

/// The socket's sending side, shared by the connection and its subscriptions: one frame at a
/// time, each within `http_idle_timeout_ms` or the connection is given up.
pub(crate) struct Writer {
    half: tokio::sync::Mutex<OwnedWriteHalf>,
    timeout: Duration,
    failed: Cell<bool>,
    gone: Notify,
    broker: Arc<Broker>,
}

impl Writer {
    /// Writes a whole frame; false once the peer is gone or stopped reading.
    pub async fn send(&self, frame: &[u8]) -> bool {
        self.send_all(&[frame]).await
    }

    /// Writes whole frames back to back, with as few system calls as the socket allows.
    pub async fn send_all(&self, frames: &[&[u8]]) -> bool {
        if self.failed.get() {
            return false;
        }
        let mut half = self.half.lock().await;
        let write = async {
            let (mut i, mut at) = (0, 0);
            while i < frames.len() {
                let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&frames[i][at..])
                    .chain(frames[i + 1..].iter().copied())
                    .map(std::io::IoSlice::new)
                    .collect();
                let mut n = half.write_vectored(&slices).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                // Advance past what was written.
                while n > 0 && i < frames.len() {
                    let left = frames[i].len() - at;
                    if n >= left {
                        n -= left;
                        i += 1;
                        at = 0;
                    } else {
                        at += n;
                        n = 0;
                    }
                }
            }
            Ok::<(), std::io::Error>(())
        };
        if matches!(tokio::time::timeout(self.timeout, write).await, Ok(Ok(()))) {
            self.broker
                .metrics
                .ws_messages_sent
                .fetch_add(frames.len() as u64, Ordering::Relaxed);
            return true;
        }
        self.failed.set(true);
        self.gone.notify_one();
        false
    }

    pub async fn send_text(&self, text: &str) -> bool {
        self.send(&frame::encode(frame::OP_TEXT, text.as_bytes()))
            .await
    }

    async fn close(&self, code: u16, reason: &str) {
        if self.send(&frame::close(code, reason)).await {
            let _ = self.half.lock().await.shutdown().await;
        }
    }
}

/// Serves an upgraded connection until it closes. `accept` is the handshake's answer.
pub(crate) async fn serve(
    conn: Conn,
    accept: String,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Conn { stream, mut buf } = conn;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| String::new(), |a| format!("/{}", a.ip()));
    let (mut read_half, write_half) = stream.into_split();
    let metrics = &broker.metrics;
    let writer = Rc::new(Writer {
        half: tokio::sync::Mutex::new(write_half),
        timeout: broker.config.http_idle_timeout,
        failed: Cell::new(false),
        gone: Notify::new(),
        broker: broker.clone(),
    });
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {accept}\r\n\r\n"
    );
    if !writer.send(head.as_bytes()).await {
        return;
    }
    metrics.ws_connections_open.fetch_add(1, Ordering::Relaxed);
    let mut session = Session {
        broker: broker.clone(),
        writer: writer.clone(),
        subscriptions: HashMap::new(),
        member: None,
        peer,
    };
    let max = broker.config.ws_max_message_bytes;
    let ping_every = broker.config.ws_ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    let mut message: Option<Vec<u8>> = None;
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    let close = loop {
        // Whole frames already read.
        match frame::parse(&buf, max) {
            Err(violation) => break Some(violation),
            Ok(Some((frame, used))) => {
                buf.drain(..used);
                last_heard = Instant::now();
                match on_frame(&mut session, &mut message, frame, max).await {
                    Ok(true) => continue,
                    Ok(false) => break None,
                    Err(violation) => break Some(violation),
                }
            }
            Ok(None) => {}
        }
        // Between messages a connection holds no buffer (10,000 idle subscribers are 10,000
        // of these); bytes are read through a small chunk.
        if buf.is_empty() {
            buf = Vec::new();
        }
        tokio::select! {
            read = read_half.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break None,
                Ok(n) => {
                    // Any byte shows the client alive, even before its frame is whole.
                    last_heard = Instant::now();
                    buf.extend_from_slice(&chunk[..n]);
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    metrics.ws_closed_dead.fetch_add(1, Ordering::Relaxed);
                    break Some(Violation {
                        code: frame::CLOSE_GOING_AWAY,
                        reason: "no pong or message for two ping intervals".into(),
                    });
                }
                if !writer.send(&frame::encode(frame::OP_PING, b"weir")).await {
                    break None;
                }
            }
            _ = writer.gone.notified() => {
                metrics.ws_closed_slow.fetch_add(1, Ordering::Relaxed);
                break None;
            }
            _ = shutdown.wait_for(|stop| *stop) => {
                break Some(Violation {
                    code: frame::CLOSE_GOING_AWAY,
                    reason: "the broker is shutting down".into(),
                });
            }
        }
    };
    for (_, running) in session.subscriptions.drain() {
        running.kill();
    }
    if let Some(member) = session.member.take() {
        // The member task leaves the group and ends its streams.
        let _ = member.try_send(group::Command::Leave);
    }
    if let Some(violation) = close {
        writer.close(violation.code, &violation.reason).await;
    }
    metrics.ws_connections_open.fetch_sub(1, Ordering::Relaxed);
}

/// Bytes read from the socket at a time (clients send little: subscriptions, acks, pongs).
const READ_CHUNK_BYTES: usize = 1024;

struct Session {
    broker: Arc<Broker>,
    writer: Rc<Writer>,
    subscriptions: HashMap<(String, i32), subscription::Running>,
    /// The group member acting for this client, if it subscribed as one.
    member: Option<tokio::sync::mpsc::Sender<group::Command>>,
    /// The client's address, as group descriptions show it.
    peer: String,
}

/// Handles one frame: Ok(false) when the client closed, Err when it broke the protocol.
async fn on_frame(
    session: &mut Session,
    message: &mut Option<Vec<u8>>,
    frame: frame::Frame,
    max: usize,
) -> Result<bool, Violation> {
    let protocol = |reason: &str| Violation {
        code: frame::CLOSE_PROTOCOL_ERROR,
        reason: reason.into(),
    };
    match frame.opcode {
        frame::OP_PING => {
            session
                .writer
                .send(&frame::encode(frame::OP_PONG, &frame.payload))
                .await;
            Ok(true)
        }
        frame::OP_PONG => Ok(true),
        frame::OP_CLOSE => {
            // Echo a valid code (RFC 6455 §5.5.1, §7.4), then end.
            let code = match frame.payload.as_slice() {
                [] => frame::CLOSE_NORMAL,
                [_] => return Err(protocol("a close frame with a one-byte code")),
                [a, b, reason @ ..] => {
                    let code = u16::from_be_bytes([*a, *b]);
                    let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
                    if !valid {
                        return Err(protocol("a close code that may not be sent"));
                    }
                    if std::str::from_utf8(reason).is_err() {
                        return Err(Violation {
                            code: frame::CLOSE_INVALID_PAYLOAD,
                            reason: "a close reason that is not UTF-8".into(),
                        });
                    }
                    code
                }
            };
            session.writer.close(code, "").await;
            Ok(false)
        }
        frame::OP_BINARY => Err(Violation {
            code: frame::CLOSE_UNSUPPORTED_DATA,
            reason: "messages are JSON text frames".into(),
        }),
        frame::OP_TEXT | frame::OP_CONTINUATION => {
            let whole = match (frame.opcode, message.as_mut()) {
                (frame::OP_TEXT, Some(_)) => {
                    return Err(protocol("a new message inside a fragmented one"))
                }
                (frame::OP_TEXT, None) if frame.fin => frame.payload,
                (frame::OP_TEXT, None) => {
                    *message = Some(frame.payload);
                    return Ok(true);
                }
                (_, None) => return Err(protocol("a continuation with no message")),
                (_, Some(partial)) => {
                    if partial.len() + frame.payload.len() > max {
                        return Err(Violation {
                            code: frame::CLOSE_TOO_BIG,
                            reason: format!("a message over ws_max_message_bytes ({max})"),
                        });
                    }
                    partial.extend_from_slice(&frame.payload);
                    if !frame.fin {
                        return Ok(true);
                    }
                    message.take().unwrap_or_default()
                }
            };
            let Ok(text) = String::from_utf8(whole) else {
                return Err(Violation {
                    code: frame::CLOSE_INVALID_PAYLOAD,
                    reason: "a text message that is not UTF-8".into(),
                });
            };
            let answer = on_message(session, &text).await;
            if let Some(answer) = answer {
                session.writer.send_text(&answer.to_string()).await;
            }
            Ok(true)
        }
        _ => Err(protocol("unexpected opcode")),
    }
}

fn error(reference: Option<&Value>, code: &str, message: impl Into<String>) -> Value {
    let mut out = json!({"type": "error", "error": code, "message": message.into()});
    if let Some(reference) = reference {
        out["ref"] = reference.clone();
    }
    out
}

/// Answers one client message (None: nothing to answer). A bad message is answered with an
/// error; the connection stays open.
async fn on_message(session: &mut Session, text: &str) -> Option<Value> {
    let doc: Value = match serde_json::from_str(text) {
        Ok(doc) => doc,
        Err(e) => return Some(error(None, "bad_request", format!("not JSON: {e}"))),
    };
    let Some(doc) = doc.as_object() else {
        return Some(error(None, "bad_request", "a message is a JSON object"));
    };
    let reference = doc.get("ref");
    let answer = match doc.get("op").and_then(Value::as_str) {
        Some("subscribe") => subscribe(session, doc).await,
        Some("unsubscribe") => unsubscribe(session, doc),
        Some("produce") => produce(session, doc).await,
        Some("ack") => match ack(session, doc).await {
            // The member answers acks itself, once committed.
            Ok(()) => return None,
            Err(refusal) => Err(refusal),
        },
        _ => Err((
            "bad_request",
            "\"op\" must be subscribe, unsubscribe, produce or ack".to_string(),
        )),
    };
    Some(match answer {
        Ok(mut answer) => {
            if let Some(reference) = reference {
                answer["ref"] = reference.clone();
            }
            answer
        }
        Err((code, message)) => error(reference, code, message),
    })
}

/// A refusal: the error code and message sent back.
type Refusal = (&'static str, String);
type Answer = Result<Value, Refusal>;

fn check_fields(doc: &Map<String, Value>, allowed: &[&str]) -> Result<(), Refusal> {
    match doc.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err((
            "bad_request",
            format!("unknown field {key:?} (expected {})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

/// The topic a message names, and its partitions (all if it lists none).
/// The existing topic a message names.
fn named_topic(
    broker: &Broker,
    doc: &Map<String, Value>,
) -> Result<Arc<weir_broker::topics::Topic>, Refusal> {
    let name = doc
        .get("topic")
        .and_then(Value::as_str)
        .ok_or(("bad_request", "\"topic\" must be a topic name".to_string()))?;
    broker
        .topics
        .get(name)
        .ok_or(("unknown_topic", format!("topic {name:?} does not exist")))
}

fn topic_and_partitions(
    broker: &Broker,
    doc: &Map<String, Value>,
) -> Result<(Arc<weir_broker::topics::Topic>, Vec<i32>), Refusal> {
    let topic = named_topic(broker, doc)?;
    let name = &topic.name;
    let partitions = match doc.get("partitions") {
        None | Some(Value::Null) => (0..topic.partitions).collect(),
        Some(Value::Array(list)) => {
            let mut out = Vec::new();
            for p in list {
                match p.as_i64().and_then(|p| i32::try_from(p).ok()) {
                    Some(p) if (0..topic.partitions).contains(&p) => out.push(p),
                    _ => {
                        return Err((
                            "unknown_partition",
                            format!(
                                "partition {p} does not exist; topic {name:?} has {}",
                                topic.partitions
                            ),
                        ))
                    }
                }
            }
            out.sort_unstable();
            out.dedup();
            out
        }
        Some(_) => {
            return Err((
                "bad_request",
                "\"partitions\" must be an array of numbers".into(),
            ))
        }
    };
    Ok((topic, partitions))
}

async fn subscribe(session: &mut Session, doc: &Map<String, Value>) -> Answer {
    if doc.contains_key("group") {
        return subscribe_as_member(session, doc);
    }
    check_fields(
        doc,
        &["op", "ref", "topic", "partitions", "from", "encoding"],
    )?;
    let broker = session.broker.clone();
    let (topic, partitions) = topic_and_partitions(&broker, doc)?;
    let encoding = Encoding::parse(doc.get("encoding").and_then(Value::as_str))
        .map_err(|e| ("bad_request", e))?;
    let from = doc.get("from").cloned().unwrap_or(Value::from("latest"));
    let mut started = Vec::new();
    for &partition in &partitions {
        let summary = crate::connection::ask(&broker, &topic.name, partition, |reply| {
            ShardMsg::Describe {
                topic: topic.clone(),
                partition,
                reply,
            }
        })
        .await
        .and_then(Result::ok)
        .ok_or((
            "unavailable",
            format!("partition {partition} is not available"),
        ))?;
        let offset = match &from {
            Value::String(s) if s == "latest" => summary.log_end_offset,
            Value::String(s) if s == "earliest" => summary.log_start_offset,
            Value::Number(n) => match n.as_i64() {
                Some(o) if (summary.log_start_offset..=summary.log_end_offset).contains(&o) => o,
                _ => {
                    return Err((
                        "offset_out_of_range",
                        format!(
                            "offset {n} is outside partition {partition}'s log [{}, {}]",
                            summary.log_start_offset, summary.log_end_offset
                        ),
                    ))
                }
            },
            _ => {
                return Err((
                    "bad_request",
                    "\"from\" must be \"latest\", \"earliest\" or an offset".into(),
                ))
            }
        };
        started.push((partition, offset, summary.log_end_offset));
    }
    // Subscriptions that ended on their own (their topic went away) no longer count.
    session.subscriptions.retain(|_, running| !running.ended());
    if session.subscriptions.len() + started.len() > broker.config.ws_max_subscriptions {
        return Err((
            "too_many_subscriptions",
            format!(
                "a connection follows at most {} partitions (ws_max_subscriptions)",
                broker.config.ws_max_subscriptions
            ),
        ));
    }
    for &(partition, offset, end) in &started {
        let running = subscription::start(
            broker.clone(),
            session.writer.clone(),
            topic.clone(),
            partition,
            encoding,
            offset,
            end,
        );
        // A subscription it replaces stops after its current write.
        session
            .subscriptions
            .insert((topic.name.clone(), partition), running);
    }
    let partitions: Vec<Value> = started
        .iter()
        .map(|(p, o, _)| json!({"partition": p, "offset": o}))
        .collect();
    Ok(json!({"type": "subscribed", "topic": topic.name, "partitions": partitions}))
}

/// `{"op":"subscribe","topic","group","from"?,"encoding"?}`: the gateway joins the group for
/// the client; `from` ("latest" or "earliest") is where partitions without a committed offset
/// start. The partitions come with an `assigned` message, and again after each rebalance.
fn subscribe_as_member(session: &mut Session, doc: &Map<String, Value>) -> Answer {
    check_fields(doc, &["op", "ref", "topic", "group", "from", "encoding"])?;
    if session.member.is_some() {
        return Err((
            "bad_request",
            "this connection is already a group member; open another for another group".into(),
        ));
    }
    let group = match doc.get("group").and_then(Value::as_str) {
        Some(g) if !g.is_empty() => g.to_string(),
        _ => return Err(("bad_request", "\"group\" must be a group id".into())),
    };
    let (topic, _) = topic_and_partitions(&session.broker, doc)?;
    let encoding = Encoding::parse(doc.get("encoding").and_then(Value::as_str))
        .map_err(|e| ("bad_request", e))?;
    let reset = match doc.get("from") {
        None => group::Reset::Latest,
        Some(Value::String(s)) if s == "latest" => group::Reset::Latest,
        Some(Value::String(s)) if s == "earliest" => group::Reset::Earliest,
        _ => {
            return Err((
                "bad_request",
                "in a group, \"from\" is \"latest\" or \"earliest\" (for partitions the group \
                 has not committed)"
                    .into(),
            ))
        }
    };
    let (commands, receiver) =
        tokio::sync::mpsc::channel(session.broker.config.ws_group_max_pending_acks.max(1));
    let spec = group::Spec {
        group: group.clone(),
        topic: topic.clone(),
        encoding,
        reset,
        client_host: session.peer.clone(),
    };
    tokio::task::spawn_local(group::run(
        session.broker.clone(),
        session.writer.clone(),
        spec,
        receiver,
    ));
    session.member = Some(commands);
    Ok(json!({"type": "subscribed", "topic": topic.name, "group": group}))
}

/// `{"op":"ack","topic","partition","offset"}`: the client is done with the partition's records
/// up to `offset`; the member commits `offset + 1`.
async fn ack(session: &mut Session, doc: &Map<String, Value>) -> Result<(), Refusal> {
    check_fields(doc, &["op", "ref", "topic", "partition", "offset"])?;
    let Some(member) = &session.member else {
        return Err((
            "bad_request",
            "acks are for group subscriptions (subscribe with \"group\")".into(),
        ));
    };
    let topic = doc
        .get("topic")
        .and_then(Value::as_str)
        .ok_or(("bad_request", "\"topic\" must be a topic name".to_string()))?;
    let partition = doc
        .get("partition")
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .ok_or(("bad_request", "\"partition\" must be a number".to_string()))?;
    let offset = doc
        .get("offset")
        .and_then(Value::as_i64)
        .filter(|o| *o >= 0)
        .ok_or((
            "bad_request",
            "\"offset\" must be a record's offset".to_string(),
        ))?;
    // Never wait here: the connection's reading (and its pongs) would wait too, while the
    // member may be in a rebalance.
    member
        .try_send(group::Command::Ack {
            topic: topic.to_string(),
            partition,
            offset,
            reference: doc.get("ref").cloned(),
        })
        .map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => (
                "busy",
                format!(
                    "{} acks are waiting for the group member (in a rebalance?); ack again \
                     later (the latest ack covers the earlier ones)",
                    session.broker.config.ws_group_max_pending_acks
                ),
            ),
            tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                ("group_failed", "the group membership ended".to_string())
            }
        })
}

fn unsubscribe(session: &mut Session, doc: &Map<String, Value>) -> Answer {
    check_fields(doc, &["op", "ref", "topic", "partitions"])?;
    let name = doc
        .get("topic")
        .and_then(Value::as_str)
        .ok_or(("bad_request", "\"topic\" must be a topic name".to_string()))?;
    let only: Option<Vec<i64>> = doc
        .get("partitions")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_i64).collect());
    let mut ended = Vec::new();
    // Those removed stop after their current write.
    session.subscriptions.retain(|_, running| !running.ended());
    session.subscriptions.retain(|(topic, partition), _| {
        let matches = topic == name
            && only
                .as_ref()
                .is_none_or(|o| o.contains(&i64::from(*partition)));
        if matches {
            ended.push(*partition);
        }
        !matches
    });
    ended.sort_unstable();
    Ok(json!({"type": "unsubscribed", "topic": name, "partitions": ended}))
}

async fn produce(session: &mut Session, doc: &Map<String, Value>) -> Answer {
    check_fields(doc, &["op", "ref", "topic", "encoding", "records"])?;
    let broker = session.broker.clone();
    let topic = named_topic(&broker, doc)?;
    let parsed = records::parse_records(doc).map_err(|e| ("bad_request", e))?;
    let (status, mut body) = super::rest::produce_records(&broker, &topic, parsed).await;
    if status == 200 {
        body["type"] = Value::from("produced");
        Ok(body)
    } else {
        body["type"] = Value::from("error");
        Ok(body)
    }
}
