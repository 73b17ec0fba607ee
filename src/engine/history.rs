//! Per-topic sequencing and bounded history: the offsets and epochs of protocol v1, and
//! the recent messages a reconnecting client can recover.
//!
//! Every topic has a position `{offset, epoch}`. Offsets count a topic's messages 1, 2,
//! 3, … in publish order; the epoch is a short random string that names one unbroken
//! run of those offsets. It changes whenever the topic's history is lost (the process
//! restarts, or the topic's state is evicted at the cap), so a client that presents
//! `{offset, epoch}` from before the loss is told it cannot recover instead of being
//! handed a replay of some other run's offsets.
//!
//! [`History`] owns that state and nothing else: no I/O, no async, no clock of its own
//! (callers pass `now`), and no knowledge of who is subscribed. It is called from every
//! shard thread and any publisher thread at once, so it is thread-safe.
//!
//! # Ordering
//!
//! Offsets must not only be assigned in order, they must *reach the shards* in order: if
//! publisher A took offset 7 and publisher B offset 8, B must not hand its message to
//! the shards first, or a shard would deliver 8 before 7. So [`History::publish`] runs
//! the caller's hand-off closure while it still holds the topic's lock: assigning the
//! offset and enqueueing the message are one step.
//!
//! # Locks
//!
//! Topics live in up to 64 stripes, each a `Mutex<HashMap>` chosen by a hash of the
//! topic name, so unrelated topics rarely contend and a publish holds one lock for a
//! hash-map lookup, a `VecDeque` push and the caller's closure. No operation ever holds
//! two stripe locks. A poisoned lock (a closure panicked) is taken over, not
//! propagated: every mutation is finished before the closure runs, so the state
//! behind it is consistent.
//!
//! # The cap on topics
//!
//! Tracked topics are capped by [`HistoryConfig::max_topics`], split evenly across the
//! stripes (each stripe holds at least 64 topics, so a small cap means fewer stripes).
//! When a new topic arrives at a full stripe, that stripe evicts one of its own topics,
//! chosen by a CLOCK scan (an approximate LRU): topics sit in a ring in creation order;
//! every use after creation (publish, position, recover) marks a topic as recently
//! used; the scan passes over marked topics (clearing the mark) and evicts the first
//! unmarked one. A topic used only once is therefore the first to go. Hashes spread
//! topics evenly, so the stripes fill together and the total never exceeds the cap;
//! the price of per-stripe quotas is that a stripe may start evicting a little before
//! the whole reaches the cap.
//!
//! An evicted topic loses its history and epoch. Its next use starts over with a new
//! epoch and offset 1: clients holding a position in it get `Unrecoverable`, and live
//! subscribers of it see offsets restart. That is the cost of the cap, paid only when
//! more topics are in use than the operator allowed.
//!
//! # Expiry and sweeping
//!
//! Entries older than [`HistoryConfig::ttl`] are dropped lazily when their topic is
//! published to or recovered, and [`History::sweep`] drops them everywhere. The sweep
//! never drops a topic's *state* (offset and epoch), even an empty, idle one: this
//! module cannot know whether a quiet topic still has subscribers, and dropping its
//! state would restart its offsets under them and fail every recovery, even those that
//! missed nothing (`since == top` recovers as long as the epoch survives). A state
//! without entries costs about a hundred bytes plus its name, and the number of states
//! is bounded by the cap, so only the cap evicts states.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::wire::frame::Opcode;

/// Most stripes a [`History`] uses.
const MAX_STRIPES: usize = 64;

/// Fewest topics a stripe is sized for: per-stripe quotas smaller than this would let
/// an unlucky hash spread evict long before the cap.
const MIN_TOPICS_PER_STRIPE: usize = 64;

/// Characters in an epoch.
const EPOCH_LEN: usize = 8;

/// How much history to keep, and for how many topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Messages kept per topic. 0 keeps no history: offsets and epochs are still
    /// assigned, and only a client already at the top can recover.
    pub size: usize,
    /// Entries older than this are dropped. `None` keeps them until `size` pushes them
    /// out.
    pub ttl: Option<Duration>,
    /// Cap on tracked topics; beyond it, the least recently used topics are evicted
    /// (see the module docs). 0 is treated as 1.
    pub max_topics: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            size: 0,
            ttl: None,
            max_topics: 100_000,
        }
    }
}

/// A topic's current position: the last offset assigned, in which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The last offset assigned (0 if nothing was published in this epoch).
    pub offset: u64,
    /// The epoch the offsets belong to.
    pub epoch: String,
}

/// One message kept in a topic's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The offset it was published at.
    pub offset: u64,
    /// Text or binary.
    pub opcode: Opcode,
    /// The payload, shared with the publisher (no copy).
    pub payload: Bytes,
}

/// The answer to a recovery: the topic's position, and the replay if one was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The last offset assigned, read under the same lock as the replay: the replay
    /// ends exactly here, and live messages continue at `offset + 1`.
    pub offset: u64,
    /// The topic's epoch.
    pub epoch: String,
    /// What the client missed.
    pub replay: Replay,
}

/// Whether, and what, a client can recover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The client gave no position.
    NotAsked,
    /// Every entry after the client's offset up to the top, in order (empty if the
    /// client was already at the top).
    Complete(Vec<Entry>),
    /// The client's position cannot be continued: another epoch, an offset beyond the
    /// top, entries no longer held (size, ttl, eviction), or more than `max` missed.
    /// Nothing is replayed: never a partial replay.
    Unrecoverable,
}

/// Per-topic offsets, epochs and recent messages, shared by every thread.
///
/// ```
/// use std::time::Instant;
///
/// use bytes::Bytes;
/// use hubcast::engine::history::{History, HistoryConfig, Replay};
/// use hubcast::wire::frame::Opcode;
///
/// let history = History::new(HistoryConfig { size: 10, ..HistoryConfig::default() });
/// let now = Instant::now();
/// // A subscriber learns the position of a topic nobody has published to yet...
/// let seen = history.position("news");
/// assert_eq!(seen.offset, 0);
/// // ...messages are published (the closure hands each one on, in offset order)...
/// for text in ["a", "b"] {
///     let payload = Bytes::from(text);
///     history.publish("news", Opcode::Text, &payload, now, |offset, _epoch| {
///         // Hand (offset, payload) to the shards here: this runs in offset order.
///         assert!(offset > 0);
///     });
/// }
/// // ...and on reconnect it recovers exactly what it missed.
/// let recovery = history.recover("news", Some((seen.offset, &seen.epoch)), 100, now);
/// assert_eq!(recovery.offset, 2);
/// match recovery.replay {
///     Replay::Complete(missed) => assert_eq!(missed.len(), 2),
///     other => panic!("expected a replay, got {other:?}"),
/// }
/// ```
pub struct History {
    config: HistoryConfig,
    hasher: RandomState,
    stripes: Box<[Mutex<Stripe>]>,
    /// Set when offsets come from outside (a cluster's shared log; see
    /// [`History::sequence_externally`]).
    external: OnceLock<External>,
    topics: AtomicUsize,
    entries: AtomicUsize,
    bytes: AtomicUsize,
}

/// Some of the topics, with their share of the cap.
struct Stripe {
    topics: HashMap<Arc<str>, TopicState>,
    /// The CLOCK ring: every key of `topics` exactly once, oldest first.
    clock: VecDeque<Arc<str>>,
    /// Most topics this stripe may hold.
    quota: usize,
}

struct TopicState {
    epoch: Arc<str>,
    /// The last offset assigned.
    last: u64,
    /// Every message of the topic with an offset in `(floor, last]` is in `entries`:
    /// `floor` is the offset of the newest message no longer held (or where this
    /// node's knowledge of the topic starts).
    floor: u64,
    /// The messages after `floor`, oldest first (offsets increasing; contiguous when
    /// this history assigns them, not necessarily when they come from outside).
    entries: VecDeque<Stored>,
    /// Used since the CLOCK scan last passed it.
    recent: bool,
}

/// The shared log's side of a history whose offsets come from outside.
struct External {
    /// Every topic's epoch: the log's.
    epoch: RwLock<Arc<str>>,
    /// Every message of the log up to here has been recorded (or skipped).
    watermark: AtomicU64,
    /// Where this node started reading the log: it knows every message after it.
    start: AtomicU64,
    /// The watermark when a topic was last evicted at the cap: what a topic without
    /// state had before this point may have been held and forgotten.
    evicted: AtomicU64,
}

struct Stored {
    entry: Entry,
    /// When it was published; never earlier than the entry before it, so expiry only
    /// ever trims the front.
    at: Instant,
}

impl History {
    /// An empty history: no topics yet.
    pub fn new(config: HistoryConfig) -> Self {
        let max_topics = config.max_topics.max(1);
        let stripes = (max_topics / MIN_TOPICS_PER_STRIPE).clamp(1, MAX_STRIPES);
        // Split the cap exactly: the first `max_topics % stripes` stripes take one more.
        let stripes = (0..stripes)
            .map(|i| {
                let quota = max_topics / stripes + usize::from(i < max_topics % stripes);
                Mutex::new(Stripe {
                    topics: HashMap::new(),
                    clock: VecDeque::new(),
                    quota,
                })
            })
            .collect();
        History {
            config,
            hasher: RandomState::new(),
            stripes,
            external: OnceLock::new(),
            topics: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// Assigns `topic`'s next offset to a message, keeps the message if history is on,
    /// and calls `then(offset, epoch)` — still under the topic's lock, so whatever
    /// `then` does (hand the message to the shards) happens in offset order across all
    /// publishers. Returns what `then` returns.
    ///
    /// `then` must be quick and must not call back into this `History` for a topic of
    /// the same stripe (that would deadlock); a panic in it leaves the history intact.
    pub fn publish<R>(
        &self,
        topic: &str,
        opcode: Opcode,
        payload: &Bytes,
        now: Instant,
        then: impl FnOnce(u64, &Arc<str>) -> R,
    ) -> R {
        self.with_topic(topic, |state| {
            state.last += 1;
            let offset = state.last;
            self.keep(state, offset, opcode, payload, now);
            then(offset, &state.epoch)
        })
    }

    /// Switches this history to offsets assigned outside it — a cluster's shared log,
    /// where every node must give a message the same offset — or moves it to a new run
    /// of that log. Every topic takes `epoch` (the log's), what was held is dropped, and
    /// the log is taken as read up to `start`: a topic's knowledge begins there.
    ///
    /// From then on messages come in through [`History::publish_at`] with the log's
    /// offsets (increasing per topic, not contiguous), and a client may present any
    /// position up to the [watermark](History::watermark), not only a topic's last
    /// offset. [`History::publish`] must no longer be called.
    pub fn follow_log(&self, epoch: &str, start: u64) {
        let epoch: Arc<str> = Arc::from(epoch);
        let external = self.external.get_or_init(|| External {
            epoch: RwLock::new(epoch.clone()),
            watermark: AtomicU64::new(start),
            start: AtomicU64::new(start),
            evicted: AtomicU64::new(0),
        });
        // Hold every stripe while switching, so that no topic is created with the old
        // epoch or watermark after its stripe was cleared.
        let mut stripes: Vec<MutexGuard<'_, Stripe>> = self.stripes.iter().map(lock).collect();
        *external
            .epoch
            .write()
            .unwrap_or_else(PoisonError::into_inner) = epoch;
        external.watermark.store(start, Ordering::Release);
        external.start.store(start, Ordering::Release);
        external.evicted.store(0, Ordering::Release);
        for stripe in stripes.iter_mut() {
            for (_, state) in stripe.topics.drain() {
                let bytes: usize = state.entries.iter().map(|s| s.entry.payload.len()).sum();
                self.entries
                    .fetch_sub(state.entries.len(), Ordering::Relaxed);
                self.bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.topics.fetch_sub(1, Ordering::Relaxed);
            }
            stripe.clock.clear();
        }
    }

    /// Whether offsets come from outside (see [`History::follow_log`]).
    pub fn is_external(&self) -> bool {
        self.external.get().is_some()
    }

    /// With external offsets: every message of the log up to this offset has been
    /// through [`History::publish_at`] (or [`History::advance`]). 0 otherwise.
    pub fn watermark(&self) -> u64 {
        self.external
            .get()
            .map_or(0, |e| e.watermark.load(Ordering::Acquire))
    }

    /// Records the message at `offset` of the shared log (see
    /// [`History::follow_log`]) in `topic` and calls `then(epoch)` under the topic's
    /// lock, like [`History::publish`] — then moves the watermark to `offset`.
    /// Returns `None`, calling nothing, for an offset the topic already has (a log
    /// replayed twice) or when offsets are not external.
    ///
    /// The log's messages must come in log order, from one caller at a time.
    pub fn publish_at<R>(
        &self,
        topic: &str,
        offset: u64,
        opcode: Opcode,
        payload: &Bytes,
        now: Instant,
        then: impl FnOnce(&Arc<str>) -> R,
    ) -> Option<R> {
        let external = self.external.get()?;
        let result = self.with_topic(topic, |state| {
            if offset <= state.last {
                return None;
            }
            state.last = offset;
            self.keep(state, offset, opcode, payload, now);
            Some(then(&state.epoch))
        });
        external.watermark.fetch_max(offset, Ordering::AcqRel);
        result
    }

    /// Ends a catch-up read of the log's retained messages (see
    /// [`History::follow_log`]): a topic that holds `size` of them vouches only from
    /// its oldest on. The log dropped such a topic's older messages by the same
    /// per-topic limit, and which offsets those had is not known here; a topic that
    /// holds fewer lost none after the log's start.
    pub fn caught_up(&self) {
        let size = self.config.size;
        if size == 0 {
            return;
        }
        for stripe in self.stripes.iter() {
            let mut stripe = lock(stripe);
            for state in stripe.topics.values_mut() {
                if state.entries.len() >= size
                    && let Some(oldest) = state.entries.front()
                {
                    state.floor = state.floor.max(oldest.entry.offset - 1);
                }
            }
        }
    }

    /// Moves the watermark past a message of the log that is not recorded (it could not
    /// be read), so that positions beyond it are still accepted.
    pub fn advance(&self, offset: u64) {
        if let Some(external) = self.external.get() {
            external.watermark.fetch_max(offset, Ordering::AcqRel);
        }
    }

    /// `topic`'s position. A topic never seen before is created (counting against the
    /// cap), so a client subscribing to an empty topic gets an epoch that the first
    /// publish keeps, and can later recover from `{0, epoch}`.
    pub fn position(&self, topic: &str) -> Position {
        self.with_topic(topic, |state| Position {
            offset: state.last,
            epoch: state.epoch.to_string(),
        })
    }

    /// `topic`'s position if it is known, without creating it (for read-only callers
    /// such as `GET /topics/{topic}`, which must not use up the topic cap).
    pub fn peek(&self, topic: &str) -> Option<Position> {
        let index = self.hasher.hash_one(topic) % self.stripes.len() as u64;
        let guard = lock(&self.stripes[index as usize]);
        guard.topics.get(topic).map(|state| Position {
            offset: state.last,
            epoch: state.epoch.to_string(),
        })
    }

    /// `topic`'s position and, if the client gave its last position `since = (offset,
    /// epoch)`, everything it missed: all entries after `offset` up to the top, or
    /// [`Replay::Unrecoverable`] if that cannot be given in full or is more than `max`
    /// entries. Creates the topic like [`position`](Self::position); drops entries that
    /// expired by `now` first.
    pub fn recover(
        &self,
        topic: &str,
        since: Option<(u64, &str)>,
        max: usize,
        now: Instant,
    ) -> Recovery {
        self.with_topic(topic, |state| {
            self.expire(state, now);
            let replay = match since {
                None => Replay::NotAsked,
                Some((offset, epoch)) => state.replay(offset, epoch, max, self.watermark()),
            };
            Recovery {
                offset: state.last,
                epoch: state.epoch.to_string(),
                replay,
            }
        })
    }

    /// Drops the entries expired by `now` in every topic, one stripe at a time, and
    /// frees the buffers of topics left empty. Topic states are kept (see the module
    /// docs). Without a ttl there is nothing to do.
    pub fn sweep(&self, now: Instant) {
        if self.config.ttl.is_none() {
            return;
        }
        for stripe in self.stripes.iter() {
            let mut stripe = lock(stripe);
            for state in stripe.topics.values_mut() {
                self.expire(state, now);
                if state.entries.is_empty() && state.entries.capacity() > 0 {
                    state.entries = VecDeque::new();
                }
            }
        }
    }

    /// Topics tracked now.
    pub fn topics(&self) -> usize {
        self.topics.load(Ordering::Relaxed)
    }

    /// Entries held, over all topics.
    pub fn entries(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Payload bytes held by the entries, over all topics (the payloads themselves;
    /// not the bookkeeping around them).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Runs `f` on `topic`'s state under its stripe's lock, creating the state (and
    /// evicting another at the cap) if needed.
    fn with_topic<R>(&self, topic: &str, f: impl FnOnce(&mut TopicState) -> R) -> R {
        let index = self.hasher.hash_one(topic) % self.stripes.len() as u64;
        let mut guard = lock(&self.stripes[index as usize]);
        let stripe = &mut *guard;
        if let Some(state) = stripe.topics.get_mut(topic) {
            state.recent = true;
            return f(state);
        }
        if stripe.topics.len() >= stripe.quota {
            self.evict_one(stripe);
        }
        let key: Arc<str> = Arc::from(topic);
        stripe.clock.push_back(Arc::clone(&key));
        self.topics.fetch_add(1, Ordering::Relaxed);
        let fresh = match self.external.get() {
            // A topic without state had no message since this node started reading
            // the log (or since the last eviction, which may have been this topic):
            // it is known from there, and its position is as far as the log was read.
            Some(e) => {
                let epoch = e
                    .epoch
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let known_from = e
                    .start
                    .load(Ordering::Acquire)
                    .max(e.evicted.load(Ordering::Acquire));
                let mut fresh = TopicState::new(epoch, e.watermark.load(Ordering::Acquire));
                fresh.floor = known_from.min(fresh.last);
                fresh
            }
            None => TopicState::new(new_epoch(), 0),
        };
        f(stripe.topics.entry(key).or_insert(fresh))
    }

    /// The CLOCK scan: evicts the first topic not used since the scan last passed it.
    /// Each step either evicts or clears a mark, so it ends within `len + 1` steps.
    fn evict_one(&self, stripe: &mut Stripe) {
        while let Some(key) = stripe.clock.pop_front() {
            let Some(state) = stripe.topics.get_mut(&key) else {
                debug_assert!(false, "the clock ring names a topic that is gone");
                continue;
            };
            if state.recent {
                state.recent = false;
                stripe.clock.push_back(key);
                continue;
            }
            if let Some(e) = self.external.get() {
                e.evicted
                    .fetch_max(e.watermark.load(Ordering::Acquire), Ordering::AcqRel);
            }
            if let Some(state) = stripe.topics.remove(&key) {
                let bytes: usize = state.entries.iter().map(|s| s.entry.payload.len()).sum();
                self.entries
                    .fetch_sub(state.entries.len(), Ordering::Relaxed);
                self.bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.topics.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
    }

    /// Drops `state`'s entries older than the ttl at `now`.
    fn expire(&self, state: &mut TopicState, now: Instant) {
        let Some(ttl) = self.config.ttl else { return };
        while state.entries.front().is_some_and(|oldest| {
            now.checked_duration_since(oldest.at)
                .is_some_and(|age| age > ttl)
        }) {
            self.pop_front(state);
        }
    }

    /// Holds a message just given `offset` (if history is on), making room first so
    /// that the deque never grows past the size, and drops what expired.
    fn keep(
        &self,
        state: &mut TopicState,
        offset: u64,
        opcode: Opcode,
        payload: &Bytes,
        now: Instant,
    ) {
        let size = self.config.size;
        if size == 0 {
            state.floor = offset;
            return;
        }
        while state.entries.len() >= size {
            self.pop_front(state);
        }
        let at = state.entries.back().map_or(now, |last| last.at.max(now));
        let entry = Entry {
            offset,
            opcode,
            payload: payload.clone(),
        };
        state.entries.push_back(Stored { entry, at });
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(payload.len(), Ordering::Relaxed);
        self.expire(state, now);
    }

    fn pop_front(&self, state: &mut TopicState) {
        if let Some(oldest) = state.entries.pop_front() {
            state.floor = oldest.entry.offset;
            self.entries.fetch_sub(1, Ordering::Relaxed);
            self.bytes
                .fetch_sub(oldest.entry.payload.len(), Ordering::Relaxed);
        }
    }
}

impl TopicState {
    /// A topic known from offset `start` on, in `epoch`.
    fn new(epoch: Arc<str>, start: u64) -> Self {
        // New topics start unmarked: one used only once is the first the scan evicts.
        TopicState {
            epoch,
            last: start,
            floor: start,
            entries: VecDeque::new(),
            recent: false,
        }
    }

    /// What a client at `{since, epoch}` missed, in full or not at all.
    /// What a client at `since` of `epoch` missed. `known` is the highest position the
    /// log has been read to (0 when this history assigns offsets itself): with
    /// external offsets a client may be at a position past this topic's last message.
    fn replay(&self, since: u64, epoch: &str, max: usize, known: u64) -> Replay {
        let floor = self.floor;
        if epoch != &*self.epoch || since > self.last.max(known) || since < floor {
            return Replay::Unrecoverable;
        }
        // Every message after `floor` is held, and `since >= floor`: the entries after
        // `since` are exactly what the client missed.
        let start = self.entries.partition_point(|s| s.entry.offset <= since);
        if self.entries.len() - start > max {
            return Replay::Unrecoverable;
        }
        Replay::Complete(
            self.entries
                .range(start..)
                .map(|s| s.entry.clone())
                .collect(),
        )
    }
}

/// A fresh epoch: 8 characters of `[a-z0-9]` (36^8 ≈ 2.8·10^12 values, so a topic
/// re-created after eviction or a restart gets the epoch it had with probability
/// ~4·10^-13).
fn new_epoch() -> Arc<str> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bits = rand::random::<u64>();
    (0..EPOCH_LEN)
        .map(|_| {
            let c = ALPHABET[(bits % 36) as usize] as char;
            bits /= 36;
            c
        })
        .collect::<String>()
        .into()
}

/// Locks a stripe, taking over a poisoned lock: the state is consistent because every
/// mutation is complete before a caller's closure (the only thing that can panic) runs.
fn lock(stripe: &Mutex<Stripe>) -> MutexGuard<'_, Stripe> {
    stripe.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn history(size: usize) -> History {
        History::new(HistoryConfig {
            size,
            ..HistoryConfig::default()
        })
    }

    fn publish(h: &History, topic: &str, text: &'static str, now: Instant) -> u64 {
        h.publish(
            topic,
            Opcode::Text,
            &Bytes::from_static(text.as_bytes()),
            now,
            |o, _| o,
        )
    }

    fn offsets(replay: &Replay) -> Vec<u64> {
        match replay {
            Replay::Complete(entries) => entries.iter().map(|e| e.offset).collect(),
            other => panic!("expected a complete replay, got {other:?}"),
        }
    }

    fn at(h: &History, topic: &str, offset: u64, now: Instant) -> Option<()> {
        h.publish_at(
            topic,
            offset,
            Opcode::Text,
            &Bytes::from_static(b"x"),
            now,
            |_| (),
        )
    }

    #[test]
    fn external_offsets_recover_across_gaps_between_topics() {
        let h = history(10);
        let now = Instant::now();
        h.follow_log("log1", 0);
        assert!(h.is_external());
        // The log interleaves two topics: offsets per topic are not contiguous.
        for (offset, topic) in [(1, "a"), (2, "b"), (3, "a"), (4, "a"), (5, "b")] {
            assert_eq!(at(&h, topic, offset, now), Some(()));
        }
        assert_eq!(h.watermark(), 5);
        assert_eq!(
            h.position("a"),
            Position {
                offset: 4,
                epoch: "log1".into()
            }
        );
        let rec = h.recover("a", Some((1, "log1")), 100, now);
        assert_eq!(offsets(&rec.replay), vec![3, 4]);
        // A position between a topic's messages (say, another topic's offset, or the
        // log's top as another node saw it) is a valid place to resume from.
        assert_eq!(
            offsets(&h.recover("a", Some((2, "log1")), 100, now).replay),
            vec![3, 4]
        );
        assert_eq!(
            offsets(&h.recover("a", Some((5, "log1")), 100, now).replay),
            vec![] as Vec<u64>
        );
        // Beyond what this node has read of the log: it cannot vouch for it.
        assert_eq!(
            h.recover("a", Some((6, "log1")), 100, now).replay,
            Replay::Unrecoverable
        );
        assert_eq!(
            h.recover("a", Some((1, "other")), 100, now).replay,
            Replay::Unrecoverable
        );
        // A message read twice (a consumer restart) is recorded once.
        assert_eq!(at(&h, "a", 4, now), None);
        assert_eq!(h.entries(), 5);
    }

    #[test]
    fn external_knowledge_starts_where_the_log_was_read_from() {
        let h = history(10);
        let now = Instant::now();
        // The node joins a log whose messages before 100 it never saw.
        h.follow_log("log1", 99);
        assert_eq!(at(&h, "a", 120, now), Some(()));
        assert_eq!(
            h.recover("a", Some((50, "log1")), 100, now).replay,
            Replay::Unrecoverable
        );
        assert_eq!(
            offsets(&h.recover("a", Some((99, "log1")), 100, now).replay),
            vec![120]
        );
        // A topic first seen now had no message since the node started reading: it
        // is known from there, and its position is as far as the log was read.
        let fresh = h.position("quiet");
        assert_eq!(fresh.offset, 120);
        assert_eq!(
            offsets(&h.recover("quiet", Some((100, "log1")), 100, now).replay),
            vec![] as Vec<u64>
        );
        assert_eq!(
            h.recover("quiet", Some((98, "log1")), 100, now).replay,
            Replay::Unrecoverable
        );
    }

    #[test]
    fn after_an_eviction_a_new_topic_is_known_from_then_on() {
        let h = History::new(HistoryConfig {
            size: 10,
            max_topics: 1,
            ..HistoryConfig::default()
        });
        let now = Instant::now();
        h.follow_log("log1", 0);
        at(&h, "a", 1, now);
        at(&h, "b", 2, now); // evicts "a" (one topic allowed)
        at(&h, "b", 3, now);
        // "a" comes back without state: its message 1 was held and forgotten.
        assert_eq!(
            h.recover("a", Some((0, "log1")), 100, now).replay,
            Replay::Unrecoverable
        );
        // (Bringing "a" back evicts "b" in turn: "a" is known from the log's top.)
        assert_eq!(
            offsets(&h.recover("a", Some((3, "log1")), 100, now).replay),
            vec![] as Vec<u64>
        );
    }

    #[test]
    fn external_entries_pushed_out_raise_the_floor() {
        let h = history(2);
        let now = Instant::now();
        h.follow_log("log1", 0);
        for offset in [3, 7, 9] {
            at(&h, "a", offset, now);
        }
        // 3 is gone: a client that saw only what came before it cannot recover...
        assert_eq!(
            h.recover("a", Some((2, "log1")), 100, now).replay,
            Replay::Unrecoverable
        );
        // ...one that saw 3 can.
        assert_eq!(
            offsets(&h.recover("a", Some((3, "log1")), 100, now).replay),
            vec![7, 9]
        );
        assert_eq!(
            h.recover("a", Some((3, "log1")), 1, now).replay,
            Replay::Unrecoverable
        );
    }

    #[test]
    fn after_a_catch_up_a_full_topic_vouches_from_its_oldest_entry() {
        let h = history(2);
        let now = Instant::now();
        // What a log kept of two topics: "a" up to its per-topic limit (older ones may
        // have been dropped by it), "b" below it (nothing dropped).
        h.follow_log("log1", 0);
        for (offset, topic) in [(5, "a"), (6, "b"), (8, "a")] {
            at(&h, topic, offset, now);
        }
        h.caught_up();
        assert_eq!(
            h.recover("a", Some((3, "log1")), 100, now).replay,
            Replay::Unrecoverable
        );
        assert_eq!(
            offsets(&h.recover("a", Some((4, "log1")), 100, now).replay),
            vec![5, 8]
        );
        assert_eq!(
            offsets(&h.recover("b", Some((0, "log1")), 100, now).replay),
            vec![6]
        );
    }

    #[test]
    fn a_new_log_epoch_drops_what_was_held() {
        let h = history(10);
        let now = Instant::now();
        h.follow_log("log1", 0);
        at(&h, "a", 1, now);
        at(&h, "a", 2, now);
        h.follow_log("log2", 0);
        assert_eq!((h.entries(), h.topics(), h.bytes()), (0, 0, 0));
        assert_eq!(
            h.recover("a", Some((1, "log1")), 100, now).replay,
            Replay::Unrecoverable
        );
        assert_eq!(
            h.position("a"),
            Position {
                offset: 0,
                epoch: "log2".into()
            }
        );
        at(&h, "a", 1, now);
        assert_eq!(
            offsets(&h.recover("a", Some((0, "log2")), 100, now).replay),
            vec![1]
        );
    }

    #[test]
    fn offsets_increase_per_topic_independently() {
        let h = history(0);
        let now = Instant::now();
        assert_eq!(publish(&h, "a", "1", now), 1);
        assert_eq!(publish(&h, "a", "2", now), 2);
        assert_eq!(publish(&h, "b", "1", now), 1);
        assert_eq!(publish(&h, "a", "3", now), 3);
        assert_eq!(h.position("a").offset, 3);
        assert_eq!(h.position("b").offset, 1);
        assert_ne!(h.position("a").epoch, h.position("b").epoch);
    }

    #[test]
    fn epochs_are_eight_lowercase_alphanumerics_and_stable() {
        let h = history(0);
        let epoch = h.position("t").epoch;
        assert_eq!(epoch.len(), EPOCH_LEN);
        assert!(
            epoch
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        let published = h.publish("t", Opcode::Text, &Bytes::new(), Instant::now(), |_, e| {
            e.to_string()
        });
        assert_eq!(published, epoch);
        assert_eq!(h.position("t").epoch, epoch);
    }

    #[test]
    fn two_publishers_hand_off_contiguous_offsets_in_order() {
        const EACH: u64 = 10_000;
        let h = Arc::new(history(100));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (h, seen) = (Arc::clone(&h), Arc::clone(&seen));
                std::thread::spawn(move || {
                    let payload = Bytes::from_static(b"x");
                    for _ in 0..EACH {
                        h.publish(
                            "t",
                            Opcode::Binary,
                            &payload,
                            Instant::now(),
                            |offset, _| {
                                // What a real closure does: hand the message on, in this order.
                                lock_vec(&seen).push(offset);
                            },
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("publisher thread");
        }
        let seen = lock_vec(&seen);
        let expected: Vec<u64> = (1..=2 * EACH).collect();
        assert_eq!(
            *seen, expected,
            "unique, contiguous and handed off in increasing order"
        );
        assert_eq!(h.position("t").offset, 2 * EACH);
        assert_eq!(h.entries(), 100);
    }

    fn lock_vec(v: &Mutex<Vec<u64>>) -> MutexGuard<'_, Vec<u64>> {
        v.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[test]
    fn recovers_everything_after_since() {
        let h = history(10);
        let now = Instant::now();
        for text in ["1", "2", "3", "4", "5"] {
            publish(&h, "t", text, now);
        }
        let epoch = h.position("t").epoch;
        let r = h.recover("t", Some((2, &epoch)), 100, now);
        assert_eq!((r.offset, &r.epoch), (5, &epoch));
        assert_eq!(offsets(&r.replay), [3, 4, 5]);
        let Replay::Complete(entries) = r.replay else {
            unreachable!()
        };
        assert_eq!(entries[0].payload, Bytes::from_static(b"3"));
        assert_eq!(entries[0].opcode, Opcode::Text);
        assert_eq!(
            offsets(&h.recover("t", Some((0, &epoch)), 100, now).replay),
            [1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn not_asked_still_reports_the_position() {
        let h = history(10);
        let now = Instant::now();
        publish(&h, "t", "1", now);
        let r = h.recover("t", None, 100, now);
        assert_eq!(r.offset, 1);
        assert_eq!(r.epoch, h.position("t").epoch);
        assert_eq!(r.replay, Replay::NotAsked);
    }

    #[test]
    fn at_the_top_is_complete_and_empty() {
        let h = history(10);
        let now = Instant::now();
        publish(&h, "t", "1", now);
        let epoch = h.position("t").epoch;
        assert_eq!(
            h.recover("t", Some((1, &epoch)), 0, now).replay,
            Replay::Complete(vec![])
        );
    }

    #[test]
    fn subscriber_of_an_empty_topic_recovers_from_zero() {
        let h = history(10);
        let now = Instant::now();
        let seen = h.position("t");
        assert_eq!(seen.offset, 0);
        assert_eq!(h.topics(), 1, "position creates the topic");
        publish(&h, "t", "1", now);
        publish(&h, "t", "2", now);
        let r = h.recover("t", Some((0, &seen.epoch)), 100, now);
        assert_eq!(offsets(&r.replay), [1, 2]);
    }

    #[test]
    fn other_epoch_is_unrecoverable() {
        let h = history(10);
        let now = Instant::now();
        publish(&h, "t", "1", now);
        let r = h.recover("t", Some((0, "zzzzzzzz")), 100, now);
        assert_eq!(r.replay, Replay::Unrecoverable);
        assert_eq!(r.offset, 1);
    }

    #[test]
    fn since_beyond_the_top_is_unrecoverable() {
        let h = history(10);
        let now = Instant::now();
        publish(&h, "t", "1", now);
        let epoch = h.position("t").epoch;
        assert_eq!(
            h.recover("t", Some((2, &epoch)), 100, now).replay,
            Replay::Unrecoverable
        );
    }

    #[test]
    fn entries_pushed_out_by_size_are_unrecoverable() {
        let h = history(3);
        let now = Instant::now();
        for text in ["1", "2", "3", "4", "5"] {
            publish(&h, "t", text, now);
        }
        let epoch = h.position("t").epoch;
        assert_eq!(h.entries(), 3);
        // Entries 3..=5 are held: from 2 it is complete, from 1 it would need 2.
        assert_eq!(
            offsets(&h.recover("t", Some((2, &epoch)), 100, now).replay),
            [3, 4, 5]
        );
        assert_eq!(
            h.recover("t", Some((1, &epoch)), 100, now).replay,
            Replay::Unrecoverable
        );
    }

    #[test]
    fn entries_expired_by_ttl_are_unrecoverable() {
        let ttl = Some(MINUTE);
        let h = History::new(HistoryConfig {
            size: 10,
            ttl,
            ..HistoryConfig::default()
        });
        let t0 = Instant::now();
        publish(&h, "t", "1", t0);
        publish(&h, "t", "2", t0 + MINUTE / 2);
        let epoch = h.position("t").epoch;
        // At exactly the ttl, the first is still held.
        assert_eq!(
            offsets(&h.recover("t", Some((0, &epoch)), 100, t0 + MINUTE).replay),
            [1, 2]
        );
        // Past it, the first is gone: from 0 is unrecoverable, from 1 is not.
        let later = t0 + MINUTE + Duration::from_secs(1);
        assert_eq!(
            h.recover("t", Some((0, &epoch)), 100, later).replay,
            Replay::Unrecoverable
        );
        assert_eq!(
            offsets(&h.recover("t", Some((1, &epoch)), 100, later).replay),
            [2]
        );
        assert_eq!(h.entries(), 1);
        // Once everything expired, a client at the top still recovers (the epoch lives on).
        let much_later = t0 + 10 * MINUTE;
        assert_eq!(
            h.recover("t", Some((2, &epoch)), 100, much_later).replay,
            Replay::Complete(vec![])
        );
        assert_eq!(h.entries(), 0);
    }

    #[test]
    fn more_than_max_is_unrecoverable_never_partial() {
        let h = history(10);
        let now = Instant::now();
        for text in ["1", "2", "3", "4", "5"] {
            publish(&h, "t", text, now);
        }
        let epoch = h.position("t").epoch;
        assert_eq!(
            offsets(&h.recover("t", Some((2, &epoch)), 3, now).replay),
            [3, 4, 5]
        );
        assert_eq!(
            h.recover("t", Some((1, &epoch)), 3, now).replay,
            Replay::Unrecoverable
        );
    }

    #[test]
    fn size_zero_keeps_offsets_but_no_entries() {
        let h = history(0);
        let now = Instant::now();
        for text in ["1", "2", "3"] {
            publish(&h, "t", text, now);
        }
        let epoch = h.position("t").epoch;
        assert_eq!((h.entries(), h.bytes()), (0, 0));
        let r = h.recover("t", Some((3, &epoch)), 100, now);
        assert_eq!((r.offset, r.replay), (3, Replay::Complete(vec![])));
        assert_eq!(
            h.recover("t", Some((2, &epoch)), 100, now).replay,
            Replay::Unrecoverable
        );
    }

    #[test]
    fn eviction_at_the_cap_starts_a_new_epoch() {
        let h = History::new(HistoryConfig {
            size: 10,
            max_topics: 1,
            ..HistoryConfig::default()
        });
        let now = Instant::now();
        publish(&h, "a", "hello", now);
        let old = h.position("a");
        publish(&h, "b", "1", now);
        assert_eq!(h.topics(), 1);
        assert_eq!((h.entries(), h.bytes()), (1, 1), "a's entry went with it");
        let new = h.position("a");
        assert_eq!(new.offset, 0);
        assert_ne!(new.epoch, old.epoch);
        assert_eq!(
            h.recover("a", Some((old.offset, &old.epoch)), 100, now)
                .replay,
            Replay::Unrecoverable
        );
        assert_eq!(publish(&h, "a", "again", now), 1, "offsets restart at 1");
    }

    #[test]
    fn the_cap_evicts_the_least_recently_used_topic() {
        let h = History::new(HistoryConfig {
            max_topics: 3,
            ..HistoryConfig::default()
        });
        let now = Instant::now();
        for topic in ["a", "b", "c"] {
            publish(&h, topic, "1", now);
        }
        let (a, c) = (h.position("a").epoch, h.position("c").epoch);
        // a and c were used again, b was not: d pushes b out.
        publish(&h, "d", "1", now);
        assert_eq!(h.topics(), 3);
        assert_eq!(h.position("a").epoch, a);
        assert_eq!(h.position("c").epoch, c);
        assert_eq!(h.position("a").offset, 1);
    }

    #[test]
    fn stripes_split_the_cap_exactly() {
        for max_topics in [0, 1, 63, 64, 1_000, 100_000, 1_000_001] {
            let h = History::new(HistoryConfig {
                max_topics,
                ..HistoryConfig::default()
            });
            let quotas: Vec<usize> = h.stripes.iter().map(|s| lock(s).quota).collect();
            assert_eq!(quotas.iter().sum::<usize>(), max_topics.max(1));
            assert!(quotas.len() <= MAX_STRIPES);
            assert!(quotas.iter().all(|&q| q >= 1));
        }
    }

    #[test]
    fn many_topics_stay_within_the_cap() {
        let h = History::new(HistoryConfig {
            size: 1,
            max_topics: 1_000,
            ..HistoryConfig::default()
        });
        let now = Instant::now();
        for i in 0..5_000 {
            publish(&h, &format!("topic-{i}"), "x", now);
        }
        assert!(h.topics() <= 1_000);
        assert_eq!(
            h.topics(),
            h.stripes
                .iter()
                .map(|s| lock(s).topics.len())
                .sum::<usize>()
        );
        assert_eq!(h.entries(), h.topics());
        for stripe in h.stripes.iter() {
            let stripe = lock(stripe);
            assert_eq!(stripe.clock.len(), stripe.topics.len());
        }
    }

    #[test]
    fn counters_track_entries_and_bytes() {
        let ttl = Some(MINUTE);
        let h = History::new(HistoryConfig {
            size: 2,
            ttl,
            ..HistoryConfig::default()
        });
        let t0 = Instant::now();
        publish(&h, "a", "12345", t0);
        publish(&h, "b", "123", t0);
        assert_eq!((h.topics(), h.entries(), h.bytes()), (2, 2, 8));
        publish(&h, "a", "1", t0);
        publish(&h, "a", "12", t0); // pushes out "12345"
        assert_eq!((h.entries(), h.bytes()), (3, 6));
        h.sweep(t0 + 2 * MINUTE);
        assert_eq!(
            (h.topics(), h.entries(), h.bytes()),
            (2, 0, 0),
            "sweep keeps the topics"
        );
        assert_eq!(h.position("a").offset, 3);
    }

    #[test]
    fn sweep_keeps_epochs() {
        let ttl = Some(MINUTE);
        let h = History::new(HistoryConfig {
            size: 5,
            ttl,
            ..HistoryConfig::default()
        });
        let t0 = Instant::now();
        publish(&h, "t", "1", t0);
        let before = h.position("t");
        h.sweep(t0 + 60 * MINUTE);
        assert_eq!(h.position("t"), before);
        let r = h.recover(
            "t",
            Some((before.offset, &before.epoch)),
            10,
            t0 + 60 * MINUTE,
        );
        assert_eq!(r.replay, Replay::Complete(vec![]));
    }

    #[test]
    fn a_panicking_closure_leaves_the_history_usable() {
        let h = history(10);
        let now = Instant::now();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.publish("t", Opcode::Text, &Bytes::from_static(b"1"), now, |_, _| {
                panic!("boom")
            })
        }));
        assert!(panicked.is_err());
        assert_eq!(publish(&h, "t", "2", now), 2);
        let epoch = h.position("t").epoch;
        assert_eq!(
            offsets(&h.recover("t", Some((0, &epoch)), 10, now).replay),
            [1, 2]
        );
    }
}
