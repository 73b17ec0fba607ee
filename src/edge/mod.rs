//! Floor 3 — the edge: where the network meets the engine.
//!
//! Accepting TCP connections and dealing them to shards (`listener`), serving HTTP on
//! them (`http`: the demo page, `/healthz`, `/metrics`, `POST /publish`), and turning
//! a WebSocket handshake into a registered client (`upgrade`, with the [`origin`]
//! policy and, when configured, JWT [`auth`]), with [`tls`] in front of HTTP when a
//! certificate is configured. The edge calls down into the engine; the engine reaches
//! the edge only through what it is given: the connection handler (`serve_connection`)
//! and the token verifier (`auth::JwtVerifier`).

pub mod auth;
pub(crate) mod http;
pub(crate) mod listener;
pub mod origin;
pub mod tls;
pub(crate) mod upgrade;

use std::rc::Rc;
use std::sync::Arc;

use crate::engine::hub::Hub;
use crate::engine::shard::ConnHandler;

/// The handler a shard runs for each accepted connection: hubcast's HTTP server (behind
/// a TLS handshake when `tls` is given), with the origin policy parsed once per shard.
pub(crate) fn serve_connection(hub: &Hub, tls: Option<Arc<tls::Tls>>) -> ConnHandler {
    let origins = Rc::new(origin::OriginPolicy::new(&hub.config().allow_origins));
    Rc::new(move |shard, stream, peer| {
        http::serve(shard.clone(), stream, peer, origins.clone(), tls.clone());
    })
}
