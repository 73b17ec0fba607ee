//! Encode once: turns a payload into the complete bytes of one server frame.
//!
//! A server never masks its frames (RFC 6455 §5.1), so the bytes of a frame are the same
//! for every recipient. This module builds them exactly once per message — header and
//! payload in one contiguous [`Bytes`] — and everything downstream (shards, fan-out,
//! socket writes) only shares that buffer by reference count or by slice. Nothing here
//! knows about sockets or clients.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest header of an unmasked frame: 2 bytes + 8-byte extended length.
pub const MAX_HEADER: usize = 10;

/// The kind of a server frame (the subset of RFC 6455 opcodes a server sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// A UTF-8 text message.
    Text = 0x1,
    /// A binary message.
    Binary = 0x2,
    /// A close frame (status code + reason).
    Close = 0x8,
    /// A ping.
    Ping = 0x9,
    /// A pong (answer to a client's ping).
    Pong = 0xA,
}

/// Writes the header of a final (FIN) frame with `opcode` and a payload of `len` bytes
/// into `out`, returning the header's length (2, 4 or 10).
pub fn write_header(opcode: Opcode, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = 0x80 | opcode as u8;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// The opcode and payload of one frame made by [`encode`]: the payload is a slice of the
/// same buffer (no copy). `None` for anything that is not one whole data frame.
///
/// ```
/// use hubcast::wire::frame::{encode, payload_of, Opcode};
/// let frame = encode(Opcode::Text, b"hello");
/// let (opcode, payload) = payload_of(&frame).expect("a data frame");
/// assert_eq!((opcode, &payload[..]), (Opcode::Text, &b"hello"[..]));
/// ```
pub fn payload_of(frame: &Bytes) -> Option<(Opcode, Bytes)> {
    let opcode = match frame.first()? & 0x0f {
        0x1 => Opcode::Text,
        0x2 => Opcode::Binary,
        _ => return None,
    };
    let (len, head): (usize, usize) = match frame.get(1)? & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*frame.get(2)?, *frame.get(3)?])),
            4,
        ),
        127 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(frame.get(2..10)?);
            (usize::try_from(u64::from_be_bytes(l)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    (frame.len() == head.checked_add(len)?).then(|| (opcode, frame.slice(head..)))
}

/// Encodes one complete, final server frame: header followed by `payload`, in one buffer.
///
/// ```
/// use hubcast::wire::frame::{encode, Opcode};
/// let frame = encode(Opcode::Text, b"hi");
/// assert_eq!(&frame[..], &[0x81, 2, b'h', b'i']);
/// ```
pub fn encode(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut head = [0u8; MAX_HEADER];
    let n = write_header(opcode, payload.len(), &mut head);
    let mut buf = BytesMut::with_capacity(n + payload.len());
    buf.put_slice(&head[..n]);
    buf.put_slice(payload);
    buf.freeze()
}

/// Encodes a close frame with a status code and a short reason.
///
/// The reason is cut to fit the 125-byte control-frame limit (on a character boundary).
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode(Opcode::Close, &payload[..2 + end])
}

/// Joins several already-encoded frames into one buffer, so a batch of frames for the same
/// recipients is copied once per shard and then written to every socket with one call.
pub fn join(frames: &[Bytes]) -> Bytes {
    match frames {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let total = many.iter().map(Bytes::len).sum();
            let mut buf = BytesMut::with_capacity(total);
            for f in many {
                buf.put_slice(f);
            }
            buf.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_len(f: &[u8]) -> (usize, usize) {
        match f[1] & 0x7f {
            126 => (u16::from_be_bytes([f[2], f[3]]) as usize, 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&f[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        }
    }

    #[test]
    fn length_boundaries_use_the_right_header() {
        for (len, head) in [
            (0, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (1 << 20, 10),
        ] {
            let payload = vec![7u8; len];
            let f = encode(Opcode::Binary, &payload);
            assert_eq!(f[0], 0x82, "FIN + binary");
            assert_eq!(f[1] & 0x80, 0, "server frames are never masked");
            assert_eq!(decode_len(&f), (len, head), "len {len}");
            assert_eq!(f.len(), head + len);
            assert!(f[head..].iter().all(|&b| b == 7));
        }
    }

    #[test]
    fn close_frame_carries_code_and_truncated_reason() {
        let f = encode_close(1008, "slow consumer");
        assert_eq!(f[0], 0x88);
        assert_eq!(&f[2..4], &1008u16.to_be_bytes());
        assert_eq!(&f[4..], b"slow consumer");
        let long = "é".repeat(100); // 200 bytes, must be cut on a char boundary
        let f = encode_close(1000, &long);
        assert!(f.len() - 2 <= 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }

    #[test]
    fn join_concatenates_in_order() {
        let a = encode(Opcode::Text, b"a");
        let b = encode(Opcode::Text, b"bb");
        let j = join(&[a.clone(), b.clone()]);
        assert_eq!(&j[..a.len()], &a[..]);
        assert_eq!(&j[a.len()..], &b[..]);
        assert_eq!(
            join(std::slice::from_ref(&a)).as_ptr(),
            a.as_ptr(),
            "one frame is shared, not copied"
        );
    }
}
