//! A hubcast message as it travels through NATS, and how a received one is judged.
//!
//! The payload is the raw message (never a WebSocket frame: each node encodes its own frame
//! once). Three headers carry the rest:
//!
//! | header | value | why |
//! |---|---|---|
//! | `Hubcast-Node` | the publishing node's id (16 hex digits) | a node skips its own echoes |
//! | `Hubcast-Kind` | `text` or `binary` | the frame opcode to encode with |
//! | `Hubcast-Sent` | unix time in nanoseconds at `publish` | cross-node latency |

use async_nats::HeaderMap;
use async_nats::header::HeaderName;

use super::Kind;

pub(crate) const NODE: HeaderName = HeaderName::from_static("Hubcast-Node");
pub(crate) const KIND: HeaderName = HeaderName::from_static("Hubcast-Kind");
pub(crate) const SENT: HeaderName = HeaderName::from_static("Hubcast-Sent");

impl Kind {
    /// The `Hubcast-Kind` header value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Binary => "binary",
        }
    }
}

/// The headers of one outgoing message.
pub(crate) fn headers(node: &str, kind: Kind, sent_unix_nanos: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(NODE, node);
    h.insert(KIND, kind.as_str());
    h.insert(SENT, sent_unix_nanos.to_string());
    h
}

/// A received message that may be handed to the local shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) kind: Kind,
    pub(crate) sent_unix_nanos: Option<u64>,
}

/// Why a received message is not handed to the local shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// This node published it (NATS echoes a connection's own messages to its own
    /// subscriptions unless told not to): not a loss.
    Echo,
    /// No `Hubcast-Kind` header: not published by hubcast.
    MissingKind,
    /// A `Hubcast-Kind` other than `text` / `binary`.
    UnknownKind,
    /// A text message whose payload is not UTF-8: it would make every browser close.
    InvalidUtf8,
}

impl Rejected {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Rejected::Echo => "own echo",
            Rejected::MissingKind => "no Hubcast-Kind header",
            Rejected::UnknownKind => "unknown Hubcast-Kind",
            Rejected::InvalidUtf8 => "text message is not valid UTF-8",
        }
    }
}

/// Judges a received message: an echo of `own_node`, malformed, or fit to deliver.
/// A missing or unparsable `Hubcast-Sent` only costs the latency sample.
pub(crate) fn classify(
    headers: Option<&HeaderMap>,
    payload: &[u8],
    own_node: &str,
) -> Result<Accepted, Rejected> {
    let headers = headers.ok_or(Rejected::MissingKind)?;
    if headers.get(NODE).is_some_and(|v| v.as_str() == own_node) {
        return Err(Rejected::Echo);
    }
    let kind = match headers.get(KIND).map(|v| v.as_str()) {
        None => return Err(Rejected::MissingKind),
        Some("text") => Kind::Text,
        Some("binary") => Kind::Binary,
        Some(_) => return Err(Rejected::UnknownKind),
    };
    if kind == Kind::Text && simdutf8::basic::from_utf8(payload).is_err() {
        return Err(Rejected::InvalidUtf8);
    }
    let sent_unix_nanos = headers.get(SENT).and_then(|v| v.as_str().parse().ok());
    Ok(Accepted {
        kind,
        sent_unix_nanos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "00000000000000aa";
    const OTHER: &str = "00000000000000bb";

    #[test]
    fn own_headers_round_trip() {
        let h = headers(OTHER, Kind::Binary, 1_700_000_000_123_456_789);
        assert_eq!(
            classify(Some(&h), b"\xff\x00", ME),
            Ok(Accepted {
                kind: Kind::Binary,
                sent_unix_nanos: Some(1_700_000_000_123_456_789)
            })
        );
        let h = headers(OTHER, Kind::Text, 5);
        assert_eq!(
            classify(Some(&h), "héllo".as_bytes(), ME).map(|a| a.kind),
            Ok(Kind::Text)
        );
    }

    #[test]
    fn echoes_are_recognised() {
        let h = headers(ME, Kind::Text, 5);
        assert_eq!(classify(Some(&h), b"x", ME), Err(Rejected::Echo));
    }

    #[test]
    fn malformed_messages_are_rejected() {
        assert_eq!(classify(None, b"x", ME), Err(Rejected::MissingKind));
        let mut h = HeaderMap::new();
        h.insert(NODE, OTHER);
        assert_eq!(classify(Some(&h), b"x", ME), Err(Rejected::MissingKind));
        h.insert(KIND, "json");
        assert_eq!(classify(Some(&h), b"x", ME), Err(Rejected::UnknownKind));
        let h = headers(OTHER, Kind::Text, 5);
        assert_eq!(classify(Some(&h), b"\xff", ME), Err(Rejected::InvalidUtf8));
    }

    #[test]
    fn a_bad_timestamp_only_costs_the_sample() {
        let mut h = headers(OTHER, Kind::Text, 5);
        h.insert(SENT, "soon");
        assert_eq!(
            classify(Some(&h), b"x", ME),
            Ok(Accepted {
                kind: Kind::Text,
                sent_unix_nanos: None
            })
        );
    }
}
