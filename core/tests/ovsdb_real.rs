//! The OVSDB session against a real `ovsdb-server` (Debian's), over a Unix socket and loopback
//! TCP, standalone and as a 3-member cluster. A small blocking driver below plays the
//! endpoint: it owns the sockets, reads with a timeout bounded by the session's next deadline,
//! and hands every byte and deadline to the session.
//!
//! Skipped (saying so) when `ovsdb-server` is not installed, unless
//! `MDPROXY_OVN_TEST=required`, which turns the absence into a failure.
#![allow(clippy::disallowed_methods)] // a test of real I/O: real clock, processes, files

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mdproxy_core::lookup::{ClientAction, ReqId};
use mdproxy_core::ovsdb::{
    parse_remotes, Atom, Condition, Datum, RowOp, Session, SessionConfig, SessionEvent,
    SessionState, SessionStatus, TableMonitor,
};
use mdproxy_core::scope::Uuid;
use mdproxy_core::socket::{ConnectError, Input, Target};

const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
/// Every wait for the server is bounded by this.
const PATIENCE: Duration = Duration::from_secs(30);

/// Whether to run: `false` (after printing why) when the server is not installed.
fn server_installed() -> bool {
    let found = Command::new("ovsdb-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && Path::new(SB_SCHEMA).exists();
    if !found {
        if std::env::var("MDPROXY_OVN_TEST").as_deref() == Ok("required") {
            panic!("ovsdb-server (or {SB_SCHEMA}) not installed, and MDPROXY_OVN_TEST=required");
        }
        println!("skipped: ovsdb-server not installed");
    }
    found
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("mdproxy-ovsdb-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One `ovsdb-server` process, killed on drop.
struct Server {
    child: Option<Child>,
    sock: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Serves `db` on `<name>.sock` and, with `tcp`, on a loopback port it picks.
    fn start(dir: &TempDir, name: &str, db: &Path, tcp: bool) -> Server {
        let sock = dir.path(&format!("{name}.sock"));
        let log = dir.path(&format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!(
                "--unixctl={}",
                dir.path(&format!("{name}.ctl")).display()
            ))
            .arg(format!("--log-file={}", log.display()))
            .arg("--no-chdir");
        if tcp {
            cmd.arg("--remote=ptcp:0:127.0.0.1");
        }
        cmd.arg(db).stdout(Stdio::null()).stderr(Stdio::null());
        let server = Server {
            child: Some(cmd.spawn().expect("ovsdb-server starts")),
            sock,
            log,
        };
        wait_until("the server's socket", || {
            UnixStream::connect(&server.sock).is_ok()
        });
        server
    }

    /// The TCP port it listens on, from its log (`listening on port N`).
    fn tcp_port(&self) -> u16 {
        let mut port = None;
        wait_until("the TCP port in the log", || {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            port = log
                .split("listening on port ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse().ok());
            port.is_some()
        });
        port.unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn remote(&self) -> String {
        format!("unix:{}", self.sock.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        // Polling another process's state, which offers nothing to block on.
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sbctl(db: &str, args: &[&str]) -> String {
    run(Command::new("ovn-sbctl")
        .arg(format!("--db={db}"))
        .arg("--timeout=20")
        .args(args))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn connect(target: &Target) -> std::io::Result<Stream> {
        Ok(match target {
            Target::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
            Target::Tcp(a) => Stream::Tcp(TcpStream::connect_timeout(a, PATIENCE)?),
        })
    }

    fn set_read_timeout(&self, t: Duration) {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Stream::Unix(s) => s.set_read_timeout(t).unwrap(),
            Stream::Tcp(s) => s.set_read_timeout(t).unwrap(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.write_all(data),
            Stream::Tcp(s) => s.write_all(data),
        }
    }
}

/// The endpoint's part, blocking, plus a replica of `Chassis` names kept from the events.
struct Driver {
    session: Session,
    sock: Option<(ReqId, Stream)>,
    /// Chassis rows: uuid → name.
    chassis: BTreeMap<Uuid, String>,
    events: Vec<SessionEvent>,
}

impl Driver {
    fn new(remotes: &str, monitors: Vec<TableMonitor>, probe: Duration) -> Driver {
        let mut cfg =
            SessionConfig::new(parse_remotes(remotes).unwrap(), "OVN_Southbound", monitors);
        cfg.probe_interval = probe;
        cfg.backoff_min = Duration::from_millis(50);
        cfg.backoff_max = Duration::from_millis(400);
        cfg.seed = 7;
        cfg.check().unwrap();
        Driver {
            session: Session::new(cfg, Instant::now()),
            sock: None,
            chassis: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// Moves bytes and time until `done` holds (bounded by [`PATIENCE`]).
    fn run_until(&mut self, what: &str, mut done: impl FnMut(&Driver) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.drain();
            if done(self) {
                return;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "gave up waiting for {what}: {:?}",
                self.status()
            );
            let wake = self
                .session
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            // At most 50 ms per read, so `done` conditions on the outside world are seen.
            let wait = wake
                .saturating_duration_since(now)
                .min(Duration::from_millis(50));
            match &mut self.sock {
                Some((req, stream)) => {
                    let req = *req;
                    stream.set_read_timeout(wait);
                    let mut buf = [0u8; 16384];
                    let input = match stream.read(&mut buf) {
                        Ok(0) => Some(Input::Eof),
                        Ok(n) => Some(Input::Read(&buf[..n])),
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            None
                        }
                        Err(_) => Some(Input::Error),
                    };
                    if let Some(input) = input {
                        self.session.handle(Instant::now(), req, input);
                        continue;
                    }
                }
                None => {
                    if wait > Duration::ZERO {
                        std::thread::sleep(wait); // waiting out a backoff: nothing else to wait on
                    }
                }
            }
            let now = Instant::now();
            if self.session.poll_timeout().is_some_and(|t| t <= now) {
                self.session.handle_timeout(now);
            }
        }
    }

    /// Carries out actions, writes what is pending, applies events; until quiet.
    fn drain(&mut self) {
        loop {
            let mut busy = false;
            while let Some(a) = self.session.poll_action() {
                busy = true;
                match a {
                    ClientAction::Connect(req, target) => {
                        let input = match Stream::connect(&target) {
                            Ok(s) => {
                                self.sock = Some((req, s));
                                Input::Connected
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::ConnectionRefused | ErrorKind::NotFound
                                ) =>
                            {
                                Input::ConnectFailed(ConnectError::Refused)
                            }
                            Err(_) => Input::ConnectFailed(ConnectError::Other),
                        };
                        self.session.handle(Instant::now(), req, input);
                    }
                    ClientAction::Close(req) => {
                        if self.sock.as_ref().is_some_and(|(r, _)| *r == req) {
                            self.sock = None;
                        }
                    }
                }
            }
            if let Some((req, stream)) = &mut self.sock {
                let req = *req;
                let out = self.session.pending_write(req).to_vec();
                if !out.is_empty() {
                    busy = true;
                    match stream.write_all(&out) {
                        Ok(()) => self.session.consume_write(req, out.len()),
                        Err(_) => self.session.handle(Instant::now(), req, Input::Error),
                    }
                }
            }
            while let Some(ev) = self.session.poll_event() {
                busy = true;
                self.apply(&ev);
                self.events.push(ev);
            }
            if !busy {
                return;
            }
        }
    }

    fn apply(&mut self, ev: &SessionEvent) {
        let updates = match ev {
            SessionEvent::Snapshot(u) => {
                self.chassis.clear();
                u
            }
            SessionEvent::Update(u) => u,
            _ => return,
        };
        for t in updates.iter().filter(|t| &*t.table == "Chassis") {
            for row in &t.rows {
                let name = |cols: &[(Box<str>, Datum)]| {
                    cols.iter()
                        .find(|(c, _)| &**c == "name")
                        .and_then(|(_, d)| d.scalar()?.as_str().map(str::to_owned))
                };
                match &row.op {
                    RowOp::Initial(c) | RowOp::Insert(c) => {
                        self.chassis.insert(row.uuid, name(c).unwrap_or_default());
                    }
                    RowOp::Modify(c) => {
                        if let Some(n) = name(c) {
                            self.chassis.insert(row.uuid, n);
                        }
                    }
                    RowOp::Delete => {
                        self.chassis.remove(&row.uuid);
                    }
                }
            }
        }
    }

    fn names(&self) -> Vec<&str> {
        let mut n: Vec<&str> = self.chassis.values().map(String::as_str).collect();
        n.sort_unstable();
        n
    }

    fn status(&self) -> SessionStatus {
        self.session.status()
    }

    fn monitoring(&self) -> bool {
        self.status().state == SessionState::Monitoring
    }
}

fn chassis_monitor(conditions: Option<Vec<Condition>>) -> TableMonitor {
    TableMonitor {
        table: "Chassis".into(),
        columns: vec!["name".into(), "hostname".into()],
        conditions,
    }
}

fn name_is(name: &str) -> Condition {
    Condition::clause("name", "==", Datum::Set(vec![Atom::String(name.into())]))
}

fn standalone_db(dir: &TempDir) -> PathBuf {
    let db = dir.path("sb.db");
    run(Command::new("ovsdb-tool")
        .arg("create")
        .arg(&db)
        .arg(SB_SCHEMA));
    db
}

#[test]
fn standalone_over_unix_and_tcp() {
    if !server_installed() {
        return;
    }
    let dir = TempDir::new("standalone");
    let db = standalone_db(&dir);
    let server = Server::start(&dir, "sb", &db, true);
    let sb = server.remote();
    sbctl(&sb, &["chassis-add", "ch1", "geneve", "127.0.0.1"]);
    sbctl(&sb, &["chassis-add", "ch2", "geneve", "127.0.0.2"]);

    // Over the Unix socket, replicating only ch1.
    let mut unix = Driver::new(
        &sb,
        vec![chassis_monitor(Some(vec![name_is("ch1")]))],
        Duration::from_secs(60),
    );
    unix.run_until("the snapshot", |d| d.monitoring());
    assert_eq!(unix.names(), ["ch1"]);
    assert!(matches!(
        &unix.events[..],
        [
            SessionEvent::Connected { resumed: false, .. },
            SessionEvent::Snapshot(_)
        ]
    ));

    // Over TCP, every row.
    let tcp_remote = format!("tcp:127.0.0.1:{}", server.tcp_port());
    let mut tcp = Driver::new(
        &tcp_remote,
        vec![chassis_monitor(None)],
        Duration::from_secs(60),
    );
    tcp.run_until("the snapshot", |d| d.monitoring());
    assert_eq!(tcp.names(), ["ch1", "ch2"]);
    assert_eq!(tcp.status().remote.as_deref(), Some(tcp_remote.as_str()));

    // Insert, modify, delete arrive as updates.
    sbctl(&sb, &["chassis-add", "ch3", "geneve", "127.0.0.3"]);
    tcp.run_until("ch3", |d| d.names() == ["ch1", "ch2", "ch3"]);
    sbctl(&sb, &["set", "Chassis", "ch1", "name=ch1-renamed"]);
    tcp.run_until("the rename", |d| d.names() == ["ch1-renamed", "ch2", "ch3"]);
    sbctl(&sb, &["chassis-del", "ch3"]);
    tcp.run_until("the delete", |d| d.names() == ["ch1-renamed", "ch2"]);
    assert!(tcp.events[2..]
        .iter()
        .all(|e| matches!(e, SessionEvent::Update(_))));

    // The filtered session saw ch1 leave its condition, and nothing of ch3.
    unix.run_until("ch1 renamed away", |d| d.names().is_empty());
    // New conditions change what is replicated.
    unix.session.set_conditions(
        Instant::now(),
        "Chassis",
        vec![name_is("ch2"), name_is("ch9")],
    );
    unix.run_until("ch2 by condition", |d| d.names() == ["ch2"]);
    sbctl(&sb, &["chassis-add", "ch9", "geneve", "127.0.0.9"]);
    unix.run_until("ch9", |d| d.names() == ["ch2", "ch9"]);
    assert!(unix
        .events
        .iter()
        .all(|e| !matches!(e, SessionEvent::Disconnected { .. })));

    // ovsdb-server probes an idle TCP client (every 5 s): the session answers and stays.
    let echoes = tcp.status().echoes_answered;
    tcp.run_until("the server's echo", |d| d.status().echoes_answered > echoes);
    tcp.run_until("some more traffic", |_| true);
    let st = tcp.status();
    assert_eq!((st.connects, st.disconnects), (1, 0), "{st:?}");
}

#[test]
fn server_restart_reconnects() {
    if !server_installed() {
        return;
    }
    let dir = TempDir::new("restart");
    let db = standalone_db(&dir);
    let mut server = Server::start(&dir, "sb", &db, false);
    let sb = server.remote();
    sbctl(&sb, &["chassis-add", "ch1", "geneve", "127.0.0.1"]);
    let mut d = Driver::new(&sb, vec![chassis_monitor(None)], Duration::from_secs(60));
    d.run_until("the snapshot", |d| d.monitoring());
    assert_eq!(d.names(), ["ch1"]);

    server.kill();
    d.run_until("the loss", |d| d.status().disconnects == 1);
    assert!(!d.monitoring());
    let _server = Server::start(&dir, "sb", &db, false);
    sbctl(&sb, &["chassis-add", "ch2", "geneve", "127.0.0.2"]);
    d.run_until("the reconnect", |d| d.monitoring());
    assert_eq!(d.names(), ["ch1", "ch2"]);
    let st = d.status();
    assert_eq!(st.disconnects, 1);
    assert!(st.connects >= 2, "{st:?}");
    // A standalone server keeps no transaction history: it cannot resume.
    assert_eq!((st.resumes, st.resyncs), (0, 1), "{st:?}");
    assert!(matches!(
        d.events.iter().rev().nth(1),
        Some(SessionEvent::Connected { resumed: false, .. })
    ));
}

#[test]
fn cluster_failover_resumes() {
    if !server_installed() {
        return;
    }
    let dir = TempDir::new("cluster");
    let raft: Vec<String> = (0..3)
        .map(|_| format!("tcp:127.0.0.1:{}", free_port()))
        .collect();
    let dbs: Vec<PathBuf> = (0..3).map(|i| dir.path(&format!("sb{i}.db"))).collect();
    run(Command::new("ovsdb-tool")
        .arg("create-cluster")
        .arg(&dbs[0])
        .arg(SB_SCHEMA)
        .arg(&raft[0]));
    for i in 1..3 {
        run(Command::new("ovsdb-tool")
            .arg("join-cluster")
            .arg(&dbs[i])
            .arg("OVN_Southbound")
            .arg(&raft[i])
            .arg(&raft[0]));
    }
    let mut servers: Vec<Server> = (0..3)
        .map(|i| Server::start(&dir, &format!("sb{i}"), &dbs[i], false))
        .collect();
    let all = servers
        .iter()
        .map(Server::remote)
        .collect::<Vec<_>>()
        .join(",");
    sbctl(&all, &["chassis-add", "ch1", "geneve", "127.0.0.1"]);

    let mut d = Driver::new(&all, vec![chassis_monitor(None)], Duration::from_secs(60));
    d.run_until("the snapshot", |d| d.monitoring() && d.names() == ["ch1"]);
    sbctl(&all, &["chassis-add", "ch2", "geneve", "127.0.0.2"]);
    d.run_until("ch2", |d| d.names() == ["ch1", "ch2"]);

    let connected = d.status().remote.unwrap();
    let victim = servers
        .iter()
        .position(|s| s.remote() == connected)
        .expect("connected to a member");
    servers[victim].kill();
    d.run_until("another member", |d| {
        d.monitoring() && d.status().remote.as_deref() != Some(connected.as_str())
    });
    let st = d.status();
    assert_eq!(
        (st.resumes, st.resyncs, st.disconnects),
        (1, 0, 1),
        "{st:?}"
    );
    assert!(matches!(
        d.events.iter().rev().nth(1),
        Some(SessionEvent::Connected { resumed: true, .. })
    ));
    assert_eq!(d.names(), ["ch1", "ch2"]);

    // The two members left are a majority: writes go on and reach the session.
    let rest = (0..3)
        .filter(|&i| i != victim)
        .map(|i| servers[i].remote())
        .collect::<Vec<_>>()
        .join(",");
    // Until they have elected a new leader (if the victim led), ovn-sbctl finds none.
    wait_until("a write through the members left", || {
        Command::new("ovn-sbctl")
            .arg(format!("--db={rest}"))
            .args([
                "--timeout=20",
                "--may-exist",
                "chassis-add",
                "ch3",
                "geneve",
                "127.0.0.3",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    d.run_until("ch3", |d| d.names() == ["ch1", "ch2", "ch3"]);
}
