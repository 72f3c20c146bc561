//! The server endpoint driven by a scripted agent: identity, the trees, password storage.

use mdproxy_core::config::{Reload, Role, Timeouts};
use mdproxy_core::sign::Signer;
use mdproxy_core::socket::Event;
use mdproxy_core::testing::sim::roles::{self, metadata_addr, INSTANCE, PROJECT, SECRET, TODAY};
use mdproxy_core::testing::sim::{Message, NodeId, World};

/// The server of the sample instance and an agent's connection to it.
fn server() -> (World, NodeId, NodeId) {
    let mut w = World::new();
    let cfg = roles::endpoint(Role::Server(roles::server()));
    let server = w.endpoint_on(metadata_addr(), cfg);
    w.with_endpoint(server, |ep, now| {
        ep.reload(
            now,
            Reload::Instances(vec![roles::sample_instance()], TODAY),
        )
    });
    let agent = w.add_client("127.0.0.1", metadata_addr());
    (w, server, agent)
}

fn signed(path: &str, method: &str, sig: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\nX-Instance-ID: {INSTANCE}\r\nX-Tenant-ID: {PROJECT}\r\nX-Instance-ID-Signature: {sig}\r\n{extra}\r\n"
    )
}

fn sig() -> String {
    Signer::new(SECRET).sign(INSTANCE).to_string()
}

fn get(w: &mut World, agent: NodeId, path: &str) -> Message {
    w.exchange(agent, signed(path, "GET", &sig(), ""))
}

#[test]
fn serves_the_instance_id_and_keeps_the_connection() {
    let (mut w, server, agent) = server();
    get(&mut w, agent, "/latest/meta-data/instance-id").assert_is(200, "i-0000002a");
    let resp = get(&mut w, agent, "/openstack/latest/meta_data.json");
    assert_eq!(
        resp.header("Content-Type"),
        "application/json",
        "{}",
        resp.raw
    );
    let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(v["uuid"], INSTANCE);
    assert_eq!(w.client(agent).connections, 1);
    assert!(
        w.links_from(server).is_empty(),
        "the server never connects anywhere"
    );
}

#[test]
fn wrong_signature_is_403_with_novas_text() {
    let (mut w, _, agent) = server();
    let resp = w.exchange(
        agent,
        signed("/latest/meta-data/", "GET", &"0".repeat(64), ""),
    );
    assert_eq!(resp.status(), 403, "{}", resp.raw);
    assert!(
        resp.text().contains("Invalid proxy request signature."),
        "{}",
        resp.raw
    );
}

#[test]
fn head_answers_like_get_without_a_body() {
    let (mut w, _, agent) = server();
    let resp = w.exchange(
        agent,
        signed("/latest/meta-data/instance-id", "HEAD", &sig(), ""),
    );
    assert_eq!(resp.status(), 200, "{}", resp.raw);
    assert_eq!(resp.header("Content-Length"), "10");
    assert!(resp.raw.ends_with("\r\n\r\n"), "no body: {}", resp.raw);
}

/// The head of a 6-byte password POST.
fn password_post() -> String {
    let length = "Content-Length: 6\r\n";
    signed("/openstack/latest/password", "POST", &sig(), length)
}

#[test]
fn password_post_is_stored_through_the_runtime() {
    let (mut w, server, agent) = server();
    let resp = w.exchange(agent, password_post() + "s3cret");
    assert_eq!(resp.status(), 200, "{}", resp.raw);
    let [Event::Store(stored)] = w.events(server) else {
        panic!("one store request: {:?}", w.events(server));
    };
    assert_eq!(
        (stored.instance_uuid.as_str(), stored.password.as_str()),
        (INSTANCE, "s3cret")
    );
    let served = get(&mut w, agent, "/openstack/latest/password");
    served.assert_is(200, "s3cret");
}

#[test]
fn a_slow_body_gets_408() {
    let (mut w, _, agent) = server();
    let resp = w.exchange(agent, password_post());
    assert_eq!(resp.status(), 408, "{}", resp.raw);
    assert_eq!(w.elapsed(), Timeouts::default().head, "at the head timeout");
}
