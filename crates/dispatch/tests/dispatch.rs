//! The dispatcher against its promises, on real worker threads: per-key order and exactly-once
//! execution under random task durations and random resizes, the share of keys a resize moves,
//! backpressure, adaptive sizing, draining shutdown, and panicking tasks.
//!
//! Randomized tests print their seed; WEIR_TEST_SEED=N reruns one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_dispatch::ring::{key_hash, Ring};
use weir_dispatch::{Adaptive, Config, Dispatcher, Error, TrySubmitError};

/// splitmix64: small, seedable, good enough to drive tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("WEIR_TEST_SEED") {
        Ok(s) => vec![s.parse().expect("WEIR_TEST_SEED is a number")],
        Err(_) => default.to_vec(),
    }
}

fn quick() -> bool {
    std::env::var("WEIR_TEST_QUICK").is_ok_and(|v| v == "1")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(workers: usize) -> Config {
    Config {
        workers,
        ..Config::default()
    }
}

/// Per key, the task sequence numbers in the order they ran, and order violations seen
/// through the key's state.
#[derive(Default)]
struct Log {
    ran: HashMap<u32, Vec<u32>>,
    state_mismatches: Vec<(u32, u32, u64)>,
}

#[test]
fn per_key_order_and_exactly_once_hold_under_random_durations_and_resizes() {
    let runs = if quick() {
        &[1u64, 2][..]
    } else {
        &[1u64, 2, 3, 4, 5, 6][..]
    };
    for seed in seeds(runs) {
        eprintln!("seed {seed}");
        runtime().block_on(order_run(seed));
    }
}

async fn order_run(seed: u64) {
    let mut rng = Rng(seed);
    let keys = 300u32;
    let tasks_per_submitter = if quick() { 3_000 } else { 8_000 };
    let submitters = 3u32;
    let small = Config {
        queue_tasks_max: 64,
        running_tasks_max: 32,
        ..config(3)
    };
    // State: how many tasks of this key have run, so each task can check it runs in turn.
    let d: Dispatcher<u32, u64> = Dispatcher::new(small).expect("dispatcher");
    let log = Arc::new(Mutex::new(Log::default()));
    let mut handles = Vec::new();
    for s in 0..submitters {
        let d = d.clone();
        let log = log.clone();
        let mut rng = Rng(rng.next());
        handles.push(tokio::spawn(async move {
            // Each submitter owns the keys ≡ s (mod submitters), so each key's submission
            // order is defined.
            let mut next = HashMap::<u32, u32>::new();
            for _ in 0..tasks_per_submitter {
                let key = (rng.below(u64::from(keys / submitters)) as u32) * submitters + s;
                let seq = *next.entry(key).and_modify(|n| *n += 1).or_insert(0);
                let pause = match rng.below(10) {
                    0..=5 => None,
                    6..=8 => Some(Duration::from_micros(rng.below(300))),
                    _ => Some(Duration::from_millis(1 + rng.below(3))),
                };
                let log = log.clone();
                d.submit(key, async move |count: &mut u64| {
                    if *count != u64::from(seq) {
                        log.lock()
                            .unwrap()
                            .state_mismatches
                            .push((key, seq, *count));
                    }
                    match pause {
                        Some(p) => tokio::time::sleep(p).await,
                        None => tokio::task::yield_now().await,
                    }
                    log.lock().unwrap().ran.entry(key).or_default().push(seq);
                    *count += 1;
                })
                .await
                .expect("submit");
            }
            next
        }));
    }
    let resizer = {
        let d = d.clone();
        let mut rng = Rng(rng.next());
        tokio::spawn(async move {
            let mut sizes = Vec::new();
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_millis(5 + rng.below(40))).await;
                let n = 1 + rng.below(6) as usize;
                d.resize(n).await.expect("resize");
                assert_eq!(d.workers(), n);
                sizes.push(n);
            }
            sizes
        })
    };
    let mut submitted = HashMap::new();
    for h in handles {
        submitted.extend(h.await.expect("submitter"));
    }
    let sizes = resizer.await.expect("resizer");
    d.shutdown().await;
    let log = log.lock().unwrap();
    let mismatches = &log.state_mismatches;
    assert!(
        mismatches.is_empty(),
        "seed {seed}: {} tasks ran out of turn, first (key, seq, tasks run before): {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    let mut total = 0;
    for (key, last) in &submitted {
        let expected: Vec<u32> = (0..=*last).collect();
        let ran = log.ran.get(key).cloned().unwrap_or_default();
        assert_eq!(
            ran, expected,
            "seed {seed}: key {key} ran out of order, lost or twice"
        );
        total += ran.len();
    }
    assert_eq!(log.ran.len(), submitted.len());
    assert_eq!(total, (tasks_per_submitter * submitters) as usize);
    eprintln!(
        "seed {seed}: {total} tasks on {} keys, resizes {sizes:?}",
        submitted.len()
    );
}

#[test]
fn resize_moves_about_the_expected_share_of_keys() {
    for seed in seeds(&[7, 8, 9]) {
        let mut rng = Rng(seed);
        for _ in 0..20 {
            let from = 1 + rng.below(16) as usize;
            let mut to = 1 + rng.below(16) as usize;
            if to == from {
                to += 1;
            }
            let (a, b) = (Ring::new(from, 160), Ring::new(to, 160));
            let keys = 20_000;
            let moved = (0..keys)
                .map(|_| key_hash(&rng.next()))
                .filter(|&h| a.owner(h) != b.owner(h))
                .count();
            let expected = from.abs_diff(to) as f64 / from.max(to) as f64 * keys as f64;
            let ratio = moved as f64 / expected;
            assert!(
                (0.8..=1.2).contains(&ratio),
                "seed {seed}: {from} -> {to} workers moved {moved} keys, expected {expected:.0}"
            );
        }
    }
}

#[test]
fn a_moved_key_keeps_its_state_and_runs_after_its_earlier_tasks() {
    runtime().block_on(async {
        let d: Dispatcher<u32, Vec<u32>> = Dispatcher::new(config(2)).expect("dispatcher");
        // Find a key that moves from 2 to 3 workers.
        let (a, b) = (Ring::new(2, 160), Ring::new(3, 160));
        let key = (0u32..)
            .find(|k| a.owner(key_hash(k)) != b.owner(key_hash(k)))
            .unwrap();
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        d.submit(key, async move |s: &mut Vec<u32>| {
            // Held on the old worker until after the resize has been published.
            let _ = gate_rx.await;
            s.push(0);
        })
        .await
        .unwrap();
        let resize = {
            let d = d.clone();
            tokio::spawn(async move { d.resize(3).await })
        };
        // Wait until the new ring is in place, then queue the next task on the new worker.
        while d.workers() != 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(d.worker_of(&key), 2);
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        d.submit(key, async move |s: &mut Vec<u32>| {
            s.push(1);
            let _ = seen_tx.send(s.clone());
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !resize.is_finished(),
            "the resize waits for the moving key's task"
        );
        gate_tx.send(()).unwrap();
        assert_eq!(seen_rx.await.unwrap(), vec![0, 1]);
        resize.await.unwrap().unwrap();
        d.shutdown().await;
    });
}

#[test]
fn submit_waits_and_try_submit_is_refused_when_a_worker_is_full() {
    runtime().block_on(async {
        let small = Config {
            queue_tasks_max: 8,
            ..config(1)
        };
        let d: Dispatcher<u32> = Dispatcher::new(small).expect("dispatcher");
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let task = |gate: Arc<tokio::sync::Semaphore>, ran: Arc<AtomicUsize>| {
            async move |_: &mut ()| {
                gate.acquire().await.unwrap().forget();
                ran.fetch_add(1, SeqCst);
            }
        };
        for k in 0..8 {
            d.submit(k, task(gate.clone(), ran.clone())).await.unwrap();
        }
        while d.stats()[0].queued < 8 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        match d.try_submit(99, task(gate.clone(), ran.clone())) {
            Err(TrySubmitError::Full(99, _)) => {}
            other => panic!("expected Full, got {:?}", other.map_err(|_| "closed")),
        }
        let waiting = {
            let d = d.clone();
            let t = task(gate.clone(), ran.clone());
            tokio::spawn(async move { d.submit(100, t).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "submit waits while the worker is full"
        );
        assert_eq!(
            d.stats()[0].queued,
            8,
            "no more than queue_tasks_max is held"
        );
        gate.add_permits(1);
        waiting.await.unwrap().unwrap();
        gate.add_permits(8);
        d.shutdown().await;
        assert_eq!(ran.load(SeqCst), 9);
    });
}

#[test]
fn memory_stays_bounded_by_the_queue_limit_under_a_flood() {
    runtime().block_on(async {
        let small = Config {
            queue_tasks_max: 256,
            running_tasks_max: 16,
            ..config(2)
        };
        let d: Dispatcher<u64> = Dispatcher::new(small).expect("dispatcher");
        let peak = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let d = d.clone();
            let peak = peak.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let held: usize = d.stats().iter().map(|s| s.queued).max().unwrap_or(0);
                    peak.fetch_max(held, SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        for i in 0..200_000u64 {
            d.submit(i % 1_000, async |_: &mut ()| tokio::task::yield_now().await)
                .await
                .unwrap();
        }
        sampler.join().unwrap();
        d.shutdown().await;
        let peak = peak.load(SeqCst);
        assert!(peak > 0 && peak <= 256, "a worker held {peak} tasks");
    });
}

#[test]
fn shutdown_runs_everything_submitted_and_refuses_more() {
    runtime().block_on(async {
        let d: Dispatcher<u32> = Dispatcher::new(config(2)).expect("dispatcher");
        let ran = Arc::new(AtomicUsize::new(0));
        for i in 0..500 {
            let ran = ran.clone();
            d.submit(i % 50, async move |_: &mut ()| {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ran.fetch_add(1, SeqCst);
            })
            .await
            .unwrap();
        }
        d.shutdown().await;
        assert_eq!(ran.load(SeqCst), 500);
        assert!(matches!(
            d.submit(1, async |_: &mut ()| {}).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            d.try_submit(1, async |_: &mut ()| {}),
            Err(TrySubmitError::Closed(1, _))
        ));
        assert!(matches!(d.resize(3).await, Err(Error::Closed)));
    });
}

#[test]
fn a_panicking_task_resets_its_key_and_spares_the_rest() {
    runtime().block_on(async {
        let d: Dispatcher<&'static str, u32> = Dispatcher::new(config(1)).expect("dispatcher");
        let seen = Arc::new(Mutex::new(Vec::new()));
        for (key, boom) in [("a", false), ("a", true), ("a", false), ("b", false)] {
            let seen = seen.clone();
            d.submit(key, async move |n: &mut u32| {
                *n += 1;
                tokio::task::yield_now().await;
                assert!(!boom, "a task that fails on purpose");
                seen.lock().unwrap().push((key, *n));
            })
            .await
            .unwrap();
        }
        d.shutdown().await;
        assert_eq!(d.stats()[0].panics, 1);
        assert_eq!(d.stats()[0].tasks_done, 4);
        // "a" restarted from its default state after the panic; "b" never noticed.
        let seen = seen.lock().unwrap();
        let of = |k| {
            seen.iter()
                .filter(|(key, _)| *key == k)
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()
        };
        assert_eq!(of("a"), vec![1, 1]);
        assert_eq!(of("b"), vec![1]);
    });
}

#[test]
fn tasks_waiting_on_io_let_their_worker_run_other_keys() {
    runtime().block_on(async {
        let d: Dispatcher<u32> = Dispatcher::new(config(1)).expect("dispatcher");
        let start = Instant::now();
        let done = Arc::new(AtomicUsize::new(0));
        for k in 0..200 {
            let done = done.clone();
            d.submit(k, async move |_: &mut ()| {
                tokio::time::sleep(Duration::from_millis(100)).await;
                done.fetch_add(1, SeqCst);
            })
            .await
            .unwrap();
        }
        d.shutdown().await;
        assert_eq!(done.load(SeqCst), 200);
        // 200 × 100 ms one after another would be 20 s; overlapped it is about 100 ms.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    });
}

#[test]
fn adaptive_mode_grows_under_load_and_shrinks_when_idle() {
    runtime().block_on(async {
        let adaptive = Adaptive {
            workers_min: 1,
            workers_max: 4,
            sample_every: Duration::from_millis(20),
            grow_after: Duration::from_millis(100),
            busy_fraction: 0.9,
            shrink_after: Duration::from_millis(300),
            idle_fraction: 0.5,
        };
        let c = Config {
            workers: 1,
            adaptive: Some(adaptive),
            ..Config::default()
        };
        let d: Dispatcher<u32> = Dispatcher::new(c).expect("dispatcher");
        // Load: 64 keys, each with its own submitter so that one full worker does not hold
        // back the others; every task holds its worker's thread for 2 ms.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load: Vec<_> = (0..64u32)
            .map(|key| {
                let d = d.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    while !stop.load(SeqCst) {
                        let busy = async |_: &mut ()| std::thread::sleep(Duration::from_millis(2));
                        d.submit(key, busy).await.unwrap();
                    }
                })
            })
            .collect();
        let mut grew = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.workers() < 4 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;

            if grew.last() != Some(&d.workers()) {
                grew.push(d.workers());
            }
        }
        assert_eq!(d.workers(), 4, "grew only to {grew:?}");
        stop.store(true, SeqCst);
        for l in load {
            l.await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.workers() > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(d.workers(), 1, "did not shrink back when idle");
        d.shutdown().await;
    });
}

#[test]
fn a_cancelled_submit_does_not_hold_up_resize_or_shutdown() {
    runtime().block_on(async {
        let one = Config {
            queue_tasks_max: 1,
            ..config(1)
        };
        let d: Dispatcher<u32> = Dispatcher::new(one).expect("dispatcher");
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        d.submit(1, async move |_: &mut ()| drop(g.acquire().await))
            .await
            .unwrap();
        // The worker is full: this submit waits on the slow path, then gives up.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(20),
            d.submit(2, async |_: &mut ()| {}),
        );
        assert!(
            cancelled.await.is_err(),
            "the submit should have been waiting"
        );
        gate.add_permits(1);
        let resized = tokio::time::timeout(Duration::from_secs(10), d.resize(2)).await;
        assert!(
            matches!(resized, Ok(Ok(()))),
            "resize hung after a cancelled submit"
        );
        let shut = tokio::time::timeout(Duration::from_secs(10), d.shutdown()).await;
        assert!(shut.is_ok(), "shutdown hung after a cancelled submit");
    });
}

#[test]
fn every_submit_accepted_before_shutdown_runs() {
    for round in 0..20 {
        let d: Dispatcher<u64> = Dispatcher::new(config(2)).expect("dispatcher");
        let ran = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let submitters: Vec<_> = (0..3u64)
            .map(|s| {
                let (d, ran, accepted) = (d.clone(), ran.clone(), accepted.clone());
                std::thread::spawn(move || {
                    runtime().block_on(async move {
                        for i in 0.. {
                            let ran = ran.clone();
                            let task = async move |_: &mut ()| {
                                ran.fetch_add(1, SeqCst);
                            };
                            match d.submit(s * 1_000_000 + i % 500, task).await {
                                Ok(()) => accepted.fetch_add(1, SeqCst),
                                Err(Error::Closed) => return,
                                Err(e) => panic!("{e}"),
                            };
                        }
                    })
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5 + round));
        runtime().block_on(d.shutdown());
        for s in submitters {
            s.join().expect("submitter");
        }
        assert_eq!(
            ran.load(SeqCst),
            accepted.load(SeqCst),
            "round {round}: an accepted task did not run"
        );
    }
}
