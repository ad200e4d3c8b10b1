//! The broker's settings, resolved (flags > env > file > defaults) by the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `data_dir`: where logs live.
    pub data_dir: PathBuf,
    /// `kafka_listen`: address of the Kafka listener (port 0: any free port).
    pub kafka_listen: SocketAddr,
    /// `advertised_listener`: host:port Metadata tells clients to connect to; default: the
    /// address the Kafka listener is bound to.
    pub advertised_listener: Option<(String, u16)>,
    /// `http_listen`: address of the HTTP listener (`/health`, `/metrics`).
    pub http_listen: SocketAddr,
    /// `http_max_connections`: open HTTP connections (REST and WebSocket) over all shards; one
    /// more is closed as soon as it is accepted.
    pub http_max_connections: usize,
    /// `http_max_header_bytes`: largest HTTP request head (request line and headers); a
    /// longer one is answered 431 and the connection closed.
    pub http_max_header_bytes: usize,
    /// `http_max_body_bytes`: largest HTTP request body; a larger one is answered 413 before
    /// it is read.
    pub http_max_body_bytes: usize,
    /// `http_idle_timeout_ms`: an HTTP connection with no request for this long is closed; a
    /// response the client does not take within it closes the connection too.
    pub http_idle_timeout: Duration,
    /// `http_decompressed_batch_max_bytes`: what one read for an HTTP or WebSocket client
    /// decompresses at most over all its batches, and the key, value and header bytes it turns
    /// into JSON at most (the Kafka path never decompresses); a single batch that expands past
    /// it cannot be read over HTTP.
    pub http_decompressed_batch_max_bytes: usize,
    /// `ws_max_message_bytes`: largest WebSocket message a client may send (one frame or the
    /// fragments of one message); a larger one closes the connection with 1009.
    pub ws_max_message_bytes: usize,
    /// `ws_ping_interval_ms`: how often the broker pings a WebSocket client; one that sends
    /// nothing for twice this is closed.
    pub ws_ping_interval: Duration,
    /// `ws_feed_buffer_bytes`: the latest records messages a shard's live feed of a partition
    /// keeps for its subscribers; one that falls further behind reads the log on its own.
    pub ws_feed_buffer_bytes: usize,
    /// `ws_max_subscriptions`: partitions one WebSocket connection may follow at once.
    pub ws_max_subscriptions: usize,
    /// `ws_catchup_reads`: reads of subscribers behind their feed running at once per shard
    /// (each holds up to `ws_fetch_max_bytes` of records until written).
    pub ws_catchup_reads: usize,
    /// `ws_fetch_max_bytes`: stored bytes one feed or catch-up read takes from a partition.
    pub ws_fetch_max_bytes: usize,
    /// `http_fetch_max_records`: records one REST fetch returns at most, whatever its
    /// `max_bytes` allows (a smaller `max_records` in the query wins).
    pub http_fetch_max_records: usize,
    /// `ws_feed_buffer_messages`: messages a shard's live feed of a partition keeps at most,
    /// whatever their size (next to `ws_feed_buffer_bytes`).
    pub ws_feed_buffer_messages: usize,
    /// `ws_write_max_bytes`: bytes of waiting messages one WebSocket subscriber writes in one
    /// go (one `writev`).
    pub ws_write_max_bytes: usize,
    /// `ws_group_max_pending_acks`: acks a WebSocket group member may have queued for the
    /// gateway's group member; more are refused with `busy` until it catches up.
    pub ws_group_max_pending_acks: usize,
    /// `ws_group_session_timeout_ms`: the session timeout of the group members the gateway
    /// runs for WebSocket clients (heartbeats go every tenth of it).
    pub ws_group_session_timeout: Duration,
    /// `shards`: reactor threads, each with its own Kafka listener socket (SO_REUSEPORT).
    pub shards: usize,
    /// `socket_request_max_bytes` (Kafka's `socket.request.max.bytes`): largest request frame.
    pub socket_request_max_bytes: usize,
    /// `request_memory_budget_bytes`: request bytes held in memory at once over all
    /// connections. A request's size is reserved before its body is read; when the budget is
    /// spent, connections stop reading (TCP pushes back on the clients) until requests finish.
    pub request_memory_budget_bytes: usize,
    /// Client quotas: `quota_producer_byte_rate`, `quota_consumer_byte_rate` and
    /// `quota_request_percentage` for every client id, and `[client_quotas."<client id>"]`
    /// tables with `producer_byte_rate`, `consumer_byte_rate` and `request_percentage` for one
    /// (Kafka's quota names).
    pub quotas: QuotaSettings,
    /// `max_connections` (Kafka's `max.connections`): open Kafka connections over all shards;
    /// one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// `max_connections_per_ip` (Kafka's `max.connections.per.ip`): open Kafka connections
    /// from one peer address.
    pub max_connections_per_ip: usize,
    /// `connections_max_idle_ms` (Kafka's `connections.max.idle.ms`): a connection that sends
    /// no request for this long is closed.
    pub connections_max_idle: Duration,
    /// `request_complete_timeout_ms`: once a request's first byte has arrived, the whole frame
    /// must arrive within this, or the connection is closed (a client stalling mid-frame,
    /// slowloris).
    pub request_complete_timeout: Duration,
    /// `shutdown_grace_ms`: how long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// `auto_create_topics` (Kafka's `auto.create.topics.enable`): Metadata for an unknown
    /// topic creates it.
    pub auto_create_topics: bool,
    /// `num_partitions` (Kafka's `num.partitions`): partitions of an auto-created topic.
    pub num_partitions: i32,
    /// `shard_mailbox_capacity`: requests queued for one shard's partitions before senders wait
    /// (and connections queued for a shard to take over, beyond which they stay where they are).
    pub shard_mailbox_capacity: usize,
    /// `list_offsets_decompress_max_bytes`: what ListOffsets by timestamp decompresses at most
    /// of the compressed batch it looks into for the exact record (one search per blocking
    /// thread at a time); a batch that expands past it is answered with its first offset.
    pub list_offsets_decompress_max_bytes: usize,
    /// `shard_cpu_pinning`: each shard's thread runs on one CPU of those the process may use
    /// (shard i on the i-th, wrapping around).
    pub shard_cpu_pinning: bool,
    /// `connection_affinity`: a Kafka connection whose requests keep going to partitions of
    /// one other shard moves to that shard, so its requests stop crossing between threads.
    pub connection_affinity: bool,
    /// `flush_threads`: threads that run fdatasync for all logs.
    pub flush_threads: usize,
    /// `log_cache_window_bytes`: the newest bytes of each partition kept in the page cache;
    /// older ones are written back and dropped behind the writer (0: the kernel decides).
    pub log_cache_window_bytes: u64,
    /// `fetch_max_bytes` (Kafka's `fetch.max.bytes`): the most record bytes one Fetch response
    /// carries, whatever the request asks (the first batch is always whole, KIP-74).
    pub fetch_max_bytes: usize,
    /// `log_retention_check_interval_ms` (Kafka's `log.retention.check.interval.ms`): how
    /// often each shard deletes the segments its logs' `retention.ms` and `retention.bytes`
    /// let go.
    pub log_retention_check_interval: Duration,
    /// `offsets_partitions` (Kafka's `offsets.topic.num.partitions`): coordinator partitions
    /// groups are hashed onto. Fixed by the first start of a data directory.
    pub offsets_partitions: u32,
    /// Group coordination and committed offsets.
    pub groups: GroupSettings,
}

pub use weir_broker::quota::{request_time_rate, Rates as QuotaRates};

/// Quota rates as configured: the default and per client id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaSettings {
    pub default: weir_broker::quota::Rates,
    pub clients: std::collections::BTreeMap<String, weir_broker::quota::Rates>,
}

/// Settings of consumer groups and their committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// Session timeouts, the initial rebalance delay, group size, offset metadata size.
    pub coordination: weir_broker::group::GroupConfig,
    /// `offsets_retention_minutes` (Kafka's `offsets.retention.minutes`): how long committed
    /// offsets of a group without members are kept.
    pub offsets_retention_ms: i64,
    /// `offsets_retention_check_interval_ms`: how often expired offsets are looked for.
    pub offsets_retention_check_ms: u64,
}

impl Default for GroupSettings {
    fn default() -> GroupSettings {
        GroupSettings {
            coordination: weir_broker::group::GroupConfig::default(),
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_ms: 10 * 60 * 1000,
        }
    }
}

/// Open Kafka connections allowed unless configured: room for the 10,000 idle connections of
/// DESIGN.md §4 and then some (Kafka itself has no limit by default; the process's file
/// descriptor limit is the real one).
pub const MAX_CONNECTIONS_DEFAULT: usize = 16_384;

/// An eighth of the machine's memory, between 64 MiB and 1 GiB: room for many producers'
/// largest batches at once, and a bound well inside the machine.
pub fn request_memory_budget_default() -> usize {
    const MIB: usize = 1 << 20;
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib.saturating_mul(1024))
        })
        .unwrap_or(512 * MIB);
    (total / 8).clamp(64 * MIB, 1024 * MIB)
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            data_dir: PathBuf::from("weir-data"),
            kafka_listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_listener: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9080)),
            http_max_connections: MAX_CONNECTIONS_DEFAULT,
            http_max_header_bytes: 16 * 1024,
            // A batch at the default max.message.bytes (1 MiB) as base64 in JSON, and more.
            http_max_body_bytes: 4 * 1024 * 1024,
            http_idle_timeout: Duration::from_secs(60),
            http_decompressed_batch_max_bytes: 16 * 1024 * 1024,
            ws_max_message_bytes: 1024 * 1024,
            ws_ping_interval: Duration::from_secs(20),
            ws_feed_buffer_bytes: 8 * 1024 * 1024,
            ws_catchup_reads: 64,
            ws_max_subscriptions: 4096,
            ws_fetch_max_bytes: 64 * 1024,
            ws_group_session_timeout: Duration::from_secs(30),
            http_fetch_max_records: 10_000,
            ws_feed_buffer_messages: 65_536,
            ws_write_max_bytes: 256 * 1024,
            ws_group_max_pending_acks: 64,
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            socket_request_max_bytes: weir_kafka::frame::SOCKET_REQUEST_MAX_BYTES_DEFAULT,
            request_memory_budget_bytes: request_memory_budget_default(),
            quotas: QuotaSettings::default(),
            max_connections: MAX_CONNECTIONS_DEFAULT,
            max_connections_per_ip: MAX_CONNECTIONS_DEFAULT,
            connections_max_idle: Duration::from_secs(600),
            request_complete_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            auto_create_topics: true,
            num_partitions: 1,
            shard_mailbox_capacity: 1024,
            connection_affinity: true,
            shard_cpu_pinning: true,
            list_offsets_decompress_max_bytes: 4 * 1024 * 1024,
            flush_threads: weir_log::FLUSH_THREADS_DEFAULT,
            log_cache_window_bytes: weir_log::CACHE_WINDOW_BYTES_DEFAULT,
            fetch_max_bytes: 55 * 1024 * 1024,
            log_retention_check_interval: Duration::from_secs(300),
            offsets_partitions: 16,
            groups: GroupSettings::default(),
        }
    }
}
