//! The client side of the WebSocket opening handshake (RFC 6455 §4.1).
//!
//! Owns building the `GET … Upgrade: websocket` request and validating the
//! server's answer: status 101, `Upgrade`/`Connection` headers and the
//! `Sec-WebSocket-Accept` digest. Bytes that follow the response head are
//! already WebSocket frames and are handed back to the caller. Extensions are
//! offered only with `--deflate`: then permessage-deflate with
//! `server_no_context_takeover` ([`crate::deflate::OFFER`]), and the server
//! must agree to exactly that; otherwise none, and any extension in the answer
//! is an error. A subprotocol (`hubcast.v1`) is offered only when asked for,
//! and then the server must select it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::{Digest, Sha1};

/// RFC 6455 GUID appended to the key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest response head we accept.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why a handshake failed (used as a grouping key in reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The server answered with another status.
    Status(u16),
    /// Malformed HTTP response.
    Malformed(String),
    /// Response head larger than [`MAX_RESPONSE_HEAD`].
    TooLarge,
    /// `Upgrade: websocket` / `Connection: upgrade` missing.
    NotUpgraded,
    /// `Sec-WebSocket-Accept` missing or wrong.
    BadAccept,
    /// The server picked an extension we did not offer.
    UnexpectedExtension,
    /// We offered permessage-deflate and the server declined it, or answered in a
    /// way we cannot use.
    Deflate(String),
    /// We offered a subprotocol and the server did not select it: it sent no
    /// `Sec-WebSocket-Protocol` (`got` = `None`) or another one.
    Subprotocol {
        /// What we offered.
        wanted: String,
        /// What the server selected.
        got: Option<String>,
    },
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(s) => write!(f, "HTTP status {s}"),
            Self::Malformed(e) => write!(f, "malformed response ({e})"),
            Self::TooLarge => f.write_str("response head too large"),
            Self::NotUpgraded => f.write_str("missing Upgrade/Connection headers"),
            Self::BadAccept => f.write_str("bad Sec-WebSocket-Accept"),
            Self::UnexpectedExtension => f.write_str("unrequested extension"),
            Self::Deflate(why) => write!(f, "permessage-deflate not agreed: {why}"),
            Self::Subprotocol { wanted, got: None } => write!(
                f,
                "server did not select subprotocol {wanted} (no Sec-WebSocket-Protocol in its 101)"
            ),
            Self::Subprotocol {
                wanted,
                got: Some(got),
            } => write!(f, "server selected subprotocol {got:?} instead of {wanted}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Base64 form of 16 random bytes, for `Sec-WebSocket-Key`.
pub fn make_key(random: [u8; 16]) -> String {
    B64.encode(random)
}

/// The `Sec-WebSocket-Accept` value a server must send for `key`.
pub fn accept_for(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    B64.encode(h.finalize())
}

/// What a connection offers in its handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offer<'a> {
    /// A subprotocol (`Sec-WebSocket-Protocol`) the server must select.
    pub protocol: Option<&'a str>,
    /// permessage-deflate ([`crate::deflate::OFFER`]), which the server must accept.
    pub deflate: bool,
}

/// The upgrade request, with the headers of `offer`.
pub fn request(host: &str, path: &str, key: &str, offer: Offer<'_>) -> Vec<u8> {
    let protocol = offer
        .protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let deflate = if offer.deflate {
        format!("Sec-WebSocket-Extensions: {}\r\n", crate::deflate::OFFER)
    } else {
        String::new()
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{protocol}{deflate}\
         User-Agent: hubcast-loadtest\r\n\r\n"
    )
    .into_bytes()
}

fn header_has_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value)
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Validates the response head in `buf`. `Ok(None)`: need more bytes;
/// `Ok(Some(n))`: the head is `buf[..n]`, the rest are frames. The server must
/// have agreed to what `offer` offered.
pub fn parse_response(
    buf: &[u8],
    key: &str,
    offer: Offer<'_>,
) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(HandshakeError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(HandshakeError::Status(code));
    }
    let (mut upgrade, mut connection, mut accept_ok) = (false, false, false);
    let mut selected: Option<&[u8]> = None;
    let mut extensions: Option<&[u8]> = None;
    let expected = accept_for(key);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade |= header_has_token(h.value, "websocket");
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection |= header_has_token(h.value, "upgrade");
        } else if h.name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept_ok = h.value == expected.as_bytes();
        } else if h.name.eq_ignore_ascii_case("sec-websocket-extensions") && !h.value.is_empty() {
            if !offer.deflate || extensions.is_some() {
                return Err(HandshakeError::UnexpectedExtension);
            }
            extensions = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("sec-websocket-protocol") {
            selected = Some(h.value);
        }
    }
    if !(upgrade && connection) {
        return Err(HandshakeError::NotUpgraded);
    }
    if !accept_ok {
        return Err(HandshakeError::BadAccept);
    }
    if offer.deflate {
        let answer = extensions.ok_or_else(|| HandshakeError::Deflate("declined".into()))?;
        crate::deflate::check_answer(answer).map_err(HandshakeError::Deflate)?;
    }
    if let Some(wanted) = offer.protocol
        && selected.map(<[u8]>::trim_ascii) != Some(wanted.as_bytes())
    {
        return Err(HandshakeError::Subprotocol {
            wanted: wanted.to_string(),
            got: selected.map(|v| String::from_utf8_lossy(v).into_owned()),
        });
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> Offer<'static> {
        Offer {
            protocol: Some("hubcast.v1"),
            deflate: false,
        }
    }

    #[test]
    fn deflate_is_offered_and_must_be_agreed() {
        let deflate = Offer {
            protocol: None,
            deflate: true,
        };
        let r = String::from_utf8(request("h:1", "/ws", "k", deflate)).expect("utf8");
        assert!(r.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
        ));
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
        let with = |extra: &str| format!("{head}{extra}\r\n").into_bytes();
        let ok =
            with("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n");
        assert_eq!(parse_response(&ok, key, deflate), Ok(Some(ok.len())));
        assert_eq!(
            parse_response(&ok, key, Offer::default()),
            Err(HandshakeError::UnexpectedExtension),
            "not offered"
        );
        let declined = with("");
        let e = parse_response(&declined, key, deflate).expect_err("declined");
        assert!(e.to_string().contains("not agreed: declined"), "{e}");
        let takeover = with("Sec-WebSocket-Extensions: permessage-deflate\r\n");
        let e = parse_response(&takeover, key, deflate).expect_err("context takeover");
        assert!(e.to_string().contains("server_no_context_takeover"), "{e}");
    }

    #[test]
    fn rfc_example_accept() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(make_key([0; 16]), "AAAAAAAAAAAAAAAAAAAAAA==");
    }

    #[test]
    fn request_shape() {
        let r =
            String::from_utf8(request("h:1", "/ws?topic=t", "k", Offer::default())).expect("utf8");
        assert!(r.starts_with("GET /ws?topic=t HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(r.contains("Sec-WebSocket-Key: k\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        assert!(!r.contains("Sec-WebSocket-Protocol"));
        let r = String::from_utf8(request("h:1", "/ws", "k", v1())).expect("utf8");
        assert!(r.contains("\r\nSec-WebSocket-Protocol: hubcast.v1\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn accepts_valid_response_and_keeps_trailing_frames() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut resp = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n\
            connection: keep-alive, Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            .to_vec();
        let head = resp.len();
        resp.extend_from_slice(&[0x81, 0x01, b'x']);
        assert_eq!(parse_response(&resp, key, Offer::default()), Ok(Some(head)));
        assert_eq!(
            parse_response(&resp[..head - 1], key, Offer::default()),
            Ok(None)
        );
    }

    #[test]
    fn rejects_bad_responses() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(
            parse_response(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
                key,
                Offer::default()
            ),
            Err(HandshakeError::Status(404))
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: nope\r\n\r\n",
                key,
                Offer::default()
            ),
            Err(HandshakeError::BadAccept)
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                key,
                Offer::default()
            ),
            Err(HandshakeError::NotUpgraded)
        );
        assert!(matches!(
            parse_response(b"NOT HTTP\r\n\r\n", key, Offer::default()),
            Err(HandshakeError::Malformed(_))
        ));
        assert_eq!(
            parse_response(&vec![b'a'; MAX_RESPONSE_HEAD + 1], key, Offer::default())
                .map_err(|_| ()),
            Err(())
        );
    }

    #[test]
    fn offered_subprotocol_must_be_selected() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
        let with = |extra: &str| format!("{head}{extra}\r\n").into_bytes();
        let ok = with("Sec-WebSocket-Protocol: hubcast.v1\r\n");
        assert_eq!(parse_response(&ok, key, v1()), Ok(Some(ok.len())));
        // Not offered: whatever the server says is left alone (as before).
        assert_eq!(
            parse_response(&ok, key, Offer::default()),
            Ok(Some(ok.len()))
        );
        let none = with("");
        let e = parse_response(&none, key, v1()).expect_err("not selected");
        assert_eq!(
            e,
            HandshakeError::Subprotocol {
                wanted: "hubcast.v1".into(),
                got: None
            }
        );
        assert!(
            e.to_string()
                .contains("did not select subprotocol hubcast.v1"),
            "{e}"
        );
        let other = with("Sec-WebSocket-Protocol: chat\r\n");
        let e = parse_response(&other, key, v1()).expect_err("other");
        assert!(
            e.to_string().contains("\"chat\" instead of hubcast.v1"),
            "{e}"
        );
    }
}
