//! What the endpoint itself owns — the upstream pool and its idle timer, admission, the
//! refusal of `CONNECT`, draining — on the simulator, with an ns-proxy in front of a scripted
//! agent and clients that are plain sockets.

use std::time::Duration;

use crate::config::Role;
use crate::testing::sim::roles::{self, agent_socket, metadata_addr, ns_proxy_addr};
use crate::testing::sim::{Answer, Hop, World};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn ns_proxy(max_conns: usize) -> Hop {
    let mut cfg = roles::endpoint(Role::NsProxy(roles::ns_proxy()));
    cfg.conns.max_conns = max_conns;
    Hop::new(cfg, ns_proxy_addr(), agent_socket(), |_, _| {
        Answer::Respond(OK.to_vec())
    })
}

/// Connections the endpoint opened to the agent.
fn upstreams(h: &Hop) -> usize {
    h.w.links_from(h.ep).len()
}

#[test]
fn one_pooled_upstream_serves_sequential_clients_until_its_idle_timer() {
    let mut h = ns_proxy(16);
    h.exchange("GET /a HTTP/1.1\r\n\r\n").assert_is(200, "ok");
    let second = h.w.add_client("127.0.0.1", ns_proxy_addr());
    h.w.exchange(second, "GET /b HTTP/1.1\r\n\r\n")
        .assert_is(200, "ok");
    assert_eq!(
        upstreams(&h),
        1,
        "the second client reuses the pooled upstream"
    );
    assert_eq!(h.server().requests.len(), 2);
    // Idle in the pool for 10 s: closed by us, before the agent's own idle timeout.
    h.w.advance(Duration::from_secs(11));
    let link = &h.w.links_from(h.ep)[0];
    assert!(link.from.closed, "the idle pooled upstream is closed");
    h.exchange("GET /c HTTP/1.1\r\n\r\n").assert_is(200, "ok");
    assert_eq!(upstreams(&h), 2, "a fresh upstream after the idle close");
}

#[test]
fn past_max_conns_a_connection_gets_503_and_a_closed_one_frees_its_place() {
    let mut h = ns_proxy(1);
    let second = h.w.add_client("127.0.0.1", ns_proxy_addr());
    let refused = h.w.response(second, 0);
    assert_eq!(refused.status(), 503, "{}", refused.raw);
    assert!(
        refused.raw.contains("Too many connections."),
        "{}",
        refused.raw
    );
    h.exchange("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .assert_is(200, "ok");
    h.w.settle();
    let third = h.w.add_client("127.0.0.1", ns_proxy_addr());
    h.w.exchange(third, "GET / HTTP/1.1\r\n\r\n")
        .assert_is(200, "ok");
}

#[test]
fn connect_is_refused_unless_the_role_answers_everything_itself() {
    let mut h = ns_proxy(16);
    let r = h.exchange("CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status(), 405, "{}", r.raw);
    assert!(r.raw.contains("CONNECT is not supported."), "{}", r.raw);
    assert!(h.server().requests.is_empty(), "never relayed");
    assert_eq!(upstreams(&h), 0);

    // The server role answers CONNECT itself: its router refuses the authority-form target.
    let mut w = World::new();
    w.endpoint_on(
        metadata_addr(),
        roles::endpoint(Role::Server(roles::server())),
    );
    let client = w.add_client("127.0.0.1", metadata_addr());
    let r = w.exchange(
        client,
        "CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(r.status(), 400, "{}", r.raw);
    assert!(r.raw.contains("origin or absolute form"), "{}", r.raw);
}

#[test]
fn drain_closes_the_pool_and_idle_clients_at_once() {
    let mut h = ns_proxy(16);
    h.exchange("GET / HTTP/1.1\r\n\r\n").assert_is(200, "ok");
    h.w.with_endpoint(h.ep, |ep, now| ep.begin_drain(now));
    h.w.settle();
    assert!(h.w.endpoint(h.ep).is_drained());
    assert!(
        h.w.links_from(h.ep)[0].from.closed,
        "the pooled upstream is closed"
    );
    assert_eq!(
        h.w.endpoint(h.ep).poll_timeout(),
        None,
        "no timer left behind"
    );
}

/// A token request makes the ns-proxy set the hop limit of that client's socket after the
/// bytes of the earlier answers and before any byte of its own; a plain request and a token
/// request refused for its `X-Forwarded-For` do not.
#[test]
fn a_token_request_sets_the_hop_limit_before_its_answer() {
    let mut h = ns_proxy(16);
    let first = h.exchange("GET /latest/meta-data/ HTTP/1.1\r\n\r\n");
    first.assert_is(200, "ok");
    assert_eq!(h.accepted(0).hop_limit, None, "a plain request leaves it");
    let put = "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\
               Content-Length: 0\r\n\r\n";
    h.exchange(put).assert_is(200, "ok");
    assert_eq!(
        h.accepted(0).hop_limit,
        Some((1, first.raw.len())),
        "set after the first answer, before the token's"
    );
    let other = h.w.add_client("127.0.0.1", ns_proxy_addr());
    let proxied = put.replace(
        "Content-Length",
        "X-Forwarded-For: 10.0.0.9\r\nContent-Length",
    );
    assert_eq!(h.w.exchange(other, proxied).status(), 403);
    assert_eq!(h.accepted(1).hop_limit, None, "refused: nothing to protect");
}
