//! What a scripted peer is: a node of the [`World`](super::World) that is not an endpoint. It
//! hears about its connections ([`PeerInput`]) and answers through a [`PeerIo`], which the
//! world carries out after the call, the way an endpoint's actions are carried out.

use std::any::Any;
use std::time::Instant;

use crate::socket::{ConnectError, Target};

/// One connection of the world, as a peer names it (the same id on both sides).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Something that happened on one of a peer's connections.
#[derive(Clone, Copy, Debug)]
pub enum PeerInput<'a> {
    /// A connection to this peer's listener was accepted.
    Accepted,
    /// A connection this peer opened ([`PeerIo::connect`]) is up.
    Connected,
    /// A connection this peer opened failed; the id is not used again.
    ConnectFailed(ConnectError),
    /// Bytes from the other side.
    Read(&'a [u8]),
    /// The other side will send nothing more.
    Eof,
}

/// What a peer asks the world to do, in order.
#[derive(Debug)]
pub(super) enum Op {
    Connect(ConnId, Target),
    Write(ConnId, Vec<u8>),
    Shutdown(ConnId),
    Close(ConnId),
}

/// A peer's side effects, carried out by the world once the peer's call returns.
#[derive(Debug)]
pub struct PeerIo {
    pub(super) ops: Vec<Op>,
    /// The id the next connection will get (the world's counter, handed over for the call).
    pub(super) next: u64,
}

impl PeerIo {
    /// Opens a connection to whoever listens on `target`; its result comes as
    /// [`PeerInput::Connected`] or [`PeerInput::ConnectFailed`].
    pub fn connect(&mut self, target: Target) -> ConnId {
        let conn = ConnId(self.next);
        self.next += 1;
        self.ops.push(Op::Connect(conn, target));
        conn
    }

    /// Sends `bytes` (the world buffers them without limit on a peer's side).
    pub fn write(&mut self, conn: ConnId, bytes: &[u8]) {
        self.ops.push(Op::Write(conn, bytes.to_vec()));
    }

    /// Sends nothing more on `conn` (the other side reads EOF after what was sent); keeps
    /// reading.
    pub fn shutdown(&mut self, conn: ConnId) {
        self.ops.push(Op::Shutdown(conn));
    }

    /// Neither sends nor reads any more on `conn`.
    pub fn close(&mut self, conn: ConnId) {
        self.ops.push(Op::Close(conn));
    }
}

/// Lets the world hand a test its peer back as the type the test made it with.
pub trait AsAny: Any {
    /// `self` as `&dyn Any`.
    fn as_any(&self) -> &dyn Any;
    /// `self` as `&mut dyn Any`.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A scripted node: an instance's client, a metadata server, Neutron, Keystone.
pub trait Peer: AsAny {
    /// Someone connects to an address this peer listens on: accept it or refuse.
    fn accept(&mut self, _now: Instant) -> Result<(), ConnectError> {
        Ok(())
    }

    /// Something happened on `conn`.
    fn handle(&mut self, now: Instant, conn: ConnId, input: PeerInput<'_>, io: &mut PeerIo);

    /// Called on every step: start what the test asked for since (a request to send).
    fn poll(&mut self, _now: Instant, _io: &mut PeerIo) {}

    /// Whether the peer reads `conn` now (false: a client that does not read).
    fn wants_read(&self, _conn: ConnId) -> bool {
        true
    }

    /// The peer's own next deadline (an answer it holds back until then).
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Time reached [`Peer::poll_timeout`].
    fn handle_timeout(&mut self, _now: Instant, _io: &mut PeerIo) {}

    /// The peer this one wraps (a TLS layer around an HTTP server), so that
    /// [`World::peer`](super::World::peer) finds it by its type through the wrapper.
    fn wrapped(&self) -> Option<&dyn Peer> {
        None
    }

    /// [`Peer::wrapped`], to change.
    fn wrapped_mut(&mut self) -> Option<&mut (dyn Peer + 'static)> {
        None
    }
}
