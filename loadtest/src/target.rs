//! Where connections go and where they come from.
//!
//! Owns turning `ws://host:port/path?query` and `http://…` URLs into a
//! resolved socket address plus the `Host` header and request target, lists of
//! URLs (`--url a,b`) and how subscribers are dealt over them (round-robin), and
//! the source-address plan: on loopback, when one source address would not have
//! enough ephemeral ports for all connections, client sockets are bound to
//! 127.0.0.2, 127.0.0.3, … round-robin (every 127/8 address is local on Linux).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use anyhow::{Context, Result, bail, ensure};
use http::Uri;

/// A resolved endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// `wss://`: TLS, the certificate checked against `host`.
    pub tls: bool,
    /// The URL's host (without brackets).
    pub host: String,
    /// Resolved address (first result).
    pub addr: SocketAddr,
    /// Value for the `Host` header.
    pub host_header: String,
    /// Request target: path and query, at least "/".
    pub path: String,
}

impl Target {
    /// Parses and resolves a `ws://` or `wss://` (WebSocket) or `http://` (publish) URL.
    /// Publishing over `https://` is refused (publish over `wss://` instead).
    pub fn parse(url: &str, want_ws: bool) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        let scheme = uri.scheme_str().unwrap_or("");
        let tls = match (scheme, want_ws) {
            ("ws", true) | ("http", false) => false,
            ("wss", true) => true,
            ("https", false) => {
                bail!("{url}: publishing over https is not supported; use --pub-url wss://…")
            }
            _ if want_ws => bail!("{url}: expected a ws:// or wss:// URL"),
            _ => bail!("{url}: expected an http:// URL"),
        };
        let host = uri.host().with_context(|| format!("{url}: no host"))?;
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
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
            tls,
            host: bare.to_string(),
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

/// Splits list flag values into single URLs.
///
/// Each value may hold several URLs separated by commas (and the flag may be
/// repeated). A comma separates two URLs when a `scheme://` follows it, or
/// nothing (a trailing or doubled comma gives an empty entry, which is an
/// error); any other comma belongs to the URL (e.g. `?topics=a,b`). Entries
/// are trimmed of surrounding whitespace.
pub fn split_url_list(values: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for value in values {
        let mut start = 0;
        for (i, _) in value.match_indices(',') {
            let rest = value[i + 1..].trim_start();
            if rest.is_empty() || rest.starts_with(',') || starts_with_scheme(rest) {
                out.push(value[start..i].trim().to_string());
                start = i + 1;
            }
        }
        out.push(value[start..].trim().to_string());
    }
    if let Some(pos) = out.iter().position(String::is_empty) {
        bail!(
            "empty entry #{} in the URL list {values:?} (stray comma?)",
            pos + 1
        );
    }
    Ok(out)
}

/// Whether `s` begins with `scheme://` (RFC 3986 scheme characters).
fn starts_with_scheme(s: &str) -> bool {
    let Some(colon) = s.find("://") else {
        return false;
    };
    let scheme = &s[..colon];
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// One or more endpoints that connections are dealt over round-robin:
/// connection `i` goes to endpoint `i mod n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// Never empty.
    list: Vec<Target>,
}

impl Targets {
    /// Whether some endpoint is `wss://`.
    pub fn any_tls(&self) -> bool {
        self.list.iter().any(|t| t.tls)
    }

    /// Wraps a non-empty list.
    pub fn new(list: Vec<Target>) -> Result<Self> {
        ensure!(!list.is_empty(), "no URL given");
        Ok(Self { list })
    }

    /// Parses and resolves every URL of `urls` (see [`Target::parse`]); the
    /// error names the failing entry when there are several.
    pub fn parse(urls: &[String], want_ws: bool) -> Result<Self> {
        let n = urls.len();
        let list = urls
            .iter()
            .enumerate()
            .map(|(i, u)| match Target::parse(u, want_ws) {
                Err(e) if n > 1 => Err(e.context(format!("URL #{} of {n}", i + 1))),
                r => r,
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(list)
    }

    /// Index of the endpoint connection `i` goes to.
    pub fn index_for(&self, i: usize) -> usize {
        i % self.list.len()
    }

    /// The endpoint connection `i` goes to.
    pub fn for_index(&self, i: usize) -> &Target {
        &self.list[self.index_for(i)]
    }

    /// How many of `connections` connections go to each endpoint.
    pub fn spread(&self, connections: usize) -> Vec<usize> {
        let n = self.list.len();
        (0..n)
            .map(|k| connections / n + usize::from(k < connections % n))
            .collect()
    }

    /// The first endpoint.
    pub fn first(&self) -> &Target {
        &self.list[0]
    }

    /// All endpoints, in order.
    pub fn as_slice(&self) -> &[Target] {
        &self.list
    }

    /// Number of endpoints (≥ 1).
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Always false (there is at least one endpoint); for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The URLs as given, comma-joined (the form `--url` accepts).
    pub fn joined(&self) -> String {
        self.list
            .iter()
            .map(|t| t.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
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
        let t = Target::parse("wss://localhost:1/ws", true).expect("wss");
        assert!(t.tls && t.host == "localhost");
        assert!(Target::parse("https://127.0.0.1:1/", false).is_err());
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

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn url_lists_split_on_commas_before_a_scheme() {
        let split = |v: &[&str]| split_url_list(&strings(v));
        assert_eq!(
            split(&["ws://a:1/ws"]).expect("one"),
            strings(&["ws://a:1/ws"])
        );
        assert_eq!(
            split(&["ws://a:1/ws?topic=x,ws://b:2/ws?topic=x"]).expect("two"),
            strings(&["ws://a:1/ws?topic=x", "ws://b:2/ws?topic=x"])
        );
        // Repeated flag, commas, spaces around them: all concatenated in order.
        assert_eq!(
            split(&["ws://a:1/, ws://b:2/", " ws://c:3/ "]).expect("three"),
            strings(&["ws://a:1/", "ws://b:2/", "ws://c:3/"])
        );
        // A comma not followed by a scheme stays inside the URL.
        assert_eq!(
            split(&["ws://a:1/ws?topics=x,y,ws://b:2/ws?topics=x,y"]).expect("query commas"),
            strings(&["ws://a:1/ws?topics=x,y", "ws://b:2/ws?topics=x,y"])
        );
        // Any scheme separates (Target::parse rejects the wrong ones later).
        assert_eq!(
            split(&["ws://a:1/,http://b:2/"]).expect("other scheme"),
            strings(&["ws://a:1/", "http://b:2/"])
        );
        assert!(split(&["ws://a:1/,"]).is_err(), "trailing comma");
        assert!(split(&["ws://a:1/,,ws://b:2/"]).is_err(), "doubled comma");
        assert!(split(&[",ws://a:1/"]).is_err(), "leading comma");
        assert!(split(&[""]).is_err(), "empty value");
        assert!(split(&["ws://a:1/", " "]).is_err(), "blank value");
    }

    #[test]
    fn scheme_detection() {
        assert!(starts_with_scheme("ws://x"));
        assert!(starts_with_scheme("svn+ssh://x"));
        assert!(!starts_with_scheme("x"));
        assert!(!starts_with_scheme("1ws://x"));
        assert!(!starts_with_scheme("a b://x"));
        assert!(!starts_with_scheme("y&ws://x"));
    }

    #[test]
    fn targets_round_robin() {
        let urls = strings(&[
            "ws://127.0.0.1:1/a",
            "ws://127.0.0.1:2/b",
            "ws://127.0.0.1:3/c",
        ]);
        let t = Targets::parse(&urls, true).expect("parse");
        assert_eq!(t.len(), 3);
        assert!(!t.is_empty());
        let ports: Vec<u16> = (0..7).map(|i| t.for_index(i).addr.port()).collect();
        assert_eq!(ports, vec![1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(t.index_for(4), 1);
        assert_eq!(t.first().path, "/a");
        assert_eq!(t.spread(7), vec![3, 2, 2]);
        assert_eq!(t.spread(2), vec![1, 1, 0]);
        assert_eq!(t.spread(0), vec![0, 0, 0]);
        assert_eq!(
            t.joined(),
            "ws://127.0.0.1:1/a,ws://127.0.0.1:2/b,ws://127.0.0.1:3/c"
        );
        // spread() agrees with for_index() for every count.
        for n in 0..20 {
            let mut counts = vec![0; 3];
            for i in 0..n {
                counts[t.index_for(i)] += 1;
            }
            assert_eq!(counts, t.spread(n), "{n} connections");
        }
        let one = Targets::parse(&urls[..1], true).expect("one");
        assert!((0..5).all(|i| one.for_index(i).addr.port() == 1));
        assert_eq!(one.spread(5), vec![5]);
    }

    #[test]
    fn targets_errors_name_the_entry() {
        let urls = strings(&["ws://127.0.0.1:1/", "http://127.0.0.1:2/"]);
        let e = Targets::parse(&urls, true).expect_err("http refused");
        let msg = format!("{e:#}");
        assert!(msg.contains("URL #2 of 2"), "{msg}");
        assert!(msg.contains("expected a ws:// or wss:// URL"), "{msg}");
        assert!(Targets::parse(&[], true).is_err());
        assert!(Targets::new(Vec::new()).is_err());
    }
}
