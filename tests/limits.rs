//! Admission and protocol limits: each offender gets its status or close code, and
//! everyone else keeps their stream.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_upgrade_is_refused_with_403() {
    let server = start(|c| c.allow_origins = vec!["https://app.example".into()]);
    let addr = server.addr;
    let evil = upgrade_request(addr, "", "Origin: https://evil.example\r\n");
    assert_eq!(http_status(addr, &evil).await, 403);
    let same = upgrade_request(addr, "", &format!("Origin: http://{addr}\r\n"));
    assert_eq!(http_status(addr, &same).await, 101);
    let listed = upgrade_request(addr, "", "Origin: https://app.example\r\n");
    assert_eq!(http_status(addr, &listed).await, 101);
    let none = upgrade_request(addr, "", "");
    assert_eq!(http_status(addr, &none).await, 101);
    assert_eq!(
        server.metric("hubcast_rejected_upgrades_total{reason=\"origin\"}"),
        1
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_answers_503_and_frees_slots() {
    let server = start(|c| c.max_connections = 3);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&server.url("")).await);
    }
    assert_eq!(
        http_status(server.addr, &upgrade_request(server.addr, "", "")).await,
        503
    );
    let mut gone = held.pop().expect("one");
    gone.close(None).await.expect("close");
    while next_data(&mut gone).await.is_some() {}
    server.wait_connections(2).await;
    held.push(connect(&server.url("")).await);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_every_length_class_arrive_intact() {
    let server = start(|_| {});
    let mut listener = connect(&server.url("?topic=sizes")).await;
    let mut sender = connect(&server.url("?topic=sizes")).await;
    for (i, len) in [0usize, 125, 126, 65535, 65536, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let payload: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
        use futures_util::SinkExt;
        within(sender.send(tokio_tungstenite::tungstenite::Message::binary(
            payload.clone(),
        )))
        .await
        .expect("send");
        let got = next_data(&mut listener).await.expect("message");
        assert_eq!(got.len(), len);
        assert!(got == payload, "payload of {len} bytes differs");
        assert_eq!(next_data(&mut sender).await.expect("echo").len(), len);
    }
    // From the hub too, text this time.
    let text = "é".repeat(40_000);
    server.hub.publish("sizes", &text).expect("publish");
    assert_eq!(
        next_data(&mut listener).await.as_deref(),
        Some(text.as_bytes())
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_are_reassembled() {
    let server = start(|_| {});
    let mut listener = connect(&server.url("?topic=f")).await;
    let mut raw = Raw::connect(server.addr, "?topic=f").await;
    let mut bytes = client_frame(false, 0x1, "frag".as_bytes());
    bytes.extend(client_frame(true, 0x9, b"ping in between")); // control frames may interleave
    bytes.extend(client_frame(false, 0x0, "mented ".as_bytes()));
    // A multi-byte character split across two fragments.
    let euro = "€".as_bytes();
    bytes.extend(client_frame(false, 0x0, &euro[..1]));
    bytes.extend(client_frame(true, 0x0, &euro[1..]));
    raw.send(&bytes).await;
    assert_eq!(
        next_data(&mut listener).await.as_deref(),
        Some("fragmented €".as_bytes())
    );
    server.stop();
}

/// Sends `bytes` from a raw client and expects `code`; a bystander keeps receiving.
async fn offender_gets(code: u16, bytes: Vec<u8>, tweak: impl FnOnce(&mut hubcast::Config)) {
    let server = start(tweak);
    let mut bystander = connect(&server.url("?topic=x")).await;
    let mut raw = Raw::connect(server.addr, "?topic=x").await;
    server.hub.publish("x", "before").expect("publish");
    assert_eq!(
        next_data(&mut bystander).await.as_deref(),
        Some(&b"before"[..])
    );
    raw.send(&bytes).await;
    assert_eq!(raw.close_code().await, Some(code));
    drop(raw);
    server.wait_metric("hubcast_protocol_closes_total", 1).await;
    server.hub.publish("x", "after").expect("publish");
    assert_eq!(
        next_data(&mut bystander).await.as_deref(),
        Some(&b"after"[..])
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_gets_1009() {
    offender_gets(1009, client_frame(true, 0x2, &[0u8; 1001]), |c| {
        c.max_message_size = 1000
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_fragmented_message_gets_1009() {
    let mut bytes = client_frame(false, 0x2, &[0u8; 600]);
    bytes.extend(client_frame(true, 0x0, &[0u8; 600]));
    offender_gets(1009, bytes, |c| c.max_message_size = 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_gets_1007() {
    offender_gets(
        1007,
        client_frame(true, 0x1, &[b'o', b'k', 0xff, 0xfe]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_across_fragments_gets_1007() {
    let mut bytes = client_frame(false, 0x1, b"fine so far ");
    bytes.extend(client_frame(true, 0x0, &[0xc3, 0x28]));
    offender_gets(1007, bytes, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_get_1002() {
    // Reserved bit set without a negotiated extension.
    let mut bad = client_frame(true, 0x1, b"x");
    bad[0] |= 0x40;
    offender_gets(1002, bad, |_| {}).await;
    // A continuation with no message started.
    offender_gets(1002, client_frame(true, 0x0, b"x"), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_mode_refuses_client_messages_with_1008() {
    offender_gets(1008, client_frame(true, 0x1, b"may I?"), |c| c.feed = true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_statuses() {
    let server = start(|_| {});
    let addr = server.addr;
    let plain_get = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    assert_eq!(http_status(addr, &plain_get).await, 400);
    let no_version = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    assert_eq!(http_status(addr, &no_version).await, 400);
    let long_topic = format!("?topic={}", "t".repeat(200));
    assert_eq!(
        http_status(addr, &upgrade_request(addr, &long_topic, "")).await,
        400
    );
    let missing = format!("GET /nope HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    assert_eq!(http_status(addr, &missing).await, 404);
    let big = "x".repeat(2 << 20);
    let (status, body) = http_publish(addr, "t", &big, None).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(server.hub.connections(), 0, "refused upgrades hold no slot");
    server.stop();
}
