//! The one socket option a core action asks for by value: the IP TTL / IPv6 hop limit of a
//! TCP connection ([`Action::SetHopLimit`](mdproxy_core::socket::Action::SetHopLimit)), set
//! the same way by every runtime. No protocol logic: the core says which socket and how many
//! hops; this only knows the two socket options.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Sets the unicast hop limit of the TCP socket `fd`: `IP_TTL` on an IPv4 socket;
/// `IPV6_UNICAST_HOPS` on an IPv6 one, and `IP_TTL` too, which Linux uses for the IPv4
/// (v4-mapped) peers of a dual-stack socket.
pub fn set_hop_limit(fd: BorrowedFd<'_>, hops: u8) -> io::Result<()> {
    let hops = libc::c_int::from(hops);
    if family(fd)? == libc::AF_INET6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, hops)?;
        // A v6-only socket may refuse the IPv4 option; it has no IPv4 peer then.
        let _ = setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, hops);
        Ok(())
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, hops)
    }
}

/// The hop limit `fd` sends with now (for tests and logs): `IP_TTL`, or `IPV6_UNICAST_HOPS`
/// on an IPv6 socket.
pub fn hop_limit(fd: BorrowedFd<'_>) -> io::Result<u8> {
    let (level, name) = match family(fd)? {
        libc::AF_INET6 => (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS),
        _ => (libc::IPPROTO_IP, libc::IP_TTL),
    };
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`, which we own.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (&raw mut v).cast(), &mut len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    u8::try_from(v).map_err(|_| io::Error::other(format!("hop limit {v} out of range")))
}

/// The address family `fd` was created with.
fn family(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `addr`, which we own.
    let r = unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut addr).cast(), &mut len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(libc::c_int::from(addr.ss_family))
}

fn setsockopt(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    let len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt reads `len` bytes from `v`, which lives across the call.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&raw const v).cast(), len) };
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn set_and_read_back_on_v4_and_v6() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = TcpListener::bind(addr) else {
                continue; // no IPv6 on this machine
            };
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            let before = hop_limit(s.as_fd()).unwrap();
            set_hop_limit(s.as_fd(), 3).unwrap();
            assert_eq!(hop_limit(s.as_fd()).unwrap(), 3, "{addr}");
            assert_ne!(before, 3);
            drop(c);
        }
    }
}
