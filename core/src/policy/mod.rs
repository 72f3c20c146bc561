//! What differs between the roles, one policy each: the header table of the hop, the scope,
//! lookup and signing, local answers, a second look at the upstream's answer, metrics labels.
//! The connection ([`crate::proxy::conn`]) does HTTP the same for every role and asks its
//! endpoint for each decision; the endpoint asks the role's [`Policy`].
//!
//! A trait, not an enum of roles: a new role or lookup backend is a new type implementing it,
//! and neither the endpoint nor the connection gains a `match` arm. The endpoint holds one
//! `Box<dyn Policy>`; one virtual call per request decision costs nothing next to the parse.

mod agent;
mod node;
mod ns_proxy;
mod server;

use std::fmt;
use std::net::IpAddr;
use std::time::Instant;

use crate::config::{AgentConfig, Backend as LookupBackend, ConnLimits, Reload, Resilience, Role};
use crate::explain::Explained;
use crate::http::RequestHead;
use crate::lookup::{ClientAction, NeutronClient, OvnClient, ReqId};
use crate::metadata::{ImdsV2, MetaResponse};
use crate::metrics::{Meter, MetricRole};
use crate::proxy::decision::{Captured, Local, Route, Ticket};
use crate::scope::LookupKey;
use crate::socket::Event;
use crate::socket::{Input, Target};
use crate::tls::{ClientTls, TlsError, TlsTarget};
use crate::upstream::ServerSpec;

/// A role's decisions. Methods with a default are what most roles do.
pub(crate) trait Policy: fmt::Debug + Send {
    /// What to do with a request head (target already normalised). [`Route::Pending`] promises
    /// the answer through [`Policy::poll_routed`] for the same ticket.
    fn route(
        &mut self,
        now: Instant,
        ticket: Ticket,
        peer: Option<IpAddr>,
        head: &RequestHead,
    ) -> Route;

    /// [`Policy::route`] for a connection of a scoped listener (`crate::listener`): `key` is
    /// the listener's scope and the client's address, `imdsv2` the listener's own IMDSv2 mode.
    /// Roles that take their scope from a header ignore the listener's.
    fn route_scoped(
        &mut self,
        now: Instant,
        ticket: Ticket,
        key: LookupKey,
        _imdsv2: Option<ImdsV2>,
        head: &RequestHead,
    ) -> Route {
        self.route(now, ticket, Some(key.ip), head)
    }

    /// [`Policy::check`] for a connection of a scoped listener, with its `key` and `imdsv2`
    /// as in [`Policy::route_scoped`].
    #[allow(clippy::too_many_arguments)] // check's arguments and the listener's
    fn check_scoped(
        &mut self,
        now: Instant,
        ticket: Ticket,
        _key: LookupKey,
        _imdsv2: Option<ImdsV2>,
        head: &RequestHead,
        status: u16,
        can_reroute: bool,
        peer: &str,
    ) -> Option<Route> {
        self.check(now, ticket, head, status, can_reroute, peer)
    }

    /// The hop limit the client's connection needs before the answer to `head`, which this
    /// policy forwards (the ns-proxy's IMDSv2 token requests).
    fn hop_limit(&self, _head: &RequestHead) -> Option<u8> {
        None
    }

    /// Its instances connect on scoped listeners (the node), whose rules `/explain` shows.
    fn scoped(&self) -> bool {
        false
    }

    /// Every request is answered here (no upstream): `CONNECT` reaches [`Policy::route`] too.
    fn answers_locally(&self) -> bool {
        false
    }

    /// The local answer to a whole request that was routed [`Route::Serve`].
    fn serve(
        &mut self,
        _now: Instant,
        _peer: Option<IpAddr>,
        _head: &RequestHead,
        _body: &[u8],
    ) -> Local {
        Local {
            status: 404,
            ..Local::default()
        }
    }

    /// The upstream answered `status` to a request routed with `Forward::check`: `Some` sends
    /// it again on that route (only offered when `can_reroute`).
    fn check(
        &mut self,
        _now: Instant,
        _ticket: Ticket,
        _head: &RequestHead,
        _status: u16,
        _can_reroute: bool,
        _peer: &str,
    ) -> Option<Route> {
        None
    }

    /// A route promised by [`Route::Pending`] that is now decided.
    fn poll_routed(&mut self, _now: Instant) -> Option<(Ticket, Route)> {
        None
    }

    /// Something for the application (a password to store).
    fn poll_event(&mut self) -> Option<Event> {
        None
    }

    /// Where forwarded requests go; `None` for a role that answers everything itself.
    fn upstream(&self) -> Option<&Target> {
        None
    }

    /// The servers forwarded to and how failures are met, for a role that may have several
    /// (else the one [`Policy::upstream`], with nothing to choose between).
    fn servers(&self) -> Option<(Vec<ServerSpec>, Resilience)> {
        None
    }

    /// A 200 answer the route asked to keep ([`crate::proxy::decision::Forward::capture`]).
    fn captured(&mut self, _now: Instant, _captured: Captured) {}

    /// Connection limits: the configured ones unless the role has its own.
    fn conn_limits(&self, configured: ConnLimits) -> ConnLimits {
        configured
    }

    /// Access lines at debug level.
    fn quiet(&self) -> bool {
        false
    }

    /// New data (SIGHUP): what this role cannot use is logged and ignored.
    fn reload(&mut self, reload: Reload) {
        ignored(&reload);
    }

    /// [`Policy::reload`] for a policy whose reload starts a timer (the server's window for
    /// the previous secret), at `now`.
    fn reload_at(&mut self, _now: Instant, reload: Reload) {
        self.reload(reload);
    }

    /// What a request of `key` would get, from what the role holds (see [`crate::explain`]),
    /// with `imdsv2` the mode of the node's listener for its scope; `None` for a role that
    /// looks nothing up.
    fn explain(
        &mut self,
        _now: Instant,
        _key: &LookupKey,
        _imdsv2: Option<ImdsV2>,
    ) -> Option<Explained> {
        None
    }

    /// The sockets the policy's lookup backend opens itself, if it has one.
    fn backend(&mut self) -> Option<&mut dyn Backend> {
        None
    }

    /// The same, to look at.
    fn backend_ref(&self) -> Option<&dyn Backend> {
        None
    }
}

/// A lookup backend that speaks over sockets of its own (Neutron and Keystone; later OVSDB),
/// through the endpoint, which owns every socket.
pub(crate) trait Backend {
    /// Something happened on the socket of `req`.
    fn handle(&mut self, now: Instant, req: ReqId, input: Input<'_>);
    /// The TLS session of `req` failed.
    fn fail(&mut self, req: ReqId, why: TlsError);
    /// A socket to open or close.
    fn poll_action(&mut self) -> Option<ClientAction>;
    /// Bytes for the socket of `req`.
    fn pending_write(&self, req: ReqId) -> &[u8];
    /// `n` of them were written.
    fn consume_write(&mut self, req: ReqId, n: usize);
    /// It wants to read from the socket of `req`.
    fn wants_read(&self, req: ReqId) -> bool;
    /// The TLS peer of `req`, if it speaks TLS.
    fn tls_target(&self, req: ReqId) -> Option<&TlsTarget>;
    /// Its earliest deadline.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Time reached [`Backend::poll_timeout`].
    fn handle_timeout(&mut self, now: Instant);
}

impl Backend for NeutronClient {
    fn handle(&mut self, now: Instant, req: ReqId, input: Input<'_>) {
        NeutronClient::handle(self, now, req, input)
    }
    fn fail(&mut self, req: ReqId, why: TlsError) {
        NeutronClient::fail(self, req, why)
    }
    fn poll_action(&mut self) -> Option<ClientAction> {
        NeutronClient::poll_action(self)
    }
    fn pending_write(&self, req: ReqId) -> &[u8] {
        NeutronClient::pending_write(self, req)
    }
    fn consume_write(&mut self, req: ReqId, n: usize) {
        NeutronClient::consume_write(self, req, n)
    }
    fn wants_read(&self, req: ReqId) -> bool {
        NeutronClient::wants_read(self, req)
    }
    fn tls_target(&self, req: ReqId) -> Option<&TlsTarget> {
        NeutronClient::tls_target(self, req)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        NeutronClient::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        NeutronClient::handle_timeout(self, now)
    }
}

impl Backend for OvnClient {
    fn handle(&mut self, now: Instant, req: ReqId, input: Input<'_>) {
        OvnClient::handle(self, now, req, input)
    }
    fn fail(&mut self, req: ReqId, why: TlsError) {
        OvnClient::fail(self, req, why)
    }
    fn poll_action(&mut self) -> Option<ClientAction> {
        OvnClient::poll_action(self)
    }
    fn pending_write(&self, req: ReqId) -> &[u8] {
        OvnClient::pending_write(self, req)
    }
    fn consume_write(&mut self, req: ReqId, n: usize) {
        OvnClient::consume_write(self, req, n)
    }
    fn wants_read(&self, req: ReqId) -> bool {
        OvnClient::wants_read(self, req)
    }
    fn tls_target(&self, req: ReqId) -> Option<&TlsTarget> {
        OvnClient::tls_target(self, req)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        OvnClient::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        OvnClient::handle_timeout(self, now)
    }
}

/// The policy of `role`, counting into `meter`; a backend with sockets of its own starts
/// connecting at `now`.
pub(crate) fn for_role(now: Instant, role: &Role, meter: Meter) -> Box<dyn Policy> {
    match role {
        Role::NsProxy(c) => Box::new(ns_proxy::NsProxy::new(c)),
        Role::Agent(c) => Box::new(agent::Agent::new(now, c, meter)),
        Role::Node(c) => Box::new(node::Node::new(now, c, meter)),
        Role::Server(c) => Box::new(server::Server::new(c)),
    }
}

/// The client TLS of `role`'s lookup backend, whose wall clock the endpoint moves.
pub(crate) fn backend_tls(role: &Role) -> Option<&ClientTls> {
    let (Role::Agent(agent) | Role::Node(agent)) = role else {
        return None;
    };
    match agent {
        AgentConfig {
            backend: LookupBackend::Neutron(n),
            ..
        } => n.tls.as_ref(),
        AgentConfig {
            backend: LookupBackend::Ovn(o),
            ..
        } => o.tls.as_ref(),
        _ => None,
    }
}

/// What `role`'s requests count as (the admin listener's are not counted: see
/// `endpoint::admin`).
pub(crate) fn metric_role(role: &Role) -> MetricRole {
    match role {
        Role::NsProxy(_) => MetricRole::NsProxy,
        Role::Agent(_) => MetricRole::Agent,
        Role::Node(_) => MetricRole::Node,
        Role::Server(_) => MetricRole::Server,
    }
}

/// Logs that a role has no use for `reload`.
fn ignored(reload: &Reload) {
    match reload {
        Reload::Instances(..) => {
            log::warn!("ignoring instances: this endpoint is not a metadata server")
        }
        Reload::Agent(_) => log::warn!("ignoring an agent's settings: this endpoint is no agent"),
        Reload::Server(_) => log::warn!("ignoring a server's settings: this endpoint is no server"),
    }
}

/// A metadata or metrics answer as the connection sends it.
pub(crate) fn local_answer(resp: MetaResponse, log_for: Option<String>) -> Local {
    let mut fields = vec![("Content-Type", resp.content_type.to_owned())];
    fields.extend(resp.headers);
    Local {
        status: resp.status,
        fields,
        body: resp.body,
        log_for,
    }
}
