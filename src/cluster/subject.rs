//! Topic names ⇄ NATS subjects.
//!
//! NATS subjects are dot-separated tokens in which `*` and `>` are wildcards and spaces are
//! not allowed, while a hubcast topic is any string of 1–128 bytes. A raw topic must never
//! become part of a subject: `a.b` would be two tokens, `*` would subscribe to every topic.
//! So each topic becomes **one** token through a reversible escape:
//!
//! - `A-Z a-z 0-9 _ -` stay as they are (readable subjects for the common case);
//! - every other byte, `~` included, becomes `~XX` (two uppercase hex digits).
//!
//! The token therefore holds only `[A-Za-z0-9_~-]`: no `.`, `*`, `>`, whitespace or
//! non-ASCII, and since `~` itself is escaped, two different topics never share a token
//! (`a.b` → `a~2Eb`, while the topic `a~2Eb` → `a~7E2Eb`). A topic's subject is
//! `<prefix>.t.<token>`, and all topics live under `<prefix>.t.>`.

use super::error::ClusterError;

/// The escape character; escaped itself so that decoding is unambiguous.
const ESCAPE: u8 = b'~';
const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Bytes kept as they are in a token.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Appends the token of `bytes` to `out`.
pub(crate) fn encode_bytes(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len());
    for &b in bytes {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push(char::from(ESCAPE));
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// The bytes a token stands for, or `None` when it is not a token [`encode_bytes`] makes
/// (a byte outside the alphabet, lowercase or missing hex digits): decoding accepts exactly
/// one spelling per byte string, so `decode(t) == Some(x)` implies `encode(x) == t`.
pub(crate) fn decode_bytes(token: &str) -> Option<Vec<u8>> {
    fn hex(d: u8) -> Option<u8> {
        match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'A'..=b'F' => Some(d - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(token.len());
    let mut bytes = token.bytes();
    while let Some(b) = bytes.next() {
        if b == ESCAPE {
            let hi = hex(bytes.next()?)?;
            let lo = hex(bytes.next()?)?;
            let decoded = hi << 4 | lo;
            // A plain byte written as `~XX` is a second spelling: refuse it.
            if is_plain(decoded) {
                return None;
            }
            out.push(decoded);
        } else if is_plain(b) {
            out.push(b);
        } else {
            return None;
        }
    }
    Some(out)
}

/// The subject token of `topic` (see the module doc).
///
/// ```
/// use hubcast::cluster::subject::topic_token;
/// assert_eq!(topic_token("prices"), "prices");
/// assert_eq!(topic_token("a.b"), "a~2Eb");
/// assert_eq!(topic_token("chat room/*"), "chat~20room~2F~2A");
/// ```
pub fn topic_token(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len());
    encode_bytes(topic.as_bytes(), &mut out);
    out
}

/// The topic a subject token stands for; `None` for anything [`topic_token`] does not
/// produce (including tokens of non-UTF-8 bytes).
pub fn topic_of_token(token: &str) -> Option<String> {
    String::from_utf8(decode_bytes(token)?).ok()
}

/// Checks a subject prefix: one or more non-empty tokens separated by `.`, each made of
/// printable ASCII without the wildcards `*` and `>`, and not starting with `$` (subjects
/// beginning with `$` belong to the server: `$SYS`, `$JS`, …).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), ClusterError> {
    let invalid = |reason: &'static str| ClusterError::InvalidPrefix {
        prefix: prefix.to_owned(),
        reason,
    };
    if prefix.is_empty() {
        return Err(invalid("it is empty"));
    }
    if prefix.starts_with('$') {
        return Err(invalid(
            "subjects starting with '$' are reserved for the server",
        ));
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Err(invalid(
                "it has an empty token (a leading, trailing or double '.')",
            ));
        }
        if token.contains(['*', '>']) {
            return Err(invalid("it contains a wildcard ('*' or '>')"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "it contains whitespace, a control character or non-ASCII",
            ));
        }
    }
    Ok(())
}

/// The subjects of one prefix (validated once, at start).
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    /// The prefix itself.
    prefix: String,
    /// `<prefix>.t.` — every topic's subject starts with it.
    base: String,
}

impl Subjects {
    pub(crate) fn new(prefix: &str) -> Result<Self, ClusterError> {
        validate_prefix(prefix)?;
        Ok(Subjects {
            prefix: prefix.to_owned(),
            base: format!("{prefix}.t."),
        })
    }

    /// The prefix the subjects start with.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.t.>`: every topic's subject (the history stream's subjects).
    pub(crate) fn all(&self) -> String {
        format!("{}>", self.base)
    }

    /// `<prefix>.presence`: where nodes report their subscriber counts.
    pub(crate) fn presence(&self) -> String {
        format!("{}.presence", self.prefix)
    }

    /// The topic of one of our subjects (for log lines about a subject).
    pub(crate) fn topic_of(&self, subject: &str) -> Option<String> {
        topic_of_token(subject.strip_prefix(&self.base)?)
    }

    /// `<prefix>.t.<token>`: the subject a topic is published to and subscribed on.
    pub(crate) fn topic(&self, topic: &str) -> String {
        let mut s = String::with_capacity(self.base.len() + topic.len() + 8);
        s.push_str(&self.base);
        encode_bytes(topic.as_bytes(), &mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(bytes: &[u8]) -> String {
        let mut s = String::new();
        encode_bytes(bytes, &mut s);
        s
    }

    /// Nothing a token may hold that a subject treats specially.
    fn assert_safe(token: &str) {
        for c in token.chars() {
            assert!(
                c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '~',
                "forbidden {c:?} in {token:?}"
            );
        }
    }

    #[test]
    fn plain_topics_stay_readable() {
        assert_eq!(topic_token("prices"), "prices");
        assert_eq!(topic_token("room_42-b"), "room_42-b");
    }

    #[test]
    fn separators_wildcards_and_escape_are_escaped() {
        assert_eq!(topic_token("a.b"), "a~2Eb");
        assert_eq!(topic_token("*"), "~2A");
        assert_eq!(topic_token(">"), "~3E");
        assert_eq!(topic_token("~"), "~7E");
        assert_eq!(topic_token("a b\tc\n"), "a~20b~09c~0A");
    }

    #[test]
    fn escaped_looking_topics_stay_distinct() {
        assert_ne!(topic_token("a.b"), topic_token("a~2Eb"));
        assert_eq!(topic_token("a~2Eb"), "a~7E2Eb");
        assert_eq!(topic_of_token("a~7E2Eb").as_deref(), Some("a~2Eb"));
        assert_eq!(topic_of_token("a~2Eb").as_deref(), Some("a.b"));
    }

    #[test]
    fn utf8_is_escaped_byte_by_byte() {
        let token = topic_token("café ☕");
        assert_eq!(token, "caf~C3~A9~20~E2~98~95");
        assert_safe(&token);
        assert_eq!(topic_of_token(&token).as_deref(), Some("café ☕"));
    }

    #[test]
    fn round_trip() {
        for topic in [
            "default",
            "a.b.c",
            "~~",
            "x>y*z",
            "日本語",
            " ",
            "%41",
            "~41",
        ] {
            let token = topic_token(topic);
            assert_safe(&token);
            assert_eq!(topic_of_token(&token).as_deref(), Some(topic), "{token}");
        }
    }

    #[test]
    fn decoding_refuses_other_spellings() {
        assert_eq!(decode_bytes("~41"), None, "'A' must be written plain");
        assert_eq!(decode_bytes("~2e"), None, "lowercase hex");
        assert_eq!(decode_bytes("~2"), None, "truncated escape");
        assert_eq!(decode_bytes("a.b"), None, "'.' outside the alphabet");
        assert_eq!(decode_bytes("~FF").as_deref(), Some(&[0xff][..]));
        assert_eq!(topic_of_token("~FF"), None, "not UTF-8");
    }

    /// A small xorshift generator: deterministic, no dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_byte_strings_are_injective_and_safe() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut seen = std::collections::HashMap::<String, Vec<u8>>::new();
        for _ in 0..20_000 {
            let len = (rng.next() % 12) as usize;
            // Mostly bytes that matter ('.', '~', '*', '>', space, high bytes, plain).
            let alphabet = b".~*> \x00\x7f\x80\xffaA0_-E2";
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if r.is_multiple_of(3) {
                        (r >> 8) as u8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            let token = encode(&bytes);
            assert_safe(&token);
            assert_eq!(decode_bytes(&token).as_deref(), Some(&bytes[..]));
            if let Some(other) = seen.insert(token.clone(), bytes.clone()) {
                assert_eq!(other, bytes, "two byte strings share the token {token}");
            }
        }
    }

    #[test]
    fn subjects_live_under_the_prefix() {
        let s = Subjects::new("hubcast").expect("valid prefix");
        assert_eq!(s.topic("a.b"), "hubcast.t.a~2Eb");
        assert_eq!(s.topic_of("hubcast.t.a~2Eb").as_deref(), Some("a.b"));
        assert_eq!(s.topic_of("other.t.a"), None);
        let s = Subjects::new("prod.eu-1").expect("valid prefix");
        assert_eq!(s.topic("x"), "prod.eu-1.t.x");
    }

    #[test]
    fn prefixes_are_validated() {
        for bad in [
            "", ".", "a.", ".a", "a..b", "a.*", "a>", "a b", "héllo", "$SYS", "a\tb",
        ] {
            let err = Subjects::new(bad).expect_err(bad);
            assert!(
                matches!(err, ClusterError::InvalidPrefix { .. }),
                "{bad:?}: {err}"
            );
        }
        for good in ["hubcast", "a.b", "hc_1-x", "app:prod"] {
            assert!(Subjects::new(good).is_ok(), "{good:?}");
        }
    }
}
