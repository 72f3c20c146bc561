//! `GET /explain` on the admin listener of `mdproxy agent` (static map), on both runtimes: every
//! outcome of the lookup, the metadata servers' health, a bad query, and that only the admin
//! listener answers it. The node's listener rules are in `node.rs`, the Neutron cache's in
//! `agent_neutron.rs`.

mod common;

use std::fs;
use std::net::SocketAddr;

use common::*;

runtime_tests! {
    explain_tells_every_outcome_of_the_static_lookup,
    explain_names_the_server_a_request_would_take,
    a_bad_query_is_a_400_that_says_why,
    the_agents_socket_never_answers_explain,
}

const I1: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e5f";
const UNKNOWN: &str = "22222222-2222-4333-8444-555555555555";

/// [`ROUTER`] has [`NETWORK`]; on it 10.0.0.5 is I1 and 10.0.0.7 is two ports.
fn map() -> String {
    let port = |ip: &str, id: &str| {
        format!(
            "[[port]]\nnetwork = \"{NETWORK}\"\nip = \"{ip}\"\ndevice_id = \"{id}\"\n\
             project_id = \"p1\"\n\n"
        )
    };
    format!(
        "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NETWORK}\"]\nimdsv2 = \"required\"\n\n{}{}{}",
        port("10.0.0.5", I1),
        port("10.0.0.7", "i-two"),
        port("10.0.0.7", "i-three"),
    )
}

/// An agent on [`map`] forwarding to `urls`, with its admin listener.
struct Rig {
    agent: Agent,
    admin: SocketAddr,
    _dir: TempDir,
}

impl Rig {
    fn start(rt: Runtime, urls: &[String]) -> Rig {
        let dir = TempDir::new();
        fs::write(dir.join("map.toml"), map()).unwrap();
        fs::write(dir.join("secret"), "s3cr3t\n").unwrap();
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut args = vec![
            format!("--static-map={}", dir.join("map.toml").display()),
            format!("--shared-secret-file={}", dir.join("secret").display()),
            format!("--admin-listen={admin}"),
        ];
        args.extend(urls.iter().map(|u| format!("--metadata-url={u}")));
        let agent = Agent::start(rt, &dir.join("agent.sock"), &args);
        Rig {
            agent,
            admin,
            _dir: dir,
        }
    }

    fn explain(&self, query: &str) -> serde_json::Value {
        let r = request(self.admin, &get(&format!("/explain?{query}")));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            header_values(&r.head, "content-type"),
            ["application/json"],
            "{r:?}"
        );
        serde_json::from_str(&r.body_text()).unwrap_or_else(|e| panic!("{e}: {r:?}"))
    }
}

fn explain_tells_every_outcome_of_the_static_lookup(rt: Runtime) {
    let server = Upstream::start_tcp(|_| Reply::Send(ok_response(b"x")));
    let rig = Rig::start(rt, &[server.url()]);
    let e = rig.explain(&format!("router={ROUTER}&ip=10.0.0.5"));
    assert_eq!(
        (e["backend"].as_str(), e["lookup"].as_str()),
        (Some("static"), Some("found")),
        "{e}"
    );
    assert_eq!(
        (e["instance"].as_str(), e["project"].as_str()),
        (Some(I1), Some("p1")),
        "{e}"
    );
    assert_eq!(e["networks"], serde_json::json!([NETWORK]), "{e}");
    assert_eq!(
        e["query"],
        serde_json::json!({"router": ROUTER, "ip": "10.0.0.5"}),
        "{e}"
    );
    // The map's imdsv2 for the router.
    assert_eq!(e["imdsv2"]["mode"], "required", "{e}");

    let e = rig.explain(&format!("router={ROUTER}&ip=10.0.0.7"));
    assert_eq!(e["lookup"], "ambiguous", "{e}");
    assert_eq!(e["ports"].as_array().map(Vec::len), Some(2), "{e}");
    assert_eq!(
        e["answer"],
        format!("404: Instance was not found on router {ROUTER}."),
        "{e}"
    );

    let e = rig.explain(&format!("router={ROUTER}&ip=10.0.0.6"));
    assert_eq!(e["lookup"], "not found", "{e}");
    assert!(
        e["why"].as_str().unwrap_or_default().contains("10.0.0.6"),
        "{e}"
    );

    let e = rig.explain(&format!("router={UNKNOWN}&ip=10.0.0.5"));
    assert_eq!(e["lookup"], "no network", "{e}");
    assert!(
        e["why"]
            .as_str()
            .unwrap_or_default()
            .contains("not in the static map"),
        "{e}"
    );
    // A network of its own: the router's mode does not apply.
    let e = rig.explain(&format!("network={NETWORK}&ip=10.0.0.5"));
    assert_eq!(
        (e["lookup"].as_str(), e["imdsv2"]["mode"].as_str()),
        (Some("found"), Some("optional")),
        "{e}"
    );
    // Nothing was forwarded.
    assert_eq!(server.count(), 0);
}

/// The server a request would take, and each one's health: a server that refuses
/// connections is marked down after a request fails on it, and the next goes to the other.
fn explain_names_the_server_a_request_would_take(rt: Runtime) {
    let up = Upstream::start_tcp(|req| {
        let id = req.header_values("x-instance-id").join(",");
        Reply::Send(ok_response(id.as_bytes()))
    });
    let dead = format!("http://127.0.0.1:{}", free_port());
    let rig = Rig::start(rt, &[dead.clone(), up.url()]);
    let e = rig.explain(&format!("network={NETWORK}&ip=10.0.0.5"));
    let servers = e["metadata_servers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = servers.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, [dead.as_str(), up.url().as_str()], "{e}");
    assert!(servers.iter().all(|s| s["state"] == "up"), "{e}");
    // Requests fail over from the dead one; one failure leaves it up, counted, and a few
    // more (FAILS_TO_DOWN in the core) mark it down, to be retried later.
    let asked = format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.5\r\n\
         X-Neutron-Network-ID: {NETWORK}\r\n\r\n"
    );
    let (mut states, mut last) = (Vec::new(), serde_json::Value::Null);
    for _ in 0..10 {
        let r = request_unix(&rig.agent.socket, asked.as_bytes());
        assert_eq!((r.status, r.body_text()), (200, I1.to_owned()), "{r:?}");
        last = rig.explain(&format!("network={NETWORK}&ip=10.0.0.5"));
        let state = last["metadata_servers"][0]["state"].as_str();
        states.push(state.unwrap_or_default().to_owned());
        if state.is_some_and(|s| s.starts_with("down")) {
            break;
        }
    }
    assert_eq!(states[0], "up (1 failed in a row)", "{states:?}");
    // Down, and either still backing off (so the next request goes to the other) or, on a
    // machine slow enough to have let the backoff pass, due for a trial.
    let e = last;
    match e["metadata_servers"][0]["state"].as_str() {
        Some("down") => {
            let retry = e["metadata_servers"][0]["retry_in_seconds"].as_f64();
            assert!(retry.is_some_and(|s| s > 0.0), "{e}");
            assert_eq!(e["server"], up.url(), "{e}");
            let answer = format!("forwarded to {}, signed", up.url());
            assert_eq!(e["answer"], answer, "{e}");
        }
        Some("down: its next request is a trial") => {}
        _ => panic!("never marked down: {states:?}\n{e}"),
    }
}

fn a_bad_query_is_a_400_that_says_why(rt: Runtime) {
    let server = Upstream::start_tcp(|_| Reply::Send(ok_response(b"x")));
    let rig = Rig::start(rt, &[server.url()]);
    for (query, says) in [
        ("/explain", "no query"),
        ("/explain?ip=10.0.0.5", "no router, network or ovn-network"),
        (&format!("/explain?router={ROUTER}")[..], "no ip"),
        ("/explain?router=r1&ip=10.0.0.5", "router: not a UUID"),
        (
            &format!("/explain?router={ROUTER}&ip=nope")[..],
            "not an IP address",
        ),
        (
            &format!("/explain?router={ROUTER}&ip=10.0.0.5&x=1")[..],
            "unknown parameter",
        ),
    ] {
        let r = request(rig.admin, &get(query));
        assert_eq!(r.status, 400, "{query}: {r:?}");
        assert!(r.body_text().contains(says), "{query}: {r:?}");
    }
    let post =
        format!("POST /explain?router={ROUTER}&ip=10.0.0.5 HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    let r = request(rig.admin, post.as_bytes());
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(header_values(&r.head, "allow"), ["GET, HEAD"], "{r:?}");
    // The rest of the admin listener is as it was.
    assert_eq!(request(rig.admin, &get("/metrics")).status, 200);
}

/// What the namespace proxies send to the agent's socket is routed as a metadata request,
/// whatever its path: `/explain` is forwarded (and signed), never answered.
fn the_agents_socket_never_answers_explain(rt: Runtime) {
    let server = Upstream::start_tcp(|req| Reply::Send(ok_response(req.path().as_bytes())));
    let rig = Rig::start(rt, &[server.url()]);
    let asked = format!(
        "GET /explain?network={NETWORK}&ip=10.0.0.5 HTTP/1.1\r\nHost: x\r\n\
         X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Network-ID: {NETWORK}\r\n\r\n"
    );
    let r = request_unix(&rig.agent.socket, asked.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_text().starts_with("/explain?"), "{r:?}");
    let seen = server.wait_for(1);
    assert_eq!(seen[0].header_values("x-instance-id"), [I1]);
}
