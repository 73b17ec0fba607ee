//! Protocol v1: the JSON a `hubcast.v1` client sends and gets back, turned into typed
//! commands and back into text.
//!
//! This module owns the v1 codec and nothing else: [`parse`] reads one client command
//! (the text of one WebSocket message), the reply encoders ([`subscribed`], [`error`],
//! …) and [`push`] write JSON text that `frame::encode` then frames. It does no I/O and
//! knows nothing about subscriptions, topics' rules, offsets or permissions: whoever
//! calls it decides what a command means and which reply it gets. It imports only from
//! its own floor.
//!
//! ```text
//! client → {"id":1,"subscribe":{"topic":"prices","since":{"offset":41,"epoch":"k2x9"}}}
//! server ← {"id":1,"result":{"topic":"prices","offset":57,"epoch":"k2x9","recovered":true}}
//! client → {"id":3,"publish":{"topic":"prices","data":{"EURUSD":1.0842}}}
//! server ← {"id":3,"result":{"topic":"prices","offset":58}}
//! server ← {"topic":"prices","offset":58,"data":{"EURUSD":1.0842}}      (push: no id)
//! client → {"id":5,"unsubscribe":{"topic":"nope"}}
//! server ← {"id":5,"error":{"code":105,"message":"not subscribed"}}
//! ```
//!
//! Decisions a reader of the code would otherwise have to reverse-engineer:
//!
//! - **Two kinds of malformed input.** Text that is not one complete JSON value — garbage,
//!   truncated JSON, trailing bytes — is [`Malformed::NotJson`]: a v1 client never sends
//!   that (a WebSocket message arrives whole), so the peer is not speaking the protocol
//!   and the caller closes the connection. Valid JSON of the wrong shape is
//!   [`Malformed::BadCommand`], answered with error 100 and the command's id when one can
//!   be read; the client is still talking to us, just wrongly.
//! - **Strict shape.** Unknown or repeated fields, zero or two commands, a wrong type
//!   anywhere: all `BadCommand`. Lenient parsers let typos (`"sinse"`) pass silently;
//!   here they fail loudly on the first try. The one leniency: `"since": null` means no
//!   `since`, as many encoders write absent options that way.
//! - **Nesting depth.** Parsing never recurses into a client's values: serde_json skips
//!   them with a loop, so 10,000 levels cost no stack. Nesting is therefore answered by
//!   shape, not by a recursion limit: deep JSON that is complete is a `BadCommand` (not
//!   an object, wrong type, unknown field, or publish data deeper than [`MAX_DEPTH`]);
//!   deep JSON that is cut off is `NotJson`, like any truncated JSON.
//! - **Error messages never echo input.** They name fields and rules, never a client's
//!   value or key, so a reply is short whatever was sent.
//! - **Push data.** A text payload that is valid JSON is the push's `data` verbatim, so a
//!   v1 client reads `{"EURUSD":1.0842}` as an object; any other text becomes a JSON
//!   string. Hence a v1 client cannot tell the text `"x"` (quotes included) from `x`:
//!   publishers that care publish JSON. Binary payloads travel as standard base64 in
//!   `b64`, so nothing is ever altered.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::wire::frame::Opcode;

/// The WebSocket subprotocol name (`Sec-WebSocket-Protocol`) that selects protocol v1.
pub const SUBPROTOCOL: &str = "hubcast.v1";

/// Largest command id: 2^53 − 1, the largest integer a JavaScript client holds exactly.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// Deepest nesting of arrays and objects allowed in JSON data, in publish commands and in
/// pushes. serde_json's default reader accepts 127 levels; the push wraps data in one
/// more object, so 126 levels keep every push readable by it (and by Python's `json` and
/// browsers, whose limits are higher).
pub const MAX_DEPTH: usize = 126;

/// Whether a client offers protocol v1: some `Sec-WebSocket-Protocol` header value holds
/// the token `hubcast.v1` exactly (a comma-separated list, whitespace around tokens
/// allowed; case-sensitive, as RFC 6455 §4.1 makes subprotocol names).
pub fn offers_v1<'a>(mut header_values: impl Iterator<Item = &'a [u8]>) -> bool {
    header_values.any(|value| {
        value
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii() == SUBPROTOCOL.as_bytes())
    })
}

/// The code of an error reply, with its default message. Codes are stable: new ones are
/// added after the last, never renumbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 100: not a command this protocol knows — malformed, unknown, ambiguous (two
    /// commands), unknown fields or wrong types.
    BadCommand = 100,
    /// 101: the topic breaks the topic rules (1–128 bytes). Checked by the caller.
    BadTopic = 101,
    /// 102: this connection already has as many topics as it may.
    TooManyTopics = 102,
    /// 103: the client may not do this on this topic.
    PermissionDenied = 103,
    /// 104: subscribe to a topic the connection is already subscribed to.
    AlreadySubscribed = 104,
    /// 105: unsubscribe from a topic the connection is not subscribed to.
    NotSubscribed = 105,
    /// 106: reserved for a position that cannot be recovered. Not sent today: a failed
    /// recovery is a successful subscribe with `"recovered":false` (Centrifugo's
    /// semantics), so the client is subscribed either way and knows to resync.
    Unrecoverable = 106,
    /// 107: the message is larger than the server accepts.
    MessageTooLarge = 107,
    /// 108: the server is overloaded; try again later.
    Overloaded = 108,
    /// 109: the server is shutting down.
    ShuttingDown = 109,
    /// 110: the server needs a token, and this connection has none yet: `connect` first.
    Unauthenticated = 110,
    /// 111: the token of a `connect` or `refresh` was refused (the message says why).
    InvalidToken = 111,
    /// 112: clustered with a shared history, and the broker did not take the message
    /// (unreachable or refused): no node delivers it; try again.
    Unavailable = 112,
}

impl ErrorCode {
    /// The number sent in `"code"`.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The message sent when the caller gives none.
    pub const fn message(self) -> &'static str {
        match self {
            ErrorCode::BadCommand => "bad command",
            ErrorCode::BadTopic => "bad topic",
            ErrorCode::TooManyTopics => "too many topics",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::NotSubscribed => "not subscribed",
            ErrorCode::Unrecoverable => "unrecoverable position",
            ErrorCode::MessageTooLarge => "message too large",
            ErrorCode::Overloaded => "overloaded, try later",
            ErrorCode::ShuttingDown => "server shutting down",
            ErrorCode::Unauthenticated => "connect with a token first",
            ErrorCode::InvalidToken => "invalid token",
            ErrorCode::Unavailable => "cluster log unavailable",
        }
    }
}

/// One client command with its id, as [`parse`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's id for this command, 1 to [`MAX_ID`]; its reply carries it back.
    pub id: u64,
    /// What the client asks for.
    pub command: Command,
}

/// What a client asks for. Topics are as sent: the caller checks the topic rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Receive the topic's messages, first replaying those after `since` when given.
    Subscribe {
        /// The topic.
        topic: String,
        /// The last position the client saw, to recover from.
        since: Option<Since>,
    },
    /// Stop receiving the topic's messages.
    Unsubscribe {
        /// The topic.
        topic: String,
    },
    /// Publish one message to the topic.
    Publish {
        /// The topic.
        topic: String,
        /// The message.
        payload: Payload,
    },
    /// Ask how many subscribers the topic has.
    Presence {
        /// The topic.
        topic: String,
    },
    /// Authenticate a connection admitted without a token.
    Connect {
        /// The token (a JWT), never logged.
        token: String,
    },
    /// Replace the connection's token before it expires.
    Refresh {
        /// The new token (a JWT), never logged.
        token: String,
    },
}

/// A position in a topic's history: the offset of the last message seen, in the epoch
/// (history incarnation) it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The offset of the last message the client saw.
    pub offset: u64,
    /// The epoch that offset belongs to.
    pub epoch: String,
}

/// A published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// From `data`: the JSON text of the value exactly as sent, without the whitespace
    /// around it. Published as a text message.
    Text(String),
    /// From `b64`: the decoded bytes. Published as a binary message.
    Binary(Vec<u8>),
}

/// Why a client's text is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not one complete JSON value (garbage, truncated, trailing bytes): the peer does not
    /// speak the protocol, and the caller closes the connection instead of replying.
    #[error("not JSON")]
    NotJson,
    /// JSON, but not a valid command: reply with [`ErrorCode::BadCommand`], `message` and
    /// `id` (`None` when the id is missing, repeated or not an integer 1 to [`MAX_ID`]).
    #[error("bad command: {message}")]
    BadCommand {
        /// The command's id, when it could be read.
        id: Option<u64>,
        /// What is wrong, short and safe to send back: it never quotes the input.
        message: String,
    },
}

/// Parses one client command: the text of one WebSocket message.
///
/// ```
/// use hubcast::wire::v1::{parse, Command, Malformed, Request};
///
/// let request = parse(br#"{"id":2,"unsubscribe":{"topic":"prices"}}"#).expect("a command");
/// let topic = "prices".to_owned();
/// assert_eq!(request, Request { id: 2, command: Command::Unsubscribe { topic } });
///
/// assert_eq!(parse(b"hello"), Err(Malformed::NotJson));
/// assert!(matches!(parse(b"[1]"), Err(Malformed::BadCommand { id: None, .. })));
/// ```
pub fn parse(text: &[u8]) -> Result<Request, Malformed> {
    const TOP: [&str; 7] = [
        "id",
        "subscribe",
        "unsubscribe",
        "publish",
        "presence",
        "connect",
        "refresh",
    ];
    let top = match members(text, &TOP) {
        Ok(Some(top)) => top,
        Ok(None) => return Err(bad(None, "a command is a JSON object".into())),
        Err(_) => return Err(Malformed::NotJson),
    };
    let [
        id,
        subscribe,
        unsubscribe,
        publish,
        presence,
        connect,
        refresh,
    ] = top.values;
    // A repeated id is not readable: answering either one could mislead the client.
    let id = id.filter(|_| top.repeated & 1 == 0).and_then(read_id);
    if top.unknown {
        let message = "unknown field: a command has an id and one of subscribe, unsubscribe, \
                       publish, presence, connect, refresh";
        return Err(bad(id, message.into()));
    }
    if top.repeated != 0 {
        return Err(bad(id, "repeated field".into()));
    }
    let Some(id) = id else {
        return Err(bad(
            None,
            format!("id must be an integer from 1 to {MAX_ID}"),
        ));
    };
    let given = [subscribe, unsubscribe, publish, presence, connect, refresh];
    let command = match given {
        [Some(body), None, None, None, None, None] => parse_subscribe(body),
        [None, Some(body), None, None, None, None] => {
            one_string(body, "unsubscribe", &["topic"]).map(|topic| Command::Unsubscribe { topic })
        }
        [None, None, Some(body), None, None, None] => parse_publish(body),
        [None, None, None, Some(body), None, None] => {
            one_string(body, "presence", &["topic"]).map(|topic| Command::Presence { topic })
        }
        [None, None, None, None, Some(body), None] => {
            one_string(body, "connect", &["token"]).map(|token| Command::Connect { token })
        }
        [None, None, None, None, None, Some(body)] => {
            one_string(body, "refresh", &["token"]).map(|token| Command::Refresh { token })
        }
        [None, None, None, None, None, None] => Err("no command: expected subscribe, \
             unsubscribe, publish, presence, connect or refresh"
            .into()),
        _ => Err("more than one command".into()),
    };
    command
        .map(|command| Request { id, command })
        .map_err(|message| bad(Some(id), message))
}

fn bad(id: Option<u64>, message: String) -> Malformed {
    Malformed::BadCommand { id, message }
}

fn read_id(raw: &RawValue) -> Option<u64> {
    // Floats (`1.0`, `1e300`), negatives and strings fail as u64: an id is an integer.
    serde_json::from_str::<u64>(raw.get())
        .ok()
        .filter(|id| (1..=MAX_ID).contains(id))
}

fn parse_subscribe(body: &RawValue) -> Result<Command, String> {
    let [topic, since] = object(body, "subscribe", &["topic", "since"])?;
    let topic = string(topic, "subscribe.topic")?;
    let since = match since {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => {
            let [offset, epoch] = object(raw, "subscribe.since", &["offset", "epoch"])?;
            let offset = offset.ok_or("missing subscribe.since.offset")?;
            let offset = serde_json::from_str::<u64>(offset.get())
                .map_err(|_| "subscribe.since.offset must be a non-negative integer")?;
            let epoch = string(epoch, "subscribe.since.epoch")?;
            Some(Since { offset, epoch })
        }
    };
    Ok(Command::Subscribe { topic, since })
}

fn parse_publish(body: &RawValue) -> Result<Command, String> {
    let [topic, data, b64] = object(body, "publish", &["topic", "data", "b64"])?;
    let topic = string(topic, "publish.topic")?;
    let payload = match (data, b64) {
        (Some(data), None) => {
            // `data` was only skipped so far (without recursion); refuse here what a
            // push could not carry to a client's default JSON reader.
            if nests_deeper_than(data.get(), MAX_DEPTH) {
                return Err(format!("publish.data nests deeper than {MAX_DEPTH} levels"));
            }
            Payload::Text(data.get().to_owned())
        }
        (None, Some(b64)) => {
            let text = str_of(b64).ok_or("publish.b64 must be a string")?;
            let bytes = STANDARD
                .decode(text.as_bytes())
                .map_err(|_| "publish.b64 must be standard base64 (with padding)")?;
            Payload::Binary(bytes)
        }
        (None, None) => return Err("publish needs data or b64".into()),
        (Some(_), Some(_)) => return Err("publish takes data or b64, not both".into()),
    };
    Ok(Command::Publish { topic, payload })
}

/// The value of the one member of an object `what` whose only field, a string, is
/// `field`.
fn one_string(
    body: &RawValue,
    what: &str,
    field: &'static [&'static str; 1],
) -> Result<String, String> {
    let [value] = object(body, what, field)?;
    string(value, &format!("{what}.{}", field[0]))
}

/// The members of an object named `what` that may have exactly the fields `names`, each
/// still raw JSON; a message naming the fault when it is not such an object.
fn object<'a, const N: usize>(
    raw: &'a RawValue,
    what: &str,
    names: &'static [&'static str; N],
) -> Result<[Option<&'a RawValue>; N], String> {
    // `raw` is valid JSON already, so the only failure left is a number too large for
    // serde_json (`1e400`), which is not an object either.
    let Some(m) = members(raw.get().as_bytes(), names).ok().flatten() else {
        return Err(format!("{what} must be an object"));
    };
    if m.unknown {
        return Err(format!(
            "unknown field in {what}: expected {}",
            names.join(", ")
        ));
    }
    if m.repeated != 0 {
        return Err(format!("repeated field in {what}"));
    }
    Ok(m.values)
}

fn string(raw: Option<&RawValue>, field: &str) -> Result<String, String> {
    let raw = raw.ok_or_else(|| format!("missing {field}"))?;
    match str_of(raw) {
        Some(s) => Ok(s.into_owned()),
        // JSON's grammar allows a lone surrogate escape (`"\ud800"`); Unicode does not.
        None if raw.get().starts_with('"') => Err(format!("{field} is not valid Unicode")),
        None => Err(format!("{field} must be a string")),
    }
}

/// The value of a raw JSON string, borrowed when it has no escapes.
fn str_of(raw: &RawValue) -> Option<Cow<'_, str>> {
    let json = raw.get();
    match json.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        // A valid JSON string without a backslash holds its value verbatim.
        Some(inner) if !json.contains('\\') => Some(Cow::Borrowed(inner)),
        Some(_) => serde_json::from_str::<String>(json).ok().map(Cow::Owned),
        None => None,
    }
}

/// Whether valid JSON text nests arrays and objects more than `limit` levels deep.
fn nests_deeper_than(json: &str, limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The members of one JSON object, found by name and kept raw for a second, typed look.
/// Reading them never fails on valid JSON, so every error serde_json reports is about
/// the text itself, and the id can be read even when the rest is wrong.
struct Members<'a, const N: usize> {
    values: [Option<&'a RawValue>; N],
    /// Bit i is set when names\[i] appeared more than once.
    repeated: u32,
    /// A name outside the list appeared.
    unknown: bool,
}

/// Reads `json` as one JSON value: its members when it is an object, `None` when it is
/// another value, an error when it is not JSON.
fn members<'a, const N: usize>(
    json: &'a [u8],
    names: &'static [&'static str; N],
) -> serde_json::Result<Option<Members<'a, N>>> {
    // Any other value is only checked against JSON's grammar, as `IgnoredAny` does: read
    // as a value, `1e400` (too large for an f64) or `"\ud800"` (no character) would
    // fail, though both are JSON.
    if json.trim_ascii_start().first() != Some(&b'{') {
        return serde_json::from_slice::<IgnoredAny>(json).map(|_| None);
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let members = Shape(names).deserialize(&mut de)?;
    de.end()?;
    Ok(members)
}

/// Reads a JSON object, keeping its members (see [`Members`]).
struct Shape<const N: usize>(&'static [&'static str; N]);

impl<'de, const N: usize> DeserializeSeed<'de> for Shape<N> {
    type Value = Option<Members<'de, N>>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Shape<N> {
    type Value = Option<Members<'de, N>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = Members {
            values: [None; N],
            repeated: 0,
            unknown: false,
        };
        while let Some(slot) = map.next_key_seed(Name(self.0))? {
            // A raw value is skipped by a loop, not by recursion: any depth is safe.
            let value: &'de RawValue = map.next_value()?;
            match slot {
                Some(i) if m.values[i].is_some() => m.repeated |= 1 << i,
                Some(i) => m.values[i] = Some(value),
                None => m.unknown = true,
            }
        }
        Ok(Some(m))
    }
}

/// Reads an object key as its position in a list of names (`None`: not in the list).
/// Keys are compared after unescaping (`"top\u0069c"` is `topic`) and without copying.
struct Name<const N: usize>(&'static [&'static str; N]);

impl<'de, const N: usize> DeserializeSeed<'de> for Name<N> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<const N: usize> Visitor<'_> for Name<N> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|name| *name == key))
    }
}

/// The push that carries one published message to every v1 subscriber of `topic`:
/// `{"topic":…,"offset":…,"data":…}`, or `"b64":…` instead of `data` for binary.
///
/// `data` is the payload itself when it is valid JSON (within [`MAX_DEPTH`]), inserted
/// as is; otherwise a JSON string of the text. A `Binary` payload — and a text payload
/// that is not UTF-8, which the engine never makes — is sent as standard base64, so no
/// byte is lost. Any opcode other than `Binary` counts as text. The bytes are the same
/// for every recipient and are built once per message, in one allocation.
///
/// ```
/// use hubcast::wire::frame::Opcode;
/// use hubcast::wire::v1::push;
///
/// let json = push("prices", 58, Opcode::Text, br#"{"EURUSD":1.0842}"#);
/// assert_eq!(json, br#"{"topic":"prices","offset":58,"data":{"EURUSD":1.0842}}"#);
/// let text = push("chat", 7, Opcode::Text, b"say \"hi\"");
/// assert_eq!(text, br#"{"topic":"chat","offset":7,"data":"say \"hi\""}"#);
/// let binary = push("raw", 9, Opcode::Binary, &[0xff, 0x00]);
/// assert_eq!(binary, br#"{"topic":"raw","offset":9,"b64":"/wA="}"#);
/// ```
pub fn push(topic: &str, offset: u64, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    enum Body<'a> {
        Json(&'a str),
        Text(&'a str),
        Binary(&'a [u8]),
    }
    let body = match opcode {
        Opcode::Binary => Body::Binary(payload),
        _ => match serde_json::from_slice::<&RawValue>(payload) {
            Ok(raw) if !nests_deeper_than(raw.get(), MAX_DEPTH) => Body::Json(raw.get()),
            _ => match std::str::from_utf8(payload) {
                Ok(text) => Body::Text(text),
                Err(_) => Body::Binary(payload),
            },
        },
    };
    const HEAD: &str = "{\"topic\":";
    const OFFSET: &str = ",\"offset\":";
    const DATA: &str = ",\"data\":";
    const B64: &str = ",\"b64\":\"";
    let tail = match body {
        Body::Json(json) => DATA.len() + json.len(),
        Body::Text(text) => DATA.len() + quoted_len(text),
        // Only a slice longer than memory could overflow; `String` grows if it ever did.
        Body::Binary(bytes) => B64.len() + base64::encoded_len(bytes.len(), true).unwrap_or(0) + 1,
    };
    let len = HEAD.len() + quoted_len(topic) + OFFSET.len() + u64_len(offset) + tail + 1;
    let mut out = String::with_capacity(len);
    out.push_str(HEAD);
    put_str(&mut out, topic);
    out.push_str(OFFSET);
    put_u64(&mut out, offset);
    match body {
        Body::Json(json) => {
            out.push_str(DATA);
            out.push_str(json);
        }
        Body::Text(text) => {
            out.push_str(DATA);
            put_str(&mut out, text);
        }
        Body::Binary(bytes) => {
            out.push_str(B64);
            STANDARD.encode_string(bytes, &mut out);
            out.push('"');
        }
    }
    out.push('}');
    debug_assert_eq!(out.len(), len, "the push's size is computed up front");
    out.into_bytes()
}

/// The reply to a subscribe: `{"id":…,"result":{"topic":…,"offset":…,"epoch":…}}`, where
/// `offset` and `epoch` are the topic's current position. `recovered` is given only when
/// the command had `since`: whether everything after it was replayed.
pub fn subscribed(
    id: u64,
    topic: &str,
    offset: u64,
    epoch: &str,
    recovered: Option<bool>,
) -> Vec<u8> {
    let mut out = result_head(id, quoted_len(topic) + quoted_len(epoch) + 64);
    out.push_str("{\"topic\":");
    put_str(&mut out, topic);
    out.push_str(",\"offset\":");
    put_u64(&mut out, offset);
    out.push_str(",\"epoch\":");
    put_str(&mut out, epoch);
    match recovered {
        Some(true) => out.push_str(",\"recovered\":true"),
        Some(false) => out.push_str(",\"recovered\":false"),
        None => {}
    }
    out.push_str("}}");
    out.into_bytes()
}

/// The reply to an unsubscribe: `{"id":…,"result":{"topic":…}}`.
pub fn unsubscribed(id: u64, topic: &str) -> Vec<u8> {
    let mut out = result_head(id, quoted_len(topic) + 16);
    out.push_str("{\"topic\":");
    put_str(&mut out, topic);
    out.push_str("}}");
    out.into_bytes()
}

/// The reply to a publish: `{"id":…,"result":{"topic":…,"offset":…}}`, `offset` being
/// the one the message got.
pub fn published(id: u64, topic: &str, offset: u64) -> Vec<u8> {
    string_and_number(id, ("topic", topic), ("offset", offset))
}

/// The reply to a presence: `{"id":…,"result":{"topic":…,"subscribers":…}}`.
pub fn presence(id: u64, topic: &str, subscribers: u64) -> Vec<u8> {
    string_and_number(id, ("topic", topic), ("subscribers", subscribers))
}

/// The reply to a `connect` or `refresh`: `{"id":…,"result":{"sub":…,"exp":…}}` — who
/// the token names and when it expires (seconds since the UNIX epoch, as in the token).
pub fn authenticated(id: u64, sub: &str, exp: u64) -> Vec<u8> {
    string_and_number(id, ("sub", sub), ("exp", exp))
}

/// A result of one string and one number: `{"id":…,"result":{"<a>":"…","<b>":…}}`. The
/// names are the encoders' own (plain ASCII), the string is escaped.
fn string_and_number(id: u64, (a, text): (&str, &str), (b, number): (&str, u64)) -> Vec<u8> {
    let mut out = result_head(id, a.len() + b.len() + quoted_len(text) + 32);
    out.push_str("{\"");
    out.push_str(a);
    out.push_str("\":");
    put_str(&mut out, text);
    out.push_str(",\"");
    out.push_str(b);
    out.push_str("\":");
    put_u64(&mut out, number);
    out.push_str("}}");
    out.into_bytes()
}

/// An error reply: `{"id":…,"error":{"code":…,"message":…}}`, without `id` when the
/// command's id could not be read. `message` defaults to the code's own.
pub fn error(id: Option<u64>, code: ErrorCode, message: Option<&str>) -> Vec<u8> {
    let message = message.unwrap_or(code.message());
    let mut out = String::with_capacity(quoted_len(message) + 64);
    out.push('{');
    if let Some(id) = id {
        out.push_str("\"id\":");
        put_u64(&mut out, id);
        out.push(',');
    }
    out.push_str("\"error\":{\"code\":");
    put_u64(&mut out, u64::from(code.code()));
    out.push_str(",\"message\":");
    put_str(&mut out, message);
    out.push_str("}}");
    out.into_bytes()
}

/// `{"id":…,"result":` with room for `extra` more bytes.
fn result_head(id: u64, extra: usize) -> String {
    let mut out = String::with_capacity(32 + extra);
    out.push_str("{\"id\":");
    put_u64(&mut out, id);
    out.push_str(",\"result\":");
    out
}

/// Length of `s` as a JSON string literal, quotes included (see [`put_str`]).
fn quoted_len(s: &str) -> usize {
    let escapes: usize = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    s.len() + escapes + 2
}

/// Appends `s` as a JSON string literal: quotes, backslashes and control characters
/// escaped (RFC 8259 §7), everything else — all of UTF-8 — as is.
fn put_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "\\u00",
            _ => continue,
        };
        // `i` is at an ASCII byte, hence on a character boundary.
        out.push_str(&s[start..i]);
        out.push_str(escape);
        if escape == "\\u00" {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn u64_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Appends `n` in decimal without going through a formatter's temporary `String`.
fn put_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ok(text: &str) -> Request {
        match parse(text.as_bytes()) {
            Ok(request) => request,
            Err(e) => panic!("{text}: {e:?}"),
        }
    }

    /// The id and message of a BadCommand (panics on anything else).
    fn bad_command(text: &[u8]) -> (Option<u64>, String) {
        match parse(text) {
            Err(Malformed::BadCommand { id, message }) => {
                assert!(message.len() < 200, "short message: {message}");
                (id, message)
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
        }
    }

    fn value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("encoders write valid JSON")
    }

    fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
        format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn subscribe_with_and_without_since() {
        let plain = ok(r#"{"id":1,"subscribe":{"topic":"prices"}}"#);
        assert_eq!(
            plain,
            Request {
                id: 1,
                command: Command::Subscribe {
                    topic: "prices".into(),
                    since: None
                }
            }
        );
        let since =
            ok(r#"{"id":1,"subscribe":{"topic":"prices","since":{"offset":41,"epoch":"k2x9"}}}"#);
        assert_eq!(
            since.command,
            Command::Subscribe {
                topic: "prices".into(),
                since: Some(Since {
                    offset: 41,
                    epoch: "k2x9".into()
                })
            }
        );
        // Member order and whitespace do not matter; `since: null` is no since.
        let reordered = ok(" {\"subscribe\" : {\"since\":null, \"topic\":\"prices\"}, \"id\":1}\n");
        assert_eq!(reordered, plain);
        let zero = ok(r#"{"id":9,"subscribe":{"topic":"t","since":{"epoch":"","offset":0}}}"#);
        assert_eq!(
            zero.command,
            Command::Subscribe {
                topic: "t".into(),
                since: Some(Since {
                    offset: 0,
                    epoch: String::new()
                })
            }
        );
    }

    #[test]
    fn unsubscribe_presence_and_ids() {
        assert_eq!(
            ok(r#"{"id":2,"unsubscribe":{"topic":"prices"}}"#),
            Request {
                id: 2,
                command: Command::Unsubscribe {
                    topic: "prices".into()
                }
            }
        );
        assert_eq!(
            ok(r#"{"id":4,"presence":{"topic":"prices"}}"#),
            Request {
                id: 4,
                command: Command::Presence {
                    topic: "prices".into()
                }
            }
        );
        let max = format!(r#"{{"id":{MAX_ID},"presence":{{"topic":"t"}}}}"#);
        assert_eq!(ok(&max).id, MAX_ID);
    }

    #[test]
    fn publish_keeps_data_verbatim_and_decodes_b64() {
        // Inner whitespace and number spelling survive: the payload is the text as sent.
        let text = r#"{"id":3,"publish":{"topic":"prices","data":  {"EURUSD": 1.08420000000000000001, "x":[1e2]}  }}"#;
        assert_eq!(
            ok(text).command,
            Command::Publish {
                topic: "prices".into(),
                payload: Payload::Text(r#"{"EURUSD": 1.08420000000000000001, "x":[1e2]}"#.into())
            }
        );
        for (data, payload) in [
            ("42", "42"),
            (r#""é\n""#, r#""é\n""#),
            ("null", "null"),
            ("[]", "[]"),
        ] {
            let text = format!(r#"{{"id":3,"publish":{{"topic":"t","data":{data}}}}}"#);
            assert_eq!(
                ok(&text).command,
                Command::Publish {
                    topic: "t".into(),
                    payload: Payload::Text(payload.into())
                }
            );
        }
        // `\/` is how some encoders write `/`: the string is unescaped before decoding.
        let b64 = ok(r#"{"id":3,"publish":{"topic":"t","b64":"\/wA="}}"#);
        assert_eq!(
            b64.command,
            Command::Publish {
                topic: "t".into(),
                payload: Payload::Binary(vec![0xff, 0x00])
            }
        );
        let empty = ok(r#"{"id":3,"publish":{"topic":"t","b64":""}}"#);
        assert_eq!(
            empty.command,
            Command::Publish {
                topic: "t".into(),
                payload: Payload::Binary(Vec::new())
            }
        );
    }

    #[test]
    fn escaped_keys_and_topics_are_unescaped() {
        let request = ok(r#"{"\u0069d":5,"presence":{"top\u0069c":"a\"b\u00e9\n€"}}"#);
        assert_eq!(
            request,
            Request {
                id: 5,
                command: Command::Presence {
                    topic: "a\"bé\n€".into()
                }
            }
        );
    }

    #[test]
    fn published_text_goes_out_as_the_same_json() {
        let data = r#"{"EURUSD":1.0842,"note":"a \"quote\""}"#;
        let text = format!(r#"{{"id":3,"publish":{{"topic":"prices","data":{data}}}}}"#);
        let Command::Publish {
            payload: Payload::Text(payload),
            ..
        } = ok(&text).command
        else {
            panic!("a text publish");
        };
        let pushed = push("prices", 58, Opcode::Text, payload.as_bytes());
        assert_eq!(
            pushed,
            format!(r#"{{"topic":"prices","offset":58,"data":{data}}}"#).into_bytes()
        );
    }

    #[test]
    fn replies_have_the_documented_shapes() {
        assert_eq!(
            value(&subscribed(1, "prices", 57, "k2x9", Some(true))),
            json!({"id":1,"result":{"topic":"prices","offset":57,"epoch":"k2x9","recovered":true}})
        );
        assert_eq!(
            value(&subscribed(1, "prices", 57, "k2x9", Some(false))),
            json!({"id":1,"result":{"topic":"prices","offset":57,"epoch":"k2x9","recovered":false}})
        );
        assert_eq!(
            value(&subscribed(MAX_ID, "p", u64::MAX, "e\"1", None)),
            json!({"id":MAX_ID,"result":{"topic":"p","offset":u64::MAX,"epoch":"e\"1"}})
        );
        assert_eq!(
            value(&unsubscribed(2, "prices")),
            json!({"id":2,"result":{"topic":"prices"}})
        );
        assert_eq!(
            value(&published(3, "prices", 58)),
            json!({"id":3,"result":{"topic":"prices","offset":58}})
        );
        assert_eq!(
            value(&presence(4, "prices", 1234)),
            json!({"id":4,"result":{"topic":"prices","subscribers":1234}})
        );
        assert_eq!(
            value(&error(Some(5), ErrorCode::PermissionDenied, None)),
            json!({"id":5,"error":{"code":103,"message":"permission denied"}})
        );
        assert_eq!(
            value(&error(
                None,
                ErrorCode::BadCommand,
                Some("id must be \"positive\"\n")
            )),
            json!({"error":{"code":100,"message":"id must be \"positive\"\n"}})
        );
        assert_eq!(
            published(3, "prices", 0),
            br#"{"id":3,"result":{"topic":"prices","offset":0}}"#
        );
    }

    #[test]
    fn connect_and_refresh_carry_a_token() {
        assert_eq!(
            ok(r#"{"id":1,"connect":{"token":"a.b.c"}}"#),
            Request {
                id: 1,
                command: Command::Connect {
                    token: "a.b.c".into()
                }
            }
        );
        assert_eq!(
            ok(r#"{"refresh":{"token":"x.y.z"},"id":7}"#).command,
            Command::Refresh {
                token: "x.y.z".into()
            }
        );
        for (text, expected) in [
            (r#"{"id":1,"connect":{}}"#, "missing connect.token"),
            (
                r#"{"id":1,"connect":{"token":5}}"#,
                "connect.token must be a string",
            ),
            (
                r#"{"id":1,"refresh":{"token":"t","topic":"x"}}"#,
                "unknown field in refresh: expected token",
            ),
            (
                r#"{"id":1,"connect":{"token":"t"},"refresh":{"token":"t"}}"#,
                "more than one command",
            ),
        ] {
            let (id, message) = bad_command(text.as_bytes());
            assert_eq!((id, message.as_str()), (Some(1), expected), "{text}");
        }
        // Whatever is wrong with a token command, the reply never quotes the token.
        let (_, message) = bad_command(br#"{"id":1,"connect":{"token":["secret"]}}"#);
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn authenticated_names_subject_and_expiry() {
        assert_eq!(
            value(&authenticated(1, "al\"ice", 1_700_000_000)),
            json!({"id":1,"result":{"sub":"al\"ice","exp":1_700_000_000u64}})
        );
    }

    #[test]
    fn error_codes_are_numbered_as_documented() {
        let codes = [
            (ErrorCode::BadCommand, 100, "bad command"),
            (ErrorCode::BadTopic, 101, "bad topic"),
            (ErrorCode::TooManyTopics, 102, "too many topics"),
            (ErrorCode::PermissionDenied, 103, "permission denied"),
            (ErrorCode::AlreadySubscribed, 104, "already subscribed"),
            (ErrorCode::NotSubscribed, 105, "not subscribed"),
            (ErrorCode::Unrecoverable, 106, "unrecoverable position"),
            (ErrorCode::MessageTooLarge, 107, "message too large"),
            (ErrorCode::Overloaded, 108, "overloaded, try later"),
            (ErrorCode::ShuttingDown, 109, "server shutting down"),
            (
                ErrorCode::Unauthenticated,
                110,
                "connect with a token first",
            ),
            (ErrorCode::InvalidToken, 111, "invalid token"),
            (ErrorCode::Unavailable, 112, "cluster log unavailable"),
        ];
        for (code, number, message) in codes {
            assert_eq!((code.code(), code.message()), (number, message));
            let reply = value(&error(Some(1), code, None));
            assert_eq!(reply["error"]["code"], json!(number));
            assert_eq!(reply["error"]["message"], json!(message));
        }
    }

    #[test]
    fn push_inserts_json_payloads_verbatim() {
        for payload in [
            r#"{"EURUSD":1.0842}"#,
            "1.08420000000000000001",
            r#""already a string""#,
            "[1, 2 ,3]",
            "true",
            "null",
        ] {
            let pushed = push("prices", 58, Opcode::Text, payload.as_bytes());
            let expected = format!(r#"{{"topic":"prices","offset":58,"data":{payload}}}"#);
            assert_eq!(String::from_utf8(pushed.clone()).expect("utf-8"), expected);
            value(&pushed);
        }
        // Whitespace around the value is not part of it.
        assert_eq!(
            push("t", 1, Opcode::Text, b" \n{\"a\":1}\t"),
            br#"{"topic":"t","offset":1,"data":{"a":1}}"#
        );
    }

    #[test]
    fn push_turns_other_text_into_a_string() {
        for text in [
            "hello",
            "say \"hi\"\n\\ \u{1}\u{1f}",
            "",
            "{\"a\":",
            "é€😀",
            "1 2",
        ] {
            let pushed = value(&push("t", 7, Opcode::Text, text.as_bytes()));
            assert_eq!(
                pushed,
                json!({"topic":"t","offset":7,"data":text}),
                "{text:?}"
            );
        }
        assert_eq!(
            push("t", 7, Opcode::Text, b"a\x01b"),
            br#"{"topic":"t","offset":7,"data":"a\u0001b"}"#
        );
    }

    #[test]
    fn push_sends_binary_as_base64() {
        let bytes: Vec<u8> = (0..=255).collect();
        let pushed = value(&push("t", 9, Opcode::Binary, &bytes));
        assert_eq!(
            pushed,
            json!({"topic":"t","offset":9,"b64":STANDARD.encode(&bytes)})
        );
        // Binary that happens to be JSON is still binary.
        assert_eq!(
            push("t", 9, Opcode::Binary, b"{}"),
            br#"{"topic":"t","offset":9,"b64":"e30="}"#
        );
        assert_eq!(
            push("t", 9, Opcode::Binary, b""),
            br#"{"topic":"t","offset":9,"b64":""}"#
        );
        // Text that is not UTF-8 cannot be a JSON string: sent as bytes, not altered.
        assert_eq!(
            push("t", 9, Opcode::Text, b"\xff"),
            br#"{"topic":"t","offset":9,"b64":"/w=="}"#
        );
    }

    #[test]
    fn push_escapes_topics() {
        for topic in [
            "a\"b",
            "line\nbreak",
            "tab\there",
            "back\\slash",
            "ünï€😀",
            "\u{0}\u{7f}",
        ] {
            let pushed = value(&push(topic, u64::MAX, Opcode::Text, b"1"));
            assert_eq!(pushed, json!({"topic":topic,"offset":u64::MAX,"data":1}));
        }
        assert_eq!(
            push("a\"\n", 0, Opcode::Text, b"1"),
            br#"{"topic":"a\"\n","offset":0,"data":1}"#
        );
    }

    #[test]
    fn push_keeps_deep_json_within_what_readers_accept() {
        let deepest = nested("[", "", "]", MAX_DEPTH);
        let pushed = push("t", 1, Opcode::Text, deepest.as_bytes());
        assert!(pushed.ends_with(format!("{deepest}}}").as_bytes()));
        // The reason for MAX_DEPTH: serde_json's default reader takes this push...
        serde_json::from_slice::<Value>(&pushed).expect("readable at MAX_DEPTH");
        // ...and not one level more.
        let too_deep = format!(r#"{{"data":{}}}"#, nested("[", "", "]", MAX_DEPTH + 1));
        assert!(serde_json::from_str::<Value>(&too_deep).is_err());
        // Deeper JSON travels as a string instead.
        let deeper = nested("[", "", "]", MAX_DEPTH + 1);
        let pushed = value(&push("t", 1, Opcode::Text, deeper.as_bytes()));
        assert_eq!(pushed["data"], json!(deeper));
        // Brackets inside strings are not nesting.
        let in_string = format!(r#"["{}"]"#, "[".repeat(1000));
        let pushed = push("t", 1, Opcode::Text, in_string.as_bytes());
        assert!(pushed.ends_with(format!("{in_string}}}").as_bytes()));
    }

    #[test]
    fn unknown_repeated_and_missing_fields_are_bad_commands() {
        let cases: &[(&str, Option<u64>)] = &[
            (r#"{"id":1,"subscribe":{"topic":"t"},"extra":1}"#, Some(1)),
            (r#"{"id":1,"subscribe":{"topic":"t","sinse":{}}}"#, Some(1)),
            (
                r#"{"id":1,"subscribe":{"topic":"t","since":{"offset":1,"epoch":"e","x":0}}}"#,
                Some(1),
            ),
            (
                r#"{"id":1,"subscribe":{"topic":"t","since":{"offset":1}}}"#,
                Some(1),
            ),
            (
                r#"{"id":1,"subscribe":{"topic":"t","since":{"epoch":"e"}}}"#,
                Some(1),
            ),
            (
                r#"{"id":1,"subscribe":{"topic":"t","since":{"offset":-1,"epoch":"e"}}}"#,
                Some(1),
            ),
            (
                r#"{"id":1,"subscribe":{"topic":"t","since":{"offset":1.5,"epoch":"e"}}}"#,
                Some(1),
            ),
            (
                r#"{"id":1,"subscribe":{"topic":"t","since":{"offset":1,"epoch":2}}}"#,
                Some(1),
            ),
            (r#"{"id":1,"subscribe":{"topic":"t","since":[1]}}"#, Some(1)),
            (r#"{"id":1,"subscribe":{"topic":1}}"#, Some(1)),
            (r#"{"id":1,"subscribe":{"topic":null}}"#, Some(1)),
            (r#"{"id":1,"subscribe":{}}"#, Some(1)),
            (r#"{"id":1,"subscribe":"prices"}"#, Some(1)),
            (r#"{"id":1,"subscribe":{"topic":"t","topic":"u"}}"#, Some(1)),
            (
                r#"{"id":1,"unsubscribe":{"topic":"t","since":null}}"#,
                Some(1),
            ),
            (r#"{"id":1,"presence":{"topic":"t","data":1}}"#, Some(1)),
            (r#"{"id":1,"publish":{"topic":"t"}}"#, Some(1)),
            (
                r#"{"id":1,"publish":{"topic":"t","data":1,"b64":""}}"#,
                Some(1),
            ),
            (
                r#"{"id":1,"publish":{"topic":"t","b64":"not base64!"}}"#,
                Some(1),
            ),
            (r#"{"id":1,"publish":{"topic":"t","b64":"/w"}}"#, Some(1)),
            (r#"{"id":1,"publish":{"topic":"t","b64":[1]}}"#, Some(1)),
            (r#"{"id":1,"publish":{"data":1}}"#, Some(1)),
            (r#"{"id":1}"#, Some(1)),
            (
                r#"{"id":1,"subscribe":{"topic":"t"},"presence":{"topic":"t"}}"#,
                Some(1),
            ),
            (
                r#"{"id":1,"subscribe":{"topic":"t"},"subscribe":{"topic":"t"}}"#,
                Some(1),
            ),
            (r#"{"id":1,"id":1,"subscribe":{"topic":"t"}}"#, None),
            (r#"{"subscribe":{"topic":"t"}}"#, None),
            (r#"{}"#, None),
        ];
        for &(text, id) in cases {
            assert_eq!(bad_command(text.as_bytes()).0, id, "{text}");
        }
        let (_, message) = bad_command(br#"{"id":1,"subscribe":{"topic":"t","sinse":{}}}"#);
        assert_eq!(message, "unknown field in subscribe: expected topic, since");
        // A lone surrogate escape is JSON by grammar (RFC 8259 §8.2), but no string.
        let (_, message) = bad_command(br#"{"id":1,"presence":{"topic":"\ud800"}}"#);
        assert_eq!(message, "presence.topic is not valid Unicode");
        let (_, message) =
            bad_command(br#"{"id":1,"subscribe":{"topic":"t"},"presence":{"topic":"t"}}"#);
        assert_eq!(message, "more than one command");
    }

    #[test]
    fn ids_that_cannot_be_read_are_none() {
        for id in [
            "0",
            "-1",
            "1.5",
            "1.0",
            "1e2",
            "\"1\"",
            "9007199254740992",
            "1e300",
            "1e400",
            "18446744073709551616",
            "null",
            "true",
            "[1]",
            "{}",
        ] {
            let text = format!(r#"{{"id":{id},"subscribe":{{"topic":"t"}}}}"#);
            let (got, message) = bad_command(text.as_bytes());
            assert_eq!(got, None, "{id}");
            assert!(message.starts_with("id must be"), "{id}: {message}");
        }
        // An unreadable id and another fault: still no id.
        assert_eq!(bad_command(br#"{"id":0,"foo":1}"#).0, None);
    }

    #[test]
    fn json_that_is_not_an_object_is_a_bad_command_without_id() {
        for text in [
            "[1]",
            "\"x\"",
            "42",
            "-1.5e3",
            "null",
            "true",
            "[]",
            " [ {\"id\":1} ] ",
        ] {
            assert_eq!(
                bad_command(text.as_bytes()),
                (None, "a command is a JSON object".into()),
                "{text}"
            );
        }
    }

    /// Found by the fuzz property in tests/fuzz/v1.rs: these are JSON values (RFC 8259:
    /// a number of any size, a lone surrogate escape) that are not objects, and were
    /// taken for text that is not JSON — closing the connection instead of answering.
    #[test]
    fn json_that_serde_json_cannot_convert_is_still_a_bad_command() {
        for text in [
            " 1E400 ",
            "-1e400",
            "\"\\ud800\"",
            "[1e400]",
            "{\"id\":1e400}",
        ] {
            assert_eq!(bad_command(text.as_bytes()).0, None, "{text}");
        }
    }

    #[test]
    fn text_that_is_not_json_is_not_json() {
        for text in [
            &b"hello"[..],
            b"",
            b"   ",
            b"{",
            br#"{"id":1,"subscribe":{"topic":"t"}"#,
            br#"{"id":1,"subscribe":{"topic":"t"}}}"#,
            br#"{"id":1} {"id":2}"#,
            b"{'id':1}",
            br#"{"id":1,}"#,
            br#"{"id":01}"#,
            b"\xef\xbb\xbf{}",
            b"{\"id\":1,\"presence\":{\"topic\":\"\xff\"}}",
            b"{\"id\":1,\"presence\":{\"topic\":\"a\nb\"}}",
            // A key is decoded by serde_json itself, which refuses a lone surrogate.
            br#"{"id":1,"\ud800":{"topic":"t"}}"#,
            b"NaN",
        ] {
            assert_eq!(
                parse(text),
                Err(Malformed::NotJson),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn deep_nesting_costs_no_stack() {
        const DEEP: usize = 10_000;
        let arrays = nested("[", "", "]", DEEP);
        assert_eq!(bad_command(arrays.as_bytes()).0, None);
        let objects = nested("{\"a\":", "1", "}", DEEP);
        assert_eq!(bad_command(objects.as_bytes()).0, None);
        let data = format!(r#"{{"id":1,"publish":{{"topic":"t","data":{arrays}}}}}"#);
        let (id, message) = bad_command(data.as_bytes());
        assert_eq!(
            (id, message.as_str()),
            (Some(1), "publish.data nests deeper than 126 levels")
        );
        let b64 = format!(r#"{{"id":1,"publish":{{"topic":"t","b64":{arrays}}}}}"#);
        assert_eq!(bad_command(b64.as_bytes()).0, Some(1));
        let since = format!(r#"{{"id":1,"subscribe":{{"topic":"t","since":{objects}}}}}"#);
        assert_eq!(bad_command(since.as_bytes()).0, Some(1));
        let id = format!(r#"{{"id":{arrays},"presence":{{"topic":"t"}}}}"#);
        assert_eq!(bad_command(id.as_bytes()).0, None);
        // Deep but cut off: truncated JSON, like any other.
        assert_eq!(parse("[".repeat(DEEP).as_bytes()), Err(Malformed::NotJson));
        // Data at the limit is accepted.
        let deepest = nested("[", "", "]", MAX_DEPTH);
        let ok_data = format!(r#"{{"id":1,"publish":{{"topic":"t","data":{deepest}}}}}"#);
        assert_eq!(
            ok(&ok_data).command,
            Command::Publish {
                topic: "t".into(),
                payload: Payload::Text(deepest)
            }
        );
    }

    #[test]
    fn messages_never_echo_the_input() {
        let key = "k".repeat(10_000);
        let text = format!(r#"{{"id":1,"subscribe":{{"topic":"t","{key}":1}}}}"#);
        let (id, message) = bad_command(text.as_bytes());
        assert_eq!(id, Some(1));
        assert!(!message.contains("kkk"), "{message}");
        let text = format!(r#"{{"id":1,"subscribe":{{"topic":{{"{key}":1}}}}}}"#);
        assert!(!bad_command(text.as_bytes()).1.contains("kkk"));
    }

    #[test]
    fn offers_v1_matches_the_exact_token() {
        let offers = |values: &[&str]| offers_v1(values.iter().map(|v| v.as_bytes()));
        assert!(offers(&["hubcast.v1"]));
        assert!(offers(&["foo, hubcast.v1"]));
        assert!(offers(&["foo,hubcast.v1,bar"]));
        assert!(offers(&[" \thubcast.v1 , foo"]));
        assert!(offers(&["foo", "hubcast.v1"]));
        assert!(!offers(&["Hubcast.v1"]));
        assert!(!offers(&["hubcast.v10"]));
        assert!(!offers(&["hubcast.v1x, hubcast"]));
        assert!(!offers(&["hubcast.v1;q=1"]));
        assert!(!offers(&["\"hubcast.v1\""]));
        assert!(!offers(&[""]));
        assert!(!offers(&[]));
    }
}
