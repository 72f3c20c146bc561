//! The TLS shuttle: between a socket's ciphertext and its owner's plaintext. The endpoint
//! gives a session every input of a TLS socket and hears back what its owner must be told
//! ([`Heard`]); it offers the session the owner's plaintext and learns how much of it is on
//! the wire ([`Fed`]). The owner — a connection, a backend client — never sees ciphertext.

use std::time::Instant;

use super::{
    ClientTls, Clocks, EndpointTls, EofMeaning, ServerTls, Session, Sessions, TlsError, TlsTarget,
};
use crate::socket::{Input, SockId};

/// The sessions of one endpoint's TLS sockets and the clocks rustls reads.
#[derive(Debug)]
pub(crate) struct Shuttle {
    sessions: Sessions,
    /// Moved with every input's `now` (see [`crate::tls`]).
    clocks: Clocks,
}

/// How what a TLS socket said ends for its owner.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer sends nothing more.
    Eof,
    /// The session failed.
    Failed(TlsError),
    /// Not about TLS (a failed connect, a broken socket): the owner hears the input as is.
    Pass,
}

/// What the owner of a TLS socket must hear after an input, in this order.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    /// The socket has ciphertext to write (or the handshake finished).
    pub(crate) wake: bool,
    /// A client session's handshake finished: the owner hears `Connected` now.
    pub(crate) connected: bool,
    /// Decrypted bytes.
    pub(crate) plain: Vec<u8>,
    /// Then this.
    pub(crate) end: Option<End>,
}

/// What offering plaintext to a session did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Fed {
    /// The session took some of it.
    pub(crate) took: bool,
    /// Bytes of the owner's plaintext now on the wire as ciphertext: the owner's `consume`.
    pub(crate) acked: usize,
    /// The socket has ciphertext to write.
    pub(crate) wake: bool,
}

impl Shuttle {
    /// No sessions yet; the clocks of the endpoint's TLS settings and of its backend's.
    pub(crate) fn new(now: Instant, tls: &EndpointTls, backend: Option<&ClientTls>) -> Shuttle {
        let clocks = Clocks::new(tls, backend);
        clocks.advance(now);
        Shuttle {
            sessions: Sessions::new(),
            clocks,
        }
    }

    /// Moves the wall clocks rustls reads to `now`.
    pub(crate) fn advance(&self, now: Instant) {
        self.clocks.advance(now);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub(crate) fn is_tls(&self, sock: SockId) -> bool {
        self.sessions.contains_key(&sock)
    }

    /// `sock` was accepted and speaks TLS as a server.
    pub(crate) fn accepted(&mut self, sock: SockId, tls: &ServerTls) {
        self.sessions.insert(sock, Session::server(tls));
    }

    /// `sock` connects to `target` and speaks TLS as its client.
    pub(crate) fn connecting(&mut self, sock: SockId, target: &TlsTarget) {
        self.sessions.insert(sock, Session::client(target));
    }

    pub(crate) fn remove(&mut self, sock: SockId) {
        self.sessions.remove(&sock);
    }

    /// The session still handshakes (and so wants to read whatever its owner wants).
    pub(crate) fn handshaking(&self, sock: SockId) -> bool {
        self.sessions.get(&sock).is_some_and(Session::handshaking)
    }

    /// The ciphertext to write on `sock`; `None` for a socket without TLS.
    pub(crate) fn pending(&self, sock: SockId) -> Option<&[u8]> {
        self.sessions.get(&sock).map(Session::pending)
    }

    /// The runtime wrote `n` bytes of [`Shuttle::pending`].
    pub(crate) fn consume(&mut self, sock: SockId, n: usize) {
        if let Some(session) = self.sessions.get_mut(&sock) {
            session.consume(n);
        }
    }

    /// Queues `close_notify` before a half-close of `sock`.
    pub(crate) fn close_notify(&mut self, sock: SockId) {
        if let Some(session) = self.sessions.get_mut(&sock) {
            session.close_notify();
        }
    }

    /// An input on TLS socket `sock`: what its owner hears of it.
    pub(crate) fn input(&mut self, now: Instant, sock: SockId, input: Input<'_>) -> Heard {
        let Some(session) = self.sessions.get_mut(&sock) else {
            return Heard::default();
        };
        match input {
            Input::Connected => match session.failure() {
                Some(why) => Heard {
                    end: Some(End::Failed(why.clone())),
                    ..Heard::default()
                },
                // The ClientHello is waiting; the owner hears `Connected` after the handshake.
                None => Heard {
                    wake: true,
                    ..Heard::default()
                },
            },
            Input::Read(data) => {
                let got = session.read(now, data);
                Heard {
                    wake: !session.pending().is_empty() || got.established,
                    connected: got.established && session.is_client(),
                    plain: got.plain,
                    end: match got.failed {
                        Some(why) => Some(End::Failed(why)),
                        None if got.closed => Some(End::Eof),
                        None => None,
                    },
                }
            }
            Input::Eof => Heard {
                end: match session.eof() {
                    EofMeaning::Eof => Some(End::Eof),
                    EofMeaning::Nothing => None,
                    EofMeaning::Failed(why) => Some(End::Failed(why)),
                },
                ..Heard::default()
            },
            Input::ConnectFailed(_) | Input::Error => Heard {
                end: Some(End::Pass),
                ..Heard::default()
            },
        }
    }

    /// Offers the owner's plaintext for `sock` to its session, as far as the session takes it
    /// (not during the handshake, not past [`super::HIGH_WATER`]). The owner's bytes count as
    /// written only once their ciphertext is ([`Fed::acked`]), so a connection that closes
    /// after its last bytes were "written" loses none.
    pub(crate) fn feed(&mut self, sock: SockId, plain: &[u8]) -> Fed {
        let Some(session) = self.sessions.get_mut(&sock) else {
            return Fed::default();
        };
        let took = session.write(plain);
        Fed {
            took,
            acked: session.take_acked(),
            wake: !session.pending().is_empty(),
        }
    }
}
