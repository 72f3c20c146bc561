//! The one state machine a runtime drives: every socket of one event loop, for any role.
//!
//! A runtime owns the OS sockets and nothing else. It tells the [`Endpoint`] what happened on a
//! socket ([`Endpoint::handle`]), carries out the [`Action`]s it is given, and writes what
//! [`Endpoint::pending_write`] offers. Socket ids are handed out by the core (on `accept`, and in
//! [`Action::Connect`]), so the runtime needs no knowledge of which socket plays which part.
//! Nor of which socket speaks TLS: the endpoint wraps those in a session of its own
//! ([`crate::tls`]), so that `pending_write` offers ciphertext and `Input::Read` takes it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::agent::request::lookup_key;
use crate::cache::{Lookup, LookupCache};
use crate::config::{AgentConfig, Backend, EndpointConfig, Reload, Role};
use crate::http::{Method, RequestHead};
use crate::lookup::{ClientAction, ClientEvent, NeutronClient, ReqId};
use crate::metadata::path::is_token_target;
use crate::metadata::{MetaRequest, MetaResponse, MetadataService, StoreRequest};
use crate::metrics::{BackendService, CacheResult, MetricRole, Metrics, RoleMetrics};
use crate::proxy::conn::{Conn, LookupStart, Plan};
use crate::proxy::ratelimit::RateLimiter;
use crate::proxy::rewrite::{
    self, agent_fields, canonical_ip, is_forwarded_for, ns_proxy_fields, HopRules,
};
use crate::scope::{Instance, LookupKey};
use crate::socket::{Action, Input, SockId, Target};
use crate::tls::{Clocks, EofMeaning, Session, Sessions};

/// Something the application must do that is not about a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Persist a password the server accepted (it is already served from memory); the
    /// runtime hands it to whoever owns the instance files.
    Store(StoreRequest),
}

/// An idle upstream connection is closed after this, well before the agent's own 30 s idle
/// timeout, so that we rarely pick one the other end is closing.
const POOL_IDLE: Duration = Duration::from_secs(10);
/// Most idle upstream connections kept.
const POOL_MAX: usize = 64;
/// Most scrapers connected to a metrics endpoint at once.
const METRICS_MAX_CONNS: usize = 16;

/// Who a socket belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// The client side of the connection keyed by this same id.
    Client,
    /// The upstream side of the client connection with this id.
    Upstream(SockId),
    /// An idle upstream in the pool.
    Pooled,
    /// A connection of the Neutron client.
    Backend(ReqId),
}

/// The parts of an endpoint that connections share. Connections reach them through
/// `&mut Ctx` while the endpoint holds the connection itself.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) cfg: EndpointConfig,
    pub(crate) draining: bool,
    next_id: u64,
    actions: VecDeque<Action>,
    /// Application events, for [`Endpoint::poll_event`].
    events: VecDeque<Event>,
    owners: BTreeMap<SockId, Owner>,
    /// Idle upstream connections, most recently used last; each has an idle timer (`POOL_IDLE`).
    pool: Vec<SockId>,
    rate: Option<RateLimiter>,
    /// The agent's cache; waiters are client connection ids.
    cache: Option<LookupCache<SockId>>,
    neutron: Option<NeutronClient>,
    /// The server's instances and tokens.
    service: Option<MetadataService>,
    /// The Neutron client's connections and the sockets carrying them.
    backend_socks: BTreeMap<ReqId, SockId>,
    /// Sockets pooled during the current mutation, whose idle timers are still to be armed.
    released: Vec<SockId>,
    /// The TLS sessions of the sockets that speak TLS.
    tls: Sessions,
    /// The wall clocks rustls reads, moved with every input's `now` (see [`crate::tls`]).
    clocks: Clocks,
    /// The process's counters and the role this endpoint counts as.
    metrics: Option<(Arc<Metrics>, MetricRole)>,
    /// The Neutron client's [`NeutronClient::stats`] already added to the metrics.
    backend_counted: (u64, u64),
}

impl Ctx {
    /// Updates this endpoint's counters, if it keeps any.
    pub(crate) fn metric(&self, update: impl FnOnce(&RoleMetrics)) {
        if let Some((metrics, role)) = &self.metrics {
            update(metrics.role(*role));
        }
    }

    fn new_id(&mut self) -> SockId {
        self.next_id += 1;
        SockId(self.next_id)
    }

    fn upstream_target(&self) -> Target {
        match &self.cfg.role {
            Role::NsProxy(c) => c.upstream.clone(),
            Role::Agent(c) => c.metadata.clone(),
            // Neither connects upstream; an unreachable path makes that visible.
            Role::Server(_) | Role::Metrics(_) => Target::Unix(PathBuf::new()),
        }
    }

    /// What to do with a request head, per role.
    pub(crate) fn plan(&mut self, now: Instant, peer: Option<IpAddr>, head: &RequestHead) -> Plan {
        let c = match &self.cfg.role {
            Role::NsProxy(c) => c,
            Role::Agent(_) => {
                return match lookup_key(&head.headers) {
                    Ok(key) => Plan::Lookup(key),
                    Err(why) => Plan::Refuse(400, why),
                }
            }
            Role::Server(_) | Role::Metrics(_) => return Plan::Serve,
        };
        let Some(ip) = peer else {
            return Plan::Refuse(400, "No client address.".to_owned());
        };
        if let Some(rate) = self.rate.as_mut() {
            if !rate.allow(now, ip) {
                return Plan::Refuse(429, "Too many requests.".to_owned());
            }
        }
        // `head.target` is normalised (see `http::normalize_target`), as the server sees it.
        if head.method == Method::Put
            && is_token_target(&head.target)
            && head.headers.iter().any(|(name, _)| is_forwarded_for(name))
        {
            // An IMDSv2 token request that already passed through an HTTP proxy inside the
            // instance: AWS refuses these so a token cannot leak beyond the instance.
            return Plan::Refuse(
                403,
                "Token requests through a proxy are refused.".to_owned(),
            );
        }
        Plan::Forward(ns_proxy_fields(ip, &c.scope))
    }

    /// What this role does to the client's header fields on the way upstream.
    pub(crate) fn hop_rules(&self) -> &'static HopRules {
        match &self.cfg.role {
            Role::Agent(_) => &rewrite::AGENT,
            _ => &rewrite::NS_PROXY,
        }
    }

    /// Starts resolving `key` for the client connection `waiter` (agent role).
    pub(crate) fn lookup(
        &mut self,
        now: Instant,
        key: LookupKey,
        waiter: SockId,
        skip_cache: bool,
    ) -> LookupStart {
        let Role::Agent(agent) = &self.cfg.role else {
            return LookupStart::Done(None, false);
        };
        if let Backend::Static(map) = &agent.backend {
            return LookupStart::Done(map.resolve(&key), false);
        }
        let (Some(cache), Some(client)) = (self.cache.as_mut(), self.neutron.as_mut()) else {
            return LookupStart::Done(None, false);
        };
        if skip_cache {
            cache.invalidate(&key);
        }
        let (start, counted) = match cache.lookup(now, key, waiter) {
            Lookup::Hit(found) => (
                LookupStart::Done(Some(found.clone()), true),
                CacheResult::Hit,
            ),
            Lookup::Negative => (LookupStart::Done(None, true), CacheResult::Negative),
            Lookup::Query => {
                client.query(now, key);
                (LookupStart::Pending, CacheResult::Miss)
            }
            Lookup::Queued => (LookupStart::Pending, CacheResult::Coalesced),
        };
        self.metric(|m| m.cache(counted));
        start
    }

    /// The answer of the server (or metrics) role to a complete request.
    pub(crate) fn serve(
        &mut self,
        now: Instant,
        peer: Option<IpAddr>,
        head: &RequestHead,
        body: &[u8],
    ) -> MetaResponse {
        if let Role::Metrics(metrics) = &self.cfg.role {
            return crate::metrics::answer(metrics, head);
        }
        let req = MetaRequest {
            method: head.method,
            target: &head.target,
            headers: &head.headers,
            body,
            peer,
        };
        let Some(service) = self.service.as_mut() else {
            // Only a server endpoint plans to serve, and it always has a service.
            return MetaResponse {
                status: 404,
                content_type: "text/plain",
                body: b"Not found.".to_vec(),
                headers: Vec::new(),
                store: None,
            };
        };
        let resp = service.respond(now, &req);
        if let Some(store) = resp.store.clone() {
            self.events.push_back(Event::Store(store));
        }
        resp
    }

    /// The fields the agent adds for a resolved instance (DESIGN.md, header contract).
    pub(crate) fn identity_fields(
        &self,
        ip: IpAddr,
        inst: &Instance,
    ) -> Vec<(&'static str, Vec<u8>)> {
        match &self.cfg.role {
            Role::Agent(agent) => agent_fields(&agent.signer, ip, inst),
            _ => Vec::new(),
        }
    }

    /// An upstream connection for the client `owner`: a pooled one (`true`) or a new one.
    pub(crate) fn acquire_upstream(&mut self, owner: SockId) -> (SockId, bool) {
        if let Some(sock) = self.pool.pop() {
            self.owners.insert(sock, Owner::Upstream(owner));
            return (sock, true);
        }
        (self.connect_upstream(owner), false)
    }

    /// A new upstream connection for the client `owner`.
    pub(crate) fn connect_upstream(&mut self, owner: SockId) -> SockId {
        let sock = self.new_id();
        self.owners.insert(sock, Owner::Upstream(owner));
        let target = self.upstream_target();
        if let Some(tls) = &self.cfg.tls.upstream {
            self.tls.insert(sock, Session::client(tls));
        }
        self.actions.push_back(Action::Connect { sock, target });
        sock
    }

    /// The exchange on `sock` is over: keep it for the next one if it is `clean`.
    pub(crate) fn release_upstream(&mut self, sock: SockId, clean: bool) {
        if clean && !self.draining {
            self.owners.insert(sock, Owner::Pooled);
            self.pool.push(sock);
            self.released.push(sock);
        } else {
            self.close(sock);
        }
    }

    pub(crate) fn close(&mut self, sock: SockId) {
        self.tls.remove(&sock);
        if self.owners.remove(&sock).is_some() {
            self.actions.push_back(Action::Close(sock));
        }
    }

    /// Half-closes `sock` once its pending bytes are out; a TLS socket says `close_notify`
    /// first (its owner's plaintext is all in the session by then: see `Endpoint::feed_tls`).
    pub(crate) fn shutdown(&mut self, sock: SockId) {
        if let Some(session) = self.tls.get_mut(&sock) {
            session.close_notify();
        }
        self.actions.push_back(Action::Shutdown(sock));
    }
}

/// Every connection of one event loop, for one role. See the crate docs for the drive loop.
#[derive(Debug)]
pub struct Endpoint {
    ctx: Ctx,
    /// Client connections, keyed by their client socket.
    conns: BTreeMap<SockId, Conn>,
    /// Deadlines: (when, connection or pooled socket).
    timers: BTreeSet<(Instant, SockId)>,
    deadline_of: BTreeMap<SockId, Instant>,
    /// Connections that count against the limits (not yet closing), overall and per IP.
    active: usize,
    per_ip: BTreeMap<IpAddr, usize>,
    /// Sockets to offer [`Action::Wake`] for, after the queued actions.
    wakes: BTreeSet<SockId>,
}

impl Endpoint {
    /// A fresh endpoint with no sockets.
    pub fn new(now: Instant, cfg: EndpointConfig) -> Self {
        let service = match &cfg.role {
            Role::Server(c) => Some(MetadataService::new(c.clone())),
            _ => None,
        };
        let (rate, cache, neutron) = match &cfg.role {
            Role::NsProxy(c) => (c.rate_limit.map(RateLimiter::new), None, None),
            Role::Server(_) | Role::Metrics(_) => (None, None, None),
            Role::Agent(a) => (
                None,
                Some(LookupCache::new(
                    a.cache_capacity,
                    a.cache_ttl,
                    a.negative_ttl,
                )),
                match &a.backend {
                    Backend::Neutron(n) => Some(NeutronClient::new(n.clone())),
                    Backend::Static(_) => None,
                },
            ),
        };
        let backend_tls = match &cfg.role {
            Role::Agent(AgentConfig {
                backend: Backend::Neutron(n),
                ..
            }) => n.tls.as_ref(),
            _ => None,
        };
        let clocks = Clocks::new(&cfg.tls, backend_tls);
        clocks.advance(now);
        let role = match &cfg.role {
            Role::NsProxy(_) => Some(MetricRole::NsProxy),
            Role::Agent(_) => Some(MetricRole::Agent),
            Role::Server(_) => Some(MetricRole::Server),
            // Scrapes are not counted.
            Role::Metrics(_) => None,
        };
        let metrics = cfg.metrics.clone().zip(role);
        if let Some((metrics, role)) = &metrics {
            metrics.enable(*role);
        }
        Endpoint {
            ctx: Ctx {
                cfg,
                draining: false,
                next_id: 0,
                actions: VecDeque::new(),
                events: VecDeque::new(),
                owners: BTreeMap::new(),
                pool: Vec::new(),
                rate,
                cache,
                neutron,
                service,
                backend_socks: BTreeMap::new(),
                released: Vec::new(),
                tls: Sessions::new(),
                clocks,
                metrics,
                backend_counted: (0, 0),
            },
            conns: BTreeMap::new(),
            timers: BTreeSet::new(),
            deadline_of: BTreeMap::new(),
            active: 0,
            per_ip: BTreeMap::new(),
            wakes: BTreeSet::new(),
        }
    }

    fn limits(&self) -> (usize, usize) {
        match &self.ctx.cfg.role {
            Role::Metrics(_) => (METRICS_MAX_CONNS, METRICS_MAX_CONNS),
            _ => (
                self.ctx.cfg.conns.max_conns,
                self.ctx.cfg.conns.max_conns_per_ip,
            ),
        }
    }

    /// Swaps in new data (SIGHUP): takes effect for the next request.
    pub fn reload(&mut self, _now: Instant, reload: Reload) {
        match (reload, &mut self.ctx.cfg.role) {
            (Reload::StaticMap(map), Role::Agent(agent))
                if matches!(agent.backend, Backend::Static(_)) =>
            {
                log::info!("static map reloaded: {} ports", map.ports());
                agent.backend = Backend::Static(map);
            }
            (Reload::StaticMap(_), _) => {
                log::warn!("ignoring a static map: this endpoint has no static backend")
            }
            (Reload::Instances(instances, today), _) => match self.ctx.service.as_mut() {
                Some(service) => {
                    service.set_instances(instances);
                    service.set_today(today);
                    log::info!("serving {} instances", service.instance_count());
                }
                None => log::warn!("ignoring instances: this endpoint is not a metadata server"),
            },
        }
    }

    /// A listener accepted a connection from `peer` (`None` for Unix-socket clients).
    /// Returns the id the socket goes by; the core may answer and close it at once (limits).
    pub fn accept(&mut self, now: Instant, peer: Option<SocketAddr>) -> SockId {
        self.ctx.clocks.advance(now);
        let sock = self.ctx.new_id();
        let ip = peer.map(|p| canonical_ip(p.ip()));
        self.ctx.owners.insert(sock, Owner::Client);
        if let Some(tls) = &self.ctx.cfg.tls.accept {
            self.ctx.tls.insert(sock, Session::server(tls));
        }
        let mut conn = Conn::new(now, sock, ip, &self.ctx);
        self.ctx.metric(RoleMetrics::connection_opened);
        let (max, max_per_ip) = self.limits();
        let from_ip = ip.map_or(0, |ip| self.per_ip.get(&ip).copied().unwrap_or(0));
        if self.ctx.draining {
            conn.refuse(now, 503, "Shutting down.", &mut self.ctx);
        } else if self.active >= max {
            conn.refuse(now, 503, "Too many connections.", &mut self.ctx);
        } else if from_ip >= max_per_ip {
            conn.refuse(
                now,
                503,
                "Too many connections from this address.",
                &mut self.ctx,
            );
        } else {
            conn.counted = true;
            self.active += 1;
            if let Some(ip) = ip {
                *self.per_ip.entry(ip).or_insert(0) += 1;
            }
        }
        self.conns.insert(sock, conn);
        self.after(now, sock, &[]);
        self.flush_tls(now);
        sock
    }

    /// Something happened on `sock`. Ignored for unknown (already closed) ids.
    pub fn handle(&mut self, now: Instant, sock: SockId, input: Input<'_>) {
        self.ctx.clocks.advance(now);
        if self.ctx.tls.contains_key(&sock) {
            self.handle_tls(now, sock, input);
        } else {
            self.dispatch(now, sock, input);
        }
        self.pump_backend(now);
        self.flush_tls(now);
    }

    /// Hands an input to the owner of `sock`.
    fn dispatch(&mut self, now: Instant, sock: SockId, input: Input<'_>) {
        match self.ctx.owners.get(&sock).copied() {
            Some(Owner::Client) => self.with_conn(now, sock, |c, ctx| c.on_client(now, input, ctx)),
            Some(Owner::Upstream(key)) => {
                self.with_conn(now, key, |c, ctx| c.on_upstream(now, input, ctx))
            }
            // An idle upstream has nothing to say: any byte, EOF or error ends it.
            Some(Owner::Pooled) => {
                self.ctx.pool.retain(|s| *s != sock);
                self.ctx.close(sock);
                self.set_deadline(sock, None);
            }
            Some(Owner::Backend(req)) => {
                if let Some(client) = self.ctx.neutron.as_mut() {
                    client.handle(now, req, input);
                }
            }
            None => {}
        }
    }

    /// An input on a TLS socket: the session takes the bytes, the owner hears what they
    /// carried (see [`crate::tls`] for what it is told when).
    fn handle_tls(&mut self, now: Instant, sock: SockId, input: Input<'_>) {
        let Some(session) = self.ctx.tls.get_mut(&sock) else {
            return;
        };
        match input {
            Input::Connected => match session.failure().map(str::to_owned) {
                Some(why) => self.tls_failed(now, sock, why),
                // The ClientHello is waiting; the owner hears `Connected` after the handshake.
                None => {
                    self.wakes.insert(sock);
                }
            },
            Input::Read(data) => {
                let got = session.read(now, data);
                if !session.pending().is_empty() || got.established {
                    self.wakes.insert(sock);
                }
                if got.established && session.is_client() {
                    self.dispatch(now, sock, Input::Connected);
                }
                if !got.plain.is_empty() {
                    self.dispatch(now, sock, Input::Read(&got.plain));
                }
                match got.failed {
                    Some(why) => self.tls_failed(now, sock, why),
                    None if got.closed => self.dispatch(now, sock, Input::Eof),
                    None => {}
                }
            }
            Input::Eof => match session.eof() {
                EofMeaning::Eof => self.dispatch(now, sock, Input::Eof),
                EofMeaning::Nothing => {}
                EofMeaning::Failed(why) => self.tls_failed(now, sock, why),
            },
            Input::ConnectFailed(_) | Input::Error => self.dispatch(now, sock, input),
        }
    }

    /// The TLS session of `sock` failed: its owner learns why. An upstream's client gets 503,
    /// a Neutron exchange fails with the reason, a pooled socket goes. An accepted client's
    /// socket sends the session's alert and is shut down; its connection is not told (it hears
    /// the client's EOF, or its own timeout ends it).
    fn tls_failed(&mut self, now: Instant, sock: SockId, why: String) {
        match self.ctx.owners.get(&sock).copied() {
            Some(Owner::Upstream(key)) => {
                self.with_conn(now, key, |c, ctx| c.on_upstream_tls_failure(now, &why, ctx));
            }
            Some(Owner::Backend(req)) => {
                if let Some(client) = self.ctx.neutron.as_mut() {
                    client.fail(req, &why);
                }
            }
            Some(Owner::Pooled) => {
                log::debug!("idle upstream connection closed: {why}");
                self.ctx.pool.retain(|s| *s != sock);
                self.ctx.close(sock);
                self.set_deadline(sock, None);
            }
            Some(Owner::Client) => {
                let peer = self.conns.get(&sock).and_then(Conn::peer);
                let peer = peer.map_or_else(|| "unix-peer".to_owned(), |p| p.to_string());
                log::info!("{peer} {why}");
                self.ctx.shutdown(sock);
                self.wakes.insert(sock);
            }
            None => {}
        }
    }

    /// Moves the plaintext the owner of TLS socket `sock` has for it into the session, as far
    /// as the session takes it (not during the handshake, not past [`crate::tls::HIGH_WATER`]),
    /// and tells the owner how much of it is on the wire by now: the owner's bytes count as
    /// written only once their ciphertext is, so a connection that closes after its last
    /// bytes were "written" loses none. Returns whether anything moved.
    fn feed_tls(&mut self, now: Instant, sock: SockId) -> bool {
        let mut moved = false;
        loop {
            let owner = self.ctx.owners.get(&sock).copied();
            let Some(session) = self.ctx.tls.get_mut(&sock) else {
                return moved;
            };
            let plain: &[u8] = match owner {
                Some(Owner::Client) => self.conns.get(&sock).map_or(&[], |c| c.pending_write(sock)),
                Some(Owner::Upstream(key)) => {
                    self.conns.get(&key).map_or(&[], |c| c.pending_write(sock))
                }
                Some(Owner::Backend(req)) => self
                    .ctx
                    .neutron
                    .as_ref()
                    .map_or(&[], |c| c.pending_write(req)),
                Some(Owner::Pooled) | None => &[],
            };
            let took = session.write(plain);
            let n = session.take_acked();
            if !session.pending().is_empty() {
                self.wakes.insert(sock);
            }
            if !took && n == 0 {
                return moved;
            }
            moved = true;
            if n == 0 {
                continue;
            }
            match owner {
                Some(Owner::Backend(req)) => {
                    if let Some(client) = self.ctx.neutron.as_mut() {
                        client.consume_write(req, n);
                    }
                }
                Some(Owner::Upstream(key)) => {
                    self.with_conn(now, key, |c, ctx| c.consume_write(now, sock, n, ctx));
                }
                _ => self.with_conn(now, sock, |c, ctx| c.consume_write(now, sock, n, ctx)),
            }
        }
    }

    /// Feeds the TLS sockets that may have new plaintext (those with a wake-up pending) until
    /// nothing moves. Runs at the end of every mutation.
    fn flush_tls(&mut self, now: Instant) {
        if self.ctx.tls.is_empty() {
            return;
        }
        loop {
            let socks: Vec<SockId> = (self.wakes.iter())
                .filter(|s| self.ctx.tls.contains_key(s))
                .copied()
                .collect();
            let mut moved = false;
            for sock in socks {
                moved |= self.feed_tls(now, sock);
            }
            if !moved {
                return;
            }
        }
    }

    /// Carries out what the Neutron client asks for and hands its answers to the waiting
    /// connections (which may start new queries: loop until quiet).
    fn pump_backend(&mut self, now: Instant) {
        loop {
            self.count_backend();
            let Some(client) = self.ctx.neutron.as_mut() else {
                return;
            };
            let actions: Vec<ClientAction> = std::iter::from_fn(|| client.poll_action()).collect();
            for a in actions {
                match a {
                    ClientAction::Connect(req, target) => {
                        let sock = self.ctx.new_id();
                        self.ctx.owners.insert(sock, Owner::Backend(req));
                        self.ctx.backend_socks.insert(req, sock);
                        let tls = self.ctx.neutron.as_ref().and_then(|c| c.tls_target(req));
                        if let Some(tls) = tls {
                            self.ctx.tls.insert(sock, Session::client(tls));
                        }
                        self.ctx.actions.push_back(Action::Connect { sock, target });
                    }
                    ClientAction::Close(req) => {
                        if let Some(sock) = self.ctx.backend_socks.remove(&req) {
                            self.ctx.close(sock);
                        }
                    }
                }
            }
            let Some(client) = self.ctx.neutron.as_mut() else {
                return;
            };
            for (&req, &sock) in &self.ctx.backend_socks {
                if !client.pending_write(req).is_empty() || client.wants_read(req) {
                    self.wakes.insert(sock);
                }
            }
            let Some(event) = client.poll_event() else {
                return;
            };
            let (key, result) = match event {
                ClientEvent::Answer(key, found) => (key, Ok(found)),
                ClientEvent::Failed(key, why) => {
                    self.ctx.metric(RoleMetrics::backend_failure);
                    (key, Err(why))
                }
            };
            let Some(cache) = self.ctx.cache.as_mut() else {
                return;
            };
            let waiters = match &result {
                Ok(found) => cache.complete(now, key, found.clone()),
                Err(_) => cache.fail(&key),
            };
            for w in waiters {
                let r = result.clone();
                self.with_conn(now, w, |c, ctx| c.on_lookup(now, key, r, ctx));
            }
        }
    }

    /// Adds the Keystone and Neutron requests the client started since the last call to the
    /// metrics.
    fn count_backend(&mut self) {
        let Some(stats) = self.ctx.neutron.as_ref().map(NeutronClient::stats) else {
            return;
        };
        let (auths, queries) = self.ctx.backend_counted;
        if stats == (auths, queries) {
            return;
        }
        self.ctx.backend_counted = stats;
        self.ctx.metric(|m| {
            m.backend_requests(BackendService::Keystone, stats.0 - auths);
            m.backend_requests(BackendService::Neutron, stats.1 - queries);
        });
    }

    /// Time has reached (or passed) a deadline from [`Endpoint::poll_timeout`]. Fine to call
    /// early or twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ctx.clocks.advance(now);
        while let Some(&(when, key)) = self.timers.first() {
            if when > now {
                break;
            }
            self.timers.pop_first();
            self.deadline_of.remove(&key);
            if self.conns.contains_key(&key) {
                self.with_conn(now, key, |c, ctx| c.on_timeout(now, ctx));
            } else if self.ctx.owners.get(&key) == Some(&Owner::Pooled) {
                self.ctx.pool.retain(|s| *s != key);
                self.ctx.close(key);
            }
        }
        if let Some(client) = self.ctx.neutron.as_mut() {
            if client.poll_timeout().is_some_and(|t| t <= now) {
                client.handle_timeout(now);
            }
        }
        self.pump_backend(now);
        self.flush_tls(now);
    }

    /// Runs `f` on one connection and settles what it changed: wake-ups, timers, closing.
    fn with_conn(&mut self, now: Instant, key: SockId, f: impl FnOnce(&mut Conn, &mut Ctx)) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let before = [Some(key), conn.upstream_sock()].map(|s| {
            s.map(|s| {
                (
                    s,
                    (conn.pending_write(s).len(), conn.wants_read(s, &self.ctx)),
                )
            })
        });
        f(conn, &mut self.ctx);
        self.after(now, key, &before);
    }

    /// After a connection changed: wake sockets with new output or renewed read interest,
    /// re-arm its timer, drop it once closed. `before` holds, per socket of the connection,
    /// its pending output length and read interest before the change.
    fn after(&mut self, now: Instant, key: SockId, before: &[Option<(SockId, (usize, bool))>]) {
        for sock in std::mem::take(&mut self.ctx.released) {
            // It may have been taken again by a pipelined request in the same mutation.
            if self.ctx.owners.get(&sock) != Some(&Owner::Pooled) {
                continue;
            }
            self.set_deadline(sock, Some(now + POOL_IDLE));
            if self.ctx.pool.len() > POOL_MAX {
                let old = self.ctx.pool.remove(0);
                self.ctx.close(old);
                self.set_deadline(old, None);
            }
        }
        self.uncount(key);
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        if conn.is_closed() {
            self.conns.remove(&key);
            self.ctx.metric(RoleMetrics::connection_closed);
            self.set_deadline(key, None);
            return;
        }
        let before = before.iter().flatten().copied();
        let new_socks = [Some(key), conn.upstream_sock()]
            .into_iter()
            .flatten()
            .filter(|s| !before.clone().any(|(b, _)| b == *s))
            .map(|s| (s, (0, false)));
        for (s, (len, readable)) in before.clone().chain(new_socks) {
            if !self.ctx.owners.contains_key(&s) {
                continue;
            }
            let now_len = conn.pending_write(s).len();
            let now_readable = conn.wants_read(s, &self.ctx);
            if now_len > len || (now_readable && !readable) {
                self.wakes.insert(s);
            }
        }
        let d = conn.deadline();
        self.arm_conn_timer(key, d);
    }

    /// A connection's timer need only fire no later than its deadline: `on_timeout` ignores
    /// an early call, and the timer is armed again after it. So when the deadline moved later
    /// (every read and write of a busy connection pushes it on), the earlier entry stays,
    /// rather than moving in the timer map on every event.
    fn arm_conn_timer(&mut self, key: SockId, when: Option<Instant>) {
        if let (Some(when), Some(armed)) = (when, self.deadline_of.get(&key)) {
            if *armed <= when {
                return;
            }
        }
        self.set_deadline(key, when);
    }

    /// A connection that is closing no longer counts against the limits: a client that
    /// reconnects at once (one request per connection) must not find its old connection,
    /// still flushing or lingering, standing in its way.
    fn uncount(&mut self, key: SockId) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if !conn.counted || !conn.is_finishing() {
            return;
        }
        conn.counted = false;
        self.active -= 1;
        if let Some(ip) = conn.peer() {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }

    fn set_deadline(&mut self, key: SockId, when: Option<Instant>) {
        let old = self.deadline_of.get(&key).copied();
        if old == when {
            return;
        }
        if let Some(old) = old {
            self.timers.remove(&(old, key));
            self.deadline_of.remove(&key);
        }
        if let Some(when) = when {
            self.timers.insert((when, key));
            self.deadline_of.insert(key, when);
        }
    }

    /// The next action. Call after `new`, `accept`, `handle`, `handle_timeout`,
    /// `consume_write` and `begin_drain`, until it returns `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(a) = self.ctx.actions.pop_front() {
            if let Action::Close(s) = &a {
                self.wakes.remove(s);
            }
            return Some(a);
        }
        self.wakes.pop_first().map(Action::Wake)
    }

    /// The next application event (a password to store). Drain alongside
    /// [`Endpoint::poll_action`].
    pub fn poll_event(&mut self) -> Option<Event> {
        self.ctx.events.pop_front()
    }

    fn conn_of(&self, sock: SockId) -> Option<&Conn> {
        match self.ctx.owners.get(&sock)? {
            Owner::Client => self.conns.get(&sock),
            Owner::Upstream(key) => self.conns.get(key),
            Owner::Pooled | Owner::Backend(_) => None,
        }
    }

    /// Bytes waiting to be written on `sock` (empty for unknown ids): ciphertext for a TLS
    /// socket.
    pub fn pending_write(&self, sock: SockId) -> &[u8] {
        if let Some(session) = self.ctx.tls.get(&sock) {
            return session.pending();
        }
        if let (Some(Owner::Backend(req)), Some(client)) =
            (self.ctx.owners.get(&sock), self.ctx.neutron.as_ref())
        {
            return client.pending_write(*req);
        }
        self.conn_of(sock).map_or(&[], |c| c.pending_write(sock))
    }

    /// The runtime wrote `n` bytes of [`Endpoint::pending_write`].
    pub fn consume_write(&mut self, now: Instant, sock: SockId, n: usize) {
        if let Some(session) = self.ctx.tls.get_mut(&sock) {
            session.consume(n);
            self.feed_tls(now, sock);
            self.pump_backend(now);
            self.flush_tls(now);
            return;
        }
        let key = match self.ctx.owners.get(&sock) {
            Some(Owner::Client) => sock,
            Some(Owner::Upstream(key)) => *key,
            Some(Owner::Backend(req)) => {
                if let Some(client) = self.ctx.neutron.as_mut() {
                    client.consume_write(*req, n);
                }
                self.pump_backend(now);
                return;
            }
            _ => return,
        };
        self.with_conn(now, key, |c, ctx| c.consume_write(now, sock, n, ctx));
        self.flush_tls(now);
    }

    /// Whether the core wants bytes from `sock` now (false = back-pressure or finished).
    pub fn wants_read(&self, sock: SockId) -> bool {
        if self.ctx.tls.get(&sock).is_some_and(Session::handshaking) {
            return true;
        }
        match self.ctx.owners.get(&sock) {
            Some(Owner::Pooled) => true,
            Some(Owner::Backend(req)) => self
                .ctx
                .neutron
                .as_ref()
                .is_some_and(|c| c.wants_read(*req)),
            Some(_) => self
                .conn_of(sock)
                .is_some_and(|c| c.wants_read(sock, &self.ctx)),
            None => false,
        }
    }

    /// The earliest deadline; call after draining actions, before blocking.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.timers.first().map(|(when, _)| *when);
        let backend = self
            .ctx
            .neutron
            .as_ref()
            .and_then(NeutronClient::poll_timeout);
        match (conns, backend) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Graceful shutdown: idle connections close now, busy ones after their current exchange.
    /// The runtime stops accepting and waits for [`Endpoint::is_drained`] (or its own deadline).
    pub fn begin_drain(&mut self, now: Instant) {
        self.ctx.draining = true;
        for sock in std::mem::take(&mut self.ctx.pool) {
            self.ctx.close(sock);
            self.set_deadline(sock, None);
        }
        let keys: Vec<SockId> = self.conns.keys().copied().collect();
        for key in keys {
            self.with_conn(now, key, |c, ctx| c.drain(now, ctx));
        }
        self.flush_tls(now);
    }

    /// No client connection is left.
    pub fn is_drained(&self) -> bool {
        self.conns.is_empty()
    }

    /// Open client connections (for metrics and tests).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

/// An endpoint that stops with connections still open (a drain that timed out) no longer
/// holds them: the open-connections gauge, shared with other loops, must say so.
impl Drop for Endpoint {
    fn drop(&mut self) {
        for _ in 0..self.conns.len() {
            self.ctx.metric(RoleMetrics::connection_closed);
        }
    }
}
