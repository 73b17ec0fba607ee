//! HTTP: serves one accepted connection with hyper and routes its requests — over the
//! TCP stream itself, or over TLS once [`crate::edge::tls`] has run the handshake.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the demo page |
//! | `GET /hubcast.js` | the browser client for protocol v1 (used by the demo page) |
//! | `GET /ws` | WebSocket upgrade ([`crate::edge::upgrade`]) |
//! | `POST /publish/{topic}` | broadcast the body |
//! | `GET /healthz` | liveness (503 while shutting down) |
//! | `GET /metrics` | Prometheus counters |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as Body;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::edge::auth;
use crate::edge::origin::OriginPolicy;
use crate::edge::tls::Tls;
use crate::edge::upgrade;
use crate::engine::grant::Grant;
use crate::engine::hub::Hub;
use crate::engine::shard::Shard;
use crate::error::PublishError;
use crate::wire::frame::Opcode;

const PAGE: &str = include_str!("page.html");
const CLIENT_JS: &str = include_str!("hubcast.js");

/// How long `POST /publish` waits for room in a full shard inbox before answering 503.
const PUBLISH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves HTTP on an accepted connection, on the current shard: after a TLS handshake
/// (bounded by the handshake timeout) when `tls` is given.
pub(crate) fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    origins: Rc<OriginPolicy>,
    tls: Option<Arc<Tls>>,
) {
    tokio::task::spawn_local(async move {
        let Some(tls) = tls else {
            return serve_http(shard, stream, peer, origins).await;
        };
        let hub = &shard.hub;
        let timeout = hub.inner.config.handshake_timeout;
        if let Some(stream) = tls.accept(stream, peer, timeout, &hub.inner.metrics).await {
            serve_http(shard, stream, peer, origins).await;
        }
    });
}

/// hyper's HTTP/1 server over `io`, with upgrades.
async fn serve_http<I>(shard: Rc<Shard>, io: I, peer: SocketAddr, origins: Rc<OriginPolicy>)
where
    // `Send`: hyper's `Upgraded` may move between threads (ours never does).
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let timeout = shard.hub.inner.config.handshake_timeout;
    let svc = service_fn(move |req| {
        let shard = shard.clone();
        let origins = origins.clone();
        async move { Ok::<_, Infallible>(route(&shard, &origins, req, peer).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

async fn route(
    shard: &Rc<Shard>,
    origins: &OriginPolicy,
    req: Request<Body>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let hub = &shard.hub;
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/ws") => upgrade::on_shard(shard, origins, req, peer),
        (&Method::GET, "/") => with_type(
            Response::new(Full::new(Bytes::from_static(PAGE.as_bytes()))),
            "text/html; charset=utf-8",
        ),
        (&Method::GET, "/hubcast.js") => with_type(
            Response::new(Full::new(Bytes::from_static(CLIENT_JS.as_bytes()))),
            "text/javascript; charset=utf-8",
        ),
        (&Method::GET, "/healthz") if hub.is_shutting_down() => {
            upgrade::error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        }
        (&Method::GET, "/healthz") => match hub.backplane() {
            // Still 200 with the broker down: this node serves its own clients, and a
            // broker outage is shared by every node — failing them all would take the
            // whole service down for what is only a loss of cross-node traffic.
            Some(b) => upgrade::error(StatusCode::OK, &format!("ok (cluster: {})", b.status())),
            None => upgrade::error(StatusCode::OK, "ok"),
        },
        (&Method::GET, "/metrics") => with_type(
            Response::new(Full::new(Bytes::from(hub.metrics_text()))),
            "text/plain; version=0.0.4",
        ),
        (&Method::POST, p) if p.starts_with("/publish/") => publish(hub, req).await,
        (&Method::GET, "/topics") => json(
            StatusCode::OK,
            serde_json::json!({
                "topics": hub
                    .topics()
                    .into_iter()
                    .map(|(topic, subscribers)| serde_json::json!({
                        "topic": topic,
                        "subscribers": subscribers,
                    }))
                    .collect::<Vec<_>>(),
            }),
        ),
        (&Method::GET, p) if p.starts_with("/topics/") => topic_info(hub, &p["/topics/".len()..]),
        (_, "/ws" | "/" | "/hubcast.js" | "/healthz" | "/metrics" | "/topics") => {
            not_allowed("GET")
        }
        (_, p) if p.starts_with("/topics/") => not_allowed("GET"),
        (_, p) if p.starts_with("/publish/") => not_allowed("POST"),
        _ => upgrade::error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = upgrade::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn with_type(mut r: Response<Full<Bytes>>, ty: &'static str) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ty));
    r
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = with_type(
        Response::new(Full::new(Bytes::from(value.to_string()))),
        "application/json",
    );
    *r.status_mut() = status;
    r
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }))
}

/// `GET /topics/{topic}`: subscribers in the whole cluster and on this node, and the
/// topic's position (offset 0 and no epoch for a topic never published or subscribed to
/// — a read never creates one).
fn topic_info(hub: &Hub, raw: &str) -> Response<Full<Bytes>> {
    let topic = match upgrade::decode_topic(raw) {
        Ok(t) => t,
        Err(reason) => return json_error(StatusCode::BAD_REQUEST, &reason),
    };
    let position = hub.history().peek(&topic);
    json(
        StatusCode::OK,
        serde_json::json!({
            "topic": topic,
            "subscribers": hub.presence(&topic),
            "local_subscribers": hub.subscribers(&topic),
            "offset": position.as_ref().map_or(0, |p| p.offset),
            "epoch": position.map(|p| p.epoch),
        }),
    )
}

/// Whether a `Content-Type` is `application/octet-stream` (any case, any parameters).
fn is_octet_stream(ct: &[u8]) -> bool {
    let essence = ct.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/octet-stream")
}

/// Compares secrets without leaking, through timing, how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who may publish over HTTP, as the request's bearer token shows.
enum Publisher {
    /// No credential is configured, or the static publish token matched: any topic.
    Anyone,
    /// A JWT: the topics its `publish` claim grants.
    Granted(Grant),
}

/// Checks the bearer token of `POST /publish`: the static publish token, or — with auth
/// configured — a JWT. Without either configured, anyone may publish. `None`: refused.
fn publisher(hub: &Hub, req: &Request<Body>) -> Option<Publisher> {
    let cfg = hub.config();
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer);
    let verifier = hub.verifier();
    if cfg.publish_token.is_none() && verifier.is_none() {
        return Some(Publisher::Anyone);
    }
    let given = given?;
    if let Some(token) = &cfg.publish_token
        && same_secret(given.as_bytes(), token.as_bytes())
    {
        return Some(Publisher::Anyone);
    }
    let verified = verifier?.verify(given).ok()?;
    Some(Publisher::Granted(verified.grant))
}

/// `POST /publish/{topic}`: the body becomes one message (binary when the content type
/// is `application/octet-stream`, text otherwise).
async fn publish(hub: &Hub, req: Request<Body>) -> Response<Full<Bytes>> {
    let cfg = hub.config();
    let Some(publisher) = publisher(hub, &req) else {
        let mut r = json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return r;
    };
    let topic = match upgrade::decode_topic(&req.uri().path()["/publish/".len()..]) {
        Ok(t) => t,
        Err(reason) => return json_error(StatusCode::BAD_REQUEST, &reason),
    };
    // Over HTTP there is no subscription and no mode: only a `publish` claim grants.
    if let Publisher::Granted(grant) = &publisher
        && !grant.publish.as_ref().is_some_and(|p| p.allows(&topic))
    {
        return json_error(
            StatusCode::FORBIDDEN,
            "the token does not allow publishing to this topic",
        );
    }
    let binary = req
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| is_octet_stream(v.as_bytes()));
    let limit = cfg.max_message_size;
    // A body trickling in a byte at a time would hold the connection (and its buffer)
    // open forever: the whole body gets one deadline.
    let collected = tokio::time::timeout(
        cfg.body_timeout,
        Limited::new(req.into_body(), limit).collect(),
    )
    .await;
    let body = match collected {
        Err(_) => {
            let mut r = json_error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "request body not received within {} s",
                    cfg.body_timeout.as_secs_f64()
                ),
            );
            r.headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("message exceeds {limit} bytes"),
            );
        }
        Ok(Err(_)) => {
            return json_error(StatusCode::BAD_REQUEST, "could not read the request body");
        }
    };
    let opcode = if binary { Opcode::Binary } else { Opcode::Text };
    if !binary && simdutf8::basic::from_utf8(&body).is_err() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "body is not valid UTF-8 (send binary as application/octet-stream)",
        );
    }
    match hub
        .publish_message_wait(&topic, opcode, &body, PUBLISH_PATIENCE)
        .await
    {
        Ok(r) => json(
            StatusCode::OK,
            serde_json::json!({
                "topic": topic,
                "recipients": r.recipients,
                "offset": r.offset,
                "epoch": &*r.epoch,
            }),
        ),
        Err(e @ PublishError::InvalidTopic) => json_error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e @ PublishError::TooLarge { .. }) => {
            json_error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())
        }
        Err(
            e @ (PublishError::Overloaded { .. }
            | PublishError::ShuttingDown
            | PublishError::Unavailable),
        ) => {
            let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }

    #[test]
    fn octet_stream_is_matched_on_its_essence() {
        use super::is_octet_stream;
        assert!(is_octet_stream(b"application/octet-stream"));
        assert!(is_octet_stream(b"Application/Octet-Stream; charset=binary"));
        assert!(!is_octet_stream(b"application/octet-streamx"));
        assert!(!is_octet_stream(b"text/plain"));
    }
}
