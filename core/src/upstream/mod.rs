//! The servers a role forwards to (the agent's metadata servers, the ns-proxy's one agent):
//! which one takes the next request, which are healthy, when to probe them. Pure bookkeeping
//! with time as an argument; the endpoint owns the sockets and reports what happened on them.
//!
//! Health is passive first: an attempt that fails to connect, times out or is answered 5xx
//! counts against its server; [`FAILS_TO_DOWN`] in a row mark it down for a backoff that
//! doubles on every failed trial after it (from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]), and the
//! first success brings it back. One log line when a server goes down, one when it is back.
//! With a probe interval, each server is also asked `GET /` (which Nova answers without an
//! instance: its version list) that often, so that a server is found down before a client
//! finds it, and found back while no request is sent to it.
//!
//! With one server there is nothing to choose between, so no health is kept: the one server
//! is always tried (its failures are the client's answer).

mod cache;
pub(crate) mod probe;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use cache::write_stored;
pub use cache::{CacheKey, CacheLimits, Cached, ResponseCache, Stored, MAX_ENTRY_BYTES};
pub(crate) use probe::Probe;

use crate::metrics::ServerCounters;
use crate::socket::{SockId, Target};
use crate::tls::TlsTarget;

/// Consecutive failed attempts that mark a server down. Two, not one: a single reset may be a
/// pooled connection the server closed, which says nothing about the server.
pub const FAILS_TO_DOWN: u32 = 2;
/// The first backoff of a server marked down.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest backoff: a server back after an outage is in use again within this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One server to forward to.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// Where to connect.
    pub target: Target,
    /// How logs and metrics name it (the URL as configured).
    pub name: String,
    /// TLS to it (an https URL); `None` for plain HTTP (or the endpoint's own upstream TLS).
    pub tls: Option<TlsTarget>,
}

impl ServerSpec {
    /// A plain-HTTP server named `name`.
    pub fn plain(target: Target, name: impl Into<String>) -> ServerSpec {
        ServerSpec {
            target,
            name: name.into(),
            tls: None,
        }
    }
}

/// Whether a server takes requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    /// Taking requests; `fails` failed attempts in a row so far.
    Up { fails: u32 },
    /// Marked down: not chosen while another is up. After `until`, one trial (a request or a
    /// probe) may go; its failure doubles `backoff`.
    Down { until: Instant, backoff: Duration },
}

/// One server and what is known of it.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) spec: ServerSpec,
    health: Health,
    /// Exchanges holding a connection to it now.
    outstanding: usize,
    /// Idle connections to it, most recently used last.
    pub(crate) idle: Vec<SockId>,
    /// When it is probed next (with a probe interval).
    next_probe: Option<Instant>,
    counters: Option<Arc<ServerCounters>>,
    /// No longer configured (a reload removed it): never chosen or probed again; the
    /// exchanges on its connections finish, and those connections then close.
    pub(crate) retired: bool,
}

impl Server {
    fn new(
        spec: ServerSpec,
        next_probe: Option<Instant>,
        counters: Option<Arc<ServerCounters>>,
    ) -> Server {
        Server {
            spec,
            health: Health::Up { fails: 0 },
            outstanding: 0,
            idle: Vec::new(),
            next_probe,
            counters,
            retired: false,
        }
    }
}

/// The servers of one endpoint. Indices are stable: the configured order, then the servers a
/// reload added (a removed one keeps its index, retired).
#[derive(Debug)]
pub(crate) struct Servers {
    servers: Vec<Server>,
    probe_interval: Option<Duration>,
    /// Where ties start: equal candidates take turns instead of the first taking all.
    turn: usize,
}

impl Servers {
    /// `specs` in the configured order; probes (with an interval) start at `now`. `counters`
    /// gives each server's metrics, by name.
    pub(crate) fn new(
        now: Instant,
        specs: Vec<ServerSpec>,
        probe_interval: Option<Duration>,
        mut counters: impl FnMut(&str) -> Option<Arc<ServerCounters>>,
    ) -> Servers {
        let probing = probe_interval.is_some() && specs.len() > 1;
        let servers = specs
            .into_iter()
            .map(|spec| Server::new(spec.clone(), probing.then_some(now), counters(&spec.name)))
            .collect();
        Servers {
            servers,
            probe_interval: probe_interval.filter(|_| probing),
            turn: 0,
        }
    }

    /// How many are configured (retired ones not counted).
    pub(crate) fn len(&self) -> usize {
        self.servers.iter().filter(|s| !s.retired).count()
    }

    /// The configuration read again (SIGHUP) is `specs`, from the next pick: a server whose
    /// name and target are unchanged keeps its health, its pool and its probes — if it is
    /// plain HTTP: an https server's TLS settings may have changed unseen, so it starts
    /// afresh —; the others are retired (see [`Server::retired`]) and the new ones appended.
    /// Returns the retired servers' idle connections, for the endpoint to close.
    pub(crate) fn replace(
        &mut self,
        now: Instant,
        specs: Vec<ServerSpec>,
        probe_interval: Option<Duration>,
        mut counters: impl FnMut(&str) -> Option<Arc<ServerCounters>>,
    ) -> Vec<SockId> {
        let probing = probe_interval.is_some() && specs.len() > 1;
        let mut kept = vec![false; self.servers.len()];
        for spec in specs {
            let same = |(i, s): &(usize, &Server)| {
                !s.retired
                    && !kept[*i]
                    && s.spec.name == spec.name
                    && s.spec.target == spec.target
                    && s.spec.tls.is_none()
                    && spec.tls.is_none()
            };
            let found = self.servers.iter().enumerate().find(same).map(|(i, _)| i);
            match found.and_then(|i| Some((i, self.servers.get_mut(i)?))) {
                Some((i, s)) => {
                    kept[i] = true;
                    s.next_probe = if probing {
                        s.next_probe.or(Some(now))
                    } else {
                        None
                    };
                    if s.counters.is_none() {
                        s.counters = counters(&s.spec.name);
                    }
                }
                None => {
                    let fresh =
                        Server::new(spec.clone(), probing.then_some(now), counters(&spec.name));
                    self.servers.push(fresh);
                    kept.push(true);
                }
            }
        }
        let mut idle = Vec::new();
        for (s, kept) in self.servers.iter_mut().zip(kept) {
            if !kept && !s.retired {
                log::info!(
                    "metadata server {} is no longer configured: retired",
                    s.spec.name
                );
                s.retired = true;
                s.next_probe = None;
                idle.append(&mut s.idle);
            }
        }
        self.probe_interval = probe_interval.filter(|_| probing);
        self.turn = 0;
        idle
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Server> {
        self.servers.get(i)
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Server> {
        self.servers.get_mut(i)
    }

    /// Every server, for draining their pools.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Server> {
        self.servers.iter_mut()
    }

    /// Whether server `i` takes requests at `now` (up, or down with its backoff over).
    pub(crate) fn available(&self, i: usize, now: Instant) -> bool {
        self.servers.get(i).is_some_and(|s| match s.health {
            Health::Up { .. } => true,
            Health::Down { until, .. } => now >= until,
        })
    }

    /// The server for the next attempt of a request that already tried `tried`: among those
    /// available, the one with the fewest outstanding requests. Least outstanding rather than
    /// round robin because a slow server (Nova waiting on its database) keeps its requests
    /// longer: it gets fewer new ones, while a round robin would keep feeding it its share. On
    /// a tie the servers take turns. When none is available, the one whose backoff ends first
    /// (an attempt that may fail fast beats answering 503 without one); `None` once every
    /// server was tried.
    pub(crate) fn pick(&mut self, now: Instant, tried: &[usize]) -> Option<usize> {
        let best = self.choose(now, tried)?;
        self.turn = (best + 1) % self.servers.len();
        Some(best)
    }

    /// The server [`Servers::pick`] would choose, without taking the turn.
    pub(crate) fn choose(&self, now: Instant, tried: &[usize]) -> Option<usize> {
        let n = self.servers.len();
        let candidates = (0..n)
            .map(|k| (self.turn + k) % n)
            .filter(|&i| !tried.contains(&i) && !self.servers[i].retired);
        let best = candidates
            .clone()
            .filter(|&i| self.available(i, now))
            .min_by_key(|&i| self.servers[i].outstanding)
            .or_else(|| {
                candidates.min_by_key(|&i| match self.servers[i].health {
                    Health::Down { until, .. } => until,
                    Health::Up { .. } => now,
                })
            })?;
        Some(best)
    }

    /// Each configured server's state at `now`, for `/explain`.
    pub(crate) fn describe(&self, now: Instant) -> Vec<serde_json::Value> {
        let live = self.servers.iter().filter(|s| !s.retired);
        live.map(|s| {
            let (state, retry) = match s.health {
                Health::Up { fails: 0 } => ("up".to_owned(), None),
                Health::Up { fails } => (format!("up ({fails} failed in a row)"), None),
                Health::Down { until, .. } if now >= until => {
                    ("down: its next request is a trial".to_owned(), None)
                }
                Health::Down { until, .. } => ("down".to_owned(), Some(until - now)),
            };
            serde_json::json!({
                "name": s.spec.name,
                "state": state,
                "retry_in_seconds": retry.map(crate::explain::seconds),
                "outstanding": s.outstanding,
                "idle_connections": s.idle.len(),
            })
        })
        .collect()
    }

    /// An exchange took a connection to server `i`.
    pub(crate) fn busy(&mut self, i: usize) {
        if let Some(s) = self.servers.get_mut(i) {
            s.outstanding += 1;
        }
    }

    /// An exchange let go of its connection to server `i`.
    pub(crate) fn done(&mut self, i: usize) {
        if let Some(s) = self.servers.get_mut(i) {
            s.outstanding = s.outstanding.saturating_sub(1);
        }
    }

    /// Server `i` answered (a status below 500) after `took`.
    pub(crate) fn succeeded(&mut self, i: usize, took: Option<Duration>) {
        let Some(s) = self.servers.get_mut(i) else {
            return;
        };
        if let Some(c) = &s.counters {
            c.answered(took);
        }
        if let Health::Down { .. } = s.health {
            log::info!("metadata server {} is back up", s.spec.name);
            if let Some(c) = &s.counters {
                c.set_down(false);
            }
        }
        s.health = Health::Up { fails: 0 };
    }

    /// An attempt on server `i` failed (`why`, for the log line that marks it down).
    pub(crate) fn failed(&mut self, i: usize, now: Instant, why: &str) {
        let single = self.len() == 1;
        let Some(s) = self.servers.get_mut(i) else {
            return;
        };
        if let Some(c) = &s.counters {
            c.failed();
        }
        if single {
            return;
        }
        s.health = match s.health {
            Health::Up { fails } if fails + 1 < FAILS_TO_DOWN => Health::Up { fails: fails + 1 },
            Health::Up { .. } => {
                log::warn!(
                    "metadata server {} is down ({why}); trying it again in {}s",
                    s.spec.name,
                    BACKOFF_MIN.as_secs()
                );
                if let Some(c) = &s.counters {
                    c.set_down(true);
                }
                Health::Down {
                    until: now + BACKOFF_MIN,
                    backoff: BACKOFF_MIN,
                }
            }
            // A failed trial: wait twice as long (a failure inside the backoff is an attempt
            // that started before it: it changes nothing).
            Health::Down { until, backoff } if now >= until => {
                let backoff = (backoff * 2).min(BACKOFF_MAX);
                log::debug!("metadata server {} still down: {why}", s.spec.name);
                Health::Down {
                    until: now + backoff,
                    backoff,
                }
            }
            down @ Health::Down { .. } => down,
        };
    }

    /// The next server to probe at `now`, if one is due; its next probe is then one interval
    /// away.
    pub(crate) fn due_probe(&mut self, now: Instant) -> Option<usize> {
        let interval = self.probe_interval?;
        let (i, s) = (self.servers.iter_mut().enumerate())
            .find(|(_, s)| s.next_probe.is_some_and(|t| t <= now))?;
        s.next_probe = Some(now + interval);
        Some(i)
    }

    /// The earliest probe due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.servers.iter().filter_map(|s| s.next_probe).min()
    }

    /// The probe interval, which also bounds one probe.
    pub(crate) fn probe_interval(&self) -> Option<Duration> {
        self.probe_interval
    }

    /// A retry of a request on another server, for the metrics.
    pub(crate) fn retried(&self, i: usize) {
        if let Some(c) = self.servers.get(i).and_then(|s| s.counters.as_ref()) {
            c.retried();
        }
    }

    /// The name of server `i` (empty for an unknown index).
    pub(crate) fn name(&self, i: usize) -> &str {
        self.servers.get(i).map_or("", |s| s.spec.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> (Servers, Instant) {
        let now = crate::testing::epoch();
        let specs = (0..n)
            .map(|i| ServerSpec::plain(Target::Unix(format!("/s{i}").into()), format!("s{i}")))
            .collect();
        (Servers::new(now, specs, None, |_| None), now)
    }

    #[test]
    fn least_outstanding_wins_and_ties_take_turns() {
        let (mut s, now) = servers(3);
        let picks: Vec<_> = (0..6).map(|_| s.pick(now, &[]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        s.busy(0);
        s.busy(1);
        assert_eq!(s.pick(now, &[]), Some(2));
        s.busy(2);
        s.busy(2);
        assert_eq!(s.pick(now, &[]), Some(0));
        s.done(1);
        assert_eq!(s.pick(now, &[]), Some(1));
        assert_eq!(s.pick(now, &[0, 1]), Some(2));
        assert_eq!(s.pick(now, &[0, 1, 2]), None);
    }

    #[test]
    fn failures_mark_down_and_the_backoff_doubles_until_a_success() {
        let (mut s, now) = servers(2);
        s.failed(0, now, "refused");
        assert!(s.available(0, now), "one failure is not enough");
        s.failed(0, now, "refused");
        assert!(!s.available(0, now));
        for _ in 0..4 {
            assert_eq!(s.pick(now, &[]), Some(1), "a down server is not chosen");
        }
        // A failure of an attempt started before the backoff changes nothing.
        s.failed(0, now + Duration::from_millis(10), "late");
        let t1 = now + BACKOFF_MIN;
        assert!(s.available(0, t1));
        s.failed(0, t1, "trial failed");
        assert!(!s.available(0, t1 + BACKOFF_MIN));
        assert!(s.available(0, t1 + 2 * BACKOFF_MIN));
        let mut t = t1 + 2 * BACKOFF_MIN;
        for _ in 0..10 {
            s.failed(0, t, "again");
            t += BACKOFF_MAX;
            assert!(
                s.available(0, t),
                "the backoff stops growing at the maximum"
            );
        }
        s.succeeded(0, None);
        assert!(s.available(0, now));
        s.failed(0, now, "once");
        assert!(s.available(0, now), "a success starts the count again");
    }

    #[test]
    fn with_every_server_down_the_first_to_end_its_backoff_is_tried() {
        let (mut s, now) = servers(2);
        for _ in 0..2 {
            s.failed(1, now, "x");
        }
        let later = now + Duration::from_millis(500);
        for _ in 0..2 {
            s.failed(0, later, "x");
        }
        assert_eq!(s.pick(later, &[]), Some(1));
        assert_eq!(s.pick(later, &[1]), Some(0));
    }

    #[test]
    fn one_server_is_never_marked_down() {
        let (mut s, now) = servers(1);
        for _ in 0..5 {
            s.failed(0, now, "refused");
        }
        assert!(s.available(0, now));
        assert_eq!(s.pick(now, &[]), Some(0));
    }

    #[test]
    fn probes_come_due_once_per_interval_per_server() {
        let now = crate::testing::epoch();
        let specs = (0..2)
            .map(|i| ServerSpec::plain(Target::Unix(format!("/s{i}").into()), format!("s{i}")))
            .collect();
        let every = Duration::from_secs(2);
        let mut s = Servers::new(now, specs, Some(every), |_| None);
        assert_eq!(s.poll_timeout(), Some(now));
        assert_eq!(s.due_probe(now), Some(0));
        assert_eq!(s.due_probe(now), Some(1));
        assert_eq!(s.due_probe(now), None);
        assert_eq!(s.poll_timeout(), Some(now + every));
        assert_eq!(s.due_probe(now + every), Some(0));
        // One server: nothing to probe for.
        let one = vec![ServerSpec::plain(Target::Unix("/a".into()), "a")];
        let mut s = Servers::new(now, one, Some(every), |_| None);
        assert_eq!((s.poll_timeout(), s.due_probe(now)), (None, None));
    }

    #[test]
    fn a_reload_keeps_the_servers_it_names_again_and_retires_the_rest() {
        let (mut s, now) = servers(2);
        for _ in 0..2 {
            s.failed(0, now, "x");
        }
        s.get_mut(1).unwrap().idle.push(SockId(9));
        let spec = |n: &str| ServerSpec::plain(Target::Unix(format!("/{n}").into()), n);
        // s0 kept (still down: its health stays), s1 retired, s2 new.
        let idle = s.replace(now, vec![spec("s0"), spec("s2")], None, |_| None);
        assert_eq!(idle, [SockId(9)], "the retired server's idle connections");
        assert_eq!(s.len(), 2);
        assert!(!s.available(0, now), "a kept server keeps its health");
        assert!(s.get(1).unwrap().retired);
        for _ in 0..4 {
            assert_eq!(s.pick(now, &[]), Some(2), "neither down nor retired");
        }
        assert_eq!(s.pick(now, &[2]), Some(0), "down beats retired");
        // A retired server named again comes back as a new one, not as its old slot.
        let idle = s.replace(now, vec![spec("s1")], None, |_| None);
        assert!(idle.is_empty());
        assert_eq!((s.len(), s.pick(now, &[])), (1, Some(3)));
        // One server left: never marked down.
        for _ in 0..3 {
            s.failed(3, now, "x");
        }
        assert!(s.available(3, now));
    }
}
