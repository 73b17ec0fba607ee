//! Plain HTTP endpoints and the handshake timeout.

mod common;

use std::time::Duration;

use tokio::io::AsyncReadExt;

use common::*;

fn get(addr: std::net::SocketAddr, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_demo_page() {
    let server = start(|_| {});
    let (status, body) = http(server.addr, &get(server.addr, "/healthz")).await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let _ws = connect(&server.url("?topic=m")).await;
    server.wait_connections(1).await;
    let (status, body) = http(server.addr, &get(server.addr, "/metrics")).await;
    assert_eq!(status, 200);
    assert!(body.contains("\nhubcast_connections 1\n"), "{body}");
    assert!(
        body.contains("hubcast_shard_connections{shard=\"1\"}"),
        "{body}"
    );
    let (status, page) = http(server.addr, &get(server.addr, "/")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("/hubcast.js") && page.contains("new Hubcast("),
        "the demo page runs on the browser client"
    );
    let (status, js) = http(server.addr, &get(server.addr, "/hubcast.js")).await;
    assert_eq!(status, 200);
    assert!(
        js.contains("new WebSocket(") && js.contains("hubcast.v1"),
        "the browser client speaks protocol v1"
    );
    let post =
        "POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(http_status(server.addr, post).await, 405);
    let put =
        "PUT /publish/t HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut s, put.as_bytes())
        .await
        .expect("write");
    let mut head = String::new();
    within(s.read_to_string(&mut head)).await.expect("read");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nallow: post\r\n"),
        "405 names the allowed method: {head}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_its_request_is_closed() {
    let server = start(|c| c.handshake_timeout = Duration::from_millis(200));
    let mut idle = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 512];
    // The server answers 408 or just closes; either way the socket ends.
    let ended = within(async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    ended.await;
    // Meanwhile the server is fine.
    let (status, _) = http(server.addr, &get(server.addr, "/healthz")).await;
    assert_eq!(status, 200);
    server.stop();
}
