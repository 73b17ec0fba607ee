//! Establishing connections and the per-connection output buffer.
//!
//! Owns TCP connect (optionally bound to a planned source address), the
//! WebSocket opening handshake over it, the grouping of failures into report
//! keys, and [`Conn`]: a socket plus an append-only output buffer that any task
//! on the owning thread may add whole frames to and flush without blocking.
//! Reads are driven by `subscriber` and `publisher`; over `wss://` they go through
//! [`Conn::read`], which decrypts (the rustls session lives here, next to the socket).

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::{ClientConfig, ClientConnection};

use crate::frame::{self, MaskRng};
use crate::handshake::{self, HandshakeError, Offer};
use crate::target::Target;

/// Bytes of unsent output above which publishers stop adding messages.
pub const OUT_HIGH_WATER: usize = 1 << 20;

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Binding the source address failed.
    Bind(io::Error),
    /// TCP connect failed.
    Connect(io::Error),
    /// Reading/writing the handshake failed.
    Io(io::Error),
    /// The TLS handshake failed.
    Tls(io::Error),
    /// The server closed the connection during the handshake.
    Eof,
    /// The server's handshake response was not acceptable.
    Handshake(HandshakeError),
    /// Connect + handshake took longer than the timeout.
    Timeout,
}

impl ConnectError {
    /// Grouping key for reports, e.g. `connect: Connection refused (os error 111)`.
    pub fn reason(&self) -> String {
        match self {
            Self::Bind(e) => format!("bind: {e}"),
            Self::Connect(e) => format!("connect: {e}"),
            Self::Io(e) => format!("handshake: {e}"),
            Self::Tls(e) => format!("TLS: {e}"),
            Self::Eof => "handshake: connection closed".to_string(),
            Self::Handshake(e) => format!("handshake: {e}"),
            Self::Timeout => "timeout".to_string(),
        }
    }
}

/// Opens a TCP connection, bound to `src` when given, with Nagle disabled.
pub async fn connect_tcp(addr: SocketAddr, src: Option<IpAddr>) -> Result<TcpStream, ConnectError> {
    connect_tcp_with(addr, src, None).await
}

/// [`connect_tcp`] with the receive buffer (`SO_RCVBUF`) set before connecting, so
/// the window follows it: a client with a small one that stops reading fills up fast.
pub async fn connect_tcp_with(
    addr: SocketAddr,
    src: Option<IpAddr>,
    recv_buffer: Option<u32>,
) -> Result<TcpStream, ConnectError> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ConnectError::Connect)?;
    if let Some(size) = recv_buffer {
        sock.set_recv_buffer_size(size)
            .map_err(ConnectError::Connect)?;
    }
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(ip, 0))
            .map_err(ConnectError::Bind)?;
    }
    let stream = sock.connect(addr).await.map_err(ConnectError::Connect)?;
    stream.set_nodelay(true).map_err(ConnectError::Connect)?;
    Ok(stream)
}

/// A connected socket, and its TLS session for `wss://`.
#[derive(Debug)]
pub struct Link {
    /// The socket.
    pub tcp: TcpStream,
    /// The session, handshake done (it may hold plaintext already).
    pub tls: Option<ClientConnection>,
}

impl Link {
    /// A plain connection.
    pub fn plain(tcp: TcpStream) -> Self {
        Self { tcp, tls: None }
    }
}

/// Connects and performs the WebSocket handshake (over TLS for a `wss://` target,
/// with `tls` as the client configuration), offering what `offer` says (the server
/// must then agree to it). Returns the connection and any
/// bytes that arrived after the response head (already frames).
pub async fn connect_ws(
    target: &Target,
    src: Option<IpAddr>,
    seed: u64,
    offer: Offer<'_>,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(Link, Vec<u8>), ConnectError> {
    let mut tcp = connect_tcp(target.addr, src).await?;
    let (true, Some(config)) = (target.tls, tls) else {
        let early = ws_handshake(&mut tcp, target, seed, offer).await?;
        return Ok((Link::plain(tcp), early));
    };
    let name = crate::tls::server_name(&target.host)
        .map_err(|e| ConnectError::Tls(io::Error::other(e.to_string())))?;
    let mut stream = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(ConnectError::Tls)?;
    let early = ws_handshake(&mut stream, target, seed, offer).await?;
    let (tcp, session) = stream.into_inner();
    Ok((
        Link {
            tcp,
            tls: Some(session),
        },
        early,
    ))
}

/// The WebSocket opening handshake over `stream`; returns the bytes after the head.
async fn ws_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &Target,
    seed: u64,
    offer: Offer<'_>,
) -> Result<Vec<u8>, ConnectError> {
    let mut rng = MaskRng::new(seed);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
    raw[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
    let key = handshake::make_key(raw);
    stream
        .write_all(&handshake::request(
            &target.host_header,
            &target.path,
            &key,
            offer,
        ))
        .await
        .map_err(ConnectError::Io)?;
    let mut buf = Vec::with_capacity(512);
    loop {
        let n = stream.read_buf(&mut buf).await.map_err(ConnectError::Io)?;
        if n == 0 {
            return Err(ConnectError::Eof);
        }
        if let Some(head) =
            handshake::parse_response(&buf, &key, offer).map_err(ConnectError::Handshake)?
        {
            return Ok(buf.split_off(head));
        }
    }
}

/// The WebSocket handshake over a connected plain `stream`, offering the subprotocol
/// `protocol` (see [`connect_ws`]).
pub async fn handshake_over(
    mut stream: TcpStream,
    target: &Target,
    seed: u64,
    protocol: Option<&str>,
) -> Result<(TcpStream, Vec<u8>), ConnectError> {
    let offer = Offer {
        protocol,
        ..Offer::default()
    };
    let early = ws_handshake(&mut stream, target, seed, offer).await?;
    Ok((stream, early))
}

/// Runs `fut` with a timeout, mapping expiry to [`ConnectError::Timeout`].
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout),
    }
}

#[derive(Debug, Default)]
struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
}

/// A `wss://` connection's session, and whether it may hold plaintext not read yet.
#[derive(Debug)]
struct Tls {
    session: ClientConnection,
    buffered: bool,
}

/// Plaintext sealed per step of a TLS flush.
const SEAL_CHUNK: usize = 64 << 10;

/// The non-blocking socket as rustls' `Read` and `Write`.
struct Socket<'a>(&'a TcpStream);

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An established connection: the socket and its pending output.
#[derive(Debug)]
pub struct Conn {
    /// The socket. Reads happen through `&TcpStream` (`ready`/`try_read`) — over
    /// TLS through [`Conn::read`].
    pub stream: TcpStream,
    tls: Option<RefCell<Tls>>,
    out: RefCell<OutBuf>,
    /// We started the close handshake (shutdown): the end is not a disconnect.
    pub closing: Cell<bool>,
}

impl Conn {
    /// Wraps a connected stream.
    pub fn new(link: Link) -> Self {
        Self {
            stream: link.tcp,
            tls: link.tls.map(|session| {
                RefCell::new(Tls {
                    session,
                    // The handshake may have left plaintext in the session.
                    buffered: true,
                })
            }),
            out: RefCell::new(OutBuf::default()),
            closing: Cell::new(false),
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Unsent output bytes (over TLS: plaintext not sealed yet, plus 1 while sealed
    /// records wait for the socket).
    pub fn pending(&self) -> usize {
        let o = self.out.borrow();
        let sealed = self
            .tls
            .as_ref()
            .is_some_and(|t| t.borrow().session.wants_write());
        o.buf.len() - o.pos + usize::from(sealed)
    }

    /// Reads what is available without waiting (`WouldBlock` when nothing is,
    /// `Ok(0)` at the end); over TLS, decrypted.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.stream.try_read(buf);
        };
        let mut t = tls.borrow_mut();
        loop {
            match t.session.reader().read(buf) {
                Ok(n) => {
                    t.buffered = n > 0 && n == buf.len();
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            t.buffered = false;
            let n = t.session.read_tls(&mut Socket(&self.stream))?;
            t.session
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if n == 0 {
                return Ok(0);
            }
        }
    }

    /// [`Conn::read`] into the spare capacity of `buf` (at least 4 KiB of it).
    pub fn read_vec(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if self.tls.is_none() {
            return self.stream.try_read_buf(buf);
        }
        let len = buf.len();
        let room = (buf.capacity() - len).max(4096);
        buf.resize(len + room, 0);
        let read = self.read(&mut buf[len..]);
        buf.truncate(len + *read.as_ref().unwrap_or(&0));
        read
    }

    /// Waits until the socket is readable — or writable, while output is pending.
    /// Over TLS, plaintext already decrypted counts as readable.
    pub async fn ready(&self) -> io::Result<tokio::io::Ready> {
        if let Some(tls) = &self.tls
            && tls.borrow().buffered
        {
            return Ok(tokio::io::Ready::READABLE);
        }
        let interest = if self.pending() > 0 {
            tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE
        } else {
            tokio::io::Interest::READABLE
        };
        self.stream.ready(interest).await
    }

    /// Appends to the output buffer (whole frames only, so writers never interleave).
    pub fn with_out<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        f(&mut self.out.borrow_mut().buf)
    }

    /// Writes as much pending output as the socket takes without blocking.
    pub fn flush(&self) -> io::Result<()> {
        let mut o = self.out.borrow_mut();
        if let Some(tls) = &self.tls {
            // Sealed records first; then seal more only while the socket keeps up.
            let mut t = tls.borrow_mut();
            loop {
                while t.session.wants_write() {
                    match t.session.write_tls(&mut Socket(&self.stream)) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
                if o.pos == o.buf.len() {
                    break;
                }
                let end = o.buf.len().min(o.pos + SEAL_CHUNK);
                let pos = o.pos;
                t.session.writer().write_all(&o.buf[pos..end])?;
                o.pos = end;
            }
        }
        while o.pos < o.buf.len() {
            match self.stream.try_write(&o.buf[o.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => o.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if o.pos == o.buf.len() {
            o.buf.clear();
            o.pos = 0;
            if o.buf.capacity() > 4 * OUT_HIGH_WATER {
                o.buf = Vec::new();
            }
        } else if o.pos > 64 * 1024 && o.pos * 2 > o.buf.len() {
            let pos = o.pos;
            o.buf.drain(..pos);
            o.pos = 0;
        }
        Ok(())
    }

    /// Queues a close frame (code 1000) and marks the connection as closing.
    pub fn start_close(&self, mask: [u8; 4]) {
        if !self.closing.replace(true) {
            self.with_out(|out| frame::push_close(out, 1000, mask));
            // Errors surface in the reader, which is waiting for the reply.
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn rt() -> tokio::runtime::Runtime {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        }
    }

    #[test]
    fn handshake_against_minimal_server_keeps_early_frames() {
        rt().block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            let server = tokio::spawn(async move {
                let (mut s, _) = l.accept().await.expect("accept");
                let mut buf = vec![0u8; 4096];
                let mut got = 0;
                while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    got += s.read(&mut buf[got..]).await.expect("read");
                }
                let req = String::from_utf8_lossy(&buf[..got]).to_string();
                let key = req
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                    .expect("key")
                    .trim()
                    .to_string();
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {}\r\n\r\n",
                    handshake::accept_for(&key)
                );
                let mut bytes = resp.into_bytes();
                bytes.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
                s.write_all(&bytes).await.expect("write");
                req
            });
            let target = Target::parse(&format!("ws://{addr}/ws?topic=x"), true).expect("target");
            let (_stream, early) = connect_ws(&target, None, 42, Offer::default(), None).await.expect("connect");
            assert_eq!(early, vec![0x81, 0x02, b'h', b'i']);
            let req = server.await.expect("join");
            assert!(req.starts_with("GET /ws?topic=x HTTP/1.1\r\n"));
        });
    }

    #[test]
    fn refused_and_bad_status_are_grouped() {
        rt().block_on(async {
            // Bind then drop to get a port that (almost certainly) refuses.
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            drop(l);
            let t = Target::parse(&format!("ws://{addr}/"), true).expect("target");
            let e = connect_ws(&t, None, 1, Offer::default(), None)
                .await
                .expect_err("refused");
            assert!(e.reason().starts_with("connect: "), "{}", e.reason());

            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            tokio::spawn(async move {
                let (mut s, _) = l.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
            let t = Target::parse(&format!("ws://{addr}/"), true).expect("target");
            let e = connect_ws(
                &t,
                Some("127.0.0.2".parse().expect("ip")),
                1,
                Offer::default(),
                None,
            )
            .await
            .expect_err("503");
            assert_eq!(e.reason(), "handshake: HTTP status 503");
        });
    }
}
