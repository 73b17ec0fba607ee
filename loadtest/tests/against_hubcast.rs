//! End-to-end: the load generator against an in-process hubcast server.
//!
//! 200 subscribers, 1,000 msgs/s for 2 s over WebSocket (chat mode), then
//! the same over HTTP POST: hubcast guarantees delivery of everything
//! published after a subscriber's 101, so loss must be zero and the delivery
//! count exact (sent × subscribers).

use clap::Parser;
use hubcast_loadtest::cli::Args;
use hubcast_loadtest::report::Report;
use hubcast_loadtest::run;

/// The tests share two cores with their servers: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start_server() -> hubcast::Server {
    let config = hubcast::Config {
        listen: "127.0.0.1:0".parse().expect("socket addr"),
        shards: 2,
        ..hubcast::Config::default()
    };
    hubcast::Server::start(config).expect("hubcast starts")
}

fn run_loadtest(args: &[String]) -> Report {
    let mut argv = vec!["hubcast-loadtest".to_string()];
    argv.extend_from_slice(args);
    let cfg = Args::try_parse_from(argv)
        .expect("flags parse")
        .into_config()
        .expect("config valid");
    run::run(&cfg, false).expect("load test runs")
}

fn assert_exact(report: &Report, subs: u64) {
    assert_eq!(
        report.connect.connected, subs,
        "{:?}",
        report.connect.failures
    );
    assert_eq!(report.connect.failed, 0);
    assert_eq!(report.steps.len(), 1);
    let step = &report.steps[0];
    assert_eq!(step.target_msgs, 2_000);
    assert_eq!(step.sent, 2_000, "every scheduled message is sent");
    assert_eq!(step.accepted, 2_000);
    assert_eq!(step.subs, subs);
    assert_eq!(step.expected, 2_000 * subs);
    assert_eq!(step.unique, step.expected, "exact delivery count");
    assert_eq!(step.received, step.expected, "no duplicates");
    assert_eq!(step.lost, 0);
    assert_eq!(step.duplicates + step.reorders + step.stale, 0);
    assert_eq!(step.disconnects.total(), 0);
    assert_eq!(step.latency.count, step.expected);
    assert_eq!(report.summary.foreign_messages, 0);
    assert!(step.pass, "step failed: {:?}", step.failures);
    assert_eq!(report.summary.exit_code, 0);
}

#[test]
fn websocket_publishers_exact_delivery() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_server();
    let addr = server.local_addr();
    let report = run_loadtest(&[
        format!("--url=ws://{addr}/ws?topic=t"),
        "--subs=200".into(),
        "--pubs=2".into(),
        "--rate=1000".into(),
        "--duration=2".into(),
        "--drain=1".into(),
        "--settle=0.2".into(),
        "--threads=2".into(),
        "--slo-ms=1000".into(),
        format!("--server-pid={}", std::process::id()),
    ]);
    assert_exact(&report, 200);
    // Chat mode: each publisher also receives every message (sender included).
    assert_eq!(report.summary.publisher_received, 2 * 2_000);
    assert!(report.server.is_some());
    server.shutdown();
    server.join().expect("hubcast stops");
}

#[test]
fn http_publishers_exact_delivery() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_server();
    let addr = server.local_addr();
    let report = run_loadtest(&[
        format!("--url=ws://{addr}/ws?topic=h"),
        format!("--publish-http=http://{addr}/publish/h"),
        "--subs=200".into(),
        // One request in flight per connection: enough connections that a
        // slow (debug-build, shared-CPU) round trip still keeps the rate.
        "--pubs=10".into(),
        "--rate=1000".into(),
        "--duration=2".into(),
        "--drain=1".into(),
        "--settle=0.2".into(),
        "--threads=2".into(),
        "--slo-ms=1000".into(),
    ]);
    assert_exact(&report, 200);
    let http = report.steps[0].http.as_ref().expect("http figures");
    assert_eq!((http.rejected, http.unanswered), (0, 0));
    server.shutdown();
    server.join().expect("hubcast stops");
}

#[test]
fn idle_mode_holds_connections() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_server();
    let addr = server.local_addr();
    let report = run_loadtest(&[
        format!("--url=ws://{addr}/ws?topic=i"),
        "--subs=100".into(),
        "--idle=0.5".into(),
        "--connect-rate=0".into(),
        "--settle=0".into(),
    ]);
    let idle = report.idle.as_ref().expect("idle report");
    assert_eq!(idle.held, 100);
    assert_eq!(idle.disconnects.total(), 0);
    assert_eq!(report.summary.exit_code, 0);
    // The close handshake at exit leaves nothing behind on the server.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while server.hub().connections() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(server.hub().connections(), 0);
    assert_eq!(report.summary.unclosed_at_exit, 0);
    server.shutdown();
    server.join().expect("hubcast stops");
}
