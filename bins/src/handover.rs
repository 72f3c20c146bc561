//! Upgrade without systemd: the running process hands its listening sockets to its successor
//! over a Unix socket (`SCM_RIGHTS`), and drains only once the successor says it is ready.
//! No connection is refused (the sockets never close) and none is reset (the old process
//! finishes what it accepted).
//!
//! A role started with `--handover-socket PATH` listens there. `mdproxy <role> … --upgrade
//! --handover-socket PATH` (the same flags, the new binary) connects before it binds, takes the
//! sockets (they join the same pool as systemd's, [`activation`]), binds whatever else its
//! flags name, starts, and then writes `ready`; the old process then stops as on SIGTERM.
//! If the new process exits before it is ready (a bad flag, a file it cannot read), the old
//! one logs it and goes on serving. The successor binds `PATH` anew for the next upgrade.
//!
//! A command rather than a signal (nginx's SIGUSR2): the operator, or the package's script,
//! starts the new binary with the flags it needs and sees its errors on the terminal, and the
//! successor is not a child of the process it replaces (so no supervisor sees its child
//! re-parented). Only a process of the same user (or root) is given the sockets.

use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{activation, os};

/// The successor's greeting, and the version of this exchange.
const HELLO: &[u8] = b"mdproxy-handover 1\n";
/// What the successor writes once it serves.
const READY: &[u8] = b"ready\n";
/// More listening sockets than any role has.
const MAX_FDS: usize = 64;
/// How long each step of the exchange may take before the other side is given up on.
const STEP: Duration = Duration::from_secs(10);

/// Set once a successor is serving on our sockets: from then on, a socket file or pid file
/// this process created is the successor's, and is not removed when we exit.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// Whether this process's sockets now belong to a successor.
pub fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::Relaxed)
}

/// The bound `--handover-socket` of a running role, waiting for a successor.
pub struct Offer {
    listener: UnixListener,
    path: PathBuf,
    _file: os::SocketFile,
}

impl Offer {
    /// Binds `path` (before privileges are dropped). A predecessor's socket there is
    /// replaced (listening or not: an upgraded process takes over the path for the next
    /// upgrade); anything that is not a socket is left alone, as `os::claim_socket_path` does.
    pub fn bind(path: &Path) -> Result<Offer, String> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
            Ok(m) if !m.file_type().is_socket() => {
                return Err(format!(
                    "{} exists and is not a socket; not removing it (--handover-socket)",
                    path.display()
                ))
            }
            Ok(_) => std::fs::remove_file(path)
                .map_err(|e| format!("cannot replace {}: {e}", path.display()))?,
        }
        let listener = UnixListener::bind(path).map_err(|e| {
            format!(
                "cannot listen on {} (--handover-socket): {e}",
                path.display()
            )
        })?;
        Ok(Offer {
            listener,
            path: path.to_path_buf(),
            _file: os::SocketFile::new(path),
        })
    }

    /// Answers successors on a thread of its own, handing each `fds` (the role's listeners);
    /// the first to say it is ready ends this process as SIGTERM would.
    pub fn serve(self, fds: Vec<RawFd>) {
        let spawned = std::thread::Builder::new()
            .name("handover".into())
            .spawn(move || {
                // Moved whole (not field by field), so that its socket file lives as long.
                let offer = self;
                for conn in offer.listener.incoming() {
                    let conn = match conn {
                        Ok(conn) => conn,
                        Err(e) => {
                            log::warn!("handover socket {}: {e}", offer.path.display());
                            continue;
                        }
                    };
                    match hand_over(conn, &fds) {
                        Ok(pid) => {
                            log::info!("upgrade: process {pid} serves our sockets; draining");
                            HANDED_OVER.store(true, Ordering::Relaxed);
                            // SAFETY: signals this process; the loops drain as on SIGTERM.
                            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
                            // The successor has bound the path anew: closing ours (and
                            // leaving the file, no longer ours) turns nobody away.
                            return;
                        }
                        Err(e) => log::warn!("upgrade aborted, still serving: {e}"),
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot start the handover thread, --upgrade will not reach us: {e}");
        }
    }
}

/// One successor: check who it is, send the sockets, wait for `ready`. Returns its pid.
fn hand_over(mut conn: UnixStream, fds: &[RawFd]) -> Result<libc::pid_t, String> {
    let cred = peer_cred(&conn).map_err(|e| format!("cannot identify the successor: {e}"))?;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if cred.uid != euid && cred.uid != 0 {
        return Err(format!(
            "process {} of uid {} may not take the sockets of uid {euid}",
            cred.pid, cred.uid
        ));
    }
    conn.set_read_timeout(Some(STEP))
        .map_err(|e| e.to_string())?;
    let mut hello = [0u8; HELLO.len()];
    conn.read_exact(&mut hello)
        .map_err(|e| format!("process {}: no greeting: {e}", cred.pid))?;
    if hello != HELLO {
        return Err(format!("process {}: not an mdproxy --upgrade", cred.pid));
    }
    send_fds(&conn, fds).map_err(|e| format!("cannot send the sockets: {e}"))?;
    // The successor may take a while to load its files: wait as long as it lives.
    conn.set_read_timeout(None).map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    BufReader::new(&conn)
        .take(READY.len() as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    if line != READY {
        return Err(format!("process {} exited before it was ready", cred.pid));
    }
    Ok(cred.pid)
}

/// The successor's side: the predecessor's answer, the connection kept to say `ready`.
pub struct Taken {
    conn: UnixStream,
}

/// Connects to the running role at `path`, takes its sockets into the activation pool and
/// returns how many there were. Call before binding anything.
pub fn take(path: &Path) -> Result<(Taken, usize), String> {
    let what = |e: io::Error| format!("--upgrade: {}: {e}", path.display());
    let mut conn = UnixStream::connect(path).map_err(what)?;
    conn.set_read_timeout(Some(STEP)).map_err(what)?;
    conn.write_all(HELLO).map_err(what)?;
    let fds = recv_fds(&conn).map_err(what)?;
    let count = fds.len();
    activation::adopt(fds, activation::Origin::Handover).map_err(|e| format!("--upgrade: {e}"))?;
    Ok((Taken { conn }, count))
}

impl Taken {
    /// Tells the predecessor we serve: it drains and exits.
    pub fn ready(mut self) {
        if let Err(e) = self.conn.write_all(READY) {
            log::warn!("--upgrade: cannot tell the old process to stop: {e}");
        }
    }
}

struct Cred {
    pid: libc::pid_t,
    uid: libc::uid_t,
}

fn peer_cred(conn: &UnixStream) -> io::Result<Cred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writing SO_PEERCRED's struct.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Cred {
        pid: cred.pid,
        uid: cred.uid,
    })
}

/// Room for `MAX_FDS` descriptors in one control message.
fn cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE is arithmetic.
    unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// One message: the count as text, and the descriptors as `SCM_RIGHTS`.
fn send_fds(conn: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other("too many listeners to hand over"));
    }
    let text = format!("{}\n", fds.len());
    let iov = [IoSlice::new(text.as_bytes())];
    let mut space = vec![0u8; cmsg_space()];
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: the control buffer is large enough for one SCM_RIGHTS header with `fds`
    // (checked above), and every pointer stays valid for the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = space.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(fd_bytes as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        }
        if libc::sendmsg(conn.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The predecessor's message: every descriptor it carried, owned (close-on-exec).
fn recv_fds(conn: &UnixStream) -> io::Result<Vec<OwnedFd>> {
    let mut text = [0u8; 16];
    let mut space = vec![0u8; cmsg_space()];
    let mut fds = Vec::new();
    // SAFETY: the buffers outlive the call; the kernel writes at most their lengths, and
    // only the SCM_RIGHTS headers it wrote are read back.
    let n = unsafe {
        let mut iov = [IoSliceMut::new(&mut text)];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr().cast();
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = space.len() as _;
        let n = libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("the sockets did not fit in one message"));
        }
        n as usize
    };
    let said = std::str::from_utf8(&text[..n])
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok());
    if said != Some(fds.len()) {
        return Err(io::Error::other(format!(
            "the old process announced {said:?} sockets and sent {}",
            fds.len()
        )));
    }
    Ok(fds)
}
