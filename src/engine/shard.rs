//! Shards own their connections: one thread, one current-thread tokio runtime, one
//! registry, and every socket of its clients.
//!
//! Other threads reach a shard only through its [`ShardHandle`]: a bounded inbox of
//! encoded frames, a queue of incoming sockets, and a wake-up. The shard's dispatcher
//! drains *everything* pending before it writes, so under load frames batch up by
//! themselves and each socket sees one write per round; a long round is served lane by
//! lane (see `lanes`), taking in what arrived meanwhile. Everything else about a client —
//! queue, flush, close handshake, pings — happens on this thread only, so none of it
//! needs a lock.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use crossbeam_queue::{ArrayQueue, SegQueue};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::engine::client::{Client, Control, Delivery, Flushed, Negotiated, State};
use crate::engine::fanout::{Outcome, Published, fan_out_lane};
use crate::engine::grant::{self, Access, AccessState};
use crate::engine::hub::Hub;
use crate::engine::lanes::Lanes;
use crate::engine::metrics::ShardMetrics;
use crate::engine::pacing::Pacer;
use crate::engine::registry::{ClientRef, Registry, Snapshot};
use crate::engine::transport::Conn;
use crate::wire::frame::{self, Opcode};

/// Most frames held between the inbox and the sockets, so that a flood of publishes
/// cannot starve the shard's readers and timers (publishers wait on the inbox instead).
const MAX_BATCH: usize = 4096;

/// Least time between two idle-time snapshot rebuilds: a connect storm costs one rebuild
/// per tick, not one per connect. A publish always rebuilds first if anything changed.
const REBUILD_TICK: Duration = Duration::from_millis(2);

/// How a shard serves a freshly accepted connection. The edge provides it (hubcast's
/// HTTP server), so that the engine never imports the edge.
pub(crate) type ConnHandler = Rc<dyn Fn(&Rc<Shard>, TcpStream, SocketAddr)>;

/// Work handed to a shard from other threads.
pub(crate) enum Incoming {
    /// A freshly accepted TCP connection; the shard serves its HTTP.
    Tcp(std::net::TcpStream, SocketAddr),
    /// A connection upgraded by an embedder's HTTP service, to be adopted as a client.
    Upgraded {
        stream: std::net::TcpStream,
        read_buf: Bytes,
        topics: Vec<String>,
        id: u64,
        /// What its handshake negotiated.
        negotiated: Negotiated,
        /// Its token's grant, when auth is configured.
        access: Option<Access>,
        /// Its TLS session, when the embedder's server spoke TLS on it.
        tls: Option<Box<tokio_rustls::rustls::ServerConnection>>,
    },
}

/// The thread-safe face of a shard.
pub(crate) struct ShardHandle {
    pub(crate) index: usize,
    pub(crate) inbox: ArrayQueue<Published>,
    /// Inbox slots promised to publishers that have not pushed yet (see `try_reserve`).
    reserved: AtomicUsize,
    incoming: SegQueue<Incoming>,
    scheduled: AtomicBool,
    notify: Notify,
    /// Wakes a dispatcher that is holding a round back (see `pacing`) to adopt handed-over
    /// connections at once instead of at its deadline.
    adopt: Notify,
    /// Who listens to what on this shard; read lock-free by any thread.
    pub(crate) snapshot: ArcSwap<Snapshot>,
}

impl ShardHandle {
    pub(crate) fn new(index: usize, inbox_capacity: usize) -> Self {
        ShardHandle {
            index,
            inbox: ArrayQueue::new(inbox_capacity),
            reserved: AtomicUsize::new(0),
            incoming: SegQueue::new(),
            scheduled: AtomicBool::new(false),
            notify: Notify::new(),
            adopt: Notify::new(),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
        }
    }

    /// Promises the caller one inbox slot, if there is one. Publishes reserve every
    /// shard's slot first (waiting for room, if they may) and only then take their offset
    /// and push, all under the topic's sequencer lock: so offsets reach every shard in
    /// order, and nobody waits while holding that lock.
    pub(crate) fn try_reserve(&self) -> bool {
        let cap = self.inbox.capacity();
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (self.inbox.len() + r < cap).then_some(r + 1)
            })
            .is_ok()
    }

    /// Gives back a slot reserved with [`ShardHandle::try_reserve`] without using it.
    pub(crate) fn unreserve(&self) {
        self.reserved.fetch_sub(1, Ordering::AcqRel);
    }

    /// Pushes into a reserved slot and wakes the shard. Every push goes through a
    /// reservation, so the slot is there; `false` would mean that promise was broken
    /// (the caller counts a drop rather than lose the message silently).
    pub(crate) fn publish_reserved(&self, p: Published) -> bool {
        let pushed = self.inbox.push(p).is_ok();
        self.reserved.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(pushed, "a reserved inbox slot was taken");
        self.wake();
        pushed
    }

    /// Hands a connection to this shard.
    pub(crate) fn hand_over(&self, incoming: Incoming) {
        self.incoming.push(incoming);
        self.adopt.notify_one();
        self.wake();
    }

    /// Wakes the dispatcher, at most once per round: publishers that find it already
    /// scheduled skip the notify entirely.
    #[inline]
    pub(crate) fn wake(&self) {
        if !self.scheduled.swap(true, Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }
}

/// A shard, as seen from its own thread.
pub(crate) struct Shard {
    pub(crate) handle: Arc<ShardHandle>,
    pub(crate) hub: Hub,
    pub(crate) registry: RefCell<Registry>,
    /// Wakes the dispatcher for local reasons (registrations) and the drain (removals).
    local: Notify,
    last_rebuild: Cell<Instant>,
    /// Frames drained from the inbox and how far each lane of clients has had them.
    lanes: RefCell<Lanes>,
    /// Frames every lane has had, kept for reuse between rounds.
    retired: RefCell<Vec<Published>>,
    outcome: RefCell<Outcome>,
    ping: Bytes,
    serve_conn: ConnHandler,
    /// Auth deadlines (token expiry, the wait for a v1 `connect`), earliest first: one
    /// timer for the whole shard instead of one task per connection. At most one live
    /// entry per client (see `Access::armed`); entries of clients that left are dropped
    /// when they come due.
    deadlines: RefCell<BinaryHeap<Reverse<(Instant, usize, u64)>>>,
    /// Wakes the deadline timer when an entry earlier than all others arrives.
    deadline_wake: Notify,
}

impl Shard {
    pub(crate) fn new(hub: Hub, index: usize, serve_conn: ConnHandler) -> Rc<Self> {
        Rc::new(Shard {
            handle: hub.inner.shards[index].clone(),
            hub,
            registry: RefCell::new(Registry::new()),
            local: Notify::new(),
            last_rebuild: Cell::new(Instant::now()),
            lanes: RefCell::new(Lanes::default()),
            retired: RefCell::new(Vec::with_capacity(MAX_BATCH)),
            outcome: RefCell::new(Outcome::default()),
            ping: frame::encode(Opcode::Ping, b""),
            serve_conn,
            deadlines: RefCell::new(BinaryHeap::new()),
            deadline_wake: Notify::new(),
        })
    }

    /// Serves an accepted connection on this shard (HTTP, then perhaps an upgrade).
    pub(crate) fn serve(self: &Rc<Self>, stream: TcpStream, peer: SocketAddr) {
        (self.serve_conn)(self, stream, peer);
    }

    pub(crate) fn metrics(&self) -> &ShardMetrics {
        &self.hub.inner.metrics.shards[self.handle.index]
    }

    /// Runs the shard until shutdown, then closes its clients and returns.
    pub(crate) async fn run(self: Rc<Self>) {
        tokio::task::spawn_local(self.clone().ping_loop());
        if self.hub.verifier().is_some() {
            tokio::task::spawn_local(self.clone().deadline_loop());
        }
        self.dispatch().await;
        self.drain().await;
    }

    async fn dispatch(self: &Rc<Self>) {
        let mut shutdown = self.hub.inner.shutdown.subscribe();
        let mut pacer = Pacer::new(self.hub.inner.config.coalesce);
        // Earliest start of the next fan-out round (see `pacing`).
        let mut not_before: Option<Instant> = None;
        'dispatch: loop {
            self.handle.scheduled.store(false, Ordering::SeqCst);
            self.adopt_incoming();
            if let Some(t) = not_before {
                if Instant::now() >= t {
                    not_before = None;
                } else if self.has_pending() {
                    // Connections handed over meanwhile are adopted at once: their
                    // handshakes should not wait for the batch.
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(t.into()) => break,
                            _ = self.handle.adopt.notified() => self.adopt_incoming(),
                            _ = shutdown.wait_for(|s| *s) => break 'dispatch,
                        }
                    }
                    not_before = None;
                    continue;
                }
                // Woken with nothing to send (a registration, or the permit a frame
                // left while the last round drained it): the deadline still holds for
                // the next frame. Dropping it here made every other round unpaced.
            }
            let taken = self.take_inbox();
            let mut deadline = None;
            if self.lanes.borrow().behind() {
                let started = Instant::now();
                let (frames, bytes) = self.round(taken).await;
                not_before = pacer.after_round(started, started.elapsed(), frames, bytes);
            } else if self.registry.borrow().is_dirty() {
                let due = self.last_rebuild.get() + REBUILD_TICK;
                if Instant::now() >= due {
                    self.rebuild_if_dirty();
                } else {
                    deadline = Some(tokio::time::Instant::from_std(due));
                }
            }
            self.retire();
            if self.has_pending() || !self.handle.incoming.is_empty() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = self.handle.notify.notified() => {}
                _ = self.local.notified() => {}
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
    }

    /// Takes every connection handed over to this shard so far.
    fn adopt_incoming(self: &Rc<Self>) {
        while let Some(incoming) = self.handle.incoming.pop() {
            self.take(incoming);
        }
    }

    fn rebuild_if_dirty(&self) {
        let mut reg = self.registry.borrow_mut();
        if reg.is_dirty() {
            let snap = Arc::new(reg.rebuild());
            let old = self.handle.snapshot.swap(snap.clone());
            self.last_rebuild.set(Instant::now());
            drop(reg);
            if let Some(backplane) = self.hub.backplane() {
                // Interest changes per rebuild, not per connect: 10,000 clients joining
                // one topic within a tick cost one call.
                let index = self.handle.index;
                for topic in snap.topics().filter(|t| !old.has_topic(t)) {
                    backplane.set_interest(index, topic, true);
                }
                for topic in old.topics().filter(|t| !snap.has_topic(t)) {
                    backplane.set_interest(index, topic, false);
                }
            }
        }
    }

    /// Whether frames wait: in the inbox, or logged but not yet served to some lane.
    fn has_pending(&self) -> bool {
        !self.handle.inbox.is_empty() || self.lanes.borrow().behind()
    }

    /// Moves what the inbox holds into the lanes' log (up to [`MAX_BATCH`] frames held);
    /// returns the frames and bytes taken.
    fn take_inbox(&self) -> (usize, usize) {
        let mut lanes = self.lanes.borrow_mut();
        let (mut frames, mut bytes) = (0, 0);
        while lanes.len() < MAX_BATCH {
            let Some(p) = self.handle.inbox.pop() else {
                break;
            };
            frames += 1;
            bytes += p.frame.len();
            lanes.push(p);
        }
        (frames, bytes)
    }

    /// One fan-out round: serves every lane what it has not had yet. Before each lane
    /// after the first it lets the shard's other tasks run (readers, perhaps the
    /// publisher's) and takes in what reached the inbox, so a frame published mid-round
    /// goes out with the rest of it. `taken`: the frames and bytes taken before the
    /// round; returns them with those taken during it.
    async fn round(self: &Rc<Self>, taken: (usize, usize)) -> (usize, usize) {
        let (mut frames, mut bytes) = taken;
        let started = Instant::now();
        let mut lane = 0;
        // Registrations during the round may open lanes: they are served too.
        while lane < self.lanes.borrow().count() {
            if lane > 0 {
                tokio::task::yield_now().await;
                let (f, b) = self.take_inbox();
                frames += f;
                bytes += b;
            }
            // A client that joined (or subscribed, or unsubscribed) since the round began
            // must be in this lane's snapshot, or the lane would move past frames drained
            // after it joined without it. Other changes wait for the next round.
            let end = Lanes::keys(lane).end as usize;
            if lane == 0 || self.registry.borrow().changed_below(end) {
                self.rebuild_if_dirty();
            }
            self.serve_lane(lane);
            // Frames the last lane to have them just got are done: their latency ends here.
            self.retire();
            lane += 1;
        }
        let timings = self.hub.inner.metrics.timings.shard(self.handle.index);
        timings.round.observe(started.elapsed().as_secs_f64());
        self.metrics().fanout_rounds.fetch_add(1, Ordering::Relaxed);
        (frames, bytes)
    }

    /// Serves one lane the frames it has not had, and follows up on its clients.
    fn serve_lane(self: &Rc<Self>, lane: usize) {
        let snapshot = self.handle.snapshot.load();
        let mut outcome = self.outcome.borrow_mut();
        outcome.clear();
        {
            let lanes = self.lanes.borrow();
            let pending = lanes.pending(lane);
            if pending.is_empty() {
                return;
            }
            let mut reg = self.registry.borrow_mut();
            fan_out_lane(
                &mut reg,
                &snapshot,
                pending,
                Lanes::keys(lane),
                self.hub.inner.config.client_buffer,
                &mut outcome,
            );
        }
        self.lanes.borrow_mut().served(lane);
        let m = self.metrics();
        m.deliveries
            .fetch_add(outcome.deliveries, Ordering::Relaxed);
        m.bytes_out.fetch_add(outcome.bytes, Ordering::Relaxed);
        for &who in &outcome.to_flush {
            self.spawn_flusher(who);
        }
        for &who in &outcome.over_budget {
            self.close_slow_consumer(who);
        }
        for &who in &outcome.failed {
            self.remove(who);
        }
    }

    /// Lets go of the frames every lane has had, noting each one's publish-to-socket
    /// latency: it has now reached every socket of this shard it was for.
    fn retire(&self) {
        let mut done = self.retired.borrow_mut();
        self.lanes.borrow_mut().retire(&mut done);
        if done.is_empty() {
            return;
        }
        let now = Instant::now();
        let timings = self.hub.inner.metrics.timings.shard(self.handle.index);
        for p in done.iter() {
            let latency = now.saturating_duration_since(p.born).as_secs_f64();
            if p.remote {
                timings.remote.observe(latency);
            } else {
                timings.local.observe(latency);
            }
        }
        done.clear();
    }

    fn take(self: &Rc<Self>, incoming: Incoming) {
        match incoming {
            Incoming::Tcp(stream, peer) => match TcpStream::from_std(stream) {
                Ok(stream) => self.serve(stream, peer),
                Err(e) => warn!(error = %e, "cannot register accepted socket"),
            },
            Incoming::Upgraded {
                stream,
                read_buf,
                topics,
                id,
                negotiated,
                access,
                tls,
            } => {
                let who = self.register(id, &topics, negotiated, access);
                match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        let conn = match tls {
                            Some(session) => Conn::tls(stream, *session),
                            None => Conn::plain(stream),
                        };
                        self.attach(who, conn, read_buf);
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot adopt upgraded connection");
                        self.remove(who);
                    }
                }
            }
        }
    }

    /// Registers a client before its upgrade completes, so it receives every message
    /// published after it got its `101` response, in the encodings it negotiated.
    /// `access`: what its token allows, when auth is configured; its deadline is set.
    pub(crate) fn register(
        &self,
        id: u64,
        topics: &[String],
        negotiated: Negotiated,
        access: Option<Access>,
    ) -> ClientRef {
        let mut reg = self.registry.borrow_mut();
        let topics = topics.iter().map(|t| reg.intern(t)).collect();
        let mut client = Client::negotiated(id, topics, negotiated);
        let deadline = access.as_ref().map(|a| a.armed);
        client.access = access.map(Box::new);
        let who = reg.insert(client);
        drop(reg);
        self.lanes.borrow_mut().open(who.key);
        if let Some(at) = deadline {
            self.push_deadline(who, at);
        }
        self.metrics().connections.fetch_add(1, Ordering::Relaxed);
        if negotiated.deflate.is_some() {
            self.metrics()
                .deflate_connections
                .fetch_add(1, Ordering::Relaxed);
        }
        self.local.notify_one();
        who
    }

    /// Sets the shard's timer for `who` at `at`.
    fn push_deadline(&self, who: ClientRef, at: Instant) {
        let mut heap = self.deadlines.borrow_mut();
        // Entries of clients that left wait until they come due. With reconnects and
        // long-lived tokens they could pile up, so once they outnumber the live clients
        // they are swept out: a sweep is O(heap), and the heap at least doubles between
        // two sweeps, so each push pays O(1) for it.
        let mut reg = self.registry.borrow_mut();
        if heap.len() >= 2 * reg.len() + 1024 {
            heap.retain(|&Reverse((at, key, id))| {
                reg.get_mut(ClientRef { key, id })
                    .and_then(|c| c.access.as_deref())
                    .is_some_and(|a| a.armed == at)
            });
        }
        drop(reg);
        let earliest = heap.peek().is_none_or(|Reverse((next, ..))| at < *next);
        heap.push(Reverse((at, who.key, who.id)));
        drop(heap);
        if earliest {
            self.deadline_wake.notify_one();
        }
    }

    /// A client's access changed (`connect`, `refresh`): when its deadline moved
    /// earlier than the timer's entry, set a new entry. A later deadline needs none: the
    /// entry re-arms itself when it comes due.
    pub(crate) fn access_changed(&self, who: ClientRef) {
        let earlier = {
            let mut reg = self.registry.borrow_mut();
            let Some(a) = reg.get_mut(who).and_then(|c| c.access.as_deref_mut()) else {
                return;
            };
            let deadline = a.deadline();
            (deadline < a.armed).then(|| {
                a.armed = deadline;
                deadline
            })
        };
        if let Some(at) = earlier {
            self.push_deadline(who, at);
        }
    }

    /// Sleeps until the earliest auth deadline, handles what is due, and again.
    async fn deadline_loop(self: Rc<Self>) {
        loop {
            let next = self.deadlines.borrow().peek().map(|Reverse((at, ..))| *at);
            match next {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => self.expire_due(Instant::now()),
                    _ = self.deadline_wake.notified() => {}
                },
                None => self.deadline_wake.notified().await,
            }
        }
    }

    /// Closes the clients whose auth deadline has come: a token that expired (4401), or
    /// a v1 client that did not `connect` in time (4408). Entries that a refresh made
    /// early are re-armed at the new deadline.
    fn expire_due(self: &Rc<Self>, now: Instant) {
        enum Due {
            Rearm(Instant),
            Close(Bytes),
        }
        let mut due = Vec::new();
        {
            let mut heap = self.deadlines.borrow_mut();
            while let Some(&Reverse((at, key, id))) = heap.peek() {
                if at > now {
                    break;
                }
                heap.pop();
                due.push((at, ClientRef { key, id }));
            }
        }
        for (at, who) in due {
            let what = {
                let mut reg = self.registry.borrow_mut();
                let Some(c) = reg.get_mut(who) else { continue };
                let open = c.state == State::Open;
                let Some(a) = c.access.as_deref_mut() else {
                    continue;
                };
                // A later entry of a client that was re-armed earlier: not this one's job.
                if !open || a.armed != at {
                    continue;
                }
                let deadline = a.deadline();
                if deadline > now {
                    // Refreshed meanwhile: wait for the new deadline.
                    a.armed = deadline;
                    Due::Rearm(deadline)
                } else {
                    Due::Close(match &a.state {
                        AccessState::Pending { .. } => {
                            info!(client = who.id, "closing client: no connect in time");
                            frame::encode_close(grant::CONNECT_TIMEOUT, "no valid connect in time")
                        }
                        AccessState::Granted(g) => {
                            info!(
                                client = who.id,
                                sub = &*g.subject,
                                "closing client: token expired"
                            );
                            frame::encode_close(grant::TOKEN_EXPIRED, "token expired")
                        }
                    })
                }
            };
            match what {
                Due::Rearm(at) => self.push_deadline(who, at),
                Due::Close(close) => {
                    self.metrics().auth_closes.fetch_add(1, Ordering::Relaxed);
                    self.close_client(who, &close, true);
                }
            }
        }
    }

    /// Gives a registered client its connection and starts reading from it.
    pub(crate) fn attach(self: &Rc<Self>, who: ClientRef, conn: Conn, read_buf: Bytes) {
        let tls = conn.is_tls();
        let conn = Rc::new(conn);
        let mut reg = self.registry.borrow_mut();
        let Some(client) = reg.get_mut(who) else {
            return; // removed meanwhile (shutdown); dropping the stream closes it
        };
        client.attach(conn.clone());
        let flush = client.needs_flusher();
        let reader = tokio::task::spawn_local(crate::engine::reader::run(
            self.clone(),
            who,
            conn,
            read_buf,
            client.deflate(),
        ));
        client.reader = Some(reader.abort_handle());
        drop(reg);
        if flush {
            self.spawn_flusher(who);
        } else if tls {
            // Whatever the handshake left in rustls' send buffer (session tickets).
            self.send_tls_output(who);
        }
    }

    /// Unregisters a client and closes its socket.
    pub(crate) fn remove(&self, who: ClientRef) {
        let removed = self.registry.borrow_mut().remove(who);
        if let Some(client) = removed {
            if let Some(reader) = &client.reader {
                reader.abort();
            }
            self.metrics().connections.fetch_sub(1, Ordering::Relaxed);
            if client.deflate().is_some() {
                self.metrics()
                    .deflate_connections
                    .fetch_sub(1, Ordering::Relaxed);
            }
            self.hub.release_slot();
            self.local.notify_one();
            debug!(
                client = who.id,
                sub = client.subject().unwrap_or("-"),
                shard = self.handle.index,
                "client removed"
            );
        }
    }

    /// The subject of a client's token, for logs.
    pub(crate) fn subject_of(&self, who: ClientRef) -> Option<Arc<str>> {
        let mut reg = self.registry.borrow_mut();
        reg.get_mut(who)?.grant().map(|g| g.subject.clone())
    }

    /// Marks that a client seems alive (any frame from it).
    pub(crate) fn touch(&self, who: ClientRef) {
        if let Some(c) = self.registry.borrow_mut().get_mut(who) {
            c.last_seen = Instant::now();
        }
    }

    /// Registrations or subscriptions changed: the dispatcher rebuilds the snapshot at
    /// its next round (or tick), not once per change.
    pub(crate) fn changed(&self) {
        self.local.notify_one();
    }

    /// Sends one frame (a v1 reply, with its replay) through the client's single writer,
    /// counted against its budget like any delivery.
    pub(crate) fn send_frame(self: &Rc<Self>, who: ClientRef, frame: &Bytes) {
        let budget = self.hub.inner.config.client_buffer;
        self.write_one(who, |c| c.deliver(frame, budget));
    }

    /// Answers a client's ping through its single writer. The pong counts against the
    /// client's budget like any frame: one that pings but never reads is a slow consumer.
    pub(crate) fn send_pong(self: &Rc<Self>, who: ClientRef, pong: &Bytes) {
        let budget = self.hub.inner.config.client_buffer;
        self.write_one(who, |c| c.send_control(pong, Control::Pong, budget));
    }

    /// Sends what a TLS client's session has to send on its own (an alert, a key
    /// update), through the client's single writer, so that records stay in order.
    pub(crate) fn send_tls_output(self: &Rc<Self>, who: ClientRef) {
        self.write_one(who, Client::send_tls_output);
    }

    /// One write to one client outside the fan-out, and what follows from it: a flush
    /// task, a slow-consumer close or the client's removal.
    fn write_one(self: &Rc<Self>, who: ClientRef, write: impl FnOnce(&mut Client) -> Delivery) {
        let mut reg = self.registry.borrow_mut();
        let Some(c) = reg.get_mut(who) else { return };
        match write(c) {
            Delivery::Sent | Delivery::Skipped => {}
            Delivery::Queued => {
                let flush = c.needs_flusher();
                drop(reg);
                if flush {
                    self.spawn_flusher(who);
                }
            }
            Delivery::OverBudget => {
                drop(reg);
                self.close_slow_consumer(who);
            }
            Delivery::Failed => {
                drop(reg);
                self.remove(who);
            }
        }
    }

    /// Closes a client whose queue went over its budget: counted, logged, queue freed.
    fn close_slow_consumer(self: &Rc<Self>, who: ClientRef) {
        // A client goes over its budget again with every frame a fan-out round still
        // hands it (on two topics, one per frame): it is one slow consumer, closed once.
        if self
            .registry
            .borrow_mut()
            .get_mut(who)
            .is_none_or(|c| c.close_sent)
        {
            return;
        }
        let cfg = &self.hub.inner.config;
        self.metrics()
            .slow_consumer_closes
            .fetch_add(1, Ordering::Relaxed);
        warn!(
            client = who.id,
            sub = self.subject_of(who).as_deref().unwrap_or("-"),
            shard = self.handle.index,
            "closing slow consumer"
        );
        let close = frame::encode_close(cfg.slow_consumer_code, "slow consumer: too far behind");
        self.close_client(who, &close, true);
    }

    /// Starts a close handshake with `close` (an encoded close frame). With `discard`
    /// the client's queue is dropped first (slow consumers, protocol errors).
    pub(crate) fn close_client(self: &Rc<Self>, who: ClientRef, close: &Bytes, discard: bool) {
        let mut reg = self.registry.borrow_mut();
        let Some(c) = reg.get_mut(who) else { return };
        match c.start_close(close, discard) {
            Ok(true) => {
                drop(reg);
                self.drained(who);
            }
            Ok(false) => {
                let flush = c.needs_flusher();
                drop(reg);
                if flush {
                    self.spawn_flusher(who);
                }
                self.close_deadline(who);
            }
            Err(_) => {
                drop(reg);
                self.remove(who);
            }
        }
    }

    /// A close handshake that cannot finish (the peer reads nothing) must not hold the
    /// connection forever: after the pong timeout the client is dropped regardless.
    fn close_deadline(self: &Rc<Self>, who: ClientRef) {
        let shard = self.clone();
        let after = self.hub.inner.config.pong_timeout;
        tokio::task::spawn_local(async move {
            tokio::time::sleep(after).await;
            shard.remove(who);
        });
    }

    /// The client sent its close frame: answer it (unless we closed first) and finish.
    pub(crate) fn client_closed(self: &Rc<Self>, who: ClientRef, echo: &Bytes) {
        if let Some(c) = self.registry.borrow_mut().get_mut(who) {
            c.close_received = true;
        }
        self.close_client(who, echo, false);
    }

    /// A client's queue just emptied: after our close frame, half-close the socket, and
    /// once both sides have closed, let the client go.
    fn drained(&self, who: ClientRef) {
        let mut reg = self.registry.borrow_mut();
        let Some(c) = reg.get_mut(who) else { return };
        if !c.close_sent {
            return;
        }
        c.shutdown_write();
        let done = c.close_received || c.conn().is_none();
        drop(reg);
        if done {
            self.remove(who);
        }
    }

    fn spawn_flusher(self: &Rc<Self>, who: ClientRef) {
        tokio::task::spawn_local(self.clone().flush_loop(who));
    }

    /// Writes a client's queue whenever its socket becomes writable, until it is empty.
    async fn flush_loop(self: Rc<Self>, who: ClientRef) {
        loop {
            let conn = {
                let mut reg = self.registry.borrow_mut();
                let Some(c) = reg.get_mut(who) else { return };
                match c.flush() {
                    Ok(Flushed::Empty) => {
                        c.flushing = false;
                        drop(reg);
                        self.drained(who);
                        return;
                    }
                    Ok(Flushed::Blocked) => c.conn().cloned(),
                    Err(_) => None,
                }
            };
            let Some(conn) = conn else {
                self.remove(who);
                return;
            };
            if conn.socket().writable().await.is_err() {
                self.remove(who);
                return;
            }
        }
    }

    async fn ping_loop(self: Rc<Self>) {
        let cfg = &self.hub.inner.config;
        let mut tick = tokio::time::interval(cfg.ping_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.ping_sweep();
            if self.handle.index == 0 {
                // Expired history goes at once on its topic's next use; this frees the
                // memory of topics nobody touches.
                self.hub.history().sweep(Instant::now());
            }
        }
    }

    /// Pings every client, closes those silent too long, and gives up on close
    /// handshakes that did not finish in time.
    fn ping_sweep(self: &Rc<Self>) {
        let cfg = &self.hub.inner.config;
        let now = Instant::now();
        let silent_limit = cfg.ping_interval + cfg.pong_timeout;
        let budget = cfg.client_buffer;
        let (mut flush, mut silent, mut expired) = (Vec::new(), Vec::new(), Vec::new());
        let mut slow = Vec::new();
        {
            let mut reg = self.registry.borrow_mut();
            for (who, c) in reg.iter_mut() {
                match c.state {
                    State::Closing { since } => {
                        if now.duration_since(since) > cfg.pong_timeout {
                            expired.push(who);
                        }
                    }
                    State::Open if c.conn().is_none() => {}
                    State::Open if now.duration_since(c.last_seen) > silent_limit => {
                        silent.push(who)
                    }
                    State::Open => match c.send_control(&self.ping, Control::Ping, budget) {
                        Delivery::Sent | Delivery::Skipped => {}
                        Delivery::Queued => {
                            if c.needs_flusher() {
                                flush.push(who);
                            }
                        }
                        Delivery::OverBudget => slow.push(who),
                        Delivery::Failed => expired.push(who),
                    },
                }
            }
        }
        for who in flush {
            self.spawn_flusher(who);
        }
        for who in slow {
            self.close_slow_consumer(who);
        }
        if !silent.is_empty() {
            let close = frame::encode_close(1008, "ping timeout");
            for who in silent {
                self.metrics().ping_timeouts.fetch_add(1, Ordering::Relaxed);
                info!(
                    client = who.id,
                    sub = self.subject_of(who).as_deref().unwrap_or("-"),
                    "closing client: no pong within the timeout"
                );
                // The peer is unresponsive: say why (best effort), then let it go.
                if let Some(c) = self.registry.borrow_mut().get_mut(who) {
                    let _ = c.start_close(&close, true);
                    c.shutdown_write();
                }
                self.remove(who);
            }
        }
        for who in expired {
            self.remove(who);
        }
    }

    /// Shutdown: close every client with 1001, in batches spread over half the drain
    /// window so they do not all reconnect elsewhere at the same instant; then wait for
    /// the close handshakes (or the deadline).
    async fn drain(self: &Rc<Self>) {
        // Publishers were told their messages were accepted: deliver what is queued.
        loop {
            let taken = self.take_inbox();
            let behind = self.lanes.borrow().behind();
            if behind {
                self.round(taken).await;
            }
            self.retire();
            if !behind && self.handle.inbox.is_empty() {
                break;
            }
        }
        // Connections handed over but not taken yet: a plain HTTP connection is just
        // closed; an upgraded one (it already has its 101) is adopted, to get its 1001.
        while let Some(incoming) = self.handle.incoming.pop() {
            if let Incoming::Upgraded { .. } = incoming {
                self.take(incoming);
            }
        }
        let cfg = &self.hub.inner.config;
        let deadline = tokio::time::Instant::now() + cfg.drain_timeout;
        let all: Vec<ClientRef> = self
            .registry
            .borrow_mut()
            .iter_mut()
            .map(|(w, _)| w)
            .collect();
        let close = frame::encode_close(1001, "server shutting down");
        let batches = if all.len() <= 256 { 1 } else { 10 };
        let per_batch = all.len().div_ceil(batches).max(1);
        let pause = cfg.drain_timeout / 2 / batches as u32;
        for (i, chunk) in all.chunks(per_batch).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for &who in chunk {
                self.close_client(who, &close, false);
            }
        }
        while !self.registry.borrow().is_empty() {
            tokio::select! {
                _ = self.local.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(shard = self.handle.index, left = self.registry.borrow().len(), "drain deadline passed; dropping remaining clients");
                    break;
                }
            }
        }
    }
}
