//! permessage-deflate (RFC 7692) in bytes: compress a message once for every client,
//! inflate what one client sends.
//!
//! **Compressing.** hubcast always negotiates `server_no_context_takeover`, so each
//! compressed message starts from an empty window and owes nothing to the messages
//! before it: the same compressed frame is valid for every client that negotiated the
//! extension, whatever it received earlier. [`Deflater::frame`] builds that frame —
//! header with RSV1 set, then the raw DEFLATE data of the whole message, flushed with a
//! sync flush and without the trailing `00 00 ff ff` (RFC 7692 §7.2.1) — in one buffer,
//! to be shared exactly like a plain frame. A message that does not get smaller is not
//! compressed at all (RFC 7692 lets every message choose). Publishing threads each keep
//! one compressor ([`deflated_frame`]), reset per message: no lock, no allocation of
//! compressor state per message.
//!
//! **Inflating.** Clients may compress with context takeover (each message may refer to
//! the ones before), so inflating needs a window per client. [`Inflater`] is that state;
//! it is only created for a client that actually sends a compressed message, and it
//! stops with [`InflateError::TooBig`] as soon as the inflated message passes the size
//! limit — a deflate bomb costs at most the limit, never the bomb's size.
//!
//! Nothing here knows about clients, shards or sockets.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::wire::frame::{MAX_HEADER, Opcode, write_header};

/// The RSV1 bit of a frame's first byte: set on the first frame of a compressed message.
pub const RSV1: u8 = 0x40;

/// What a sync flush ends with, and what the sender drops and the receiver appends
/// (RFC 7692 §7.2.1, §7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Compression level. Level 1 is miniz_oxide's fast path (greedy matching with one
/// probe): on JSON it keeps most of level 6's savings at a fraction of its cost, and
/// the cost is paid once per message — measured in `benches/encode.rs`.
const LEVEL: u32 = 1;

/// Why a client's compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The inflated message is larger than the limit (close 1009).
    #[error("inflated message too big")]
    TooBig,
    /// The data is not valid DEFLATE (close 1007).
    #[error("invalid compressed data")]
    Corrupt,
}

/// A compressor for `server_no_context_takeover` messages (see the module docs).
#[derive(Debug)]
pub struct Deflater {
    compress: Compress,
    /// Something was compressed since the last reset.
    used: bool,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflater {
    /// A compressor producing raw DEFLATE data (no zlib header), as RFC 7692 wants.
    pub fn new() -> Self {
        Deflater {
            compress: Compress::new(Compression::new(LEVEL), false),
            used: false,
        }
    }

    /// The complete compressed server frame of one message — FIN and RSV1 set, the
    /// payload compressed from an empty window — or `None` when compressing does not make
    /// the payload smaller (the message then goes out uncompressed).
    ///
    /// ```
    /// use hubcast::wire::deflate::{Deflater, Inflater};
    /// use hubcast::wire::frame::{payload_of, Opcode};
    /// let json = br#"{"price":1.0842,"symbol":"EURUSD"}"#.repeat(20);
    /// let frame = Deflater::new().frame(Opcode::Text, &json).expect("JSON compresses");
    /// assert_eq!(frame[0], 0x80 | 0x40 | 0x1); // FIN, RSV1, text
    /// let (_, compressed) = payload_of(&frame).expect("one frame");
    /// let mut out = Vec::new();
    /// Inflater::new().inflate(&compressed, true, &mut out, 1 << 20).expect("inflates");
    /// assert_eq!(out, json);
    /// ```
    pub fn frame(&mut self, opcode: Opcode, payload: &[u8]) -> Option<Bytes> {
        if self.used {
            self.compress.reset();
        }
        self.used = true;
        // Room for the longest header in front, and for exactly as much compressed data
        // (plus the tail that is dropped again) as the payload itself: anything longer
        // would not be worth sending, so it never needs a second pass.
        let mut out = Vec::with_capacity(MAX_HEADER + payload.len() + TAIL.len());
        out.resize(MAX_HEADER, 0);
        let before = self.compress.total_in();
        let status = self
            .compress
            .compress_vec(payload, &mut out, FlushCompress::Sync)
            .ok()?;
        let consumed = self.compress.total_in() - before;
        // A full buffer may hide an unfinished flush; such output is too long anyway.
        if status != Status::Ok
            || consumed != payload.len() as u64
            || out.len() == out.capacity()
            || !out.ends_with(&TAIL)
        {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        let body = out.len() - MAX_HEADER;
        if body >= payload.len() {
            return None;
        }
        let mut head = [0u8; MAX_HEADER];
        let n = write_header(opcode, body, &mut head);
        head[0] |= RSV1;
        out[MAX_HEADER - n..MAX_HEADER].copy_from_slice(&head[..n]);
        Some(Bytes::from(out).slice(MAX_HEADER - n..))
    }
}

thread_local! {
    /// One compressor per publishing thread, created on first use: compressing needs no
    /// lock, and a thread that never compresses never pays for the state (~320 KB).
    static DEFLATER: RefCell<Option<Deflater>> = const { RefCell::new(None) };
}

/// [`Deflater::frame`] with this thread's compressor.
pub fn deflated_frame(opcode: Opcode, payload: &[u8]) -> Option<Bytes> {
    DEFLATER.with(|d| {
        // A re-entrant call cannot happen (compressing calls nothing back); if it ever
        // did, the message would simply go out uncompressed.
        let mut slot = d.try_borrow_mut().ok()?;
        slot.get_or_insert_with(Deflater::new)
            .frame(opcode, payload)
    })
}

/// One client's inflate state: the LZ77 window its compressed messages may refer to.
#[derive(Debug)]
pub struct Inflater {
    decompress: Decompress,
    /// The current DEFLATE stream ended (a block with BFINAL set): the next message
    /// starts a new one.
    ended: bool,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

/// First output buffer of an inflation; it grows by doubling, up to the limit.
const FIRST_OUTPUT: usize = 4096;

impl Inflater {
    /// Heap bytes one inflater holds (the decompressor with its 32 KiB window), for the
    /// `hubcast_inflate_context_bytes` metric. Checked against the allocator in
    /// `tests/alloc_free.rs`.
    pub const MEMORY: usize = 43_296;

    /// A fresh inflater (raw DEFLATE, no zlib header).
    pub fn new() -> Self {
        Inflater {
            decompress: Decompress::new(false),
            ended: false,
        }
    }

    /// Inflates one frame's payload of a compressed message and appends it to `out`;
    /// `last` marks the message's final frame (the `00 00 ff ff` tail is appended).
    /// Fails with [`InflateError::TooBig`] once `out` would hold more than `limit`
    /// bytes, having allocated at most about that much.
    pub fn inflate(
        &mut self,
        payload: &[u8],
        last: bool,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        self.feed(payload, out, limit)?;
        if last {
            self.feed(&TAIL, out, limit)?;
            if self.ended {
                self.reset();
            }
        }
        Ok(())
    }

    /// Forgets the window: the next message is inflated from an empty one (for clients
    /// that agreed to `client_no_context_takeover`, and after an error).
    pub fn reset(&mut self) {
        self.decompress.reset(false);
        self.ended = false;
    }

    fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        // Loop while there is input, or while the last call filled the buffer (the
        // decompressor may hold more output back).
        while !self.ended && (!input.is_empty() || out.len() == out.capacity()) {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                // Never more than one byte past the limit: enough to see it was passed.
                let room =
                    (limit.saturating_add(1) - out.len()).min(out.capacity().max(FIRST_OUTPUT));
                out.reserve_exact(room);
            }
            let (in_before, out_before) = (self.decompress.total_in(), out.len());
            let status = self
                .decompress
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let used = usize::try_from(self.decompress.total_in() - in_before)
                .map_err(|_| InflateError::Corrupt)?;
            input = input.get(used..).ok_or(InflateError::Corrupt)?;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            match status {
                Status::StreamEnd => self.ended = true,
                _ if used == 0 && out.len() == out_before && out.len() < out.capacity() => {
                    if input.is_empty() {
                        break; // nothing held back after all
                    }
                    return Err(InflateError::Corrupt);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's compressor: raw DEFLATE with context takeover, sync flush per message.
    struct Client(Compress);

    impl Client {
        fn new() -> Self {
            Client(Compress::new(Compression::default(), false))
        }

        fn message(&mut self, data: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(data.len() + 64);
            self.0
                .compress_vec(data, &mut out, FlushCompress::Sync)
                .expect("compress");
            assert!(out.ends_with(&TAIL));
            out.truncate(out.len() - 4);
            out
        }
    }

    fn json(n: usize) -> Vec<u8> {
        let mut s = String::from("[");
        for i in 0..n {
            s.push_str(&format!(
                r#"{{"id":{i},"symbol":"EURUSD","bid":1.08{i:02},"ask":1.08{:02}}},"#,
                i + 1
            ));
        }
        s.push(']');
        s.into_bytes()
    }

    fn payload_of(frame: &[u8]) -> &[u8] {
        match frame[1] & 0x7f {
            126 => &frame[4..],
            127 => &frame[10..],
            _ => &frame[2..],
        }
    }

    #[test]
    fn frames_have_rsv1_the_right_length_and_inflate_back() {
        let mut d = Deflater::new();
        for n in [3, 20, 2000] {
            let data = json(n);
            let f = d.frame(Opcode::Text, &data).expect("compresses");
            assert_eq!(f[0], 0x80 | RSV1 | 0x1, "FIN + RSV1 + text");
            assert_eq!(f[1] & 0x80, 0, "never masked");
            let body = payload_of(&f);
            let len = match f[1] & 0x7f {
                126 => usize::from(u16::from_be_bytes([f[2], f[3]])),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&f[2..10]);
                    usize::try_from(u64::from_be_bytes(b)).expect("len")
                }
                n => usize::from(n),
            };
            assert_eq!(body.len(), len, "header length matches");
            assert!(!body.ends_with(&TAIL), "the tail is dropped");
            assert!(body.len() < data.len(), "smaller");
            if n >= 20 {
                assert!(body.len() * 3 < data.len(), "JSON shrinks: {}", body.len());
            }
            // A fresh inflater per frame: each frame stands alone (no context takeover).
            let mut out = Vec::new();
            Inflater::new()
                .inflate(body, true, &mut out, usize::MAX)
                .expect("inflates");
            assert_eq!(out, data);
        }
    }

    #[test]
    fn frames_do_not_depend_on_earlier_messages() {
        // The same message compressed after others is byte for byte the same frame:
        // what makes one frame valid for every client.
        let mut d = Deflater::new();
        let first = d.frame(Opcode::Binary, &json(10)).expect("compresses");
        for n in [5, 50, 500] {
            d.frame(Opcode::Text, &json(n)).expect("compresses");
        }
        assert_eq!(d.frame(Opcode::Binary, &json(10)), Some(first));
        assert_eq!(
            deflated_frame(Opcode::Binary, &json(10)),
            d.frame(Opcode::Binary, &json(10))
        );
    }

    #[test]
    fn incompressible_or_tiny_payloads_are_not_compressed() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut d = Deflater::new();
        assert_eq!(d.frame(Opcode::Binary, &noise), None);
        assert_eq!(d.frame(Opcode::Text, b"a"), None);
        assert_eq!(d.frame(Opcode::Text, b""), None);
        // …and the compressor is fine afterwards.
        assert!(d.frame(Opcode::Text, &json(10)).is_some());
    }

    #[test]
    fn context_takeover_messages_inflate_in_order() {
        let mut client = Client::new();
        let mut inflater = Inflater::new();
        for n in [10, 10, 11, 300] {
            let data = json(n);
            let wire = client.message(&data);
            let mut out = Vec::new();
            inflater
                .inflate(&wire, true, &mut out, 1 << 20)
                .expect("inflates");
            assert_eq!(out, data);
        }
        // The repeated message refers back to the first: a fresh inflater cannot read it.
        let mut client = Client::new();
        client.message(&json(10));
        let second = client.message(&json(10));
        let mut out = Vec::new();
        let fresh = Inflater::new().inflate(&second, true, &mut out, 1 << 20);
        assert!(fresh.is_err() || out != json(10));
    }

    #[test]
    fn fragments_inflate_to_the_whole_message() {
        let data = json(400);
        let wire = Client::new().message(&data);
        for pieces in [1, 2, 7, wire.len()] {
            let size = wire.len().div_ceil(pieces);
            let mut inflater = Inflater::new();
            let mut out = Vec::new();
            let chunks: Vec<&[u8]> = wire.chunks(size).collect();
            for (i, c) in chunks.iter().enumerate() {
                inflater
                    .inflate(c, i + 1 == chunks.len(), &mut out, 1 << 20)
                    .expect("inflates");
            }
            assert_eq!(out, data, "{pieces} pieces");
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 20 << 20];
        let wire = Client::new().message(&zeros);
        assert!(wire.len() < 64 << 10, "{} bytes", wire.len());
        let mut out = Vec::new();
        let r = Inflater::new().inflate(&wire, true, &mut out, 1 << 20);
        assert_eq!(r, Err(InflateError::TooBig));
        assert!(out.capacity() <= (1 << 20) + 1, "{}", out.capacity());
        // Exactly at the limit is fine.
        let mut out = Vec::new();
        let wire = Client::new().message(&zeros[..1 << 20]);
        Inflater::new()
            .inflate(&wire, true, &mut out, 1 << 20)
            .expect("at the limit");
        assert_eq!(out.len(), 1 << 20);
    }

    #[test]
    fn garbage_is_corrupt() {
        let mut out = Vec::new();
        // Block type 3 is reserved: invalid from the first byte.
        let r = Inflater::new().inflate(&[0xff, 0xff, 0xff], true, &mut out, 1 << 20);
        assert_eq!(r, Err(InflateError::Corrupt));
    }

    #[test]
    fn a_final_block_ends_the_stream_and_the_next_message_starts_afresh() {
        // A client may end a message with BFINAL set (RFC 7692 §7.2.3.3).
        let mut c = Compress::new(Compression::default(), false);
        let mut wire = Vec::with_capacity(256);
        c.compress_vec(b"hello hello hello", &mut wire, FlushCompress::Finish)
            .expect("compress");
        let mut inflater = Inflater::new();
        for _ in 0..2 {
            let mut out = Vec::new();
            inflater
                .inflate(&wire, true, &mut out, 1 << 20)
                .expect("inflates");
            assert_eq!(out, b"hello hello hello");
        }
    }
}
