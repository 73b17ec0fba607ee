//! Minimal HTTP/1.1 keep-alive client framing for HTTP publishers.
//!
//! Owns the fixed request head of a publish POST (built once per publisher;
//! each message then costs one append of head + body) and the framing of
//! responses on a keep-alive connection: status, `Content-Length`, chunked
//! bodies, `Connection: close`, interim 1xx responses, and bodies that run to
//! EOF. Header parsing is `httparse`'s; this module only delimits responses so
//! that several can be read from one buffer.

/// One response delimited at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Bytes it occupies (head + body).
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// The connection must be closed after it (`Connection: close`, or a body
    /// that runs to EOF — in which case `len` is the whole buffer).
    pub close: bool,
    /// A 1xx interim response: it does not answer the request.
    pub interim: bool,
}

/// Request head for a POST of `body_len` bytes; the body follows it directly.
/// `binary` posts `application/octet-stream` (hubcast publishes it as a binary
/// message), otherwise `text/plain`.
pub fn post_head(
    host: &str,
    path: &str,
    body_len: usize,
    token: Option<&str>,
    binary: bool,
) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let content_type = if binary {
        "application/octet-stream"
    } else {
        "text/plain"
    };
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {body_len}\r\nUser-Agent: hubcast-loadtest\r\n{auth}\r\n"
    )
    .into_bytes()
}

/// Delimits the response at the front of `buf`: `Ok(None)` if incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > 64 * 1024 => {
            return Err("response head too large".into());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed HTTP response: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    if (100..200).contains(&status) && status != 101 {
        return Ok(Some(Response {
            len: head,
            status,
            close: false,
            interim: true,
        }));
    }
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                close = true;
            } else if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
            {
                close = false;
            }
        }
    }
    let done = |len: usize| {
        Ok(Some(Response {
            len,
            status,
            close,
            interim: false,
        }))
    };
    if status == 204 || status == 304 {
        return done(head);
    }
    if chunked {
        return match chunked_len(&buf[head..])? {
            Some(n) => done(head + n),
            None => Ok(None),
        };
    }
    match content_length {
        Some(n) if buf.len() >= head + n => done(head + n),
        Some(_) => Ok(None),
        // Body delimited by EOF: take what is there and close afterwards.
        None => Ok(Some(Response {
            len: buf.len(),
            status,
            close: true,
            interim: false,
        })),
    }
}

/// Length of a complete chunked body at the front of `buf`, if complete.
fn chunked_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut pos = 0;
    loop {
        let (skip, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("bad chunk size".into()),
        };
        pos += skip;
        if size == 0 {
            let rest = &buf[pos..];
            if rest.starts_with(b"\r\n") {
                return Ok(Some(pos + 2));
            }
            // Trailers: end at the blank line.
            return Ok(memchr::memmem::find(rest, b"\r\n\r\n").map(|i| pos + i + 4));
        }
        let size = usize::try_from(size).map_err(|_| "chunk too large".to_string())?;
        let end = pos.saturating_add(size).saturating_add(2);
        if buf.len() < end {
            return Ok(None);
        }
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_has_length_and_token() {
        let h = String::from_utf8(post_head("h:1", "/publish/t", 64, Some("tok"), false))
            .expect("utf8");
        assert!(h.starts_with("POST /publish/t HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(h.contains("Content-Length: 64\r\n"));
        assert!(h.contains("Authorization: Bearer tok\r\n"));
        assert!(h.ends_with("\r\n\r\n"));
        assert!(h.contains("Content-Type: text/plain\r\n"));
        let h = String::from_utf8(post_head("h", "/", 1, None, true)).expect("utf8");
        assert!(!h.contains("Authorization"));
        assert!(h.contains("Content-Type: application/octet-stream\r\n"));
    }

    #[test]
    fn several_responses_in_one_buffer() {
        let mut buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        buf.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        buf.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        buf.extend_from_slice(
            b"HTTP/1.1 429 Too Many\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        let mut pos = 0;
        let mut got = Vec::new();
        while let Ok(Some(r)) = parse_response(&buf[pos..]) {
            got.push((r.status, r.close));
            pos += r.len;
            if pos == buf.len() {
                break;
            }
        }
        assert_eq!(pos, buf.len());
        assert_eq!(
            got,
            vec![(200, false), (204, false), (200, false), (429, true)]
        );
    }

    #[test]
    fn incomplete_responses_wait() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut]), Ok(None), "cut={cut}");
        }
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n";
        for cut in 0..chunked.len() {
            assert_eq!(parse_response(&chunked[..cut]), Ok(None), "cut={cut}");
        }
        assert_eq!(
            parse_response(chunked).map(|r| r.map(|r| r.len)),
            Ok(Some(chunked.len()))
        );
    }

    #[test]
    fn interim_eof_bodies_and_errors() {
        let r = parse_response(b"HTTP/1.1 100 Continue\r\n\r\n")
            .expect("ok")
            .expect("some");
        assert!(r.interim);
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\nbody")
            .expect("ok")
            .expect("some");
        assert!(r.close);
        assert_eq!(r.len, 23);
        let r = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .expect("ok")
            .expect("some");
        assert!(r.close);
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }
}
