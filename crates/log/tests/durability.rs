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

/// Drop-behind: bytes older than the log's newest `cache_window` are written back and dropped
/// from the page cache, read back identical from the disk, and the window itself stays.
#[test]
#[cfg(target_os = "linux")]
fn bytes_behind_the_cache_window_leave_the_page_cache_and_read_back_identical() {
    const WINDOW: u64 = 1 << 20;
    let dir = TempDir::new("cache-window");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let (mut log, flusher) = open(dir.path(), config);
    flusher.set_cache_window(WINDOW);
    let mut rng = Rng::new(46);
    let mut written = Vec::new();
    let mut appended = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Append until 4 MiB have been evicted (an eviction runs while later appends queue up).
    while flusher.stats().evicted_bytes < 4 << 20 {
        assert!(
            Instant::now() < deadline,
            "evicted only {:?}",
            flusher.stats()
        );
        let mut bytes = common::batch(&mut rng, 16, 4000, 1_700_000_000_000, 7, 0);
        appended += bytes.len() as u64;
        log.append(&mut bytes).expect("append");
        written.push(bytes);
        if appended > 64 << 20 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let evicted = flusher.stats().evicted_bytes;
    assert!(
        evicted <= appended - WINDOW,
        "the newest {WINDOW} bytes stay: evicted {evicted} of {appended}"
    );
    // The oldest segment is gone from the cache (tmpfs keeps its pages whatever it is told);
    // the newest bytes are there.
    let on_tmpfs = {
        // SAFETY: statfs is plain data, valid zeroed.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: statfs reads a NUL-terminated path and writes one statfs into `fs`.
        let ok = unsafe { libc::statfs(path.as_ptr(), &mut fs) } == 0;
        #[allow(clippy::unnecessary_cast)]
        let tmpfs = ok && fs.f_type as i64 == libc::TMPFS_MAGIC as i64;
        tmpfs
    };
    if !on_tmpfs {
        assert!(!log.likely_cached(0, 4096), "offset 0 was evicted");
    }
    let last = log.log_end_offset() - 1;
    assert!(
        log.likely_cached(last, 4096),
        "the newest batch stays cached"
    );
    // Every batch reads back byte for byte.
    let mut offset = 0;
    let mut got = Vec::new();
    while offset < log.log_end_offset() {
        let copy = log.read_copy(offset, 1 << 20).expect("read");
        got.extend_from_slice(&copy.bytes);
        offset = copy.next_offset;
    }
    assert_eq!(
        got,
        written.concat(),
        "what was evicted reads back identical"
    );
}
