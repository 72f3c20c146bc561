//! `mdproxy agent`: the metadata agent's flags (Neutron's `metadata_agent.ini` options, as
//! flags).

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use mdproxy_core::agent::imds::parse_mode;
use mdproxy_core::lookup::{HttpUrl, NeutronConfig, UrlError};
use mdproxy_core::metadata::ImdsV2;
use mdproxy_core::scope::Uuid;

use super::args::Args;
use super::range::{
    BACKLOG, CACHE_SIZE, CACHE_TTL, CONNS, NEUTRON_QUERIES, OVN_PROBE, PORT, PROBE_INTERVAL,
    REQUEST_DEADLINE, RESPONSE_TTL, TIMEOUT, WORKERS,
};
use super::{
    common_help, needs_tls, next_flag, switch, value, Command, Common, EndpointArgs, Process,
};

pub const HELP: &str = concat!(
    "\
mdproxy agent: the metadata agent

Accepts the namespace proxies' requests on a Unix socket. Each must carry exactly one
X-Forwarded-For and exactly one of X-Neutron-Router-ID / X-Neutron-Network-ID / X-OVN-Network-ID
(else 400). The agent finds the one port with that fixed IP behind that router (on its interface
networks) or on that network (none: 404 \"Instance was not found on router R.\" / \"... network N.\"), and
relays the request to the metadata server with X-Forwarded-For, X-Instance-ID (the port's
device_id), X-Tenant-ID (its project_id) and X-Instance-ID-Signature (lowercase hex
HMAC-SHA256 of the instance ID keyed with the shared secret), as neutron-metadata-agent does.
Copies of those headers sent by the client are dropped. The metadata server's answer is passed
through; a 403 is logged as a warning (the shared secrets likely differ). 503 when the server
cannot be reached, 504 when it does not answer in time, 502 when its answer is malformed.

With --backend neutron, the agent asks Neutron's API what neutron-metadata-agent asks over
RPC: the router's interface networks (GET /v2.0/ports?device_id=R&device_owner=...), then the
port with the client's fixed IP on them (GET /v2.0/ports?fixed_ips=ip_address%3DIP&network_id=
N&..., by mac_address for an IPv6 link-local client). Answers are cached (--cache-ttl); concurrent
first requests for one instance make one query. When the metadata server answers 404 for a
cached instance, the agent looks it up once more past the cache (the IP may have been reused).
When Neutron or Keystone fails or does not answer within --neutron-timeout, the request gets
503 and instances still cached keep being served.

SIGTERM/SIGINT: stop accepting, finish in-flight requests, remove the socket file, exit 0.
SIGHUP: read the configuration again — this command line, the --config TOML and the Neutron
INI files it names, the secret, token key and static map files — and apply, from the next
request on and without dropping a connection, the shared secret, --imdsv2/--imdsv2-scope and
the token keys, the static map, --cache-ttl/--negative-cache-ttl, the request limits and
timeouts, --max-conns/--max-conns-per-ip (from the next connection: a lower limit never closes
one already open), --metadata-url with its TLS flags, the probe interval and the request
deadline (requests in flight finish where they are; a plain-HTTP server named again keeps its
health and idle connections, a removed one's close), and --debug. A file with an
error refuses the whole reload (logged with FILE:LINE) and the running configuration stays; a
changed setting that takes a restart (the socket, --workers, --response-cache-ttl and
--stale-if-error, the lookup backend's settings (Neutron's credentials, the OVN remotes),
--cache-size, the process settings) is logged and kept. Without --token-key-file
the process's random token key is kept across reloads.

Usage: mdproxy agent --shared-secret-file PATH --static-map FILE [OPTIONS]
       mdproxy agent --shared-secret-file PATH --backend neutron --auth-url URL --username NAME
                     --password-file PATH --project-name NAME [OPTIONS]
       mdproxy agent --shared-secret-file PATH --backend neutron --neutron-url URL [OPTIONS]

Metadata server:
      --metadata-url URL         http[s]://HOST[:PORT] of the metadata server (Nova's, or
                                 `mdproxy server`); PORT (1 to 65535) defaults to 80 (443 for
                                 https) when the URL has none. HOST is resolved once, at
                                 startup, and is the name an https server's certificate must
                                 carry [default: http://127.0.0.1:8775]. Repeatable: each
                                 server gets its own connections; a request goes to the
                                 healthy one with the fewest requests outstanding, and a GET
                                 or HEAD whose server fails before any byte of the answer
                                 reached the client is sent to another (a POST never is).
                                 Two failures in a row (refused, timed out, 5xx) mark a
                                 server down for 1 s, doubling up to 30 s while it stays down
      --metadata-probe-interval S
                                 With several servers, ask each `GET /` (Nova answers it
                                 without an instance) every S seconds, to find a server down
                                 or back before a client does [default: off; 0.1 to 86400
                                 seconds]
      --request-deadline S       Connecting, retries and the answer's head of one request must
                                 fit in S seconds, shared among the servers left to try; past
                                 it the client gets 504 and the log names every server tried
                                 [default: 5; 0.001 to 86400 seconds]. 5, half of the 10 s
                                 cloud-init's OpenStack datasource waits for each try: an
                                 answer from a second server, or the 504, reaches the
                                 instance while that try still waits for it
      --response-cache-ttl S     Keep the metadata server's 200 answers to GET for S seconds
                                 per (instance, path, Accept) and answer from them (Nova's
                                 metadata_cache_expiration, here); never the token or password
                                 paths, answers marked Cache-Control no-store or private, or
                                 errors. At most 10000 answers and 32 MiB per worker. With
                                 the neutron backend, answered from only after a lookup that
                                 asked Neutron (a cached lookup may name a deleted instance:
                                 Nova's 404 shows it) [default: 0, off; 0 to 86400 seconds]
      --stale-if-error S         While every server fails, answer from a kept answer up to S
                                 seconds past its TTL, with Age and Warning: 110 - \"Response
                                 is Stale\" (needs --response-cache-ttl) [default: 0, off; 0 to
                                 86400 seconds]
      --metadata-ca-file FILE    PEM CA certificates an https metadata server's certificate
                                 must lead to (Neutron's auth_ca_cert) [default: the system's
                                 CAs, from $SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt
                                 and the other usual bundle paths]
      --metadata-insecure        Do not check the metadata server's certificate at all
                                 (nova_metadata_insecure); logged as a warning at startup
      --metadata-client-cert FILE
                                 PEM certificate (chain) to present when the metadata server
                                 asks for one: mutual TLS (nova_client_cert)
      --metadata-client-key FILE PEM private key of --metadata-client-cert
                                 (nova_client_priv_key)
                                 A certificate the agent refuses (unknown CA, wrong name,
                                 expired), or a server that refuses the agent's, makes the
                                 request 503, and the log line says why
      --shared-secret-file PATH  File holding the secret shared with the metadata server
                                 (Nova's [neutron] metadata_proxy_shared_secret); one trailing
                                 newline is ignored. Required: for Neutron's default, the empty
                                 secret, give /dev/null. The secret is never logged

Lookup:
      --backend NAME             Where instances are looked up: static (a file), neutron
                                 (Neutron's API) or ovn (the OVN Southbound database)
                                 [default: static]
      --static-map FILE          The static backend's TOML file (format below); required with
                                 --backend static
      --cache-size N             Lookup cache entries, allocated at startup in each worker
                                 [default: 10000; 1 to 1000000]
      --cache-ttl S              Seconds a found instance (and a router's list of networks)
                                 stays cached [default: 5; 0 to 86400 seconds]
      --negative-cache-ttl S     Seconds \"no such instance\" stays cached
                                 [default: 1; 0 to 86400 seconds]
                                 The cache serves the neutron backend; the static backend
                                 answers from memory and bypasses it, so with --backend static
                                 the three cache flags change nothing

Neutron backend (--backend neutron; URLs are http[s]://HOST[:PORT][/PATH], HOST resolved once
at startup, PORT 1 to 65535, 80 (443 for https) when absent):
      --neutron-url URL          Neutron's API endpoint, e.g. http://192.0.2.10:9696 [default:
                                 the network endpoint of Keystone's catalog, which must then
                                 name its host by IP address]
      --auth-url URL             Keystone, with or without /v3, e.g. http://192.0.2.10:5000/v3.
                                 The agent authenticates with Keystone v3 password credentials
                                 and reuses the token until shortly before it expires; a 401
                                 from Neutron makes it authenticate once more and retry once.
                                 Without --auth-url no authentication is done at all (a noauth
                                 Neutron), and --neutron-url is required
      --username NAME            Keystone user (required with --auth-url)
      --password-file PATH       File holding that user's password (required with --auth-url);
                                 one trailing newline is ignored. There is no flag taking the
                                 password itself; it is never logged
      --project-name NAME        Project the token is scoped to (required with --auth-url)
      --user-domain-name NAME    Domain of the user [default: Default]
      --project-domain-name NAME Domain of the project [default: Default]
      --region-name NAME         Region of the catalog endpoint to use [default: the first
                                 network endpoint with the right interface]
      --interface NAME           Catalog endpoint to use: public, internal or admin
                                 [default: public]
      --neutron-timeout S        Each request to Neutron or Keystone, connecting included, must
                                 be answered within S seconds, else the lookup fails (503)
                                 [default: 10; 0.001 to 86400 seconds]
      --max-neutron-queries N    Lookups talking to Neutron at once, per worker; up to 16
                                 per slot more wait, at most --neutron-timeout, the rest get
                                 503 at once [default: 64; 1 to 4096]
      --neutron-ca-file FILE     PEM CA certificates that https Neutron and Keystone
                                 certificates must lead to (auth_ca_cert) [default: the
                                 system's CAs, as for --metadata-ca-file]
      --neutron-insecure         Do not check Neutron's and Keystone's certificates (insecure);
                                 logged as a warning at startup. A refused certificate fails
                                 the lookup (503) with the reason in the log

OVN backend (--backend ovn; the agent as a drop-in for neutron-ovn-metadata-agent, behind
ns-proxies started with --ovn-network-id, which send X-OVN-Network-ID). The agent keeps a
replica of the Southbound Port_Binding rows bound to this chassis, pushed by an OVSDB monitor,
and answers each request from an index of it: the one bound port of that network with the
client's IP (for an IPv6 link-local client, its MAC) among its `mac` addresses; none or
several: 404. While the Southbound is unreachable, answers come from the last replica:
      --ovn-sb-connection REMOTES
                                 The Southbound database: tcp:IP:PORT, ssl:IP:PORT or
                                 unix:PATH, or a comma-separated list of cluster members,
                                 tried in turn (a follower serves reads too); required with
                                 --backend ovn ([ovn] ovn_sb_connection)
      --ovn-sb-private-key FILE  PEM private key for ssl: remotes (ovn_sb_private_key)
      --ovn-sb-certificate FILE  PEM certificate presented with it (ovn_sb_certificate)
      --ovn-sb-ca-cert FILE      PEM CA certificates the Southbound's certificate must lead
                                 to (ovn_sb_ca_cert); all three are needed for ssl:
      --chassis NAME             Replicate only the ports bound to this chassis (or a live
                                 migration's target): memory grows with this node's ports, not
                                 the cloud's. `*` replicates every bound port (an agent serving
                                 many nodes) [default: external_ids:system-id of the local
                                 Open_vSwitch database, read once at startup from --ovs-db]
      --ovs-db REMOTE            The local Open_vSwitch database, for the default --chassis
                                 ([ovs] ovsdb_connection) [default:
                                 unix:/var/run/openvswitch/db.sock]
      --ovn-probe-interval S     Seconds of silence on the Southbound connection before the
                                 agent sends an echo; as long again without a byte and it
                                 moves to the next remote ([ovn] ovsdb_probe_interval, in ms
                                 there) [default: 60; 0.1 to 86400 seconds]
                                 One worker suits OVN: each of --workers N keeps a replica

TLS (https:// URLs and the TLS flags) needs a build with the `tls` feature, the default; a
build without it says so and exits 2.

IMDSv2 session tokens (answered and checked here, in front of any metadata server; Nova knows
none). A token is bound to the resolved instance (not the client IP) and carries its expiry,
HMAC-SHA256 under the key file: no state per token, and every agent (and `mdproxy server`)
given the same file accepts it, also after a restart:
      --imdsv2 MODE              off: relay everything as before (token requests and headers
                                 go to the metadata server; Nova answers the PUT 404, which
                                 makes botocore fall back to IMDSv1). optional: PUT
                                 /latest/api/token is answered here (X-aws-ec2-metadata-
                                 token-ttl-seconds 1..21600, else 400; other methods there
                                 405), a token sent must be valid (else 401), requests without
                                 one are served and counted per instance in /metrics
                                 (mdproxy_imds_no_token_requests_total). required: every path,
                                 EC2 and OpenStack tree alike, needs a valid token (else 401);
                                 cloud-init's OpenStack datasource sends none, so this suits
                                 images using the Ec2 datasource or tokens. The token header
                                 never reaches the metadata server [default: optional]
      --imdsv2-scope ID=MODE     MODE for the router or network ID (the scope the ns-proxy
                                 names) instead of --imdsv2; repeatable (in the TOML file: a
                                 list). A static map's own `imdsv2` for a scope comes first
      --token-key-file PATH      Token keys: one key per line (16 to 1024 bytes, e.g.
                                 `openssl rand -base64 32`); the first signs, a second one only
                                 verifies (rotation: add the new key second everywhere, then
                                 first; drop the old after 6 hours). Checked as the shared
                                 secret's file; never logged [default: a random key drawn at
                                 startup, shared by the workers, with a warning: tokens then
                                 die with the agent and no other agent accepts them. Not
                                 required, so that the default mode works on an upgrade]
                                 The ns-proxy sends the token's answer with a low hop limit
                                 (its --token-hop-limit)

Socket:
      --listen-socket PATH       Unix socket the namespace proxies connect to
                                 [default: /var/lib/neutron/metadata_proxy]. A socket file
                                 nobody listens on (left by an agent that died) is replaced;
                                 if another agent listens on it, mdproxy exits with status 1;
                                 a path that is not a socket is left alone (exit 1). The
                                 socket file is removed when the agent exits
      --backlog N                Queue of connections not yet accepted (the kernel caps it at
                                 net.core.somaxconn) [default: 4096; 1 to 65535]
      --socket-mode MODE         Permissions set on the socket after binding: user (0644),
                                 group (0664) or all (0666); connecting needs write permission
                                 [default: as the umask leaves them; Neutron's `deduce` is not
                                 implemented]
      --workers N                Event-loop threads sharing the socket [default: 1; 1 to 64].
                                 Each keeps its own lookup cache, so concurrent first
                                 requests for one instance make at most one backend query per
                                 worker (Neutron's default is half the CPUs; ours favours one
                                 query in all)
      --max-conns N              Proxy connections open at once, per worker; more are answered
                                 503 and closed [default: 4096; 1 to 1000000]

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

    [[network]]                         # optional: a scope's own --imdsv2 (a [[router]]
    id = \"9c2b1a4e-0000-4000-8000-000000000001\"   # takes `imdsv2 = ...` too)
    imdsv2 = \"required\"

Neutron's configuration files (the agent as a drop-in for neutron-metadata-agent):
      --config-file FILE         Read Neutron's oslo-style INI file (metadata_agent.ini,
                                 neutron.conf); repeatable, a later file overrides an earlier
                                 one. Its [DEFAULT] nova_metadata_host/_ip/_port/_protocol,
                                 metadata_proxy_shared_secret, metadata_proxy_socket,
                                 metadata_workers, metadata_backlog, auth_ca_cert,
                                 nova_client_cert/_priv_key, nova_metadata_insecure and
                                 [keystone_authtoken] auth_url, username, password,
                                 project_name, ... and (neutron_ovn_metadata_agent.ini) [ovn]
                                 ovn_sb_connection and its SSL files, [ovs] ovsdb_connection
                                 become these flags; other keys are ignored, named in one
                                 line at startup. Flags given here override the files. With
                                 no Keystone auth_url or ovn_sb_connection, give --static-map
      --config-dir DIR           The *.conf files of DIR, sorted, as --config-file

Invoked as `neutron-metadata-agent`, mdproxy runs `agent`.

Exit status: 0 after a clean stop, 1 when the agent cannot start (the socket is taken, a
system call fails) or its event loop fails, 2 for a usage or configuration error (bad flag,
unreadable secret or password file, a static map with errors, a URL that does not resolve).
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
    /// At least one, in the order given.
    pub metadata: Vec<MetadataUrl>,
    pub probe_interval: Option<Duration>,
    pub request_deadline: Duration,
    pub response_cache_ttl: Duration,
    pub stale_if_error: Duration,
    /// TLS to an https metadata server.
    pub metadata_tls: ClientTlsArgs,
    pub shared_secret: Secret,
    pub backend: LookupBackend,
    pub cache_size: NonZeroUsize,
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
    /// IMDSv2 tokens at the agent: the default mode and per-scope overrides.
    pub imdsv2: ImdsV2,
    pub imdsv2_scopes: BTreeMap<Uuid, ImdsV2>,
    /// `None`: a random key of this process.
    pub token_key_file: Option<PathBuf>,
    /// The connection limit is per worker.
    pub endpoint: EndpointArgs,
    pub drain_timeout: Duration,
    pub process: Process,
}

/// A secret (the shared secret, Keystone's password): a file holding it, read at startup, or
/// the secret itself from Neutron's INI files, which keep it there. Never shown.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    File(PathBuf),
    /// The secret, and where it was set (`FILE:LINE`).
    Inline {
        value: String,
        from: String,
    },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::File(path) => f.debug_tuple("File").field(path).finish(),
            Secret::Inline { from, .. } => write!(f, "Inline(set in {from}, not shown)"),
        }
    }
}

/// Where instances are looked up (`--backend`).
#[derive(Debug)]
pub enum LookupBackend {
    /// The static backend's file.
    Static(PathBuf),
    Neutron(Box<NeutronArgs>),
    Ovn(Box<OvnArgs>),
}

/// The ovn backend's flags, checked but not parsed further or read (the remotes are parsed
/// by the core at startup, the files read then).
#[derive(Debug, PartialEq, Eq)]
pub struct OvnArgs {
    /// `--ovn-sb-connection`, as given.
    pub sb_connection: String,
    /// Private key, certificate and CA certificates for ssl: remotes.
    pub ssl: Option<OvnSsl>,
    /// `None`: the local Open_vSwitch database's `external_ids:system-id`.
    pub chassis: Option<String>,
    /// `--ovs-db`, as given.
    pub ovs_db: String,
    pub probe_interval: Duration,
}

/// OVN's SSL files (`ovn_sb_private_key`, `ovn_sb_certificate`, `ovn_sb_ca_cert`).
#[derive(Debug, PartialEq, Eq)]
pub struct OvnSsl {
    pub private_key: PathBuf,
    pub certificate: PathBuf,
    pub ca_cert: PathBuf,
}

/// The ovn backend's flags as they come, checked once the whole command line is read.
#[derive(Default)]
struct OvnFlags {
    sb_connection: Option<String>,
    private_key: Option<PathBuf>,
    certificate: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    chassis: Option<String>,
    ovs_db: Option<String>,
    probe_interval: Option<Duration>,
    /// The first flag given, as spelled, for messages.
    given: Option<String>,
}

impl OvnFlags {
    /// Takes `name` if it is an ovn backend flag; `Ok(false)` leaves it to the caller.
    fn parse(&mut self, name: &str, flag: &str, p: &mut Args) -> Result<bool, String> {
        match name {
            "ovn-sb-connection" => self.sb_connection = Some(nonempty(p, flag)?),
            "ovn-sb-private-key" => self.private_key = Some(value(p, flag)?.into()),
            "ovn-sb-certificate" => self.certificate = Some(value(p, flag)?.into()),
            "ovn-sb-ca-cert" => self.ca_cert = Some(value(p, flag)?.into()),
            "chassis" => self.chassis = Some(nonempty(p, flag)?),
            "ovs-db" => self.ovs_db = Some(nonempty(p, flag)?),
            "ovn-probe-interval" => {
                self.probe_interval = Some(OVN_PROBE.parse(flag, &value(p, flag)?)?);
            }
            _ => return Ok(false),
        }
        self.given.get_or_insert_with(|| flag.to_owned());
        Ok(true)
    }

    /// The ovn backend these flags describe.
    fn finish(self) -> Result<OvnArgs, String> {
        let sb_connection = self
            .sb_connection
            .ok_or("--backend ovn needs --ovn-sb-connection (the Southbound database)")?;
        let ssl = match (self.private_key, self.certificate, self.ca_cert) {
            (None, None, None) => None,
            (Some(private_key), Some(certificate), Some(ca_cert)) => {
                needs_tls("--ovn-sb-private-key")?;
                Some(OvnSsl {
                    private_key,
                    certificate,
                    ca_cert,
                })
            }
            _ => {
                return Err(
                    "--ovn-sb-private-key, --ovn-sb-certificate and --ovn-sb-ca-cert go \
                            together (OVN's SSL needs all three)"
                        .to_owned(),
                )
            }
        };
        let ssl_remote = sb_connection
            .split(',')
            .any(|r| r.trim().starts_with("ssl:"));
        match (&ssl, ssl_remote) {
            (None, true) => {
                return Err(format!(
                    "--ovn-sb-connection {sb_connection}: an ssl: remote needs \
                     --ovn-sb-private-key, --ovn-sb-certificate and --ovn-sb-ca-cert"
                ))
            }
            (Some(_), false) => {
                return Err(format!(
                    "the --ovn-sb-* SSL files need an ssl: remote in --ovn-sb-connection \
                     (it is {sb_connection})"
                ))
            }
            _ => {}
        }
        Ok(OvnArgs {
            sb_connection,
            ssl,
            chassis: self.chassis,
            ovs_db: self
                .ovs_db
                .unwrap_or_else(|| "unix:/var/run/openvswitch/db.sock".to_owned()),
            probe_interval: self.probe_interval.unwrap_or(Duration::from_secs(60)),
        })
    }
}

/// A value that must not be empty.
fn nonempty(p: &mut Args, flag: &str) -> Result<String, String> {
    let v = value(p, flag)?;
    match v.trim().is_empty() {
        true => Err(format!("{flag}: must not be empty")),
        false => Ok(v),
    }
}

/// The neutron backend's flags, checked but not resolved or read.
#[derive(Debug)]
pub struct NeutronArgs {
    /// `None`: take Neutron's endpoint from Keystone's catalog.
    pub neutron_url: Option<ServiceUrl>,
    /// `None`: a noauth Neutron (then `neutron_url` is set).
    pub keystone: Option<KeystoneArgs>,
    pub region_name: Option<String>,
    /// `public`, `internal` or `admin`.
    pub interface: &'static str,
    pub timeout: Duration,
    /// Lookups talking to Neutron at once (`--max-neutron-queries`).
    pub max_in_flight: usize,
    /// TLS to https Neutron and Keystone URLs (client certificates are not offered).
    pub tls: ClientTlsArgs,
}

/// The TLS flags of a client (`--metadata-*`, `--neutron-*`), checked but not read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTlsArgs {
    /// CA certificates; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate checks.
    pub insecure: bool,
    /// Certificate and key presented for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl ClientTlsArgs {
    /// Whether any flag was given.
    pub fn given(&self) -> bool {
        *self != ClientTlsArgs::default()
    }
}

/// Keystone v3 password credentials; the password stays in its file until startup.
#[derive(Debug)]
pub struct KeystoneArgs {
    pub auth_url: ServiceUrl,
    pub username: String,
    pub password: Secret,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
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

/// `http[s]://HOST[:PORT]`, not yet resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataUrl {
    pub https: bool,
    /// A name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for MetadataUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        match self.host.contains(':') {
            true => write!(f, "{scheme}://[{}]:{}", self.host, self.port),
            false => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

/// `http[s]://HOST[:PORT][/PATH]` of a lookup service (Neutron, Keystone), checked but not yet
/// resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUrl {
    /// The URL as given.
    pub url: String,
    pub https: bool,
    /// A name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// The neutron backend's flags as they come, checked once the whole command line is read.
#[derive(Default)]
struct NeutronFlags {
    neutron_url: Option<ServiceUrl>,
    auth_url: Option<ServiceUrl>,
    username: Option<String>,
    password: Option<Secret>,
    project_name: Option<String>,
    user_domain_name: Option<String>,
    project_domain_name: Option<String>,
    region_name: Option<String>,
    interface: Option<&'static str>,
    timeout: Option<Duration>,
    max_in_flight: Option<usize>,
    tls: ClientTlsArgs,
    /// The flags given, by name and as spelled in messages, in order.
    given: Vec<(String, String)>,
}

impl NeutronFlags {
    /// Takes `name` if it is a neutron backend flag; `Ok(false)` leaves it to the caller.
    fn parse(&mut self, name: &str, flag: &str, p: &mut Args) -> Result<bool, String> {
        match name {
            "neutron-url" => self.neutron_url = Some(service_url(flag, &value(p, flag)?)?),
            "auth-url" => self.auth_url = Some(service_url(flag, &value(p, flag)?)?),
            "username" => self.username = Some(name_value(p, flag)?),
            "password-file" => self.password = Some(Secret::File(value(p, flag)?.into())),
            // Only from Neutron's INI files: on the command line it would show in `ps`.
            "password" if p.inline_secret() => self.password = Some(inline(p, flag)?),
            "project-name" => self.project_name = Some(name_value(p, flag)?),
            "user-domain-name" => self.user_domain_name = Some(name_value(p, flag)?),
            "project-domain-name" => self.project_domain_name = Some(name_value(p, flag)?),
            "region-name" => self.region_name = Some(name_value(p, flag)?),
            "interface" => self.interface = Some(interface(flag, &value(p, flag)?)?),
            "neutron-timeout" => self.timeout = Some(TIMEOUT.parse(flag, &value(p, flag)?)?),
            "max-neutron-queries" => {
                self.max_in_flight = Some(NEUTRON_QUERIES.parse(flag, &value(p, flag)?)?);
            }
            "neutron-ca-file" => {
                needs_tls(flag)?;
                self.tls.ca_file = Some(value(p, flag)?.into());
            }
            "neutron-insecure" => {
                needs_tls(flag)?;
                self.tls.insecure = switch(p, flag)?;
            }
            _ => return Ok(false),
        }
        self.given.push((name.to_owned(), flag.to_owned()));
        Ok(true)
    }

    /// The neutron backend these flags describe.
    fn finish(self) -> Result<NeutronArgs, String> {
        check_client_tls(&self.tls, "--neutron")?;
        let urls = [&self.neutron_url, &self.auth_url];
        let any_https = urls.iter().any(|u| u.as_ref().is_some_and(|u| u.https));
        // Without --neutron-url, Neutron's URL comes from the catalog and may be https.
        if self.tls.given() && !any_https && self.neutron_url.is_some() {
            return Err(
                "--neutron-ca-file and --neutron-insecure need an https:// --neutron-url or \
                 --auth-url"
                    .to_owned(),
            );
        }
        let keystone = match self.auth_url {
            Some(auth_url) => {
                let need = |v: Option<String>, flag: &str| {
                    v.ok_or_else(|| format!("--auth-url needs {flag} too"))
                };
                Some(KeystoneArgs {
                    auth_url,
                    username: need(self.username, "--username")?,
                    password: self
                        .password
                        .ok_or("--auth-url needs --password-file too")?,
                    project_name: need(self.project_name, "--project-name")?,
                    user_domain_name: self.user_domain_name.unwrap_or_else(|| "Default".into()),
                    project_domain_name: self
                        .project_domain_name
                        .unwrap_or_else(|| "Default".into()),
                })
            }
            None => {
                const KEYSTONE_ONLY: [&str; 8] = [
                    "username",
                    "password-file",
                    "password",
                    "project-name",
                    "user-domain-name",
                    "project-domain-name",
                    "region-name",
                    "interface",
                ];
                if let Some((_, flag)) = self
                    .given
                    .iter()
                    .find(|(name, _)| KEYSTONE_ONLY.contains(&name.as_str()))
                {
                    return Err(format!(
                        "{flag} needs --auth-url (without it, no Keystone authentication is done)"
                    ));
                }
                if self.neutron_url.is_none() {
                    return Err(
                        "--backend neutron needs --neutron-url, or --auth-url to find \
                                Neutron in Keystone's catalog"
                            .to_owned(),
                    );
                }
                None
            }
        };
        Ok(NeutronArgs {
            neutron_url: self.neutron_url,
            keystone,
            region_name: self.region_name,
            interface: self.interface.unwrap_or("public"),
            timeout: self.timeout.unwrap_or(Duration::from_secs(10)),
            max_in_flight: self
                .max_in_flight
                .unwrap_or(NeutronConfig::DEFAULT_MAX_IN_FLIGHT),
            tls: self.tls,
        })
    }
}

/// Flags that set the same thing (see `config.rs`): `--shared-secret-file` replaces the secret
/// of Neutron's INI files.
pub(super) const SAME: &[&[&str]] = &[
    &["shared-secret-file", "shared-secret"],
    &["password-file", "password"],
];

pub(super) fn parse(p: &mut Args) -> Result<Command, String> {
    parse_with(p, HELP, &mut |_, _, _| Ok(false))
}

/// A role's own flags, taken before the agent's (the node's, which refuses the agent's Unix
/// socket flags): `Ok(true)` took the flag.
pub(super) type Extra<'a> = dyn FnMut(&str, &str, &mut Args) -> Result<bool, String> + 'a;

/// The agent's flags, for `agent` and for a role built on it (the node): `extra` sees each
/// flag first, and `-h` prints `help`.
pub(super) fn parse_with(
    p: &mut Args,
    help: &'static str,
    extra: &mut Extra<'_>,
) -> Result<Command, String> {
    let mut listen_socket = PathBuf::from("/var/lib/neutron/metadata_proxy");
    let (mut backlog, mut socket_mode, mut workers) = (4096, None, 1);
    let mut metadata: Vec<MetadataUrl> = Vec::new();
    let mut probe_interval = None;
    let mut request_deadline = Duration::from_secs(5);
    let (mut response_cache_ttl, mut stale_if_error) = (Duration::ZERO, Duration::ZERO);
    let mut metadata_tls = ClientTlsArgs::default();
    let (mut client_cert, mut client_key) = (None, None);
    let (mut secret, mut static_map, mut backend_name) = (None, None, "static");
    let mut neutron = NeutronFlags::default();
    let mut ovn = OvnFlags::default();
    let mut cache_size = NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN);
    let (mut cache_ttl, mut negative_ttl) = (Duration::from_secs(5), Duration::from_secs(1));
    let (mut imdsv2, mut imdsv2_scopes) = (ImdsV2::Optional, BTreeMap::new());
    let mut token_key_file = None;
    let mut common = Common::default();
    while let Some((name, flag)) = next_flag(p)? {
        if extra(&name, &flag, p)?
            || common.parse(&name, &flag, p)?
            || neutron.parse(&name, &flag, p)?
            || ovn.parse(&name, &flag, p)?
        {
            continue;
        }
        match name.as_str() {
            "help" => return Ok(Command::Help(help)),
            "listen-socket" => listen_socket = value(p, &flag)?.into(),
            "backlog" => backlog = BACKLOG.parse(&flag, &value(p, &flag)?)?,
            "socket-mode" => socket_mode = Some(mode(&flag, &value(p, &flag)?)?),
            "workers" => workers = WORKERS.parse(&flag, &value(p, &flag)?)?,
            "max-conns" => {
                common.endpoint.conns.max_conns = CONNS.parse(&flag, &value(p, &flag)?)?
            }
            "metadata-url" => {
                let url = metadata_url(&flag, &value(p, &flag)?)?;
                if metadata.contains(&url) {
                    return Err(format!("{flag}: {url} is given twice"));
                }
                metadata.push(url);
            }
            "metadata-probe-interval" => {
                probe_interval = Some(PROBE_INTERVAL.parse(&flag, &value(p, &flag)?)?);
            }
            "request-deadline" => {
                request_deadline = REQUEST_DEADLINE.parse(&flag, &value(p, &flag)?)?;
            }
            "response-cache-ttl" => {
                response_cache_ttl = RESPONSE_TTL.parse(&flag, &value(p, &flag)?)?;
            }
            "stale-if-error" => stale_if_error = RESPONSE_TTL.parse(&flag, &value(p, &flag)?)?,
            "metadata-ca-file" => {
                needs_tls(&flag)?;
                metadata_tls.ca_file = Some(value(p, &flag)?.into());
            }
            "metadata-insecure" => {
                needs_tls(&flag)?;
                metadata_tls.insecure = switch(p, &flag)?;
            }
            "metadata-client-cert" => {
                needs_tls(&flag)?;
                client_cert = Some(PathBuf::from(value(p, &flag)?));
            }
            "metadata-client-key" => {
                needs_tls(&flag)?;
                client_key = Some(PathBuf::from(value(p, &flag)?));
            }
            "shared-secret-file" => secret = Some(Secret::File(value(p, &flag)?.into())),
            // Only from Neutron's INI files: on the command line it would show in `ps`.
            "shared-secret" if p.inline_secret() => secret = Some(inline(p, &flag)?),
            // Neutron's INI files, read before this parser sees their settings (config.rs).
            "config-file" | "config-dir" => {
                value(p, &flag)?;
            }
            "backend" => {
                backend_name = match value(p, &flag)?.as_str() {
                    "static" => "static",
                    "neutron" => "neutron",
                    "ovn" => "ovn",
                    other => {
                        return Err(format!(
                            "{flag}: {other:?} is not a backend (static, neutron or ovn)"
                        ))
                    }
                }
            }
            "static-map" => static_map = Some(value(p, &flag)?.into()),
            "cache-size" => {
                let n = CACHE_SIZE.parse(&flag, &value(p, &flag)?)?;
                cache_size = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
            }
            "cache-ttl" => cache_ttl = CACHE_TTL.parse(&flag, &value(p, &flag)?)?,
            "negative-cache-ttl" => negative_ttl = CACHE_TTL.parse(&flag, &value(p, &flag)?)?,
            "imdsv2" => imdsv2 = imdsv2_mode(&flag, &value(p, &flag)?)?,
            "imdsv2-scope" => {
                let (id, mode) = imdsv2_scope(&flag, &value(p, &flag)?)?;
                if imdsv2_scopes.insert(id, mode).is_some() {
                    return Err(format!("{flag}: {id} is given twice"));
                }
            }
            "token-key-file" => token_key_file = Some(PathBuf::from(value(p, &flag)?)),
            _ => return Err(p.unknown(&flag)),
        }
    }
    metadata_tls.client_cert = match (client_cert, client_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => return Err("--metadata-client-cert needs --metadata-client-key".into()),
        (None, Some(_)) => return Err("--metadata-client-key needs --metadata-client-cert".into()),
    };
    check_client_tls(&metadata_tls, "--metadata")?;
    if metadata.is_empty() {
        metadata.push(MetadataUrl {
            https: false,
            host: "127.0.0.1".to_owned(),
            port: 8775,
        });
    }
    if metadata_tls.given() && !metadata.iter().any(|m| m.https) {
        return Err(format!(
            "the --metadata-ca-file/-insecure/-client-* flags need an https:// --metadata-url \
             (it is {})",
            metadata[0]
        ));
    }
    if !stale_if_error.is_zero() && response_cache_ttl.is_zero() {
        return Err("--stale-if-error needs --response-cache-ttl".to_owned());
    }
    let shared_secret = secret.ok_or(
        "--shared-secret-file is required (for the empty secret: --shared-secret-file /dev/null)",
    )?;
    if backend_name != "neutron" {
        if let Some((_, flag)) = neutron.given.first() {
            return Err(format!("{flag} is a flag of --backend neutron"));
        }
    }
    if backend_name != "ovn" {
        if let Some(flag) = &ovn.given {
            return Err(format!("{flag} is a flag of --backend ovn"));
        }
    }
    if backend_name != "static" && static_map.is_some() {
        return Err("--static-map is a flag of --backend static".to_owned());
    }
    let backend = match backend_name {
        "neutron" => LookupBackend::Neutron(Box::new(neutron.finish()?)),
        "ovn" => LookupBackend::Ovn(Box::new(ovn.finish()?)),
        _ => {
            let missing = match p.has_ini() {
                // Neutron's agent asks neutron-server, over RPC; mdproxy asks its API.
                true => {
                    "the INI files set no Keystone auth_url (in [keystone_authtoken] or \
                         [DEFAULT]) for the neutron backend and no [ovn] ovn_sb_connection \
                         for the ovn backend: give --static-map FILE, or auth_url, username, \
                         password and project_name, or ovn_sb_connection"
                }
                false => "--static-map is required with --backend static",
            };
            LookupBackend::Static(static_map.ok_or(missing)?)
        }
    };
    let common = common.finish();
    Ok(Command::Agent(Box::new(Agent {
        listen_socket,
        backlog,
        socket_mode,
        workers,
        metadata,
        probe_interval,
        request_deadline,
        response_cache_ttl,
        stale_if_error,
        metadata_tls,
        shared_secret,
        backend,
        cache_size,
        cache_ttl,
        negative_ttl,
        imdsv2,
        imdsv2_scopes,
        token_key_file,
        endpoint: common.endpoint,
        drain_timeout: common.drain_timeout,
        process: common.process,
    })))
}

pub(super) fn imdsv2_mode(flag: &str, v: &str) -> Result<ImdsV2, String> {
    parse_mode(v).ok_or_else(|| format!("{flag}: {v:?} is not one of off, optional, required"))
}

/// `ROUTER-OR-NETWORK-ID=MODE`.
fn imdsv2_scope(flag: &str, v: &str) -> Result<(Uuid, ImdsV2), String> {
    let (id, mode) = v
        .split_once('=')
        .ok_or_else(|| format!("{flag}: {v:?} is not ID=MODE (a router or network UUID)"))?;
    let id = Uuid::parse(id.as_bytes())
        .ok_or_else(|| format!("{flag}: {id:?} is not a router or network UUID"))?;
    Ok((id, imdsv2_mode(flag, mode)?))
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

/// Keystone's catalog interfaces.
fn interface(flag: &str, v: &str) -> Result<&'static str, String> {
    ["public", "internal", "admin"]
        .into_iter()
        .find(|i| *i == v)
        .ok_or_else(|| format!("{flag}: {v:?} is not one of public, internal, admin"))
}

/// A secret set in Neutron's INI files.
fn inline(p: &mut Args, flag: &str) -> Result<Secret, String> {
    let from = p.origin().place().unwrap_or_default();
    let value = value(p, flag)?;
    Ok(Secret::Inline { value, from })
}

/// A name for Keystone (user, project, domain, region): anything but empty.
fn name_value(p: &mut Args, flag: &str) -> Result<String, String> {
    let v = value(p, flag)?;
    match v.is_empty() {
        true => Err(format!("{flag}: must not be empty")),
        false => Ok(v),
    }
}

/// TLS flags that contradict each other: `-insecure` checks nothing, so a CA file would be
/// silently unused.
fn check_client_tls(args: &ClientTlsArgs, prefix: &str) -> Result<(), String> {
    if args.insecure && args.ca_file.is_some() {
        return Err(format!(
            "{prefix}-insecure checks no certificate, so {prefix}-ca-file would be unused: \
             give one of them"
        ));
    }
    Ok(())
}

/// `v` of `flag` by the core's URL parser (the one the lookup client's targets are built
/// on), refused by a build without TLS if it is https; `shape` is the form errors name, e.g.
/// `http[s]://HOST[:PORT] (e.g. http://127.0.0.1:8775)`.
fn http_url<'a>(flag: &str, v: &'a str, shape: &str) -> Result<HttpUrl<'a>, String> {
    let url = HttpUrl::parse(v).map_err(|e| {
        let why = match &e {
            // A port out of range reads as every other number out of its range.
            UrlError::Port(p) => PORT.parse("its port", p).err(),
            _ => None,
        };
        let why = why.unwrap_or_else(|| e.to_string());
        format!("{flag}: {v:?} is not {shape}: {why}")
    })?;
    if url.https {
        needs_tls(&format!("{flag} {v}"))?;
    }
    Ok(url)
}

/// `http[s]://HOST[:PORT][/]`: no path, query or user info (the agent appends each request's
/// own path).
fn metadata_url(flag: &str, v: &str) -> Result<MetadataUrl, String> {
    let shape = "http[s]://HOST[:PORT] (e.g. http://127.0.0.1:8775)";
    let url = http_url(flag, v, shape)?;
    if !url.path.is_empty() {
        return Err(format!("{flag}: {v:?} is not {shape}: it has a path"));
    }
    Ok(MetadataUrl {
        https: url.https,
        host: url.host.to_owned(),
        port: url.port(),
    })
}

/// `http[s]://HOST[:PORT][/PATH]` of Neutron or Keystone, checked as the lookup client will
/// take it once HOST is resolved.
fn service_url(flag: &str, v: &str) -> Result<ServiceUrl, String> {
    let shape = "http[s]://HOST[:PORT][/PATH] (e.g. http://192.0.2.10:9696)";
    let url = http_url(flag, v, shape)?;
    Ok(ServiceUrl {
        url: v.to_owned(),
        https: url.https,
        host: url.host.to_owned(),
        port: url.port(),
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::path::Path;

    use super::*;
    use crate::cli::parse;
    use crate::runtime::Runtime;

    const REQUIRED: [&str; 4] = ["--shared-secret-file", "/s", "--static-map", "/m.toml"];

    fn agent(args: &[&str]) -> Result<Agent, String> {
        let argv = ["mdproxy", "agent"].iter().chain(args).map(OsString::from);
        match parse(argv)? {
            Command::Agent(cfg) => Ok(*cfg),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn imdsv2_flags() {
        let cfg = agent(&REQUIRED).unwrap();
        assert_eq!(
            cfg.imdsv2,
            ImdsV2::Optional,
            "tokens at the agent by default"
        );
        assert!(cfg.imdsv2_scopes.is_empty() && cfg.token_key_file.is_none());
        let (r, n) = (
            "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6",
            "9c2b1a4e-0000-4000-8000-000000000001",
        );
        let cfg = agent(
            &[
                &REQUIRED[..],
                &[
                    "--imdsv2=required",
                    &format!("--imdsv2-scope={r}=off"),
                    "--imdsv2-scope",
                    &format!("{n}=optional"),
                    "--token-key-file=/k",
                ],
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(cfg.imdsv2, ImdsV2::Required);
        let scopes: Vec<(String, ImdsV2)> = (cfg.imdsv2_scopes.iter())
            .map(|(id, m)| (id.to_string(), *m))
            .collect();
        let want = vec![
            (r.to_owned(), ImdsV2::Off),
            (n.to_owned(), ImdsV2::Optional),
        ];
        assert_eq!(scopes, want);
        assert_eq!(cfg.token_key_file, Some(PathBuf::from("/k")));
        for (flags, err) in [
            (&["--imdsv2=v2"][..], "not one of off, optional, required"),
            (&["--imdsv2-scope=required"], "is not ID=MODE"),
            (
                &["--imdsv2-scope=r1=required"],
                "not a router or network UUID",
            ),
            (&[&*format!("--imdsv2-scope={r}=on")], "not one of off"),
            (
                &[
                    &*format!("--imdsv2-scope={r}=off"),
                    &*format!("--imdsv2-scope={r}=off"),
                ],
                "given twice",
            ),
        ] {
            let e = agent(&[&REQUIRED[..], flags].concat()).unwrap_err();
            assert!(e.contains(err), "{flags:?}: {e}");
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
        assert_eq!(cfg.metadata[0].to_string(), "http://127.0.0.1:8775");
        assert_eq!(cfg.metadata.len(), 1);
        assert_eq!(cfg.request_deadline, Duration::from_secs(5));
        assert_eq!(
            (cfg.probe_interval, cfg.response_cache_ttl),
            (None, Duration::ZERO)
        );
        assert_eq!(cfg.cache_size.get(), 10_000);
        assert_eq!(
            (cfg.cache_ttl, cfg.negative_ttl),
            (Duration::from_secs(5), Duration::from_secs(1))
        );
        assert_eq!(cfg.endpoint, Default::default());
        assert_eq!(cfg.shared_secret, Secret::File("/s".into()));
        assert!(
            matches!(&cfg.backend, LookupBackend::Static(p) if p.as_path() == Path::new("/m.toml")),
            "{:?}",
            cfg.backend
        );
    }

    /// The secret plus `--backend neutron` plus `args`.
    fn neutron(args: &[&str]) -> Result<NeutronArgs, String> {
        let mut all = vec!["--shared-secret-file", "/s", "--backend", "neutron"];
        all.extend(args);
        match agent(&all)?.backend {
            LookupBackend::Neutron(n) => Ok(*n),
            other => Err(format!("{other:?}")),
        }
    }

    const KEYSTONE: [&str; 8] = [
        "--auth-url",
        "http://keystone.example:5000/v3",
        "--username",
        "neutron",
        "--password-file",
        "/etc/mdproxy/password",
        "--project-name",
        "service",
    ];

    #[test]
    fn neutron_defaults() {
        let n = neutron(&KEYSTONE).unwrap();
        assert_eq!(n.neutron_url, None);
        assert_eq!((n.interface, n.region_name), ("public", None));
        assert_eq!(n.timeout, Duration::from_secs(10));
        assert_eq!(n.max_in_flight, 64);
        let ks = n.keystone.unwrap();
        assert_eq!(
            ks.auth_url,
            ServiceUrl {
                url: "http://keystone.example:5000/v3".into(),
                https: false,
                host: "keystone.example".into(),
                port: 5000
            }
        );
        assert_eq!(
            (ks.username.as_str(), ks.project_name.as_str()),
            ("neutron", "service")
        );
        assert_eq!(ks.password, Secret::File("/etc/mdproxy/password".into()));
        assert_eq!(
            (
                ks.user_domain_name.as_str(),
                ks.project_domain_name.as_str()
            ),
            ("Default", "Default")
        );
    }

    #[test]
    fn neutron_flags() {
        let mut args = KEYSTONE.to_vec();
        args.extend([
            "--neutron-url=http://[fd00::9]/networking/",
            "--user_domain_name=users",
            "--project-domain-name",
            "projects",
            "--region-name=RegionTwo",
            "--interface=internal",
            "--neutron-timeout=2.5",
            "--max-neutron-queries=4096",
        ]);
        let n = neutron(&args).unwrap();
        assert_eq!(n.max_in_flight, 4096);
        let url = n.neutron_url.unwrap();
        assert_eq!((url.host.as_str(), url.port), ("fd00::9", 80));
        assert_eq!(url.to_string(), "http://[fd00::9]/networking/");
        assert_eq!(
            (n.interface, n.region_name.as_deref()),
            ("internal", Some("RegionTwo"))
        );
        assert_eq!(n.timeout, Duration::from_millis(2500));
        let ks = n.keystone.unwrap();
        assert_eq!(
            (
                ks.user_domain_name.as_str(),
                ks.project_domain_name.as_str()
            ),
            ("users", "projects")
        );
        // Without Keystone: a noauth Neutron at an explicit URL.
        let n = neutron(&["--neutron-url", "http://10.0.0.1:9696"]).unwrap();
        assert!(n.keystone.is_none());
        let url = n.neutron_url.unwrap();
        assert_eq!((url.host.as_str(), url.port), ("10.0.0.1", 9696));
    }

    #[test]
    fn neutron_errors_are_messages() {
        let without = |flag: &str| -> Vec<&str> {
            let i = KEYSTONE.iter().position(|f| *f == flag).unwrap();
            let mut args = KEYSTONE.to_vec();
            args.drain(i..i + 2);
            args
        };
        // (arguments after `--backend neutron`, a word the error must contain)
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec![], "--neutron-url"),
            (without("--username"), "--username"),
            (without("--password-file"), "--password-file"),
            (without("--project-name"), "--project-name"),
            (
                vec!["--neutron-url=http://n:9696", "--username=u"],
                "--username needs --auth-url",
            ),
            (
                vec!["--neutron-url=http://n:9696", "--interface=admin"],
                "--interface needs --auth-url",
            ),
            (vec!["--neutron-url=n:9696"], "http[s]://HOST"),
            (vec!["--neutron-url=http://n:9696/a b"], "character"),
            (vec!["--neutron-url=http://n:9696/x?y"], "query"),
            (vec!["--neutron-url=http://bad_host:9696"], "host"),
            (vec!["--neutron-url=http://n:0"], "http[s]://HOST"),
            (vec!["--interface=publicURL"], "public, internal, admin"),
            (vec!["--neutron-timeout=0"], "--neutron-timeout"),
            (vec!["--max-neutron-queries=0"], "accepted: 1 to 4096"),
            (vec!["--max-neutron-queries=4097"], "accepted: 1 to 4096"),
            (vec!["--username="], "empty"),
            (vec!["--password=hunter2"], "unknown option --password"),
            (
                vec!["--neutron-url=http://n:9696", "--static-map=/m"],
                "--static-map is a flag of --backend static",
            ),
        ];
        for (args, want) in cases {
            let e = neutron(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: wanted {want:?} in {e}");
        }
        // A neutron flag with the static backend is a mistake, not something to ignore.
        let mut args = REQUIRED.to_vec();
        args.push("--neutron-url=http://n:9696");
        let e = agent(&args).unwrap_err();
        assert!(
            e.contains("--neutron-url is a flag of --backend neutron"),
            "{e}"
        );
        let e = agent(&["--shared-secret-file=/s", "--backend=nova"]).unwrap_err();
        assert!(e.contains("static, neutron or ovn"), "{e}");
    }

    #[test]
    fn several_metadata_servers_and_what_keeps_them_serving() {
        let mut args = REQUIRED.to_vec();
        args.extend([
            "--metadata-url=http://192.0.2.1:8775",
            "--metadata-url",
            "http://192.0.2.2",
            "--metadata-probe-interval=2.5",
            "--request-deadline=3",
            "--response-cache-ttl=15",
            "--stale-if-error=600",
        ]);
        let cfg = agent(&args).unwrap();
        let urls: Vec<String> = cfg.metadata.iter().map(|m| m.to_string()).collect();
        assert_eq!(urls, ["http://192.0.2.1:8775", "http://192.0.2.2:80"]);
        assert_eq!(cfg.probe_interval, Some(Duration::from_millis(2500)));
        assert_eq!(cfg.request_deadline, Duration::from_secs(3));
        assert_eq!(cfg.response_cache_ttl, Duration::from_secs(15));
        assert_eq!(cfg.stale_if_error, Duration::from_secs(600));
        let twice = [
            REQUIRED.as_slice(),
            &["--metadata-url=http://a", "--metadata-url=http://a:80"],
        ]
        .concat();
        assert!(agent(&twice).unwrap_err().contains("given twice"));
        let stale = [REQUIRED.as_slice(), &["--stale-if-error=5"]].concat();
        assert!(agent(&stale)
            .unwrap_err()
            .contains("needs --response-cache-ttl"));
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
        ]);
        // The last runtime of the build: not the default where there are two.
        let rt = *Runtime::BUILT.last().unwrap();
        args.extend(["--runtime", rt.name()]);
        let cfg = agent(&args).unwrap();
        assert_eq!(cfg.process.runtime, rt);
        assert_eq!(cfg.listen_socket, PathBuf::from("/run/mp"));
        assert_eq!(
            (cfg.backlog, cfg.socket_mode, cfg.workers),
            (16, Some(SocketMode::All), 3)
        );
        assert_eq!(cfg.socket_mode.unwrap().bits(), 0o666);
        assert_eq!(
            cfg.metadata[0],
            MetadataUrl {
                https: false,
                host: "fd00::1".into(),
                port: 9000
            }
        );
        assert_eq!(cfg.metadata[0].to_string(), "http://[fd00::1]:9000");
        assert_eq!(cfg.cache_size.get(), 5);
        assert_eq!(cfg.cache_ttl, Duration::ZERO);
        assert_eq!(cfg.negative_ttl, Duration::from_millis(500));
        assert_eq!(cfg.endpoint.timeouts.connect, Duration::from_secs(2));
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
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_flags() {
        let got = metadata_url("--u", "https://nova.example").unwrap();
        assert_eq!((got.https, got.port), (true, 443));
        assert_eq!(got.to_string(), "https://nova.example:443");
        let mut args = REQUIRED.to_vec();
        args.extend([
            "--metadata-url=https://[::1]:8775",
            "--metadata-ca-file=/ca.pem",
            "--metadata-client-cert=/c.pem",
            "--metadata-client-key=/k.pem",
        ]);
        let cfg = agent(&args).unwrap();
        assert!(cfg.metadata[0].https);
        assert_eq!(cfg.metadata_tls.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            cfg.metadata_tls.client_cert,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
        assert!(!cfg.metadata_tls.insecure);
        let n = neutron(&[
            "--auth-url=https://ks.example/v3",
            "--username=u",
            "--password-file=/p",
            "--project-name=p",
            "--neutron-insecure",
        ])
        .unwrap();
        let ks = n.keystone.unwrap();
        assert!(ks.auth_url.https && ks.auth_url.port == 443);
        assert!(n.tls.insecure);
        // (extra flags, a word the error must contain)
        let cases: &[(&[&str], &str)] = &[
            (&["--metadata-ca-file=/ca.pem"], "need an https://"),
            (&["--metadata-insecure"], "need an https://"),
            (
                &["--metadata-url=https://n", "--metadata-client-cert=/c"],
                "needs --metadata-client-key",
            ),
            (
                &["--metadata-url=https://n", "--metadata-client-key=/k"],
                "needs --metadata-client-cert",
            ),
            (
                &[
                    "--metadata-url=https://n",
                    "--metadata-insecure",
                    "--metadata-ca-file=/c",
                ],
                "give one of them",
            ),
            (
                &["--neutron-insecure"],
                "--neutron-insecure is a flag of --backend neutron",
            ),
        ];
        for (extra, want) in cases {
            let args: Vec<&str> = REQUIRED.iter().chain(extra.iter()).copied().collect();
            let e = agent(&args).unwrap_err();
            assert!(e.contains(want), "{extra:?}: wanted {want:?} in {e}");
        }
        let cases: &[(&[&str], &str)] = &[
            (
                &["--neutron-url=http://n:9696", "--neutron-insecure"],
                "need an https://",
            ),
            (
                &[
                    "--neutron-url=https://n:9696",
                    "--neutron-insecure",
                    "--neutron-ca-file=/ca.pem",
                ],
                "give one of them",
            ),
        ];
        for (args, want) in cases {
            let e = neutron(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: wanted {want:?} in {e}");
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_flags_say_this_build_has_none() {
        let e = metadata_url("--metadata-url", "https://nova:8775").unwrap_err();
        assert!(e.contains("this build has no TLS"), "{e}");
        for extra in [
            "--metadata-insecure",
            "--metadata-ca-file=/ca.pem",
            "--metadata-client-cert=/c",
            "--metadata-client-key=/k",
        ] {
            let args: Vec<&str> = REQUIRED.iter().copied().chain([extra]).collect();
            let e = agent(&args).unwrap_err();
            assert!(e.contains("this build has no TLS"), "{extra}: {e}");
        }
        for extra in ["--auth-url=https://ks:5000", "--neutron-insecure"] {
            let e = neutron(&["--neutron-url=http://n:9696", extra]).unwrap_err();
            assert!(e.contains("this build has no TLS"), "{extra}: {e}");
        }
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
            &["--backend", "nova"],
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

    #[test]
    fn ovn_flags() {
        let base = ["--shared-secret-file=/s", "--backend=ovn"];
        let ok = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend(extra);
            agent(&args)
        };
        let a = ok(&["--ovn-sb-connection=tcp:192.0.2.1:6642"]).unwrap();
        let LookupBackend::Ovn(o) = &a.backend else {
            panic!("{:?}", a.backend)
        };
        assert_eq!(o.chassis, None);
        assert_eq!(o.ovs_db, "unix:/var/run/openvswitch/db.sock");
        assert_eq!(o.probe_interval, Duration::from_secs(60));
        let cases: &[(&[&str], &str)] = &[
            (&[], "needs --ovn-sb-connection"),
            (
                &["--ovn-sb-connection=ssl:192.0.2.1:6642"],
                "an ssl: remote needs",
            ),
            (
                &[
                    "--ovn-sb-connection=tcp:192.0.2.1:6642",
                    "--ovn-sb-private-key=/k",
                ],
                "go together",
            ),
            (&["--ovn-sb-connection="], "must not be empty"),
            (
                &["--ovn-sb-connection=tcp:1.2.3.4:1", "--static-map=/m"],
                "--static-map is a flag",
            ),
        ];
        for (extra, want) in cases {
            let e = ok(extra).unwrap_err();
            assert!(e.contains(want), "{extra:?}: wanted {want:?} in {e}");
        }
        let e = agent(&["--shared-secret-file=/s", "--static-map=/m", "--chassis=c"]).unwrap_err();
        assert!(e.contains("--chassis is a flag of --backend ovn"), "{e}");
    }
}
