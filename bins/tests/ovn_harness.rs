//! The real-OVN harness (`common::ovn`) against the real servers: what Neutron-shaped NB writes
//! turn into in the SB once northd has run, what binding and address changes do there, that a
//! restarted SB keeps its rows, that a clustered SB survives losing a member, and that dropping
//! the harness leaves no process or file behind. Each test prints "skipped: OVN not installed"
//! without the binaries (a failure under `MDPROXY_OVN_TEST=required`).

mod common;

use std::path::Path;

use common::ovn::{Ovn, SbCluster};

const NET: &str = "5a1c9e3b-7d2f-4e6a-8b0c-1f2e3d4c5b6a";
const PORT_A: &str = "1d000f9c-c806-4e81-a743-4944c7e983db";
const PORT_B: &str = "2e111fad-d917-4f92-b854-5a55d8fa94ec";
const VM_A: &str = "8a3f4c1e-2b5d-4e6f-9a0b-1c2d3e4f5a6b";
const VM_B: &str = "9b4a5d2f-3c6e-4f7a-8b1c-2d3e4f5a6b7c";
const PROJECT: &str = "c5d4e3f2a1b04c9d8e7f6a5b4c3d2e1f";

/// The uuid of the Chassis row named `name`.
fn chassis_uuid(ovn: &Ovn, name: &str) -> String {
    let rows = ovn.sb_find("Chassis", &[&format!("name={name}")]);
    assert_eq!(rows.len(), 1, "one Chassis {name}");
    rows[0].text("_uuid")
}

#[test]
fn neutron_network_and_ports_become_port_bindings() {
    let Some(ovn) = Ovn::start() else { return };
    let localport = ovn.network(NET, "private", &["50.0.0.2/24"]);
    ovn.port(
        NET,
        PORT_A,
        "fa:16:3e:e1:ac:11",
        &["50.0.0.44"],
        VM_A,
        PROJECT,
    );
    ovn.port(
        NET,
        PORT_B,
        "fa:16:3e:e1:ac:12",
        &["50.0.0.45/24", "2001:db8::45"],
        VM_B,
        PROJECT,
    );

    // The network's datapath: named after the Neutron id, not identified by it.
    let datapaths = ovn.sb_find("Datapath_Binding", &[]);
    assert_eq!(datapaths.len(), 1, "{datapaths:?}");
    let dp = &datapaths[0];
    let dp_ids = dp.map("external_ids");
    assert_eq!(dp_ids["name"], format!("neutron-{NET}"));
    assert_eq!(dp_ids["name2"], "private");
    assert_ne!(dp.text("_uuid"), NET);

    let a = ovn.port_binding(PORT_A).expect("a Port_Binding for port A");
    assert_eq!(a.set("mac"), ["fa:16:3e:e1:ac:11 50.0.0.44"]);
    assert_eq!(a.text("type"), "");
    assert_eq!(a.text("datapath"), dp.text("_uuid"));
    assert_eq!(a.set("chassis"), Vec::<String>::new(), "not bound yet");
    let ids = a.map("external_ids");
    assert_eq!(ids["neutron:device_id"], VM_A);
    assert_eq!(ids["neutron:project_id"], PROJECT);
    assert_eq!(ids["neutron:cidrs"], "50.0.0.44/24");
    assert_eq!(ids["neutron:device_owner"], "compute:nova");
    assert_eq!(ids["neutron:network_name"], format!("neutron-{NET}"));
    assert!(ids.contains_key("neutron:port_name"), "{ids:?}");

    let b = ovn.port_binding(PORT_B).expect("a Port_Binding for port B");
    assert_eq!(b.set("mac"), ["fa:16:3e:e1:ac:12 50.0.0.45 2001:db8::45"]);
    assert_eq!(
        b.map("external_ids")["neutron:cidrs"],
        "50.0.0.45/24 2001:db8::45/64"
    );
    assert_eq!(b.map("external_ids")["neutron:device_id"], VM_B);

    let meta = ovn
        .port_binding(&localport.port_id)
        .expect("the localport's Port_Binding");
    assert_eq!(meta.text("type"), "localport");
    assert_eq!(meta.set("mac"), [format!("{} 50.0.0.2", localport.mac)]);
    let ids = meta.map("external_ids");
    assert_eq!(ids["neutron:device_owner"], "network:distributed");
    assert_eq!(ids["neutron:device_id"], format!("ovnmeta-{NET}"));
    assert_eq!(ids["neutron:cidrs"], "50.0.0.2/24");
    assert_eq!(meta.text("datapath"), dp.text("_uuid"));

    // Both addresses answer with the same rows.
    let over_tcp = ovn.sb_tcp();
    assert!(over_tcp.starts_with("tcp:127.0.0.1:"), "{over_tcp}");
    let out = std::process::Command::new("ovsdb-client")
        .args([
            "--timeout=10",
            "dump",
            &over_tcp,
            "OVN_Southbound",
            "Port_Binding",
            "logical_port",
        ])
        .output()
        .expect("run ovsdb-client");
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(dump.contains(PORT_A) && dump.contains(PORT_B), "{dump}");

    // Deleting a port deletes its binding.
    ovn.delete_port(PORT_B);
    assert!(ovn.port_binding(PORT_B).is_none());
    assert!(ovn.port_binding(PORT_A).is_some());
}

#[test]
fn bind_sets_chassis_and_set_addresses_changes_mac() {
    let Some(ovn) = Ovn::start() else { return };
    ovn.network(NET, "private", &["50.0.0.2/24"]);
    ovn.port(
        NET,
        PORT_A,
        "fa:16:3e:e1:ac:11",
        &["50.0.0.44"],
        VM_A,
        PROJECT,
    );
    ovn.chassis("hv-1", "127.0.0.2");
    ovn.chassis("hv-2", "127.0.0.3");
    let private = ovn.sb_find("Chassis_Private", &["name=hv-1"]);
    assert_eq!(
        private.len(),
        1,
        "a Chassis_Private row, as ovn-controller makes"
    );
    assert_eq!(private[0].text("chassis"), chassis_uuid(&ovn, "hv-1"));

    ovn.bind(PORT_A, "hv-1");
    let a = ovn.port_binding(PORT_A).unwrap();
    assert_eq!(a.text("chassis"), chassis_uuid(&ovn, "hv-1"));
    assert_eq!(a.text("up"), "true");
    assert_eq!(a.map("options")["requested-chassis"], "hv-1");

    // Rebinding moves it.
    ovn.bind(PORT_A, "hv-2");
    let a = ovn.port_binding(PORT_A).unwrap();
    assert_eq!(a.text("chassis"), chassis_uuid(&ovn, "hv-2"));
    assert_eq!(a.map("options")["requested-chassis"], "hv-2");

    ovn.set_addresses(PORT_A, "fa:16:3e:00:00:99", &["50.0.0.99", "50.0.0.98"]);
    let a = ovn.port_binding(PORT_A).unwrap();
    assert_eq!(a.set("mac"), ["fa:16:3e:00:00:99 50.0.0.99 50.0.0.98"]);
    assert_eq!(
        a.map("external_ids")["neutron:cidrs"],
        "50.0.0.99/24 50.0.0.98/24"
    );
    assert_eq!(a.text("chassis"), chassis_uuid(&ovn, "hv-2"), "still bound");

    ovn.unbind(PORT_A);
    let a = ovn.port_binding(PORT_A).unwrap();
    assert_eq!(a.set("chassis"), Vec::<String>::new());
    assert_eq!(a.text("up"), "false");
}

#[test]
fn restarted_sb_keeps_its_rows_and_northd_reconnects() {
    let Some(mut ovn) = Ovn::start() else { return };
    ovn.network(NET, "private", &["50.0.0.2/24"]);
    ovn.port(
        NET,
        PORT_A,
        "fa:16:3e:e1:ac:11",
        &["50.0.0.44"],
        VM_A,
        PROJECT,
    );
    ovn.chassis("hv-1", "127.0.0.2");
    ovn.bind(PORT_A, "hv-1");
    let (unix, tcp) = (ovn.sb_unix(), ovn.sb_tcp());
    let socket = unix.strip_prefix("unix:").unwrap().to_owned();

    ovn.stop_sb();
    assert!(
        !Path::new(&socket).exists(),
        "the stopped SB removed its socket"
    );
    ovn.start_sb();
    assert_eq!((ovn.sb_unix(), ovn.sb_tcp()), (unix, tcp), "same addresses");
    let a = ovn
        .port_binding(PORT_A)
        .expect("the row survived the restart");
    assert_eq!(a.text("chassis"), chassis_uuid(&ovn, "hv-1"));

    // northd found the new server: an NB change reaches it.
    ovn.restart_sb();
    ovn.sync();
    ovn.port(
        NET,
        PORT_B,
        "fa:16:3e:e1:ac:12",
        &["50.0.0.45"],
        VM_B,
        PROJECT,
    );
    let b = ovn
        .port_binding(PORT_B)
        .expect("northd wrote a port after the restarts");
    assert_eq!(b.set("mac"), ["fa:16:3e:e1:ac:12 50.0.0.45"]);
}

#[test]
fn dropping_the_harness_kills_its_processes_and_removes_its_files() {
    let Some(ovn) = Ovn::start() else { return };
    let pids = ovn.pids();
    assert_eq!(pids.len(), 3);
    let dir = ovn.dir().join("");
    assert!(pids
        .iter()
        .all(|p| Path::new(&format!("/proc/{p}")).exists()));
    drop(ovn);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still exists"
        );
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn sb_cluster_elects_a_leader_and_survives_losing_it() {
    let Some(mut cluster) = SbCluster::start() else {
        return;
    };
    let remotes = cluster.remotes();
    assert_eq!(remotes.split(',').count(), 3, "{remotes}");
    let leader = cluster.leader();
    cluster.datapath(NET, "private");
    cluster.port(
        NET,
        PORT_A,
        "fa:16:3e:e1:ac:11",
        &["50.0.0.44"],
        VM_A,
        PROJECT,
    );
    cluster.chassis("hv-1", "127.0.0.2");
    cluster.bind(PORT_A, "hv-1");

    cluster.kill(leader);
    let next = cluster.leader();
    assert_ne!(next, leader, "a killed member cannot lead");
    // The two left still commit (a majority) and both serve what was written before and after.
    cluster.port(
        NET,
        PORT_B,
        "fa:16:3e:e1:ac:12",
        &["50.0.0.45"],
        VM_B,
        PROJECT,
    );
    for member in (0..3).filter(|&m| m != leader) {
        let rows = cluster
            .find_on(member, "Port_Binding", &[])
            .expect("a survivor answers");
        let mut ports: Vec<String> = rows.iter().map(|r| r.text("logical_port")).collect();
        ports.sort();
        assert_eq!(ports, [PORT_A, PORT_B], "member {member}");
        let a = rows
            .iter()
            .find(|r| r.text("logical_port") == PORT_A)
            .unwrap();
        assert_eq!(a.set("mac"), ["fa:16:3e:e1:ac:11 50.0.0.44"]);
        assert_eq!(a.map("external_ids")["neutron:device_id"], VM_A);
        assert_eq!(a.set("chassis").len(), 1, "still bound");
    }

    // The killed member rejoins and catches up.
    cluster.revive(leader);
    let caught_up = common::eventually(|| {
        cluster
            .find_on(leader, "Port_Binding", &[])
            .is_some_and(|rows| rows.len() == 2)
    });
    assert!(
        caught_up,
        "member {leader} did not catch up:\n{}",
        cluster.logs()
    );
}
