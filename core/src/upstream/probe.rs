//! One active health probe: `GET /` on a connection of its own, closed after the answer's
//! head. Nova answers `/` with its version list before it looks for an instance, so the probe
//! needs no identity headers and costs the server no database query; any status below 500
//! means the server is serving.

use std::time::Instant;

use crate::http::{HeadScanner, Method};
use crate::proxy::RESPONSE_LIMITS;
use crate::socket::Input;

/// A probe in flight.
#[derive(Debug)]
pub(crate) struct Probe {
    /// The server probed.
    pub(crate) server: usize,
    /// The probe fails unless answered by then.
    pub(crate) deadline: Instant,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    scanner: HeadScanner,
    connected: bool,
    started: Instant,
}

/// What a probe learned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The server answered below 500.
    Up,
    /// It did not (the reason, for the log).
    Down(String),
}

impl Probe {
    /// A probe of server `server` (reached as `host`, for the `Host` field), to be answered
    /// by `deadline`.
    pub(crate) fn new(server: usize, host: &str, now: Instant, deadline: Instant) -> Probe {
        let out = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        Probe {
            server,
            deadline,
            out: out.into_bytes(),
            inbuf: Vec::new(),
            scanner: HeadScanner::new(),
            connected: false,
            started: now,
        }
    }

    /// When it started, for the server's latency.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The request bytes still to write (none before the connection is up).
    pub(crate) fn pending_write(&self) -> &[u8] {
        if self.connected {
            &self.out
        } else {
            &[]
        }
    }

    /// `n` of them were written.
    pub(crate) fn consume_write(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// Something happened on its socket; `Some` once the probe is decided.
    pub(crate) fn handle(&mut self, input: Input<'_>) -> Option<Verdict> {
        match input {
            Input::Connected => {
                self.connected = true;
                None
            }
            Input::ConnectFailed(_) => Some(Verdict::Down("probe: connection failed".into())),
            Input::Error => Some(Verdict::Down("probe: connection broke".into())),
            Input::Eof => self
                .parse()
                .or(Some(Verdict::Down("probe: closed before answering".into()))),
            Input::Read(bytes) => {
                self.inbuf.extend_from_slice(bytes);
                self.parse()
            }
        }
    }

    fn parse(&mut self) -> Option<Verdict> {
        match (self.scanner).parse_response(&self.inbuf, Method::Get, &RESPONSE_LIMITS) {
            Ok(Some((head, _))) if head.status < 100 || head.status >= 500 => {
                Some(Verdict::Down(format!("probe answered {}", head.status)))
            }
            Ok(Some((head, _))) if head.status < 200 => None,
            Ok(Some(_)) => Some(Verdict::Up),
            Ok(None) => None,
            Err(e) => Some(Verdict::Down(format!("probe: malformed answer: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::ConnectError;

    fn probe() -> Probe {
        let now = crate::testing::epoch();
        Probe::new(0, "nova", now, now)
    }

    #[test]
    fn writes_get_slash_once_connected_and_reads_the_status() {
        let mut p = probe();
        assert!(p.pending_write().is_empty());
        assert_eq!(p.handle(Input::Connected), None);
        let req = p.pending_write().to_vec();
        assert_eq!(
            req,
            b"GET / HTTP/1.1\r\nHost: nova\r\nConnection: close\r\n\r\n"
        );
        p.consume_write(req.len());
        assert!(p.pending_write().is_empty());
        assert_eq!(p.handle(Input::Read(b"HTTP/1.1 200 OK\r\n")), None);
        assert_eq!(
            p.handle(Input::Read(b"Content-Length: 3\r\n\r\n")),
            Some(Verdict::Up)
        );
    }

    #[test]
    fn five_hundreds_failures_and_early_ends_are_down() {
        let mut p = probe();
        let got = p.handle(Input::Read(b"HTTP/1.1 503 Unavailable\r\n\r\n"));
        assert!(matches!(got, Some(Verdict::Down(why)) if why.contains("503")));
        let mut p = probe();
        assert!(matches!(
            p.handle(Input::ConnectFailed(ConnectError::Refused)),
            Some(Verdict::Down(_))
        ));
        let mut p = probe();
        p.handle(Input::Read(b"HTTP/1.1 2"));
        assert!(matches!(p.handle(Input::Eof), Some(Verdict::Down(_))));
        let mut p = probe();
        assert!(matches!(
            p.handle(Input::Read(b"SSH-2.0\r\n\r\n")),
            Some(Verdict::Down(_))
        ));
        let mut p = probe();
        assert_eq!(
            p.handle(Input::Read(b"HTTP/1.1 404 Not Found\r\n\r\n")),
            Some(Verdict::Up)
        );
    }
}
