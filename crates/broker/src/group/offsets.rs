//! Committed offsets: the in-memory table a coordinator answers OffsetFetch from, and the
//! records that make it durable.
//!
//! Every commit is a record in the coordinator partition's offsets log, appended (and synced)
//! before the commit is acknowledged; on start the table is rebuilt by replaying the log. A
//! record's key names (group, topic, partition), its value the commit; a null value deletes the
//! entry (OffsetDelete, DeleteGroups, expiry). Both are versioned; see docs/format/offsets.md.
//!
//! ```text
//! key   = version u8 (0), group (u16 length + UTF-8), topic (same), partition i32
//! value = version u8 (0), offset i64, leader epoch i32, commit time ms i64,
//!         metadata (u16 length + UTF-8)
//! ```

use std::collections::{BTreeMap, HashMap};

const KEY_VERSION: u8 = 0;
const VALUE_VERSION: u8 = 0;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    /// Wall-clock time of the commit (ms since the epoch): what expiry measures from.
    pub commit_time_ms: i64,
}

/// (topic, partition)
pub type TopicPartition = (String, i32);

/// A record of the offsets log that cannot be read: a disk problem or a bug, reported with
/// what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable offsets record: {0}")]
pub struct RecordError(&'static str);

/// The committed offsets of every group one coordinator partition holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetStore {
    groups: HashMap<String, BTreeMap<TopicPartition, Committed>>,
}

impl OffsetStore {
    pub fn new() -> OffsetStore {
        OffsetStore::default()
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.groups.get(group)?.get(&(topic.to_string(), partition))
    }

    /// Every committed offset of `group`, by topic and partition.
    pub fn group(&self, group: &str) -> Option<&BTreeMap<TopicPartition, Committed>> {
        self.groups.get(group)
    }

    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Number of (group, topic, partition) entries.
    pub fn len(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Stores a commit (`Some`) or deletes an entry (`None`).
    pub fn apply(&mut self, group: &str, topic: &str, partition: i32, value: Option<Committed>) {
        let key = (topic.to_string(), partition);
        match value {
            Some(committed) => {
                self.groups
                    .entry(group.to_string())
                    .or_default()
                    .insert(key, committed);
            }
            None => {
                if let Some(offsets) = self.groups.get_mut(group) {
                    offsets.remove(&key);
                    if offsets.is_empty() {
                        self.groups.remove(group);
                    }
                }
            }
        }
    }

    /// Applies one record read back from the log.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RecordError> {
        let (group, topic, partition) = decode_key(key)?;
        let value = value.map(decode_value).transpose()?;
        self.apply(&group, &topic, partition, value);
        Ok(())
    }

    /// Entries of `group` committed before `cutoff_ms`: what expiry deletes.
    pub fn older_than(&self, group: &str, cutoff_ms: i64) -> Vec<TopicPartition> {
        self.groups.get(group).map_or_else(Vec::new, |offsets| {
            offsets
                .iter()
                .filter(|(_, c)| c.commit_time_ms < cutoff_ms)
                .map(|(tp, _)| tp.clone())
                .collect()
        })
    }

    /// Every entry as (key, value) records: the compacted contents of the log.
    pub fn records(&self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
        self.groups.iter().flat_map(|(group, offsets)| {
            offsets.iter().map(move |((topic, partition), committed)| {
                (
                    encode_key(group, topic, *partition),
                    encode_value(committed),
                )
            })
        })
    }
}

/// Whether a string fits a record's u16 length prefix.
pub fn fits(s: &str) -> bool {
    s.len() <= usize::from(u16::MAX)
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + group.len() + topic.len());
    out.push(KEY_VERSION);
    put_str(&mut out, group);
    put_str(&mut out, topic);
    out.extend_from_slice(&partition.to_be_bytes());
    out
}

pub fn encode_value(committed: &Committed) -> Vec<u8> {
    let mut out = Vec::with_capacity(23 + committed.metadata.len());
    out.push(VALUE_VERSION);
    out.extend_from_slice(&committed.offset.to_be_bytes());
    out.extend_from_slice(&committed.leader_epoch.to_be_bytes());
    out.extend_from_slice(&committed.commit_time_ms.to_be_bytes());
    put_str(&mut out, &committed.metadata);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Callers check `fits` first; a longer string is our bug.
    let len = u16::try_from(s.len()).expect("string checked to fit a u16 length");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        let bytes = self
            .buf
            .get(self.at..self.at + n)
            .ok_or(RecordError(what))?;
        self.at += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordError> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }

    fn string(&mut self, what: &'static str) -> Result<String, RecordError> {
        let len = u16::from_be_bytes(self.array(what)?);
        let bytes = self.take(usize::from(len), what)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| RecordError(what))
    }

    fn end(&self) -> Result<(), RecordError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(RecordError("trailing bytes"))
        }
    }
}

pub fn decode_key(key: &[u8]) -> Result<(String, String, i32), RecordError> {
    let mut c = Cursor { buf: key, at: 0 };
    if c.array::<1>("key version")?[0] != KEY_VERSION {
        return Err(RecordError("unknown key version"));
    }
    let group = c.string("group")?;
    let topic = c.string("topic")?;
    let partition = i32::from_be_bytes(c.array("partition")?);
    c.end()?;
    Ok((group, topic, partition))
}

pub fn decode_value(value: &[u8]) -> Result<Committed, RecordError> {
    let mut c = Cursor { buf: value, at: 0 };
    if c.array::<1>("value version")?[0] != VALUE_VERSION {
        return Err(RecordError("unknown value version"));
    }
    let offset = i64::from_be_bytes(c.array("offset")?);
    let leader_epoch = i32::from_be_bytes(c.array("leader epoch")?);
    let commit_time_ms = i64::from_be_bytes(c.array("commit time")?);
    let metadata = c.string("metadata")?;
    c.end()?;
    Ok(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_time_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offset: i64, time: i64) -> Committed {
        Committed {
            offset,
            leader_epoch: 3,
            metadata: "m-ü".to_string(),
            commit_time_ms: time,
        }
    }

    #[test]
    fn records_round_trip_and_replay_rebuilds_the_table() {
        let mut store = OffsetStore::new();
        store.apply("g1", "orders", 0, Some(committed(10, 100)));
        store.apply("g1", "orders", 1, Some(committed(11, 200)));
        store.apply("g2", "payments", 7, Some(committed(5, 300)));
        let mut replayed = OffsetStore::new();
        for (key, value) in store.records() {
            replayed.replay(&key, Some(&value)).expect("valid");
        }
        assert_eq!(replayed, store);
        replayed
            .replay(&encode_key("g1", "orders", 0), None)
            .expect("tombstone");
        assert_eq!(replayed.get("g1", "orders", 0), None);
        assert_eq!(replayed.get("g1", "orders", 1), Some(&committed(11, 200)));
        assert_eq!(replayed.older_than("g1", 201), vec![("orders".into(), 1)]);
        replayed
            .replay(&encode_key("g2", "payments", 7), None)
            .expect("tombstone");
        assert!(!replayed.has_group("g2"));
        assert_eq!(replayed.len(), 1);
    }

    #[test]
    fn every_truncated_or_altered_record_is_an_error_not_a_panic() {
        let key = encode_key("group", "topic", 4);
        let value = encode_value(&committed(99, 1));
        for cut in 0..key.len() {
            assert!(decode_key(&key[..cut]).is_err(), "key cut {cut}");
        }
        for cut in 0..value.len() {
            assert!(decode_value(&value[..cut]).is_err(), "value cut {cut}");
        }
        let mut longer = key.clone();
        longer.push(0);
        assert!(decode_key(&longer).is_err());
        let mut bad_version = value.clone();
        bad_version[0] = 9;
        assert!(decode_value(&bad_version).is_err());
        for at in 0..key.len() {
            let mut flipped = key.clone();
            flipped[at] ^= 0xff;
            let _ = decode_key(&flipped);
        }
    }
}
