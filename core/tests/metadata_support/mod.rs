//! Shared by the `metadata_*` tests: requests built by the real head parser, a signed client
//! for the sample instance, deterministic entropy, and a movable clock.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mdproxy_core::http::{HeadScanner, Limits, Method, RequestHead};
use mdproxy_core::metadata::{
    parse_instance, Date, Entropy, Format, ImdsV2, InstanceData, MetaRequest, MetaResponse,
    MetadataService, ServerConfig,
};
use mdproxy_core::sign::Signer;

pub const SECRET: &[u8] = b"s3cr3t";
pub const TODAY: Date = Date::new(2026, 8, 1);

/// Byte `i` of every fill is `i % 256`: `random_seed` is the same in every answer.
pub struct Pattern;
impl Entropy for Pattern {
    fn fill(&self, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
    }
}

/// A different (but reproducible) stream on every fill, as tokens need.
pub struct Counter(pub AtomicU64);
impl Entropy for Counter {
    fn fill(&self, buf: &mut [u8]) {
        let mut x = self
            .0
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            | 1;
        for b in buf {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
}

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub fn sample_text() -> String {
    std::fs::read_to_string(golden_dir().join("instance.toml")).expect("sample instance")
}

pub fn sample() -> InstanceData {
    parse_instance(&sample_text(), Format::Toml).expect("sample parses")
}

/// A second instance in another project, for binding and spoofing tests.
pub fn other() -> InstanceData {
    parse_instance(
        "uuid = \"0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01\"\nproject_id = \"other-project\"\nfixed_ips = [\"10.0.0.9\"]\n",
        Format::Toml,
    )
    .expect("other parses")
}

/// Parses a request head the way the server's connection would.
pub fn head(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHead {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    let (head, n) = HeadScanner::new()
        .parse_request(raw.as_bytes(), &Limits::default())
        .expect("valid head")
        .expect("complete head");
    assert_eq!(n, raw.len());
    head
}

pub struct Harness {
    pub svc: MetadataService,
    pub t0: Instant,
    pub now: Instant,
    pub signer: Signer,
}

/// Token keys of this test process, anchored now (Unix time does not matter here).
pub fn tokens() -> mdproxy_core::metadata::Tokens {
    use mdproxy_core::metadata::{TokenClock, TokenKeys, Tokens};
    Tokens::new(
        TokenKeys::random(&Pattern),
        TokenClock::new(epoch(), Duration::ZERO),
    )
}

/// An opaque epoch; tests move time by adding to it.
fn epoch() -> Instant {
    Instant::now()
}

impl Harness {
    /// Proxy mode, the sample and `other()` loaded, pattern entropy.
    pub fn new(imdsv2: ImdsV2) -> Harness {
        Harness::with(imdsv2, false, Arc::new(Pattern))
    }

    pub fn with(imdsv2: ImdsV2, direct: bool, entropy: Arc<dyn Entropy>) -> Harness {
        let signer = Signer::new(SECRET);
        let mut svc = MetadataService::new(ServerConfig {
            signer: (!direct).then(|| signer.clone()),
            direct,
            imdsv2,
            dhcp_domain: "novalocal".to_owned(),
            today: TODAY,
            entropy,
            tokens: tokens(),
        });
        svc.set_instances(vec![sample(), other()]);
        let t0 = epoch();
        Harness {
            svc,
            t0,
            now: t0,
            signer,
        }
    }

    pub fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
    }

    /// The identity headers the agent adds for `inst`.
    pub fn identity(&self, inst: &InstanceData) -> Vec<(String, String)> {
        vec![
            (
                "X-Forwarded-For".into(),
                inst.fixed_ips
                    .first()
                    .map_or("10.0.0.5".into(), |i| i.to_string()),
            ),
            ("X-Instance-ID".into(), inst.uuid.clone()),
            ("X-Tenant-ID".into(), inst.project_id.clone()),
            (
                "X-Instance-ID-Signature".into(),
                self.signer.sign(&inst.uuid).to_string(),
            ),
        ]
    }

    /// Sends exactly these headers (no identity added).
    pub fn raw(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        peer: Option<IpAddr>,
    ) -> MetaResponse {
        let h = head(method, target, headers);
        let req = MetaRequest {
            method: h.method,
            target: &h.target,
            headers: &h.headers,
            body,
            peer,
        };
        self.svc.respond(self.now, &req)
    }

    /// As the sample instance through the agent, plus `extra` headers.
    pub fn send_as(
        &mut self,
        inst: &InstanceData,
        method: &str,
        target: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> MetaResponse {
        let ident = self.identity(inst);
        let mut headers: Vec<(&str, &str)> = ident
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers.extend_from_slice(extra);
        let peer = Some("127.0.0.1".parse().expect("ip"));
        self.raw(method, target, &headers, body, peer)
    }

    pub fn send(
        &mut self,
        method: &str,
        target: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> MetaResponse {
        self.send_as(&sample(), method, target, extra, body)
    }

    pub fn get(&mut self, target: &str) -> MetaResponse {
        self.send("GET", target, &[], b"")
    }
}

/// The body as text (for messages and assertions).
pub fn text(r: &MetaResponse) -> &str {
    std::str::from_utf8(&r.body).expect("utf-8 body")
}

pub fn method(m: &str) -> Method {
    head(m, "/", &[]).method
}
