//! A real OVN chassis on loopback, for the provisioning tests: the chassis' own Open_vSwitch
//! `ovsdb-server`, `ovs-vswitchd` with the userspace (`netdev`) datapath (no kernel module
//! needed), and `ovn-controller` connected to an [`Ovn`]'s Southbound; "instances" are network
//! namespaces whose veth end is plugged into the integration bridge with
//! `external_ids:iface-id=<port id>`, which ovn-controller claims (`Port_Binding.chassis`).
//!
//! Isolation: the test thread first moves into a mount namespace of its own with an empty
//! tmpfs on `/run/netns` ([`private_netns`]), so the namespaces it (and the `mdproxy` it runs,
//! which sweeps every stale `ovnmeta-*`) sees are only its own, never another test's or the
//! machine's; when the test ends, nothing holds them any more and the kernel frees them with
//! their veths. The bridge gets a unique name (`external_ids:ovn-bridge`), as its netdev
//! datapath makes a tap device of that name in the root namespace. Dropping the harness deletes
//! every namespace under the private `/run/netns`, the bridge, and stops every daemon (SIGTERM,
//! bounded, then SIGKILL), also while a test panics.
//!
//! Without root, network namespaces, or the tools (`ovs-vswitchd`, `ovn-controller`, `ip`,
//! `iptables`, `ethtool`, `curl`, `python3`), [`Chassis::start`] prints "skipped: …" and returns
//! `None`; with `MDPROXY_NETNS_TEST=required` or `MDPROXY_OVN_TEST=required` it panics instead.

use std::cell::Cell;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use super::ovn::{Daemon, Ovn};
use super::{eventually, TempDir};

const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const TOOLS: &[&str] = &[
    "ovsdb-server",
    "ovsdb-tool",
    "ovs-vsctl",
    "ovs-vswitchd",
    "ovn-controller",
    "ip",
    "iptables",
    "ethtool",
    "curl",
    "python3",
];

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn skip<T>(why: &str) -> Option<T> {
    for var in ["MDPROXY_NETNS_TEST", "MDPROXY_OVN_TEST"] {
        let required = env::var(var).is_ok_and(|v| v == "required");
        assert!(!required, "{why}, and {var}=required");
    }
    eprintln!("skipped: {why}");
    None
}

/// Moves the calling thread (and every process it starts from now on) into a mount namespace
/// of its own with an empty `/run/netns`. Returns why not, if it cannot.
pub fn private_netns() -> Result<(), String> {
    // SAFETY: plain syscalls on this thread's own namespaces; the strings are NUL-terminated.
    unsafe {
        if libc::geteuid() != 0 {
            return Err("not root (network namespaces need CAP_SYS_ADMIN)".into());
        }
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNS): {}",
                std::io::Error::last_os_error()
            ));
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(format!(
                "making / private: {}",
                std::io::Error::last_os_error()
            ));
        }
        let _ = fs::create_dir_all("/run/netns");
        let dir = c"/run/netns";
        let tmpfs = c"tmpfs";
        if libc::mount(
            tmpfs.as_ptr(),
            dir.as_ptr(),
            tmpfs.as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return Err(format!(
                "tmpfs on /run/netns: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Runs `prog args` to completion.
pub fn output(prog: &str, args: &[&str]) -> Output {
    let path = find_tool(prog).unwrap_or_else(|| PathBuf::from(prog));
    Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
}

/// Runs `prog args`; its stdout (panics when it fails).
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = output(prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -j ARGS…` (with `-n NS` first when given), parsed.
pub fn ip_json(ns: Option<&str>, args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    if let Some(ns) = ns {
        all.extend(["-n", ns]);
    }
    all.extend_from_slice(args);
    let out = run("ip", &all);
    if out.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip {all:?}: {e}: {out}"))
}

/// The names under this thread's `/run/netns`.
pub fn namespaces() -> Vec<String> {
    ip_json(None, &["netns", "list"])
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| Some(n.get("name")?.as_str()?.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// One link as `ip -j addr show dev NAME` reports it, if it exists.
pub fn link(ns: Option<&str>, name: &str) -> Option<Value> {
    let mut all = vec!["-j"];
    if let Some(ns) = ns {
        all.extend(["-n", ns]);
    }
    all.extend(["addr", "show", "dev", name]);
    let out = output("ip", &all);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()?
        .get(0)
        .cloned()
}

/// `tap<first 10 of the network id>0` / `…1`, as Neutron names them.
pub fn veth(net: &str) -> (String, String) {
    (format!("tap{}0", &net[..10]), format!("tap{}1", &net[..10]))
}

pub fn ns_of(net: &str) -> String {
    format!("ovnmeta-{net}")
}

/// The addresses of a link, `IP/LEN`, sorted.
pub fn addrs(link: &Value) -> Vec<String> {
    let mut a: Vec<String> = link["addr_info"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or(""), i["prefixlen"]))
                .collect()
        })
        .unwrap_or_default();
    a.sort();
    a
}

impl Chassis {
    /// What adoption must keep: both ends' ifindex, the OVS Port and Interface row uuids.
    pub fn identity(&self, net: &str) -> (u64, u64, String, String) {
        let (outer, inner) = veth(net);
        let i = link(Some(&ns_of(net)), &inner).expect("namespace end");
        let o = link(None, &outer).expect("root end");
        let port = self
            .vsctl(&["get", "Port", &outer, "_uuid"])
            .trim()
            .to_owned();
        let iface = self
            .vsctl(&["get", "Interface", &outer, "_uuid"])
            .trim()
            .to_owned();
        (
            i["ifindex"].as_u64().unwrap_or(0),
            o["ifindex"].as_u64().unwrap_or(0),
            port,
            iface,
        )
    }
}

/// Whether `GET url` from `ns` answers `token`.
pub fn fetches(ns: &str, url: &str, token: &str) -> bool {
    let args = [
        "netns",
        "exec",
        ns,
        "curl",
        "-s",
        "-g",
        "--noproxy",
        "*",
        "--max-time",
        "3",
        url,
    ];
    let out = output("ip", &args);
    out.status.success() && out.stdout == token.as_bytes()
}

/// A process started inside a namespace (`ip netns exec` execs, so the child is the process
/// itself); killed on drop.
pub struct NsProcess(Child);

impl NsProcess {
    pub fn spawn(ns: &str, args: &[&str]) -> NsProcess {
        let child = Command::new(find_tool("ip").unwrap_or_else(|| PathBuf::from("ip")))
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} in {ns}: {e}"));
        NsProcess(child)
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The chassis. See the module doc.
pub struct Chassis {
    // Stopped in this order by Drop: ovn-controller, ovs-vswitchd, the database.
    controller: Option<Daemon>,
    vswitchd: Option<Daemon>,
    db: Option<Daemon>,
    /// The chassis name (a UUID, as Neutron needs: it derives the agent id from it).
    pub name: String,
    /// The integration bridge.
    pub bridge: String,
    serial: Cell<u32>,
    dir: TempDir,
}

impl Chassis {
    /// Starts the chassis against `ovn`'s Southbound, once ovn-controller has registered its
    /// `Chassis_Private` row. Call [`private_netns`] first (the test's own thread).
    pub fn start(ovn: &Ovn) -> Option<Chassis> {
        for tool in TOOLS {
            if find_tool(tool).is_none() {
                return skip(&format!("no {tool} (Debian: openvswitch-switch ovn-host iproute2 iptables ethtool curl)"));
            }
        }
        if !Path::new(VSWITCH_SCHEMA).is_file() {
            return skip(&format!("no {VSWITCH_SCHEMA}"));
        }
        if let Err(why) = private_netns() {
            return skip(&why);
        }
        let probe = format!("mdp-probe-{}", std::process::id());
        let out = output("ip", &["netns", "add", &probe]);
        if !out.status.success() {
            return skip(&format!(
                "cannot create a network namespace: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        run("ip", &["netns", "delete", &probe]);

        let dir = TempDir::new();
        let root = dir.join("");
        let db_file = dir.join("conf.db");
        run(
            "ovsdb-tool",
            &["create", db_file.to_str().expect("utf-8"), VSWITCH_SCHEMA],
        );
        let remote = format!("unix:{}", dir.join("db.sock").display());
        let db = Daemon::spawn(
            "ovsdb-server",
            &root,
            "ovs-db",
            &[
                db_file.display().to_string(),
                format!("--remote=p{remote}"),
                format!("--unixctl={}", dir.join("ovs-db.ctl").display()),
            ],
        );
        let name = run("cat", &["/proc/sys/kernel/random/uuid"])
            .trim()
            .to_owned();
        let bridge = format!("mdpbr{}", std::process::id() % 100_000);
        let mut chassis = Chassis {
            controller: None,
            vswitchd: None,
            db: Some(db),
            name,
            bridge,
            serial: Cell::new(0),
            dir,
        };
        let vs = |c: &Chassis| c.try_vsctl(&["--no-wait", "init"]).is_ok();
        assert!(
            eventually(|| vs(&chassis)),
            "the local OVS database did not come up:\n{}",
            chassis.logs()
        );
        let ids = format!(
            "external_ids:system-id={} external_ids:ovn-remote={} external_ids:ovn-encap-type=geneve \
             external_ids:ovn-encap-ip=127.0.0.1 external_ids:ovn-bridge={}",
            chassis.name,
            ovn.sb_unix(),
            chassis.bridge
        );
        let mut args = vec!["--no-wait", "set", "Open_vSwitch", "."];
        args.extend(ids.split(' '));
        chassis.vsctl(&args);
        chassis.vsctl(&[
            "--no-wait",
            "add-br",
            &chassis.bridge.clone(),
            "--",
            "set",
            "Bridge",
            &chassis.bridge.clone(),
            "datapath_type=netdev",
            "fail-mode=secure",
            "other_config:disable-in-band=true",
        ]);
        chassis.vswitchd = Some(Daemon::spawn(
            "ovs-vswitchd",
            &root,
            "vswitchd",
            &[
                remote.clone(),
                format!("--unixctl={}", chassis.dir.join("vswitchd.ctl").display()),
            ],
        ));
        chassis.controller = Some(Daemon::spawn(
            "ovn-controller",
            &root,
            "controller",
            // No --unixctl in 23.03: its control socket goes to OVN_RUNDIR.
            &[remote],
        ));
        let cond = format!("name={}", chassis.name);
        let registered = eventually(|| {
            chassis.all_running() && !ovn.sb_find("Chassis_Private", &[&cond]).is_empty()
        });
        assert!(
            registered,
            "ovn-controller did not register the chassis (all running: {}):\n{}",
            chassis.all_running(),
            chassis.logs()
        );
        Some(chassis)
    }

    fn all_running(&mut self) -> bool {
        [&mut self.db, &mut self.vswitchd, &mut self.controller]
            .into_iter()
            .all(|d| d.as_mut().is_some_and(Daemon::is_running))
    }

    /// The local database, as an OVSDB remote.
    pub fn ovs_remote(&self) -> String {
        format!("unix:{}", self.dir.join("db.sock").display())
    }

    fn try_vsctl(&self, args: &[&str]) -> Result<String, String> {
        let db = format!("--db={}", self.ovs_remote());
        let mut all = vec![db.as_str(), "--timeout=15"];
        all.extend_from_slice(args);
        let out = output("ovs-vsctl", &all);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ovs-vsctl --db=<local> ARGS…`: its stdout (panics when it fails).
    pub fn vsctl(&self, args: &[&str]) -> String {
        self.try_vsctl(args)
            .unwrap_or_else(|e| panic!("ovs-vsctl {args:?}: {e}\n{}", self.logs()))
    }

    /// An instance: namespace `mdp-vm-<pid>-<n>` with `eth0` (`mac`, `cidr`, a route to
    /// 169.254.169.254 via `metadata_ip` as Neutron's DHCP hands out, TX checksum offload off
    /// as the userspace datapath needs), its peer plugged into the bridge with
    /// `external_ids:iface-id=<port_id>`. Returns the namespace.
    pub fn plug_instance(&self, port_id: &str, mac: &str, cidr: &str, metadata_ip: &str) -> String {
        let n = self.serial.get() + 1;
        self.serial.set(n);
        let ns = format!("mdp-vm-{}-{n}", std::process::id());
        let host = format!("mdpvm{}x{n}", std::process::id() % 100_000);
        run("ip", &["netns", "add", &ns]);
        run(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "set", "eth0", "address", mac],
            vec!["addr", "add", cidr, "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["route", "add", "169.254.169.254/32", "via", metadata_ip],
        ] {
            let mut all = vec!["-n", ns.as_str()];
            all.extend(args);
            run("ip", &all);
        }
        run(
            "ip",
            &["netns", "exec", &ns, "ethtool", "-K", "eth0", "tx", "off"],
        );
        run("ip", &["link", "set", &host, "up"]);
        let iface = format!("external_ids:iface-id={port_id}");
        self.vsctl(&[
            "add-port",
            &self.bridge.clone(),
            &host,
            "--",
            "set",
            "Interface",
            &host,
            &iface,
        ]);
        ns
    }

    /// Unplugs an instance: its OVS port and namespace go (ovn-controller releases the port).
    pub fn unplug_instance(&self, ns: &str) {
        let host = format!(
            "mdpvm{}x{}",
            std::process::id() % 100_000,
            ns.rsplit('-').next().unwrap_or_default()
        );
        self.vsctl(&["--if-exists", "del-port", &host]);
        run("ip", &["netns", "delete", ns]);
    }

    /// Every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        let named = [
            ("ovsdb-server (ovs-db)", &self.db),
            ("ovs-vswitchd", &self.vswitchd),
            ("ovn-controller", &self.controller),
        ];
        (named.iter())
            .filter_map(|(name, d)| Some(format!("--- {name}\n{}", d.as_ref()?.log())))
            .collect()
    }
}

impl Drop for Chassis {
    fn drop(&mut self) {
        // Every namespace under the private /run/netns is this test's.
        for ns in namespaces() {
            let _ = output("ip", &["netns", "delete", &ns]);
        }
        let _ = self.try_vsctl(&["--if-exists", "del-br", &self.bridge.clone()]);
        for d in [&mut self.controller, &mut self.vswitchd, &mut self.db] {
            if let Some(d) = d.as_mut() {
                d.stop();
            }
        }
    }
}
