//! The server endpoint driven by a scripted runtime: identity, the trees, password storage.

use std::sync::Arc;

use mdproxy_core::config::{Reload, Role, Timeouts};
use mdproxy_core::metadata::{parse_instance, Date, Entropy, Format, ImdsV2, ServerConfig};
use mdproxy_core::sign::Signer;

mod sim;
use sim::Sim;

const UUID: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
const PROJECT: &str = "8a5ce0e4f2b84d8b9b1e2c3d4f5a6b7c";

struct Pattern;
impl Entropy for Pattern {
    fn fill(&self, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
    }
}

fn server() -> Sim {
    let cfg = ServerConfig {
        signer: Some(Signer::new(b"s3cr3t")),
        direct: false,
        imdsv2: ImdsV2::Optional,
        dhcp_domain: "novalocal".to_owned(),
        today: Date::new(2026, 11, 25),
        entropy: Arc::new(Pattern),
    };
    let mut s = Sim::with_role(Role::Server(cfg), Timeouts::default());
    let text = include_str!("golden/instance.toml");
    let inst = parse_instance(text, Format::Toml).expect("sample instance");
    s.ep.reload(
        s.now,
        Reload::Instances(vec![inst], Date::new(2026, 11, 25)),
    );
    s
}

fn signed(path: &str, method: &str, sig: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\nX-Instance-ID: {UUID}\r\nX-Tenant-ID: {PROJECT}\r\nX-Instance-ID-Signature: {sig}\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn sig() -> String {
    Signer::new(b"s3cr3t").sign(UUID).to_string()
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[test]
fn serves_the_instance_id_and_keeps_the_connection() {
    let mut s = server();
    let c = s.accept();
    s.send(
        c,
        &signed("/latest/meta-data/instance-id", "GET", &sig(), ""),
    );
    let resp = s.take(c);
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    assert_eq!(body(&resp), "i-0000002a");
    s.send(
        c,
        &signed("/openstack/latest/meta_data.json", "GET", &sig(), ""),
    );
    let resp = s.take(c);
    assert!(resp.contains("Content-Type: application/json"), "{resp}");
    let v: serde_json::Value = serde_json::from_str(body(&resp)).expect("json");
    assert_eq!(v["uuid"], UUID);
    assert!(s.connects.is_empty(), "the server never connects anywhere");
}

#[test]
fn wrong_signature_is_403_with_novas_text() {
    let mut s = server();
    let c = s.accept();
    s.send(c, &signed("/latest/meta-data/", "GET", &"0".repeat(64), ""));
    let resp = s.take(c);
    assert!(resp.starts_with("HTTP/1.1 403 "), "{resp}");
    assert!(resp.contains("Invalid proxy request signature."), "{resp}");
}

#[test]
fn head_answers_like_get_without_a_body() {
    let mut s = server();
    let c = s.accept();
    s.send(
        c,
        &signed("/latest/meta-data/instance-id", "HEAD", &sig(), ""),
    );
    let resp = s.take(c);
    assert!(
        resp.starts_with("HTTP/1.1 200 ") && resp.contains("Content-Length: 10\r\n"),
        "{resp}"
    );
    assert!(resp.ends_with("\r\n\r\n"), "no body: {resp}");
}

#[test]
fn password_post_is_stored_through_the_runtime() {
    let mut s = server();
    let c = s.accept();
    s.send(
        c,
        &signed(
            "/openstack/latest/password",
            "POST",
            &sig(),
            "Content-Length: 6\r\n",
        ),
    );
    s.send(c, b"s3cret");
    assert!(s.take(c).starts_with("HTTP/1.1 200 "));
    assert_eq!(s.stored.len(), 1, "one store request");
    assert_eq!(s.stored[0].instance_uuid, UUID);
    assert_eq!(s.stored[0].password, "s3cret");
    s.send(c, &signed("/openstack/latest/password", "GET", &sig(), ""));
    assert_eq!(body(&s.take(c)), "s3cret", "served from memory at once");
}

#[test]
fn a_slow_body_gets_408() {
    let mut s = server();
    let c = s.accept();
    s.send(
        c,
        &signed(
            "/openstack/latest/password",
            "POST",
            &sig(),
            "Content-Length: 6\r\n",
        ),
    );
    s.advance(sim::secs(31));
    assert!(s.take(c).starts_with("HTTP/1.1 408 "));
}
