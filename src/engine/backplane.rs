//! The engine's view of other nodes: a seam the cluster floor plugs into.
//!
//! The engine must not know NATS (or any broker) exists, yet the hub has to tell other
//! nodes what was published here, and the shards have to say which topics this node
//! listens to. Both go through this trait, implemented one floor up by the cluster and
//! handed to the hub at start. Neither method may block: shards call them.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::PublishError;
use crate::wire::frame::Opcode;

/// Where the offset the shared log gave a message goes (see [`Backplane::append`]).
pub type Ack = oneshot::Sender<Result<u64, PublishError>>;

/// Where messages published on this node go besides the local shards.
pub trait Backplane: Send + Sync + 'static {
    /// A message published on this node (by a client, `POST /publish` or
    /// `Hub::publish`), already handed to the local shards. `payload` shares the
    /// encoded frame's buffer; no copy was made for the backplane.
    fn publish(&self, topic: &str, opcode: Opcode, payload: Bytes);

    /// Shard `shard` now has (`on`) or no longer has (`!on`) local subscribers of
    /// `topic`. Called from the shard at its snapshot rebuild, so a burst of connects
    /// to one topic costs one call.
    fn set_interest(&self, shard: usize, topic: &str, on: bool);

    /// Whether the backplane keeps a shared log that gives every message its offset
    /// (the cluster's history): then the hub hands local publishes to
    /// [`Backplane::append`] instead of its shards, and every node, this one included,
    /// gets them back in log order through `Hub::publish_from_log`. Fixed for the
    /// backplane's life.
    fn keeps_log(&self) -> bool {
        false
    }

    /// Puts a message published on this node on the shared log (only called when
    /// [`Backplane::keeps_log`]). `ack`, when given, learns the offset the log gave it,
    /// or why it was not taken ([`PublishError::Unavailable`]). Must not block.
    fn append(&self, _topic: &str, _opcode: Opcode, _payload: Bytes, ack: Option<Ack>) {
        if let Some(ack) = ack {
            let _ = ack.send(Err(PublishError::Unavailable));
        }
    }

    /// Subscribers of `topic` on the other nodes, as last reported by them (a second
    /// or so old).
    fn remote_subscribers(&self, _topic: &str) -> usize {
        0
    }

    /// The link to other nodes in a word (`connected`, `disconnected`, …), for
    /// `/healthz`.
    fn status(&self) -> &'static str {
        "attached"
    }

    /// Appends the backplane's own metrics (Prometheus text) to `/metrics`.
    fn render_metrics(&self, _out: &mut String) {}

    /// Sends what is queued and disconnects; called once the shards have stopped.
    fn shutdown(&self) {}
}
