//! A circuit breaker for the calls a handler makes to another service (../shared/reference/002
//! §4.3): closed while the service answers; open (every call fails at once) when the error
//! rate over a sliding window crosses a threshold; half-open after `open_for`, letting a few
//! probe calls through; closed again after `probes` successful probes in a row, open again on
//! a failed one.
//!
//! The state machine ([`Core`]) takes the time as input; [`CircuitBreaker`] wraps it for
//! concurrent use with tokio's clock, so tests run with the clock paused.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// The sliding window the error rate is measured over, kept in `buckets` slices.
    pub window: Duration,
    pub buckets: u32,
    /// Calls the window must hold before the rate counts.
    pub calls_min: u64,
    /// Error fraction at or above which the breaker opens.
    pub error_rate: f64,
    pub open_for: Duration,
    /// Probe calls let through at once while half-open, and successes in a row that close it.
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Duration::from_secs(10),
            buckets: 10,
            calls_min: 20,
            error_rate: 0.5,
            open_for: Duration::from_secs(5),
            probes: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

/// Why a call through the breaker failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError<E> {
    #[error("circuit open: the service failed too often; retry after it has recovered")]
    Open,
    #[error(transparent)]
    Failed(E),
}

/// What kind of call was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    Normal,
    /// A probe of the given half-open period: an outcome arriving after the breaker has
    /// opened and half-opened again belongs to an older period and is ignored.
    Probe(u64),
}

#[derive(Debug, Clone, Copy, Default)]
struct Slice {
    index: u64,
    ok: u64,
    err: u64,
}

/// The breaker's state machine.
#[derive(Debug)]
pub struct Core {
    config: BreakerConfig,
    origin: Instant,
    slices: Vec<Slice>,
    state: State,
    opened_at: Instant,
    probes_out: u32,
    probes_ok: u32,
    /// Counts half-open periods.
    period: u64,
}

impl Core {
    pub fn new(config: BreakerConfig, now: Instant) -> Core {
        assert!(config.buckets >= 1 && !config.window.is_zero() && config.probes >= 1);
        Core {
            slices: vec![Slice::default(); config.buckets as usize],
            config,
            origin: now,
            state: State::Closed,
            opened_at: now,
            probes_out: 0,
            probes_ok: 0,
            period: 0,
        }
    }

    pub fn state(&self, now: Instant) -> State {
        if self.state == State::Open && now >= self.opened_at + self.config.open_for {
            State::HalfOpen
        } else {
            self.state
        }
    }

    /// May a call go through now?
    pub fn admit(&mut self, now: Instant) -> Option<Ticket> {
        match self.state(now) {
            State::Closed => Some(Ticket::Normal),
            State::Open => None,
            State::HalfOpen => {
                if self.state == State::Open {
                    self.state = State::HalfOpen;
                    self.probes_out = 0;
                    self.probes_ok = 0;
                    self.period += 1;
                }
                if self.probes_out < self.config.probes {
                    self.probes_out += 1;
                    Some(Ticket::Probe(self.period))
                } else {
                    None
                }
            }
        }
    }

    /// The outcome of a call let through with `ticket`.
    pub fn record(&mut self, now: Instant, ticket: Ticket, ok: bool) {
        match ticket {
            Ticket::Normal => {
                self.count(now, ok);
                if self.state == State::Closed && self.tripped(now) {
                    self.open(now);
                }
            }
            Ticket::Probe(period) => {
                if self.state != State::HalfOpen || period != self.period {
                    return;
                }
                self.probes_out -= 1;
                if !ok {
                    self.open(now);
                } else {
                    self.probes_ok += 1;
                    if self.probes_ok >= self.config.probes {
                        self.state = State::Closed;
                        self.slices.fill(Slice::default());
                    }
                }
            }
        }
    }

    /// A call let through was dropped before it finished: its probe slot is free again.
    pub fn abandon(&mut self, ticket: Ticket) {
        if ticket == Ticket::Probe(self.period) && self.state == State::HalfOpen {
            self.probes_out -= 1;
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open;
        self.opened_at = now;
    }

    fn slice_index(&self, now: Instant) -> u64 {
        let slice = self.config.window / self.config.buckets;
        let since = now.saturating_duration_since(self.origin).as_nanos();
        (since / slice.as_nanos().max(1)) as u64
    }

    fn count(&mut self, now: Instant, ok: bool) {
        let index = self.slice_index(now);
        let n = self.slices.len() as u64;
        let slice = &mut self.slices[(index % n) as usize];
        if slice.index != index {
            *slice = Slice {
                index,
                ok: 0,
                err: 0,
            };
        }
        if ok {
            slice.ok += 1;
        } else {
            slice.err += 1;
        }
    }

    fn tripped(&self, now: Instant) -> bool {
        let index = self.slice_index(now);
        let n = self.slices.len() as u64;
        let (mut ok, mut err) = (0, 0);
        for s in &self.slices {
            if s.index + n > index {
                ok += s.ok;
                err += s.err;
            }
        }
        let calls = ok + err;
        calls >= self.config.calls_min
            && calls > 0
            && err as f64 >= self.config.error_rate * calls as f64
    }
}

/// A circuit breaker, shareable across tasks and threads.
#[derive(Debug)]
pub struct CircuitBreaker {
    core: Mutex<Core>,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            core: Mutex::new(Core::new(config, Instant::now())),
        }
    }

    pub fn state(&self) -> State {
        self.core
            .lock()
            .expect("breaker lock")
            .state(Instant::now())
    }

    /// Runs `call` unless the breaker is open; an `Err` from it counts as a failure.
    pub async fn call<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, CallError<E>> {
        let ticket = self
            .core
            .lock()
            .expect("breaker lock")
            .admit(Instant::now());
        let Some(ticket) = ticket else {
            return Err(CallError::Open);
        };
        let mut guard = Abandon {
            breaker: self,
            ticket: Some(ticket),
        };
        let out = call.await;
        guard.ticket = None;
        self.core
            .lock()
            .expect("breaker lock")
            .record(Instant::now(), ticket, out.is_ok());
        out.map_err(CallError::Failed)
    }
}

struct Abandon<'a> {
    breaker: &'a CircuitBreaker,
    ticket: Option<Ticket>,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            if let Ok(mut core) = self.breaker.core.lock() {
                core.abandon(ticket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_from_an_earlier_half_open_period_is_ignored() {
        let config = BreakerConfig {
            calls_min: 2,
            probes: 3,
            ..BreakerConfig::default()
        };
        let t0 = Instant::now();
        let mut core = Core::new(config, t0);
        for _ in 0..2 {
            let ticket = core.admit(t0).unwrap();
            core.record(t0, ticket, false);
        }
        assert_eq!(core.state(t0), State::Open);
        let t1 = t0 + Duration::from_secs(5);
        let (a, b, c) = (
            core.admit(t1).unwrap(),
            core.admit(t1).unwrap(),
            core.admit(t1).unwrap(),
        );
        assert_eq!(core.admit(t1), None, "three probes at most");
        core.record(t1, a, false);
        assert_eq!(core.state(t1), State::Open);
        // The next half-open period: its probe is out when the old, slow ones come back.
        let t2 = t1 + Duration::from_secs(5);
        let d = core.admit(t2).unwrap();
        core.record(t2, b, true);
        core.record(t2, c, true);
        core.abandon(b);
        assert_eq!(
            core.state(t2),
            State::HalfOpen,
            "old successes do not close it"
        );
        core.record(t2, d, true);
        // The stale outcomes freed no slots: three probes out at most, as before.
        let (e, f, g) = (
            core.admit(t2).unwrap(),
            core.admit(t2).unwrap(),
            core.admit(t2).unwrap(),
        );
        assert_eq!(core.admit(t2), None);
        core.record(t2, e, true);
        assert_eq!(core.state(t2), State::HalfOpen);
        core.record(t2, f, true);
        assert_eq!(
            core.state(t2),
            State::Closed,
            "three successes of this period close it"
        );
        core.record(t2, g, true);
    }
}
