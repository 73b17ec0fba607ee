//! The frame reader on a real connection: valid streams split at arbitrary points are
//! handled exactly once each, in order, and never desync; garbage always ends in the
//! close docs/protocol.md names for it, after exactly the messages before it, while a
//! bystander keeps its stream.

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseResult;
use tokio::io::AsyncWriteExt;

use super::*;

/// Topics, one per case (cases share one server).
static CASE: AtomicUsize = AtomicUsize::new(0);

fn next_topic(prefix: &str) -> String {
    format!("{prefix}{}", CASE.fetch_add(1, Ordering::Relaxed))
}

/// A client frame: `b0` (FIN, RSV, opcode), the mask key (`None`: unmasked), the
/// length it declares, in the length form `form` asks for (0 shortest, 1 at least
/// 16-bit, 2 64-bit: hubcast accepts the longer forms, as docs/protocol.md lists no
/// close for them), then `payload` masked with the key.
fn encode(b0: u8, key: Option<[u8; 4]>, declared: u64, form: u8, payload: &[u8]) -> Vec<u8> {
    let mask = if key.is_some() { 0x80 } else { 0 };
    let mut f = vec![b0];
    match (form, declared) {
        (0, 0..=125) => f.push(mask | declared as u8),
        (0 | 1, 0..=0xffff) => {
            f.push(mask | 126);
            f.extend_from_slice(&(declared as u16).to_be_bytes());
        }
        _ => {
            f.push(mask | 127);
            f.extend_from_slice(&declared.to_be_bytes());
        }
    }
    match key {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// Cut positions (sorted, within `0..=len`) from generated indices.
fn positions(len: usize, cuts: &[Index]) -> Vec<usize> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(len + 1)).collect();
    at.sort_unstable();
    at
}

/// `bytes` in pieces cut at `cuts`, as separate writes.
pub(crate) fn pieces<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at = positions(bytes.len(), cuts);
    at.push(bytes.len());
    let mut from = 0;
    at.into_iter()
        .map(|to| {
            let piece = &bytes[from..to];
            from = to;
            piece
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// Writes `bytes` as separate writes cut at `cuts` (Nagle off: the server often reads
/// them apart), ignoring write errors: the server may close first.
async fn send_in_pieces(raw: &mut Raw, bytes: &[u8], cuts: &[Index]) {
    raw.stream.set_nodelay(true).expect("nodelay");
    for piece in pieces(bytes, cuts) {
        if raw.stream.write_all(piece).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// The next frame that is not a ping or pong from the server.
async fn next_non_control(raw: &mut Raw) -> Option<(bool, u8, Vec<u8>)> {
    loop {
        match raw.frame().await? {
            (_, 0x9 | 0xA, _) => continue,
            other => return Some(other),
        }
    }
}

/// Reads a listener's data messages until the sentinel published after the case.
async fn until_sentinel(
    server: &TestServer,
    listener: &mut Raw,
    topic: &str,
) -> Vec<(u8, Vec<u8>)> {
    server.hub.publish(topic, "sentinel").expect("publish");
    let mut got = Vec::new();
    loop {
        match next_non_control(listener).await {
            Some((_, 0x1, p)) if p == b"sentinel" => return got,
            Some((_, op, p)) => got.push((op, p)),
            None => panic!("the listener lost its connection"),
        }
    }
}

// --- Valid streams --------------------------------------------------------------------

/// One item of a valid client stream.
#[derive(Debug, Clone)]
enum Item {
    /// A data message, in fragments cut at `cuts`, with a ping after the fragments
    /// `pings` point at (control frames may come between fragments).
    Message {
        binary: bool,
        payload: Vec<u8>,
        cuts: Vec<Index>,
        pings: Vec<Index>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Script {
    items: Vec<Item>,
    /// Length form and mask key of each frame, in turn (cycled).
    frames: Vec<(u8, [u8; 4])>,
    /// Where the byte stream is cut into writes.
    writes: Vec<Index>,
}

/// What a valid script must produce.
struct Encoded {
    bytes: Vec<u8>,
    messages: Vec<(u8, Vec<u8>)>,
    pings: Vec<Vec<u8>>,
}

impl Script {
    fn encode(&self) -> Encoded {
        let mut out = Encoded {
            bytes: Vec::new(),
            messages: Vec::new(),
            pings: Vec::new(),
        };
        let mut n = 0;
        let mut frame = |out: &mut Vec<u8>, b0: u8, payload: &[u8]| {
            let (form, key) = self.frames[n % self.frames.len()];
            n += 1;
            out.extend(encode(b0, Some(key), payload.len() as u64, form, payload));
        };
        let ping = |out: &mut Encoded, body: &[u8]| {
            // Unique, so each pong says which ping it answers.
            let id = u16::try_from(out.pings.len()).expect("few pings");
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(body);
            out.pings.push(payload.clone());
            payload
        };
        for item in &self.items {
            match item {
                Item::Ping(body) => {
                    let payload = ping(&mut out, body);
                    frame(&mut out.bytes, 0x89, &payload);
                }
                Item::Pong(body) => frame(&mut out.bytes, 0x8A, body),
                Item::Message {
                    binary,
                    payload,
                    cuts,
                    pings,
                } => {
                    let opcode = if *binary { 0x2 } else { 0x1 };
                    let mut at = positions(payload.len(), cuts);
                    at.dedup();
                    at.push(payload.len());
                    let pings_after: Vec<usize> = pings.iter().map(|p| p.index(at.len())).collect();
                    let mut from = 0;
                    for (k, &to) in at.iter().enumerate() {
                        let last = k + 1 == at.len();
                        let op = if k == 0 { opcode } else { 0x0 };
                        frame(&mut out.bytes, u8::from(last) << 7 | op, &payload[from..to]);
                        from = to;
                        for _ in pings_after.iter().filter(|&&p| p == k && !last) {
                            let ping_payload = ping(&mut out, b"in a fragmented message");
                            frame(&mut out.bytes, 0x89, &ping_payload);
                        }
                    }
                    out.messages.push((opcode, payload.clone()));
                }
            }
        }
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        frame(&mut out.bytes, 0x88, &close);
        out
    }
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..60, 3 => 60usize..700, 1 => 16_000usize..20_000]
}

fn item() -> impl Strategy<Value = Item> {
    let text = size()
        .prop_flat_map(|n| prop::collection::vec(any::<char>(), n))
        .prop_map(|chars| chars.into_iter().collect::<String>().into_bytes());
    let binary = size().prop_flat_map(|n| prop::collection::vec(any::<u8>(), n));
    let payload = prop_oneof![
        text.prop_map(|t| (false, t)),
        binary.prop_map(|b| (true, b))
    ];
    let cuts = prop::collection::vec(any::<Index>(), 0..5);
    let pings = prop::collection::vec(any::<Index>(), 0..3);
    let control = prop::collection::vec(any::<u8>(), 0..=120);
    prop_oneof![
        6 => (payload, cuts, pings).prop_map(|((binary, payload), cuts, pings)| Item::Message {
            binary,
            payload,
            cuts,
            pings
        }),
        1 => control.clone().prop_map(Item::Ping),
        1 => (control.clone(), any::<u8>()).prop_map(|(c, extra)| {
            let mut c = c;
            c.extend(std::iter::repeat_n(extra, usize::from(extra % 6)));
            Item::Pong(c)
        }),
    ]
}

fn script() -> impl Strategy<Value = Script> {
    (
        prop::collection::vec(item(), 1..10),
        prop::collection::vec((0u8..3, any::<[u8; 4]>()), 1..8),
        prop::collection::vec(any::<Index>(), 0..12),
    )
        .prop_map(|(items, frames, writes)| Script {
            items,
            frames,
            writes,
        })
}

async fn valid_stream(server: &TestServer, script: Script) -> TestCaseResult {
    let topic = next_topic("valid");
    let query = format!("?topic={topic}");
    let mut listener = Raw::connect(server.addr, &query).await;
    let mut sender = Raw::connect(server.addr, &query).await;
    let encoded = script.encode();
    send_in_pieces(&mut sender, &encoded.bytes, &script.writes).await;

    // The sender: pongs in the order of its pings (a newer pong may replace one still
    // waiting, never the last), then the echo of its close.
    let mut pongs = Vec::new();
    let close = loop {
        match sender.frame().await {
            Some((_, 0xA, p)) => pongs.push(p),
            Some((_, 0x8, p)) => break p,
            Some(_) => continue,
            None => return Err(TestCaseError::fail("the sender lost its connection")),
        }
    };
    let echo = String::from_utf8_lossy(&close);
    prop_assert_eq!(
        &close[..],
        &1000u16.to_be_bytes()[..],
        "close echo: {}",
        echo
    );
    let mut unanswered = encoded.pings.iter();
    for pong in &pongs {
        prop_assert!(
            unanswered.any(|p| p == pong),
            "pong out of order: {:?}",
            pong
        );
    }
    prop_assert_eq!(pongs.last(), encoded.pings.last(), "the last ping's pong");

    // Another client of the topic: every message once, in order, nothing else.
    let got = until_sentinel(server, &mut listener, &topic).await;
    prop_assert_eq!(got, encoded.messages);
    Ok(())
}

#[test]
fn valid_streams_split_anywhere_are_handled_exactly_once() {
    let server = start(|_| {});
    check_cases(256, script(), async |script| {
        valid_stream(&server, script).await
    });
    assert_eq!(server.metric("hubcast_protocol_closes_total"), 0);
    server.stop();
}

// --- Garbage --------------------------------------------------------------------------

/// The largest message the garbage server takes (`max_message_size`): small, so that
/// many frames are too big and any frame in progress ends within [`TERMINATOR`] bytes.
const MAX_MESSAGE: usize = 1024;

/// Zero bytes sent after the garbage: they complete whatever frame is in progress (at
/// most `MAX_MESSAGE` more payload bytes, or a header), and the next two zero bytes
/// are an unmasked frame. So every stream ends in a close, and the model can say which.
const TERMINATOR: usize = MAX_MESSAGE + 32;

/// How the server must end a client's stream, per docs/protocol.md.
#[derive(Debug, Clone, PartialEq)]
enum Ending {
    /// A close frame with one of these codes (more than one where a frame breaks
    /// several rules at once and the docs give no precedence).
    Close(Vec<u16>),
    /// The echo of the client's close frame: its code, or nothing.
    Echo(Vec<u8>),
    /// The stream needs more bytes (never, with the terminator).
    Open,
}

/// What the server must do with a client's bytes: publish these messages (chat mode),
/// then end like this.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    published: Vec<(u8, Vec<u8>)>,
    ending: Ending,
}

/// Codes a client may send in a close frame (docs/protocol.md refuses below 1000,
/// 1004–1006, 1015, 1016–2999, 5000 and above).
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The server's reading of a client's stream, written from docs/protocol.md ("Close
/// codes") and RFC 6455 §5: frame by frame, the first rule broken decides.
fn model(s: &[u8], max: usize) -> Verdict {
    let mut published = Vec::new();
    let mut message: Option<(u8, Vec<u8>)> = None;
    let mut pos = 0;
    let ending = loop {
        let rest = &s[pos..];
        let &[b0, b1, ..] = rest else {
            break Ending::Open;
        };
        if b1 & 0x80 == 0 {
            break Ending::Close(vec![1002]); // unmasked
        }
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let head = 2 + ext + 4;
        if rest.len() < head {
            break Ending::Open;
        }
        let len = match ext {
            0 => u64::from(b1 & 0x7f),
            _ => rest[2..2 + ext]
                .iter()
                .fold(0, |n, &b| n << 8 | u64::from(b)),
        };
        let (fin, rsv, opcode) = (b0 & 0x80 != 0, b0 & 0x70, b0 & 0x0f);
        let control = opcode >= 8;
        let mut codes = Vec::new();
        if rsv != 0 || !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10) || control && (!fin || len > 125) {
            codes.push(1002);
        }
        if len > max as u64 {
            codes.push(1009);
        }
        if !codes.is_empty() {
            break Ending::Close(codes);
        }
        let len = len as usize;
        if rest.len() < head + len {
            break Ending::Open;
        }
        let key = &rest[2 + ext..head];
        let payload: Vec<u8> = rest[head..head + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        pos += head + len;
        let utf8 = |p: &[u8]| std::str::from_utf8(p).is_ok();
        match opcode {
            8 if payload.is_empty() => break Ending::Echo(Vec::new()),
            8 if payload.len() == 1 => break Ending::Close(vec![1002]),
            8 => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                match (sendable(code), utf8(&payload[2..])) {
                    (true, true) => break Ending::Echo(payload[..2].to_vec()),
                    (false, true) => break Ending::Close(vec![1002]),
                    (true, false) => break Ending::Close(vec![1007]),
                    (false, false) => break Ending::Close(vec![1002, 1007]),
                }
            }
            9 | 10 => {}
            1 | 2 if message.is_some() => match opcode == 1 && fin && !utf8(&payload) {
                true => break Ending::Close(vec![1002, 1007]),
                false => break Ending::Close(vec![1002]),
            },
            1 if fin && !utf8(&payload) => break Ending::Close(vec![1007]),
            1 | 2 if fin => published.push((opcode, payload)),
            1 | 2 => message = Some((opcode, payload)),
            _ => {
                // A continuation.
                let Some((op, mut whole)) = message.take() else {
                    break Ending::Close(vec![1002]);
                };
                if whole.len() + payload.len() > max {
                    break Ending::Close(vec![1009]);
                }
                whole.extend_from_slice(&payload);
                match (fin, op == 1 && !utf8(&whole)) {
                    (false, _) => message = Some((op, whole)),
                    (true, true) => break Ending::Close(vec![1007]),
                    (true, false) => published.push((op, whole)),
                }
            }
        }
    };
    Verdict { published, ending }
}

/// One frame of garbage: mostly plausible (valid opcodes, masked, the declared length
/// true), sometimes not.
#[derive(Debug, Clone)]
struct Junk {
    b0: u8,
    key: Option<[u8; 4]>,
    /// Declared payload length (`None`: the payload's own).
    declared: Option<u64>,
    form: u8,
    payload: Vec<u8>,
}

fn junk_frame() -> impl Strategy<Value = Junk> {
    let b0 = prop_oneof![
        6 => (any::<bool>(), prop::sample::select(&[0u8, 1, 2, 8, 9, 10][..]))
            .prop_map(|(fin, op)| u8::from(fin) << 7 | op),
        1 => any::<u8>(),
    ];
    let close_code = prop::sample::select(
        &[
            0u16, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1011, 1012, 1013,
            1014, 1015, 1016, 2999, 3000, 4999, 5000, 65535,
        ][..],
    );
    let text = prop::collection::vec(any::<char>(), 0..40)
        .prop_map(|c| c.into_iter().collect::<String>().into_bytes());
    let bytes = |n: usize| prop::collection::vec(any::<u8>(), 0..n);
    let payload = prop_oneof![
        3 => text.clone(),
        2 => bytes(160),
        2 => (close_code, prop_oneof![text, bytes(8)]).prop_map(|(code, reason)| {
            let mut p = code.to_be_bytes().to_vec();
            p.extend(reason);
            p
        }),
        1 => bytes(2),
        1 => (MAX_MESSAGE - 8..MAX_MESSAGE + 8).prop_map(|n| vec![b'x'; n]),
    ];
    let declared = prop_oneof![
        12 => Just(None),
        1 => (0u64..2 * MAX_MESSAGE as u64).prop_map(Some),
        1 => any::<u64>().prop_map(Some),
    ];
    let key = prop_oneof![19 => any::<[u8; 4]>().prop_map(Some), 1 => Just(None)];
    (b0, key, declared, 0u8..3, payload).prop_map(|(b0, key, declared, form, payload)| Junk {
        b0,
        key,
        declared,
        form,
        payload,
    })
}

/// A stream of garbage: junk frames or random bytes, cut anywhere, then the
/// terminator; and where it is cut into writes.
fn garbage() -> impl Strategy<Value = (Vec<u8>, Vec<Index>)> {
    let frames = prop::collection::vec(junk_frame(), 1..6).prop_map(|frames| {
        frames
            .iter()
            .flat_map(|j| {
                let declared = j.declared.unwrap_or(j.payload.len() as u64);
                encode(j.b0, j.key, declared, j.form, &j.payload)
            })
            .collect::<Vec<u8>>()
    });
    let bytes = prop_oneof![4 => frames, 1 => prop::collection::vec(any::<u8>(), 0..200)];
    let cut = prop_oneof![3 => Just(None), 1 => any::<Index>().prop_map(Some)];
    (bytes, cut, prop::collection::vec(any::<Index>(), 0..8)).prop_map(|(mut b, cut, writes)| {
        if let Some(cut) = cut {
            b.truncate(cut.index(b.len() + 1));
        }
        b.extend(std::iter::repeat_n(0, TERMINATOR));
        (b, writes)
    })
}

/// Codes docs/protocol.md lists for what a plain chat client sends.
const DOCUMENTED: [u16; 3] = [1002, 1007, 1009];

async fn garbage_stream(
    server: &TestServer,
    (bytes, writes): (Vec<u8>, Vec<Index>),
) -> TestCaseResult {
    let verdict = model(&bytes, MAX_MESSAGE);
    prop_assert!(
        verdict.ending != Ending::Open,
        "the terminator ends every stream"
    );
    let topic = next_topic("garbage");
    let query = format!("?topic={topic}");
    let mut listener = Raw::connect(server.addr, &query).await;
    let mut client = Raw::connect(server.addr, &query).await;
    send_in_pieces(&mut client, &bytes, &writes).await;
    let close = loop {
        match client.frame().await {
            Some((_, 0x8, p)) => break p,
            Some(_) => continue,
            None => return Err(TestCaseError::fail("EOF without a close frame")),
        }
    };
    match &verdict.ending {
        Ending::Close(codes) => {
            let code = close.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            prop_assert!(
                code.is_some_and(|c| codes.contains(&c) && DOCUMENTED.contains(&c)),
                "closed with {:?} ({}), expected one of {:?}",
                code,
                String::from_utf8_lossy(close.get(2..).unwrap_or_default()),
                codes
            );
        }
        Ending::Echo(echo) => prop_assert_eq!(&close, echo, "the echo of the client's close"),
        Ending::Open => unreachable!("checked above"),
    }
    // What came before the close was published, once, in order; nothing after it.
    let got = until_sentinel(server, &mut listener, &topic).await;
    prop_assert_eq!(got, verdict.published);
    Ok(())
}

#[test]
fn garbage_ends_in_a_documented_close_after_exactly_the_messages_before_it() {
    let server = start(|c| c.max_message_size = MAX_MESSAGE);
    check_cases_beside_a_bystander(&server, 512, garbage(), async |case| {
        garbage_stream(&server, case).await
    });
    server.stop();
}
