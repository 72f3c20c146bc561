//! The ns-proxy endpoint driven by a scripted runtime: every scenario runs in simulated time.

use std::time::Duration;

use mdproxy_core::config::{ConnLimits, EndpointConfig, NsProxyConfig, RateLimit, Role, Timeouts};
use mdproxy_core::http::Limits;
use mdproxy_core::scope::{Scope, Uuid};
use mdproxy_core::socket::{ConnectError, Input, Target};

const ROUTER: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";

mod sim;
use sim::{count, Sim, OK};

fn ns_sim(f: impl FnOnce(&mut NsProxyConfig, &mut Timeouts)) -> Sim {
    ns_sim_with(64, f)
}

/// An ns-proxy with DESIGN.md's 1024 connections, and `per_ip` per client IP.
fn ns_sim_with(per_ip: usize, f: impl FnOnce(&mut NsProxyConfig, &mut Timeouts)) -> Sim {
    let mut ns = NsProxyConfig {
        scope: Scope::Router(Uuid::parse(ROUTER.as_bytes()).expect("uuid")),
        upstream: Target::Unix("/tmp/agent.sock".into()),
        rate_limit: None,
    };
    let mut timeouts = Timeouts::default();
    f(&mut ns, &mut timeouts);
    Sim::new(EndpointConfig {
        role: Role::NsProxy(ns),
        limits: Limits::default(),
        conns: ConnLimits {
            max_conns: 1024,
            max_conns_per_ip: per_ip,
        },
        timeouts,
        tls: Default::default(),
        metrics: None,
    })
}

#[test]
fn forged_identity_headers_never_reach_upstream() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    s.send(
        c,
        b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nx-forwarded-for: 203.0.113.7\r\n\
X-Neutron-Router-ID: spoofed\r\nX-NEUTRON-ROUTER-ID: spoofed2\r\nX-Neutron-Network-ID: n\r\n\
X-Instance-ID: i\r\nx-instance-id-signature: s\r\nX-Tenant-ID: t\r\nX-Metadata-Provider: p\r\n\
X-Metadata-Provider-Signature: q\r\nUser-Agent: curl/8\r\n\r\n",
    );
    let up = s.connect_ok();
    let head = s.take(up);
    assert!(
        head.starts_with("GET /latest/meta-data/ HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(count(&head, "X-Forwarded-For"), 1, "{head}");
    assert!(head.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{head}");
    assert_eq!(count(&head, "X-Neutron-Router-ID"), 1, "{head}");
    assert!(
        head.contains(&format!("X-Neutron-Router-ID: {ROUTER}\r\n")),
        "{head}"
    );
    for h in [
        "X-Neutron-Network-ID",
        "X-Instance-ID",
        "X-Instance-ID-Signature",
        "X-Tenant-ID",
        "X-Metadata-Provider",
        "X-Metadata-Provider-Signature",
    ] {
        assert_eq!(count(&head, h), 0, "{h} leaked: {head}");
    }
    assert!(
        head.contains("User-Agent: curl/8\r\n"),
        "other fields pass: {head}"
    );
    s.send(up, OK);
    let resp = s.take(c);
    assert!(
        resp.starts_with("HTTP/1.1 200 OK\r\n") && resp.ends_with("hello"),
        "{resp}"
    );
}

#[test]
fn network_scope_sets_the_network_header() {
    let mut s = ns_sim(|ns, _| {
        ns.scope = Scope::Network(Uuid::parse(ROUTER.as_bytes()).unwrap());
    });
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.1\r\nX-Neutron-Router-ID: x\r\n\r\n");
    let up = s.connect_ok();
    let head = s.take(up);
    assert_eq!(count(&head, "X-Neutron-Router-ID"), 0, "{head}");
    assert!(
        head.contains(&format!("X-Neutron-Network-ID: {ROUTER}\r\n")),
        "{head}"
    );
}

#[test]
fn keep_alive_reuses_the_pooled_upstream() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    for i in 0..3 {
        s.send(c, b"GET /a HTTP/1.1\r\n\r\n");
        if i == 0 {
            s.connect_ok();
        }
        let up = s.connects[0];
        assert!(s.take(up).starts_with("GET /a"), "request {i} forwarded");
        s.send(up, OK);
        assert!(s.take(c).ends_with("hello"), "response {i}");
    }
    assert_eq!(
        s.connects.len(),
        1,
        "one upstream connection for three requests"
    );
    assert!(s.closed.is_empty());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    s.send(
        c,
        b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
    );
    let up = s.connect_ok();
    for i in 1..=3 {
        let fwd = s.take(up);
        assert!(
            fwd.starts_with(&format!("GET /{i} ")),
            "only request {i} is in flight: {fwd}"
        );
        let body = format!("r{i}");
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{body}");
        s.send(up, resp.as_bytes());
        assert!(s.take(c).ends_with(&body));
    }
}

#[test]
fn refused_upstream_answers_503_and_keeps_serving() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    for _ in 0..2 {
        s.send(c, b"GET / HTTP/1.1\r\n\r\n");
        let up = *s.connects.last().unwrap();
        s.input(up, Input::ConnectFailed(ConnectError::Refused));
        let resp = s.take(c);
        assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
        assert!(
            resp.contains(
                "The remote metadata server is temporarily unavailable. Please try again later."
            ),
            "{resp}"
        );
    }
    assert!(
        !s.closed.contains(&c),
        "client connection survives upstream failures"
    );
}

#[test]
fn json_error_when_accept_prefers_it() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.1\r\nAccept: application/json\r\n\r\n");
    let up = *s.connects.last().unwrap();
    s.input(up, Input::ConnectFailed(ConnectError::Refused));
    let resp = s.take(c);
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).expect("json body");
    assert_eq!(v["code"], "503 Service Unavailable");
}

#[test]
fn silent_upstream_gets_504_at_the_response_timeout() {
    let mut s = ns_sim(|_, t| t.response = Duration::from_secs(5));
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.1\r\n\r\n");
    s.connect_ok();
    s.advance(Duration::from_millis(4900));
    assert!(s.take(c).is_empty(), "not yet");
    s.advance(Duration::from_millis(200));
    assert!(s.take(c).starts_with("HTTP/1.1 504 "));
}

#[test]
fn slow_head_gets_408() {
    let mut s = ns_sim(|_, t| t.head = Duration::from_secs(3));
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.1\r\nHost: x\r\n");
    s.advance(Duration::from_secs(3));
    assert!(s.take(c).starts_with("HTTP/1.1 408 "));
    assert!(s.shut.contains(&c), "write side shut after the answer");
    s.input(c, Input::Eof);
    assert!(s.closed.contains(&c));
    assert!(s.connects.is_empty(), "nothing went upstream");
}

#[test]
fn idle_keep_alive_closes_silently() {
    let mut s = ns_sim(|_, t| t.idle = Duration::from_secs(2));
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.1\r\n\r\n");
    let up = s.connect_ok();
    s.send(up, OK);
    s.take(c);
    s.advance(Duration::from_secs(3));
    assert!(s.take(c).is_empty(), "no answer to an idle connection");
    assert!(s.closed.contains(&c));
    assert_eq!(s.ep.connections(), 0);
}

#[test]
fn garbage_from_upstream_is_502() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.1\r\n\r\n");
    let up = s.connect_ok();
    s.send(up, b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
    assert!(s.take(c).starts_with("HTTP/1.1 502 "));
    assert!(s.closed.contains(&up), "a broken upstream is not pooled");
}

#[test]
fn client_errors_get_their_status_and_nothing_goes_upstream() {
    let cases: &[(&str, Vec<u8>, &str)] = &[
        (
            "both TE and CL",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "head over 16 KiB",
            [
                b"GET / HTTP/1.1\r\nX-Big: ".as_slice(),
                &[b'a'; 20_000],
                b"\r\n\r\n",
            ]
            .concat(),
            "431",
        ),
        (
            "body over 64 KiB",
            b"POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n".to_vec(),
            "413",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n".to_vec(),
            "400",
        ),
    ];
    for (name, bytes, status) in cases {
        let mut s = ns_sim(|_, _| {});
        let c = s.accept();
        s.send(c, bytes);
        let resp = s.take(c);
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: {resp}"
        );
        assert!(resp.contains("Connection: close"), "{name}");
        assert!(s.connects.is_empty(), "{name}: nothing upstream");
    }
}

#[test]
fn a_post_is_never_replayed_on_a_new_connection() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    s.send(c, b"GET /1 HTTP/1.1\r\n\r\n");
    let up1 = s.connect_ok();
    s.take(up1);
    s.send(up1, OK);
    s.take(c);
    // The pooled connection breaks after a password POST went out on it: the server may have
    // stored it, so it is not sent again (RFC 9110 §9.2.2); the client hears 502.
    s.send(
        c,
        b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 2\r\n\r\npw",
    );
    assert!(s.take(up1).starts_with("POST "));
    s.input(up1, Input::Eof);
    assert_eq!(s.connects.len(), 1, "no second connection for a POST");
    assert!(s.take(c).starts_with("HTTP/1.1 502 "));
}

#[test]
fn stale_pooled_upstream_is_retried_once_on_a_new_connection() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    s.send(c, b"GET /1 HTTP/1.1\r\n\r\n");
    let up1 = s.connect_ok();
    s.take(up1);
    s.send(up1, OK);
    s.take(c);
    // The agent closed the idle connection just as the next request went out on it.
    s.send(c, b"GET /2 HTTP/1.1\r\n\r\n");
    assert!(s.take(up1).starts_with("GET /2"));
    s.input(up1, Input::Eof);
    assert_eq!(s.connects.len(), 2, "a fresh connection for the replay");
    let up2 = s.connect_ok();
    assert!(s.take(up2).starts_with("GET /2"), "the request is replayed");
    s.send(up2, OK);
    assert!(s.take(c).ends_with("hello"));
}

#[test]
fn chunked_request_body_is_reframed_without_extensions_or_trailers() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    // Trailers naming another instance: eventlet before 0.40.3 would read them as a new request.
    let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Forwarded-For: 10.0.0.7\r\n\
X-Neutron-Network-ID: 5a1c9e3b-7d2f-4e6a-8b0c-1f2e3d4c5b6a\r\n\r\n";
    s.send(
        c,
        b"POST /openstack/latest/password HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for piece in body.chunks(7) {
        s.send(c, piece);
    }
    // Nothing goes upstream before the body is whole; then it goes with our Content-Length.
    let up = s.connect_ok();
    let fwd = s.take(up);
    assert!(
        fwd.starts_with(
            "POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 11\r\n\
X-Forwarded-For: 127.0.0.1\r\n"
        ),
        "{fwd}"
    );
    assert!(fwd.ends_with("\r\n\r\nhello world"), "{fwd}");
    for gone in ["chunked", "ext=1", "10.0.0.7", "Network-ID"] {
        assert!(!fwd.contains(gone), "{gone} forwarded: {fwd}");
    }
    s.send(up, OK);
    assert!(s.take(c).ends_with("hello"));
}

#[test]
fn chunked_response_is_rechunked_without_extensions_or_trailers() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    s.send(c, b"GET /latest/meta-data/ HTTP/1.1\r\n\r\n");
    let up = s.connect_ok();
    let _ = s.take(up);
    s.send(
        up,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-Smuggled: 1\r\n\r\n",
    );
    let got = s.take(c);
    assert!(
        got.ends_with("Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        "{got}"
    );
    assert!(!got.contains("x=y") && !got.contains("Smuggled"), "{got}");
}

#[test]
fn a_client_that_does_not_read_stops_the_upstream_reads() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    s.send(c, b"GET /big HTTP/1.1\r\n\r\n");
    let up = s.connect_ok();
    s.stalled.push(c);
    s.send(up, b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n");
    let chunk = vec![b'x'; 16 * 1024];
    let mut sent = 0;
    while s.ep.wants_read(up) && sent < 10 << 20 {
        s.send(up, &chunk);
        sent += chunk.len();
    }
    assert!(
        sent < 256 * 1024,
        "proxy buffered {sent} bytes for a stalled client"
    );
    // The client reads again: the upstream may be read again too.
    s.stalled.clear();
    s.flush(c);
    assert!(s.ep.wants_read(up));
}

#[test]
fn rate_limit_answers_429() {
    let mut s = ns_sim(|ns, _| {
        ns.rate_limit = Some(RateLimit {
            base_limit: 2,
            base_window: Duration::from_secs(10),
            burst_limit: 100,
            burst_window: Duration::from_secs(10),
        })
    });
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.1\r\n\r\n");
    let up = s.connect_ok();
    for _ in 0..2 {
        s.send(up, OK);
        assert!(s.take(c).starts_with("HTTP/1.1 200"));
        s.send(c, b"GET / HTTP/1.1\r\n\r\n");
    }
    assert!(s.take(c).starts_with("HTTP/1.1 429 "));
}

#[test]
fn connection_limit_per_ip() {
    let mut s = ns_sim_with(2, |_, _| {});
    let a = s.accept();
    let b = s.accept();
    let third = s.accept();
    assert!(s.take(third).starts_with("HTTP/1.1 503 "));
    assert!(s.take(a).is_empty() && s.take(b).is_empty());
}

#[test]
fn drain_waits_for_the_exchange_in_flight() {
    let mut s = ns_sim(|_, _| {});
    let idle = s.accept();
    let busy = s.accept();
    s.send(busy, b"GET / HTTP/1.1\r\n\r\n");
    let up = s.connect_ok();
    s.ep.begin_drain(s.now);
    s.drain();
    assert!(
        s.closed.contains(&idle) || s.shut.contains(&idle),
        "idle closes at once"
    );
    assert!(!s.ep.is_drained());
    s.send(up, OK);
    let resp = s.take(busy);
    assert!(
        resp.contains("Connection: close") && resp.ends_with("hello"),
        "{resp}"
    );
    s.input(idle, Input::Eof);
    s.input(busy, Input::Eof);
    assert!(s.ep.is_drained());
    let _ = s.t0;
}

#[test]
fn token_put_through_an_instance_proxy_is_403() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    s.send(
        c,
        b"PUT //latest/api/token/ HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-Forwarded-For: 10.1.1.1\r\n\r\n",
    );
    assert!(s.take(c).starts_with("HTTP/1.1 403 "));
    assert!(s.connects.is_empty());
    // Without the header the PUT goes through; a GET with the header too.
    s.send(
        c,
        b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    );
    assert_eq!(s.connects.len(), 1);
}

#[test]
fn a_closing_connection_does_not_count_against_the_per_ip_limit() {
    let mut s = ns_sim_with(1, |_, _| {});
    let first = s.accept();
    // A byte past the request: the connection lingers after its answer instead of closing.
    s.send(first, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nX");
    let up = s.connect_ok();
    s.send(up, OK);
    let resp = s.take(first);
    assert!(resp.ends_with("hello") && s.shut.contains(&first), "{resp}");
    assert!(
        !s.closed.contains(&first),
        "lingering until the client's EOF"
    );
    // The client reconnects before its old connection saw EOF: it is served.
    let second = s.accept();
    s.send(second, b"GET / HTTP/1.1\r\n\r\n");
    assert!(s.take(second).is_empty(), "forwarded, not refused");
    // A third while the second is active is over the limit.
    let third = s.accept();
    assert!(s.take(third).starts_with("HTTP/1.1 503 "));
}

#[test]
fn a_client_that_asked_to_close_is_closed_without_lingering() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    let up = s.connect_ok();
    s.send(up, OK);
    let resp = s.take(c);
    assert!(
        resp.contains("Connection: close") && resp.ends_with("hello"),
        "{resp}"
    );
    assert!(s.closed.contains(&c), "closed once the answer is written");
    assert!(
        !s.shut.contains(&c),
        "no shutdown-and-linger for a clean close"
    );
    assert!(!s.closed.contains(&up), "the upstream stays pooled");
    assert_eq!(s.ep.connections(), 0);
}

#[test]
fn an_http10_client_is_closed_without_lingering_once_its_answer_is_written() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.0\r\n\r\n");
    let up = s.connect_ok();
    // The client's socket takes nothing for now: the answer waits, and so does the close.
    s.stalled.push(c);
    s.send(up, OK);
    assert!(
        !s.closed.contains(&c),
        "closed before the answer was written"
    );
    s.stalled.retain(|x| *x != c);
    s.flush(c);
    assert!(s.take(c).ends_with("hello"));
    assert!(s.closed.contains(&c) && !s.shut.contains(&c));
}

#[test]
fn an_error_answer_still_lingers() {
    let mut s = ns_sim(|_, _| {});
    let c = s.accept();
    // Conflicting framing: 400, and the body it announced may still be coming.
    s.send(
        c,
        b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    );
    assert!(s.take(c).starts_with("HTTP/1.1 400 "));
    assert!(s.shut.contains(&c) && !s.closed.contains(&c));
    s.input(c, Input::Eof);
    assert!(s.closed.contains(&c));
}
