//! The library path: an app's own hyper service hands upgrades to hubcast, and an
//! admission hook decides who may connect.

mod common;

use std::sync::Arc;

use hubcast::Refusal;
use hyper::StatusCode;

use common::*;

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
    let addr = embedding_app(server.hub.clone(), None).await;
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
