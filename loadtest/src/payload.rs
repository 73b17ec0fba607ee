//! The measurement stamp every published message carries.
//!
//! Owns the payload layout, so that sender and receiver agree on it in one
//! place. The layout is plain ASCII (lower-case hex digits) so that servers
//! which validate UTF-8, or wrap messages in a JSON envelope, pass it through
//! untouched:
//!
//! ```text
//! offset  len  field
//!      0    2  magic "hc"
//!      2    2  step index            (hex)
//!      4    4  publisher id          (hex)
//!      8   12  sequence number       (hex, per publisher, continuous over steps)
//!     20   16  send time, ns since the run's monotonic epoch (hex)
//!     36    …  padding '.' up to --size
//! ```
//!
//! The receiver first tries offset 0 and, failing that, searches for the magic
//! (servers that embed the message in an envelope still work).

/// Bytes taken by the stamp; `--size` must be at least this.
pub const STAMP_LEN: usize = 36;
/// Largest publisher id that fits the 4 hex digits.
pub const MAX_PUBLISHERS: usize = 0x1_0000;
/// Largest step index that fits the 2 hex digits.
pub const MAX_STEPS: usize = 0x100;

const MAGIC: &[u8; 2] = b"hc";
const HEX: &[u8; 16] = b"0123456789abcdef";
const PAD: u8 = b'.';

/// What a received message says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Step the message was sent in.
    pub step: u8,
    /// Publisher id.
    pub publisher: u16,
    /// Sequence number within the publisher.
    pub seq: u64,
    /// Send time, nanoseconds since the run epoch.
    pub sent_ns: u64,
}

#[inline]
fn put_hex(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut().rev() {
        *b = HEX[(v & 0xF) as usize];
        v >>= 4;
    }
}

/// Hex digit values; 0xFF marks a non-digit.
const UNHEX: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Branch-free hex decode (one table lookup per digit, one check at the end).
#[inline]
fn get_hex(src: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    let mut bad = 0u8;
    for &c in src {
        let d = UNHEX[usize::from(c)];
        bad |= d;
        v = (v << 4) | u64::from(d & 0x0F);
    }
    (bad & 0xF0 == 0).then_some(v)
}

/// Writes a full payload into `dst` (its whole length is used: stamp + padding).
///
/// `dst.len()` must be at least [`STAMP_LEN`]; callers validate `--size` once.
/// Sequence numbers wrap at 48 bits and timestamps at 64 bits, far beyond a run.
#[inline]
pub fn write(dst: &mut [u8], stamp: Stamp) {
    debug_assert!(dst.len() >= STAMP_LEN);
    let (head, pad) = dst.split_at_mut(STAMP_LEN.min(dst.len()));
    if head.len() == STAMP_LEN {
        head[0..2].copy_from_slice(MAGIC);
        put_hex(&mut head[2..4], u64::from(stamp.step));
        put_hex(&mut head[4..8], u64::from(stamp.publisher));
        put_hex(&mut head[8..20], stamp.seq);
        put_hex(&mut head[20..36], stamp.sent_ns);
    }
    pad.fill(PAD);
}

#[inline]
fn decode_at(msg: &[u8]) -> Option<Stamp> {
    let s = msg.get(..STAMP_LEN)?;
    if &s[0..2] != MAGIC {
        return None;
    }
    Some(Stamp {
        // Truncations are lossless: 2 and 4 hex digits.
        step: get_hex(&s[2..4])? as u8,
        publisher: get_hex(&s[4..8])? as u16,
        seq: get_hex(&s[8..20])?,
        sent_ns: get_hex(&s[20..36])?,
    })
}

/// Finds and decodes the stamp in a received message (offset 0 first, then a
/// search for the magic). `None` for messages that are not ours.
#[inline]
pub fn parse(msg: &[u8]) -> Option<Stamp> {
    if let Some(s) = decode_at(msg) {
        return Some(s);
    }
    memchr::memmem::find_iter(msg, MAGIC).find_map(|at| decode_at(&msg[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_padding() {
        let stamp = Stamp {
            step: 0xAB,
            publisher: 0x1234,
            seq: 0xFFFF_FFFF_FFFF,
            sent_ns: u64::MAX - 5,
        };
        let mut buf = vec![0u8; 64];
        write(&mut buf, stamp);
        assert!(buf.is_ascii());
        assert_eq!(&buf[STAMP_LEN..], &[b'.'; 64 - STAMP_LEN][..]);
        assert_eq!(parse(&buf), Some(stamp));
        let mut exact = vec![0u8; STAMP_LEN];
        write(&mut exact, stamp);
        assert_eq!(parse(&exact), Some(stamp));
    }

    #[test]
    fn found_inside_an_envelope() {
        let stamp = Stamp {
            step: 1,
            publisher: 2,
            seq: 3,
            sent_ns: 4,
        };
        let mut inner = vec![0u8; 40];
        write(&mut inner, stamp);
        let mut msg = br#"{"topic":"hc","data":""#.to_vec();
        msg.extend_from_slice(&inner);
        msg.extend_from_slice(br#""}"#);
        assert_eq!(parse(&msg), Some(stamp));
    }

    #[test]
    fn foreign_messages_are_rejected() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"hello world"), None);
        assert_eq!(parse(&[b'h'; 100]), None);
        let mut bad = vec![0u8; 40];
        write(
            &mut bad,
            Stamp {
                step: 0,
                publisher: 0,
                seq: 0,
                sent_ns: 0,
            },
        );
        bad[10] = b'z';
        assert_eq!(parse(&bad), None);
        assert_eq!(parse(&bad[..STAMP_LEN - 1]), None);
    }
}
