//! hubcast protocol v1 (`hubcast.v1`) as a measuring client speaks it.
//!
//! Owns the client's view of v1: reading a push
//! (`{"topic":"t","offset":58,"data":…}` or `…,"b64":"…"}`) with a small exact
//! parser over the one shape the server writes — no JSON tree, no allocation —
//! and recovering the measurement stamp from its `data` (our JSON array
//! verbatim, a JSON string holding the ASCII stamp, or base64 of either);
//! the per-topic offset check (every push must carry the topic's previous
//! offset + 1); reading the rare command replies (with serde_json); writing
//! subscribe commands; and taking the topic out of a URL's query for
//! subscribers that subscribe by command.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::payload::{self, Stamp};

/// The WebSocket subprotocol that selects protocol v1.
pub const SUBPROTOCOL: &str = "hubcast.v1";

/// What a push carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data<'a> {
    /// `"data":<JSON>` that is not a string: the published text verbatim.
    Json(&'a [u8]),
    /// `"data":"…"`: the published text was not JSON; this is the string's raw
    /// content between the quotes (escapes not decoded).
    Str(&'a [u8]),
    /// `"b64":"…"`: a binary payload, standard base64 (not decoded).
    B64(&'a [u8]),
}

/// One push, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Push<'a> {
    /// The topic's raw JSON string content (escapes not decoded).
    pub topic: &'a [u8],
    /// The message's offset in the topic.
    pub offset: u64,
    /// The payload.
    pub data: Data<'a>,
}

const TOPIC: &[u8] = br#"{"topic":""#;
const OFFSET: &[u8] = br#","offset":"#;
const DATA: &[u8] = br#","data":"#;
const B64_FIELD: &[u8] = br#","b64":""#;

/// End of the JSON string whose content starts at `s[0]`: the index of the
/// closing quote. Control characters (not allowed in JSON strings) fail.
#[inline]
fn string_end(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        i += memchr::memchr2(b'"', b'\\', s.get(i..)?)?;
        if s[i] == b'"' {
            break;
        }
        // An escape: skip the backslash and the escaped byte (`\uXXXX`'s
        // digits need no special care: they contain no quote).
        i += 2;
    }
    // Rare enough in practice (topics, our padding) that checking after the
    // fact costs less than checking every byte on the way.
    s[..i].iter().all(|&b| b >= 0x20).then_some(i)
}

/// Reads one push exactly in the shape hubcast writes it:
/// `{"topic":<string>,"offset":<integer>,"data":<JSON>}` or
/// `{"topic":<string>,"offset":<integer>,"b64":"<base64>"}`, no whitespace.
/// `None` for anything else (replies, other servers' messages).
#[inline]
pub fn parse_push(msg: &[u8]) -> Option<Push<'_>> {
    let rest = msg.strip_prefix(TOPIC)?;
    let end = string_end(rest)?;
    let topic = &rest[..end];
    let rest = rest[end + 1..].strip_prefix(OFFSET)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let mut offset = 0u64;
    for &d in &rest[..digits] {
        offset = offset.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    let rest = &rest[digits..];
    let data = if let Some(value) = rest.strip_prefix(DATA) {
        let value = value.strip_suffix(b"}")?;
        match value.first()? {
            b'"' => {
                let inner = &value[1..];
                // The string must end exactly where the push does.
                if string_end(inner)? + 1 != inner.len() {
                    return None;
                }
                Data::Str(&inner[..inner.len() - 1])
            }
            _ => Data::Json(value),
        }
    } else {
        let value = rest.strip_prefix(B64_FIELD)?.strip_suffix(b"\"}")?;
        if value.contains(&b'"') {
            return None;
        }
        Data::B64(value)
    };
    Some(Push {
        topic,
        offset,
        data,
    })
}

/// Base64 characters decoded to find a stamp in a binary payload: 96
/// characters are 72 bytes, more than the widest stamp.
const B64_PREFIX: usize = 96;

/// The measurement stamp in a push's data: our JSON array (exactly), the ASCII
/// stamp inside a string, or either of them as the start of a base64 payload.
#[inline]
pub fn stamp(data: &Data<'_>) -> Option<Stamp> {
    match *data {
        Data::Json(json) => payload::parse_json(json),
        // The ASCII stamp needs no escaping, so the raw content is the text.
        Data::Str(text) => payload::parse(text),
        Data::B64(b64) => {
            let mut buf = [0u8; B64_PREFIX / 4 * 3];
            let prefix = if b64.len() > B64_PREFIX {
                &b64[..B64_PREFIX]
            } else {
                b64
            };
            let n = B64.decode_slice(prefix, &mut buf).ok()?;
            let bytes = &buf[..n];
            match payload::parse_json_head(bytes) {
                Some((stamp, _)) => Some(stamp),
                None => payload::parse(bytes),
            }
        }
    }
}

/// What a push's offset says, against the last one of its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetCheck {
    /// The first push of this topic on this connection: the baseline.
    First,
    /// Exactly the previous offset + 1.
    Next,
    /// Offsets were skipped: this many are missing before this push.
    Gap(u64),
    /// Not above the highest offset seen: a repeat, or out of order.
    Back,
}

/// The highest offset seen per topic on one connection (usually one topic).
#[derive(Debug, Clone, Default)]
pub struct Offsets {
    topics: Vec<(Box<[u8]>, u64)>,
}

impl Offsets {
    /// Starts `topic` at `offset` as if a push with it had arrived (a
    /// subscribe reply's position).
    pub fn set(&mut self, topic: &[u8], offset: u64) {
        match self.topics.iter_mut().find(|(t, _)| **t == *topic) {
            Some((_, last)) => *last = offset,
            None => self.topics.push((topic.into(), offset)),
        }
    }

    /// Checks and records one push.
    #[inline]
    pub fn observe(&mut self, topic: &[u8], offset: u64) -> OffsetCheck {
        let Some((_, last)) = self.topics.iter_mut().find(|(t, _)| **t == *topic) else {
            self.topics.push((topic.into(), offset));
            return OffsetCheck::First;
        };
        if offset <= *last {
            return OffsetCheck::Back;
        }
        let gap = offset - *last - 1;
        *last = offset;
        if gap == 0 {
            OffsetCheck::Next
        } else {
            OffsetCheck::Gap(gap)
        }
    }
}

/// A command reply: `{"id":N,"result":{…}}` or `{"id":N,"error":{…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Reply {
    /// The command's id (absent when the server could not read it).
    #[serde(default)]
    pub id: Option<u64>,
    /// Success.
    #[serde(default)]
    pub result: Option<ReplyResult>,
    /// Failure.
    #[serde(default)]
    pub error: Option<ReplyError>,
}

/// The `result` of a subscribe reply (other commands' results fit it too).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReplyResult {
    /// The topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// The topic's current position.
    #[serde(default)]
    pub offset: Option<u64>,
    /// The epoch the offset belongs to.
    #[serde(default)]
    pub epoch: Option<String>,
    /// Only when the subscribe had `since`: whether everything after it is replayed.
    #[serde(default)]
    pub recovered: Option<bool>,
}

/// The `error` of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReplyError {
    /// Error code (100…).
    pub code: u16,
    /// What is wrong.
    #[serde(default)]
    pub message: String,
}

/// Reads a reply (a message with an `id`, `result` or `error`); `None` for
/// anything else. Replies are one per command, so a full parse is fine here.
pub fn parse_reply(msg: &[u8]) -> Option<Reply> {
    if !msg.starts_with(b"{") || parse_push(msg).is_some() {
        return None;
    }
    let r: Reply = serde_json::from_slice(msg).ok()?;
    (r.result.is_some() || r.error.is_some()).then_some(r)
}

/// `{"id":N,"subscribe":{"topic":T}}`, with `"since":{"offset":O,"epoch":E}` when given.
pub fn subscribe_command(id: u64, topic: &str, since: Option<(u64, &str)>) -> String {
    let body = match since {
        Some((offset, epoch)) => serde_json::json!({
            "topic": topic,
            "since": {"offset": offset, "epoch": epoch},
        }),
        None => serde_json::json!({ "topic": topic }),
    };
    serde_json::json!({"id": id, "subscribe": body}).to_string()
}

/// Percent-decodes a URL component (`%2F` → `/`; a `+` stays a `+`, as hubcast
/// reads topic names). `None` for a bad escape or invalid UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Splits the `topic=` parameters out of a request target (`/ws?topic=t&x=1`):
/// the decoded topics (in order, without repeats) and the target without them
/// (`/ws?x=1`; `/ws` when nothing else is left).
pub fn take_topics(path: &str) -> Result<(Vec<String>, String), String> {
    let Some((base, query)) = path.split_once('?') else {
        return Ok((Vec::new(), path.to_string()));
    };
    let mut topics: Vec<String> = Vec::new();
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("topic=") {
            Some(raw) => {
                let topic = percent_decode(raw)
                    .ok_or_else(|| format!("bad topic in the query: {raw:?}"))?;
                if !topics.contains(&topic) {
                    topics.push(topic);
                }
            }
            None => kept.push(pair),
        }
    }
    let kept: Vec<&str> = kept.into_iter().filter(|p| !p.is_empty()).collect();
    let path = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((topics, path))
}

/// A topic's name as raw JSON string content, as pushes carry it (for
/// [`Offsets::set`] from a reply, whose topic serde_json has unescaped).
pub fn topic_as_pushed(topic: &str) -> Cow<'_, [u8]> {
    let quoted = serde_json::to_string(topic).unwrap_or_default();
    match quoted.len() == topic.len() + 2 {
        true => Cow::Borrowed(topic.as_bytes()),
        false => Cow::Owned(quoted.as_bytes()[1..quoted.len() - 1].to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp_of(step: u8, publisher: u16, seq: u64, sent_ns: u64) -> Stamp {
        Stamp {
            step,
            publisher,
            seq,
            sent_ns,
        }
    }

    /// A push as hubcast writes it (`wire::v1::push`), for data that is JSON,
    /// text or binary.
    fn server_push(topic: &str, offset: u64, payload: &[u8], binary: bool) -> Vec<u8> {
        let mut out = format!(
            "{{\"topic\":{},\"offset\":{offset},",
            serde_json::to_string(topic).expect("topic")
        );
        if binary {
            out.push_str(&format!("\"b64\":\"{}\"}}", B64.encode(payload)));
        } else if serde_json::from_slice::<serde_json::Value>(payload).is_ok() {
            out.push_str("\"data\":");
            out.push_str(std::str::from_utf8(payload).expect("utf-8"));
            out.push('}');
        } else {
            let text = std::str::from_utf8(payload).expect("utf-8");
            out.push_str(&format!(
                "\"data\":{}}}",
                serde_json::to_string(text).expect("text")
            ));
        }
        out.into_bytes()
    }

    #[test]
    fn json_payload_is_data_verbatim() {
        let s = stamp_of(3, 7, 123_456, 9_876_543_210);
        let mut payload = vec![0u8; 64];
        payload::write_json(&mut payload, s);
        let msg = server_push("bench", 58, &payload, false);
        let push = parse_push(&msg).expect("push");
        assert_eq!(push.topic, b"bench");
        assert_eq!(push.offset, 58);
        assert_eq!(push.data, Data::Json(&payload));
        assert_eq!(stamp(&push.data), Some(s));
    }

    #[test]
    fn text_and_binary_payloads() {
        let s = stamp_of(1, 2, 3, 4);
        // The ASCII stamp is not JSON: it travels as a JSON string.
        let mut ascii = vec![0u8; 40];
        payload::write(&mut ascii, s);
        let msg = server_push("t", 1, &ascii, false);
        let push = parse_push(&msg).expect("push");
        assert_eq!(push.data, Data::Str(&ascii));
        assert_eq!(stamp(&push.data), Some(s));
        // Binary payloads are base64, whatever they hold; long ones are decoded
        // only as far as the stamp needs.
        for size in [56usize, 64, 100, 1000] {
            let mut json = vec![0u8; size];
            payload::write_json(&mut json, s);
            let msg = server_push("t", 2, &json, true);
            let push = parse_push(&msg).expect("push");
            assert!(matches!(push.data, Data::B64(_)));
            assert_eq!(stamp(&push.data), Some(s), "size {size}");
            let msg = server_push("t", 3, &ascii, true);
            assert_eq!(stamp(&parse_push(&msg).expect("push").data), Some(s));
        }
    }

    /// The server's own encoder, for every data form: JSON verbatim, text as a
    /// JSON string, binary as base64; topics that need escaping.
    #[test]
    fn pushes_from_hubcasts_encoder() {
        use hubcast::wire::frame::Opcode;
        use hubcast::wire::v1::push;
        let s = stamp_of(9, 300, 77_777, 123_456_789_012);
        let mut json = vec![0u8; 80];
        payload::write_json(&mut json, s);
        let mut ascii = vec![0u8; 80];
        payload::write(&mut ascii, s);
        let mut o = Offsets::default();
        let cases: [(&str, Opcode, &[u8]); 4] = [
            ("bench", Opcode::Text, &json),
            ("bench", Opcode::Text, &ascii),
            ("bench", Opcode::Binary, &json),
            ("bench", Opcode::Binary, &ascii),
        ];
        for (k, (topic, opcode, body)) in (1u64..).zip(cases) {
            let msg = push(topic, 41 + k, opcode, body);
            let p = parse_push(&msg).expect("push");
            assert_eq!((p.topic, p.offset), (&b"bench"[..], 41 + k));
            match (k, p.data) {
                (1, Data::Json(d)) => assert_eq!(d, &json[..]),
                (2, Data::Str(d)) => assert_eq!(d, &ascii[..]),
                (3 | 4, Data::B64(_)) => {}
                other => panic!("case {k}: {other:?}"),
            }
            assert_eq!(stamp(&p.data), Some(s), "case {k}");
            let check = o.observe(p.topic, p.offset);
            let want = if k == 1 {
                OffsetCheck::First
            } else {
                OffsetCheck::Next
            };
            assert_eq!(check, want);
        }
        let topic = "q\"u\\o\nte/é";
        let msg = push(topic, 7, Opcode::Text, b"[1]");
        let p = parse_push(&msg).expect("push");
        assert_eq!(p.topic, &*topic_as_pushed(topic));
        assert_eq!((p.offset, p.data), (7, Data::Json(b"[1]")));
        // Text that needs escaping is a string whose end is found past the escapes.
        let msg = push("t", 8, Opcode::Text, b"say \"hi\" \\");
        let p = parse_push(&msg).expect("push");
        assert_eq!(p.data, Data::Str(br#"say \"hi\" \\"#));
    }

    #[test]
    fn topics_with_escapes_and_exact_offsets() {
        let msg = server_push("a\"b\\c/é", 0, b"[1]", false);
        let push = parse_push(&msg).expect("push");
        assert_eq!(push.topic, r#"a\"b\\c/é"#.as_bytes());
        assert_eq!(push.offset, 0);
        assert_eq!(push.data, Data::Json(b"[1]"));
        assert_eq!(stamp(&push.data), None, "not our stamp");
        assert_eq!(&*topic_as_pushed("a\"b\\c/é"), push.topic);
        assert_eq!(&*topic_as_pushed("plain"), b"plain");
        let msg = server_push("t", u64::MAX, b"1", false);
        assert_eq!(parse_push(&msg).map(|p| p.offset), Some(u64::MAX));
        // A string ending in an escaped backslash.
        let msg = server_push("t", 5, b"x\\", false);
        assert_eq!(parse_push(&msg).map(|p| p.data), Some(Data::Str(br"x\\")));
    }

    #[test]
    fn anything_else_is_not_a_push() {
        for bad in [
            &br#"{"id":1,"result":{"topic":"t","offset":5,"epoch":"e"}}"#[..],
            br#"{"topic":"t","offset":5,"data":1"#,
            br#"{"topic":"t","offset":5}"#,
            br#"{"topic":"t","offset":05,"data":1}"#,
            br#"{"topic":"t","offset":-5,"data":1}"#,
            br#"{"topic":"t","offset":5.0,"data":1}"#,
            br#"{"topic":"t","offset":18446744073709551616,"data":1}"#,
            br#"{"topic":"t","offset":,"data":1}"#,
            br#"{"topic":"t", "offset":5,"data":1}"#,
            br#"{"topic":"t","offset":5,"data":}"#,
            br#"{"topic":"t","offset":5,"data":"a"b"}"#,
            br#"{"topic":"t","offset":5,"data":"abc}"#,
            br#"{"topic":"t","offset":5,"b64":"AA"}"#.strip_suffix(b"}").unwrap_or(b""),
            br#"{"topic":"t","offset":5,"b64":"A"A"}"#,
            br#"{"topic":"t,"offset":5,"data":1}"#,
            b"{\"topic\":\"t\x01\",\"offset\":5,\"data\":1}",
            br#"{"offset":5,"topic":"t","data":1}"#,
            b"hc00000000000000000000000000000000000",
            b"",
        ] {
            assert_eq!(parse_push(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        // Our stamp with damage is not a stamp.
        let push = parse_push(br#"{"topic":"t","offset":5,"data":[1,2,3,4,".x"]}"#).expect("push");
        assert_eq!(stamp(&push.data), None);
        let push = parse_push(br#"{"topic":"t","offset":5,"b64":"!!!!"}"#).expect("push");
        assert_eq!(stamp(&push.data), None);
    }

    #[test]
    fn offsets_per_topic() {
        let mut o = Offsets::default();
        assert_eq!(o.observe(b"a", 10), OffsetCheck::First);
        assert_eq!(o.observe(b"a", 11), OffsetCheck::Next);
        assert_eq!(o.observe(b"b", 3), OffsetCheck::First);
        assert_eq!(o.observe(b"a", 14), OffsetCheck::Gap(2));
        assert_eq!(o.observe(b"a", 14), OffsetCheck::Back);
        assert_eq!(o.observe(b"a", 12), OffsetCheck::Back);
        assert_eq!(o.observe(b"a", 15), OffsetCheck::Next);
        assert_eq!(o.observe(b"b", 4), OffsetCheck::Next);
        o.set(b"c", 41);
        assert_eq!(o.observe(b"c", 42), OffsetCheck::Next);
        o.set(b"c", 50);
        assert_eq!(o.observe(b"c", 50), OffsetCheck::Back);
    }

    #[test]
    fn replies_and_commands() {
        let r = parse_reply(
            br#"{"id":2,"result":{"topic":"t","offset":57,"epoch":"e","recovered":true}}"#,
        )
        .expect("reply");
        assert_eq!(r.id, Some(2));
        let res = r.result.expect("result");
        assert_eq!(
            (res.offset, res.epoch.as_deref(), res.recovered),
            (Some(57), Some("e"), Some(true))
        );
        let r = parse_reply(br#"{"id":1,"error":{"code":104,"message":"already subscribed"}}"#)
            .expect("reply");
        assert_eq!(r.error.map(|e| e.code), Some(104));
        assert_eq!(parse_reply(br#"{"topic":"t","offset":1,"data":1}"#), None);
        assert_eq!(parse_reply(b"hello"), None);
        assert_eq!(parse_reply(br#"{"id":1}"#), None);

        assert_eq!(
            subscribe_command(1, "t", None),
            r#"{"id":1,"subscribe":{"topic":"t"}}"#
        );
        let c = subscribe_command(2, "t\"", Some((41, "k2x9")));
        let v: serde_json::Value = serde_json::from_str(&c).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"id": 2, "subscribe": {"topic": "t\"", "since": {"offset": 41, "epoch": "k2x9"}}})
        );
    }

    #[test]
    fn topics_come_out_of_the_query() {
        let t = |p: &str| take_topics(p).expect("ok");
        assert_eq!(t("/ws?topic=bench"), (vec!["bench".into()], "/ws".into()));
        assert_eq!(
            t("/ws?x=1&topic=a%2Fb&topic=a%2Fb&y"),
            (vec!["a/b".into()], "/ws?x=1&y".into())
        );
        assert_eq!(t("/ws?topic=a+b"), (vec!["a+b".into()], "/ws".into()));
        assert_eq!(t("/ws"), (vec![], "/ws".into()));
        assert_eq!(t("/ws?x=1"), (vec![], "/ws?x=1".into()));
        assert_eq!(
            t("/ws?topic=a&topic=b"),
            (vec!["a".into(), "b".into()], "/ws".into())
        );
        assert!(take_topics("/ws?topic=%zz").is_err());
        assert!(take_topics("/ws?topic=%ff").is_err());
    }
}
