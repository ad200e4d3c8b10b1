//! Disk faults on real file systems the tests mount: ENOSPC on a small tmpfs, a read-only
//! remount, and EIO from a loop device whose backing file system fills up.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Rng, TempDir, Tmpfs};
use weir_log::{batch, Log, LogConfig, LogError};

use common::try_open as open;

fn big_batch(rng: &mut Rng, sequence: i32) -> Vec<u8> {
    common::batch(rng, 16, 2_000, common::now_ms(), 1, sequence)
}

/// Checks that each `(base, bytes)` is in the log exactly.
fn assert_holds(log: &Log, acked: &[(i64, Vec<u8>)]) {
    for (base, bytes) in acked {
        let copy = log.read_copy(*base, 1).expect("read acknowledged batch");
        assert!(copy.bytes == *bytes, "batch at {base} differs");
    }
}

#[test]
fn enospc_is_typed_leaves_the_log_consistent_and_appends_resume() {
    if !common::can_mount() {
        return common::skip_or_fail("enospc test");
    }
    let fs = Tmpfs::mount("enospc", "1536k");
    let dir = fs.path().join("log");
    // Space to give back later.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![7u8; 512 << 10]).expect("filler");

    let config = LogConfig {
        segment_bytes: 128 << 10,
        flush_messages: 1,
        ..LogConfig::default()
    };
    let (mut log, flusher) = open(&dir, config.clone()).expect("open");
    let mut rng = Rng::new(5);
    let mut acked = Vec::new();
    let mut sequence = 0;
    let error = loop {
        sequence += 1;
        let mut bytes = big_batch(&mut rng, sequence);
        match log.append(&mut bytes) {
            Ok(appended) => {
                appended.durable.wait().expect("durable");
                acked.push((appended.base_offset, bytes));
            }
            Err(error) => break error,
        }
        assert!(sequence < 10_000, "the file system never filled up");
    };
    assert!(matches!(error, LogError::NoSpace { .. }), "{error:?}");
    assert!(acked.len() > 10, "only {} batches fit", acked.len());
    let end = log.log_end_offset();
    let (_, last) = acked.last().expect("acked");
    let last = batch::validate(last).expect("valid").last_offset();
    assert_eq!(
        end,
        last + 1,
        "the failed append left the log end where it was"
    );

    // Still full: still a typed error, nothing changes, everything acknowledged is intact.
    for _ in 0..3 {
        let mut bytes = big_batch(&mut rng, 0);
        assert!(matches!(
            log.append(&mut bytes),
            Err(LogError::NoSpace { .. })
        ));
        assert_eq!(log.log_end_offset(), end);
    }
    assert_holds(&log, &acked);

    // Space comes back: appends resume at the same offset.
    std::fs::remove_file(&filler).expect("free space");
    for resumed in 0..8 {
        sequence += 1;
        let mut bytes = big_batch(&mut rng, sequence);
        let appended = log.append(&mut bytes).expect("append after space returned");
        appended.durable.wait().expect("durable");
        if resumed == 0 {
            assert_eq!(appended.base_offset, end);
        }
        acked.push((appended.base_offset, bytes));
    }
    log.close().expect("clean close");
    drop(flusher);

    let (log, _flusher) = open(&dir, config).expect("reopen");
    let report = log.recovery_report();
    assert_eq!(report.bytes_truncated, 0, "{report:?}");
    assert_eq!(report.corruption, None);
    assert_holds(&log, &acked);
    // And nothing else: the log is exactly the acknowledged batches.
    let total: usize = acked.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(log.size_bytes() as usize, total);
}

#[test]
fn read_only_file_system_is_a_typed_error() {
    if !common::can_mount() {
        return common::skip_or_fail("read-only test");
    }
    let fs = Tmpfs::mount("rofs", "4m");
    let dir = fs.path().join("log");
    let (mut log, flusher) = open(&dir, LogConfig::default()).expect("open");
    let mut rng = Rng::new(6);
    let mut bytes = big_batch(&mut rng, 1);
    let appended = log.append(&mut bytes).expect("append");
    log.close().expect("close");
    drop(flusher);

    fs.remount("ro");
    match open(&dir, LogConfig::default()) {
        Err(LogError::ReadOnly { .. }) => {}
        Err(other) => panic!("expected ReadOnly, got {other}"),
        Ok(_) => panic!("opened a log for writing on a read-only file system"),
    }
    fs.remount("rw");
    let (log, _flusher) = open(&dir, LogConfig::default()).expect("reopen read-write");
    assert_holds(&log, &[(appended.base_offset, bytes)]);
}

/// A loop device over a sparse image on a tmpfs smaller than the image: when the tmpfs fills,
/// the loop device's writes fail and fdatasync on the ext4 above it returns EIO.
struct FailingDisk {
    backing: Tmpfs,
    device: String,
    mount: TempDir,
}

impl FailingDisk {
    fn create() -> Option<FailingDisk> {
        let backing = Tmpfs::mount("eio-backing", "6m");
        let image = backing.path().join("disk.img");
        let run = |cmd: &mut Command| cmd.output().ok().filter(|o| o.status.success());
        run(Command::new("truncate").args(["-s", "64M"]).arg(&image))?;
        let out = run(Command::new("losetup").args(["-f", "--show"]).arg(&image))?;
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let disk = FailingDisk {
            backing,
            device,
            mount: TempDir::new("eio-mount"),
        };
        run(Command::new("mkfs.ext4")
            .args([
                "-q",
                "-E",
                "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
            ])
            .arg(&disk.device))?;
        run(Command::new("mount")
            .arg(&disk.device)
            .arg(disk.mount.path()))?;
        Some(disk)
    }

    fn path(&self) -> PathBuf {
        self.mount.path().join("log")
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount.path()).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = &self.backing; // unmounted after the loop device is gone
    }
}

#[test]
fn eio_on_fdatasync_is_an_unknown_outcome_and_fails_the_log() {
    if !common::can_mount() {
        return common::skip_or_fail("EIO test");
    }
    let Some(disk) = FailingDisk::create() else {
        // Loop devices are a kernel feature some hosts lack even for root; mounting tmpfs (which
        // the ENOSPC test needs, and which fails CI when refused) is not.
        eprintln!("SKIPPED EIO test: no loop device (losetup/mkfs.ext4/mount failed)");
        return;
    };
    let config = LogConfig {
        flush_messages: 1,
        ..LogConfig::default()
    };
    let (mut log, _flusher) = open(&disk.path(), config.clone()).expect("open");
    let mut rng = Rng::new(7);
    let mut acked = Vec::new();
    let mut sequence = 0;
    let failure = loop {
        sequence += 1;
        let mut bytes = big_batch(&mut rng, sequence);
        let appended = match log.append(&mut bytes) {
            Ok(appended) => appended,
            Err(error) => break error,
        };
        match appended.durable.wait() {
            Ok(()) => acked.push((appended.base_offset, bytes)),
            Err(error) => break error,
        }
        assert!(sequence < 5_000, "the disk never failed");
    };
    match &failure {
        LogError::OutcomeUnknown { source, .. } => {
            assert_eq!(source.raw_os_error(), Some(5), "{source}")
        }
        other => panic!("expected OutcomeUnknown from EIO, got {other:?}"),
    }
    assert!(!acked.is_empty());
    // The log refuses appends from now on, with an error that says to reopen.
    let mut bytes = big_batch(&mut rng, 0);
    assert!(matches!(
        log.append(&mut bytes),
        Err(LogError::Failed { .. })
    ));
    // What was acknowledged before the failure is still served, and valid.
    assert_holds(&log, &acked);
    for (_, bytes) in &acked {
        batch::validate(bytes).expect("valid");
    }
    // ext4 turned read-only after the I/O error: reopening says so.
    drop(log);
    match open(&disk.path(), config) {
        Err(LogError::ReadOnly { .. } | LogError::DeviceFailure { .. }) => {}
        Err(other) => panic!("expected ReadOnly or DeviceFailure, got {other}"),
        Ok(_) => panic!("reopened a log on a failed disk"),
    }
}
