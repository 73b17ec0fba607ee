//! A shard with more clients than one lane holds (1,024 slab keys) serves each round lane
//! by lane and takes in frames published mid-round. Nothing may be lost or repeated on
//! the way: v1 clients that subscribe or unsubscribe while messages flow, in a lane the
//! round has not reached yet, get exactly the messages after their reply's position and
//! none after their unsubscribe; plain clients in every lane get every message in order;
//! and what was accepted before a shutdown reaches every lane before the 1001.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::v1::*;
use common::*;
use serde_json::{Value, json};

/// Plain clients before each group of v1 clients: the first group lands in lane 1
/// (keys 1,100–1,119), the second in lane 2 (keys 2,220–2,239).
const PLAIN_PER_GROUP: usize = 1_100;
const V1_PER_GROUP: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_served_lane_by_lane_loses_and_repeats_nothing() {
    raise_open_file_limit(4 * (PLAIN_PER_GROUP + V1_PER_GROUP) as u64 + 100);
    let server = start(|c| c.shards = 1);
    // Connected one at a time, so slab keys follow connect order.
    let mut plain = Vec::new();
    let mut v1 = Vec::new();
    for _ in 0..2 {
        for _ in 0..PLAIN_PER_GROUP {
            plain.push(connect(&server.url("?topic=t")).await);
        }
        for _ in 0..V1_PER_GROUP {
            v1.push(v1_connect(&server, "?topic=marker").await);
        }
    }
    server.wait_connections(plain.len() + v1.len()).await;

    // Messages flow until every subscribe and unsubscribe below is done, so each one
    // lands mid-stream, most of them mid-round (a round to 2,240 sockets takes a while).
    let stop = Arc::new(AtomicBool::new(false));
    let hub = server.hub.clone();
    let flag = stop.clone();
    let publisher = std::thread::spawn(move || {
        let mut n = 0u64;
        while !flag.load(Ordering::Relaxed) {
            hub.publish("t", &n.to_string()).expect("publish");
            n += 1;
            // Shapes the load (a stream, not one burst); nothing waits on it.
            std::thread::sleep(Duration::from_micros(300));
        }
        n
    });
    let mut starts = Vec::new();
    // Pushes the v1 clients got (the server counts each as a delivery).
    let mut v1_pushes = 0;
    for (i, c) in v1.iter_mut().enumerate() {
        let mut early = Vec::new();
        let r = call(c, 1, json!({"subscribe": {"topic": "t"}}), &mut early).await;
        assert!(early.is_empty(), "nothing of t before the reply: {early:?}");
        starts.push(offset(&r["result"]));
        // Every other client leaves again at once, while the stream goes on.
        if i % 2 == 1 {
            let mut got = Vec::new();
            let r = call(c, 2, json!({"unsubscribe": {"topic": "t"}}), &mut got).await;
            assert_eq!(r["result"], json!({"topic": "t"}));
            assert_contiguous(&got, starts[i]);
            v1_pushes += got.len() as u64;
            starts[i] = u64::MAX; // marks "left": checked below
        }
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().expect("publisher");
    server.hub.publish("marker", "end").expect("publish");

    for (c, &start) in v1.iter_mut().zip(&starts) {
        let mut got = Vec::new();
        loop {
            let p = next_json(c).await;
            if p["topic"] == "marker" {
                break;
            }
            got.push(p);
        }
        if start == u64::MAX {
            assert!(
                got.is_empty(),
                "{} pushes after the unsubscribe reply, from {}",
                got.len(),
                got[0]
            );
        } else {
            assert_contiguous(&got, start);
            assert_eq!(
                start + got.len() as u64,
                published,
                "a subscriber from offset {start} got every later message"
            );
            v1_pushes += got.len() as u64;
        }
    }
    // The plain clients on both sides of each lane boundary (keys 1,023 | 1,024 and
    // 2,047 | 2,048), and the first and last, read everything, in order. Keys follow
    // connect order, with the first v1 group's 20 keys after the first 1,100 plain ones.
    let plain_at = |key: usize| {
        if key < PLAIN_PER_GROUP {
            key
        } else {
            key - V1_PER_GROUP
        }
    };
    for key in [
        0,
        1023,
        1024,
        2047,
        2048,
        2 * PLAIN_PER_GROUP + V1_PER_GROUP - 1,
    ] {
        let i = plain_at(key);
        for n in 0..published {
            let m = next_data(&mut plain[i]).await.expect("a message");
            assert_eq!(m, n.to_string().as_bytes(), "plain client with key {key}");
        }
    }
    // And every plain client got every message exactly once: the server's count of
    // deliveries is exactly what the clients above account for (the marker included).
    let expected = plain.len() as u64 * published + v1_pushes + v1.len() as u64;
    server
        .wait_metric("hubcast_deliveries_total", expected)
        .await;
    assert_eq!(server.metric("hubcast_deliveries_total"), expected);
    server.stop();
}

/// Pushes of `t` numbered `start + 1`, `start + 2`, … with the matching data.
fn assert_contiguous(pushes: &[Value], start: u64) {
    for (i, p) in pushes.iter().enumerate() {
        let want = start + 1 + i as u64;
        assert_eq!(p["topic"], "t", "{p}");
        assert_eq!(offset(p), want, "no gap, no repeat");
        assert_eq!(p["data"], json!(want - 1), "offset n carries message n - 1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_accepted_before_shutdown_reach_every_lane() {
    // Two lanes: keys 0–1,023 and 1,024–1,099.
    const CLIENTS: usize = 1_100;
    const N: usize = 200;
    raise_open_file_limit(2 * CLIENTS as u64 + 100);
    // A long batching budget: once the shard is busy it holds its next round back for
    // seconds, so what is published then is still in the inbox at shutdown and only the
    // drain can deliver it.
    let server = start(|c| {
        c.shards = 1;
        c.coalesce = Duration::from_secs(3);
        c.drain_timeout = Duration::from_secs(4);
    });
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect(&server.url("?topic=t")).await);
    }
    server.wait_connections(CLIENTS).await;
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { read_until_close(&mut ws).await }))
        .collect();
    // Two rounds teach the pacer that frames keep coming; the second sets a deadline.
    for (i, rounds) in [(0, 1), (1, 2)] {
        server
            .hub
            .publish("t", &format!("warm-{i}"))
            .expect("publish");
        server
            .wait_metric("hubcast_fanout_rounds_total", rounds)
            .await;
    }
    let hub = server.hub.clone();
    let stopped = tokio::task::spawn_blocking(move || {
        for n in 0..N {
            hub.publish("t", &n.to_string())
                .expect("accepted before shutdown");
        }
        server.stop();
    });
    let want: Vec<Vec<u8>> = ["warm-0".to_string(), "warm-1".to_string()]
        .into_iter()
        .chain((0..N).map(|n| n.to_string()))
        .map(String::into_bytes)
        .collect();
    for (i, r) in readers.into_iter().enumerate() {
        let (got, code) = r.await.expect("client");
        assert_eq!(got.len(), want.len(), "client {i}: {} messages", got.len());
        assert_eq!(got, want, "client {i}: every message, in order");
        assert_eq!(code, Some(1001), "client {i}");
    }
    within(stopped).await.expect("server stopped");
}

/// Every data message up to the close frame, and the close code (None when the socket
/// just ended); then reads on, so the client answers the close and sees EOF.
async fn read_until_close(ws: &mut Ws) -> (Vec<Vec<u8>>, Option<u16>) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut got = Vec::new();
    let mut code = None;
    while let Some(Ok(m)) = within(ws.next()).await {
        match m {
            Message::Text(t) => got.push(t.as_bytes().to_vec()),
            Message::Close(frame) => {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    while next_data(ws).await.is_some() {}
    (got, code)
}
