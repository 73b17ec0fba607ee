//! The results: one serialisable structure, printed as a table or as JSON.
//!
//! Owns the shape of every published figure (per step, connect phase, server
//! and client resources, summary) and both renderings: `--json` prints the
//! structure as one JSON object; otherwise a human table goes to stdout.
//! Figures are computed by `run`; this module only formats them.

use std::io::{self, Write};

use serde::Serialize;

use crate::procfs::ProcSample;
use crate::recovery::RecoveryReport;
use crate::stats::{Disconnects, LatencySummary, Tally};

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Tool name and version.
    pub tool: String,
    /// What was run.
    pub setup: Setup,
    /// Connecting the subscribers (and publishers).
    pub connect: ConnectReport,
    /// Server process figures (with `--server-pid`): totals over every PID,
    /// and each PID's own figures.
    pub server: Option<ServerReport>,
    /// This process.
    pub client: ClientReport,
    /// Idle mode result.
    pub idle: Option<IdleReport>,
    /// Recovery scenario result (`--recover`).
    pub recovery: Option<RecoveryReport>,
    /// One entry per step run.
    pub steps: Vec<StepReport>,
    /// Verdict.
    pub summary: Summary,
}

/// The configuration, echoed.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Subscriber URL; several are comma-joined (as `--url` takes them).
    pub url: String,
    /// Subscriber URLs, in order (subscriber `i` used `urls[i % urls.len()]`).
    pub urls: Vec<String>,
    /// "websocket" or "http".
    pub publish_via: String,
    /// Publisher URL.
    pub publish_url: String,
    /// Subscribers requested.
    pub subs: usize,
    /// Publishers.
    pub pubs: usize,
    /// Payload bytes.
    pub size: usize,
    /// "text" or "binary".
    pub frame: String,
    /// Worker threads.
    pub threads: usize,
    /// Sending window per step, s.
    pub duration_s: f64,
    /// Drain per step, s.
    pub drain_s: f64,
    /// p99 SLO, ms.
    pub slo_p99_ms: f64,
    /// Minimum achieved/target send ratio.
    pub min_send_ratio: f64,
    /// Requested rates (msgs/s); empty in idle mode.
    pub rates: Vec<u64>,
    /// Source addresses used (0 = kernel's choice).
    pub src_addrs: usize,
    /// RLIMIT_NOFILE soft limit after raising.
    pub nofile_limit: u64,
    /// What subscribers speak: "plain" or "v1".
    pub protocol: String,
    /// `--recover N` (messages missed in the recovery scenario), if given.
    pub recover: Option<u64>,
    /// `--deflate`: subscribers negotiated permessage-deflate.
    pub deflate: bool,
    /// `--payload`: what pads plain payloads (`dots` or `json`).
    pub payload: String,
}

/// The connect phase.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    /// Subscribers requested.
    pub requested: usize,
    /// Subscribers connected.
    pub connected: u64,
    /// Subscriber attempts that failed.
    pub failed: u64,
    /// Failure reasons with counts.
    pub failures: Tally<String>,
    /// Time to finish all subscriber attempts, s.
    pub seconds: f64,
    /// Connected subscribers per second over that time.
    pub per_sec: f64,
    /// `--connect-rate` (0 = unlimited).
    pub rate_limit: f64,
    /// Connect + handshake time per subscriber, in µs.
    pub handshake: LatencySummary,
    /// Publisher connections established.
    pub pubs_connected: u64,
    /// Publisher connection failures.
    pub pub_failures: Tally<String>,
    /// Subscribers per URL of the list, in its order.
    pub per_url: Vec<UrlConnect>,
}

/// The connect phase of one subscriber URL.
#[derive(Debug, Clone, Serialize)]
pub struct UrlConnect {
    /// The URL.
    pub url: String,
    /// Subscribers dealt to it (round-robin).
    pub requested: usize,
    /// Of those, connected.
    pub connected: u64,
    /// Of those, failed.
    pub failed: u64,
}

/// Server process figures. With several `--server-pid`s every figure here is
/// the sum over all of them; `processes` has each one's own.
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    /// The (first) PID sampled; all of them are in `pids`.
    pub pid: u32,
    /// Every PID sampled, in the order given.
    pub pids: Vec<u32>,
    /// Before connecting (sum over the PIDs).
    pub before: ProcSample,
    /// Right after all subscribers connected (sum over the PIDs).
    pub after_connect: ProcSample,
    /// At the end of the run (sum over the PIDs).
    pub end: ProcSample,
    /// (RSS after connect − RSS before) / connected subscribers, bytes (summed RSS).
    pub rss_per_conn_bytes: f64,
    /// Highest summed RSS sampled, bytes.
    pub peak_rss_bytes: u64,
    /// CPU time (user + system) from before connecting to the end, s (all PIDs).
    pub cpu_s: f64,
    /// User CPU time over the same span, s (all PIDs).
    pub user_s: f64,
    /// System CPU time over the same span, s (all PIDs).
    pub system_s: f64,
    /// Each PID's figures, in the order given.
    pub processes: Vec<ServerProcess>,
}

/// One server process's figures over the run.
#[derive(Debug, Clone, Serialize)]
pub struct ServerProcess {
    /// The PID.
    pub pid: u32,
    /// Before connecting.
    pub before: ProcSample,
    /// Right after all subscribers connected.
    pub after_connect: ProcSample,
    /// At the end of the run.
    pub end: ProcSample,
    /// Highest RSS sampled, bytes.
    pub peak_rss_bytes: u64,
    /// CPU time (user + system) from before connecting to the end, s.
    pub cpu_s: f64,
    /// User CPU time over the same span, s.
    pub user_s: f64,
    /// System CPU time over the same span, s.
    pub system_s: f64,
}

/// This process.
#[derive(Debug, Clone, Serialize)]
pub struct ClientReport {
    /// Worker threads.
    pub threads: usize,
    /// CPUs available.
    pub cpus: usize,
    /// RSS after connecting, bytes.
    pub rss_after_connect_bytes: u64,
    /// CPU time of the whole run, s.
    pub cpu_s: f64,
    /// Whether any step found the client saturated.
    pub saturated_any_step: bool,
}

/// Idle mode result.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Hold time, s.
    pub seconds: f64,
    /// Subscribers still connected at the end.
    pub held: u64,
    /// Disconnects while holding.
    pub disconnects: Disconnects,
    /// Server RSS per connection at the end of the hold, bytes.
    pub server_rss_per_conn_bytes: Option<f64>,
    /// Client RSS per connection, bytes.
    pub client_rss_per_conn_bytes: f64,
}

/// One step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Step index (0-based).
    pub step: usize,
    /// Target rate, msgs/s.
    pub target_rate: u64,
    /// Messages the schedule called for.
    pub target_msgs: u64,
    /// Messages sent (written to sockets / requests written).
    pub sent: u64,
    /// Messages accepted (WebSocket: = sent; HTTP: 2xx).
    pub accepted: u64,
    /// sent / max(window, time to the last send), msgs/s.
    pub achieved_rate: f64,
    /// achieved_rate / target_rate.
    pub send_ratio: f64,
    /// Largest per-publisher backlog (due but unsent), msgs.
    pub max_backlog: u64,
    /// Subscribers connected when the step started.
    pub subs: u64,
    /// accepted × subs.
    pub expected: u64,
    /// Messages received by subscribers, duplicates included.
    pub received: u64,
    /// First arrivals.
    pub unique: u64,
    /// expected − unique (≥ 0).
    pub lost: u64,
    /// lost / expected, percent.
    pub loss_pct: f64,
    /// unique − expected (should be 0).
    pub unexpected: u64,
    /// Repeated arrivals.
    pub duplicates: u64,
    /// Late first arrivals.
    pub reorders: u64,
    /// Arrivals too far out of order to classify.
    pub stale: u64,
    /// Protocol v1: offsets skipped before this step's pushes (`null` for plain).
    pub offset_gaps: Option<u64>,
    /// Protocol v1: this step's pushes at or below an offset already seen (`null` for plain).
    pub offset_dups: Option<u64>,
    /// First arrivals that came after the drain (counted at the end of the run).
    pub late_after_drain: u64,
    /// Bytes subscribers read from their sockets over step + drain (frame headers,
    /// pings and compressed payloads as they were on the wire).
    pub wire_bytes: u64,
    /// `wire_bytes` per message subscribers received over step + drain.
    pub wire_bytes_per_msg: f64,
    /// Messages subscribers received compressed (permessage-deflate) over step + drain.
    pub compressed: u64,
    /// Unique deliveries per second (from step start to the last first arrival).
    pub deliveries_per_sec: f64,
    /// Send → receive latency of first arrivals, µs.
    pub latency: LatencySummary,
    /// Subscriber disconnects during the step and its drain.
    pub disconnects: Disconnects,
    /// Publisher disconnects during the step and its drain.
    pub pub_disconnects: Disconnects,
    /// HTTP publishing details.
    pub http: Option<HttpStep>,
    /// Client CPU.
    pub client: ClientStep,
    /// Server CPU (with `--server-pid`).
    pub server: Option<ServerStep>,
    /// Whether the server kept up.
    pub pass: bool,
    /// Why not.
    pub failures: Vec<String>,
}

/// HTTP publish figures of a step.
#[derive(Debug, Clone, Serialize)]
pub struct HttpStep {
    /// Status code counts.
    pub status: Tally<u16>,
    /// Non-2xx responses.
    pub rejected: u64,
    /// Requests without a response.
    pub unanswered: u64,
}

/// Client CPU figures of a step.
#[derive(Debug, Clone, Serialize)]
pub struct ClientStep {
    /// Process CPU over step + drain, s.
    pub cpu_s: f64,
    /// CPU per message received (subscribers + publisher echoes), ns.
    pub cpu_ns_per_msg: f64,
    /// Process CPU / (wall × usable cores) during the sending window.
    pub utilisation: f64,
    /// Busiest worker thread's CPU / wall during the sending window.
    pub busiest_thread: f64,
    /// utilisation ≥ 0.9 or busiest thread ≥ 0.95: the client, not the
    /// server, may be the bottleneck.
    pub saturated: bool,
    /// Whole-machine CPU busy fraction during the sending window (`/proc/stat`).
    pub machine_busy: f64,
}

/// Server CPU figures of a step: totals over every `--server-pid`, and each
/// PID's own figures in `processes`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStep {
    /// CPU (user + system) over step + drain, s (all PIDs).
    pub cpu_s: f64,
    /// User CPU over step + drain, s (all PIDs).
    pub user_s: f64,
    /// System CPU over step + drain, s (all PIDs).
    pub system_s: f64,
    /// Cores used during the sending window (all PIDs).
    pub cores_during_send: f64,
    /// CPU of all PIDs per delivery (subscriber + publisher-echo messages received), ns.
    pub cpu_ns_per_delivery: f64,
    /// RSS at the end of the drain, bytes (sum over the PIDs).
    pub rss_bytes: u64,
    /// Each PID's figures, in the order given.
    pub processes: Vec<ServerStepProcess>,
}

/// One server process's figures in a step.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStepProcess {
    /// The PID.
    pub pid: u32,
    /// CPU (user + system) over step + drain, s.
    pub cpu_s: f64,
    /// User CPU over step + drain, s.
    pub user_s: f64,
    /// System CPU over step + drain, s.
    pub system_s: f64,
    /// Cores used during the sending window.
    pub cores_during_send: f64,
    /// This process's CPU per delivery (of all deliveries), ns; the processes'
    /// figures add up to the step's `cpu_ns_per_delivery`.
    pub cpu_ns_per_delivery: f64,
    /// RSS at the end of the drain, bytes.
    pub rss_bytes: u64,
}

/// Verdict of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Steps run.
    pub steps_run: usize,
    /// Steps that passed.
    pub steps_passed: usize,
    /// Highest target rate of a passing step.
    pub highest_sustained_rate: Option<u64>,
    /// Deliveries/s at that step.
    pub deliveries_per_sec_at_highest: Option<f64>,
    /// Messages that carried no valid stamp (or unknown step/publisher).
    pub foreign_messages: u64,
    /// Messages received on publisher connections (chat echo; not measured).
    pub publisher_received: u64,
    /// HTTP publisher reconnects.
    pub http_reconnects: u64,
    /// Protocol v1: offsets skipped over every push of the run (`null` for plain).
    pub offset_gaps: Option<u64>,
    /// Protocol v1: pushes at or below an offset already seen, over the run (`null` for plain).
    pub offset_dups: Option<u64>,
    /// Connections that did not finish the close handshake in time at exit.
    pub unclosed_at_exit: u64,
    /// Process exit code: 0 = some step passed (idle: all held), 1 = none.
    pub exit_code: i32,
}

fn human(n: f64) -> String {
    let a = n.abs();
    if a >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn ms(us: f64) -> String {
    if us >= 100_000.0 {
        format!("{:.0}", us / 1000.0)
    } else if us >= 1_000.0 {
        format!("{:.1}", us / 1000.0)
    } else {
        format!("{:.2}", us / 1000.0)
    }
}

fn bytes(b: f64) -> String {
    if b.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b.abs() >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn tally_line<K: Ord + std::fmt::Display>(t: &Tally<K>) -> String {
    t.0.iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn disconnect_line(d: &Disconnects) -> String {
    let mut parts = Vec::new();
    if !d.close_codes.0.is_empty() {
        parts.push(format!("close codes: {}", tally_line(&d.close_codes)));
    }
    if d.eof > 0 {
        parts.push(format!("EOF ×{}", d.eof));
    }
    if !d.errors.0.is_empty() {
        parts.push(format!("errors: {}", tally_line(&d.errors)));
    }
    if !d.protocol.0.is_empty() {
        parts.push(format!("protocol: {}", tally_line(&d.protocol)));
    }
    parts.join("; ")
}

impl Report {
    /// Writes the JSON object (one line) and a newline.
    pub fn write_json(&self, w: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer(&mut *w, self)?;
        writeln!(w)
    }

    /// Writes the human-readable table.
    pub fn write_table(&self, w: &mut impl Write) -> io::Result<()> {
        let s = &self.setup;
        writeln!(w, "{}", self.tool)?;
        writeln!(
            w,
            "target {}  protocol {}  publish via {} {}  subs {}  pubs {}  size {} B {}  threads {}",
            s.url,
            s.protocol,
            s.publish_via,
            s.publish_url,
            s.subs,
            s.pubs,
            s.size,
            s.frame,
            s.threads
        )?;
        let c = &self.connect;
        writeln!(
            w,
            "connect: {}/{} subscribers in {:.2} s ({}/s, limit {}), {} failed; handshake p50 {} ms p99 {} ms max {} ms; {}",
            c.connected,
            c.requested,
            c.seconds,
            human(c.per_sec),
            if c.rate_limit > 0.0 {
                format!("{}/s", human(c.rate_limit))
            } else {
                "none".into()
            },
            c.failed,
            ms(c.handshake.p50_us),
            ms(c.handshake.p99_us),
            ms(c.handshake.max_us),
            if self.idle.is_some() {
                "no publishers (idle)".to_string()
            } else {
                format!("publishers {}/{}", c.pubs_connected, s.pubs)
            },
        )?;
        if !c.failures.0.is_empty() {
            writeln!(w, "  connect failures: {}", tally_line(&c.failures))?;
        }
        if !c.pub_failures.0.is_empty() {
            writeln!(w, "  publisher failures: {}", tally_line(&c.pub_failures))?;
        }
        if c.per_url.len() > 1 {
            for u in &c.per_url {
                writeln!(
                    w,
                    "  {}: {}/{} connected, {} failed",
                    u.url, u.connected, u.requested, u.failed
                )?;
            }
        }
        if let Some(sv) = &self.server {
            if sv.rss_per_conn_bytes < 0.0 {
                writeln!(
                    w,
                    "note: server RSS fell while connecting (memory of earlier connections being released); \
                     start a fresh server for per-connection memory"
                )?;
            }
            let several = sv.processes.len() > 1;
            writeln!(
                w,
                "server {}: RSS {} before, {} after connect → {} per connection; peak {}; {} threads; CPU {:.2} s user + {:.2} s system",
                if several {
                    format!(
                        "pids {} (sum)",
                        sv.pids
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    format!("pid {}", sv.pid)
                },
                bytes(sv.before.rss_bytes as f64),
                bytes(sv.after_connect.rss_bytes as f64),
                bytes(sv.rss_per_conn_bytes),
                bytes(sv.peak_rss_bytes as f64),
                sv.end.threads,
                sv.user_s,
                sv.system_s,
            )?;
            if several {
                for p in &sv.processes {
                    writeln!(
                        w,
                        "  pid {}: RSS {} before, {} after connect, {} at the end; peak {}; {} threads; CPU {:.2} s user + {:.2} s system",
                        p.pid,
                        bytes(p.before.rss_bytes as f64),
                        bytes(p.after_connect.rss_bytes as f64),
                        bytes(p.end.rss_bytes as f64),
                        bytes(p.peak_rss_bytes as f64),
                        p.end.threads,
                        p.user_s,
                        p.system_s,
                    )?;
                }
            }
        }
        if let Some(idle) = &self.idle {
            writeln!(
                w,
                "idle: held {} subscribers for {:.1} s, {} disconnects{}; client RSS {} per connection{}",
                idle.held,
                idle.seconds,
                idle.disconnects.total(),
                if idle.disconnects.total() > 0 {
                    format!(" ({})", disconnect_line(&idle.disconnects))
                } else {
                    String::new()
                },
                bytes(idle.client_rss_per_conn_bytes),
                idle.server_rss_per_conn_bytes
                    .map(|b| format!("; server RSS {} per connection", bytes(b)))
                    .unwrap_or_default(),
            )?;
        }
        if let Some(r) = &self.recovery {
            write_recovery(w, r)?;
        }
        if !self.steps.is_empty() {
            writeln!(w)?;
            writeln!(
                w,
                "{:>4} {:>9} {:>9} {:>5} {:>9} {:>9} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>5} {:>8} {:>8}  result",
                "step",
                "rate/s",
                "sent/s",
                "send%",
                "deliv/s",
                "lost",
                "dup+ro",
                "subs",
                "p50ms",
                "p90ms",
                "p99ms",
                "p999ms",
                "maxms",
                "disc",
                "srv ns/d",
                "cli ns/m"
            )?;
            for st in &self.steps {
                writeln!(
                    w,
                    "{:>4} {:>9} {:>9} {:>5.1} {:>9} {:>9} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>5} {:>8} {:>8}  {}",
                    st.step,
                    human(st.target_rate as f64),
                    human(st.achieved_rate),
                    st.send_ratio * 100.0,
                    human(st.deliveries_per_sec),
                    st.lost,
                    st.duplicates + st.reorders + st.stale,
                    st.subs,
                    ms(st.latency.p50_us),
                    ms(st.latency.p90_us),
                    ms(st.latency.p99_us),
                    ms(st.latency.p999_us),
                    ms(st.latency.max_us),
                    st.disconnects.total() + st.pub_disconnects.total(),
                    st.server
                        .as_ref()
                        .map_or("-".to_string(), |s| format!("{:.0}", s.cpu_ns_per_delivery)),
                    format!("{:.0}", st.client.cpu_ns_per_msg),
                    if st.pass { "ok" } else { "FAIL" },
                )?;
            }
            writeln!(w)?;
            for st in &self.steps {
                let mut notes = st.failures.clone();
                if st.client.machine_busy >= 0.95 && !st.client.saturated {
                    notes.push(format!(
                        "machine CPU {:.0}% busy while sending: client and server compete for cores",
                        st.client.machine_busy * 100.0
                    ));
                }
                if st.client.saturated {
                    notes.push(format!(
                        "client saturated (CPU {:.0}% of usable cores, busiest thread {:.0}%): figures are a floor for the server",
                        st.client.utilisation * 100.0,
                        st.client.busiest_thread * 100.0
                    ));
                }
                if st.disconnects.total() > 0 {
                    notes.push(format!(
                        "subscriber disconnects: {}",
                        disconnect_line(&st.disconnects)
                    ));
                }
                if st.pub_disconnects.total() > 0 {
                    notes.push(format!(
                        "publisher disconnects: {}",
                        disconnect_line(&st.pub_disconnects)
                    ));
                }
                if let Some(h) = &st.http {
                    notes.push(format!("HTTP status: {}", tally_line(&h.status)));
                }
                if st.wire_bytes > 0 {
                    notes.push(format!(
                        "wire: {:.1} B per message received ({} of {} compressed)",
                        st.wire_bytes_per_msg, st.compressed, st.received
                    ));
                }
                if st.late_after_drain > 0 {
                    notes.push(format!(
                        "{} first arrivals after the drain",
                        st.late_after_drain
                    ));
                }
                if let Some(sv) = &st.server {
                    let several = sv.processes.len() > 1;
                    notes.push(format!(
                        "server{} {:.2} cores while sending, CPU {:.2} s user + {:.2} s system, RSS {}",
                        if several { " (sum)" } else { "" },
                        sv.cores_during_send,
                        sv.user_s,
                        sv.system_s,
                        bytes(sv.rss_bytes as f64)
                    ));
                    if several {
                        for p in &sv.processes {
                            notes.push(format!(
                                "  pid {}: {:.2} cores while sending, CPU {:.2} s user + {:.2} s system, {:.0} ns/delivery, RSS {}",
                                p.pid,
                                p.cores_during_send,
                                p.user_s,
                                p.system_s,
                                p.cpu_ns_per_delivery,
                                bytes(p.rss_bytes as f64)
                            ));
                        }
                    }
                }
                writeln!(
                    w,
                    "step {} @ {}/s: expected {} received {} unique {} lost {} ({:.4}%) dup {} reorder {} stale {}{}{}",
                    st.step,
                    st.target_rate,
                    st.expected,
                    st.received,
                    st.unique,
                    st.lost,
                    st.loss_pct,
                    st.duplicates,
                    st.reorders,
                    st.stale,
                    match (st.offset_gaps, st.offset_dups) {
                        (Some(g), Some(d)) => format!(" offsets skipped {g} repeated {d}"),
                        _ => String::new(),
                    },
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!("\n    {}", notes.join("\n    "))
                    }
                )?;
            }
        }
        let sm = &self.summary;
        writeln!(w)?;
        if !self.steps.is_empty() {
            match (sm.highest_sustained_rate, sm.deliveries_per_sec_at_highest) {
                (Some(r), Some(d)) => writeln!(
                    w,
                    "highest sustained rate: {r} msgs/s → {} deliveries/s ({} of {} steps passed)",
                    human(d),
                    sm.steps_passed,
                    sm.steps_run
                )?,
                _ => writeln!(w, "no step met the SLO ({} run)", sm.steps_run)?,
            }
        }
        if sm.foreign_messages > 0 {
            writeln!(
                w,
                "note: {} messages without a valid stamp were ignored",
                sm.foreign_messages
            )?;
        }
        if let (Some(g), Some(d)) = (sm.offset_gaps, sm.offset_dups)
            && g + d > 0
        {
            writeln!(
                w,
                "note: protocol v1 offsets over the run: {g} skipped, {d} repeated or backwards"
            )?;
        }
        if sm.unclosed_at_exit > 0 {
            writeln!(
                w,
                "note: {} connections did not complete the close handshake at exit",
                sm.unclosed_at_exit
            )?;
        }
        writeln!(
            w,
            "client: {} threads on {} CPUs, {:.2} s CPU, RSS {} after connect{}",
            self.client.threads,
            self.client.cpus,
            self.client.cpu_s,
            bytes(self.client.rss_after_connect_bytes as f64),
            if self.client.saturated_any_step {
                " — saturated in at least one step"
            } else {
                ""
            }
        )?;
        Ok(())
    }
}

/// The recovery block of the table.
fn write_recovery(w: &mut impl Write, r: &RecoveryReport) -> io::Result<()> {
    writeln!(w)?;
    writeln!(
        w,
        "recovery: topic {:?}, {} of {} messages published while away ({}/s); \
         {}/{} subscribed, {}/{} reconnected in {:.2} s",
        r.topic,
        r.missed,
        r.messages,
        r.rate,
        r.subscribed,
        r.subscribers,
        r.reconnected,
        r.subscribers,
        r.reconnect_s
    )?;
    writeln!(
        w,
        "  replies: recovered:true {}, recovered:false {}, errors {}, none {}; \
         live {}, exact {}/{}",
        r.recovered_true,
        r.recovered_false,
        r.reply_errors.total(),
        r.no_reply,
        r.live,
        r.exact,
        r.subscribers
    )?;
    writeln!(
        w,
        "  pushes: replayed {} (expected {}), offsets skipped {} repeated {} beyond {}; \
         stamps unique {} repeated {} missing {}",
        r.replayed,
        r.missed * r.subscribers as u64,
        r.offset_gaps,
        r.offset_dups,
        r.extra,
        r.unique,
        r.duplicates,
        r.foreign
    )?;
    let t = &r.time_to_live;
    let o = &r.own_time_to_live;
    writeln!(
        w,
        "  all live after {} ms (first reconnect → last subscriber has all {}); \
         per subscriber p50 {} ms p99 {} ms max {} ms; from its own reconnect p50 {} ms p99 {} ms",
        r.all_live_ms.map_or("-".to_string(), |m| format!("{m:.1}")),
        r.missed,
        ms(t.p50_us),
        ms(t.p99_us),
        ms(t.max_us),
        ms(o.p50_us),
        ms(o.p99_us),
    )?;
    if !r.subscribe_failures.0.is_empty() {
        writeln!(
            w,
            "  first subscribe failures: {}",
            tally_line(&r.subscribe_failures)
        )?;
    }
    if !r.reconnect_failures.0.is_empty() {
        writeln!(
            w,
            "  reconnect failures: {}",
            tally_line(&r.reconnect_failures)
        )?;
    }
    if !r.reply_errors.0.is_empty() {
        writeln!(w, "  error replies: {}", tally_line(&r.reply_errors))?;
    }
    if r.pass {
        writeln!(w, "  result: ok, every subscriber recovered exactly")
    } else {
        writeln!(w, "  result: FAIL\n    {}", r.failures.join("\n    "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(human(999.0), "999");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(3_000_000.0), "3.00M");
        assert_eq!(ms(85.0), "0.09");
        assert_eq!(ms(1_500.0), "1.5");
        assert_eq!(ms(250_000.0), "250");
        assert_eq!(bytes(2048.0), "2.0 KiB");
        let mut t = Tally::default();
        t.add(1001u16);
        t.add(1001u16);
        t.add(1006u16);
        assert_eq!(tally_line(&t), "1001 ×2, 1006 ×1");
    }
}
