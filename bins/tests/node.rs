//! `mdproxy node` end to end, on both runtimes: the real binary, a watched directory whose
//! files name routers on loopback listeners (the node's own namespace: no root needed), a
//! static map where the same client address is another instance behind each router, and a
//! scripted metadata server that records what reaches it.

mod common;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::peer_socket::{peer_end, ttl};
use common::*;

const R1: &str = ROUTER;
const R2: &str = "11111111-2222-4333-8444-555555555555";
const N2: &str = "9c2b1a4e-0000-4000-8000-000000000002";
const I1: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e5f";
const I2: &str = "7b1f2b63-4d2c-4b9f-8e80-1b2c3d4e5f60";

/// 127.0.0.1 behind R1 is I1, behind R2 it is I2.
fn map() -> String {
    format!(
        "[[router]]\nid = \"{R1}\"\nnetworks = [\"{NETWORK}\"]\n\n[[router]]\nid = \"{R2}\"\n\
         networks = [\"{N2}\"]\n\n[[port]]\nnetwork = \"{NETWORK}\"\nip = \"127.0.0.1\"\n\
         device_id = \"{I1}\"\nproject_id = \"p1\"\n\n[[port]]\nnetwork = \"{N2}\"\n\
         ip = \"127.0.0.1\"\ndevice_id = \"{I2}\"\nproject_id = \"p2\"\n"
    )
}

/// A metadata server answering 200 with the X-Instance-ID it was sent.
fn echo_instance() -> Upstream {
    Upstream::start_tcp(|req| {
        let id = req.header_values("x-instance-id").join(",");
        Reply::Send(ok_response(id.as_bytes()))
    })
}

/// A node's files: the secret, the map and the watched directory.
struct Files {
    dir: TempDir,
    watch: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = TempDir::new();
        fs::write(dir.join("map.toml"), map()).unwrap();
        fs::write(dir.join("secret"), "s3cr3t\n").unwrap();
        let watch = dir.join("units");
        fs::create_dir(&watch).unwrap();
        Files { dir, watch }
    }

    fn agent_args(&self, metadata_url: &str) -> Vec<String> {
        vec![
            format!("--shared-secret-file={}", self.dir.join("secret").display()),
            format!("--static-map={}", self.dir.join("map.toml").display()),
            format!("--metadata-url={metadata_url}"),
        ]
    }

    /// Starts `mdproxy node` on the watched directory (read every 0.1 s).
    fn node(&self, rt: Runtime, metadata_url: &str) -> Running {
        self.node_with(rt, metadata_url, &[])
    }

    /// [`Files::node`] with more flags.
    fn node_with(&self, rt: Runtime, metadata_url: &str, extra: &[&str]) -> Running {
        let mut args = vec![
            "node".to_owned(),
            format!("--watch-dir={}", self.watch.display()),
            "--rescan-interval=0.1".to_owned(),
        ];
        args.extend(self.agent_args(metadata_url));
        args.extend(extra.iter().map(|a| a.to_string()));
        let program = Path::new(env!("CARGO_BIN_EXE_mdproxy"));
        Running::spawn_program(program, rt, &args, Some("node.log"))
    }

    /// Drops the file `name` (written elsewhere, then renamed, as the help asks) serving
    /// `router` on a free loopback port; returns the address.
    fn serve(&self, name: &str, router: &str) -> SocketAddr {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let text = format!("router_id = \"{router}\"\nlisten = [\"{addr}\"]\n");
        self.write(name, &text);
        addr
    }

    fn write(&self, name: &str, text: &str) {
        let tmp = self.watch.join(format!(".{name}.tmp"));
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, self.watch.join(name)).unwrap();
    }
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Waits until the node serves `addr`.
fn await_serving(node: &mut Running, addr: SocketAddr) {
    let up = eventually(|| !node.is_running() || accepts(addr));
    assert!(
        up && node.is_running(),
        "{addr} never served:\n{}",
        node.log()
    );
}

/// What an instance may claim about itself: all of it must be ignored.
const SPOOF: &str = "X-Forwarded-For: 10.9.9.9\r\nX-Neutron-Router-ID: 11111111-2222-4333-8444-555555555555\r\n\
    X-Instance-ID: evil\r\nX_Instance_ID: evil\r\nX-Tenant-ID: evil\r\nX-OVN-Network-ID: 11111111-2222-4333-8444-555555555555\r\n\
    Forwarded: for=10.9.9.9\r\nX-Real-IP: 10.9.9.9\r\n";

fn instance_id_request(extra: &str) -> Vec<u8> {
    format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         User-Agent: cloud-init\r\nAccept: */*\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn two_routers_each_client_gets_its_own_instance(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new();
    let (a, b) = (files.serve("r1.toml", R1), files.serve("r2.toml", R2));
    let mut node = files.node(rt, &server.url());
    await_serving(&mut node, a);
    await_serving(&mut node, b);
    for (addr, instance, project) in [(a, I1, "p1"), (b, I2, "p2")] {
        let r = request(addr, &instance_id_request(SPOOF));
        assert_eq!(
            (r.status, r.body_text()),
            (200, instance.to_owned()),
            "{addr}"
        );
        let seen = server.wait_for(1);
        let seen = seen.last().unwrap();
        assert_eq!(seen.header_values("x-tenant-id"), [project]);
        assert_eq!(seen.header_values("x-forwarded-for"), ["127.0.0.1"]);
        for name in [
            "x-real-ip",
            "forwarded",
            "x-neutron-router-id",
            "x-ovn-network-id",
        ] {
            assert!(seen.header_values(name).is_empty(), "{name}: {}", seen.head);
        }
    }
    let log = node.wait_for_log("r2.toml: serving");
    assert!(log.contains("one event loop"), "{log}");
}

fn files_start_and_stop_listeners_while_a_keep_alive_connection_goes_on(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new();
    let (a, b) = (files.serve("r1.toml", R1), files.serve("r2.toml", R2));
    let mut node = files.node(rt, &server.url());
    await_serving(&mut node, a);
    await_serving(&mut node, b);
    let mut kept = Client::connect(b);
    let mut on_a = Client::connect(a);
    assert_eq!(
        kept.exchange(&get("/latest/meta-data/instance-id"))
            .body_text(),
        I2
    );
    assert_eq!(
        on_a.exchange(&get("/latest/meta-data/instance-id"))
            .body_text(),
        I1
    );

    fs::remove_file(files.watch.join("r1.toml")).unwrap();
    let stopped = eventually(|| !accepts(a));
    assert!(
        stopped,
        "r1 still served after its file went:\n{}",
        node.log()
    );
    assert!(
        on_a.closed_by_peer(),
        "r1's idle keep-alive connection is closed"
    );
    assert_eq!(
        kept.exchange(&get("/latest/meta-data/instance-id"))
            .body_text(),
        I2
    );

    // A new file, for R1 again, on another port; the kept connection still goes on.
    let c = files.serve("r1-again.toml", R1);
    await_serving(&mut node, c);
    assert_eq!(
        request(c, &get("/latest/meta-data/instance-id")).body_text(),
        I1
    );
    assert_eq!(
        kept.exchange(&get("/latest/meta-data/instance-id"))
            .body_text(),
        I2
    );
    node.wait_for_log("r1.toml: removed");
}

fn a_bad_file_is_logged_with_its_path_and_ignored(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new();
    files.write("bad.toml", "router_id = \"not-a-uuid\"\n");
    files.write("typo.toml", &format!("routerid = \"{R1}\"\n"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    files.write(
        "taken.toml",
        &format!("router_id = \"{R1}\"\nlisten = [\"{taken_addr}\"]\n"),
    );
    files.write("notes.txt", "not a unit");
    let good = files.serve("good.toml", R2);
    let mut node = files.node(rt, &server.url());
    await_serving(&mut node, good);
    assert_eq!(
        request(good, &get("/latest/meta-data/instance-id")).body_text(),
        I2
    );
    let log = node.wait_for_log("taken.toml");
    let bad = files.watch.join("bad.toml");
    assert!(
        log.contains(&format!("{}: `router_id`", bad.display())),
        "{log}"
    );
    assert!(log.contains("typo.toml: unknown key `routerid`"), "{log}");
    assert!(
        log.contains(&format!("cannot listen on {taken_addr}")),
        "{log}"
    );
    assert!(!log.contains("notes.txt"), "{log}");
    // A fixed file is served.
    let fixed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    files.write(
        "bad.toml",
        &format!("router_id = \"{R1}\"\nlisten = [\"{fixed}\"]\n"),
    );
    await_serving(&mut node, fixed);
    assert_eq!(
        request(fixed, &get("/latest/meta-data/instance-id")).body_text(),
        I1
    );
    assert!(node.is_running());
}

/// The request the metadata server gets from the node equals, byte for byte, the one it gets
/// from `ns-proxy` + `agent`.
fn the_upstream_request_is_the_agents(rt: Runtime) {
    let server = Upstream::start_tcp(|_| Reply::Send(ok_response(b"ok")));
    let files = Files::new();
    let hostile = instance_id_request(&format!(
        "{SPOOF}Cookie: c\r\nX_Custom: 1\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n"
    ));

    let socket = files.dir.join("agent.sock");
    let _agent = Agent::start(rt, &socket, &files.agent_args(&server.url()));
    let proxy = Proxy::start(rt, &socket, &[]);
    assert_eq!(request(proxy.addr, &hostile).status, 200);
    let chain = server.wait_for(1)[0].head.clone();

    let a = files.serve("r1.toml", R1);
    let mut node = files.node(rt, &server.url());
    await_serving(&mut node, a);
    assert_eq!(request(a, &hostile).status, 200);
    let direct = server.wait_for(2)[1].head.clone();
    assert_eq!(direct, chain, "node and ns-proxy + agent differ");
    assert_eq!(header_values(&direct, "x-instance-id"), [I1]);
}

fn sigterm_stops_the_node(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new();
    let a = files.serve("r1.toml", R1);
    let mut node = files.node(rt, &server.url());
    await_serving(&mut node, a);
    assert_eq!(
        request(a, &get("/latest/meta-data/instance-id")).status,
        200
    );
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit().success(), "{}", node.log());
}

/// `mdproxy node-register` in the foreground, holding `router`'s registration in `dir`.
fn register(dir: &Path, router: &str, addr: SocketAddr, pid_file: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_mdproxy"))
        .args(["node-register", "--router-id", router])
        .arg(format!("--dir={}", dir.display()))
        .arg(format!("--listen={addr}"))
        .arg(format!("--pid-file={}", pid_file.display()))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// What Neutron's process monitor checks: the pid file names a live process whose command
/// line names the UUID; SIGTERM ends the registration, and so does SIGKILL (the node notices
/// the process is gone).
fn node_register_holds_a_registration_until_it_ends(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new();
    let mut node = files.node(rt, &server.url());
    node.wait_for_log("one event loop");
    let (a, pid_file) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        files.dir.join("r1.pid"),
    );
    let mut holder = register(&files.watch, R1, a, &pid_file);
    await_serving(&mut node, a);
    assert_eq!(
        request(a, &get("/latest/meta-data/instance-id")).body_text(),
        I1
    );
    let unit = files.watch.join(format!("{R1}.toml"));
    let text = fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!("owner_pid = {}", holder.id())),
        "{text}"
    );
    let pid = fs::read_to_string(&pid_file).unwrap();
    assert_eq!(pid.trim(), holder.id().to_string());
    let cmdline = fs::read(format!("/proc/{}/cmdline", holder.id())).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains(R1));

    // SAFETY: signalling our own child.
    assert_eq!(
        unsafe { libc::kill(holder.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    assert!(wait_child(&mut holder).is_some_and(|s| s.success()));
    assert!(!unit.exists() && !pid_file.exists(), "files left behind");
    assert!(eventually(|| !accepts(a)), "still served:\n{}", node.log());

    // Killed: it cannot remove its file; the node sees the process is gone.
    let b = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut killed = register(&files.watch, R2, b, &files.dir.join("r2.pid"));
    await_serving(&mut node, b);
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(
        eventually(|| !accepts(b)),
        "a dead registration still served:\n{}",
        node.log()
    );
    node.wait_for_log("is gone; removing the stale registration");
    assert!(!files.watch.join(format!("{R2}.toml")).exists());
}

/// `GET /explain` at the node's admin listener, as JSON.
fn explain(admin: SocketAddr, query: &str) -> serde_json::Value {
    let r = request(admin, &get(&format!("/explain?{query}")));
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_str(&r.body_text()).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

/// `/explain` on the admin listener tells each router's own rules: the file's IMDSv2 mode
/// and rate limit (would it refuse this client now), a scope the node has no listener for;
/// and an instance-facing listener never answers it.
fn explain_shows_each_listeners_own_rules(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new();
    let strict = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let text = format!(
        "router_id = \"{R1}\"\nlisten = [\"{strict}\"]\nimdsv2 = \"required\"\n\
         rate_limit = \"2/60,100/60\"\n"
    );
    files.write("r1.toml", &text);
    let lax = files.serve("r2.toml", R2);
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let flag = format!("--admin-listen={admin}");
    let mut node = files.node_with(rt, &server.url(), &[&flag]);
    await_serving(&mut node, strict);
    await_serving(&mut node, lax);

    let e = explain(admin, &format!("router={R1}&ip=127.0.0.1"));
    assert_eq!(
        (e["lookup"].as_str(), e["instance"].as_str()),
        (Some("found"), Some(I1)),
        "{e}"
    );
    assert_eq!(e["imdsv2"]["mode"], "required", "{e}");
    assert_eq!(e["listener"]["rate_limit"]["would_refuse"], false, "{e}");
    assert_eq!(
        e["answer"],
        format!("forwarded to {}, signed", server.url()),
        "{e}"
    );
    // Two requests use up the base window (refused 401 for want of a token, but counted).
    for _ in 0..2 {
        assert_eq!(request(strict, &instance_id_request("")).status, 401);
    }
    let e = explain(admin, &format!("router={R1}&ip=127.0.0.1"));
    assert_eq!(e["listener"]["rate_limit"]["would_refuse"], true, "{e}");
    assert_eq!(e["answer"], "429: Too many requests.", "{e}");
    // Asking counted nothing: the next request is the third, and refused as explained.
    assert_eq!(request(strict, &instance_id_request("")).status, 429);

    let e = explain(admin, &format!("router={R2}&ip=127.0.0.1"));
    assert_eq!(
        (e["instance"].as_str(), e["imdsv2"]["mode"].as_str()),
        (Some(I2), Some("optional")),
        "{e}"
    );
    assert!(e["listener"]["rate_limit"].is_null(), "{e}");
    let unserved = "22222222-2222-4333-8444-555555555555";
    let e = explain(admin, &format!("network={unserved}&ip=127.0.0.1"));
    assert_eq!(e["lookup"], "not found", "{e}");
    let answer = e["answer"].as_str().unwrap_or_default();
    assert!(answer.starts_with("no listener"), "{e}");

    // An instance asking its own listener for /explain is forwarded like any path.
    let asked = server.count();
    let r = request(lax, &get(&format!("/explain?router={R2}&ip=127.0.0.1")));
    assert_eq!((r.status, r.body_text()), (200, I2.to_owned()), "{r:?}");
    assert_eq!(server.count(), asked + 1);
}

runtime_tests! {
    node_register_holds_a_registration_until_it_ends,
    two_routers_each_client_gets_its_own_instance,
    files_start_and_stop_listeners_while_a_keep_alive_connection_goes_on,
    a_bad_file_is_logged_with_its_path_and_ignored,
    the_upstream_request_is_the_agents,
    sigterm_stops_the_node,
    the_node_answers_token_requests_and_limits_their_hops,
    the_nodes_metrics_carry_its_own_role,
    a_files_imdsv2_mode_is_its_listeners_alone,
    explain_shows_each_listeners_own_rules,
}

#[test]
fn help_tells_the_file_format_and_bad_settings_exit_2() {
    assert_help_mentions(
        &["node", "--help"],
        &[
            "--watch-dir",
            "--rescan-interval",
            "--max-conns-per-network",
            "router_id",
            "namespace",
        ],
    );
    let files = Files::new();
    let not_dir = files.dir.join("map.toml");
    let (status, _, err) = run_binary(&[
        "node",
        &format!("--watch-dir={}", not_dir.display()),
        &format!(
            "--shared-secret-file={}",
            files.dir.join("secret").display()
        ),
        &format!("--static-map={}", files.dir.join("map.toml").display()),
    ]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("is not a directory"), "{err}");
}

/// Both halves of the token rules in one process: the node answers the instance's token PUT
/// itself (the metadata server never sees it nor the token), refuses one that came through a
/// proxy in the instance, and leaves the answer on the instance's connection with the hop
/// limit.
fn the_node_answers_token_requests_and_limits_their_hops(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new();
    let addr = files.serve("r1.toml", R1);
    let flags = ["--imdsv2=required", "--token-hop-limit=2"];
    let mut node = files.node_with(rt, &server.url(), &flags);
    await_serving(&mut node, addr);
    let put = "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n\
               X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n";
    let stream = TcpStream::connect(addr).unwrap();
    let mut client = Client::from_tcp(stream.try_clone().unwrap());
    let answer = client.exchange(put.as_bytes());
    assert_eq!(answer.status, 200, "{answer:?}\n{}", node.log());
    assert_eq!(ttl(&peer_end(node.pid(), &stream)), 2, "the hop limit");
    let token = answer.body_text();

    let r = request(addr, &instance_id_request(""));
    assert_eq!(r.status, 401, "required: no token, no data");
    let with = format!("X-aws-ec2-metadata-token: {token}\r\n");
    let r = request(addr, &instance_id_request(&with));
    assert_eq!((r.status, r.body_text()), (200, I1.to_owned()));
    let seen = server.wait_for(1);
    assert_eq!(seen.len(), 1, "only the GET reached the server");
    assert!(!seen[0]
        .head
        .to_ascii_lowercase()
        .contains("x-aws-ec2-metadata-token"));
    // The same token behind another router is another instance's: refused.
    let other = files.serve("r2.toml", R2);
    await_serving(&mut node, other);
    assert_eq!(request(other, &instance_id_request(&with)).status, 401);
    // A token PUT relayed by a proxy inside the instance.
    let relayed = put.replace(
        "Content-Length",
        "X-Forwarded-For: 10.0.0.9\r\nContent-Length",
    );
    assert_eq!(request(addr, relayed.as_bytes()).status, 403);
}

/// A node's series are labelled `role="node"` (not the agent's, which a node is not), with
/// the agent's lookup series among them.
fn the_nodes_metrics_carry_its_own_role(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new();
    let addr = files.serve("r1.toml", R1);
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let flag = format!("--metrics-listen={admin}");
    let mut node = files.node_with(rt, &server.url(), &[&flag]);
    await_serving(&mut node, addr);
    let r = request(addr, &instance_id_request(""));
    assert_eq!((r.status, r.body_text()), (200, I1.to_owned()));
    let scraped = request(admin, &get("/metrics"));
    assert_eq!(scraped.status, 200, "{scraped:?}");
    let text = scraped.body_text();
    for series in [
        "mdproxy_requests_total{role=\"node\",code=\"200\"} 1",
        "mdproxy_open_connections{role=\"node\"} ",
        "mdproxy_imds_no_token_requests_total{role=\"node\",instance=\"",
    ] {
        assert!(text.contains(series), "no {series} in:\n{text}");
    }
    assert!(!text.contains("role=\"agent\""), "{text}");
}

/// `imdsv2 = "required"` in one router's file asks that router's instances for a token and
/// nobody else's; the node's own `--imdsv2` stays the rest's.
fn a_files_imdsv2_mode_is_its_listeners_alone(rt: Runtime) {
    let server = echo_instance();
    let files = Files::new();
    let strict = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let text = format!("router_id = \"{R1}\"\nlisten = [\"{strict}\"]\nimdsv2 = \"required\"\n");
    files.write("r1.toml", &text);
    let lax = files.serve("r2.toml", R2);
    let mut node = files.node_with(rt, &server.url(), &["--imdsv2=optional"]);
    await_serving(&mut node, strict);
    await_serving(&mut node, lax);
    let r = request(strict, &instance_id_request(""));
    assert_eq!(r.status, 401, "{r:?}\n{}", node.log());
    let r = request(lax, &instance_id_request(""));
    assert_eq!((r.status, r.body_text()), (200, I2.to_owned()));
    // A file that names no mode of its own takes the node's again once it changes.
    files.write(
        "r1.toml",
        &format!("router_id = \"{R1}\"\nlisten = [\"{strict}\"]\n"),
    );
    node.wait_for_log_count("r1.toml: serving", 2);
    let r = request(strict, &instance_id_request(""));
    assert_eq!(
        (r.status, r.body_text()),
        (200, I1.to_owned()),
        "{}",
        node.log()
    );
    // A bad mode is the file's error, logged with its path.
    files.write(
        "r3.toml",
        &format!("router_id = \"{R1}\"\nimdsv2 = \"strict\"\n"),
    );
    let log = node.wait_for_log("r3.toml: `imdsv2`");
    assert!(
        log.contains("is not one of off, optional, required"),
        "{log}"
    );
}
