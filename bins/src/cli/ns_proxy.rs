//! `mdproxy ns-proxy`: the namespace proxy's flags, including the legacy
//! `neutron-ns-metadata-proxy` spellings the L3 and DHCP agents pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mdproxy_core::config::{ConnLimits, RateLimit};
use mdproxy_core::scope::Scope;

use super::args::Args;
use super::range::{CONNS, HOP_LIMIT, PORT, RATE_COUNT, RATE_WINDOW};
use super::{common_help, next_flag, uuid, value, Command, Common, EndpointArgs, Process};

pub const HELP: &str = concat!(
    "\
mdproxy ns-proxy: the namespace metadata proxy

Accepts instance HTTP requests, deletes every client-sent identity header (X-Forwarded-For,
X-Neutron-Router-ID, X-Neutron-Network-ID, X-Instance-ID, X-Instance-ID-Signature, X-Tenant-ID,
X-Metadata-Provider, X-Metadata-Provider-Signature), adds X-Forwarded-For with the client's
address and the router or network ID, and relays the request to the metadata agent over a Unix
socket. Stops on SIGTERM/SIGINT after in-flight requests finish; SIGHUP only logs.

Usage: mdproxy ns-proxy (--router-id UUID | --network-id UUID | --ovn-network-id UUID)
                        [OPTIONS]

Scope (exactly one):
      --router-id UUID           Serve a router: sends X-Neutron-Router-ID
      --network-id UUID          Serve a network: sends X-Neutron-Network-ID
      --ovn-network-id UUID      Serve an OVN network (an ovnmeta- namespace): sends
                                 X-OVN-Network-ID, for an agent with --backend ovn

Sockets:
      --listen ADDR:PORT         Address to accept instances on; repeatable
                                 [default: 0.0.0.0:9697]. `[::]:PORT` accepts IPv4 too (dual
                                 stack), so do not add 0.0.0.0 with the same port.
                                 A link-local IPv6 address names its interface, by name or
                                 index: [fe80::a9fe:a9fe%tap0123456789]:80
      --upstream-socket PATH     The metadata agent's Unix socket
                                 [default: $state_path/metadata_proxy, or
                                 /var/lib/neutron/metadata_proxy without --state_path]

Limits (beyond them clients get 503 or 429):
      --max-conns N              Client connections open at once
                                 [default: 1024; 1 to 1000000]
      --max-conns-per-ip N       Client connections open at once per client IP
                                 [default: 64; 1 to 1000000]
      --rate-limit B/BW,U/UW     Per client IP, at most B requests per BW seconds and U per UW
                                 seconds (Neutron's base and burst windows, sliding like
                                 haproxy's http_req_rate), e.g. 10/10,10/10 [default: off;
                                 B and U: 1 to 1000000, BW and UW: 1 to 86400 seconds]

IMDSv2 (tokens are answered by the agent; a PUT /latest/api/token carrying X-Forwarded-For
came through a proxy inside the instance and is refused here, 403):
      --token-hop-limit N        IP TTL / IPv6 hop limit of a connection once it sent PUT
                                 /latest/api/token, so the token's answer dies one router
                                 away (a container bridge, a forwarder in the instance),
                                 as AWS's HttpPutResponseHopLimit. Kept until the connection
                                 closes: a retransmission of the answer is stamped when sent,
                                 and nothing later on the connection can reach a peer the
                                 answer cannot [default: 1; 1 to 64]

",
    common_help!("the agent", "The agent"),
    "
Legacy neutron-ns-metadata-proxy flags (as the L3 agent passed them):
      --router_id, --network_id, --pid_file, --log-file, --log-dir, --verbose, --debug,
      --daemonize, --nodaemonize   as above (`mdproxy ns-proxy` stays in the foreground
                                   unless told --daemonize; invoked as
                                   neutron-ns-metadata-proxy it daemonizes unless told
                                   --nodaemonize, as the legacy tool did)
      --metadata_port PORT         Same as --listen 0.0.0.0:PORT [1 to 65535]
      --metadata_proxy_socket PATH Same as --upstream-socket
      --state_path DIR             Makes the default upstream DIR/metadata_proxy
      --metadata_proxy_user USER   Same as --user
      --metadata_proxy_group GROUP Same as --group
      --[no]metadata_proxy_watch_log[=BOOL]  Accepted and ignored

Exit status: 0 after a clean stop, 1 when the proxy cannot start or its event loop fails,
2 for a usage or configuration error.
"
);

/// Everything `ns-proxy` was told.
#[derive(Debug)]
pub struct NsProxy {
    pub scope: Scope,
    pub listen: Vec<SocketAddr>,
    pub upstream: PathBuf,
    pub rate_limit: Option<RateLimit>,
    pub token_hop_limit: u8,
    pub endpoint: EndpointArgs,
    pub drain_timeout: Duration,
    pub process: Process,
}

/// DESIGN.md's connection limits of an ns-proxy (the other roles' are [`ConnLimits::default`]).
pub const NS_PROXY_CONNS: ConnLimits = ConnLimits {
    max_conns: 1024,
    max_conns_per_ip: 64,
};

/// Flags that set the same thing (see `config.rs`): a configuration file's `listen` is
/// replaced by `--metadata_port` on the command line, its `router-id` by `--network-id`.
pub(super) const SAME: &[&[&str]] = &[
    &["router-id", "network-id", "ovn-network-id"],
    &["listen", "metadata-port"],
    &["upstream-socket", "metadata-proxy-socket"],
    &["user", "metadata-proxy-user"],
    &["group", "metadata-proxy-group"],
];

/// `legacy`: invoked as `neutron-ns-metadata-proxy`, which daemonized unless told
/// `--nodaemonize` (the L3 and DHCP agents that spawn it wait for it to return).
pub(super) fn parse(p: &mut Args, legacy: bool) -> Result<Command, String> {
    let (mut router, mut network, mut state_path, mut upstream) = (None, None, None, None);
    let mut ovn_network = None;
    let (mut listen, mut rate_limit) = (Vec::new(), None);
    let mut token_hop_limit = 1;
    let mut common = Common::default();
    common.process.daemonize = legacy;
    common.endpoint.conns = NS_PROXY_CONNS;
    while let Some((name, flag)) = next_flag(p)? {
        if common.parse(&name, &flag, p)? {
            continue;
        }
        let (process, conns) = (&mut common.process, &mut common.endpoint.conns);
        match name.as_str() {
            "help" => return Ok(Command::Help(HELP)),
            "router-id" => router = Some(uuid(&flag, &value(p, &flag)?)?),
            "network-id" => network = Some(uuid(&flag, &value(p, &flag)?)?),
            "ovn-network-id" => ovn_network = Some(uuid(&flag, &value(p, &flag)?)?),
            "listen" => listen.push(addr(&flag, &value(p, &flag)?)?),
            "metadata-port" => {
                let port = PORT.parse(&flag, &value(p, &flag)?)?;
                listen.push(SocketAddr::from(([0, 0, 0, 0], port)));
            }
            "upstream-socket" | "metadata-proxy-socket" => upstream = Some(value(p, &flag)?.into()),
            "state-path" => state_path = Some(PathBuf::from(value(p, &flag)?)),
            "max-conns" => conns.max_conns = CONNS.parse(&flag, &value(p, &flag)?)?,
            "max-conns-per-ip" => conns.max_conns_per_ip = CONNS.parse(&flag, &value(p, &flag)?)?,
            "rate-limit" => rate_limit = Some(rate_limit_arg(&flag, &value(p, &flag)?)?),
            "token-hop-limit" => token_hop_limit = HOP_LIMIT.parse(&flag, &value(p, &flag)?)?,
            "metadata-proxy-user" => process.user = Some(value(p, &flag)?),
            "metadata-proxy-group" => process.group = Some(value(p, &flag)?),
            "metadata-proxy-watch-log" | "nometadata-proxy-watch-log" => {
                let v = p.optional_value().map(|v| format!("={v}"));
                process.ignored.push(format!(
                    "ignoring {flag}{}: mdproxy does not watch its log file",
                    v.unwrap_or_default()
                ));
            }
            _ => return Err(p.unknown(&flag)),
        }
    }
    let scope = match (router, network, ovn_network) {
        (Some(id), None, None) => Scope::Router(id),
        (None, Some(id), None) => Scope::Network(id),
        (None, None, Some(id)) => Scope::OvnNetwork(id),
        (None, None, None) => {
            return Err(
                "one of --router-id, --network-id or --ovn-network-id is required".to_owned(),
            )
        }
        _ => {
            return Err(
                "give only one of --router-id, --network-id and --ovn-network-id".to_owned(),
            )
        }
    };
    if listen.is_empty() {
        listen.push(SocketAddr::from(([0, 0, 0, 0], 9697)));
    }
    let upstream = upstream.unwrap_or_else(|| {
        state_path
            .unwrap_or_else(|| "/var/lib/neutron".into())
            .join("metadata_proxy")
    });
    let common = common.finish();
    Ok(Command::NsProxy(Box::new(NsProxy {
        scope,
        listen,
        upstream,
        rate_limit,
        token_hop_limit,
        endpoint: common.endpoint,
        drain_timeout: common.drain_timeout,
        process: common.process,
    })))
}

/// `ADDR:PORT`; an IPv6 link-local address takes its interface by index or by name
/// (`[fe80::a9fe:a9fe%tap1234567890]:80`, as the OVN metadata namespace binds it), the name
/// looked up in the current network namespace.
pub(super) fn addr(flag: &str, v: &str) -> Result<SocketAddr, String> {
    let bad = || format!("{flag}: {v:?} is not ADDR:PORT (e.g. 0.0.0.0:9697 or [::]:9697)");
    if let Ok(addr) = v.parse() {
        return Ok(addr);
    }
    let (ip, rest) = v
        .strip_prefix('[')
        .and_then(|v| v.split_once('%'))
        .ok_or_else(bad)?;
    let (name, port) = rest.split_once("]:").ok_or_else(bad)?;
    let index = crate::os::interface_index(name)
        .ok_or_else(|| format!("{flag}: {v:?}: there is no interface {name:?} here"))?;
    format!("[{ip}%{index}]:{port}").parse().map_err(|_| bad())
}

/// `BASE/BASE_WINDOW,BURST/BURST_WINDOW`, windows in whole seconds; each part in its range
/// (a window of 2^64 - 1 seconds overflowed the rate limiter's arithmetic).
pub(super) fn rate_limit_arg(flag: &str, v: &str) -> Result<RateLimit, String> {
    let bad = || format!("{flag}: {v:?} is not BASE/SECONDS,BURST/SECONDS (e.g. 10/10,10/10)");
    let pair = |s: &str| -> Result<(u32, Duration), String> {
        let (n, w) = s.split_once('/').ok_or_else(bad)?;
        let n = RATE_COUNT.parse(&format!("{flag}: {v:?}: the count"), n.trim())?;
        let w = RATE_WINDOW.parse(&format!("{flag}: {v:?}: the window (seconds)"), w.trim())?;
        Ok((n, Duration::from_secs(w)))
    };
    let (base, burst) = v.split_once(',').ok_or_else(bad)?;
    let ((base_limit, base_window), (burst_limit, burst_window)) = (pair(base)?, pair(burst)?);
    Ok(RateLimit {
        base_limit,
        base_window,
        burst_limit,
        burst_window,
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;
    use crate::cli::parse;

    const ID: &str = "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01";

    fn ns(args: &[&str]) -> Result<NsProxy, String> {
        let argv = ["mdproxy", "ns-proxy"]
            .iter()
            .chain(args)
            .map(OsString::from);
        match parse(argv)? {
            Command::NsProxy(cfg) => Ok(*cfg),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn defaults() {
        let cfg = ns(&["--router-id", ID]).unwrap();
        assert_eq!(cfg.listen, vec!["0.0.0.0:9697".parse().unwrap()]);
        assert_eq!(
            cfg.upstream,
            PathBuf::from("/var/lib/neutron/metadata_proxy")
        );
        assert_eq!(cfg.endpoint.conns, NS_PROXY_CONNS);
        assert_eq!(cfg.endpoint.timeouts, Default::default());
        assert_eq!(cfg.endpoint.limits, Default::default());
        assert!(cfg.rate_limit.is_none() && !cfg.process.daemonize);
    }

    #[test]
    fn link_local_listen_by_interface_name() {
        let got = addr("--listen", "[fe80::a9fe:a9fe%lo]:80").unwrap();
        let SocketAddr::V6(v6) = got else {
            panic!("{got}")
        };
        assert_eq!(v6.scope_id(), crate::os::interface_index("lo").unwrap());
        assert_eq!(v6.port(), 80);
        assert_eq!(addr("--listen", "[fe80::1%2]:80").unwrap().port(), 80);
        let err = addr("--listen", "[fe80::1%no-such-if0]:80").unwrap_err();
        assert!(err.contains("no interface \"no-such-if0\""), "{err}");
        assert!(addr("--listen", "[fe80::1%lo]").is_err());
    }

    #[test]
    fn ovn_scope() {
        let cfg = ns(&["--ovn-network-id", ID]).unwrap();
        assert_eq!(
            cfg.scope,
            Scope::OvnNetwork(mdproxy_core::scope::Uuid::parse(ID.as_bytes()).unwrap())
        );
        for two in [["--router-id", ID], ["--network-id", ID]] {
            let err = ns(&[two[0], two[1], "--ovn-network-id", ID]).unwrap_err();
            assert!(err.contains("only one of"), "{err}");
        }
        assert!(ns(&["--ovn-network-id", "nope"]).is_err());
    }

    #[test]
    fn legacy_flags() {
        let cfg = ns(&[
            "--pid_file=/run/p.pid",
            "--metadata_proxy_socket=/s/mp",
            &format!("--network_id={ID}"),
            "--state_path=/var/lib/x",
            "--metadata_port=8080",
            "--metadata_proxy_user=1000",
            "--metadata_proxy_group",
            "neutron",
            "--metadata_proxy_watch_log=false",
            "--log-file=p.log",
            "--log-dir=/var/log/n",
            "--verbose",
            "--daemonize",
        ])
        .unwrap();
        assert!(matches!(cfg.scope, Scope::Network(_)));
        assert_eq!(cfg.listen, vec!["0.0.0.0:8080".parse().unwrap()]);
        assert_eq!(cfg.upstream, PathBuf::from("/s/mp"));
        assert_eq!(
            cfg.process.log_file,
            Some(PathBuf::from("/var/log/n/p.log"))
        );
        assert_eq!(cfg.process.user.as_deref(), Some("1000"));
        assert_eq!(cfg.process.group.as_deref(), Some("neutron"));
        assert!(cfg.process.daemonize && cfg.process.ignored.len() == 1);
        let cfg = ns(&["--router_id", ID, "--state_path", "/var/lib/x"]).unwrap();
        assert_eq!(cfg.upstream, PathBuf::from("/var/lib/x/metadata_proxy"));
    }

    #[test]
    fn legacy_program_name_implies_ns_proxy() {
        let argv = [
            "/usr/bin/neutron-ns-metadata-proxy",
            &format!("--router_id={ID}"),
        ];
        let cmd = parse(argv.iter().map(OsString::from)).unwrap();
        assert!(matches!(cmd, Command::NsProxy(c)
            if matches!(c.scope, Scope::Router(_)) && c.process.daemonize));
        let argv = [argv[0], argv[1], "--nodaemonize"];
        let cmd = parse(argv.iter().map(OsString::from)).unwrap();
        assert!(matches!(cmd, Command::NsProxy(c) if !c.process.daemonize));
    }

    #[test]
    fn token_hop_limit() {
        assert_eq!(
            ns(&["--router-id", ID]).unwrap().token_hop_limit,
            1,
            "AWS's default"
        );
        let cfg = ns(&["--router-id", ID, "--token-hop-limit=64"]).unwrap();
        assert_eq!(cfg.token_hop_limit, 64);
        for v in ["0", "65", "-1", "x"] {
            let e = ns(&["--router-id", ID, "--token-hop-limit", v]).unwrap_err();
            assert!(
                e.contains("--token-hop-limit") && e.contains("1 to 64"),
                "{v}: {e}"
            );
        }
    }

    #[test]
    fn rate_limit_and_timeouts() {
        let cfg = ns(&[
            "--router-id",
            ID,
            "--rate-limit",
            "10/10,20/2",
            "--timeout-head=0.5",
        ])
        .unwrap();
        let rl = cfg.rate_limit.unwrap();
        assert_eq!((rl.base_limit, rl.base_window.as_secs()), (10, 10));
        assert_eq!((rl.burst_limit, rl.burst_window.as_secs()), (20, 2));
        assert_eq!(cfg.endpoint.timeouts.head, Duration::from_millis(500));
    }

    #[test]
    fn errors_are_messages() {
        for bad in [
            &["--router-id", ID, "--network-id", ID][..],
            &[],
            &["--router-id", "nope"],
            &["--router-id", ID, "--listen", "9697"],
            &["--router-id", ID, "--max-conns", "0"],
            &["--router-id", ID, "--timeout-head", "-1"],
            &["--router-id", ID, "--rate-limit", "10/0,1/1"],
            &["--router-id", ID, "--bogus"],
            &["--router-id", ID, "--debug=yes"],
            &["--router-id"],
        ] {
            assert!(ns(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
