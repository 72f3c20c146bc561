//! The whole chain in simulated time: an instance → ns-proxy → agent → metadata server, every
//! hop a real endpoint (or a scripted Neutron, Keystone or stalled server), every byte moved by
//! the simulator.

use std::time::Duration;

use mdproxy_core::config::{Backend, EndpointConfig, Reload, Role};
use mdproxy_core::lookup::{HttpTarget, KeystoneAuth, NeutronConfig};
use mdproxy_core::sign::Signer;
use mdproxy_core::socket::Target;
use mdproxy_core::testing::sim::roles::{
    self, agent_socket, metadata_addr, ns_proxy_addr, INSTANCE, INSTANCE_IP, NET, PROJECT, ROUTER,
    SECRET, TODAY,
};
use mdproxy_core::testing::sim::{Answer, HttpServer, Message, NodeId, World};

const LIMIT: Duration = Duration::from_secs(120);
const TOKEN: &str = "gAAAAABsim-token";

struct Chain {
    w: World,
    client: NodeId,
    ns: NodeId,
    agent: NodeId,
}

/// A client at the instance's address and an ns-proxy; the agent and the metadata server are
/// added by the test.
fn front(w: &mut World) -> (NodeId, NodeId) {
    let ns = w.endpoint_on(
        ns_proxy_addr(),
        roles::endpoint(Role::NsProxy(roles::ns_proxy())),
    );
    (w.add_client(INSTANCE_IP, ns_proxy_addr()), ns)
}

/// The core's own metadata server, serving the sample instance.
fn metadata_server(w: &mut World) -> NodeId {
    let server = w.endpoint_on(
        metadata_addr(),
        roles::endpoint(Role::Server(roles::server())),
    );
    w.with_endpoint(server, |ep, now| {
        ep.reload(
            now,
            Reload::Instances(vec![roles::sample_instance()], TODAY),
        )
    });
    server
}

/// Instance → ns-proxy → agent (`agent`) → metadata server (`server` adds it).
fn chain(agent: EndpointConfig, server: impl FnOnce(&mut World) -> NodeId) -> (Chain, NodeId) {
    let mut w = World::new();
    let (client, ns) = front(&mut w);
    let agent = w.endpoint_on(agent_socket(), agent);
    let server = server(&mut w);
    (
        Chain {
            w,
            client,
            ns,
            agent,
        },
        server,
    )
}

fn static_chain() -> (Chain, NodeId) {
    chain(
        roles::endpoint(Role::Agent(roles::static_agent())),
        metadata_server,
    )
}

impl Chain {
    /// Sends `GET path` and runs until its answer is back.
    fn get(&mut self, path: &str) -> Message {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
        self.w.exchange(self.client, req)
    }
}

/// What the agent asked the metadata server, on every connection, as text.
fn upstream_text(w: &World, from: NodeId) -> String {
    w.links_from(from).iter().map(|l| l.up.text()).collect()
}

fn count(head: &str, name: &str) -> usize {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    head.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .count()
}

/// The agent's requests (`seen`, `n` of them) carry the sample instance's identity, signed,
/// once each, and not the ns-proxy's scope.
fn assert_signed(seen: &str, n: usize) {
    let sig = Signer::new(SECRET).sign(INSTANCE).to_string();
    for (name, value) in [
        ("X-Instance-ID", INSTANCE),
        ("X-Tenant-ID", PROJECT),
        ("X-Instance-ID-Signature", sig.as_str()),
        ("X-Forwarded-For", INSTANCE_IP),
    ] {
        let line = format!("{name}: {value}\r\n");
        assert_eq!(seen.matches(&line).count(), n, "{name}: {seen}");
        assert_eq!(count(seen, name), n, "{name} once per request: {seen}");
    }
    assert_eq!(count(seen, "X-Neutron-Router-ID"), 0, "{seen}");
}

#[test]
fn the_instance_gets_its_metadata_and_the_server_saw_the_signed_identity() {
    let mut answers = Vec::new();
    // The same exchange a byte at a time, in odd pieces and in whole reads.
    for piece in [1, 7, 4096] {
        let (mut c, server) = static_chain();
        c.w.set_piece(piece);
        let id = c.get("/latest/meta-data/instance-id");
        id.assert_is(200, "i-0000002a");
        let md = c.get("/openstack/latest/meta_data.json");
        let v: serde_json::Value = serde_json::from_slice(&md.body).expect("json");
        assert_eq!(v["uuid"], INSTANCE);

        let to_agent = upstream_text(&c.w, c.ns);
        assert!(
            to_agent.contains(&format!("X-Neutron-Router-ID: {ROUTER}\r\n")),
            "{to_agent}"
        );
        assert!(to_agent.contains(&format!("X-Forwarded-For: {INSTANCE_IP}\r\n")));
        assert_signed(&upstream_text(&c.w, c.agent), 2);
        assert_eq!(c.w.links_to(server).len(), 1);
        answers.push((id.raw, md.raw));
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "every split answers alike"
    );
}

/// Keystone at 127.0.0.1:5000 with a catalog naming Neutron at 127.0.0.1:9696.
fn keystone() -> HttpServer {
    let body = r#"{"token": {"methods": ["password"], "issued_at": "2026-11-24T23:59:59.000000Z",
        "expires_at": "2026-11-25T23:59:59.000000Z", "catalog": [{"type": "network",
        "name": "neutron", "endpoints": [{"interface": "public", "region_id": "RegionOne",
        "url": "http://127.0.0.1:9696"}]}]}}"#;
    let resp = format!(
        "HTTP/1.1 201 Created\r\nX-Subject-Token: {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    HttpServer::answering(resp.as_bytes())
}

fn json(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Neutron: the router's networks, then the instance's port.
fn neutron() -> HttpServer {
    HttpServer::new(|_, req| {
        let body = if req.raw.contains(&format!("device_id={ROUTER}")) {
            format!(r#"{{"ports": [{{"network_id": "{NET}"}}]}}"#)
        } else {
            format!(r#"{{"ports": [{{"device_id": "{INSTANCE}", "project_id": "{PROJECT}"}}]}}"#)
        };
        Answer::Respond(json(&body))
    })
}

#[test]
fn the_chain_with_the_agent_on_neutron_and_keystone() {
    let ks = KeystoneAuth {
        endpoint: HttpTarget::parse_ip_url("http://127.0.0.1:5000/identity").expect("url"),
        username: "neutron".into(),
        password: "p4ss".into(),
        project_name: "service".into(),
        user_domain_name: "Default".into(),
        project_domain_name: "Default".into(),
    };
    let backend = Backend::Neutron(NeutronConfig::new(None, Some(ks)));
    let (mut c, _) = chain(
        roles::endpoint(Role::Agent(roles::agent(backend))),
        metadata_server,
    );
    let keystone =
        c.w.peer_on(Target::Tcp(([127, 0, 0, 1], 5000).into()), keystone());
    let neutron =
        c.w.peer_on(Target::Tcp(([127, 0, 0, 1], 9696).into()), neutron());

    let id = c.get("/latest/meta-data/instance-id");
    id.assert_is(200, "i-0000002a");
    assert_signed(&upstream_text(&c.w, c.agent), 1);

    let auth = c.w.server(keystone);
    assert_eq!(auth.requests.len(), 1, "one token");
    assert!(
        auth.last()
            .raw
            .starts_with("POST /identity/v3/auth/tokens "),
        "{}",
        auth.last().raw
    );
    let queries = &c.w.server(neutron).requests;
    assert_eq!(queries.len(), 2, "router networks, then the port");
    for q in queries {
        assert_eq!(q.header("X-Auth-Token"), TOKEN, "{}", q.raw);
    }
    // Cached: the second request asks nobody.
    let again = c.get("/latest/meta-data/instance-id");
    assert_eq!(again.status(), 200);
    assert_eq!(c.w.server(neutron).requests.len(), 2);
    assert_eq!(c.w.server(keystone).requests.len(), 1);
}

#[test]
fn a_stalled_metadata_server_is_504_at_the_agents_response_timeout() {
    let mut agent = roles::endpoint(Role::Agent(roles::static_agent()));
    agent.timeouts.response = Duration::from_secs(5);
    let (mut c, server) = chain(agent, |w| w.peer_on(metadata_addr(), HttpServer::silent()));
    let resp = c.get("/latest/meta-data/instance-id");
    assert_eq!(resp.status(), 504, "{}", resp.raw);
    assert_eq!(
        c.w.elapsed(),
        Duration::from_secs(5),
        "at the agent's timeout exactly"
    );
    assert_eq!(c.w.server(server).requests.len(), 1);
    // The instance's connection survives the 504 and is served again.
    assert_eq!(c.w.client(c.client).ended.len(), 0);
}

#[test]
fn keep_alive_connections_are_reused_at_every_hop() {
    let (mut c, server) = static_chain();
    for _ in 0..3 {
        let r = c.get("/latest/meta-data/instance-id");
        assert_eq!(r.status(), 200, "{}", r.raw);
    }
    assert_eq!(c.w.client(c.client).connections, 1);
    assert_eq!(
        c.w.links_from(c.ns).len(),
        1,
        "one ns-proxy → agent connection"
    );
    assert_eq!(
        c.w.links_from(c.agent).len(),
        1,
        "one agent → server connection"
    );
    assert_eq!(c.w.links_to(server).len(), 1);
    let served = c.w.links_to(server)[0].up.text();
    assert_eq!(
        served.matches("GET /latest/meta-data/instance-id ").count(),
        3
    );
}

#[test]
fn a_drain_across_the_chain_finishes_the_exchange_in_flight() {
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let (mut c, _) = chain(
        roles::endpoint(Role::Agent(roles::static_agent())),
        move |w| {
            w.peer_on(
                metadata_addr(),
                HttpServer::new(move |_, _| Answer::Later(Duration::from_secs(2), ok.clone())),
            )
        },
    );
    let idle = c.w.add_client(INSTANCE_IP, ns_proxy_addr());
    c.w.client_mut(c.client).get("/latest/meta-data/");
    let agent = c.agent;
    c.w.run_until(LIMIT, |w| !w.links_from(agent).is_empty());
    c.w.settle();
    for node in [c.ns, c.agent] {
        c.w.with_endpoint(node, |ep, now| ep.begin_drain(now));
    }
    c.w.settle();
    // It never sent a request: it may be a client that has just connected, given a moment.
    assert!(c.w.client(idle).ended.is_empty(), "a fresh client cut off");
    c.w.advance(mdproxy_core::proxy::FRESH_GRACE);
    assert_eq!(
        c.w.client(idle).ended.len(),
        1,
        "the idle client is let go after the grace"
    );
    assert!(
        !c.w.endpoint(c.ns).is_drained(),
        "the exchange in flight holds on"
    );
    let resp = c.w.response(c.client, 0);
    resp.assert_is(200, "hello");
    assert_eq!(resp.header("Connection"), "close", "{}", resp.raw);
    assert_eq!(c.w.elapsed(), Duration::from_secs(2));
    let (ns, agent) = (c.ns, c.agent);
    c.w.run_until(LIMIT, |w| {
        w.endpoint(ns).is_drained() && w.endpoint(agent).is_drained()
    });
    // Nothing is left to happen anywhere: every timer of every hop is gone too.
    let steps = (0..1000).take_while(|_| c.w.step()).count();
    assert!(steps < 1000, "the drained chain keeps stepping");
    for node in [c.ns, c.agent] {
        assert!(
            c.w.contract(node).all_closed(),
            "{node:?} closed every socket"
        );
        assert_eq!(c.w.endpoint(node).poll_timeout(), None, "{node:?}");
    }
}
