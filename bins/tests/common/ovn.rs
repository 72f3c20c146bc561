//! Real OVN for the integration tests: Debian's `ovsdb-server` serving the Northbound and
//! Southbound schemas, a real `ovn-northd` between them, and `ovn-nbctl` / `ovn-sbctl` to write
//! rows the way Neutron's ML2/OVN driver and `ovn-controller` do. Nothing is faked: the
//! `Port_Binding` and `Datapath_Binding` rows the agent reads are the ones northd derives.
//!
//! - [`Ovn`]: one NB and one SB `ovsdb-server` (standalone databases) plus `ovn-northd`. The SB
//!   answers on a Unix socket ([`Ovn::sb_unix`]) and on loopback TCP ([`Ovn::sb_tcp`]) — and,
//!   started with [`Ovn::start_with_ssl`], on loopback SSL too ([`Ovn::sb_ssl`]) — and can be
//!   stopped and started again on the same addresses with the same database file.
//! - [`SbCluster`]: three clustered (Raft) SB servers on loopback TCP, no northd; rows are
//!   written straight into the SB ([`SbCluster::datapath`], [`SbCluster::port`]), as only the
//!   client side of clustering is under test there.
//!
//! Every process runs in the foreground as our child, with its sockets, control sockets,
//! databases and logs in a [`TempDir`] (the tools' `OVS_*`/`OVN_*` directory variables point
//! there too, so no default path under `/var/run` is ever used). Dropping the harness kills
//! every process (also while a test panics) and removes the directory. Waits poll a condition
//! (the server answers `list-dbs`, northd has caught up, a leader is elected) with the harness's
//! bound [`super::WAIT`]; the tools get `--timeout` so none of them can hang a test.
//!
//! Without the binaries, [`Ovn::start`] and [`SbCluster::start`] print "skipped: OVN not
//! installed (…)" and return `None`; with `MDPROXY_OVN_TEST=required` (CI) they panic instead.
//!
//! Facts checked against OVN 23.03 / ovsdb-server 3.1 here: `Datapath_Binding.external_ids` is
//! `{logical-switch=<NB Logical_Switch row uuid>, name=neutron-<network id>, name2=<network
//! name>}`, so the datapath's own uuid is *not* the Neutron network id; `ovn-sbctl lsp-bind`
//! sets `chassis` and `up: true`; `chassis-add` creates `Chassis` and `Encap` but no
//! `Chassis_Private` (ovn-controller does), so [`Ovn::chassis`] adds that row too.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::env;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::pki::PemFiles;
use super::{eventually, wait_child, TempDir};

const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
/// Every tool the harness runs.
const TOOLS: &[&str] = &[
    "ovsdb-server",
    "ovsdb-tool",
    "ovsdb-client",
    "ovs-appctl",
    "ovn-northd",
    "ovn-nbctl",
    "ovn-sbctl",
];
/// `--timeout` of each tool invocation, in seconds: within [`super::WAIT`].
const TOOL_TIMEOUT: &str = "--timeout=15";

/// The installed tools, or why the OVN tests cannot run.
fn tools() -> Result<(), String> {
    for tool in TOOLS {
        if find_tool(tool).is_none() {
            return Err(format!("no {tool} in PATH, /usr/sbin or /usr/bin"));
        }
    }
    for schema in [NB_SCHEMA, SB_SCHEMA] {
        if !Path::new(schema).is_file() {
            return Err(format!("no {schema}"));
        }
    }
    Ok(())
}

/// `None` after saying why the test is skipped; a panic instead under `MDPROXY_OVN_TEST=required`.
fn skip<T>(why: &str) -> Option<T> {
    let required = env::var("MDPROXY_OVN_TEST").is_ok_and(|v| v == "required");
    assert!(
        !required,
        "{why}, and MDPROXY_OVN_TEST=required (Debian: apt-get install ovn-central)"
    );
    eprintln!("skipped: OVN not installed ({why}; Debian: apt-get install ovn-central)");
    None
}

/// `ovsdb-server` lives in /usr/sbin, which a non-root PATH often lacks.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `tool` with its environment pinned to `dir`: the `OVS_*`/`OVN_*` directories (where a
/// default socket, pid file or log would go) and none of the variables that would redirect
/// `ovn-nbctl`/`ovn-sbctl` to another database or daemon.
fn command(tool: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(find_tool(tool).unwrap_or_else(|| PathBuf::from(tool)));
    for var in [
        "OVS_RUNDIR",
        "OVS_LOGDIR",
        "OVS_DBDIR",
        "OVN_RUNDIR",
        "OVN_LOGDIR",
        "OVN_DBDIR",
    ] {
        cmd.env(var, dir);
    }
    for var in [
        "OVN_NB_DB",
        "OVN_SB_DB",
        "OVN_NB_DAEMON",
        "OVN_SB_DAEMON",
        "OVS_NB_DB",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `tool args` to completion; its stdout, or a panic with what it said.
fn run(tool: &str, dir: &Path, args: &[&str]) -> String {
    try_run(tool, dir, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `tool args` to completion; its stdout, or what went wrong.
fn try_run(tool: &str, dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = command(tool, dir)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `tool args` succeeds (a probe; what it says is not needed).
fn succeeds(tool: &str, dir: &Path, args: &[&str]) -> bool {
    command(tool, dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An OVSDB string literal, as `ovn-nbctl`/`ovn-sbctl` parse it in `key=value` arguments.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `column={"k"="v", …}`: a whole map column in one argument.
fn map_arg(column: &str, pairs: &[(&str, &str)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", quoted(k), quoted(v)))
        .collect();
    format!("{column}={{{}}}", items.join(","))
}

/// `neutron:cidrs` of a port: each IP with its prefix (given as `IP/LEN`, else /24 or /64).
fn cidrs(ips: &[&str]) -> String {
    let with_prefix: Vec<String> = ips
        .iter()
        .map(|ip| match (ip.contains('/'), ip.contains(':')) {
            (true, _) => ip.to_string(),
            (false, false) => format!("{ip}/24"),
            (false, true) => format!("{ip}/64"),
        })
        .collect();
    with_prefix.join(" ")
}

/// The `addresses` entry (and `Port_Binding.mac`) of a port: `MAC IP…`, prefixes dropped.
fn addresses(mac: &str, ips: &[&str]) -> String {
    let mut s = mac.to_owned();
    for ip in ips {
        s.push(' ');
        s.push_str(ip.split('/').next().unwrap_or(ip));
    }
    s
}

/// A loopback port nobody listened on a moment ago (for addresses that must be fixed before
/// the server starts: Raft's, and the SB's TCP remote on a restart).
fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| super::free_port()).collect()
}

/// One child process (an `ovsdb-server` or `ovn-northd`) in the foreground, logging to a file
/// in the harness's directory; killed on drop. The chassis harness's daemons too.
pub(super) struct Daemon {
    what: String,
    child: Child,
    log: PathBuf,
    out: PathBuf,
}

impl Daemon {
    /// Starts `tool args… --log-file=<dir>/<name>.log -vconsole:off`, its stdout and stderr in
    /// `<dir>/<name>.out` (where a fatal start-up error goes).
    pub(super) fn spawn(tool: &str, dir: &Path, name: &str, args: &[String]) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let out = dir.join(format!("{name}.out"));
        let _ = fs::remove_file(&log);
        let file = File::create(&out).expect("create daemon output file");
        let child = command(tool, dir)
            .args(args)
            .arg(format!("--log-file={}", log.display()))
            .arg("-vconsole:off")
            .stdout(file.try_clone().expect("dup output file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {tool}: {e}"));
        Daemon {
            what: format!("{tool} ({name})"),
            child,
            log,
            out,
        }
    }

    pub(super) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its log file and console output, for failure messages and port discovery.
    pub(super) fn log(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let out = fs::read_to_string(&self.out).unwrap_or_default();
        format!("{log}{out}")
    }

    /// Panics with its log unless `ready` holds (bounded) while it keeps running.
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) {
        let ok = eventually(|| !self.is_running() || ready());
        assert!(
            ok && self.is_running(),
            "{} did not come up:\n{}",
            self.what,
            self.log()
        );
    }

    /// SIGTERM (the server closes its database and removes its sockets), bounded; then SIGKILL.
    pub(super) fn stop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        if wait_child(&mut self.child).is_none() {
            self.kill();
        }
    }

    /// SIGKILL: a crash, as far as its peers can tell.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The TCP port an `ovsdb-server` given `ptcp:0:127.0.0.1` logged it listens on
/// ("0:127.0.0.1: listening on port N" in `log`), once it has.
fn logged_port(log: &Path) -> Option<u16> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.split("listening on port ").nth(1))
        .and_then(|rest| rest.trim().parse().ok())
}

/// Waits until `server` answers `list-dbs` on `remote` with `db`.
fn wait_serving(server: &mut Daemon, dir: &Path, remote: &str, db: &str) {
    let socket = remote.strip_prefix("unix:").map(PathBuf::from);
    server.wait_ready(|| {
        socket.as_ref().is_none_or(|s| s.exists())
            && command("ovsdb-client", dir)
                .args(["--timeout=2", "list-dbs", remote])
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| {
                    o.status.success() && String::from_utf8_lossy(&o.stdout).contains(db)
                })
    });
}

/// One row as `ovn-sbctl --format=json find` prints it, by column name.
#[derive(Clone, Debug)]
pub struct Row(BTreeMap<String, Value>);

impl Row {
    /// A scalar column as text: a string, uuid, integer or boolean; "" for an empty optional.
    pub fn text(&self, column: &str) -> String {
        self.set(column).into_iter().next().unwrap_or_default()
    }

    /// A set column's members as text (an optional column: zero or one).
    pub fn set(&self, column: &str) -> Vec<String> {
        match self.0.get(column) {
            Some(Value::Array(a)) if a.first() == Some(&Value::from("set")) => a
                .get(1)
                .and_then(Value::as_array)
                .map(|m| m.iter().map(atom).collect())
                .unwrap_or_default(),
            Some(v) => vec![atom(v)],
            None => panic!("no column {column} in {:?}", self.0.keys()),
        }
    }

    /// A map column.
    pub fn map(&self, column: &str) -> BTreeMap<String, String> {
        let pairs = match self.0.get(column) {
            Some(Value::Array(a)) if a.first() == Some(&Value::from("map")) => a.get(1),
            other => panic!("column {column} is not a map: {other:?}"),
        };
        let pairs = pairs.and_then(Value::as_array).cloned().unwrap_or_default();
        pairs
            .iter()
            .filter_map(|kv| Some((atom(kv.get(0)?), atom(kv.get(1)?))))
            .collect()
    }
}

/// One OVSDB atom in its JSON encoding, as text (`["uuid", U]` is U).
fn atom(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() == 2 && matches!(a[0].as_str(), Some("uuid" | "named-uuid")) => {
            atom(&a[1])
        }
        other => other.to_string(),
    }
}

/// The rows `find TABLE CONDITIONS…` prints as JSON, through `ctl` (an `sbctl`/`nbctl`).
fn find_rows(ctl: impl Fn(&[&str]) -> String, table: &str, conditions: &[&str]) -> Vec<Row> {
    let mut args = vec!["--format=json", "find", table];
    args.extend_from_slice(conditions);
    parse_rows(&ctl(&args))
}

/// `--format=json` output: `{"headings": [COLUMN…], "data": [[VALUE…]…]}`.
fn parse_rows(out: &str) -> Vec<Row> {
    let json: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let headings: Vec<String> = json["headings"]
        .as_array()
        .map(|h| h.iter().map(atom).collect())
        .unwrap_or_default();
    json["data"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let cells = r.as_array().cloned().unwrap_or_default();
                    Row(headings.iter().cloned().zip(cells).collect())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A metadata localport [`Ovn::network`] created: the port Neutron gives each network for the
/// `ovnmeta-<network>` namespace.
#[derive(Clone, Debug)]
pub struct Localport {
    /// Its `logical_port` (a Neutron port id).
    pub port_id: String,
    pub mac: String,
}

/// The Open_vSwitch schema (package openvswitch-switch), for a chassis' local database.
const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// A chassis' local Open_vSwitch database on a Unix socket, with one `Open_vSwitch` row whose
/// `external_ids:system-id` (when given) names the chassis, as ovn-controller's setup leaves it.
pub struct LocalOvs {
    _server: Daemon,
    dir: TempDir,
}

impl LocalOvs {
    /// `None` when OVS is not installed (see the module doc).
    pub fn start(system_id: Option<&str>) -> Option<LocalOvs> {
        if let Err(why) = tools() {
            return skip(&why);
        }
        if !Path::new(VSWITCH_SCHEMA).is_file() {
            return skip(&format!("no {VSWITCH_SCHEMA}"));
        }
        let dir = TempDir::new();
        let root = dir.join("");
        run(
            "ovsdb-tool",
            &root,
            &["create", &path(&dir.join("conf.db")), VSWITCH_SCHEMA],
        );
        let remote = format!("unix:{}", path(&dir.join("db.sock")));
        let mut server = Daemon::spawn(
            "ovsdb-server",
            &root,
            "ovs",
            &[
                path(&dir.join("conf.db")),
                format!("--remote=p{remote}"),
                format!("--unixctl={}", path(&dir.join("ovs.ctl"))),
            ],
        );
        wait_serving(&mut server, &root, &remote, "Open_vSwitch");
        let ids: Vec<Value> = system_id
            .map(|id| serde_json::json!(["system-id", id]))
            .into_iter()
            .collect();
        let insert = serde_json::json!(["Open_vSwitch", {
            "op": "insert", "table": "Open_vSwitch",
            "row": {"external_ids": ["map", ids]},
        }]);
        run(
            "ovsdb-client",
            &root,
            &[TOOL_TIMEOUT, "transact", &remote, &insert.to_string()],
        );
        Some(LocalOvs {
            _server: server,
            dir,
        })
    }

    /// Its remote: `unix:/tmp/…/db.sock`.
    pub fn remote(&self) -> String {
        format!("unix:{}", path(&self.dir.join("db.sock")))
    }
}

/// One NB and one SB `ovsdb-server` and an `ovn-northd` between them.
pub struct Ovn {
    // Declared before `dir`: the processes die before their directory goes.
    northd: Daemon,
    sb: Option<Daemon>,
    nb: Daemon,
    sb_port: u16,
    /// The SB's SSL listener, if it has one: the files its `ovsdb-server` is given, its port.
    sb_ssl: Option<(PemFiles, u16)>,
    /// Makes MACs and ids distinct within one harness.
    serial: Cell<u32>,
    dir: TempDir,
}

impl Ovn {
    /// Creates empty NB and SB databases and starts both servers and northd, once northd holds
    /// its lock and has written the SB (`ovn-nbctl --wait=sb sync` returns). `None` when OVN is
    /// not installed (see the module doc).
    pub fn start() -> Option<Ovn> {
        Ovn::start_with(None)
    }

    /// [`Ovn::start`] with the SB also listening on `pssl:` on loopback ([`Ovn::sb_ssl`]),
    /// presenting `ssl.cert` and asking its clients for a certificate `ssl.ca` signed.
    /// ovn-northd (and any ovn-controller) keep using the Unix socket.
    pub fn start_with_ssl(ssl: &PemFiles) -> Option<Ovn> {
        Ovn::start_with(Some((ssl.clone(), super::free_port())))
    }

    fn start_with(sb_ssl: Option<(PemFiles, u16)>) -> Option<Ovn> {
        if let Err(why) = tools() {
            return skip(&why);
        }
        let dir = TempDir::new();
        let root = dir.join("");
        for (db, schema) in [("nb.db", NB_SCHEMA), ("sb.db", SB_SCHEMA)] {
            run(
                "ovsdb-tool",
                &root,
                &["create", &path(&dir.join(db)), schema],
            );
        }
        let nb_unix = format!("unix:{}", path(&dir.join("nb.sock")));
        let mut nb = Daemon::spawn(
            "ovsdb-server",
            &root,
            "nb",
            &[
                path(&dir.join("nb.db")),
                format!("--remote=p{nb_unix}"),
                format!("--unixctl={}", path(&dir.join("nb.ctl"))),
            ],
        );
        wait_serving(&mut nb, &root, &nb_unix, "OVN_Northbound");
        let (sb, sb_port) = start_sb(&dir, None, sb_ssl.as_ref());
        let northd = Daemon::spawn(
            "ovn-northd",
            &root,
            "northd",
            &[
                format!("--ovnnb-db={nb_unix}"),
                format!("--ovnsb-db=unix:{}", path(&dir.join("sb.sock"))),
                format!("--unixctl={}", path(&dir.join("northd.ctl"))),
            ],
        );
        let ovn = Ovn {
            northd,
            sb: Some(sb),
            nb,
            sb_port,
            sb_ssl,
            serial: Cell::new(0),
            dir,
        };
        ovn.sync();
        Some(ovn)
    }

    /// The SB on its Unix socket, as an OVSDB remote: `unix:/tmp/…/sb.sock`.
    pub fn sb_unix(&self) -> String {
        format!("unix:{}", path(&self.dir.join("sb.sock")))
    }

    /// The SB on loopback TCP, as an OVSDB remote: `tcp:127.0.0.1:PORT`.
    pub fn sb_tcp(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.sb_port)
    }

    /// The SB on loopback SSL, as an OVSDB remote: `ssl:127.0.0.1:PORT` (started with
    /// [`Ovn::start_with_ssl`]).
    pub fn sb_ssl(&self) -> String {
        let (_, port) = self.sb_ssl.as_ref().expect("started with_ssl");
        format!("ssl:127.0.0.1:{port}")
    }

    /// The NB on its Unix socket.
    pub fn nb_unix(&self) -> String {
        format!("unix:{}", path(&self.dir.join("nb.sock")))
    }

    /// `ovn-nbctl --db=<NB> --timeout=15 args…`: its stdout (panics when it fails).
    pub fn nbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.nb_unix());
        let mut all = vec![db.as_str(), TOOL_TIMEOUT];
        all.extend_from_slice(args);
        run("ovn-nbctl", &self.dir.join(""), &all)
    }

    /// `ovn-sbctl --db=<SB unix> --timeout=15 args…`: its stdout (panics when it fails).
    pub fn sbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.sb_unix());
        let mut all = vec![db.as_str(), TOOL_TIMEOUT];
        all.extend_from_slice(args);
        run("ovn-sbctl", &self.dir.join(""), &all)
    }

    /// `ovn-nbctl --wait=sb args…`: returns once northd has written the change to the SB.
    fn nbctl_sync(&self, args: &[&str]) -> String {
        let mut all = vec!["--wait=sb"];
        all.extend_from_slice(args);
        self.nbctl(&all)
    }

    /// Waits (bounded by the tool's timeout) until northd has written everything in the NB to
    /// the SB. Every NB-writing method here already does; this is for `nbctl` callers and for
    /// after [`Ovn::restart_sb`] (northd reconnects with a backoff of up to a few seconds).
    pub fn sync(&self) {
        let ok = eventually(|| {
            let db = format!("--db={}", self.nb_unix());
            succeeds(
                "ovn-nbctl",
                &self.dir.join(""),
                &[&db, TOOL_TIMEOUT, "--wait=sb", "sync"],
            )
        });
        assert!(
            ok,
            "northd never caught up with the NB:\n{}",
            self.northd.log()
        );
    }

    /// A Neutron network as the ML2/OVN driver writes it: Logical_Switch `neutron-<id>` with
    /// `external_ids:neutron:network_name=<name>` (northd turns these into the Datapath_Binding's
    /// `name` and `name2`), and its metadata localport (type `localport`, device owner
    /// `network:distributed`, device id `ovnmeta-<id>`, fixed IP `<cidr's .2>` of each of
    /// `localport_cidrs`, e.g. `["10.0.0.2/24"]`). Returns the localport.
    pub fn network(&self, id: &str, name: &str, localport_cidrs: &[&str]) -> Localport {
        let switch = format!("neutron-{id}");
        self.nbctl_sync(&[
            "ls-add",
            &switch,
            "--",
            "set",
            "Logical_Switch",
            &switch,
            &map_arg(
                "external_ids",
                &[
                    ("neutron:network_name", name),
                    ("neutron:mtu", "1442"),
                    ("neutron:revision_number", "1"),
                    ("neutron:availability_zone_hints", ""),
                ],
            ),
            &map_arg(
                "other_config",
                &[
                    ("mcast_snoop", "false"),
                    ("mcast_flood_unregistered", "false"),
                    ("vlan-passthru", "false"),
                ],
            ),
        ]);
        let port_id = self.fresh_id();
        let mac = self.fresh_mac();
        let device_id = format!("ovnmeta-{id}");
        self.add_port(&Lsp {
            network: id,
            port_id: &port_id,
            mac: &mac,
            ips: localport_cidrs,
            device_id: &device_id,
            project_id: "",
            owner: "network:distributed",
            kind: "localport",
        });
        Localport { port_id, mac }
    }

    /// An instance port (device owner `compute:nova`) on `network` (the Neutron id), as the
    /// driver writes it: addresses and port security `MAC IP…`, external_ids `neutron:cidrs`
    /// (each IP given as `IP/LEN`, or with /24 or /64), `neutron:device_id`,
    /// `neutron:device_owner`, `neutron:network_name=neutron-<network>`, `neutron:port_name`,
    /// `neutron:project_id`, `neutron:revision_number`, `neutron:security_group_ids`; options
    /// `requested-chassis=""` (not bound in Neutron yet: see [`Ovn::bind`]) and
    /// `mcast_flood_reports=true`. Returns once its Port_Binding exists.
    pub fn port(
        &self,
        network: &str,
        port_id: &str,
        mac: &str,
        ips: &[&str],
        device_id: &str,
        project_id: &str,
    ) {
        self.add_port(&Lsp {
            network,
            port_id,
            mac,
            ips,
            device_id,
            project_id,
            owner: "compute:nova",
            kind: "",
        });
    }

    fn add_port(&self, p: &Lsp<'_>) {
        let switch = format!("neutron-{}", p.network);
        let addrs = addresses(p.mac, p.ips);
        let cidrs = cidrs(p.ips);
        let port_name = format!("port-{}", &p.port_id[..p.port_id.len().min(8)]);
        let mut options = vec![("requested-chassis", "")];
        if p.kind.is_empty() {
            options.push(("mcast_flood_reports", "true"));
        }
        // Neutron trusts `network:*` ports (`is_lsp_trusted`): they get no port security, the
        // metadata localport included (with it, OVN drops what is sent to 169.254.169.254).
        let security: &[&str] = if p.owner.starts_with("network:") {
            &[]
        } else {
            &[&addrs]
        };
        let mut args = vec![
            "lsp-add",
            &switch,
            p.port_id,
            "--",
            "lsp-set-addresses",
            p.port_id,
            &addrs,
            "--",
            "lsp-set-port-security",
            p.port_id,
        ];
        args.extend_from_slice(security);
        let ids = map_arg(
            "external_ids",
            &[
                ("neutron:cidrs", &cidrs),
                ("neutron:device_id", p.device_id),
                ("neutron:device_owner", p.owner),
                ("neutron:network_name", &switch),
                ("neutron:port_name", &port_name),
                ("neutron:project_id", p.project_id),
                ("neutron:revision_number", "1"),
                ("neutron:security_group_ids", ""),
            ],
        );
        let kind = format!("type={}", quoted(p.kind));
        let options = map_arg("options", &options);
        args.extend_from_slice(&[
            "--",
            "set",
            "Logical_Switch_Port",
            p.port_id,
            &kind,
            &ids,
            &options,
        ]);
        self.nbctl_sync(&args);
    }

    /// Changes a port's fixed IPs and MAC (`addresses`, port security, `neutron:cidrs`), as a
    /// Neutron port update does; northd rewrites `Port_Binding.mac`.
    pub fn set_addresses(&self, port_id: &str, mac: &str, ips: &[&str]) {
        let addrs = addresses(mac, ips);
        let cidrs = format!("external_ids:\"neutron:cidrs\"={}", quoted(&cidrs(ips)));
        self.nbctl_sync(&[
            "lsp-set-addresses",
            port_id,
            &addrs,
            "--",
            "lsp-set-port-security",
            port_id,
            &addrs,
            "--",
            "set",
            "Logical_Switch_Port",
            port_id,
            &cidrs,
        ]);
    }

    /// Deletes a port; northd deletes its Port_Binding.
    pub fn delete_port(&self, port_id: &str) {
        self.nbctl_sync(&["lsp-del", port_id]);
    }

    /// Deletes a network's Logical_Switch and its ports; northd deletes the Datapath_Binding.
    pub fn delete_network(&self, id: &str) {
        self.nbctl_sync(&["ls-del", &format!("neutron-{id}")]);
    }

    /// A hypervisor, as its `ovn-controller` registers it: `ovn-sbctl chassis-add NAME geneve
    /// IP` (Chassis and Encap; Encap is unique on (type, ip), so give each chassis its own
    /// loopback address: 127.0.0.2, 127.0.0.3, …) and its Chassis_Private row.
    pub fn chassis(&self, name: &str, encap_ip: &str) {
        add_chassis(|args| self.sbctl(args), name, encap_ip);
    }

    /// Binds a port to `chassis` as a VIF plugged there does: Neutron sets
    /// `options:requested-chassis` (NB), then that chassis's ovn-controller claims the
    /// Port_Binding (`chassis`, `up`). Rebinding to another chassis moves it.
    pub fn bind(&self, port_id: &str, chassis: &str) {
        let requested = format!("options:requested-chassis={}", quoted(chassis));
        self.nbctl_sync(&["set", "Logical_Switch_Port", port_id, &requested]);
        self.sbctl(&["--if-exists", "lsp-unbind", port_id]);
        self.sbctl(&["lsp-bind", port_id, chassis]);
    }

    /// Unbinds a port (the VIF went away): `chassis` cleared, `up: false`, and Neutron's
    /// `requested-chassis` emptied.
    pub fn unbind(&self, port_id: &str) {
        self.sbctl(&["lsp-unbind", port_id]);
        self.sbctl(&["set", "Port_Binding", port_id, "up=false"]);
        self.nbctl_sync(&[
            "set",
            "Logical_Switch_Port",
            port_id,
            "options:requested-chassis=\"\"",
        ]);
    }

    /// Stops the SB server (SIGTERM: it closes its database and removes its socket). Clients
    /// see their connection closed; [`Ovn::start_sb`] brings it back.
    pub fn stop_sb(&mut self) {
        if let Some(mut sb) = self.sb.take() {
            sb.stop();
        }
    }

    /// Starts the SB server again on the same Unix socket and TCP port, from the same database
    /// file (a no-op while it runs). Returns once it answers on both.
    pub fn start_sb(&mut self) {
        if self.sb.is_none() {
            self.sb = Some(start_sb(&self.dir, Some(self.sb_port), self.sb_ssl.as_ref()).0);
        }
    }

    /// [`Ovn::stop_sb`] then [`Ovn::start_sb`]: the rows stay (same file); northd reconnects
    /// on its own ([`Ovn::sync`] waits for it).
    pub fn restart_sb(&mut self) {
        self.stop_sb();
        self.start_sb();
    }

    /// The SB rows of `table` matching `conditions` (`ovn-sbctl find` syntax, e.g.
    /// `logical_port=ID`; none: every row).
    pub fn sb_find(&self, table: &str, conditions: &[&str]) -> Vec<Row> {
        find_rows(|a| self.sbctl(a), table, conditions)
    }

    /// The Port_Binding of `port_id`, if northd made one.
    pub fn port_binding(&self, port_id: &str) -> Option<Row> {
        let cond = format!("logical_port={}", quoted(port_id));
        self.sb_find("Port_Binding", &[&cond]).into_iter().next()
    }

    /// The pids of every process the harness runs (while they run).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.nb.child.id(), self.northd.child.id()];
        pids.extend(self.sb.as_ref().map(|sb| sb.child.id()));
        pids
    }

    /// The harness's directory (databases, sockets, logs), e.g. for a test's own files.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// Every log (NB, SB, northd), for failure messages.
    pub fn logs(&self) -> String {
        let sb = self.sb.as_ref().map(Daemon::log).unwrap_or_default();
        format!(
            "--- nb\n{}--- sb\n{sb}--- northd\n{}",
            self.nb.log(),
            self.northd.log()
        )
    }

    /// A fresh UUID-shaped id (unique within this harness).
    fn fresh_id(&self) -> String {
        let n = self.serial.get() + 1;
        self.serial.set(n);
        format!(
            "00000000-0000-4000-8000-{:012x}",
            0x0ea0_0000_0000u64 + u64::from(n)
        )
    }

    /// A fresh MAC in Neutron's `fa:16:3e` prefix.
    fn fresh_mac(&self) -> String {
        let n = self.serial.get() + 1;
        self.serial.set(n);
        format!("fa:16:3e:a0:{:02x}:{:02x}", (n >> 8) & 0xff, n & 0xff)
    }
}

/// What [`Ovn::add_port`] writes for one Logical_Switch_Port.
struct Lsp<'a> {
    network: &'a str,
    port_id: &'a str,
    mac: &'a str,
    ips: &'a [&'a str],
    device_id: &'a str,
    project_id: &'a str,
    owner: &'a str,
    kind: &'a str,
}

/// `ovn-sbctl chassis-add NAME geneve IP`, then its Chassis_Private row, through `sbctl`.
fn add_chassis(sbctl: impl Fn(&[&str]) -> String, name: &str, encap_ip: &str) {
    sbctl(&["chassis-add", name, "geneve", encap_ip]);
    sbctl(&[
        "set",
        "Chassis",
        name,
        &format!("hostname={}", quoted(name)),
    ]);
    let uuid = sbctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        "Chassis",
        &format!("name={}", quoted(name)),
    ]);
    sbctl(&[
        "create",
        "Chassis_Private",
        &format!("name={}", quoted(name)),
        &format!("chassis={}", uuid.trim()),
    ]);
}

/// Starts the SB `ovsdb-server` of `dir` on `sb.sock` and loopback TCP (`port`, or one the
/// kernel picks), and loopback SSL with `ssl`'s files and port; returns it and its TCP port
/// once it answers on all of them.
fn start_sb(dir: &TempDir, port: Option<u16>, ssl: Option<&(PemFiles, u16)>) -> (Daemon, u16) {
    let root = dir.join("");
    let socket = dir.join("sb.sock");
    // A SIGKILLed server leaves its socket file behind.
    let _ = fs::remove_file(&socket);
    let mut args = vec![
        path(&dir.join("sb.db")),
        format!("--remote=punix:{}", path(&socket)),
        format!("--remote=ptcp:{}:127.0.0.1", port.unwrap_or(0)),
        format!("--unixctl={}", path(&dir.join("sb.ctl"))),
    ];
    if let Some((files, port)) = ssl {
        args.extend(ssl_args(files, *port));
    }
    let mut sb = Daemon::spawn("ovsdb-server", &root, "sb", &args);
    let unix = format!("unix:{}", path(&socket));
    wait_serving(&mut sb, &root, &unix, "OVN_Southbound");
    let log = sb.log.clone();
    let mut bound = port;
    sb.wait_ready(|| {
        bound = bound.or_else(|| logged_port(&log));
        bound.is_some()
    });
    let port = bound.unwrap_or_else(|| panic!("the SB never said its port:\n{}", sb.log()));
    wait_serving(
        &mut sb,
        &root,
        &format!("tcp:127.0.0.1:{port}"),
        "OVN_Southbound",
    );
    if let Some((_, ssl_port)) = ssl {
        sb.wait_ready(|| std::net::TcpStream::connect(("127.0.0.1", *ssl_port)).is_ok());
    }
    (sb, port)
}

/// An `ovsdb-server`'s flags for a `pssl:` listener on loopback `port` with `files`.
fn ssl_args(files: &PemFiles, port: u16) -> [String; 4] {
    [
        format!("--remote=pssl:{port}:127.0.0.1"),
        format!("--private-key={}", path(&files.key)),
        format!("--certificate={}", path(&files.cert)),
        format!("--ca-cert={}", path(&files.ca)),
    ]
}

/// A Southbound `ovsdb-server` of its own that speaks only SSL on loopback (and its Unix
/// socket, for the test's checks), with the key, certificate and CA files given.
pub struct SslSb {
    _server: Daemon,
    /// `ssl:127.0.0.1:PORT`.
    pub remote: String,
}

impl SslSb {
    /// Starts it in `dir` (`None` where the OVN tools are missing: skipped, or failed when
    /// required).
    pub fn start(dir: &TempDir, files: &PemFiles) -> Option<SslSb> {
        if let Err(why) = tools() {
            return skip(&why);
        }
        let root = dir.join("");
        run(
            "ovsdb-tool",
            &root,
            &["create", &path(&dir.join("ssl-sb.db")), SB_SCHEMA],
        );
        let port = super::free_port();
        let unix = format!("unix:{}", path(&dir.join("ssl-sb.sock")));
        let mut args = vec![
            path(&dir.join("ssl-sb.db")),
            format!("--remote=p{unix}"),
            format!("--unixctl={}", path(&dir.join("ssl-sb.ctl"))),
        ];
        args.extend(ssl_args(files, port));
        let mut server = Daemon::spawn("ovsdb-server", &root, "ssl-sb", &args);
        wait_serving(&mut server, &root, &unix, "OVN_Southbound");
        server.wait_ready(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        Some(SslSb {
            _server: server,
            remote: format!("ssl:127.0.0.1:{port}"),
        })
    }
}

fn path(p: &Path) -> String {
    p.to_str().expect("temp paths are UTF-8").to_owned()
}

/// One member of an [`SbCluster`].
struct Member {
    /// `None` once killed.
    server: Option<Daemon>,
    name: String,
    raft_port: u16,
    port: u16,
}

/// Three clustered SB `ovsdb-server`s (Raft) on loopback TCP, without northd: a test writes the
/// rows itself ([`SbCluster::datapath`], [`SbCluster::port`], [`SbCluster::chassis`],
/// [`SbCluster::bind`]) and kills members to see a client follow the leader.
pub struct SbCluster {
    members: Vec<Member>,
    serial: Cell<u32>,
    dir: TempDir,
}

impl SbCluster {
    /// `ovsdb-tool create-cluster` (member 0) and `join-cluster` (1 and 2) on fresh loopback
    /// Raft ports, then starts all three; returns once all are cluster members and one leads.
    /// Retries with other ports when a Raft port was taken meanwhile. `None` when OVN is not
    /// installed (see the module doc).
    pub fn start() -> Option<SbCluster> {
        if let Err(why) = tools() {
            return skip(&why);
        }
        for _ in 0..3 {
            match SbCluster::try_start() {
                Ok(cluster) => return Some(cluster),
                Err(logs) => eprintln!("SB cluster lost a port race; retrying:\n{logs}"),
            }
        }
        panic!("the SB cluster never formed");
    }

    /// `Err(logs)` when a member could not bind its Raft port.
    fn try_start() -> Result<SbCluster, String> {
        let dir = TempDir::new();
        let root = dir.join("");
        let raft: Vec<String> = free_ports(3)
            .into_iter()
            .map(|p| format!("tcp:127.0.0.1:{p}"))
            .collect();
        let mut members = Vec::new();
        for (i, address) in raft.iter().enumerate() {
            let name = format!("sb{i}");
            let db = path(&dir.join(&format!("{name}.db")));
            if i == 0 {
                run(
                    "ovsdb-tool",
                    &root,
                    &["create-cluster", &db, SB_SCHEMA, address],
                );
            } else {
                let mut args = vec!["join-cluster", db.as_str(), "OVN_Southbound", address];
                args.extend(raft[..i].iter().map(String::as_str));
                run("ovsdb-tool", &root, &args);
            }
            let raft_port = address.rsplit(':').next().and_then(|p| p.parse().ok());
            members.push(Member {
                server: None,
                name,
                raft_port: raft_port.expect("a port we formatted"),
                port: 0,
            });
        }
        let mut cluster = SbCluster {
            members,
            serial: Cell::new(0),
            dir,
        };
        for i in 0..3 {
            cluster.start_member(i);
        }
        let formed = eventually(|| {
            (0..3).all(|i| cluster.status(i).contains("Status: cluster member"))
                && cluster.find_leader().is_some()
        });
        if formed {
            return Ok(cluster);
        }
        let logs = cluster.logs();
        if logs.contains("Address already in use") {
            return Err(logs);
        }
        panic!("the SB cluster did not form:\n{logs}");
    }

    /// Starts member `i` from its database file, on its client port (the kernel picks one the
    /// first time), and waits until it answers `list-dbs`.
    fn start_member(&mut self, i: usize) {
        let root = self.dir.join("");
        let m = &self.members[i];
        let socket = self.dir.join(&format!("{}.sock", m.name));
        let _ = fs::remove_file(&socket);
        let mut server = Daemon::spawn(
            "ovsdb-server",
            &root,
            &m.name,
            &[
                path(&self.dir.join(&format!("{}.db", m.name))),
                format!("--remote=punix:{}", path(&socket)),
                format!("--remote=ptcp:{}:127.0.0.1", m.port),
                format!(
                    "--unixctl={}",
                    path(&self.dir.join(&format!("{}.ctl", m.name)))
                ),
            ],
        );
        let (log, mut port) = (server.log.clone(), (m.port != 0).then_some(m.port));
        server.wait_ready(|| {
            port = port.or_else(|| logged_port(&log));
            port.is_some()
        });
        let port = port.unwrap_or_else(|| panic!("{} never said its port", m.name));
        wait_serving(
            &mut server,
            &root,
            &format!("tcp:127.0.0.1:{port}"),
            "OVN_Southbound",
        );
        let m = &mut self.members[i];
        m.port = port;
        m.server = Some(server);
    }

    /// `ovs-appctl cluster/status OVN_Southbound` of member `i` ("" when it does not answer).
    fn status(&self, i: usize) -> String {
        if self.members[i].server.is_none() {
            return String::new();
        }
        let ctl = path(&self.dir.join(&format!("{}.ctl", self.members[i].name)));
        command("ovs-appctl", &self.dir.join(""))
            .args([
                "--timeout=2",
                "-t",
                &ctl,
                "cluster/status",
                "OVN_Southbound",
            ])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn find_leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| self.status(i).contains("Role: leader"))
    }

    /// Every member's client address, as one OVSDB remote list:
    /// `tcp:127.0.0.1:A,tcp:127.0.0.1:B,tcp:127.0.0.1:C` (killed members included: a client
    /// given this list must skip them).
    pub fn remotes(&self) -> String {
        let all: Vec<String> = (0..self.members.len()).map(|i| self.remote(i)).collect();
        all.join(",")
    }

    /// Member `i`'s client address: `tcp:127.0.0.1:PORT`.
    pub fn remote(&self, i: usize) -> String {
        format!("tcp:127.0.0.1:{}", self.members[i].port)
    }

    /// Member `i`'s Raft address (where its peers reach it).
    pub fn raft_remote(&self, i: usize) -> String {
        format!("tcp:127.0.0.1:{}", self.members[i].raft_port)
    }

    /// SIGKILLs member `i` (a crash: no goodbye to its peers or clients).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut server) = self.members[i].server.take() {
            server.kill();
        }
    }

    /// Starts a killed member `i` again (same database file and client port); it rejoins.
    pub fn revive(&mut self, i: usize) {
        if self.members[i].server.is_none() {
            self.start_member(i);
        }
    }

    /// The member (among those running) that is leader, once one is (bounded: an election
    /// after the leader was killed takes about the election timer, 1 s by default).
    pub fn leader(&self) -> usize {
        let mut leader = None;
        eventually(|| {
            leader = self.find_leader();
            leader.is_some()
        });
        leader.unwrap_or_else(|| panic!("no SB member became leader:\n{}", self.logs()))
    }

    /// `ovn-sbctl --db=<running members> --timeout=15 args…` (it finds the leader itself;
    /// a killed member is left out, since ovn-sbctl gives up on a refused remote).
    pub fn sbctl(&self, args: &[&str]) -> String {
        let running: Vec<String> = (0..self.members.len())
            .filter(|&i| self.members[i].server.is_some())
            .map(|i| self.remote(i))
            .collect();
        let db = format!("--db={}", running.join(","));
        let mut all = vec![db.as_str(), TOOL_TIMEOUT];
        all.extend_from_slice(args);
        run("ovn-sbctl", &self.dir.join(""), &all)
    }

    /// `ovn-sbctl --no-leader-only` on member `i` alone: what that member serves.
    pub fn sbctl_member(&self, i: usize, args: &[&str]) -> String {
        let db = format!("--db={}", self.remote(i));
        let mut all = vec![db.as_str(), TOOL_TIMEOUT, "--no-leader-only"];
        all.extend_from_slice(args);
        run("ovn-sbctl", &self.dir.join(""), &all)
    }

    /// A network's Datapath_Binding as northd would write it (`external_ids`: `name=neutron-<id>`,
    /// `name2=<name>`, `logical-switch` a made-up NB uuid). Returns the datapath's uuid.
    pub fn datapath(&self, id: &str, name: &str) -> String {
        let key = self.next();
        let switch = format!("neutron-{id}");
        let logical_switch = format!("00000000-0000-4000-8000-{key:012x}");
        let out = self.sbctl(&[
            "create",
            "Datapath_Binding",
            &format!("tunnel_key={key}"),
            &map_arg(
                "external_ids",
                &[
                    ("logical-switch", &logical_switch),
                    ("name", &switch),
                    ("name2", name),
                ],
            ),
        ]);
        out.trim().to_owned()
    }

    /// An instance's Port_Binding on network `id` (whose datapath [`SbCluster::datapath`]
    /// made), with the rows' `mac` and Neutron `external_ids` as northd copies them from the
    /// NB ([`Ovn::port`] has the list), unbound.
    pub fn port(
        &self,
        network: &str,
        port_id: &str,
        mac: &str,
        ips: &[&str],
        device_id: &str,
        project_id: &str,
    ) {
        let switch = format!("neutron-{network}");
        let datapath = self.sbctl(&[
            "--bare",
            "--columns=_uuid",
            "find",
            "Datapath_Binding",
            &format!("external_ids:name={}", quoted(&switch)),
        ]);
        let cidrs = cidrs(ips);
        let port_name = format!("port-{}", &port_id[..port_id.len().min(8)]);
        self.sbctl(&[
            "create",
            "Port_Binding",
            &format!("logical_port={}", quoted(port_id)),
            &format!("datapath={}", datapath.trim()),
            &format!("tunnel_key={}", self.next()),
            &format!("mac={}", quoted(&addresses(mac, ips))),
            &map_arg(
                "external_ids",
                &[
                    ("neutron:cidrs", &cidrs),
                    ("neutron:device_id", device_id),
                    ("neutron:device_owner", "compute:nova"),
                    ("neutron:network_name", &switch),
                    ("neutron:port_name", &port_name),
                    ("neutron:project_id", project_id),
                    ("neutron:revision_number", "1"),
                ],
            ),
        ]);
    }

    /// A chassis, as [`Ovn::chassis`].
    pub fn chassis(&self, name: &str, encap_ip: &str) {
        add_chassis(|args| self.sbctl(args), name, encap_ip);
    }

    /// Binds a port to a chassis, as its ovn-controller claims it (`ovn-sbctl lsp-bind`).
    pub fn bind(&self, port_id: &str, chassis: &str) {
        self.sbctl(&["--if-exists", "lsp-unbind", port_id]);
        self.sbctl(&["lsp-bind", port_id, chassis]);
    }

    /// The rows of `table` matching `conditions` that member `i` alone serves; `None` when it
    /// does not answer (killed, or still rejoining).
    pub fn find_on(&self, i: usize, table: &str, conditions: &[&str]) -> Option<Vec<Row>> {
        let db = format!("--db={}", self.remote(i));
        let mut args = vec![
            db.as_str(),
            "--timeout=5",
            "--no-leader-only",
            "--format=json",
            "find",
            table,
        ];
        args.extend_from_slice(conditions);
        let out = try_run("ovn-sbctl", &self.dir.join(""), &args).ok()?;
        Some(parse_rows(&out))
    }

    /// Every member's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for m in &self.members {
            let log = fs::read_to_string(self.dir.join(&format!("{}.log", m.name)));
            all += &format!("--- {}\n{}", m.name, log.unwrap_or_default());
        }
        all
    }

    /// A fresh tunnel key / id suffix (unique within this cluster).
    fn next(&self) -> u32 {
        let n = self.serial.get() + 1;
        self.serial.set(n);
        n
    }
}
