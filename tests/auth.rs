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
use hubcast::{Admission, Refusal};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

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

/// Sends v1 commands one after the other and checks each reply's error code (0: a
/// result); returns the last reply.
async fn replies<const N: usize>(ws: &mut Ws, steps: [(Value, u64); N]) -> Value {
    let mut last = Value::Null;
    for (id, (command, code)) in (1..).zip(steps) {
        let r = call(ws, id, command.clone(), &mut Vec::new()).await;
        let got = r["error"]["code"].as_u64().unwrap_or(0);
        assert_eq!(got, code, "{command} → {r}");
        last = r;
    }
    last
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

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(key(name)).expect("test key")
}

/// A server with a public key takes the one algorithm of that key: RS256 for RSA, ES256
/// for EC P-256. Among the refused: the HS/RS (and HS/ES) confusion — HS256 "signed"
/// with the public key's PEM bytes as the HMAC secret, which a server that let the token
/// pick its algorithm would accept — and another algorithm of the key's own family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_takes_its_one_algorithm_only() {
    use Algorithm::{ES256, HS256, PS256, RS256};
    let rs = EncodingKey::from_rsa_pem(&pem("rsa_private.pem")).expect("RSA key");
    let ec = EncodingKey::from_ec_pem(&pem("ec_private.pem")).expect("EC key");
    let rsa_as_secret = EncodingKey::from_secret(&pem("rsa_public.pem"));
    let ec_as_secret = EncodingKey::from_secret(&pem("ec_public.pem"));
    let alice = claims("alice", &["news"]);
    let servers = [
        (
            "rsa_public.pem",
            (RS256, &rs),
            [
                ("HS/RS confusion", HS256, &rsa_as_secret),
                ("PS256", PS256, &rs),
            ],
        ),
        (
            "ec_public.pem",
            (ES256, &ec),
            [
                ("HS/ES confusion", HS256, &ec_as_secret),
                ("RS256", RS256, &rs),
            ],
        ),
    ];
    for (public, (alg, key_), wrong) in servers {
        let server = start(|c| c.jwt_public_key = Some(key(public)));
        let good = sign(alg, key_, &alice);
        let mut by = connect(&server.url(&format!("?topic=news&token={good}"))).await;
        for (what, alg, key_) in wrong {
            let t = sign(alg, key_, &alice);
            let (status, body) = try_upgrade(&server, &format!("?topic=news&token={t}"), &[]).await;
            assert_eq!(status, 401, "{public}, {what}: {body}");
        }
        still_streams(&server, &mut by, "news", "its algorithm only").await;
        server.stop();
    }
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
    replies(
        &mut c,
        [
            (json!({"subscribe": {"topic": "secret"}}), 103),
            (json!({"subscribe": {"topic": "prices"}}), 103),
            (json!({"presence": {"topic": "secret"}}), 103),
            (json!({"subscribe": {"topic": "prices.EURUSD"}}), 0),
        ],
    )
    .await;
    still_streams(&server, &mut by, "secret", "not for alice").await;
    server
        .hub
        .publish("prices.EURUSD", "1.08")
        .expect("publish");
    assert_eq!(
        next_json(&mut c).await,
        json!({"topic": "prices.EURUSD", "offset": 1, "data": 1.08}),
        "the connection stays, and nothing of `secret` came before"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_outside_the_grant_is_refused() {
    let server = hs_server();
    let mut by = bystander(&server, "news").await;
    // With a `publish` claim, its patterns decide, subscribed or not.
    let t = token(json!({
        "sub": "alice", "exp": now() + 3600, "topics": ["news", "chat.*"], "publish": ["chat.*"]
    }));
    let mut alice = v1_connect(&server, &format!("?token={t}")).await;
    replies(
        &mut alice,
        [
            (json!({"subscribe": {"topic": "news"}}), 0),
            (json!({"publish": {"topic": "news", "data": "x"}}), 103),
            (json!({"publish": {"topic": "chat.room", "data": "hi"}}), 0),
        ],
    )
    .await;
    // Without one, in chat mode: the topics the client is subscribed to — not the
    // granted topic it has not joined.
    let t = token(claims("bob", &["news", "sports"]));
    let mut bob = v1_connect(&server, &format!("?token={t}&topic=news")).await;
    replies(
        &mut bob,
        [
            (json!({"publish": {"topic": "sports", "data": "x"}}), 103),
            (json!({"publish": {"topic": "news", "data": "from bob"}}), 0),
        ],
    )
    .await;
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
    send_text(&mut carol, "carol was here").await;
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
    let publish = json!({"publish": {"topic": "news", "data": 2}});
    let t = token(claims("reader", &["news"]));
    let mut reader = v1_connect(&server, &format!("?token={t}&topic=news")).await;
    replies(&mut reader, [(publish.clone(), 103)]).await;
    let t = token(json!({"sub": "editor", "exp": now() + 3600, "publish": ["news"]}));
    let mut editor = v1_connect(&server, &format!("?token={t}")).await;
    replies(&mut editor, [(publish, 0)]).await;
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
    let mut c = v1_connect(&server, "").await;
    let exp = now() + 3600;
    let good = token(json!({"sub": "alice", "exp": exp, "topics": ["news"]}));
    let expired = token(json!({"sub": "alice", "exp": now() - 10, "topics": ["news"]}));
    let refused = replies(
        &mut c,
        [
            // Nothing but connect before a connect succeeded.
            (json!({"subscribe": {"topic": "news"}}), 110),
            (json!({"presence": {"topic": "news"}}), 110),
            (json!({"refresh": {"token": good}}), 110),
            (json!({"connect": {"token": expired}}), 111),
        ],
    )
    .await;
    assert_eq!(refused["error"]["message"], "token expired");
    let connected = replies(&mut c, [(json!({"connect": {"token": good}}), 0)]).await;
    assert_eq!(connected["result"], json!({"sub": "alice", "exp": exp}));
    replies(
        &mut c,
        [
            (json!({"connect": {"token": good}}), 100),
            (json!({"subscribe": {"topic": "secret"}}), 103),
            (json!({"subscribe": {"topic": "news"}}), 0),
        ],
    )
    .await;
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
    let mut trying = v1_connect(&server, "").await;
    replies(
        &mut trying,
        [(json!({"connect": {"token": "not.a.jwt"}}), 111)],
    )
    .await;
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
    let later = t0 + 3600;
    let second = token(json!({"sub": "alice", "exp": later, "topics": ["news"]}));
    let r = replies(&mut alice, [(json!({"refresh": {"token": second}}), 0)]).await;
    assert_eq!(r["result"], json!({"sub": "alice", "exp": later}));
    // A witness whose token expires a second after alice's first one: its close says
    // that alice's first `exp` has passed by then.
    let witness_token = token(json!({"sub": "witness", "exp": t0 + 3, "topics": ["news"]}));
    let mut witness = connect(&server.url(&format!("?topic=news&token={witness_token}"))).await;
    assert_eq!(close_code(&mut witness).await, Some(4401));
    still_streams(&server, &mut by, "news", "past the first exp").await;
    assert_eq!(
        next_json(&mut alice).await["data"],
        "past the first exp",
        "alice is still connected"
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
    let cases = [
        (
            json!({"sub": "alice", "exp": now() - 10, "topics": ["news"]}),
            111,
            "token expired",
        ),
        (
            json!({"sub": "mallory", "exp": exp, "topics": ["news"]}),
            111,
            "token is for another subject",
        ),
        (
            json!({"sub": "alice", "exp": exp, "topics": ["sports"]}),
            103,
            "the new token does not grant every subscribed topic",
        ),
    ];
    for (claims, code, message) in cases {
        let refresh = json!({"refresh": {"token": token(claims)}});
        let r = replies(&mut alice, [(refresh, code)]).await;
        assert_eq!(r["error"]["message"], message);
    }
    let r = replies(
        &mut alice,
        [(json!({"refresh": {"token": "garbage"}}), 111)],
    )
    .await;
    assert_eq!(r["error"]["message"], "malformed token");
    // Still connected, with the old token's grant.
    replies(
        &mut alice,
        [(json!({"subscribe": {"topic": "secret"}}), 103)],
    )
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_the_jwt_flags() {
    let (mut child, addr) = spawn_binary_with(&["--jwt-secret", SECRET, "--jwt-issuer", "tests"]);
    let mut with_iss = claims("alice", &["news"]);
    with_iss["iss"] = json!("tests");
    let without_iss = claims("alice", &["news"]);
    for (query, expected) in [
        ("?topic=news".to_owned(), 401),
        (format!("?topic=news&token={}", token(without_iss)), 401),
        (format!("?topic=news&token={}", token(with_iss)), 101),
    ] {
        let status = http_status(addr, &upgrade_request(addr, &query, "")).await;
        assert_eq!(status, expected, "{query}");
    }
    child.kill().expect("kill the server we started");
    child.wait().expect("reap it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stay_out_of_the_logs() {
    let (mut child, addr) = spawn_binary_logging(
        &["--jwt-secret", SECRET],
        "debug",
        std::process::Stdio::piped(),
    );
    let good = token(claims("alice", &["news"]));
    let expired = token(json!({"sub": "alice", "exp": now() - 10, "topics": ["news"]}));
    for (query, expected) in [
        (format!("?topic=news&token={good}"), 101),
        (format!("?topic=secret&token={good}"), 403),
        (format!("?topic=news&token={expired}"), 401),
    ] {
        let status = http_status(addr, &upgrade_request(addr, &query, "")).await;
        assert_eq!(status, expected, "{query}");
    }
    let mut c = v1_connect_to(&format!("ws://{addr}/ws")).await;
    replies(
        &mut c,
        [
            (json!({"connect": {"token": expired}}), 111),
            (json!({"connect": {"token": good}}), 0),
            (json!({"refresh": {"token": expired}}), 111),
        ],
    )
    .await;
    let (status, _) = http_publish(addr, "news", "x", Some(&expired)).await;
    assert_eq!(status, 401);
    drop(c);
    child.kill().expect("kill the server we started");
    let mut logs = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        std::io::Read::read_to_string(&mut stderr, &mut logs).expect("logs");
    }
    child.wait().expect("reap it");
    // The logs were on and saw the refusals and the connect: the tokens are not there.
    assert!(logs.contains("upgrade refused"), "{logs}");
    assert!(logs.contains("client authenticated"), "{logs}");
    for t in [&good, &expired] {
        let signature = t.rsplit('.').next().unwrap_or(t);
        assert!(!logs.contains(signature), "a token in the logs:\n{logs}");
    }
}
