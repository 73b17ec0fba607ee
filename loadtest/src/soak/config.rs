//! The `soak` subcommand's flags (each also from an `HUBCAST_SOAK_*` variable) and the
//! validated configuration the run works from.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, ensure};
use clap::builder::BoolishValueParser;

use crate::cli::secs;
use crate::payload;
use crate::target::Target;

/// The topic every healthy client joins and the publisher numbers its messages on.
pub const TOPIC: &str = "soak";
/// The topic only slow readers join: bulky messages that fill a stalled reader fast.
pub const BULK_TOPIC: &str = "soak-bulk";

/// Long-running soak: a churning population of clients against one hubcast.
///
/// Keeps --clients WebSocket clients connected to hubcast while --churn of them leave
/// and as many new ones join every second; a publisher POSTs numbered messages at
/// --rate, every healthy client checks it gets each one exactly once, in order, from
/// its first to its last; slow readers stop reading until the server closes them; ping
/// flooders ping while they listen. Every --sample-every seconds the server's RSS, open
/// fds and connections are sampled (/proc and /metrics) into a CSV. Fails when RSS grows
/// more than --max-rss-growth percent after the warm-up, when a healthy client misses a
/// message, or when anything else is off (see the summary). Exit code: 0 passed, 1
/// failed, 2 error.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// hubcast's address, host:port: clients, publishes and /metrics go there.
    #[arg(long, env = "HUBCAST_SOAK_SERVER", default_value = "127.0.0.1:8080")]
    pub server: String,

    /// PID of the hubcast process (RSS and open fds from /proc).
    #[arg(long, env = "HUBCAST_SOAK_SERVER_PID")]
    pub server_pid: u32,

    /// Seconds of steady load (after the first connect).
    #[arg(long, env = "HUBCAST_SOAK_DURATION", default_value_t = 3600.0)]
    pub duration: f64,

    /// Clients connected at any time (ping flooders included, slow readers not).
    #[arg(long, env = "HUBCAST_SOAK_CLIENTS", default_value_t = 10_000)]
    pub clients: usize,

    /// Clients that leave, and new ones that join, per second.
    #[arg(long, env = "HUBCAST_SOAK_CHURN", default_value_t = 100.0)]
    pub churn: f64,

    /// Numbered messages per second on the clients' topic.
    #[arg(long, env = "HUBCAST_SOAK_RATE", default_value_t = 20.0)]
    pub rate: f64,

    /// Bytes per numbered message (36 to 64 KiB).
    #[arg(long, env = "HUBCAST_SOAK_SIZE", default_value_t = 128)]
    pub size: usize,

    /// Slow readers at any time: each stops reading after its handshake and must be
    /// closed by the server as a slow consumer; a new one replaces it.
    #[arg(long, env = "HUBCAST_SOAK_SLOW_READERS", default_value_t = 10)]
    pub slow_readers: usize,

    /// Seconds a slow reader stops reading before it checks it was closed.
    #[arg(long, env = "HUBCAST_SOAK_SLOW_STALL", default_value_t = 30.0)]
    pub slow_stall: f64,

    /// Messages per second on the slow readers' bulk topic.
    #[arg(long, env = "HUBCAST_SOAK_BULK_RATE", default_value_t = 16.0)]
    pub bulk_rate: f64,

    /// Bytes per bulk message (at most 64 KiB).
    #[arg(long, env = "HUBCAST_SOAK_BULK_SIZE", default_value_t = 32 * 1024)]
    pub bulk_size: usize,

    /// Ping flooders among the clients: each sends --flood-pings pings a second.
    #[arg(long, env = "HUBCAST_SOAK_PING_FLOODERS", default_value_t = 10)]
    pub ping_flooders: usize,

    /// Pings per second per flooder, sent in one burst.
    #[arg(long, env = "HUBCAST_SOAK_FLOOD_PINGS", default_value_t = 1000)]
    pub flood_pings: usize,

    /// Seconds between samples of the server.
    #[arg(long, env = "HUBCAST_SOAK_SAMPLE_EVERY", default_value_t = 10.0)]
    pub sample_every: f64,

    /// Seconds of warm-up before the RSS baseline (default: a tenth of --duration,
    /// at most 300).
    #[arg(long, env = "HUBCAST_SOAK_WARMUP")]
    pub warmup: Option<f64>,

    /// Largest RSS growth after the warm-up, percent.
    #[arg(long, env = "HUBCAST_SOAK_MAX_RSS_GROWTH", default_value_t = 5.0)]
    pub max_rss_growth: f64,

    /// New connections per second while the first --clients connect.
    #[arg(long, env = "HUBCAST_SOAK_CONNECT_RATE", default_value_t = 2000.0)]
    pub connect_rate: f64,

    /// Seconds a leaving client waits for the messages published before it left.
    #[arg(long, env = "HUBCAST_SOAK_TAIL_TIMEOUT", default_value_t = 10.0)]
    pub tail_timeout: f64,

    /// Worker threads (default: CPU count).
    #[arg(long, env = "HUBCAST_SOAK_THREADS")]
    pub threads: Option<usize>,

    /// Write the samples here (CSV, one row per sample).
    #[arg(long, env = "HUBCAST_SOAK_CSV")]
    pub csv: Option<PathBuf>,

    /// Write the summary here (JSON).
    #[arg(long, env = "HUBCAST_SOAK_JSON")]
    pub json: Option<PathBuf>,

    /// No progress lines on stderr.
    #[arg(long, short, env = "HUBCAST_SOAK_QUIET", value_parser = BoolishValueParser::new())]
    pub quiet: bool,

    /// Test mode: never publish message N, as if the server lost it: every healthy
    /// client must notice, and the run must fail.
    #[arg(long, env = "HUBCAST_SOAK_INJECT_GAP", value_name = "N")]
    pub inject_gap: Option<u64>,

    /// Test mode: keep up to N clients that churn out connected instead of closing
    /// them (a connection leak: the server's RSS, fds and connections grow), so the
    /// run must fail.
    #[arg(long, env = "HUBCAST_SOAK_INJECT_LEAK", value_name = "N")]
    pub inject_leak: Option<usize>,
}

/// A validated soak configuration.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Where healthy clients connect (`?topic=soak`).
    pub healthy: Target,
    /// Where slow readers connect (`?topic=soak&topic=soak-bulk`).
    pub slow: Target,
    /// `POST /publish/soak`.
    pub publish: Target,
    /// `POST /publish/soak-bulk`.
    pub publish_bulk: Target,
    /// `GET /metrics`.
    pub metrics: Target,
    /// The server's PID.
    pub server_pid: u32,
    /// Steady phase.
    pub duration: Duration,
    /// Start of the RSS check, from the start of the steady phase.
    pub warmup: Duration,
    /// Healthy clients (flooders included).
    pub clients: usize,
    /// Leaves (and joins) per second.
    pub churn: f64,
    /// Numbered messages per second.
    pub rate: f64,
    /// Numbered message size.
    pub size: usize,
    /// Concurrent slow readers.
    pub slow_readers: usize,
    /// A slow reader's stall.
    pub slow_stall: Duration,
    /// Bulk messages per second.
    pub bulk_rate: f64,
    /// Bulk message size.
    pub bulk_size: usize,
    /// Ping flooders among the clients.
    pub ping_flooders: usize,
    /// Pings per second per flooder.
    pub flood_pings: usize,
    /// Sampling period.
    pub sample_every: Duration,
    /// Largest RSS growth after the warm-up, as a fraction (0.05 = 5 %).
    pub max_rss_growth: f64,
    /// First connects per second.
    pub connect_rate: f64,
    /// How long a leaving client waits for what it is owed.
    pub tail_timeout: Duration,
    /// Worker threads.
    pub threads: usize,
    /// CSV path.
    pub csv: Option<PathBuf>,
    /// JSON path.
    pub json: Option<PathBuf>,
    /// No progress lines.
    pub quiet: bool,
    /// Test mode: the sequence number never published.
    pub inject_gap: Option<u64>,
    /// Test mode: churned-out clients kept connected, at most this many.
    pub inject_leak: usize,
}

fn rate(name: &str, v: f64) -> Result<f64> {
    ensure!(v.is_finite() && v >= 0.0, "--{name} must be >= 0");
    Ok(v)
}

impl SoakArgs {
    /// Validates the flags and resolves the endpoints.
    pub fn into_config(self) -> Result<SoakConfig> {
        let server = &self.server;
        let ws = |query: &str| Target::parse(&format!("ws://{server}/ws?{query}"), true);
        let http = |path: &str| Target::parse(&format!("http://{server}{path}"), false);
        let duration = secs("duration", self.duration)?;
        ensure!(!duration.is_zero(), "--duration must be positive");
        let warmup = match self.warmup {
            Some(w) => secs("warmup", w)?,
            None => (duration / 10).min(Duration::from_secs(300)),
        };
        ensure!(
            warmup < duration,
            "--warmup must be shorter than --duration"
        );
        let sample_every = secs("sample-every", self.sample_every)?;
        ensure!(
            sample_every >= Duration::from_millis(100),
            "--sample-every must be at least 0.1 s"
        );
        ensure!(
            (payload::STAMP_LEN..=64 * 1024).contains(&self.size),
            "--size must be within {}..=65536 (at least the sequence stamp)",
            payload::STAMP_LEN
        );
        ensure!(
            (payload::STAMP_LEN..=64 * 1024).contains(&self.bulk_size),
            "--bulk-size must be within {}..=65536",
            payload::STAMP_LEN
        );
        ensure!(
            self.ping_flooders <= self.clients,
            "--ping-flooders are among the --clients: at most {}",
            self.clients
        );
        ensure!(
            self.rate > 0.0,
            "--rate must be positive: clients check what they get"
        );
        ensure!(
            self.max_rss_growth.is_finite() && self.max_rss_growth >= 0.0,
            "--max-rss-growth must be a non-negative percentage"
        );
        let threads = match self.threads {
            Some(0) => anyhow::bail!("--threads must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(SoakConfig {
            healthy: ws(&format!("topic={TOPIC}"))?,
            slow: ws(&format!("topic={TOPIC}&topic={BULK_TOPIC}"))?,
            publish: http(&format!("/publish/{TOPIC}"))?,
            publish_bulk: http(&format!("/publish/{BULK_TOPIC}"))?,
            metrics: http("/metrics")?,
            server_pid: self.server_pid,
            duration,
            warmup,
            clients: self.clients,
            churn: rate("churn", self.churn)?,
            rate: rate("rate", self.rate)?,
            size: self.size,
            slow_readers: self.slow_readers,
            slow_stall: secs("slow-stall", self.slow_stall)?,
            bulk_rate: rate("bulk-rate", self.bulk_rate)?,
            bulk_size: self.bulk_size,
            ping_flooders: self.ping_flooders,
            flood_pings: self.flood_pings,
            sample_every,
            max_rss_growth: self.max_rss_growth / 100.0,
            connect_rate: rate("connect-rate", self.connect_rate)?,
            tail_timeout: secs("tail-timeout", self.tail_timeout)?,
            threads,
            csv: self.csv,
            json: self.json,
            quiet: self.quiet,
            inject_gap: self.inject_gap,
            inject_leak: self.inject_leak.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        soak: SoakArgs,
    }

    fn parse(args: &[&str]) -> Result<SoakConfig> {
        let mut v = vec!["soak", "--server-pid", "1"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)?.soak.into_config()
    }

    #[test]
    fn defaults_and_endpoints() {
        let c = parse(&[]).expect("defaults");
        assert_eq!(c.duration, Duration::from_secs(3600));
        assert_eq!(c.warmup, Duration::from_secs(300), "a tenth, at most 5 min");
        assert_eq!((c.clients, c.churn, c.slow_readers), (10_000, 100.0, 10));
        assert_eq!(c.healthy.path, "/ws?topic=soak");
        assert_eq!(c.slow.path, "/ws?topic=soak&topic=soak-bulk");
        assert_eq!(c.publish.path, "/publish/soak");
        assert_eq!(c.metrics.path, "/metrics");
        assert_eq!(c.max_rss_growth, 0.05);
        let c = parse(&["--duration", "180"]).expect("short");
        assert_eq!(c.warmup, Duration::from_secs(18));
        let c = parse(&["--duration", "180", "--warmup", "30"]).expect("warmup");
        assert_eq!(c.warmup, Duration::from_secs(30));
    }

    #[test]
    fn validation() {
        assert!(parse(&["--duration", "0"]).is_err());
        assert!(parse(&["--duration", "60", "--warmup", "60"]).is_err());
        assert!(parse(&["--size", "35"]).is_err());
        assert!(parse(&["--size", "65537"]).is_err());
        assert!(parse(&["--bulk-size", "70000"]).is_err());
        assert!(parse(&["--clients", "5", "--ping-flooders", "6"]).is_err());
        assert!(parse(&["--rate", "0"]).is_err());
        assert!(parse(&["--threads", "0"]).is_err());
        assert!(parse(&["--sample-every", "0.01"]).is_err());
        let c = parse(&["--inject-gap", "7", "--inject-leak", "50"]).expect("test modes");
        assert_eq!((c.inject_gap, c.inject_leak), (Some(7), 50));
    }
}
