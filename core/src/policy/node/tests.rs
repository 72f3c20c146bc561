//! The node on the simulator: the scope comes from the listener, every identity field the
//! instance sends is ignored, the metadata server sees what ns-proxy → agent would send, and
//! listeners come and go without touching the others.

use std::time::Duration;

use crate::agent::StaticMap;
use crate::config::{AgentConfig, Backend, RateLimit, Role};
use crate::listener::{ListenerId, ScopedListener};
use crate::metadata::ImdsV2;
use crate::scope::Scope;
use crate::socket::Target;
use crate::testing::sim::roles::{self, agent_socket, metadata_addr, ns_proxy_addr, uuid};
use crate::testing::sim::{Answer, HttpServer, NodeId, World};

const R1: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";
const R2: &str = "11111111-2222-4333-8444-555555555555";
const N1: &str = "9c2b1a4e-0000-4000-8000-000000000001";
const N2: &str = "9c2b1a4e-0000-4000-8000-000000000002";
const I1: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
const I2: &str = "7a0d2c2f-4d5b-4c9f-8e3b-2a3f4e5d6c7b";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// The same address, 10.0.0.5, behind two routers: two instances.
fn two_routers() -> StaticMap {
    let text = format!(
        "[[router]]\nid = \"{R1}\"\nnetworks = [\"{N1}\"]\n\n[[router]]\nid = \"{R2}\"\n\
         networks = [\"{N2}\"]\n\n[[port]]\nnetwork = \"{N1}\"\nip = \"10.0.0.5\"\n\
         device_id = \"{I1}\"\nproject_id = \"p1\"\n\n[[port]]\nnetwork = \"{N2}\"\n\
         ip = \"10.0.0.5\"\ndevice_id = \"{I2}\"\nproject_id = \"p2\"\n"
    );
    StaticMap::parse(&text).unwrap()
}

fn listen_a() -> Target {
    Target::Tcp(([10, 0, 0, 1], 9697).into())
}

fn listen_b() -> Target {
    Target::Tcp(([10, 1, 0, 1], 9697).into())
}

fn scoped(router: &str) -> ScopedListener {
    ScopedListener {
        scope: Scope::Router(uuid(router)),
        rate_limit: None,
        max_conns: 16,
        imdsv2: None,
    }
}

/// A node serving R1 on [`listen_a`] (listener 1) and R2 on [`listen_b`] (listener 2) in front
/// of a metadata server that answers 200 "ok".
struct Node {
    w: World,
    ep: NodeId,
    server: NodeId,
}

fn node(cfg_a: ScopedListener) -> Node {
    node_of(cfg_a, roles::agent(Backend::Static(two_routers())))
}

/// [`node`] with the agent's settings `agent`.
fn node_of(cfg_a: ScopedListener, agent: AgentConfig) -> Node {
    let mut w = World::new();
    let ep = w.endpoint_on(listen_a(), roles::endpoint(Role::Node(agent)));
    w.listen(listen_b(), ep);
    w.scope_target(listen_a(), ListenerId(1));
    w.scope_target(listen_b(), ListenerId(2));
    w.with_endpoint(ep, |ep, _| {
        ep.add_listener(ListenerId(1), cfg_a);
        ep.add_listener(ListenerId(2), scoped(R2));
    });
    let server = w.peer_on(
        metadata_addr(),
        HttpServer::new(|_, _| Answer::Respond(OK.to_vec())),
    );
    Node { w, ep, server }
}

/// Everything an instance might claim about itself, in several spellings.
const SPOOF: &str = "X-Forwarded-For: 10.9.9.9\r\nX-Neutron-Router-ID: 11111111-2222-4333-8444-555555555555\r\n\
    x-instance-id: evil\r\nX_Instance_ID: evil\r\nX-Tenant-ID: evil\r\nX-Instance-ID-Signature: 00\r\n\
    Forwarded: for=10.9.9.9\r\nX-Real-IP: 10.9.9.9\r\nX-OVN-Network-ID: 11111111-2222-4333-8444-555555555555\r\n";

fn request(extra: &str) -> String {
    format!(
        "GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         User-Agent: cloud-init\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n{extra}\r\n"
    )
}

#[test]
fn each_listener_names_its_own_scope_whatever_the_instance_says() {
    let mut n = node(scoped(R1));
    for (target, instance, project) in [(listen_a(), I1, "p1"), (listen_b(), I2, "p2")] {
        let client = n.w.add_client("10.0.0.5", target);
        n.w.exchange(client, request(SPOOF)).assert_is(200, "ok");
        let seen = n.w.server(n.server).last().clone();
        assert_eq!(seen.header("X-Instance-ID"), instance, "{}", seen.raw);
        assert_eq!(seen.header("X-Tenant-ID"), project, "{}", seen.raw);
        assert_eq!(seen.header("X-Forwarded-For"), "10.0.0.5", "{}", seen.raw);
        let signed = roles::agent(Backend::Static(two_routers()))
            .signer
            .sign(instance);
        assert_eq!(seen.header("X-Instance-ID-Signature"), signed.as_ref());
        for name in [
            "Forwarded",
            "X-Real-IP",
            "X-Neutron-Router-ID",
            "X-OVN-Network-ID",
        ] {
            assert!(
                seen.headers(name).is_empty(),
                "{name} reached the server: {}",
                seen.raw
            );
        }
    }
    // An address the listener's router does not know.
    let stranger = n.w.add_client("10.0.0.6", listen_a());
    let r = n.w.exchange(stranger, request(""));
    assert_eq!(r.status(), 404, "{}", r.raw);
    assert!(
        r.raw
            .contains(&format!("Instance was not found on router {R1}.")),
        "{}",
        r.raw
    );
}

#[test]
fn the_metadata_server_sees_what_ns_proxy_then_agent_would_send() {
    let hostile = request(&format!(
        "{SPOOF}Cookie: c\r\nX_Custom: 1\r\nConnection: keep-alive\r\n"
    ));
    // The two-hop chain: ns-proxy of R1 → agent → server.
    let mut w = World::new();
    let mut proxy = roles::ns_proxy();
    proxy.scope = Scope::Router(uuid(R1));
    w.endpoint_on(ns_proxy_addr(), roles::endpoint(Role::NsProxy(proxy)));
    let agent = roles::agent(Backend::Static(two_routers()));
    w.endpoint_on(agent_socket(), roles::endpoint(Role::Agent(agent)));
    let server = w.peer_on(
        metadata_addr(),
        HttpServer::new(|_, _| Answer::Respond(OK.to_vec())),
    );
    let client = w.add_client("10.0.0.5", ns_proxy_addr());
    w.exchange(client, hostile.clone()).assert_is(200, "ok");
    let chain = w.server(server).last().raw.clone();

    let mut n = node(scoped(R1));
    let client = n.w.add_client("10.0.0.5", listen_a());
    n.w.exchange(client, hostile).assert_is(200, "ok");
    let direct = n.w.server(n.server).last().raw.clone();
    assert_eq!(direct, chain, "node and ns-proxy → agent differ");
    assert!(
        direct.contains(&format!("X-Instance-ID: {I1}\r\n")),
        "{direct}"
    );
}

#[test]
fn removing_a_listener_ends_its_idle_connections_and_leaves_the_others_alone() {
    let mut n = node(scoped(R1));
    let a = n.w.add_client("10.0.0.5", listen_a());
    let b = n.w.add_client("10.0.0.5", listen_b());
    n.w.exchange(a, request("")).assert_is(200, "ok");
    n.w.exchange(b, request("")).assert_is(200, "ok");
    n.w.unlisten(&listen_a());
    n.w.with_endpoint(n.ep, |ep, now| ep.remove_listener(now, ListenerId(1)));
    n.w.settle();
    let ids: Vec<ListenerId> =
        n.w.endpoint(n.ep)
            .scoped_listeners()
            .map(|(id, _)| id)
            .collect();
    assert_eq!(ids, [ListenerId(2)]);
    assert_eq!(
        n.w.endpoint(n.ep).connections(),
        1,
        "a's idle keep-alive connection is closed"
    );
    // b's keep-alive connection goes on serving R2.
    n.w.exchange(b, request("")).assert_is(200, "ok");
    assert_eq!(n.w.server(n.server).last().header("X-Instance-ID"), I2);
    // A socket the runtime had not closed yet: its connection is refused, not misattributed.
    n.w.listen(listen_a(), n.ep);
    let late = n.w.add_client("10.0.0.5", listen_a());
    let r = n.w.exchange(late, request(""));
    assert_eq!(r.status(), 503, "{}", r.raw);
    assert!(r.raw.contains("Not serving here."), "{}", r.raw);
}

#[test]
fn a_listener_has_its_own_rate_limit_and_connection_limit() {
    let limited = ScopedListener {
        rate_limit: Some(RateLimit {
            base_limit: 2,
            base_window: Duration::from_secs(10),
            burst_limit: 2,
            burst_window: Duration::from_secs(10),
        }),
        max_conns: 1,
        ..scoped(R1)
    };
    let mut n = node(limited);
    let a = n.w.add_client("10.0.0.5", listen_a());
    n.w.exchange(a, request("")).assert_is(200, "ok");
    n.w.exchange(a, request("")).assert_is(200, "ok");
    let r = n.w.exchange(a, request(""));
    assert_eq!(r.status(), 429, "{}", r.raw);
    // One connection in R1 at a time; R2 is not affected by either limit.
    let second = n.w.add_client("10.0.0.7", listen_a());
    let r = n.w.response(second, 0);
    assert_eq!(r.status(), 503, "{}", r.raw);
    assert!(
        r.raw.contains("Too many connections on this network."),
        "{}",
        r.raw
    );
    let b = n.w.add_client("10.0.0.5", listen_b());
    for _ in 0..3 {
        n.w.exchange(b, request("")).assert_is(200, "ok");
    }
}

#[test]
fn a_connection_of_no_scoped_listener_is_for_no_network() {
    let mut n = node(scoped(R1));
    let plain = Target::Tcp(([10, 2, 0, 1], 80).into());
    n.w.listen(plain.clone(), n.ep);
    let c = n.w.add_client("10.0.0.5", plain);
    let r = n.w.exchange(c, request(""));
    assert_eq!(r.status(), 404, "{}", r.raw);
    assert!(n.w.server(n.server).requests.is_empty());
}

#[test]
fn a_listeners_imdsv2_mode_comes_before_the_agents() {
    let mut agent = roles::agent(Backend::Static(two_routers()));
    let keys = crate::metadata::TokenKeys::parse(b"0123456789abcdef0123456789abcdef").unwrap();
    agent.imds = crate::agent::AgentImds {
        mode: ImdsV2::Optional,
        issuer: Some(crate::agent::Issuer {
            tokens: crate::metadata::Tokens::new(
                keys,
                crate::metadata::TokenClock::new(crate::testing::epoch(), Duration::ZERO),
            ),
            entropy: std::sync::Arc::new(roles::Steady::default()),
        }),
        // The flags say R1 is off: the listener's own mode still wins.
        scopes: [(uuid(R1), ImdsV2::Off)].into(),
        ..crate::agent::AgentImds::off()
    };
    let required = ScopedListener {
        imdsv2: Some(ImdsV2::Required),
        ..scoped(R1)
    };
    let mut n = node_of(required, agent);
    let a = n.w.add_client("10.0.0.5", listen_a());
    let r = n.w.exchange(a, request(""));
    assert_eq!(r.status(), 401, "{}", r.raw);
    // R2's listener has no mode of its own: the agent's optional lets a token-less GET by.
    let b = n.w.add_client("10.0.0.5", listen_b());
    n.w.exchange(b, request("")).assert_is(200, "ok");
    assert_eq!(n.w.server(n.server).requests.len(), 1);
}
