//! Upgrade: the gorilla `Upgrader`, from an HTTP request to a registered client.
//!
//! In order: is it a WebSocket handshake, is the server shutting down, is the origin
//! allowed, are the topics valid, does the embedder's admission hook agree, is there
//! capacity — each refusal is an HTTP status with a reason, before any upgrade. Then the
//! client is registered on the shard *before* the `101` goes out (so it cannot miss a
//! message published after it saw the `101`), and once hyper hands back the raw
//! connection, the shard attaches the socket — together with any bytes the client sent
//! right behind its handshake, which hyper has already read.
//!
//! The `101` also settles what the connection speaks: protocol v1 when the client
//! offers `hubcast.v1`, and permessage-deflate when `--compression` is on and the client
//! offers it in a form hubcast can honour (`wire::extensions` picks the offer).

// Refusals are whole HTTP responses; they are rare and not on a hot path, so returning
// them by value is clearer than boxing.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use crate::config::Admission;
use crate::edge::origin::OriginPolicy;
use crate::engine::client::Negotiated;
use crate::engine::hub::{DEFAULT_TOPIC, Hub, MAX_TOPIC_LEN};
use crate::engine::metrics::Rejection;
use crate::engine::shard::{Incoming, Shard};
use crate::wire::{extensions, v1};

/// Most topics one connection may join.
pub const MAX_TOPICS: usize = 64;

/// Every response of the upgrade path.
pub(crate) type Reply = Response<Full<Bytes>>;

/// A plain-text error response.
pub(crate) fn error(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{reason}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Decodes a topic name from a URL component: percent-decoding only (a `+` stays a
/// `+`), valid UTF-8, 1–128 bytes. The query (`?topic=`) and the publish path
/// (`/publish/{topic}`) both go through here, so a name means the same in both.
pub(crate) fn decode_topic(raw: &str) -> Result<String, String> {
    let topic = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "topic names must be valid UTF-8".to_owned())?;
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(format!("topic names must be 1-{MAX_TOPIC_LEN} bytes"));
    }
    Ok(topic.into_owned())
}

/// Topics named in the query (`?topic=a&topic=b`), or the default topic — for plain
/// clients: a protocol v1 client that names none starts with none (`default_topic`
/// false) and subscribes with commands.
pub(crate) fn topics_from_query(
    query: Option<&str>,
    default_topic: bool,
) -> Result<Vec<String>, String> {
    let mut topics: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        let Some(raw) = pair.strip_prefix("topic=") else {
            continue;
        };
        let topic = decode_topic(raw)?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
        if topics.len() > MAX_TOPICS {
            return Err(format!("at most {MAX_TOPICS} topics per connection"));
        }
    }
    if topics.is_empty() && default_topic {
        topics.push(DEFAULT_TOPIC.to_owned());
    }
    Ok(topics)
}

/// Every check before an upgrade; on success a connection slot is reserved and the
/// topics are returned.
pub(crate) fn admit<B>(
    hub: &Hub,
    origins: &OriginPolicy,
    req: &Request<B>,
    peer: Option<SocketAddr>,
) -> Result<Vec<String>, Response<Full<Bytes>>> {
    let m = &hub.inner.metrics;
    let refuse = |why: Rejection, status: StatusCode, reason: &str| {
        m.reject(why);
        debug!(?peer, %status, reason, "upgrade refused");
        Err(error(status, reason))
    };
    if let Err(resp) = check_handshake(req) {
        m.reject(Rejection::BadRequest);
        debug!(?peer, status = %resp.status(), "upgrade refused: bad handshake");
        return Err(resp);
    }
    if hub.is_shutting_down() {
        return refuse(
            Rejection::ShuttingDown,
            StatusCode::SERVICE_UNAVAILABLE,
            "server is shutting down",
        );
    }
    if !origins.allows(req.headers()) {
        return refuse(
            Rejection::Origin,
            StatusCode::FORBIDDEN,
            "origin not allowed",
        );
    }
    let topics = match topics_from_query(req.uri().query(), !offers_v1(req)) {
        Ok(t) => t,
        Err(reason) => return refuse(Rejection::BadRequest, StatusCode::BAD_REQUEST, &reason),
    };
    if let Some(admit) = &hub.inner.config.admit {
        let a = Admission {
            headers: req.headers(),
            query: req.uri().query(),
            peer,
            topics: &topics,
        };
        if let Err(refusal) = admit(&a) {
            return refuse(Rejection::Admission, refusal.status, &refusal.reason);
        }
    }
    if !hub.try_reserve_slot() {
        return refuse(
            Rejection::Capacity,
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections",
        );
    }
    Ok(topics)
}

/// Whether `req` is a WebSocket opening handshake this server can honour (RFC 6455
/// §4.2.1): a `GET` over HTTP/1.1 with `Connection: Upgrade`, `Upgrade: websocket`,
/// exactly one `Sec-WebSocket-Key` that is the base64 of 16 bytes, and
/// `Sec-WebSocket-Version: 13`. Anything else is a 400 *before* any `101`: hyper cannot
/// hand over an HTTP/1.0 connection, so a `101` there would be a promise broken at once.
pub(crate) fn check_handshake<B>(req: &Request<B>) -> Result<(), Response<Full<Bytes>>> {
    let bad = |reason: &str| Err(error(StatusCode::BAD_REQUEST, reason));
    if req.method() != hyper::Method::GET {
        return bad("a WebSocket handshake must be a GET request");
    }
    if req.version() != hyper::Version::HTTP_11 {
        return bad("a WebSocket handshake needs HTTP/1.1");
    }
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
        return bad("expected a WebSocket upgrade request");
    }
    let headers = req.headers();
    let mut versions = headers.get_all("sec-websocket-version").iter();
    if versions.next().map(HeaderValue::as_bytes) != Some(b"13") || versions.next().is_some() {
        // RFC 6455 §4.4: tell the client which version we speak.
        let mut r = error(
            StatusCode::BAD_REQUEST,
            "unsupported Sec-WebSocket-Version (this server speaks 13)",
        );
        r.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return Err(r);
    }
    let mut keys = headers.get_all("sec-websocket-key").iter();
    let key_ok = match (keys.next(), keys.next()) {
        (Some(key), None) => is_valid_key(key.as_bytes()),
        _ => false,
    };
    if !key_ok {
        return bad("Sec-WebSocket-Key must be the base64 of 16 bytes");
    }
    Ok(())
}

/// A `Sec-WebSocket-Key` is a nonce of 16 bytes in base64: 24 characters with padding.
fn is_valid_key(key: &[u8]) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|nonce| nonce.len() == 16)
}

/// Whether the request offers the `hubcast.v1` subprotocol.
fn offers_v1<B>(req: &Request<B>) -> bool {
    v1::offers_v1(
        req.headers()
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .map(HeaderValue::as_bytes),
    )
}

/// The `101` response, and what it agreed: when the client offers the `hubcast.v1`
/// subprotocol, the response selects it; with `compression` on, it accepts the first
/// permessage-deflate offer hubcast can honour. The request must have passed
/// [`check_handshake`] (through [`admit`]), and the caller must have taken the
/// request's `OnUpgrade` already.
pub(crate) fn accept_response<B>(
    req: &mut Request<B>,
    compression: bool,
) -> Result<(Reply, Negotiated), Reply> {
    let v1 = offers_v1(req);
    let deflate = compression
        .then(|| {
            extensions::negotiate(
                req.headers()
                    .get_all(SEC_WEBSOCKET_EXTENSIONS)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )
        })
        .flatten();
    match fastwebsockets::upgrade::upgrade(req) {
        // The returned future is unused: the caller already holds hyper's `OnUpgrade`.
        Ok((resp, _)) => {
            let mut resp = resp.map(|_| Full::new(Bytes::new()));
            if v1 {
                resp.headers_mut().insert(
                    SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(v1::SUBPROTOCOL),
                );
            }
            // The answer is built from fixed parameter names only.
            let deflate = deflate.and_then(|agreed| {
                let value = HeaderValue::from_str(&agreed.response).ok()?;
                resp.headers_mut().insert(SEC_WEBSOCKET_EXTENSIONS, value);
                Some(agreed.deflate)
            });
            Ok((resp, Negotiated { v1, deflate }))
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("bad WebSocket handshake: {e}"),
        )),
    }
}

/// The raw TCP stream behind an upgraded connection, plus the bytes hyper already read
/// past the handshake (the client's first frames may be there — never drop them).
pub(crate) fn into_tcp(upgraded: Upgraded) -> Option<(TcpStream, Bytes)> {
    let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
    Some((parts.io.into_inner(), parts.read_buf))
}

/// The embedder's path: a hubcast [`Hub`] behind someone else's HTTP server.
impl Hub {
    /// Takes over a WebSocket upgrade request received by the embedder's own HTTP
    /// service (hyper or axum over a `tokio::net::TcpStream`): checks origin, admission
    /// and capacity, and returns the response to send — `101 Switching Protocols`, or an
    /// error status. After the response is sent, the connection moves to a shard.
    ///
    /// The connection must be served by hyper's HTTP/1 server directly on a
    /// `TokioIo<TcpStream>` with upgrades on (`examples/embed.rs` with hyper,
    /// `examples/axum.rs` with an axum `Router`): hubcast takes the raw socket back to
    /// write shared frames to it. `axum::serve` wraps sockets (to sniff HTTP/2) and so
    /// cannot hand them over; such an upgrade is refused after the `101` and logged.
    ///
    /// Must be called inside a tokio runtime. The client receives messages published
    /// after its shard adopted it (a few microseconds after the `101`).
    pub fn upgrade<B>(
        &self,
        req: &mut Request<B>,
        peer: Option<SocketAddr>,
    ) -> Response<Full<Bytes>> {
        let topics = match admit(
            self,
            &OriginPolicy::new(&self.config().allow_origins),
            req,
            peer,
        ) {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        let on_upgrade = hyper::upgrade::on(&mut *req);
        let (response, negotiated) = match accept_response(req, self.config().compression) {
            Ok(r) => r,
            Err(resp) => {
                self.inner.metrics.reject(Rejection::BadRequest);
                self.release_slot();
                return resp;
            }
        };
        let hub = self.clone();
        let id = self.next_client_id();
        let shard = self.pick_shard();
        tokio::spawn(async move {
            let adopted = match on_upgrade.await {
                Ok(upgraded) => {
                    into_tcp(upgraded).and_then(|(s, buf)| Some((s.into_std().ok()?, buf)))
                }
                Err(_) => None,
            };
            match adopted {
                Some((stream, read_buf)) => {
                    hub.inner.shards[shard].hand_over(Incoming::Upgraded {
                        stream,
                        read_buf,
                        topics,
                        id,
                        negotiated,
                    });
                }
                None => {
                    tracing::warn!(
                        "upgrade handed over, but the connection is not a tokio TcpStream or failed"
                    );
                    hub.release_slot();
                }
            }
        });
        response
    }
}

/// `GET /ws` on a hubcast listener: admit, register, answer `101`, then attach.
pub(crate) fn on_shard<B>(
    shard: &Rc<Shard>,
    origins: &OriginPolicy,
    mut req: Request<B>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let hub = &shard.hub;
    let topics = match admit(hub, origins, &req, Some(peer)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (response, negotiated) = match accept_response(&mut req, hub.config().compression) {
        Ok(r) => r,
        Err(resp) => {
            hub.inner.metrics.reject(Rejection::BadRequest);
            hub.release_slot();
            return resp;
        }
    };
    let who = shard.register(hub.next_client_id(), &topics, negotiated);
    let shard = shard.clone();
    tokio::task::spawn_local(async move {
        match on_upgrade.await.ok().and_then(into_tcp) {
            Some((stream, read_buf)) => shard.attach(who, stream, read_buf),
            None => shard.remove(who),
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(version: hyper::Version, extra: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/ws")
            .version(version)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    const KEY: (&str, &str) = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    const V13: (&str, &str) = ("sec-websocket-version", "13");

    #[test]
    fn handshake_rules_of_rfc_6455() {
        let v11 = hyper::Version::HTTP_11;
        assert!(check_handshake(&handshake(v11, &[KEY, V13])).is_ok());
        let refused = |req: Request<()>| check_handshake(&req).expect_err("refused").status();
        assert_eq!(
            refused(handshake(hyper::Version::HTTP_10, &[KEY, V13])),
            400
        );
        for key in [
            "abc",
            "",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZXh4eA==",
        ] {
            assert_eq!(
                refused(handshake(v11, &[("sec-websocket-key", key), V13])),
                400,
                "key {key:?}"
            );
        }
        assert_eq!(refused(handshake(v11, &[V13])), 400, "no key");
        assert_eq!(refused(handshake(v11, &[KEY, KEY, V13])), 400, "two keys");
        for version in [None, Some("8"), Some("14")] {
            let mut extra = vec![KEY];
            extra.extend(version.map(|v| ("sec-websocket-version", v)));
            let r = check_handshake(&handshake(v11, &extra)).expect_err("refused");
            assert_eq!(r.status(), 400);
            assert_eq!(r.headers()["sec-websocket-version"], "13", "RFC 6455 4.4");
        }
    }

    #[test]
    fn topics_default_dedupe_and_decode() {
        assert_eq!(topics_from_query(None, true).expect("ok"), vec!["default"]);
        assert_eq!(
            topics_from_query(Some("x=1"), true).expect("ok"),
            vec!["default"]
        );
        assert_eq!(
            topics_from_query(Some("topic=a&topic=b%20c&topic=a"), true).expect("ok"),
            vec!["a", "b c"]
        );
        assert!(topics_from_query(Some("topic="), true).is_err());
        assert!(
            topics_from_query(None, false).expect("ok").is_empty(),
            "a v1 client starts with no topic"
        );
        assert_eq!(
            topics_from_query(Some("topic=a+b"), true).expect("ok"),
            vec!["a+b"],
            "+ is not a space"
        );
        assert!(
            topics_from_query(Some("topic=%ff"), true).is_err(),
            "invalid UTF-8 is refused"
        );
        let long = format!("topic={}", "x".repeat(MAX_TOPIC_LEN + 1));
        assert!(topics_from_query(Some(&long), true).is_err());
    }
}
