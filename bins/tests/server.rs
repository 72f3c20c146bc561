//! End-to-end tests of `mdproxy server`: the real binary on loopback TCP, an instance
//! directory of its own, and requests signed as an agent signs them, with the test's own HMAC.
//! Facts: Nova's metadata API (reference §C), IMDSv2 as issue 5 specifies it.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use common::*;

runtime_tests! {
    connection_limits_answer_503,
    signed_requests_get_both_trees,
    identity_errors_answer_as_nova,
    new_and_removed_files_are_noticed_by_the_rescan,
    sighup_rereads_the_files,
    broken_file_is_skipped_and_logged_with_its_line,
    password_is_persisted_and_survives_a_restart,
    password_state_files_are_not_written_or_read_through_links,
    imdsv2_required_needs_a_token,
    imdsv2_off_answers_404_to_the_token_put,
    direct_mode_identifies_by_address,
    bad_configuration_exits_2,
    help_names_the_flags,
}

/// The sample instance (also the demo's and the core's golden one).
const SAMPLE: &str = include_str!("../../core/tests/golden/instance.toml");
const UUID: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
const PROJECT: &str = "8a5ce0e4f2b84d8b9b1e2c3d4f5a6b7c";
const EC2_ID: &str = "i-0000002a";
/// Written with a trailing newline, which is not part of the key.
const SECRET: &str = "s3cr3t";

/// `hex(HMAC-SHA256(SECRET, id))`, computed here, not by mdproxy.
fn sign(id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(id.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request as an agent sends it for `id` of `project`, signed with `signature`; `tail`
/// follows the identity headers (more headers, the blank line, a body).
fn as_agent(method: &str, path: &str, id: &str, project: &str, sig: &str, tail: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Forwarded-For: 10.0.0.5\r\n\
         X-Instance-ID: {id}\r\nX-Tenant-ID: {project}\r\nX-Instance-ID-Signature: {sig}\r\n{tail}"
    )
    .into_bytes()
}

/// A correctly signed request for instance `uuid` (of [`PROJECT`]).
fn signed(method: &str, path: &str, uuid: &str, tail: &str) -> Vec<u8> {
    as_agent(method, path, uuid, PROJECT, &sign(uuid), tail)
}

/// A correctly signed GET for the sample instance, with `extra` header lines.
fn signed_get(path: &str, extra: &str) -> Vec<u8> {
    signed("GET", path, UUID, &format!("{extra}\r\n"))
}

/// A minimal instance file.
fn instance(uuid: &str, extra: &str) -> String {
    format!("uuid = \"{uuid}\"\nproject_id = \"{PROJECT}\"\n{extra}")
}

/// The server's files: its secret, its instance directory (holding the sample) and its state
/// directory (not created: the first password does).
struct Files {
    _dir: TempDir,
    instances: PathBuf,
    secret: PathBuf,
    state: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = TempDir::new();
        let (instances, secret) = (dir.join("instances"), dir.join("secret"));
        fs::create_dir(&instances).unwrap();
        fs::write(instances.join(format!("{UUID}.toml")), SAMPLE).unwrap();
        fs::write(&secret, format!("{SECRET}\n")).unwrap();
        Files {
            instances,
            secret,
            state: dir.join("state"),
            _dir: dir,
        }
    }

    fn sample(&self) -> PathBuf {
        self.instances.join(format!("{UUID}.toml"))
    }

    /// Puts `text` in the directory as `name` the way tools should: a dot-file renamed in.
    fn drop_in(&self, name: &str, text: &str) {
        let tmp = self.instances.join(format!(".{name}.partial"));
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, self.instances.join(name)).unwrap();
    }

    /// `mdproxy server` on these files and a free loopback port, plus `extra` flags.
    fn start(&self, rt: Runtime, extra: &[&str]) -> Proxy {
        Proxy::start_with(rt, |port| {
            let mut args = vec![
                "server".to_owned(),
                format!("--listen=127.0.0.1:{port}"),
                format!("--instances={}", self.instances.display()),
                format!("--shared-secret-file={}", self.secret.display()),
                format!("--state-dir={}", self.state.display()),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        })
    }
}

fn assert_reply(resp: &Response, status: u16, body: &str) {
    assert_eq!(
        (resp.status, resp.body_text().as_str()),
        (status, body),
        "{resp:?}"
    );
}

fn signed_requests_get_both_trees(rt: Runtime) {
    let files = Files::new();
    let server = files.start(rt, &[]);
    let resp = request(
        server.addr,
        &signed_get("/latest/meta-data/instance-id", ""),
    );
    assert_reply(&resp, 200, EC2_ID);
    assert_eq!(header_values(&resp.head, "content-type"), ["text/plain"]);

    let resp = request(
        server.addr,
        &signed_get("/openstack/latest/meta_data.json", ""),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        header_values(&resp.head, "content-type"),
        ["application/json"]
    );
    let json: serde_json::Value = serde_json::from_slice(&resp.body).expect("valid JSON");
    assert_eq!(json["uuid"], UUID, "{json}");
    assert_eq!(json["hostname"], "demo-vm.novalocal", "{json}");

    // The signature as Python's hmac module (Neutron's agent) computes it is accepted too.
    let code = "import hashlib, hmac, sys; \
                print(hmac.new(b's3cr3t', sys.argv[1].encode(), hashlib.sha256).hexdigest())";
    let out = Command::new("python3")
        .args(["-c", code, UUID])
        .output()
        .unwrap();
    let python = String::from_utf8(out.stdout).unwrap();
    assert_eq!(python.trim(), sign(UUID));
    let req = as_agent(
        "GET",
        "/latest/meta-data/",
        UUID,
        PROJECT,
        python.trim(),
        "\r\n",
    );
    let resp = request(server.addr, &req);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body_text().contains("instance-id\n"), "{resp:?}");
}

fn identity_errors_answer_as_nova(rt: Runtime) {
    let files = Files::new();
    let server = files.start(rt, &[]);
    let path = "/latest/meta-data/instance-id";
    let wrong = as_agent(
        "GET",
        path,
        UUID,
        PROJECT,
        &sign("another-instance"),
        "\r\n",
    );
    assert_reply(
        &request(server.addr, &wrong),
        403,
        "Invalid proxy request signature.",
    );

    let missing = format!("GET {path} HTTP/1.1\r\nHost: h\r\nX-Tenant-ID: {PROJECT}\r\n\r\n");
    let resp = request(server.addr, missing.as_bytes());
    assert_reply(&resp, 400, "X-Instance-ID header is missing from request.");

    let other_project = as_agent("GET", path, UUID, "another-project", &sign(UUID), "\r\n");
    assert_eq!(request(server.addr, &other_project).status, 404);
    let unknown = "00000000-0000-4000-8000-000000000000";
    let req = signed("GET", path, unknown, "\r\n");
    assert_eq!(request(server.addr, &req).status, 404);
    // One access-log line per request.
    server.wait_for_log(&format!("\"GET {path} HTTP/1.1\" status: 403"));
    server.wait_for_log(&format!("\"GET {path} HTTP/1.1\" status: 400"));
}

/// Waits (bounded) until a GET of `path` signed for `uuid` answers `status`.
fn wait_for_status(server: &Proxy, uuid: &str, path: &str, status: u16) {
    let req = signed("GET", path, uuid, "\r\n");
    assert!(
        eventually(|| request(server.addr, &req).status == status),
        "{uuid} {path} never answered {status}:\n{}",
        server.log()
    );
}

fn new_and_removed_files_are_noticed_by_the_rescan(rt: Runtime) {
    let files = Files::new();
    let server = files.start(rt, &["--rescan-interval=0.1"]);
    let new = "7b1f2b63-4d2c-4b9f-8e80-1b2c3d4e5f60";
    let path = "/latest/meta-data/instance-id";
    let req = signed("GET", path, new, "\r\n");
    assert_eq!(request(server.addr, &req).status, 404);
    let json = format!(
        "{{\"uuid\": \"{new}\", \"project_id\": \"{PROJECT}\", \"ec2_id\": \"i-00000042\"}}"
    );
    files.drop_in(&format!("{new}.json"), &json);
    wait_for_status(&server, new, path, 200);
    assert_reply(&request(server.addr, &req), 200, "i-00000042");
    // The others kept serving, and a removed file stops serving.
    assert_reply(&request(server.addr, &signed_get(path, "")), 200, EC2_ID);
    fs::remove_file(files.instances.join(format!("{new}.json"))).unwrap();
    wait_for_status(&server, new, path, 404);
}

fn sighup_rereads_the_files(rt: Runtime) {
    let files = Files::new();
    let server = files.start(rt, &["--rescan-interval=3600"]);
    let path = "/latest/meta-data/instance-id";
    // A served request proves the loop runs (and catches signals).
    assert_reply(&request(server.addr, &signed_get(path, "")), 200, EC2_ID);
    let changed = SAMPLE.replace("ec2_id = \"i-0000002a\"", "ec2_id = \"i-000000ff\"");
    files.drop_in(&format!("{UUID}.toml"), &changed);
    server.signal(libc::SIGHUP);
    let served = || request(server.addr, &signed_get(path, "")).body_text() == "i-000000ff";
    assert!(eventually(served), "{}", server.log());
}

fn broken_file_is_skipped_and_logged_with_its_line(rt: Runtime) {
    let files = Files::new();
    let broken = instance(
        "7b1f2b63-4d2c-4b9f-8e80-1b2c3d4e5f60",
        "hostnme = \"typo\"\n",
    );
    files.drop_in("broken.toml", &broken);
    let server = files.start(rt, &["--rescan-interval=0.1"]);
    let at = format!("{}: line 3", files.instances.join("broken.toml").display());
    let log = server.wait_for_log(&at);
    let line = log.lines().find(|l| l.contains(&at)).unwrap();
    assert!(line.contains("ERROR") && line.contains("hostnme"), "{line}");
    let path = "/latest/meta-data/instance-id";
    assert_reply(&request(server.addr, &signed_get(path, "")), 200, EC2_ID);
    // Broken while running: logged, and the sample keeps its last good version.
    files.drop_in(&format!("{UUID}.toml"), "uuid = \n");
    let at = format!("{}: line 1", files.sample().display());
    server.wait_for_log(&at);
    assert_reply(&request(server.addr, &signed_get(path, "")), 200, EC2_ID);
    assert_eq!(
        server.log().matches(&at).count(),
        1,
        "logged once per change"
    );
}

/// The sample's password, as the server answers it.
fn password(server: &Proxy) -> Response {
    request(server.addr, &signed_get("/openstack/latest/password", ""))
}

/// An instance file a rewrite through a JSON value would change: keys out of the usual
/// order, and an integer no `f64` holds.
fn odd_json(uuid: &str) -> String {
    format!(
        "{{\"project_id\": \"{PROJECT}\",\n  \"vendor_data\": {{\"zeta\": 1, \"alpha\": \
         12345678901234567890123}},\n  \"uuid\": \"{uuid}\"  }}\n"
    )
}

const JSON_UUID: &str = "0e7a2c41-9b3d-4f6e-a1c8-5d2b7e9f0a13";

/// The password of `uuid`, as the server answers it.
fn password_of(server: &Proxy, uuid: &str) -> Response {
    let get = signed("GET", "/openstack/latest/password", uuid, "\r\n");
    request(server.addr, &get)
}

fn password_is_persisted_and_survives_a_restart(rt: Runtime) {
    let files = Files::new();
    let json = files.instances.join("odd.json");
    fs::write(&json, odd_json(JSON_UUID)).unwrap();
    let before = (fs::read(&json).unwrap(), fs::read(files.sample()).unwrap());
    let mut server = files.start(rt, &[]);
    assert_reply(&password(&server), 200, "");
    let body = "Content-Length: 12\r\n\r\nencrypted\"pw";
    let post = signed("POST", "/openstack/latest/password", JSON_UUID, body);
    assert_reply(&request(server.addr, &post), 200, "");
    assert_reply(&password_of(&server, JSON_UUID), 200, "encrypted\"pw");
    // Set once, as Nova.
    assert_eq!(request(server.addr, &post).status, 409);
    // At once: a password accepted just before SIGTERM is saved before the exit.
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log());
    assert!(server
        .log()
        .contains(&format!("saved the password of instance {JSON_UUID}")));

    let after = (fs::read(&json).unwrap(), fs::read(files.sample()).unwrap());
    assert!(
        before == after,
        "an instance file changed:\n{}",
        String::from_utf8_lossy(&after.0)
    );
    let saved = files.state.join(format!("{JSON_UUID}.password"));
    assert_eq!(fs::read_to_string(&saved).unwrap(), "encrypted\"pw");
    let mode = fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    let names: Vec<String> = fs::read_dir(&files.state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [format!("{JSON_UUID}.password")],
        "only the password file"
    );

    let server = files.start(rt, &[]);
    assert_reply(&password_of(&server, JSON_UUID), 200, "encrypted\"pw");
    assert_eq!(
        request(server.addr, &post).status,
        409,
        "set once, across restarts"
    );
    assert_reply(&password(&server), 200, "");
    let again = (fs::read(&json).unwrap(), fs::read(files.sample()).unwrap());
    assert!(
        before == again,
        "an instance file changed after the restart"
    );
}

fn password_state_files_are_not_written_or_read_through_links(rt: Runtime) {
    let files = Files::new();
    let secret_bytes = fs::read(&files.secret).unwrap();
    fs::create_dir(&files.state).unwrap();
    // A link where the sample's password file goes, and where a temporary of a predictable
    // name would go, both to a file the server must neither serve nor overwrite.
    let final_path = files.state.join(format!("{UUID}.password"));
    symlink(&files.secret, &final_path).unwrap();
    symlink(
        &files.secret,
        files.state.join(format!(".{UUID}.password.tmp")),
    )
    .unwrap();
    let server = files.start(rt, &[]);
    server.wait_for_log("a symbolic link, not followed");
    assert_reply(&password(&server), 200, "");
    let body = "Content-Length: 2\r\n\r\npw";
    let post = signed("POST", "/openstack/latest/password", UUID, body);
    assert_reply(&request(server.addr, &post), 200, "");
    server.wait_for_log(&format!("saved the password of instance {UUID}"));
    assert_eq!(
        fs::read(&files.secret).unwrap(),
        secret_bytes,
        "written through the link"
    );
    let meta = fs::symlink_metadata(&final_path).unwrap();
    assert!(
        meta.is_file(),
        "the link was not replaced by a file: {meta:?}"
    );
    assert_eq!(fs::read_to_string(&final_path).unwrap(), "pw");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

const TTL_60: &str = "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n";

/// A token for the sample instance, through the server.
fn token(server: &Proxy) -> String {
    let put = signed("PUT", "/latest/api/token", UUID, TTL_60);
    let resp = request(server.addr, &put);
    assert_eq!(resp.status, 200, "{resp:?}");
    let ttl = header_values(&resp.head, "x-aws-ec2-metadata-token-ttl-seconds");
    assert_eq!(ttl, ["60"]);
    resp.body_text()
}

fn imdsv2_required_needs_a_token(rt: Runtime) {
    let files = Files::new();
    let server = files.start(rt, &["--imdsv2=required"]);
    let path = "/latest/meta-data/instance-id";
    let token = token(&server);
    assert!(!token.is_empty());
    assert_eq!(request(server.addr, &signed_get(path, "")).status, 401);
    let with = format!("X-aws-ec2-metadata-token: {token}\r\n");
    assert_reply(&request(server.addr, &signed_get(path, &with)), 200, EC2_ID);
    let forged = "X-aws-ec2-metadata-token: AAAA\r\n";
    assert_eq!(request(server.addr, &signed_get(path, forged)).status, 401);
}

fn imdsv2_off_answers_404_to_the_token_put(rt: Runtime) {
    let files = Files::new();
    let server = files.start(rt, &["--imdsv2", "off"]);
    let put = signed("PUT", "/latest/api/token", UUID, TTL_60);
    assert_eq!(request(server.addr, &put).status, 404);
    let path = "/latest/meta-data/instance-id";
    assert_reply(&request(server.addr, &signed_get(path, "")), 200, EC2_ID);
}

fn direct_mode_identifies_by_address(rt: Runtime) {
    let dir = TempDir::new();
    let local = instance(
        UUID,
        "ec2_id = \"i-00000001\"\nfixed_ips = [\"127.0.0.1\"]\n",
    );
    fs::write(dir.join("local.toml"), local).unwrap();
    let instances = format!("--instances={}", dir.join("").display());
    let server = Proxy::start_with(rt, |port| {
        let listen = format!("--listen=127.0.0.1:{port}");
        vec![
            "server".to_owned(),
            "--direct".to_owned(),
            listen,
            instances.clone(),
        ]
    });
    let resp = request(server.addr, &get("/latest/meta-data/instance-id"));
    assert_reply(&resp, 200, "i-00000001");
}

/// `mdproxy server <args>` must exit 2 saying `want`.
fn assert_config_error(rt: Runtime, args: &[&str], want: &str) {
    let runtime = format!("--runtime={}", rt.name());
    let all: Vec<&str> = ["server", "--listen=127.0.0.1:0", &runtime]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let (status, _, stderr) = run_binary(&all);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(want),
        "{args:?}: wanted {want:?} in {stderr}"
    );
}

fn bad_configuration_exits_2(rt: Runtime) {
    let files = Files::new();
    let secret = format!("--shared-secret-file={}", files.secret.display());
    let instances = format!("--instances={}", files.instances.display());
    assert_config_error(rt, &[&secret], "--instances");
    assert_config_error(rt, &[&instances], "--shared-secret-file");
    assert_config_error(rt, &[&instances, &secret, "--imdsv2=v3"], "--imdsv2");
    assert_config_error(
        rt,
        &[&secret, "--instances=/nonexistent/instances"],
        "/nonexistent/instances",
    );
    let missing = "--shared-secret-file=/nonexistent/secret";
    assert_config_error(rt, &[&instances, missing], "/nonexistent/secret");
    // A state directory that is not one: its passwords cannot be known.
    let state = format!("--state-dir={}", files.secret.display());
    assert_config_error(rt, &[&instances, &secret, &state], "--state-dir");
    assert!(Path::new(&files.instances).exists());
}

fn help_names_the_flags(_rt: Runtime) {
    let flags = [
        "--listen",
        "--instances",
        "--state-dir",
        "--rescan-interval",
        "--secret-grace",
        "--shared-secret-file",
        "--direct",
        "--imdsv2",
        "--dhcp-domain",
        "--timeout-head",
        "--drain-timeout",
        "--pid-file",
        "--user",
        "--log-file",
    ];
    assert_help_mentions(&["server", "--help"], &flags);
    assert_help_mentions(&["--help"], &["server", "demo"]);
}

/// `--max-conns` and `--max-conns-per-ip`: one connection past either is answered 503 and
/// closed; the connections inside the limits keep being served.
fn connection_limits_answer_503(rt: Runtime) {
    let dir = TempDir::new();
    let instances = dir.join("instances");
    fs::create_dir(&instances).unwrap();
    for (flag, n) in [("--max-conns", 2), ("--max-conns-per-ip", 2)] {
        let server = Proxy::start_with(rt, |port| {
            vec![
                "server".to_owned(),
                format!("--listen=127.0.0.1:{port}"),
                format!("--instances={}", instances.display()),
                format!("--state-dir={}", dir.join("state").display()),
                "--direct".to_owned(),
                format!("{flag}={n}"),
            ]
        });
        // Closed connections (the start-up probe's) free their slot once the server has seen
        // them go: take each slot as soon as it is free.
        let mut open: Vec<Client> = Vec::new();
        while open.len() < n {
            let mut held = None;
            assert!(eventually(|| {
                let mut c = Client::connect(server.addr);
                let ok = c.exchange(&get("/")).status == 200;
                held = ok.then_some(c);
                ok
            }));
            open.extend(held);
        }
        let resp = request(server.addr, &get("/"));
        assert_eq!(resp.status, 503, "{flag}: {resp:?}");
        assert_eq!(open[0].exchange(&get("/")).status, 200, "{flag}");
        drop(open);
        assert!(
            eventually(|| request(server.addr, &get("/")).status == 200),
            "{flag}"
        );
    }
}
