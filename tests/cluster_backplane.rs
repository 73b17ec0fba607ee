//! The NATS backplane against real nats-server processes: two or three nodes in one
//! test process, each with its own `Backplane` (and so its own connection).

mod nats;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hubcast::cluster::{Backplane, ClusterConfig, Dropped, Kind, State};
use nats::{NatsCluster, NatsServer};

/// Upper bound for anything a test waits for; hitting it fails the test.
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    topic: String,
    kind: Kind,
    payload: Bytes,
    sent: Option<u64>,
}

/// What a node's engine would have been handed: every delivery, in order.
#[derive(Default)]
struct Inbox {
    got: Mutex<Vec<Got>>,
    changed: Condvar,
}

impl Inbox {
    fn deliver(self: &Arc<Self>) -> Arc<dyn hubcast::cluster::Deliver> {
        let inbox = self.clone();
        Arc::new(
            move |topic: &str,
                  kind: Kind,
                  payload: Bytes,
                  sent: Option<u64>|
                  -> Result<(), Dropped> {
                let mut got = inbox.got.lock().expect("inbox lock");
                got.push(Got {
                    topic: topic.to_owned(),
                    kind,
                    payload,
                    sent,
                });
                inbox.changed.notify_all();
                Ok(())
            },
        )
    }

    fn all(&self) -> Vec<Got> {
        self.got.lock().expect("inbox lock").clone()
    }

    /// Payloads received on `topic`, as strings.
    fn texts(&self, topic: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|g| g.topic == topic)
            .map(|g| String::from_utf8_lossy(&g.payload).into_owned())
            .collect()
    }

    /// Waits until some delivery satisfies `f`.
    fn wait_for(&self, what: &str, f: impl Fn(&Got) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        let mut got = self.got.lock().expect("inbox lock");
        while !got.iter().any(&f) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}; got {got:?}");
            got = self.changed.wait_timeout(got, left).expect("inbox lock").0;
        }
    }
}

fn config(urls: Vec<String>) -> ClusterConfig {
    ClusterConfig {
        urls,
        // Short, so that the unsubscribe test does not wait a whole second.
        linger: Duration::from_millis(200),
        ..ClusterConfig::default()
    }
}

fn start(urls: Vec<String>) -> (Backplane, Arc<Inbox>) {
    // `RUST_LOG=hubcast=debug cargo test --test cluster_backplane -- --nocapture` shows
    // what the backplane logs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let inbox = Arc::new(Inbox::default());
    let bp = Backplane::start(config(urls), inbox.deliver()).expect("backplane starts");
    (bp, inbox)
}

/// Polls `f` until it holds (the backplane's state lives on its own thread).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Makes sure `to`'s subscription of `topic` is live on the broker: `from` publishes
/// probes until one arrives (a SUB is sent asynchronously; this is the only way to know
/// the server has it), then one last `probe-N-end` so that no probe is still under way
/// when this returns. The probes stay in the inbox as `probe-N`.
fn await_route(from: &Backplane, to: &Inbox, topic: &str) {
    static PROBES: AtomicUsize = AtomicUsize::new(0);
    let probe = format!("probe-{}", PROBES.fetch_add(1, Ordering::Relaxed));
    let deadline = Instant::now() + PATIENCE;
    loop {
        from.publish(topic, Kind::Text, text(&probe));
        let got = to.got.lock().expect("inbox lock");
        if got
            .iter()
            .any(|g| g.topic == topic && g.payload[..] == *probe.as_bytes())
        {
            drop(got);
            let end = format!("{probe}-end");
            from.publish(topic, Kind::Text, text(&end));
            to.wait_for(&end, |g| {
                g.topic == topic && g.payload[..] == *end.as_bytes()
            });
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {probe} on {topic} arrived; got {got:?}"
        );
        let _ = to
            .changed
            .wait_timeout(got, Duration::from_millis(50).min(left))
            .expect("inbox lock");
    }
}

#[test]
fn two_nodes_exchange_in_order_and_skip_their_own_echoes() {
    let server = NatsServer::start();
    let (a, a_in) = start(vec![server.url()]);
    let (b, b_in) = start(vec![server.url()]);
    eventually("both connected", || {
        a.state() == State::Connected && b.state() == State::Connected
    });
    assert_ne!(a.node_id(), b.node_id());

    // A topic name that needs escaping end to end.
    let topic = "room.1 *>~";
    a.set_interest(0, topic, true);
    b.set_interest(0, topic, true);
    b.set_interest(1, topic, true); // a second shard: still one subscription
    await_route(&a, &b_in, topic);
    await_route(&b, &a_in, topic);
    assert_eq!(b.stats().subscribes, 1);

    // Per-publisher order over many messages.
    for i in 0..2_000 {
        a.publish(topic, Kind::Text, text(&format!("a{i}")));
    }
    b_in.wait_for("a's last message", |g| &g.payload[..] == b"a1999");
    let from_a: Vec<String> = b_in
        .texts(topic)
        .into_iter()
        .filter(|t| !t.starts_with("probe"))
        .collect();
    let expected: Vec<String> = (0..2_000).map(|i| format!("a{i}")).collect();
    assert_eq!(from_a, expected);

    // Binary, with the send time.
    let blob = Bytes::from_static(&[0, 159, 146, 150, 255]);
    b.publish(topic, Kind::Binary, blob.clone());
    a_in.wait_for("b's binary", |g| g.kind == Kind::Binary);
    let got = a_in
        .all()
        .into_iter()
        .find(|g| g.kind == Kind::Binary)
        .expect("binary message");
    assert_eq!(got.payload, blob);
    assert!(got.sent.is_some());

    // Echoes: b's message reached a (so the server processed it) before a publishes the
    // barrier; the server writes to b's connection in processing order, so an echo of
    // b's message would arrive at b before the barrier.
    a.publish(topic, Kind::Text, text("barrier"));
    b_in.wait_for("the barrier", |g| &g.payload[..] == b"barrier");
    assert!(
        b_in.all().iter().all(|g| g.kind != Kind::Binary),
        "b got its own message back"
    );
    assert!(
        a_in.texts(topic).iter().all(|t| !t.starts_with('a')),
        "a got its own messages back"
    );

    let (sa, sb) = (a.stats(), b.stats());
    assert!(sa.published >= 2_001, "{sa:?}");
    assert!(sb.received >= 2_001, "{sb:?}");
    assert_eq!(sa.dropped.values().sum::<u64>(), 0, "{sa:?}");
    assert_eq!(sb.dropped.values().sum::<u64>(), 0, "{sb:?}");
    // The server does not echo (no_echo); the node-id check never has to.
    assert_eq!(sa.echo_skipped + sb.echo_skipped, 0);
    assert!(sb.connected && sb.subscribed_topics == 1);

    let mut metrics = String::new();
    b.render_metrics(&mut metrics);
    assert!(
        metrics.contains("hubcast_backplane_connected 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hubcast_backplane_cross_node_latency_seconds_count"),
        "{metrics}"
    );

    a.shutdown();
    b.shutdown();
    assert_eq!(a.state(), State::Disconnected);
    a.publish(topic, Kind::Text, text("late"));
    assert_eq!(a.stats().dropped("shutdown"), 1);
}

#[test]
fn only_nodes_with_interest_receive_and_interest_lingers() {
    let server = NatsServer::start();
    let (a, a_in) = start(vec![server.url()]);
    let (b, b_in) = start(vec![server.url()]);
    let (c, c_in) = start(vec![server.url()]);
    eventually("all connected", || {
        [&a, &b, &c].iter().all(|n| n.state() == State::Connected)
    });
    b.set_interest(0, "room", true);
    c.set_interest(0, "other", true);
    await_route(&a, &b_in, "room");
    await_route(&a, &c_in, "other");

    // c never had interest in "room": a's messages there never reach it. The barrier on
    // "other" comes from the same publisher, so c sees it after anything sent before it.
    for i in 0..100 {
        a.publish("room", Kind::Text, text(&format!("r{i}")));
    }
    a.publish("other", Kind::Text, text("barrier"));
    c_in.wait_for("the barrier", |g| &g.payload[..] == b"barrier");
    b_in.wait_for("r99", |g| &g.payload[..] == b"r99");
    assert!(c_in.texts("room").is_empty(), "{:?}", c_in.all());
    assert_eq!(c.stats().subscribed_topics, 1);
    assert!(a_in.all().is_empty(), "a has no interest at all");

    // b loses interest: it stays subscribed for the linger, then unsubscribes.
    b.set_interest(0, "room", false);
    assert_eq!(b.stats().unsubscribes, 0);
    eventually("b unsubscribes after the linger", || {
        b.stats().unsubscribes == 1
    });
    assert_eq!(b.stats().subscribed_topics, 0);
    // b's UNSUB of "room" precedes its SUB of "sync" on its connection: once "sync" is
    // routed, "room" is gone on the server.
    b.set_interest(0, "sync", true);
    await_route(&a, &b_in, "sync");
    let before = b_in.texts("room").len();
    a.publish("room", Kind::Text, text("after"));
    a.publish("sync", Kind::Text, text("barrier"));
    b_in.wait_for("the barrier", |g| &g.payload[..] == b"barrier");
    assert_eq!(b_in.texts("room").len(), before, "b still receives room");

    // Churn within the linger keeps one subscription (no flapping).
    c.set_interest(0, "other", false);
    c.set_interest(0, "other", true);
    c.set_interest(0, "other", false);
    c.set_interest(1, "other", true);
    std::thread::sleep(Duration::from_millis(400)); // two lingers
    let s = c.stats();
    assert_eq!((s.subscribes, s.unsubscribes), (1, 0), "{s:?}");
}

#[test]
fn starts_without_a_broker_and_survives_its_restart() {
    let mut server = NatsServer::unstarted();
    let (a, a_in) = start(vec![server.url()]);
    let (b, b_in) = start(vec![server.url()]);
    // No broker yet: start returned at once, publishes are counted drops.
    assert_eq!(a.state(), State::Connecting);
    a.set_interest(0, "t", true);
    b.set_interest(0, "t", true);
    b.publish("t", Kind::Text, text("lost"));
    assert_eq!(b.stats().dropped("disconnected"), 1);

    server.restart();
    eventually("both connected", || {
        a.state() == State::Connected && b.state() == State::Connected
    });
    // The SUB made while connecting went out on connect.
    await_route(&b, &a_in, "t");
    assert!(a_in.texts("t").iter().all(|t| t != "lost"));

    server.kill();
    eventually("both see the outage", || {
        a.state() == State::Disconnected && b.state() == State::Disconnected
    });
    let dropped = b.stats().dropped("disconnected");
    b.publish("t", Kind::Text, text("during the outage"));
    assert_eq!(b.stats().dropped("disconnected"), dropped + 1);

    server.restart();
    eventually("both reconnected", || {
        a.state() == State::Connected && b.state() == State::Connected
    });
    assert_eq!(a.stats().reconnects, 1);
    // The client re-sent the SUB on reconnect: no new subscription from us.
    assert_eq!(a.stats().subscribes, 1);
    b.publish("t", Kind::Text, text("after the restart"));
    a_in.wait_for("a message after the restart", |g| {
        &g.payload[..] == b"after the restart"
    });
    let _ = b_in;
}

#[test]
fn nodes_on_different_servers_of_a_cluster_share_topics() {
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    // Each node is seeded with a different server first; all know every server.
    let (a, a_in) = start(vec![urls[0].clone()]);
    let (b, b_in) = start(vec![urls[1].clone(), urls[2].clone()]);
    eventually("both connected", || {
        a.state() == State::Connected && b.state() == State::Connected
    });
    a.set_interest(0, "x", true);
    b.set_interest(0, "x", true);
    await_route(&b, &a_in, "x");
    await_route(&a, &b_in, "x");

    // a's server dies: a moves to one it learned from the cluster and resubscribes.
    cluster.server(0).kill();
    eventually("a reconnects elsewhere", || a.stats().reconnects == 1);
    b.publish("x", Kind::Text, text("still here"));
    await_route(&b, &a_in, "x");
    cluster.server(0).restart();
    cluster.wait_routes();
}

#[test]
fn every_message_is_published_delivered_or_counted_as_dropped() {
    let server = NatsServer::start();
    // A small queue, so that a burst overflows it.
    let a = Backplane::start(
        ClusterConfig {
            queue_capacity: 16,
            ..config(vec![server.url()])
        },
        Arc::new(Inbox::default()).deliver(),
    )
    .expect("backplane starts");
    // b's engine refuses every third message of "burst" (a full inbox).
    let b_in = Arc::new(Inbox::default());
    let accepted = b_in.deliver();
    let calls = Arc::new(AtomicUsize::new(0));
    let refusing = {
        let calls = calls.clone();
        move |topic: &str, kind: Kind, payload: Bytes, sent: Option<u64>| {
            if topic == "burst" && calls.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
                return Err(Dropped);
            }
            accepted.deliver(topic, kind, payload, sent)
        }
    };
    let b = Backplane::start(config(vec![server.url()]), Arc::new(refusing)).expect("starts");
    eventually("both connected", || {
        a.state() == State::Connected && b.state() == State::Connected
    });
    // "ready" is subscribed after "burst" on b's connection: once it is routed, so is
    // "burst" (and no probe is counted below).
    b.set_interest(0, "burst", true);
    b.set_interest(0, "ready", true);
    await_route(&a, &b_in, "ready");
    let before = (a.stats(), b.stats());

    const N: u64 = 20_000;
    for i in 0..N {
        a.publish("burst", Kind::Text, text(&format!("m{i}")));
    }
    // Sender: each publish went out or was counted.
    eventually("a accounts for every publish", || {
        let s = a.stats();
        s.published + s.dropped("queue_full") - before.0.published == N
    });
    let sent = a.stats().published - before.0.published;
    assert!(sent > 0);
    // Receiver: everything sent arrived (loopback, one connection each: no loss), and
    // each arrival was delivered or counted.
    eventually("b receives what a sent", || {
        b.stats().received - before.1.received == sent
    });
    let s = b.stats();
    let delivered = b_in.texts("burst").len() as u64;
    assert_eq!(
        delivered + s.dropped("inbox_full"),
        s.received - before.1.received,
        "{s:?}"
    );
    assert!(s.dropped("inbox_full") > 0);
    // Per-publisher order survives the drops.
    let seq: Vec<u64> = b_in
        .texts("burst")
        .iter()
        .filter_map(|t| t.strip_prefix('m')?.parse().ok())
        .collect();
    assert!(seq.windows(2).all(|w| w[0] < w[1]), "out of order");

    // A message not published by hubcast (no headers) is counted as malformed.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let raw = async_nats::connect(server.url()).await.expect("raw client");
        raw.publish("hubcast.t.burst", Bytes::from_static(b"raw"))
            .await
            .expect("publish");
        raw.flush().await.expect("flush");
    });
    eventually("the raw message is counted as malformed", || {
        b.stats().dropped("malformed") == 1
    });
}
