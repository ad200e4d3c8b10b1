//! A circuit breaker for "is the broker reachable at all": closed while it is, open (calls fail
//! at once) once it has been unreachable long enough, half-open while one probe finds out
//! whether it is back.
//!
//! librdkafka retries on its own, so the breaker does not count failed calls: it listens to
//! the client's "all brokers are down" signal and to successes. A client that has never reached
//! the broker opens on the first signal (nothing to wait for: `weir produce` against no broker
//! fails in milliseconds); a client that was connected waits `grace` first, so a broker restart
//! is ridden out by librdkafka's own retries instead of failing calls.
//!
//! The state machine takes the time as an argument, so it is tested without sleeping.

use std::time::{Duration, Instant};

/// How the breaker opens and probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// How long a client that had reached the broker keeps queueing calls after it lost it.
    pub grace: Duration,
    /// How long the breaker stays open before it lets one probe through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            grace: Duration::from_secs(15),
            open_for: Duration::from_secs(1),
        }
    }
}

/// What a caller may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Pass,
    /// Run the probe, then report it with [`Breaker::probed`].
    Probe,
    /// Fail at once with this cause.
    Reject(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Calls pass. `failing_since`: the first "all down" signal not yet followed by a success.
    Closed {
        failing_since: Option<Instant>,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; everyone else is rejected until it reports.
    HalfOpen,
}

/// The breaker of one client.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    /// Whether the broker was ever reached: before that, the first failure opens at once.
    reached: bool,
    /// What the client last said about the failure ("connection refused").
    cause: String,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            state: State::Closed {
                failing_since: None,
            },
            reached: false,
            cause: String::new(),
        }
    }

    /// Records why the broker is failing, without changing the state.
    pub fn note(&mut self, cause: &str) {
        if !cause.is_empty() {
            self.cause = cause.to_string();
        }
    }

    /// The broker answered.
    pub fn succeeded(&mut self) {
        self.reached = true;
        self.state = State::Closed {
            failing_since: None,
        };
    }

    /// The client reports every broker down, because of `cause`.
    pub fn failed(&mut self, now: Instant, cause: &str) {
        if !cause.is_empty() {
            self.cause = cause.to_string();
        }
        match self.state {
            State::Closed { failing_since } => {
                let since = failing_since.unwrap_or(now);
                if !self.reached || now.duration_since(since) >= self.config.grace {
                    self.open(now);
                } else {
                    self.state = State::Closed {
                        failing_since: Some(since),
                    };
                }
            }
            // An open breaker stays open; a probe reports through `probed`.
            State::Open { .. } | State::HalfOpen => {}
        }
    }

    /// Decides whether a call may go ahead at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            // The grace ran out with no success seen: librdkafka may have reconnected
            // quietly, so ask before refusing.
            State::Closed {
                failing_since: Some(since),
            } if now.duration_since(since) >= self.config.grace => {
                self.state = State::HalfOpen;
                Admit::Probe
            }
            State::Closed { .. } => Admit::Pass,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Admit::Probe
            }
            State::Open { .. } | State::HalfOpen => self.reject(),
        }
    }

    /// The probe handed out by [`admit`](Self::admit) finished.
    pub fn probed(&mut self, now: Instant, ok: bool, cause: &str) {
        if ok {
            self.succeeded();
        } else {
            if !cause.is_empty() {
                self.cause = cause.to_string();
            }
            self.open(now);
        }
    }

    /// Whether calls are being failed fast right now.
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }

    /// The last reported cause of unreachability ("" if none).
    pub fn cause(&self) -> &str {
        &self.cause
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open {
            until: now + self.config.open_for,
        };
    }

    fn reject(&self) -> Admit {
        let cause = if self.cause.is_empty() {
            "no broker answers"
        } else {
            &self.cause
        };
        Admit::Reject(cause.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);
    const OPEN_FOR: Duration = Duration::from_secs(1);

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            grace: GRACE,
            open_for: OPEN_FOR,
        })
    }

    #[test]
    fn never_reached_opens_on_the_first_failure() {
        let t = Instant::now();
        let mut b = breaker();
        assert_eq!(b.admit(t), Admit::Pass);
        b.failed(t, "connection refused");
        assert_eq!(b.admit(t), Admit::Reject("connection refused".into()));
        assert!(b.is_open());
    }

    #[test]
    fn a_reached_broker_gets_the_grace_before_opening() {
        let t = Instant::now();
        let mut b = breaker();
        b.succeeded();
        b.failed(t, "connection refused");
        assert_eq!(b.admit(t + GRACE / 2), Admit::Pass, "within grace: queue");
        // A repeated signal does not restart the clock.
        b.failed(t + GRACE / 2, "connection refused");
        assert_eq!(b.admit(t + GRACE), Admit::Probe, "after the grace: ask");
        b.probed(t + GRACE, false, "connection refused");
        assert_eq!(
            b.admit(t + GRACE),
            Admit::Reject("connection refused".into())
        );
        // A success inside the grace closes it again.
        let mut b = breaker();
        b.succeeded();
        b.failed(t, "x");
        b.succeeded();
        assert_eq!(b.admit(t + GRACE * 2), Admit::Pass);
    }

    #[test]
    fn open_probes_once_then_closes_or_reopens() {
        let t = Instant::now();
        let mut b = breaker();
        b.failed(t, "connection refused");
        assert!(matches!(b.admit(t + OPEN_FOR / 2), Admit::Reject(_)));
        assert_eq!(b.admit(t + OPEN_FOR), Admit::Probe);
        assert!(
            matches!(b.admit(t + OPEN_FOR), Admit::Reject(_)),
            "one probe at a time"
        );
        b.probed(t + OPEN_FOR * 2, false, "timed out");
        assert_eq!(b.admit(t + OPEN_FOR * 2), Admit::Reject("timed out".into()));
        assert_eq!(b.admit(t + OPEN_FOR * 3), Admit::Probe);
        b.probed(t + OPEN_FOR * 3, true, "");
        assert_eq!(b.admit(t + OPEN_FOR * 3), Admit::Pass);
        assert!(!b.is_open());
    }
}
