//! Shared test harness: a real hubcast server on an ephemeral loopback port, real
//! WebSocket clients (tokio-tungstenite) and a raw-socket client for the frames a
//! well-behaved library refuses to send.
#![allow(dead_code)]

pub mod python;
#[allow(unused_imports)] // used by some test files only
pub use python::{python_script, python_summary};
pub mod tls;
pub mod v1;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hubcast::{Config, Hub, Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound for anything a test waits for; hitting it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
    pub hub: Hub,
}

/// Raises this process's soft open-file limit to its hard limit (servers it spawns
/// inherit it), which must allow `needed` descriptors.
pub fn raise_open_file_limit(needed: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    setrlimit(Resource::Nofile, raised).expect("raise the open-file limit");
    assert!(
        lim.maximum.is_none_or(|m| m > needed),
        "hard open-file limit too low: {lim:?}"
    );
}

/// Starts a server with 2 shards on 127.0.0.1:0; `tweak` adjusts the configuration.
pub fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        shards: 2,
        drain_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    tweak(&mut config);
    let server = Server::start(config).expect("server starts");
    TestServer {
        addr: server.local_addr(),
        hub: server.hub().clone(),
        server: Some(server),
    }
}

impl TestServer {
    /// The server itself (TLS reloads).
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/ws{}", self.addr, query)
    }

    /// Shuts down and waits for every shard to stop.
    pub fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            s.join().expect("clean shutdown");
        }
    }

    /// Waits until `n` connections are registered (visible to fan-out and counts).
    pub async fn wait_connections(&self, n: usize) {
        let hub = self.hub.clone();
        within(async move {
            while hub.connections() != n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
    }

    /// Reads one counter from /metrics text.
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.hub.metrics_text();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
    }

    /// Waits until a counter reaches at least `n`.
    pub async fn wait_metric(&self, name: &str, n: u64) {
        within(async {
            while self.metric(name) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            let _ = s.join();
        }
    }
}

/// Starts the `hubcast` binary on 127.0.0.1:0 (2 shards, `RUST_LOG=warn`) and returns
/// the process and the address from its banner line.
pub fn spawn_binary() -> (std::process::Child, SocketAddr) {
    spawn_binary_with(&[])
}

/// [`spawn_binary`] with extra flags.
pub fn spawn_binary_with(extra: &[&str]) -> (std::process::Child, SocketAddr) {
    spawn_binary_logging(extra, "warn", std::process::Stdio::inherit())
}

/// [`spawn_binary_with`] at log level `level` (`RUST_LOG`), its stderr (the logs) going
/// to `logs`.
pub fn spawn_binary_logging(
    extra: &[&str],
    level: &str,
    logs: std::process::Stdio,
) -> (std::process::Child, SocketAddr) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args(["--listen", "127.0.0.1:0", "--shards", "2"])
        .args(extra)
        .env("RUST_LOG", level)
        .stdout(std::process::Stdio::piped())
        .stderr(logs)
        .spawn()
        .expect("spawn hubcast");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("banner");
    let addr = line
        .split("://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in the banner: {line:?}"));
    (child, addr)
}

/// Runs `f`, failing the test if it takes longer than [`PATIENCE`].
pub async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f).await.expect("timed out")
}

pub async fn connect(url: &str) -> Ws {
    let (ws, resp) = within(tokio_tungstenite::connect_async(url))
        .await
        .expect("connects");
    assert_eq!(resp.status(), 101);
    ws
}

/// Next data message (text or binary payload), skipping pings/pongs; None on close/EOF.
pub async fn next_data<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Option<Vec<u8>> {
    loop {
        match within(ws.next()).await? {
            Ok(Message::Text(t)) => return Some(t.as_bytes().to_vec()),
            Ok(Message::Binary(b)) => return Some(b.to_vec()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Reads until the close frame and returns its code (None if the socket just ended).
pub async fn close_code<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Option<u16> {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Close(Some(f)))) => return Some(u16::from(f.code)),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

pub async fn send_text<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, text: &str) {
    within(ws.send(Message::text(text))).await.expect("send");
}

/// Sends a raw HTTP request and returns the status code (reads only the status line,
/// so it works whether or not the server keeps the connection open).
pub async fn http_status(addr: SocketAddr, request: &str) -> u16 {
    within(async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.expect("status line");
        std::str::from_utf8(&head[9..12])
            .expect("ascii")
            .parse()
            .expect("status")
    })
    .await
}

/// The status code of a response that starts with its status line (0 if none).
pub fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Sends a raw HTTP/1.1 request (connection closed after) and returns status and body.
pub async fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    within(async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = status_of(&text);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    })
    .await
}

/// `POST /publish/{topic}` with an optional bearer token.
pub async fn http_publish(
    addr: SocketAddr,
    topic: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    http(
        addr,
        &format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// A WebSocket upgrade request as raw text.
pub fn upgrade_request(addr: SocketAddr, query: &str, extra: &str) -> String {
    format!(
        "GET /ws{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// A raw WebSocket client: handshake by hand, then arbitrary frames.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr, query: &str) -> Raw {
        let stream = within(TcpStream::connect(addr)).await.expect("connect");
        Raw::over(stream, addr, query).await
    }

    /// The handshake over a stream the caller connected (to set socket options first).
    pub async fn over(stream: TcpStream, addr: SocketAddr, query: &str) -> Raw {
        Raw::handshake(stream, addr, query, "").await.0
    }

    /// Connects with `extra` request headers (each ending in `\r\n`); returns the client
    /// and the `101` response head.
    pub async fn connect_with(addr: SocketAddr, query: &str, extra: &str) -> (Raw, String) {
        let stream = within(TcpStream::connect(addr)).await.expect("connect");
        Raw::handshake(stream, addr, query, extra).await
    }

    async fn handshake(
        mut stream: TcpStream,
        addr: SocketAddr,
        query: &str,
        extra: &str,
    ) -> (Raw, String) {
        within(async {
            stream
                .write_all(upgrade_request(addr, query, extra).as_bytes())
                .await
                .expect("write");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let end = loop {
                let n = stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "closed during handshake");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            assert!(
                buf.starts_with(b"HTTP/1.1 101"),
                "{}",
                String::from_utf8_lossy(&buf)
            );
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            (Raw { stream, buf }, head)
        })
        .await
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes)).await.expect("write");
    }

    /// Reads one server frame: (fin, opcode, payload); None at EOF.
    pub async fn frame(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        let (first, payload) = self.frame_with_first_byte().await?;
        Some((first & 0x80 != 0, first & 0x0f, payload))
    }

    /// Reads one server frame: its first byte (FIN, RSV bits, opcode) and payload; None
    /// at EOF.
    pub async fn frame_with_first_byte(&mut self) -> Option<(u8, Vec<u8>)> {
        within(async {
            loop {
                if let Some((first, payload, used)) = parse_server_frame(&self.buf) {
                    self.buf.drain(..used);
                    return Some((first, payload));
                }
                // Straight into the buffer: a 64 KiB array here would be part of every
                // future that reads a frame (and of their copies, in debug builds).
                self.buf.reserve(1 << 16);
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// Reads frames until a close frame; returns its code (None on EOF without one).
    pub async fn close_code(&mut self) -> Option<u16> {
        while let Some((_, op, payload)) = self.frame().await {
            if op == 0x8 {
                return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
        None
    }
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn parse_server_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[1] & 0x80, 0, "server frames must not be masked");
    let (len, head) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(b.get(2..10)?);
            (u64::from_be_bytes(l) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let payload = b.get(head..head + len)?.to_vec();
    Some((b[0], payload, head + len))
}

/// An embedding app: its own listener (speaking TLS when `tls` is given) and its own
/// hyper service, which hands `/live` to hubcast's `Hub::upgrade` and answers anything
/// else with `app`.
pub async fn embedding_app(hub: Hub, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let (hub, tls) = (hub.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve_app(hub, peer, tcp).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve_app(hub, peer, stream).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn serve_app<I>(hub: Hub, peer: SocketAddr, io: I)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    use bytes::Bytes;
    use http_body_util::Full;
    let svc = hyper::service::service_fn(move |mut req| {
        let hub = hub.clone();
        async move {
            Ok::<_, std::convert::Infallible>(if req.uri().path() == "/live" {
                hub.upgrade(&mut req, Some(peer))
            } else {
                hyper::Response::new(Full::new(Bytes::from_static(b"app")))
            })
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}
