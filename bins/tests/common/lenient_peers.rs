//! Real lenient HTTP servers as mdproxy's upstreams: `bins/tests/peers/wsgi_peer.py` run by
//! eventlet.wsgi 0.36.1 (before the CVE-2025-58068 fix, and folding `_` into `-`), by a fixed
//! eventlet (≥ 0.40.3), or by Python's `wsgiref`. Each records every request as its WSGI
//! server parsed it and answers `answer-for <X-Forwarded-For> <instance or scope> <METHOD>
//! <PATH>`, so both what reached it and who got which answer can be checked.
//!
//! The eventlet interpreters come from the venvs `scripts/lenient-peers.sh` creates (under
//! `$CARGO_TARGET_DIR/lenient-peers/`), or from `MDPROXY_EVENTLET_0_36_PYTHON` and
//! `MDPROXY_EVENTLET_FIXED_PYTHON`; `wsgiref` runs on `MDPROXY_WSGIREF_PYTHON` (default
//! `python3`). A missing one skips the test with a line saying so, unless
//! `MDPROXY_LENIENT_PEERS=required` (CI), which makes it a failure.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::{eventually, Recorded, TempDir, WAIT};

/// Which real server parses what mdproxy sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// eventlet.wsgi 0.36.1: reads one line after the last chunk (the rest of the trailer
    /// section becomes the next request) and folds `_` into `-` in header names.
    Eventlet036,
    /// A fixed eventlet.wsgi (≥ 0.40.3): discards the trailer section, drops `_` headers.
    EventletFixed,
    /// Python's wsgiref: one request per connection, folds `_` into `-`.
    Wsgiref,
}

impl PeerKind {
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Eventlet036 => "eventlet 0.36.1",
            PeerKind::EventletFixed => "eventlet (fixed)",
            PeerKind::Wsgiref => "wsgiref",
        }
    }

    fn server(self) -> &'static str {
        match self {
            PeerKind::Wsgiref => "wsgiref",
            _ => "eventlet",
        }
    }

    /// The interpreter to run the peer with, or why there is none.
    fn python(self) -> Result<PathBuf, String> {
        let (var, venv) = match self {
            PeerKind::Eventlet036 => ("MDPROXY_EVENTLET_0_36_PYTHON", "eventlet-0.36.1"),
            PeerKind::EventletFixed => ("MDPROXY_EVENTLET_FIXED_PYTHON", "eventlet-fixed"),
            PeerKind::Wsgiref => {
                let python = std::env::var_os("MDPROXY_WSGIREF_PYTHON")
                    .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
                return Ok(python);
            }
        };
        let (python, from) = match std::env::var_os(var) {
            Some(p) => (PathBuf::from(p), var),
            None => (
                peers_dir().join(venv).join("bin/python"),
                "the default venv",
            ),
        };
        if python.is_file() {
            Ok(python)
        } else {
            Err(format!(
                "no {} ({from}; {var} overrides it)",
                python.display()
            ))
        }
    }

    /// `eventlet.__version__` must be before the fix for 0.36 and at or after it for the
    /// fixed one: a venv holding the wrong version would test nothing.
    fn check_version(self, python: &Path) {
        let want_fixed = match self {
            PeerKind::Eventlet036 => false,
            PeerKind::EventletFixed => true,
            PeerKind::Wsgiref => return,
        };
        let out = Command::new(python)
            .args([
                "-W",
                "ignore",
                "-c",
                "import eventlet; print(eventlet.__version__)",
            ])
            .output()
            .expect("run the peer's python");
        assert!(out.status.success(), "{}: {out:?}", python.display());
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
        let fixed = parts >= vec![0, 40, 3];
        assert_eq!(
            fixed,
            want_fixed,
            "{} runs eventlet {version}",
            python.display()
        );
    }
}

/// `$CARGO_TARGET_DIR/lenient-peers`: the test binary lives in `<target>/debug/deps/`.
fn peers_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_mdproxy"));
    bin.parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("lenient-peers")
}

/// The interpreter for `kind`, or `None` after printing why the test is skipped; panics
/// instead when `MDPROXY_LENIENT_PEERS=required`.
pub fn peer_python(kind: PeerKind) -> Option<PathBuf> {
    match kind.python() {
        Ok(python) => {
            kind.check_version(&python);
            Some(python)
        }
        Err(why) => {
            let required = std::env::var("MDPROXY_LENIENT_PEERS").is_ok_and(|v| v == "required");
            assert!(
                !required,
                "{}: {why}, and MDPROXY_LENIENT_PEERS=required; run scripts/lenient-peers.sh",
                kind.name()
            );
            eprintln!(
                "skipped: {} peer not installed ({why}); run scripts/lenient-peers.sh",
                kind.name()
            );
            None
        }
    }
}

/// One request as the peer's WSGI server parsed it.
#[derive(Clone, Debug)]
pub struct WsgiRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Every `HTTP_*` environ key, e.g. `HTTP_X_FORWARDED_FOR`.
    pub headers: BTreeMap<String, String>,
    pub content_length: Option<String>,
    pub body: String,
}

impl WsgiRequest {
    fn parse(line: &str) -> WsgiRequest {
        let v: serde_json::Value = serde_json::from_str(line).expect("a peer record");
        let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        let headers = v["headers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        WsgiRequest {
            method: text("method"),
            path: text("path"),
            query: text("query"),
            headers,
            content_length: v["content_length"].as_str().map(str::to_owned),
            body: text("body"),
        }
    }

    /// The request as a head the common checks read: the request line, then one field per
    /// `HTTP_*` key named as WSGI folded it (`HTTP_X_FORWARDED_FOR` → `X-FORWARDED-FOR`), so
    /// two fields the server merged are one field with a comma-joined value here.
    pub fn as_recorded(&self) -> Recorded {
        let target = match self.query.as_str() {
            "" => self.path.clone(),
            q => format!("{}?{q}", self.path),
        };
        let mut head = format!("{} {target} HTTP/1.1\r\n", self.method);
        for (k, v) in &self.headers {
            let name = k.trim_start_matches("HTTP_").replace('_', "-");
            head += &format!("{name}: {v}\r\n");
        }
        head += "\r\n";
        // The peer wrote the body as Latin-1 text: one char per byte.
        let body = self.body.chars().map(|c| c as u32 as u8).collect();
        Recorded { head, body }
    }

    /// One line for failure messages.
    pub fn summary(&self) -> String {
        format!("{} {} {:?}", self.method, self.path, self.headers)
    }
}

/// A running peer, killed on drop.
pub struct Peer {
    pub kind: PeerKind,
    child: Child,
    record: PathBuf,
    /// Its TCP port (0 for a Unix socket peer).
    pub port: u16,
    _dir: TempDir,
}

impl Peer {
    /// The peer on the Unix socket `socket` (where an ns-proxy expects its agent).
    pub fn unix(kind: PeerKind, python: &Path, socket: &Path) -> Peer {
        Peer::spawn(kind, python, &format!("unix:{}", socket.display()))
    }

    /// The peer on a free loopback port (a metadata server for the agent).
    pub fn tcp(kind: PeerKind, python: &Path) -> Peer {
        Peer::spawn(kind, python, "tcp")
    }

    fn spawn(kind: PeerKind, python: &Path, where_: &str) -> Peer {
        let dir = TempDir::new();
        let (record, ready, stderr) = (dir.join("record"), dir.join("ready"), dir.join("stderr"));
        fs::write(&record, "").unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/wsgi_peer.py");
        let mut child = Command::new(python)
            .arg(script)
            .args([kind.server(), where_])
            .arg(&record)
            .arg(&ready)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn the peer");
        let up = eventually(|| ready.exists() || child.try_wait().ok().flatten().is_some());
        let port = fs::read_to_string(&ready).unwrap_or_default();
        if !up || port.is_empty() {
            let _ = child.kill();
            panic!(
                "{} peer did not start: {}",
                kind.name(),
                fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        Peer {
            kind,
            child,
            record,
            port: port.trim().parse().unwrap_or(0),
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT` of a TCP peer.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request parsed so far, in the order the peer finished parsing them.
    pub fn records(&self) -> Vec<WsgiRequest> {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.ends_with('}'))
            .map(WsgiRequest::parse)
            .collect()
    }

    /// Waits (bounded by [`WAIT`]) until a request for `path` is recorded at index `from` or
    /// later; returns the records from `from` on, up to and excluding the first such request.
    /// A fence: whatever an earlier exchange made the peer parse was parsed before it.
    pub fn records_before(&self, from: usize, path: &str) -> Option<Vec<WsgiRequest>> {
        let mut found = None;
        eventually(|| {
            let all = self.records();
            let at = all.iter().skip(from).position(|r| r.path == path);
            found = at.map(|i| all[from..from + i].to_vec());
            found.is_some()
        });
        found
    }

    pub fn count(&self) -> usize {
        self.records().len()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection from `ip` (any 127/8 address) to `to`: the ns-proxy stamps the peer
/// address, so distinct source addresses are distinct instances. std cannot bind before
/// connecting, hence libc.
pub fn connect_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only");
    };
    let sin = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a fresh descriptor that the TcpStream then owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let local = sin(ip, 0);
        let rc = libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "bind {ip:?}: {}", io::Error::last_os_error());
        let remote = sin(to.ip().octets(), to.port());
        let rc = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "connect: {}", io::Error::last_os_error());
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
    }
}

/// One response as a client read it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends `bytes` from `ip` (writer thread, then a half-close) and reads every response until
/// the server closes or [`WAIT`] passes. Bodies must be Content-Length framed (the peers' and
/// mdproxy's answers are); anything after an unparsable head is dropped.
pub fn exchange_from(ip: [u8; 4], to: SocketAddr, bytes: Vec<u8>) -> Vec<Answer> {
    let stream = connect_from(ip, to);
    let writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut w = &writer;
        let _ = w.write_all(&bytes);
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut raw = Vec::new();
    let _ = (&stream).read_to_end(&mut raw);
    let _ = sender.join();
    parse_answers(&raw)
}

/// Back-to-back Content-Length framed responses.
pub fn parse_answers(mut raw: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end + 4]).into_owned();
        raw = &raw[end + 4..];
        let Some(status) = head.split(' ').nth(1).and_then(|s| s.parse().ok()) else {
            break;
        };
        let len = super::header_values(&head, "content-length")
            .first()
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(0)
            .min(raw.len());
        out.push(Answer {
            status,
            body: String::from_utf8_lossy(&raw[..len]).into_owned(),
        });
        raw = &raw[len..];
    }
    out
}

/// A keep-alive client from one source address: one request at a time, each answer read
/// whole (Content-Length framed) before the next is sent.
pub struct KeepAlive {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    pub fn connect(ip: [u8; 4], to: SocketAddr) -> KeepAlive {
        let stream = connect_from(ip, to);
        KeepAlive {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Sends `request` and reads one answer; an error once the connection broke.
    pub fn exchange(&mut self, request: &[u8]) -> io::Result<Answer> {
        self.writer.write_all(request)?;
        self.answer()
    }

    /// Reads one answer.
    pub fn answer(&mut self) -> io::Result<Answer> {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            head += &line;
            if line == "\r\n" && head.len() > 2 {
                break;
            }
        }
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
        let status = status.ok_or(io::ErrorKind::InvalidData)?;
        let len = super::header_values(&head, "content-length")
            .first()
            .and_then(|l| l.parse::<usize>().ok())
            .ok_or(io::ErrorKind::InvalidData)?;
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Runs `step` until it returns false, `max` times, or `budget` has passed, whichever comes
/// first; returns how many steps ran.
pub fn bounded_loop(
    max: usize,
    budget: std::time::Duration,
    mut step: impl FnMut() -> bool,
) -> usize {
    let deadline = Instant::now() + budget;
    let mut n = 0;
    while n < max && Instant::now() < deadline {
        n += 1;
        if !step() {
            break;
        }
    }
    n
}
