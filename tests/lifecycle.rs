//! Slow consumers, silent clients and shutdown: the offender is closed, the others lose
//! nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_while_others_get_everything() {
    const READERS: usize = 4;
    let server = start(|c| {
        c.client_buffer = 256 << 10;
        c.pong_timeout = Duration::from_millis(500);
    });
    // The slow client: a raw socket that never reads after the handshake.
    let slow = Raw::connect(server.addr, "?topic=flood").await;
    let received = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut ws = connect(&server.url("?topic=flood")).await;
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            while let Some(m) = next_data(&mut ws).await {
                let text = String::from_utf8(m).expect("utf8");
                if text == "end" {
                    break;
                }
                let seq: usize = text[..8].parse().expect("seq");
                seqs.push(seq);
                received.fetch_add(1, Ordering::Relaxed);
            }
            (seqs, ws)
        }));
    }
    server.wait_connections(READERS + 1).await;
    // Publish 16 KiB messages until the slow client is cut off; readers keep pace
    // (each round waits for them), so only the one that never reads falls behind.
    let pad = "x".repeat(16 << 10);
    let mut sent = 0;
    while server.metric("hubcast_slow_consumer_closes_total") == 0 {
        assert!(
            sent < 20_000,
            "slow consumer never closed after {sent} messages"
        );
        for _ in 0..16 {
            server
                .hub
                .publish("flood", &format!("{sent:08}{pad}"))
                .expect("publish");
            sent += 1;
        }
        let want = sent * READERS;
        within(async {
            while received.load(Ordering::Relaxed) < want {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    server.hub.publish("flood", "end").expect("publish");
    let mut alive = Vec::new();
    for r in readers {
        let (seqs, ws) = r.await.expect("reader");
        alive.push(ws);
        assert_eq!(
            seqs,
            (0..sent).collect::<Vec<_>>(),
            "a reader lost or reordered messages"
        );
    }
    assert_eq!(server.metric("hubcast_slow_consumer_closes_total"), 1);
    // The slow client's connection ends (its queue is freed, not kept).
    let mut slow = slow;
    let code = slow.close_code().await;
    assert!(code.is_none() || code == Some(1008), "close code {code:?}");
    server.wait_connections(READERS).await;
    server.stop();
}

/// Found by the soak (scripts/soak): a slow consumer on two topics went over its budget
/// again with every frame the same fan-out round still handed it, and was closed —
/// counted in `hubcast_slow_consumer_closes_total` and logged — that many times (up to
/// 1,412 here, for one client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_on_two_topics_is_counted_once() {
    let server = start(|c| {
        c.shards = 1;
        c.client_buffer = 64 << 10;
        c.pong_timeout = Duration::from_millis(300);
    });
    let _slow = Raw::connect(server.addr, "?topic=a&topic=b").await;
    server.wait_connections(1).await;
    // Small frames to both topics, in bursts: the shard takes many of them in one
    // round, and the frame that crosses the budget is rarely a round's last.
    let frame = "x".repeat(1 << 10);
    let mut sent = 0;
    while server.metric("hubcast_slow_consumer_closes_total") == 0 {
        assert!(sent < 1_000_000, "never closed after {sent} frames");
        for topic in ["a", "b"].iter().cycle().take(256) {
            let _ = server.hub.publish(topic, &frame);
        }
        sent += 256;
    }
    // The client is gone (its close deadline passed): nothing can count it again.
    server.wait_connections(0).await;
    assert_eq!(server.metric("hubcast_slow_consumer_closes_total"), 1);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed() {
    let server = start(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.pong_timeout = Duration::from_millis(300);
    });
    // A well-behaved client: tungstenite answers pings while we keep reading.
    let mut good = connect(&server.url("?topic=p")).await;
    let good_task = tokio::spawn(async move { next_data(&mut good).await });
    // A raw client that reads pings but never answers them.
    let mut mute = Raw::connect(server.addr, "?topic=p").await;
    let mut pings = 0;
    let code = loop {
        match mute.frame().await {
            Some((_, 0x9, _)) => pings += 1,
            Some((_, 0x8, payload)) => break Some(u16::from_be_bytes([payload[0], payload[1]])),
            Some(_) => {}
            None => break None,
        }
    };
    assert!(pings >= 1, "the server pinged first");
    assert_eq!(code, Some(1008));
    assert_eq!(server.metric("hubcast_ping_timeouts_total"), 1);
    server.wait_connections(1).await;
    // The client that answered is still there and still receives.
    server.hub.publish("p", "still here").expect("publish");
    assert_eq!(
        good_task.await.expect("task").as_deref(),
        Some(&b"still here"[..])
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_1001_to_every_client() {
    const CLIENTS: usize = 300;
    let server = start(|c| c.drain_timeout = Duration::from_secs(4));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let topic = if i % 2 == 0 { "?topic=a" } else { "?topic=b" };
        clients.push(connect(&server.url(topic)).await);
    }
    server.wait_connections(CLIENTS).await;
    let waiting: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let code = close_code(&mut ws).await;
                // Keep polling so the client sends its close reply and sees EOF.
                while next_data(&mut ws).await.is_some() {}
                code
            })
        })
        .collect();
    let addr = server.addr;
    let hub = server.hub.clone();
    let stopped = tokio::task::spawn_blocking(move || server.stop());
    for w in waiting {
        assert_eq!(w.await.expect("client"), Some(1001));
    }
    within(stopped).await.expect("server stopped");
    assert!(hub.is_shutting_down());
    assert_eq!(
        hub.publish("a", "too late"),
        Err(hubcast::PublishError::ShuttingDown)
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pings_counts_as_alive() {
    let server = start(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.pong_timeout = Duration::from_millis(300);
    });
    // Never answers the server's pings, but sends pings of its own: that is life too.
    let mut raw = Raw::connect(server.addr, "?topic=p").await;
    let mut server_pings = 0;
    // The server gives up after 400 ms of silence; 10 pings span ~1 s.
    while server_pings < 10 {
        match raw.frame().await {
            Some((_, 0x9, _)) => {
                server_pings += 1;
                raw.send(&client_frame(true, 0x9, b"me too")).await;
            }
            Some((_, 0xA, payload)) => assert_eq!(payload, b"me too"),
            Some((_, 0x8, payload)) => panic!("closed although it pinged: {payload:?}"),
            Some(_) => {}
            None => panic!("connection ended although the client pinged"),
        }
    }
    assert_eq!(server.metric("hubcast_ping_timeouts_total"), 0);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_publisher_is_slowed_down_not_dropped() {
    const N: usize = 3000;
    // A tiny inbox: the publisher outruns the shards at once.
    let server = start(|c| c.inbox_capacity = 4);
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(connect(&server.url("?topic=bp")).await);
    }
    let mut publisher = Raw::connect(server.addr, "?topic=bp").await;
    let mut burst = Vec::new();
    for i in 0..N {
        burst.extend(client_frame(true, 0x1, format!("{i}").as_bytes()));
    }
    publisher.send(&burst).await;
    for mut ws in subs {
        for i in 0..N {
            let got = next_data(&mut ws).await.expect("stream");
            assert_eq!(got, format!("{i}").into_bytes());
        }
    }
    assert_eq!(server.metric("hubcast_inbox_dropped_total"), 0);
    drop(publisher);
    server.stop();
}
