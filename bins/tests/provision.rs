//! Provisioning the `ovnmeta-` namespaces on a real chassis (bins/tests/common/chassis.rs:
//! the chassis' own OVS database, `ovs-vswitchd` with the netdev datapath, `ovn-controller`)
//! against real OVN (NB, SB, northd: bins/tests/common/ovn.rs), with `mdproxy provision` doing
//! what `neutron-ovn-metadata-agent` does and nothing else provisioning. Each step is checked
//! for real: `ip netns`, `ip -j addr`, `ovs-vsctl`, `ovn-sbctl`, and TCP from the instance's
//! namespace to 169.254.169.254:80, where the test itself listens inside `ovnmeta-…`.
//! Root only (skipped otherwise, unless MDPROXY_NETNS_TEST / MDPROXY_OVN_TEST say required).
//!
//! And, needing no root, the core's transactions (`mdproxy_core::ovsdb::transact`) through the
//! binary's OVSDB client against a real `ovsdb-server` with the vswitch schema and a real SB:
//! the rows appear as `ovs-vsctl` and `ovn-sbctl` show them, errors come back typed.

mod common;
// The binary's blocking one-shot client, as the executor uses it.
#[path = "../src/provision/ovsdb.rs"]
mod ovsdb_client;

use std::path::Path;
use std::process::Command;

use common::chassis::{self, addrs, fetches, ns_of, veth, Chassis, NsProcess};
use common::ovn::{LocalOvs, Ovn};
use common::{eventually, TempDir};
use mdproxy_core::ovsdb::transact::{self, TransactError};
use mdproxy_core::provision::metadata_agent_id;
use mdproxy_core::scope::Uuid;

const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";
const VM_1: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e01";
const VM_2: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e02";

fn uuid() -> String {
    chassis::run("cat", &["/proc/sys/kernel/random/uuid"])
        .trim()
        .to_owned()
}

/// `mdproxy provision` once; the actions it performed, one a line.
fn provision(ovn: &Ovn, node: &Chassis) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_mdproxy"))
        .args([
            "provision",
            "--ovs-db",
            &node.ovs_remote(),
            "--sb-db",
            &ovn.sb_unix(),
        ])
        .output()
        .expect("run mdproxy provision");
    assert!(
        out.status.success(),
        "mdproxy provision failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        node.logs()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Checks network `net`'s namespace for real: the veth ends, MAC, addresses, up, the OVS
/// port on the bridge with the localport as iface-id, the checksum rule.
fn check_provisioned(node: &Chassis, net: &str, localport: &str, mac: &str, want: &[&str]) {
    let ns = ns_of(net);
    let (outer, inner) = veth(net);
    assert!(
        chassis::namespaces().contains(&ns),
        "no {ns}: {:?}",
        chassis::namespaces()
    );
    let i = chassis::link(Some(&ns), &inner).unwrap_or_else(|| panic!("no {inner} in {ns}"));
    assert_eq!(i["address"], mac, "{inner}'s MAC");
    assert!(
        i["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP")),
        "{inner} is down"
    );
    let got: Vec<String> = addrs(&i)
        .into_iter()
        .filter(|a| !a.starts_with("fe80:") || a == "fe80::a9fe:a9fe/128")
        .collect();
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{inner}'s addresses");
    let o =
        chassis::link(None, &outer).unwrap_or_else(|| panic!("no {outer} in the root namespace"));
    assert!(
        o["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP")),
        "{outer} is down"
    );
    assert_eq!(o["link_type"], "ether");
    assert_eq!(node.vsctl(&["port-to-br", &outer]).trim(), node.bridge);
    assert_eq!(
        node.vsctl(&["get", "Interface", &outer, "external_ids:iface-id"])
            .trim(),
        format!("\"{localport}\"")
    );
    // On this netdev bridge: the anchor's rule, and with IPv6 its ip6tables twin.
    let v6 = want.iter().any(|a| a == "fe80::a9fe:a9fe/128");
    for (table, expected) in [("iptables", 1), ("ip6tables", usize::from(v6))] {
        let args = [
            "netns",
            "exec",
            &ns,
            table,
            "-w",
            "-t",
            "mangle",
            "-S",
            "POSTROUTING",
        ];
        let rules = chassis::run("ip", &args);
        let rule = "-A POSTROUTING -p tcp -m tcp -j CHECKSUM --checksum-fill";
        assert_eq!(
            rules.matches(rule).count(),
            expected,
            "{ns}'s {table} mangle POSTROUTING:\n{rules}"
        );
    }
}

/// An HTTP server inside `ns` on `bind` port 80 (`169.254.169.254`, or
/// `fe80::a9fe:a9fe%<link>`) serving `token` as /token.
fn listener(ns: &str, dir: &TempDir, token: &str, bind: &str) -> NsProcess {
    let root = dir.join(token);
    std::fs::create_dir_all(&root).expect("server dir");
    std::fs::write(root.join("token"), token).expect("token file");
    let root = root.to_str().expect("utf-8").to_owned();
    let args = [
        "python3",
        "-m",
        "http.server",
        "80",
        "--bind",
        bind,
        "--directory",
        &root,
    ];
    NsProcess::spawn(ns, &args)
}

/// Whether `GET http://169.254.169.254/token` from `ns` answers `token`.
fn reaches(ns: &str, token: &str) -> bool {
    fetches(ns, "http://169.254.169.254/token", token)
}

/// What the namespaces, OVS and the listener look like, for a failure message.
fn diagnose(node: &Chassis, nss: &[&str]) -> String {
    let mut s = node.vsctl(&["show"]);
    for ns in nss {
        for args in [&["addr"][..], &["route"][..], &["neigh"][..]] {
            let mut all = vec!["-n", ns];
            all.extend_from_slice(args);
            let o = chassis::output("ip", &all);
            s += &format!(
                "--- ip -n {ns} {args:?}\n{}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
        let o = chassis::output("ip", &["netns", "exec", ns, "ss", "-ltn"]);
        s += &format!(
            "--- ss -ltn in {ns}\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let o = chassis::output(
        "ip",
        &[
            "netns",
            "exec",
            nss[0],
            "curl",
            "-sv",
            "--max-time",
            "3",
            "http://169.254.169.254/token",
        ],
    );
    s += &format!(
        "--- curl\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    s + &node.logs()
}

#[test]
fn provisions_adopts_and_tears_down_on_a_real_chassis() {
    let Some(ovn) = Ovn::start() else { return };
    let Some(node) = Chassis::start(&ovn) else {
        return;
    };
    let dir = TempDir::new();

    // A network with one instance bound here.
    let net_a = uuid();
    let lp_a = ovn.network(&net_a, "net-a", &["10.0.0.2/24"]);
    let port_1 = uuid();
    let mac_1 = "fa:16:3e:00:01:05";
    ovn.port(&net_a, &port_1, mac_1, &["10.0.0.5/24"], VM_1, PROJECT);
    let vm_1 = node.plug_instance(&port_1, mac_1, "10.0.0.5/24", "10.0.0.2");
    let claimed = |port: &str| {
        ovn.port_binding(port)
            .is_some_and(|r| !r.text("chassis").is_empty())
    };
    assert!(
        eventually(|| claimed(&port_1)),
        "ovn-controller did not claim the instance port:\n{}",
        node.logs()
    );

    let done = provision(&ovn, &node);
    assert!(
        done.iter().any(|a| a.starts_with("CreateNamespace")),
        "{done:?}"
    );
    check_provisioned(
        &node,
        &net_a,
        &lp_a.port_id,
        &lp_a.mac,
        &["10.0.0.2/24", "169.254.169.254/32"],
    );

    // Registered as Neutron's agent: the uuid5 id, and nb_cfg followed.
    let cond = format!("name={}", node.name);
    let private = ovn.sb_find("Chassis_Private", &[&cond]);
    let ids = private
        .first()
        .expect("Chassis_Private")
        .map("external_ids");
    let want_id = metadata_agent_id(&node.name)
        .expect("the chassis name is a uuid")
        .to_string();
    assert_eq!(ids.get("neutron:ovn-metadata-id"), Some(&want_id));
    let nb_cfg = ovn
        .sb_find("SB_Global", &[])
        .first()
        .expect("SB_Global")
        .text("nb_cfg");
    assert_eq!(ids.get("neutron:ovn-metadata-sb-cfg"), Some(&nb_cfg));

    // L3 (and TCP, with the checksum rule) from the instance to 169.254.169.254 in ovnmeta-A.
    let _server_a = listener(&ns_of(&net_a), &dir, "net-a", "169.254.169.254");
    assert!(
        eventually(|| reaches(&vm_1, "net-a")),
        "169.254.169.254 not reachable from {vm_1}:\n{}",
        diagnose(&node, &[&vm_1, &ns_of(&net_a)])
    );

    // A restart adopts: nothing to do, nothing recreated.
    let before = node.identity(&net_a);
    assert_eq!(provision(&ovn, &node), Vec::<String>::new());
    assert_eq!(node.identity(&net_a), before);

    // A second network, while the first stays as it was and keeps answering.
    let net_b = uuid();
    // With an IPv6 subnet: fe80::a9fe:a9fe/128 too.
    let lp_b = ovn.network(&net_b, "net-b", &["10.1.0.2/24", "fd00:1::2/64"]);
    let port_2 = uuid();
    let mac_2 = "fa:16:3e:00:02:05";
    ovn.port(
        &net_b,
        &port_2,
        mac_2,
        &["10.1.0.5/24", "fd00:1::5/64"],
        VM_2,
        PROJECT,
    );
    let vm_2 = node.plug_instance(&port_2, mac_2, "10.1.0.5/24", "10.1.0.2");
    assert!(
        eventually(|| claimed(&port_2)),
        "port 2 not claimed:\n{}",
        node.logs()
    );
    let done = provision(&ovn, &node);
    assert!(
        done.iter().all(|a| !a.contains(&net_a[..10])),
        "network A touched: {done:?}"
    );
    check_provisioned(
        &node,
        &net_b,
        &lp_b.port_id,
        &lp_b.mac,
        &[
            "10.1.0.2/24",
            "169.254.169.254/32",
            "fd00:1::2/64",
            "fe80::a9fe:a9fe/128",
        ],
    );
    assert_eq!(node.identity(&net_a), before);
    let _server_b = listener(&ns_of(&net_b), &dir, "net-b", "169.254.169.254");
    // And over IPv6, to fe80::a9fe:a9fe on the instance's link.
    let (_, inner_b) = veth(&net_b);
    let v6 = format!("fe80::a9fe:a9fe%{inner_b}");
    let _server_b6 = listener(&ns_of(&net_b), &dir, "net-b-v6", &v6);
    assert!(
        eventually(|| fetches(&vm_2, "http://[fe80::a9fe:a9fe%25eth0]/token", "net-b-v6")),
        "[fe80::a9fe:a9fe] not reachable from {vm_2}:\n{}",
        diagnose(&node, &[&vm_2, &ns_of(&net_b)])
    );
    assert!(
        eventually(|| reaches(&vm_2, "net-b")),
        "169.254.169.254 not reachable from {vm_2}"
    );
    assert!(reaches(&vm_1, "net-a"), "network A stopped answering");

    // The localport's addresses change (a subnet added): adjusted in place.
    // (As Neutron updates a trusted port: addresses and cidrs, no port security.)
    let addresses = format!("{} 10.1.0.2 10.2.0.2 fd00:1::2", lp_b.mac);
    ovn.nbctl(&[
        "--wait=sb",
        "lsp-set-addresses",
        &lp_b.port_id,
        &addresses,
        "--",
        "set",
        "Logical_Switch_Port",
        &lp_b.port_id,
        "external_ids:\"neutron:cidrs\"=\"10.1.0.2/24 10.2.0.2/24 fd00:1::2/64\"",
    ]);
    let done = provision(&ovn, &node);
    assert_eq!(done.len(), 1, "{done:?}");
    check_provisioned(
        &node,
        &net_b,
        &lp_b.port_id,
        &lp_b.mac,
        &[
            "10.1.0.2/24",
            "10.2.0.2/24",
            "169.254.169.254/32",
            "fd00:1::2/64",
            "fe80::a9fe:a9fe/128",
        ],
    );

    // The last VIF of A leaves: A is torn down (namespace, veth, OVS port), B stays.
    let before_b = node.identity(&net_b);
    node.unplug_instance(&vm_1);
    assert!(eventually(|| !claimed(&port_1)), "port 1 still claimed");
    let done = provision(&ovn, &node);
    assert!(
        done.iter().any(|a| a.starts_with("DeleteNamespace")),
        "{done:?}"
    );
    let (outer_a, _) = veth(&net_a);
    assert!(!chassis::namespaces().contains(&ns_of(&net_a)));
    assert!(
        chassis::link(None, &outer_a).is_none(),
        "{outer_a} left behind"
    );
    assert!(
        node.vsctl(&["--if-exists", "get", "Port", &outer_a, "name"])
            .trim()
            .is_empty(),
        "OVS port {outer_a} left"
    );
    assert_eq!(node.identity(&net_b), before_b);
    assert!(reaches(&vm_2, "net-b"), "network B stopped answering");

    // At start, a stale ovnmeta- namespace (a network gone while we were down) is removed.
    let stale = ns_of(&uuid());
    chassis::run("ip", &["netns", "add", &stale]);
    let done = provision(&ovn, &node);
    assert_eq!(done, vec![format!("DeleteNamespace {{ ns: {stale:?} }}")]);
    assert!(!chassis::namespaces().contains(&stale));
    assert!(Path::new("/run/netns").join(ns_of(&net_b)).exists());
}

/// `ovs-vsctl --db=REMOTE --timeout=15 ARGS…` on a database no vswitchd serves.
fn vsctl(remote: &str, args: &[&str]) -> String {
    let db = format!("--db={remote}");
    let mut all = vec![db.as_str(), "--timeout=15", "--no-wait"];
    all.extend_from_slice(args);
    chassis::run("ovs-vsctl", &all)
}

#[test]
fn transactions_against_real_ovsdb_servers() {
    let chassis_name = uuid();
    let Some(ovs) = LocalOvs::start(Some(&chassis_name)) else {
        return;
    };
    let remote = ovs.remote();
    vsctl(
        &remote,
        &[
            "add-br",
            "br-int",
            "--",
            "set",
            "Bridge",
            "br-int",
            "datapath_type=netdev",
        ],
    );
    vsctl(
        &remote,
        &["set", "Open_vSwitch", ".", "external_ids:ovn-bridge=br-int"],
    );
    let mut c = ovsdb_client::Client::connect(&remote, None).expect("connect");

    // Plug: Port and Interface tapX0 on br-int, iface-id set; the Port row's uuid returned.
    let reply = c
        .transact(transact::add_port("br-int", "tapabcdef01-20", "lp-1"))
        .unwrap();
    let port = transact::check_add_port(reply.as_ref(), "br-int").expect("plugged");
    assert_eq!(
        vsctl(&remote, &["list-ports", "br-int"]).trim(),
        "tapabcdef01-20"
    );
    assert_eq!(
        vsctl(&remote, &["get", "Port", "tapabcdef01-20", "_uuid"]).trim(),
        port.to_string()
    );
    assert_eq!(
        vsctl(
            &remote,
            &[
                "get",
                "Interface",
                "tapabcdef01-20",
                "external_ids:iface-id"
            ]
        )
        .trim(),
        "lp-1"
    );

    // The same name again: the unique index refuses it, typed, nothing committed.
    let reply = c
        .transact(transact::add_port("br-int", "tapabcdef01-20", "lp-1"))
        .unwrap();
    match transact::check_add_port(reply.as_ref(), "br-int") {
        Err(TransactError::Op { error, .. }) => assert_eq!(error, "constraint violation"),
        other => panic!("{other:?}"),
    }
    let reply = c
        .transact(transact::add_port("br-nope", "tapother", "lp-2"))
        .unwrap();
    assert_eq!(
        transact::check_add_port(reply.as_ref(), "br-nope"),
        Err(TransactError::NoRow("bridge br-nope".into()))
    );
    assert_eq!(
        vsctl(&remote, &["list-ports", "br-int"]).trim(),
        "tapabcdef01-20"
    );

    // Observed as the planner sees it; retagged; unplugged (Port and Interface rows gone).
    let reply = c.transact(transact::select_ovs()).unwrap();
    let state = transact::parse_ovs(reply.as_ref()).expect("state");
    assert_eq!(state.system_id.as_deref(), Some(chassis_name.as_str()));
    assert_eq!(
        state.integration().map(|b| b.datapath_type.as_str()),
        Some("netdev")
    );
    let p = state
        .ports
        .iter()
        .find(|p| p.name == "tapabcdef01-20")
        .expect("port");
    assert_eq!(
        (p.uuid, p.bridge.as_deref(), p.iface_id.as_deref()),
        (port, Some("br-int"), Some("lp-1"))
    );
    let iface = p.iface.expect("interface");
    let reply = c.transact(transact::set_iface_id(iface, "lp-9")).unwrap();
    transact::check_set_iface_id(reply.as_ref()).expect("retagged");
    assert_eq!(
        vsctl(
            &remote,
            &[
                "get",
                "Interface",
                "tapabcdef01-20",
                "external_ids:iface-id"
            ]
        )
        .trim(),
        "lp-9"
    );
    let reply = c.transact(transact::delete_port(port)).unwrap();
    transact::check_delete_port(reply.as_ref()).expect("unplugged");
    assert_eq!(vsctl(&remote, &["list-ports", "br-int"]).trim(), "");
    assert_eq!(
        vsctl(
            &remote,
            &["--columns=name", "find", "Interface", "name=tapabcdef01-20"]
        )
        .trim(),
        ""
    );

    // The Southbound: registration on Chassis_Private, as the anchor's db_add / db_set.
    let Some(ovn) = Ovn::start() else { return };
    ovn.chassis(&chassis_name, "127.0.0.2");
    let mut sb = ovsdb_client::Client::connect(&ovn.sb_unix(), None).expect("connect SB");
    let id = metadata_agent_id(&chassis_name).expect("uuid chassis");
    let reply = sb
        .transact(transact::register_agent(&chassis_name, id, 3))
        .unwrap();
    transact::check_chassis_mutate(reply.as_ref(), &chassis_name).expect("registered");
    let ids = |ovn: &Ovn| {
        let cond = format!("name={chassis_name}");
        ovn.sb_find("Chassis_Private", &[&cond])
            .first()
            .expect("row")
            .map("external_ids")
    };
    let got = ids(&ovn);
    assert_eq!(got.get("neutron:ovn-metadata-id"), Some(&id.to_string()));
    assert_eq!(
        got.get("neutron:ovn-metadata-sb-cfg").map(String::as_str),
        Some("3")
    );
    // Registering again keeps the id there (db_add), and replaces the sb-cfg (db_set).
    let other = Uuid(7);
    let reply = sb
        .transact(transact::register_agent(&chassis_name, other, 5))
        .unwrap();
    transact::check_chassis_mutate(reply.as_ref(), &chassis_name).expect("registered again");
    let reply = sb
        .transact(transact::report_sb_cfg(&chassis_name, 6))
        .unwrap();
    transact::check_chassis_mutate(reply.as_ref(), &chassis_name).expect("reported");
    let got = ids(&ovn);
    assert_eq!(got.get("neutron:ovn-metadata-id"), Some(&id.to_string()));
    assert_eq!(
        got.get("neutron:ovn-metadata-sb-cfg").map(String::as_str),
        Some("6")
    );
    let reply = sb
        .transact(transact::report_sb_cfg("no-such-chassis", 1))
        .unwrap();
    assert_eq!(
        transact::check_chassis_mutate(reply.as_ref(), "no-such-chassis"),
        Err(TransactError::NoRow(
            "Chassis_Private row no-such-chassis".into()
        ))
    );
}
