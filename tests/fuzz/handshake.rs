//! Arbitrary bytes as an HTTP request to a running server: it answers with an HTTP
//! status or closes, within the handshake timeout, never with a `101` unless the
//! request was a valid handshake — and a valid one, however its header names are cased,
//! ordered, spaced or mixed with other headers, always gets its `101`. The unit property
//! in `src/edge/upgrade.rs` holds `check_handshake` to the RFC; this one holds the whole
//! HTTP path to it, over a socket.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseResult;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// The server's `handshake_timeout` here: short, so silent clients cost little.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(300);

/// What a request was built to be.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    /// A valid handshake.
    Valid,
    /// A handshake broken in one way: this one.
    Broken(Fault),
    /// Arbitrary bytes.
    Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    NoHost,
    TwoHosts,
    TwoKeys,
    KeyNot16Bytes,
    Version8,
    NoUpgradeToken,
    Http10,
    Post,
    BadTopic,
    /// A control byte inside a header: not HTTP.
    ControlByte,
    /// The head stops before its blank line, and the client waits.
    Truncated,
}

#[derive(Clone)]
struct Case {
    plan: Plan,
    bytes: Vec<u8>,
    /// Whether the client shuts down its write side after sending (a broken or random
    /// request only, not a truncated one: hyper may then close before answering, which
    /// is fine).
    half_close: bool,
    writes: Vec<Index>,
}

/// The bytes as text, so a failing case reads like the request it is.
impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("plan", &self.plan)
            .field("bytes", &format_args!("\"{}\"", self.bytes.escape_ascii()))
            .field("half_close", &self.half_close)
            .field("writes", &self.writes.len())
            .finish()
    }
}

/// `name` with its letters' case flipped where `mask` has a bit set.
fn cased(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| match mask >> (i % 64) & 1 {
            1 => c.to_ascii_uppercase(),
            _ => c,
        })
        .collect()
}

/// A valid handshake's header fields, then the fault's change to them.
fn fields(
    key: [u8; 16],
    extra: Vec<(String, String)>,
    fault: Option<Fault>,
) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = vec![
        ("host".into(), "127.0.0.1:1".into()),
        ("connection".into(), "keep-alive, Upgrade".into()),
        ("upgrade".into(), "websocket".into()),
        ("sec-websocket-version".into(), "13".into()),
        ("sec-websocket-key".into(), STANDARD.encode(key)),
    ];
    let set = |f: &mut Vec<(String, String)>, name: &str, value: &str| {
        if let Some(field) = f.iter_mut().find(|(n, _)| n == name) {
            field.1 = value.into();
        }
    };
    match fault {
        Some(Fault::NoHost) => f.retain(|(n, _)| n != "host"),
        Some(Fault::TwoHosts) => f.push(("host".into(), "evil.example".into())),
        Some(Fault::TwoKeys) => f.push(("sec-websocket-key".into(), STANDARD.encode(key))),
        Some(Fault::KeyNot16Bytes) => set(&mut f, "sec-websocket-key", &STANDARD.encode(&key[1..])),
        Some(Fault::Version8) => set(&mut f, "sec-websocket-version", "8"),
        Some(Fault::NoUpgradeToken) => set(&mut f, "connection", "keep-alive"),
        Some(Fault::ControlByte) => set(&mut f, "upgrade", "web\u{1}socket"),
        _ => {}
    }
    f.extend(extra);
    f
}

/// Headers that change how a request is read or who may upgrade: never junk.
const RESERVED: [&str; 10] = [
    "host",
    "connection",
    "upgrade",
    "sec-websocket-version",
    "sec-websocket-key",
    "content-length",
    "transfer-encoding",
    "origin",
    "expect",
    "te",
];

fn handshake_case() -> impl Strategy<Value = Case> {
    let fault = prop_oneof![
        8 => Just(None),
        // Cut short on an open connection: only the handshake timeout ends it.
        1 => Just(Some(Fault::Truncated)),
        2 => prop::sample::select(
            &[
                Fault::NoHost,
                Fault::TwoHosts,
                Fault::TwoKeys,
                Fault::KeyNot16Bytes,
                Fault::Version8,
                Fault::NoUpgradeToken,
                Fault::Http10,
                Fault::Post,
                Fault::BadTopic,
                Fault::ControlByte,
            ][..]
        )
        .prop_map(Some),
    ];
    let extra = prop::collection::vec(
        (
            "[a-z][a-z0-9-]{0,12}".prop_filter("not a reserved header", |n| {
                !RESERVED.contains(&n.as_str()) && !n.starts_with("sec-websocket")
            }),
            "[!-~]([ -~]{0,30}[!-~])?",
        ),
        0..4,
    );
    // Whitespace a parser drops around a value: none, spaces or tabs.
    let ows = prop::sample::select(&["", " ", "  ", "\t"][..]);
    let layout = (
        any::<u64>(),
        prop::collection::vec(ows, 8),
        prop::collection::vec(any::<Index>(), 16),
        any::<Index>(),
    );
    let delivery = (
        prop::bool::weighted(0.85),
        prop::collection::vec(any::<Index>(), 0..6),
    );
    (fault, any::<[u8; 16]>(), extra, layout, delivery).prop_map(
        |(fault, key, extra, (case_mask, ows, order, cut), (half_close, writes))| {
            let mut f = fields(key, extra, fault);
            // Shuffled: order must not matter.
            for i in (1..f.len()).rev() {
                f.swap(i, order[i].index(i + 1));
            }
            let (method, version, query) = match fault {
                Some(Fault::Post) => ("POST", "HTTP/1.1", "?topic=f"),
                Some(Fault::Http10) => ("GET", "HTTP/1.0", "?topic=f"),
                Some(Fault::BadTopic) => ("GET", "HTTP/1.1", "?topic=%ff"),
                _ => ("GET", "HTTP/1.1", "?topic=f"),
            };
            let mut head = format!("{method} /ws{query} {version}\r\n");
            for (i, (name, value)) in f.iter().enumerate() {
                let pad = ows[i % ows.len()];
                let name = cased(name, case_mask);
                head.push_str(&format!("{name}:{pad}{value}{pad}\r\n"));
            }
            head.push_str("\r\n");
            let mut bytes = head.into_bytes();
            if fault == Some(Fault::Truncated) {
                bytes.truncate(cut.index(bytes.len() - 2));
            }
            Case {
                plan: fault.map_or(Plan::Valid, Plan::Broken),
                bytes,
                half_close: fault.is_some_and(|f| f != Fault::Truncated) && half_close,
                writes,
            }
        },
    )
}

fn random_case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(any::<u8>(), 0..300),
        prop::bool::weighted(0.85),
        prop::collection::vec(any::<Index>(), 0..6),
    )
        .prop_map(|(bytes, half_close, writes)| Case {
            plan: Plan::Bytes,
            bytes,
            half_close,
            writes,
        })
}

/// How the server answered.
#[derive(Debug, PartialEq)]
enum Answer {
    Status(u16),
    /// Closed without a response.
    Closed,
    /// Something that is not a status line.
    NotHttp(String),
}

/// Reads the status line, or the end of the connection.
async fn answer(stream: &mut TcpStream) -> Answer {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        if let Some(end) = got.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&got[..end]).into_owned();
            // hyper answers an HTTP/1.0 request in HTTP/1.0.
            let rest = line
                .strip_prefix("HTTP/1.1 ")
                .or(line.strip_prefix("HTTP/1.0 "));
            let status = rest.and_then(|r| r.get(..3));
            return match status.and_then(|s| s.parse().ok()) {
                Some(code) => Answer::Status(code),
                None => Answer::NotHttp(line),
            };
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) if got.is_empty() => return Answer::Closed,
            Ok(0) | Err(_) => return Answer::NotHttp(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn send(server: &TestServer, case: Case) -> TestCaseResult {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    for piece in frames::pieces(&case.bytes, &case.writes) {
        if stream.write_all(piece).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    if case.half_close {
        let _ = stream.shutdown().await;
    }
    // Never longer than the handshake timeout, plus time to act on it.
    let limit = HANDSHAKE_TIMEOUT + Duration::from_secs(3);
    let Ok(answer) = tokio::time::timeout(limit, answer(&mut stream)).await else {
        return Err(TestCaseError::fail(
            "no answer and no close: the server hangs",
        ));
    };
    match (case.plan, answer) {
        (Plan::Valid, Answer::Status(101)) => {}
        (Plan::Valid, other) => prop_assert!(false, "a valid handshake got {:?}", other),
        (_, Answer::Status(101)) => prop_assert!(false, "101 for {:?}", case.plan),
        (_, Answer::NotHttp(line)) => prop_assert!(false, "not a status line: {:?}", line),
        (Plan::Broken(Fault::Post), Answer::Status(status)) => prop_assert_eq!(status, 405),
        (Plan::Broken(fault), Answer::Status(status)) => {
            prop_assert_eq!(status, 400, "{:?}", fault);
        }
        // A complete request on an open connection gets an answer; otherwise a close
        // (timeout, or an EOF hyper saw first) is fine too.
        (Plan::Broken(fault), Answer::Closed) => {
            let answers = !case.half_close && !matches!(fault, Fault::Truncated);
            prop_assert!(
                !answers,
                "{:?} on an open connection: closed without a status",
                fault
            );
        }
        (Plan::Bytes, Answer::Status(status)) => prop_assert!(status >= 400, "{}", status),
        (Plan::Bytes, Answer::Closed) => {}
    }
    Ok(())
}

#[test]
fn any_request_gets_a_status_or_a_close_and_only_valid_handshakes_get_101() {
    let server = start(|c| c.handshake_timeout = HANDSHAKE_TIMEOUT);
    let cases = prop_oneof![3 => handshake_case(), 2 => random_case()];
    check_cases_beside_a_bystander(&server, 256, cases, async |case| send(&server, case).await);
    // And a newcomer is served as usual.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut fresh = Raw::connect(server.addr, "?topic=fresh").await;
        server.hub.publish("fresh", "hello").expect("publish");
        let frame = fresh.frame().await.expect("a frame");
        assert_eq!(frame, (true, 0x1, b"hello".to_vec()));
    });
    server.stop();
}
