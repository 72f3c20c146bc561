//! SIGHUP reads the server's whole configuration again: the TOML file (`mdproxy --config`),
//! the secret and the instance files. Checked under load (a client keeps asking, signed with
//! the old secret, while the new one comes: no request fails), for the secret's grace window
//! (the old secret verifies inside it, not after), a request limit, the IMDSv2 mode, a setting
//! that takes a restart (logged, kept) and a broken file — the TOML, or an instance file —
//! (refused whole, logged with its place).

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use common::*;

runtime_tests! {
    sighup_rotates_the_secret_with_a_window_and_refuses_a_broken_file,
    sighup_refuses_a_broken_instance_file_whole,
}

const UUID: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
const PROJECT: &str = "p";
/// A second instance, whose file the reload test breaks.
const OTHER: &str = "0b5e8d2c-7a41-4f3e-b6c9-2d8e1f0a3b7c";

/// Most requests the load thread makes, however long the test takes.
const MAX_REQUESTS: usize = 50_000;

/// `hex(HMAC-SHA256(secret, id))`, computed here, not by mdproxy.
fn sign_id(secret: &str, id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(id.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A GET of the EC2 tree as an agent sends it, signed with `secret`, with `extra` header lines.
fn signed_get(secret: &str, extra: &str) -> Vec<u8> {
    signed_get_of("/latest/meta-data/instance-id", secret, extra)
}

/// [`signed_get`] of `path`.
fn signed_get_of(path: &str, secret: &str, extra: &str) -> Vec<u8> {
    signed_get_as(UUID, path, secret, extra)
}

/// [`signed_get_of`] by instance `id`.
fn signed_get_as(id: &str, path: &str, secret: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-Forwarded-For: 10.0.0.5\r\nX-Instance-ID: {id}\r\nX-Tenant-ID: {PROJECT}\r\n\
         X-Instance-ID-Signature: {}\r\n{extra}\r\n",
        sign_id(secret, id)
    )
    .into_bytes()
}

/// The server's files in `dir`, and its config file.
struct Files {
    dir: TempDir,
    cfg: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = TempDir::new();
        let instances = dir.join("instances");
        fs::create_dir(&instances).unwrap();
        let instance = format!("uuid = \"{UUID}\"\nproject_id = \"{PROJECT}\"\n");
        fs::write(instances.join("a.toml"), instance).unwrap();
        let cfg = dir.join("mdproxy.toml");
        Files { dir, cfg }
    }

    /// Writes `secret` and a config file listening on `port`, with `extra` lines in the
    /// server's table.
    fn write(&self, port: u16, secret: &str, extra: &str) {
        fs::write(self.dir.join("secret"), format!("{secret}\n")).unwrap();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\ninstances = \"{}\"\n\
             shared-secret-file = \"{}\"\nstate-dir = \"{}\"\n{extra}",
            self.dir.join("instances").display(),
            self.dir.join("secret").display(),
            self.dir.join("state").display(),
        );
        fs::write(&self.cfg, text).unwrap();
    }
}

fn status(server: &Proxy, req: &[u8]) -> u16 {
    request(server.addr, req).status
}

fn sighup_rotates_the_secret_with_a_window_and_refuses_a_broken_file(rt: Runtime) {
    let files = Files::new();
    let server = Proxy::start_with(rt, |port| {
        files.write(port, "one", "secret-grace = 3600\n");
        vec![
            "--config".to_owned(),
            files.cfg.display().to_string(),
            "server".to_owned(),
        ]
    });
    let port = server.addr.port();
    assert_eq!(
        status(&server, &signed_get("one", "")),
        200,
        "{}",
        server.log()
    );

    // A client that keeps asking with the old secret through the reload; anything but 200
    // is a failure.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, addr) = (stop.clone(), server.addr);
        thread::spawn(move || {
            let (mut answered, mut failed) = (0usize, Vec::new());
            for _ in 0..MAX_REQUESTS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut client = Client::connect(addr);
                match client
                    .send(&signed_get("one", ""))
                    .and_then(|_| client.try_response())
                {
                    Ok(r) if r.status == 200 => answered += 1,
                    Ok(r) => failed.push(r.head),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (answered, failed)
        })
    };

    // A new secret and a request limit; the old secret stays good for the hour's window.
    files.write(port, "two", "secret-grace = 3600\nmax-headers = 8\n");
    server.signal(libc::SIGHUP);
    server.wait_for_log("SIGHUP: configuration read again");
    assert_eq!(
        status(&server, &signed_get("two", "")),
        200,
        "the new secret"
    );
    assert_eq!(
        status(&server, &signed_get("one", "")),
        200,
        "inside the window"
    );
    assert_eq!(status(&server, &signed_get("other", "")), 403);
    let many: String = (0..8).map(|i| format!("X-Extra-{i}: x\r\n")).collect();
    let too_many = status(&server, &signed_get("two", &many));
    assert_eq!(too_many, 431, "max-headers = 8 not applied");

    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = load.join().unwrap();
    assert!(answered > 0);
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );

    // A broken file: refused whole, with its place; the secret read with it is not taken.
    files.write(port, "three", "secret-grace = \n");
    server.signal(libc::SIGHUP);
    let log = server.wait_for_log("the running configuration stays");
    let place = format!("SIGHUP: {}:6: ", files.cfg.display());
    assert!(log.contains(&place), "{log}");
    assert_eq!(status(&server, &signed_get("three", "")), 403);
    assert_eq!(
        status(&server, &signed_get("two", "")),
        200,
        "the secret kept"
    );
    assert_eq!(
        status(&server, &signed_get("two", &many)),
        431,
        "limit kept"
    );

    // A setting that takes a restart: said, and kept.
    files.write(port + 1, "two", "secret-grace = 3600\nmax-headers = 8\n");
    server.signal(libc::SIGHUP);
    server.wait_for_log("SIGHUP: --listen changed; that takes a restart: kept as it was");
    assert_eq!(
        status(&server, &signed_get("two", "")),
        200,
        "still listening"
    );

    // A short window: the previous secret stops verifying once it has passed. And IMDSv2
    // required: the EC2 tree wants a token (the OpenStack tree never does).
    files.write(port, "four", "secret-grace = 1\nimdsv2 = \"required\"\n");
    server.signal(libc::SIGHUP);
    server.wait_for_log_count("SIGHUP: configuration read again", 3);
    let os = |secret: &str, extra: &str| {
        status(
            &server,
            &signed_get_of("/openstack/latest/meta_data.json", secret, extra),
        )
    };
    assert_eq!(os("four", ""), 200, "the new secret");
    assert_eq!(
        status(&server, &signed_get("four", "")),
        401,
        "imdsv2 required"
    );
    let closed = eventually(|| os("two", "") == 403);
    assert!(closed, "the old secret still verifies\n{}", server.log());
    assert_eq!(os("four", ""), 200);
    assert_eq!(os("four", &many), 200, "max-headers back to its default");
}

fn sighup_refuses_a_broken_instance_file_whole(rt: Runtime) {
    let files = Files::new();
    let server = Proxy::start_with(rt, |port| {
        files.write(port, "one", "");
        vec![
            "--config".to_owned(),
            files.cfg.display().to_string(),
            "server".to_owned(),
        ]
    });
    let port = server.addr.port();
    assert_eq!(status(&server, &signed_get("one", "")), 200);

    // A new instance file with a typo, and a new secret and request limit: the SIGHUP is
    // refused whole, naming the file's line; the old secret and instances keep answering.
    let other = files.dir.join("instances").join("b.toml");
    let good = format!("uuid = \"{OTHER}\"\nproject_id = \"{PROJECT}\"\n");
    fs::write(&other, format!("{good}hostnme = \"typo\"\n")).unwrap();
    files.write(port, "two", "max-headers = 8\n");
    server.signal(libc::SIGHUP);
    let log = server.wait_for_log("the running configuration stays");
    let place = format!("SIGHUP: {}:3: ", other.display());
    assert!(log.contains(&place), "{log}");
    assert!(!log.contains("SIGHUP: configuration read again"), "{log}");
    assert_eq!(status(&server, &signed_get("two", "")), 403, "secret taken");
    assert_eq!(status(&server, &signed_get("one", "")), 200, "old instance");
    let many: String = (0..8).map(|i| format!("X-Extra-{i}: x\r\n")).collect();
    assert_eq!(
        status(&server, &signed_get("one", &many)),
        200,
        "limit taken"
    );

    // Fixed: the next SIGHUP applies it all, the new instance with it.
    fs::write(&other, &good).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_log("SIGHUP: configuration read again");
    assert_eq!(
        status(&server, &signed_get("two", "")),
        200,
        "the new secret"
    );
    assert_eq!(status(&server, &signed_get("two", &many)), 431, "the limit");
    let path = "/openstack/latest/meta_data.json";
    let reply = request(server.addr, &signed_get_as(OTHER, path, "two", ""));
    assert_eq!(reply.status, 200, "the new instance\n{}", server.log());
    assert!(reply.body_text().contains(OTHER), "{}", reply.body_text());
}
