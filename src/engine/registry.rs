//! Register and unregister: one shard's clients in a `slab`, and the immutable
//! [`Snapshot`] that fan-out reads.
//!
//! Fan-out must never lock, and a connect storm must not cost O(clients) per connect.
//! So connects and disconnects only mark the registry dirty; the shard rebuilds the
//! snapshot at most once per batch of messages (or once per tick when idle) and publishes
//! it through an `ArcSwap`, where any thread can read it lock-free (the hub counts
//! recipients from it).
//!
//! Slab keys are reused, so a removed client's slot is only freed at the next rebuild:
//! until then an older snapshot may still name the slot, and must find it dead, not
//! occupied by a newcomer with other topics.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use slab::Slab;

use crate::engine::client::Client;

/// A stable reference to a client: its slot plus its never-reused id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRef {
    /// Slab key (reused after the client is gone).
    pub key: usize,
    /// Server-wide id (never reused).
    pub id: u64,
}

/// The subscribers of one topic: plain clients' slab keys, then protocol v1 clients'
/// (they get another encoding of each message); within each, the clients without
/// permessage-deflate first, then those with it (they get the compressed frame).
#[derive(Debug)]
struct Subscribers {
    keys: Box<[u32]>,
    /// Where the plain clients with permessage-deflate start in `keys`.
    deflate_from: usize,
    /// Where the v1 clients start in `keys`.
    v1_from: usize,
    /// Where the v1 clients with permessage-deflate start in `keys`.
    v1_deflate_from: usize,
}

/// The subscribers of one topic who get one encoding of its messages (the plain frame,
/// or the v1 push): first those without permessage-deflate, then those with it, who get
/// the compressed frame when the message has one. One slice, so that when a message
/// went uncompressed everyone is served from the same buffer in one go.
#[derive(Debug, Clone, Copy, Default)]
pub struct Audience<'a> {
    keys: &'a [u32],
    deflate_from: usize,
}

impl<'a> Audience<'a> {
    /// Every client of this encoding.
    #[inline]
    pub fn all(&self) -> &'a [u32] {
        self.keys
    }

    /// Those without permessage-deflate.
    #[inline]
    pub fn uncompressed(&self) -> &'a [u32] {
        &self.keys[..self.deflate_from]
    }

    /// Those with permessage-deflate.
    #[inline]
    pub fn deflate(&self) -> &'a [u32] {
        &self.keys[self.deflate_from..]
    }

    /// Whether nobody gets this encoding.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Who listens to what on one shard, at one moment. Immutable once built.
#[derive(Debug, Default)]
pub struct Snapshot {
    topics: HashMap<Arc<str>, Subscribers>,
    connections: usize,
}

impl Snapshot {
    /// Slab keys of every client subscribed to `topic` (plain, then v1).
    #[inline]
    pub fn subscribers(&self, topic: &str) -> &[u32] {
        self.topics.get(topic).map_or(&[], |s| &s.keys)
    }

    /// Slab keys of the plain clients subscribed to `topic`: they get the plain frame.
    #[inline]
    pub fn plain(&self, topic: &str) -> &[u32] {
        self.topics.get(topic).map_or(&[], |s| &s.keys[..s.v1_from])
    }

    /// Slab keys of the protocol v1 clients subscribed to `topic`: they get the push.
    #[inline]
    pub fn v1(&self, topic: &str) -> &[u32] {
        self.topics.get(topic).map_or(&[], |s| &s.keys[s.v1_from..])
    }

    /// The subscribers of `topic` by encoding, with one lookup: those who get the plain
    /// frame and those who get the v1 push.
    #[inline]
    pub fn audiences(&self, topic: &str) -> (Audience<'_>, Audience<'_>) {
        match self.topics.get(topic) {
            None => Default::default(),
            Some(s) => {
                let (plain, v1) = s.keys.split_at(s.v1_from);
                (
                    Audience {
                        keys: plain,
                        deflate_from: s.deflate_from,
                    },
                    Audience {
                        keys: v1,
                        deflate_from: s.v1_deflate_from - s.v1_from,
                    },
                )
            }
        }
    }

    /// Clients registered when the snapshot was built.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// The topics with at least one subscriber.
    pub fn topics(&self) -> impl Iterator<Item = &Arc<str>> {
        self.topics.keys()
    }

    /// Whether `topic` has at least one subscriber.
    pub fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// Number of topics with at least one subscriber.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }
}

enum Slot {
    Live(Client),
    /// Gone; the slot is freed at the next rebuild.
    Dead,
}

/// One shard's clients.
#[derive(Default)]
pub struct Registry {
    slots: Slab<Slot>,
    interned: HashSet<Arc<str>>,
    dead: Vec<usize>,
    live: usize,
    /// Registered clients that negotiated permessage-deflate: while there are none, a
    /// rebuild never looks at a client's `deflate`.
    deflate: usize,
    dirty: bool,
    /// The lowest key whose client joined or changed its topics since the last rebuild:
    /// a shard serving a round lane by lane rebuilds before a lane only when a change
    /// reached that far (removals need no rebuild: a dead slot is skipped).
    changed_from: Option<usize>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("live", &self.live)
            .field("dirty", &self.dirty)
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the shard's shared copy of a topic name, so that every client and every
    /// snapshot of this shard points at one allocation per topic.
    pub fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some(t) = self.interned.get(topic) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(topic);
        self.interned.insert(t.clone());
        t
    }

    /// Registers a client; it joins the next snapshot.
    pub fn insert(&mut self, client: Client) -> ClientRef {
        let id = client.id;
        self.deflate += usize::from(client.deflate().is_some());
        let key = self.slots.insert(Slot::Live(client));
        self.live += 1;
        self.note_change(key);
        ClientRef { key, id }
    }

    /// The client behind `who`, if it is still registered.
    #[inline]
    pub fn get_mut(&mut self, who: ClientRef) -> Option<&mut Client> {
        match self.slots.get_mut(who.key) {
            Some(Slot::Live(c)) if c.id == who.id => Some(c),
            _ => None,
        }
    }

    /// The live client in slot `key` (used by fan-out with keys from a snapshot).
    #[inline]
    pub fn by_key(&mut self, key: usize) -> Option<&mut Client> {
        match self.slots.get_mut(key) {
            Some(Slot::Live(c)) => Some(c),
            _ => None,
        }
    }

    /// Unregisters a client and returns it (dropping it closes its socket). The slot
    /// stays reserved until the next rebuild.
    pub fn remove(&mut self, who: ClientRef) -> Option<Client> {
        let slot = self.slots.get_mut(who.key)?;
        match slot {
            Slot::Live(c) if c.id == who.id => {}
            _ => return None,
        }
        let Slot::Live(client) = std::mem::replace(slot, Slot::Dead) else {
            return None;
        };
        self.dead.push(who.key);
        self.live -= 1;
        self.deflate -= usize::from(client.deflate().is_some());
        self.dirty = true;
        Some(client)
    }

    /// Clients registered now.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no client is registered.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Notes that the topics of the client in slot `key` changed: the next rebuild
    /// picks it up.
    pub fn note_change(&mut self, key: usize) {
        self.dirty = true;
        self.changed_from = Some(self.changed_from.map_or(key, |k| k.min(key)));
    }

    /// Whether a client with a key below `end` joined or changed its topics since the
    /// last rebuild (so that serving keys below `end` needs a fresh snapshot).
    pub fn changed_below(&self, end: usize) -> bool {
        self.changed_from.is_some_and(|k| k < end)
    }

    /// Whether registrations changed since the last rebuild.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Every live client, with its reference.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ClientRef, &mut Client)> {
        self.slots.iter_mut().filter_map(|(key, s)| match s {
            Slot::Live(c) => Some((ClientRef { key, id: c.id }, c)),
            Slot::Dead => None,
        })
    }

    /// Frees dead slots and builds a new snapshot: O(clients), called at most once per
    /// batch or tick, never once per connect.
    pub fn rebuild(&mut self) -> Snapshot {
        for key in self.dead.drain(..) {
            self.slots.remove(key);
        }
        let groups = self.group_by_topic();
        // Topics nobody holds any more are forgotten.
        self.interned.retain(|t| Arc::strong_count(t) > 1);
        self.dirty = false;
        self.changed_from = None;
        Snapshot {
            topics: self.split_kinds(groups),
            connections: self.live,
        }
    }

    /// Every live client's key under each of its topics: plain clients, then v1 clients.
    /// This loop touches every client and is the rebuild's whole cost, so it is kept
    /// small: reading `deflate` here too, or sharing the function with the code that
    /// splits deflate clients out, or inlining the hash lookup into it, each had the
    /// compiler keep the loop's iterators on the stack, and rebuilding 100,000
    /// single-topic clients took 20–35 % longer (measured). `split_kinds` moves the
    /// deflate clients afterwards.
    #[inline(never)]
    fn group_by_topic(&self) -> Vec<(Arc<str>, Vec<u32>, Vec<u32>)> {
        // Topic names are interned, so one topic is one pointer: group by address, and
        // skip even that lookup while consecutive clients share a topic (the common case).
        // Per topic: plain keys, v1 keys.
        let mut groups: Vec<(Arc<str>, Vec<u32>, Vec<u32>)> = Vec::new();
        let mut index: HashMap<*const u8, usize, ByAddress> = HashMap::default();
        let mut last: Option<(*const u8, usize)> = None;
        for (key, slot) in self.slots.iter() {
            let Slot::Live(c) = slot else { continue };
            for t in c.topics.iter() {
                let ptr = t.as_ptr();
                let g = match last {
                    Some((p, g)) if p == ptr => g,
                    _ => group_of(&mut groups, &mut index, t),
                };
                last = Some((ptr, g));
                if c.is_v1() {
                    groups[g].2.push(key as u32);
                } else {
                    groups[g].1.push(key as u32);
                }
            }
        }
        groups
    }

    /// Each topic's snapshot entry from the plain and v1 keys the rebuild grouped: the
    /// deflate clients of each kind moved behind the others, only when there are any.
    /// Kept out of `rebuild` so that its loop over every client compiles as lean as it
    /// did before there was anything to split.
    #[inline(never)]
    fn split_kinds(
        &self,
        groups: Vec<(Arc<str>, Vec<u32>, Vec<u32>)>,
    ) -> HashMap<Arc<str>, Subscribers> {
        let any_deflate = self.deflate > 0;
        let deflates = |k: &&u32| matches!(self.slots.get(**k as usize), Some(Slot::Live(c)) if c.deflate().is_some());
        groups
            .into_iter()
            .map(|(topic, mut keys, v1)| {
                let (deflate_from, v1_from, v1_deflate_from);
                if any_deflate {
                    let (plain_deflate, plain): (Vec<u32>, Vec<u32>) =
                        keys.iter().partition(deflates);
                    let (v1_deflate, v1): (Vec<u32>, Vec<u32>) = v1.iter().partition(deflates);
                    keys = plain;
                    deflate_from = keys.len();
                    keys.extend_from_slice(&plain_deflate);
                    v1_from = keys.len();
                    keys.extend_from_slice(&v1);
                    v1_deflate_from = keys.len();
                    keys.extend_from_slice(&v1_deflate);
                } else {
                    (deflate_from, v1_from) = (keys.len(), keys.len());
                    keys.extend_from_slice(&v1);
                    v1_deflate_from = keys.len();
                }
                let s = Subscribers {
                    keys: keys.into_boxed_slice(),
                    deflate_from,
                    v1_from,
                    v1_deflate_from,
                };
                (topic, s)
            })
            .collect()
    }
}

/// Hashes an interned topic's address for the rebuild's group index. Interning makes the
/// address unique per topic, and the process chose it, so SipHash's resistance to
/// chosen keys buys nothing here; one multiply and a fold cost a fraction of it, and the
/// lookup runs once per client whose topic differs from the previous client's.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-address keys (none here); kept correct all the same.
        for &b in bytes {
            self.write_usize(self.0 as usize ^ usize::from(b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        let x = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // Fold the high bits down: addresses are aligned, so the product's low bits,
        // which pick the bucket, would otherwise barely vary.
        self.0 = x ^ (x >> 32);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type ByAddress = BuildHasherDefault<AddressHasher>;

/// The index of topic `t`'s group, added on its first client. Out of line and marked
/// cold, so that the rebuild loop, which comes here only when a client's topic differs
/// from the previous client's, compiles tight for the common run of clients on one topic.
#[cold]
#[inline(never)]
fn group_of(
    groups: &mut Vec<(Arc<str>, Vec<u32>, Vec<u32>)>,
    index: &mut HashMap<*const u8, usize, ByAddress>,
    t: &Arc<str>,
) -> usize {
    *index.entry(t.as_ptr()).or_insert_with(|| {
        groups.push((t.clone(), Vec::new(), Vec::new()));
        groups.len() - 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(reg: &mut Registry, id: u64, topics: &[&str]) -> Client {
        let t: Box<[Arc<str>]> = topics.iter().map(|t| reg.intern(t)).collect();
        Client::new(id, t)
    }

    #[test]
    fn snapshot_groups_by_topic_and_skips_removed() {
        let mut reg = Registry::new();
        let a = client(&mut reg, 1, &["x"]);
        let a = reg.insert(a);
        let b = client(&mut reg, 2, &["x", "y"]);
        let b = reg.insert(b);
        let snap = reg.rebuild();
        assert_eq!(snap.subscribers("x").len(), 2);
        assert_eq!(snap.subscribers("y"), &[b.key as u32]);
        assert!(snap.subscribers("z").is_empty());
        assert!(reg.remove(a).is_some());
        assert!(reg.remove(a).is_none(), "removing twice is harmless");
        assert!(reg.get_mut(a).is_none());
        let snap = reg.rebuild();
        assert_eq!(snap.subscribers("x"), &[b.key as u32]);
        assert_eq!(snap.connections(), 1);
    }

    #[test]
    fn a_stale_reference_never_reaches_a_newcomer() {
        let mut reg = Registry::new();
        let c = client(&mut reg, 1, &["x"]);
        let old = reg.insert(c);
        reg.remove(old);
        // Before the rebuild the slot stays dead: a newcomer gets another key.
        let c = client(&mut reg, 2, &["x"]);
        let new = reg.insert(c);
        assert_ne!(old.key, new.key);
        reg.rebuild();
        let c = client(&mut reg, 3, &["x"]);
        let newer = reg.insert(c);
        assert!(
            reg.get_mut(old).is_none(),
            "id check guards reused slots (key {})",
            newer.key
        );
    }

    #[test]
    fn audiences_split_by_protocol_then_deflate() {
        use crate::engine::client::Negotiated;
        use crate::wire::extensions::Deflate;
        let mut reg = Registry::new();
        let t = reg.intern("t");
        let mut keys = Vec::new();
        // Interleaved kinds: plain, v1+deflate, plain+deflate, v1, and again.
        for id in 0..8u64 {
            let n = Negotiated {
                v1: id % 4 == 1 || id % 4 == 3,
                deflate: (id % 4 == 1 || id % 4 == 2).then(Deflate::default),
            };
            keys.push(
                reg.insert(Client::negotiated(id, Box::new([t.clone()]), n))
                    .key as u32,
            );
        }
        let snap = reg.rebuild();
        let (plain, v1) = snap.audiences("t");
        assert_eq!(plain.uncompressed(), &[keys[0], keys[4]]);
        assert_eq!(plain.deflate(), &[keys[2], keys[6]]);
        assert_eq!(plain.all(), snap.plain("t"));
        assert_eq!(v1.uncompressed(), &[keys[3], keys[7]]);
        assert_eq!(v1.deflate(), &[keys[1], keys[5]]);
        assert_eq!(v1.all(), snap.v1("t"));
        assert_eq!(snap.subscribers("t").len(), 8);
        let (none, none_v1) = snap.audiences("other");
        assert!(none.is_empty() && none_v1.is_empty() && none.deflate().is_empty());
        // Once the deflate clients are gone, the rebuild no longer splits anything out.
        for (id, &key) in keys.iter().enumerate() {
            if id % 4 == 1 || id % 4 == 2 {
                let who = ClientRef {
                    key: key as usize,
                    id: id as u64,
                };
                assert!(reg.remove(who).is_some());
            }
        }
        assert_eq!(reg.deflate, 0);
        let snap = reg.rebuild();
        let (plain, v1) = snap.audiences("t");
        assert_eq!(plain.all(), &[keys[0], keys[4]]);
        assert!(plain.deflate().is_empty() && v1.deflate().is_empty());
        assert_eq!(v1.all(), &[keys[3], keys[7]]);
    }

    #[test]
    fn unused_topics_are_forgotten() {
        let mut reg = Registry::new();
        let c = client(&mut reg, 1, &["gone"]);
        let r = reg.insert(c);
        reg.remove(r);
        reg.rebuild();
        assert!(reg.interned.is_empty());
    }
}
