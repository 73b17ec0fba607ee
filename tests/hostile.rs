//! The hostile-input audit's findings, each as a test that failed before its fix: pong
//! floods, unmasked frames and split streams, HTTP/1.0 upgrades, bad handshake keys and
//! versions, trickling request bodies.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An unmasked client frame (the server must refuse it, RFC 6455 §5.1).
fn unmasked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, payload.len() as u8];
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_gets_1002() {
    let server = start(|_| {});
    let mut bystander = connect(&server.url("?topic=x")).await;
    let mut raw = Raw::connect(server.addr, "?topic=x").await;
    // A masked message first: it is published; the unmasked one after it is not.
    let mut bytes = client_frame(true, 0x1, b"masked");
    bytes.extend(unmasked_frame(0x1, b"unmasked"));
    raw.send(&bytes).await;
    assert_eq!(
        next_data(&mut bystander).await.as_deref(),
        Some(&b"masked"[..])
    );
    assert_eq!(raw.close_code().await, Some(1002));
    server.wait_metric("hubcast_protocol_closes_total", 1).await;
    server.hub.publish("x", "after").expect("publish");
    assert_eq!(
        next_data(&mut bystander).await.as_deref(),
        Some(&b"after"[..]),
        "the offender's frame never reached anyone"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_sequence_unmasked_then_a_split_masked_frame_gets_1002() {
    // What the audit sent: an unmasked frame, then a masked one whose first four bytes
    // arrive on their own. It used to lose four bytes and the message; now the
    // unmasked frame alone ends the connection with 1002.
    let server = start(|_| {});
    let mut raw = Raw::connect(server.addr, "?topic=x").await;
    raw.send(&unmasked_frame(0x9, b"hi")).await;
    let masked = client_frame(true, 0x1, b"hello");
    raw.send(&masked[..4]).await;
    raw.send(&masked[4..]).await;
    let close = loop {
        let (_, op, payload) = raw.frame().await.expect("a close frame");
        if op == 0x8 {
            break payload;
        }
    };
    assert_eq!(close[..2], 1002u16.to_be_bytes());
    let reason = String::from_utf8_lossy(&close[2..]);
    assert!(
        reason.contains("masked"),
        "closed for the unmasked frame: {reason}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_close_and_pong_frames_get_1002() {
    // fastwebsockets refuses long pings only; RFC 6455 §5.5 limits every control frame.
    let server = start(|_| {});
    for opcode in [0x8, 0xA] {
        let mut raw = Raw::connect(server.addr, "?topic=x").await;
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.resize(200, b'r');
        raw.send(&client_frame(true, opcode, &payload)).await;
        assert_eq!(raw.close_code().await, Some(1002), "opcode {opcode:#x}");
    }
    server.stop();
}

/// The stream a chat client sends in the split test: a ping, a short text, a text in two
/// fragments, and a binary message with a 16-bit length.
fn mixed_stream() -> (Vec<u8>, Vec<Vec<u8>>) {
    let binary: Vec<u8> = (0..130u8).collect();
    let mut s = client_frame(true, 0x9, b"p1");
    s.extend(client_frame(true, 0x1, b"hello"));
    s.extend(client_frame(false, 0x1, b"ab"));
    s.extend(client_frame(true, 0x0, b"cd"));
    s.extend(client_frame(true, 0x2, &binary));
    (s, vec![b"hello".to_vec(), b"abcd".to_vec(), binary])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_stream_split_at_every_byte_boundary_arrives_intact() {
    // The exact check of every split is the unit test of the frame bounds; this one
    // sends each split over a real socket as two writes (TCP_NODELAY), so the server
    // often reads them apart, and checks nothing is lost or out of sync either way.
    let server = start(|_| {});
    let mut listener = connect(&server.url("?topic=split")).await;
    let (stream, messages) = mixed_stream();
    for split in 1..stream.len() {
        let mut raw = Raw::connect(server.addr, "?topic=split").await;
        raw.stream.set_nodelay(true).expect("nodelay");
        raw.send(&stream[..split]).await;
        tokio::task::yield_now().await;
        raw.send(&stream[split..]).await;
        let mut pongs = 0;
        let mut got = Vec::new();
        while got.len() < messages.len() {
            let (_, op, payload) = raw.frame().await.expect("frame");
            match op {
                0xA => {
                    assert_eq!(payload, b"p1", "split at {split}");
                    pongs += 1;
                }
                0x1 | 0x2 => got.push(payload),
                other => panic!("split at {split}: unexpected opcode {other}"),
            }
        }
        assert_eq!(got, messages, "split at {split}: own messages come back");
        for m in &messages {
            assert_eq!(
                next_data(&mut listener).await.as_ref(),
                Some(m),
                "split at {split}"
            );
        }
        // The pong may come before or after the messages; it must come exactly once.
        while pongs == 0 {
            let (_, op, _) = raw.frame().await.expect("pong");
            pongs += usize::from(op == 0xA);
        }
        assert_eq!(pongs, 1);
    }
    assert_eq!(server.metric("hubcast_protocol_closes_total"), 0);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pong_flood_from_a_client_that_never_reads_stays_bounded() {
    // One pong per ping used to queue without limit (one million pings: +190 MB). The
    // client's receive buffer is tiny, so the server's socket fills almost at once and
    // pongs have to wait: only the latest waiting one is kept.
    // Enough that the pongs the kernel can hold (a send buffer autotuned up to 4 MiB,
    // ~33,000 pongs) are well under half: with 60,000 the bound sat at that edge.
    const PINGS: usize = 200_000;
    let server = start(|c| c.client_buffer = 64 << 10);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let s = within(socket.connect(server.addr)).await.expect("connect");
    let mut raw = Raw::over(s, server.addr, "?topic=p").await;
    let ping = client_frame(true, 0x9, &[7u8; 125]);
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    for _ in 0..PINGS / 1000 {
        raw.send(&burst).await;
    }
    // The last ping is told apart: its pong is never dropped (a newer pong replaces an
    // older one, never the reverse), so reading up to it sees every pong that was sent.
    raw.send(&client_frame(true, 0x9, b"last")).await;
    let mut pongs = 0usize;
    loop {
        let (_, op, payload) = raw.frame().await.expect("frames");
        assert_ne!(op, 0x8, "the client was closed");
        if op == 0xA {
            pongs += 1;
            if payload == b"last" {
                break;
            }
        }
    }
    assert!(
        pongs < PINGS / 2,
        "{pongs} pongs for {} pings: waiting pongs must coalesce",
        PINGS + 1
    );
    // The stream is still in sync and the client still subscribed.
    server.hub.publish("p", "still here").expect("publish");
    loop {
        let (_, op, payload) = raw.frame().await.expect("frames");
        if op == 0x1 {
            assert_eq!(payload, b"still here");
            break;
        }
    }
    assert_eq!(server.metric("hubcast_slow_consumer_closes_total"), 0);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_upgrade_is_refused_with_400_and_counted() {
    let server = start(|_| {});
    let addr = server.addr;
    let req = upgrade_request(addr, "", "").replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_eq!(http_status(addr, &req).await, 400);
    assert_eq!(
        server.metric("hubcast_rejected_upgrades_total{reason=\"bad_request\"}"),
        1
    );
    assert_eq!(server.hub.connections(), 0);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_websocket_keys_get_400() {
    let server = start(|_| {});
    let addr = server.addr;
    let good = "dGhlIHNhbXBsZSBub25jZQ==";
    for key in [
        "abc",
        "",
        "dGhlIHNhbXBsZSBub25jZQ",
        "c2hvcnQ=",
        "!!!!!!!!!!!!!!!!!!!!!!==",
    ] {
        let req = upgrade_request(addr, "", "").replace(good, key);
        assert_eq!(http_status(addr, &req).await, 400, "key {key:?}");
    }
    let two_keys = upgrade_request(addr, "", &format!("Sec-WebSocket-Key: {good}\r\n"));
    assert_eq!(http_status(addr, &two_keys).await, 400, "two keys");
    assert_eq!(
        server.metric("hubcast_rejected_upgrades_total{reason=\"bad_request\"}"),
        6
    );
    assert_eq!(http_status(addr, &upgrade_request(addr, "", "")).await, 101);
    server.stop();
}

/// Found by the garbage property (tests/fuzz/frames.rs): a close with 1014, which IANA
/// registered and docs/protocol.md does not refuse, got 1002 instead of its echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_with_code_1014_is_echoed() {
    let server = start(|_| {});
    let mut raw = Raw::connect(server.addr, "?topic=x").await;
    raw.send(&client_frame(true, 0x8, &1014u16.to_be_bytes()))
        .await;
    assert_eq!(raw.close_code().await, Some(1014));
    assert_eq!(server.metric("hubcast_protocol_closes_total"), 0);
    server.stop();
}

/// Found by the RFC 6455 property of `check_handshake`: no `Host`, or two, got a `101`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_without_exactly_one_host_gets_400() {
    let server = start(|_| {});
    let addr = server.addr;
    let host = format!("Host: {addr}\r\n");
    let none = upgrade_request(addr, "", "").replacen(&host, "", 1);
    let two = upgrade_request(addr, "", "Host: evil.example\r\n");
    for req in [none, two] {
        let (status, head) = response_head(addr, &req).await;
        assert_eq!(status, 400, "{head}");
    }
    assert_eq!(server.hub.connections(), 0);
    assert_eq!(http_status(addr, &upgrade_request(addr, "", "")).await, 101);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_version_gets_400_naming_version_13() {
    let server = start(|_| {});
    let addr = server.addr;
    let req = upgrade_request(addr, "", "").replace("Version: 13", "Version: 8");
    let (status, head) = response_head(addr, &req).await;
    assert_eq!(status, 400);
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nsec-websocket-version: 13\r\n"),
        "{head}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_publish_body_gets_408() {
    let server = start(|c| c.body_timeout = Duration::from_millis(300));
    let addr = server.addr;
    let mut s = within(TcpStream::connect(addr)).await.expect("connect");
    s.write_all(
        format!("POST /publish/t HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 10\r\n\r\nx")
            .as_bytes(),
    )
    .await
    .expect("write");
    // The remaining nine bytes never come: the server answers on its own.
    let mut out = Vec::new();
    within(s.read_to_end(&mut out)).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(server.metric("hubcast_messages_published_total"), 0);
    server.stop();
}

/// Sends a request and returns the status and the response head (status line and
/// headers), without waiting for the connection to close.
async fn response_head(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    within(async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if s.read(&mut b).await.expect("read") == 0 {
                break;
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        (status_of(&head), head)
    })
    .await
}
