//! Floor 2 — the engine: who is connected, and getting every message to them.
//!
//! Reading bottom-up: a [`client`] owns one socket and its outbound queue; a
//! [`registry`] holds a shard's clients in a slab behind a lock-free snapshot; the
//! [`fanout`] writes one batch of shared frames to every subscriber in a snapshot; a
//! shard (`shard`) is one thread that owns its clients, drains its inbox and runs the
//! fan-out lane by lane (`lanes`: a slice of its clients at a time, taking in what
//! arrived meanwhile), paced by `pacing` (batch only when waiting buys something); the reader (`reader`) turns a client's bytes into messages; the [`hub`] is
//! the thread-safe handle and the **one publish seam**: chat, `POST /publish`,
//! `Hub::publish` and messages from other nodes all enter there, and local shards plus
//! the optional [`backplane`] are all it hands them to. Beside them, [`history`] numbers
//! each topic's messages (offsets and epochs) and keeps the recent ones for recovery,
//! and `commands` runs protocol v1 clients' commands on their shard. [`grant`] is what
//! a verified token allows a client (topics to subscribe and publish to, a deadline).
//! Under the client, [`transport`] is its byte stream: plain TCP, or TLS where the
//! shared frame is sealed per connection.
//!
//! The engine knows nothing of HTTP, NATS or JWT. What it needs from above, it is given:
//! a connection handler for accepted sockets (the edge's HTTP server), a
//! [`backplane::Backplane`] (the cluster) and a [`grant::Verifier`] (the edge's JWT
//! check).

pub mod backplane;
pub mod client;
pub(crate) mod commands;
pub mod fanout;
pub mod grant;
pub mod history;
pub mod hub;
pub(crate) mod lanes;
pub mod metrics;
pub(crate) mod pacing;
pub(crate) mod reader;
pub mod registry;
pub(crate) mod shard;
pub mod transport;
