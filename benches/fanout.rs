//! Fan-out inside one shard, without the network in the way:
//!
//! - `queued/10000`: one shared frame to 10,000 clients whose sockets are full (so each
//!   keeps a reference in its queue) — the per-recipient bookkeeping alone.
//! - `sockets/1000`: one shared frame to 1,000 real loopback sockets, written directly
//!   (a thread drains the peers) — bookkeeping plus one `write` per recipient.
//! - `batch/10000`: what a shard does with a batch from its inbox — 8 messages of one
//!   topic, looked up, joined once and handed to 10,000 queued plain clients
//!   (`fan_out_batch`, the loop above plus the per-run work).
//!
//! All print the heap allocations made per recipient during the measured fan-outs,
//! counted by a wrapping global allocator: the fan-out path must make none.

use std::io::Read;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hubcast::engine::client::Client;
use hubcast::engine::fanout::{Outcome, Published, fan_out, fan_out_batch};
use hubcast::engine::registry::{Registry, Snapshot};
use hubcast::wire::frame::{Opcode, encode};

#[path = "../tests/common/counting.rs"]
mod counting;
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
        let conn = Rc::new(tokio::net::TcpStream::from_std(server_side).expect("register"));
        let who = reg.insert(Client::new(i as u64, Box::new([topic.clone()])));
        if let Some(c) = reg.get_mut(who) {
            c.attach(conn.clone());
        }
        conns.push(conn);
        peers.push(peer);
    }
    let snap = reg.rebuild();
    // Let the reactor see every socket writable once, as a running shard would.
    let writable = |conns: &[Rc<tokio::net::TcpStream>]| {
        rt.block_on(async {
            for c in conns {
                let _ = c.writable().await;
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
    let mut g = c.benchmark_group("fanout_sockets");
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
                }
            }
            total
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = drainer.join();
    println!(
        "fanout_sockets: {} allocations over {} deliveries ({queued} had to queue)",
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

criterion_group!(benches, queued, sockets, batch);
criterion_main!(benches);
