//! Harness for end-to-end tests of the real `mdproxy` binary over real sockets: a child
//! process per test, a scripted upstream (on a Unix socket, or on loopback TCP as a metadata
//! server) that records what reaches it, and a raw HTTP client over TCP or a Unix socket.
//! Every wait is bounded by [`WAIT`]; nothing sleeps to synchronise.
#![allow(dead_code)] // each test binary uses its own part of the harness

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub mod chassis;
pub mod hostile_cases;
pub mod lenient_peers;
pub mod ovn;
pub mod ovn_node;
pub mod peer_socket;
pub mod pki;

/// Upper bound of every wait: generous, because CI shares two busy cores.
pub const WAIT: Duration = Duration::from_secs(20);
pub const ROUTER: &str = "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01";
pub const NETWORK: &str = "5a1c9e3b-7d2f-4e6a-8b0c-1f2e3d4c5b6a";

/// The event loops the binary can run; every test runs once per variant compiled in.
#[derive(Clone, Copy, Debug)]
pub enum Runtime {
    Mio,
    Smol,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Mio => "mio",
            Runtime::Smol => "smol",
        }
    }
}

/// `runtime_tests! { a, b }` turns each `fn a(rt: Runtime)` into one `#[test]` per runtime
/// the binary was built with (its Cargo features): `mio::a` and `smol::a`.
#[allow(unused_macros)] // tests/runtime.rs has no per-runtime test
macro_rules! runtime_tests {
    ($($name:ident),* $(,)?) => {
        runtime_tests!(@ "mio", mio, Mio; $($name),*);
        runtime_tests!(@ "smol", smol, Smol; $($name),*);
    };
    (@ $feature:literal, $module:ident, $variant:ident; $($name:ident),*) => {
        #[cfg(feature = $feature)]
        mod $module {
            $( #[test] fn $name() { super::$name($crate::common::Runtime::$variant) } )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use runtime_tests;

/// A fresh directory under the system temp dir, removed on drop. Paths stay short enough
/// for Unix socket addresses.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mdp-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// How the scripted upstream answers one request.
pub enum Reply {
    /// Write these bytes (a whole response, or anything) and keep serving the connection.
    Send(Vec<u8>),
    /// Write these bytes, then close the connection.
    SendAndClose(Vec<u8>),
    /// Never answer; hold the connection until the proxy closes it.
    Hang,
    /// Wait until the gate opens, then write these bytes.
    AfterGate(Arc<Gate>, Vec<u8>),
}

/// A one-shot latch the test opens to release a waiting upstream.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cond.notify_all();
    }

    fn wait(&self) {
        let open = self.open.lock().unwrap();
        let (_open, timeout) = self.cond.wait_timeout_while(open, WAIT, |o| !*o).unwrap();
        assert!(!timeout.timed_out(), "gate never opened");
    }
}

/// One request as the upstream received it: the raw head and the decoded body.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub head: String,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The request target, e.g. `/latest/meta-data/`.
    pub fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        header_values(&self.head, name)
    }
}

/// A scripted HTTP server that records every request it receives: on a Unix socket (what an
/// ns-proxy talks to) or on loopback TCP (a metadata server, what the agent talks to).
pub struct Upstream {
    /// The Unix socket path (empty for a TCP upstream).
    pub path: PathBuf,
    tcp: Option<SocketAddr>,
    /// Serves HTTPS (see [`Upstream::start_tls`]).
    tls: bool,
    seen: Arc<(Mutex<Vec<Recorded>>, Condvar)>,
}

type Script = dyn Fn(&Recorded) -> Reply + Send + Sync;
type Seen = (Mutex<Vec<Recorded>>, Condvar);

/// What the upstream needs of a connected stream, TCP or Unix.
trait Conn: Read + Write + Send + Sized + 'static {
    fn duplicate(&self) -> io::Result<Self>;
    fn close(&self);
}

macro_rules! impl_conn {
    ($($stream:ty),*) => {$(
        impl Conn for $stream {
            fn duplicate(&self) -> io::Result<Self> {
                self.try_clone()
            }
            fn close(&self) {
                let _ = self.shutdown(Shutdown::Both);
            }
        }
    )*};
}

impl_conn!(UnixStream, TcpStream);

/// The server end of a TLS connection, as the scripted upstream reads and writes it: the
/// session is shared by the reading and the writing handle (used one at a time).
struct TlsConn {
    tls: Arc<Mutex<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>>,
    tcp: TcpStream,
}

impl TlsConn {
    fn new(tcp: TcpStream, cfg: Arc<rustls::ServerConfig>) -> io::Result<TlsConn> {
        let conn = rustls::ServerConnection::new(cfg).map_err(io::Error::other)?;
        let handle = tcp.try_clone()?;
        Ok(TlsConn {
            tls: Arc::new(Mutex::new(rustls::StreamOwned::new(conn, tcp))),
            tcp: handle,
        })
    }
}

impl Read for TlsConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tls.lock().unwrap().read(buf)
    }
}

impl Write for TlsConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tls.lock().unwrap().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tls.lock().unwrap().flush()
    }
}

impl Conn for TlsConn {
    fn duplicate(&self) -> io::Result<Self> {
        Ok(TlsConn {
            tls: self.tls.clone(),
            tcp: self.tcp.try_clone()?,
        })
    }

    fn close(&self) {
        let mut tls = self.tls.lock().unwrap();
        tls.conn.send_close_notify();
        let _ = tls.flush();
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

impl Upstream {
    /// Serves `script` on a new Unix socket at `path`.
    pub fn start(
        path: PathBuf,
        script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let listener = UnixListener::bind(&path).expect("bind upstream socket");
        let seen = serve_all(move || listener.accept().map(|(c, _)| c), Arc::new(script));
        Upstream {
            path,
            tcp: None,
            tls: false,
            seen,
        }
    }

    /// Serves `script` on a free loopback TCP port: a fake metadata server.
    pub fn start_tcp(script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream port");
        let addr = listener.local_addr().unwrap();
        let seen = serve_all(move || listener.accept().map(|(c, _)| c), Arc::new(script));
        Upstream {
            path: PathBuf::new(),
            tcp: Some(addr),
            tls: false,
            seen,
        }
    }

    /// Serves `script` over HTTPS with `tls` on a free loopback TCP port. A connection whose
    /// handshake fails is dropped.
    pub fn start_tls(
        tls: Arc<rustls::ServerConfig>,
        script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream port");
        let addr = listener.local_addr().unwrap();
        let accept = move || {
            let (tcp, _) = listener.accept()?;
            TlsConn::new(tcp, tls.clone())
        };
        let seen = serve_all(accept, Arc::new(script));
        Upstream {
            path: PathBuf::new(),
            tcp: Some(addr),
            tls: true,
            seen,
        }
    }

    /// `http://127.0.0.1:PORT` of a TCP upstream (`https://` for a TLS one).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.tcp.expect("a TCP upstream"))
    }

    /// Answers every request `200 OK` with `body`.
    pub fn ok(path: PathBuf, body: &'static [u8]) -> Upstream {
        Upstream::start(path, move |_| Reply::Send(ok_response(body)))
    }

    /// Waits until at least `n` requests arrived and returns all of them.
    pub fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let (list, cond) = &*self.seen;
        let guard = list.lock().unwrap();
        let (guard, _) = cond
            .wait_timeout_while(guard, WAIT, |l| l.len() < n)
            .unwrap();
        assert!(
            guard.len() >= n,
            "upstream saw {} requests, wanted {n}",
            guard.len()
        );
        guard.clone()
    }

    pub fn count(&self) -> usize {
        self.seen.0.lock().unwrap().len()
    }
}

/// Accepts connections on a thread, each served by its own thread; returns the record.
fn serve_all<C: Conn>(
    mut accept: impl FnMut() -> io::Result<C> + Send + 'static,
    script: Arc<Script>,
) -> Arc<Seen> {
    let seen = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let shared = seen.clone();
    thread::spawn(move || {
        while let Ok(conn) = accept() {
            let (script, seen) = (script.clone(), shared.clone());
            thread::spawn(move || serve_upstream(conn, &*script, &seen));
        }
    });
    seen
}

fn serve_upstream<C: Conn>(conn: C, script: &Script, seen: &Seen) {
    let mut writer = conn.duplicate().expect("clone upstream conn");
    let mut reader = BufReader::new(conn);
    loop {
        let Ok(Some(head)) = read_head(&mut reader) else {
            return;
        };
        let Ok(body) = read_body(&mut reader, &head, false) else {
            return;
        };
        let req = Recorded { head, body };
        let reply = script(&req);
        seen.0.lock().unwrap().push(req);
        seen.1.notify_all();
        let (bytes, close) = match reply {
            Reply::Send(b) => (b, false),
            Reply::SendAndClose(b) => (b, true),
            Reply::AfterGate(gate, b) => {
                gate.wait();
                (b, false)
            }
            Reply::Hang => {
                let _ = io::copy(&mut reader, &mut io::sink());
                return;
            }
        };
        if writer.write_all(&bytes).is_err() || close {
            writer.close();
            return;
        }
    }
}

pub fn ok_response(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n").into_bytes()
}

/// Reads a head up to and including the blank line; `None` on a clean EOF before it.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            return match head.is_empty() {
                true => Ok(None),
                false => Err(io::ErrorKind::UnexpectedEof.into()),
            };
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            return Ok(Some(String::from_utf8_lossy(&head).into_owned()));
        }
    }
}

/// Reads a body framed as `head` says: chunked (decoded), Content-Length, or, for responses
/// only, until EOF.
fn read_body(r: &mut impl BufRead, head: &str, response: bool) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let te = header_values(head, "transfer-encoding");
    if te.iter().any(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|_| io::ErrorKind::InvalidData)?;
            if size == 0 {
                while read_head(r)?.is_some_and(|t| t != "\r\n") {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            r.read_exact(&mut body[start..])?;
            body.truncate(start + size);
        }
    }
    if let Some(len) = header_values(head, "content-length").first() {
        let len: usize = len.parse().map_err(|_| io::ErrorKind::InvalidData)?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if response {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

pub fn header_values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// A response as the client received it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client over TCP or a Unix socket; reads time out after [`WAIT`].
pub struct Client {
    writer: Box<dyn Write + Send>,
    reader: BufReader<Box<dyn Read + Send>>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to proxy");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client::over(stream)
    }

    /// Over a stream the test also keeps (to look at its socket).
    pub fn from_tcp(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client::over(stream)
    }

    pub fn connect_unix(path: &Path) -> Client {
        let stream = UnixStream::connect(path).expect("connect to the Unix socket");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client::over(stream)
    }

    fn over<C: Conn>(stream: C) -> Client {
        let reader: Box<dyn Read + Send> = Box::new(stream.duplicate().unwrap());
        Client {
            writer: Box::new(stream),
            reader: BufReader::new(reader),
        }
    }

    /// Writes `bytes`; a proxy that already answered and closed may refuse some, which the
    /// tests of early answers (413, 431) expect.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    pub fn try_response(&mut self) -> io::Result<Response> {
        let head = read_head(&mut self.reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
        let status = status.ok_or(io::ErrorKind::InvalidData)?;
        let body = read_body(&mut self.reader, &head, true)?;
        Ok(Response { status, head, body })
    }

    pub fn response(&mut self) -> Response {
        self.try_response().expect("read a response from the proxy")
    }

    /// Sends one request and reads its response.
    pub fn exchange(&mut self, request: &[u8]) -> Response {
        self.send(request).expect("send request");
        self.response()
    }

    /// True once the proxy closed the connection (EOF), false if bytes arrive.
    pub fn closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, bytes: &[u8]) -> Response {
    Client::connect(addr).exchange(bytes)
}

/// One request on a fresh connection to a Unix socket.
pub fn request_unix(path: &Path, bytes: &[u8]) -> Response {
    Client::connect_unix(path).exchange(bytes)
}

/// A running `mdproxy` child, killed on drop. Its stderr goes to a file for failure messages.
pub struct Running {
    child: Child,
    stderr: PathBuf,
    /// The `--log-file` the harness gave it, if any.
    log_file: Option<PathBuf>,
    dir: TempDir,
}

impl Running {
    /// Spawns the binary with `args` and `--runtime`; `log_file` (a name in the child's own
    /// temp dir) becomes `--log-file`.
    fn spawn(rt: Runtime, args: &[String], log_file: Option<&str>) -> Running {
        Running::spawn_program(Path::new(env!("CARGO_BIN_EXE_mdproxy")), rt, args, log_file)
    }

    /// [`Running::spawn`] of `program`: the binary under another name (a symlink).
    pub fn spawn_program(
        program: &Path,
        rt: Runtime,
        args: &[String],
        log_file: Option<&str>,
    ) -> Running {
        let dir = TempDir::new();
        let stderr = dir.join("stderr");
        let log_file = log_file.map(|name| dir.join(name));
        let mut cmd = Command::new(program);
        cmd.args(args).arg(format!("--runtime={}", rt.name()));
        if let Some(path) = &log_file {
            cmd.arg(format!("--log-file={}", path.display()));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn mdproxy");
        Running {
            child,
            stderr,
            log_file,
            dir,
        }
    }

    /// Everything it logged: stderr, then the log file.
    pub fn log(&self) -> String {
        let mut log = fs::read_to_string(&self.stderr).unwrap_or_default();
        if let Some(path) = &self.log_file {
            log += &fs::read_to_string(path).unwrap_or_default();
        }
        log
    }

    /// Waits (bounded) until the log says `text`.
    pub fn wait_for_log(&self, text: &str) -> String {
        self.wait_for_log_count(text, 1)
    }

    /// Waits (bounded) until the log says `text` at least `n` times.
    pub fn wait_for_log_count(&self, text: &str, n: usize) -> String {
        let said = eventually(|| self.log().matches(text).count() >= n);
        let log = self.log();
        assert!(said, "the log never said {text:?} {n} times:\n{log}");
        log
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends `sig`. The binary catches signals only once its loop runs, which a served
    /// request proves (accepting alone does not: the kernel accepts before the loop starts).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own child process.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_child(&mut self.child)
            .unwrap_or_else(|| panic!("mdproxy did not exit; log:\n{}", self.log()))
    }

    /// Kills it and waits.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Gives each `$child` (a struct with a `running: Running` field) `Running`'s methods.
macro_rules! running_child {
    ($($child:ident),*) => {$(
        impl Deref for $child {
            type Target = Running;
            fn deref(&self) -> &Running {
                &self.running
            }
        }

        impl DerefMut for $child {
            fn deref_mut(&mut self) -> &mut Running {
                &mut self.running
            }
        }
    )*};
}

running_child!(Proxy, Agent);

/// A running `mdproxy ns-proxy`, listening on `addr`.
pub struct Proxy {
    running: Running,
    pub addr: SocketAddr,
}

impl Proxy {
    /// `mdproxy ns-proxy` for [`ROUTER`] relaying to `upstream`, plus `extra` flags.
    pub fn start(rt: Runtime, upstream: &Path, extra: &[&str]) -> Proxy {
        let upstream = upstream.to_str().unwrap().to_owned();
        Proxy::start_with(rt, |port| {
            let mut args = vec!["ns-proxy".to_owned(), format!("--listen=127.0.0.1:{port}")];
            let scoped =
                |a: &&str| a.starts_with("--network-id") || a.starts_with("--ovn-network-id");
            if !extra.iter().any(scoped) {
                args.extend(["--router-id".to_owned(), ROUTER.to_owned()]);
            }
            args.extend(["--upstream-socket".to_owned(), upstream.clone()]);
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        })
    }

    /// Starts the binary with `args(port)` (plus `--runtime`) on a free loopback port and
    /// waits until it accepts; retries with another port if the port was taken meanwhile.
    pub fn start_with(rt: Runtime, args: impl Fn(u16) -> Vec<String>) -> Proxy {
        for _ in 0..5 {
            let port = free_port();
            let mut running = Running::spawn(rt, &args(port), None);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let connects = || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            // An early exit probably means it lost the port race: try another port.
            eventually(|| !running.is_running() || connects());
            if running.is_running() {
                return Proxy { running, addr };
            }
            running.stop();
            eprintln!("mdproxy did not start on port {port}: {}", running.log());
        }
        panic!("mdproxy never started");
    }
}

/// A running `mdproxy agent`, listening on the Unix socket `socket`, logging to a file.
pub struct Agent {
    pub running: Running,
    pub socket: PathBuf,
}

impl Agent {
    /// Starts `mdproxy agent --listen-socket socket` plus `args` (and `--runtime`,
    /// `--log-file`) and waits until the socket accepts.
    pub fn start(rt: Runtime, socket: &Path, args: &[String]) -> Agent {
        let mut all = vec![
            "agent".to_owned(),
            format!("--listen-socket={}", socket.display()),
        ];
        all.extend_from_slice(args);
        let program = Path::new(env!("CARGO_BIN_EXE_mdproxy"));
        Agent::start_program(rt, program, &all, socket)
    }

    /// Starts `program args` (plus `--runtime`, `--log-file`), an agent that listens on
    /// `socket` (where its settings say), and waits until the socket accepts.
    pub fn start_program(rt: Runtime, program: &Path, args: &[String], socket: &Path) -> Agent {
        let mut running = Running::spawn_program(program, rt, args, Some("agent.log"));
        let listening = eventually(|| !running.is_running() || UnixStream::connect(socket).is_ok());
        assert!(
            listening && running.is_running(),
            "mdproxy agent did not start: {}",
            running.log()
        );
        Agent {
            running,
            socket: socket.to_path_buf(),
        }
    }
}

pub fn wait_child(child: &mut Child) -> Option<ExitStatus> {
    let mut status = None;
    eventually(|| {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status
}

/// Checks `done` every 20 ms until it holds or [`WAIT`] has passed; whether it held.
pub fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `mdproxy server` on `addr` with an empty instances directory in `dir` and the empty
/// secret: any HTTP answer it gives proves a served connection.
pub fn empty_server_args(dir: &TempDir, addr: SocketAddr) -> Vec<String> {
    let instances = dir.join("instances");
    let _ = fs::create_dir(&instances);
    vec![
        "server".to_owned(),
        format!("--instances={}", instances.display()),
        "--shared-secret-file=/dev/null".to_owned(),
        format!("--listen={addr}"),
    ]
}

/// A loopback port nobody listened on a moment ago, below the kernel's ephemeral range
/// (32768 and up by default): a port the kernel picked for a `bind(…:0)` is handed out again
/// to the next such bind once closed, and the test's child would then race every recording
/// server and client of the tests running beside it for it (one test found another's
/// server on "its" port). Below the range only this sequence hands ports out; each test
/// process starts at a place of its own.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % COUNT,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % COUNT;
        let port = u16::try_from(FIRST + n).expect("below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
}

/// Runs `mdproxy <args>` (a `--help`), which must succeed and name every one of `flags`.
pub fn assert_help_mentions(args: &[&str], flags: &[&str]) {
    let (status, out, _) = run_binary(args);
    assert!(status.success(), "{out}");
    for flag in flags {
        assert!(out.contains(flag), "{args:?} does not mention {flag}");
    }
}

/// Runs the binary to completion with `args`; returns (status, stdout, stderr).
pub fn run_binary(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdproxy"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mdproxy");
    let status = wait_child(&mut child).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("mdproxy {args:?} did not exit")
    });
    let mut out = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out.0)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out.1)
        .unwrap();
    (status, out.0, out.1)
}

impl Recorded {
    /// The request method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.head.split(' ').next().unwrap_or("")
    }

    /// The request target without its query string.
    pub fn path_only(&self) -> &str {
        self.path().split('?').next().unwrap_or("")
    }

    /// The raw query string (after `?`), `""` if none.
    pub fn query(&self) -> &str {
        self.path().split_once('?').map_or("", |(_, q)| q)
    }

    /// The query string as percent-decoded `(key, value)` pairs, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        query_pairs(self.query())
    }
}

impl Upstream {
    /// Every request received so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.seen.0.lock().unwrap().clone()
    }
}

/// `a=1&b=x%3Ay` as `[("a", "1"), ("b", "x:y")]`.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `python3 -c code args…` and returns its stdout, trimmed.
pub fn python(code: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A port in the fake Neutron's table.
#[derive(Clone, Debug)]
pub struct FakePort {
    pub network: String,
    pub ip: String,
    pub device_id: String,
    pub project_id: String,
}

impl FakePort {
    pub fn new(network: &str, ip: &str, device_id: &str, project_id: &str) -> FakePort {
        FakePort {
            network: network.to_owned(),
            ip: ip.to_owned(),
            device_id: device_id.to_owned(),
            project_id: project_id.to_owned(),
        }
    }
}

/// How the fake Neutron answers, whatever it is asked (after checking the token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeutronMode {
    /// From its tables.
    Normal,
    /// This status, with an error body.
    Status(u16),
    /// Never: the connection is held until the agent closes it.
    Hang,
}

/// What the fake Keystone and Neutron know and have done.
struct OpenStackState {
    /// The password Keystone accepts; `None`: Neutron wants no token (noauth).
    password: Option<String>,
    routers: Vec<(String, Vec<String>)>,
    ports: Vec<FakePort>,
    mode: NeutronMode,
    /// Port queries wait for this gate before they are answered.
    port_gate: Option<Arc<Gate>>,
    token_lifetime: Duration,
    /// Every token issued, with when the fake Neutron stops taking it.
    tokens: Vec<(String, Instant)>,
    /// `tokens[..revoked]` are refused whatever their expiry.
    revoked: usize,
    /// 401s Neutron sent.
    unauthorized: usize,
}

/// A fake Keystone (v3 password auth, under `/identity`) and a fake Neutron (`GET
/// /v2.0/ports`, under `/networking`), as devstack lays them out, each on its own loopback
/// port and each recording every request. Neutron answers from a scripted table: router →
/// interface networks, and (IP, networks) → ports; it checks `X-Auth-Token` against the tokens
/// Keystone issued (unless started without a password: a noauth Neutron).
pub struct FakeOpenStack {
    pub keystone: Upstream,
    pub neutron: Upstream,
    state: Arc<Mutex<OpenStackState>>,
}

impl FakeOpenStack {
    /// Starts both services. `password`: what Keystone accepts; `None` for a noauth Neutron.
    pub fn start(password: Option<&str>, routers: &[(&str, &[&str])], ports: &[FakePort]) -> Self {
        FakeOpenStack::start_with(password, routers, ports, None)
    }

    /// [`FakeOpenStack::start`], both services over HTTPS with `tls` when given.
    pub fn start_with(
        password: Option<&str>,
        routers: &[(&str, &[&str])],
        ports: &[FakePort],
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let serve = |script: Box<dyn Fn(&Recorded) -> Reply + Send + Sync>| match &tls {
            Some(cfg) => Upstream::start_tls(cfg.clone(), script),
            None => Upstream::start_tcp(script),
        };
        let state = Arc::new(Mutex::new(OpenStackState {
            password: password.map(str::to_owned),
            routers: routers
                .iter()
                .map(|(r, nets)| (r.to_string(), nets.iter().map(|n| n.to_string()).collect()))
                .collect(),
            ports: ports.to_vec(),
            mode: NeutronMode::Normal,
            port_gate: None,
            token_lifetime: Duration::from_secs(3600),
            tokens: Vec::new(),
            revoked: 0,
            unauthorized: 0,
        }));
        let shared = state.clone();
        let neutron = serve(Box::new(move |req| fake_neutron(&shared, req)));
        let neutron_url = format!("{}/networking", neutron.url());
        let shared = state.clone();
        let keystone = serve(Box::new(move |req| {
            fake_keystone(&shared, req, &neutron_url)
        }));
        FakeOpenStack {
            keystone,
            neutron,
            state,
        }
    }

    /// `--auth-url`: Keystone's v3 endpoint.
    pub fn auth_url(&self) -> String {
        format!("{}/identity/v3", self.keystone.url())
    }

    /// `--neutron-url`: what the catalog names as the `public` endpoint in `RegionOne`.
    pub fn neutron_url(&self) -> String {
        format!("{}/networking", self.neutron.url())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OpenStackState> {
        self.state.lock().unwrap()
    }

    pub fn set_mode(&self, mode: NeutronMode) {
        self.state().mode = mode;
    }

    /// Holds every port query until `gate` opens (`None`: answer at once).
    pub fn set_port_gate(&self, gate: Option<Arc<Gate>>) {
        self.state().port_gate = gate;
    }

    /// Gives the port with `ip` a new `device_id` (a new instance took the address).
    pub fn reassign(&self, ip: &str, device_id: &str) {
        let mut state = self.state();
        let port = state.ports.iter_mut().find(|p| p.ip == ip).expect("a port");
        port.device_id = device_id.to_owned();
    }

    /// How long tokens issued from now on live.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state().token_lifetime = lifetime;
    }

    /// Neutron refuses every token issued so far.
    pub fn revoke_tokens(&self) {
        let mut state = self.state();
        state.revoked = state.tokens.len();
    }

    /// Every token Keystone issued, in order.
    pub fn tokens(&self) -> Vec<String> {
        self.state().tokens.iter().map(|(t, _)| t.clone()).collect()
    }

    /// Whether the `n`th token issued (from 0) has expired by the fake's clock.
    pub fn token_expired(&self, n: usize) -> bool {
        self.state()
            .tokens
            .get(n)
            .is_some_and(|(_, until)| Instant::now() >= *until)
    }

    /// How many 401s Neutron answered.
    pub fn unauthorized(&self) -> usize {
        self.state().unauthorized
    }

    /// Neutron's requests for a router's interface networks.
    pub fn router_queries(&self) -> Vec<Recorded> {
        self.neutron_requests_with("device_id")
    }

    /// Neutron's requests for the port with an address.
    pub fn port_queries(&self) -> Vec<Recorded> {
        self.neutron_requests_with("fixed_ips")
    }

    fn neutron_requests_with(&self, key: &str) -> Vec<Recorded> {
        let has = |r: &Recorded| r.query_pairs().iter().any(|(k, _)| k == key);
        self.neutron.recorded().into_iter().filter(has).collect()
    }
}

/// A complete HTTP/1.1 response with a body.
pub fn http_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    let mut r = (head + "\r\n").into_bytes();
    r.extend_from_slice(body);
    r
}

fn json_response(status: &str, body: &str) -> Reply {
    Reply::Send(http_response(
        status,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    ))
}

/// `POST /identity/v3/auth/tokens[?nocatalog]`: 201 with `X-Subject-Token` and a token body
/// whose catalog (unless `nocatalog`) lists decoys before the real Neutron endpoint.
fn fake_keystone(state: &Mutex<OpenStackState>, req: &Recorded, neutron_url: &str) -> Reply {
    if req.method() != "POST" || req.path_only() != "/identity/v3/auth/tokens" {
        return json_response("404 Not Found", r#"{"error": {"code": 404}}"#);
    }
    let mut state = state.lock().unwrap();
    let accepted = state.password.as_deref().is_some_and(|pw| {
        String::from_utf8_lossy(&req.body).contains(&format!(r#""password":"{pw}""#))
    });
    if !accepted {
        return json_response("401 Unauthorized", r#"{"error": {"code": 401}}"#);
    }
    let token = format!("gAAAAAB-token-{}", state.tokens.len() + 1);
    let lifetime = state.token_lifetime;
    state
        .tokens
        .push((token.clone(), Instant::now() + lifetime));
    let secs = lifetime.as_secs().min(86_399);
    let expires = format!(
        "2030-01-01T{:02}:{:02}:{:02}.000000Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let nowhere = format!("http://127.0.0.1:{}/", free_port());
    let catalog = match req.query() {
        "nocatalog" => String::new(),
        _ => format!(
            r#", "catalog": [
                {{"type": "identity", "name": "keystone", "id": "k", "endpoints": [
                    {{"id": "k1", "interface": "public", "region_id": "RegionOne",
                      "region": "RegionOne", "url": "http://127.0.0.1:1/identity"}}]}},
                {{"type": "network", "name": "neutron", "id": "n", "endpoints": [
                    {{"id": "n1", "interface": "public", "region_id": "RegionTwo",
                      "region": "RegionTwo", "url": "{nowhere}"}},
                    {{"id": "n2", "interface": "internal", "region_id": "RegionOne",
                      "region": "RegionOne", "url": "{nowhere}"}},
                    {{"id": "n3", "interface": "public", "region_id": "RegionOne",
                      "region": "RegionOne", "url": "{neutron_url}"}}]}}]"#
        ),
    };
    let body = format!(
        r#"{{"token": {{"methods": ["password"], "user": {{"id": "u", "name": "mdproxy"}},
            "issued_at": "2030-01-01T00:00:00.000000Z", "expires_at": "{expires}"{catalog}}}}}"#
    );
    Reply::Send(http_response(
        "201 Created",
        &[
            ("Content-Type", "application/json"),
            ("X-Subject-Token", &token),
        ],
        body.as_bytes(),
    ))
}

/// `GET /networking/v2.0/ports?…`: a router's interface networks (`device_id=R`), or the ports
/// with an IP on some networks (`fixed_ips=ip_address=IP&network_id=N…`).
fn fake_neutron(state: &Mutex<OpenStackState>, req: &Recorded) -> Reply {
    if req.method() != "GET" || req.path_only() != "/networking/v2.0/ports" {
        return json_response(
            "404 Not Found",
            r#"{"NeutronError": {"type": "HTTPNotFound"}}"#,
        );
    }
    let mut state = state.lock().unwrap();
    if state.password.is_some() {
        let token = req.header_values("x-auth-token");
        let now = Instant::now();
        let valid = state
            .tokens
            .iter()
            .enumerate()
            .any(|(i, (t, until))| i >= state.revoked && token == [t.as_str()] && now < *until);
        if !valid {
            state.unauthorized += 1;
            return json_response(
                "401 Unauthorized",
                r#"{"error": {"code": 401, "title": "Unauthorized"}}"#,
            );
        }
    }
    match state.mode {
        NeutronMode::Normal => {}
        NeutronMode::Hang => return Reply::Hang,
        NeutronMode::Status(status) => {
            if status == 401 {
                state.unauthorized += 1;
            }
            return json_response(
                &format!("{status} Oops"),
                r#"{"NeutronError": {"type": "Oops"}}"#,
            );
        }
    }
    let pairs = req.query_pairs();
    let all = |key: &str| -> Vec<&str> {
        pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    if let [router] = all("device_id")[..] {
        let nets = state
            .routers
            .iter()
            .filter(|(r, _)| r == router)
            .flat_map(|(_, nets)| nets.iter())
            .map(|n| format!(r#"{{"network_id": "{n}"}}"#))
            .collect::<Vec<_>>();
        return json_response("200 OK", &format!(r#"{{"ports": [{}]}}"#, nets.join(", ")));
    }
    let ip = match all("fixed_ips")[..] {
        [f] => f.strip_prefix("ip_address=").unwrap_or(""),
        _ => return json_response("400 Bad Request", r#"{"NeutronError": {}}"#),
    };
    let nets = all("network_id");
    let ports = state
        .ports
        .iter()
        .filter(|p| p.ip == ip && nets.contains(&p.network.as_str()))
        .map(|p| {
            format!(
                r#"{{"device_id": "{}", "project_id": "{}", "tenant_id": "{}"}}"#,
                p.device_id, p.project_id, p.project_id
            )
        })
        .collect::<Vec<_>>();
    let body = format!(r#"{{"ports": [{}]}}"#, ports.join(", ")).into_bytes();
    let response = http_response("200 OK", &[("Content-Type", "application/json")], &body);
    match state.port_gate.clone() {
        Some(gate) => Reply::AfterGate(gate, response),
        None => Reply::Send(response),
    }
}

impl Client {
    /// A client over an already connected Unix stream (keep a `try_clone` of it to watch it
    /// with [`unread_by_peer`]).
    pub fn over_unix(stream: UnixStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client::over(stream)
    }
}

/// Bytes written on `stream` that the peer has not read yet (`SIOCOUTQ`): 0 once the other
/// end consumed everything sent.
pub fn unread_by_peer(stream: &UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(rc, 0, "SIOCOUTQ: {}", io::Error::last_os_error());
    usize::try_from(n).unwrap_or(0)
}

/// Runs the binary with `args`: it must exit 2 (a usage or configuration error) and say `want`
/// on stderr.
pub fn assert_exit_2(args: &[String], want: &str) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, stderr) = run_binary(&args);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(want),
        "{args:?}: wanted {want:?} in {stderr}"
    );
}

/// Open file descriptors of process `pid` (entries of `/proc/PID/fd`).
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The descriptor count of `pid` once it has stopped changing (the same for 250 ms): a
/// baseline taken while a connection is still being torn down, or before a runtime opened its
/// lazily created descriptors, would be wrong.
pub fn quiet_fd_count(pid: u32) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut last = fd_count(pid);
    let mut same = 0;
    while same < 5 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        let n = fd_count(pid);
        if n == last {
            same += 1;
        } else {
            (last, same) = (n, 0);
        }
    }
    last
}

/// Waits (bounded by [`WAIT`]) until process `pid` holds `want` descriptors again; asserts it
/// does, naming `what` and listing what is open otherwise.
pub fn assert_fds_settle(pid: u32, want: usize, what: &str) {
    let settled = eventually(|| fd_count(pid) == want);
    if !settled {
        let list: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let target = fs::read_link(e.path()).unwrap_or_default();
                        format!(
                            "{} -> {}",
                            e.file_name().to_string_lossy(),
                            target.display()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        panic!(
            "{what}: {} descriptors open, {want} before:\n{}",
            fd_count(pid),
            list.join("\n")
        );
    }
}

/// What came back on one raw connection: every response status in order, and whether the
/// server closed (EOF or reset) before [`WAIT`] ran out.
#[derive(Debug)]
pub struct RawOutcome {
    pub statuses: Vec<u16>,
    pub closed: bool,
    pub raw: Vec<u8>,
}

/// Parses back-to-back responses (Content-Length or chunked bodies; no body for 1xx/204/304).
pub fn parse_statuses(mut raw: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end + 4]).into_owned();
        raw = &raw[end + 4..];
        let Some(status) = head.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) else {
            break;
        };
        out.push(status);
        if status < 200 || status == 204 || status == 304 {
            continue;
        }
        if let Some(len) = header_values(&head, "content-length").first() {
            let len: usize = len.parse().unwrap_or(0);
            raw = &raw[len.min(raw.len())..];
        } else if header_values(&head, "transfer-encoding").contains(&"chunked") {
            let mut r = BufReader::new(raw);
            let _ = read_body(&mut r, &head, true);
            let left = r.fill_buf().map(|b| b.len()).unwrap_or(0);
            raw = &raw[raw.len() - left..];
        } else {
            break;
        }
    }
    out
}

/// Sends `bytes` on a new TCP connection from a writer thread (so a server that answers early
/// and stops reading cannot block us), half-closes after them if `half_close`, and reads until
/// the server closes or [`WAIT`] passes.
pub fn raw_exchange(addr: SocketAddr, bytes: Vec<u8>, half_close: bool) -> RawOutcome {
    let stream = TcpStream::connect(addr).expect("connect");
    let writer = stream.try_clone().unwrap();
    exchange_over(stream, writer, bytes, half_close, |s: &TcpStream| {
        let _ = s.shutdown(Shutdown::Write);
    })
}

/// [`raw_exchange`] on a Unix socket (an agent's).
pub fn raw_exchange_unix(path: &Path, bytes: Vec<u8>, half_close: bool) -> RawOutcome {
    let stream = UnixStream::connect(path).expect("connect to the Unix socket");
    let writer = stream.try_clone().unwrap();
    exchange_over(stream, writer, bytes, half_close, |s: &UnixStream| {
        let _ = s.shutdown(Shutdown::Write);
    })
}

fn exchange_over<S>(
    stream: S,
    writer: S,
    bytes: Vec<u8>,
    half_close: bool,
    shut: fn(&S),
) -> RawOutcome
where
    S: Read + Write + Send + 'static + ReadTimeout,
{
    stream.read_timeout(WAIT);
    let sender = thread::spawn(move || {
        let mut w = writer;
        let _ = w.write_all(&bytes);
        if half_close {
            shut(&w);
        }
        w
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut reader = stream;
    let closed = loop {
        match reader.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                break !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                )
            }
        }
    };
    drop(reader);
    let _ = sender.join();
    RawOutcome {
        statuses: parse_statuses(&raw),
        closed,
        raw,
    }
}

/// Sets a read timeout on a stream of either kind.
pub trait ReadTimeout {
    fn read_timeout(&self, t: Duration);
}

impl ReadTimeout for TcpStream {
    fn read_timeout(&self, t: Duration) {
        self.set_read_timeout(Some(t)).unwrap();
    }
}

impl ReadTimeout for UnixStream {
    fn read_timeout(&self, t: Duration) {
        self.set_read_timeout(Some(t)).unwrap();
    }
}

/// How a [`FaultServer`] treats the next connections.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Accept, then close at once without reading.
    AcceptClose,
    /// Read the request head, write these bytes, close.
    Reply(Vec<u8>),
    /// Read the request head, write these bytes, then reset the connection (SO_LINGER 0).
    ResetAfter(Vec<u8>),
    /// Read the request head, then write these bytes one at a time, one per interval.
    Drip(Vec<u8>, Duration),
}

/// A misbehaving upstream on loopback TCP or a Unix socket: every connection gets the current
/// [`Fault`]. Counts the connections it accepted.
pub struct FaultServer {
    pub path: PathBuf,
    tcp: Option<SocketAddr>,
    fault: Arc<Mutex<Fault>>,
    accepted: Arc<AtomicUsize>,
}

impl FaultServer {
    /// On a free loopback port.
    pub fn tcp(fault: Fault) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault port");
        let addr = listener.local_addr().unwrap();
        let mut s = FaultServer::serve(move || listener.accept().map(|(c, _)| c), fault);
        s.tcp = Some(addr);
        s
    }

    /// On a new Unix socket at `path`.
    pub fn unix(path: PathBuf, fault: Fault) -> FaultServer {
        let listener = UnixListener::bind(&path).expect("bind fault socket");
        let mut s = FaultServer::serve(move || listener.accept().map(|(c, _)| c), fault);
        s.path = path;
        s
    }

    fn serve<C: Conn + AsRawFdConn>(
        mut accept: impl FnMut() -> io::Result<C> + Send + 'static,
        fault: Fault,
    ) -> FaultServer {
        let fault = Arc::new(Mutex::new(fault));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (f, n) = (fault.clone(), accepted.clone());
        thread::spawn(move || {
            while let Ok(conn) = accept() {
                n.fetch_add(1, Ordering::SeqCst);
                let fault = f.lock().unwrap().clone();
                thread::spawn(move || misbehave(conn, fault));
            }
        });
        FaultServer {
            path: PathBuf::new(),
            tcp: None,
            fault,
            accepted,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.tcp.expect("a TCP fault server"))
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// What [`misbehave`] needs beyond [`Conn`]: the descriptor, for SO_LINGER.
pub trait AsRawFdConn {
    fn raw_fd(&self) -> i32;
}

impl AsRawFdConn for TcpStream {
    fn raw_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

impl AsRawFdConn for UnixStream {
    fn raw_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

fn misbehave<C: Conn + AsRawFdConn>(conn: C, fault: Fault) {
    match fault {
        Fault::AcceptClose => {
            conn.close();
            return;
        }
        Fault::ResetAfter(bytes) => {
            // The request is left unread, so closing resets the connection on a Unix socket
            // too (there SO_LINGER does nothing, but unread data makes the peer's read fail
            // with ECONNRESET).
            thread::sleep(Duration::from_millis(100));
            let mut writer = conn;
            let _ = writer.write_all(&bytes);
            thread::sleep(Duration::from_millis(50));
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: SO_LINGER with a valid descriptor and a linger struct.
            unsafe {
                libc::setsockopt(
                    writer.raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
            return;
        }
        _ => {}
    }
    let mut reader = BufReader::new(conn.duplicate().expect("clone"));
    let mut writer = conn;
    // Bounded: a peer that never finishes its head is dropped.
    let deadline = Instant::now() + WAIT;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && Instant::now() < deadline {
        match reader.read_until(b'\n', &mut head) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    // A body the request announced is read too (Keystone's POST).
    let text = String::from_utf8_lossy(&head).into_owned();
    if let Some(len) = header_values(&text, "content-length").first() {
        let mut body = vec![0u8; len.parse().unwrap_or(0)];
        let _ = reader.read_exact(&mut body);
    }
    match fault {
        Fault::AcceptClose | Fault::ResetAfter(_) => {}
        Fault::Reply(bytes) => {
            let _ = writer.write_all(&bytes);
            writer.close();
        }
        Fault::Drip(bytes, every) => {
            for b in bytes {
                if writer.write_all(&[b]).is_err() {
                    return;
                }
                thread::sleep(every);
            }
            writer.close();
        }
    }
}
