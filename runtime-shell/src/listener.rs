//! Listening sockets, bound before any loop runs (so that port 0, privilege dropping and the
//! startup log see the real address) and handed to whichever runtime serves them.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use mdproxy_core::listener::ListenerId;

/// Listen backlog unless [`Listener::set_backlog`] says otherwise; the kernel caps it at
/// `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

/// A bound, non-blocking listening socket, TCP or Unix.
pub struct Listener {
    socket: Socket,
    /// The path of a Unix listener, for [`Display`](fmt::Display).
    path: Option<PathBuf>,
    /// The scoped listener its connections belong to (see [`Listener::scoped`]).
    id: Option<ListenerId>,
}

/// The std socket inside a [`Listener`], for a runtime to register with its poller. It is
/// already non-blocking.
pub enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds a TCP listener with `SO_REUSEADDR` (std sets it on Unix before binding).
    /// `[::]:port` is dual-stack where the system default allows it; the core turns
    /// IPv4-mapped peers into IPv4.
    pub fn bind_tcp(addr: SocketAddr) -> io::Result<Listener> {
        Listener::new(Socket::Tcp(TcpListener::bind(addr)?), None)
    }

    /// Binds a Unix stream listener at `path`, which must not exist yet.
    pub fn bind_unix(path: impl AsRef<Path>) -> io::Result<Listener> {
        let path = path.as_ref();
        let socket = Socket::Unix(UnixListener::bind(path)?);
        Listener::new(socket, Some(path.to_path_buf()))
    }

    /// Takes a socket that is already listening, e.g. one the service manager passed
    /// (socket activation), keeping the queue length it was given.
    pub fn adopt_tcp(l: TcpListener) -> io::Result<Listener> {
        l.set_nonblocking(true)?;
        Ok(Listener {
            socket: Socket::Tcp(l),
            path: None,
            id: None,
        })
    }

    /// [`Listener::adopt_tcp`] for a Unix listener bound at `path`.
    pub fn adopt_unix(l: UnixListener, path: &Path) -> io::Result<Listener> {
        l.set_nonblocking(true)?;
        Ok(Listener {
            socket: Socket::Unix(l),
            path: Some(path.to_path_buf()),
            id: None,
        })
    }

    fn new(socket: Socket, path: Option<PathBuf>) -> io::Result<Listener> {
        let l = Listener {
            socket,
            path,
            id: None,
        };
        l.set_backlog(BACKLOG)?;
        match &l.socket {
            Socket::Tcp(s) => s.set_nonblocking(true)?,
            Socket::Unix(s) => s.set_nonblocking(true)?,
        }
        Ok(l)
    }

    /// Sets the length of the queue of connections not yet accepted (default 4096), by calling
    /// `listen(2)` again, which Linux allows on a listening socket (std binds with 128). The
    /// kernel caps it at `net.core.somaxconn`.
    pub fn set_backlog(&self, backlog: u32) -> io::Result<()> {
        let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
        // SAFETY: plain syscall on a descriptor we own.
        match unsafe { libc::listen(self.as_fd().as_raw_fd(), backlog) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Another handle on the same listening socket (`dup(2)`): each worker of
    /// [`run_workers`](crate::run_workers) polls its own, and the kernel hands each connection
    /// to one of them.
    pub fn try_clone(&self) -> io::Result<Listener> {
        let fd = self.as_fd().try_clone_to_owned()?;
        let socket = match &self.socket {
            Socket::Tcp(_) => Socket::Tcp(fd.into()),
            Socket::Unix(_) => Socket::Unix(fd.into()),
        };
        Ok(Listener {
            socket,
            path: self.path.clone(),
            id: self.id,
        })
    }

    /// Tags the listener: its connections are reported to the endpoint with
    /// [`Endpoint::accept_on`](mdproxy_core::endpoint::Endpoint::accept_on) this id, which
    /// [`Command::Add`](crate::Command::Add) registers.
    pub fn scoped(mut self, id: ListenerId) -> Listener {
        self.id = Some(id);
        self
    }

    /// The id [`Listener::scoped`] gave it.
    pub fn id(&self) -> Option<ListenerId> {
        self.id
    }

    /// The bound address of a TCP listener (`None` for Unix listeners).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.socket {
            Socket::Tcp(l) => l.local_addr().ok(),
            Socket::Unix(_) => None,
        }
    }

    /// The socket, for the runtime that serves it.
    pub fn into_socket(self) -> Socket {
        self.socket
    }

    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match &self.socket {
            Socket::Tcp(l) => l.as_fd(),
            Socket::Unix(l) => l.as_fd(),
        }
    }
}

/// The listening socket's descriptor (e.g. to hand it to a successor process).
impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// `unix:PATH`, or the bound TCP address.
impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.local_addr()) {
            (Some(path), _) => write!(f, "unix:{}", path.display()),
            (None, Some(addr)) => write!(f, "{addr}"),
            (None, None) => f.write_str("tcp:?"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_clones_and_shows_tcp_and_unix_listeners() {
        let l = Listener::bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = l.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(l.to_string(), addr.to_string());
        assert_eq!(l.try_clone().unwrap().local_addr(), Some(addr));
        l.set_backlog(8).unwrap();

        let dir = std::env::temp_dir().join(format!("mdp-shell-listener-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.sock");
        let u = Listener::bind_unix(&path).unwrap();
        assert_eq!(u.to_string(), format!("unix:{}", path.display()));
        assert_eq!(u.try_clone().unwrap().to_string(), u.to_string());
        assert_eq!(u.local_addr(), None);
        assert!(Listener::bind_unix(&path).is_err(), "bound twice");
        // Non-blocking: nobody is connecting, so accept says so at once.
        let Socket::Unix(s) = u.into_socket() else {
            panic!("a Unix listener became TCP");
        };
        let e = s.accept().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
