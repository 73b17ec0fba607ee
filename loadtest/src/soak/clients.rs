//! The soak's clients on one worker thread (a current-thread runtime): healthy clients
//! that check every numbered message, ping flooders among them, slow readers, and the
//! churn that replaces clients while the run goes on.
//!
//! A healthy client's contract, from docs/protocol.md: it gets every message published
//! after its `101`, exactly once, in order. So it reads [`Seqs::sent`](super::publish::Seqs)
//! right after its handshake (every later number is owed to it), checks each number
//! against the one before, and when it leaves it first waits for everything the server
//! had accepted by then ([`Seqs::acked`](super::publish::Seqs)). Anything else counts
//! as missed.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::publish::{self, Feed, NUMBERED};
use super::{C, Phase, Shared};
use crate::conn::{self, Conn};
use crate::frame::{self, MaskRng};
use crate::handshake::Offer;
use crate::pacing;
use crate::payload;
use crate::proto::{Proto, Received};
use crate::worker::READ_BUF;

/// Connect + handshake limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close handshake may take before it counts as failed; one slower than
/// [`CLOSE_SLOW`] is only noted (a shard starved of CPU for seconds on a busy machine
/// is a fact of the run, not of hubcast's correctness).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// A close handshake slower than this is noted.
const CLOSE_SLOW: Duration = Duration::from_secs(5);
/// How long a slow reader, reading again, may take to reach the server's close.
const SLOW_CHECK: Duration = Duration::from_secs(30);
/// A slow reader's receive buffer: small, so the server's side fills up.
const SLOW_RCVBUF: u32 = 4096;
/// Largest frame accepted from the server (messages are at most 64 KiB; the thread's
/// read buffer holds a partial frame and what follows it).
const MAX_FRAME: usize = 64 << 10;
/// Churn and replacement tick.
const TICK: Duration = Duration::from_millis(20);

/// The state shared by the tasks of one worker thread.
pub(super) struct Thread {
    shared: Arc<Shared>,
    index: usize,
    /// One read buffer for every connection of the thread (borrowed between awaits).
    buf: RefCell<Box<[u8]>>,
    /// Healthy clients churn may pick.
    live: RefCell<Vec<Rc<Member>>>,
    /// Churned-out clients kept connected (test mode `--inject-leak`).
    leaked: RefCell<Vec<Rc<Member>>>,
    /// Slow readers running.
    slow: Cell<usize>,
    /// Client tasks running.
    tasks: Cell<usize>,
    all_done: Notify,
    /// The run is closing: slow readers stop waiting.
    closing: Notify,
    rng: RefCell<MaskRng>,
    /// Connections opened by this thread (picks the source address).
    opened: Cell<usize>,
}

/// A healthy client, as churn sees it.
struct Member {
    leave: Cell<bool>,
    wake: Notify,
    flood: bool,
}

impl Member {
    fn tell_to_leave(&self) {
        self.leave.set(true);
        self.wake.notify_one();
    }
}

/// Runs worker thread `index` of the soak until its clients are gone.
pub(super) fn spawn(
    index: usize,
    shared: Arc<Shared>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(std::thread::Builder::new()
        .name(format!("soak-{index}"))
        .spawn(move || {
            let seed = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let t = Rc::new(Thread {
                shared,
                index,
                buf: RefCell::new(vec![0u8; READ_BUF].into_boxed_slice()),
                live: RefCell::new(Vec::new()),
                leaked: RefCell::new(Vec::new()),
                slow: Cell::new(0),
                tasks: Cell::new(0),
                all_done: Notify::new(),
                closing: Notify::new(),
                rng: RefCell::new(MaskRng::new(seed)),
                opened: Cell::new(0),
            });
            tokio::task::LocalSet::new().block_on(&rt, drive(t));
        })?)
}

/// This thread's share of `total` (thread `i` of `n` takes every n-th from i).
fn share(total: usize, i: usize, n: usize) -> usize {
    total / n + usize::from(i < total % n)
}

async fn drive(t: Rc<Thread>) {
    let shared = t.shared.clone();
    let cfg = &shared.cfg;
    let n = cfg.threads;
    if t.index == 0 {
        let feeds = [
            Feed {
                target: cfg.publish.clone(),
                id: NUMBERED,
                rate: cfg.rate,
                size: cfg.size,
            },
            Feed {
                target: cfg.publish_bulk.clone(),
                id: publish::BULK,
                rate: if cfg.slow_readers > 0 {
                    cfg.bulk_rate
                } else {
                    0.0
                },
                size: cfg.bulk_size,
            },
        ];
        for feed in feeds {
            tokio::task::spawn_local(publish::run(shared.clone(), feed));
        }
    }
    // The first population, paced.
    let (clients, flooders) = (
        share(cfg.clients, t.index, n),
        share(cfg.ping_flooders, t.index, n),
    );
    let interval = pacing::interval(cfg.connect_rate / n as f64);
    let start = Instant::now();
    for k in 0..clients {
        if let Some(step) = interval {
            tokio::time::sleep_until(start + step.mul_f64(k as f64)).await;
        }
        spawn_healthy(&t, k < flooders);
    }
    while shared.phase() == Phase::Connecting {
        tokio::time::sleep(TICK).await;
    }
    // Steady: churn at its rate; slow readers replaced as they finish. The first ones
    // start spread over one stall, so that they stall, and are closed, at different
    // times rather than all at once.
    let (churn, slow) = (cfg.churn / n as f64, share(cfg.slow_readers, t.index, n));
    let steady = Instant::now();
    for k in 0..slow {
        spawn_slow(&t, cfg.slow_stall.mul_f64(k as f64 / slow as f64));
    }
    let mut churned = 0u64;
    while shared.phase() == Phase::Steady {
        let due = (churn * steady.elapsed().as_secs_f64()) as u64;
        while churned < due {
            churn_one(&t);
            churned += 1;
        }
        while t.slow.get() < slow {
            spawn_slow(&t, Duration::ZERO);
        }
        tokio::time::sleep(TICK).await;
    }
    while shared.phase() != Phase::Closing {
        tokio::time::sleep(TICK).await;
    }
    // Everyone leaves, checking they have every message.
    t.closing.notify_waiters();
    let members: Vec<Rc<Member>> = t.live.borrow_mut().drain(..).collect();
    let leaked: Vec<Rc<Member>> = t.leaked.borrow_mut().drain(..).collect();
    for m in members.iter().chain(&leaked) {
        m.tell_to_leave();
    }
    while t.tasks.get() > 0 {
        let done = t.all_done.notified();
        if t.tasks.get() == 0 {
            break;
        }
        done.await;
    }
}

/// One client leaves (or, in test mode `--inject-leak`, stays connected though it
/// should have left) and a new one of the same kind joins.
fn churn_one(t: &Rc<Thread>) {
    let victim = {
        let mut live = t.live.borrow_mut();
        if live.is_empty() {
            return;
        }
        let i = (t.rng.borrow_mut().next_u64() % live.len() as u64) as usize;
        live.swap_remove(i)
    };
    let flood = victim.flood;
    let leaked = t.shared.count(C::Leaked) < t.shared.cfg.inject_leak as u64;
    if leaked {
        t.shared.add(C::Leaked, 1);
        t.leaked.borrow_mut().push(victim);
    } else {
        victim.tell_to_leave();
    }
    spawn_healthy(t, flood);
}

/// Runs `task` as one of the thread's client tasks.
fn spawn_task(t: &Rc<Thread>, task: impl Future<Output = ()> + 'static) {
    t.tasks.set(t.tasks.get() + 1);
    let t = t.clone();
    tokio::task::spawn_local(async move {
        task.await;
        t.tasks.set(t.tasks.get() - 1);
        if t.tasks.get() == 0 {
            t.all_done.notify_waiters();
        }
    });
}

fn spawn_healthy(t: &Rc<Thread>, flood: bool) {
    let member = Rc::new(Member {
        leave: Cell::new(false),
        wake: Notify::new(),
        flood,
    });
    spawn_task(t, healthy(t.clone(), member));
}

/// A slow reader, after `delay` (spent before connecting, ended by the run's close).
fn spawn_slow(t: &Rc<Thread>, delay: Duration) {
    t.slow.set(t.slow.get() + 1);
    let tc = t.clone();
    spawn_task(t, async move {
        if tc.wait_unless_closing(delay).await {
            slow(&tc).await;
        }
        tc.slow.set(tc.slow.get() - 1);
    });
}

impl Thread {
    fn seed(&self) -> u64 {
        self.rng.borrow_mut().next_u64()
    }

    /// Source address for the next connection (loopback targets spread over 127.0.0.x).
    fn source(&self) -> Option<std::net::IpAddr> {
        let k = self.opened.get();
        self.opened.set(k + 1);
        self.shared
            .sources
            .for_index(k * self.shared.cfg.threads + self.index)
    }

    fn forget(&self, member: &Rc<Member>) {
        self.live.borrow_mut().retain(|m| !Rc::ptr_eq(m, member));
    }

    /// Waits `d`; `false` when the run started closing meanwhile (or already had).
    async fn wait_unless_closing(&self, d: Duration) -> bool {
        let closing = self.closing.notified();
        if self.shared.phase() == Phase::Closing {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = closing => false,
        }
    }
}

/// A client's connection: socket, protocol state and the start of a partial frame.
struct Link {
    conn: Conn,
    proto: Proto,
    carry: Vec<u8>,
}

/// How a read ended the connection.
#[derive(Debug)]
enum Ended {
    /// A close frame from the server, with its code (1005: none).
    Closed(u16),
    /// EOF, a reset or a protocol error: why.
    Lost(String),
}

impl Link {
    fn new(stream: tokio::net::TcpStream, early: Vec<u8>, seed: u64) -> Link {
        Link {
            conn: Conn::new(conn::Link::plain(stream)),
            proto: Proto::new(seed, MAX_FRAME),
            carry: early,
        }
    }

    /// Handles what the socket holds now (and the carried bytes): data messages and
    /// the server's pongs go to `on`; pongs for the server's pings are queued and
    /// flushed. `Err` once the connection is over.
    fn read_now(&mut self, t: &Thread, on: impl FnMut(Received<'_>)) -> Result<(), Ended> {
        let mut buf = t.buf.borrow_mut();
        let c = self.carry.len();
        if c >= buf.len() {
            return Err(Ended::Lost(format!("a frame over {} bytes", buf.len())));
        }
        buf[..c].copy_from_slice(&self.carry);
        let n = match self.conn.stream.try_read(&mut buf[c..]) {
            Ok(0) => return Err(Ended::Lost("EOF".into())),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(Ended::Lost(e.to_string())),
        };
        let data = &buf[..c + n];
        let outcome = self
            .conn
            .with_out(|out| self.proto.process_each(data, out, on))
            .map_err(|e| Ended::Lost(format!("protocol: {e}")))?;
        self.carry.clear();
        self.carry.extend_from_slice(&data[outcome.consumed..]);
        self.conn.flush().map_err(|e| Ended::Lost(e.to_string()))?;
        match outcome.close {
            Some(code) => Err(Ended::Closed(code)),
            None => Ok(()),
        }
    }

    /// Waits until the socket is readable (or writable with output pending) and
    /// reads; `Err` once the connection is over.
    async fn read(&mut self, t: &Thread, on: impl FnMut(Received<'_>)) -> Result<(), Ended> {
        let ready = self
            .conn
            .ready()
            .await
            .map_err(|e| Ended::Lost(e.to_string()))?;
        if ready.is_writable() {
            self.conn.flush().map_err(|e| Ended::Lost(e.to_string()))?;
        }
        if ready.is_readable() {
            self.read_now(t, on)?;
        }
        Ok(())
    }
}

/// A healthy client's check of the numbered messages: each once, in order, from the
/// first one owed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SeqCheck {
    /// [`Seqs::sent`](super::publish::Seqs) when the `101` arrived.
    join: u64,
    /// The number expected next (`None` before the first).
    next: Option<u64>,
}

/// What one arrival says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    InOrder,
    /// The first message, with this many owed ones missing before it.
    StartMissed(u64),
    /// This many missing before it.
    Gap(u64),
    /// A number already seen, or older.
    Duplicate,
}

impl SeqCheck {
    pub(super) fn new(join: u64) -> SeqCheck {
        SeqCheck { join, next: None }
    }

    pub(super) fn observe(&mut self, seq: u64) -> Seen {
        let seen = match self.next {
            // Numbers up to `join` may arrive or not (published around the 101).
            None if seq > self.join + 1 => Seen::StartMissed(seq - self.join - 1),
            None => Seen::InOrder,
            Some(next) if seq == next => Seen::InOrder,
            Some(next) if seq > next => Seen::Gap(seq - next),
            Some(_) => return Seen::Duplicate,
        };
        self.next = Some(seq + 1);
        seen
    }

    /// Owed messages up to `seq` that have not arrived (they can only come later).
    pub(super) fn owed_up_to(&self, seq: u64) -> u64 {
        let last = self.next.map_or(self.join, |n| n - 1);
        seq.saturating_sub(last)
    }
}

/// A healthy client's view of its stream.
struct Watch {
    check: SeqCheck,
    /// Ping bursts sent (flooders), and the last one whose marker pong came back.
    bursts: u64,
    answered: u64,
}

impl Watch {
    fn on(&mut self, shared: &Shared, received: Received<'_>) {
        match received {
            Received::Message(msg) => match payload::parse(msg) {
                Some(s) if s.publisher == NUMBERED => match self.check.observe(s.seq) {
                    Seen::InOrder => shared.add(C::Received, 1),
                    Seen::StartMissed(n) => shared.add(C::StartMissed, n),
                    Seen::Gap(n) => shared.add(C::Gaps, n),
                    Seen::Duplicate => shared.add(C::Duplicates, 1),
                },
                _ => shared.add(C::Foreign, 1),
            },
            Received::Pong(pong) => {
                if let Some(n) = pong.strip_prefix(b"mark:") {
                    let n = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok());
                    self.answered = self.answered.max(n.unwrap_or(0));
                }
            }
        }
    }
}

/// What woke a healthy client.
enum Event {
    Read(Result<(), Ended>),
    Woken,
    Flood,
}

/// A healthy client: connect, check every message until told to leave (flooding pings
/// once a second if it is a flooder), collect what it is owed, close.
async fn healthy(t: Rc<Thread>, member: Rc<Member>) {
    let shared = t.shared.clone();
    let cfg = &shared.cfg;
    let seed = t.seed();
    let connected = conn::with_timeout(
        CONNECT_TIMEOUT,
        conn::connect_ws(&cfg.healthy, t.source(), seed, Offer::default(), None),
    )
    .await;
    // The soak speaks plain ws:// only.
    let connected = connected.map(|(link, early)| (link.tcp, early));
    let (stream, early) = match connected {
        Ok(c) => c,
        Err(e) => return shared.fail(C::ConnectFailures, e.reason()),
    };
    let mut watch = Watch {
        check: SeqCheck::new(shared.seqs.sent.load(Ordering::SeqCst)),
        bursts: 0,
        answered: 0,
    };
    shared.add(C::Connects, 1);
    shared.add(C::Healthy, 1);
    t.live.borrow_mut().push(member.clone());
    // Connected while the run closes: perhaps too late to be told, so leave at once.
    if shared.phase() == Phase::Closing {
        member.leave.set(true);
    }
    let mut link = Link::new(stream, early, seed ^ 0x5555);
    let mut flood = Instant::now() + Duration::from_secs(1);
    let ended = loop {
        if member.leave.get() {
            break None;
        }
        let event = tokio::select! {
            r = link.read(&t, |r| watch.on(&shared, r)) => Event::Read(r),
            () = member.wake.notified() => Event::Woken,
            () = tokio::time::sleep_until(flood), if member.flood => Event::Flood,
        };
        match event {
            Event::Read(Err(e)) => break Some(e),
            Event::Read(Ok(())) | Event::Woken => {}
            Event::Flood => {
                watch.bursts += 1;
                burst(&mut link, cfg.flood_pings, watch.bursts);
                flood += Duration::from_secs(1);
            }
        }
    };
    match ended {
        Some(e) => {
            t.forget(&member);
            let why = match e {
                Ended::Closed(code) => format!("healthy client closed by the server with {code}"),
                Ended::Lost(why) => format!("healthy client lost: {why}"),
            };
            shared.fail(C::UnexpectedEnds, why);
        }
        None => {
            let owed = shared.seqs.acked.load(Ordering::SeqCst);
            collect(&t, &mut link, &mut watch, owed).await;
            close(&t, &mut link, &mut watch).await;
        }
    }
    shared.sub(C::Healthy, 1);
}

/// A burst of `pings` pings, then a marker ping whose pong says the burst was read.
fn burst(link: &mut Link, pings: usize, n: u64) {
    link.conn.with_out(|out| {
        for i in 0..pings {
            let mask = link.proto.mask();
            frame::push_client_frame(out, frame::OP_PING, &(i as u64).to_be_bytes(), mask);
        }
        let mask = link.proto.mask();
        frame::push_client_frame(out, frame::OP_PING, format!("mark:{n}").as_bytes(), mask);
    });
    // Errors show up in the next read.
    let _ = link.conn.flush();
}

/// Before leaving: every message up to `owed`, and the pong of the last ping burst.
async fn collect(t: &Thread, link: &mut Link, watch: &mut Watch, owed: u64) {
    let shared = &t.shared;
    let deadline = Instant::now() + shared.cfg.tail_timeout;
    while watch.check.owed_up_to(owed) > 0 || watch.answered < watch.bursts {
        let read = tokio::select! {
            r = link.read(t, |r| watch.on(shared, r)) => r,
            () = tokio::time::sleep_until(deadline) => break,
        };
        if read.is_err() {
            break;
        }
    }
    shared.add(C::TailMissed, watch.check.owed_up_to(owed));
    shared.add(
        C::FloodUnanswered,
        watch.bursts - watch.answered.min(watch.bursts),
    );
    shared.add(C::FloodBursts, watch.bursts);
}

/// The close handshake: ours (1000), then the server's echo.
async fn close(t: &Thread, link: &mut Link, watch: &mut Watch) {
    let shared = &t.shared;
    link.conn.start_close(t.rng.borrow_mut().mask());
    link.proto.mark_close_sent();
    let started = Instant::now();
    let closed = tokio::time::timeout(CLOSE_TIMEOUT, async {
        loop {
            match link.read(t, |r| watch.on(shared, r)).await {
                Ok(()) => continue,
                Err(Ended::Closed(1000)) => return Ok(()),
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    })
    .await;
    // When it happened says much: while the run goes on, or when every client closes
    // at once at its end.
    let when = match shared.phase() {
        Phase::Closing => "as the run closed",
        _ => "during the run",
    };
    if started.elapsed() > CLOSE_SLOW {
        shared.note(format!("close {when}: echo after more than {CLOSE_SLOW:?}"));
    }
    match closed {
        Ok(Ok(())) => shared.add(C::Churned, 1),
        Ok(Err(why)) => shared.fail(C::CloseFailures, format!("close {when}: {why}")),
        Err(_) => shared.fail(
            C::CloseFailures,
            format!("close {when}: no echo within {CLOSE_TIMEOUT:?}"),
        ),
    }
}

/// A slow reader: joins both topics with a tiny receive buffer, stops reading for
/// `--slow-stall`, then reads on and must find that the server closed it (a close
/// frame with the slow-consumer code, or the connection dropped) — not live messages.
async fn slow(t: &Rc<Thread>) {
    let shared = t.shared.clone();
    let cfg = &shared.cfg;
    let seed = t.seed();
    let connected = conn::with_timeout(CONNECT_TIMEOUT, async {
        let stream = conn::connect_tcp_with(cfg.slow.addr, t.source(), Some(SLOW_RCVBUF)).await?;
        conn::handshake_over(stream, &cfg.slow, seed, None).await
    })
    .await;
    let (stream, early) = match connected {
        Ok(c) => c,
        Err(e) => return shared.fail(C::ConnectFailures, e.reason()),
    };
    shared.add(C::Connects, 1);
    shared.add(C::Slow, 1);
    // The stall is the behaviour under test; a run that ends meanwhile ends it.
    if t.wait_unless_closing(cfg.slow_stall).await {
        // Whatever is numbered beyond this was published after it read again.
        let resumed = shared.seqs.sent.load(Ordering::SeqCst);
        let mut link = Link::new(stream, early, seed);
        let mut fresh = false;
        let ended = tokio::time::timeout(SLOW_CHECK, async {
            loop {
                let on = |r: Received<'_>| {
                    if let Received::Message(m) = r {
                        fresh |= payload::parse(m)
                            .is_some_and(|s| s.publisher == NUMBERED && s.seq > resumed);
                    }
                };
                if let Err(e) = link.read(t, on).await {
                    return Some(e);
                }
                if fresh {
                    return None;
                }
            }
        })
        .await;
        match ended {
            Ok(Some(Ended::Closed(code @ (1008 | 1013)))) => {
                shared.add(C::SlowClosed, 1);
                shared.note(format!("slow reader closed with {code}"));
            }
            Ok(Some(Ended::Lost(_))) => shared.add(C::SlowDropped, 1),
            Ok(Some(Ended::Closed(code))) => {
                shared.fail(C::SlowNotClosed, format!("slow reader closed with {code}"));
            }
            Ok(None) => shared.fail(
                C::SlowNotClosed,
                "slow reader still served after its stall".into(),
            ),
            Err(_) => shared.fail(
                C::SlowNotClosed,
                "slow reader neither closed nor served after its stall".into(),
            ),
        }
    }
    shared.sub(C::Slow, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, n) in [(10_000, 2), (7, 3), (1, 4), (0, 2)] {
            let sum: usize = (0..n).map(|i| share(total, i, n)).sum();
            assert_eq!(sum, total);
        }
        assert_eq!((share(7, 0, 3), share(7, 2, 3)), (3, 2));
    }

    #[test]
    fn numbers_are_checked_from_the_first_owed_one() {
        // Joined when 10 had been sent: 11 on is owed; 9 or 10 may come first.
        let mut c = SeqCheck::new(10);
        assert_eq!(c.owed_up_to(10), 0);
        assert_eq!(c.owed_up_to(12), 2);
        assert_eq!(c.observe(9), Seen::InOrder);
        assert_eq!(c.observe(10), Seen::InOrder);
        assert_eq!(c.observe(11), Seen::InOrder);
        assert_eq!(c.observe(11), Seen::Duplicate);
        assert_eq!(c.observe(5), Seen::Duplicate);
        assert_eq!(c.observe(14), Seen::Gap(2));
        assert_eq!(c.owed_up_to(14), 0);
        assert_eq!(c.owed_up_to(20), 6);
        // A first message beyond the first owed one: those before it are missed.
        let mut late = SeqCheck::new(10);
        assert_eq!(late.observe(13), Seen::StartMissed(2));
        assert_eq!(late.observe(14), Seen::InOrder);
    }
}
