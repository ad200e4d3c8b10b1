//! The owning side of partitions: each shard keeps the partitions it owns (their logs) and
//! serves the requests other shards' connections send to its mailbox. Nothing else touches a
//! partition's log, so it needs no lock.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use weir_broker::producer::{self, BatchMeta, ProducerState, SequenceError, Verdict};
use weir_broker::topics::Topic;
use weir_kafka::{error_code, list_offsets};
use weir_log::{Log, LogError, LogOptions};

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

pub(crate) struct ListOutcome {
    pub error_code: i16,
    pub timestamp: i64,
    pub offset: i64,
}

/// What a partition's appends and reads share: its log and its producers. Appends run on the
/// shard's blocking pool (a `pwrite` can wait for the disk), reads on the reactor when the lock
/// is free; the lock is never waited for on the reactor.
struct PartitionState {
    log: Log,
    /// Idempotent producers writing here: their epochs and last batches.
    producers: ProducerState,
    /// Segments when the producer snapshot was last written: a roll writes a new one.
    snapshot_segments: usize,
}

type Shared = Arc<std::sync::Mutex<PartitionState>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, PartitionState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// One Produce's records for the partition's appender.
struct AppendJob {
    records: Vec<u8>,
    wait_durable: bool,
    reply: oneshot::Sender<ProduceOutcome>,
}

/// Most appends one trip to the blocking pool takes: under load the queue is taken in runs, so
/// the hand-off costs little per append; the lock is held for one run at most.
const APPENDS_PER_RUN_MAX: usize = 64;

/// Produces up to this size are appended on the reactor when their partition's appender is
/// idle and the disk has not lately been slow: the hand-off to the blocking pool would cost
/// more than the write (measured: 0.57x the requests/s for 1-record Produces). Larger ones
/// always go to the pool, which also keeps their CRC pass off the reactor.
const INLINE_APPEND_BYTES_MAX: usize = 64 * 1024;
/// An append on the reactor that took this long means the disk is pushing back ...
const SLOW_INLINE_APPEND: Duration = Duration::from_millis(1);
/// ... and every append of the shard goes to the blocking pool for this long.
const OFFLOAD_HOLD: Duration = Duration::from_secs(5);

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

/// The producer snapshot in a partition's log directory (weir-log ignores other files).
const PRODUCER_SNAPSHOT: &str = "producer.snapshot";

/// Rebuilds a partition's producer state: the snapshot, then the batch headers after it (the
/// whole log when there is no usable snapshot). Blocking (reads the disk).
fn load_producers(log: &Log) -> Result<ProducerState, LogError> {
    let path = log.dir().join(PRODUCER_SNAPSHOT);
    let rebuild = || (log.log_start_offset(), ProducerState::new());
    let (from, mut state) = match std::fs::read(&path) {
        Ok(bytes) => match ProducerState::decode_snapshot(&bytes) {
            Ok((offset, state)) if offset <= log.log_end_offset() => (offset, state),
            rejected => {
                // Past the log end (a crash cut the log below it) or damaged: it must go before
                // anything is appended, or a later open could take it for the new history.
                if let Err(e) = &rejected {
                    eprintln!("weir: {}: {e}; rebuilding from the log", path.display());
                }
                std::fs::remove_file(&path)
                    .and_then(|()| std::fs::File::open(log.dir())?.sync_all())
                    .map_err(|e| LogError::Failed {
                        cause: format!("removing {}: {e}", path.display()),
                    })?;
                rebuild()
            }
        },
        Err(_) => rebuild(),
    };
    log.scan_headers_from(from, |header| {
        if header.producer_id >= 0 && !header.is_control() {
            record_batch(&mut state, header, header.base_offset, header.last_offset());
        }
    })?;
    Ok(state)
}

/// Records an idempotent producer's batch, now at `base_offset..=last_offset` in the log.
fn record_batch(
    state: &mut ProducerState,
    header: &weir_log::batch::BatchHeader,
    base_offset: i64,
    last_offset: i64,
) {
    let records = header.last_offset_delta.max(0).saturating_add(1);
    let batch = BatchMeta {
        first_seq: header.base_sequence,
        last_seq: producer::last_seq(header.base_sequence, records),
        base_offset,
        last_offset,
    };
    state.record(
        header.producer_id,
        header.producer_epoch,
        batch,
        header.max_timestamp,
    );
}

/// Writes a producer snapshot covering the log below `offset`, which must be durable already:
/// temporary file, fsync, rename, directory fsync. Blocking.
fn write_producer_snapshot(
    dir: &std::path::Path,
    offset: i64,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{PRODUCER_SNAPSHOT}.{offset}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(PRODUCER_SNAPSHOT))?;
    std::fs::File::open(dir)?.sync_all()
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
}

impl Partitions {
    pub fn new(broker: Arc<Broker>) -> Partitions {
        Partitions {
            broker,
            open: HashMap::new(),
            offload_until: None,
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
                    // The appender is idle, so nothing queued for this partition is overtaken.
                    if let Ok(mut state) = p.state.try_lock() {
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
                        off_reactor_if_busy(&p.state, read, reply);
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
                // The registry's settings, not the message's: two changes may arrive in either
                // order, the registry holds the last one.
                if let Some(topic) = self.live(&topic) {
                    let states: Vec<Shared> = self
                        .open
                        .iter()
                        .filter(|((id, _), _)| *id == topic.id)
                        .map(|(_, p)| p.state.clone())
                        .collect();
                    // Applied between appends, off the reactor (an append may be writing).
                    let applied = tokio::task::spawn_blocking(move || {
                        for state in states {
                            // The settings were validated before they were stored.
                            let _ = lock(&state).log.set_config(topic.config.clone());
                        }
                    });
                    tokio::task::spawn_local(async move {
                        let _ = applied.await;
                        let _ = reply.send(());
                    });
                } else {
                    let _ = reply.send(());
                }
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
                // Answered once the appender has finished what it was given and the log is
                // dropped (its files are about to go).
                drop(gone.appends);
                tokio::task::spawn_local(async move {
                    let _ = gone.appender.await;
                    drop(gone.state);
                    let _ = reply.send(());
                });
            }
            ShardMsg::Group(msg) => msg.unavailable(),
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
                match self.get(&topic, partition).await {
                    Err(e) => {
                        let _ = reply.send(ListOutcome::failed(&e));
                    }
                    Ok(p) => {
                        let read = move |state: &PartitionState| list(&state.log, timestamp);
                        off_reactor_if_busy(&p.state, read, reply);
                    }
                }
            }
        }
    }

    /// Deletes the segments that each open log's `retention.ms` and `retention.bytes` let go
    /// (the files are unlinked by a flusher thread once the new log start is durable). Off the
    /// reactor: an append may hold a log.
    pub fn enforce_retention(&self) {
        let states: Vec<Shared> = self.open.values().map(|p| p.state.clone()).collect();
        let broker = self.broker.clone();
        drop(tokio::task::spawn_blocking(move || {
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
        }));
    }

    /// Clean shutdown of every open log, once its appender has finished: producer snapshots
    /// and index tails written, checkpoints made.
    pub async fn close_all(&mut self) {
        for (_, partition) in self.open.drain() {
            drop(partition.appends);
            let _ = partition.appender.await;
            // A read or a retention pass on the blocking pool may still hold the log briefly.
            let mut shared = partition.state;
            let mut waited = Duration::ZERO;
            let state = loop {
                match Arc::try_unwrap(shared) {
                    Ok(state) => break Some(state),
                    Err(_) if waited >= CLOSE_WAIT_MAX => break None,
                    Err(back) => shared = back,
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                waited += Duration::from_millis(1);
            };
            let Some(state) = state else {
                eprintln!("weir: a partition log was still in use at shutdown: not closed cleanly");
                continue;
            };
            let mut state = state.into_inner().unwrap_or_else(|e| e.into_inner());
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

/// Runs `read` on the partition now if its lock is free, else on the blocking pool (an append
/// holds it, perhaps waiting for the disk), and sends the answer.
fn off_reactor_if_busy<T: Send + 'static>(
    state: &Shared,
    read: impl FnOnce(&PartitionState) -> T + Send + 'static,
    reply: oneshot::Sender<T>,
) {
    if let Ok(guard) = state.try_lock() {
        let _ = reply.send(read(&guard));
        return;
    }
    let state = state.clone();
    let read = tokio::task::spawn_blocking(move || read(&lock(&state)));
    tokio::task::spawn_local(async move {
        if let Ok(answer) = read.await {
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

/// A partition's appender: takes its Produces in order, in runs, to the blocking pool, where
/// they are appended under the partition's lock; answers them back on the reactor.
async fn run_appender(
    state: Shared,
    end: Arc<watch::Sender<i64>>,
    mut jobs: mpsc::Receiver<AppendJob>,
    pending: std::rc::Rc<std::cell::Cell<usize>>,
) {
    let mut run = Vec::with_capacity(APPENDS_PER_RUN_MAX);
    while jobs.recv_many(&mut run, APPENDS_PER_RUN_MAX).await > 0 {
        let (inputs, replies): (Vec<_>, Vec<_>) = run
            .drain(..)
            .map(|job| ((job.records, job.wait_durable), job.reply))
            .unzip();
        let state = state.clone();
        let end = end.clone();
        let appended = tokio::task::spawn_blocking(move || {
            let mut s = lock(&state);
            inputs
                .into_iter()
                .map(|(records, wait_durable)| produce(&mut s, &end, records, wait_durable))
                .collect::<Vec<Produced>>()
        })
        .await;
        pending.set(pending.get() - replies.len());
        match appended {
            Ok(done) => {
                for (produced, reply) in done.into_iter().zip(replies) {
                    produced.finish(reply);
                }
            }
            Err(e) => {
                let failed = LogError::Failed {
                    cause: format!("the append panicked: {e}"),
                };
                for reply in replies {
                    let _ = reply.send(ProduceOutcome::failed(&failed));
                }
            }
        }
    }
}

/// What an append leaves for the reactor: the answer, when it may go (acks=all waits for
/// `durable`), and a producer snapshot to write after a roll.
struct Produced {
    outcome: ProduceOutcome,
    durable: weir_log::Durable,
    snapshot: Option<Snapshot>,
}

impl Produced {
    fn now(outcome: ProduceOutcome) -> Produced {
        Produced {
            outcome,
            durable: weir_log::Durable::ready(),
            snapshot: None,
        }
    }

    /// On the reactor: answers (acks=all once durable) and writes the snapshot.
    fn finish(self, reply: oneshot::Sender<ProduceOutcome>) {
        if let Some(snapshot) = self.snapshot {
            tokio::task::spawn_local(snapshot.write());
        }
        reply_when_durable(self.durable, self.outcome, reply);
    }
}

/// A producer snapshot to write once the log below `end` is durable (`synced`).
struct Snapshot {
    dir: std::path::PathBuf,
    end: i64,
    bytes: Vec<u8>,
    synced: weir_log::Durable,
}

impl Snapshot {
    async fn write(self) {
        if self.synced.await.is_err() {
            return;
        }
        let (dir, end, bytes) = (self.dir, self.end, self.bytes);
        let written = tokio::task::spawn_blocking(move || {
            write_producer_snapshot(&dir, end, &bytes).map_err(|e| (dir, e))
        })
        .await;
        if let Ok(Err((dir, e))) = written {
            eprintln!(
                "weir: writing the producer snapshot in {}: {e}",
                dir.display()
            );
        }
    }
}

/// Appends a Produce's records for one partition (blocking: runs on the blocking pool). Batches
/// of an idempotent producer are checked against its sequence first: a retry is answered with
/// the original offsets, a gap or an old epoch is refused.
fn produce(
    p: &mut PartitionState,
    end: &watch::Sender<i64>,
    records: Vec<u8>,
    wait_durable: bool,
) -> Produced {
    let started = std::time::Instant::now();
    let mut produced = produce_untimed(p, end, records, wait_durable);
    produced.outcome.spent = started.elapsed();
    produced
}

fn produce_untimed(
    p: &mut PartitionState,
    end: &watch::Sender<i64>,
    mut records: Vec<u8>,
    wait_durable: bool,
) -> Produced {
    // The headers say whether a producer is idempotent; only then is the batch checked in
    // full here (the append checks every batch anyway), so a corrupt retry is never answered
    // as a duplicate.
    let shape = BatchesShape::of(&records);
    if shape.control || (shape.idempotent && shape.batches > 1) {
        // Control batches are the broker's to write; an idempotent producer sends one batch
        // per partition, as Kafka requires of Produce v3+.
        return Produced::now(ProduceOutcome::error(error_code::INVALID_RECORD));
    }
    let idempotent = if shape.idempotent {
        weir_log::batch::BatchHeader::decode(&records).ok()
    } else {
        None
    };
    if idempotent.is_some_and(|h| h.base_sequence < 0) {
        return Produced::now(ProduceOutcome::error(error_code::INVALID_RECORD));
    }
    if let Some(header) = &idempotent {
        let first = header.base_sequence;
        let last = producer::last_seq(first, header.last_offset_delta.max(0).saturating_add(1));
        let verdict = p
            .producers
            .check(header.producer_id, header.producer_epoch, first, last);
        // A batch to append is checked by the append; one answered here without being written
        // (a duplicate, a refused sequence) is checked now, so damage is never taken for those.
        if verdict != Ok(Verdict::Append) {
            if let Err(e) = weir_log::batch::validate(&records) {
                return Produced::now(ProduceOutcome {
                    message: Some(e.to_string()),
                    ..ProduceOutcome::error(error_code::CORRUPT_MESSAGE)
                });
            }
        }
        match verdict {
            Err(SequenceError::StaleEpoch { .. }) => {
                return Produced::now(ProduceOutcome::error(error_code::INVALID_PRODUCER_EPOCH));
            }
            Err(SequenceError::OutOfOrder { .. }) => {
                return Produced::now(ProduceOutcome::error(
                    error_code::OUT_OF_ORDER_SEQUENCE_NUMBER,
                ));
            }
            Ok(Verdict::Duplicate(done)) => {
                // The first attempt may still be waiting for its fdatasync.
                return Produced {
                    outcome: ProduceOutcome {
                        error_code: error_code::NONE,
                        base_offset: done.base_offset,
                        records: 0,
                        log_start_offset: p.log.log_start_offset(),
                        message: None,
                        spent: Duration::ZERO,
                    },
                    durable: if wait_durable {
                        p.log.sync()
                    } else {
                        weir_log::Durable::ready()
                    },
                    snapshot: None,
                };
            }
            Ok(Verdict::Append) => {}
        }
    }
    let appended = match p.log.append(&mut records) {
        Err(e) => return Produced::now(ProduceOutcome::failed(&e)),
        Ok(appended) => appended,
    };
    end.send_replace(p.log.log_end_offset());
    if let Some(header) = &idempotent {
        record_batch(
            &mut p.producers,
            header,
            appended.base_offset,
            appended.last_offset,
        );
    }
    let mut snapshot = None;
    if p.log.segment_count() != p.snapshot_segments {
        // A roll: snapshot the producers, so a restart reads only the newer segments; written
        // once the log below its offset is durable.
        p.snapshot_segments = p.log.segment_count();
        p.producers.forget_below(p.log.log_start_offset());
        let end = p.log.log_end_offset();
        snapshot = Some(Snapshot {
            dir: p.log.dir().to_path_buf(),
            end,
            bytes: p.producers.encode_snapshot(end),
            synced: p.log.sync(),
        });
    }
    Produced {
        outcome: ProduceOutcome {
            error_code: error_code::NONE,
            base_offset: appended.base_offset,
            records: (appended.last_offset - appended.base_offset + 1) as u64,
            log_start_offset: p.log.log_start_offset(),
            message: None,
            spent: Duration::ZERO,
        },
        durable: if wait_durable {
            appended.durable
        } else {
            weir_log::Durable::ready()
        },
        snapshot,
    }
}

/// What the batch headers of a Produce's records say (headers only; the append validates).
struct BatchesShape {
    batches: usize,
    idempotent: bool,
    control: bool,
}

impl BatchesShape {
    fn of(records: &[u8]) -> BatchesShape {
        let mut shape = BatchesShape {
            batches: 0,
            idempotent: false,
            control: false,
        };
        let mut at = 0;
        while let Ok(header) = weir_log::batch::BatchHeader::decode(&records[at..]) {
            if header.length < weir_log::batch::BATCH_LENGTH_MIN {
                break;
            }
            shape.batches += 1;
            shape.idempotent |= header.producer_id >= 0;
            shape.control |= header.is_control();
            at = at.saturating_add(header.size());
            if at >= records.len() {
                break;
            }
        }
        shape
    }
}

fn reply_when_durable(
    durable: weir_log::Durable,
    outcome: ProduceOutcome,
    reply: oneshot::Sender<ProduceOutcome>,
) {
    if durable.is_ready() {
        let _ = reply.send(match durable.wait() {
            Ok(()) => outcome,
            Err(e) => ProduceOutcome::failed(&e),
        });
        return;
    }
    tokio::task::spawn_local(async move {
        let outcome = match durable.await {
            Ok(()) => outcome,
            Err(e) => ProduceOutcome::failed(&e),
        };
        let _ = reply.send(outcome);
    });
}

fn list(log: &Log, timestamp: i64) -> ListOutcome {
    // By time, and max timestamp: the batch is found through the index, then the record in it.
    let by_time =
        |hit: Result<Option<weir_log::TimestampHit>, LogError>, target: Option<i64>| match hit {
            Ok(Some(hit)) => {
                let (offset, timestamp) =
                    exact_record(log, hit, target.unwrap_or(hit.max_timestamp));
                ListOutcome {
                    error_code: error_code::NONE,
                    timestamp,
                    offset,
                }
            }
            Ok(None) => ListOutcome {
                error_code: error_code::NONE,
                timestamp: -1,
                offset: -1,
            },
            Err(e) => ListOutcome::failed(&e),
        };
    let found = |offset| ListOutcome {
        error_code: error_code::NONE,
        timestamp: -1,
        offset,
    };
    match timestamp {
        list_offsets::LATEST => found(log.log_end_offset()),
        list_offsets::EARLIEST => found(log.log_start_offset()),
        list_offsets::MAX_TIMESTAMP => by_time(log.max_timestamp(), None),
        _ => by_time(log.find_timestamp(timestamp), Some(timestamp)),
    }
}

/// The first record of the batch `hit` whose timestamp is at or after `target`: (offset,
/// timestamp). Records of compressed batches are not decoded here, nor needed for batches
/// stamped with the log append time (every record has the batch's time): the batch's first
/// offset then stands for it.
fn exact_record(log: &Log, hit: weir_log::TimestampHit, target: i64) -> (i64, i64) {
    let start = log.log_start_offset();
    let batch_answer = (hit.base_offset.max(start), hit.max_timestamp);
    let Ok(copy) = log.read_copy(hit.base_offset.max(start), 1) else {
        return batch_answer;
    };
    let Ok(header) = weir_log::batch::BatchHeader::decode(&copy.bytes) else {
        return batch_answer;
    };
    let log_append_time = header.attributes & 0x08 != 0;
    if log_append_time || header.base_offset != hit.base_offset {
        return batch_answer;
    }
    let Ok(records) = weir_log::batch::records::records(&copy.bytes) else {
        return batch_answer;
    };
    for record in records {
        let Ok(record) = record else {
            return batch_answer;
        };
        let offset = header.base_offset + i64::from(record.offset_delta);
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
    let mut retention = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut partitions = Partitions::new(broker);
    loop {
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
            _ = retention.tick() => partitions.enforce_retention(),
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
