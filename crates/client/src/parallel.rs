//! The parallel consumer: one group member that runs records concurrently by key, far beyond
//! the partition count, with Kafka's at-least-once guarantee and per-key order intact
//! (../shared/DESIGN.md §2.3).
//!
//! - A poll thread owns the librdkafka consumer. Each record goes to a [`weir_dispatch`]
//!   dispatcher keyed by the record's key, so records with the same key run one at a time in
//!   offset order, and different keys run at once (up to `in_flight_max` records in all).
//!   A record without a key has no order to keep and runs on its own.
//! - Per partition, the offsets handed out and not yet finished are kept in order; what is
//!   committed is the lowest unfinished offset (or one past the highest finished, when none is
//!   unfinished), so a crash loses no record: everything after the commit runs again.
//! - When `in_flight_max` records are out, the assigned partitions are paused (the poll keeps
//!   serving the group) and resumed once half have finished.
//! - On revoke (a rebalance) and on shutdown, the member waits for the records of the
//!   partitions it gives up to finish, up to `drain_timeout`, and commits synchronously before
//!   letting them go.
//! - A handler that panics stops the consumer with an error; nothing at or after that record
//!   is committed.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use weir_dispatch::{Dispatcher, TrySubmitError};

use crate::consumer::{Message, CONSUMER_DEFAULTS};
use crate::error::{Error, Result};
use crate::shared::Ctx;
use crate::Config;

/// How a [`ParallelConsumer`] runs.
#[derive(Debug, Clone)]
pub struct ParallelOptions {
    /// Records handed to handlers and not finished yet, over all partitions.
    pub in_flight_max: usize,
    /// Dispatcher workers (threads) running the handlers. Default: one per core.
    pub workers: usize,
    /// How often finished offsets are committed while running.
    pub commit_every: Duration,
    /// How long a revoke or shutdown waits for in-flight records before it lets the
    /// partitions go anyway (those records may then run again on another member).
    pub drain_timeout: Duration,
}

impl Default for ParallelOptions {
    fn default() -> Self {
        ParallelOptions {
            in_flight_max: 10_000,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            commit_every: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// What a [`ParallelConsumer::run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParallelReport {
    /// Records whose handler finished.
    pub records: u64,
    /// Partitions revoked by rebalances.
    pub revoked: u64,
}

/// How long one poll waits, so that stop requests and commits are looked at this often.
const POLL_SLICE: Duration = Duration::from_millis(50);

/// How often a draining member looks at finished records.
const DRAIN_POLL: Duration = Duration::from_millis(2);

/// The dispatcher key: records with the same key (in the same topic) run in offset order;
/// a record without a key is its own key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RecordKey {
    Key(Arc<str>, Vec<u8>),
    Unkeyed(Arc<str>, i32, i64),
}

/// A handler's end, sent back to the poll thread.
struct Finished {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    ok: bool,
}

/// One partition's offsets out with handlers.
#[derive(Debug, Default)]
struct Track {
    unfinished: BTreeSet<i64>,
    /// The lowest offset whose handler panicked: nothing from it on is committed.
    failed: Option<i64>,
    /// One past the highest offset handed out.
    next: Option<i64>,
    committed: Option<i64>,
}

impl Track {
    /// The offset to commit: everything below it has finished.
    fn commit_point(&self) -> Option<i64> {
        let unfinished = self.unfinished.first().copied();
        match (unfinished, self.failed) {
            (Some(u), Some(f)) => Some(u.min(f)),
            (u, f) => u.or(f).or(self.next),
        }
    }
}

/// The poll thread's bookkeeping, shared with the rebalance callback (which runs on the poll
/// thread, inside `poll`).
struct Book {
    tracks: HashMap<Arc<str>, HashMap<i32, Track>>,
    in_flight: usize,
    finished_rx: mpsc::Receiver<Finished>,
    records: u64,
    revoked: u64,
    failed: Option<(Arc<str>, i32, i64)>,
}

impl Book {
    /// Takes in the handlers that finished since last time.
    fn absorb(&mut self) {
        while let Ok(f) = self.finished_rx.try_recv() {
            self.in_flight -= 1;
            if !f.ok {
                self.failed
                    .get_or_insert((f.topic.clone(), f.partition, f.offset));
            } else {
                self.records += 1;
            }
            if let Some(track) = self
                .tracks
                .get_mut(&f.topic)
                .and_then(|t| t.get_mut(&f.partition))
            {
                track.unfinished.remove(&f.offset);
                if !f.ok {
                    // Not unfinished (a drain need not wait for it), but never committed past.
                    track.failed = Some(track.failed.map_or(f.offset, |o| o.min(f.offset)));
                }
            }
        }
    }

    fn hand_out(&mut self, topic: &Arc<str>, partition: i32, offset: i64) {
        let track = self
            .tracks
            .entry(topic.clone())
            .or_default()
            .entry(partition)
            .or_default();
        track.unfinished.insert(offset);
        let after = offset.saturating_add(1);
        track.next = Some(track.next.map_or(after, |n| n.max(after)));
        self.in_flight += 1;
    }

    fn unfinished_in(&self, list: &TopicPartitionList) -> usize {
        list.elements()
            .iter()
            .filter_map(|e| self.tracks.get(e.topic())?.get(&e.partition()))
            .map(|t| t.unfinished.len())
            .sum()
    }

    /// Commit points that moved since they were last committed (all of them if `all`), for
    /// the partitions in `only` if given.
    fn to_commit(&self, only: Option<&TopicPartitionList>, all: bool) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, partitions) in &self.tracks {
            for (&partition, track) in partitions {
                if let Some(only) = only {
                    if only.find_partition(topic, partition).is_none() {
                        continue;
                    }
                }
                let Some(point) = track.commit_point() else {
                    continue;
                };
                if all || track.committed != Some(point) {
                    // Cannot fail: the offset is a plain offset.
                    let _ = list.add_partition_offset(topic, partition, Offset::Offset(point));
                }
            }
        }
        list
    }

    fn committed(&mut self, list: &TopicPartitionList) {
        for e in list.elements() {
            if let (Some(track), Offset::Offset(o)) = (
                self.tracks
                    .get_mut(e.topic())
                    .and_then(|t| t.get_mut(&e.partition())),
                e.offset(),
            ) {
                track.committed = Some(o);
            }
        }
    }

    fn forget(&mut self, list: &TopicPartitionList) {
        for e in list.elements() {
            if let Some(t) = self.tracks.get_mut(e.topic()) {
                t.remove(&e.partition());
            }
        }
    }
}

/// The librdkafka context: the breaker of every Weir client, plus draining on revoke.
struct ParallelCtx {
    base: Ctx,
    book: Arc<Mutex<Book>>,
    drain_timeout: Duration,
    /// Set on every new assignment: librdkafka keeps a partition that was paused paused
    /// when it is assigned again, so the poll thread states the pause again for it.
    assigned: Arc<AtomicBool>,
}

fn lock(book: &Mutex<Book>) -> MutexGuard<'_, Book> {
    // A poisoned lock only means a panic elsewhere mid-update; the bookkeeping still holds.
    book.lock().unwrap_or_else(|e| e.into_inner())
}

impl ParallelCtx {
    /// Waits for the records of `list` to finish (up to the drain timeout), then commits them.
    fn drain_and_commit(&self, consumer: &BaseConsumer<ParallelCtx>, list: &TopicPartitionList) {
        let deadline = Instant::now() + self.drain_timeout;
        loop {
            let mut book = lock(&self.book);
            book.absorb();
            if book.unfinished_in(list) == 0 || Instant::now() >= deadline {
                break;
            }
            drop(book);
            std::thread::sleep(DRAIN_POLL);
        }
        let mut book = lock(&self.book);
        let offsets = book.to_commit(Some(list), true);
        if offsets.count() > 0 && consumer.commit(&offsets, CommitMode::Sync).is_ok() {
            book.committed(&offsets);
        }
    }
}

impl ClientContext for ParallelCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.base.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }
}

impl ConsumerContext for ParallelCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.drain_and_commit(consumer, list);
            let mut book = lock(&self.book);
            book.revoked += list.count() as u64;
            book.forget(list);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.assigned.store(true, SeqCst);
        }
    }
}

/// A group member that runs records concurrently by key. See the module docs.
pub struct ParallelConsumer {
    consumer: Arc<BaseConsumer<ParallelCtx>>,
    book: Arc<Mutex<Book>>,
    assigned: Arc<AtomicBool>,
    finished_tx: mpsc::Sender<Finished>,
    options: ParallelOptions,
}

impl ParallelConsumer {
    /// Joins `group` for `topics`. Records are read once [`run`](Self::run) starts.
    pub async fn subscribe(
        config: &Config,
        group: &str,
        topics: &[&str],
        options: ParallelOptions,
    ) -> Result<ParallelConsumer> {
        if options.in_flight_max == 0 || options.workers == 0 {
            return Err(Error::Invalid(
                "in_flight_max and workers must be at least 1".into(),
            ));
        }
        let base = Ctx::new(config);
        let (finished_tx, finished_rx) = mpsc::channel();
        let book = Arc::new(Mutex::new(Book {
            tracks: HashMap::new(),
            in_flight: 0,
            finished_rx,
            records: 0,
            revoked: 0,
            failed: None,
        }));
        let assigned = Arc::new(AtomicBool::new(false));
        let ctx = ParallelCtx {
            base: base.clone(),
            book: book.clone(),
            drain_timeout: options.drain_timeout,
            assigned: assigned.clone(),
        };
        let mut rd = config.rdkafka(&CONSUMER_DEFAULTS);
        rd.set("group.id", group);
        // Whatever the settings say: librdkafka committing on its own would commit past
        // records still running.
        rd.set("enable.auto.commit", "false");
        let consumer: BaseConsumer<ParallelCtx> = rd
            .create_with_context(ctx)
            .map_err(|e| Error::Invalid(format!("client configuration: {e}")))?;
        let consumer = Arc::new(consumer);
        let probe = {
            let consumer = consumer.clone();
            let timeout = config.request_timeout;
            move || {
                consumer
                    .fetch_metadata(None, timeout)
                    .map(drop)
                    .map_err(|e| Error::kafka("metadata", &e))
            }
        };
        base.shared.connect(probe).await?;
        consumer
            .subscribe(topics)
            .map_err(|e| Error::kafka(format!("subscribe to {topics:?}"), &e))?;
        Ok(ParallelConsumer {
            consumer,
            book,
            assigned,
            finished_tx,
            options,
        })
    }

    /// Runs `handler` on every record until `stop` completes, then lets the records in flight
    /// finish, commits, and leaves the group. Handlers run on the dispatcher's worker threads;
    /// their futures need not be `Send`.
    pub async fn run<H, F>(
        self,
        handler: H,
        stop: impl Future<Output = ()>,
    ) -> Result<ParallelReport>
    where
        H: Fn(Message) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + 'static,
    {
        let options = self.options.clone();
        let dispatch = weir_dispatch::Config {
            workers: options.workers,
            // The in-flight bound pauses the partitions first: submits never wait.
            queue_tasks_max: options.in_flight_max,
            running_tasks_max: options.in_flight_max,
            ..weir_dispatch::Config::default()
        };
        let dispatcher: Dispatcher<RecordKey> = Dispatcher::new(dispatch)
            .map_err(|e| Error::Invalid(format!("parallel consumer workers: {e}")))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let pump = Pump {
            consumer: self.consumer,
            book: self.book,
            assigned: self.assigned,
            finished_tx: self.finished_tx,
            handler: Arc::new(handler),
            dispatcher: dispatcher.clone(),
            stopping: stopping.clone(),
            options,
        };
        std::thread::Builder::new()
            .name("weir-parallel-poll".into())
            .spawn(move || {
                let _ = done_tx.send(pump.run());
            })
            .map_err(|e| Error::Invalid(format!("cannot start the poll thread: {e}")))?;
        tokio::pin!(done_rx);
        let outcome = tokio::select! {
            outcome = &mut done_rx => outcome,
            () = stop => {
                stopping.store(true, SeqCst);
                done_rx.await
            }
        };
        dispatcher.shutdown().await;
        outcome.unwrap_or_else(|_| Err(Error::Invalid("the poll thread panicked".into())))
    }
}

/// The poll thread.
struct Pump<H> {
    consumer: Arc<BaseConsumer<ParallelCtx>>,
    book: Arc<Mutex<Book>>,
    assigned: Arc<AtomicBool>,
    finished_tx: mpsc::Sender<Finished>,
    handler: Arc<H>,
    dispatcher: Dispatcher<RecordKey>,
    stopping: Arc<AtomicBool>,
    options: ParallelOptions,
}

impl<H, F> Pump<H>
where
    H: Fn(Message) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + 'static,
{
    fn run(self) -> Result<ParallelReport> {
        let outcome = self.pump();
        // Stop fetching, let what is out finish, commit, and leave the group (the revoke
        // callback drains again, with nothing left to wait for).
        if let Ok(assigned) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assigned);
        }
        let deadline = Instant::now() + self.options.drain_timeout;
        loop {
            let mut book = lock(&self.book);
            book.absorb();
            if book.in_flight == 0 || Instant::now() >= deadline {
                break;
            }
            drop(book);
            // Polls keep the membership alive; the partitions are paused.
            let _ = self.consumer.poll(DRAIN_POLL);
        }
        self.commit(CommitMode::Sync, true);
        self.consumer.unsubscribe();
        let _ = self.consumer.poll(Duration::ZERO);
        let book = lock(&self.book);
        if let Some((topic, partition, offset)) = &book.failed {
            return Err(Error::Invalid(format!(
                "a handler panicked on {topic}:{partition} at offset {offset}; \
                 offsets from there on were not committed"
            )));
        }
        outcome?;
        Ok(ParallelReport {
            records: book.records,
            revoked: book.revoked,
        })
    }

    fn pump(&self) -> Result<()> {
        let mut topics: HashMap<String, Arc<str>> = HashMap::new();
        let mut paused = false;
        let mut next_commit = Instant::now() + self.options.commit_every;
        while !self.stopping.load(SeqCst) {
            let in_flight = {
                let mut book = lock(&self.book);
                book.absorb();
                if book.failed.is_some() {
                    return Ok(());
                }
                book.in_flight
            };
            let over = in_flight >= self.options.in_flight_max;
            if self.assigned.swap(false, SeqCst) {
                // A new assignment: partitions paused before it may still be paused (and new
                // ones are not), whatever was asked while nothing was assigned.
                paused = over;
                if !self.set_paused(over) {
                    self.assigned.store(true, SeqCst);
                }
            } else if !paused && over {
                paused = self.set_paused(true);
            } else if paused && in_flight <= self.options.in_flight_max / 2 {
                paused = !self.set_paused(false);
            }
            if Instant::now() >= next_commit {
                self.commit(CommitMode::Async, false);
                next_commit = Instant::now() + self.options.commit_every;
            }
            let message = match self.consumer.poll(POLL_SLICE) {
                None => continue,
                Some(Err(e)) => {
                    let e = Error::kafka("consume", &e);
                    // librdkafka reconnects by itself after transport trouble.
                    if e.is_retriable() {
                        continue;
                    }
                    return Err(e);
                }
                Some(Ok(m)) => m,
            };
            let topic = match topics.get(message.topic()) {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = Arc::from(message.topic());
                    topics.insert(message.topic().to_string(), t.clone());
                    t
                }
            };
            let (partition, offset) = (message.partition(), message.offset());
            let key = match message.key() {
                Some(k) => RecordKey::Key(topic.clone(), k.to_vec()),
                None => RecordKey::Unkeyed(topic.clone(), partition, offset),
            };
            let record = Message::copy_of(&message);
            drop(message);
            lock(&self.book).hand_out(&topic, partition, offset);
            self.submit(key, record, topic, partition, offset)?;
        }
        Ok(())
    }

    fn submit(
        &self,
        key: RecordKey,
        record: Message,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    ) -> Result<()> {
        let handler = self.handler.clone();
        let report = Report {
            finished: Some(Finished {
                topic,
                partition,
                offset,
                ok: false,
            }),
            tx: self.finished_tx.clone(),
        };
        let task = async move |_: &mut ()| {
            let mut report = report;
            handler(record).await;
            report.done();
        };
        // Each worker holds up to `in_flight_max` and the partitions pause at `in_flight_max`
        // in all, so a full worker takes a burst fetched before the pause landing on one
        // worker; wait for room then.
        let mut pending = (key, task);
        loop {
            match self.dispatcher.try_submit(pending.0, pending.1) {
                Ok(()) => return Ok(()),
                Err(TrySubmitError::Full(key, task)) => {
                    pending = (key, task);
                    std::thread::sleep(DRAIN_POLL);
                }
                Err(TrySubmitError::Closed(..)) => {
                    return Err(Error::Invalid(
                        "the parallel consumer's workers stopped".into(),
                    ))
                }
            }
        }
    }

    /// Pauses or resumes every assigned partition; true if librdkafka took it.
    fn set_paused(&self, pause: bool) -> bool {
        let Ok(assigned) = self.consumer.assignment() else {
            return false;
        };
        let done = if pause {
            self.consumer.pause(&assigned)
        } else {
            self.consumer.resume(&assigned)
        };
        done.is_ok()
    }

    /// Commits the partitions whose commit point moved (`all`: every partition).
    fn commit(&self, mode: CommitMode, all: bool) {
        let mut book = lock(&self.book);
        book.absorb();
        let offsets = book.to_commit(None, all);
        if offsets.count() == 0 {
            return;
        }
        // An async commit that fails is retried by the next one, which carries the same or
        // later offsets; the last commit on leaving is synchronous.
        if self.consumer.commit(&offsets, mode).is_ok() {
            book.committed(&offsets);
        }
    }
}

/// Sends a record's end to the poll thread: done, or — if the handler panicked and its
/// future is dropped while unwinding — failed.
struct Report {
    finished: Option<Finished>,
    tx: mpsc::Sender<Finished>,
}

impl Report {
    fn done(&mut self) {
        if let Some(mut f) = self.finished.take() {
            f.ok = true;
            let _ = self.tx.send(f);
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(f) = self.finished.take() {
            let _ = self.tx.send(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> (Book, mpsc::Sender<Finished>) {
        let (tx, rx) = mpsc::channel();
        let book = Book {
            tracks: HashMap::new(),
            in_flight: 0,
            finished_rx: rx,
            records: 0,
            revoked: 0,
            failed: None,
        };
        (book, tx)
    }

    fn finish(
        tx: &mpsc::Sender<Finished>,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
        ok: bool,
    ) {
        let topic = topic.clone();
        tx.send(Finished {
            topic,
            partition,
            offset,
            ok,
        })
        .unwrap();
    }

    fn points(book: &Book) -> Vec<(String, i32, Offset)> {
        let list = book.to_commit(None, true);
        let mut v: Vec<_> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition(), e.offset()))
            .collect();
        v.sort_by_key(|(t, p, _)| (t.clone(), *p));
        v
    }

    #[test]
    fn commits_stop_below_the_lowest_unfinished_record() {
        let (mut book, tx) = book();
        let t: Arc<str> = Arc::from("orders");
        for offset in [5, 6, 7, 9] {
            book.hand_out(&t, 0, offset);
        }
        book.hand_out(&t, 1, 100);
        assert_eq!(book.in_flight, 5);
        finish(&tx, &t, 0, 6, true);
        finish(&tx, &t, 0, 9, true);
        finish(&tx, &t, 1, 100, true);
        book.absorb();
        // 5 and 7 are still out: partition 0 commits 5; partition 1 is done up to 101.
        assert_eq!(
            points(&book),
            vec![
                ("orders".into(), 0, Offset::Offset(5)),
                ("orders".into(), 1, Offset::Offset(101))
            ]
        );
        finish(&tx, &t, 0, 5, true);
        book.absorb();
        assert_eq!(points(&book)[0].2, Offset::Offset(7));
        finish(&tx, &t, 0, 7, true);
        book.absorb();
        assert_eq!(
            points(&book)[0].2,
            Offset::Offset(10),
            "one past the highest handed out"
        );
        assert_eq!((book.in_flight, book.records), (0, 5));
        // Committed points are not sent again unless they move.
        let all = book.to_commit(None, true);
        book.committed(&all);
        assert_eq!(book.to_commit(None, false).count(), 0);
        book.hand_out(&t, 0, 10);
        assert_eq!(
            book.to_commit(None, false).count(),
            0,
            "10 is out: the point is still 10"
        );
    }

    #[test]
    fn a_failed_record_holds_the_commit_point_and_revoked_partitions_are_forgotten() {
        let (mut book, tx) = book();
        let t: Arc<str> = Arc::from("orders");
        for offset in 0..4 {
            book.hand_out(&t, 0, offset);
        }
        book.hand_out(&t, 1, 0);
        finish(&tx, &t, 0, 0, true);
        finish(&tx, &t, 0, 1, false);
        finish(&tx, &t, 0, 2, true);
        book.absorb();
        assert_eq!(book.failed, Some((t.clone(), 0, 1)));
        assert_eq!(points(&book)[0].2, Offset::Offset(1));
        finish(&tx, &t, 0, 3, true);
        book.absorb();
        let mut p0 = TopicPartitionList::new();
        p0.add_partition("orders", 0);
        assert_eq!(
            book.unfinished_in(&p0),
            0,
            "a drain does not wait for the failed record"
        );
        assert_eq!(
            points(&book)[0].2,
            Offset::Offset(1),
            "but nothing past it is committed"
        );
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("orders", 1);
        assert_eq!(book.unfinished_in(&revoked), 1);
        assert_eq!(book.to_commit(Some(&revoked), true).count(), 1);
        book.forget(&revoked);
        assert_eq!(book.unfinished_in(&revoked), 0);
        // A late finish of a forgotten partition only counts as done.
        finish(&tx, &t, 1, 0, true);
        book.absorb();
        assert_eq!(book.in_flight, 0);
        assert_eq!(points(&book).len(), 1);
    }
}
