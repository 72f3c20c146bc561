//! Liveness and readiness, as the admin listener (`--metrics-listen`) answers them:
//! `GET /live` (every event loop turns) and `GET /ready` (the process is started, its loops
//! turn, and each role's backend can answer), each `200` or `503` with a JSON body naming
//! every check, so that a probe's failure says which one.
//!
//! The runtime reports each loop's turns ([`Health::turned`], from a periodic hook on that
//! loop's thread) and the end of start-up ([`Health::started`]); the backends' state comes
//! from the counters the endpoints keep anyway ([`crate::metrics`]). Nothing here reads a
//! clock: ages are measured against the `now` of the request.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::metrics::{BackendState, Metrics};

/// A loop that has not turned for this long is not live. The runtime reports every
/// [`TURN_INTERVAL`]; three missed reports leave room for a busy machine.
pub const STALL: Duration = Duration::from_secs(3);
/// How often a runtime should report each loop's turn.
pub const TURN_INTERVAL: Duration = Duration::from_secs(1);

/// What the runtime reports: see the [module docs](self).
#[derive(Debug, Default)]
pub struct Health {
    started: AtomicBool,
    /// When each loop last turned, by the index the runtime gave it.
    turns: Mutex<Vec<Option<Instant>>>,
}

impl Health {
    /// Start-up is over: listeners bound, privileges dropped, files read.
    pub fn started(&self) {
        self.started.store(true, Relaxed);
    }

    /// Loop `index` turned at `now`.
    pub fn turned(&self, index: usize, now: Instant) {
        let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        if turns.len() <= index {
            turns.resize(index + 1, None);
        }
        turns[index] = Some(now);
    }

    /// `None` when every loop turned within [`STALL`] of `now`, else why not.
    fn loops(&self, now: Instant) -> Option<String> {
        let turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        if turns.is_empty() {
            return Some("no event loop has reported yet".into());
        }
        let stalled: Vec<String> = (turns.iter().enumerate())
            .filter(|(_, t)| t.is_none_or(|t| now.saturating_duration_since(t) > STALL))
            .map(|(i, _)| i.to_string())
            .collect();
        (!stalled.is_empty()).then(|| {
            format!(
                "event loop {} has not turned for over {} s",
                stalled.join(", "),
                STALL.as_secs()
            )
        })
    }
}

/// One check's outcome: its name, and why it fails (`None`: it passes).
type Check = (&'static str, Option<String>);

/// The answer to `GET /live` or `GET /ready` (`ready`): status and JSON body.
pub(crate) fn answer(metrics: &Metrics, now: Instant, ready: bool) -> (u16, String) {
    let health = metrics.health();
    let mut checks: Vec<Check> = vec![("loops", health.loops(now))];
    if ready {
        let started = health.started.load(Relaxed);
        checks.insert(0, ("started", (!started).then(|| "still starting".into())));
        checks.extend(metrics.backends().into_iter().map(|(role, state)| {
            let why = match state {
                BackendState::Ready => None,
                BackendState::NotSynced => Some("the OVN Southbound replica is not loaded yet"),
                BackendState::Disconnected => Some("the OVN Southbound is unreachable"),
                BackendState::Failing => Some("the last lookup failed (Keystone or Neutron)"),
            };
            (role, why.map(str::to_owned))
        }));
    }
    let ok = checks.iter().all(|(_, why)| why.is_none());
    let fields: Vec<String> = checks
        .iter()
        .map(|(name, why)| {
            let value = why.as_deref().map_or("\"ok\"".to_owned(), json_string);
            format!("\"{name}\":{value}")
        })
        .collect();
    let key = if ready { "ready" } else { "live" };
    let body = format!("{{\"{key}\":{ok},\"checks\":{{{}}}}}\n", fields.join(","));
    (if ok { 200 } else { 503 }, body)
}

/// `text` as a JSON string (the messages above are ASCII; quotes and backslashes escaped).
fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::OvnStats;
    use crate::metrics::MetricRole;

    #[test]
    fn live_needs_every_loop_to_have_turned_recently() {
        let (m, t0) = (Metrics::new(), crate::testing::epoch());
        let (status, body) = answer(&m, t0, false);
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("no event loop has reported yet"), "{body}");
        m.health().turned(0, t0);
        m.health().turned(1, t0);
        assert_eq!(answer(&m, t0 + STALL, false).0, 200);
        m.health().turned(0, t0 + STALL * 2);
        let (status, body) = answer(&m, t0 + STALL * 2, false);
        assert_eq!(status, 503);
        assert!(body.contains("event loop 1 has not turned"), "{body}");
        assert!(body.starts_with("{\"live\":false,"), "{body}");
    }

    #[test]
    fn ready_follows_start_up_and_the_ovn_backend() {
        let (m, t0) = (Metrics::new(), crate::testing::epoch());
        m.enable(MetricRole::Agent);
        m.health().turned(0, t0);
        let (status, body) = answer(&m, t0, true);
        assert_eq!(status, 503);
        assert!(body.contains("\"started\":\"still starting\""), "{body}");
        m.health().started();
        assert_eq!(
            answer(&m, t0, true),
            (
                200,
                "{\"ready\":true,\"checks\":{\"started\":\"ok\",\"loops\":\"ok\"}}\n".into()
            )
        );

        let agent = m.role(MetricRole::Agent);
        let mut stats = OvnStats::default();
        agent.ovn(&stats, None);
        let (status, body) = answer(&m, t0, true);
        assert_eq!(status, 503);
        assert!(
            body.contains("\"agent\":\"the OVN Southbound replica is not loaded yet\""),
            "{body}"
        );
        stats.connected = true;
        stats.resynced = 1;
        agent.ovn(&stats, Some(t0));
        assert_eq!(answer(&m, t0, true).0, 200);
        stats.connected = false;
        agent.ovn(&stats, Some(t0));
        let (status, body) = answer(&m, t0, true);
        assert_eq!(status, 503);
        assert!(body.contains("unreachable"), "{body}");
    }

    #[test]
    fn ready_follows_the_last_neutron_lookup() {
        let (m, t0) = (Metrics::new(), crate::testing::epoch());
        m.enable(MetricRole::Agent);
        m.health().turned(0, t0);
        m.health().started();
        let agent = m.role(MetricRole::Agent);
        agent.backend_failure();
        let (status, body) = answer(&m, t0, true);
        assert_eq!(status, 503);
        assert!(body.contains("the last lookup failed"), "{body}");
        agent.backend_answer();
        assert_eq!(answer(&m, t0, true).0, 200);
    }
}
