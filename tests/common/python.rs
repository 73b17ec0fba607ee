//! Runs the Python clients of `tests/python/` (interpreter from `HUBCAST_PYTHON`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use hubcast::Hub;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;

use super::{next_data, within};

pub type FirstLine = (
    Option<String>,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
);

/// Starts `tests/python/SCRIPT ARGS` with `HUBCAST_PYTHON`; the task yields the first line
/// it prints (its "ready" signal) and the rest of its output.
pub fn python_script(
    script: &str,
    args: &[&str],
) -> (std::process::Child, tokio::task::JoinHandle<FirstLine>) {
    let python = std::env::var("HUBCAST_PYTHON").unwrap_or_else(|_| "python3".into());
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(&python)
        .arg(&path)
        .args(args)
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
    (child, lines)
}

/// The chat round of `tests/python/client.py` (`extra`: its optional arguments, e.g. a
/// CA file for `wss://`): it connects to `url`, the hub publishes "one", "two" and a
/// 100 KB text to `topic`, it receives them, sends `py:hello`, gets its echo and closes
/// with 1000. `ours`, our own client on the same topic, must see the same four messages.
pub async fn python_chat_round<S: AsyncRead + AsyncWrite + Unpin>(
    hub: &Hub,
    url: &str,
    extra: &[&str],
    topic: &str,
    ours: &mut WebSocketStream<S>,
) {
    let mut args = vec![url, "3"];
    args.extend_from_slice(extra);
    let (child, lines) = python_script("client.py", &args);
    let (ready, lines) = within(lines).await.expect("reader");
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "python client did not connect (is `websockets` installed?)"
    );
    let big = "ü".repeat(50_000);
    for m in ["one", "two", big.as_str()] {
        hub.publish(topic, m).expect("publish");
    }
    let v = python_summary(child, lines).await;
    assert_eq!(v["received"], serde_json::json!(["one", "two", big]));
    assert_eq!(v["echo"], "py:hello");
    assert_eq!(v["close_code"], 1000);
    // Our client on the same topic saw the Python client's message too.
    for expected in ["one", "two", big.as_str(), "py:hello"] {
        assert_eq!(next_data(ours).await.as_deref(), Some(expected.as_bytes()));
    }
}

/// Waits for a script started by [`python_script`] to print its last line and exit;
/// returns that line, parsed as JSON, failing the test if the script failed.
pub async fn python_summary(
    mut child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
) -> serde_json::Value {
    let summary = within(tokio::task::spawn_blocking(move || {
        lines.last().and_then(Result::ok)
    }))
    .await
    .expect("join")
    .unwrap_or_default();
    let status = within(tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "python client failed: {summary}");
    serde_json::from_str(&summary).unwrap_or_else(|e| panic!("{e}: {summary}"))
}
