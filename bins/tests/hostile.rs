//! The hostile-input matrix: the real `mdproxy ns-proxy` (on both runtimes) in front of a
//! recording Unix-socket upstream, fed what a hostile instance might send. Every row asserts
//! the statuses that come back (or the bare close), that the connection ends, and what the
//! upstream saw: for smuggling attempts it must never see a second request. After every row a
//! normal request on a new connection must still be served.
//!
//! Beyond the table: slowloris, a client that never reads a large answer (the proxy's memory
//! stays bounded), half-closed clients, connection floods up to and past `--max-conns` and
//! `--max-conns-per-ip`, and path traversal against `mdproxy server`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use common::hostile_cases::{cases, post, Up};
use common::*;

runtime_tests! {
    hostile_request_matrix,
    slowloris_one_byte_per_second_gets_408,
    client_that_never_reads_keeps_memory_bounded,
    pipelining_client_that_never_reads_keeps_memory_bounded,
    half_closed_client_still_gets_its_response,
    connection_flood_past_the_limits,
    path_traversal_at_the_server_finds_nothing,
}

/// The ns-proxy's identity: its own X-Forwarded-For and router, nothing the client claimed.
fn only_proxy_identity(r: &Recorded) {
    assert_eq!(
        r.header_values("x-forwarded-for"),
        ["127.0.0.1"],
        "{}",
        r.head
    );
    assert_eq!(
        r.header_values("x-neutron-router-id"),
        [ROUTER],
        "{}",
        r.head
    );
    for gone in ["x-instance-id", "x-tenant-id", "x-instance-id-signature"] {
        assert!(r.header_values(gone).is_empty(), "{gone}: {}", r.head);
    }
}

fn start_matrix(rt: Runtime, dir: &TempDir) -> (Upstream, Proxy) {
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let proxy = Proxy::start(rt, &up.path, &["--timeout-head", "2"]);
    (up, proxy)
}

/// One normal request on a new connection: served, and seen upstream.
fn assert_still_serves(proxy: &Proxy, up: &Upstream, after: &str) {
    let path = format!("/latest/meta-data/after-{after}");
    let before = up.count();
    let resp = request(proxy.addr, &get(&path));
    assert_eq!(resp.status, 200, "after {after}: {resp:?}");
    let seen = up.wait_for(before + 1);
    assert_eq!(seen.last().unwrap().path(), path, "after {after}");
}

fn hostile_request_matrix(rt: Runtime) {
    let dir = TempDir::new();
    let (up, proxy) = start_matrix(rt, &dir);
    let mut failures = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for case in cases {
        let before = up.count();
        let out = raw_exchange(proxy.addr, case.bytes.clone(), true);
        let seen: Vec<Recorded> = up.recorded()[before..].to_vec();
        let mut problems = Vec::new();
        if out.statuses != case.want {
            problems.push(format!(
                "statuses {:?}, want {:?}: {:?}",
                out.statuses,
                case.want,
                String::from_utf8_lossy(&out.raw[..out.raw.len().min(200)])
            ));
        }
        if !out.closed {
            problems.push("connection not closed".to_owned());
        }
        if seen.iter().any(|r| r.path().contains("smuggled")) {
            problems.push("the smuggled request reached the upstream".to_owned());
        }
        match (case.up, seen.len()) {
            (Up::Nothing, 0) => {}
            (Up::One, 1) => {
                let check = case.check;
                let r = seen[0].clone();
                if let Err(e) = std::panic::catch_unwind(move || check.run(&r, only_proxy_identity))
                {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| "check failed".to_owned());
                    problems.push(msg);
                }
            }
            (want, n) => problems.push(format!(
                "upstream saw {n} requests ({want:?} wanted): {:?}",
                seen.iter()
                    .map(|r| r.head.lines().next().unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
            )),
        }
        assert_still_serves(&proxy, &up, case.name);
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}\nlog:\n{}",
        failures.len(),
        failures.join("\n"),
        proxy
            .log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn slowloris_one_byte_per_second_gets_408(rt: Runtime) {
    let dir = TempDir::new();
    let (up, proxy) = start_matrix(rt, &dir);
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    let mut reader = stream.try_clone().unwrap();
    let trickle = thread::spawn(move || {
        for b in b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n" {
            if stream.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_secs(1));
        }
    });
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got);
    let took = started.elapsed();
    let statuses = parse_statuses(&got);
    assert_eq!(statuses, [408], "{:?}", String::from_utf8_lossy(&got));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "408 after {took:?} with --timeout-head 2"
    );
    let _ = trickle.join();
    assert_eq!(up.count(), 0, "a partial head reached the upstream");
    assert_still_serves(&proxy, &up, "slowloris");
}

fn client_that_never_reads_keeps_memory_bounded(rt: Runtime) {
    const BIG: usize = 64 << 20;
    let dir = TempDir::new();
    let up = Upstream::start(dir.join("up.sock"), |req| {
        if req.path() == "/big" {
            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
            r.resize(r.len() + BIG, b'x');
            Reply::Send(r)
        } else {
            Reply::Send(ok_response(b"ok"))
        }
    });
    let proxy = Proxy::start(rt, &up.path, &[]);
    assert_still_serves(&proxy, &up, "warm-up");
    let pid = proxy.pid();
    let rss_before = vm_rss_kib(pid);
    let mut stuck = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(proxy.addr).unwrap();
        c.set_recv_buffer_size_hint();
        c.write_all(&get("/big")).unwrap();
        stuck.push(c);
    }
    up.wait_for(5);
    // Let the proxy fill what it will; it must stop reading the upstream.
    thread::sleep(Duration::from_secs(2));
    let rss_during = vm_rss_kib(pid);
    assert!(
        rss_during < rss_before + 8 * 1024,
        "VmRSS {rss_before} KiB → {rss_during} KiB with 4 clients not reading {BIG}-byte answers"
    );
    assert_still_serves(&proxy, &up, "never-reads");
    // A reader that resumes gets the answer whole.
    let mut c = stuck.pop().unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = [0u8; 64];
    let n = c.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    drop(stuck);
    eprintln!("VmRSS {rss_before} KiB before, {rss_during} KiB with 4 stalled {BIG}-byte answers");
}

/// Locally made answers (here 429s: the rate limit is spent) to pipelined requests that the
/// client never reads must not pile up in the proxy: it stops reading the client instead.
/// (The kernel's socket buffers hold several MiB, so the client sends far more than that.)
fn pipelining_client_that_never_reads_keeps_memory_bounded(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let proxy = Proxy::start(rt, &up.path, &["--rate-limit", "1/60,1/60"]);
    let out = raw_exchange(proxy.addr, get("/latest/meta-data/"), true);
    assert_eq!(out.statuses, [200]);
    let pid = proxy.pid();
    let rss_before = vm_rss_kib(pid);
    let client = TcpStream::connect(proxy.addr).unwrap();
    client.set_recv_buffer_size_hint();
    let writer = client.try_clone().unwrap();
    // Up to 1 000 000 requests (40 MiB); their answers would be over 150 MiB.
    let sender = thread::spawn(move || {
        let one = get("/latest/meta-data/");
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        let mut w = &writer;
        let mut sent = 0;
        for _ in 0..1000 {
            if w.write_all(&batch).is_err() {
                break;
            }
            sent += 1000;
        }
        sent
    });
    thread::sleep(Duration::from_secs(4));
    let rss_during = vm_rss_kib(pid);
    client.shutdown(std::net::Shutdown::Both).unwrap();
    let sent = sender.join().unwrap();
    eprintln!(
        "VmRSS {rss_before} KiB before, {rss_during} KiB with {sent}+ unread pipelined requests"
    );
    assert!(
        rss_during < rss_before + 8 * 1024,
        "VmRSS {rss_before} KiB → {rss_during} KiB with {sent}+ unread pipelined requests"
    );
    let out = raw_exchange(proxy.addr, get("/latest/meta-data/"), true);
    assert_eq!(out.statuses, [429], "still answering");
}

/// Small receive buffers make "not reading" bite early.
trait RecvHint {
    fn set_recv_buffer_size_hint(&self);
}

impl RecvHint for TcpStream {
    fn set_recv_buffer_size_hint(&self) {
        use std::os::fd::AsRawFd;
        let size: libc::c_int = 4096;
        // SAFETY: setsockopt with a valid fd and an int option value.
        unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

fn half_closed_client_still_gets_its_response(rt: Runtime) {
    let dir = TempDir::new();
    let (up, proxy) = start_matrix(rt, &dir);
    for (name, bytes) in [
        ("get", get("/latest/meta-data/")),
        ("post_with_body", post("Content-Length: 5\r\n", "hello")),
        (
            "two_pipelined",
            [get("/latest/a"), get("/latest/b")].concat(),
        ),
    ] {
        let out = raw_exchange(proxy.addr, bytes, true);
        let want: &[u16] = if name == "two_pipelined" {
            &[200, 200]
        } else {
            &[200]
        };
        assert_eq!(
            out.statuses,
            want,
            "{name}: {:?}",
            String::from_utf8_lossy(&out.raw)
        );
        assert!(
            out.closed,
            "{name}: the proxy must close after answering a half-closed client"
        );
    }
    assert_still_serves(&proxy, &up, "half-close");
}

/// Opens a connection from `ip` (any 127/8 address) with a partial head, so it counts.
fn hold(addr: SocketAddr, ip: [u8; 4]) -> TcpStream {
    let sock = socket_from(ip);
    let s = connect_from(sock, addr);
    (&s).write_all(b"GET /latest/").unwrap();
    s
}

fn socket_from(ip: [u8; 4]) -> std::net::SocketAddr {
    SocketAddr::from((ip, 0))
}

/// A TCP connection bound to `local` first (std has no bind-then-connect: use libc).
fn connect_from(local: SocketAddr, to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let (SocketAddr::V4(local), SocketAddr::V4(to)) = (local, to) else {
        panic!("IPv4 only");
    };
    let sin = |a: std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: plain socket calls on a fresh descriptor that the TcpStream then owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let l = sin(local);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, (&l as *const libc::sockaddr_in).cast(), len),
            0
        );
        let t = sin(to);
        assert_eq!(
            libc::connect(fd, (&t as *const libc::sockaddr_in).cast(), len),
            0
        );
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }
}

fn status_on(s: &TcpStream, rest: &[u8]) -> Option<u16> {
    let mut s = s;
    let _ = s.write_all(rest);
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    parse_statuses(&got).first().copied()
}

fn connection_flood_past_the_limits(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let proxy = Proxy::start(
        rt,
        &up.path,
        &["--max-conns", "8", "--max-conns-per-ip", "4"],
    );
    let addr = proxy.addr;
    // Up to the per-IP limit from 127.0.0.1: all held open.
    let mut held: Vec<TcpStream> = (0..4).map(|_| hold(addr, [127, 0, 0, 1])).collect();
    // Past it: 503, from the same address only.
    let past_ip = connect_from(socket_from([127, 0, 0, 1]), addr);
    assert_eq!(
        status_on(&past_ip, b"GET / HTTP/1.1\r\n\r\n"),
        Some(503),
        "5th from one IP"
    );
    // Other addresses fill the rest of --max-conns.
    for ip in [
        [127, 0, 0, 2],
        [127, 0, 0, 3],
        [127, 0, 0, 4],
        [127, 0, 0, 5],
    ] {
        held.push(hold(addr, ip));
    }
    let past_total = connect_from(socket_from([127, 0, 0, 9]), addr);
    assert_eq!(
        status_on(&past_total, b"GET / HTTP/1.1\r\n\r\n"),
        Some(503),
        "9th connection"
    );
    // A flood far past the limit: every one answered 503 or refused by the backlog, none served.
    let flood: Vec<_> = (0..200)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    for s in &flood {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    let answered: Vec<Option<u16>> = flood
        .iter()
        .map(|s| status_on(s, b"GET / HTTP/1.1\r\n\r\n"))
        .collect();
    assert!(
        answered.iter().all(|a| *a == Some(503) || a.is_none()),
        "{answered:?}"
    );
    drop(flood);
    // Below the limits, the held connections are served.
    assert_eq!(
        status_on(
            &held[0],
            b"meta-data/ HTTP/1.1\r\nConnection: close\r\n\r\n"
        ),
        Some(200)
    );
    assert_eq!(
        status_on(
            &held[5],
            b"meta-data/ HTTP/1.1\r\nConnection: close\r\n\r\n"
        ),
        Some(200)
    );
    drop(held);
    drop((past_ip, past_total));
    // Once they are gone, a normal request is served again.
    let served = eventually(|| request(addr, &get("/latest/meta-data/")).status == 200);
    assert!(served, "not served after the flood: {}", proxy.log());
    assert_still_serves(&proxy, &up, "flood");
}

const SECRET: &str = "s3cr3t";
const UUID: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
const PROJECT: &str = "8a5ce0e4f2b84d8b9b1e2c3d4f5a6b7c";

fn signed(path: &str) -> Vec<u8> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(UUID.as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "GET {path} HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\nX-Instance-ID: {UUID}\r\n\
         X-Tenant-ID: {PROJECT}\r\nX-Instance-ID-Signature: {sig}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

fn path_traversal_at_the_server_finds_nothing(rt: Runtime) {
    let dir = TempDir::new();
    let instances = dir.join("instances");
    fs::create_dir(&instances).unwrap();
    let marker = "TOP-SECRET-MARKER";
    fs::write(
        instances.join(format!("{UUID}.toml")),
        format!("uuid = \"{UUID}\"\nproject_id = \"{PROJECT}\"\nuser_data = \"ud\"\n"),
    )
    .unwrap();
    fs::write(dir.join("secret"), format!("{SECRET}\n")).unwrap();
    fs::write(dir.join("private.txt"), marker).unwrap();
    fs::write(instances.join("notes.txt"), marker).unwrap();
    let server = Proxy::start_with(rt, |port| {
        vec![
            "server".to_owned(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--instances={}", instances.display()),
            format!("--shared-secret-file={}", dir.join("secret").display()),
        ]
    });
    let ok = request(server.addr, &signed("/openstack/latest/user_data"));
    assert_eq!((ok.status, ok.body_text().as_str()), (200, "ud"));
    for path in [
        "/../secret",
        "/../../../../etc/passwd",
        "/openstack/latest/../../../private.txt",
        "/openstack/latest/../../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/openstack/%2e%2e/%2e%2e/secret",
        "/openstack/latest/%2E%2E%2F%2E%2E%2Fsecret",
        "/openstack/latest/..%2f..%2fprivate.txt",
        "/openstack/content/../../notes.txt",
        "/latest/meta-data/../../../secret",
        "/openstack/latest/meta_data.json/../../../../instances/notes.txt",
        "//etc/passwd",
        "/openstack/latest/user_data/..%00/secret",
    ] {
        let resp = request(server.addr, &signed(path));
        let body = resp.body_text();
        assert!(
            !body.contains(marker) && !body.contains(SECRET) && !body.contains("root:"),
            "{path} leaked: {body}"
        );
        // Refused (400: an escaped `/` or NUL has no single meaning) or not in the tree (404).
        let want = if path.contains("%2F") || path.contains("%2f") || path.contains("%00") {
            400
        } else {
            404
        };
        assert_eq!(resp.status, want, "{path}: {body}");
    }
    let ok = request(server.addr, &signed("/openstack/latest/user_data"));
    assert_eq!(ok.status, 200);
}
