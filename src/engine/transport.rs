//! Transport: a client's byte stream — plain TCP, or TLS over TCP — as the shard sees it.
//!
//! A plain client's socket takes the shared, encode-once buffer as it is. A TLS client
//! cannot: encryption is per connection. So encode-once stops exactly here. The frame
//! (or the run of frames the fan-out joined once per shard) is still one shared `Bytes`;
//! for a TLS client the shard hands that plaintext to the client's rustls session,
//! which seals it into records, and writes the records to the socket at once. Nothing
//! else changes: a client queues *plaintext* references to shared buffers exactly like a
//! plain client (same budget, same slow-consumer discard, same pong replacement), and
//! encryption happens when the bytes leave the queue.
//!
//! The one thing a TLS client holds besides: `sealed`, ciphertext rustls produced that
//! the socket did not take. Records carry implicit sequence numbers, so sealed bytes
//! can never be dropped or reordered — they go out before anything else, and they count
//! against the client's budget. rustls' own send buffer is always emptied into the
//! socket or into `sealed` straight after sealing, so nothing hides there; and
//! plaintext is sealed at most [`SEAL_CHUNK`] at a time, so `sealed` stays small.
//!
//! Reads of a TLS client go socket → rustls (`read_tls`, `process_new_packets`) →
//! plaintext, always draining what rustls already decrypted before touching the socket
//! (tokio's readiness says nothing about rustls' buffers). What rustls wants to send in
//! answer (alerts, key updates) waits in its buffer for the client's single writer.
//!
//! Only the shard's thread touches a `Conn`; the session is in a `RefCell` because the
//! reader task and the writer (fan-out, flush task) share it, never across an `await`.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::task::{Context, Poll, ready};

use tokio::io::ReadBuf;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConnection;

/// Most plaintext sealed in one go (four full TLS records): the most a client's
/// `sealed` ciphertext grows by past what its socket took.
pub const SEAL_CHUNK: usize = 64 << 10;

/// A sealed buffer this large is given back once written out, rather than kept.
const KEEP_SEALED: usize = 2 * SEAL_CHUNK;

/// A client's connection.
#[derive(Debug)]
pub struct Conn {
    socket: TcpStream,
    tls: Option<Box<RefCell<Session>>>,
}

/// The TLS half of a connection.
#[derive(Debug)]
struct Session {
    tls: ServerConnection,
    /// Ciphertext the socket has not taken yet, from `sent` on.
    sealed: Vec<u8>,
    sent: usize,
}

impl Session {
    fn pending(&self) -> usize {
        self.sealed.len() - self.sent
    }

    /// Writes `sealed` to the socket; `true` once it is all out.
    fn send_sealed(&mut self, socket: &TcpStream) -> io::Result<bool> {
        while self.pending() > 0 {
            match socket.try_write(&self.sealed[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.sent = 0;
        if self.sealed.capacity() > KEEP_SEALED {
            self.sealed = Vec::new();
        } else {
            self.sealed.clear();
        }
        Ok(true)
    }

    /// Moves everything rustls has to send into the socket, and what the socket does not
    /// take into `sealed`.
    fn drain(&mut self, socket: &TcpStream) -> io::Result<()> {
        while self.tls.wants_write() {
            let mut out = Spill {
                socket,
                sealed: &mut self.sealed,
                sent: self.sent,
            };
            self.tls.write_tls(&mut out)?;
        }
        Ok(())
    }
}

/// The `io::Write` rustls writes its records into: the socket while nothing is waiting
/// before them, `sealed` for the rest. It takes everything, so rustls' buffer empties.
struct Spill<'a> {
    socket: &'a TcpStream,
    sealed: &'a mut Vec<u8>,
    sent: usize,
}

impl Write for Spill<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut taken = 0;
        if self.sealed.len() == self.sent {
            match self.socket.try_write_vectored(bufs) {
                Ok(n) => taken = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        for b in bufs {
            if taken >= b.len() {
                taken -= b.len();
                continue;
            }
            self.sealed.extend_from_slice(&b[taken..]);
            taken = 0;
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The `io::Read` rustls reads records from: the non-blocking socket.
struct SocketIn<'a>(&'a TcpStream);

impl Read for SocketIn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Conn {
    /// A plain TCP connection.
    pub fn plain(socket: TcpStream) -> Self {
        Conn { socket, tls: None }
    }

    /// A TLS connection whose handshake is done: the socket and its rustls session, with
    /// whatever the session still buffers in either direction.
    pub fn tls(socket: TcpStream, mut tls: ServerConnection) -> Self {
        // The writer empties rustls' send buffer after every seal and keeps its own
        // budget; rustls' default limit (64 KiB) would only make `write` short.
        tls.set_buffer_limit(None);
        Conn {
            socket,
            tls: Some(Box::new(RefCell::new(Session {
                tls,
                sealed: Vec::new(),
                sent: 0,
            }))),
        }
    }

    /// The socket (readiness, socket options).
    #[inline]
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Whether bytes to this client go through TLS.
    #[inline]
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Ciphertext sealed but not yet taken by the socket (0 for plain connections).
    pub fn sealed_bytes(&self) -> usize {
        self.tls.as_ref().map_or(0, |s| s.borrow().pending())
    }

    /// TLS: seals up to [`SEAL_CHUNK`] bytes of `plain` (after anything rustls had
    /// to send already) and writes the records; what the socket does not take waits in
    /// `sealed`. Returns how many plaintext bytes were sealed. Call it only when
    /// [`Conn::sealed_bytes`] is 0; an empty `plain` just sends what rustls has.
    pub fn seal(&self, plain: &[u8]) -> io::Result<usize> {
        let Some(session) = &self.tls else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let mut s = session.borrow_mut();
        let take = plain.len().min(SEAL_CHUNK);
        if take > 0 {
            s.tls.writer().write_all(&plain[..take])?;
        }
        s.drain(&self.socket)?;
        Ok(take)
    }

    /// TLS: writes sealed ciphertext; `true` once none is left (always for plain).
    pub fn send_sealed(&self) -> io::Result<bool> {
        match &self.tls {
            Some(session) => session.borrow_mut().send_sealed(&self.socket),
            None => Ok(true),
        }
    }

    /// TLS: whether rustls has something to send (an alert, a key update) that the
    /// writer has not picked up.
    pub fn tls_wants_write(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|s| s.borrow().tls.wants_write())
    }

    /// The end of our side of the stream: TLS sends its `close_notify` (best effort:
    /// after whatever is sealed, and only if the socket takes it now), then the socket's
    /// write side is shut down.
    pub fn shutdown_write(&self) {
        if let Some(session) = &self.tls {
            let mut s = session.borrow_mut();
            s.tls.send_close_notify();
            if s.drain(&self.socket).is_ok() {
                let _ = s.send_sealed(&self.socket);
            }
        }
        let _ = socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Write);
    }

    /// Reads what is available without waiting: `WouldBlock` when nothing is, `Ok(0)`
    /// at the end of the stream. A TLS connection hands out plaintext rustls holds
    /// before it reads the socket.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(session) = &self.tls else {
            return self.socket.try_read(buf);
        };
        let mut s = session.borrow_mut();
        loop {
            match s.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer ended TCP without a close_notify: for a WebSocket that is just
                // the end of the stream (the close handshake says whether it was clean).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            let n = s.tls.read_tls(&mut SocketIn(&self.socket))?;
            let processed = s.tls.process_new_packets();
            if let Err(e) = processed {
                // rustls queued an alert saying why; the writer sends it (best effort)
                // when the connection is closed.
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if n == 0 {
                return match s.tls.reader().read(buf) {
                    Ok(n) => Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                    Err(e) => Err(e),
                };
            }
        }
    }

    /// Reads into `buf`, waiting until something is there; nothing added means the end
    /// of the stream.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.tls.is_none() {
            loop {
                ready!(self.socket.poll_read_ready(cx))?;
                match self.socket.try_read_buf(buf) {
                    Ok(_) => return Poll::Ready(Ok(())),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        // TLS: what rustls holds first — the socket may well be drained already.
        loop {
            match self.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.socket.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}
