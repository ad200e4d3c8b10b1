//! The owning side of partitions: each shard keeps the partitions it owns (their logs) and
//! serves the requests other shards' connections send to its mailbox. Nothing else touches a
//! partition's log, so it needs no lock.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
}

pub(crate) struct FetchOutcome {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
    /// Changes when the partition's log end offset moves: what a long poll waits on.
    pub end: Option<watch::Receiver<i64>>,
}

pub(crate) struct ListOutcome {
    pub error_code: i16,
    pub timestamp: i64,
    pub offset: i64,
}

struct Partition {
    log: Log,
    end: watch::Sender<i64>,
    /// Idempotent producers writing here: their epochs and last batches.
    producers: ProducerState,
    /// Segments when the producer snapshot was last written: a roll writes a new one.
    snapshot_segments: usize,
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
}

impl Partitions {
    pub fn new(broker: Arc<Broker>) -> Partitions {
        Partitions {
            broker,
            open: HashMap::new(),
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
            let snapshot_segments = log.segment_count();
            self.open.insert(
                key,
                Partition {
                    log,
                    end,
                    producers,
                    snapshot_segments,
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
                produce(p, records, wait_durable, reply);
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
                let outcome = match self.get(&topic, partition).await {
                    Err(e) => FetchOutcome::failed(&e),
                    Ok(p) => {
                        let high_watermark = p.log.log_end_offset();
                        let log_start_offset = p.log.log_start_offset();
                        let read = match max_bytes {
                            Some(max) => p.log.read_copy(offset, max),
                            // Budget spent: only say whether the offset is valid.
                            None if (log_start_offset..=high_watermark).contains(&offset) => {
                                Ok(weir_log::ReadCopy {
                                    bytes: Vec::new(),
                                    first_offset: offset,
                                    next_offset: offset,
                                })
                            }
                            None => Err(LogError::OffsetOutOfRange {
                                offset,
                                start: log_start_offset,
                                end: high_watermark,
                            }),
                        };
                        match read {
                            Ok(copy) => FetchOutcome {
                                error_code: error_code::NONE,
                                high_watermark,
                                log_start_offset,
                                records: Bytes::from(copy.bytes),
                                end: Some(p.end.subscribe()),
                            },
                            Err(e) => FetchOutcome {
                                high_watermark,
                                log_start_offset,
                                ..FetchOutcome::failed(&e)
                            },
                        }
                    }
                };
                let _ = reply.send(outcome);
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
                let offset = if offset == weir_kafka::delete_records::HIGH_WATERMARK {
                    p.log.log_end_offset()
                } else {
                    offset
                };
                match p.log.advance_start_offset(offset) {
                    Err(e) => {
                        let _ = reply.send((-1, error_code_of(&e)));
                    }
                    Ok(durable) => {
                        let low = p.log.log_start_offset();
                        tokio::task::spawn_local(async move {
                            let answer = match durable.await {
                                Ok(()) => (low, error_code::NONE),
                                Err(e) => (-1, error_code_of(&e)),
                            };
                            let _ = reply.send(answer);
                        });
                    }
                }
            }
            ShardMsg::Reconfigure { topic, reply } => {
                // The registry's settings, not the message's: two changes may arrive in either
                // order, the registry holds the last one.
                if let Some(topic) = self.live(&topic) {
                    for ((id, _), partition) in self.open.iter_mut() {
                        if *id == topic.id {
                            // The settings were validated before they were stored.
                            let _ = partition.log.set_config(topic.config.clone());
                        }
                    }
                }
                let _ = reply.send(());
            }
            ShardMsg::Forget {
                topic_id,
                partition,
                reply,
            } => {
                self.open.remove(&(topic_id, partition));
                let _ = reply.send(());
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
                let outcome = match self.get(&topic, partition).await {
                    Err(e) => ListOutcome::failed(&e),
                    Ok(p) => list(&p.log, timestamp),
                };
                let _ = reply.send(outcome);
            }
        }
    }

    /// Deletes the segments that each open log's `retention.ms` and `retention.bytes` let go
    /// (the files are unlinked by a flusher thread once the new log start is durable).
    pub fn enforce_retention(&mut self) {
        let metrics = &self.broker.metrics;
        for partition in self.open.values_mut() {
            let gone = partition.log.enforce_retention();
            if gone.segments_deleted > 0 {
                metrics
                    .retention_segments_deleted
                    .fetch_add(gone.segments_deleted as u64, Ordering::Relaxed);
                metrics
                    .retention_bytes_deleted
                    .fetch_add(gone.bytes_deleted, Ordering::Relaxed);
            }
        }
    }

    /// Clean shutdown of every open log: producer snapshots and index tails written,
    /// checkpoints made.
    pub fn close_all(&mut self) {
        for (_, mut partition) in self.open.drain() {
            let dir = partition.log.dir().to_path_buf();
            let end = partition.log.log_end_offset();
            partition
                .producers
                .forget_below(partition.log.log_start_offset());
            let snapshot = partition.producers.encode_snapshot(end);
            // The snapshot only once the log it describes is durable.
            match partition.log.close() {
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

/// Appends a Produce's records for one partition. Batches of an idempotent producer are
/// checked against its sequence first: a retry is answered with the original offsets, a gap or
/// an old epoch is refused.
fn produce(
    p: &mut Partition,
    mut records: Vec<u8>,
    wait_durable: bool,
    reply: oneshot::Sender<ProduceOutcome>,
) {
    // The headers say whether a producer is idempotent; only then is the batch checked in
    // full here (the append checks every batch anyway), so a corrupt retry is never answered
    // as a duplicate.
    let shape = BatchesShape::of(&records);
    if shape.control || (shape.idempotent && shape.batches > 1) {
        // Control batches are the broker's to write; an idempotent producer sends one batch
        // per partition, as Kafka requires of Produce v3+.
        let _ = reply.send(ProduceOutcome::error(error_code::INVALID_RECORD));
        return;
    }
    let idempotent = if shape.idempotent {
        weir_log::batch::BatchHeader::decode(&records).ok()
    } else {
        None
    };
    if idempotent.is_some_and(|h| h.base_sequence < 0) {
        let _ = reply.send(ProduceOutcome::error(error_code::INVALID_RECORD));
        return;
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
                let _ = reply.send(ProduceOutcome {
                    message: Some(e.to_string()),
                    ..ProduceOutcome::error(error_code::CORRUPT_MESSAGE)
                });
                return;
            }
        }
        match verdict {
            Err(SequenceError::StaleEpoch { .. }) => {
                let _ = reply.send(ProduceOutcome::error(error_code::INVALID_PRODUCER_EPOCH));
                return;
            }
            Err(SequenceError::OutOfOrder { .. }) => {
                let _ = reply.send(ProduceOutcome::error(
                    error_code::OUT_OF_ORDER_SEQUENCE_NUMBER,
                ));
                return;
            }
            Ok(Verdict::Duplicate(done)) => {
                let outcome = ProduceOutcome {
                    error_code: error_code::NONE,
                    base_offset: done.base_offset,
                    records: 0,
                    log_start_offset: p.log.log_start_offset(),
                    message: None,
                };
                // The first attempt may still be waiting for its fdatasync.
                let durable = if wait_durable {
                    p.log.sync()
                } else {
                    weir_log::Durable::ready()
                };
                reply_when_durable(durable, outcome, reply);
                return;
            }
            Ok(Verdict::Append) => {}
        }
    }
    match p.log.append(&mut records) {
        Err(e) => {
            let _ = reply.send(ProduceOutcome::failed(&e));
        }
        Ok(appended) => {
            p.end.send_replace(p.log.log_end_offset());
            if let Some(header) = &idempotent {
                record_batch(
                    &mut p.producers,
                    header,
                    appended.base_offset,
                    appended.last_offset,
                );
            }
            if p.log.segment_count() != p.snapshot_segments {
                // A roll: snapshot the producers, so a restart reads only the newer segments;
                // written once the log below its offset is durable.
                p.snapshot_segments = p.log.segment_count();
                p.producers.forget_below(p.log.log_start_offset());
                let end = p.log.log_end_offset();
                let bytes = p.producers.encode_snapshot(end);
                let dir = p.log.dir().to_path_buf();
                let synced = p.log.sync();
                tokio::task::spawn_local(async move {
                    if synced.await.is_err() {
                        return;
                    }
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
                });
            }
            let outcome = ProduceOutcome {
                error_code: error_code::NONE,
                base_offset: appended.base_offset,
                records: (appended.last_offset - appended.base_offset + 1) as u64,
                log_start_offset: p.log.log_start_offset(),
                message: None,
            };
            let durable = if wait_durable {
                appended.durable
            } else {
                weir_log::Durable::ready()
            };
            reply_when_durable(durable, outcome, reply);
        }
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
        }
    }

    pub fn error(code: i16) -> ProduceOutcome {
        ProduceOutcome {
            error_code: code,
            base_offset: -1,
            records: 0,
            log_start_offset: -1,
            message: None,
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
    partitions.close_all();
}
