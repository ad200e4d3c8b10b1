//! Connection limits and timeouts against a real `weir serve`: connections over
//! `max_connections` / `max_connections_per_ip` are refused cleanly while the clients already
//! connected carry on; idle connections and connections that stall mid-request (slowloris) are
//! closed after their timeouts while a healthy client is served throughout.

mod common;

use common::rss_kib;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Broker {
    child: Child,
    kafka: SocketAddr,
    http: SocketAddr,
    dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `weir serve` with `settings` as its config file.
fn start(name: &str, settings: &str) -> Broker {
    let dir = std::env::temp_dir().join(format!("weir-limits-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("weir.toml");
    std::fs::write(&config, settings).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--kafka-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (mut kafka, mut http) = (None, None);
    while kafka.is_none() || http.is_none() {
        let line = lines.next().expect("weir exited").expect("read");
        if let Some(a) = line.strip_prefix("weir: kafka listening on ") {
            kafka = Some(a.parse().expect("kafka address"));
        }
        if let Some(a) = line.strip_prefix("weir: http listening on ") {
            http = Some(a.parse().expect("http address"));
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Broker {
        child,
        kafka: kafka.unwrap(),
        http: http.unwrap(),
        dir,
    }
}

/// ApiVersions v0, by hand: size, api key 18, version 0, correlation id, null client id.
fn api_versions_frame(correlation_id: i32) -> Vec<u8> {
    let mut frame = 10i32.to_be_bytes().to_vec();
    frame.extend_from_slice(&18i16.to_be_bytes());
    frame.extend_from_slice(&0i16.to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    frame
}

/// One ApiVersions round trip; `None` if the connection is closed or silent.
fn ask(stream: &mut TcpStream, correlation_id: i32) -> Option<Duration> {
    let start = Instant::now();
    stream.write_all(&api_versions_frame(correlation_id)).ok()?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).ok()?;
    assert_eq!(
        body[..4],
        correlation_id.to_be_bytes(),
        "answer to another request"
    );
    assert_eq!(body[4..6], [0, 0], "ApiVersions error code");
    Some(start.elapsed())
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
}

/// True if the broker closed the connection (EOF or reset) within the read timeout.
fn closed_by_broker(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

fn metric(http: SocketAddr, line_start: &str) -> u64 {
    let mut s = TcpStream::connect(http).expect("http");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("get");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in:\n{text}"))
}

/// Opens `limit + 1` connections: the last one is closed unanswered, the others keep working,
/// and closing one makes room again.
fn refuses_one_over(broker: &Broker, limit: usize, reason: &str) {
    let mut open: Vec<TcpStream> = (0..limit).map(|_| connect(broker.kafka)).collect();
    for (i, s) in open.iter_mut().enumerate() {
        assert!(
            ask(s, i as i32).is_some(),
            "connection {i} within the limit"
        );
    }
    let mut over = connect(broker.kafka);
    assert!(
        ask(&mut over, 99).is_none(),
        "the connection over the limit was served"
    );
    for (i, s) in open.iter_mut().enumerate() {
        assert!(
            ask(s, 100 + i as i32).is_some(),
            "connection {i} noticed the refusal"
        );
    }
    let refused = format!("weir_connections_refused_total{{reason=\"{reason}\"}} ");
    assert_eq!(metric(broker.http, &refused), 1);
    drop(open.pop());
    // The broker counts the closed connection out when it sees the end of it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect(broker.kafka);
        if ask(&mut again, 200).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn connections_over_the_limits_are_refused_and_the_others_carry_on() {
    let total = start("total", "max_connections = 5\n");
    refuses_one_over(&total, 5, "max_connections");
    drop(total);
    let per_ip = start("per-ip", "max_connections_per_ip = 3\n");
    refuses_one_over(&per_ip, 3, "max_connections_per_ip");
}

#[test]
fn idle_and_stalled_connections_are_closed_while_a_healthy_client_is_served() {
    const STALLED: usize = 1_000;
    const IDLE: usize = 20;
    let broker = start(
        "timeouts",
        "connections_max_idle_ms = 1500\nrequest_complete_timeout_ms = 1000\n",
    );
    let mut healthy = connect(broker.kafka);
    let mut idle: Vec<TcpStream> = (0..IDLE).map(|_| connect(broker.kafka)).collect();
    // Slowloris: each connection starts a request and then sends one more byte of it every
    // 300 ms, never finishing it.
    let frame = api_versions_frame(7);
    let mut stalled: Vec<Option<TcpStream>> =
        (0..STALLED).map(|_| Some(connect(broker.kafka))).collect();
    let start = Instant::now();
    let mut sent = 0;
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    while start.elapsed() < Duration::from_secs(4) {
        if sent < frame.len() - 1 {
            for s in stalled.iter_mut() {
                if let Some(stream) = s {
                    if stream.write_all(&frame[sent..=sent]).is_err() {
                        *s = None;
                    }
                }
            }
            sent += 1;
        }
        // The healthy client keeps asking throughout.
        for _ in 0..6 {
            let took = ask(&mut healthy, answered).expect("the healthy client was cut off");
            slowest = slowest.max(took);
            answered += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Every stalled and idle connection has been closed by the broker by now.
    let stalled_closed = stalled
        .iter_mut()
        .map(|s| s.as_mut().is_none_or(closed_by_broker))
        .filter(|&closed| closed)
        .count();
    let idle_closed = idle
        .iter_mut()
        .map(closed_by_broker)
        .filter(|&closed| closed)
        .count();
    eprintln!(
        "{stalled_closed} of {STALLED} stalled and {idle_closed} of {IDLE} idle connections \
         closed; the healthy client made {answered} requests, slowest {slowest:?}"
    );
    assert_eq!(stalled_closed, STALLED);
    assert_eq!(idle_closed, IDLE);
    assert!(answered >= 40);
    let timed_out = |reason: &str| {
        metric(
            broker.http,
            &format!("weir_connections_timed_out_total{{reason=\"{reason}\"}} "),
        )
    };
    assert_eq!(timed_out("request_incomplete"), STALLED as u64);
    assert_eq!(timed_out("idle"), IDLE as u64);
}

#[test]
fn a_client_that_stops_reading_is_paused_then_closed_while_others_carry_on() {
    let broker = start("slow-reader", "connections_max_idle_ms = 2000\n");
    let mut healthy = connect(broker.kafka);
    assert!(ask(&mut healthy, 0).is_some());
    let rss_before = rss_kib(broker.child.id());
    // 100,000 pipelined ApiVersions (about 17 MB of answers) from a client that never reads:
    // the broker answers until the socket buffers are full, then stops reading it.
    let greedy = TcpStream::connect(broker.kafka).expect("connect");
    let mut writer = greedy.try_clone().expect("clone");
    let frames: Vec<u8> = (0..100_000).flat_map(api_versions_frame).collect();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&frames);
    });
    let paused = |reason: &str| {
        metric(
            broker.http,
            &format!("weir_connections_paused{{reason=\"{reason}\"}} "),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while paused("slow_reader") == 0 {
        assert!(
            Instant::now() < deadline,
            "the greedy client was never paused"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // While it is paused, and until it is closed, the healthy client is served.
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    let stalled = || {
        metric(
            broker.http,
            "weir_connections_timed_out_total{reason=\"response_stalled\"} ",
        )
    };
    while stalled() == 0 {
        assert!(
            Instant::now() < deadline,
            "the greedy client was never closed"
        );
        let took = ask(&mut healthy, answered + 1).expect("the healthy client was cut off");
        slowest = slowest.max(took);
        answered += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let grown = rss_kib(broker.child.id()).saturating_sub(rss_before);
    eprintln!(
        "paused, then closed; healthy client: {answered} requests, slowest {slowest:?}; \
         broker RSS grew {grown} KiB"
    );
    assert!(answered >= 20, "{answered}");
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    // One answer at a time is held for a client that does not read: memory did not follow
    // the 17 MB it asked for.
    assert!(grown < 8 * 1024, "RSS grew {grown} KiB");
    assert_eq!(paused("slow_reader"), 0);
    drop(greedy);
    sender.join().expect("sender");
}
