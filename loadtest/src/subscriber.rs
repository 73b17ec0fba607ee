//! The receive loop of a WebSocket connection: the measured hot path.
//!
//! Owns reading: wait for readiness, `try_read` into the thread's shared
//! buffer (after the connection's small carry-over of a partial frame), parse
//! every frame in that read, account each data message once, keep the unparsed
//! tail, repeat. One clock read per `read()` timestamps all messages in it. A
//! frame too large for the shared buffer is assembled in the connection's own
//! carry buffer instead. Subscribers account stamps into the thread's
//! statistics (protocol v1 subscribers first take the push apart and check
//! its offset; recovery subscribers account into their recovery slot);
//! publisher connections (chat echo) are only counted. The loop also flushes
//! output the protocol queued (pongs, close replies) and reports how the
//! connection ended.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::Interest;

use crate::conn::Conn;
use crate::payload::{self, Stamp};
use crate::proto::{Outcome, Proto};
use crate::recovery::{self, Phase};
use crate::stats::{Disconnects, SeqTracker, ThreadStats};
use crate::v1::{self, OffsetCheck, Offsets};
use crate::worker::{Live, READ_BUF, ThreadCtx};

/// Frames whose total size exceeds this are assembled in the connection's
/// own buffer rather than the thread's.
const BIG_FRAME: usize = READ_BUF / 2;
/// How long to wait for the server to close TCP after the close handshake.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// What a connection is for.
#[derive(Debug)]
pub enum Role {
    /// Measured subscriber.
    Subscriber(Sub),
    /// Publisher connection: received data is counted, not measured.
    Publisher,
}

impl Role {
    /// The recovery slot a subscriber accounts into, if any.
    pub fn recovery(&self) -> Option<(Phase, Rc<RefCell<recovery::Slot>>)> {
        match self {
            Self::Subscriber(Sub { v1: Some(v), .. }) => v.rec.clone(),
            _ => None,
        }
    }
}

/// A measured subscriber's receive state.
#[derive(Debug)]
pub struct Sub {
    /// One sequence tracker per publisher.
    pub seqs: Vec<SeqTracker>,
    /// Protocol v1 state; `None` for plain subscribers.
    pub v1: Option<Box<V1Sub>>,
}

impl Sub {
    /// A plain subscriber for `pubs` publishers.
    pub fn plain(pubs: usize) -> Self {
        Self {
            seqs: vec![SeqTracker::default(); pubs],
            v1: None,
        }
    }

    /// A protocol v1 subscriber for `pubs` publishers.
    pub fn v1(pubs: usize, v1: V1Sub) -> Self {
        Self {
            seqs: vec![SeqTracker::default(); pubs],
            v1: Some(Box::new(v1)),
        }
    }
}

/// Protocol v1 state of a subscriber.
#[derive(Debug, Default)]
pub struct V1Sub {
    /// Highest offset per topic.
    pub offsets: Offsets,
    /// Recovery scenario: the connection's phase and the subscriber's slot
    /// (its pushes go there instead of into the step statistics).
    pub rec: Option<(Phase, Rc<RefCell<recovery::Slot>>)>,
    /// The recovery topic as pushes carry it (raw JSON string content).
    pub topic: Vec<u8>,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The server sent a close frame with this code.
    Closed(u16),
    /// TCP EOF without a close frame.
    Eof,
    /// Socket error.
    Error(String),
    /// The server broke the protocol.
    Protocol(String),
}

impl End {
    /// Adds this end to a disconnect tally.
    pub fn record(&self, d: &mut Disconnects) {
        match self {
            Self::Closed(code) => d.close_codes.add(*code),
            Self::Eof => d.eof += 1,
            Self::Error(e) => d.errors.add(e.clone()),
            Self::Protocol(e) => d.protocol.add(e.clone()),
        }
    }
}

impl ThreadStats {
    /// Accounts one subscriber message. Unknown steps/publishers are foreign.
    #[inline]
    fn record_message(&mut self, sub: &mut Sub, msg: &[u8], now_ns: u64, live: &Live) {
        match sub.v1.as_deref_mut() {
            None => self.record_stamp(&mut sub.seqs, payload::parse(msg), now_ns, None),
            Some(v) => self.record_v1(v, &mut sub.seqs, msg, now_ns, live),
        }
    }

    /// Accounts one stamp (and, for v1, its push's offset check) in its step.
    #[inline]
    fn record_stamp(
        &mut self,
        seqs: &mut [SeqTracker],
        stamp: Option<Stamp>,
        now_ns: u64,
        offset: Option<OffsetCheck>,
    ) {
        let Some(stamp) = stamp else {
            self.foreign += 1;
            return;
        };
        let slot = self
            .recv
            .get_mut(usize::from(stamp.step))
            .and_then(Option::as_mut);
        match (slot, seqs.get_mut(usize::from(stamp.publisher))) {
            (Some(step), Some(tracker)) => {
                let arrival = tracker.observe(stamp.seq);
                step.record(arrival, now_ns.saturating_sub(stamp.sent_ns), now_ns);
                if let Some(check) = offset {
                    step.record_offset(check);
                }
            }
            _ => self.foreign += 1,
        }
    }

    /// A protocol v1 message: a push (offset checked, stamp accounted), or a
    /// reply (only recovery subscribers send commands; others' are foreign).
    #[inline]
    fn record_v1(
        &mut self,
        v: &mut V1Sub,
        seqs: &mut [SeqTracker],
        msg: &[u8],
        now_ns: u64,
        live: &Live,
    ) {
        let Some(push) = v1::parse_push(msg) else {
            let reply = v.rec.as_ref().and_then(|_| v1::parse_reply(msg));
            match (reply, &v.rec) {
                (Some(reply), Some((phase, slot))) => {
                    let settled =
                        slot.borrow_mut()
                            .on_reply(*phase, reply, &mut v.offsets, &v.topic, now_ns);
                    if settled {
                        Live::inc(live.settled(*phase));
                    }
                }
                _ => self.foreign += 1,
            }
            return;
        };
        let check = v.offsets.observe(push.topic, push.offset);
        match check {
            OffsetCheck::Gap(n) => self.offset_gaps += n,
            OffsetCheck::Back => self.offset_dups += 1,
            OffsetCheck::First | OffsetCheck::Next => {}
        }
        let stamp = v1::stamp(&push.data);
        match &v.rec {
            Some((phase, slot)) => {
                if slot
                    .borrow_mut()
                    .on_push(*phase, push.offset, stamp, seqs, now_ns)
                {
                    Live::inc(live.settled(*phase));
                }
            }
            None => self.record_stamp(seqs, stamp, now_ns, Some(check)),
        }
    }
}

/// Result of handling one read.
enum Handled {
    More,
    Closed(u16),
}

/// Reads until the connection ends. `carry` holds bytes that arrived with
/// the handshake response.
pub async fn read_loop(
    ctx: &Rc<ThreadCtx>,
    conn: &Conn,
    mut carry: Vec<u8>,
    mut role: Role,
    mut proto: Proto,
) -> End {
    // Total size of the partial frame at the front of `carry` (0 = unknown/none).
    let mut need = 0usize;
    if !carry.is_empty() {
        let now = ctx.now_ns();
        match handle(ctx, conn, &mut role, &mut proto, &carry, now) {
            Ok((o, h)) => {
                carry.drain(..o.consumed);
                need = o.need;
                if let Handled::Closed(code) = h {
                    return finish_close(ctx, conn, code).await;
                }
            }
            Err(end) => return end,
        }
    }
    loop {
        let ready = match conn.ready().await {
            Ok(r) => r,
            Err(e) => return End::Error(e.to_string()),
        };
        if ready.is_writable()
            && let Err(e) = conn.flush()
        {
            return End::Error(e.to_string());
        }
        if !ready.is_readable() {
            continue;
        }
        if conn.closing.get() {
            proto.mark_close_sent();
        }
        let step = if need > BIG_FRAME {
            read_big(ctx, conn, &mut carry, &mut need, &mut role, &mut proto)
        } else {
            read_small(ctx, conn, &mut carry, &mut need, &mut role, &mut proto)
        };
        match step {
            Ok(None) => {}
            Ok(Some(Handled::More)) => {
                if conn.pending() > 0
                    && let Err(e) = conn.flush()
                {
                    return End::Error(e.to_string());
                }
            }
            Ok(Some(Handled::Closed(code))) => return finish_close(ctx, conn, code).await,
            Err(end) => return end,
        }
    }
}

/// Common path: copy the carry to the front of the thread buffer, read behind it.
fn read_small(
    ctx: &ThreadCtx,
    conn: &Conn,
    carry: &mut Vec<u8>,
    need: &mut usize,
    role: &mut Role,
    proto: &mut Proto,
) -> Result<Option<Handled>, End> {
    let mut buf = ctx.read_buf.borrow_mut();
    let c = carry.len();
    buf[..c].copy_from_slice(carry);
    let space = buf.len() - c;
    // A short read drained the socket: report WouldBlock to `try_io` so tokio
    // clears the readiness now instead of us paying for a second `recv` that
    // would return EAGAIN. Safe with edge-triggered epoll: data arriving after
    // the read raises a new event, and tokio only clears the readiness tick it
    // observed.
    let mut short = 0usize;
    let res = if conn.is_tls() {
        conn.read(&mut buf[c..])
    } else {
        conn.stream.try_io(Interest::READABLE, || {
            match conn.stream.try_read(&mut buf[c..]) {
                Ok(n) if n > 0 && n < space => {
                    short = n;
                    Err(io::ErrorKind::WouldBlock.into())
                }
                other => other,
            }
        })
    };
    let n = match res {
        Ok(0) => return Err(End::Eof),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => short,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
        Err(e) => return Err(End::Error(e.to_string())),
    };
    if matches!(role, Role::Subscriber(_)) {
        Live::add(&ctx.live.wire_bytes, n as u64);
    }
    let now = ctx.now_ns();
    let total = c + n;
    let (o, h) = handle(ctx, conn, role, proto, &buf[..total], now)?;
    carry.clear();
    if o.consumed < total && o.close.is_none() {
        carry.extend_from_slice(&buf[o.consumed..total]);
        if o.need > BIG_FRAME {
            carry.reserve(o.need - carry.len());
        }
    } else if carry.capacity() > BIG_FRAME {
        *carry = Vec::new();
    }
    *need = o.need;
    Ok(Some(h))
}

/// Large-frame path: read straight into the connection's carry buffer.
fn read_big(
    ctx: &ThreadCtx,
    conn: &Conn,
    carry: &mut Vec<u8>,
    need: &mut usize,
    role: &mut Role,
    proto: &mut Proto,
) -> Result<Option<Handled>, End> {
    if carry.capacity() < *need {
        carry.reserve(*need - carry.len());
    }
    match conn.read_vec(carry) {
        Ok(0) => return Err(End::Eof),
        Ok(n) => {
            if matches!(role, Role::Subscriber(_)) {
                Live::add(&ctx.live.wire_bytes, n as u64);
            }
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
        Err(e) => return Err(End::Error(e.to_string())),
    }
    if carry.len() < *need {
        return Ok(Some(Handled::More));
    }
    let now = ctx.now_ns();
    let (o, h) = handle(ctx, conn, role, proto, carry, now)?;
    carry.drain(..o.consumed);
    *need = o.need;
    if carry.is_empty() && carry.capacity() > BIG_FRAME {
        *carry = Vec::new();
    }
    Ok(Some(h))
}

/// Runs the protocol over `data` and accounts the messages.
fn handle(
    ctx: &ThreadCtx,
    conn: &Conn,
    role: &mut Role,
    proto: &mut Proto,
    data: &[u8],
    now_ns: u64,
) -> Result<(Outcome, Handled), End> {
    let mut count = 0u64;
    let outcome = conn.with_out(|out| match role {
        Role::Subscriber(sub) => {
            let mut stats = ctx.stats.borrow_mut();
            proto.process(data, out, |msg| {
                count += 1;
                stats.record_message(sub, msg, now_ns, &ctx.live);
            })
        }
        Role::Publisher => proto.process(data, out, |_| count += 1),
    });
    match role {
        Role::Subscriber(_) => {
            Live::add(&ctx.live.received, count);
            Live::add(&ctx.live.compressed, proto.take_compressed());
        }
        Role::Publisher => ctx.stats.borrow_mut().pub_received += count,
    }
    let o = outcome.map_err(|e| End::Protocol(e.to_string()))?;
    let h = match o.close {
        Some(code) => Handled::Closed(code),
        None => Handled::More,
    };
    Ok((o, h))
}

/// After a close frame: flush our reply and give the server a moment to close TCP.
async fn finish_close(ctx: &ThreadCtx, conn: &Conn, code: u16) -> End {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        loop {
            let Ok(ready) = conn.ready().await else {
                return;
            };
            if ready.is_writable() && conn.flush().is_err() {
                return;
            }
            if ready.is_readable() {
                let mut buf = ctx.read_buf.borrow_mut();
                match conn.read(&mut buf[..]) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        }
    })
    .await;
    End::Closed(code)
}
