//! Grants: what a verified token lets one client do — which topics it may subscribe to
//! and publish to, and until when — and the seam through which tokens are verified.
//!
//! The engine enforces grants (on subscribe and publish commands, on chat messages and
//! at expiry) but never sees a token's format: the edge verifies tokens (JWT, in
//! `edge/auth.rs`) and hands the engine a [`Grant`], plain data, through the
//! [`Verifier`] seam — the same way the cluster floor hands it a `Backplane`. Nothing
//! here runs on the fan-out path: a grant is looked at when a client sends a command or
//! a message, and at its deadline by the shard's timer.
//!
//! **Topic patterns** ([`Patterns`]), as they appear in the `topics` and `publish`
//! claims:
//!
//! | pattern | matches |
//! |---|---|
//! | `*` | every topic |
//! | `prefix.*` (ends in `.*`) | every topic that starts with `prefix.` and has at least one byte after the dot — any bytes, dots included: `prices.*` matches `prices.EURUSD` and `prices.fx.EURUSD`, not `prices`, `prices.` or `pricesEURUSD` |
//! | anything else | exactly that topic, byte for byte (a `*` elsewhere is an ordinary character: `a*` is the topic named `a*`) |
//!
//! An unknown spelling never widens a grant: `prices*` is the exact topic `prices*`, so
//! a mistyped wildcard denies rather than allows.

use std::sync::Arc;
use std::time::Instant;

/// Close code for a client whose token's `exp` passed without a refresh (4000–4999 is
/// for applications, RFC 6455 §7.4.2; 4401 echoes HTTP's 401): get a new token and
/// reconnect.
pub const TOKEN_EXPIRED: u16 = 4401;

/// Close code for a protocol v1 client admitted without a token that did not `connect`
/// with a valid one in time (4408 echoes HTTP's 408).
pub const CONNECT_TIMEOUT: u16 = 4408;

/// A set of topic patterns (see the module docs for what each matches).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns {
    /// `*` was among them.
    all: bool,
    exact: Box<[Box<str>]>,
    /// `prefix.*` patterns, kept as `prefix.` (with the dot).
    prefixes: Box<[Box<str>]>,
}

impl Patterns {
    /// Reads patterns as they appear in a claim.
    ///
    /// ```
    /// use hubcast::engine::grant::Patterns;
    ///
    /// let p = Patterns::new(["news", "prices.*"]);
    /// assert!(p.allows("news") && p.allows("prices.EURUSD") && p.allows("prices.fx.EURUSD"));
    /// assert!(!p.allows("prices") && !p.allows("prices.") && !p.allows("newsroom"));
    /// ```
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Self {
        let (mut all, mut exact, mut prefixes) = (false, Vec::new(), Vec::new());
        for p in patterns {
            let p = p.as_ref();
            if p == "*" {
                all = true;
            } else if let Some(prefix) = p.strip_suffix('*').filter(|s| s.ends_with('.')) {
                prefixes.push(Box::from(prefix));
            } else {
                exact.push(Box::from(p));
            }
        }
        Patterns {
            all,
            exact: exact.into_boxed_slice(),
            prefixes: prefixes.into_boxed_slice(),
        }
    }

    /// Whether some pattern matches `topic`.
    pub fn allows(&self, topic: &str) -> bool {
        self.all
            || self.exact.iter().any(|e| **e == *topic)
            || self
                .prefixes
                .iter()
                .any(|p| topic.len() > p.len() && topic.starts_with(&**p))
    }
}

/// What one verified token allows its client.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Who the client is (the token's `sub`): shown in logs, and a refreshed token must
    /// name the same.
    pub subject: Arc<str>,
    /// Topics it may subscribe to (the `topics` claim; absent: none).
    pub subscribe: Patterns,
    /// Topics it may publish to (the `publish` claim). `None` when the claim is absent:
    /// then the mode decides (see [`Grant::may_publish`]).
    pub publish: Option<Patterns>,
    /// The token's `exp`, in seconds since the UNIX epoch (as the client sent it).
    pub expires: u64,
    /// When the token stops being valid (`exp` plus the configured leeway), on this
    /// machine's monotonic clock: the connection is closed then unless it refreshed.
    pub deadline: Instant,
}

impl Grant {
    /// Whether the client may subscribe to `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.allows(topic)
    }

    /// Whether the client may publish to `topic`, which it is (`subscribed`) or is not
    /// subscribed to, on a server in feed mode (`feed`) or chat mode. With a `publish`
    /// claim, its patterns decide, in either mode. Without one: in feed mode nothing
    /// (clients listen); in chat mode the topics the client is subscribed to — what a
    /// chat client says goes to its own topics.
    pub fn may_publish(&self, topic: &str, subscribed: bool, feed: bool) -> bool {
        match &self.publish {
            Some(patterns) => patterns.allows(topic),
            None => !feed && subscribed,
        }
    }
}

/// A token that passed verification: the grant the engine enforces, and every claim, for
/// the embedder's admission hook.
#[derive(Debug, Clone)]
pub struct Verified {
    /// What the token allows.
    pub grant: Grant,
    /// The token's claims as sent (a JSON object).
    pub claims: serde_json::Value,
}

/// Why a token was refused. The messages are short, name no claim value and never quote
/// the token, so they are safe to send to the client and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a well-formed token (segments, base64, JSON of the header).
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than the one configured (`none` included).
    #[error("token algorithm not accepted")]
    Algorithm,
    /// The signature does not match the configured key.
    #[error("bad token signature")]
    Signature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is still in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `aud` does not name this server's audience (or names one when none is configured).
    #[error("token audience not accepted")]
    Audience,
    /// `iss` is not the configured issuer.
    #[error("token issuer not accepted")]
    Issuer,
    /// A required claim is missing or has the wrong type.
    #[error("token claim {0} is missing or malformed")]
    Claim(&'static str),
    /// A refreshed token names another subject than the connection's.
    #[error("token is for another subject")]
    OtherSubject,
}

/// Turns a token into a grant. The edge provides one (JWT) when auth is configured; the
/// engine calls it for protocol v1 `connect` and `refresh` commands. It runs on a shard
/// thread, so it must not block.
pub trait Verifier: Send + Sync {
    /// Verifies `token` now.
    fn verify(&self, token: &str) -> Result<Verified, TokenError>;
}

/// Where a client stands with auth. Only present when auth is configured.
#[derive(Debug)]
pub struct Access {
    /// What the client may do.
    pub state: AccessState,
    /// The deadline the shard's timer is set to for this client: one timer entry per
    /// client, re-armed when it fires early (after a refresh), so a client refreshing
    /// in a loop adds no timer entries.
    pub(crate) armed: Instant,
}

/// The two states of an authenticated server's client.
#[derive(Debug)]
pub enum AccessState {
    /// A protocol v1 client admitted without a token: it may only send `connect`, until
    /// the deadline.
    Pending {
        /// When it is closed if it has not connected.
        until: Instant,
    },
    /// Verified: the grant applies.
    Granted(Grant),
}

impl Access {
    /// Access in `state`, with the timer armed at its deadline.
    pub fn new(state: AccessState) -> Self {
        let mut a = Access {
            state,
            armed: Instant::now(),
        };
        a.armed = a.deadline();
        a
    }

    /// When the client must be closed unless something changes: the end of the wait for
    /// `connect`, or the token's deadline.
    pub fn deadline(&self) -> Instant {
        match &self.state {
            AccessState::Pending { until } => *until,
            AccessState::Granted(g) => g.deadline,
        }
    }

    /// The grant, once verified.
    pub fn grant(&self) -> Option<&Grant> {
        match &self.state {
            AccessState::Granted(g) => Some(g),
            AccessState::Pending { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(publish: Option<&[&str]>) -> Grant {
        Grant {
            subject: Arc::from("alice"),
            subscribe: Patterns::new(["news", "prices.*"]),
            publish: publish.map(|p| Patterns::new(p.iter())),
            expires: 0,
            deadline: Instant::now(),
        }
    }

    #[test]
    fn exact_names_match_byte_for_byte() {
        let p = Patterns::new(["news", "a b", "é"]);
        assert!(p.allows("news") && p.allows("a b") && p.allows("é"));
        for t in ["new", "newsy", "News", "news.", "a", "e"] {
            assert!(!p.allows(t), "{t}");
        }
    }

    #[test]
    fn prefix_wildcards_need_the_dot_and_something_after_it() {
        let p = Patterns::new(["prices.*"]);
        for t in ["prices.EURUSD", "prices.fx.EURUSD", "prices.*", "prices.."] {
            assert!(p.allows(t), "{t}");
        }
        for t in ["prices", "prices.", "pricesEURUSD", "xprices.a", "PRICES.a"] {
            assert!(!p.allows(t), "{t}");
        }
        // A bare `.*` is the prefix `.`.
        let dot = Patterns::new([".*"]);
        assert!(dot.allows(".a") && !dot.allows(".") && !dot.allows("a.b"));
    }

    #[test]
    fn a_star_elsewhere_is_an_ordinary_character() {
        let p = Patterns::new(["prices*", "a.*.b", "*x"]);
        assert!(p.allows("prices*") && p.allows("a.*.b") && p.allows("*x"));
        for t in ["prices", "pricesX", "prices.a", "a.z.b", "yx"] {
            assert!(!p.allows(t), "{t}");
        }
    }

    #[test]
    fn star_alone_matches_everything_and_nothing_matches_nothing() {
        let all = Patterns::new(["*"]);
        assert!(all.allows("x") && all.allows("a.b.c"));
        let none = Patterns::new(Vec::<String>::new());
        assert!(!none.allows("x"));
        let empty = Patterns::new([""]);
        assert!(!empty.allows("x"), "an empty pattern names no topic");
    }

    #[test]
    fn publishing_follows_the_claim_then_the_mode() {
        let claim = grant(Some(&["alerts.*"]));
        for feed in [false, true] {
            assert!(claim.may_publish("alerts.x", false, feed));
            assert!(
                !claim.may_publish("news", true, feed),
                "the claim decides, even on a subscribed topic"
            );
        }
        let none = grant(None);
        assert!(none.may_publish("news", true, false), "chat: own topics");
        assert!(!none.may_publish("other", false, false), "chat: only those");
        assert!(!none.may_publish("news", true, true), "feed: nothing");
        let empty = grant(Some(&[]));
        assert!(
            !empty.may_publish("news", true, false),
            "an empty claim: none"
        );
    }

    #[test]
    fn access_deadline_follows_the_state() {
        let until = Instant::now();
        let pending = Access::new(AccessState::Pending { until });
        assert_eq!((pending.deadline(), pending.armed), (until, until));
        assert!(pending.grant().is_none());
        let g = grant(None);
        let granted = Access::new(AccessState::Granted(g.clone()));
        assert_eq!(granted.deadline(), g.deadline);
        assert_eq!(granted.grant().map(|g| &*g.subject), Some("alice"));
    }
}
