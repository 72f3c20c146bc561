//! The agent endpoint (static backend) between a scripted ns-proxy and a scripted metadata
//! server, in simulated time.

use std::time::Duration;

use mdproxy_core::agent::AgentImds;
use mdproxy_core::config::{AgentReload, Backend, ConnLimits, Reload, Resilience, Role, Timeouts};
use mdproxy_core::http::Limits;
use mdproxy_core::sign::Signer;
use mdproxy_core::socket::{ConnectError, Target};
use mdproxy_core::testing::sim::roles::{self, agent_socket, metadata_addr, NET, PROJECT, ROUTER};
use mdproxy_core::testing::sim::{Answer, Hop, HttpServer, Message, Refusing};
use mdproxy_core::upstream::ServerSpec;

const INSTANCE: &str = "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01";
/// Python: hmac.new(b"s3cr3t", INSTANCE.encode(), hashlib.sha256).hexdigest()
const SIGNATURE: &str = "4cb436cf0ab047ac79fbd7d0e08d104931f00cd0d562ce344516ebf0aebcb949";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

/// An ns-proxy's connection to the agent, and the metadata server behind it (answering as
/// `server` says).
fn agent_with(server: impl FnMut(usize, &Message) -> Answer + 'static) -> Hop {
    let backend = Backend::Static(roles::static_map("10.0.0.5", INSTANCE));
    let cfg = roles::endpoint(Role::Agent(roles::agent(backend)));
    Hop::new(cfg, agent_socket(), metadata_addr(), server)
}

fn agent() -> Hop {
    agent_with(|_, _| Answer::Respond(OK.to_vec()))
}

fn send(s: &mut Hop, xff: &str, scope: &str) -> Message {
    s.exchange(format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-Forwarded-For: {xff}\r\n{scope}\r\n"
    ))
}

fn router(s: &mut Hop, xff: &str) -> Message {
    send(s, xff, &format!("X-Neutron-Router-ID: {ROUTER}\r\n"))
}

#[test]
fn signs_and_forwards_the_resolved_instance() {
    let mut s = agent();
    // A forged identity from further down the chain must not survive.
    let resp = send(
        &mut s,
        "10.0.0.5",
        &format!("X-Neutron-Router-ID: {ROUTER}\r\nX-Instance-ID: evil\r\nX-Tenant-ID: evil\r\n"),
    );
    resp.assert_is(200, "hello");
    let fwd = s.server().last();
    assert_eq!(fwd.headers("X-Instance-ID"), [INSTANCE], "{}", fwd.raw);
    assert_eq!(fwd.headers("X-Tenant-ID"), [PROJECT], "{}", fwd.raw);
    assert_eq!(
        fwd.headers("X-Instance-ID-Signature"),
        [SIGNATURE],
        "{}",
        fwd.raw
    );
    assert_eq!(fwd.headers("X-Forwarded-For"), ["10.0.0.5"], "{}", fwd.raw);
    assert!(
        fwd.headers("X-Neutron-Router-ID").is_empty(),
        "scope is not forwarded: {}",
        fwd.raw
    );
}

#[test]
fn unknown_ip_is_404_with_neutrons_text() {
    let mut s = agent();
    let resp = router(&mut s, "10.0.0.99");
    assert_eq!(resp.status(), 404, "{}", resp.raw);
    assert!(
        (resp.text()).contains(&format!("Instance was not found on router {ROUTER}.")),
        "{}",
        resp.raw
    );
    assert_eq!(s.server().accepted, 0);
    // The connection stays usable.
    send(
        &mut s,
        "10.0.0.5",
        &format!("X-Neutron-Network-ID: {NET}\r\n"),
    )
    .assert_is(200, "hello");
    assert_eq!(s.server().requests.len(), 1);
    assert_eq!(s.w.client(s.client).connections, 1);
}

#[test]
fn scope_header_rules_answer_400() {
    let cases = [
        (
            "both",
            format!("X-Neutron-Router-ID: {ROUTER}\r\nX-Neutron-Network-ID: {NET}\r\n"),
            "Both network",
        ),
        ("neither", String::new(), "Neither"),
        (
            "duplicate router",
            format!("X-Neutron-Router-ID: {ROUTER}\r\nX-Neutron-Router-ID: {ROUTER}\r\n"),
            "Multiple X-Neutron-Router-ID",
        ),
        (
            "duplicate forwarded-for",
            "X-Forwarded-For: 10.0.0.6\r\n".to_owned(),
            "Multiple X-Forwarded-For",
        ),
    ];
    for (name, scope, text) in cases {
        let mut s = agent();
        let resp = send(&mut s, "10.0.0.5", &scope);
        assert_eq!(resp.status(), 400, "{name}: {}", resp.raw);
        assert!(resp.text().contains(text), "{name}: {}", resp.raw);
        assert_eq!(s.server().accepted, 0, "{name}");
    }
}

#[test]
fn metadata_server_down_is_503() {
    let mut s = agent();
    s.w.peer_on(metadata_addr(), Refusing(ConnectError::Refused));
    let resp = router(&mut s, "10.0.0.5");
    assert_eq!(resp.status(), 503, "{}", resp.raw);
    assert!(
        resp.text().contains("temporarily unavailable"),
        "{}",
        resp.raw
    );
}

#[test]
fn forbidden_from_the_server_passes_through() {
    let mut s = agent_with(|_, _| {
        Answer::Respond(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 33\r\n\r\nInvalid proxy request signature.\n"
                .to_vec(),
        )
    });
    router(&mut s, "10.0.0.5").assert_is(403, "Invalid proxy request signature.\n");
}

#[test]
fn reload_swaps_the_static_map_the_secret_and_the_limits() {
    let mut s = agent();
    let reload = AgentReload {
        signer: Signer::new(b"rotated"),
        imds: AgentImds::off(),
        static_map: Some(roles::static_map("10.0.0.77", "other-instance")),
        cache_ttl: Duration::from_secs(1),
        negative_ttl: Duration::from_secs(1),
        limits: Limits {
            max_headers: 4,
            ..Limits::default()
        },
        timeouts: Timeouts::default(),
        conns: ConnLimits::default(),
        servers: None,
    };
    let reload = Reload::Agent(Box::new(reload));
    s.w.with_endpoint(s.ep, |ep, now| ep.reload(now, reload));
    router(&mut s, "10.0.0.77").assert_is(200, "hello");
    let seen = s.server().last();
    assert_eq!(seen.header("X-Instance-ID"), "other-instance");
    let signed = Signer::new(b"rotated").sign("other-instance");
    assert_eq!(seen.header("X-Instance-ID-Signature"), signed.as_str());
    let gone = router(&mut s, "10.0.0.5");
    assert_eq!(gone.status(), 404, "the old port is gone: {}", gone.raw);
    // A new connection has the new limits: five headers are one too many.
    let c = s.w.add_client("127.0.0.1", agent_socket());
    let many = "GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n";
    assert_eq!(s.w.exchange(c, many).status(), 431);
    // The connection open before keeps the limits it began with.
    let four = format!("X-Neutron-Router-ID: {ROUTER}\r\nA: 1\r\n");
    assert_eq!(send(&mut s, "10.0.0.77", &four).status(), 200);
}

#[test]
fn reload_moves_the_agent_to_another_metadata_server() {
    let mut s = agent();
    router(&mut s, "10.0.0.5").assert_is(200, "hello");
    let b_addr = Target::Tcp(([127, 0, 0, 2], 8775).into());
    let b = s.w.peer_on(
        b_addr.clone(),
        HttpServer::new(|_, _| {
            Answer::Respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb".to_vec())
        }),
    );
    let reload = AgentReload {
        signer: Signer::new(roles::SECRET),
        imds: AgentImds::off(),
        static_map: None,
        cache_ttl: Duration::from_secs(5),
        negative_ttl: Duration::from_secs(1),
        limits: Limits::default(),
        timeouts: Timeouts::default(),
        conns: ConnLimits::default(),
        servers: Some((vec![ServerSpec::plain(b_addr, "b")], Resilience::default())),
    };
    s.w.with_endpoint(s.ep, |ep, now| {
        ep.reload(now, Reload::Agent(Box::new(reload)))
    });
    for _ in 0..3 {
        router(&mut s, "10.0.0.5").assert_is(200, "b");
    }
    assert_eq!(
        s.server().requests.len(),
        1,
        "the old server got nothing after"
    );
    let at_b = s.w.server(b).last();
    assert_eq!(at_b.headers("X-Instance-ID"), [INSTANCE], "{}", at_b.raw);
}
