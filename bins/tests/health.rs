//! `/live` and `/ready` on the admin listener (`--metrics-listen`): live while every event loop
//! turns; ready once started and while the lookup backend can answer — checked with the OVN
//! backend against a real Southbound `ovsdb-server` that is absent at start, comes, goes and
//! comes back.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use common::ovn::Ovn;
use common::*;

runtime_tests! {
    a_static_agent_is_live_and_ready,
    readiness_follows_the_southbound,
    the_admin_listener_may_be_a_unix_socket,
}

/// The status and body of `GET path` on the admin listener.
fn probe(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = request(addr, &get(path));
    (resp.status, resp.body_text())
}

/// Waits (bounded) until `GET path` answers `status` with a body containing `text`.
fn expect(addr: SocketAddr, path: &str, status: u16, text: &str, log: impl Fn() -> String) {
    let mut last = (0, String::new());
    let ok = eventually(|| {
        last = probe(addr, path);
        last.0 == status && last.1.contains(text)
    });
    assert!(
        ok,
        "{path}: got {last:?}, want {status} with {text:?}\n{}",
        log()
    );
}

fn start_agent(rt: Runtime, dir: &TempDir, backend: &[String]) -> (Agent, SocketAddr) {
    let secret: PathBuf = dir.join("secret");
    std::fs::write(&secret, "s3cr3t\n").unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut args = vec![
        format!("--shared-secret-file={}", secret.display()),
        format!("--metrics-listen={admin}"),
        "--metadata-url=http://127.0.0.1:9".to_owned(),
    ];
    args.extend_from_slice(backend);
    let agent = Agent::start(rt, &dir.join("agent.sock"), &args);
    assert!(
        eventually(|| TcpStream::connect(admin).is_ok()),
        "{}",
        agent.running.log()
    );
    (agent, admin)
}

fn a_static_agent_is_live_and_ready(rt: Runtime) {
    let dir = TempDir::new();
    let map = dir.join("map.toml");
    std::fs::write(&map, "").unwrap();
    let backend = [format!("--static-map={}", map.display())];
    let (agent, admin) = start_agent(rt, &dir, &backend);
    let log = || agent.running.log();
    expect(
        admin,
        "/live",
        200,
        "{\"live\":true,\"checks\":{\"loops\":\"ok\"}}",
        log,
    );
    let want = "{\"ready\":true,\"checks\":{\"started\":\"ok\",\"loops\":\"ok\"}}";
    expect(admin, "/ready", 200, want, log);
    let resp = request(admin, &get("/ready"));
    assert_eq!(
        header_values(&resp.head, "content-type"),
        ["application/json"]
    );
    let (status, body) = probe(admin, "/nothing");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/live") && body.contains("/ready"), "{body}");
}

/// `--admin-listen /path`: the same answers on a Unix socket that only its owner may connect
/// to; a stale socket file is replaced, and the file is removed when the agent exits.
fn the_admin_listener_may_be_a_unix_socket(rt: Runtime) {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = TempDir::new();
    let (map, secret, admin) = (
        dir.join("map.toml"),
        dir.join("secret"),
        dir.join("a.admin"),
    );
    std::fs::write(&map, "").unwrap();
    std::fs::write(&secret, "s3cr3t\n").unwrap();
    // A socket nobody listens on, as an agent that died leaves it.
    drop(std::os::unix::net::UnixListener::bind(&admin).unwrap());
    let args = [
        format!("--shared-secret-file={}", secret.display()),
        format!("--admin-listen={}", admin.display()),
        format!("--static-map={}", map.display()),
        "--metadata-url=http://127.0.0.1:9".to_owned(),
    ];
    let mut agent = Agent::start(rt, &dir.join("agent.sock"), &args);
    let listening = || std::os::unix::net::UnixStream::connect(&admin).is_ok();
    assert!(eventually(listening), "{}", agent.running.log());
    let mut last = (0, String::new());
    let ready = eventually(|| {
        let resp = request_unix(&admin, &get("/ready"));
        last = (resp.status, resp.body_text());
        last.0 == 200
    });
    assert!(ready, "{last:?}\n{}", agent.running.log());
    assert!(last.1.contains("\"ready\":true"), "{}", last.1);
    let resp = request_unix(&admin, &get("/live"));
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let resp = request_unix(&admin, &get("/metrics"));
    assert_eq!(resp.status, 200);
    let meta = std::fs::symlink_metadata(&admin).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o077,
        0o044,
        "group/other may not write"
    );
    agent.running.signal(libc::SIGTERM);
    assert!(
        agent.running.wait_exit().success(),
        "{}",
        agent.running.log()
    );
    assert!(!admin.exists(), "the admin socket is left behind");
}

fn readiness_follows_the_southbound(rt: Runtime) {
    let Some(mut ovn) = Ovn::start() else { return };
    ovn.stop_sb();
    let dir = TempDir::new();
    let backend = [
        "--backend=ovn".to_owned(),
        format!("--ovn-sb-connection={}", ovn.sb_tcp()),
        "--chassis=*".to_owned(),
        "--ovn-probe-interval=1".to_owned(),
    ];
    let (agent, admin) = start_agent(rt, &dir, &backend);
    let log = || agent.running.log();
    // Live at once (the loops turn); not ready before the replica is loaded.
    expect(admin, "/live", 200, "\"live\":true", log);
    let not_loaded = "\"agent\":\"the OVN Southbound replica is not loaded yet\"";
    expect(admin, "/ready", 503, not_loaded, log);
    assert!(probe(admin, "/ready").1.starts_with("{\"ready\":false,"));
    ovn.start_sb();
    expect(admin, "/ready", 200, "\"agent\":\"ok\"", log);
    ovn.stop_sb();
    expect(
        admin,
        "/ready",
        503,
        "the OVN Southbound is unreachable",
        log,
    );
    expect(admin, "/live", 200, "\"live\":true", log);
    ovn.start_sb();
    expect(admin, "/ready", 200, "\"ready\":true", log);
}
