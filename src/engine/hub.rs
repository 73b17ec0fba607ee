//! The hub: the thread-safe handle through which anything publishes, counts, upgrades
//! or shuts down.
//!
//! Publishing encodes the message **once** into a `Bytes` and pushes a reference-counted
//! clone into each shard's inbox — one hand-off per shard, never one per recipient. With
//! `--compression`, a message large enough whose topic has permessage-deflate clients
//! is also compressed **once** here, on the publishing thread, per encoding (plain frame,
//! v1 push) that such clients get: never per shard, never per recipient.
//! `Hub` is cheap to clone and can be used from any thread, inside or outside a runtime.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;
use tokio::sync::watch;

use crate::config::Config;
use crate::engine::backplane::{Ack, Backplane};
use crate::engine::fanout::Published;
use crate::engine::grant::Verifier;
use crate::engine::history::History;
use crate::engine::metrics::Metrics;
use crate::engine::shard::ShardHandle;
use crate::error::PublishError;
use crate::wire::deflate;
use crate::wire::frame::{self, Opcode};
use crate::wire::v1;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;

/// Topic of clients that name none.
pub const DEFAULT_TOPIC: &str = "default";

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Subscribers it was addressed to on this node (as of the shards' snapshots).
    pub recipients: usize,
    /// Its offset in the topic: 1, 2, 3, … in publish order (what v1 clients see).
    pub offset: u64,
    /// The topic's epoch: offsets are only comparable within one epoch (shared, not
    /// copied, per publish).
    pub epoch: Arc<str>,
}

/// Handle to a running hubcast server. Clone it freely.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = hubcast::Server::start(hubcast::Config::default())?;
/// let hub = server.hub().clone();
/// std::thread::spawn(move || {
///     let _ = hub.publish("prices", r#"{"EURUSD":1.0842}"#);
/// });
/// server.join()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("shards", &self.inner.shards.len())
            .field("connections", &self.connections())
            .finish()
    }
}

/// The shared state behind every [`Hub`] handle (opaque outside the engine).
pub struct HubInner {
    pub(crate) config: Config,
    pub(crate) shards: Box<[Arc<ShardHandle>]>,
    pub(crate) metrics: Metrics,
    /// Offsets, epochs and history per topic (the sequencer).
    history: History,
    /// Where local publishes go besides the shards, when clustered.
    backplane: OnceLock<Arc<dyn Backplane>>,
    /// Turns tokens into grants, when auth is configured.
    verifier: OnceLock<Arc<dyn Verifier>>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Connections admitted (registered or about to be): the `--max-connections` gate.
    admitted: AtomicUsize,
    next_shard: AtomicUsize,
    next_id: AtomicU64,
}

impl Hub {
    pub(crate) fn new(config: Config) -> Self {
        let n = config.shard_count();
        let shards = (0..n)
            .map(|i| Arc::new(ShardHandle::new(i, config.inbox_capacity)))
            .collect();
        Hub {
            inner: Arc::new(HubInner {
                shards,
                metrics: Metrics::new(n),
                backplane: OnceLock::new(),
                verifier: OnceLock::new(),
                history: History::new(config.history_config()),
                shutdown: watch::Sender::new(false),
                admitted: AtomicUsize::new(0),
                next_shard: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                config,
            }),
        }
    }

    /// Broadcasts a text message to every subscriber of `topic`, on every shard.
    ///
    /// Non-blocking and callable from any thread. Returns the number of subscribers the
    /// message is addressed to (as of the shards' latest snapshots).
    pub fn publish(&self, topic: &str, text: &str) -> Result<usize, PublishError> {
        self.publish_message(topic, Opcode::Text, text.as_bytes())
            .map(|r| r.recipients)
    }

    /// Broadcasts a binary message to every subscriber of `topic`.
    pub fn publish_binary(&self, topic: &str, data: &[u8]) -> Result<usize, PublishError> {
        self.publish_message(topic, Opcode::Binary, data)
            .map(|r| r.recipients)
    }

    /// Like [`Hub::publish`], and tells the message's position in its topic: the offset
    /// protocol v1 clients see it with, and the topic's epoch.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = hubcast::Server::start(hubcast::Config::default())?;
    /// let receipt = server.hub().publish_text("prices", r#"{"EURUSD":1.0842}"#)?;
    /// println!("offset {} of epoch {}", receipt.offset, receipt.epoch);
    /// # Ok(()) }
    /// ```
    pub fn publish_text(&self, topic: &str, text: &str) -> Result<Receipt, PublishError> {
        self.publish_message(topic, Opcode::Text, text.as_bytes())
    }

    pub(crate) fn publish_message(
        &self,
        topic: &str,
        opcode: Opcode,
        payload: &[u8],
    ) -> Result<Receipt, PublishError> {
        self.check_message(topic, payload)?;
        self.publish_frame(Arc::from(topic), frame::encode(opcode, payload))
    }

    /// A topic of 1–128 bytes and a payload within the message size limit.
    pub(crate) fn check_message(&self, topic: &str, payload: &[u8]) -> Result<(), PublishError> {
        check_topic(topic)?;
        let limit = self.inner.config.max_message_size;
        if payload.len() > limit {
            return Err(PublishError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(())
    }

    /// Checks and encodes a message, then publishes it waiting up to `patience` for room
    /// in full inboxes (see [`Hub::publish_frame_wait`]).
    pub(crate) async fn publish_message_wait(
        &self,
        topic: &str,
        opcode: Opcode,
        payload: &[u8],
        patience: Duration,
    ) -> Result<Receipt, PublishError> {
        self.check_message(topic, payload)?;
        self.publish_frame_wait(
            Arc::from(topic),
            frame::encode(opcode, payload),
            Some(patience),
        )
        .await
    }

    /// The publish seam, for a message published on this node: hands the encoded frame
    /// to every local shard without waiting (a shard whose inbox is full drops it,
    /// counted and logged, and the caller gets [`PublishError::Overloaded`]), then to
    /// the backplane when clustered. Local subscribers never wait for the broker.
    pub(crate) fn publish_frame(
        &self,
        topic: Arc<str>,
        frame: Bytes,
    ) -> Result<Receipt, PublishError> {
        if let Some(log) = self.log() {
            // The log gives the offset; nobody here waits to learn it. Counted as
            // published when it comes back from the log, like every node counts it.
            self.check_open()?;
            self.append(log, &topic, &frame, None);
            return Ok(self.receipt_before_log(&topic, 0));
        }
        self.begin_publish()?;
        let reserved = self.reserve_now();
        let (result, p) = self.sequence(topic, frame, &reserved, Instant::now(), false);
        self.forward(&p);
        result
    }

    /// Like [`Hub::publish_frame`], but waiting (up to `patience`) for room in full
    /// inboxes instead of dropping: the back-pressure path for publishers that can
    /// wait — a WebSocket client (its socket simply stops being read meanwhile) and
    /// `POST /publish`. On timeout the shards still without room drop the message
    /// (counted) and the caller gets [`PublishError::Overloaded`].
    pub(crate) async fn publish_frame_wait(
        &self,
        topic: Arc<str>,
        frame: Bytes,
        patience: Option<Duration>,
    ) -> Result<Receipt, PublishError> {
        if let Some(log) = self.log() {
            self.check_open()?;
            let (ack, offset) = tokio::sync::oneshot::channel();
            self.append(log, &topic, &frame, Some(ack));
            let offset = offset.await.unwrap_or(Err(PublishError::Unavailable))?;
            return Ok(self.receipt_before_log(&topic, offset));
        }
        self.begin_publish()?;
        let reserved = self.reserve_waiting(patience).await?;
        let (result, p) = self.sequence(topic, frame, &reserved, Instant::now(), false);
        self.forward(&p);
        result
    }

    /// A message published on another node, received through the backplane: encoded
    /// once here and handed to the local shards exactly like a local publish, but never
    /// forwarded again. `born` is when it was published on its node.
    pub fn publish_from_peer(
        &self,
        topic: &str,
        opcode: Opcode,
        payload: &[u8],
        born: Instant,
    ) -> Result<usize, PublishError> {
        self.check_message(topic, payload)?;
        self.begin_publish()?;
        let reserved = self.reserve_now();
        let frame = frame::encode(opcode, payload);
        let (result, _) = self.sequence(Arc::from(topic), frame, &reserved, born, true);
        result.map(|r| r.recipients)
    }

    /// A message of the cluster's shared log (see [`Backplane::keeps_log`]), from this
    /// node or another, in log order: recorded in the history at the log's `offset`,
    /// then — when `live` — encoded once and handed to the local shards. A node
    /// catching up on the log at start records without delivering (`live == false`):
    /// those messages are history, not news. `remote` says whether another node
    /// published it (for the latency metrics).
    #[allow(clippy::too_many_arguments)]
    pub fn publish_from_log(
        &self,
        topic: &str,
        opcode: Opcode,
        payload: &Bytes,
        offset: u64,
        born: Instant,
        remote: bool,
        live: bool,
    ) -> Result<usize, PublishError> {
        let history = &self.inner.history;
        if let Err(e) = self.check_message(topic, payload) {
            history.advance(offset);
            return Err(e);
        }
        if !live {
            history.publish_at(topic, offset, opcode, payload, Instant::now(), |_| ());
            return Ok(0);
        }
        if let Err(e) = self.begin_publish() {
            history.advance(offset);
            return Err(e);
        }
        let reserved = self.reserve_now();
        let frame = frame::encode(opcode, payload);
        let deflated = self.deflated_twin(topic, opcode, payload);
        let topic: Arc<str> = Arc::from(topic);
        let name = topic.clone();
        let handed = history.publish_at(&name, offset, opcode, payload, Instant::now(), |epoch| {
            self.hand_off(
                topic, frame, deflated, &reserved, born, remote, offset, epoch,
            )
        });
        match handed {
            Some((result, _)) => result.map(|r| r.recipients),
            None => {
                // Already recorded (the log was read twice around a reconnect).
                for (shard, got) in self.inner.shards.iter().zip(&reserved) {
                    if *got {
                        shard.unreserve();
                    }
                }
                Ok(0)
            }
        }
    }

    /// The backplane, when it keeps the shared log.
    fn log(&self) -> Option<&Arc<dyn Backplane>> {
        self.backplane().filter(|b| b.keeps_log())
    }

    fn append(&self, log: &Arc<dyn Backplane>, topic: &str, frame: &Bytes, ack: Option<Ack>) {
        let (opcode, payload) = frame::payload_of(frame).unwrap_or((Opcode::Text, Bytes::new()));
        log.append(topic, opcode, payload, ack);
    }

    /// What a publish handed to the log can tell: the local subscribers it is addressed
    /// to now, the offset if it waited for the log's (0 if not), the log's epoch.
    fn receipt_before_log(&self, topic: &str, offset: u64) -> Receipt {
        Receipt {
            recipients: self.subscribers(topic),
            offset,
            epoch: Arc::from(self.inner.history.position(topic).epoch),
        }
    }

    /// One inbox slot on every shard that has room now.
    fn reserve_now(&self) -> Reserved {
        self.inner.shards.iter().map(|s| s.try_reserve()).collect()
    }

    /// One inbox slot on every shard, waiting for room (up to `patience`, then that
    /// shard is given up on).
    async fn reserve_waiting(&self, patience: Option<Duration>) -> Result<Reserved, PublishError> {
        let deadline = patience.map(|p| tokio::time::Instant::now() + p);
        let mut reserved = Reserved::with_capacity(self.inner.shards.len());
        for shard in self.inner.shards.iter() {
            let mut waited = false;
            loop {
                if shard.try_reserve() {
                    reserved.push(true);
                    break;
                }
                if !waited {
                    waited = true;
                    self.inner
                        .metrics
                        .publish_waits
                        .fetch_add(1, Ordering::Relaxed);
                }
                if self.is_shutting_down() {
                    for (s, got) in self.inner.shards.iter().zip(&reserved) {
                        if *got {
                            s.unreserve();
                        }
                    }
                    return Err(PublishError::ShuttingDown);
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    reserved.push(false);
                    break;
                }
                // The shard drains its inbox in well under a millisecond per batch.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(reserved)
    }

    /// Gives the message its offset and hands it to every shard that reserved a slot,
    /// all under the topic's sequencer lock, so that every shard sees a topic's
    /// messages in offset order whoever publishes them. The v1 push is encoded here,
    /// once, when some shard has v1 subscribers of the topic.
    fn sequence(
        &self,
        topic: Arc<str>,
        frame: Bytes,
        reserved: &[bool],
        born: Instant,
        remote: bool,
    ) -> (Result<Receipt, PublishError>, Published) {
        let (opcode, payload) = frame::payload_of(&frame).unwrap_or((Opcode::Text, Bytes::new()));
        let name = topic.clone();
        let deflated = self.deflated_twin(&topic, opcode, &payload);
        self.inner
            .history
            .publish(&name, opcode, &payload, Instant::now(), |offset, epoch| {
                self.hand_off(
                    topic, frame, deflated, reserved, born, remote, offset, epoch,
                )
            })
    }

    /// Hands a message that has its offset to every shard that reserved a slot (called
    /// under the topic's sequencer lock). The v1 push is encoded here, once, when some
    /// shard has v1 subscribers of the topic.
    #[allow(clippy::too_many_arguments)]
    fn hand_off(
        &self,
        topic: Arc<str>,
        frame: Bytes,
        deflated: Option<Bytes>,
        reserved: &[bool],
        born: Instant,
        remote: bool,
        offset: u64,
        epoch: &Arc<str>,
    ) -> (Result<Receipt, PublishError>, Published) {
        let shards = &self.inner.shards;
        let (mut recipients, mut v1, mut v1_deflate) = (0, false, false);
        for shard in shards.iter() {
            let snap = shard.snapshot.load();
            let (plain, pushes) = snap.audiences(&topic);
            recipients += plain.all().len() + pushes.all().len();
            v1 |= !pushes.is_empty();
            v1_deflate |= !pushes.deflate().is_empty();
        }
        let (mut push, mut push_deflated) = (None, None);
        if v1 {
            let (opcode, payload) =
                frame::payload_of(&frame).unwrap_or((Opcode::Text, Bytes::new()));
            let body = v1::push(&topic, offset, opcode, &payload);
            push = Some(frame::encode(Opcode::Text, &body));
            if v1_deflate && self.wants_compression(body.len()) {
                push_deflated = self.compress(Opcode::Text, &body);
            }
        }
        let p = Published {
            topic,
            frame,
            born,
            remote,
            offset,
            push,
            deflated,
            push_deflated,
        };
        let mut dropped = 0;
        for (shard, got) in shards.iter().zip(reserved) {
            if !(*got && shard.publish_reserved(p.clone())) {
                dropped += self.count_drop(shard);
            }
        }
        let receipt = self
            .settle(&p.topic, recipients, dropped)
            .map(|recipients| Receipt {
                recipients,
                offset,
                epoch: Arc::clone(epoch),
            });
        (receipt, p)
    }

    /// The plain frame's compressed twin, when compression is on, the payload is large
    /// enough and some shard has plain deflate subscribers of `topic`. It does not
    /// depend on the offset: made before the sequencer's lock, so that publishers of
    /// one stripe compress in parallel.
    fn deflated_twin(&self, topic: &str, opcode: Opcode, payload: &[u8]) -> Option<Bytes> {
        if self.wants_compression(payload.len()) && self.has_plain_deflate_subscribers(topic) {
            self.compress(opcode, payload)
        } else {
            None
        }
    }

    /// Whether a payload of `len` bytes is worth compressing (compression on, and at
    /// least `--compression-min-size`: below it, deflate saves a few bytes at the cost
    /// of a compressor run).
    fn wants_compression(&self, len: usize) -> bool {
        let cfg = &self.inner.config;
        cfg.compression && len >= cfg.compression_min_size
    }

    /// Whether some shard's snapshot has plain subscribers of `topic` that negotiated
    /// permessage-deflate (the v1 ones are looked at under the sequencer's lock).
    fn has_plain_deflate_subscribers(&self, topic: &str) -> bool {
        self.inner.shards.iter().any(|shard| {
            let snap = shard.snapshot.load();
            !snap.audiences(topic).0.deflate().is_empty()
        })
    }

    /// The compressed frame of one encoding of a message, with this thread's compressor;
    /// counted. `None` when compressing did not make it smaller.
    fn compress(&self, opcode: Opcode, payload: &[u8]) -> Option<Bytes> {
        let m = &self.inner.metrics.deflate;
        let frame = deflate::deflated_frame(opcode, payload);
        match &frame {
            Some(f) => {
                m.messages.fetch_add(1, Ordering::Relaxed);
                m.bytes_in
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                m.bytes_out.fetch_add(f.len() as u64, Ordering::Relaxed);
            }
            None => {
                m.incompressible.fetch_add(1, Ordering::Relaxed);
            }
        }
        frame
    }

    /// Tells other nodes (when clustered) about a message published here. The payload
    /// is a slice of the frame's buffer: nothing is copied for the backplane.
    fn forward(&self, p: &Published) {
        if let Some(backplane) = self.inner.backplane.get()
            && let Some((opcode, payload)) = frame::payload_of(&p.frame)
        {
            backplane.publish(&p.topic, opcode, payload);
        }
    }

    /// Plugs in the backplane (the cluster floor does, once, at start). Returns `false`
    /// if one was set already.
    pub fn set_backplane(&self, backplane: Arc<dyn Backplane>) -> bool {
        self.inner.backplane.set(backplane).is_ok()
    }

    /// The backplane, when clustered.
    pub fn backplane(&self) -> Option<&Arc<dyn Backplane>> {
        self.inner.backplane.get()
    }

    /// Plugs in the token verifier (the server does, once, before any shard runs).
    /// Returns `false` if one was set already.
    pub(crate) fn set_verifier(&self, verifier: Arc<dyn Verifier>) -> bool {
        self.inner.verifier.set(verifier).is_ok()
    }

    /// The token verifier, when auth is configured: every client then needs a token.
    pub(crate) fn verifier(&self) -> Option<&Arc<dyn Verifier>> {
        self.inner.verifier.get()
    }

    /// A handle that does not keep the hub alive (the backplane holds one).
    pub fn downgrade(&self) -> Weak<HubInner> {
        Arc::downgrade(&self.inner)
    }

    /// The hub behind a [`Hub::downgrade`] handle, if it still exists.
    pub fn upgrade_weak(weak: &Weak<HubInner>) -> Option<Hub> {
        weak.upgrade().map(|inner| Hub { inner })
    }

    /// Offsets, epochs and history of every topic.
    pub fn history(&self) -> &History {
        &self.inner.history
    }

    /// Every topic with subscribers on this node, with their number (plain and v1).
    pub fn topics(&self) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for shard in self.inner.shards.iter() {
            let snap = shard.snapshot.load();
            for topic in snap.topics() {
                *counts.entry(topic.to_string()).or_default() += snap.subscribers(topic).len();
            }
        }
        counts.into_iter().collect()
    }

    fn check_open(&self) -> Result<(), PublishError> {
        if self.is_shutting_down() {
            return Err(PublishError::ShuttingDown);
        }
        Ok(())
    }

    fn begin_publish(&self) -> Result<(), PublishError> {
        self.check_open()?;
        self.inner.metrics.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts one shard's drop of the message being published; returns 1.
    fn count_drop(&self, shard: &ShardHandle) -> usize {
        self.inner.metrics.shards[shard.index]
            .inbox_dropped
            .fetch_add(1, Ordering::Relaxed);
        1
    }

    /// The outcome of a publish that `dropped` shards could not take.
    fn settle(
        &self,
        topic: &str,
        recipients: usize,
        dropped: usize,
    ) -> Result<usize, PublishError> {
        if dropped == 0 {
            return Ok(recipients);
        }
        tracing::warn!(
            topic,
            dropped,
            "shard inbox full: message dropped on those shards"
        );
        Err(PublishError::Overloaded {
            dropped,
            shards: self.inner.shards.len(),
        })
    }

    /// Connections registered on all shards, as of their latest snapshots (a client is
    /// counted once it is guaranteed to receive the next publish).
    pub fn connections(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.snapshot.load().connections())
            .sum()
    }

    /// Subscribers of `topic` in the whole cluster: this node's (as of its shards'
    /// latest snapshots) plus the other nodes' as they last reported them (about a
    /// second old). The same as [`Hub::subscribers`] when not clustered.
    pub fn presence(&self, topic: &str) -> usize {
        self.subscribers(topic) + self.backplane().map_or(0, |b| b.remote_subscribers(topic))
    }

    /// Subscribers of `topic` on all shards of this node (plain and v1 clients), as of
    /// their latest snapshots.
    pub fn subscribers(&self, topic: &str) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.snapshot.load().subscribers(topic).len())
            .sum()
    }

    /// Every counter, in the Prometheus text format (what `GET /metrics` serves).
    pub fn metrics_text(&self) -> String {
        let mut text = self.inner.metrics.render();
        if let Some(backplane) = self.backplane() {
            backplane.render_metrics(&mut text);
        }
        text
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Starts a graceful shutdown: stop accepting, close every client with 1001,
    /// flush within the drain timeout. Returns at once; `Server::join` waits.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        for s in self.inner.shards.iter() {
            s.wake();
        }
    }

    /// Whether a shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    pub(crate) fn pick_shard(&self) -> usize {
        self.inner.next_shard.fetch_add(1, Ordering::Relaxed) % self.inner.shards.len()
    }

    pub(crate) fn next_client_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Reserves a connection slot; `false` when `max_connections` is reached.
    pub(crate) fn try_reserve_slot(&self) -> bool {
        let max = self.inner.config.max_connections;
        self.inner
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn release_slot(&self) {
        self.inner.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which shards reserved an inbox slot for one publish, in shard order: on the stack
/// for up to 32 shards, so a publish allocates nothing for it.
type Reserved = SmallVec<[bool; 32]>;

/// Checks a topic name: 1–128 bytes.
pub(crate) fn check_topic(topic: &str) -> Result<(), PublishError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(PublishError::InvalidTopic);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_inbox_is_reported_and_counted_not_blocking() {
        // No shard threads run here, so nothing drains the inboxes.
        let hub = Hub::new(Config {
            shards: 2,
            inbox_capacity: 2,
            ..Config::default()
        });
        assert_eq!(hub.publish("t", "1"), Ok(0));
        assert_eq!(hub.publish("t", "2"), Ok(0));
        assert_eq!(
            hub.publish("t", "3"),
            Err(PublishError::Overloaded {
                dropped: 2,
                shards: 2
            })
        );
        assert!(hub.metrics_text().contains("hubcast_inbox_dropped_total 2"));
    }

    #[tokio::test]
    async fn a_waiting_publish_gets_through_once_there_is_room() {
        let hub = Hub::new(Config {
            shards: 1,
            inbox_capacity: 1,
            ..Config::default()
        });
        assert_eq!(hub.publish("t", "1"), Ok(0));
        let waiting = {
            let hub = hub.clone();
            tokio::spawn(async move {
                hub.publish_frame_wait(Arc::from("t"), Bytes::from_static(b"2"), None)
                    .await
            })
        };
        // Still full: the publish waits (and says so in the metrics) instead of dropping.
        while !hub.metrics_text().contains("hubcast_publish_waits_total 1") {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        let first = hub.inner.shards[0].inbox.pop().expect("first frame");
        assert_eq!(&first.frame[2..], b"1");
        assert_eq!(waiting.await.expect("task").map(|r| r.recipients), Ok(0));
        assert_eq!(
            &hub.inner.shards[0].inbox.pop().expect("second").frame[..],
            b"2"
        );
        assert!(hub.metrics_text().contains("hubcast_inbox_dropped_total 0"));
        // With a deadline, a publish into a full inbox gives up and says so.
        assert_eq!(hub.publish("t", "3"), Ok(0));
        let r = hub
            .publish_frame_wait(
                Arc::from("t"),
                Bytes::from_static(b"4"),
                Some(Duration::from_millis(5)),
            )
            .await;
        assert_eq!(
            r,
            Err(PublishError::Overloaded {
                dropped: 1,
                shards: 1
            })
        );
    }

    #[test]
    fn publish_checks_topic_and_size() {
        let hub = Hub::new(Config {
            shards: 1,
            max_message_size: 4,
            ..Config::default()
        });
        assert_eq!(hub.publish("", "x"), Err(PublishError::InvalidTopic));
        assert_eq!(
            hub.publish(&"t".repeat(MAX_TOPIC_LEN + 1), "x"),
            Err(PublishError::InvalidTopic)
        );
        assert_eq!(
            hub.publish("t", "12345"),
            Err(PublishError::TooLarge { size: 5, limit: 4 })
        );
        hub.shutdown();
        assert_eq!(hub.publish("t", "1"), Err(PublishError::ShuttingDown));
    }
}
