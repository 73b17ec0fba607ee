//! The upgrader's origin check (gorilla's `CheckOrigin`): who may open a WebSocket.
//!
//! Browsers send `Origin` on every WebSocket handshake; without a check, any web page a
//! user visits could connect to hubcast with the user's cookies (cross-site WebSocket
//! hijacking). Non-browser clients usually send no `Origin` and are allowed.

use hyper::HeaderMap;
use hyper::header::{HOST, ORIGIN};

/// Which origins may upgrade, beyond same-origin requests and requests without `Origin`.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// Builds the policy from `--allow-origin` values (`*` allows any origin).
    pub fn new(allow: &[String]) -> Self {
        OriginPolicy {
            any: allow.iter().any(|o| o == "*"),
            allowed: allow
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request with these headers may upgrade.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(ORIGIN) else {
            return true;
        };
        if self.any {
            return true;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.allowed.contains(&origin) {
            return true;
        }
        // Same origin: the origin's authority equals the Host the browser connected to.
        let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
        match headers.get(HOST).and_then(|h| h.to_str().ok()) {
            Some(host) => !authority.is_empty() && authority.eq_ignore_ascii_case(host),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn default_allows_no_origin_and_same_origin_only() {
        let p = OriginPolicy::new(&[]);
        assert!(p.allows(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(p.allows(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(!p.allows(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!p.allows(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])));
    }

    #[test]
    fn allow_list_and_wildcard() {
        let p = OriginPolicy::new(&["https://app.example.com/".into()]);
        assert!(p.allows(&headers(&[
            ("host", "h:1"),
            ("origin", "https://APP.example.com")
        ])));
        assert!(!p.allows(&headers(&[
            ("host", "h:1"),
            ("origin", "https://other.example.com")
        ])));
        let any = OriginPolicy::new(&["*".into()]);
        assert!(any.allows(&headers(&[
            ("host", "h:1"),
            ("origin", "https://x.example")
        ])));
    }
}
