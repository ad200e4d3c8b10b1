//! The dispatcher handle: routes `submit(key, task)` to the key's worker, resizes the worker
//! set, reports per-worker counters, and shuts down after draining.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, Semaphore};

use crate::adaptive::{self, Adaptive};
use crate::ring::{key_hash, Ring, VNODES_DEFAULT};
use crate::route::{nanos_since, Counters, Drained, Link, Route};
use crate::worker::{Job, Msg, Worker};

/// The most workers a dispatcher runs (each is an OS thread).
pub const WORKERS_MAX: usize = 1024;

/// How a dispatcher is sized. Each limit is per worker.
#[derive(Debug, Clone)]
pub struct Config {
    /// Workers at start (and the fixed count unless `adaptive` is set). Default: one per core.
    pub workers: usize,
    /// Tasks a worker holds (queued, waiting behind their key, or running) before `submit`
    /// waits and `try_submit` returns `Full`.
    pub queue_tasks_max: usize,
    /// Keys whose tasks a worker runs concurrently (one task per key at a time).
    pub running_tasks_max: usize,
    /// Points per worker on the consistent-hash ring.
    pub vnodes: usize,
    /// Grow and shrink the worker count with the load.
    pub adaptive: Option<Adaptive>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue_tasks_max: 1024,
            running_tasks_max: 1024,
            vnodes: VNODES_DEFAULT,
            adaptive: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the dispatcher is shut down")]
    Closed,
    #[error("{key} must be between {min} and {max}, got {got}")]
    Invalid {
        key: &'static str,
        got: usize,
        min: usize,
        max: usize,
    },
    #[error("cannot start a worker thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Why [`Dispatcher::try_submit`] did not take a task; the key and task come back.
#[derive(Debug)]
pub enum TrySubmitError<K, F> {
    /// The key's worker holds `queue_tasks_max` tasks.
    Full(K, F),
    Closed(K, F),
}

/// A worker's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStats {
    pub worker: usize,
    /// Tasks held: queued, waiting behind their key, or running.
    pub queued: usize,
    pub running: usize,
    /// Time spent holding at least one task since the worker started.
    pub busy: Duration,
    pub tasks_done: u64,
    /// Tasks that panicked (their key's state was reset to its default).
    pub panics: u64,
}

type Retain<S> = Box<dyn Fn(&S) -> bool + Send + Sync>;
type Inbox<K, S> = mpsc::UnboundedReceiver<Msg<K, S>>;

pub(crate) struct Shared<K, S> {
    pub config: Config,
    pub origin: Instant,
    pub retain: Retain<S>,
    route: RwLock<Arc<Route<K, S>>>,
    closed: AtomicBool,
    /// One resize (or the shutdown) at a time.
    resizing: tokio::sync::Mutex<()>,
    live: AtomicUsize,
    exited: Notify,
}

/// A keyed dispatcher: tasks with the same key run on the same worker, one at a time, in the
/// order they were submitted; each task gets `&mut S`, the key's state, which lives on that
/// worker. See the crate docs for an example.
///
/// Cloning gives another handle to the same dispatcher; the workers shut down (after finishing
/// what they hold) when [`Dispatcher::shutdown`] is called or the last handle is dropped.
pub struct Dispatcher<K, S = ()> {
    inner: Arc<Handle<K, S>>,
}

impl<K, S> Clone for Dispatcher<K, S> {
    fn clone(&self) -> Self {
        Dispatcher {
            inner: self.inner.clone(),
        }
    }
}

struct Handle<K, S> {
    shared: Arc<Shared<K, S>>,
}

impl<K, S> Drop for Handle<K, S> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl<K, S> Dispatcher<K, S>
where
    K: Hash + Eq + Clone + Send + 'static,
    S: Default + Send + 'static,
{
    /// Starts the workers. A key's state is kept while it holds anything (a zero-sized state
    /// holds nothing, so keys without state cost memory only while they have tasks).
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::with_retain(config, |_| std::mem::size_of::<S>() != 0)
    }

    /// Starts the workers; an idle key's state is kept only while `retain` says so, which is
    /// what bounds memory when keys are many.
    pub fn with_retain(
        config: Config,
        retain: impl Fn(&S) -> bool + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        check("workers", config.workers, 1, WORKERS_MAX)?;
        check(
            "queue_tasks_max",
            config.queue_tasks_max,
            1,
            Semaphore::MAX_PERMITS,
        )?;
        check("running_tasks_max", config.running_tasks_max, 1, usize::MAX)?;
        check("vnodes", config.vnodes, 1, 1 << 16)?;
        if let Some(a) = &config.adaptive {
            a.check(config.workers)?;
        }
        let ring = Ring::new(config.workers, config.vnodes);
        let mut links = Vec::new();
        let mut receivers = Vec::new();
        for id in 0..config.workers {
            let (link, rx) = new_link(id, config.queue_tasks_max);
            links.push(link);
            receivers.push(rx);
        }
        let route = Arc::new(Route::new(0, ring, links, 0));
        let shared = Arc::new(Shared {
            config,
            origin: Instant::now(),
            retain: Box::new(retain),
            route: RwLock::new(route.clone()),
            closed: AtomicBool::new(false),
            resizing: tokio::sync::Mutex::new(()),
            live: AtomicUsize::new(0),
            exited: Notify::new(),
        });
        let dispatcher = Dispatcher {
            inner: Arc::new(Handle {
                shared: shared.clone(),
            }),
        };
        for (link, rx) in route.links.iter().zip(receivers) {
            // On failure the handle drops, which shuts down the workers already started.
            shared.spawn(link.clone(), rx, route.clone(), None)?;
        }
        if let Some(a) = shared.config.adaptive.clone() {
            adaptive::start(shared.clone(), a)?;
        }
        Ok(dispatcher)
    }

    /// Queues `task` on `key`'s worker, waiting while that worker is full. The task runs after
    /// every task submitted earlier for the same key has finished, and gets the key's state.
    pub async fn submit<F>(&self, key: K, task: F) -> Result<(), Error>
    where
        F: AsyncFnOnce(&mut S) + Send + 'static,
    {
        let hash = key_hash(&key);
        let shared = &self.inner.shared;
        // Fast path: a free permit. Holding the route's read lock keeps a resize from
        // publishing a new ring until the task is in the channel.
        let (key, task) = match shared.try_send(key, hash, task) {
            Ok(()) => return Ok(()),
            Err(TrySubmitError::Closed(..)) => return Err(Error::Closed),
            Err(TrySubmitError::Full(key, task)) => (key, task),
        };
        // Slow path: wait for a permit, registered on the route so that a resize waits for
        // this task to be sent before telling the old workers to hand off.
        let route = Registered(shared.enter().ok_or(Error::Closed)?);
        let link = &route.0.links[route.0.ring.owner(hash)];
        if let Ok(permit) = link.permits.acquire().await {
            permit.forget();
            let msg = Msg::Task {
                key,
                hash,
                epoch: route.0.epoch,
                job: job(task),
            };
            assert!(
                link.send(msg),
                "a worker exited while submitters could route to it"
            );
        }
        Ok(())
    }

    /// Like [`submit`](Self::submit), but returns `Full` instead of waiting.
    pub fn try_submit<F>(&self, key: K, task: F) -> Result<(), TrySubmitError<K, F>>
    where
        F: AsyncFnOnce(&mut S) + Send + 'static,
    {
        let hash = key_hash(&key);
        self.inner.shared.try_send(key, hash, task)
    }

    /// Changes the number of workers. Only keys whose ring owner changes move (about 1/n of
    /// them); a moved key's new tasks start after its earlier tasks on the old worker finish,
    /// and its state moves with it. Returns once every moved key has been handed over.
    pub async fn resize(&self, workers: usize) -> Result<(), Error> {
        self.inner.shared.resize(workers).await
    }

    /// The current number of workers.
    pub fn workers(&self) -> usize {
        self.inner.shared.current().links.len()
    }

    /// The worker `key` is routed to now.
    pub fn worker_of(&self, key: &K) -> usize {
        self.inner.shared.current().ring.owner(key_hash(key))
    }

    /// Each current worker's counters.
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.inner.shared.stats()
    }

    /// Stops taking tasks, runs every task already submitted, and waits for the workers to
    /// exit. Later submits fail with `Closed`.
    pub async fn shutdown(&self) {
        let shared = &self.inner.shared;
        {
            let _one = shared.resizing.lock().await;
            // A resize whose future was dropped may still be handing keys over.
            shared.current().settled().await;
            shared.close();
        }
        loop {
            let exited = shared.exited.notified();
            tokio::pin!(exited);
            exited.as_mut().enable();
            if shared.live.load(SeqCst) == 0 {
                return;
            }
            exited.await;
        }
    }
}

/// A submitter registered on a route; leaves it when dropped, also when the `submit` future
/// is cancelled while waiting for a permit (a resize or shutdown waits for every registered
/// submitter to leave).
struct Registered<K, S>(Arc<Route<K, S>>);

impl<K, S> Drop for Registered<K, S> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

fn job<S, F>(task: F) -> Job<S>
where
    S: 'static,
    F: AsyncFnOnce(&mut S) + Send + 'static,
{
    Box::new(move |mut state: S| {
        Box::pin(async move {
            task(&mut state).await;
            state
        })
    })
}

fn check(key: &'static str, got: usize, min: usize, max: usize) -> Result<(), Error> {
    if (min..=max).contains(&got) {
        Ok(())
    } else {
        Err(Error::Invalid { key, got, min, max })
    }
}

fn new_link<K, S>(id: usize, permits: usize) -> (Arc<Link<K, S>>, Inbox<K, S>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let link = Link {
        id,
        tx,
        permits: Semaphore::new(permits),
        stats: Counters::new(),
    };
    (Arc::new(link), rx)
}

impl<K, S> Shared<K, S> {
    pub fn current(&self) -> Arc<Route<K, S>> {
        self.route.read().expect("route lock").clone()
    }

    /// Registers a submitter on the current route; `None` once closed.
    fn enter(&self) -> Option<Arc<Route<K, S>>> {
        loop {
            let route = self.current();
            if route.enter() {
                if self.closed.load(SeqCst) {
                    route.leave();
                    return None;
                }
                return Some(route);
            }
            if self.closed.load(SeqCst) {
                return None;
            }
            std::hint::spin_loop();
        }
    }

    /// Sends the task if its worker has a free permit, under the route's read lock.
    fn try_send<F>(&self, key: K, hash: u64, task: F) -> Result<(), TrySubmitError<K, F>>
    where
        S: 'static,
        F: AsyncFnOnce(&mut S) + Send + 'static,
    {
        let route = self.route.read().expect("route lock");
        if self.closed.load(SeqCst) {
            return Err(TrySubmitError::Closed(key, task));
        }
        let link = &route.links[route.ring.owner(hash)];
        let sent = match link.permits.try_acquire() {
            Ok(permit) => {
                permit.forget();
                let msg = Msg::Task {
                    key,
                    hash,
                    epoch: route.epoch,
                    job: job(task),
                };
                assert!(
                    link.send(msg),
                    "a worker exited while submitters could route to it"
                );
                Ok(())
            }
            // The semaphores are never closed; both mean no room.
            Err(_) => Err(TrySubmitError::Full(key, task)),
        };
        sent
    }

    pub fn closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    /// Stops new submits; each current worker gets `Shutdown` once the submitters already
    /// routing have delivered their tasks.
    fn close(&self) {
        // Under the write lock: no fast-path submitter is between its `closed` check and its
        // send, and no resize is between publishing its route and sealing the old one.
        let route = self.route.write().expect("route lock");
        if self.closed.swap(true, SeqCst) {
            return;
        }
        route.seal(Drained::Shutdown);
    }

    pub fn stats(&self) -> Vec<WorkerStats> {
        let now = nanos_since(self.origin);
        self.current()
            .links
            .iter()
            .map(|l| WorkerStats {
                worker: l.id,
                queued: l.stats.queued.load(Relaxed),
                running: l.stats.running.load(Relaxed),
                busy: l.stats.busy(now),
                tasks_done: l.stats.done.load(Relaxed),
                panics: l.stats.panics.load(Relaxed),
            })
            .collect()
    }
}

struct Live<K, S>(Arc<Shared<K, S>>);

impl<K, S> Drop for Live<K, S> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, SeqCst);
        self.0.exited.notify_waiters();
    }
}

impl<K, S> Shared<K, S>
where
    K: Hash + Eq + Clone + Send + 'static,
    S: Default + Send + 'static,
{
    fn spawn(
        self: &Arc<Self>,
        link: Arc<Link<K, S>>,
        rx: Inbox<K, S>,
        route: Arc<Route<K, S>>,
        prev: Option<Arc<Route<K, S>>>,
    ) -> Result<(), Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let worker = Worker::new(self.clone(), link.clone(), rx, route, prev);
        let shared = self.clone();
        self.live.fetch_add(1, SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("weir-dispatch-{}", link.id))
            .spawn(move || {
                // Counts the worker out even if it panics, after its runtime is gone.
                let _live = Live(shared);
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, worker.run());
                drop(local);
                drop(runtime);
            });
        if let Err(e) = spawned {
            self.live.fetch_sub(1, SeqCst);
            return Err(e.into());
        }
        Ok(())
    }

    pub async fn resize(self: &Arc<Self>, workers: usize) -> Result<(), Error> {
        check("workers", workers, 1, WORKERS_MAX)?;
        let _one = self.resizing.lock().await;
        if self.closed() {
            return Err(Error::Closed);
        }
        let old = self.current();
        // A resize whose future was dropped may still be handing keys over: let it finish.
        old.settled().await;
        if old.links.len() == workers {
            return Ok(());
        }
        let mut links: Vec<_> = old.links.iter().take(workers).cloned().collect();
        let mut receivers = Vec::new();
        for id in old.links.len()..workers {
            let (link, rx) = new_link(id, self.config.queue_tasks_max);
            links.push(link.clone());
            receivers.push((link, rx));
        }
        let ring = Ring::new(workers, self.config.vnodes);
        let route = Arc::new(Route::new(old.epoch + 1, ring, links, old.links.len()));
        for (link, rx) in receivers {
            if let Err(e) = self.spawn(link.clone(), rx, route.clone(), Some(old.clone())) {
                // Workers started for this route never received anything: stop them.
                for l in &route.links[old.links.len()..] {
                    l.send(Msg::Shutdown);
                }
                return Err(e);
            }
        }
        {
            let mut current = self.route.write().expect("route lock");
            if self.closed() {
                // Closed meanwhile (the last handle dropped): the new workers got nothing.
                for l in &route.links[old.links.len()..] {
                    l.send(Msg::Shutdown);
                }
                return Err(Error::Closed);
            }
            *current = route.clone();
            old.seal(Drained::Seal);
        }
        route.settled().await;
        Ok(())
    }
}
