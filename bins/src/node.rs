//! `mdproxy node`: the agent loaded as for `mdproxy agent`, run in-process behind listeners
//! that a watcher thread adds and removes as the files of `--watch-dir` come and go (see
//! `node/watch.rs`) through `node/listeners.rs`, the API a provisioner uses too. One event loop serves every namespace: the listeners' command queue
//! (`mdproxy_shell::command_queue`) feeds one loop, and one lookup cache serves all scopes.

pub mod listeners;
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
    watch_dir: PathBuf,
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
        let dir = &args.watch_dir;
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
        let (endpoint, drain_timeout) = (args.agent.endpoint, args.agent.drain_timeout);
        let mut agent = Agent::load(args.agent)?.into_in_process();
        agent.role.imds.hop_limit = args.token_hop_limit;
        Ok(Node {
            agent,
            watch_dir: args.watch_dir,
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
        format!(
            "node serving the namespaces of {} (read every {:?}), {}, one event loop",
            self.watch_dir.display(),
            self.rescan,
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
        let watcher = watch::Watcher::new(self.watch_dir, listeners, self.max_conns_per_network);
        watcher
            .spawn(self.rescan)
            .map_err(|e| Failure::System(format!("cannot start the directory watcher: {e}")))?;
        Ok(Work::one(endpoint, Vec::new(), options))
    }
}
