//! Helpers shared by the integration tests: temp directories, a seeded PRNG, batch generation.
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};

use weir_log::batch::build::BatchBuilder;
use weir_log::{Flusher, Log, LogConfig, LogError, LogOptions};

/// Opens a log with its own one-thread flusher. Drop the log, then the flusher, to be sure no
/// background work of this handle is left when the directory is reopened.
pub fn try_open(dir: &Path, config: LogConfig) -> Result<(Log, Flusher), LogError> {
    let flusher = Flusher::start(1).expect("flusher");
    let log = Log::open(dir, LogOptions::new(config, flusher.clone()))?;
    Ok((log, flusher))
}

pub fn open(dir: &Path, config: LogConfig) -> (Log, Flusher) {
    try_open(dir, config).expect("open")
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "weir-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// splitmix64: small, seedable, good enough to drive tests.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// The seed for a randomized test: `WEIR_SEED` if set, else the clock. Printed either way.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("WEIR_SEED") {
        Ok(s) => s.parse().expect("WEIR_SEED must be an integer"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    eprintln!("{test}: seed {seed} (rerun with WEIR_SEED={seed})");
    seed
}

/// Whether the suite runs in quick mode (fewer cycles).
pub fn quick() -> bool {
    std::env::var("WEIR_TEST_QUICK").is_ok_and(|v| v != "0" && !v.is_empty())
}

/// A valid batch of `records` records with values of up to `value_max` bytes, timestamps near
/// `ts`. `producer_id`/`sequence` let a test recognise the batch later.
pub fn batch(
    rng: &mut Rng,
    records: usize,
    value_max: usize,
    ts: i64,
    producer_id: i64,
    sequence: i32,
) -> Vec<u8> {
    let mut builder = BatchBuilder::new(ts).producer(producer_id, 0, sequence);
    for i in 0..records {
        let len = rng.range(0, value_max as u64) as usize;
        let value = rng.bytes(len);
        let key = format!("key-{}", rng.range(0, 50));
        builder.push(Some(key.as_bytes()), Some(&value), ts + i as i64);
    }
    builder.build()
}

/// Whether this process may mount file systems (root with CAP_SYS_ADMIN). Under `CI=true` a
/// test that needs it must not silently skip.
pub fn can_mount() -> bool {
    let probe = TempDir::new("mount-probe");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(probe.path())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = std::process::Command::new("umount")
            .arg(probe.path())
            .status();
    }
    ok
}

pub fn skip_or_fail(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what}: cannot mount file systems here, and CI must run this test");
    }
    eprintln!("SKIPPED {what}: needs root to mount file systems");
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    pub fn mount(name: &str, size: &str) -> Tmpfs {
        let dir = TempDir::new(name);
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs failed");
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn remount(&self, option: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{option}")])
            .arg(self.dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {option} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// The wall clock in Kafka milliseconds, for batch timestamps that do not trigger `segment.ms`.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
