//! The cluster floor: a NATS backplane that lets several hubcast nodes share topics.
//!
//! # What it owns
//! - **One NATS connection per node** ([`Backplane`]), on a thread of its own with its own
//!   tokio runtime: shards and other callers never await the broker.
//! - **Subjects** ([`subject`]): every topic maps to one escaped token under
//!   `<prefix>.t.`; a raw topic never becomes part of a subject.
//! - **Interest**: the node subscribes to a topic's subject when its first local
//!   subscriber appears and unsubscribes a linger (1 s) after the last one left; bursts of
//!   changes coalesce into at most one SUB/UNSUB per topic.
//! - **The wire format**: payload = the raw message; headers `Hubcast-Node`,
//!   `Hubcast-Kind`, `Hubcast-Sent`. A node skips its own echoes.
//! - **Its metrics** (`hubcast_backplane_*`, a `prometheus-client` registry of its own).
//!
//! # What it must not do
//! It sits above the engine and reaches it only through the engine's public seam:
//! [`attach`] implements the engine's `Backplane` trait and delivers other nodes'
//! messages through `Hub::publish_from_peer` (encode once, hand to the shards); the
//! rest of this floor sees only [`Deliver`]. It
//! never blocks a caller: [`Backplane::publish`] and [`Backplane::set_interest`] only
//! enqueue, and every message that cannot be carried is a counted drop with a
//! rate-limited log line.
//!
//! # Delivery guarantees
//! Core NATS is at most once. Per publisher order holds: a publisher lives on one node,
//! its node publishes in call order over one connection, and each topic is received by
//! one task in arrival order. While the node is disconnected, [`Backplane::publish`]
//! drops (reason `disconnected`) instead of queueing for an outage of unknown length;
//! messages the client had already accepted when the connection broke go out after the
//! reconnect or are lost with the socket. The client re-sends SUB for every live
//! subscription on reconnect; what was published while a node was away is gone.
//!
//! ```no_run
//! use std::sync::Arc;
//! use hubcast::cluster::{Backplane, ClusterConfig, Dropped, Kind};
//!
//! # fn main() -> Result<(), hubcast::cluster::ClusterError> {
//! // The engine implements `Deliver`; a closure does for a sketch.
//! let deliver = Arc::new(
//!     |topic: &str, _kind: Kind, payload: bytes::Bytes, _sent: Option<u64>| -> Result<(), Dropped> {
//!         println!("{topic}: {} bytes from another node", payload.len());
//!         Ok(())
//!     },
//! );
//! let backplane = Backplane::start(ClusterConfig::default(), deliver)?;
//! backplane.set_interest(0, "prices", true); // shard 0 has a subscriber of "prices"
//! backplane.publish("prices", Kind::Text, bytes::Bytes::from_static(b"42"));
//! backplane.shutdown();
//! # Ok(()) }
//! ```

mod attach;
mod backplane;
mod config;
mod error;
mod events;
mod interest;
mod log;
mod metrics;
mod presence;
mod publisher;
mod receiver;
pub mod subject;
mod throttle;
mod wire;

use bytes::Bytes;

pub use attach::attach;
pub use backplane::Backplane;
pub use config::ClusterConfig;
pub use error::ClusterError;
pub use log::{LogConfig, Storage};
pub use metrics::Stats;

/// The WebSocket message type of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A text message: the payload is UTF-8 (checked again on receipt).
    Text,
    /// A binary message.
    Binary,
}

/// The local inbox refused a message from another node (the node is behind); the
/// backplane counts it as `dropped{reason="inbox_full"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the local inbox is full")]
pub struct Dropped;

/// What the node does with a message that came from another node: encode it once and hand
/// it to the local shards. Implemented by the engine.
///
/// Called on the backplane's thread, one call per message, in arrival order per topic.
/// It must never block (it would stall every topic): refuse with [`Dropped`] instead.
pub trait Deliver: Send + Sync + 'static {
    /// Hands one message to the local shards. `sent_at_unix_nanos` is when it was
    /// published on its node, if known.
    fn deliver(
        &self,
        topic: &str,
        kind: Kind,
        payload: Bytes,
        sent_at_unix_nanos: Option<u64>,
    ) -> Result<(), Dropped>;

    /// Hands one message of the shared log to the engine (record it at its offset;
    /// deliver it when live). Called in log order.
    fn deliver_logged(&self, _message: Logged) -> Result<(), Dropped> {
        Err(Dropped)
    }

    /// The log message at `offset` could not be read: positions after it are still
    /// valid.
    fn skip_logged(&self, _offset: u64) {}

    /// The log's epoch is `epoch` and the node starts reading it after `start`: what
    /// the node held of another epoch is gone.
    fn follow_log(&self, _epoch: &str, _start: u64) {}

    /// The node has read what the log held when it started (see
    /// `History::caught_up`).
    fn log_caught_up(&self) {}

    /// The last log offset handed over (where to go on after a consumer restart).
    fn log_position(&self) -> u64 {
        0
    }

    /// This node's subscribers per topic, for topics with any (reported to the other
    /// nodes for presence).
    fn local_subscribers(&self) -> Vec<(String, usize)> {
        Vec::new()
    }
}

/// One message read from the cluster's shared log (see the `log` module): the node's
/// own messages too, in log order.
#[derive(Debug, Clone)]
pub struct Logged {
    /// Its topic.
    pub topic: String,
    /// Text or binary.
    pub kind: Kind,
    /// The raw message.
    pub payload: Bytes,
    /// Its offset: the stream's sequence number.
    pub offset: u64,
    /// When it was published on its node, if known.
    pub sent_at_unix_nanos: Option<u64>,
    /// Published by another node.
    pub remote: bool,
    /// News to deliver (`true`), or history read while the node catches up at start.
    pub live: bool,
}

/// Closures deliver too (tests, small programs).
impl<F> Deliver for F
where
    F: Fn(&str, Kind, Bytes, Option<u64>) -> Result<(), Dropped> + Send + Sync + 'static,
{
    fn deliver(
        &self,
        topic: &str,
        kind: Kind,
        payload: Bytes,
        sent_at_unix_nanos: Option<u64>,
    ) -> Result<(), Dropped> {
        self(topic, kind, payload, sent_at_unix_nanos)
    }
}

/// The backplane's link to the broker, for `/healthz` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Started, not connected yet (the broker may be unreachable: the client keeps trying).
    Connecting,
    /// Connected to a NATS server.
    Connected,
    /// Lost the connection and trying to get it back, or shut down.
    Disconnected,
}
