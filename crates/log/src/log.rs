//! The partition log: an ordered list of segments, the last one active.
//!
//! A `Log` has one owner (the shard that owns the partition) and takes `&mut self` to append:
//! no locks guard its segments. The only shared part is [`SyncShared`], through which the
//! flusher threads make appends durable.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchHeader};
use crate::clock::{Clock, SystemClock};
use crate::config::LogConfig;
use crate::durability::{Durable, Flusher, SegmentFiles, SyncShared, Written};
use crate::error::LogError;
use crate::evict::CacheWindow;
use crate::recovery::{self, RecoveryReport};
use crate::segment::{AppendFailure, Segment};
use crate::state::{LogState, StateFile};

/// How a log is opened.
#[derive(Clone)]
pub struct LogOptions {
    pub config: LogConfig,
    pub clock: Arc<dyn Clock>,
    pub flusher: Flusher,
}

impl LogOptions {
    pub fn new(config: LogConfig, flusher: Flusher) -> LogOptions {
        LogOptions {
            config,
            clock: Arc::new(SystemClock),
            flusher,
        }
    }
}

/// The result of an append.
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The clock when the batches were written (Kafka's log append time).
    pub append_time_ms: i64,
    /// Resolves once the batches are as durable as the log's flush policy asks.
    pub durable: Durable,
}

/// A byte range of a segment file: whole batches, ready for `sendfile`. The file stays open
/// (and readable) as long as the region lives, even if retention deletes the segment.
#[derive(Debug, Clone)]
pub struct FileRegion {
    pub file: Arc<File>,
    pub position: u64,
    pub len: u64,
}

/// Batches found by a read: `first_offset` is the base offset of the first batch (at or below
/// the offset asked for), `next_offset` the offset to read next.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    pub region: FileRegion,
    pub first_offset: i64,
    pub next_offset: i64,
}

/// Like [`ReadSlice`], copied into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadCopy {
    pub bytes: Vec<u8>,
    pub first_offset: i64,
    pub next_offset: i64,
}

/// The batch a lookup by timestamp found: the first whose max timestamp is at or after the
/// one asked for. The exact record is found by decoding this batch (the broker does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampHit {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    flusher: Flusher,
    shared: Arc<SyncShared>,
    /// Sorted by base offset, never empty; the last is the active segment.
    segments: Vec<Segment>,
    log_start_offset: i64,
    /// Records appended since the last append that asked for a flush (`flush.messages`).
    unflushed_records: i64,
    report: RecoveryReport,
    /// Set when a failed write could not be rolled back: appends are refused until reopened.
    broken: Option<String>,
    /// Scratch for the headers of one append, reused to spare an allocation per append.
    scratch: Vec<(usize, BatchHeader)>,
    /// What this process wrote that is still in the page cache (drop-behind, [`crate::evict`]).
    cache: CacheWindow,
}

impl Log {
    /// Opens the log in `dir`, creating it if needed, and recovers it (see [`recovery`]).
    pub fn open(dir: &Path, options: LogOptions) -> Result<Log, LogError> {
        let LogOptions {
            config,
            clock,
            flusher,
        } = options;
        config.validate()?;
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(|e| LogError::io("create directory", dir, e))?;
            // The directory's own name must be durable before anything in it is.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| LogError::io("fsync directory", parent, e))?;
            }
        }
        let (mut state_file, state) = StateFile::open(dir)
            .map_err(|e| LogError::io("open state", dir.join("log.state"), e))?;
        let now = clock.now_ms();
        let recovered = recovery::recover(dir, state, config.index_interval_bytes, now)?;
        let mut report = recovered.report;
        let mut segments = recovered.segments;
        if segments.is_empty() {
            let base = state.map_or(0, |s| s.log_start_offset.max(0));
            segments.push(Segment::create(dir, base, now)?);
        }
        let end = segments.last().map_or(0, |s| s.next_offset);
        let mut log_start_offset = state
            .map_or(i64::MIN, |s| s.log_start_offset)
            .max(segments[0].base_offset)
            .min(end);
        // Segments wholly below the log start offset (a crash came before their deletion).
        while segments.len() > 1 && segments[0].next_offset <= log_start_offset {
            let gone = segments.remove(0);
            recovery::remove_segment_files(dir, gone.base_offset)?;
            report.segments_removed += 1;
        }
        log_start_offset = log_start_offset.max(segments[0].base_offset);

        let active = segments.last().expect("at least one segment");
        let written = Written {
            next_offset: active.next_offset,
            segment_base: active.base_offset,
            segment_len: active.len,
        };
        if recovered.needs_checkpoint {
            // What recovery kept above the old recovery point may sit in the page cache only:
            // make it durable before a new recovery point vouches for it.
            for segment in &segments {
                if segment.verified_from < segment.len
                    || segment.base_offset >= written.segment_base
                {
                    segment
                        .file
                        .sync_data()
                        .map_err(|e| LogError::io("fdatasync", &segment.path, e))?;
                }
            }
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| LogError::io("fsync directory", dir, e))?;
            state_file
                .write(&LogState {
                    log_start_offset,
                    recovery_base: written.segment_base,
                    recovery_position: written.segment_len,
                })
                .map_err(|e| LogError::io("write state", dir.join("log.state"), e))?;
        }
        let recovery_point = state.map_or((written.segment_base, 0), |s| {
            (s.recovery_base, s.recovery_position)
        });
        let recovery_point = if recovered.needs_checkpoint {
            (written.segment_base, written.segment_len)
        } else {
            recovery_point
        };
        let shared = Arc::new(SyncShared::new(
            dir.to_path_buf(),
            state_file,
            written,
            SegmentFiles {
                log: active.file.clone(),
                index: active.index.file().clone(),
            },
            log_start_offset,
            recovery_point,
            config.flush_ms,
        ));
        flusher.arm_timer(&shared);
        Ok(Log {
            dir: dir.to_path_buf(),
            config,
            clock,
            flusher,
            shared,
            segments,
            log_start_offset,
            unflushed_records: 0,
            report,
            broken: None,
            scratch: Vec::new(),
            cache: CacheWindow::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the settings (AlterConfigs). Takes effect from the next append or pass.
    pub fn set_config(&mut self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        self.shared.set_flush_ms(config.flush_ms);
        self.config = config;
        self.flusher.arm_timer(&self.shared);
        Ok(())
    }

    /// What opening the log found.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// First offset a read may ask for.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Offset the next appended record gets (Kafka's log end offset).
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// Sync rounds the flushers completed for this log since it was opened. With group commit
    /// this grows slower than the number of appends that waited for durability.
    pub fn syncs_completed(&self) -> u64 {
        self.shared.syncs()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.segments.iter().map(|s| s.base_offset).collect()
    }

    /// Bytes of batches held.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    /// Appends one or more RecordBatch v2 back to back. Validates every batch (header and
    /// CRC) before writing anything, stamps base offsets, writes them with one system call.
    /// On any error nothing is appended and the log end offset is unchanged.
    pub fn append(&mut self, bytes: &mut [u8]) -> Result<Appended, LogError> {
        if let Some(cause) = &self.broken {
            return Err(LogError::Failed {
                cause: cause.clone(),
            });
        }
        if let Some(error) = self.shared.failure() {
            return Err(error);
        }
        let mut headers = std::mem::take(&mut self.scratch);
        headers.clear();
        let result = self.append_with(bytes, &mut headers);
        self.scratch = headers;
        result
    }

    fn append_with(
        &mut self,
        bytes: &mut [u8],
        headers: &mut Vec<(usize, BatchHeader)>,
    ) -> Result<Appended, LogError> {
        let mut position = 0;
        let mut records: i64 = 0;
        let mut span: i64 = 0;
        while position < bytes.len() || position == 0 {
            let header = batch::validate(&bytes[position..])
                .map_err(|source| LogError::InvalidBatch { position, source })?;
            if header.size() as u64 > self.config.max_message_bytes {
                return Err(LogError::BatchTooLarge {
                    size: header.size() as u64,
                    setting: "max.message.bytes",
                    limit: self.config.max_message_bytes,
                });
            }
            headers.push((position, header));
            records += i64::from(header.record_count);
            span += i64::from(header.last_offset_delta) + 1;
            position += header.size();
        }
        let total = bytes.len() as u64;
        if total > self.config.segment_bytes {
            return Err(LogError::BatchTooLarge {
                size: total,
                setting: "segment.bytes",
                limit: self.config.segment_bytes,
            });
        }
        let now = self.clock.now_ms();
        if self.should_roll(total, span, now) {
            self.roll_at(now)?;
        }
        let base_offset = self.active().next_offset;
        let mut offset = base_offset;
        for (at, header) in headers.iter_mut() {
            batch::stamp_base_offset(&mut bytes[*at..], offset);
            header.base_offset = offset;
            offset = header.last_offset() + 1;
        }
        let interval = self.config.index_interval_bytes;
        let active = self.segments.last_mut().expect("active segment");
        let from = active.len;
        match active.append(bytes, headers, interval, now) {
            Ok(()) => {}
            Err(AppendFailure::RolledBack(error)) => return Err(error),
            Err(AppendFailure::Inconsistent { error, rollback }) => {
                self.broken = Some(format!("{error}; then {rollback}"));
                return Err(*error);
            }
        }
        self.shared.set_written(Written {
            next_offset: active.next_offset,
            segment_base: active.base_offset,
            segment_len: active.len,
        });
        self.cache.wrote(&active.path, from, active.len);
        if let Some(eviction) = self.cache.take_behind(self.flusher.cache_window()) {
            self.flusher.evict(eviction);
        }
        let last_offset = offset - 1;
        self.unflushed_records += records;
        let durable = if self.unflushed_records >= self.config.flush_messages {
            self.unflushed_records = 0;
            self.flusher.request(&self.shared, offset, false, false)
        } else {
            Durable::ready()
        };
        Ok(Appended {
            base_offset,
            last_offset,
            append_time_ms: now,
            durable,
        })
    }

    /// Whether appending `bytes` now would start a new segment (creating its files). An
    /// estimate for callers choosing where to append: it leaves out the offset-span rule.
    pub fn append_would_roll(&self, bytes: usize) -> bool {
        self.should_roll(bytes as u64, 0, self.clock.now_ms())
    }

    fn should_roll(&self, bytes: u64, span: i64, now: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        active.len + bytes > self.config.segment_bytes
            || now - active.roll_base_ms >= self.config.segment_ms
            || active.next_offset + span - active.base_offset > i64::from(u32::MAX)
    }

    /// Starts a new segment now, unless the active one is empty.
    pub fn roll(&mut self) -> Result<(), LogError> {
        if self.active().is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        self.roll_at(now)
    }

    fn roll_at(&mut self, now: i64) -> Result<(), LogError> {
        let base = self.active().next_offset;
        let segment = Segment::create(&self.dir, base, now)?;
        let old = self.segments.last_mut().expect("active segment");
        // An index file that could not be written is rebuilt from the log on the next open.
        let _ = old.seal_index();
        self.shared.rolled(SegmentFiles {
            log: segment.file.clone(),
            index: segment.index.file().clone(),
        });
        self.shared.set_written(Written {
            next_offset: base,
            segment_base: base,
            segment_len: 0,
        });
        self.segments.push(segment);
        // Sync the sealed segment in the background; nobody waits for it.
        drop(self.flusher.request(&self.shared, base, false, false));
        Ok(())
    }

    fn check_range(&self, offset: i64) -> Result<(), LogError> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end,
            });
        }
        Ok(())
    }

    fn segment_for(&self, offset: i64) -> &Segment {
        let n = self.segments.partition_point(|s| s.base_offset <= offset);
        &self.segments[n.saturating_sub(1)]
    }

    /// Calls `each` with the header of every batch from the one holding `offset` to the log
    /// end, reading headers only (61 bytes a batch, no CRC check): what rebuilding a
    /// partition's producer state needs.
    pub fn scan_headers_from(
        &self,
        offset: i64,
        mut each: impl FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        let offset = offset.max(self.log_start_offset);
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        for segment in &self.segments[first..] {
            if segment.is_empty() || offset >= segment.next_offset {
                continue;
            }
            let mut position = if offset > segment.base_offset {
                segment.locate(offset)?.0
            } else {
                0
            };
            while position < segment.len {
                let header = segment.header_at(position)?;
                each(&header);
                position += header.size() as u64;
            }
        }
        Ok(())
    }

    /// The whole batches from the one holding `offset`, up to `max_bytes` (but always the first
    /// batch, however large: KIP-74), as a region of one segment file. Empty at the log end.
    /// Bytes this process has not CRC-checked are checked first.
    pub fn read(&self, offset: i64, max_bytes: u64) -> Result<ReadSlice, LogError> {
        self.check_range(offset)?;
        let segment = self.segment_for(offset);
        if offset >= segment.next_offset {
            return Ok(self.empty_slice(segment));
        }
        let (start, first) = segment.locate(offset)?;
        let (end, next_offset) = segment.read_end(start, &first, max_bytes)?;
        segment.verify(start, end, first.base_offset)?;
        Ok(ReadSlice {
            region: FileRegion {
                file: segment.file.clone(),
                position: start,
                len: end - start,
            },
            first_offset: first.base_offset,
            next_offset,
        })
    }

    fn empty_slice(&self, segment: &Segment) -> ReadSlice {
        ReadSlice {
            region: FileRegion {
                file: segment.file.clone(),
                position: segment.len,
                len: 0,
            },
            first_offset: segment.next_offset,
            next_offset: segment.next_offset,
        }
    }

    /// Like [`Log::read`], copied into memory; every batch copied is CRC-checked.
    pub fn read_copy(&self, offset: i64, max_bytes: u64) -> Result<ReadCopy, LogError> {
        self.check_range(offset)?;
        let segment = self.segment_for(offset);
        if offset >= segment.next_offset {
            let end = segment.next_offset;
            return Ok(ReadCopy {
                bytes: Vec::new(),
                first_offset: end,
                next_offset: end,
            });
        }
        let (start, first) = segment.locate(offset)?;
        let (end, next_offset) = segment.read_end(start, &first, max_bytes)?;
        let mut bytes = vec![0u8; (end - start) as usize];
        segment
            .file
            .read_exact_at(&mut bytes, start)
            .map_err(|e| LogError::io("read", &segment.path, e))?;
        let mut expected = first.base_offset;
        let mut at = 0;
        while at < bytes.len() {
            let corrupt = |reason| LogError::Corrupt {
                path: segment.path.clone(),
                position: start + at as u64,
                reason,
            };
            let header = batch::validate(&bytes[at..]).map_err(|e| corrupt(e.into()))?;
            if header.base_offset != expected {
                return Err(corrupt(crate::error::Corruption::OffsetGap {
                    expected,
                    found: header.base_offset,
                }));
            }
            expected = header.last_offset() + 1;
            at += header.size();
        }
        Ok(ReadCopy {
            bytes,
            first_offset: first.base_offset,
            next_offset,
        })
    }

    /// Whether a `read_copy(offset, max_bytes)` would find its bytes in the page cache rather
    /// than wait for the disk: what the range the index points at says (it may start up to an
    /// index interval before the batch, and covers a whole batch of the largest size allowed,
    /// since the first batch is read whatever `max_bytes` says). Where the system cannot tell,
    /// only a read inside the segment being written counts as cached: the data most recently
    /// written.
    pub fn likely_cached(&self, offset: i64, max_bytes: u64) -> bool {
        if self.check_range(offset).is_err() {
            return true;
        }
        let segment = self.segment_for(offset);
        if offset >= segment.next_offset {
            return true;
        }
        let rel = u32::try_from(offset - segment.base_offset).unwrap_or(u32::MAX);
        let start = segment
            .index
            .floor_offset(rel)
            .map_or(0, |entry| u64::from(entry.position));
        let len = max_bytes
            .max(self.config.max_message_bytes)
            .saturating_add(self.config.index_interval_bytes)
            .min(segment.len.saturating_sub(start));
        crate::cache::resident(&segment.file, start, len)
            .unwrap_or_else(|| std::ptr::eq(segment, self.active()))
    }

    /// The first batch at or after the log start whose max timestamp is at least `timestamp`.
    pub fn find_timestamp(&self, timestamp: i64) -> Result<Option<TimestampHit>, LogError> {
        for segment in &self.segments {
            if let Some((_, header)) = segment.find_timestamp(timestamp, self.log_start_offset)? {
                return Ok(Some(TimestampHit {
                    base_offset: header.base_offset,
                    last_offset: header.last_offset(),
                    max_timestamp: header.max_timestamp,
                }));
            }
        }
        Ok(None)
    }

    /// The largest timestamp at or after the log start, and the first batch holding it.
    pub fn max_timestamp(&self) -> Result<Option<TimestampHit>, LogError> {
        let start = self.log_start_offset;
        let mut max = -1;
        for segment in self.segments.iter().filter(|s| s.next_offset > start) {
            if segment.base_offset >= start {
                max = max.max(segment.max_timestamp);
                continue;
            }
            // The segment holding the log start: its maximum may come from batches below it.
            let (mut position, _) = segment.locate(start)?;
            while position < segment.len {
                let header = segment.header_at(position)?;
                max = max.max(header.max_timestamp);
                position += header.size() as u64;
            }
        }
        if max < 0 {
            return Ok(None);
        }
        self.find_timestamp(max)
    }

    /// Deletes sealed segments that retention allows to go: those wholly below the log start
    /// offset, those whose newest timestamp is older than `retention.ms`, and the oldest while
    /// the log is bigger than `retention.bytes` without them. The active segment always stays.
    pub fn enforce_retention(&mut self) -> Retained {
        let now = self.clock.now_ms();
        let mut size = self.size_bytes();
        let mut outcome = Retained::default();
        let mut retired = Vec::new();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let newest_ms = if oldest.max_timestamp >= 0 {
                oldest.max_timestamp
            } else {
                oldest.last_modified_ms
            };
            let below_start = oldest.next_offset <= self.log_start_offset;
            let expired = self.config.retention_ms >= 0
                && newest_ms < now.saturating_sub(self.config.retention_ms);
            let oversize = self.config.retention_bytes >= 0
                && size - oldest.len >= self.config.retention_bytes as u64;
            if !(below_start || expired || oversize) {
                break;
            }
            size -= oldest.len;
            outcome.bytes_deleted += oldest.len;
            outcome.segments_deleted += 1;
            retired.extend(self.drop_oldest());
        }
        if outcome.segments_deleted > 0 {
            let start = self.log_start_offset.max(self.segments[0].base_offset);
            drop(self.set_start(start, retired));
        }
        outcome
    }

    /// Takes the oldest segment out of the log; returns its files.
    fn drop_oldest(&mut self) -> Vec<PathBuf> {
        let gone = self.segments.remove(0);
        self.cache.forget(&gone.path);
        recovery::segment_files(&self.dir, gone.base_offset)
    }

    /// Persists a new log start offset; the files of segments below it go once it is durable.
    fn set_start(&mut self, offset: i64, retired: Vec<PathBuf>) -> Durable {
        self.log_start_offset = offset;
        self.shared.retire(offset, retired);
        self.flusher.request(&self.shared, i64::MIN, true, false)
    }

    /// Moves the log start offset up to `offset` (DeleteRecords) and deletes the sealed
    /// segments wholly below it. The returned future resolves once the new start is durable.
    pub fn advance_start_offset(&mut self, offset: i64) -> Result<Durable, LogError> {
        let end = self.log_end_offset();
        if offset > end || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(Durable::ready());
        }
        let mut retired = Vec::new();
        while self.segments.len() > 1 && self.segments[0].next_offset <= offset {
            retired.extend(self.drop_oldest());
        }
        Ok(self.set_start(offset, retired))
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Durable {
        self.unflushed_records = 0;
        let end = self.log_end_offset();
        self.flusher.request(&self.shared, end, false, false)
    }

    /// Clean shutdown: writes the index tail, makes everything durable and writes the
    /// checkpoint (a recovery point at the log end), so the next open scans nothing. Blocks.
    pub fn close(mut self) -> Result<(), LogError> {
        if let Some(cause) = self.broken.take() {
            return Err(LogError::Failed { cause });
        }
        self.segments
            .last_mut()
            .expect("active segment")
            .seal_index()?;
        let end = self.log_end_offset();
        self.flusher.request(&self.shared, end, true, true).wait()
    }
}
