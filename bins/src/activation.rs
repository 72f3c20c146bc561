//! Socket activation (`sd_listen_fds(3)`) without libsystemd: a `.socket` unit binds the
//! listening sockets and starts the service with them as descriptors 3, 4, … and with
//! `LISTEN_PID` (our pid), `LISTEN_FDS` (how many) and `LISTEN_FDNAMES` in the environment.
//! While the service restarts (an upgrade), the kernel queues new connections on those
//! sockets, so none is refused.
//!
//! The sockets are matched to the role's own `--listen` / `--listen-socket` by their bound
//! address, not by position or name: the command line stays the one description of what a
//! role serves, a `.socket` unit that binds something else is an error that says so, and a
//! role started without systemd binds as before. A passed socket that no flag names is closed
//! with a warning: serving an address nobody configured would be a surprise.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;
/// More than any role listens on; a larger `LISTEN_FDS` is refused as nonsense.
const MAX_FDS: usize = 256;

/// A listening socket passed by the service manager.
enum Passed {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Who passed a socket, which says who removes a Unix socket's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The service manager: its `.socket` unit owns the file.
    Systemd,
    /// The process we replace (`--upgrade`): the file is ours now.
    Handover,
}

/// The sockets passed and not yet claimed, by what they are bound to.
#[derive(Default)]
struct Pool {
    tcp: BTreeMap<SocketAddr, (TcpListener, Origin)>,
    unix: BTreeMap<PathBuf, (UnixListener, Origin)>,
}

/// Filled by [`take_from_env`] and [`adopt`], emptied by the binds that claim its sockets.
static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// Reads the environment systemd sets and takes the descriptors it names, once, before any
/// thread starts (the variables are removed, so nothing we start inherits them). Returns how
/// many sockets were passed; an error names what is wrong (a descriptor that is not a
/// listening stream socket, a count out of range).
pub fn take_from_env() -> Result<usize, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(0);
    };
    // Meant for another process (one that exec'd us without clearing it): not ours to take.
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(0);
    }
    let count = fds
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= MAX_FDS)
        .ok_or_else(|| format!("LISTEN_FDS={fds:?} is not a count of 0..={MAX_FDS}"))?;
    let fds = (0..count).map(|i| {
        // SAFETY: the service manager passed descriptors FIRST_FD.. to this process for it
        // to own (sd_listen_fds(3)); nothing else in the process knows of them.
        unsafe { OwnedFd::from_raw_fd(FIRST_FD + i as RawFd) }
    });
    adopt(fds.collect(), Origin::Systemd).map_err(|e| format!("socket activation: {e}"))?;
    Ok(count)
}

/// Puts passed listening sockets in the pool the binds claim from.
pub fn adopt(fds: Vec<OwnedFd>, origin: Origin) -> Result<(), String> {
    let Ok(mut slot) = POOL.lock() else {
        return Err("the socket pool is poisoned".into());
    };
    let pool = slot.get_or_insert_with(Pool::default);
    for owned in fds {
        let fd = owned.as_raw_fd();
        match classify(owned).map_err(|e| format!("descriptor {fd}: {e}"))? {
            (Passed::Tcp(l), _) => {
                let addr = l
                    .local_addr()
                    .map_err(|e| format!("descriptor {fd}: {e}"))?;
                pool.tcp.insert(addr, (l, origin));
            }
            (Passed::Unix(l), Some(path)) => {
                pool.unix.insert(path, (l, origin));
            }
            (Passed::Unix(_), None) => {
                return Err(format!("descriptor {fd} is an unnamed Unix socket"))
            }
        }
    }
    Ok(())
}

/// What `fd` is: a listening TCP or Unix stream socket (with its path), made non-blocking and
/// close-on-exec as our own listeners are (the shell makes it non-blocking).
fn classify(fd: OwnedFd) -> Result<(Passed, Option<PathBuf>), String> {
    let raw = fd.as_raw_fd();
    let int_opt = |level, name| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writing an int option of a descriptor we own.
        let r = unsafe {
            libc::getsockopt(
                raw,
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r == 0 {
            Ok(v)
        } else {
            Err(std::io::Error::last_os_error().to_string())
        }
    };
    if int_opt(libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 1 {
        return Err("not a listening socket".into());
    }
    if int_opt(libc::SOL_SOCKET, libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err("not a stream socket".into());
    }
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    match int_opt(libc::SOL_SOCKET, libc::SO_DOMAIN)? {
        libc::AF_INET | libc::AF_INET6 => Ok((Passed::Tcp(TcpListener::from(fd)), None)),
        libc::AF_UNIX => {
            let l = UnixListener::from(fd);
            let path = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf));
            Ok((Passed::Unix(l), path))
        }
        other => Err(format!("socket of address family {other}, not TCP or Unix")),
    }
}

/// The passed TCP listener bound to exactly `addr`, if there is one.
pub fn claim_tcp(addr: SocketAddr) -> Option<TcpListener> {
    let (listener, _) = POOL.lock().ok()?.as_mut()?.tcp.remove(&addr)?;
    Some(listener)
}

/// The passed Unix listener bound to `path`, if there is one, and who passed it.
pub fn claim_unix(path: &Path) -> Option<(UnixListener, Origin)> {
    POOL.lock().ok()?.as_mut()?.unix.remove(path)
}

/// Closes every passed socket no bind claimed, each with a warning; returns how many.
pub fn close_unclaimed() -> usize {
    let Some(pool) = POOL.lock().ok().and_then(|mut slot| slot.take()) else {
        return 0;
    };
    let tcp = (pool.tcp.iter()).map(|(addr, (_, origin))| (addr.to_string(), *origin));
    let unix =
        (pool.unix.iter()).map(|(p, (_, origin))| (format!("unix:{}", p.display()), *origin));
    let unused: Vec<(String, Origin)> = tcp.chain(unix).collect();
    for (what, origin) in &unused {
        let by = match origin {
            Origin::Systemd => "socket activation",
            Origin::Handover => "the process we replace",
        };
        log::warn!("{by} passed {what}, which no --listen names: closed");
    }
    unused.len()
}
