//! systemd's readiness protocol (`sd_notify(3)`) without libsystemd: under `Type=notify`,
//! systemd passes the path of a Unix datagram socket in `NOTIFY_SOCKET` and waits for a
//! datagram saying `READY=1` before it counts the service as started (and starts the units
//! ordered after it). A path starting with `@` names a socket in the abstract namespace.
//! Without `NOTIFY_SOCKET` nothing is sent. Under `Type=notify-reload` a SIGHUP is framed by
//! `RELOADING=1` and `READY=1`; a stop signal sends `STOPPING=1`; with `WatchdogSec=` every
//! event loop must have turned for each `WATCHDOG=1` (`serve.rs`).
//!
//! systemd accepts the message only from the service's main process (`NotifyAccess=main`),
//! so a role run with `--daemonize` under `Type=notify` is never seen ready: do not combine
//! them.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Tells the service manager that the role is ready: call once its listeners are bound and
/// privileges are dropped, and again when a reload is done. A failure is logged, never
/// fatal: the role serves all the same (systemd, not hearing it, gives up after
/// `TimeoutStartSec=`).
pub fn ready() {
    notify("READY=1");
}

/// Tells the service manager that a reload begins (`Type=notify-reload`, systemd 253): it
/// then waits for [`ready`]. `MONOTONIC_USEC` lets it tell this reload from an older one.
pub fn reloading() {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

/// Tells the service manager that the role is shutting down (draining).
pub fn stopping() {
    notify("STOPPING=1");
}

/// The keep-alive ping of `WatchdogSec=`.
pub fn watchdog() {
    notify("WATCHDOG=1");
}

/// How often to ping the watchdog: half the interval systemd asked for in `WATCHDOG_USEC`,
/// when `WATCHDOG_PID` (if set) is this process. `None`: no watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    match send(&socket, state.as_bytes()) {
        Ok(()) => log::debug!("told the service manager at {socket:?}: {state:?}"),
        Err(e) => log::warn!("cannot notify the service manager at {socket:?}: {e}"),
    }
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for writing; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000 + nanos / 1_000
}

/// Sends `state` as one datagram to the socket `NOTIFY_SOCKET` names: a file system path, or
/// `@name` in the abstract namespace.
fn send(socket: &OsStr, state: &[u8]) -> io::Result<()> {
    let path = socket.as_bytes();
    let sock = UnixDatagram::unbound()?;
    let sent = match path.split_first() {
        Some((b'/', _)) => sock.send_to(state, socket)?,
        Some((b'@', name)) => send_abstract(&sock, name, state)?,
        _ => {
            let msg = "NOTIFY_SOCKET is neither an absolute path nor @abstract";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
    };
    if sent != state.len() {
        return Err(io::Error::other("the datagram was truncated"));
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state, &addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> io::Result<usize> {
    let msg = "abstract Unix sockets exist only on Linux";
    Err(io::Error::new(io::ErrorKind::Unsupported, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sending for real, to path and abstract sockets, is tested on the binary
    /// (`tests/notify.rs`).
    #[test]
    fn unusable_addresses_are_errors() {
        for bad in ["", "relative/path", "/nonexistent/mdproxy/notify", "@"] {
            assert!(send(OsStr::new(bad), b"READY=1").is_err(), "{bad:?}");
        }
    }
}
