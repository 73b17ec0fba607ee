//! hubcast nodes clustered over real nats-server processes: every message published on
//! any node, by any of the three ways, reaches every subscriber on every node exactly
//! once and in order; interest gating; broker failover, restart and node death.

mod common;
mod nats;

use std::time::{Duration, Instant};

use common::*;
use hubcast::cluster::ClusterConfig;
use nats::{NatsCluster, NatsServer};

/// A hubcast node (in this process) attached to the NATS servers at `urls`.
fn node(urls: Vec<String>) -> TestServer {
    start(move |c| {
        c.cluster = Some(ClusterConfig {
            urls,
            ..ClusterConfig::default()
        })
    })
}

/// Waits until every node is connected to its broker: until then, what they publish
/// is counted as dropped (`disconnected`), not carried.
async fn wait_connected(nodes: &[&TestServer]) {
    for n in nodes {
        n.wait_metric("hubcast_backplane_connected", 1).await;
    }
}

/// Waits until `node` has the server-confirmed subscriptions for `n` topics.
async fn wait_subscribed(node: &TestServer, n: u64) {
    within(async {
        while node.metric("hubcast_backplane_subscribed_topics") != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Reads `n` data messages from `ws`, as strings. On a timeout, says how far it got
/// (before `next_data`'s own, longer, timeout would say only "timed out").
async fn read_n(ws: &mut Ws, n: usize) -> Vec<String> {
    let patience = PATIENCE - Duration::from_secs(1);
    let mut out: Vec<String> = Vec::with_capacity(n);
    while out.len() < n {
        let m = match tokio::time::timeout(patience, next_data(ws)).await {
            Ok(m) => m.expect("a message"),
            Err(_) => panic!(
                "{} of {n} messages within {patience:?} each; the last: {:?}",
                out.len(),
                out.last()
            ),
        };
        out.push(String::from_utf8(m).expect("utf-8"));
    }
    out
}

/// Messages of one publisher, in the order received, with its prefix.
fn from<'a>(got: &'a [String], publisher: &str) -> Vec<&'a str> {
    got.iter()
        .map(String::as_str)
        .filter(|m| m.starts_with(publisher))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_broker_every_message_everywhere_once_in_order() {
    const N: usize = 200;
    let broker = NatsServer::start();
    let nodes: Vec<TestServer> = (0..3).map(|_| node(vec![broker.url()])).collect();
    wait_connected(&nodes.iter().collect::<Vec<_>>()).await;
    // Two subscribers of "feed" per node, one of "other" on node 1.
    let mut subs = Vec::new();
    for n in &nodes {
        subs.push(connect(&n.url("?topic=feed")).await);
        subs.push(connect(&n.url("?topic=feed")).await);
    }
    let mut other = connect(&nodes[1].url("?topic=other")).await;
    wait_subscribed(&nodes[0], 1).await;
    wait_subscribed(&nodes[1], 2).await;
    wait_subscribed(&nodes[2], 1).await;
    // The chat publisher is a subscriber of "feed" on node 1 too.
    let mut chat = connect(&nodes[1].url("?topic=feed")).await;
    nodes[1].wait_connections(4).await;

    // Three publishers at once, one per node and per way of publishing.
    let http_addr = nodes[0].addr;
    let http = tokio::spawn(async move {
        for i in 0..N {
            let (status, body) = http_publish(http_addr, "feed", &format!("http-{i}"), None).await;
            assert_eq!(status, 200, "{body}");
        }
    });
    let hub = nodes[2].hub.clone();
    let api = tokio::task::spawn_blocking(move || {
        for i in 0..N {
            hub.publish("feed", &format!("api-{i}")).expect("publish");
        }
    });
    for i in 0..N {
        send_text(&mut chat, &format!("chat-{i}")).await;
    }
    http.await.expect("http publisher");
    api.await.expect("api publisher");

    let expected: Vec<Vec<String>> = ["http", "api", "chat"]
        .iter()
        .map(|p| (0..N).map(|i| format!("{p}-{i}")).collect())
        .collect();
    subs.push(chat);
    for (i, ws) in subs.iter_mut().enumerate() {
        let got = read_n(ws, 3 * N).await;
        for (p, want) in ["http", "api", "chat"].iter().zip(&expected) {
            assert_eq!(
                from(&got, &format!("{p}-")),
                want.iter().map(String::as_str).collect::<Vec<_>>(),
                "subscriber {i}: {p} messages exactly once, in order"
            );
        }
    }
    // Topic isolation: "other" got nothing of "feed".
    nodes[1]
        .hub
        .publish("other", "only-other")
        .expect("publish");
    assert_eq!(
        next_data(&mut other).await.as_deref(),
        Some(&b"only-other"[..])
    );
    // Each node received the other two nodes' messages, and nothing of its own.
    for n in &nodes {
        assert_eq!(n.metric("hubcast_backplane_received_total"), 2 * N as u64);
    }
    for n in nodes {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_subscribers_of_a_topic_receives_none_of_its_traffic() {
    let broker = NatsServer::start();
    let a = node(vec![broker.url()]);
    let b = node(vec![broker.url()]);
    let c = node(vec![broker.url()]);
    wait_connected(&[&a, &b, &c]).await;
    let mut on_b = connect(&b.url("?topic=busy")).await;
    let _quiet_on_c = connect(&c.url("?topic=quiet")).await;
    wait_subscribed(&b, 1).await;
    wait_subscribed(&c, 1).await;
    for i in 0..100 {
        a.hub.publish("busy", &format!("m{i}")).expect("publish");
    }
    let got = read_n(&mut on_b, 100).await;
    assert_eq!(got.last().map(String::as_str), Some("m99"));
    assert_eq!(b.metric("hubcast_backplane_received_total"), 100);
    assert_eq!(
        c.metric("hubcast_backplane_received_total"),
        0,
        "c has no subscriber of \"busy\": none of its traffic reaches c"
    );
    assert_eq!(a.metric("hubcast_backplane_published_total"), 100);
    for n in [a, b, c] {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_of_one_topic_cost_one_subscription() {
    let broker = NatsServer::start();
    let a = node(vec![broker.url()]);
    let mut clients = Vec::new();
    for _ in 0..300 {
        clients.push(Raw::connect(a.addr, "?topic=crowd").await);
    }
    a.wait_connections(300).await;
    wait_subscribed(&a, 1).await;
    assert_eq!(a.metric("hubcast_backplane_subscribes_total"), 1);
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_no_local_delivery_and_cross_node_traffic_resumes() {
    let mut broker = NatsServer::start();
    let a = node(vec![broker.url()]);
    let b = node(vec![broker.url()]);
    wait_connected(&[&a, &b]).await;
    let mut local = connect(&a.url("?topic=t")).await;
    let mut remote = connect(&b.url("?topic=t")).await;
    wait_subscribed(&a, 1).await;
    wait_subscribed(&b, 1).await;
    a.hub.publish("t", "before").expect("publish");
    assert_eq!(next_data(&mut local).await.as_deref(), Some(&b"before"[..]));
    assert_eq!(
        next_data(&mut remote).await.as_deref(),
        Some(&b"before"[..])
    );

    broker.kill();
    // Local delivery never depends on the broker.
    for i in 0..50 {
        a.hub.publish("t", &format!("during-{i}")).expect("publish");
    }
    let got = read_n(&mut local, 50).await;
    assert_eq!(got.last().map(String::as_str), Some("during-49"));

    broker.restart();
    let outage = probe_until_received(&a, &mut remote, "t").await;
    println!("broker restart: {outage:?} (plus the 50 messages published while it was down)");
    assert!(outage.resumed_after < Duration::from_secs(10), "{outage:?}");
    assert!(a.metric("hubcast_backplane_reconnects_total") >= 1);
    for n in [a, b] {
        n.stop();
    }
}

/// What an outage cost, measured with numbered probes from one publisher.
#[derive(Debug)]
struct Outage {
    /// From the first probe to the first one that arrived on the other node.
    resumed_after: Duration,
    /// Probes published before the first one that arrived: lost (one publisher's order
    /// holds, so every earlier probe that had not arrived is gone).
    lost: u64,
}

/// Publishes numbered probes on `from` (one every few ms) until one reaches `ws`.
/// Probes are the synchronisation here: the reconnect happens on its own schedule.
async fn probe_until_received(from: &TestServer, ws: &mut Ws, topic: &str) -> Outage {
    use futures_util::StreamExt;
    let start = Instant::now();
    let mut sent = 0u64;
    let first = within(async {
        loop {
            let _ = from.hub.publish(topic, &format!("probe-{sent}"));
            sent += 1;
            if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(5), ws.next()).await
                && let Some(n) = m
                    .to_text()
                    .ok()
                    .and_then(|t| t.strip_prefix("probe-"))
                    .and_then(|n| n.parse::<u64>().ok())
            {
                return n;
            }
        }
    })
    .await;
    Outage {
        resumed_after: start.elapsed(),
        lost: first,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_nats_server_a_node_uses_fails_it_over_to_another() {
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    // Node a knows servers 0 and 1 (it starts on 0), node b only server 2.
    let a = node(vec![urls[0].clone(), urls[1].clone()]);
    let b = node(vec![urls[2].clone()]);
    wait_connected(&[&a, &b]).await;
    let mut on_b = connect(&b.url("?topic=f")).await;
    let mut on_a = connect(&a.url("?topic=f")).await;
    wait_subscribed(&a, 1).await;
    wait_subscribed(&b, 1).await;
    let first = probe_until_received(&a, &mut on_b, "f").await;
    println!("routes carried the first message: {first:?}");

    // Messages published while a's server is gone are lost (core NATS is at most once),
    // but counted, never silent.
    cluster.server(0).kill();
    let outage = probe_until_received(&a, &mut on_b, "f").await;
    let dropped: u64 = a
        .hub
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("hubcast_backplane_dropped_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    println!(
        "failover to another NATS server: cross-node delivery resumed after {:?}; the \
         outage cost {} messages, {dropped} of them counted as dropped on the publishing node",
        outage.resumed_after, outage.lost
    );
    assert!(
        outage.resumed_after < Duration::from_secs(5),
        "failover took {outage:?}"
    );
    // Local delivery on a went on throughout.
    a.hub.publish("f", "local-after").expect("publish");
    loop {
        let m = next_data(&mut on_a).await.expect("local delivery");
        if m == b"local-after" {
            break;
        }
    }
    for n in [a, b] {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_costs_the_other_nodes_nothing() {
    let broker = NatsServer::start();
    let (mut victim, victim_addr) = spawn_binary_with(&["--nats", &broker.url()]);
    let a = node(vec![broker.url()]);
    let b = node(vec![broker.url()]);
    wait_connected(&[&a, &b]).await;
    let _doomed = Raw::connect(victim_addr, "?topic=k").await;
    let mut on_b = connect(&b.url("?topic=k")).await;
    wait_subscribed(&b, 1).await;
    let mut i = 0;
    let mut publish_some = |n: usize| {
        for _ in 0..n {
            a.hub.publish("k", &format!("k-{i}")).expect("publish");
            i += 1;
        }
    };
    publish_some(100);
    victim.kill().expect("SIGKILL");
    victim.wait().expect("reaped");
    publish_some(100);
    let got = read_n(&mut on_b, 200).await;
    let want: Vec<String> = (0..200).map(|i| format!("k-{i}")).collect();
    assert_eq!(got, want, "every message, in order, despite the dead node");
    for n in [a, b] {
        n.stop();
    }
}
