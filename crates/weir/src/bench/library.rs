//! The library-client modes: `weir-client` (librdkafka) producing and consuming record by
//! record, as an application would. Produce latency is per record, from its intended send time
//! to its acknowledgement; e2e latency from the intended send time, carried in the first 8
//! bytes of the value, to the consumer receiving it.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_client::{Config, Consumer, Producer, Record};

use super::lean::Measured;
use super::Options;

/// Bytes of the value that carry the send time (nanoseconds since the run's start).
pub const STAMP_BYTES: usize = 8;

/// The librdkafka settings that the bench's flags map to.
fn producer_config(options: &Options) -> Config {
    let config = Config::new(options.bootstrap.clone())
        .client_id("weir-bench")
        .set("linger.ms", options.linger_ms.to_string())
        .set("batch.num.messages", options.batch.to_string())
        .set(
            "batch.size",
            (options.batch * (options.size + 64))
                .clamp(1, 2_000_000_000)
                .to_string(),
        );
    if options.acks == 1 {
        // acks=1 is not idempotent (librdkafka requires acks=all for that).
        config.set("enable.idempotence", "false").set("acks", "1")
    } else {
        config.set("acks", "all")
    }
}

/// One producer client: `records` records (or until `stop`), keys as `--keys` says, at most
/// `--inflight` × `--batch` unacknowledged, paced by `interval` per record when a rate is set.
pub fn run_producer(
    options: &Options,
    index: usize,
    records: u64,
    interval: Option<Duration>,
    base: Instant,
    done: &Arc<AtomicU64>,
    stop: &AtomicBool,
) -> Result<Measured, String> {
    let runtime = super::runtime()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let producer = Producer::connect(&producer_config(options))
            .await
            .map_err(|e| e.to_string())?;
        let measured = Rc::new(RefCell::new(Measured::default()));
        let window = Arc::new(tokio::sync::Semaphore::new(
            options.inflight * options.batch,
        ));
        let mut value = vec![b'w'; options.size.max(STAMP_BYTES)];
        let mut key_buffer = String::new();
        let started = Instant::now();
        for i in 0..records {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let intended = match interval {
                Some(gap) => {
                    let at = started + gap.mul_f64(i as f64);
                    tokio::time::sleep_until(at.into()).await;
                    at
                }
                None => Instant::now(),
            };
            let permit = window
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let stamp = intended.duration_since(base).as_nanos() as u64;
            value[..STAMP_BYTES].copy_from_slice(&stamp.to_be_bytes());
            // One key buffer, rewritten per record: no allocation per record.
            let key = options.keys.map(|n| {
                key_buffer.clear();
                let k = (i * options.producers as u64 + index as u64) % n;
                let _ = write!(key_buffer, "key-{k}");
                key_buffer.as_str()
            });
            let mut record =
                Record::new(&options.topic).value(&value[..options.size.max(STAMP_BYTES)]);
            record.key = key.map(str::as_bytes);
            let pending = loop {
                match producer.enqueue(&record).await {
                    Ok(pending) => break pending,
                    Err(e)
                        if e.error_code()
                            == Some(weir_client::rdkafka::error::RDKafkaErrorCode::QueueFull) =>
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            };
            let (measured, done) = (measured.clone(), done.clone());
            tokio::task::spawn_local(async move {
                let answer = pending.await;
                let elapsed = intended.elapsed();
                let mut m = measured.borrow_mut();
                m.requests += 1;
                match answer {
                    Ok(_) => {
                        m.records += 1;
                        m.latency.record(elapsed.as_nanos() as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        m.errors += 1;
                        m.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                drop(permit);
            });
        }
        // Every permit back: every record answered.
        let _all = window
            .acquire_many((options.inflight * options.batch) as u32)
            .await
            .map_err(|e| e.to_string())?;
        let mut measured = std::mem::take(&mut *measured.borrow_mut());
        measured.bytes = measured.records * options.size as u64;
        Ok(measured)
    })
}

/// How long an e2e consumer waits for a record it knows was acknowledged before it fails.
pub const E2E_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One consumer client reading `at` (topic, partition, offset) until `finished(records it
/// read)` says so (or `stop`), counting into `done`. With `stamped`, each value's first bytes
/// give its send time and the latency recorded is send → receipt.
pub fn run_consumer(
    options: &Options,
    at: Vec<(String, i32, i64)>,
    finished: &(dyn Fn(u64) -> bool + Sync),
    draining: &(dyn Fn() -> bool + Sync),
    stamped: Option<Instant>,
    done: &AtomicU64,
    stop: &AtomicBool,
) -> Result<Measured, String> {
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let config = Config::new(options.bootstrap.clone())
            .client_id("weir-bench")
            .set("fetch.max.bytes", options.fetch_bytes.to_string())
            // Retention may have removed the head since the offsets were read.
            .set("auto.offset.reset", "earliest");
        let consumer = Consumer::assign_partitions(&config, &at)
            .await
            .map_err(|e| e.to_string())?;
        let mut measured = Measured::default();
        // (received by all consumers, when that last changed) and when draining began.
        let mut progress = (done.load(Ordering::Relaxed), Instant::now());
        let mut drain_started: Option<Instant> = None;
        // e2e consumers ignore `stop`: they drain every record the producers had acknowledged.
        let drains = stamped.is_some();
        while !finished(measured.records) {
            if !drains && stop.load(Ordering::Relaxed) {
                break;
            }
            let message = match consumer.recv_timeout(Duration::from_millis(200)).await {
                Ok(Some(message)) => message,
                // Idle: fail only once the producers are done and no consumer has received
                // anything for the timeout since.
                Ok(None) if drains && draining() => {
                    let total = done.load(Ordering::Relaxed);
                    let since = *drain_started.get_or_insert_with(Instant::now);
                    if total != progress.0 {
                        progress = (total, Instant::now());
                    }
                    if progress.1.max(since).elapsed() <= E2E_DRAIN_TIMEOUT {
                        continue;
                    }
                    return Err(format!(
                        "no record for {E2E_DRAIN_TIMEOUT:?} with {} received in all",
                        done.load(Ordering::Relaxed)
                    ));
                }
                Ok(None) => continue,
                Err(e) => return Err(e.to_string()),
            };
            let value = message.value.unwrap_or_default();
            if let Some(base) = stamped {
                if let Some(stamp) = value.get(..STAMP_BYTES) {
                    let mut sent = [0u8; STAMP_BYTES];
                    sent.copy_from_slice(stamp);
                    let now = base.elapsed().as_nanos() as u64;
                    measured
                        .latency
                        .record(now.saturating_sub(u64::from_be_bytes(sent)));
                }
            }
            measured.records += 1;
            measured.requests += 1;
            measured.bytes += value.len() as u64;
            done.fetch_add(1, Ordering::Relaxed);
        }
        Ok(measured)
    })
}

/// Splits `partitions` round-robin over `consumers` connections.
pub fn spread(
    topic: &str,
    partitions: &[(i32, i64)],
    consumers: usize,
) -> Vec<Vec<(String, i32, i64)>> {
    let mut out = vec![Vec::new(); consumers.max(1)];
    for (i, (partition, offset)) in partitions.iter().enumerate() {
        out[i % consumers.max(1)].push((topic.to_string(), *partition, *offset));
    }
    out.retain(|v| !v.is_empty());
    out
}
