//! `mdproxy agent`: the metadata agent's flags (Neutron's `metadata_agent.ini` options, as
//! flags).

use std::fmt;
use std::net::Ipv6Addr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use mdproxy_core::endpoint::Timeouts;

use super::{common_help, next_flag, positive, seconds, unknown, value, Command, Common, Process};

pub const HELP: &str = concat!(
    "\
mdproxy agent: the metadata agent

Accepts the namespace proxies' requests on a Unix socket. Each must carry exactly one
X-Forwarded-For and exactly one of X-Neutron-Router-ID / X-Neutron-Network-ID (else 400). The
agent finds the one port with that fixed IP behind that router (on its interface networks) or
on that network (none: 404 \"Instance was not found on router R.\" / \"... network N.\"), and
relays the request to the metadata server with X-Forwarded-For, X-Instance-ID (the port's
device_id), X-Tenant-ID (its project_id) and X-Instance-ID-Signature (lowercase hex
HMAC-SHA256 of the instance ID keyed with the shared secret), as neutron-metadata-agent does.
Copies of those headers sent by the client are dropped. The metadata server's answer is passed
through; a 403 is logged as a warning (the shared secrets likely differ). 503 when the server
cannot be reached, 504 when it does not answer in time, 502 when its answer is malformed.

SIGTERM/SIGINT: stop accepting, finish in-flight requests, remove the socket file, exit 0.
SIGHUP: re-read --static-map; a file with errors is logged (with its line) and the previous map
is kept.

Usage: mdproxy agent --shared-secret-file PATH --static-map FILE [OPTIONS]

Metadata server:
      --metadata-url URL         http://HOST[:PORT] of the metadata server (Nova's, or
                                 `mdproxy server`); PORT defaults to 80 when the URL has none.
                                 HOST is resolved once, at startup. https:// is not supported
                                 in this build [default: http://127.0.0.1:8775]
      --shared-secret-file PATH  File holding the secret shared with the metadata server
                                 (Nova's [neutron] metadata_proxy_shared_secret); one trailing
                                 newline is ignored. Required: for Neutron's default, the empty
                                 secret, give /dev/null. The secret is never logged

Lookup:
      --backend NAME             Where instances are looked up [default and only choice in
                                 this build: static]
      --static-map FILE          The static backend's TOML file (format below); required
      --cache-size N             Lookup cache entries [default: 10000]
      --cache-ttl S              Seconds a found instance stays cached [default: 5]
      --negative-cache-ttl S     Seconds \"no such instance\" stays cached [default: 1]
                                 The static backend answers from memory and bypasses the
                                 cache, so the cache flags only matter for backends that query
                                 a service (none in this build yet)

Socket:
      --listen-socket PATH       Unix socket the namespace proxies connect to
                                 [default: /var/lib/neutron/metadata_proxy]. A socket file
                                 nobody listens on (left by an agent that died) is replaced;
                                 if another agent listens on it, mdproxy exits with status 1;
                                 a path that is not a socket is left alone (exit 1). The
                                 socket file is removed when the agent exits
      --backlog N                Queue of connections not yet accepted (the kernel caps it at
                                 net.core.somaxconn) [default: 4096]
      --socket-mode MODE         Permissions set on the socket after binding: user (0644),
                                 group (0664) or all (0666); connecting needs write permission
                                 [default: as the umask leaves them; Neutron's `deduce` is not
                                 implemented]
      --workers N                Event-loop threads sharing the socket [default: 1]. Each keeps
                                 its own lookup cache, so concurrent first requests for one
                                 instance make at most one backend query per worker (Neutron's
                                 default is half the CPUs; ours favours one query in all)

",
    common_help!("the metadata server", "The metadata server"),
    "
Static map (--static-map), in TOML; a router scope means the networks of its interfaces, and
exactly one port with the client's IP on them is the instance (none or several: 404):
    [[router]]
    id = \"5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6\"
    networks = [\"9c2b1a4e-0000-4000-8000-000000000001\"]

    [[port]]
    network = \"9c2b1a4e-0000-4000-8000-000000000001\"
    ip = \"10.0.0.5\"                   # or: ips = [\"10.0.0.5\", \"fd00::5\"]
    mac = \"fa:16:3e:00:00:05\"         # optional: matches IPv6 link-local (EUI-64) clients
    device_id = \"0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01\"
    project_id = \"8f14e45fceea167a5a36dedd4bea2543\"

Invoked as `neutron-metadata-agent`, mdproxy runs `agent`.

Exit status: 0 after a clean stop, 1 when the agent cannot start (the socket is taken, a
system call fails) or its event loop fails, 2 for a usage or configuration error (bad flag,
unreadable secret, a static map with errors, a metadata URL that does not resolve).
"
);

/// Everything `agent` was told.
#[derive(Debug)]
pub struct Agent {
    pub listen_socket: PathBuf,
    pub backlog: u32,
    /// `None`: leave the mode the umask gives.
    pub socket_mode: Option<SocketMode>,
    pub workers: usize,
    pub metadata: MetadataUrl,
    pub shared_secret_file: PathBuf,
    /// The static backend's file (the only backend so far).
    pub static_map: PathBuf,
    pub cache_size: NonZeroUsize,
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
    pub timeouts: Timeouts,
    pub drain_timeout: Duration,
    pub process: Process,
}

/// Neutron's `metadata_proxy_socket_mode` choices (without `deduce`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketMode {
    User,
    Group,
    All,
}

impl SocketMode {
    pub fn bits(self) -> u32 {
        match self {
            SocketMode::User => 0o644,
            SocketMode::Group => 0o664,
            SocketMode::All => 0o666,
        }
    }
}

/// `http://HOST[:PORT]`, not yet resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataUrl {
    /// A name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for MetadataUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "http://[{}]:{}", self.host, self.port),
            false => write!(f, "http://{}:{}", self.host, self.port),
        }
    }
}

pub(super) fn parse(p: &mut lexopt::Parser) -> Result<Command, String> {
    let mut listen_socket = PathBuf::from("/var/lib/neutron/metadata_proxy");
    let (mut backlog, mut socket_mode, mut workers) = (4096, None, 1);
    let mut metadata = MetadataUrl {
        host: "127.0.0.1".to_owned(),
        port: 8775,
    };
    let (mut secret, mut static_map) = (None, None);
    let mut cache_size = NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN);
    let (mut cache_ttl, mut negative_ttl) = (Duration::from_secs(5), Duration::from_secs(1));
    let mut common = Common::default();
    while let Some((name, flag)) = next_flag(p)? {
        if common.parse(&name, &flag, p)? {
            continue;
        }
        match name.as_str() {
            "help" => return Ok(Command::Help(HELP)),
            "listen-socket" => listen_socket = value(p, &flag)?.into(),
            "backlog" => backlog = positive(&flag, &value(p, &flag)?)?,
            "socket-mode" => socket_mode = Some(mode(&flag, &value(p, &flag)?)?),
            "workers" => workers = positive(&flag, &value(p, &flag)?)?,
            "metadata-url" => metadata = metadata_url(&flag, &value(p, &flag)?)?,
            "shared-secret-file" => secret = Some(value(p, &flag)?.into()),
            "backend" => match value(p, &flag)?.as_str() {
                "static" => {}
                other => {
                    return Err(format!(
                        "{flag}: backend {other:?} is not supported in this build (only static)"
                    ))
                }
            },
            "static-map" => static_map = Some(value(p, &flag)?.into()),
            "cache-size" => {
                let n: usize = positive(&flag, &value(p, &flag)?)?;
                cache_size = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
            }
            "cache-ttl" => cache_ttl = seconds(&flag, &value(p, &flag)?, true)?,
            "negative-cache-ttl" => negative_ttl = seconds(&flag, &value(p, &flag)?, true)?,
            _ => return Err(unknown(&flag)),
        }
    }
    let shared_secret_file = secret.ok_or(
        "--shared-secret-file is required (for the empty secret: --shared-secret-file /dev/null)",
    )?;
    let static_map = static_map.ok_or("--static-map is required with --backend static")?;
    let common = common.finish();
    Ok(Command::Agent(Box::new(Agent {
        listen_socket,
        backlog,
        socket_mode,
        workers,
        metadata,
        shared_secret_file,
        static_map,
        cache_size,
        cache_ttl,
        negative_ttl,
        timeouts: common.timeouts,
        drain_timeout: common.drain_timeout,
        process: common.process,
    })))
}

fn mode(flag: &str, v: &str) -> Result<SocketMode, String> {
    match v {
        "user" => Ok(SocketMode::User),
        "group" => Ok(SocketMode::Group),
        "all" => Ok(SocketMode::All),
        _ => Err(format!(
            "{flag}: {v:?} is not one of user, group, all (leave the flag out to keep the mode \
             the umask gives)"
        )),
    }
}

/// `http://HOST[:PORT][/]`: a name, an IPv4 address or a bracketed IPv6 address; no path,
/// query or user info (the agent appends each request's own path).
fn metadata_url(flag: &str, v: &str) -> Result<MetadataUrl, String> {
    let bad = || format!("{flag}: {v:?} is not http://HOST[:PORT] (e.g. http://127.0.0.1:8775)");
    let rest = match v.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(format!(
                "{flag}: https is not supported in this build (no TLS); use http://HOST:PORT"
            ))
        }
        _ => return Err(bad()),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(bad());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']').ok_or_else(bad)?;
            host.parse::<Ipv6Addr>().map_err(|_| bad())?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() || (!authority.starts_with('[') && host.contains(':')) {
        return Err(bad());
    }
    let port = match port {
        None => 80,
        Some(p) => p.parse().ok().filter(|&p| p > 0).ok_or_else(bad)?,
    };
    Ok(MetadataUrl {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;
    use crate::cli::parse;

    const REQUIRED: [&str; 4] = ["--shared-secret-file", "/s", "--static-map", "/m.toml"];

    fn agent(args: &[&str]) -> Result<Agent, String> {
        let argv = ["mdproxy", "agent"].iter().chain(args).map(OsString::from);
        match parse(argv)? {
            Command::Agent(cfg) => Ok(*cfg),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn defaults() {
        let cfg = agent(&REQUIRED).unwrap();
        assert_eq!(
            cfg.listen_socket,
            PathBuf::from("/var/lib/neutron/metadata_proxy")
        );
        assert_eq!((cfg.backlog, cfg.socket_mode, cfg.workers), (4096, None, 1));
        assert_eq!(cfg.metadata.to_string(), "http://127.0.0.1:8775");
        assert_eq!(cfg.cache_size.get(), 10_000);
        assert_eq!(
            (cfg.cache_ttl, cfg.negative_ttl),
            (Duration::from_secs(5), Duration::from_secs(1))
        );
        assert_eq!(cfg.timeouts, Timeouts::default());
        assert_eq!(cfg.shared_secret_file, PathBuf::from("/s"));
        assert_eq!(cfg.static_map, PathBuf::from("/m.toml"));
    }

    #[test]
    fn flags() {
        let mut args = REQUIRED.to_vec();
        args.extend([
            "--listen-socket=/run/mp",
            "--backlog",
            "16",
            "--socket-mode",
            "all",
            "--workers=3",
            "--metadata-url",
            "http://[fd00::1]:9000/",
            "--backend=static",
            "--cache_size=5",
            "--cache-ttl=0",
            "--negative-cache-ttl=0.5",
            "--timeout-connect=2",
            "--drain-timeout=0",
            "--log-dir=/var/log/m",
            "--debug",
            "--runtime=mio",
        ]);
        let cfg = agent(&args).unwrap();
        assert_eq!(cfg.listen_socket, PathBuf::from("/run/mp"));
        assert_eq!(
            (cfg.backlog, cfg.socket_mode, cfg.workers),
            (16, Some(SocketMode::All), 3)
        );
        assert_eq!(cfg.socket_mode.unwrap().bits(), 0o666);
        assert_eq!(
            cfg.metadata,
            MetadataUrl {
                host: "fd00::1".into(),
                port: 9000
            }
        );
        assert_eq!(cfg.metadata.to_string(), "http://[fd00::1]:9000");
        assert_eq!(cfg.cache_size.get(), 5);
        assert_eq!(cfg.cache_ttl, Duration::ZERO);
        assert_eq!(cfg.negative_ttl, Duration::from_millis(500));
        assert_eq!(cfg.timeouts.connect, Duration::from_secs(2));
        assert_eq!(cfg.drain_timeout, Duration::ZERO);
        assert_eq!(
            cfg.process.log_file,
            Some(PathBuf::from("/var/log/m/mdproxy.log"))
        );
        assert!(cfg.process.debug);
    }

    #[test]
    fn metadata_urls() {
        for (url, host, port) in [
            ("http://nova.example:8775", "nova.example", 8775),
            ("HTTP://10.0.0.1", "10.0.0.1", 80),
            ("http://[::1]", "::1", 80),
        ] {
            let got = metadata_url("--u", url).unwrap();
            assert_eq!((got.host.as_str(), got.port), (host, port), "{url}");
        }
        for bad in [
            "10.0.0.1:8775",
            "http://",
            "http://h:0",
            "http://h:x",
            "http://h:8775/path",
            "http://u@h:8775",
            "http://::1:8775",
            "http://[::1]8775",
            "http://[nope]:1",
            "ftp://h",
        ] {
            assert!(metadata_url("--u", bad).is_err(), "{bad} was accepted");
        }
        let e = metadata_url("--metadata-url", "https://nova:8775").unwrap_err();
        assert!(e.contains("not supported in this build"), "{e}");
    }

    #[test]
    fn legacy_program_name_implies_agent() {
        let argv = ["/usr/bin/neutron-metadata-agent"]
            .into_iter()
            .chain(REQUIRED)
            .map(OsString::from);
        assert!(matches!(parse(argv), Ok(Command::Agent(_))));
    }

    #[test]
    fn errors_are_messages() {
        let e = agent(&["--static-map", "/m"]).unwrap_err();
        assert!(
            e.contains("--shared-secret-file") && e.contains("/dev/null"),
            "{e}"
        );
        let e = agent(&["--shared-secret-file", "/s"]).unwrap_err();
        assert!(e.contains("--static-map"), "{e}");
        for extra in [
            &["--backend", "neutron"][..],
            &["--socket-mode", "deduce"],
            &["--workers", "0"],
            &["--backlog", "0"],
            &["--cache-size", "0"],
            &["--cache-ttl", "-1"],
            &["--router-id", "x"],
            &["--metadata-proxy-user", "neutron"],
            &["--runtime", "tokio"],
        ] {
            let args: Vec<&str> = REQUIRED.iter().chain(extra).copied().collect();
            assert!(agent(&args).is_err(), "{extra:?} was accepted");
        }
    }
}
