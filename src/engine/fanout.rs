//! Fan-out: one shard hands a batch of encoded frames to every subscriber.
//!
//! The batch is what the shard drained from its inbox in one go. Consecutive frames for
//! the same topic form a run; a run is joined into one buffer (one copy per shard, not
//! per recipient) and that buffer is written to each subscriber with one call. Runs go
//! out in publish order, so a client on several topics still sees each publisher's
//! messages in order.
//!
//! Per recipient the cost is a slot lookup and one non-blocking write of a shared slice:
//! no allocation, no lock, no task wake-up. Clients whose socket is full queue a
//! reference and are reported back for a flush task; clients over budget are reported
//! as slow consumers. The shard acts on those lists; this module never blocks.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::engine::client::Delivery;
use crate::engine::registry::{ClientRef, Registry, Snapshot};
use crate::wire::frame;

/// One encoded message on its way to one topic.
#[derive(Debug, Clone)]
pub struct Published {
    /// Destination topic.
    pub topic: Arc<str>,
    /// The complete server frame, shared by every recipient.
    pub frame: Bytes,
    /// When it was published (on its origin node, for messages from other nodes): the
    /// start of the publish-to-socket latency.
    pub born: Instant,
    /// Whether it came from another node (the latency histograms keep the two apart).
    pub remote: bool,
}

impl Published {
    /// A message published on this node, now.
    pub fn new(topic: Arc<str>, frame: Bytes) -> Self {
        Published {
            topic,
            frame,
            born: Instant::now(),
            remote: false,
        }
    }
}

/// What a fan-out did, and what the shard must follow up. Reused between batches so that
/// steady-state fan-out allocates nothing.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Frames delivered (counting each frame of a joined run once per recipient).
    pub deliveries: u64,
    /// Bytes handed to sockets or queues.
    pub bytes: u64,
    /// Clients that queued data and need a flush task.
    pub to_flush: Vec<ClientRef>,
    /// Clients over their budget (slow consumers).
    pub over_budget: Vec<ClientRef>,
    /// Clients whose socket failed.
    pub failed: Vec<ClientRef>,
    frames: Vec<Bytes>,
}

impl Outcome {
    /// Clears the counters and lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.deliveries = 0;
        self.bytes = 0;
        self.to_flush.clear();
        self.over_budget.clear();
        self.failed.clear();
        self.frames.clear();
    }
}

/// Delivers `batch` (in order) to the subscribers named by `snapshot`.
pub fn fan_out_batch(
    registry: &mut Registry,
    snapshot: &Snapshot,
    batch: &[Published],
    budget: usize,
    out: &mut Outcome,
) {
    let mut start = 0;
    while start < batch.len() {
        let topic = &batch[start].topic;
        let mut end = start + 1;
        while end < batch.len() && batch[end].topic == *topic {
            end += 1;
        }
        out.frames.clear();
        out.frames
            .extend(batch[start..end].iter().map(|p| p.frame.clone()));
        let joined = frame::join(&out.frames);
        let count = (end - start) as u64;
        fan_out(
            registry,
            snapshot.subscribers(topic),
            &joined,
            count,
            budget,
            out,
        );
        start = end;
    }
}

/// Delivers one shared buffer (holding `frames` frames) to the clients in `keys`.
#[inline]
pub fn fan_out(
    registry: &mut Registry,
    keys: &[u32],
    buf: &Bytes,
    frames: u64,
    budget: usize,
    out: &mut Outcome,
) {
    for &key in keys {
        let Some(client) = registry.by_key(key as usize) else {
            continue; // left since the snapshot was built
        };
        let who = ClientRef {
            key: key as usize,
            id: client.id,
        };
        match client.deliver(buf, budget) {
            Delivery::Sent => {}
            Delivery::Queued => {
                if client.needs_flusher() {
                    out.to_flush.push(who);
                }
            }
            Delivery::OverBudget => {
                out.over_budget.push(who);
                continue;
            }
            Delivery::Failed => {
                out.failed.push(who);
                continue;
            }
            Delivery::Skipped => continue,
        }
        out.deliveries += frames;
        out.bytes += buf.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::client::Client;
    use crate::wire::frame::{Opcode, encode};

    #[test]
    fn runs_are_joined_and_topics_isolated() {
        let mut reg = Registry::new();
        let a = reg.intern("a");
        let b = reg.intern("b");
        let ra = reg.insert(Client::new(1, Box::new([a.clone()])));
        let rb = reg.insert(Client::new(2, Box::new([b.clone()])));
        let snap = reg.rebuild();
        let f1 = encode(Opcode::Text, b"1");
        let f2 = encode(Opcode::Text, b"2");
        let batch = [
            Published::new(a.clone(), f1.clone()),
            Published::new(a.clone(), f2.clone()),
            Published::new(b.clone(), f1.clone()),
        ];
        let mut out = Outcome::default();
        fan_out_batch(&mut reg, &snap, &batch, usize::MAX, &mut out);
        assert_eq!(out.deliveries, 3);
        assert_eq!(
            reg.get_mut(ra).expect("a").queued_bytes(),
            f1.len() + f2.len()
        );
        assert_eq!(reg.get_mut(rb).expect("b").queued_bytes(), f1.len());
    }

    #[test]
    fn over_budget_clients_are_reported_not_counted() {
        let mut reg = Registry::new();
        let t = reg.intern("t");
        let r = reg.insert(Client::new(1, Box::new([t.clone()])));
        let snap = reg.rebuild();
        let f = encode(Opcode::Binary, &[0u8; 600]);
        let mut out = Outcome::default();
        fan_out(&mut reg, snap.subscribers("t"), &f, 1, 1000, &mut out);
        assert!(out.over_budget.is_empty());
        fan_out(&mut reg, snap.subscribers("t"), &f, 1, 1000, &mut out);
        assert_eq!(out.over_budget, vec![r]);
        assert_eq!(out.deliveries, 1);
    }
}
