//! Per-connection WebSocket protocol state for a client that mostly listens.
//!
//! Owns what happens between "bytes arrived" and "a data message is
//! complete": walking every frame in a read, reassembling fragmented
//! messages (only their first [`FRAG_HEAD_CAP`] bytes, which is all the
//! measurement needs), answering pings with masked pongs, and the close
//! handshake (echo the server's close code once, then stop parsing). With
//! permessage-deflate agreed (`--deflate`), compressed messages (RSV1 on their
//! first frame) are inflated with the thread's inflater before they are handed
//! on; RSV1 anywhere else is a protocol error. It does no I/O: output frames
//! are appended to a caller-provided buffer, so the behaviour is unit-tested
//! without sockets.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use crate::deflate::{Inflate, InflateError};
use crate::frame::{self, FrameError, MaskRng, Next};

/// How many leading bytes of a fragmented message are kept.
pub const FRAG_HEAD_CAP: usize = 256;

/// A protocol violation by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// Framing error.
    Frame(FrameError),
    /// Continuation frame without a message in progress.
    UnexpectedContinuation,
    /// New data frame while a fragmented message was in progress.
    InterleavedMessage,
    /// A compressed message that does not inflate.
    Inflate(InflateError),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(e) => e.fmt(f),
            Self::UnexpectedContinuation => f.write_str("unexpected continuation frame"),
            Self::InterleavedMessage => f.write_str("data frame inside a fragmented message"),
            Self::Inflate(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ProtoError {}

impl From<FrameError> for ProtoError {
    fn from(e: FrameError) -> Self {
        Self::Frame(e)
    }
}

impl From<InflateError> for ProtoError {
    fn from(e: InflateError) -> Self {
        Self::Inflate(e)
    }
}

/// What [`Proto::process_each`] hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received<'a> {
    /// A complete data message (a fragmented one: its first [`FRAG_HEAD_CAP`] bytes).
    Message(&'a [u8]),
    /// The payload of a pong.
    Pong(&'a [u8]),
}

/// What one call to [`Proto::process`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes of the input that were fully handled.
    pub consumed: usize,
    /// If input remains: bytes needed, from `consumed`, to finish the next frame
    /// (or its header). 0 when everything was consumed.
    pub need: usize,
    /// The server sent a close frame with this code (1005 = no code); parsing
    /// stopped right after it.
    pub close: Option<u16>,
}

/// Protocol state of one connection.
#[derive(Debug)]
pub struct Proto {
    max_payload: usize,
    rng: MaskRng,
    in_fragment: bool,
    frag_head: Vec<u8>,
    close_sent: bool,
    /// permessage-deflate was agreed: the worker thread's inflater.
    inflate: Option<Rc<RefCell<Inflate>>>,
    /// The fragmented message in progress is compressed: its compressed bytes
    /// so far (inflated as a whole at its last frame).
    frag_compressed: Option<Vec<u8>>,
    /// Compressed messages since the last [`Proto::take_compressed`].
    compressed: u64,
}

impl Proto {
    /// New state; `seed` seeds the masking keys, `max_payload` bounds frames.
    pub fn new(seed: u64, max_payload: usize) -> Self {
        Self {
            max_payload,
            rng: MaskRng::new(seed),
            in_fragment: false,
            frag_head: Vec::new(),
            close_sent: false,
            inflate: None,
            frag_compressed: None,
            compressed: 0,
        }
    }

    /// The same, on a connection that agreed to permessage-deflate: compressed
    /// messages are inflated with `inflate` (the thread's).
    pub fn with_inflate(mut self, inflate: Rc<RefCell<Inflate>>) -> Self {
        self.inflate = Some(inflate);
        self
    }

    /// Compressed messages received since the last call.
    pub fn take_compressed(&mut self) -> u64 {
        std::mem::take(&mut self.compressed)
    }

    /// Whether we already sent a close frame.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Appends our close frame (once) and remembers that we did.
    pub fn start_close(&mut self, out: &mut Vec<u8>, code: u16) {
        if !self.close_sent {
            frame::push_close(out, code, self.rng.mask());
            self.close_sent = true;
        }
    }

    /// Records that a close frame was sent by someone else holding the socket.
    pub fn mark_close_sent(&mut self) {
        self.close_sent = true;
    }

    /// A masking key for a data frame sent on this connection.
    pub fn mask(&mut self) -> [u8; 4] {
        self.rng.mask()
    }

    /// Handles every complete frame in `data`: complete data messages go to
    /// `on_message`, replies (pong, close) are appended to `out`.
    pub fn process<F: FnMut(&[u8])>(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        mut on_message: F,
    ) -> Result<Outcome, ProtoError> {
        self.process_each(data, out, |r| {
            if let Received::Message(m) = r {
                on_message(m);
            }
        })
    }

    /// [`Proto::process`], handing over the pongs the server sends as well (a client
    /// that pings wants to know which pings were answered).
    pub fn process_each<F: FnMut(Received<'_>)>(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        mut on: F,
    ) -> Result<Outcome, ProtoError> {
        let mut pos = 0;
        while pos < data.len() {
            let (header, payload, len) = match frame::next_frame(&data[pos..], self.max_payload)? {
                Next::Frame {
                    header,
                    payload,
                    len,
                } => (header, payload, len),
                Next::Incomplete { need } => {
                    return Ok(Outcome {
                        consumed: pos,
                        need,
                        close: None,
                    });
                }
            };
            pos += len;
            let data = matches!(header.opcode, frame::OP_TEXT | frame::OP_BINARY);
            // RFC 7692 §6.1: RSV1 only on the first frame of a data message, and only
            // with the extension agreed.
            if header.rsv1 && !(data && self.inflate.is_some()) {
                return Err(FrameError::ReservedBits.into());
            }
            match header.opcode {
                frame::OP_TEXT | frame::OP_BINARY => {
                    if self.in_fragment {
                        return Err(ProtoError::InterleavedMessage);
                    }
                    match (header.rsv1, header.fin) {
                        (true, true) => {
                            self.inflated(payload, &mut |m: &[u8]| on(Received::Message(m)))?
                        }
                        (true, false) => {
                            self.in_fragment = true;
                            self.frag_compressed = Some(payload.to_vec());
                        }
                        (false, true) => on(Received::Message(payload)),
                        (false, false) => {
                            self.in_fragment = true;
                            self.frag_head.clear();
                            self.keep_head(payload);
                        }
                    }
                }
                frame::OP_CONT => {
                    if !self.in_fragment {
                        return Err(ProtoError::UnexpectedContinuation);
                    }
                    if let Some(mut parts) = self.frag_compressed.take() {
                        if parts.len() + payload.len() > self.max_payload {
                            return Err(
                                FrameError::TooLarge((parts.len() + payload.len()) as u64).into()
                            );
                        }
                        parts.extend_from_slice(payload);
                        if header.fin {
                            self.in_fragment = false;
                            self.inflated(&parts, &mut |m: &[u8]| on(Received::Message(m)))?;
                        } else {
                            self.frag_compressed = Some(parts);
                        }
                        continue;
                    }
                    self.keep_head(payload);
                    if header.fin {
                        self.in_fragment = false;
                        on(Received::Message(&self.frag_head));
                    }
                }
                frame::OP_PING if !self.close_sent => {
                    let mask = self.rng.mask();
                    frame::push_client_frame(out, frame::OP_PONG, payload, mask);
                }
                frame::OP_CLOSE => {
                    let code = match payload {
                        [a, b, ..] => u16::from_be_bytes([*a, *b]),
                        _ => 1005,
                    };
                    // Echo the code; codes that must not appear on the wire get an empty close.
                    let echo = match code {
                        1005 | 1006 | 1015 => 1005,
                        c => c,
                    };
                    self.start_close(out, echo);
                    return Ok(Outcome {
                        consumed: pos,
                        need: 0,
                        close: Some(code),
                    });
                }
                frame::OP_PONG => on(Received::Pong(payload)),
                // Pings after our close; nothing else passes the frame parser.
                _ => {}
            }
        }
        Ok(Outcome {
            consumed: pos,
            need: 0,
            close: None,
        })
    }

    /// Inflates one whole compressed message and hands it on.
    fn inflated<F: FnMut(&[u8])>(
        &mut self,
        compressed: &[u8],
        on_message: &mut F,
    ) -> Result<(), ProtoError> {
        let Some(inflate) = &self.inflate else {
            return Err(FrameError::ReservedBits.into());
        };
        self.compressed += 1;
        let mut inflate = inflate.borrow_mut();
        on_message(inflate.message(compressed)?);
        Ok(())
    }

    fn keep_head(&mut self, payload: &[u8]) {
        let room = FRAG_HEAD_CAP.saturating_sub(self.frag_head.len());
        let take = room.min(payload.len());
        self.frag_head.extend_from_slice(&payload[..take]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, apply_mask};

    use crate::frame::server_frame as sframe;

    /// Decodes client frames (masked, short) written to `out`.
    fn client_frames(mut out: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        while !out.is_empty() {
            let op = out[0] & 0x0F;
            assert_eq!(out[1] & 0x80, 0x80, "client frames are masked");
            let len = (out[1] & 0x7F) as usize;
            assert!(len < 126);
            let mut mask = [0u8; 4];
            mask.copy_from_slice(&out[2..6]);
            let mut p = out[6..6 + len].to_vec();
            apply_mask(&mut p, mask);
            v.push((op, p));
            out = &out[6 + len..];
        }
        v
    }

    /// Feeds `stream` in pieces of `chunk` bytes, carrying leftovers like the reader does.
    fn feed(stream: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Vec<u8>, Option<u16>) {
        let mut proto = Proto::new(1, 1 << 20);
        let mut out = Vec::new();
        let mut msgs = Vec::new();
        let mut carry: Vec<u8> = Vec::new();
        for piece in stream.chunks(chunk) {
            carry.extend_from_slice(piece);
            let o = proto
                .process(&carry, &mut out, |m| msgs.push(m.to_vec()))
                .expect("valid stream");
            carry.drain(..o.consumed);
            if o.close.is_some() {
                return (msgs, out, o.close);
            }
            if carry.is_empty() {
                assert_eq!(o.need, 0);
            } else {
                assert!(o.need > carry.len());
            }
        }
        assert!(carry.is_empty(), "left over: {}", carry.len());
        (msgs, out, None)
    }

    #[test]
    fn frames_split_across_reads_at_every_size() {
        let mut stream = Vec::new();
        let mut expect = Vec::new();
        for (i, n) in [1usize, 64, 125, 126, 300, 65_535, 65_536, 70_000]
            .into_iter()
            .enumerate()
        {
            let p = vec![b'a' + i as u8; n];
            stream.extend(sframe(
                true,
                if i % 2 == 0 { OP_TEXT } else { OP_BINARY },
                &p,
            ));
            expect.push(p);
        }
        for chunk in [1usize, 2, 3, 7, 64, 1000, 4096, 65_536, 1 << 20] {
            let (msgs, out, close) = feed(&stream, chunk);
            assert_eq!(msgs, expect, "chunk={chunk}");
            assert!(out.is_empty());
            assert_eq!(close, None);
        }
    }

    #[test]
    fn ping_gets_masked_pong_between_messages() {
        let mut stream = sframe(true, OP_TEXT, b"one");
        stream.extend(sframe(true, OP_PING, b"are you there"));
        stream.extend(sframe(true, OP_PONG, b"unsolicited"));
        stream.extend(sframe(true, OP_TEXT, b"two"));
        stream.extend(sframe(true, OP_PING, b""));
        for chunk in [1usize, 5, 1000] {
            let (msgs, out, _) = feed(&stream, chunk);
            assert_eq!(msgs, vec![b"one".to_vec(), b"two".to_vec()]);
            assert_eq!(
                client_frames(&out),
                vec![(OP_PONG, b"are you there".to_vec()), (OP_PONG, Vec::new())]
            );
        }
    }

    #[test]
    fn pongs_are_handed_over_when_asked_for() {
        let mut stream = sframe(true, OP_PONG, b"mark:1");
        stream.extend(sframe(true, OP_TEXT, b"m"));
        stream.extend(sframe(true, OP_PONG, b""));
        let mut p = Proto::new(1, 100);
        let mut got = Vec::new();
        let o = p
            .process_each(&stream, &mut Vec::new(), |r| {
                got.push(match r {
                    Received::Message(m) => (true, m.to_vec()),
                    Received::Pong(q) => (false, q.to_vec()),
                })
            })
            .expect("valid");
        assert_eq!(o.consumed, stream.len());
        let want = [(false, &b"mark:1"[..]), (true, b"m"), (false, b"")];
        assert_eq!(got, want.map(|(m, p)| (m, p.to_vec())));
    }

    #[test]
    fn fragmented_message_with_interleaved_ping() {
        let mut stream = sframe(false, OP_TEXT, b"hel");
        stream.extend(sframe(true, OP_PING, b"x"));
        stream.extend(sframe(false, OP_CONT, b"lo "));
        stream.extend(sframe(true, OP_CONT, b"world"));
        stream.extend(sframe(true, OP_TEXT, b"next"));
        let (msgs, out, _) = feed(&stream, 3);
        assert_eq!(msgs, vec![b"hello world".to_vec(), b"next".to_vec()]);
        assert_eq!(client_frames(&out), vec![(OP_PONG, b"x".to_vec())]);
    }

    #[test]
    fn fragment_head_is_capped() {
        let mut stream = sframe(false, OP_BINARY, &[b'x'; 200]);
        stream.extend(sframe(true, OP_CONT, &[b'y'; 200]));
        let (msgs, _, _) = feed(&stream, 50);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].len(), FRAG_HEAD_CAP);
        assert_eq!(&msgs[0][..200], &[b'x'; 200][..]);
    }

    #[test]
    fn close_is_echoed_once_and_stops_parsing() {
        let mut stream = sframe(true, OP_TEXT, b"m");
        let mut close = 1001u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"going away");
        stream.extend(sframe(true, OP_CLOSE, &close));
        stream.extend(sframe(true, OP_TEXT, b"after close"));
        let (msgs, out, code) = feed(&stream, 4096);
        assert_eq!(msgs, vec![b"m".to_vec()]);
        assert_eq!(code, Some(1001));
        assert_eq!(
            client_frames(&out),
            vec![(OP_CLOSE, 1001u16.to_be_bytes().to_vec())]
        );

        // Empty close → 1005 reported, empty close echoed.
        let (_, out, code) = feed(&sframe(true, OP_CLOSE, b""), 10);
        assert_eq!(code, Some(1005));
        assert_eq!(client_frames(&out), vec![(OP_CLOSE, Vec::new())]);

        // We closed first: the server's reply is not answered again, pings neither.
        let mut p = Proto::new(3, 100);
        let mut out = Vec::new();
        p.start_close(&mut out, 1000);
        let before = out.len();
        let mut s = sframe(true, OP_PING, b"late");
        s.extend(sframe(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let o = p.process(&s, &mut out, |_| {}).expect("ok");
        assert_eq!(o.close, Some(1000));
        assert_eq!(out.len(), before);
    }

    /// A compressed server frame (RSV1 set; the sync-flush tail dropped).
    fn compressed_frame(fin: bool, opcode: u8, compressed: &[u8]) -> Vec<u8> {
        let mut f = sframe(fin, opcode, compressed);
        f[0] |= 0x40;
        f
    }

    #[test]
    fn compressed_messages_are_inflated_whole_or_fragmented() {
        let inflate = Rc::new(RefCell::new(Inflate::new(1 << 20)));
        let mut p = Proto::new(1, 1 << 20).with_inflate(inflate);
        let a = b"hc0100020000000000000100000000000012345678..........".repeat(8);
        let z = crate::deflate::compressed(&a);
        let mut s = compressed_frame(true, OP_TEXT, &z);
        s.extend(sframe(true, OP_TEXT, b"plain"));
        s.extend(compressed_frame(false, OP_BINARY, &z[..z.len() / 2]));
        s.extend(sframe(true, OP_PING, b"x"));
        s.extend(sframe(true, OP_CONT, &z[z.len() / 2..]));
        let mut out = Vec::new();
        let mut msgs = Vec::new();
        for chunk in [1usize, 7, 4096] {
            msgs.clear();
            let mut carry: Vec<u8> = Vec::new();
            for piece in s.chunks(chunk) {
                carry.extend_from_slice(piece);
                let o = p
                    .process(&carry, &mut out, |m| msgs.push(m.to_vec()))
                    .expect("valid");
                carry.drain(..o.consumed);
            }
            assert_eq!(
                msgs,
                vec![a.clone(), b"plain".to_vec(), a.clone()],
                "chunk {chunk}"
            );
            assert_eq!(p.take_compressed(), 2);
        }
    }

    #[test]
    fn rsv1_without_deflate_or_off_the_first_frame_is_an_error() {
        let z = crate::deflate::compressed(b"hello hello hello");
        let mut out = Vec::new();
        let mut plain = Proto::new(1, 1 << 20);
        assert_eq!(
            plain.process(&compressed_frame(true, OP_TEXT, &z), &mut out, |_| {}),
            Err(ProtoError::Frame(FrameError::ReservedBits))
        );
        let inflate = Rc::new(RefCell::new(Inflate::new(1 << 20)));
        for bad in [compressed_frame(true, OP_PING, b""), {
            let mut s = sframe(false, OP_TEXT, b"a");
            s.extend(compressed_frame(true, OP_CONT, b"b"));
            s
        }] {
            let mut p = Proto::new(1, 1 << 20).with_inflate(inflate.clone());
            assert_eq!(
                p.process(&bad, &mut out, |_| {}),
                Err(ProtoError::Frame(FrameError::ReservedBits))
            );
        }
        let mut p = Proto::new(1, 1 << 20).with_inflate(inflate);
        assert_eq!(
            p.process(
                &compressed_frame(true, OP_TEXT, &[0xff, 0xff]),
                &mut out,
                |_| {}
            ),
            Err(ProtoError::Inflate(InflateError::Corrupt))
        );
    }

    #[test]
    fn protocol_errors() {
        let mut p = Proto::new(1, 100);
        let mut out = Vec::new();
        assert_eq!(
            p.process(&sframe(true, OP_CONT, b"x"), &mut out, |_| {}),
            Err(ProtoError::UnexpectedContinuation)
        );
        let mut p = Proto::new(1, 100);
        let mut s = sframe(false, OP_TEXT, b"a");
        s.extend(sframe(true, OP_TEXT, b"b"));
        assert_eq!(
            p.process(&s, &mut out, |_| {}),
            Err(ProtoError::InterleavedMessage)
        );
        let mut p = Proto::new(1, 10);
        assert!(matches!(
            p.process(&sframe(true, OP_TEXT, &[0; 11]), &mut out, |_| {}),
            Err(ProtoError::Frame(FrameError::TooLarge(11)))
        ));
    }
}
