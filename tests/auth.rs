//! Per-connection auth with JWT, over real sockets: tokens made here with
//! `jsonwebtoken`, a real server on an ephemeral loopback port, real WebSocket clients.
//!
//! Refusals before the upgrade (401, 403), grants on v1 commands (103) and chat
//! messages (1008), the v1 `connect` flow and its deadline (4408), expiry (4401) and
//! `refresh`, `POST /publish` with a JWT, and the admission hook after the token. In
//! every case a valid client on the same topic — the bystander — keeps its stream.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::v1::*;
use common::*;
use futures_util::SinkExt;
use hubcast::{Admission, Refusal};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The HS256 secret of the test servers (test only).
const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";

/// A PEM file under `tests/keys/` (test-only keys, see the README there).
fn key(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// A token signed with `alg` and `key`.
fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("token")
}

/// An HS256 token signed with the servers' secret.
fn token(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &claims,
    )
}

/// Claims for `sub`, valid for an hour, granting `topics`.
fn claims(sub: &str, topics: &[&str]) -> Value {
    json!({"sub": sub, "exp": now() + 3600, "topics": topics})
}

fn hs_server() -> TestServer {
    start(|c| c.jwt_secret = Some(SECRET.into()))
}

/// Tries an upgrade: the status (101, or the refusal's) and the refusal's body.
async fn try_upgrade(server: &TestServer, query: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = server.url(query).into_client_request().expect("request");
    for (name, value) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    match within(tokio_tungstenite::connect_async(req)).await {
        Ok((_ws, resp)) => (resp.status().as_u16(), String::new()),
        Err(WsError::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            (
                resp.status().as_u16(),
                String::from_utf8_lossy(body).into_owned(),
            )
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// A valid plain client of `topic`: whatever the others do, its stream must go on.
async fn bystander(server: &TestServer, topic: &str) -> Ws {
    let t = token(claims("bystander", &[topic]));
    connect(&server.url(&format!("?topic={topic}&token={t}"))).await
}

/// Publishes a fresh message to `topic` and checks the bystander gets exactly it next.
async fn still_streams(server: &TestServer, bystander: &mut Ws, topic: &str, text: &str) {
    server.hub.publish(topic, text).expect("publish");
    assert_eq!(
        next_data(bystander).await.as_deref(),
        Some(text.as_bytes()),
        "the bystander keeps its stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_without_a_valid_token_get_401() {
    let server = start(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.jwt_audience = Some("hubcast".into());
        c.jwt_issuer = Some("https://auth.example".into());
    });
    let good = |extra: Value| {
        let mut c = json!({
            "sub": "alice", "exp": now() + 3600, "topics": ["news"],
            "aud": "hubcast", "iss": "https://auth.example"
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    };
    let t = token(good(json!({})));
    let mut by = connect(&server.url(&format!("?topic=news&token={t}"))).await;
    let (status, _) = try_upgrade(
        &server,
        "?topic=news",
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(status, 101, "a token in the Authorization header");

    let other_secret = EncodingKey::from_secret(b"another-secret-0123456789abcdef-xyz");
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good(json!({})).to_string())
    );
    let cases = [
        ("no token", None),
        ("not a JWT", Some("hello".to_owned())),
        (
            "bad signature",
            Some(sign(Algorithm::HS256, &other_secret, &good(json!({})))),
        ),
        ("alg none", Some(alg_none)),
        (
            "HS512 instead of HS256",
            Some(sign(
                Algorithm::HS512,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                &good(json!({})),
            )),
        ),
        ("expired", Some(token(good(json!({"exp": now() - 10}))))),
        ("no exp", Some(token(good(json!({"exp": null}))))),
        ("no sub", Some(token(good(json!({"sub": null}))))),
        (
            "not yet valid",
            Some(token(good(json!({"nbf": now() + 600})))),
        ),
        (
            "wrong audience",
            Some(token(good(json!({"aud": "someone-else"})))),
        ),
        ("no audience", Some(token(good(json!({"aud": null}))))),
        (
            "wrong issuer",
            Some(token(good(json!({"iss": "https://evil.example"})))),
        ),
        (
            "topics not a list",
            Some(token(good(json!({"topics": "news"})))),
        ),
    ];
    let rejected_before = server.metric("hubcast_rejected_upgrades_total{reason=\"unauthorized\"}");
    for (what, bad) in &cases {
        let query = match bad {
            Some(t) => format!("?topic=news&token={t}"),
            None => "?topic=news".to_owned(),
        };
        let (status, body) = try_upgrade(&server, &query, &[]).await;
        assert_eq!(status, 401, "{what}: {body}");
        if let Some(t) = bad {
            assert!(
                !body.contains(t.as_str()),
                "{what}: the body never quotes the token"
            );
        }
    }
    assert_eq!(
        server.metric("hubcast_rejected_upgrades_total{reason=\"unauthorized\"}"),
        rejected_before + cases.len() as u64
    );
    // A v1 client may leave its token for `connect`, but not while naming topics.
    let (status, _) = try_upgrade(
        &server,
        "?topic=news",
        &[("sec-websocket-protocol", "hubcast.v1")],
    )
    .await;
    assert_eq!(
        status, 401,
        "v1 with URL topics needs its token in the upgrade"
    );
    still_streams(&server, &mut by, "news", "after the refusals").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_server_refuses_the_hs_confusion() {
    let server = start(|c| c.jwt_public_key = Some(key("rsa_public.pem")));
    let private = std::fs::read(key("rsa_private.pem")).expect("key");
    let public = std::fs::read(key("rsa_public.pem")).expect("key");
    let rs = EncodingKey::from_rsa_pem(&private).expect("RSA key");
    let t = sign(Algorithm::RS256, &rs, &claims("alice", &["news"]));
    let mut by = connect(&server.url(&format!("?topic=news&token={t}"))).await;
    // HS256 "signed" with the public key's PEM bytes as the HMAC secret: what a server
    // that let the token pick its algorithm would accept.
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&public),
        &claims("mallory", &["news"]),
    );
    let (status, body) = try_upgrade(&server, &format!("?topic=news&token={forged}"), &[]).await;
    assert_eq!(status, 401, "{body}");
    let ps = sign(Algorithm::PS256, &rs, &claims("alice", &["news"]));
    let (status, _) = try_upgrade(&server, &format!("?topic=news&token={ps}"), &[]).await;
    assert_eq!(
        status, 401,
        "the key's family is not enough: the algorithm is pinned"
    );
    still_streams(&server, &mut by, "news", "RS256 only").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_server_takes_es256_only() {
    let server = start(|c| c.jwt_public_key = Some(key("ec_public.pem")));
    let ec = EncodingKey::from_ec_pem(&std::fs::read(key("ec_private.pem")).expect("key"))
        .expect("EC key");
    let t = sign(Algorithm::ES256, &ec, &claims("alice", &["news"]));
    let mut by = connect(&server.url(&format!("?topic=news&token={t}"))).await;
    let rs = EncodingKey::from_rsa_pem(&std::fs::read(key("rsa_private.pem")).expect("key"))
        .expect("RSA key");
    let wrong = sign(Algorithm::RS256, &rs, &claims("alice", &["news"]));
    let (status, _) = try_upgrade(&server, &format!("?topic=news&token={wrong}"), &[]).await;
    assert_eq!(status, 401);
    still_streams(&server, &mut by, "news", "ES256 only").await;
    server.stop();
}

#[test]
fn a_key_that_cannot_verify_stops_the_start() {
    for (file, expected) in [
        ("rsa_private.pem", "private key"),
        ("missing.pem", "cannot read"),
    ] {
        let config = hubcast::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            jwt_public_key: Some(key(file)),
            ..hubcast::Config::default()
        };
        let err = hubcast::Server::start(config)
            .expect_err("refused")
            .to_string();
        assert!(err.contains(expected), "{file}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_time_topics_outside_the_grant_get_403() {
    let server = hs_server();
    let mut by = bystander(&server, "secret").await;
    let t = token(claims("alice", &["news", "prices.*"]));
    for query in [
        "topic=prices.EURUSD&topic=secret",
        "topic=prices",
        "topic=pricesEURUSD",
        "",
    ] {
        let (status, body) = try_upgrade(&server, &format!("?{query}&token={t}"), &[]).await;
        assert_eq!(status, 403, "{query:?} (no topic is `default`): {body}");
    }
    assert_eq!(
        server.metric("hubcast_rejected_upgrades_total{reason=\"forbidden\"}"),
        4
    );
    let (status, _) = try_upgrade(
        &server,
        &format!("?topic=prices.fx.EURUSD&topic=news&token={t}"),
        &[],
    )
    .await;
    assert_eq!(status, 101, "exact names and prefix wildcards at any depth");
    still_streams(&server, &mut by, "secret", "still secret").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_commands_outside_the_grant_get_103() {
    let server = hs_server();
    let mut by = bystander(&server, "secret").await;
    let t = token(claims("alice", &["news", "prices.*"]));
    let mut c = v1_connect(&server, &format!("?token={t}")).await;
    let mut pushes = Vec::new();
    for (id, command) in [
        (1, json!({"subscribe": {"topic": "secret"}})),
        (2, json!({"subscribe": {"topic": "prices"}})),
        (3, json!({"presence": {"topic": "secret"}})),
    ] {
        let r = call(&mut c, id, command, &mut pushes).await;
        assert_eq!(r["error"]["code"], 103, "{r}");
    }
    let r = call(
        &mut c,
        4,
        json!({"subscribe": {"topic": "prices.EURUSD"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(
        r["result"]["topic"], "prices.EURUSD",
        "the connection stays: {r}"
    );
    still_streams(&server, &mut by, "secret", "not for alice").await;
    server
        .hub
        .publish("prices.EURUSD", "1.08")
        .expect("publish");
    assert_eq!(next_json(&mut c).await["data"], json!(1.08));
    assert!(
        pushes.is_empty(),
        "nothing of `secret` reached alice: {pushes:?}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_outside_the_grant_is_refused() {
    let server = hs_server();
    let mut by = bystander(&server, "news").await;
    let mut pushes = Vec::new();
    // With a `publish` claim, its patterns decide, subscribed or not.
    let t = token(json!({
        "sub": "alice", "exp": now() + 3600, "topics": ["news", "chat.*"], "publish": ["chat.*"]
    }));
    let mut alice = v1_connect(&server, &format!("?token={t}")).await;
    let r = call(
        &mut alice,
        1,
        json!({"subscribe": {"topic": "news"}}),
        &mut pushes,
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
    let r = call(
        &mut alice,
        2,
        json!({"publish": {"topic": "news", "data": "x"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = call(
        &mut alice,
        3,
        json!({"publish": {"topic": "chat.room", "data": "hi"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["result"]["topic"], "chat.room", "{r}");
    // Without one, in chat mode: the topics the client is subscribed to.
    let t = token(claims("bob", &["news", "sports"]));
    let mut bob = v1_connect(&server, &format!("?token={t}&topic=news")).await;
    let r = call(
        &mut bob,
        1,
        json!({"publish": {"topic": "sports", "data": "x"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "granted but not subscribed: {r}");
    let r = call(
        &mut bob,
        2,
        json!({"publish": {"topic": "news", "data": "from bob"}}),
        &mut pushes,
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
    assert_eq!(
        next_data(&mut by).await.as_deref(),
        Some(&br#""from bob""#[..])
    );
    // A plain client whose publish grant misses its topic: closed with 1008 and a
    // reason, its message never delivered.
    let t = token(json!({
        "sub": "carol", "exp": now() + 3600, "topics": ["news"], "publish": ["chat.*"]
    }));
    let mut carol = connect(&server.url(&format!("?topic=news&token={t}"))).await;
    within(carol.send(Message::text("carol was here")))
        .await
        .expect("send");
    assert_eq!(close_code(&mut carol).await, Some(1008));
    still_streams(&server, &mut by, "news", "only this").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_mode_publishes_only_with_a_publish_claim() {
    let server = start(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.feed = true;
    });
    let mut by = bystander(&server, "news").await;
    let mut pushes = Vec::new();
    let t = token(claims("reader", &["news"]));
    let mut reader = v1_connect(&server, &format!("?token={t}&topic=news")).await;
    let r = call(
        &mut reader,
        1,
        json!({"publish": {"topic": "news", "data": 1}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let t = token(json!({"sub": "editor", "exp": now() + 3600, "publish": ["news"]}));
    let mut editor = v1_connect(&server, &format!("?token={t}")).await;
    let r = call(
        &mut editor,
        1,
        json!({"publish": {"topic": "news", "data": 2}}),
        &mut pushes,
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
    assert_eq!(next_data(&mut by).await.as_deref(), Some(&b"2"[..]));
    // A plain client with a publish claim covering its topic may speak too.
    let t = token(json!({
        "sub": "anchor", "exp": now() + 3600, "topics": ["news"], "publish": ["news"]
    }));
    let mut anchor = connect(&server.url(&format!("?topic=news&token={t}"))).await;
    send_text(&mut anchor, "breaking").await;
    assert_eq!(next_data(&mut by).await.as_deref(), Some(&b"breaking"[..]));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_clients_can_connect_with_a_command() {
    let server = hs_server();
    let mut by = bystander(&server, "news").await;
    let mut pushes = Vec::new();
    let mut c = v1_connect(&server, "").await;
    let r = call(
        &mut c,
        1,
        json!({"subscribe": {"topic": "news"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 110, "connect first: {r}");
    let r = call(
        &mut c,
        2,
        json!({"presence": {"topic": "news"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 110, "{r}");
    let r = call(
        &mut c,
        3,
        json!({"refresh": {"token": token(claims("alice", &["news"]))}}),
        &mut pushes,
    )
    .await;
    assert_eq!(
        r["error"]["code"], 110,
        "refresh needs a connection first: {r}"
    );
    let expired = token(json!({"sub": "alice", "exp": now() - 10, "topics": ["news"]}));
    let r = call(
        &mut c,
        4,
        json!({"connect": {"token": expired}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 111, "{r}");
    assert_eq!(r["error"]["message"], "token expired");
    let exp = now() + 3600;
    let good = token(json!({"sub": "alice", "exp": exp, "topics": ["news"]}));
    let r = call(&mut c, 5, json!({"connect": {"token": good}}), &mut pushes).await;
    assert_eq!(r["result"], json!({"sub": "alice", "exp": exp}), "{r}");
    let r = call(&mut c, 6, json!({"connect": {"token": good}}), &mut pushes).await;
    assert_eq!(r["error"]["code"], 100, "already connected: {r}");
    let r = call(
        &mut c,
        7,
        json!({"subscribe": {"topic": "secret"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = call(
        &mut c,
        8,
        json!({"subscribe": {"topic": "news"}}),
        &mut pushes,
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
    still_streams(&server, &mut by, "news", "both").await;
    assert_eq!(next_json(&mut c).await["data"], "both");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_clients_that_never_connect_are_closed_at_the_deadline() {
    let server = start(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.handshake_timeout = Duration::from_secs(1);
    });
    let mut by = bystander(&server, "news").await;
    let mut idle = v1_connect(&server, "").await;
    let mut pushes = Vec::new();
    let mut trying = v1_connect(&server, "").await;
    let r = call(
        &mut trying,
        1,
        json!({"connect": {"token": "not.a.jwt"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 111, "{r}");
    assert_eq!(close_code(&mut idle).await, Some(4408));
    assert_eq!(close_code(&mut trying).await, Some(4408));
    assert_eq!(server.metric("hubcast_auth_closes_total"), 2);
    still_streams(&server, &mut by, "news", "unbothered").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_refresh_the_connection_closes_at_exp() {
    let server = hs_server();
    let mut by = bystander(&server, "news").await;
    let exp = now() + 2;
    let t = token(json!({"sub": "alice", "exp": exp, "topics": ["news"]}));
    let mut plain = connect(&server.url(&format!("?topic=news&token={t}"))).await;
    let mut v1 = v1_connect(&server, &format!("?topic=news&token={t}")).await;
    for ws in [&mut plain, &mut v1] {
        assert_eq!(close_code(ws).await, Some(4401));
        // Not before `exp` (a small margin for the clocks' rounding).
        assert!(now_f64() >= exp as f64 - 0.05, "closed early");
    }
    assert_eq!(server.metric("hubcast_auth_closes_total"), 2);
    still_streams(&server, &mut by, "news", "the bystander's token is good").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_before_exp_keeps_the_connection() {
    let server = hs_server();
    let mut by = bystander(&server, "news").await;
    let t0 = now();
    let first = token(json!({"sub": "alice", "exp": t0 + 2, "topics": ["news"]}));
    let mut alice = v1_connect(&server, &format!("?topic=news&token={first}")).await;
    let mut pushes = Vec::new();
    let later = t0 + 3600;
    let second = token(json!({"sub": "alice", "exp": later, "topics": ["news"]}));
    let r = call(
        &mut alice,
        1,
        json!({"refresh": {"token": second}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["result"], json!({"sub": "alice", "exp": later}), "{r}");
    // A witness whose token expires a second after alice's first one: its close says
    // that alice's first `exp` has passed by then.
    let witness_token = token(json!({"sub": "witness", "exp": t0 + 3, "topics": ["news"]}));
    let mut witness = connect(&server.url(&format!("?topic=news&token={witness_token}"))).await;
    assert_eq!(close_code(&mut witness).await, Some(4401));
    server
        .hub
        .publish("news", "past the first exp")
        .expect("publish");
    assert_eq!(
        next_json(&mut alice).await["data"],
        "past the first exp",
        "alice is still connected"
    );
    assert_eq!(
        next_data(&mut by).await.as_deref(),
        Some(&b"past the first exp"[..])
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_with_bad_tokens_are_refused() {
    let server = hs_server();
    let mut by = bystander(&server, "news").await;
    let exp = now() + 3600;
    let t = token(json!({"sub": "alice", "exp": exp, "topics": ["news", "sports"]}));
    let mut alice = v1_connect(&server, &format!("?topic=news&token={t}")).await;
    let mut pushes = Vec::new();
    let cases = [
        (
            token(json!({"sub": "alice", "exp": now() - 10, "topics": ["news"]})),
            111,
            "token expired",
        ),
        (
            token(json!({"sub": "mallory", "exp": exp, "topics": ["news"]})),
            111,
            "token is for another subject",
        ),
        ("garbage".to_owned(), 111, "malformed token"),
        (
            token(json!({"sub": "alice", "exp": exp, "topics": ["sports"]})),
            103,
            "the new token does not grant every subscribed topic",
        ),
    ];
    for (id, (bad, code, message)) in cases.into_iter().enumerate() {
        let r = call(
            &mut alice,
            id as u64 + 1,
            json!({"refresh": {"token": bad}}),
            &mut pushes,
        )
        .await;
        assert_eq!(
            (r["error"]["code"].as_u64(), r["error"]["message"].as_str()),
            (Some(code), Some(message)),
            "{r}"
        );
    }
    // Still connected with the old token's grant: sports is allowed, secret is not.
    let r = call(
        &mut alice,
        9,
        json!({"subscribe": {"topic": "secret"}}),
        &mut pushes,
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    still_streams(&server, &mut by, "news", "after the bad refreshes").await;
    assert_eq!(
        next_json(&mut alice).await["data"],
        "after the bad refreshes"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_publish_takes_a_jwt_with_a_publish_grant() {
    let server = start(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.publish_token = Some("static-token".into());
    });
    let mut by = bystander(&server, "news").await;
    let publisher = token(json!({"sub": "backend", "exp": now() + 3600, "publish": ["news"]}));
    let (status, body) = http_publish(server.addr, "news", "via jwt", Some(&publisher)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(next_data(&mut by).await.as_deref(), Some(&b"via jwt"[..]));
    let (status, _) = http_publish(server.addr, "news", "via static", Some("static-token")).await;
    assert_eq!(status, 200, "the static token still works");
    assert_eq!(
        next_data(&mut by).await.as_deref(),
        Some(&b"via static"[..])
    );
    let reader = token(claims("reader", &["news"]));
    for (what, t, topic, expected) in [
        ("no publish claim", Some(reader.as_str()), "news", 403),
        ("another topic", Some(publisher.as_str()), "sports", 403),
        ("no token", None, "news", 401),
        ("not a token", Some("nope"), "news", 401),
    ] {
        let (status, body) = http_publish(server.addr, topic, "refused", t).await;
        assert_eq!(status, expected, "{what}: {body}");
    }
    still_streams(&server, &mut by, "news", "nothing refused got through").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_hook_sees_the_verified_token() {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let record = seen.clone();
    let server = start(move |c| {
        c.jwt_secret = Some(SECRET.into());
        c.admit = Some(Arc::new(move |a: &Admission<'_>| {
            if let Ok(mut seen) = record.lock() {
                seen.push(a.subject.map(str::to_owned));
            }
            match a.claims.map(|c| &c["plan"]) {
                Some(plan) if plan != "gold" => Err(Refusal::new(
                    hyper::StatusCode::PAYMENT_REQUIRED,
                    "gold plan only",
                )),
                _ => Ok(()),
            }
        }));
    });
    let gold =
        token(json!({"sub": "alice", "exp": now() + 3600, "topics": ["news"], "plan": "gold"}));
    let free =
        token(json!({"sub": "bob", "exp": now() + 3600, "topics": ["news"], "plan": "free"}));
    let (status, _) = try_upgrade(&server, &format!("?topic=news&token={gold}"), &[]).await;
    assert_eq!(status, 101);
    let (status, body) = try_upgrade(&server, &format!("?topic=news&token={free}"), &[]).await;
    assert_eq!((status, body.trim()), (402, "gold plan only"));
    let (status, _) = try_upgrade(&server, "?topic=news&token=forged", &[]).await;
    assert_eq!(status, 401, "checked before the hook, which never sees it");
    let _pending = v1_connect(&server, "").await;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(
        seen,
        [Some("alice".to_owned()), Some("bob".to_owned()), None]
    );
    server.stop();
}
