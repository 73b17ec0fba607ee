//! Interoperability with a client that is not ours: Python's `websockets`, installed by
//! the test command (`scripts/test`). Set `HUBCAST_PYTHON` to choose the interpreter.

mod common;

use common::python::{python_chat_round, python_script};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_receives_and_publishes() {
    let server = start(|_| {});
    let mut rust_client = connect(&server.url("?topic=py")).await;
    python_chat_round(
        &server.hub,
        &server.url("?topic=py"),
        &[],
        "py",
        &mut rust_client,
    )
    .await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_v1_client_recovers_exactly_while_publishing_goes_on() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = start(|c| {
        c.history_size = 100_000;
        c.max_recovery = 100_000;
    });
    let (child, lines) = python_script("v1_client.py", &[&server.url(""), "rec", "50"]);
    // Publish from before the client subscribes until it is done.
    let stop = Arc::new(AtomicBool::new(false));
    let (hub, flag) = (server.hub.clone(), stop.clone());
    let publisher = std::thread::spawn(move || {
        let mut i = 0u64;
        while !flag.load(Ordering::Relaxed) {
            if hub.publish("rec", &format!("{{\"n\":{i}}}")).is_ok() {
                i += 1;
            }
            // About 10,000 messages/s: a gap Python reads back in well under a second.
            if i.is_multiple_of(10) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    });
    let (ready, lines) = within(lines).await.expect("reader");
    assert_eq!(
        ready.as_deref(),
        Some("subscribed"),
        "python v1 client did not subscribe"
    );
    let v = python_summary(child, lines).await;
    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("publisher");
    assert_eq!(v["recovered"], true);
    assert_eq!(v["error"], 105);
    println!("python v1 client recovered {} missed messages", v["missed"]);
    server.stop();
}
