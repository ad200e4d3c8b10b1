//! Drop-behind: a log keeps only its newest bytes in the page cache.
//!
//! Written bytes stay cached until the kernel reclaims them, by default long after any tail
//! reader needs them. Reclaiming gigabytes of cold cache costs CPU on the machine the broker
//! runs on, and new writes then land in pages the kernel must find and, on a VM whose balloon
//! reports free pages to the host, that the host must fault in again: measured on the
//! development VM, a buffered `pwrite` stream slowed 7x (0.55 s to 4.9 s of CPU per 1.5 GB)
//! once 3 GB were cached, and stayed at 0.85 s with drop-behind.
//!
//! So, like a broker with its own bounded cache, each log keeps its newest
//! `log_cache_window_bytes` in the page cache. Once more than that plus a chunk is written, the
//! older bytes go to the evictor thread, which writes them back (`sync_file_range`: not a
//! durability promise, only so the pages are clean) and drops them (`posix_fadvise
//! DONTNEED`). A reader of older data then reads from disk, on the blocking pool (the
//! `cachestat` check on the Fetch path sees the pages gone). Window 0: keep everything, as
//! Kafka does.
//!
//! Queue bound: a log has at most one eviction queued or running (`busy`); ranges written in the
//! meantime wait in the log's own list for the next.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

/// The evictor thread's nice value.
#[cfg(target_os = "linux")]
const EVICTOR_NICE: libc::c_int = 5;

/// Default `log_cache_window_bytes`: the newest bytes of each log kept in the page cache.
pub const CACHE_WINDOW_BYTES_DEFAULT: u64 = 1 << 30;
/// Smallest window other than 0 (keep everything).
pub const CACHE_WINDOW_BYTES_MIN: u64 = 1 << 20;

/// Bytes past the window that wait before an eviction starts: a quarter of the window, at
/// most 16 MiB, so evictions come in a few large system calls rather than one per append.
fn chunk(window: u64) -> u64 {
    (window / 4).min(16 << 20)
}

const PAGE: u64 = 4096;
/// The largest page-cache folio: a file system with large folios (ext4, xfs) caches a file in
/// naturally aligned blocks of up to this size, and `DONTNEED` drops only the blocks wholly
/// inside its range. So each drop starts from this alignment below its range, taking the block
/// the previous cut left behind.
const FOLIO_MAX: u64 = 2 << 20;

/// A range of a segment file written since the log was opened and not yet evicted. The file
/// is named, not held: the evictor opens its own description of it, so a write-back error
/// it meets is still reported to the flusher's fdatasync on the log's own descriptor (Linux
/// reports such an error once per open file description), and a deleted segment is not kept
/// open.
struct Kept {
    file: PathBuf,
    from: u64,
    to: u64,
}

/// One log's cached ranges, oldest first.
#[derive(Default)]
pub(crate) struct CacheWindow {
    kept: VecDeque<Kept>,
    kept_bytes: u64,
    /// An eviction of this log is queued or running.
    busy: Arc<AtomicBool>,
}

/// Ranges handed to the evictor.
pub(crate) struct Eviction {
    ranges: Vec<Kept>,
    busy: Arc<AtomicBool>,
}

impl CacheWindow {
    /// Records that `from..to` of `file` was just written.
    pub(crate) fn wrote(&mut self, file: &Path, from: u64, to: u64) {
        if to <= from {
            return;
        }
        self.kept_bytes += to - from;
        if let Some(last) = self.kept.back_mut() {
            if last.file == file && last.to == from {
                last.to = to;
                return;
            }
        }
        self.kept.push_back(Kept {
            file: file.to_path_buf(),
            from,
            to,
        });
    }

    /// Forgets the ranges of a file that is being deleted.
    pub(crate) fn forget(&mut self, file: &Path) {
        self.kept.retain(|k| k.file != file);
        self.kept_bytes = self.kept.iter().map(|k| k.to - k.from).sum();
    }

    /// The ranges older than the newest `window` bytes, once they add up to a chunk and no
    /// eviction of this log is under way. Cuts inside a file fall on page boundaries.
    pub(crate) fn take_behind(&mut self, window: u64) -> Option<Eviction> {
        if window == 0
            || self.kept_bytes <= window.saturating_add(chunk(window))
            || self.busy.load(Ordering::Acquire)
        {
            return None;
        }
        let mut excess = self.kept_bytes - window;
        let mut ranges = Vec::new();
        while excess > 0 {
            let Some(front) = self.kept.front_mut() else {
                break;
            };
            let len = front.to - front.from;
            if len <= excess {
                excess -= len;
                self.kept_bytes -= len;
                ranges.extend(self.kept.pop_front());
                continue;
            }
            let cut = (front.from + excess) / PAGE * PAGE;
            if cut > front.from {
                ranges.push(Kept {
                    file: front.file.clone(),
                    from: front.from,
                    to: cut,
                });
                self.kept_bytes -= cut - front.from;
                front.from = cut;
            }
            break;
        }
        if ranges.is_empty() {
            return None;
        }
        self.busy.store(true, Ordering::Release);
        Some(Eviction {
            ranges,
            busy: self.busy.clone(),
        })
    }
}

/// The evictor thread and its queue (at most one eviction per log).
pub(crate) struct Evictor {
    inner: Arc<EvictorInner>,
    thread: Option<JoinHandle<()>>,
}

struct EvictorInner {
    queue: Mutex<(VecDeque<Eviction>, bool)>,
    wake: Condvar,
    window: AtomicU64,
    evicted_bytes: AtomicU64,
}

impl Evictor {
    pub(crate) fn start() -> std::io::Result<Evictor> {
        let inner = Arc::new(EvictorInner {
            queue: Mutex::new((VecDeque::new(), false)),
            wake: Condvar::new(),
            window: AtomicU64::new(CACHE_WINDOW_BYTES_DEFAULT),
            evicted_bytes: AtomicU64::new(0),
        });
        let worker = inner.clone();
        let thread = thread::Builder::new()
            .name("weir-evict".into())
            .spawn(move || worker.work())?;
        Ok(Evictor {
            inner,
            thread: Some(thread),
        })
    }

    pub(crate) fn window(&self) -> u64 {
        self.inner.window.load(Ordering::Relaxed)
    }

    pub(crate) fn set_window(&self, bytes: u64) {
        self.inner.window.store(bytes, Ordering::Relaxed);
    }

    /// Bytes written back and dropped from the page cache so far.
    pub(crate) fn evicted_bytes(&self) -> u64 {
        self.inner.evicted_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn push(&self, eviction: Eviction) {
        self.inner.lock().0.push_back(eviction);
        self.inner.wake.notify_one();
    }
}

impl EvictorInner {
    fn lock(&self) -> MutexGuard<'_, (VecDeque<Eviction>, bool)> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) {
        // Background work: below the reactors, like the broker's blocking pools (nice 5), so
        // writing back and freeing pages never takes a reactor's turn on a busy core.
        // SAFETY: setpriority only reads its arguments; on Linux, PRIO_PROCESS with 0 names
        // the calling thread. A failure leaves the priority as it was.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, EVICTOR_NICE);
        }
        loop {
            let eviction = {
                let mut queue = self.lock();
                loop {
                    if let Some(eviction) = queue.0.pop_front() {
                        break eviction;
                    }
                    if queue.1 {
                        return;
                    }
                    queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
            };
            for range in &eviction.ranges {
                if evict(&range.file, range.from, range.to - range.from) {
                    self.evicted_bytes
                        .fetch_add(range.to - range.from, Ordering::Relaxed);
                }
            }
            eviction.busy.store(false, Ordering::Release);
        }
    }
}

impl Drop for Evictor {
    fn drop(&mut self) {
        self.inner.lock().1 = true;
        self.inner.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes back `len` bytes of the file at `path` from `offset` and drops them from the page
/// cache, with what lies between the [`FOLIO_MAX`] boundary below `offset` and it (evicted
/// before, but perhaps held by a large folio across the last cut); whether the kernel took
/// both. Advisory: a failure (a segment deleted meanwhile, a write-back error, which the
/// flusher's next fdatasync reports too) leaves the pages to the kernel.
#[cfg(target_os = "linux")]
fn evict(path: &Path, offset: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = File::open(path) else {
        return false;
    };
    let aligned = offset - offset % FOLIO_MAX;
    let (Ok(offset), Ok(len), Ok(aligned)) = (
        i64::try_from(offset),
        i64::try_from(len),
        i64::try_from(aligned),
    ) else {
        return false;
    };
    let fd = file.as_raw_fd();
    // SAFETY: sync_file_range and posix_fadvise only read their integer arguments; the file
    // stays open for the call.
    unsafe {
        libc::sync_file_range(
            fd,
            offset,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        ) == 0
            && libc::posix_fadvise(
                fd,
                aligned,
                offset - aligned + len,
                libc::POSIX_FADV_DONTNEED,
            ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn evict(path: &Path, offset: u64, len: u64) -> bool {
    let _ = (path, offset, len);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> PathBuf {
        PathBuf::from(name)
    }

    fn spans(e: &Eviction) -> Vec<(u64, u64)> {
        e.ranges.iter().map(|k| (k.from, k.to)).collect()
    }

    #[test]
    fn nothing_leaves_until_a_chunk_past_the_window() {
        let f = file("a");
        let mut w = CacheWindow::default();
        let window = 4 << 20; // chunk: 1 MiB
        w.wrote(&f, 0, 5 << 20);
        assert!(w.take_behind(window).is_none());
        assert!(w.take_behind(0).is_none(), "window 0 keeps everything");
        w.wrote(&f, 5 << 20, (5 << 20) + 4097);
        let e = w.take_behind(window).expect("past window + chunk");
        // Excess is 1 MiB + 4097 bytes; the cut falls on the page boundary below it.
        assert_eq!(spans(&e), vec![(0, (1 << 20) + 4096)]);
        assert_eq!(w.kept_bytes, (4 << 20) + 1);
        assert!(w.take_behind(window).is_none(), "one eviction at a time");
        e.busy.store(false, Ordering::Release);
    }

    #[test]
    fn whole_sealed_segments_leave_and_deleted_files_are_forgotten() {
        let (a, b, c) = (file("a"), file("b"), file("c"));
        let mut w = CacheWindow::default();
        let window = 1 << 20; // chunk 256 KiB
        w.wrote(&a, 0, 1000);
        w.wrote(&a, 1000, 600_000);
        w.wrote(&b, 0, 600_000);
        w.wrote(&c, 0, 300_000);
        assert_eq!(w.kept.len(), 3, "contiguous writes to one file merge");
        let e = w.take_behind(window).expect("1.5 MB > 1.25 MiB");
        let excess: u64 = 1_500_000 - (1 << 20);
        assert_eq!(e.ranges.len(), 1);
        assert_eq!(spans(&e), vec![(0, excess / PAGE * PAGE)]);
        assert_eq!(e.ranges[0].file, a);
        e.busy.store(false, Ordering::Release);
        w.forget(&a);
        assert_eq!(w.kept_bytes, 900_000);
        assert!(w.kept.iter().all(|k| k.file != a));
    }
}
