//! The backplane's configuration, and its translation into `async-nats` connect options.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};

use super::error::ClusterError;
use super::log::LogConfig;
use super::subject::Subjects;

/// How a node joins the cluster. `Default` gives a local broker and the `hubcast` prefix.
#[derive(Clone)]
pub struct ClusterConfig {
    /// NATS servers to connect to (seeds: the client also learns the cluster's other
    /// servers from them). `nats://host:port`, `host:port` or `tls://host:port`; a URL may
    /// carry `user:password@`.
    pub urls: Vec<String>,
    /// First subject tokens of every subject the backplane uses (`<prefix>.t.<topic>`), so
    /// that several hubcast clusters can share one broker. Default `hubcast`.
    pub prefix: String,
    /// Token authentication.
    pub token: Option<String>,
    /// User/password authentication (both or neither).
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<String>,
    /// A `.creds` file (user JWT and NKey seed), for decentralised auth.
    pub creds: Option<PathBuf>,
    /// Outgoing messages that may wait for the NATS connection; past it, `publish` drops
    /// (counted as `queue_full`). Default 65,536.
    pub queue_capacity: usize,
    /// How long a topic stays subscribed after its last local subscriber left, so that
    /// churn does not make SUB/UNSUB flap. Default 1 s.
    pub linger: Duration,
    /// How long `shutdown` waits for queued messages to reach the broker. Default 2 s.
    pub shutdown_timeout: Duration,
    /// Keep the cluster's history in a JetStream stream (`None`: no shared history).
    /// Set by the server from `--history-size` when clustered: then offsets are the
    /// stream's sequence numbers, the same on every node.
    pub history: Option<LogConfig>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            prefix: "hubcast".to_owned(),
            token: None,
            user: None,
            password: None,
            creds: None,
            queue_capacity: 65_536,
            linger: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(2),
            history: None,
        }
    }
}

/// Secrets stay out of logs: only whether they are set is shown.
impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("ClusterConfig")
            .field("urls", &urls)
            .field("prefix", &self.prefix)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("creds", &self.creds)
            .field("queue_capacity", &self.queue_capacity)
            .field("linger", &self.linger)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("history", &self.history)
            .finish()
    }
}

/// `nats://user:secret@host` → `nats://<credentials>@host`.
fn redact_url(url: &str) -> String {
    let rest_at = url.find("://").map_or(0, |i| i + 3);
    match url[rest_at..].find('@') {
        Some(at) => format!("{}<credentials>{}", &url[..rest_at], &url[rest_at + at..]),
        None => url.to_owned(),
    }
}

/// A configuration checked and turned into what the client needs.
pub(crate) struct Prepared {
    pub(crate) servers: Vec<ServerAddr>,
    /// Everything but the event callback, which needs the running backplane.
    pub(crate) options: ConnectOptions,
    pub(crate) subjects: Subjects,
}

impl ClusterConfig {
    /// Checks the configuration and builds the client options; fails on anything that
    /// cannot work, before a thread is started.
    pub(crate) fn prepare(&self, node_id: &str) -> Result<Prepared, ClusterError> {
        if self.urls.is_empty() {
            return Err(ClusterError::NoServers);
        }
        let servers = self
            .urls
            .iter()
            .map(|u| {
                u.parse::<ServerAddr>()
                    .map_err(|e| ClusterError::InvalidUrl {
                        url: redact_url(u),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let subjects = Subjects::new(&self.prefix)?;
        if self.queue_capacity == 0 {
            return Err(ClusterError::Config(
                "queue_capacity must be at least 1".into(),
            ));
        }

        let options = ConnectOptions::new()
            // Start even while the broker is down: `connect` returns at once and the
            // client keeps trying in the background (forever: max_reconnects is unset).
            .retry_on_initial_connect()
            // One connection publishes and subscribes; the server must not send our own
            // messages back (saves the bandwidth; the node id header is the fallback).
            .no_echo()
            .name(format!("hubcast-{node_id}"))
            // A half-open connection (peer gone without a FIN) is given up when a third
            // ping finds two unanswered: ~30 s instead of the default ~3 min of silence.
            .ping_interval(Duration::from_secs(10))
            .reconnect_delay_callback(reconnect_delay);
        let options = self.with_auth(options)?;
        Ok(Prepared {
            servers,
            options,
            subjects,
        })
    }

    fn with_auth(&self, options: ConnectOptions) -> Result<ConnectOptions, ClusterError> {
        let methods = usize::from(self.token.is_some())
            + usize::from(self.user.is_some() || self.password.is_some())
            + usize::from(self.creds.is_some());
        if methods > 1 {
            return Err(ClusterError::Config(
                "set only one NATS authentication: token, user/password or creds".into(),
            ));
        }
        if let Some(token) = &self.token {
            return Ok(options.token(token.clone()));
        }
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => {
                return Ok(options.user_and_password(user.clone(), password.clone()));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(ClusterError::Config(
                    "NATS user and password must be given together".into(),
                ));
            }
            (None, None) => {}
        }
        if let Some(path) = &self.creds {
            // Read here, synchronously, so that a missing file fails `start`.
            let credentials = |source| ClusterError::Credentials {
                path: path.clone(),
                source,
            };
            let text = std::fs::read_to_string(path).map_err(credentials)?;
            return options.credentials(&text).map_err(credentials);
        }
        Ok(options)
    }
}

/// Reconnect backoff: at once for the first attempt, then 50 ms doubling to 4 s, plus up
/// to 25 % jitter so that the nodes of a cluster do not all come back in the same instant
/// after a broker restart. (`attempts` counts tries since the last success.)
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(7);
    let base_ms = (50u64 << doublings).min(4_000);
    Duration::from_millis(base_ms + rand::random_range(0..=base_ms / 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(c: &ClusterConfig) -> Result<Prepared, ClusterError> {
        c.prepare("0123456789abcdef")
    }

    #[test]
    fn defaults_are_valid() {
        assert!(prepare(&ClusterConfig::default()).is_ok());
    }

    #[test]
    fn bad_settings_are_refused_with_a_clear_error() {
        let mut c = ClusterConfig {
            urls: vec![],
            ..ClusterConfig::default()
        };
        assert!(matches!(prepare(&c), Err(ClusterError::NoServers)));
        c.urls = vec!["nats://[::1".into()];
        assert!(matches!(prepare(&c), Err(ClusterError::InvalidUrl { .. })));
        c.urls = vec!["127.0.0.1:4222".into()];
        c.prefix = "a.*".into();
        assert!(matches!(
            prepare(&c),
            Err(ClusterError::InvalidPrefix { .. })
        ));
        c.prefix = "hubcast".into();
        c.queue_capacity = 0;
        assert!(matches!(prepare(&c), Err(ClusterError::Config(_))));
        c.queue_capacity = 1;
        c.user = Some("u".into());
        assert!(matches!(prepare(&c), Err(ClusterError::Config(_))));
        c.password = Some("p".into());
        assert!(prepare(&c).is_ok());
        c.token = Some("t".into());
        assert!(matches!(prepare(&c), Err(ClusterError::Config(_))));
        c.token = None;
        c.user = None;
        c.password = None;
        c.creds = Some("/nonexistent/hubcast.creds".into());
        assert!(matches!(prepare(&c), Err(ClusterError::Credentials { .. })));
    }

    #[test]
    fn debug_hides_secrets() {
        let c = ClusterConfig {
            urls: vec!["nats://alice:s3cret@host:4222".into()],
            token: Some("t0ken".into()),
            password: Some("pw".into()),
            ..ClusterConfig::default()
        };
        let shown = format!("{c:?}");
        for secret in ["s3cret", "t0ken", "\"pw\""] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("nats://<credentials>@host:4222"));
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        let second = reconnect_delay(2);
        assert!(second >= Duration::from_millis(50) && second <= Duration::from_millis(63));
        for attempts in [9, 100, usize::MAX] {
            let d = reconnect_delay(attempts);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(5),
                "{d:?}"
            );
        }
    }
}
