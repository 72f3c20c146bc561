//! mdproxy in front of the real lenient parsers it meets in a cloud (security issue 14):
//! eventlet.wsgi 0.36.1 (CVE-2025-58068: after the last chunk it reads one line and parses the
//! rest of the trailer section as the next request; and it folds `_` into `-` in header names),
//! a fixed eventlet (≥ 0.40.3) and Python's `wsgiref` (folds `_` too), each running
//! `tests/peers/wsgi_peer.py`, which records every request as WSGI saw it and answers per
//! identity (`common::lenient_peers`).
//!
//! Each peer stands at both hops, on both runtimes:
//! - behind the ns-proxy, as the agent on its Unix socket: it must see exactly one
//!   `X-Forwarded-For` (the client's address), exactly one `X-Neutron-Router-ID` (ours) and no
//!   other identity or forwarding header;
//! - behind the agent, as Nova on loopback TCP (client → ns-proxy → `mdproxy agent` with a static
//!   map → peer): it must see exactly the agent's `X-Forwarded-For`, `X-Instance-ID`,
//!   `X-Tenant-ID` and `X-Instance-ID-Signature`, and no other `X-` header (nothing the
//!   instance sent).
//!
//! Sent through: the hostile matrix of `hostile.rs` (`common::hostile_cases`), then chunked
//! bodies with trailers and chunk extensions, identity headers spelled with `_`, `Forwarded` and
//! friends, and pipelining; every row asserts exactly which requests the peer parsed (count,
//! method, path, identity, and a body re-framed with a Content-Length) and that the client got
//! exactly its own answers. Finally a victim's keep-alive loop runs beside an attacker's
//! (200 requests or 5 s each, whichever first) and neither may receive a byte of the other's
//! answers.
//!
//! Distinct instances are distinct loopback source addresses. Without the peers' venvs the tests
//! print "skipped: …" (see `common::lenient_peers`); `MDPROXY_LENIENT_PEERS=required` makes that
//! a failure.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::panic::catch_unwind;
use std::thread;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use common::hostile_cases::{self, Up, SMUGGLED};
use common::lenient_peers::*;
use common::*;

/// `scenario => { test: Hop, PeerKind; … }` defines each `fn test(rt)` as `scenario(rt, hop, kind)`
/// and makes it one test per runtime.
macro_rules! peer_tests {
    ($($scenario:ident => { $($test:ident: $hop:ident, $kind:ident;)+ })*) => {
        $($(fn $test(rt: Runtime) { $scenario(rt, Hop::$hop, PeerKind::$kind) })+)*
        runtime_tests! { $($($test,)+)* }
    };
}

peer_tests! {
    hostile_matrix => {
        ns_proxy_hostile_matrix_eventlet_0_36: NsProxy, Eventlet036;
        ns_proxy_hostile_matrix_eventlet_fixed: NsProxy, EventletFixed;
        ns_proxy_hostile_matrix_wsgiref: NsProxy, Wsgiref;
        agent_hostile_matrix_eventlet_0_36: Agent, Eventlet036;
        agent_hostile_matrix_eventlet_fixed: Agent, EventletFixed;
        agent_hostile_matrix_wsgiref: Agent, Wsgiref;
    }
    lenient_rows => {
        ns_proxy_trailers_underscores_pipelining_eventlet_0_36: NsProxy, Eventlet036;
        ns_proxy_trailers_underscores_pipelining_eventlet_fixed: NsProxy, EventletFixed;
        ns_proxy_trailers_underscores_pipelining_wsgiref: NsProxy, Wsgiref;
        agent_trailers_underscores_pipelining_eventlet_0_36: Agent, Eventlet036;
        agent_trailers_underscores_pipelining_eventlet_fixed: Agent, EventletFixed;
        agent_trailers_underscores_pipelining_wsgiref: Agent, Wsgiref;
    }
    victim_beside_attacker => {
        ns_proxy_victim_beside_attacker_eventlet_0_36: NsProxy, Eventlet036;
        ns_proxy_victim_beside_attacker_eventlet_fixed: NsProxy, EventletFixed;
        ns_proxy_victim_beside_attacker_wsgiref: NsProxy, Wsgiref;
        agent_victim_beside_attacker_eventlet_0_36: Agent, Eventlet036;
        agent_victim_beside_attacker_eventlet_fixed: Agent, EventletFixed;
        agent_victim_beside_attacker_wsgiref: Agent, Wsgiref;
    }
}

const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";
const SECRET: &str = "s3cr3t";
/// The instances of the static map, by source address.
const INSTANCES: [([u8; 4], &str); 3] = [
    ([127, 0, 0, 1], "3c2b1a09-0000-4000-8000-000000000001"),
    (ATTACKER, "3c2b1a09-0000-4000-8000-0000000000aa"),
    (VICTIM, "3c2b1a09-0000-4000-8000-0000000000bb"),
];
const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const VICTIM: [u8; 4] = [127, 0, 0, 3];
/// Another tenant's network, which forged headers name.
const OTHER_NETWORK: &str = "9d8c7b6a-0000-4000-8000-0000000000ee";
/// Another tenant's address, which forged headers name.
const OTHER_IP: &str = "10.0.0.7";

/// Every header that claims an identity or a forwarding path (DESIGN.md, header contract).
const IDENTITY_FAMILY: &[&str] = &[
    "X-Forwarded-For",
    "X-Neutron-Router-ID",
    "X-Neutron-Network-ID",
    "X-OVN-Network-ID",
    "X-Instance-ID",
    "X-Instance-ID-Signature",
    "X-Tenant-ID",
    "X-Metadata-Provider",
    "X-Metadata-Provider-Signature",
    "Forwarded",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Real-IP",
];

/// Which hop the peer stands behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hop {
    /// ns-proxy → peer (as the agent, on a Unix socket).
    NsProxy,
    /// ns-proxy → `mdproxy agent` → peer (as Nova, on loopback TCP).
    Agent,
}

fn dotted(ip: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

fn instance_of(ip: [u8; 4]) -> &'static str {
    INSTANCES
        .iter()
        .find(|(a, _)| *a == ip)
        .map(|(_, i)| *i)
        .expect("an instance of the map")
}

fn signature(instance: &str) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(instance.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The identity headers the peer must see for a request from `ip`: exactly these, once each.
fn identity_for(hop: Hop, ip: [u8; 4]) -> Vec<(&'static str, String)> {
    match hop {
        Hop::NsProxy => vec![
            ("X-Forwarded-For", dotted(ip)),
            ("X-Neutron-Router-ID", ROUTER.to_owned()),
        ],
        Hop::Agent => vec![
            ("X-Forwarded-For", dotted(ip)),
            ("X-Instance-ID", instance_of(ip).to_owned()),
            ("X-Tenant-ID", PROJECT.to_owned()),
            ("X-Instance-ID-Signature", signature(instance_of(ip))),
        ],
    }
}

/// Everything wrong with the identity `r` carries for a request from `ip`.
fn identity_problems(r: &Recorded, hop: Hop, ip: [u8; 4]) -> Vec<String> {
    let want = identity_for(hop, ip);
    let mut problems = Vec::new();
    for name in IDENTITY_FAMILY {
        let got = r.header_values(name);
        match want.iter().find(|(n, _)| n == name) {
            Some((_, v)) if got != [v.as_str()] => {
                problems.push(format!("{name}: {got:?}, want [{v:?}]"))
            }
            None if !got.is_empty() => problems.push(format!("{name}: {got:?}, want none")),
            _ => {}
        }
    }
    if hop == Hop::Agent {
        // Nothing the instance sent reaches Nova: the only X- fields are the agent's own.
        for line in r.head.split("\r\n").skip(1) {
            let name = line.split(':').next().unwrap_or("");
            let known = want.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
            if name.to_ascii_uppercase().starts_with("X-") && !known {
                problems.push(format!("{name} reached the metadata server"));
            }
        }
    }
    problems
}

fn assert_identity(r: &Recorded, hop: Hop, ip: [u8; 4]) {
    let problems = identity_problems(r, hop, ip);
    assert!(problems.is_empty(), "{}\n{}", problems.join("; "), r.head);
}

fn ns_proxy_identity_of_local(r: &Recorded) {
    assert_identity(r, Hop::NsProxy, [127, 0, 0, 1]);
}

fn agent_identity_of_local(r: &Recorded) {
    assert_identity(r, Hop::Agent, [127, 0, 0, 1]);
}

/// What the peer answers a request from `ip` when it saw the identity it should have.
fn answer_for(hop: Hop, ip: [u8; 4], method: &str, path: &str) -> String {
    let who = match hop {
        Hop::NsProxy => ROUTER,
        Hop::Agent => instance_of(ip),
    };
    format!("answer-for {} {who} {method} {path}", dotted(ip))
}

/// The peer, and in front of it the mdproxy roles of its hop.
struct Chain {
    peer: Peer,
    /// The files of the mdproxy roles (socket, map, secret).
    dir: TempDir,
    front: Option<(Proxy, Option<Agent>)>,
    hop: Hop,
}

impl Chain {
    /// The peer, or `None` (the test is skipped) without its interpreter.
    fn start(rt: Runtime, hop: Hop, kind: PeerKind) -> Option<Chain> {
        let python = peer_python(kind)?;
        let dir = TempDir::new();
        let peer = match hop {
            Hop::NsProxy => Peer::unix(kind, &python, &dir.join("peer.sock")),
            Hop::Agent => Peer::tcp(kind, &python),
        };
        let mut map = format!("[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NETWORK}\"]\n");
        for (ip, instance) in INSTANCES {
            map += &format!(
                "\n[[port]]\nnetwork = \"{NETWORK}\"\nip = \"{}\"\ndevice_id = \"{instance}\"\n\
                 project_id = \"{PROJECT}\"\n",
                dotted(ip)
            );
        }
        fs::write(dir.join("map.toml"), map).unwrap();
        fs::write(dir.join("secret"), SECRET).unwrap();
        let mut chain = Chain {
            peer,
            dir,
            front: None,
            hop,
        };
        chain.restart_front(rt);
        Some(chain)
    }

    /// Fresh mdproxy roles in front of the same peer: a row that leaves a pooled upstream
    /// connection out of step cannot spoil the next row.
    fn restart_front(&mut self, rt: Runtime) {
        self.front = None;
        let socket = match self.hop {
            Hop::NsProxy => self.dir.join("peer.sock"),
            Hop::Agent => {
                let socket = self.dir.join("agent.sock");
                let _ = fs::remove_file(&socket);
                socket
            }
        };
        let agent = (self.hop == Hop::Agent).then(|| {
            let args = [
                format!("--shared-secret-file={}", self.dir.join("secret").display()),
                format!("--static-map={}", self.dir.join("map.toml").display()),
                format!("--metadata-url={}", self.peer.url()),
            ];
            Agent::start(rt, &socket, &args)
        });
        let proxy = Proxy::start(rt, &socket, &["--timeout-head", "2"]);
        self.front = Some((proxy, agent));
    }

    fn addr(&self) -> SocketAddr {
        self.front.as_ref().expect("started").0.addr
    }

    /// The last lines the mdproxy roles logged, for failure messages.
    fn log_tail(&self) -> String {
        let Some((proxy, agent)) = &self.front else {
            return String::new();
        };
        let mut log = proxy.log();
        if let Some(agent) = agent {
            log += &agent.log();
        }
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A fence: a request from 127.0.0.1 on a new connection, which must get its own answer.
    /// Returns every other request the peer parsed from record `from` on, before the fence.
    /// When the fence's answer is wrong (a pooled connection is out of step), that is a
    /// problem, and a second fence goes through fresh mdproxy roles, which reaches the peer.
    fn fence(
        &mut self,
        rt: Runtime,
        from: usize,
        name: &str,
        problems: &mut Vec<String>,
    ) -> Vec<WsgiRequest> {
        let mut path = format!("{FENCE}{name}");
        let got = exchange_from([127, 0, 0, 1], self.addr(), get_close(&path));
        let want = answer_for(self.hop, [127, 0, 0, 1], "GET", &path);
        if got.len() != 1 || got[0].status != 200 || got[0].body != want {
            problems.push(format!("the next request got {got:?}, want [200 {want:?}]"));
            self.restart_front(rt);
            path = format!("{FENCE}{name}-again");
            let _ = exchange_from([127, 0, 0, 1], self.addr(), get_close(&path));
        }
        let Some(seen) = self.peer.records_before(from, &path) else {
            problems.push(format!("{path} never reached the peer"));
            return Vec::new();
        };
        seen.into_iter()
            .filter(|r| !r.path.starts_with(FENCE))
            .collect()
    }
}

/// The path prefix of fences.
const FENCE: &str = "/latest/meta-data/fence-";

fn get_close(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// A panic's message.
fn message(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "check failed".to_owned())
}

/// `hostile.rs`'s table, from 127.0.0.1, with one mdproxy front for the whole table (as
/// there): statuses, the close, and what the peer parsed, per row.
fn hostile_matrix(rt: Runtime, hop: Hop, kind: PeerKind) {
    let Some(mut chain) = Chain::start(rt, hop, kind) else {
        return;
    };
    let identity = match hop {
        Hop::NsProxy => ns_proxy_identity_of_local,
        Hop::Agent => agent_identity_of_local,
    };
    let mut failures = Vec::new();
    let cases = hostile_cases::cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for case in cases {
        let before = chain.peer.count();
        let out = raw_exchange(chain.addr(), case.bytes.clone(), true);
        let mut problems = Vec::new();
        let seen = chain.fence(rt, before, case.name, &mut problems);
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
        if seen.iter().any(|r| r.path.contains("smuggled")) {
            problems.push("the smuggled request reached the peer".to_owned());
        }
        match (case.up, seen.len()) {
            (Up::Nothing, 0) => {}
            (Up::One, 1) => {
                let r = seen[0].as_recorded();
                if let Err(e) = catch_unwind(|| {
                    identity(&r);
                    case.check.run(&r, identity);
                }) {
                    problems.push(message(e));
                }
            }
            (want, n) => problems.push(format!(
                "peer parsed {n} requests ({want:?} wanted): {:?}",
                seen.iter().map(WsgiRequest::summary).collect::<Vec<_>>()
            )),
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} behind the {hop:?} hop: {} rows failed:\n{}\nlog:\n{}",
        kind.name(),
        failures.len(),
        failures.join("\n"),
        chain.log_tail()
    );
}

/// One request of a row as the peer must parse it.
struct Want {
    method: &'static str,
    path: String,
    /// The body, which must arrive with a Content-Length we computed.
    body: &'static str,
}

fn want(method: &'static str, path: &str, body: &'static str) -> Want {
    Want {
        method,
        path: path.to_owned(),
        body,
    }
}

/// A row sent by the attacker (127.0.0.2) on one connection, half-closed after it.
struct Row {
    name: &'static str,
    bytes: String,
    /// Exactly what the peer must parse, in order; the client gets one answer per request.
    want: Vec<Want>,
}

const PASSWORD: &str = "/openstack/latest/password";
const INSTANCE_ID: &str = "/latest/meta-data/instance-id";

/// A chunked POST to the password path with `chunks` (framed as given) and the trailer
/// section `trailers` (field lines, each ending in CRLF).
fn chunked_post(chunks: &str, trailers: &str) -> String {
    format!(
        "POST {PASSWORD} HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: chunked\r\n\r\n\
         {chunks}{trailers}\r\n"
    )
}

fn get_with(path: &str, fields: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{fields}\r\n")
}

/// Every identity header spelled with `_`, in mixed case, naming another tenant.
fn underscored_identity() -> String {
    [
        format!("X_Forwarded_For: {OTHER_IP}"),
        format!("x_neutron_network_id: {OTHER_NETWORK}"),
        format!("X_NEUTRON_ROUTER_ID: {OTHER_NETWORK}"),
        format!("X_OVN_Network_ID: {OTHER_NETWORK}"),
        "X_Instance_ID: i-evil".to_owned(),
        "x_instance_id_signature: deadbeef".to_owned(),
        "X_Tenant_Id: evil-project".to_owned(),
        "X_Metadata_Provider: evil".to_owned(),
        "X_METADATA_PROVIDER_SIGNATURE: evil".to_owned(),
        format!("X-Forwarded_For: {OTHER_IP}"),
        format!("X_Forwarded-For: {OTHER_IP}"),
        format!("x_real_ip: {OTHER_IP}"),
        "X_Forwarded_Host: evil".to_owned(),
    ]
    .iter()
    .map(|l| format!("{l}\r\n"))
    .collect()
}

fn rows() -> Vec<Row> {
    // After the last chunk eventlet < 0.40.3 reads one line (X-Pad); the rest is a request
    // whose method is `X-Get:` and whose headers name another tenant.
    let smuggling_trailers = format!(
        "X-Pad: 1\r\nX-Get: /openstack/latest/user_data HTTP/1.1\r\n\
         X-Forwarded-For: {OTHER_IP}\r\nX-Neutron-Network-ID: {OTHER_NETWORK}\r\n"
    );
    let forwarded = format!(
        "Forwarded: for={OTHER_IP};host=evil;proto=https\r\nX-Real-IP: {OTHER_IP}\r\n\
         X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n\
         X-OVN-Network-ID: {OTHER_NETWORK}\r\nforwarded: for=10.0.0.8\r\nx-real-ip: 10.0.0.8\r\n"
    );
    let hello = "5\r\nhello\r\n0\r\n";
    vec![
        Row {
            name: "trailers_carry_identity",
            bytes: chunked_post(
                hello,
                &format!(
                    "X-Forwarded-For: {OTHER_IP}\r\nX-Neutron-Network-ID: {OTHER_NETWORK}\r\n"
                ),
            ),
            want: vec![want("POST", PASSWORD, "hello")],
        },
        Row {
            name: "trailers_smuggle_a_request",
            bytes: chunked_post(hello, &smuggling_trailers),
            want: vec![want("POST", PASSWORD, "hello")],
        },
        Row {
            name: "trailers_with_underscored_identity",
            bytes: chunked_post(
                hello,
                "X-Pad: 1\r\nX_Instance_ID: i-evil\r\nX-Instance-ID: i-evil\r\n",
            ),
            want: vec![want("POST", PASSWORD, "hello")],
        },
        Row {
            name: "chunk_extensions",
            bytes: chunked_post(
                &format!("2;a=b\r\nhe\r\n3;x-forwarded-for=\"{OTHER_IP}\"\r\nllo\r\n0;last\r\n"),
                "",
            ),
            want: vec![want("POST", PASSWORD, "hello")],
        },
        Row {
            name: "chunk_extension_on_the_last_chunk_then_smuggling_trailers",
            bytes: chunked_post("5\r\nhello\r\n0;ext=1\r\n", &smuggling_trailers),
            want: vec![want("POST", PASSWORD, "hello")],
        },
        Row {
            name: "underscored_identity_headers",
            bytes: get_with(INSTANCE_ID, &underscored_identity()),
            want: vec![want("GET", INSTANCE_ID, "")],
        },
        Row {
            name: "underscored_identity_on_a_post",
            bytes: format!(
                "POST {PASSWORD} HTTP/1.1\r\nHost: x\r\n{}Content-Length: 5\r\n\r\nhello",
                underscored_identity()
            ),
            want: vec![want("POST", PASSWORD, "hello")],
        },
        Row {
            name: "forwarded_real_ip_host_proto_ovn",
            bytes: get_with(INSTANCE_ID, &forwarded),
            want: vec![want("GET", INSTANCE_ID, "")],
        },
        Row {
            name: "instance_only_header_stops_at_the_agent",
            bytes: get_with(INSTANCE_ID, "X-Instance-Marker: from-the-instance\r\n"),
            want: vec![want("GET", INSTANCE_ID, "")],
        },
        Row {
            name: "pipelined_get_post_get",
            bytes: [
                get_with("/latest/meta-data/a", ""),
                format!("POST {PASSWORD} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
                get_with("/latest/meta-data/b", ""),
            ]
            .concat(),
            want: vec![
                want("GET", "/latest/meta-data/a", ""),
                want("POST", PASSWORD, "hello"),
                want("GET", "/latest/meta-data/b", ""),
            ],
        },
        Row {
            name: "pipelined_smuggling_trailers_then_underscores_then_forwarded",
            bytes: [
                chunked_post(hello, &smuggling_trailers),
                get_with("/latest/meta-data/u", &underscored_identity()),
                get_with("/latest/meta-data/f", &forwarded),
                chunked_post(
                    "2;e\r\nhe\r\n3\r\nllo\r\n0\r\n",
                    "X-Forwarded-For: 10.0.0.9\r\n",
                ),
            ]
            .concat(),
            want: vec![
                want("POST", PASSWORD, "hello"),
                want("GET", "/latest/meta-data/u", ""),
                want("GET", "/latest/meta-data/f", ""),
                want("POST", PASSWORD, "hello"),
            ],
        },
        Row {
            name: "smuggled_request_in_a_get_body_stays_a_body",
            bytes: format!(
                "GET {INSTANCE_ID} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            want: vec![want("GET", INSTANCE_ID, SMUGGLED)],
        },
    ]
}

/// Everything wrong with what the peer parsed for `row` and what the client got.
fn row_problems(hop: Hop, row: &Row, seen: &[WsgiRequest], got: &[Answer]) -> Vec<String> {
    let mut problems = Vec::new();
    if seen.len() != row.want.len() {
        problems.push(format!(
            "peer parsed {} requests, want {}: {:?}",
            seen.len(),
            row.want.len(),
            seen.iter().map(WsgiRequest::summary).collect::<Vec<_>>()
        ));
    }
    for (i, (r, w)) in seen.iter().zip(&row.want).enumerate() {
        if (r.method.as_str(), r.path.as_str()) != (w.method, w.path.as_str()) {
            problems.push(format!(
                "request {i}: {} {}, want {} {}",
                r.method, r.path, w.method, w.path
            ));
        }
        let rec = r.as_recorded();
        for p in identity_problems(&rec, hop, ATTACKER) {
            problems.push(format!("request {i}: {p}"));
        }
        if r.body != w.body {
            problems.push(format!("request {i}: body {:?}, want {:?}", r.body, w.body));
        }
        let length = (!w.body.is_empty()).then(|| w.body.len().to_string());
        if r.content_length != length || r.headers.contains_key("HTTP_TRANSFER_ENCODING") {
            problems.push(format!(
                "request {i}: Content-Length {:?} and Transfer-Encoding {:?}, want a re-framed body \
                 (Content-Length {length:?}, no Transfer-Encoding)",
                r.content_length,
                r.headers.get("HTTP_TRANSFER_ENCODING")
            ));
        }
    }
    let answers: Vec<String> = row
        .want
        .iter()
        .map(|w| answer_for(hop, ATTACKER, w.method, &w.path))
        .collect();
    let ok = got.len() == answers.len()
        && got
            .iter()
            .zip(&answers)
            .all(|(g, a)| g.status == 200 && &g.body == a);
    if !ok {
        problems.push(format!("client got {got:?}, want 200s with {answers:?}"));
    }
    problems
}

/// The trailer, chunk-extension, underscore, `Forwarded` and pipelining rows, each on fresh
/// mdproxy roles, from the attacker's address.
fn lenient_rows(rt: Runtime, hop: Hop, kind: PeerKind) {
    let Some(mut chain) = Chain::start(rt, hop, kind) else {
        return;
    };
    let mut failures = Vec::new();
    for row in rows() {
        chain.restart_front(rt);
        let before = chain.peer.count();
        let got = exchange_from(ATTACKER, chain.addr(), row.bytes.clone().into_bytes());
        let mut problems = Vec::new();
        let seen = chain.fence(rt, before, row.name, &mut problems);
        problems.extend(row_problems(hop, &row, &seen, &got));
        if !problems.is_empty() {
            failures.push(format!("{}:\n    {}", row.name, problems.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} behind the {hop:?} hop: {} rows failed:\n{}\nlog:\n{}",
        kind.name(),
        failures.len(),
        failures.join("\n"),
        chain.log_tail()
    );
}

/// What one client's keep-alive loop saw.
#[derive(Debug, Default)]
struct LoopReport {
    sent: usize,
    own: usize,
    /// Answers that were not this client's own (another's, or a forged identity's).
    foreign: Vec<String>,
    /// Non-200 answers and broken connections (allowed: not a byte of anyone else's).
    other: Vec<String>,
}

/// Keeps sending `requests` (in turn) from `ip` on a keep-alive connection, reconnecting when
/// it breaks, for 200 requests or 5 s, whichever comes first. Each request is (bytes, method,
/// path) of what the peer should answer.
fn keep_alive_loop(
    hop: Hop,
    ip: [u8; 4],
    addr: SocketAddr,
    requests: Vec<(Vec<u8>, &'static str, String)>,
) -> LoopReport {
    let mut report = LoopReport::default();
    let mut conn = KeepAlive::connect(ip, addr);
    bounded_loop(200, Duration::from_secs(5), || {
        let (bytes, method, path) = &requests[report.sent % requests.len()];
        report.sent += 1;
        match conn.exchange(bytes) {
            Ok(a) if a.status == 200 && a.body == answer_for(hop, ip, method, path) => {
                report.own += 1
            }
            Ok(a) if a.body.contains("answer-for") || a.status == 200 => {
                report.foreign.push(format!("{} {:?}", a.status, a.body))
            }
            Ok(a) => {
                report.other.push(format!("{} {:?}", a.status, a.body));
                conn = KeepAlive::connect(ip, addr);
            }
            Err(e) => {
                report.other.push(format!("connection: {e}"));
                conn = KeepAlive::connect(ip, addr);
            }
        }
        true
    });
    report
}

/// An attacker (127.0.0.2) keeps sending smuggling trailers and underscored identity while a
/// victim (127.0.0.3) reads its instance id on its own keep-alive connection. Neither may get
/// any answer but its own, and every request the peer parsed carries one of the two identities.
fn victim_beside_attacker(rt: Runtime, hop: Hop, kind: PeerKind) {
    let Some(chain) = Chain::start(rt, hop, kind) else {
        return;
    };
    let addr = chain.addr();
    let smuggling = chunked_post(
        "5\r\nhello\r\n0\r\n",
        &format!(
            "X-Pad: 1\r\nX-Get: /openstack/latest/user_data HTTP/1.1\r\n\
             X-Forwarded-For: {}\r\nX-Neutron-Router-ID: {ROUTER}\r\n",
            dotted(VICTIM)
        ),
    );
    let attacks = vec![
        (smuggling.into_bytes(), "POST", PASSWORD.to_owned()),
        (
            get_with(INSTANCE_ID, &underscored_identity()).into_bytes(),
            "GET",
            INSTANCE_ID.to_owned(),
        ),
    ];
    let attacker = thread::spawn(move || keep_alive_loop(hop, ATTACKER, addr, attacks));
    let victim = keep_alive_loop(
        hop,
        VICTIM,
        addr,
        vec![(
            get_with(INSTANCE_ID, "").into_bytes(),
            "GET",
            INSTANCE_ID.to_owned(),
        )],
    );
    let attacker = attacker.join().expect("attacker loop");
    let mut problems = Vec::new();
    for (who, report) in [("victim", &victim), ("attacker", &attacker)] {
        eprintln!(
            "{who}: {} sent, {} own answers, {} foreign, {} other",
            report.sent,
            report.own,
            report.foreign.len(),
            report.other.len()
        );
        if !report.foreign.is_empty() {
            problems.push(format!(
                "the {who} got {} answers not its own, e.g. {:?}",
                report.foreign.len(),
                &report.foreign[..report.foreign.len().min(3)]
            ));
        }
    }
    assert!(victim.own > 0, "the victim was never served: {victim:?}");
    let seen = chain.peer.records();
    let forged: Vec<String> = seen
        .iter()
        .filter(|r| {
            let rec = r.as_recorded();
            !identity_problems(&rec, hop, ATTACKER).is_empty()
                && !identity_problems(&rec, hop, VICTIM).is_empty()
        })
        .map(WsgiRequest::summary)
        .collect();
    if !forged.is_empty() {
        problems.push(format!(
            "the peer parsed {} requests with neither client's identity, e.g. {:?}",
            forged.len(),
            &forged[..forged.len().min(3)]
        ));
    }
    let sent = |r: &&WsgiRequest| {
        [PASSWORD, INSTANCE_ID].contains(&r.path.as_str())
            && ["GET", "POST"].contains(&r.method.as_str())
    };
    let strays: Vec<String> = seen
        .iter()
        .filter(|r| !sent(r))
        .map(WsgiRequest::summary)
        .collect();
    if !strays.is_empty() {
        problems.push(format!(
            "the peer parsed {} requests no client sent, e.g. {:?}",
            strays.len(),
            &strays[..strays.len().min(3)]
        ));
    }
    if seen.len() > victim.sent + attacker.sent {
        problems.push(format!(
            "the peer parsed {} requests; the clients sent {}",
            seen.len(),
            victim.sent + attacker.sent
        ));
    }
    assert!(
        problems.is_empty(),
        "{} behind the {hop:?} hop:\n{}\nlog:\n{}",
        kind.name(),
        problems.join("\n"),
        chain.log_tail()
    );
}
