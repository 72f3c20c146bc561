//! `mdproxy`: the command-line front of mdproxy. It parses flags, sets up logging and the
//! process (pid file, daemon, privileges), binds the listeners and hands them with an
//! [`EndpointConfig`](mdproxy_core::config::EndpointConfig) to the runtime `--runtime` chose,
//! through `runtime.rs`, the only module that knows which runtimes are compiled in. Every
//! protocol decision lives in `mdproxy-core`.

mod agent;
mod cli;
mod demo;
mod log_batch;
mod metrics;
mod notify;
mod ns_proxy;
mod os;
mod passwords;
mod runtime;
mod server;
#[cfg(test)]
mod test_dir;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

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
        cli::Command::Version => println!(
            "mdproxy {} (runtimes: {})",
            env!("CARGO_PKG_VERSION"),
            runtime::Runtime::names()
        ),
        cli::Command::NsProxy(cfg) => {
            let logging = (cfg.process.log_file.clone(), cfg.process.debug);
            return launch(logging, move || ns_proxy::serve(*cfg));
        }
        cli::Command::Agent(cfg) => {
            let logging = (cfg.process.log_file.clone(), cfg.process.debug);
            return launch(logging, move || agent::serve(*cfg));
        }
        cli::Command::Server(cfg) => {
            let logging = (cfg.process.log_file.clone(), cfg.process.debug);
            return launch(logging, move || server::serve(*cfg));
        }
        cli::Command::Demo(cfg) => {
            let logging = (cfg.process.log_file.clone(), cfg.process.debug);
            return launch(logging, move || demo::serve(*cfg));
        }
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

/// Starts logging (to `log_file`, at debug level if asked), runs a role and turns how it ended
/// into the exit status. Errors go to the log, and to stderr too when the log is a file.
fn launch(
    (log_file, debug): (Option<PathBuf>, bool),
    serve: impl FnOnce() -> Result<(), Failure>,
) -> ExitCode {
    if let Err(failure) = os::init_logging(log_file.as_deref(), debug) {
        let (msg, code) = failure.message_and_code();
        eprintln!("mdproxy: {msg}");
        return ExitCode::from(code);
    }
    let (msg, code) = match serve() {
        Ok(()) => {
            log::logger().flush();
            return ExitCode::SUCCESS;
        }
        Err(failure) => failure.message_and_code(),
    };
    // An error is written at once, with every line before it.
    log::error!("{msg}");
    if log_file.is_some() {
        eprintln!("mdproxy: {msg}");
    }
    ExitCode::from(code)
}

/// The process setup every role shares, around `bind`: `--user`/`--group` are resolved before
/// it (while /etc is readable), `--metrics-listen` is bound after it, then the process
/// daemonizes, writes its pid file, drops privileges and tells systemd it is ready
/// (`Type=notify`). Returns what `bind` made, the metrics exporter, and the pid file, which is
/// removed when dropped.
fn start<T>(
    p: &cli::Process,
    bind: impl FnOnce() -> Result<T, Failure>,
) -> Result<(T, Option<metrics::Exporter>, Option<os::PidFile>), Failure> {
    for line in &p.ignored {
        log::debug!("{line}");
    }
    let identity =
        os::resolve_identity(p.user.as_deref(), p.group.as_deref()).map_err(Failure::Config)?;
    os::raise_fd_limit();
    let bound = bind()?;
    let exporter = metrics::Exporter::bind(p)?;
    if p.daemonize {
        os::daemonize().map_err(|e| Failure::System(format!("cannot daemonize: {e}")))?;
    }
    let pid_file = match &p.pid_file {
        Some(path) => Some(os::PidFile::write(path).map_err(|e| {
            Failure::System(format!("cannot write pid file {}: {e}", path.display()))
        })?),
        None => None,
    };
    os::drop_privileges(&identity)
        .map_err(|e| Failure::System(format!("cannot switch user/group: {e}")))?;
    os::batch_logs();
    notify::ready();
    Ok((bound, exporter, pid_file))
}
