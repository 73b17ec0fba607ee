//! Configuration: every knob of a hubcast server in one struct, with documented defaults.
//!
//! The `hubcast` binary maps its command-line flags onto this struct one-to-one; embedders
//! build it with [`Config::default`] and change what they need.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::{HeaderMap, StatusCode};

use crate::cluster::ClusterConfig;
use crate::engine::history::HistoryConfig;
use crate::error::Error;

/// Default close code for a client that falls too far behind (RFC 6455: policy violation).
pub const SLOW_CONSUMER_CLOSE: u16 = 1008;

/// What the admission hook sees of an upgrade request.
#[derive(Debug)]
pub struct Admission<'a> {
    /// Request headers (cookies, `Authorization`, `Origin`, …).
    pub headers: &'a HeaderMap,
    /// Raw query string, if any.
    pub query: Option<&'a str>,
    /// The peer's address, when the connection came through a hubcast listener.
    pub peer: Option<SocketAddr>,
    /// The topics the client asked for.
    pub topics: &'a [String],
    /// With auth configured: the verified token's subject (`sub`). `None` without auth,
    /// and for a protocol v1 client that brought no token and will `connect` later.
    pub subject: Option<&'a str>,
    /// With auth configured: every claim of the verified token (a JSON object), for
    /// rules of the embedder's own (a tenant, a plan). `None` when `subject` is.
    pub claims: Option<&'a serde_json::Value>,
}

/// An admission hook's refusal: answered as an HTTP error before the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status, e.g. 401 or 403.
    pub status: StatusCode,
    /// Short reason, sent as the response body.
    pub reason: String,
}

impl Refusal {
    /// A refusal with `status` and a reason.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
}

/// TLS: the PEM files of the server's certificate (chain) and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, server certificate first (`--tls-cert`).
    pub cert: PathBuf,
    /// The private key: PKCS#8, PKCS#1 or SEC1 (`--tls-key`).
    pub key: PathBuf,
}

/// An embedder's decision on each upgrade request, called on the shard before the upgrade.
///
/// With auth configured, the token is checked first: the hook only sees requests whose
/// token is valid and grants every topic of the URL (with the token's subject and
/// claims in [`Admission`]), plus protocol v1 requests without a token, which must
/// `connect` later — a later `connect` does not run the hook again.
pub type AdmitFn = dyn Fn(&Admission<'_>) -> Result<(), Refusal> + Send + Sync;

/// Server configuration. See `docs/operations.md` for the flag and variable of each field.
#[derive(Clone)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Number of shards (threads, each with its own runtime); 0 means one per CPU core.
    pub shards: usize,
    /// Feed mode: clients only listen; a client that sends a data message is closed (1008).
    pub feed: bool,
    /// Extra origins allowed to upgrade (`https://example.com`); `*` allows any.
    /// Same-origin requests and requests without `Origin` are always allowed.
    pub allow_origins: Vec<String>,
    /// Maximum concurrent WebSocket connections; beyond it upgrades get 503.
    pub max_connections: usize,
    /// Time a new TCP connection has to send its complete HTTP request headers.
    pub handshake_timeout: Duration,
    /// Time a request body (`POST /publish`) has to arrive in full, counted from the end
    /// of its headers; a slower body gets `408 Request Timeout`.
    pub body_timeout: Duration,
    /// Bytes that may be queued for one client before it is closed as a slow consumer.
    pub client_buffer: usize,
    /// Close code sent to a slow consumer: 1008 (policy) or 1013 (try again later).
    pub slow_consumer_code: u16,
    /// Largest message (after reassembly of fragments, and after inflation when it was
    /// compressed) a client or publisher may send.
    pub max_message_size: usize,
    /// permessage-deflate (RFC 7692): accept clients' offers, compress each large enough
    /// message once for all of them, inflate what they compress. Off by default (see
    /// `docs/operations.md` for why).
    pub compression: bool,
    /// Payloads shorter than this many bytes are sent uncompressed even to clients that
    /// negotiated permessage-deflate (default 256).
    pub compression_min_size: usize,
    /// Interval between pings to each client.
    pub ping_interval: Duration,
    /// A client silent for `ping_interval + pong_timeout` is closed.
    pub pong_timeout: Duration,
    /// Bearer token required by `POST /publish/{topic}`; required when listening on a
    /// non-loopback address.
    pub publish_token: Option<String>,
    /// On shutdown: time to close every client and flush what is queued.
    pub drain_timeout: Duration,
    /// Frames each shard's inbox holds before a publish to that shard is dropped (counted).
    pub inbox_capacity: usize,
    /// Listen backlog (the kernel caps it at `net.core.somaxconn`).
    pub backlog: u32,
    /// Latency budget for batching (`--coalesce`): after a heavy fan-out round
    /// (≥ 250 µs) a shard lets frames pile up for at most this long, so that each write
    /// carries several — but only when its arrival rate predicts at least two more
    /// frames within the budget (see the `pacing` module). 0: never wait. Default 8 ms:
    /// of the budgets measured (0, 3, 5, 8 ms; 1,000 subscribers, 1,000 messages a
    /// second), the one with the least CPU per delivery, at the same p99 as the others
    /// (docs/benchmarks.md, "Latency-aware batching").
    pub coalesce: Duration,
    /// Optional admission hook (embedders only): accept or refuse each upgrade.
    pub admit: Option<Arc<AdmitFn>>,
    /// Messages kept per topic for protocol v1 recovery (`--history-size`); 0 = none
    /// (offsets and epochs are still kept).
    pub history_size: usize,
    /// How long a message stays in the history (`--history-ttl`); `None` = until pushed
    /// out by `history_size`.
    pub history_ttl: Option<Duration>,
    /// Most topics whose offsets and history are kept; past it the least recently used
    /// topic is forgotten (its epoch changes).
    pub history_topics: usize,
    /// Most messages one recovery may replay (`--max-recovery`); a longer gap is
    /// answered `recovered: false`.
    pub max_recovery: usize,
    /// Most topics one protocol v1 client may subscribe to (`--max-topics-per-client`).
    pub max_topics_per_client: usize,
    /// Clustering over NATS (`--nats`): messages published on any node reach every
    /// node's subscribers. `None` (the default): one node on its own.
    pub cluster: Option<ClusterConfig>,
    /// Auth with HS256 tokens signed with this shared secret (`--jwt-secret`, at least
    /// 32 bytes). With it (or `jwt_public_key`) every WebSocket client needs a token.
    pub jwt_secret: Option<String>,
    /// Auth with tokens signed by the private half of this public key, a PEM file
    /// (`--jwt-public-key`): RSA → RS256, EC P-256 → ES256.
    pub jwt_public_key: Option<PathBuf>,
    /// The audience tokens must name in `aud` (`--jwt-audience`). Without it, a token
    /// that has an `aud` claim is refused (RFC 7519 §4.1.3).
    pub jwt_audience: Option<String>,
    /// The issuer tokens must name in `iss` (`--jwt-issuer`); without it `iss` is not
    /// checked.
    pub jwt_issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in whole seconds (`--jwt-leeway`,
    /// default 0): a token expires, and its connection is closed, `leeway` after `exp`.
    pub jwt_leeway: Duration,
    /// Serve `https`/`wss` with this certificate and key (`--tls-cert`, `--tls-key`);
    /// the files are read again on [`crate::Server::reload_tls`] (SIGHUP). `None`: plain.
    pub tls: Option<TlsFiles>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shards: 0,
            feed: false,
            allow_origins: Vec::new(),
            max_connections: 100_000,
            handshake_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            client_buffer: 4 << 20,
            slow_consumer_code: SLOW_CONSUMER_CLOSE,
            max_message_size: 1 << 20,
            compression: false,
            compression_min_size: 256,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            publish_token: None,
            drain_timeout: Duration::from_secs(5),
            inbox_capacity: 16_384,
            backlog: 8192,
            coalesce: Duration::from_millis(8),
            admit: None,
            history_size: 0,
            history_ttl: None,
            history_topics: 100_000,
            max_recovery: 1000,
            max_topics_per_client: 100,
            cluster: None,
            jwt_secret: None,
            jwt_public_key: None,
            jwt_audience: None,
            jwt_issuer: None,
            jwt_leeway: Duration::ZERO,
            tls: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("shards", &self.shards)
            .field("feed", &self.feed)
            .field("allow_origins", &self.allow_origins)
            .field("max_connections", &self.max_connections)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("client_buffer", &self.client_buffer)
            .field("slow_consumer_code", &self.slow_consumer_code)
            .field("max_message_size", &self.max_message_size)
            .field("compression", &self.compression)
            .field("compression_min_size", &self.compression_min_size)
            .field("ping_interval", &self.ping_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field(
                "publish_token",
                &self.publish_token.as_ref().map(|_| "<set>"),
            )
            .field("drain_timeout", &self.drain_timeout)
            .field("inbox_capacity", &self.inbox_capacity)
            .field("backlog", &self.backlog)
            .field("coalesce", &self.coalesce)
            .field("admit", &self.admit.as_ref().map(|_| "<hook>"))
            .field("history_size", &self.history_size)
            .field("history_ttl", &self.history_ttl)
            .field("history_topics", &self.history_topics)
            .field("max_recovery", &self.max_recovery)
            .field("max_topics_per_client", &self.max_topics_per_client)
            .field("cluster", &self.cluster)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_leeway", &self.jwt_leeway)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Config {
    /// The number of shards this configuration runs: `shards`, or one per core when 0.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The history's settings.
    pub fn history_config(&self) -> HistoryConfig {
        HistoryConfig {
            size: self.history_size,
            ttl: self.history_ttl,
            max_topics: self.history_topics,
        }
    }

    /// Whether clients need tokens (a JWT secret or public key is set).
    pub fn auth_enabled(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some()
    }

    /// Checks the settings against each other; the error names the offending setting.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if !matches!(self.slow_consumer_code, 1008 | 1013) {
            return bad(format!(
                "slow-consumer close code must be 1008 or 1013, not {}",
                self.slow_consumer_code
            ));
        }
        if self.client_buffer < 1024 {
            return bad("client buffer must be at least 1024 bytes".into());
        }
        if self.max_message_size == 0 {
            return bad("max message size must be positive".into());
        }
        if self.history_topics == 0 || self.max_topics_per_client == 0 {
            return bad("history topics and max topics per client must be positive".into());
        }
        if self.history_ttl.is_some_and(|t| t.is_zero()) {
            return bad("history ttl must be positive (leave it unset for none)".into());
        }
        if self.inbox_capacity == 0 {
            return bad("inbox capacity must be positive".into());
        }
        if self.ping_interval.is_zero() || self.pong_timeout.is_zero() {
            return bad("ping interval and pong timeout must be positive".into());
        }
        if self.handshake_timeout.is_zero() || self.body_timeout.is_zero() {
            return bad("handshake and body timeouts must be positive".into());
        }
        if let Some(t) = &self.publish_token
            && t.is_empty()
        {
            return bad("publish token must not be empty".into());
        }
        if let Some(secret) = &self.jwt_secret {
            if self.jwt_public_key.is_some() {
                return bad("set either a JWT secret or a JWT public key, not both".into());
            }
            // RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
            if secret.len() < 32 {
                return bad("JWT secret must be at least 32 bytes (RFC 7518 3.2)".into());
            }
        }
        if !self.auth_enabled() && (self.jwt_audience.is_some() || self.jwt_issuer.is_some()) {
            return bad("JWT audience and issuer need a JWT secret or public key".into());
        }
        // With auth, publishing needs a token anyway (POST /publish takes a JWT too).
        if !self.listen.ip().is_loopback() && self.publish_token.is_none() && !self.auth_enabled() {
            return bad(format!(
                "listening on non-loopback address {} requires a publish token \
                 (--publish-token / HUBCAST_PUBLISH_TOKEN) or JWT auth (--jwt-secret / \
                 --jwt-public-key), so that strangers cannot publish",
                self.listen
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_loopback() {
        let c = Config::default();
        assert!(c.validate().is_ok());
        assert!(c.listen.ip().is_loopback());
    }

    #[test]
    fn public_address_requires_a_token() {
        let mut c = Config {
            listen: "0.0.0.0:8080".parse().expect("addr"),
            ..Config::default()
        };
        let err = c.validate().expect_err("must refuse").to_string();
        assert!(err.contains("publish token"), "{err}");
        c.publish_token = Some("s3cret".into());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn jwt_settings_are_checked() {
        let with = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate()
        };
        assert!(with(|c| c.jwt_secret = Some("s".repeat(32))).is_ok());
        assert!(with(|c| c.jwt_secret = Some("s".repeat(31))).is_err());
        assert!(
            with(|c| {
                c.jwt_secret = Some("s".repeat(32));
                c.jwt_public_key = Some("k.pem".into());
            })
            .is_err()
        );
        assert!(with(|c| c.jwt_audience = Some("a".into())).is_err());
        assert!(with(|c| c.jwt_issuer = Some("i".into())).is_err());
        // Off loopback, tokens keep strangers from publishing.
        assert!(
            with(|c| {
                c.listen = "0.0.0.0:8080".parse().expect("addr");
                c.jwt_secret = Some("s".repeat(32));
            })
            .is_ok()
        );
    }

    #[test]
    fn slow_consumer_code_is_checked() {
        let c = Config {
            slow_consumer_code: 1000,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
