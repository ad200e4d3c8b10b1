//! `log.state`: the log start offset and the recovery point, in two alternating slots.
//!
//! The recovery point is a position (segment base offset, byte position) below which every byte
//! is known to be durable and valid: recovery CRC-checks only what lies beyond it. A clean
//! shutdown writes the end of the log as the recovery point, so the next open scans nothing.
//!
//! Each write goes to the slot its sequence number selects and is fdatasync'd; a torn write
//! spoils one slot and the other, older one is still valid. See `docs/format/log.md`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(crate) const STATE_FILE: &str = "log.state";
const MAGIC: &[u8; 8] = b"WEIRLOG1";
const SLOT_BYTES: usize = 64;
const BODY_BYTES: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogState {
    pub log_start_offset: i64,
    pub recovery_base: i64,
    pub recovery_position: u64,
}

pub(crate) struct StateFile {
    path: PathBuf,
    file: File,
    seq: u64,
}

impl StateFile {
    /// Opens (creating if missing) the state file; returns the newest valid state in it.
    pub fn open(dir: &Path) -> io::Result<(StateFile, Option<LogState>)> {
        let path = dir.join(STATE_FILE);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let bytes = std::fs::read(&path)?;
        let best = bytes
            .chunks(SLOT_BYTES)
            .filter_map(decode_slot)
            .max_by_key(|(seq, _)| *seq);
        let seq = best.map_or(0, |(seq, _)| seq);
        Ok((StateFile { path, file, seq }, best.map(|(_, state)| state)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `state` into the older slot and makes it durable.
    pub fn write(&mut self, state: &LogState) -> io::Result<()> {
        let seq = self.seq + 1;
        let slot = encode_slot(seq, state);
        self.file
            .write_all_at(&slot, (seq % 2) * SLOT_BYTES as u64)?;
        self.file.sync_data()?;
        self.seq = seq;
        Ok(())
    }
}

fn encode_slot(seq: u64, state: &LogState) -> [u8; SLOT_BYTES] {
    let mut slot = [0u8; SLOT_BYTES];
    slot[0..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&seq.to_be_bytes());
    slot[16..24].copy_from_slice(&state.log_start_offset.to_be_bytes());
    slot[24..32].copy_from_slice(&state.recovery_base.to_be_bytes());
    slot[32..40].copy_from_slice(&state.recovery_position.to_be_bytes());
    let crc = crc32c::crc32c(&slot[..BODY_BYTES]);
    slot[BODY_BYTES..BODY_BYTES + 4].copy_from_slice(&crc.to_be_bytes());
    slot
}

fn decode_slot(slot: &[u8]) -> Option<(u64, LogState)> {
    if slot.len() < BODY_BYTES + 4 || &slot[0..8] != MAGIC {
        return None;
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&slot[at..at + 8]);
        b
    };
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&slot[BODY_BYTES..BODY_BYTES + 4]);
    if crc32c::crc32c(&slot[..BODY_BYTES]) != u32::from_be_bytes(crc) {
        return None;
    }
    Some((
        u64::from_be_bytes(word(8)),
        LogState {
            log_start_offset: i64::from_be_bytes(word(16)),
            recovery_base: i64::from_be_bytes(word(24)),
            recovery_position: u64::from_be_bytes(word(32)),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_falls_back() {
        let dir = std::env::temp_dir().join(format!("weir-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (mut file, state) = StateFile::open(&dir).expect("open");
        assert_eq!(state, None);
        let a = LogState {
            log_start_offset: 5,
            recovery_base: 0,
            recovery_position: 100,
        };
        let b = LogState {
            recovery_position: 200,
            ..a
        };
        file.write(&a).expect("write a");
        file.write(&b).expect("write b");
        drop(file);
        let (_, state) = StateFile::open(&dir).expect("reopen");
        assert_eq!(state, Some(b));

        // Garble the slot holding b (seq 2 → slot 0): a is found again.
        let path = dir.join(STATE_FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[30] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let (mut file, state) = StateFile::open(&dir).expect("reopen");
        assert_eq!(state, Some(a));
        // The next write goes after the newest valid sequence number.
        file.write(&b).expect("write");
        let (_, state) = StateFile::open(&dir).expect("reopen");
        assert_eq!(state, Some(b));
        std::fs::remove_dir_all(&dir).ok();
    }
}
