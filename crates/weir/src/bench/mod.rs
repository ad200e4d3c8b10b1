//! `weir bench`: load against a running broker, with throughput and latency percentiles.
//!
//! Today: `weir bench produce --lean`, the pipelined producer that builds its own batches, and
//! `weir bench consume --lean`, which fetches them back counting batch headers ([`lean`]). The
//! library-client modes and e2e arrive with the client layer.

mod histogram;
mod lean;

use std::time::{Duration, Instant};

use histogram::Histogram;

pub const USAGE: &str = "usage: weir bench produce --lean [--bootstrap HOST:PORT] [--topic NAME]
                  [--partitions N] [--size BYTES] [--batch RECORDS] [--count RECORDS]
                  [--producers N] [--inflight N] [--acks 1|-1] [--rate RECORDS_PER_S] [--json]
       weir bench consume --lean [--bootstrap HOST:PORT] [--topic NAME] [--count RECORDS]
                  [--fetch-bytes BYTES] [--json]

  --bootstrap   broker address (env WEIR_BOOTSTRAP; default 127.0.0.1:9092)
  --topic       topic to produce to, created with --partitions if missing (weir-bench)
  --size        value bytes per record (100); --batch records per batch (1000)
  --count       records in all (10000000); --producers connections (1)
  --inflight    unanswered requests per connection (4)
  --acks        1 or -1 (1)
  --rate        records per second in all, paced; latency counts from the intended send time
  --fetch-bytes consume: max bytes per Fetch (32 MiB); every partition from its start to
                the end seen at the first fetch, one connection per partition
  --json        one JSON object instead of the summary";

/// The flags that take a value; the others (`--lean`, `--json`) are switches.
const VALUE_FLAGS: [&str; 11] = [
    "--bootstrap",
    "--topic",
    "--partitions",
    "--size",
    "--batch",
    "--count",
    "--producers",
    "--inflight",
    "--acks",
    "--rate",
    "--fetch-bytes",
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
    pub inflight: usize,
    pub acks: i16,
    pub rate: Option<f64>,
    pub json: bool,
    pub fetch_bytes: i32,
}

fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Options, String> {
    let mut options = Options {
        bootstrap: env("WEIR_BOOTSTRAP").unwrap_or_else(|| "127.0.0.1:9092".to_string()),
        topic: "weir-bench".to_string(),
        partitions: 1,
        size: 100,
        batch: 1000,
        count: 10_000_000,
        producers: 1,
        inflight: 4,
        acks: 1,
        rate: None,
        json: false,
        fetch_bytes: 32 * 1024 * 1024,
    };
    let mut lean = false;
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
            ("--lean", None) => lean = true,
            ("--json", None) => options.json = true,
            ("--bootstrap", Some(v)) => options.bootstrap = v.to_string(),
            ("--topic", Some(v)) => options.topic = v.to_string(),
            ("--partitions", Some(v)) => options.partitions = number(name, v)?,
            ("--size", Some(v)) => options.size = number(name, v)?,
            ("--batch", Some(v)) => options.batch = number(name, v)?,
            ("--count", Some(v)) => options.count = number(name, v)?,
            ("--producers", Some(v)) => options.producers = number(name, v)?,
            ("--inflight", Some(v)) => options.inflight = number(name, v)?,
            ("--acks", Some(v)) => options.acks = number(name, v)?,
            ("--rate", Some(v)) => options.rate = Some(number(name, v)?),
            ("--fetch-bytes", Some(v)) => options.fetch_bytes = number(name, v)?,
            _ => return Err(format!("unknown argument {name:?}")),
        }
    }
    if !lean {
        return Err("only the lean mode exists yet: add --lean".to_string());
    }
    if !matches!(options.acks, 1 | -1) {
        return Err("--acks must be 1 or -1 (latency needs answers)".to_string());
    }
    if options.fetch_bytes < 1 {
        return Err("--fetch-bytes must be at least 1".to_string());
    }
    if options.batch == 0 || options.producers == 0 || options.inflight == 0 {
        return Err("--batch, --producers and --inflight must be at least 1".to_string());
    }
    if !(1..=10_000).contains(&options.partitions) {
        return Err("--partitions must be between 1 and 10000".to_string());
    }
    if options.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        return Err("--rate must be positive".to_string());
    }
    Ok(options)
}

/// Runs `weir bench <args>`; `Err` carries (exit code, message).
pub fn run(args: &[String]) -> Result<(), (u8, String)> {
    let consume = match args.first().map(String::as_str) {
        Some("produce") => false,
        Some("consume") => true,
        Some(other) => return Err((2, format!("unknown bench {other:?}\n\n{USAGE}"))),
        None => return Err((2, USAGE.to_string())),
    };
    let options =
        parse(&args[1..], |v| std::env::var(v).ok()).map_err(|e| (2, format!("{e}\n\n{USAGE}")))?;
    if consume {
        return run_consume(&options);
    }
    let partitions = lean::prepare_topic(&options.bootstrap, &options.topic, options.partitions)
        .map_err(|e| (1, e))?;
    let requests = options.count.div_ceil(options.batch as u64);
    let per_producer = requests.div_ceil(options.producers as u64);
    let interval = options.rate.map(|rate| {
        // Each producer sends its share of the rate, one batch per request.
        let requests_per_s = rate / options.batch as f64 / options.producers as f64;
        Duration::from_secs_f64(1.0 / requests_per_s)
    });
    let started = Instant::now();
    let results: Vec<Result<lean::Measured, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.producers)
            .map(|i| {
                let options = &options;
                scope.spawn(move || {
                    lean::run_producer(options, partitions, i as i32, per_producer, interval)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a producer panicked".into()))
            })
            .collect()
    });
    summarize(&options, "produce", partitions, started, results)
}

fn run_consume(options: &Options) -> Result<(), (u8, String)> {
    let partitions = lean::prepare_topic(&options.bootstrap, &options.topic, options.partitions)
        .map_err(|e| (1, e))?;
    let per_partition = options.count.div_ceil(partitions as u64);
    let started = Instant::now();
    let results: Vec<Result<lean::Measured, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..partitions)
            .map(|p| scope.spawn(move || lean::run_consumer(options, p, per_partition)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a consumer panicked".into()))
            })
            .collect()
    });
    summarize(options, "consume", partitions, started, results)
}

/// Merges what the connections measured, prints the report, and fails if any request did.
fn summarize(
    options: &Options,
    what: &'static str,
    partitions: i32,
    started: Instant,
    results: Vec<Result<lean::Measured, String>>,
) -> Result<(), (u8, String)> {
    let elapsed = started.elapsed().as_secs_f64();
    let mut latency = Histogram::default();
    let (mut records, mut requests, mut errors, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut first_error = None;
    for result in results {
        let measured = result.map_err(|e| (1, e))?;
        latency.merge(&measured.latency);
        records += measured.records;
        bytes += measured.bytes;
        requests += measured.requests;
        errors += measured.errors;
        first_error = first_error.or(measured.first_error);
    }
    let report = Report {
        what,
        bytes,
        options,
        partitions,
        records,
        requests,
        errors,
        seconds: elapsed,
        latency: &latency,
    };
    if options.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    match first_error {
        Some(e) if errors > 0 => Err((1, format!("{errors} requests failed; first: {e}"))),
        _ => Ok(()),
    }
}

struct Report<'a> {
    what: &'static str,
    /// Record bytes moved (produce: values; consume: fetched batches).
    bytes: u64,
    options: &'a Options,
    partitions: i32,
    records: u64,
    requests: u64,
    errors: u64,
    seconds: f64,
    latency: &'a Histogram,
}

impl Report<'_> {
    fn ms(&self, q: f64) -> f64 {
        self.latency.quantile(q) as f64 / 1e6
    }

    /// What was run, in words.
    fn setup(&self) -> String {
        let o = self.options;
        if self.what == "consume" {
            return format!(
                "{} partition(s), one connection each, fetches of up to {} bytes",
                self.partitions, o.fetch_bytes
            );
        }
        format!(
            "{} B records, batches of {}, {} producer(s), {} in flight each, acks={}, \
             {} partition(s){}",
            o.size,
            o.batch,
            o.producers,
            o.inflight,
            o.acks,
            self.partitions,
            o.rate
                .map_or(String::new(), |r| format!(", paced at {r:.0} records/s")),
        )
    }

    fn text(&self) -> String {
        format!(
            "weir bench {} (lean): {} records; {}\n\
             throughput  {:.0} records/s  {:.1} MB/s  ({} requests in {:.2} s, {} failed)\n\
             latency     p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (per request)",
            self.what,
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
        )
    }

    fn json(&self) -> String {
        let o = self.options;
        format!(
            "{{\"bench\":\"{}\",\"mode\":\"lean\",\"records\":{},\"bytes\":{},\
             \"partitions\":{},\"size\":{},\"batch\":{},\"producers\":{},\"inflight\":{},\
             \"acks\":{},\"rate\":{},\"seconds\":{:.3},\"records_per_sec\":{:.0},\
             \"mb_per_sec\":{:.2},\"requests\":{},\"errors\":{},\"latency_samples\":{},\
             \"latency_ms\":{{\"p50\":{:.4},\"p99\":{:.4},\"p999\":{:.4},\"max\":{:.4}}}}}",
            self.what,
            self.records,
            self.bytes,
            self.partitions,
            o.size,
            o.batch,
            o.producers,
            o.inflight,
            o.acks,
            o.rate.map_or("null".to_string(), |r| format!("{r:.0}")),
            self.seconds,
            self.records as f64 / self.seconds,
            self.bytes as f64 / self.seconds / 1e6,
            self.requests,
            self.errors,
            self.latency.count(),
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.latency.max() as f64 / 1e6,
        )
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
            (&[][..], "--lean"),
            (&["--lean", "--rate", "0"][..], "--rate"),
        ] {
            let err = parse(&args(bad), |_| None).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
