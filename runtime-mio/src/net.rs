//! The sockets the loop owns: listeners and connected streams, TCP or Unix.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use mdproxy_core::socket::Target;
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Listen backlog unless [`Listener::set_backlog`] says otherwise; the kernel caps it at
/// `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

/// A bound listening socket. Bind before [`run`](crate::run) so that port 0, privilege dropping and the
/// startup log see the real address.
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
    /// [`run_workers`](crate::run_workers) registers its own, and the kernel hands each
    /// connection to one of them.
    pub fn try_clone(&self) -> io::Result<Listener> {
        let kind = match &self.kind {
            ListenerKind::Tcp(l) => {
                let std = std::net::TcpListener::from(l.as_fd().try_clone_to_owned()?);
                ListenerKind::Tcp(TcpListener::from_std(std))
            }
            ListenerKind::Unix(l, path) => {
                let std = std::os::unix::net::UnixListener::from(l.as_fd().try_clone_to_owned()?);
                ListenerKind::Unix(UnixListener::from_std(std), path.clone())
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

/// Linux lets `listen(2)` on a listening socket change its backlog; mio binds with 128.
fn set_backlog(fd: libc::c_int, backlog: u32) -> io::Result<()> {
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: plain syscall on a descriptor we own.
    match unsafe { libc::listen(fd, backlog) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

impl Listener {
    pub(crate) fn source(&mut self) -> &mut dyn Source {
        match &mut self.kind {
            ListenerKind::Tcp(l) => l,
            ListenerKind::Unix(l, _) => l,
        }
    }

    /// The next pending connection and its peer (`None` for Unix clients).
    pub(crate) fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match &self.kind {
            ListenerKind::Tcp(l) => l.accept().map(|(s, peer)| {
                let _ = s.set_nodelay(true);
                (Stream::Tcp(s), Some(peer))
            }),
            ListenerKind::Unix(l, _) => l.accept().map(|(s, _)| (Stream::Unix(s), None)),
        }
    }
}

/// A connected (or connecting) stream.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
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
        either!(self, s => s)
    }

    /// `Ok(())` once a non-blocking connect has completed; `NotConnected` while in progress.
    pub(crate) fn connected(&self) -> io::Result<()> {
        either!(self, s => s.take_error()?.map_or(s.peer_addr().map(drop), Err))
    }
}
