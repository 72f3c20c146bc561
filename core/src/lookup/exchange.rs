//! One backend HTTP exchange on its own connection: the request bytes going out, the response
//! coming back through the core's strict parsers ([`HeadScanner`], [`BodyDecoder`]).
//!
//! Every exchange uses a fresh connection and sends `Connection: close`. Backend queries are
//! rare (the lookup cache answers almost every request, and one Keystone token serves for
//! hours), so a pool would add states and failure modes (stale sockets, half-closed peers) for
//! no measurable gain.
//!
//! ```text
//! state            input                  next
//! Head             Read, head complete    Body (1xx: Head again)
//! Head             Eof                    failed
//! Body             Read, body complete    done
//! Body             Eof                    done if close-delimited, else failed
//! any              Read, framing error    failed
//! ```

use std::time::Instant;

use super::error::ExchangeError;
use crate::http::{Body, BodyDecoder, HeadScanner, Headers, Limits, Method};

/// Largest response body we accept (a big cloud's Keystone catalog is a few hundred KiB).
pub const MAX_RESPONSE_BODY: u64 = 4 * 1024 * 1024;

/// Response limits: generous heads (Keystone's `X-Subject-Token` can be long), bounded bodies.
const LIMITS: Limits = Limits {
    max_head: 64 * 1024,
    max_headers: 100,
    max_body: MAX_RESPONSE_BODY,
    max_chunk_line: 1024,
};

/// A complete response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Headers,
    pub(crate) body: Vec<u8>,
}

/// What an input did to an exchange.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Nothing final yet.
    More,
    /// The response is complete.
    Done(Response),
    /// The exchange failed.
    Failed(ExchangeError),
}

#[derive(Debug)]
enum State {
    Head,
    Body {
        status: u16,
        headers: Headers,
        decoder: BodyDecoder,
    },
}

/// One request/response on one connection.
#[derive(Debug)]
pub(crate) struct Exchange {
    method: Method,
    out: Vec<u8>,
    written: usize,
    connected: bool,
    /// Received bytes not yet consumed by the parsers.
    inbuf: Vec<u8>,
    scanner: HeadScanner,
    state: State,
    body: Vec<u8>,
    /// The whole exchange (connect included) must finish by then.
    pub(crate) deadline: Instant,
}

impl Exchange {
    pub(crate) fn new(method: Method, request: Vec<u8>, deadline: Instant) -> Self {
        Exchange {
            method,
            out: request,
            written: 0,
            connected: false,
            inbuf: Vec::new(),
            scanner: HeadScanner::new(),
            state: State::Head,
            body: Vec::new(),
            deadline,
        }
    }

    /// The unwritten request bytes; empty until the connection is up.
    pub(crate) fn pending_write(&self) -> &[u8] {
        if self.connected {
            self.out.get(self.written..).unwrap_or_default()
        } else {
            &[]
        }
    }

    pub(crate) fn consume_write(&mut self, n: usize) {
        self.written = self.written.saturating_add(n).min(self.out.len());
    }

    pub(crate) fn wants_read(&self) -> bool {
        self.connected
    }

    pub(crate) fn connected(&mut self) {
        self.connected = true;
    }

    pub(crate) fn read(&mut self, data: &[u8]) -> Progress {
        // Bytes can only arrive on a connected socket, whatever the runtime reported before.
        self.connected = true;
        self.inbuf.extend_from_slice(data);
        let mut pos = 0;
        let progress = loop {
            let buf = self.inbuf.get(pos..).unwrap_or_default();
            match &mut self.state {
                State::Head => match self.scanner.parse_response(buf, self.method, &LIMITS) {
                    Ok(None) => break Progress::More,
                    Err(e) => break Progress::Failed(ExchangeError::BadHead(e)),
                    Ok(Some((head, n))) => {
                        pos += n;
                        if head.status == 101 {
                            break Progress::Failed(ExchangeError::Upgrade);
                        }
                        // Interim responses (100 Continue, 103 Early Hints) precede the real one.
                        if head.status >= 200 {
                            self.state = State::Body {
                                status: head.status,
                                decoder: BodyDecoder::new(head.body),
                                headers: head.headers,
                            };
                        }
                    }
                },
                State::Body { decoder, .. } => match decoder.decode(buf, &LIMITS) {
                    Err(e) => break Progress::Failed(ExchangeError::BadBody(e)),
                    Ok((n, None)) => {
                        pos += n;
                        break Progress::More;
                    }
                    Ok((n, Some(Body::Data(d)))) => {
                        self.body.extend_from_slice(d);
                        pos += n;
                    }
                    Ok((n, Some(Body::Done))) => {
                        pos += n;
                        break self.finish();
                    }
                },
            }
        };
        self.inbuf.drain(..pos.min(self.inbuf.len()));
        progress
    }

    pub(crate) fn eof(&mut self) -> Progress {
        match &mut self.state {
            State::Head => Progress::Failed(ExchangeError::ClosedEarly),
            State::Body { decoder, .. } => match decoder.eof() {
                Ok(()) => self.finish(),
                Err(e) => Progress::Failed(ExchangeError::BadBody(e)),
            },
        }
    }

    fn finish(&mut self) -> Progress {
        match std::mem::replace(&mut self.state, State::Head) {
            State::Body {
                status, headers, ..
            } => Progress::Done(Response {
                status,
                headers,
                body: std::mem::take(&mut self.body),
            }),
            State::Head => Progress::Failed(ExchangeError::NoHead),
        }
    }
}

/// Writes an HTTP/1.1 request. `path_and_query` and every header value must already be safe
/// for the wire (the callers build them from validated parts only).
pub(crate) fn build_request(
    method: &str,
    host: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
    for part in [
        method,
        " ",
        path_and_query,
        " HTTP/1.1\r\nHost: ",
        host,
        "\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    let mut field = |name: &str, value: &str| {
        for part in [name, ": ", value, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    };
    field("Accept", "application/json");
    field("User-Agent", "mdproxy");
    for (name, value) in headers {
        field(name, value);
    }
    if let Some(body) = body {
        field("Content-Type", "application/json");
        field("Content-Length", &body.len().to_string());
    }
    field("Connection", "close");
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

/// A short, printable excerpt of an error body, for log lines.
pub(crate) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let cut = body.get(..MAX).unwrap_or(body);
    let mut s = cut.escape_ascii().to_string();
    if body.len() > MAX {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpError;
    use crate::testing::epoch;
    use crate::testing::for_each_split;

    /// (status, body) or the failure text, after feeding `pieces` and then EOF if still open.
    fn run(pieces: &[&[u8]]) -> Result<(u16, Vec<u8>), ExchangeError> {
        let mut ex = Exchange::new(Method::Get, b"GET / HTTP/1.1\r\n\r\n".to_vec(), epoch());
        for p in pieces {
            match ex.read(p) {
                Progress::More => {}
                Progress::Done(r) => return Ok((r.status, r.body)),
                Progress::Failed(e) => return Err(e),
            }
        }
        match ex.eof() {
            Progress::Done(r) => Ok((r.status, r.body)),
            Progress::Failed(e) => Err(e),
            Progress::More => panic!("EOF must end the exchange"),
        }
    }

    #[test]
    fn framings_agree_for_every_split() {
        /// Status and body, or a word of the failure.
        type Want = Result<(u16, &'static [u8]), &'static str>;
        let cases: &[(&[u8], Want)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                Ok((200, b"hello")),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
                Ok((200, b"hello")),
            ),
            (b"HTTP/1.0 200 OK\r\n\r\nhello", Ok((200, b"hello"))),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
                Ok((201, b"ok")),
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", Ok((204, b""))),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
                Err("bad response body"),
            ),
            (b"HTTP/1.1 200 OK\r\nContent-", Err("closed before")),
            (b"HTTP/1.1 200 OK\nX: y\r\n\r\n", Err("bad response")),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
                Err("too large"),
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                Err("unexpected 101"),
            ),
        ];
        for (input, want) in cases {
            let got = for_each_split(input, run);
            match (got, want) {
                (Ok((s, b)), Ok((ws, wb))) => {
                    assert_eq!((s, &b[..]), (*ws, *wb));
                }
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e} vs {w}"),
                (got, want) => panic!("{:?}: {got:?} vs {want:?}", input.escape_ascii()),
            }
        }
    }

    #[test]
    fn bodies_over_the_limit_fail() {
        let mut ex = Exchange::new(Method::Get, Vec::new(), epoch());
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(ex.read(head), Progress::More));
        let chunk = format!("{:x}\r\n", MAX_RESPONSE_BODY + 1);
        assert!(matches!(
            ex.read(chunk.as_bytes()),
            Progress::Failed(ExchangeError::BadBody(HttpError::BodyTooLarge))
        ));
    }

    #[test]
    fn writes_wait_for_the_connection() {
        let mut ex = Exchange::new(Method::Get, b"abcdef".to_vec(), epoch());
        assert!(ex.pending_write().is_empty());
        assert!(!ex.wants_read());
        ex.connected();
        assert_eq!(ex.pending_write(), b"abcdef");
        ex.consume_write(4);
        assert_eq!(ex.pending_write(), b"ef");
        ex.consume_write(100);
        assert!(ex.pending_write().is_empty());
    }

    #[test]
    fn request_shape() {
        let r = build_request(
            "POST",
            "10.0.0.1:5000",
            "/v3/auth/tokens",
            &[("X-Thing", "1")],
            Some(b"{}"),
        );
        assert_eq!(
            r,
            b"POST /v3/auth/tokens HTTP/1.1\r\nHost: 10.0.0.1:5000\r\nAccept: application/json\r\n\
              User-Agent: mdproxy\r\nX-Thing: 1\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        assert_eq!(excerpt(b"a\r\nb"), "a\\r\\nb");
        assert!(excerpt(&[b'x'; 300]).ends_with('…'));
    }
}
