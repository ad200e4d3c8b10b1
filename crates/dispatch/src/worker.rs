//! A worker: one OS thread running a current_thread tokio runtime, holding the keys the ring
//! gives it. For each key it keeps a FIFO of tasks, the key's state, and whether a task of the
//! key is running; at most one task per key runs at a time, and up to `running_tasks_max` keys
//! run concurrently (a task waiting on I/O parks and the worker polls others).
//!
//! A task owns its key's state while it runs (the state is moved into the task's future and
//! handed back when it completes), so state needs no lock, and after a resize it can be moved
//! to the key's new worker as a plain value.
//!
//! Resize protocol (ARCHITECTURE.md decision 31), seen from a worker:
//! 1. The first message routed by a new ring (a task, or `Seal`) makes the worker adopt it,
//!    keeping the previous ring until the transition ends.
//! 2. A task for a key this worker gains from worker A waits ("parked") until A hands the key
//!    over (`Handoff`, with its state) or declares it has nothing more to hand (`Released`).
//! 3. `Seal` is sent once every submitter that routed with the old ring has sent its task, so
//!    in this FIFO channel every old-ring task comes before it. For each key whose owner
//!    changed, the worker then hands it off at once if idle,
//!    or when its last queued task has finished. When none is left it sends `Released` to
//!    every worker of the new ring. A retiring worker then exits.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hash};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::dispatcher::Shared;
use crate::ring::StableHasher;
use crate::route::{nanos_since, Link, Route, IDLE};

/// Permits given back at once while messages keep coming (they are also given back whenever
/// the worker is about to wait): one semaphore operation per batch instead of per task.
const PERMIT_BATCH: usize = 32;

/// Keys are hashed again for the worker's map; the ring's fixed hasher is cheaper than SipHash
/// and keys come from the application, not from an adversary.
type KeyMap<K, S> = HashMap<K, Slot<S>, BuildHasherDefault<StableHasher>>;

pub(crate) type LocalFuture<S> = Pin<Box<dyn Future<Output = S>>>;

/// A submitted task: given the key's state, a future that hands the state back.
pub(crate) type Job<S> = Box<dyn FnOnce(S) -> LocalFuture<S> + Send>;

pub(crate) enum Msg<K, S> {
    Task {
        key: K,
        hash: u64,
        epoch: u64,
        job: Job<S>,
    },
    /// Every task routed by the previous ring is in the channel ahead of this.
    Seal,
    /// A key that moved here, with its state; its old worker has finished its tasks.
    Handoff { key: K, state: Option<S> },
    /// Worker `from` has handed off everything that moved from it.
    Released { from: usize },
    /// Finish every held task, then exit.
    Shutdown,
}

struct Slot<S> {
    hash: u64,
    queue: VecDeque<Job<S>>,
    /// `None` while a task holds it, or before the first task.
    state: Option<S>,
    running: bool,
    in_ready: bool,
    /// The key moved here from this worker, which has not handed it over yet.
    waiting_for: Option<usize>,
    /// The key moved away to this worker: hand it over once idle.
    moving_to: Option<usize>,
}

impl<S> Slot<S> {
    fn idle(&self) -> bool {
        !self.running && self.queue.is_empty()
    }
}

struct Transition<K, S> {
    prev: Arc<Route<K, S>>,
    /// Which workers of the previous ring have released their moved keys.
    released: Vec<bool>,
    sealed: bool,
    /// Keys still to hand off once their tasks finish.
    moving: usize,
}

pub(crate) struct Worker<K, S> {
    id: usize,
    shared: Arc<Shared<K, S>>,
    link: Arc<Link<K, S>>,
    rx: UnboundedReceiver<Msg<K, S>>,
    route: Arc<Route<K, S>>,
    transition: Option<Transition<K, S>>,
    keys: KeyMap<K, S>,
    /// Keys with a task ready to start, waiting for a running slot.
    ready: VecDeque<K>,
    running: usize,
    /// Tasks held: queued, parked or running.
    held: usize,
    /// Finished tasks whose permits have not been given back yet (see `flush`).
    unreturned: usize,
    done: u64,
    panics: u64,
    /// A busy span is open: the worker holds tasks or is working through messages.
    busy: bool,
    draining: bool,
    retiring: bool,
    done_tx: UnboundedSender<(K, Option<S>)>,
    done_rx: UnboundedReceiver<(K, Option<S>)>,
}

impl<K, S> Worker<K, S>
where
    K: Hash + Eq + Clone + Send + 'static,
    S: Default + Send + 'static,
{
    pub fn new(
        shared: Arc<Shared<K, S>>,
        link: Arc<Link<K, S>>,
        rx: UnboundedReceiver<Msg<K, S>>,
        route: Arc<Route<K, S>>,
        prev: Option<Arc<Route<K, S>>>,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let transition = prev.map(|prev| Transition {
            released: vec![false; prev.links.len()],
            prev,
            sealed: true,
            moving: 0,
        });
        Worker {
            id: link.id,
            shared,
            link,
            rx,
            route,
            transition,
            keys: KeyMap::default(),
            ready: VecDeque::new(),
            running: 0,
            held: 0,
            unreturned: 0,
            done: 0,
            panics: 0,
            busy: false,
            draining: false,
            retiring: false,
            done_tx,
            done_rx,
        }
    }

    pub async fn run(mut self) {
        loop {
            if self.rx.is_empty() && self.done_rx.is_empty() {
                // About to wait: publish what the batch did.
                self.flush();
            }
            tokio::select! {
                biased;
                Some((key, state)) = self.done_rx.recv() => self.finished(key, state),
                msg = self.rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => break,
                },
            }
            if !self.busy {
                self.busy = true;
                let now = nanos_since(self.shared.origin);
                self.link.stats.busy_since.store(now, Relaxed);
            }
            if self.unreturned >= PERMIT_BATCH {
                self.link.permits.add_permits(self.unreturned);
                self.unreturned = 0;
            }
            if self.retiring {
                // Nothing routes here any more and everything held has been handed off.
                assert!(
                    self.keys.is_empty() && self.held == 0,
                    "a retiring worker kept work"
                );
                break;
            }
            if self.draining && self.held == 0 && self.transition.is_none() {
                break;
            }
        }
        self.flush();
    }

    fn handle(&mut self, msg: Msg<K, S>) {
        match msg {
            Msg::Task {
                key,
                hash,
                epoch,
                job,
            } => {
                if epoch > self.route.epoch {
                    self.adopt_current_route();
                }
                assert!(
                    epoch <= self.route.epoch,
                    "a task from a ring not yet published"
                );
                self.admit(key, hash, job);
            }
            Msg::Seal => self.seal(),
            Msg::Handoff { key, state } => {
                self.adopt_if_behind();
                self.handoff_in(key, state)
            }
            Msg::Released { from } => {
                self.adopt_if_behind();
                self.released(from)
            }
            Msg::Shutdown => {
                self.draining = true;
                // A resize published after this worker's last message: take part in its
                // hand-off before exiting (its `Seal` may still be held back by a submitter).
                if self.transition.is_none() && self.route.epoch < self.shared.current().epoch {
                    self.adopt_current_route();
                }
                // Started for a resize that failed before its ring was published: nothing
                // was ever routed here.
                if self.route.epoch > self.shared.current().epoch {
                    self.retiring = true;
                }
            }
        }
    }

    fn adopt_current_route(&mut self) {
        let route = self.shared.current();
        assert_eq!(route.epoch, self.route.epoch + 1, "two resizes overlapped");
        assert!(
            self.transition.is_none(),
            "a new ring before the last transition ended"
        );
        let prev = std::mem::replace(&mut self.route, route);
        self.transition = Some(Transition {
            released: vec![false; prev.links.len()],
            prev,
            sealed: false,
            moving: 0,
        });
    }

    /// Another worker may hand off or release before this one has seen its first message of
    /// the new ring; those messages belong to the new ring's transition.
    fn adopt_if_behind(&mut self) {
        if self.transition.is_none() {
            self.adopt_current_route();
        }
    }

    /// The old worker a key that now belongs here must wait for, if any.
    fn wait_for(&self, hash: u64) -> Option<usize> {
        let t = self.transition.as_ref()?;
        let old = t.prev.ring.owner(hash);
        (old != self.id && !t.released[old]).then_some(old)
    }

    fn admit(&mut self, key: K, hash: u64, job: Job<S>) {
        self.held += 1;
        match self.keys.get_mut(&key) {
            Some(slot) => slot.queue.push_back(job),
            None => {
                let slot = Slot {
                    hash,
                    queue: VecDeque::from([job]),
                    state: None,
                    running: false,
                    in_ready: false,
                    waiting_for: self.wait_for(hash),
                    moving_to: None,
                };
                self.keys.insert(key.clone(), slot);
            }
        }
        self.drive(&key);
    }

    /// Starts the key's next tasks while they finish at once and a running slot is free.
    fn drive(&mut self, key: &K) {
        loop {
            let Some(slot) = self.keys.get_mut(key) else {
                return;
            };
            if slot.running || slot.waiting_for.is_some() || slot.queue.is_empty() {
                break;
            }
            if self.running >= self.shared.config.running_tasks_max {
                if !slot.in_ready {
                    slot.in_ready = true;
                    self.ready.push_back(key.clone());
                }
                return;
            }
            let job = slot.queue.pop_front().expect("checked non-empty");
            let state = slot.state.take().unwrap_or_default();
            let mut future = job(state);
            // Most trivial tasks finish on their first poll: run that poll here and spare
            // them a spawned task. A pending future is then spawned and polled again with a
            // real waker (every future re-registers its waker on each poll).
            let mut cx = Context::from_waker(Waker::noop());
            match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
                Ok(Poll::Ready(state)) => {
                    slot.state = Some(state);
                    self.task_done(false);
                }
                Err(_) => self.task_done(true),
                Ok(Poll::Pending) => {
                    slot.running = true;
                    self.running += 1;
                    let done = Done {
                        key: Some(key.clone()),
                        tx: self.done_tx.clone(),
                    };
                    tokio::task::spawn_local(async move {
                        let state = future.await;
                        done.finish(state);
                    });
                    break;
                }
            }
        }
        self.settle(key);
    }

    fn finished(&mut self, key: K, state: Option<S>) {
        self.running -= 1;
        let panicked = state.is_none();
        if let Some(slot) = self.keys.get_mut(&key) {
            slot.running = false;
            slot.state = state;
        }
        self.task_done(panicked);
        while self.running < self.shared.config.running_tasks_max {
            let Some(next) = self.ready.pop_front() else {
                break;
            };
            if let Some(slot) = self.keys.get_mut(&next) {
                slot.in_ready = false;
            }
            self.drive(&next);
        }
        self.drive(&key);
    }

    fn task_done(&mut self, panicked: bool) {
        self.held -= 1;
        self.unreturned += 1;
        self.done += 1;
        self.panics += u64::from(panicked);
    }

    /// Gives back finished tasks' permits and publishes the counters; ends the busy span if
    /// nothing is held. Called before the worker waits, so batches share the cost.
    fn flush(&mut self) {
        if self.unreturned > 0 {
            self.link.permits.add_permits(self.unreturned);
            self.unreturned = 0;
        }
        let stats = &self.link.stats;
        stats.queued.store(self.held, Relaxed);
        stats.running.store(self.running, Relaxed);
        stats.done.store(self.done, Relaxed);
        stats.panics.store(self.panics, Relaxed);
        if self.busy && self.held == 0 {
            self.busy = false;
            let since = stats.busy_since.swap(IDLE, Relaxed);
            if since != IDLE {
                let span = nanos_since(self.shared.origin).saturating_sub(since);
                stats.busy_ns.fetch_add(span, Relaxed);
            }
        }
    }

    /// An idle key: hand it off if it moved away, forget it if its state is not worth keeping.
    fn settle(&mut self, key: &K) {
        let Some(slot) = self.keys.get(key) else {
            return;
        };
        if !slot.idle() {
            return;
        }
        if let Some(to) = slot.moving_to {
            let slot = self.keys.remove(key).expect("present");
            self.send_to(
                to,
                Msg::Handoff {
                    key: key.clone(),
                    state: slot.state,
                },
            );
            let t = self
                .transition
                .as_mut()
                .expect("moving keys only in a transition");
            t.moving -= 1;
            if t.moving == 0 {
                self.release();
            }
        } else if slot.waiting_for.is_none()
            && !slot.state.as_ref().is_some_and(|s| (self.shared.retain)(s))
        {
            self.keys.remove(key);
        }
    }

    fn send_to(&self, worker: usize, msg: Msg<K, S>) {
        // A worker of the current route exits only after the dispatcher shut down and it
        // finished everything; a message it can no longer receive has nothing left to affect.
        let _ = self.route.links[worker].send(msg);
    }

    fn seal(&mut self) {
        if self.transition.is_none() {
            self.adopt_current_route();
        }
        // Every task routed by the old ring was sent before this `Seal`, into this same FIFO
        // channel, so all of them have been taken in already.
        let me = self.id;
        let mut idle = Vec::new();
        let mut moving = 0;
        for (key, slot) in self.keys.iter_mut() {
            let owner = self.route.ring.owner(slot.hash);
            if owner == me {
                continue;
            }
            assert!(
                slot.waiting_for.is_none(),
                "a key waiting to move in also moving out"
            );
            if slot.idle() {
                idle.push(key.clone());
            } else {
                slot.moving_to = Some(owner);
                moving += 1;
            }
        }
        for key in idle {
            let slot = self.keys.remove(&key).expect("present");
            let to = self.route.ring.owner(slot.hash);
            self.send_to(
                to,
                Msg::Handoff {
                    key,
                    state: slot.state,
                },
            );
        }
        let t = self.transition.as_mut().expect("adopted above");
        t.sealed = true;
        t.moving = moving;
        if moving == 0 {
            self.release();
        }
    }

    /// Everything that moved away from here has been handed off.
    fn release(&mut self) {
        let me = self.id;
        for link in &self.route.links {
            if link.id != me {
                let _ = link.send(Msg::Released { from: me });
            }
        }
        self.route.release();
        if me >= self.route.links.len() {
            self.retiring = true;
        }
        self.released(me);
    }

    fn handoff_in(&mut self, key: K, state: Option<S>) {
        match self.keys.get_mut(&key) {
            Some(slot) => {
                slot.waiting_for = None;
                slot.state = state;
            }
            None => {
                let hash = crate::ring::key_hash(&key);
                let slot = Slot {
                    hash,
                    queue: VecDeque::new(),
                    state,
                    running: false,
                    in_ready: false,
                    waiting_for: None,
                    moving_to: None,
                };
                self.keys.insert(key.clone(), slot);
            }
        }
        self.drive(&key);
    }

    fn released(&mut self, from: usize) {
        let Some(t) = self.transition.as_mut() else {
            return;
        };
        if let Some(r) = t.released.get_mut(from) {
            *r = true;
        }
        let mut unblocked = Vec::new();
        for (key, slot) in self.keys.iter_mut() {
            if slot.waiting_for == Some(from) {
                slot.waiting_for = None;
                unblocked.push(key.clone());
            }
        }
        // Old workers are all released (this one too, if it was one): the transition is over.
        let t = self.transition.as_ref().expect("checked above");
        let own_done = self.id >= t.released.len() || t.released[self.id];
        if own_done && t.released.iter().all(|&r| r) {
            assert!(t.sealed || self.id >= t.released.len());
            self.transition = None;
        }
        for key in unblocked {
            self.drive(&key);
        }
    }
}

/// Reports a spawned task's end to its worker; if the task panicked, its future is dropped
/// while unwinding and this reports the key with no state.
struct Done<K, S> {
    key: Option<K>,
    tx: UnboundedSender<(K, Option<S>)>,
}

impl<K, S> Done<K, S> {
    fn finish(mut self, state: S) {
        if let Some(key) = self.key.take() {
            let _ = self.tx.send((key, Some(state)));
        }
    }
}

impl<K, S> Drop for Done<K, S> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let _ = self.tx.send((key, None));
        }
    }
}
