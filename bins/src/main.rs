//! `mdproxy`: the command-line front of mdproxy. It parses flags, sets up logging and the
//! process (pid file, daemon, privileges), binds the listeners and hands them with an
//! [`EndpointConfig`] to a runtime. Every protocol decision lives in `mdproxy-core`.

mod cli;
mod os;

use std::process::ExitCode;

use mdproxy_core::cache::Scope;
use mdproxy_core::endpoint::{EndpointConfig, NsProxyConfig, Role, Target};
use mdproxy_core::http::Limits;
use mdproxy_mio::{Listener, RunOptions};

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os()) {
        Ok(command) => command,
        Err(msg) => {
            eprintln!("mdproxy: {msg}");
            return ExitCode::from(2);
        }
    };
    match command {
        cli::Command::Help(text) => print!("{text}"),
        cli::Command::Version => println!("mdproxy {} (runtimes: mio)", env!("CARGO_PKG_VERSION")),
        cli::Command::NotYet(role) => {
            eprintln!("mdproxy {role}: not implemented yet in this build");
            return ExitCode::from(2);
        }
        cli::Command::NsProxy(cfg) => return ns_proxy(*cfg),
    }
    ExitCode::SUCCESS
}

/// Why the proxy did not run: bad configuration (exit 2) or the system refused (exit 1).
enum Failure {
    Config(String),
    System(String),
}

fn ns_proxy(cfg: cli::NsProxy) -> ExitCode {
    let log_file = cfg.process.log_file.clone();
    if let Err(msg) = os::init_logging(log_file.as_deref(), cfg.process.debug) {
        eprintln!("mdproxy: {msg}");
        return ExitCode::from(1);
    }
    let (msg, code) = match serve(cfg) {
        Ok(()) => return ExitCode::SUCCESS,
        Err(Failure::Config(msg)) => (msg, 2),
        Err(Failure::System(msg)) => (msg, 1),
    };
    log::error!("{msg}");
    if log_file.is_some() {
        eprintln!("mdproxy: {msg}");
    }
    ExitCode::from(code)
}

fn serve(cfg: cli::NsProxy) -> Result<(), Failure> {
    let p = &cfg.process;
    for flag in &p.ignored {
        log::debug!("ignoring {flag}: mdproxy does not watch its log file");
    }
    let identity =
        os::resolve_identity(p.user.as_deref(), p.group.as_deref()).map_err(Failure::Config)?;
    let mut listeners = Vec::with_capacity(cfg.listen.len());
    for addr in &cfg.listen {
        let l = Listener::bind_tcp(*addr);
        listeners.push(l.map_err(|e| Failure::System(format!("cannot listen on {addr}: {e}")))?);
    }
    if p.daemonize {
        os::daemonize().map_err(|e| Failure::System(format!("cannot daemonize: {e}")))?;
    }
    let _pid_file = match &p.pid_file {
        Some(path) => Some(os::PidFile::write(path).map_err(|e| {
            Failure::System(format!("cannot write pid file {}: {e}", path.display()))
        })?),
        None => None,
    };
    os::drop_privileges(&identity)
        .map_err(|e| Failure::System(format!("cannot switch user/group: {e}")))?;

    let addrs: Vec<String> = listeners.iter().map(ToString::to_string).collect();
    let scope = match cfg.scope {
        Scope::Router(id) => format!("router {id}"),
        Scope::Network(id) => format!("network {id}"),
    };
    log::info!(
        "ns-proxy for {scope} listening on {}, upstream unix:{} (mio runtime)",
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
        timeouts: cfg.timeouts,
    };
    let opts = RunOptions {
        drain_timeout: cfg.drain_timeout,
        on_hangup: Box::new(|| log::info!("SIGHUP: the ns-proxy has nothing to reload")),
    };
    mdproxy_mio::run(endpoint, listeners, opts)
        .map_err(|e| Failure::System(format!("event loop failed: {e}")))?;
    log::info!("ns-proxy stopped");
    Ok(())
}
