//! Durability policies seen from a single-threaded tokio reactor, and what recovery reads.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{Rng, TempDir};
use weir_log::{Durable, Log, LogConfig};

use common::open;

#[test]
fn durable_is_send_and_static() {
    fn assert_send_static<T: Send + 'static>() {}
    assert_send_static::<Durable>();
    assert_send_static::<Log>();
}

#[test]
fn a_current_thread_reactor_awaits_group_commits() {
    let dir = TempDir::new("group-commit");
    let config = LogConfig {
        flush_messages: 1,
        ..LogConfig::default()
    };
    let (log, _flusher) = open(dir.path(), config);
    let log = Rc::new(std::cell::RefCell::new(log));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    const TASKS: usize = 8;
    const APPENDS: usize = 40;
    let ticks = Rc::new(Cell::new(0u64));
    let done = Rc::new(Cell::new(0usize));
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let mut handles = Vec::new();
        for task in 0..TASKS {
            let log = log.clone();
            let done = done.clone();
            handles.push(tokio::task::spawn_local(async move {
                let mut rng = Rng::new(task as u64);
                let mut offsets = Vec::new();
                for j in 0..APPENDS {
                    let mut bytes =
                        common::batch(&mut rng, 3, 200, common::now_ms(), task as i64, j as i32);
                    // The borrow ends before the await: other tasks append meanwhile.
                    let appended = log.borrow_mut().append(&mut bytes).expect("append");
                    assert!(!appended.durable.is_ready(), "flush.messages=1 must wait");
                    appended.durable.await.expect("durable");
                    offsets.push(appended.base_offset);
                }
                done.set(done.get() + 1);
                offsets
            }));
        }
        // Another task on the same reactor keeps running while fdatasyncs are in flight.
        let ticker = {
            let ticks = ticks.clone();
            let done = done.clone();
            tokio::task::spawn_local(async move {
                while done.get() < TASKS {
                    ticks.set(ticks.get() + 1);
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut all = Vec::new();
        for handle in handles {
            all.extend(handle.await.expect("task"));
        }
        ticker.await.expect("ticker");
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all.len(),
            TASKS * APPENDS,
            "every append got its own offsets"
        );
    });
    let log = log.borrow();
    let appends = (TASKS * APPENDS) as u64;
    let syncs = log.syncs_completed();
    eprintln!(
        "{appends} durable appends shared {syncs} sync rounds; ticker ran {} times",
        ticks.get()
    );
    assert!(
        syncs < appends,
        "no append shared an fdatasync: {syncs} syncs"
    );
    assert!(
        ticks.get() > 0,
        "the reactor ran nothing else while waiting"
    );
}

#[test]
fn flush_messages_n_makes_every_nth_record_wait() {
    let dir = TempDir::new("flush-n");
    let config = LogConfig {
        flush_messages: 3,
        ..LogConfig::default()
    };
    let (mut log, _flusher) = open(dir.path(), config);
    let mut rng = Rng::new(1);
    let mut waited = Vec::new();
    for j in 0..9 {
        let mut bytes = common::batch(&mut rng, 1, 10, common::now_ms(), 1, j);
        let appended = log.append(&mut bytes).expect("append");
        waited.push(!appended.durable.is_ready());
        appended.durable.wait().expect("durable");
    }
    assert_eq!(
        waited,
        [false, false, true, false, false, true, false, false, true]
    );
}

#[test]
fn flush_ms_syncs_in_the_background() {
    let dir = TempDir::new("flush-ms");
    let config = LogConfig {
        flush_ms: 20,
        ..LogConfig::default()
    };
    let (mut log, _flusher) = open(dir.path(), config);
    let mut rng = Rng::new(2);
    let mut bytes = common::batch(&mut rng, 1, 10, common::now_ms(), 1, 0);
    let appended = log.append(&mut bytes).expect("append");
    assert!(appended.durable.is_ready(), "flush.ms does not delay acks");
    // A liveness bound, not a performance check.
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.syncs_completed() == 0 {
        assert!(Instant::now() < deadline, "flush.ms=20 never synced");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Nothing new: the timer does not sync a clean log again.
    let before = log.syncs_completed();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log.syncs_completed(), before);
}

#[test]
fn clean_open_scans_nothing_and_a_crash_scans_only_the_tail() {
    let dir = TempDir::new("reopen");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let mut rng = Rng::new(3);
    let (mut log, flusher) = open(dir.path(), config.clone());
    let mut j = 0;
    while log.size_bytes() < 6 << 20 {
        let mut bytes = common::batch(&mut rng, 10, 2_000, common::now_ms(), 1, j);
        log.append(&mut bytes).expect("append");
        j += 1;
    }
    let segments = log.segment_count();
    assert!(segments >= 6);
    log.close().expect("close");
    drop(flusher);

    let (mut log, flusher) = open(dir.path(), config.clone());
    let report = log.recovery_report().clone();
    assert_eq!(report.bytes_scanned, 0, "{report:?}");
    assert_eq!(report.indexes_repaired, 0, "{report:?}");
    assert_eq!(log.segment_count(), segments);

    // Append a tail without a roll, then "crash" (drop without close).
    let mut tail = 0;
    for _ in 0..20 {
        let mut bytes = common::batch(&mut rng, 5, 1_000, common::now_ms(), 1, j);
        j += 1;
        let before = log.segment_count();
        log.append(&mut bytes).expect("append");
        if log.segment_count() != before {
            tail = 0; // a roll syncs and checkpoints the sealed segment
        }
        tail += bytes.len() as u64;
    }
    let end = log.log_end_offset();
    drop(log);
    drop(flusher);
    let (log, _flusher) = open(dir.path(), config);
    let report = log.recovery_report().clone();
    assert_eq!(
        report.bytes_scanned, tail,
        "only the unflushed tail is checked: {report:?}"
    );
    assert_eq!(log.log_end_offset(), end);
}
