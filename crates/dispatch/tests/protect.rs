//! The rate limiter and the circuit breaker against a controllable fake service, on tokio's
//! paused clock (time advances only when every task waits, so the figures are exact).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use weir_dispatch::breaker::State;
use weir_dispatch::{AdaptiveRate, BreakerConfig, CallError, CircuitBreaker, RateLimiter};

#[tokio::test(start_paused = true)]
async fn the_rate_limiter_holds_its_rate_over_ten_seconds() {
    for (rate, burst, callers) in [(1_000.0, 10, 8), (50.0, 1, 3), (20_000.0, 100, 32)] {
        let limiter = Arc::new(RateLimiter::new(rate, burst));
        let calls = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let end = start + Duration::from_secs(10);
        let mut tasks = Vec::new();
        for _ in 0..callers {
            let (limiter, calls) = (limiter.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    limiter.acquire().await;
                    if Instant::now() >= end {
                        return;
                    }
                    calls.fetch_add(1, SeqCst);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let got = calls.load(SeqCst) as f64 / 10.0;
        eprintln!("rate {rate}/s, burst {burst}, {callers} callers: {got}/s over 10 s");
        assert!(
            (rate * 0.9..=rate * 1.1).contains(&got),
            "rate {rate}/s with {callers} callers: got {got}/s"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn try_acquire_takes_only_what_is_there() {
    let limiter = RateLimiter::new(10.0, 5);
    let taken = (0..20).filter(|_| limiter.try_acquire()).count();
    assert_eq!(taken, 5, "the bucket starts full, at the burst");
    tokio::time::advance(Duration::from_millis(300)).await;
    let taken = (0..20).filter(|_| limiter.try_acquire()).count();
    assert_eq!(taken, 3, "10/s for 300 ms");
}

/// A service that handles `capacity` calls per second one after another, each taking `base`:
/// offered more, its queue and so its latency grow.
struct Service {
    capacity: f64,
    base: Duration,
    free_at: Mutex<Instant>,
}

impl Service {
    async fn call(&self) {
        let now = Instant::now();
        let done = {
            let mut free = self.free_at.lock().unwrap();
            let start = (*free).max(now);
            *free = start + Duration::from_secs_f64(1.0 / self.capacity);
            start + self.base
        };
        tokio::time::sleep_until(done).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_rate_settles_near_what_the_service_sustains() {
    let service = Arc::new(Service {
        capacity: 400.0,
        base: Duration::from_millis(5),
        free_at: Mutex::new(Instant::now()),
    });
    let config = AdaptiveRate::new(Duration::from_millis(50), 10.0, 4_000.0);
    let limiter = Arc::new(RateLimiter::adaptive(config, 10));
    let calls = Arc::new(AtomicU64::new(0));
    let slow = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let end = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    // Far more callers than the service can take: only the limiter holds them back.
    for _ in 0..200 {
        let (limiter, service) = (limiter.clone(), service.clone());
        let (calls, slow, measuring) = (calls.clone(), slow.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                limiter.acquire().await;
                let start = Instant::now();
                service.call().await;
                let latency = start.elapsed();
                limiter.record(latency);
                if measuring.load(SeqCst) {
                    calls.fetch_add(1, SeqCst);
                    // The service's own latency, not the wait for a token.
                    if latency > Duration::from_millis(200) {
                        slow.fetch_add(1, SeqCst);
                    }
                }
            }
        }));
    }
    // The first 30 s find the rate; the last 30 s are measured.
    tokio::time::sleep(Duration::from_secs(30)).await;
    measuring.store(true, SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let throughput = calls.load(SeqCst) as f64 / 30.0;
    let rate = limiter.rate();
    assert!(
        (0.6 * 400.0..=1.05 * 400.0).contains(&throughput),
        "throughput {throughput}/s against a capacity of 400/s (rate now {rate})"
    );
    assert!(
        rate < 4_000.0 * 0.5,
        "the rate came down from its maximum: {rate}"
    );
    let slow = slow.load(SeqCst) as f64 / calls.load(SeqCst) as f64;
    eprintln!("adaptive: {throughput:.0} calls/s (capacity 400), rate {rate:.0}, {slow:.3} slow");
    assert!(slow < 0.2, "{:.0}% of calls were slow", slow * 100.0);
}

/// A service that fails while `down` is set, counting the calls that reach it.
#[derive(Default)]
struct Flaky {
    down: AtomicBool,
    reached: AtomicU64,
}

impl Flaky {
    async fn call(&self) -> Result<(), &'static str> {
        self.reached.fetch_add(1, SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        if self.down.load(SeqCst) {
            Err("service down")
        } else {
            Ok(())
        }
    }
}

fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        window: Duration::from_secs(10),
        buckets: 10,
        calls_min: 20,
        error_rate: 0.5,
        open_for: Duration::from_secs(5),
        probes: 3,
    }
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_at_the_threshold_fails_fast_and_closes_after_probes() {
    let breaker = CircuitBreaker::new(breaker_config());
    let service = Flaky::default();
    // 40 % errors: under the threshold, it stays closed.
    for i in 0..50 {
        service.down.store(i % 5 < 2, SeqCst);
        let _ = breaker.call(service.call()).await;
    }
    assert_eq!(breaker.state(), State::Closed);
    // Let those calls leave the window, then fail every call: it opens once the window holds
    // 20 calls with at least half failed — at the 20th failure of a clean window.
    tokio::time::advance(Duration::from_secs(11)).await;
    service.down.store(true, SeqCst);
    let mut failures = 0;
    while breaker.state() == State::Closed {
        assert!(matches!(
            breaker.call(service.call()).await,
            Err(CallError::Failed(_))
        ));
        failures += 1;
    }
    assert_eq!(failures, 20);
    assert_eq!(breaker.state(), State::Open);
    // Open: calls fail at once without reaching the service.
    let reached = service.reached.load(SeqCst);
    let start = Instant::now();
    for _ in 0..100 {
        assert_eq!(breaker.call(service.call()).await, Err(CallError::Open));
    }
    assert_eq!(service.reached.load(SeqCst), reached);
    assert_eq!(start.elapsed(), Duration::ZERO);
    // After open_for it lets probes through; a failed probe opens it again.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(breaker.state(), State::HalfOpen);
    assert!(matches!(
        breaker.call(service.call()).await,
        Err(CallError::Failed(_))
    ));
    assert_eq!(breaker.state(), State::Open);
    // The service recovers: three successful probes close it.
    service.down.store(false, SeqCst);
    tokio::time::advance(Duration::from_secs(5)).await;
    for i in 0..3 {
        assert_eq!(breaker.state(), State::HalfOpen, "probe {i}");
        assert_eq!(breaker.call(service.call()).await, Ok(()));
    }
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_lets_only_its_probes_through() {
    let breaker = Arc::new(CircuitBreaker::new(breaker_config()));
    let service = Arc::new(Flaky::default());
    service.down.store(true, SeqCst);
    for _ in 0..20 {
        let _ = breaker.call(service.call()).await;
    }
    assert_eq!(breaker.state(), State::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    service.down.store(false, SeqCst);
    // Ten concurrent calls: three probes reach the service, the rest fail fast.
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (b, s) = (breaker.clone(), service.clone());
            tokio::spawn(async move { b.call(s.call()).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for c in calls {
        outcomes.push(c.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 3);
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Err(CallError::Open))
            .count(),
        7
    );
    assert_eq!(breaker.state(), State::Closed);
    // A probe whose caller gives up frees its slot.
    for _ in 0..20 {
        service.down.store(true, SeqCst);
        let _ = breaker.call(service.call()).await;
    }
    assert_eq!(breaker.state(), State::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    service.down.store(false, SeqCst);
    for _ in 0..3 {
        let gave_up = tokio::time::timeout(Duration::from_millis(1), breaker.call(service.call()));
        assert!(gave_up.await.is_err());
    }
    assert_eq!(breaker.call(service.call()).await, Ok(()));
}
