//! `mdproxy node --backend ovn` over `ssl:` to the Southbound, end to end on a real chassis as
//! in `node_ovn.rs`: the SB `ovsdb-server` also listens on `pssl:` with certificates made here
//! by rcgen (one CA signed the SB's and the node's); northd and ovn-controller stay on its Unix
//! socket. The node is given only the `ssl:` remote and its `--ovn-sb-*` files, so its lookups
//! (the runtime's replica) and its provisioning and registration (the blocking client) both
//! speak TLS: the instance's `curl` gets its own uuid back through the namespace the node
//! provisioned, and the node registers on `Chassis_Private`. Root only (skipped otherwise,
//! unless MDPROXY_NETNS_TEST / MDPROXY_OVN_TEST say required).
//!
//! Both runtimes on one chassis, one after the other: a binary of its own, as two chassis in
//! one process would share the names the harness derives from the pid.

mod common;

#[cfg(feature = "tls")]
#[test]
fn node_serves_and_registers_over_ssl_to_the_southbound() {
    use common::chassis::{fetches, Chassis};
    use common::ovn::Ovn;
    use common::ovn_node::{
        bound_instance, diagnose, metadata_server, nb_cfg, registered, start_node, uuid,
        write_secret, META,
    };
    use common::pki::{new_ca, write_leaf};
    use common::{eventually, Runtime, TempDir};

    const VM: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e51";

    let files = TempDir::new();
    let ca = new_ca("mdproxy test CA");
    let sb_pem = write_leaf(&files, &ca, "sb", "ovsdb-server");
    let node_pem = write_leaf(&files, &ca, "node", "ovn-metadata id:test");
    let Some(ovn) = Ovn::start_with_ssl(&sb_pem) else {
        return;
    };
    let Some(node) = Chassis::start(&ovn) else {
        return;
    };
    write_secret(&files);
    let server = metadata_server();
    let net = uuid();
    ovn.network(&net, "net-ssl", &["10.0.0.2/24"]);
    let mac = "fa:16:3e:00:05:05";
    let vm = bound_instance(&ovn, &node, &net, VM, mac, &["10.0.0.5/24"], "10.0.0.2");
    let sb = [
        format!("--ovn-sb-connection={}", ovn.sb_ssl()),
        format!("--ovn-sb-private-key={}", node_pem.key.display()),
        format!("--ovn-sb-certificate={}", node_pem.cert.display()),
        format!("--ovn-sb-ca-cert={}", node_pem.ca.display()),
    ];

    for rt in [Runtime::Mio, Runtime::Smol] {
        // A new nb_cfg while no node runs: a registration that follows it is this node's.
        let before = nb_cfg(&ovn);
        ovn.nbctl(&["--wait=sb", "sync"]);
        assert_ne!(nb_cfg(&ovn), before, "nb_cfg did not move");
        assert!(!registered(&ovn, &node), "registered with no node running");

        let mut mdproxy = start_node(rt, &sb, &node, &files, &server.url());
        assert!(
            eventually(|| fetches(&vm, META, VM)),
            "{rt:?}: the instance never read its id through the node over ssl:\n{}\n{}",
            diagnose(&mdproxy, &node),
            ovn.logs()
        );
        assert!(
            eventually(|| registered(&ovn, &node)),
            "{rt:?}: not registered on Chassis_Private over ssl:\n{}",
            diagnose(&mdproxy, &node)
        );
        let log = mdproxy.log();
        let described = format!("ovn backend at {}", ovn.sb_ssl());
        assert!(log.contains(&described), "{log}");
        assert!(mdproxy.is_running(), "{log}");
        mdproxy.signal(libc::SIGTERM);
        assert!(mdproxy.wait_exit().success(), "{}", mdproxy.log());
    }
    let seen = server.recorded();
    let last = seen.last().expect("a request reached the server");
    assert_eq!(last.header_values("x-instance-id"), [VM]);
}
