//! The agent with the Neutron backend, against a scripted Neutron, in simulated time: the
//! cache, single-flight and the retry past the cache.

use std::time::Duration;

use mdproxy_core::config::{Backend, Role, Timeouts};
use mdproxy_core::socket::SockId;

mod sim;
use sim::{neutron_agent, Sim, OK};

const ROUTER: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";
const NET: &str = "9c2b1a4e-0000-4000-8000-000000000001";

fn agent() -> Sim {
    Sim::with_role(Role::Agent(neutron_agent()), Timeouts::default())
}

fn request(ip: &str) -> Vec<u8> {
    format!("GET /latest/meta-data/ HTTP/1.1\r\nX-Forwarded-For: {ip}\r\nX-Neutron-Router-ID: {ROUTER}\r\n\r\n")
        .into_bytes()
}

fn json_response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn networks() -> Vec<u8> {
    json_response(
        "200 OK",
        &format!(r#"{{"ports": [{{"network_id": "{NET}"}}]}}"#),
    )
}

fn port(device: &str) -> Vec<u8> {
    json_response(
        "200 OK",
        &format!(r#"{{"ports": [{{"device_id": "{device}", "project_id": "p1"}}]}}"#),
    )
}

/// Connects every pending socket and sorts them by what went out first: Neutron queries
/// (`GET /v2.0/…`) or metadata requests.
fn open_all(s: &mut Sim, seen: &mut usize) -> (Vec<SockId>, Vec<SockId>) {
    let (mut neutron, mut metadata) = (Vec::new(), Vec::new());
    while *seen < s.connects.len() {
        let sock = s.connects[*seen];
        *seen += 1;
        s.input(sock, mdproxy_core::socket::Input::Connected);
        let out = s.written.get(&sock).cloned().unwrap_or_default();
        if out.starts_with(b"GET /v2.0/") {
            neutron.push(sock);
        } else {
            metadata.push(sock);
        }
    }
    (neutron, metadata)
}

#[test]
fn a_burst_of_first_requests_makes_one_port_query() {
    let mut s = agent();
    let clients: Vec<SockId> = (0..1000)
        .map(|_| {
            let c = s.ep.accept(s.now, None);
            s.drain();
            c
        })
        .collect();
    for &c in &clients {
        s.send(c, &request("10.0.0.5"));
    }
    let mut seen = 0;
    let (q1, m) = open_all(&mut s, &mut seen);
    assert_eq!(
        (q1.len(), m.len()),
        (1, 0),
        "one router-networks query, nothing forwarded yet"
    );
    let first = s.take(q1[0]);
    assert!(first.contains(&format!("device_id={ROUTER}")), "{first}");
    s.send(q1[0], &networks());
    let (q2, m) = open_all(&mut s, &mut seen);
    assert_eq!(
        (q2.len(), m.len()),
        (1, 0),
        "one port query for 1000 waiters"
    );
    let second = s.take(q2[0]);
    assert!(
        second.contains("fixed_ips=ip_address%3D10.0.0.5"),
        "{second}"
    );
    s.send(q2[0], &port("inst-1"));
    let (q3, metadata) = open_all(&mut s, &mut seen);
    assert!(q3.is_empty());
    assert_eq!(metadata.len(), 1000, "every waiter is forwarded");
    for m in metadata {
        assert!(s.take(m).contains("X-Instance-ID: inst-1\r\n"));
    }
}

#[test]
fn cached_instances_are_served_without_neutron_and_expire() {
    let mut s = agent();
    let c = s.ep.accept(s.now, None);
    s.drain();
    let mut seen = 0;
    s.send(c, &request("10.0.0.5"));
    let (q, _) = open_all(&mut s, &mut seen);
    s.send(q[0], &networks());
    let (q, _) = open_all(&mut s, &mut seen);
    s.send(q[0], &port("inst-1"));
    let (_, m) = open_all(&mut s, &mut seen);
    s.send(m[0], OK);
    assert!(s.take(c).ends_with("hello"));
    // Within the TTL: no Neutron query, the pooled metadata connection is reused.
    s.advance(Duration::from_secs(4));
    s.send(c, &request("10.0.0.5"));
    let (q, fresh) = open_all(&mut s, &mut seen);
    assert!(q.is_empty() && fresh.is_empty());
    assert!(s.take(m[0]).contains("X-Instance-ID: inst-1"));
    s.send(m[0], OK);
    s.take(c);
    // Past the TTL: asked again (router networks expired too).
    s.advance(Duration::from_secs(2));
    s.send(c, &request("10.0.0.5"));
    let (q, _) = open_all(&mut s, &mut seen);
    assert_eq!(q.len(), 1, "a new query after expiry");
}

#[test]
fn neutron_failure_is_503_but_cached_instances_keep_working() {
    let mut s = agent();
    let c = s.ep.accept(s.now, None);
    s.drain();
    let mut seen = 0;
    s.send(c, &request("10.0.0.5"));
    let (q, _) = open_all(&mut s, &mut seen);
    s.send(q[0], &networks());
    let (q, _) = open_all(&mut s, &mut seen);
    s.send(q[0], &port("inst-1"));
    let (_, m) = open_all(&mut s, &mut seen);
    s.send(m[0], OK);
    s.take(c);
    // Another instance: Neutron fails.
    s.send(c, &request("10.0.0.6"));
    let (q, _) = open_all(&mut s, &mut seen);
    s.send(q[0], &json_response("500 Internal Server Error", "{}"));
    let resp = s.take(c);
    assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
    // The cached one is still served.
    s.send(c, &request("10.0.0.5"));
    assert!(s.take(m[0]).contains("X-Instance-ID: inst-1"));
}

#[test]
fn metadata_404_for_a_cached_instance_looks_it_up_again_once() {
    let mut s = agent();
    let c = s.ep.accept(s.now, None);
    s.drain();
    let mut seen = 0;
    s.send(c, &request("10.0.0.5"));
    let (q, _) = open_all(&mut s, &mut seen);
    s.send(q[0], &networks());
    let (q, _) = open_all(&mut s, &mut seen);
    s.send(q[0], &port("old-instance"));
    let (_, m) = open_all(&mut s, &mut seen);
    s.send(m[0], OK);
    s.take(c);
    // The IP now belongs to a new instance; the cache still says the old one.
    s.send(c, &request("10.0.0.5"));
    assert!(s.take(m[0]).contains("X-Instance-ID: old-instance"));
    s.send(m[0], b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    assert!(s.take(c).is_empty(), "the 404 is not passed on yet");
    let (q, _) = open_all(&mut s, &mut seen);
    assert_eq!(
        q.len(),
        1,
        "one port query past the cache (router networks still cached)"
    );
    s.send(q[0], &port("new-instance"));
    let (_, m2) = open_all(&mut s, &mut seen);
    assert!(s.take(m2[0]).contains("X-Instance-ID: new-instance"));
    s.send(m2[0], OK);
    assert!(s.take(c).ends_with("hello"));
}

/// Security issue 14, item 4: the Neutron backend follows the one rule of
/// `lookup::port_search`. A global address with an EUI-64 identifier is searched by IP only;
/// a link-local one by IP first, and by the MAC it embeds only when no port has the address.
#[test]
fn only_link_local_clients_are_searched_by_mac() {
    let mut s = agent();
    let c = s.ep.accept(s.now, None);
    s.drain();
    let mut seen = 0;
    s.send(c, &request("2001:db8::f816:3eff:fe00:5"));
    let (q, _) = open_all(&mut s, &mut seen);
    s.send(q[0], &networks());
    let (q, _) = open_all(&mut s, &mut seen);
    let query = s.take(q[0]);
    assert!(query.contains("fixed_ips=ip_address"), "{query}");
    assert!(!query.contains("mac_address"), "{query}");
    s.send(q[0], &json_response("200 OK", r#"{"ports": []}"#));
    let (q, m) = open_all(&mut s, &mut seen);
    assert!(q.is_empty() && m.is_empty(), "no search by MAC: {q:?}");
    let resp = s.take(c);
    assert!(resp.starts_with("HTTP/1.1 404 "), "{resp}");

    // Link-local, no port with the address: then by MAC (router networks are cached now).
    s.send(c, &request("fe80::f816:3eff:fe00:5"));
    let (q, _) = open_all(&mut s, &mut seen);
    let query = s.take(q[0]);
    assert!(query.contains("fixed_ips=ip_address"), "{query}");
    s.send(q[0], &json_response("200 OK", r#"{"ports": []}"#));
    let (q, _) = open_all(&mut s, &mut seen);
    let query = s.take(q[0]);
    assert!(
        query.contains("mac_address=fa%3A16%3A3e%3A00%3A00%3A05")
            || query.contains("mac_address=fa:16:3e:00:00:05"),
        "{query}"
    );
    s.send(q[0], &port("by-mac"));
    let (_, m) = open_all(&mut s, &mut seen);
    assert!(s.take(m[0]).contains("X-Instance-ID: by-mac\r\n"));
    s.send(m[0], OK);
    assert!(s.take(c).ends_with("hello"));

    // Link-local, a port has the address itself: that port, no MAC query.
    s.send(c, &request("fe80::f816:3eff:fe00:6"));
    let (q, _) = open_all(&mut s, &mut seen);
    s.send(q[0], &port("by-address"));
    let (q, _) = open_all(&mut s, &mut seen);
    assert!(q.is_empty(), "no MAC query once the address matched");
    assert!(s.take(m[0]).contains("X-Instance-ID: by-address\r\n"));
}

/// At most `max_in_flight` Neutron queries run at once; more distinct lookups wait in a
/// bounded queue (16 per slot), the excess is answered 503 at once, and a lookup that waited
/// the backend timeout for a slot is answered 503 too.
#[test]
fn a_flood_of_distinct_ips_is_bounded_in_flight_and_in_queue() {
    let mut cfg = neutron_agent();
    if let Backend::Neutron(n) = &mut cfg.backend {
        n.max_in_flight = 2;
    }
    let mut s = Sim::with_role(Role::Agent(cfg), Timeouts::default());
    let net = |ip: &str| {
        format!("GET / HTTP/1.1\r\nX-Forwarded-For: {ip}\r\nX-Neutron-Network-ID: {NET}\r\n\r\n")
            .into_bytes()
    };
    let queued = 2 * 16;
    let clients: Vec<SockId> = (0..2 + queued + 1)
        .map(|i| {
            let c = s.ep.accept(s.now, None);
            s.drain();
            s.send(c, &net(&format!("10.1.{}.{}", i / 250, i % 250 + 1)));
            c
        })
        .collect();
    let mut seen = 0;
    let (q, _) = open_all(&mut s, &mut seen);
    assert_eq!(q.len(), 2, "two queries in flight");
    let last = s.take(*clients.last().unwrap());
    assert!(last.starts_with("HTTP/1.1 503 "), "past the queue: {last}");
    for &c in &clients[..clients.len() - 1] {
        assert_eq!(s.take(c), "", "the others wait");
    }
    // One answer frees a slot: the oldest waiting lookup starts.
    s.send(q[0], &port("inst-0"));
    let (q2, m) = open_all(&mut s, &mut seen);
    assert_eq!((q2.len(), m.len()), (1, 1));
    assert!(s.take(q2[0]).contains("10.1.0.3"), "in arrival order");
    // The rest time out waiting (the backend timeout), with 503, not silence.
    s.advance(Duration::from_secs(11));
    let waited = s.take(clients[5]);
    assert!(waited.starts_with("HTTP/1.1 503 "), "{waited}");
}
