//! `weir-log`: the partition log of Weir.
//!
//! A log is a directory of segments holding Kafka RecordBatch v2 bytes exactly as producers sent
//! them, with the base offset stamped in. It knows nothing of topics, partitions or the Kafka
//! protocol: it appends batches, serves them back as file regions (for `sendfile`) or copies,
//! rolls and retains segments, makes appends durable off the caller's thread, and recovers after
//! a crash. See the crate README for the glossary and invariants, and `docs/format/log.md` for
//! the bytes on disk.
//!
//! ```no_run
//! use weir_log::{Flusher, Log, LogConfig, LogOptions, batch::build::BatchBuilder};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let flusher = Flusher::start(2)?;
//! let mut config = LogConfig::default();
//! config.flush_messages = 1; // acknowledge only after fdatasync
//! let mut log = Log::open("weir-data/orders-0".as_ref(), LogOptions::new(config, flusher))?;
//!
//! let mut batch = BatchBuilder::new(1_700_000_000_000);
//! batch.push(Some(b"key"), Some(b"value"), 1_700_000_000_000);
//! let appended = log.append(&mut batch.build())?;
//! appended.durable.wait()?; // or `.await` on a reactor: fsync runs on a flusher thread
//!
//! let slice = log.read(appended.base_offset, 1 << 20)?; // a file region for sendfile
//! assert_eq!(slice.next_offset, appended.last_offset + 1);
//! log.close()?; // writes the clean-shutdown checkpoint
//! # Ok(()) }
//! ```

pub mod batch;
mod cache;
mod clock;
mod config;
mod durability;
mod error;
mod evict;
mod index;
mod log;
mod recovery;
mod segment;
mod state;

/// Helpers for fuzz targets only.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    /// Writes a valid `log.state` with the given log start offset and recovery point.
    pub fn write_state(
        dir: &Path,
        log_start_offset: i64,
        recovery_base: i64,
        recovery_position: u64,
    ) -> std::io::Result<()> {
        let (mut file, _) = crate::state::StateFile::open(dir)?;
        file.write(&crate::state::LogState {
            log_start_offset,
            recovery_base,
            recovery_position,
        })
    }
}

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ConfigError, LogConfig};
pub use durability::{
    Durable, FlushStats, Flusher, FLUSH_THREADS_DEFAULT, GROUP_COMMIT_LINGER_MAX_DEFAULT,
    RECOVERY_POINT_INTERVAL_BYTES,
};
pub use error::{Corruption, LogError};
pub use evict::{CACHE_WINDOW_BYTES_DEFAULT, CACHE_WINDOW_BYTES_MIN};
pub use log::{Appended, FileRegion, Log, LogOptions, ReadCopy, ReadSlice, Retained, TimestampHit};
pub use recovery::RecoveryReport;
