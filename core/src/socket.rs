//! The words the core and its runtimes share: socket ids, where to connect, what happened on a
//! socket and what the runtime must do with one (and the one output that is not about a
//! socket, [`Event`]). Everything imports this module and it imports nothing of the core's but
//! the value an event carries, so no two modules need each other to say "socket".

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::metadata::StoreRequest;

/// One socket the runtime holds on the core's behalf. Ids are never reused within an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockId(pub u64);

/// Where the runtime should open a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix stream socket path.
    Unix(PathBuf),
}

/// Why a connection attempt failed; the core picks the status from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// Nobody listens there (ECONNREFUSED, ENOENT for a Unix path).
    Refused,
    /// Any other failure (unreachable, permission, out of descriptors).
    Other,
}

/// Something that happened on a socket.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// Bytes read from the socket.
    Read(&'a [u8]),
    /// The peer will send nothing more (read returned 0).
    Eof,
    /// An [`Action::Connect`] completed.
    Connected,
    /// An [`Action::Connect`] failed.
    ConnectFailed(ConnectError),
    /// The socket broke (reset, write error): it is unusable from now on.
    Error,
}

/// Something the runtime must do. Drain with `Endpoint::poll_action` after every mutation.
/// (What the application must do, such as storing a password, is an [`Event`].)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to `target` and report [`Input::Connected`] or
    /// [`Input::ConnectFailed`] on `sock`.
    Connect {
        /// The id the new socket goes by.
        sock: SockId,
        /// Where to connect.
        target: Target,
    },
    /// `sock` has new bytes in `Endpoint::pending_write` or may read again
    /// (`Endpoint::wants_read`): write and read it as far as it goes.
    Wake(SockId),
    /// Stop writing on `sock` (half-close); keep reading it.
    Shutdown(SockId),
    /// Close `sock` and forget it; the core will not mention it again.
    Close(SockId),
    /// Send what is written on `sock` from now on with this IP TTL (IPv4) / hop limit (IPv6):
    /// the IMDSv2 token's answer, so that it dies one router (a container bridge, a forwarder
    /// inside the instance) away. Kept for the rest of the connection, never restored: Linux
    /// stamps the TTL when a segment is transmitted, retransmissions included, so a restore
    /// once the answer is written would let a retransmitted token out at the full TTL, and
    /// one at the next request would too (a client may send it without having received the
    /// answer). Nor is anything lost by keeping it: TCP delivers in order, so a peer the
    /// token's answer cannot reach receives nothing sent after it on that connection either.
    /// A failure is logged by the runtime; nothing is reported back.
    SetHopLimit {
        /// The client's socket (TCP; a Unix socket has no hops and ignores it).
        sock: SockId,
        /// 1 to 64.
        hops: u8,
    },
}

/// Something the application must do that is not about a socket: the endpoint's other output
/// (`Endpoint::poll_event`), beside the socket [`Action`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Persist a password the server accepted (it is already served from memory); the
    /// runtime hands it to whoever owns the instance files.
    Store(StoreRequest),
}
