//! Protocol v1's codec (`hubcast::wire::v1`): `parse` on arbitrary text never panics
//! and sorts it as documented; on generated JSON commands (deep nesting, huge numbers,
//! unknown and repeated fields, wrong types, escapes, lone surrogates) it gives exactly
//! the command or the error a model of docs/protocol.md gives; and what the encoders
//! write parses back to what they were given.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hubcast::wire::frame::Opcode;
use hubcast::wire::v1::{
    self, Command, ErrorCode, MAX_DEPTH, MAX_ID, Malformed, Payload, Request, Since,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::IgnoredAny;
use serde_json::json;
use serde_json::value::RawValue;

// --- A JSON model: values that know what they are, and write themselves ------------------

/// One unit of a JSON string: a character, or a lone surrogate escape (JSON's grammar
/// allows `"\ud800"`, RFC 8259 §8.2; Unicode has no such character).
#[derive(Debug, Clone, PartialEq)]
enum Unit {
    Char(char),
    Lone(u16),
}

/// A JSON string, with which of its characters are written as `\u` escapes.
#[derive(Debug, Clone)]
struct JStr {
    units: Vec<Unit>,
    escapes: u64,
}

impl JStr {
    fn plain(s: &str) -> JStr {
        JStr {
            units: s.chars().map(Unit::Char).collect(),
            escapes: 0,
        }
    }

    /// Its value, if it is Unicode (two "lone" surrogates in a row may make a pair).
    fn text(&self) -> Option<String> {
        let utf16: Vec<u16> = self
            .units
            .iter()
            .flat_map(|u| match u {
                Unit::Char(c) => c.encode_utf16(&mut [0; 2]).to_vec(),
                Unit::Lone(s) => vec![*s],
            })
            .collect();
        String::from_utf16(&utf16).ok()
    }

    fn is(&self, name: &str) -> bool {
        self.text().is_some_and(|t| t == name)
    }

    fn write(&self, out: &mut String) {
        out.push('"');
        for (i, unit) in self.units.iter().enumerate() {
            let escape = self.escapes >> (i % 64) & 1 == 1;
            match *unit {
                Unit::Lone(s) => write!(out, "\\u{s:04x}").expect("a String"),
                Unit::Char('"') => out.push_str("\\\""),
                Unit::Char('\\') => out.push_str("\\\\"),
                Unit::Char(c) if u32::from(c) < 0x20 || escape => {
                    for unit in c.encode_utf16(&mut [0; 2]) {
                        write!(out, "\\u{unit:04X}").expect("a String");
                    }
                }
                Unit::Char(c) => out.push(c),
            }
        }
        out.push('"');
    }
}

#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    /// A number as written (any JSON number: huge, negative, fractional, exponent).
    Num(String),
    Str(JStr),
    Arr(Vec<J>),
    Obj(Vec<(JStr, J)>),
    /// Arrays nested this deep.
    Deep(usize),
}

impl J {
    fn write(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(n),
            J::Str(s) => s.write(out),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    key.write(out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
            J::Deep(n) => {
                out.push_str(&"[".repeat(*n));
                out.push_str(&"]".repeat(*n));
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// Levels of arrays and objects.
    fn depth(&self) -> usize {
        match self {
            J::Arr(items) => 1 + items.iter().map(J::depth).max().unwrap_or(0),
            J::Obj(fields) => 1 + fields.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            J::Deep(n) => *n,
            _ => 0,
        }
    }
}

// --- The model of docs/protocol.md ("Protocol v1") and the `wire::v1` docs --------------

#[derive(Debug, PartialEq)]
enum Expect {
    Command(Request),
    /// A bad command, answered with error 100 and this id.
    Bad(Option<u64>),
    /// Closed: not JSON the server can read.
    NotJson,
}

/// A JSON integer written without sign, fraction or exponent, as a u64.
fn integer(j: &J) -> Option<u64> {
    match j {
        J::Num(n) if n.bytes().all(|b| b.is_ascii_digit()) => n.parse().ok(),
        _ => None,
    }
}

fn string(j: Option<&J>) -> Option<String> {
    match j {
        Some(J::Str(s)) => s.text(),
        _ => None,
    }
}

/// The values of an object with exactly the fields `names` (each at most once, in
/// the order of `names`); `None` when it is not such an object. Its keys are decoded,
/// so one with a lone surrogate makes it unreadable as an object.
fn object<'a>(j: Option<&'a J>, names: &[&str]) -> Option<Vec<Option<&'a J>>> {
    let Some(J::Obj(fields)) = j else {
        return None;
    };
    let mut values = vec![None; names.len()];
    for (key, value) in fields {
        let slot = names.iter().position(|n| key.is(n))?;
        if values[slot].replace(value).is_some() {
            return None;
        }
    }
    Some(values)
}

/// RFC 4648 base64 with padding, canonical (unused bits zero), decoded by hand.
fn base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = text.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::new();
    for (n, quad) in b.chunks(4).enumerate() {
        let last = n + 1 == b.len() / 4;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || pad > 0 && !last {
            return None;
        }
        let mut bits = 0u32;
        for &c in &quad[..4 - pad] {
            bits = bits << 6 | ALPHABET.iter().position(|&a| a == c)? as u32;
        }
        bits <<= 6 * pad;
        let bytes = bits.to_be_bytes();
        if bytes[4 - pad..].iter().any(|&x| x != 0) {
            return None; // bits after the data
        }
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

fn command(name: &str, body: &J) -> Option<Command> {
    let body = Some(body);
    match name {
        "subscribe" => {
            let [topic, since] = object(body, &["topic", "since"])?[..] else {
                return None;
            };
            let since = match since {
                None | Some(J::Null) => None,
                Some(since) => {
                    let [offset, epoch] = object(Some(since), &["offset", "epoch"])?[..] else {
                        return None;
                    };
                    let offset = integer(offset?)?;
                    Some(Since {
                        offset,
                        epoch: string(epoch)?,
                    })
                }
            };
            let topic = string(topic)?;
            Some(Command::Subscribe { topic, since })
        }
        "unsubscribe" | "presence" => {
            let [topic] = object(body, &["topic"])?[..] else {
                return None;
            };
            let topic = string(topic)?;
            Some(match name {
                "presence" => Command::Presence { topic },
                _ => Command::Unsubscribe { topic },
            })
        }
        _ => {
            let [topic, data, b64] = object(body, &["topic", "data", "b64"])?[..] else {
                return None;
            };
            let topic = string(topic)?;
            let payload = match (data, b64) {
                (Some(d), None) if d.depth() <= MAX_DEPTH => Payload::Text(d.text()),
                (None, Some(b)) => Payload::Binary(base64(&string(Some(b))?)?),
                _ => return None,
            };
            Some(Command::Publish { topic, payload })
        }
    }
}

fn expect(j: &J) -> Expect {
    const TOP: [&str; 5] = ["id", "subscribe", "unsubscribe", "publish", "presence"];
    let J::Obj(fields) = j else {
        return Expect::Bad(None); // JSON, not an object
    };
    // The one exception to "JSON is a command or a bad command": top-level keys are
    // decoded, and a lone surrogate cannot be (tested in src/wire/v1.rs).
    if fields.iter().any(|(k, _)| k.text().is_none()) {
        return Expect::NotJson;
    }
    let count = |name: &str| fields.iter().filter(|(k, _)| k.is(name)).count();
    let value = |name: &str| fields.iter().find(|(k, _)| k.is(name)).map(|(_, v)| v);
    let id = value("id")
        .filter(|_| count("id") == 1)
        .and_then(integer)
        .filter(|id| (1..=MAX_ID).contains(id));
    if fields.iter().any(|(k, _)| !TOP.iter().any(|t| k.is(t))) || TOP.iter().any(|t| count(t) > 1)
    {
        return Expect::Bad(id);
    }
    let Some(id) = id else {
        return Expect::Bad(None);
    };
    let named: Vec<&str> = TOP[1..].iter().copied().filter(|t| count(t) == 1).collect();
    let [name] = named[..] else {
        return Expect::Bad(Some(id));
    };
    match value(name).and_then(|body| command(name, body)) {
        Some(command) => Expect::Command(Request { id, command }),
        None => Expect::Bad(Some(id)),
    }
}

// --- Generators -----------------------------------------------------------------------

fn jstr(units: impl Strategy<Value = Vec<Unit>>) -> impl Strategy<Value = JStr> {
    let escapes = prop_oneof![3 => Just(0u64), 1 => any::<u64>()];
    (units, escapes).prop_map(|(units, escapes)| JStr { units, escapes })
}

/// Characters JSON treats specially, often (quotes, backslashes, control characters),
/// then ASCII, then anything: `any::<char>()` alone almost never picks a tab.
fn json_char() -> impl Strategy<Value = char> {
    const SPECIAL: &[char] = &[
        '"', '\\', '/', '\u{0}', '\u{8}', '\t', '\n', '\u{c}', '\r', '\u{1f}', '\u{7f}',
    ];
    prop_oneof![
        2 => prop::sample::select(SPECIAL),
        3 => (0x20u8..0x7f).prop_map(char::from),
        2 => any::<char>(),
    ]
}

/// A string of [`json_char`]s.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(json_char(), 0..16).prop_map(String::from_iter)
}

fn any_str() -> impl Strategy<Value = JStr> {
    let unit = prop_oneof![
        30 => json_char().prop_map(Unit::Char),
        1 => (0xd800u16..0xe000).prop_map(Unit::Lone),
    ];
    jstr(prop::collection::vec(unit, 0..12))
}

/// `name`, sometimes with escapes (`"top\u0069c"` is `topic`).
fn key(name: &'static str) -> impl Strategy<Value = JStr> {
    jstr(Just(name.chars().map(Unit::Char).collect()))
}

fn number() -> impl Strategy<Value = String> {
    const NUMBERS: &[&str] = &[
        "0",
        "1",
        "9007199254740991",
        "9007199254740992",
        "18446744073709551615",
        "18446744073709551616",
        "123456789012345678901234567890",
        "-1",
        "-0",
        "1.0",
        "1.5",
        "1e2",
        "1E400",
        "1e400",
        "-1e400",
        "1e-400",
        "2.5e-3",
    ];
    prop_oneof![
        2 => prop::sample::select(NUMBERS).prop_map(str::to_owned),
        2 => (1..=MAX_ID).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn scalar() -> impl Strategy<Value = J> {
    prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        number().prop_map(J::Num),
        any_str().prop_map(J::Str),
    ]
}

fn any_json() -> impl Strategy<Value = J> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            prop::collection::vec((any_str(), inner), 0..4).prop_map(J::Obj),
        ]
    })
}

/// An object with each of `fields` 0, 1 or 2 times (mostly once), sometimes an unknown
/// field, in any order.
fn object_of(fields: Vec<(&'static str, BoxedStrategy<J>)>) -> impl Strategy<Value = J> {
    let times = || prop_oneof![1 => Just(0usize), 20 => Just(1), 1 => Just(2)];
    let each: Vec<_> = fields
        .into_iter()
        .map(|(name, value)| (times(), key(name), prop::collection::vec(value, 2)))
        .collect();
    let unknown = prop::collection::vec((any_str(), any_json()), 0..2);
    let unknown = prop_oneof![6 => Just(Vec::new()), 1 => unknown];
    (each, unknown, prop::collection::vec(any::<Index>(), 8)).prop_map(|(each, unknown, order)| {
        let mut fields: Vec<(JStr, J)> = each
            .into_iter()
            .flat_map(|(n, key, values)| values.into_iter().take(n).map(move |v| (key.clone(), v)))
            .collect();
        fields.extend(unknown);
        for i in (1..fields.len()).rev() {
            fields.swap(i, order[i % order.len()].index(i + 1));
        }
        J::Obj(fields)
    })
}

fn typed_or_any(typed: impl Strategy<Value = J> + 'static) -> BoxedStrategy<J> {
    prop_oneof![8 => typed, 1 => any_json()].boxed()
}

fn topic() -> BoxedStrategy<J> {
    let plain = "[a-z]{1,8}".prop_map(|t| J::Str(JStr::plain(&t)));
    typed_or_any(prop_oneof![4 => plain, 1 => any_str().prop_map(J::Str)])
}

fn body(name: &'static str) -> BoxedStrategy<J> {
    match name {
        "subscribe" => {
            let offset = prop_oneof![4 => any::<u64>().prop_map(|n| n.to_string()), 1 => number()];
            let offset = typed_or_any(offset.prop_map(J::Num));
            let epoch = typed_or_any(any_str().prop_map(J::Str));
            let since = object_of(vec![("offset", offset), ("epoch", epoch)]);
            let since = prop_oneof![3 => since, 1 => Just(J::Null), 1 => any_json()].boxed();
            object_of(vec![("topic", topic()), ("since", since)]).boxed()
        }
        "publish" => {
            let data = prop_oneof![
                6 => any_json(),
                1 => (MAX_DEPTH - 2..MAX_DEPTH + 3).prop_map(J::Deep),
                1 => Just(J::Deep(10_000)),
            ]
            .boxed();
            let b64 = prop_oneof![
                4 => prop::collection::vec(any::<u8>(), 0..20)
                    .prop_map(|b| J::Str(JStr::plain(&STANDARD.encode(b)))),
                1 => "[A-Za-z0-9+/=]{0,12}".prop_map(|s| J::Str(JStr::plain(&s))),
                1 => any_json(),
            ]
            .boxed();
            // Mostly one of data and b64.
            let which = prop_oneof![
                Just(vec![("data", data.clone())]),
                Just(vec![("b64", b64.clone())]),
                Just(vec![("data", data), ("b64", b64)]),
            ];
            which
                .prop_flat_map(|mut fields| {
                    fields.push(("topic", topic()));
                    object_of(fields)
                })
                .boxed()
        }
        _ => object_of(vec![("topic", topic())]).boxed(),
    }
}

fn commands() -> impl Strategy<Value = J> {
    let id = prop_oneof![4 => (1..=MAX_ID).prop_map(|n| n.to_string()), 1 => number()];
    let id = typed_or_any(id.prop_map(J::Num));
    let one = || prop::sample::select(&["subscribe", "unsubscribe", "publish", "presence"][..]);
    let names = prop_oneof![
        12 => one().prop_map(|n| vec![n]),
        1 => Just(Vec::new()),
        1 => (one(), one()).prop_map(|(a, b)| vec![a, b]),
    ];
    let command = names.prop_flat_map(move |names| {
        let mut fields = vec![("id", id.clone())];
        fields.extend(names.into_iter().map(|n| (n, body(n))));
        object_of(fields)
    });
    prop_oneof![12 => command, 1 => any_json()]
}

// --- Properties -------------------------------------------------------------------------

fn cases() -> proptest::test_runner::Config {
    crate::fuzzing::config(2000)
}

proptest! {
    #![proptest_config(cases())]

    /// Generated commands, with JSON whitespace around them: exactly the model's answer.
    #[test]
    fn commands_parse_as_documented(j in commands(), ws in "[ \t\r\n]{0,2}") {
        let text = format!("{ws}{}{ws}", j.text());
        let got = match v1::parse(text.as_bytes()) {
            Ok(request) => Expect::Command(request),
            Err(Malformed::BadCommand { id, message }) => {
                prop_assert!(message.len() < 200 && message.is_ascii(), "{:?}", message);
                Expect::Bad(id)
            }
            Err(Malformed::NotJson) => Expect::NotJson,
        };
        prop_assert_eq!(got, expect(&j), "{}", text);
    }
}

/// Tokens of the command language, and what breaks it.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    " ",
    "\"id\"",
    "1",
    "0",
    "-1",
    "1e400",
    "-0",
    "1.5",
    "9007199254740992",
    "\"subscribe\"",
    "\"publish\"",
    "\"presence\"",
    "\"unsubscribe\"",
    "\"topic\"",
    "\"since\"",
    "\"offset\"",
    "\"epoch\"",
    "\"data\"",
    "\"b64\"",
    "\"t\"",
    "null",
    "true",
    "\"\\u00e9\"",
    "\"\\ud800\"",
    "é",
    "\u{0}",
    "\n",
];

/// JSON's own reading of UTF-8 text: the grammar, nothing converted.
fn is_json(text: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(text).is_ok()
}

fn any_text() -> impl Strategy<Value = Vec<u8>> {
    let soup = prop::collection::vec(prop::sample::select(TOKENS), 0..24)
        .prop_map(|t| t.concat().into_bytes());
    let edit = (any::<Index>(), 0u8..3, any::<u8>());
    let mutated = (commands(), prop::collection::vec(edit, 1..4)).prop_map(|(j, edits)| {
        let mut text = j.text().into_bytes();
        for (at, op, byte) in edits {
            let i = at.index(text.len() + 1);
            match op {
                0 if i < text.len() => drop(text.remove(i)),
                1 if i < text.len() => text[i] = byte,
                _ => text.insert(i, b"{}[]\":,\\1e "[usize::from(byte) % 11]),
            }
        }
        text
    });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..64),
        2 => soup,
        2 => commands().prop_map(|j| j.text().into_bytes()),
        2 => mutated,
        1 => scalar().prop_map(|j| format!(" {} ", j.text()).into_bytes()),
    ]
}

/// The generators reach every outcome often (this replaces the fixed-seed random test
/// that `src/wire/v1.rs` had), so the properties test more than one branch.
#[test]
fn the_generators_reach_every_outcome() {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut parsed, mut modelled) = ([0usize; 3], [0usize; 4]);
    for _ in 0..1000 {
        let text = any_text().new_tree(&mut runner).expect("text").current();
        parsed[match v1::parse(&text) {
            Ok(_) => 0,
            Err(Malformed::BadCommand { .. }) => 1,
            Err(Malformed::NotJson) => 2,
        }] += 1;
        let j = commands().new_tree(&mut runner).expect("command").current();
        modelled[match expect(&j) {
            Expect::Command(_) => 0,
            Expect::Bad(Some(_)) => 1,
            Expect::Bad(None) => 2,
            Expect::NotJson => 3,
        }] += 1;
    }
    assert!(parsed.iter().all(|&n| n > 30), "{parsed:?}");
    assert!(modelled[..3].iter().all(|&n| n > 100), "{modelled:?}");
    assert!(modelled[3] > 0, "{modelled:?}");
}

proptest! {
    #![proptest_config(cases())]

    /// Any text: a command, a bad command or "not JSON" — never a panic — and "not
    /// JSON" exactly when it is not JSON (but for lone surrogates in top-level keys).
    /// `parse` reads the text of a WebSocket message, which the reader has checked to
    /// be UTF-8; other bytes must not panic, and need not be sorted further.
    #[test]
    fn any_text_is_sorted_by_whether_it_is_json(text in any_text()) {
        if std::str::from_utf8(&text).is_err() {
            let _ = v1::parse(&text);
            return Ok(());
        }
        let json = is_json(&text);
        let surrogate = text.windows(4).any(|w| {
            w[..2] == *b"\\u" && matches!(w[2], b'd' | b'D') && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
        });
        let shown = String::from_utf8_lossy(&text).into_owned();
        match v1::parse(&text) {
            Err(Malformed::NotJson) => prop_assert!(!json || surrogate, "JSON, yet NotJson: {}", shown),
            Err(Malformed::BadCommand { id, message }) => {
                prop_assert!(json, "{}", shown);
                prop_assert!(id.is_none_or(|id| (1..=MAX_ID).contains(&id)));
                prop_assert!(message.len() < 200, "{}", message);
            }
            Ok(request) => {
                prop_assert!(json, "{}", shown);
                prop_assert!((1..=MAX_ID).contains(&request.id));
                if let Command::Publish { payload: Payload::Text(data), .. } = request.command {
                    prop_assert!(serde_json::from_str::<&RawValue>(&data).is_ok());
                }
            }
        }
    }
}

/// A push's members, read back raw (`"data":null` must stay a member).
type Pushed<'a> = std::collections::BTreeMap<String, &'a RawValue>;

/// A member read as `T`.
fn member<T: serde::de::DeserializeOwned>(p: &Pushed<'_>, name: &str) -> Result<T, TestCaseError> {
    let raw = p
        .get(name)
        .ok_or_else(|| TestCaseError::fail(format!("no {name}")))?;
    serde_json::from_str(raw.get()).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => (any_json(), "[ \t\r\n]{0,2}")
            .prop_map(|(j, ws)| format!("{ws}{}{ws}", j.text()).into_bytes()),
        1 => (MAX_DEPTH - 1..MAX_DEPTH + 2).prop_map(|n| J::Deep(n).text().into_bytes()),
        2 => text().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

proptest! {
    #![proptest_config(cases())]

    /// A push is JSON that gives back its topic and offset, and the payload: JSON text
    /// verbatim (within the depth limit), other text as a string, the rest as base64.
    #[test]
    fn pushes_read_back(topic in text(), offset in any::<u64>(), binary in any::<bool>(), payload in payload()) {
        let opcode = if binary { Opcode::Binary } else { Opcode::Text };
        let bytes = v1::push(&topic, offset, opcode, &payload);
        let pushed: Pushed<'_> = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&bytes))))?;
        prop_assert_eq!(member::<String>(&pushed, "topic")?, topic);
        prop_assert_eq!(member::<u64>(&pushed, "offset")?, offset);
        let text = std::str::from_utf8(&payload).ok().filter(|_| !binary);
        let json = text
            .filter(|t| serde_json::from_str::<&RawValue>(t).is_ok())
            .map(|t| t.trim_matches([' ', '\t', '\r', '\n']))
            .filter(|t| !t.contains(&"[".repeat(MAX_DEPTH + 1)));
        let members: Vec<&str> = pushed.keys().map(String::as_str).collect();
        match (pushed.get("data"), text) {
            (Some(data), _) if json.is_some() => prop_assert_eq!(Some(data.get()), json),
            (Some(_), Some(text)) => prop_assert_eq!(member::<String>(&pushed, "data")?, text),
            _ => {
                prop_assert!(text.is_none(), "{:?}", members);
                let b64 = member::<String>(&pushed, "b64")?;
                prop_assert_eq!(STANDARD.decode(b64).ok(), Some(payload));
            }
        }
        prop_assert_eq!(members.len(), 3, "{:?}", members);
    }

    /// Replies are JSON holding exactly what they were given.
    #[test]
    fn replies_read_back(
        id in any::<u64>(),
        topic in text(),
        epoch in text(),
        offset in any::<u64>(),
        recovered in any::<Option<bool>>(),
        message in prop::option::of(text()),
        with_id in any::<bool>(),
    ) {
        let read = |bytes: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&bytes).expect("JSON");
        let mut result = json!({"topic": topic, "offset": offset, "epoch": epoch});
        if let Some(r) = recovered {
            result["recovered"] = json!(r);
        }
        prop_assert_eq!(read(v1::subscribed(id, &topic, offset, &epoch, recovered)), json!({"id": id, "result": result}));
        prop_assert_eq!(read(v1::unsubscribed(id, &topic)), json!({"id": id, "result": {"topic": topic}}));
        prop_assert_eq!(read(v1::published(id, &topic, offset)), json!({"id": id, "result": {"topic": topic, "offset": offset}}));
        prop_assert_eq!(read(v1::presence(id, &topic, offset)), json!({"id": id, "result": {"topic": topic, "subscribers": offset}}));
        let code = ErrorCode::Overloaded;
        let id = with_id.then_some(id);
        let mut error = json!({"error": {"code": code.code(), "message": message.as_deref().unwrap_or(code.message())}});
        if let Some(id) = id {
            error["id"] = json!(id);
        }
        prop_assert_eq!(read(v1::error(id, code, message.as_deref())), error);
    }
}
