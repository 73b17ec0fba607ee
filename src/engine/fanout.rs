//! Fan-out: one shard hands a batch of encoded frames to every subscriber (or to those
//! in one lane: a range of slab keys, see `engine::lanes`).
//!
//! The batch is what one lane has not had yet of what the shard drained from its inbox.
//! Consecutive frames for the same topic form a run; a run is joined into one buffer (one
//! copy per lane, not per recipient) and that buffer is written to each subscriber with
//! one call. Runs go out in publish order, so a client on several topics still sees
//! each publisher's messages in order.
//!
//! Each message may come in up to four encodings, each made once at publish and shared
//! by every recipient of its kind: the plain frame, its permessage-deflate compressed
//! frame, the protocol v1 push and its compressed frame. A run is joined once per
//! encoding that has recipients; a client that negotiated permessage-deflate gets the
//! compressed frame of each message that has one, and the plain one otherwise (RFC 7692
//! lets every message choose). When no message of a run was compressed, deflate clients
//! share the plain buffer with everyone else — no second join.
//!
//! Per recipient the cost is a slot lookup and one non-blocking write of a shared slice:
//! no allocation, no lock, no task wake-up. Clients whose socket is full queue a
//! reference and are reported back for a flush task; clients over budget are reported
//! as slow consumers. The shard acts on those lists; this module never blocks.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::engine::client::{Client, Delivery};
use crate::engine::registry::{Audience, ClientRef, Registry, Snapshot};
use crate::wire::frame::{self, Opcode};
use crate::wire::v1;

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
    /// Its offset in the topic (1, 2, 3, … in publish order), for protocol v1 pushes.
    pub offset: u64,
    /// The protocol v1 push frame (`{"topic":…,"offset":…,"data":…}`), encoded once at
    /// publish when some shard had v1 subscribers of the topic; otherwise a shard that
    /// finds some encodes it itself.
    pub push: Option<Bytes>,
    /// The plain frame compressed (permessage-deflate, RSV1 set), made once at publish
    /// when compression is on, the payload is large enough, some shard had deflate
    /// clients among the topic's plain subscribers, and compressing made it smaller.
    /// Otherwise deflate clients get the plain frame.
    pub deflated: Option<Bytes>,
    /// The v1 push compressed, on the same terms for the topic's deflate v1 subscribers.
    pub push_deflated: Option<Bytes>,
}

impl Published {
    /// A message published on this node, now.
    pub fn new(topic: Arc<str>, frame: Bytes) -> Self {
        Published {
            topic,
            frame,
            born: Instant::now(),
            remote: false,
            offset: 0,
            push: None,
            deflated: None,
            push_deflated: None,
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
    /// The run's compressed frames (or plain ones where a message has none).
    deflated: Vec<Bytes>,
    /// Offsets of the run's pushes, and where each starts in the joined buffer.
    offsets: Vec<u64>,
    starts: Vec<usize>,
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
        self.deflated.clear();
        self.offsets.clear();
        self.starts.clear();
    }
}

/// The v1 push frame of `p` (encoded once at publish, or here when it was not).
fn push_frame(p: &Published) -> Bytes {
    if let Some(push) = &p.push {
        return push.clone();
    }
    let (opcode, payload) = frame::payload_of(&p.frame).unwrap_or((Opcode::Text, Bytes::new()));
    frame::encode(
        Opcode::Text,
        &v1::push(&p.topic, p.offset, opcode, &payload),
    )
}

/// The keys of a sorted key list that fall inside `lane`.
#[inline]
fn within<'a>(keys: &'a [u32], lane: &Range<u32>) -> &'a [u32] {
    if keys.is_empty() {
        return keys;
    }
    let from = keys.partition_point(|&k| k < lane.start);
    let to = from + keys[from..].partition_point(|&k| k < lane.end);
    &keys[from..to]
}

/// An audience's clients inside `lane`: those without permessage-deflate, and those with
/// it. The two lists are each sorted by key (the registry builds them in slab order).
#[inline]
fn parts<'a>(audience: Audience<'a>, lane: &Range<u32>) -> (&'a [u32], &'a [u32]) {
    (
        within(audience.uncompressed(), lane),
        within(audience.deflate(), lane),
    )
}

/// Joins `frames` into one buffer, noting where each starts in it.
fn join_noting_starts(frames: &[Bytes], starts: &mut Vec<usize>) -> Bytes {
    starts.clear();
    let mut at = 0;
    for f in frames {
        starts.push(at);
        at += f.len();
    }
    frame::join(frames)
}

/// Delivers `batch` (in order) to the subscribers named by `snapshot`.
pub fn fan_out_batch(
    registry: &mut Registry,
    snapshot: &Snapshot,
    batch: &[Published],
    budget: usize,
    out: &mut Outcome,
) {
    fan_out_lane(registry, snapshot, batch, 0..u32::MAX, budget, out);
}

/// Delivers `batch` (in order) to those subscribers named by `snapshot` whose slab key
/// is in `lane`: a shard serves a long round lane by lane (see `engine::lanes`).
pub fn fan_out_lane(
    registry: &mut Registry,
    snapshot: &Snapshot,
    batch: &[Published],
    lane: Range<u32>,
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
        let run = &batch[start..end];
        let count = run.len() as u64;
        let (plain, v1) = snapshot.audiences(topic);
        let (raw, deflate) = parts(plain, &lane);
        if !raw.is_empty() || !deflate.is_empty() {
            // Deflate clients share the plain buffer unless some message was compressed.
            let compressed = !deflate.is_empty() && run.iter().any(|p| p.deflated.is_some());
            if !raw.is_empty() || !compressed {
                out.frames.clear();
                out.frames.extend(run.iter().map(|p| p.frame.clone()));
                let joined = frame::join(&out.frames);
                fan_out(registry, raw, &joined, count, budget, out);
                if !compressed {
                    fan_out(registry, deflate, &joined, count, budget, out);
                }
            }
            if compressed {
                out.deflated.clear();
                out.deflated.extend(
                    run.iter()
                        .map(|p| p.deflated.as_ref().unwrap_or(&p.frame).clone()),
                );
                let joined = frame::join(&out.deflated);
                fan_out(registry, deflate, &joined, count, budget, out);
            }
        }
        let (raw, deflate) = parts(v1, &lane);
        if !raw.is_empty() || !deflate.is_empty() {
            out.offsets.clear();
            out.offsets.extend(run.iter().map(|p| p.offset));
            out.frames.clear();
            out.frames.extend(run.iter().map(push_frame));
            let compressed = !deflate.is_empty() && run.iter().any(|p| p.push_deflated.is_some());
            if !raw.is_empty() || !compressed {
                let joined = join_noting_starts(&out.frames, &mut out.starts);
                fan_out_v1(registry, raw, topic, &joined, budget, out);
                if !compressed {
                    fan_out_v1(registry, deflate, topic, &joined, budget, out);
                }
            }
            if compressed {
                out.deflated.clear();
                out.deflated.extend(
                    run.iter()
                        .zip(&out.frames)
                        .map(|(p, push)| p.push_deflated.as_ref().unwrap_or(push).clone()),
                );
                let joined = join_noting_starts(&out.deflated, &mut out.starts);
                fan_out_v1(registry, deflate, topic, &joined, budget, out);
            }
        }
        start = end;
    }
}

/// Delivers the joined pushes of one run to the v1 clients in `keys`; a client that
/// subscribed at a position inside the run gets only the pushes after it (a slice of
/// the same buffer).
fn fan_out_v1(
    registry: &mut Registry,
    keys: &[u32],
    topic: &str,
    joined: &Bytes,
    budget: usize,
    out: &mut Outcome,
) {
    let frames = out.offsets.len();
    for &key in keys {
        let Some(client) = registry.by_key(key as usize) else {
            continue;
        };
        let first = client.first_live(topic, &out.offsets);
        if first == frames {
            continue;
        }
        let who = ClientRef {
            key: key as usize,
            id: client.id,
        };
        if first == 0 {
            deliver_one(client, who, joined, frames as u64, budget, out);
        } else {
            let rest = joined.slice(out.starts[first]..);
            deliver_one(client, who, &rest, (frames - first) as u64, budget, out);
        }
    }
}

/// One delivery of `buf` (holding `frames` frames) to one client, and its bookkeeping.
#[inline]
fn deliver_one(
    client: &mut Client,
    who: ClientRef,
    buf: &Bytes,
    frames: u64,
    budget: usize,
    out: &mut Outcome,
) {
    match client.deliver(buf, budget) {
        Delivery::Sent => {}
        Delivery::Queued => {
            if client.needs_flusher() {
                out.to_flush.push(who);
            }
        }
        Delivery::OverBudget => {
            out.over_budget.push(who);
            return;
        }
        Delivery::Failed => {
            out.failed.push(who);
            return;
        }
        Delivery::Skipped => return,
    }
    out.deliveries += frames;
    out.bytes += buf.len() as u64;
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
        deliver_one(client, who, buf, frames, budget, out);
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
    fn deflate_clients_get_the_compressed_encoding_of_each_message_that_has_one() {
        use crate::engine::client::Negotiated;
        use crate::wire::extensions::Deflate;
        let mut reg = Registry::new();
        let t = reg.intern("t");
        let kinds = [(false, false), (false, true), (true, false), (true, true)];
        let refs: Vec<ClientRef> = kinds
            .iter()
            .enumerate()
            .map(|(i, &(v1, deflate))| {
                let n = Negotiated {
                    v1,
                    deflate: deflate.then(Deflate::default),
                };
                reg.insert(Client::negotiated(i as u64, Box::new([t.clone()]), n))
            })
            .collect();
        let snap = reg.rebuild();
        // Stand-ins for the four encodings: what matters is who gets which bytes.
        let msg = |n: u8, compressed: bool| {
            let mut p = Published::new(t.clone(), encode(Opcode::Text, &[b'p', n]));
            p.offset = u64::from(n);
            p.push = Some(encode(Opcode::Text, &[b'v', n]));
            if compressed {
                p.deflated = Some(encode(Opcode::Binary, &[b'P', n]));
                p.push_deflated = Some(encode(Opcode::Binary, &[b'V', n]));
            }
            p
        };
        let got = |reg: &mut Registry, who: ClientRef| -> Vec<(u8, u8)> {
            let data = reg.get_mut(who).expect("client").queued_data();
            data.chunks(4).map(|f| (f[2], f[3])).collect()
        };
        // One run: compressed, not compressed (too small, say), compressed.
        let run = [msg(1, true), msg(2, false), msg(3, true)];
        let mut out = Outcome::default();
        fan_out_batch(&mut reg, &snap, &run, usize::MAX, &mut out);
        assert_eq!(out.deliveries, 12);
        assert_eq!(got(&mut reg, refs[0]), [(b'p', 1), (b'p', 2), (b'p', 3)]);
        assert_eq!(got(&mut reg, refs[1]), [(b'P', 1), (b'p', 2), (b'P', 3)]);
        assert_eq!(got(&mut reg, refs[2]), [(b'v', 1), (b'v', 2), (b'v', 3)]);
        assert_eq!(got(&mut reg, refs[3]), [(b'V', 1), (b'v', 2), (b'V', 3)]);
        // A run with nothing compressed: deflate clients share the plain buffers.
        for &r in &refs {
            reg.get_mut(r).expect("client").discard_queue();
        }
        fan_out_batch(&mut reg, &snap, &[msg(4, false)], usize::MAX, &mut out);
        assert_eq!(got(&mut reg, refs[1]), [(b'p', 4)]);
        assert_eq!(got(&mut reg, refs[3]), [(b'v', 4)]);
    }

    #[test]
    fn a_lane_serves_only_its_keys_in_every_encoding() {
        use crate::engine::client::Negotiated;
        use crate::wire::extensions::Deflate;
        let mut reg = Registry::new();
        let t = reg.intern("t");
        // Keys 0..12: plain, plain+deflate, v1, v1+deflate, three times over.
        let refs: Vec<ClientRef> = (0..12u64)
            .map(|i| {
                let n = Negotiated {
                    v1: i % 4 >= 2,
                    deflate: (i % 2 == 1).then(Deflate::default),
                };
                reg.insert(Client::negotiated(i, Box::new([t.clone()]), n))
            })
            .collect();
        let snap = reg.rebuild();
        let msg = |compressed: bool| {
            let mut p = Published::new(t.clone(), encode(Opcode::Text, b"p"));
            p.offset = 1;
            if compressed {
                p.deflated = Some(encode(Opcode::Binary, b"P"));
                p.push_deflated = Some(encode(Opcode::Binary, b"V"));
            }
            p
        };
        for compressed in [false, true] {
            let mut out = Outcome::default();
            fan_out_lane(
                &mut reg,
                &snap,
                &[msg(compressed)],
                3..9,
                usize::MAX,
                &mut out,
            );
            assert_eq!(out.deliveries, 6, "compressed: {compressed}");
            for (key, &r) in refs.iter().enumerate() {
                let c = reg.get_mut(r).expect("client");
                assert_eq!(c.queued_bytes() > 0, (3..9).contains(&key), "key {key}");
                c.discard_queue();
            }
        }
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
