//! The HTTP gateway's REST API against a real `weir serve`: topics, produce, fetch (with long
//! poll), groups, the OpenAPI document, and bad input answered with clear errors while a
//! healthy keep-alive client carries on. Kafka-client interplay is in tests/clients/rest.py.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{ConfigFile, Serve};
use serde_json::{json, Value};

/// A keep-alive HTTP/1.1 client on one connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    fn connect(serve: &Serve) -> Client {
        let stream = TcpStream::connect(&serve.http).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn request(&mut self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send_raw(raw.as_bytes());
        self.read_answer().expect("an answer")
    }

    /// Reads one response; None if the connection closed first.
    fn read_answer(&mut self) -> Option<Answer> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("utf8 head");
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().expect("length"));
        while self.buf.len() < head_end + length {
            assert!(self.fill(), "connection closed mid-body");
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Some(Answer {
            status,
            headers,
            body,
        })
    }

    fn fill(&mut self) -> bool {
        common::read_more(&mut self.stream, &mut self.buf)
    }

    /// Whether the server closed the connection (reads end of stream).
    fn closed(&mut self) -> bool {
        !self.fill()
    }
}

/// The string values of a fetch answer's records, in order.
fn values(fetched: &Value) -> Vec<&str> {
    fetched["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["value"].as_str())
        .collect()
}

fn create(client: &mut Client, name: &str, partitions: i32) {
    let created = client.request(
        "POST",
        "/topics",
        Some(&json!({"name": name, "partitions": partitions})),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
}

#[test]
fn topics_are_created_listed_described_and_deleted() {
    let serve = Serve::start();
    let mut c = Client::connect(&serve);
    let created = c.request(
        "POST",
        "/topics",
        Some(&json!({"name": "orders", "partitions": 3, "configs": {"retention.ms": "86400000"}})),
    );
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["partitions"], 3);
    assert_eq!(created.json()["id"].as_str().map(str::len), Some(32));
    let again = c.request("POST", "/topics", Some(&json!({"name": "orders"})));
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"], "topic_exists");
    let listed = c.request("GET", "/topics", None).json();
    assert_eq!(listed["topics"][0]["name"], "orders");
    let described = c.request("GET", "/topics/orders", None);
    assert_eq!(described.status, 200);
    let described = described.json();
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(3));
    assert_eq!(described["partitions"][2]["high_watermark"], 0);
    assert_eq!(described["configs"]["retention.ms"], "86400000");
    let deleted = c.request("DELETE", "/topics/orders", None);
    assert_eq!(deleted.status, 204);
    assert_eq!(c.request("GET", "/topics/orders", None).status, 404);
    assert_eq!(c.request("DELETE", "/topics/orders", None).status, 404);
    assert_eq!(
        c.request("GET", "/topics", None).json()["topics"],
        json!([])
    );
    for (body, error) in [
        (json!({"name": "bad name!"}), "invalid_topic"),
        (json!({"name": "t", "partitions": 0}), "invalid_partitions"),
        (
            json!({"name": "t", "configs": {"retention.ms": "soon"}}),
            "invalid_config",
        ),
        (
            json!({"name": "t", "configs": {"cleanup.policy": "compact"}}),
            "invalid_config",
        ),
        (json!({"nam": "t"}), "bad_request"),
    ] {
        let refused = c.request("POST", "/topics", Some(&body));
        assert_eq!(refused.status, 400, "{body}");
        assert_eq!(refused.json()["error"], error, "{body}");
        assert!(refused.json()["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}

#[test]
fn records_produced_over_rest_are_fetched_back_identical() {
    let serve = Serve::start();
    let mut c = Client::connect(&serve);
    create(&mut c, "events", 3);
    let produced = c.request(
        "POST",
        "/topics/events/records",
        Some(&json!({"encoding": "utf8", "records": [
            {"key": "customer-1", "value": "{\"total\":9}",
             "headers": [{"key": "source", "value": "web"}, {"key": "trace", "value": null}],
             "timestamp": 1_700_000_000_000i64},
            {"key": "customer-1", "value": "second"},
            {"value": "to partition 2", "partition": 2},
        ]})),
    );
    assert_eq!(
        produced.status,
        200,
        "{}",
        String::from_utf8_lossy(&produced.body)
    );
    let offsets = produced.json()["offsets"].clone();
    let keyed = offsets[0]["partition"].as_i64().expect("partition");
    assert_eq!(offsets[1]["partition"], keyed, "one key, one partition");
    assert_eq!(offsets[0]["offset"], 0);
    assert_eq!(offsets[1]["offset"], 1);
    assert_eq!(
        offsets[2],
        json!({"partition": 2, "offset": if keyed == 2 { 2 } else { 0 }})
    );

    let fetched = c.request(
        "GET",
        &format!("/topics/events/partitions/{keyed}/records?offset=0&encoding=utf8"),
        None,
    );
    assert_eq!(fetched.status, 200);
    let fetched = fetched.json();
    let records = fetched["records"].as_array().expect("records");
    let first = &records[0];
    assert_eq!(first["offset"], 0);
    assert_eq!(first["key"], "customer-1");
    assert_eq!(first["value"], "{\"total\":9}");
    assert_eq!(first["timestamp"], 1_700_000_000_000i64);
    assert_eq!(
        first["headers"],
        json!([{"key": "source", "value": "web"}, {"key": "trace", "value": null}])
    );
    assert_eq!(records[1]["value"], "second");
    assert_eq!(fetched["high_watermark"], records.len() as i64);
    assert_eq!(fetched["next_offset"], records.len() as i64);

    // Binary values, base64 both ways (the default), and fetching from a later offset.
    let binary = json!({"records": [{"value": "AAEC/w=="}, {"key": "/w==", "value": null}]});
    let produced = c.request("POST", "/topics/events/records?x=1", Some(&binary));
    assert_eq!(produced.status, 200);
    let offsets = produced.json()["offsets"].clone();
    let p = offsets[0]["partition"].as_i64().expect("partition");
    let at = offsets[0]["offset"].as_i64().expect("offset");
    let fetched = c
        .request(
            "GET",
            &format!("/topics/events/partitions/{p}/records?offset={at}&max_records=1"),
            None,
        )
        .json();
    assert_eq!(fetched["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(fetched["records"][0]["value"], "AAEC/w==");
    assert_eq!(fetched["next_offset"], at + 1);

    // Out of range: 416 with where the log is.
    let past = c.request(
        "GET",
        "/topics/events/partitions/0/records?offset=999",
        None,
    );
    assert_eq!(past.status, 416);
    assert_eq!(past.json()["error"], "offset_out_of_range");
    assert!(past.json()["high_watermark"].is_i64());
}

#[test]
fn a_rest_fetch_returns_at_most_http_fetch_max_records() {
    let config = ConfigFile::new("http-records", "http_fetch_max_records = 3\n");
    let serve = Serve::start_with(&config);
    let mut c = Client::connect(&serve);
    create(&mut c, "capped", 1);
    let records: Vec<Value> = (0..5).map(|i| json!({"value": format!("r{i}")})).collect();
    let produced = c.request(
        "POST",
        "/topics/capped/records",
        Some(&json!({"encoding": "utf8", "records": records})),
    );
    assert_eq!(produced.status, 200);
    for (query, expected) in [("", 3), ("&max_records=100", 3), ("&max_records=2", 2)] {
        let fetched = c
            .request(
                "GET",
                &format!("/topics/capped/partitions/0/records?offset=0&encoding=utf8{query}"),
                None,
            )
            .json();
        let values = values(&fetched);
        let wanted: Vec<String> = (0..expected).map(|i| format!("r{i}")).collect();
        assert_eq!(values, wanted, "{query}");
        assert_eq!(fetched["next_offset"], expected, "{query}");
    }
}

#[test]
fn a_long_poll_fetch_is_woken_by_a_new_record() {
    let serve = Serve::start();
    let mut c = Client::connect(&serve);
    create(&mut c, "tail", 1);
    let mut waiter = Client::connect(&serve);
    let started = Instant::now();
    waiter.send_raw(
        b"GET /topics/tail/partitions/0/records?offset=0&wait_ms=20000&encoding=utf8 HTTP/1.1\r\nhost: t\r\n\r\n",
    );
    std::thread::sleep(Duration::from_millis(300));
    let produced = c.request(
        "POST",
        "/topics/tail/records",
        Some(&json!({"encoding": "utf8", "records": [{"value": "wake up"}]})),
    );
    assert_eq!(produced.status, 200);
    let answer = waiter.read_answer().expect("answer");
    let waited = started.elapsed();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["records"][0]["value"], "wake up");
    assert!(
        waited >= Duration::from_millis(300),
        "answered before the record: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "not woken by the record: {waited:?}"
    );
    // Nothing arrives: the poll ends at wait_ms with no records.
    let started = Instant::now();
    let empty = c.request(
        "GET",
        "/topics/tail/partitions/0/records?offset=1&wait_ms=300",
        None,
    );
    assert_eq!(empty.json()["records"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn bad_requests_get_clear_errors_and_a_healthy_client_carries_on() {
    let serve = Serve::start();
    let mut healthy = Client::connect(&serve);
    create(&mut healthy, "t", 2);
    let mut produced = 0;
    let mut check_healthy = |healthy: &mut Client| {
        let answer = healthy.request(
            "POST",
            "/topics/t/records",
            Some(&json!({"encoding": "utf8", "records": [{"value": "ok", "partition": 0}]})),
        );
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["offsets"][0]["offset"], produced);
        produced += 1;
    };
    let mut c = Client::connect(&serve);
    // Answered on a connection that stays open.
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        (
            "POST",
            "/topics/t/records",
            Some("{not json"),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/topics/t/records",
            Some(r#"{"records":[{"value":"***"}]}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/topics/t/records",
            Some(r#"{"records":[{"value":"YQ==","partition":7}]}"#),
            404,
            "unknown_partition",
        ),
        (
            "POST",
            "/topics/nope/records",
            Some(r#"{"records":[{"value":"YQ=="}]}"#),
            404,
            "unknown_topic",
        ),
        (
            "GET",
            "/topics/nope/partitions/0/records",
            None,
            404,
            "unknown_topic",
        ),
        (
            "GET",
            "/topics/t/partitions/x/records",
            None,
            404,
            "unknown_partition",
        ),
        (
            "GET",
            "/topics/t/partitions/0/records?offset=soon",
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/topics/t/partitions/0/records?encoding=hex",
            None,
            400,
            "bad_request",
        ),
        ("GET", "/groups/nobody", None, 404, "group_not_found"),
        ("GET", "/no/such/route", None, 404, "not_found"),
        ("PUT", "/topics", None, 405, "method_not_allowed"),
    ];
    for (method, path, body, status, error) in cases {
        let body = body.unwrap_or_default();
        c.send_raw(
            format!(
                "{method} {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let answer = c.read_answer().expect("answer");
        assert_eq!(answer.status, status, "{method} {path}");
        assert_eq!(answer.json()["error"], error, "{method} {path}");
        if status == 405 {
            assert_eq!(answer.header("allow"), Some("GET, POST"));
        }
        check_healthy(&mut healthy);
    }
    // A POST whose body is not declared JSON (what a form on another site would send).
    c.send_raw(b"POST /topics/t/records HTTP/1.1\r\nhost: t\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n{}");
    let answer = c.read_answer().expect("answer");
    assert_eq!(
        (answer.status, answer.json()["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    check_healthy(&mut healthy);
    // Answered, then closed: the stream cannot be trusted after these.
    let big = format!(
        "POST /topics/t/records HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
        64 * 1024 * 1024
    );
    let long_head = format!(
        "GET /health HTTP/1.1\r\nx: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    for (raw, status) in [
        (big.as_str(), 413),
        (long_head.as_str(), 431),
        ("\x16\x03\x01garbage\r\n\r\n", 400),
        (
            "POST /topics/t/records HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            411,
        ),
        (
            "POST /topics/t/records HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
            400,
        ),
        (
            "POST /topics/t/records HTTP/1.1\r\ncontent-length: +2\r\n\r\n{}",
            400,
        ),
    ] {
        let mut bad = Client::connect(&serve);
        bad.send_raw(raw.as_bytes());
        let answer = bad.read_answer().expect("answer");
        assert_eq!(answer.status, status, "{raw:.40}");
        assert!(answer.json()["message"].is_string());
        assert!(bad.closed(), "closed after {status}");
        check_healthy(&mut healthy);
    }
    // A body that never arrives: 408 once request_complete_timeout passes would take 30 s;
    // a peer that goes away mid-body is just closed.
    let mut gone = Client::connect(&serve);
    gone.send_raw(b"POST /topics/t/records HTTP/1.1\r\ncontent-length: 100\r\n\r\n{\"rec");
    drop(gone);
    check_healthy(&mut healthy);
    // Nothing the bad clients sent was written.
    let all = healthy
        .request("GET", "/topics/t/partitions/0/records?encoding=utf8", None)
        .json();
    let values = values(&all);
    assert!(values.iter().all(|v| *v == "ok"), "{values:?}");
    assert_eq!(values.len(), produced as usize);
    let p1 = healthy
        .request("GET", "/topics/t/partitions/1/records", None)
        .json();
    assert_eq!(p1["high_watermark"], 0);
}

#[test]
fn the_openapi_document_and_metrics_are_served() {
    let serve = Serve::start();
    let mut c = Client::connect(&serve);
    let doc = c.request("GET", "/openapi.json", None);
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["paths"]["/topics/{topic}/records"]["post"].is_object());
    assert_eq!(c.request("GET", "/health", None).body, b"ok\n");
    create(&mut c, "m", 1);
    let metrics = String::from_utf8(c.request("GET", "/metrics", None).body).expect("text");
    assert!(
        metrics.contains("weir_http_connections_open 1"),
        "{metrics}"
    );
    assert!(metrics.contains("weir_http_responses_total{class=\"2xx\"}"));
}

#[test]
fn rest_and_confluent_kafka_read_each_others_records() {
    let Some(python) = common::python() else {
        return;
    };
    let serve = Serve::start();
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/rest.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([serve.kafka.as_str(), serve.http.as_str()])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK http"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The dashboard in headless Chromium (Debian's package, driven by playwright-core): the live
/// tail shows records a Kafka client produces and the chart updates. The screenshot is kept at
/// `target/test-artifacts/dashboard.png`.
#[test]
fn the_dashboard_shows_live_records_in_a_real_browser() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = std::path::Path::new(&chromium).exists()
        && root
            .join("tests/clients/node_modules/playwright-core")
            .exists();
    if !common::installed(ready, "chromium or playwright-core") {
        return;
    }
    let serve = Serve::start();
    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let out = std::process::Command::new("node")
        .arg(root.join("tests/clients/dashboard.js"))
        .args([serve.kafka.as_str(), serve.http.as_str()])
        .arg(&screenshot)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK dashboard"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&screenshot).expect("screenshot saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
}
