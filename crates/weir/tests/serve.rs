//! `weir serve` as a real process on 127.0.0.1:0: the Kafka handshake, Metadata, bad input,
//! HTTP health, SIGTERM, and a real client (kcat).

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

impl Weir {
    fn start(extra: &[&str]) -> Weir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weir-serve-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&dir)
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
            _dir: TempDir(dir),
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

    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
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
        (status, lines)
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("serve-test")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    let mut framed = (buf.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&buf);
    framed
}

/// Sends a request and returns (correlation id, body) of the response.
fn call(stream: &mut TcpStream, frame: &[u8], key: ApiKey, version: i16) -> (i32, Bytes) {
    stream.write_all(frame).expect("send");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("response size");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("response body");
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
        .expect("response header");
    (header.correlation_id, body)
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
fn metadata_advertises_the_listener_and_unknown_topics() {
    let weir = Weir::start(&["--advertised-listener", "broker.example:19092"]);
    let mut stream = weir.connect();
    for version in [0i16, 1, 4, 9, 12] {
        let body = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("orders"))))]));
        let frame = request(ApiKey::Metadata, version, 100 + i32::from(version), &body);
        let (correlation, mut body) = call(&mut stream, &frame, ApiKey::Metadata, version);
        assert_eq!(correlation, 100 + i32::from(version));
        let response = MetadataResponse::decode(&mut body, version).expect("Metadata response");
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.brokers[0].host.as_str(), "broker.example");
        assert_eq!(response.brokers[0].port, 19092);
        assert_eq!(response.topics.len(), 1);
        assert_eq!(
            response.topics[0].error_code, 3,
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        if version >= 2 {
            let id = response.cluster_id.expect("cluster id");
            assert_eq!(id.len(), 22, "{id}");
        }
    }
}

#[test]
fn bad_input_closes_only_the_offending_connection() {
    let weir = Weir::start(&[]);
    let mut healthy = weir.connect();
    let mut correlation = 0;
    let mut check_healthy = |healthy: &mut TcpStream| {
        correlation += 1;
        assert_eq!(api_versions(healthy, 3, correlation).error_code, 0);
    };
    check_healthy(&mut healthy);

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
    }
    // A truncated frame: the peer goes away mid-frame; the broker just drops it.
    let mut bad = weir.connect();
    bad.write_all(&100i32.to_be_bytes()).expect("send");
    bad.write_all(&[0u8; 10]).expect("send");
    drop(bad);
    check_healthy(&mut healthy);

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
    write!(stream, "GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").expect("send");
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
    if Command::new("kcat").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "kcat missing: scripts/test installs it"
        );
        eprintln!("SKIPPED: kcat not installed (scripts/test installs it)");
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
