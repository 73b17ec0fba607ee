//! Encode once: the cost of turning a payload into a complete server frame, and of
//! joining a batch of frames into one buffer shared by every socket of a shard.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hubcast::wire::frame::{Opcode, encode, join};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for size in [64usize, 1024, 65536] {
        let payload = vec![b'x'; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, p| {
            b.iter(|| encode(Opcode::Text, black_box(p)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("join");
    for n in [1usize, 64] {
        let frames: Vec<_> = (0..n).map(|_| encode(Opcode::Text, &[b'x'; 64])).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("frames_of_64B", n), &frames, |b, f| {
            b.iter(|| join(black_box(f)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
