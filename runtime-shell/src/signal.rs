//! SIGTERM, SIGINT and SIGHUP as bytes on a socket (the self-pipe trick): the handler only
//! `write(2)`s the signal number to a non-blocking socket pair, which is async-signal-safe, and
//! a loop reads the other end like any socket.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::{mem, ptr};

/// Routes SIGTERM, SIGINT and SIGHUP to a socket while alive; restores the old handlers after.
pub(crate) struct SignalGuard {
    _tx: UnixStream,
    old: [(libc::c_int, libc::sigaction); 3],
}

/// The write end of the signal socket pair, or -1.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) and errno access are async-signal-safe; the socket is non-blocking,
        // so a full buffer drops the byte instead of blocking the handler.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, ptr::from_ref(&(sig as u8)).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

impl SignalGuard {
    /// Installs the handlers; the returned socket (non-blocking) delivers each caught signal
    /// as one byte, its number.
    pub(crate) fn install() -> io::Result<(SignalGuard, UnixStream)> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        SIGNAL_FD.store(tx.as_raw_fd(), Ordering::Relaxed);
        // SAFETY: sigaction is plain data; all-zero is a valid empty mask and no flags.
        let old = unsafe { [(0, mem::zeroed::<libc::sigaction>()); 3] };
        // Built first, so that a failure half-way restores what was installed.
        let mut guard = SignalGuard { _tx: tx, old };
        for (slot, sig) in guard
            .old
            .iter_mut()
            .zip([libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
        {
            // SAFETY: installs a handler that only performs async-signal-safe calls.
            unsafe {
                let mut action: libc::sigaction = mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                if libc::sigaction(sig, &action, &mut slot.1) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            slot.0 = sig;
        }
        Ok((guard, rx))
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, old) in self.old.iter().filter(|(sig, _)| *sig != 0) {
            // SAFETY: restores what `install` saved.
            unsafe { libc::sigaction(*sig, old, ptr::null_mut()) };
        }
        SIGNAL_FD.store(-1, Ordering::Relaxed);
    }
}
