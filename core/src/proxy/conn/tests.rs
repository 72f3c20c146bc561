//! The connection alone, with a hand-written owner: every decision it asks for is answered
//! here, so these tests show the contract of [`Output`] without an endpoint or a role.

use std::time::{Duration, Instant};

use super::*;
use crate::proxy::decision::{Forward, Local};
use crate::proxy::rewrite::HopRules;

const CLIENT: SockId = SockId(1);
const PEER: &str = "10.0.0.7";

/// A hop that passes every field and adds `X-Hop: 1`.
const PASS: HopRules = HopRules {
    remove: &[],
    drop_underscored: false,
    keep_only: None,
};

fn forward(check: bool, reroutable: bool) -> Route {
    Route::Forward(Forward::new(
        &PASS,
        vec![("X-Hop", b"1".to_vec())],
        check,
        reroutable,
    ))
}

/// A connection and the time it lives in.
struct Rig {
    conn: Conn,
    now: Instant,
    outputs: Vec<Output>,
}

impl Rig {
    fn new() -> Rig {
        let now = crate::testing::epoch();
        let settings = Settings {
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            quiet: true,
            attempts: 1,
            deadline: None,
        };
        let peer = PEER.parse().ok();
        Rig {
            conn: Conn::new(now, CLIENT, peer, settings),
            now,
            outputs: Vec::new(),
        }
    }

    /// Everything the connection asked for since the last call.
    fn drain(&mut self) -> Vec<Output> {
        let mut got = std::mem::take(&mut self.outputs);
        got.extend(std::iter::from_fn(|| self.conn.poll_output()));
        got
    }

    fn client(&mut self, bytes: &[u8]) {
        self.conn.on_client(self.now, Input::Read(bytes));
    }

    /// The one route ticket asked for since the last call (other outputs are passed over).
    fn ticket(&mut self) -> Ticket {
        let got = self.drain();
        let routes: Vec<Ticket> = (got.iter())
            .filter_map(|o| match o {
                Output::Route(t) => Some(*t),
                _ => None,
            })
            .collect();
        match routes.as_slice() {
            [t] => *t,
            _ => panic!("expected one route request, got {got:?}"),
        }
    }

    /// Routes with `route` and gives it upstream `sock` (`reused`), connected.
    fn relay(&mut self, ticket: Ticket, route: Route, sock: SockId, reused: bool) {
        self.conn.route(self.now, ticket, route);
        assert_eq!(self.drain(), [Output::Upstream { fresh: false }]);
        assert!(self.conn.upstream(self.now, sock, reused));
        if !reused {
            assert!(
                self.conn.pending_write(sock).is_empty(),
                "nothing before connect"
            );
            self.conn.on_upstream(self.now, Input::Connected);
        }
    }

    /// Takes what is queued for `sock`.
    fn take(&mut self, sock: SockId) -> String {
        let out = String::from_utf8_lossy(self.conn.pending_write(sock)).into_owned();
        let n = out.len();
        self.conn.consume_write(self.now, sock, n);
        self.outputs
            .extend(std::iter::from_fn(|| self.conn.poll_output()));
        out
    }

    fn later(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.conn.on_timeout(self.now);
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";

#[test]
fn forwards_with_the_routes_fields_and_releases_a_clean_upstream() {
    let mut r = Rig::new();
    r.client(b"GET /latest HTTP/1.1\r\nHost: x\r\n\r\n");
    let t = r.ticket();
    assert_eq!(
        r.conn.request().map(|h| h.target.to_vec()),
        Some(b"/latest".to_vec())
    );
    r.relay(t, forward(false, false), SockId(2), false);
    let sent = r.take(SockId(2));
    assert!(sent.starts_with("GET /latest HTTP/1.1\r\n"), "{sent}");
    assert!(
        sent.contains("Host: x\r\n") && sent.contains("X-Hop: 1\r\n"),
        "{sent}"
    );
    r.conn.on_upstream(r.now, Input::Read(OK));
    assert_eq!(r.take(CLIENT), String::from_utf8_lossy(OK));
    let got = r.drain();
    assert!(got.contains(&Output::Release {
        sock: SockId(2),
        clean: true
    }));
    assert!(got.iter().any(|o| matches!(
        o,
        Output::Answered {
            status: 200,
            took: Some(_)
        }
    )));
    assert!(
        !r.conn.is_finishing(),
        "keep-alive: waits for the next request"
    );
}

#[test]
fn a_refused_request_with_a_body_ends_the_connection_unread() {
    // Chunked or not: the body of a request refused before it was routed is never read, so
    // the connection cannot go on after the answer.
    for req in [
        &b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"[..],
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
    ] {
        let mut r = Rig::new();
        r.client(req);
        let t = r.ticket();
        r.conn
            .route(r.now, t, Route::refuse(429, "Too many requests."));
        let out = r.take(CLIENT);
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert!(r.conn.is_finishing());
    }
}

#[test]
fn a_refusal_is_answered_and_the_connection_goes_on() {
    let mut r = Rig::new();
    r.client(b"GET / HTTP/1.1\r\n\r\nGET /again HTTP/1.1\r\n\r\n");
    let t = r.ticket();
    r.conn
        .route(r.now, t, Route::refuse(429, "Too many requests."));
    let out = r.take(CLIENT);
    assert!(out.starts_with("HTTP/1.1 429 "), "{out}");
    // The pipelined request follows, with a fresh ticket.
    let next = r.ticket();
    assert_eq!(next.seq, t.seq + 1);
}

#[test]
fn a_late_route_for_an_ended_exchange_is_dropped() {
    let mut r = Rig::new();
    r.client(b"GET /a HTTP/1.1\r\n\r\n");
    let first = r.ticket();
    r.conn.route(r.now, first, Route::Pending);
    r.later(61); // past the response timeout: 504, the connection goes on
    assert!(r.take(CLIENT).starts_with("HTTP/1.1 504 "));
    r.client(b"GET /b HTTP/1.1\r\n\r\n");
    let second = r.ticket();
    r.conn.route(r.now, first, forward(false, false));
    assert!(
        r.drain().is_empty(),
        "the first exchange's answer must not start the second"
    );
    assert_eq!(
        r.conn.request().map(|h| h.target.to_vec()),
        Some(b"/b".to_vec())
    );
    r.relay(second, forward(false, false), SockId(3), false);
    assert!(r.take(SockId(3)).starts_with("GET /b "));
}

#[test]
fn a_local_answer_waits_for_the_whole_body() {
    let mut r = Rig::new();
    r.client(b"POST /pw HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
    let t = r.ticket();
    r.conn.route(r.now, t, Route::Serve);
    assert!(r.drain().is_empty(), "not before the body is whole");
    r.client(b"cde");
    assert_eq!(r.drain(), [Output::Serve(t)]);
    assert_eq!(r.conn.served_body(), b"abcde");
    let local = Local {
        status: 200,
        fields: vec![("X-Answer", "yes".to_owned())],
        body: b"done".to_vec(),
        log_for: None,
    };
    r.conn.local(r.now, t, local);
    let out = r.take(CLIENT);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("X-Answer: yes\r\n") && out.contains("Content-Length: 4\r\n"));
    assert!(out.ends_with("\r\n\r\ndone"), "{out}");
}

#[test]
fn a_checked_answer_can_be_rerouted_once() {
    let mut r = Rig::new();
    r.client(b"GET /x HTTP/1.1\r\n\r\n");
    let t = r.ticket();
    r.relay(t, forward(true, true), SockId(2), false);
    r.take(SockId(2));
    r.conn.on_upstream(
        r.now,
        Input::Read(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    );
    let asked = r.drain();
    assert_eq!(
        asked,
        [Output::Check {
            ticket: t,
            status: 404,
            can_reroute: true
        }]
    );
    assert!(
        r.conn.pending_write(CLIENT).is_empty(),
        "held while checked"
    );
    r.conn.checked(r.now, t, Some(forward(true, true)));
    assert_eq!(
        r.drain(),
        [Output::Close(SockId(2)), Output::Upstream { fresh: false }]
    );
    assert!(r.conn.upstream(r.now, SockId(3), false));
    r.conn.on_upstream(r.now, Input::Connected);
    assert!(r.take(SockId(3)).starts_with("GET /x "), "sent again");
    r.conn.on_upstream(
        r.now,
        Input::Read(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    );
    let again = r.drain();
    assert!(
        matches!(
            again.as_slice(),
            [Output::Check {
                can_reroute: false,
                ..
            }]
        ),
        "never a third time: {again:?}"
    );
    r.conn.checked(r.now, t, None);
    assert!(r.take(CLIENT).starts_with("HTTP/1.1 404 "));
}

#[test]
fn a_stale_pooled_upstream_is_replayed_for_get_but_never_for_post() {
    let mut r = Rig::new();
    r.client(b"GET /x HTTP/1.1\r\n\r\n");
    let t = r.ticket();
    r.relay(t, forward(false, false), SockId(2), true);
    r.take(SockId(2));
    r.conn.on_upstream(r.now, Input::Eof);
    assert_eq!(
        r.drain(),
        [Output::Close(SockId(2)), Output::Upstream { fresh: true }]
    );

    let mut r = Rig::new();
    r.client(b"POST /pw HTTP/1.1\r\nContent-Length: 2\r\n\r\nab");
    let t = r.ticket();
    r.relay(t, forward(false, false), SockId(2), true);
    r.take(SockId(2));
    r.conn.on_upstream(r.now, Input::Eof);
    let got = r.drain();
    assert!(
        !got.iter().any(|o| matches!(o, Output::Upstream { .. })),
        "{got:?}"
    );
    assert!(r.take(CLIENT).starts_with("HTTP/1.1 502 "));
}

#[test]
fn a_chunked_body_goes_upstream_under_our_length() {
    let mut r = Rig::new();
    r.client(b"POST /pw HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n");
    let t = r.ticket();
    r.conn.route(r.now, t, forward(false, false));
    assert!(r.drain().is_empty(), "no upstream before the body is whole");
    r.client(b"0\r\nX-Trailer: evil\r\n\r\n");
    assert_eq!(r.drain(), [Output::Upstream { fresh: false }]);
    assert!(r.conn.upstream(r.now, SockId(2), false));
    r.conn.on_upstream(r.now, Input::Connected);
    let sent = r.take(SockId(2));
    assert!(
        sent.contains("Content-Length: 3\r\n") && sent.ends_with("\r\n\r\nabc"),
        "{sent}"
    );
    assert!(
        !sent.contains("chunked") && !sent.contains("X-Trailer"),
        "{sent}"
    );
}

#[test]
fn a_slow_head_gets_408_and_an_idle_connection_just_closes() {
    let mut r = Rig::new();
    r.client(b"GET / HT");
    r.later(31);
    assert!(r.take(CLIENT).starts_with("HTTP/1.1 408 "));

    let mut r = Rig::new();
    r.client(b"GET / HTTP/1.1\r\n\r\n");
    let t = r.ticket();
    r.conn.route(r.now, t, Route::refuse(404, "Not found."));
    r.take(CLIENT);
    r.later(31);
    assert!(r.drain().contains(&Output::Close(CLIENT)));
    assert!(r.conn.is_closed());
}

#[test]
fn pipelined_requests_after_the_clients_eof_are_all_answered() {
    let mut r = Rig::new();
    r.client(b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nab");
    r.conn.on_client(r.now, Input::Eof);
    let t = r.ticket();
    r.relay(t, forward(false, false), SockId(2), false);
    r.take(SockId(2));
    r.conn.on_upstream(r.now, Input::Read(OK));
    assert_eq!(r.take(CLIENT), String::from_utf8_lossy(OK));
    // The POST's body waits in the buffer while it is routed: the client's EOF is no reason
    // to give up on it.
    let t = r.ticket();
    r.relay(t, forward(false, false), SockId(3), false);
    let sent = r.take(SockId(3));
    assert!(
        sent.starts_with("POST /b ") && sent.ends_with("\r\n\r\nab"),
        "{sent}"
    );
    r.conn.on_upstream(r.now, Input::Read(OK));
    assert_eq!(r.take(CLIENT), String::from_utf8_lossy(OK));
}

#[test]
fn a_body_cut_short_by_the_clients_eof_ends_the_connection() {
    let mut r = Rig::new();
    r.client(b"POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
    let t = r.ticket();
    r.relay(t, forward(false, false), SockId(2), false);
    r.conn.on_client(r.now, Input::Eof);
    let got = r.drain();
    assert!(got.contains(&Output::Close(SockId(2))) && got.contains(&Output::Close(CLIENT)));
}
