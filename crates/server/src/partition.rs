//! The owning side of partitions: each shard keeps the partitions it owns (their logs) and
//! serves the requests other shards' connections send to its mailbox. Only the owning shard
//! touches a partition's log: on its reactor, or on its blocking pool under the partition's
//! lock (`append.rs`), which the reactor only ever `try_lock`s.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use weir_broker::topics::Topic;
use weir_kafka::{error_code, list_offsets};
use weir_log::{Log, LogError, LogOptions};

use crate::append::{
    load_producers, lock, produce, run_appender, write_producer_snapshot, AppendJob,
    PartitionState, Shared, INLINE_APPEND_BYTES_MAX, OFFLOAD_HOLD, SLOW_INLINE_APPEND,
};
use crate::broker::Broker;
use crate::coordinator::{Coordinators, GroupMsg};

/// A request for one partition, sent to the shard that owns it.
pub(crate) enum ShardMsg {
    Produce {
        topic: Arc<Topic>,
        partition: i32,
        records: Vec<u8>,
        /// acks=all: answer once the batches are as durable as the topic's flush policy asks.
        wait_durable: bool,
        reply: oneshot::Sender<ProduceOutcome>,
    },
    Fetch {
        topic: Arc<Topic>,
        partition: i32,
        offset: i64,
        /// None: the response's byte budget is spent; answer offsets only, no records.
        max_bytes: Option<u64>,
        reply: oneshot::Sender<FetchOutcome>,
    },
    ListOffsets {
        topic: Arc<Topic>,
        partition: i32,
        timestamp: i64,
        reply: oneshot::Sender<ListOutcome>,
    },
    /// A partition's offsets and size on disk (the HTTP gateway's topic description).
    Describe {
        topic: Arc<Topic>,
        partition: i32,
        reply: oneshot::Sender<Result<PartitionSummary, i16>>,
    },
    /// DeleteRecords: raise the log start offset (-1: to the log end); answers (low
    /// watermark, error code) once the new start is durable.
    DeleteRecords {
        topic: Arc<Topic>,
        partition: i32,
        offset: i64,
        reply: oneshot::Sender<(i64, i16)>,
    },
    /// The topic's settings changed: apply them to the logs of it this shard has open.
    Reconfigure {
        topic: Arc<Topic>,
        reply: oneshot::Sender<()>,
    },
    /// The topic was deleted: drop the partition's log (its files are about to go).
    Forget {
        topic_id: [u8; 16],
        partition: i32,
        reply: oneshot::Sender<()>,
    },
    /// A request for a group this shard coordinates.
    Group(GroupMsg),
}

#[derive(Debug, Clone)]
pub(crate) struct ProduceOutcome {
    pub error_code: i16,
    pub base_offset: i64,
    /// Records appended (0 on error).
    pub records: u64,
    pub log_start_offset: i64,
    pub message: Option<String>,
    /// Time the owner worked on it (charged to request-time quotas).
    pub spent: Duration,
}

pub(crate) struct FetchOutcome {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
    /// Changes when the partition's log end offset moves: what a long poll waits on.
    pub end: Option<watch::Receiver<i64>>,
    /// Time the owner worked on it (charged to request-time quotas).
    pub spent: Duration,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PartitionSummary {
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
}

pub(crate) struct ListOutcome {
    pub error_code: i16,
    pub timestamp: i64,
    pub offset: i64,
}

/// How long shutdown waits for a read or a retention pass to let go of a log before it gives up
/// on closing that log cleanly (the next start then recovers its tail).
const CLOSE_WAIT_MAX: Duration = Duration::from_secs(5);

struct Partition {
    state: Shared,
    end: Arc<watch::Sender<i64>>,
    /// The partition's appender, which takes Produces in the order they reached the shard.
    appends: mpsc::Sender<AppendJob>,
    appender: tokio::task::JoinHandle<()>,
    /// Jobs given to the appender and not yet answered (counted on the shard's thread).
    pending: std::rc::Rc<std::cell::Cell<usize>>,
}

/// Kafka's error code for a log error.
pub(crate) fn error_code_of(error: &LogError) -> i16 {
    match error {
        LogError::InvalidBatch { .. } => error_code::CORRUPT_MESSAGE,
        LogError::BatchTooLarge { .. } => error_code::MESSAGE_TOO_LARGE,
        LogError::OffsetOutOfRange { .. } => error_code::OFFSET_OUT_OF_RANGE,
        LogError::Config(_) => error_code::INVALID_CONFIG,
        _ => error_code::KAFKA_STORAGE_ERROR,
    }
}

pub(crate) struct Partitions {
    broker: Arc<Broker>,
    /// Keyed by topic id, so a topic deleted and created again under the same name never
    /// reaches the old log.
    open: HashMap<([u8; 16], i32), Partition>,
    /// Until then every append goes to the blocking pool: an append on the reactor was slow
    /// (the disk is pushing back).
    offload_until: Option<std::time::Instant>,
    /// The shard these partitions belong to.
    shard: usize,
    /// The retention pass under way on the blocking pool, if any; it answers with the
    /// partitions of this shard that are not open and have sealed segments retention may take.
    retention: Option<tokio::task::JoinHandle<Vec<TopicPartition>>>,
}

/// A partition named by its topic and index.
type TopicPartition = (Arc<Topic>, i32);

impl Partitions {
    pub fn new(broker: Arc<Broker>, shard: usize) -> Partitions {
        Partitions {
            broker,
            shard,
            open: HashMap::new(),
            offload_until: None,
            retention: None,
        }
    }

    /// Whether a Produce of `bytes` for a partition whose appender is idle is appended on the
    /// reactor: small ones are, unless the disk has lately made one wait.
    fn append_inline(&mut self, bytes: usize) -> bool {
        if bytes > INLINE_APPEND_BYTES_MAX {
            return false;
        }
        match self.offload_until {
            Some(until) if std::time::Instant::now() < until => false,
            Some(_) => {
                self.offload_until = None;
                true
            }
            None => true,
        }
    }

    /// The partition's log, opened on first use. Opening reads the disk (recovery), so it runs
    /// on the blocking pool.
    async fn get(&mut self, topic: &Topic, index: i32) -> Result<&mut Partition, LogError> {
        let key = (topic.id, index);
        if !self.open.contains_key(&key) {
            let dir = self.broker.topics.partition_dir(topic, index);
            let options = LogOptions::new(topic.config.clone(), self.broker.flusher.clone());
            let (log, producers) = tokio::task::spawn_blocking(move || {
                let log = Log::open(&dir, options)?;
                let producers = load_producers(&log)?;
                Ok::<_, LogError>((log, producers))
            })
            .await
            .map_err(|e| LogError::Failed {
                cause: format!("opening the log panicked: {e}"),
            })??;
            let (end, _) = watch::channel(log.log_end_offset());
            let end = Arc::new(end);
            let snapshot_segments = log.segment_count();
            let state = Arc::new(std::sync::Mutex::new(PartitionState {
                log,
                producers,
                snapshot_segments,
            }));
            let (appends, jobs) = mpsc::channel(self.broker.config.shard_mailbox_capacity.max(1));
            let pending = std::rc::Rc::new(std::cell::Cell::new(0));
            let appender = tokio::task::spawn_local(run_appender(
                state.clone(),
                end.clone(),
                jobs,
                pending.clone(),
            ));
            self.open.insert(
                key,
                Partition {
                    state,
                    end,
                    appends,
                    appender,
                    pending,
                },
            );
        }
        Ok(self.open.get_mut(&key).expect("just inserted"))
    }

    /// The topic as it is now, if the one a request named still exists: a request that was in
    /// flight while its topic was deleted (or recreated) must not reopen its partitions, and a
    /// log is always opened with the topic's current settings.
    fn live(&self, topic: &Topic) -> Option<Arc<Topic>> {
        self.broker
            .topics
            .get(&topic.name)
            .filter(|t| t.id == topic.id)
    }

    pub async fn handle(&mut self, msg: ShardMsg) {
        let unknown = error_code::UNKNOWN_TOPIC_OR_PARTITION;
        match msg {
            ShardMsg::Produce {
                topic,
                partition,
                records,
                wait_durable,
                reply,
            } => {
                let Some(topic) = self.live(&topic) else {
                    let _ = reply.send(ProduceOutcome::error(unknown));
                    return;
                };
                let p = match self.get(&topic, partition).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = reply.send(ProduceOutcome::failed(&e));
                        return;
                    }
                };
                let inline = p.pending.get() == 0 && self.append_inline(records.len());
                let p = self
                    .open
                    .get_mut(&(topic.id, partition))
                    .expect("opened above");
                if inline {
                    // The appender is idle, so nothing queued for this partition is overtaken. A
                    // roll creates files: that append goes to the pool.
                    let lock = p
                        .state
                        .try_lock()
                        .ok()
                        .filter(|state| !state.log.append_would_roll(records.len()));
                    if let Some(mut state) = lock {
                        let started = std::time::Instant::now();
                        let produced = produce(&mut state, &p.end, records, wait_durable);
                        drop(state);
                        if started.elapsed() >= SLOW_INLINE_APPEND {
                            self.offload_until = Some(std::time::Instant::now() + OFFLOAD_HOLD);
                        }
                        produced.finish(reply);
                        return;
                    }
                }
                p.pending.set(p.pending.get() + 1);
                let job = AppendJob {
                    records,
                    wait_durable,
                    reply,
                };
                // A full appender queue holds up this mailbox: the shard takes no more work
                // than its disks can write (the queue is as long as the mailbox).
                let refused = match p.appends.try_send(job) {
                    Ok(()) => None,
                    Err(mpsc::error::TrySendError::Full(job)) => {
                        p.appends.send(job).await.err().map(|e| e.0)
                    }
                    Err(mpsc::error::TrySendError::Closed(job)) => Some(job),
                };
                if let Some(job) = refused {
                    p.pending.set(p.pending.get() - 1);
                    let _ = job.reply.send(ProduceOutcome::error(unknown));
                }
            }
            ShardMsg::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
                reply,
            } => {
                let Some(topic) = self.live(&topic) else {
                    let _ = reply.send(FetchOutcome::error(unknown));
                    return;
                };
                match self.get(&topic, partition).await {
                    Err(e) => {
                        let _ = reply.send(FetchOutcome::failed(&e));
                    }
                    Ok(p) => {
                        let end = p.end.clone();
                        let read =
                            move |state: &PartitionState| fetch(state, &end, offset, max_bytes);
                        // A read the page cache does not hold would block the reactor.
                        let cached = |state: &PartitionState| {
                            max_bytes.is_none_or(|max| state.log.likely_cached(offset, max))
                        };
                        let on_reactor = read_off_reactor_unless(&p.state, cached, read, reply);
                        let metrics = &self.broker.metrics;
                        match on_reactor {
                            true => metrics.reads_on_reactor.fetch_add(1, Ordering::Relaxed),
                            false => metrics.reads_on_pool.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }
            }
            ShardMsg::DeleteRecords {
                topic,
                partition,
                offset,
                reply,
            } => {
                let Some(topic) = self.live(&topic) else {
                    let _ = reply.send((-1, unknown));
                    return;
                };
                let p = match self.get(&topic, partition).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = reply.send((-1, error_code_of(&e)));
                        return;
                    }
                };
                let state = p.state.clone();
                tokio::task::spawn_local(async move {
                    let advanced = tokio::task::spawn_blocking(move || {
                        let mut s = lock(&state);
                        let offset = if offset == weir_kafka::delete_records::HIGH_WATERMARK {
                            s.log.log_end_offset()
                        } else {
                            offset
                        };
                        let durable = s.log.advance_start_offset(offset)?;
                        Ok::<_, LogError>((s.log.log_start_offset(), durable))
                    })
                    .await;
                    let answer = match advanced {
                        Err(_) => (-1, error_code::KAFKA_STORAGE_ERROR),
                        Ok(Err(e)) => (-1, error_code_of(&e)),
                        Ok(Ok((low, durable))) => match durable.await {
                            Ok(()) => (low, error_code::NONE),
                            Err(e) => (-1, error_code_of(&e)),
                        },
                    };
                    let _ = reply.send(answer);
                });
            }
            ShardMsg::Reconfigure { topic, reply } => {
                let states: Vec<Shared> = self
                    .open
                    .iter()
                    .filter(|((id, _), _)| *id == topic.id)
                    .map(|(_, p)| p.state.clone())
                    .collect();
                // Applied between appends, off the reactor (an append may be writing). The
                // registry's settings are read under each log's lock, not the message's: two
                // changes may be applied in either order, the registry holds the last one.
                let broker = self.broker.clone();
                let applied = tokio::task::spawn_blocking(move || {
                    for state in states {
                        let mut state = lock(&state);
                        let live = broker.topics.get(&topic.name).filter(|t| t.id == topic.id);
                        if let Some(live) = live {
                            // The settings were validated before they were stored.
                            let _ = state.log.set_config(live.config.clone());
                        }
                    }
                });
                tokio::task::spawn_local(async move {
                    let _ = applied.await;
                    let _ = reply.send(());
                });
            }
            ShardMsg::Forget {
                topic_id,
                partition,
                reply,
            } => {
                let Some(gone) = self.open.remove(&(topic_id, partition)) else {
                    let _ = reply.send(());
                    return;
                };
                // Answered once the appender has finished what it was given and nothing holds
                // the log any more (its files are about to go).
                let deadline = tokio::time::Instant::now() + CLOSE_WAIT_MAX;
                tokio::task::spawn_local(async move {
                    if let Some(state) = gone.release(deadline).await {
                        drop(state);
                    }
                    let _ = reply.send(());
                });
            }
            ShardMsg::Group(msg) => msg.unavailable(),
            ShardMsg::Describe {
                topic,
                partition,
                reply,
            } => {
                let Some(topic) = self.live(&topic) else {
                    let _ = reply.send(Err(unknown));
                    return;
                };
                match self.get(&topic, partition).await {
                    Err(e) => {
                        let _ = reply.send(Err(error_code_of(&e)));
                    }
                    Ok(p) => {
                        let read = |state: &PartitionState| {
                            Ok(PartitionSummary {
                                log_start_offset: state.log.log_start_offset(),
                                log_end_offset: state.log.log_end_offset(),
                                size_bytes: state.log.size_bytes(),
                            })
                        };
                        off_reactor_if_busy(&p.state, read, reply);
                    }
                }
            }
            ShardMsg::ListOffsets {
                topic,
                partition,
                timestamp,
                reply,
            } => {
                let Some(topic) = self.live(&topic) else {
                    let _ = reply.send(ListOutcome::error(unknown));
                    return;
                };
                let max = self.broker.config.list_offsets_decompress_max_bytes;
                match self.get(&topic, partition).await {
                    Err(e) => {
                        let _ = reply.send(ListOutcome::failed(&e));
                    }
                    // Earliest and latest are in memory.
                    Ok(p) if matches!(timestamp, list_offsets::EARLIEST | list_offsets::LATEST) => {
                        let read =
                            move |state: &PartitionState| list(&state.log, timestamp).finish(max);
                        off_reactor_if_busy(&p.state, read, reply);
                    }
                    // A search by time reads the disk, on the pool; the batch it finds is
                    // decoded after the partition's lock is let go.
                    Ok(p) => {
                        let state = p.state.clone();
                        answer_from_pool(
                            move || {
                                let located = list(&lock(&state).log, timestamp);
                                located.finish(max)
                            },
                            reply,
                        );
                    }
                }
            }
        }
    }

    /// Deletes the segments that each open log's `retention.ms` and `retention.bytes` let go
    /// (the files are unlinked by a flusher thread once the new log start is durable). Off the
    /// reactor: an append may hold a log.
    /// One pass at a time: a pass still running when the next is due makes that one skip.
    /// The pass also lists this shard's partitions that are not open (not used since the start)
    /// and hold more than one segment: `open_for_retention` opens them, so the next pass
    /// covers them too, as Kafka keeps every log open.
    pub fn enforce_retention(&mut self) {
        // A pass still running, or finished with findings `open_for_retention` has not taken.
        if self.retention.is_some() {
            return;
        }
        let states: Vec<Shared> = self.open.values().map(|p| p.state.clone()).collect();
        let shards = self.broker.mailboxes.len();
        let unopened: Vec<TopicPartition> = self
            .broker
            .topics
            .snapshot()
            .values()
            .flat_map(|t| (0..t.partitions).map(move |p| (t.clone(), p)))
            .filter(|(t, p)| weir_broker::owner(&t.name, *p, shards) == self.shard)
            .filter(|(t, p)| !self.open.contains_key(&(t.id, *p)))
            .collect();
        let broker = self.broker.clone();
        self.retention = Some(tokio::task::spawn_blocking(move || {
            let metrics = &broker.metrics;
            for state in states {
                let gone = lock(&state).log.enforce_retention();
                if gone.segments_deleted > 0 {
                    metrics
                        .retention_segments_deleted
                        .fetch_add(gone.segments_deleted as u64, Ordering::Relaxed);
                    metrics
                        .retention_bytes_deleted
                        .fetch_add(gone.bytes_deleted, Ordering::Relaxed);
                }
            }
            let segments = |dir: &std::path::Path| {
                std::fs::read_dir(dir).map_or(0, |entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                        .count()
                })
            };
            unopened
                .into_iter()
                .filter(|(t, p)| segments(&broker.topics.partition_dir(t, *p)) > 1)
                .collect()
        }));
    }

    /// Opens the partitions the last retention pass found unopened with sealed segments (once
    /// it has finished), so that retention reaches them from the next pass on.
    pub async fn open_for_retention(&mut self) {
        let Some(pass) = self.retention.take_if(|pass| pass.is_finished()) else {
            return;
        };
        for (topic, partition) in pass.await.unwrap_or_default() {
            if let Some(topic) = self.live(&topic) {
                if let Err(e) = self.get(&topic, partition).await {
                    eprintln!(
                        "weir: opening {}/{partition} for retention: {e}",
                        topic.name
                    );
                }
            }
        }
    }

    /// Clean shutdown of every open log, once its appender has finished: producer snapshots
    /// and index tails written, checkpoints made.
    pub async fn close_all(&mut self) {
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT_MAX;
        for (_, partition) in self.open.drain() {
            let Some(mut state) = partition.release(deadline).await else {
                eprintln!("weir: a partition log was still in use at shutdown: not closed cleanly");
                continue;
            };
            let dir = state.log.dir().to_path_buf();
            let end = state.log.log_end_offset();
            state.producers.forget_below(state.log.log_start_offset());
            let snapshot = state.producers.encode_snapshot(end);
            // The snapshot only once the log it describes is durable.
            match state.log.close() {
                Ok(()) => {
                    if let Err(e) = write_producer_snapshot(&dir, end, &snapshot) {
                        eprintln!(
                            "weir: writing the producer snapshot in {}: {e}",
                            dir.display()
                        );
                    }
                }
                Err(e) => eprintln!("weir: closing {}: {e}", dir.display()),
            }
        }
    }
}

impl Partition {
    /// Stops the appender once it has finished what it was given, and waits until nothing
    /// else (a read or a retention pass on the blocking pool) holds the partition: its state,
    /// or `None` if it was still held at `deadline`.
    async fn release(self, deadline: tokio::time::Instant) -> Option<PartitionState> {
        drop(self.appends);
        let _ = self.appender.await;
        let mut shared = self.state;
        loop {
            match Arc::try_unwrap(shared) {
                Ok(state) => return Some(state.into_inner().unwrap_or_else(|e| e.into_inner())),
                Err(_) if tokio::time::Instant::now() >= deadline => return None,
                Err(back) => shared = back,
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Runs `read` on the partition now if its lock is free, else on the blocking pool (an append
/// holds it, perhaps waiting for the disk), and sends the answer.
fn off_reactor_if_busy<T: Send + 'static>(
    state: &Shared,
    read: impl FnOnce(&PartitionState) -> T + Send + 'static,
    reply: oneshot::Sender<T>,
) {
    read_off_reactor_unless(state, |_| true, read, reply);
}

/// A read of stored data: on the reactor only if the partition's lock is free and `quick`
/// (under the lock) says the read will not wait for the disk; otherwise on the blocking pool.
/// Returns whether it ran on the reactor.
fn read_off_reactor_unless<T: Send + 'static>(
    state: &Shared,
    quick: impl FnOnce(&PartitionState) -> bool,
    read: impl FnOnce(&PartitionState) -> T + Send + 'static,
    reply: oneshot::Sender<T>,
) -> bool {
    if let Ok(guard) = state.try_lock() {
        if quick(&guard) {
            let _ = reply.send(read(&guard));
            return true;
        }
    }
    let state = state.clone();
    answer_from_pool(move || read(&lock(&state)), reply);
    false
}

/// Runs `work` on the shard's blocking pool and sends its answer.
fn answer_from_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
    reply: oneshot::Sender<T>,
) {
    let work = tokio::task::spawn_blocking(work);
    tokio::task::spawn_local(async move {
        if let Ok(answer) = work.await {
            let _ = reply.send(answer);
        }
    });
}

/// A Fetch's read of one partition.
fn fetch(
    state: &PartitionState,
    end: &watch::Sender<i64>,
    offset: i64,
    max_bytes: Option<u64>,
) -> FetchOutcome {
    let started = std::time::Instant::now();
    let log = &state.log;
    let high_watermark = log.log_end_offset();
    let log_start_offset = log.log_start_offset();
    let read = match max_bytes {
        Some(max) => log.read_copy(offset, max),
        // Budget spent: only say whether the offset is valid.
        None if (log_start_offset..=high_watermark).contains(&offset) => Ok(weir_log::ReadCopy {
            bytes: Vec::new(),
            first_offset: offset,
            next_offset: offset,
        }),
        None => Err(LogError::OffsetOutOfRange {
            offset,
            start: log_start_offset,
            end: high_watermark,
        }),
    };
    let mut outcome = match read {
        Ok(copy) => FetchOutcome {
            error_code: error_code::NONE,
            high_watermark,
            log_start_offset,
            records: Bytes::from(copy.bytes),
            end: Some(end.subscribe()),
            spent: Duration::ZERO,
        },
        Err(e) => FetchOutcome {
            high_watermark,
            log_start_offset,
            ..FetchOutcome::failed(&e)
        },
    };
    outcome.spent = started.elapsed();
    outcome
}

/// ListOffsets on one partition, as far as it needs the log: earliest and latest are
/// answered, a search by time finds its batch and copies it (the record in it is found by
/// `Located::finish`, without the partition's lock).
fn list(log: &Log, timestamp: i64) -> Located {
    let found = |offset| {
        Located::Done(ListOutcome {
            error_code: error_code::NONE,
            timestamp: -1,
            offset,
        })
    };
    let (hit, target) = match timestamp {
        list_offsets::LATEST => return found(log.log_end_offset()),
        list_offsets::EARLIEST => return found(log.log_start_offset()),
        list_offsets::MAX_TIMESTAMP => (log.max_timestamp(), None),
        _ => (log.find_timestamp(timestamp), Some(timestamp)),
    };
    match hit {
        Ok(Some(hit)) => {
            let start = log.log_start_offset();
            let batch = log.read_copy(hit.base_offset.max(start), 1).ok();
            Located::Batch {
                hit,
                start,
                target: target.unwrap_or(hit.max_timestamp),
                batch: batch.map(|copy| copy.bytes),
            }
        }
        Ok(None) => Located::Done(ListOutcome {
            error_code: error_code::NONE,
            timestamp: -1,
            offset: -1,
        }),
        Err(e) => Located::Done(ListOutcome::failed(&e)),
    }
}

/// What `list` found.
enum Located {
    Done(ListOutcome),
    /// The batch `hit` holds the record; `batch` is a copy of it (None if it could not be
    /// read), `start` the log start then.
    Batch {
        hit: weir_log::TimestampHit,
        start: i64,
        target: i64,
        batch: Option<Vec<u8>>,
    },
}

impl Located {
    /// The answer; a compressed batch is decompressed (at most `decompress_max` bytes).
    fn finish(self, decompress_max: usize) -> ListOutcome {
        match self {
            Located::Done(outcome) => outcome,
            Located::Batch {
                hit,
                start,
                target,
                batch,
            } => {
                let (offset, timestamp) =
                    exact_record(batch.as_deref(), hit, start, target, decompress_max);
                ListOutcome {
                    error_code: error_code::NONE,
                    timestamp,
                    offset,
                }
            }
        }
    }
}

/// The first record of the batch `hit` (copied in `batch`) at or after the log start `start`
/// whose timestamp is at or after `target`: (offset, timestamp). A compressed batch is
/// decompressed (at most `decompress_max` bytes); batches stamped with the log append time
/// need no record (every record has the batch's time), and the batch's first offset stands
/// for it, as it does for a batch that cannot be decoded or whose records fall outside it.
fn exact_record(
    batch: Option<&[u8]>,
    hit: weir_log::TimestampHit,
    start: i64,
    target: i64,
    decompress_max: usize,
) -> (i64, i64) {
    let batch_answer = (hit.base_offset.max(start), hit.max_timestamp);
    let Some(batch) = batch else {
        return batch_answer;
    };
    let Ok(header) = weir_log::batch::BatchHeader::decode(batch) else {
        return batch_answer;
    };
    let log_append_time = header.attributes & 0x08 != 0;
    if log_append_time || header.base_offset != hit.base_offset {
        return batch_answer;
    }
    let decompressed;
    let records = if header.compression() == 0 {
        match weir_log::batch::records::records(batch) {
            Ok(records) => records,
            Err(_) => return batch_answer,
        }
    } else {
        let Some(body) = batch.get(weir_log::batch::HEADER_BYTES..header.size()) else {
            return batch_answer;
        };
        decompressed = match crate::codecs::decompress(header.compression(), body, decompress_max) {
            Ok(records) => records,
            Err(_) => return batch_answer,
        };
        weir_log::batch::records::records_in(&decompressed, header.record_count)
    };
    for record in records {
        let Ok(record) = record else {
            return batch_answer;
        };
        // Offset deltas come from the producer (inside a compressed batch nobody checked
        // them): one outside the batch is not believed.
        let offset = header.base_offset + i64::from(record.offset_delta);
        if record.offset_delta < 0 || offset > header.last_offset() {
            return batch_answer;
        }
        let timestamp = header
            .first_timestamp
            .saturating_add(record.timestamp_delta);
        if offset >= start && timestamp >= target {
            return (offset, timestamp);
        }
    }
    batch_answer
}

impl ProduceOutcome {
    pub fn failed(error: &LogError) -> ProduceOutcome {
        ProduceOutcome {
            error_code: error_code_of(error),
            base_offset: -1,
            records: 0,
            log_start_offset: -1,
            message: Some(error.to_string()),
            spent: Duration::ZERO,
        }
    }

    pub fn error(code: i16) -> ProduceOutcome {
        ProduceOutcome {
            error_code: code,
            base_offset: -1,
            records: 0,
            log_start_offset: -1,
            message: None,
            spent: Duration::ZERO,
        }
    }
}

impl FetchOutcome {
    pub fn failed(error: &LogError) -> FetchOutcome {
        FetchOutcome::error(error_code_of(error))
    }

    pub fn error(code: i16) -> FetchOutcome {
        FetchOutcome {
            error_code: code,
            high_watermark: -1,
            log_start_offset: -1,
            records: Bytes::new(),
            end: None,
            spent: Duration::ZERO,
        }
    }
}

impl ListOutcome {
    pub fn failed(error: &LogError) -> ListOutcome {
        ListOutcome::error(error_code_of(error))
    }

    pub fn error(code: i16) -> ListOutcome {
        ListOutcome {
            error_code: code,
            timestamp: -1,
            offset: -1,
        }
    }
}

/// A shard's mailbox loop: serves partition requests until shutdown, then answers what is
/// still queued and closes its logs cleanly.
pub(crate) async fn run_mailbox(
    shard: usize,
    mut inbox: mpsc::Receiver<ShardMsg>,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut coordinators = match Coordinators::open(broker.clone(), shard).await {
        Ok(coordinators) => Some(coordinators),
        Err(e) => {
            // Groups coordinated here answer COORDINATOR_NOT_AVAILABLE; partitions still work.
            eprintln!("weir: shard {shard}: cannot open the offsets logs: {e}");
            None
        }
    };
    let every = broker.config.log_retention_check_interval;
    let mut retention_due = tokio::time::Instant::now() + every;
    let mut partitions = Partitions::new(broker, shard);
    loop {
        // The last pass's findings first (a new pass would replace them), then the next pass
        // if it is due: checked on every turn, so a busy mailbox cannot hold retention off.
        partitions.open_for_retention().await;
        if tokio::time::Instant::now() >= retention_due {
            partitions.enforce_retention();
            retention_due = tokio::time::Instant::now() + every;
        }
        let deadline = coordinators.as_mut().map(Coordinators::next_deadline);
        tokio::select! {
            // Queued requests first: a heartbeat waiting in the mailbox must be seen before
            // the timer expires its session.
            biased;
            msg = inbox.recv() => match msg {
                Some(ShardMsg::Group(msg)) => match coordinators.as_mut() {
                    Some(c) => c.handle(msg),
                    None => msg.unavailable(),
                },
                Some(msg) => partitions.handle(msg).await,
                None => break,
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                if deadline.is_some() => {
                if let Some(c) = coordinators.as_mut() {
                    c.tick();
                }
            }
            _ = tokio::time::sleep_until(retention_due) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    inbox.close();
    while let Some(msg) = inbox.recv().await {
        match msg {
            ShardMsg::Group(msg) => match coordinators.as_mut() {
                Some(c) => c.handle(msg),
                None => msg.unavailable(),
            },
            msg => partitions.handle(msg).await,
        }
    }
    if let Some(c) = coordinators {
        c.close();
    }
    partitions.close_all().await;
}
