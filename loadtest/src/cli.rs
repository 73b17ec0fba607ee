//! Command-line interface and the validated run configuration.
//!
//! Owns every flag (clap derive; each also readable from an `HUBCAST_LT_*`
//! environment variable), their defaults and their validation, and the
//! conversion into [`Config`], the plain struct the rest of the crate runs on
//! (tests build it through [`Args`] too, so the CLI is exercised everywhere).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};

use tokio_rustls::rustls::ClientConfig;

use crate::payload;
use crate::target::{self, Target, Targets};
use crate::v1;

/// What the subscribers speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Plain WebSocket: every message is the payload as published.
    #[default]
    Plain,
    /// hubcast protocol v1 (`Sec-WebSocket-Protocol: hubcast.v1`): every
    /// message is a push `{"topic":…,"offset":…,"data":…}`, offsets checked.
    V1,
}

impl Protocol {
    /// The subprotocol subscribers offer (`None`: none).
    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            Self::Plain => None,
            Self::V1 => Some(v1::SUBPROTOCOL),
        }
    }

    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::V1 => "v1",
        }
    }
}

/// What fills a plain payload up to `--size` behind the measurement stamp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Filler {
    /// Dots (`hc…........`): cheapest to write; compresses ~30×.
    #[default]
    Dots,
    /// A JSON object whose quotes' prices vary by message: compresses like a real
    /// feed (see `payload::write_quotes`).
    Json,
}

/// `--ramp START:FACTOR:MAX`: rates START, START×FACTOR, … up to MAX.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ramp {
    /// First rate, msgs/s.
    pub start: u64,
    /// Multiplier per step (> 1).
    pub factor: f64,
    /// Highest rate, msgs/s (inclusive).
    pub max: u64,
}

impl FromStr for Ramp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let [start, factor, max] = parts[..] else {
            return Err(format!("expected START:FACTOR:MAX, got {s:?}"));
        };
        let start: u64 = start.trim().parse().map_err(|e| format!("START: {e}"))?;
        let factor: f64 = factor.trim().parse().map_err(|e| format!("FACTOR: {e}"))?;
        let max: u64 = max.trim().parse().map_err(|e| format!("MAX: {e}"))?;
        if start == 0 || max < start {
            return Err("need 0 < START <= MAX".into());
        }
        if !(factor > 1.0 && factor.is_finite()) {
            return Err("FACTOR must be > 1".into());
        }
        Ok(Self { start, factor, max })
    }
}

impl Ramp {
    /// The rates of the ramp, strictly increasing, first START, none above MAX.
    pub fn rates(&self) -> Vec<u64> {
        let mut out = vec![self.start];
        let mut r = self.start as f64;
        loop {
            r *= self.factor;
            let next = r.round() as u64;
            let last = out.last().copied().unwrap_or(0);
            if r > self.max as f64 + 0.5 || next > self.max {
                break;
            }
            if next > last {
                out.push(next);
            }
            if out.len() >= payload::MAX_STEPS {
                break;
            }
        }
        out
    }
}

/// Fan-out load generator for WebSocket broadcast servers.
///
/// Connects --subs subscribers to --url (several URLs: dealt round-robin, e.g.
/// over the nodes of a cluster), has --pubs publishers send at --rate msgs/s
/// (over WebSocket to --pub-url, default the first --url, or HTTP POST to
/// --publish-http) and measures loss, duplicates, reordering and send→receive
/// latency per step; with --server-pid also the CPU and memory of one or more
/// server processes, per process and in total.
/// Exit code: 0 = at least one step met the SLO (idle mode: every connection
/// held), 1 = no step met it, 2 = error.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "hubcast-loadtest",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Instead of a load test: `soak`.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// WebSocket URL(s) subscribers connect to; topics go in the query.
    ///
    /// Several URLs (comma-separated and/or the flag repeated) are dealt
    /// round-robin: subscriber i connects to URL i mod n. A comma separates
    /// URLs only where a `scheme://` follows it, so commas inside a query stay.
    #[arg(
        long,
        env = "HUBCAST_LT_URL",
        value_name = "URL[,URL…]",
        default_value = "ws://127.0.0.1:8080/ws?topic=bench"
    )]
    pub url: Vec<String>,

    /// WebSocket URL for publishers, one (default: the first --url).
    #[arg(long, env = "HUBCAST_LT_PUB_URL")]
    pub pub_url: Option<String>,

    /// Number of subscriber connections (the measured set).
    #[arg(long, env = "HUBCAST_LT_SUBS", default_value_t = 1000)]
    pub subs: usize,

    /// Number of publishers (WebSocket connections, or HTTP keep-alive connections).
    #[arg(long, env = "HUBCAST_LT_PUBS", default_value_t = 1)]
    pub pubs: usize,

    /// Total publish rate in msgs/s; a comma list runs one step per rate. 0 = idle.
    #[arg(
        long,
        env = "HUBCAST_LT_RATE",
        value_delimiter = ',',
        default_value = "1000"
    )]
    pub rate: Vec<u64>,

    /// Ramp START:FACTOR:MAX instead of --rate, e.g. 1000:2:1024000.
    #[arg(long, env = "HUBCAST_LT_RAMP", conflicts_with = "rate")]
    pub ramp: Option<Ramp>,

    /// Seconds of sending per step.
    #[arg(long, env = "HUBCAST_LT_DURATION", default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds to wait after sending stops before counting a step.
    #[arg(long, env = "HUBCAST_LT_DRAIN", default_value_t = 2.0)]
    pub drain: f64,

    /// Seconds to wait after connecting before the first step.
    #[arg(long, env = "HUBCAST_LT_SETTLE", default_value_t = 0.5)]
    pub settle: f64,

    /// Payload size in bytes (min 36: the stamp).
    #[arg(long, env = "HUBCAST_LT_SIZE", default_value_t = 64)]
    pub size: usize,

    /// Send binary frames instead of text frames (the payload is ASCII either way).
    #[arg(long, env = "HUBCAST_LT_BINARY", value_parser = BoolishValueParser::new())]
    pub binary: bool,

    /// Publish with HTTP POST to this URL (body = payload) instead of WebSocket.
    #[arg(long, env = "HUBCAST_LT_PUBLISH_HTTP")]
    pub publish_http: Option<String>,

    /// Bearer token for --publish-http (Authorization: Bearer TOKEN).
    #[arg(long, env = "HUBCAST_LT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// HTTP requests in flight per publisher connection (1 = no pipelining).
    #[arg(long, env = "HUBCAST_LT_HTTP_PIPELINE", default_value_t = 1)]
    pub http_pipeline: usize,

    /// Text message every connection sends right after its handshake (e.g. a subscribe command).
    #[arg(long, env = "HUBCAST_LT_HELLO")]
    pub hello: Option<String>,

    /// New connections per second while connecting; 0 = unlimited.
    #[arg(long, env = "HUBCAST_LT_CONNECT_RATE", default_value_t = 5000.0)]
    pub connect_rate: f64,

    /// Handshakes in flight at once (over all threads); 0 = unlimited.
    #[arg(long, env = "HUBCAST_LT_CONNECT_CONCURRENCY", default_value_t = 1000)]
    pub connect_concurrency: usize,

    /// Seconds allowed for TCP connect + WebSocket handshake.
    #[arg(long, env = "HUBCAST_LT_CONNECT_TIMEOUT", default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Source addresses 127.0.0.2.. to spread connections over (loopback only); 0 = automatic.
    #[arg(long, env = "HUBCAST_LT_SRC_ADDRS", default_value_t = 0)]
    pub src_addrs: usize,

    /// Worker threads, each with its own single-threaded runtime (default: CPU count).
    #[arg(long, env = "HUBCAST_LT_THREADS")]
    pub threads: Option<usize>,

    /// PID(s) of the server processes: sample their CPU and memory.
    ///
    /// Several PIDs (comma-separated and/or the flag repeated), e.g. every node
    /// of a cluster and its message bus: CPU (user and system) and RSS are
    /// reported per process and summed; CPU per delivery uses the sum.
    #[arg(
        long,
        env = "HUBCAST_LT_SERVER_PID",
        value_name = "PID[,PID…]",
        value_delimiter = ',',
        value_parser = parse_pid
    )]
    pub server_pid: Vec<u32>,

    /// Latency SLO: a step passes only if p99 ≤ this many milliseconds.
    #[arg(long, env = "HUBCAST_LT_SLO_MS", default_value_t = 50.0)]
    pub slo_ms: f64,

    /// A step passes only if the achieved send rate is ≥ this fraction of the target.
    #[arg(long, env = "HUBCAST_LT_MIN_SEND_RATIO", default_value_t = 0.95)]
    pub min_send_ratio: f64,

    /// Keep stepping after a failed step (default: stop at the first failure).
    #[arg(long, env = "HUBCAST_LT_KEEP_GOING", value_parser = BoolishValueParser::new())]
    pub keep_going: bool,

    /// Idle mode: connect, hold the connections this many seconds, report memory; no publishing.
    #[arg(long, env = "HUBCAST_LT_IDLE")]
    pub idle: Option<f64>,

    /// Print one JSON object with every figure on stdout instead of the table.
    #[arg(long, env = "HUBCAST_LT_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,

    /// No progress on stderr (default: bars on a terminal, a line every 5 s otherwise).
    #[arg(long, short, env = "HUBCAST_LT_QUIET", value_parser = BoolishValueParser::new())]
    pub quiet: bool,

    /// Largest frame payload accepted from the server, bytes.
    #[arg(long, env = "HUBCAST_LT_MAX_FRAME", default_value_t = 16 << 20)]
    pub max_frame: usize,

    /// For wss:// URLs: PEM file of the CA(s) the server's certificate must chain to.
    #[arg(long, env = "HUBCAST_LT_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// For wss:// URLs: accept any server certificate (loopback benchmarks against a
    /// self-signed certificate; never across a network you do not control).
    #[arg(long, env = "HUBCAST_LT_INSECURE_SKIP_VERIFY", value_parser = BoolishValueParser::new())]
    pub insecure_skip_verify: bool,

    /// Subscriber protocol: plain, or hubcast protocol v1 (subprotocol
    /// hubcast.v1; pushes decoded, offsets checked; payload a JSON array).
    #[arg(
        long,
        env = "HUBCAST_LT_PROTOCOL",
        value_enum,
        default_value_t = Protocol::Plain
    )]
    pub protocol: Protocol,

    /// Recovery scenario (needs --protocol v1): subscribers subscribe to the
    /// --url topic by command, all disconnect, N messages are published at
    /// --rate, all reconnect at once and subscribe with `since`; measures the
    /// time until every subscriber has all N and checks each got exactly them.
    #[arg(long, env = "HUBCAST_LT_RECOVER", value_name = "N")]
    pub recover: Option<u64>,

    /// Subscribers negotiate permessage-deflate (offering server_no_context_takeover,
    /// which the server must accept) and inflate what arrives compressed; steps
    /// report bytes on the wire per message.
    #[arg(long, env = "HUBCAST_LT_DEFLATE", value_parser = BoolishValueParser::new())]
    pub deflate: bool,

    /// What pads plain payloads to --size: dots, or a JSON object of quotes whose
    /// prices vary by message (realistic for compression; --size ≥ 64).
    #[arg(
        long = "payload",
        env = "HUBCAST_LT_PAYLOAD",
        value_enum,
        default_value_t = Filler::Dots
    )]
    pub filler: Filler,
}

/// Subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Hours of churn against one hubcast (clients joining and leaving, slow readers,
    /// ping floods), watching its memory, fds and every message: see `soak --help`.
    Soak(crate::soak::SoakArgs),
}

/// What to do after connecting.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Hold connections for this long, no publishing.
    Idle(Duration),
    /// One step per rate (msgs/s), in order.
    Steps(Vec<u64>),
    /// The recovery scenario (`--recover N`).
    Recover(Recover),
}

/// The recovery scenario: what is missed and where subscribers go.
#[derive(Debug, Clone, PartialEq)]
pub struct Recover {
    /// Messages published while every subscriber is away.
    pub messages: u64,
    /// Their publish rate, msgs/s.
    pub rate: u64,
    /// The topic subscribed to by command (from the `topic=` of `--url`).
    pub topic: String,
    /// The subscriber URLs without their `topic=` parameters (a v1 client that
    /// names no topic starts with none), dealt like `--url`.
    pub targets: Targets,
}

/// How publishers publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishVia {
    /// WebSocket messages on their own connections to this URL.
    WebSocket(Target),
    /// HTTP POST to this URL.
    Http {
        /// Where to POST.
        target: Target,
        /// Optional bearer token.
        token: Option<String>,
        /// Requests in flight per connection.
        pipeline: usize,
    },
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Subscriber endpoints; subscriber `i` connects to `sub_targets.for_index(i)`.
    pub sub_targets: Targets,
    /// Publisher endpoint.
    pub publish: PublishVia,
    /// Subscriber count.
    pub subs: usize,
    /// Publisher count.
    pub pubs: usize,
    /// Idle or steps.
    pub mode: Mode,
    /// Whether rates came from --ramp (affects wording only).
    pub ramp: bool,
    /// Sending window per step.
    pub duration: Duration,
    /// Drain after each step.
    pub drain: Duration,
    /// Pause after connecting.
    pub settle: Duration,
    /// Payload size.
    pub size: usize,
    /// Binary instead of text frames.
    pub binary: bool,
    /// Text message sent after the handshake.
    pub hello: Option<String>,
    /// Connections per second (0 = unlimited).
    pub connect_rate: f64,
    /// Handshakes in flight (0 = unlimited).
    pub connect_concurrency: usize,
    /// Connect + handshake timeout.
    pub connect_timeout: Duration,
    /// Requested source addresses (0 = auto).
    pub src_addrs: usize,
    /// Worker threads.
    pub threads: usize,
    /// Server processes to sample (empty: none), without duplicates.
    pub server_pids: Vec<u32>,
    /// p99 SLO.
    pub slo: Duration,
    /// Minimum achieved/target send ratio.
    pub min_send_ratio: f64,
    /// Continue after a failed step.
    pub keep_going: bool,
    /// Largest accepted frame payload.
    pub max_frame: usize,
    /// What subscribers speak.
    pub protocol: Protocol,
    /// TLS client configuration, when some URL is `wss://`.
    pub tls: Option<Arc<ClientConfig>>,
    /// Subscribers negotiate permessage-deflate.
    pub deflate: bool,
    /// What pads plain payloads.
    pub filler: Filler,
}

/// One `--server-pid` entry: a positive integer (surrounding spaces allowed).
fn parse_pid(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("PID 0 is not a process".into()),
        Ok(pid) => Ok(pid),
        Err(e) => Err(format!("{:?} is not a PID: {e}", s.trim())),
    }
}

/// The recovery plan: one topic, named in the query of every `--url`, and
/// the URLs without it.
fn recover_plan(sub_targets: &Targets, messages: u64, rate: u64) -> Result<Recover> {
    let mut topic: Option<String> = None;
    let mut list = Vec::with_capacity(sub_targets.len());
    for t in sub_targets.as_slice() {
        let (topics, path) =
            v1::take_topics(&t.path).map_err(|e| anyhow::anyhow!("--url {}: {e}", t.url))?;
        let [one] = &topics[..] else {
            bail!(
                "--recover needs exactly one topic in the query of every --url \
                 (ws://host/ws?topic=T); {} names {}",
                t.url,
                topics.len()
            );
        };
        match &topic {
            Some(first) if first != one => {
                bail!("--recover: every --url must name the same topic ({first:?} and {one:?})")
            }
            _ => topic = Some(one.clone()),
        }
        list.push(Target { path, ..t.clone() });
    }
    Ok(Recover {
        messages,
        rate,
        topic: topic.unwrap_or_default(),
        targets: Targets::new(list)?,
    })
}

/// Checks that a single-URL flag was not given a list (`a,ws://b`).
fn single_url<'a>(flag: &str, url: &'a str) -> Result<&'a str> {
    let n = target::split_url_list(&[url.to_string()])
        .with_context(|| format!("--{flag}"))?
        .len();
    ensure!(
        n == 1,
        "--{flag} takes one URL, got {n}: {url:?} (only --url takes a list)"
    );
    Ok(url)
}

/// Checks a PID list for repeats (a repeated PID would be counted twice).
fn unique_pids(pids: &[u32]) -> Result<Vec<u32>> {
    for (i, pid) in pids.iter().enumerate() {
        ensure!(
            !pids[..i].contains(pid),
            "--server-pid: PID {pid} is given twice (it would be counted twice)"
        );
    }
    Ok(pids.to_vec())
}

/// `--name`'s value as a duration: a finite, non-negative number of seconds.
pub(crate) fn secs(name: &str, v: f64) -> Result<Duration> {
    ensure!(
        v.is_finite() && v >= 0.0,
        "--{name} must be a non-negative number of seconds"
    );
    Ok(Duration::from_secs_f64(v))
}

impl Args {
    /// Validates the flags and resolves the URLs.
    pub fn into_config(self) -> Result<Config> {
        let urls = target::split_url_list(&self.url).context("--url")?;
        let sub_targets = Targets::parse(&urls, true).context("--url")?;
        let server_pids = unique_pids(&self.server_pid)?;
        ensure!(
            self.size >= payload::STAMP_LEN,
            "--size must be at least {} (the measurement stamp)",
            payload::STAMP_LEN
        );
        ensure!(
            self.protocol != Protocol::V1 || self.size >= payload::JSON_STAMP_MAX,
            "--size must be at least {} with --protocol v1 (the JSON measurement stamp)",
            payload::JSON_STAMP_MAX
        );
        ensure!(
            self.filler == Filler::Dots || self.protocol == Protocol::Plain,
            "--payload json is for the plain protocol (v1 payloads are JSON already)"
        );
        ensure!(
            self.filler == Filler::Dots || self.size >= payload::QUOTES_MIN,
            "--size must be at least {} with --payload json",
            payload::QUOTES_MIN
        );
        ensure!(
            self.pubs <= payload::MAX_PUBLISHERS,
            "--pubs at most {}",
            payload::MAX_PUBLISHERS
        );
        let mode = match (self.idle, &self.ramp) {
            _ if self.recover.is_some() => {
                let n = self.recover.unwrap_or(0);
                ensure!(
                    self.protocol == Protocol::V1,
                    "--recover needs --protocol v1 (recovery is a protocol v1 feature)"
                );
                ensure!(n >= 1, "--recover needs at least 1 message");
                ensure!(
                    self.idle.is_none() && self.ramp.is_none(),
                    "--recover excludes --idle and --ramp"
                );
                let [rate] = self.rate[..] else {
                    bail!(
                        "--recover takes one --rate (the publish rate while subscribers are away)"
                    );
                };
                ensure!(rate > 0, "--recover needs a --rate above 0");
                Mode::Recover(recover_plan(&sub_targets, n, rate)?)
            }
            (Some(_), Some(_)) => bail!("--idle and --ramp exclude each other"),
            (Some(s), None) => Mode::Idle(secs("idle", s)?),
            (None, Some(r)) => Mode::Steps(r.rates()),
            (None, None) if self.rate.iter().all(|r| *r == 0) => {
                Mode::Idle(secs("duration", self.duration)?)
            }
            (None, None) => {
                ensure!(
                    self.rate.iter().all(|r| *r > 0),
                    "--rate: 0 (idle) cannot be mixed with other rates"
                );
                Mode::Steps(self.rate.clone())
            }
        };
        if let Mode::Recover(_) = &mode {
            ensure!(self.pubs >= 1, "--pubs must be at least 1 to publish");
        }
        if let Mode::Steps(rates) = &mode {
            ensure!(!rates.is_empty(), "no rates given");
            ensure!(
                rates.len() <= payload::MAX_STEPS,
                "at most {} steps",
                payload::MAX_STEPS
            );
            ensure!(self.pubs >= 1, "--pubs must be at least 1 to publish");
            ensure!(self.duration > 0.0, "--duration must be positive");
        }
        let publish = match &self.publish_http {
            Some(url) => {
                ensure!(
                    self.http_pipeline >= 1,
                    "--http-pipeline must be at least 1"
                );
                PublishVia::Http {
                    target: Target::parse(single_url("publish-http", url)?, false)
                        .context("--publish-http")?,
                    token: self.token.clone(),
                    pipeline: self.http_pipeline,
                }
            }
            None => PublishVia::WebSocket(match &self.pub_url {
                Some(u) => Target::parse(single_url("pub-url", u)?, true).context("--pub-url")?,
                None => sub_targets.first().clone(),
            }),
        };
        let pub_tls = matches!(&publish, PublishVia::WebSocket(t) if t.tls);
        let tls = if sub_targets.any_tls() || pub_tls {
            Some(crate::tls::client_config(
                self.ca_file.as_deref(),
                self.insecure_skip_verify,
            )?)
        } else {
            None
        };
        ensure!(
            self.connect_rate.is_finite() && self.connect_rate >= 0.0,
            "--connect-rate must be >= 0"
        );
        ensure!(
            self.min_send_ratio.is_finite() && (0.0..=1.0).contains(&self.min_send_ratio),
            "--min-send-ratio must be within 0..=1"
        );
        ensure!(
            self.slo_ms.is_finite() && self.slo_ms > 0.0,
            "--slo-ms must be positive"
        );
        ensure!(self.max_frame >= self.size, "--max-frame must be >= --size");
        let threads = match self.threads {
            Some(0) => bail!("--threads must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Config {
            sub_targets,
            publish,
            subs: self.subs,
            pubs: self.pubs,
            ramp: self.ramp.is_some(),
            mode,
            duration: secs("duration", self.duration)?,
            drain: secs("drain", self.drain)?,
            settle: secs("settle", self.settle)?,
            size: self.size,
            binary: self.binary,
            hello: self.hello,
            connect_rate: self.connect_rate,
            connect_concurrency: self.connect_concurrency,
            connect_timeout: secs("connect-timeout", self.connect_timeout)?,
            src_addrs: self.src_addrs,
            threads,
            server_pids,
            slo: Duration::from_secs_f64(self.slo_ms / 1_000.0),
            min_send_ratio: self.min_send_ratio,
            keep_going: self.keep_going,
            max_frame: self.max_frame,
            protocol: self.protocol,
            tls,
            deflate: self.deflate,
            filler: self.filler,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config> {
        let mut v = vec!["hubcast-loadtest"];
        v.extend_from_slice(args);
        Args::try_parse_from(v)?.into_config()
    }

    #[test]
    fn ramp_rates() {
        let r: Ramp = "1000:2:10000".parse().expect("ramp");
        assert_eq!(r.rates(), vec![1000, 2000, 4000, 8000]);
        let r: Ramp = "1000:2:8000".parse().expect("ramp");
        assert_eq!(r.rates(), vec![1000, 2000, 4000, 8000]);
        let r: Ramp = "10:1.5:40".parse().expect("ramp");
        assert_eq!(r.rates(), vec![10, 15, 23, 34]);
        let r: Ramp = "5:1.01:7".parse().expect("ramp");
        assert_eq!(r.rates(), vec![5, 6, 7]);
        assert!("1000:1:2000".parse::<Ramp>().is_err());
        assert!("0:2:10".parse::<Ramp>().is_err());
        assert!("10:2".parse::<Ramp>().is_err());
        assert!("20:2:10".parse::<Ramp>().is_err());
    }

    #[test]
    fn modes() {
        let c = parse(&["--rate", "1000,2000,5000"]).expect("ok");
        assert_eq!(c.mode, Mode::Steps(vec![1000, 2000, 5000]));
        let c = parse(&["--rate", "0", "--duration", "3"]).expect("ok");
        assert_eq!(c.mode, Mode::Idle(Duration::from_secs(3)));
        let c = parse(&["--idle", "30"]).expect("ok");
        assert_eq!(c.mode, Mode::Idle(Duration::from_secs(30)));
        let c = parse(&["--ramp", "100:10:10000"]).expect("ok");
        assert_eq!(c.mode, Mode::Steps(vec![100, 1000, 10000]));
        assert!(parse(&["--rate", "0,5"]).is_err());
        assert!(parse(&["--idle", "1", "--ramp", "1:2:4"]).is_err());
    }

    #[test]
    fn boolean_flags_accept_env_style_values() {
        let a = Args::try_parse_from(["x", "--json", "--quiet"]).expect("flags");
        assert!(a.json && a.quiet && !a.binary && !a.keep_going);
    }

    #[test]
    fn validation() {
        assert!(parse(&["--size", "35"]).is_err());
        assert!(parse(&["--size", "36"]).is_ok());
        assert!(parse(&["--url", "wss://x:1/"]).is_err());
        assert!(parse(&["--threads", "0"]).is_err());
        assert!(parse(&["--pubs", "0"]).is_err());
        assert!(parse(&["--pubs", "0", "--idle", "1"]).is_ok());
        let c = parse(&[
            "--publish-http",
            "http://127.0.0.1:8080/publish/t",
            "--token",
            "s3cret",
        ])
        .expect("ok");
        assert!(matches!(c.publish, PublishVia::Http { pipeline: 1, .. }));
        let c = parse(&["--pub-url", "ws://127.0.0.1:9/p"]).expect("ok");
        assert!(matches!(c.publish, PublishVia::WebSocket(t) if t.path == "/p"));
    }

    #[test]
    fn payload_filler() {
        assert_eq!(parse(&[]).expect("ok").filler, Filler::Dots);
        let c = parse(&["--payload", "json", "--size", "1024"]).expect("ok");
        assert_eq!(c.filler, Filler::Json);
        assert!(parse(&["--payload", "json", "--size", "40"]).is_err());
        assert!(parse(&["--payload", "json", "--protocol", "v1", "--size", "1024"]).is_err());
        assert!(parse(&["--deflate"]).expect("ok").deflate);
    }

    #[test]
    fn protocol_and_recover() {
        let c = parse(&[]).expect("ok");
        assert_eq!(c.protocol, Protocol::Plain);
        let c = parse(&["--protocol", "v1"]).expect("ok");
        assert_eq!(c.protocol, Protocol::V1);
        assert_eq!(c.protocol.subprotocol(), Some("hubcast.v1"));
        assert!(parse(&["--protocol", "v2"]).is_err());
        // v1 publishes the JSON stamp: it needs more room.
        let e = parse(&["--protocol", "v1", "--size", "40"]).expect_err("small");
        assert!(format!("{e:#}").contains("--protocol v1"), "{e:#}");
        assert!(parse(&["--protocol", "v1", "--size", "56"]).is_ok());

        let c = parse(&[
            "--protocol=v1",
            "--recover=200",
            "--rate=500",
            "--url=ws://127.0.0.1:1/ws?x=1&topic=a%2Fb,ws://127.0.0.1:2/ws?topic=a%2Fb",
        ])
        .expect("ok");
        let Mode::Recover(r) = &c.mode else {
            panic!("{:?}", c.mode)
        };
        assert_eq!((r.messages, r.rate, r.topic.as_str()), (200, 500, "a/b"));
        let paths: Vec<&str> = r
            .targets
            .as_slice()
            .iter()
            .map(|t| t.path.as_str())
            .collect();
        assert_eq!(paths, vec!["/ws?x=1", "/ws"]);
        // The subscriber URLs themselves are unchanged (for the normal connect).
        assert_eq!(c.sub_targets.first().path, "/ws?x=1&topic=a%2Fb");
        let needs = |args: &[&str], what: &str| {
            let e = parse(args).expect_err(what);
            assert!(format!("{e:#}").contains(what), "{e:#}");
        };
        needs(&["--recover=10"], "--protocol v1");
        needs(&["--protocol=v1", "--recover=0"], "at least 1");
        needs(
            &["--protocol=v1", "--recover=10", "--rate=1,2"],
            "one --rate",
        );
        needs(&["--protocol=v1", "--recover=10", "--idle=1"], "excludes");
        needs(
            &["--protocol=v1", "--recover=10", "--url=ws://127.0.0.1:1/ws"],
            "exactly one topic",
        );
        needs(
            &[
                "--protocol=v1",
                "--recover=10",
                "--url=ws://127.0.0.1:1/ws?topic=a&topic=b",
            ],
            "exactly one topic",
        );
        needs(
            &[
                "--protocol=v1",
                "--recover=10",
                "--url=ws://127.0.0.1:1/ws?topic=a,ws://127.0.0.1:2/ws?topic=b",
            ],
            "same topic",
        );
    }

    fn ports(c: &Config) -> Vec<u16> {
        c.sub_targets
            .as_slice()
            .iter()
            .map(|t| t.addr.port())
            .collect()
    }

    #[test]
    fn url_lists() {
        // Default: one URL.
        let c = parse(&[]).expect("ok");
        assert_eq!(ports(&c), vec![8080]);
        assert_eq!(c.sub_targets.first().path, "/ws?topic=bench");
        // Comma-separated, repeated, and both together, in order.
        let c = parse(&["--url", "ws://127.0.0.1:1/a,ws://127.0.0.1:2/b"]).expect("commas");
        assert_eq!(ports(&c), vec![1, 2]);
        let c =
            parse(&["--url", "ws://127.0.0.1:1/a", "--url=ws://127.0.0.1:2/b"]).expect("repeated");
        assert_eq!(ports(&c), vec![1, 2]);
        let c = parse(&[
            "--url",
            "ws://127.0.0.1:1/,ws://127.0.0.1:2/",
            "--url",
            "ws://127.0.0.1:3/",
        ])
        .expect("mixed");
        assert_eq!(ports(&c), vec![1, 2, 3]);
        // Subscriber i → URL i mod n.
        let picked: Vec<u16> = (0..5)
            .map(|i| c.sub_targets.for_index(i).addr.port())
            .collect();
        assert_eq!(picked, vec![1, 2, 3, 1, 2]);
        // WebSocket publishers default to the first URL; --pub-url stays one URL.
        assert!(matches!(&c.publish, PublishVia::WebSocket(t) if t.addr.port() == 1));
        let e = parse(&["--pub-url", "ws://127.0.0.1:2/,ws://127.0.0.1:3/"])
            .expect_err("one publisher URL");
        assert!(
            format!("{e:#}").contains("--pub-url takes one URL"),
            "{e:#}"
        );
        let e = parse(&[
            "--publish-http",
            "http://127.0.0.1:2/p,http://127.0.0.1:3/p",
        ])
        .expect_err("one publish URL");
        assert!(
            format!("{e:#}").contains("--publish-http takes one URL"),
            "{e:#}"
        );
        // Commas inside a query do not split.
        let c = parse(&["--url", "ws://127.0.0.1:1/ws?topics=a,b"]).expect("query comma");
        assert_eq!(c.sub_targets.len(), 1);
        assert_eq!(c.sub_targets.first().path, "/ws?topics=a,b");
        // Every URL is validated, and the error says which one and why.
        let e = parse(&["--url", "ws://127.0.0.1:1/,http://127.0.0.1:2/"]).expect_err("http");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("--url") && msg.contains("URL #2 of 2"),
            "{msg}"
        );
        assert!(msg.contains("ws:// or wss://"), "{msg}");
        // wss:// needs to know what to trust.
        let e = parse(&["--url", "wss://127.0.0.1:1/ws"]).expect_err("no CA");
        assert!(format!("{e:#}").contains("--ca-file"), "{e:#}");
        let c =
            parse(&["--url", "wss://127.0.0.1:1/ws", "--insecure-skip-verify"]).expect("insecure");
        assert!(c.tls.is_some() && c.sub_targets.first().tls);
        assert!(
            parse(&["--url", "ws://127.0.0.1:1/ws"])
                .expect("plain")
                .tls
                .is_none()
        );
        let e = parse(&["--url", "ws://127.0.0.1:1/,"]).expect_err("stray comma");
        assert!(format!("{e:#}").contains("empty entry"), "{e:#}");
        assert!(parse(&["--url", "ws://127.0.0.1:1/", "--url", "http://127.0.0.1:2/"]).is_err());
    }

    #[test]
    fn pid_lists() {
        assert!(parse(&[]).expect("ok").server_pids.is_empty());
        let c = parse(&["--server-pid", "10"]).expect("one");
        assert_eq!(c.server_pids, vec![10]);
        let c = parse(&["--server-pid", "10,11, 12", "--server-pid=13"]).expect("list");
        assert_eq!(c.server_pids, vec![10, 11, 12, 13]);
        assert!(parse(&["--server-pid", "10,10"]).is_err(), "duplicate");
        assert!(parse(&["--server-pid", "10", "--server-pid", "10"]).is_err());
        assert!(parse(&["--server-pid", "0"]).is_err());
        assert!(parse(&["--server-pid", "-3"]).is_err());
        assert!(parse(&["--server-pid", "12,x"]).is_err());
        assert!(parse(&["--server-pid", "12,"]).is_err(), "empty entry");
        assert_eq!(parse_pid(" 42 "), Ok(42));
        assert!(parse_pid("").is_err());
        assert!(parse_pid("4294967296").is_err());
    }
}
