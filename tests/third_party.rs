//! Interoperability with a client that is not ours: Python's `websockets`, installed by
//! the test command (`scripts/test`). Set `HUBCAST_PYTHON` to choose the interpreter.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_receives_and_publishes() {
    let server = start(|_| {});
    let mut rust_client = connect(&server.url("?topic=py")).await;
    let python = std::env::var("HUBCAST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");
    let mut child = Command::new(&python)
        .args([script, &server.url("?topic=py"), "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} (run the tests through scripts/test): {e}")
        });
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.next().and_then(Result::ok);
        (ready, lines)
    });
    let (ready, lines) = within(lines).await.expect("reader");
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "python client did not connect (is `websockets` installed?)"
    );
    let big = "ü".repeat(50_000);
    for m in ["one", "two", big.as_str()] {
        server.hub.publish("py", m).expect("publish");
    }
    let summary = within(tokio::task::spawn_blocking(move || {
        lines.last().and_then(Result::ok)
    }))
    .await
    .expect("join")
    .expect("summary line");
    let status = within(tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "python client failed: {summary}");
    let v: serde_json::Value = serde_json::from_str(&summary).expect("json");
    assert_eq!(v["received"], serde_json::json!(["one", "two", big]));
    assert_eq!(v["echo"], "py:hello");
    assert_eq!(v["close_code"], 1000);
    // The Rust client on the same topic saw the Python client's message too.
    for expected in ["one", "two", big.as_str(), "py:hello"] {
        assert_eq!(
            next_data(&mut rust_client).await.as_deref(),
            Some(expected.as_bytes())
        );
    }
    server.stop();
}
