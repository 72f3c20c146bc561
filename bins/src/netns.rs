//! Binding inside another network namespace: a socket keeps the namespace it was created in,
//! so a short-lived thread enters the namespace (`setns(2)` on `/run/netns/NAME`, as `ip netns
//! exec` does), binds, and hands the sockets back; the event loop then serves them from
//! whatever namespace it runs in. The thread, and with it the namespace switch, ends there:
//! no other thread of the process ever changes namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread;

use crate::cli;
use crate::runtime::Listener;

/// Where `ip netns add NAME` mounts a namespace.
const NETNS_DIR: &str = "/run/netns";

/// Binds a TCP listener on each of `listen` (`ADDR:PORT`, an interface name looked up inside
/// the namespace) in namespace `namespace`, or in the calling thread's for `None`. The error
/// says which address or namespace failed.
pub fn bind_in(namespace: Option<&str>, listen: &[String]) -> Result<Vec<Listener>, String> {
    let Some(name) = namespace else {
        return bind_here(listen);
    };
    let path = Path::new(NETNS_DIR).join(name);
    let listen = listen.to_vec();
    let entered = thread::Builder::new()
        .name("netns-bind".to_owned())
        .spawn(move || {
            enter(&path).map_err(|e| format!("cannot enter {}: {e}", path.display()))?;
            bind_here(&listen)
        })
        .map_err(|e| format!("cannot start a thread to enter namespace {name}: {e}"))?;
    entered
        .join()
        .map_err(|_| format!("the thread binding in namespace {name} panicked"))?
}

/// Moves the calling thread into the network namespace mounted at `path`.
fn enter(path: &Path) -> io::Result<()> {
    let ns = File::open(path)?;
    // SAFETY: plain syscall on a descriptor we own; it changes only this thread's namespace.
    match unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn bind_here(listen: &[String]) -> Result<Vec<Listener>, String> {
    let bind = |v: &String| {
        let addr = cli::listen_addr(v)?;
        Listener::bind_tcp(addr).map_err(|e| format!("cannot listen on {v}: {e}"))
    };
    listen.iter().map(bind).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_here_and_names_what_failed() {
        let bound = bind_in(None, &["127.0.0.1:0".to_owned()]).unwrap();
        assert_ne!(bound[0].local_addr().unwrap().port(), 0);
        let e = bind_in(
            Some("mdproxy-test-no-such-namespace"),
            &["127.0.0.1:0".to_owned()],
        )
        .err()
        .unwrap();
        assert!(
            e.contains("/run/netns/mdproxy-test-no-such-namespace"),
            "{e}"
        );
        let e = bind_in(None, &["[fe80::1%no-such-if0]:80".to_owned()])
            .err()
            .unwrap();
        assert!(e.contains("no interface"), "{e}");
    }
}
