//! The other end of a test's connection, as the child process holding it sees it: for
//! socket options the child set (the IMDSv2 hop limit).

use std::fs;
use std::mem;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Process `pid`'s end of `client`'s connection (a child of ours: the ns-proxy, the node),
/// duplicated into this process with pidfd_getfd(2), found by its ports.
pub fn peer_end(pid: u32, client: &TcpStream) -> OwnedFd {
    let (mine, theirs) = (
        client.local_addr().unwrap().port(),
        client.peer_addr().unwrap().port(),
    );
    let pid = pid as libc::pid_t;
    // SAFETY: plain syscalls; every descriptor they return is owned at once.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Some(target) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
        if fd < 0 {
            continue;
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if port(&fd, libc::getsockname) == Some(theirs)
            && port(&fd, libc::getpeername) == Some(mine)
        {
            return fd;
        }
    }
    panic!("process {pid} holds no socket for port {mine}");
}

type NameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn port(fd: &OwnedFd, name: NameFn) -> Option<u16> {
    // SAFETY: all-zero is a valid sockaddr_in; the call writes at most `len` bytes into it.
    let mut addr: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let r = unsafe { name(fd.as_raw_fd(), (&raw mut addr).cast(), &mut len) };
    (r == 0 && i32::from(addr.sin_family) == libc::AF_INET).then(|| u16::from_be(addr.sin_port))
}

/// The socket's IP TTL.
pub fn ttl(fd: &OwnedFd) -> i32 {
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_TTL,
            (&raw mut v).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    v
}
