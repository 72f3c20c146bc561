//! A running loop in the ns-proxy role, a test upstream and the helpers the tests share.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mdproxy_core::config::{EndpointConfig, NsProxyConfig, Role, Timeouts};
use mdproxy_core::scope::{Scope, Uuid};
use mdproxy_core::socket::Target;

use crate::{run, Listener, RunOptions, Serve};

/// How long any one thing may take before a test fails.
pub(super) const WAIT: Duration = Duration::from_secs(20);
pub(super) const BIG: usize = 10 << 20;
/// The ns-proxy's `token_hop_limit` here: not the default 1, to show the configured value is
/// the one set.
pub(super) const TOKEN_HOP_LIMIT: u8 = 3;
pub(super) const REQUEST: &[u8] = b"GET /latest HTTP/1.1\r\nHost: x\r\n\r\n";
/// An upload far over any body limit (413), whose body the test then sends without end.
pub(super) const UPLOAD: &[u8] =
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\n";

static SERIAL: Mutex<()> = Mutex::new(());

/// A running loop (ns-proxy role) on a TCP and a Unix listener.
pub(super) struct Proxy {
    pub(super) addr: SocketAddr,
    pub(super) unix: PathBuf,
    dir: PathBuf,
    driver: JoinHandle<io::Result<()>>,
    _turn: MutexGuard<'static, ()>,
}

/// A fresh temporary directory for one test's sockets.
pub(super) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mdp-conformance-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Proxy {
    /// [`run`] with `serve`.
    pub(super) fn start(
        serve: Serve,
        dir: PathBuf,
        upstream: Target,
        timeouts: Timeouts,
        opts: RunOptions,
    ) -> Proxy {
        Proxy::start_with(dir, upstream, timeouts, move |cfg, listeners| {
            run(serve, cfg, listeners, opts)
        })
    }

    /// Like `start`, with `runner` (`run` or `run_workers`) in charge.
    pub(super) fn start_with(
        dir: PathBuf,
        upstream: Target,
        timeouts: Timeouts,
        runner: impl FnOnce(EndpointConfig, Vec<Listener>) -> io::Result<()> + Send + 'static,
    ) -> Proxy {
        let turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let unix = dir.join("in.sock");
        let tcp = Listener::bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = tcp.local_addr().unwrap();
        assert_eq!(tcp.to_string(), addr.to_string());
        let l_unix = Listener::bind_unix(&unix).unwrap();
        assert_eq!(l_unix.to_string(), format!("unix:{}", unix.display()));
        let cfg = EndpointConfig {
            role: Role::NsProxy(NsProxyConfig {
                scope: Scope::Router(Uuid::parse(b"0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01").unwrap()),
                upstream,
                rate_limit: None,
                token_hop_limit: TOKEN_HOP_LIMIT,
            }),
            limits: Default::default(),
            conns: Default::default(),
            timeouts,
            tls: Default::default(),
            metrics: None,
            admin: None,
        };
        let driver = thread::spawn(move || runner(cfg, vec![tcp, l_unix]));
        Proxy {
            addr,
            unix,
            dir,
            driver,
            _turn: turn,
        }
    }

    pub(super) fn client(&self) -> TcpStream {
        let c = TcpStream::connect(self.addr).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c
    }

    /// Whether the loop has returned.
    pub(super) fn finished(&self) -> bool {
        self.driver.is_finished()
    }

    /// SIGTERM; the loop must return `Ok` soon after.
    pub(super) fn stop(self) {
        signal(libc::SIGTERM);
        self.join();
    }

    /// Waits for the loop to return `Ok`.
    pub(super) fn join(self) {
        wait_for("the loop to return", || self.driver.is_finished());
        self.driver.join().unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `cond` until it holds; fails the test after [`WAIT`].
pub(super) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `count` has stopped growing (the same over 200 ms), and returns it.
pub(super) fn wait_until_still(count: &AtomicUsize) -> usize {
    let mut last = count.load(Ordering::Relaxed);
    let mut since = Instant::now();
    wait_for("the count to stop growing", || {
        let now = count.load(Ordering::Relaxed);
        if now != last || now == 0 {
            (last, since) = (now, Instant::now());
        }
        since.elapsed() >= Duration::from_millis(200)
    });
    last
}

/// Sends `sig` to this process; only once the loop has answered something (so its handlers
/// are installed).
pub(super) fn signal(sig: libc::c_int) {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::kill(libc::getpid(), sig) }, 0);
}

/// Reads one response head and a Content-Length body.
pub(super) fn read_response(r: &mut impl BufRead) -> (String, Vec<u8>) {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(r.read_line(&mut head).unwrap() > 0, "EOF in head: {head:?}");
    }
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (head, body)
}

/// Reads one response, which must be the test upstream's `hello`.
pub(super) fn assert_hello(r: &mut impl BufRead) {
    let (head, body) = read_response(r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"hello");
}

/// Binds a Unix listener whose backlog holds a burst of connections.
pub(super) fn bind_upstream(path: &Path) -> UnixListener {
    let l = UnixListener::bind(path).unwrap();
    // SAFETY: plain syscall on a listening socket we own.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 4096) }, 0);
    l
}

/// An upstream that answers every request head with `body`, keeping connections alive.
/// Returns how many body bytes it has written so far.
pub(super) fn upstream(path: &Path, body: &[u8]) -> Arc<AtomicUsize> {
    let listener = bind_upstream(path);
    let body = Arc::new(body.to_vec());
    let written = Arc::new(AtomicUsize::new(0));
    let total = written.clone();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (body, total) = (body.clone(), total.clone());
            let serve = move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                        if w.write_all(head.as_bytes()).is_err() {
                            return;
                        }
                        for chunk in body.chunks(64 << 10) {
                            if w.write_all(chunk).is_err() {
                                return;
                            }
                            total.fetch_add(chunk.len(), Ordering::Relaxed);
                        }
                    }
                    line.clear();
                }
            };
            thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(serve)
                .unwrap();
        }
    });
    written
}
