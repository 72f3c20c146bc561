//! Socket activation as systemd does it (`sd_listen_fds(3)`): the listening sockets are
//! descriptors 3, 4, … of the started process, with `LISTEN_PID` (its own pid), `LISTEN_FDS`
//! and `LISTEN_FDNAMES`. The test plays systemd: it binds, keeps the sockets across a restart
//! of the role, and checks that a connection made while no process runs is queued by the
//! kernel and answered by the next one (an upgrade refuses nothing), that a passed Unix
//! socket survives the role's exit, and that a passed socket no flag names is closed with a
//! warning.

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

runtime_tests! {
    a_restart_refuses_no_connection,
    a_passed_unix_socket_is_served_and_kept,
    a_passed_socket_no_flag_names_is_closed_with_a_warning,
    sockets_meant_for_another_process_are_not_taken,
}

/// Most descriptors a test passes.
const MAX_PASSED: usize = 4;

/// A role started the way systemd starts an activated service: `fds` become descriptors
/// 3.. and `LISTEN_PID` is the pid of the process that runs mdproxy (`sh` execs it, keeping
/// its pid, so `$$` is that pid). `pid` overrides `LISTEN_PID` to test a mismatch.
struct Activated {
    child: Child,
    stderr: PathBuf,
}

impl Activated {
    fn start(
        rt: Runtime,
        dir: &TempDir,
        args: &[String],
        fds: &[RawFd],
        pid: Option<&str>,
    ) -> Self {
        let stderr = dir.join(&format!("stderr-{}", fds.len()));
        let names = vec!["mdproxy"; fds.len()].join(":");
        let pid = pid.unwrap_or("$$");
        let script = format!(
            "LISTEN_PID={pid} LISTEN_FDS={} LISTEN_FDNAMES={names} exec \"$0\" \"$@\"",
            fds.len()
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_mdproxy"))
            .args(args)
            .arg(format!("--runtime={}", rt.name()))
            .stdin(Stdio::null())
            .stderr(File::create(&stderr).unwrap());
        assert!(fds.len() <= MAX_PASSED);
        let (mut passed, count) = ([-1 as RawFd; MAX_PASSED], fds.len());
        passed[..count].copy_from_slice(fds);
        // SAFETY: fcntl and dup2 are async-signal-safe and nothing is allocated: the child
        // only moves descriptors before exec. Each is first copied above 100, so that moving
        // one to 3 or 4 cannot overwrite another still to be moved; dup2 clears close-on-exec
        // on the copy it makes, which is how systemd passes them.
        unsafe {
            cmd.pre_exec(move || {
                let mut high = [-1 as RawFd; MAX_PASSED];
                for i in 0..count {
                    high[i] = libc::fcntl(passed[i], libc::F_DUPFD_CLOEXEC, 100);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, fd) in high.iter().take(count).enumerate() {
                    if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn sh → mdproxy");
        Activated { child, stderr }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_for_log(&self, text: &str) {
        assert!(
            eventually(|| self.log().contains(text)),
            "the log never said {text:?}:\n{}",
            self.log()
        );
    }

    /// SIGTERM, then a bounded wait for a clean exit.
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let exited = eventually(|| self.child.try_wait().unwrap().is_some());
        assert!(exited, "did not exit on SIGTERM:\n{}", self.log());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}:\n{}", self.log());
        self.log()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status line of the answer to a GET on `stream`.
fn status_line(stream: impl Read) -> String {
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    reader.read_line(&mut line).expect("an answer");
    line
}

fn ask(mut stream: TcpStream) -> String {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&get("/openstack")).unwrap();
    status_line(stream)
}

fn a_restart_refuses_no_connection(rt: Runtime) {
    let dir = TempDir::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let args = empty_server_args(&dir, addr);
    // Made before any process runs: the kernel completes it into the queue.
    let early = TcpStream::connect(addr).expect("queued by the kernel");
    let first = Activated::start(rt, &dir, &args, &[listener.as_raw_fd()], None);
    assert!(ask(early).starts_with("HTTP/1.1 "), "{}", first.log());
    first.wait_for_log("socket activation: 1 of 1 passed sockets used");
    let log = first.stop();
    assert!(!log.contains("cannot listen"), "{log}");

    // Between the two processes: queued, not refused.
    let between = TcpStream::connect(addr).expect("queued while nothing runs");
    let second = Activated::start(rt, &dir, &args, &[listener.as_raw_fd()], None);
    assert!(ask(between).starts_with("HTTP/1.1 "), "{}", second.log());
    assert!(ask(TcpStream::connect(addr).unwrap()).starts_with("HTTP/1.1 "));
    second.stop();
}

fn a_passed_unix_socket_is_served_and_kept(rt: Runtime) {
    let dir = TempDir::new();
    let path = dir.join("agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let map = dir.join("map.toml");
    fs::write(&map, "").unwrap();
    let args = vec![
        "agent".to_owned(),
        format!("--listen-socket={}", path.display()),
        "--shared-secret-file=/dev/null".to_owned(),
        format!("--static-map={}", map.display()),
    ];
    let early = UnixStream::connect(&path).expect("queued by the kernel");
    let agent = Activated::start(rt, &dir, &args, &[listener.as_raw_fd()], None);
    let mut early = early;
    early.set_read_timeout(Some(WAIT)).unwrap();
    early.write_all(&get("/openstack")).unwrap();
    // No scope header: the agent refuses it, with an HTTP answer.
    assert!(
        status_line(early).starts_with("HTTP/1.1 4"),
        "{}",
        agent.log()
    );
    agent.stop();
    assert!(
        Path::new(&path).exists(),
        "the agent removed a socket systemd owns"
    );
    assert!(
        UnixStream::connect(&path).is_ok(),
        "the socket stopped listening"
    );
}

fn a_passed_socket_no_flag_names_is_closed_with_a_warning(rt: Runtime) {
    let dir = TempDir::new();
    let served = TcpListener::bind("127.0.0.1:0").unwrap();
    let stray = TcpListener::bind("127.0.0.1:0").unwrap();
    let stray_addr = stray.local_addr().unwrap();
    let args = empty_server_args(&dir, served.local_addr().unwrap());
    let fds = [served.as_raw_fd(), stray.as_raw_fd()];
    let role = Activated::start(rt, &dir, &args, &fds, None);
    role.wait_for_log(&format!(
        "socket activation passed {stray_addr}, which no --listen names"
    ));
    role.wait_for_log("socket activation: 1 of 2 passed sockets used");
    let answer = ask(TcpStream::connect(served.local_addr().unwrap()).unwrap());
    assert!(answer.starts_with("HTTP/1.1 "), "{}", role.log());
    role.stop();
}

fn sockets_meant_for_another_process_are_not_taken(rt: Runtime) {
    let dir = TempDir::new();
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    // The flag names another address; the passed socket (for pid 1) must not be touched.
    let own = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = empty_server_args(&dir, own);
    let role = Activated::start(rt, &dir, &args, &[passed.as_raw_fd()], Some("1"));
    assert!(
        eventually(|| TcpStream::connect(own).is_ok()),
        "did not bind {own} itself:\n{}",
        role.log()
    );
    assert!(ask(TcpStream::connect(own).unwrap()).starts_with("HTTP/1.1 "));
    let log = role.stop();
    assert!(!log.contains("socket activation"), "{log}");
}
