//! Smoke tests of the driver in-process (the protocol is tested in the core, the binary in
//! `bins/tests`): TCP and Unix listeners, keep-alive relaying, a timeout, refused upstreams,
//! a 10 MiB response under back-pressure and 1 000 concurrent connections.
//!
//! Every test ends `run` with SIGTERM to this very process, and signal handlers are
//! process-wide, so the tests take turns (`SERIAL`), and each signals only once its driver has
//! answered a request (so its handlers are installed).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mdproxy_core::config::{EndpointConfig, NsProxyConfig, Role, Timeouts};
use mdproxy_core::scope::{Scope, Uuid};
use mdproxy_core::socket::Target;
use mdproxy_smol::{run, run_workers, Listener, RunOptions};

const WAIT: Duration = Duration::from_secs(20);
const BIG: usize = 10 << 20;
const REQUEST: &[u8] = b"GET /latest HTTP/1.1\r\nHost: x\r\n\r\n";

static SERIAL: Mutex<()> = Mutex::new(());

/// A running driver (ns-proxy role) on a TCP and a Unix listener.
struct Proxy {
    addr: SocketAddr,
    unix: PathBuf,
    dir: PathBuf,
    driver: JoinHandle<io::Result<()>>,
    _turn: MutexGuard<'static, ()>,
}

/// A fresh temporary directory for one test's sockets.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mdp-smol-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Proxy {
    fn start(dir: PathBuf, upstream: Target, timeouts: Timeouts, opts: RunOptions) -> Proxy {
        Proxy::start_with(dir, upstream, timeouts, move |cfg, listeners| {
            run(cfg, listeners, opts)
        })
    }

    /// Like `start`, with `runner` (`run` or `run_workers`) in charge.
    fn start_with(
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
            }),
            limits: Default::default(),
            conns: Default::default(),
            timeouts,
            tls: Default::default(),
            metrics: None,
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

    fn client(&self) -> TcpStream {
        let c = TcpStream::connect(self.addr).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c
    }

    /// SIGTERM; `run` must return `Ok` soon after.
    fn stop(self) {
        signal(libc::SIGTERM);
        self.join();
    }

    /// Waits for `run` to return `Ok`.
    fn join(self) {
        let deadline = Instant::now() + WAIT;
        while !self.driver.is_finished() {
            assert!(
                Instant::now() < deadline,
                "run did not return after SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
        self.driver.join().unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` to this process; only once `run` has answered something (so its handlers are
/// installed).
fn signal(sig: libc::c_int) {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::kill(libc::getpid(), sig) }, 0);
}

/// Reads one response head and a Content-Length body.
fn read_response(r: &mut impl BufRead) -> (String, Vec<u8>) {
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

/// Binds a Unix listener whose backlog holds a burst of connections.
fn bind_upstream(path: &Path) -> UnixListener {
    let l = UnixListener::bind(path).unwrap();
    // SAFETY: plain syscall on a listening socket we own.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 4096) }, 0);
    l
}

/// An upstream that answers every request head with `body`, keeping connections alive.
/// Returns how many body bytes it has written so far.
fn upstream(path: &Path, body: Arc<Vec<u8>>) -> Arc<AtomicUsize> {
    let listener = bind_upstream(path);
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

#[test]
fn relays_keep_alive_over_tcp_and_unix_runs_hooks_then_stops_on_sigterm() {
    let dir = temp_dir("relay");
    let up = dir.join("up.sock");
    upstream(&up, Arc::new(b"hello".to_vec()));
    let (hups, ticks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h, t) = (hups.clone(), ticks.clone());
    let opts = RunOptions {
        on_hangup: Box::new(move || {
            h.fetch_add(1, Ordering::Relaxed);
            None
        }),
        tick: Some((
            Duration::from_millis(20),
            Box::new(move || {
                t.fetch_add(1, Ordering::Relaxed);
                None
            }),
        )),
        ..RunOptions::default()
    };
    let proxy = Proxy::start(dir, Target::Unix(up), Timeouts::default(), opts);

    let mut client = proxy.client();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    for _ in 0..3 {
        client.write_all(REQUEST).unwrap();
        let (head, body) = read_response(&mut reader);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"hello");
    }
    // Half-close: the answer still comes, then the end of the stream.
    client.write_all(REQUEST).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (head, body) = read_response(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"hello");
    assert_eq!(reader.read(&mut [0; 16]).unwrap(), 0);

    // A Unix-socket client has no address for this role; whatever the role answers, the
    // driver must carry it back.
    let mut unix_client = UnixStream::connect(&proxy.unix).unwrap();
    unix_client.set_read_timeout(Some(WAIT)).unwrap();
    unix_client.write_all(REQUEST).unwrap();
    let (head, _) = read_response(&mut BufReader::new(unix_client));
    assert!(head.starts_with("HTTP/1.1 "), "{head}");

    signal(libc::SIGHUP);
    let deadline = Instant::now() + WAIT;
    while hups.load(Ordering::Relaxed) == 0 || ticks.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "on_hangup or tick not called");
        thread::sleep(Duration::from_millis(10));
    }
    proxy.stop();
}

#[test]
fn slow_head_times_out_with_an_answer_and_a_half_close() {
    let dir = temp_dir("timeout");
    let up = dir.join("up.sock");
    upstream(&up, Arc::new(b"hello".to_vec()));
    let timeouts = Timeouts {
        head: Duration::from_millis(200),
        ..Timeouts::default()
    };
    let proxy = Proxy::start(dir, Target::Unix(up), timeouts, RunOptions::default());
    let mut client = proxy.client();
    let started = Instant::now();
    client.write_all(b"GET / HTTP/1.1\r\nHost").unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    proxy.stop();
}

#[test]
fn refused_upstreams_are_reported_as_refused() {
    let dir = temp_dir("refused");
    // A path nobody bound (ENOENT), a socket file nobody listens on (ECONNREFUSED), a closed
    // TCP port (ECONNREFUSED).
    let stale = dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for target in [
        Target::Unix(dir.join("missing.sock")),
        Target::Unix(stale),
        Target::Tcp(port),
    ] {
        let proxy = Proxy::start(
            temp_dir("refused-run"),
            target.clone(),
            Timeouts::default(),
            RunOptions::default(),
        );
        let mut client = proxy.client();
        client.write_all(REQUEST).unwrap();
        let (head, _) = read_response(&mut BufReader::new(client));
        assert!(head.starts_with("HTTP/1.1 503"), "{target:?}: {head}");
        proxy.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn streams_10_mib_without_buffering_for_a_client_that_does_not_read() {
    let dir = temp_dir("big");
    let up = dir.join("up.sock");
    let body: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    let written = upstream(&up, Arc::new(body));
    let proxy = Proxy::start(
        dir,
        Target::Unix(up),
        Timeouts::default(),
        RunOptions::default(),
    );
    let mut client = proxy.client();
    client.write_all(REQUEST).unwrap();
    // While the client does not read, only socket buffers and the core's bounded buffers may
    // fill: the driver must stop reading the upstream.
    thread::sleep(Duration::from_millis(500));
    let early = written.load(Ordering::Relaxed);
    assert!(
        early < BIG - (1 << 20),
        "upstream wrote {early} bytes to a stalled client"
    );
    let (head, body) = read_response(&mut BufReader::with_capacity(1 << 16, client));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), BIG);
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    eprintln!("upstream had written {early} of {BIG} bytes while the client paused");
    proxy.stop();
}

#[test]
fn serves_1000_concurrent_connections() {
    const N: usize = 1000;
    // Two descriptors here and up to two in the driver per connection.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= 4 * N as u64 + 100,
        "too few descriptors: {}",
        lim.rlim_cur
    );

    let dir = temp_dir("many");
    let up = dir.join("up.sock");
    upstream(&up, Arc::new(b"hello".to_vec()));
    let proxy = Proxy::start(
        dir,
        Target::Unix(up),
        Timeouts::default(),
        RunOptions::default(),
    );
    let clients: Vec<TcpStream> = (0..N).map(|_| proxy.client()).collect();
    for c in &clients {
        (&*c).write_all(REQUEST).unwrap();
    }
    for c in &clients {
        let (head, body) = read_response(&mut BufReader::new(c));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"hello");
    }
    // Every connection is still alive for a second round.
    for c in &clients {
        (&*c).write_all(REQUEST).unwrap();
    }
    for c in &clients {
        let (_, body) = read_response(&mut BufReader::new(c));
        assert_eq!(body, b"hello");
    }
    drop(clients);
    proxy.stop();
}

#[test]
fn drain_closes_idle_connections_stops_accepting_and_waits_for_busy_ones() {
    let dir = temp_dir("drain");
    let up = dir.join("up.sock");
    // An upstream that takes requests and never answers.
    let silent = bind_upstream(&up);
    thread::spawn(move || {
        let held: Vec<UnixStream> = silent.incoming().flatten().collect();
        drop(held);
    });
    let drain_timeout = Duration::from_secs(1);
    let opts = RunOptions {
        drain_timeout,
        ..RunOptions::default()
    };
    let proxy = Proxy::start(dir, Target::Unix(up), Timeouts::default(), opts);
    let mut busy = proxy.client();
    busy.write_all(REQUEST).unwrap();
    let mut idle = proxy.client();
    // A Unix client is answered at once in this role: the driver is up.
    let mut unix_client = UnixStream::connect(&proxy.unix).unwrap();
    unix_client.write_all(REQUEST).unwrap();
    read_response(&mut BufReader::new(unix_client));

    signal(libc::SIGTERM);
    let signalled = Instant::now();
    assert_eq!(
        idle.read(&mut [0; 16]).unwrap(),
        0,
        "idle connection not closed"
    );
    thread::sleep(Duration::from_millis(50));
    assert!(TcpStream::connect(proxy.addr).is_err(), "still accepting");
    assert!(
        !proxy.driver.is_finished(),
        "returned with a busy connection"
    );
    proxy.join();
    assert!(signalled.elapsed() >= drain_timeout);
    // The busy connection was closed when `run` returned.
    assert_eq!(busy.read(&mut [0; 16]).unwrap_or(0), 0);
}

#[test]
fn workers_share_listeners_and_all_stop_on_sigterm() {
    let dir = temp_dir("workers");
    let up = dir.join("up.sock");
    upstream(&up, Arc::new(b"hello".to_vec()));
    let proxy = Proxy::start_with(dir, Target::Unix(up), Timeouts::default(), |cfg, ls| {
        run_workers(3, cfg, ls, RunOptions::default)
    });
    let clients: Vec<TcpStream> = (0..8).map(|_| proxy.client()).collect();
    for _ in 0..2 {
        for c in &clients {
            (&*c).write_all(REQUEST).unwrap();
            let (head, body) = read_response(&mut BufReader::new(c));
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(body, b"hello");
        }
    }
    proxy.stop();
}
