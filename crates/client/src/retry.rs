//! Retries with exponential backoff and full jitter, around admin calls: attempt `n` (from 0)
//! that failed with a retriable error waits a random time in `[0, min(max, base × 2ⁿ)]` and
//! tries again, up to `attempts` tries in all. Jitter keeps many clients that failed together
//! from retrying together.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1: no retry).
    pub attempts: u32,
    /// The backoff ceiling of the first retry.
    pub base: Duration,
    /// The largest backoff ceiling.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (0-based), given a uniformly random `random`.
    pub fn backoff(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(31)))
            .min(self.max);
        let nanos = ceiling.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random % (nanos + 1))
    }

    /// Runs `op` until it succeeds, fails with an error `retriable` refuses, or the attempts
    /// run out; the last error is returned.
    pub async fn run<T, E, Op, Fut>(
        &self,
        retriable: impl Fn(&E) -> bool,
        mut op: Op,
    ) -> Result<T, E>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(e) if attempt + 1 < self.attempts.max(1) && retriable(&e) => {
                    tokio::time::sleep(self.backoff(attempt, random())).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A random number from the standard library's per-process hash keys.
fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u64(now.map_or(0, |d| d.as_nanos() as u64));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn backoff_grows_to_the_ceiling_and_stays_within_it() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(
            p.backoff(0, u64::MAX),
            Duration::from_nanos(u64::MAX % 100_000_001)
        );
        assert_eq!(p.backoff(0, 100_000_000), Duration::from_millis(100));
        assert_eq!(p.backoff(3, 800_000_000), Duration::from_millis(800));
        assert_eq!(
            p.backoff(4, 1_000_000_000),
            Duration::from_secs(1),
            "capped"
        );
        assert_eq!(p.backoff(40, 1_000_000_000), Duration::from_secs(1));
        // Jitter spreads the waits over the whole range.
        let waits: Vec<Duration> = (0..1000).map(|_| p.backoff(5, random())).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(1)));
        let low = waits
            .iter()
            .filter(|w| **w < Duration::from_millis(500))
            .count();
        assert!((300..700).contains(&low), "{low} of 1000 in the lower half");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_what_is_retriable_and_stops_at_the_rest() {
        let p = RetryPolicy::default();
        let calls = Cell::new(0);
        let out: Result<u32, &str> = p
            .run(
                |e| *e == "busy",
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move {
                        if n < 3 {
                            Err("busy")
                        } else {
                            Ok(n)
                        }
                    }
                },
            )
            .await;
        assert_eq!(out, Ok(3));
        calls.set(0);
        let out: Result<u32, &str> = p
            .run(
                |e| *e == "busy",
                || {
                    calls.set(calls.get() + 1);
                    async { Err("no such topic") }
                },
            )
            .await;
        assert_eq!((out, calls.get()), (Err("no such topic"), 1));
        calls.set(0);
        let out: Result<u32, &str> = p
            .run(
                |_| true,
                || {
                    calls.set(calls.get() + 1);
                    async { Err("busy") }
                },
            )
            .await;
        assert_eq!(
            (out, calls.get()),
            (Err("busy"), 5),
            "gives up after the attempts"
        );
    }
}
