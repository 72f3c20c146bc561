//! End-to-end tests of `mdproxy agent` with the static backend: the real binary between a raw
//! client (on its Unix socket, or through a real `mdproxy ns-proxy`) and a recording fake
//! metadata server on loopback TCP. Statuses follow DESIGN.md's header contract and error table.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::*;

runtime_tests! {
    max_conns_flag_limits_connections,
    chain_through_ns_proxy_signs_the_instance,
    direct_request_replaces_forged_identity,
    metadata_server_gets_only_the_allowlist,
    chunked_post_reaches_the_server_with_our_length,
    empty_secret_from_dev_null,
    unknown_ip_gets_404_naming_the_router,
    only_link_local_clients_are_matched_by_mac,
    both_or_neither_scope_header_gets_400,
    metadata_server_down_gives_503,
    forbidden_passes_through_and_warns,
    sighup_reloads_the_map_in_every_worker,
    sighup_with_a_broken_map_keeps_the_old_one,
    stale_socket_file_is_replaced,
    live_agent_socket_is_not_stolen,
    path_that_is_not_a_socket_is_left_alone,
    socket_mode_sets_permissions,
    socket_has_its_mode_from_the_start,
    sigterm_drains_every_worker_and_removes_the_socket,
    bad_startup_configuration_exits_2,
    help_and_legacy_program_name,
}

const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";
const INSTANCE_A: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e5f";
const INSTANCE_B: &str = "7b1f2b63-4d2c-4b9f-8e80-1b2c3d4e5f60";
/// Written with a trailing newline, which the agent must not make part of the key.
const SECRET: &str = "s3cr3t";

/// A static map: [`ROUTER`] has [`NETWORK`], where each `(ip, device_id)` is a port.
fn map(ports: &[(&str, &str)]) -> String {
    let mut text = format!("[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NETWORK}\"]\n");
    for (ip, device) in ports {
        text += &format!(
            "\n[[port]]\nnetwork = \"{NETWORK}\"\nip = \"{ip}\"\ndevice_id = \"{device}\"\n\
             project_id = \"{PROJECT}\"\n"
        );
    }
    text
}

/// A metadata server that answers 200 with the X-Instance-ID it was sent, so the client sees
/// which instance the agent resolved.
fn echo_instance() -> Upstream {
    Upstream::start_tcp(|req| {
        let id = req.header_values("x-instance-id").join(",");
        Reply::Send(ok_response(id.as_bytes()))
    })
}

/// The files of one agent: its socket, secret and map, in a directory of their own.
struct Files {
    _dir: TempDir,
    socket: PathBuf,
    map: PathBuf,
    secret: PathBuf,
}

impl Files {
    fn new(map_text: &str) -> Files {
        let dir = TempDir::new();
        let (socket, map, secret) = (
            dir.join("agent.sock"),
            dir.join("map.toml"),
            dir.join("secret"),
        );
        fs::write(&map, map_text).unwrap();
        fs::write(&secret, format!("{SECRET}\n")).unwrap();
        Files {
            _dir: dir,
            socket,
            map,
            secret,
        }
    }

    /// The flags that point an agent at these files and at `metadata_url`.
    fn args(&self, metadata_url: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            format!("--shared-secret-file={}", self.secret.display()),
            format!("--static-map={}", self.map.display()),
            format!("--metadata-url={metadata_url}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn start(&self, rt: Runtime, metadata_url: &str, extra: &[&str]) -> Agent {
        Agent::start(rt, &self.socket, &self.args(metadata_url, extra))
    }
}

/// A request as an ns-proxy sends it: from `ip`, with `scope` header lines.
fn proxied(ip: &str, scope: &str) -> Vec<u8> {
    format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-Forwarded-For: {ip}\r\n{scope}\r\n"
    )
    .into_bytes()
}

fn router_scope() -> String {
    format!("X-Neutron-Router-ID: {ROUTER}\r\n")
}

/// `hmac.new(secret, msg, sha256).hexdigest()`, computed by Python itself.
fn python_hmac(secret: &str, msg: &str) -> String {
    let code = "import hashlib, hmac, sys; \
                print(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest())";
    let out = Command::new("python3")
        .args(["-c", code, secret, msg])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Asserts the metadata server received exactly one of each identity header, with these values.
fn assert_identity(seen: &Recorded, ip: &str, instance: &str, secret: &str) {
    let signature = python_hmac(secret, instance);
    for (name, want) in [
        ("X-Instance-ID", instance),
        ("X-Tenant-ID", PROJECT),
        ("X-Forwarded-For", ip),
        ("X-Instance-ID-Signature", &signature),
    ] {
        assert_eq!(seen.header_values(name), [want], "{name}:\n{}", seen.head);
    }
}

fn chain_through_ns_proxy_signs_the_instance(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("127.0.0.1", INSTANCE_A), ("10.0.0.6", INSTANCE_B)]));
    let agent = files.start(rt, &server.url(), &[]);
    let proxy = Proxy::start(rt, &agent.socket, &[]);
    let forged = "GET /openstack/latest/meta_data.json?x=1 HTTP/1.1\r\nHost: 169.254.169.254\r\n\
                  X-Instance-ID: i-forged\r\nX-Tenant-ID: evil\r\n\
                  X-Instance-ID-Signature: deadbeef\r\nX-Forwarded-For: 10.0.0.6\r\n\r\n";
    let resp = request(proxy.addr, forged.as_bytes());
    assert_eq!(
        (resp.status, resp.body_text()),
        (200, INSTANCE_A.to_owned()),
        "{resp:?}"
    );
    let seen = &server.wait_for(1)[0];
    assert_eq!(seen.path(), "/openstack/latest/meta_data.json?x=1");
    assert_identity(seen, "127.0.0.1", INSTANCE_A, SECRET);
    assert_eq!(server.count(), 1);
}

fn direct_request_replaces_forged_identity(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let agent = files.start(rt, &server.url(), &[]);
    let mut req = proxied("10.0.0.5", &format!("X-Neutron-Network-ID: {NETWORK}\r\n"));
    let forged = b"x-instance-id: i-forged\r\nX-TENANT-ID: evil\r\nX-Instance-ID-Signature: 00\r\n";
    req.splice(req.len() - 2..req.len() - 2, forged.iter().copied());
    let resp = request_unix(&agent.socket, &req);
    assert_eq!(
        (resp.status, resp.body_text()),
        (200, INSTANCE_A.to_owned()),
        "{resp:?}"
    );
    assert_identity(&server.wait_for(1)[0], "10.0.0.5", INSTANCE_A, SECRET);
}

/// The agent builds the metadata server's request from an allowlist of the client's fields
/// (as Neutron's agent sends only its own): nothing else the instance or a proxy wrote, in any
/// spelling, reaches Nova. With `--imdsv2=off` the token fields are on the list (for an
/// `mdproxy server` with tokens behind); with tokens at the agent they never pass
/// (tests/tokens.rs).
fn metadata_server_gets_only_the_allowlist(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let agent = files.start(rt, &server.url(), &["--imdsv2=off"]);
    let req = format!(
        "POST /openstack/latest/password?x=1 HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: {ROUTER}\r\n\
         User-Agent: Cloud-Init/23.4\r\nAccept: application/json\r\nContent-Type: text/plain\r\n\
         X-aws-ec2-metadata-token: tok\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\
         X_Forwarded_For: 10.0.0.7\r\nX_Instance_ID: i-forged\r\nX_Metadata_Provider: p\r\n\
         X-Metadata-Provider: p\r\nX-Metadata-Provider-Signature: s\r\n\
         Forwarded: for=10.0.0.7\r\nX-Forwarded-Host: h\r\nX-Forwarded-Proto: https\r\n\
         X-Real-IP: 10.0.0.7\r\nCookie: c=1\r\nAuthorization: Basic eA==\r\nX-Custom: c\r\n\
         Accept-Encoding: gzip\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\npw"
    );
    let resp = request_unix(&agent.socket, req.as_bytes());
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = &server.wait_for(1)[0];
    assert_identity(seen, "10.0.0.5", INSTANCE_A, SECRET);
    assert_eq!(seen.path(), "/openstack/latest/password?x=1");
    assert_eq!(seen.body, b"pw");
    let mut names: Vec<String> = seen
        .head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "accept",
            "content-length",
            "content-type",
            "host",
            "user-agent",
            "x-aws-ec2-metadata-token",
            "x-aws-ec2-metadata-token-ttl-seconds",
            "x-forwarded-for",
            "x-instance-id",
            "x-instance-id-signature",
            "x-tenant-id",
        ],
        "{}",
        seen.head
    );
}

/// A chunked password POST (its extensions and trailers included) reaches the metadata server
/// as its payload under a Content-Length the agent computed.
fn chunked_post_reaches_the_server_with_our_length(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let agent = files.start(rt, &server.url(), &[]);
    let req = format!(
        "POST /openstack/latest/password HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.5\r\n\
         X-Neutron-Router-ID: {ROUTER}\r\nTransfer-Encoding: chunked\r\n\r\n\
         3;e=1\r\nabc\r\n0\r\nX-Instance-ID: i-forged\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n"
    );
    let resp = request_unix(&agent.socket, req.as_bytes());
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = &server.wait_for(1)[0];
    assert_eq!(seen.body, b"abc");
    assert_eq!(seen.header_values("content-length"), ["3"], "{}", seen.head);
    assert!(
        seen.header_values("transfer-encoding").is_empty(),
        "{}",
        seen.head
    );
    assert_identity(seen, "10.0.0.5", INSTANCE_A, SECRET);
    assert!(
        !seen.head.contains("i-forged") && !seen.head.contains("10.0.0.7"),
        "{}",
        seen.head
    );
}

fn empty_secret_from_dev_null(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    // A later flag wins, as for every flag.
    let agent = files.start(rt, &server.url(), &["--shared-secret-file=/dev/null"]);
    let resp = request_unix(&agent.socket, &proxied("10.0.0.5", &router_scope()));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_identity(&server.wait_for(1)[0], "10.0.0.5", INSTANCE_A, "");
}

fn unknown_ip_gets_404_naming_the_router(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let agent = files.start(rt, &server.url(), &[]);
    let resp = request_unix(&agent.socket, &proxied("10.9.9.9", &router_scope()));
    assert_eq!(resp.status, 404, "{resp:?}");
    let want = format!("Instance was not found on router {ROUTER}.");
    assert!(resp.body_text().contains(&want), "{resp:?}");
    assert_eq!(server.count(), 0);
}

/// Security issue 14, item 4: a global IPv6 address listed for port A, which embeds port B's
/// MAC, is port A's; only a link-local client is matched by the MAC inside its address.
fn only_link_local_clients_are_matched_by_mac(rt: Runtime) {
    let server = echo_instance();
    let text = format!(
        "{}\n[[port]]\nnetwork = \"{NETWORK}\"\nip = \"10.0.0.6\"\nmac = \"fa:16:3e:00:00:05\"\n\
         device_id = \"{INSTANCE_B}\"\nproject_id = \"{PROJECT}\"\n",
        map(&[("2001:db8::f816:3eff:fe00:5", INSTANCE_A)])
    );
    let files = Files::new(&text);
    let agent = files.start(rt, &server.url(), &[]);
    let ask = |ip: &str| {
        let resp = request_unix(&agent.socket, &proxied(ip, &router_scope()));
        (resp.status, resp.body_text())
    };
    assert_eq!(
        ask("2001:db8::f816:3eff:fe00:5"),
        (200, INSTANCE_A.to_owned())
    );
    assert_eq!(ask("fe80::f816:3eff:fe00:5"), (200, INSTANCE_B.to_owned()));
    // B's MAC inside a global address no port has: not B.
    assert_eq!(ask("2001:db8:1::f816:3eff:fe00:5").0, 404);
    assert_eq!(server.count(), 2);
}

fn both_or_neither_scope_header_gets_400(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let agent = files.start(rt, &server.url(), &[]);
    let both = format!("{}X-Neutron-Network-ID: {NETWORK}\r\n", router_scope());
    for scope in [both.as_str(), ""] {
        let resp = request_unix(&agent.socket, &proxied("10.0.0.5", scope));
        assert_eq!(resp.status, 400, "{scope:?}: {resp:?}");
    }
    assert_eq!(server.count(), 0);
}

fn metadata_server_down_gives_503(rt: Runtime) {
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let mut agent = files.start(rt, &nobody, &[]);
    for _ in 0..2 {
        let resp = request_unix(&agent.socket, &proxied("10.0.0.5", &router_scope()));
        assert_eq!(resp.status, 503, "{resp:?}");
        assert!(
            resp.body_text()
                .contains("The remote metadata server is temporarily unavailable."),
            "{resp:?}"
        );
    }
    assert!(agent.is_running(), "{}", agent.log());
}

fn forbidden_passes_through_and_warns(rt: Runtime) {
    let body = b"Invalid proxy request signature.\n";
    let server = Upstream::start_tcp(move |_| {
        let mut r = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        Reply::Send(r)
    });
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let agent = files.start(rt, &server.url(), &[]);
    let resp = request_unix(&agent.socket, &proxied("10.0.0.5", &router_scope()));
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (403, &body[..]),
        "{resp:?}"
    );
    let log = agent.wait_for_log("shared secrets");
    let line = log.lines().find(|l| l.contains("shared secrets")).unwrap();
    assert!(line.contains("WARN"), "{line}");
}

/// Waits until a fresh request from 10.0.0.5 resolves to `instance` (a SIGHUP is handled
/// asynchronously), then checks that `n` more fresh connections agree.
fn assert_serves(agent: &Agent, instance: &str, n: usize) {
    let served = || request_unix(&agent.socket, &proxied("10.0.0.5", &router_scope())).body_text();
    assert!(
        eventually(|| served() == instance),
        "never served {instance}: {}",
        agent.log()
    );
    for _ in 0..n {
        assert_eq!(served(), instance, "{}", agent.log());
    }
}

fn sighup_reloads_the_map_in_every_worker(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let agent = files.start(rt, &server.url(), &["--workers=2"]);
    assert_serves(&agent, INSTANCE_A, 0); // the loop runs: signals are caught from here on
    fs::write(&files.map, map(&[("10.0.0.5", INSTANCE_B)])).unwrap();
    agent.signal(libc::SIGHUP);
    // Each worker's endpoint logs its own reload.
    agent.wait_for_log_count("static map reloaded", 2);
    assert_serves(&agent, INSTANCE_B, 8);
}

fn sighup_with_a_broken_map_keeps_the_old_one(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let mut agent = files.start(rt, &server.url(), &[]);
    assert_serves(&agent, INSTANCE_A, 0);
    let broken = format!("{}bogus = 1\n", map(&[("10.0.0.5", INSTANCE_B)]));
    let bad_line = broken.lines().count();
    fs::write(&files.map, &broken).unwrap();
    agent.signal(libc::SIGHUP);
    let at = format!("{}:{bad_line}:", files.map.display());
    let log = agent.wait_for_log(&at);
    let line = log.lines().find(|l| l.contains(&at)).unwrap();
    assert!(line.contains("ERROR") && line.contains("bogus"), "{line}");
    assert_serves(&agent, INSTANCE_A, 3);
    assert!(agent.is_running());
}

fn stale_socket_file_is_replaced(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    drop(UnixListener::bind(&files.socket).unwrap()); // what a killed agent leaves behind
    assert!(UnixStream::connect(&files.socket).is_err());
    let agent = files.start(rt, &server.url(), &[]);
    assert_serves(&agent, INSTANCE_A, 0);
    agent.wait_for_log("removed stale socket");
}

fn live_agent_socket_is_not_stolen(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let mut first = files.start(rt, &server.url(), &[]);
    let mut args = vec!["agent".to_owned(), format!("--runtime={}", rt.name())];
    args.push(format!("--listen-socket={}", files.socket.display()));
    args.extend(files.args(&server.url(), &[]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, stderr) = run_binary(&args);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let want = format!("another agent is listening on {}", files.socket.display());
    assert!(stderr.contains(&want), "{stderr}");
    assert!(first.is_running());
    assert_serves(&first, INSTANCE_A, 1);
}

fn path_that_is_not_a_socket_is_left_alone(rt: Runtime) {
    let files = Files::new(&map(&[]));
    fs::write(&files.socket, "precious").unwrap();
    let mut args = vec!["agent".to_owned(), format!("--runtime={}", rt.name())];
    args.push(format!("--listen-socket={}", files.socket.display()));
    args.extend(files.args("http://127.0.0.1:8775", &[]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, stderr) = run_binary(&args);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(fs::read_to_string(&files.socket).unwrap(), "precious");
}

fn socket_mode_sets_permissions(rt: Runtime) {
    for (mode, bits) in [("all", 0o666), ("user", 0o644)] {
        let files = Files::new(&map(&[]));
        let agent = files.start(
            rt,
            "http://127.0.0.1:8775",
            &[&format!("--socket-mode={mode}")],
        );
        let got = fs::metadata(&agent.socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, bits, "--socket-mode {mode}: {got:o}");
    }
}

/// The socket is bound with its `--socket-mode` (under a matching umask), not chmod-ed after:
/// watched from the moment it appears, under a umask of 000, it never has another mode.
fn socket_has_its_mode_from_the_start(rt: Runtime) {
    use std::os::unix::process::CommandExt;
    let files = Files::new(&map(&[]));
    let mut args = vec!["agent".to_owned(), format!("--runtime={}", rt.name())];
    args.push(format!("--listen-socket={}", files.socket.display()));
    args.extend(files.args("http://127.0.0.1:8775", &["--socket-mode=user"]));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdproxy"));
    cmd.args(&args);
    // SAFETY: umask(2) is async-signal-safe and cannot fail.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut modes = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if let Ok(meta) = fs::symlink_metadata(&files.socket) {
            modes.push(meta.permissions().mode() & 0o777);
            if modes.len() > 1000 || UnixStream::connect(&files.socket).is_ok() {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!modes.is_empty(), "the socket never appeared");
    assert!(modes.iter().all(|&m| m == 0o644), "modes seen: {modes:?}");
}

fn sigterm_drains_every_worker_and_removes_the_socket(rt: Runtime) {
    let gate = Arc::new(Gate::default());
    let held = gate.clone();
    let server = Upstream::start_tcp(move |_| {
        Reply::AfterGate(held.clone(), ok_response(b"worth the wait"))
    });
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let mut agent = files.start(rt, &server.url(), &["--workers=2"]);
    let mut client = Client::connect_unix(&agent.socket);
    client.send(&proxied("10.0.0.5", &router_scope())).unwrap();
    server.wait_for(1);
    agent.signal(libc::SIGTERM);
    // Every worker closes its handle on the listener; then connecting is refused.
    let refused = || UnixStream::connect(&agent.socket).is_err();
    assert!(eventually(refused), "still accepting after SIGTERM");
    assert!(agent.is_running(), "exited before its request finished");
    gate.open();
    let resp = client.response();
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, &b"worth the wait"[..])
    );
    assert_eq!(agent.wait_exit().code(), Some(0), "{}", agent.log());
    assert!(!agent.socket.exists(), "socket file left behind");
}

/// Runs `mdproxy agent` with the files' flags plus `extra`; it must exit 2 saying `want`.
fn assert_config_error(rt: Runtime, files: &Files, extra: &[&str], want: &str) {
    let mut args = vec!["agent".to_owned(), format!("--runtime={}", rt.name())];
    args.push(format!("--listen-socket={}", files.socket.display()));
    args.extend(files.args("http://127.0.0.1:8775", extra));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, stderr) = run_binary(&args);
    assert_eq!(status.code(), Some(2), "{extra:?}: {stderr}");
    assert!(
        stderr.contains(want),
        "{extra:?}: wanted {want:?} in {stderr}"
    );
    assert!(!files.socket.exists(), "{extra:?}: bound before failing");
}

fn bad_startup_configuration_exits_2(rt: Runtime) {
    let files = Files::new("[[router]]\nid = \"not-a-uuid\"\n");
    let at = format!("{}:2: ", files.map.display());
    assert_config_error(rt, &files, &[], &at);
    let files = Files::new(&map(&[]));
    // https with an unreadable CA file (a build without TLS refuses https itself).
    let want = match cfg!(feature = "tls") {
        true => "cannot read /nonexistent/ca.pem",
        false => "this build has no TLS",
    };
    assert_config_error(
        rt,
        &files,
        &[
            "--metadata-url=https://127.0.0.1:8775",
            "--metadata-ca-file=/nonexistent/ca.pem",
        ],
        want,
    );
    assert_config_error(
        rt,
        &files,
        &["--shared-secret-file=/nonexistent/secret"],
        "/nonexistent/secret",
    );
    let (status, _, stderr) = run_binary(&["agent", "--static-map", "/m.toml"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--shared-secret-file"), "{stderr}");
}

fn help_and_legacy_program_name(rt: Runtime) {
    let flags = [
        "--listen-socket",
        "--backlog",
        "--socket-mode",
        "--workers",
        "--metadata-url",
        "--shared-secret-file",
        "--backend",
        "--static-map",
        "--cache-size",
        "--cache-ttl",
        "--negative-cache-ttl",
        "--timeout-connect",
        "--drain-timeout",
        "--pid-file",
        "--user",
        "--log-file",
        "--debug",
    ];
    assert_help_mentions(&["agent", "--help"], &flags);
    // Installed under Neutron's name, the binary is the agent.
    let dir = TempDir::new();
    let link = dir.join("neutron-metadata-agent");
    symlink(env!("CARGO_BIN_EXE_mdproxy"), &link).unwrap();
    let out = Command::new(&link)
        .args(["--help", &format!("--runtime={}", rt.name())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("mdproxy agent:"));
}

/// `--max-conns`: a proxy connection past the limit is answered 503 and closed; the one inside
/// keeps being served, and a slot freed is taken again.
fn max_conns_flag_limits_connections(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new(&map(&[("10.0.0.5", INSTANCE_A)]));
    let agent = files.start(rt, &server.url(), &["--max-conns=1"]);
    let req = proxied("10.0.0.5", &router_scope());
    // The start-up probe may still hold the slot for a moment: take it once it is free.
    let mut held = None;
    assert!(eventually(|| {
        let mut c = Client::connect_unix(&agent.socket);
        let ok = c.exchange(&req).status == 200;
        held = ok.then_some(c);
        ok
    }));
    let mut first = held.expect("a connection inside the limit");
    let resp = request_unix(&agent.socket, &req);
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(first.exchange(&req).status, 200);
    drop(first);
    assert!(eventually(
        || request_unix(&agent.socket, &req).status == 200
    ));
}
