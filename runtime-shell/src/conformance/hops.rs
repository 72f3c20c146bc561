//! The accepted end of a test client's connection, found among this process's descriptors
//! (the loop runs in a thread of the test), to read its hop limit back.

use std::mem;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A duplicate of the loop's socket for `client` (local end = the client's peer, peer = the
/// client's local end), if it is open.
pub(super) fn accepted_end(client: &TcpStream) -> Option<OwnedFd> {
    let (mine, theirs) = (client.local_addr().ok()?, client.peer_addr().ok()?);
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if fd == client.as_raw_fd() {
            continue;
        }
        // SAFETY: dup of a descriptor number that may be stale: at worst it fails (-1).
        let dup = unsafe { libc::dup(fd) };
        if dup < 0 {
            continue;
        }
        // SAFETY: `dup` is a fresh descriptor we own.
        let owned = unsafe { OwnedFd::from_raw_fd(dup) };
        let ends = (
            ports(&owned, libc::getsockname),
            ports(&owned, libc::getpeername),
        );
        if ends == (Some(theirs.port()), Some(mine.port())) {
            return Some(owned);
        }
    }
    None
}

type NameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// The IPv4 port `name` (getsockname or getpeername) reports for `fd`.
fn ports(fd: &OwnedFd, name: NameFn) -> Option<u16> {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut addr: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: writes at most `len` bytes into `addr`, which we own.
    let r = unsafe { name(fd.as_raw_fd(), (&raw mut addr).cast(), &mut len) };
    (r == 0 && libc::c_int::from(addr.sin_family) == libc::AF_INET)
        .then(|| u16::from_be(addr.sin_port))
}
