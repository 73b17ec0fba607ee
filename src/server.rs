//! The server: binds, starts one thread per shard, and waits for them on shutdown.
//!
//! Each shard thread runs a tokio *current-thread* runtime with a `LocalSet`, so the
//! shard's state can live in `Rc`/`RefCell` — it never leaves the thread. Shard 0 also
//! runs the acceptor, which deals connections out round-robin.
//!
//! With TLS configured, the certificate is loaded before anything is bound (a bad file
//! is an error at start), and [`TlsReload`] swaps it while the server runs.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crate::config::Config;
use crate::edge::tls::Tls;
use crate::engine::hub::Hub;
use crate::engine::shard::Shard;
use crate::error::Error;

/// Starts a shutdown if dropped while its thread panics.
struct StopOnPanic(Hub);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("a shard panicked: shutting the server down");
            self.0.shutdown();
        }
    }
}

/// A running hubcast server.
///
/// ```no_run
/// # fn main() -> Result<(), hubcast::Error> {
/// let server = hubcast::Server::start(hubcast::Config::default())?;
/// println!("listening on ws://{}/ws", server.local_addr());
/// server.join()
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    hub: Hub,
    local_addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
    tls: Option<TlsReload>,
}

/// Reloads a running server's TLS certificate and key from their files: new handshakes
/// get the new pair, connections already up keep theirs. Cheap to clone and usable from
/// any thread (the binary calls it on SIGHUP).
#[derive(Debug, Clone)]
pub struct TlsReload {
    tls: Arc<Tls>,
    hub: Hub,
}

impl TlsReload {
    /// Reads both files again. On success the new pair serves every handshake from now
    /// on; on error (unreadable, not PEM, key not matching) the pair in use stays. Either
    /// way it is counted and logged.
    pub fn reload(&self) -> Result<(), Error> {
        let metrics = &self.hub.inner.metrics;
        match self.tls.certificates().reload() {
            Ok(()) => {
                metrics.tls_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!("TLS certificate reloaded: new handshakes use it");
                Ok(())
            }
            Err(e) => {
                metrics.tls_reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "TLS certificate not reloaded: keeping the one in use");
                Err(e.into())
            }
        }
    }

    /// The certificate chain new handshakes get now (server certificate first, DER).
    pub fn chain(&self) -> Vec<Vec<u8>> {
        let chain = self.tls.certificates().chain();
        chain.iter().map(|c| c.as_ref().to_vec()).collect()
    }
}

impl Server {
    /// Binds `config.listen` and starts serving; returns once the shard threads are
    /// spawned (the listener is already bound, so connections queue from this point).
    /// Needs no runtime of the caller's (each shard brings its own), and may be called
    /// from inside one.
    pub fn start(config: Config) -> Result<Server, Error> {
        config.validate()?;
        let tls = Self::tls(&config)?;
        let listener = crate::edge::listener::bind(config.listen, config.backlog)?;
        Self::start_inner(listener, config, tls)
    }

    /// Serves on an existing listener (its address overrides `config.listen`).
    pub fn with_listener(listener: TcpListener, mut config: Config) -> Result<Server, Error> {
        config.listen = listener.local_addr()?;
        config.validate()?;
        let tls = Self::tls(&config)?;
        listener.set_nonblocking(true)?;
        Self::start_inner(listener, config, tls)
    }

    /// Loads the certificate and key, when TLS is configured.
    fn tls(config: &Config) -> Result<Option<Arc<Tls>>, Error> {
        match &config.tls {
            Some(files) => Ok(Some(Arc::new(Tls::new(files.clone())?))),
            None => Ok(None),
        }
    }

    fn start_inner(
        listener: TcpListener,
        config: Config,
        tls: Option<Arc<Tls>>,
    ) -> Result<Server, Error> {
        let local_addr = listener.local_addr()?;
        let cluster = config.cluster.clone();
        let verifier = crate::edge::auth::JwtVerifier::from_config(&config)?;
        let hub = Hub::new(config);
        // Before any shard runs: no client may be admitted without its token checked.
        if let Some(verifier) = verifier {
            hub.set_verifier(std::sync::Arc::new(verifier));
        }
        // Before any shard runs, so that the first subscriber's interest reaches it. An
        // unreachable broker does not stop the start: the backplane keeps trying.
        if let Some(cluster) = cluster {
            crate::cluster::attach(&hub, cluster)?;
        }
        let n = hub.inner.shards.len();
        let mut listener = Some(listener);
        let mut threads = Vec::with_capacity(n);
        for index in 0..n {
            let shard_hub = hub.clone();
            let panic_hub = hub.clone();
            let listener = if index == 0 { listener.take() } else { None };
            let tls = tls.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let spawned = std::thread::Builder::new()
                .name(format!("hubcast-shard-{index}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    // A shard that panics takes the server down cleanly rather than leaving a
                    // dead shard that is still dealt connections and messages.
                    let _stop_on_panic = StopOnPanic(panic_hub);
                    local.block_on(&runtime, async move {
                        let serve = crate::edge::serve_connection(&shard_hub, tls);
                        let shard = Shard::new(shard_hub, index, serve);
                        if let Some(listener) = listener {
                            let acceptor = tokio::task::spawn_local(
                                crate::edge::listener::accept_loop(shard.clone(), listener),
                            );
                            let hub = shard.hub.clone();
                            // Without its acceptor the server would silently stop taking
                            // connections: a panic there stops the whole server instead.
                            tokio::task::spawn_local(async move {
                                if acceptor.await.is_err() {
                                    tracing::error!(
                                        "the acceptor panicked: shutting the server down"
                                    );
                                    hub.shutdown();
                                }
                            });
                        }
                        shard.run().await;
                    });
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    hub.shutdown();
                    return Err(e.into());
                }
            }
        }
        tracing::info!(addr = %local_addr, shards = n, tls = tls.is_some(), "hubcast listening");
        Ok(Server {
            tls: tls.map(|tls| TlsReload {
                tls,
                hub: hub.clone(),
            }),
            hub,
            local_addr,
            threads,
        })
    }

    /// Whether the server speaks TLS (`https`/`wss`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reloads the TLS certificate and key (see [`TlsReload::reload`]); an error when
    /// the server has no TLS.
    pub fn reload_tls(&self) -> Result<(), Error> {
        match &self.tls {
            Some(t) => t.reload(),
            None => Err(Error::Config("this server has no TLS to reload".into())),
        }
    }

    /// A handle that reloads the certificate from another thread, when TLS is on.
    pub fn tls_reload(&self) -> Option<TlsReload> {
        self.tls.clone()
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The hub: publish, count, upgrade, shut down.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Starts a graceful shutdown (same as [`Hub::shutdown`]).
    pub fn shutdown(&self) {
        self.hub.shutdown();
    }

    /// Blocks until every shard has stopped (after a shutdown).
    pub fn join(self) -> Result<(), Error> {
        let mut result = Ok(());
        for (i, t) in self.threads.into_iter().enumerate() {
            if t.join().is_err() {
                result = Err(Error::ShardPanicked(i));
            }
        }
        // The shards have delivered (and forwarded) everything: now the broker link.
        if let Some(backplane) = self.hub.backplane() {
            backplane.shutdown();
        }
        result
    }

    /// Waits, without blocking the async runtime, until every shard has stopped.
    pub async fn stopped(self) -> Result<(), Error> {
        match tokio::task::spawn_blocking(move || self.join()).await {
            Ok(r) => r,
            Err(_) => Err(Error::ShardPanicked(usize::MAX)),
        }
    }
}
