//! The OVSDB client session: one monitor kept alive across reconnects and cluster members,
//! driven by the endpoint like any lookup backend (`ReqId`s, [`ClientAction`]s, the methods of
//! `policy::Backend`), and read by its consumer as [`SessionEvent`]s.
//!
//! # One connection's life
//!
//! ```text
//! state            event                                       next
//! Backoff          the wait is over                            Connecting (next remote)
//! Connecting       Input::Connected                            CheckingServer (transact select on _Server.Database)
//! CheckingServer   the row exists; clustered ⇒ connected       Requesting (monitor_cond_since, or monitor_cond)
//! CheckingServer   no row, a disconnected or stale member      Backoff (next remote)
//! Requesting       error reply to monitor_cond_since           Requesting (monitor_cond; remembered)
//! Requesting       reply                                       Monitoring (Connected, then Snapshot or Update)
//! Monitoring       update3 / update2                           Monitoring (Update)
//! any              EOF, error, garbage, an error reply,        Backoff (Disconnected once the transport
//!                  2 × probe_interval without a byte           was up)
//! ```
//!
//! The monitor is resumable: every `update3` carries the id of the transaction it reflects,
//! and a reconnect asks `monitor_cond_since` for what happened after it. The server answers
//! `found = true` with just the missed changes ([`SessionEvent::Update`]), or `false` with a
//! whole snapshot to replace the replica with ([`SessionEvent::Snapshot`]). Only a clustered
//! database keeps the transaction history this needs: a standalone server always answers
//! `false`.
//!
//! Changed conditions ([`Session::set_conditions`]) make the replica and the remembered
//! transaction id disagree with the server's idea of the monitor until the server has
//! acknowledged them; a reconnect before that asks for a snapshot instead of resuming.

mod config;
mod incoming;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use log::{debug, info, warn};
use serde_json::{json, Value};

pub use config::{SessionConfig, SessionConfigError};

use self::config::Backoff;
use self::incoming::{Incoming, MonitorReply, UpdateParams};
use super::datum::{Atom, Datum};
use super::framing::Framer;
use super::monitor::{where_json, Condition};
use super::remote::Remote;
use super::rpc::{self, Message, RpcError};
use super::update::{MapKeys, TableUpdates};
use crate::lookup::{ClientAction, ReqId};
use crate::socket::Input;
use crate::tls::{TlsError, TlsTarget};

/// `monitor_cond_since`'s "no transaction seen yet".
const NO_TXN: &str = "00000000-0000-0000-0000-000000000000";

/// What the consumer learns, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    /// Replace the replica: clear everything, then apply (the first monitor, or a resume the
    /// server could not honour).
    Snapshot(TableUpdates),
    /// Apply on top of the replica (a resumed monitor's missed changes, or a live update).
    Update(TableUpdates),
    /// A monitor is established; its data follows as the next event.
    Connected {
        /// The remote, as written (`tcp:127.0.0.1:6642`).
        remote: String,
        /// The server resumed from the last transaction seen (an `Update` follows, not a
        /// `Snapshot`).
        resumed: bool,
    },
    /// A connection that had come up is gone (failed connection attempts are only logged and
    /// counted); the replica stays as it was until the next monitor's data.
    Disconnected {
        /// The remote.
        remote: String,
        /// Why, for a log line.
        why: String,
    },
}

/// Where the session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Waiting before the next connection attempt.
    Backoff,
    /// A connection attempt is under way.
    Connecting,
    /// Connected; asking `_Server` whether this server serves the database.
    CheckingServer,
    /// The monitor request is sent.
    Requesting,
    /// Monitoring: the replica is current.
    Monitoring,
}

/// What a session has done so far, for metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    /// The remote of the current connection, once it is up.
    pub remote: Option<String>,
    /// Where the session is.
    pub state: SessionState,
    /// Connections that came up.
    pub connects: u64,
    /// Monitors the server resumed (`found = true`).
    pub resumes: u64,
    /// Snapshots after the first: replicas replaced because a resume was not possible.
    pub resyncs: u64,
    /// Connections lost after they came up.
    pub disconnects: u64,
    /// Messages received.
    pub messages: u64,
    /// The server's `echo` requests answered.
    pub echoes_answered: u64,
    /// When the last snapshot or update arrived.
    pub last_update: Option<Instant>,
}

/// What an answer we wait for is the answer to.
#[derive(Clone, Copy, Debug)]
enum Pending {
    ServerCheck,
    /// The monitor request carrying conditions of generation `.1`.
    Monitor(MonitorKind, u64),
    CondChange(u64),
    Echo,
    /// A caller's transaction ([`Session::transact`]), by its id.
    Transact(u64),
}

/// Which monitor request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MonitorKind {
    /// `monitor_cond_since` (replies `[found, last-txn-id, updates]`, then `update3`).
    Since,
    /// `monitor_cond` (replies `updates`, then `update2`).
    Cond,
}

/// The one connection (there is at most one).
#[derive(Debug)]
struct Conn {
    req: ReqId,
    remote: String,
    state: SessionState,
    framer: Framer,
    out: Vec<u8>,
    /// When the last byte arrived (or the attempt started).
    last_rx: Instant,
    probe_sent: bool,
    tls: Option<TlsTarget>,
    pending: BTreeMap<u64, Pending>,
    /// The notifications to expect once monitoring.
    kind: MonitorKind,
}

/// The client state machine. See the module documentation.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    monitor_id: Value,
    conn: Option<Conn>,
    next_req: u64,
    next_id: u64,
    next_remote: usize,
    reconnect_at: Option<Instant>,
    backoff: Backoff,
    /// The last transaction the replica reflects (update3's or the monitor reply's).
    last_txn: Option<Box<str>>,
    /// Bumped by every condition change; `acked_gen` is the newest the server acknowledged.
    cond_gen: u64,
    acked_gen: u64,
    /// The server refused `monitor_cond_since` once: use `monitor_cond` from now on.
    since_unsupported: bool,
    /// The highest Raft log index a cluster member reported, to refuse a stale member.
    max_index: Option<i64>,
    synced: bool,
    /// The latest `now` of any call (for [`Session::fail`], which has none).
    latest: Instant,
    /// The map keys replicated, where not all.
    map_keys: MapKeys,
    actions: VecDeque<ClientAction>,
    events: VecDeque<SessionEvent>,
    /// Answers to [`Session::transact`], in arrival order.
    replies: VecDeque<(u64, Result<Value, RpcError>)>,
    status: SessionStatus,
}

impl Session {
    /// A session that starts connecting to the first remote at once (settings out of range
    /// are clamped: check them first with [`SessionConfig::check`]).
    pub fn new(cfg: SessionConfig, now: Instant) -> Session {
        let cfg = cfg.clamped();
        let mut s = Session {
            backoff: Backoff::new(cfg.backoff_min, cfg.backoff_max, cfg.seed),
            cfg,
            monitor_id: json!("mdproxy"),
            conn: None,
            next_req: 0,
            next_id: 0,
            next_remote: 0,
            reconnect_at: None,
            last_txn: None,
            cond_gen: 0,
            acked_gen: 0,
            since_unsupported: false,
            max_index: None,
            synced: false,
            latest: now,
            map_keys: MapKeys::default(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            replies: VecDeque::new(),
            status: SessionStatus {
                remote: None,
                state: SessionState::Backoff,
                connects: 0,
                resumes: 0,
                resyncs: 0,
                disconnects: 0,
                messages: 0,
                echoes_answered: 0,
                last_update: None,
            },
        };
        s.connect(now);
        s
    }

    /// Something happened on the socket of `req`; inputs for a closed one are ignored.
    /// May queue actions, events and bytes to write.
    pub fn handle(&mut self, now: Instant, req: ReqId, input: Input<'_>) {
        self.latest = now;
        let Some(conn) = self.conn.as_mut().filter(|c| c.req == req) else {
            return;
        };
        match input {
            Input::Connected if conn.state == SessionState::Connecting => {
                conn.state = SessionState::CheckingServer;
                conn.last_rx = now;
                self.status.connects += 1;
                debug!("OVSDB {}: connected, checking _Server", conn.remote);
                let select = json!(["_Server", {
                    "op": "select",
                    "table": "Database",
                    "where": [["name", "==", self.cfg.db.as_ref()]],
                    "columns": ["name", "model", "connected", "leader", "index"],
                }]);
                self.send(now, "transact", select, Pending::ServerCheck);
            }
            Input::Connected => {}
            Input::ConnectFailed(e) => self.lose(now, format!("connection failed ({e:?})")),
            Input::Eof => self.lose(now, "the server closed the connection".into()),
            Input::Error => self.lose(now, "the connection broke".into()),
            Input::Read(data) => {
                conn.last_rx = now;
                conn.probe_sent = false;
                self.read(now, req, data);
            }
        }
    }

    /// The TLS session of `req` failed.
    pub fn fail(&mut self, req: ReqId, why: TlsError) {
        if self.conn.as_ref().is_some_and(|c| c.req == req) {
            self.lose(self.latest, why.to_string());
        }
    }

    /// A socket to open or close. Call after every other call, until `None`.
    pub fn poll_action(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    /// Bytes for the socket of `req`.
    pub fn pending_write(&self, req: ReqId) -> &[u8] {
        match &self.conn {
            Some(c) if c.req == req && c.state != SessionState::Connecting => &c.out,
            _ => &[],
        }
    }

    /// `n` bytes of [`Session::pending_write`] were written.
    pub fn consume_write(&mut self, req: ReqId, n: usize) {
        if let Some(c) = self.conn.as_mut().filter(|c| c.req == req) {
            c.out.drain(..n.min(c.out.len()));
        }
    }

    /// Whether to read from the socket of `req` (always, once it is connected).
    pub fn wants_read(&self, req: ReqId) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.req == req && c.state != SessionState::Connecting)
    }

    /// The TLS peer of `req`, for an `ssl:` remote.
    pub fn tls_target(&self, req: ReqId) -> Option<&TlsTarget> {
        self.conn
            .as_ref()
            .filter(|c| c.req == req)
            .and_then(|c| c.tls.as_ref())
    }

    /// The next deadline: a probe, a stalled connection, the end of a backoff.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.cfg.probe_interval;
        match &self.conn {
            Some(c) if c.state == SessionState::Connecting || c.probe_sent => {
                Some(c.last_rx + 2 * p)
            }
            Some(c) => Some(c.last_rx + p),
            None => self.reconnect_at,
        }
    }

    /// Time reached [`Session::poll_timeout`] (fine to call early or twice).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.latest = now;
        let p = self.cfg.probe_interval;
        match &mut self.conn {
            Some(c) if now >= c.last_rx + 2 * p => {
                let why = format!("nothing heard for {:?}", 2 * p);
                self.lose(now, why);
            }
            Some(c) if now >= c.last_rx + p && !c.probe_sent => {
                if c.state != SessionState::Connecting {
                    c.probe_sent = true;
                    debug!("OVSDB {}: silent for {p:?}, probing", c.remote);
                    self.send(now, "echo", json!([]), Pending::Echo);
                }
            }
            Some(_) => {}
            None => {
                if self.reconnect_at.is_some_and(|t| now >= t) {
                    self.connect(now);
                }
            }
        }
    }

    /// What the consumer must know, in order.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Replicates the rows of `table` meeting any of `conditions` (none: no row) from now on:
    /// sent at once (`monitor_cond_change`) when monitoring, and used by every later monitor
    /// request. The server's answer arrives as updates. A table not monitored is ignored.
    pub fn set_conditions(&mut self, now: Instant, table: &str, conditions: Vec<Condition>) {
        self.latest = now;
        let Some(m) = self.cfg.monitors.iter_mut().find(|m| &*m.table == table) else {
            warn!("OVSDB: conditions for {table}, which is not monitored, ignored");
            return;
        };
        m.conditions = Some(conditions);
        self.cond_gen += 1;
        let monitoring = self
            .conn
            .as_ref()
            .is_some_and(|c| c.state == SessionState::Monitoring);
        if monitoring {
            self.send_cond_change(now, table);
        }
    }

    /// Sends a `transact` request with `params` (a database name, then operations: see
    /// `ovsdb::transact`) on the monitoring connection, and returns its id; its answer comes
    /// out of [`Session::poll_transact_reply`]. `None` when not monitoring: nothing is sent.
    /// A connection lost first loses the answer too (the server may or may not have committed
    /// it), so send only what is safe to repeat, and repeat it after the next `Connected`.
    pub fn transact(&mut self, now: Instant, params: Value) -> Option<u64> {
        self.latest = now;
        let monitoring = self
            .conn
            .as_ref()
            .is_some_and(|c| c.state == SessionState::Monitoring);
        if !monitoring {
            return None;
        }
        let id = self.next_id;
        self.send(now, "transact", params, Pending::Transact(id));
        Some(id)
    }

    /// The answer to a [`Session::transact`]: its id and the `result` (or the JSON-RPC
    /// error) for `ovsdb::transact::parse_reply`. Call after every `handle`, until `None`.
    pub fn poll_transact_reply(&mut self) -> Option<(u64, Result<Value, RpcError>)> {
        self.replies.pop_front()
    }

    /// Replicates only `keys` of map column `column` of `table`: the others are dropped
    /// while the server's messages are read, before they take memory (a monitor cannot ask
    /// for some keys of a map). Applies to every message read from now on.
    pub fn keep_map_keys(&mut self, table: &str, column: &str, keys: &[&str]) {
        self.map_keys.keep(table, column, keys);
    }

    /// Counters and where the session is.
    pub fn status(&self) -> SessionStatus {
        self.status.clone()
    }

    /// Starts an attempt on the next remote (or waits, if it cannot be tried).
    fn connect(&mut self, now: Instant) {
        self.reconnect_at = None;
        let Some(remote) = self
            .cfg
            .remotes
            .get(self.next_remote % self.cfg.remotes.len().max(1))
            .cloned()
        else {
            warn!("OVSDB: no remote to connect to");
            self.status.state = SessionState::Backoff;
            return;
        };
        self.next_remote = self.next_remote.wrapping_add(1);
        let tls = match &remote {
            Remote::Ssl(addr) => match ssl_target(&self.cfg, addr.ip().to_string()) {
                Ok(t) => Some(t),
                Err(why) => {
                    warn!("OVSDB {remote}: {why}");
                    self.wait(now);
                    return;
                }
            },
            _ => None,
        };
        let req = ReqId(self.next_req);
        self.next_req += 1;
        debug!("OVSDB {remote}: connecting");
        self.actions
            .push_back(ClientAction::Connect(req, remote.target()));
        self.conn = Some(Conn {
            req,
            remote: remote.to_string(),
            state: SessionState::Connecting,
            framer: Framer::new(self.cfg.max_message),
            out: Vec::new(),
            last_rx: now,
            probe_sent: false,
            tls,
            pending: BTreeMap::new(),
            kind: MonitorKind::Since,
        });
        self.status.state = SessionState::Connecting;
    }

    /// Closes the connection, says why, and schedules the next attempt.
    fn lose(&mut self, now: Instant, why: String) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        self.actions.push_back(ClientAction::Close(conn.req));
        self.status.remote = None;
        if conn.state == SessionState::Connecting {
            warn!("OVSDB {}: {why}", conn.remote);
        } else {
            warn!("OVSDB {}: connection lost: {why}", conn.remote);
            self.status.disconnects += 1;
            self.events.push_back(SessionEvent::Disconnected {
                remote: conn.remote,
                why,
            });
        }
        self.wait(now);
    }

    fn wait(&mut self, now: Instant) {
        let delay = self.backoff.take();
        debug!("OVSDB: next attempt in {delay:?}");
        self.reconnect_at = Some(now + delay);
        self.status.state = SessionState::Backoff;
    }

    /// Cuts `data` into messages and acts on each, until it is used up or the connection is
    /// gone.
    fn read(&mut self, now: Instant, req: ReqId, mut data: &[u8]) {
        loop {
            let Some(conn) = self.conn.as_mut().filter(|c| c.req == req) else {
                return;
            };
            let monitoring = (conn.state == SessionState::Monitoring).then_some(conn.kind);
            let (pending, keys) = (&conn.pending, &self.map_keys);
            let read = conn.framer.next_text(&mut data, |text| {
                incoming::read(text, monitoring, pending, keys)
            });
            match read {
                Ok(Some(Ok(m))) => {
                    self.status.messages += 1;
                    match m {
                        Incoming::Message(m) => self.on_message(now, m),
                        Incoming::Updates(u) => self.on_updates(now, u),
                        Incoming::MonitorReply { id, reply } => {
                            if let Some(Pending::Monitor(_, gen)) =
                                self.conn.as_mut().and_then(|c| c.pending.remove(&id))
                            {
                                self.on_monitor_reply(now, gen, Ok(reply));
                            }
                        }
                    }
                }
                Ok(Some(Err(why))) => return self.lose(now, why),
                Ok(None) => return,
                Err(e) => return self.lose(now, e.to_string()),
            }
        }
    }

    fn on_message(&mut self, now: Instant, m: Message) {
        match m {
            Message::Request { method, params, id } if method == "echo" => {
                self.status.echoes_answered += 1;
                self.write(now, rpc::response(params, id));
            }
            Message::Request { method, .. } => {
                debug!("OVSDB: ignoring the server's request {method:?}");
            }
            Message::Notification { method, params } => self.on_notification(now, &method, params),
            Message::Response { id, result } => {
                let pending = id.as_u64().and_then(|id| {
                    let c = self.conn.as_mut()?;
                    c.pending.remove(&id)
                });
                match pending {
                    Some(p) => self.on_response(now, p, result),
                    None => debug!("OVSDB: answer to no request of ours ({id})"),
                }
            }
        }
    }

    /// A notification that took the general path: the monitor's own are read into rows
    /// here (see [`incoming`]), any other is ignored.
    fn on_notification(&mut self, now: Instant, method: &str, params: Value) {
        let Some(conn) = &self.conn else { return };
        let kind = conn.kind;
        if method != incoming::update_method(kind) || conn.state != SessionState::Monitoring {
            debug!("OVSDB: ignoring notification {method:?}");
            return;
        }
        match UpdateParams::from_value(kind, &self.map_keys, &params) {
            Ok(u) => self.on_updates(now, u),
            Err(e) => self.lose(now, format!("malformed {method} notification: {e}")),
        }
    }

    /// The running monitor's `update2`/`update3`.
    fn on_updates(&mut self, now: Instant, u: UpdateParams) {
        let UpdateParams {
            monitor,
            txn,
            updates,
        } = u;
        if monitor != self.monitor_id {
            debug!("OVSDB: update for another monitor ({monitor})");
            return;
        }
        if let Some(txn) = txn {
            self.last_txn = Some(txn);
        }
        self.status.last_update = Some(now);
        self.events.push_back(SessionEvent::Update(updates));
    }

    fn on_response(&mut self, now: Instant, pending: Pending, result: Result<Value, RpcError>) {
        match (pending, result) {
            (Pending::Echo, _) => {}
            // Refused transactions are the caller's business, not the connection's.
            (Pending::Transact(id), result) => self.replies.push_back((id, result)),
            (Pending::ServerCheck, Ok(v)) => match self.check_server(&v) {
                Ok(()) => self.request_monitor(now),
                Err(why) => self.lose(now, why),
            },
            (Pending::ServerCheck, Err(e)) => {
                self.lose(now, format!("the _Server database cannot be read: {e}"))
            }
            (Pending::Monitor(kind, gen), Ok(v)) => {
                self.on_monitor_reply(now, gen, MonitorReply::from_value(kind, &self.map_keys, &v))
            }
            (Pending::Monitor(MonitorKind::Since, _), Err(e)) => {
                warn!("OVSDB: the server refused monitor_cond_since ({e}); using monitor_cond from now on");
                self.since_unsupported = true;
                self.request_monitor(now);
            }
            (Pending::Monitor(MonitorKind::Cond, _), Err(e)) => {
                self.lose(now, format!("the server refused the monitor: {e}"))
            }
            (Pending::CondChange(gen), Ok(_)) => self.acked_gen = self.acked_gen.max(gen),
            (Pending::CondChange(_), Err(e)) => {
                self.lose(now, format!("the server refused new conditions: {e}"))
            }
        }
    }

    /// Whether the `_Server` row of our database says this server can serve it.
    fn check_server(&mut self, v: &Value) -> Result<(), String> {
        let db = &self.cfg.db;
        let rows = v
            .get(0)
            .and_then(|r| r.get("rows"))
            .and_then(Value::as_array)
            .ok_or_else(|| format!("unexpected _Server answer {}", excerpt(v)))?;
        let Some(row) = rows.first() else {
            return Err(format!("the server does not serve database {db}"));
        };
        let column = |name: &str| {
            row.get(name)
                .and_then(|v| Datum::from_json(v).ok())
                .and_then(|d| d.scalar().cloned())
        };
        let model = column("model");
        let model = model.as_ref().and_then(Atom::as_str).unwrap_or("?");
        let connected = matches!(column("connected"), Some(Atom::Boolean(true)));
        let leader = matches!(column("leader"), Some(Atom::Boolean(true)));
        let index = match column("index") {
            Some(Atom::Integer(i)) => Some(i),
            _ => None,
        };
        if model == "clustered" {
            if !connected {
                return Err(format!("this member is not connected to the {db} cluster"));
            }
            if let (Some(i), Some(max)) = (index, self.max_index) {
                if i < max {
                    return Err(format!(
                        "this member is stale (log index {i}, {max} seen before)"
                    ));
                }
            }
            self.max_index = index.max(self.max_index);
        }
        let role = match (model, leader) {
            ("clustered", true) => " (leader)",
            ("clustered", false) => " (follower)",
            _ => "",
        };
        debug!("OVSDB: {db} is {model}{role}");
        Ok(())
    }

    /// Sends the monitor request: resuming when the replica matches the conditions asked.
    fn request_monitor(&mut self, now: Instant) {
        let mut tables = serde_json::Map::new();
        for m in &self.cfg.monitors {
            tables.insert(m.table.to_string(), json!([m.request_json()]));
        }
        let db = self.cfg.db.as_ref();
        let gen = self.cond_gen;
        let (kind, method, params) = if self.since_unsupported {
            let params = json!([db, self.monitor_id, tables]);
            (MonitorKind::Cond, "monitor_cond", params)
        } else {
            let txn = match (&self.last_txn, self.acked_gen == self.cond_gen) {
                (Some(txn), true) => txn.as_ref(),
                _ => NO_TXN,
            };
            let params = json!([db, self.monitor_id, tables, txn]);
            (MonitorKind::Since, "monitor_cond_since", params)
        };
        if let Some(c) = &mut self.conn {
            c.state = SessionState::Requesting;
            c.kind = kind;
        }
        self.status.state = SessionState::Requesting;
        self.send(now, method, params, Pending::Monitor(kind, gen));
    }

    fn on_monitor_reply(&mut self, now: Instant, gen: u64, reply: Result<MonitorReply, String>) {
        let MonitorReply {
            found,
            txn,
            updates,
        } = match reply {
            Ok(r) => r,
            Err(why) => return self.lose(now, why),
        };
        let Some(conn) = &mut self.conn else { return };
        conn.state = SessionState::Monitoring;
        let remote = conn.remote.clone();
        self.status.state = SessionState::Monitoring;
        self.status.remote = Some(remote.clone());
        self.status.last_update = Some(now);
        self.last_txn = txn;
        self.acked_gen = self.acked_gen.max(gen);
        self.backoff.reset();
        let how = match (found, self.synced) {
            (true, _) => "resumed",
            (false, true) => "full snapshot again",
            (false, false) => "first snapshot",
        };
        info!("OVSDB {remote}: monitoring {} ({how})", self.cfg.db);
        self.events.push_back(SessionEvent::Connected {
            remote,
            resumed: found,
        });
        if found {
            self.status.resumes += 1;
            self.events.push_back(SessionEvent::Update(updates));
        } else {
            if self.synced {
                self.status.resyncs += 1;
            }
            self.events.push_back(SessionEvent::Snapshot(updates));
        }
        self.synced = true;
        // Conditions changed while the request was on its way.
        if self.acked_gen < self.cond_gen {
            let tables: Vec<Box<str>> = self.cfg.monitors.iter().map(|m| m.table.clone()).collect();
            for t in tables {
                self.send_cond_change(now, &t);
            }
        }
    }

    fn send_cond_change(&mut self, now: Instant, table: &str) {
        let Some(m) = self.cfg.monitors.iter().find(|m| &*m.table == table) else {
            return;
        };
        let condition = match &m.conditions {
            Some(c) => where_json(c),
            None => json!([true]),
        };
        let params = json!([self.monitor_id, self.monitor_id, {table: [{"where": condition}]}]);
        self.send(
            now,
            "monitor_cond_change",
            params,
            Pending::CondChange(self.cond_gen),
        );
    }

    /// Queues a request of ours.
    fn send(&mut self, now: Instant, method: &str, params: Value, pending: Pending) {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(c) = &mut self.conn {
            c.pending.insert(id, pending);
        }
        self.write(now, rpc::request(method, params, id));
    }

    /// Queues bytes; a server that lets more than `max_message` of them pile up is not
    /// reading, and is dropped rather than buffered for.
    fn write(&mut self, now: Instant, bytes: Vec<u8>) {
        let Some(c) = &mut self.conn else { return };
        if c.out.len() + bytes.len() > self.cfg.max_message {
            return self.lose(now, "the server reads nothing we send".into());
        }
        c.out.extend_from_slice(&bytes);
    }
}

/// The TLS peer for an `ssl:` remote at `ip`.
fn ssl_target(cfg: &SessionConfig, ip: String) -> Result<TlsTarget, String> {
    match &cfg.tls {
        Some(client) => TlsTarget::new(client.clone(), &ip).map_err(|e| e.to_string()),
        None if cfg!(feature = "tls") => Err("an ssl: remote needs TLS settings".into()),
        None => Err("an ssl: remote needs a build with the tls feature".into()),
    }
}

/// The start of a JSON value, for a log line.
fn excerpt(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 120 {
        let mut end = 120;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(any(test, fuzzing, feature = "testing"))]
impl Session {
    /// Bytes held for the current connection: the unfinished message and what waits to be
    /// written (the fuzz target checks both stay within `max_message`).
    pub fn buffered(&self) -> (usize, usize) {
        self.conn
            .as_ref()
            .map_or((0, 0), |c| (c.framer.buffered(), c.out.len()))
    }
}
