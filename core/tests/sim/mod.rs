//! A runtime stand-in for the core's tests: sockets are byte logs, writes always complete,
//! time is a number the test moves.
#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use mdproxy_core::config::{AgentConfig, Backend, EndpointConfig, Timeouts};
use mdproxy_core::endpoint::Endpoint;
use mdproxy_core::http::Limits;
use mdproxy_core::lookup::{HttpTarget, NeutronConfig};
use mdproxy_core::sign::Signer;
use mdproxy_core::socket::{Action, Input, SockId, Target};

/// A runtime stand-in: sockets are byte logs, writes always complete, time is a number.
pub struct Sim {
    pub ep: Endpoint,
    pub t0: Instant,
    pub now: Instant,
    /// Bytes the endpoint wrote, per socket.
    pub written: BTreeMap<SockId, Vec<u8>>,
    pub connects: Vec<SockId>,
    pub closed: Vec<SockId>,
    pub shut: Vec<SockId>,
    /// Sockets that stop accepting writes (a client that does not read).
    pub stalled: Vec<SockId>,
    /// Passwords the server asked to persist.
    pub stored: Vec<mdproxy_core::metadata::StoreRequest>,
}

impl Sim {
    pub fn with_role(role: mdproxy_core::config::Role, timeouts: Timeouts) -> Sim {
        Sim::new(EndpointConfig {
            role,
            limits: Limits::default(),
            conns: Default::default(),
            timeouts,
            tls: Default::default(),
            metrics: None,
        })
    }

    pub fn new(cfg: EndpointConfig) -> Sim {
        #[allow(clippy::disallowed_methods)] // an opaque epoch; the sim moves time itself
        let t0 = Instant::now();
        Sim {
            ep: Endpoint::new(t0, cfg),
            t0,
            now: t0,
            written: BTreeMap::new(),
            connects: Vec::new(),
            closed: Vec::new(),
            shut: Vec::new(),
            stalled: Vec::new(),
            stored: Vec::new(),
        }
    }

    pub fn drain(&mut self) {
        for _ in 0..10_000 {
            let Some(a) = self.ep.poll_action() else {
                return;
            };
            match a {
                Action::Connect { sock, .. } => self.connects.push(sock),
                Action::Wake(sock) => self.flush(sock),
                Action::Shutdown(sock) => self.shut.push(sock),
                Action::Close(sock) => self.closed.push(sock),
            }
            while let Some(mdproxy_core::endpoint::Event::Store(req)) = self.ep.poll_event() {
                self.stored.push(req);
            }
        }
        panic!("endpoint never stopped producing actions");
    }

    pub fn flush(&mut self, sock: SockId) {
        if self.stalled.contains(&sock) {
            return;
        }
        let bytes = self.ep.pending_write(sock).to_vec();
        if bytes.is_empty() {
            return;
        }
        self.written
            .entry(sock)
            .or_default()
            .extend_from_slice(&bytes);
        self.ep.consume_write(self.now, sock, bytes.len());
        self.drain();
    }

    pub fn accept(&mut self) -> SockId {
        let s = self
            .ep
            .accept(self.now, Some("127.0.0.1:40000".parse().unwrap()));
        self.drain();
        s
    }

    pub fn input(&mut self, sock: SockId, input: Input<'_>) {
        self.ep.handle(self.now, sock, input);
        self.drain();
    }

    /// Delivers bytes read from `sock`, as a runtime would: only while the core wants them.
    pub fn send(&mut self, sock: SockId, bytes: &[u8]) {
        assert!(self.ep.wants_read(sock), "{sock:?} is not being read");
        self.input(sock, Input::Read(bytes));
    }

    /// Completes the newest pending connect and returns its id.
    pub fn connect_ok(&mut self) -> SockId {
        let up = *self.connects.last().expect("a connect was requested");
        self.input(up, Input::Connected);
        up
    }

    pub fn take(&mut self, sock: SockId) -> String {
        String::from_utf8_lossy(&self.written.remove(&sock).unwrap_or_default()).into_owned()
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.ep.poll_timeout().is_some_and(|t| t <= self.now) {
            self.ep.handle_timeout(self.now);
            self.drain();
        }
    }
}

/// How many header lines of `head` have this name (any case).
pub fn count(head: &str, name: &str) -> usize {
    head.lines()
        .filter(|l| {
            l.split(':')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .count()
}

/// A minimal 200 response with body `hello`.
pub const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

/// An agent with the Neutron backend at 127.0.0.1:9696 (no Keystone), relaying to a metadata
/// server at 127.0.0.1:8775.
pub fn neutron_agent() -> AgentConfig {
    let neutron = HttpTarget::parse_ip_url("http://127.0.0.1:9696").expect("url");
    AgentConfig {
        metadata: Target::Tcp("127.0.0.1:8775".parse().unwrap()),
        signer: Signer::new(b"s3cr3t"),
        backend: Backend::Neutron(NeutronConfig::new(Some(neutron), None)),
        cache_capacity: NonZeroUsize::new(100).unwrap(),
        cache_ttl: Duration::from_secs(5),
        negative_ttl: Duration::from_secs(1),
    }
}

/// Keeps `Duration` in the harness's imports for tests that only move time.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
