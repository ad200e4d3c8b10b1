//! The write side of a partition: its log and producer state behind one lock, and the
//! appender that takes its Produces in order to the shard's blocking pool (a buffered `pwrite`
//! can wait for the disk; decision 38). Small Produces may be appended on the reactor instead
//! (`Partitions::handle` decides); both paths run `produce` under the lock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use weir_broker::producer::{self, BatchMeta, ProducerState, SequenceError, Verdict};
use weir_kafka::error_code;
use weir_log::{Log, LogError};

use crate::partition::ProduceOutcome;

/// What a partition's appends and reads share: its log and its producers. Appends run on the
/// shard's blocking pool (a `pwrite` can wait for the disk), reads on the reactor when the lock
/// is free; the lock is never waited for on the reactor.
pub(crate) struct PartitionState {
    pub log: Log,
    /// Idempotent producers writing here: their epochs and last batches.
    pub producers: ProducerState,
    /// Segments when the producer snapshot was last written: a roll writes a new one.
    pub snapshot_segments: usize,
}

pub(crate) type Shared = Arc<std::sync::Mutex<PartitionState>>;

pub(crate) fn lock(state: &Shared) -> std::sync::MutexGuard<'_, PartitionState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// One Produce's records for the partition's appender.
pub(crate) struct AppendJob {
    pub records: Vec<u8>,
    pub wait_durable: bool,
    pub reply: oneshot::Sender<ProduceOutcome>,
}

/// Most appends one trip to the blocking pool takes: under load the queue is taken in runs, so
/// the hand-off costs little per append; the lock is held for one run at most.
const APPENDS_PER_RUN_MAX: usize = 64;

/// Produces up to this size are appended on the reactor when their partition's appender is
/// idle and the disk has not lately been slow: the hand-off to the blocking pool would cost
/// more than the write (measured: 0.57x the requests/s for 1-record Produces). Larger ones
/// always go to the pool, which also keeps their CRC pass off the reactor.
pub(crate) const INLINE_APPEND_BYTES_MAX: usize = 64 * 1024;
/// An append on the reactor that took this long means the disk is pushing back ...
pub(crate) const SLOW_INLINE_APPEND: Duration = Duration::from_millis(1);
/// ... and every append of the shard goes to the blocking pool for this long.
pub(crate) const OFFLOAD_HOLD: Duration = Duration::from_secs(5);

/// The producer snapshot in a partition's log directory (weir-log ignores other files).
const PRODUCER_SNAPSHOT: &str = "producer.snapshot";

/// Rebuilds a partition's producer state: the snapshot, then the batch headers after it (the
/// whole log when there is no usable snapshot). Blocking (reads the disk).
pub(crate) fn load_producers(log: &Log) -> Result<ProducerState, LogError> {
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
pub(crate) fn write_producer_snapshot(
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

/// A partition's appender: takes its Produces in order, in runs, to the blocking pool, where
/// they are appended under the partition's lock; answers them back on the reactor.
pub(crate) async fn run_appender(
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
pub(crate) struct Produced {
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
    pub(crate) fn finish(self, reply: oneshot::Sender<ProduceOutcome>) {
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
pub(crate) fn produce(
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
