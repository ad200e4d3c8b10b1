//! A token-bucket rate limiter for the calls a handler makes to another service (the token
//! bucket of ../shared/reference/002 §4.3 and 003 §2.2), with an adaptive mode that moves the
//! rate to keep the service's latency at a target.
//!
//! Tokens accrue at `rate` per second up to `burst`. `acquire` takes a token at once when one
//! is there; otherwise it reserves the next one (the balance goes negative) and sleeps until
//! it is due, so waiters are served in arrival order at exactly the rate. A waiter that is
//! cancelled leaves its reservation behind: the rate is under-used by one token, never
//! exceeded.
//!
//! Adaptive mode is additive-increase, multiplicative-decrease over fixed windows: at the end
//! of each window, if more than a tenth of the calls recorded took longer than the target
//! (the p90 is over it), the rate is multiplied by `decrease`; if not, and callers used at
//! least half of what the rate allowed (so the limit was what held them), it grows by
//! `increase` × `rate_max`. The clock is tokio's, so tests run it paused.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Adaptive-rate settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveRate {
    /// The latency (p90 over a window) the rate is steered to.
    pub target: Duration,
    pub rate_min: f64,
    pub rate_max: f64,
    pub window: Duration,
    /// Multiplier applied when the window's p90 is over the target.
    pub decrease: f64,
    /// Step added when it is under, as a fraction of `rate_max`.
    pub increase: f64,
}

impl AdaptiveRate {
    pub fn new(target: Duration, rate_min: f64, rate_max: f64) -> AdaptiveRate {
        AdaptiveRate {
            target,
            rate_min,
            rate_max,
            window: Duration::from_secs(1),
            decrease: 0.8,
            increase: 0.02,
        }
    }
}

/// The fraction of slow calls in a window above which the rate is cut (p90 over target).
const SLOW_FRACTION_MAX: f64 = 0.1;

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    adaptive: Option<Aimd>,
}

#[derive(Debug)]
struct Aimd {
    config: AdaptiveRate,
    window_start: Instant,
    calls: u64,
    slow: u64,
    taken: u64,
}

/// A token bucket, shareable across tasks and threads.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Mutex<Bucket>,
}

impl RateLimiter {
    /// `rate` tokens per second, at most `burst` saved up (the bucket starts full).
    pub fn new(rate: f64, burst: u32) -> RateLimiter {
        assert!(
            rate > 0.0 && rate.is_finite(),
            "a rate limiter needs a positive rate"
        );
        let burst = f64::from(burst.max(1));
        RateLimiter {
            bucket: Mutex::new(Bucket {
                rate,
                burst,
                tokens: burst,
                last: Instant::now(),
                adaptive: None,
            }),
        }
    }

    /// Starts at `config.rate_max` and steers the rate to keep latency at `config.target`;
    /// report each call's latency with [`record`](Self::record), or use [`call`](Self::call).
    pub fn adaptive(config: AdaptiveRate, burst: u32) -> RateLimiter {
        assert!(config.rate_min > 0.0 && config.rate_min <= config.rate_max);
        let limiter = RateLimiter::new(config.rate_max, burst);
        {
            let mut b = limiter.bucket.lock().expect("limiter lock");
            b.adaptive = Some(Aimd {
                window_start: Instant::now(),
                config,
                calls: 0,
                slow: 0,
                taken: 0,
            });
        }
        limiter
    }

    /// The current rate, tokens per second.
    pub fn rate(&self) -> f64 {
        self.bucket.lock().expect("limiter lock").rate
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let wait = {
            let mut b = self.bucket.lock().expect("limiter lock");
            let now = Instant::now();
            b.refill(now);
            b.tokens -= 1.0;
            if let Some(a) = &mut b.adaptive {
                a.taken += 1;
            }
            if b.tokens >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-b.tokens / b.rate)
        };
        tokio::time::sleep(wait).await;
    }

    /// Takes a token if one is there now.
    pub fn try_acquire(&self) -> bool {
        let mut b = self.bucket.lock().expect("limiter lock");
        b.refill(Instant::now());
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            if let Some(a) = &mut b.adaptive {
                a.taken += 1;
            }
            true
        } else {
            false
        }
    }

    /// Reports how long a call took (adaptive mode; ignored otherwise).
    pub fn record(&self, latency: Duration) {
        let mut b = self.bucket.lock().expect("limiter lock");
        b.refill(Instant::now());
        if let Some(a) = &mut b.adaptive {
            a.calls += 1;
            if latency > a.config.target {
                a.slow += 1;
            }
        }
    }

    /// Takes a token, runs `call`, and records its latency.
    pub async fn call<T>(&self, call: impl Future<Output = T>) -> T {
        self.acquire().await;
        let start = Instant::now();
        let out = call.await;
        self.record(start.elapsed());
        out
    }
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        let Some(a) = &mut self.adaptive else { return };
        let span = now.saturating_duration_since(a.window_start);
        if span < a.config.window {
            return;
        }
        let c = &a.config;
        let allowed = self.rate * span.as_secs_f64();
        if a.calls > 0 && a.slow as f64 > a.calls as f64 * SLOW_FRACTION_MAX {
            self.rate = (self.rate * c.decrease).max(c.rate_min);
        } else if a.taken as f64 >= allowed * 0.5 {
            self.rate = (self.rate + c.increase * c.rate_max).min(c.rate_max);
        }
        a.window_start = now;
        a.calls = 0;
        a.slow = 0;
        a.taken = 0;
    }
}
