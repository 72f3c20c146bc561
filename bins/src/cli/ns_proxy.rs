//! Command-line parsing: the `mdproxy` subcommands and the `ns-proxy` flags, including the
//! legacy `neutron-ns-metadata-proxy` spellings. Pure: no file, socket or user-database access.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::Arg::{Long, Short, Value};
use mdproxy_core::cache::{Scope, Uuid};
use mdproxy_core::endpoint::{RateLimit, Timeouts};

pub const TOP_HELP: &str = "\
mdproxy: cloud-instance metadata proxy (OpenStack Neutron/Nova compatible)

Usage: mdproxy <COMMAND> [OPTIONS]

Commands:
  ns-proxy   Namespace proxy: serves instances in one router or network namespace and relays
             their requests to the metadata agent's Unix socket (replaces Neutron's haproxy /
             neutron-ns-metadata-proxy)
  agent      Metadata agent (not implemented yet in this build: exits with status 2)
  server     Metadata server (not implemented yet in this build: exits with status 2)
  demo       All three roles on loopback (not implemented yet in this build: exits with status 2)

Options:
  -h, --help     Print this help (`mdproxy <COMMAND> --help` for a command's options)
  -V, --version  Print the version and the runtimes compiled in

Invoked as `neutron-ns-metadata-proxy` (e.g. through a symlink), mdproxy runs `ns-proxy`.
";

pub const NS_PROXY_HELP: &str = "\
mdproxy ns-proxy: the namespace metadata proxy

Accepts instance HTTP requests, deletes every client-sent identity header (X-Forwarded-For,
X-Neutron-Router-ID, X-Neutron-Network-ID, X-Instance-ID, X-Instance-ID-Signature, X-Tenant-ID,
X-Metadata-Provider, X-Metadata-Provider-Signature), adds X-Forwarded-For with the client's
address and the router or network ID, and relays the request to the metadata agent over a Unix
socket. Stops on SIGTERM/SIGINT after in-flight requests finish; SIGHUP only logs.

Usage: mdproxy ns-proxy (--router-id UUID | --network-id UUID) [OPTIONS]

Scope (exactly one):
      --router-id UUID           Serve a router: sends X-Neutron-Router-ID
      --network-id UUID          Serve a network: sends X-Neutron-Network-ID

Sockets:
      --listen ADDR:PORT         Address to accept instances on; repeatable
                                 [default: 0.0.0.0:9697]. `[::]:PORT` accepts IPv4 too (dual
                                 stack), so do not add 0.0.0.0 with the same port
      --upstream-socket PATH     The metadata agent's Unix socket
                                 [default: $state_path/metadata_proxy, or
                                 /var/lib/neutron/metadata_proxy without --state_path]
      --runtime NAME             Event loop to use [default and only choice in this build: mio]

Limits (beyond them clients get 503 or 429):
      --max-conns N              Client connections open at once [default: 1024]
      --max-conns-per-ip N       Client connections open at once per client IP [default: 64]
      --rate-limit B/BW,U/UW     Per client IP, at most B requests per BW seconds and U per UW
                                 seconds (Neutron's base and burst windows, sliding like
                                 haproxy's http_req_rate), e.g. 10/10,10/10 [default: off]

Timeouts (in seconds; fractions allowed):
      --timeout-head S           A client must send a whole request head within S (408)
                                 [default: 30]
      --timeout-idle S           Idle keep-alive client connections close after S [default: 30]
      --timeout-connect S        Connecting to the agent may take S (504) [default: 30]
      --timeout-response S       The agent must answer, and keep sending, within S (504)
                                 [default: 60]
      --drain-timeout S          After SIGTERM, exit once in-flight requests finish or after S
                                 [default: 10]

Process:
      --pid-file PATH            Write the process id here once listening; removed on exit
      --user USER                Switch to this user (name or uid) after binding
      --group GROUP              Switch to this group (name or gid) after binding
                                 [default with --user: the user's primary group]
      --daemonize                Fork into the background, detached from the terminal (stdio
                                 goes to /dev/null: use --log-file). Unlike the legacy tool, the
                                 default is to stay in the foreground
      --nodaemonize              Stay in the foreground (the default)

Logging (to stderr unless --log-file):
      --log-file PATH            Append log lines to PATH (relative to --log-dir if given)
      --log-dir DIR              Directory for a relative --log-file; alone: DIR/mdproxy.log
      --verbose                  Log at info level (the default; accepted for compatibility)
      --debug                    Log at debug level
                                 RUST_LOG, when set, overrides both (e.g. RUST_LOG=warn)
  -h, --help                     Print this help

Legacy neutron-ns-metadata-proxy flags (as the L3 agent passed them; `--flag=value` or
`--flag value`; every flag above may also be spelled with underscores):
      --router_id, --network_id, --pid_file, --log-file, --log-dir, --verbose, --debug,
      --daemonize, --nodaemonize   as above
      --metadata_port PORT         Same as --listen 0.0.0.0:PORT
      --metadata_proxy_socket PATH Same as --upstream-socket
      --state_path DIR             Makes the default upstream DIR/metadata_proxy
      --metadata_proxy_user USER   Same as --user
      --metadata_proxy_group GROUP Same as --group
      --[no]metadata_proxy_watch_log[=BOOL]  Accepted and ignored

Exit status: 0 after a clean stop, 1 when the proxy cannot start or its event loop fails,
2 for a usage or configuration error.
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print this text to stdout and exit 0.
    Help(&'static str),
    Version,
    NsProxy(Box<NsProxy>),
    /// A role that a later version implements.
    NotYet(&'static str),
}

/// Everything `ns-proxy` was told.
#[derive(Debug)]
pub struct NsProxy {
    pub scope: Scope,
    pub listen: Vec<SocketAddr>,
    pub upstream: PathBuf,
    pub max_conns: usize,
    pub max_conns_per_ip: usize,
    pub rate_limit: Option<RateLimit>,
    pub timeouts: Timeouts,
    pub drain_timeout: Duration,
    pub process: Process,
}

/// Settings of the process rather than of a role.
#[derive(Debug, Default)]
pub struct Process {
    pub pid_file: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub daemonize: bool,
    pub log_file: Option<PathBuf>,
    pub debug: bool,
    /// Flags that are accepted but do nothing, for a debug line.
    pub ignored: Vec<String>,
}

/// Parses the whole command line, program name included.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut p = lexopt::Parser::from_iter(args);
    if p.bin_name()
        .is_some_and(|n| n.ends_with("neutron-ns-metadata-proxy"))
    {
        return ns_proxy(&mut p);
    }
    match p.next().map_err(|e| e.to_string())? {
        Some(Short('h') | Long("help")) => Ok(Command::Help(TOP_HELP)),
        Some(Short('V') | Long("version")) => Ok(Command::Version),
        Some(Value(cmd)) => match cmd.to_str() {
            Some("ns-proxy") => ns_proxy(&mut p),
            Some("agent") => Ok(Command::NotYet("agent")),
            Some("server") => Ok(Command::NotYet("server")),
            Some("demo") => Ok(Command::NotYet("demo")),
            _ => Err(format!("unknown command {cmd:?} (try --help)")),
        },
        Some(arg) => Err(format!(
            "{} before the command (try --help)",
            unexpected(&arg)
        )),
        None => Err("missing command (try --help)".to_owned()),
    }
}

fn unexpected(arg: &lexopt::Arg<'_>) -> String {
    match arg {
        Short(c) => format!("unknown option -{c}"),
        Long(name) => format!("unknown option --{name}"),
        Value(v) => format!("unexpected argument {v:?}"),
    }
}

fn ns_proxy(p: &mut lexopt::Parser) -> Result<Command, String> {
    let (mut router, mut network, mut state_path, mut upstream) = (None, None, None, None);
    let (mut listen, mut log_dir, mut rate_limit) = (Vec::new(), None, None);
    let (mut max_conns, mut max_conns_per_ip) = (1024, 64);
    let (mut timeouts, mut drain_timeout) = (Timeouts::default(), Duration::from_secs(10));
    let mut process = Process::default();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let name = match &arg {
            Short('h') => "help".to_owned(),
            Long(name) => name.replace('_', "-"),
            _ => return Err(unexpected(&arg)),
        };
        let flag = format!("--{name}");
        let mut value = || -> Result<String, String> {
            let v = p.value().map_err(|e| e.to_string())?;
            v.into_string()
                .map_err(|v| format!("{flag}: {v:?} is not valid UTF-8"))
        };
        let t = &mut timeouts;
        match name.as_str() {
            "help" => return Ok(Command::Help(NS_PROXY_HELP)),
            "router-id" => router = Some(uuid(&flag, &value()?)?),
            "network-id" => network = Some(uuid(&flag, &value()?)?),
            "listen" => listen.push(addr(&flag, &value()?)?),
            "metadata-port" => {
                let port = number::<u16>(&flag, &value()?)?;
                listen.push(SocketAddr::from(([0, 0, 0, 0], port)));
            }
            "upstream-socket" | "metadata-proxy-socket" => upstream = Some(value()?.into()),
            "state-path" => state_path = Some(PathBuf::from(value()?)),
            "runtime" => match value()?.as_str() {
                "mio" => {}
                other => {
                    return Err(format!(
                        "{flag}: runtime {other:?} is not built in (only mio)"
                    ))
                }
            },
            "max-conns" => max_conns = positive(&flag, &value()?)?,
            "max-conns-per-ip" => max_conns_per_ip = positive(&flag, &value()?)?,
            "rate-limit" => rate_limit = Some(rate_limit_arg(&flag, &value()?)?),
            "timeout-head" => t.head = seconds(&flag, &value()?, false)?,
            "timeout-idle" => t.idle = seconds(&flag, &value()?, false)?,
            "timeout-connect" => t.connect = seconds(&flag, &value()?, false)?,
            "timeout-response" => t.response = seconds(&flag, &value()?, false)?,
            "drain-timeout" => drain_timeout = seconds(&flag, &value()?, true)?,
            "pid-file" => process.pid_file = Some(value()?.into()),
            "user" | "metadata-proxy-user" => process.user = Some(value()?),
            "group" | "metadata-proxy-group" => process.group = Some(value()?),
            "daemonize" => process.daemonize = true,
            "nodaemonize" => process.daemonize = false,
            "log-file" => process.log_file = Some(value()?.into()),
            "log-dir" => log_dir = Some(PathBuf::from(value()?)),
            "verbose" => {}
            "debug" => process.debug = true,
            "metadata-proxy-watch-log" | "nometadata-proxy-watch-log" => {
                let v = p.optional_value().map(|v| v.to_string_lossy().into_owned());
                process.ignored.push(format!(
                    "{flag}{}",
                    v.map(|v| format!("={v}")).unwrap_or_default()
                ));
            }
            _ => return Err(format!("unknown option {flag} (try --help)")),
        }
    }
    let scope = match (router, network) {
        (Some(id), None) => Scope::Router(id),
        (None, Some(id)) => Scope::Network(id),
        (Some(_), Some(_)) => {
            return Err("give only one of --router-id and --network-id".to_owned())
        }
        (None, None) => return Err("one of --router-id or --network-id is required".to_owned()),
    };
    if listen.is_empty() {
        listen.push(SocketAddr::from(([0, 0, 0, 0], 9697)));
    }
    let upstream = upstream.unwrap_or_else(|| {
        state_path
            .unwrap_or_else(|| "/var/lib/neutron".into())
            .join("metadata_proxy")
    });
    process.log_file = match (process.log_file.take(), log_dir) {
        (Some(file), Some(dir)) => Some(dir.join(file)),
        (None, Some(dir)) => Some(dir.join("mdproxy.log")),
        (file, None) => file,
    };
    Ok(Command::NsProxy(Box::new(NsProxy {
        scope,
        listen,
        upstream,
        max_conns,
        max_conns_per_ip,
        rate_limit,
        timeouts,
        drain_timeout,
        process,
    })))
}

fn uuid(flag: &str, v: &str) -> Result<Uuid, String> {
    Uuid::parse(v.as_bytes()).ok_or_else(|| format!("{flag}: {v:?} is not a UUID"))
}

fn addr(flag: &str, v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not ADDR:PORT (e.g. 0.0.0.0:9697 or [::]:9697)"))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

fn positive<T: std::str::FromStr + Default + PartialOrd>(flag: &str, v: &str) -> Result<T, String> {
    let n: T = number(flag, v)?;
    if n > T::default() {
        Ok(n)
    } else {
        Err(format!("{flag}: must be at least 1"))
    }
}

fn seconds(flag: &str, v: &str, zero_ok: bool) -> Result<Duration, String> {
    let s: f64 = number(flag, v)?;
    match Duration::try_from_secs_f64(s) {
        Ok(d) if zero_ok || !d.is_zero() => Ok(d),
        _ => Err(format!("{flag}: {v:?} is not a positive number of seconds")),
    }
}

/// `BASE/BASE_WINDOW,BURST/BURST_WINDOW`, windows in whole seconds.
fn rate_limit_arg(flag: &str, v: &str) -> Result<RateLimit, String> {
    let bad = || format!("{flag}: {v:?} is not BASE/SECONDS,BURST/SECONDS (e.g. 10/10,10/10)");
    let pair = |s: &str| -> Result<(u32, Duration), String> {
        let (n, w) = s.split_once('/').ok_or_else(bad)?;
        let n = n
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(bad)?;
        let w = w
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|w| *w > 0)
            .ok_or_else(bad)?;
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
    use super::*;

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
        assert_eq!((cfg.max_conns, cfg.max_conns_per_ip), (1024, 64));
        assert_eq!(cfg.timeouts, Timeouts::default());
        assert!(cfg.rate_limit.is_none() && !cfg.process.daemonize);
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
        assert!(matches!(cmd, Command::NsProxy(c) if matches!(c.scope, Scope::Router(_))));
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
        assert_eq!(cfg.timeouts.head, Duration::from_millis(500));
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
