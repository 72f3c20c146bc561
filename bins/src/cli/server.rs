//! `mdproxy server`: the metadata server's flags (Nova's metadata API, plus IMDSv2 tokens).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mdproxy_core::metadata::ImdsV2;

use super::args::Args;
use super::ns_proxy::addr;
use super::range::{CONNS, RESCAN_INTERVAL, SECRET_GRACE};
use super::{
    common_help, needs_tls, next_flag, switch, value, Command, Common, EndpointArgs, Process,
};

pub const HELP: &str = concat!(
    "\
mdproxy server: the metadata server

Serves instance metadata as Nova's metadata API does: the EC2 tree (/latest/meta-data/, ...),
the OpenStack tree (/openstack/latest/meta_data.json, ...), user data, the password endpoint,
and IMDSv2 session tokens. Behind `mdproxy agent` (or neutron-metadata-agent), each request
names its instance with X-Instance-ID, X-Tenant-ID and X-Instance-ID-Signature (lowercase hex
HMAC-SHA256 of the instance ID keyed with the shared secret): a missing or repeated header is
400 with Nova's message, a wrong signature 403 \"Invalid proxy request signature.\", an unknown
instance or another project 404. One access-log line per request.

SIGTERM/SIGINT: stop accepting, finish in-flight requests, exit 0. SIGHUP: read the whole
configuration again (command line, --config file, secret, token key and instance files) and
apply the secret (with --secret-grace), token keys, instances, --imdsv2, limits and timeouts
(from the next connection) and --debug; a file with an error refuses it all and the running
configuration stays; a changed --listen, TLS, state directory or process setting is logged as
taking a restart.

Usage: mdproxy server --instances DIR (--shared-secret-file PATH | --direct) [OPTIONS]

Instances:
      --instances DIR            One instance per file DIR/<name>.toml or DIR/<name>.json
                                 (schema: docs/server.md); other names and dot-files are
                                 ignored. At a rescan a file with an error is logged with
                                 its line and skipped, the others keep serving; at a SIGHUP
                                 it refuses the reload. Required
      --rescan-interval S        Check the files for changes (mtime, size, inode) every S
                                 seconds; a changed file is re-read without failing any
                                 request [default: 2; 0.1 to 86400 seconds]
      --dhcp-domain DOMAIN       Served hostnames are HOSTNAME.DOMAIN (Nova's dhcp_domain);
                                 empty: the bare hostname [default: novalocal]

Passwords:
      --state-dir DIR            The server's own directory for the passwords instances POST
                                 to /openstack/latest/password (once each; 409 afterwards):
                                 one file DIR/<instance id>.password, mode 0600, written
                                 atomically off the event loop and read at start, so a
                                 restart keeps them. Instance files are never written.
                                 Created (mode 0700) at the first password if missing; must
                                 be writable by --user [default: /var/lib/mdproxy/server]

Identity:
      --shared-secret-file PATH  File holding the secret shared with the metadata agents
                                 (Nova's [neutron] metadata_proxy_shared_secret); one
                                 trailing newline is ignored; /dev/null for the empty secret.
                                 Required unless --direct. Never logged
      --secret-grace S           After a SIGHUP that changed the secret, the previous one
                                 still verifies for S seconds: rotate the server first, then
                                 the agents (by hand or by configuration management, minutes
                                 later) within the window; 0: no window
                                 [default: 600; 0 to 86400 seconds]
      --direct                   No agent in front: identify the instance by the client's
                                 address among its fixed_ips (for labs and appliances
                                 without Neutron); identity headers are not needed
      --imdsv2 MODE              IMDSv2 session tokens (PUT /latest/api/token with
                                 X-aws-ec2-metadata-token-ttl-seconds: 1..21600):
                                 off (PUT answers 404, as Nova), optional (tokens issued; a
                                 token sent must be valid), or required (EC2 requests without
                                 a valid X-aws-ec2-metadata-token get 401)
                                 [default: optional]. Behind `mdproxy agent` with tokens on
                                 (its default), tokens stop at the agent and never reach the
                                 server: `required` here then refuses every EC2 request; it
                                 is for --direct, or an agent run with --imdsv2 off
      --token-key-file PATH      IMDSv2 token keys: one key per line (16 to 1024 bytes, e.g.
                                 `openssl rand -base64 32`); the first signs, a second one
                                 only verifies (rotation). Every server and agent given the
                                 same file accepts the others' tokens, also after a restart.
                                 Checked as the shared secret's file; never logged [default:
                                 a random key of this process: tokens die with it]

Sockets:
      --listen ADDR:PORT         Address to serve on; repeatable [default: 0.0.0.0:8775].
                                 `[::]:PORT` accepts IPv4 too. One event loop serves them all
                                 (posted passwords are served from its memory)
      --max-conns N              Client connections open at once; more are answered 503 and
                                 closed [default: 4096; 1 to 1000000]
      --max-conns-per-ip N       Client connections open at once from one IP
                                 [default: 4096; 1 to 1000000]

HTTPS (a build with the `tls` feature, the default; without it these flags exit 2):
      --tls-cert FILE            Serve HTTPS on every --listen address with this PEM
                                 certificate chain (leaf first); needs --tls-key
      --tls-key FILE             PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)
      --tls-client-ca FILE       Require a client certificate leading to one of these PEM CA
                                 certificates (mutual TLS: the agent's --metadata-client-cert);
                                 a client without one is refused during the handshake

",
    common_help!(
        "an upstream (the server has none)",
        "An upstream (unused here)"
    ),
    "
Exit status: 0 after a clean stop, 1 when the server cannot start (a port is taken) or its
event loop fails, 2 for a usage or configuration error (bad flag, unreadable secret,
instance or state directory).
"
);

/// Everything `server` was told.
#[derive(Debug)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    /// `None` only with `direct`.
    pub shared_secret_file: Option<PathBuf>,
    pub instances: PathBuf,
    /// Where posted passwords are kept.
    pub state_dir: PathBuf,
    pub rescan_interval: Duration,
    /// How long the previous secret verifies after a reload changed it.
    pub secret_grace: Duration,
    pub direct: bool,
    pub imdsv2: ImdsV2,
    /// `None`: a random key of this process.
    pub token_key_file: Option<PathBuf>,
    pub dhcp_domain: String,
    /// HTTPS instead of HTTP.
    pub tls: Option<ServerTlsArgs>,
    pub endpoint: EndpointArgs,
    pub drain_timeout: Duration,
    pub process: Process,
}

/// `--tls-cert`, `--tls-key` and `--tls-client-ca`, checked but not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsArgs {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Mutual TLS: the CAs client certificates must lead to.
    pub client_ca: Option<PathBuf>,
}

/// `--state-dir` unless told otherwise: where a packaged server's state goes (the unit's
/// `StateDirectory=mdproxy/server`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mdproxy/server";

pub(super) fn parse(p: &mut Args) -> Result<Command, String> {
    let (mut listen, mut secret, mut instances) = (Vec::new(), None, None);
    let (mut direct, mut imdsv2) = (false, ImdsV2::Optional);
    let mut rescan_interval = Duration::from_secs(2);
    let mut secret_grace = Duration::from_secs(600);
    let mut state_dir = PathBuf::from(DEFAULT_STATE_DIR);
    let mut dhcp_domain = "novalocal".to_owned();
    let mut token_key_file = None;
    let (mut tls_cert, mut tls_key, mut tls_client_ca) = (None, None, None);
    let mut common = Common::default();
    while let Some((name, flag)) = next_flag(p)? {
        if common.parse(&name, &flag, p)? {
            continue;
        }
        let conns = &mut common.endpoint.conns;
        match name.as_str() {
            "help" => return Ok(Command::Help(HELP)),
            "listen" => listen.push(addr(&flag, &value(p, &flag)?)?),
            "shared-secret-file" => secret = Some(value(p, &flag)?.into()),
            "instances" => instances = Some(PathBuf::from(value(p, &flag)?)),
            "state-dir" => state_dir = PathBuf::from(value(p, &flag)?),
            "rescan-interval" => {
                rescan_interval = RESCAN_INTERVAL.parse(&flag, &value(p, &flag)?)?
            }
            "secret-grace" => secret_grace = SECRET_GRACE.parse(&flag, &value(p, &flag)?)?,
            "max-conns" => conns.max_conns = CONNS.parse(&flag, &value(p, &flag)?)?,
            "max-conns-per-ip" => conns.max_conns_per_ip = CONNS.parse(&flag, &value(p, &flag)?)?,
            "direct" => direct = switch(p, &flag)?,
            "imdsv2" => imdsv2 = imdsv2_mode(&flag, &value(p, &flag)?)?,
            "dhcp-domain" => dhcp_domain = value(p, &flag)?,
            "token-key-file" => token_key_file = Some(PathBuf::from(value(p, &flag)?)),
            "tls-cert" | "tls-key" | "tls-client-ca" => {
                needs_tls(&flag)?;
                let path = Some(PathBuf::from(value(p, &flag)?));
                match name.as_str() {
                    "tls-cert" => tls_cert = path,
                    "tls-key" => tls_key = path,
                    _ => tls_client_ca = path,
                }
            }
            _ => return Err(p.unknown(&flag)),
        }
    }
    let instances = instances.ok_or("--instances DIR is required")?;
    if secret.is_none() && !direct {
        return Err(
            "--shared-secret-file is required unless --direct (for the empty \
                    secret: --shared-secret-file /dev/null)"
                .to_owned(),
        );
    }
    if listen.is_empty() {
        listen.push(SocketAddr::from(([0, 0, 0, 0], 8775)));
    }
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(ServerTlsArgs {
            cert,
            key,
            client_ca: tls_client_ca,
        }),
        (Some(_), None) => return Err("--tls-cert needs --tls-key".to_owned()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".to_owned()),
        (None, None) if tls_client_ca.is_some() => {
            return Err("--tls-client-ca needs --tls-cert and --tls-key".to_owned())
        }
        (None, None) => None,
    };
    let common = common.finish();
    Ok(Command::Server(Box::new(Server {
        listen,
        shared_secret_file: secret,
        instances,
        state_dir,
        rescan_interval,
        secret_grace,
        direct,
        imdsv2,
        token_key_file,
        dhcp_domain,
        tls,
        endpoint: common.endpoint,
        drain_timeout: common.drain_timeout,
        process: common.process,
    })))
}

pub(super) fn imdsv2_mode(flag: &str, v: &str) -> Result<ImdsV2, String> {
    match v {
        "off" => Ok(ImdsV2::Off),
        "optional" => Ok(ImdsV2::Optional),
        "required" => Ok(ImdsV2::Required),
        _ => Err(format!(
            "{flag}: {v:?} is not one of off, optional, required"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;
    use crate::cli::parse;
    use crate::runtime::Runtime;

    const REQUIRED: [&str; 4] = ["--instances", "/srv/i", "--shared-secret-file", "/s"];

    fn server(args: &[&str]) -> Result<Server, String> {
        let argv = ["mdproxy", "server"].iter().chain(args).map(OsString::from);
        match parse(argv)? {
            Command::Server(cfg) => Ok(*cfg),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn defaults() {
        let cfg = server(&REQUIRED).unwrap();
        assert_eq!(cfg.listen, vec!["0.0.0.0:8775".parse().unwrap()]);
        assert_eq!(cfg.instances, PathBuf::from("/srv/i"));
        assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/mdproxy/server"));
        assert_eq!(cfg.shared_secret_file, Some(PathBuf::from("/s")));
        assert_eq!(cfg.rescan_interval, Duration::from_secs(2));
        assert_eq!(cfg.secret_grace, Duration::from_secs(600));
        assert_eq!((cfg.direct, cfg.imdsv2), (false, ImdsV2::Optional));
        assert_eq!(cfg.dhcp_domain, "novalocal");
        assert_eq!(cfg.tls, None);
        assert_eq!(cfg.endpoint, Default::default());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_flags() {
        let cfg = server(&[&REQUIRED[..], &["--tls-cert=/c.pem", "--tls_key", "/k.pem"]].concat())
            .unwrap();
        let want = ServerTlsArgs {
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
            client_ca: None,
        };
        assert_eq!(cfg.tls.as_ref(), Some(&want));
        let cfg = server(
            &[
                &REQUIRED[..],
                &[
                    "--tls-cert=/c.pem",
                    "--tls-key=/k.pem",
                    "--tls-client-ca=/ca.pem",
                ],
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(cfg.tls.unwrap().client_ca, Some("/ca.pem".into()));
        for (extra, want) in [
            (&["--tls-cert=/c"][..], "needs --tls-key"),
            (&["--tls-key=/k"], "needs --tls-cert"),
            (&["--tls-client-ca=/ca"], "needs --tls-cert"),
        ] {
            let e = server(&[&REQUIRED[..], extra].concat()).unwrap_err();
            assert!(e.contains(want), "{extra:?}: {e}");
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_flags_say_this_build_has_none() {
        let e = server(&[&REQUIRED[..], &["--tls-cert=/c", "--tls-key=/k"]].concat()).unwrap_err();
        assert!(e.contains("this build has no TLS"), "{e}");
    }

    #[test]
    fn flags() {
        let rt = *Runtime::BUILT.last().unwrap();
        let cfg = server(&[
            "--instances=/i",
            "--state_dir=/var/lib/s",
            "--direct",
            "--listen=127.0.0.1:1",
            "--listen",
            "[::1]:2",
            "--rescan_interval=0.5",
            "--secret-grace=1",
            "--imdsv2",
            "required",
            "--dhcp-domain=",
            "--drain-timeout=0",
            "--runtime",
            rt.name(),
            "--debug",
        ])
        .unwrap();
        assert_eq!(cfg.process.runtime, rt);
        assert_eq!(cfg.listen.len(), 2);
        assert_eq!(cfg.shared_secret_file, None);
        assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/s"));
        assert_eq!(cfg.rescan_interval, Duration::from_millis(500));
        assert_eq!(cfg.secret_grace, Duration::from_secs(1));
        assert_eq!((cfg.direct, cfg.imdsv2), (true, ImdsV2::Required));
        assert_eq!(cfg.dhcp_domain, "");
        assert_eq!(cfg.drain_timeout, Duration::ZERO);
        assert!(cfg.process.debug);
        let cfg = server(&[&REQUIRED[..], &["--imdsv2=off"]].concat()).unwrap();
        assert_eq!(cfg.imdsv2, ImdsV2::Off);
        assert_eq!(cfg.token_key_file, None, "a random key by default");
        let cfg = server(&[&REQUIRED[..], &["--token-key-file", "/k"]].concat()).unwrap();
        assert_eq!(cfg.token_key_file, Some(PathBuf::from("/k")));
    }

    #[test]
    fn errors_are_messages() {
        let e = server(&["--shared-secret-file", "/s"]).unwrap_err();
        assert!(e.contains("--instances"), "{e}");
        let e = server(&["--instances", "/i"]).unwrap_err();
        assert!(
            e.contains("--shared-secret-file") && e.contains("--direct"),
            "{e}"
        );
        for extra in [
            &["--imdsv2", "v2"][..],
            &["--rescan-interval", "0"],
            &["--secret-grace", "86401"],
            &["--listen", "8775"],
            &["--workers", "2"],
            &["--static-map", "/m"],
            &["--direct=yes"],
        ] {
            let args: Vec<&str> = REQUIRED.iter().chain(extra).copied().collect();
            assert!(server(&args).is_err(), "{extra:?} was accepted");
        }
    }
}
