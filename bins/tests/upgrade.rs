//! `--upgrade` without systemd: a successor takes the running process's listening sockets
//! over `--handover-socket`, and the old process drains and exits once the successor serves.
//! Checked under load (new connections all the way through: none refused, none reset, every
//! one answered), for a TCP role and for the agent's Unix socket (which must survive the old
//! process's exit), and for a successor that fails before it serves (the old one keeps going).

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;

runtime_tests! {
    a_tcp_role_upgrades_under_load_without_a_failed_request,
    the_agent_upgrades_and_keeps_its_socket_file,
    a_successor_that_fails_leaves_the_old_process_serving,
    a_handover_path_that_is_no_socket_is_left_alone,
}

/// Most requests the load thread makes (bounded however long the upgrade takes).
const MAX_REQUESTS: usize = 20_000;

/// A running `mdproxy server` offering its listener on a handover socket: its directory,
/// address and handover socket, its flags (for the successor) and the process, once it
/// accepts.
struct Old {
    dir: TempDir,
    addr: SocketAddr,
    handover: PathBuf,
    args: Vec<String>,
    running: Running,
}

impl Old {
    fn start(rt: Runtime) -> Old {
        let dir = TempDir::new();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let handover = dir.join("handover.sock");
        let mut args = empty_server_args(&dir, addr);
        args.push(format!("--handover-socket={}", handover.display()));
        args.push(format!("--pid-file={}", dir.join("pid").display()));
        let running = spawn(rt, &args);
        let up = eventually(|| TcpStream::connect(addr).is_ok());
        assert!(up, "{}", running.log());
        Old {
            dir,
            addr,
            handover,
            args,
            running,
        }
    }

    /// Its flags and `more`, for a successor.
    fn args_and(&self, more: &[String]) -> Vec<String> {
        [&self.args[..], more].concat()
    }
}

/// The status line of one request on a new connection, or what went wrong.
fn one_request(
    connect: &dyn Fn() -> std::io::Result<Box<dyn ReadWrite>>,
) -> Result<String, String> {
    let mut conn = connect().map_err(|e| format!("connect: {e}"))?;
    conn.write_all(&get("/openstack"))
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(conn)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if line.starts_with("HTTP/1.1 ") {
        Ok(line)
    } else {
        Err(format!("no answer: {line:?}"))
    }
}

trait ReadWrite: std::io::Read + Write {}
impl<T: std::io::Read + Write> ReadWrite for T {}

/// Requests one after another on new connections until `stop`; returns (answered, failures).
fn load(
    connect: impl Fn() -> std::io::Result<Box<dyn ReadWrite>> + Send + 'static,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(usize, Vec<String>)> {
    thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        for _ in 0..MAX_REQUESTS {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match one_request(&connect) {
                Ok(_) => ok += 1,
                Err(e) => failed.push(e),
            }
        }
        (ok, failed)
    })
}

fn spawn(rt: Runtime, args: &[String]) -> Running {
    Running::spawn_program(Path::new(env!("CARGO_BIN_EXE_mdproxy")), rt, args, None)
}

fn pid_in(dir: &TempDir) -> Option<u32> {
    fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn a_tcp_role_upgrades_under_load_without_a_failed_request(rt: Runtime) {
    let mut old = Old::start(rt);
    let (dir, addr) = (&old.dir, old.addr);
    let pid = old.running.pid();
    assert!(
        eventually(|| pid_in(dir) == Some(pid)),
        "{}",
        old.running.log()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let connect = move || -> std::io::Result<Box<dyn ReadWrite>> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(WAIT))?;
        Ok(Box::new(s))
    };
    let loader = load(connect, stop.clone());

    let new = spawn(rt, &old.args_and(&["--upgrade".to_owned()]));
    let status = old.running.wait_exit();
    assert!(status.success(), "old: {status}\n{}", old.running.log());
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = loader.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}\nold:\n{}\nnew:\n{}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)],
        old.running.log(),
        new.log()
    );
    assert!(ok > 0);
    new.wait_for_log("--upgrade: took 1 listening sockets");
    assert!(
        old.running.log().contains("serves our sockets; draining"),
        "{}",
        old.running.log()
    );
    // The successor serves alone now, and the pid file names it.
    assert!(one_request(&|| Ok(Box::new(TcpStream::connect(addr)?) as Box<dyn ReadWrite>)).is_ok());
    assert_eq!(pid_in(&old.dir), Some(new.pid()), "{}", new.log());
    assert!(
        old.handover.exists(),
        "the successor's handover socket is gone"
    );
}

fn the_agent_upgrades_and_keeps_its_socket_file(rt: Runtime) {
    let dir = TempDir::new();
    let (sock, handover, map) = (
        dir.join("agent.sock"),
        dir.join("handover.sock"),
        dir.join("map.toml"),
    );
    fs::write(&map, "").unwrap();
    let args = vec![
        "agent".to_owned(),
        format!("--listen-socket={}", sock.display()),
        "--shared-secret-file=/dev/null".to_owned(),
        format!("--static-map={}", map.display()),
        format!("--handover-socket={}", handover.display()),
    ];
    let mut old = spawn(rt, &args);
    assert!(
        eventually(|| UnixStream::connect(&sock).is_ok()),
        "{}",
        old.log()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let path = sock.clone();
    let connect = move || -> std::io::Result<Box<dyn ReadWrite>> {
        let s = UnixStream::connect(&path)?;
        s.set_read_timeout(Some(WAIT))?;
        Ok(Box::new(s))
    };
    let loader = load(connect, stop.clone());
    let mut upgrade = args.clone();
    upgrade.push("--upgrade".to_owned());
    let mut new = spawn(rt, &upgrade);
    assert!(old.wait_exit().success(), "{}", old.log());
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = loader.join().unwrap();
    assert!(
        failed.is_empty(),
        "{failed:?}\nold:\n{}\nnew:\n{}",
        old.log(),
        new.log()
    );
    assert!(ok > 0);
    assert!(
        sock.exists(),
        "the old agent removed the socket its successor serves"
    );
    assert!(UnixStream::connect(&sock).is_ok(), "{}", new.log());
    // The successor owns the file now: it removes it when it stops.
    new.signal(libc::SIGTERM);
    assert!(new.wait_exit().success(), "{}", new.log());
    assert!(!sock.exists(), "the successor left its socket behind");
}

fn a_successor_that_fails_leaves_the_old_process_serving(rt: Runtime) {
    let mut old = Old::start(rt);
    // Takes the sockets, then fails on a second listener it cannot bind (a port the test
    // holds).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upgrade = old.args_and(&[
        format!("--listen={}", taken.local_addr().unwrap()),
        "--upgrade".to_owned(),
    ]);
    let mut new = spawn(rt, &upgrade);
    let status = new.wait_exit();
    assert!(
        !status.success(),
        "the successor should have failed:\n{}",
        new.log()
    );
    old.running.wait_for_log("upgrade aborted, still serving");
    assert!(old.running.is_running());
    let addr = old.addr;
    let answer = one_request(&|| Ok(Box::new(TcpStream::connect(addr)?) as Box<dyn ReadWrite>));
    assert!(answer.is_ok(), "{answer:?}\n{}", old.running.log());
    assert_eq!(pid_in(&old.dir), Some(old.running.pid()));
}

fn a_handover_path_that_is_no_socket_is_left_alone(rt: Runtime) {
    let dir = TempDir::new();
    let handover = dir.join("handover.sock");
    fs::write(&handover, "not a socket").unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut args = empty_server_args(&dir, addr);
    args.push(format!("--handover-socket={}", handover.display()));
    let mut role = spawn(rt, &args);
    assert!(!role.wait_exit().success(), "{}", role.log());
    assert!(
        role.log().contains("exists and is not a socket"),
        "{}",
        role.log()
    );
    assert_eq!(fs::read_to_string(&handover).unwrap(), "not a socket");
}
