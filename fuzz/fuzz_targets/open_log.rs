//! Any segment, index and state bytes on disk through open (recovery) and every read path.
//! The log may refuse or cut what it finds, never panic, and never serve a batch whose CRC fails.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weir_log::{batch, Flusher, Log, LogConfig, LogOptions};

fn flusher() -> Flusher {
    static FLUSHER: OnceLock<Flusher> = OnceLock::new();
    FLUSHER
        .get_or_init(|| Flusher::start(1).expect("flusher"))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    // Layout: [flags u8][index len u16][recovery position u32][log start u16][index][segment]
    if data.len() < 9 {
        return;
    }
    let flags = data[0];
    let index_len = u16::from_be_bytes([data[1], data[2]]) as usize;
    let rp = u32::from_be_bytes([data[3], data[4], data[5], data[6]]) as u64;
    let log_start = i64::from(u16::from_be_bytes([data[7], data[8]]));
    let rest = &data[9..];
    let (index, segment) = rest.split_at(index_len.min(rest.len()));

    let dir = std::env::temp_dir().join(format!("weir-fuzz-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join(format!("{:020}.log", 0)), segment).expect("segment");
    if flags & 1 != 0 {
        std::fs::write(dir.join(format!("{:020}.index", 0)), index).expect("index");
    }
    if flags & 2 != 0 {
        // Trust a prefix without checking it: the header-walking paths then see raw bytes.
        weir_log::fuzzing::write_state(&dir, log_start, 0, rp).expect("state");
    }
    let config = LogConfig {
        index_interval_bytes: u64::from(flags >> 4) * 64,
        ..LogConfig::default()
    };
    let Ok(log) = Log::open(&dir, LogOptions::new(config, flusher())) else {
        return;
    };
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let Ok(copy) = log.read_copy(offset, 4096) else {
            break;
        };
        for item in batch::Batches::new(&copy.bytes) {
            assert!(item.is_ok(), "read_copy served an invalid batch");
        }
        let Ok(slice) = log.read(offset, 4096) else {
            break;
        };
        assert!(slice.next_offset > offset);
        offset = slice.next_offset;
    }
    let _ = log.find_timestamp(i64::from(flags) << 8);
    let _ = log.max_timestamp();
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
});
