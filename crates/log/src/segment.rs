//! One segment: `<base_offset:020>.log` of batches back to back, and its sparse index.
//!
//! A segment knows positions and offsets; it does not know about other segments, durability or
//! retention. Reads of bytes this process neither wrote nor CRC-checked during recovery are
//! checked before they are served ([`Segment::verify`]).

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::error::{Corruption, LogError};
use crate::index::{Index, IndexEntry};

/// Bytes read at a time when CRC-checking a range of the log.
pub(crate) const SCAN_CHUNK_BYTES: usize = 1 << 20;

pub(crate) fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

pub(crate) fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

pub(crate) struct Segment {
    pub base_offset: i64,
    /// Offset after the last batch (= base offset when empty).
    pub next_offset: i64,
    /// Bytes of valid batches in the file.
    pub len: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub index: Index,
    /// Largest batch max-timestamp in the segment, -1 when none has one.
    pub max_timestamp: i64,
    /// Time the segment's age is measured from for `segment.ms`: its first batch's timestamp,
    /// or the clock when it was created (or opened) if that batch has none.
    pub roll_base_ms: i64,
    /// Clock at the last append (file modification time after a reopen): retention's fallback
    /// when batches carry no timestamps.
    pub last_modified_ms: i64,
    /// Position and base offset of the last batch.
    pub last_batch: Option<(u64, i64)>,
    /// Bytes at and after this position were written or CRC-checked by this process.
    pub verified_from: u64,
    /// Bytes before this position were CRC-checked by a read (sequential catch-up reads extend it).
    verified_prefix: Cell<u64>,
}

impl Segment {
    /// Creates an empty segment whose first batch will get `base_offset`.
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Segment, LogError> {
        let path = log_path(dir, base_offset);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| LogError::io("create segment", &path, e))?;
        let ipath = index_path(dir, base_offset);
        let index = match Index::create(&ipath) {
            Ok(index) => index,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(LogError::io("create index", &ipath, e));
            }
        };
        Ok(Segment {
            base_offset,
            next_offset: base_offset,
            len: 0,
            path,
            file: Arc::new(file),
            index,
            max_timestamp: -1,
            roll_base_ms: now_ms,
            last_modified_ms: now_ms,
            last_batch: None,
            verified_from: 0,
            verified_prefix: Cell::new(0),
        })
    }

    /// A segment over an opened file whose first `len` bytes are known to be whole batches
    /// indexed by `index`; `last_batch` and `max_timestamp` describe them.
    pub fn from_parts(parts: SegmentParts) -> Segment {
        Segment {
            base_offset: parts.base_offset,
            next_offset: parts.next_offset,
            len: parts.len,
            path: parts.path,
            file: parts.file,
            index: parts.index,
            max_timestamp: parts.max_timestamp,
            roll_base_ms: parts.roll_base_ms,
            last_modified_ms: parts.last_modified_ms,
            last_batch: parts.last_batch,
            verified_from: parts.verified_from,
            verified_prefix: Cell::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes already validated and stamped batches at the end of the segment. `batches` lists
    /// each batch's position in `bytes` and its header. On a failed write the file is cut back,
    /// so the segment is as before; if even that fails, the error says so.
    pub fn append(
        &mut self,
        bytes: &[u8],
        batches: &[(usize, BatchHeader)],
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<(), AppendFailure> {
        if let Err(e) = self.file.write_all_at(bytes, self.len) {
            let error = LogError::io("write", &self.path, e);
            return match self.file.set_len(self.len) {
                Ok(()) => Err(AppendFailure::RolledBack(error)),
                Err(cut) => Err(AppendFailure::Inconsistent {
                    error: Box::new(error),
                    rollback: Box::new(LogError::io(
                        "truncate after failed write",
                        &self.path,
                        cut,
                    )),
                }),
            };
        }
        for (at, header) in batches {
            let position = self.len + *at as u64;
            if self.last_batch.is_none() && header.max_timestamp >= 0 {
                self.roll_base_ms = header.max_timestamp;
            }
            self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
            let due = match self.index.last() {
                None => true,
                Some(last) => position - u64::from(last.position) >= index_interval_bytes,
            };
            if due {
                self.index
                    .push(self.entry_for(position, header.base_offset));
            }
            self.last_batch = Some((position, header.base_offset));
            self.next_offset = header.last_offset() + 1;
        }
        self.len += bytes.len() as u64;
        self.last_modified_ms = now_ms;
        // The index file is rebuildable from the log: a failure here costs a rebuild after a
        // crash, not data. It is retried at the next group and reported by `seal`/`close`.
        let _ = self.index.write_if_due();
        Ok(())
    }

    fn entry_for(&self, position: u64, base_offset: i64) -> IndexEntry {
        IndexEntry {
            rel_offset: u32::try_from(base_offset - self.base_offset)
                .expect("relative offset checked by the roll rule"),
            position: u32::try_from(position).expect("segment size checked by the roll rule"),
            max_timestamp: self.max_timestamp,
        }
    }

    /// Makes the last batch an index entry (so a reopen finds the segment's end in one read)
    /// and writes all pending entries. Called when the segment stops being the active one.
    pub fn seal_index(&mut self) -> Result<(), LogError> {
        if let Some((position, base_offset)) = self.last_batch {
            let indexed = self
                .index
                .last()
                .is_some_and(|e| u64::from(e.position) == position);
            if !indexed {
                self.index.push(self.entry_for(position, base_offset));
            }
        }
        self.index
            .write_pending()
            .map_err(|e| LogError::io("write index", self.index.path(), e))
    }

    /// Reads and checks the header of the batch at `position` (no CRC).
    pub fn header_at(&self, position: u64) -> Result<BatchHeader, LogError> {
        read_header(&self.file, &self.path, position, self.len)
    }

    /// Position and header of the batch holding `offset`, which must be in
    /// `[base_offset, next_offset)`.
    pub fn locate(&self, offset: i64) -> Result<(u64, BatchHeader), LogError> {
        let rel = u32::try_from(offset - self.base_offset).expect("offset within segment");
        let mut position = match self.index.floor_offset(rel) {
            Some(entry) => self.indexed_batch(entry)?.0,
            None => 0,
        };
        loop {
            let header = self.header_at(position)?;
            if header.last_offset() >= offset {
                return Ok((position, header));
            }
            position += header.size() as u64;
        }
    }

    /// End position of a read starting at the batch at `start` (header `first`): whole batches
    /// only, at least the first, no more than `max_bytes` beyond that. Also returns the offset
    /// after the last batch included.
    pub fn read_end(
        &self,
        start: u64,
        first: &BatchHeader,
        max_bytes: u64,
    ) -> Result<(u64, i64), LogError> {
        let limit = start.saturating_add(max_bytes);
        let mut end = start + first.size() as u64;
        let mut next = first.last_offset() + 1;
        if end >= self.len {
            return Ok((self.len, self.next_offset));
        }
        if limit >= self.len {
            return Ok((self.len, self.next_offset));
        }
        // Jump to the furthest indexed batch boundary within the limit, then walk headers.
        if let Some(entry) = self.index.floor_position(limit) {
            if u64::from(entry.position) > end {
                (end, next) = self.indexed_batch(entry)?;
            }
        }
        while end < self.len {
            let header = self.header_at(end)?;
            let after = end + header.size() as u64;
            if after > limit {
                return Ok((end, header.base_offset));
            }
            end = after;
            next = header.last_offset() + 1;
        }
        Ok((end, next))
    }

    /// Position and base offset of the batch an index entry points at, checked against the
    /// batch header there: an index entry is a hint, never the truth.
    fn indexed_batch(&self, entry: &IndexEntry) -> Result<(u64, i64), LogError> {
        let position = u64::from(entry.position);
        let expected = self.base_offset + i64::from(entry.rel_offset);
        let header = self.header_at(position)?;
        if header.base_offset != expected {
            return Err(LogError::Corrupt {
                path: self.index.path().to_path_buf(),
                position,
                reason: Corruption::OffsetGap {
                    expected,
                    found: header.base_offset,
                },
            });
        }
        Ok((position, expected))
    }

    /// Position and header of the first batch whose max timestamp is at least `ts`, among the
    /// batches holding an offset at or above `min_offset`.
    pub fn find_timestamp(
        &self,
        ts: i64,
        min_offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        if self.max_timestamp < ts || self.next_offset <= min_offset {
            return Ok(None);
        }
        let by_time = self
            .index
            .scan_start_for_timestamp(ts)
            .map_or(0, |e| u64::from(e.position));
        let by_offset = match u32::try_from(min_offset - self.base_offset) {
            Ok(rel) => self
                .index
                .floor_offset(rel)
                .map_or(0, |e| u64::from(e.position)),
            Err(_) => 0,
        };
        let mut position = by_time.max(by_offset);
        while position < self.len {
            let header = self.header_at(position)?;
            if header.max_timestamp >= ts && header.last_offset() >= min_offset {
                return Ok(Some((position, header)));
            }
            position += header.size() as u64;
        }
        Ok(None)
    }

    /// CRC-checks `[start, end)` (whole batches) unless this process already has. Expected to
    /// start at `first_offset`.
    pub fn verify(&self, start: u64, end: u64, first_offset: i64) -> Result<(), LogError> {
        let unverified_end = end.min(self.verified_from);
        let from = start.max(self.verified_prefix.get().min(unverified_end));
        if from >= unverified_end {
            return Ok(());
        }
        let expected = if from == start {
            first_offset
        } else {
            self.header_at(from)?.base_offset
        };
        let scan = scan_batches(
            &self.file,
            &self.path,
            from,
            unverified_end,
            expected,
            |_, _| Ok(()),
        )?;
        if let Some(reason) = scan.corruption {
            return Err(LogError::Corrupt {
                path: self.path.clone(),
                position: scan.valid_end,
                reason,
            });
        }
        if from <= self.verified_prefix.get() {
            self.verified_prefix.set(unverified_end);
        }
        Ok(())
    }
}

/// The pieces recovery assembles a segment from.
pub(crate) struct SegmentParts {
    pub base_offset: i64,
    pub next_offset: i64,
    pub len: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub index: Index,
    pub max_timestamp: i64,
    pub roll_base_ms: i64,
    pub last_modified_ms: i64,
    pub last_batch: Option<(u64, i64)>,
    pub verified_from: u64,
}

/// How a failed append left the segment.
pub(crate) enum AppendFailure {
    /// The file was cut back: nothing changed.
    RolledBack(LogError),
    /// The write failed and so did cutting the file back: the tail holds partial bytes.
    Inconsistent {
        error: Box<LogError>,
        rollback: Box<LogError>,
    },
}

/// Reads the batch header at `position` of a file holding `len` valid bytes.
pub(crate) fn read_header(
    file: &File,
    path: &Path,
    position: u64,
    len: u64,
) -> Result<BatchHeader, LogError> {
    let corrupt = |reason| LogError::Corrupt {
        path: path.to_path_buf(),
        position,
        reason,
    };
    let available = len.saturating_sub(position);
    let mut buf = [0u8; HEADER_BYTES];
    let want = (HEADER_BYTES as u64).min(available) as usize;
    file.read_exact_at(&mut buf[..want], position)
        .map_err(|e| LogError::io("read", path, e))?;
    let header = BatchHeader::decode_checked(&buf[..want]).map_err(|e| corrupt(e.into()))?;
    if header.size() as u64 > available {
        return Err(corrupt(Corruption::PastEnd {
            size: header.size() as u64,
            available,
        }));
    }
    Ok(header)
}

/// Where a scan of a range stopped.
pub(crate) struct ScanEnd {
    /// Position after the last good batch.
    pub valid_end: u64,
    /// Offset after the last good batch.
    pub next_offset: i64,
    /// Why the scan stopped before the end of the range, if it did.
    pub corruption: Option<Corruption>,
}

/// CRC-checks the batches in `[from, to)`: each must be whole, valid, and start at the offset
/// where the previous ended (the first at `expected_offset`). Calls `each(position, header)` for
/// every good batch; an error from it ends the scan before that batch. I/O errors are errors;
/// bad bytes end the scan with a `corruption`.
pub(crate) fn scan_batches(
    file: &File,
    path: &Path,
    from: u64,
    to: u64,
    expected_offset: i64,
    mut each: impl FnMut(u64, &BatchHeader) -> Result<(), Corruption>,
) -> Result<ScanEnd, LogError> {
    let mut buf: Vec<u8> = Vec::new();
    // `buf` holds file bytes [buf_pos, buf_pos + buf.len()); `at` is the scan position.
    let mut buf_pos = from;
    let mut at = from;
    let mut next_offset = expected_offset;
    let stop = |valid_end, next_offset, reason| {
        Ok(ScanEnd {
            valid_end,
            next_offset,
            corruption: Some(reason),
        })
    };
    while at < to {
        let available = to - at;
        // Make sure the header is in the buffer, then the whole batch.
        let mut need = HEADER_BYTES.min(available as usize);
        loop {
            let have = (buf_pos + buf.len() as u64 - at) as usize;
            if have < need {
                let keep_from = (at - buf_pos) as usize;
                buf.drain(..keep_from);
                buf_pos = at;
                let want = need.max(SCAN_CHUNK_BYTES).min(available as usize);
                let old = buf.len();
                buf.resize(want, 0);
                file.read_exact_at(&mut buf[old..], at + old as u64)
                    .map_err(|e| LogError::io("read", path, e))?;
            }
            let slice = &buf[(at - buf_pos) as usize..];
            if need < HEADER_BYTES {
                // Less than a header left in the range: a torn tail.
                return stop(
                    at,
                    next_offset,
                    Corruption::PastEnd {
                        size: HEADER_BYTES as u64,
                        available,
                    },
                );
            }
            match BatchHeader::decode_checked(slice) {
                Err(e) => return stop(at, next_offset, e.into()),
                Ok(header) => {
                    let size = header.size();
                    if size as u64 > available {
                        return stop(
                            at,
                            next_offset,
                            Corruption::PastEnd {
                                size: size as u64,
                                available,
                            },
                        );
                    }
                    if need < size {
                        need = size;
                        continue;
                    }
                    if let Err(e) = batch::validate(&slice[..size]) {
                        return stop(at, next_offset, e.into());
                    }
                    if header.base_offset != next_offset {
                        return stop(
                            at,
                            next_offset,
                            Corruption::OffsetGap {
                                expected: next_offset,
                                found: header.base_offset,
                            },
                        );
                    }
                    if let Err(reason) = each(at, &header) {
                        return stop(at, next_offset, reason);
                    }
                    next_offset = header.last_offset() + 1;
                    at += size as u64;
                    break;
                }
            }
        }
    }
    Ok(ScanEnd {
        valid_end: at,
        next_offset,
        corruption: None,
    })
}

/// Walks the batch headers in `[from, to)` without reading bodies: for ranges that were already
/// CRC-checked or made durable before a crash. Checks lengths and offset continuity.
pub(crate) fn scan_headers(
    file: &File,
    path: &Path,
    from: u64,
    to: u64,
    expected_offset: i64,
    mut each: impl FnMut(u64, &BatchHeader) -> Result<(), Corruption>,
) -> Result<ScanEnd, LogError> {
    let mut at = from;
    let mut next_offset = expected_offset;
    while at < to {
        let header = match read_header(file, path, at, to) {
            Ok(header) => header,
            Err(LogError::Corrupt { reason, .. }) => {
                return Ok(ScanEnd {
                    valid_end: at,
                    next_offset,
                    corruption: Some(reason),
                })
            }
            Err(e) => return Err(e),
        };
        if header.base_offset != next_offset {
            return Ok(ScanEnd {
                valid_end: at,
                next_offset,
                corruption: Some(Corruption::OffsetGap {
                    expected: next_offset,
                    found: header.base_offset,
                }),
            });
        }
        if let Err(reason) = each(at, &header) {
            return Ok(ScanEnd {
                valid_end: at,
                next_offset,
                corruption: Some(reason),
            });
        }
        next_offset = header.last_offset() + 1;
        at += header.size() as u64;
    }
    Ok(ScanEnd {
        valid_end: at,
        next_offset,
        corruption: None,
    })
}
