//! Latency-aware batching over real sockets: a shard that writes to many sockets waits
//! for more frames only when its arrival rate says they will come within the budget, so
//! a lightly loaded shard writes every message at once, however large the budget, and a
//! busy one writes once per budget.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Subscribers enough that every fan-out round is heavy (≥ 250 µs), the only rounds
/// after which a shard may wait.
const SUBSCRIBERS: usize = 400;

/// Mean fan-out round, in seconds, over both shards (from the round histogram).
fn mean_round(server: &TestServer) -> f64 {
    let text = server.hub.metrics_text();
    let total = |suffix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("hubcast_fanout_round_seconds_{suffix}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    total("sum") / total("count").max(1.0)
}

/// A server with latency budget `budget` and [`SUBSCRIBERS`] clients on topic `t`.
async fn subscribed(budget: Duration) -> (TestServer, Vec<Ws>) {
    let server = start(|c| c.coalesce = budget);
    let mut clients = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        clients.push(connect(&server.url("?topic=t")).await);
    }
    server.wait_connections(SUBSCRIBERS).await;
    (server, clients)
}

/// Fails unless the fan-out rounds were heavy (≥ 250 µs on average), the only rounds
/// after which a shard may wait: otherwise a pacing test would pass without pacing.
fn assert_rounds_heavy(server: &TestServer) {
    let round = mean_round(server);
    assert!(
        round >= 250e-6,
        "rounds must be heavy for this test to mean anything: mean {round} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_load_is_written_at_once_even_with_a_large_budget() {
    // A 3 s budget: the old fixed window held every message that came within it of a
    // heavy round until it was over (here up to 3 s).
    let (server, mut clients) = subscribed(Duration::from_secs(3)).await;

    // 0.625 messages per second: fewer than two expected within the budget, so waiting
    // would buy nothing. Each must reach the last subscriber well within the budget
    // (the bound leaves room for a busy machine).
    let gap = Duration::from_millis(1_600);
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let sent = Instant::now();
        server.hub.publish("t", &i.to_string()).expect("publish");
        for c in clients.iter_mut() {
            let got = next_data(c).await.expect("a message");
            assert_eq!(got, i.to_string().into_bytes());
        }
        worst = worst.max(sent.elapsed());
        // Shapes the load (a message every 1.6 s); nothing waits on it.
        tokio::time::sleep(gap.saturating_sub(sent.elapsed())).await;
    }
    assert_rounds_heavy(&server);
    assert!(
        worst < Duration::from_millis(1_500),
        "a message waited {worst:?} at light load"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_shard_writes_once_per_budget() {
    // 50 messages per second against a 300 ms budget: ~15 expected per wait, so after the
    // first two rounds (no rate known yet) each shard writes once per budget. A deadline
    // lost to a wake-up with nothing to send (the bug this guards) added an unpaced
    // one-message round after every paced one, doubling the rounds.
    let budget = Duration::from_millis(300);
    let (server, mut clients) = subscribed(budget).await;

    const MESSAGES: u32 = 100;
    let gap = Duration::from_millis(20);
    let began = Instant::now();
    for i in 0..MESSAGES {
        server.hub.publish("t", &i.to_string()).expect("publish");
        // Shapes the load (a message every 20 ms); nothing waits on it.
        tokio::time::sleep_until((began + gap * (i + 1)).into()).await;
    }
    let publishing = began.elapsed();
    for c in clients.iter_mut() {
        for i in 0..MESSAGES {
            let got = next_data(c).await.expect("a message");
            assert_eq!(got, i.to_string().into_bytes(), "in order, none missing");
        }
    }
    assert_rounds_heavy(&server);
    // Per shard: two warm-up rounds, one per budget while publishing, one for the tail.
    let shards = 2;
    let paced = (publishing.as_secs_f64() / budget.as_secs_f64()).ceil() as u64;
    let bound = shards * (2 + paced + 2);
    let rounds = server.metric("hubcast_fanout_rounds_total");
    assert!(
        rounds <= bound,
        "{rounds} rounds for {MESSAGES} messages over {publishing:?} (at most {bound} when \
         each shard writes once per {budget:?})"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_shard_still_takes_new_connections_at_once() {
    // A 3 s budget on busy shards: each waits ~3 s between rounds. A connection the
    // listener hands to a shard that is waiting used to wait for that deadline before
    // its handshake even began: up to the whole budget, for every second connect.
    let budget = Duration::from_secs(3);
    let (server, _subscribers) = subscribed(budget).await;

    // Keep both shards busy (and so waiting) with a message every 20 ms.
    let hub = server.hub.clone();
    let publishing = tokio::spawn(async move {
        let mut i = 0u64;
        loop {
            hub.publish("t", &i.to_string()).expect("publish");
            i += 1;
            // Shapes the load; nothing waits on it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Let the shards learn the rate and start waiting: two rounds each.
    server.wait_metric("hubcast_fanout_rounds_total", 4).await;

    // The listener deals connections to the shards in turn, so every second one is
    // handed over to the other shard. Six, spread over 1.8 s of the shards' 3 s waits
    // (the gaps shape the test, nothing waits on them): before the fix, each handed-over
    // one waited ~2.4 s.
    let mut slowest = Duration::ZERO;
    for _ in 0..6 {
        let began = Instant::now();
        let _late = connect(&server.url("?topic=other")).await;
        slowest = slowest.max(began.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    publishing.abort();
    assert_rounds_heavy(&server);
    assert!(
        slowest < Duration::from_millis(1_500),
        "a connect took {slowest:?} while its shard waited (budget {budget:?})"
    );
    server.stop();
}
