//! The sparse index of one segment: offset → file position, with the running maximum timestamp.
//!
//! Held in memory as a sorted `Vec` (16 bytes an entry: a 1 GiB segment of 16 KiB batches needs
//! 1 MiB) and mirrored to `<base>.index` in the background of appends: entries are written in
//! groups of [`INDEX_WRITE_BATCH_ENTRIES`] so an append costs no extra syscall. The file may lag
//! the log or hold a torn tail after a crash; it is never trusted beyond what [`Index::load`]
//! checks, and whatever it lacks is rebuilt from batch headers.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes per entry on disk: relative offset u32, position u32, max timestamp i64, big-endian.
pub(crate) const ENTRY_BYTES: usize = 16;
/// Entries buffered in memory before they are written to the index file (4 KiB).
pub(crate) const INDEX_WRITE_BATCH_ENTRIES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Base offset of the indexed batch minus the segment's base offset.
    pub rel_offset: u32,
    /// File position of the indexed batch.
    pub position: u32,
    /// Largest batch max-timestamp from the segment start up to and including this batch.
    /// Non-decreasing along the index, so lookups by time are binary searches.
    pub max_timestamp: i64,
}

impl IndexEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> IndexEntry {
        let mut rel = [0u8; 4];
        let mut pos = [0u8; 4];
        let mut ts = [0u8; 8];
        rel.copy_from_slice(&bytes[0..4]);
        pos.copy_from_slice(&bytes[4..8]);
        ts.copy_from_slice(&bytes[8..16]);
        IndexEntry {
            rel_offset: u32::from_be_bytes(rel),
            position: u32::from_be_bytes(pos),
            max_timestamp: i64::from_be_bytes(ts),
        }
    }

    /// Whether `next` may follow `self` in an index.
    fn precedes(&self, next: &IndexEntry) -> bool {
        next.rel_offset > self.rel_offset
            && next.position > self.position
            && next.max_timestamp >= self.max_timestamp
    }
}

pub(crate) struct Index {
    path: PathBuf,
    file: Arc<File>,
    entries: Vec<IndexEntry>,
    /// How many entries are in the file (a prefix of `entries`).
    persisted: usize,
}

impl Index {
    /// Creates an empty index file, replacing any existing one.
    pub fn create(path: &Path) -> io::Result<Index> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Index {
            path: path.to_path_buf(),
            file: Arc::new(file),
            entries: Vec::new(),
            persisted: 0,
        })
    }

    /// Reads an index file, keeping the longest prefix of entries that is well formed:
    /// increasing offsets and positions, non-decreasing timestamps, positions below `log_len`,
    /// first entry at position 0. Returns the index and whether the whole file was kept.
    /// The caller checks the last entry against the log and extends the index from there.
    pub fn load(path: &Path, log_len: u64) -> io::Result<(Index, bool)> {
        let file = File::options().read(true).write(true).open(path)?;
        let bytes = std::fs::read(path)?;
        let mut entries = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
        let mut whole = bytes.len() % ENTRY_BYTES == 0;
        for chunk in bytes.chunks_exact(ENTRY_BYTES) {
            let entry = IndexEntry::decode(chunk);
            let fits = u64::from(entry.position) < log_len;
            let ordered = match entries.last() {
                None => entry.position == 0 && entry.rel_offset == 0,
                Some(prev) => IndexEntry::precedes(prev, &entry),
            };
            if !fits || !ordered {
                whole = false;
                break;
            }
            entries.push(entry);
        }
        let persisted = entries.len();
        Ok((
            Index {
                path: path.to_path_buf(),
                file: Arc::new(file),
                entries,
                persisted,
            },
            whole,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    pub fn last(&self) -> Option<&IndexEntry> {
        self.entries.last()
    }

    pub fn push(&mut self, entry: IndexEntry) {
        if let Some(prev) = self.entries.last() {
            assert!(prev.precedes(&entry), "index entries out of order");
        }
        self.entries.push(entry);
    }

    /// Drops entries from `keep` on (in memory; the file is cut on the next `write_pending`).
    pub fn truncate(&mut self, keep: usize) {
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(keep);
    }

    /// Number of entries not yet in the file.
    pub fn pending(&self) -> usize {
        self.entries.len() - self.persisted
    }

    /// Writes the entries the file lacks, and cuts the file to the entry count.
    pub fn write_pending(&mut self) -> io::Result<()> {
        let start = self.persisted * ENTRY_BYTES;
        if self.pending() > 0 {
            let mut buf = Vec::with_capacity(self.pending() * ENTRY_BYTES);
            for entry in &self.entries[self.persisted..] {
                entry.encode(&mut buf);
            }
            self.file.write_all_at(&buf, start as u64)?;
        }
        let want = (self.entries.len() * ENTRY_BYTES) as u64;
        if self.file.metadata()?.len() != want {
            self.file.set_len(want)?;
        }
        self.persisted = self.entries.len();
        Ok(())
    }

    /// Writes pending entries once a group of them has gathered.
    pub fn write_if_due(&mut self) -> io::Result<()> {
        if self.pending() >= INDEX_WRITE_BATCH_ENTRIES {
            self.write_pending()?;
        }
        Ok(())
    }

    /// The last entry whose offset is at or below `rel_offset`.
    pub fn floor_offset(&self, rel_offset: u32) -> Option<&IndexEntry> {
        let n = self.entries.partition_point(|e| e.rel_offset <= rel_offset);
        n.checked_sub(1).map(|i| &self.entries[i])
    }

    /// The last entry whose position is at or below `position`.
    pub fn floor_position(&self, position: u64) -> Option<&IndexEntry> {
        let n = self
            .entries
            .partition_point(|e| u64::from(e.position) <= position);
        n.checked_sub(1).map(|i| &self.entries[i])
    }

    /// The entry from which a forward scan finds the first batch with max timestamp ≥ `ts`:
    /// the last entry whose running maximum is still below `ts`, or the first entry.
    pub fn scan_start_for_timestamp(&self, ts: i64) -> Option<&IndexEntry> {
        let n = self.entries.partition_point(|e| e.max_timestamp < ts);
        self.entries.get(n.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: u32, pos: u32, ts: i64) -> IndexEntry {
        IndexEntry {
            rel_offset: rel,
            position: pos,
            max_timestamp: ts,
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-index-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("00000000000000000000.index")
    }

    #[test]
    fn lookups_match_a_linear_scan() {
        let path = temp_path("lookup");
        let mut index = Index::create(&path).expect("create");
        let mut ts = 100;
        for i in 0..500u32 {
            ts += i64::from(i % 3);
            index.push(entry(i * 10, i * 4096, ts));
        }
        for probe in 0..5_100u32 {
            let linear = index.entries().iter().rev().find(|e| e.rel_offset <= probe);
            assert_eq!(index.floor_offset(probe), linear);
            let pos = u64::from(probe) * 409;
            let linear = index
                .entries()
                .iter()
                .rev()
                .find(|e| u64::from(e.position) <= pos);
            assert_eq!(index.floor_position(pos), linear);
        }
        for probe in 90..(ts + 5) {
            let first = index
                .entries()
                .iter()
                .position(|e| e.max_timestamp >= probe);
            let want = match first {
                Some(i) => &index.entries()[i.saturating_sub(1)],
                None => index.entries().last().expect("entries"),
            };
            assert_eq!(index.scan_start_for_timestamp(probe), Some(want));
        }
        std::fs::remove_dir_all(path.parent().expect("dir")).ok();
    }

    #[test]
    fn load_keeps_the_well_formed_prefix() {
        let path = temp_path("load");
        let mut index = Index::create(&path).expect("create");
        for i in 0..10u32 {
            index.push(entry(i, i * 100, 5));
        }
        index.write_pending().expect("write");
        // A torn tail: half an entry, then a zeroed entry as a crash may leave.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&[0u8; ENTRY_BYTES + 7]);
        std::fs::write(&path, &bytes).expect("write");

        let (loaded, whole) = Index::load(&path, 10_000).expect("load");
        assert!(!whole);
        assert_eq!(loaded.entries(), index.entries());

        // Entries pointing past the log are cut too.
        let (loaded, whole) = Index::load(&path, 450).expect("load");
        assert!(!whole);
        assert_eq!(loaded.entries().len(), 5);
        std::fs::remove_dir_all(path.parent().expect("dir")).ok();
    }
}
