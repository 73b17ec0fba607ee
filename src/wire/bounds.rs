//! Frame bounds: where each client frame ends in the byte stream, and whether it is masked.
//!
//! The reader hands bytes to fastwebsockets' parser and needs to know, exactly, when
//! every byte handed over belongs to frames already complete — only then can it drop the
//! parser and its buffer while the client is idle. Computing a frame's length from the
//! frame the parser returns is not exact (it cannot see the header the client actually
//! sent), so this follows the stream itself: it reads each header as the bytes go by,
//! split at any point, and skips the payload.
//!
//! It is also where an unmasked client frame is caught. RFC 6455 §5.1: a server must
//! close the connection when a client frame is not masked; fastwebsockets does not check.
//!
//! And it is where permessage-deflate's RSV1 bit is taken off compressed frames before
//! the parser sees them: fastwebsockets refuses every reserved bit, and it checks the
//! UTF-8 of a text frame that is in fact compressed. On a connection that negotiated
//! the extension, the first frame of a compressed message has its RSV1 cleared and its
//! opcode turned into binary in place, and the bounds remember, in order, which
//! messages were compressed and whether they were text ([`FrameBounds::message_start`]).
//! RSV1 anywhere else is refused here, and without the extension the parser refuses it.

use std::collections::VecDeque;

use crate::wire::deflate::RSV1;
use crate::wire::frame::Opcode;

/// A frame the stream must not go past, starting `at` bytes into the chunk fed (0 when
/// its header began in an earlier chunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BoundsError {
    /// Offset of the frame's first byte in the chunk passed to [`FrameBounds::feed`].
    pub(crate) at: usize,
    /// What is wrong with it.
    pub(crate) kind: Broken,
}

/// What makes a frame's header unacceptable before its payload is even read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    /// No mask bit (RFC 6455 §5.1: the server must close the connection).
    Unmasked,
    /// A control frame with more than 125 bytes of payload (RFC 6455 §5.5); fastwebsockets
    /// checks this for pings only.
    ControlTooLong,
    /// RSV1 on a continuation or control frame of a permessage-deflate connection
    /// (RFC 7692 §6.1: only the first frame of a data message may carry it).
    Rsv1NotFirst,
}

/// Follows frame boundaries through a client's byte stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct FrameBounds {
    /// Header bytes of the current frame seen so far (a header is at most 14 bytes).
    head: [u8; 14],
    head_len: usize,
    /// Payload bytes of the current frame still to come, once its header is complete.
    payload_left: u64,
    /// The header is complete and the payload is being skipped.
    in_payload: bool,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    /// Message starts (text or binary frames) seen in the stream so far.
    starts_seen: u64,
    /// Message starts the parser has returned so far ([`FrameBounds::message_start`]).
    starts_read: u64,
    /// Of the message starts seen, the compressed ones (by number) and their opcode.
    compressed: VecDeque<(u64, Opcode)>,
}

impl FrameBounds {
    /// Bounds for a connection that negotiated permessage-deflate (`deflate`) or not.
    pub(crate) fn new(deflate: bool) -> Self {
        FrameBounds {
            deflate,
            ..FrameBounds::default()
        }
    }

    /// The parser returned the next text or binary frame: whether it starts a compressed
    /// message, and then the message's real opcode (the frame itself was turned into a
    /// binary one).
    pub(crate) fn message_start(&mut self) -> Option<Opcode> {
        let n = self.starts_read;
        self.starts_read += 1;
        match self.compressed.front() {
            Some(&(at, opcode)) if at == n => {
                self.compressed.pop_front();
                Some(opcode)
            }
            _ => None,
        }
    }

    /// Whether every byte fed so far belongs to complete frames.
    pub(crate) fn at_boundary(&self) -> bool {
        self.head_len == 0 && !self.in_payload
    }

    /// Follows `chunk`, the next bytes of the stream, taking RSV1 off compressed frames
    /// in place. On a frame that must not be parsed, returns where it starts: the bytes
    /// before it are complete, valid-so-far frames.
    pub(crate) fn feed(&mut self, chunk: &mut [u8]) -> Result<(), BoundsError> {
        let mut i = 0;
        while i < chunk.len() {
            if self.in_payload {
                let left = chunk.len() - i;
                let skip = usize::try_from(self.payload_left).map_or(left, |p| p.min(left));
                i += skip;
                self.payload_left -= skip as u64;
                if self.payload_left == 0 {
                    self.in_payload = false;
                }
                continue;
            }
            let start = i - self.head_len.min(i);
            if self.head_len == 0 {
                self.first_byte(&mut chunk[i])
                    .map_err(|kind| BoundsError { at: i, kind })?;
            }
            self.head[self.head_len] = chunk[i];
            self.head_len += 1;
            i += 1;
            if self.head_len == 2 && self.head[1] & 0x80 == 0 {
                // `start` is exact when the header began in this chunk; a header split
                // across chunks reports 0 (its first bytes were handed over already).
                return Err(BoundsError {
                    at: start,
                    kind: Broken::Unmasked,
                });
            }
            if let Some(len) = self.header_complete() {
                if self.head[0] & 0x08 != 0 && len > 125 {
                    return Err(BoundsError {
                        at: start,
                        kind: Broken::ControlTooLong,
                    });
                }
                self.head_len = 0;
                self.payload_left = len;
                self.in_payload = len > 0;
            }
        }
        Ok(())
    }

    /// A frame's first byte (FIN, RSV, opcode): counts message starts and takes RSV1
    /// off the first frame of a compressed message.
    fn first_byte(&mut self, b: &mut u8) -> Result<(), Broken> {
        let opcode = match *b & 0x0f {
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            _ => None,
        };
        if self.deflate && *b & RSV1 != 0 {
            let Some(opcode) = opcode else {
                return Err(Broken::Rsv1NotFirst);
            };
            self.compressed.push_back((self.starts_seen, opcode));
            // Binary, so that the parser does not check compressed bytes as UTF-8.
            *b = (*b & !RSV1 & 0xf0) | Opcode::Binary as u8;
        }
        if opcode.is_some() {
            self.starts_seen += 1;
        }
        Ok(())
    }

    /// The payload length, once the header (with its mask key) is complete.
    fn header_complete(&self) -> Option<u64> {
        if self.head_len < 2 {
            return None;
        }
        let (ext, len7) = match self.head[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        if self.head_len < 2 + ext + 4 {
            return None;
        }
        Some(len7.unwrap_or_else(|| {
            self.head[2..2 + ext]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame (mask key 0: the bounds do not care about the key).
    fn frame(opcode: u8, fin: bool, len: usize, long_form: Option<u8>) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        match long_form {
            Some(126) => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            Some(_) => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
            None if len < 126 => f.push(0x80 | len as u8),
            None if len <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            None => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend((0..len).map(|i| i as u8));
        f
    }

    /// Valid streams: every length class, control frames, fragments, and the
    /// non-shortest length encodings a client may legally send.
    fn streams() -> Vec<(Vec<u8>, Vec<usize>)> {
        let frames = [
            frame(0x9, true, 0, None),
            frame(0x1, true, 5, None),
            frame(0x1, false, 125, None),
            frame(0x0, true, 126, None),
            frame(0x2, true, 300, Some(127)),
            frame(0xA, true, 125, None),
            frame(0x2, true, 65536, None),
            frame(0x1, true, 3, Some(126)),
            frame(0x8, true, 2, None),
        ];
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for f in &frames {
            stream.extend_from_slice(f);
            ends.push(stream.len());
        }
        vec![(stream, ends)]
    }

    #[test]
    fn every_split_of_a_valid_stream_keeps_exact_bounds() {
        for (mut stream, ends) in streams() {
            // One split point, at every byte: the boundary state after the first part
            // must be exactly "the split falls on a frame end".
            for split in 0..=stream.len() {
                let mut b = FrameBounds::default();
                b.feed(&mut stream[..split]).expect("valid");
                assert_eq!(
                    b.at_boundary(),
                    split == 0 || ends.contains(&split),
                    "split at {split}"
                );
                b.feed(&mut stream[split..]).expect("valid");
                assert!(b.at_boundary(), "whole stream, split at {split}");
            }
            // Byte by byte: a boundary after exactly the frame ends.
            let mut b = FrameBounds::default();
            for i in 0..stream.len() {
                b.feed(&mut stream[i..=i]).expect("valid");
                assert_eq!(b.at_boundary(), ends.contains(&(i + 1)), "byte {i}");
            }
        }
    }

    #[test]
    fn an_unmasked_frame_is_caught_where_it_starts() {
        let mut stream = frame(0x1, true, 10, None);
        let good = stream.len();
        stream.extend_from_slice(&[0x81, 0x03, b'a', b'b', b'c']);
        let mut b = FrameBounds::default();
        let unmasked = |at| {
            Err(BoundsError {
                at,
                kind: Broken::Unmasked,
            })
        };
        assert_eq!(b.feed(&mut stream), unmasked(good));
        // Split right after its first byte: the second byte gives it away.
        let mut b = FrameBounds::default();
        b.feed(&mut stream[..good + 1]).expect("not yet known");
        assert_eq!(b.feed(&mut stream[good + 1..]), unmasked(0));
    }

    #[test]
    fn a_control_frame_over_125_bytes_is_caught() {
        for opcode in [0x8, 0x9, 0xA] {
            let mut stream = frame(0x2, true, 3, None);
            let good = stream.len();
            stream.extend(frame(opcode, true, 126, None));
            let err = FrameBounds::default().feed(&mut stream);
            assert_eq!(
                err,
                Err(BoundsError {
                    at: good,
                    kind: Broken::ControlTooLong
                })
            );
        }
        let mut ok = FrameBounds::default();
        ok.feed(&mut frame(0xA, true, 125, None))
            .expect("125 is fine");
        assert!(ok.at_boundary());
    }

    /// Property: any bytes, split at any points, are followed exactly as a plain
    /// sequential reading of the stream says — the same boundaries after every chunk,
    /// the same first broken frame, reported by the chunk that gives it away, at the
    /// offset the contract of [`BoundsError::at`] promises — and nothing panics.
    mod split_property {
        use proptest::prelude::*;

        use super::super::*;

        /// What a reader of the whole stream finds: the first broken frame (where it
        /// starts, what is wrong, and the index of the byte that shows it), or whether
        /// the stream ends on a frame boundary.
        #[derive(Debug, PartialEq)]
        enum Reading {
            Broken {
                start: usize,
                kind: Broken,
                seen_at: usize,
            },
            Ends {
                on_boundary: bool,
            },
        }

        fn read_whole(s: &[u8]) -> Reading {
            let mut pos = 0;
            loop {
                let rest = &s[pos..];
                if rest.is_empty() {
                    return Reading::Ends { on_boundary: true };
                }
                if rest.len() < 2 {
                    return Reading::Ends { on_boundary: false };
                }
                if rest[1] & 0x80 == 0 {
                    let (start, seen_at) = (pos, pos + 1);
                    let kind = Broken::Unmasked;
                    return Reading::Broken {
                        start,
                        kind,
                        seen_at,
                    };
                }
                let ext = match rest[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let head = 2 + ext + 4;
                if rest.len() < head {
                    return Reading::Ends { on_boundary: false };
                }
                let len = match ext {
                    0 => u64::from(rest[1] & 0x7f),
                    _ => rest[2..2 + ext]
                        .iter()
                        .fold(0, |n, &b| n * 256 + u64::from(b)),
                };
                let control = rest[0] & 0x0f >= 8;
                if control && len > 125 {
                    let (start, seen_at) = (pos, pos + head - 1);
                    let kind = Broken::ControlTooLong;
                    return Reading::Broken {
                        start,
                        kind,
                        seen_at,
                    };
                }
                match u64::try_from(rest.len() - head) {
                    Ok(have) if have >= len => pos += head + len as usize,
                    _ => return Reading::Ends { on_boundary: false },
                }
            }
        }

        /// One frame, mostly masked and mostly well formed: any first byte, any of the
        /// three length forms (the long ones also for short payloads), payload bytes
        /// as declared, or fewer when it is the last one.
        fn frame() -> impl Strategy<Value = Vec<u8>> {
            (
                any::<u8>(),
                prop::bool::weighted(0.9),
                0u8..3,
                0usize..300,
                any::<[u8; 4]>(),
            )
                .prop_map(|(b0, masked, form, len, key)| {
                    let mut f = vec![b0];
                    let mask = if masked { 0x80 } else { 0 };
                    match (form, len) {
                        (0, 0..=125) => f.push(mask | len as u8),
                        (0 | 1, _) => {
                            f.push(mask | 126);
                            f.extend_from_slice(&(len as u16).to_be_bytes());
                        }
                        _ => {
                            f.push(mask | 127);
                            f.extend_from_slice(&(len as u64).to_be_bytes());
                        }
                    }
                    if masked {
                        f.extend_from_slice(&key);
                    }
                    f.extend((0..len).map(|i| i as u8));
                    f
                })
        }

        fn stream() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                1 => prop::collection::vec(any::<u8>(), 0..64),
                4 => (prop::collection::vec(frame(), 0..8), any::<prop::sample::Index>())
                    .prop_map(|(frames, cut)| {
                        let mut s = frames.concat();
                        // Cut somewhere in the last frame, or keep it whole.
                        let last = frames.last().map_or(0, Vec::len);
                        s.truncate(s.len() - last + cut.index(last + 1));
                        s
                    }),
            ]
        }

        /// Chunk ends (exclusive) splitting `len` bytes at up to 8 points.
        fn chunks(len: usize, cuts: &[prop::sample::Index]) -> Vec<(usize, usize)> {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(len + 1)).collect();
            at.push(0);
            at.push(len);
            at.sort_unstable();
            at.dedup();
            at.windows(2).map(|w| (w[0], w[1])).collect()
        }

        proptest! {
            #![proptest_config(crate::fuzzing::config(3000))]

            #[test]
            fn any_split_reads_like_the_whole_stream(
                s in stream(),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            ) {
                let whole = read_whole(&s);
                // Without deflate the bounds never change a byte; they still take it
                // mutably (with deflate they clear RSV1).
                let mut fed = s.clone();
                let mut b = FrameBounds::default();
                for (from, to) in chunks(s.len(), &cuts) {
                    match (b.feed(&mut fed[from..to]), &whole) {
                        (Ok(()), Reading::Broken { seen_at, .. }) => {
                            prop_assert!(*seen_at >= to, "passed a broken frame in {from}..{to}");
                            prop_assert_eq!(
                                b.at_boundary(),
                                read_whole(&s[..to]) == Reading::Ends { on_boundary: true }
                            );
                        }
                        (Ok(()), Reading::Ends { .. }) => {
                            let prefix = read_whole(&s[..to]);
                            prop_assert_eq!(prefix, Reading::Ends { on_boundary: b.at_boundary() });
                        }
                        (Err(e), Reading::Broken { start, kind, seen_at }) => {
                            prop_assert!((from..to).contains(seen_at), "{e:?} in {from}..{to}");
                            prop_assert_eq!(e.kind, *kind);
                            prop_assert_eq!(e.at, start.saturating_sub(from));
                            return Ok(());
                        }
                        (Err(e), Reading::Ends { .. }) => {
                            prop_assert!(false, "{e:?} in a stream without a broken frame");
                        }
                    }
                }
                prop_assert!(!matches!(whole, Reading::Broken { .. }), "never reported");
            }
        }
    }

    /// `frame` with RSV1 set.
    fn compressed(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
        let mut f = frame(opcode, fin, len, None);
        f[0] |= RSV1;
        f
    }

    #[test]
    fn compressed_messages_lose_rsv1_and_are_remembered_in_order() {
        // Compressed text, plain binary, a ping, compressed binary in two fragments,
        // plain text, compressed text with a 16-bit length.
        let parts = [
            compressed(0x1, true, 5),
            frame(0x2, true, 4, None),
            frame(0x9, true, 0, None),
            compressed(0x2, false, 3),
            frame(0x0, true, 3, None),
            frame(0x1, true, 2, None),
            compressed(0x1, true, 300),
        ];
        let firsts = [0x82, 0x82, 0x89, 0x02, 0x80, 0x81, 0x82];
        let starts = [
            Some(Opcode::Text),
            None,
            Some(Opcode::Binary),
            None,
            Some(Opcode::Text),
        ];
        let stream: Vec<u8> = parts.concat();
        for split in 0..=stream.len() {
            let mut s = stream.clone();
            let mut b = FrameBounds::new(true);
            b.feed(&mut s[..split]).expect("valid");
            b.feed(&mut s[split..]).expect("valid");
            assert!(b.at_boundary());
            let mut at = 0;
            for (part, first) in parts.iter().zip(firsts) {
                assert_eq!(s[at], first, "split {split}, frame at {at}");
                assert_eq!(s[at + 1..at + part.len()], part[1..], "only byte 0 changes");
                at += part.len();
            }
            let got: Vec<_> = (0..starts.len()).map(|_| b.message_start()).collect();
            assert_eq!(got, starts, "split {split}");
            assert_eq!(b.message_start(), None, "nothing beyond");
        }
    }

    #[test]
    fn rsv1_elsewhere_is_caught_and_without_deflate_left_to_the_parser() {
        for bad in [
            compressed(0x0, true, 3),
            compressed(0x9, true, 1),
            compressed(0x8, true, 2),
        ] {
            let mut stream = compressed(0x1, false, 3);
            let good = stream.len();
            stream.extend(&bad);
            let mut b = FrameBounds::new(true);
            assert_eq!(
                b.feed(&mut stream),
                Err(BoundsError {
                    at: good,
                    kind: Broken::Rsv1NotFirst
                }),
                "{:#x}",
                bad[0]
            );
        }
        // Not negotiated: nothing is rewritten or remembered (the parser refuses RSV1).
        let mut stream = compressed(0x1, true, 3);
        let before = stream.clone();
        let mut b = FrameBounds::new(false);
        b.feed(&mut stream).expect("not the bounds' business");
        assert_eq!(stream, before);
        assert_eq!(b.message_start(), None);
    }
}
