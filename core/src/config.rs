//! Everything an endpoint is built from: the role and its settings, limits and timeouts. Plain
//! values, made by the binary from flags and files and checked there (`bins/src/cli/range.rs`).

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{AgentImds, StaticMap};
use crate::http::Limits;
use crate::listener::ListenerId;
use crate::lookup::{NeutronConfig, OvnConfig};
use crate::metadata::{Date, ImdsV2, InstanceData, ServerConfig, Tokens};
use crate::metrics::Metrics;
use crate::scope::Scope;
use crate::sign::Signer;
use crate::socket::Target;
use crate::tls::EndpointTls;
use crate::upstream::{CacheLimits, ServerSpec};

/// Timeouts of one endpoint (defaults from DESIGN.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A client must send a complete request head within this (408 otherwise).
    pub head: Duration,
    /// An idle keep-alive client connection is closed after this.
    pub idle: Duration,
    /// Connecting upstream may take this long (504 otherwise).
    pub connect: Duration,
    /// The upstream must answer (and keep sending) within this (504 otherwise).
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            head: Duration::from_secs(30),
            idle: Duration::from_secs(30),
            connect: Duration::from_secs(30),
            response: Duration::from_secs(60),
        }
    }
}

/// What this endpoint is, with the settings only that role has.
// One value per endpoint, built once at start: the size difference between variants costs
// nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Role {
    /// The namespace proxy: strips identity headers, stamps the peer and scope, relays upstream.
    NsProxy(NsProxyConfig),
    /// The metadata agent: resolves the instance, signs its ID, relays to the metadata server.
    Agent(AgentConfig),
    /// The node: the ns-proxy's stripping and the agent's lookup and signing in one hop, for
    /// connections of scoped listeners (`crate::listener`), which are added at run time.
    Node(AgentConfig),
    /// The metadata server: checks the agent's signature and serves the metadata trees.
    Server(ServerConfig),
}

/// Settings of the metadata agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The metadata servers, in the configured order (at least one; see [`crate::upstream`]).
    pub metadata: Vec<ServerSpec>,
    /// How requests outlive a failing metadata server.
    pub resilience: Resilience,
    /// Signs instance IDs with the secret shared with the metadata server.
    pub signer: Signer,
    /// Where instances are looked up.
    pub backend: Backend,
    /// Lookup cache capacity (entries).
    pub cache_capacity: NonZeroUsize,
    /// How long a found instance is cached.
    pub cache_ttl: Duration,
    /// How long "no such instance" is cached.
    pub negative_ttl: Duration,
    /// IMDSv2 tokens at the agent (see [`crate::agent::imds`]).
    pub imds: AgentImds,
}

/// How the agent keeps serving while metadata servers fail (issue 17). All off by default
/// but the retry on another server, which needs no setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resilience {
    /// Probe each server (`GET /`) this often; `None`: passive health only.
    pub probe_interval: Option<Duration>,
    /// Connect, retries and the answer's head must fit in this (504 past it).
    pub request_deadline: Option<Duration>,
    /// Keep the metadata server's 200 answers to GET (see [`crate::upstream::ResponseCache`]).
    pub response_cache: Option<CacheLimits>,
}

/// The agent's lookup backend.
#[allow(clippy::large_enum_variant)] // one per agent, built once
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Backend {
    /// A map from a file (see [`StaticMap`]); answers at once, so it bypasses the cache.
    Static(StaticMap),
    /// Neutron's API (Keystone-authenticated), behind the cache.
    Neutron(NeutronConfig),
    /// A replica of the OVN Southbound database, kept by its monitor; answers at once, so
    /// it bypasses the cache.
    Ovn(OvnConfig),
}

/// New data for a running endpoint (the runtime reads files; the core only takes values).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Reload {
    /// Replace the server's instances (and today's date, which decides the listed versions).
    Instances(Vec<InstanceData>, Date),
    /// The agent's configuration read again (SIGHUP), whatever of it applies without a
    /// restart.
    Agent(Box<AgentReload>),
    /// The server's configuration read again (SIGHUP).
    Server(Box<ServerReload>),
}

/// What of the server's configuration a running endpoint takes in place (the rest, such as
/// its listeners, TLS, state directory and process settings, takes a restart). Each takes
/// effect from the next request; the limits and timeouts from the next connection.
#[derive(Clone, Debug)]
pub struct ServerReload {
    /// The shared secret's signer (`None` with `--direct`).
    pub signer: Option<Signer>,
    /// How long the previous secret still verifies after this reload changed it.
    pub secret_grace: Duration,
    /// IMDSv2 mode.
    pub imdsv2: ImdsV2,
    /// IMDSv2 token keys.
    pub tokens: Tokens,
    /// The instances, and today's date (as [`Reload::Instances`]).
    pub instances: Vec<InstanceData>,
    /// See [`Reload::Instances`].
    pub today: Date,
    /// What clients may send.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
}

/// What of the agent's configuration a running endpoint takes in place (the rest, such as
/// its listeners, workers and lookup backend, takes a restart). Each takes effect from the
/// next request; the limits and timeouts from the next connection, the connection limits
/// from the next accept.
#[derive(Clone, Debug)]
pub struct AgentReload {
    /// The shared secret's signer.
    pub signer: Signer,
    /// The IMDSv2 modes and token keys.
    pub imds: AgentImds,
    /// The static map, for a static backend.
    pub static_map: Option<StaticMap>,
    /// The lookup cache's lifetimes.
    pub cache_ttl: Duration,
    /// See [`AgentConfig::negative_ttl`].
    pub negative_ttl: Duration,
    /// What clients may send.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Connection limits: a lower one refuses new connections only, never closes open ones.
    pub conns: ConnLimits,
    /// The metadata servers, their probe interval and the request deadline, when they
    /// changed (`None`: as they are). Requests in flight finish where they are; a server
    /// kept keeps its health and pool (see the endpoint's server set). The response cache's
    /// settings are not taken (a restart changes them).
    pub servers: Option<(Vec<ServerSpec>, Resilience)>,
}

/// Settings of the namespace proxy.
#[derive(Clone, Debug)]
pub struct NsProxyConfig {
    /// The router or network this proxy serves (becomes `X-Neutron-Router-ID`/`-Network-ID`).
    pub scope: Scope,
    /// The metadata agent's socket.
    pub upstream: Target,
    /// Per-client-IP request rate limit (Neutron's base/burst windows); `None` = off.
    pub rate_limit: Option<RateLimit>,
    /// IP TTL / hop limit of the connection once it asked for an IMDSv2 token (1 to 64; AWS:
    /// 1), see [`crate::socket::Action::SetHopLimit`].
    pub token_hop_limit: u8,
}

/// Neutron's `[metadata_rate_limiting]`: a client may make at most `base_limit` requests per
/// `base_window` and `burst_limit` per `burst_window`; beyond either it gets 429.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per base window.
    pub base_limit: u32,
    /// Length of the base window.
    pub base_window: Duration,
    /// Requests allowed per burst window.
    pub burst_limit: u32,
    /// Length of the burst window.
    pub burst_window: Duration,
}

/// Connection limits of every role: past either, a new connection is answered 503 and closed.
/// Per IP only where a peer has one (the ns-proxy's and the server's TCP clients; the agent's
/// peers are ns-proxies on a Unix socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Client connections open at once.
    pub max_conns: usize,
    /// Client connections open at once from one IP.
    pub max_conns_per_ip: usize,
}

impl Default for ConnLimits {
    /// DESIGN.md: 4096 per agent and per server (an ns-proxy's are 1024, and 64 per client IP:
    /// the binary sets them).
    fn default() -> Self {
        ConnLimits {
            max_conns: 4096,
            max_conns_per_ip: 4096,
        }
    }
}

/// Everything an endpoint needs to start.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// The role and its settings.
    pub role: Role,
    /// Limits on what clients send.
    pub limits: Limits,
    /// Connection limits (see [`ConnLimits`]).
    pub conns: ConnLimits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// TLS for accepted and upstream connections (see [`crate::tls`]); none by default.
    pub tls: EndpointTls,
    /// The process's counters, which this endpoint adds to (see [`crate::metrics`]); `None`
    /// counts nothing.
    pub metrics: Option<Arc<Metrics>>,
    /// The listener id the runtime tags the admin listener's sockets with (`--admin-listen`):
    /// its connections are answered here — `/metrics`, `/live`, `/ready` from
    /// [`EndpointConfig::metrics`], `/explain` from the role's own state — never forwarded,
    /// never counted against the role's limits nor in its metrics. `None`: no admin listener.
    pub admin: Option<ListenerId>,
}
