//! The library path: an app's own hyper service hands upgrades to hubcast, and an
//! admission hook decides who may connect.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hubcast::{Hub, Refusal};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;

use common::*;

/// The embedding app: its own listener, `/live` handed to hubcast.
async fn app(hub: Hub) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let hub = hub.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req| {
                    let hub = hub.clone();
                    async move {
                        Ok::<_, Infallible>(if req.uri().path() == "/live" {
                            hub.upgrade(&mut req, Some(peer))
                        } else {
                            Response::new(Full::new(Bytes::from_static(b"app")))
                        })
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_own_service_hands_upgrades_to_hubcast() {
    let server = start(|c| {
        c.admit = Some(Arc::new(|a: &hubcast::Admission<'_>| {
            if a.query.is_some_and(|q| q.contains("key=ok"))
                && a.peer.is_some_and(|p| p.ip().is_loopback())
            {
                Ok(())
            } else {
                Err(Refusal::new(StatusCode::UNAUTHORIZED, "key required"))
            }
        }))
    });
    let addr = app(server.hub.clone()).await;
    // Refused by the hook, with its status.
    let refused = upgrade_request(addr, "?topic=p", "").replace("/ws?", "/live?");
    assert_eq!(http_status(addr, &refused).await, 401);
    assert_eq!(
        server.metric("hubcast_rejected_upgrades_total{reason=\"admission\"}"),
        1
    );
    // The same hook guards hubcast's own listener.
    assert_eq!(
        http_status(server.addr, &upgrade_request(server.addr, "?topic=p", "")).await,
        401
    );

    let mut a = connect(&format!("ws://{addr}/live?topic=p&key=ok")).await;
    let mut b = connect(&server.url("?topic=p&key=ok")).await;
    server.wait_connections(2).await;
    server.hub.publish("p", "to both").expect("publish");
    assert_eq!(next_data(&mut a).await.as_deref(), Some(&b"to both"[..]));
    assert_eq!(next_data(&mut b).await.as_deref(), Some(&b"to both"[..]));
    // The handed-over client publishes like any other (chat).
    send_text(&mut a, "from the app's client").await;
    assert_eq!(
        next_data(&mut b).await.as_deref(),
        Some(&b"from the app's client"[..])
    );
    server.stop();
}
