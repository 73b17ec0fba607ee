//! Worker threads: one single-threaded tokio runtime per thread.
//!
//! Owns the thread-local context every connection task on a thread shares
//! (one reused read buffer, the thread's statistics, the registry of its
//! connections and publishers), the live counters the coordinator reads for
//! progress, and the command protocol between the coordinator and a thread
//! (connect, run a step, snapshot, shut down). Connections never move between
//! threads, so nothing on the hot path is shared or locked: a connection's
//! task borrows the thread's buffer and statistics once per `read()`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_rustls::rustls::ClientConfig;

use crate::cli::{Config, Filler, Mode, Protocol, PublishVia};
use crate::conn::{self, Conn};
use crate::deflate::Inflate;
use crate::frame::{self, MaskRng};
use crate::handshake::Offer;
use crate::pacing;
use crate::proto::Proto;
use crate::publisher::{self, Publisher};
use crate::recovery::{self, Phase};
use crate::stats::{self, StepSend, Tally, ThreadStats};
use crate::subscriber::{self, Role, Sub, V1Sub};
use crate::target::{SourcePlan, Targets};
use crate::v1;

/// Size of the per-thread read buffer.
pub const READ_BUF: usize = 256 * 1024;

/// Settings shared, read-only, by all worker threads.
#[derive(Debug)]
pub struct Params {
    /// Subscriber endpoints (round-robin by global subscriber index).
    pub sub_targets: Targets,
    /// How publishers publish.
    pub publish: PublishVia,
    /// Source addresses.
    pub sources: SourcePlan,
    /// Total publishers (sizes each subscriber's sequence table).
    pub pubs: usize,
    /// Payload size.
    pub size: usize,
    /// Opcode of data frames we send.
    pub opcode: u8,
    /// Text frame sent after each handshake.
    pub hello: Option<String>,
    /// Connect + handshake timeout.
    pub connect_timeout: Duration,
    /// Largest accepted server payload.
    pub max_frame: usize,
    /// Time zero for payload timestamps.
    pub epoch: Instant,
    /// What subscribers speak.
    pub protocol: Protocol,
    /// TLS client configuration for `wss://` endpoints.
    pub tls: Option<Arc<ClientConfig>>,
    /// Subscribers negotiate permessage-deflate.
    pub deflate: bool,
    /// What pads plain payloads.
    pub filler: Filler,
    /// Recovery scenario: subscriber endpoints without their `topic=`, the
    /// topic, and the topic as pushes carry it.
    pub recover: Option<RecoverParams>,
}

/// Where recovery subscribers connect and what they subscribe to.
#[derive(Debug)]
pub struct RecoverParams {
    /// Subscriber endpoints without `topic=` (round-robin like `sub_targets`).
    pub targets: Targets,
    /// The topic.
    pub topic: String,
    /// The topic as raw JSON string content, as pushes carry it.
    pub topic_raw: Vec<u8>,
}

impl Params {
    /// Derives worker settings from the run configuration.
    pub fn new(cfg: &Config, sources: SourcePlan, epoch: Instant) -> Self {
        Self {
            sub_targets: cfg.sub_targets.clone(),
            publish: cfg.publish.clone(),
            sources,
            pubs: cfg.pubs,
            size: cfg.size,
            opcode: if cfg.binary {
                frame::OP_BINARY
            } else {
                frame::OP_TEXT
            },
            hello: cfg.hello.clone(),
            connect_timeout: cfg.connect_timeout,
            max_frame: cfg.max_frame,
            epoch,
            protocol: cfg.protocol,
            tls: cfg.tls.clone(),
            deflate: cfg.deflate,
            filler: cfg.filler,
            recover: match &cfg.mode {
                Mode::Recover(r) => Some(RecoverParams {
                    targets: r.targets.clone(),
                    topic: r.topic.clone(),
                    topic_raw: v1::topic_as_pushed(&r.topic).into_owned(),
                }),
                _ => None,
            },
        }
    }
}

/// Counters a thread updates and the coordinator reads while running.
#[derive(Debug, Default)]
pub struct Live {
    /// Subscribers currently connected.
    pub subs_connected: AtomicU64,
    /// Subscriber connection attempts that failed.
    pub subs_failed: AtomicU64,
    /// Publisher connections currently up.
    pub pubs_connected: AtomicU64,
    /// Data messages received by subscribers.
    pub received: AtomicU64,
    /// Of those, messages that arrived compressed (permessage-deflate).
    pub compressed: AtomicU64,
    /// Bytes subscribers read from their sockets (frames as they came over the wire).
    pub wire_bytes: AtomicU64,
    /// Messages sent by publishers.
    pub sent: AtomicU64,
    /// Connections (subscribers and publishers) lost while not shutting down.
    pub disconnects: AtomicU64,
    /// The worker thread's kernel thread id.
    pub tid: AtomicI32,
    /// Recovery: first subscribes answered (or failed).
    pub rec_subscribed: AtomicU64,
    /// Recovery: second subscribers whose outcome is known (live, not
    /// recovered, error, or disconnected).
    pub rec_settled: AtomicU64,
}

impl Live {
    /// Relaxed load helper.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The counter of recovery slots settled in `phase`.
    pub fn settled(&self, phase: Phase) -> &AtomicU64 {
        match phase {
            Phase::Subscribe => &self.rec_subscribed,
            Phase::Recover => &self.rec_settled,
        }
    }
}

/// What a subscriber connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubPhase {
    /// A measured subscriber of the steps (topics in its URL).
    Measure,
    /// Recovery, first connection: subscribe by command, record the position.
    RecSubscribe,
    /// Recovery, second connection: subscribe with `since`; `missed`
    /// messages were published meanwhile.
    RecReconnect {
        /// Messages to recover.
        missed: u64,
    },
}

/// Result of a connect command on one thread.
#[derive(Debug, Clone)]
pub struct ConnectTally {
    /// Established connections.
    pub ok: u64,
    /// Failures by reason.
    pub failed: Tally<String>,
    /// Connect + handshake time of successful attempts, ns.
    pub latency: Histogram<u64>,
    /// Subscribers only: (established, failed) per endpoint of the URL list,
    /// indexed like it (may be shorter when the last endpoints saw no attempt).
    pub per_target: Vec<(u64, u64)>,
}

impl ConnectTally {
    fn new() -> Self {
        Self {
            ok: 0,
            failed: Tally::default(),
            latency: stats::new_histogram(),
            per_target: Vec::new(),
        }
    }

    /// Counts one attempt on endpoint `target` (`ok`: established).
    pub fn count_target(&mut self, target: usize, ok: bool) {
        if self.per_target.len() <= target {
            self.per_target.resize(target + 1, (0, 0));
        }
        let slot = &mut self.per_target[target];
        if ok {
            slot.0 += 1;
        } else {
            slot.1 += 1;
        }
    }

    /// Adds another thread's tally.
    pub fn merge(&mut self, other: &ConnectTally) {
        self.ok += other.ok;
        self.failed.merge(&other.failed);
        let _ = self.latency.add(&other.latency);
        if self.per_target.len() < other.per_target.len() {
            self.per_target.resize(other.per_target.len(), (0, 0));
        }
        for (mine, theirs) in self.per_target.iter_mut().zip(&other.per_target) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
    }
}

impl Default for ConnectTally {
    fn default() -> Self {
        Self::new()
    }
}

/// A command from the coordinator.
pub enum Cmd {
    /// Connect these global subscriber indices, paced at `rate` per second on this thread.
    ConnectSubs {
        /// What the connections are for.
        phase: SubPhase,
        /// Global subscriber indices (source-address choice, seeds).
        indices: Vec<usize>,
        /// Attempts per second on this thread (0 = unlimited).
        rate: f64,
        /// Handshakes in flight on this thread.
        concurrency: usize,
        /// Where to send the tally.
        reply: std_mpsc::Sender<ConnectTally>,
    },
    /// Connect these publishers.
    ConnectPubs {
        /// Publisher ids.
        ids: Vec<u16>,
        /// Index of the first connection for source-address choice.
        src_base: usize,
        /// Where to send the tally.
        reply: std_mpsc::Sender<ConnectTally>,
    },
    /// Run one sending step on this thread's publishers.
    Step {
        /// Step index (stamped into payloads).
        step: u8,
        /// When sending starts.
        start: Instant,
        /// Sending window.
        window: Duration,
        /// (publisher id, messages to send) for this thread's publishers.
        totals: Vec<(u16, u64)>,
        /// Answered with this thread's send figures when the window has passed.
        reply: std_mpsc::Sender<StepSend>,
    },
    /// Prepare receive slots for a step (sent before any message of it exists).
    OpenStep {
        /// Step index.
        step: u8,
        /// Acknowledgement.
        reply: std_mpsc::Sender<()>,
    },
    /// Copy of the thread's statistics.
    Snapshot {
        /// Where to send it.
        reply: std_mpsc::Sender<ThreadStats>,
    },
    /// Start the close handshake on every subscriber (recovery: everyone
    /// goes away); answered at once, the coordinator watches them end.
    CloseSubs {
        /// Acknowledgement.
        reply: std_mpsc::Sender<()>,
    },
    /// Copy of the thread's recovery slots.
    RecoverySlots {
        /// Where to send them.
        reply: std_mpsc::Sender<Vec<recovery::Slot>>,
    },
    /// Close every connection (close handshake), waiting at most `grace`.
    Shutdown {
        /// Longest wait for close replies.
        grace: Duration,
        /// Answered with the number of connections that did not close in time.
        reply: std_mpsc::Sender<u64>,
    },
}

/// State shared by all tasks on one worker thread.
pub struct ThreadCtx {
    /// Shared settings.
    pub params: Arc<Params>,
    /// The reused read buffer (borrowed only between awaits).
    pub read_buf: RefCell<Box<[u8]>>,
    /// The thread's statistics.
    pub stats: RefCell<ThreadStats>,
    /// The thread's inflater, shared by its permessage-deflate connections (`--deflate`).
    pub inflate: Option<Rc<RefCell<Inflate>>>,
    /// Counters for progress.
    pub live: Arc<Live>,
    /// Live connections, and whether each is a subscriber.
    conns: RefCell<Vec<(Weak<Conn>, bool)>>,
    /// Recovery slots by global subscriber index.
    rec_slots: RefCell<HashMap<usize, Rc<RefCell<recovery::Slot>>>>,
    /// This thread's publishers.
    pub pubs: RefCell<Vec<Rc<Publisher>>>,
    active: Cell<usize>,
    all_done: Notify,
    /// Set once shutdown started: connection ends are expected.
    pub shutting_down: Cell<bool>,
    rng: RefCell<MaskRng>,
}

impl ThreadCtx {
    fn new(params: Arc<Params>, live: Arc<Live>, seed: u64) -> Self {
        let inflate = params
            .deflate
            .then(|| Rc::new(RefCell::new(Inflate::new(params.max_frame))));
        Self {
            params,
            read_buf: RefCell::new(vec![0u8; READ_BUF].into_boxed_slice()),
            stats: RefCell::new(ThreadStats::default()),
            inflate,
            live,
            conns: RefCell::new(Vec::new()),
            rec_slots: RefCell::new(HashMap::new()),
            pubs: RefCell::new(Vec::new()),
            active: Cell::new(0),
            all_done: Notify::new(),
            shutting_down: Cell::new(false),
            rng: RefCell::new(MaskRng::new(seed)),
        }
    }

    /// Nanoseconds since the run epoch.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        ns_since(self.params.epoch, Instant::now())
    }

    /// A fresh seed for a connection's masking keys.
    pub fn seed(&self) -> u64 {
        self.rng.borrow_mut().next_u64()
    }

    /// Registers a live connection task (for shutdown and its wait).
    pub fn register(&self, conn: &Rc<Conn>, is_sub: bool) {
        let mut conns = self.conns.borrow_mut();
        if conns.len() == conns.capacity() {
            conns.retain(|(w, _)| w.strong_count() > 0);
        }
        conns.push((Rc::downgrade(conn), is_sub));
        self.active.set(self.active.get() + 1);
    }

    /// Marks a registered connection task as finished.
    pub fn unregister(&self) {
        let n = self.active.get().saturating_sub(1);
        self.active.set(n);
        if n == 0 {
            self.all_done.notify_waiters();
        }
    }

    fn live_conns(&self, subs_only: bool) -> Vec<Rc<Conn>> {
        self.conns
            .borrow()
            .iter()
            .filter(|(_, is_sub)| *is_sub || !subs_only)
            .filter_map(|(w, _)| w.upgrade())
            .collect()
    }
}

/// Nanoseconds from `epoch` to `t` (0 if earlier).
#[inline]
pub fn ns_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Handle to a worker thread.
pub struct Worker {
    tx: mpsc::UnboundedSender<Cmd>,
    /// Live counters of the thread.
    pub live: Arc<Live>,
    join: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts worker thread `index`.
    pub fn spawn(index: usize, params: Arc<Params>) -> Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let live = Arc::new(Live::default());
        let live2 = live.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building worker runtime")?;
        let join = std::thread::Builder::new()
            .name(format!("lt-worker-{index}"))
            .spawn(move || {
                live2
                    .tid
                    .store(crate::procfs::current_tid(), Ordering::Relaxed);
                let seed = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ ns_since(params.epoch, Instant::now());
                let ctx = Rc::new(ThreadCtx::new(params, live2, seed));
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, control_loop(ctx, rx));
            })
            .context("spawning worker thread")?;
        Ok(Self {
            tx,
            live,
            join: Some(join),
        })
    }

    /// Sends a command (fails only if the thread died).
    pub fn send(&self, cmd: Cmd) -> Result<()> {
        self.tx
            .send(cmd)
            .map_err(|_| anyhow::anyhow!("worker thread exited unexpectedly"))
    }

    /// Stops the thread (dropping its runtime and any remaining tasks).
    pub fn join(mut self) {
        drop(self.tx);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

async fn control_loop(ctx: Rc<ThreadCtx>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::ConnectSubs {
                phase,
                indices,
                rate,
                concurrency,
                reply,
            } => {
                let ctx = ctx.clone();
                tokio::task::spawn_local(async move {
                    let tally = connect_subs(ctx, phase, indices, rate, concurrency).await;
                    let _ = reply.send(tally);
                });
            }
            Cmd::ConnectPubs {
                ids,
                src_base,
                reply,
            } => {
                let ctx = ctx.clone();
                tokio::task::spawn_local(async move {
                    let tally = publisher::connect_all(ctx, ids, src_base).await;
                    let _ = reply.send(tally);
                });
            }
            Cmd::OpenStep { step, reply } => {
                ctx.stats.borrow_mut().ensure_step(usize::from(step));
                let _ = reply.send(());
            }
            Cmd::Step {
                step,
                start,
                window,
                totals,
                reply,
            } => {
                let ctx = ctx.clone();
                tokio::task::spawn_local(async move {
                    publisher::run_step(&ctx, step, start, window, &totals).await;
                    let send = ctx.stats.borrow_mut().send_mut(usize::from(step)).clone();
                    let _ = reply.send(send);
                });
            }
            Cmd::Snapshot { reply } => {
                let _ = reply.send(ctx.stats.borrow().clone());
            }
            Cmd::CloseSubs { reply } => {
                for c in ctx.live_conns(true) {
                    let mask = ctx.rng.borrow_mut().mask();
                    c.start_close(mask);
                }
                let _ = reply.send(());
            }
            Cmd::RecoverySlots { reply } => {
                let mut slots: Vec<recovery::Slot> = ctx
                    .rec_slots
                    .borrow()
                    .values()
                    .map(|s| s.borrow().clone())
                    .collect();
                slots.sort_by_key(|s| s.index);
                let _ = reply.send(slots);
            }
            Cmd::Shutdown { grace, reply } => {
                let left = shutdown(&ctx, grace).await;
                let _ = reply.send(left);
            }
        }
    }
}

async fn shutdown(ctx: &Rc<ThreadCtx>, grace: Duration) -> u64 {
    ctx.shutting_down.set(true);
    for p in ctx.pubs.borrow().iter() {
        p.stop();
    }
    for c in ctx.live_conns(false) {
        let mask = ctx.rng.borrow_mut().mask();
        c.start_close(mask);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while ctx.active.get() > 0 {
        let notified = ctx.all_done.notified();
        if ctx.active.get() == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break;
        }
    }
    ctx.active.get() as u64
}

/// How subscriber `index` connects in `phase`: its endpoint (by index in
/// the URL list), the command to send after the handshake, and its state.
/// `None`: nothing to do (a recovery subscriber that has no position).
fn sub_plan(
    ctx: &ThreadCtx,
    phase: SubPhase,
    index: usize,
    start_ns: u64,
) -> Option<(&Targets, Option<String>, Sub)> {
    let p = &ctx.params;
    let rec = match (phase, &p.recover) {
        (SubPhase::Measure, _) | (_, None) => {
            let sub = match p.protocol {
                Protocol::Plain => Sub::plain(p.pubs),
                Protocol::V1 => Sub::v1(p.pubs, V1Sub::default()),
            };
            return Some((&p.sub_targets, None, sub));
        }
        (_, Some(rec)) => rec,
    };
    let (rec_phase, slot, command, offsets) = match phase {
        SubPhase::RecReconnect { missed } => {
            let slot = ctx.rec_slots.borrow().get(&index).cloned()?;
            let (offset, epoch) = slot.borrow_mut().begin_recover(start_ns, missed)?;
            let command = v1::subscribe_command(2, &rec.topic, Some((offset, &epoch)));
            // Pushes must continue right after the recorded position.
            let mut offsets = v1::Offsets::default();
            offsets.set(&rec.topic_raw, offset);
            (Phase::Recover, slot, command, offsets)
        }
        _ => {
            let slot = Rc::new(RefCell::new(recovery::Slot::new(index)));
            ctx.rec_slots.borrow_mut().insert(index, slot.clone());
            let command = v1::subscribe_command(1, &rec.topic, None);
            (Phase::Subscribe, slot, command, v1::Offsets::default())
        }
    };
    let v1 = V1Sub {
        offsets,
        rec: Some((rec_phase, slot)),
        topic: rec.topic_raw.clone(),
    };
    Some((&rec.targets, Some(command), Sub::v1(p.pubs, v1)))
}

async fn connect_subs(
    ctx: Rc<ThreadCtx>,
    phase: SubPhase,
    indices: Vec<usize>,
    rate: f64,
    concurrency: usize,
) -> ConnectTally {
    // Recovery subscribers without a position have nothing to reconnect for.
    let indices: Vec<usize> = match phase {
        SubPhase::RecReconnect { .. } => {
            let slots = ctx.rec_slots.borrow();
            indices
                .into_iter()
                .filter(|i| slots.get(i).is_some_and(|s| s.borrow().since.is_some()))
                .collect()
        }
        _ => indices,
    };
    let tally = Rc::new(RefCell::new(ConnectTally::new()));
    let sem = Arc::new(Semaphore::new(concurrency.clamp(1, Semaphore::MAX_PERMITS)));
    let outstanding = Rc::new(Cell::new(indices.len()));
    let finished = Rc::new(Notify::new());
    let step = pacing::interval(rate);
    let start = tokio::time::Instant::now();
    for (k, index) in indices.iter().copied().enumerate() {
        if let Some(step) = step {
            tokio::time::sleep_until(start + step.mul_f64(k as f64)).await;
        }
        let permit = match sem.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let ctx = ctx.clone();
        let tally = tally.clone();
        let outstanding = outstanding.clone();
        let finished = finished.clone();
        tokio::task::spawn_local(async move {
            let start_ns = ctx.now_ns();
            let Some((targets, command, sub)) = sub_plan(&ctx, phase, index, start_ns) else {
                // Filtered out above; keep the count right all the same.
                drop(permit);
                let left = outstanding.get() - 1;
                outstanding.set(left);
                if left == 0 {
                    finished.notify_one();
                }
                return;
            };
            // Subscriber `index` goes to URL `index mod n` (round-robin).
            let target_no = targets.index_for(index);
            let target = targets.for_index(index);
            // The source plan holds 127.0.0.x addresses: only usable towards IPv4 loopback.
            let src = if target.addr.is_ipv4() && target.is_loopback() {
                ctx.params.sources.for_index(index)
            } else {
                None
            };
            let seed = ctx.seed();
            let t0 = Instant::now();
            let result = conn::with_timeout(
                ctx.params.connect_timeout,
                conn::connect_ws(
                    target,
                    src,
                    seed,
                    Offer {
                        protocol: ctx.params.protocol.subprotocol(),
                        deflate: ctx.params.deflate,
                    },
                    ctx.params.tls.as_ref(),
                ),
            )
            .await;
            drop(permit);
            tally.borrow_mut().count_target(target_no, result.is_ok());
            let connected = match result {
                Ok((stream, early)) => {
                    let mut t = tally.borrow_mut();
                    t.ok += 1;
                    t.latency
                        .saturating_record(ns_since(t0, Instant::now()).max(1));
                    Live::inc(&ctx.live.subs_connected);
                    Some((stream, early))
                }
                Err(e) => {
                    tally.borrow_mut().failed.add(e.reason());
                    Live::inc(&ctx.live.subs_failed);
                    None
                }
            };
            let left = outstanding.get() - 1;
            outstanding.set(left);
            if left == 0 {
                finished.notify_one();
            }
            let role = Role::Subscriber(sub);
            match connected {
                Some((stream, early)) => {
                    let conn = Rc::new(Conn::new(stream));
                    let mut proto = Proto::new(seed ^ 0x5555, ctx.params.max_frame);
                    if let Some(inflate) = &ctx.inflate {
                        proto = proto.with_inflate(inflate.clone());
                    }
                    run_connection(ctx, conn, early, role, proto, command).await;
                }
                None => {
                    // A recovery subscriber that could not connect: its outcome is known.
                    if let Some((phase, slot)) = role.recovery() {
                        if phase == Phase::Subscribe {
                            slot.borrow_mut().subscribe_failure = Some("connect failed".into());
                        }
                        if slot.borrow_mut().settle(phase) {
                            Live::inc(ctx.live.settled(phase));
                        }
                    }
                }
            }
        });
    }
    if outstanding.get() > 0 {
        finished.notified().await;
    }
    tally.borrow().clone()
}

/// Registers a connection, sends the hello (if any) and then `command` (if
/// any), runs its reader to the end and accounts for how it ended.
pub async fn run_connection(
    ctx: Rc<ThreadCtx>,
    conn: Rc<Conn>,
    early: Vec<u8>,
    role: Role,
    mut proto: Proto,
    command: Option<String>,
) {
    let is_sub = matches!(role, Role::Subscriber(_));
    ctx.register(&conn, is_sub);
    for text in [ctx.params.hello.as_deref(), command.as_deref()]
        .into_iter()
        .flatten()
    {
        let mask = proto.mask();
        conn.with_out(|out| frame::push_client_frame(out, frame::OP_TEXT, text.as_bytes(), mask));
        let _ = conn.flush();
    }
    let rec = role.recovery();
    let end = subscriber::read_loop(&ctx, &conn, early, role, proto).await;
    if let Some((phase, slot)) = rec {
        let mut slot = slot.borrow_mut();
        if phase == Phase::Subscribe && slot.since.is_none() && slot.subscribe_failure.is_none() {
            slot.subscribe_failure = Some("disconnected before the reply".into());
        }
        if slot.settle(phase) {
            Live::inc(ctx.live.settled(phase));
        }
    }
    if is_sub {
        Live::dec(&ctx.live.subs_connected);
    } else {
        Live::dec(&ctx.live.pubs_connected);
    }
    if !(conn.closing.get() || ctx.shutting_down.get()) {
        Live::inc(&ctx.live.disconnects);
        let mut st = ctx.stats.borrow_mut();
        let d = if is_sub {
            &mut st.sub_disconnects
        } else {
            &mut st.pub_disconnects
        };
        end.record(d);
    }
    ctx.unregister();
}

impl Live {
    /// Relaxed increment.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Relaxed decrement.
    pub fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Ordering::Relaxed);
    }

    /// Relaxed add.
    pub fn add(c: &AtomicU64, n: u64) {
        if n > 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Source address for connection `i` of the plan (re-exported for publishers).
pub fn source_for(ctx: &ThreadCtx, i: usize) -> Option<IpAddr> {
    ctx.params.sources.for_index(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_tally_counts_per_target_and_merges() {
        let mut a = ConnectTally::new();
        a.count_target(0, true);
        a.count_target(0, true);
        a.count_target(2, false);
        assert_eq!(a.per_target, vec![(2, 0), (0, 0), (0, 1)]);
        let mut b = ConnectTally::new();
        b.count_target(1, true);
        b.merge(&a);
        assert_eq!(b.per_target, vec![(2, 0), (1, 0), (0, 1)]);
        let mut c = ConnectTally::new();
        c.merge(&ConnectTally::new());
        assert!(c.per_target.is_empty());
        c.merge(&b);
        assert_eq!(c.per_target, b.per_target);
    }
}
