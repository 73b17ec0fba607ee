//! The accounting against a deliberately misbehaving broadcast server.
//!
//! A throwaway server (subscribers on `/ws`, publishing by HTTP POST) drops,
//! duplicates, reorders and fragments known messages, interleaves pings, and
//! can close subscribers with a chosen code. The load generator must report
//! exactly the damage the server did, and answer every ping with a pong.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use hubcast_loadtest::cli::Args;
use hubcast_loadtest::handshake::accept_for;
use hubcast_loadtest::payload;
use hubcast_loadtest::report::Report;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

/// What the server does wrong.
#[derive(Clone, Copy)]
struct Misbehave {
    /// seq % 100 == 7: not sent to the first subscriber.
    drop_for_first: bool,
    /// seq % 100 == 13: sent twice.
    duplicate: bool,
    /// seq % 100 == 20 is held and sent after 21.
    reorder: bool,
    /// seq % 100 == 30: three fragments with a ping between them.
    fragment: bool,
    /// Close every subscriber with this code after the first message.
    close_with: Option<u16>,
}

#[derive(Default)]
struct Shared {
    subs: Mutex<Vec<mpsc::UnboundedSender<Vec<u8>>>>,
    pongs: AtomicU64,
    closes: AtomicU64,
}

fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![(u8::from(fin) << 7) | opcode];
    let n = payload.len();
    if n < 126 {
        v.push(n as u8);
    } else {
        v.push(126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

/// Reads client frames (masked) and counts pongs; echoes a close.
async fn read_client(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    shared: Arc<Shared>,
) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let Ok(n) = rd.read(&mut tmp).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&tmp[..n]);
        loop {
            if buf.len() < 2 {
                break;
            }
            assert_eq!(buf[1] & 0x80, 0x80, "client frames must be masked");
            let (hlen, len) = match buf[1] & 0x7F {
                126 if buf.len() >= 4 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
                126 => break,
                127 => panic!("no large client frames expected"),
                l => (2, l as usize),
            };
            if buf.len() < hlen + 4 + len {
                break;
            }
            let op = buf[0] & 0x0F;
            let mut mask = [0u8; 4];
            mask.copy_from_slice(&buf[hlen..hlen + 4]);
            let payload: Vec<u8> = buf[hlen + 4..hlen + 4 + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            buf.drain(..hlen + 4 + len);
            match op {
                0xA => {
                    assert_eq!(payload, b"are you there");
                    shared.pongs.fetch_add(1, Ordering::Relaxed);
                }
                0x8 => {
                    shared.closes.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(server_frame(true, 0x8, &payload));
                    let _ = tx.send(Vec::new()); // empty = close TCP
                    return;
                }
                other => panic!("unexpected client opcode {other}"),
            }
        }
    }
}

async fn serve_ws(stream: tokio::net::TcpStream, head: String, shared: Arc<Shared>) {
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("key")
        .trim()
        .to_string();
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    // Register before answering, so that everything published after the 101 arrives.
    shared.subs.lock().await.push(tx.clone());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_for(&key)
    );
    if wr.write_all(resp.as_bytes()).await.is_err() {
        return;
    }
    tokio::spawn(read_client(rd, tx, shared));
    while let Some(bytes) = rx.recv().await {
        if bytes.is_empty() || wr.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn serve_http(
    mut stream: tokio::net::TcpStream,
    mut buf: Vec<u8>,
    shared: Arc<Shared>,
    bad: Misbehave,
) {
    let mut held: Option<Vec<u8>> = None;
    let mut tmp = [0u8; 4096];
    loop {
        // Complete requests in the buffer.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(head)) = req.parse(&buf) else {
                break;
            };
            let len: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            if buf.len() < head + len {
                break;
            }
            let body = buf[head..head + len].to_vec();
            buf.drain(..head + len);
            publish(&shared, body, &mut held, bad).await;
            if stream
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
        }
        match stream.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

async fn publish(shared: &Shared, body: Vec<u8>, held: &mut Option<Vec<u8>>, bad: Misbehave) {
    let seq = payload::parse(&body).expect("stamped payload").seq;
    let subs = shared.subs.lock().await;
    let r = seq % 100;
    if bad.reorder && r == 20 {
        *held = Some(body);
        return;
    }
    let mut bodies = vec![body];
    if bad.reorder && r == 21 {
        bodies.extend(held.take());
    }
    for body in bodies {
        let r = payload::parse(&body).expect("stamped").seq % 100;
        for (i, tx) in subs.iter().enumerate() {
            if bad.drop_for_first && r == 7 && i == 0 {
                continue;
            }
            let mut out = Vec::new();
            if bad.fragment && r == 30 {
                out.extend(server_frame(false, 0x1, &body[..10]));
                out.extend(server_frame(true, 0x9, b"are you there"));
                out.extend(server_frame(false, 0x0, &body[10..20]));
                out.extend(server_frame(true, 0x0, &body[20..]));
            } else {
                out.extend(server_frame(true, 0x1, &body));
                if r == 50 {
                    out.extend(server_frame(true, 0x9, b"are you there"));
                }
            }
            if bad.duplicate && r == 13 {
                out.extend(server_frame(true, 0x1, &body));
            }
            if let Some(code) = bad.close_with {
                out.extend(server_frame(true, 0x8, &code.to_be_bytes()));
            }
            let _ = tx.send(out);
        }
    }
}

/// Starts the server on a runtime of its own; returns its address.
fn start(bad: Misbehave) -> (std::net::SocketAddr, Arc<Shared>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let shared = Arc::new(Shared::default());
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sh = shared.clone();
    rt.spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let sh = sh.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match stream.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                if head.starts_with("GET ") {
                    serve_ws(stream, head, sh).await;
                } else {
                    serve_http(stream, buf, sh, bad).await;
                }
            });
        }
    });
    (addr, shared, rt)
}

fn run(addr: std::net::SocketAddr, subs: usize) -> Report {
    let argv = vec![
        "hubcast-loadtest".to_string(),
        format!("--url=ws://{addr}/ws"),
        format!("--publish-http=http://{addr}/publish"),
        format!("--subs={subs}"),
        "--pubs=1".into(),
        "--rate=1000".into(),
        "--duration=1".into(),
        "--drain=0.5".into(),
        "--settle=0.1".into(),
        "--threads=2".into(),
        "--slo-ms=1000".into(),
    ];
    let cfg = Args::try_parse_from(argv)
        .expect("flags")
        .into_config()
        .expect("config");
    hubcast_loadtest::run::run(&cfg, false).expect("run")
}

#[test]
fn reports_exactly_the_damage_done() {
    let (addr, shared, _rt) = start(Misbehave {
        drop_for_first: true,
        duplicate: true,
        reorder: true,
        fragment: true,
        close_with: None,
    });
    let subs = 5u64;
    let report = run(addr, subs as usize);
    let st = &report.steps[0];
    assert_eq!(st.sent, 1000);
    assert_eq!(st.accepted, 1000);
    assert_eq!(st.expected, 1000 * subs);
    // 10 messages (seq % 100 == 7) dropped for one subscriber.
    assert_eq!(st.lost, 10);
    assert_eq!(st.unique, 1000 * subs - 10);
    // 10 duplicated messages per subscriber.
    assert_eq!(st.duplicates, 10 * subs);
    // 10 swapped pairs per subscriber: the late one is a reorder.
    assert_eq!(st.reorders, 10 * subs);
    assert_eq!(st.stale, 0);
    assert_eq!(st.received, st.unique + st.duplicates);
    assert_eq!(st.latency.count, st.unique);
    assert_eq!(report.summary.foreign_messages, 0);
    assert!(!st.pass);
    assert_eq!(report.summary.exit_code, 1);
    // Fragments (seq % 100 == 30) were reassembled: nothing else is missing.
    // Every ping (10 plain + 10 inside fragmented messages) got its pong.
    assert_eq!(shared.pongs.load(Ordering::Relaxed), 20 * subs);
    // Close handshake at exit.
    assert_eq!(shared.closes.load(Ordering::Relaxed), subs);
    assert_eq!(report.summary.unclosed_at_exit, 0);
}

#[test]
fn clean_server_passes_and_close_codes_are_reported() {
    let none = Misbehave {
        drop_for_first: false,
        duplicate: false,
        reorder: false,
        fragment: false,
        close_with: None,
    };
    let (addr, _shared, _rt) = start(none);
    let report = run(addr, 3);
    let st = &report.steps[0];
    assert_eq!(
        (st.unique, st.lost, st.duplicates, st.reorders),
        (3000, 0, 0, 0)
    );
    assert!(st.pass, "{:?}", st.failures);
    assert_eq!(report.summary.exit_code, 0);

    let (addr, _shared, _rt2) = start(Misbehave {
        close_with: Some(4001),
        ..none
    });
    let report = run(addr, 3);
    let st = &report.steps[0];
    assert_eq!(st.unique, 3, "one message each before the close");
    assert_eq!(st.lost, 3 * 999);
    assert_eq!(st.disconnects.close_codes.0.get(&4001), Some(&3));
    assert_eq!(st.disconnects.total(), 3);
    assert!(!st.pass);
}
