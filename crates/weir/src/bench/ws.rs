//! `weir bench ws`: many WebSocket subscribers of one topic while records are produced at a
//! paced rate over REST; measures delivery latency from the record's send to its receipt by
//! every subscriber, and (with `--broker-pid`) the broker's RSS and CPU.
//!
//! Each produced record's value starts with `t=<microseconds since the bench started>`; a
//! subscriber takes the first record of each message it receives (the oldest in it, so the
//! figure is that message's worst) and records now minus that. Every subscriber checks that
//! offsets arrive contiguous, and counts what it received.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use weir_server::websocket::{client_frame as masked, server_frame_at};

use super::histogram::Histogram;

pub const USAGE: &str = "usage: weir bench ws [options]

  --http         the broker's HTTP listener (env WEIR_HTTP; default 127.0.0.1:9080)
  --topic        topic, created with 1 partition if missing (weir-bench-ws)
  --subscribers  WebSocket connections, each subscribed to the whole topic (1000)
  --rate         records per second produced over REST, in batches every 10 ms (1000)
  --size         value bytes per record (100)
  --duration     seconds of production (20)
  --broker-pid   the broker's process: report its RSS and CPU over the run
  --json         one JSON object instead of the summary

Raise the open-file limit for this process and the broker first (ulimit -n).";

const VALUE_FLAGS: [&str; 7] = [
    "--http",
    "--topic",
    "--subscribers",
    "--rate",
    "--size",
    "--duration",
    "--broker-pid",
];
/// Subscribers connecting at once (the broker's listen backlog is 1024).
const CONNECT_WAVE: usize = 500;
/// Production goes out in a batch this often.
const PRODUCE_EVERY: Duration = Duration::from_millis(10);
/// After production stops, how long subscribers get to receive the rest.
const DRAIN: Duration = Duration::from_secs(5);
/// Records in one produce request at most.
const PRODUCE_BATCH_MAX: u64 = 5_000;
/// A subscriber's read size: grows while reads fill it (up to the max), shrinks when idle.
const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 256 * 1024;
/// OS threads, each a current_thread runtime with its share of the subscribers.
const CLIENT_THREADS: usize = 2;

struct Options {
    http: String,
    topic: String,
    subscribers: usize,
    rate: u64,
    size: usize,
    duration: Duration,
    broker_pid: Option<u32>,
    json: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        http: std::env::var("WEIR_HTTP").unwrap_or_else(|_| "127.0.0.1:9080".into()),
        topic: "weir-bench-ws".into(),
        subscribers: 1000,
        rate: 1000,
        size: 100,
        duration: Duration::from_secs(20),
        broker_pid: None,
        json: false,
    };
    fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
        value
            .parse()
            .map_err(|_| format!("{name}: {value:?} is not a number"))
    }
    for (name, value) in crate::flags::split(args, |n| !VALUE_FLAGS.contains(&n))? {
        match (name.as_str(), value.as_deref()) {
            ("--json", None) => o.json = true,
            ("--http", Some(v)) => o.http = v.into(),
            ("--topic", Some(v)) => o.topic = v.into(),
            ("--subscribers", Some(v)) => o.subscribers = number(&name, v)?,
            ("--rate", Some(v)) => o.rate = number(&name, v)?,
            ("--size", Some(v)) => o.size = number(&name, v)?,
            ("--duration", Some(v)) => o.duration = Duration::from_secs_f64(number(&name, v)?),
            ("--broker-pid", Some(v)) => o.broker_pid = Some(number(&name, v)?),
            _ => return Err(format!("unknown argument {name:?}")),
        }
    }
    if o.subscribers == 0 || o.rate == 0 || o.size < 24 {
        return Err("--subscribers and --rate must be positive, --size at least 24".into());
    }
    Ok(o)
}

/// One HTTP/1.1 request on its own connection; (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

#[derive(Default)]
struct Totals {
    /// Records received over all subscribers.
    records: AtomicU64,
    messages: AtomicU64,
    /// Offsets that did not follow the previous one, over all subscribers.
    gaps: AtomicU64,
    subscribed: AtomicU64,
    failed: AtomicU64,
}

pub fn run(args: &[String]) -> Result<(), (u8, String)> {
    let o = parse(args).map_err(|e| (2, format!("{e}\n\n{USAGE}")))?;
    let (status, body) = http(
        &o.http,
        "POST",
        "/topics",
        &format!("{{\"name\":{:?},\"partitions\":1}}", o.topic),
    )
    .map_err(|e| (1, e))?;
    if status != 201 && status != 409 {
        return Err((1, format!("creating {}: {status} {body}", o.topic)));
    }
    let base = Instant::now();
    let shared = Arc::new(Shared {
        http: o.http.clone(),
        topic: o.topic.clone(),
        base,
        totals: Totals::default(),
        latency: Mutex::new(Histogram::default()),
        stop: AtomicBool::new(false),
    });
    let (totals, latency, stop) = (&shared.totals, &shared.latency, &shared.stop);
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let share =
                o.subscribers / CLIENT_THREADS + usize::from(t < o.subscribers % CLIENT_THREADS);
            let shared = shared.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(subscribers(share, shared));
            })
        })
        .collect();
    // Wait for every subscription before producing.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while totals.subscribed.load(Ordering::Relaxed) + totals.failed.load(Ordering::Relaxed)
        < o.subscribers as u64
    {
        if std::time::Instant::now() > deadline {
            return Err((1, "subscribers did not all connect within 120 s".into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let connect_time = started.elapsed();
    let subscribed = totals.subscribed.load(Ordering::Relaxed);
    let before = o.broker_pid.map(broker_cpu_ticks);
    let rss_idle = o.broker_pid.map(rss_kib);
    // Production, paced: every 10 ms the records due by then, in one REST request.
    let mut produced = 0u64;
    let mut peak_rss = rss_idle.unwrap_or(0);
    let producing = Instant::now();
    let mut next_sample = Instant::now();
    let padding = "x".repeat(o.size.saturating_sub(22));
    let mut conn: Option<BufReader<TcpStream>> = None;
    while producing.elapsed() < o.duration {
        let due = (producing.elapsed().as_secs_f64() * o.rate as f64) as u64;
        if due > produced {
            // A producer that fell behind catches up in requests of bounded size.
            let n = (due - produced).min(PRODUCE_BATCH_MAX);
            let now = base.elapsed().as_micros();
            let mut body = String::from("{\"encoding\":\"utf8\",\"records\":[");
            for i in 0..n {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&format!("{{\"value\":\"t={now:020} {padding}\"}}"));
            }
            body.push_str("]}");
            post(&mut conn, &o.http, &o.topic, &body).map_err(|e| (1, e))?;
            produced += n;
        }
        if let (Some(pid), true) = (o.broker_pid, Instant::now() >= next_sample) {
            peak_rss = peak_rss.max(rss_kib(pid));
            next_sample = Instant::now() + Duration::from_millis(500);
        }
        std::thread::sleep(PRODUCE_EVERY);
    }
    let produce_time = producing.elapsed();
    let cpu = o.broker_pid.zip(before).map(|(pid, before)| {
        (broker_cpu_ticks(pid) - before) as f64 / 100.0 / produce_time.as_secs_f64() * 100.0
    });
    let expected = produced * subscribed;
    let drain_until = Instant::now() + DRAIN;
    while totals.records.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(pid) = o.broker_pid {
        peak_rss = peak_rss.max(rss_kib(pid));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let h = latency.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ms = |q: f64| h.quantile(q) as f64 / 1e6;
    let received = totals.records.load(Ordering::Relaxed);
    if o.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "ws", "subscribers": subscribed, "failed": totals.failed.load(Ordering::Relaxed),
                "connect_seconds": connect_time.as_secs_f64(),
                "rate": o.rate, "produced": produced, "expected_deliveries": expected,
                "delivered": received, "messages": totals.messages.load(Ordering::Relaxed),
                "gaps": totals.gaps.load(Ordering::Relaxed),
                "latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1e6},
                "broker_rss_idle_kib": rss_idle, "broker_rss_peak_kib": o.broker_pid.map(|_| peak_rss),
                "broker_cpu_percent": cpu,
            })
        );
    } else {
        println!(
            "ws: {subscribed} subscribers ({} failed) connected in {:.1} s",
            totals.failed.load(Ordering::Relaxed),
            connect_time.as_secs_f64()
        );
        println!(
            "produced {produced} records in {:.1} s ({} rec/s); delivered {received} of {expected} \
             ({:.2} %) in {} messages, {} gaps",
            produce_time.as_secs_f64(),
            o.rate,
            received as f64 * 100.0 / expected.max(1) as f64,
            totals.messages.load(Ordering::Relaxed),
            totals.gaps.load(Ordering::Relaxed)
        );
        println!(
            "delivery latency (per message, its oldest record): p50 {:.2} ms, p99 {:.2} ms, \
             p99.9 {:.2} ms, max {:.2} ms",
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1e6
        );
        if let (Some(idle), Some(cpu)) = (rss_idle, cpu) {
            println!(
                "broker: RSS {:.1} MiB with the subscribers connected, peak {:.1} MiB; CPU {cpu:.0} % of one core",
                idle as f64 / 1024.0,
                peak_rss as f64 / 1024.0
            );
        }
    }
    Ok(())
}

fn post(
    conn: &mut Option<BufReader<TcpStream>>,
    addr: &str,
    topic: &str,
    body: &str,
) -> Result<(), String> {
    for _ in 0..2 {
        let stream = match conn {
            Some(s) => s,
            None => conn.insert(BufReader::new(
                TcpStream::connect(addr).map_err(|e| e.to_string())?,
            )),
        };
        let request = format!(
            "POST /topics/{topic}/records HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.get_mut().write_all(request.as_bytes()).is_ok() {
            if let Ok(status) = read_status(stream) {
                if status == 200 {
                    return Ok(());
                }
                return Err(format!("produce answered {status}"));
            }
        }
        *conn = None;
    }
    Err("produce failed twice".into())
}

/// Reads one response on a keep-alive connection; its status.
fn read_status(stream: &mut BufReader<TcpStream>) -> Result<u16, String> {
    let mut status = None;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("closed".into());
        }
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if status.is_none() {
            status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
        } else if let Some(v) = line.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    status.ok_or_else(|| "no status".into())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (100 a second on Linux).
fn broker_cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start after ") ".
            let rest = s.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0)
}

/// What the bench's threads share.
struct Shared {
    http: String,
    topic: String,
    /// Send times are microseconds since this.
    base: Instant,
    totals: Totals,
    latency: Mutex<Histogram>,
    stop: AtomicBool,
}

async fn subscribers(n: usize, shared: Arc<Shared>) {
    let mut tasks = Vec::new();
    let mut connected = 0;
    while connected < n {
        let wave = (n - connected).min(CONNECT_WAVE / CLIENT_THREADS);
        let mut ready = Vec::new();
        for _ in 0..wave {
            let (tx, rx) = tokio::sync::oneshot::channel();
            ready.push(rx);
            tasks.push(tokio::task::spawn(subscriber(shared.clone(), tx)));
        }
        for rx in ready {
            let _ = rx.await;
        }
        connected += wave;
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn subscriber(shared: Arc<Shared>, ready: tokio::sync::oneshot::Sender<()>) {
    if let Err(e) = subscribe_and_read(&shared, ready).await {
        if shared.totals.failed.fetch_add(1, Ordering::Relaxed) < 3 {
            eprintln!("weir bench ws: a subscriber failed: {e}");
        }
    }
}

async fn subscribe_and_read(
    shared: &Shared,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), String> {
    let Shared {
        http,
        topic,
        base,
        totals,
        latency,
        stop,
    } = shared;
    let base = *base;
    let mut stream = tokio::net::TcpStream::connect(http)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: bench\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
              sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    // The handshake's answer.
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                return Err(String::from_utf8_lossy(&buf[..end]).into_owned());
            }
            buf.drain(..end + 4);
            break;
        }
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed during the handshake".into());
        }
    }
    let subscribe = format!("{{\"op\":\"subscribe\",\"topic\":{topic:?},\"encoding\":\"utf8\"}}");
    stream
        .write_all(&masked(0x81, subscribe.as_bytes()))
        .await
        .map_err(|e| e.to_string())?;
    let mut ready = Some(ready);
    let mut next_offset: Option<i64> = None;
    let mut read_size = READ_MIN;
    loop {
        // Whole frames in the buffer, then what is left moves to the front once.
        let mut pos = 0;
        while let Some((first, start, end)) = server_frame_at(&buf[pos..]) {
            let opcode = first & 0x0f;
            let payload = &buf[pos + start..pos + end];
            match opcode {
                0x1 if payload.starts_with(b"{\"type\":\"records\"") => {
                    on_records(payload, base, totals, latency, &mut next_offset);
                }
                0x1 => {
                    let text = String::from_utf8_lossy(payload);
                    if text.contains("\"type\":\"subscribed\"") {
                        totals.subscribed.fetch_add(1, Ordering::Relaxed);
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    } else if text.contains("\"type\":\"error\"") {
                        return Err(text.into_owned());
                    }
                }
                0x9 => {
                    let pong = masked(0x8A, payload);
                    stream.write_all(&pong).await.map_err(|e| e.to_string())?;
                }
                0x8 => return Err("closed by the broker".into()),
                _ => {}
            }
            pos += end;
        }
        buf.drain(..pos);
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if buf.capacity() > 2 * read_size && buf.len() < read_size {
            buf.shrink_to(read_size);
        }
        buf.reserve(read_size);
        let room = buf.capacity() - buf.len();
        match tokio::time::timeout(Duration::from_millis(200), stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return Err("connection ended".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(n)) if n * 4 >= room * 3 => read_size = (read_size * 2).min(READ_MAX),
            Ok(Ok(_)) | Err(_) => read_size = (read_size / 2).max(READ_MIN),
        }
    }
}

/// Reads a records message cheaply (the bench must cost less than what it measures): the
/// first record's offset and send time from the front, the last record's offset from the back;
/// the records in between are contiguous offsets of one partition.
fn on_records(
    text: &[u8],
    base: Instant,
    totals: &Totals,
    latency: &Mutex<Histogram>,
    next_offset: &mut Option<i64>,
) {
    const OFFSET: &[u8] = b"\"offset\":";
    const SENT: &[u8] = b"\"value\":\"t=";
    let received = base.elapsed().as_micros() as i64;
    totals.messages.fetch_add(1, Ordering::Relaxed);
    let number_at = |at: usize| -> Option<i64> {
        let digits = &text[at..];
        let end = digits
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
    };
    let find = |needle: &[u8]| text.windows(needle.len()).position(|w| w == needle);
    let rfind = |needle: &[u8]| text.windows(needle.len()).rposition(|w| w == needle);
    let first = find(OFFSET).and_then(|at| number_at(at + OFFSET.len()));
    let last = rfind(OFFSET).and_then(|at| number_at(at + OFFSET.len()));
    if let (Some(first), Some(last)) = (first, last) {
        if next_offset.is_some_and(|n| n != first) {
            totals.gaps.fetch_add(1, Ordering::Relaxed);
        }
        *next_offset = Some(last + 1);
        totals
            .records
            .fetch_add((last - first + 1).max(0) as u64, Ordering::Relaxed);
    }
    if let Some(sent) = find(SENT).and_then(|at| number_at(at + SENT.len())) {
        let micros = (received - sent).max(0) as u64;
        latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(micros * 1000);
    }
}
