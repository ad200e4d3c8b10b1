//! The log's error type. Kafka error codes are mapped by the broker, not here.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::batch::BatchError;

/// Why bytes on disk were judged corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    #[error("batch base offset {found} where {expected} was expected")]
    OffsetGap { expected: i64, found: i64 },
    #[error("batch of {size} bytes runs past the end of the segment ({available} bytes left)")]
    PastEnd { size: u64, available: u64 },
    #[error("{what} does not fit a segment")]
    OutOfRange { what: &'static str },
}

/// Everything the log can fail with. Operating errors only: broken invariants of our own code
/// are assertions.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The appended bytes are not a sequence of valid RecordBatch v2. Nothing was written.
    #[error("invalid record batch at byte {position} of the appended data: {source}")]
    InvalidBatch {
        position: usize,
        #[source]
        source: BatchError,
    },
    /// A batch larger than a limit; the message names the setting to raise.
    #[error("record batch of {size} bytes exceeds {setting}={limit}")]
    BatchTooLarge {
        size: u64,
        setting: &'static str,
        limit: u64,
    },
    #[error("offset {offset} is out of range: the log holds [{start}, {end})")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    /// ENOSPC or EDQUOT. The log is consistent and accepts appends once space is freed.
    #[error("no space left on device: {op} {}", path.display())]
    NoSpace { op: &'static str, path: PathBuf },
    /// EROFS.
    #[error("read-only file system: {op} {}", path.display())]
    ReadOnly { op: &'static str, path: PathBuf },
    /// EIO: the device failed.
    #[error("device I/O error: {op} {}: {source}", path.display())]
    DeviceFailure {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Any other I/O error.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Bytes read from disk failed validation. No bytes are served from a corrupt range.
    #[error("corrupt data in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: Corruption,
    },
    /// fdatasync failed after the bytes were written: whether they are durable is unknown.
    /// The log refuses further appends; reopening it recovers a consistent state.
    #[error("outcome unknown: fdatasync of {} failed ({source}); reopen the log", path.display())]
    OutcomeUnknown {
        path: PathBuf,
        source: Arc<io::Error>,
    },
    /// An earlier failure (an unknown outcome, a failed rollback) left the log refusing appends.
    #[error("log is failed since an earlier error ({cause}); reopen it")]
    Failed { cause: String },
    #[error("invalid log config: {0}")]
    Config(#[from] crate::config::ConfigError),
}

/// Linux errno for EIO; `std::io::ErrorKind` has no stable variant for it.
const EIO: i32 = 5;

impl LogError {
    /// Classifies an I/O error so callers can tell a full disk from a dead one.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> LogError {
        let path = path.into();
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                LogError::NoSpace { op, path }
            }
            io::ErrorKind::ReadOnlyFilesystem => LogError::ReadOnly { op, path },
            _ if source.raw_os_error() == Some(EIO) => LogError::DeviceFailure { op, path, source },
            _ => LogError::Io { op, path, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classification() {
        let e = LogError::io("write", "x", io::Error::from_raw_os_error(28));
        assert!(matches!(e, LogError::NoSpace { .. }), "{e:?}");
        let e = LogError::io("write", "x", io::Error::from_raw_os_error(122));
        assert!(matches!(e, LogError::NoSpace { .. }), "{e:?}");
        let e = LogError::io("open", "x", io::Error::from_raw_os_error(30));
        assert!(matches!(e, LogError::ReadOnly { .. }), "{e:?}");
        let e = LogError::io("fdatasync", "x", io::Error::from_raw_os_error(EIO));
        assert!(matches!(e, LogError::DeviceFailure { .. }), "{e:?}");
        let e = LogError::io("open", "x", io::Error::from_raw_os_error(2));
        assert!(matches!(e, LogError::Io { .. }), "{e:?}");
    }
}
