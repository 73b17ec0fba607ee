//! `hubcast-loadtest soak`, short, against an in-process hubcast: a healthy run passes
//! with every message accounted for, slow readers closed and ping bursts answered; the
//! same run with one message never published (`--inject-gap`) fails, every client
//! having seen the hole. (The server is this process, so its RSS and fds include the
//! clients': the memory limit is loose here; `soak::sample` tests the arithmetic.)

use clap::Parser;
use hubcast_loadtest::cli::{Args, Command};
use hubcast_loadtest::soak::{self, SoakReport};

fn soak(extra: &[&str]) -> SoakReport {
    let server = hubcast::Server::start(hubcast::Config {
        listen: "127.0.0.1:0".parse().expect("socket addr"),
        shards: 2,
        // Slow readers overflow it fast (the kernel takes ~4 MB first).
        client_buffer: 64 << 10,
        ..hubcast::Config::default()
    })
    .expect("hubcast starts");
    let server_arg = format!("--server={}", server.local_addr());
    let pid = format!("--server-pid={}", std::process::id());
    let mut argv = vec![
        "hubcast-loadtest",
        "soak",
        &server_arg,
        &pid,
        "--duration=6",
        "--warmup=1",
        "--sample-every=0.5",
        "--clients=120",
        "--churn=20",
        "--rate=50",
        "--slow-readers=2",
        "--slow-stall=3",
        "--bulk-rate=100",
        "--ping-flooders=4",
        "--flood-pings=100",
        "--threads=2",
        "--max-rss-growth=1000",
        "--quiet",
    ];
    argv.extend_from_slice(extra);
    let Some(Command::Soak(args)) = Args::try_parse_from(argv).expect("flags").command else {
        panic!("not the soak subcommand");
    };
    let report = soak::run(args.into_config().expect("config")).expect("the soak runs");
    server.shutdown();
    server.join().expect("clean shutdown");
    report
}

fn count(r: &SoakReport, name: &str) -> u64 {
    r.counts[name]
}

#[test]
fn a_short_soak_passes_and_fails_when_a_message_is_lost() {
    let ok = soak(&[]);
    let mut text = Vec::new();
    ok.write_summary(&mut text).expect("summary");
    let text = String::from_utf8_lossy(&text);
    assert!(ok.pass, "{text}");
    assert!(count(&ok, "churned") >= 100, "{text}");
    assert!(
        count(&ok, "received") > 0 && count(&ok, "flood_bursts") > 0,
        "{text}"
    );
    assert!(
        count(&ok, "slow_closed") + count(&ok, "slow_dropped") > 0,
        "{text}"
    );
    assert!(ok.samples.len() >= 12, "{text}");
    assert_eq!(ok.metrics_after.connections, 0);

    let lost = soak(&["--inject-gap=20"]);
    assert!(!lost.pass);
    // Every client connected when message 20 was due saw the hole.
    assert!(count(&lost, "gaps") >= 100, "{:?}", lost.counts);
    assert!(
        lost.failures.iter().any(|f| f.contains("missed")),
        "{:?}",
        lost.failures
    );
}
