//! permessage-deflate (RFC 7692) on the subscriber side, for `--deflate`.
//!
//! Owns the offer, the check of the server's answer and the inflating of compressed
//! messages. The offer asks for `server_no_context_takeover`, which a server accepting
//! it must grant: every message it sends is then compressed from an empty window and
//! stands alone, so one inflater per worker thread serves all of the thread's
//! connections — the load generator keeps no 32 KiB window per connection. It is not
//! even reset between messages (a reset clears the 32 KiB window, which cost more than
//! inflating a 1 KiB message): each message is whole DEFLATE blocks ending in a sync
//! flush, so it leaves the inflater at a block boundary, and it never refers back past
//! its own start, so whatever the window holds from other messages is never read. Only
//! a stream that ends (a block with BFINAL set) or an error resets it. Subscribers never send data messages, so nothing is compressed on this
//! side. No I/O here: `proto` calls [`Inflate::message`] for every compressed message.

use std::fmt;

use flate2::{Decompress, FlushDecompress, Status};

/// What subscribers offer in `Sec-WebSocket-Extensions`.
pub const OFFER: &str = "permessage-deflate; server_no_context_takeover";

/// What a sync flush ends with; the sender drops it, the receiver appends it.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Checks the server's `Sec-WebSocket-Extensions` answer to [`OFFER`]: exactly
/// permessage-deflate, with `server_no_context_takeover`. `Err` says what is wrong.
pub fn check_answer(value: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(value).map_err(|_| "answer is not UTF-8".to_string())?;
    let mut parts = text.split(';').map(str::trim);
    let name = parts.next().unwrap_or_default();
    if !name.eq_ignore_ascii_case("permessage-deflate") || text.contains(',') {
        return Err(format!("answered {text:?}, not one permessage-deflate"));
    }
    let mut no_takeover = false;
    for p in parts {
        let key = p.split('=').next().unwrap_or_default().trim();
        match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => no_takeover = true,
            // Harmless to us: we never compress, and a smaller server window is fine.
            "client_no_context_takeover" | "server_max_window_bits" => {}
            // RFC 7692 §7.1.2.2: not to be answered when not offered.
            _ => return Err(format!("answered with {p:?}, which was not offered")),
        }
    }
    if no_takeover {
        Ok(())
    } else {
        Err(format!(
            "answered {text:?} without server_no_context_takeover"
        ))
    }
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// Not valid DEFLATE data.
    Corrupt,
    /// Inflates to more than the frame limit.
    TooLarge,
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Corrupt => "invalid compressed message",
            Self::TooLarge => "compressed message inflates beyond --max-frame",
        })
    }
}

/// One worker thread's inflater and output buffer.
pub struct Inflate {
    decompress: Decompress,
    /// Output, initialised once: flate2 zero-fills the spare capacity of a `Vec` on
    /// every `decompress_vec` call (its miniz_oxide backend takes initialised slices),
    /// which for a 64 KiB buffer cost more than inflating a 1 KiB message.
    buf: Vec<u8>,
    /// Bytes of `buf` holding the current message.
    filled: usize,
    limit: usize,
}

impl fmt::Debug for Inflate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflate")
            .field("limit", &self.limit)
            .finish()
    }
}

impl Inflate {
    /// An inflater whose messages may be at most `limit` bytes once inflated.
    pub fn new(limit: usize) -> Self {
        Self {
            decompress: Decompress::new(false),
            buf: vec![0; 64 << 10],
            filled: 0,
            limit,
        }
    }

    /// Inflates one whole compressed message (the `00 00 ff ff` tail dropped by the
    /// sender); the result lives until the next call.
    pub fn message(&mut self, compressed: &[u8]) -> Result<&[u8], InflateError> {
        self.filled = 0;
        let mut ended = false;
        for input in [compressed, &TAIL[..]] {
            match self.feed(input) {
                Ok(end) => ended |= end,
                Err(e) => {
                    self.decompress.reset(false);
                    return Err(e);
                }
            }
        }
        if ended {
            self.decompress.reset(false);
        }
        Ok(&self.buf[..self.filled])
    }

    /// Inflates `input` behind what the message has so far; `Ok(true)` when the
    /// DEFLATE stream ended.
    fn feed(&mut self, mut input: &[u8]) -> Result<bool, InflateError> {
        loop {
            if self.filled > self.limit {
                return Err(InflateError::TooLarge);
            }
            if self.filled == self.buf.len() {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
            let (before_in, before_out) = (self.decompress.total_in(), self.decompress.total_out());
            let status = self
                .decompress
                .decompress(input, &mut self.buf[self.filled..], FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let used = usize::try_from(self.decompress.total_in() - before_in)
                .map_err(|_| InflateError::Corrupt)?;
            let produced = usize::try_from(self.decompress.total_out() - before_out)
                .map_err(|_| InflateError::Corrupt)?;
            input = &input[used.min(input.len())..];
            self.filled += produced;
            if status == Status::StreamEnd {
                return self.checked(true);
            }
            // Done once the input is used up and the output was not full (the
            // decompressor may hold output back only when it ran out of room).
            if self.filled < self.buf.len() && (input.is_empty() || used + produced == 0) {
                if input.is_empty() {
                    return self.checked(false);
                }
                return Err(InflateError::Corrupt);
            }
        }
    }

    fn checked(&self, ended: bool) -> Result<bool, InflateError> {
        if self.filled > self.limit {
            return Err(InflateError::TooLarge);
        }
        Ok(ended)
    }
}

/// `data` compressed as a server without context takeover sends it (a sync flush, the
/// tail dropped): for tests of this module and of `proto`.
#[cfg(test)]
pub(crate) fn compressed(data: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("compress");
    out.truncate(out.len() - TAIL.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    #[test]
    fn answers_are_checked() {
        for ok in [
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate;server_no_context_takeover;client_no_context_takeover",
            "PerMessage-Deflate; Server_No_Context_Takeover; server_max_window_bits=15",
        ] {
            assert_eq!(check_answer(ok.as_bytes()), Ok(()), "{ok}");
        }
        for bad in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits=15; server_no_context_takeover",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_no_context_takeover, permessage-deflate",
        ] {
            assert!(check_answer(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_inflate_one_by_one_with_one_inflater() {
        let mut inf = Inflate::new(1 << 20);
        let a = br#"{"stamp":"hc00000100000000002a","pad":"................"}"#.repeat(30);
        let b = vec![b'x'; 100_000];
        for data in [&a[..], &b[..], &a[..]] {
            assert_eq!(inf.message(&compressed(data)).expect("inflates"), data);
        }
        assert_eq!(inf.message(&[0xff, 0xff]), Err(InflateError::Corrupt));
        // After an error, and after a stream that ended (BFINAL), the next message is fine.
        assert_eq!(inf.message(&compressed(&a)).expect("inflates"), &a[..]);
        let mut c = Compress::new(Compression::fast(), false);
        let mut last = Vec::with_capacity(a.len() + 64);
        c.compress_vec(&a, &mut last, FlushCompress::Finish)
            .expect("compress");
        assert_eq!(inf.message(&last).expect("final block"), &a[..]);
        assert_eq!(inf.message(&compressed(&b)).expect("after it"), &b[..]);
        let mut small = Inflate::new(1000);
        assert_eq!(small.message(&compressed(&b)), Err(InflateError::TooLarge));
        assert_eq!(
            small.message(&compressed(&a[..900])).map(<[u8]>::len),
            Ok(900)
        );
    }
}
