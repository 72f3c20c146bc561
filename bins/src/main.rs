//! `mdproxy`: the command-line front of mdproxy. It parses flags and runs the role asked for
//! through `serve.rs`, the one sequence of every role: logging, the files the role reads, the
//! process (pid file, daemon, privileges), the listeners, and an
//! [`EndpointConfig`](mdproxy_core::config::EndpointConfig) handed to the runtime `--runtime`
//! chose, through `runtime.rs`, the only module that knows which runtimes are compiled in.
//! Every protocol decision lives in `mdproxy-core`.

mod activation;
mod agent;
mod cli;
mod demo;
mod entropy;
mod handover;
mod listen;
mod log_batch;
mod metrics;
mod netns;
mod node;
mod node_register;
mod notify;
mod ns_proxy;
mod os;
mod ovn;
mod passwords;
mod provision;
mod reload;
mod runtime;
mod secret;
mod serve;
mod server;
mod system_id;
#[cfg(test)]
mod test_dir;
mod tls;
mod token_key;
mod trim;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Hidden: one provisioning round (`provision/mod.rs`), until `mdproxy node` drives it.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "provision") {
        return provision::main(args.split_off(2));
    }
    let command = match cli::parse(args) {
        Ok(command) => command,
        Err(msg) => {
            eprintln!("mdproxy: {msg}");
            return ExitCode::from(2);
        }
    };
    match command {
        cli::Command::Help(text) => print!("{text}"),
        cli::Command::Version => println!(
            "mdproxy {} (runtimes: {})",
            env!("CARGO_PKG_VERSION"),
            runtime::Runtime::names()
        ),
        cli::Command::NsProxy(cfg) => {
            return serve::main::<ns_proxy::NsProxy>(cfg.process.clone(), *cfg)
        }
        cli::Command::Agent(cfg) => return serve::main::<agent::Agent>(cfg.process.clone(), *cfg),
        cli::Command::NodeRegister(r) => return node_register::main(*r),
        cli::Command::Node(cfg) => {
            return serve::main::<node::Node>(cfg.agent.process.clone(), *cfg)
        }
        cli::Command::Server(cfg) => {
            return serve::main::<server::Server>(cfg.process.clone(), *cfg)
        }
        cli::Command::Demo(cfg) => return serve::main::<demo::Demo>(cfg.process.clone(), *cfg),
        cli::Command::CheckConfig(path) => match cli::check_config(&path) {
            Ok(report) => print!("{report}"),
            Err(msg) => {
                eprintln!("{msg}");
                return ExitCode::from(2);
            }
        },
    }
    ExitCode::SUCCESS
}

/// Why a role did not run: bad configuration (exit 2) or the system refused (exit 1).
pub enum Failure {
    Config(String),
    System(String),
}

impl Failure {
    fn message_and_code(self) -> (String, u8) {
        match self {
            Failure::Config(msg) => (msg, 2),
            Failure::System(msg) => (msg, 1),
        }
    }
}
