//! Benchmarks of the partition log, each against a baseline measured in the same run:
//!
//! 1. append throughput, page cache only, 16 KiB batches, vs `dd` writing the same bytes with
//!    the same block size to the same directory (target ≥ 80 % of dd);
//! 2. p50/p99/p99.9/max latency of those appends;
//! 3. sequential reads: file regions (CRC-checked on first read), copies, and both sent to a
//!    loopback socket (write vs sendfile);
//! 4. `flush.messages=1`: batches/s with 1 vs 8 concurrent appenders on one current_thread
//!    reactor (target: 8 reach ≥ 5× of 1);
//! 5. open time after a clean shutdown of a 2 GiB log, and after crashes with tails of
//!    growing size (time should follow the tail only).
//!
//! `cargo bench -p weir-log --bench log` runs them all. Environment: WEIR_BENCH_DIR (default: a
//! directory under the system temp dir), WEIR_BENCH_MB (append volume, default 1024),
//! WEIR_BENCH_OPEN_MB (log size for the open test, default 2048), WEIR_BENCH_ONLY (comma list
//! of: append, group, open).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use weir_log::batch::build::BatchBuilder;
use weir_log::{Flusher, Log, LogConfig, LogOptions};

const BATCH_BYTES: usize = 16 << 10;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A batch of exactly `size` bytes (one record with a value sized to fit).
fn batch_of(size: usize, seed: u8) -> Vec<u8> {
    let mut value_len = size - 80;
    loop {
        let value: Vec<u8> = (0..value_len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        let mut builder = BatchBuilder::new(now_ms());
        builder.push(Some(b"bench-key"), Some(&value), now_ms());
        let bytes = builder.build();
        match bytes.len().cmp(&size) {
            std::cmp::Ordering::Equal => return bytes,
            std::cmp::Ordering::Greater => value_len -= bytes.len() - size,
            std::cmp::Ordering::Less => value_len += size - bytes.len(),
        }
    }
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// Writes dirty pages out and waits, so one run's writeback does not slow the next.
fn settle() {
    let _ = Command::new("sync").status();
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn flusher() -> Flusher {
    Flusher::start(weir_log::FLUSH_THREADS_DEFAULT).expect("flusher")
}

struct AppendRun {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn run_log_append(dir: &Path, batches: &mut [Vec<u8>], count: usize) -> AppendRun {
    let mut log = Log::open(dir, LogOptions::new(LogConfig::default(), flusher())).expect("open");
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let n = batches.len();
        let bytes = &mut batches[i % n];
        let t = Instant::now();
        let appended = log.append(bytes).expect("append");
        latencies.push(t.elapsed());
        debug_assert!(appended.durable.is_ready());
    }
    let elapsed = started.elapsed();
    drop(log);
    AppendRun { elapsed, latencies }
}

fn run_dd(input: &Path, output: &Path, count: usize) -> Duration {
    let started = Instant::now();
    let status = Command::new("dd")
        .arg(format!("if={}", input.display()))
        .arg(format!("of={}", output.display()))
        .arg(format!("bs={BATCH_BYTES}"))
        .arg(format!("count={count}"))
        .arg("status=none")
        .status()
        .expect("run dd");
    assert!(status.success(), "dd failed");
    started.elapsed()
}

fn bench_append(root: &Path) {
    let total_mb = env_u64("WEIR_BENCH_MB", 1024);
    let count = (total_mb << 20) as usize / BATCH_BYTES;
    let bytes = (count * BATCH_BYTES) as u64;
    let mut batches: Vec<Vec<u8>> = (0..64).map(|i| batch_of(BATCH_BYTES, i)).collect();
    // dd's input: the same batches, in the same order, already in the page cache.
    let input = root.join("dd-input");
    {
        let mut all = Vec::with_capacity(bytes as usize);
        for i in 0..count {
            all.extend_from_slice(&batches[i % batches.len()]);
        }
        std::fs::write(&input, &all).expect("dd input");
        let _ = std::fs::read(&input).expect("warm dd input");
    }
    println!("== append, page cache only: {count} batches of {BATCH_BYTES} B ({total_mb} MiB) ==");
    let mut dd_best = Duration::MAX;
    let mut log_best: Option<AppendRun> = None;
    for round in 0..3 {
        settle();
        let out = fresh_dir(root, "dd-out").join("out");
        let dd = run_dd(&input, &out, count);
        let _ = std::fs::remove_file(&out);
        settle();
        let dir = fresh_dir(root, "append");
        let run = run_log_append(&dir, &mut batches, count);
        println!(
            "  round {round}: dd {:>7.0} MB/s   log {:>7.0} MB/s   ratio {:.2}",
            mb_per_s(bytes, dd),
            mb_per_s(bytes, run.elapsed),
            dd.as_secs_f64() / run.elapsed.as_secs_f64()
        );
        dd_best = dd_best.min(dd);
        if log_best.as_ref().is_none_or(|b| run.elapsed < b.elapsed) {
            log_best = Some(run);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_file(&input);
    let mut best = log_best.expect("runs");
    println!(
        "  best: dd {:.0} MB/s, log {:.0} MB/s = {:.0} % of dd (target >= 80 %)",
        mb_per_s(bytes, dd_best),
        mb_per_s(bytes, best.elapsed),
        100.0 * dd_best.as_secs_f64() / best.elapsed.as_secs_f64()
    );
    best.latencies.sort_unstable();
    let l = &best.latencies;
    println!(
        "  append latency (16 KiB, no fsync): p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        percentile(l, 0.5),
        percentile(l, 0.99),
        percentile(l, 0.999),
        l[l.len() - 1]
    );
    bench_read(root, &mut batches, count, bytes);
}

fn bench_read(root: &Path, batches: &mut [Vec<u8>], count: usize, bytes: u64) {
    let dir = fresh_dir(root, "read");
    {
        let mut log =
            Log::open(&dir, LogOptions::new(LogConfig::default(), flusher())).expect("open");
        for i in 0..count {
            let n = batches.len();
            log.append(&mut batches[i % n]).expect("append");
        }
        // Clean shutdown: the reopened log trusts nothing it has not read, so the first pass
        // below CRC-checks every byte (page cache warm, so this measures the check, not the disk).
        log.close().expect("close");
    }
    let log = Log::open(&dir, LogOptions::new(LogConfig::default(), flusher())).expect("open");
    assert_eq!(log.recovery_report().bytes_scanned, 0);
    println!(
        "== sequential read of {} MiB, 1 MiB per read, page cache warm ==",
        bytes >> 20
    );
    for pass in [
        "first pass, CRC-checks every batch",
        "second pass, already checked",
    ] {
        let started = Instant::now();
        let mut offset = 0;
        let mut got = 0u64;
        while offset < log.log_end_offset() {
            let slice = log.read(offset, 1 << 20).expect("read");
            got += slice.region.len;
            offset = slice.next_offset;
        }
        assert_eq!(got, bytes);
        println!(
            "  read() file regions, {pass}: {:.0} MB/s",
            mb_per_s(got, started.elapsed())
        );
    }
    let started = Instant::now();
    let mut offset = 0;
    let mut got = 0u64;
    while offset < log.log_end_offset() {
        let copy = log.read_copy(offset, 1 << 20).expect("read_copy");
        got += copy.bytes.len() as u64;
        offset = copy.next_offset;
    }
    println!(
        "  read_copy() (pread + CRC check of the copy): {:.0} MB/s",
        mb_per_s(got, started.elapsed())
    );

    // What a fetch does: bytes to a loopback TCP socket, drained by another thread.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let drain = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match std::io::Read::read(&mut socket, &mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    let mut socket = std::net::TcpStream::connect(addr).expect("connect");
    let started = Instant::now();
    let mut offset = 0;
    while offset < log.log_end_offset() {
        let copy = log.read_copy(offset, 1 << 20).expect("read_copy");
        std::io::Write::write_all(&mut socket, &copy.bytes).expect("send");
        offset = copy.next_offset;
    }
    let copied = started.elapsed();
    let started = Instant::now();
    let mut offset = 0;
    while offset < log.log_end_offset() {
        let slice = log.read(offset, 1 << 20).expect("read");
        let mut file = &*slice.region.file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(slice.region.position))
            .expect("seek");
        // std::io::copy from a file to a socket uses sendfile(2).
        std::io::copy(
            &mut std::io::Read::take(file, slice.region.len),
            &mut socket,
        )
        .expect("sendfile");
        offset = slice.next_offset;
    }
    let sent = started.elapsed();
    drop(socket);
    let drained = drain.join().expect("drain");
    assert_eq!(drained, 2 * bytes);
    println!(
        "  to a loopback socket: read_copy() + write {:.0} MB/s, read() + sendfile {:.0} MB/s",
        mb_per_s(bytes, copied),
        mb_per_s(bytes, sent)
    );
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Batches per second made durable by `tasks` appenders sharing one log on one reactor.
fn group_commit(dir: &Path, tasks: usize, duration: Duration) -> (f64, u64, u64) {
    let config = LogConfig {
        flush_messages: 1,
        ..LogConfig::default()
    };
    let log = Log::open(dir, LogOptions::new(config, flusher())).expect("open");
    let log = Rc::new(RefCell::new(log));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let started = Instant::now();
    let total = local.block_on(&runtime, async {
        let mut handles = Vec::new();
        for t in 0..tasks {
            let log = log.clone();
            handles.push(tokio::task::spawn_local(async move {
                let mut bytes = batch_of(1024, t as u8);
                let mut n = 0u64;
                while started.elapsed() < duration {
                    let appended = log.borrow_mut().append(&mut bytes).expect("append");
                    appended.durable.await.expect("durable");
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for h in handles {
            total += h.await.expect("task");
        }
        total
    });
    let elapsed = started.elapsed();
    let syncs = log.borrow().syncs_completed();
    (total as f64 / elapsed.as_secs_f64(), total, syncs)
}

fn bench_group(root: &Path) {
    println!("== flush.messages=1, 1 KiB batches, appenders on one current_thread reactor ==");
    let duration = Duration::from_secs(3);
    let mut ratios = Vec::new();
    for round in 0..3 {
        settle();
        let dir = fresh_dir(root, "group1");
        let (one, n1, s1) = group_commit(&dir, 1, duration);
        settle();
        let dir = fresh_dir(root, "group8");
        let (eight, n8, s8) = group_commit(&dir, 8, duration);
        let ratio = eight / one;
        println!(
            "  round {round}: 1 appender {one:>7.0} batches/s ({n1} in {s1} syncs)   8 appenders {eight:>7.0} batches/s ({n8} in {s8} syncs)   ratio {ratio:.2}"
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!("  median ratio 8:1 = {:.2} (target >= 5)", ratios[1]);
}

fn bench_open(root: &Path) {
    let size_mb = env_u64("WEIR_BENCH_OPEN_MB", 2048);
    let dir = fresh_dir(root, "open");
    let config = LogConfig::default();
    println!("== open after clean shutdown of a {size_mb} MiB log (segment.bytes 1 GiB) ==");
    {
        let mut log = Log::open(&dir, LogOptions::new(config.clone(), flusher())).expect("open");
        let mut batches: Vec<Vec<u8>> = (0..16).map(|i| batch_of(BATCH_BYTES, i)).collect();
        let count = (size_mb << 20) as usize / BATCH_BYTES;
        for i in 0..count {
            log.append(&mut batches[i % 16]).expect("append");
        }
        log.close().expect("close");
    }
    settle();
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let log = Log::open(&dir, LogOptions::new(config.clone(), flusher())).expect("open");
        times.push(started.elapsed());
        assert_eq!(log.recovery_report().bytes_scanned, 0);
        log.close().expect("close");
    }
    times.sort_unstable();
    println!(
        "  clean open: median {:?} (target < 100 ms), min {:?}",
        times[2], times[0]
    );

    println!("== open after a crash: time against the unflushed tail ==");
    let mut batch = batch_of(BATCH_BYTES, 99);
    for tail_mb in [16u64, 64, 256] {
        let mut log = Log::open(&dir, LogOptions::new(config.clone(), flusher())).expect("open");
        let count = (tail_mb << 20) as usize / BATCH_BYTES;
        for _ in 0..count {
            log.append(&mut batch).expect("append");
        }
        drop(log); // no close: a crash as far as the files are concerned
        let started = Instant::now();
        let log = Log::open(&dir, LogOptions::new(config.clone(), flusher())).expect("open");
        let elapsed = started.elapsed();
        let scanned = log.recovery_report().bytes_scanned;
        println!(
            "  tail {tail_mb:>4} MiB: open {elapsed:?}, {} MiB CRC-checked ({:.2} ms per MiB)",
            scanned >> 20,
            elapsed.as_secs_f64() * 1e3 / (tail_mb as f64)
        );
        log.close().expect("close");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("log bench: run with `cargo bench -p weir-log --bench log`");
        return;
    }
    let root = std::env::var("WEIR_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::temp_dir().join(format!("weir-bench-{}", std::process::id()))
        });
    std::fs::create_dir_all(&root).expect("bench root");
    let only = std::env::var("WEIR_BENCH_ONLY").unwrap_or_else(|_| "append,group,open".into());
    println!(
        "weir-log bench in {} ({} cores)",
        root.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for part in only.split(',') {
        match part.trim() {
            "append" => bench_append(&root),
            "group" => bench_group(&root),
            "open" => bench_open(&root),
            other => eprintln!("unknown bench part {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
