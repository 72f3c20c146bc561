//! The agent endpoint (static backend) driven by a scripted runtime, in simulated time.

use std::num::NonZeroUsize;
use std::time::Duration;

use mdproxy_core::agent::StaticMap;
use mdproxy_core::config::{AgentConfig, Backend, Reload, Role, Timeouts};
use mdproxy_core::sign::Signer;
use mdproxy_core::socket::{ConnectError, Input, Target};

mod sim;
use sim::{count, Sim, OK};

const ROUTER: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";
const NET: &str = "9c2b1a4e-0000-4000-8000-000000000001";
const INSTANCE: &str = "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01";
const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";
/// Python: hmac.new(b"s3cr3t", INSTANCE.encode(), hashlib.sha256).hexdigest()
const SIGNATURE: &str = "4cb436cf0ab047ac79fbd7d0e08d104931f00cd0d562ce344516ebf0aebcb949";

fn map(ip: &str, device: &str) -> StaticMap {
    StaticMap::parse(&format!(
        "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NET}\"]\n\n[[port]]\nnetwork = \"{NET}\"\nip = \"{ip}\"\ndevice_id = \"{device}\"\nproject_id = \"{PROJECT}\"\n"
    ))
    .expect("map")
}

fn agent() -> Sim {
    let cfg = AgentConfig {
        metadata: Target::Tcp("127.0.0.1:8775".parse().unwrap()),
        signer: Signer::new(b"s3cr3t"),
        backend: Backend::Static(map("10.0.0.5", INSTANCE)),
        cache_capacity: NonZeroUsize::new(100).unwrap(),
        cache_ttl: Duration::from_secs(5),
        negative_ttl: Duration::from_secs(1),
    };
    Sim::with_role(Role::Agent(cfg), Timeouts::default())
}

fn request(xff: &str, scope: &str) -> Vec<u8> {
    format!("GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Forwarded-For: {xff}\r\n{scope}\r\n").into_bytes()
}

fn accept_unix(s: &mut Sim) -> mdproxy_core::socket::SockId {
    let c = s.ep.accept(s.now, None);
    s.drain();
    c
}

#[test]
fn signs_and_forwards_the_resolved_instance() {
    let mut s = agent();
    let c = accept_unix(&mut s);
    let mut req = request("10.0.0.5", &format!("X-Neutron-Router-ID: {ROUTER}\r\n"));
    // A forged identity from further down the chain must not survive.
    req.splice(
        req.len() - 2..req.len() - 2,
        *b"X-Instance-ID: evil\r\nX-Tenant-ID: evil\r\n",
    );
    s.send(c, &req);
    let up = s.connect_ok();
    let head = s.take(up);
    assert!(
        head.contains(&format!("X-Instance-ID: {INSTANCE}\r\n")),
        "{head}"
    );
    assert!(
        head.contains(&format!("X-Tenant-ID: {PROJECT}\r\n")),
        "{head}"
    );
    assert!(
        head.contains(&format!("X-Instance-ID-Signature: {SIGNATURE}\r\n")),
        "{head}"
    );
    assert!(head.contains("X-Forwarded-For: 10.0.0.5\r\n"), "{head}");
    for h in [
        "X-Instance-ID",
        "X-Tenant-ID",
        "X-Forwarded-For",
        "X-Instance-ID-Signature",
    ] {
        assert_eq!(count(&head, h), 1, "{h}: {head}");
    }
    assert_eq!(
        count(&head, "X-Neutron-Router-ID"),
        0,
        "scope is not forwarded: {head}"
    );
    s.send(up, OK);
    assert!(s.take(c).ends_with("hello"));
}

#[test]
fn unknown_ip_is_404_with_neutrons_text() {
    let mut s = agent();
    let c = accept_unix(&mut s);
    s.send(
        c,
        &request("10.0.0.99", &format!("X-Neutron-Router-ID: {ROUTER}\r\n")),
    );
    let resp = s.take(c);
    assert!(resp.starts_with("HTTP/1.1 404 "), "{resp}");
    assert!(
        resp.contains(&format!("Instance was not found on router {ROUTER}.")),
        "{resp}"
    );
    assert!(s.connects.is_empty());
    // The connection stays usable.
    s.send(
        c,
        &request("10.0.0.5", &format!("X-Neutron-Network-ID: {NET}\r\n")),
    );
    assert_eq!(s.connects.len(), 1);
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
    ];
    for (name, scope, text) in cases {
        let mut s = agent();
        let c = accept_unix(&mut s);
        s.send(c, &request("10.0.0.5", &scope));
        let resp = s.take(c);
        assert!(resp.starts_with("HTTP/1.1 400 "), "{name}: {resp}");
        assert!(resp.contains(text), "{name}: {resp}");
        assert!(s.connects.is_empty(), "{name}");
    }
    let mut s = agent();
    let c = accept_unix(&mut s);
    s.send(
        c,
        b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\nX-Forwarded-For: 10.0.0.6\r\n\r\n",
    );
    assert!(s.take(c).contains("Multiple X-Forwarded-For"));
}

#[test]
fn metadata_server_down_is_503() {
    let mut s = agent();
    let c = accept_unix(&mut s);
    s.send(
        c,
        &request("10.0.0.5", &format!("X-Neutron-Router-ID: {ROUTER}\r\n")),
    );
    let up = *s.connects.last().unwrap();
    s.input(up, Input::ConnectFailed(ConnectError::Refused));
    let resp = s.take(c);
    assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
    assert!(resp.contains("temporarily unavailable"), "{resp}");
}

#[test]
fn forbidden_from_the_server_passes_through() {
    let mut s = agent();
    let c = accept_unix(&mut s);
    s.send(
        c,
        &request("10.0.0.5", &format!("X-Neutron-Router-ID: {ROUTER}\r\n")),
    );
    let up = s.connect_ok();
    s.send(
        up,
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 33\r\n\r\nInvalid proxy request signature.\n",
    );
    let resp = s.take(c);
    assert!(
        resp.starts_with("HTTP/1.1 403 ") && resp.ends_with("signature.\n"),
        "{resp}"
    );
}

#[test]
fn reload_swaps_the_static_map() {
    let mut s = agent();
    let c = accept_unix(&mut s);
    s.ep.reload(s.now, Reload::StaticMap(map("10.0.0.77", "other-instance")));
    s.send(
        c,
        &request("10.0.0.77", &format!("X-Neutron-Router-ID: {ROUTER}\r\n")),
    );
    let up = s.connect_ok();
    assert!(s.take(up).contains("X-Instance-ID: other-instance\r\n"));
    s.send(up, OK);
    s.take(c);
    s.send(
        c,
        &request("10.0.0.5", &format!("X-Neutron-Router-ID: {ROUTER}\r\n")),
    );
    assert!(
        s.take(c).starts_with("HTTP/1.1 404 "),
        "the old port is gone"
    );
}
