//! Upstream fault injection on every hop, against the real binary on both runtimes:
//! ns-proxy → agent socket, agent → metadata server, agent → Neutron and agent → Keystone.
//!
//! Each upstream misbehaves one way per row (refused, accept-then-close, reset mid-response,
//! close-delimited answer, a 1-byte-per-100-ms drip, garbage, `100 Continue` first, a head over
//! 64 KiB, two ports for one IP, malformed JSON). Every row must get DESIGN.md's status within
//! its timeout, and the process must hold as many file descriptors afterwards as before.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

runtime_tests! {
    ns_proxy_to_agent_faults,
    ns_proxy_agent_refused,
    agent_to_metadata_server_faults,
    agent_metadata_server_refused,
    agent_to_neutron_faults,
    agent_neutron_refused,
    agent_to_keystone_faults,
    agent_keystone_refused,
}

const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";
const INSTANCE: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e5f";
const DRIP: Duration = Duration::from_millis(100);

/// What the client must see for one row.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// This final status (after any 1xx) and a complete answer.
    Status(u16),
    /// The connection cut without a complete answer: the relayed `200` head and part of the
    /// body, or (when the reset is noticed before the head was written) nothing at all.
    Cut,
}

struct Row {
    name: &'static str,
    fault: Fault,
    want: Want,
    /// The answer must come within this.
    within: Duration,
}

fn ok_200(body: &str) -> Vec<u8> {
    ok_response(body.as_bytes())
}

fn long_head() -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..2000 {
        r.extend_from_slice(format!("X-Filler-{i:04}: {}\r\n", "v".repeat(30)).as_bytes());
    }
    r.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
    assert!(r.len() > 64 * 1024);
    r
}

/// The rows every HTTP hop shares (the peer's answer is relayed, so 502/504 on failures).
fn relay_rows() -> Vec<Row> {
    let quick = Duration::from_secs(5);
    vec![
        Row {
            name: "accept_then_close",
            fault: Fault::AcceptClose,
            want: Want::Status(502),
            within: quick,
        },
        Row {
            name: "reset_mid_head",
            fault: Fault::ResetAfter(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec()),
            want: Want::Status(502),
            within: quick,
        },
        Row {
            name: "reset_mid_body",
            fault: Fault::ResetAfter(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec(),
            ),
            want: Want::Cut,
            within: quick,
        },
        Row {
            name: "close_delimited_answer",
            fault: Fault::Reply(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close".to_vec(),
            ),
            want: Want::Status(200),
            within: quick,
        },
        Row {
            name: "drip_one_byte_per_100ms",
            fault: Fault::Drip(ok_200("drip"), DRIP),
            want: Want::Status(504),
            within: Duration::from_secs(4),
        },
        Row {
            name: "garbage",
            fault: Fault::Reply(b"\x00\x01garbage, not HTTP\r\n\r\n".to_vec()),
            want: Want::Status(502),
            within: quick,
        },
        Row {
            name: "continue_before_answer",
            fault: Fault::Reply(
                [&b"HTTP/1.1 100 Continue\r\n\r\n"[..], &ok_200("after-100")].concat(),
            ),
            want: Want::Status(200),
            within: quick,
        },
        Row {
            name: "head_over_64_kib",
            fault: Fault::Reply(long_head()),
            want: Want::Status(502),
            within: quick,
        },
    ]
}

/// Runs `rows` against the process `pid`: each row sets the fault, makes one request through
/// `ask`, checks the answer and its timing, and waits for the descriptor count to come back.
fn run_rows(
    pid: u32,
    server: &FaultServer,
    rows: Vec<Row>,
    ask: &dyn Fn(usize) -> RawOutcome,
    log: &dyn Fn() -> String,
) {
    // A first request opens whatever a runtime opens lazily; the baseline is taken after it.
    server.set(Fault::AcceptClose);
    let _ = ask(usize::MAX);
    let baseline = quiet_fd_count(pid);
    let mut failures = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        server.set(row.fault.clone());
        let started = Instant::now();
        let out = ask(i);
        let took = started.elapsed();
        let text = String::from_utf8_lossy(&out.raw[..out.raw.len().min(300)]).into_owned();
        let ok = match row.want {
            Want::Status(s) => out.statuses.last() == Some(&s) && out.closed,
            Want::Cut => {
                let body = out
                    .raw
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(0, |end| out.raw.len() - end - 4);
                out.closed
                    && (out.raw.is_empty() || (out.raw.starts_with(b"HTTP/1.1 200") && body < 100))
            }
        };
        if !ok {
            failures.push(format!(
                "{}: got {:?} closed={} ({text:?}), want {:?}",
                row.name, out.statuses, out.closed, row.want
            ));
        }
        if took > row.within {
            failures.push(format!(
                "{}: answered after {took:?}, bound {:?}",
                row.name, row.within
            ));
        }
        let settled = eventually(|| fd_count(pid) == baseline);
        if !settled {
            failures.push(format!(
                "{}: {} descriptors open, {baseline} before",
                row.name,
                fd_count(pid)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nlog:\n{}",
        failures.join("\n"),
        log()
    );
}

/// The agent request an ns-proxy sends for `ip` behind `scope`.
fn proxied(ip: &str, scope: &str) -> Vec<u8> {
    format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-Forwarded-For: {ip}\r\n{scope}\r\n\r\n"
    )
    .into_bytes()
}

fn router_scope() -> String {
    format!("X-Neutron-Router-ID: {ROUTER}")
}

fn network_scope() -> String {
    format!("X-Neutron-Network-ID: {NETWORK}")
}

// ns-proxy → agent socket

fn ns_proxy_to_agent_faults(rt: Runtime) {
    let dir = TempDir::new();
    let server = FaultServer::unix(dir.join("agent.sock"), Fault::AcceptClose);
    let proxy = Proxy::start(rt, &server.path, &["--timeout-response", "1"]);
    let addr = proxy.addr;
    run_rows(
        proxy.pid(),
        &server,
        relay_rows(),
        &|_| raw_exchange(addr, get("/latest/meta-data/"), true),
        &|| proxy.log(),
    );
}

fn ns_proxy_agent_refused(rt: Runtime) {
    let dir = TempDir::new();
    // A socket path nobody listens on (ENOENT), then a socket file with no listener.
    let proxy = Proxy::start(rt, &dir.join("nobody.sock"), &[]);
    let addr = proxy.addr;
    let ask = || raw_exchange(addr, get("/latest/meta-data/"), true);
    assert_refused_503(proxy.pid(), &ask, "ns-proxy, no agent socket");
    drop(std::os::unix::net::UnixListener::bind(dir.join("nobody.sock")).unwrap());
    assert_refused_503(proxy.pid(), &ask, "ns-proxy, agent socket without listener");
    let out = ask();
    assert!(String::from_utf8_lossy(&out.raw).contains("temporarily unavailable"));
}

// agent → metadata server

struct AgentFiles {
    _dir: TempDir,
    socket: std::path::PathBuf,
    map: std::path::PathBuf,
    secret: std::path::PathBuf,
    password: std::path::PathBuf,
}

impl AgentFiles {
    fn new() -> AgentFiles {
        let dir = TempDir::new();
        let (socket, map, secret, password) = (
            dir.join("agent.sock"),
            dir.join("map.toml"),
            dir.join("secret"),
            dir.join("password"),
        );
        let mut text = format!("[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NETWORK}\"]\n");
        text += &format!(
            "\n[[port]]\nnetwork = \"{NETWORK}\"\nip = \"10.0.0.5\"\ndevice_id = \"{INSTANCE}\"\n\
             project_id = \"{PROJECT}\"\n"
        );
        fs::write(&map, text).unwrap();
        fs::write(&secret, "s3cr3t\n").unwrap();
        fs::write(&password, "p4ss\n").unwrap();
        AgentFiles {
            _dir: dir,
            socket,
            map,
            secret,
            password,
        }
    }

    fn static_agent(&self, rt: Runtime, metadata_url: &str) -> Agent {
        Agent::start(
            rt,
            &self.socket,
            &[
                format!("--shared-secret-file={}", self.secret.display()),
                format!("--static-map={}", self.map.display()),
                format!("--metadata-url={metadata_url}"),
                "--timeout-response=1".to_owned(),
            ],
        )
    }

    /// The flags of Keystone at `url` (with `/v3`), user `neutron`, project `service`.
    fn keystone_args(&self, url: &str) -> Vec<String> {
        vec![
            format!("--auth-url={url}/v3"),
            "--username=neutron".to_owned(),
            format!("--password-file={}", self.password.display()),
            "--project-name=service".to_owned(),
        ]
    }

    fn neutron_agent(&self, rt: Runtime, metadata_url: &str, backend: &[String]) -> Agent {
        let mut args = vec![
            format!("--shared-secret-file={}", self.secret.display()),
            "--backend=neutron".to_owned(),
            format!("--metadata-url={metadata_url}"),
            "--neutron-timeout=1".to_owned(),
        ];
        args.extend_from_slice(backend);
        Agent::start(rt, &self.socket, &args)
    }
}

fn ask_agent(socket: &Path, request: Vec<u8>) -> RawOutcome {
    raw_exchange_unix(socket, request, true)
}

/// Row `i`'s request from its own address `10.0.SUBNET.x` (network scope), so the lookup cache
/// never answers for the backend under test.
fn ask_from_new_address(socket: &Path, subnet: u8, i: usize) -> RawOutcome {
    let ip = format!("10.0.{subnet}.{}", i.wrapping_add(1) % 250);
    ask_agent(socket, proxied(&ip, &network_scope()))
}

/// An upstream nobody listens on: after a warm-up request (which opens what a runtime opens
/// lazily), one more request gets 503 and leaves no descriptor behind.
fn assert_refused_503(pid: u32, ask: &dyn Fn() -> RawOutcome, what: &str) {
    let _ = ask();
    let before = quiet_fd_count(pid);
    let out = ask();
    assert_eq!(
        out.statuses,
        [503],
        "{what}: {:?}",
        String::from_utf8_lossy(&out.raw)
    );
    assert_fds_settle(pid, before, what);
}

fn agent_to_metadata_server_faults(rt: Runtime) {
    let files = AgentFiles::new();
    let server = FaultServer::tcp(Fault::AcceptClose);
    let agent = files.static_agent(rt, &server.url());
    let socket = agent.socket.clone();
    run_rows(
        agent.pid(),
        &server,
        relay_rows(),
        &|_| ask_agent(&socket, proxied("10.0.0.5", &router_scope())),
        &|| agent.log(),
    );
}

fn agent_metadata_server_refused(rt: Runtime) {
    let files = AgentFiles::new();
    let url = format!("http://127.0.0.1:{}", free_port());
    let agent = files.static_agent(rt, &url);
    let socket = agent.socket.clone();
    let ask = || ask_agent(&socket, proxied("10.0.0.5", &router_scope()));
    assert_refused_503(agent.pid(), &ask, "agent, metadata server refused");
}

// agent → Neutron (noauth, --neutron-url)

fn port_json(ports: &[(&str, &str)]) -> String {
    let list: Vec<String> = ports
        .iter()
        .map(|(d, p)| format!(r#"{{"device_id": "{d}", "project_id": "{p}", "tenant_id": "{p}"}}"#))
        .collect();
    format!(r#"{{"ports": [{}]}}"#, list.join(", "))
}

fn json_200(body: &str) -> Vec<u8> {
    http_response(
        "200 OK",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// Rows for a lookup backend: its failures are the agent's 503; a good answer gets 200 from
/// the metadata server behind.
fn backend_rows(good: Vec<u8>, close_delimited: Vec<u8>) -> Vec<Row> {
    let quick = Duration::from_secs(5);
    vec![
        Row {
            name: "accept_then_close",
            fault: Fault::AcceptClose,
            want: Want::Status(503),
            within: quick,
        },
        Row {
            name: "reset_mid_response",
            fault: Fault::ResetAfter(good[..good.len() / 2].to_vec()),
            want: Want::Status(503),
            within: quick,
        },
        Row {
            name: "close_delimited_answer",
            fault: Fault::Reply(close_delimited),
            want: Want::Status(200),
            within: quick,
        },
        Row {
            name: "drip_one_byte_per_100ms",
            fault: Fault::Drip(good.clone(), DRIP),
            want: Want::Status(503),
            within: Duration::from_secs(4),
        },
        Row {
            name: "garbage",
            fault: Fault::Reply(b"\x00\x01garbage, not HTTP\r\n\r\n".to_vec()),
            want: Want::Status(503),
            within: quick,
        },
        Row {
            name: "continue_before_answer",
            fault: Fault::Reply([&b"HTTP/1.1 100 Continue\r\n\r\n"[..], &good].concat()),
            want: Want::Status(200),
            within: quick,
        },
        Row {
            name: "head_over_64_kib",
            fault: Fault::Reply(long_head()),
            want: Want::Status(503),
            within: quick,
        },
        Row {
            name: "malformed_json",
            fault: Fault::Reply(json_200(r#"{"ports": [{"device_id": "#)),
            want: Want::Status(503),
            within: quick,
        },
        Row {
            name: "json_of_the_wrong_shape",
            fault: Fault::Reply(json_200(r#"{"ports": {"device_id": 7}}"#)),
            want: Want::Status(503),
            within: quick,
        },
        Row {
            name: "server_error_500",
            fault: Fault::Reply(http_response("500 Internal Server Error", &[], b"oops")),
            want: Want::Status(503),
            within: quick,
        },
    ]
}

fn agent_to_neutron_faults(rt: Runtime) {
    let files = AgentFiles::new();
    let metadata = Upstream::start_tcp(|_| Reply::Send(ok_response(b"i-1")));
    let ports = port_json(&[(INSTANCE, PROJECT)]);
    let good = json_200(&ports);
    let close_delimited =
        format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{ports}").into_bytes();
    let neutron = FaultServer::tcp(Fault::AcceptClose);
    let agent = files.neutron_agent(
        rt,
        &metadata.url(),
        &[format!("--neutron-url={}", neutron.url())],
    );
    let socket = agent.socket.clone();
    let mut rows = backend_rows(good, close_delimited);
    rows.push(Row {
        name: "two_ports_match_one_ip",
        fault: Fault::Reply(json_200(&port_json(&[
            (INSTANCE, PROJECT),
            ("7b1f2b63-4d2c-4b9f-8e80-1b2c3d4e5f60", PROJECT),
        ]))),
        want: Want::Status(404),
        within: Duration::from_secs(5),
    });
    // A new client address per row: the cache must not answer for the backend.
    run_rows(
        agent.pid(),
        &neutron,
        rows,
        &|i| ask_from_new_address(&socket, 1, i),
        &|| agent.log(),
    );
}

fn agent_neutron_refused(rt: Runtime) {
    let files = AgentFiles::new();
    let metadata = Upstream::start_tcp(|_| Reply::Send(ok_response(b"i-1")));
    let url = format!("http://127.0.0.1:{}", free_port());
    let agent = files.neutron_agent(rt, &metadata.url(), &[format!("--neutron-url={url}")]);
    let socket = agent.socket.clone();
    let ask = || ask_agent(&socket, proxied("10.0.0.5", &network_scope()));
    assert_refused_503(agent.pid(), &ask, "agent, Neutron refused");
}

// agent → Keystone (Neutron itself answers well)

fn keystone_token(neutron_url: &str) -> String {
    format!(
        r#"{{"token": {{"issued_at": "2026-11-25T10:00:00.000000Z", "expires_at": "2026-11-25T11:00:00.000000Z", "catalog": [{{"type": "network", "endpoints": [{{"interface": "public", "region_id": "RegionOne", "url": "{neutron_url}"}}]}}]}}}}"#
    )
}

fn agent_to_keystone_faults(rt: Runtime) {
    let files = AgentFiles::new();
    let metadata = Upstream::start_tcp(|_| Reply::Send(ok_response(b"i-1")));
    let ports = port_json(&[(INSTANCE, PROJECT)]);
    let neutron = Upstream::start_tcp(move |_| Reply::Send(json_200(&ports)));
    let body = keystone_token(&neutron.url());
    let good = http_response(
        "201 Created",
        &[
            ("X-Subject-Token", "gAAAAAB-token"),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    let close_delimited =
        format!("HTTP/1.0 201 Created\r\nX-Subject-Token: gAAAAAB-token\r\n\r\n{body}")
            .into_bytes();
    let keystone = FaultServer::tcp(Fault::AcceptClose);
    let agent = files.neutron_agent(rt, &metadata.url(), &files.keystone_args(&keystone.url()));
    let socket = agent.socket.clone();
    let mut rows = backend_rows(good, close_delimited);
    // Keystone-only ways to fail.
    rows.retain(|r| r.name != "json_of_the_wrong_shape");
    rows.push(Row {
        name: "token_body_without_expiry",
        fault: Fault::Reply(http_response(
            "201 Created",
            &[("X-Subject-Token", "t")],
            br#"{"token": {"issued_at": "x"}}"#,
        )),
        want: Want::Status(503),
        within: Duration::from_secs(5),
    });
    rows.push(Row {
        name: "no_subject_token_header",
        fault: Fault::Reply(json_200(&keystone_token("http://127.0.0.1:1"))),
        want: Want::Status(503),
        within: Duration::from_secs(5),
    });
    rows.push(Row {
        name: "credentials_refused_401",
        fault: Fault::Reply(http_response("401 Unauthorized", &[], b"{}")),
        want: Want::Status(503),
        within: Duration::from_secs(5),
    });
    // Tokens are reused: each row must authenticate again, so only failures precede the two
    // good rows, which run last.
    rows.sort_by_key(|r| matches!(r.want, Want::Status(200)));
    run_rows(
        agent.pid(),
        &keystone,
        rows,
        &|i| ask_from_new_address(&socket, 2, i),
        &|| agent.log(),
    );
}

fn agent_keystone_refused(rt: Runtime) {
    let files = AgentFiles::new();
    let metadata = Upstream::start_tcp(|_| Reply::Send(ok_response(b"i-1")));
    let agent = files.neutron_agent(
        rt,
        &metadata.url(),
        &files.keystone_args(&format!("http://127.0.0.1:{}", free_port())),
    );
    let socket = agent.socket.clone();
    let ask = || ask_agent(&socket, proxied("10.0.0.5", &network_scope()));
    assert_refused_503(agent.pid(), &ask, "agent, Keystone refused");
}
