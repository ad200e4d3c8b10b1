//! WebSocket framing (RFC 6455): the opening handshake's accept key, server frames (never
//! masked) and an incremental, bounded reader of client frames (always masked).

use base64::Engine;

/// Appended to the client's key before hashing (RFC 6455 §1.3).
const HANDSHAKE_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Close codes (RFC 6455 §7.4.1).
pub(crate) const CLOSE_NORMAL: u16 = 1000;
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;
pub(crate) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub(crate) const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
pub(crate) const CLOSE_INVALID_PAYLOAD: u16 = 1007;
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

/// The `Sec-WebSocket-Accept` answer to a `Sec-WebSocket-Key`.
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(HANDSHAKE_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// One whole server frame (FIN set, unmasked).
pub(crate) fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend((n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A close frame with its code and a reason (cut to fit a control frame's 125 bytes).
pub(crate) fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OP_CLOSE, &payload)
}

/// A client frame, masked as RFC 6455 requires of clients; `first` is the FIN bit and opcode.
/// For Weir's own WebSocket clients (`weir bench ws`, tests).
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend((n as u64).to_be_bytes());
        }
    }
    out.extend(mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The whole server frame (unmasked) at the start of `buf`: (first byte, payload start, frame
/// end), or None until it is all there. For Weir's own WebSocket clients.
pub fn server_frame_at(buf: &[u8]) -> Option<(u8, usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, at) = match buf[1] & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(buf.get(2..10)?);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    let end = usize::try_from(len).ok()?.checked_add(at)?;
    (buf.len() >= end).then_some((buf[0], at, end))
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Why the peer's bytes end the connection: the close code and reason to send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub code: u16,
    pub reason: String,
}

fn violation(code: u16, reason: impl Into<String>) -> Violation {
    Violation {
        code,
        reason: reason.into(),
    }
}

/// Reads one client frame from the front of `buf`: `Ok(None)` until it is all there, then the
/// frame (unmasked) and the bytes it took. A payload over `max` is refused from its header,
/// before it is buffered.
pub(crate) fn parse(buf: &[u8], max: usize) -> Result<Option<(Frame, usize)>, Violation> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(violation(CLOSE_PROTOCOL_ERROR, "reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(violation(
            CLOSE_PROTOCOL_ERROR,
            format!("unknown opcode {opcode}"),
        ));
    }
    if b1 & 0x80 == 0 {
        return Err(violation(
            CLOSE_PROTOCOL_ERROR,
            "client frames must be masked",
        ));
    }
    let control = opcode >= OP_CLOSE;
    let (length, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(b);
                (u64::from_be_bytes(bytes), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if control && (length > 125 || !fin) {
        return Err(violation(
            CLOSE_PROTOCOL_ERROR,
            "control frames must be whole and at most 125 bytes",
        ));
    }
    if length > max as u64 {
        return Err(violation(
            CLOSE_TOO_BIG,
            format!("a frame of {length} bytes is over ws_max_message_bytes ({max})"),
        ));
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    at += 4;
    let length = length as usize;
    let Some(payload) = buf.get(at..at + length) else {
        return Ok(None);
    };
    let payload = payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        at + length,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser would send it.
    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        client_frame(if fin { 0x80 } else { 0 } | opcode, payload)
    }

    #[test]
    fn the_accept_key_of_rfc_6455s_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_of_every_length_form_parse() {
        for size in [0, 5, 125, 126, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let bytes = masked(true, OP_TEXT, &payload);
            for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
                assert_eq!(
                    parse(&bytes[..cut], 1 << 20),
                    Ok(None),
                    "size {size} cut {cut}"
                );
            }
            let (frame, used) = parse(&bytes, 1 << 20).expect("valid").expect("whole");
            assert_eq!(used, bytes.len());
            assert_eq!(frame.payload, payload);
            assert!(frame.fin);
        }
        let server = encode(OP_TEXT, &[1; 300]);
        assert_eq!(&server[..4], &[0x81, 126, 1, 44]);
        assert_eq!(server_frame_at(&server), Some((0x81, 4, 304)));
        assert_eq!(server_frame_at(&server[..303]), None);
    }

    #[test]
    fn bad_frames_are_violations_with_their_close_code() {
        let unmasked = encode(OP_TEXT, b"hi");
        assert_eq!(
            parse(&unmasked, 100).map_err(|v| v.code),
            Err(CLOSE_PROTOCOL_ERROR)
        );
        let mut reserved = masked(true, OP_TEXT, b"hi");
        reserved[0] |= 0x40;
        assert_eq!(
            parse(&reserved, 100).map_err(|v| v.code),
            Err(CLOSE_PROTOCOL_ERROR)
        );
        let unknown = masked(true, 0x3, b"");
        assert_eq!(
            parse(&unknown, 100).map_err(|v| v.code),
            Err(CLOSE_PROTOCOL_ERROR)
        );
        let long_ping = masked(true, OP_PING, &[0; 126]);
        assert_eq!(
            parse(&long_ping, 1000).map_err(|v| v.code),
            Err(CLOSE_PROTOCOL_ERROR)
        );
        let split_ping = masked(false, OP_PING, b"");
        assert_eq!(
            parse(&split_ping, 1000).map_err(|v| v.code),
            Err(CLOSE_PROTOCOL_ERROR)
        );
        // Refused from the header alone: a 2^63-byte frame is never waited for.
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend(u64::MAX.to_be_bytes());
        assert_eq!(parse(&huge, 1000).map_err(|v| v.code), Err(CLOSE_TOO_BIG));
        let close = close(CLOSE_GOING_AWAY, &"é".repeat(100));
        assert!(close.len() <= 127 && std::str::from_utf8(&close[4..]).is_ok());
    }
}
