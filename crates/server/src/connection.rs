//! One Kafka connection: read a frame, decode, answer, write. A connection handles one request
//! at a time, so responses leave in request order. Partition work goes to the owning shard's
//! mailbox; the answers are gathered here. Between requests, a connection whose requests keep
//! going to one other shard's partitions moves to that shard (connection affinity).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use weir_kafka::fetch::{FetchRequest, FetchedPartition};
use weir_kafka::list_offsets::{ListOffsetsRequest, OffsetFound};
use weir_kafka::produce::{PartitionResult, ProduceRequest};
use weir_kafka::{
    api_versions, decode_request, encode_response, error_code, fetch, list_offsets, produce,
    Decoded, Request, Response,
};

use crate::admin;
use crate::broker::Broker;
use crate::configs;
use crate::groups;
use crate::limits::Admitted;
use crate::partition::{FetchOutcome, ListOutcome, ProduceOutcome, ShardMsg};
use crate::producers;
use crate::quotas;

/// Bytes read from the socket at a time while a frame body arrives: memory follows what the
/// peer actually sent, not the size it declared.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Kafka clients ask for long polls of at most this long; a larger max_wait_ms is capped.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// A connection keeps a read buffer up to this size between requests; a larger one (left by a
/// large request) goes back to its shard's pool, so idle connections hold little.
const READ_BUFFER_KEEP_BYTES: usize = 16 * 1024;
/// Read buffers a shard keeps for reuse, in bytes of capacity: large requests then reuse
/// buffers instead of allocating (and the allocator mapping and unmapping) each time, and the
/// buffers in memory are those of requests in flight (bounded by the budget) plus this.
const READ_BUFFER_POOL_BYTES: usize = 8 * 1024 * 1024;
/// Buffers larger than this are not pooled.
const READ_BUFFER_POOLED_MAX: usize = 2 * 1024 * 1024;

/// One shard's pool of read buffers (each shard is one thread).
#[derive(Default)]
struct BufferPool {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

thread_local! {
    static READ_BUFFERS: std::cell::RefCell<BufferPool> =
        std::cell::RefCell::new(BufferPool::default());
}

/// A buffer for a request of `size` bytes: `frame` if it is big enough; for a request larger
/// than a connection keeps, the smallest pooled buffer that holds it.
fn buffer_for(frame: &mut Vec<u8>, size: usize) {
    if frame.capacity() >= size || size <= READ_BUFFER_KEEP_BYTES {
        return;
    }
    let pooled = READ_BUFFERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (at, _) = pool
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= size)
            .min_by_key(|(_, b)| b.capacity())?;
        let buffer = pool.buffers.swap_remove(at);
        pool.bytes -= buffer.capacity();
        Some(buffer)
    });
    if let Some(buffer) = pooled {
        recycle(std::mem::replace(frame, buffer));
    }
}

/// Gives a buffer back to the shard's pool, or frees it if the pool is full or it is too large.
fn recycle(mut buffer: Vec<u8>) {
    let capacity = buffer.capacity();
    if capacity <= READ_BUFFER_KEEP_BYTES || capacity > READ_BUFFER_POOLED_MAX {
        return;
    }
    READ_BUFFERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.bytes + capacity <= READ_BUFFER_POOL_BYTES {
            buffer.clear();
            pool.bytes += capacity;
            pool.buffers.push(buffer);
        }
    });
}

/// Consecutive Produce or Fetch requests whose partitions all belong to one other shard after
/// which a connection moves there. Other requests do not count either way; one that touches
/// this shard, or several shards, starts the count again.
const AFFINITY_STREAK: u32 = 8;

/// What an open Kafka connection holds wherever it is served: its place under the connection
/// limits and in the open-connections gauge, given back when it closes.
pub(crate) struct Held {
    _admitted: Admitted,
    broker: Arc<Broker>,
}

impl Held {
    pub fn new(admitted: Admitted, broker: Arc<Broker>) -> Held {
        let metrics = &broker.metrics;
        metrics.connections_accepted.fetch_add(1, Ordering::Relaxed);
        metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        Held {
            _admitted: admitted,
            broker,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let open = &self.broker.metrics.connections_open;
        open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection on its way to another shard, between two requests (nothing of it is buffered
/// in the process: the next request is still in the socket).
pub(crate) struct Handoff {
    pub stream: std::net::TcpStream,
    pub held: Held,
}

/// Serves a connection on shard `here` until it closes or moves to another shard.
pub(crate) async fn run(
    mut stream: TcpStream,
    held: Held,
    here: usize,
    shutdown: watch::Receiver<bool>,
) {
    let broker = held.broker.clone();
    let mut may_move = broker.config.connection_affinity && broker.handoffs.len() > 1;
    let _ = stream.set_nodelay(true);
    let mut held = held;
    while let Some(to) = serve(&mut stream, &broker, shutdown.clone(), here, may_move).await {
        let Ok(std_stream) = stream.into_std() else {
            return;
        };
        let handoff = Handoff {
            stream: std_stream,
            held,
        };
        match broker.handoffs[to].try_send(handoff) {
            Ok(()) => {
                let moved = &broker.metrics.connections_moved;
                moved.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // That shard's queue is full (try again after another streak) or it is shutting
            // down (stay here).
            Err(error) => {
                let closed = matches!(error, mpsc::error::TrySendError::Closed(_));
                let back = error.into_inner();
                held = back.held;
                stream = match TcpStream::from_std(back.stream) {
                    Ok(stream) => stream,
                    Err(_) => return,
                };
                may_move &= !closed;
            }
        }
    }
}

/// Which shards own the partitions one request used.
#[derive(Default)]
struct Owners(std::cell::Cell<Touched>);

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Touched {
    #[default]
    None,
    One(usize),
    Many,
}

impl Owners {
    fn saw(&self, shard: usize) {
        let touched = match self.0.get() {
            Touched::None => Touched::One(shard),
            Touched::One(s) if s == shard => Touched::One(s),
            _ => Touched::Many,
        };
        self.0.set(touched);
    }
}

/// Counts requests that went to one other shard in a row.
struct Affinity {
    here: usize,
    toward: Option<usize>,
    streak: u32,
}

impl Affinity {
    /// After a request: the shard to move to, once the streak is long enough.
    fn after(&mut self, touched: Touched) -> Option<usize> {
        match touched {
            Touched::None => None,
            Touched::One(shard) if shard != self.here => {
                if self.toward == Some(shard) {
                    self.streak = self.streak.saturating_add(1);
                } else {
                    (self.toward, self.streak) = (Some(shard), 1);
                }
                (self.streak >= AFFINITY_STREAK).then_some(shard)
            }
            Touched::One(_) | Touched::Many => {
                (self.toward, self.streak) = (None, 0);
                None
            }
        }
    }
}

/// Answers requests until the connection closes (`None`) or, with `may_move`, until it should
/// move to another shard (`Some(shard)`, between requests).
async fn serve(
    stream: &mut TcpStream,
    broker: &Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    here: usize,
    may_move: bool,
) -> Option<usize> {
    // Kafka reports a member's host as "/<ip>".
    let peer = stream
        .peer_addr()
        .map_or_else(|_| String::new(), |a| format!("/{}", a.ip()));
    let metrics = &broker.metrics;
    let mut frame = Vec::new();
    let config = &broker.config;
    let mut affinity = Affinity {
        here,
        toward: None,
        streak: 0,
    };
    let mut moving = None;
    // Where this connection's next Fetch starts spending its byte budget.
    let rotation = std::cell::Cell::new(0usize);
    loop {
        // Between requests: wait for the next one's first byte, at most the idle timeout.
        let mut prefix = [0u8; 4];
        let first = tokio::select! {
            read = tokio::time::timeout(config.connections_max_idle, stream.read(&mut prefix)) => read,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let got = match first {
            Err(_) => {
                metrics.closed_idle.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        // A request has started: all of it must arrive in time (a stalling client holds no
        // connection for longer than this).
        let mut deadline = tokio::time::Instant::now() + config.request_complete_timeout;
        let rest = stream.read_exact(&mut prefix[got..]);
        if by_deadline(broker, deadline, rest).await.is_none() {
            break;
        }
        let limit = config.socket_request_max_bytes;
        let Ok(size) = weir_kafka::frame::frame_size(prefix, limit) else {
            metrics.requests_rejected.fetch_add(1, Ordering::Relaxed);
            break;
        };
        // Reserve the request's bytes before reading them (a request larger than the whole
        // budget waits for all of it). The reservation is held until the answer is written.
        let _reserved = match broker.request_budget.try_reserve(size) {
            Some(permit) => permit,
            None => {
                metrics.budget_waits.fetch_add(1, Ordering::Relaxed);
                let waiting = Paused::enter(&metrics.budget_waiting);
                let permit = broker.request_budget.reserve(size).await;
                drop(waiting);
                // The client is not to blame for the wait: its deadline for the body starts
                // afresh once the bytes are reserved.
                deadline = tokio::time::Instant::now() + config.request_complete_timeout;
                match permit {
                    Some(permit) => permit,
                    None => break,
                }
            }
        };
        buffer_for(&mut frame, size);
        let body = read_body(stream, &mut frame, size);
        if by_deadline(broker, deadline, body).await.is_none() {
            break;
        }
        let started = std::time::Instant::now();
        let mut throttle = Duration::ZERO;
        let meter = Meter::default();
        let owners = Owners::default();
        let answering = answer(
            broker,
            &peer,
            &frame,
            &mut throttle,
            &meter,
            &owners,
            &rotation,
        );
        let Some(response) = meter.timed(answering).await else {
            metrics.requests_rejected.fetch_add(1, Ordering::Relaxed);
            break;
        };
        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
        metrics.request(api_key, started.elapsed());
        if let Some(bytes) = response {
            if !write_response(stream, &bytes, broker).await {
                break;
            }
        }
        if !throttle.is_zero() {
            // Over its quota: the answer went out with throttle_time_ms, and the connection is
            // not read for that long (KIP-219), whether or not the client holds back itself.
            let _paused = Paused::enter(&metrics.paused_throttle);
            tokio::select! {
                () = tokio::time::sleep(throttle) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        if frame.capacity() > READ_BUFFER_KEEP_BYTES {
            recycle(std::mem::take(&mut frame));
        }
        if let Some(to) = affinity.after(owners.0.get()).filter(|_| may_move) {
            moving = Some(to);
            break;
        }
    }
    recycle(frame);
    moving
}

/// A write that has not finished after this long counts its connection as paused (a slow
/// reader) in the metrics.
const SLOW_READER_AFTER: Duration = Duration::from_millis(100);

/// Counts a connection in a gauge while it lives.
struct Paused<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Paused<'a> {
    fn enter(gauge: &'a std::sync::atomic::AtomicU64) -> Paused<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Paused(gauge)
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Writes a response. The connection reads nothing meanwhile (one response at a time), so a
/// client that stops reading stops being read, with one response held; if it takes none of
/// the response's bytes for `connections_max_idle_ms`, it is closed (false).
async fn write_response(stream: &mut TcpStream, bytes: &[u8], broker: &Broker) -> bool {
    let idle = broker.config.connections_max_idle;
    let mut paused = None;
    let mut at = 0;
    while at < bytes.len() {
        // Straight into the socket while it has room: no timer for the common case.
        match stream.try_write(&bytes[at..]) {
            Ok(0) => return false,
            Ok(n) => {
                at += n;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
        // The socket is full: wait for room, counting the connection paused after a while.
        let writable = stream.writable();
        tokio::pin!(writable);
        let ready = tokio::select! {
            ready = &mut writable => ready,
            () = tokio::time::sleep(SLOW_READER_AFTER.min(idle)) => {
                paused.get_or_insert_with(|| Paused::enter(&broker.metrics.paused_slow_reader));
                let rest = idle.saturating_sub(SLOW_READER_AFTER);
                match tokio::time::timeout(rest, writable).await {
                    Ok(ready) => ready,
                    Err(_) => {
                        let stalled = &broker.metrics.closed_response_stalled;
                        stalled.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                }
            }
        };
        if ready.is_err() {
            return false;
        }
    }
    true
}

/// The time the broker's threads work on one request: the connection's own polls of it (decode,
/// gather, encode) plus what the partitions' owners report for their parts. Waits (for owners,
/// for a long poll, for fdatasync) are not counted, as Kafka's request quota does not count
/// them. What `request_percentage` quotas charge.
#[derive(Default)]
struct Meter {
    polled: std::cell::Cell<Duration>,
    /// When the poll under way began.
    poll_started: std::cell::Cell<Option<std::time::Instant>>,
    owners: std::cell::Cell<Duration>,
}

impl Meter {
    /// Runs `future`, counting the time spent in its polls.
    async fn timed<F: std::future::Future>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            let now = std::time::Instant::now();
            self.poll_started.set(Some(now));
            let poll = future.as_mut().poll(cx);
            self.poll_started.set(None);
            self.polled.set(self.polled.get() + now.elapsed());
            poll
        })
        .await
    }

    /// An owner's time for one partition.
    fn add_owner(&self, spent: Duration) {
        self.owners.set(self.owners.get() + spent);
    }

    /// The time so far, including the poll under way.
    fn spent(&self) -> Duration {
        let current = self
            .poll_started
            .get()
            .map_or(Duration::ZERO, |at| at.elapsed());
        self.polled.get() + current + self.owners.get()
    }
}

/// Finishes a read of a started request by `deadline`; `None` if it failed or ran out of time
/// (counted: the connection is then closed).
async fn by_deadline<T>(
    broker: &Broker,
    deadline: tokio::time::Instant,
    read: impl std::future::Future<Output = std::io::Result<T>>,
) -> Option<T> {
    match tokio::time::timeout_at(deadline, read).await {
        Err(_) => {
            let timed_out = &broker.metrics.closed_request_timeout;
            timed_out.fetch_add(1, Ordering::Relaxed);
            None
        }
        Ok(read) => read.ok(),
    }
}

async fn read_body(
    stream: &mut TcpStream,
    frame: &mut Vec<u8>,
    size: usize,
) -> std::io::Result<()> {
    frame.clear();
    while frame.len() < size {
        let want = (size - frame.len()).min(READ_CHUNK_BYTES);
        let start = frame.len();
        if frame.capacity() < start + want {
            // Grow geometrically (bounded copying) but never past the declared size.
            let target = (frame.capacity() * 2).max(start + want).min(size);
            frame.reserve_exact(target - start);
        }
        frame.resize(start + want, 0);
        let n = stream.read(&mut frame[start..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        frame.truncate(start + n);
    }
    Ok(())
}

/// The answer to one request frame: `Some(Some(bytes))` to send, `Some(None)` when the request
/// wants no response (acks=0), `None` to close the connection.
///
/// `throttle` is set when the client is over a quota: the response carries it and the
/// connection is not read for that long.
async fn answer(
    broker: &Arc<Broker>,
    peer: &str,
    frame: &[u8],
    throttle: &mut Duration,
    meter: &Meter,
    owners: &Owners,
    rotation: &std::cell::Cell<usize>,
) -> Option<Option<bytes::Bytes>> {
    let (header, request) = match decode_request(frame).ok()? {
        Decoded::Request { header, request } => (header, request),
        Decoded::ApiVersionsFallback(id) => {
            let response = api_versions::response(api_versions::UNSUPPORTED_VERSION);
            return encoded(encode_response(id, &Response::ApiVersions(response), true));
        }
        Decoded::Unsupported(id) => {
            eprintln!(
                "weir: closing a connection that sent API key {} v{} (not served)",
                id.api_key, id.api_version
            );
            return None;
        }
    };
    let version = header.id.api_version;
    let response = match request {
        Request::ApiVersions(_) => Response::ApiVersions(api_versions::response(0)),
        Request::Metadata(request) => broker.metadata(&request).await,
        Request::Produce(request) => {
            let acks = request.acks;
            let mut response = produce_request(broker, frame, request, meter, owners).await;
            *throttle = quotas::charge(
                broker,
                header.client_id,
                frame.len(),
                meter.spent(),
                version,
                &mut response,
            );
            if acks == 0 {
                // No answer for acks=0; a failure closes the connection, as Kafka does, so the
                // producer notices and refreshes its metadata.
                let failed = match &response {
                    Response::Produce(r) => r
                        .responses
                        .iter()
                        .any(|t| t.partition_responses.iter().any(|p| p.error_code != 0)),
                    _ => true,
                };
                return if failed { None } else { Some(None) };
            }
            response
        }
        Request::Fetch(request) => fetch_request(broker, request, meter, owners, rotation).await,
        Request::ListOffsets(request) => {
            list_offsets_request(broker, header.id.api_version, request).await
        }
        Request::CreateTopics(request) => {
            admin::create_topics(broker, header.id.api_version, request).await
        }
        Request::DeleteTopics(request) => {
            admin::delete_topics(broker, header.id.api_version, request).await
        }
        Request::CreatePartitions(request) => admin::create_partitions(broker, request).await,
        Request::DeleteRecords(request) => configs::delete_records(broker, request).await,
        Request::DescribeConfigs(resources) => configs::describe(broker, resources),
        Request::AlterConfigs(request) => configs::alter(broker, request).await,
        Request::FindCoordinator(request) => groups::find_coordinator(broker, version, request),
        Request::JoinGroup(request) => {
            let client_id = header.client_id.unwrap_or_default();
            groups::join(broker, version, client_id, peer, request).await
        }
        Request::SyncGroup(request) => groups::sync(broker, version, request).await,
        Request::Heartbeat(request) => groups::heartbeat(broker, request).await,
        Request::LeaveGroup(request) => groups::leave(broker, version, request).await,
        Request::OffsetCommit(request) => groups::commit(broker, request).await,
        Request::OffsetFetch(request) => groups::fetch(broker, version, request).await,
        Request::OffsetDelete(request) => groups::delete_offsets(broker, request).await,
        Request::ListGroups(request) => groups::list(broker, version, request).await,
        Request::DescribeGroups(request) => groups::describe(broker, version, request).await,
        Request::DeleteGroups(request) => groups::delete(broker, request).await,
        Request::InitProducerId(request) => producers::init_producer_id(broker, request).await,
        Request::DescribeClientQuotas(request) => quotas::describe(broker, request),
        Request::AlterClientQuotas(request) => quotas::alter(broker, request).await,
        Request::DescribeCluster(request) => {
            Response::DescribeCluster(weir_kafka::describe_cluster::response(
                version,
                &request,
                &broker.node(),
                &broker.cluster_id,
            ))
        }
    };
    let mut response = response;
    if !matches!(response, Response::Produce(_)) {
        *throttle = quotas::charge(
            broker,
            header.client_id,
            0,
            meter.spent(),
            version,
            &mut response,
        );
    }
    encoded(encode_response(header.id, &response, false))
}

/// An encoding failure is our bug: say so, and close the connection rather than send garbage.
fn encoded(result: Result<bytes::Bytes, weir_kafka::EncodeError>) -> Option<Option<bytes::Bytes>> {
    match result {
        Ok(bytes) => Some(Some(bytes)),
        Err(e) => {
            eprintln!("weir: {e}");
            None
        }
    }
}

/// Sends `msg` to its owner and waits for the answer; `None` if the shard is gone (shutdown).
pub(crate) async fn ask<T>(
    broker: &Broker,
    topic: &str,
    partition: i32,
    msg: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
) -> Option<T> {
    let (reply, answer) = oneshot::channel();
    broker
        .mailbox(topic, partition)
        .send(msg(reply))
        .await
        .ok()?;
    answer.await.ok()
}

async fn produce_request(
    broker: &Arc<Broker>,
    frame: &[u8],
    request: ProduceRequest,
    meter: &Meter,
    owners: &Owners,
) -> Response {
    let snapshot = broker.topics.snapshot();
    let acks_valid = matches!(request.acks, -1..=1);
    let mut pending = Vec::new();
    for topic in request.topics {
        let known = snapshot.get(&topic.name).cloned();
        let mut parts = Vec::new();
        for part in topic.partitions {
            let outcome = match (&known, part.records) {
                _ if !acks_valid => Err(error_code::INVALID_REQUIRED_ACKS),
                (Some(t), _) if part.index < 0 || part.index >= t.partitions => {
                    Err(error_code::UNKNOWN_TOPIC_OR_PARTITION)
                }
                (None, _) => Err(error_code::UNKNOWN_TOPIC_OR_PARTITION),
                (Some(_), None) => Err(error_code::CORRUPT_MESSAGE),
                (Some(t), Some(range)) => {
                    let bytes = range.len() as u64;
                    let (reply, answer) = oneshot::channel();
                    let msg = ShardMsg::Produce {
                        topic: t.clone(),
                        partition: part.index,
                        records: frame[range].to_vec(),
                        wait_durable: request.acks == -1,
                        reply,
                    };
                    let owner = broker.owner(&t.name, part.index);
                    owners.saw(owner);
                    match broker.mailboxes[owner].send(msg).await {
                        Ok(()) => Ok((answer, bytes)),
                        Err(_) => Err(error_code::KAFKA_STORAGE_ERROR),
                    }
                }
            };
            parts.push((part.index, outcome));
        }
        pending.push((topic.name, parts));
    }
    // The owners work in parallel; gather their answers in request order.
    let mut topics = Vec::new();
    for (name, parts) in pending {
        let mut results = Vec::new();
        for (index, outcome) in parts {
            let outcome = match outcome {
                Ok((answer, bytes)) => {
                    let outcome = answer
                        .await
                        .unwrap_or_else(|_| ProduceOutcome::error(error_code::KAFKA_STORAGE_ERROR));
                    meter.add_owner(outcome.spent);
                    if outcome.error_code == error_code::NONE {
                        let counters = broker.metrics.topic(&name);
                        counters.bytes_in.fetch_add(bytes, Ordering::Relaxed);
                        counters
                            .records_in
                            .fetch_add(outcome.records, Ordering::Relaxed);
                    }
                    outcome
                }
                Err(code) => ProduceOutcome::error(code),
            };
            results.push(PartitionResult {
                index,
                error_code: outcome.error_code,
                base_offset: outcome.base_offset,
                log_append_time_ms: -1,
                log_start_offset: outcome.log_start_offset,
                error_message: outcome.message,
            });
        }
        topics.push((name, results));
    }
    Response::Produce(produce::response(topics))
}

async fn fetch_request(
    broker: &Arc<Broker>,
    request: FetchRequest,
    meter: &Meter,
    owners: &Owners,
    rotation: &std::cell::Cell<usize>,
) -> Response {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = (request.max_bytes.max(0) as usize).min(broker.config.fetch_max_bytes);
    // The response's byte budget goes to partitions in turn, starting one further along at
    // every Fetch of the connection (not every round of a long poll), so a partition with a
    // large backlog early in the request cannot take the whole budget every time (the answer
    // keeps the request's order).
    let wanted: Vec<(usize, usize)> = request
        .topics
        .iter()
        .enumerate()
        .flat_map(|(t, topic)| (0..topic.partitions.len()).map(move |p| (t, p)))
        .collect();
    let start = match wanted.len() {
        0 => 0,
        n => {
            let start = rotation.get();
            rotation.set(start.wrapping_add(1));
            start % n
        }
    };
    loop {
        let snapshot = broker.topics.snapshot();
        let mut watches = Vec::new();
        let mut total = 0usize;
        let mut errors = false;
        let mut fetched: Vec<Option<FetchedPartition>> = wanted.iter().map(|_| None).collect();
        for k in 0..wanted.len() {
            let slot = (start + k) % wanted.len();
            let (t, p) = wanted[slot];
            let (topic, part) = (&request.topics[t], &request.topics[t].partitions[p]);
            let outcome = match snapshot.get(&topic.name) {
                Some(known) if (0..known.partitions).contains(&part.index) => {
                    // What is left of the response's budget; once spent, offsets only.
                    let left = max_bytes.saturating_sub(total);
                    let max = (part.partition_max_bytes.max(0) as usize).min(left);
                    let max = (total == 0 || max > 0).then_some(max as u64);
                    owners.saw(broker.owner(&known.name, part.index));
                    ask(broker, &known.name, part.index, |reply| ShardMsg::Fetch {
                        topic: known.clone(),
                        partition: part.index,
                        offset: part.fetch_offset,
                        max_bytes: max,
                        reply,
                    })
                    .await
                    .unwrap_or_else(|| FetchOutcome::error(error_code::KAFKA_STORAGE_ERROR))
                }
                _ => FetchOutcome::error(error_code::UNKNOWN_TOPIC_OR_PARTITION),
            };
            meter.add_owner(outcome.spent);
            errors |= outcome.error_code != error_code::NONE;
            // The response's max_bytes: later partitions get nothing once it is used up,
            // but the first batch is always sent (KIP-74).
            let records = if total > 0 && total + outcome.records.len() > max_bytes {
                bytes::Bytes::new()
            } else {
                outcome.records
            };
            total += records.len();
            if let Some(end) = outcome.end {
                watches.push(end);
            }
            fetched[slot] = Some(FetchedPartition {
                index: part.index,
                error_code: outcome.error_code,
                high_watermark: outcome.high_watermark,
                log_start_offset: outcome.log_start_offset,
                records,
            });
        }
        let mut fetched = fetched
            .into_iter()
            .map(|p| p.expect("every partition fetched"));
        let topics: Vec<_> = request
            .topics
            .iter()
            .map(|topic| {
                let parts = fetched
                    .by_ref()
                    .take(topic.partitions.len())
                    .collect::<Vec<_>>();
                (topic.name.clone(), parts)
            })
            .collect();
        let now = tokio::time::Instant::now();
        let done = total >= min_bytes || errors || now >= deadline || watches.is_empty();
        if done {
            for (name, parts) in &topics {
                if parts.iter().any(|p| !p.records.is_empty()) {
                    let counters = broker.metrics.topic(name);
                    for part in parts {
                        counters.sent(&part.records);
                    }
                }
            }
        }
        if done {
            return Response::Fetch(fetch::response(topics));
        }
        // Long poll: sleep until a partition's end moves or the wait is over. No busy polling.
        let changed = futures_any(watches);
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Resolves when any of the watches sees a change.
async fn futures_any(watches: Vec<watch::Receiver<i64>>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut tasks = Vec::new();
    for mut end in watches {
        let tx = tx.clone();
        tasks.push(tokio::task::spawn_local(async move {
            if end.changed().await.is_ok() {
                let _ = tx.try_send(());
            }
        }));
    }
    drop(tx);
    let _ = rx.recv().await;
    for task in tasks {
        task.abort();
    }
}

async fn list_offsets_request(
    broker: &Arc<Broker>,
    version: i16,
    request: ListOffsetsRequest,
) -> Response {
    let snapshot = broker.topics.snapshot();
    let mut topics = Vec::new();
    for (name, parts) in request.topics {
        let known = snapshot.get(&name).cloned();
        let mut found = Vec::new();
        for (index, timestamp) in parts {
            let outcome = match &known {
                Some(t) if (0..t.partitions).contains(&index) => {
                    ask(broker, &t.name, index, |reply| ShardMsg::ListOffsets {
                        topic: t.clone(),
                        partition: index,
                        timestamp,
                        reply,
                    })
                    .await
                    .unwrap_or_else(|| ListOutcome::error(error_code::KAFKA_STORAGE_ERROR))
                }
                _ => ListOutcome::error(error_code::UNKNOWN_TOPIC_OR_PARTITION),
            };
            found.push(OffsetFound {
                index,
                error_code: outcome.error_code,
                timestamp: outcome.timestamp,
                offset: outcome.offset,
            });
        }
        topics.push((name, found));
    }
    Response::ListOffsets(list_offsets::response(version, topics))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touched(shards: &[usize]) -> Touched {
        let owners = Owners::default();
        for shard in shards {
            owners.saw(*shard);
        }
        owners.0.get()
    }

    #[test]
    fn a_request_touches_none_one_or_many_shards() {
        assert!(touched(&[]) == Touched::None);
        assert!(touched(&[1, 1, 1]) == Touched::One(1));
        assert!(touched(&[1, 0, 1]) == Touched::Many);
    }

    /// What a fresh connection on shard 0 decides after each of `requests`.
    fn decisions(requests: &[Touched]) -> Vec<Option<usize>> {
        let mut affinity = Affinity {
            here: 0,
            toward: None,
            streak: 0,
        };
        requests.iter().map(|t| affinity.after(*t)).collect()
    }

    #[test]
    fn a_connection_moves_after_a_streak_toward_one_other_shard() {
        let streak = AFFINITY_STREAK as usize;
        // Partition-less requests neither count nor break the streak.
        let mut requests = vec![Touched::One(1); streak];
        requests.insert(3, Touched::None);
        let decided = decisions(&requests);
        assert!(decided[..streak].iter().all(Option::is_none));
        assert_eq!(decided[streak], Some(1));
        // A request to this shard, to several, or toward another shard starts again.
        for breaker in [Touched::One(0), Touched::Many, Touched::One(2)] {
            let mut requests = vec![Touched::One(1); streak - 1];
            requests.push(breaker);
            requests.extend(vec![Touched::One(1); streak]);
            let decided = decisions(&requests);
            assert!(decided[..2 * streak - 1].iter().all(Option::is_none));
            assert_eq!(decided[2 * streak - 1], Some(1));
        }
    }
}
