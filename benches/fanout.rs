//! Fan-out inside one shard, without the network in the way:
//!
//! - `queued/10000`: one shared frame to 10,000 clients whose sockets are full (so each
//!   keeps a reference in its queue) — the per-recipient bookkeeping alone.
//! - `sockets/1000`: one shared frame to 1,000 real loopback sockets, written directly
//!   (a thread drains the peers) — bookkeeping plus one `write` per recipient.
//! - `batch/10000`: what a shard does with a batch from its inbox — 8 messages of one
//!   topic, looked up, joined once and handed to 10,000 queued plain clients
//!   (`fan_out_batch`, the loop above plus the per-run work).
//! - `tls_sockets/1000`: the same over TLS (TLS 1.3, AES-256-GCM, rustls with `ring`;
//!   handshakes done in memory first): per recipient the shared frame is sealed into
//!   the client's session and the record written — what TLS adds to a delivery.
//!
//! All print the heap allocations made per recipient during the measured fan-outs,
//! counted by a wrapping global allocator: the plain fan-out path must make none (a TLS
//! delivery allocates its record, inside rustls).

use std::io::Read;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hubcast::engine::client::{Client, Flushed};
use hubcast::engine::fanout::{Outcome, Published, fan_out, fan_out_batch};
use hubcast::engine::registry::{Registry, Snapshot};
use hubcast::engine::transport::Conn;
use hubcast::wire::frame::{Opcode, encode};

#[path = "../tests/common/counting.rs"]
mod counting;
// The fan-out runs on the bench's thread: count that thread's allocations only (the
// peers' drainer thread and the harness are not what is measured).
use counting::{Counting, allocations};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and deliveries over the measured fan-outs.
#[derive(Default)]
struct Tally {
    allocs: u64,
    deliveries: u64,
}

/// One measured fan-out (`run`), its allocations and deliveries tallied; returns its
/// duration.
fn timed(
    reg: &mut Registry,
    out: &mut Outcome,
    tally: &mut Tally,
    run: impl FnOnce(&mut Registry, &mut Outcome),
) -> Duration {
    out.clear();
    let before = allocations();
    let t = Instant::now();
    run(reg, out);
    let took = t.elapsed();
    tally.allocs += allocations() - before;
    tally.deliveries += out.deliveries;
    took
}

/// One measured fan-out of `frame` to `keys`; returns its duration.
fn timed_fan_out(
    reg: &mut Registry,
    keys: &[u32],
    frame: &Bytes,
    out: &mut Outcome,
    tally: &mut Tally,
) -> Duration {
    timed(reg, out, tally, |reg, out| {
        fan_out(reg, keys, frame, 1, usize::MAX, out)
    })
}

/// `iters` measured rounds, each after emptying every client's queue, so that every
/// round starts from the same state; returns their total duration.
fn emptied_rounds(
    iters: u64,
    reg: &mut Registry,
    mut round: impl FnMut(&mut Registry) -> Duration,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        for (_, c) in reg.iter_mut() {
            c.discard_queue();
        }
        total += round(reg);
    }
    total
}

/// `n` plain clients of topic `t`, registered, and their snapshot.
fn plain_clients(n: usize) -> (Registry, Arc<str>, Snapshot) {
    let mut reg = Registry::new();
    let topic = reg.intern("t");
    for i in 0..n {
        reg.insert(Client::new(i as u64, Box::new([topic.clone()])));
    }
    let snap = reg.rebuild();
    (reg, topic, snap)
}

fn queued(c: &mut Criterion) {
    const N: usize = 10_000;
    let (mut reg, _, snap) = plain_clients(N);
    let frame = encode(Opcode::Text, &[b'x'; 64]);
    let mut out = Outcome::default();
    // Warm up each queue's capacity, as a steady state would have it.
    fan_out(
        &mut reg,
        snap.subscribers("t"),
        &frame,
        1,
        usize::MAX,
        &mut out,
    );
    let mut tally = Tally::default();
    let mut g = c.benchmark_group("fanout_queued");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function(BenchmarkId::from_parameter(N), |b| {
        b.iter_custom(|iters| {
            emptied_rounds(iters, &mut reg, |reg| {
                timed_fan_out(reg, snap.subscribers("t"), &frame, &mut out, &mut tally)
            })
        })
    });
    g.finish();
    println!(
        "fanout_queued: {} allocations over {} deliveries",
        tally.allocs, tally.deliveries
    );
    assert_eq!(tally.allocs, 0, "fan-out must not allocate per recipient");
}

fn sockets(c: &mut Criterion) {
    socket_fan_out(c, "fanout_sockets", None);
}

fn tls_sockets(c: &mut Criterion) {
    socket_fan_out(c, "fanout_tls_sockets", Some(tls::Pair::new()));
}

/// One shared frame to 1,000 loopback sockets, plain or (with `tls`) TLS.
fn socket_fan_out(c: &mut Criterion, name: &str, tls: Option<tls::Pair>) {
    const N: usize = 1000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut peers = Vec::new();
    let mut conns = Vec::new();
    let mut reg = Registry::new();
    let topic = reg.intern("t");
    for i in 0..N {
        let peer = std::net::TcpStream::connect(addr).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        server_side.set_nonblocking(true).expect("nonblocking");
        peer.set_nonblocking(true).expect("nonblocking");
        let socket = tokio::net::TcpStream::from_std(server_side).expect("register");
        let conn = Rc::new(match &tls {
            Some(pair) => Conn::tls(socket, pair.session()),
            None => Conn::plain(socket),
        });
        let who = reg.insert(Client::new(i as u64, Box::new([topic.clone()])));
        if let Some(c) = reg.get_mut(who) {
            c.attach(conn.clone());
        }
        conns.push(conn);
        peers.push(peer);
    }
    let snap = reg.rebuild();
    // Let the reactor see every socket writable once, as a running shard would.
    let writable = |conns: &[Rc<Conn>]| {
        rt.block_on(async {
            for c in conns {
                let _ = c.socket().writable().await;
            }
        })
    };
    writable(&conns);
    let stop = Arc::new(AtomicBool::new(false));
    let drain_stop = stop.clone();
    let drainer = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while !drain_stop.load(Ordering::Relaxed) {
            for p in &mut peers {
                while matches!(p.read(&mut buf), Ok(n) if n > 0) {}
            }
        }
    });
    let frame = encode(Opcode::Text, &[b'x'; 64]);
    let mut out = Outcome::default();
    let (mut tally, mut queued) = (Tally::default(), 0);
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function(BenchmarkId::from_parameter(N), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += timed_fan_out(
                    &mut reg,
                    snap.subscribers("t"),
                    &frame,
                    &mut out,
                    &mut tally,
                );
                // Sockets that filled up keep a reference: drop it so every round starts equal.
                queued += out.to_flush.len();
                if !out.to_flush.is_empty() {
                    for (_, c) in reg.iter_mut() {
                        c.discard_queue();
                        c.flushing = false;
                    }
                    writable(&conns);
                    // TLS records already sealed cannot be dropped: write them out.
                    for (_, c) in reg.iter_mut() {
                        while let Ok(Flushed::Blocked) = c.flush() {
                            writable(&conns);
                        }
                        c.flushing = false;
                    }
                }
            }
            total
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = drainer.join();
    println!(
        "{name}: {} allocations over {} deliveries ({queued} had to queue)",
        tally.allocs, tally.deliveries
    );
}

fn batch(c: &mut Criterion) {
    const N: usize = 10_000;
    const FRAMES: usize = 8;
    let (mut reg, topic, snap) = plain_clients(N);
    let batch: Vec<Published> = (0..FRAMES)
        .map(|_| Published::new(topic.clone(), encode(Opcode::Text, &[b'x'; 64])))
        .collect();
    let mut out = Outcome::default();
    fan_out_batch(&mut reg, &snap, &batch, usize::MAX, &mut out);
    let mut tally = Tally::default();
    let mut g = c.benchmark_group("fanout_batch");
    g.throughput(Throughput::Elements((N * FRAMES) as u64));
    g.bench_function(BenchmarkId::from_parameter(N), |b| {
        b.iter_custom(|iters| {
            emptied_rounds(iters, &mut reg, |reg| {
                timed(reg, &mut out, &mut tally, |reg, out| {
                    fan_out_batch(reg, &snap, &batch, usize::MAX, out)
                })
            })
        })
    });
    g.finish();
    println!(
        "fanout_batch: {} allocations over {} deliveries",
        tally.allocs, tally.deliveries
    );
}

/// Server sessions with their handshake done, without a network.
mod tls {
    use std::sync::Arc;

    use tokio_rustls::rustls::crypto::ring::default_provider;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio_rustls::rustls::{
        ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
    };

    /// A self-signed certificate, and a server and a client configuration using it.
    pub struct Pair {
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    }

    impl Pair {
        pub fn new() -> Self {
            let made =
                rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
            let cert = made.cert.der().clone();
            let key =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
            let provider = Arc::new(default_provider());
            let server = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], key)
                .expect("server config");
            let mut roots = RootCertStore::empty();
            roots.add(cert).expect("root");
            let client = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Pair {
                server: Arc::new(server),
                client: Arc::new(client),
            }
        }

        /// A server session after a complete handshake with a client in memory.
        pub fn session(&self) -> ServerConnection {
            let mut server = ServerConnection::new(self.server.clone()).expect("server");
            let name = ServerName::try_from("localhost").expect("name");
            let mut client = ClientConnection::new(self.client.clone(), name).expect("client");
            let mut wire = Vec::new();
            while server.is_handshaking() || client.is_handshaking() {
                wire.clear();
                while client.wants_write() {
                    client.write_tls(&mut wire).expect("client writes");
                }
                let mut rd = &wire[..];
                while !rd.is_empty() {
                    server.read_tls(&mut rd).expect("server reads");
                    server.process_new_packets().expect("server handshake");
                }
                wire.clear();
                while server.wants_write() {
                    server.write_tls(&mut wire).expect("server writes");
                }
                let mut rd = &wire[..];
                while !rd.is_empty() {
                    client.read_tls(&mut rd).expect("client reads");
                    client.process_new_packets().expect("client handshake");
                }
            }
            server
        }
    }
}

criterion_group!(benches, queued, sockets, batch, tls_sockets);
criterion_main!(benches);
