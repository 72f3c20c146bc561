//! Counters of one process, in Prometheus' text exposition format (version 0.0.4).
//!
//! One [`Metrics`] is shared (in an `Arc`) by every endpoint of a process: the agent's workers,
//! the demo's three roles. Endpoints update it with relaxed atomic additions only: no lock and
//! no allocation per request. An endpoint's admin listener
//! ([`crate::config::EndpointConfig::admin`]) answers `GET /metrics` with [`Metrics::render`]; nothing here does IO or reads a clock (latencies
//! are differences of the `now`s the endpoint was given).
//!
//! Every series has a `role` label (`ns-proxy`, `agent`, `server`, `node`; the node's series
//! are the agent's, its relays' and its lookup's, under its own label); a role shows up once an
//! endpoint of it was created with these metrics ([`Metrics::enable`]). Cardinality is fixed:
//! status codes outside [`STATUSES`] count as `code="other"`.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `mdproxy_requests_total` | counter | `role`, `code` | answers sent to clients |
//! | `mdproxy_request_duration_seconds` | histogram | `role` | request head to complete answer |
//! | `mdproxy_connections_total` | counter | `role` | client connections accepted |
//! | `mdproxy_open_connections` | gauge | `role` | client connections open now |
//! | `mdproxy_upstream_errors_total` | counter | `role`, `kind` | ns-proxy, agent and node |
//! | `mdproxy_cache_lookups_total` | counter | `role`, `result` | agent, neutron backend |
//! | `mdproxy_backend_requests_total` | counter | `role`, `backend` | agent, neutron backend |
//! | `mdproxy_backend_failures_total` | counter | `role` | agent lookups that failed (503) |
//! | `mdproxy_ovn_connected` | gauge | `role` | agent, ovn backend: 1 while a monitor runs |
//! | `mdproxy_ovn_replica_rows` | gauge | `role`, `table` | rows replicated |
//! | `mdproxy_ovn_monitors_total` | counter | `role`, `start` | monitors started: resumed, resynced |
//! | `mdproxy_ovn_updates_total` | counter | `role` | update messages applied |
//! | `mdproxy_ovn_stale_answers_total` | counter | `role` | answers while the SB was unreachable |
//! | `mdproxy_ovn_seconds_since_update` | gauge | `role` | since the last update applied |
//! | `mdproxy_imds_no_token_requests_total` | counter | `role`, `instance` | agent: served without an IMDSv2 token (bounded: [`no_token`]) |
//! | `mdproxy_upstream_server_up` | gauge | `role`, `server` | 1 unless an event loop marked it down |
//! | `mdproxy_upstream_server_answers_total` | counter | `role`, `server` | answers below 500 |
//! | `mdproxy_upstream_server_failures_total` | counter | `role`, `server` | failed attempts |
//! | `mdproxy_upstream_server_latency_seconds_sum` | counter | `role`, `server` | attempt to answer head |
//! | `mdproxy_upstream_retries_total` | counter | `role`, `server` | requests sent again, to this server |
//! | `mdproxy_deadline_misses_total` | counter | `role` | requests answered 504 at the deadline |
//! | `mdproxy_response_cache_total` | counter | `role`, `result` | fresh hits, stale answers, stores |

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::health::Health;
use crate::http::{Method, RequestHead};
use crate::lookup::OvnStats;
use crate::metadata::MetaResponse;

pub mod no_token;

/// The status codes counted one by one; any other is `code="other"`.
pub const STATUSES: [u16; 22] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 413, 414, 429, 431, 500, 501,
    502, 503, 504,
];

/// Upper bounds of the latency buckets (`le` labels, as written) in nanoseconds.
const BUCKETS: [(&str, u64); 14] = [
    ("0.0005", 500_000),
    ("0.001", 1_000_000),
    ("0.0025", 2_500_000),
    ("0.005", 5_000_000),
    ("0.01", 10_000_000),
    ("0.025", 25_000_000),
    ("0.05", 50_000_000),
    ("0.1", 100_000_000),
    ("0.25", 250_000_000),
    ("0.5", 500_000_000),
    ("1", 1_000_000_000),
    ("2.5", 2_500_000_000),
    ("5", 5_000_000_000),
    ("10", 10_000_000_000),
];

/// Which role a series is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricRole {
    /// The namespace proxy.
    NsProxy,
    /// The metadata agent.
    Agent,
    /// The metadata server.
    Server,
    /// `mdproxy node`: the namespace proxies and the agent in one process, counted once
    /// (a request crosses one endpoint), with the agent's lookup series.
    Node,
}

impl MetricRole {
    const ALL: [MetricRole; 4] = [
        MetricRole::NsProxy,
        MetricRole::Agent,
        MetricRole::Server,
        MetricRole::Node,
    ];

    /// The `role` label.
    pub fn label(self) -> &'static str {
        match self {
            MetricRole::NsProxy => "ns-proxy",
            MetricRole::Agent => "agent",
            MetricRole::Server => "server",
            MetricRole::Node => "node",
        }
    }

    /// Whether the role has an upstream (and so upstream errors).
    fn relays(self) -> bool {
        !matches!(self, MetricRole::Server)
    }

    /// Whether the role looks instances up (and so has the lookup's series).
    fn looks_up(self) -> bool {
        matches!(self, MetricRole::Agent | MetricRole::Node)
    }
}

/// How an upstream (the agent for the ns-proxy, the metadata server for the agent) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// Nobody listens there (503).
    Refused,
    /// Any other connect failure (503).
    Unreachable,
    /// No connection, or no (complete) answer, in time (504).
    Timeout,
    /// The answer was not HTTP we accept (502).
    Malformed,
    /// The connection broke or closed before the answer was complete (502).
    Reset,
    /// The TLS session failed: certificate, host name, alert (503).
    Tls,
}

impl UpstreamError {
    const ALL: [UpstreamError; 6] = [
        UpstreamError::Refused,
        UpstreamError::Unreachable,
        UpstreamError::Timeout,
        UpstreamError::Malformed,
        UpstreamError::Reset,
        UpstreamError::Tls,
    ];

    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamError::Refused => "refused",
            UpstreamError::Unreachable => "unreachable",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Malformed => "malformed",
            UpstreamError::Reset => "reset",
            UpstreamError::Tls => "tls",
        }
    }
}

/// What the agent's lookup cache answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheResult {
    /// A live entry for the instance.
    Hit,
    /// A live "no such instance" entry.
    Negative,
    /// Nothing cached: a backend query started.
    Miss,
    /// Nothing cached, but a query for the same key was running: the request waits for it.
    Coalesced,
}

impl CacheResult {
    const ALL: [CacheResult; 4] = [
        CacheResult::Hit,
        CacheResult::Negative,
        CacheResult::Miss,
        CacheResult::Coalesced,
    ];

    /// The `result` label.
    pub fn label(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Negative => "negative",
            CacheResult::Miss => "miss",
            CacheResult::Coalesced => "coalesced",
        }
    }
}

/// The services behind the agent's lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendService {
    /// Keystone: token requests.
    Keystone,
    /// Neutron: port (and router-network) queries.
    Neutron,
}

impl BackendService {
    const ALL: [BackendService; 2] = [BackendService::Keystone, BackendService::Neutron];

    /// The `backend` label.
    pub fn label(self) -> &'static str {
        match self {
            BackendService::Keystone => "keystone",
            BackendService::Neutron => "neutron",
        }
    }
}

/// A lookup backend's state, for readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BackendState {
    /// It answers.
    Ready,
    /// OVN: connected, the first replica not loaded yet.
    NotSynced,
    /// OVN: the Southbound is unreachable (answers come from the last replica).
    Disconnected,
    /// Keystone/Neutron: the last lookup failed.
    Failing,
}

/// The counters of one process: see the [module docs](self).
#[derive(Default)]
pub struct Metrics {
    roles: [RoleMetrics; MetricRole::ALL.len()],
    health: Health,
}

/// Never prints counters (they are what `render` is for).
impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The counters of one role.
#[derive(Default)]
pub struct RoleMetrics {
    enabled: AtomicBool,
    /// By [`STATUSES`] index; the last is "other".
    requests: [AtomicU64; STATUSES.len() + 1],
    /// Observations per bucket (not cumulative); the last is above every bound.
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
    accepted: AtomicU64,
    open: AtomicU64,
    upstream_errors: [AtomicU64; UpstreamError::ALL.len()],
    cache: [AtomicU64; CacheResult::ALL.len()],
    backend_requests: [AtomicU64; BackendService::ALL.len()],
    backend_failures: AtomicU64,
    /// Whether the last lookup the backend answered failed (readiness, [`crate::health`]).
    backend_down: AtomicBool,
    /// The OVN backend's state, shown once it reported; changes rarely (not per request), so
    /// a lock is fine.
    ovn: Mutex<Option<(OvnStats, Option<Instant>)>>,
    /// Requests served without an IMDSv2 token (agent).
    no_token: Mutex<no_token::NoToken>,
    /// The servers forwarded to, by name; registered once per endpoint, not per request.
    servers: Mutex<Vec<Arc<ServerCounters>>>,
    deadline_misses: AtomicU64,
    /// Fresh hits, stale answers, stores of the response cache.
    response_cache: [AtomicU64; 3],
}

/// The counters of one upstream server (shared by the event loops that forward to it).
#[derive(Debug, Default)]
pub struct ServerCounters {
    name: String,
    /// Event loops that have it marked down now.
    down: AtomicU64,
    answers: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
    latency_sum_ns: AtomicU64,
}

impl ServerCounters {
    /// It answered (below 500), `took` after the attempt started.
    pub fn answered(&self, took: Option<Duration>) {
        self.answers.fetch_add(1, Relaxed);
        if let Some(took) = took {
            let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            self.latency_sum_ns.fetch_add(ns, Relaxed);
        }
    }

    /// An attempt on it failed.
    pub fn failed(&self) {
        self.failures.fetch_add(1, Relaxed);
    }

    /// A request failed elsewhere was sent again, to it.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// An event loop marked it down (`true`) or back up.
    pub fn set_down(&self, down: bool) {
        if down {
            self.down.fetch_add(1, Relaxed);
        } else {
            let _ = (self.down).fetch_update(Relaxed, Relaxed, |d| d.checked_sub(1));
        }
    }
}

/// What the response cache did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseCacheEvent {
    /// Answered from a fresh entry.
    Fresh,
    /// Answered from a stale entry while every server failed.
    Stale,
    /// Kept an answer.
    Stored,
}

impl ResponseCacheEvent {
    const ALL: [ResponseCacheEvent; 3] = [
        ResponseCacheEvent::Fresh,
        ResponseCacheEvent::Stale,
        ResponseCacheEvent::Stored,
    ];

    fn label(self) -> &'static str {
        match self {
            ResponseCacheEvent::Fresh => "fresh",
            ResponseCacheEvent::Stale => "stale",
            ResponseCacheEvent::Stored => "stored",
        }
    }
}

impl Metrics {
    /// All counters at zero, no role enabled.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// The counters of `role`.
    pub fn role(&self, role: MetricRole) -> &RoleMetrics {
        &self.roles[role as usize]
    }

    /// Liveness and readiness reports.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The state of each enabled role's lookup backend, where it has one that can fail.
    pub(crate) fn backends(&self) -> Vec<(&'static str, BackendState)> {
        let enabled = MetricRole::ALL.into_iter().map(|r| (r, self.role(r)));
        let enabled = enabled.filter(|(_, m)| m.enabled.load(Relaxed));
        enabled
            .filter_map(|(role, m)| {
                let ovn = *m.ovn.lock().unwrap_or_else(PoisonError::into_inner);
                let state = match ovn {
                    Some((s, _)) if s.resumed + s.resynced == 0 => BackendState::NotSynced,
                    Some((s, _)) if !s.connected => BackendState::Disconnected,
                    Some(_) => BackendState::Ready,
                    None if m.backend_down.load(Relaxed) => BackendState::Failing,
                    None => return None,
                };
                Some((role.label(), state))
            })
            .collect()
    }

    /// Makes `role`'s series part of [`render`](Self::render)'s output (an endpoint of that
    /// role runs in this process).
    pub fn enable(&self, role: MetricRole) {
        self.role(role).enabled.store(true, Relaxed);
    }

    /// Appends every enabled role's series to `out`, in the text exposition format 0.0.4;
    /// ages are as of `now`.
    pub fn render(&self, now: Instant, out: &mut String) {
        let roles: Vec<(MetricRole, &RoleMetrics)> = MetricRole::ALL
            .into_iter()
            .map(|r| (r, self.role(r)))
            .filter(|(_, m)| m.enabled.load(Relaxed))
            .collect();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        };
        let value = |out: &mut String, name: &str, role: MetricRole, labels: &str, v: u64| {
            let _ = writeln!(out, "{name}{{role=\"{}\"{labels}}} {v}", role.label());
        };

        let name = "mdproxy_requests_total";
        family(
            out,
            name,
            "counter",
            "Answers sent to clients, by status code (\"other\": a code not listed separately).",
        );
        for &(role, m) in &roles {
            let codes = STATUSES.iter().map(|c| c as &dyn fmt::Display);
            for (code, n) in codes.chain([&"other" as _]).zip(&m.requests) {
                let n = n.load(Relaxed);
                if n > 0 {
                    value(out, name, role, &format!(",code=\"{code}\""), n);
                }
            }
        }

        let name = "mdproxy_request_duration_seconds";
        family(
            out,
            name,
            "histogram",
            "Time from a complete request head to the complete answer.",
        );
        for &(role, m) in &roles {
            let mut cumulative = 0;
            let les = BUCKETS.iter().map(|(le, _)| *le).chain(["+Inf"]);
            for (le, n) in les.zip(&m.latency) {
                cumulative += n.load(Relaxed);
                let labels = format!(",le=\"{le}\"");
                value(out, &format!("{name}_bucket"), role, &labels, cumulative);
            }
            let sum = m.latency_sum_ns.load(Relaxed);
            let (secs, nanos) = (sum / 1_000_000_000, sum % 1_000_000_000);
            let label = role.label();
            let _ = writeln!(out, "{name}_sum{{role=\"{label}\"}} {secs}.{nanos:09}");
            value(out, &format!("{name}_count"), role, "", cumulative);
        }

        let name = "mdproxy_connections_total";
        family(out, name, "counter", "Client connections accepted.");
        for &(role, m) in &roles {
            value(out, name, role, "", m.accepted.load(Relaxed));
        }

        let name = "mdproxy_open_connections";
        family(out, name, "gauge", "Client connections open now.");
        for &(role, m) in &roles {
            value(out, name, role, "", m.open.load(Relaxed));
        }

        let relays: Vec<_> = roles.iter().filter(|(r, _)| r.relays()).collect();
        if !relays.is_empty() {
            let name = "mdproxy_upstream_errors_total";
            family(out, name, "counter", "Upstream failures, by kind: refused and unreachable (503), timeout (504), malformed and reset (502), tls (503); also those after the answer had started.");
            for &&(role, m) in &relays {
                for (kind, n) in UpstreamError::ALL.iter().zip(&m.upstream_errors) {
                    let labels = format!(",kind=\"{}\"", kind.label());
                    value(out, name, role, &labels, n.load(Relaxed));
                }
            }
        }

        for &&(role, m) in &relays {
            render_servers(out, role, m);
        }

        // A process runs one role that looks up (the agent or the node), so each family below
        // has one role's rows.
        let Some(&(role, m)) = roles.iter().find(|(r, _)| r.looks_up()) else {
            return;
        };
        let name = "mdproxy_cache_lookups_total";
        family(out, name, "counter", "Instance lookups in the agent's cache (neutron backend): hit, negative (a cached \"not found\"), miss (a backend query started), coalesced (waited for a query already running).");
        for (result, n) in CacheResult::ALL.iter().zip(&m.cache) {
            let labels = format!(",result=\"{}\"", result.label());
            value(out, name, role, &labels, n.load(Relaxed));
        }
        let name = "mdproxy_backend_requests_total";
        family(out, name, "counter", "Requests the agent made to Keystone (tokens) and Neutron (ports, router networks; retries included).");
        for (backend, n) in BackendService::ALL.iter().zip(&m.backend_requests) {
            let labels = format!(",backend=\"{}\"", backend.label());
            value(out, name, role, &labels, n.load(Relaxed));
        }
        let name = "mdproxy_backend_failures_total";
        family(
            out,
            name,
            "counter",
            "Instance lookups that failed because Keystone or Neutron did (each answered 503).",
        );
        value(out, name, role, "", m.backend_failures.load(Relaxed));
        (m.no_token.lock().unwrap_or_else(PoisonError::into_inner)).render(out, role.label());
        let ovn = *m.ovn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((stats, last)) = ovn {
            render_ovn(
                out,
                role,
                &stats,
                last.map(|t| now.saturating_duration_since(t)),
            );
        }
    }
}

/// The upstream servers' series, the deadline misses and the response cache of a role that
/// relays.
fn render_servers(out: &mut String, role: MetricRole, m: &RoleMetrics) {
    let servers = m
        .servers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let label = role.label();
    let mut series = |name: &str, kind: &str, help: &str, rows: &[(String, String)]| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{role=\"{label}\"{labels}}} {v}");
        }
    };
    let per = |f: &dyn Fn(&ServerCounters) -> String| -> Vec<(String, String)> {
        (servers.iter())
            .map(|s| (format!(",server=\"{}\"", s.name.escape_default()), f(s)))
            .collect()
    };
    if !servers.is_empty() {
        series(
            "mdproxy_upstream_server_up",
            "gauge",
            "1 while no event loop has the server marked down (after consecutive failures).",
            &per(&|s| u8::from(s.down.load(Relaxed) == 0).to_string()),
        );
        series(
            "mdproxy_upstream_server_answers_total",
            "counter",
            "Answers (status below 500) the server gave.",
            &per(&|s| s.answers.load(Relaxed).to_string()),
        );
        series(
            "mdproxy_upstream_server_failures_total",
            "counter",
            "Attempts on the server that failed: connect, timeout, 5xx, broken answers.",
            &per(&|s| s.failures.load(Relaxed).to_string()),
        );
        series(
            "mdproxy_upstream_server_latency_seconds_sum",
            "counter",
            "Seconds from an attempt's start to the server's answer head, summed over its answers.",
            &per(&|s| {
                let ns = s.latency_sum_ns.load(Relaxed);
                format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
            }),
        );
        series(
            "mdproxy_upstream_retries_total",
            "counter",
            "Requests (GET and HEAD only) sent again, to this server, after another failed them.",
            &per(&|s| s.retries.load(Relaxed).to_string()),
        );
    }
    series(
        "mdproxy_deadline_misses_total",
        "counter",
        "Requests answered 504 because the request deadline passed.",
        &[(String::new(), m.deadline_misses.load(Relaxed).to_string())],
    );
    let rows: Vec<_> = (ResponseCacheEvent::ALL.iter())
        .zip(&m.response_cache)
        .map(|(e, n)| {
            (
                format!(",result=\"{}\"", e.label()),
                n.load(Relaxed).to_string(),
            )
        })
        .collect();
    series(
        "mdproxy_response_cache_total",
        "counter",
        "Response cache: fresh hits, stale answers (every server failing) and answers stored.",
        &rows,
    );
}

/// The OVN backend's series (agent and node).
fn render_ovn(out: &mut String, role: MetricRole, s: &OvnStats, age: Option<Duration>) {
    let label = role.label();
    let mut series = |name: &str, kind: &str, help: &str, rows: &[(&str, String)]| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{role=\"{label}\"{labels}}} {v}");
        }
    };
    let help = "1 while a monitor of the OVN Southbound runs; 0 while the agent answers from its last replica or has none.";
    series(
        "mdproxy_ovn_connected",
        "gauge",
        help,
        &[("", u8::from(s.connected).to_string())],
    );
    series(
        "mdproxy_ovn_replica_rows",
        "gauge",
        "Rows of the OVN Southbound replica, by table.",
        &[
            (",table=\"Port_Binding\"", s.ports.to_string()),
            (",table=\"Datapath_Binding\"", s.datapaths.to_string()),
        ],
    );
    series(
        "mdproxy_ovn_monitors_total",
        "counter",
        "Southbound monitors started: resumed from the last transaction, or resynced whole.",
        &[
            (",start=\"resumed\"", s.resumed.to_string()),
            (",start=\"resynced\"", s.resynced.to_string()),
        ],
    );
    let help = "Southbound update messages applied to the replica.";
    series(
        "mdproxy_ovn_updates_total",
        "counter",
        help,
        &[("", s.updates.to_string())],
    );
    let help = "Answers given from the replica while the Southbound was unreachable.";
    series(
        "mdproxy_ovn_stale_answers_total",
        "counter",
        help,
        &[("", s.stale_answers.to_string())],
    );
    if let Some(age) = age {
        let help = "Seconds since the last update was applied to the replica.";
        let age = format!("{:.3}", age.as_secs_f64());
        series(
            "mdproxy_ovn_seconds_since_update",
            "gauge",
            help,
            &[("", age)],
        );
    }
}

impl RoleMetrics {
    /// An answer with `status` went to a client; `took` is the time from its request head to
    /// the end of the answer, when there was a request head (not for a 408 or a refused
    /// connection).
    pub fn request(&self, status: u16, took: Option<Duration>) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.requests[i].fetch_add(1, Relaxed);
        if let Some(took) = took {
            let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            let bucket = BUCKETS
                .iter()
                .position(|&(_, le)| ns <= le)
                .unwrap_or(BUCKETS.len());
            self.latency[bucket].fetch_add(1, Relaxed);
            self.latency_sum_ns.fetch_add(ns, Relaxed);
        }
    }

    /// A client connection was accepted.
    pub fn connection_opened(&self) {
        self.accepted.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
    }

    /// A client connection counted by [`connection_opened`](Self::connection_opened) is gone.
    pub fn connection_closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// The upstream failed this way.
    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// The lookup cache answered this.
    pub fn cache(&self, result: CacheResult) {
        self.cache[result as usize].fetch_add(1, Relaxed);
    }

    /// `n` more requests went to `backend`.
    pub fn backend_requests(&self, backend: BackendService, n: u64) {
        self.backend_requests[backend as usize].fetch_add(n, Relaxed);
    }

    /// The OVN backend's state now, and when it last applied an update.
    pub fn ovn(&self, stats: &OvnStats, last_update: Option<Instant>) {
        *self.ovn.lock().unwrap_or_else(PoisonError::into_inner) = Some((*stats, last_update));
    }

    /// The backend answered a lookup (found or not).
    pub fn backend_answer(&self) {
        self.backend_down.store(false, Relaxed);
    }

    /// The agent served a request of `instance` that carried no IMDSv2 token.
    pub fn no_token(&self, instance: &str) {
        (self.no_token.lock().unwrap_or_else(PoisonError::into_inner)).count(instance);
    }

    /// A lookup failed because the backend did.
    pub fn backend_failure(&self) {
        self.backend_down.store(true, Relaxed);
        self.backend_failures.fetch_add(1, Relaxed);
    }

    /// The counters of the upstream server `name`, shared with the other endpoints that
    /// forward to it.
    pub fn server(&self, name: &str) -> Arc<ServerCounters> {
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = servers.iter().find(|s| s.name == name) {
            return s.clone();
        }
        let s = Arc::new(ServerCounters {
            name: name.to_owned(),
            ..ServerCounters::default()
        });
        servers.push(s.clone());
        s
    }

    /// A request was answered 504 at its deadline.
    pub fn deadline_miss(&self) {
        self.deadline_misses.fetch_add(1, Relaxed);
    }

    /// The response cache did this.
    pub fn response_cache(&self, event: ResponseCacheEvent) {
        self.response_cache[event as usize].fetch_add(1, Relaxed);
    }
}

/// The counters one endpoint adds to: the process's [`Metrics`] under the endpoint's role, or
/// nothing (no metrics configured, or a role that is not counted).
#[derive(Clone, Debug, Default)]
pub(crate) struct Meter(Option<(Arc<Metrics>, MetricRole)>);

impl Meter {
    /// Counts into `metrics` as `role` (and marks the role as present in the exposition).
    pub(crate) fn new(metrics: Option<Arc<Metrics>>, role: Option<MetricRole>) -> Meter {
        let counted = metrics.zip(role);
        if let Some((metrics, role)) = &counted {
            metrics.enable(*role);
        }
        Meter(counted)
    }

    /// The counters of upstream server `name`, if any are kept.
    pub(crate) fn server(&self, name: &str) -> Option<Arc<ServerCounters>> {
        self.0.as_ref().map(|(m, role)| m.role(*role).server(name))
    }

    /// Updates the role's counters, if any are kept.
    pub(crate) fn count(&self, update: impl FnOnce(&RoleMetrics)) {
        if let Some((metrics, role)) = &self.0 {
            update(metrics.role(*role));
        }
    }
}

/// The metrics endpoint's answer to a complete request: the exposition on `GET /metrics` (or
/// `/`, queries ignored), 404 elsewhere, 405 for other methods.
pub(crate) fn answer(metrics: &Metrics, now: Instant, head: &RequestHead) -> MetaResponse {
    let plain = |status: u16, body: &str, headers| MetaResponse {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.as_bytes().to_vec(),
        headers,
        store: None,
    };
    if !matches!(head.method, Method::Get | Method::Head) {
        let allow = vec![("Allow", "GET, HEAD".to_owned())];
        return plain(405, "Method not allowed: GET /metrics.\n", allow);
    }
    let path = head.target.split(|&b| b == b'?').next().unwrap_or_default();
    if path == b"/live" || path == b"/ready" {
        let (status, body) = crate::health::answer(metrics, now, path == b"/ready");
        return MetaResponse {
            status,
            content_type: "application/json",
            body: body.into_bytes(),
            headers: Vec::new(),
            store: None,
        };
    }
    if path != b"/metrics" && path != b"/" {
        let msg =
            "Not found: the metrics are at /metrics, liveness at /live, readiness at /ready.\n";
        return plain(404, msg, Vec::new());
    }
    let mut body = String::with_capacity(8 * 1024);
    metrics.render(now, &mut body);
    MetaResponse {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: body.into_bytes(),
        headers: Vec::new(),
        store: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `series` (name and labels, as rendered) in `text`.
    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[test]
    fn renders_only_enabled_roles_with_help_and_type() {
        let m = Metrics::new();
        let mut out = String::new();
        m.render(crate::testing::epoch(), &mut out);
        assert!(!out.contains("role="), "{out}");
        m.enable(MetricRole::NsProxy);
        let mut out = String::new();
        m.render(crate::testing::epoch(), &mut out);
        assert!(out.contains("role=\"ns-proxy\"") && !out.contains("role=\"agent\""));
        assert!(!out.contains("mdproxy_cache_lookups_total"), "{out}");
        for family in [
            "mdproxy_requests_total counter",
            "mdproxy_request_duration_seconds histogram",
            "mdproxy_connections_total counter",
            "mdproxy_open_connections gauge",
            "mdproxy_upstream_errors_total counter",
        ] {
            assert!(
                out.contains(&format!("# TYPE {family}\n")),
                "{family}:\n{out}"
            );
            let name = family.split(' ').next().unwrap();
            assert!(out.contains(&format!("# HELP {name} ")), "{name}:\n{out}");
        }
        // Every line is a comment or `name{labels} value`, and every value a number.
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (series, v) = line.rsplit_once(' ').unwrap();
            assert!(
                series.starts_with("mdproxy_") && series.ends_with('}'),
                "{line}"
            );
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn counts_requests_by_status_and_latency_by_bucket() {
        let m = Metrics::new();
        m.enable(MetricRole::Agent);
        let agent = m.role(MetricRole::Agent);
        agent.request(200, Some(Duration::from_micros(300)));
        agent.request(200, Some(Duration::from_millis(2)));
        agent.request(599, Some(Duration::from_secs(11)));
        agent.request(408, None);
        agent.connection_opened();
        agent.connection_opened();
        agent.connection_closed();
        agent.upstream_error(UpstreamError::Refused);
        agent.cache(CacheResult::Coalesced);
        agent.backend_requests(BackendService::Neutron, 3);
        agent.backend_failure();
        let mut out = String::new();
        m.render(crate::testing::epoch(), &mut out);
        let v = |series: &str| sample(&out, series).unwrap_or_else(|| panic!("{series}:\n{out}"));
        assert_eq!(
            v("mdproxy_requests_total{role=\"agent\",code=\"200\"}"),
            "2"
        );
        assert_eq!(
            v("mdproxy_requests_total{role=\"agent\",code=\"other\"}"),
            "1"
        );
        assert_eq!(
            v("mdproxy_requests_total{role=\"agent\",code=\"408\"}"),
            "1"
        );
        assert_eq!(
            sample(&out, "mdproxy_requests_total{role=\"agent\",code=\"404\"}"),
            None
        );
        let bucket = |le: &str| {
            v(&format!(
                "mdproxy_request_duration_seconds_bucket{{role=\"agent\",le=\"{le}\"}}"
            ))
        };
        assert_eq!(
            ["0.0005", "0.001", "0.0025", "10", "+Inf"].map(bucket),
            ["1", "1", "2", "2", "3"]
        );
        assert_eq!(
            v("mdproxy_request_duration_seconds_count{role=\"agent\"}"),
            "3"
        );
        assert_eq!(
            v("mdproxy_request_duration_seconds_sum{role=\"agent\"}"),
            "11.002300000"
        );
        assert_eq!(v("mdproxy_connections_total{role=\"agent\"}"), "2");
        assert_eq!(v("mdproxy_open_connections{role=\"agent\"}"), "1");
        assert_eq!(
            v("mdproxy_upstream_errors_total{role=\"agent\",kind=\"refused\"}"),
            "1"
        );
        assert_eq!(
            v("mdproxy_upstream_errors_total{role=\"agent\",kind=\"tls\"}"),
            "0"
        );
        assert_eq!(
            v("mdproxy_cache_lookups_total{role=\"agent\",result=\"coalesced\"}"),
            "1"
        );
        assert_eq!(
            v("mdproxy_cache_lookups_total{role=\"agent\",result=\"hit\"}"),
            "0"
        );
        assert_eq!(
            v("mdproxy_backend_requests_total{role=\"agent\",backend=\"neutron\"}"),
            "3"
        );
        assert_eq!(
            v("mdproxy_backend_requests_total{role=\"agent\",backend=\"keystone\"}"),
            "0"
        );
        assert_eq!(v("mdproxy_backend_failures_total{role=\"agent\"}"), "1");
        assert_eq!(format!("{m:?}"), "Metrics { .. }");
    }

    #[test]
    fn servers_deadline_misses_and_the_response_cache_are_shown() {
        let m = Metrics::new();
        m.enable(MetricRole::Agent);
        let agent = m.role(MetricRole::Agent);
        let a = agent.server("http://a:8775");
        assert!(
            Arc::ptr_eq(&a, &agent.server("http://a:8775")),
            "one per name"
        );
        let b = agent.server("http://b:8775");
        a.answered(Some(Duration::from_millis(1500)));
        a.failed();
        a.set_down(true);
        a.set_down(true);
        a.set_down(false);
        b.retried();
        b.set_down(false);
        agent.deadline_miss();
        agent.response_cache(ResponseCacheEvent::Stale);
        agent.response_cache(ResponseCacheEvent::Stale);
        let mut out = String::new();
        m.render(crate::testing::epoch(), &mut out);
        let v = |series: &str| sample(&out, series).unwrap_or_else(|| panic!("{series}:\n{out}"));
        let a_ = "{role=\"agent\",server=\"http://a:8775\"}";
        let b_ = "{role=\"agent\",server=\"http://b:8775\"}";
        assert_eq!(
            v(&format!("mdproxy_upstream_server_up{a_}")),
            "0",
            "one loop still has it down"
        );
        assert_eq!(v(&format!("mdproxy_upstream_server_up{b_}")), "1");
        assert_eq!(
            v(&format!("mdproxy_upstream_server_answers_total{a_}")),
            "1"
        );
        assert_eq!(
            v(&format!("mdproxy_upstream_server_failures_total{a_}")),
            "1"
        );
        assert_eq!(
            v(&format!("mdproxy_upstream_server_latency_seconds_sum{a_}")),
            "1.500000000"
        );
        assert_eq!(v(&format!("mdproxy_upstream_retries_total{b_}")), "1");
        assert_eq!(v("mdproxy_deadline_misses_total{role=\"agent\"}"), "1");
        assert_eq!(
            v("mdproxy_response_cache_total{role=\"agent\",result=\"stale\"}"),
            "2"
        );
    }

    #[test]
    fn the_node_has_the_agents_series_under_its_own_label() {
        let m = Metrics::new();
        m.enable(MetricRole::Node);
        let node = m.role(MetricRole::Node);
        node.server("http://a:8775").answered(None);
        node.no_token("i-1");
        node.ovn(&OvnStats::default(), None);
        let mut out = String::new();
        m.render(crate::testing::epoch(), &mut out);
        for series in [
            "mdproxy_connections_total{role=\"node\"}",
            "mdproxy_upstream_errors_total{role=\"node\",kind=\"refused\"}",
            "mdproxy_upstream_server_answers_total{role=\"node\",server=\"http://a:8775\"}",
            "mdproxy_cache_lookups_total{role=\"node\",result=\"hit\"}",
            "mdproxy_imds_no_token_requests_total{role=\"node\",instance=\"i-1\"}",
            "mdproxy_ovn_connected{role=\"node\"}",
        ] {
            assert!(sample(&out, series).is_some(), "{series}:\n{out}");
        }
        assert!(!out.contains("role=\"agent\""), "{out}");
        assert_eq!(m.backends(), [("node", BackendState::NotSynced)]);
    }
}
