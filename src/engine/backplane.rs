//! The engine's view of other nodes: a seam the cluster floor plugs into.
//!
//! The engine must not know NATS (or any broker) exists, yet the hub has to tell other
//! nodes what was published here, and the shards have to say which topics this node
//! listens to. Both go through this trait, implemented one floor up by the cluster and
//! handed to the hub at start. Neither method may block: shards call them.

use bytes::Bytes;

use crate::wire::frame::Opcode;

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
