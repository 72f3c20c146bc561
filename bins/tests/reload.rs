//! SIGHUP reads the agent's whole configuration again: the TOML file (`mdproxy --config`), the
//! secret and the static map. Checked under load (a client keeps asking while the signals
//! come: no request fails), for each setting that applies in place (the shared secret, the
//! IMDSv2 mode, a request limit), for one that takes a restart (logged, kept), and for a
//! broken file (refused whole, logged with its place, the running configuration stays). A
//! lower connection limit refuses the next connection past it and keeps the open ones. A new
//! `metadata-url` takes the requests after the SIGHUP, while none fails.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;
use mdproxy_core::sign::Signer;

runtime_tests! {
    sighup_applies_the_files_under_load_and_refuses_a_broken_one,
    sighup_lowers_max_conns_for_new_connections_only,
    sighup_moves_the_agent_to_another_metadata_server_under_load,
}

const INSTANCE: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e5f";

/// Most requests the load thread makes, however long the test takes.
const MAX_REQUESTS: usize = 50_000;

/// The config file: `extra` lines in the agent's table.
fn config(dir: &TempDir, server: &str, extra: &str) -> String {
    format!(
        "[agent]\nshared-secret-file = \"{}\"\nstatic-map = \"{}\"\nmetadata-url = \"{server}\"\n{extra}",
        dir.join("secret").display(),
        dir.join("map.toml").display(),
    )
}

fn map() -> String {
    format!(
        "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NETWORK}\"]\n\n[[port]]\n\
         network = \"{NETWORK}\"\nip = \"10.0.0.5\"\ndevice_id = \"{INSTANCE}\"\nproject_id = \"p\"\n"
    )
}

/// What a namespace proxy sends for 10.0.0.5, with `extra` header lines.
fn request(extra: &str) -> Vec<u8> {
    format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: {ROUTER}\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// The signature the metadata server was last sent.
fn last_signature(server: &Upstream) -> String {
    let seen = server.wait_for(1);
    let last = seen.last().expect("a request");
    last.header_values("x-instance-id-signature").join(",")
}

fn signed_with(secret: &[u8]) -> String {
    Signer::new(secret).sign(INSTANCE).as_str().to_owned()
}

/// An agent on `dir`'s secret ("one") and map, configured by the file `text` (agent.toml);
/// with that file's path and the agent's socket.
fn start(rt: Runtime, dir: &TempDir, text: &str) -> (Agent, PathBuf, PathBuf) {
    fs::write(dir.join("secret"), "one\n").unwrap();
    fs::write(dir.join("map.toml"), map()).unwrap();
    let cfg = dir.join("agent.toml");
    fs::write(&cfg, text).unwrap();
    let socket = dir.join("agent.sock");
    let args = [
        "--config".to_owned(),
        cfg.display().to_string(),
        "agent".to_owned(),
        format!("--listen-socket={}", socket.display()),
    ];
    let program = Path::new(env!("CARGO_BIN_EXE_mdproxy"));
    (
        Agent::start_program(rt, program, &args, &socket),
        cfg,
        socket,
    )
}

fn sighup_applies_the_files_under_load_and_refuses_a_broken_one(rt: Runtime) {
    let dir = TempDir::new();
    let server = Upstream::start_tcp(|_| Reply::Send(ok_response(INSTANCE.as_bytes())));
    let (agent, cfg, socket) = start(rt, &dir, &config(&dir, &server.url(), ""));
    let resp = request_unix(&socket, &request(""));
    assert_eq!(resp.status, 200, "{resp:?}\n{}", agent.running.log());
    assert_eq!(last_signature(&server), signed_with(b"one"));

    // A client that keeps asking through every reload; any error or 5xx is a failure.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, socket) = (stop.clone(), socket.clone());
        thread::spawn(move || {
            let (mut answered, mut failed) = (0usize, Vec::new());
            for _ in 0..MAX_REQUESTS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut client = Client::connect_unix(&socket);
                match client
                    .send(&request(""))
                    .and_then(|_| client.try_response())
                {
                    Ok(r) if r.status < 500 => answered += 1,
                    Ok(r) => failed.push(r.head),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (answered, failed)
        })
    };

    // The secret, the IMDSv2 mode and a request limit, in the files.
    fs::write(dir.join("secret"), "two\n").unwrap();
    let extra = "imdsv2 = \"required\"\nmax-headers = 8\n";
    fs::write(&cfg, config(&dir, &server.url(), extra)).unwrap();
    agent.running.signal(libc::SIGHUP);
    agent
        .running
        .wait_for_log("SIGHUP: configuration read again");
    let required = eventually(|| request_unix(&socket, &request("")).status == 401);
    assert!(
        required,
        "imdsv2 = required not applied\n{}",
        agent.running.log()
    );
    let token = request_unix(
        &socket,
        format!(
            "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n\
             X-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-Forwarded-For: 10.0.0.5\r\n\
             X-Neutron-Router-ID: {ROUTER}\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(token.status, 200, "{token:?}");
    let with_token = format!("X-aws-ec2-metadata-token: {}\r\n", token.body_text());
    assert_eq!(request_unix(&socket, &request(&with_token)).status, 200);
    assert_eq!(
        last_signature(&server),
        signed_with(b"two"),
        "the new secret"
    );
    let many: String = (0..8).map(|i| format!("X-Extra-{i}: x\r\n")).collect();
    let too_many = request_unix(&socket, &request(&(with_token.clone() + &many)));
    assert_eq!(too_many.status, 431, "max-headers = 8 not applied");

    // A setting that takes a restart: said, and kept.
    let restart = format!("{extra}workers = 3\n");
    fs::write(&cfg, config(&dir, &server.url(), &restart)).unwrap();
    agent.running.signal(libc::SIGHUP);
    agent
        .running
        .wait_for_log("SIGHUP: --workers changed; that takes a restart: kept as it was");

    // A broken file: refused whole, with its place; the secret read with it is not taken.
    fs::write(dir.join("secret"), "three\n").unwrap();
    fs::write(
        &cfg,
        format!("{}imdsv2 = \n", config(&dir, &server.url(), "")),
    )
    .unwrap();
    agent.running.signal(libc::SIGHUP);
    let log = agent
        .running
        .wait_for_log("the running configuration stays");
    assert!(log.contains(&cfg.display().to_string()), "{log}");
    assert_eq!(
        request_unix(&socket, &request("")).status,
        401,
        "still required"
    );
    assert_eq!(request_unix(&socket, &request(&with_token)).status, 200);
    assert_eq!(
        last_signature(&server),
        signed_with(b"two"),
        "the secret kept"
    );

    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = load.join().unwrap();
    assert!(answered > 0);
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
}

fn sighup_lowers_max_conns_for_new_connections_only(rt: Runtime) {
    let dir = TempDir::new();
    let server = Upstream::start_tcp(|_| Reply::Send(ok_response(INSTANCE.as_bytes())));
    let (agent, cfg, socket) = start(rt, &dir, &config(&dir, &server.url(), "max-conns = 8\n"));
    // Three keep-alive connections, each answered once: open and counted.
    let mut open: Vec<Client> = (0..3).map(|_| Client::connect_unix(&socket)).collect();
    for client in &mut open {
        let resp = client.exchange(&request(""));
        assert_eq!(resp.status, 200, "{resp:?}\n{}", agent.running.log());
    }

    fs::write(&cfg, config(&dir, &server.url(), "max-conns = 2\n")).unwrap();
    agent.running.signal(libc::SIGHUP);
    agent
        .running
        .wait_for_log("SIGHUP: configuration read again");
    let over = request_unix(&socket, &request(""));
    assert_eq!(over.status, 503, "max-conns = 2 not applied: {over:?}");
    assert!(
        over.body_text().contains("Too many connections"),
        "{over:?}"
    );
    // The three opened before keep being served, over the new limit.
    for client in &mut open {
        let resp = client.exchange(&request(""));
        assert_eq!(resp.status, 200, "an open connection lost: {resp:?}");
    }
    // Once two have closed, the one left is under the limit: a new connection is served.
    open.truncate(1);
    let served = eventually(|| request_unix(&socket, &request("")).status == 200);
    assert!(
        served,
        "not served under the limit\n{}",
        agent.running.log()
    );
    assert_eq!(open[0].exchange(&request("")).status, 200);
}

fn sighup_moves_the_agent_to_another_metadata_server_under_load(rt: Runtime) {
    let dir = TempDir::new();
    let a = Upstream::start_tcp(|_| Reply::Send(ok_response(b"a")));
    let b = Upstream::start_tcp(|_| Reply::Send(ok_response(b"b")));
    let (agent, cfg, socket) = start(rt, &dir, &config(&dir, &a.url(), ""));
    assert_eq!(request_unix(&socket, &request("")).body_text(), "a");

    // One keep-alive client through the switch: every answer a 200, from one server or the
    // other, never an error.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, socket) = (stop.clone(), socket.clone());
        thread::spawn(move || {
            let (mut bodies, mut failed) = (Vec::new(), Vec::new());
            let mut client = Client::connect_unix(&socket);
            for _ in 0..MAX_REQUESTS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match client
                    .send(&request(""))
                    .and_then(|_| client.try_response())
                {
                    Ok(r) if r.status == 200 => bodies.push(r.body_text()),
                    Ok(r) => failed.push(r.head),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (bodies, failed)
        })
    };
    assert!(eventually(|| a.count() >= 20), "the load never reached a");
    fs::write(&cfg, config(&dir, &b.url(), "")).unwrap();
    agent.running.signal(libc::SIGHUP);
    agent
        .running
        .wait_for_log(&format!("SIGHUP: metadata servers now {}", b.url()));
    assert!(eventually(|| b.count() >= 20), "the load never reached b");
    stop.store(true, Ordering::Relaxed);
    let (bodies, failed) = load.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    // Once answered by b, never by a again.
    let first_b = bodies
        .iter()
        .position(|b| b == "b")
        .expect("answers from b");
    assert!(
        bodies[first_b..].iter().all(|b| b == "b"),
        "a answered after b had"
    );
    let at_a = a.count();
    assert_eq!(request_unix(&socket, &request("")).body_text(), "b");
    assert_eq!(a.count(), at_a, "a still asked");
    // Unchanged settings leave the servers alone: no new line.
    agent.running.signal(libc::SIGHUP);
    agent
        .running
        .wait_for_log_count("SIGHUP: configuration read again", 2);
    let log = agent.running.log();
    assert_eq!(
        log.matches("SIGHUP: metadata servers now").count(),
        1,
        "{log}"
    );
}
