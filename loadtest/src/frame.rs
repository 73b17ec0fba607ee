//! WebSocket wire format (RFC 6455 §5) for the client side, and nothing else.
//!
//! Owns two things: the batch-friendly parser for *server* frames (unmasked;
//! FIN/RSV/opcode byte, 7/16/64-bit payload length; RSV1 is reported, not judged) and the encoder for
//! *client* frames (always masked). Both work on caller-provided buffers so the
//! hot path never allocates: the reader hands in whatever one `read()` returned
//! and walks the frames in place; encoders append to a reused output `Vec`.
//! Protocol behaviour (ping → pong, close handshake, fragments) lives in
//! `proto`, which builds on this module.

use std::fmt;

/// Continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Text data frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary data frame.
pub const OP_BINARY: u8 = 0x2;
/// Close control frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping control frame.
pub const OP_PING: u8 = 0x9;
/// Pong control frame.
pub const OP_PONG: u8 = 0xA;

/// Largest header a server may send us: 2 + 8 bytes (servers never mask).
pub const MAX_SERVER_HEADER: usize = 10;

/// Decoded header of one server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN bit: last fragment of a message.
    pub fin: bool,
    /// RSV1 bit: with permessage-deflate, the first frame of a compressed message
    /// (`proto` refuses it anywhere else, and without the extension).
    pub rsv1: bool,
    /// Opcode (low 4 bits of the first byte).
    pub opcode: u8,
    /// Bytes taken by the header (2, 4 or 10).
    pub header_len: usize,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Header {
    /// Whole frame size: header plus payload.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }

    /// Control frames are opcodes 0x8..=0xF.
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// A server frame that breaks RFC 6455 (or our size limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV2/RSV3 set (no extension defines them), or RSV1 where permessage-deflate
    /// does not allow it.
    ReservedBits,
    /// Server frames must not be masked (§5.1).
    MaskedServerFrame,
    /// Opcode 0x3-0x7 or 0xB-0xF.
    UnknownOpcode(u8),
    /// Control frame longer than 125 bytes or fragmented (§5.5).
    BadControlFrame,
    /// 64-bit length with the top bit set, or above the configured limit.
    TooLarge(u64),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedBits => f.write_str("RSV bits set"),
            Self::MaskedServerFrame => f.write_str("masked server frame"),
            Self::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            Self::BadControlFrame => f.write_str("oversized or fragmented control frame"),
            Self::TooLarge(n) => write!(f, "frame payload too large ({n} bytes)"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Result of looking at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// One complete frame; `len` bytes of the buffer belong to it.
    Frame {
        /// The decoded header.
        header: Header,
        /// The payload, borrowed from the buffer.
        payload: &'a [u8],
        /// Header plus payload length (bytes to skip).
        len: usize,
    },
    /// The buffer holds only part of a frame. `need` is the total size of that
    /// frame when its header is complete, otherwise the minimum number of bytes
    /// required to decode the header.
    Incomplete {
        /// Bytes required from the start of the frame.
        need: usize,
    },
}

/// Decodes the header at the front of `buf`; `Ok(None)` when more bytes are needed.
#[inline]
pub fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x30 != 0 {
        return Err(FrameError::ReservedBits);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::MaskedServerFrame);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        other => return Err(FrameError::UnknownOpcode(other)),
    }
    let len7 = b1 & 0x7F;
    let (header_len, payload_len) = match len7 {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (4, u64::from(u16::from_be_bytes([b[0], b[1]])))
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut raw = [0u8; 8];
            raw.copy_from_slice(b);
            let n = u64::from_be_bytes(raw);
            if n >> 63 != 0 {
                return Err(FrameError::TooLarge(n));
            }
            (10, n)
        }
        n => (2, u64::from(n)),
    };
    if opcode & 0x8 != 0 && (!fin || payload_len > 125) {
        return Err(FrameError::BadControlFrame);
    }
    let payload_len = match usize::try_from(payload_len) {
        Ok(n) if n <= max_payload => n,
        _ => return Err(FrameError::TooLarge(payload_len)),
    };
    Ok(Some(Header {
        fin,
        rsv1: b0 & 0x40 != 0,
        opcode,
        header_len,
        payload_len,
    }))
}

/// Looks at the frame at the front of `buf` (the caller advances by `len`).
#[inline]
pub fn next_frame(buf: &[u8], max_payload: usize) -> Result<Next<'_>, FrameError> {
    let Some(header) = parse_header(buf, max_payload)? else {
        // Enough for the longest header we might be looking at.
        let need = match buf.get(1) {
            Some(b1) if b1 & 0x7F == 126 => 4,
            Some(b1) if b1 & 0x7F == 127 => 10,
            _ => 2,
        };
        return Ok(Next::Incomplete { need });
    };
    let len = header.frame_len();
    match buf.get(header.header_len..len) {
        Some(payload) => Ok(Next::Frame {
            header,
            payload,
            len,
        }),
        None => Ok(Next::Incomplete { need: len }),
    }
}

/// Appends a client frame header (FIN set, MASK set) for a payload of `len` bytes.
#[inline]
pub fn push_client_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: [u8; 4]) {
    out.push(0x80 | (opcode & 0x0F));
    if len < 126 {
        // Cast is lossless: len < 126.
        out.push(0x80 | len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
}

/// XORs `data` with the 4-byte masking key (RFC 6455 §5.3), key phase starting at 0.
#[inline]
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let wide = u64::from(word) | (u64::from(word) << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(raw) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends a complete masked client frame carrying `payload`.
pub fn push_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    push_client_header(out, opcode, payload.len(), mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends a masked close frame with `code` (or an empty close for 1005 "no status").
pub fn push_close(out: &mut Vec<u8>, code: u16, mask: [u8; 4]) {
    if code == 1005 {
        push_client_frame(out, OP_CLOSE, &[], mask);
    } else {
        push_client_frame(out, OP_CLOSE, &code.to_be_bytes(), mask);
    }
}

/// Cheap per-connection generator of masking keys (xorshift64*). Masking keys
/// only need to be unpredictable to intermediaries, not cryptographically
/// strong, and this keeps key generation off the syscall path.
#[derive(Debug, Clone)]
pub struct MaskRng(u64);

impl MaskRng {
    /// Seeds the generator; a zero seed is remapped (xorshift must not be 0).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next 64 pseudo-random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Next masking key.
    #[inline]
    pub fn mask(&mut self) -> [u8; 4] {
        // Truncation intended: take the high 32 bits.
        ((self.next_u64() >> 32) as u32).to_ne_bytes()
    }
}

/// An unmasked (server) frame, for tests of the parsers.
#[cfg(test)]
pub(crate) fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![(u8::from(fin) << 7) | opcode];
    let n = payload.len();
    if n < 126 {
        v.push(n as u8);
    } else if n <= 0xFFFF {
        v.push(126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        v.push(127);
        v.extend_from_slice(&(n as u64).to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_many_frames_from_one_buffer() {
        let mut buf = server_frame(true, OP_TEXT, b"hello");
        buf.extend(server_frame(true, OP_BINARY, b"world!"));
        buf.extend(server_frame(true, OP_PING, b"p"));
        let mut pos = 0;
        let mut seen = Vec::new();
        while let Ok(Next::Frame {
            header,
            payload,
            len,
        }) = next_frame(&buf[pos..], 1 << 20)
        {
            seen.push((header.opcode, payload.to_vec()));
            pos += len;
        }
        assert_eq!(pos, buf.len());
        assert_eq!(
            seen,
            vec![
                (OP_TEXT, b"hello".to_vec()),
                (OP_BINARY, b"world!".to_vec()),
                (OP_PING, b"p".to_vec())
            ]
        );
    }

    #[test]
    fn sixteen_and_sixty_four_bit_lengths() {
        for n in [125usize, 126, 127, 300, 65_535, 65_536, 200_000] {
            let payload = vec![b'x'; n];
            let f = server_frame(true, OP_BINARY, &payload);
            match next_frame(&f, 1 << 20) {
                Ok(Next::Frame {
                    header,
                    payload: p,
                    len,
                }) => {
                    assert_eq!(header.payload_len, n);
                    assert_eq!(p.len(), n);
                    assert_eq!(len, f.len());
                    let expect_hdr = if n < 126 {
                        2
                    } else if n <= 65_535 {
                        4
                    } else {
                        10
                    };
                    assert_eq!(header.header_len, expect_hdr);
                }
                other => panic!("n={n}: {other:?}"),
            }
        }
    }

    #[test]
    fn incomplete_at_every_split_point() {
        let payload = vec![b'y'; 70_000];
        let f = server_frame(true, OP_TEXT, &payload);
        for cut in [0usize, 1, 2, 5, 9, 10, 11, 1000, f.len() - 1] {
            match next_frame(&f[..cut], 1 << 20) {
                Ok(Next::Incomplete { need }) => {
                    assert!(need > cut, "cut={cut} need={need}");
                    assert!(need <= f.len());
                    if cut >= 10 {
                        assert_eq!(need, f.len());
                    }
                }
                other => panic!("cut={cut}: {other:?}"),
            }
        }
        let f16 = server_frame(true, OP_TEXT, &[b'z'; 200]);
        assert_eq!(
            next_frame(&f16[..3], 1 << 20),
            Ok(Next::Incomplete { need: 4 })
        );
        assert_eq!(
            next_frame(&f16[..4], 1 << 20),
            Ok(Next::Incomplete { need: 204 })
        );
    }

    #[test]
    fn rejects_protocol_violations() {
        assert_eq!(
            next_frame(&[0x81 | 0x20, 0], 100),
            Err(FrameError::ReservedBits)
        );
        assert!(
            matches!(next_frame(&[0x81 | 0x40, 0], 100), Ok(Next::Frame { header, .. }) if header.rsv1),
            "RSV1 is for proto to judge"
        );
        assert_eq!(
            next_frame(&[0x81, 0x80, 0, 0, 0, 0], 100),
            Err(FrameError::MaskedServerFrame)
        );
        assert_eq!(
            next_frame(&[0x83, 0], 100),
            Err(FrameError::UnknownOpcode(3))
        );
        assert_eq!(
            next_frame(&[0x09, 0], 100),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            next_frame(&[0x89, 126, 0, 126], 1000),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            next_frame(&[0x82, 126, 0x01, 0x00], 100),
            Err(FrameError::TooLarge(256))
        );
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            next_frame(&huge, usize::MAX),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn client_frames_round_trip_through_mask() {
        let mut rng = MaskRng::new(7);
        for n in [0usize, 1, 7, 8, 9, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            let mask = rng.mask();
            let mut out = Vec::new();
            push_client_frame(&mut out, OP_TEXT, &payload, mask);
            assert_eq!(out[0], 0x81);
            assert_eq!(out[1] & 0x80, 0x80, "mask bit");
            let (hdr, len) = match out[1] & 0x7F {
                126 => (4, u16::from_be_bytes([out[2], out[3]]) as usize),
                127 => {
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(&out[2..10]);
                    (10, u64::from_be_bytes(raw) as usize)
                }
                l => (2, l as usize),
            };
            assert_eq!(len, n);
            assert_eq!(&out[hdr..hdr + 4], &mask);
            let mut body = out[hdr + 4..].to_vec();
            apply_mask(&mut body, mask);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn mask_matches_bytewise_definition() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..37u8).collect();
        let mut fast = data.clone();
        apply_mask(&mut fast, mask);
        let slow: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(fast, slow);
    }

    #[test]
    fn close_frame_encoding() {
        let mut out = Vec::new();
        push_close(&mut out, 1000, [0, 0, 0, 0]);
        assert_eq!(out, vec![0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]);
        out.clear();
        push_close(&mut out, 1005, [0, 0, 0, 0]);
        assert_eq!(out, vec![0x88, 0x80, 0, 0, 0, 0]);
    }
}
