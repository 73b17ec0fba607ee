//! The fan-out path allocates nothing per recipient: counted by a wrapping global
//! allocator over real fan-outs to queued clients (the heaviest per-recipient path:
//! each recipient keeps a reference in its queue). Also the heap an inflate state
//! really takes, which the `hubcast_inflate_context_bytes` metric reports.

#[path = "common/counting.rs"]
mod counting;

use counting::{Counting, allocated_bytes, allocations};
use hubcast::engine::client::{Client, Negotiated};
use hubcast::engine::fanout::{Outcome, Published, fan_out_batch};
use hubcast::engine::registry::Registry;
use hubcast::wire::deflate::{Deflater, Inflater};
use hubcast::wire::extensions::Deflate;
use hubcast::wire::frame::{Opcode, encode};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn fan_out_allocates_nothing_per_recipient() {
    const N: usize = 5_000;
    let mut reg = Registry::new();
    let t = reg.intern("t");
    for i in 0..N {
        reg.insert(Client::new(i as u64, Box::new([t.clone()])));
    }
    let snap = reg.rebuild();
    let one = [Published::new(t.clone(), encode(Opcode::Text, &[b'x'; 64]))];
    let mut out = Outcome::default();
    // First round grows each queue once (a steady state has that capacity already).
    fan_out_batch(&mut reg, &snap, &one, usize::MAX, &mut out);
    for (_, c) in reg.iter_mut() {
        c.discard_queue();
    }
    out.clear();
    let before = allocations();
    for _ in 0..10 {
        fan_out_batch(&mut reg, &snap, &one, usize::MAX, &mut out);
        for (_, c) in reg.iter_mut() {
            c.discard_queue();
        }
        out.clear();
    }
    let allocs = allocations() - before;
    assert_eq!(allocs, 0, "{allocs} allocations for {} deliveries", 10 * N);

    // A run of several frames for one topic is joined once per batch: the buffer and its
    // shared reference count (allocated on first share), however many recipients.
    let three: Vec<_> = (0..3).map(|_| one[0].clone()).collect();
    let before = allocations();
    fan_out_batch(&mut reg, &snap, &three, usize::MAX, &mut out);
    assert_eq!(allocations() - before, 2);
    assert_eq!(out.deliveries, 3 * N as u64);
}

#[test]
fn v1_fan_out_allocates_nothing_per_recipient_with_or_without_floors() {
    const N: usize = 5_000;
    let mut reg = Registry::new();
    let t = reg.intern("t");
    let mut floored = Vec::new();
    for i in 0..N {
        let mut c = Client::new_v1(i as u64, Box::new([]));
        // Half of them subscribed at position 5: pushes up to 5 are skipped for them.
        if i % 2 == 0 {
            c.subscribe(t.clone(), 5);
        } else {
            c.subscribe(t.clone(), 0);
        }
        floored.push(reg.insert(c));
    }
    // A plain client too: both encodings go out, each shared by its kind.
    reg.insert(Client::new(N as u64, Box::new([t.clone()])));
    let snap = reg.rebuild();
    assert_eq!(snap.v1("t").len(), N);
    let msg = |offset: u64| {
        let mut p = Published::new(t.clone(), encode(Opcode::Text, b"{\"x\":1}"));
        p.offset = offset;
        p.push = Some(encode(
            Opcode::Text,
            &hubcast::wire::v1::push("t", offset, Opcode::Text, b"{\"x\":1}"),
        ));
        p
    };
    let mut out = Outcome::default();
    // Warm-up: queues grow once; floors at 5 are passed by offset 6 and dropped.
    let warm: Vec<Published> = (4..=7).map(msg).collect();
    fan_out_batch(&mut reg, &snap, &warm, usize::MAX, &mut out);
    assert_eq!(out.deliveries, (N / 2 * 4 + N / 2 * 2 + 4) as u64);
    for (_, c) in reg.iter_mut() {
        c.discard_queue();
    }
    out.clear();
    let msgs: Vec<Published> = (8..18).map(msg).collect();
    let before = allocations();
    for m in msgs.chunks(1) {
        fan_out_batch(&mut reg, &snap, m, usize::MAX, &mut out);
        for (_, c) in reg.iter_mut() {
            c.discard_queue();
        }
        out.clear();
    }
    // Per message, not per recipient: each of its two encodings (plain frame, push)
    // allocates its shared reference count on its first share — with 5,001 recipients
    // as with one.
    let allocs = allocations() - before;
    assert_eq!(
        allocs,
        2 * 10,
        "{allocs} allocations for {} deliveries",
        10 * (N + 1)
    );
}

#[test]
fn deflate_fan_out_allocates_nothing_per_recipient() {
    const N: usize = 8_000;
    let mut reg = Registry::new();
    let t = reg.intern("t");
    // A quarter of each kind: plain, plain + deflate, v1, v1 + deflate.
    for i in 0..N {
        let n = Negotiated {
            v1: i % 4 >= 2,
            deflate: (i % 2 == 1).then(Deflate::default),
        };
        let mut c = Client::negotiated(i as u64, Box::new([]), n);
        c.subscribe(t.clone(), 0);
        reg.insert(c);
    }
    let snap = reg.rebuild();
    let json = br#"{"symbol":"EURUSD","bid":1.0842,"ask":1.0844,"ts":1732600000}"#.repeat(16);
    let mut deflater = Deflater::new();
    // Every encoding of each message made once, as the hub does at publish; odd
    // messages are small and go out uncompressed.
    let msg = |offset: u64, deflater: &mut Deflater| {
        let data = if offset.is_multiple_of(2) {
            &json[..]
        } else {
            &json[..40]
        };
        let mut p = Published::new(t.clone(), encode(Opcode::Text, data));
        p.offset = offset;
        let push = hubcast::wire::v1::push("t", offset, Opcode::Text, data);
        p.push = Some(encode(Opcode::Text, &push));
        if offset.is_multiple_of(2) {
            p.deflated = Some(deflater.frame(Opcode::Text, data).expect("compresses"));
            p.push_deflated = Some(deflater.frame(Opcode::Text, &push).expect("compresses"));
        }
        p
    };
    let mut out = Outcome::default();
    let warm: Vec<Published> = (1..=4).map(|o| msg(o, &mut deflater)).collect();
    fan_out_batch(&mut reg, &snap, &warm, usize::MAX, &mut out);
    assert_eq!(out.deliveries, 4 * N as u64);
    for (_, c) in reg.iter_mut() {
        c.discard_queue();
    }
    out.clear();
    let msgs: Vec<Published> = (5..25).map(|o| msg(o, &mut deflater)).collect();
    let before = allocations();
    let mut deliveries = 0;
    for m in msgs.chunks(1) {
        fan_out_batch(&mut reg, &snap, m, usize::MAX, &mut out);
        deliveries += out.deliveries;
        for (_, c) in reg.iter_mut() {
            c.discard_queue();
        }
        out.clear();
    }
    let allocs = allocations() - before;
    assert_eq!(deliveries, 20 * N as u64);
    // Per message at most one per encoding (a shared reference count on first share):
    // 8,000 recipients cost what one would.
    assert!(
        allocs <= 4 * 20,
        "{allocs} allocations for {deliveries} deliveries"
    );
}

#[test]
fn an_inflate_state_takes_what_the_metric_says() {
    let before = allocated_bytes();
    let inflater = Inflater::new();
    let bytes = allocated_bytes() - before;
    drop(inflater);
    let metric = Inflater::MEMORY as u64;
    assert!(
        bytes <= metric && bytes * 10 >= metric * 9,
        "an inflater allocates {bytes} bytes; Inflater::MEMORY says {metric}"
    );
}
