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

/// Upper bound of every wait: generous, because CI shares two busy cores.
pub const WAIT: Duration = Duration::from_secs(20);
pub const ROUTER: &str = "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01";
pub const NETWORK: &str = "5a1c9e3b-7d2f-4e6a-8b0c-1f2e3d4c5b6a";

/// The event loops the binary can run; every test runs once per variant.
#[derive(Clone, Copy, Debug)]
pub enum Runtime {
    Mio,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Mio => "mio",
        }
    }
}

/// `runtime_tests! { a, b }` turns each `fn a(rt: Runtime)` into one `#[test]` per runtime:
/// `mio::a`, and `smol::a` once that runtime exists.
macro_rules! runtime_tests {
    ($($name:ident),* $(,)?) => {
        mod mio {
            $( #[test] fn $name() { super::$name($crate::common::Runtime::Mio) } )*
        }
    };
}
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
            seen,
        }
    }

    /// `http://127.0.0.1:PORT` of a TCP upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.tcp.expect("a TCP upstream"))
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
        let dir = TempDir::new();
        let stderr = dir.join("stderr");
        let log_file = log_file.map(|name| dir.join(name));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdproxy"));
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
            if !extra.iter().any(|a| a.starts_with("--network-id")) {
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
    running: Running,
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
        let mut running = Running::spawn(rt, &all, Some("agent.log"));
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

/// A loopback port nobody listened on a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
