//! TLS: `https`/`wss` on a real server with a certificate the test makes itself —
//! clients ours and Python's, many messages of every size, pings, slow consumers, plain
//! HTTP on the TLS port, certificate reloads (API and SIGHUP), bad configuration.

mod common;

use std::time::Duration;

use common::python::python_chat_round;
use common::tls::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A server with TLS on, and its certificates.
fn start_tls(tweak: impl FnOnce(&mut hubcast::Config)) -> (TestServer, TestCerts, Issued) {
    let certs = TestCerts::new();
    let first = certs.install_new();
    let files = certs.files();
    let server = start(|c| {
        c.tls = Some(files);
        tweak(c);
    });
    (server, certs, first)
}

/// Message `i` of a test stream: mostly small, every 97th over 16 KiB (several TLS
/// records), its content derived from `i` so that any loss, reordering or corruption
/// shows.
fn message(i: usize) -> Vec<u8> {
    let len = if i.is_multiple_of(97) {
        16_385 + i % 30_000
    } else {
        i % 300
    };
    let mut m = format!("{i}:").into_bytes();
    m.extend((0..len).map(|j| b'a' + ((i + j) % 26) as u8));
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_and_wss_clients_get_every_message_in_order() {
    let (server, certs, _) = start_tls(|c| c.client_buffer = 64 << 20);
    let tls = certs.connector();
    let (status, body) = https(
        server.addr,
        &tls,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = https(
        server.addr,
        &tls,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("hubcast_tls_handshake_failures_total 0"),
        "{body}"
    );
    let (status, page) = https(
        server.addr,
        &tls,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "the demo page");

    // Two clients, on different shards (the acceptor deals round-robin).
    let mut a = wss_connect(server.addr, "?topic=t", &tls).await;
    let mut b = wss_connect(server.addr, "?topic=t", &tls).await;
    server.wait_connections(2).await;
    let (status, body) = https(
        server.addr,
        &tls,
        "POST /publish/t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 9\r\n\r\nover-http",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"recipients\":2"), "{body}");
    const N: usize = 10_000;
    let hub = server.hub.clone();
    let publisher = std::thread::spawn(move || {
        for i in 0..N {
            hub.publish_binary("t", &message(i)).expect("publish");
        }
    });
    for ws in [&mut a, &mut b] {
        assert_eq!(next_data(ws).await.as_deref(), Some(&b"over-http"[..]));
        for i in 0..N {
            let got = next_data(ws).await.expect("message");
            assert!(
                got == message(i),
                "message {i} differs ({} bytes)",
                got.len()
            );
        }
    }
    publisher.join().expect("publisher");
    // A client's message reaches the other one (reads go through rustls too), and a
    // clean close gets its echo.
    send_text(&mut a, "from a").await;
    assert_eq!(next_data(&mut b).await.as_deref(), Some(&b"from a"[..]));
    within(a.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    })))
    .await
    .expect("close");
    assert_eq!(close_code(&mut a).await, Some(1000));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_pongs_and_shutdown_over_tls() {
    let (server, certs, _) = start_tls(|c| c.ping_interval = Duration::from_millis(100));
    let mut ws = wss_connect(server.addr, "", &certs.connector()).await;
    // The server's ping arrives (tungstenite answers it by itself).
    within(async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => break,
                Some(Ok(_)) => continue,
                other => panic!("connection ended before a ping: {other:?}"),
            }
        }
    })
    .await;
    // Our ping gets a pong with the same payload.
    within(ws.send(Message::Ping(b"tls-ping"[..].into())))
        .await
        .expect("ping");
    within(async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(p))) => {
                    assert_eq!(&p[..], b"tls-ping");
                    break;
                }
                Some(Ok(_)) => continue,
                other => panic!("connection ended before the pong: {other:?}"),
            }
        }
    })
    .await;
    // Still a live client several ping intervals on: its pongs count as signs of life.
    server
        .hub
        .publish("default", "still here")
        .expect("publish");
    assert_eq!(
        next_data(&mut ws).await.as_deref(),
        Some(&b"still here"[..])
    );
    // Shutdown: the 1001 close comes through TLS like any frame.
    server.hub.shutdown();
    assert_eq!(close_code(&mut ws).await, Some(1001));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tls_consumer_is_closed_and_the_other_keeps_its_stream() {
    let (server, certs, _) = start_tls(|c| c.client_buffer = 256 << 10);
    let tls = certs.connector();
    // The slow one: a small receive buffer, and it reads nothing until the end.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8192).expect("rcvbuf");
    let tcp = within(socket.connect(server.addr)).await.expect("connect");
    let stream = within(tls.connect(
        tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name"),
        tcp,
    ))
    .await
    .expect("handshake");
    let url = format!("wss://localhost:{}/ws?topic=s", server.addr.port());
    let (mut slow, _) = within(tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade");
    let mut fast = wss_connect(server.addr, "?topic=s", &tls).await;
    server.wait_connections(2).await;
    const N: usize = 2_000;
    let payload = |i: usize| format!("{i:05}{}", "x".repeat(4096));
    // In lockstep with the fast client, at most 16 messages (64 KiB) ahead of it: it
    // stays far inside its budget however slow this machine is, while the slow one,
    // reading nothing, goes over.
    const AHEAD: usize = 16;
    for i in 0..N + AHEAD {
        if i < N {
            server.hub.publish("s", &payload(i)).expect("publish");
        }
        if let Some(j) = i.checked_sub(AHEAD) {
            let got = next_data(&mut fast)
                .await
                .expect("the fast client keeps its stream");
            assert!(got == payload(j).as_bytes(), "message {j} differs");
        }
    }
    server
        .wait_metric("hubcast_slow_consumer_closes_total", 1)
        .await;
    // What the slow one gets: the messages that fit before it fell behind, in order and
    // whole, then the slow-consumer close.
    let mut got = 0;
    let code = within(async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Text(t))) => {
                    assert_eq!(t.as_bytes(), payload(got).as_bytes(), "message {got}");
                    got += 1;
                }
                Some(Ok(Message::Close(Some(f)))) => return Some(u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await;
    assert_eq!(code, Some(1008), "after {got} messages");
    assert!(got < N, "the slow client cannot have had everything");
    server.stop();
}

/// Reads what the server sends until it closes (or resets) the connection.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    within(async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_plain_websockets_on_the_tls_port_fail_cleanly() {
    let (server, certs, _) = start_tls(|c| c.handshake_timeout = Duration::from_millis(500));
    let tls = certs.connector();
    let mut listening = wss_connect(server.addr, "?topic=p", &tls).await;

    // Plain HTTP: no HTTP answer, at most a TLS alert (content type 21), then the end.
    let mut s = within(TcpStream::connect(server.addr))
        .await
        .expect("connect");
    within(s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await
        .expect("write");
    let answer = read_until_closed(&mut s).await;
    assert!(
        answer.is_empty() || answer[0] == 21,
        "not a TLS alert: {:?}",
        String::from_utf8_lossy(&answer)
    );
    server
        .wait_metric("hubcast_tls_handshake_failures_total", 1)
        .await;

    // A plain ws:// upgrade fails in the client.
    let plain = within(tokio_tungstenite::connect_async(format!(
        "ws://{}/ws?topic=p",
        server.addr
    )))
    .await;
    assert!(plain.is_err(), "a plain upgrade must not succeed");
    server
        .wait_metric("hubcast_tls_handshake_failures_total", 2)
        .await;

    // A client that starts a handshake and stalls is dropped by the handshake timeout.
    let mut stalled = within(TcpStream::connect(server.addr))
        .await
        .expect("connect");
    within(stalled.write_all(&[22, 3, 1, 0, 200, 1]))
        .await
        .expect("half a ClientHello");
    read_until_closed(&mut stalled).await;
    server
        .wait_metric("hubcast_tls_handshake_failures_total", 3)
        .await;

    // Nobody else noticed.
    server.hub.publish("p", "unaffected").expect("publish");
    assert_eq!(
        next_data(&mut listening).await.as_deref(),
        Some(&b"unaffected"[..])
    );
    let mut fresh = wss_connect(server.addr, "?topic=p", &tls).await;
    server.wait_connections(2).await;
    server.hub.publish("p", "fresh").expect("publish");
    assert_eq!(next_data(&mut fresh).await.as_deref(), Some(&b"fresh"[..]));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_serves_the_new_certificate_to_new_connections_only() {
    let (server, certs, first) = start_tls(|_| {});
    let tls = certs.connector();
    let old = tls_connect(server.addr, &tls).await;
    assert!(served_cert(&old) == first.der, "the first certificate");
    let url = format!("wss://localhost:{}/ws?topic=r", server.addr.port());
    let (mut old_ws, _) = within(tokio_tungstenite::client_async(url, old))
        .await
        .expect("upgrade");

    let second = certs.install_new();
    assert_ne!(first.der, second.der);
    server.server().reload_tls().expect("reload");
    let new = tls_connect(server.addr, &tls).await;
    assert!(
        served_cert(&new) == second.der,
        "new handshakes get the new one"
    );
    assert!(
        server.server().tls_reload().expect("tls").chain()[0] == second.der,
        "the handle reports the certificate in use"
    );

    // The connection from before the reload goes on.
    server.wait_connections(1).await;
    server.hub.publish("r", "after reload").expect("publish");
    assert_eq!(
        next_data(&mut old_ws).await.as_deref(),
        Some(&b"after reload"[..])
    );

    // A bad file is refused and the certificate in use stays.
    std::fs::write(certs.files().cert, "not a certificate").expect("write");
    let err = server.server().reload_tls().expect_err("bad file");
    assert!(err.to_string().contains("server.crt"), "{err}");
    // A key that does not belong to the certificate, too.
    let third = certs.issue();
    std::fs::write(certs.files().cert, &third.cert_pem).expect("write");
    let err = server.server().reload_tls().expect_err("mismatched key");
    assert!(err.to_string().contains("does not belong to"), "{err}");
    let still = tls_connect(server.addr, &tls).await;
    assert!(
        served_cert(&still) == second.der,
        "the old pair stays in use"
    );
    assert_eq!(server.metric("hubcast_tls_reloads_total"), 1);
    assert_eq!(server.metric("hubcast_tls_reload_failures_total"), 2);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_its_certificate_on_sighup() {
    use rustix::process::{Pid, Signal, kill_process};
    let certs = TestCerts::new();
    let first = certs.install_new();
    let files = certs.files();
    let (cert, key) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
    );
    let (mut child, addr) = spawn_binary_with(&["--tls-cert", &cert, "--tls-key", &key]);
    let tls = certs.connector();
    let before = tls_connect(addr, &tls).await;
    assert!(served_cert(&before) == first.der);

    let second = certs.install_new();
    let pid = Pid::from_child(&child);
    kill_process(pid, Signal::HUP).expect("SIGHUP");
    // The reload happens on the binary's signal thread: wait until it is counted.
    let metrics = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    within(async {
        loop {
            let (_, body) = https(addr, &tls, metrics).await;
            if body.contains("hubcast_tls_reloads_total 1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let after = tls_connect(addr, &tls).await;
    assert!(
        served_cert(&after) == second.der,
        "SIGHUP reloaded the certificate"
    );

    kill_process(pid, Signal::TERM).expect("SIGTERM");
    let status = within(tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}

#[test]
fn bad_tls_configuration_is_refused_at_start() {
    let certs = TestCerts::new();
    let start_with = |files: hubcast::TlsFiles| {
        hubcast::Server::start(hubcast::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            shards: 1,
            tls: Some(files),
            ..hubcast::Config::default()
        })
        .map(|_| ())
        .expect_err("must not start")
        .to_string()
    };
    // Missing files.
    let err = start_with(certs.files());
    assert!(
        err.contains("cannot read the TLS certificate file") && err.contains("server.crt"),
        "{err}"
    );
    // A key that is not the certificate's.
    let one = certs.issue();
    let other = certs.issue();
    std::fs::write(certs.files().cert, &one.cert_pem).expect("write");
    std::fs::write(certs.files().key, &other.key_pem).expect("write");
    let err = start_with(certs.files());
    assert!(err.contains("does not belong to the certificate"), "{err}");
    // Not PEM at all.
    std::fs::write(certs.files().key, "garbage").expect("write");
    let err = start_with(certs.files());
    assert!(
        err.contains("TLS key file") && err.contains("server.key"),
        "{err}"
    );

    // The binary: only one of the two flags.
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hubcast"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("HUBCAST_TLS_CERT")
            .env_remove("HUBCAST_TLS_KEY")
            .output()
            .expect("run hubcast")
    };
    let cert = certs.files().cert.display().to_string();
    let out = run(&["--tls-cert", &cert]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-cert needs --tls-key"), "{stderr}");
    let out = run(&["--tls-key", &cert]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-key needs --tls-cert"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_over_wss_receives_and_publishes() {
    let (server, certs, _) = start_tls(|_| {});
    let mut rust_client = wss_connect(server.addr, "?topic=py", &certs.connector()).await;
    // Python checks the server's certificate against the test's CA (and 127.0.0.1).
    let ca = certs.ca_file().display().to_string();
    let url = format!("wss://127.0.0.1:{}/ws?topic=py", server.addr.port());
    python_chat_round(&server.hub, &url, &[&ca], "py", &mut rust_client).await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_right_behind_the_handshake_are_not_lost() {
    let (server, certs, _) = start_tls(|c| c.max_message_size = 1 << 20);
    let tls = certs.connector();
    // 12,000 bytes: request and frames fit one TLS record, which the server decrypts
    // whole while hyper takes only the first 8 KiB of it — the rest waits, decrypted, in
    // rustls with the socket drained (a reader that waits for the socket first hangs).
    // 200,000 bytes: many records, some still in the socket.
    for size in [12_000, 200_000] {
        burst_after_handshake(&server, &tls, size).await;
    }
    server.stop();
}

/// Request and frames in one write: hyper reads part of them with the request (its
/// `read_buf`), and rustls holds the rest, decrypted or not, when the shard takes over.
async fn burst_after_handshake(server: &TestServer, connector: &TlsConnector, size: usize) {
    let mut tls = tls_connect(server.addr, connector).await;
    let big: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut burst = upgrade_request(server.addr, "?topic=burst", "").into_bytes();
    burst.extend(client_frame(true, 0x1, b"first"));
    burst.extend(client_frame(true, 0x2, &big));
    burst.extend(client_frame(true, 0x1, b"last"));
    within(tls.write_all(&burst)).await.expect("write");
    // The response head, then the rest is WebSocket.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        within(tls.read_exact(&mut byte)).await.expect("response");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut ws = WebSocketStream::from_raw_socket(tls, Role::Client, None).await;
    // Chat: each message comes back to its sender, in order.
    for expected in [&b"first"[..], &big, b"last"] {
        let got = next_data(&mut ws).await;
        assert!(
            got.as_deref() == Some(expected),
            "size {size}: {:?} bytes",
            got.map(|g| g.len())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_own_tls_server_hands_upgrades_to_hubcast() {
    // hubcast itself without TLS: the app terminates TLS and hands the upgraded TLS
    // stream over; the shard then seals for that client itself.
    let server = start(|_| {});
    let certs = TestCerts::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config(&certs.issue()));
    let addr = embedding_app(server.hub.clone(), Some(acceptor)).await;
    let tls = certs.connector();
    let stream = tls_connect(addr, &tls).await;
    let url = format!("wss://localhost:{}/live?topic=app", addr.port());
    let (mut a, _) = within(tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade through the app");
    let mut b = connect(&server.url("?topic=app")).await;
    server.wait_connections(2).await;
    let big = "z".repeat(100_000);
    for m in ["to both", big.as_str()] {
        server.hub.publish("app", m).expect("publish");
        assert_eq!(next_data(&mut a).await.as_deref(), Some(m.as_bytes()));
        assert_eq!(next_data(&mut b).await.as_deref(), Some(m.as_bytes()));
    }
    send_text(&mut a, "from the app's TLS client").await;
    assert_eq!(
        next_data(&mut b).await.as_deref(),
        Some(&b"from the app's TLS client"[..])
    );
    server.stop();
}
