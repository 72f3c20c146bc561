//! IMDSv2 tokens at the agent, in front of a metadata server that knows nothing of them (the
//! test's recording server, Nova-like): the real `mdproxy ns-proxy` → `mdproxy agent` chain on
//! loopback, both runtimes. The token PUT is answered by the agent (the server never sees it),
//! a valid token reaches the server without the token header, forged, expired and another
//! instance's tokens get 401, `required` refuses requests without one on both trees, keys
//! rotate, and the ns-proxy's socket really carries the hop limit (read back with getsockopt
//! on the ns-proxy's own descriptor, taken with pidfd_getfd). Real clients (botocore,
//! ec2-metadata) run their own token flows through the same chain.

mod common;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use common::peer_socket::{peer_end, ttl};
use common::*;

runtime_tests! {
    the_agent_answers_the_token_put_and_strips_the_token,
    forged_expired_and_other_instances_tokens_get_401,
    required_refuses_requests_without_a_token_on_both_trees,
    agents_sharing_a_key_file_accept_each_others_tokens_and_rotate,
    tokenless_requests_are_counted_per_instance,
    scope_override_and_off,
    the_token_answer_leaves_the_ns_proxy_with_the_hop_limit,
    botocore_and_ec2_metadata_token_flows_through_the_chain,
    the_neutron_backend_applies_the_rules_after_its_lookup,
}

const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";
/// Behind the ns-proxy (the test's client address).
const INSTANCE_A: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e5f";
/// At 10.0.0.6, asked for on the agent's socket directly.
const INSTANCE_B: &str = "7b1f2b63-4d2c-4b9f-8e80-1b2c3d4e5f60";
const KEY_OLD: &str = "old-key-0123456789abcdef";
const KEY_NEW: &str = "new-key-0123456789abcdef";

/// The agent's files: secret, static map, key files.
struct Files {
    dir: TempDir,
    socket: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = TempDir::new();
        let map = format!(
            "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NETWORK}\"]\n\n\
             [[port]]\nnetwork = \"{NETWORK}\"\nip = \"127.0.0.1\"\ndevice_id = \"{INSTANCE_A}\"\n\
             project_id = \"{PROJECT}\"\n\n\
             [[port]]\nnetwork = \"{NETWORK}\"\nip = \"10.0.0.6\"\ndevice_id = \"{INSTANCE_B}\"\n\
             project_id = \"{PROJECT}\"\n"
        );
        fs::write(dir.join("map.toml"), map).unwrap();
        fs::write(dir.join("secret"), "s3cr3t\n").unwrap();
        let socket = dir.join("agent.sock");
        Files { dir, socket }
    }

    /// A key file `name` holding `keys`, one per line, mode 0600.
    fn key_file(&self, name: &str, keys: &[&str]) -> String {
        let path = self.dir.join(name);
        fs::write(&path, keys.join("\n") + "\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path.display().to_string()
    }

    fn agent(&self, rt: Runtime, server: &Upstream, extra: &[String]) -> Agent {
        let mut args = vec![
            format!("--shared-secret-file={}", self.dir.join("secret").display()),
            format!("--static-map={}", self.dir.join("map.toml").display()),
            format!("--metadata-url={}", server.url()),
        ];
        args.extend_from_slice(extra);
        let _ = fs::remove_file(&self.socket);
        Agent::start(rt, &self.socket, &args)
    }
}

/// A Nova-like metadata server: no tokens, 200 with the instance it was told.
fn nova() -> Upstream {
    Upstream::start_tcp(|req| {
        let id = req.header_values("x-instance-id").join(",");
        Reply::Send(ok_response(id.as_bytes()))
    })
}

fn put_token(ttl: &str) -> Vec<u8> {
    format!(
        "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn get_with(path: &str, token: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"
    )
    .into_bytes()
}

/// As an ns-proxy asks the agent, for the instance at `ip`.
fn proxied(ip: &str, path: &str, token: Option<&str>) -> Vec<u8> {
    let token = token.map_or_else(String::new, |t| {
        format!("X-aws-ec2-metadata-token: {t}\r\n")
    });
    format!(
        "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Forwarded-For: {ip}\r\n\
         X-Neutron-Router-ID: {ROUTER}\r\n{token}\r\n"
    )
    .into_bytes()
}

/// A token for the instance behind the proxy.
fn token(proxy: &Proxy, ttl: &str) -> String {
    let resp = request(proxy.addr, &put_token(ttl));
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.body_text()
}

fn the_agent_answers_the_token_put_and_strips_the_token(rt: Runtime) {
    let server = nova();
    let files = Files::new();
    let agent = files.agent(rt, &server, &[]);
    let proxy = Proxy::start(rt, &agent.socket, &[]);
    let resp = request(proxy.addr, &put_token("60"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        header_values(&resp.head, "x-aws-ec2-metadata-token-ttl-seconds"),
        ["60"]
    );
    let tok = resp.body_text();
    assert_eq!(tok.len(), 64, "{tok}");
    // On a keep-alive connection, as botocore does: token, then the data with it.
    let mut client = Client::connect(proxy.addr);
    let again = client.exchange(&put_token("21600"));
    assert_eq!(again.status, 200);
    assert_ne!(again.body_text(), tok, "every token differs");
    let data = client.exchange(&get_with("/latest/meta-data/instance-id", &tok));
    assert_eq!(
        (data.status, data.body_text()),
        (200, INSTANCE_A.to_owned()),
        "{data:?}"
    );
    let seen = server.wait_for(1);
    assert_eq!(
        seen.len(),
        1,
        "the token PUTs never reached the server: {seen:?}"
    );
    assert_eq!(seen[0].head.split(' ').next(), Some("GET"));
    assert_eq!(seen[0].path(), "/latest/meta-data/instance-id");
    assert!(
        seen[0].header_values("x-aws-ec2-metadata-token").is_empty(),
        "{}",
        seen[0].head
    );
    assert_eq!(seen[0].header_values("x-instance-id"), [INSTANCE_A]);
    // TTL outside 1..21600: 400; another method on the token path: 405 (answered here too).
    for ttl in ["0", "21601", "ten"] {
        assert_eq!(request(proxy.addr, &put_token(ttl)).status, 400, "{ttl}");
    }
    let no_ttl = b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(request(proxy.addr, no_ttl).status, 400);
    let wrong = request(proxy.addr, &get("/latest/api/token"));
    assert_eq!(wrong.status, 405, "{wrong:?}");
    assert_eq!(header_values(&wrong.head, "allow"), ["PUT"]);
    assert_eq!(server.count(), 1, "none of these reached the server");
}

fn forged_expired_and_other_instances_tokens_get_401(rt: Runtime) {
    let server = nova();
    let files = Files::new();
    let agent = files.agent(rt, &server, &[]);
    let proxy = Proxy::start(rt, &agent.socket, &[]);
    let tok = token(&proxy, "1");
    let path = "/latest/meta-data/instance-id";
    let forged = "A".repeat(64);
    for bad in [forged.as_str(), "short", &tok[..63]] {
        assert_eq!(
            request(proxy.addr, &get_with(path, bad)).status,
            401,
            "{bad}"
        );
    }
    // Instance B (at 10.0.0.6) presenting A's token: as unknown as a forged one.
    let other = request_unix(&agent.socket, &proxied("10.0.0.6", path, Some(&tok)));
    assert_eq!(other.status, 401, "{other:?}");
    let b_alone = request_unix(&agent.socket, &proxied("10.0.0.6", path, None));
    assert_eq!(
        (b_alone.status, b_alone.body_text()),
        (200, INSTANCE_B.to_owned())
    );
    assert_eq!(
        server.count(),
        1,
        "only B's tokenless request reached the server"
    );
    // Expired: a 1-second token stops working (waited for, bounded).
    let expired = eventually(|| request(proxy.addr, &get_with(path, &tok)).status == 401);
    assert!(expired, "a 1 s token was still accepted after {WAIT:?}");
}

fn required_refuses_requests_without_a_token_on_both_trees(rt: Runtime) {
    let server = nova();
    let files = Files::new();
    let agent = files.agent(rt, &server, &["--imdsv2=required".to_owned()]);
    let proxy = Proxy::start(rt, &agent.socket, &[]);
    for path in [
        "/latest/meta-data/instance-id",
        "/latest/user-data",
        "/openstack/latest/meta_data.json",
        "/openstack/latest/user_data",
        "/openstack/latest/password",
        "/openstack/latest/vendor_data2.json",
        "/",
    ] {
        let resp = request(proxy.addr, &get(path));
        assert_eq!(resp.status, 401, "{path}: {resp:?}");
    }
    assert_eq!(server.count(), 0);
    let tok = token(&proxy, "60");
    let resp = request(
        proxy.addr,
        &get_with("/openstack/latest/meta_data.json", &tok),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = &server.wait_for(1)[0];
    assert!(seen.header_values("x-aws-ec2-metadata-token").is_empty());
}

/// Two agents given one key file accept each other's tokens (stateless: nothing shared but
/// the key); a rotation keeps the old key's tokens valid while the new key signs.
fn agents_sharing_a_key_file_accept_each_others_tokens_and_rotate(rt: Runtime) {
    let server = nova();
    let files = Files::new();
    let old = files.key_file("old.key", &[KEY_OLD]);
    let agent = files.agent(rt, &server, &[format!("--token-key-file={old}")]);
    let proxy = Proxy::start(rt, &agent.socket, &[]);
    let old_tok = token(&proxy, "600");
    drop(proxy);
    drop(agent);
    let path = "/latest/meta-data/instance-id";

    // Restarted with the new key first and the old one second: both verify, the new signs.
    let rotating = files.key_file("rotating.key", &[KEY_NEW, KEY_OLD]);
    let agent = files.agent(rt, &server, &[format!("--token-key-file={rotating}")]);
    let proxy = Proxy::start(rt, &agent.socket, &[]);
    assert_eq!(
        request(proxy.addr, &get_with(path, &old_tok)).status,
        200,
        "old key verifies"
    );
    let new_tok = token(&proxy, "600");
    assert_eq!(request(proxy.addr, &get_with(path, &new_tok)).status, 200);
    drop(proxy);
    drop(agent);

    // The old key dropped: its tokens are gone, the new key's stay valid.
    let new = files.key_file("new.key", &[KEY_NEW]);
    let agent = files.agent(rt, &server, &[format!("--token-key-file={new}")]);
    let proxy = Proxy::start(rt, &agent.socket, &[]);
    assert_eq!(request(proxy.addr, &get_with(path, &old_tok)).status, 401);
    assert_eq!(
        request(proxy.addr, &get_with(path, &new_tok)).status,
        200,
        "the new key signed it"
    );

    // A key file that is not one stops the start (exit 2) with the reason.
    let short = files.key_file("short.key", &["short"]);
    let (status, _, err) = run_binary(&[
        "agent",
        &format!(
            "--shared-secret-file={}",
            files.dir.join("secret").display()
        ),
        &format!("--static-map={}", files.dir.join("map.toml").display()),
        &format!("--token-key-file={short}"),
        &format!("--listen-socket={}", files.dir.join("other.sock").display()),
    ]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 1") && err.contains("fewer than 16 bytes"),
        "{err}"
    );
    assert!(!err.contains("short\n"), "never the key itself: {err}");
}

fn tokenless_requests_are_counted_per_instance(rt: Runtime) {
    let server = nova();
    let files = Files::new();
    let metrics_port = free_port();
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let agent = files.agent(rt, &server, &[format!("--metrics-listen={metrics}")]);
    assert!(
        eventually(|| TcpStream::connect(metrics).is_ok()),
        "{}",
        agent.log()
    );
    let proxy = Proxy::start(rt, &agent.socket, &[]);
    let tok = token(&proxy, "60");
    for _ in 0..3 {
        assert_eq!(request(proxy.addr, &get("/latest/meta-data/")).status, 200);
    }
    assert_eq!(
        request(proxy.addr, &get_with("/latest/meta-data/", &tok)).status,
        200
    );
    assert_eq!(
        request_unix(&agent.socket, &proxied("10.0.0.6", "/", None)).status,
        200
    );
    let text = request(metrics, &get("/metrics")).body_text();
    let series = |instance: &str| {
        let name = format!(
            "mdproxy_imds_no_token_requests_total{{role=\"agent\",instance=\"{instance}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&name).map(str::to_owned))
    };
    assert_eq!(series(INSTANCE_A).as_deref(), Some("3"), "{text}");
    assert_eq!(series(INSTANCE_B).as_deref(), Some("1"), "{text}");
}

/// `--imdsv2-scope` and the static map's own `imdsv2` per scope; `off` relays token requests
/// and headers to the metadata server as before (mdproxy server's tokens behind the agent).
fn scope_override_and_off(rt: Runtime) {
    let server = nova();
    let files = Files::new();
    let required = [
        "--imdsv2=off".to_owned(),
        format!("--imdsv2-scope={ROUTER}=required"),
    ];
    let agent = files.agent(rt, &server, &required);
    let proxy = Proxy::start(rt, &agent.socket, &[]);
    assert_eq!(request(proxy.addr, &get("/latest/meta-data/")).status, 401);
    drop(proxy);
    drop(agent);

    // The map says off for the router: the PUT and the token header go to the server.
    let map = fs::read_to_string(files.dir.join("map.toml")).unwrap();
    let map = map.replacen("networks = [", "imdsv2 = \"off\"\nnetworks = [", 1);
    fs::write(files.dir.join("map.toml"), map).unwrap();
    let agent = files.agent(rt, &server, &required);
    let proxy = Proxy::start(rt, &agent.socket, &[]);
    let resp = request(proxy.addr, &put_token("60"));
    assert_eq!(resp.status, 200, "the recording server's answer: {resp:?}");
    let with = request(proxy.addr, &get_with("/latest/meta-data/", "server-token"));
    assert_eq!(with.status, 200);
    let seen = server.wait_for(2);
    assert_eq!(
        seen[0].head.split(' ').next(),
        Some("PUT"),
        "{}",
        seen[0].head
    );
    assert_eq!(
        seen[1].header_values("x-aws-ec2-metadata-token"),
        ["server-token"]
    );
}

/// With Neutron the instance is known only once the lookup answers (the route is pending
/// meanwhile): the token rules are applied then, to what the request carried. No cache
/// (`--cache-ttl=0`), so every request waits for a Neutron query.
fn the_neutron_backend_applies_the_rules_after_its_lookup(rt: Runtime) {
    let os = FakeOpenStack::start(
        None,
        &[(ROUTER, &[NETWORK])],
        &[
            FakePort::new(NETWORK, "10.0.0.5", INSTANCE_A, PROJECT),
            FakePort::new(NETWORK, "10.0.0.6", INSTANCE_B, PROJECT),
        ],
    );
    let server = nova();
    let dir = TempDir::new();
    fs::write(dir.join("secret"), "s3cr3t\n").unwrap();
    let args = [
        "--backend=neutron".to_owned(),
        format!("--neutron-url={}", os.neutron_url()),
        "--cache-ttl=0".to_owned(),
        "--negative-cache-ttl=0".to_owned(),
        "--imdsv2=required".to_owned(),
        format!("--shared-secret-file={}", dir.join("secret").display()),
        format!("--metadata-url={}", server.url()),
    ];
    let agent = Agent::start(rt, &dir.join("agent.sock"), &args);
    let path = "/latest/meta-data/instance-id";
    let put = format!(
        "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.5\r\n\
         X-Neutron-Router-ID: {ROUTER}\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let resp = request_unix(&agent.socket, put.as_bytes());
    assert_eq!(resp.status, 200, "{resp:?}\n{}", agent.log());
    let tok = resp.body_text();
    let ok = request_unix(&agent.socket, &proxied("10.0.0.5", path, Some(&tok)));
    assert_eq!((ok.status, ok.body_text()), (200, INSTANCE_A.to_owned()));
    let other = request_unix(&agent.socket, &proxied("10.0.0.6", path, Some(&tok)));
    assert_eq!(other.status, 401, "{other:?}");
    let none = request_unix(&agent.socket, &proxied("10.0.0.6", path, None));
    assert_eq!(none.status, 401, "{none:?}");
    let unknown = request_unix(&agent.socket, &proxied("10.0.0.99", path, Some(&tok)));
    assert_eq!(
        unknown.status, 404,
        "no instance, no token question: {unknown:?}"
    );
    assert_eq!(
        server.count(),
        1,
        "only the valid request reached the server"
    );
    assert!(!server.wait_for(1)[0]
        .head
        .to_ascii_lowercase()
        .contains("x-aws-ec2-metadata-token"));
}

fn the_token_answer_leaves_the_ns_proxy_with_the_hop_limit(rt: Runtime) {
    let server = nova();
    let files = Files::new();
    let agent = files.agent(rt, &server, &[]);
    for (flags, want) in [(&[][..], 1), (&["--token-hop-limit=2"][..], 2)] {
        let proxy = Proxy::start(rt, &agent.socket, flags);
        let mut client = Client::connect(proxy.addr);
        assert_eq!(client.exchange(&get("/latest/meta-data/")).status, 200);
        let stream = TcpStream::connect(proxy.addr).unwrap();
        // A plain request leaves the system's TTL (64 unless sysctl says otherwise).
        let mut plain = Client::from_tcp(stream.try_clone().unwrap());
        assert_eq!(plain.exchange(&get("/latest/meta-data/")).status, 200);
        let default = ttl(&peer_end(proxy.pid(), &stream));
        assert!(default > 2, "{default}");
        let tok = plain.exchange(&put_token("60"));
        assert_eq!(tok.status, 200);
        assert_eq!(ttl(&peer_end(proxy.pid(), &stream)), want, "{flags:?}");
        // Loopback has no router in between: the answer arrived with TTL 1 all the same.
        assert_eq!(tok.body_text().len(), 64);
    }
    let (status, _, err) = run_binary(&["ns-proxy", "--router-id", ROUTER, "--token-hop-limit=65"]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("1 to 64"), "{err}");
}

/// The real clients' own token flows (pip-installed in the lenient peers' venvs; skipped
/// with a line unless MDPROXY_LENIENT_PEERS=required): botocore's IMDSFetcher and
/// ec2-metadata, each PUT a token and GET with it, through ns-proxy → agent → a server that
/// knows no tokens; the server sees their GETs, no PUT and no token header.
fn botocore_and_ec2_metadata_token_flows_through_the_chain(rt: Runtime) {
    let Some(python) = imds_clients_python() else {
        return;
    };
    let server = nova();
    let files = Files::new();
    let agent = files.agent(rt, &server, &["--imdsv2=required".to_owned()]);
    let proxy = Proxy::start(rt, &agent.socket, &[]);
    let base = format!("http://{}", proxy.addr);
    let out = Command::new(&python)
        .args(["-c", CLIENTS, &base])
        .output()
        .expect("run the clients' python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("botocore token 64 {INSTANCE_A}"),
            format!("ec2-metadata {INSTANCE_A}"),
        ],
        "{}",
        agent.log()
    );
    let seen = server.wait_for(2);
    for s in &seen {
        assert_eq!(s.head.split(' ').next(), Some("GET"), "{}", s.head);
        assert!(
            s.header_values("x-aws-ec2-metadata-token").is_empty(),
            "{}",
            s.head
        );
    }
}

/// botocore's fetcher (the methods its credential and region fetchers use) and ec2-metadata
/// pointed at the ns-proxy; each prints what it got.
const CLIENTS: &str = r#"
import sys
base = sys.argv[1]
from botocore.utils import IMDSFetcher
f = IMDSFetcher(timeout=10, num_attempts=1, base_url=base)
token = f._fetch_metadata_token()
r = f._get_request("/latest/meta-data/instance-id", None, token)
print("botocore token", len(token), r.text)
from ec2_metadata import EC2Metadata
m = EC2Metadata()
m.service_url = base + "/latest/"
m.metadata_url = m.service_url + "meta-data/"
print("ec2-metadata", m.instance_id)
"#;

/// The venv with botocore and ec2-metadata that `scripts/lenient-peers.sh` makes (or
/// `MDPROXY_IMDS_CLIENTS_PYTHON`).
fn imds_clients_python() -> Option<PathBuf> {
    let python = std::env::var_os("MDPROXY_IMDS_CLIENTS_PYTHON").map_or_else(
        || {
            let bin = PathBuf::from(env!("CARGO_BIN_EXE_mdproxy"));
            let target = bin.parent().and_then(|p| p.parent()).map(PathBuf::from);
            target
                .unwrap_or_default()
                .join("lenient-peers/imds-clients/bin/python")
        },
        PathBuf::from,
    );
    if python.is_file() {
        return Some(python);
    }
    let required = std::env::var("MDPROXY_LENIENT_PEERS").is_ok_and(|v| v == "required");
    assert!(
        !required,
        "{} missing and MDPROXY_LENIENT_PEERS=required; run scripts/lenient-peers.sh",
        python.display()
    );
    eprintln!(
        "skipped: botocore / ec2-metadata not installed ({}); run scripts/lenient-peers.sh",
        python.display()
    );
    None
}
