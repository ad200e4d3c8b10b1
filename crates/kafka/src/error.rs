//! Errors of the Kafka layer.

/// A request that cannot be decoded. The connection that sent it is closed (Kafka does the
/// same: it cannot answer a request it cannot parse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated {what}: {needed} bytes needed, {available} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("invalid {what}: {reason}")]
    Invalid {
        what: &'static str,
        reason: &'static str,
    },
    #[error("frame of {size} bytes exceeds socket.request.max.bytes={limit}")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("negative frame size {size}")]
    NegativeFrameSize { size: i32 },
}
