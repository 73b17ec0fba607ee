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
