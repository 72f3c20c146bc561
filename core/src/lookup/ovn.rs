//! The OVN lookup backend, as `neutron-ovn-metadata-agent` answers (reference: ovn-metadata.md),
//! without its per-request scan: an OVSDB [`Session`] keeps a monitor on the Southbound
//! database open, every update it pushes goes into the [`Southbound`] replica and its index,
//! and a request is one map lookup there, answered at once. No TTL and no cache: the index is
//! exactly as fresh as the monitor stream.
//!
//! While the Southbound is unreachable the last replica keeps answering (an instance does not
//! move while nobody can move it); that is counted and logged once per outage. Before the
//! first replica has loaded there is nothing to answer from: the lookup fails (503) and
//! clients retry, as they do for any failing backend.

use std::time::{Duration, Instant};

use log::{info, warn};
use serde_json::{json, Map};

use super::error::LookupError;
use super::neutron::{ClientAction, ReqId};
use crate::explain::{Lookup, Outcome};
use crate::ovn::{ChassisFilter, Match, Southbound};
use crate::ovsdb::remote::Remote;
use crate::ovsdb::session::{Session, SessionConfig, SessionEvent};
use crate::scope::{Instance, LookupKey, Scope};
use crate::socket::Input;
use crate::tls::{ClientTls, TlsError, TlsTarget};

/// The Southbound database's name.
const SOUTHBOUND: &str = "OVN_Southbound";

/// Settings of the OVN backend.
#[derive(Clone, Debug)]
pub struct OvnConfig {
    /// The Southbound's cluster members (or its one server), tried in turn.
    pub remotes: Vec<Remote>,
    /// Whose ports to replicate.
    pub chassis: ChassisFilter,
    /// Silence this long sends an echo; twice as long drops the connection.
    pub probe_interval: Duration,
    /// TLS for `ssl:` remotes.
    pub tls: Option<ClientTls>,
    /// Entropy for the reconnect jitter (the core has none of its own).
    pub seed: u64,
}

impl OvnConfig {
    /// Backoff between reconnects, doubling from the first to the last (python-ovs's are 1 s
    /// and 8 s; a Southbound cluster member that went away is usually back or replaced sooner).
    /// The first stays for the session's restart window (3 s): a refused connection costs
    /// the server nothing, and 100 ms is the most the replica stays stale past the moment a
    /// restarted Southbound accepts again.
    pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(8));
    /// The largest monitor message accepted: the initial replica of a central agent
    /// (`--chassis '*'`) with 100 000 ports is about 60 MiB of JSON.
    pub const MAX_MESSAGE: usize = 256 << 20;
}

/// What the OVN backend did, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OvnStats {
    /// Whether a monitor is running now.
    pub connected: bool,
    /// Port_Binding rows replicated.
    pub ports: u64,
    /// Datapath_Binding rows replicated.
    pub datapaths: u64,
    /// Monitors started that resumed from the last transaction (no full resync).
    pub resumed: u64,
    /// Monitors started that loaded the whole replica.
    pub resynced: u64,
    /// Update messages applied.
    pub updates: u64,
    /// Answers given from the replica while the Southbound was unreachable.
    pub stale_answers: u64,
}

/// The session and the replica it feeds.
#[derive(Debug)]
pub struct OvnClient {
    session: Session,
    southbound: Southbound,
    /// A snapshot has been applied: there is a replica to answer from.
    loaded: bool,
    /// The session's state for the "not loaded yet" message.
    state: String,
    /// The last update's time, for metrics.
    last_update: Option<Instant>,
    /// An outage has been logged (reset when a monitor runs again).
    outage_logged: bool,
    /// The latest time an input carried.
    now: Instant,
    stats: OvnStats,
}

impl OvnClient {
    /// A client that connects at once (its first action is due at `now`).
    pub fn new(cfg: OvnConfig, now: Instant) -> OvnClient {
        let southbound = Southbound::new(cfg.chassis);
        let mut session = Session::new(
            SessionConfig {
                remotes: cfg.remotes,
                db: SOUTHBOUND.into(),
                monitors: southbound.monitors(),
                probe_interval: cfg.probe_interval,
                backoff_min: OvnConfig::BACKOFF.0,
                backoff_max: OvnConfig::BACKOFF.1,
                seed: cfg.seed,
                max_message: OvnConfig::MAX_MESSAGE,
                tls: cfg.tls,
            },
            now,
        );
        for (table, column, keys) in Southbound::map_keys() {
            session.keep_map_keys(table, column, keys);
        }
        OvnClient {
            session,
            southbound,
            loaded: false,
            state: "not connected yet".to_owned(),
            last_update: None,
            outage_logged: false,
            now,
            stats: OvnStats::default(),
        }
    }

    /// The instance behind `key`: found, not found, or an error while no replica is loaded.
    /// Any scope names a network here: OVN has no router scope, so a router ID is looked up
    /// as a network ID and finds nothing.
    pub fn lookup(&mut self, key: &LookupKey) -> Result<Option<Instance>, LookupError> {
        if !self.loaded {
            return Err(LookupError::NotSynced {
                state: self.state.clone(),
            });
        }
        if !self.stats.connected {
            self.stats.stale_answers += 1;
            if !self.outage_logged {
                self.outage_logged = true;
                warn!(
                    "answering from the last OVN Southbound replica ({} ports) while the \
                     Southbound is unreachable ({})",
                    self.stats.ports, self.state
                );
            }
        }
        let network = match key.scope {
            Scope::OvnNetwork(n) | Scope::Network(n) => n,
            Scope::Router(_) => return Ok(None),
        };
        Ok(match self.southbound.lookup(network, key.ip) {
            Match::Found(instance) => Some(instance),
            Match::NotFound | Match::Ambiguous(_) => None,
        })
    }

    /// What the replica says of `key`, for `/explain` ([`crate::explain`]): counts nothing.
    pub(crate) fn explain(&mut self, key: &LookupKey) -> Lookup {
        let mut facts = Map::new();
        let southbound = json!({
            "connected": self.stats.connected,
            "state": self.state,
            "ports": self.stats.ports,
            "loaded": self.loaded,
        });
        facts.insert("southbound".into(), southbound);
        let (networks, outcome) = match key.scope {
            _ if !self.loaded => (
                None,
                Outcome::Unavailable(format!(
                    "the Southbound replica is not loaded yet ({})",
                    self.state
                )),
            ),
            Scope::Router(r) => (
                None,
                Outcome::NoNetwork(format!(
                    "OVN has no router scope: {r} is looked up as a network and finds nothing \
                 (ask with ovn-network=)"
                )),
            ),
            Scope::OvnNetwork(n) | Scope::Network(n) => {
                let outcome = match self.southbound.lookup(n, key.ip) {
                    Match::Found(instance) => Outcome::Found(instance),
                    Match::NotFound => Outcome::NotFound(format!(
                        "no port bound here has {} on network {n} (or it has no \
                         neutron:device_id)",
                        key.ip
                    )),
                    Match::Ambiguous(ports) => {
                        Outcome::Ambiguous(ports.iter().map(|p| p.to_string()).collect())
                    }
                };
                (Some(vec![n]), outcome)
            }
        };
        Lookup {
            backend: "ovn",
            networks,
            outcome,
            facts,
        }
    }

    /// What the backend did so far.
    pub fn stats(&self) -> OvnStats {
        self.stats
    }

    /// When the last update was applied.
    pub fn last_update(&self) -> Option<Instant> {
        self.last_update
    }

    /// Applies what the session heard to the replica, and sends the condition changes the
    /// replica asks for.
    fn pump(&mut self, now: Instant) {
        while let Some(event) = self.session.poll_event() {
            match event {
                SessionEvent::Snapshot(updates) => {
                    self.southbound.reset();
                    self.apply(now, &updates);
                    self.loaded = true;
                }
                SessionEvent::Update(updates) => self.apply(now, &updates),
                SessionEvent::Connected { remote, resumed } => {
                    self.stats.connected = true;
                    self.outage_logged = false;
                    match resumed {
                        true => self.stats.resumed += 1,
                        false => self.stats.resynced += 1,
                    }
                    self.state = format!("monitoring {remote}");
                }
                SessionEvent::Disconnected { remote, why } => {
                    self.stats.connected = false;
                    self.state = format!("{remote} lost: {why}");
                }
            }
        }
    }

    fn apply(&mut self, now: Instant, updates: &crate::ovsdb::TableUpdates) {
        for (table, conditions) in self.southbound.apply(updates) {
            self.session.set_conditions(now, &table, conditions);
        }
        self.stats.updates += 1;
        self.last_update = Some(now);
        let sizes = self.southbound.stats();
        let (ports, datapaths) = (sizes.ports as u64, sizes.datapaths as u64);
        if !self.loaded {
            info!("OVN Southbound replica loaded: {ports} ports, {datapaths} datapaths");
        }
        self.stats.ports = ports;
        self.stats.datapaths = datapaths;
    }

    /// Something happened on the socket of `req`.
    pub fn handle(&mut self, now: Instant, req: ReqId, input: Input<'_>) {
        self.now = now;
        self.session.handle(now, req, input);
        self.pump(now);
    }

    /// The TLS session of `req` failed (the time is the last one seen: the endpoint's
    /// report carries none).
    pub fn fail(&mut self, req: ReqId, why: TlsError) {
        self.session.fail(req, why);
        self.pump(self.now);
    }

    /// A socket to open or close.
    pub fn poll_action(&mut self) -> Option<ClientAction> {
        self.session.poll_action()
    }

    /// Bytes for the socket of `req`.
    pub fn pending_write(&self, req: ReqId) -> &[u8] {
        self.session.pending_write(req)
    }

    /// `n` of them were written.
    pub fn consume_write(&mut self, req: ReqId, n: usize) {
        self.session.consume_write(req, n);
    }

    /// It wants to read from the socket of `req`.
    pub fn wants_read(&self, req: ReqId) -> bool {
        self.session.wants_read(req)
    }

    /// The TLS peer of `req`, for `ssl:` remotes.
    pub fn tls_target(&self, req: ReqId) -> Option<&TlsTarget> {
        self.session.tls_target(req)
    }

    /// The session's earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// Time reached [`OvnClient::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.session.handle_timeout(now);
        self.pump(now);
    }
}
