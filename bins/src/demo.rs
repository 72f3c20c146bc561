//! `mdproxy demo`: the three roles in one process on loopback, each on its own event loop,
//! around the sample instance of `core/tests/golden/instance.toml`, in a temporary directory
//! that is removed on exit.

use std::fmt::Write as _;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mdproxy_core::agent::imds::DEFAULT_HOP_LIMIT;
use mdproxy_core::agent::{AgentImds, Issuer, StaticMap};
use mdproxy_core::config::{AgentConfig, Backend, NsProxyConfig, Resilience, Role};
use mdproxy_core::metadata::{parse_instance, Entropy, Format, ImdsV2, InstanceData};
use mdproxy_core::scope::{Scope, Uuid};
use mdproxy_core::sign::Signer;
use mdproxy_core::socket::Target;
use mdproxy_core::upstream::ServerSpec;

use crate::entropy::OsEntropy;
use crate::listen::{bind_tcp, bind_unix};
use crate::runtime::{Listener, Loop, Options};
use crate::secret::read_secret;
use crate::serve::{self, Serve, Work};
use crate::server::Server;
use crate::{cli, os, token_key, Failure};

/// The sample instance, one source of truth with the core's golden tests.
const SAMPLE: &str = include_str!("../../core/tests/golden/instance.toml");
/// The demo's router and its one network.
const ROUTER: &str = "de300000-0000-4000-8000-000000000001";
const NETWORK: &str = "de300000-0000-4000-8000-000000000002";

/// The demo: its files written, the server loaded, the agent's secret and map read.
pub struct Demo {
    args: cli::Demo,
    sample: InstanceData,
    dir: TempDir,
    socket: PathBuf,
    server: Server,
    signer: Signer,
    map: StaticMap,
    router: Uuid,
    /// The agent's IMDSv2 (optional, a random key): tokens at the agent, as in production.
    imds: AgentImds,
}

/// The three roles' listeners, and the addresses the instructions name.
pub struct Bound {
    server: Vec<Listener>,
    agent: (Listener, os::SocketFile),
    proxy: Vec<Listener>,
    server_addr: SocketAddr,
    proxy_addr: SocketAddr,
}

impl Serve for Demo {
    type Args = cli::Demo;
    type Bound = Bound;
    const NAME: &'static str = "demo";

    fn load(args: cli::Demo) -> Result<Demo, Failure> {
        let sample = parse_instance(SAMPLE, Format::Toml)
            .map_err(|e| Failure::System(format!("the bundled sample instance is invalid: {e}")))?;
        let dir = TempDir::create()?;
        let files = dir.populate(&sample)?;
        let server = Server::load(cli::Server {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            shared_secret_file: Some(files.secret.clone()),
            instances: files.instances.clone(),
            state_dir: files.state.clone(),
            rescan_interval: Duration::from_secs(2),
            secret_grace: Duration::ZERO,
            direct: false,
            imdsv2: ImdsV2::Optional,
            token_key_file: None,
            dhcp_domain: "novalocal".to_owned(),
            tls: None,
            endpoint: args.endpoint,
            drain_timeout: args.drain_timeout,
            process: cli::Process::default(),
        })?;
        let secret = read_secret(&files.secret, "shared secret").map_err(Failure::Config)?;
        let map = StaticMap::parse(&static_map(&sample))
            .map_err(|e| Failure::System(format!("the demo's static map is invalid: {e}")))?;
        let Some(router) = Uuid::parse(ROUTER.as_bytes()) else {
            return Err(Failure::System(
                "the demo's router id is invalid".to_owned(),
            ));
        };
        let entropy = OsEntropy::new().map_err(Failure::System)?;
        let tokens = token_key::tokens(None, entropy.as_ref()).map_err(Failure::System)?;
        let imds = AgentImds {
            mode: ImdsV2::Optional,
            scopes: Default::default(),
            issuer: Some(Issuer { tokens, entropy }),
            hop_limit: DEFAULT_HOP_LIMIT,
        };
        Ok(Demo {
            args,
            sample,
            dir,
            socket: files.socket,
            server,
            signer: Signer::new(&secret),
            map,
            router,
            imds,
        })
    }

    fn bind(&self) -> Result<Bound, Failure> {
        let server = self.server.bind()?;
        let agent = bind_unix(&self.socket, None, None)?;
        let proxy = bind_tcp(&[self.args.listen])?;
        let (Some(server_addr), Some(proxy_addr)) = (
            server.first().and_then(Listener::local_addr),
            proxy.first().and_then(Listener::local_addr),
        ) else {
            return Err(Failure::System("a listener has no address".to_owned()));
        };
        Ok(Bound {
            server,
            agent,
            proxy,
            server_addr,
            proxy_addr,
        })
    }

    fn describe(&self, b: &Bound) -> String {
        format!(
            "demo: ns-proxy on {} (router {ROUTER}) → agent on unix:{} → server on {}, \
             instance {} in {}",
            b.proxy_addr,
            self.socket.display(),
            b.server_addr,
            self.sample.uuid,
            self.dir.0.display(),
        )
    }

    fn work(self, b: Bound) -> Result<Work, Failure> {
        let agent = Role::Agent(AgentConfig {
            metadata: vec![ServerSpec::plain(
                Target::Tcp(b.server_addr),
                format!("http://{}", b.server_addr),
            )],
            resilience: Resilience::default(),
            signer: self.signer,
            backend: Backend::Static(self.map),
            cache_capacity: NonZeroUsize::MIN,
            cache_ttl: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(1),
            imds: self.imds,
        });
        let proxy = Role::NsProxy(NsProxyConfig {
            scope: Scope::Router(self.router),
            upstream: Target::Unix(self.socket),
            rate_limit: None,
            token_hop_limit: 1,
        });
        let proxy_args = cli::EndpointArgs {
            conns: cli::NS_PROXY_CONNS,
            ..self.args.endpoint
        };
        let drain_timeout = self.args.drain_timeout;
        let quiet = || Options {
            drain_timeout,
            ..Options::default()
        };
        // Nobody may read stdout (e.g. with --daemonize): the demo runs all the same.
        let _ = io::stdout()
            .lock()
            .write_all(instructions(b.proxy_addr, &self.sample).as_bytes());
        let (agent_listener, socket_file) = b.agent;
        let loops = vec![
            self.server.into_loop(b.server),
            Loop {
                cfg: serve::endpoint(agent, &self.args.endpoint, Default::default()),
                listeners: vec![agent_listener],
                options: quiet(),
            },
            Loop {
                cfg: serve::endpoint(proxy, &proxy_args, Default::default()),
                listeners: b.proxy,
                options: quiet(),
            },
        ];
        Ok(Work::each(loops).keeping(socket_file).keeping(self.dir))
    }
}

/// The agent's map: 127.0.0.1 and ::1 on the demo router are the sample instance.
fn static_map(sample: &InstanceData) -> String {
    format!(
        "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NETWORK}\"]\n\n\
         [[port]]\nnetwork = \"{NETWORK}\"\nips = [\"127.0.0.1\", \"::1\"]\n\
         device_id = \"{}\"\nproject_id = \"{}\"\n",
        sample.uuid, sample.project_id
    )
}

/// What to try, for stdout.
fn instructions(addr: SocketAddr, sample: &InstanceData) -> String {
    let url = format!("http://{addr}");
    let ec2_id = sample.ec2_id.as_deref().unwrap_or("its EC2 id");
    let mut out = format!(
        "\nmdproxy demo: instance {} ({}) answers through the ns-proxy on {url}\n\
         (what an instance sees at http://169.254.169.254). Try:\n\n",
        sample.uuid,
        sample.name.as_deref().unwrap_or("unnamed"),
    );
    for (what, cmd) in [
        ("the EC2 listing", format!("curl {url}/latest/meta-data/")),
        (
            &format!("the instance id ({ec2_id})"),
            format!("curl {url}/latest/meta-data/instance-id"),
        ),
        (
            "OpenStack metadata (JSON)",
            format!("curl {url}/openstack/latest/meta_data.json"),
        ),
        ("user data", format!("curl {url}/latest/user-data")),
        (
            "an IMDSv2 token",
            format!(
                "TOKEN=$(curl -s -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
                 {url}/latest/api/token)"
            ),
        ),
        (
            "a request with it",
            format!("curl -H \"X-aws-ec2-metadata-token: $TOKEN\" {url}/latest/meta-data/hostname"),
        ),
    ] {
        let _ = writeln!(out, "  # {what}\n  {cmd}\n");
    }
    out.push_str("Ctrl-C stops the demo.\n");
    out
}

/// The demo's files.
struct Files {
    instances: PathBuf,
    /// The server's `--state-dir` (created by the first posted password).
    state: PathBuf,
    secret: PathBuf,
    /// The agent's socket, which the ns-proxy connects to.
    socket: PathBuf,
}

/// A private temporary directory, removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<TempDir, Failure> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let name = format!("mdproxy-demo-{}-{nanos:08x}", std::process::id());
        let path = std::env::temp_dir().join(name);
        // Not `recursive`: the directory must be new, and ours alone.
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Failure::System(format!("cannot create {}: {e}", path.display())))?;
        Ok(TempDir(path))
    }

    /// Writes the sample instance and a random shared secret.
    fn populate(&self, sample: &InstanceData) -> Result<Files, Failure> {
        let files = Files {
            instances: self.0.join("instances"),
            state: self.0.join("state"),
            secret: self.0.join("shared-secret"),
            socket: self.0.join("agent.sock"),
        };
        let mut random = [0u8; 32];
        OsEntropy::new().map_err(Failure::System)?.fill(&mut random);
        let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let written = fs::create_dir(&files.instances)
            .and_then(|()| {
                let path = files.instances.join(format!("{}.toml", sample.uuid));
                fs::write(path, SAMPLE)
            })
            .and_then(|()| write_private(&files.secret, secret.as_bytes()));
        written
            .map_err(|e| Failure::System(format!("cannot write in {}: {e}", self.0.display())))?;
        Ok(files)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            log::warn!("cannot remove {}: {e}", self.0.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_and_map_parse() {
        let sample = parse_instance(SAMPLE, Format::Toml).unwrap();
        let map = StaticMap::parse(&static_map(&sample)).unwrap();
        assert_eq!(map.ports(), 1);
        assert!(
            Uuid::parse(ROUTER.as_bytes()).is_some() && Uuid::parse(NETWORK.as_bytes()).is_some()
        );
        let text = instructions("127.0.0.1:9697".parse().unwrap(), &sample);
        assert!(text.contains("curl http://127.0.0.1:9697/latest/meta-data/instance-id"));
        assert!(text.contains("i-0000002a"));
    }
}
