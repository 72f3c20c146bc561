//! `Type=notify`: started by systemd, each role sends `READY=1` to `$NOTIFY_SOCKET` (one
//! datagram, on a path or an `@abstract` socket) once its listeners are bound, and not before:
//! the moment the datagram arrives, the role accepts connections. A socket that cannot be
//! reached is logged; the role serves all the same.

mod common;

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

runtime_tests! {
    ns_proxy_is_ready_once_listening,
    agent_is_ready_once_its_socket_accepts,
    server_is_ready_once_listening,
    unreachable_notify_socket_is_logged_not_fatal,
    reload_and_stop_are_announced,
    the_watchdog_is_pinged_while_the_loop_turns,
}

/// `mdproxy <args> --runtime=…` with `NOTIFY_SOCKET=notify`, killed on drop.
struct Role {
    child: Child,
    stderr: PathBuf,
}

impl Role {
    fn start(rt: Runtime, dir: &TempDir, args: &[String], notify: &str) -> Role {
        Role::start_with(rt, dir, args, notify, &[])
    }

    /// [`Role::start`] with more environment.
    fn start_with(
        rt: Runtime,
        dir: &TempDir,
        args: &[String],
        notify: &str,
        env: &[(&str, String)],
    ) -> Role {
        let stderr = dir.join("stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_mdproxy"))
            .args(args)
            .arg(format!("--runtime={}", rt.name()))
            .env("NOTIFY_SOCKET", notify)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn mdproxy");
        Role { child, stderr }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bound notify socket at `dir/notify`, as systemd's; returns it and `NOTIFY_SOCKET`.
fn path_socket(dir: &TempDir) -> (UnixDatagram, String) {
    let path = dir.join("notify");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    (socket, path.display().to_string())
}

/// Waits (bounded) for one datagram, which must be exactly `READY=1`.
fn expect_ready(socket: &UnixDatagram, role: &Role) {
    assert_eq!(next_datagram(socket, role), "READY=1");
}

/// Waits (bounded) for the next datagram.
fn next_datagram(socket: &UnixDatagram, role: &Role) -> String {
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 256];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no datagram ({e}); log:\n{}", role.log()));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `CLOCK_MONOTONIC` now, in microseconds.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for writing.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn signal(role: &Role, sig: libc::c_int) {
    // SAFETY: signalling our own child.
    assert_eq!(
        unsafe { libc::kill(role.child.id() as libc::pid_t, sig) },
        0
    );
}

fn ns_proxy_args(port: u16, dir: &TempDir) -> Vec<String> {
    let upstream = dir.join("agent.sock");
    vec![
        "ns-proxy".to_owned(),
        format!("--router-id={ROUTER}"),
        format!("--listen=127.0.0.1:{port}"),
        format!("--upstream-socket={}", upstream.display()),
    ]
}

/// Connecting must work at once: no retry, no wait.
fn accepts_now(addr: SocketAddr, role: &Role) {
    if let Err(e) = TcpStream::connect(addr) {
        panic!("ready, but {addr} refuses: {e}; log:\n{}", role.log());
    }
}

fn ns_proxy_is_ready_once_listening(rt: Runtime) {
    let dir = TempDir::new();
    let (socket, notify) = path_socket(&dir);
    let port = free_port();
    let role = Role::start(rt, &dir, &ns_proxy_args(port, &dir), &notify);
    expect_ready(&socket, &role);
    accepts_now(SocketAddr::from(([127, 0, 0, 1], port)), &role);
}

#[cfg(target_os = "linux")]
fn agent_is_ready_once_its_socket_accepts(rt: Runtime) {
    use std::os::linux::net::SocketAddrExt;
    let dir = TempDir::new();
    // Unique like the directory; nothing is created there (abstract names are not files).
    let name = dir.join("notify").display().to_string();
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
    let (map, listen) = (dir.join("map.toml"), dir.join("agent.sock"));
    fs::write(&map, "").unwrap();
    let args = [
        "agent".to_owned(),
        format!("--listen-socket={}", listen.display()),
        "--shared-secret-file=/dev/null".to_owned(),
        format!("--static-map={}", map.display()),
        "--socket-mode=all".to_owned(),
    ];
    let role = Role::start(rt, &dir, &args, &format!("@{name}"));
    expect_ready(&socket, &role);
    if let Err(e) = UnixStream::connect(&listen) {
        panic!(
            "ready, but {} refuses: {e}; log:\n{}",
            listen.display(),
            role.log()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn agent_is_ready_once_its_socket_accepts(_: Runtime) {}

fn server_is_ready_once_listening(rt: Runtime) {
    let dir = TempDir::new();
    let (socket, notify) = path_socket(&dir);
    let instances = dir.join("instances");
    fs::create_dir(&instances).unwrap();
    let port = free_port();
    let args = [
        "server".to_owned(),
        format!("--instances={}", instances.display()),
        "--shared-secret-file=/dev/null".to_owned(),
        format!("--listen=127.0.0.1:{port}"),
    ];
    let role = Role::start(rt, &dir, &args, &notify);
    expect_ready(&socket, &role);
    accepts_now(SocketAddr::from(([127, 0, 0, 1], port)), &role);
}

fn unreachable_notify_socket_is_logged_not_fatal(rt: Runtime) {
    let dir = TempDir::new();
    let nowhere = dir.join("nobody-listens-here");
    let port = free_port();
    let mut role = Role::start(
        rt,
        &dir,
        &ns_proxy_args(port, &dir),
        &nowhere.display().to_string(),
    );
    assert!(
        eventually(|| role.log().contains("cannot notify the service manager")),
        "no warning; log:\n{}",
        role.log()
    );
    assert!(role.child.try_wait().unwrap().is_none(), "{}", role.log());
    accepts_now(SocketAddr::from(([127, 0, 0, 1], port)), &role);
    assert!(!Path::new(&nowhere).exists());
}

/// `Type=notify-reload`: SIGHUP sends `RELOADING=1` with a current `MONOTONIC_USEC`, then
/// `READY=1`; SIGTERM sends `STOPPING=1` before the drain.
fn reload_and_stop_are_announced(rt: Runtime) {
    let dir = TempDir::new();
    let (socket, notify) = path_socket(&dir);
    let port = free_port();
    let role = Role::start(rt, &dir, &ns_proxy_args(port, &dir), &notify);
    expect_ready(&socket, &role);
    // A served request proves the loop (and its signal handling) runs.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let answer = request(addr, &get("/latest/meta-data/"));
    assert!(answer.head.starts_with("HTTP/1.1 "), "{}", answer.head);

    let before = monotonic_usec();
    signal(&role, libc::SIGHUP);
    let reloading = next_datagram(&socket, &role);
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{reloading:?}"))
        .parse()
        .unwrap();
    assert!(usec >= before && usec <= monotonic_usec(), "{usec} not now");
    expect_ready(&socket, &role);

    signal(&role, libc::SIGTERM);
    assert_eq!(next_datagram(&socket, &role), "STOPPING=1");
}

/// `WatchdogSec=`: with `WATCHDOG_USEC` (and `WATCHDOG_PID` unset) pings arrive at about
/// half the interval, from every worker loop turning.
fn the_watchdog_is_pinged_while_the_loop_turns(rt: Runtime) {
    let dir = TempDir::new();
    let (socket, notify) = path_socket(&dir);
    let port = free_port();
    let env = [("WATCHDOG_USEC", "200000".to_owned())];
    let role = Role::start_with(rt, &dir, &ns_proxy_args(port, &dir), &notify, &env);
    expect_ready(&socket, &role);
    for _ in 0..3 {
        assert_eq!(next_datagram(&socket, &role), "WATCHDOG=1");
    }
    // Meant for another process: no pings.
    drop(role);
    let dir = TempDir::new();
    let (socket, notify) = path_socket(&dir);
    let env = [
        ("WATCHDOG_USEC", "200000".to_owned()),
        ("WATCHDOG_PID", "1".to_owned()),
    ];
    let role = Role::start_with(rt, &dir, &ns_proxy_args(free_port(), &dir), &notify, &env);
    expect_ready(&socket, &role);
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(600)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        socket.recv(&mut buf).is_err(),
        "a ping for another pid's watchdog"
    );
}
