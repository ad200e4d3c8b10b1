//! `weir bench`: load against a running broker, with throughput and latency percentiles.
//!
//! Two modes. The library mode ([`library`]) produces and consumes record by record through
//! `weir-client`, as an application would. The lean mode (`--lean`, [`lean`]) builds its own
//! RecordBatches and keeps several requests in flight per connection, so it measures the
//! broker rather than a client library. `e2e` runs library producers and consumers together
//! and measures each record from its intended send time to its receipt.

mod histogram;
mod lean;
mod library;
mod progress;
mod ws;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use histogram::Histogram;
use progress::Progress;
use weir_client::{Admin, Config};

pub const USAGE: &str = "usage: weir bench produce [--lean] [options]
       weir bench consume [--lean] [options]
       weir bench e2e [options]
       weir bench ws [options]   (WebSocket fan-out: weir bench ws --help)

  --bootstrap   broker address (env WEIR_BOOTSTRAP; default 127.0.0.1:9092)
  --topic       topic, created with --partitions if missing (weir-bench)
  --partitions  partitions of a created topic (1)
  --size        value bytes per record (100)
  --keys N      keys: none (default) or N distinct keys, cycled
  --count       records in all (10000000); --duration SECONDS stops earlier
  --producers   producer clients/connections (1); --consumers consumer clients (1)
  --batch       records per batch (1000): lean: per request; library: batch.num.messages
  --linger-ms   library: linger.ms (5)
  --inflight    lean: unanswered requests per connection; library: unacknowledged batches (4)
  --acks        1 or -1 (1; library -1 turns idempotence on)
  --rate        records per second in all, paced; latency counts from the intended send
                time, so a stalled broker cannot hide behind the bench's own waiting; lean
                produce also splits it where each request left (its own delay, the broker's)
  --fetch-bytes consume: max bytes per Fetch (32 MiB). Consume reads every partition from
                its start to the end seen when it starts
  --lean        the pipelined client that builds its own batches (produce and consume)
  --json        one JSON object instead of the summary

A progress bar is drawn on stderr when it is a terminal.";

/// The flags that take a value; the others (`--lean`, `--json`) are switches.
const VALUE_FLAGS: [&str; 15] = [
    "--bootstrap",
    "--topic",
    "--partitions",
    "--size",
    "--batch",
    "--count",
    "--producers",
    "--consumers",
    "--inflight",
    "--acks",
    "--rate",
    "--fetch-bytes",
    "--keys",
    "--linger-ms",
    "--duration",
];

#[derive(Debug, Clone)]
pub struct Options {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub size: usize,
    pub batch: usize,
    pub count: u64,
    pub producers: usize,
    pub consumers: usize,
    pub inflight: usize,
    pub acks: i16,
    pub rate: Option<f64>,
    pub json: bool,
    pub fetch_bytes: i32,
    pub lean: bool,
    pub keys: Option<u64>,
    pub linger_ms: u64,
    pub duration: Option<Duration>,
}

fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Options, String> {
    let mut options = Options {
        bootstrap: env("WEIR_BOOTSTRAP").unwrap_or_else(|| weir_client::BOOTSTRAP_DEFAULT.into()),
        topic: "weir-bench".to_string(),
        partitions: 1,
        size: 100,
        batch: 1000,
        count: 10_000_000,
        producers: 1,
        consumers: 1,
        inflight: 4,
        acks: 1,
        rate: None,
        json: false,
        fetch_bytes: 32 * 1024 * 1024,
        lean: false,
        keys: None,
        linger_ms: 5,
        duration: None,
    };
    fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
        value
            .parse()
            .map_err(|_| format!("{name}: {value:?} is not a number"))
    }
    // Unknown names take no value, so they are reported as unknown, not as missing one.
    let takes_value = |name: &str| VALUE_FLAGS.contains(&name);
    for (name, value) in crate::flags::split(args, |name| !takes_value(name))? {
        let name = name.as_str();
        match (name, value.as_deref()) {
            ("--lean", None) => options.lean = true,
            ("--json", None) => options.json = true,
            ("--bootstrap", Some(v)) => options.bootstrap = v.to_string(),
            ("--topic", Some(v)) => options.topic = v.to_string(),
            ("--partitions", Some(v)) => options.partitions = number(name, v)?,
            ("--size", Some(v)) => options.size = number(name, v)?,
            ("--batch", Some(v)) => options.batch = number(name, v)?,
            ("--count", Some(v)) => options.count = number(name, v)?,
            ("--producers", Some(v)) => options.producers = number(name, v)?,
            ("--consumers", Some(v)) => options.consumers = number(name, v)?,
            ("--inflight", Some(v)) => options.inflight = number(name, v)?,
            ("--acks", Some(v)) => options.acks = number(name, v)?,
            ("--rate", Some(v)) => options.rate = Some(number(name, v)?),
            ("--fetch-bytes", Some(v)) => options.fetch_bytes = number(name, v)?,
            ("--keys", Some(v)) => options.keys = Some(number(name, v)?),
            ("--linger-ms", Some(v)) => options.linger_ms = number(name, v)?,
            ("--duration", Some(v)) => {
                let seconds: f64 = number(name, v)?;
                if !seconds.is_finite() || seconds <= 0.0 {
                    return Err("--duration must be positive".to_string());
                }
                options.duration = Some(Duration::from_secs_f64(seconds));
            }
            _ => return Err(format!("unknown argument {name:?}")),
        }
    }
    if !matches!(options.acks, 1 | -1) {
        return Err("--acks must be 1 or -1 (latency needs answers)".to_string());
    }
    if options.fetch_bytes < 1 {
        return Err("--fetch-bytes must be at least 1".to_string());
    }
    if options.batch == 0
        || options.producers == 0
        || options.inflight == 0
        || options.consumers == 0
    {
        return Err(
            "--batch, --producers, --consumers and --inflight must be at least 1".to_string(),
        );
    }
    if options.keys == Some(0) {
        return Err("--keys must be at least 1 (leave it out for no keys)".to_string());
    }
    if options.lean && options.keys.is_some() {
        return Err("--keys is for the library mode; the lean batches carry no keys".to_string());
    }
    if !(1..=10_000).contains(&options.partitions) {
        return Err("--partitions must be between 1 and 10000".to_string());
    }
    if options.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        return Err("--rate must be positive".to_string());
    }
    Ok(options)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bench {
    Produce,
    Consume,
    E2e,
}

impl Bench {
    fn name(self) -> &'static str {
        match self {
            Bench::Produce => "produce",
            Bench::Consume => "consume",
            Bench::E2e => "e2e",
        }
    }
}

/// Runs `weir bench <args>`; `Err` carries (exit code, message).
pub fn run(args: &[String]) -> Result<(), (u8, String)> {
    let bench = match args.first().map(String::as_str) {
        Some("ws") if args.get(1).is_some_and(|a| a == "--help" || a == "-h") => {
            println!("{}", ws::USAGE);
            return Ok(());
        }
        Some("ws") => return ws::run(&args[1..]),
        Some("produce") => Bench::Produce,
        Some("consume") => Bench::Consume,
        Some("e2e") => Bench::E2e,
        Some(other) => return Err((2, format!("unknown bench {other:?}\n\n{USAGE}"))),
        None => return Err((2, USAGE.to_string())),
    };
    let options =
        parse(&args[1..], |v| std::env::var(v).ok()).map_err(|e| (2, format!("{e}\n\n{USAGE}")))?;
    if bench == Bench::E2e && options.lean {
        return Err((
            2,
            format!("e2e runs the library client; drop --lean\n\n{USAGE}"),
        ));
    }
    let partitions = lean::prepare_topic(&options.bootstrap, &options.topic, options.partitions)
        .map_err(|e| (1, e))?;
    // --duration: a timer raises `stop`; every client checks it.
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(duration) = options.duration {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            stop.store(true, Ordering::Relaxed);
        });
    }
    match bench {
        Bench::Consume => run_consume(&options, partitions, &stop),
        Bench::Produce => run_produce(&options, partitions, &stop),
        Bench::E2e => run_e2e(&options, partitions, &stop),
    }
}

/// Each producer's share of the rate: the pause between its requests (lean) or records.
fn pacing(options: &Options) -> Option<Duration> {
    options.rate.map(|rate| {
        let per_producer = rate / options.producers as f64;
        let per_send = if options.lean {
            per_producer / options.batch as f64
        } else {
            per_producer
        };
        Duration::from_secs_f64(1.0 / per_send)
    })
}

fn run_produce(options: &Options, partitions: i32, stop: &AtomicBool) -> Result<(), (u8, String)> {
    let progress = Progress::start("produce", options.count, options.duration);
    let interval = pacing(options);
    let base = Instant::now();
    let started = Instant::now();
    let results: Vec<Result<lean::Measured, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.producers)
            .map(|i| {
                let done = &progress.done;
                scope.spawn(move || {
                    if options.lean {
                        let requests = options.count.div_ceil(options.batch as u64);
                        let per_producer = requests.div_ceil(options.producers as u64);
                        lean::run_producer(
                            options,
                            partitions,
                            i as i32,
                            per_producer,
                            interval,
                            done,
                            stop,
                        )
                    } else {
                        let per_producer = options.count.div_ceil(options.producers as u64);
                        library::run_producer(options, i, per_producer, interval, base, done, stop)
                    }
                })
            })
            .collect();
        joined(handles, "a producer")
    });
    progress.finish();
    summarize(options, Bench::Produce, partitions, started, results, None)
}

fn run_consume(options: &Options, partitions: i32, stop: &AtomicBool) -> Result<(), (u8, String)> {
    let progress = Progress::start("consume", options.count, options.duration);
    let started = Instant::now();
    let results: Vec<Result<lean::Measured, String>> = if options.lean {
        let per_partition = options.count.div_ceil(partitions as u64);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..partitions)
                .map(|p| {
                    let done = &progress.done;
                    scope.spawn(move || lean::run_consumer(options, p, per_partition, done, stop))
                })
                .collect();
            joined(handles, "a consumer")
        })
    } else {
        let ends = offsets(options).map_err(|e| (1, e))?;
        let starts: Vec<(i32, i64)> = ends.iter().map(|(p, first, _)| (*p, *first)).collect();
        let available: u64 = ends
            .iter()
            .map(|(_, first, last)| (last - first) as u64)
            .sum();
        let groups = library::spread(&options.topic, &starts, options.consumers);
        let want = options.count.min(available);
        std::thread::scope(|scope| {
            let handles: Vec<_> = groups
                .into_iter()
                .map(|at| {
                    // Each consumer reads what its partitions hold, scaled down when
                    // --count asks for less than the topic holds.
                    let mine: u64 = at
                        .iter()
                        .filter_map(|(_, p, _)| ends.iter().find(|(q, _, _)| q == p))
                        .map(|(_, first, last)| (last - first) as u64)
                        .sum();
                    let share = if want >= available {
                        mine
                    } else {
                        (mine as u128 * want as u128).div_ceil(available.max(1) as u128) as u64
                    };
                    let done = &progress.done;
                    scope.spawn(move || {
                        let finished = move |read: u64| read >= share;
                        library::run_consumer(options, at, &finished, &|| true, None, done, stop)
                    })
                })
                .collect();
            joined(handles, "a consumer")
        })
    };
    progress.finish();
    summarize(options, Bench::Consume, partitions, started, results, None)
}

/// Library producers and consumers at once: consumers start at the current ends, so they see
/// exactly the records this run produces; latency is intended send → receipt.
fn run_e2e(options: &Options, partitions: i32, stop: &AtomicBool) -> Result<(), (u8, String)> {
    let ends = offsets(options).map_err(|e| (1, e))?;
    let starts: Vec<(i32, i64)> = ends.iter().map(|(p, _, last)| (*p, *last)).collect();
    let groups = library::spread(&options.topic, &starts, options.consumers);
    let progress = Progress::start("e2e", options.count, options.duration);
    let interval = pacing(options);
    let base = Instant::now();
    let started = Instant::now();
    let per_producer = options.count.div_ceil(options.producers as u64);
    // Consumers cannot know their share in advance: all stop once every acknowledged record
    // is in; until the producers are done, the target is unknown (u64::MAX).
    let received = AtomicU64::new(0);
    let target = AtomicU64::new(u64::MAX);
    let finished = |_: u64| received.load(Ordering::Relaxed) >= target.load(Ordering::Relaxed);
    let draining = || target.load(Ordering::Relaxed) != u64::MAX;
    let (produced, consumed) = std::thread::scope(|scope| {
        let consumers: Vec<_> = groups
            .into_iter()
            .map(|at| {
                let (finished, draining, received) = (&finished, &draining, &received);
                scope.spawn(move || {
                    library::run_consumer(
                        options,
                        at,
                        finished,
                        draining,
                        Some(base),
                        received,
                        stop,
                    )
                })
            })
            .collect();
        let producers: Vec<_> = (0..options.producers)
            .map(|i| {
                let done = &progress.done;
                scope.spawn(move || {
                    library::run_producer(options, i, per_producer, interval, base, done, stop)
                })
            })
            .collect();
        let produced = joined(producers, "a producer");
        let acknowledged: u64 = produced
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|m| m.records)
            .sum();
        target.store(acknowledged, Ordering::Relaxed);
        (produced, joined(consumers, "a consumer"))
    });
    progress.finish();
    let mut e2e = Histogram::default();
    let mut count = 0;
    for measured in consumed {
        let measured = measured.map_err(|e| (1, e))?;
        e2e.merge(&measured.latency);
        count += measured.records;
    }
    summarize(
        options,
        Bench::E2e,
        partitions,
        started,
        produced,
        Some((count, e2e)),
    )
}

/// A current-thread runtime for one client thread of the bench.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// (partition, earliest, latest) of the bench topic.
fn offsets(options: &Options) -> Result<Vec<(i32, i64, i64)>, String> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let admin = Admin::connect(&Config::new(options.bootstrap.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let described = admin
            .describe_topic(&options.topic)
            .await
            .map_err(|e| e.to_string())?;
        Ok(described
            .partitions
            .iter()
            .map(|p| (p.partition, p.earliest, p.latest))
            .collect())
    })
}

fn joined<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T, String>>>,
    who: &str,
) -> Vec<Result<T, String>> {
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| Err(format!("{who} panicked"))))
        .collect()
}

/// Merges what the clients measured, prints the report, and fails if any request did.
fn summarize(
    options: &Options,
    bench: Bench,
    partitions: i32,
    started: Instant,
    results: Vec<Result<lean::Measured, String>>,
    e2e: Option<(u64, Histogram)>,
) -> Result<(), (u8, String)> {
    let elapsed = started.elapsed().as_secs_f64();
    let mut latency = Histogram::default();
    let mut lateness = Histogram::default();
    let mut from_write = Histogram::default();
    let (mut records, mut requests, mut errors, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut first_error = None;
    for result in results {
        let measured = result.map_err(|e| (1, e))?;
        latency.merge(&measured.latency);
        lateness.merge(&measured.lateness);
        from_write.merge(&measured.from_write);
        records += measured.records;
        bytes += measured.bytes;
        requests += measured.requests;
        errors += measured.errors;
        first_error = first_error.or(measured.first_error);
    }
    let received = e2e.as_ref().map(|(n, _)| *n);
    if let Some((_, e2e)) = e2e {
        latency = e2e;
    }
    let report = Report {
        bench,
        bytes,
        options,
        partitions,
        records,
        requests,
        errors,
        received,
        seconds: elapsed,
        latency: &latency,
        paced: (lateness.count() > 0 && options.rate.is_some()).then_some(Paced {
            late: &lateness,
            from_write: &from_write,
        }),
    };
    if options.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    match first_error {
        Some(e) if errors > 0 => Err((1, format!("{errors} requests failed; first: {e}"))),
        _ if received.is_some_and(|n| n < records) => Err((
            1,
            format!(
                "{records} records acknowledged, {} received",
                received.unwrap_or(0)
            ),
        )),
        _ => Ok(()),
    }
}

struct Report<'a> {
    bench: Bench,
    /// Record bytes moved (produce: values; consume: fetched batches or values).
    bytes: u64,
    options: &'a Options,
    partitions: i32,
    records: u64,
    /// Lean: requests; library: records sent or read.
    requests: u64,
    errors: u64,
    /// e2e: records the consumers received.
    received: Option<u64>,
    seconds: f64,
    latency: &'a Histogram,
    /// Lean produce at a fixed rate: the latency split at the moment a request left.
    paced: Option<Paced<'a>>,
}

struct Paced<'a> {
    /// Intended send time to leaving: the producer's own delay.
    late: &'a Histogram,
    /// Leaving to answer: the broker, the sockets and the scheduler.
    from_write: &'a Histogram,
}

fn ms(h: &Histogram, q: f64) -> f64 {
    h.quantile(q) as f64 / 1e6
}

fn percentiles_json(h: &Histogram) -> serde_json::Value {
    serde_json::json!({
        "p50": ms(h, 0.5),
        "p99": ms(h, 0.99),
        "p999": ms(h, 0.999),
        "max": h.max() as f64 / 1e6,
    })
}

impl Report<'_> {
    fn ms(&self, q: f64) -> f64 {
        ms(self.latency, q)
    }

    fn mode(&self) -> &'static str {
        if self.options.lean {
            "lean"
        } else {
            "library"
        }
    }

    /// What one latency sample is.
    fn latency_of(&self) -> &'static str {
        match (self.bench, self.options.lean) {
            (Bench::E2e, _) => "per record, intended send to receipt",
            (Bench::Consume, true) => "per Fetch",
            (Bench::Consume, false) => "not measured",
            (Bench::Produce, true) => "per request",
            (Bench::Produce, false) => "per record, intended send to acknowledgement",
        }
    }

    /// What was run, in words.
    fn setup(&self) -> String {
        let o = self.options;
        let keys = o
            .keys
            .map_or("no keys".to_string(), |n| format!("{n} keys"));
        match (self.bench, o.lean) {
            (Bench::Consume, true) => format!(
                "{} partition(s), one connection each, fetches of up to {} bytes",
                self.partitions, o.fetch_bytes
            ),
            (Bench::Consume, false) => format!(
                "{} partition(s), {} consumer(s), fetch.max.bytes {}",
                self.partitions, o.consumers, o.fetch_bytes
            ),
            (_, lean) => format!(
                "{} B records, {keys}, batches of {}{}, {} producer(s), {} in flight each, \
                 acks={}, {} partition(s){}{}",
                o.size,
                o.batch,
                if lean {
                    String::new()
                } else {
                    format!(" (linger {} ms)", o.linger_ms)
                },
                o.producers,
                if lean {
                    format!("{} requests", o.inflight)
                } else {
                    format!("{} records", o.inflight * o.batch)
                },
                o.acks,
                self.partitions,
                if self.bench == Bench::E2e {
                    format!(", {} consumer(s)", o.consumers)
                } else {
                    String::new()
                },
                o.rate
                    .map_or(String::new(), |r| format!(", paced at {r:.0} records/s")),
            ),
        }
    }

    fn text(&self) -> String {
        let received = self
            .received
            .map_or(String::new(), |n| format!(", {n} received"));
        format!(
            "weir bench {} ({}): {} records{received}; {}\n\
             throughput  {:.0} records/s  {:.1} MB/s  ({} requests in {:.2} s, {} failed)\n\
             latency     p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({}; {} samples)",
            self.bench.name(),
            self.mode(),
            self.records,
            self.setup(),
            self.records as f64 / self.seconds,
            self.bytes as f64 / self.seconds / 1e6,
            self.requests,
            self.seconds,
            self.errors,
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.latency.max() as f64 / 1e6,
            self.latency_of(),
            self.latency.count(),
        ) + &self.paced.as_ref().map_or(String::new(), |p| {
            format!(
                "\nsplit       left late p50 {:.3} ms  p99 {:.3} ms; left to answer p50 {:.3} ms  \
                 p99 {:.3} ms  p99.9 {:.3} ms",
                ms(p.late, 0.5),
                ms(p.late, 0.99),
                ms(p.from_write, 0.5),
                ms(p.from_write, 0.99),
                ms(p.from_write, 0.999),
            )
        })
    }

    fn json(&self) -> String {
        let o = self.options;
        serde_json::json!({
            "bench": self.bench.name(),
            "mode": self.mode(),
            "records": self.records,
            "received": self.received,
            "bytes": self.bytes,
            "partitions": self.partitions,
            "size": o.size,
            "keys": o.keys,
            "batch": o.batch,
            "linger_ms": (!o.lean).then_some(o.linger_ms),
            "producers": o.producers,
            "consumers": o.consumers,
            "inflight": o.inflight,
            "acks": o.acks,
            "rate": o.rate,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "records_per_sec": (self.records as f64 / self.seconds).round(),
            "mb_per_sec": (self.bytes as f64 / self.seconds / 1e4).round() / 100.0,
            "requests": self.requests,
            "errors": self.errors,
            "latency_of": self.latency_of(),
            "latency_samples": self.latency.count(),
            "latency_ms": percentiles_json(self.latency),
            "left_late_ms": self.paced.as_ref().map(|p| percentiles_json(p.late)),
            "left_to_answer_ms": self.paced.as_ref().map(|p| percentiles_json(p.from_write)),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse_and_bad_ones_name_themselves() {
        let o = parse(
            &args(&[
                "--lean",
                "--size=1024",
                "--batch",
                "10",
                "--rate",
                "5000",
                "--acks=-1",
            ]),
            |v| (v == "WEIR_BOOTSTRAP").then(|| "10.0.0.1:9092".to_string()),
        )
        .expect("parses");
        assert_eq!((o.size, o.batch, o.acks), (1024, 10, -1));
        assert_eq!(o.rate, Some(5000.0));
        assert_eq!(o.bootstrap, "10.0.0.1:9092");
        for (bad, says) in [
            (&["--size", "x", "--lean"][..], "--size"),
            (&["--lean", "--acks", "0"][..], "--acks"),
            (&["--bogus"][..], "--bogus"),
            (&["--lean", "--json=yes"][..], "unknown argument \"--json\""),
            (&["--lean", "--keys", "10"][..], "--keys"),
            (&["--lean", "--rate", "0"][..], "--rate"),
        ] {
            let err = parse(&args(bad), |_| None).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
