//! Binding the roles' listeners: TCP addresses, and Unix sockets (claimed from an agent that
//! died, created with their mode, removed on exit), or taking them from the service manager.

use std::net::SocketAddr;
use std::path::Path;

use crate::cli::SocketMode;
use crate::runtime::Listener;
use crate::{activation, os, Failure};

/// Binds a TCP listener on each of `addrs`.
pub fn bind_tcp(addrs: &[SocketAddr]) -> Result<Vec<Listener>, Failure> {
    let bind = |addr: &SocketAddr| {
        tcp(*addr).map_err(|e| Failure::System(format!("cannot listen on {addr}: {e}")))
    };
    addrs.iter().map(bind).collect()
}

/// A TCP listener on `addr`: the one the service manager passed for that address
/// ([`activation`]), else bound now.
pub fn tcp(addr: SocketAddr) -> std::io::Result<Listener> {
    match activation::claim_tcp(addr) {
        Some(passed) => Listener::adopt_tcp(passed),
        None => Listener::bind_tcp(addr),
    }
}

/// Binds a Unix socket at `path`, replacing a socket file nobody listens on, with permissions
/// `mode` (else as the umask leaves them) and queue `backlog` (else the runtime's). The file
/// returned removes the socket when dropped. A socket passed for `path` ([`activation`]) is
/// taken as it is (its mode and queue were set by whoever bound it); the service manager's
/// file stays when we exit, for the next process to be started on, while one handed over by
/// the process we replaced is ours to remove.
pub fn bind_unix(
    path: &Path,
    mode: Option<SocketMode>,
    backlog: Option<u32>,
) -> Result<(Listener, os::SocketFile), Failure> {
    let system = |what: &str, e: std::io::Error| {
        Failure::System(format!("cannot {what} {}: {e}", path.display()))
    };
    if let Some((passed, origin)) = activation::claim_unix(path) {
        let listener = Listener::adopt_unix(passed, path).map_err(|e| system("listen on", e))?;
        let file = match origin {
            activation::Origin::Systemd => os::SocketFile::not_ours(path),
            activation::Origin::Handover => os::SocketFile::new(path),
        };
        return Ok((listener, file));
    }
    os::claim_socket_path(path).map_err(Failure::System)?;
    let bind = || Listener::bind_unix(path);
    let listener = match mode {
        Some(mode) => with_umask(umask_for(mode.bits()), bind),
        None => bind(),
    }
    .map_err(|e| system("listen on", e))?;
    // From here on the file is ours: removed however we leave.
    let file = os::SocketFile::new(path);
    if let Some(backlog) = backlog {
        listener
            .set_backlog(backlog)
            .map_err(|e| system("set the backlog of", e))?;
    }
    Ok((listener, file))
}

/// The umask under which `bind(2)` gives a Unix socket exactly `mode` (Linux creates the
/// socket file with `0o777 & !umask`).
fn umask_for(mode: u32) -> libc::mode_t {
    (0o777 & !mode) as libc::mode_t
}

/// Runs `f` with the process's umask set to `mask`, then restores it. A socket gets its mode
/// when it is bound rather than by a chmod after it, so that there is no moment at which a
/// namespace proxy (or anyone) finds it with the umask's looser mode. The umask is per
/// process: this runs before any thread is started (`serve::start` binds first; the log
/// flusher and the event loops come later), so nothing else creates files meanwhile.
fn with_umask<T>(mask: libc::mode_t, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask(2) cannot fail and touches no memory.
    let old = unsafe { libc::umask(mask) };
    let out = f();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_for_each_socket_mode() {
        // (--socket-mode bits, umask, what bind(2) then makes of 0o777)
        for (mode, mask) in [(0o644, 0o133), (0o664, 0o113), (0o666, 0o111)] {
            assert_eq!(umask_for(mode), mask, "{mode:o}");
            assert_eq!(0o777 & !umask_for(mode), mode, "{mode:o}");
        }
    }
}
