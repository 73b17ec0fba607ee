//! The library's error types: one for starting a server, one for publishing.

use std::net::SocketAddr;

/// Why a server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is inconsistent; the message says which setting and why.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listening socket could not be created or bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Any other I/O failure while setting up (runtime, threads, sockets).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The cluster backplane could not start (bad NATS settings; an unreachable broker
    /// is not an error — the node starts and keeps trying).
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The JWT public key (`--jwt-public-key`) cannot be used.
    #[error("JWT auth: {0}")]
    Auth(#[from] crate::edge::auth::KeyError),
    /// The TLS certificate or key cannot be used (at start, or on a reload).
    #[error(transparent)]
    Tls(#[from] crate::edge::tls::TlsError),
    /// A shard thread panicked.
    #[error("shard {0} panicked")]
    ShardPanicked(usize),
}

/// Why a publish did not reach every shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Topic names are 1–128 bytes.
    #[error("invalid topic name (topics are 1-128 bytes)")]
    InvalidTopic,
    /// The payload is larger than the configured maximum message size.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Some shards' inboxes were full: they dropped this message (counted in
    /// `hubcast_inbox_dropped_total`); the other shards delivered it.
    #[error("{dropped} of {shards} shards were behind and dropped the message")]
    Overloaded {
        /// Shards that dropped the message.
        dropped: usize,
        /// Shards in total.
        shards: usize,
    },
    /// The server is shutting down and accepts no more messages.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Clustered with a shared history: the broker did not take the message (it is
    /// unreachable or refused it), so no node delivers it.
    #[error("the cluster's log did not take the message")]
    Unavailable,
}
