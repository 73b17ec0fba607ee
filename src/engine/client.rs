//! One connected client: its id, its topics, its socket and its outbound queue.
//!
//! This is the hub's `Client`, owned by exactly one shard and touched only by that shard's
//! thread. Writes to the socket happen in one place — [`Client::deliver`] for the fast
//! path and [`Client::flush`] for what had to be queued — so frames never interleave.
//!
//! The fast path writes a shared frame straight from the caller's buffer with one
//! non-blocking `write`; only when the socket is full does the client keep a reference
//! (`Bytes` clone or slice) in its queue. The queue is bounded in bytes by the caller's
//! budget: a client over it is a slow consumer and gets closed, its queue freed.
//!
//! A TLS client takes one branch off that path (see [`crate::engine::transport`]): the
//! same shared bytes are sealed into its session and the records written at once; its
//! queue holds the same plaintext references, sealed when they leave it, and the
//! ciphertext its socket has not taken yet counts against the same budget.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use tokio::task::AbortHandle;

use crate::engine::grant::{Access, Grant};
use crate::engine::transport::Conn;
use crate::wire::extensions::Deflate;

/// What a client agreed to in its opening handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// It speaks protocol v1 (`hubcast.v1`): it gets pushes, not plain frames.
    pub v1: bool,
    /// It negotiated permessage-deflate: it gets the compressed frame of each message
    /// that has one, and may send compressed messages.
    pub deflate: Option<Deflate>,
}

/// Lifecycle of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Receiving broadcasts (with or without a socket attached yet).
    Open,
    /// A close frame is queued or sent; no more data frames are accepted.
    Closing {
        /// When the close started (the shard gives up on the handshake after a deadline).
        since: Instant,
    },
}

/// What happened to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Written to the socket in full.
    Sent,
    /// Queued (entirely or in part); the client needs a flush when writable.
    Queued,
    /// Queued, and the queue is now over the client's budget: a slow consumer.
    OverBudget,
    /// The socket failed; the client must be removed.
    Failed,
    /// The client is closing and takes no more data.
    Skipped,
}

/// The control frames a client's writer sends besides broadcasts and the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Our keep-alive ping.
    Ping,
    /// The answer to a client's ping.
    Pong,
}

/// Outcome of a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued went out.
    Empty,
    /// The socket is full; wait until writable and flush again.
    Blocked,
}

/// A client of one shard.
#[derive(Debug)]
pub struct Client {
    /// Server-wide unique id (never reused, unlike slab keys).
    pub id: u64,
    /// Topics joined at connect time (interned per shard).
    pub topics: Box<[Arc<str>]>,
    conn: Option<Rc<Conn>>,
    queue: VecDeque<Bytes>,
    /// Bytes in `queue`, plus (TLS) ciphertext sealed but not taken by the socket: kept
    /// in one number so that a plain client's budget check is what it always was.
    queued: usize,
    /// Whether the front of the queue is the rest of a partially written frame.
    front_partial: bool,
    /// Whether the back of the queue is a pong nobody has started writing: a newer pong
    /// replaces it (RFC 6455 §5.5.3 allows answering only the latest ping).
    tail_pong: bool,
    pub(crate) state: State,
    /// Last time any frame came from the client (pong or data).
    pub(crate) last_seen: Instant,
    /// A flush task is running for this client.
    pub flushing: bool,
    /// The client's close frame arrived: once ours is out, the connection can go.
    pub(crate) close_received: bool,
    /// Our close frame is queued or sent: never send a second one.
    pub(crate) close_sent: bool,
    pub(crate) reader: Option<AbortHandle>,
    /// A v1 client has a floor on some topic (checked before looking at `v1`).
    pub(crate) has_floor: bool,
    /// Protocol v1 state; `None` for plain clients (who pay one pointer for it).
    v1: Option<Box<V1State>>,
    /// What the client's token allows, when auth is configured (one pointer otherwise).
    /// The fan-out never looks at it: grants are checked on commands and messages.
    pub(crate) access: Option<Box<Access>>,
    /// permessage-deflate, when negotiated.
    deflate: Option<Deflate>,
}

/// What a protocol v1 client needs beyond a plain one.
#[derive(Debug, Default)]
pub struct V1State {
    /// Per topic, the highest offset this client must not get live: it subscribed at that
    /// position (or was replayed up to it), while older messages may still sit in the
    /// shard's inbox. Removed once the fan-out has passed it.
    floors: Vec<(Arc<str>, u64)>,
}

impl Client {
    /// A client without a socket yet: frames for it queue until [`Client::attach`].
    pub fn new(id: u64, topics: Box<[Arc<str>]>) -> Self {
        Client {
            id,
            topics,
            conn: None,
            queue: VecDeque::new(),
            queued: 0,
            front_partial: false,
            tail_pong: false,
            state: State::Open,
            last_seen: Instant::now(),
            flushing: false,
            close_received: false,
            close_sent: false,
            reader: None,
            has_floor: false,
            v1: None,
            access: None,
            deflate: None,
        }
    }

    /// A client with what its handshake negotiated (protocol v1, permessage-deflate).
    pub fn negotiated(id: u64, topics: Box<[Arc<str>]>, n: Negotiated) -> Self {
        let mut c = if n.v1 {
            Client::new_v1(id, topics)
        } else {
            Client::new(id, topics)
        };
        c.deflate = n.deflate;
        c
    }

    /// A client speaking protocol v1 (`hubcast.v1`): it gets pushes, not plain frames.
    pub fn new_v1(id: u64, topics: Box<[Arc<str>]>) -> Self {
        let mut c = Client::new(id, topics);
        c.v1 = Some(Box::default());
        c
    }

    /// Whether the client speaks protocol v1.
    #[inline]
    pub fn is_v1(&self) -> bool {
        self.v1.is_some()
    }

    /// The client's grant, once its token is verified (`None` without auth, or while a
    /// v1 client has yet to `connect`).
    pub fn grant(&self) -> Option<&Grant> {
        self.access.as_deref().and_then(Access::grant)
    }

    /// The token's subject, for logs.
    pub fn subject(&self) -> Option<&str> {
        self.grant().map(|g| &*g.subject)
    }

    /// Whether the client may subscribe to `topic` (or ask for its presence): always
    /// without auth; with auth, what its grant allows — nothing before it connected.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        match self.access.as_deref() {
            None => true,
            Some(a) => a.grant().is_some_and(|g| g.may_subscribe(topic)),
        }
    }

    /// Whether the client may publish to `topic` on a server in feed mode (`feed`) or
    /// chat mode: without auth, anything in chat mode and nothing in feed mode; with
    /// auth, what its grant allows (see [`Grant::may_publish`]) — nothing before it
    /// connected.
    pub fn may_publish(&self, topic: &str, feed: bool) -> bool {
        match self.access.as_deref() {
            None => !feed,
            Some(a) => a
                .grant()
                .is_some_and(|g| g.may_publish(topic, self.has_topic(topic), feed)),
        }
    }

    /// permessage-deflate as negotiated, if it was.
    #[inline]
    pub fn deflate(&self) -> Option<Deflate> {
        self.deflate
    }

    /// Whether the client is subscribed to `topic`.
    pub fn has_topic(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| &**t == topic)
    }

    /// Adds `topic` (interned by the caller); live messages with offsets up to `floor`
    /// will not be delivered (they are covered by the reply's position or a replay).
    pub fn subscribe(&mut self, topic: Arc<str>, floor: u64) {
        let mut topics = std::mem::take(&mut self.topics).into_vec();
        topics.push(topic.clone());
        self.topics = topics.into_boxed_slice();
        if let Some(v1) = self.v1.as_deref_mut() {
            v1.floors.retain(|(t, _)| *t != topic);
            v1.floors.push((topic, floor));
            self.has_floor = true;
        }
    }

    /// Removes `topic`; returns whether the client had it.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        if !self.has_topic(topic) {
            return false;
        }
        let mut topics = std::mem::take(&mut self.topics).into_vec();
        topics.retain(|t| &**t != topic);
        self.topics = topics.into_boxed_slice();
        if let Some(v1) = self.v1.as_deref_mut() {
            v1.floors.retain(|(t, _)| &**t != topic);
            self.has_floor = !v1.floors.is_empty();
        }
        true
    }

    /// Of a run of pushes of `topic` with `offsets` (increasing), the index of the first
    /// one this client gets live: 0 without a floor, `offsets.len()` when all are covered.
    /// A floor the run has passed is dropped.
    #[inline]
    pub fn first_live(&mut self, topic: &str, offsets: &[u64]) -> usize {
        if !self.has_floor {
            return 0;
        }
        let Some(v1) = self.v1.as_deref_mut() else {
            return 0;
        };
        let Some(i) = v1.floors.iter().position(|(t, _)| &**t == topic) else {
            return 0;
        };
        let floor = v1.floors[i].1;
        let first = offsets.partition_point(|&o| o <= floor);
        if first < offsets.len() {
            // Every later message has a higher offset: the floor has done its job.
            v1.floors.swap_remove(i);
            self.has_floor = !v1.floors.is_empty();
        }
        first
    }

    /// Gives the client its connection (after the upgrade completed).
    pub fn attach(&mut self, conn: Rc<Conn>) {
        self.last_seen = Instant::now();
        self.conn = Some(conn);
    }

    /// The connection, once attached.
    pub fn conn(&self) -> Option<&Rc<Conn>> {
        self.conn.as_ref()
    }

    /// Bytes waiting to go out: the queue, and for a TLS client the ciphertext its
    /// socket has not taken yet.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Whether anything waits to go out (queue, or sealed ciphertext).
    #[inline]
    fn has_pending(&self) -> bool {
        !self.queue.is_empty() || self.sealed_waiting()
    }

    /// Whether TLS ciphertext waits for the socket. Out of line: a plain client with
    /// queued frames never gets here, and keeping it out keeps the callers on the
    /// fan-out path small enough to inline.
    #[inline(never)]
    fn sealed_waiting(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.sealed_bytes() > 0)
    }

    /// What is queued, in order (tests look at which encoding a client got).
    #[cfg(test)]
    pub(crate) fn queued_data(&self) -> Vec<u8> {
        self.queue.iter().flat_map(|b| b.iter().copied()).collect()
    }

    /// Delivers one shared frame (or batch of frames): written directly if nothing is
    /// queued and the socket takes it all, otherwise queued by reference. `budget` bounds
    /// the queue in bytes.
    #[inline]
    pub fn deliver(&mut self, frame: &Bytes, budget: usize) -> Delivery {
        if self.state != State::Open {
            return Delivery::Skipped;
        }
        match self.write_or_queue(frame) {
            Ok(true) => Delivery::Sent,
            Ok(false) if self.queued > budget => Delivery::OverBudget,
            Ok(false) => Delivery::Queued,
            Err(_) => Delivery::Failed,
        }
    }

    /// Sends a ping or pong frame between whole frames. Control frames count against
    /// the same `budget` as broadcasts — a client that pings but never reads would
    /// otherwise grow its queue by one pong per ping — and a pong still waiting at the
    /// back of the queue is replaced by the newer one rather than queued behind it.
    /// Nothing goes out after our close frame.
    pub fn send_control(&mut self, frame: &Bytes, kind: Control, budget: usize) -> Delivery {
        if self.close_sent {
            return Delivery::Skipped;
        }
        let replaceable = self.tail_pong && !(self.front_partial && self.queue.len() == 1);
        if kind == Control::Pong
            && replaceable
            && let Some(tail) = self.queue.back_mut()
        {
            self.queued = self.queued - tail.len() + frame.len();
            *tail = frame.clone();
            return Delivery::Queued;
        }
        match self.write_or_queue(frame) {
            Ok(true) => Delivery::Sent,
            Ok(false) => {
                self.tail_pong = kind == Control::Pong;
                if self.queued > budget {
                    Delivery::OverBudget
                } else {
                    Delivery::Queued
                }
            }
            Err(_) => Delivery::Failed,
        }
    }

    /// Starts the closing handshake with an encoded close frame. With `discard`, what is
    /// queued is dropped first (keeping only the rest of a half-written frame, so the
    /// stream stays well-formed). Returns `Ok(true)` when nothing remains queued.
    pub fn start_close(&mut self, close: &Bytes, discard: bool) -> io::Result<bool> {
        if self.close_sent {
            return Ok(!self.has_pending());
        }
        if discard {
            let keep = usize::from(self.front_partial).min(self.queue.len());
            self.queue.truncate(keep);
            // Sealed ciphertext is part of the TLS stream already: it stays.
            let sealed = self.conn.as_ref().map_or(0, |c| c.sealed_bytes());
            self.queued = self.queue.iter().map(Bytes::len).sum::<usize>() + sealed;
        }
        self.close_sent = true;
        if let State::Open = self.state {
            self.state = State::Closing {
                since: Instant::now(),
            };
        }
        self.write_or_queue(close)
    }

    fn write_or_queue(&mut self, frame: &Bytes) -> io::Result<bool> {
        if self.queue.is_empty()
            && let Some(conn) = &self.conn
        {
            if conn.is_tls() {
                return self.seal_or_queue(frame);
            }
            match conn.socket().try_write(frame) {
                Ok(n) if n == frame.len() => return Ok(true),
                Ok(n) => {
                    self.front_partial = n > 0;
                    self.push(frame.slice(n..));
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        self.push(frame.clone());
        Ok(false)
    }

    /// [`Client::write_or_queue`] for a TLS client with nothing queued: seal and write
    /// while the socket keeps up; queue the plaintext it did not get to (a slice of the
    /// shared buffer, as for a plain client). `Ok(true)` when all of it went out.
    #[cold]
    #[inline(never)]
    fn seal_or_queue(&mut self, frame: &Bytes) -> io::Result<bool> {
        let Some(conn) = self.conn.clone() else {
            self.push(frame.clone());
            return Ok(false);
        };
        let mut at = 0;
        // Ciphertext still waiting goes first: then the whole frame waits, unsealed.
        while conn.sealed_bytes() == 0 && at < frame.len() {
            at += self.seal(&conn, &frame[at..])?;
        }
        if at == frame.len() {
            return Ok(conn.sealed_bytes() == 0);
        }
        self.front_partial = at > 0;
        self.push(frame.slice(at..));
        Ok(false)
    }

    fn push(&mut self, b: Bytes) {
        self.tail_pong = false;
        self.queued += b.len();
        self.queue.push_back(b);
    }

    /// Whether a flush task must be started for this client (and marks it started).
    #[inline]
    pub fn needs_flusher(&mut self) -> bool {
        if !self.flushing && self.conn.is_some() && self.has_pending() {
            self.flushing = true;
            true
        } else {
            false
        }
    }

    /// Writes as much of the queue as the socket takes, up to 64 buffers per `writev`.
    pub fn flush(&mut self) -> io::Result<Flushed> {
        let Some(conn) = self.conn.clone() else {
            return Ok(Flushed::Blocked);
        };
        if conn.is_tls() {
            return self.flush_sealing(&conn);
        }
        let conn = conn.socket();
        while !self.queue.is_empty() {
            let mut slices: [IoSlice<'_>; 64] = std::array::from_fn(|_| IoSlice::new(&[]));
            let mut n = 0;
            for (slot, b) in slices.iter_mut().zip(self.queue.iter()) {
                *slot = IoSlice::new(b);
                n += 1;
            }
            let written = match conn.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) => return Err(e),
            };
            self.consume(written);
        }
        Ok(Flushed::Empty)
    }

    /// [`Client::flush`] for a TLS client: sealed ciphertext first, then whatever rustls
    /// has to send on its own (an alert, a key update), then the queue, sealed a chunk
    /// at a time while the socket keeps up.
    fn flush_sealing(&mut self, conn: &Conn) -> io::Result<Flushed> {
        loop {
            let before = conn.sealed_bytes();
            let all_out = conn.send_sealed()?;
            self.queued -= before - conn.sealed_bytes();
            if !all_out {
                return Ok(Flushed::Blocked);
            }
            let Some(front) = self.queue.front().cloned() else {
                self.seal(conn, &[])?;
                return Ok(if conn.sealed_bytes() == 0 {
                    Flushed::Empty
                } else {
                    Flushed::Blocked
                });
            };
            let sealed = self.seal(conn, &front)?;
            self.consume(sealed);
        }
    }

    /// [`Conn::seal`] (nothing sealed may be waiting), counting what the socket did
    /// not take in `queued`.
    fn seal(&mut self, conn: &Conn, plain: &[u8]) -> io::Result<usize> {
        let taken = conn.seal(plain)?;
        self.queued += conn.sealed_bytes();
        Ok(taken)
    }

    /// Sends what rustls has to send on its own (the reader saw it ask), unless
    /// something is queued — then the flush task picks it up on its way.
    pub fn send_tls_output(&mut self) -> Delivery {
        if self.has_pending() || self.flushing {
            return Delivery::Queued;
        }
        let Some(conn) = self.conn.clone() else {
            return Delivery::Skipped;
        };
        match self.seal(&conn, &[]) {
            Ok(_) if conn.sealed_bytes() == 0 => Delivery::Sent,
            Ok(_) => Delivery::Queued,
            Err(_) => Delivery::Failed,
        }
    }

    fn consume(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                self.queue.pop_front();
                self.front_partial = false;
                if self.queue.is_empty() {
                    self.tail_pong = false;
                }
            } else {
                front.advance(written);
                self.front_partial = true;
                written = 0;
            }
        }
    }

    /// Half-closes the socket for writing (after our close frame went out), so the
    /// client sees EOF after the close frame.
    pub fn shutdown_write(&self) {
        if let Some(conn) = &self.conn {
            conn.shutdown_write();
        }
    }

    /// Drops everything queued (benchmarks reset clients between rounds with it).
    pub fn discard_queue(&mut self) {
        self.tail_pong = false;
        self.queue.clear();
        self.queued = self.conn.as_ref().map_or(0, |c| c.sealed_bytes());
        self.front_partial = false;
    }

    /// Whether nothing waits to go out.
    pub fn is_drained(&self) -> bool {
        !self.has_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{Opcode, encode, encode_close};

    #[test]
    fn unattached_client_queues_until_budget() {
        let mut c = Client::new(1, Box::new([]));
        let f = encode(Opcode::Text, &[b'x'; 100]);
        assert_eq!(c.deliver(&f, 250), Delivery::Queued);
        assert_eq!(c.deliver(&f, 250), Delivery::Queued);
        assert_eq!(c.deliver(&f, 250), Delivery::OverBudget);
        assert_eq!(c.queued_bytes(), 3 * f.len());
    }

    #[test]
    fn close_discards_queue_but_keeps_half_written_frame() {
        let mut c = Client::new(1, Box::new([]));
        let f = encode(Opcode::Text, &[b'x'; 100]);
        for _ in 0..3 {
            c.deliver(&f, usize::MAX);
        }
        c.consume(10); // as if a writev wrote 10 bytes of the first frame
        assert!(c.front_partial);
        let close = encode_close(1008, "slow");
        assert!(!c.start_close(&close, true).expect("queue"));
        assert_eq!(
            c.queue.len(),
            2,
            "rest of the first frame, then the close frame"
        );
        assert_eq!(c.queued_bytes(), f.len() - 10 + close.len());
        assert_eq!(
            c.deliver(&f, usize::MAX),
            Delivery::Skipped,
            "closing takes no data"
        );
        assert!(
            !c.start_close(&close, true).expect("once"),
            "second close is not queued"
        );
        assert_eq!(c.queue.len(), 2);
    }

    #[test]
    fn pongs_coalesce_and_count_against_the_budget() {
        let mut c = Client::new(1, Box::new([]));
        let pong = |b: u8| encode(Opcode::Pong, &[b; 125]);
        assert_eq!(
            c.send_control(&pong(1), Control::Pong, 1024),
            Delivery::Queued
        );
        for b in 2..=200 {
            assert_eq!(
                c.send_control(&pong(b), Control::Pong, 1024),
                Delivery::Queued
            );
        }
        assert_eq!(c.queue.len(), 1, "a million pings cost one queued pong");
        assert_eq!(c.queue[0], pong(200), "the latest pong is the one kept");
        assert_eq!(c.queued_bytes(), pong(200).len());
        // Behind a broadcast the pong cannot be replaced in place; it is queued and
        // counted, and crossing the budget makes the client a slow consumer.
        let data = encode(Opcode::Text, &[b'x'; 900]);
        assert_eq!(c.deliver(&data, 1024), Delivery::OverBudget);
        assert_eq!(
            c.send_control(&pong(7), Control::Pong, 1024),
            Delivery::OverBudget
        );
        assert_eq!(
            c.send_control(&pong(8), Control::Pong, 1024),
            Delivery::Queued
        );
        assert_eq!(c.queue.len(), 3);
        // A ping is never merged into a pong.
        let ping = encode(Opcode::Ping, b"");
        c.send_control(&ping, Control::Ping, usize::MAX);
        c.send_control(&pong(9), Control::Pong, usize::MAX);
        assert_eq!(c.queue.len(), 5);
    }

    #[test]
    fn a_half_written_pong_is_not_replaced() {
        let mut c = Client::new(1, Box::new([]));
        let pong = encode(Opcode::Pong, &[1; 100]);
        c.send_control(&pong, Control::Pong, usize::MAX);
        c.consume(10);
        c.send_control(&encode(Opcode::Pong, &[2; 100]), Control::Pong, usize::MAX);
        assert_eq!(
            c.queue.len(),
            2,
            "the rest of the first pong, then the new one"
        );
        assert_eq!(c.queued_bytes(), pong.len() - 10 + pong.len());
    }

    #[test]
    fn nothing_goes_out_after_the_close_frame() {
        let mut c = Client::new(1, Box::new([]));
        c.start_close(&encode_close(1000, ""), false)
            .expect("queued");
        let pong = encode(Opcode::Pong, b"late");
        assert_eq!(
            c.send_control(&pong, Control::Pong, usize::MAX),
            Delivery::Skipped
        );
        assert_eq!(c.queue.len(), 1);
    }

    #[test]
    fn consume_advances_across_buffers() {
        let mut c = Client::new(1, Box::new([]));
        let a = Bytes::from_static(b"aaaa");
        let b = Bytes::from_static(b"bbbb");
        c.deliver(&a, usize::MAX);
        c.deliver(&b, usize::MAX);
        c.consume(6);
        assert_eq!(c.queue.len(), 1);
        assert_eq!(&c.queue[0][..], b"bb");
        assert_eq!(c.queued_bytes(), 2);
    }
}
