//! Protocol v1 clients for the tests: connect offering `hubcast.v1`, send JSON
//! commands, read replies and pushes.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{TestServer, Ws, next_data, within};

/// A v1 client: connects offering `hubcast.v1` and checks the server chose it.
pub async fn v1_connect(server: &TestServer, query: &str) -> Ws {
    v1_connect_to(&server.url(query)).await
}

/// [`v1_connect`] to any URL.
pub async fn v1_connect_to(url: &str) -> Ws {
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "hubcast.v1".parse().expect("header"),
    );
    let (ws, resp) = within(tokio_tungstenite::connect_async(req))
        .await
        .expect("connects");
    assert_eq!(resp.status(), 101);
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"hubcast.v1"[..])
    );
    ws
}

/// Sends one JSON text message.
pub async fn send(ws: &mut Ws, v: Value) {
    within(ws.send(Message::text(v.to_string())))
        .await
        .expect("send");
}

/// The next JSON message (replies and pushes), skipping pings.
pub async fn next_json(ws: &mut Ws) -> Value {
    let m = next_data(ws).await.expect("a message");
    serde_json::from_slice(&m).expect("JSON")
}

/// Sends a command and returns its reply (asserting the id), collecting pushes that
/// arrive before it into `pushes`.
pub async fn call(ws: &mut Ws, id: u64, command: Value, pushes: &mut Vec<Value>) -> Value {
    let mut v = command;
    v["id"] = json!(id);
    send(ws, v).await;
    loop {
        let m = next_json(ws).await;
        if m.get("id").is_some() {
            assert_eq!(m["id"], json!(id), "{m}");
            return m;
        }
        pushes.push(m);
    }
}

pub fn offset(v: &Value) -> u64 {
    v["offset"].as_u64().expect("offset")
}
