//! Protocol v1 (`hubcast.v1`) over real sockets with a third-party client
//! (tokio-tungstenite): negotiation, subscribing at any time, exact recovery under
//! concurrent publishing, `recovered:false`, presence, and hostile commands.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::v1::*;
use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn offset(v: &Value) -> u64 {
    v["offset"].as_u64().expect("offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_are_untouched_and_v1_is_negotiated() {
    let server = start(|_| {});
    let mut plain = connect(&server.url("?topic=t")).await;
    let mut v1 = v1_connect(&server, "?topic=t").await;
    server.wait_connections(2).await;
    server.hub.publish("t", r#"{"x":1}"#).expect("publish");
    assert_eq!(
        next_data(&mut plain).await.as_deref(),
        Some(&br#"{"x":1}"#[..])
    );
    let push = next_json(&mut v1).await;
    assert_eq!(push, json!({"topic": "t", "offset": 1, "data": {"x": 1}}));
    server.hub.publish("t", "not json").expect("publish");
    server.hub.publish_binary("t", &[0, 1, 2]).expect("publish");
    assert_eq!(next_json(&mut v1).await["data"], json!("not json"));
    assert_eq!(next_json(&mut v1).await["b64"], json!("AAEC"));
    assert_eq!(
        next_data(&mut plain).await.as_deref(),
        Some(&b"not json"[..])
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_while_messages_flow() {
    let server = start(|_| {});
    let mut c = v1_connect(&server, "?topic=marker").await;
    server.wait_connections(1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let hub = server.hub.clone();
    let flag = stop.clone();
    let publisher = std::thread::spawn(move || {
        let mut i = 0u64;
        while !flag.load(Ordering::Relaxed) {
            if hub.publish("live", &i.to_string()).is_ok() {
                i += 1;
            }
            std::thread::yield_now();
        }
        i
    });
    let mut pushes = Vec::new();
    let r = call(
        &mut c,
        1,
        json!({"subscribe": {"topic": "live"}}),
        &mut pushes,
    )
    .await;
    let start = offset(&r["result"]);
    assert!(pushes.is_empty(), "nothing of a topic before its reply");
    // Live pushes follow the reply's position exactly: start+1, start+2, …
    let mut expect = start + 1;
    while expect < start + 200 {
        let p = next_json(&mut c).await;
        assert_eq!(p["topic"], "live");
        assert_eq!(offset(&p), expect, "no gap, no duplicate after subscribing");
        assert_eq!(
            p["data"],
            json!(expect - 1),
            "offset n carries the n-th message"
        );
        expect += 1;
    }
    let r = call(
        &mut c,
        2,
        json!({"unsubscribe": {"topic": "live"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["result"], json!({"topic": "live"}));
    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("publisher");
    // After the reply nothing more of "live": the marker comes next.
    server.hub.publish("marker", "end").expect("publish");
    let p = next_json(&mut c).await;
    assert_eq!(p["topic"], "marker", "{p}");
    // Errors, not closes.
    let r = call(
        &mut c,
        3,
        json!({"unsubscribe": {"topic": "live"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 105);
    let r = call(
        &mut c,
        4,
        json!({"subscribe": {"topic": "marker"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 104);
    let r = call(&mut c, 5, json!({"subscribe": {"topic": ""}}), &mut pushes).await;
    assert_eq!(r["error"]["code"], 101);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_exact_under_concurrent_publishing() {
    let server = start(|c| {
        c.history_size = 100_000;
        c.max_recovery = 100_000;
    });
    let stop = Arc::new(AtomicBool::new(false));
    let hub = server.hub.clone();
    let flag = stop.clone();
    // Payload = the message's own offset as the publisher sees it in its receipt.
    let publisher = std::thread::spawn(move || {
        let mut sent = 0u64;
        while !flag.load(Ordering::Relaxed) {
            if let Ok(r) = hub.publish_text("r", &format!("m{}", sent + 1)) {
                sent += 1;
                assert_eq!(r.offset, sent, "one publisher: offsets are its count");
            }
            if sent.is_multiple_of(64) {
                std::thread::yield_now();
            }
        }
        sent
    });
    let mut pushes = Vec::new();
    let mut c = v1_connect(&server, "?topic=other").await;
    let r = call(&mut c, 1, json!({"subscribe": {"topic": "r"}}), &mut pushes).await;
    let epoch = r["result"]["epoch"].as_str().expect("epoch").to_owned();
    let mut last = offset(&r["result"]);
    for _ in 0..100 {
        let p = next_json(&mut c).await;
        assert_eq!(offset(&p), last + 1);
        last = offset(&p);
    }
    drop(c); // the connection is lost; publishing goes on
    let mut c = v1_connect(&server, "").await;
    // Let a good number of messages be missed (no sleep: watch the history grow).
    within(async {
        while server.hub.history().position("r").offset < last + 500 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let r = call(
        &mut c,
        1,
        json!({"subscribe": {"topic": "r", "since": {"offset": last, "epoch": epoch}}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["result"]["recovered"], json!(true), "{r}");
    let top = offset(&r["result"]);
    assert!(top >= last + 500);
    // Replay (last, top], then live from top+1: one unbroken sequence.
    let mut expect = last + 1;
    while expect <= top + 300 {
        let p = next_json(&mut c).await;
        assert_eq!(offset(&p), expect, "replay then live, no gap, no duplicate");
        assert_eq!(p["data"], json!(format!("m{expect}")));
        expect += 1;
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("publisher");
    assert!(server.metric("hubcast_recoveries_total") >= 1);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecoverable_positions_get_recovered_false_and_no_replay() {
    let server = start(|c| {
        c.history_size = 10;
        c.max_recovery = 5;
    });
    let mut pushes = Vec::new();
    let mut c = v1_connect(&server, "?topic=marker").await;
    let r = call(&mut c, 1, json!({"subscribe": {"topic": "h"}}), &mut pushes).await;
    let epoch = r["result"]["epoch"].as_str().expect("epoch").to_owned();
    let r = call(
        &mut c,
        2,
        json!({"unsubscribe": {"topic": "h"}}),
        &mut pushes,
    )
    .await;
    assert!(r.get("result").is_some());
    for i in 1..=20 {
        server.hub.publish("h", &format!("{i}")).expect("publish");
    }
    let cases = [
        (
            json!({"offset": 15, "epoch": "not-the-epoch"}),
            "another epoch",
        ),
        (
            json!({"offset": 2, "epoch": epoch}),
            "evicted from a 10-message history",
        ),
        (
            json!({"offset": 12, "epoch": epoch}),
            "8 to replay, max-recovery 5",
        ),
        (
            json!({"offset": 99, "epoch": epoch}),
            "a position from the future",
        ),
    ];
    for (id, (since, why)) in (10..).zip(cases) {
        let r = call(
            &mut c,
            id,
            json!({"subscribe": {"topic": "h", "since": since}}),
            &mut pushes,
        )
        .await;
        assert_eq!(r["result"]["recovered"], json!(false), "{why}: {r}");
        assert_eq!(offset(&r["result"]), 20, "{why}");
        call(
            &mut c,
            id + 100,
            json!({"unsubscribe": {"topic": "h"}}),
            &mut pushes,
        )
        .await;
    }
    assert!(pushes.is_empty(), "nothing replayed: {pushes:?}");
    // Within range it does replay: 16..20.
    let r = call(
        &mut c,
        50,
        json!({"subscribe": {"topic": "h", "since": {"offset": 15, "epoch": epoch}}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["result"]["recovered"], json!(true));
    for want in 16..=20 {
        assert_eq!(offset(&next_json(&mut c).await), want);
    }
    assert_eq!(server.metric("hubcast_recoveries_failed_total"), 4);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_subscribers_and_topics_are_listed() {
    let server = start(|_| {});
    let _a = connect(&server.url("?topic=p")).await;
    let _b = v1_connect(&server, "?topic=p").await;
    let mut c = v1_connect(&server, "?topic=q").await;
    server.wait_connections(3).await;
    let mut pushes = Vec::new();
    let r = call(&mut c, 7, json!({"presence": {"topic": "p"}}), &mut pushes).await;
    assert_eq!(
        r,
        json!({"id": 7, "result": {"topic": "p", "subscribers": 2}})
    );
    let (status, body) = http(
        server.addr,
        &format!(
            "GET /topics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        ),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v["topics"],
        json!([{"topic": "p", "subscribers": 2}, {"topic": "q", "subscribers": 1}])
    );
    server.hub.publish("p", "x").expect("publish");
    let (_, body) = http(
        server.addr,
        &format!(
            "GET /topics/p HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        ),
    )
    .await;
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["subscribers"], 2);
    assert_eq!(v["offset"], 1);
    assert!(v["epoch"].is_string());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_publish_reaches_plain_and_v1_subscribers() {
    let server = start(|_| {});
    let mut plain = connect(&server.url("?topic=prices")).await;
    let mut v1 = v1_connect(&server, "?topic=prices").await;
    let mut publisher = v1_connect(&server, "?topic=none").await;
    server.wait_connections(3).await;
    let mut pushes = Vec::new();
    let r = call(
        &mut publisher,
        3,
        json!({"publish": {"topic": "prices", "data": {"EURUSD": 1.0842}}}),
        &mut pushes,
    )
    .await;
    assert_eq!(
        r,
        json!({"id": 3, "result": {"topic": "prices", "offset": 1}})
    );
    let got = next_data(&mut plain).await.expect("plain");
    let got: Value = serde_json::from_slice(&got).expect("json");
    assert_eq!(got, json!({"EURUSD": 1.0842}));
    assert_eq!(
        next_json(&mut v1).await,
        json!({"topic": "prices", "offset": 1, "data": {"EURUSD": 1.0842}})
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_commands_get_errors_and_others_keep_their_stream() {
    let server = start(|c| c.max_topics_per_client = 100);
    let mut bystander = v1_connect(&server, "?topic=b").await;
    let mut evil = v1_connect(&server, "").await;
    server.wait_connections(2).await;
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let bad = [
        format!(r#"{{"id":1,"publish":{{"topic":"b","data":{deep}}}}}"#),
        r#"{"id":99999999999999999999999,"presence":{"topic":"b"}}"#.to_owned(),
        r#"{"id":1,"presence":{"topic":"b"},"extra":1}"#.to_owned(),
        r#"{"id":1,"presence":{"topic":"b","extra":1}}"#.to_owned(),
        r#"{"id":1,"presence":{"topic":"b"},"subscribe":{"topic":"b"}}"#.to_owned(),
        r#"{"id":1}"#.to_owned(),
        r#"[1,2,3]"#.to_owned(),
        r#"{"id":-1,"presence":{"topic":"b"}}"#.to_owned(),
    ];
    for text in &bad {
        within(evil.send(Message::text(text.clone())))
            .await
            .expect("send");
        let r = next_json(&mut evil).await;
        assert_eq!(
            r["error"]["code"],
            100,
            "{} → {r}",
            &text[..text.len().min(60)]
        );
    }
    // 10,000 subscribes: the first 100 succeed, the rest are refused, nothing breaks.
    let mut batch = String::new();
    for i in 0..10_000u64 {
        batch.clear();
        batch.push_str(&json!({"id": i + 1, "subscribe": {"topic": format!("t{i}")}}).to_string());
        within(evil.send(Message::text(batch.clone())))
            .await
            .expect("send");
    }
    let (mut ok, mut refused) = (0, 0);
    while ok + refused < 10_000 {
        let r = next_json(&mut evil).await;
        if r.get("result").is_some() {
            ok += 1;
        } else {
            assert_eq!(r["error"]["code"], 102, "{r}");
            refused += 1;
        }
    }
    assert_eq!((ok, refused), (100, 9_900));
    server.hub.publish("b", "still flowing").expect("publish");
    assert_eq!(next_json(&mut bystander).await["data"], "still flowing");
    // Garbage that is not JSON at all closes with 1002; binary with 1003.
    within(evil.send(Message::text("hello?")))
        .await
        .expect("send");
    assert_eq!(close_code(&mut evil).await, Some(1002));
    let mut binary = v1_connect(&server, "").await;
    within(binary.send(Message::binary(vec![1u8, 2, 3])))
        .await
        .expect("send");
    assert_eq!(close_code(&mut binary).await, Some(1003));
    server.hub.publish("b", "after").expect("publish");
    assert_eq!(next_json(&mut bystander).await["data"], "after");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_mode_refuses_v1_publish_with_an_error_not_a_close() {
    let server = start(|c| c.feed = true);
    let mut c = v1_connect(&server, "").await;
    let mut pushes = Vec::new();
    let r = call(
        &mut c,
        1,
        json!({"publish": {"topic": "t", "data": 1}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 103);
    let r = call(&mut c, 2, json!({"subscribe": {"topic": "t"}}), &mut pushes).await;
    assert!(
        r.get("result").is_some(),
        "subscribing is fine in feed mode: {r}"
    );
    server.stop();
}
