//! The connection with two servers to choose from: what it asks its owner when an attempt
//! fails (another upstream, only for GET and HEAD, only before any byte reached the client),
//! how the request deadline is shared, the stale answer and the capture for the cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::proxy::decision::Forward;
use crate::proxy::rewrite::HopRules;
use crate::socket::ConnectError;
use crate::upstream::{CacheKey, Stored};

const CLIENT: SockId = SockId(1);
const PASS: HopRules = HopRules {
    remove: &[],
    drop_underscored: false,
    keep_only: None,
};
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";

struct Rig {
    conn: Conn,
    now: Instant,
}

impl Rig {
    /// Two servers, a 4 s request deadline.
    fn new() -> Rig {
        let now = crate::testing::epoch();
        let settings = Settings {
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            quiet: true,
            attempts: 2,
            deadline: Some(Duration::from_secs(4)),
        };
        Rig {
            conn: Conn::new(now, CLIENT, "10.0.0.7".parse().ok(), settings),
            now,
        }
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.conn.poll_output()).collect()
    }

    fn take(&mut self, sock: SockId) -> String {
        let out = String::from_utf8_lossy(self.conn.pending_write(sock)).into_owned();
        self.conn.consume_write(self.now, sock, out.len());
        out
    }

    /// Sends `request` routed with `forward`; returns the route's ticket.
    fn start(&mut self, request: &[u8], forward: Forward) {
        self.conn.on_client(self.now, Input::Read(request));
        let Some(Output::Route(t)) = self.drain().into_iter().next() else {
            panic!("no route asked");
        };
        self.conn.route(self.now, t, Route::Forward(forward));
        assert_eq!(self.drain(), [Output::Upstream { fresh: false }]);
    }

    /// Gives the exchange upstream `sock` on server `server`, connected, and takes the
    /// request it writes there.
    fn attempt(&mut self, sock: SockId, server: usize) -> String {
        assert!(self
            .conn
            .upstream_at(self.now, sock, false, server, &format!("s{server}")));
        self.conn.on_upstream(self.now, Input::Connected);
        self.take(sock)
    }

    fn later(&mut self, d: Duration) {
        self.now += d;
        self.conn.on_timeout(self.now);
    }
}

fn plain() -> Forward {
    Forward::new(&PASS, Vec::new(), false, false)
}

fn failed_on(server: usize, outputs: &[Output]) -> bool {
    outputs
        .iter()
        .any(|o| matches!(o, Output::Attempt { server: s, failure: Some(_), .. } if *s == server))
}

#[test]
fn a_get_refused_by_one_server_goes_to_the_other() {
    let mut r = Rig::new();
    r.start(b"GET /x HTTP/1.1\r\n\r\n", plain());
    assert!(r.conn.upstream_at(r.now, SockId(2), false, 0, "s0"));
    let refused = Input::ConnectFailed(ConnectError::Refused);
    r.conn.on_upstream(r.now, refused);
    let got = r.drain();
    assert!(failed_on(0, &got), "{got:?}");
    assert!(got.contains(&Output::Close(SockId(2))), "{got:?}");
    assert_eq!(
        got.last(),
        Some(&Output::Upstream { fresh: true }),
        "{got:?}"
    );
    assert_eq!(r.conn.tried(), [0]);
    assert!(r.attempt(SockId(3), 1).starts_with("GET /x "));
    r.conn.on_upstream(r.now, Input::Read(OK));
    let got = r.drain();
    assert!(got.iter().any(|o| matches!(
        o,
        Output::Attempt {
            server: 1,
            failure: None,
            ..
        }
    )));
    assert!(r.take(CLIENT).starts_with("HTTP/1.1 200 "));
}

#[test]
fn a_post_is_never_sent_to_another_server() {
    let mut r = Rig::new();
    r.start(b"POST /pw HTTP/1.1\r\nContent-Length: 2\r\n\r\npw", plain());
    r.attempt(SockId(2), 0);
    r.conn.on_upstream(
        r.now,
        Input::Read(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"),
    );
    let got = r.drain();
    assert!(
        !got.iter().any(|o| matches!(o, Output::Upstream { .. })),
        "{got:?}"
    );
    assert!(
        r.take(CLIENT).starts_with("HTTP/1.1 500 "),
        "passed through"
    );

    let mut r = Rig::new();
    r.start(b"POST /pw HTTP/1.1\r\nContent-Length: 2\r\n\r\npw", plain());
    assert!(r.conn.upstream_at(r.now, SockId(2), false, 0, "s0"));
    r.conn
        .on_upstream(r.now, Input::ConnectFailed(ConnectError::Refused));
    let got = r.drain();
    assert!(
        !got.iter().any(|o| matches!(o, Output::Upstream { .. })),
        "{got:?}"
    );
    assert!(r.take(CLIENT).starts_with("HTTP/1.1 503 "));
}

#[test]
fn a_5xx_is_retried_but_the_last_servers_answer_stands() {
    let mut r = Rig::new();
    r.start(b"GET /x HTTP/1.1\r\n\r\n", plain());
    r.attempt(SockId(2), 0);
    let five = b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy";
    r.conn.on_upstream(r.now, Input::Read(five));
    let got = r.drain();
    assert_eq!(
        got.last(),
        Some(&Output::Upstream { fresh: true }),
        "{got:?}"
    );
    assert!(
        r.conn.pending_write(CLIENT).is_empty(),
        "nothing of it to the client"
    );
    r.attempt(SockId(3), 1);
    r.conn.on_upstream(r.now, Input::Read(five));
    let got = r.drain();
    assert!(failed_on(1, &got), "{got:?}");
    assert!(!got.iter().any(|o| matches!(o, Output::Upstream { .. })));
    let out = r.take(CLIENT);
    assert!(
        out.starts_with("HTTP/1.1 503 Busy") && out.ends_with("busy"),
        "{out}"
    );
}

#[test]
fn once_bytes_reached_the_client_nothing_is_retried() {
    let mut r = Rig::new();
    r.start(b"GET /x HTTP/1.1\r\n\r\n", plain());
    r.attempt(SockId(2), 0);
    r.conn.on_upstream(
        r.now,
        Input::Read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart"),
    );
    r.conn.on_upstream(r.now, Input::Error);
    let got = r.drain();
    assert!(
        !got.iter().any(|o| matches!(o, Output::Upstream { .. })),
        "{got:?}"
    );
    assert!(got.contains(&Output::Close(CLIENT)), "cut off: {got:?}");
}

#[test]
fn the_deadline_is_shared_by_the_attempts_and_then_holds() {
    let mut r = Rig::new();
    r.start(b"GET /x HTTP/1.1\r\n\r\n", plain());
    r.attempt(SockId(2), 0);
    // The first of two attempts gets half of the 4 s: the server that never answers is left
    // at 2 s, for the other.
    assert_eq!(r.conn.deadline(), Some(r.now + Duration::from_secs(2)));
    r.later(Duration::from_secs(2));
    let got = r.drain();
    assert!(failed_on(0, &got), "{got:?}");
    assert_eq!(got.last(), Some(&Output::Upstream { fresh: true }));
    r.attempt(SockId(3), 1);
    assert_eq!(r.conn.deadline(), Some(r.now + Duration::from_secs(2)));
    r.later(Duration::from_secs(2));
    let got = r.drain();
    assert!(got.contains(&Output::DeadlineMissed), "{got:?}");
    assert!(r.take(CLIENT).starts_with("HTTP/1.1 504 "));
}

#[test]
fn a_stale_answer_stands_in_for_the_error_while_it_lasts() {
    for (lasts, want) in [(true, "HTTP/1.1 200 "), (false, "HTTP/1.1 503 ")] {
        let mut r = Rig::new();
        let stored = Arc::new(Stored {
            fields: vec![("Content-Type".into(), b"text/plain".to_vec())],
            body: Bytes::from_static(b"old"),
            stored: r.now.checked_sub(Duration::from_secs(7)).unwrap(),
        });
        let until = r.now + Duration::from_secs(if lasts { 60 } else { 0 });
        let mut forward = plain();
        forward.stale = Some((stored, until));
        r.start(b"GET /x HTTP/1.1\r\n\r\n", forward);
        for (sock, server) in [(SockId(2), 0), (SockId(3), 1)] {
            assert!(r.conn.upstream_at(r.now, sock, false, server, "s"));
            r.conn
                .on_upstream(r.now, Input::ConnectFailed(ConnectError::Refused));
        }
        let got = r.drain();
        assert_eq!(got.contains(&Output::Stale), lasts, "{got:?}");
        let out = r.take(CLIENT);
        assert!(out.starts_with(want), "{out}");
        if lasts {
            assert!(out.contains("\r\nAge: 7\r\n"), "{out}");
            assert!(
                out.contains("Warning: 110 - \"Response is Stale\"\r\n"),
                "{out}"
            );
            assert!(out.ends_with("\r\n\r\nold"), "{out}");
        }
    }
}

#[test]
fn a_200_to_a_get_is_captured_whole() {
    let mut r = Rig::new();
    let key = CacheKey::new("i-1", b"/x", None);
    let mut forward = plain();
    forward.capture = Some(key.clone());
    r.start(b"GET /x HTTP/1.1\r\n\r\n", forward);
    r.attempt(SockId(2), 0);
    r.conn.on_upstream(
        r.now,
        Input::Read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe"),
    );
    r.conn.on_upstream(r.now, Input::Read(b"llo"));
    let got = r.drain();
    let captured = got.iter().find_map(|o| match o {
        Output::Captured(c) => Some(c),
        _ => None,
    });
    let captured = captured.unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!((&captured.key, captured.head.status), (&key, 200));
    assert_eq!(captured.body, b"hello");
}
