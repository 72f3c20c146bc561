//! The ns-proxy endpoint between instance clients and a scripted agent, in simulated time.

use std::time::Duration;

use mdproxy_core::config::{NsProxyConfig, RateLimit, Role, Timeouts};
use mdproxy_core::scope::Scope;
use mdproxy_core::testing::sim::roles::{self, agent_socket, ns_proxy_addr, uuid, ROUTER};
use mdproxy_core::testing::sim::{Answer, Hop, Message};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

fn ns_with(
    f: impl FnOnce(&mut NsProxyConfig, &mut Timeouts),
    agent: impl FnMut(usize, &Message) -> Answer + 'static,
) -> Hop {
    let mut cfg = roles::ns_proxy();
    let mut timeouts = Timeouts::default();
    f(&mut cfg, &mut timeouts);
    let mut ep = roles::endpoint(Role::NsProxy(cfg));
    ep.timeouts = timeouts;
    Hop::new(ep, ns_proxy_addr(), agent_socket(), agent)
}

/// The ns-proxy as configured by `f`, the agent answering [`OK`].
fn ns_sim(f: impl FnOnce(&mut NsProxyConfig, &mut Timeouts)) -> Hop {
    ns_with(f, |_, _| Answer::Respond(OK.to_vec()))
}

/// The ns-proxy with at most `per_ip` connections from one address, the agent answering [`OK`].
fn ns_sim_per_ip(per_ip: usize) -> Hop {
    let mut ep = roles::endpoint(Role::NsProxy(roles::ns_proxy()));
    ep.conns.max_conns_per_ip = per_ip;
    Hop::new(ep, ns_proxy_addr(), agent_socket(), |_, _| {
        Answer::Respond(OK.to_vec())
    })
}

#[test]
fn forged_identity_headers_never_reach_upstream() {
    let mut s = ns_sim(|_, _| {});
    let resp = s.exchange(
        b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nx-forwarded-for: 203.0.113.7\r\n\
X-Neutron-Router-ID: spoofed\r\nX-NEUTRON-ROUTER-ID: spoofed2\r\nX-Neutron-Network-ID: n\r\n\
X-Instance-ID: i\r\nx-instance-id-signature: s\r\nX-Tenant-ID: t\r\nX-Metadata-Provider: p\r\n\
X-Metadata-Provider-Signature: q\r\nUser-Agent: curl/8\r\n\r\n",
    );
    resp.assert_is(200, "hello");
    let fwd = s.server().last();
    assert!(
        fwd.raw.starts_with("GET /latest/meta-data/ HTTP/1.1\r\n"),
        "{}",
        fwd.raw
    );
    assert_eq!(fwd.headers("X-Forwarded-For"), ["127.0.0.1"], "{}", fwd.raw);
    assert_eq!(fwd.headers("X-Neutron-Router-ID"), [ROUTER], "{}", fwd.raw);
    for h in [
        "X-Neutron-Network-ID",
        "X-Instance-ID",
        "X-Instance-ID-Signature",
        "X-Tenant-ID",
        "X-Metadata-Provider",
        "X-Metadata-Provider-Signature",
    ] {
        assert!(fwd.headers(h).is_empty(), "{h} leaked: {}", fwd.raw);
    }
    assert_eq!(fwd.header("User-Agent"), "curl/8", "other fields pass");
}

#[test]
fn network_scope_sets_the_network_header() {
    let mut s = ns_sim(|ns, _| ns.scope = Scope::Network(uuid(ROUTER)));
    s.exchange(b"GET / HTTP/1.1\r\nX-Neutron-Router-ID: x\r\n\r\n");
    let fwd = s.server().last();
    assert!(fwd.headers("X-Neutron-Router-ID").is_empty(), "{}", fwd.raw);
    assert_eq!(fwd.headers("X-Neutron-Network-ID"), [ROUTER], "{}", fwd.raw);
}

#[test]
fn keep_alive_reuses_the_pooled_upstream() {
    let mut s = ns_sim(|_, _| {});
    for i in 0..3 {
        s.exchange(b"GET /a HTTP/1.1\r\n\r\n")
            .assert_is(200, "hello");
        assert!(
            s.server().last().raw.starts_with("GET /a"),
            "request {i} forwarded"
        );
    }
    assert_eq!(
        s.server().accepted,
        1,
        "one upstream connection for three requests"
    );
    let links = s.w.links_from(s.ep);
    assert!(!links[0].from.closed && !s.accepted(0).closed);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut s = ns_with(
        |_, _| {},
        |n, _| {
            let body = format!("r{}", n + 1);
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{body}");
            Answer::Later(Duration::from_secs(1), resp.into_bytes())
        },
    );
    s.client().pipeline = true;
    s.client()
        .send(&b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n"[..]);
    s.w.await_requests(s.server, 1);
    s.w.settle();
    let upstream = s.w.links_from(s.ep)[0].up.text();
    assert!(
        !upstream.contains("GET /2"),
        "only request 1 is in flight: {upstream}"
    );
    let bodies: Vec<String> = (0..3).map(|n| s.w.response(s.client, n).text()).collect();
    assert_eq!(bodies, ["r1", "r2", "r3"]);
    let paths: Vec<bool> = (s.server().requests.iter().enumerate())
        .map(|(i, r)| r.raw.starts_with(&format!("GET /{} ", i + 1)))
        .collect();
    assert_eq!(paths, [true; 3]);
}

#[test]
fn refused_upstream_answers_503_and_keeps_serving() {
    let mut s = ns_sim(|_, _| {});
    s.w.unlisten(&agent_socket());
    for _ in 0..2 {
        let resp = s.exchange(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(resp.status(), 503, "{}", resp.raw);
        assert!(
            resp.text().contains(
                "The remote metadata server is temporarily unavailable. Please try again later."
            ),
            "{}",
            resp.raw
        );
    }
    assert!(
        s.w.client(s.client).ended.is_empty(),
        "client connection survives upstream failures"
    );
}

#[test]
fn json_error_when_accept_prefers_it() {
    let mut s = ns_sim(|_, _| {});
    s.w.unlisten(&agent_socket());
    let resp = s.exchange(b"GET / HTTP/1.1\r\nAccept: application/json\r\n\r\n");
    let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("json body");
    assert_eq!(v["code"], "503 Service Unavailable");
}

#[test]
fn silent_upstream_gets_504_at_the_response_timeout() {
    let mut s = ns_with(
        |_, t| t.response = Duration::from_secs(5),
        |_, _| Answer::Silence,
    );
    let resp = s.exchange(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(resp.status(), 504, "{}", resp.raw);
    assert_eq!(
        s.w.elapsed(),
        Duration::from_secs(5),
        "at the timeout, not before"
    );
}

#[test]
fn slow_head_gets_408() {
    let mut s = ns_sim(|_, t| t.head = Duration::from_secs(3));
    s.client().hold_open = true;
    let resp = s.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(resp.status(), 408, "{}", resp.raw);
    assert_eq!(s.w.elapsed(), Duration::from_secs(3));
    assert!(
        s.accepted(0).shut && !s.accepted(0).closed,
        "write side shut after the answer"
    );
    s.client().close();
    s.w.settle();
    assert!(s.accepted(0).closed);
    assert_eq!(s.server().accepted, 0, "nothing went upstream");
}

#[test]
fn idle_keep_alive_closes_silently() {
    let mut s = ns_sim(|_, t| t.idle = Duration::from_secs(2));
    s.exchange(b"GET / HTTP/1.1\r\n\r\n");
    s.w.advance(Duration::from_secs(3));
    let client = s.w.client(s.client);
    assert_eq!(client.responses.len(), 1, "no answer to an idle connection");
    assert_eq!(client.ended.len(), 1, "closed");
    assert_eq!(s.w.endpoint(s.ep).connections(), 0);
}

#[test]
fn garbage_from_upstream_is_502() {
    let mut s = ns_with(
        |_, _| {},
        |_, _| Answer::Respond(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
    );
    assert_eq!(s.exchange(b"GET / HTTP/1.1\r\n\r\n").status(), 502);
    assert!(
        s.w.links_from(s.ep)[0].from.closed,
        "a broken upstream is not pooled"
    );
}

#[test]
fn client_errors_get_their_status_and_nothing_goes_upstream() {
    let cases: &[(&str, Vec<u8>, u16)] = &[
        (
            "both TE and CL",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            400,
        ),
        (
            "head over 16 KiB",
            [
                b"GET / HTTP/1.1\r\nX-Big: ".as_slice(),
                &[b'a'; 20_000],
                b"\r\n\r\n",
            ]
            .concat(),
            431,
        ),
        (
            "body over 64 KiB",
            b"POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n".to_vec(),
            413,
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (name, bytes, status) in cases {
        let mut s = ns_sim(|_, _| {});
        let resp = s.exchange(bytes.clone());
        assert_eq!(resp.status(), *status, "{name}: {}", resp.raw);
        assert_eq!(resp.header("Connection"), "close", "{name}");
        assert_eq!(s.server().accepted, 0, "{name}: nothing upstream");
    }
}

#[test]
fn a_post_is_never_replayed_on_a_new_connection() {
    // The pooled connection breaks after a password POST went out on it: the server may have
    // stored it, so it is not sent again (RFC 9110 §9.2.2); the client hears 502.
    let mut s = ns_with(
        |_, _| {},
        |n, _| {
            if n == 0 {
                Answer::Respond(OK.to_vec())
            } else {
                Answer::Close
            }
        },
    );
    s.exchange(b"GET /1 HTTP/1.1\r\n\r\n")
        .assert_is(200, "hello");
    let resp =
        s.exchange(b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 2\r\n\r\npw");
    assert_eq!(resp.status(), 502, "{}", resp.raw);
    assert!(s.server().last().raw.starts_with("POST "));
    assert_eq!(s.server().accepted, 1, "no second connection for a POST");
}

#[test]
fn stale_pooled_upstream_is_retried_once_on_a_new_connection() {
    // The agent closes the idle connection just as the next request goes out on it.
    let mut s = ns_with(
        |_, _| {},
        |n, _| {
            if n == 1 {
                Answer::Close
            } else {
                Answer::Respond(OK.to_vec())
            }
        },
    );
    s.exchange(b"GET /1 HTTP/1.1\r\n\r\n");
    s.exchange(b"GET /2 HTTP/1.1\r\n\r\n")
        .assert_is(200, "hello");
    let agent = s.server();
    assert_eq!(agent.accepted, 2, "a fresh connection for the replay");
    assert!(
        agent.requests[1].raw.starts_with("GET /2") && agent.requests[2].raw.starts_with("GET /2"),
        "the request is replayed"
    );
}

#[test]
fn chunked_request_body_is_reframed_without_extensions_or_trailers() {
    let mut s = ns_sim(|_, _| {});
    s.w.set_piece(7);
    // Trailers naming another instance: eventlet before 0.40.3 would read them as a new request.
    let resp = s.exchange(
        b"POST /openstack/latest/password HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Forwarded-For: 10.0.0.7\r\n\
X-Neutron-Network-ID: 5a1c9e3b-7d2f-4e6a-8b0c-1f2e3d4c5b6a\r\n\r\n",
    );
    resp.assert_is(200, "hello");
    let fwd = &s.server().last().raw;
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
}

#[test]
fn chunked_response_is_rechunked_without_extensions_or_trailers() {
    let mut s = ns_with(
        |_, _| {},
        |_, _| {
            Answer::Respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-Smuggled: 1\r\n\r\n".to_vec())
        },
    );
    let got = s.exchange(b"GET /latest/meta-data/ HTTP/1.1\r\n\r\n").raw;
    assert!(
        got.ends_with("Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        "{got}"
    );
    assert!(!got.contains("x=y") && !got.contains("Smuggled"), "{got}");
}

#[test]
fn a_client_that_does_not_read_stops_the_upstream_reads() {
    const BIG: usize = 1 << 20;
    let mut big = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
    big.resize(big.len() + BIG, b'x');
    let mut s = ns_with(|_, _| {}, move |_, _| Answer::Respond(big.clone()));
    s.client().reading = false;
    s.client().get("/big");
    s.w.settle();
    let read = s.w.links_from(s.ep)[0].down.delivered.len();
    assert!(
        read < 256 * 1024,
        "proxy read {read} bytes for a stalled client"
    );
    // The client reads again: the upstream is read again too, to the end.
    s.client().reading = true;
    assert_eq!(s.w.response(s.client, 0).body.len(), BIG);
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
    let statuses: Vec<u16> = (0..3)
        .map(|_| s.exchange(b"GET / HTTP/1.1\r\n\r\n").status())
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
}

#[test]
fn connection_limit_per_ip() {
    let mut s = ns_sim_per_ip(2);
    let b = s.w.add_client("127.0.0.1", ns_proxy_addr());
    let third = s.w.add_client("127.0.0.1", ns_proxy_addr());
    assert_eq!(s.w.response(third, 0).status(), 503);
    for c in [s.client, b] {
        assert!(s.w.client(c).responses.is_empty());
    }
}

#[test]
fn drain_waits_for_the_exchange_in_flight() {
    let mut s = ns_with(
        |_, _| {},
        |_, _| Answer::Later(Duration::from_secs(1), OK.to_vec()),
    );
    let idle = s.w.add_client("127.0.0.1", ns_proxy_addr());
    s.client().get("/");
    s.w.await_requests(s.server, 1);
    s.w.with_endpoint(s.ep, |ep, now| ep.begin_drain(now));
    s.w.settle();
    // It never sent a request: a client that has just connected gets a moment for one.
    assert!(s.w.client(idle).ended.is_empty(), "a fresh client cut off");
    s.w.advance(mdproxy_core::proxy::FRESH_GRACE);
    assert_eq!(
        s.w.client(idle).ended.len(),
        1,
        "idle closes after the grace"
    );
    assert!(s.w.client(idle).responses.is_empty(), "told it was slow");
    assert!(!s.w.endpoint(s.ep).is_drained());
    let resp = s.w.response(s.client, 0);
    resp.assert_is(200, "hello");
    assert_eq!(resp.header("Connection"), "close", "{}", resp.raw);
    s.w.settle();
    assert!(s.w.endpoint(s.ep).is_drained());
}

#[test]
fn token_put_through_an_instance_proxy_is_403() {
    let mut s = ns_sim(|_, _| {});
    let resp = s.exchange(
        b"PUT //latest/api/token/ HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-Forwarded-For: 10.1.1.1\r\n\r\n",
    );
    assert_eq!(resp.status(), 403, "{}", resp.raw);
    assert_eq!(s.server().accepted, 0);
    // Without the header the PUT goes through.
    s.exchange(
        b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    );
    assert!(s.server().last().raw.starts_with("PUT /latest/api/token "));
}

#[test]
fn a_closing_connection_does_not_count_against_the_per_ip_limit() {
    let mut s = ns_sim_per_ip(1);
    s.client().hold_open = true;
    // A byte past the request: the connection lingers after its answer instead of closing.
    s.exchange(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nX")
        .assert_is(200, "hello");
    assert!(s.accepted(0).shut, "shut after the answer");
    assert!(!s.accepted(0).closed, "lingering until the client's EOF");
    // The client reconnects before its old connection saw EOF: it is served.
    let second = s.w.add_client("127.0.0.1", ns_proxy_addr());
    let again = s.w.exchange(second, &b"GET / HTTP/1.1\r\n\r\n"[..]);
    again.assert_is(200, "hello");
    // A third while the second is open is over the limit.
    let third = s.w.add_client("127.0.0.1", ns_proxy_addr());
    assert_eq!(s.w.response(third, 0).status(), 503);
}

#[test]
fn a_client_that_asked_to_close_is_closed_without_lingering() {
    let mut s = ns_sim(|_, _| {});
    s.client().hold_open = true;
    let resp = s.exchange(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    resp.assert_is(200, "hello");
    assert_eq!(resp.header("Connection"), "close");
    s.w.settle();
    assert!(s.accepted(0).closed, "closed once the answer is written");
    assert!(
        !s.accepted(0).shut,
        "no shutdown-and-linger for a clean close"
    );
    assert!(
        !s.w.links_from(s.ep)[0].from.closed,
        "the upstream stays pooled"
    );
    assert_eq!(s.w.endpoint(s.ep).connections(), 0);
}

#[test]
fn an_http10_client_is_closed_without_lingering_once_its_answer_is_written() {
    let mut s = ns_sim(|_, _| {});
    // The client's socket takes a byte and then nothing: the answer waits, and so does the
    // close.
    s.w.set_capacity(1);
    s.client().reading = false;
    s.client().send(&b"GET / HTTP/1.0\r\n\r\n"[..]);
    s.w.await_requests(s.server, 1);
    s.w.settle();
    assert!(
        !s.accepted(0).closed,
        "closed before the answer was written"
    );
    s.client().reading = true;
    s.w.response(s.client, 0).assert_is(200, "hello");
    assert!(s.accepted(0).closed && !s.accepted(0).shut);
}

#[test]
fn an_error_answer_still_lingers() {
    let mut s = ns_sim(|_, _| {});
    s.client().hold_open = true;
    // Conflicting framing: 400, and the body it announced may still be coming.
    let resp = s.exchange(
        b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    );
    assert_eq!(resp.status(), 400, "{}", resp.raw);
    assert!(s.accepted(0).shut && !s.accepted(0).closed);
    s.client().close();
    s.w.settle();
    assert!(s.accepted(0).closed);
}
