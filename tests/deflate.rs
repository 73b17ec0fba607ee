//! permessage-deflate (RFC 7692) over real sockets: a third-party client (Python
//! `websockets`, which offers it by default) and raw clients that look at every frame's
//! RSV1 bit and compress by hand (context takeover, fragments, a deflate bomb, RSV1
//! where it does not belong). Needs `HUBCAST_PYTHON` for the Python tests, like
//! `tests/third_party.rs`.

mod common;

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use hubcast::Config;

/// What Chromium and Python `websockets` offer.
const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
/// The answer to it.
const AGREED: &str = "permessage-deflate; server_no_context_takeover";
const RSV1: u8 = 0x40;

fn with_compression(c: &mut Config) {
    c.compression = true;
}

/// A JSON feed message of about `n` kilobytes: well above the compression threshold.
fn json(n: usize, tag: &str) -> String {
    let quotes: Vec<String> = (0..n * 12)
        .map(|i| format!(r#"{{"id":{i},"tag":"{tag}","bid":1.08{:02}}}"#, i % 100))
        .collect();
    format!("[{}]", quotes.join(","))
}

/// The `Sec-WebSocket-Extensions` value of a response head, if any.
fn extensions_of(head: &str) -> Option<&str> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim())
    })
}

/// A server message's payload, inflated independently of hubcast (a fresh window per
/// message: the server never takes context over).
fn inflate(compressed: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 22);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("valid DEFLATE");
    assert_eq!(d.total_in(), input.len() as u64, "all consumed");
    out
}

/// The next data message of a raw client: (compressed?, opcode, message).
async fn next_message(raw: &mut Raw) -> (bool, u8, Vec<u8>) {
    loop {
        let (first, payload) = raw.frame_with_first_byte().await.expect("a frame");
        assert_eq!(first & 0x30, 0, "RSV2/RSV3 never set");
        assert_ne!(first & 0x80, 0, "hubcast never fragments");
        match first & 0x0f {
            0x9 | 0xA => continue,
            op @ (0x1 | 0x2) if first & RSV1 != 0 => return (true, op, inflate(&payload)),
            op @ (0x1 | 0x2) => return (false, op, payload),
            op => panic!("unexpected opcode {op:#x}"),
        }
    }
}

/// A client-side compressor, as browsers use it: context takeover, a sync flush per
/// message, the trailing `00 00 ff ff` removed.
struct ClientDeflate(Compress);

impl ClientDeflate {
    fn new() -> Self {
        ClientDeflate(Compress::new(Compression::default(), false))
    }

    fn message(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() / 2 + 1024);
        let start = self.0.total_in();
        loop {
            let done = usize::try_from(self.0.total_in() - start).expect("size");
            self.0
                .compress_vec(&data[done..], &mut out, FlushCompress::Sync)
                .expect("compress");
            // A full buffer may hold back output: give it room and go on.
            if out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity());
        }
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }
}

/// A masked client frame with RSV1 set.
fn compressed_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = client_frame(fin, opcode, payload);
    f[0] |= RSV1;
    f
}

async fn wait_metric_eq(server: &TestServer, name: &str, want: u64) {
    within(async {
        while server.metric(name) != want {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_deflate_and_plain_clients_on_one_topic_get_every_message() {
    let server = start(with_compression);
    let (mut plain, resp) = within(tokio_tungstenite::connect_async(server.url("?topic=z")))
        .await
        .expect("connects");
    assert!(
        resp.headers().get("sec-websocket-extensions").is_none(),
        "a client that offers nothing gets nothing"
    );
    let (mut raw, head) = Raw::connect_with(server.addr, "?topic=z", OFFER).await;
    assert_eq!(extensions_of(&head), Some(AGREED), "{head}");
    let (child, lines) = python_script("deflate_client.py", &[&server.url("?topic=z"), "3"]);
    let (ready, lines) = within(lines).await.expect("reader");
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "python client did not connect"
    );
    // Every client is in the snapshots the publisher looks at.
    server.wait_connections(3).await;
    assert_eq!(server.metric("hubcast_deflate_connections"), 2);

    let (big1, big2) = (json(4, "a"), json(2, "b"));
    let small = "small: under the threshold";
    for m in [big1.as_str(), small, big2.as_str()] {
        server.hub.publish("z", m).expect("publish");
    }
    let v = python_summary(child, lines).await;
    assert_eq!(v["extensions"], AGREED);
    assert_eq!(v["received"], serde_json::json!([big1, small, big2]));
    assert_eq!(
        v["echoes"], v["sent"],
        "its own fragmented and whole messages"
    );
    let python_sent: Vec<String> = serde_json::from_value(v["sent"].clone()).expect("strings");
    assert!(python_sent[0].len() > 2000);
    assert_eq!(v["close_code"], 1000);

    // Python compressed both of its messages (the first in three frames); hubcast
    // inflated them, and compressed each large message once for both deflate clients.
    assert_eq!(server.metric("hubcast_inflated_messages_total"), 2);
    assert_eq!(server.metric("hubcast_deflate_messages_total"), 4);

    let all = [
        big1.as_str(),
        small,
        big2.as_str(),
        &python_sent[0],
        &python_sent[1],
    ];
    for (i, want) in all.iter().enumerate() {
        assert_eq!(
            next_data(&mut plain).await.as_deref(),
            Some(want.as_bytes()),
            "plain #{i}"
        );
        let (compressed, op, got) = next_message(&mut raw).await;
        assert_eq!(op, 0x1, "text");
        assert_eq!(got, want.as_bytes(), "deflate client #{i}");
        assert_eq!(
            compressed,
            want.len() >= 256,
            "message #{i} ({} B)",
            want.len()
        );
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_deflate_clients_get_the_push_compressed_once() {
    let server = start(with_compression);
    let v1 = "Sec-WebSocket-Protocol: hubcast.v1\r\n";
    let (mut raw_deflate, head) =
        Raw::connect_with(server.addr, "?topic=q", &format!("{v1}{OFFER}")).await;
    assert_eq!(extensions_of(&head), Some(AGREED));
    let (mut raw_plain, head) = Raw::connect_with(server.addr, "?topic=q", v1).await;
    assert_eq!(extensions_of(&head), None);
    let (child, lines) = python_script("deflate_client.py", &[&server.url("?topic=q"), "2", "v1"]);
    let (ready, lines) = within(lines).await.expect("reader");
    assert_eq!(ready.as_deref(), Some("ready"));
    server.wait_connections(3).await;
    let big = json(3, "v1");
    server.hub.publish("q", &big).expect("publish");
    server.hub.publish("q", r#"{"tiny":1}"#).expect("publish");

    let v = python_summary(child, lines).await;
    assert_eq!(v["extensions"], AGREED);
    let pushes: Vec<serde_json::Value> = v["received"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| serde_json::from_str(s.as_str().expect("text")).expect("push JSON"))
        .collect();
    let big_value: serde_json::Value = serde_json::from_str(&big).expect("json");
    assert_eq!(pushes[0]["data"], big_value);
    assert_eq!(pushes[1]["data"], serde_json::json!({"tiny": 1}));
    assert_eq!(
        pushes[1]["offset"],
        pushes[0]["offset"].as_u64().expect("offset") + 1
    );

    // The same push bytes, compressed for the one and plain for the other.
    for tiny in [false, true] {
        let (c1, _, deflated) = next_message(&mut raw_deflate).await;
        let (c2, _, plain) = next_message(&mut raw_plain).await;
        assert_eq!((c1, c2), (!tiny, false), "tiny: {tiny}");
        assert_eq!(deflated, plain);
    }
    // No plain-protocol client negotiated deflate: only the push was compressed.
    assert_eq!(server.metric("hubcast_deflate_messages_total"), 1);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_compressed_messages_reassemble_with_context_takeover() {
    let server = start(with_compression);
    let mut listener = connect(&server.url("?topic=f")).await;
    let (mut sender, _) = Raw::connect_with(server.addr, "?topic=f", OFFER).await;
    server.wait_connections(2).await;
    let mut deflate = ClientDeflate::new();
    let first = json(3, "frag");
    let wire = deflate.message(first.as_bytes());
    let third = wire.len() / 3;
    let mut bytes = compressed_frame(false, 0x1, &wire[..third]);
    bytes.extend(client_frame(false, 0x0, &wire[third..2 * third]));
    bytes.extend(client_frame(true, 0x9, b"ping in between"));
    bytes.extend(client_frame(true, 0x0, &wire[2 * third..]));
    // The same text again, compressed against the first (back-references only).
    let again = deflate.message(first.as_bytes());
    assert!(
        again.len() * 5 < wire.len(),
        "context takeover at work: {} then {} bytes",
        wire.len(),
        again.len()
    );
    bytes.extend(compressed_frame(true, 0x1, &again));
    // Uncompressed messages stay allowed, and binary ones compress too.
    bytes.extend(client_frame(true, 0x1, b"plain"));
    let blob: Vec<u8> = (0..3000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
    bytes.extend(compressed_frame(true, 0x2, &deflate.message(&blob)));
    sender.send(&bytes).await;
    for want in [first.as_bytes(), first.as_bytes(), b"plain", &blob] {
        assert_eq!(next_data(&mut listener).await.as_deref(), Some(want));
    }
    assert_eq!(server.metric("hubcast_inflated_messages_total"), 3);
    // The window outlives the messages: the client uses context takeover.
    assert_eq!(server.metric("hubcast_inflate_contexts"), 1);
    assert_eq!(
        server.metric("hubcast_inflate_context_bytes"),
        hubcast::wire::deflate::Inflater::MEMORY as u64
    );
    sender
        .send(&client_frame(true, 0x8, &1000u16.to_be_bytes()))
        .await;
    assert_eq!(sender.close_code().await, Some(1000));
    wait_metric_eq(&server, "hubcast_inflate_contexts", 0).await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_context_takeover_keeps_no_inflate_state_while_idle() {
    let server = start(with_compression);
    let mut listener = connect(&server.url("?topic=n")).await;
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n";
    let (mut sender, head) = Raw::connect_with(server.addr, "?topic=n", offer).await;
    assert_eq!(
        extensions_of(&head),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    server.wait_connections(2).await;
    let text = json(2, "nct");
    // Each message from an empty window, as the client agreed.
    let mut bytes = compressed_frame(true, 0x1, &ClientDeflate::new().message(text.as_bytes()));
    bytes.extend(compressed_frame(
        true,
        0x1,
        &ClientDeflate::new().message(text.as_bytes()),
    ));
    sender.send(&bytes).await;
    for _ in 0..2 {
        assert_eq!(
            next_data(&mut listener).await.as_deref(),
            Some(text.as_bytes())
        );
    }
    // Once the reader is idle again, the state is gone.
    wait_metric_eq(&server, "hubcast_inflate_contexts", 0).await;
    assert_eq!(server.metric("hubcast_inflated_messages_total"), 2);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deflate_bomb_gets_1009_while_another_client_keeps_its_stream() {
    let server = start(with_compression); // 1 MiB limit by default
    let mut bystander = connect(&server.url("?topic=b")).await;
    // 100 MB of zeros: about 100 KB on the wire.
    let bomb = ClientDeflate::new().message(&vec![0u8; 100 << 20]);
    assert!(bomb.len() < 200 << 10, "{} bytes", bomb.len());
    // Whole, and fragmented into 16 KiB frames (each harmless on its own).
    for fragmented in [false, true] {
        let (mut attacker, _) = Raw::connect_with(server.addr, "?topic=b", OFFER).await;
        server.wait_connections(2).await;
        let bytes = if fragmented {
            let chunks: Vec<&[u8]> = bomb.chunks(16 << 10).collect();
            let mut b = compressed_frame(false, 0x2, chunks[0]);
            for (i, c) in chunks.iter().enumerate().skip(1) {
                b.extend(client_frame(i + 1 == chunks.len(), 0x0, c));
            }
            b
        } else {
            compressed_frame(true, 0x2, &bomb)
        };
        attacker.send(&bytes).await;
        assert_eq!(
            attacker.close_code().await,
            Some(1009),
            "fragmented: {fragmented}"
        );
        drop(attacker);
        server.wait_connections(1).await;
        let after = format!("after the bomb (fragmented: {fragmented})");
        server.hub.publish("b", &after).expect("publish");
        assert_eq!(
            next_data(&mut bystander).await.as_deref(),
            Some(after.as_bytes()),
            "nothing of the bomb reached anyone"
        );
    }
    assert_eq!(server.metric("hubcast_protocol_closes_total"), 2);
    assert_eq!(server.metric("hubcast_inflate_contexts"), 0);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsv1_where_it_does_not_belong_gets_1002() {
    let deflated = ClientDeflate::new().message(json(1, "x").as_bytes());
    // Not negotiated: compression off, or on but not offered.
    for on in [false, true] {
        let server = start(|c| c.compression = on);
        let (mut raw, head) = Raw::connect_with(server.addr, "?topic=r", OFFER).await;
        assert_eq!(extensions_of(&head).is_some(), on);
        if on {
            raw = Raw::connect(server.addr, "?topic=r").await;
        }
        raw.send(&compressed_frame(true, 0x1, &deflated)).await;
        assert_eq!(raw.close_code().await, Some(1002), "compression {on}");
        server.stop();
    }
    // Negotiated, but on a continuation or control frame.
    let server = start(with_compression);
    let mut listener = connect(&server.url("?topic=r")).await;
    for (i, bad) in [
        compressed_frame(true, 0x0, b"more"),
        compressed_frame(true, 0x9, b"ping"),
    ]
    .into_iter()
    .enumerate()
    {
        let (mut raw, _) = Raw::connect_with(server.addr, "?topic=r", OFFER).await;
        let mut bytes = compressed_frame(false, 0x1, &deflated[..deflated.len() / 2]);
        bytes.extend(bad);
        raw.send(&bytes).await;
        let close = loop {
            let (_, op, payload) = raw.frame().await.expect("a close frame");
            if op == 0x8 {
                break payload;
            }
        };
        assert_eq!(close[..2], 1002u16.to_be_bytes(), "case {i}");
        assert!(
            String::from_utf8_lossy(&close[2..]).contains("RSV1"),
            "case {i}"
        );
    }
    // Garbage where compressed data should be: 1007, as for bad UTF-8.
    let (mut raw, _) = Raw::connect_with(server.addr, "?topic=r", OFFER).await;
    raw.send(&compressed_frame(true, 0x1, &[0xff, 0xff, 0xff]))
        .await;
    assert_eq!(raw.close_code().await, Some(1007));
    // …and compressed text that inflates to invalid UTF-8 too.
    let (mut raw, _) = Raw::connect_with(server.addr, "?topic=r", OFFER).await;
    let bad_text = ClientDeflate::new().message(&[b'a', 0xff, 0xfe, b'b']);
    raw.send(&compressed_frame(true, 0x1, &bad_text)).await;
    assert_eq!(raw.close_code().await, Some(1007));
    server.hub.publish("r", "still here").expect("publish");
    assert_eq!(
        next_data(&mut listener).await.as_deref(),
        Some(&b"still here"[..])
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_are_negotiated_and_small_or_unnegotiated_messages_go_plain() {
    let server = start(|c| {
        c.compression = true;
        c.compression_min_size = 1000;
    });
    let ext = |v: &str| format!("Sec-WebSocket-Extensions: {v}\r\n");
    // A window we cannot honour declines that offer; the next one is taken.
    let (mut second, head) = Raw::connect_with(
        server.addr,
        "?topic=o",
        &ext("permessage-deflate; server_max_window_bits=10, permessage-deflate; client_max_window_bits"),
    )
    .await;
    assert_eq!(extensions_of(&head), Some(AGREED));
    // Only offers we cannot honour: the connection goes on without the extension.
    let (mut declined, head) = Raw::connect_with(
        server.addr,
        "?topic=o",
        &ext("permessage-deflate; server_max_window_bits=9; client_max_window_bits"),
    )
    .await;
    assert_eq!(extensions_of(&head), None, "{head}");
    let (_full_window, head) = Raw::connect_with(
        server.addr,
        "?topic=o",
        &ext("permessage-deflate; server_max_window_bits=15"),
    )
    .await;
    assert_eq!(
        extensions_of(&head),
        Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=15")
    );
    server.wait_connections(3).await;
    let (mid, big) = (json(1, "m"), json(4, "b"));
    assert!(mid.len() < 1000 && big.len() >= 1000);
    server.hub.publish("o", &mid).expect("publish");
    server.hub.publish("o", &big).expect("publish");
    for (want, compressed) in [(&mid, false), (&big, true)] {
        assert_eq!(
            next_message(&mut second).await,
            (compressed, 0x1, want.clone().into_bytes())
        );
        assert_eq!(
            next_message(&mut declined).await,
            (false, 0x1, want.clone().into_bytes())
        );
    }
    server.stop();

    // Compression off (the default): offers are declined.
    let server = start(|_| {});
    let (_, head) = Raw::connect_with(server.addr, "?topic=o", OFFER).await;
    assert_eq!(extensions_of(&head), None);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_turns_compression_on_with_its_flags() {
    let (mut child, addr) = spawn_binary_with(&["--compression", "--compression-min-size", "64"]);
    let (mut raw, head) = Raw::connect_with(addr, "?topic=cli", OFFER).await;
    assert_eq!(extensions_of(&head), Some(AGREED));
    // Whether a message is compressed is decided when it is published, from the shards'
    // snapshots; a client is in them once its shard has rebuilt (at most a tick after
    // the 101). Published before that, the message would rightly go out plain.
    within(async {
        let get = format!("GET /topics/cli HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        while serde_json::from_str::<serde_json::Value>(&http(addr, &get).await.1)
            .map_or(true, |v| v["subscribers"] != 1)
        {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await;
    let text = json(1, "cli");
    let (status, _) = http_publish(addr, "cli", &text, None).await;
    assert_eq!(status, 200);
    assert_eq!(next_message(&mut raw).await, (true, 0x1, text.into_bytes()));
    let _ = child.kill();
    let _ = child.wait();
}
