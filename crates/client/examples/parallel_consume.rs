//! Consumes a topic with a `ParallelConsumer`, simulating `--work-ms` of I/O per record, and
//! prints records/s. `--plain` does the same work with a plain consumer, one record at a time,
//! for comparison.
//!
//! ```text
//! cargo run --release --example parallel_consume -- --bootstrap 127.0.0.1:9092 \
//!     --topic orders --group billing --work-ms 10 [--count N] [--seconds S] [--plain]
//!     [--in-flight N] [--from-beginning] [--log FILE]
//! ```
//!
//! `--log FILE` appends one line per processed record (`partition offset key`) before the
//! record counts as finished: the processing log the crash test checks.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_client::{Config, Consumer, ParallelConsumer, ParallelOptions};

struct Args {
    bootstrap: String,
    topic: String,
    group: String,
    work: Duration,
    count: Option<u64>,
    seconds: Option<u64>,
    plain: bool,
    in_flight: usize,
    from_beginning: bool,
    log: Option<String>,
}

const USAGE: &str = "usage: parallel_consume --bootstrap HOST:PORT --topic T --group G \
[--work-ms MS] [--count N] [--seconds S] [--plain] [--in-flight N] [--from-beginning] [--log FILE]";

fn args() -> Result<Args, String> {
    let mut a = Args {
        bootstrap: weir_client::BOOTSTRAP_DEFAULT.to_string(),
        topic: String::new(),
        group: String::new(),
        work: Duration::from_millis(10),
        count: None,
        seconds: None,
        plain: false,
        in_flight: ParallelOptions::default().in_flight_max,
        from_beginning: false,
        log: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--bootstrap" => a.bootstrap = value()?,
            "--topic" => a.topic = value()?,
            "--group" => a.group = value()?,
            "--work-ms" => a.work = Duration::from_millis(number(value()?)?),
            "--count" => a.count = Some(number(value()?)?),
            "--seconds" => a.seconds = Some(number(value()?)?),
            "--in-flight" => a.in_flight = number(value()?)? as usize,
            "--log" => a.log = Some(value()?),
            "--plain" => a.plain = true,
            "--from-beginning" => a.from_beginning = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.topic.is_empty() || a.group.is_empty() {
        return Err("--topic and --group are required".into());
    }
    Ok(a)
}

/// The processing log: one line per record, written before the record counts as finished.
struct Log(Mutex<std::fs::File>);

impl Log {
    fn record(&self, partition: i32, offset: i64, key: Option<&[u8]>) {
        let key = key.map(String::from_utf8_lossy).unwrap_or_default();
        let line = format!("{partition} {offset} {key}\n");
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(line.as_bytes())
            .expect("write the processing log");
    }
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("parallel_consume: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::new(args.bootstrap.clone());
    if args.from_beginning {
        config = config.set("auto.offset.reset", "earliest");
    }
    let log = match &args.log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            Some(Arc::new(Log(Mutex::new(file))))
        }
        None => None,
    };
    let processed = Arc::new(AtomicU64::new(0));
    // When the first record finished, in µs after `start` (0 until then): the rate leaves
    // out joining the group.
    let first = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let reporter = tokio::spawn(report(processed.clone(), start));
    let limit_reached = {
        let processed = processed.clone();
        let (count, seconds) = (args.count, args.seconds);
        async move {
            let deadline = seconds.map(|s| start + Duration::from_secs(s));
            loop {
                if count.is_some_and(|c| processed.load(SeqCst) >= c)
                    || deadline.is_some_and(|d| Instant::now() >= d)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let work = args.work;
    if args.plain {
        // The same work, one record at a time, committing once a second like the parallel
        // consumer does.
        let consumer = Consumer::subscribe(&config, &args.group, &[&args.topic]).await?;
        tokio::pin!(limit_reached);
        // Per partition, the next offset to commit.
        let mut uncommitted = std::collections::HashMap::new();
        let mut next_commit = Instant::now() + Duration::from_secs(1);
        loop {
            let message = tokio::select! {
                m = consumer.recv_timeout(Duration::from_millis(100)) => m?,
                () = &mut limit_reached => break,
            };
            if let Some(message) = message {
                tokio::time::sleep(work).await;
                if let Some(log) = &log {
                    log.record(message.partition, message.offset, message.key.as_deref());
                }
                mark(&first, &last, start);
                processed.fetch_add(1, SeqCst);
                uncommitted.insert(message.partition, message.offset + 1);
            }
            if Instant::now() >= next_commit {
                commit(&consumer, &args.topic, &mut uncommitted).await?;
                next_commit = Instant::now() + Duration::from_secs(1);
            }
        }
        commit(&consumer, &args.topic, &mut uncommitted).await?;
    } else {
        let options = ParallelOptions {
            in_flight_max: args.in_flight,
            ..ParallelOptions::default()
        };
        let consumer =
            ParallelConsumer::subscribe(&config, &args.group, &[&args.topic], options).await?;
        let handler = {
            let processed = processed.clone();
            let (first, last) = (first.clone(), last.clone());
            move |message: weir_client::Message| {
                let processed = processed.clone();
                let (first, last) = (first.clone(), last.clone());
                let log = log.clone();
                async move {
                    // The simulated I/O: a call to another service, say.
                    tokio::time::sleep(work).await;
                    if let Some(log) = &log {
                        log.record(message.partition, message.offset, message.key.as_deref());
                    }
                    mark(&first, &last, start);
                    processed.fetch_add(1, SeqCst);
                }
            }
        };
        let report = consumer.run(handler, limit_reached).await?;
        eprintln!("revoked partitions: {}", report.revoked);
    }
    reporter.abort();
    let n = processed.load(SeqCst);
    // From the first record's end to the last one's: the first took one `work` to finish.
    let first = Duration::from_micros(first.load(SeqCst)).saturating_sub(work);
    let last = Duration::from_micros(last.load(SeqCst));
    let secs = last.saturating_sub(first).as_secs_f64().max(1e-6);
    let mode = if args.plain {
        "plain consumer"
    } else {
        "parallel consumer"
    };
    println!(
        "{mode}: {n} records in {secs:.2} s: {:.0} records/s ({} ms of work each)",
        n as f64 / secs,
        work.as_millis()
    );
    Ok(())
}

async fn commit(
    consumer: &Consumer,
    topic: &str,
    next: &mut std::collections::HashMap<i32, i64>,
) -> weir_client::Result<()> {
    let offsets: Vec<_> = next
        .drain()
        .map(|(p, o)| (topic.to_string(), p, o))
        .collect();
    if offsets.is_empty() {
        return Ok(());
    }
    consumer.commit_offsets(&offsets).await
}

/// Notes when a record finished: the first such time and the latest.
fn mark(first: &AtomicU64, last: &AtomicU64, start: Instant) {
    let at = start.elapsed().as_micros().max(1) as u64;
    let _ = first.compare_exchange(0, at, SeqCst, SeqCst);
    last.fetch_max(at, SeqCst);
}

async fn report(processed: Arc<AtomicU64>, start: Instant) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = processed.load(SeqCst);
        eprintln!(
            "{:>5.1} s: {n} records, {} records/s",
            start.elapsed().as_secs_f64(),
            n - last
        );
        last = n;
    }
}
