//! Idempotent producers: producer ids, and each partition's view of the producers writing to it.
//!
//! A producer gets an id and epoch from InitProducerId and numbers its batches per partition
//! (base sequence, one more per record). The partition keeps, per producer, its epoch and its
//! last [`BATCHES_KEPT`] batches: a retried batch that matches one of them is answered with its
//! original offsets and not written again; a batch that does not follow the last is refused
//! (a gap), and so is an older epoch (a fenced producer). The state is rebuilt from the batch
//! headers in the log, starting from a snapshot so that recovery reads only the tail.
//!
//! Snapshot file (`producer.snapshot`, big-endian): `magic "WPS1", version u8 (0), log offset
//! i64 (state covers batches below it), count u32, count × (producer id i64, epoch i16, last
//! timestamp i64, batch count u8, batch count × (first sequence i32, last sequence i32, base
//! offset i64, last offset i64)), crc32c u32 of everything before it`.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer and partition, as Kafka (and its clients' max in-flight).
pub const BATCHES_KEPT: usize = 5;

const SNAPSHOT_MAGIC: &[u8; 4] = b"WPS1";
const SNAPSHOT_VERSION: u8 = 0;

/// A batch of an idempotent producer already in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    last_timestamp_ms: i64,
    batches: VecDeque<BatchMeta>,
}

/// What to do with an incoming batch of an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next batch in sequence: append it.
    Append,
    /// A retry of a batch already written: answer with its offsets, write nothing.
    Duplicate(BatchMeta),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer epoch {found} is older than the current {current}")]
    StaleEpoch { current: i16, found: i16 },
    #[error("out of order sequence: expected {expected}, found {found}")]
    OutOfOrder { expected: i32, found: i32 },
}

/// The sequence after `seq` (sequences wrap from i32::MAX to 0).
pub fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// The last sequence of a batch starting at `first` with `records` records.
pub fn last_seq(first: i32, records: i32) -> i32 {
    let last = i64::from(first) + i64::from(records.max(1)) - 1;
    (last % (i64::from(i32::MAX) + 1)) as i32
}

/// One partition's producers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, Producer>,
}

impl ProducerState {
    pub fn new() -> ProducerState {
        ProducerState::default()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Judges a batch from producer `id` at `epoch` with sequences `first..=last`.
    pub fn check(
        &self,
        id: i64,
        epoch: i16,
        first: i32,
        last: i32,
    ) -> Result<Verdict, SequenceError> {
        // A producer new to this partition, or with a new epoch, starts at sequence 0.
        let from_zero = || {
            if first == 0 {
                Ok(Verdict::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    expected: 0,
                    found: first,
                })
            }
        };
        let Some(producer) = self.producers.get(&id) else {
            return from_zero();
        };
        if epoch < producer.epoch {
            return Err(SequenceError::StaleEpoch {
                current: producer.epoch,
                found: epoch,
            });
        }
        if epoch > producer.epoch {
            return from_zero();
        }
        if let Some(done) = producer
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(Verdict::Duplicate(*done));
        }
        let expected = producer.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if first == expected {
            Ok(Verdict::Append)
        } else {
            Err(SequenceError::OutOfOrder {
                expected,
                found: first,
            })
        }
    }

    /// Records a batch now in the log (after an append, or while replaying the log).
    pub fn record(&mut self, id: i64, epoch: i16, batch: BatchMeta, timestamp_ms: i64) {
        let producer = self.producers.entry(id).or_insert_with(|| Producer {
            epoch,
            last_timestamp_ms: timestamp_ms,
            batches: VecDeque::with_capacity(BATCHES_KEPT),
        });
        if epoch > producer.epoch {
            producer.epoch = epoch;
            producer.batches.clear();
        }
        if producer.batches.len() == BATCHES_KEPT {
            producer.batches.pop_front();
        }
        producer.batches.push_back(batch);
        producer.last_timestamp_ms = producer.last_timestamp_ms.max(timestamp_ms);
    }

    /// Forgets producers whose last batch lies below `log_start_offset` (retention or
    /// DeleteRecords removed it): their state can no longer be rebuilt from the log either, and
    /// without this ids a client makes up would accumulate for ever.
    pub fn forget_below(&mut self, log_start_offset: i64) {
        self.producers.retain(|_, p| {
            p.batches
                .back()
                .is_some_and(|b| b.last_offset >= log_start_offset)
        });
    }

    /// The snapshot file's bytes for a state covering the batches below `offset`.
    pub fn encode_snapshot(&self, offset: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(21 + self.producers.len() * 100);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort();
        for id in ids {
            let p = &self.producers[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&p.epoch.to_be_bytes());
            out.extend_from_slice(&p.last_timestamp_ms.to_be_bytes());
            out.push(p.batches.len() as u8);
            for b in &p.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a snapshot: the offset it covers up to, and the state.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(i64, ProducerState), SnapshotError> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .ok_or(SnapshotError("shorter than its checksum"))?;
        let (body, crc) = bytes.split_at(body_len);
        let stored = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
        if crc32c::crc32c(body) != stored {
            return Err(SnapshotError("checksum mismatch"));
        }
        let mut c = Cursor { buf: body, at: 0 };
        if c.take(4)? != SNAPSHOT_MAGIC || c.take(1)?[0] != SNAPSHOT_VERSION {
            return Err(SnapshotError("not a version 0 producer snapshot"));
        }
        let offset = c.i64()?;
        let count = c.u32()?;
        let mut state = ProducerState::new();
        for _ in 0..count {
            let id = c.i64()?;
            let epoch = i16::from_be_bytes(c.take(2)?.try_into().expect("2 bytes"));
            let last_timestamp_ms = c.i64()?;
            let n = c.take(1)?[0] as usize;
            if n > BATCHES_KEPT {
                return Err(SnapshotError("too many batches for a producer"));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: c.u32()? as i32,
                    last_seq: c.u32()? as i32,
                    base_offset: c.i64()?,
                    last_offset: c.i64()?,
                });
            }
            state.producers.insert(
                id,
                Producer {
                    epoch,
                    last_timestamp_ms,
                    batches,
                },
            );
        }
        if c.at != body.len() {
            return Err(SnapshotError("trailing bytes"));
        }
        Ok((offset, state))
    }
}

/// A snapshot that cannot be used; the state is then rebuilt from the whole log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unusable producer snapshot: {0}")]
pub struct SnapshotError(&'static str);

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let bytes = self
            .buf
            .get(self.at..self.at + n)
            .ok_or(SnapshotError("truncated"))?;
        self.at += n;
        Ok(bytes)
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

/// Hands out producer ids in blocks: the end of the current block is stored (and synced)
/// before any id in it is used, so ids are never reused after a restart or a crash.
#[derive(Debug)]
pub struct ProducerIds {
    next: i64,
    block_end: i64,
}

/// Ids reserved per write of the producer-id file.
pub const PRODUCER_ID_BLOCK: i64 = 1_000;

impl ProducerIds {
    /// Starts after `stored_end`, the block end found on disk (0 for a new data directory).
    pub fn new(stored_end: i64) -> ProducerIds {
        ProducerIds {
            next: stored_end,
            block_end: stored_end,
        }
    }

    /// The next id, or `Err(new block end)` when a new block must be stored first (then call
    /// [`ProducerIds::block_stored`]).
    pub fn allocate(&mut self) -> Result<i64, i64> {
        if self.next < self.block_end {
            self.next += 1;
            Ok(self.next - 1)
        } else {
            Err(self.block_end + PRODUCER_ID_BLOCK)
        }
    }

    pub fn block_stored(&mut self, end: i64) {
        self.next = self.next.max(self.block_end);
        self.block_end = self.block_end.max(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: i32, records: i32, base: i64) -> BatchMeta {
        BatchMeta {
            first_seq: first,
            last_seq: last_seq(first, records),
            base_offset: base,
            last_offset: base + i64::from(records) - 1,
        }
    }

    #[test]
    fn sequences_dedupe_retries_and_refuse_gaps_and_fenced_epochs() {
        let mut state = ProducerState::new();
        assert_eq!(state.check(7, 0, 0, 9), Ok(Verdict::Append));
        assert_eq!(
            state.check(7, 0, 5, 9),
            Err(SequenceError::OutOfOrder {
                expected: 0,
                found: 5
            })
        );
        for i in 0..8 {
            let b = batch(i * 10, 10, 100 + i64::from(i) * 10);
            assert_eq!(
                state.check(7, 0, b.first_seq, b.last_seq),
                Ok(Verdict::Append)
            );
            state.record(7, 0, b, 1);
        }
        // The last five are remembered; a retry of one gets its original offsets.
        assert_eq!(
            state.check(7, 0, 70, 79),
            Ok(Verdict::Duplicate(batch(70, 10, 170)))
        );
        assert_eq!(
            state.check(7, 0, 30, 39),
            Ok(Verdict::Duplicate(batch(30, 10, 130)))
        );
        assert!(matches!(
            state.check(7, 0, 20, 29),
            Err(SequenceError::OutOfOrder { expected: 80, .. })
        ));
        assert!(matches!(
            state.check(7, 0, 90, 99),
            Err(SequenceError::OutOfOrder { expected: 80, .. })
        ));
        assert_eq!(state.check(7, 0, 80, 80), Ok(Verdict::Append));
        // A new epoch starts over at 0 and fences the old one.
        assert!(state.check(7, 1, 80, 80).is_err());
        assert_eq!(state.check(7, 1, 0, 0), Ok(Verdict::Append));
        state.record(7, 1, batch(0, 1, 200), 2);
        assert_eq!(
            state.check(7, 0, 80, 80),
            Err(SequenceError::StaleEpoch {
                current: 1,
                found: 0
            })
        );
        // Producers whose batches retention removed are forgotten.
        state.record(8, 0, batch(0, 1, 300), 3);
        state.forget_below(250);
        assert_eq!(state.len(), 1);
        assert_eq!(
            state.check(7, 1, 0, 0),
            Ok(Verdict::Append),
            "producer 7 is gone"
        );
        // Sequences wrap.
        assert_eq!(last_seq(i32::MAX - 1, 3), 0);
        assert_eq!(next_seq(i32::MAX), 0);
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let mut state = ProducerState::new();
        for id in 0..20 {
            for i in 0..(id % 7) as i32 {
                state.record(id, (id % 3) as i16, batch(i * 2, 2, i64::from(i) * 2), id);
            }
        }
        let bytes = state.encode_snapshot(1234);
        assert_eq!(
            ProducerState::decode_snapshot(&bytes),
            Ok((1234, state.clone()))
        );
        for cut in 0..bytes.len() {
            assert!(ProducerState::decode_snapshot(&bytes[..cut]).is_err());
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert!(
                ProducerState::decode_snapshot(&bad).is_err(),
                "flip at {at}"
            );
        }
    }

    #[test]
    fn producer_ids_are_used_only_inside_a_stored_block() {
        let mut ids = ProducerIds::new(0);
        assert_eq!(ids.allocate(), Err(PRODUCER_ID_BLOCK));
        ids.block_stored(PRODUCER_ID_BLOCK);
        let first: Vec<i64> = (0..PRODUCER_ID_BLOCK)
            .map(|_| ids.allocate().expect("in block"))
            .collect();
        assert_eq!(first, (0..PRODUCER_ID_BLOCK).collect::<Vec<_>>());
        assert_eq!(ids.allocate(), Err(2 * PRODUCER_ID_BLOCK));
        // After a restart, ids start past the stored block end: none is reused.
        let mut restarted = ProducerIds::new(PRODUCER_ID_BLOCK);
        assert_eq!(restarted.allocate(), Err(2 * PRODUCER_ID_BLOCK));
        restarted.block_stored(2 * PRODUCER_ID_BLOCK);
        assert_eq!(restarted.allocate(), Ok(PRODUCER_ID_BLOCK));
    }
}
