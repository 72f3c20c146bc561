//! `mdproxy agent`: reads the secret and the backend's files, resolves the metadata server
//! (and Neutron and Keystone), claims and binds the Unix socket, and runs the agent on one or
//! more workers. SIGHUP reads the configuration again (`reload.rs`).

use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use mdproxy_core::agent::imds::DEFAULT_HOP_LIMIT;
use mdproxy_core::agent::{AgentImds, Issuer, StaticMap};
use mdproxy_core::config::{AgentConfig, Backend, Resilience, Role};
use mdproxy_core::lookup::{HttpTarget, KeystoneAuth, NeutronConfig};
use mdproxy_core::sign::Signer;
use mdproxy_core::socket::Target;
use mdproxy_core::tls::{ClientTls, EndpointTls, TlsTarget};
use mdproxy_core::upstream::{CacheLimits, ServerSpec};

use crate::entropy::OsEntropy;
use crate::listen::bind_unix;
use crate::reload::Reloader;
use crate::runtime::{Hook, Listener, Options};
use crate::secret::load_secret;
use crate::serve::{self, Serve, Work};
use crate::{cli, os, ovn, tls, token_key, Failure};

/// The agent, its files read and its metadata server resolved.
pub struct Agent {
    args: cli::Agent,
    role: AgentConfig,
    /// The metadata servers' addresses, resolved.
    metadata: Vec<SocketAddr>,
    /// The lookup backend, for the start-up line.
    backend: String,
    /// Makes each worker's SIGHUP hook.
    hangup: Box<dyn Fn() -> Hook>,
}

impl Serve for Agent {
    type Args = cli::Agent;
    /// The socket, and its file (removed when the agent ends).
    type Bound = (Listener, os::SocketFile);
    const NAME: &'static str = "agent";

    fn load(args: cli::Agent) -> Result<Agent, Failure> {
        let secret = load_secret(&args.shared_secret, "shared secret").map_err(Failure::Config)?;
        let (backend, described) = match &args.backend {
            cli::LookupBackend::Static(path) => {
                let map = load_map(path).map_err(Failure::Config)?;
                let described = format!("static map {} with {} ports", path.display(), map.ports());
                (Backend::Static(map), described)
            }
            cli::LookupBackend::Neutron(neutron) => {
                let cfg = neutron_config(neutron, args.cache_ttl).map_err(Failure::Config)?;
                let described = describe_neutron(neutron, &cfg);
                (Backend::Neutron(cfg), described)
            }
            cli::LookupBackend::Ovn(ovn) => {
                let (cfg, described) = ovn::config(ovn)?;
                (Backend::Ovn(cfg), described)
            }
        };
        let (specs, resilience) = metadata_servers(&args).map_err(Failure::Config)?;
        let metadata = (specs.iter())
            .filter_map(|s| match s.target {
                Target::Tcp(addr) => Some(addr),
                Target::Unix(_) => None,
            })
            .collect();
        let imds = agent_imds(&args).map_err(Failure::Config)?;
        if args.token_key_file.is_none() && imds.uses_tokens() {
            log::warn!(
                "no --token-key-file: IMDSv2 tokens are signed with a random key of this process; \
                 they do not survive a restart and no other agent accepts them"
            );
        }
        let reloader = Reloader::new(&args, &imds);
        let hangup: Box<dyn Fn() -> Hook> = Box::new(move || reloader.hook());
        let role = AgentConfig {
            metadata: specs,
            resilience,
            signer: Signer::new(&secret),
            backend,
            cache_capacity: args.cache_size,
            cache_ttl: args.cache_ttl,
            negative_ttl: args.negative_ttl,
            imds,
        };
        Ok(Agent {
            args,
            role,
            metadata,
            backend: described,
            hangup,
        })
    }

    fn bind(&self) -> Result<Self::Bound, Failure> {
        let a = &self.args;
        bind_unix(&a.listen_socket, a.socket_mode, Some(a.backlog))
    }

    fn describe(&self, (listener, _): &Self::Bound) -> String {
        let a = &self.args;
        let cache = match &self.role.resilience.response_cache {
            Some(c) => format!(
                ", response cache {}s (stale {}s)",
                c.ttl.as_secs_f64(),
                c.stale_if_error.as_secs_f64()
            ),
            None => String::new(),
        };
        format!(
            "agent listening on {listener}, {}, request deadline {}s{cache}, {}, {} worker(s)",
            self.servers_text(),
            a.request_deadline.as_secs_f64(),
            self.backend,
            a.workers,
        )
    }

    fn work(self, (listener, socket_file): Self::Bound) -> Result<Work, Failure> {
        // Each metadata server carries its own TLS (its name to check).
        let tls = EndpointTls {
            accept: None,
            upstream: None,
        };
        // The OVN replica's snapshots are the agent's one large transient (see trim.rs).
        let trims = matches!(self.role.backend, Backend::Ovn(_));
        let endpoint = serve::endpoint(Role::Agent(self.role), &self.args.endpoint, tls);
        let (drain_timeout, hangup) = (self.args.drain_timeout, self.hangup);
        let hooks = move || Options {
            drain_timeout,
            on_hangup: hangup(),
            tick: trims.then(|| (crate::trim::INTERVAL, crate::trim::hook())),
            ..Options::default()
        };
        let work = Work::workers(self.args.workers, endpoint, vec![listener], hooks);
        Ok(work.keeping(socket_file))
    }
}

/// What a role that runs the agent in-process (the node) takes from a loaded agent.
pub struct InProcess {
    /// Each metadata server in it carries its own TLS.
    pub role: AgentConfig,
    /// Makes the SIGHUP hook (re-reads the static map).
    pub hangup: Box<dyn Fn() -> Hook>,
    /// The metadata server and the backend, for the start-up line.
    pub described: String,
}

impl Agent {
    /// `metadata server(s) URL (ADDR, TLS), …`, for the start-up line.
    fn servers_text(&self) -> String {
        let a = &self.args;
        let servers: Vec<String> = (a.metadata.iter().zip(&self.metadata))
            .map(|(url, addr)| {
                format!("{url} ({addr}{})", describe_tls(&a.metadata_tls, url.https))
            })
            .collect();
        let plural = if servers.len() > 1 { "s" } else { "" };
        format!("metadata server{plural} {}", servers.join(", "))
    }

    /// The agent's settings without its socket, for the node.
    pub fn into_in_process(self) -> InProcess {
        let described = format!("{}, {}", self.servers_text(), self.backend);
        InProcess {
            role: self.role,
            hangup: self.hangup,
            described,
        }
    }
}

/// `--imdsv2`, `--imdsv2-scope` and the token keys: the key file's, or one random key drawn
/// here, before the workers start, so that every worker accepts every worker's tokens. Keys
/// are made even when every mode is off: a static map reloaded later may turn a scope on.
pub(crate) fn agent_imds(args: &cli::Agent) -> Result<AgentImds, String> {
    let mut imds = AgentImds {
        mode: args.imdsv2,
        scopes: args.imdsv2_scopes.clone(),
        issuer: None,
        hop_limit: DEFAULT_HOP_LIMIT,
    };
    let entropy = OsEntropy::new()?;
    let tokens = token_key::tokens(args.token_key_file.as_deref(), entropy.as_ref())?;
    imds.issuer = Some(Issuer { tokens, entropy });
    Ok(imds)
}

/// The metadata servers of `args`, resolved and with their TLS, and their resilience
/// settings (at start, and again on a SIGHUP that changed them).
pub(crate) fn metadata_servers(args: &cli::Agent) -> Result<(Vec<ServerSpec>, Resilience), String> {
    let mut specs = Vec::new();
    for url in &args.metadata {
        let name = url.to_string();
        let addr = resolve("--metadata-url", &name, &url.host, url.port)?;
        let tls = metadata_tls(args, url)?;
        specs.push(ServerSpec {
            target: Target::Tcp(addr),
            name,
            tls,
        });
    }
    let response_cache = (!args.response_cache_ttl.is_zero()).then_some(CacheLimits {
        ttl: args.response_cache_ttl,
        stale_if_error: args.stale_if_error,
        max_entries: RESPONSE_CACHE_ENTRIES,
        max_bytes: RESPONSE_CACHE_BYTES,
    });
    let resilience = Resilience {
        probe_interval: args.probe_interval,
        request_deadline: Some(args.request_deadline),
        response_cache,
    };
    Ok((specs, resilience))
}

/// TLS to the metadata server, for an https `--metadata-url`: the files read, the name its
/// certificate must carry checked.
fn metadata_tls(cfg: &cli::Agent, url: &cli::MetadataUrl) -> Result<Option<TlsTarget>, String> {
    if !url.https {
        return Ok(None);
    }
    let client = tls::client(&cfg.metadata_tls, "--metadata")?;
    let target = TlsTarget::new(client, &url.host);
    target
        .map(Some)
        .map_err(|e| format!("--metadata-url {url}: {e}"))
}

/// The response cache's bounds, per worker: Nova's answers are a few KiB, so the bytes bound
/// is the one that holds when user-data is large.
const RESPONSE_CACHE_ENTRIES: NonZeroUsize = match NonZeroUsize::new(10_000) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};
const RESPONSE_CACHE_BYTES: usize = 32 << 20;

/// TLS for the neutron backend: needed for an https URL or when TLS flags were given; when
/// Neutron's URL comes from the catalog, which may name an https endpoint, the system's CAs
/// are used if there are any (and that endpoint fails, saying why, if there are none).
fn neutron_tls(args: &cli::NeutronArgs) -> Result<Option<ClientTls>, String> {
    let urls = [
        args.neutron_url.as_ref(),
        args.keystone.as_ref().map(|k| &k.auth_url),
    ];
    let https = urls.into_iter().flatten().any(|u| u.https);
    let from_catalog = args.neutron_url.is_none();
    if https || args.tls.given() || (from_catalog && tls::system_roots_present()) {
        return tls::client(&args.tls, "--neutron").map(Some);
    }
    Ok(None)
}

/// ` over TLS (…)` for the startup line, or nothing for plain HTTP.
fn describe_tls(args: &cli::ClientTlsArgs, https: bool) -> String {
    if !https {
        return String::new();
    }
    let check = match (&args.ca_file, args.insecure) {
        (_, true) => "certificate NOT checked".to_owned(),
        (Some(ca), false) => format!("CA {}", ca.display()),
        (None, false) => "system CAs".to_owned(),
    };
    match &args.client_cert {
        Some((cert, _)) => format!(", TLS: {check}, client certificate {}", cert.display()),
        None => format!(", TLS: {check}"),
    }
}

/// The neutron backend's settings: URLs resolved, the password read. The router-networks
/// cache lives as long as the instance cache.
fn neutron_config(args: &cli::NeutronArgs, cache_ttl: Duration) -> Result<NeutronConfig, String> {
    let neutron = match &args.neutron_url {
        Some(url) => Some(target("--neutron-url", url)?),
        None => None,
    };
    let keystone = match &args.keystone {
        Some(ks) => {
            let password = load_secret(&ks.password, "password")?;
            let password = String::from_utf8(password).map_err(|_| match &ks.password {
                cli::Secret::File(path) => format!("password file {} is not UTF-8", path.display()),
                cli::Secret::Inline { from, .. } => format!("the password of {from} is not UTF-8"),
            })?;
            Some(KeystoneAuth {
                endpoint: target("--auth-url", &ks.auth_url)?,
                username: ks.username.clone(),
                password,
                project_name: ks.project_name.clone(),
                user_domain_name: ks.user_domain_name.clone(),
                project_domain_name: ks.project_domain_name.clone(),
            })
        }
        None => None,
    };
    let mut cfg = NeutronConfig::new(neutron, keystone);
    cfg.tls = neutron_tls(args)?;
    cfg.interface = args.interface.to_owned();
    cfg.region = args.region_name.clone();
    cfg.timeout = args.timeout;
    cfg.max_in_flight = args.max_in_flight;
    cfg.router_networks_ttl = cache_ttl;
    Ok(cfg)
}

/// For the startup log line: where Neutron is and who we are to Keystone (never the password).
fn describe_neutron(args: &cli::NeutronArgs, cfg: &NeutronConfig) -> String {
    let at = match (&args.neutron_url, &cfg.neutron) {
        (Some(url), Some(t)) => format!("{url} ({})", t.addr),
        _ => {
            let region = args
                .region_name
                .as_deref()
                .map_or(String::new(), |r| format!(" in region {r}"));
            format!(
                "the {} endpoint{region} of Keystone's catalog",
                args.interface
            )
        }
    };
    let auth = match (&args.keystone, &cfg.keystone) {
        (Some(ks), Some(auth)) => format!(
            "Keystone {} ({}) as user {} ({}) in project {} ({})",
            ks.auth_url,
            auth.endpoint.addr,
            ks.username,
            ks.user_domain_name,
            ks.project_name,
            ks.project_domain_name
        ),
        _ => "no authentication".to_owned(),
    };
    let urls = [
        args.neutron_url.as_ref(),
        args.keystone.as_ref().map(|k| &k.auth_url),
    ];
    let https = urls.into_iter().flatten().any(|u| u.https);
    format!(
        "neutron backend at {at}, {auth}, timeout {:?}{}",
        args.timeout,
        describe_tls(&args.tls, https)
    )
}

/// Reads and parses a static map; errors read `FILE:LINE: message`.
pub(crate) fn load_map(path: &Path) -> Result<StaticMap, String> {
    let shown = path.display();
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read static map {shown}: {e}"))?;
    StaticMap::parse(&text).map_err(|e| match e.line {
        0 => format!("{shown}: {}", e.problem),
        line => format!("{shown}:{line}: {}", e.problem),
    })
}

/// `host:port` resolved once (the core never resolves names); `flag` and `url` name it in
/// errors.
fn resolve(flag: &str, url: &str, host: &str, port: u16) -> Result<SocketAddr, String> {
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{flag} {url}: cannot resolve {host}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{flag} {url}: {host} has no address"))
}

/// A Neutron or Keystone URL as the lookup client takes it: resolved, `Host` as written.
fn target(flag: &str, url: &cli::ServiceUrl) -> Result<HttpTarget, String> {
    let addr = resolve(flag, &url.url, &url.host, url.port)?;
    HttpTarget::parse_resolved(&url.url, addr).map_err(|e| format!("{flag}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mdp-agent-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn neutron_settings_from_flags() {
        let password = temp("password", "hunter2\n");
        let argv = [
            "mdproxy",
            "agent",
            "--shared-secret-file=/dev/null",
            "--backend=neutron",
            "--neutron-url=http://localhost:9696/networking/",
            "--auth-url=http://127.0.0.1:5000/v3",
            "--username=neutron",
            &format!("--password-file={}", password.display()),
            "--project-name=service",
            "--region-name=RegionTwo",
            "--interface=internal",
            "--neutron-timeout=3",
            "--cache-ttl=7",
        ];
        let Ok(cli::Command::Agent(agent)) = cli::parse(argv.map(Into::into)) else {
            panic!("{argv:?} did not parse");
        };
        let cli::LookupBackend::Neutron(args) = &agent.backend else {
            panic!("{:?}", agent.backend);
        };
        let cfg = neutron_config(args, agent.cache_ttl).unwrap();
        let neutron = cfg.neutron.as_ref().unwrap();
        assert!(neutron.addr.ip().is_loopback(), "{neutron:?}");
        assert_eq!(neutron.addr.port(), 9696);
        assert_eq!(
            (neutron.host.as_str(), neutron.path_prefix.as_str()),
            ("localhost:9696", "/networking")
        );
        let ks = cfg.keystone.as_ref().unwrap();
        assert_eq!(ks.endpoint.addr, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(ks.endpoint.path_prefix, "/v3");
        assert_eq!(ks.password, "hunter2");
        assert_eq!(
            (cfg.interface.as_str(), cfg.region.as_deref()),
            ("internal", Some("RegionTwo"))
        );
        assert_eq!(cfg.timeout, Duration::from_secs(3));
        assert_eq!(cfg.router_networks_ttl, Duration::from_secs(7));
        let shown = format!("{cfg:?} {}", describe_neutron(args, &cfg));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("at http://localhost:9696/networking/ (127.0.0.1:9696)"),
            "{shown}"
        );
    }

    #[test]
    fn map_errors_name_file_and_line() {
        let path = temp("bad.toml", "[[router]]\nid = \"r\"\nbogus = 1\n");
        let e = load_map(&path).unwrap_err();
        assert!(e.starts_with(&format!("{}:3: ", path.display())), "{e}");
    }
}
