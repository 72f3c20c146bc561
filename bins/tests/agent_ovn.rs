//! `mdproxy agent --backend ovn` against the real thing: Debian's `ovsdb-server` with OVN's
//! Southbound schema, a real `ovn-northd` turning the Northbound rows Neutron's OVN driver
//! writes into `Port_Binding`s (bins/tests/common/ovn.rs), and a recording metadata server.
//! Requests carry `X-OVN-Network-ID`, as `mdproxy ns-proxy --ovn-network-id` sends them.

mod common;

use std::path::PathBuf;

use common::ovn::{LocalOvs, Ovn, SbCluster};
use common::*;

runtime_tests! {
    finds_the_bound_instance_of_the_network,
    a_conditional_replica_has_only_this_chassis,
    follows_moves_and_binds_at_once,
    serves_from_the_replica_while_the_southbound_restarts,
    moves_to_another_cluster_member_and_resumes,
    through_an_ovn_ns_proxy,
    the_chassis_comes_from_the_local_open_vswitch_database,
    explain_tells_what_the_replica_says,
}

const NET_A: &str = "11111111-1111-4111-8111-111111111111";
const NET_B: &str = "22222222-2222-4222-8222-222222222222";
const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";
const VM_1: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e01";
const VM_2: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e02";
const VM_3: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e03";
const VM_4: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e04";
const PORT_1: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const PORT_2: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const PORT_3: &str = "aaaaaaaa-0000-4000-8000-000000000003";
const PORT_4: &str = "aaaaaaaa-0000-4000-8000-000000000004";

/// A metadata server that answers with the X-Instance-ID it was sent.
fn echo_instance() -> Upstream {
    Upstream::start_tcp(|req| {
        let id = req.header_values("x-instance-id").join(",");
        Reply::Send(ok_response(id.as_bytes()))
    })
}

/// An agent on `sb` (remotes) for `chassis`, relaying to `server`.
struct OvnAgent {
    _dir: TempDir,
    agent: Agent,
}

impl OvnAgent {
    fn start(rt: Runtime, sb: &str, chassis: &str, server: &Upstream) -> OvnAgent {
        OvnAgent::start_with(rt, sb, chassis, server, &[])
    }

    fn start_with(
        rt: Runtime,
        sb: &str,
        chassis: &str,
        server: &Upstream,
        extra: &[String],
    ) -> OvnAgent {
        let dir = TempDir::new();
        let secret: PathBuf = dir.join("secret");
        std::fs::write(&secret, "s3cr3t\n").unwrap();
        let args = [
            "--backend=ovn".to_owned(),
            format!("--ovn-sb-connection={sb}"),
            format!("--chassis={chassis}"),
            format!("--metadata-url={}", server.url()),
            format!("--shared-secret-file={}", secret.display()),
            "--ovn-probe-interval=1".to_owned(),
        ];
        let args = [&args[..], extra].concat();
        let agent = Agent::start(rt, &dir.join("agent.sock"), &args);
        OvnAgent { _dir: dir, agent }
    }

    /// The status and body for a request from `ip` on OVN network `net`.
    fn ask(&self, net: &str, ip: &str) -> (u16, String) {
        let req = format!(
            "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
             X-Forwarded-For: {ip}\r\nX-OVN-Network-ID: {net}\r\n\r\n"
        );
        let resp = request_unix(&self.agent.socket, req.as_bytes());
        (resp.status, resp.body_text())
    }

    /// Waits (bounded) until the answer for (`net`, `ip`) is `want`; panics with the log if
    /// it never is.
    fn expect(&self, net: &str, ip: &str, want: (u16, &str)) {
        let mut last = (0, String::new());
        let ok = eventually(|| {
            last = self.ask(net, ip);
            last.0 == want.0 && (want.0 != 200 || last.1 == want.1)
        });
        assert!(
            ok,
            "{ip} on {net}: got {last:?}, want {want:?}\n{}",
            self.agent.running.log()
        );
    }
}

/// Two networks with the same IP on each, one unbound port, one port of another chassis.
fn cloud(ovn: &Ovn) {
    ovn.network(NET_A, "private-a", &["10.0.0.2/24"]);
    ovn.network(NET_B, "private-b", &["10.0.0.2/24"]);
    ovn.chassis("compute-1", "127.0.0.2");
    ovn.chassis("compute-2", "127.0.0.3");
    ovn.port(
        NET_A,
        PORT_1,
        "fa:16:3e:00:00:01",
        &["10.0.0.5"],
        VM_1,
        PROJECT,
    );
    ovn.port(
        NET_B,
        PORT_2,
        "fa:16:3e:00:00:02",
        &["10.0.0.5"],
        VM_2,
        PROJECT,
    );
    ovn.port(
        NET_A,
        PORT_3,
        "fa:16:3e:00:00:03",
        &["10.0.0.7"],
        VM_3,
        PROJECT,
    );
    ovn.port(
        NET_A,
        PORT_4,
        "fa:16:3e:00:00:04",
        &["10.0.0.8"],
        VM_4,
        PROJECT,
    );
    ovn.bind(PORT_1, "compute-1");
    ovn.bind(PORT_2, "compute-1");
    ovn.bind(PORT_4, "compute-2");
}

fn finds_the_bound_instance_of_the_network(rt: Runtime) {
    let Some(ovn) = Ovn::start() else { return };
    cloud(&ovn);
    let server = echo_instance();
    let agent = OvnAgent::start(rt, &ovn.sb_unix(), "*", &server);
    agent.expect(NET_A, "10.0.0.5", (200, VM_1));
    // The same IP on another network is another instance.
    assert_eq!(agent.ask(NET_B, "10.0.0.5"), (200, VM_2.to_owned()));
    // Unbound: not found, with Neutron's text.
    let (status, body) = agent.ask(NET_A, "10.0.0.7");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains(NET_A), "{body}");
    // Any bound port with '*', wherever it is bound.
    assert_eq!(agent.ask(NET_A, "10.0.0.8"), (200, VM_4.to_owned()));
    // A link-local client by the MAC its address embeds (fa:16:3e:00:00:01).
    assert_eq!(
        agent.ask(NET_A, "fe80::f816:3eff:fe00:1"),
        (200, VM_1.to_owned())
    );
    assert_eq!(agent.ask(NET_A, "10.9.9.9").0, 404);
    let seen = server.wait_for(1);
    assert_eq!(seen[0].header_values("x-tenant-id"), [PROJECT]);
    assert!(
        seen[0].header_values("x-ovn-network-id").is_empty(),
        "not forwarded to Nova"
    );
}

fn a_conditional_replica_has_only_this_chassis(rt: Runtime) {
    let Some(ovn) = Ovn::start() else { return };
    cloud(&ovn);
    let server = echo_instance();
    let agent = OvnAgent::start(rt, &ovn.sb_tcp(), "compute-1", &server);
    agent.expect(NET_A, "10.0.0.5", (200, VM_1));
    assert_eq!(agent.ask(NET_B, "10.0.0.5"), (200, VM_2.to_owned()));
    // Bound to compute-2: not in this replica.
    assert_eq!(agent.ask(NET_A, "10.0.0.8").0, 404);
    // Moved here (as a live migration's end does): found.
    ovn.bind(PORT_4, "compute-1");
    agent.expect(NET_A, "10.0.0.8", (200, VM_4));
    // And away again.
    ovn.bind(PORT_4, "compute-2");
    agent.expect(NET_A, "10.0.0.8", (404, ""));
}

fn follows_moves_and_binds_at_once(rt: Runtime) {
    let Some(ovn) = Ovn::start() else { return };
    cloud(&ovn);
    let server = echo_instance();
    let agent = OvnAgent::start(rt, &ovn.sb_unix(), "compute-1", &server);
    agent.expect(NET_A, "10.0.0.5", (200, VM_1));
    // 10.0.0.5 moves from port 1 to port 3 (and port 3 is bound here).
    ovn.set_addresses(PORT_1, "fa:16:3e:00:00:01", &["10.0.0.9"]);
    ovn.set_addresses(PORT_3, "fa:16:3e:00:00:03", &["10.0.0.5"]);
    ovn.bind(PORT_3, "compute-1");
    agent.expect(NET_A, "10.0.0.5", (200, VM_3));
    // Once the new answer is there, the old one never comes back.
    for _ in 0..20 {
        assert_eq!(agent.ask(NET_A, "10.0.0.5"), (200, VM_3.to_owned()));
    }
    assert_eq!(agent.ask(NET_A, "10.0.0.9"), (200, VM_1.to_owned()));
    ovn.delete_port(PORT_3);
    agent.expect(NET_A, "10.0.0.5", (404, ""));
}

fn serves_from_the_replica_while_the_southbound_restarts(rt: Runtime) {
    let Some(mut ovn) = Ovn::start() else { return };
    cloud(&ovn);
    let server = echo_instance();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = [format!("--metrics-listen={metrics}")];
    let agent = OvnAgent::start_with(rt, &ovn.sb_tcp(), "*", &server, &extra);
    agent.expect(NET_A, "10.0.0.5", (200, VM_1));
    let series = |name: &str| scrape(metrics, name);
    assert_eq!(series("mdproxy_ovn_connected{role=\"agent\"}"), 1);
    let rows = "mdproxy_ovn_replica_rows{role=\"agent\",table=\"Port_Binding\"}";
    assert_eq!(series(rows), 3, "the bound ports");
    ovn.stop_sb();
    agent.agent.running.wait_for_log("connection lost");
    // The last replica answers while nobody can move the instance, and says so once.
    for _ in 0..3 {
        assert_eq!(agent.ask(NET_A, "10.0.0.5"), (200, VM_1.to_owned()));
    }
    let log = agent.agent.running.log();
    let said = log
        .matches("answering from the last OVN Southbound replica")
        .count();
    assert_eq!(said, 1, "{log}");
    assert_eq!(series("mdproxy_ovn_connected{role=\"agent\"}"), 0);
    assert!(series("mdproxy_ovn_stale_answers_total{role=\"agent\"}") >= 3);
    ovn.start_sb();
    ovn.bind(PORT_3, "compute-1");
    agent.expect(NET_A, "10.0.0.7", (200, VM_3));
    assert_eq!(agent.ask(NET_A, "10.0.0.5"), (200, VM_1.to_owned()));
    // A standalone server keeps no transaction history: the replica was loaded again.
    let resynced = "mdproxy_ovn_monitors_total{role=\"agent\",start=\"resynced\"}";
    assert_eq!(series(resynced), 2);
    assert_eq!(series("mdproxy_ovn_connected{role=\"agent\"}"), 1);
}

/// The value of series `name` (its exact text before the value) on the metrics port, which
/// the agent updates on its next request or update; 0 when absent.
fn scrape(addr: std::net::SocketAddr, name: &str) -> u64 {
    let resp = request(addr, b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n");
    let text = resp.body_text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

fn moves_to_another_cluster_member_and_resumes(rt: Runtime) {
    let Some(mut cluster) = SbCluster::start() else {
        return;
    };
    cluster.datapath(NET_A, "private-a");
    cluster.chassis("compute-1", "127.0.0.2");
    cluster.port(
        NET_A,
        PORT_1,
        "fa:16:3e:00:00:01",
        &["10.0.0.5"],
        VM_1,
        PROJECT,
    );
    cluster.bind(PORT_1, "compute-1");
    let server = echo_instance();
    let agent = OvnAgent::start(rt, &cluster.remotes(), "compute-1", &server);
    agent.expect(NET_A, "10.0.0.5", (200, VM_1));
    // The session takes the first member; losing it, it moves on and resumes from its last
    // transaction, so a port written meanwhile arrives without a full resync.
    cluster.kill(0);
    cluster.leader();
    cluster.port(
        NET_A,
        PORT_3,
        "fa:16:3e:00:00:03",
        &["10.0.0.7"],
        VM_3,
        PROJECT,
    );
    cluster.bind(PORT_3, "compute-1");
    agent.expect(NET_A, "10.0.0.7", (200, VM_3));
    assert_eq!(agent.ask(NET_A, "10.0.0.5"), (200, VM_1.to_owned()));
    let log = agent.agent.running.log();
    assert!(log.contains("monitoring OVN_Southbound (resumed)"), "{log}");
}

fn through_an_ovn_ns_proxy(rt: Runtime) {
    let Some(ovn) = Ovn::start() else { return };
    cloud(&ovn);
    let server = echo_instance();
    let agent = OvnAgent::start(rt, &ovn.sb_unix(), "*", &server);
    agent.expect(NET_A, "10.0.0.5", (200, VM_1));
    let proxy = Proxy::start(
        rt,
        &agent.agent.socket,
        &[&format!("--ovn-network-id={NET_B}")],
    );
    // The instance claims network A; the proxy stamps B, where 127.0.0.1 is nobody.
    let forged = format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-OVN-Network-ID: {NET_A}\r\nX-Forwarded-For: 10.0.0.5\r\n\r\n"
    );
    let resp = request(proxy.addr, forged.as_bytes());
    assert_eq!(resp.status, 404, "{resp:?}");
    assert!(resp.body_text().contains(NET_B), "{resp:?}");
}

/// Without `--chassis`, the agent reads `external_ids:system-id` of the local Open_vSwitch
/// database (`--ovs-db`), as Neutron's agent does; without one it refuses to start (exit 1).
fn the_chassis_comes_from_the_local_open_vswitch_database(rt: Runtime) {
    let Some(ovn) = Ovn::start() else { return };
    let Some(ovs) = LocalOvs::start(Some("compute-2")) else {
        return;
    };
    cloud(&ovn);
    let server = echo_instance();
    let dir = TempDir::new();
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let args = vec![
        "--backend=ovn".to_owned(),
        format!("--ovn-sb-connection={}", ovn.sb_unix()),
        format!("--ovs-db={}", ovs.remote()),
        format!("--metadata-url={}", server.url()),
        format!("--shared-secret-file={}", secret.display()),
    ];
    let agent = OvnAgent {
        agent: Agent::start(rt, &dir.join("agent.sock"), &args),
        _dir: dir,
    };
    // compute-2's port is served; compute-1's are not in this replica.
    agent.expect(NET_A, "10.0.0.8", (200, VM_4));
    assert_eq!(agent.ask(NET_A, "10.0.0.5").0, 404);
    assert!(agent.agent.running.log().contains("for chassis compute-2"));

    let Some(bare) = LocalOvs::start(None) else {
        return;
    };
    let runtime = format!("--runtime={}", rt.name());
    let ovs_db = format!("--ovs-db={}", bare.remote());
    let sb = format!("--ovn-sb-connection={}", ovn.sb_unix());
    let secret_flag = format!("--shared-secret-file={}", secret.display());
    let (status, _, stderr) = run_binary(&[
        "agent",
        &runtime,
        "--backend=ovn",
        &sb,
        &ovs_db,
        &secret_flag,
        "--listen-socket=/nonexistent/dir/agent.sock",
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no external_ids:system-id"), "{stderr}");
}

/// `/explain` against the replica: found, unbound (not found), two bound ports with one
/// address (ambiguous, both named), a router scope (OVN has none); and before any replica is
/// loaded, unavailable.
fn explain_tells_what_the_replica_says(rt: Runtime) {
    let Some(ovn) = Ovn::start() else { return };
    cloud(&ovn);
    const PORT_5: &str = "aaaaaaaa-0000-4000-8000-000000000005";
    ovn.port(
        NET_A,
        PORT_5,
        "fa:16:3e:00:00:05",
        &["10.0.0.9"],
        VM_3,
        PROJECT,
    );
    // Port 4's address too, as Neutron's and OVN's databases disagreeing leave it (set as a
    // column: `lsp-set-addresses` refuses a duplicate).
    ovn.nbctl(&[
        "set",
        "Logical_Switch_Port",
        PORT_5,
        "addresses=\"fa:16:3e:00:00:05 10.0.0.8\"",
    ]);
    ovn.bind(PORT_5, "compute-1");
    let server = echo_instance();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = [format!("--admin-listen={admin}")];
    let agent = OvnAgent::start_with(rt, &ovn.sb_unix(), "*", &server, &extra);
    agent.expect(NET_A, "10.0.0.5", (200, VM_1));
    let explain = |query: &str| -> serde_json::Value {
        let r = request(admin, &get(&format!("/explain?{query}")));
        assert_eq!(r.status, 200, "{r:?}");
        serde_json::from_str(&r.body_text()).unwrap()
    };
    let e = explain(&format!("ovn-network={NET_A}&ip=10.0.0.5"));
    assert_eq!(
        (e["backend"].as_str(), e["instance"].as_str()),
        (Some("ovn"), Some(VM_1)),
        "{e}"
    );
    assert_eq!(e["southbound"]["connected"], true, "{e}");
    let e = explain(&format!("ovn-network={NET_A}&ip=10.0.0.7"));
    assert_eq!(e["lookup"], "not found", "{e}");
    let mut ambiguous = serde_json::Value::Null;
    let two = eventually(|| {
        ambiguous = explain(&format!("ovn-network={NET_A}&ip=10.0.0.8"));
        ambiguous["lookup"] == "ambiguous"
    });
    assert!(two, "{ambiguous}");
    let ports = ambiguous["ports"].to_string();
    assert!(
        ports.contains(PORT_4) && ports.contains(PORT_5),
        "{ambiguous}"
    );
    let e = explain(&format!("router={NET_A}&ip=10.0.0.5"));
    assert_eq!(e["lookup"], "no network", "{e}");

    // An agent whose Southbound never answers has no replica yet.
    let nowhere = format!("tcp:127.0.0.1:{}", free_port());
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = [format!("--admin-listen={admin}")];
    let _lost = OvnAgent::start_with(rt, &nowhere, "*", &server, &extra);
    let r = request(
        admin,
        &get(&format!("/explain?ovn-network={NET_A}&ip=10.0.0.5")),
    );
    let e: serde_json::Value = serde_json::from_str(&r.body_text()).unwrap();
    assert_eq!(
        (e["lookup"].as_str(), e["southbound"]["loaded"].as_bool()),
        (Some("unavailable"), Some(false)),
        "{e}"
    );
    assert!(
        e["answer"]
            .as_str()
            .unwrap_or_default()
            .starts_with("503: "),
        "{e}"
    );
}
