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
//!
//! Protocol v1 runs (`--protocol v1`) publish the same four figures as a JSON
//! array instead, so that hubcast inserts the payload into its pushes verbatim
//! (valid JSON is the push's `data` as is: no quoting, no base64):
//!
//! ```text
//! [step,publisher,seq,send_ns,"....."]      decimal numbers, '.' padding up to --size
//! ```
//!
//! Numbers have no leading zeros (JSON), so their width varies; the padding
//! string absorbs it and the payload is always exactly `--size` bytes, which
//! must be at least [`JSON_STAMP_MAX`] (the widest possible stamp).
//!
//! A run of dots compresses ~30×, which says nothing about a real feed. With
//! `--payload json` (plain protocol) the ASCII stamp sits in a JSON object whose
//! filler is a list of quotes with prices that differ from message to message,
//! so permessage-deflate meets realistic data (about 3× smaller at 1 KiB):
//!
//! ```text
//! {"stamp":"hc…","quotes":[{"sym":"EURUSD","bid":1.08423,"ask":1.08431,"ts":1732600012345},…]}
//! ```
//!
//! padded with spaces before the closing `]}` to exactly `--size` (at least
//! [`QUOTES_MIN`]). The receiver finds the stamp by its magic, as in any envelope.

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

/// Smallest `--size` for `--payload json`: the object around the stamp.
pub const QUOTES_MIN: usize = 64;

const SYMBOLS: [&str; 8] = [
    "EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "USDCAD", "NZDUSD", "EURGBP",
];

/// Writes `--payload json`: `{"stamp":"<stamp>","quotes":[…]}`, exactly
/// `dst.len()` bytes (at least [`QUOTES_MIN`]), the quotes drawn from a generator
/// seeded by the stamp so that every message has other prices.
pub fn write_quotes(dst: &mut [u8], stamp: Stamp) {
    use std::io::Write as _;
    debug_assert!(dst.len() >= QUOTES_MIN);
    let size = dst.len();
    let mut head = [0u8; STAMP_LEN];
    write(&mut head, stamp);
    let mut cur = std::io::Cursor::new(&mut dst[..]);
    // The cursor cannot run out: the head is 49 bytes and `size` ≥ QUOTES_MIN.
    let _ = cur.write_all(b"{\"stamp\":\"");
    let _ = cur.write_all(&head);
    let _ = cur.write_all(b"\",\"quotes\":[");
    let mut x = (stamp.seq << 16 | u64::from(stamp.publisher)) ^ 0x9E37_79B9_7F4A_7C15;
    let mut quote = [0u8; 96];
    let mut first = true;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let sym = SYMBOLS[(x % 8) as usize];
        let bid = 100_000 + (x >> 8) % 60_000;
        let spread = 1 + (x >> 24) % 30;
        let ts = 1_732_600_000_000 + (x >> 32) % 100_000;
        let mut q = std::io::Cursor::new(&mut quote[..]);
        let _ = write!(
            q,
            "{}{{\"sym\":\"{sym}\",\"bid\":{}.{:05},\"ask\":{}.{:05},\"ts\":{ts}}}",
            if first { "" } else { "," },
            bid / 100_000,
            bid % 100_000,
            (bid + spread) / 100_000,
            (bid + spread) % 100_000,
        );
        let n = q.position() as usize;
        let at = cur.position() as usize;
        if at + n + 2 > size {
            break;
        }
        let _ = cur.write_all(&quote[..n]);
        first = false;
    }
    let at = cur.position() as usize;
    dst[at..size - 2].fill(b' ');
    dst[size - 2..].copy_from_slice(b"]}");
}

/// Widest JSON stamp with an empty padding string: `[255,65535,` + two
/// 20-digit numbers + `,""]`. With `--protocol v1`, `--size` must be at least this.
pub const JSON_STAMP_MAX: usize = 56;

/// Appends `v` in decimal to `out` at `*pos` (no leading zeros).
#[inline]
fn put_dec(out: &mut [u8; JSON_STAMP_MAX], pos: &mut usize, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // Cast is lossless: a single decimal digit.
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let n = digits.len() - at;
    out[*pos..*pos + n].copy_from_slice(&digits[at..]);
    *pos += n;
}

/// Writes a full JSON payload into `dst` (its whole length is used):
/// `[step,publisher,seq,send_ns,"…"]`, the string padded with `.` so that the
/// payload is exactly `dst.len()` bytes.
///
/// `dst.len()` must be at least [`JSON_STAMP_MAX`]; callers validate `--size` once.
#[inline]
pub fn write_json(dst: &mut [u8], stamp: Stamp) {
    debug_assert!(dst.len() >= JSON_STAMP_MAX);
    let mut head = [0u8; JSON_STAMP_MAX];
    let mut n = 0;
    head[n] = b'[';
    n += 1;
    put_dec(&mut head, &mut n, u64::from(stamp.step));
    head[n] = b',';
    n += 1;
    put_dec(&mut head, &mut n, u64::from(stamp.publisher));
    head[n] = b',';
    n += 1;
    put_dec(&mut head, &mut n, stamp.seq);
    head[n] = b',';
    n += 1;
    put_dec(&mut head, &mut n, stamp.sent_ns);
    head[n] = b',';
    head[n + 1] = b'"';
    n += 2;
    // `n + 2 <= JSON_STAMP_MAX <= dst.len()`: the head and the closing `"]` fit.
    let n = n.min(dst.len().saturating_sub(2));
    dst[..n].copy_from_slice(&head[..n]);
    let end = dst.len().saturating_sub(2).max(n);
    dst[n..end].fill(PAD);
    if let Some(tail) = dst.get_mut(end..) {
        tail.copy_from_slice(&b"\"]"[..tail.len()]);
    }
}

/// Reads a JSON number that is a non-negative integer (no sign, no leading
/// zero, no fraction or exponent) at the front of `s`, up to `max`; returns
/// it and the digits' length.
#[inline]
fn get_dec(s: &[u8], max: u64) -> Option<(u64, usize)> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && s[0] == b'0') {
        return None;
    }
    let mut v = 0u64;
    for &d in &s[..digits] {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (v <= max).then_some((v, digits))
}

/// Decodes the head of a JSON stamp, `[step,publisher,seq,send_ns,"`, at the
/// front of `msg`; returns the stamp and where the padding starts. Exact: no
/// whitespace, numbers as [`write_json`] writes them.
#[inline]
pub fn parse_json_head(msg: &[u8]) -> Option<(Stamp, usize)> {
    let mut pos = 1;
    if msg.first() != Some(&b'[') {
        return None;
    }
    let mut fields = [0u64; 4];
    let max = [0xFF, 0xFFFF, u64::MAX, u64::MAX];
    for (field, max) in fields.iter_mut().zip(max) {
        let (v, n) = get_dec(msg.get(pos..)?, max)?;
        *field = v;
        pos += n;
        if msg.get(pos) != Some(&b',') {
            return None;
        }
        pos += 1;
    }
    if msg.get(pos) != Some(&b'"') {
        return None;
    }
    let [step, publisher, seq, sent_ns] = fields;
    // Truncations are lossless: bounded by `max` above.
    let stamp = Stamp {
        step: step as u8,
        publisher: publisher as u16,
        seq,
        sent_ns,
    };
    Some((stamp, pos + 1))
}

/// Decodes a whole JSON payload exactly as [`write_json`] wrote it: the head,
/// nothing but `.` in the string, then `"]` and the end.
#[inline]
pub fn parse_json(msg: &[u8]) -> Option<Stamp> {
    let (stamp, at) = parse_json_head(msg)?;
    let pad = msg.get(at..)?.strip_suffix(b"\"]")?;
    pad.iter().all(|&b| b == PAD).then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_payload_is_exact_json_with_the_stamp() {
        let stamp = Stamp {
            step: 3,
            publisher: 7,
            seq: 4711,
            sent_ns: 123_456_789,
        };
        let mut seen = Vec::new();
        for size in [QUOTES_MIN, 100, 1024, 4096] {
            let mut buf = vec![0u8; size];
            write_quotes(&mut buf, stamp);
            let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
            assert_eq!(parse(&buf), Some(stamp), "size {size}");
            assert!(v["quotes"].is_array());
            if size == 1024 {
                assert!(v["quotes"].as_array().map_or(0, Vec::len) >= 12, "{v}");
                seen.push(buf);
            }
        }
        // Another message has other prices.
        let mut other = vec![0u8; 1024];
        write_quotes(&mut other, Stamp { seq: 4712, ..stamp });
        assert_ne!(other[60..], seen[0][60..]);
    }

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
    fn json_round_trip_at_every_width() {
        let stamps = [
            Stamp {
                step: 0,
                publisher: 0,
                seq: 0,
                sent_ns: 0,
            },
            Stamp {
                step: 7,
                publisher: 12,
                seq: 1234,
                sent_ns: 987_654_321,
            },
            Stamp {
                step: 0xFF,
                publisher: 0xFFFF,
                seq: u64::MAX,
                sent_ns: u64::MAX,
            },
        ];
        for stamp in stamps {
            for size in [JSON_STAMP_MAX, 64, 300] {
                let mut buf = vec![0u8; size];
                write_json(&mut buf, stamp);
                assert_eq!(buf.len(), size);
                let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
                assert_eq!(v[0], u64::from(stamp.step));
                assert_eq!(v[1], u64::from(stamp.publisher));
                assert_eq!(v[2], stamp.seq);
                assert_eq!(v[3], stamp.sent_ns);
                assert!(v[4].as_str().expect("pad").bytes().all(|b| b == b'.'));
                assert_eq!(
                    parse_json(&buf),
                    Some(stamp),
                    "{}",
                    String::from_utf8_lossy(&buf)
                );
                let (head, at) = parse_json_head(&buf).expect("head");
                assert_eq!(head, stamp);
                assert_eq!(buf[at - 1], b'"');
            }
        }
        let mut small = vec![0u8; 64];
        write_json(
            &mut small,
            Stamp {
                step: 1,
                publisher: 2,
                seq: 3,
                sent_ns: 4,
            },
        );
        assert!(small.starts_with(b"[1,2,3,4,\"...."));
        assert!(small.ends_with(b".\"]"));
    }

    #[test]
    fn json_stamps_are_read_exactly() {
        assert_eq!(
            parse_json(br#"[1,2,3,4,"..."]"#),
            Some(Stamp {
                step: 1,
                publisher: 2,
                seq: 3,
                sent_ns: 4
            })
        );
        for bad in [
            &br#"[1,2,3,4,".x."]"#[..],
            br#"[1,2,3,4,"..."] "#,
            br#"[1,2,3,4,"..."#,
            br#"[1, 2,3,4,"."]"#,
            br#"[01,2,3,4,"."]"#,
            br#"[256,2,3,4,"."]"#,
            br#"[1,65536,3,4,"."]"#,
            br#"[1,2,18446744073709551616,4,"."]"#,
            br#"[1,2,99999999999999999999,4,"."]"#,
            br#"[1,2,3,1000000000000000000000,"."]"#,
            br#"[1,2,3,-4,"."]"#,
            br#"[1,2,3,4.5,"."]"#,
            br#"[1,2,3,"."]"#,
            br#"[1,2,3,4,5,"."]"#,
            br#"{"a":1}"#,
            b"",
            b"[",
        ] {
            assert_eq!(parse_json(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            parse_json(br#"[255,65535,18446744073709551615,0,"."]"#).map(|s| (s.seq, s.sent_ns)),
            Some((u64::MAX, 0))
        );
        // The head alone ignores what follows (a base64 prefix ends anywhere).
        assert!(parse_json_head(br#"[1,2,3,4,".."#).is_some());
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
