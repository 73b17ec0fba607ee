//! The `hubcast` server binary: flags (or `HUBCAST_*` variables) → [`hubcast::Config`],
//! logs through `tracing` (`RUST_LOG`), graceful shutdown on SIGINT/SIGTERM, and the TLS
//! certificate reloaded on SIGHUP.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// hubcast: a lock-free, high-throughput WebSocket broadcast server.
///
/// Clients connect to ws://HOST:PORT/ws?topic=NAME (repeat `topic` to join several; none
/// joins "default"). Publish with POST /publish/NAME, or, unless --feed, by sending a
/// message on the WebSocket. The demo page is at /, counters at /metrics.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Address to listen on. A non-loopback address requires --publish-token.
    #[arg(long, env = "HUBCAST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Number of shards (threads); 0 = one per CPU core.
    #[arg(long, env = "HUBCAST_SHARDS", default_value_t = 0)]
    shards: usize,
    /// Feed mode: clients only listen; a client that sends a message is closed (1008).
    #[arg(long, env = "HUBCAST_FEED", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    feed: bool,
    /// Origin allowed to connect besides same-origin and no-Origin clients
    /// (repeatable, or comma-separated in the variable); `*` allows any.
    #[arg(
        long = "allow-origin",
        env = "HUBCAST_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    allow_origin: Vec<String>,
    /// Maximum concurrent WebSocket connections; further upgrades get 503.
    #[arg(long, env = "HUBCAST_MAX_CONNECTIONS", default_value_t = 100_000)]
    max_connections: usize,
    /// Seconds a new connection has to send its HTTP request headers.
    #[arg(long, env = "HUBCAST_HANDSHAKE_TIMEOUT", default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Seconds a request body (POST /publish) has to arrive in full; slower gets 408.
    #[arg(long, env = "HUBCAST_BODY_TIMEOUT", default_value_t = 10.0)]
    body_timeout: f64,
    /// Bytes that may queue for one client before it is closed as a slow consumer.
    #[arg(long, env = "HUBCAST_CLIENT_BUFFER", default_value_t = 4 << 20)]
    client_buffer: usize,
    /// Close code for slow consumers: 1008 (policy violation) or 1013 (try again later).
    #[arg(long, env = "HUBCAST_SLOW_CONSUMER_CODE", default_value_t = 1008)]
    slow_consumer_code: u16,
    /// Largest message in bytes (after reassembly) from a client or publisher; 1009 beyond.
    #[arg(long, env = "HUBCAST_MAX_MESSAGE_SIZE", default_value_t = 1 << 20)]
    max_message_size: usize,
    /// permessage-deflate: accept clients' offers, compress each message of at least
    /// --compression-min-size bytes once for all of them, inflate what they compress.
    #[arg(long, env = "HUBCAST_COMPRESSION", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    compression: bool,
    /// Payloads shorter than this (bytes) go out uncompressed even with --compression.
    #[arg(long, env = "HUBCAST_COMPRESSION_MIN_SIZE", default_value_t = 256)]
    compression_min_size: usize,
    /// Seconds between pings to each client.
    #[arg(long, env = "HUBCAST_PING_INTERVAL", default_value_t = 30.0)]
    ping_interval: f64,
    /// Seconds of silence, beyond the ping interval, after which a client is closed.
    #[arg(long, env = "HUBCAST_PONG_TIMEOUT", default_value_t = 10.0)]
    pong_timeout: f64,
    /// Bearer token required by POST /publish/{topic} (required off loopback).
    #[arg(long, env = "HUBCAST_PUBLISH_TOKEN", hide_env_values = true)]
    publish_token: Option<String>,
    /// Seconds allowed on shutdown to close every client and flush its queue.
    #[arg(long, env = "HUBCAST_DRAIN_TIMEOUT", default_value_t = 5.0)]
    drain_timeout: f64,
    /// Messages each shard's inbox holds. When one is full, client and HTTP publishers
    /// wait for room (HTTP for at most 1 s, then 503); `Hub::publish` drops (counted).
    #[arg(long, env = "HUBCAST_INBOX_CAPACITY", default_value_t = 16_384)]
    inbox_capacity: usize,
    /// Listen backlog (capped by net.core.somaxconn).
    #[arg(long, env = "HUBCAST_BACKLOG", default_value_t = 8192)]
    backlog: u32,
    /// Latency budget for batching, in seconds: after a heavy fan-out round (250 us or
    /// more) a shard waits at most this long for more frames, and only when its arrival
    /// rate predicts at least two within it; a lightly loaded shard writes at once.
    /// 0 = never wait.
    #[arg(long, env = "HUBCAST_COALESCE", default_value_t = 0.008)]
    coalesce: f64,
    /// Messages kept per topic so that protocol v1 clients can recover what they missed
    /// after a reconnect; 0 = no history.
    #[arg(long, env = "HUBCAST_HISTORY_SIZE", default_value_t = 0)]
    history_size: usize,
    /// Seconds a message stays in the history (unset: until pushed out by --history-size).
    #[arg(long, env = "HUBCAST_HISTORY_TTL")]
    history_ttl: Option<f64>,
    /// Most topics whose offsets and history are kept (the least recently used beyond it
    /// is forgotten: its clients cannot recover).
    #[arg(long, env = "HUBCAST_HISTORY_TOPICS", default_value_t = 100_000)]
    history_topics: usize,
    /// Most messages one recovery may replay; a longer gap is answered recovered:false.
    #[arg(long, env = "HUBCAST_MAX_RECOVERY", default_value_t = 1000)]
    max_recovery: usize,
    /// Most topics one protocol v1 client may subscribe to.
    #[arg(long, env = "HUBCAST_MAX_TOPICS_PER_CLIENT", default_value_t = 100)]
    max_topics_per_client: usize,
    /// Cluster over NATS: the seed servers of a NATS cluster (`nats://host:port`,
    /// comma-separated). Messages published on any node reach every node's subscribers.
    /// Without it, this is one node on its own.
    #[arg(long, env = "HUBCAST_NATS", value_delimiter = ',')]
    nats: Vec<String>,
    /// First token of every NATS subject this cluster uses (`<prefix>.t.<topic>`), so
    /// that several clusters can share one broker.
    #[arg(long, env = "HUBCAST_NATS_PREFIX", default_value = "hubcast")]
    nats_prefix: String,
    /// NATS token authentication.
    #[arg(long, env = "HUBCAST_NATS_TOKEN", hide_env_values = true)]
    nats_token: Option<String>,
    /// NATS user (with --nats-password).
    #[arg(long, env = "HUBCAST_NATS_USER")]
    nats_user: Option<String>,
    /// NATS password (with --nats-user).
    #[arg(long, env = "HUBCAST_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// NATS credentials file (user JWT + NKey seed).
    #[arg(long, env = "HUBCAST_NATS_CREDS")]
    nats_creds: Option<std::path::PathBuf>,
    /// Require a JWT from every WebSocket client, signed with HS256 and this shared
    /// secret (at least 32 bytes). Tokens come in ?token=, Authorization: Bearer, or a
    /// protocol v1 `connect` command.
    #[arg(long, env = "HUBCAST_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Require a JWT from every WebSocket client, signed with the private half of this
    /// PEM public key: RSA (RS256) or EC P-256 (ES256).
    #[arg(long, env = "HUBCAST_JWT_PUBLIC_KEY", value_name = "FILE")]
    jwt_public_key: Option<std::path::PathBuf>,
    /// The audience tokens must name (aud); without it, tokens naming one are refused.
    #[arg(long, env = "HUBCAST_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// The issuer tokens must name (iss); without it, iss is not checked.
    #[arg(long, env = "HUBCAST_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Seconds of clock skew tolerated on exp and nbf (whole seconds).
    #[arg(long, env = "HUBCAST_JWT_LEEWAY", default_value_t = 0)]
    jwt_leeway: u64,
    /// Where the broker keeps the cluster's history stream (clustered with
    /// --history-size > 0): `file` survives a broker restart, `memory` is faster and
    /// starts a new epoch when the broker restarts.
    #[arg(long, env = "HUBCAST_NATS_HISTORY_STORAGE", value_enum, default_value_t = HistoryStorage::File)]
    nats_history_storage: HistoryStorage,
    /// Serve https/wss with this certificate chain (PEM, server certificate first);
    /// needs --tls-key. Read again on SIGHUP.
    #[arg(long, env = "HUBCAST_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(long, env = "HUBCAST_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
}

/// `--nats-history-storage`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HistoryStorage {
    File,
    Memory,
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{name} must be a non-negative number of seconds, not {v}"))
}

impl Args {
    fn into_config(self) -> anyhow::Result<hubcast::Config> {
        let cluster = self.cluster();
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(hubcast::TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => anyhow::bail!(
                "--tls-cert needs --tls-key (HUBCAST_TLS_KEY): TLS takes the certificate and its key"
            ),
            (None, Some(_)) => anyhow::bail!(
                "--tls-key needs --tls-cert (HUBCAST_TLS_CERT): TLS takes the certificate and its key"
            ),
        };
        Ok(hubcast::Config {
            listen: self.listen,
            shards: self.shards,
            feed: self.feed,
            allow_origins: self.allow_origin,
            max_connections: self.max_connections,
            handshake_timeout: seconds("handshake-timeout", self.handshake_timeout)?,
            body_timeout: seconds("body-timeout", self.body_timeout)?,
            client_buffer: self.client_buffer,
            slow_consumer_code: self.slow_consumer_code,
            max_message_size: self.max_message_size,
            compression: self.compression,
            compression_min_size: self.compression_min_size,
            ping_interval: seconds("ping-interval", self.ping_interval)?,
            pong_timeout: seconds("pong-timeout", self.pong_timeout)?,
            publish_token: self.publish_token,
            drain_timeout: seconds("drain-timeout", self.drain_timeout)?,
            inbox_capacity: self.inbox_capacity,
            backlog: self.backlog,
            coalesce: seconds("coalesce", self.coalesce)?,
            admit: None,
            history_size: self.history_size,
            history_ttl: self
                .history_ttl
                .map(|t| seconds("history-ttl", t))
                .transpose()?,
            history_topics: self.history_topics,
            max_recovery: self.max_recovery,
            max_topics_per_client: self.max_topics_per_client,
            cluster,
            jwt_secret: self.jwt_secret,
            jwt_public_key: self.jwt_public_key,
            jwt_audience: self.jwt_audience,
            jwt_issuer: self.jwt_issuer,
            jwt_leeway: Duration::from_secs(self.jwt_leeway),
            tls,
        })
    }

    /// Clustering settings, when `--nats` names servers. The others need it.
    fn cluster(&self) -> Option<hubcast::cluster::ClusterConfig> {
        let urls: Vec<String> = self
            .nats
            .iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return None;
        }
        Some(hubcast::cluster::ClusterConfig {
            urls,
            prefix: self.nats_prefix.clone(),
            token: self.nats_token.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            creds: self.nats_creds.clone(),
            history: (self.history_size > 0).then(|| hubcast::cluster::LogConfig {
                size: self.history_size,
                ttl: self
                    .history_ttl
                    .and_then(|t| Duration::try_from_secs_f64(t).ok()),
                max_topics: self.history_topics,
                storage: match self.nats_history_storage {
                    HistoryStorage::File => hubcast::cluster::Storage::File,
                    HistoryStorage::Memory => hubcast::cluster::Storage::Memory,
                },
            }),
            ..Default::default()
        })
    }
}

fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            // async-nats logs every retry at info; hubcast logs each state change once.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        .init();
    let args = Args::parse();
    if args.nats.is_empty()
        && (args.nats_token.is_some() || args.nats_user.is_some() || args.nats_creds.is_some())
    {
        anyhow::bail!("--nats-token, --nats-user and --nats-creds need --nats");
    }
    let config = args.into_config()?;

    // Signals first, installed before the server starts: a SIGTERM right after start
    // must still drain, not kill.
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // SIGHUP too, even without TLS: its default action would kill the server.
    let (mut term, mut int, mut hup) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _in_runtime = signals.enter();
        let term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        let int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        (term, int, hup)
    };

    let server = hubcast::Server::start(config).context("cannot start hubcast")?;
    let (scheme, ws) = if server.is_tls() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    println!(
        "hubcast listening on {scheme}://{0}  (WebSocket: {ws}://{0}/ws)",
        server.local_addr()
    );
    let reload = server.tls_reload();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("hubcast-signals".into())
        .spawn(move || {
            signals.block_on(async {
                loop {
                    tokio::select! {
                        _ = term.recv() => break,
                        _ = int.recv() => break,
                        _ = hup.recv() => match &reload {
                            // Logged and counted by the reload itself; the server goes on
                            // with the certificate it has.
                            Some(reload) => {
                                let _ = reload.reload();
                            }
                            None => tracing::info!("SIGHUP: no TLS certificate to reload"),
                        },
                    }
                }
            });
            let _ = stop_tx.send(());
        })?;
    let hub = server.hub().clone();
    std::thread::Builder::new()
        .name("hubcast-stop".into())
        .spawn(move || {
            if stop_rx.recv().is_ok() {
                tracing::info!("shutting down: closing clients");
                hub.shutdown();
            }
        })?;
    server.join().context("shard failed")?;
    tracing::info!("stopped");
    Ok(())
}
