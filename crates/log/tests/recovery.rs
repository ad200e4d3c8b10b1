//! Recovery corner cases found in review, each a scenario a crash can leave on disk.

mod common;

use std::path::Path;

use common::{Rng, TempDir};
use weir_log::{Log, LogConfig};

use common::open;

fn fill(log: &mut Log, rng: &mut Rng, batches: usize) {
    for j in 0..batches {
        let mut bytes = common::batch(rng, 4, 600, common::now_ms(), 1, j as i32);
        log.append(&mut bytes).expect("append");
    }
}

fn segment_path(dir: &Path, base: i64, ext: &str) -> std::path::PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

#[test]
fn index_interval_zero_survives_reopen() {
    let dir = TempDir::new("interval0");
    let config = LogConfig {
        index_interval_bytes: 0,
        segment_bytes: 32 << 10,
        ..LogConfig::default()
    };
    let mut rng = Rng::new(1);
    let (mut log, flusher) = open(dir.path(), config.clone());
    fill(&mut log, &mut rng, 300);
    log.close().expect("close");
    drop(flusher);
    let (mut log, flusher) = open(dir.path(), config.clone());
    fill(&mut log, &mut rng, 300);
    let end = log.log_end_offset();
    drop(log); // unclean
    drop(flusher);
    let (log, _flusher) = open(dir.path(), config);
    assert_eq!(log.log_end_offset(), end);
    let copy = log.read_copy(0, u64::MAX).expect("read");
    assert!(!copy.bytes.is_empty());
}

#[test]
fn unlinks_reaching_disk_out_of_order_do_not_cut_the_log() {
    let dir = TempDir::new("retire-order");
    let config = LogConfig {
        segment_bytes: 16 << 10,
        ..LogConfig::default()
    };
    let mut rng = Rng::new(2);
    let (mut log, flusher) = open(dir.path(), config.clone());
    fill(&mut log, &mut rng, 80);
    let bases = log.segment_bases();
    assert!(bases.len() >= 4, "{bases:?}");
    // Keep a copy of the oldest segment, as if its unlink never reached the disk.
    let oldest = std::fs::read(segment_path(dir.path(), bases[0], "log")).expect("read");
    let start = bases[2];
    log.advance_start_offset(start)
        .expect("advance")
        .wait()
        .expect("durable");
    let end = log.log_end_offset();
    log.close().expect("close");
    drop(flusher);
    assert!(!segment_path(dir.path(), bases[0], "log").exists());
    assert!(!segment_path(dir.path(), bases[1], "log").exists());
    std::fs::write(segment_path(dir.path(), bases[0], "log"), &oldest).expect("restore");

    let (log, _flusher) = open(dir.path(), config);
    let report = log.recovery_report().clone();
    assert_eq!(report.corruption, None, "{report:?}");
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), end, "{report:?}");
    assert_eq!(log.segment_bases(), bases[2..].to_vec());
    assert!(!segment_path(dir.path(), bases[0], "log").exists());
}

#[test]
fn a_recovery_point_past_the_file_end_is_replaced() {
    let dir = TempDir::new("rp-past-end");
    let config = LogConfig::default();
    let mut rng = Rng::new(3);
    let (mut log, flusher) = open(dir.path(), config.clone());
    fill(&mut log, &mut rng, 20);
    log.close().expect("close"); // recovery point = end of segment 0
    drop(flusher);

    // The disk lost the last batch (cut at a batch boundary).
    let path = segment_path(dir.path(), 0, "log");
    let bytes = std::fs::read(&path).expect("read");
    let batches: Vec<_> = weir_log::batch::Batches::new(&bytes)
        .map(|b| b.expect("valid"))
        .collect();
    let (last_at, _) = batches[batches.len() - 1];
    std::fs::write(&path, &bytes[..last_at]).expect("cut");

    let (mut log, flusher) = open(dir.path(), config.clone());
    assert_eq!(log.size_bytes(), last_at as u64);
    // New bytes where the lost batch was, then a crash: they must be checked, not trusted.
    let mut more = common::batch(&mut rng, 4, 600, common::now_ms(), 1, 99);
    let size = more.len() as u64;
    log.append(&mut more).expect("append");
    drop(log);
    drop(flusher);
    let (log, _flusher) = open(dir.path(), config);
    assert_eq!(log.recovery_report().bytes_scanned, size);
}

#[test]
fn append_would_roll_says_when_the_next_append_starts_a_segment() {
    let dir = TempDir::new("would-roll");
    let config = LogConfig {
        segment_bytes: 4 << 10,
        ..LogConfig::default()
    };
    let mut rng = Rng::new(7);
    let (mut log, _flusher) = open(dir.path(), config);
    // An empty active segment never rolls, whatever comes.
    assert!(!log.append_would_roll(100 << 10));
    while log.segment_count() == 1 {
        let mut batch = common::batch(&mut rng, 3, 200, common::now_ms(), -1, 0);
        let predicted = log.append_would_roll(batch.len());
        log.append(&mut batch).expect("append");
        // It predicted the roll exactly: no roll before the one it announced.
        assert_eq!(predicted, log.segment_count() == 2);
    }
}
