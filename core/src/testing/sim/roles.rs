//! Ready-made settings for the nodes of a simulated deployment: where each role listens, an
//! ns-proxy for a router, an agent with a static map, a metadata server serving the sample
//! instance (`tests/golden/instance.toml`), and the identities that tie them together.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::agent::StaticMap;
use crate::config::{AgentConfig, Backend, EndpointConfig, NsProxyConfig, Resilience, Role};
use crate::metadata::{parse_instance, Date, Entropy, Format, ImdsV2, InstanceData, ServerConfig};
use crate::scope::{Scope, Uuid};
use crate::sign::Signer;
use crate::socket::Target;
use crate::upstream::ServerSpec;

/// The router the ns-proxy serves.
pub const ROUTER: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";
/// The network behind [`ROUTER`] where the instance has its port.
pub const NET: &str = "9c2b1a4e-0000-4000-8000-000000000001";
/// The sample instance (`tests/golden/instance.toml`).
pub const INSTANCE: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
/// The sample instance's project.
pub const PROJECT: &str = "8a5ce0e4f2b84d8b9b1e2c3d4f5a6b7c";
/// The sample instance's address.
pub const INSTANCE_IP: &str = "10.0.0.5";
/// The secret the agent and the server share.
pub const SECRET: &[u8] = b"s3cr3t";
/// Today, for the server's list of versions.
pub const TODAY: Date = Date {
    year: 2026,
    month: 11,
    day: 25,
};

/// Where the instance's requests go (169.254.169.254:80, redirected to the ns-proxy).
pub fn ns_proxy_addr() -> Target {
    Target::Tcp(([169, 254, 169, 254], 80).into())
}

/// The agent's Unix socket.
pub fn agent_socket() -> Target {
    Target::Unix("/var/lib/neutron/metadata_proxy".into())
}

/// The metadata server (Nova's port).
pub fn metadata_addr() -> Target {
    Target::Tcp(([127, 0, 0, 1], 8775).into())
}

/// `uuid` parsed; fails the test on a typo.
pub fn uuid(s: &str) -> Uuid {
    Uuid::parse(s.as_bytes()).unwrap_or_else(|| panic!("not a UUID: {s}"))
}

/// An endpoint of `role` with the default limits and timeouts.
pub fn endpoint(role: Role) -> EndpointConfig {
    EndpointConfig {
        role,
        limits: Default::default(),
        conns: Default::default(),
        timeouts: Default::default(),
        tls: Default::default(),
        metrics: None,
        admin: None,
    }
}

/// The ns-proxy of [`ROUTER`], relaying to the agent's socket.
pub fn ns_proxy() -> NsProxyConfig {
    NsProxyConfig {
        scope: Scope::Router(uuid(ROUTER)),
        upstream: agent_socket(),
        rate_limit: None,
        token_hop_limit: 1,
    }
}

/// A map of [`ROUTER`] (with [`NET`]) and one port: `ip` belongs to instance `device` of
/// [`PROJECT`].
pub fn static_map(ip: &str, device: &str) -> StaticMap {
    let text = format!(
        "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NET}\"]\n\n[[port]]\nnetwork = \"{NET}\"\n\
         ip = \"{ip}\"\ndevice_id = \"{device}\"\nproject_id = \"{PROJECT}\"\n"
    );
    StaticMap::parse(&text).unwrap_or_else(|e| panic!("static map: {e:?}"))
}

/// An agent with `backend`, signing with [`SECRET`], relaying to [`metadata_addr`].
pub fn agent(backend: Backend) -> AgentConfig {
    AgentConfig {
        metadata: vec![ServerSpec::plain(metadata_addr(), "metadata")],
        resilience: Resilience::default(),
        signer: Signer::new(SECRET),
        backend,
        cache_capacity: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
        cache_ttl: Duration::from_secs(5),
        negative_ttl: Duration::from_secs(1),
        imds: crate::agent::AgentImds::off(),
    }
}

/// The agent of the sample instance: [`INSTANCE_IP`] behind [`ROUTER`] is [`INSTANCE`].
pub fn static_agent() -> AgentConfig {
    agent(Backend::Static(static_map(INSTANCE_IP, INSTANCE)))
}

/// Deterministic "randomness": a counter, spread over the bytes asked for.
#[derive(Debug, Default)]
pub struct Steady(AtomicU64);

impl Entropy for Steady {
    fn fill(&self, buf: &mut [u8]) {
        let mut n = self.0.fetch_add(1, Ordering::Relaxed);
        for b in buf {
            n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            *b = (n >> 56) as u8;
        }
    }
}

/// A metadata server checking [`SECRET`] signatures (IMDSv2 optional).
pub fn server() -> ServerConfig {
    ServerConfig {
        signer: Some(Signer::new(SECRET)),
        direct: false,
        imdsv2: ImdsV2::Optional,
        dhcp_domain: "novalocal".to_owned(),
        today: TODAY,
        entropy: Arc::new(Steady::default()),
        tokens: crate::metadata::Tokens::new(
            crate::metadata::TokenKeys::random(&Steady::default()),
            crate::metadata::TokenClock::new(crate::testing::epoch(), std::time::Duration::ZERO),
        ),
    }
}

/// The sample instance, [`INSTANCE`] of [`PROJECT`] at [`INSTANCE_IP`].
pub fn sample_instance() -> InstanceData {
    let text = include_str!("../../../tests/golden/instance.toml");
    parse_instance(text, Format::Toml).unwrap_or_else(|e| panic!("sample instance: {e:?}"))
}
