//! TLS around a scripted peer (feature `tls`): [`Tls`] wraps any [`Peer`] in one rustls session
//! per connection, so the inner peer speaks plaintext HTTP and the wire carries only
//! ciphertext (an HTTPS Neutron, an instance's client of an HTTPS metadata server).
//!
//! The sessions are rustls' own, built here, not the endpoint's TLS layer (`crate::tls`): the
//! two ends of a simulated handshake share no code of the core, so a mistake in that layer
//! cannot hide by making the same mistake on the other side. Like an endpoint, a client session
//! tells its inner peer `Connected` only once the handshake is done, and the peer's shutdown
//! sends `close_notify` before the TCP FIN. The sessions read the time from a [`WallClock`]
//! moved to the world's time on every call, as an endpoint moves its own.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};

use super::peer::{ConnId, Op, Peer, PeerInput, PeerIo};
use crate::socket::ConnectError;
use crate::tls::{Identity, WallClock};

/// The sessions' settings: which side of the handshake this peer takes.
enum Side {
    /// Accepts connections with this certificate (no client certificates asked for).
    Server(Arc<ServerConfig>),
    /// Opens connections to a server that must show a certificate for this name.
    Client(Arc<ClientConfig>, ServerName<'static>),
}

/// One connection's session and how far its two streams got.
struct Session {
    conn: Connection,
    /// The inner peer knows the connection (accepted, or connected with the handshake done).
    known: bool,
    /// This side sends nothing more on the connection (shut down, closed or failed).
    ended: bool,
    /// The inner peer heard the end of the incoming stream.
    eof: bool,
}

/// A peer whose connections all speak TLS; see the [module docs](self).
pub struct Tls<P> {
    side: Side,
    clock: Arc<WallClock>,
    inner: P,
    sessions: BTreeMap<ConnId, Session>,
    /// Why sessions failed (rustls' errors and the alerts it received), oldest first.
    pub failures: Vec<String>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

impl<P: Peer> Tls<P> {
    /// `inner` behind HTTPS with `identity`'s certificate; fails the test when rustls refuses it.
    pub fn server(identity: Identity, clock: Arc<WallClock>, inner: P) -> Self {
        let time: Arc<dyn TimeProvider> = clock.clone();
        let config = ServerConfig::builder_with_details(provider(), time)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(identity.chain, identity.key)
            })
            .unwrap_or_else(|e| panic!("TLS server settings: {e}"));
        Tls::new(Side::Server(Arc::new(config)), clock, inner)
    }

    /// `inner`'s connections over TLS to a server whose certificate leads to one of `roots`
    /// and names `name`; fails the test when rustls refuses the settings.
    pub fn client(
        roots: Vec<CertificateDer<'static>>,
        name: &str,
        clock: Arc<WallClock>,
        inner: P,
    ) -> Self {
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(roots);
        assert!(added > 0, "no usable CA certificate");
        let name = ServerName::try_from(name.to_owned())
            .unwrap_or_else(|e| panic!("TLS server name {name}: {e}"));
        let time: Arc<dyn TimeProvider> = clock.clone();
        let config = ClientConfig::builder_with_details(provider(), time)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("TLS client settings: {e}"))
            .with_root_certificates(store)
            .with_no_client_auth();
        Tls::new(Side::Client(Arc::new(config), name), clock, inner)
    }

    fn new(side: Side, clock: Arc<WallClock>, inner: P) -> Self {
        Tls {
            side,
            clock,
            inner,
            sessions: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    /// A new session for `conn`, on the side this peer takes.
    fn start(&mut self, conn: ConnId) {
        let session = match &self.side {
            Side::Server(cfg) => rustls::ServerConnection::new(cfg.clone()).map(Connection::from),
            Side::Client(cfg, name) => {
                ClientConnection::new(cfg.clone(), name.clone()).map(Connection::from)
            }
        };
        let session = session.unwrap_or_else(|e| panic!("TLS session for {conn:?}: {e}"));
        self.sessions.insert(
            conn,
            Session {
                conn: session,
                known: false,
                ended: false,
                eof: false,
            },
        );
    }

    /// Calls the inner peer with a [`PeerIo`] of its own, then carries out what it asked for
    /// through the sessions.
    fn call(&mut self, io: &mut PeerIo, f: impl FnOnce(&mut P, &mut PeerIo)) {
        let mut inner = PeerIo {
            ops: Vec::new(),
            next: io.next,
        };
        f(&mut self.inner, &mut inner);
        io.next = inner.next;
        for op in inner.ops {
            self.carry(op, io);
        }
    }

    /// One operation of the inner peer: plaintext goes into the session, never on the wire; an
    /// operation on a connection whose session is gone (failed) is dropped.
    fn carry(&mut self, op: Op, io: &mut PeerIo) {
        match op {
            Op::Connect(conn, target) => {
                self.start(conn);
                io.ops.push(Op::Connect(conn, target));
            }
            Op::Write(conn, bytes) => {
                if let Some(s) = self.sessions.get_mut(&conn) {
                    if let Err(e) = s.conn.writer().write_all(&bytes) {
                        panic!("{conn:?}: the TLS session took no plaintext: {e}");
                    }
                    self.flush(conn, io);
                }
            }
            Op::Shutdown(conn) => {
                if let Some(s) = self.sessions.get_mut(&conn) {
                    s.conn.send_close_notify();
                    self.flush(conn, io);
                    self.end(conn);
                    io.shutdown(conn);
                }
            }
            Op::Close(conn) => {
                if self.sessions.contains_key(&conn) {
                    self.flush(conn, io);
                    self.sessions.remove(&conn);
                    io.close(conn);
                }
            }
        }
    }

    fn end(&mut self, conn: ConnId) {
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.ended = true;
        }
    }

    /// Writes the ciphertext `conn`'s session has, unless this side ended the connection.
    fn flush(&mut self, conn: ConnId, io: &mut PeerIo) {
        let Some(s) = self.sessions.get_mut(&conn).filter(|s| !s.ended) else {
            return;
        };
        let mut out = Vec::new();
        while s.conn.wants_write() {
            if s.conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        if !out.is_empty() {
            io.write(conn, &out);
        }
    }

    /// Ciphertext from the other side: plaintext for the inner peer, the handshake's answers
    /// for the wire, or a failure that ends the connection.
    fn read(&mut self, now: Instant, conn: ConnId, mut bytes: &[u8], io: &mut PeerIo) {
        let mut plain = Vec::new();
        let mut closed = false;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        while !bytes.is_empty() {
            let got = s.conn.read_tls(&mut bytes).map_err(|e| e.to_string());
            let state = got.and_then(|_| s.conn.process_new_packets().map_err(|e| e.to_string()));
            match state {
                Ok(state) => closed |= state.peer_has_closed(),
                Err(why) => return self.fail(now, conn, why, io),
            }
            drain_plaintext(&mut s.conn, &mut plain);
        }
        let handshaken = !s.known && !s.conn.is_handshaking();
        if handshaken {
            s.known = true;
            self.call(io, |p, io| p.handle(now, conn, PeerInput::Connected, io));
        }
        if !plain.is_empty() {
            self.call(io, |p, io| p.handle(now, conn, PeerInput::Read(&plain), io));
        }
        if closed {
            self.eof(now, conn, io);
        }
        self.flush(conn, io);
    }

    /// The incoming stream ended (`close_notify` or the TCP EOF): the inner peer hears it once.
    fn eof(&mut self, now: Instant, conn: ConnId, io: &mut PeerIo) {
        let Some(s) = self.sessions.get_mut(&conn).filter(|s| s.known && !s.eof) else {
            return;
        };
        s.eof = true;
        self.call(io, |p, io| p.handle(now, conn, PeerInput::Eof, io));
    }

    /// The session of `conn` failed: its alert goes out, the connection is closed, and the inner
    /// peer hears the end (a client that never got its handshake: a failed connect).
    fn fail(&mut self, now: Instant, conn: ConnId, why: String, io: &mut PeerIo) {
        self.failures.push(why);
        self.flush(conn, io);
        let Some(s) = self.sessions.remove(&conn) else {
            return;
        };
        io.close(conn);
        let input = if s.known {
            (!s.eof).then_some(PeerInput::Eof)
        } else {
            matches!(self.side, Side::Client(..))
                .then_some(PeerInput::ConnectFailed(ConnectError::Other))
        };
        if let Some(input) = input {
            self.call(io, |p, io| p.handle(now, conn, input, io));
        }
    }
}

/// Moves what plaintext `conn` has decrypted into `out`.
fn drain_plaintext(conn: &mut Connection, out: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        match conn.reader().read(&mut buf) {
            Ok(0) => return,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => panic!("reading a TLS session's plaintext: {e}"),
        }
    }
}

impl<P: Peer> Peer for Tls<P> {
    fn accept(&mut self, now: Instant) -> Result<(), ConnectError> {
        self.inner.accept(now)
    }

    fn handle(&mut self, now: Instant, conn: ConnId, input: PeerInput<'_>, io: &mut PeerIo) {
        self.clock.advance(now);
        match input {
            PeerInput::Accepted => {
                self.start(conn);
                if let Some(s) = self.sessions.get_mut(&conn) {
                    s.known = true;
                }
                self.call(io, |p, io| p.handle(now, conn, input, io));
            }
            // The ClientHello; the inner peer hears `Connected` once the handshake is done.
            PeerInput::Connected => self.flush(conn, io),
            PeerInput::ConnectFailed(_) => {
                self.sessions.remove(&conn);
                self.call(io, |p, io| p.handle(now, conn, input, io));
            }
            PeerInput::Read(bytes) => self.read(now, conn, bytes, io),
            PeerInput::Eof if self.sessions.get(&conn).is_some_and(|s| !s.known) => self.fail(
                now,
                conn,
                "the connection ended in the handshake".into(),
                io,
            ),
            PeerInput::Eof => self.eof(now, conn, io),
        }
    }

    fn poll(&mut self, now: Instant, io: &mut PeerIo) {
        self.clock.advance(now);
        self.call(io, |p, io| p.poll(now, io));
    }

    fn wants_read(&self, conn: ConnId) -> bool {
        self.inner.wants_read(conn)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant, io: &mut PeerIo) {
        self.clock.advance(now);
        self.call(io, |p, io| p.handle_timeout(now, io));
    }

    fn wrapped(&self) -> Option<&dyn Peer> {
        Some(&self.inner)
    }

    fn wrapped_mut(&mut self) -> Option<&mut (dyn Peer + 'static)> {
        Some(&mut self.inner)
    }
}
