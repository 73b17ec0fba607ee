//! End-to-end: the load generator against an in-process hubcast server.
//!
//! 200 subscribers, 1,000 msgs/s for 2 s over WebSocket (chat mode), then
//! the same over HTTP POST: hubcast guarantees delivery of everything
//! published after a subscriber's 101, so loss must be zero and the delivery
//! count exact (sent × subscribers). A third run deals the subscribers over
//! two URLs of the same server (as over the nodes of a cluster) and samples
//! two PIDs. Protocol v1: the same exactness with pushes (offsets checked),
//! and the recovery scenario (every subscriber away while 200 messages are
//! published, then back with `since`) recovering exactly. And `wss://`: the same
//! exactness through TLS, trusting the server's certificate from `--ca-file`.

use clap::Parser;
use hubcast_loadtest::cli::Args;
use hubcast_loadtest::report::Report;
use hubcast_loadtest::run;

/// The tests share two cores with their servers: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start_server() -> hubcast::Server {
    start_server_with(hubcast::Config::default())
}

fn start_server_with(config: hubcast::Config) -> hubcast::Server {
    let config = hubcast::Config {
        listen: "127.0.0.1:0".parse().expect("socket addr"),
        shards: 2,
        ..config
    };
    hubcast::Server::start(config).expect("hubcast starts")
}

/// A child process to sample as a second "server" PID; killed when dropped.
struct OtherProcess(std::process::Child);

impl OtherProcess {
    fn start() -> Self {
        Self(
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("sleep starts"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for OtherProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 200 subscribers and `pubs` publishers at 1,000 msg/s for 2 s, generous SLO.
fn steady_args(pubs: usize) -> Vec<String> {
    let mut args = vec!["--subs=200".to_string(), format!("--pubs={pubs}")];
    args.extend(
        [
            "--rate=1000",
            "--duration=2",
            "--drain=1",
            "--settle=0.2",
            "--threads=2",
            "--slo-ms=1000",
        ]
        .map(String::from),
    );
    args
}

/// 10 HTTP publishers: one request in flight per connection, enough connections that a
/// slow (debug-build, shared-CPU) round trip still keeps the rate.
fn http_steady_args() -> Vec<String> {
    steady_args(10)
}

/// `first`, then 2 WebSocket publishers.
fn ws_steady_args(first: &[String]) -> Vec<String> {
    let mut args = first.to_vec();
    args.extend(steady_args(2));
    args
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
fn wss_exact_delivery() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("hubcast-lt-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    let server = start_server_with(hubcast::Config {
        tls: Some(hubcast::TlsFiles {
            cert: cert.clone(),
            key,
        }),
        ..hubcast::Config::default()
    });
    let addr = server.local_addr();
    let report = run_loadtest(&ws_steady_args(&[
        format!("--url=wss://{addr}/ws?topic=t"),
        format!("--ca-file={}", cert.display()),
    ]));
    assert_exact(&report, 200);
    assert_eq!(report.summary.publisher_received, 2 * 2_000);
    server.shutdown();
    server.join().expect("hubcast stops");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn websocket_publishers_exact_delivery() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_server();
    let addr = server.local_addr();
    let report = run_loadtest(&ws_steady_args(&[
        format!("--url=ws://{addr}/ws?topic=t"),
        format!("--server-pid={}", std::process::id()),
    ]));
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
    let mut args = vec![
        format!("--url=ws://{addr}/ws?topic=h"),
        format!("--publish-http=http://{addr}/publish/h"),
    ];
    args.extend(http_steady_args());
    let report = run_loadtest(&args);
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

#[test]
fn subscribers_round_robin_over_two_urls_exact_delivery() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Count the upgrades by URL: `n=2` is ignored by hubcast but marks the second URL.
    let (first, second) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (f, s) = (first.clone(), second.clone());
    let server = start_server_with(hubcast::Config {
        admit: Some(Arc::new(move |a: &hubcast::Admission<'_>| {
            let second_url = a.query.is_some_and(|q| q.split('&').any(|p| p == "n=2"));
            if second_url { &s } else { &f }.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })),
        ..hubcast::Config::default()
    });
    let addr = server.local_addr();
    let other = OtherProcess::start();
    let me = std::process::id();
    let url_a = format!("ws://{addr}/ws?topic=m");
    let url_b = format!("ws://{addr}/ws?topic=m&n=2");
    let mut args = vec![
        format!("--url={url_a},{url_b}"),
        format!("--publish-http=http://{addr}/publish/m"),
        format!("--server-pid={me}"),
        format!("--server-pid={}", other.pid()),
    ];
    args.extend(http_steady_args());
    let report = run_loadtest(&args);
    assert_exact(&report, 200);

    // Round-robin: half the subscribers on each URL, as the server saw them.
    assert_eq!(first.load(Ordering::Relaxed), 100);
    assert_eq!(second.load(Ordering::Relaxed), 100);
    assert_eq!(report.setup.urls, vec![url_a.clone(), url_b.clone()]);
    assert_eq!(report.setup.url, format!("{url_a},{url_b}"));
    let per_url: Vec<(&str, usize, u64, u64)> = report
        .connect
        .per_url
        .iter()
        .map(|u| (u.url.as_str(), u.requested, u.connected, u.failed))
        .collect();
    assert_eq!(
        per_url,
        vec![(url_a.as_str(), 100, 100, 0), (url_b.as_str(), 100, 100, 0)]
    );

    // Two PIDs: the totals are the sums of the per-process figures.
    let sv = report.server.as_ref().expect("server figures");
    assert_eq!(sv.pid, me);
    assert_eq!(sv.pids, vec![me, other.pid()]);
    assert_eq!(sv.processes.len(), 2);
    assert_eq!(
        sv.end.rss_bytes,
        sv.processes.iter().map(|p| p.end.rss_bytes).sum::<u64>()
    );
    assert_eq!(
        sv.end.cpu_ns,
        sv.processes.iter().map(|p| p.end.cpu_ns).sum::<u64>()
    );
    assert!(sv.processes[0].cpu_s > 0.0, "this process did the work");
    assert!((sv.cpu_s - (sv.user_s + sv.system_s)).abs() < 1e-6);
    let st = report.steps[0]
        .server
        .as_ref()
        .expect("step server figures");
    assert_eq!(st.processes.len(), 2);
    assert_eq!(st.processes[1].pid, other.pid());
    let per_delivery: f64 = st.processes.iter().map(|p| p.cpu_ns_per_delivery).sum();
    assert!((per_delivery - st.cpu_ns_per_delivery).abs() < 1e-6);
    assert_eq!(
        st.rss_bytes,
        st.processes.iter().map(|p| p.rss_bytes).sum::<u64>()
    );
    // The JSON keeps the old total fields next to the new ones.
    let mut json = Vec::new();
    report.write_json(&mut json).expect("json");
    let v: serde_json::Value = serde_json::from_slice(&json).expect("valid json");
    assert!(v["steps"][0]["server"]["cpu_ns_per_delivery"].is_number());
    assert!(v["server"]["rss_per_conn_bytes"].is_number());
    assert_eq!(v["server"]["processes"].as_array().map(Vec::len), Some(2));
    assert!(v["server"]["processes"][1]["user_s"].is_number());
    let mut table = Vec::new();
    report.write_table(&mut table).expect("table");
    let table = String::from_utf8(table).expect("utf-8");
    assert!(table.contains(&format!("pid {}:", other.pid())), "{table}");
    drop(other);
    server.shutdown();
    server.join().expect("hubcast stops");
}

#[test]
fn v1_subscribers_exact_delivery_and_offsets() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_server();
    let addr = server.local_addr();
    let report = run_loadtest(&ws_steady_args(&[
        format!("--url=ws://{addr}/ws?topic=v"),
        "--protocol=v1".into(),
    ]));
    assert_exact(&report, 200);
    let step = &report.steps[0];
    assert_eq!(step.offset_gaps, Some(0));
    assert_eq!(step.offset_dups, Some(0));
    assert_eq!(report.summary.offset_gaps, Some(0));
    assert_eq!(report.summary.offset_dups, Some(0));
    assert_eq!(report.setup.protocol, "v1");
    // The publishers stay plain connections and get their echo as published.
    assert_eq!(report.summary.publisher_received, 2 * 2_000);
    server.shutdown();
    server.join().expect("hubcast stops");
}

/// `--recover 200` with `subs` subscribers (2 publishers at 2,000 msgs/s,
/// over HTTP when `http`) against a hubcast whose history holds 1,000 messages
/// per topic and replays at most `max_recovery`.
fn recover_run(max_recovery: usize, subs: usize, http: bool) -> Report {
    let server = start_server_with(hubcast::Config {
        history_size: 1_000,
        max_recovery,
        ..hubcast::Config::default()
    });
    let addr = server.local_addr();
    let mut args = vec![
        format!("--url=ws://{addr}/ws?topic=r"),
        "--protocol=v1".into(),
        "--recover=200".into(),
        format!("--subs={subs}"),
        "--pubs=2".into(),
        "--rate=2000".into(),
        "--drain=0.5".into(),
        "--threads=2".into(),
    ];
    if http {
        args.push(format!("--publish-http=http://{addr}/publish/r"));
    }
    let report = run_loadtest(&args);
    server.shutdown();
    server.join().expect("hubcast stops");
    report
}

#[test]
fn recovery_of_200_messages_by_50_subscribers_is_exact() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let report = recover_run(1_000, 50, false);
    let r = report.recovery.as_ref().expect("recovery figures");
    assert!(r.pass, "{:?}", r.failures);
    assert_eq!((r.messages, r.published, r.missed), (200, 200, 200));
    assert_eq!((r.subscribers, r.subscribed, r.reconnected), (50, 50, 50));
    assert_eq!(r.not_disconnected, 0);
    assert_eq!((r.recovered_true, r.recovered_false), (50, 0));
    assert_eq!((r.reply_errors.total(), r.no_reply), (0, 0));
    assert_eq!(r.reply_offset_mismatch, 0);
    assert_eq!((r.live, r.exact), (50, 50));
    assert_eq!(r.replayed, 200 * 50);
    assert_eq!(r.unique, 200 * 50);
    assert_eq!((r.offset_gaps, r.offset_dups, r.extra), (0, 0, 0));
    assert_eq!((r.duplicates, r.foreign), (0, 0));
    assert_eq!(r.time_to_live.count, 50);
    assert_eq!(r.own_time_to_live.count, 50);
    let all = r.all_live_ms.expect("everyone live");
    assert!(
        all > 0.0 && all * 1000.0 >= r.time_to_live.max_us * 0.99,
        "{all} ms"
    );
    assert!(r.own_time_to_live.p50_us <= r.time_to_live.max_us);
    assert_eq!(report.summary.exit_code, 0);
    assert!(report.steps.is_empty());
    // The first connections ended on our close: not disconnects.
    assert_eq!(report.summary.unclosed_at_exit, 0);

    let mut json = Vec::new();
    report.write_json(&mut json).expect("json");
    let v: serde_json::Value = serde_json::from_slice(&json).expect("valid json");
    assert_eq!(v["setup"]["recover"], 200);
    assert_eq!(v["recovery"]["exact"], 50);
    assert_eq!(v["recovery"]["recovered_false"], 0);
    assert!(v["recovery"]["time_to_live"]["p99_us"].is_number());
    assert!(v["recovery"]["all_live_ms"].is_number());
    let mut table = Vec::new();
    report.write_table(&mut table).expect("table");
    let table = String::from_utf8(table).expect("utf-8");
    assert!(table.contains("exact 50/50"), "{table}");
}

#[test]
fn recovery_beyond_max_recovery_is_counted_not_exact() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // HTTP publishing this time; the server replays at most 100 of the 200.
    let report = recover_run(100, 10, true);
    let r = report.recovery.as_ref().expect("recovery figures");
    assert_eq!(r.missed, 200);
    assert_eq!(
        (r.reconnected, r.recovered_false, r.recovered_true),
        (10, 10, 0)
    );
    assert_eq!((r.exact, r.live, r.replayed), (0, 0, 0));
    assert_eq!(r.all_live_ms, None);
    assert!(!r.pass);
    assert!(
        r.failures.iter().any(|f| f.contains("recovered:false")),
        "{:?}",
        r.failures
    );
    assert_eq!(report.summary.exit_code, 1);
}

#[test]
fn deflate_subscribers_get_every_message_compressed_and_count_the_wire() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_server_with(hubcast::Config {
        compression: true,
        ..hubcast::Config::default()
    });
    let addr = server.local_addr();
    let mut args = vec![
        format!("--url=ws://{addr}/ws?topic=d"),
        format!("--publish-http=http://{addr}/publish/d"),
        "--deflate".into(),
        "--size=1024".into(),
    ];
    // Fewer subscribers than the plain runs: inflating is real work for a debug build
    // sharing two cores with its server.
    args.extend(http_steady_args().into_iter().map(|a| {
        if a == "--subs=200" {
            "--subs=50".into()
        } else {
            a
        }
    }));
    let report = run_loadtest(&args);
    assert_exact(&report, 50);
    let step = &report.steps[0];
    // Every message was over the threshold: every one arrived compressed, and the
    // padded stamp shrinks to a fraction of its 1,024 bytes on the wire.
    assert_eq!(step.compressed, step.received);
    assert!(
        step.wire_bytes_per_msg > 10.0 && step.wire_bytes_per_msg < 300.0,
        "{} B per message",
        step.wire_bytes_per_msg
    );
    server.shutdown();
    server.join().expect("hubcast stops");

    // Without compression on the server, the offer is declined: nobody connects.
    let server = start_server();
    let addr = server.local_addr();
    let report = run_loadtest(&[
        format!("--url=ws://{addr}/ws?topic=d"),
        "--deflate".into(),
        "--subs=5".into(),
        "--idle=0.1".into(),
        "--settle=0".into(),
    ]);
    assert_eq!(report.connect.connected, 0);
    let reasons: Vec<&String> = report.connect.failures.0.keys().collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("permessage-deflate not agreed")),
        "{reasons:?}"
    );
    server.shutdown();
    server.join().expect("hubcast stops");
}
