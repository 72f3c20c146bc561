//! A simulated network of endpoints and scripted peers, in simulated time (after quinn-proto's
//! test `Pair`): a [`World`] of nodes, each an [`Endpoint`] (driven only through its public
//! API, exactly as a runtime drives it) or a [`Peer`] (an instance's [`HttpClient`], a
//! recording [`HttpServer`], a [`Refusing`] or [`Mute`] listener; with the `tls` feature, any
//! of them behind a TLS session of its own, `Tls`). An `Action::Connect` reaches whichever
//! node listens on its target, or fails with `ConnectError::Refused`, so whole chains run in
//! one test: instance → ns-proxy → agent → metadata server (and Neutron, Keystone).
//!
//! Bytes move through connections in pieces of [`World::set_piece`] bytes, at most
//! [`World::set_capacity`] of them in flight from an endpoint (a socket buffer: back-pressure
//! reaches the endpoint's `pending_write`), and only while the reader wants them. A close is a
//! FIN, not a reset: the other side reads what was sent, then EOF. One [`World::step`] moves
//! every byte that can move without time passing; when none can, it jumps time to the earliest
//! deadline of any node and fires it. Every endpoint's side of the contract is checked by a
//! [`Contract`] on every action and every step, so a test fails at the broken promise, naming
//! the socket.

mod client;
mod hop;
mod message;
mod peer;
pub mod roles;
mod server;
#[cfg(feature = "tls")]
mod tls;

pub use client::HttpClient;
pub use hop::Hop;
pub use message::Message;
pub use peer::{AsAny, ConnId, Peer, PeerInput, PeerIo};
pub use server::{Answer, HttpServer, Mute, Refusing, Script};
#[cfg(feature = "tls")]
pub use tls::Tls;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::EndpointConfig;
use crate::endpoint::Endpoint;
use crate::listener::ListenerId;
use crate::socket::Event;
use crate::socket::{ConnectError, Input, SockId, Target};
use crate::testing::contract::Contract;
use peer::Op;

/// Steps one call of [`World::run_until`] or [`World::settle`] may take before the world is
/// declared stuck (bytes moving for ever).
const MAX_STEPS: usize = 1_000_000;
/// How long (simulated) the waiting helpers ([`World::exchange`], …) wait before failing.
const WAIT: Duration = Duration::from_secs(600);
/// Actions one drain may yield before the endpoint is declared stuck.
const MAX_ACTIONS: usize = 100_000;

/// One node of the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// One side of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End {
    /// The node.
    pub node: NodeId,
    /// The endpoint's socket id (`None` on a peer's side, which goes by the [`ConnId`]).
    pub sock: Option<SockId>,
    /// This side sends nothing more.
    pub shut: bool,
    /// This side neither sends nor reads any more.
    pub closed: bool,
    /// The last [`crate::socket::Action::SetHopLimit`] on this side's socket: the hops, and
    /// how many bytes this side had sent on the connection when it came.
    pub hop_limit: Option<(u8, usize)>,
}

/// Bytes in one direction of a connection.
#[derive(Debug, Default)]
pub struct Pipe {
    queued: VecDeque<u8>,
    /// Everything the reading side has read, in order.
    pub delivered: Vec<u8>,
    eof_delivered: bool,
}

impl Pipe {
    /// What the reading side has read, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.delivered).into_owned()
    }
}

/// One connection between two nodes.
#[derive(Debug)]
pub struct Link {
    /// The connection's id (a peer's [`ConnId`] for it).
    pub id: ConnId,
    /// Where it was opened to.
    pub target: Target,
    /// The side that connected.
    pub from: End,
    /// The side that accepted: `None` while connecting, and for good when refused.
    pub to: Option<End>,
    /// Bytes from `from` to `to`.
    pub up: Pipe,
    /// Bytes from `to` to `from`.
    pub down: Pipe,
    connecting: bool,
}

impl Link {
    fn end_mut(&mut self, node: NodeId, sock: Option<SockId>) -> &mut End {
        if self.from.node == node && self.from.sock == sock {
            return &mut self.from;
        }
        match self.to.as_mut() {
            Some(to) => to,
            None => panic!("{node:?} is no side of link {:?}", self.id),
        }
    }

    /// The pipe `node`'s side writes into.
    fn outgoing(&mut self, node: NodeId, sock: Option<SockId>) -> &mut Pipe {
        if self.from.node == node && self.from.sock == sock {
            &mut self.up
        } else {
            &mut self.down
        }
    }
}

/// An endpoint and what its runtime keeps beside it.
#[derive(Debug)]
struct EpNode {
    ep: Endpoint,
    contract: Contract,
    /// The connection each socket is one side of.
    links: BTreeMap<SockId, ConnId>,
    /// Sockets to write: woken, or left with bytes a full connection did not take.
    writable: BTreeSet<SockId>,
    events: Vec<Event>,
}

enum Kind {
    Endpoint(Box<EpNode>),
    Peer(Box<dyn Peer>),
}

struct Node {
    /// The source address of its TCP connections.
    ip: IpAddr,
    kind: Kind,
}

/// Nodes, who listens where, the connections between them, and the clock.
pub struct World {
    t0: Instant,
    now: Instant,
    nodes: Vec<Node>,
    listeners: Vec<(Target, NodeId)>,
    /// Targets whose connections their endpoint reports as [`Endpoint::accept_on`] this id.
    scoped: Vec<(Target, ListenerId)>,
    links: BTreeMap<ConnId, Link>,
    next_link: u64,
    next_port: u16,
    piece: usize,
    capacity: usize,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    /// An empty world at an arbitrary epoch; pieces of 4 KiB, 64 KiB in flight per socket.
    pub fn new() -> Self {
        let t0 = crate::testing::epoch();
        World {
            t0,
            now: t0,
            nodes: Vec::new(),
            listeners: Vec::new(),
            scoped: Vec::new(),
            links: BTreeMap::new(),
            next_link: 1,
            next_port: 40_000,
            piece: 4096,
            capacity: 64 * 1024,
        }
    }

    /// Bytes move in pieces of at most `n` (1: a byte at a time).
    pub fn set_piece(&mut self, n: usize) {
        self.piece = n.max(1);
    }

    /// An endpoint's socket may have at most `n` bytes in flight (written, not yet read).
    pub fn set_capacity(&mut self, n: usize) {
        self.capacity = n.max(1);
    }

    /// The simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Simulated time since the world began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Adds an endpoint (its TCP connections come from 127.0.0.1).
    pub fn add_endpoint(&mut self, cfg: EndpointConfig) -> NodeId {
        let node = NodeId(self.nodes.len());
        self.nodes.push(Node {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            kind: Kind::Endpoint(Box::new(EpNode {
                ep: Endpoint::new(self.now, cfg),
                contract: Contract::new(),
                links: BTreeMap::new(),
                writable: BTreeSet::new(),
                events: Vec::new(),
            })),
        });
        self.drain(node);
        node
    }

    /// Adds an endpoint listening on `target`.
    pub fn endpoint_on(&mut self, target: Target, cfg: EndpointConfig) -> NodeId {
        let node = self.add_endpoint(cfg);
        self.listen(target, node);
        node
    }

    /// Adds a peer whose TCP connections come from `ip`.
    pub fn add_peer(&mut self, ip: IpAddr, peer: impl Peer) -> NodeId {
        let node = NodeId(self.nodes.len());
        self.nodes.push(Node {
            ip,
            kind: Kind::Peer(Box::new(peer)),
        });
        node
    }

    /// Adds a peer listening on `target`.
    pub fn peer_on(&mut self, target: Target, peer: impl Peer) -> NodeId {
        let node = self.add_peer(IpAddr::V4(Ipv4Addr::LOCALHOST), peer);
        self.listen(target, node);
        node
    }

    /// Adds an [`HttpClient`] of `target` at the address `ip` (an instance).
    pub fn add_client(&mut self, ip: &str, target: Target) -> NodeId {
        let ip = ip
            .parse()
            .unwrap_or_else(|e| panic!("client address {ip}: {e}"));
        self.add_peer(ip, HttpClient::new(target))
    }

    /// Connections to `target` reach `node` from now on (replacing whoever listened there).
    pub fn listen(&mut self, target: Target, node: NodeId) {
        self.listeners.retain(|(t, _)| *t != target);
        self.listeners.push((target, node));
    }

    /// Connections to `target` are accepted as the scoped listener `id` (a node's listener;
    /// register it with [`Endpoint::add_listener`] through [`World::with_endpoint`]).
    pub fn scope_target(&mut self, target: Target, id: ListenerId) {
        self.scoped.retain(|(t, _)| *t != target);
        self.scoped.push((target, id));
    }

    /// Nobody listens on `target` any more: connects to it are refused.
    pub fn unlisten(&mut self, target: &Target) {
        self.listeners.retain(|(t, _)| t != target);
    }

    fn ep_node(&self, node: NodeId) -> &EpNode {
        match &self.nodes[node.0].kind {
            Kind::Endpoint(e) => e,
            Kind::Peer(_) => panic!("{node:?} is a peer, not an endpoint"),
        }
    }

    /// The endpoint of `node`.
    pub fn endpoint(&self, node: NodeId) -> &Endpoint {
        &self.ep_node(node).ep
    }

    /// The contract record of `node`'s sockets.
    pub fn contract(&self, node: NodeId) -> &Contract {
        &self.ep_node(node).contract
    }

    /// Calls `f` on the endpoint of `node` (with the time), then drains it as a runtime
    /// must after any call: for `begin_drain`, `reload`.
    pub fn with_endpoint(&mut self, node: NodeId, f: impl FnOnce(&mut Endpoint, Instant)) {
        let now = self.now;
        if let Kind::Endpoint(e) = &mut self.nodes[node.0].kind {
            f(&mut e.ep, now);
        }
        self.drain(node);
    }

    /// The application events (passwords to store) `node` produced so far.
    pub fn events(&self, node: NodeId) -> &[Event] {
        &self.ep_node(node).events
    }

    /// The peer of `node`, as the type it was added as (or the type of a peer it wraps).
    pub fn peer<T: Peer>(&self, node: NodeId) -> &T {
        match &self.nodes[node.0].kind {
            Kind::Peer(p) => find::<T>(&**p),
            Kind::Endpoint(_) => None,
        }
        .unwrap_or_else(|| panic!("{node:?} is no {}", std::any::type_name::<T>()))
    }

    /// The peer of `node`, to change (what it does takes effect at the next step).
    pub fn peer_mut<T: Peer>(&mut self, node: NodeId) -> &mut T {
        match &mut self.nodes[node.0].kind {
            Kind::Peer(p) => find_mut::<T>(&mut **p),
            Kind::Endpoint(_) => None,
        }
        .unwrap_or_else(|| panic!("{node:?} is no {}", std::any::type_name::<T>()))
    }

    /// The [`HttpClient`] of `node`.
    pub fn client(&self, node: NodeId) -> &HttpClient {
        self.peer(node)
    }

    /// The [`HttpClient`] of `node`, to give it work.
    pub fn client_mut(&mut self, node: NodeId) -> &mut HttpClient {
        self.peer_mut(node)
    }

    /// The [`HttpServer`] of `node`.
    pub fn server(&self, node: NodeId) -> &HttpServer {
        self.peer(node)
    }

    /// Sends `req` from the [`HttpClient`] `client` and runs until its answer is back.
    pub fn exchange(&mut self, client: NodeId, req: impl Into<Vec<u8>>) -> Message {
        let n = self.client(client).responses.len();
        self.client_mut(client).send(req);
        self.response(client, n)
    }

    /// Runs until the [`HttpClient`] `client` has its response number `n` (from 0); returns it.
    pub fn response(&mut self, client: NodeId, n: usize) -> Message {
        self.run_until(WAIT, |w| w.client(client).responses.len() > n);
        self.client(client).responses[n].clone()
    }

    /// Runs until the [`HttpServer`] `server` has read `n` requests.
    pub fn await_requests(&mut self, server: NodeId, n: usize) {
        self.run_until(WAIT, |w| w.server(server).requests.len() >= n);
    }

    /// The connections `node` opened, oldest first.
    pub fn links_from(&self, node: NodeId) -> Vec<&Link> {
        self.links
            .values()
            .filter(|l| l.from.node == node)
            .collect()
    }

    /// The connections `node` accepted, oldest first.
    pub fn links_to(&self, node: NodeId) -> Vec<&Link> {
        (self.links.values())
            .filter(|l| l.to.is_some_and(|to| to.node == node))
            .collect()
    }

    /// Moves every byte that can move; when none can, jumps to the earliest deadline and fires
    /// it. False when nothing moved and no deadline is left.
    pub fn step(&mut self) -> bool {
        if self.move_once() {
            self.settle();
            return true;
        }
        match self.next_deadline() {
            Some(t) => {
                self.fire(t);
                true
            }
            None => false,
        }
    }

    /// Steps until `cond` holds; fails the test if it does not within `limit` of simulated
    /// time, or the world goes quiet first.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&World) -> bool) {
        let end = self.now + limit;
        for _ in 0..MAX_STEPS {
            if cond(self) {
                return;
            }
            if self.move_once() {
                continue;
            }
            match self.next_deadline() {
                Some(t) if t <= end => self.fire(t),
                Some(t) => panic!(
                    "not done within {limit:?} (at {:?}; next deadline {:?} later)",
                    self.elapsed(),
                    t - self.now
                ),
                None => panic!("the world went quiet at {:?}, not done", self.elapsed()),
            }
        }
        panic!("not done after {MAX_STEPS} steps (bytes moving for ever?)");
    }

    /// Moves bytes until none can move, without moving time.
    pub fn settle(&mut self) {
        for _ in 0..MAX_STEPS {
            if !self.move_once() {
                return;
            }
        }
        panic!("bytes still moving after {MAX_STEPS} steps");
    }

    /// Lets `d` of simulated time pass, firing every deadline on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.settle();
            match self.next_deadline() {
                Some(t) if t <= end => self.fire(t),
                _ => break,
            }
        }
        self.now = end;
    }

    fn next_deadline(&self) -> Option<Instant> {
        (self.nodes.iter())
            .filter_map(|n| match &n.kind {
                Kind::Endpoint(e) => e.ep.poll_timeout(),
                Kind::Peer(p) => p.poll_timeout(),
            })
            .min()
    }

    /// Time moves to `t` (never back); every node due fires.
    fn fire(&mut self, t: Instant) {
        self.now = self.now.max(t);
        let now = self.now;
        for i in 0..self.nodes.len() {
            let node = NodeId(i);
            match &mut self.nodes[i].kind {
                Kind::Endpoint(e) => {
                    if e.ep.poll_timeout().is_some_and(|t| t <= now) {
                        e.ep.handle_timeout(now);
                        self.drain(node);
                        let e = self.ep_node(node);
                        e.contract.after_timeout(&e.ep, now);
                    }
                }
                Kind::Peer(p) => {
                    if p.poll_timeout().is_some_and(|t| t <= now) {
                        self.call_peer(node, |p, io| p.handle_timeout(now, io));
                    }
                }
            }
        }
    }

    /// One round: peers start what they were asked to, connects complete, endpoints write,
    /// every connection delivers one piece (or its EOF). Whether anything happened.
    fn move_once(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for i in 0..self.nodes.len() {
            if matches!(self.nodes[i].kind, Kind::Peer(_)) {
                moved |= self.call_peer(NodeId(i), |p, io| p.poll(now, io));
            }
        }
        moved |= self.complete_connects();
        for i in 0..self.nodes.len() {
            if matches!(self.nodes[i].kind, Kind::Endpoint(_)) {
                moved |= self.flush(NodeId(i));
            }
        }
        let ids: Vec<ConnId> = self.links.keys().copied().collect();
        for id in ids {
            moved |= self.deliver(id, true);
            moved |= self.deliver(id, false);
        }
        for node in &self.nodes {
            if let Kind::Endpoint(e) = &node.kind {
                e.contract.check_buffers(&e.ep, usize::MAX);
                e.contract.check_closed(&e.ep);
            }
        }
        moved
    }

    /// Carries out every action of `node`'s endpoint, checking each against the contract.
    fn drain(&mut self, node: NodeId) {
        for _ in 0..MAX_ACTIONS {
            let Kind::Endpoint(e) = &mut self.nodes[node.0].kind else {
                return;
            };
            while let Some(ev) = e.ep.poll_event() {
                e.events.push(ev);
            }
            let Some(action) = e.ep.poll_action() else {
                return;
            };
            e.contract.action(&e.ep, &action);
            match action {
                crate::socket::Action::Connect { sock, target } => {
                    let id = ConnId(self.next_link);
                    self.next_link += 1;
                    e.links.insert(sock, id);
                    self.links
                        .insert(id, new_link(id, target, node, Some(sock)));
                }
                crate::socket::Action::Wake(sock) => {
                    e.writable.insert(sock);
                }
                // Recorded with how much the socket had sent: the option must come before
                // the answer it protects (the runtimes' suite checks the option itself).
                crate::socket::Action::SetHopLimit { sock, hops } => {
                    if let Some(l) = e.links.get(&sock).and_then(|id| self.links.get_mut(id)) {
                        let outgoing = match l.from.node == node && l.from.sock == Some(sock) {
                            true => &l.up,
                            false => &l.down,
                        };
                        let sent = outgoing.queued.len() + outgoing.delivered.len();
                        l.end_mut(node, Some(sock)).hop_limit = Some((hops, sent));
                    }
                }
                crate::socket::Action::Shutdown(sock) => {
                    if let Some(l) = e.links.get(&sock).and_then(|id| self.links.get_mut(id)) {
                        l.end_mut(node, Some(sock)).shut = true;
                    }
                }
                crate::socket::Action::Close(sock) => {
                    e.writable.remove(&sock);
                    if let Some(l) = e.links.get(&sock).and_then(|id| self.links.get_mut(id)) {
                        l.end_mut(node, Some(sock)).closed = true;
                    }
                }
            }
        }
        panic!("{node:?} never stopped producing actions");
    }

    /// Writes what `node`'s endpoint has for its writable sockets, as far as the connections
    /// take it. Whether any byte moved.
    fn flush(&mut self, node: NodeId) -> bool {
        let mut moved = false;
        let socks: Vec<SockId> = self.ep_node(node).writable.iter().copied().collect();
        for sock in socks {
            loop {
                let (now, capacity) = (self.now, self.capacity);
                let Kind::Endpoint(e) = &mut self.nodes[node.0].kind else {
                    return moved;
                };
                let Some(link) = e.links.get(&sock).and_then(|id| self.links.get_mut(id)) else {
                    break;
                };
                if link.connecting || link.to.is_none() {
                    break;
                }
                let pending = e.ep.pending_write(sock);
                if pending.is_empty() {
                    e.writable.remove(&sock);
                    break;
                }
                let pipe = link.outgoing(node, Some(sock));
                let n = pending
                    .len()
                    .min(capacity.saturating_sub(pipe.queued.len()));
                if n == 0 {
                    break;
                }
                pipe.queued.extend(&pending[..n]);
                e.ep.consume_write(now, sock, n);
                self.drain(node);
                moved = true;
            }
        }
        moved
    }

    /// Answers every connect in progress: the listener accepts or refuses.
    fn complete_connects(&mut self) -> bool {
        let pending: Vec<ConnId> = (self.links.values())
            .filter(|l| l.connecting)
            .map(|l| l.id)
            .collect();
        for &id in &pending {
            let Some(link) = self.links.get_mut(&id) else {
                continue;
            };
            link.connecting = false;
            let (from, target) = (link.from, link.target.clone());
            if from.closed {
                // Given up before the connect completed: nobody hears of it.
                continue;
            }
            let listener = (self.listeners.iter())
                .find(|(t, _)| *t == target)
                .map(|(_, n)| *n);
            let result = match listener {
                Some(to) => self.accept(id, from.node, to, &target),
                None => Err(ConnectError::Refused),
            };
            let input = match result {
                Ok(()) => Input::Connected,
                Err(why) => Input::ConnectFailed(why),
            };
            self.tell(from.node, from.sock, id, input);
        }
        !pending.is_empty()
    }

    /// `to` takes the connection `id` from `from`, or refuses it.
    fn accept(
        &mut self,
        id: ConnId,
        from: NodeId,
        to: NodeId,
        target: &Target,
    ) -> Result<(), ConnectError> {
        let now = self.now;
        let peer_addr = match target {
            Target::Tcp(_) => {
                self.next_port = self.next_port.wrapping_add(1).max(1024);
                Some(SocketAddr::new(self.nodes[from.0].ip, self.next_port))
            }
            Target::Unix(_) => None,
        };
        let scoped = (self.scoped.iter())
            .find(|(t, _)| t == target)
            .map(|(_, id)| *id);
        let sock = match &mut self.nodes[to.0].kind {
            Kind::Endpoint(e) => {
                let sock = match scoped {
                    Some(id) => e.ep.accept_on(now, peer_addr, id),
                    None => e.ep.accept(now, peer_addr),
                };
                e.contract.accepted(sock);
                e.links.insert(sock, id);
                Some(sock)
            }
            Kind::Peer(p) => {
                p.accept(now)?;
                None
            }
        };
        if let Some(link) = self.links.get_mut(&id) {
            link.to = Some(End {
                node: to,
                sock,
                shut: false,
                closed: false,
                hop_limit: None,
            });
        }
        match sock {
            Some(_) => self.drain(to),
            None => {
                self.call_peer(to, |p, io| p.handle(now, id, PeerInput::Accepted, io));
            }
        }
        Ok(())
    }

    /// Hands a connect result, bytes or EOF to one side of connection `id`.
    fn tell(&mut self, node: NodeId, sock: Option<SockId>, id: ConnId, input: Input<'_>) {
        let now = self.now;
        match (&mut self.nodes[node.0].kind, sock) {
            (Kind::Endpoint(e), Some(sock)) => {
                if matches!(input, Input::Connected | Input::ConnectFailed(_))
                    && !e.contract.connect_done(sock)
                {
                    return;
                }
                if matches!(input, Input::Connected) {
                    e.writable.insert(sock);
                }
                e.ep.handle(now, sock, input);
                self.drain(node);
            }
            (Kind::Peer(_), _) => {
                let input = match input {
                    Input::Connected => PeerInput::Connected,
                    Input::ConnectFailed(why) => PeerInput::ConnectFailed(why),
                    Input::Read(bytes) => PeerInput::Read(bytes),
                    Input::Eof | Input::Error => PeerInput::Eof,
                };
                self.call_peer(node, |p, io| p.handle(now, id, input, io));
            }
            (Kind::Endpoint(_), None) => panic!("{node:?}: an endpoint side without a socket"),
        }
    }

    /// Moves one piece (or the EOF) of connection `id` in one direction (`up`: from the side
    /// that connected). Whether anything moved.
    fn deliver(&mut self, id: ConnId, up: bool) -> bool {
        let piece = self.piece;
        let Some(link) = self.links.get_mut(&id) else {
            return false;
        };
        let Some(to) = link.to else {
            return false;
        };
        let (sender, receiver) = if up { (link.from, to) } else { (to, link.from) };
        let pipe = if up { &mut link.up } else { &mut link.down };
        if receiver.closed {
            pipe.queued.clear();
            return false;
        }
        if !pipe.queued.is_empty() {
            if !self.reads(receiver, id) {
                return false;
            }
            let Some(link) = self.links.get_mut(&id) else {
                return false;
            };
            let pipe = if up { &mut link.up } else { &mut link.down };
            let n = piece.min(pipe.queued.len());
            let bytes: Vec<u8> = pipe.queued.drain(..n).collect();
            pipe.delivered.extend_from_slice(&bytes);
            self.tell(receiver.node, receiver.sock, id, Input::Read(&bytes));
            return true;
        }
        if (sender.shut || sender.closed) && !pipe.eof_delivered {
            pipe.eof_delivered = true;
            self.tell(receiver.node, receiver.sock, id, Input::Eof);
            return true;
        }
        false
    }

    /// Whether the side `end` of connection `id` reads now.
    fn reads(&self, end: End, id: ConnId) -> bool {
        match (&self.nodes[end.node.0].kind, end.sock) {
            (Kind::Endpoint(e), Some(sock)) => e.ep.wants_read(sock),
            (Kind::Peer(p), _) => p.wants_read(id),
            (Kind::Endpoint(_), None) => false,
        }
    }

    /// Calls peer `node` and carries out what it asked for. Whether it asked for anything.
    fn call_peer(&mut self, node: NodeId, f: impl FnOnce(&mut dyn Peer, &mut PeerIo)) -> bool {
        let mut io = PeerIo {
            ops: Vec::new(),
            next: self.next_link,
        };
        let Kind::Peer(p) = &mut self.nodes[node.0].kind else {
            return false;
        };
        f(p.as_mut(), &mut io);
        self.next_link = io.next;
        let any = !io.ops.is_empty();
        for op in io.ops {
            match op {
                Op::Connect(id, target) => {
                    self.links.insert(id, new_link(id, target, node, None));
                }
                Op::Write(id, bytes) => {
                    if let Some(l) = self.links.get_mut(&id) {
                        let end = *l.end_mut(node, None);
                        assert!(
                            !end.shut && !end.closed,
                            "{node:?} wrote on {id:?} after ending it"
                        );
                        l.outgoing(node, None).queued.extend(bytes);
                    }
                }
                Op::Shutdown(id) => {
                    if let Some(l) = self.links.get_mut(&id) {
                        l.end_mut(node, None).shut = true;
                    }
                }
                Op::Close(id) => {
                    if let Some(l) = self.links.get_mut(&id) {
                        l.end_mut(node, None).closed = true;
                    }
                }
            }
        }
        any
    }
}

/// `p` as a `T`, or the peer it wraps, all the way down.
fn find<T: Peer>(p: &dyn Peer) -> Option<&T> {
    (p.as_any().downcast_ref::<T>()).or_else(|| p.wrapped().and_then(find::<T>))
}

/// [`find`], to change.
fn find_mut<T: Peer>(p: &mut dyn Peer) -> Option<&mut T> {
    if (*p).as_any().is::<T>() {
        return p.as_any_mut().downcast_mut::<T>();
    }
    p.wrapped_mut().and_then(find_mut::<T>)
}

fn new_link(id: ConnId, target: Target, node: NodeId, sock: Option<SockId>) -> Link {
    Link {
        id,
        target,
        from: End {
            node,
            sock,
            shut: false,
            closed: false,
            hop_limit: None,
        },
        to: None,
        up: Pipe::default(),
        down: Pipe::default(),
        connecting: true,
    }
}
