//! The endpoint's side of active health probes: it opens a socket per probe due, hands the
//! probe what happens on it, and tells the server set the verdict. The probe itself, and
//! when one is due, live in [`crate::upstream`].

use std::time::Instant;

use super::{Endpoint, Owner};
use crate::socket::{Action, Input, SockId};
use crate::upstream::probe::Verdict;
use crate::upstream::Probe;

impl Endpoint {
    /// Starts the probes due at `now` (one per server at a time).
    pub(super) fn start_probes(&mut self, now: Instant) {
        if self.draining {
            return;
        }
        while let Some(i) = self.servers.due_probe(now) {
            if self.probes.values().any(|p| p.server == i) {
                continue;
            }
            let sock = self.new_id();
            let Some(spec) = self.servers.get(i).map(|s| &s.spec) else {
                continue;
            };
            // The probe's answer is due within the interval and the connect timeout both.
            let interval = self.servers.probe_interval().unwrap_or_default();
            let bound = interval.min(self.settings.timeouts.connect);
            let host = spec.name.split_once("://").map_or(&*spec.name, |(_, h)| h);
            let probe = Probe::new(i, host.trim_end_matches('/'), now, now + bound);
            if let Some(tls) = spec.tls.as_ref().or(self.upstream_tls.as_ref()) {
                self.tls.connecting(sock, tls);
            }
            let target = spec.target.clone();
            self.owners.insert(sock, Owner::Probe);
            self.timers.set(sock, Some(probe.deadline));
            self.probes.insert(sock, probe);
            self.actions.push_back(Action::Connect { sock, target });
        }
    }

    /// Something happened on probe socket `sock`.
    pub(super) fn probe_input(&mut self, now: Instant, sock: SockId, input: Input<'_>) {
        let Some(probe) = self.probes.get_mut(&sock) else {
            return;
        };
        match probe.handle(input) {
            Some(Verdict::Up) => {
                let took = now.saturating_duration_since(probe.started());
                let server = probe.server;
                self.close(sock);
                self.servers.succeeded(server, Some(took));
            }
            Some(Verdict::Down(why)) => self.probe_failed(now, sock, why),
            None => {
                if !probe.pending_write().is_empty() {
                    self.wakes.insert(sock);
                }
            }
        }
    }

    /// The probe on `sock` found its server failing.
    pub(super) fn probe_failed(&mut self, now: Instant, sock: SockId, why: String) {
        if let Some(probe) = self.probes.get(&sock) {
            let server = probe.server;
            self.close(sock);
            self.servers.failed(server, now, &why);
        }
    }

    /// The probe on `sock` was not answered in time.
    pub(super) fn probe_timed_out(&mut self, now: Instant, sock: SockId) {
        self.probe_failed(now, sock, "probe not answered in time".to_owned());
    }
}
