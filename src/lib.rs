//! # hubcast — a lock-free, high-throughput WebSocket broadcast engine
//!
//! hubcast is the classic WebSocket *hub* (clients register, every message is fanned
//! out to every client of a topic) rebuilt for millions of deliveries per second:
//!
//! - **Per-core shards**: one thread and current-thread runtime per core, each owning
//!   its connections' sockets ([`engine`]).
//! - **Encode once**: a message becomes one `Bytes` holding the whole server frame,
//!   shared by every recipient on every shard ([`wire::frame`]).
//! - **Lock-free registry**: per shard a `slab` of clients behind an `arc-swap`
//!   snapshot, rebuilt at most once per batch or tick ([`engine::registry`]).
//!
//! The shortest useful program — a server, and a thread publishing into it:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! fn main() -> Result<(), hubcast::Error> {
//!     let mut config = hubcast::Config::default();
//!     config.listen = "127.0.0.1:8080".parse().expect("address");
//!     let server = hubcast::Server::start(config)?;
//!     let hub = server.hub().clone();
//!     std::thread::spawn(move || loop {
//!         // Every client connected to ws://127.0.0.1:8080/ws?topic=ticks gets this.
//!         let _ = hub.publish("ticks", "tick");
//!         std::thread::sleep(Duration::from_secs(1));
//!     });
//!     server.join()
//! }
//! ```
//!
//! The source reads bottom-up, in floors; each imports only from the floors below it:
//!
//! | floor | owns | data-path steps |
//! |---|---|---|
//! | [`wire`] | bytes on the wire | encode once (`wire/frame.rs`), frame bounds |
//! | [`engine`] | clients, shards, publishing | register (`registry`), read (`reader`), publish (`hub`), fan-out (`shard`, `fanout`), write (`client`) |
//! | [`edge`] | the network | accept (`listener`), HTTP (`http`), upgrade + origin (`upgrade`, `origin`) |
//! | `cluster` | other nodes, over NATS | the [`engine::backplane::Backplane`] seam's implementation |
//! | `server`, `bin/hubcast` | wiring and the CLI | |
//!
//! `config` and `error` are shared by every floor.

#![warn(missing_docs)]

// The floors (see the table above); `tests/layers.rs` checks that none imports a floor
// above it.
pub mod cluster;
pub mod edge;
pub mod engine;
mod server;
pub mod wire;

pub mod config;
pub mod error;

#[cfg(test)]
mod fuzzing;

pub use config::{Admission, AdmitFn, Config, Refusal, TlsFiles};
pub use engine::hub::Hub;
pub use error::{Error, PublishError};
pub use server::{Server, TlsReload};

/// The README's examples compile and are checked as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
