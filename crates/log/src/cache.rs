//! Whether a range of a file is in the page cache, so a reader can avoid waiting for the disk
//! on a thread that must not block. Linux's `cachestat` (6.5+) answers without reading;
//! elsewhere, or on older kernels, the answer is "unknown".

use std::fs::File;

/// `Some(true)` if every page of `len` bytes from `offset` is cached, `Some(false)` if one is
/// not, `None` if the system cannot tell.
pub(crate) fn resident(file: &File, offset: u64, len: u64) -> Option<bool> {
    if len == 0 {
        return Some(true);
    }
    #[cfg(target_os = "linux")]
    {
        linux::resident(file, offset, len)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset);
        None
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// `cachestat`'s number on the architectures that share the unified syscall table (alpha
    /// and MIPS number it otherwise; there the answer is "unknown").
    const SYS_CACHESTAT: Option<libc::c_long> = if cfg!(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )) {
        Some(451)
    } else {
        None
    };
    /// Set once the kernel has refused `cachestat` (absent, or forbidden by a seccomp
    /// filter), so it is not asked again.
    static MISSING: AtomicBool = AtomicBool::new(false);

    #[repr(C)]
    struct CachestatRange {
        off: u64,
        len: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct Cachestat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }

    pub(super) fn resident(file: &File, offset: u64, len: u64) -> Option<bool> {
        let syscall = SYS_CACHESTAT?;
        if MISSING.load(Ordering::Relaxed) {
            return None;
        }
        let range = CachestatRange { off: offset, len };
        let mut stat = Cachestat::default();
        // SAFETY: cachestat reads `range` and writes one `struct cachestat` into `stat`, both
        // laid out as the kernel's (repr(C), u64 fields) and alive for the call; the flags
        // must be 0.
        let rc = unsafe {
            libc::syscall(
                syscall,
                file.as_raw_fd(),
                &range as *const CachestatRange,
                &mut stat as *mut Cachestat,
                0 as libc::c_uint,
            )
        };
        if rc != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error();
            if matches!(errno, Some(libc::ENOSYS | libc::EPERM)) {
                MISSING.store(true, Ordering::Relaxed);
            }
            return None;
        }
        // SAFETY: sysconf only reads its argument.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as u64,
            _ => 4096,
        };
        let pages = (offset + len).div_ceil(page) - offset / page;
        Some(stat.nr_cache >= pages)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn written_pages_are_resident_and_dropped_ones_are_not() {
        let path = std::env::temp_dir().join(format!("weir-cache-{}", std::process::id()));
        let mut file = File::create(&path).expect("create");
        file.write_all(&vec![7u8; 1 << 20]).expect("write");
        let Some(cached) = resident(&file, 0, 1 << 20) else {
            // A kernel without cachestat: nothing more to check here.
            std::fs::remove_file(&path).ok();
            return;
        };
        assert!(cached, "just written");
        file.sync_all().expect("sync");
        // SAFETY: posix_fadvise only reads its arguments.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        // tmpfs keeps its pages whatever fadvise says.
        // SAFETY: statfs is plain data, valid zeroed.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatfs writes one statfs into `fs`.
        let statted = unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } == 0;
        // f_type and the magic numbers have different integer types on different platforms.
        #[allow(clippy::unnecessary_cast)]
        let on_tmpfs = statted && fs.f_type as i64 == libc::TMPFS_MAGIC as i64;
        if !on_tmpfs {
            assert_eq!(resident(&file, 0, 1 << 20), Some(false), "dropped");
        }
        assert_eq!(resident(&file, 0, 0), Some(true), "an empty range");
        std::fs::remove_file(&path).ok();
    }
}
