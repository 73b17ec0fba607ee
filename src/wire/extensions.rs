//! `Sec-WebSocket-Extensions`: which permessage-deflate offer to accept, and the answer
//! (RFC 6455 §9.1, RFC 7692 §5 and §7).
//!
//! A client lists offers in order of preference; the server accepts at most one, the
//! first it can honour, and declines the others by not naming them. hubcast compresses
//! each message once for every client, so it can only accept offers that let one
//! compressed frame serve them all:
//!
//! - it always answers `server_no_context_takeover` (RFC 7692 §7.1.1.1 allows that even
//!   when not asked): every message is compressed from an empty window;
//! - `server_max_window_bits` below 15 is declined — the compressor's window is 32 KiB
//!   and one frame cannot honour several limits; 15 is accepted and echoed;
//! - `client_max_window_bits` (with or without a value) is accepted and never answered:
//!   the inflater takes any window up to 32 KiB, and RFC 7692 §7.1.2.2 forbids the
//!   parameter in an answer to an offer without it;
//! - `client_no_context_takeover` is echoed: that client's messages are then inflated
//!   from an empty window each, and no inflate state outlives a message;
//! - an unknown or repeated parameter, or an invalid value, declines that offer.
//!
//! Pure parsing, no I/O; `edge/upgrade` puts the answer into the `101`.

/// The extension's name.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// permessage-deflate as agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deflate {
    /// The client does not use context takeover: each of its messages inflates from an
    /// empty window, so the inflate state is reset after every message.
    pub client_no_context_takeover: bool,
}

/// An accepted offer: what was agreed, and the header value that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// The agreed parameters.
    pub deflate: Deflate,
    /// The `Sec-WebSocket-Extensions` value of the `101` response.
    pub response: String,
}

/// Picks the first permessage-deflate offer hubcast can honour from the values of every
/// `Sec-WebSocket-Extensions` header of a request (in order); `None` declines them all.
///
/// ```
/// use hubcast::wire::extensions::negotiate;
/// // What Chromium offers.
/// let a = negotiate([&b"permessage-deflate; client_max_window_bits"[..]]).expect("accepted");
/// assert_eq!(a.response, "permessage-deflate; server_no_context_takeover");
/// // A window we cannot honour declines that offer; the next one is accepted.
/// let a = negotiate([&b"permessage-deflate; server_max_window_bits=10, permessage-deflate"[..]]);
/// assert_eq!(a.expect("second offer").response, "permessage-deflate; server_no_context_takeover");
/// ```
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreement> {
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for offer in split_outside_quotes(text, ',') {
            let mut parts = split_outside_quotes(offer, ';').into_iter();
            let name = parts.next().unwrap_or_default().trim();
            if !name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
                continue;
            }
            if let Some(agreement) = accept(parts) {
                return Some(agreement);
            }
        }
    }
    None
}

/// The agreement for one permessage-deflate offer's parameters, or `None` to decline it.
fn accept<'a>(params: impl Iterator<Item = &'a str>) -> Option<Agreement> {
    let (mut server_nct, mut client_nct) = (false, false);
    let (mut server_bits, mut client_bits) = (false, false);
    for param in params {
        let param = param.trim();
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param, None),
        };
        let seen = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => &mut server_nct,
            "client_no_context_takeover" if value.is_none() => &mut client_nct,
            "server_max_window_bits" => {
                // Only the full window: the one compressed frame must suit every client.
                if window_bits(value.as_deref()?)? != 15 {
                    return None;
                }
                &mut server_bits
            }
            "client_max_window_bits" => {
                if let Some(v) = value.as_deref() {
                    window_bits(v)?;
                }
                &mut client_bits
            }
            _ => return None, // unknown, empty, or a value where none belongs
        };
        if std::mem::replace(seen, true) {
            return None; // RFC 7692 §7: a parameter may appear once
        }
    }
    let mut response = format!("{PERMESSAGE_DEFLATE}; server_no_context_takeover");
    if client_nct {
        response.push_str("; client_no_context_takeover");
    }
    if server_bits {
        response.push_str("; server_max_window_bits=15");
    }
    Some(Agreement {
        deflate: Deflate {
            client_no_context_takeover: client_nct,
        },
        response,
    })
}

/// A window-bits value: 8 to 15, digits without a leading zero (RFC 7692 §7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// A parameter value: a token, or a quoted string (whose content must then be a token,
/// RFC 6455 §9.1). `None` when malformed.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return is_token(v).then(|| v.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    is_token(&out).then_some(out)
}

/// An HTTP token (RFC 7230 §3.2.6).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Splits at `sep`, except inside quoted strings (where `\` escapes the next character).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(values: &[&str]) -> Option<String> {
        negotiate(values.iter().map(|v| v.as_bytes())).map(|a| a.response)
    }

    const PLAIN: &str = "permessage-deflate; server_no_context_takeover";

    #[test]
    fn what_browsers_and_libraries_offer_is_accepted() {
        for offer in [
            "permessage-deflate; client_max_window_bits", // Chromium, Python websockets
            "permessage-deflate",                         // Firefox
            "permessage-deflate; client_max_window_bits=15",
            "permessage-deflate; client_max_window_bits=\"10\"",
            "permessage-deflate; server_no_context_takeover",
            "PerMessage-Deflate ;  Client_Max_Window_Bits ",
        ] {
            assert_eq!(answer(&[offer]).as_deref(), Some(PLAIN), "{offer}");
        }
    }

    #[test]
    fn parameters_we_honour_are_answered() {
        let a =
            negotiate([&b"permessage-deflate; client_no_context_takeover"[..]]).expect("accepted");
        assert!(a.deflate.client_no_context_takeover);
        assert_eq!(
            a.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=15"]).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=15")
        );
        assert!(
            !negotiate([&b"permessage-deflate"[..]])
                .expect("accepted")
                .deflate
                .client_no_context_takeover
        );
    }

    #[test]
    fn an_offer_we_cannot_honour_is_declined_and_the_next_accepted() {
        for bits in 8..15 {
            let small = format!("permessage-deflate; server_max_window_bits={bits}");
            assert_eq!(answer(&[&small]), None, "{small}");
            let quoted = format!("permessage-deflate; server_max_window_bits=\"{bits}\"");
            assert_eq!(answer(&[&quoted]), None, "{quoted}");
            let two = format!("{small}; client_max_window_bits, permessage-deflate");
            assert_eq!(answer(&[&two]).as_deref(), Some(PLAIN), "{two}");
            // Across header lines too.
            assert_eq!(
                answer(&[&small, "permessage-deflate"]).as_deref(),
                Some(PLAIN)
            );
        }
        assert_eq!(
            answer(&["x-webkit-deflate-frame", "foo, permessage-deflate"]).as_deref(),
            Some(PLAIN)
        );
    }

    #[test]
    fn malformed_offers_are_declined() {
        for offer in [
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"x\"",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=015",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=",
            "permessage-deflate; client_max_window_bits=\"1 0\"",
            "permessage-deflate; client_max_window_bits=\"10",
            "permessage-deflate;",
            "permessage-deflate;;",
            "deflate-frame",
            "",
        ] {
            assert_eq!(answer(&[offer]), None, "{offer:?}");
        }
        assert_eq!(negotiate([&[0xff, 0xfe][..]]), None, "not UTF-8");
        assert_eq!(negotiate(std::iter::empty::<&[u8]>()), None, "no header");
    }

    #[test]
    fn a_comma_inside_quotes_does_not_split_offers() {
        // If the quoted comma split the header, `b", permessage-deflate` would be an
        // offer of its own and the first one would look fine up to the comma.
        assert_eq!(
            answer(&[
                "permessage-deflate; client_max_window_bits=\"1,5\", permessage-deflate; server_max_window_bits=9"
            ]),
            None
        );
    }

    #[test]
    fn client_max_window_bits_is_never_answered() {
        for offer in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=9",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=15",
        ] {
            let r = answer(&[offer]).expect("accepted");
            assert!(!r.contains("client_max_window_bits"), "{offer} → {r}");
            assert!(r.contains("server_no_context_takeover"), "{offer} → {r}");
        }
    }
}
