//! Why a backplane could not start.
//!
//! Once started, a backplane never fails as a whole: losing the broker is a state
//! ([`super::State::Disconnected`]) and each lost message is a counted drop, not an error.

use std::path::PathBuf;

/// Why [`super::Backplane::start`] refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server URL was given.
    #[error("no NATS server URL given")]
    NoServers,
    /// A server URL does not parse.
    #[error("invalid NATS server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// The subject prefix is not usable as the start of a NATS subject.
    #[error("invalid NATS subject prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Inconsistent settings; the message says which and why.
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    /// The credentials file could not be read or parsed.
    #[error("cannot use NATS credentials file {path}: {source}")]
    Credentials {
        /// The file as given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The backplane's thread or runtime could not be created.
    #[error("cannot start the backplane thread: {0}")]
    Io(#[from] std::io::Error),
    /// The NATS client could not be created (never because the broker is unreachable:
    /// the client connects in the background).
    #[error("cannot create the NATS client: {0}")]
    Client(String),
}
