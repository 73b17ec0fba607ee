//! Broadcast semantics over real sockets: exactly once, in order, per topic.

mod common;

use std::collections::HashMap;

use common::*;

/// Checks that `got` holds, for each publisher prefix, exactly 0..n in order.
fn assert_exactly_once_in_order(got: &[Vec<u8>], publishers: &[&str], n: usize) {
    let mut next: HashMap<&str, usize> = publishers.iter().map(|p| (*p, 0)).collect();
    for m in got {
        let text = std::str::from_utf8(m).expect("utf8");
        let (p, seq) = text.split_once(':').expect("publisher:seq");
        let seq: usize = seq.parse().expect("seq");
        let expected = next
            .get_mut(p)
            .unwrap_or_else(|| panic!("unknown publisher {p}"));
        assert_eq!(
            seq, *expected,
            "publisher {p}: got {seq}, expected {expected}"
        );
        *expected += 1;
    }
    for (p, count) in next {
        assert_eq!(count, n, "publisher {p}: received {count} of {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_receives_every_broadcast_exactly_once_in_order() {
    const CLIENTS: usize = 240;
    const N: usize = 200;
    let server = start(|_| {});
    let url = server.url("?topic=t");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect(&url).await);
    }
    let mut chat = connect(&url).await;
    server.wait_connections(CLIENTS + 1).await;
    assert_eq!(server.hub.subscribers("t"), CLIENTS + 1);

    // Two publishers at once: the hub from a plain thread, and a client (chat).
    let hub = server.hub.clone();
    let from_hub = std::thread::spawn(move || {
        for i in 0..N {
            assert_eq!(hub.publish("t", &format!("hub:{i}")), Ok(CLIENTS + 1));
        }
    });
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < 2 * N {
                    got.push(next_data(&mut ws).await.expect("stream ended early"));
                }
                got
            })
        })
        .collect();
    for i in 0..N {
        send_text(&mut chat, &format!("chat:{i}")).await;
    }
    from_hub.join().expect("hub publisher");
    for r in readers {
        let got = r.await.expect("reader");
        assert_exactly_once_in_order(&got, &["hub", "chat"], N);
    }
    // The chat client hears itself too (the hub's behaviour), in order.
    let mut own = Vec::new();
    while own.len() < 2 * N {
        own.push(next_data(&mut chat).await.expect("chat stream"));
    }
    assert_exactly_once_in_order(&own, &["hub", "chat"], N);
    assert_eq!(
        server.metric("hubcast_deliveries_total"),
        ((CLIENTS + 1) * 2 * N) as u64
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_isolated() {
    let server = start(|_| {});
    let mut a = connect(&server.url("?topic=a")).await;
    let mut b = connect(&server.url("?topic=b")).await;
    let mut ab = connect(&server.url("?topic=a&topic=b")).await;
    let mut default = connect(&server.url("")).await;
    for i in 0..20 {
        server
            .hub
            .publish("a", &format!("a:{i}"))
            .expect("publish a");
        server
            .hub
            .publish("b", &format!("b:{i}"))
            .expect("publish b");
    }
    server
        .hub
        .publish("default", "default:0")
        .expect("publish default");
    let mut got_a = Vec::new();
    for _ in 0..20 {
        got_a.push(next_data(&mut a).await.expect("a"));
    }
    assert_exactly_once_in_order(&got_a, &["a"], 20);
    let mut got_b = Vec::new();
    for _ in 0..20 {
        got_b.push(next_data(&mut b).await.expect("b"));
    }
    assert_exactly_once_in_order(&got_b, &["b"], 20);
    let mut got_ab = Vec::new();
    for _ in 0..40 {
        got_ab.push(next_data(&mut ab).await.expect("ab"));
    }
    assert_exactly_once_in_order(&got_ab, &["a", "b"], 20);
    assert_eq!(
        next_data(&mut default).await.as_deref(),
        Some(&b"default:0"[..])
    );
    // Nothing else is pending for `a`: a later message to `a` is the very next one.
    server.hub.publish("a", "a:20").expect("publish");
    assert_eq!(next_data(&mut a).await.as_deref(), Some(&b"a:20"[..]));
    server.hub.publish("b", "b:20").expect("publish");
    assert_eq!(next_data(&mut b).await.as_deref(), Some(&b"b:20"[..]));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_publish_reports_recipients_and_requires_the_token() {
    let server = start(|c| c.publish_token = Some("s3cret".into()));
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&server.url("?topic=news")).await);
    }
    server.wait_connections(3).await;

    let (status, body) = http_publish(server.addr, "news", "nope", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = http_publish(server.addr, "news", "nope", Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = http_publish(server.addr, "news", "extra!", Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["recipients"], 3);
    assert_eq!(json["topic"], "news");
    for ws in &mut clients {
        // The refused publishes never arrive: the first message is the accepted one.
        assert_eq!(next_data(ws).await.as_deref(), Some(&b"extra!"[..]));
    }
    let (status, _) = http_publish(server.addr, "", "x", Some("s3cret")).await;
    assert_eq!(status, 400, "POST /publish/ without a topic");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_sent_with_the_handshake_is_not_lost() {
    let server = start(|_| {});
    let mut listener = connect(&server.url("?topic=q")).await;
    // Handshake and first frame in one write: hyper reads both; the frame must survive.
    let mut raw = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut bytes = upgrade_request(server.addr, "?topic=q", "").into_bytes();
    bytes.extend(client_frame(true, 0x1, b"early bird"));
    tokio::io::AsyncWriteExt::write_all(&mut raw, &bytes)
        .await
        .expect("write");
    assert_eq!(
        next_data(&mut listener).await.as_deref(),
        Some(&b"early bird"[..])
    );
    server.stop();
}
