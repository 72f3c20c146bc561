//! The endpoint's side of TLS: it routes each TLS socket's input through the session
//! ([`crate::tls::shuttle`]) and tells the owner what it carried, and moves owners' plaintext
//! into the sessions after every mutation.

use std::time::Instant;

use super::{Endpoint, Owner};
use crate::proxy::conn::Conn;
use crate::socket::{Input, SockId};
use crate::tls::shuttle::End;
use crate::tls::TlsError;

impl Endpoint {
    /// An input on a TLS socket: the session takes the bytes, the owner hears what they
    /// carried (see [`crate::tls`] for what it is told when).
    pub(super) fn handle_tls(&mut self, now: Instant, sock: SockId, input: Input<'_>) {
        let heard = self.tls.input(now, sock, input);
        if heard.wake {
            self.wakes.insert(sock);
        }
        if heard.connected {
            self.dispatch(now, sock, Input::Connected);
        }
        if !heard.plain.is_empty() {
            self.dispatch(now, sock, Input::Read(&heard.plain));
        }
        match heard.end {
            Some(End::Eof) => self.dispatch(now, sock, Input::Eof),
            Some(End::Failed(why)) => self.tls_failed(now, sock, why),
            Some(End::Pass) => self.dispatch(now, sock, input),
            None => {}
        }
    }

    /// The TLS session of `sock` failed: its owner learns why. An upstream's client gets an
    /// error answer, a backend exchange fails with the reason, a pooled socket goes. An
    /// accepted client's socket sends the session's alert and is shut down; its connection is
    /// not told (it hears the client's EOF, or its own timeout ends it).
    fn tls_failed(&mut self, now: Instant, sock: SockId, why: TlsError) {
        match self.owners.get(&sock).copied() {
            Some(Owner::Upstream(key)) => {
                let why = why.to_string();
                self.with_conn(now, key, |c| c.on_upstream_tls_failure(now, &why));
            }
            Some(Owner::Backend(req)) => {
                if let Some(backend) = self.policy.backend() {
                    backend.fail(req, why);
                }
            }
            Some(Owner::Pooled) => {
                log::debug!("idle upstream connection closed: {why}");
                self.drop_pooled(sock);
            }
            Some(Owner::Probe) => self.probe_failed(now, sock, format!("probe: {why}")),
            Some(Owner::Client) => {
                let peer = self.conns.get(&sock).map_or("unix-peer", Conn::peer_text);
                log::info!("{peer} {why}");
                self.shutdown(sock);
                self.wakes.insert(sock);
            }
            None => {}
        }
    }

    /// Moves the plaintext the owner of TLS socket `sock` has for it into the session (see
    /// [`Shuttle::feed`]) and tells the owner how much of it is on the wire by now. Returns
    /// whether anything moved.
    pub(super) fn feed_tls(&mut self, now: Instant, sock: SockId) -> bool {
        let mut moved = false;
        loop {
            let owner = self.owners.get(&sock).copied();
            let plain: &[u8] = match owner {
                Some(Owner::Client) => self.conns.get(&sock).map_or(&[], |c| c.pending_write(sock)),
                Some(Owner::Upstream(key)) => {
                    self.conns.get(&key).map_or(&[], |c| c.pending_write(sock))
                }
                Some(Owner::Backend(req)) => {
                    (self.policy.backend_ref()).map_or(&[], |b| b.pending_write(req))
                }
                Some(Owner::Probe) => self.probes.get(&sock).map_or(&[], |p| p.pending_write()),
                Some(Owner::Pooled) | None => &[],
            };
            let fed = self.tls.feed(sock, plain);
            if fed.wake {
                self.wakes.insert(sock);
            }
            if !fed.took && fed.acked == 0 {
                return moved;
            }
            moved = true;
            if fed.acked == 0 {
                continue;
            }
            let n = fed.acked;
            match owner {
                Some(Owner::Backend(req)) => {
                    if let Some(backend) = self.policy.backend() {
                        backend.consume_write(req, n);
                    }
                }
                Some(Owner::Upstream(key)) => {
                    self.with_conn(now, key, |c| c.consume_write(now, sock, n));
                }
                Some(Owner::Probe) => {
                    if let Some(probe) = self.probes.get_mut(&sock) {
                        probe.consume_write(n);
                    }
                }
                _ => self.with_conn(now, sock, |c| c.consume_write(now, sock, n)),
            }
        }
    }

    /// Feeds the TLS sockets that may have new plaintext (those with a wake-up pending) until
    /// nothing moves. Runs at the end of every mutation.
    pub(super) fn flush_tls(&mut self, now: Instant) {
        if self.tls.is_empty() {
            return;
        }
        loop {
            let socks: Vec<SockId> = (self.wakes.iter())
                .filter(|s| self.tls.is_tls(**s))
                .copied()
                .collect();
            let mut moved = false;
            for sock in socks {
                moved |= self.feed_tls(now, sock);
            }
            if !moved {
                return;
            }
        }
    }
}
