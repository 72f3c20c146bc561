//! `mdproxy node`: the agent's flags (the metadata server, the secret, the lookup backend),
//! the node's own (the watched directory, the per-network limits), and the format of the files
//! in that directory, one per router or network served.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mdproxy_core::config::RateLimit;
use mdproxy_core::scope::Scope;

use super::agent::{self, Agent};
use super::args::Args;
use super::range::{CONNS, RESCAN_INTERVAL};
use super::{common_help, value, Command};

pub const HELP: &str = concat!(
    "\
mdproxy node: one process serving the metadata of many router and network namespaces

The node listens inside every namespace named in --watch-dir, and does the namespace proxy's
and the metadata agent's work in one hop: the scope (router or network) of a request is the
listener's, the client's address the socket's; every X-Forwarded-For, X-Neutron-*,
X-OVN-Network-ID, X-Instance-ID*, X-Tenant-ID, Forwarded, X-Real-IP and underscored header the
instance sends is ignored; the instance is looked up and signed as `mdproxy agent` does, and
the metadata server gets the request `mdproxy ns-proxy` + `mdproxy agent` would send it, byte
for byte. 429 past a file's rate_limit, 503 past its max_conns or the node's --max-conns.

Usage: mdproxy node --watch-dir DIR --shared-secret-file PATH --static-map FILE [OPTIONS]
       mdproxy node --watch-dir DIR --shared-secret-file PATH --backend neutron ... [OPTIONS]

Node:
      --watch-dir DIR            The directory of served namespaces: one file NAME.toml per
                                 router or network (format below). A new file starts serving
                                 it, a changed one is served anew, a removed one stops (its
                                 connections finish their exchange); a file with an error is
                                 logged with its path and ignored; other names (e.g. a
                                 .NAME.tmp being written) are ignored. Write files whole
                                 (write elsewhere in DIR, then rename)
      --rescan-interval S        How often DIR is read: a new file is served within S
                                 [default: 1; 0.1 to 86400 seconds]. A scan, not inotify: it
                                 costs one readdir and one stat per file, misses nothing
                                 (inotify's queue can overflow) and needs no unsafe code
      --max-conns-per-network N  Connections open at once in one file's namespace (the
                                 default of a file without max_conns)
                                 [default: 1024; 1 to 1000000]
      --max-conns-per-ip N       Connections open at once from one address within one
                                 namespace [default: 64; 1 to 1000000]
      --max-conns N              Connections open at once in all
                                 [default: 4096; 1 to 1000000]

Entering a namespace (setns(2) on /run/netns/NAME) needs CAP_SYS_ADMIN, for as long as the
node runs, so it takes no --user or --group. One event loop serves every namespace (no
--workers): its lookup cache is shared by all.

Every other flag is `mdproxy agent`'s: the metadata server (--metadata-url and its TLS
flags), --shared-secret-file, the lookup (--backend, --static-map, the cache, the neutron and
ovn backends' flags) and Neutron's --config-file/--config-dir; see `mdproxy agent --help`.
Its socket flags (--listen-socket, --backlog, --socket-mode, --workers) are refused: the node
has no Unix socket.

A file of --watch-dir, in TOML:
    router_id = \"5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6\"   # or network_id, or ovn_network_id
    namespace = \"qrouter-5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6\"   # /run/netns/NAME; absent:
                                                   # the node's own namespace
    listen = [\"0.0.0.0:9697\"]     # [default: [\"0.0.0.0:9697\"]]; an IPv6 link-local address
                                  # names its interface: \"[fe80::a9fe:a9fe%tap0]:80\"
    rate_limit = \"10/10,10/10\"    # per client IP, BASE/SECONDS,BURST/SECONDS [default: off]
    max_conns = 1024              # [default: --max-conns-per-network]
Unknown keys are errors (a misspelt key would otherwise be silently ignored).

",
    common_help!("the metadata server", "The metadata server"),
    "
SIGTERM/SIGINT: stop accepting in every namespace, finish in-flight requests, exit 0.
SIGHUP: re-read --static-map, as the agent does (--watch-dir is read every --rescan-interval).

Exit status: 0 after a clean stop, 1 when the node cannot start or its event loop fails, 2 for
a usage or configuration error (bad flag, unreadable secret, a --watch-dir that is not a
directory).
"
);

/// Everything `node` was told.
#[derive(Debug)]
pub struct Node {
    /// The agent's settings (its socket flags refused).
    pub agent: Agent,
    pub watch_dir: PathBuf,
    pub rescan: Duration,
    pub max_conns_per_network: usize,
}

/// The agent flags that make no sense without the agent's Unix socket.
const SOCKET_FLAGS: [&str; 4] = ["listen-socket", "backlog", "socket-mode", "workers"];

pub(super) fn parse(p: &mut Args) -> Result<Command, String> {
    let (mut watch_dir, mut rescan, mut per_network, mut per_ip) = (None, None, 1024, 64);
    let mut own = |name: &str, flag: &str, p: &mut Args| -> Result<bool, String> {
        match name {
            "watch-dir" => watch_dir = Some(PathBuf::from(value(p, flag)?)),
            "rescan-interval" => rescan = Some(RESCAN_INTERVAL.parse(flag, &value(p, flag)?)?),
            "max-conns-per-network" => per_network = CONNS.parse(flag, &value(p, flag)?)?,
            "max-conns-per-ip" => per_ip = CONNS.parse(flag, &value(p, flag)?)?,
            name if SOCKET_FLAGS.contains(&name) => {
                return Err(format!("{flag}: the node has no Unix socket (see --help)"))
            }
            _ => return Ok(false),
        }
        Ok(true)
    };
    let mut agent = match agent::parse_with(p, HELP, &mut own)? {
        Command::Agent(agent) => *agent,
        other => return Ok(other),
    };
    if agent.process.user.is_some() || agent.process.group.is_some() {
        return Err(
            "--user/--group: the node enters namespaces for as long as it runs, which \
                    needs CAP_SYS_ADMIN; run it as root"
                .to_owned(),
        );
    }
    agent.endpoint.conns.max_conns_per_ip = per_ip;
    let watch_dir = watch_dir.ok_or("--watch-dir is required (the namespaces to serve)")?;
    Ok(Command::Node(Box::new(Node {
        agent,
        watch_dir,
        rescan: rescan.unwrap_or(Duration::from_secs(1)),
        max_conns_per_network: per_network,
    })))
}

/// One file of `--watch-dir`: what to serve, where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub scope: Scope,
    /// `None`: the node's own namespace.
    pub namespace: Option<String>,
    /// As written: an interface name is looked up inside the namespace, when binding.
    pub listen: Vec<String>,
    pub rate_limit: Option<RateLimit>,
    /// `None`: `--max-conns-per-network`.
    pub max_conns: Option<usize>,
    /// The process that holds the registration (`mdproxy node-register`): once it is gone,
    /// the file is stale (the registering process was killed before it could remove it).
    pub owner_pid: Option<u32>,
}

const UNIT_KEYS: [&str; 8] = [
    "owner_pid",
    "router_id",
    "network_id",
    "ovn_network_id",
    "namespace",
    "listen",
    "rate_limit",
    "max_conns",
];

/// Parses one file of `--watch-dir` (see [`HELP`]). The error names the key at fault.
pub fn parse_unit(text: &str) -> Result<Unit, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    if let Some(key) = table.keys().find(|k| !UNIT_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{key}` (keys: {})",
            UNIT_KEYS.join(", ")
        ));
    }
    let string = |key: &str| -> Result<Option<&str>, String> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("`{key}` must be a string")),
        }
    };
    let scopes = [
        ("router_id", Scope::Router as fn(_) -> Scope),
        ("network_id", Scope::Network),
        ("ovn_network_id", Scope::OvnNetwork),
    ];
    let mut scope = None;
    for (key, make) in scopes {
        let Some(v) = string(key)? else { continue };
        if scope.is_some() {
            return Err("give one of `router_id`, `network_id`, `ovn_network_id`".to_owned());
        }
        scope = Some(make(super::uuid(&format!("`{key}`"), v)?));
    }
    let scope = scope.ok_or("one of `router_id`, `network_id`, `ovn_network_id` is required")?;
    let namespace = string("namespace")?.map(namespace_name).transpose()?;
    let listen = match table.get("listen") {
        None => vec!["0.0.0.0:9697".to_owned()],
        Some(toml::Value::Array(items)) if !items.is_empty() => {
            let each = |v: &toml::Value| match v {
                toml::Value::String(s) => listen_syntax(s).map(|()| s.clone()),
                _ => Err("`listen` must be a list of \"ADDR:PORT\" strings".to_owned()),
            };
            items.iter().map(each).collect::<Result<_, _>>()?
        }
        Some(_) => return Err("`listen` must be a non-empty list of \"ADDR:PORT\"".to_owned()),
    };
    let rate_limit = string("rate_limit")?
        .map(|v| super::ns_proxy::rate_limit_arg("`rate_limit`", v))
        .transpose()?;
    let max_conns = match table.get("max_conns") {
        None => None,
        Some(toml::Value::Integer(n)) => Some(CONNS.parse("`max_conns`", &n.to_string())?),
        Some(_) => return Err("`max_conns` must be an integer".to_owned()),
    };
    let owner_pid = match table.get("owner_pid") {
        None => None,
        Some(toml::Value::Integer(n)) if (1..=i64::from(i32::MAX)).contains(n) => {
            u32::try_from(*n).ok()
        }
        Some(_) => return Err("`owner_pid` must be a process id".to_owned()),
    };
    Ok(Unit {
        scope,
        namespace,
        listen,
        rate_limit,
        max_conns,
        owner_pid,
    })
}

impl Unit {
    /// The file that [`parse_unit`] reads back as this unit.
    pub fn to_toml(&self) -> String {
        let (key, id) = match self.scope {
            Scope::Router(id) => ("router_id", id),
            Scope::Network(id) => ("network_id", id),
            Scope::OvnNetwork(id) => ("ovn_network_id", id),
        };
        let mut text = format!("{key} = \"{id}\"\n");
        if let Some(ns) = &self.namespace {
            text += &format!("namespace = \"{ns}\"\n");
        }
        let listen: Vec<String> = self.listen.iter().map(|l| format!("\"{l}\"")).collect();
        text += &format!("listen = [{}]\n", listen.join(", "));
        if let Some(r) = self.rate_limit {
            let (bw, uw) = (r.base_window.as_secs(), r.burst_window.as_secs());
            text += &format!(
                "rate_limit = \"{}/{bw},{}/{uw}\"\n",
                r.base_limit, r.burst_limit
            );
        }
        if let Some(n) = self.max_conns {
            text += &format!("max_conns = {n}\n");
        }
        if let Some(pid) = self.owner_pid {
            text += &format!("owner_pid = {pid}\n");
        }
        text
    }
}

pub const REGISTER_HELP: &str = "\
mdproxy node-register: hold one router's or network's registration with `mdproxy node`

Writes DIR/UUID.toml (the format of `mdproxy node --help`, with owner_pid = this process), and
removes it on SIGTERM or SIGINT, which makes the node stop serving that namespace; the node
also stops when this process is gone (killed before it could remove the file). What the
haproxy shim (dist/neutron/mdproxy-haproxy) execs under MDPROXY_NODE_DIR, in place of a proxy
per router: Neutron's process monitor finds the pid file and the UUID in /proc/PID/cmdline, as
with haproxy, while one node serves every namespace.

Usage: mdproxy node-register --dir DIR (--router-id|--network-id|--ovn-network-id) UUID
                             [--namespace NAME] [--listen ADDR:PORT]... [OPTIONS]

      --dir DIR                  The node's --watch-dir
      --router-id UUID           The router served (or --network-id, --ovn-network-id)
      --namespace NAME           Its namespace under /run/netns [default: the node's own]
      --listen ADDR:PORT         Where the node listens in it; repeatable
                                 [default: 0.0.0.0:9697]
      --rate-limit B/BW,U/UW     Per client IP, as `mdproxy ns-proxy --rate-limit`
      --max-conns N              Connections open at once in this namespace
                                 [default: the node's --max-conns-per-network; 1 to 1000000]
      --pid-file PATH            Write this process's id here; removed on exit
      --daemonize                Fork into the background first (haproxy's `daemon`)
  -h, --help                     Print this help
";

/// Everything `node-register` was told.
#[derive(Debug)]
pub struct Register {
    pub dir: PathBuf,
    /// Without its owner (set once the process is the one that stays).
    pub unit: Unit,
    pub pid_file: Option<PathBuf>,
    pub daemonize: bool,
}

/// `node-register`'s flags (no configuration file: it is what a script execs).
pub(super) fn parse_register(mut p: lexopt::Parser) -> Result<Command, String> {
    use lexopt::Arg::{Long, Short};
    let (mut dir, mut scope, mut namespace, mut listen) = (None, None, None, Vec::new());
    let (mut rate_limit, mut max_conns, mut pid_file, mut daemonize) = (None, None, None, false);
    let text = |p: &mut lexopt::Parser, flag: &str| -> Result<String, String> {
        let v = p.value().map_err(|e| format!("--{flag}: {e}"))?;
        v.into_string().map_err(|_| format!("--{flag}: not UTF-8"))
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let name = match arg {
            Short('h') | Long("help") => return Ok(Command::Help(REGISTER_HELP)),
            Long(name) => name.to_owned(),
            other => return Err(super::unexpected(&other)),
        };
        let flag = format!("--{name}");
        match name.as_str() {
            "dir" => dir = Some(PathBuf::from(text(&mut p, &name)?)),
            "router-id" | "network-id" | "ovn-network-id" if scope.is_some() => {
                return Err(format!(
                    "{flag}: give one of --router-id, --network-id, --ovn-network-id"
                ))
            }
            "router-id" => scope = Some(Scope::Router(super::uuid(&flag, &text(&mut p, &name)?)?)),
            "network-id" => {
                scope = Some(Scope::Network(super::uuid(&flag, &text(&mut p, &name)?)?))
            }
            "ovn-network-id" => {
                scope = Some(Scope::OvnNetwork(super::uuid(
                    &flag,
                    &text(&mut p, &name)?,
                )?))
            }
            "namespace" => namespace = Some(namespace_name(&text(&mut p, &name)?)?),
            "listen" => {
                let v = text(&mut p, &name)?;
                listen_syntax(&v)?;
                listen.push(v);
            }
            "rate-limit" => {
                let v = text(&mut p, &name)?;
                rate_limit = Some(super::ns_proxy::rate_limit_arg(&flag, &v)?);
            }
            "max-conns" => max_conns = Some(CONNS.parse(&flag, &text(&mut p, &name)?)?),
            "pid-file" => pid_file = Some(PathBuf::from(text(&mut p, &name)?)),
            "daemonize" => daemonize = true,
            _ => return Err(format!("unknown option {flag} (try --help)")),
        }
    }
    if listen.is_empty() {
        listen.push("0.0.0.0:9697".to_owned());
    }
    Ok(Command::NodeRegister(Box::new(Register {
        dir: dir.ok_or("--dir is required (the node's --watch-dir)")?,
        unit: Unit {
            scope: scope.ok_or("one of --router-id, --network-id, --ovn-network-id is required")?,
            namespace,
            listen,
            rate_limit,
            max_conns,
            owner_pid: None,
        },
        pid_file,
        daemonize,
    })))
}

/// A name under /run/netns: one path component, as `ip netns` makes them.
fn namespace_name(name: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if name.is_empty() || name.len() > 255 || name.starts_with('.') || !name.chars().all(ok) {
        return Err(format!(
            "`namespace`: {name:?} is not a namespace name (letters, digits, - _ .)"
        ));
    }
    Ok(name.to_owned())
}

/// Checks `ADDR:PORT` without resolving an interface name (that happens inside the namespace).
fn listen_syntax(v: &str) -> Result<(), String> {
    if v.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let stand_in = v.split_once('%').and_then(|(ip, rest)| {
        let (_, port) = rest.split_once("]:")?;
        format!("{ip}]:{port}").parse::<SocketAddr>().ok()
    });
    match stand_in {
        Some(_) => Ok(()),
        None => Err(format!(
            "`listen`: {v:?} is not ADDR:PORT (e.g. 0.0.0.0:9697 or [fe80::a9fe:a9fe%tap0]:80)"
        )),
    }
}

/// The address of a `listen` entry, an interface name looked up in the calling thread's
/// namespace.
pub fn listen_addr(v: &str) -> Result<SocketAddr, String> {
    super::ns_proxy::addr("`listen`", v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse;
    use std::ffi::OsString;

    const R: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";

    fn cmd(args: &[&str]) -> Result<Command, String> {
        let argv = ["mdproxy", "node"].iter().chain(args);
        parse(argv.map(OsString::from))
    }

    #[test]
    fn flags() {
        let base = [
            "--watch-dir=/d",
            "--shared-secret-file=/s",
            "--static-map=/m",
        ];
        let Ok(Command::Node(n)) = cmd(&base) else {
            panic!("{:?}", cmd(&base))
        };
        assert_eq!(n.watch_dir, PathBuf::from("/d"));
        assert_eq!(n.rescan, Duration::from_secs(1));
        assert_eq!(n.max_conns_per_network, 1024);
        assert_eq!(n.agent.endpoint.conns.max_conns_per_ip, 64);
        assert_eq!(n.agent.endpoint.conns.max_conns, 4096);
        let more = [
            &base[..],
            &["--max-conns-per-network=3", "--max-conns-per-ip=2"],
        ]
        .concat();
        let Ok(Command::Node(n)) = cmd(&more) else {
            panic!()
        };
        assert_eq!(
            (
                n.max_conns_per_network,
                n.agent.endpoint.conns.max_conns_per_ip
            ),
            (3, 2)
        );
        assert!(matches!(cmd(&["--help"]), Ok(Command::Help(HELP))));
        for (bad, why) in [
            (&base[1..], "--watch-dir is required"),
            (
                &[&base[..], &["--workers=2"]].concat()[..],
                "no Unix socket",
            ),
            (
                &[&base[..], &["--listen-socket=/x"]].concat()[..],
                "no Unix socket",
            ),
            (
                &[&base[..], &["--user=nobody"]].concat()[..],
                "CAP_SYS_ADMIN",
            ),
            (
                &[&base[..], &["--rescan-interval=0.01"]].concat()[..],
                "out of range",
            ),
            (
                &[&base[..], &["--max-conns-per-network=0"]].concat()[..],
                "out of range",
            ),
            (&base[..2], "--static-map is required"),
        ] {
            let e = cmd(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn unit_files() {
        let u = parse_unit(&format!(
            "router_id = \"{R}\"\nnamespace = \"qrouter-{R}\"\n"
        ))
        .unwrap();
        assert_eq!(
            u.scope,
            Scope::Router(mdproxy_core::scope::Uuid::parse(R.as_bytes()).unwrap())
        );
        assert_eq!(u.namespace, Some(format!("qrouter-{R}")));
        assert_eq!(u.listen, ["0.0.0.0:9697"]);
        assert_eq!((u.rate_limit, u.max_conns, u.owner_pid), (None, None, None));
        let u = parse_unit(&format!(
            "ovn_network_id = \"{R}\"\nlisten = [\"169.254.169.254:80\", \"[fe80::a9fe:a9fe%tap0]:80\"]\n\
             rate_limit = \"10/10,20/1\"\nmax_conns = 7\nowner_pid = 42\n"
        ))
        .unwrap();
        assert_eq!(parse_unit(&u.to_toml()), Ok(u.clone()), "{}", u.to_toml());
        assert_eq!(u.owner_pid, Some(42));
        assert!(matches!(u.scope, Scope::OvnNetwork(_)));
        assert_eq!(u.listen.len(), 2);
        assert_eq!(
            u.rate_limit.map(|r| (r.base_limit, r.burst_limit)),
            Some((10, 20))
        );
        assert_eq!(u.max_conns, Some(7));
        for (text, why) in [
            (String::new(), "is required"),
            (
                format!("router_id = \"{R}\"\nnetwork_id = \"{R}\""),
                "give one of",
            ),
            ("router_id = \"nope\"".to_owned(), "not a UUID"),
            (
                format!("router_id = \"{R}\"\nnamespace = \"../etc\""),
                "not a namespace name",
            ),
            (
                format!("router_id = \"{R}\"\nnamespace = \"a/b\""),
                "not a namespace name",
            ),
            (format!("router_id = \"{R}\"\nlisten = []"), "non-empty"),
            (
                format!("router_id = \"{R}\"\nlisten = [\"9697\"]"),
                "not ADDR:PORT",
            ),
            (
                format!("router_id = \"{R}\"\nmax_conns = 0"),
                "out of range",
            ),
            (
                format!("router_id = \"{R}\"\nrate_limit = \"x\""),
                "BASE/SECONDS",
            ),
            (
                format!("router_id = \"{R}\"\nrouterid = \"{R}\""),
                "unknown key `routerid`",
            ),
            ("router_id = ".to_owned(), "TOML"),
            (format!("router_id = \"{R}\"\nowner_pid = 0"), "process id"),
        ] {
            let e = parse_unit(&text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn register_flags() {
        let argv = |args: &[&str]| {
            let all = ["mdproxy", "node-register"].iter().chain(args);
            parse(all.map(OsString::from).collect::<Vec<_>>())
        };
        let Ok(Command::NodeRegister(r)) = argv(&[
            "--dir=/d",
            "--router-id",
            R,
            "--namespace",
            &format!("qrouter-{R}"),
            "--listen=[::]:9697",
            "--listen=0.0.0.0:9697",
            "--rate-limit=10/10,10/10",
            "--max-conns=100",
            "--pid-file=/p",
            "--daemonize",
        ]) else {
            panic!()
        };
        assert_eq!(r.dir, PathBuf::from("/d"));
        assert_eq!(r.unit.listen, ["[::]:9697", "0.0.0.0:9697"]);
        assert_eq!((r.unit.max_conns, r.daemonize), (Some(100), true));
        assert_eq!(parse_unit(&r.unit.to_toml()), Ok(r.unit.clone()));
        let Ok(Command::NodeRegister(r)) = argv(&["--dir=/d", "--network-id", R]) else {
            panic!()
        };
        assert_eq!(r.unit.listen, ["0.0.0.0:9697"]);
        for (bad, why) in [
            (&["--router-id", R][..], "--dir is required"),
            (&["--dir=/d"][..], "is required"),
            (
                &["--dir=/d", "--router-id", R, "--network-id", R][..],
                "give one of",
            ),
            (
                &["--dir=/d", "--router-id", R, "--namespace=a/b"][..],
                "not a namespace",
            ),
            (
                &["--dir=/d", "--router-id", R, "--bogus"][..],
                "unknown option --bogus",
            ),
        ] {
            let e = argv(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(matches!(argv(&["-h"]), Ok(Command::Help(REGISTER_HELP))));
    }
}
