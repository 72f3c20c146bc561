//! The agent endpoint (static backend) between a scripted ns-proxy and a scripted metadata
//! server, in simulated time.

use mdproxy_core::config::{Backend, Reload, Role};
use mdproxy_core::socket::ConnectError;
use mdproxy_core::testing::sim::roles::{self, agent_socket, metadata_addr, NET, PROJECT, ROUTER};
use mdproxy_core::testing::sim::{Answer, HttpServer, Message, NodeId, Refusing, World};

const INSTANCE: &str = "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01";
/// Python: hmac.new(b"s3cr3t", INSTANCE.encode(), hashlib.sha256).hexdigest()
const SIGNATURE: &str = "4cb436cf0ab047ac79fbd7d0e08d104931f00cd0d562ce344516ebf0aebcb949";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

/// An ns-proxy's connection to the agent, and the metadata server behind it (answering as
/// `server` says).
struct Agent {
    w: World,
    agent: NodeId,
    server: NodeId,
    ns: NodeId,
}

fn agent_with(server: impl FnMut(usize, &Message) -> Answer + 'static) -> Agent {
    let mut w = World::new();
    let backend = Backend::Static(roles::static_map("10.0.0.5", INSTANCE));
    let cfg = roles::endpoint(Role::Agent(roles::agent(backend)));
    let agent = w.endpoint_on(agent_socket(), cfg);
    let server = w.peer_on(metadata_addr(), HttpServer::new(server));
    let ns = w.add_client("127.0.0.1", agent_socket());
    Agent {
        w,
        agent,
        server,
        ns,
    }
}

fn agent() -> Agent {
    agent_with(|_, _| Answer::Respond(OK.to_vec()))
}

impl Agent {
    fn send(&mut self, xff: &str, scope: &str) -> Message {
        let req = format!(
            "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
             X-Forwarded-For: {xff}\r\n{scope}\r\n"
        );
        self.w.exchange(self.ns, req)
    }

    fn router(&mut self, xff: &str) -> Message {
        self.send(xff, &format!("X-Neutron-Router-ID: {ROUTER}\r\n"))
    }

    fn server(&self) -> &HttpServer {
        self.w.server(self.server)
    }
}

#[test]
fn signs_and_forwards_the_resolved_instance() {
    let mut s = agent();
    // A forged identity from further down the chain must not survive.
    let resp = s.send(
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
    let resp = s.router("10.0.0.99");
    assert_eq!(resp.status(), 404, "{}", resp.raw);
    assert!(
        (resp.text()).contains(&format!("Instance was not found on router {ROUTER}.")),
        "{}",
        resp.raw
    );
    assert_eq!(s.server().accepted, 0);
    // The connection stays usable.
    s.send("10.0.0.5", &format!("X-Neutron-Network-ID: {NET}\r\n"))
        .assert_is(200, "hello");
    assert_eq!(s.server().requests.len(), 1);
    assert_eq!(s.w.client(s.ns).connections, 1);
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
        let resp = s.send("10.0.0.5", &scope);
        assert_eq!(resp.status(), 400, "{name}: {}", resp.raw);
        assert!(resp.text().contains(text), "{name}: {}", resp.raw);
        assert_eq!(s.server().accepted, 0, "{name}");
    }
}

#[test]
fn metadata_server_down_is_503() {
    let mut s = agent();
    s.w.peer_on(metadata_addr(), Refusing(ConnectError::Refused));
    let resp = s.router("10.0.0.5");
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
    s.router("10.0.0.5")
        .assert_is(403, "Invalid proxy request signature.\n");
}

#[test]
fn reload_swaps_the_static_map() {
    let mut s = agent();
    let map = roles::static_map("10.0.0.77", "other-instance");
    s.w.with_endpoint(s.agent, |ep, now| ep.reload(now, Reload::StaticMap(map)));
    s.router("10.0.0.77").assert_is(200, "hello");
    assert_eq!(s.server().last().header("X-Instance-ID"), "other-instance");
    let gone = s.router("10.0.0.5");
    assert_eq!(gone.status(), 404, "the old port is gone: {}", gone.raw);
}
