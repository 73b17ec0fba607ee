//! Read: frames in from one client, until it closes, breaks the protocol, or vanishes.
//!
//! fastwebsockets parses and unmasks the frames and answers pings; its obligated replies
//! (pongs, close echoes) go to the client's single writer on the shard, between whole
//! frames. This module adds what hubcast needs on top: reassembly with a limit on the
//! *whole* message (fastwebsockets limits single frames), UTF-8 checks of reassembled
//! text, the mapping of every violation to its close code, and publishing what a client
//! says to the topics it joined.
//!
//! An idle client pins no read buffer: the parser (and its buffer) is only created once
//! the socket first has something to read.
//!
//! A TLS client's bytes come through its rustls session ([`Conn`]): the parser only
//! ever sees plaintext. When reading makes rustls want to send something (an alert, a
//! key update), the reader asks the shard's single writer to send it.
//!
//! permessage-deflate: the frame bounds take RSV1 off compressed frames before the parser
//! sees them (it refuses reserved bits) and tell which messages were compressed; those
//! are inflated here, frame by frame, with the size limit applied to the inflated bytes
//! (a deflate bomb is refused with 1009 having cost at most the limit). The inflate
//! state is created only for a client that sends a compressed message, counted in the
//! metrics, and kept for the connection's life when the client uses context takeover.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use fastwebsockets::{OpCode, Role, WebSocketError};
use tokio::io::{AsyncRead, ReadBuf};

use crate::engine::commands;
use crate::engine::registry::ClientRef;
use crate::engine::shard::Shard;
use crate::engine::transport::Conn;
use crate::error::PublishError;
use crate::wire::bounds::{BoundsError, Broken, FrameBounds};
use crate::wire::deflate::{InflateError, Inflater};
use crate::wire::extensions::Deflate;
use crate::wire::frame::{self, Opcode};

/// How a client's read side ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The socket closed or failed without a close handshake.
    Gone,
    /// The client sent a close frame; the echo to send back.
    Closed(Bytes),
    /// The client broke a rule: close with this code and reason.
    Violation(u16, &'static str),
    /// Everything read so far is handled: the parser can go until the next bytes.
    Idle,
}

/// Reads one client until the end, then closes or removes it.
///
/// This future lives as long as the connection, so while the client is idle it must be
/// small: it only waits for the socket to become readable. The parser, its read buffer
/// and the close paths are boxed, allocated when the client sends something, and
/// dropped again as soon as everything read has been handled — an idle client (one
/// that only answers pings now and then) pins no read buffer.
pub(crate) async fn run(
    shard: Rc<Shard>,
    who: ClientRef,
    conn: Rc<Conn>,
    pre: Bytes,
    deflate: Option<Deflate>,
) {
    // The client's inflate window, once it sends a compressed message (boxed: an idle
    // client's future holds one pointer).
    let mut inflate: Option<Box<Inflating>> = None;
    // Copy the few early bytes out, so hyper's read buffer is not kept alive (even an
    // empty `pre` may share it).
    // (`hyper_pre` is moved into the block and dropped there: merely shadowing it would
    // keep hyper's buffer alive in this future for the connection's whole life.)
    let mut pre = {
        let hyper_pre = pre;
        if hyper_pre.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&hyper_pre)
        }
    };
    // A TLS session may already hold the client's first bytes (decrypted or not) while
    // the socket has nothing more: look before waiting for the socket.
    let mut probe_first = conn.is_tls() && pre.is_empty();
    loop {
        if std::mem::take(&mut probe_first) {
            match probe(&shard, who, &conn) {
                Some(bytes) => pre = bytes,
                None => return,
            }
        }
        // `poll_read_ready`, not `readable()`: it takes over the socket's single read-waker
        // slot, which still holds hyper's waker from the handshake — and that waker keeps
        // the finished HTTP connection task (~900 B) allocated for the connection's life.
        if pre.is_empty()
            && std::future::poll_fn(|cx| conn.socket().poll_read_ready(cx))
                .await
                .is_err()
        {
            shard.remove(who);
            return;
        }
        let served = Box::pin(serve(
            shard.clone(),
            who,
            conn.clone(),
            std::mem::take(&mut pre),
            deflate,
            &mut inflate,
        ))
        .await;
        if !served {
            return;
        }
        if deflate.is_some_and(|d| d.client_no_context_takeover) {
            // Every message starts from an empty window: nothing to keep while idle.
            inflate = None;
        }
        // Idle again. Readiness is only cleared by a read that would block, so probe once:
        // either the socket is drained (and the wait above really waits) or the probe's
        // bytes start the next round.
        match probe(&shard, who, &conn) {
            Some(bytes) => pre = bytes,
            None => return,
        }
    }
}

/// Reads what is there without waiting: the bytes (none when the read would block), or
/// `None` when the connection ended (the client is removed).
fn probe(shard: &Rc<Shard>, who: ClientRef, conn: &Conn) -> Option<Bytes> {
    let mut probe = [0u8; 64];
    let read = conn.try_read(&mut probe);
    tls_output(shard, who, conn);
    match read {
        Ok(0) => {}
        Ok(n) => return Some(Bytes::copy_from_slice(&probe[..n])),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Bytes::new()),
        Err(_) => {}
    }
    shard.remove(who);
    None
}

/// After a read: what rustls wants to send in answer goes out through the client's
/// single writer (a no-op branch for plain connections).
#[inline]
fn tls_output(shard: &Rc<Shard>, who: ClientRef, conn: &Conn) {
    if conn.tls_wants_write() {
        shard.send_tls_output(who);
    }
}

/// Reads until the connection ends (`false`) or everything read is handled (`true`).
async fn serve(
    shard: Rc<Shard>,
    who: ClientRef,
    conn: Rc<Conn>,
    pre: Bytes,
    deflate: Option<Deflate>,
    inflate: &mut Option<Box<Inflating>>,
) -> bool {
    match read_frames(&shard, who, &conn, pre, deflate, inflate).await {
        End::Idle => return true,
        End::Gone => shard.remove(who),
        End::Closed(echo) => shard.client_closed(who, &echo),
        End::Violation(code, reason) => {
            shard
                .metrics()
                .protocol_closes
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                client = who.id,
                code,
                reason,
                "closing client for a protocol violation"
            );
            shard.close_client(who, &frame::encode_close(code, reason), true);
            // Keep reading (and discarding) until the client closes too: closing a socket
            // with unread input resets it, and the client would never see our close code.
            let linger = shard.hub.inner.config.pong_timeout;
            let _ = tokio::time::timeout(linger, discard_input(&conn)).await;
            shard.remove(who);
        }
    }
    false
}

/// A message being reassembled from fragments.
struct Partial {
    opcode: Opcode,
    /// The message so far (inflated, when it is compressed).
    buf: Vec<u8>,
    /// Its frames are compressed: each is inflated as it arrives.
    compressed: bool,
}

async fn read_frames(
    shard: &Rc<Shard>,
    who: ClientRef,
    conn: &Rc<Conn>,
    pre: Bytes,
    deflate: Option<Deflate>,
    inflate: &mut Option<Box<Inflating>>,
) -> End {
    let cfg = &shard.hub.inner.config;
    let max = cfg.max_message_size;
    // Set while a fragmented message is half reassembled (its parts live in `partial`,
    // which this round owns): the round must not end then.
    let assembling = Cell::new(false);
    let bounds = RefCell::new(FrameBounds::new(deflate.is_some()));
    let (mut ws, _) = fastwebsockets::after_handshake_split(
        SocketRead {
            conn: conn.clone(),
            shard,
            who,
            pre,
            bounds: &bounds,
            fed_any: false,
            broken: None,
            assembling: &assembling,
        },
        tokio::io::sink(),
        Role::Server,
    );
    // fastwebsockets refuses frames of `>= max_message_size`; ours is inclusive. A
    // compressed frame may be a little longer than what it inflates to (stored blocks
    // cost 5 bytes per 64 KiB): the limit that counts is checked after inflation.
    let frame_limit = match deflate {
        Some(_) => max.saturating_add(max / 1024 + 64),
        None => max,
    };
    ws.set_max_message_size(frame_limit.saturating_add(1));
    // Close frames are checked here (`close_echo`): fastwebsockets' table of codes
    // refuses 1014, which IANA registered.
    ws.set_auto_close(false);
    let mut partial: Option<Partial> = None;
    let mut obligated = |f: fastwebsockets::Frame<'_>| {
        // Only pongs come this way (close echoes are sent by `serve`, after the frame).
        // fastwebsockets answers a client's ping here and never returns it, so this is
        // also where a pinging client shows it is alive.
        if f.opcode == OpCode::Pong {
            shard.touch(who);
            shard.send_pong(who, &frame::encode(Opcode::Pong, &f.payload));
        }
        std::future::ready(Ok::<(), Infallible>(()))
    };
    loop {
        assembling.set(partial.is_some());
        let f = match ws.read_frame(&mut obligated).await {
            Ok(f) => f,
            Err(WebSocketError::IoError(e)) => match signal_of(&e) {
                Some(Signal::Idle) => return End::Idle,
                Some(signal) => return End::Violation(1002, signal.reason()),
                None => return End::Gone,
            },
            Err(e) => return end_for(e),
        };
        shard.touch(who);
        let opcode = match f.opcode {
            OpCode::Close => {
                return match close_echo(&f.payload) {
                    Ok(echo) => End::Closed(frame::encode(Opcode::Close, echo)),
                    Err(violation) => violation,
                };
            }
            OpCode::Ping | OpCode::Pong => continue,
            OpCode::Text => Opcode::Text,
            OpCode::Binary => Opcode::Binary,
            OpCode::Continuation => {
                let Some(p) = partial.as_mut() else {
                    return End::Violation(1002, "continuation frame without a message");
                };
                if p.compressed {
                    if let Err(end) = inflate_into(shard, inflate, &f.payload, f.fin, &mut p.buf) {
                        return end;
                    }
                } else {
                    if p.buf.len() + f.payload.len() > max {
                        return End::Violation(1009, "message too big");
                    }
                    p.buf.extend_from_slice(&f.payload);
                }
                if !f.fin {
                    continue;
                }
                let Some(p) = partial.take() else {
                    continue;
                };
                if let Err(end) = finish(shard, who, p, deflate, inflate).await {
                    return end;
                }
                continue;
            }
        };
        if partial.is_some() {
            return End::Violation(1002, "new message before the previous one was finished");
        }
        // A compressed message's first frame reached the parser as binary; the bounds
        // know what it really is.
        let compressed = bounds.borrow_mut().message_start();
        let p = match compressed {
            Some(opcode) => {
                let mut buf = Vec::new();
                if let Err(end) = inflate_into(shard, inflate, &f.payload, f.fin, &mut buf) {
                    return end;
                }
                Partial {
                    opcode,
                    buf,
                    compressed: true,
                }
            }
            None if f.payload.len() > max => return End::Violation(1009, "message too big"),
            // fastwebsockets has checked UTF-8 of unfragmented text already.
            None if f.fin => {
                if let Err(end) = message(shard, who, opcode, &f.payload).await {
                    return end;
                }
                continue;
            }
            None => Partial {
                opcode,
                buf: f.payload.to_vec(),
                compressed: false,
            },
        };
        if !f.fin {
            partial = Some(p);
        } else if let Err(end) = finish(shard, who, p, deflate, inflate).await {
            return end;
        }
    }
}

/// A reassembled (and perhaps inflated) message is complete: check its text and hand it
/// on. A client without context takeover starts its next message from an empty window.
async fn finish(
    shard: &Rc<Shard>,
    who: ClientRef,
    p: Partial,
    deflate: Option<Deflate>,
    inflate: &mut Option<Box<Inflating>>,
) -> Result<(), End> {
    if p.compressed {
        shard
            .metrics()
            .inflated_messages
            .fetch_add(1, Ordering::Relaxed);
        if deflate.is_some_and(|d| d.client_no_context_takeover)
            && let Some(state) = inflate.as_deref_mut()
        {
            state.inflater.reset();
        }
    }
    if p.opcode == Opcode::Text && simdutf8::basic::from_utf8(&p.buf).is_err() {
        return Err(End::Violation(1007, "invalid UTF-8"));
    }
    message(shard, who, p.opcode, &p.buf).await
}

/// Inflates one frame of a compressed message into `buf`, creating the client's inflate
/// state on its first compressed message.
fn inflate_into(
    shard: &Rc<Shard>,
    inflate: &mut Option<Box<Inflating>>,
    payload: &[u8],
    last: bool,
    buf: &mut Vec<u8>,
) -> Result<(), End> {
    let max = shard.hub.inner.config.max_message_size;
    let state = inflate.get_or_insert_with(|| Inflating::new(shard.clone()));
    state
        .inflater
        .inflate(payload, last, buf, max)
        .map_err(|e| match e {
            InflateError::TooBig => End::Violation(1009, "message too big"),
            InflateError::Corrupt => End::Violation(1007, "invalid compressed data"),
        })
}

/// One client's inflate state, counted in its shard's metrics for as long as it exists
/// (the reader's future owns it, so an aborted reader uncounts it too).
pub(crate) struct Inflating {
    inflater: Inflater,
    shard: Rc<Shard>,
}

impl Inflating {
    fn new(shard: Rc<Shard>) -> Box<Self> {
        shard.metrics().inflaters.fetch_add(1, Ordering::Relaxed);
        Box::new(Inflating {
            inflater: Inflater::new(),
            shard,
        })
    }
}

impl Drop for Inflating {
    fn drop(&mut self) {
        self.shard
            .metrics()
            .inflaters
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A complete message from a client: broadcast it to the topics the client joined
/// (chat behaviour), or refuse it in feed mode. When a shard's inbox is full this waits
/// for room — the client's socket is not read meanwhile, so TCP pushes back on the
/// sender — rather than dropping anything.
async fn message(
    shard: &Rc<Shard>,
    who: ClientRef,
    opcode: Opcode,
    payload: &[u8],
) -> Result<(), End> {
    let v1 = match shard.registry.borrow_mut().get_mut(who) {
        Some(c) => c.is_v1(),
        None => return Err(End::Gone),
    };
    if v1 {
        // A v1 client's messages are commands, in feed mode too.
        if opcode == Opcode::Binary {
            return Err(End::Violation(1003, "hubcast.v1 messages are JSON text"));
        }
        return commands::handle(shard, who, payload)
            .await
            .map_err(|(code, reason)| End::Violation(code, reason));
    }
    // A plain client's message goes to every topic it joined: all of them must allow
    // it (the grant's publish rule with auth, chat mode without). Refused, it is closed
    // with 1008 and a reason — the plain protocol has no error reply, and dropping the
    // message unannounced would lose it silently.
    let feed = shard.hub.inner.config.feed;
    let topics = match shard.registry.borrow_mut().get_mut(who) {
        Some(c) if c.topics.iter().all(|t| c.may_publish(t, feed)) => c.topics.clone(),
        Some(c) if c.access.is_some() => {
            return Err(End::Violation(
                1008,
                "the token does not allow publishing to these topics",
            ));
        }
        Some(_) => {
            return Err(End::Violation(
                1008,
                "this server is a feed: clients may not send messages",
            ));
        }
        None => return Err(End::Gone),
    };
    shard.metrics().messages_in.fetch_add(1, Ordering::Relaxed);
    let encoded = frame::encode(opcode, payload);
    for topic in topics.iter() {
        let published = shard
            .hub
            .publish_frame_wait(topic.clone(), encoded.clone(), None)
            .await;
        if let Err(PublishError::ShuttingDown) = published {
            // Too late to publish; keep the client until its 1001 and queue are out.
            break;
        }
    }
    Ok(())
}

/// The close frame to send back — the client's status code, without its reason — or
/// the violation when the frame is not a valid close (RFC 6455 §5.5.1, §7.4): one byte,
/// a code that may not be sent (below 1000, 1004–1006, 1015, 1016–2999, 5000 and up;
/// 1012–1014 are registered with IANA), or a reason that is not UTF-8.
fn close_echo(payload: &[u8]) -> Result<&[u8], End> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return match payload {
            [] => Ok(payload),
            _ => Err(End::Violation(1002, "invalid close frame")),
        };
    };
    if !matches!(u16::from_be_bytes(*code), 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(End::Violation(1002, "invalid close frame"));
    }
    if simdutf8::basic::from_utf8(reason).is_err() {
        return Err(End::Violation(1007, "invalid UTF-8"));
    }
    Ok(code)
}

fn end_for(e: WebSocketError) -> End {
    use WebSocketError as E;
    match e {
        E::FrameTooLarge => End::Violation(1009, "message too big"),
        // Text payloads and close reasons alike.
        E::InvalidUTF8 => End::Violation(1007, "invalid UTF-8"),
        E::InvalidCloseCode | E::InvalidCloseFrame => End::Violation(1002, "invalid close frame"),
        E::ReservedBitsNotZero => {
            End::Violation(1002, "reserved bits set that no extension defines")
        }
        E::ControlFrameFragmented | E::PingFrameTooLarge => {
            End::Violation(1002, "invalid control frame")
        }
        E::InvalidFragment | E::InvalidContinuationFrame => {
            End::Violation(1002, "invalid fragmentation")
        }
        E::InvalidValue => End::Violation(1002, "unknown opcode"),
        _ => End::Gone,
    }
}

async fn discard_input(conn: &Conn) {
    // On the heap: a stack array here would be part of every client's reader future.
    let mut sink = vec![0u8; 4096];
    loop {
        // Read first: a TLS session may hold bytes the socket's readiness knows nothing of.
        match conn.try_read(&mut sink) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        if conn.socket().readable().await.is_err() {
            return;
        }
    }
}

/// The read side of a shared socket: first the bytes hyper read past the handshake,
/// then the socket itself. Writes go elsewhere (the client's single writer).
///
/// Every byte passes through [`FrameBounds`] on its way to the parser, which gives two
/// things: the exact moment the parser holds nothing unhandled (the round can end and the
/// parser be dropped), and the unmasked frame the parser would let through — bytes from
/// it on are never handed over, and the next read reports it.
struct SocketRead<'a> {
    conn: Rc<Conn>,
    shard: &'a Rc<Shard>,
    who: ClientRef,
    pre: Bytes,
    /// Shared with the round, which asks it which messages were compressed.
    bounds: &'a RefCell<FrameBounds>,
    /// Some bytes have been handed to the parser this round.
    fed_any: bool,
    /// A frame that must not be parsed follows the bytes handed over.
    broken: Option<Signal>,
    /// A fragmented message is being reassembled.
    assembling: &'a Cell<bool>,
}

impl SocketRead<'_> {
    /// Follows `chunk` through the frame bounds (which take RSV1 off compressed frames
    /// in place); returns how many of its bytes may go to the parser (all of them,
    /// unless a frame that must not be parsed starts inside).
    fn admit(&mut self, chunk: &mut [u8]) -> usize {
        match self.bounds.borrow_mut().feed(chunk) {
            Ok(()) => chunk.len(),
            Err(BoundsError { at, kind }) => {
                self.broken = Some(match kind {
                    Broken::Unmasked => Signal::Unmasked,
                    Broken::ControlTooLong => Signal::ControlTooLong,
                    Broken::Rsv1NotFirst => Signal::Rsv1NotFirst,
                });
                at
            }
        }
    }
}

/// Signals from [`SocketRead`] to [`read_frames`], carried as I/O errors through the
/// parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// Nothing left to parse: the round can end.
    Idle,
    /// The next frame is not masked.
    Unmasked,
    /// The next frame is a control frame over 125 bytes.
    ControlTooLong,
    /// The next frame carries RSV1 but does not start a data message.
    Rsv1NotFirst,
}

impl Signal {
    /// The close reason of a frame that must not be parsed.
    fn reason(self) -> &'static str {
        match self {
            Signal::Idle => "idle",
            Signal::Unmasked => "client frames must be masked",
            Signal::ControlTooLong => "control frames carry at most 125 bytes",
            Signal::Rsv1NotFirst => "RSV1 set on a frame that does not start a message",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Signal {}

/// The signal an I/O error from [`SocketRead`] carries, if it is one.
fn signal_of(e: &io::Error) -> Option<Signal> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Signal>())
        .copied()
}

impl AsyncRead for SocketRead<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(signal) = this.broken {
            return Poll::Ready(Err(io::Error::other(signal)));
        }
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            let pre = this.pre.split_to(n);
            let before = buf.filled().len();
            buf.put_slice(&pre);
            let good = this.admit(&mut buf.filled_mut()[before..]);
            buf.set_filled(before + good);
            if let (0, Some(signal)) = (good, this.broken) {
                return Poll::Ready(Err(io::Error::other(signal)));
            }
            this.fed_any = true;
            return Poll::Ready(Ok(()));
        }
        // The parser wants more bytes, and every byte it got so far belongs to complete
        // frames it has handled: its buffer is empty. Rather than wait (pinning that
        // buffer), end the round; the caller drops the parser and waits for the socket.
        if this.fed_any && this.bounds.borrow().at_boundary() && !this.assembling.get() {
            return Poll::Ready(Err(io::Error::other(Signal::Idle)));
        }
        let before = buf.filled().len();
        let read = this.conn.poll_read(cx, buf);
        tls_output(this.shard, this.who, &this.conn);
        ready!(read)?;
        if buf.filled().len() == before {
            return Poll::Ready(Ok(()));
        }
        let good = this.admit(&mut buf.filled_mut()[before..]);
        buf.set_filled(before + good);
        if let (0, Some(signal)) = (good, this.broken) {
            return Poll::Ready(Err(io::Error::other(signal)));
        }
        this.fed_any = true;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_map_to_close_codes() {
        assert_eq!(
            end_for(WebSocketError::FrameTooLarge),
            End::Violation(1009, "message too big")
        );
        assert!(matches!(
            end_for(WebSocketError::InvalidUTF8),
            End::Violation(1007, _)
        ));
        assert!(matches!(
            end_for(WebSocketError::ReservedBitsNotZero),
            End::Violation(1002, _)
        ));
        assert_eq!(end_for(WebSocketError::UnexpectedEOF), End::Gone);
    }

    #[test]
    fn close_echo_keeps_only_the_code() {
        assert_eq!(close_echo(&[3, 232, b'b', b'y', b'e']), Ok(&[3, 232][..]));
        assert_eq!(close_echo(&[]), Ok(&[][..]));
    }

    /// Found by the garbage property (tests/fuzz/frames.rs): a client's close with
    /// 1014 got 1002, because fastwebsockets' table stops at 1013.
    #[test]
    fn close_codes_are_checked_as_documented() {
        for code in [1000u16, 1003, 1007, 1012, 1013, 1014, 3000, 4999] {
            let frame = code.to_be_bytes();
            assert_eq!(close_echo(&frame), Ok(&frame[..]), "{code}");
        }
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let refused = End::Violation(1002, "invalid close frame");
            assert_eq!(close_echo(&code.to_be_bytes()), Err(refused), "{code}");
        }
        assert_eq!(
            close_echo(&[3]),
            Err(End::Violation(1002, "invalid close frame"))
        );
        assert_eq!(
            close_echo(&[3, 232, 0xff]),
            Err(End::Violation(1007, "invalid UTF-8"))
        );
    }
}
