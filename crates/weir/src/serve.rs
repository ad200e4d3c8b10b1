//! `weir serve`: resolve the settings (flags > env > file > defaults), start, wait for
//! SIGTERM/SIGINT, shut down cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use weir_server::config::request_time_rate;
use weir_server::{Server, ServerConfig};

pub const USAGE: &str =
    "usage: weir serve [--config FILE] [--data-dir DIR] [--kafka-listen HOST:PORT]
                  [--advertised-listener HOST:PORT] [--http-listen HOST:PORT] [--shards N]

environment: WEIR_DATA_DIR, WEIR_KAFKA_LISTEN, WEIR_ADVERTISED_LISTENER, WEIR_HTTP_LISTEN,
             WEIR_SHARDS (flags win over the environment, which wins over the file)";

/// `[client_quotas."<client id>"]`: one client's rates (Kafka's quota names).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientQuota {
    producer_byte_rate: Option<u64>,
    consumer_byte_rate: Option<u64>,
    request_percentage: Option<f64>,
}

/// `value` as a number of at least `min` and, with a `max`, at most that; or why not.
fn number<T>(value: &str, min: T, max: Option<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let n: T = value.parse().map_err(|_| "not a number".to_string())?;
    match max {
        Some(max) if n < min || n > max => Err(format!("must be between {min} and {max}")),
        None if n < min => Err(format!("must be at least {min}")),
        _ => Ok(n),
    }
}

/// One setting from one source, applied in precedence order.
fn apply(config: &mut ServerConfig, key: &str, value: &str, source: &str) -> Result<(), String> {
    match set(config, key, value, source)? {
        true => Ok(()),
        false => Err(format!("{source}: unknown setting {key:?}")),
    }
}

/// Whether `key` is a setting (whatever value it would take).
fn known(key: &str) -> bool {
    !matches!(set(&mut ServerConfig::default(), key, "", ""), Ok(false))
}

/// The TOML type a key takes in the config file.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Flag,
    /// A percentage: an integer or a float.
    Fraction,
    Integer,
}

impl Kind {
    fn of(key: &str) -> Kind {
        match key {
            "data_dir" | "kafka_listen" | "advertised_listener" | "http_listen" => Kind::Text,
            "auto_create_topics" | "connection_affinity" | "shard_cpu_pinning" => Kind::Flag,
            "quota_request_percentage" => Kind::Fraction,
            _ => Kind::Integer,
        }
    }

    /// The value as `set` reads it, or None if it is not of this kind.
    fn text(self, value: toml::Value) -> Option<String> {
        match (self, value) {
            (Kind::Text, toml::Value::String(s)) => Some(s),
            (Kind::Flag, toml::Value::Boolean(b)) => Some(b.to_string()),
            (Kind::Fraction | Kind::Integer, toml::Value::Integer(n)) => Some(n.to_string()),
            (Kind::Fraction, toml::Value::Float(x)) => Some(x.to_string()),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Flag => "true or false",
            Kind::Fraction => "a number",
            Kind::Integer => "an integer",
        }
    }
}

/// Applies one setting; `Ok(false)` if there is no such setting.
fn set(config: &mut ServerConfig, key: &str, value: &str, source: &str) -> Result<bool, String> {
    let bad = |why: &str| format!("{source}: {key}={value:?}: {why}");
    let at_least = |value: &str, min| number(value, min, None).map_err(|why| bad(&why));
    let between = |value: &str, min, max| number(value, min, Some(max)).map_err(|why| bad(&why));
    let millis_at_least = |value: &str, min: u64| {
        number(value, min, None)
            .map(Duration::from_millis)
            .map_err(|why| bad(&why))
    };
    match key {
        "data_dir" => config.data_dir = PathBuf::from(value),
        "kafka_listen" => config.kafka_listen = parse_addr(value).map_err(|e| bad(&e))?,
        "http_listen" => config.http_listen = parse_addr(value).map_err(|e| bad(&e))?,
        "advertised_listener" => {
            let (host, port) = value
                .rsplit_once(':')
                .ok_or_else(|| bad("expected HOST:PORT"))?;
            let port = port.parse().map_err(|_| bad("bad port"))?;
            config.advertised_listener = Some((host.trim_matches(['[', ']']).to_string(), port));
        }
        "shards" => config.shards = between(value, 1, 1024)?,
        "socket_request_max_bytes" => {
            let n: usize = value.parse().map_err(|_| bad("not a number"))?;
            if n < 64 || n > i32::MAX as usize {
                return Err(bad("must be between 64 and 2147483647"));
            }
            config.socket_request_max_bytes = n;
        }
        "quota_producer_byte_rate" | "quota_consumer_byte_rate" => {
            let rate: u64 = value.parse().map_err(|_| bad("not a number"))?;
            if rate < 1 {
                return Err(bad("must be at least 1 (bytes per second)"));
            }
            if key == "quota_producer_byte_rate" {
                config.quotas.default.producer_byte_rate = Some(rate);
            } else {
                config.quotas.default.consumer_byte_rate = Some(rate);
            }
        }
        "quota_request_percentage" => {
            let percentage: f64 = value.parse().map_err(|_| bad("not a number"))?;
            config.quotas.default.request_time_rate = Some(
                request_time_rate(percentage)
                    .ok_or_else(|| bad("must be a positive percentage of one thread"))?,
            );
        }
        "request_memory_budget_bytes" => {
            let n: usize = value.parse().map_err(|_| bad("not a number"))?;
            if n < 1 << 20 {
                return Err(bad("must be at least 1048576 (1 MiB)"));
            }
            config.request_memory_budget_bytes = n;
        }
        "max_connections" => config.max_connections = at_least(value, 1)?,
        "max_connections_per_ip" => config.max_connections_per_ip = at_least(value, 1)?,
        "http_max_connections" => config.http_max_connections = at_least(value, 1)?,
        "http_max_header_bytes" => config.http_max_header_bytes = at_least(value, 1024)?,
        "http_max_body_bytes" => config.http_max_body_bytes = at_least(value, 1024)?,
        "http_decompressed_batch_max_bytes" => {
            config.http_decompressed_batch_max_bytes = at_least(value, 1024)?
        }
        "http_idle_timeout_ms" => config.http_idle_timeout = millis_at_least(value, 1)?,
        "http_fetch_max_records" => config.http_fetch_max_records = between(value, 1, 1_000_000)?,
        "ws_max_message_bytes" => config.ws_max_message_bytes = at_least(value, 1024)?,
        "ws_fetch_max_bytes" => config.ws_fetch_max_bytes = at_least(value, 1024)?,
        "ws_feed_buffer_bytes" => config.ws_feed_buffer_bytes = at_least(value, 4096)?,
        "ws_feed_buffer_messages" => config.ws_feed_buffer_messages = between(value, 1, 1_000_000)?,
        "ws_write_max_bytes" => config.ws_write_max_bytes = between(value, 4096, 64 << 20)?,
        "ws_catchup_reads" => config.ws_catchup_reads = between(value, 1, 1_000_000)?,
        "ws_max_subscriptions" => config.ws_max_subscriptions = between(value, 1, 1_000_000)?,
        "ws_group_max_pending_acks" => {
            config.ws_group_max_pending_acks = between(value, 1, 1_000_000)?
        }
        "ws_group_session_timeout_ms" => {
            config.ws_group_session_timeout = millis_at_least(value, 1000)?
        }
        "ws_ping_interval_ms" => config.ws_ping_interval = millis_at_least(value, 10)?,
        "log_retention_check_interval_ms" => {
            config.log_retention_check_interval = millis_at_least(value, 1)?
        }
        "connections_max_idle_ms" => config.connections_max_idle = millis_at_least(value, 1)?,
        "request_complete_timeout_ms" => {
            config.request_complete_timeout = millis_at_least(value, 1)?
        }
        "shutdown_grace_ms" => {
            config.shutdown_grace =
                Duration::from_millis(value.parse().map_err(|_| bad("not a number"))?)
        }
        "offsets_partitions" => {
            let n: u32 = value.parse().map_err(|_| bad("not a number"))?;
            if !(1..=1000).contains(&n) {
                return Err(bad("must be between 1 and 1000"));
            }
            config.offsets_partitions = n;
        }
        "offsets_retention_minutes" => {
            let minutes: i64 = value.parse().map_err(|_| bad("not a number"))?;
            if minutes < 1 {
                return Err(bad("must be at least 1"));
            }
            config.groups.offsets_retention_ms = minutes.saturating_mul(60_000);
        }
        "group_initial_rebalance_delay_ms" => {
            config.groups.coordination.initial_rebalance_delay_ms =
                value.parse().map_err(|_| bad("not a number"))?
        }
        "group_min_session_timeout_ms" => {
            config.groups.coordination.session_timeout_ms_min =
                value.parse().map_err(|_| bad("not a number"))?
        }
        "group_max_session_timeout_ms" => {
            config.groups.coordination.session_timeout_ms_max =
                value.parse().map_err(|_| bad("not a number"))?
        }
        "group_max_size" => config.groups.coordination.members_max = at_least(value, 1)?,
        "offset_metadata_max_bytes" => {
            config.groups.coordination.offset_metadata_bytes_max = between(value, 0, 1 << 20)?
        }
        "offsets_retention_check_interval_ms" => {
            config.groups.offsets_retention_check_ms =
                number(value, 1, None).map_err(|w| bad(&w))?
        }
        "auto_create_topics" => {
            config.auto_create_topics = value.parse().map_err(|_| bad("not true or false"))?
        }
        "num_partitions" => {
            config.num_partitions = number(value, 1, Some(10_000)).map_err(|w| bad(&w))?
        }
        "connection_affinity" => {
            config.connection_affinity = value.parse().map_err(|_| bad("not true or false"))?
        }
        "shard_cpu_pinning" => {
            config.shard_cpu_pinning = value.parse().map_err(|_| bad("not true or false"))?
        }
        "list_offsets_decompress_max_bytes" => {
            config.list_offsets_decompress_max_bytes = between(value, 1024, 1 << 30)?
        }
        "shard_mailbox_capacity" => config.shard_mailbox_capacity = between(value, 1, 1 << 20)?,
        "flush_threads" => config.flush_threads = between(value, 1, 64)?,
        "log_cache_window_bytes" => {
            let bytes: u64 = number(value, 0, Some(1 << 40)).map_err(|w| bad(&w))?;
            if bytes != 0 && bytes < weir_log::CACHE_WINDOW_BYTES_MIN {
                return Err(bad("must be 0 (keep everything) or at least 1048576"));
            }
            config.log_cache_window_bytes = bytes;
        }
        "fetch_max_bytes" => config.fetch_max_bytes = between(value, 1024, 1 << 30)?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    value
        .to_socket_addrs()
        .map_err(|e| format!("not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

const ENV: [(&str, &str); 5] = [
    ("WEIR_DATA_DIR", "data_dir"),
    ("WEIR_KAFKA_LISTEN", "kafka_listen"),
    ("WEIR_ADVERTISED_LISTENER", "advertised_listener"),
    ("WEIR_HTTP_LISTEN", "http_listen"),
    ("WEIR_SHARDS", "shards"),
];

const FLAGS: [(&str, &str); 5] = [
    ("--data-dir", "data_dir"),
    ("--kafka-listen", "kafka_listen"),
    ("--advertised-listener", "advertised_listener"),
    ("--http-listen", "http_listen"),
    ("--shards", "shards"),
];

/// Resolves the settings from the arguments after `serve`, the environment and the file.
pub fn resolve(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<ServerConfig, String> {
    let mut flags = Vec::new();
    let mut file = None;
    // Unknown names take no value, so they are reported as unknown, not as missing one.
    let takes_value = |name: &str| name == "--config" || FLAGS.iter().any(|(f, _)| *f == name);
    for (name, value) in crate::flags::split(args, |name| !takes_value(name))? {
        let key = FLAGS
            .iter()
            .find(|(flag, _)| *flag == name)
            .map(|(_, key)| *key);
        match (name.as_str(), key, value) {
            ("--config", _, Some(value)) => file = Some(value),
            (_, Some(key), Some(value)) => flags.push((key, value)),
            (name, _, _) => return Err(format!("unknown argument {name:?}")),
        }
    }
    let mut config = ServerConfig::default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let parsed: toml::Table = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        let source = format!("config file {path}");
        let mut client_quotas = std::collections::BTreeMap::<String, ClientQuota>::new();
        // Every key is optional; an unknown one, or a value of the wrong type, is an error;
        // then each goes through the same checks as a flag or a variable.
        for (key, value) in parsed {
            if key == "client_quotas" {
                client_quotas = value
                    .try_into()
                    .map_err(|e| format!("{source}: client_quotas: {e}"))?;
                continue;
            }
            if !known(&key) {
                return Err(format!("{source}: unknown setting {key:?}"));
            }
            let kind = Kind::of(&key);
            let value = kind
                .text(value)
                .ok_or_else(|| format!("{source}: {key}: expected {}", kind.name()))?;
            apply(&mut config, &key, &value, &source)?;
        }
        for (client, quota) in client_quotas {
            let rate = |r: Option<u64>, name: &str| match r {
                Some(0) => Err(format!(
                    "{source}: client_quotas.{client:?}.{name}: must be at least 1"
                )),
                r => Ok(r),
            };
            let request_time = match quota.request_percentage {
                None => None,
                Some(p) => Some(request_time_rate(p).ok_or_else(|| {
                    format!(
                        "{source}: client_quotas.{client:?}.request_percentage: must be a \
                         positive percentage of one thread"
                    )
                })?),
            };
            let rates = weir_server::config::QuotaRates {
                producer_byte_rate: rate(quota.producer_byte_rate, "producer_byte_rate")?,
                consumer_byte_rate: rate(quota.consumer_byte_rate, "consumer_byte_rate")?,
                request_time_rate: request_time,
            };
            config.quotas.clients.insert(client, rates);
        }
    }
    for (var, key) in ENV {
        if let Some(value) = env(var) {
            apply(&mut config, key, &value, var)?;
        }
    }
    for (key, value) in flags {
        apply(&mut config, key, &value, "flag")?;
    }
    Ok(config)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let config = resolve(args, |var| std::env::var(var).ok())?;
    eprintln!(
        "weir: config data_dir={} kafka_listen={} advertised_listener={} http_listen={} shards={}",
        config.data_dir.display(),
        config.kafka_listen,
        config
            .advertised_listener
            .as_ref()
            .map_or("-".to_string(), |(h, p)| format!("{h}:{p}")),
        config.http_listen,
        config.shards
    );
    let server = Server::start(config).map_err(|e| format!("cannot start: {e}"))?;
    eprintln!("weir: kafka listening on {}", server.kafka_addr());
    eprintln!("weir: http listening on {}", server.http_addr());
    wait_for_signal()?;
    eprintln!("weir: shutting down");
    server.shutdown();
    eprintln!("weir: stopped");
    Ok(())
}

fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn precedence_is_flags_then_env_then_file_then_defaults() {
        let dir = std::env::temp_dir().join(format!("weir-serve-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("weir.toml");
        std::fs::write(
            &file,
            "data_dir = \"from-file\"\nshards = 3\nhttp_listen = \"127.0.0.1:7001\"\nkafka_listen = \"127.0.0.1:7002\"\n\
             offsets_partitions = 4\noffsets_retention_minutes = 2\n\
             group_initial_rebalance_delay_ms = 0\ngroup_min_session_timeout_ms = 1000\n\
             group_max_session_timeout_ms = 9000\ngroup_max_size = 7\n\
             quota_request_percentage = 150.5\nlog_retention_check_interval_ms = 2500\n\
             http_max_body_bytes = 65536\nhttp_max_header_bytes = 4096\nhttp_max_connections = 9\n\
             http_idle_timeout_ms = 1500\nhttp_decompressed_batch_max_bytes = 1048576\n\
             ws_max_message_bytes = 2048\nws_ping_interval_ms = 50\nws_feed_buffer_bytes = 5000\nws_catchup_reads = 2\nws_max_subscriptions = 9\n\
             ws_fetch_max_bytes = 4096\nws_group_session_timeout_ms = 7000\n\
             http_fetch_max_records = 11\nws_feed_buffer_messages = 12\nws_write_max_bytes = 8192\n\
             ws_group_max_pending_acks = 13\n\
             auto_create_topics = false\nnum_partitions = 6\nshard_mailbox_capacity = 14\n\
             flush_threads = 3\nfetch_max_bytes = 65536\noffsets_retention_check_interval_ms = 15\n\
             offset_metadata_max_bytes = 16\n\
             [client_quotas.etl]\nrequest_percentage = 0.5\n",
        )
        .expect("write");
        let env = |var: &str| match var {
            "WEIR_SHARDS" => Some("2".to_string()),
            "WEIR_HTTP_LISTEN" => Some("127.0.0.1:7003".to_string()),
            _ => None,
        };
        let config = resolve(
            &args(&["--config", file.to_str().expect("utf8"), "--shards=5"]),
            env,
        )
        .expect("resolve");
        assert_eq!(config.shards, 5, "flag beats env and file");
        assert_eq!(config.http_listen.port(), 7003, "env beats file");
        assert_eq!(config.kafka_listen.port(), 7002, "file beats default");
        assert_eq!(config.data_dir, PathBuf::from("from-file"));
        assert_eq!(config.advertised_listener, None);
        assert_eq!(config.offsets_partitions, 4);
        assert_eq!(config.groups.offsets_retention_ms, 120_000);
        let groups = &config.groups.coordination;
        assert_eq!(groups.initial_rebalance_delay_ms, 0);
        assert_eq!(
            (groups.session_timeout_ms_min, groups.session_timeout_ms_max),
            (1000, 9000)
        );
        assert_eq!(groups.members_max, 7);
        assert_eq!(config.quotas.default.request_time_rate, Some(1_505_000));
        assert_eq!(
            config.quotas.clients["etl"].request_time_rate,
            Some(5_000),
            "0.5 % of a thread is 5 ms a second"
        );
        assert_eq!(
            config.log_retention_check_interval,
            Duration::from_millis(2500)
        );
        assert_eq!(
            (
                config.http_max_body_bytes,
                config.http_max_header_bytes,
                config.http_max_connections,
                config.http_idle_timeout,
                config.http_decompressed_batch_max_bytes
            ),
            (65536, 4096, 9, Duration::from_millis(1500), 1 << 20)
        );
        assert_eq!(
            (
                config.ws_max_message_bytes,
                config.ws_ping_interval,
                config.ws_feed_buffer_bytes,
                config.ws_catchup_reads,
                config.ws_max_subscriptions,
                config.ws_fetch_max_bytes
            ),
            (2048, Duration::from_millis(50), 5000, 2, 9, 4096)
        );
        assert_eq!(config.ws_group_session_timeout, Duration::from_secs(7));
        assert_eq!(
            (
                config.http_fetch_max_records,
                config.ws_feed_buffer_messages,
                config.ws_write_max_bytes,
                config.ws_group_max_pending_acks
            ),
            (11, 12, 8192, 13)
        );
        assert_eq!(
            (
                config.auto_create_topics,
                config.num_partitions,
                config.shard_mailbox_capacity,
                config.flush_threads,
                config.fetch_max_bytes,
                config.groups.offsets_retention_check_ms,
                config.groups.coordination.offset_metadata_bytes_max
            ),
            (false, 6, 14, 3, 65536, 15, 16)
        );
        let defaults = resolve(&[], |_| None).expect("defaults");
        assert_eq!(defaults.kafka_listen.port(), 9092);
        assert_eq!(defaults.http_listen.port(), 9080);
        assert_eq!(defaults.data_dir, PathBuf::from("weir-data"));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// docs/config.md lists exactly the keys `apply` knows.
    #[test]
    fn every_setting_is_documented() {
        let doc = include_str!("../../../docs/config.md");
        let documented: std::collections::BTreeSet<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .filter(|key| !key.starts_with("--") && *key != "client_quotas")
            .collect();
        let source = include_str!("serve.rs");
        let body = &source[source.find("fn set(").expect("set")..];
        let body = &body[..body.find("\n}\n").expect("end of apply")];
        let known: std::collections::BTreeSet<&str> = body
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with('"') && l.contains("=>"))
            .flat_map(|l| l[..l.find("=>").expect("arm")].split('|'))
            .map(|key| key.trim().trim_matches('"'))
            .collect();
        assert_eq!(documented, known);
        assert!(doc.contains("[client_quotas."));
    }

    #[test]
    fn bad_settings_name_themselves() {
        let err = resolve(&args(&["--shards", "0"]), |_| None).unwrap_err();
        assert!(err.contains("shards"), "{err}");
        let err = resolve(&args(&["--bogus"]), |_| None).unwrap_err();
        assert!(err.contains("--bogus"), "{err}");
        let err = resolve(&args(&["--bogus=1"]), |_| None).unwrap_err();
        assert!(err.contains("unknown argument \"--bogus\""), "{err}");
        let err = resolve(&[], |v| (v == "WEIR_KAFKA_LISTEN").then(|| "nope".into())).unwrap_err();
        assert!(err.contains("WEIR_KAFKA_LISTEN"), "{err}");
        let err = resolve(&args(&["--kafka-listen"]), |_| None).unwrap_err();
        assert!(err.contains("needs a value"), "{err}");
        let file = std::env::temp_dir().join(format!("weir-serve-bad-{}.toml", std::process::id()));
        for (setting, key, why) in [
            (
                "quota_request_percentage = -1",
                "quota_request_percentage",
                "positive",
            ),
            (
                "ws_write_max_bytes = 100",
                "ws_write_max_bytes",
                "between 4096 and 67108864",
            ),
            (
                "http_fetch_max_records = 0",
                "http_fetch_max_records",
                "between 1 and 1000000",
            ),
            (
                "http_max_body_bytes = 10",
                "http_max_body_bytes",
                "at least 1024",
            ),
            (
                "ws_ping_interval_ms = 5",
                "ws_ping_interval_ms",
                "at least 10",
            ),
            ("shards = 2000", "shards", "between 1 and 1024"),
            (
                "auto_create_topics = 1",
                "auto_create_topics",
                "expected true or false",
            ),
            (
                "num_partitions = 0",
                "num_partitions",
                "between 1 and 10000",
            ),
            (
                "fetch_max_bytes = 10",
                "fetch_max_bytes",
                "between 1024 and 1073741824",
            ),
            ("no_such_key = 1", "no_such_key", "unknown setting"),
            ("shards = [1]", "shards", "expected an integer"),
            ("shards = 2.0", "shards", "expected an integer"),
            ("shards = \"2\"", "shards", "expected an integer"),
            ("data_dir = 5", "data_dir", "expected a string"),
            (
                "connection_affinity = \"no\"",
                "connection_affinity",
                "true or false",
            ),
            ("no_such_key = \"x\"", "no_such_key", "unknown setting"),
            ("[client_quotas.etl]\nbogus = 1", "client_quotas", "bogus"),
        ] {
            std::fs::write(&file, format!("{setting}\n")).expect("write");
            let err =
                resolve(&args(&["--config", file.to_str().expect("utf8")]), |_| None).unwrap_err();
            assert!(err.contains(key) && err.contains(why), "{err}");
        }
        std::fs::remove_file(&file).ok();
    }
}
