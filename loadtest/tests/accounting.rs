//! The accounting against a deliberately misbehaving broadcast server.
//!
//! A throwaway server (subscribers on `/ws`, publishing by HTTP POST) drops,
//! duplicates, reorders and fragments known messages, interleaves pings, and
//! can close subscribers with a chosen code. The load generator must report
//! exactly the damage the server did, and answer every ping with a pong.
//! Clients offering `hubcast.v1` get the messages as v1 pushes, offset = the
//! message's sequence number + 1, so the damage shows in the offsets too.

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
    /// Do not select `hubcast.v1` when a client offers it.
    refuse_v1: bool,
}

const NONE: Misbehave = Misbehave {
    drop_for_first: false,
    duplicate: false,
    reorder: false,
    fragment: false,
    close_with: None,
    refuse_v1: false,
};

#[derive(Default)]
struct Shared {
    /// Subscribers, and whether each speaks v1.
    subs: Mutex<Vec<(mpsc::UnboundedSender<Vec<u8>>, bool)>>,
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

async fn serve_ws(
    stream: tokio::net::TcpStream,
    head: String,
    shared: Arc<Shared>,
    bad: Misbehave,
) {
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("key")
        .trim()
        .to_string();
    let v1 = !bad.refuse_v1
        && head
            .lines()
            .any(|l| l == "Sec-WebSocket-Protocol: hubcast.v1");
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    // Register before answering, so that everything published after the 101 arrives.
    shared.subs.lock().await.push((tx.clone(), v1));
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{}\r\n",
        accept_for(&key),
        if v1 {
            "Sec-WebSocket-Protocol: hubcast.v1\r\n"
        } else {
            ""
        }
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

/// The publisher's sequence number: ASCII stamp (plain runs) or JSON (v1 runs).
fn seq_of(body: &[u8]) -> u64 {
    payload::parse(body)
        .or_else(|| payload::parse_json(body))
        .expect("stamped payload")
        .seq
}

async fn publish(shared: &Shared, body: Vec<u8>, held: &mut Option<Vec<u8>>, bad: Misbehave) {
    let seq = seq_of(&body);
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
    for plain in bodies {
        let seq = seq_of(&plain);
        let r = seq % 100;
        // One publisher: its sequence numbers are the topic's offsets − 1.
        let push = [
            format!("{{\"topic\":\"t\",\"offset\":{},\"data\":", seq + 1).as_bytes(),
            &plain,
            b"}",
        ]
        .concat();
        for (i, (tx, v1)) in subs.iter().enumerate() {
            if bad.drop_for_first && r == 7 && i == 0 {
                continue;
            }
            let body = if *v1 { &push } else { &plain };
            let mut out = Vec::new();
            if bad.fragment && r == 30 {
                out.extend(server_frame(false, 0x1, &body[..10]));
                out.extend(server_frame(true, 0x9, b"are you there"));
                out.extend(server_frame(false, 0x0, &body[10..20]));
                out.extend(server_frame(true, 0x0, &body[20..]));
            } else {
                out.extend(server_frame(true, 0x1, body));
                if r == 50 {
                    out.extend(server_frame(true, 0x9, b"are you there"));
                }
            }
            if bad.duplicate && r == 13 {
                out.extend(server_frame(true, 0x1, body));
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
                    serve_ws(stream, head, sh, bad).await;
                } else {
                    serve_http(stream, buf, sh, bad).await;
                }
            });
        }
    });
    (addr, shared, rt)
}

fn run(addr: std::net::SocketAddr, subs: usize) -> Report {
    try_run(addr, subs, &[]).expect("run")
}

fn try_run(addr: std::net::SocketAddr, subs: usize, extra: &[&str]) -> anyhow::Result<Report> {
    let mut argv = vec![
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
    argv.extend(extra.iter().map(|a| a.to_string()));
    let cfg = Args::try_parse_from(argv)
        .expect("flags")
        .into_config()
        .expect("config");
    hubcast_loadtest::run::run(&cfg, false)
}

#[test]
fn reports_exactly_the_damage_done() {
    let (addr, shared, _rt) = start(Misbehave {
        drop_for_first: true,
        duplicate: true,
        reorder: true,
        fragment: true,
        ..NONE
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
    let none = NONE;
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

#[test]
fn v1_offsets_show_the_same_damage() {
    let (addr, shared, _rt) = start(Misbehave {
        drop_for_first: true,
        duplicate: true,
        reorder: true,
        fragment: true,
        ..NONE
    });
    let subs = 5u64;
    let report = try_run(addr, subs as usize, &["--protocol=v1"]).expect("run");
    assert_eq!(report.setup.protocol, "v1");
    let st = &report.steps[0];
    assert_eq!((st.sent, st.expected), (1000, 1000 * subs));
    // By sequence number, exactly as for plain subscribers.
    assert_eq!(st.lost, 10);
    assert_eq!(st.duplicates, 10 * subs);
    assert_eq!(st.reorders, 10 * subs);
    assert_eq!(st.stale, 0);
    // By offset: a dropped message and every swapped pair skip one offset; a
    // duplicate and the late half of every pair go back.
    assert_eq!(st.offset_gaps, Some(10 + 10 * subs));
    assert_eq!(st.offset_dups, Some(10 * subs + 10 * subs));
    assert_eq!(report.summary.offset_gaps, Some(10 + 10 * subs));
    assert_eq!(report.summary.offset_dups, Some(20 * subs));
    assert_eq!(report.summary.foreign_messages, 0);
    assert!(
        st.failures.iter().any(|f| f.starts_with("offsets:")),
        "{:?}",
        st.failures
    );
    // Fragmented pushes were reassembled; pings answered.
    assert_eq!(shared.pongs.load(Ordering::Relaxed), 20 * subs);

    // A clean v1 run passes, offsets included; a plain run has no offset figures.
    let (addr, _shared, _rt2) = start(NONE);
    let report = try_run(addr, 3, &["--protocol=v1"]).expect("run");
    let st = &report.steps[0];
    assert_eq!((st.unique, st.lost), (3000, 0));
    assert_eq!((st.offset_gaps, st.offset_dups), (Some(0), Some(0)));
    assert!(st.pass, "{:?}", st.failures);
    let report = run(addr, 3);
    assert_eq!(report.steps[0].offset_gaps, None);
    assert_eq!(report.summary.offset_dups, None);
}

#[test]
fn v1_against_a_server_that_does_not_select_it_is_a_clear_error() {
    let (addr, _shared, _rt) = start(Misbehave {
        refuse_v1: true,
        ..NONE
    });
    let e = try_run(addr, 3, &["--protocol=v1"]).expect_err("no v1");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("did not select subprotocol hubcast.v1"),
        "{msg}"
    );
}
