//! The `hubcast` binary itself: refuses unsafe configurations, serves with defaults,
//! and shuts down gracefully on SIGTERM.

mod common;

use std::process::Command;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hubcast");

#[test]
fn refuses_a_public_address_without_a_publish_token() {
    let out = Command::new(BIN)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("publish token"), "{err}");
}

#[test]
fn rejects_bad_flags_with_a_message() {
    let out = Command::new(BIN)
        .args(["--slow-consumer-code", "1000"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1008 or 1013"));
    let help = Command::new(BIN).arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--shards",
        "--feed",
        "--allow-origin",
        "--max-connections",
        "--client-buffer",
        "HUBCAST_PUBLISH_TOKEN",
        "--jwt-secret",
        "HUBCAST_JWT_PUBLIC_KEY",
        "--jwt-audience",
        "--jwt-issuer",
        "--jwt-leeway",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let (mut child, addr) = spawn_binary();
    let mut ws = connect(&format!("ws://{addr}/ws")).await;
    let (status, _) = http_publish(addr, "default", "hello", None).await;
    assert_eq!(status, 200);
    assert_eq!(next_data(&mut ws).await.as_deref(), Some(&b"hello"[..]));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(close_code(&mut ws).await, Some(1001));
    while next_data(&mut ws).await.is_some() {}
    let status = within(tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
}
