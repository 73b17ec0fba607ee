//! Auth: JSON Web Tokens — where a request carries one, and turning one into a grant.
//!
//! This module owns the token's format and nothing the engine does with it: it verifies
//! a JWT (signature, algorithm, `exp`, `nbf`, `aud`, `iss`) with the `jsonwebtoken`
//! crate and reads its hubcast claims (`sub`, `topics`, `publish`) into the engine's
//! [`Grant`], plain data handed down through the engine's [`Verifier`] seam. The upgrade
//! (`upgrade.rs`), `POST /publish` (`http.rs`) and the engine's v1 `connect`/`refresh`
//! commands all verify through the one [`JwtVerifier`] the server builds at start.
//!
//! Rules, each for a reason:
//!
//! - **One algorithm, pinned to the key.** `--jwt-secret` accepts HS256 only; an RSA
//!   public key RS256 only; an EC P-256 public key ES256 only. The header's `alg` must be
//!   exactly that, or the token is refused before any signature is computed: `none`
//!   never verifies, and neither does an HS256 token "signed" with the server's public
//!   key as the HMAC secret (the classic RS/HS confusion), because the server's public
//!   key is never used as a secret.
//! - **`exp` and `sub` are required**; `nbf` is checked when present; `aud` and `iss`
//!   are required and checked when configured. Without a configured audience, a token
//!   that names one is refused (RFC 7519 §4.1.3: it was meant for someone else).
//! - **Tokens stay out of logs.** Nothing here logs, and [`TokenError`]'s messages name
//!   what failed, never the token or a claim's value.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::Request;
use hyper::header::AUTHORIZATION;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use serde_json::Value;

use crate::config::Config;
use crate::engine::grant::{Grant, Patterns, TokenError, Verified, Verifier};

/// Longest time a connection's expiry timer is set for: a token that claims to live
/// longer (`exp` in the year 3000) is still closed, after a century.
const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Why the configured key cannot be used (reported at start).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The public key file could not be read.
    #[error("cannot read the JWT public key {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file holds a private key: the server only ever needs the public half.
    #[error("{path} holds a private key: give hubcast the public key only")]
    Private {
        /// The file.
        path: PathBuf,
    },
    /// The file is not an RSA or EC P-256 public key in PEM.
    #[error("{path} is not an RSA or EC P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`)")]
    Format {
        /// The file.
        path: PathBuf,
    },
}

/// Verifies JWTs with the configured key, audience, issuer and leeway.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl JwtVerifier {
    /// The verifier `config` asks for, or `None` when it sets neither a JWT secret nor a
    /// public key. Reads the key file.
    pub fn from_config(config: &Config) -> Result<Option<Self>, KeyError> {
        let (key, algorithm) = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(secret), _) => (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(path)) => public_key(path)?,
            (None, None) => return Ok(None),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(audience) = &config.jwt_audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(JwtVerifier { key, validation }))
    }
}

/// Reads a PEM public key: RSA (PKCS#1 or SPKI) → RS256, EC P-256 (SPKI) → ES256.
fn public_key(path: &Path) -> Result<(DecodingKey, Algorithm), KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
        return Err(KeyError::Private {
            path: path.to_owned(),
        });
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    match DecodingKey::from_ec_pem(&pem) {
        // An uncompressed P-256 point: 0x04, then 32 bytes each of x and y. P-384 and
        // other curves would verify nothing under ES256: refuse them at start.
        Ok(key) if matches!(key.kind(), DecodingKeyKind::SecretOrDer(p) if p.len() == 65) => {
            Ok((key, Algorithm::ES256))
        }
        _ => Err(KeyError::Format {
            path: path.to_owned(),
        }),
    }
}

impl Verifier for JwtVerifier {
    fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation)
            .map_err(|e| token_error(e.kind()))?;
        let grant = grant_of(&data.claims, self.validation.leeway, SystemTime::now())?;
        Ok(Verified {
            grant,
            claims: data.claims,
        })
    }
}

/// The hubcast claims of a verified token, at wall-clock time `now`.
fn grant_of(claims: &Value, leeway: u64, now: SystemTime) -> Result<Grant, TokenError> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(TokenError::Claim("sub"))?;
    // Validation has checked that `exp` is a number and not past (whole seconds).
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or(TokenError::Claim("exp"))?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let left = exp + leeway as f64 - now.as_secs_f64();
    // Within `exp`'s own second the library still accepts the token; the connection's
    // timer would close it at once, so refuse it here already.
    if left.is_nan() || left <= 0.0 {
        return Err(TokenError::Expired);
    }
    let left = Duration::try_from_secs_f64(left)
        .unwrap_or(MAX_LIFETIME)
        .min(MAX_LIFETIME);
    Ok(Grant {
        subject: Arc::from(subject),
        subscribe: patterns(claims, "topics")?.unwrap_or_default(),
        publish: patterns(claims, "publish")?,
        // A float `exp` counts from its whole second, as the library reads it.
        expires: exp as u64,
        deadline: Instant::now() + left,
    })
}

/// A claim that lists topic patterns: `None` when absent (or `null`), an error when it
/// is not an array of strings.
fn patterns(claims: &Value, name: &'static str) -> Result<Option<Patterns>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| p.as_str().ok_or(TokenError::Claim(name)))
            .collect::<Result<Vec<_>, _>>()
            .map(|list| Some(Patterns::new(list))),
        Some(_) => Err(TokenError::Claim(name)),
    }
}

/// What a `jsonwebtoken` failure means to the client.
fn token_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => TokenError::Algorithm,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            TokenError::Claim(match claim.as_str() {
                "exp" => "exp",
                "sub" => "sub",
                "aud" => "aud",
                "iss" => "iss",
                "nbf" => "nbf",
                _ => "of a registered name",
            })
        }
        _ => TokenError::Malformed,
    }
}

/// The credentials of an `Authorization: Bearer …` header (the scheme is
/// case-insensitive; whitespace around the credentials is ignored).
pub(crate) fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The token an upgrade request carries: `Authorization: Bearer …` (for clients that can
/// set headers), else the `token` query parameter (browsers cannot set headers on a
/// WebSocket), percent-decoded like a topic. `None` without either; an error for a query
/// naming two tokens or one that is not UTF-8.
pub(crate) fn token_of<B>(req: &Request<B>) -> Result<Option<Cow<'_, str>>, &'static str> {
    if let Some(token) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
    {
        return Ok(Some(Cow::Borrowed(token)));
    }
    let mut found = None;
    for raw in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("token="))
    {
        if found.is_some() {
            return Err("one token per request");
        }
        let token = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| "the token must be valid UTF-8")?;
        found = Some(token);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn claims_become_a_grant() {
        let claims = json!({
            "sub": "alice", "exp": 1_000_100, "topics": ["news", "prices.*"],
            "publish": ["chat.*"], "plan": "gold"
        });
        let g = grant_of(&claims, 0, at(1_000_000)).expect("grant");
        assert_eq!(&*g.subject, "alice");
        assert_eq!(g.expires, 1_000_100);
        assert!(g.may_subscribe("prices.EURUSD") && !g.may_subscribe("chat.x"));
        assert!(g.may_publish("chat.x", false, true));
        let left = g.deadline.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(99) && left <= Duration::from_secs(100));
    }

    #[test]
    fn absent_claims_grant_nothing_and_wrong_shapes_are_refused() {
        let g = grant_of(&json!({"sub": "a", "exp": 10}), 0, at(5)).expect("grant");
        assert!(!g.may_subscribe("default"), "no topics claim: no topic");
        assert!(g.publish.is_none(), "no publish claim: the mode decides");
        for (claims, claim) in [
            (json!({"sub": "a", "exp": 10, "topics": "news"}), "topics"),
            (json!({"sub": "a", "exp": 10, "publish": [1]}), "publish"),
            (json!({"sub": 7, "exp": 10}), "sub"),
            (json!({"sub": "", "exp": 10}), "sub"),
        ] {
            assert_eq!(
                grant_of(&claims, 0, at(5)).expect_err("refused"),
                TokenError::Claim(claim)
            );
        }
    }

    #[test]
    fn expiry_counts_the_leeway_and_refuses_the_last_second() {
        let claims = json!({"sub": "a", "exp": 100});
        assert_eq!(
            grant_of(&claims, 0, at(100)).expect_err("at exp"),
            TokenError::Expired
        );
        let g = grant_of(&claims, 5, at(100)).expect("within the leeway");
        assert!(g.deadline > Instant::now() + Duration::from_secs(4));
        let far = json!({"sub": "a", "exp": 1e300});
        let g = grant_of(&far, 0, at(100)).expect("far future");
        assert!(g.deadline <= Instant::now() + MAX_LIFETIME);
    }

    #[test]
    fn token_from_header_then_query() {
        let req = |uri: &str, auth: Option<&str>| {
            let mut b = Request::get(uri);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(()).expect("request")
        };
        let r = req("/ws?token=q", Some("Bearer h"));
        assert_eq!(
            token_of(&r).expect("ok").as_deref(),
            Some("h"),
            "header wins"
        );
        let r = req("/ws?topic=a&token=a%2Eb", Some("Basic xyz"));
        assert_eq!(token_of(&r).expect("ok").as_deref(), Some("a.b"));
        assert_eq!(token_of(&req("/ws?topic=a", None)).expect("ok"), None);
        assert!(token_of(&req("/ws?token=a&token=b", None)).is_err());
        assert!(token_of(&req("/ws?token=%ff", None)).is_err());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer("bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer("Basic s3cret"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
