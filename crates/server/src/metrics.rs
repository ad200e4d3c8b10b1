//! Metrics shared by all shards, rendered in Prometheus text format by `/metrics`.
//!
//! Relaxed atomics: each value is independent and only read for display. Per-topic counters
//! sit behind one mutex, taken once per produce or fetch of a topic, never across I/O.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::broker::Broker;

/// Upper bounds of the request-latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 500_000, 2_000_000, 10_000_000,
];
/// API keys tracked one by one; Kafka's keys are below this.
pub const API_KEYS_TRACKED: usize = 100;
/// A reactor that wakes this much later than asked has stalled.
pub const REACTOR_STALL_THRESHOLD: Duration = Duration::from_millis(10);
/// How often each shard checks itself for stalls.
pub const REACTOR_PROBE_INTERVAL: Duration = Duration::from_millis(5);

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = elapsed.as_micros() as u64;
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

#[derive(Default)]
pub struct TopicCounters {
    pub records_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub records_out: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl TopicCounters {
    /// Counts stored batches sent to a reader: their bytes, and their records as the batch
    /// headers declare them (whole batches, as Kafka's own out-counters count).
    pub fn sent(&self, batches: &[u8]) {
        let mut records = 0u64;
        let mut at = 0;
        while let Ok(header) = weir_log::batch::BatchHeader::decode(&batches[at..]) {
            records += u64::try_from(header.record_count).unwrap_or(0);
            at += header.size();
            if at >= batches.len() {
                break;
            }
        }
        self.records_out.fetch_add(records, Ordering::Relaxed);
        let bytes = batches.len() as u64;
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }
}

pub struct Metrics {
    pub connections_accepted: AtomicU64,
    pub connections_moved: AtomicU64,
    /// Fetch reads of partitions done on the reactor and on the blocking pool.
    pub reads_on_reactor: AtomicU64,
    pub reads_on_pool: AtomicU64,
    pub connections_open: AtomicU64,
    pub requests_rejected: AtomicU64,
    /// Connections closed at accept: over `max_connections`, over `max_connections_per_ip`.
    pub refused_total: AtomicU64,
    pub refused_per_ip: AtomicU64,
    /// Connections closed for sending nothing for `connections_max_idle_ms`, and for not
    /// finishing a started request within `request_complete_timeout_ms`.
    pub closed_idle: AtomicU64,
    pub closed_request_timeout: AtomicU64,
    pub closed_response_stalled: AtomicU64,
    /// Connections muted by a quota throttle now, and blocked writing a response now.
    pub paused_throttle: AtomicU64,
    pub paused_slow_reader: AtomicU64,
    /// Connections waiting for request memory budget now, and how often one had to.
    pub budget_waiting: AtomicU64,
    pub budget_waits: AtomicU64,
    /// Sealed segments deleted by retention, and their bytes.
    pub retention_segments_deleted: AtomicU64,
    pub retention_bytes_deleted: AtomicU64,
    /// Request latency, by API key.
    pub api: Vec<Histogram>,
    /// HTTP connections open, refused over `http_max_connections`, responses by status class
    /// (1xx..5xx), and REST request latency.
    pub http_connections_open: AtomicU64,
    pub http_refused: AtomicU64,
    pub http_responses: [AtomicU64; 5],
    pub http_latency: Histogram,
    /// WebSocket connections open, subscriptions, live feeds (one per partition and encoding
    /// per shard), frames sent, feed messages built, subscribers that fell behind a feed and
    /// read on their own, connections closed for not answering pings or not reading.
    pub ws_connections_open: AtomicU64,
    pub ws_subscriptions: AtomicU64,
    pub ws_feeds: AtomicU64,
    pub ws_messages_sent: AtomicU64,
    pub ws_feed_messages: AtomicU64,
    pub ws_lagged: AtomicU64,
    pub ws_closed_dead: AtomicU64,
    pub ws_closed_slow: AtomicU64,
    topics: Mutex<BTreeMap<String, Arc<TopicCounters>>>,
    /// Reactor stalls, by shard.
    pub stalls: Vec<AtomicU64>,
}

impl Metrics {
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            connections_accepted: AtomicU64::new(0),
            connections_moved: AtomicU64::new(0),
            reads_on_reactor: AtomicU64::new(0),
            reads_on_pool: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
            closed_idle: AtomicU64::new(0),
            closed_request_timeout: AtomicU64::new(0),
            closed_response_stalled: AtomicU64::new(0),
            paused_throttle: AtomicU64::new(0),
            paused_slow_reader: AtomicU64::new(0),
            budget_waiting: AtomicU64::new(0),
            budget_waits: AtomicU64::new(0),
            retention_segments_deleted: AtomicU64::new(0),
            retention_bytes_deleted: AtomicU64::new(0),
            api: (0..API_KEYS_TRACKED)
                .map(|_| Histogram::default())
                .collect(),
            http_connections_open: AtomicU64::new(0),
            http_refused: AtomicU64::new(0),
            http_responses: Default::default(),
            http_latency: Histogram::default(),
            ws_connections_open: AtomicU64::new(0),
            ws_subscriptions: AtomicU64::new(0),
            ws_feeds: AtomicU64::new(0),
            ws_messages_sent: AtomicU64::new(0),
            ws_feed_messages: AtomicU64::new(0),
            ws_lagged: AtomicU64::new(0),
            ws_closed_dead: AtomicU64::new(0),
            ws_closed_slow: AtomicU64::new(0),
            topics: Mutex::new(BTreeMap::new()),
            stalls: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn request(&self, api_key: i16, elapsed: Duration) {
        if let Some(h) = usize::try_from(api_key).ok().and_then(|k| self.api.get(k)) {
            h.observe(elapsed);
        }
    }

    /// Counts an HTTP response by its status class.
    pub fn http_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.http_responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn topic(&self, name: &str) -> Arc<TopicCounters> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        // Look up before inserting: the name is copied once per topic, not once per request.
        if let Some(counters) = topics.get(name) {
            return counters.clone();
        }
        topics.entry(name.to_string()).or_default().clone()
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A counter with one line per `reason` label.
fn by_reason(out: &mut String, name: &str, help: &str, counters: &[(&str, &AtomicU64)]) {
    by_reason_of(out, name, "counter", help, counters);
}

fn by_reason_of(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    counters: &[(&str, &AtomicU64)],
) {
    header(out, name, kind, help);
    for (reason, n) in counters {
        let n = n.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
    }
}

/// A label value as Prometheus' text format wants it: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Kafka's name of an API key, for labels.
fn api_name(key: usize) -> String {
    i16::try_from(key)
        .ok()
        .and_then(weir_kafka::api::name)
        .map_or_else(|| format!("key{key}"), str::to_string)
}

pub fn render(broker: &Broker) -> String {
    let m = &broker.metrics;
    let mut out = String::new();
    for (name, kind, help, value) in [
        (
            "weir_connections_accepted_total",
            "counter",
            "Kafka connections accepted",
            m.connections_accepted.load(Ordering::Relaxed),
        ),
        (
            "weir_connections_moved_total",
            "counter",
            "Kafka connections moved to the shard owning the partitions they use",
            m.connections_moved.load(Ordering::Relaxed),
        ),
        (
            "weir_connections_open",
            "gauge",
            "Kafka connections open",
            m.connections_open.load(Ordering::Relaxed),
        ),
        (
            "weir_http_connections_open",
            "gauge",
            "HTTP connections open (REST and WebSocket)",
            m.http_connections_open.load(Ordering::Relaxed),
        ),
        (
            "weir_http_connections_refused_total",
            "counter",
            "HTTP connections closed as soon as accepted, over http_max_connections",
            m.http_refused.load(Ordering::Relaxed),
        ),
        (
            "weir_ws_connections_open",
            "gauge",
            "WebSocket connections open",
            m.ws_connections_open.load(Ordering::Relaxed),
        ),
        (
            "weir_ws_subscriptions",
            "gauge",
            "WebSocket partition subscriptions",
            m.ws_subscriptions.load(Ordering::Relaxed),
        ),
        (
            "weir_ws_feeds",
            "gauge",
            "Live feeds: one reader per partition and encoding per shard, shared by its subscribers",
            m.ws_feeds.load(Ordering::Relaxed),
        ),
        (
            "weir_ws_frames_sent_total",
            "counter",
            "WebSocket frames written to clients",
            m.ws_messages_sent.load(Ordering::Relaxed),
        ),
        (
            "weir_ws_feed_messages_total",
            "counter",
            "Records messages built by live feeds (each written to every subscriber)",
            m.ws_feed_messages.load(Ordering::Relaxed),
        ),
        (
            "weir_ws_subscribers_lagged_total",
            "counter",
            "Times a subscriber fell behind its feed and was paused at its offset, reading on its own",
            m.ws_lagged.load(Ordering::Relaxed),
        ),
        (
            "weir_request_budget_in_use_bytes",
            "gauge",
            "Request bytes held in memory (reserved against request_memory_budget_bytes)",
            broker.request_budget.in_use() as u64,
        ),
        (
            "weir_request_budget_waiting_connections",
            "gauge",
            "Connections not reading because the request memory budget is spent",
            m.budget_waiting.load(Ordering::Relaxed),
        ),
        (
            "weir_request_budget_waits_total",
            "counter",
            "Times a connection waited for request memory budget before reading a request",
            m.budget_waits.load(Ordering::Relaxed),
        ),
        (
            "weir_log_retention_deleted_segments_total",
            "counter",
            "Sealed segments deleted by retention.ms or retention.bytes",
            m.retention_segments_deleted.load(Ordering::Relaxed),
        ),
        (
            "weir_log_retention_deleted_bytes_total",
            "counter",
            "Bytes of the segments deleted by retention",
            m.retention_bytes_deleted.load(Ordering::Relaxed),
        ),
        (
            "weir_requests_rejected_total",
            "counter",
            "Kafka requests that closed their connection (malformed, unsupported, too large, or \
             an acks=0 produce that failed)",
            m.requests_rejected.load(Ordering::Relaxed),
        ),
    ] {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }

    header(
        &mut out,
        "weir_http_responses_total",
        "counter",
        "HTTP responses, by status class",
    );
    for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .zip(&m.http_responses)
    {
        let n = n.load(Ordering::Relaxed);
        let _ = writeln!(out, "weir_http_responses_total{{class=\"{class}\"}} {n}");
    }
    header(
        &mut out,
        "weir_http_request_duration_seconds",
        "histogram",
        "Time from an HTTP request's arrival to its response",
    );
    m.http_latency.render(
        &mut out,
        "weir_http_request_duration_seconds",
        "route=\"rest\"",
    );
    header(
        &mut out,
        "weir_partition_reads_total",
        "counter",
        "Fetch reads of partitions, by where they ran: on the reactor, or on the blocking pool \
         when the partition was busy or its data not in the page cache",
    );
    for (on, n) in [("reactor", &m.reads_on_reactor), ("pool", &m.reads_on_pool)] {
        let n = n.load(Ordering::Relaxed);
        let _ = writeln!(out, "weir_partition_reads_total{{on=\"{on}\"}} {n}");
    }
    by_reason(
        &mut out,
        "weir_ws_closed_total",
        "WebSocket connections closed by the broker: no pong for two ping intervals, or not \
         taking a frame within http_idle_timeout_ms",
        &[
            ("dead", &m.ws_closed_dead),
            ("not_reading", &m.ws_closed_slow),
        ],
    );
    by_reason(
        &mut out,
        "weir_connections_refused_total",
        "Kafka connections closed as soon as accepted, by the limit they were over",
        &[
            ("max_connections", &m.refused_total),
            ("max_connections_per_ip", &m.refused_per_ip),
        ],
    );
    by_reason(
        &mut out,
        "weir_connections_timed_out_total",
        "Kafka connections closed by a timeout: idle, a request not finished in time, or a \
         response the client took none of for connections_max_idle_ms",
        &[
            ("idle", &m.closed_idle),
            ("request_incomplete", &m.closed_request_timeout),
            ("response_stalled", &m.closed_response_stalled),
        ],
    );
    by_reason_of(
        &mut out,
        "weir_connections_paused",
        "gauge",
        "Kafka connections not being read now: waiting for request memory budget, muted by a \
         quota throttle, or blocked writing a response the client does not take",
        &[
            ("memory_budget", &m.budget_waiting),
            ("throttle", &m.paused_throttle),
            ("slow_reader", &m.paused_slow_reader),
        ],
    );
    header(
        &mut out,
        "weir_client_throttle_seconds_total",
        "counter",
        "Throttle time handed to clients over their quotas, by client id and quota",
    );
    {
        let quotas = broker.quotas.lock().unwrap_or_else(|e| e.into_inner());
        let mut throttled: Vec<_> = quotas.throttled().collect();
        throttled.sort_by(|a, b| (a.0, a.1 as u8).cmp(&(b.0, b.1 as u8)));
        for (client, kind, total) in throttled {
            let kind = match kind {
                weir_broker::quota::Kind::Produce => "produce",
                weir_broker::quota::Kind::Fetch => "fetch",
                weir_broker::quota::Kind::Request => "request",
            };
            let _ = writeln!(
                out,
                "weir_client_throttle_seconds_total{{client_id=\"{}\",quota=\"{kind}\"}} {:.3}",
                label(client),
                total.as_secs_f64()
            );
        }
    }
    header(
        &mut out,
        "weir_requests_total",
        "counter",
        "Kafka requests answered, by API",
    );
    for (key, h) in m.api.iter().enumerate() {
        let count = h.count.load(Ordering::Relaxed);
        if count > 0 {
            let _ = writeln!(
                out,
                "weir_requests_total{{api=\"{}\"}} {count}",
                api_name(key)
            );
        }
    }
    header(
        &mut out,
        "weir_request_duration_seconds",
        "histogram",
        "Time from a request's last byte read to its response handed to the socket, by API",
    );
    for (key, h) in m.api.iter().enumerate() {
        if h.count.load(Ordering::Relaxed) > 0 {
            h.render(
                &mut out,
                "weir_request_duration_seconds",
                &format!("api=\"{}\"", api_name(key)),
            );
        }
    }

    let topics = m.topics.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (name, help, field) in [
        (
            "weir_topic_records_in_total",
            "Records appended, by topic",
            0,
        ),
        (
            "weir_topic_bytes_in_total",
            "Record batch bytes appended, by topic",
            1,
        ),
        (
            "weir_topic_records_out_total",
            "Records sent to readers, by topic: whole batches for Kafka fetches, the records \
             returned for REST, each live-feed read once for all its WebSocket subscribers",
            2,
        ),
        (
            "weir_topic_bytes_out_total",
            "Record batch bytes sent to readers, by topic",
            3,
        ),
    ] {
        header(&mut out, name, "counter", help);
        for (topic, c) in &topics {
            let value = match field {
                0 => c.records_in.load(Ordering::Relaxed),
                1 => c.bytes_in.load(Ordering::Relaxed),
                2 => c.records_out.load(Ordering::Relaxed),
                _ => c.bytes_out.load(Ordering::Relaxed),
            };
            let _ = writeln!(out, "{name}{{topic=\"{topic}\"}} {value}");
        }
    }

    header(
        &mut out,
        "weir_shard_mailbox_depth",
        "gauge",
        "Partition requests queued for a shard",
    );
    for (shard, mailbox) in broker.mailboxes.iter().enumerate() {
        let depth = mailbox.max_capacity() - mailbox.capacity();
        let _ = writeln!(out, "weir_shard_mailbox_depth{{shard=\"{shard}\"}} {depth}");
    }
    header(
        &mut out,
        "weir_reactor_stalls_total",
        "counter",
        "Times a shard's reactor woke more than 10 ms late (something blocked it)",
    );
    for (shard, stalls) in m.stalls.iter().enumerate() {
        let _ = writeln!(
            out,
            "weir_reactor_stalls_total{{shard=\"{shard}\"}} {}",
            stalls.load(Ordering::Relaxed)
        );
    }

    let flush = broker.flusher.stats();
    header(
        &mut out,
        "weir_log_flush_seconds",
        "summary",
        "fdatasync rounds of the flusher threads (group commit linger included)",
    );
    let _ = writeln!(
        out,
        "weir_log_flush_seconds_sum {}",
        flush.micros_total as f64 / 1e6
    );
    let _ = writeln!(out, "weir_log_flush_seconds_count {}", flush.rounds);
    header(
        &mut out,
        "weir_log_flush_seconds_max",
        "gauge",
        "Longest fdatasync round",
    );
    let _ = writeln!(
        out,
        "weir_log_flush_seconds_max {}",
        flush.micros_max as f64 / 1e6
    );
    header(
        &mut out,
        "weir_log_cache_evicted_bytes_total",
        "counter",
        "Log bytes written back and dropped from the page cache behind each partition's \
         log_cache_window_bytes",
    );
    let _ = writeln!(
        out,
        "weir_log_cache_evicted_bytes_total {}",
        flush.evicted_bytes
    );
    out
}

/// Counts this shard's reactor stalls until shutdown: a timer that fires late means something
/// held the thread.
pub(crate) async fn watch_stalls(
    broker: Arc<Broker>,
    shard: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut expected = tokio::time::Instant::now() + REACTOR_PROBE_INTERVAL;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(expected) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = tokio::time::Instant::now();
        if now.saturating_duration_since(expected) > REACTOR_STALL_THRESHOLD {
            broker.metrics.stalls[shard].fetch_add(1, Ordering::Relaxed);
        }
        expected = now + REACTOR_PROBE_INTERVAL;
    }
}
