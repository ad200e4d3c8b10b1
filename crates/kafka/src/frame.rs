//! Kafka's framing: a 4-byte big-endian size, then that many bytes of request or response.

use crate::error::DecodeError;

/// Kafka's `socket.request.max.bytes` default: the largest request frame accepted.
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 100 * 1024 * 1024;

/// Size of the frame whose 4-byte prefix is `prefix`, checked against `limit` before anything is
/// allocated for it.
pub fn frame_size(prefix: [u8; 4], limit: usize) -> Result<usize, DecodeError> {
    let size = i32::from_be_bytes(prefix);
    if size < 0 {
        return Err(DecodeError::NegativeFrameSize { size });
    }
    let size = size as usize;
    if size > limit {
        return Err(DecodeError::FrameTooLarge { size, limit });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_against_the_limit() {
        assert_eq!(frame_size([0, 0, 1, 0], 1024), Ok(256));
        assert_eq!(
            frame_size(
                2_000_000_000i32.to_be_bytes(),
                SOCKET_REQUEST_MAX_BYTES_DEFAULT
            ),
            Err(DecodeError::FrameTooLarge {
                size: 2_000_000_000,
                limit: SOCKET_REQUEST_MAX_BYTES_DEFAULT
            })
        );
        assert_eq!(
            frame_size((-5i32).to_be_bytes(), 1024),
            Err(DecodeError::NegativeFrameSize { size: -5 })
        );
    }
}
