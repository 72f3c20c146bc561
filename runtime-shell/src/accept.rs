//! One policy for a failed `accept(2)`, so that every runtime keeps serving through the same
//! troubles. A connection the peer already reset (`ECONNABORTED`, `EPROTO`) or an interrupted
//! call is no reason to stop: accept again at once. Running out of descriptors or memory
//! (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) leaves the connection queued, and retrying at once
//! would spin; but under edge-triggered readiness no new event announces the connections
//! already queued, so the loop must come back to the listener by itself after a short pause.
//! Any other error is treated the same way: a listener is never given up.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use crate::Listener;

/// How long a listener rests after running out of descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the loop does after a failed `accept(2)`.
#[derive(Debug, PartialEq, Eq)]
pub enum AcceptFailed {
    /// Accept again now.
    Again,
    /// Nothing is queued: wait for readiness.
    Empty,
    /// Accept again at this instant, whether or not a readiness event comes.
    BackOff(Instant),
}

/// The accept policy of one listener, with its name for the log: a run of failures is
/// logged once at warn level (then at debug), and the recovery once.
pub struct Acceptor {
    name: String,
    failing: bool,
}

impl Acceptor {
    pub fn new(l: &Listener) -> Acceptor {
        Acceptor {
            name: l.to_string(),
            failing: false,
        }
    }

    /// A connection was accepted.
    pub fn accepted(&mut self) {
        if std::mem::take(&mut self.failing) {
            log::info!("accepting on {} again", self.name);
        }
    }

    /// `accept(2)` failed with `e` at `now`: what to do next.
    pub fn failed(&mut self, now: Instant, e: &io::Error) -> AcceptFailed {
        let transient = [libc::ECONNABORTED, libc::EPROTO, libc::EINTR];
        if e.raw_os_error().is_some_and(|n| transient.contains(&n)) {
            return AcceptFailed::Again;
        }
        if e.kind() == ErrorKind::WouldBlock {
            return AcceptFailed::Empty;
        }
        if std::mem::replace(&mut self.failing, true) {
            log::debug!("accept on {} failed again: {e}", self.name);
        } else {
            log::warn!(
                "accept on {} failed: {e}; retrying every {} ms",
                self.name,
                ACCEPT_BACKOFF.as_millis()
            );
        }
        AcceptFailed::BackOff(now + ACCEPT_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn retries_aborted_waits_when_empty_and_backs_off_out_of_descriptors() {
        let l = Listener::bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let mut a = Acceptor::new(&l);
        let now = Instant::now();
        for errno in [libc::ECONNABORTED, libc::EPROTO, libc::EINTR] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(a.failed(now, &e), AcceptFailed::Again, "{e}");
        }
        let e = io::Error::from_raw_os_error(libc::EAGAIN);
        assert_eq!(a.failed(now, &e), AcceptFailed::Empty);
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            let e = io::Error::from_raw_os_error(errno);
            let next = AcceptFailed::BackOff(now + ACCEPT_BACKOFF);
            assert_eq!(a.failed(now, &e), next, "{e}");
            assert!(a.failing);
        }
        a.accepted();
        assert!(!a.failing);
    }
}
