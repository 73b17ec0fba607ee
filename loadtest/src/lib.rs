//! `hubcast-loadtest`: a lean fan-out load generator for WebSocket broadcast servers.
//!
//! The binary (`main.rs`) is a thin shell over [`run::run`]; integration tests
//! call it as a function. Module map, one job each:
//!
//! - [`cli`]: flags (`HUBCAST_LT_*` env vars) and the validated [`cli::Config`].
//! - [`target`]: URL resolution and the 127.0.0.x source-address plan.
//! - [`handshake`] / [`conn`]: the client opening handshake; connecting; output buffers.
//! - [`frame`] / [`proto`]: server-frame batch parser, masked client frames;
//!   ping/pong, close handshake and fragments.
//! - [`deflate`]: permessage-deflate (`--deflate`): the offer, the answer, inflating.
//! - [`payload`]: the measurement stamp (step, publisher, sequence, send time):
//!   ASCII, or a JSON array for protocol v1 runs.
//! - [`v1`]: hubcast protocol v1 pushes (exact parser, offsets), replies, commands.
//! - [`recovery`]: the `--recover` scenario's per-subscriber checks and verdict.
//! - [`subscriber`]: the receive hot path (one shared read buffer per thread).
//! - [`publisher`] / [`http1`] / [`pacing`]: paced publishing over WebSocket or HTTP POST.
//! - [`stats`]: loss/duplicate/reorder accounting and latency histograms.
//! - [`procfs`]: CPU and memory of the server and of this process; fd limit.
//! - [`worker`]: one current-thread tokio runtime per thread and its commands.
//! - [`run`]: the coordinator (phases, steps, verdicts); [`report`]: table and JSON.
//! - [`soak`]: the `soak` subcommand — hours of churn, slow readers and ping floods
//!   against one server, sampling its memory, fds and connections, checking every
//!   message.

pub mod cli;
pub mod conn;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod http1;
pub mod pacing;
pub mod payload;
pub mod procfs;
pub mod proto;
pub mod publisher;
pub mod recovery;
pub mod report;
pub mod run;
pub mod soak;
pub mod stats;
pub mod subscriber;
pub mod target;
pub mod tls;
pub mod v1;
pub mod worker;
