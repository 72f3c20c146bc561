//! The sockets the executor owns: listeners and connected streams, TCP or Unix.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use async_io::Async;
use mdproxy_core::socket::Target;

/// Listen backlog unless [`Listener::set_backlog`] says otherwise; the kernel caps it at
/// `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

/// A bound listening socket. Bind before [`run`](crate::run) so that port 0, privilege dropping
/// and the startup log see the real address.
pub struct Listener {
    kind: ListenerKind,
}

enum ListenerKind {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds a TCP listener with `SO_REUSEADDR`. `[::]:port` is dual-stack where the system
    /// default allows it; the core turns IPv4-mapped peers into IPv4.
    pub fn bind_tcp(addr: SocketAddr) -> io::Result<Listener> {
        // std sets SO_REUSEADDR on Unix before binding.
        let l = TcpListener::bind(addr)?;
        set_backlog(l.as_raw_fd(), BACKLOG)?;
        Ok(Listener {
            kind: ListenerKind::Tcp(l),
        })
    }

    /// Binds a Unix stream listener at `path`, which must not exist yet.
    pub fn bind_unix(path: impl AsRef<Path>) -> io::Result<Listener> {
        let l = UnixListener::bind(path.as_ref())?;
        set_backlog(l.as_raw_fd(), BACKLOG)?;
        Ok(Listener {
            kind: ListenerKind::Unix(l, path.as_ref().to_path_buf()),
        })
    }

    /// Sets the length of the queue of connections not yet accepted (default 4096), by calling
    /// `listen(2)` again, which Linux allows on a listening socket. The kernel caps it at
    /// `net.core.somaxconn`.
    pub fn set_backlog(&self, backlog: u32) -> io::Result<()> {
        set_backlog(self.as_raw_fd(), backlog)
    }

    /// Another handle on the same listening socket (`dup(2)`): each worker of
    /// [`run_workers`](crate::run_workers) polls its own, and the kernel hands each
    /// connection to one of them.
    pub fn try_clone(&self) -> io::Result<Listener> {
        let kind = match &self.kind {
            ListenerKind::Tcp(l) => ListenerKind::Tcp(l.as_fd().try_clone_to_owned()?.into()),
            ListenerKind::Unix(l, path) => {
                ListenerKind::Unix(l.as_fd().try_clone_to_owned()?.into(), path.clone())
            }
        };
        Ok(Listener { kind })
    }

    fn as_raw_fd(&self) -> libc::c_int {
        match &self.kind {
            ListenerKind::Tcp(l) => l.as_raw_fd(),
            ListenerKind::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// The bound address of a TCP listener (`None` for Unix listeners).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.kind {
            ListenerKind::Tcp(l) => l.local_addr().ok(),
            ListenerKind::Unix(..) => None,
        }
    }

    /// Registers the listener with the reactor (and makes it non-blocking).
    pub(crate) fn into_async(self) -> io::Result<AsyncListener> {
        Ok(match self.kind {
            ListenerKind::Tcp(l) => AsyncListener::Tcp(Async::new(l)?),
            ListenerKind::Unix(l, _) => AsyncListener::Unix(Async::new(l)?),
        })
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, self.local_addr()) {
            (ListenerKind::Unix(_, path), _) => write!(f, "unix:{}", path.display()),
            (ListenerKind::Tcp(_), Some(addr)) => write!(f, "{addr}"),
            (ListenerKind::Tcp(_), None) => f.write_str("tcp:?"),
        }
    }
}

/// Linux lets `listen(2)` on a listening socket change its backlog; std binds with less.
fn set_backlog(fd: libc::c_int, backlog: u32) -> io::Result<()> {
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: plain syscall on a descriptor we own.
    match unsafe { libc::listen(fd, backlog) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A listener registered with the reactor.
pub(crate) enum AsyncListener {
    Tcp(Async<TcpListener>),
    Unix(Async<UnixListener>),
}

impl AsyncListener {
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

/// Runs `$e` with `$x` bound to whichever stream `$s` holds.
macro_rules! either {
    ($s:expr, $x:ident => $e:expr) => {
        match $s {
            Stream::Tcp($x) => $e,
            Stream::Unix($x) => $e,
        }
    };
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
        either!(self, s => s.get_ref().read(buf))
    }

    /// One non-blocking write.
    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        either!(self, s => s.get_ref().write(buf))
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        either!(self, s => s.get_ref().shutdown(Shutdown::Write))
    }

    /// Resolves once a read would not block (call after one returned `WouldBlock`).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        either!(self, s => s.readable().await)
    }

    /// Resolves once a write would not block (call after one returned `WouldBlock`).
    pub(crate) async fn writable(&self) -> io::Result<()> {
        either!(self, s => s.writable().await)
    }
}
