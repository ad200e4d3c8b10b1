//! Opening a log directory: find the segments, trust what the recovery point covers, CRC-check
//! the rest, cut a torn or corrupt tail, and repair indexes.
//!
//! What is trusted: every byte below the recovery point in `log.state` was fdatasync'd and valid
//! when that point was written. Above it, every batch is CRC-checked and must continue the
//! offsets; the first that fails ends the log (the file is cut there and later segments are
//! removed). An index is believed only as far as [`Index::load`]'s checks and a check of its
//! last entry against the log; anything missing is rebuilt from batch headers.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::config::SEGMENT_BYTES_MAX;
use crate::error::{Corruption, LogError};
use crate::index::{Index, IndexEntry};
use crate::segment::{self, Segment, SegmentParts};
use crate::state::LogState;

/// What opening the log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Bytes below the recovery point: read only as far as index checks need.
    pub bytes_trusted: u64,
    /// Bytes CRC-checked because they lay above the recovery point.
    pub bytes_scanned: u64,
    /// Bytes cut from torn or corrupt tails.
    pub bytes_truncated: u64,
    /// Segments removed: after a corruption, or wholly below the log start offset.
    pub segments_removed: usize,
    /// Index files written anew or extended because they were missing, short or wrong.
    pub indexes_repaired: usize,
    /// The first corruption found, if any.
    pub corruption: Option<String>,
    pub elapsed: Duration,
}

pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    pub report: RecoveryReport,
    /// Whether anything above the recovery point was found or changed, so the caller must make
    /// it durable and write a new recovery point.
    pub needs_checkpoint: bool,
}

/// Largest segment base offset recovery accepts from a file name.
const BASE_OFFSET_MAX: i64 = i64::MAX / 2;

struct Files {
    logs: Vec<i64>,
    indexes: Vec<i64>,
}

fn list(dir: &Path) -> Result<Files, LogError> {
    let mut files = Files {
        logs: Vec::new(),
        indexes: Vec::new(),
    };
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let base = match stem.parse::<i64>() {
            // Offsets stay far from i64::MAX so that `base + delta` cannot overflow.
            Ok(base) if stem.len() == 20 && (0..=BASE_OFFSET_MAX).contains(&base) => base,
            _ => continue,
        };
        match ext {
            "log" => files.logs.push(base),
            "index" => files.indexes.push(base),
            _ => {}
        }
    }
    files.logs.sort_unstable();
    Ok(files)
}

pub(crate) fn remove_segment_files(dir: &Path, base: i64) -> Result<(), LogError> {
    for path in [segment::log_path(dir, base), segment::index_path(dir, base)] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io("remove", &path, e)),
        }
    }
    Ok(())
}

pub(crate) fn recover(
    dir: &Path,
    state: Option<LogState>,
    index_interval_bytes: u64,
    now_ms: i64,
) -> Result<Recovered, LogError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let files = list(dir)?;
    for base in &files.indexes {
        if files.logs.binary_search(base).is_err() {
            let path = segment::index_path(dir, *base);
            std::fs::remove_file(&path).map_err(|e| LogError::io("remove", &path, e))?;
        }
    }
    let (rp_base, rp_pos) = state.map_or((i64::MIN, 0), |s| (s.recovery_base, s.recovery_position));
    let mut needs_checkpoint = state.is_none() && !files.logs.is_empty();
    let mut segments: Vec<Segment> = Vec::new();
    let mut cut_rest = false;
    let log_start = state.map_or(i64::MIN, |s| s.log_start_offset);
    let count = files.logs.len();
    for (i, &base) in files.logs.iter().enumerate() {
        let expected = segments.last().map(|s| s.next_offset);
        if !cut_rest && expected.is_some_and(|e| e != base) && base <= log_start {
            // Retention unlinks segments only after a log start offset above them is durable,
            // but the unlinks themselves may reach the disk in any order: the segments before
            // the gap are the ones to go.
            for gone in segments.drain(..) {
                remove_segment_files(dir, gone.base_offset)?;
                report.segments_removed += 1;
            }
        }
        let expected = segments.last().map(|s| s.next_offset);
        if !cut_rest && expected.is_some_and(|e| e != base) {
            let reason = Corruption::OffsetGap {
                expected: expected.unwrap_or(base),
                found: base,
            };
            report.corruption = Some(format!(
                "{}: {reason}",
                segment::log_path(dir, base).display()
            ));
            cut_rest = true;
        }
        if cut_rest {
            remove_segment_files(dir, base)?;
            report.segments_removed += 1;
            needs_checkpoint = true;
            continue;
        }
        let trust = if base < rp_base {
            Trust::Whole
        } else if base == rp_base {
            Trust::Prefix(rp_pos)
        } else {
            Trust::Prefix(0)
        };
        let Some(opened) =
            open_segment(dir, base, trust, index_interval_bytes, now_ms, &mut report)?
        else {
            continue; // removed since the listing (a retired segment of a previous handle)
        };
        needs_checkpoint |= opened.scanned_or_cut;
        if opened.corrupt {
            cut_rest = true;
        }
        let last = i + 1 == count;
        if opened.segment.is_empty() && !last && !cut_rest {
            // An empty segment in the middle holds nothing; its successor starts at its base.
            drop(opened.segment);
            remove_segment_files(dir, base)?;
            report.segments_removed += 1;
            continue;
        }
        segments.push(opened.segment);
    }
    // A recovery point beyond what is on disk (its segment shorter or gone) must not survive:
    // bytes appended there later would be trusted without ever being checked.
    if state.is_some()
        && !segments
            .iter()
            .any(|s| s.base_offset == rp_base && s.len >= rp_pos)
    {
        needs_checkpoint = true;
    }
    report.segments = segments.len();
    report.elapsed = started.elapsed();
    Ok(Recovered {
        segments,
        report,
        needs_checkpoint,
    })
}

enum Trust {
    /// Sealed and synced before the recovery point was written.
    Whole,
    /// Only the first bytes are known durable.
    Prefix(u64),
}

struct Opened {
    segment: Segment,
    scanned_or_cut: bool,
    corrupt: bool,
}

fn open_segment(
    dir: &Path,
    base: i64,
    trust: Trust,
    interval: u64,
    now_ms: i64,
    report: &mut RecoveryReport,
) -> Result<Option<Opened>, LogError> {
    let path = segment::log_path(dir, base);
    let file = match File::options().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("open segment", &path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| LogError::io("stat", &path, e))?;
    let len = meta.len();
    let last_modified_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(now_ms, |d| d.as_millis() as i64);
    // Bytes past the largest legal segment are not a segment's: cut as corrupt below.
    let scan_end = len.min(SEGMENT_BYTES_MAX);
    let trusted_end = match trust {
        Trust::Whole => scan_end,
        Trust::Prefix(p) => p.min(scan_end),
    };

    let ipath = segment::index_path(dir, base);
    let (mut index, mut repaired) = match Index::load(&ipath, trusted_end) {
        Ok((index, whole)) => (index, !whole),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            Index::create(&ipath).map_err(|e| LogError::io("create index", &ipath, e))?,
            true,
        ),
        Err(e) => return Err(LogError::io("read index", &ipath, e)),
    };

    // The last entry must point at a batch with the offset it claims; if not, rebuild.
    let mut start = (0u64, base, -1i64);
    if let Some(last) = index.last().copied() {
        match segment::read_header(&file, &path, u64::from(last.position), trusted_end) {
            Ok(h) if h.base_offset == base + i64::from(last.rel_offset) => {
                start = (u64::from(last.position), h.base_offset, last.max_timestamp);
            }
            Ok(_) | Err(LogError::Corrupt { .. }) => {
                index.truncate(0);
                repaired = true;
            }
            Err(e) => return Err(e),
        }
    }
    let (from, first_offset, mut max_ts) = start;
    let entries_before = index.entries().len();

    let mut last_batch = None;
    let mut add = |index: &mut Index, position: u64, h: &crate::batch::BatchHeader| {
        let rel_offset = u32::try_from(h.last_offset() - base)
            .map_err(|_| Corruption::OutOfRange { what: "offset" })
            .and_then(|_| {
                u32::try_from(h.base_offset - base)
                    .map_err(|_| Corruption::OutOfRange { what: "offset" })
            })?;
        let position32 =
            u32::try_from(position).map_err(|_| Corruption::OutOfRange { what: "position" })?;
        max_ts = max_ts.max(h.max_timestamp);
        let due = match index.last() {
            None => true,
            // The batch an entry already points at (where a scan resumes) is not re-added.
            Some(e) => {
                position > u64::from(e.position) && position - u64::from(e.position) >= interval
            }
        };
        if due {
            index.push(IndexEntry {
                rel_offset,
                position: position32,
                max_timestamp: max_ts,
            });
        }
        last_batch = Some((position, h.base_offset));
        Ok(())
    };

    // Trusted bytes: headers only. A bad header here means the disk lost what it had
    // acknowledged; it is treated like a torn tail from that point.
    let headers = segment::scan_headers(&file, &path, from, trusted_end, first_offset, |p, h| {
        add(&mut index, p, h)
    })?;
    report.bytes_trusted += headers.valid_end;
    // Above the recovery point: every batch CRC-checked.
    let scan = segment::scan_batches(
        &file,
        &path,
        headers.valid_end,
        scan_end,
        headers.next_offset,
        |p, h| add(&mut index, p, h),
    )?;
    report.bytes_scanned += scan.valid_end - headers.valid_end;
    let mut corruption = scan.corruption;
    if corruption.is_none() && scan_end < len {
        corruption = Some(Corruption::OutOfRange {
            what: "segment size",
        });
    }
    let corrupt = corruption.is_some();
    if let Some(reason) = &corruption {
        file.set_len(scan.valid_end)
            .map_err(|e| LogError::io("truncate torn tail", &path, e))?;
        report.bytes_truncated += len - scan.valid_end;
        if report.corruption.is_none() {
            report.corruption = Some(format!(
                "{} at byte {}: {reason}",
                path.display(),
                scan.valid_end
            ));
        }
    }
    if repaired || index.entries().len() != entries_before {
        // Synced at once: a rewritten index must not come back stale after another crash.
        index
            .write_pending()
            .and_then(|()| index.file().sync_data())
            .map_err(|e| LogError::io("write index", &ipath, e))?;
        report.indexes_repaired += 1;
    }
    let roll_base_ms = index
        .entries()
        .first()
        .map(|e| e.max_timestamp)
        .filter(|ts| *ts >= 0)
        .unwrap_or(now_ms);
    let valid_end = scan.valid_end;
    let segment = Segment::from_parts(SegmentParts {
        base_offset: base,
        next_offset: scan.next_offset,
        len: valid_end,
        path,
        file: Arc::new(file),
        index,
        max_timestamp: max_ts,
        roll_base_ms,
        last_modified_ms,
        last_batch,
        verified_from: headers.valid_end,
    });
    Ok(Some(Opened {
        segment,
        scanned_or_cut: valid_end > headers.valid_end || len != valid_end,
        corrupt,
    }))
}

/// Paths of a segment's files, for deleting it (log first: a leftover index is removed by
/// recovery).
pub(crate) fn segment_files(dir: &Path, base: i64) -> Vec<PathBuf> {
    vec![segment::log_path(dir, base), segment::index_path(dir, base)]
}
