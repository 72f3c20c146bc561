//! `mdproxy node`: the agent's flags (the metadata server, the secret, the lookup backend) and
//! the node's own (the watched directory, OVN provisioning, the per-network limits). The files
//! of that directory are `unit.rs`'s.

use std::path::PathBuf;
use std::time::Duration;

use super::agent::{self, Agent, LookupBackend};
use super::args::Args;
use mdproxy_core::agent::imds::DEFAULT_HOP_LIMIT;

use super::range::{CONNS, HOP_LIMIT, RESCAN_INTERVAL};
use super::{common_help, value, Command};

pub const HELP: &str = concat!(
    "\
mdproxy node: one process serving the metadata of many router and network namespaces

The node listens inside every namespace named in --watch-dir, and, with --backend ovn, inside
the ovnmeta- namespace of every OVN network with an instance port bound to this chassis,
which it provisions itself: it replaces neutron-ovn-metadata-agent (and the metadata
extension of neutron-ovn-agent) together with its haproxies. It does the namespace proxy's
and the metadata agent's work in one hop: the scope (router or network) of a request is the
listener's, the client's address the socket's; every X-Forwarded-For, X-Neutron-*,
X-OVN-Network-ID, X-Instance-ID*, X-Tenant-ID, Forwarded, X-Real-IP and underscored header the
instance sends is ignored; the instance is looked up and signed as `mdproxy agent` does, and
the metadata server gets the request `mdproxy ns-proxy` + `mdproxy agent` would send it, byte
for byte. 429 past a file's rate_limit, 503 past its max_conns or the node's --max-conns.

Usage: mdproxy node --watch-dir DIR --shared-secret-file PATH --static-map FILE [OPTIONS]
       mdproxy node --watch-dir DIR --shared-secret-file PATH --backend neutron ... [OPTIONS]
       mdproxy node --shared-secret-file PATH --backend ovn --ovn-sb-connection R
                    [--chassis NAME] [--ovs-db R] [--watch-dir DIR] [OPTIONS]

Node:
      --watch-dir DIR            The directory of served namespaces: one file NAME.toml per
                                 router or network (format below). A new file starts serving
                                 it, a changed one is served anew, a removed one stops (its
                                 connections finish their exchange); a file with an error is
                                 logged with its path and ignored; other names (e.g. a
                                 .NAME.tmp being written) are ignored. Write files whole
                                 (write elsewhere in DIR, then rename). Optional with
                                 --backend ovn (its namespaces are the node's own), for
                                 units served beside them
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
      --ovn-poll-interval S      With --backend ovn: how often the Southbound is read for
                                 what this chassis needs [default: 1; 0.1 to 86400
                                 seconds]. In between, the node waits on the Southbound
                                 for a change to the ports bound here, so a network whose
                                 first instance port binds is provisioned at once; other
                                 changes (a localport's addresses, a live migration's
                                 target) are seen within S
      --token-hop-limit N        IP TTL / IPv6 hop limit of an instance's connection once it
                                 sent PUT /latest/api/token (the node answers it, with the
                                 agent's --imdsv2 rules), as `mdproxy ns-proxy` sets it
                                 [default: 1; 1 to 64]

OVN (--backend ovn): from the Southbound (--ovn-sb-connection: unix:, tcp: or ssl: remotes,
ssl: with the --ovn-sb-* files for lookups and provisioning alike), for each network with at least one VIF port bound to this chassis (--chassis,
default the system-id of --ovs-db), the node provisions what neutron-ovn-metadata-agent does:
namespace ovnmeta-<network>, the veth pair tap<first 10 of the network>0/1, the first end
plugged into the integration bridge (external_ids:ovn-bridge, default br-int) with
iface-id=<the network's metadata localport> through a transaction on --ovs-db, the
localport's MAC and addresses plus 169.254.169.254/32 (and fe80::a9fe:a9fe/128 with IPv6) on
the other end, the checksum-fill rule on netdev bridges; then it listens there on
169.254.169.254:80 (and [fe80::a9fe:a9fe]:80) for that network (X-OVN-Network-ID). When the
last VIF port leaves, the listener stops and all of it goes. At start it adopts what is right
and removes stale ovnmeta- namespaces. It registers on its Chassis_Private row
(neutron:ovn-metadata-id, neutron:ovn-metadata-sb-cfg following SB_Global.nb_cfg), so Neutron
lists the agent alive. Namespaces and links through iproute2's ip, the rule through iptables.

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
    imdsv2 = \"required\"           # off, optional or required, for this listener alone; above
                                  # the static map's, --imdsv2-scope and --imdsv2 [default:
                                  # those decide]
Unknown keys are errors (a misspelt key would otherwise be silently ignored).

",
    common_help!("the metadata server", "The metadata server"),
    "
SIGTERM/SIGINT: stop accepting in every namespace, finish in-flight requests, exit 0.
SIGHUP: read the agent's configuration again, as `mdproxy agent` does (--watch-dir is read
every --rescan-interval, the Southbound every --ovn-poll-interval).

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
    /// `None`: only with the ovn backend (which serves the namespaces it provisions).
    pub watch_dir: Option<PathBuf>,
    pub rescan: Duration,
    /// How often the ovn backend's provisioner reads the Southbound.
    pub ovn_poll: Duration,
    pub max_conns_per_network: usize,
    /// `--token-hop-limit`.
    pub token_hop_limit: u8,
}

/// The agent flags that make no sense without the agent's Unix socket.
const SOCKET_FLAGS: [&str; 4] = ["listen-socket", "backlog", "socket-mode", "workers"];

pub(super) fn parse(p: &mut Args) -> Result<Command, String> {
    let (mut watch_dir, mut rescan, mut per_network, mut per_ip) = (None, None, 1024, 64);
    let mut ovn_poll = None;
    let mut hop_limit = DEFAULT_HOP_LIMIT;
    let mut own = |name: &str, flag: &str, p: &mut Args| -> Result<bool, String> {
        match name {
            "watch-dir" => watch_dir = Some(PathBuf::from(value(p, flag)?)),
            "rescan-interval" => rescan = Some(RESCAN_INTERVAL.parse(flag, &value(p, flag)?)?),
            "ovn-poll-interval" => ovn_poll = Some(RESCAN_INTERVAL.parse(flag, &value(p, flag)?)?),
            "max-conns-per-network" => per_network = CONNS.parse(flag, &value(p, flag)?)?,
            "max-conns-per-ip" => per_ip = CONNS.parse(flag, &value(p, flag)?)?,
            "token-hop-limit" => hop_limit = HOP_LIMIT.parse(flag, &value(p, flag)?)?,
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
    let ovn = matches!(agent.backend, LookupBackend::Ovn(_));
    if watch_dir.is_none() && !ovn {
        return Err(
            "--watch-dir is required (the namespaces to serve; only --backend ovn finds its own)"
                .to_owned(),
        );
    }
    if ovn_poll.is_some() && !ovn {
        return Err("--ovn-poll-interval needs --backend ovn".to_owned());
    }
    Ok(Command::Node(Box::new(Node {
        agent,
        watch_dir,
        rescan: rescan.unwrap_or(Duration::from_secs(1)),
        ovn_poll: ovn_poll.unwrap_or(Duration::from_secs(1)),
        max_conns_per_network: per_network,
        token_hop_limit: hop_limit,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse;
    use std::ffi::OsString;

    fn cmd(args: &[&str]) -> Result<Command, String> {
        let argv = ["mdproxy", "node"].iter().chain(args);
        parse(argv.map(OsString::from))
    }

    #[test]
    fn the_ovn_backend_needs_no_watch_dir() {
        let ovn = [
            "--shared-secret-file=/s",
            "--backend=ovn",
            "--ovn-sb-connection=unix:/sb.sock",
            "--chassis=c1",
        ];
        let Ok(Command::Node(n)) = cmd(&ovn) else {
            panic!("{:?}", cmd(&ovn))
        };
        assert_eq!(n.watch_dir, None);
        assert_eq!(n.ovn_poll, Duration::from_secs(1));
        let more = [&ovn[..], &["--ovn-poll-interval=0.2", "--watch-dir=/d"]].concat();
        let Ok(Command::Node(n)) = cmd(&more) else {
            panic!("{:?}", cmd(&more))
        };
        assert_eq!(n.ovn_poll, Duration::from_millis(200));
        assert_eq!(n.watch_dir, Some(PathBuf::from("/d")));
        let e = cmd(&[&ovn[..], &["--ovn-poll-interval=0.01"]].concat()).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
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
        assert_eq!(n.watch_dir, Some(PathBuf::from("/d")));
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
            (
                &[&base[..], &["--ovn-poll-interval=1"]].concat()[..],
                "needs --backend ovn",
            ),
        ] {
            let e = cmd(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
