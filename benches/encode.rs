//! Encode once: the cost of turning a payload into a complete server frame, of
//! joining a batch of frames into one buffer shared by every socket of a shard, and of
//! compressing a JSON message once for every permessage-deflate client (`deflate/N`; the
//! size printed is the compressed frame's) and inflating what a client compressed
//! (`inflate/N`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hubcast::wire::deflate::{Deflater, Inflater};
use hubcast::wire::frame::{Opcode, encode, join, payload_of};
use std::hint::black_box;

/// A JSON feed message of about `size` bytes: an array of quotes, varied enough not to
/// be one repeated string.
fn json(size: usize) -> Vec<u8> {
    let mut s = String::from("[");
    let mut i = 0u64;
    while s.len() + 1 < size {
        s.push_str(&format!(
            r#"{{"id":{i},"symbol":"EUR{}","bid":1.08{:02},"ask":1.09{:02},"ts":17326{:05}}},"#,
            i % 7,
            i * 37 % 100,
            i * 53 % 100,
            i * 7919 % 100_000
        ));
        i += 1;
    }
    s.truncate(size - 1);
    s.push(']');
    s.into_bytes()
}

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

    let mut g = c.benchmark_group("deflate");
    let mut deflater = Deflater::new();
    for size in [256usize, 1024, 16384] {
        let payload = json(size);
        let frame = deflater
            .frame(Opcode::Text, &payload)
            .expect("JSON compresses");
        println!(
            "deflate/{size}: {size} B of JSON -> a {} B frame",
            frame.len()
        );
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, p| {
            b.iter(|| deflater.frame(Opcode::Text, black_box(p)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("inflate");
    for size in [1024usize, 16384] {
        let payload = json(size);
        let frame = Deflater::new()
            .frame(Opcode::Text, &payload)
            .expect("JSON compresses");
        let (_, compressed) = payload_of(&frame).expect("one frame");
        let mut inflater = Inflater::new();
        let mut out = Vec::with_capacity(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &compressed, |b, c| {
            b.iter(|| {
                out.clear();
                // Each frame stands alone (no context takeover): start from an empty window.
                inflater.reset();
                inflater
                    .inflate(black_box(c), true, &mut out, usize::MAX)
                    .expect("inflates");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
