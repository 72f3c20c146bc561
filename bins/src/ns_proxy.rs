//! `mdproxy ns-proxy`: binds the instance-facing TCP listeners and runs the namespace proxy.

use mdproxy_core::config::{EndpointConfig, NsProxyConfig, Role};
use mdproxy_core::http::Limits;
use mdproxy_core::scope::Scope;
use mdproxy_core::socket::Target;

use crate::runtime::Options;
use crate::server::bind_tcp;
use crate::{cli, metrics, start, Failure};

pub fn serve(cfg: cli::NsProxy) -> Result<(), Failure> {
    let rt = cfg.process.runtime;
    let (listeners, exporter, _pid_file) = start(&cfg.process, || bind_tcp(&cfg.listen))?;
    let addrs: Vec<String> = listeners.iter().map(ToString::to_string).collect();
    let scope = match cfg.scope {
        Scope::Router(id) => format!("router {id}"),
        Scope::Network(id) => format!("network {id}"),
    };
    log::info!(
        "ns-proxy for {scope} listening on {}, upstream unix:{} ({rt} runtime)",
        addrs.join(", "),
        cfg.upstream.display()
    );
    let endpoint = EndpointConfig {
        role: Role::NsProxy(NsProxyConfig {
            scope: cfg.scope,
            upstream: Target::Unix(cfg.upstream),
            max_conns: cfg.max_conns,
            max_conns_per_ip: cfg.max_conns_per_ip,
            rate_limit: cfg.rate_limit,
        }),
        limits: Limits::default(),
        conns: Default::default(),
        timeouts: cfg.timeouts,
        tls: Default::default(),
        metrics: None,
    };
    let opts = Options {
        drain_timeout: cfg.drain_timeout,
        on_hangup: Box::new(|| {
            log::info!("SIGHUP: the ns-proxy has nothing to reload");
            None
        }),
        ..Options::default()
    };
    metrics::run(rt, endpoint, listeners, opts, exporter)
        .map_err(|e| Failure::System(format!("event loop failed: {e}")))?;
    log::info!("ns-proxy stopped");
    Ok(())
}
