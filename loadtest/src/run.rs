//! The coordinator: phases of a run and the figures derived from them.
//!
//! Owns the sequence connect → (idle hold | steps) → close, driven from the
//! calling thread with blocking waits while the worker threads do the I/O:
//! distributing subscribers and publishers over threads, starting every step
//! at one shared instant, sampling client and server CPU/memory at step
//! boundaries (every `--server-pid`, each alone and summed), merging the threads' statistics after each drain, turning them
//! into [`StepReport`]s and deciding pass/fail, plus the progress display
//! on stderr (`indicatif` bars on a terminal, plain lines otherwise).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{Config, Filler, Mode, Protocol, PublishVia, Recover};
use crate::pacing;
use crate::procfs::{self, ProcSample};
use crate::recovery::{self, RecoveryReport, RunFacts};
use crate::report::{
    ClientReport, ClientStep, ConnectReport, HttpStep, IdleReport, Report, ServerProcess,
    ServerReport, ServerStep, ServerStepProcess, Setup, StepReport, Summary, UrlConnect,
};
use crate::stats::{LatencySummary, StepRecv, StepSend, ThreadStats};
use crate::target::SourcePlan;
use crate::worker::{Cmd, ConnectTally, Live, Params, SubPhase, Worker, ns_since};

/// Time allowed for the close handshake at exit.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// Lead time between scheduling a step and its start, so all threads start together.
const STEP_LEAD: Duration = Duration::from_millis(50);

/// How often a plain progress line is printed (no terminal, or `--json`).
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Cells of a progress bar (the drain's is half as wide); the message gets the rest.
const BAR_WIDTH: u16 = 20;

/// How progress is shown on stderr while a run is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing.
    Off,
    /// One plain line every 5 s (logs, pipes, `--json`).
    Lines,
    /// `indicatif` bars redrawn in place (interactive terminal).
    Bars,
}

impl ProgressMode {
    /// `Off` when `quiet`; bars when stderr is a terminal and the output is the
    /// human table; plain lines otherwise (stderr redirected, or `json`).
    pub fn detect(quiet: bool, json: bool) -> Self {
        if quiet {
            Self::Off
        } else if json || !std::io::stderr().is_terminal() {
            Self::Lines
        } else {
            Self::Bars
        }
    }
}

/// Bar template: bold prefix, optional spinner, `width`-cell bar, then the
/// message cut to the terminal's width.
fn bar_template(width: u16, spinner: bool) -> String {
    let spin = if spinner { "{spinner} " } else { "" };
    format!("{{prefix:.bold}} {spin}[{{bar:{width}.cyan/blue}}] {{wide_msg}}")
}

fn bar_style(width: u16, spinner: bool) -> ProgressStyle {
    ProgressStyle::with_template(&bar_template(width, spinner))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The progress display of one phase at a time (connecting, idle hold, a step's
/// sending window, its drain). Updated only from the coordinator's periodic
/// tick (about every 100 ms), never from the I/O threads.
struct Progress {
    mode: ProgressMode,
    /// The current phase's bar (`Bars` mode only).
    bar: Option<ProgressBar>,
    /// The current phase's label (`Lines` mode).
    prefix: String,
    /// When the last plain line was printed.
    last: Instant,
}

impl Progress {
    fn new(mode: ProgressMode) -> Self {
        Self {
            mode,
            bar: None,
            prefix: String::new(),
            last: Instant::now() - Duration::from_secs(60),
        }
    }

    /// Starts a phase labelled `prefix` whose position runs from 0 to `len`,
    /// drawn as a `width`-cell bar (with a spinner in front if `spinner`).
    fn begin(&mut self, prefix: String, len: u64, width: u16, spinner: bool) {
        self.done();
        if self.mode == ProgressMode::Bars {
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
                .with_style(bar_style(width, spinner))
                .with_prefix(prefix.clone());
            bar.tick();
            self.bar = Some(bar);
        }
        self.prefix = prefix;
    }

    /// Moves the bar to `pos` with the message `msg()`; in `Lines` mode prints
    /// `prefix: msg` if the last line is at least [`LINE_EVERY`] old.
    fn show(&mut self, pos: u64, msg: impl FnOnce() -> String) {
        match self.mode {
            ProgressMode::Off => {}
            ProgressMode::Bars => {
                if let Some(bar) = &self.bar {
                    bar.set_position(pos);
                    bar.set_message(msg());
                }
            }
            ProgressMode::Lines => {
                if self.last.elapsed() >= LINE_EVERY {
                    self.last = Instant::now();
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{}: {}", self.prefix, msg());
                    let _ = err.flush();
                }
            }
        }
    }

    /// Ends the phase: clears its bar; the next phase's first line prints at once.
    fn done(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.last = Instant::now() - Duration::from_secs(60);
    }
}

impl Drop for Progress {
    /// Clears a bar left by a run that ended in an error.
    fn drop(&mut self) {
        self.done();
    }
}

/// Milliseconds in `d`, for bar positions.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Fleet {
    workers: Vec<Worker>,
}

impl Fleet {
    fn sum(&self, f: impl Fn(&Live) -> &std::sync::atomic::AtomicU64) -> u64 {
        self.workers.iter().map(|w| Live::get(f(&w.live))).sum()
    }

    fn thread_cpu_ns(&self) -> Vec<u64> {
        self.workers
            .iter()
            .map(|w| {
                let tid = w.live.tid.load(std::sync::atomic::Ordering::Relaxed);
                procfs::thread_cpu_ns(tid).unwrap_or(0)
            })
            .collect()
    }

    /// Sends one command per worker built by `make` and collects the replies,
    /// calling `tick` about every 100 ms while waiting.
    fn ask<T>(
        &self,
        make: impl Fn(usize, mpsc::Sender<T>) -> Option<Cmd>,
        mut tick: impl FnMut(&Fleet),
    ) -> Result<Vec<T>> {
        let (tx, rx) = mpsc::channel();
        let mut expected = 0;
        for (i, w) in self.workers.iter().enumerate() {
            if let Some(cmd) = make(i, tx.clone()) {
                w.send(cmd)?;
                expected += 1;
            }
        }
        drop(tx);
        let mut out = Vec::with_capacity(expected);
        while out.len() < expected {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(v) => out.push(v),
                Err(mpsc::RecvTimeoutError::Timeout) => tick(self),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("a worker thread stopped answering")
                }
            }
        }
        Ok(out)
    }

    fn snapshot(&self) -> Result<ThreadStats> {
        let parts = self.ask(|_, reply| Some(Cmd::Snapshot { reply }), |_| {})?;
        let mut all = ThreadStats::default();
        for p in &parts {
            all.merge(p);
        }
        Ok(all)
    }

    /// Polls `done` about every 10 ms until it holds (`true`) or `limit` has
    /// passed (`false`), calling `tick` in between.
    fn wait_until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&Fleet) -> bool,
        mut tick: impl FnMut(&Fleet, Duration),
    ) -> bool {
        let start = Instant::now();
        loop {
            if done(self) {
                return true;
            }
            let e = start.elapsed();
            if e >= limit {
                return false;
            }
            tick(self, e);
            std::thread::sleep((limit - e).min(Duration::from_millis(10)));
        }
    }

    fn sleep(&self, d: Duration, mut tick: impl FnMut(&Fleet, Duration)) {
        let start = Instant::now();
        loop {
            let e = start.elapsed();
            if e >= d {
                break;
            }
            tick(self, e);
            std::thread::sleep((d - e).min(Duration::from_millis(100)));
        }
    }
}

/// One sample of every `--server-pid` process: each one's (in the order
/// given) and their sum.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerSample {
    total: ProcSample,
    each: Vec<ProcSample>,
}

impl ServerSample {
    fn new(each: Vec<ProcSample>) -> Self {
        Self {
            total: ProcSample::total(&each),
            each,
        }
    }
}

/// Samples the `--server-pid` processes and keeps their peaks.
struct ServerProbe {
    pids: Vec<u32>,
    /// Highest summed RSS.
    peak: u64,
    /// Highest RSS per process.
    peaks: Vec<u64>,
}

impl ServerProbe {
    fn new(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            peak: 0,
            peaks: vec![0; pids.len()],
        }
    }

    /// `None` without `--server-pid`; an error if any process cannot be read.
    fn sample(&mut self) -> Result<Option<ServerSample>> {
        if self.pids.is_empty() {
            return Ok(None);
        }
        let s = ServerSample::new(procfs::sample_all(&self.pids)?);
        self.peak = self.peak.max(s.total.rss_bytes);
        for (peak, p) in self.peaks.iter_mut().zip(&s.each) {
            *peak = (*peak).max(p.rss_bytes);
        }
        Ok(Some(s))
    }
}

fn ns_to_s(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The run's server figures from the samples before connecting, after
/// connecting and at the end (`connected`: subscribers connected).
fn server_report(
    probe: &ServerProbe,
    before: &ServerSample,
    after: &ServerSample,
    end: &ServerSample,
    connected: u64,
) -> ServerReport {
    let processes = probe
        .pids
        .iter()
        .zip(&before.each)
        .zip(&after.each)
        .zip(&end.each)
        .zip(&probe.peaks)
        .map(|((((&pid, b), a), e), &peak)| ServerProcess {
            pid,
            before: *b,
            after_connect: *a,
            end: *e,
            peak_rss_bytes: peak,
            cpu_s: ns_to_s(e.cpu_ns.saturating_sub(b.cpu_ns)),
            user_s: ns_to_s(e.user_ns.saturating_sub(b.user_ns)),
            system_s: ns_to_s(e.system_ns.saturating_sub(b.system_ns)),
        })
        .collect();
    let (b, a, e) = (&before.total, &after.total, &end.total);
    ServerReport {
        pid: probe.pids.first().copied().unwrap_or(0),
        pids: probe.pids.clone(),
        before: *b,
        after_connect: *a,
        end: *e,
        rss_per_conn_bytes: if connected > 0 {
            (a.rss_bytes as f64 - b.rss_bytes as f64) / connected as f64
        } else {
            0.0
        },
        peak_rss_bytes: probe.peak,
        cpu_s: ns_to_s(e.cpu_ns.saturating_sub(b.cpu_ns)),
        user_s: ns_to_s(e.user_ns.saturating_sub(b.user_ns)),
        system_s: ns_to_s(e.system_ns.saturating_sub(b.system_ns)),
        processes,
    }
}

/// A step's server figures from the samples at its start (`a`), at the end of
/// the sending window (`b`) and after the drain (`c`); `deliveries`: messages
/// received over step + drain; `wall_send`: the sending window, s.
fn server_step(
    pids: &[u32],
    a: &ServerSample,
    b: &ServerSample,
    c: &ServerSample,
    deliveries: u64,
    wall_send: f64,
) -> ServerStep {
    let per_delivery = |ns: u64| {
        if deliveries > 0 {
            ns as f64 / deliveries as f64
        } else {
            0.0
        }
    };
    let figures = |a: &ProcSample, b: &ProcSample, c: &ProcSample| {
        let cpu = c.cpu_ns.saturating_sub(a.cpu_ns);
        ServerStepProcess {
            pid: 0,
            cpu_s: ns_to_s(cpu),
            user_s: ns_to_s(c.user_ns.saturating_sub(a.user_ns)),
            system_s: ns_to_s(c.system_ns.saturating_sub(a.system_ns)),
            cores_during_send: ns_to_s(b.cpu_ns.saturating_sub(a.cpu_ns)) / wall_send.max(1e-9),
            cpu_ns_per_delivery: per_delivery(cpu),
            rss_bytes: c.rss_bytes,
        }
    };
    let processes = pids
        .iter()
        .zip(a.each.iter().zip(&b.each).zip(&c.each))
        .map(|(&pid, ((a, b), c))| ServerStepProcess {
            pid,
            ..figures(a, b, c)
        })
        .collect();
    let total = figures(&a.total, &b.total, &c.total);
    ServerStep {
        cpu_s: total.cpu_s,
        user_s: total.user_s,
        system_s: total.system_s,
        cores_during_send: total.cores_during_send,
        cpu_ns_per_delivery: total.cpu_ns_per_delivery,
        rss_bytes: total.rss_bytes,
        processes,
    }
}

/// The connect figures per subscriber URL, from the per-endpoint counts of
/// the tally (subscriber `i` was dealt to URL `i mod n`).
fn per_url_connects(cfg: &Config, tally: &ConnectTally) -> Vec<UrlConnect> {
    cfg.sub_targets
        .as_slice()
        .iter()
        .zip(cfg.sub_targets.spread(cfg.subs))
        .enumerate()
        .map(|(k, (t, requested))| {
            let (connected, failed) = tally.per_target.get(k).copied().unwrap_or((0, 0));
            UrlConnect {
                url: t.url.clone(),
                requested,
                connected,
                failed,
            }
        })
        .collect()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs the load test described by `cfg`. `show_progress` enables progress on
/// stderr: bars on a terminal, a plain line every 5 s otherwise.
pub fn run(cfg: &Config, show_progress: bool) -> Result<Report> {
    let mode = if show_progress {
        ProgressMode::detect(false, false)
    } else {
        ProgressMode::Off
    };
    run_with_progress(cfg, mode)
}

/// Runs the load test described by `cfg`, showing progress on stderr as `mode` says.
pub fn run_with_progress(cfg: &Config, mode: ProgressMode) -> Result<Report> {
    let mut progress = Progress::new(mode);
    let (nofile, _hard) = procfs::raise_nofile_limit()?;
    let publishing = matches!(cfg.mode, Mode::Steps(_) | Mode::Recover(_));
    let ws_pubs = match &cfg.publish {
        PublishVia::WebSocket(_) if publishing => cfg.pubs,
        _ => 0,
    };
    let http_pubs = match &cfg.publish {
        PublishVia::Http { .. } if publishing => cfg.pubs,
        _ => 0,
    };
    let conns = cfg.subs + ws_pubs + http_pubs;
    if (conns as u64) + 64 > nofile {
        eprintln!(
            "warning: {conns} connections need more file descriptors than RLIMIT_NOFILE ({nofile}); \
             expect 'Too many open files' failures"
        );
    }
    // Source addresses are planned for loopback IPv4 targets (a subscriber
    // whose URL is elsewhere connects from the kernel's choice).
    let plan_target = cfg
        .sub_targets
        .as_slice()
        .iter()
        .find(|t| t.addr.is_ipv4() && t.is_loopback())
        .unwrap_or(cfg.sub_targets.first());
    let sources = SourcePlan::new(
        plan_target,
        conns,
        cfg.src_addrs,
        procfs::local_port_range(),
    );
    let epoch = Instant::now();
    let params = Arc::new(Params::new(cfg, sources.clone(), epoch));
    let threads = cfg.threads;
    let fleet = Fleet {
        workers: (0..threads)
            .map(|i| Worker::spawn(i, params.clone()))
            .collect::<Result<_>>()?,
    };
    let mut server = ServerProbe::new(&cfg.server_pids);
    let server_before = server.sample()?;
    let cpu_start = procfs::process_cpu();

    // --- connect subscribers ---
    let connect_start = Instant::now();
    let per_thread_rate = cfg.connect_rate / threads as f64;
    let per_thread_conc = if cfg.connect_concurrency == 0 {
        usize::MAX
    } else {
        cfg.connect_concurrency.div_ceil(threads)
    };
    let subs_total = cfg.subs;
    // Recovery subscribers subscribe by command (URLs without `topic=`).
    let sub_phase = match &cfg.mode {
        Mode::Recover(_) => SubPhase::RecSubscribe,
        _ => SubPhase::Measure,
    };
    progress.begin("connecting".into(), subs_total as u64, BAR_WIDTH, false);
    let tallies = fleet.ask(
        |i, reply| {
            Some(Cmd::ConnectSubs {
                phase: sub_phase,
                indices: (i..subs_total).step_by(threads).collect(),
                rate: per_thread_rate,
                concurrency: per_thread_conc,
                reply,
            })
        },
        |f| {
            let up = f.sum(|l| &l.subs_connected);
            progress.show(up, || {
                let e = connect_start.elapsed().as_secs_f64();
                format!(
                    "{up}/{subs_total} up, {:.0}/s, {} failed, {e:.1} s",
                    up as f64 / e.max(1e-9),
                    f.sum(|l| &l.subs_failed),
                )
            })
        },
    )?;
    let connect_secs = secs(connect_start.elapsed());
    progress.done();
    let mut sub_tally = ConnectTally::default();
    for t in &tallies {
        sub_tally.merge(t);
    }
    if cfg.protocol == Protocol::V1
        && sub_tally.ok == 0
        && let Some(reason) = sub_tally
            .failed
            .0
            .keys()
            .find(|r| r.contains("subprotocol"))
    {
        bail!(
            "--protocol v1: no subscriber could connect: {reason} \
             (does the server speak hubcast protocol v1?)"
        );
    }
    let server_after_connect = server.sample()?;
    let client_rss_after_connect = procfs::self_rss_bytes().unwrap_or(0);

    // --- connect publishers ---
    let mut pub_tally = ConnectTally::default();
    let n_pub_conns = ws_pubs + http_pubs;
    if n_pub_conns > 0 {
        let tallies = fleet.ask(
            |i, reply| {
                let ids: Vec<u16> = (i..n_pub_conns)
                    .step_by(threads)
                    .filter_map(|id| u16::try_from(id).ok())
                    .collect();
                Some(Cmd::ConnectPubs {
                    ids,
                    src_base: subs_total,
                    reply,
                })
            },
            |_| {},
        )?;
        for t in &tallies {
            pub_tally.merge(t);
        }
    }
    std::thread::sleep(cfg.settle);

    let connect = ConnectReport {
        requested: cfg.subs,
        connected: sub_tally.ok,
        failed: sub_tally.failed.total(),
        failures: sub_tally.failed.clone(),
        seconds: connect_secs,
        per_sec: if connect_secs > 0.0 {
            sub_tally.ok as f64 / connect_secs
        } else {
            0.0
        },
        rate_limit: cfg.connect_rate,
        handshake: LatencySummary::from_histogram(&sub_tally.latency),
        pubs_connected: pub_tally.ok,
        pub_failures: pub_tally.failed.clone(),
        per_url: per_url_connects(cfg, &sub_tally),
    };

    let mut steps: Vec<StepReport> = Vec::new();
    let mut idle: Option<IdleReport> = None;
    let mut recovery: Option<RecoveryReport> = None;
    let baseline = fleet.snapshot()?;

    match &cfg.mode {
        Mode::Idle(hold) => {
            let hold = *hold;
            progress.begin("idle".into(), ms(hold), BAR_WIDTH, false);
            fleet.sleep(hold, |f, e| {
                let _ = server.sample();
                progress.show(ms(e), || {
                    format!(
                        "{:.0}/{:.0} s, {} subscribers held, {} disconnects",
                        e.as_secs_f64(),
                        hold.as_secs_f64(),
                        f.sum(|l| &l.subs_connected),
                        f.sum(|l| &l.disconnects),
                    )
                })
            });
            progress.done();
            let snap = fleet.snapshot()?;
            let held = fleet.sum(|l| &l.subs_connected);
            let end_sample = server.sample()?;
            let server_per_conn = match (&server_before, &end_sample) {
                (Some(b), Some(e)) if held > 0 => {
                    Some((e.total.rss_bytes as f64 - b.total.rss_bytes as f64) / held as f64)
                }
                _ => None,
            };
            let client_now = procfs::self_rss_bytes().unwrap_or(0);
            idle = Some(IdleReport {
                seconds: secs(hold),
                held,
                disconnects: snap.sub_disconnects.since(&baseline.sub_disconnects),
                server_rss_per_conn_bytes: server_per_conn,
                client_rss_per_conn_bytes: if held > 0 {
                    client_now as f64 / held as f64
                } else {
                    0.0
                },
            });
        }
        Mode::Recover(rec) => {
            recovery = Some(run_recovery(cfg, rec, &fleet, &mut progress, pub_tally.ok)?);
        }
        Mode::Steps(rates) => {
            let mut prev = baseline.clone();
            for (k, &rate) in rates.iter().enumerate() {
                let Ok(step_id) = u8::try_from(k) else {
                    break;
                };
                let report = run_step(
                    cfg,
                    &fleet,
                    &mut server,
                    &mut progress,
                    step_id,
                    rate,
                    rates.len(),
                    &prev,
                    epoch,
                )?;
                prev = report.1;
                let passed = report.0.pass;
                steps.push(report.0);
                if !passed && !cfg.keep_going {
                    break;
                }
            }
        }
    }

    // Late arrivals, then close everything.
    let final_snap = fleet.snapshot()?;
    for st in &mut steps {
        if let Some(Some(r)) = final_snap.recv.get(st.step) {
            st.late_after_drain = r.unique.saturating_sub(st.unique);
        }
    }
    let server_end = server.sample()?;
    let unclosed: u64 = fleet
        .ask(
            |_, reply| {
                Some(Cmd::Shutdown {
                    grace: CLOSE_GRACE,
                    reply,
                })
            },
            |_| {},
        )?
        .into_iter()
        .sum();
    let cpu_total = procfs::process_cpu().saturating_sub(cpu_start);
    for w in fleet.workers {
        w.join();
    }

    let server_report = match (&server_before, &server_after_connect, &server_end) {
        (Some(before), Some(after), Some(end)) => {
            Some(server_report(&server, before, after, end, sub_tally.ok))
        }
        _ => None,
    };

    let passed: Vec<&StepReport> = steps.iter().filter(|s| s.pass).collect();
    let best = passed.iter().max_by_key(|s| s.target_rate);
    let exit_code = match (&cfg.mode, &idle, &recovery) {
        (Mode::Idle(_), Some(i), _) => {
            i32::from(!(i.held == cfg.subs as u64 && i.disconnects.total() == 0))
        }
        (Mode::Recover(_), _, Some(r)) => i32::from(!r.pass),
        _ => i32::from(passed.is_empty()),
    };
    let v1 = cfg.protocol == Protocol::V1;
    let summary = Summary {
        steps_run: steps.len(),
        steps_passed: passed.len(),
        highest_sustained_rate: best.map(|s| s.target_rate),
        deliveries_per_sec_at_highest: best.map(|s| s.deliveries_per_sec),
        foreign_messages: final_snap.foreign,
        publisher_received: final_snap.pub_received,
        http_reconnects: final_snap.http_reconnects,
        offset_gaps: v1.then_some(final_snap.offset_gaps),
        offset_dups: v1.then_some(final_snap.offset_dups),
        unclosed_at_exit: unclosed,
        exit_code,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Report {
        tool: format!("hubcast-loadtest {}", env!("CARGO_PKG_VERSION")),
        setup: Setup {
            url: cfg.sub_targets.joined(),
            urls: cfg
                .sub_targets
                .as_slice()
                .iter()
                .map(|t| t.url.clone())
                .collect(),
            publish_via: match &cfg.publish {
                PublishVia::WebSocket(_) => "websocket".into(),
                PublishVia::Http { .. } => "http".into(),
            },
            publish_url: match &cfg.publish {
                PublishVia::WebSocket(t) | PublishVia::Http { target: t, .. } => t.url.clone(),
            },
            subs: cfg.subs,
            pubs: cfg.pubs,
            size: cfg.size,
            frame: if cfg.binary { "binary" } else { "text" }.into(),
            threads,
            duration_s: secs(cfg.duration),
            drain_s: secs(cfg.drain),
            slo_p99_ms: cfg.slo.as_secs_f64() * 1000.0,
            min_send_ratio: cfg.min_send_ratio,
            rates: match &cfg.mode {
                Mode::Steps(r) => r.clone(),
                Mode::Recover(r) => vec![r.rate],
                Mode::Idle(_) => Vec::new(),
            },
            protocol: cfg.protocol.name().into(),
            deflate: cfg.deflate,
            payload: match cfg.filler {
                Filler::Dots => "dots",
                Filler::Json => "json",
            }
            .into(),
            recover: match &cfg.mode {
                Mode::Recover(r) => Some(r.messages),
                _ => None,
            },
            src_addrs: sources.len(),
            nofile_limit: nofile,
        },
        connect,
        server: server_report,
        client: ClientReport {
            threads,
            cpus,
            rss_after_connect_bytes: client_rss_after_connect,
            cpu_s: secs(cpu_total),
            saturated_any_step: steps.iter().any(|s| s.client.saturated),
        },
        idle,
        recovery,
        steps,
        summary,
    })
}

/// The recovery scenario after the first connect: wait for every first
/// subscribe's reply, disconnect everyone, publish N messages, reconnect
/// everyone at once with `since`, wait until each is live (or stuck), and
/// sum up. `pub_conns`: publisher connections up.
fn run_recovery(
    cfg: &Config,
    rec: &Recover,
    fleet: &Fleet,
    progress: &mut Progress,
    pub_conns: u64,
) -> Result<RecoveryReport> {
    let threads = fleet.workers.len();
    let subs = cfg.subs as u64;
    let indices = |i: usize| (i..cfg.subs).step_by(threads).collect::<Vec<_>>();

    // Every first subscribe answered (failed connects count as answered).
    progress.begin("subscribing".into(), subs, BAR_WIDTH, false);
    fleet.wait_until(
        cfg.connect_timeout,
        |f| f.sum(|l| &l.rec_subscribed) >= subs,
        |f, _| {
            let n = f.sum(|l| &l.rec_subscribed);
            progress.show(n, || format!("{n}/{subs} subscribe replies"));
        },
    );

    // Everyone goes away; the server must have seen them go before publishing.
    progress.begin("disconnecting".into(), subs, BAR_WIDTH, false);
    fleet.ask(|_, reply| Some(Cmd::CloseSubs { reply }), |_| {})?;
    fleet.wait_until(
        CLOSE_GRACE,
        |f| f.sum(|l| &l.subs_connected) == 0,
        |f, _| {
            let n = f.sum(|l| &l.subs_connected);
            progress.show(subs.saturating_sub(n), || format!("{n} still connected"));
        },
    );
    let not_disconnected = fleet.sum(|l| &l.subs_connected);

    // Publish N while they are away, and wait until the server has them all.
    let before = fleet.snapshot()?;
    fleet.ask(|_, reply| Some(Cmd::OpenStep { step: 0, reply }), |_| {})?;
    let window = Duration::from_secs_f64(rec.messages as f64 / rec.rate as f64);
    let shares = pacing::split(rec.messages, cfg.pubs);
    let start = Instant::now() + STEP_LEAD;
    progress.begin("publishing".into(), ms(window), BAR_WIDTH, false);
    let sends: Vec<StepSend> = fleet.ask(
        |i, reply| {
            let totals = thread_share(&shares, threads, i);
            Some(Cmd::Step {
                step: 0,
                start,
                window,
                totals,
                reply,
            })
        },
        |f| {
            let sent = f.sum(|l| &l.sent);
            progress.show(ms(start.elapsed().min(window)), || {
                format!("{sent}/{} published while away", rec.messages)
            });
        },
    )?;
    let sent: u64 = sends.iter().map(|s| s.sent).sum();
    let http = matches!(cfg.publish, PublishVia::Http { .. });
    // HTTP: every request answered; WebSocket: every publisher connection has
    // its echo of every message (the server has sequenced them all).
    fleet.wait_until(
        cfg.drain.max(Duration::from_secs(1)),
        |f| match f.snapshot() {
            Ok(snap) if http => {
                let s = snap.send.first().cloned().unwrap_or_default();
                s.accepted + s.rejected + s.unanswered >= sent
            }
            Ok(snap) => snap.pub_received.saturating_sub(before.pub_received) >= sent * pub_conns,
            Err(_) => false,
        },
        |_, _| {},
    );
    let missed = fleet.snapshot()?.send.first().map_or(0, |s| s.accepted);

    // Everyone back at once, each with its position.
    let reconnect_start = Instant::now();
    let recv_before = fleet.sum(|l| &l.received);
    progress.begin("reconnecting".into(), subs, BAR_WIDTH, false);
    let per_thread_conc = if cfg.connect_concurrency == 0 {
        usize::MAX
    } else {
        cfg.connect_concurrency.div_ceil(threads)
    };
    let tallies = fleet.ask(
        |i, reply| {
            Some(Cmd::ConnectSubs {
                phase: SubPhase::RecReconnect { missed },
                indices: indices(i),
                rate: 0.0,
                concurrency: per_thread_conc,
                reply,
            })
        },
        |f| {
            let up = f.sum(|l| &l.subs_connected);
            let live = f.sum(|l| &l.rec_settled);
            progress.show(up, || format!("{up}/{subs} reconnected, {live} settled"));
        },
    )?;
    let reconnect_s = secs(reconnect_start.elapsed());
    let mut tally = ConnectTally::default();
    for t in &tallies {
        tally.merge(t);
    }
    let attempts = tally.ok + tally.failed.total();

    // Until every subscriber is live (or known not to become live), or nothing
    // arrives any more.
    let stall = cfg.drain.max(Duration::from_secs(1));
    let cap = cfg.connect_timeout + stall + Duration::from_secs(60);
    let mut last = (fleet.sum(|l| &l.received), Instant::now());
    progress.begin("recovering".into(), attempts, BAR_WIDTH, true);
    fleet.wait_until(
        cap,
        |f| {
            let recv = f.sum(|l| &l.received);
            if recv != last.0 {
                last = (recv, Instant::now());
            }
            f.sum(|l| &l.rec_settled) >= attempts || last.1.elapsed() >= stall
        },
        |f, _| {
            let settled = f.sum(|l| &l.rec_settled);
            progress.show(settled, || {
                format!(
                    "{settled}/{attempts} settled, {} pushes",
                    f.sum(|l| &l.received) - recv_before
                )
            });
        },
    );
    // Anything late (repeats, offsets beyond the range) still counts.
    progress.begin("draining".into(), ms(cfg.drain), BAR_WIDTH / 2, true);
    fleet.sleep(cfg.drain, |_, e| progress.show(ms(e), String::new));
    progress.done();

    let mut slots: Vec<recovery::Slot> = fleet
        .ask(|_, reply| Some(Cmd::RecoverySlots { reply }), |_| {})?
        .into_iter()
        .flatten()
        .collect();
    slots.sort_by_key(|s| s.index);
    Ok(recovery::summarize(
        RunFacts {
            topic: rec.topic.clone(),
            messages: rec.messages,
            rate: rec.rate,
            published: sent,
            missed,
            subscribers: cfg.subs,
            not_disconnected,
            reconnected: tally.ok,
            reconnect_failures: tally.failed,
            reconnect_s,
        },
        &slots,
    ))
}

#[allow(clippy::too_many_arguments)]
fn run_step(
    cfg: &Config,
    fleet: &Fleet,
    server: &mut ServerProbe,
    progress: &mut Progress,
    step: u8,
    rate: u64,
    n_steps: usize,
    prev: &ThreadStats,
    epoch: Instant,
) -> Result<(StepReport, ThreadStats)> {
    let k = usize::from(step);
    let threads = fleet.workers.len();
    let window = cfg.duration;
    let target_msgs = pacing::step_total(rate, window);
    let shares = pacing::split(target_msgs, cfg.pubs);

    // Receive slots must exist on every thread before any message of the step does.
    fleet.ask(|_, reply| Some(Cmd::OpenStep { step, reply }), |_| {})?;

    let subs = fleet.sum(|l| &l.subs_connected);
    let sent_before = fleet.sum(|l| &l.sent);
    let recv_before = fleet.sum(|l| &l.received);
    let wire_before = fleet.sum(|l| &l.wire_bytes);
    let compressed_before = fleet.sum(|l| &l.compressed);
    let cpu0 = procfs::process_cpu();
    let th0 = fleet.thread_cpu_ns();
    let m0 = procfs::machine_cpu();
    let srv0 = server.sample()?;
    let start = Instant::now() + STEP_LEAD;
    let start_ns = ns_since(epoch, start);
    let label = format!("step {}/{} @ {}/s", k + 1, n_steps, rate);

    progress.begin(label.clone(), ms(window), BAR_WIDTH, false);
    let sends: Vec<StepSend> = fleet.ask(
        |i, reply| {
            let totals = thread_share(&shares, threads, i);
            Some(Cmd::Step {
                step,
                start,
                window,
                totals,
                reply,
            })
        },
        |f| {
            let elapsed = start.elapsed();
            progress.show(ms(elapsed.min(window)), || {
                let e = elapsed.as_secs_f64().max(1e-9);
                let sent = f.sum(|l| &l.sent) - sent_before;
                let recv = f.sum(|l| &l.received) - recv_before;
                format!(
                    "{:.1}/{:.0} s  sent {} ({:.0}/s)  received {} ({:.0}/s)  subs {}  disconnects {}",
                    e.min(window.as_secs_f64()),
                    window.as_secs_f64(),
                    sent,
                    sent as f64 / e,
                    recv,
                    recv as f64 / e,
                    f.sum(|l| &l.subs_connected),
                    f.sum(|l| &l.disconnects),
                )
            })
        },
    )?;
    let send_end = Instant::now();
    let send_wall = send_end.saturating_duration_since(start).max(window);
    let cpu1 = procfs::process_cpu();
    let th1 = fleet.thread_cpu_ns();
    let m1 = procfs::machine_cpu();
    let srv1 = server.sample()?;

    progress.begin(label, ms(cfg.drain), BAR_WIDTH / 2, true);
    fleet.sleep(cfg.drain, |f, e| {
        progress.show(ms(e), || {
            format!(
                "draining {:.1}/{:.1} s  received {}",
                e.as_secs_f64(),
                cfg.drain.as_secs_f64(),
                f.sum(|l| &l.received) - recv_before
            )
        })
    });
    progress.done();
    let snap = fleet.snapshot()?;
    let wire_bytes = fleet.sum(|l| &l.wire_bytes) - wire_before;
    let subscriber_msgs = fleet.sum(|l| &l.received) - recv_before;
    let compressed = fleet.sum(|l| &l.compressed) - compressed_before;
    let cpu2 = procfs::process_cpu();
    let srv2 = server.sample()?;

    let mut send = StepSend::default();
    for s in &sends {
        send.merge(s);
    }
    // HTTP acceptance arrives after the window: take it from the post-drain snapshot.
    let snap_send = snap.send.get(k).cloned().unwrap_or_default();
    let accepted = snap_send.accepted;
    let recv = snap
        .recv
        .get(k)
        .and_then(Option::as_ref)
        .cloned()
        .unwrap_or_else(StepRecv::new);
    let expected = accepted.saturating_mul(subs);
    let lost = expected.saturating_sub(recv.unique);
    let unexpected = recv.unique.saturating_sub(expected);
    let latency = LatencySummary::from_histogram(&recv.latency);
    let deliveries_per_sec = if recv.last_recv_ns > start_ns && recv.unique > 0 {
        recv.unique as f64 / ((recv.last_recv_ns - start_ns) as f64 / 1e9)
    } else {
        0.0
    };
    let disconnects = snap.sub_disconnects.since(&prev.sub_disconnects);
    let pub_disconnects = snap.pub_disconnects.since(&prev.pub_disconnects);
    let pub_echo = snap.pub_received.saturating_sub(prev.pub_received);

    // Client CPU.
    let wall_send = secs(send_wall).max(1e-9);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let usable = threads.min(cpus).max(1) as f64;
    let cpu_send = secs(cpu1.saturating_sub(cpu0));
    let cpu_all = secs(cpu2.saturating_sub(cpu0));
    let busiest = th0
        .iter()
        .zip(&th1)
        .map(|(a, b)| b.saturating_sub(*a) as f64 / 1e9 / wall_send)
        .fold(0.0, f64::max);
    let utilisation = cpu_send / wall_send / usable;
    let msgs_in = recv.received + pub_echo;
    let client = ClientStep {
        cpu_s: cpu_all,
        cpu_ns_per_msg: if msgs_in > 0 {
            cpu_all * 1e9 / msgs_in as f64
        } else {
            0.0
        },
        utilisation,
        busiest_thread: busiest,
        saturated: utilisation >= 0.9 || busiest >= 0.95,
        machine_busy: match (m0, m1) {
            (Some(a), Some(b)) => b.busy_since(&a),
            _ => 0.0,
        },
    };
    let server_step = match (&srv0, &srv1, &srv2) {
        (Some(a), Some(b), Some(c)) => Some(server_step(&server.pids, a, b, c, msgs_in, wall_send)),
        _ => None,
    };
    let http = matches!(cfg.publish, PublishVia::Http { .. }).then(|| HttpStep {
        status: snap_send.http_status.clone(),
        rejected: snap_send.rejected,
        unanswered: snap_send.unanswered,
    });

    // Publishers may finish a backlog shortly after the window: rate over the real span.
    let send_span = (send.last_send_ns.saturating_sub(start_ns) as f64 / 1e9).max(secs(window));
    let achieved_rate = send.sent as f64 / send_span.max(1e-9);
    let send_ratio = if rate > 0 {
        achieved_rate / rate as f64
    } else {
        1.0
    };
    let loss_pct = if expected > 0 {
        lost as f64 * 100.0 / expected as f64
    } else {
        0.0
    };

    let mut failures = Vec::new();
    if subs < cfg.subs as u64 {
        failures.push(format!(
            "only {subs} of {} subscribers connected at the start",
            cfg.subs
        ));
    }
    if lost > 0 {
        failures.push(format!(
            "lost {lost} of {expected} deliveries ({loss_pct:.4}%)"
        ));
    }
    if unexpected > 0 {
        failures.push(format!("{unexpected} deliveries more than expected"));
    }
    if recv.duplicates > 0 {
        failures.push(format!("{} duplicates", recv.duplicates));
    }
    let v1 = cfg.protocol == Protocol::V1;
    if v1 && recv.offset_gaps + recv.offset_dups > 0 {
        failures.push(format!(
            "offsets: {} skipped, {} repeated or backwards",
            recv.offset_gaps, recv.offset_dups
        ));
    }
    if recv.reorders + recv.stale > 0 {
        failures.push(format!(
            "{} reordered ({} beyond the {}-message window)",
            recv.reorders + recv.stale,
            recv.stale,
            crate::stats::REORDER_WINDOW
        ));
    }
    let disc = disconnects.total() + pub_disconnects.total();
    if disc > 0 {
        failures.push(format!("{disc} disconnects"));
    }
    if latency.p99_us > cfg.slo.as_secs_f64() * 1e6 {
        failures.push(format!(
            "p99 {:.2} ms > SLO {:.2} ms",
            latency.p99_us / 1000.0,
            cfg.slo.as_secs_f64() * 1000.0
        ));
    }
    if send_ratio < cfg.min_send_ratio {
        failures.push(format!(
            "sent {:.1}% of the target rate (< {:.0}%)",
            send_ratio * 100.0,
            cfg.min_send_ratio * 100.0
        ));
    }
    if snap_send.rejected > 0 {
        failures.push(format!("{} HTTP publishes rejected", snap_send.rejected));
    }
    if snap_send.unanswered > 0 {
        failures.push(format!(
            "{} HTTP publishes unanswered",
            snap_send.unanswered
        ));
    }

    let report = StepReport {
        step: k,
        target_rate: rate,
        target_msgs,
        sent: send.sent,
        accepted,
        achieved_rate,
        send_ratio,
        max_backlog: send.max_backlog,
        subs,
        expected,
        received: recv.received,
        unique: recv.unique,
        lost,
        loss_pct,
        unexpected,
        duplicates: recv.duplicates,
        reorders: recv.reorders,
        stale: recv.stale,
        offset_gaps: v1.then_some(recv.offset_gaps),
        offset_dups: v1.then_some(recv.offset_dups),
        late_after_drain: 0,
        wire_bytes,
        wire_bytes_per_msg: if subscriber_msgs > 0 {
            wire_bytes as f64 / subscriber_msgs as f64
        } else {
            0.0
        },
        compressed,
        deliveries_per_sec,
        latency,
        disconnects,
        pub_disconnects,
        http,
        client,
        server: server_step,
        pass: failures.is_empty(),
        failures,
    };
    Ok((report, snap))
}

/// Runs and returns the report, with context on failure (library entry point).
pub fn run_config(cfg: &Config) -> Result<Report> {
    run(cfg, false).context("load test failed")
}

/// The publishers (id, messages) of `shares` that worker thread `i` of `threads` runs.
fn thread_share(shares: &[u64], threads: usize, i: usize) -> Vec<(u16, u64)> {
    shares
        .iter()
        .enumerate()
        .filter(|(id, _)| id % threads == i)
        .filter_map(|(id, n)| u16::try_from(id).ok().map(|id| (id, *n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_templates_parse() {
        for spinner in [false, true] {
            let t = bar_template(12, spinner);
            assert!(ProgressStyle::with_template(&t).is_ok(), "{t}");
        }
        assert_eq!(
            bar_template(30, true),
            "{prefix:.bold} {spinner} [{bar:30.cyan/blue}] {wide_msg}"
        );
    }

    #[test]
    fn quiet_means_off() {
        assert_eq!(ProgressMode::detect(true, false), ProgressMode::Off);
        assert_eq!(ProgressMode::detect(true, true), ProgressMode::Off);
        assert_eq!(ProgressMode::detect(false, true), ProgressMode::Lines);
    }

    fn proc(user_ms: u64, system_ms: u64, rss: u64) -> ProcSample {
        ProcSample {
            cpu_ns: (user_ms + system_ms) * 1_000_000,
            user_ns: user_ms * 1_000_000,
            system_ns: system_ms * 1_000_000,
            rss_bytes: rss,
            hwm_bytes: rss,
            threads: 2,
        }
    }

    #[test]
    fn server_step_sums_pids_and_keeps_each() {
        let pids = [10, 20];
        let a = ServerSample::new(vec![proc(100, 50, 1000), proc(0, 0, 500)]);
        let b = ServerSample::new(vec![proc(600, 250, 1100), proc(200, 100, 600)]);
        let c = ServerSample::new(vec![proc(700, 300, 1200), proc(300, 100, 700)]);
        assert_eq!(
            (
                c.total.user_ns,
                c.total.system_ns,
                c.total.cpu_ns,
                c.total.rss_bytes
            ),
            (1_000_000_000, 400_000_000, 1_400_000_000, 1900)
        );
        assert_eq!(c.total.threads, 4);
        let st = server_step(&pids, &a, &b, &c, 1_000_000, 2.0);
        assert!((st.user_s - 0.9).abs() < 1e-9, "{}", st.user_s);
        assert!((st.system_s - 0.35).abs() < 1e-9);
        assert!((st.cpu_s - 1.25).abs() < 1e-9);
        // Sending window: 700 + 300 ms of CPU in 2 s.
        assert!((st.cores_during_send - 0.5).abs() < 1e-9);
        // 1.25 s / 1e6 deliveries = 1250 ns.
        assert!((st.cpu_ns_per_delivery - 1250.0).abs() < 1e-6);
        assert_eq!(st.rss_bytes, 1900);
        assert_eq!(st.processes.len(), 2);
        let (p, q) = (&st.processes[0], &st.processes[1]);
        assert_eq!((p.pid, q.pid), (10, 20));
        assert!((p.user_s - 0.6).abs() < 1e-9 && (p.system_s - 0.25).abs() < 1e-9);
        assert!((q.user_s - 0.3).abs() < 1e-9 && (q.system_s - 0.1).abs() < 1e-9);
        assert!((p.cpu_ns_per_delivery - 850.0).abs() < 1e-6);
        assert!((q.cpu_ns_per_delivery - 400.0).abs() < 1e-6);
        assert!(
            (p.cpu_ns_per_delivery + q.cpu_ns_per_delivery - st.cpu_ns_per_delivery).abs() < 1e-6
        );
        assert_eq!((p.rss_bytes, q.rss_bytes), (1200, 700));
        assert!((p.cores_during_send - 0.35).abs() < 1e-9);
        // No deliveries: no per-delivery figure rather than a division by zero.
        let st = server_step(&pids, &a, &b, &c, 0, 2.0);
        assert_eq!(st.cpu_ns_per_delivery, 0.0);
        assert!(st.processes.iter().all(|p| p.cpu_ns_per_delivery == 0.0));
    }

    #[test]
    fn server_report_sums_pids_and_keeps_each() {
        let mut probe = ServerProbe::new(&[7, 8, 9]);
        assert_eq!(probe.peaks, vec![0, 0, 0]);
        let before = ServerSample::new(vec![
            proc(10, 10, 1 << 20),
            proc(0, 0, 2 << 20),
            proc(5, 0, 1 << 20),
        ]);
        let after = ServerSample::new(vec![
            proc(20, 30, 2 << 20),
            proc(10, 0, 3 << 20),
            proc(5, 0, 1 << 20),
        ]);
        let end = ServerSample::new(vec![
            proc(120, 40, 3 << 20),
            proc(60, 20, 2 << 20),
            proc(5, 5, 1 << 20),
        ]);
        probe.peak = 7 << 20;
        probe.peaks = vec![3 << 20, 3 << 20, 1 << 20];
        let r = server_report(&probe, &before, &after, &end, 1024);
        assert_eq!(r.pid, 7);
        assert_eq!(r.pids, vec![7, 8, 9]);
        assert_eq!(r.before.rss_bytes, 4 << 20);
        assert_eq!(r.after_connect.rss_bytes, 6 << 20);
        // (6 MiB − 4 MiB) / 1024 connections.
        assert!((r.rss_per_conn_bytes - 2048.0).abs() < 1e-9);
        assert_eq!(r.peak_rss_bytes, 7 << 20);
        assert!((r.user_s - 0.170).abs() < 1e-9, "{}", r.user_s);
        assert!((r.system_s - 0.055).abs() < 1e-9, "{}", r.system_s);
        assert!((r.cpu_s - 0.225).abs() < 1e-9);
        assert_eq!(r.processes.len(), 3);
        let p = &r.processes[1];
        assert_eq!(p.pid, 8);
        assert!((p.user_s - 0.06).abs() < 1e-9 && (p.system_s - 0.02).abs() < 1e-9);
        assert_eq!(p.end.rss_bytes, 2 << 20);
        assert_eq!(p.peak_rss_bytes, 3 << 20);
        let sum: f64 = r.processes.iter().map(|p| p.cpu_s).sum();
        assert!((sum - r.cpu_s).abs() < 1e-9);
    }

    #[test]
    fn probe_without_pids_samples_nothing_and_with_pids_tracks_peaks() {
        let mut none = ServerProbe::new(&[]);
        assert_eq!(none.sample().expect("no pids"), None);
        let me = std::process::id();
        let mut probe = ServerProbe::new(&[me, me]);
        let s = probe.sample().expect("self").expect("sampled");
        assert_eq!(s.each.len(), 2);
        assert_eq!(s.total.rss_bytes, s.each[0].rss_bytes + s.each[1].rss_bytes);
        assert!(probe.peak >= s.total.rss_bytes && probe.peaks.iter().all(|p| *p > 0));
        let mut gone = ServerProbe::new(&[me, u32::MAX]);
        assert!(gone.sample().is_err());
    }

    #[test]
    fn per_url_connect_counts() {
        use clap::Parser;
        let cfg = crate::cli::Args::try_parse_from([
            "x",
            "--url=ws://127.0.0.1:1/a,ws://127.0.0.1:2/b,ws://127.0.0.1:3/c",
            "--subs=10",
        ])
        .expect("flags")
        .into_config()
        .expect("config");
        let mut tally = ConnectTally::default();
        for i in 0..10 {
            tally.count_target(cfg.sub_targets.index_for(i), i != 4);
        }
        let per = per_url_connects(&cfg, &tally);
        let got: Vec<(&str, usize, u64, u64)> = per
            .iter()
            .map(|u| (u.url.as_str(), u.requested, u.connected, u.failed))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ws://127.0.0.1:1/a", 4, 4, 0),
                ("ws://127.0.0.1:2/b", 3, 2, 1),
                ("ws://127.0.0.1:3/c", 3, 3, 0),
            ]
        );
        // No attempts recorded (e.g. zero subscribers): zeros, one row per URL.
        let per = per_url_connects(&cfg, &ConnectTally::default());
        assert_eq!(per.len(), 3);
        assert!(per.iter().all(|u| u.connected == 0 && u.failed == 0));
    }

    #[test]
    fn off_progress_prints_nothing_and_keeps_no_bar() {
        let mut p = Progress::new(ProgressMode::Off);
        p.begin("x".into(), 10, 10, false);
        assert!(p.bar.is_none());
        p.show(5, || unreachable!("message built while off"));
        p.done();
    }
}
