//! `weir serve` as a real process on 127.0.0.1:0: the Kafka handshake, Metadata, bad input,
//! HTTP health, SIGTERM, and a real client (kcat).

mod common;

use common::ConfigFile;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    metadata_request::MetadataRequestTopic, ApiKey, ApiVersionsRequest, ApiVersionsResponse,
    MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

struct Weir {
    child: Child,
    kafka: SocketAddr,
    http: SocketAddr,
    log: mpsc::Receiver<String>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `weir serve` config file, removed when dropped.
fn temp_dir() -> TempDir {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    TempDir(std::env::temp_dir().join(format!(
        "weir-serve-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )))
}

impl Weir {
    fn start(extra: &[&str]) -> Weir {
        Weir::start_in(temp_dir(), extra)
    }

    /// Starts on `dir`, which the returned process owns (and removes when dropped).
    fn start_in(dir: TempDir, extra: &[&str]) -> Weir {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&dir.0)
            .args([
                "--kafka-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(["--shards", "2"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut kafka = None;
        let mut http = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while kafka.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = log
                .recv_timeout(left)
                .expect("weir serve did not log its ports");
            let addr = |prefix: &str| {
                line.strip_prefix(prefix)
                    .map(|a| a.parse::<SocketAddr>().expect("address"))
            };
            kafka = kafka.or(addr("weir: kafka listening on "));
            http = http.or(addr("weir: http listening on "));
        }
        Weir {
            child,
            kafka: kafka.expect("kafka"),
            http: http.expect("http"),
            log,
            _dir: dir,
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.kafka).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// SIGTERM, wait for exit; returns the status, the rest of the log, and the data directory.
    fn terminate(self) -> (std::process::ExitStatus, Vec<String>) {
        let (status, lines, _) = self.terminate_keep();
        (status, lines)
    }

    /// SIGKILL; returns the data directory for a restart.
    fn kill_keep(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self._dir, TempDir(std::path::PathBuf::new()))
    }

    fn terminate_keep(mut self) -> (std::process::ExitStatus, Vec<String>, TempDir) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "weir serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let lines = self.log.try_iter().collect();
        let dir = std::mem::replace(&mut self._dir, TempDir(std::path::PathBuf::new()));
        (status, lines, dir)
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Vec<u8> {
    request_as("serve-test", key, version, correlation_id, body)
}

/// Sends a request and returns (correlation id, body) of the response.
fn call(stream: &mut TcpStream, frame: &[u8], key: ApiKey, version: i16) -> (i32, Bytes) {
    stream.write_all(frame).expect("send");
    read_response(stream, key, version).expect("response")
}

/// Reads one response: (correlation id, body).
fn read_response(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
) -> std::io::Result<(i32, Bytes)> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body)?;
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
        .expect("response header");
    Ok((header.correlation_id, body))
}

fn api_versions(stream: &mut TcpStream, version: i16, correlation_id: i32) -> ApiVersionsResponse {
    let frame = request(
        ApiKey::ApiVersions,
        version,
        correlation_id,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("serve-test"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    let (correlation, mut body) = call(stream, &frame, ApiKey::ApiVersions, version);
    assert_eq!(correlation, correlation_id);
    ApiVersionsResponse::decode(&mut body, version).expect("ApiVersions response")
}

/// True when the server closed the connection (EOF or reset) within the read timeout.
fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn api_versions_with_kip_511_fallback_keeps_the_connection() {
    let weir = Weir::start(&[]);
    let mut stream = weir.connect();
    let response = api_versions(&mut stream, 3, 1);
    assert_eq!(response.error_code, 0);
    let listed: Vec<_> = response
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    assert!(listed.contains(&(18, 0, 4)), "{listed:?}");
    assert!(listed.contains(&(3, 0, 12)), "{listed:?}");

    // A version from the future: the v0 fallback, then the retry on the same connection.
    let mut frame = Vec::new();
    frame.extend_from_slice(&10i32.to_be_bytes());
    frame.extend_from_slice(&18i16.to_be_bytes());
    frame.extend_from_slice(&77i16.to_be_bytes());
    frame.extend_from_slice(&9i32.to_be_bytes());
    frame.extend_from_slice(&[0xab, 0xcd]);
    let (correlation, mut body) = call(&mut stream, &frame, ApiKey::ApiVersions, 0);
    assert_eq!(correlation, 9);
    let fallback = ApiVersionsResponse::decode(&mut body, 0).expect("v0 body");
    assert_eq!(fallback.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(fallback
        .api_keys
        .iter()
        .any(|k| k.api_key == 18 && k.max_version == 4));
    let retry = api_versions(&mut stream, 4, 10);
    assert_eq!(retry.error_code, 0);
}

#[test]
fn metadata_advertises_the_listener_and_auto_creates_topics() {
    let weir = Weir::start(&["--advertised-listener", "broker.example:19092"]);
    let mut stream = weir.connect();
    let topic = |name: &str| {
        MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
    };
    for version in [0i16, 1, 4, 9, 12] {
        // From v4 a client may forbid auto-creation: the topic stays unknown.
        let name = format!("missing-v{version}");
        let mut body = MetadataRequest::default().with_topics(Some(vec![topic(&name)]));
        if version >= 4 {
            body = body.with_allow_auto_topic_creation(false);
        }
        let frame = request(ApiKey::Metadata, version, 100 + i32::from(version), &body);
        let (correlation, mut body) = call(&mut stream, &frame, ApiKey::Metadata, version);
        assert_eq!(correlation, 100 + i32::from(version));
        let response = MetadataResponse::decode(&mut body, version).expect("Metadata response");
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.brokers[0].host.as_str(), "broker.example");
        assert_eq!(response.brokers[0].port, 19092);
        assert_eq!(response.topics.len(), 1);
        if version >= 4 {
            assert_eq!(
                response.topics[0].error_code, 3,
                "UNKNOWN_TOPIC_OR_PARTITION"
            );
        }
        if version >= 2 {
            let id = response.cluster_id.expect("cluster id");
            assert_eq!(id.len(), 22, "{id}");
        }
    }
    // Allowed (the default): created with num_partitions=1, led by this broker.
    let body = MetadataRequest::default()
        .with_topics(Some(vec![topic("created")]))
        .with_allow_auto_topic_creation(true);
    let frame = request(ApiKey::Metadata, 12, 1, &body);
    let (_, mut body) = call(&mut stream, &frame, ApiKey::Metadata, 12);
    let response = MetadataResponse::decode(&mut body, 12).expect("Metadata response");
    let created = &response.topics[0];
    assert_eq!(created.error_code, 0);
    assert_eq!(created.partitions.len(), 1);
    assert_eq!(created.partitions[0].leader_id.0, 0);
    // Invalid names are refused, never created.
    let body = MetadataRequest::default().with_topics(Some(vec![topic("bad/name")]));
    let frame = request(ApiKey::Metadata, 12, 2, &body);
    let (_, mut body) = call(&mut stream, &frame, ApiKey::Metadata, 12);
    let response = MetadataResponse::decode(&mut body, 12).expect("Metadata response");
    assert_eq!(response.topics[0].error_code, 17, "INVALID_TOPIC_EXCEPTION");
}

/// `Cpus_allowed_list` of each of the process's threads named `weir-shard-*`, by name. A
/// thread starts with its creator's name and CPUs until it sets its own, so a blocking-pool
/// thread a shard has just started can show up as a second `weir-shard-i` for a moment: the
/// list is read again until every name is there once.
fn shard_cpus(weir: &Weir) -> Vec<(String, String)> {
    let read = || {
        let tasks = format!("/proc/{}/task", weir.child.id());
        let mut shards: Vec<(String, String)> = std::fs::read_dir(tasks)
            .expect("tasks")
            .filter_map(|task| {
                let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
                let field = |name: &str| {
                    let line = status.lines().find(|l| l.starts_with(name))?;
                    Some(line[name.len()..].trim().to_string())
                };
                let name = field("Name:")?;
                name.starts_with("weir-shard-")
                    .then(|| Some((name, field("Cpus_allowed_list:")?)))?
            })
            .collect();
        shards.sort();
        shards
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let shards = read();
        let unique = shards.windows(2).all(|pair| pair[0].0 != pair[1].0);
        if unique || Instant::now() >= deadline {
            return shards;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[cfg(target_os = "linux")]
fn shards_are_pinned_to_cpus_unless_told_not_to() {
    // This test process's own CPUs, which the broker inherits.
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_string();
    let mut cpus = Vec::new();
    for range in allowed.split(',') {
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (usize, usize) = (a.parse().expect("cpu"), b.parse().expect("cpu"));
        cpus.extend(a..=b);
    }
    // One shard per CPU (and one more, wrapping around): each pinned to its CPU.
    let shards = cpus.len() + 1;
    let weir = Weir::start(&["--shards", &shards.to_string()]);
    let mut expected: Vec<(String, String)> = (0..shards)
        .map(|i| (format!("weir-shard-{i}"), cpus[i % cpus.len()].to_string()))
        .collect();
    expected.sort();
    assert_eq!(shard_cpus(&weir), expected);
    // Turned off, or fewer shards than CPUs (whose CPUs are the broker's is not known): free.
    let unpinned = |shards: usize| -> Vec<(String, String)> {
        let mut names: Vec<_> = (0..shards)
            .map(|i| (format!("weir-shard-{i}"), allowed.clone()))
            .collect();
        names.sort();
        names
    };
    let dir = temp_dir();
    let file = dir.0.with_extension("toml");
    std::fs::write(&file, "shard_cpu_pinning = false\n").expect("config");
    let off = ["--config", file.to_str().expect("utf-8"), "--shards", "2"];
    assert_eq!(shard_cpus(&Weir::start(&off)), unpinned(2));
    std::fs::remove_file(&file).ok();
    if cpus.len() > 1 {
        let fewer = cpus.len() - 1;
        let weir = Weir::start(&["--shards", &fewer.to_string()]);
        assert_eq!(shard_cpus(&weir), unpinned(fewer));
    }
}

#[test]
fn auto_creation_and_the_default_partition_count_come_from_the_config_file() {
    let dir = temp_dir();
    let file = dir.0.with_extension("toml");
    std::fs::write(&file, "auto_create_topics = false\nnum_partitions = 3\n").expect("config");
    let weir = Weir::start(&["--config", file.to_str().expect("utf-8")]);
    let mut s = weir.connect();
    // Metadata may ask for creation; the broker's setting says no.
    let body = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string("not-created".to_string())),
        ))]))
        .with_allow_auto_topic_creation(true);
    let frame = request_frame(ApiKey::Metadata, 12, &body);
    let (_, mut body) = call(&mut s, &frame, ApiKey::Metadata, 12);
    let response = MetadataResponse::decode(&mut body, 12).expect("Metadata");
    assert_eq!(
        response.topics[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(partitions_of(&mut s, "not-created"), None);
    // CreateTopics without a count (-1) takes num_partitions.
    let created = create_topic(&mut s, 7, "defaulted", -1, -1, &[], false);
    assert_eq!(created.error_code, 0, "{:?}", created.error_message);
    assert_eq!(created.num_partitions, 3);
    assert_eq!(partitions_of(&mut s, "defaulted"), Some(3));
    std::fs::remove_file(&file).ok();
}

#[test]
fn bad_input_closes_only_the_offending_connection() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let weir = Weir::start(&[]);
    let mut healthy = weir.connect();
    let mut correlation = 0;
    let mut check_healthy = |healthy: &mut TcpStream| {
        correlation += 1;
        assert_eq!(api_versions(healthy, 3, correlation).error_code, 0);
    };
    check_healthy(&mut healthy);
    // Meanwhile another client produces and reads back, batch after batch, on its own
    // connection: every batch acknowledged at the next offset and read back identical.
    let mut client = weir.connect();
    assert_eq!(
        create_topic(&mut client, 7, "healthy", 1, 1, &[], false).error_code,
        0
    );
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let rounds = std::sync::Arc::new(AtomicU64::new(0));
    let producing = {
        let (stop, rounds) = (stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 10 {
                let batch = test_batch(n);
                let answer = produce(&mut client, "healthy", 0, Bytes::from(batch.clone()), 1);
                assert_eq!(
                    (answer.error_code, answer.base_offset),
                    (0, 3 * i64::from(n))
                );
                let records = records_from(&mut client, "healthy", 3 * i64::from(n));
                let first = weir_log::batch::Batches::new(&records)
                    .next()
                    .expect("a batch")
                    .expect("a valid batch");
                let stored = &records[first.0..first.0 + first.1.size()];
                assert_eq!(first.1.base_offset, 3 * i64::from(n));
                assert_eq!(stored[16..], batch[16..], "batch {n} read back as sent");
                n += 1;
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Waits until the healthy client has done `n` more rounds.
    let more_rounds = |n: u64| {
        let target = rounds.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(10);
        while rounds.load(Ordering::Relaxed) < target {
            assert!(!producing.is_finished(), "the healthy client failed");
            assert!(Instant::now() < deadline, "the healthy client stalled");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    more_rounds(3);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a 2 GB frame size", 2_000_000_000i32.to_be_bytes().to_vec()),
        ("a negative frame size", (-1i32).to_be_bytes().to_vec()),
        ("an unknown API key", {
            let mut f = 8i32.to_be_bytes().to_vec();
            f.extend_from_slice(&999i16.to_be_bytes());
            f.extend_from_slice(&0i16.to_be_bytes());
            f.extend_from_slice(&1i32.to_be_bytes());
            f
        }),
        ("an unsupported Metadata version", {
            let mut f = 8i32.to_be_bytes().to_vec();
            f.extend_from_slice(&3i16.to_be_bytes());
            f.extend_from_slice(&99i16.to_be_bytes());
            f.extend_from_slice(&1i32.to_be_bytes());
            f
        }),
        ("a Metadata body declaring 2^31-1 topics", {
            let mut f = 14i32.to_be_bytes().to_vec();
            f.extend_from_slice(&3i16.to_be_bytes());
            f.extend_from_slice(&0i16.to_be_bytes());
            f.extend_from_slice(&1i32.to_be_bytes());
            f.extend_from_slice(&(-1i16).to_be_bytes());
            f.extend_from_slice(&i32::MAX.to_be_bytes());
            f
        }),
        ("random garbage", {
            let mut f = 64i32.to_be_bytes().to_vec();
            f.extend((0..64u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
            f
        }),
    ];
    for (what, bytes) in cases {
        let mut bad = weir.connect();
        bad.write_all(&bytes).expect("send");
        assert!(closed(&mut bad), "{what}: connection stayed open");
        check_healthy(&mut healthy);
        more_rounds(1);
    }
    // A truncated frame: the peer goes away mid-frame; the broker just drops it.
    let mut bad = weir.connect();
    bad.write_all(&100i32.to_be_bytes()).expect("send");
    bad.write_all(&[0u8; 10]).expect("send");
    drop(bad);
    check_healthy(&mut healthy);
    // A batch with a wrong CRC, into the partition the healthy client uses: refused for that
    // partition, and the offsets the healthy client sees do not move for it.
    let mut bad = weir.connect();
    let mut corrupt = test_batch(1000);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    let refused = produce(&mut bad, "healthy", 0, Bytes::from(corrupt), 1);
    assert_eq!(refused.error_code, 2, "CORRUPT_MESSAGE");
    check_healthy(&mut healthy);
    more_rounds(3);
    stop.store(true, Ordering::Relaxed);
    producing
        .join()
        .expect("the healthy client saw everything it sent");

    // The broker is still whole: /metrics counts the rejections.
    let metrics = http_get(weir.http, "/metrics");
    assert!(
        metrics.contains("weir_requests_rejected_total 6"),
        "{metrics}"
    );
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect http");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn health_and_metrics_over_http() {
    let weir = Weir::start(&[]);
    let health = http_get(weir.http, "/health");
    assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let mut stream = weir.connect();
    api_versions(&mut stream, 3, 1);
    let metrics = http_get(weir.http, "/metrics");
    assert!(
        metrics.contains("# TYPE weir_requests_total counter"),
        "{metrics}"
    );
    assert!(metrics.contains("weir_connections_open 1"), "{metrics}");
    // docs/metrics.md describes exactly the metric families the broker exposes.
    let exposed: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let documented: std::collections::BTreeSet<&str> = include_str!("../../../docs/metrics.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .filter(|name| name.starts_with("weir_"))
        .collect();
    assert_eq!(exposed, documented);
    let missing = http_get(weir.http, "/nope");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

#[test]
fn sigterm_finishes_and_exits_zero() {
    let weir = Weir::start(&[]);
    let mut stream = weir.connect();
    api_versions(&mut stream, 3, 1);
    let (status, lines) = weir.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(lines.iter().any(|l| l == "weir: stopped"), "{lines:?}");
    assert!(closed(&mut stream));
}

#[test]
fn kcat_lists_the_broker() {
    if !common::kcat_available() {
        return;
    }
    let weir = Weir::start(&[]);
    let out = Command::new("kcat")
        .args(["-L", "-b", &weir.kafka.to_string(), "-m", "10"])
        .output()
        .expect("run kcat");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kcat failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" 1 brokers:"), "{text}");
    assert!(
        text.contains(&format!("broker 0 at {}", weir.kafka)),
        "{text}"
    );
    assert!(text.contains(" 0 topics:"), "{text}");
}

fn kcat(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kcat");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("write");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("kcat");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn kcat_produces_and_consumes_keyed_records_with_headers_across_a_restart() {
    if !common::kcat_available() {
        return;
    }
    let weir = Weir::start(&[]);
    let broker = weir.kafka.to_string();
    let input: String = (0..200)
        .map(|i| format!("key-{i}:value number {i}\n"))
        .collect();
    // The first produce auto-creates the topic through Metadata.
    kcat(
        &[
            "-P",
            "-b",
            &broker,
            "-t",
            "orders",
            "-K:",
            "-H",
            "trace=abc",
            "-z",
            "none",
        ],
        Some(&input),
    );
    let format = "%k|%s|%h|%o|%p\n";
    let consume = |broker: &str| {
        kcat(
            &[
                "-C",
                "-b",
                broker,
                "-t",
                "orders",
                "-o",
                "beginning",
                "-e",
                "-f",
                format,
            ],
            None,
        )
    };
    let check = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 200, "{text}");
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(
                *line,
                format!("key-{i}|value number {i}|trace=abc|{i}|0"),
                "record {i}"
            );
        }
    };
    check(&consume(&broker));
    // Offsets: earliest 0, latest 200.
    let offsets = kcat(&["-Q", "-b", &broker, "-t", "orders:0:-1"], None);
    assert!(offsets.contains("offset 200"), "{offsets}");
    // What happened shows in /metrics.
    let metrics = http_get(weir.http, "/metrics");
    for expected in [
        "weir_topic_records_in_total{topic=\"orders\"} 200",
        "weir_requests_total{api=\"Produce\"}",
        "weir_requests_total{api=\"Fetch\"}",
        "weir_request_duration_seconds_bucket{api=\"Produce\",le=\"+Inf\"}",
        "weir_shard_mailbox_depth{shard=\"1\"} 0",
        "weir_reactor_stalls_total{shard=\"0\"}",
        "weir_log_flush_seconds_count",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }
    let out_line = metrics
        .lines()
        .find(|l| l.starts_with("weir_topic_bytes_out_total{topic=\"orders\"}"))
        .expect("bytes out");
    let bytes_out: u64 = out_line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(bytes_out > 200 * 10, "{out_line}");

    // Restart on the same data: everything is still there.
    let (status, _, dir) = weir.terminate_keep();
    assert!(status.success());
    let weir = Weir::start_in(dir, &[]);
    check(&consume(&weir.kafka.to_string()));
}

#[test]
fn kcat_round_trips_every_compression_codec() {
    if !common::kcat_available() {
        return;
    }
    let weir = Weir::start(&[]);
    let broker = weir.kafka.to_string();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        let input: String = (0..50)
            .map(|i| format!("k{i}:{codec} payload {i} {}\n", "x".repeat(i)))
            .collect();
        kcat(
            &["-P", "-b", &broker, "-t", &topic, "-K:", "-z", codec],
            Some(&input),
        );
        let text = kcat(
            &[
                "-C",
                "-b",
                &broker,
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k:%s\n",
            ],
            None,
        );
        assert_eq!(text, input, "{codec}");
    }
}

fn create_topic(
    stream: &mut TcpStream,
    version: i16,
    name: &str,
    partitions: i32,
    replication: i16,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> kafka_protocol::messages::create_topics_response::CreatableTopicResult {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            )])
        .with_timeout_ms(5000)
        .with_validate_only(validate_only);
    let frame = request_frame(ApiKey::CreateTopics, version, &request);
    let (_, mut body) = call(stream, &frame, ApiKey::CreateTopics, version);
    let mut response = CreateTopicsResponse::decode(&mut body, version).expect("CreateTopics");
    response.topics.remove(0)
}

fn request_frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Vec<u8> {
    request(key, version, 1, body)
}

/// Partition count of `name` as Metadata reports it without creating it; None when unknown.
fn partitions_of(stream: &mut TcpStream, name: &str) -> Option<usize> {
    let body = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(name.to_string())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let frame = request_frame(ApiKey::Metadata, 12, &body);
    let (_, mut body) = call(stream, &frame, ApiKey::Metadata, 12);
    let response = MetadataResponse::decode(&mut body, 12).expect("Metadata");
    let topic = &response.topics[0];
    (topic.error_code == 0).then_some(topic.partitions.len())
}

#[test]
fn admin_creates_grows_and_deletes_topics() {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{
        CreatePartitionsRequest, CreatePartitionsResponse, DeleteTopicsRequest,
        DeleteTopicsResponse,
    };
    let weir = Weir::start(&[]);
    let mut s = weir.connect();
    let created = create_topic(
        &mut s,
        7,
        "admin-a",
        3,
        1,
        &[("flush.messages", "1")],
        false,
    );
    assert_eq!(created.error_code, 0, "{:?}", created.error_message);
    assert_eq!(created.num_partitions, 3);
    assert_eq!(partitions_of(&mut s, "admin-a"), Some(3));
    let meta =
        std::fs::read_to_string(weir._dir.0.join("topics/admin-a/topic.meta")).expect("topic.meta");
    assert!(meta.contains("flush.messages=1\n"), "{meta}");

    let again = create_topic(&mut s, 2, "admin-a", 3, 1, &[], false);
    assert_eq!(again.error_code, 36, "TOPIC_ALREADY_EXISTS");
    let rf = create_topic(&mut s, 7, "admin-rf", 1, 3, &[], false);
    assert_eq!(rf.error_code, 38, "INVALID_REPLICATION_FACTOR");
    let compact = create_topic(
        &mut s,
        7,
        "admin-c",
        1,
        1,
        &[("cleanup.policy", "compact")],
        false,
    );
    assert_eq!(compact.error_code, 40, "INVALID_CONFIG");
    let unknown = create_topic(&mut s, 7, "admin-u", 1, 1, &[("no.such.key", "1")], false);
    assert_eq!(unknown.error_code, 40, "INVALID_CONFIG");
    let dry = create_topic(&mut s, 5, "admin-dry", 2, -1, &[], true);
    assert_eq!(dry.error_code, 0);
    assert_eq!(
        partitions_of(&mut s, "admin-dry"),
        None,
        "validate_only creates nothing"
    );

    let grow = |s: &mut TcpStream, count: i32| {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("admin-a")))
                .with_count(count)])
            .with_timeout_ms(5000);
        let (_, mut body) = call(
            s,
            &request_frame(ApiKey::CreatePartitions, 3, &request),
            ApiKey::CreatePartitions,
            3,
        );
        CreatePartitionsResponse::decode(&mut body, 3)
            .expect("CreatePartitions")
            .results[0]
            .error_code
    };
    assert_eq!(grow(&mut s, 5), 0);
    assert_eq!(partitions_of(&mut s, "admin-a"), Some(5));
    assert_eq!(grow(&mut s, 2), 37, "INVALID_PARTITIONS: counts only grow");

    // Data in the topic, then delete it: it is gone, and a new one of the same name is empty.
    if common::kcat_available() {
        let broker = weir.kafka.to_string();
        kcat(
            &["-P", "-b", &broker, "-t", "admin-a", "-p", "4"],
            Some("one\ntwo\n"),
        );
    }
    let request = DeleteTopicsRequest::default()
        .with_topics(vec![DeleteTopicState::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("admin-a"))))])
        .with_timeout_ms(5000);
    let (_, mut body) = call(
        &mut s,
        &request_frame(ApiKey::DeleteTopics, 6, &request),
        ApiKey::DeleteTopics,
        6,
    );
    let deleted = DeleteTopicsResponse::decode(&mut body, 6).expect("DeleteTopics");
    assert_eq!(deleted.responses[0].error_code, 0);
    assert_eq!(partitions_of(&mut s, "admin-a"), None);
    assert!(!weir._dir.0.join("topics/admin-a").exists());
    let recreated = create_topic(&mut s, 7, "admin-a", 5, 1, &[], false);
    assert_eq!(recreated.error_code, 0);
    assert_ne!(recreated.topic_id, created.topic_id);
    if common::kcat_available() {
        let broker = weir.kafka.to_string();
        let text = kcat(
            &[
                "-C",
                "-b",
                &broker,
                "-t",
                "admin-a",
                "-p",
                "4",
                "-o",
                "beginning",
                "-e",
            ],
            None,
        );
        assert_eq!(text, "", "a recreated topic starts empty");
    }
}

fn produce(
    stream: &mut TcpStream,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> kafka_protocol::messages::produce_response::PartitionProduceResponse {
    use kafka_protocol::messages::ProduceResponse;
    let request = produce_request(topic, partition, records, acks);
    let frame = request_frame(ApiKey::Produce, 9, &request);
    let (_, mut body) = call(stream, &frame, ApiKey::Produce, 9);
    let mut response = ProduceResponse::decode(&mut body, 9).expect("Produce");
    response.responses.remove(0).partition_responses.remove(0)
}

/// All record batches of partition 0 of `topic`, fetched from `offset` to the end.
fn fetch_all(stream: &mut TcpStream, topic: &str) -> Vec<u8> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let frame = request_frame(ApiKey::Fetch, 12, &request);
        let (_, mut body) = call(stream, &frame, ApiKey::Fetch, 12);
        let response = FetchResponse::decode(&mut body, 12).expect("Fetch");
        let part = &response.responses[0].partitions[0];
        assert_eq!(part.error_code, 0);
        let records = part.records.clone().unwrap_or_default();
        if records.is_empty() {
            return out;
        }
        let mut last = offset;
        for batch in weir_log::batch::Batches::new(&records) {
            let (_, header) = batch.expect("fetched batches are valid");
            last = header.last_offset();
        }
        out.extend_from_slice(&records);
        offset = last + 1;
    }
}

fn test_batch(i: i32) -> Vec<u8> {
    let mut builder = weir_log::batch::build::BatchBuilder::new(1_800_000_000_000);
    for r in 0..3 {
        builder.push(
            Some(format!("k{i}").as_bytes()),
            Some(format!("value {i}.{r} {}", "y".repeat((i % 40) as usize)).as_bytes()),
            1_800_000_000_000 + i64::from(i),
        );
    }
    builder.producer(-1, -1, i).build()
}

/// The value of an unlabelled metric.
fn metric_value(weir: &Weir, name: &str) -> u64 {
    let text = http_get(weir.http, "/metrics");
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in {text}"));
    line[name.len()..].trim().parse().expect("a number")
}

/// Produces blocks of 10 requests to partitions owned by shard 0 and shard 1 in turn, then reads
/// both back, all on one connection; returns the connections moved meanwhile.
fn produce_across_shards(weir: &Weir) -> u64 {
    let mut s = weir.connect();
    assert_eq!(
        create_topic(&mut s, 7, "aff", 8, 1, &[], false).error_code,
        0
    );
    let on = |shard| {
        (0..8)
            .find(|p| weir_broker::owner("aff", *p, 2) == shard)
            .expect("8 partitions over 2 shards")
    };
    let partitions = [on(0), on(1)];
    let mut sent: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for round in 0..2 {
        for (side, partition) in partitions.iter().enumerate() {
            for n in 0..10 {
                let batch = test_batch(round * 100 + side as i32 * 10 + n);
                let answer = produce(&mut s, "aff", *partition, Bytes::from(batch.clone()), 1);
                let expected = 3 * sent[side].len() as i64;
                assert_eq!((answer.error_code, answer.base_offset), (0, expected));
                sent[side].push(batch);
            }
        }
        // Moved or not, it is one connection.
        assert_eq!(metric_value(weir, "weir_connections_open"), 1);
    }
    for (side, partition) in partitions.iter().enumerate() {
        let response = fetch_once(&mut s, "aff", &[*partition], 1 << 20, 0, 0);
        let part = &response.responses[0].partitions[0];
        assert_eq!((part.error_code, part.high_watermark), (0, 60));
        let records = part.records.clone().expect("records");
        let mut fetched = Vec::new();
        for batch in weir_log::batch::Batches::new(&records) {
            let (at, header) = batch.expect("a valid batch");
            let bytes = &records[at..at + header.size()];
            fetched.push((header.base_offset, bytes[16..].to_vec()));
        }
        let expected: Vec<_> = sent[side]
            .iter()
            .enumerate()
            .map(|(i, batch)| (3 * i as i64, batch[16..].to_vec()))
            .collect();
        assert_eq!(fetched, expected, "partition {partition}");
    }
    // 20 batches of 3 records in each partition, each read once.
    let metrics = http_get(weir.http, "/metrics");
    for line in [
        "weir_topic_records_in_total{topic=\"aff\"} 120\n",
        "weir_topic_records_out_total{topic=\"aff\"} 120\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    metric_value(weir, "weir_connections_moved_total")
}

#[test]
fn a_connection_moves_to_the_shard_of_its_partitions_and_loses_nothing() {
    // Wherever the connection starts, three of the four blocks go to the other shard: each
    // moves it there at its eighth request.
    let weir = Weir::start(&[]);
    let moved = produce_across_shards(&weir);
    assert!((3..=4).contains(&moved), "moved {moved} times");
    let dir = temp_dir();
    let file = dir.0.with_extension("toml");
    std::fs::write(&file, "connection_affinity = false\n").expect("config");
    let fixed = Weir::start(&["--config", file.to_str().expect("utf-8")]);
    assert_eq!(produce_across_shards(&fixed), 0);
    std::fs::remove_file(&file).ok();
}

/// Pages of `file` in the page cache, as Linux's cachestat counts them (None without it).
#[cfg(target_os = "linux")]
fn cached_pages(file: &std::fs::File) -> Option<u64> {
    use std::os::fd::AsRawFd;
    if cfg!(not(target_arch = "x86_64")) {
        return None;
    }
    let range = [0u64, 0]; // offset 0, length 0: to the end of the file
    let mut stat = [0u64; 5];
    // SAFETY: cachestat (451 on x86_64) reads the range and writes five u64s into `stat`.
    let rc = unsafe {
        libc::syscall(
            451,
            file.as_raw_fd(),
            range.as_ptr(),
            stat.as_mut_ptr(),
            0 as libc::c_uint,
        )
    };
    (rc == 0).then_some(stat[0])
}

/// The first segment of partition 0 of the broker's only topic.
fn first_segment(weir: &Weir) -> std::fs::File {
    let topic_dir = std::fs::read_dir(weir._dir.0.join("partitions"))
        .expect("partitions")
        .next()
        .expect("one topic")
        .expect("entry")
        .path();
    std::fs::File::open(topic_dir.join("0/00000000000000000000.log")).expect("first segment")
}

/// `weir_partition_reads_total` on the reactor and on the pool.
fn reads(weir: &Weir) -> (u64, u64) {
    let text = http_get(weir.http, "/metrics");
    let on = |place: &str| -> u64 {
        let name = format!("weir_partition_reads_total{{on=\"{place}\"}} ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&name))
            .expect("reads metric");
        line[name.len()..].parse().expect("a number")
    };
    (on("reactor"), on("pool"))
}

#[test]
#[cfg(target_os = "linux")]
fn a_fetch_of_data_not_in_the_page_cache_is_read_off_the_reactor() {
    use std::os::fd::AsRawFd;
    let weir = Weir::start(&[]);
    let mut s = weir.connect();
    assert_eq!(
        create_topic(&mut s, 7, "cold", 1, 1, &[], false).error_code,
        0
    );
    let mut sent = Vec::new();
    for n in 0..20 {
        let batch = test_batch(n);
        assert_eq!(
            produce(&mut s, "cold", 0, Bytes::from(batch.clone()), 1).error_code,
            0
        );
        sent.push(batch[16..].to_vec());
    }
    let read_all = |s: &mut TcpStream| {
        let response = fetch_once(s, "cold", &[0], 1 << 20, 0, 0);
        let records = response.responses[0].partitions[0]
            .records
            .clone()
            .expect("records");
        weir_log::batch::Batches::new(&records)
            .map(|b| {
                let (at, header) = b.expect("a valid batch");
                records[at..at + header.size()][16..].to_vec()
            })
            .collect::<Vec<_>>()
    };
    // Just written: cached, read on the reactor.
    let before = reads(&weir);
    assert_eq!(read_all(&mut s), sent);
    let hot = reads(&weir);
    assert_eq!(
        (hot.0 - before.0, hot.1 - before.1),
        (1, 0),
        "a cached read"
    );
    // Written back and dropped from the page cache: the read waits for the disk, on the pool.
    let segment = first_segment(&weir);
    segment.sync_all().expect("sync");
    // SAFETY: posix_fadvise only reads its arguments.
    let rc = unsafe { libc::posix_fadvise(segment.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
    // Where the kernel cannot say what is cached (no cachestat: before Linux 6.5, or a
    // seccomp filter), or the pages stay (tmpfs), the broker keeps reading the segment being
    // written on the reactor, which is what this data is: nothing more to check.
    if cached_pages(&segment) != Some(0) {
        eprintln!("cachestat unavailable or the pages stayed cached: the cold read is not checked");
        return;
    }
    assert_eq!(read_all(&mut s), sent);
    let cold = reads(&weir);
    assert_eq!(
        (cold.0 - hot.0, cold.1 - hot.1),
        (0, 1),
        "a read from the disk"
    );
}

/// `log_cache_window_bytes`: what a partition wrote beyond its newest 1 MiB is written back and
/// dropped from the page cache by the broker itself, and a consumer reading from the start gets
/// every batch back identical, read from the disk on the blocking pool.
#[test]
#[cfg(target_os = "linux")]
fn bytes_behind_the_cache_window_are_evicted_and_read_back_from_the_disk() {
    let dir = temp_dir();
    let file = dir.0.with_extension("toml");
    std::fs::write(&file, "log_cache_window_bytes = 1048576\n").expect("config");
    let weir = Weir::start(&["--config", file.to_str().expect("utf-8")]);
    std::fs::remove_file(&file).ok();
    let mut s = weir.connect();
    let configs = [("segment.bytes", "1048576")];
    assert_eq!(
        create_topic(&mut s, 7, "behind", 1, 1, &configs, false).error_code,
        0
    );
    // Batches of about 64 KiB until 3 MiB have been evicted (one eviction runs at a time;
    // later appends queue theirs).
    let mut sent = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_value(&weir, "weir_log_cache_evicted_bytes_total") < 3 << 20 {
        assert!(Instant::now() < deadline, "nothing evicted");
        for _ in 0..8 {
            let i = sent.len() as i64;
            let mut builder = weir_log::batch::build::BatchBuilder::new(1_800_000_000_000 + i);
            for r in 0..16u8 {
                let value = vec![b'a' + (i as u8 + r) % 26; 4000];
                builder.push(
                    Some(format!("k{i}").as_bytes()),
                    Some(&value),
                    1_800_000_000_000 + i,
                );
            }
            let batch = builder.build();
            let answer = produce(&mut s, "behind", 0, Bytes::from(batch.clone()), 1);
            assert_eq!((answer.error_code, answer.base_offset), (0, 16 * i));
            sent.push(batch[16..].to_vec());
        }
    }
    let cold = cached_pages(&first_segment(&weir));
    let before = reads(&weir);
    let mut got = Vec::new();
    let mut offset = 0;
    while got.len() < sent.len() {
        let records = records_from(&mut s, "behind", offset);
        assert!(!records.is_empty(), "a fetch at {offset} returned nothing");
        for batch in weir_log::batch::Batches::new(&records) {
            let (at, header) = batch.expect("a valid batch");
            got.push(records[at..at + header.size()][16..].to_vec());
            offset = header.last_offset() + 1;
        }
    }
    assert_eq!(got, sent, "every batch back, identical");
    // Where cachestat can tell (Linux 6.5+) and the file system drops pages (not tmpfs), the
    // first segment had left the cache, so its read went to the pool.
    if cold == Some(0) {
        let after = reads(&weir);
        assert!(
            after.1 > before.1,
            "a read from the disk: {before:?} -> {after:?}"
        );
    } else {
        eprintln!(
            "cachestat unavailable or the pages stayed cached ({cold:?}): pool read not checked"
        );
    }
}

#[test]
fn a_corrupt_batch_gets_corrupt_message_for_its_partition_only() {
    let weir = Weir::start(&[]);
    let mut s = weir.connect();
    assert_eq!(
        create_topic(&mut s, 7, "crc", 1, 1, &[], false).error_code,
        0
    );
    let good = produce(&mut s, "crc", 0, Bytes::from(test_batch(1)), 1);
    assert_eq!((good.error_code, good.base_offset), (0, 0));
    let mut bad = test_batch(2);
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    let rejected = produce(&mut s, "crc", 0, Bytes::from(bad), 1);
    assert_eq!(rejected.error_code, 2, "CORRUPT_MESSAGE");
    // The log end did not move, and the connection is still good.
    let next = produce(&mut s, "crc", 0, Bytes::from(test_batch(3)), 1);
    assert_eq!((next.error_code, next.base_offset), (0, 3));
    let unknown = produce(&mut s, "crc", 7, Bytes::from(test_batch(4)), 1);
    assert_eq!(unknown.error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
}

#[test]
fn sigkill_loses_no_batch_acknowledged_with_flush_messages_1() {
    let weir = Weir::start(&[]);
    let mut s = weir.connect();
    let created = create_topic(
        &mut s,
        7,
        "durable",
        1,
        1,
        &[("flush.messages", "1")],
        false,
    );
    assert_eq!(created.error_code, 0);
    let mut acked = Vec::new();
    let started = Instant::now();
    // Produce acks=all while another thread SIGKILLs the broker at a moment of its choosing.
    let pid = weir.child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    for i in 0.. {
        let batch = test_batch(i);
        let mut frame_ok = true;
        let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            produce(&mut s, "durable", 0, Bytes::from(batch.clone()), -1)
        }));
        match response {
            Ok(r) if r.error_code == 0 => acked.push((r.base_offset, batch)),
            _ => frame_ok = false,
        }
        if !frame_ok || started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    killer.join().expect("killer");
    assert!(
        acked.len() > 5,
        "only {} acknowledged before the kill",
        acked.len()
    );
    let mut weir = weir;
    let _ = weir.child.wait();
    let dir = std::mem::replace(&mut weir._dir, TempDir(std::path::PathBuf::new()));
    drop(weir);
    let weir = Weir::start_in(dir, &[]);
    let mut s = weir.connect();
    let stored = fetch_all(&mut s, "durable");
    let mut position = 0;
    let mut batches = Vec::new();
    for item in weir_log::batch::Batches::new(&stored) {
        let (at, header) = item.expect("valid");
        batches.push((header.base_offset, stored[at..at + header.size()].to_vec()));
        position = at + header.size();
    }
    assert_eq!(position, stored.len());
    for (offset, mut batch) in acked {
        weir_log::batch::stamp_base_offset(&mut batch, offset);
        let found = batches.iter().find(|(o, _)| *o == offset);
        let Some((_, bytes)) = found else {
            panic!("acknowledged batch at offset {offset} lost");
        };
        // The broker stamps the leader epoch; compare everything else.
        assert_eq!(bytes[..12], batch[..12], "offset {offset}");
        assert_eq!(bytes[16..], batch[16..], "offset {offset}");
    }
}

fn fetch_once(
    stream: &mut TcpStream,
    topic: &str,
    partitions: &[i32],
    max_bytes: i32,
    min_bytes: i32,
    max_wait_ms: i32,
) -> kafka_protocol::messages::FetchResponse {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let request = FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(*p)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )]);
    let (_, mut body) = call(
        stream,
        &request_frame(ApiKey::Fetch, 11, &request),
        ApiKey::Fetch,
        11,
    );
    FetchResponse::decode(&mut body, 11).expect("Fetch")
}

fn big_batch(size: usize) -> Bytes {
    let mut builder = weir_log::batch::build::BatchBuilder::new(1_800_000_000_000);
    builder.push(Some(b"k"), Some(&vec![b'z'; size]), 1_800_000_000_000);
    Bytes::from(builder.build())
}

#[test]
fn fetch_honours_the_response_budget_and_min_bytes_zero() {
    let weir = Weir::start(&[]);
    let mut s = weir.connect();
    assert_eq!(
        create_topic(&mut s, 7, "budget", 2, 1, &[], false).error_code,
        0
    );
    for p in [0, 1] {
        for _ in 0..3 {
            assert_eq!(
                produce(&mut s, "budget", p, big_batch(100_000), 1).error_code,
                0
            );
        }
    }
    // 150 KB for the whole response: partition 0 gets one whole batch (more than fits once
    // two would), partition 1 nothing but its offsets.
    let response = fetch_once(&mut s, "budget", &[0, 1], 150_000, 1, 0);
    let parts = &response.responses[0].partitions;
    let len = |i: usize| parts[i].records.as_ref().map_or(0, |r| r.len());
    assert!(
        len(0) > 100_000 && len(0) < 150_000,
        "partition 0: {}",
        len(0)
    );
    assert_eq!(len(1), 0, "the budget was spent");
    assert_eq!(parts[1].high_watermark, 3);
    assert_eq!(parts[1].error_code, 0);
    // min_bytes=0 on an empty partition answers without waiting out max_wait (10 s here).
    assert_eq!(
        create_topic(&mut s, 7, "empty", 1, 1, &[], false).error_code,
        0
    );
    let started = Instant::now();
    let response = fetch_once(&mut s, "empty", &[0], 1 << 20, 0, 10_000);
    assert_eq!(response.responses[0].partitions[0].error_code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "min_bytes=0 waited"
    );
}

#[test]
fn topics_by_id_and_acks_0_failures() {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
    let weir = Weir::start(&[]);
    let mut s = weir.connect();
    let created = create_topic(&mut s, 7, "by-id", 2, 1, &[], false);
    assert_eq!(created.error_code, 0);
    // Metadata v12 by id only.
    let body = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(None)
            .with_topic_id(created.topic_id)]))
        .with_allow_auto_topic_creation(false);
    let (_, mut out) = call(
        &mut s,
        &request_frame(ApiKey::Metadata, 12, &body),
        ApiKey::Metadata,
        12,
    );
    let response = MetadataResponse::decode(&mut out, 12).expect("Metadata");
    assert_eq!(response.topics[0].error_code, 0);
    assert_eq!(
        response.topics[0].name.as_ref().map(|n| n.0.as_str()),
        Some("by-id")
    );
    assert_eq!(response.topics[0].partitions.len(), 2);
    // DeleteTopics v6 by id only; an unknown id is UNKNOWN_TOPIC_ID.
    let delete = |s: &mut TcpStream, id| {
        let request = DeleteTopicsRequest::default()
            .with_topics(vec![DeleteTopicState::default()
                .with_name(None)
                .with_topic_id(id)])
            .with_timeout_ms(5000);
        let (_, mut out) = call(
            s,
            &request_frame(ApiKey::DeleteTopics, 6, &request),
            ApiKey::DeleteTopics,
            6,
        );
        DeleteTopicsResponse::decode(&mut out, 6)
            .expect("DeleteTopics")
            .responses[0]
            .error_code
    };
    assert_eq!(delete(&mut s, created.topic_id), 0);
    assert_eq!(partitions_of(&mut s, "by-id"), None);
    assert_eq!(delete(&mut s, created.topic_id), 100, "UNKNOWN_TOPIC_ID");

    // acks=0 gets no answer; a failed acks=0 produce closes the connection so the producer
    // notices.
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::ProduceRequest;
    let request = ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("no-such-topic")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(test_batch(1))))])]);
    let mut doomed = weir.connect();
    doomed
        .write_all(&request_frame(ApiKey::Produce, 9, &request))
        .expect("send");
    assert!(
        closed(&mut doomed),
        "a failed acks=0 produce keeps the connection"
    );
}

#[test]
fn a_wildcard_listener_needs_an_advertised_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "serve",
            "--kafka-listen",
            "0.0.0.0:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(std::env::temp_dir().join(format!("weir-wildcard-{}", std::process::id())))
        .output()
        .expect("run weir");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("advertised_listener"), "{stderr}");
}

/// InitProducerId v4: (error code, producer id, epoch).
fn init_producer_id(stream: &mut TcpStream, id: i64, epoch: i16) -> (i16, i64, i16) {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch);
    let frame = request_frame(ApiKey::InitProducerId, 4, &request);
    let (_, mut body) = call(stream, &frame, ApiKey::InitProducerId, 4);
    let response = InitProducerIdResponse::decode(&mut body, 4).expect("InitProducerId");
    (
        response.error_code,
        response.producer_id.0,
        response.producer_epoch,
    )
}

fn idempotent_batch(producer: i64, epoch: i16, sequence: i32, records: i32) -> Bytes {
    let mut builder = weir_log::batch::build::BatchBuilder::new(1_800_000_000_000);
    for r in 0..records {
        builder.push(
            Some(b"k"),
            Some(format!("{producer}/{epoch}/{}", sequence + r).as_bytes()),
            1_800_000_000_000,
        );
    }
    Bytes::from(builder.producer(producer, epoch, sequence).build())
}

#[test]
fn idempotent_producers_are_deduplicated_sequenced_and_fenced_across_restarts() {
    let weir = Weir::start(&[]);
    let mut s = weir.connect();
    assert_eq!(
        create_topic(&mut s, 7, "idem", 1, 1, &[], false).error_code,
        0
    );
    let (code, pid, epoch) = init_producer_id(&mut s, -1, -1);
    assert_eq!((code, epoch), (0, 0));
    let produce_at = |s: &mut TcpStream, epoch, seq, n| {
        let r = produce(s, "idem", 0, idempotent_batch(pid, epoch, seq, n), -1);
        (r.error_code, r.base_offset)
    };
    assert_eq!(produce_at(&mut s, 0, 0, 3), (0, 0));
    // A retry is answered with the original offset and not written again.
    assert_eq!(produce_at(&mut s, 0, 0, 3), (0, 0));
    assert_eq!(produce_at(&mut s, 0, 3, 3), (0, 3));
    assert_eq!(produce_at(&mut s, 0, 0, 3), (0, 0));
    // A gap is refused.
    assert_eq!(
        produce_at(&mut s, 0, 10, 1).0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    // Asking again (KIP-360 style, naming the current id) gives a new id with fresh sequences.
    let (code, fresh, fresh_epoch) = init_producer_id(&mut s, pid, 0);
    assert_eq!(code, 0);
    assert!(fresh != pid && fresh_epoch == 0, "{fresh}/{fresh_epoch}");
    // A producer's new epoch starts its sequences again and fences the old epoch.
    assert_eq!(produce_at(&mut s, 1, 0, 2), (0, 6));
    assert_eq!(produce_at(&mut s, 0, 6, 1).0, 47, "INVALID_PRODUCER_EPOCH");
    let records = fetch_all(&mut s, "idem");
    let count: i64 = weir_log::batch::Batches::new(&records)
        .map(|b| i64::from(b.expect("valid").1.record_count))
        .sum();
    assert_eq!(count, 8, "every batch once");

    // SIGKILL: no snapshot from a clean shutdown; the state comes back from the log.
    let dir = weir.kill_keep();
    let weir = Weir::start_in(dir, &[]);
    let mut s = weir.connect();
    assert_eq!(produce_at(&mut s, 1, 0, 2), (0, 6), "retry after a crash");
    assert_eq!(produce_at(&mut s, 0, 6, 1).0, 47);
    assert_eq!(produce_at(&mut s, 1, 2, 1), (0, 8));
    let (code, pid2, _) = init_producer_id(&mut s, -1, -1);
    assert_eq!(code, 0);
    assert!(
        pid2 > pid,
        "producer ids are never reused ({pid2} after {pid})"
    );

    // SIGTERM writes a snapshot; the restart starts from it.
    let (status, _, dir) = weir.terminate_keep();
    assert!(status.success());
    let snapshots = std::fs::read_dir(dir.0.join("partitions"))
        .expect("partitions")
        .flat_map(|topic| std::fs::read_dir(topic.expect("entry").path()).expect("topic dir"))
        .filter(|p| {
            p.as_ref()
                .expect("entry")
                .path()
                .join("producer.snapshot")
                .exists()
        })
        .count();
    assert_eq!(snapshots, 1);
    let weir = Weir::start_in(dir, &[]);
    let mut s = weir.connect();
    assert_eq!(
        produce_at(&mut s, 1, 2, 1),
        (0, 8),
        "retry after a clean restart"
    );
    assert_eq!(produce_at(&mut s, 1, 3, 1), (0, 9));
    assert_eq!(produce_at(&mut s, 1, 5, 1).0, 45);
}

/// ListOffsets v7 for partition 0 of `topic`: (error code, timestamp, offset).
fn list_offset(stream: &mut TcpStream, topic: &str, timestamp: i64) -> (i16, i64, i64) {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let frame = request_frame(ApiKey::ListOffsets, 7, &request);
    let (_, mut body) = call(stream, &frame, ApiKey::ListOffsets, 7);
    let response = ListOffsetsResponse::decode(&mut body, 7).expect("ListOffsets");
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.timestamp, p.offset)
}

#[test]
fn list_offsets_finds_the_exact_record_by_time_and_the_max_timestamp() {
    let weir = Weir::start(&[]);
    let mut s = weir.connect();
    assert_eq!(
        create_topic(&mut s, 7, "times", 1, 1, &[], false).error_code,
        0
    );
    let t = 1_800_000_000_000i64;
    // Two batches; timestamps inside a batch need not be ordered (max is at offset 4).
    for stamps in [[t, t + 10, t + 20], [t + 30, t + 90, t + 40]] {
        let mut builder = weir_log::batch::build::BatchBuilder::new(stamps[0]);
        for (i, stamp) in stamps.iter().enumerate() {
            builder.push(Some(b"k"), Some(format!("v{i}").as_bytes()), *stamp);
        }
        let r = produce(&mut s, "times", 0, Bytes::from(builder.build()), -1);
        assert_eq!(r.error_code, 0);
    }
    assert_eq!(list_offset(&mut s, "times", -2), (0, -1, 0), "earliest");
    assert_eq!(list_offset(&mut s, "times", -1), (0, -1, 6), "latest");
    assert_eq!(list_offset(&mut s, "times", t), (0, t, 0));
    assert_eq!(
        list_offset(&mut s, "times", t + 5),
        (0, t + 10, 1),
        "inside a batch"
    );
    assert_eq!(
        list_offset(&mut s, "times", t + 21),
        (0, t + 30, 3),
        "next batch"
    );
    assert_eq!(list_offset(&mut s, "times", t + 35), (0, t + 90, 4));
    assert_eq!(
        list_offset(&mut s, "times", t + 91),
        (0, -1, -1),
        "after the newest"
    );
    assert_eq!(
        list_offset(&mut s, "times", -3),
        (0, t + 90, 4),
        "max timestamp"
    );
    // The same inside gzip batches: the broker decompresses the batch to find the record.
    assert_eq!(
        create_topic(&mut s, 7, "zipped", 1, 1, &[], false).error_code,
        0
    );
    for stamps in [[t, t + 10, t + 20], [t + 30, t + 90, t + 40]] {
        let mut builder = weir_log::batch::build::BatchBuilder::new(stamps[0]);
        for (i, stamp) in stamps.iter().enumerate() {
            builder.push(Some(b"k"), Some(format!("v{i}").as_bytes()), *stamp);
        }
        let r = produce(&mut s, "zipped", 0, gzipped(&builder.build()), -1);
        assert_eq!(r.error_code, 0);
    }
    for (timestamp, expected) in [
        (t + 5, (0, t + 10, 1)),
        (t + 21, (0, t + 30, 3)),
        (t + 35, (0, t + 90, 4)),
        (-3, (0, t + 90, 4)),
    ] {
        assert_eq!(
            list_offset(&mut s, "zipped", timestamp),
            expected,
            "{timestamp}"
        );
    }
}

/// `batch` (uncompressed, as built) with its records section gzipped, as a producer with
/// compression.type=gzip sends it.
fn gzipped(batch: &[u8]) -> Bytes {
    use std::io::Write as _;
    const HEADER: usize = weir_log::batch::HEADER_BYTES;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&batch[HEADER..]).expect("gzip");
    let mut out = batch[..HEADER].to_vec();
    out.extend(gz.finish().expect("gzip"));
    // Batch length (after the offset and the length fields), codec 1 in the attributes, CRC.
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[22] |= 1;
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

#[test]
fn bench_lean_produce_writes_what_it_reports_and_consume_reads_it_back() {
    let weir = Weir::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "produce", "--lean", "--json", "--topic", "bench-t"])
        .args(["--count", "20000", "--batch", "500", "--partitions", "2"])
        .args(["--inflight", "3", "--acks", "-1", "--rate", "200000"])
        .args(["--bootstrap", &weir.kafka.to_string()])
        .output()
        .expect("run weir bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for field in [
        "\"records\":20000",
        "\"requests\":40",
        "\"errors\":0",
        "\"latency_samples\":40",
        "\"partitions\":2",
    ] {
        assert!(stdout.contains(field), "{field} missing in {stdout}");
    }
    // Paced, the latency is split where each request left: each part is at most the whole,
    // request by request, so each percentile is too.
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    for q in ["p50", "p99", "max"] {
        let whole = report["latency_ms"][q].as_f64().expect("latency");
        for part in ["left_late_ms", "left_to_answer_ms"] {
            let ms = report[part][q].as_f64().expect("split");
            assert!(
                ms >= 0.0 && ms <= whole,
                "{part} {q} {ms} > {whole}: {stdout}"
            );
        }
    }
    assert!(report["left_to_answer_ms"]["p50"].as_f64() > Some(0.0));
    // The records are in the log: 10,000 on each partition (round robin, 500 a batch).
    let mut s = weir.connect();
    let mut total = 0;
    for p in 0..2 {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
        let request = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("bench-t")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(p)
                    .with_timestamp(-1)])]);
        let frame = request_frame(ApiKey::ListOffsets, 7, &request);
        let (_, mut body) = call(&mut s, &frame, ApiKey::ListOffsets, 7);
        let response = ListOffsetsResponse::decode(&mut body, 7).expect("ListOffsets");
        let offset = response.topics[0].partitions[0].offset;
        assert_eq!(offset, 10_000, "partition {p}");
        total += offset;
    }
    assert_eq!(total, 20_000);
    // And the lean consumer reads them all back.
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "consume", "--lean", "--json", "--topic", "bench-t"])
        .args(["--count", "20000", "--fetch-bytes", "100000"])
        .args(["--bootstrap", &weir.kafka.to_string()])
        .output()
        .expect("run weir bench consume");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for field in ["\"bench\":\"consume\"", "\"records\":20000", "\"errors\":0"] {
        assert!(stdout.contains(field), "{field} missing in {stdout}");
    }
    // Bad flags: exit 2 with the usage; an unreachable broker: exit 1 saying what to do.
    let bad = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "produce", "--lean", "--acks", "0"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("usage: weir bench"));
    let down = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "produce", "--lean", "--bootstrap", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("is `weir serve` running?"));
}

/// A Produce of `records` to one partition.
fn produce_request(
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    kafka_protocol::messages::ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

fn produce_frame(topic: &str, records: Bytes) -> Vec<u8> {
    request_frame(ApiKey::Produce, 9, &produce_request(topic, 0, records, 1))
}

/// The error code of the one partition in a Produce response read from `stream`.
fn produce_answer(stream: &mut TcpStream) -> std::io::Result<i16> {
    use kafka_protocol::messages::ProduceResponse;
    let (_, mut body) = read_response(stream, ApiKey::Produce, 9)?;
    let response = ProduceResponse::decode(&mut body, 9).expect("Produce");
    Ok(response.responses[0].partition_responses[0].error_code)
}

#[test]
fn requests_wait_for_the_memory_budget_instead_of_allocating() {
    let config = ConfigFile::new("budget", "request_memory_budget_bytes = 1048576\n");
    let weir = Weir::start(&config.args());
    let mut a = weir.connect();
    assert_eq!(
        create_topic(&mut a, 5, "budget", 1, 1, &[], false).error_code,
        0
    );
    // A declares a 900 KB Produce and sends only its start: it holds 900 KB of the budget.
    let a_frame = produce_frame("budget", big_batch(900_000));
    a.write_all(&a_frame[..1_000]).expect("start of A");
    std::thread::sleep(Duration::from_millis(200));
    // B's 300 KB Produce does not fit in what is left: B is not read, and not answered.
    let mut b = weir.connect();
    let b_frame = produce_frame("budget", big_batch(300_000));
    let mut b_writer = b.try_clone().expect("clone");
    let writer = std::thread::spawn(move || b_writer.write_all(&b_frame));
    b.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let early = produce_answer(&mut b);
    assert!(early.is_err(), "B was answered while the budget was spent");
    let metrics = http_get(weir.http, "/metrics");
    assert!(
        metrics.contains("weir_request_budget_waiting_connections 1"),
        "{metrics}"
    );
    let in_use: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_request_budget_in_use_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("budget in use");
    // A's whole request, and what was left of the main part, which the waiting B holds on to
    // (first come, first served: a large request is not starved by smaller ones). The eighth
    // kept for small requests is free.
    assert_eq!(
        in_use,
        (1 << 20) - (1 << 17),
        "A reserved {} bytes",
        a_frame.len() - 4
    );
    // So a small request does not wait behind B: C's 1 KB Produce is answered at once.
    let mut c = weir.connect();
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    c.write_all(&produce_frame("budget", big_batch(1_000)))
        .expect("C");
    assert_eq!(produce_answer(&mut c).expect("C answered"), 0);
    // A finishes: A is answered, then B gets the budget and is answered too.
    a.write_all(&a_frame[1_000..]).expect("rest of A");
    assert_eq!(produce_answer(&mut a).expect("A answered"), 0);
    b.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(produce_answer(&mut b).expect("B answered"), 0);
    writer.join().expect("writer").expect("B sent");
    let metrics = http_get(weir.http, "/metrics");
    assert!(
        metrics.contains("weir_request_budget_waits_total 1"),
        "{metrics}"
    );
    // B's bytes go back once its answer is written, which the client may see first.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !http_get(weir.http, "/metrics").contains("weir_request_budget_in_use_bytes 0") {
        assert!(Instant::now() < deadline, "the budget was not given back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_partition_with_a_backlog_does_not_take_every_fetch_budget() {
    let weir = Weir::start(&[]);
    let mut s = weir.connect();
    assert_eq!(
        create_topic(&mut s, 5, "fair", 2, 1, &[], false).error_code,
        0
    );
    for partition in 0..2 {
        for _ in 0..3 {
            assert_eq!(
                produce(&mut s, "fair", partition, big_batch(100_000), 1).error_code,
                0
            );
        }
    }
    // Each Fetch asks for both partitions from the start with room for one batch: the budget
    // goes to one partition, and to the other on the next Fetch of the same connection, even
    // when another consumer's Fetches come in between, one for one.
    let mut other = weir.connect();
    let mut served = [0; 2];
    for _ in 0..4 {
        fetch_once(&mut other, "fair", &[0, 1], 150_000, 0, 0);
        let response = fetch_once(&mut s, "fair", &[0, 1], 150_000, 0, 0);
        let parts = &response.responses[0].partitions;
        assert_eq!(
            parts.iter().map(|p| p.partition_index).collect::<Vec<_>>(),
            [0, 1],
            "the answer keeps the request's order"
        );
        let with_records: Vec<usize> = (0..2)
            .filter(|&i| parts[i].records.as_ref().is_some_and(|r| !r.is_empty()))
            .collect();
        assert_eq!(with_records.len(), 1, "one batch fits the budget");
        served[with_records[0]] += 1;
    }
    assert_eq!(served, [2, 2], "the budget went to the partitions in turn");
}

/// A request frame sent with client id `client`.
fn request_as<T: Encodable>(
    client: &str,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client.to_string())))
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    let mut framed = (buf.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&buf);
    framed
}

/// (client id or None for the default, [(key, value)]) of every client-id quota, sorted.
/// A client id (None: the default) and its quota (key, value)s.
type ClientQuota = (Option<String>, Vec<(String, f64)>);

/// An AlterClientQuotas entry: entity type, name, [(key, value, remove)].
type QuotaChange<'a> = (&'a str, Option<&'a str>, Vec<(&'a str, f64, bool)>);

fn describe_quotas(stream: &mut TcpStream) -> Vec<ClientQuota> {
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
    use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};
    let request =
        DescribeClientQuotasRequest::default().with_components(vec![ComponentData::default()
            .with_entity_type(StrBytes::from_static_str("client-id"))
            .with_match_type(2)]);
    let frame = request_frame(ApiKey::DescribeClientQuotas, 1, &request);
    let (_, mut body) = call(stream, &frame, ApiKey::DescribeClientQuotas, 1);
    let response = DescribeClientQuotasResponse::decode(&mut body, 1).expect("describe");
    assert_eq!(response.error_code, 0);
    let mut out: Vec<_> = response
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            assert_eq!(e.entity.len(), 1);
            assert_eq!(e.entity[0].entity_type.as_str(), "client-id");
            let name = e.entity[0].entity_name.as_ref().map(|n| n.to_string());
            let mut values: Vec<_> = e
                .values
                .iter()
                .map(|v| (v.key.to_string(), v.value))
                .collect();
            values.sort_by(|a, b| a.0.cmp(&b.0));
            (name, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Sends AlterClientQuotas entries of (entity type, name, [(key, value, remove)]); returns the
/// error codes in order.
fn alter_quotas(stream: &mut TcpStream, entries: &[QuotaChange<'_>]) -> Vec<i16> {
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};
    let request = AlterClientQuotasRequest::default().with_entries(
        entries
            .iter()
            .map(|(kind, name, ops)| {
                EntryData::default()
                    .with_entity(vec![EntityData::default()
                        .with_entity_type(StrBytes::from_string(kind.to_string()))
                        .with_entity_name(
                            name.map(|n| StrBytes::from_string(n.to_string())),
                        )])
                    .with_ops(
                        ops.iter()
                            .map(|(k, v, remove)| {
                                OpData::default()
                                    .with_key(StrBytes::from_string(k.to_string()))
                                    .with_value(*v)
                                    .with_remove(*remove)
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    let frame = request_frame(ApiKey::AlterClientQuotas, 1, &request);
    let (_, mut body) = call(stream, &frame, ApiKey::AlterClientQuotas, 1);
    let response = AlterClientQuotasResponse::decode(&mut body, 1).expect("alter");
    response.entries.iter().map(|e| e.error_code).collect()
}

#[test]
fn client_quotas_change_at_runtime_throttle_and_survive_a_restart() {
    let config = ConfigFile::new(
        "quotas",
        "[client_quotas.batch]\nproducer_byte_rate = 5000000\n",
    );
    let args = config.args();
    let weir = Weir::start(&args);
    let mut s = weir.connect();
    let rate = |k: &str, v: f64| (k.to_string(), v);
    assert_eq!(
        describe_quotas(&mut s),
        vec![(Some("batch".into()), vec![rate("producer_byte_rate", 5e6)])]
    );
    let codes = alter_quotas(
        &mut s,
        &[
            (
                "client-id",
                Some("slow"),
                vec![("producer_byte_rate", 100_000.0, false)],
            ),
            ("client-id", None, vec![("consumer_byte_rate", 1e9, false)]),
            (
                "user",
                Some("alice"),
                vec![("producer_byte_rate", 1.0, false)],
            ),
            (
                "client-id",
                Some("x"),
                vec![("request_percentage", 50.0, false)],
            ),
            (
                "client-id",
                Some("y"),
                vec![("producer_byte_rate", -5.0, false)],
            ),
        ],
    );
    assert_eq!(
        codes,
        [0, 0, 42, 0, 42],
        "unsupported entities and bad values are refused"
    );
    let all = vec![
        (None, vec![rate("consumer_byte_rate", 1e9)]),
        (Some("batch".into()), vec![rate("producer_byte_rate", 5e6)]),
        (Some("slow".into()), vec![rate("producer_byte_rate", 1e5)]),
        (Some("x".into()), vec![rate("request_percentage", 50.0)]),
    ];
    assert_eq!(describe_quotas(&mut s), all);

    // "slow" sends 300 KB: one second's worth (100 KB) is free, the rest costs two seconds.
    assert_eq!(
        create_topic(&mut s, 5, "quota", 1, 1, &[], false).error_code,
        0
    );
    let mut slow = weir.connect();
    use kafka_protocol::messages::ProduceResponse;
    let produce = produce_request("quota", 0, big_batch(300_000), 1);
    let frame = request_as("slow", ApiKey::Produce, 9, 1, &produce);
    let (_, mut body) = call(&mut slow, &frame, ApiKey::Produce, 9);
    let response = ProduceResponse::decode(&mut body, 9).expect("Produce");
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    let throttle = response.throttle_time_ms;
    assert!(
        (1_900..=2_100).contains(&throttle),
        "throttle_time_ms {throttle}"
    );
    // The connection is not read until the throttle has passed.
    let started = Instant::now();
    api_versions(&mut slow, 3, 2);
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    // Another client is not throttled.
    let (_, mut body) = call(
        &mut s,
        &request_as("other", ApiKey::Produce, 9, 1, &produce),
        ApiKey::Produce,
        9,
    );
    assert_eq!(
        ProduceResponse::decode(&mut body, 9)
            .expect("Produce")
            .throttle_time_ms,
        0
    );

    // Runtime quotas are stored: a restart keeps them (the file's come from the file).
    let (status, _, dir) = weir.terminate_keep();
    assert!(status.success());
    let weir = Weir::start_in(dir, &args);
    let mut s = weir.connect();
    assert_eq!(describe_quotas(&mut s), all);
    // Removing a runtime quota: "slow" is gone, the default's key too.
    let codes = alter_quotas(
        &mut s,
        &[
            (
                "client-id",
                Some("slow"),
                vec![("producer_byte_rate", 0.0, true)],
            ),
            ("client-id", None, vec![("consumer_byte_rate", 0.0, true)]),
        ],
    );
    assert_eq!(codes, [0, 0]);
    assert_eq!(
        describe_quotas(&mut s),
        vec![
            (Some("batch".into()), vec![rate("producer_byte_rate", 5e6)]),
            (Some("x".into()), vec![rate("request_percentage", 50.0)]),
        ]
    );
}

/// One batch of one `size`-byte record stamped `timestamp`.
fn batch_at(size: usize, timestamp: i64) -> Bytes {
    let mut builder = weir_log::batch::build::BatchBuilder::new(timestamp);
    builder.push(Some(b"k"), Some(&vec![b'r'; size]), timestamp);
    Bytes::from(builder.build())
}

#[test]
fn retention_deletes_old_segments_by_size_and_by_time() {
    let config = ConfigFile::new("retention", "log_retention_check_interval_ms = 100\n");
    let weir = Weir::start(&config.args());
    let mut s = weir.connect();
    // Segments of about 3 batches (each batch ~370 bytes; a segment rolls past 1,000 bytes).
    let small = ("segment.bytes", "1000");
    for (topic, extra) in [
        ("by-size", ("retention.bytes", "2500")),
        ("by-time", ("retention.ms", "3600000")),
        ("kept", ("retention.ms", "-1")),
    ] {
        let created = create_topic(&mut s, 5, topic, 1, 1, &[small, extra], false);
        assert_eq!(created.error_code, 0, "{topic}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let two_hours_ago = now - 2 * 3_600_000;
    for i in 0..30 {
        for topic in ["by-size", "kept"] {
            let r = produce(&mut s, topic, 0, batch_at(300, now), 1);
            assert_eq!((r.error_code, r.base_offset), (0, i), "{topic}");
        }
        // by-time: the first 20 batches are two hours old, the last 10 fresh.
        let at = if i < 20 { two_hours_ago } else { now };
        let r = produce(&mut s, "by-time", 0, batch_at(300, at), 1);
        assert_eq!((r.error_code, r.base_offset), (0, i), "by-time");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (size_start, time_start) = loop {
        let size = list_offset(&mut s, "by-size", -2);
        let time = list_offset(&mut s, "by-time", -2);
        // Passes run while the batches arrive: wait for one after the last of them.
        if (size.2 >= 21 && time.2 >= 15) || Instant::now() > deadline {
            break (size.2, time.2);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // by-size keeps whole segments while they fit in 2,500 bytes: at most ~7 batches, and
    // the active segment always.
    assert!(
        (21..=29).contains(&size_start),
        "by-size starts at {size_start}"
    );
    // by-time loses exactly the segments whose newest batch is old: their last batch is below 20.
    assert!(
        (15..=20).contains(&time_start),
        "by-time starts at {time_start}"
    );
    assert_eq!(
        list_offset(&mut s, "kept", -2).2,
        0,
        "kept keeps everything"
    );
    for (topic, start) in [("by-size", size_start), ("by-time", time_start)] {
        assert_eq!(
            list_offset(&mut s, topic, -1).2,
            30,
            "{topic}: the end stays"
        );
        let fetched = fetch_at(&mut s, topic, 0);
        assert_eq!(fetched.0, 1, "{topic}: below the start is out of range");
        let fetched = fetch_at(&mut s, topic, start);
        assert_eq!(
            (fetched.0, fetched.1),
            (0, start),
            "{topic}: from the start"
        );
    }
    let metrics = http_get(weir.http, "/metrics");
    let deleted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_log_retention_deleted_segments_total "))
        .and_then(|v| v.parse().ok())
        .expect("retention metric");
    assert!(deleted >= 8, "{deleted} segments deleted");
    // Deleted segments' files are gone: the kept topic's directory holds more .log files than
    // both others together.
    let logs = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                    .count()
            })
            .unwrap_or(0)
    };
    let counts = || {
        let mut counts: Vec<usize> = std::fs::read_dir(weir._dir.0.join("partitions"))
            .expect("partitions dir")
            .filter_map(Result::ok)
            .map(|topic| logs(&topic.path().join("0")))
            .collect();
        counts.sort();
        counts
    };
    // The files go once the new log start is durable, a moment after it moved.
    let gone = |c: &[usize]| c.len() == 3 && c[2] >= 9 && c[0] + c[1] < c[2];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(&counts()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let counts = counts();
    assert!(gone(&counts), "{counts:?}");
}

/// One Fetch of partition 0 of `topic` from `offset` (up to 1 MiB): (error code, the stored
/// batches).
fn fetch_from(stream: &mut TcpStream, topic: &str, offset: i64) -> (i16, Bytes) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let frame = request_frame(ApiKey::Fetch, 11, &request);
    let (_, mut body) = call(stream, &frame, ApiKey::Fetch, 11);
    let response = FetchResponse::decode(&mut body, 11).expect("Fetch");
    let p = &response.responses[0].partitions[0];
    (p.error_code, p.records.clone().unwrap_or_default())
}

/// The stored batches of partition 0 of `topic` from `offset`; the Fetch must succeed.
fn records_from(stream: &mut TcpStream, topic: &str, offset: i64) -> Bytes {
    let (code, records) = fetch_from(stream, topic, offset);
    assert_eq!(code, 0);
    records
}

/// One Fetch of partition 0 from `offset`: (error code, first offset returned or -1).
fn fetch_at(stream: &mut TcpStream, topic: &str, offset: i64) -> (i16, i64) {
    let (code, records) = fetch_from(stream, topic, offset);
    let first = weir_log::batch::Batches::new(&records)
        .next()
        .and_then(|b| b.ok())
        .map_or(-1, |(_, h)| h.base_offset);
    (code, first)
}

#[test]
fn a_client_over_its_request_time_share_is_throttled_and_others_are_not() {
    use kafka_protocol::messages::ProduceResponse;
    // 1 % of one thread: 10 ms of handling per second.
    let config = ConfigFile::new(
        "reqquota",
        "[client_quotas.busy]\nrequest_percentage = 1.0\n",
    );
    let weir = Weir::start(&config.args());
    let mut s = weir.connect();
    assert_eq!(
        describe_quotas(&mut s),
        vec![(
            Some("busy".into()),
            vec![("request_percentage".to_string(), 1.0)]
        )]
    );
    assert_eq!(
        create_topic(&mut s, 5, "share", 1, 1, &[], false).error_code,
        0
    );
    let produce = produce_request("share", 0, Bytes::from(test_batch(1)), 1);
    let send = |stream: &mut TcpStream, client: &str, n: i32| {
        let frame = request_as(client, ApiKey::Produce, 9, n, &produce);
        let (_, mut body) = call(stream, &frame, ApiKey::Produce, 9);
        let response = ProduceResponse::decode(&mut body, 9).expect("Produce");
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
        response.throttle_time_ms
    };
    // An unlimited client sends 300 requests: never throttled.
    let mut free = weir.connect();
    for n in 0..300 {
        assert_eq!(send(&mut free, "free", n), 0, "request {n}");
    }
    // "busy" spends its second's worth (10 ms) within some hundreds of requests, then is told
    // to hold back for the time its excess takes to repay at 10 ms/s.
    let mut busy = weir.connect();
    let throttle = (0..5_000)
        .map(|n| send(&mut busy, "busy", n))
        .find(|t| *t > 0)
        .expect("busy was throttled within 5,000 requests");
    assert!(throttle <= 30_000, "throttle_time_ms {throttle}");
    // Its connection is not read for that long.
    let started = Instant::now();
    api_versions(&mut busy, 3, 2);
    let muted = started.elapsed();
    assert!(
        muted >= Duration::from_millis(throttle as u64 * 8 / 10),
        "muted {muted:?} for a throttle of {throttle} ms"
    );
    // The free client is still served at once.
    assert_eq!(send(&mut free, "free", 1_000), 0);
    let metrics = http_get(weir.http, "/metrics");
    let charged = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "weir_client_throttle_seconds_total{client_id=\"busy\",quota=\"request\"} ",
            )
        })
        .and_then(|v| v.parse::<f64>().ok())
        .expect("busy's request throttle in the metrics");
    assert!(charged > 0.0, "{charged}");
    assert!(
        !metrics.contains("client_id=\"free\""),
        "free was never throttled"
    );
}

#[test]
fn retention_reaches_partitions_not_used_since_a_restart() {
    // First run: retention never comes round; two hours' old batches fill several segments.
    let never = ConfigFile::new(
        "retention-never",
        "log_retention_check_interval_ms = 3600000\n",
    );
    let weir = Weir::start(&never.args());
    let mut s = weir.connect();
    let configs = [("segment.bytes", "1000"), ("retention.ms", "3600000")];
    assert_eq!(
        create_topic(&mut s, 5, "idle", 1, 1, &configs, false).error_code,
        0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    for i in 0..20 {
        let at = if i < 15 { now - 2 * 3_600_000 } else { now };
        let r = produce(&mut s, "idle", 0, batch_at(300, at), 1);
        assert_eq!((r.error_code, r.base_offset), (0, i));
    }
    let (status, _, dir) = weir.terminate_keep();
    assert!(status.success());
    let partition_dir = std::fs::read_dir(dir.0.join("partitions"))
        .expect("partitions")
        .filter_map(Result::ok)
        .map(|t| t.path().join("0"))
        .find(|p| p.exists())
        .expect("the topic's partition directory");
    let logs = || {
        std::fs::read_dir(&partition_dir)
            .expect("partition dir")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .count()
    };
    let before = logs();
    assert!(before >= 6, "{before} segments");
    // Second run: nobody touches the partition, and retention still reaches it.
    let often = ConfigFile::new("retention-often", "log_retention_check_interval_ms = 100\n");
    let weir = Weir::start_in(dir, &often.args());
    let deadline = Instant::now() + Duration::from_secs(10);
    while logs() >= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = logs();
    assert!(after < before, "still {after} segments");
    let mut s = weir.connect();
    let (code, _, start) = list_offset(&mut s, "idle", -2);
    assert_eq!(code, 0);
    assert!((10..=15).contains(&start), "starts at {start}");
    assert_eq!(list_offset(&mut s, "idle", -1).2, 20);
}
