//! # hubcast — a lock-free, high-throughput WebSocket broadcast engine
//!
//! hubcast is the classic WebSocket *hub* (clients register, every message is fanned
//! out to every client of a topic) rebuilt for millions of deliveries per second:
//!
//! - **Per-core shards**: one thread and current-thread runtime per core, each owning
//!   its connections' sockets ([`shard`]).
//! - **Encode once**: a message becomes one `Bytes` holding the whole server frame,
//!   shared by every recipient on every shard ([`frame`]).
//! - **Lock-free registry**: per shard a `slab` of clients behind an `arc-swap`
//!   snapshot, rebuilt at most once per batch or tick ([`registry`]).
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
//! The data path, one module per step: [`listener`] (accept) → [`http`] → [`upgrade`]
//! (origin, admission) → [`registry`] (register) → [`reader`] (frames in) → [`hub`]
//! (publish) → [`frame`] (encode once) → [`shard`] + [`fanout`] → [`client`] (write).

#![warn(missing_docs)]

pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fanout;
pub mod frame;
mod http;
pub mod hub;
mod listener;
pub mod metrics;
pub mod origin;
mod reader;
pub mod registry;
mod server;
mod shard;
mod upgrade;

pub use config::{Admission, AdmitFn, Config, Refusal};
pub use error::{Error, PublishError};
pub use hub::Hub;
pub use server::Server;

/// The README's examples compile and are checked as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
