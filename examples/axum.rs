//! hubcast next to an axum app: the app keeps its own routes, and `/live` hands
//! WebSocket upgrades to hubcast. Clients that offer the `hubcast.v1` subprotocol get
//! protocol v1 (subscribe at any time, recovery, presence); a route of the app publishes
//! and returns the message's position.
//!
//! ```text
//! cargo run --example axum
//! websocat 'ws://127.0.0.1:3001/live?topic=news'
//! curl -d 'breaking' http://127.0.0.1:3001/news
//! ```

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use hubcast::{Config, Hub, Server};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// The upgrade route: hubcast checks origin, topics and capacity, answers the
/// handshake, and takes the connection over once axum has sent the `101`.
async fn live(
    State(hub): State<Hub>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    hub.upgrade(&mut req, Some(peer)).into_response()
}

/// One of the app's own routes: publish the body to `news` and say where it landed.
async fn news(State(hub): State<Hub>, body: String) -> Response {
    match hub.publish_text("news", &body) {
        Ok(r) => format!(
            "offset {} (epoch {}), {} subscribers\n",
            r.offset, r.epoch, r.recipients
        )
        .into_response(),
        Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// The app: its routes and hubcast's, on one listener (public: `tests/axum.rs` serves
/// this very router).
pub fn app(hub: Hub) -> Router {
    Router::new()
        .route("/", get(|| async { "the app's own page\n" }))
        .route("/live", get(live))
        .route("/news", post(news))
        .with_state(hub)
}

/// Serves `app` on `listener` with hyper's HTTP/1 server and upgrades enabled.
///
/// Why not `axum::serve`: it serves through hyper-util's auto (HTTP/1 + HTTP/2) builder,
/// which wraps each socket to sniff the protocol — and hubcast must get the plain
/// `TcpStream` back after the upgrade, to write its shared frames straight to it.
pub async fn serve(listener: TcpListener, app: Router) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let app = app.clone().layer(Extension(ConnectInfo(peer)));
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                .with_upgrades();
            let _ = conn.await;
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // hubcast's own listener (metrics, health) on a free port; the app serves clients.
    let server = Server::start(Config {
        listen: "127.0.0.1:0".parse()?,
        history_size: 1000,
        ..Config::default()
    })?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!(
        "app on http://127.0.0.1:3001, hubcast metrics on http://{}/metrics",
        server.local_addr()
    );
    serve(listener, app(server.hub().clone())).await?;
    Ok(())
}
