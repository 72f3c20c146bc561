//! The agent with the Neutron backend, against a scripted Neutron, in simulated time: the
//! cache, single-flight and the retry past the cache.

use std::time::Duration;

use mdproxy_core::config::{Backend, Role};
use mdproxy_core::lookup::{HttpTarget, NeutronConfig};
use mdproxy_core::socket::Target;
use mdproxy_core::testing::sim::roles::{self, agent_socket, metadata_addr, NET, ROUTER};
use mdproxy_core::testing::sim::{Answer, HttpServer, Message, NodeId, World};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

/// ns-proxy connections (clients on the agent's socket) → the agent → the metadata server
/// (answering [`OK`]), the agent asking a scripted Neutron with no Keystone.
struct Sim {
    w: World,
    neutron: NodeId,
    metadata: NodeId,
}

fn sim_with(max_in_flight: usize, neutron: impl FnMut(usize, &Message) -> Answer + 'static) -> Sim {
    let url = HttpTarget::parse_ip_url("http://127.0.0.1:9696").expect("url");
    let mut n = NeutronConfig::new(Some(url), None);
    n.max_in_flight = max_in_flight;
    let cfg = roles::agent(Backend::Neutron(n));
    let mut w = World::new();
    w.endpoint_on(agent_socket(), roles::endpoint(Role::Agent(cfg)));
    let neutron = w.peer_on(
        Target::Tcp(([127, 0, 0, 1], 9696).into()),
        HttpServer::new(neutron),
    );
    let metadata = w.peer_on(metadata_addr(), HttpServer::answering(OK));
    Sim {
        w,
        neutron,
        metadata,
    }
}

/// A Neutron whose port for any address is `device`.
fn sim(device: &'static str) -> Sim {
    sim_with(64, move |_, q| answer(q, device))
}

impl Sim {
    fn ns(&mut self) -> NodeId {
        self.w.add_client("127.0.0.1", agent_socket())
    }

    fn get(&mut self, ns: NodeId, ip: &str) -> Message {
        self.w.exchange(ns, request(ip))
    }

    fn neutron(&self) -> &[Message] {
        &self.w.server(self.neutron).requests
    }

    fn metadata(&self) -> &HttpServer {
        self.w.server(self.metadata)
    }

    /// The identities the metadata server was asked for, in order.
    fn instances_asked(&self) -> Vec<String> {
        let asked = self.metadata().requests.iter();
        asked.map(|r| r.header("X-Instance-ID")).collect()
    }

    /// The identity the metadata server was last asked for.
    fn last_instance(&self) -> String {
        self.metadata().last().header("X-Instance-ID")
    }
}

fn request(ip: &str) -> String {
    format!("GET /latest/meta-data/ HTTP/1.1\r\nX-Forwarded-For: {ip}\r\nX-Neutron-Router-ID: {ROUTER}\r\n\r\n")
}

fn json_response(status: &str, body: &str) -> Answer {
    Answer::Respond(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn port(device: &str) -> Answer {
    json_response(
        "200 OK",
        &format!(r#"{{"ports": [{{"device_id": "{device}", "project_id": "p1"}}]}}"#),
    )
}

fn no_port() -> Answer {
    json_response("200 OK", r#"{"ports": []}"#)
}

fn is_networks_query(q: &Message) -> bool {
    q.raw.contains(&format!("device_id={ROUTER}"))
}

/// The router's networks, or the port of `device`.
fn answer(q: &Message, device: &str) -> Answer {
    if is_networks_query(q) {
        let body = format!(r#"{{"ports": [{{"network_id": "{NET}"}}]}}"#);
        json_response("200 OK", &body)
    } else {
        port(device)
    }
}

#[test]
fn a_burst_of_first_requests_makes_one_port_query() {
    let mut s = sim_with(64, |_, q| match answer(q, "inst-1") {
        Answer::Respond(r) => Answer::Later(Duration::from_secs(1), r),
        other => other,
    });
    let clients: Vec<NodeId> = (0..1000).map(|_| s.ns()).collect();
    for &c in &clients {
        s.w.client_mut(c).send(request("10.0.0.5"));
    }
    s.w.await_requests(s.neutron, 1);
    s.w.settle();
    assert_eq!(s.neutron().len(), 1, "one router-networks query");
    assert!(is_networks_query(&s.neutron()[0]), "{}", s.neutron()[0].raw);
    s.w.await_requests(s.neutron, 2);
    s.w.settle();
    let second = &s.neutron()[1].raw;
    assert!(
        second.contains("fixed_ips=ip_address%3D10.0.0.5"),
        "{second}"
    );
    assert_eq!(s.metadata().requests.len(), 0, "nothing forwarded yet");
    s.w.await_requests(s.metadata, 1000);
    assert_eq!(s.neutron().len(), 2, "one port query for 1000 waiters");
    assert!(
        s.instances_asked().iter().all(|id| id == "inst-1"),
        "every waiter is forwarded as inst-1"
    );
}

#[test]
fn cached_instances_are_served_without_neutron_and_expire() {
    let mut s = sim("inst-1");
    let ns = s.ns();
    s.get(ns, "10.0.0.5").assert_is(200, "hello");
    assert_eq!(s.neutron().len(), 2);
    // Within the TTL: no Neutron query, the pooled metadata connection is reused.
    s.w.advance(Duration::from_secs(4));
    s.get(ns, "10.0.0.5").assert_is(200, "hello");
    assert_eq!(s.neutron().len(), 2);
    assert_eq!(s.metadata().accepted, 1);
    assert_eq!(s.last_instance(), "inst-1");
    // Past the TTL: asked again (router networks expired too).
    s.w.advance(Duration::from_secs(2));
    s.get(ns, "10.0.0.5");
    assert_eq!(s.neutron().len(), 4, "new queries after expiry");
    assert!(is_networks_query(&s.neutron()[2]));
}

#[test]
fn neutron_failure_is_503_but_cached_instances_keep_working() {
    let mut s = sim_with(64, |_, q| {
        if q.raw.contains("10.0.0.6") {
            json_response("500 Internal Server Error", "{}")
        } else {
            answer(q, "inst-1")
        }
    });
    let ns = s.ns();
    s.get(ns, "10.0.0.5").assert_is(200, "hello");
    // Another instance: Neutron fails.
    let resp = s.get(ns, "10.0.0.6");
    assert_eq!(resp.status(), 503, "{}", resp.raw);
    // The cached one is still served.
    s.get(ns, "10.0.0.5").assert_is(200, "hello");
    assert_eq!(s.metadata().requests.len(), 2);
    assert_eq!(s.last_instance(), "inst-1");
}

#[test]
fn metadata_404_for_a_cached_instance_looks_it_up_again_once() {
    let mut s = sim("old-instance");
    let ns = s.ns();
    s.get(ns, "10.0.0.5").assert_is(200, "hello");
    // The IP now belongs to a new instance; the cache still says the old one, and the metadata
    // server no longer knows it.
    s.w.peer_mut::<HttpServer>(s.neutron)
        .set_script(|_, q| answer(q, "new-instance"));
    s.w.peer_mut::<HttpServer>(s.metadata).set_script(|_, r| {
        if r.header("X-Instance-ID") == "old-instance" {
            Answer::Respond(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec())
        } else {
            Answer::Respond(OK.to_vec())
        }
    });
    s.get(ns, "10.0.0.5").assert_is(200, "hello");
    assert_eq!(
        s.instances_asked(),
        ["old-instance", "old-instance", "new-instance"],
        "the 404 is not passed on"
    );
    assert_eq!(
        s.neutron().len(),
        3,
        "one port query past the cache (router networks still cached)"
    );
}

/// Security issue 14, item 4: the Neutron backend follows the one rule of
/// `lookup::port_search`. A global address with an EUI-64 identifier is searched by IP only;
/// a link-local one by IP first, and by the MAC it embeds only when no port has the address.
#[test]
fn only_link_local_clients_are_searched_by_mac() {
    let mut s = sim_with(64, |_, q| {
        if q.raw.contains("mac_address") {
            port("by-mac")
        } else if q.raw.contains("fe00%3A6") || q.raw.contains("fe00:6") {
            answer(q, "by-address")
        } else if is_networks_query(q) {
            answer(q, "")
        } else {
            no_port()
        }
    });
    let ns = s.ns();
    let resp = s.get(ns, "2001:db8::f816:3eff:fe00:5");
    assert_eq!(resp.status(), 404, "{}", resp.raw);
    assert_eq!(s.neutron().len(), 2, "no search by MAC");
    let query = &s.neutron()[1].raw;
    assert!(
        query.contains("fixed_ips=ip_address") && !query.contains("mac_address"),
        "{query}"
    );

    // Link-local, no port with the address: then by MAC (router networks are cached now).
    s.get(ns, "fe80::f816:3eff:fe00:5").assert_is(200, "hello");
    let (by_ip, by_mac) = (&s.neutron()[2].raw, &s.neutron()[3].raw);
    assert!(by_ip.contains("fixed_ips=ip_address"), "{by_ip}");
    assert!(
        by_mac.contains("mac_address=fa%3A16%3A3e%3A00%3A00%3A05")
            || by_mac.contains("mac_address=fa:16:3e:00:00:05"),
        "{by_mac}"
    );
    assert_eq!(s.last_instance(), "by-mac");

    // Link-local, a port has the address itself: that port, no MAC query.
    s.get(ns, "fe80::f816:3eff:fe00:6").assert_is(200, "hello");
    assert_eq!(
        s.neutron().len(),
        5,
        "no MAC query once the address matched"
    );
    assert_eq!(s.last_instance(), "by-address");
}

/// At most `max_in_flight` Neutron queries run at once; more distinct lookups wait in a
/// bounded queue (16 per slot), the excess is answered 503 at once, and a lookup that waited
/// the backend timeout for a slot is answered 503 too.
#[test]
fn a_flood_of_distinct_ips_is_bounded_in_flight_and_in_queue() {
    // The first query is answered after a second; the others never.
    let mut s = sim_with(2, |n, _| {
        if n == 0 {
            match port("inst-0") {
                Answer::Respond(r) => Answer::Later(Duration::from_secs(1), r),
                other => other,
            }
        } else {
            Answer::Silence
        }
    });
    let queued = 2 * 16;
    let clients: Vec<NodeId> = (0..2 + queued + 1)
        .map(|i| {
            let c = s.ns();
            let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
            let req = format!(
                "GET / HTTP/1.1\r\nX-Forwarded-For: {ip}\r\nX-Neutron-Network-ID: {NET}\r\n\r\n"
            );
            s.w.client_mut(c).send(req);
            c
        })
        .collect();
    let last = s.w.response(clients[clients.len() - 1], 0);
    assert_eq!(last.status(), 503, "past the queue: {}", last.raw);
    assert_eq!(s.neutron().len(), 2, "two queries in flight");
    for &c in &clients[..clients.len() - 1] {
        assert!(s.w.client(c).responses.is_empty(), "the others wait");
    }
    // One answer frees a slot: the oldest waiting lookup starts.
    s.w.await_requests(s.neutron, 3);
    assert_eq!(s.w.elapsed(), Duration::from_secs(1));
    assert!(s.neutron()[2].raw.contains("10.1.0.3"), "in arrival order");
    // The rest time out waiting (the backend timeout), with 503, not silence.
    let waited = s.w.response(clients[5], 0);
    assert_eq!(waited.status(), 503, "{}", waited.raw);
    assert_eq!(
        s.w.elapsed(),
        NeutronConfig::DEFAULT_TIMEOUT,
        "at the backend timeout"
    );
}
