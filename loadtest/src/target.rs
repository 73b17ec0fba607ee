//! Where connections go and where they come from.
//!
//! Owns turning `ws://host:port/path?query` and `http://…` URLs into a
//! resolved socket address plus the `Host` header and request target, and the
//! source-address plan: on loopback, when one source address would not have
//! enough ephemeral ports for all connections, client sockets are bound to
//! 127.0.0.2, 127.0.0.3, … round-robin (every 127/8 address is local on Linux).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use anyhow::{Context, Result, bail};
use http::Uri;

/// A resolved endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Resolved address (first result).
    pub addr: SocketAddr,
    /// Value for the `Host` header.
    pub host_header: String,
    /// Request target: path and query, at least "/".
    pub path: String,
}

impl Target {
    /// Parses and resolves a `ws://` (WebSocket) or `http://` (publish) URL.
    /// TLS schemes are refused: this tool measures servers, not TLS stacks.
    pub fn parse(url: &str, want_ws: bool) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        let scheme = uri.scheme_str().unwrap_or("");
        match (scheme, want_ws) {
            ("ws", true) | ("http", false) => {}
            ("wss", _) | ("https", _) => bail!("{url}: TLS is not supported; use ws:// or http://"),
            _ if want_ws => bail!("{url}: expected a ws:// URL"),
            _ => bail!("{url}: expected an http:// URL"),
        }
        let host = uri.host().with_context(|| format!("{url}: no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = (bare, port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}:{port}"))?
            .next()
            .with_context(|| format!("{host}:{port} resolved to nothing"))?;
        let host_header = match uri.port_u16() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let path = uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        Ok(Self {
            url: url.to_string(),
            addr,
            host_header,
            path,
        })
    }

    /// Whether the target is on the loopback interface.
    pub fn is_loopback(&self) -> bool {
        self.addr.ip().is_loopback()
    }
}

/// Source addresses to bind client sockets to (empty = let the kernel choose).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcePlan {
    addrs: Vec<IpAddr>,
}

impl SourcePlan {
    /// Plans `requested` source addresses (0 = automatic) for `connections`
    /// connections to `target`. Only IPv4 loopback targets are spread;
    /// automatic mode spreads when the connections exceed half the ephemeral
    /// port range, so that ports held in TIME_WAIT by earlier runs do not
    /// starve this one.
    pub fn new(
        target: &Target,
        connections: usize,
        requested: usize,
        port_range: (u16, u16),
    ) -> Self {
        let IpAddr::V4(ip) = target.addr.ip() else {
            return Self::default();
        };
        if !ip.is_loopback() {
            return Self::default();
        }
        let ports = usize::from(port_range.1 - port_range.0) + 1;
        let per_addr = (ports / 2).max(1);
        let count = match requested {
            0 if connections <= per_addr => 0,
            0 => connections.div_ceil(per_addr),
            n => n,
        }
        .min(250);
        let addrs = (0..count)
            .map(|i| {
                // i < 250, so 2 + i fits a byte.
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))
            })
            .collect();
        Self { addrs }
    }

    /// Source address for connection number `i` (round-robin), if spreading.
    pub fn for_index(&self, i: usize) -> Option<IpAddr> {
        if self.addrs.is_empty() {
            None
        } else {
            Some(self.addrs[i % self.addrs.len()])
        }
    }

    /// Number of source addresses in use (0 = kernel's choice).
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether sockets are left unbound.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_urls() {
        let t = Target::parse("ws://127.0.0.1:8080/ws?topic=a&topic=b", true).expect("parse");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert_eq!(t.path, "/ws?topic=a&topic=b");
        assert!(t.is_loopback());
        let t = Target::parse("ws://localhost:9000", true).expect("parse");
        assert_eq!(t.path, "/");
        assert_eq!(t.addr.port(), 9000);
        let t = Target::parse("ws://[::1]:9001/x", true).expect("parse");
        assert_eq!(t.addr, "[::1]:9001".parse().expect("addr"));
        assert_eq!(t.host_header, "[::1]:9001");
        let t = Target::parse("http://127.0.0.1/publish/t", false).expect("parse");
        assert_eq!((t.addr.port(), t.host_header.as_str()), (80, "127.0.0.1"));
    }

    #[test]
    fn rejects_wrong_schemes() {
        assert!(Target::parse("wss://127.0.0.1:1/", true).is_err());
        assert!(Target::parse("http://127.0.0.1:1/", true).is_err());
        assert!(Target::parse("ws://127.0.0.1:1/", false).is_err());
        assert!(Target::parse("not a url", true).is_err());
    }

    #[test]
    fn source_plan() {
        let t = Target::parse("ws://127.0.0.1:8080/ws", true).expect("parse");
        let range = (32768, 60999); // 28232 ports → 14116 per address
        assert!(SourcePlan::new(&t, 10_000, 0, range).is_empty());
        let p = SourcePlan::new(&t, 15_000, 0, range);
        assert_eq!(p.len(), 2);
        assert_eq!(p.for_index(0), Some("127.0.0.2".parse().expect("ip")));
        assert_eq!(p.for_index(1), Some("127.0.0.3".parse().expect("ip")));
        assert_eq!(p.for_index(2), Some("127.0.0.2".parse().expect("ip")));
        assert_eq!(SourcePlan::new(&t, 10, 4, range).len(), 4);
        assert_eq!(SourcePlan::new(&t, 10, 999, range).len(), 250);
        let remote = Target {
            addr: "192.0.2.1:80".parse().expect("addr"),
            ..t
        };
        assert!(SourcePlan::new(&remote, 50_000, 4, range).is_empty());
    }
}
