//! `hubcast-loadtest soak`: hours of churn against one hubcast, watching for leaks
//! and for lost messages.
//!
//! The run, driven from the calling thread while worker threads hold the clients:
//!
//! 1. **Connect** `--clients` healthy clients (`--ping-flooders` of them ping in bursts)
//!    at `--connect-rate`; publishing starts at once (numbered messages to the clients'
//!    topic, bulk to the slow readers' topic).
//! 2. **Steady** for `--duration`: `--churn` clients a second leave (each first waits
//!    for every message the server accepted before it left, then closes) and as many
//!    join; `--slow-readers` slow readers at any time stall until the server closes
//!    them. Every `--sample-every` the server's RSS, fds and `/metrics` are sampled
//!    (a CSV row, a progress line).
//! 3. **Close**: publishing stops; every client collects what it is owed and closes;
//!    the server must then count no connection and hold no more fds than before.
//!
//! Verdict: RSS growth after the warm-up (the median of the last tenth of the samples
//! against the median of the first tenth after it) within `--max-rss-growth`, and open fds
//! likewise (the population is constant: more fds is a connection leak); no healthy
//! client missed, repeated or got a foreign message, or was closed by the server; every
//! slow reader closed by the server; every ping burst answered; no connect, close or
//! publish failure; connections and fds back where they were. `--inject-gap` and
//! `--inject-leak` break a run on purpose, to see it fail.

mod clients;
pub mod config;
mod publish;
pub mod sample;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

pub use config::{SoakArgs, SoakConfig};
use publish::Seqs;
use sample::{Growth, Metrics, Row, Server};

use crate::procfs;
use crate::target::SourcePlan;

/// Where the run is; worker threads follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Connecting,
    Steady,
    /// Publishing and churn stop.
    Draining,
    /// Every client leaves.
    Closing,
}

/// Defines the run's counters: an enum to name them and their names in reports.
macro_rules! counters {
    ($($variant:ident = $name:literal, $doc:literal;)*) => {
        /// A counter of the run.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum C {
            $(#[doc = $doc] $variant,)*
        }

        impl C {
            const ALL: &[C] = &[$(C::$variant,)*];

            fn name(self) -> &'static str {
                match self {
                    $(C::$variant => $name,)*
                }
            }
        }
    };
}

counters! {
    Connects = "connects", "Connections opened (clients and slow readers).";
    ConnectFailures = "connect_failures", "Connection attempts that failed.";
    Healthy = "healthy", "Healthy clients connected now.";
    Slow = "slow", "Slow readers connected now.";
    Leaked = "leaked", "Clients kept connected by --inject-leak.";
    Churned = "churned", "Clients that left with a complete close handshake.";
    CloseFailures = "close_failures", "Close handshakes that failed.";
    Received = "received", "Numbered messages that arrived in order.";
    StartMissed = "start_missed", "Owed messages missing before a client's first.";
    Gaps = "gaps", "Messages missing between two that arrived.";
    TailMissed = "tail_missed", "Owed messages missing when a client left.";
    Duplicates = "duplicates", "Numbered messages that arrived again or late.";
    Foreign = "foreign", "Messages that were not numbered ones.";
    UnexpectedEnds = "unexpected_ends", "Healthy clients closed or lost by the server.";
    SlowClosed = "slow_closed", "Slow readers that found the slow-consumer close.";
    SlowDropped = "slow_dropped", "Slow readers the server had dropped.";
    SlowNotClosed = "slow_not_closed", "Slow readers the server kept serving.";
    FloodBursts = "flood_bursts", "Ping bursts sent by flooders that left.";
    FloodUnanswered = "flood_unanswered", "Ping bursts whose last ping got no pong.";
    MetricsFailures = "metrics_failures", "Samples for which /metrics did not answer.";
    Published = "published", "Numbered messages the server accepted.";
    PublishErrors = "publish_errors", "Numbered publishes that failed.";
    BulkPublished = "bulk_published", "Bulk messages the server accepted.";
    BulkPublishErrors = "bulk_publish_errors", "Bulk publishes that failed.";
}

/// State shared by the coordinator, the worker threads and the publishers.
pub(crate) struct Shared {
    cfg: SoakConfig,
    epoch: Instant,
    sources: SourcePlan,
    phase: AtomicU8,
    seqs: Seqs,
    counts: Vec<AtomicU64>,
    /// Why things failed (and a few notes), with counts.
    reasons: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Connecting,
            1 => Phase::Steady,
            2 => Phase::Draining,
            _ => Phase::Closing,
        }
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::SeqCst);
    }

    fn publishing(&self) -> bool {
        matches!(self.phase(), Phase::Connecting | Phase::Steady)
    }

    fn add(&self, c: C, n: u64) {
        if n > 0 {
            self.counts[c as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    fn sub(&self, c: C, n: u64) {
        self.counts[c as usize].fetch_sub(n, Ordering::Relaxed);
    }

    fn count(&self, c: C) -> u64 {
        self.counts[c as usize].load(Ordering::Relaxed)
    }

    /// Records a note: what happened, counted by its text.
    fn note(&self, why: String) {
        if let Ok(mut r) = self.reasons.lock() {
            *r.entry(why).or_insert(0) += 1;
        }
    }

    /// Counts a failure of kind `c` and why.
    fn fail(&self, c: C, why: String) {
        self.add(c, 1);
        self.note(why);
    }

    /// Messages healthy clients missed, every kind.
    fn missed(&self) -> u64 {
        [C::StartMissed, C::Gaps, C::TailMissed]
            .iter()
            .map(|&c| self.count(c))
            .sum()
    }

    fn client_connections(&self) -> u64 {
        self.count(C::Healthy) + self.count(C::Slow)
    }
}

/// The run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Steady phase, s.
    pub duration_s: f64,
    /// Warm-up within it, s.
    pub warmup_s: f64,
    /// Time to connect the first population, s.
    pub connect_s: f64,
    /// Every counter of the run.
    pub counts: BTreeMap<&'static str, u64>,
    /// Why things failed, and notes (slow-consumer close codes), with counts.
    pub reasons: BTreeMap<String, u64>,
    /// The server before the run.
    pub server_before: Server,
    /// The server at the end of the steady phase.
    pub server_end: Server,
    /// The server once every client left.
    pub server_after: Server,
    /// `/metrics` before the run.
    pub metrics_before: Metrics,
    /// `/metrics` once every client left.
    pub metrics_after: Metrics,
    /// The memory verdict (`None`: too few samples).
    pub rss: Option<Growth>,
    /// Open fds after the warm-up, judged like memory (`None`: too few samples).
    pub fds: Option<Growth>,
    /// Largest growth allowed (fraction).
    pub max_rss_growth: f64,
    /// Every sample.
    pub samples: Vec<Row>,
    /// Every unmet condition; empty: passed.
    pub failures: Vec<String>,
    /// Whether the run passed.
    pub pass: bool,
}

/// Loopback source addresses the clients are spread over (127.0.0.2–17).
const SOURCE_ADDRS: usize = 16;
/// How long, after the clients left, the server may take to count none.
const SETTLE: Duration = Duration::from_secs(15);
/// Fds the server may hold beyond what it held before the run (timers, wakers).
const FD_SLACK: u64 = 16;

/// Runs the soak described by `cfg`.
pub fn run(cfg: SoakConfig) -> Result<SoakReport> {
    procfs::raise_nofile_limit()?;
    let pid = cfg.server_pid;
    let server_before =
        Server::sample(pid).with_context(|| format!("sampling the server (PID {pid})"))?;
    let metrics_before = Metrics::fetch(&cfg.metrics)?;
    // Clients leave first and the server closes TCP first, so it holds the TIME_WAIT:
    // a new client that reuses a recent (source, port) pair meets it, and its SYN may
    // go unanswered for seconds. Sixteen source addresses on loopback make that rare.
    let sources = SourcePlan::new(&cfg.healthy, 0, SOURCE_ADDRS, procfs::local_port_range());
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sources,
        phase: AtomicU8::new(Phase::Connecting as u8),
        seqs: Seqs::default(),
        counts: C::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
        reasons: Mutex::new(BTreeMap::new()),
        cfg,
    });
    let cfg = &shared.cfg;
    let mut csv = match &cfg.csv {
        Some(path) => {
            let mut f = BufWriter::new(
                File::create(path).with_context(|| format!("creating {}", path.display()))?,
            );
            writeln!(f, "{}", sample::CSV_HEADER)?;
            Some(f)
        }
        None => None,
    };
    let threads = (0..cfg.threads)
        .map(|i| clients::spawn(i, shared.clone()))
        .collect::<Result<Vec<_>>>()?;

    // 1. Connect.
    let start = Instant::now();
    let connect_limit = Duration::from_secs_f64(cfg.clients as f64 / cfg.connect_rate.max(1.0))
        + Duration::from_secs(30);
    loop {
        let up = shared.count(C::Healthy) + shared.count(C::ConnectFailures);
        if up >= cfg.clients as u64 {
            break;
        }
        if start.elapsed() > connect_limit {
            shared.set_phase(Phase::Closing);
            bail!("only {up} of {} clients connected", cfg.clients);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let connect_s = start.elapsed().as_secs_f64();

    // 2. Steady, sampled.
    shared.set_phase(Phase::Steady);
    let steady = Instant::now();
    let mut samples: Vec<Row> = Vec::new();
    let mut next = steady;
    while next <= steady + cfg.duration {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let last = samples.last().map_or(metrics_before, |r| r.metrics);
        let row = take_sample(&shared, steady, last)?;
        if let Some(f) = &mut csv {
            writeln!(f, "{}", row.csv())?;
            f.flush()?;
        }
        if !cfg.quiet {
            progress(&shared, &row);
        }
        samples.push(row);
        next += cfg.sample_every;
    }
    let server_end = Server::sample(pid)?;

    // 3. Close: publishing stops, everyone collects what it is owed and leaves.
    shared.set_phase(Phase::Draining);
    let drained = Instant::now();
    while shared.seqs.acked.load(Ordering::SeqCst) < shared.seqs.sent.load(Ordering::SeqCst)
        && drained.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.set_phase(Phase::Closing);
    for t in threads {
        let _ = t.join();
    }
    let settled = Instant::now();
    let (metrics_after, server_after) = loop {
        let m = Metrics::fetch(&cfg.metrics)?;
        let s = Server::sample(pid)?;
        if (m.connections == 0 && s.fds <= server_before.fds + FD_SLACK)
            || settled.elapsed() > SETTLE
        {
            break (m, s);
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    let series = |f: fn(&Row) -> u64| -> Result<Growth, String> {
        let s: Vec<(f64, u64)> = samples.iter().map(|r| (r.t_s, f(r))).collect();
        sample::growth(&s, cfg.warmup.as_secs_f64())
    };
    let rss = series(|r| r.server.rss_bytes);
    let fds = series(|r| r.server.fds);
    let mut failures = verdict(&shared, &rss, &fds);
    if metrics_after.connections != 0 {
        failures.push(format!(
            "the server still counts {} connections {} s after every client left",
            metrics_after.connections,
            SETTLE.as_secs()
        ));
    }
    if server_after.fds > server_before.fds + FD_SLACK {
        failures.push(format!(
            "the server holds {} fds after the run, {} before",
            server_after.fds, server_before.fds
        ));
    }
    let reasons = shared.reasons.lock().map(|r| r.clone()).unwrap_or_default();
    Ok(SoakReport {
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
        connect_s,
        counts: C::ALL
            .iter()
            .map(|&c| (c.name(), shared.count(c)))
            .collect(),
        reasons,
        server_before,
        server_end,
        server_after,
        metrics_before,
        metrics_after,
        rss: rss.ok(),
        fds: fds.ok(),
        max_rss_growth: cfg.max_rss_growth,
        samples,
        pass: failures.is_empty(),
        failures,
    })
}

/// One sample; when `/metrics` does not answer (a failure of the run, not its end),
/// the row keeps the `last` counters.
fn take_sample(shared: &Shared, steady: Instant, last: Metrics) -> Result<Row> {
    let cfg = &shared.cfg;
    let metrics = Metrics::fetch(&cfg.metrics).unwrap_or_else(|e| {
        shared.fail(C::MetricsFailures, format!("{e:#}"));
        last
    });
    Ok(Row {
        t_s: steady.elapsed().as_secs_f64(),
        server: Server::sample(cfg.server_pid)?,
        metrics,
        client_connections: shared.client_connections(),
        connects: shared.count(C::Connects),
        churned: shared.count(C::Churned),
        published: shared.count(C::Published),
        missed: shared.missed(),
    })
}

fn progress(shared: &Shared, row: &Row) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "soak t={:>6.0}s  rss {:>7.1} MiB  fds {:>6}  connections {:>6} (ours {:>6})  \
         connects {:>7}  left {:>7}  published {:>7}  missed {}  slow closed {}",
        row.t_s,
        mib(row.server.rss_bytes),
        row.server.fds,
        row.metrics.connections,
        row.client_connections,
        row.connects,
        row.churned,
        row.published,
        row.missed,
        shared.count(C::SlowClosed) + shared.count(C::SlowDropped),
    );
}

/// Every unmet condition of a run.
fn verdict(
    shared: &Shared,
    rss: &Result<Growth, String>,
    fds: &Result<Growth, String>,
) -> Vec<String> {
    let cfg = &shared.cfg;
    let n = |c: C| shared.count(c);
    let mut failures = Vec::new();
    let limit = cfg.max_rss_growth;
    match rss {
        Ok(g) if g.growth > limit => failures.push(format!(
            "server RSS grew {:.1} % after the warm-up ({:.1} → {:.1} MiB; limit {:.1} %)",
            g.growth * 100.0,
            g.baseline as f64 / (1 << 20) as f64,
            g.end as f64 / (1 << 20) as f64,
            limit * 100.0
        )),
        Ok(_) => {}
        Err(e) => failures.push(format!("RSS: {e}")),
    }
    // The population is constant, so its fds are too: growth is a connection leak.
    if let Ok(g) = fds
        && g.growth > limit
    {
        failures.push(format!(
            "server fds grew {:.1} % after the warm-up ({} → {}; limit {:.1} %)",
            g.growth * 100.0,
            g.baseline,
            g.end,
            limit * 100.0
        ));
    }
    let missed = shared.missed();
    if missed > 0 {
        failures.push(format!(
            "healthy clients missed {missed} messages ({} before their first, {} in gaps, \
             {} when leaving)",
            n(C::StartMissed),
            n(C::Gaps),
            n(C::TailMissed)
        ));
    }
    let mut check = |c: C, what: &str| {
        if n(c) > 0 {
            failures.push(format!("{} {what}", n(c)));
        }
    };
    check(
        C::Duplicates,
        "numbered messages arrived twice or out of order",
    );
    check(C::Foreign, "messages were not the numbered ones");
    check(
        C::UnexpectedEnds,
        "healthy clients were closed or lost by the server",
    );
    check(C::ConnectFailures, "connection attempts failed");
    check(C::CloseFailures, "close handshakes failed");
    check(
        C::SlowNotClosed,
        "slow readers were not closed by the server",
    );
    check(
        C::FloodUnanswered,
        "ping bursts got no pong for their last ping",
    );
    check(
        C::MetricsFailures,
        "samples got no answer from /metrics within 15 s",
    );
    check(C::PublishErrors, "numbered publishes failed");
    check(C::BulkPublishErrors, "bulk publishes failed");
    if n(C::Published) == 0 {
        failures.push("nothing was published".into());
    }
    if n(C::Received) == 0 {
        failures.push("no healthy client received anything".into());
    }
    if cfg.churn > 0.0 && n(C::Churned) == 0 {
        failures.push("no client left during the run".into());
    }
    if cfg.slow_readers > 0 && n(C::SlowClosed) + n(C::SlowDropped) == 0 {
        failures.push(format!(
            "no slow reader finished its {:.0} s stall (is --duration longer?)",
            cfg.slow_stall.as_secs_f64()
        ));
    }
    if cfg.ping_flooders > 0 && n(C::FloodBursts) == 0 {
        failures.push("no ping burst was sent".into());
    }
    failures
}

impl SoakReport {
    /// The summary for humans.
    pub fn write_summary(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let c = |name: &str| self.counts.get(name).copied().unwrap_or(0);
        writeln!(
            out,
            "soak: {:.0} s steady after {:.1} s connecting; warm-up {:.0} s",
            self.duration_s, self.connect_s, self.warmup_s
        )?;
        writeln!(
            out,
            "  clients: {} connects, {} left cleanly, {} connect failures, {} closed by the server",
            c("connects"),
            c("churned"),
            c("connect_failures"),
            c("unexpected_ends")
        )?;
        writeln!(
            out,
            "  messages: {} published, {} received in order, missed {} (start {}, gaps {}, \
             leaving {}), duplicates {}, foreign {}",
            c("published"),
            c("received"),
            c("start_missed") + c("gaps") + c("tail_missed"),
            c("start_missed"),
            c("gaps"),
            c("tail_missed"),
            c("duplicates"),
            c("foreign")
        )?;
        writeln!(
            out,
            "  slow readers: {} closed with a slow-consumer code, {} dropped, {} not closed; \
             ping bursts: {} sent, {} unanswered",
            c("slow_closed"),
            c("slow_dropped"),
            c("slow_not_closed"),
            c("flood_bursts"),
            c("flood_unanswered")
        )?;
        match &self.rss {
            Some(g) => writeln!(
                out,
                "  server RSS: {:.1} MiB after the warm-up, {:.1} MiB at the end ({:+.2} %, \
                 limit {:.1} %); peak {:.1} MiB ({:+.2} %)",
                mib(g.baseline),
                mib(g.end),
                g.growth * 100.0,
                self.max_rss_growth * 100.0,
                mib(g.peak),
                g.peak_growth * 100.0
            )?,
            None => writeln!(out, "  server RSS: too few samples to judge")?,
        }
        if let Some(g) = &self.fds {
            writeln!(
                out,
                "  server fds after the warm-up: {} → {} ({:+.2} %); peak {}",
                g.baseline,
                g.end,
                g.growth * 100.0,
                g.peak
            )?;
        }
        writeln!(
            out,
            "  server fds: {} before, {} at the end of the load, {} after; connections after: {}",
            self.server_before.fds,
            self.server_end.fds,
            self.server_after.fds,
            self.metrics_after.connections
        )?;
        writeln!(
            out,
            "  server counters over the run: slow-consumer closes {}, protocol closes {}, \
             ping timeouts {}, inbox drops {}",
            self.metrics_after.slow_consumer_closes - self.metrics_before.slow_consumer_closes,
            self.metrics_after.protocol_closes - self.metrics_before.protocol_closes,
            self.metrics_after.ping_timeouts - self.metrics_before.ping_timeouts,
            self.metrics_after.inbox_dropped - self.metrics_before.inbox_dropped
        )?;
        for (why, n) in &self.reasons {
            writeln!(out, "  {n:>7} × {why}")?;
        }
        if self.pass {
            writeln!(out, "result: PASS")
        } else {
            writeln!(out, "result: FAIL")?;
            for f in &self.failures {
                writeln!(out, "  - {f}")?;
            }
            Ok(())
        }
    }
}

/// The `soak` subcommand: run, print the summary, write the JSON; the exit code.
pub fn main(args: SoakArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let cfg = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let json = cfg.json.clone();
    let report = match run(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let written = report
        .write_summary(&mut std::io::stdout().lock())
        .and_then(|()| match &json {
            Some(path) => serde_json::to_writer_pretty(File::create(path)?, &report)
                .map_err(std::io::Error::other),
            None => Ok(()),
        });
    if let Err(e) = written {
        eprintln!("error: writing the report: {e}");
        return ExitCode::from(2);
    }
    ExitCode::from(u8::from(!report.pass))
}
