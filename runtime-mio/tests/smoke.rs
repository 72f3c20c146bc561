//! Smoke test of the driver in-process (the protocol is tested in the core, the binary in
//! `bins/tests`): a TCP and a Unix listener, one relayed request, then SIGTERM ends `run`.
//! The only test in this binary, because it signals its own process.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use mdproxy_core::config::{ConnLimits, EndpointConfig, NsProxyConfig, Role, Timeouts};
use mdproxy_core::scope::{Scope, Uuid};
use mdproxy_core::socket::Target;
use mdproxy_mio::{run, Listener, RunOptions};

const WAIT: Duration = Duration::from_secs(20);

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

#[test]
fn relays_over_tcp_and_unix_then_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("mdp-mio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (up_path, client_path) = (dir.join("up.sock"), dir.join("in.sock"));

    let upstream = UnixListener::bind(&up_path).unwrap();
    thread::spawn(move || {
        for conn in upstream.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut w = conn;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                        .unwrap();
                }
                line.clear();
            }
        }
    });

    let tcp = Listener::bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = tcp.local_addr().unwrap();
    let unix = Listener::bind_unix(&client_path).unwrap();
    assert_eq!(unix.to_string(), format!("unix:{}", client_path.display()));
    let cfg = EndpointConfig {
        role: Role::NsProxy(NsProxyConfig {
            scope: Scope::Router(Uuid::parse(b"0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01").unwrap()),
            upstream: Target::Unix(PathBuf::from(&up_path)),
            rate_limit: None,
        }),
        limits: Default::default(),
        conns: ConnLimits {
            max_conns: 16,
            max_conns_per_ip: 16,
        },
        timeouts: Timeouts::default(),
        tls: Default::default(),
        metrics: None,
    };
    let driver = thread::spawn(move || run(cfg, vec![tcp, unix], RunOptions::default()));

    let mut tcp_client = TcpStream::connect(addr).unwrap();
    tcp_client.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(tcp_client.try_clone().unwrap());
    for _ in 0..2 {
        tcp_client
            .write_all(b"GET /latest HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (head, body) = read_response(&mut reader);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"hello");
    }

    // A Unix-socket client has no IP for X-Forwarded-For; whatever the role answers, the
    // driver must carry it back.
    let mut unix_client = UnixStream::connect(&client_path).unwrap();
    unix_client.set_read_timeout(Some(WAIT)).unwrap();
    unix_client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut BufReader::new(unix_client));
    assert!(head.starts_with("HTTP/1.1 "), "{head}");

    drop((tcp_client, reader));
    // SAFETY: signals our own process; `run` has installed its handler (it served requests).
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + WAIT;
    while !driver.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "run did not return after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
    driver.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
