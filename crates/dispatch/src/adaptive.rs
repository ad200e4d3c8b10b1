//! Adaptive sizing, after the adaptive thread pools of ../shared/reference/004 (models 5 and
//! 6): a control thread samples how busy each worker was; when every worker has been busy for
//! `grow_after` it adds one, and when the workers together have been mostly idle for
//! `shrink_after` it retires one, always within `workers_min..=workers_max`.
//!
//! "Busy" is MongoDB's "thread in use": a worker holding at least one task. The decision is a
//! pure function of the samples ([`Policy`]), tested with made-up samples; the control thread
//! only feeds it.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::dispatcher::{Error, Shared};

/// Adaptive sizing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Adaptive {
    pub workers_min: usize,
    pub workers_max: usize,
    /// How often the control thread samples the workers.
    pub sample_every: Duration,
    /// Add a worker when every worker has been busy at least `busy_fraction` of each sample
    /// for this long.
    pub grow_after: Duration,
    pub busy_fraction: f64,
    /// Retire a worker when the workers' mean idle fraction has stayed above `idle_fraction`
    /// for this long.
    pub shrink_after: Duration,
    pub idle_fraction: f64,
}

impl Default for Adaptive {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Adaptive {
            workers_min: 1,
            workers_max: cores * 4,
            sample_every: Duration::from_millis(100),
            grow_after: Duration::from_millis(500),
            busy_fraction: 0.9,
            shrink_after: Duration::from_secs(10),
            idle_fraction: 0.5,
        }
    }
}

impl Adaptive {
    pub(crate) fn check(&self, workers: usize) -> Result<(), Error> {
        let max = crate::dispatcher::WORKERS_MAX;
        let invalid = |key, got, min, max| Err(Error::Invalid { key, got, min, max });
        if !(1..=max).contains(&self.workers_min) {
            return invalid("adaptive.workers_min", self.workers_min, 1, max);
        }
        if !(self.workers_min..=max).contains(&self.workers_max) {
            return invalid(
                "adaptive.workers_max",
                self.workers_max,
                self.workers_min,
                max,
            );
        }
        if !(self.workers_min..=self.workers_max).contains(&workers) {
            return invalid("workers", workers, self.workers_min, self.workers_max);
        }
        if self.sample_every.is_zero() {
            return invalid("adaptive.sample_every", 0, 1, usize::MAX);
        }
        Ok(())
    }
}

/// The sizing decision, fed one sample at a time.
#[derive(Debug)]
pub struct Policy {
    config: Adaptive,
    busy_since: Option<Instant>,
    idle_since: Option<Instant>,
}

impl Policy {
    pub fn new(config: Adaptive) -> Policy {
        Policy {
            config,
            busy_since: None,
            idle_since: None,
        }
    }

    /// `busy[i]`: the fraction of the last sample worker i held a task. Returns the worker
    /// count to move to, if any.
    pub fn observe(&mut self, now: Instant, busy: &[f64]) -> Option<usize> {
        let n = busy.len();
        if n == 0 {
            return None;
        }
        let c = &self.config;
        let all_busy = busy.iter().all(|&b| b >= c.busy_fraction);
        let idle = 1.0 - busy.iter().sum::<f64>() / n as f64;
        self.busy_since = if all_busy {
            self.busy_since.or(Some(now))
        } else {
            None
        };
        self.idle_since = if idle > c.idle_fraction {
            self.idle_since.or(Some(now))
        } else {
            None
        };
        let target = if n < c.workers_min {
            Some(c.workers_min)
        } else if n > c.workers_max {
            Some(c.workers_max)
        } else if n < c.workers_max && self.busy_since.is_some_and(|t| now - t >= c.grow_after) {
            Some(n + 1)
        } else if n > c.workers_min && self.idle_since.is_some_and(|t| now - t >= c.shrink_after) {
            Some(n - 1)
        } else {
            None
        };
        if target.is_some() {
            // Judge the new size on fresh samples.
            self.busy_since = None;
            self.idle_since = None;
        }
        target
    }
}

/// Starts the control thread; it exits when the dispatcher closes.
pub(crate) fn start<K, S>(shared: Arc<Shared<K, S>>, config: Adaptive) -> Result<(), Error>
where
    K: Hash + Eq + Clone + Send + 'static,
    S: Default + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("weir-dispatch-adapt".into())
        .spawn(move || {
            runtime.block_on(async move {
                let every = config.sample_every;
                let mut policy = Policy::new(config);
                let mut last = shared.stats();
                let mut last_at = Instant::now();
                loop {
                    tokio::time::sleep(every).await;
                    if shared.closed() {
                        return;
                    }
                    let now = Instant::now();
                    let stats = shared.stats();
                    let elapsed = (now - last_at).as_secs_f64().max(1e-9);
                    let busy: Vec<f64> = stats
                        .iter()
                        .map(|s| {
                            let before = last.iter().find(|l| l.worker == s.worker);
                            let was = before.map_or(Duration::ZERO, |l| l.busy);
                            (s.busy.saturating_sub(was).as_secs_f64() / elapsed).min(1.0)
                        })
                        .collect();
                    if let Some(target) = policy.observe(now, &busy) {
                        if shared.resize(target).await.is_err() {
                            return;
                        }
                    }
                    last = shared.stats();
                    last_at = Instant::now();
                }
            })
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Adaptive {
        Adaptive {
            workers_min: 1,
            workers_max: 4,
            sample_every: Duration::from_millis(100),
            grow_after: Duration::from_millis(500),
            busy_fraction: 0.9,
            shrink_after: Duration::from_secs(2),
            idle_fraction: 0.5,
        }
    }

    #[test]
    fn grows_after_every_worker_stays_busy_and_shrinks_after_idling() {
        let mut p = Policy::new(config());
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // One worker not quite busy: no growth however long it lasts.
        for i in 0..20 {
            assert_eq!(p.observe(at(i * 100), &[1.0, 0.5]), None);
        }
        // Both busy: growth once the busy span reaches 500 ms, not before.
        let mut grown = None;
        for i in 20..40 {
            if let Some(n) = p.observe(at(i * 100), &[1.0, 0.95]) {
                grown = Some((i, n));
                break;
            }
        }
        assert_eq!(grown, Some((25, 3)));
        // At the maximum, busy samples change nothing.
        for i in 0..20 {
            assert_eq!(p.observe(at(5_000 + i * 100), &[1.0; 4]), None);
        }
        // Idle: one worker retired per 2 s of idling, down to the minimum.
        let mut sizes = Vec::new();
        let mut n = 4;
        for i in 0..200 {
            if let Some(to) = p.observe(at(10_000 + i * 100), &vec![0.1; n]) {
                sizes.push((i, to));
                n = to;
            }
        }
        assert_eq!(sizes, vec![(20, 3), (41, 2), (62, 1)]);
    }

    #[test]
    fn a_busy_sample_breaks_an_idle_span() {
        let mut p = Policy::new(config());
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for i in 0..19 {
            assert_eq!(p.observe(at(i * 100), &[0.0, 0.0]), None);
        }
        assert_eq!(p.observe(at(1_900), &[1.0, 0.9]), None);
        for i in 20..40 {
            assert_eq!(p.observe(at(i * 100), &[0.0, 0.0]), None, "sample {i}");
        }
        assert_eq!(p.observe(at(4_000), &[0.0, 0.0]), Some(1));
    }
}
