//! The fan-out path allocates nothing per recipient: counted by a wrapping global
//! allocator over real fan-outs to queued clients (the heaviest per-recipient path:
//! each recipient keeps a reference in its queue).

#[path = "common/counting.rs"]
mod counting;

use counting::{Counting, allocations};
use hubcast::engine::client::Client;
use hubcast::engine::fanout::{Outcome, Published, fan_out_batch};
use hubcast::engine::registry::Registry;
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
