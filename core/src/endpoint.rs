//! The one state machine a runtime drives: every socket of one event loop, for any role.
//!
//! A runtime owns the OS sockets and nothing else. It tells the [`Endpoint`] what happened on a
//! socket ([`Endpoint::handle`]), carries out the [`Action`]s it is given, and writes what
//! [`Endpoint::pending_write`] offers. Socket ids are handed out by the core (on `accept`, and in
//! [`Action::Connect`]), so the runtime needs no knowledge of which socket plays which part.
//! Nor of which socket speaks TLS: the endpoint wraps those in a session of its own
//! ([`crate::tls`]), so that `pending_write` offers ciphertext and `Input::Read` takes it.
//!
//! Inside, the endpoint is a router (after quinn-proto's `Endpoint`): it owns the sockets'
//! owners, the upstream pool, the per-IP accounting, the timers and one output queue; each
//! client connection (`proxy::conn`) does HTTP for any role and asks for decisions as
//! outputs, which the endpoint answers from the role's policy (`policy`) or its pool.

mod admin;
mod admission;
#[cfg(test)]
mod failover_tests;
mod probes;
#[cfg(test)]
mod tests;
mod timers;
mod tls;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use admission::Admission;
use timers::Timers;

use crate::config::{EndpointConfig, Reload, Resilience};
use crate::http::Method;
use crate::listener::{ListenerId, ScopedListener};
use crate::lookup::{ClientAction, ReqId};
use crate::metrics::{Meter, Metrics, ResponseCacheEvent, RoleMetrics};
use crate::policy::{self, Policy};
use crate::proxy::conn::{Conn, Settings};
use crate::proxy::decision::{Output, Route};
use crate::proxy::ratelimit::RateLimiter;
use crate::scope::{canonical_ip, LookupKey};
use crate::socket::{Action, ConnectError, Event, Input, SockId, Target};
use crate::tls::shuttle::Shuttle;
use crate::tls::{ServerTls, TlsTarget};
use crate::upstream::{Probe, ServerSpec, Servers};

/// An idle upstream connection is closed after this, well before the agent's own 30 s idle
/// timeout, so that we rarely pick one the other end is closing.
const POOL_IDLE: Duration = Duration::from_secs(10);
/// Most idle upstream connections kept, per server.
const POOL_MAX: usize = 64;

/// Who a socket belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// The client side of the connection keyed by this same id.
    Client,
    /// The upstream side of the client connection with this id.
    Upstream(SockId),
    /// An idle upstream in the pool.
    Pooled,
    /// A connection of the policy's lookup backend.
    Backend(ReqId),
    /// An active health probe ([`crate::upstream`]).
    Probe,
}

/// Every connection of one event loop, for one role. See the crate docs for the drive loop.
#[derive(Debug)]
pub struct Endpoint {
    settings: Settings,
    policy: Box<dyn Policy>,
    meter: Meter,
    accept_tls: Option<ServerTls>,
    upstream_tls: Option<TlsTarget>,
    /// The TLS sessions of the sockets that speak TLS.
    tls: Shuttle,
    draining: bool,
    next_id: u64,
    owners: BTreeMap<SockId, Owner>,
    /// Client connections, keyed by their client socket.
    conns: BTreeMap<SockId, Conn>,
    /// The servers forwarded to, each with its pool of idle connections (each with an idle
    /// timer).
    servers: Servers,
    /// The server of every upstream socket, busy or pooled.
    server_of: BTreeMap<SockId, usize>,
    /// Health probes in flight, by socket.
    probes: BTreeMap<SockId, Probe>,
    /// The backend's connections and the sockets carrying them.
    backend_socks: BTreeMap<ReqId, SockId>,
    timers: Timers,
    admission: Admission,
    actions: VecDeque<Action>,
    /// Sockets to shut down once their last bytes (a TLS alert, `close_notify`) are written.
    shut_after_flush: BTreeSet<SockId>,
    /// Sockets to offer [`Action::Wake`] for, after the queued actions.
    wakes: BTreeSet<SockId>,
    /// The scoped listeners registered with [`Endpoint::add_listener`].
    listeners: BTreeMap<ListenerId, Scoped>,
    /// The admin listener's id and the counters it serves (`admin`).
    admin: Option<(ListenerId, Arc<Metrics>)>,
}

/// One scoped listener: its settings and its rate limiter.
#[derive(Debug)]
struct Scoped {
    cfg: ScopedListener,
    rate: Option<RateLimiter>,
}

impl Endpoint {
    /// A fresh endpoint with no sockets.
    pub fn new(now: Instant, cfg: EndpointConfig) -> Self {
        let meter = Meter::new(cfg.metrics.clone(), Some(policy::metric_role(&cfg.role)));
        let policy = policy::for_role(now, &cfg.role, meter.clone());
        let (specs, resilience) = policy.servers().unwrap_or_else(|| {
            let one = policy.upstream().cloned();
            let one = one.map(|t| {
                let name = match &t {
                    Target::Tcp(addr) => addr.to_string(),
                    Target::Unix(path) => path.display().to_string(),
                };
                ServerSpec::plain(t, name)
            });
            (one.into_iter().collect(), Resilience::default())
        });
        let several = specs.len() > 1;
        let servers = Servers::new(now, specs, resilience.probe_interval, |name| {
            several.then(|| meter.server(name)).flatten()
        });
        let admin = cfg
            .admin
            .map(|id| (id, cfg.metrics.clone().unwrap_or_default()));
        Endpoint {
            settings: Settings {
                limits: cfg.limits,
                timeouts: cfg.timeouts,
                quiet: policy.quiet(),
                attempts: servers.len().max(1),
                deadline: resilience.request_deadline,
            },
            admission: Admission::new(policy.conn_limits(cfg.conns)),
            tls: Shuttle::new(now, &cfg.tls, policy::backend_tls(&cfg.role)),
            policy,
            meter,
            accept_tls: cfg.tls.accept,
            upstream_tls: cfg.tls.upstream,
            draining: false,
            next_id: 0,
            owners: BTreeMap::new(),
            conns: BTreeMap::new(),
            servers,
            server_of: BTreeMap::new(),
            probes: BTreeMap::new(),
            backend_socks: BTreeMap::new(),
            timers: Timers::default(),
            actions: VecDeque::new(),
            shut_after_flush: BTreeSet::new(),
            wakes: BTreeSet::new(),
            listeners: BTreeMap::new(),
            admin,
        }
    }

    fn new_id(&mut self) -> SockId {
        self.next_id += 1;
        SockId(self.next_id)
    }

    /// Swaps in new data (SIGHUP): takes effect for the next request (the connection limits
    /// from the next accept; the connections open are never closed by a lower one).
    pub fn reload(&mut self, now: Instant, reload: Reload) {
        match &reload {
            Reload::Agent(r) => {
                (self.settings.limits, self.settings.timeouts) = (r.limits, r.timeouts);
                (self.admission).set_limits(self.policy.conn_limits(r.conns));
                if let Some((specs, resilience)) = &r.servers {
                    self.replace_servers(now, specs.clone(), *resilience);
                }
            }
            Reload::Server(r) => {
                (self.settings.limits, self.settings.timeouts) = (r.limits, r.timeouts)
            }
            Reload::Instances(..) => {}
        }
        self.policy.reload_at(now, reload);
    }

    /// Swaps the metadata servers (see [`crate::config::AgentReload::servers`]): the idle
    /// connections to a retired server close now, the busy ones once their exchange is done.
    fn replace_servers(&mut self, now: Instant, specs: Vec<ServerSpec>, resilience: Resilience) {
        let several = specs.len() > 1;
        let meter = self.meter.clone();
        let idle = (self.servers).replace(now, specs, resilience.probe_interval, |name| {
            several.then(|| meter.server(name)).flatten()
        });
        for sock in idle {
            self.drop_pooled(sock);
        }
        self.settings.attempts = self.servers.len().max(1);
        self.settings.deadline = resilience.request_deadline;
    }

    /// A listener accepted a connection from `peer` (`None` for Unix-socket clients).
    /// Returns the id the socket goes by; the core may answer and close it at once (limits).
    pub fn accept(&mut self, now: Instant, peer: Option<SocketAddr>) -> SockId {
        self.accept_from(now, peer, None)
    }

    /// Registers (or, for a known id, updates) a scoped listener: connections the runtime
    /// reports through [`Endpoint::accept_on`] with this id are for `cfg.scope`. Queues
    /// nothing. An update keeps the rate limiter's counts when the limit is unchanged.
    pub fn add_listener(&mut self, id: ListenerId, cfg: ScopedListener) {
        if let Some(old) = self.listeners.get_mut(&id) {
            if old.cfg.rate_limit != cfg.rate_limit {
                old.rate = cfg.rate_limit.map(RateLimiter::new);
            }
            old.cfg = cfg;
            return;
        }
        let rate = cfg.rate_limit.map(RateLimiter::new);
        self.listeners.insert(id, Scoped { cfg, rate });
    }

    /// Forgets a scoped listener (the runtime has closed its sockets): its connections finish
    /// as in a drain (idle ones close now, busy ones after their exchange), the others are
    /// not touched. Drain [`Endpoint::poll_action`] after it.
    pub fn remove_listener(&mut self, now: Instant, id: ListenerId) {
        if self.listeners.remove(&id).is_none() {
            return;
        }
        let keys: Vec<SockId> = (self.conns.iter())
            .filter(|(_, c)| c.listener.is_some_and(|(l, _)| l == id))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.with_conn(now, key, |c| c.drain(now));
        }
        self.flush_tls(now);
    }

    /// The scoped listeners registered, in id order.
    pub fn scoped_listeners(&self) -> impl Iterator<Item = (ListenerId, &ScopedListener)> {
        self.listeners.iter().map(|(id, l)| (*id, &l.cfg))
    }

    /// A connection from `peer` on the scoped listener `listener` (see
    /// [`Endpoint::add_listener`]); as [`Endpoint::accept`] otherwise. One on a listener that
    /// is not (or no longer) registered is answered 503 and closed.
    pub fn accept_on(
        &mut self,
        now: Instant,
        peer: Option<SocketAddr>,
        listener: ListenerId,
    ) -> SockId {
        self.accept_from(now, peer, Some(listener))
    }

    fn accept_from(
        &mut self,
        now: Instant,
        peer: Option<SocketAddr>,
        listener: Option<ListenerId>,
    ) -> SockId {
        self.tls.advance(now);
        let sock = self.new_id();
        let ip = peer.map(|p| canonical_ip(p.ip()));
        let admin = self.is_admin(listener);
        self.owners.insert(sock, Owner::Client);
        if let (Some(tls), false) = (&self.accept_tls, admin) {
            self.tls.accepted(sock, tls);
        }
        let settings = Settings {
            quiet: self.settings.quiet || admin,
            ..self.settings
        };
        let mut conn = Conn::new(now, sock, ip, settings);
        conn.admin = admin;
        if !admin {
            self.meter.count(RoleMetrics::connection_opened);
        }
        let scoped = listener.map(|id| (id, self.listeners.get(&id).map(|l| l.cfg)));
        if self.draining {
            conn.refuse(now, 503, "Shutting down.");
        } else if admin {
            if self.admin_conns() >= admin::MAX_CONNS {
                conn.refuse(now, 503, "Too many admin connections.");
            }
        } else if let Some((id, None)) = scoped {
            log::debug!("connection on listener {} that is not registered", id.0);
            conn.refuse(now, 503, "Not serving here.");
        } else {
            let scoped = scoped.and_then(|(id, cfg)| cfg.map(|c| (id, c)));
            conn.listener = scoped.map(|(id, c)| (id, c.scope));
            match (self.admission).admit(ip, scoped.map(|(_, c)| (c.scope, c.max_conns))) {
                Ok(()) => conn.counted = true,
                Err(refusal) => conn.refuse(now, 503, refusal.message()),
            }
        }
        self.conns.insert(sock, conn);
        self.answer_outputs(now, sock);
        self.after(sock, &[]);
        self.flush_tls(now);
        sock
    }

    /// Something happened on `sock`. Ignored for unknown (already closed) ids.
    pub fn handle(&mut self, now: Instant, sock: SockId, input: Input<'_>) {
        self.tls.advance(now);
        if self.tls.is_tls(sock) {
            self.handle_tls(now, sock, input);
        } else {
            self.dispatch(now, sock, input);
        }
        self.pump_backend(now);
        self.flush_tls(now);
    }

    /// Hands an input to the owner of `sock`.
    fn dispatch(&mut self, now: Instant, sock: SockId, input: Input<'_>) {
        match self.owners.get(&sock).copied() {
            Some(Owner::Client) => self.with_conn(now, sock, |c| c.on_client(now, input)),
            Some(Owner::Upstream(key)) => self.with_conn(now, key, |c| c.on_upstream(now, input)),
            // An idle upstream has nothing to say: any byte, EOF or error ends it.
            Some(Owner::Pooled) => self.drop_pooled(sock),
            Some(Owner::Backend(req)) => {
                if let Some(backend) = self.policy.backend() {
                    backend.handle(now, req, input);
                }
            }
            Some(Owner::Probe) => self.probe_input(now, sock, input),
            None => {}
        }
    }

    /// Carries out what the policy's backend asks for and hands the routes it decided to the
    /// waiting connections (which may start new lookups: loop until quiet).
    fn pump_backend(&mut self, now: Instant) {
        loop {
            let actions: Vec<ClientAction> = match self.policy.backend() {
                Some(b) => std::iter::from_fn(|| b.poll_action()).collect(),
                None => Vec::new(),
            };
            for a in actions {
                match a {
                    ClientAction::Connect(req, target) => {
                        let sock = self.new_id();
                        self.owners.insert(sock, Owner::Backend(req));
                        self.backend_socks.insert(req, sock);
                        let backend = self.policy.backend_ref();
                        if let Some(tls) = backend.and_then(|b| b.tls_target(req)) {
                            self.tls.connecting(sock, tls);
                        }
                        self.actions.push_back(Action::Connect { sock, target });
                    }
                    ClientAction::Close(req) => {
                        if let Some(sock) = self.backend_socks.remove(&req) {
                            self.close(sock);
                        }
                    }
                }
            }
            if let Some(b) = self.policy.backend_ref() {
                for (&req, &sock) in &self.backend_socks {
                    if !b.pending_write(req).is_empty() || b.wants_read(req) {
                        self.wakes.insert(sock);
                    }
                }
            }
            let Some((ticket, route)) = self.policy.poll_routed(now) else {
                return;
            };
            self.with_conn(now, ticket.conn, |c| c.route(now, ticket, route));
        }
    }

    /// Time has reached (or passed) a deadline from [`Endpoint::poll_timeout`]. Fine to call
    /// early or twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tls.advance(now);
        while let Some(key) = self.timers.pop_due(now) {
            if self.conns.contains_key(&key) {
                self.with_conn(now, key, |c| c.on_timeout(now));
            } else if self.owners.get(&key) == Some(&Owner::Pooled) {
                self.drop_pooled(key);
            } else if self.owners.get(&key) == Some(&Owner::Probe) {
                self.probe_timed_out(now, key);
            }
        }
        self.start_probes(now);
        if let Some(backend) = self.policy.backend() {
            if backend.poll_timeout().is_some_and(|t| t <= now) {
                backend.handle_timeout(now);
            }
        }
        self.pump_backend(now);
        self.flush_tls(now);
    }

    /// Runs `f` on one connection, answers what it asks, and settles what it changed.
    fn with_conn(&mut self, now: Instant, key: SockId, f: impl FnOnce(&mut Conn)) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let before = [Some(key), conn.upstream_sock()]
            .map(|s| s.map(|s| (s, (conn.pending_write(s).len(), conn.wants_read(s)))));
        f(conn);
        self.answer_outputs(now, key);
        self.after(key, &before);
    }

    /// Answers every output of connection `key`, in order (answers may queue more).
    fn answer_outputs(&mut self, now: Instant, key: SockId) {
        while let Some(out) = self.conns.get_mut(&key).and_then(Conn::poll_output) {
            let Some(conn) = self.conns.get_mut(&key) else {
                return;
            };
            let admin = conn.admin;
            match out {
                Output::Route(ticket) if admin => conn.route(now, ticket, Route::Serve),
                Output::Serve(ticket) if admin => {
                    let Some(head) = conn.request().cloned() else {
                        continue;
                    };
                    let local = self.admin_answer(now, &head);
                    if let Some(conn) = self.conns.get_mut(&key) {
                        conn.local(now, ticket, local);
                    }
                }
                Output::Answered { .. } if admin => {}
                Output::Route(ticket) => {
                    let Some(head) = conn.request() else { continue };
                    let scoped = scoped_key(conn);
                    let route = if head.method == Method::Connect && !self.policy.answers_locally()
                    {
                        // No role tunnels: relayed, a CONNECT would come back as a 2xx whose
                        // framing no longer applies (RFC 9110 §9.3.6), desynchronising the
                        // client.
                        Route::refuse(405, "CONNECT is not supported.")
                    } else if let Some((id, key)) = scoped {
                        let listener = self.listeners.get_mut(&id);
                        let imdsv2 = listener.as_ref().and_then(|l| l.cfg.imdsv2);
                        let rate = listener.and_then(|l| l.rate.as_mut());
                        if rate.is_some_and(|r| !r.allow(now, key.ip)) {
                            Route::refuse(429, "Too many requests.")
                        } else {
                            self.policy.route_scoped(now, ticket, key, imdsv2, head)
                        }
                    } else {
                        self.policy.route(now, ticket, conn.peer(), head)
                    };
                    // Queued before the answer can exist, so the runtime sets it before it
                    // writes a byte of it.
                    // A refused request gets no answer worth limiting.
                    let answered = !matches!(route, Route::Refuse { .. });
                    if let (true, Some(hops)) = (answered, self.policy.hop_limit(head)) {
                        self.actions
                            .push_back(Action::SetHopLimit { sock: key, hops });
                    }
                    conn.route(now, ticket, route);
                }
                Output::Serve(ticket) => {
                    let Some(head) = conn.request() else { continue };
                    let local = self
                        .policy
                        .serve(now, conn.peer(), head, conn.served_body());
                    conn.local(now, ticket, local);
                }
                Output::Check {
                    ticket,
                    status,
                    can_reroute,
                } => {
                    let Some(head) = conn.request() else { continue };
                    let peer = conn.peer_text();
                    let reroute = match scoped_key(conn) {
                        Some((id, key)) => (self.policy).check_scoped(
                            now,
                            ticket,
                            key,
                            self.listeners.get(&id).and_then(|l| l.cfg.imdsv2),
                            head,
                            status,
                            can_reroute,
                            peer,
                        ),
                        None => (self.policy).check(now, ticket, head, status, can_reroute, peer),
                    };
                    conn.checked(now, ticket, reroute);
                }
                Output::Upstream { fresh } => self.give_upstream(now, key, fresh),
                Output::Release { sock, clean } => self.release(now, sock, clean),
                Output::Shutdown(sock) => self.shutdown(sock),
                Output::Close(sock) => self.close(sock),
                Output::Answered { status, took } => {
                    self.meter.count(|m| m.request(status, took));
                }
                Output::UpstreamFailed(kind) => self.meter.count(|m| m.upstream_error(kind)),
                Output::Attempt {
                    server,
                    took,
                    failure,
                } => match failure {
                    None => self.servers.succeeded(server, Some(took)),
                    Some(why) => self.servers.failed(server, now, &why),
                },
                Output::DeadlineMissed => self.meter.count(RoleMetrics::deadline_miss),
                Output::Stale => {
                    self.meter
                        .count(|m| m.response_cache(ResponseCacheEvent::Stale));
                }
                Output::Captured(captured) => self.policy.captured(now, *captured),
            }
        }
    }

    /// An upstream connection for connection `key`: to the server [`Servers::pick`] chooses
    /// among those its request was not tried on yet (any, for a replay on the same one), from
    /// that server's pool unless `fresh`, else new.
    fn give_upstream(&mut self, now: Instant, key: SockId, fresh: bool) {
        let tried = self.conns.get(&key).map(|c| c.tried().to_vec());
        let tried = tried.unwrap_or_default();
        let server = (self.servers.pick(now, &tried)).or_else(|| self.servers.pick(now, &[]));
        let Some(i) = server else {
            // A role with nowhere to forward (it answers everything itself).
            let sock = self.new_id();
            if let Some(conn) = self.conns.get_mut(&key) {
                if conn.upstream_at(now, sock, false, 0, "") {
                    // What an unreachable upstream means.
                    conn.on_upstream(now, Input::ConnectFailed(ConnectError::Other));
                }
            }
            return;
        };
        if !tried.is_empty() && !tried.contains(&i) {
            self.servers.retried(i);
        }
        let pooled = match (fresh, self.servers.get_mut(i)) {
            (false, Some(s)) => s.idle.pop(),
            _ => None,
        };
        let (sock, reused) = match pooled {
            Some(sock) => {
                self.timers.set(sock, None);
                (sock, true)
            }
            None => {
                let sock = self.new_id();
                let Some(spec) = self.servers.get(i).map(|s| &s.spec) else {
                    return;
                };
                if let Some(tls) = spec.tls.as_ref().or(self.upstream_tls.as_ref()) {
                    self.tls.connecting(sock, tls);
                }
                let target = spec.target.clone();
                self.actions.push_back(Action::Connect { sock, target });
                self.server_of.insert(sock, i);
                (sock, false)
            }
        };
        self.owners.insert(sock, Owner::Upstream(key));
        self.servers.busy(i);
        let Some(conn) = self.conns.get_mut(&key) else {
            return self.close(sock);
        };
        if !conn.upstream_at(now, sock, reused, i, self.servers.name(i)) {
            self.close(sock);
        }
    }

    /// The exchange on `sock` is over: keep it for the next one if it is `clean`.
    fn release(&mut self, now: Instant, sock: SockId, clean: bool) {
        if !clean || self.draining {
            return self.close(sock);
        }
        let Some(&i) = self.server_of.get(&sock) else {
            return self.close(sock);
        };
        self.servers.done(i);
        self.owners.insert(sock, Owner::Pooled);
        self.timers.set(sock, Some(now + POOL_IDLE));
        let Some(server) = self.servers.get_mut(i).filter(|s| !s.retired) else {
            return self.close(sock);
        };
        server.idle.push(sock);
        if server.idle.len() > POOL_MAX {
            let old = server.idle.remove(0);
            self.close(old);
        }
    }

    fn drop_pooled(&mut self, sock: SockId) {
        if let Some(s) = self
            .server_of
            .get(&sock)
            .and_then(|&i| self.servers.get_mut(i))
        {
            s.idle.retain(|s| *s != sock);
        }
        self.close(sock);
    }

    fn close(&mut self, sock: SockId) {
        let server = self.server_of.remove(&sock);
        if let (Some(i), Some(Owner::Upstream(_))) = (server, self.owners.get(&sock)) {
            self.servers.done(i);
        }
        self.probes.remove(&sock);
        self.tls.remove(sock);
        self.shut_after_flush.remove(&sock);
        if !self.conns.contains_key(&sock) {
            self.timers.set(sock, None);
        }
        if self.owners.remove(&sock).is_some() {
            self.actions.push_back(Action::Close(sock));
        }
    }

    /// Half-closes `sock`; a TLS socket says `close_notify` first (its owner's plaintext is
    /// all in the session by then: see `feed_tls`). [`Action::Shutdown`] is only asked for a
    /// socket with nothing left to write, so when the session still has bytes (the
    /// `close_notify`, an alert), it waits for [`Endpoint::consume_write`] to take the last.
    fn shutdown(&mut self, sock: SockId) {
        self.tls.close_notify(sock);
        if self.pending_write(sock).is_empty() {
            self.actions.push_back(Action::Shutdown(sock));
        } else {
            self.shut_after_flush.insert(sock);
            self.wakes.insert(sock);
        }
    }

    /// After a connection changed: wake sockets with new output or renewed read interest,
    /// re-arm its timer, drop it once closed. `before` holds, per socket of the connection,
    /// its pending output length and read interest before the change.
    fn after(&mut self, key: SockId, before: &[Option<(SockId, (usize, bool))>]) {
        self.uncount(key);
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        if conn.is_closed() {
            if !conn.admin {
                self.meter.count(RoleMetrics::connection_closed);
            }
            self.conns.remove(&key);
            self.timers.set(key, None);
            return;
        }
        let before = before.iter().flatten().copied();
        let new_socks = [Some(key), conn.upstream_sock()]
            .into_iter()
            .flatten()
            .filter(|s| !before.clone().any(|(b, _)| b == *s))
            .map(|s| (s, (0, false)));
        for (s, (len, readable)) in before.clone().chain(new_socks) {
            if !self.owners.contains_key(&s) {
                continue;
            }
            let now_readable = conn.wants_read(s);
            if conn.pending_write(s).len() > len || (now_readable && !readable) {
                self.wakes.insert(s);
            }
        }
        self.timers.arm(key, conn.deadline());
    }

    /// A connection that is closing no longer counts against the limits: a client that
    /// reconnects at once (one request per connection) must not find its old connection,
    /// still flushing or lingering, standing in its way.
    fn uncount(&mut self, key: SockId) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.counted && conn.is_finishing() {
            conn.counted = false;
            let scope = conn.listener.map(|(_, scope)| scope);
            self.admission.release(conn.peer(), scope);
        }
    }

    /// The next action. Call after `new`, `accept`, `handle`, `handle_timeout`,
    /// `consume_write` and `begin_drain`, until it returns `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(a) = self.actions.pop_front() {
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
        self.policy.poll_event()
    }

    fn conn_of(&self, sock: SockId) -> Option<&Conn> {
        match self.owners.get(&sock)? {
            Owner::Client => self.conns.get(&sock),
            Owner::Upstream(key) => self.conns.get(key),
            Owner::Pooled | Owner::Backend(_) | Owner::Probe => None,
        }
    }

    /// Bytes waiting to be written on `sock` (empty for unknown ids): ciphertext for a TLS
    /// socket.
    pub fn pending_write(&self, sock: SockId) -> &[u8] {
        if let Some(pending) = self.tls.pending(sock) {
            return pending;
        }
        if let Some(Owner::Backend(req)) = self.owners.get(&sock) {
            return (self.policy.backend_ref()).map_or(&[], |b| b.pending_write(*req));
        }
        if let Some(probe) = self.probes.get(&sock) {
            return probe.pending_write();
        }
        self.conn_of(sock).map_or(&[], |c| c.pending_write(sock))
    }

    /// The runtime wrote `n` bytes of [`Endpoint::pending_write`].
    pub fn consume_write(&mut self, now: Instant, sock: SockId, n: usize) {
        if self.tls.is_tls(sock) {
            self.tls.consume(sock, n);
            self.feed_tls(now, sock);
            if self.pending_write(sock).is_empty() && self.shut_after_flush.remove(&sock) {
                self.actions.push_back(Action::Shutdown(sock));
            }
        } else {
            match self.owners.get(&sock).copied() {
                Some(Owner::Client) => self.with_conn(now, sock, |c| c.consume_write(now, sock, n)),
                Some(Owner::Upstream(key)) => {
                    self.with_conn(now, key, |c| c.consume_write(now, sock, n))
                }
                Some(Owner::Backend(req)) => {
                    if let Some(backend) = self.policy.backend() {
                        backend.consume_write(req, n);
                    }
                }
                Some(Owner::Probe) => {
                    if let Some(probe) = self.probes.get_mut(&sock) {
                        probe.consume_write(n);
                    }
                }
                Some(Owner::Pooled) | None => return,
            }
        }
        self.pump_backend(now);
        self.flush_tls(now);
    }

    /// Whether the core wants bytes from `sock` now (false = back-pressure or finished).
    pub fn wants_read(&self, sock: SockId) -> bool {
        if self.tls.handshaking(sock) {
            return true;
        }
        match self.owners.get(&sock) {
            Some(Owner::Pooled | Owner::Probe) => true,
            Some(Owner::Backend(req)) => {
                (self.policy.backend_ref()).is_some_and(|b| b.wants_read(*req))
            }
            Some(_) => self.conn_of(sock).is_some_and(|c| c.wants_read(sock)),
            None => false,
        }
    }

    /// The earliest deadline; call after draining actions, before blocking.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.timers.first();
        let backend = self.policy.backend_ref().and_then(|b| b.poll_timeout());
        let probes = self.servers.poll_timeout().filter(|_| !self.draining);
        [conns, backend, probes].into_iter().flatten().min()
    }

    /// Graceful shutdown: idle connections close now, busy ones after their current exchange.
    /// The runtime stops accepting and waits for [`Endpoint::is_drained`] (or its own deadline).
    pub fn begin_drain(&mut self, now: Instant) {
        self.draining = true;
        let idle: Vec<SockId> = (self.servers.iter_mut())
            .flat_map(|s| std::mem::take(&mut s.idle))
            .chain(self.probes.keys().copied())
            .collect();
        for sock in idle {
            self.close(sock);
        }
        let keys: Vec<SockId> = self.conns.keys().copied().collect();
        for key in keys {
            self.with_conn(now, key, |c| c.drain(now));
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

/// The listener and lookup key of a connection of a scoped listener (one with a peer address:
/// a scoped Unix listener has no client address to look up, so it is routed unscoped).
fn scoped_key(conn: &Conn) -> Option<(ListenerId, LookupKey)> {
    let (id, scope) = conn.listener?;
    let ip = conn.peer()?;
    Some((id, LookupKey { scope, ip }))
}

/// An endpoint that stops with connections still open (a drain that timed out) no longer
/// holds them: the open-connections gauge, shared with other loops, must say so.
impl Drop for Endpoint {
    fn drop(&mut self) {
        for _ in self.conns.values().filter(|c| !c.admin) {
            self.meter.count(RoleMetrics::connection_closed);
        }
    }
}
