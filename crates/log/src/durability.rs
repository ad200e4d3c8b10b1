//! Durability off the caller's thread: a small pool of flusher threads, group commit, and the
//! [`Durable`] future an append returns.
//!
//! The log's owner (a reactor thread) only writes to the page cache. Whenever an append must be
//! durable, it records what it needs in the log's [`SyncShared`] and, unless a sync of that log
//! is already queued or running, queues one. A flusher thread snapshots how far the log is
//! written, fdatasyncs, then publishes the new durable offset and wakes every waiter it covers.
//! Appends that arrive while an fdatasync runs are covered by the next one: that is the group
//! commit, with no timer and no batching delay.
//!
//! Queue bound: a log is queued at most once at a time (`scheduled`), and segment deletions are
//! one job per deleted segment, so the queue never holds more than live logs plus segments
//! being deleted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::error::LogError;
use crate::evict::{Eviction, Evictor};
use crate::state::{LogState, StateFile};

/// Synced bytes after which a flusher also advances the recovery point in `log.state`, so that
/// recovery after a crash re-checks at most this much of the synced log.
pub const RECOVERY_POINT_INTERVAL_BYTES: u64 = 16 << 20;

/// Default bound on how long a sync round waits for concurrent appenders to join it: about
/// one fdatasync on the development machine's disk, so lingering never costs more than the
/// round it saves.
pub const GROUP_COMMIT_LINGER_MAX_DEFAULT: Duration = Duration::from_micros(250);

/// Default number of flusher threads.
pub const FLUSH_THREADS_DEFAULT: usize = 2;

/// How far the log's owner has written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub next_offset: i64,
    pub segment_base: i64,
    pub segment_len: u64,
}

/// The two files of a segment.
pub(crate) struct SegmentFiles {
    pub log: Arc<File>,
    pub index: Arc<File>,
}

/// The part of a log the flushers share with its owner.
pub(crate) struct SyncShared {
    dir: PathBuf,
    inner: Mutex<SyncInner>,
    /// Signalled when a waiter registers while a flusher lingers.
    waiter_arrived: Condvar,
    /// Serialises `log.state` writes between flushers and `Log::close`.
    state: Mutex<StateFile>,
    /// `flush.ms`, read by the flusher's timer.
    flush_ms: AtomicI64,
    /// Sync rounds completed (each is one fdatasync of the active segment, or more at a roll).
    syncs: AtomicU64,
}

struct SyncInner {
    written: Written,
    active: SegmentFiles,
    /// Segments that stopped being active and still need an fsync.
    sealed: Vec<SegmentFiles>,
    dir_dirty: bool,
    /// Highest offset someone asked to be durable.
    wanted: i64,
    durable: i64,
    /// Log start offset as the owner set it, and a counter of such changes.
    log_start_offset: i64,
    meta_version: u64,
    meta_persisted: u64,
    /// Files of retired segments, to unlink after the next state write.
    removals: Vec<PathBuf>,
    /// A clean shutdown asked for the full checkpoint (active index synced, state written).
    checkpoint_wanted: bool,
    /// Recovery point last written, and bytes synced since.
    recovery: (i64, u64),
    failed: Option<(PathBuf, Arc<io::Error>)>,
    scheduled: bool,
    timer_armed: bool,
    waiters: Vec<Waiter>,
    /// Waiters the last round woke, and how many it left waiting: the next round lingers until
    /// the woken ones are back (see `linger`).
    woken_last: usize,
    left_waiting: usize,
    /// A flusher is lingering and wants to hear of every new waiter.
    lingering: bool,
}

struct Waiter {
    offset: i64,
    meta: u64,
    waker: Waker,
}

impl SyncShared {
    pub(crate) fn new(
        dir: PathBuf,
        state: StateFile,
        written: Written,
        active: SegmentFiles,
        log_start_offset: i64,
        recovery: (i64, u64),
        flush_ms: i64,
    ) -> SyncShared {
        SyncShared {
            dir,
            inner: Mutex::new(SyncInner {
                written,
                active,
                sealed: Vec::new(),
                // The segment may have just been created: its name is made durable by the first
                // round, before anything in it is reported durable.
                dir_dirty: true,
                wanted: written.next_offset,
                durable: written.next_offset,
                log_start_offset,
                meta_version: 0,
                meta_persisted: 0,
                removals: Vec::new(),
                checkpoint_wanted: false,
                recovery,
                failed: None,
                scheduled: false,
                timer_armed: false,
                waiters: Vec::new(),
                woken_last: 0,
                left_waiting: 0,
                lingering: false,
            }),
            waiter_arrived: Condvar::new(),
            state: Mutex::new(state),
            flush_ms: AtomicI64::new(flush_ms),
            syncs: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SyncInner> {
        // A flusher that panicked mid-sync leaves plain data behind; keep going with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error that failed the log, if any.
    pub(crate) fn failure(&self) -> Option<LogError> {
        self.lock()
            .failed
            .as_ref()
            .map(|(path, error)| LogError::Failed {
                cause: format!("fdatasync of {} failed: {error}", path.display()),
            })
    }

    /// Records how far the owner has written.
    pub(crate) fn set_written(&self, written: Written) {
        self.lock().written = written;
    }

    /// Records a roll: the previous active files need an fsync, the directory too.
    pub(crate) fn rolled(&self, active: SegmentFiles) {
        let mut inner = self.lock();
        let sealed = std::mem::replace(&mut inner.active, active);
        inner.sealed.push(sealed);
        inner.dir_dirty = true;
    }

    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    pub(crate) fn set_flush_ms(&self, flush_ms: i64) {
        self.flush_ms.store(flush_ms, Ordering::Relaxed);
    }

    /// Asks for `offset` to become durable. Returns whether a sync job must be queued.
    fn want(&self, offset: i64, meta: bool, checkpoint: bool) -> (bool, Durable) {
        let mut inner = self.lock();
        inner.wanted = inner.wanted.max(offset);
        if meta {
            inner.meta_version += 1;
        }
        inner.checkpoint_wanted |= checkpoint;
        let target = (offset, inner.meta_version);
        let queue = !inner.scheduled && inner.failed.is_none() && inner.has_work();
        if queue {
            inner.scheduled = true;
        }
        (queue, Durable::waiting(target.0, target.1))
    }

    /// Raises the log start offset to persist, and hands over the files of segments now wholly
    /// below it: they are unlinked, oldest first, once that log start offset is durable.
    pub(crate) fn retire(&self, log_start_offset: i64, files: Vec<PathBuf>) {
        let mut inner = self.lock();
        inner.log_start_offset = log_start_offset;
        inner.removals.extend(files);
    }

    /// Group commit's linger: when the last round woke several waiters, the appenders are
    /// concurrent, and the ones just woken are about to append again. Starting the next
    /// fdatasync at once would leave them for the round after, and the appenders would settle into two alternating half-groups. So wait, at most
    /// `linger_max`, until each woken waiter is back. A lone appender never lingers.
    fn linger<'a>(
        &'a self,
        mut inner: MutexGuard<'a, SyncInner>,
        linger_max: Duration,
    ) -> MutexGuard<'a, SyncInner> {
        if inner.woken_last < 2 || linger_max.is_zero() {
            return inner;
        }
        let want = inner.left_waiting + inner.woken_last;
        let deadline = Instant::now() + linger_max;
        inner.lingering = true;
        while inner.waiters.len() < want && inner.failed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            inner = self
                .waiter_arrived
                .wait_timeout(inner, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        inner.lingering = false;
        inner
    }

    /// Runs one sync round. Returns whether the log needs another.
    ///
    /// Order within a round: fdatasync sealed segments and their indexes, fsync the directory
    /// if a segment was created, fdatasync the active segment; then write `log.state` (new
    /// recovery point and log start offset); then unlink segments retention retired. So the
    /// recovery point never covers unsynced bytes, and a segment file disappears only after a
    /// log start offset above it is durable. No lock is held during any of it.
    fn run(&self, linger_max: Duration) -> bool {
        let round = {
            let inner = self.lock();
            let mut inner = self.linger(inner, linger_max);
            if inner.failed.is_some() {
                inner.scheduled = false;
                inner.wake(true);
                return false;
            }
            let removals = std::mem::take(&mut inner.removals);
            let checkpoint = std::mem::take(&mut inner.checkpoint_wanted);
            let sealed = std::mem::take(&mut inner.sealed);
            let write_state = !sealed.is_empty()
                || checkpoint
                || !removals.is_empty()
                || inner.meta_version > inner.meta_persisted
                || inner.written.segment_base != inner.recovery.0
                || inner.written.segment_len >= inner.recovery.1 + RECOVERY_POINT_INTERVAL_BYTES;
            Round {
                written: inner.written,
                active: inner.active.log.clone(),
                active_index: inner.active.index.clone(),
                sealed,
                dir_dirty: std::mem::take(&mut inner.dir_dirty),
                meta: inner.meta_version,
                checkpoint,
                log_start: inner.log_start_offset,
                removals,
                write_state,
            }
        };
        let result = self.sync_files(&round).and_then(|()| {
            if !round.write_state {
                return Ok(());
            }
            let state = LogState {
                log_start_offset: round.log_start,
                recovery_base: round.written.segment_base,
                recovery_position: round.written.segment_len,
            };
            let mut file = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let path = file.path().to_path_buf();
            file.write(&state).map_err(|e| (path, e))
        });
        if result.is_ok() {
            for path in &round.removals {
                // Already gone is fine: recovery also removes what lies below the log start.
                let _ = std::fs::remove_file(path);
            }
        }
        let mut inner = self.lock();
        match result {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                inner.durable = inner.durable.max(round.written.next_offset);
                if round.write_state {
                    inner.meta_persisted = inner.meta_persisted.max(round.meta);
                    inner.recovery = (round.written.segment_base, round.written.segment_len);
                }
                inner.wake(false);
            }
            Err((path, error)) => {
                inner.failed = Some((path, Arc::new(error)));
                inner.wake(true);
            }
        }
        let again = inner.failed.is_none() && inner.has_work();
        inner.scheduled = again;
        again
    }

    fn sync_files(&self, round: &Round) -> Result<(), (PathBuf, io::Error)> {
        for files in &round.sealed {
            files.log.sync_data().map_err(|e| (self.dir.clone(), e))?;
            files.index.sync_data().map_err(|e| (self.dir.clone(), e))?;
        }
        if round.dir_dirty {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| (self.dir.clone(), e))?;
        }
        let segment = || crate::segment::log_path(&self.dir, round.written.segment_base);
        round.active.sync_data().map_err(|e| (segment(), e))?;
        if round.checkpoint {
            round.active_index.sync_data().map_err(|e| (segment(), e))?;
        }
        Ok(())
    }
}

/// What one sync round works on, taken from `SyncInner` under its lock.
struct Round {
    written: Written,
    active: Arc<File>,
    active_index: Arc<File>,
    sealed: Vec<SegmentFiles>,
    dir_dirty: bool,
    meta: u64,
    checkpoint: bool,
    log_start: i64,
    removals: Vec<PathBuf>,
    write_state: bool,
}

impl SyncInner {
    fn has_work(&self) -> bool {
        self.wanted > self.durable
            || !self.sealed.is_empty()
            || !self.removals.is_empty()
            || self.meta_version > self.meta_persisted
            || self.checkpoint_wanted
    }

    /// Wakes the waiters that are satisfied, or all of them when the log failed.
    fn wake(&mut self, all: bool) {
        let (durable, meta) = (self.durable, self.meta_persisted);
        let before = self.waiters.len();
        self.waiters.retain(|w| {
            let done = all || (w.offset <= durable && w.meta <= meta);
            if done {
                w.waker.wake_by_ref();
            }
            !done
        });
        self.woken_last = before - self.waiters.len();
        self.left_waiting = self.waiters.len();
    }
}

/// Resolves when an append (or a log start offset change) is durable; fails with
/// [`LogError::OutcomeUnknown`] if the fdatasync that should have covered it failed.
/// `Send + 'static`: await it on any runtime, or block on it with [`Durable::wait`].
#[must_use = "an append is acknowledged durable only once this resolves"]
pub struct Durable {
    state: DurableState,
}

enum DurableState {
    Done,
    Waiting {
        shared: Option<Arc<SyncShared>>,
        offset: i64,
        meta: u64,
    },
}

impl Durable {
    /// Already durable (or durability not asked for).
    pub fn ready() -> Durable {
        Durable {
            state: DurableState::Done,
        }
    }

    fn waiting(offset: i64, meta: u64) -> Durable {
        Durable {
            state: DurableState::Waiting {
                shared: None,
                offset,
                meta,
            },
        }
    }

    /// Whether this resolves without waiting.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, DurableState::Done)
    }

    /// Blocks the calling thread until durable. For threads that are not reactors.
    pub fn wait(mut self) -> Result<(), LogError> {
        struct ThreadWaker(Thread);
        impl Wake for ThreadWaker {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(result) = Pin::new(&mut self).poll(&mut cx) {
                return result;
            }
            thread::park();
        }
    }
}

impl Future for Durable {
    type Output = Result<(), LogError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let DurableState::Waiting {
            shared: Some(shared),
            offset,
            meta,
        } = &this.state
        else {
            return Poll::Ready(Ok(()));
        };
        let mut inner = shared.lock();
        if inner.durable >= *offset && inner.meta_persisted >= *meta {
            drop(inner);
            this.state = DurableState::Done;
            return Poll::Ready(Ok(()));
        }
        if let Some((path, error)) = &inner.failed {
            return Poll::Ready(Err(LogError::OutcomeUnknown {
                path: path.clone(),
                source: error.clone(),
            }));
        }
        match inner
            .waiters
            .iter_mut()
            .find(|w| w.offset == *offset && w.meta == *meta && w.waker.will_wake(cx.waker()))
        {
            Some(_) => {}
            None => {
                inner.waiters.push(Waiter {
                    offset: *offset,
                    meta: *meta,
                    waker: cx.waker().clone(),
                });
                if inner.lingering {
                    shared.waiter_arrived.notify_one();
                }
            }
        }
        Poll::Pending
    }
}

/// What the flusher pool has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    pub rounds: u64,
    pub micros_total: u64,
    pub micros_max: u64,
    /// Bytes written back and dropped from the page cache behind the logs' windows.
    pub evicted_bytes: u64,
}

/// A pool of flusher threads shared by many logs. Cheap to clone; the threads stop when the
/// last clone is dropped, after finishing queued work.
#[derive(Clone)]
pub struct Flusher {
    handle: Arc<FlusherHandle>,
}

struct FlusherHandle {
    inner: Arc<FlusherInner>,
    threads: Vec<JoinHandle<()>>,
    evictor: Evictor,
}

struct FlusherInner {
    queue: Mutex<Queue>,
    wake: Condvar,
    linger_max: Duration,
    rounds: AtomicU64,
    round_micros_total: AtomicU64,
    round_micros_max: AtomicU64,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    timers: BinaryHeap<Reverse<Timer>>,
    timer_seq: u64,
    shutdown: bool,
}

enum Job {
    Sync(Arc<SyncShared>),
}

struct Timer {
    due: Instant,
    seq: u64,
    log: Weak<SyncShared>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Timer) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Timer) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Timer) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl Flusher {
    /// Starts `threads` flusher threads (at least one) with the default group-commit linger.
    pub fn start(threads: usize) -> io::Result<Flusher> {
        Flusher::start_with(threads, GROUP_COMMIT_LINGER_MAX_DEFAULT)
    }

    /// Starts `threads` flusher threads; a sync round waits at most `linger_max` for
    /// concurrent appenders to join it (zero: never).
    pub fn start_with(threads: usize, linger_max: Duration) -> io::Result<Flusher> {
        let inner = Arc::new(FlusherInner {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            linger_max,
            rounds: AtomicU64::new(0),
            round_micros_total: AtomicU64::new(0),
            round_micros_max: AtomicU64::new(0),
        });
        // First, so that a failure leaves no flusher thread waiting forever.
        let evictor = Evictor::start()?;
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let inner = inner.clone();
            handles.push(
                thread::Builder::new()
                    .name(format!("weir-flush-{i}"))
                    .spawn(move || inner.work())?,
            );
        }
        Ok(Flusher {
            handle: Arc::new(FlusherHandle {
                inner,
                threads: handles,
                evictor,
            }),
        })
    }

    fn push(&self, job: Job) {
        let inner = &self.handle.inner;
        inner.lock().jobs.push_back(job);
        inner.wake.notify_one();
    }

    /// Sync rounds run so far and the time they took (linger included), for metrics.
    pub fn stats(&self) -> FlushStats {
        let inner = &self.handle.inner;
        FlushStats {
            rounds: inner.rounds.load(Ordering::Relaxed),
            micros_total: inner.round_micros_total.load(Ordering::Relaxed),
            micros_max: inner.round_micros_max.load(Ordering::Relaxed),
            evicted_bytes: self.handle.evictor.evicted_bytes(),
        }
    }

    /// Sets how many of each log's newest bytes stay in the page cache (0: all); see
    /// [`crate::evict`]. Logs read it at every append.
    pub fn set_cache_window(&self, bytes: u64) {
        self.handle.evictor.set_window(bytes);
    }

    pub(crate) fn cache_window(&self) -> u64 {
        self.handle.evictor.window()
    }

    pub(crate) fn evict(&self, eviction: Eviction) {
        self.handle.evictor.push(eviction);
    }

    /// Asks for `offset` (and, with `meta`, the current log start offset) to become durable.
    pub(crate) fn request(
        &self,
        log: &Arc<SyncShared>,
        offset: i64,
        meta: bool,
        checkpoint: bool,
    ) -> Durable {
        let (queue, mut durable) = log.want(offset, meta, checkpoint);
        if queue {
            self.push(Job::Sync(log.clone()));
        }
        if let DurableState::Waiting { shared, .. } = &mut durable.state {
            *shared = Some(log.clone());
        }
        durable
    }

    /// Starts the `flush.ms` timer for a log unless it runs already.
    pub(crate) fn arm_timer(&self, log: &Arc<SyncShared>) {
        let flush_ms = log.flush_ms.load(Ordering::Relaxed);
        if flush_ms == i64::MAX {
            return;
        }
        {
            let mut inner = log.lock();
            if inner.timer_armed {
                return;
            }
            inner.timer_armed = true;
        }
        let mut queue = self.handle.inner.lock();
        queue.arm(Arc::downgrade(log), flush_ms);
        drop(queue);
        self.handle.inner.wake.notify_one();
    }
}

impl Queue {
    fn arm(&mut self, log: Weak<SyncShared>, flush_ms: i64) {
        self.timer_seq += 1;
        let due = Instant::now() + Duration::from_millis(flush_ms.max(1) as u64);
        self.timers.push(Reverse(Timer {
            due,
            seq: self.timer_seq,
            log,
        }));
    }
}

impl FlusherInner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) {
        loop {
            let job = {
                let mut queue = self.lock();
                loop {
                    self.fire_timers(&mut queue);
                    if let Some(job) = queue.jobs.pop_front() {
                        break job;
                    }
                    if queue.shutdown {
                        return;
                    }
                    queue = match queue.timers.peek() {
                        Some(Reverse(timer)) => {
                            let wait = timer.due.saturating_duration_since(Instant::now());
                            self.wake
                                .wait_timeout(queue, wait)
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                        None => self.wake.wait(queue).unwrap_or_else(|e| e.into_inner()),
                    };
                }
            };
            match job {
                Job::Sync(log) => {
                    let started = Instant::now();
                    let again = log.run(self.linger_max);
                    let micros = started.elapsed().as_micros() as u64;
                    self.rounds.fetch_add(1, Ordering::Relaxed);
                    self.round_micros_total.fetch_add(micros, Ordering::Relaxed);
                    self.round_micros_max.fetch_max(micros, Ordering::Relaxed);
                    if again {
                        self.lock().jobs.push_back(Job::Sync(log));
                        self.wake.notify_one();
                    }
                }
            }
        }
    }

    /// Queues a sync for every log whose `flush.ms` timer is due, and re-arms it.
    fn fire_timers(&self, queue: &mut Queue) {
        let now = Instant::now();
        while queue.timers.peek().is_some_and(|Reverse(t)| t.due <= now) {
            let Some(Reverse(timer)) = queue.timers.pop() else {
                break;
            };
            let Some(log) = timer.log.upgrade() else {
                continue;
            };
            let flush_ms = log.flush_ms.load(Ordering::Relaxed);
            let mut inner = log.lock();
            if flush_ms == i64::MAX {
                inner.timer_armed = false;
                continue;
            }
            inner.wanted = inner.wanted.max(inner.written.next_offset);
            let queue_it = !inner.scheduled && inner.failed.is_none() && inner.has_work();
            if queue_it {
                inner.scheduled = true;
            }
            drop(inner);
            if queue_it {
                queue.jobs.push_back(Job::Sync(log.clone()));
            }
            queue.arm(timer.log, flush_ms);
        }
    }
}

impl Drop for FlusherHandle {
    fn drop(&mut self) {
        self.inner.lock().shutdown = true;
        self.inner.wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
