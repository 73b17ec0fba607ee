//! Upgrade: the gorilla `Upgrader`, from an HTTP request to a registered client.
//!
//! In order: is it a WebSocket handshake, is the server shutting down, is the origin
//! allowed, are the topics valid, (with auth) is the token valid and does it grant the
//! topics, does the embedder's admission hook agree, is there capacity — each refusal is
//! an HTTP status with a reason, before any upgrade. Then the
//! client is registered on the shard *before* the `101` goes out (so it cannot miss a
//! message published after it saw the `101`), and once hyper hands back the raw
//! connection, the shard attaches the socket — together with any bytes the client sent
//! right behind its handshake, which hyper has already read. Over TLS, hyper hands back
//! the TLS stream: its socket and its rustls session (with whatever the session has
//! buffered, both ways) go to the shard together, and hyper's bytes are plaintext.
//!
//! The `101` also settles what the connection speaks: protocol v1 when the client
//! offers `hubcast.v1`, and permessage-deflate when `--compression` is on and the client
//! offers it in a form hubcast can honour (`wire::extensions` picks the offer).

// Refusals are whole HTTP responses; they are rare and not on a hot path, so returning
// them by value is clearer than boxing.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConnection;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use crate::config::Admission;
use crate::edge::auth;
use crate::edge::origin::OriginPolicy;
use crate::engine::client::Negotiated;
use crate::engine::grant::{Access, AccessState};
use crate::engine::hub::{DEFAULT_TOPIC, Hub, MAX_TOPIC_LEN};
use crate::engine::metrics::Rejection;
use crate::engine::shard::{Incoming, Shard};
use crate::engine::transport::Conn;
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

/// What an admitted upgrade request brings to its client.
pub(crate) struct Admitted {
    /// The topics of the URL.
    topics: Vec<String>,
    /// With auth: its token's grant, or the wait for a v1 `connect`.
    access: Option<Access>,
}

/// Every check before an upgrade; on success a connection slot is reserved and the
/// topics and access are returned.
pub(crate) fn admit<B>(
    hub: &Hub,
    origins: &OriginPolicy,
    req: &Request<B>,
    peer: Option<SocketAddr>,
) -> Result<Admitted, Response<Full<Bytes>>> {
    let m = &hub.inner.metrics;
    let refuse = |why: Rejection, status: StatusCode, reason: &str| {
        m.reject(why);
        debug!(?peer, %status, reason, "upgrade refused");
        let mut r = error(status, reason);
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        Err(r)
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
    let v1 = offers_v1(req);
    let topics = match topics_from_query(req.uri().query(), !v1) {
        Ok(t) => t,
        Err(reason) => return refuse(Rejection::BadRequest, StatusCode::BAD_REQUEST, &reason),
    };
    // The token before the embedder's hook, so that the hook sees verified claims.
    let verified = match hub.verifier() {
        None => None,
        Some(verifier) => match auth::token_of(req) {
            Err(reason) => return refuse(Rejection::BadRequest, StatusCode::BAD_REQUEST, reason),
            Ok(Some(token)) => match verifier.verify(&token) {
                Ok(verified) => Some(verified),
                Err(e) => {
                    let reason = format!("invalid token: {e}");
                    return refuse(Rejection::Unauthorized, StatusCode::UNAUTHORIZED, &reason);
                }
            },
            // A v1 client may bring its token in a `connect` command instead — as long
            // as nothing in the URL needs a grant before then.
            Ok(None) if v1 && topics.is_empty() => None,
            Ok(None) => {
                return refuse(
                    Rejection::Unauthorized,
                    StatusCode::UNAUTHORIZED,
                    "a token is required (?token= or Authorization: Bearer)",
                );
            }
        },
    };
    if let Some(v) = &verified
        && !topics.iter().all(|t| v.grant.may_subscribe(t))
    {
        return refuse(
            Rejection::Forbidden,
            StatusCode::FORBIDDEN,
            "the token does not grant every topic of the request",
        );
    }
    if let Some(admit) = &hub.inner.config.admit {
        let a = Admission {
            headers: req.headers(),
            query: req.uri().query(),
            peer,
            topics: &topics,
            subject: verified.as_ref().map(|v| &*v.grant.subject),
            claims: verified.as_ref().map(|v| &v.claims),
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
    let access = hub.verifier().map(|_| {
        Access::new(match verified {
            Some(v) => AccessState::Granted(v.grant),
            None => AccessState::Pending {
                until: Instant::now() + hub.config().handshake_timeout,
            },
        })
    });
    Ok(Admitted { topics, access })
}

/// Whether `req` is a WebSocket opening handshake this server can honour (RFC 6455
/// §4.2.1): a `GET` over HTTP/1.1 with exactly one `Host`, `Connection: Upgrade`, `Upgrade: websocket`,
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
    // RFC 6455 §4.2.1 item 2 and RFC 7230 §5.4: none, or two, is a 400 (hyper lets
    // both through, and the origin check compares against the first).
    let mut hosts = req.headers().get_all(hyper::header::HOST).iter();
    if hosts.next().is_none() || hosts.next().is_some() {
        return bad("a WebSocket handshake needs exactly one Host header");
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

/// What is behind an upgraded connection: the TCP stream, its TLS session if it has one,
/// and the bytes hyper already read past the handshake (the client's first frames may
/// be there — never drop them).
pub(crate) struct Taken {
    stream: TcpStream,
    tls: Option<ServerConnection>,
    read_buf: Bytes,
}

/// Takes an upgraded connection apart: a plain `TcpStream` or a tokio-rustls server
/// stream over one (anything else cannot be handed to a shard).
pub(crate) fn take_apart(upgraded: Upgraded) -> Option<Taken> {
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            return Some(Taken {
                stream: parts.io.into_inner(),
                tls: None,
                read_buf: parts.read_buf,
            });
        }
        Err(other) => other,
    };
    let parts = upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>().ok()?;
    let (stream, session) = parts.io.into_inner().into_inner();
    Some(Taken {
        stream,
        tls: Some(session),
        read_buf: parts.read_buf,
    })
}

/// The embedder's path: a hubcast [`Hub`] behind someone else's HTTP server.
impl Hub {
    /// Takes over a WebSocket upgrade request received by the embedder's own HTTP
    /// service (hyper or axum over a `tokio::net::TcpStream`): checks origin, admission
    /// and capacity, and returns the response to send — `101 Switching Protocols`, or an
    /// error status. After the response is sent, the connection moves to a shard.
    ///
    /// The connection must be served by hyper's HTTP/1 server directly on a
    /// `TokioIo<TcpStream>` (or a `TokioIo<tokio_rustls::server::TlsStream<TcpStream>>`:
    /// hubcast then encrypts for that client itself) with upgrades on (`examples/embed.rs` with hyper,
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
        let Admitted { topics, access } = match admit(
            self,
            &OriginPolicy::new(&self.config().allow_origins),
            req,
            peer,
        ) {
            Ok(a) => a,
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
                Ok(upgraded) => take_apart(upgraded)
                    .and_then(|t| Some((t.stream.into_std().ok()?, t.tls, t.read_buf))),
                Err(_) => None,
            };
            match adopted {
                Some((stream, tls, read_buf)) => {
                    hub.inner.shards[shard].hand_over(Incoming::Upgraded {
                        stream,
                        read_buf,
                        topics,
                        id,
                        negotiated,
                        access,
                        tls: tls.map(Box::new),
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
    let Admitted { topics, access } = match admit(hub, origins, &req, Some(peer)) {
        Ok(a) => a,
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
    let who = shard.register(hub.next_client_id(), &topics, negotiated, access);
    let shard = shard.clone();
    tokio::task::spawn_local(async move {
        match on_upgrade.await.ok().and_then(take_apart) {
            Some(Taken {
                stream,
                tls: None,
                read_buf,
            }) => shard.attach(who, Conn::plain(stream), read_buf),
            Some(Taken {
                stream,
                tls: Some(session),
                read_buf,
            }) => shard.attach(who, Conn::tls(stream, session), read_buf),
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
            .header("host", "127.0.0.1:8080")
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

    /// Found by the RFC 6455 property below: a handshake without `Host`, or with two,
    /// got a `101`.
    #[test]
    fn a_handshake_needs_exactly_one_host() {
        let v11 = hyper::Version::HTTP_11;
        let mut none = handshake(v11, &[KEY, V13]);
        none.headers_mut().remove("host");
        let mut two = handshake(v11, &[KEY, V13]);
        two.headers_mut()
            .append("host", HeaderValue::from_static("evil.example"));
        for req in [none, two] {
            let r = check_handshake(&req).expect_err("refused");
            assert_eq!(r.status(), 400);
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

    /// Property: `check_handshake` accepts exactly what RFC 6455 §4.2.1 (with RFC 7230
    /// §5.4 for `Host`) calls an opening handshake, and refuses everything else with the
    /// 400 of the first check that fails in the order of docs/protocol.md. The oracle is
    /// written from the RFCs, not from the code: its own token and base64 rules.
    mod rfc6455_property {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
        use futures_util::FutureExt as _;
        use http_body_util::BodyExt as _;
        use hyper::header::{HeaderName, HeaderValue};
        use hyper::{Method, Request, Version};
        use proptest::prelude::*;

        use super::super::check_handshake;

        /// A request head: method, version and header fields in order.
        #[derive(Clone)]
        struct Head {
            method: String,
            version: Version,
            headers: Vec<(String, Vec<u8>)>,
        }

        /// As the request would be written, so a failing case reads like one.
        impl std::fmt::Debug for Head {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} /ws {:?}", self.method, self.version)?;
                for (name, value) in &self.headers {
                    write!(f, " | {name}: {}", value.escape_ascii())?;
                }
                Ok(())
            }
        }

        const NOT_GET: &str = "a WebSocket handshake must be a GET request";
        const NOT_HTTP_11: &str = "a WebSocket handshake needs HTTP/1.1";
        const NO_HOST: &str = "a WebSocket handshake needs exactly one Host header";
        const NOT_UPGRADE: &str = "expected a WebSocket upgrade request";
        const BAD_VERSION: &str = "unsupported Sec-WebSocket-Version (this server speaks 13)";
        const BAD_KEY: &str = "Sec-WebSocket-Key must be the base64 of 16 bytes";

        /// RFC 4648's base64 alphabet, index = value.
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

        /// RFC 7230's optional whitespace around list elements.
        fn trim_ows(v: &[u8]) -> &[u8] {
            let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
            let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
            match (start, end) {
                (Some(s), Some(e)) => &v[s..=e],
                _ => &[],
            }
        }

        /// RFC 6455 §4.2.1 item 5: base64 (RFC 4648, canonical) of a 16-byte nonce —
        /// 21 characters, one whose low four bits are padding (zero), then `==`.
        fn is_nonce(key: &[u8]) -> bool {
            let sextet = |c: &u8| ALPHABET.iter().position(|a| a == c);
            key.len() == 24
                && key[..22].iter().all(|c| sextet(c).is_some())
                && sextet(&key[21]).is_some_and(|v| v & 0x0f == 0)
                && &key[22..] == b"=="
        }

        /// `None`: a valid handshake; otherwise the reason of the first failing check.
        fn oracle(h: &Head) -> Option<&'static str> {
            let values = |name: &str| -> Vec<&[u8]> {
                h.headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_slice())
                    .collect()
            };
            let has_token = |name: &str, token: &str| {
                values(name).iter().any(|v| {
                    v.split(|&b| b == b',')
                        .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
                })
            };
            if h.method != "GET" {
                Some(NOT_GET)
            } else if h.version != Version::HTTP_11 {
                Some(NOT_HTTP_11)
            } else if values("host").len() != 1 {
                Some(NO_HOST)
            } else if !(has_token("connection", "upgrade") && has_token("upgrade", "websocket")) {
                Some(NOT_UPGRADE)
            } else if values("sec-websocket-version") != [b"13"] {
                Some(BAD_VERSION)
            } else if !matches!(values("sec-websocket-key")[..], [key] if is_nonce(key)) {
                Some(BAD_KEY)
            } else {
                None
            }
        }

        fn request(h: &Head) -> Request<()> {
            let mut req = Request::new(());
            *req.method_mut() = Method::from_bytes(h.method.as_bytes()).expect("a token");
            *req.version_mut() = h.version;
            *req.uri_mut() = hyper::Uri::from_static("/ws");
            for (name, value) in &h.headers {
                req.headers_mut().append(
                    HeaderName::from_bytes(name.as_bytes()).expect("a token"),
                    HeaderValue::from_bytes(value).expect("a field value"),
                );
            }
            req
        }

        /// Any field value an HTTP parser hands over: no control characters but tab,
        /// obs-text allowed, no whitespace around it.
        fn junk() -> impl Strategy<Value = Vec<u8>> {
            let byte = prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff];
            prop::collection::vec(byte, 0..40).prop_map(|v| trim_ows(&v).to_vec())
        }

        /// A comma-separated list of `tokens`, with the separators clients write.
        fn list(tokens: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
            let sep = prop::sample::select(&[",", ", ", " , ", ",\t", ",,"][..]);
            prop::collection::vec((prop::sample::select(tokens), sep), 1..4).prop_map(|parts| {
                let mut v = Vec::new();
                for (i, (token, sep)) in parts.iter().enumerate() {
                    if i > 0 {
                        v.extend_from_slice(sep.as_bytes());
                    }
                    v.extend_from_slice(token.as_bytes());
                }
                v
            })
        }

        /// Keys: valid nonces, other lengths, no padding, one character changed, a
        /// non-canonical last character, base64-ish strings and junk.
        fn key() -> impl Strategy<Value = Vec<u8>> {
            let bytes = || prop::collection::vec(any::<u8>(), 0..40);
            prop_oneof![
                8 => any::<[u8; 16]>().prop_map(|n| STANDARD.encode(n).into_bytes()),
                2 => bytes().prop_map(|b| STANDARD.encode(b).into_bytes()),
                1 => bytes().prop_map(|b| STANDARD_NO_PAD.encode(b).into_bytes()),
                1 => (any::<[u8; 16]>(), 0usize..24, 0x21u8..=0x7e).prop_map(|(n, at, c)| {
                    let mut k = STANDARD.encode(n).into_bytes();
                    k[at] = c;
                    k
                }),
                1 => (any::<[u8; 16]>(), 1usize..16).prop_map(|(n, low)| {
                    let mut k = STANDARD.encode(n).into_bytes();
                    let high = ALPHABET.iter().position(|&a| a == k[21]).unwrap_or(0) & 0x30;
                    k[21] = ALPHABET[high | low];
                    k
                }),
                1 => "[A-Za-z0-9+/=]{0,30}".prop_map(String::into_bytes),
                1 => junk(),
            ]
        }

        /// `name` 0, 1 or 2 times (mostly once), each with a value from `value`.
        fn field(
            name: &'static str,
            value: impl Strategy<Value = Vec<u8>>,
        ) -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
            let times = prop_oneof![1 => Just(0usize), 14 => Just(1), 1 => Just(2)];
            (times, prop::collection::vec(value, 2)).prop_map(move |(n, values)| {
                values
                    .into_iter()
                    .take(n)
                    .map(|v| (name.to_owned(), v))
                    .collect()
            })
        }

        fn head() -> impl Strategy<Value = Head> {
            let method = prop_oneof![
                12 => Just("GET".to_owned()),
                1 => Just("get".to_owned()),
                1 => Just("POST".to_owned()),
                1 => "[A-Z]{1,7}",
            ];
            let version = prop_oneof![
                12 => Just(Version::HTTP_11),
                1 => Just(Version::HTTP_10),
                1 => Just(Version::HTTP_09),
                1 => Just(Version::HTTP_2),
                1 => Just(Version::HTTP_3),
            ];
            let host = prop_oneof![6 => Just(b"127.0.0.1:8080".to_vec()), 1 => junk()];
            let connection = prop_oneof![
                6 => Just(b"Upgrade".to_vec()),
                3 => list(&["Upgrade", "upgrade", "UPGRADE", "keep-alive", "close", "Upgrade2"]),
                1 => junk(),
            ];
            let upgrade = prop_oneof![
                6 => Just(b"websocket".to_vec()),
                3 => list(&["websocket", "WebSocket", "h2c", "websocket/13", "web socket"]),
                1 => junk(),
            ];
            let version_field = prop_oneof![
                8 => Just(b"13".to_vec()),
                2 => prop::sample::select(&["8", "13, 8", "013", "14", "1 3", "", "13,"][..])
                    .prop_map(|v| v.as_bytes().to_vec()),
                1 => junk(),
            ];
            let others = prop::collection::vec(
                (
                    prop_oneof![
                        Just("origin".to_owned()),
                        Just("sec-websocket-protocol".to_owned()),
                        "[a-z][a-z0-9-]{0,15}"
                    ],
                    junk(),
                ),
                0..3,
            );
            let headers = (
                field("host", host),
                field("connection", connection),
                field("upgrade", upgrade),
                field("sec-websocket-version", version_field),
                field("sec-websocket-key", key()),
                others,
            )
                .prop_map(|(a, b, c, d, e, f)| [a, b, c, d, e, f].concat())
                .prop_shuffle();
            (method, version, headers).prop_map(|(method, version, headers)| Head {
                method,
                version,
                headers,
            })
        }

        /// The generator reaches every verdict often, so the property is not decided
        /// by one branch.
        #[test]
        fn the_generator_reaches_every_verdict() {
            use proptest::strategy::ValueTree as _;
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let mut seen = std::collections::HashMap::new();
            for _ in 0..2000 {
                let h = head().new_tree(&mut runner).expect("a head").current();
                *seen.entry(oracle(&h)).or_insert(0) += 1;
            }
            let verdicts = [
                None,
                Some(NOT_GET),
                Some(NOT_HTTP_11),
                Some(NO_HOST),
                Some(NOT_UPGRADE),
                Some(BAD_VERSION),
                Some(BAD_KEY),
            ];
            for v in verdicts {
                assert!(seen.get(&v).copied().unwrap_or(0) >= 40, "{v:?}: {seen:?}");
            }
        }

        proptest! {
            #![proptest_config(crate::fuzzing::config(2000))]

            #[test]
            fn accepts_exactly_the_rfc_handshakes(h in head()) {
                let verdict = check_handshake(&request(&h));
                match (verdict, oracle(&h)) {
                    (Ok(()), None) => {}
                    (Err(resp), Some(reason)) => {
                        prop_assert_eq!(resp.status(), 400);
                        let version = resp.headers().get("sec-websocket-version");
                        prop_assert_eq!(version.is_some(), reason == BAD_VERSION);
                        let body = resp.into_body().collect().now_or_never();
                        let body = body.expect("a full body").expect("infallible").to_bytes();
                        prop_assert_eq!(String::from_utf8_lossy(&body), format!("{reason}\n"));
                    }
                    (Ok(()), Some(reason)) => prop_assert!(false, "accepted; the RFC says: {}", reason),
                    (Err(resp), None) => prop_assert!(false, "refused a valid handshake: {:?}", resp),
                }
            }
        }
    }
}
