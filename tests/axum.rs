//! The axum example (`examples/axum.rs`) for real: its router on an ephemeral port,
//! a plain and a protocol v1 client upgraded through it, the app's own routes beside.

mod common;

#[allow(dead_code)]
#[path = "../examples/axum.rs"]
mod example;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_app_serves_its_routes_and_hands_upgrades_to_hubcast() {
    let server = start(|c| c.history_size = 100);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = example::app(server.hub.clone());
    tokio::spawn(example::serve(listener, app));
    let (status, body) = http(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "the app's own page\n"));

    let mut plain = connect(&format!("ws://{addr}/live?topic=news")).await;
    let mut req = format!("ws://{addr}/live")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "hubcast.v1".parse().expect("header"),
    );
    let (mut v1, resp) = within(tokio_tungstenite::connect_async(req))
        .await
        .expect("v1 connects");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "hubcast.v1");
    within(v1.send(Message::text(r#"{"id":1,"subscribe":{"topic":"news"}}"#)))
        .await
        .expect("send");
    let reply: serde_json::Value =
        serde_json::from_slice(&next_data(&mut v1).await.expect("reply")).expect("json");
    assert_eq!(reply["result"]["offset"], 0);
    server.wait_connections(2).await;

    let (status, body) = http(
        addr,
        &format!(
            "POST /news HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 8\r\n\r\nbreaking"
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("offset 1 "), "{body}");
    assert_eq!(
        next_data(&mut plain).await.as_deref(),
        Some(&b"breaking"[..])
    );
    let push: serde_json::Value =
        serde_json::from_slice(&next_data(&mut v1).await.expect("push")).expect("json");
    assert_eq!(
        push,
        serde_json::json!({"topic": "news", "offset": 1, "data": "breaking"})
    );
    server.stop();
}
