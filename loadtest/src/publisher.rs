//! Publishers: paced senders over WebSocket or HTTP POST.
//!
//! Owns the publisher state (sequence numbers, the current step's schedule,
//! HTTP requests in flight), connecting publishers, the per-thread pacer that
//! runs a step, and the HTTP response reader. Every wake (1 ms pacer tick, or
//! an HTTP response freeing a pipeline slot) asks `pacing::due` how many
//! messages should be out by now and appends that many frames/requests, each
//! stamped with one clock read, straight into the connection's output buffer:
//! no allocation per message, one write per burst. A publisher that fell
//! behind may send its backlog during a short grace after the window (see
//! [`grace`]); the achieved rate is measured up to its last send, and what it
//! still could not send lowers it. WebSocket messages count as accepted once
//! written; HTTP ones when a 2xx response arrives.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::cli::{Filler, Protocol, PublishVia};
use crate::conn::{self, Conn, OUT_HIGH_WATER};
use crate::frame::{self, MaskRng};
use crate::handshake::Offer;
use crate::http1;
use crate::pacing;
use crate::payload::{self, Stamp};
use crate::proto::Proto;
use crate::subscriber::{End, Role};
use crate::worker::{self, ConnectTally, Live, ThreadCtx, ns_since};

/// Pacer period.
const TICK: Duration = Duration::from_millis(1);
/// Longest time spent flushing buffered messages after a step's window.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// How long after its window a publisher may still send its backlog: a tenth
/// of the window, within 10 ms..=1 s. The achieved rate counts this time.
pub fn grace(window: Duration) -> Duration {
    (window / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Pause before an HTTP publisher reconnects.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Schedule {
    step: u8,
    start: Instant,
    window: Duration,
    total: u64,
    sent: u64,
}

#[derive(Debug)]
struct HttpState {
    head: Vec<u8>,
    pipeline: usize,
    /// Step of each request in flight, oldest first.
    inflight: RefCell<VecDeque<u8>>,
}

/// One publisher.
#[derive(Debug)]
pub struct Publisher {
    /// Publisher id (stamped into payloads).
    pub id: u16,
    http: Option<HttpState>,
    conn: RefCell<Option<Rc<Conn>>>,
    seq: Cell<u64>,
    rng: RefCell<MaskRng>,
    sched: RefCell<Option<Schedule>>,
    stopped: Cell<bool>,
}

impl Publisher {
    fn new(ctx: &ThreadCtx, id: u16) -> Self {
        let http = match &ctx.params.publish {
            PublishVia::WebSocket(_) => None,
            PublishVia::Http {
                target,
                token,
                pipeline,
            } => Some(HttpState {
                head: http1::post_head(
                    &target.host_header,
                    &target.path,
                    ctx.params.size,
                    token.as_deref(),
                    ctx.params.opcode == frame::OP_BINARY,
                ),
                pipeline: *pipeline,
                inflight: RefCell::new(VecDeque::with_capacity(*pipeline)),
            }),
        };
        Self {
            id,
            http,
            conn: RefCell::new(None),
            seq: Cell::new(0),
            rng: RefCell::new(MaskRng::new(ctx.seed())),
            sched: RefCell::new(None),
            stopped: Cell::new(false),
        }
    }

    /// Stops sending for good (shutdown).
    pub fn stop(&self) {
        self.stopped.set(true);
        self.sched.borrow_mut().take();
    }

    /// Whether the current schedule still has unsent messages (on a live connection).
    fn behind(&self) -> bool {
        let live = self
            .conn
            .borrow()
            .as_ref()
            .is_some_and(|c| !c.closing.get());
        live && self
            .sched
            .borrow()
            .as_ref()
            .is_some_and(|s| s.sent < s.total)
    }

    fn pending(&self) -> usize {
        self.conn.borrow().as_ref().map_or(0, |c| c.pending())
    }

    /// Sends whatever the schedule says is due at `now`.
    pub fn pump(&self, ctx: &ThreadCtx, now: Instant) {
        let mut sched = self.sched.borrow_mut();
        let Some(s) = sched.as_mut() else {
            return;
        };
        let due = pacing::due(now.saturating_duration_since(s.start), s.window, s.total);
        let step = usize::from(s.step);
        if due > s.sent {
            let conn = self.conn.borrow().clone();
            if let Some(conn) = conn.filter(|c| !c.closing.get()) {
                let n = self.append(ctx, &conn, s.step, due - s.sent, now);
                s.sent += n;
                if n > 0 {
                    let mut st = ctx.stats.borrow_mut();
                    let send = st.send_mut(step);
                    send.sent += n;
                    if self.http.is_none() {
                        send.accepted += n;
                    }
                    send.last_send_ns = send.last_send_ns.max(ns_since(ctx.params.epoch, now));
                    Live::add(&ctx.live.sent, n);
                    // Write errors surface in the connection's reader.
                    let _ = conn.flush();
                }
            }
        }
        let backlog = due - s.sent.min(due);
        let mut st = ctx.stats.borrow_mut();
        let send = st.send_mut(step);
        send.max_backlog = send.max_backlog.max(backlog);
    }

    /// Appends up to `want` messages; returns how many were appended.
    fn append(&self, ctx: &ThreadCtx, conn: &Conn, step: u8, want: u64, now: Instant) -> u64 {
        let size = ctx.params.size;
        let opcode = ctx.params.opcode;
        // Protocol v1 subscribers get JSON payloads verbatim in their pushes.
        let write = match (ctx.params.protocol, ctx.params.filler) {
            (Protocol::Plain, Filler::Dots) => payload::write,
            (Protocol::Plain, Filler::Json) => payload::write_quotes,
            (Protocol::V1, _) => payload::write_json,
        };
        let sent_ns = ns_since(ctx.params.epoch, now);
        let first_seq = self.seq.get();
        let mut rng = self.rng.borrow_mut();
        let mut inflight = self.http.as_ref().map(|h| h.inflight.borrow_mut());
        let n = conn.with_out(|out| {
            let mut n = 0u64;
            while n < want && out.len() < OUT_HIGH_WATER {
                let stamp = Stamp {
                    step,
                    publisher: self.id,
                    seq: first_seq + n,
                    sent_ns,
                };
                match (&self.http, inflight.as_mut()) {
                    (Some(h), Some(q)) => {
                        if q.len() >= h.pipeline {
                            break;
                        }
                        q.push_back(step);
                        out.extend_from_slice(&h.head);
                        let start = out.len();
                        out.resize(start + size, 0);
                        write(&mut out[start..], stamp);
                    }
                    _ => {
                        let mask = rng.mask();
                        frame::push_client_header(out, opcode, size, mask);
                        let start = out.len();
                        out.resize(start + size, 0);
                        write(&mut out[start..], stamp);
                        frame::apply_mask(&mut out[start..], mask);
                    }
                }
                n += 1;
            }
            n
        });
        self.seq.set(first_seq + n);
        n
    }
}

/// Connects publishers `ids` on this thread and registers them. Publisher `id`
/// uses source-address slot `src_base + id`.
pub async fn connect_all(ctx: Rc<ThreadCtx>, ids: Vec<u16>, src_base: usize) -> ConnectTally {
    let mut tally = ConnectTally::default();
    for id in ids {
        let p = Rc::new(Publisher::new(&ctx, id));
        ctx.pubs.borrow_mut().push(p.clone());
        let pub_addr = match &ctx.params.publish {
            PublishVia::WebSocket(t) | PublishVia::Http { target: t, .. } => t.addr,
        };
        // The source plan holds 127.0.0.x addresses: only usable towards IPv4 loopback.
        let src = if pub_addr.is_ipv4() && pub_addr.ip().is_loopback() {
            worker::source_for(&ctx, src_base + usize::from(id))
        } else {
            None
        };
        let t0 = Instant::now();
        let result = match &ctx.params.publish {
            PublishVia::WebSocket(target) => {
                let seed = ctx.seed();
                // Publishers stay plain connections: on a v1 connection a text
                // message would be a command, not a message to broadcast.
                conn::with_timeout(
                    ctx.params.connect_timeout,
                    conn::connect_ws(target, src, seed, Offer::default(), ctx.params.tls.as_ref()),
                )
                .await
            }
            PublishVia::Http { target, .. } => conn::with_timeout(
                ctx.params.connect_timeout,
                conn::connect_tcp(target.addr, src),
            )
            .await
            .map(|s| (conn::Link::plain(s), Vec::new())),
        };
        match result {
            Ok((stream, early)) => {
                tally.ok += 1;
                tally
                    .latency
                    .saturating_record(ns_since(t0, Instant::now()).max(1));
                Live::inc(&ctx.live.pubs_connected);
                let conn = Rc::new(Conn::new(stream));
                p.conn.replace(Some(conn.clone()));
                let ctx2 = ctx.clone();
                if p.http.is_some() {
                    tokio::task::spawn_local(http_session(ctx2, p, conn, src));
                } else {
                    let proto = Proto::new(ctx.seed(), ctx.params.max_frame);
                    tokio::task::spawn_local(async move {
                        worker::run_connection(ctx2, conn, early, Role::Publisher, proto, None)
                            .await;
                        p.conn.replace(None);
                    });
                }
            }
            Err(e) => tally.failed.add(e.reason()),
        }
    }
    tally
}

/// Runs one step on this thread's publishers: paced sending for `window`,
/// then flushing what is still buffered.
pub async fn run_step(
    ctx: &Rc<ThreadCtx>,
    step: u8,
    start: Instant,
    window: Duration,
    totals: &[(u16, u64)],
) {
    let pubs: Vec<Rc<Publisher>> = ctx.pubs.borrow().clone();
    ctx.stats.borrow_mut().ensure_step(usize::from(step));
    for p in &pubs {
        if p.stopped.get() {
            continue;
        }
        if let Some((_, total)) = totals.iter().find(|(id, _)| *id == p.id) {
            p.sched.replace(Some(Schedule {
                step,
                start,
                window,
                total: *total,
                sent: 0,
            }));
        }
    }
    let end = start + window;
    let grace_end = end + grace(window);
    let mut tick = tokio::time::interval_at(start.into(), TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for p in &pubs {
            p.pump(ctx, now);
        }
        // After the window, only a late backlog may still go out (within the grace).
        if now >= end && (now >= grace_end || !pubs.iter().any(|p| p.behind())) {
            break;
        }
    }
    for p in &pubs {
        p.sched.borrow_mut().take();
    }
    // Nobody else flushes a WebSocket publisher whose reader sleeps on READABLE.
    let limit = Instant::now() + FLUSH_LIMIT;
    while Instant::now() < limit && pubs.iter().any(|p| p.pending() > 0) {
        for p in &pubs {
            if let Some(c) = p.conn.borrow().as_ref() {
                let _ = c.flush();
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// One HTTP publisher connection after another until shutdown.
async fn http_session(
    ctx: Rc<ThreadCtx>,
    p: Rc<Publisher>,
    mut conn: Rc<Conn>,
    src: Option<std::net::IpAddr>,
) {
    let PublishVia::Http { target, .. } = &ctx.params.publish else {
        return;
    };
    // HTTP connections are not registered for the WebSocket close handshake:
    // at shutdown they are simply dropped with the worker's runtime.
    loop {
        let end = http_reader(&ctx, &p, &conn).await;
        Live::dec(&ctx.live.pubs_connected);
        p.conn.replace(None);
        let lost: Vec<u8> = p
            .http
            .as_ref()
            .map(|h| h.inflight.borrow_mut().drain(..).collect())
            .unwrap_or_default();
        {
            let mut st = ctx.stats.borrow_mut();
            for step in lost {
                st.send_mut(usize::from(step)).unanswered += 1;
            }
            if p.stopped.get() || ctx.shutting_down.get() || conn.closing.get() {
                return;
            }
            if let Some(end) = &end {
                end.record(&mut st.pub_disconnects);
            }
            st.http_reconnects += 1;
        }
        // Reconnect (keep-alive limits and `Connection: close` are normal for HTTP).
        loop {
            if p.stopped.get() || ctx.shutting_down.get() {
                return;
            }
            match conn::with_timeout(
                ctx.params.connect_timeout,
                conn::connect_tcp(target.addr, src),
            )
            .await
            {
                Ok(stream) => {
                    conn = Rc::new(Conn::new(conn::Link::plain(stream)));
                    p.conn.replace(Some(conn.clone()));
                    Live::inc(&ctx.live.pubs_connected);
                    break;
                }
                Err(e) => {
                    ctx.stats
                        .borrow_mut()
                        .pub_disconnects
                        .errors
                        .add(format!("reconnect: {}", e.reason()));
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
        }
        p.pump(&ctx, Instant::now());
    }
}

/// Reads responses until the connection ends. `None` = orderly end
/// (`Connection: close` after a complete response), otherwise why it broke.
async fn http_reader(ctx: &ThreadCtx, p: &Publisher, conn: &Conn) -> Option<End> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let ready = match conn.ready().await {
            Ok(r) => r,
            Err(e) => return Some(End::Error(e.to_string())),
        };
        if ready.is_writable()
            && let Err(e) = conn.flush()
        {
            return Some(End::Error(e.to_string()));
        }
        if !ready.is_readable() {
            continue;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match conn.read_vec(&mut buf) {
            Ok(0) => return Some(End::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Some(End::Error(e.to_string())),
        }
        let mut pos = 0;
        let mut close = false;
        while pos < buf.len() && !close {
            match http1::parse_response(&buf[pos..]) {
                Ok(Some(r)) => {
                    pos += r.len;
                    close = r.close;
                    if !r.interim {
                        account_response(ctx, p, r.status);
                    }
                }
                Ok(None) => break,
                Err(e) => return Some(End::Protocol(e)),
            }
        }
        buf.drain(..pos);
        if close {
            return None;
        }
        p.pump(ctx, Instant::now());
    }
}

fn account_response(ctx: &ThreadCtx, p: &Publisher, status: u16) {
    let Some(step) = p
        .http
        .as_ref()
        .and_then(|h| h.inflight.borrow_mut().pop_front())
    else {
        return;
    };
    let mut st = ctx.stats.borrow_mut();
    let send = st.send_mut(usize::from(step));
    send.http_status.add(status);
    if (200..300).contains(&status) {
        send.accepted += 1;
    } else {
        send.rejected += 1;
    }
}
