//! The WebSocket gateway against a real `weir serve`, with a WebSocket client written here
//! (masked frames, as a browser sends) and kcat as the Kafka producer: live push within a
//! second in order, catch-up from an offset, one feed per shard, produce over the socket,
//! a slow subscriber paused at its offset without growing memory, ping/pong and dead-client
//! eviction, and bad frames closed with their RFC 6455 codes while others carry on.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ConfigFile, Serve};
use serde_json::{json, Value};
use weir_server::websocket::{client_frame as masked, server_frame_at};

struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
}

enum Got {
    Text(Value),
    Close(u16, String),
    Ping,
    Pong,
    /// The connection ended without a close frame.
    Eof,
}

impl Ws {
    fn open(serve: &Serve) -> Ws {
        let mut stream = TcpStream::connect(&serve.http).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream
            .write_all(
                b"GET /ws HTTP/1.1\r\nhost: test\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                  sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
            )
            .expect("handshake");
        let mut ws = Ws {
            stream,
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(ws.fill(), "closed during the handshake");
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        ws.buf.drain(..end);
        ws
    }

    fn fill(&mut self) -> bool {
        common::read_more(&mut self.stream, &mut self.buf)
    }

    fn send(&mut self, message: &Value) {
        let frame = masked(0x81, message.to_string().as_bytes());
        self.stream.write_all(&frame).expect("send");
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// The next frame from the server.
    fn frame(&mut self) -> Got {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
            }
            if let Some((first, at, end)) = server_frame_at(&self.buf) {
                let payload = self.buf[at..end].to_vec();
                self.buf.drain(..end);
                assert_ne!(first & 0x80, 0, "server frames are whole");
                return match first & 0x0f {
                    0x1 => Got::Text(serde_json::from_slice(&payload).expect("JSON")),
                    0x8 => Got::Close(
                        u16::from_be_bytes([payload[0], payload[1]]),
                        String::from_utf8_lossy(&payload[2..]).into_owned(),
                    ),
                    0x9 => Got::Ping,
                    0xA => Got::Pong,
                    op => panic!("unexpected opcode {op}"),
                };
            }
            if !self.fill() {
                return Got::Eof;
            }
        }
    }

    /// The next JSON message, answering pings on the way.
    fn message(&mut self) -> Value {
        loop {
            match self.frame() {
                Got::Text(v) => return v,
                Got::Ping => self.send_raw(&masked(0x8A, b"weir")),
                Got::Pong => {}
                Got::Close(code, reason) => panic!("closed: {code} {reason}"),
                Got::Eof => panic!("connection ended"),
            }
        }
    }

    fn subscribe(&mut self, request: Value) -> Value {
        self.send(&request);
        let answer = self.message();
        assert_eq!(answer["type"], "subscribed", "{answer}");
        answer
    }

    /// Reads records messages until `n` records arrived; (partition, record) in arrival order.
    fn records(&mut self, n: usize) -> Vec<(i64, Value)> {
        let mut out = Vec::new();
        while out.len() < n {
            let message = self.message();
            assert_eq!(message["type"], "records", "{message}");
            let p = message["partition"].as_i64().expect("partition");
            for r in message["records"].as_array().expect("records") {
                out.push((p, r.clone()));
            }
        }
        out
    }
}

fn rest(serve: &Serve, method: &str, path: &str, body: &Value) -> Value {
    let mut s = TcpStream::connect(&serve.http).expect("connect");
    let body = body.to_string();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (_, body) = text.split_once("\r\n\r\n").expect("response");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn create(serve: &Serve, topic: &str, partitions: i32) {
    let created = rest(
        serve,
        "POST",
        "/topics",
        &json!({"name": topic, "partitions": partitions}),
    );
    assert_eq!(created["partitions"], partitions, "{created}");
}

/// Produces `lines` ("key:value") to a partition with kcat, a real Kafka client.
fn kcat_produce(serve: &Serve, topic: &str, partition: i32, lines: &[String]) {
    let mut child = Command::new("kcat")
        .args([
            "-b",
            &serve.kafka,
            "-t",
            topic,
            "-p",
            &partition.to_string(),
            "-K",
            ":",
            "-P",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("kcat");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[test]
fn a_subscriber_gets_a_kafka_clients_records_within_a_second_in_order() {
    if !common::kcat_available() {
        return;
    }
    let serve = Serve::start();
    create(&serve, "live", 2);
    let mut ws = Ws::open(&serve);
    let answer = ws.subscribe(json!({"op": "subscribe", "topic": "live", "encoding": "utf8"}));
    assert_eq!(
        answer["partitions"],
        json!([{"partition": 0, "offset": 0}, {"partition": 1, "offset": 0}])
    );
    for round in 0..3 {
        let lines: Vec<Vec<String>> = (0..2)
            .map(|p| (0..50).map(|i| format!("k{p}:r{round}-{p}-{i}")).collect())
            .collect();
        kcat_produce(&serve, "live", 0, &lines[0]);
        kcat_produce(&serve, "live", 1, &lines[1]);
        let got = ws.records(100);
        let received = now_ms();
        for p in 0..2 {
            let mine: Vec<&Value> = got
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, r)| r)
                .collect();
            let values: Vec<&str> = mine.iter().filter_map(|r| r["value"].as_str()).collect();
            let expected: Vec<String> = lines[p as usize]
                .iter()
                .map(|l| l.split_once(':').expect("kv").1.to_string())
                .collect();
            assert_eq!(values, expected, "partition {p}, in order");
            let offsets: Vec<i64> = mine.iter().filter_map(|r| r["offset"].as_i64()).collect();
            let first = round * 50;
            assert_eq!(offsets, (first..first + 50).collect::<Vec<_>>());
            assert_eq!(mine[0]["key"], format!("k{p}"));
            // Stamped by the producer when it sent them: here within the same second.
            let stamped = mine
                .last()
                .and_then(|r| r["timestamp"].as_i64())
                .expect("timestamp");
            assert!(received - stamped < 1000, "{} ms late", received - stamped);
        }
    }
}

#[test]
fn subscribers_catch_up_from_an_offset_and_share_one_feed_per_shard() {
    let serve = Serve::start();
    create(&serve, "shared", 1);
    let produce = |values: std::ops::Range<i32>| {
        let records: Vec<Value> = values.map(|i| json!({"value": format!("v{i}")})).collect();
        let answer = rest(
            &serve,
            "POST",
            "/topics/shared/records",
            &json!({"encoding": "utf8", "records": records}),
        );
        assert!(answer["offsets"].is_array(), "{answer}");
    };
    produce(0..30);
    let mut subscribers: Vec<Ws> = (0..20).map(|_| Ws::open(&serve)).collect();
    for (i, ws) in subscribers.iter_mut().enumerate() {
        let from = if i == 0 { json!("earliest") } else { json!(10) };
        ws.subscribe(
            json!({"op": "subscribe", "topic": "shared", "from": from, "encoding": "utf8"}),
        );
    }
    produce(30..40);
    for (i, ws) in subscribers.iter_mut().enumerate() {
        let start = if i == 0 { 0 } else { 10 };
        let got = ws.records(40 - start);
        let values: Vec<String> = got
            .iter()
            .map(|(_, r)| r["value"].as_str().expect("v").to_string())
            .collect();
        let expected: Vec<String> = (start..40).map(|i| format!("v{i}")).collect();
        assert_eq!(values, expected, "subscriber {i}");
    }
    // Twenty subscribers of one partition: at most one feed per shard reads it.
    let metrics = common::metrics(&serve);
    let feeds: u64 = metric(&metrics, "weir_ws_feeds");
    assert!((1..=2).contains(&feeds), "{feeds} feeds");
    assert_eq!(metric(&metrics, "weir_ws_subscriptions"), 20);
    drop(subscribers);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&common::metrics(&serve), "weir_ws_feeds") > 0 {
        assert!(
            Instant::now() < deadline,
            "feeds outlived their subscribers"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn records_produced_over_the_socket_are_answered_with_their_offsets() {
    let serve = Serve::start();
    create(&serve, "in", 1);
    let mut ws = Ws::open(&serve);
    ws.subscribe(json!({"op": "subscribe", "topic": "in", "encoding": "utf8"}));
    ws.send(
        &json!({"op": "produce", "ref": "r1", "topic": "in", "encoding": "utf8",
        "records": [{"key": "a", "value": "one", "headers": [{"key": "h", "value": "x"}]},
                    {"value": "two"}]}),
    );
    let mut produced = None;
    let mut records = Vec::new();
    while produced.is_none() || records.len() < 2 {
        let m = ws.message();
        match m["type"].as_str() {
            Some("produced") => produced = Some(m),
            Some("records") => records.extend(m["records"].as_array().expect("records").clone()),
            _ => panic!("{m}"),
        }
    }
    let produced = produced.expect("answer");
    assert_eq!(produced["ref"], "r1");
    assert_eq!(
        produced["offsets"],
        json!([{"partition": 0, "offset": 0}, {"partition": 0, "offset": 1}])
    );
    assert_eq!(records[0]["headers"], json!([{"key": "h", "value": "x"}]));
    assert_eq!(records[1]["value"], "two");
    ws.send(&json!({"op": "produce", "ref": 2, "topic": "nope", "records": [{"value": null}]}));
    let error = ws.message();
    assert_eq!(
        (
            error["type"].as_str(),
            error["error"].as_str(),
            &error["ref"]
        ),
        (Some("error"), Some("unknown_topic"), &json!(2))
    );
}

#[test]
fn a_subscriber_that_stops_reading_is_paused_at_its_offset_without_growing_memory() {
    let config = ConfigFile::new(
        "ws-slow",
        "ws_feed_buffer_bytes = 65536\nws_fetch_max_bytes = 65536\n",
    );
    let serve = Serve::start_with(&config);
    create(&serve, "flood", 1);
    let mut slow = Ws::open(&serve);
    slow.subscribe(json!({"op": "subscribe", "topic": "flood", "encoding": "base64"}));
    let mut healthy = Ws::open(&serve);
    healthy.subscribe(json!({"op": "subscribe", "topic": "flood", "encoding": "base64"}));
    // 40 MB of records while `slow` reads nothing, after 4 MB to warm up the allocator (what
    // it keeps for requests of this size is not what a backlog would cost).
    let value = "x".repeat(400);
    let per_request = 250;
    let requests = 400;
    let mut rss_before = 0;
    for request in 0..requests {
        if request == 40 {
            rss_before = common::rss_kib(serve.child.id());
        }
        let records: Vec<Value> = (0..per_request).map(|_| json!({"value": value})).collect();
        let answer = rest(
            &serve,
            "POST",
            "/topics/flood/records",
            &json!({"encoding": "utf8", "records": records}),
        );
        assert!(answer["offsets"].is_array());
        // The healthy subscriber keeps up.
        let got = healthy.records(per_request);
        assert_eq!(got.len(), per_request);
    }
    let total = per_request * requests;
    let rss_after = common::rss_kib(serve.child.id());
    let grew = rss_after.saturating_sub(rss_before);
    // Holding the slow subscriber's backlog would take 40 MB (53 MB as base64).
    assert!(grew < 8 * 1024, "RSS grew by {grew} KiB");
    // It resumes at its offset: every record, in order, none lost.
    let got = slow.records(total);
    let offsets: Vec<i64> = got
        .iter()
        .filter_map(|(_, r)| r["offset"].as_i64())
        .collect();
    assert_eq!(offsets, (0..total as i64).collect::<Vec<_>>());
    let metrics = common::metrics(&serve);
    assert!(
        metric(&metrics, "weir_ws_subscribers_lagged_total") >= 1,
        "the slow one fell behind its feed and read on its own"
    );
    eprintln!("RSS grew by {grew} KiB while a subscriber read nothing");
}

#[test]
fn a_client_that_answers_no_pings_is_closed_and_one_that_does_is_not() {
    let config = ConfigFile::new("ws-ping", "ws_ping_interval_ms = 200\n");
    let serve = Serve::start_with(&config);
    let mut dead = Ws::open(&serve);
    let mut alive = Ws::open(&serve);
    // The live one answers its pings on a thread of its own.
    let alive = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            match alive.frame() {
                Got::Ping => alive.send_raw(&masked(0x8A, b"weir")),
                Got::Close(code, reason) => panic!("live client closed: {code} {reason}"),
                Got::Eof => panic!("live client's connection ended"),
                _ => {}
            }
        }
        alive
    });
    let started = Instant::now();
    // The dead one reads frames but never answers.
    let closed = loop {
        match dead.frame() {
            Got::Ping | Got::Pong | Got::Text(_) => {}
            Got::Close(code, reason) => break (code, reason),
            Got::Eof => panic!("closed without a close frame"),
        }
    };
    assert_eq!(closed.0, 1001, "{}", closed.1);
    assert!(started.elapsed() < Duration::from_secs(3));
    // Meanwhile the live one answered its pings and is still served.
    let mut alive = alive.join().expect("live client");
    create(&serve, "p", 1);
    let answer = alive.subscribe(json!({"op": "subscribe", "topic": "p"}));
    assert_eq!(answer["topic"], "p");
    let metrics = common::metrics(&serve);
    assert!(
        metrics.contains("weir_ws_closed_total{reason=\"dead\"} 1"),
        "{metrics}"
    );
}

#[test]
fn bad_frames_close_with_their_code_and_bad_messages_get_errors() {
    let serve = Serve::start();
    create(&serve, "t", 1);
    let mut healthy = Ws::open(&serve);
    healthy.subscribe(json!({"op": "subscribe", "topic": "t", "encoding": "utf8"}));
    let mut n = 0;
    let mut check_healthy = |healthy: &mut Ws| {
        let answer = rest(
            &serve,
            "POST",
            "/topics/t/records",
            &json!({"encoding": "utf8", "records": [{"value": "ok"}]}),
        );
        assert!(answer["offsets"].is_array());
        let got = healthy.records(1);
        assert_eq!(got[0].1["offset"], n);
        n += 1;
    };
    // Messages that are wrong get an error and the connection stays.
    let mut c = Ws::open(&serve);
    for (message, error) in [
        ("{not json", "bad_request"),
        ("[1]", "bad_request"),
        (r#"{"op":"dance"}"#, "bad_request"),
        (r#"{"op":"subscribe","topic":"nope"}"#, "unknown_topic"),
        (
            r#"{"op":"subscribe","topic":"t","partitions":[5]}"#,
            "unknown_partition",
        ),
        (
            r#"{"op":"subscribe","topic":"t","from":99}"#,
            "offset_out_of_range",
        ),
        (
            r#"{"op":"subscribe","topic":"t","group":""}"#,
            "bad_request",
        ),
        (
            r#"{"op":"subscribe","topic":"t","group":"g","from":5}"#,
            "bad_request",
        ),
        (
            r#"{"op":"ack","topic":"t","partition":0,"offset":1}"#,
            "bad_request",
        ),
        (
            r#"{"op":"produce","topic":"t","records":[{"value":"***"}]}"#,
            "bad_request",
        ),
    ] {
        c.send_raw(&masked(0x81, message.as_bytes()));
        let answer = c.message();
        assert_eq!(
            (answer["type"].as_str(), answer["error"].as_str()),
            (Some("error"), Some(error)),
            "{message}: {answer}"
        );
        check_healthy(&mut healthy);
    }
    // Frames that break the protocol close the connection with their code.
    let mut unmasked = vec![0x81, 2];
    unmasked.extend(b"{}");
    let mut huge = vec![0x81, 0x80 | 127];
    huge.extend((1u64 << 40).to_be_bytes());
    huge.extend([0; 4]);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (unmasked, 1002),
        (masked(0x82, b"{}"), 1003),
        (masked(0x81, &[0xff, 0xfe]), 1007),
        (huge, 1009),
        (masked(0x80, b"continuation"), 1002),
        (masked(0x83, b""), 1002),
    ];
    for (frame, code) in cases {
        let mut bad = Ws::open(&serve);
        bad.send_raw(&frame);
        match bad.frame() {
            Got::Close(got, reason) => assert_eq!(got, code, "{reason}"),
            _ => panic!("expected a close {code}"),
        }
        check_healthy(&mut healthy);
    }
    // A client's close is answered with a close.
    let mut leaving = Ws::open(&serve);
    leaving.send_raw(&masked(0x88, &1000u16.to_be_bytes()));
    assert!(matches!(leaving.frame(), Got::Close(1000, _)));
    // Handshakes that are wrong get HTTP errors.
    for (headers, status) in [
        ("upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n", "400"),
        ("upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 8\r\n", "426"),
        ("connection: close\r\n", "426"),
        ("upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\norigin: http://evil.example\r\n", "403"),
    ] {
        let mut s = TcpStream::connect(&serve.http).expect("connect");
        write!(s, "GET /ws HTTP/1.1\r\nhost: t\r\n{headers}\r\n").expect("write");
        let mut text = String::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let _ = s.read_to_string(&mut text);
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        check_healthy(&mut healthy);
    }
}

/// Reads messages until one of `kind` comes, keeping the records that arrive on the way.
fn until(ws: &mut Ws, kind: &str, records: &mut Vec<(i64, Value)>) -> Value {
    loop {
        let m = ws.message();
        if m["type"] == kind {
            return m;
        }
        assert_eq!(m["type"], "records", "{m}");
        let p = m["partition"].as_i64().expect("partition");
        for r in m["records"].as_array().expect("records") {
            records.push((p, r.clone()));
        }
    }
}

#[test]
fn a_group_member_over_websocket_resumes_from_its_commits_and_shares_partitions() {
    let config = ConfigFile::new(
        "ws-group",
        "group_initial_rebalance_delay_ms = 0\nws_group_session_timeout_ms = 6000\n",
    );
    let serve = Serve::start_with(&config);
    create(&serve, "g", 2);
    let records: Vec<Value> = (0..20)
        .map(|i| json!({"value": format!("v{i}"), "partition": i % 2}))
        .collect();
    rest(
        &serve,
        "POST",
        "/topics/g/records",
        &json!({"encoding": "utf8", "records": records}),
    );

    let mut first = Ws::open(&serve);
    first.send(&json!({"op": "subscribe", "topic": "g", "group": "billing", "from": "earliest", "encoding": "utf8"}));
    let mut got = Vec::new();
    assert_eq!(
        until(&mut first, "subscribed", &mut got)["group"],
        "billing"
    );
    let assigned = until(&mut first, "assigned", &mut got);
    assert_eq!(
        assigned["partitions"],
        json!([{"partition": 0, "offset": 0}, {"partition": 1, "offset": 0}])
    );
    while got.len() < 20 {
        let m = first.message();
        for r in m["records"].as_array().expect("records") {
            got.push((m["partition"].as_i64().expect("p"), r.clone()));
        }
    }
    first.send(&json!({"op": "ack", "ref": "a0", "topic": "g", "partition": 0, "offset": 4}));
    let acked = first.message();
    assert_eq!(
        (
            acked["type"].as_str(),
            acked["ref"].as_str(),
            &acked["offset"]
        ),
        (Some("acked"), Some("a0"), &json!(4))
    );
    first.send(&json!({"op": "ack", "topic": "g", "partition": 1, "offset": 6}));
    assert_eq!(first.message()["type"], "acked");
    // The commits are the group's: Kafka tools and REST see them.
    let offsets = rest(&serve, "GET", "/groups/billing/offsets", &Value::Null);
    assert_eq!(offsets["lag"], 5 + 3, "{offsets}");
    drop(first);

    // Reconnect: the new member starts where the commits say.
    let mut second = Ws::open(&serve);
    second.send(&json!({"op": "subscribe", "topic": "g", "group": "billing", "encoding": "utf8"}));
    let mut resumed = Vec::new();
    until(&mut second, "subscribed", &mut resumed);
    let assigned = until(&mut second, "assigned", &mut resumed);
    assert_eq!(
        assigned["partitions"],
        json!([{"partition": 0, "offset": 5}, {"partition": 1, "offset": 7}])
    );
    while resumed.len() < 8 {
        let m = second.message();
        for r in m["records"].as_array().expect("records") {
            resumed.push((m["partition"].as_i64().expect("p"), r.clone()));
        }
    }
    let mut firsts: Vec<(i64, i64)> = (0..2)
        .map(|p| {
            (
                p,
                resumed
                    .iter()
                    .find(|(q, _)| *q == p)
                    .map(|(_, r)| r["offset"].as_i64().expect("o"))
                    .expect("records"),
            )
        })
        .collect();
    firsts.sort();
    assert_eq!(firsts, vec![(0, 5), (1, 7)]);

    // A second member: the group rebalances and each gets one partition.
    let mut third = Ws::open(&serve);
    third.send(&json!({"op": "subscribe", "topic": "g", "group": "billing", "encoding": "utf8"}));
    let mut ignored = Vec::new();
    until(&mut third, "subscribed", &mut ignored);
    let theirs = until(&mut third, "assigned", &mut ignored);
    let ours = until(&mut second, "assigned", &mut ignored);
    let mut split: Vec<i64> = [&theirs, &ours]
        .iter()
        .flat_map(|a| {
            a["partitions"]
                .as_array()
                .expect("partitions")
                .iter()
                .map(|p| p["partition"].as_i64().expect("p"))
        })
        .collect();
    split.sort();
    assert_eq!(split, vec![0, 1], "{theirs} {ours}");
    let described = rest(&serve, "GET", "/groups/billing", &Value::Null);
    assert_eq!(
        described["members"].as_array().map(Vec::len),
        Some(2),
        "{described}"
    );
}

/// A WebSocket member and a Kafka consumer (confluent-kafka) share one group: the range
/// assignment gives each one of the topic's two partitions.
#[test]
fn a_websocket_member_and_a_kafka_consumer_share_a_group() {
    let Some(python) = common::python() else {
        return;
    };
    let config = ConfigFile::new(
        "ws-mixed",
        "group_initial_rebalance_delay_ms = 0\nws_group_session_timeout_ms = 6000\n",
    );
    let serve = Serve::start_with(&config);
    create(&serve, "mixed", 2);
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/clients/group_member.py");
    let mut kafka = Command::new(python)
        .arg(script)
        .args([serve.kafka.as_str(), "mixed", "shared", "6"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python consumer");
    let stdout = kafka.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    // The Kafka consumer joins first and takes both partitions.
    let first = lines.next().expect("a line").expect("read");
    assert_eq!(first, "ASSIGNED 0,1");
    let mut ws = Ws::open(&serve);
    ws.send(&json!({"op": "subscribe", "topic": "mixed", "group": "shared", "encoding": "utf8"}));
    let mut ignored = Vec::new();
    until(&mut ws, "subscribed", &mut ignored);
    let assigned = until(&mut ws, "assigned", &mut ignored);
    let ours: Vec<i64> = assigned["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter_map(|p| p["partition"].as_i64())
        .collect();
    let mut theirs = String::new();
    for line in lines.by_ref() {
        let line = line.expect("read");
        if line == "DONE" {
            break;
        }
        if let Some(list) = line.strip_prefix("ASSIGNED ") {
            theirs = list.to_string();
        }
    }
    let theirs: Vec<i64> = theirs.split(',').filter_map(|p| p.parse().ok()).collect();
    assert_eq!(ours.len(), 1, "{assigned}");
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    let mut all = [ours[0], theirs[0]];
    all.sort();
    assert_eq!(all, [0, 1]);
    let _ = kafka.wait();
}

#[test]
fn a_subscription_ends_with_an_error_when_its_topic_is_deleted() {
    let serve = Serve::start();
    create(&serve, "gone", 1);
    let mut ws = Ws::open(&serve);
    ws.subscribe(json!({"op": "subscribe", "topic": "gone", "encoding": "utf8"}));
    let mut s = TcpStream::connect(&serve.http).expect("connect");
    write!(
        s,
        "DELETE /topics/gone HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .expect("delete");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let ended = ws.message();
    assert_eq!(
        (ended["type"].as_str(), ended["error"].as_str()),
        (Some("error"), Some("subscription_ended")),
        "{ended}"
    );
    assert_eq!(ended["topic"], "gone");
    // The connection is still served.
    create(&serve, "next", 1);
    assert_eq!(
        ws.subscribe(json!({"op": "subscribe", "topic": "next"}))["topic"],
        "next"
    );
}
