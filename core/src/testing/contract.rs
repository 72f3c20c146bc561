//! The runtime's side of the endpoint contract, checked where a runtime meets it: every socket
//! an [`Endpoint`] names is new when it first appears (accept or connect), only open sockets are
//! woken, shut down or closed, a shutdown comes with no unsent bytes, a shut-down socket gets no
//! more bytes, a closed one offers and wants nothing, and `handle_timeout(now)` leaves no
//! deadline at or before `now`. The fuzz harness (`fuzz::proxy_conn`) and the simulator
//! ([`crate::testing::sim`]) both drive endpoints through one [`Contract`], so a broken promise
//! fails the same way, with the socket and what was done to it, in either.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::endpoint::Endpoint;
use crate::socket::{Action, SockId};

/// What the contract knows about one socket of an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    /// Accepted from a listener (rather than connected by the endpoint).
    pub client: bool,
    /// An [`Action::Connect`] whose result the runtime has not reported yet.
    pub connecting: bool,
    /// The endpoint shut its write side ([`Action::Shutdown`]).
    pub shut: bool,
    /// The endpoint closed it ([`Action::Close`]); it must never be mentioned again.
    pub closed: bool,
}

/// Every socket one endpoint ever named, and the checks on them.
#[derive(Debug, Default)]
pub struct Contract {
    socks: BTreeMap<SockId, SockState>,
}

impl Contract {
    /// A contract for an endpoint with no sockets yet.
    pub fn new() -> Self {
        Contract::default()
    }

    /// `Endpoint::accept` returned `sock`: it must be new.
    pub fn accepted(&mut self, sock: SockId) {
        let fresh = SockState {
            client: true,
            ..SockState::default()
        };
        assert!(
            self.socks.insert(sock, fresh).is_none(),
            "accept reused {sock:?}"
        );
    }

    /// Checks `action`, just taken from `ep.poll_action()`, and records what it changes.
    pub fn action(&mut self, ep: &Endpoint, action: &Action) {
        match action {
            Action::Connect { sock, .. } => {
                let fresh = SockState {
                    connecting: true,
                    ..SockState::default()
                };
                assert!(
                    self.socks.insert(*sock, fresh).is_none(),
                    "connect reused {sock:?}"
                );
            }
            Action::Wake(sock) => {
                self.open(*sock, "woken");
            }
            Action::Shutdown(sock) => {
                self.open(*sock, "shut down");
                assert!(
                    ep.pending_write(*sock).is_empty(),
                    "{sock:?} shut down with unsent bytes"
                );
                self.update(*sock, |s| s.shut = true);
            }
            Action::Close(sock) => {
                self.open(*sock, "closed");
                self.update(*sock, |s| s.closed = true);
            }
            Action::SetHopLimit { sock, hops } => {
                self.open(*sock, "hop-limited");
                assert!((1..=64).contains(hops), "hop limit {hops}");
                let client = self.socks.get(sock).is_some_and(|s| s.client);
                assert!(
                    client,
                    "{sock:?} is not a client socket: hop limits are the instance's"
                );
            }
        }
    }

    /// The runtime reports the result of the connect of `sock`; false when none is awaited
    /// (unknown, closed or already reported), and then nothing is to be reported.
    pub fn connect_done(&mut self, sock: SockId) -> bool {
        match self.socks.get_mut(&sock) {
            Some(s) if s.connecting && !s.closed => {
                s.connecting = false;
                true
            }
            _ => false,
        }
    }

    /// The state of `sock`, which must be known and open.
    pub fn open(&self, sock: SockId, what: &str) -> &SockState {
        let s = self
            .socks
            .get(&sock)
            .unwrap_or_else(|| panic!("unknown {sock:?} {what}"));
        assert!(!s.closed, "{sock:?} {what} after it was closed");
        s
    }

    /// The state of `sock`, if the endpoint ever named it.
    pub fn get(&self, sock: SockId) -> Option<&SockState> {
        self.socks.get(&sock)
    }

    /// Every socket named so far, in id order.
    pub fn socks(&self) -> impl Iterator<Item = (SockId, &SockState)> {
        self.socks.iter().map(|(&id, s)| (id, s))
    }

    fn update(&mut self, sock: SockId, f: impl FnOnce(&mut SockState)) {
        if let Some(s) = self.socks.get_mut(&sock) {
            f(s);
        }
    }

    /// After `ep.handle_timeout(now)` (and the drain): no deadline may be left at or before
    /// `now`, or a runtime would spin.
    pub fn after_timeout(&self, ep: &Endpoint, now: Instant) {
        if let Some(t) = ep.poll_timeout() {
            assert!(
                t > now,
                "poll_timeout {t:?} not after handle_timeout({now:?})"
            );
        }
    }

    /// `sock` holds at most `bound` unsent bytes.
    pub fn check_bound(&self, ep: &Endpoint, sock: SockId, bound: usize) {
        let pending = ep.pending_write(sock).len();
        assert!(
            pending <= bound,
            "{sock:?} holds {pending} unsent bytes (bound {bound})"
        );
    }

    /// Every open socket holds at most `bound` unsent bytes, and a shut-down one none.
    pub fn check_buffers(&self, ep: &Endpoint, bound: usize) {
        for (&id, s) in self.socks.iter().filter(|(_, s)| !s.closed) {
            self.check_bound(ep, id, bound);
            if s.shut {
                assert!(
                    ep.pending_write(id).is_empty(),
                    "{id:?} got bytes after its shutdown"
                );
            }
        }
    }

    /// A closed socket offers nothing and wants nothing.
    pub fn check_closed(&self, ep: &Endpoint) {
        for (&id, _) in self.socks.iter().filter(|(_, s)| s.closed) {
            assert!(
                ep.pending_write(id).is_empty(),
                "closed {id:?} still offers bytes"
            );
            assert!(!ep.wants_read(id), "closed {id:?} still wants reads");
        }
    }

    /// Whether every socket named so far is closed.
    pub fn all_closed(&self) -> bool {
        self.socks.values().all(|s| s.closed)
    }
}
