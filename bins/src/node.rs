//! `mdproxy node`: the agent loaded as for `mdproxy agent`, run in-process behind listeners
//! that a watcher thread adds and removes as the files of `--watch-dir` come and go (see
//! `node/watch.rs`) and, with the ovn backend, that the OVN provisioner's thread adds and
//! removes as networks come to this chassis and go (`node/ovn.rs`), both through
//! `node/listeners.rs`. One event loop serves every namespace: the listeners' command queue
//! (`mdproxy_shell::command_queue`) feeds one loop, and one lookup cache serves all scopes.

pub mod listeners;
mod ovn;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use mdproxy_core::config::Role;
use mdproxy_core::tls::EndpointTls;
use mdproxy_shell::command_queue;

use crate::agent::{Agent, InProcess};
use crate::runtime::Options;
use crate::serve::{self, Serve, Work};
use crate::{cli, Failure};

pub struct Node {
    agent: InProcess,
    watch_dir: Option<PathBuf>,
    /// With the ovn backend: what its provisioner needs.
    ovn: Option<ovn::Settings>,
    rescan: Duration,
    max_conns_per_network: usize,
    endpoint: cli::EndpointArgs,
    drain_timeout: Duration,
}

impl Serve for Node {
    type Args = cli::Node;
    /// Nothing is bound up front: the watcher binds each namespace's listeners.
    type Bound = ();
    const NAME: &'static str = "node";

    fn load(args: cli::Node) -> Result<Node, Failure> {
        if let Some(dir) = &args.watch_dir {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    let msg = format!("--watch-dir {} is not a directory", dir.display());
                    return Err(Failure::Config(msg));
                }
                Err(e) => {
                    let msg = format!("--watch-dir {}: {e}", dir.display());
                    return Err(Failure::Config(msg));
                }
            }
        }
        let ovn = match &args.agent.backend {
            cli::LookupBackend::Ovn(o) => Some(ovn::Settings {
                sb: o.sb_connection.clone(),
                sb_tls: (o.ssl.as_ref())
                    .map(crate::tls::ovn_client)
                    .transpose()
                    .map_err(Failure::Config)?,
                ovs: o.ovs_db.clone(),
                // `*` (every chassis) is for lookups; provisioning is this chassis'.
                chassis: o.chassis.clone().filter(|c| c != "*"),
                interval: args.ovn_poll,
                max_conns: args.max_conns_per_network,
            }),
            _ => None,
        };
        let (endpoint, drain_timeout) = (args.agent.endpoint, args.agent.drain_timeout);
        let mut agent = Agent::load(args.agent)?.into_in_process();
        agent.role.imds.hop_limit = args.token_hop_limit;
        Ok(Node {
            agent,
            watch_dir: args.watch_dir,
            ovn,
            rescan: args.rescan,
            max_conns_per_network: args.max_conns_per_network,
            endpoint,
            drain_timeout,
        })
    }

    fn bind(&self) -> Result<(), Failure> {
        Ok(())
    }

    fn describe(&self, _: &()) -> String {
        let mut served = Vec::new();
        if let Some(dir) = &self.watch_dir {
            served.push(format!(
                "the namespaces of {} (read every {:?})",
                dir.display(),
                self.rescan
            ));
        }
        if let Some(o) = &self.ovn {
            served.push(format!(
                "the OVN networks of this chassis, provisioned (Southbound read every {:?})",
                o.interval
            ));
        }
        format!(
            "node serving {}, {}, one event loop",
            served.join(" and "),
            self.agent.described,
        )
    }

    fn work(self, _: ()) -> Result<Work, Failure> {
        let (control, commands) = command_queue()
            .map_err(|e| Failure::System(format!("cannot make the listener queue: {e}")))?;
        let tls = EndpointTls {
            accept: None,
            // Each metadata server carries its own TLS (its name to check).
            upstream: None,
        };
        let endpoint = serve::endpoint(Role::Node(self.agent.role), &self.endpoint, tls);
        let options = Options {
            drain_timeout: self.drain_timeout,
            on_hangup: (self.agent.hangup)(),
            commands: Some(commands),
            ..Options::default()
        };
        let listeners = listeners::Listeners::new(control);
        if let Some(settings) = self.ovn {
            let theirs = listeners
                .try_clone()
                .map_err(|e| Failure::System(format!("cannot share the listener queue: {e}")))?;
            ovn::Provisioner::new(settings, theirs)
                .spawn()
                .map_err(|e| Failure::System(format!("cannot start OVN provisioning: {e}")))?;
        }
        if let Some(dir) = self.watch_dir {
            let watcher = watch::Watcher::new(dir, listeners, self.max_conns_per_network);
            watcher
                .spawn(self.rescan)
                .map_err(|e| Failure::System(format!("cannot start the directory watcher: {e}")))?;
        }
        Ok(Work::one(endpoint, Vec::new(), options))
    }
}
