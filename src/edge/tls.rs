//! TLS at the edge: the certificate and key from PEM files, the acceptor that runs
//! each connection's handshake, and reloading the certificate without a restart.
//!
//! The server's rustls configuration is built once, with a certificate *resolver*
//! instead of a fixed certificate: [`CertStore`] hands every new handshake the
//! certificate currently in an `ArcSwap`. A reload (SIGHUP in the binary,
//! [`crate::Server::reload_tls`] for embedders) reads and checks both files, then swaps
//! the pair in one store: handshakes after it get the new certificate, connections
//! already up keep the session they have, and a pair that does not load is refused
//! with the old one kept.
//!
//! After the handshake the connection is ordinary HTTP over the TLS stream; at an
//! upgrade the edge takes the socket and the rustls session apart and hands both to
//! the shard, which drives the session itself (`engine::transport`).
//!
//! A connection that does not complete a handshake — plain HTTP sent to the TLS port, a
//! scanner, a client stalling past `--handshake-timeout` — is closed, counted in
//! `hubcast_tls_handshake_failures_total`, logged at `debug` each and at `warn` at most
//! once per [`LOG_EVERY`] with how many failed since.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;
use crate::engine::metrics::Metrics;

/// Least time between two `warn` lines about failed handshakes.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a certificate and key could not be used. Each message names the file and says
/// what is wrong in full (the causes are part of the message, not a chain).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} file {path}: {cause}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// A file is not PEM, or holds no certificate / private key.
    #[error("the TLS {what} file {path} is not usable: {reason}")]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("the TLS key {key} does not belong to the certificate {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The key is not one rustls can sign with, or the certificate cannot be parsed.
    #[error("the TLS key {key} cannot be used with the certificate {cert}: {cause}")]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        cause: rustls::Error,
    },
    /// rustls refused the server configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider hubcast uses: `ring` (the one the NATS client brings already).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its private key.
pub fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|cause| TlsError::Read {
            what,
            path: path.to_owned(),
            cause,
        })
    };
    let pem_error = |what, path: &Path, reason: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason,
    };
    let cert_pem = read("certificate", &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate", &files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            "certificate",
            &files.cert,
            "no CERTIFICATE block found".into(),
        ));
    }
    let key_pem = read("key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        pem_error(
            "key",
            &files.key,
            format!("{e} (expected a PEM PKCS#8, PKCS#1 or SEC1 private key)"),
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|cause| match cause {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            }
        }
        cause => TlsError::Key {
            cert: files.cert.clone(),
            key: files.key.clone(),
            cause,
        },
    })
}

/// The certificate every new handshake gets, swappable while connections are up.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    /// Loads the pair named by `files`.
    pub fn open(files: TlsFiles) -> Result<Self, TlsError> {
        let provider = provider();
        let key = load(&files, &provider)?;
        Ok(CertStore {
            files,
            provider,
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Reads the files again and, if they hold a usable pair, serves it to every
    /// handshake from now on. On error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load(&self.files, &self.provider)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// The certificate chain served now (its first entry is the server's certificate).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS for one server: the certificates and the acceptor, shared by every shard.
pub struct Tls {
    store: Arc<CertStore>,
    acceptor: TlsAcceptor,
    /// Milliseconds since `epoch` of the last `warn` about failed handshakes, and how
    /// many failed since it.
    last_warn: AtomicU64,
    unlogged: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("store", &self.store).finish()
    }
}

impl Tls {
    /// Loads the certificate and key, and builds the server configuration (TLS 1.2 and
    /// 1.3, HTTP/1.1 by ALPN).
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let store = Arc::new(CertStore::open(files)?);
        let mut config = ServerConfig::builder_with_provider(store.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            store,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            last_warn: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The certificates (to reload them).
    pub fn certificates(&self) -> &Arc<CertStore> {
        &self.store
    }

    /// Runs the handshake on an accepted connection, within `timeout`. A failure is
    /// counted and logged, and the connection dropped (closing it).
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
        metrics: &Metrics,
    ) -> Option<TlsStream<TcpStream>> {
        let error = match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => return Some(tls),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no handshake within {} s", timeout.as_secs_f64()),
        };
        metrics
            .tls_handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, %error, "TLS handshake failed");
        self.warn_now_and_then(peer, &error);
        None
    }

    /// One `warn` per [`LOG_EVERY`] at most, however many handshakes fail: a scanner
    /// or a misconfigured client must not flood the log.
    fn warn_now_and_then(&self, peer: SocketAddr, error: &str) {
        let unlogged = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.epoch.elapsed().as_millis() as u64 + LOG_EVERY.as_millis() as u64;
        let last = self.last_warn.load(Ordering::Relaxed);
        if now.saturating_sub(last) < LOG_EVERY.as_millis() as u64
            || self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.unlogged.fetch_sub(unlogged, Ordering::Relaxed);
        tracing::warn!(
            %peer,
            %error,
            failed = unlogged,
            "TLS handshakes failed (plain HTTP to the TLS port? an untrusted certificate?); \
             this one's peer and error shown, the rest at debug"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert).expect("write cert");
        std::fs::write(&k, key).expect("write key");
        TlsFiles { cert: c, key: k }
    }

    #[test]
    fn unusable_files_say_which_and_why() {
        let dir = std::env::temp_dir().join(format!("hubcast-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = TlsFiles {
            cert: dir.join("nope.pem"),
            key: dir.join("nope.key"),
        };
        let e = CertStore::open(missing).expect_err("missing").to_string();
        assert!(
            e.contains("certificate file") && e.contains("nope.pem"),
            "{e}"
        );
        let e = CertStore::open(files(&dir, "hello", "")).expect_err("not PEM");
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
