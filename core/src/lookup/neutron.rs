//! The Neutron API lookup backend, as Neutron's metadata agent does it (reference §B2):
//!
//! 1. networks: `[N]` for a network-scoped request; for a router, the networks of its interface
//!    ports (`GET /v2.0/ports?device_id=R&device_owner=…&fields=network_id`), cached for
//!    `router_networks_ttl`.
//! 2. the port: `GET /v2.0/ports?fixed_ips=ip_address%3DIP&network_id=…`; exactly one port is
//!    the instance (`device_id`, `project_id` or else `tenant_id`), none or several is "not
//!    found". An IPv6 link-local client that no port has as a fixed IP is searched for again
//!    by `mac_address`, the MAC its address embeds ([`port_search`], the rule every backend
//!    shares).
//!
//! With Keystone credentials, requests carry `X-Auth-Token`. One token is fetched at a time and
//! shared by every query; it is reused until a safety margin before `expires_at`. A 401 from
//! Neutron drops that token, re-authenticates once and retries that request once; a second 401
//! fails the query.
//!
//! # Query states
//!
//! ```text
//! state                    event                              next
//! (new)                    router networks not cached         RouterNetworks
//! (new)                    network scope / networks cached    Ports (no networks: Answer(None))
//! any request              no usable token                    waiting for the token
//! waiting for the token    token arrives / auth fails         the request / Failed
//! RouterNetworks           2xx                                Ports (no networks: Answer(None))
//! Ports                    2xx, no port, MAC left to try      Ports (by MAC)
//! Ports                    2xx                                Answer
//! RouterNetworks/Ports     401, first time for this request   waiting for the token (re-auth)
//! RouterNetworks/Ports     401 again, other error, timeout    Failed
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde::Deserialize;

use super::address::{port_search, PortSearch};
use super::error::{ExchangeError, LookupError, PortListError};
use super::exchange::{build_request, excerpt, Exchange, Progress, Response};
use super::format_mac;
use super::keystone::{parse_issued, safety_margin, CatalogChoice, KeystoneAuth};
use super::url::{HttpTarget, Query};
use crate::http::Method;
use crate::scope::{Instance, LookupKey, Scope, Uuid};
use crate::socket::{ConnectError, Input, Target};
use crate::tls::{ClientTls, TlsError, TlsTarget};

/// Router interface owners whose networks a router serves (neutron-lib `ROUTER_INTERFACE_OWNERS`).
const ROUTER_INTERFACE_OWNERS: [&str; 3] = [
    "network:router_interface",
    "network:ha_router_replicated_interface",
    "network:router_interface_distributed",
];

/// Most routers whose networks are remembered (expired entries are dropped first).
const MAX_ROUTERS: usize = 4096;

/// A token is never reused for longer than this, whatever Keystone says.
const MAX_TOKEN_REUSE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest `device_id` / `project_id` passed on: they become header values one hop later.
const MAX_ID_LEN: usize = 255;

/// Settings of the Neutron backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeutronConfig {
    /// Neutron's endpoint (`neutron_url`). `None`: take it from the Keystone catalog.
    pub neutron: Option<HttpTarget>,
    /// Keystone credentials; `None` sends no token (a `noauth` Neutron, tests).
    pub keystone: Option<KeystoneAuth>,
    /// TLS settings for every `https` URL: Keystone, Neutron, a catalog endpoint. `None`: an
    /// `https` URL fails each request that would use it, saying so.
    pub tls: Option<ClientTls>,
    /// Which catalog endpoint to use: `public` (default), `internal` or `admin`; the old
    /// `publicURL` spellings are accepted.
    pub interface: String,
    /// Region whose catalog endpoint to use; `None` takes the first match.
    pub region: Option<String>,
    /// Each backend HTTP exchange (connect included) must finish within this.
    pub timeout: Duration,
    /// How long a router's list of networks is reused; zero asks every time.
    pub router_networks_ttl: Duration,
    /// Most lookups (per event loop) talking to Neutron at once; more wait in a queue of
    /// [`QUEUE_PER_SLOT`] per slot, and beyond that fail at once (503). A flood of distinct
    /// client IPs thus makes a bounded number of Neutron queries, not one each.
    pub max_in_flight: usize,
}

/// Lookups that may wait for a free query slot, per slot of [`NeutronConfig::max_in_flight`].
///
/// Why a queue rather than 503 for all the excess: a mass boot is a legitimate burst of
/// distinct cold IPs, and waiting briefly (at most the backend timeout) serves it; a queue
/// bounded in length keeps memory and the wait bounded, and what is beyond it is answered
/// at once, so cloud-init retries instead of hanging.
pub const QUEUE_PER_SLOT: usize = 16;

impl NeutronConfig {
    /// Default request timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default catalog interface (python-neutronclient's historical `publicURL`).
    pub const DEFAULT_INTERFACE: &'static str = "public";
    /// Default router-networks TTL (the lookup cache's positive TTL).
    pub const DEFAULT_ROUTER_NETWORKS_TTL: Duration = Duration::from_secs(5);
    /// Default [`max_in_flight`](Self::max_in_flight).
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
    /// Largest accepted [`max_in_flight`](Self::max_in_flight) (each may hold a connection).
    pub const MAX_IN_FLIGHT: usize = 4096;

    /// A configuration with the defaults above.
    pub fn new(neutron: Option<HttpTarget>, keystone: Option<KeystoneAuth>) -> Self {
        NeutronConfig {
            neutron,
            keystone,
            tls: None,
            interface: Self::DEFAULT_INTERFACE.to_owned(),
            region: None,
            timeout: Self::DEFAULT_TIMEOUT,
            router_networks_ttl: Self::DEFAULT_ROUTER_NETWORKS_TTL,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// The client's own id for one backend HTTP exchange (the runtime maps it to a socket). Ids are
/// never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReqId(pub u64);

/// Something the runtime must do for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAction {
    /// Open a connection to the target; report [`Input::Connected`] or
    /// [`Input::ConnectFailed`] for this id, then write [`NeutronClient::pending_write`].
    Connect(ReqId, Target),
    /// Close this connection and forget the id; the client will not mention it again and the
    /// runtime must not report on it again.
    Close(ReqId),
}

/// The outcome of a [`NeutronClient::query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Neutron answered: the instance, or `None` if no single port matched.
    Answer(LookupKey, Option<Instance>),
    /// The backend could not answer (unreachable, timeout, refused credentials, bad data).
    Failed(LookupKey, LookupError),
}

/// What a [`NeutronClient`] has started so far, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Keystone authentications started.
    pub keystone_auths: u64,
    /// Neutron requests started: router-network and port queries alike, retries included.
    pub neutron_requests: u64,
}

/// How the port is searched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortFilter {
    Ip(IpAddr),
    Mac([u8; 6]),
}

impl PortFilter {
    /// `with IP address 10.0.0.5` / `with MAC address fa:16:…` for log lines.
    fn describe(&self) -> String {
        match self {
            PortFilter::Ip(ip) => format!("IP address {ip}"),
            PortFilter::Mac(mac) => format!("MAC address {}", format_mac(*mac)),
        }
    }
}

/// Which of the two Neutron requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    RouterNetworks,
    Ports,
}

/// One [`NeutronClient::query`] in progress.
#[derive(Debug)]
struct QueryState {
    filter: PortFilter,
    /// A link-local client's MAC, searched for when no port has its address.
    then_mac: Option<[u8; 6]>,
    /// Known once the network scope or the router's interfaces are.
    networks: Option<Vec<String>>,
    /// The current request already had its one 401 retry.
    retried: bool,
    /// Generation of the token the current request carries (0 = none).
    token_gen: u64,
}

/// What an exchange is for.
#[derive(Clone, Copy, Debug)]
enum Purpose {
    Auth,
    Neutron(LookupKey, Step),
}

#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    ex: Exchange,
    /// When the request was started (a token's lifetime counts from here).
    started: Instant,
    /// `GET https://host/path` for log lines (no query string, no credentials).
    what: String,
    /// The TLS session's settings, for an `https` target.
    tls: Option<TlsTarget>,
}

struct Token {
    value: String,
    gen: u64,
    usable_until: Instant,
    neutron: HttpTarget,
}

enum TokenState {
    Absent,
    Fetching,
    Valid(Token),
}

/// Where and how to send a Neutron request.
#[derive(Clone, Debug)]
struct Creds {
    target: HttpTarget,
    token: Option<String>,
    gen: u64,
}

enum CredState {
    Ready(Creds),
    Wait,
    Error(LookupError),
}

/// Sans-IO Neutron API client. See the [module docs](self).
///
/// Driving it: after every `query`, `handle` or `handle_timeout`, drain
/// [`poll_action`](Self::poll_action) and [`poll_event`](Self::poll_event), write
/// [`pending_write`](Self::pending_write) of every connected id, then re-arm the timer from
/// [`poll_timeout`](Self::poll_timeout).
pub struct NeutronClient {
    cfg: NeutronConfig,
    next_req: u64,
    exchanges: BTreeMap<ReqId, Pending>,
    queries: BTreeMap<LookupKey, QueryState>,
    /// Lookups waiting for a query slot, oldest first, each with when it gives up.
    waiting: VecDeque<(LookupKey, Instant)>,
    /// The latest time an input brought: a slot freed by [`fail`](Self::fail) (which brings
    /// none) is handed on at that time.
    last_now: Option<Instant>,
    token: TokenState,
    /// Bumped for each new token, so a 401 only drops the token it was about.
    token_gen: u64,
    /// Queries waiting for a token, in arrival order.
    token_waiters: VecDeque<LookupKey>,
    /// Router → (its networks, reusable until).
    routers: BTreeMap<Uuid, (Vec<String>, Instant)>,
    actions: VecDeque<ClientAction>,
    events: VecDeque<ClientEvent>,
    stats: BackendStats,
}

impl std::fmt::Debug for NeutronClient {
    /// Never prints the token or the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = match &self.token {
            TokenState::Absent => "absent",
            TokenState::Fetching => "fetching",
            TokenState::Valid(_) => "valid",
        };
        f.debug_struct("NeutronClient")
            .field("cfg", &self.cfg)
            .field("exchanges", &self.exchanges.len())
            .field("queries", &self.queries.len())
            .field("token", &token)
            .field("routers", &self.routers.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl NeutronClient {
    /// A client with nothing in flight and no token yet.
    pub fn new(cfg: NeutronConfig) -> Self {
        NeutronClient {
            cfg,
            next_req: 0,
            exchanges: BTreeMap::new(),
            queries: BTreeMap::new(),
            waiting: VecDeque::new(),
            last_now: None,
            token: TokenState::Absent,
            token_gen: 0,
            token_waiters: VecDeque::new(),
            routers: BTreeMap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            stats: BackendStats::default(),
        }
    }

    /// Starts resolving `key`. The caller guarantees one query per key at a time
    /// (single-flight is in the cache); a second query for a key already in progress is
    /// ignored, and the first one's event answers both.
    ///
    /// May queue: `Connect` actions (Keystone or Neutron), or an event right away (a cached
    /// router with no networks, no endpoint configured).
    ///
    /// With [`NeutronConfig::max_in_flight`] lookups running, the lookup waits for a slot (up
    /// to the backend timeout), or fails at once when the queue is full too.
    pub fn query(&mut self, now: Instant, key: LookupKey) {
        self.last_now = Some(now);
        if self.queries.contains_key(&key) || self.waiting.iter().any(|(k, _)| *k == key) {
            warn!("lookup of {} on {:?} is already running", key.ip, key.scope);
            return;
        }
        let slots = self.cfg.max_in_flight.max(1);
        if self.queries.len() >= slots || !self.waiting.is_empty() {
            if self.waiting.len() >= slots.saturating_mul(QUEUE_PER_SLOT) {
                let why = LookupError::QueueFull {
                    waiting: self.waiting.len(),
                    slots,
                };
                self.events.push_back(ClientEvent::Failed(key, why));
                return;
            }
            let until = now.checked_add(self.cfg.timeout).unwrap_or(now);
            self.waiting.push_back((key, until));
            return;
        }
        self.start_query(now, key);
    }

    /// Starts the lookups that wait, as far as slots are free.
    fn start_waiting(&mut self, now: Instant) {
        while self.queries.len() < self.cfg.max_in_flight.max(1) {
            let Some((key, _)) = self.waiting.pop_front() else {
                return;
            };
            self.start_query(now, key);
        }
    }

    fn start_query(&mut self, now: Instant, key: LookupKey) {
        let (filter, then_mac) = match port_search(key.ip) {
            PortSearch::Ip(ip) => (PortFilter::Ip(ip), None),
            PortSearch::LinkLocal(ip, mac) => (PortFilter::Ip(IpAddr::V6(ip)), mac),
        };
        self.queries.insert(
            key,
            QueryState {
                filter,
                then_mac,
                networks: None,
                retried: false,
                token_gen: 0,
            },
        );
        self.advance(now, key, None);
    }

    /// Something happened on exchange `req`'s connection. Unknown (closed) ids are ignored.
    ///
    /// May queue: `Close(req)` once the exchange is over (answered or failed), then what the
    /// answer leads to (further `Connect`s, events).
    pub fn handle(&mut self, now: Instant, req: ReqId, input: Input<'_>) {
        self.last_now = Some(now);
        self.handle_exchange(now, req, input);
        self.start_waiting(now);
    }

    fn handle_exchange(&mut self, now: Instant, req: ReqId, input: Input<'_>) {
        let Some(p) = self.exchanges.get_mut(&req) else {
            return;
        };
        let progress = match input {
            Input::Connected => {
                p.ex.connected();
                Progress::More
            }
            Input::Read(data) => p.ex.read(data),
            Input::Eof => p.ex.eof(),
            Input::ConnectFailed(ConnectError::Refused) => Progress::Failed(ExchangeError::Refused),
            Input::ConnectFailed(ConnectError::Other) => {
                Progress::Failed(ExchangeError::ConnectFailed)
            }
            Input::Error => Progress::Failed(ExchangeError::Broken),
        };
        match progress {
            Progress::More => {}
            Progress::Done(resp) => {
                if let Some(p) = self.close(req) {
                    self.on_response(now, p, resp);
                }
            }
            Progress::Failed(why) => {
                if let Some(p) = self.close(req) {
                    self.on_failure(&p, why);
                }
            }
        }
    }

    /// Fails every exchange whose deadline is at or before `now`. Idempotent; early calls are
    /// no-ops.
    ///
    /// May queue: `Close` for each expired exchange, `Failed` events (expired exchanges, and
    /// lookups that waited the timeout for a slot), and `Connect`s of queries that move on.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        while let Some(&(key, until)) = self.waiting.front() {
            if until > now {
                break;
            }
            self.waiting.pop_front();
            let why = LookupError::NoSlot {
                timeout: self.cfg.timeout,
                in_flight: self.queries.len(),
            };
            self.events.push_back(ClientEvent::Failed(key, why));
        }
        let expired: Vec<ReqId> = self
            .exchanges
            .iter()
            .filter(|(_, p)| p.ex.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for req in expired {
            if let Some(p) = self.close(req) {
                self.on_failure(&p, ExchangeError::Timeout(self.cfg.timeout));
            }
        }
        self.start_waiting(now);
    }

    /// The next thing for the runtime to do.
    ///
    /// Call after: `query`, `handle`, `handle_timeout`, until `None`.
    pub fn poll_action(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    /// The next finished query.
    ///
    /// Call after: `query`, `handle`, `handle_timeout`, until `None`.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Request bytes still to be written on `req`: empty until `Connected` was reported, and
    /// for unknown ids.
    ///
    /// Call after: `handle(req, Connected)` and after each `consume_write(req, _)`.
    pub fn pending_write(&self, req: ReqId) -> &[u8] {
        self.exchanges
            .get(&req)
            .map_or(&[][..], |p| p.ex.pending_write())
    }

    /// `n` bytes of [`pending_write`](Self::pending_write) were written.
    pub fn consume_write(&mut self, req: ReqId, n: usize) {
        if let Some(p) = self.exchanges.get_mut(&req) {
            p.ex.consume_write(n);
        }
    }

    /// The TLS settings of `req`'s connection, when its target is `https` (the endpoint wraps
    /// the socket in a TLS session; see [`crate::tls`]).
    pub fn tls_target(&self, req: ReqId) -> Option<&TlsTarget> {
        self.exchanges.get(&req).and_then(|p| p.tls.as_ref())
    }

    /// `req`'s connection failed for a reason the caller names (its TLS session failed: a
    /// certificate, a host name, an alert). Like a connection that broke: the exchange fails
    /// with `why`.
    ///
    /// May queue: what [`handle`](Self::handle) queues for a failure.
    pub fn fail(&mut self, req: ReqId, why: TlsError) {
        if let Some(p) = self.close(req) {
            self.on_failure(&p, ExchangeError::Tls(why));
        }
        if let Some(now) = self.last_now {
            self.start_waiting(now);
        }
    }

    /// Whether the runtime should read `req`'s socket (connected and not finished).
    pub fn wants_read(&self, req: ReqId) -> bool {
        self.exchanges.get(&req).is_some_and(|p| p.ex.wants_read())
    }

    /// The earliest exchange deadline. Token and router-network expiry need no timer (they
    /// are checked when used).
    ///
    /// Call after: draining `poll_action` / `poll_event`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let exchanges = self.exchanges.values().map(|p| p.ex.deadline);
        // The queue is in arrival order with one timeout: its front gives up first.
        let waiting = self.waiting.front().map(|(_, until)| *until);
        exchanges.chain(waiting).min()
    }

    /// What the client has started so far.
    pub fn stats(&self) -> BackendStats {
        self.stats
    }

    /// Removes exchange `req` and tells the runtime to close its connection.
    fn close(&mut self, req: ReqId) -> Option<Pending> {
        let p = self.exchanges.remove(&req)?;
        self.actions.push_back(ClientAction::Close(req));
        Some(p)
    }

    fn finish(&mut self, ev: ClientEvent) {
        let key = match &ev {
            ClientEvent::Answer(k, _) | ClientEvent::Failed(k, _) => *k,
        };
        if let ClientEvent::Failed(_, why) = &ev {
            debug!("lookup of {} on {:?} failed: {why}", key.ip, key.scope);
        }
        self.queries.remove(&key);
        self.events.push_back(ev);
    }

    /// Sends the query's next request, or parks it until a token is there. `creds` are used
    /// as given (a token just issued serves its waiters even if its reuse window is empty).
    fn advance(&mut self, now: Instant, key: LookupKey, creds: Option<Creds>) {
        let Some(q) = self.queries.get_mut(&key) else {
            return;
        };
        let step = match (&q.networks, key.scope) {
            (Some(_), _) => Step::Ports,
            (None, Scope::Network(n) | Scope::OvnNetwork(n)) => {
                q.networks = Some(vec![n.to_string()]);
                Step::Ports
            }
            (None, Scope::Router(r)) => match self.routers.get(&r) {
                Some((nets, until)) if now < *until => {
                    q.networks = Some(nets.clone());
                    Step::Ports
                }
                _ => Step::RouterNetworks,
            },
        };
        if step == Step::Ports && q.networks.as_ref().is_some_and(Vec::is_empty) {
            warn!(
                "Router {} has no interface networks; no instance with {}",
                key.scope.id(),
                q.filter.describe()
            );
            self.finish(ClientEvent::Answer(key, None));
            return;
        }
        let creds = match creds {
            Some(c) => c,
            None => match self.credentials(now) {
                CredState::Ready(c) => c,
                CredState::Wait => {
                    self.token_waiters.push_back(key);
                    return;
                }
                CredState::Error(why) => {
                    self.finish(ClientEvent::Failed(key, why));
                    return;
                }
            },
        };
        self.send(now, key, step, creds);
    }

    /// A usable token (and Neutron's address), or the news that one is being fetched.
    fn credentials(&mut self, now: Instant) -> CredState {
        if self.cfg.keystone.is_none() {
            return match &self.cfg.neutron {
                Some(t) => CredState::Ready(Creds {
                    target: t.clone(),
                    token: None,
                    gen: 0,
                }),
                None => CredState::Error(LookupError::NotConfigured),
            };
        }
        match &self.token {
            TokenState::Valid(t) if now < t.usable_until => CredState::Ready(Creds {
                target: t.neutron.clone(),
                token: Some(t.value.clone()),
                gen: t.gen,
            }),
            TokenState::Fetching => CredState::Wait,
            TokenState::Valid(_) | TokenState::Absent => match self.start_auth(now) {
                Ok(()) => CredState::Wait,
                Err(why) => CredState::Error(why),
            },
        }
    }

    fn start_auth(&mut self, now: Instant) -> Result<(), LookupError> {
        let Some(ks) = &self.cfg.keystone else {
            return Err(LookupError::NoKeystone);
        };
        let tls = self.tls_for(&ks.endpoint)?;
        let body = ks.request_body().map_err(LookupError::Keystone)?;
        let path = ks.token_path(self.cfg.neutron.is_some());
        let request = build_request("POST", &ks.endpoint.host, &path, &[], Some(&body));
        let what = format!(
            "POST {}://{}{}",
            ks.endpoint.scheme(),
            ks.endpoint.host,
            path.split('?').next().unwrap_or_default()
        );
        let addr = ks.endpoint.addr;
        debug!("authenticating with Keystone: {what}");
        self.start(
            now,
            Purpose::Auth,
            (Method::Post, request),
            (addr, tls),
            what,
        );
        self.token = TokenState::Fetching;
        self.stats.keystone_auths += 1;
        Ok(())
    }

    /// The TLS session settings for `target`: `None` for `http`; an error for `https` without
    /// TLS settings.
    fn tls_for(&self, target: &HttpTarget) -> Result<Option<TlsTarget>, LookupError> {
        let Some(name) = &target.tls_name else {
            return Ok(None);
        };
        let url = format!("https://{}{}", target.host, target.path_prefix);
        let error = match &self.cfg.tls {
            Some(client) => match TlsTarget::new(client.clone(), name) {
                Ok(t) => return Ok(Some(t)),
                Err(e) => e,
            },
            None if cfg!(feature = "tls") => return Err(LookupError::NoTlsSettings { url }),
            None => TlsError::NotBuilt,
        };
        Err(LookupError::Tls { url, error })
    }

    fn start(
        &mut self,
        now: Instant,
        purpose: Purpose,
        (method, request): (Method, Vec<u8>),
        (addr, tls): (SocketAddr, Option<TlsTarget>),
        what: String,
    ) {
        self.next_req += 1;
        let req = ReqId(self.next_req);
        let deadline = now
            .checked_add(self.cfg.timeout)
            .or_else(|| now.checked_add(Duration::from_secs(86_400)))
            .unwrap_or(now);
        self.exchanges.insert(
            req,
            Pending {
                purpose,
                ex: Exchange::new(method, request, deadline),
                started: now,
                what,
                tls,
            },
        );
        self.actions
            .push_back(ClientAction::Connect(req, Target::Tcp(addr)));
    }

    fn send(&mut self, now: Instant, key: LookupKey, step: Step, creds: Creds) {
        let tls = match self.tls_for(&creds.target) {
            Ok(tls) => tls,
            Err(why) => return self.finish(ClientEvent::Failed(key, why)),
        };
        let Some(q) = self.queries.get_mut(&key) else {
            return;
        };
        let mut query = Query::new();
        match step {
            Step::RouterNetworks => {
                query.push("device_id", &key.scope.id().to_string());
                for owner in ROUTER_INTERFACE_OWNERS {
                    query.push("device_owner", owner);
                }
                query.push("fields", "network_id");
            }
            Step::Ports => {
                match q.filter {
                    PortFilter::Ip(ip) => query.push("fixed_ips", &format!("ip_address={ip}")),
                    PortFilter::Mac(mac) => query.push("mac_address", &format_mac(mac)),
                };
                for n in q.networks.iter().flatten() {
                    query.push("network_id", n);
                }
                for field in ["device_id", "project_id", "tenant_id"] {
                    query.push("fields", field);
                }
            }
        }
        q.token_gen = creds.gen;
        let path = format!("{}/v2.0/ports", creds.target.path_prefix);
        let target = format!("{path}?{}", query.as_str());
        let headers: Vec<(&str, &str)> = creds
            .token
            .as_deref()
            .map(|t| ("X-Auth-Token", t))
            .into_iter()
            .collect();
        let request = build_request("GET", &creds.target.host, &target, &headers, None);
        let what = format!(
            "GET {}://{}{path}",
            creds.target.scheme(),
            creds.target.host
        );
        self.stats.neutron_requests += 1;
        self.start(
            now,
            Purpose::Neutron(key, step),
            (Method::Get, request),
            (creds.target.addr, tls),
            what,
        );
    }

    fn on_failure(&mut self, p: &Pending, error: ExchangeError) {
        let why = LookupError::Exchange {
            what: p.what.clone(),
            error,
        };
        match p.purpose {
            Purpose::Auth => self.auth_failed(why),
            Purpose::Neutron(key, _) => self.finish(ClientEvent::Failed(key, why)),
        }
    }

    fn auth_failed(&mut self, why: LookupError) {
        self.token = TokenState::Absent;
        warn!("Keystone authentication failed: {why}");
        let why = LookupError::AuthFailed(Box::new(why));
        for key in std::mem::take(&mut self.token_waiters) {
            self.finish(ClientEvent::Failed(key, why.clone()));
        }
    }

    fn on_response(&mut self, now: Instant, p: Pending, resp: Response) {
        match p.purpose {
            Purpose::Auth => self.on_auth_response(now, &p, resp),
            Purpose::Neutron(key, step) => self.on_neutron_response(now, &p, key, step, resp),
        }
    }

    fn on_auth_response(&mut self, now: Instant, p: &Pending, resp: Response) {
        if !(200..300).contains(&resp.status) {
            let hint = if resp.status == 401 {
                " (credentials refused)"
            } else {
                ""
            };
            return self.auth_failed(LookupError::Status {
                what: p.what.clone(),
                status: resp.status,
                hint,
                body: excerpt(&resp.body),
            });
        }
        let choice = CatalogChoice {
            interface: &self.cfg.interface,
            region: self.cfg.region.as_deref(),
        };
        let catalog = self.cfg.neutron.is_none().then_some(choice);
        let issued = match parse_issued(&resp.headers, &resp.body, catalog) {
            Ok(i) => i,
            Err(why) => return self.auth_failed(LookupError::Keystone(why)),
        };
        let neutron = match (&self.cfg.neutron, &issued.neutron_url) {
            (Some(t), _) => t.clone(),
            // An https endpoint is only usable with TLS settings: check now, so that the
            // token is not kept for an endpoint no request can reach.
            (None, Some(url)) => match HttpTarget::parse_ip_url(url)
                .map_err(|error| LookupError::CatalogUrl {
                    url: url.clone(),
                    error,
                })
                .and_then(|t| self.tls_for(&t).map(|_| t))
            {
                Ok(t) => t,
                Err(why) => return self.auth_failed(LookupError::CatalogEndpoint(Box::new(why))),
            },
            (None, None) => return self.auth_failed(LookupError::NoNeutronEndpoint),
        };
        let reuse = issued
            .lifetime
            .saturating_sub(safety_margin(issued.lifetime))
            .min(MAX_TOKEN_REUSE);
        // Counted from when we asked: the token was issued after that, so this errs early.
        let usable_until = p.started.checked_add(reuse).unwrap_or(p.started);
        self.token_gen += 1;
        info!(
            "Keystone issued a token for {:?} (reused for {reuse:?}); Neutron at {}://{}{}",
            issued.lifetime,
            neutron.scheme(),
            neutron.host,
            neutron.path_prefix
        );
        let creds = Creds {
            target: neutron.clone(),
            token: Some(issued.token.clone()),
            gen: self.token_gen,
        };
        self.token = TokenState::Valid(Token {
            value: issued.token,
            gen: self.token_gen,
            usable_until,
            neutron,
        });
        for key in std::mem::take(&mut self.token_waiters) {
            self.advance(now, key, Some(creds.clone()));
        }
    }

    fn on_neutron_response(
        &mut self,
        now: Instant,
        p: &Pending,
        key: LookupKey,
        step: Step,
        resp: Response,
    ) {
        let has_keystone = self.cfg.keystone.is_some();
        let Some(q) = self.queries.get_mut(&key) else {
            return;
        };
        if resp.status == 401 && has_keystone && !q.retried {
            q.retried = true;
            let gen = q.token_gen;
            if matches!(&self.token, TokenState::Valid(t) if t.gen == gen) {
                info!("Neutron refused the token (401); authenticating again");
                self.token = TokenState::Absent;
            }
            return self.advance(now, key, None);
        }
        if !(200..300).contains(&resp.status) {
            let hint = match resp.status {
                401 if has_keystone => " (a fresh token was refused too)",
                401 => " (no Keystone credentials configured)",
                _ => "",
            };
            let why = LookupError::Status {
                what: p.what.clone(),
                status: resp.status,
                hint,
                body: excerpt(&resp.body),
            };
            return self.finish(ClientEvent::Failed(key, why));
        }
        q.retried = false;
        match step {
            Step::RouterNetworks => match router_networks(&resp.body) {
                Ok(nets) => {
                    q.networks = Some(nets.clone());
                    if let Scope::Router(r) = key.scope {
                        self.remember_router(now, r, nets);
                    }
                    self.advance(now, key, None);
                }
                Err(error) => self.finish(ClientEvent::Failed(
                    key,
                    LookupError::RouterPorts {
                        what: p.what.clone(),
                        error,
                    },
                )),
            },
            Step::Ports => {
                if let Some(mac) = q.then_mac.take() {
                    if no_ports(&resp.body) {
                        debug!("no port has {}; searching by its MAC", key.ip);
                        q.filter = PortFilter::Mac(mac);
                        return self.advance(now, key, None);
                    }
                }
                let filter = q.filter;
                let nets = q.networks.as_deref().unwrap_or_default().join(", ");
                let ev = match choose_port(&resp.body, &nets, &filter) {
                    Ok(found) => ClientEvent::Answer(key, found),
                    Err(error) => ClientEvent::Failed(
                        key,
                        LookupError::Ports {
                            what: p.what.clone(),
                            error,
                        },
                    ),
                };
                self.finish(ev);
            }
        }
    }

    fn remember_router(&mut self, now: Instant, router: Uuid, nets: Vec<String>) {
        let Some(until) = now.checked_add(self.cfg.router_networks_ttl) else {
            return;
        };
        if until <= now {
            return;
        }
        if self.routers.len() >= MAX_ROUTERS {
            self.routers.retain(|_, (_, u)| *u > now);
        }
        if self.routers.len() >= MAX_ROUTERS {
            let oldest = self
                .routers
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(&r, _)| r);
            if let Some(r) = oldest {
                self.routers.remove(&r);
            }
        }
        self.routers.insert(router, (nets, until));
    }
}

#[derive(Deserialize)]
struct PortList<T> {
    ports: Vec<T>,
}

#[derive(Deserialize)]
struct NetworkOnly {
    network_id: String,
}

#[derive(Deserialize)]
struct PortOwner {
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
}

fn port_list<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<PortList<T>, PortListError> {
    serde_json::from_slice(body).map_err(|e| PortListError::BadJson(e.to_string()))
}

/// Whether a port list is well formed and empty (anything else is [`choose_port`]'s to judge).
fn no_ports(body: &[u8]) -> bool {
    serde_json::from_slice::<PortList<serde::de::IgnoredAny>>(body)
        .is_ok_and(|l| l.ports.is_empty())
}

/// The distinct `network_id`s of a router's interface ports, in first-seen order.
fn router_networks(body: &[u8]) -> Result<Vec<String>, PortListError> {
    let list: PortList<NetworkOnly> = port_list(body)?;
    let mut nets: Vec<String> = Vec::new();
    for p in list.ports {
        if !nets.contains(&p.network_id) {
            nets.push(p.network_id);
        }
    }
    Ok(nets)
}

/// An ID that will be a header value on the next hop: visible ASCII, bounded.
fn header_safe(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Exactly one port is the instance; none or several is "not found" (with Neutron's warning).
fn choose_port(
    body: &[u8],
    nets: &str,
    filter: &PortFilter,
) -> Result<Option<Instance>, PortListError> {
    let mut list: PortList<PortOwner> = port_list(body)?;
    let port = match list.ports.len() {
        1 => list.ports.pop(),
        0 => {
            warn!("No port found in network {nets} with {}", filter.describe());
            None
        }
        n => {
            warn!(
                "{n} ports matched in network {nets} with {}; expected exactly one",
                filter.describe()
            );
            None
        }
    };
    let Some(port) = port else {
        return Ok(None);
    };
    let device_id = port.device_id.unwrap_or_default();
    if device_id.is_empty() {
        warn!(
            "The port in network {nets} with {} has no device_id",
            filter.describe()
        );
        return Ok(None);
    }
    let project_id = [port.project_id, port.tenant_id]
        .into_iter()
        .flatten()
        .find(|p| !p.is_empty())
        .ok_or(PortListError::NoProject)?;
    if !header_safe(&device_id) || !header_safe(&project_id) {
        return Err(PortListError::NotPlainId);
    }
    Ok(Some(Instance {
        instance_id: device_id,
        project_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_port_lists() {
        assert!(no_ports(br#"{"ports":[]}"#));
        assert!(!no_ports(br#"{"ports":[{"device_id":"i1"}]}"#));
        assert!(!no_ports(br#"{"ports":{}}"#));
        assert!(!no_ports(b"["));
    }

    #[test]
    fn port_choice() {
        let f = PortFilter::Ip("10.0.0.5".parse().unwrap());
        let inst = |i: &str, p: &str| {
            Some(Instance {
                instance_id: i.into(),
                project_id: p.into(),
            })
        };
        let cases: &[(&str, Result<Option<Instance>, PortListError>)] = &[
            (
                r#"{"ports":[{"device_id":"i1","project_id":"p1","tenant_id":"t1"}]}"#,
                Ok(inst("i1", "p1")),
            ),
            (
                r#"{"ports":[{"device_id":"i1","tenant_id":"t1"}]}"#,
                Ok(inst("i1", "t1")),
            ),
            (
                r#"{"ports":[{"device_id":"i1","project_id":"","tenant_id":"t1"}]}"#,
                Ok(inst("i1", "t1")),
            ),
            (
                r#"{"ports":[{"device_id":"i1","project_id":null,"tenant_id":"t1"}]}"#,
                Ok(inst("i1", "t1")),
            ),
            (r#"{"ports":[]}"#, Ok(None)),
            (
                r#"{"ports":[{"device_id":"i1","project_id":"p"},{"device_id":"i2","project_id":"p"}]}"#,
                Ok(None),
            ),
            (r#"{"ports":[{"device_id":"","project_id":"p"}]}"#, Ok(None)),
            (
                r#"{"ports":[{"device_id":"i1"}]}"#,
                Err(PortListError::NoProject),
            ),
            (
                r#"{"ports":[{"device_id":"i1\r\nX-Evil: 1","project_id":"p"}]}"#,
                Err(PortListError::NotPlainId),
            ),
        ];
        for (body, want) in cases {
            let got = choose_port(body.as_bytes(), "n1", &f);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(&g, w, "{body}"),
                (Err(e), Err(w)) => assert_eq!(&e, w, "{body}"),
                (g, w) => panic!("{body}: {g:?} vs {w:?}"),
            }
        }
    }

    #[test]
    fn unparsable_port_lists() {
        let f = PortFilter::Ip("10.0.0.5".parse().unwrap());
        for body in [r#"{"ports":{}}"#, r#"{"port":[]}"#, r#"[1"#] {
            let e = choose_port(body.as_bytes(), "n1", &f).unwrap_err();
            assert!(matches!(e, PortListError::BadJson(_)), "{body}: {e}");
            assert!(e.to_string().starts_with("not the expected JSON: "), "{e}");
        }
    }

    #[test]
    fn router_network_lists() {
        assert_eq!(
            router_networks(
                br#"{"ports":[{"network_id":"a"},{"network_id":"b"},{"network_id":"a"}]}"#
            ),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(router_networks(br#"{"ports":[]}"#), Ok(vec![]));
        assert!(router_networks(br#"{"ports":[{"id":"x"}]}"#).is_err());
    }
}
