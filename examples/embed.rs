//! Embedding hubcast as the broadcast tier of an existing app.
//!
//! The app serves its own HTTP with hyper on 127.0.0.1:3000. Its `/live` route hands
//! WebSocket upgrades to hubcast (which checks origin, capacity and the app's own
//! admission rule: an `x-api-key` header or `?key=` query), and a background task
//! publishes a price tick every 100 ms. Try it:
//!
//! ```text
//! cargo run --example embed
//! websocat 'ws://127.0.0.1:3000/live?topic=prices&key=demo'
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hubcast::{Admission, Config, Refusal, Server};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The app's admission rule: only holders of an API key may subscribe.
fn require_key(a: &Admission<'_>) -> Result<(), Refusal> {
    let header = a.headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let query = a
        .query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("key="));
    match header.or(query) {
        Some("demo") => Ok(()),
        _ => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "an API key is required",
        )),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // hubcast's own listener serves /metrics and /healthz; the app's clients come
    // through the app's port below.
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        admit: Some(Arc::new(require_key)),
        ..Config::default()
    };
    let server = Server::start(config)?;
    let hub = server.hub().clone();
    println!("hubcast metrics on http://{}/metrics", server.local_addr());

    let ticker = hub.clone();
    tokio::spawn(async move {
        let mut price = 100.0f64;
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            price += 0.01;
            let _ = ticker.publish("prices", &format!("{{\"price\":{price:.2}}}"));
        }
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("app on http://127.0.0.1:3000 (WebSocket: /live?topic=prices&key=demo)");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let hub = hub.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |mut req| {
                        let hub = hub.clone();
                        async move {
                            let resp = if req.uri().path() == "/live" {
                                hub.upgrade(&mut req, Some(peer))
                            } else {
                                Response::new(Full::new(Bytes::from_static(b"the app's own page\n")))
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades().await;
                });
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    server.shutdown();
    server.stopped().await?;
    Ok(())
}
