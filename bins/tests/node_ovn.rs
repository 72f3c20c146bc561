//! `mdproxy node --backend ovn` replacing `neutron-ovn-metadata-agent` end to end, on a real
//! chassis (bins/tests/common/chassis.rs: the chassis' own OVS database, `ovs-vswitchd` with the
//! netdev datapath, `ovn-controller`) against real OVN (NB, SB, northd), with a metadata server
//! on loopback in the root namespace that answers the `X-Instance-ID` it was sent. Nothing but
//! the node provisions the `ovnmeta-` namespaces: the instance's `curl` reaches the node's
//! listener inside its network's namespace through the localport, and the answer names the
//! instance. Root only (skipped otherwise, unless MDPROXY_NETNS_TEST / MDPROXY_OVN_TEST say
//! required).
//!
//! Both runtimes in one chassis (two chassis in one process would share the names the harness
//! derives from the pid): the first node runs on mio, the restarted one on smol.

mod common;

use common::chassis::{self, fetches, ns_of, veth, Chassis};
use common::ovn::Ovn;
use common::ovn_node::{
    bound_instance, diagnose, metadata_server, nb_cfg, registered, start_node, uuid, write_secret,
    META, PROJECT,
};
use common::{eventually, Running, Runtime, TempDir};

const VM_1: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e01";
const VM_2: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e02";

/// The node for `node`, on the Southbound's Unix socket.
fn start(rt: Runtime, ovn: &Ovn, node: &Chassis, files: &TempDir, server: &str) -> Running {
    let sb = [format!("--ovn-sb-connection={}", ovn.sb_unix())];
    start_node(rt, &sb, node, files, server)
}

#[test]
fn node_provisions_serves_adopts_and_tears_down_ovn_networks() {
    let Some(ovn) = Ovn::start() else { return };
    let Some(node) = Chassis::start(&ovn) else {
        return;
    };
    let files = TempDir::new();
    write_secret(&files);
    let server = metadata_server();

    // Network A with one instance bound here, before the node starts.
    let net_a = uuid();
    let lp_a = ovn.network(&net_a, "net-a", &["10.0.0.2/24"]);
    let mac_1 = "fa:16:3e:00:01:05";
    let ips_1 = ["10.0.0.5/24"];
    let vm_1 = bound_instance(&ovn, &node, &net_a, VM_1, mac_1, &ips_1, "10.0.0.2");

    let mut mdproxy = start(Runtime::Mio, &ovn, &node, &files, &server.url());
    assert!(
        eventually(|| fetches(&vm_1, META, VM_1)),
        "instance 1 never read its id through the node:\n{}",
        diagnose(&mdproxy, &node)
    );
    assert!(mdproxy.is_running());
    let seen = server.recorded();
    let last = seen.last().expect("a request reached the server");
    assert_eq!(last.path(), "/openstack/latest/meta_data.json");
    assert_eq!(last.header_values("x-forwarded-for"), ["10.0.0.5"]);
    assert_eq!(last.header_values("x-tenant-id"), [PROJECT]);
    // The node's own provisioning, as the anchor's: the OVS port carries the localport.
    let (outer_a, _) = veth(&net_a);
    assert_eq!(
        node.vsctl(&["get", "Interface", &outer_a, "external_ids:iface-id"])
            .trim(),
        format!("\"{}\"", lp_a.port_id)
    );
    assert_eq!(node.vsctl(&["port-to-br", &outer_a]).trim(), node.bridge);

    // Registered as Neutron's agent, nb_cfg followed.
    assert!(
        eventually(|| registered(&ovn, &node)),
        "not registered on Chassis_Private"
    );
    // A new nb_cfg (what `ovn-nbctl --wait=sb sync` and Neutron's agent liveness check bump)
    // is followed.
    let before = nb_cfg(&ovn);
    ovn.nbctl(&["--wait=sb", "sync"]);
    assert_ne!(nb_cfg(&ovn), before, "nb_cfg did not move");
    assert!(
        eventually(|| registered(&ovn, &node)),
        "nb_cfg not followed"
    );

    // A second network (with IPv6) provisioned and served while the first keeps serving.
    let before_a = node.identity(&net_a);
    let net_b = uuid();
    ovn.network(&net_b, "net-b", &["10.1.0.2/24", "fd00:1::2/64"]);
    let mac_2 = "fa:16:3e:00:02:05";
    let ips_2 = ["10.1.0.5/24", "fd00:1::5/64"];
    let vm_2 = bound_instance(&ovn, &node, &net_b, VM_2, mac_2, &ips_2, "10.1.0.2");
    assert!(
        eventually(|| fetches(&vm_2, META, VM_2)),
        "instance 2 never read its id:\n{}",
        diagnose(&mdproxy, &node)
    );
    // And over IPv6, to fe80::a9fe:a9fe on the instance's link (looked up by its MAC).
    let v6 = "http://[fe80::a9fe:a9fe%25eth0]/openstack/latest/meta_data.json";
    assert!(
        eventually(|| fetches(&vm_2, v6, VM_2)),
        "[fe80::a9fe:a9fe] not served to instance 2:\n{}",
        diagnose(&mdproxy, &node)
    );
    assert!(fetches(&vm_1, META, VM_1), "network A stopped answering");
    assert_eq!(node.identity(&net_a), before_a, "network A was touched");

    // A restart (on the other runtime) adopts: both served again, nothing recreated.
    let before_b = node.identity(&net_b);
    mdproxy.signal(libc::SIGTERM);
    assert!(mdproxy.wait_exit().success(), "{}", mdproxy.log());
    let mut mdproxy = start(Runtime::Smol, &ovn, &node, &files, &server.url());
    assert!(
        eventually(|| fetches(&vm_1, META, VM_1) && fetches(&vm_2, META, VM_2)),
        "not served after a restart:\n{}",
        diagnose(&mdproxy, &node)
    );
    assert_eq!(node.identity(&net_a), before_a, "network A recreated");
    assert_eq!(node.identity(&net_b), before_b, "network B recreated");
    let log = mdproxy.log();
    assert!(
        !log.contains("actions performed"),
        "the restart changed things:\n{log}"
    );

    // The last VIF of A leaves: its listener stops, namespace, veth and OVS port go; B stays.
    node.unplug_instance(&vm_1);
    let gone = || {
        !chassis::namespaces().contains(&ns_of(&net_a))
            && chassis::link(None, &outer_a).is_none()
            && node
                .vsctl(&["--if-exists", "get", "Port", &outer_a, "name"])
                .trim()
                .is_empty()
    };
    assert!(
        eventually(gone),
        "network A not torn down:\n{}",
        diagnose(&mdproxy, &node)
    );
    mdproxy.wait_for_log(&format!("OVN network {net_a}: no longer served here"));
    assert!(fetches(&vm_2, META, VM_2), "network B stopped answering");
    assert_eq!(node.identity(&net_b), before_b, "network B was touched");
    assert!(mdproxy.is_running(), "{}", mdproxy.log());
    // The real ovsdb-server compares the long poll's rows as the node reads them.
    let log = mdproxy.log();
    assert!(
        !log.contains("ended a wait"),
        "the long poll fell back:\n{log}"
    );
}
