//! `mdproxy node --backend ovn` on a [`Chassis`] against an [`Ovn`]: what the node tests
//! (`node_ovn.rs` over a Unix socket, `node_ovn_ssl.rs` over `ssl:`) share.

use std::path::Path;

use mdproxy_core::provision::metadata_agent_id;

use super::chassis::{self, Chassis};
use super::ovn::Ovn;
use super::{eventually, ok_response, Reply, Running, Runtime, TempDir, Upstream};

pub const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";
pub const META: &str = "http://169.254.169.254/openstack/latest/meta_data.json";

/// A fresh random UUID, as Neutron's ids are.
pub fn uuid() -> String {
    chassis::run("cat", &["/proc/sys/kernel/random/uuid"])
        .trim()
        .to_owned()
}

/// The metadata server: answers the `X-Instance-ID` the node resolved and signed for.
pub fn metadata_server() -> Upstream {
    Upstream::start_tcp(|req| {
        let id = req.header_values("x-instance-id").join(",");
        Reply::Send(ok_response(id.as_bytes()))
    })
}

/// `files/secret`, the node's shared secret.
pub fn write_secret(files: &TempDir) {
    std::fs::write(files.join("secret"), "s3cr3t\n").expect("secret");
}

/// `mdproxy node --backend ovn` for `node`, reaching the Southbound with `sb` (the
/// `--ovn-sb-*` flags), reading it every 0.1 s.
pub fn start_node(
    rt: Runtime,
    sb: &[String],
    node: &Chassis,
    files: &TempDir,
    server: &str,
) -> Running {
    let mut args = vec!["node".to_owned(), "--backend=ovn".to_owned()];
    args.extend_from_slice(sb);
    args.extend([
        format!("--ovs-db={}", node.ovs_remote()),
        "--ovn-poll-interval=0.1".to_owned(),
        format!("--shared-secret-file={}", files.join("secret").display()),
        format!("--metadata-url={server}"),
    ]);
    let program = Path::new(env!("CARGO_BIN_EXE_mdproxy"));
    Running::spawn_program(program, rt, &args, Some("node.log"))
}

/// What went wrong, for a failure message: the node's log, the chassis', the namespaces.
pub fn diagnose(mdproxy: &Running, node: &Chassis) -> String {
    format!(
        "--- node\n{}\n--- namespaces {:?}\n{}\n{}",
        mdproxy.log(),
        chassis::namespaces(),
        node.vsctl(&["show"]),
        node.logs()
    )
}

/// An instance `vm` on `net` with `mac` and `ips` (its `eth0` gets the first), whose
/// network's metadata port is at `metadata_ip`: plugged into `node` and claimed by its
/// ovn-controller. Its namespace.
pub fn bound_instance(
    ovn: &Ovn,
    node: &Chassis,
    net: &str,
    vm: &str,
    mac: &str,
    ips: &[&str],
    metadata_ip: &str,
) -> String {
    let port = uuid();
    ovn.port(net, &port, mac, ips, vm, PROJECT);
    let ns = node.plug_instance(&port, mac, ips[0], metadata_ip);
    let claimed = || {
        ovn.port_binding(&port)
            .is_some_and(|r| !r.text("chassis").is_empty())
    };
    assert!(
        eventually(claimed),
        "ovn-controller did not claim port {port}:\n{}",
        node.logs()
    );
    ns
}

/// `SB_Global.nb_cfg`, as text.
pub fn nb_cfg(ovn: &Ovn) -> Option<String> {
    (ovn.sb_find("SB_Global", &[]).first()).map(|r| r.text("nb_cfg"))
}

/// Whether the node on `node` is registered as Neutron's metadata agent on its
/// `Chassis_Private` row, with the Southbound's `nb_cfg` followed.
pub fn registered(ovn: &Ovn, node: &Chassis) -> bool {
    let cond = format!("name={}", node.name);
    let want_id = metadata_agent_id(&node.name)
        .expect("the chassis name is a uuid")
        .to_string();
    let rows = ovn.sb_find("Chassis_Private", &[&cond]);
    let nb_cfg = nb_cfg(ovn);
    rows.first().is_some_and(|r| {
        let ids = r.map("external_ids");
        ids.get("neutron:ovn-metadata-id") == Some(&want_id)
            && ids.get("neutron:ovn-metadata-sb-cfg") == nb_cfg.as_ref()
    })
}
