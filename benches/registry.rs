//! Registry: snapshot rebuilds at 10k and 100k clients, and connect storms.
//!
//! A storm registers n clients. hubcast coalesces: it rebuilds at most once per batch of
//! messages or per 2 ms tick, however many clients connected meanwhile. The
//! `storm_coalesced` cases rebuild once per 1,024 registrations (a pessimistic stand-in
//! for a tick); `storm_naive` rebuilds on every connect — the O(n^2) trap — for contrast.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hubcast::engine::client::Client;
use hubcast::engine::registry::Registry;

fn filled(n: usize, topics: &[Arc<str>], reg: &mut Registry) {
    for i in 0..n {
        let t = topics[i % topics.len()].clone();
        reg.insert(Client::new(i as u64, Box::new([t])));
    }
}

fn storm(n: usize, every: usize) -> usize {
    let mut reg = Registry::new();
    let topic = reg.intern("ticks");
    let mut rebuilt = 0;
    for i in 0..n {
        reg.insert(Client::new(i as u64, Box::new([topic.clone()])));
        if (i + 1) % every == 0 {
            rebuilt += reg.rebuild().connections();
        }
    }
    rebuilt + reg.rebuild().connections()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rebuild");
    g.sample_size(20);
    for n in [10_000usize, 100_000] {
        let mut reg = Registry::new();
        let topics: Vec<Arc<str>> = ["a", "b", "c", "d"].iter().map(|t| reg.intern(t)).collect();
        filled(n, &topics, &mut reg);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| reg.rebuild())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("storm_coalesced");
    g.sample_size(10);
    for n in [10_000usize, 100_000] {
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| storm(n, 1024))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("storm_naive");
    g.sample_size(10);
    g.bench_with_input(BenchmarkId::from_parameter(10_000), &10_000, |b, &n| {
        b.iter(|| storm(n, 1))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
