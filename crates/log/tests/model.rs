//! Seeded property test: random appends, reads, rolls, retention, start-offset moves and
//! reopens (clean and unclean) against an in-memory model that applies the documented rules.
//! Reads must return byte-identical batches; segment layout must match the model's.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::{Rng, TempDir};
use weir_log::{batch, Flusher, Log, LogConfig, LogError, LogOptions, ManualClock};

#[derive(Clone)]
struct Batch {
    base: i64,
    last: i64,
    max_ts: i64,
    bytes: Vec<u8>,
}

struct Segment {
    base: i64,
    len: u64,
    max_ts: i64,
    roll_base: i64,
    batches: Vec<Batch>,
}

impl Segment {
    fn new(base: i64, now: i64) -> Segment {
        Segment {
            base,
            len: 0,
            max_ts: -1,
            roll_base: now,
            batches: Vec::new(),
        }
    }

    fn next(&self) -> i64 {
        self.batches.last().map_or(self.base, |b| b.last + 1)
    }
}

struct Model {
    config: LogConfig,
    segments: Vec<Segment>,
    start: i64,
}

impl Model {
    fn end(&self) -> i64 {
        self.segments.last().expect("segments").next()
    }

    fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    fn append(&mut self, mut bytes: Vec<u8>, now: i64) -> Batch {
        let size = bytes.len() as u64;
        let active = self.segments.last().expect("segments");
        if !active.batches.is_empty()
            && (active.len + size > self.config.segment_bytes
                || now - active.roll_base >= self.config.segment_ms)
        {
            let base = active.next();
            self.segments.push(Segment::new(base, now));
        }
        let active = self.segments.last_mut().expect("segments");
        let base = active.next();
        batch::stamp_base_offset(&mut bytes, base);
        let header = batch::validate(&bytes).expect("generated batch is valid");
        if active.batches.is_empty() && header.max_timestamp >= 0 {
            active.roll_base = header.max_timestamp;
        }
        active.max_ts = active.max_ts.max(header.max_timestamp);
        active.len += size;
        let b = Batch {
            base,
            last: header.last_offset(),
            max_ts: header.max_timestamp,
            bytes,
        };
        active.batches.push(b.clone());
        b
    }

    fn roll(&mut self, now: i64) {
        let active = self.segments.last().expect("segments");
        if !active.batches.is_empty() {
            let base = active.next();
            self.segments.push(Segment::new(base, now));
        }
    }

    fn retention(&mut self, now: i64) {
        let mut size = self.size();
        let mut deleted = false;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let below = oldest.next() <= self.start;
            let expired = self.config.retention_ms >= 0
                && oldest.max_ts < now.saturating_sub(self.config.retention_ms);
            let oversize = self.config.retention_bytes >= 0
                && size - oldest.len >= self.config.retention_bytes as u64;
            if !(below || expired || oversize) {
                break;
            }
            size -= oldest.len;
            self.segments.remove(0);
            deleted = true;
        }
        if deleted {
            self.start = self.start.max(self.segments[0].base);
        }
    }

    fn advance(&mut self, offset: i64) {
        if offset <= self.start {
            return;
        }
        while self.segments.len() > 1 && self.segments[0].next() <= offset {
            self.segments.remove(0);
        }
        self.start = offset;
    }

    /// Expected read: the batch holding `offset` and following whole batches of its segment.
    fn read(&self, offset: i64, max_bytes: u64) -> (Vec<u8>, i64, i64) {
        if offset == self.end() {
            return (Vec::new(), offset, offset);
        }
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.base <= offset)
            .expect("segment");
        let first = seg
            .batches
            .iter()
            .position(|b| b.last >= offset)
            .expect("batch");
        let mut bytes = seg.batches[first].bytes.clone();
        let mut next = seg.batches[first].last + 1;
        for b in &seg.batches[first + 1..] {
            if (bytes.len() + b.bytes.len()) as u64 > max_bytes {
                break;
            }
            bytes.extend_from_slice(&b.bytes);
            next = b.last + 1;
        }
        (bytes, seg.batches[first].base, next)
    }

    fn max_timestamp(&self) -> Option<i64> {
        let live = || {
            self.segments
                .iter()
                .flat_map(|s| &s.batches)
                .filter(|b| b.last >= self.start)
        };
        let max = live().map(|b| b.max_ts).max()?;
        live().find(|b| b.max_ts == max).map(|b| b.base)
    }

    fn find_timestamp(&self, ts: i64) -> Option<i64> {
        self.segments
            .iter()
            .flat_map(|s| &s.batches)
            .find(|b| b.last >= self.start && b.max_ts >= ts)
            .map(|b| b.base)
    }
}

fn random_config(rng: &mut Rng) -> LogConfig {
    LogConfig {
        segment_bytes: rng.range(4 << 10, 64 << 10),
        segment_ms: if rng.chance(50) {
            rng.range(2_000, 60_000) as i64
        } else {
            i64::MAX
        },
        index_interval_bytes: rng.range(0, 8 << 10),
        retention_bytes: if rng.chance(50) {
            rng.range(16 << 10, 256 << 10) as i64
        } else {
            -1
        },
        retention_ms: if rng.chance(50) {
            rng.range(10_000, 120_000) as i64
        } else {
            -1
        },
        flush_messages: if rng.chance(30) { 1 } else { i64::MAX },
        ..LogConfig::default()
    }
}

fn open(dir: &std::path::Path, config: &LogConfig, clock: &Arc<ManualClock>) -> (Log, Flusher) {
    let flusher = Flusher::start(1).expect("flusher");
    let options = LogOptions {
        config: config.clone(),
        clock: clock.clone(),
        flusher: flusher.clone(),
    };
    (Log::open(dir, options).expect("open"), flusher)
}

fn check(log: &Log, model: &Model, rng: &mut Rng, step: usize) {
    assert_eq!(log.log_end_offset(), model.end(), "step {step}: log end");
    assert_eq!(
        log.log_start_offset(),
        model.start,
        "step {step}: log start"
    );
    let bases: Vec<i64> = model.segments.iter().map(|s| s.base).collect();
    assert_eq!(log.segment_bases(), bases, "step {step}: segments");
    assert_eq!(log.size_bytes(), model.size(), "step {step}: size");
    for _ in 0..3 {
        let offset = rng.range(model.start as u64, model.end() as u64) as i64;
        let max_bytes = rng.range(1, 6_000);
        let (bytes, first, next) = model.read(offset, max_bytes);
        let copy = log.read_copy(offset, max_bytes).expect("read_copy");
        assert_eq!(
            (copy.first_offset, copy.next_offset),
            (first, next),
            "step {step}: read_copy({offset}, {max_bytes}) offsets"
        );
        assert!(
            copy.bytes == bytes,
            "step {step}: read_copy({offset}) bytes differ"
        );
        let slice = log.read(offset, max_bytes).expect("read");
        let mut region = vec![0u8; slice.region.len as usize];
        slice
            .region
            .file
            .read_exact_at(&mut region, slice.region.position)
            .expect("pread region");
        assert!(
            region == bytes,
            "step {step}: read({offset}) region differs"
        );
        assert_eq!((slice.first_offset, slice.next_offset), (first, next));
    }
    let below = model.start - 1;
    if below >= 0 {
        assert!(matches!(
            log.read(below, 100),
            Err(LogError::OffsetOutOfRange { .. })
        ));
    }
    assert!(matches!(
        log.read(model.end() + 1, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng::new(seed);
    let dir = TempDir::new("model");
    let config = random_config(&mut rng);
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let (mut log, mut flusher) = open(dir.path(), &config, &clock);
    let mut model = Model {
        config: config.clone(),
        segments: vec![weir_log_model_first_segment(&clock)],
        start: 0,
    };
    let mut sequence = 0;
    for step in 0..steps {
        let now = clock_now(&clock);
        match rng.range(0, 99) {
            0..=54 => {
                let records = rng.range(1, 8) as usize;
                let ts = now + rng.range(0, 2_000) as i64 - 1_000;
                sequence += 1;
                let bytes = common::batch(&mut rng, records, 400, ts, 1, sequence);
                let expected = model.append(bytes.clone(), now);
                let mut wire = bytes;
                let appended = log.append(&mut wire).expect("append");
                assert_eq!(wire, expected.bytes, "step {step}: stamped bytes");
                assert_eq!(
                    (appended.base_offset, appended.last_offset),
                    (expected.base, expected.last)
                );
                assert_eq!(appended.append_time_ms, now);
                if rng.chance(20) {
                    appended.durable.wait().expect("durable");
                }
            }
            55..=59 => {
                // A bad batch changes nothing.
                let mut bytes = common::batch(&mut rng, 2, 50, now, 1, 0);
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                let end = log.log_end_offset();
                assert!(matches!(
                    log.append(&mut bytes),
                    Err(LogError::InvalidBatch { .. })
                ));
                assert_eq!(log.log_end_offset(), end);
            }
            60..=69 => clock.advance(rng.range(0, 5_000) as i64),
            70..=74 => {
                log.roll().expect("roll");
                model.roll(now);
            }
            75..=79 => {
                let before = model.segments.len();
                let describe = format!(
                    "step {step}: now {now}, start {} (log {}), size {}, log segments {:?}, segments {:?}",
                    model.start,
                    log.log_start_offset(),
                    model.size(),
                    log.segment_bases(),
                    model
                        .segments
                        .iter()
                        .map(|s| (s.base, s.next(), s.len, s.max_ts))
                        .collect::<Vec<_>>()
                );
                let retained = log.enforce_retention();
                model.retention(now);
                assert_eq!(
                    retained.segments_deleted,
                    before - model.segments.len(),
                    "{describe}"
                );
            }
            80..=82 => {
                let offset = rng.range(model.start as u64, model.end() as u64) as i64;
                let durable = log.advance_start_offset(offset).expect("advance");
                model.advance(offset);
                if rng.chance(50) {
                    durable.wait().expect("start offset durable");
                }
            }
            83..=87 => {
                let ts = now + rng.range(0, 4_000) as i64 - 3_000;
                let hit = log.find_timestamp(ts).expect("find_timestamp");
                assert_eq!(
                    hit.map(|h| h.base_offset),
                    model.find_timestamp(ts),
                    "step {step}: find_timestamp({ts})"
                );
                let max = log.max_timestamp().expect("max_timestamp");
                assert_eq!(
                    max.map(|h| h.base_offset),
                    model.max_timestamp(),
                    "step {step}: max_timestamp"
                );
            }
            88..=90 => {
                // Clean shutdown: the reopen scans nothing.
                log.close().expect("close");
                drop(flusher);
                (log, flusher) = open(dir.path(), &config, &clock);
                let report = log.recovery_report();
                assert_eq!(report.bytes_scanned, 0, "step {step}: {report:?}");
                assert_eq!(report.bytes_truncated, 0, "step {step}: {report:?}");
                assert_eq!(report.corruption, None);
                after_reopen(&mut model, now);
            }
            91..=93 => {
                // Unclean: drop without the checkpoint. Everything is in the page cache, so
                // recovery must find all of it, CRC-checking what lies above the recovery point.
                drop(log);
                drop(flusher);
                (log, flusher) = open(dir.path(), &config, &clock);
                let report = log.recovery_report();
                assert_eq!(report.bytes_truncated, 0, "step {step}: {report:?}");
                assert_eq!(report.corruption, None);
                after_reopen(&mut model, now);
            }
            _ => check(&log, &model, &mut rng, step),
        }
    }
    check(&log, &model, &mut rng, steps);
    log.close().expect("close");
}

fn clock_now(clock: &ManualClock) -> i64 {
    use weir_log::Clock;
    clock.now_ms()
}

fn weir_log_model_first_segment(clock: &ManualClock) -> Segment {
    Segment::new(0, clock_now(clock))
}

/// A reopen deletes segments wholly below the log start offset (retention would have), and an
/// empty active segment's age counts from the open.
fn after_reopen(model: &mut Model, now: i64) {
    while model.segments.len() > 1 && model.segments[0].next() <= model.start {
        model.segments.remove(0);
    }
    let active = model.segments.last_mut().expect("segments");
    if active.batches.is_empty() {
        active.roll_base = now;
    }
}

#[test]
fn log_matches_model() {
    let seed = common::seed("log_matches_model");
    let (runs, steps) = if common::quick() {
        (3, 600)
    } else {
        (12, 2_500)
    };
    for run_index in 0..runs {
        let run_seed = seed.wrapping_add(run_index);
        eprintln!("  run {run_index}: WEIR_SEED-derived run seed {run_seed}");
        run(run_seed, steps);
    }
}

/// Fixed seeds, run every time (seed 1 and 2 caught the find_timestamp-below-log-start bug).
#[test]
fn model_fixed_seeds() {
    // 1795243428074058779: reopen deletes segments wholly below the log start.
    for seed in [1u64, 2, 3, 1795243428074058779] {
        run(seed, 400);
    }
}
