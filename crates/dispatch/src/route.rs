//! A route: one ring epoch, the workers it sends to, and the bookkeeping that lets a resize
//! know when every submitter that routed with it has finished.
//!
//! Submitters register on the current route before they pick a worker and leave it once the
//! task is in that worker's channel. A resize publishes a new route and *seals* the old one:
//! from then on nobody registers on it, and when the last registered submitter leaves, the
//! route's drained action runs (it tells the old workers to hand off the keys that moved).
//! That action is run by whoever leaves last, so it happens even if the resize's future is
//! dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{Notify, Semaphore};

use crate::ring::Ring;
use crate::worker::Msg;

/// What a dispatcher sends to one worker, and the worker's counters.
pub(crate) struct Link<K, S> {
    pub id: usize,
    pub tx: UnboundedSender<Msg<K, S>>,
    /// One permit per task the worker may hold (queued, parked or running). A task takes its
    /// permit before it is sent and the worker gives it back when the task finishes, so the
    /// channel, though unbounded in type, never holds more tasks than this.
    pub permits: Semaphore,
    pub stats: Counters,
}

impl<K, S> Link<K, S> {
    pub fn send(&self, msg: Msg<K, S>) -> bool {
        self.tx.send(msg).is_ok()
    }
}

/// A worker's counters, written by the worker only and read by anyone.
pub(crate) struct Counters {
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    pub done: AtomicU64,
    pub panics: AtomicU64,
    /// Nanoseconds spent with at least one task held, up to the last time the worker went idle.
    pub busy_ns: AtomicU64,
    /// When the current busy span began (ns since the dispatcher's origin), or `IDLE`.
    pub busy_since: AtomicU64,
}

pub(crate) const IDLE: u64 = u64::MAX;

impl Counters {
    pub fn new() -> Counters {
        Counters {
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            busy_since: AtomicU64::new(IDLE),
        }
    }

    /// Busy time up to `now` (ns since `origin`), including a span still open.
    pub fn busy(&self, now_ns: u64) -> Duration {
        let total = self.busy_ns.load(Relaxed);
        let since = self.busy_since.load(Relaxed);
        let open = if since == IDLE {
            0
        } else {
            now_ns.saturating_sub(since)
        };
        Duration::from_nanos(total + open)
    }
}

pub(crate) fn nanos_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
}

/// What a sealed route sends each of its workers once its last submitter has left.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Drained {
    /// A resize: hand off the keys that moved.
    Seal,
    /// The dispatcher closed: finish what you hold and exit.
    Shutdown,
}

pub(crate) struct Route<K, S> {
    pub epoch: u64,
    pub ring: Ring,
    pub links: Vec<Arc<Link<K, S>>>,
    /// How many workers of the previous route must release their keys into this one before
    /// the resize that made it is complete (0 for the first route).
    pub releases_expected: usize,
    pub released: AtomicUsize,
    /// Woken when `released` grows.
    pub changed: Notify,
    active: AtomicUsize,
    sealed: AtomicBool,
    drained: Mutex<Option<Drained>>,
}

impl<K, S> Route<K, S> {
    pub fn new(
        epoch: u64,
        ring: Ring,
        links: Vec<Arc<Link<K, S>>>,
        releases_expected: usize,
    ) -> Self {
        assert_eq!(ring.workers(), links.len());
        Route {
            epoch,
            ring,
            links,
            releases_expected,
            released: AtomicUsize::new(0),
            changed: Notify::new(),
            active: AtomicUsize::new(0),
            sealed: AtomicBool::new(false),
            drained: Mutex::new(None),
        }
    }

    /// Registers a submitter. `false` if the route is sealed: read the current one again.
    pub fn enter(&self) -> bool {
        self.active.fetch_add(1, SeqCst);
        if self.sealed.load(SeqCst) {
            self.leave();
            return false;
        }
        true
    }

    pub fn leave(&self) {
        if self.active.fetch_sub(1, SeqCst) == 1 && self.sealed.load(SeqCst) {
            self.run_drained();
        }
    }

    /// No submitter may register from now on; `then` runs once the registered ones have left.
    pub fn seal(&self, then: Drained) {
        *self.drained.lock().expect("route lock") = Some(then);
        self.sealed.store(true, SeqCst);
        if self.active.load(SeqCst) == 0 {
            self.run_drained();
        }
    }

    fn run_drained(&self) {
        let Some(then) = self.drained.lock().expect("route lock").take() else {
            return;
        };
        for link in &self.links {
            link.send(match then {
                Drained::Seal => Msg::Seal,
                Drained::Shutdown => Msg::Shutdown,
            });
        }
    }

    /// Called by an old worker once it has handed off every key that moved.
    pub fn release(&self) {
        self.released.fetch_add(1, SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until every old worker has released its moved keys into this route.
    pub async fn settled(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.released.load(SeqCst) >= self.releases_expected {
                return;
            }
            changed.await;
        }
    }
}
