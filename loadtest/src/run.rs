//! The coordinator: phases of a run and the figures derived from them.
//!
//! Owns the sequence connect → (idle hold | steps) → close, driven from the
//! calling thread with blocking waits while the worker threads do the I/O:
//! distributing subscribers and publishers over threads, starting every step
//! at one shared instant, sampling client and server CPU/memory at step
//! boundaries, merging the threads' statistics after each drain, turning them
//! into [`StepReport`]s and deciding pass/fail, plus the progress line.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cli::{Config, Mode, PublishVia};
use crate::pacing;
use crate::procfs::{self, ProcSample};
use crate::report::{
    ClientReport, ClientStep, ConnectReport, HttpStep, IdleReport, Report, ServerReport,
    ServerStep, Setup, StepReport, Summary,
};
use crate::stats::{LatencySummary, StepRecv, StepSend, ThreadStats};
use crate::target::SourcePlan;
use crate::worker::{Cmd, ConnectTally, Live, Params, Worker, ns_since};

/// Time allowed for the close handshake at exit.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// Lead time between scheduling a step and its start, so all threads start together.
const STEP_LEAD: Duration = Duration::from_millis(50);

/// Stderr progress line (overwritten in place on a terminal).
struct Progress {
    enabled: bool,
    tty: bool,
    last: Instant,
    every: Duration,
    dirty: bool,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            enabled,
            tty,
            last: Instant::now() - Duration::from_secs(60),
            every: if tty {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(5)
            },
            dirty: false,
        }
    }

    fn show(&mut self, line: impl FnOnce() -> String) {
        if !self.enabled || self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{}", line());
            self.dirty = true;
        } else {
            let _ = writeln!(err, "{}", line());
        }
        let _ = err.flush();
    }

    fn done(&mut self) {
        if self.dirty {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.dirty = false;
        }
        self.last = Instant::now() - Duration::from_secs(60);
    }
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

struct ServerProbe {
    pid: Option<u32>,
    peak: u64,
}

impl ServerProbe {
    fn sample(&mut self) -> Result<Option<ProcSample>> {
        let Some(pid) = self.pid else {
            return Ok(None);
        };
        let s = procfs::sample(pid)?;
        self.peak = self.peak.max(s.rss_bytes);
        Ok(Some(s))
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs the load test described by `cfg`. `show_progress` enables the stderr line.
pub fn run(cfg: &Config, show_progress: bool) -> Result<Report> {
    let mut progress = Progress::new(show_progress);
    let (nofile, _hard) = procfs::raise_nofile_limit()?;
    let ws_pubs = match (&cfg.mode, &cfg.publish) {
        (Mode::Steps(_), PublishVia::WebSocket(_)) => cfg.pubs,
        _ => 0,
    };
    let http_pubs = match (&cfg.mode, &cfg.publish) {
        (Mode::Steps(_), PublishVia::Http { .. }) => cfg.pubs,
        _ => 0,
    };
    let conns = cfg.subs + ws_pubs + http_pubs;
    if (conns as u64) + 64 > nofile {
        eprintln!(
            "warning: {conns} connections need more file descriptors than RLIMIT_NOFILE ({nofile}); \
             expect 'Too many open files' failures"
        );
    }
    let sources = SourcePlan::new(
        &cfg.sub_target,
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
    let mut server = ServerProbe {
        pid: cfg.server_pid,
        peak: 0,
    };
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
    let tallies = fleet.ask(
        |i, reply| {
            Some(Cmd::ConnectSubs {
                indices: (i..subs_total).step_by(threads).collect(),
                rate: per_thread_rate,
                concurrency: per_thread_conc,
                reply,
            })
        },
        |f| {
            progress.show(|| {
                format!(
                    "connecting: {}/{} up, {} failed, {:.1} s",
                    f.sum(|l| &l.subs_connected),
                    subs_total,
                    f.sum(|l| &l.subs_failed),
                    connect_start.elapsed().as_secs_f64()
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
    };

    let mut steps: Vec<StepReport> = Vec::new();
    let mut idle: Option<IdleReport> = None;
    let baseline = fleet.snapshot()?;

    match &cfg.mode {
        Mode::Idle(hold) => {
            let hold = *hold;
            fleet.sleep(hold, |f, e| {
                let _ = server.sample();
                progress.show(|| {
                    format!(
                        "idle {:.0}/{:.0} s: {} subscribers held, {} disconnects",
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
            let server_per_conn = match (server_before, end_sample) {
                (Some(b), Some(e)) if held > 0 => {
                    Some((e.rss_bytes as f64 - b.rss_bytes as f64) / held as f64)
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

    let server_report = match (
        cfg.server_pid,
        server_before,
        server_after_connect,
        server_end,
    ) {
        (Some(pid), Some(before), Some(after), Some(end)) => Some(ServerReport {
            pid,
            before,
            after_connect: after,
            end,
            rss_per_conn_bytes: if sub_tally.ok > 0 {
                (after.rss_bytes as f64 - before.rss_bytes as f64) / sub_tally.ok as f64
            } else {
                0.0
            },
            peak_rss_bytes: server.peak,
        }),
        _ => None,
    };

    let passed: Vec<&StepReport> = steps.iter().filter(|s| s.pass).collect();
    let best = passed.iter().max_by_key(|s| s.target_rate);
    let exit_code = match (&cfg.mode, &idle) {
        (Mode::Idle(_), Some(i)) => {
            i32::from(!(i.held == cfg.subs as u64 && i.disconnects.total() == 0))
        }
        _ => i32::from(passed.is_empty()),
    };
    let summary = Summary {
        steps_run: steps.len(),
        steps_passed: passed.len(),
        highest_sustained_rate: best.map(|s| s.target_rate),
        deliveries_per_sec_at_highest: best.map(|s| s.deliveries_per_sec),
        foreign_messages: final_snap.foreign,
        publisher_received: final_snap.pub_received,
        http_reconnects: final_snap.http_reconnects,
        unclosed_at_exit: unclosed,
        exit_code,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Report {
        tool: format!("hubcast-loadtest {}", env!("CARGO_PKG_VERSION")),
        setup: Setup {
            url: cfg.sub_target.url.clone(),
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
                Mode::Idle(_) => Vec::new(),
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
        steps,
        summary,
    })
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
    let cpu0 = procfs::process_cpu();
    let th0 = fleet.thread_cpu_ns();
    let m0 = procfs::machine_cpu();
    let srv0 = server.sample()?;
    let start = Instant::now() + STEP_LEAD;
    let start_ns = ns_since(epoch, start);

    let sends: Vec<StepSend> = fleet.ask(
        |i, reply| {
            let totals: Vec<(u16, u64)> = shares
                .iter()
                .enumerate()
                .filter(|(id, _)| id % threads == i)
                .filter_map(|(id, n)| u16::try_from(id).ok().map(|id| (id, *n)))
                .collect();
            Some(Cmd::Step {
                step,
                start,
                window,
                totals,
                reply,
            })
        },
        |f| {
            progress.show(|| {
                let e = start.elapsed().as_secs_f64().max(1e-9);
                let sent = f.sum(|l| &l.sent) - sent_before;
                let recv = f.sum(|l| &l.received) - recv_before;
                format!(
                    "step {}/{} @ {}/s: {:.1}/{:.0} s  sent {} ({:.0}/s)  received {} ({:.0}/s)  subs {}  disconnects {}",
                    k + 1,
                    n_steps,
                    rate,
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

    fleet.sleep(cfg.drain, |f, e| {
        progress.show(|| {
            format!(
                "step {}/{} @ {}/s: draining {:.1}/{:.1} s  received {}",
                k + 1,
                n_steps,
                rate,
                e.as_secs_f64(),
                cfg.drain.as_secs_f64(),
                f.sum(|l| &l.received) - recv_before
            )
        })
    });
    progress.done();
    let snap = fleet.snapshot()?;
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
    let server_step = match (srv0, srv1, srv2) {
        (Some(a), Some(b), Some(c)) => {
            let cpu = c.cpu_ns.saturating_sub(a.cpu_ns);
            Some(ServerStep {
                cpu_s: cpu as f64 / 1e9,
                cores_during_send: b.cpu_ns.saturating_sub(a.cpu_ns) as f64 / 1e9 / wall_send,
                cpu_ns_per_delivery: if msgs_in > 0 {
                    cpu as f64 / msgs_in as f64
                } else {
                    0.0
                },
                rss_bytes: c.rss_bytes,
            })
        }
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
        late_after_drain: 0,
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
