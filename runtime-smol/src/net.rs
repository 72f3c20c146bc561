//! The sockets the executor owns: listeners and connected streams, TCP or Unix.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};

use async_io::Async;
use mdproxy_core::socket::Target;
use mdproxy_shell::{either, Socket};

/// A listener registered with the reactor.
pub(crate) enum AsyncListener {
    Tcp(Async<TcpListener>),
    Unix(Async<UnixListener>),
}

impl AsyncListener {
    /// Registers the shell's socket (already non-blocking) with the reactor.
    pub(crate) fn new(socket: Socket) -> io::Result<AsyncListener> {
        Ok(match socket {
            Socket::Tcp(l) => AsyncListener::Tcp(Async::new_nonblocking(l)?),
            Socket::Unix(l) => AsyncListener::Unix(Async::new_nonblocking(l)?),
        })
    }

    /// The next connection and its peer (`None` for Unix clients).
    pub(crate) async fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            AsyncListener::Tcp(l) => l.accept().await.map(|(s, peer)| {
                let _ = s.get_ref().set_nodelay(true);
                (Stream::Tcp(s), Some(peer))
            }),
            AsyncListener::Unix(l) => l.accept().await.map(|(s, _)| (Stream::Unix(s), None)),
        }
    }
}

/// A connected stream, registered with the reactor.
pub(crate) enum Stream {
    Tcp(Async<TcpStream>),
    Unix(Async<UnixStream>),
}

impl Stream {
    /// Connects to `target`; resolves once the connection is established or has failed.
    pub(crate) async fn connect(target: &Target) -> io::Result<Stream> {
        match target {
            Target::Tcp(addr) => Async::<TcpStream>::connect(*addr).await.map(|s| {
                let _ = s.get_ref().set_nodelay(true);
                Stream::Tcp(s)
            }),
            Target::Unix(path) => Async::<UnixStream>::connect(path).await.map(Stream::Unix),
        }
    }

    /// One non-blocking read.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        either!(Stream: self, s => s.get_ref().read(buf))
    }

    /// One non-blocking write.
    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        either!(Stream: self, s => s.get_ref().write(buf))
    }

    /// The core's [`mdproxy_core::socket::Action::SetHopLimit`]; a Unix stream has no hops.
    pub(crate) fn set_hop_limit(&self, hops: u8) {
        if let Stream::Tcp(s) = self {
            if let Err(e) = mdproxy_shell::set_hop_limit(s.get_ref().as_fd(), hops) {
                log::warn!("cannot set the hop limit of a client connection to {hops}: {e}");
            }
        }
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        either!(Stream: self, s => s.get_ref().shutdown(Shutdown::Write))
    }

    /// Resolves once a read would not block (call after one returned `WouldBlock`).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        either!(Stream: self, s => s.readable().await)
    }

    /// Resolves once a write would not block (call after one returned `WouldBlock`).
    pub(crate) async fn writable(&self) -> io::Result<()> {
        either!(Stream: self, s => s.writable().await)
    }
}
