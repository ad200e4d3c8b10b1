//! Dispatcher throughput for trivial tasks against the single-queue model, in the same run.
//!
//! - **dispatch**: `weir-dispatch`, tasks keyed over `KEYS` keys, each adding to its key's
//!   state (per-key order and lock-free state included in the price).
//! - **single queue**: one bounded queue (`std::sync::mpsc::sync_channel`) whose receiver N
//!   worker threads share behind a mutex — the pool of ../shared/reference/004 model 5 and the
//!   usual Rust thread pool. It runs the same closures in no particular order, so per-key
//!   state would need a lock; it is the baseline the dispatcher's per-worker queues are
//!   meant to beat (model 6).
//!
//! `cargo bench -p weir-dispatch --bench dispatch`. WEIR_BENCH_TASKS (default 2,000,000),
//! WEIR_BENCH_WORKERS (default: cores).

use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use weir_dispatch::{Config, Dispatcher};

const KEYS: u64 = 1_000;
const QUEUE: usize = 1_024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dispatch(tasks: u64, workers: usize) -> Duration {
    let config = Config {
        workers,
        queue_tasks_max: QUEUE,
        ..Config::default()
    };
    let d: Dispatcher<u64, u64> = Dispatcher::new(config).expect("dispatcher");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let start = Instant::now();
    rt.block_on(async {
        for i in 0..tasks {
            d.submit(i % KEYS, async |n: &mut u64| *n += 1)
                .await
                .expect("submit");
        }
        d.shutdown().await;
    });
    let took = start.elapsed();
    let done: u64 = d.stats().iter().map(|s| s.tasks_done).sum();
    assert_eq!(done, tasks);
    took
}

type Task = Box<dyn FnOnce() + Send>;

fn single_queue(tasks: u64, workers: usize) -> Duration {
    let (tx, rx) = mpsc::sync_channel::<Task>(QUEUE * workers);
    let rx = Arc::new(Mutex::new(rx));
    let counters: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || loop {
                let task = rx.lock().expect("queue lock").recv();
                match task {
                    Ok(task) => task(),
                    Err(_) => return,
                }
            })
        })
        .collect();
    for i in 0..tasks {
        let counters = counters.clone();
        let task: Task = Box::new(move || {
            counters[(i % KEYS) as usize].fetch_add(1, Relaxed);
        });
        tx.send(task).expect("send");
    }
    drop(tx);
    for t in threads {
        t.join().expect("worker");
    }
    let took = start.elapsed();
    let done: u64 = counters.iter().map(|c| c.load(Relaxed)).sum();
    assert_eq!(done, tasks);
    took
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("dispatch bench: run with `cargo bench -p weir-dispatch --bench dispatch`");
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tasks = env_usize("WEIR_BENCH_TASKS", 2_000_000) as u64;
    let workers = env_usize("WEIR_BENCH_WORKERS", cores);
    println!(
        "{tasks} trivial tasks over {KEYS} keys, {workers} workers, {cores} cores, 1 submitter"
    );
    // Alternate the two, three rounds each, and compare medians.
    let mut d = Vec::new();
    let mut q = Vec::new();
    for round in 0..3 {
        let a = dispatch(tasks, workers);
        let b = single_queue(tasks, workers);
        let rate = |t: Duration| tasks as f64 / t.as_secs_f64();
        println!(
            "round {round}: dispatch {:>10.0} tasks/s   single queue {:>10.0} tasks/s",
            rate(a),
            rate(b)
        );
        d.push(a);
        q.push(b);
    }
    d.sort();
    q.sort();
    let (a, b) = (d[1], q[1]);
    println!(
        "median: dispatch {:.0} tasks/s, single queue {:.0} tasks/s, ratio {:.2}x",
        tasks as f64 / a.as_secs_f64(),
        tasks as f64 / b.as_secs_f64(),
        b.as_secs_f64() / a.as_secs_f64()
    );
}
