//! The sockets the loop owns: listeners and connected streams, TCP or Unix, as mio types.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use mdproxy_core::socket::Target;
use mdproxy_shell::{either, Socket};
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A listener registered with the poller.
pub(crate) enum Listening {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listening {
    /// Takes over the shell's socket (already non-blocking, as mio requires).
    pub(crate) fn new(socket: Socket) -> Listening {
        match socket {
            Socket::Tcp(l) => Listening::Tcp(TcpListener::from_std(l)),
            Socket::Unix(l) => Listening::Unix(UnixListener::from_std(l)),
        }
    }

    pub(crate) fn source(&mut self) -> &mut dyn Source {
        match self {
            Listening::Tcp(l) => l,
            Listening::Unix(l) => l,
        }
    }

    /// The next pending connection and its peer (`None` for Unix clients).
    pub(crate) fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listening::Tcp(l) => l.accept().map(|(s, peer)| {
                let _ = s.set_nodelay(true);
                (Stream::Tcp(s), Some(peer))
            }),
            Listening::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), None)),
        }
    }
}

/// A connected (or connecting) stream.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Starts a non-blocking connect; completion shows as writability.
    pub(crate) fn connect(target: &Target) -> io::Result<Stream> {
        match target {
            Target::Tcp(addr) => TcpStream::connect(*addr).map(|s| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
            Target::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        }
    }

    pub(crate) fn source(&mut self) -> &mut dyn Source {
        either!(Stream: self, s => s)
    }

    /// The core's [`mdproxy_core::socket::Action::SetHopLimit`]; a Unix stream has no hops.
    pub(crate) fn set_hop_limit(&self, hops: u8) {
        if let Stream::Tcp(s) = self {
            if let Err(e) = mdproxy_shell::set_hop_limit(s.as_fd(), hops) {
                log::warn!("cannot set the hop limit of a client connection to {hops}: {e}");
            }
        }
    }

    /// `Ok(())` once a non-blocking connect has completed; `NotConnected` while in progress.
    pub(crate) fn connected(&self) -> io::Result<()> {
        either!(Stream: self, s => s.take_error()?.map_or(s.peer_addr().map(drop), Err))
    }
}
