//! `mdproxy ns-proxy`: binds the instance-facing TCP listeners and runs the namespace proxy.

use mdproxy_core::config::{NsProxyConfig, Role};
use mdproxy_core::scope::Scope;
use mdproxy_core::socket::Target;

use crate::listen::bind_tcp;
use crate::runtime::{Listener, Options};
use crate::serve::{self, Serve, Work};
use crate::{cli, Failure};

/// The namespace proxy: nothing to read before it binds.
pub struct NsProxy(cli::NsProxy);

impl Serve for NsProxy {
    type Args = cli::NsProxy;
    type Bound = Vec<Listener>;
    const NAME: &'static str = "ns-proxy";

    fn load(args: cli::NsProxy) -> Result<NsProxy, Failure> {
        Ok(NsProxy(args))
    }

    fn bind(&self) -> Result<Vec<Listener>, Failure> {
        bind_tcp(&self.0.listen)
    }

    fn describe(&self, listeners: &Vec<Listener>) -> String {
        let addrs: Vec<String> = listeners.iter().map(ToString::to_string).collect();
        let scope = match self.0.scope {
            Scope::Router(id) => format!("router {id}"),
            Scope::Network(id) => format!("network {id}"),
            Scope::OvnNetwork(id) => format!("OVN network {id}"),
        };
        format!(
            "ns-proxy for {scope} listening on {}, upstream unix:{}",
            addrs.join(", "),
            self.0.upstream.display()
        )
    }

    fn work(self, listeners: Vec<Listener>) -> Result<Work, Failure> {
        let cfg = self.0;
        let role = Role::NsProxy(NsProxyConfig {
            scope: cfg.scope,
            upstream: Target::Unix(cfg.upstream),
            rate_limit: cfg.rate_limit,
            token_hop_limit: cfg.token_hop_limit,
        });
        let options = Options {
            drain_timeout: cfg.drain_timeout,
            on_hangup: Box::new(|| {
                log::info!("SIGHUP: the ns-proxy has nothing to reload");
                None
            }),
            ..Options::default()
        };
        let endpoint = serve::endpoint(role, &cfg.endpoint, Default::default());
        Ok(Work::one(endpoint, listeners, options))
    }
}
