//! The descriptor table, for the tests that need it large or full, and a watch on the accept
//! policy's log (the one sign that a loop met a full table).

use std::fs::File;
use std::mem;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::Mutex;
use std::time::Instant;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Raises this process's descriptor limit to the hard limit; returns it.
pub(super) fn raise_limit() -> u64 {
    let mut lim = limit();
    lim.rlim_cur = lim.rlim_max;
    set_limit(&lim);
    lim.rlim_cur
}

fn limit() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall on a struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

fn set_limit(lim: &libc::rlimit) {
    // SAFETY: plain syscall on a struct we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) }, 0);
}

/// Every free descriptor of the process, taken (under a limit lowered to 1024, so that
/// filling is quick), until dropped.
pub(super) struct Ballast {
    held: Vec<OwnedFd>,
    old: libc::rlimit,
}

impl Ballast {
    pub(super) fn fill() -> Ballast {
        let old = limit();
        set_limit(&libc::rlimit {
            rlim_cur: old.rlim_cur.min(1024),
            rlim_max: old.rlim_max,
        });
        let null = File::open("/dev/null").unwrap();
        let mut held = Vec::new();
        // SAFETY: dup(2) of a descriptor we own; each result is owned by `held`.
        while let fd @ 0.. = unsafe { libc::dup(null.as_raw_fd()) } {
            held.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
        // `null` itself goes too: take its slot back.
        drop(null);
        // SAFETY: as above.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        held.push(unsafe { OwnedFd::from_raw_fd(fd) });
        Ballast { held, old }
    }
}

impl Drop for Ballast {
    fn drop(&mut self) {
        self.held.clear();
        set_limit(&self.old);
    }
}

/// A TCP socket, not connected yet.
pub(super) fn tcp_socket() -> OwnedFd {
    // SAFETY: plain syscall; the result is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Connects `socket` to the IPv4 `addr` (which needs no new descriptor).
pub(super) fn connect(socket: OwnedFd, addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("{addr} is not IPv4");
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sin` is a valid sockaddr_in of `len` bytes.
    let r = unsafe { libc::connect(socket.as_raw_fd(), ptr::from_ref(&sin).cast(), len) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    TcpStream::from(socket)
}

/// When the accept policy last logged a failure (at warn for the first of a run, debug for
/// the others; its recovery is at info).
pub(super) struct AcceptFailures(Mutex<Option<Instant>>);

static ACCEPT_FAILURES: AcceptFailures = AcceptFailures(Mutex::new(None));
const ACCEPT_TARGET: &str = "mdproxy_shell::accept";

impl AcceptFailures {
    /// Whether a failure was logged at `t` or later.
    pub(super) fn since(&self, t: Instant) -> bool {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|last| last >= t)
    }
}

impl Log for AcceptFailures {
    fn enabled(&self, m: &Metadata) -> bool {
        m.target() == ACCEPT_TARGET && matches!(m.level(), Level::Warn | Level::Debug)
    }

    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    fn flush(&self) {}
}

/// Installs the watch as this process's logger (the first call does; the others find it).
pub(super) fn watch_accept_failures() -> &'static AcceptFailures {
    let _ = log::set_logger(&ACCEPT_FAILURES);
    log::set_max_level(LevelFilter::Debug);
    &ACCEPT_FAILURES
}
