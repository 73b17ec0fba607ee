//! The cluster's history in NATS JetStream, over a real nats-server with JetStream and
//! real v1 clients: a message has the same offset on every node, a client whose node
//! died recovers exactly on another node, a node started later recovers from what the
//! stream holds, a re-created stream is a new epoch, and presence counts every node.

mod common;
mod nats;

use std::time::Duration;

use common::v1::*;
use common::*;
use hubcast::cluster::ClusterConfig;
use nats::NatsServer;
use serde_json::{Value, json};

/// A hubcast node keeping `history` messages per topic, clustered over `url`.
fn node(url: &str, history: usize) -> TestServer {
    let url = url.to_owned();
    start(move |c| {
        c.history_size = history;
        c.cluster = Some(ClusterConfig {
            urls: vec![url],
            ..ClusterConfig::default()
        });
    })
}

/// Waits until the node is connected and reads the shared log (its history follows the
/// stream's epoch).
async fn wait_log(node: &TestServer) {
    node.wait_metric("hubcast_backplane_connected", 1).await;
    within(async {
        while !node.hub.history().is_external() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Subscribes and returns the reply's result.
async fn subscribe(ws: &mut Ws, id: u64, topic: &str, since: Option<(u64, &str)>) -> Value {
    let mut cmd = json!({"subscribe": {"topic": topic}});
    if let Some((offset, epoch)) = since {
        cmd["subscribe"]["since"] = json!({"offset": offset, "epoch": epoch});
    }
    let mut early = Vec::new();
    let reply = call(ws, id, cmd, &mut early).await;
    assert!(
        early.is_empty(),
        "no push of a topic before its reply: {early:?}"
    );
    reply["result"].clone()
}

/// The next `n` pushes as (offset, data).
async fn pushes(ws: &mut Ws, n: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let p = next_json(ws).await;
        assert!(p.get("id").is_none(), "a push, not a reply: {p}");
        out.push((offset(&p), p["data"].clone()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_the_same_on_every_node_and_a_client_recovers_on_another_node() {
    let broker = NatsServer::start_jetstream();
    let a = node(&broker.url(), 1_000);
    let b = node(&broker.url(), 1_000);
    wait_log(&a).await;
    wait_log(&b).await;

    let mut on_a = v1_connect(&a, "").await;
    let mut on_b = v1_connect(&b, "").await;
    let ra = subscribe(&mut on_a, 1, "prices", None).await;
    let rb = subscribe(&mut on_b, 1, "prices", None).await;
    let epoch = ra["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(
        rb["epoch"],
        json!(epoch),
        "one epoch on every node: the stream's"
    );

    // Both nodes publish, in turn; a v1 publish learns its offset from the log.
    let mut published = Vec::new();
    for i in 0..40u64 {
        let from = if i % 2 == 0 { &a } else { &b };
        let r = from
            .hub
            .publish_text("prices", &i.to_string())
            .expect("publish");
        assert_eq!(&*r.epoch, epoch);
        published.push(i);
    }
    let mut none = Vec::new();
    let reply = call(
        &mut on_b,
        2,
        json!({"publish": {"topic": "prices", "data": 40}}),
        &mut none,
    )
    .await;
    let acked = reply["result"]["offset"].as_u64().expect("publish offset");

    let seen_a = pushes(&mut on_a, 41).await;
    let mut seen_b = none
        .iter()
        .map(|p| (offset(p), p["data"].clone()))
        .collect::<Vec<_>>();
    let rest = pushes(&mut on_b, 41 - seen_b.len()).await;
    seen_b.extend(rest);
    assert_eq!(
        seen_a, seen_b,
        "the same messages with the same offsets on both nodes"
    );
    assert!(
        seen_a.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets increase: {seen_a:?}"
    );
    // (Only per-publisher order is promised: A's last messages may land after B's.)
    assert!(
        seen_a.contains(&(acked, json!(40))),
        "the acked offset is the pushed one: {acked} in {seen_a:?}"
    );
    // Per publisher order holds (each node's messages in the order it sent them).
    for parity in [0, 1] {
        let mine: Vec<u64> = seen_a
            .iter()
            .filter_map(|(_, d)| d.as_u64())
            .filter(|d| d % 2 == parity && *d < 40)
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
    }

    // The client on A leaves at offset `at` (the 20th message); 21 more are published
    // while it is away, then A dies.
    let at = seen_a[19].0;
    drop(on_a);
    for i in 41..62u64 {
        let from = if i % 2 == 0 { &a } else { &b };
        from.hub
            .publish_text("prices", &i.to_string())
            .expect("publish");
    }
    let missed_on_b = pushes(&mut on_b, 21).await;
    a.stop();

    // It comes back on B with its position: exactly what it missed, then live.
    let mut again = v1_connect(&b, "").await;
    let r = subscribe(&mut again, 1, "prices", Some((at, &epoch))).await;
    assert_eq!(r["recovered"], json!(true), "{r}");
    let replay = pushes(&mut again, 41 - 20 + 21).await;
    let expected: Vec<(u64, Value)> = seen_b[20..].iter().cloned().chain(missed_on_b).collect();
    assert_eq!(replay, expected, "no gap, no duplicate, same offsets");
    b.hub.publish_text("prices", "live").expect("publish");
    let live = pushes(&mut again, 1).await;
    assert_eq!(live[0].1, json!("live"));
    assert!(live[0].0 > expected[expected.len() - 1].0);
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_later_recovers_from_the_stream() {
    let broker = NatsServer::start_jetstream();
    let a = node(&broker.url(), 100);
    wait_log(&a).await;
    let mut c = v1_connect(&a, "").await;
    let r = subscribe(&mut c, 1, "scores", None).await;
    let epoch = r["epoch"].as_str().expect("epoch").to_owned();
    for i in 0..10 {
        a.hub
            .publish_text("scores", &i.to_string())
            .expect("publish");
    }
    let seen = pushes(&mut c, 10).await;
    let at = seen[3].0;
    drop(c);
    a.stop();

    // B starts after all of it: it reads the stream's history at start (without
    // delivering it as news) and recovers the client from there.
    let b = node(&broker.url(), 100);
    wait_log(&b).await;
    let mut c = v1_connect(&b, "").await;
    let r = subscribe(&mut c, 1, "scores", Some((at, &epoch))).await;
    assert_eq!(r["recovered"], json!(true), "{r}");
    assert_eq!(pushes(&mut c, 6).await, seen[4..].to_vec());
    // And a position older than what the stream could ever have held is refused.
    let mut d = v1_connect(&b, "").await;
    let r = subscribe(&mut d, 1, "scores", Some((0, "another-epoch"))).await;
    assert_eq!(r["recovered"], json!(false));
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_is_a_new_epoch() {
    let broker = NatsServer::start_jetstream();
    let a = node(&broker.url(), 100);
    wait_log(&a).await;
    let mut c = v1_connect(&a, "").await;
    let r = subscribe(&mut c, 1, "t", None).await;
    let old = r["epoch"].as_str().expect("epoch").to_owned();
    a.hub.publish_text("t", "before").expect("publish");
    let at = pushes(&mut c, 1).await[0].0;

    // Someone deletes the stream: the node re-creates it within its check period.
    let nats = async_nats::connect(broker.url()).await.expect("connect");
    async_nats::jetstream::new(nats)
        .delete_stream("hubcast_history")
        .await
        .expect("delete the stream");
    within(async {
        while a.hub.history().position("t").epoch == old {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut d = v1_connect(&a, "").await;
    let r = subscribe(&mut d, 1, "t", Some((at, &old))).await;
    assert_eq!(r["recovered"], json!(false), "another epoch: {r}");
    assert_ne!(r["epoch"], json!(old));
    a.stop();
}

/// Asks `presence` of `topic` (ids from `id` on) until the answer is `want`; an answer
/// above `most` (more subscribers than ever existed) fails at once.
async fn presence_until(ws: &mut Ws, id: &mut u64, topic: &str, want: u64, most: u64) {
    within(async {
        loop {
            *id += 1;
            let mut none = Vec::new();
            let r = call(ws, *id, json!({"presence": {"topic": topic}}), &mut none).await;
            let n = r["result"]["subscribers"].as_u64().expect("a count");
            if n == want {
                return;
            }
            assert!(n <= most, "{r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_the_subscribers_of_every_node() {
    // Presence does not need the history: a plain cluster (core NATS) counts too.
    let broker = NatsServer::start();
    let a = node(&broker.url(), 0);
    let b = node(&broker.url(), 0);
    a.wait_metric("hubcast_backplane_connected", 1).await;
    b.wait_metric("hubcast_backplane_connected", 1).await;
    let _on_a: Vec<Ws> = vec![
        connect(&a.url("?topic=game")).await,
        connect(&a.url("?topic=game")).await,
    ];
    let mut on_b = vec![
        connect(&b.url("?topic=game")).await,
        connect(&b.url("?topic=game")).await,
        connect(&b.url("?topic=other")).await,
    ];
    a.wait_connections(2).await;
    b.wait_connections(3).await;
    let mut asker = v1_connect(&a, "").await;
    let mut id = 0;
    // Reports travel once a second: ask until A has heard from B.
    presence_until(&mut asker, &mut id, "game", 4, 4).await;
    // And B counts A's clients the same way, in `GET /topics/{topic}`.
    within(async {
        loop {
            let (status, body) = http(
                b.addr,
                &format!(
                    "GET /topics/game HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    b.addr
                ),
            )
            .await;
            assert_eq!(status, 200);
            let info: Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(info["local_subscribers"], json!(2), "{info}");
            if info["subscribers"] == json!(4) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // B's clients leave: A's count follows within a report.
    on_b.clear();
    b.wait_connections(0).await;
    presence_until(&mut asker, &mut id, "game", 2, 4).await;
    a.stop();
    b.stop();
}
