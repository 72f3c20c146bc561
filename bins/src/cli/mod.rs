//! Command-line parsing: the `mdproxy` subcommands, the flags every role shares (process,
//! logging, timeouts, request limits) and each role's own flags, including the legacy Neutron spellings, and
//! the configuration files that give the same settings (`config.rs`). No socket or
//! user-database access; the only files read are the configuration files named.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::Arg::{Long, Short, Value};
use mdproxy_core::config::{ConnLimits, Timeouts};
use mdproxy_core::http::Limits;
use mdproxy_core::scope::Uuid;

use crate::runtime::Runtime;
use args::Args;
use config::Role;

mod agent;
mod args;
mod config;
mod demo;
mod ini;
mod node;
mod node_register;
mod ns_proxy;
mod range;
mod server;
mod unit;

pub use agent::{
    Agent, ClientTlsArgs, LookupBackend, MetadataUrl, NeutronArgs, OvnArgs, OvnSsl, Secret,
    ServiceUrl, SocketMode,
};
pub use config::check as check_config;
pub use demo::Demo;
pub use node::Node;
pub use node_register::Register;
pub use ns_proxy::{NsProxy, NS_PROXY_CONNS};
pub use server::{Server, ServerTlsArgs};
pub use unit::{listen_addr, parse_unit, Unit};

pub const TOP_HELP: &str = "\
mdproxy: cloud-instance metadata proxy (OpenStack Neutron/Nova compatible)

Usage: mdproxy [--config FILE] <COMMAND> [OPTIONS]
       mdproxy check-config FILE

Commands:
  ns-proxy   Namespace proxy: serves instances in one router or network namespace and relays
             their requests to the metadata agent's Unix socket (replaces Neutron's haproxy /
             neutron-ns-metadata-proxy)
  agent      Metadata agent: resolves which instance a proxied request comes from, signs its
             ID and relays the request to the metadata server (replaces
             neutron-metadata-agent)
  node       Namespace proxy and agent in one process: serves every router and network
             namespace named in a watched directory, with the agent's lookup and signing
             in-process (one hop instead of ns-proxy + agent)
  node-register
             Hold one router's or network's registration with a node (what the haproxy
             shim execs in node mode; Neutron's process monitor watches it)
  server     Metadata server: serves instance metadata from files as Nova's metadata API
             does, plus IMDSv2 tokens (replaces nova-api-metadata)
  demo       All three roles on loopback with a sample instance, and the curl commands to try
  check-config FILE
             Check a configuration file (TOML, or Neutron's INI for the agent): exit 0, or
             exit 2 with `FILE:LINE: message` for its first error

Options:
      --config FILE  Settings for the command from a TOML file: its top level and [common]
                     table (every role's flags) and the command's table ([ns-proxy], [agent],
                     [server], [demo]); keys are the long flags' names, flags given on the
                     command line override them (example: mdproxy.example.toml)
  -h, --help         Print this help (`mdproxy <COMMAND> --help` for a command's options)
  -V, --version      Print the version and the runtimes compiled in

Invoked as `neutron-ns-metadata-proxy` (e.g. through a symlink), mdproxy runs `ns-proxy` and,
like that tool, daemonizes unless told --nodaemonize; as `neutron-metadata-agent`, it runs
`agent`.
";

/// The help sections of the flags [`Common`] parses; `$upstream` names what the role connects
/// to (`$Upstream` capitalised). A macro so that `concat!` can splice it into each role's help.
macro_rules! common_help {
    ($upstream:literal, $Upstream:literal) => {
        concat!(
            "\
Request limits (what a client may send; beyond them it gets the status shown, and the
connection closes):
      --max-head-bytes N         Request line and header fields, in bytes (431)
                                 [default: 16384; 1024 to 1048576]
      --max-headers N            Header fields in one request (431)
                                 [default: 100; 8 to 1000]
      --max-body-bytes N         Request body, in bytes, after chunked decoding (413)
                                 [default: 65536; 1024 to 16777216]
      --max-chunk-line-bytes N   One chunk-size line of a chunked body, and its trailer
                                 section, in bytes (400) [default: 1024; 64 to 65536]

Timeouts (in seconds; fractions allowed):
      --timeout-head S           A client must send a whole request head within S (408)
                                 [default: 30; 0.001 to 86400 seconds]
      --timeout-idle S           Idle keep-alive client connections close after S
                                 [default: 30; 0.001 to 86400 seconds]
      --timeout-connect S        Connecting to ",
            $upstream,
            " may take S (504)
                                 [default: 30; 0.001 to 86400 seconds]
      --timeout-response S       ",
            $Upstream,
            " must answer, and keep sending,
                                 within S (504) [default: 60; 0.001 to 86400 seconds]
      --drain-timeout S          After SIGTERM, exit once in-flight requests finish or after S
                                 [default: 10; 0 to 86400 seconds]

Process:
",
            $crate::runtime::runtime_help!(),
            "      --pid-file PATH            Write the process id here once listening; removed on exit
      --user USER                Switch to this user (name or uid) after binding;
                                 supplementary groups are cleared
      --group GROUP              Switch to this group (name or gid) after binding
                                 [default with --user: the user's primary group; required
                                 for a uid with no passwd entry]
      --daemonize                Fork into the background, detached from the terminal (stdio
                                 goes to /dev/null: use --log-file)
      --nodaemonize              Stay in the foreground (the default)
      --metrics-listen ADDR:PORT Serve Prometheus metrics on ADDR:PORT at /metrics, and
                                 health for probes: /live (every event loop turns) and
                                 /ready (started, and the lookup backend answers), 200 or
                                 503 with JSON naming each check; on the agent and the
                                 node, /explain?router=R&ip=IP (or network=, ovn-network=):
                                 what that instance's request would get, as JSON, found
                                 without forwarding anything. Alias: --admin-listen.
                                 Keep it on loopback, or give a path (/run/mdproxy/x.admin):
                                 a Unix socket only its owner may connect to [default: off]
      --handover-socket PATH     Listen on this Unix socket for a successor started with
                                 --upgrade (same user or root) [default: off]
      --upgrade                  Start as the successor of the process at --handover-socket:
                                 take its listening sockets, start, then it drains and exits
                                 (no connection refused or reset). If this process fails
                                 before it serves, the old one keeps serving

Logging (to stderr unless --log-file; once serving, info lines are written in batches, at most
0.25 s late; warnings and errors at once, and everything when the process exits):
      --log-file PATH            Append log lines to PATH (relative to --log-dir if given)
      --log-dir DIR              Directory for a relative --log-file; alone: DIR/mdproxy.log
      --verbose                  Log at info level (the default; accepted for compatibility)
      --debug                    Log at debug level
                                 RUST_LOG, when set, overrides both (e.g. RUST_LOG=warn)
  -h, --help                     Print this help

Every flag may also be spelled with underscores (--pid_file), and take its value as
`--flag=value` or `--flag value`. Flags may also come from a TOML file, `mdproxy --config FILE
<COMMAND>`, as keys of its [common] table or the command's table; flags given here override
it (mdproxy.example.toml shows every role). A number outside the range its flag shows is
refused, wherever it is set (exit 2).
"
        )
    };
}
pub(crate) use common_help;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print this text to stdout and exit 0.
    Help(&'static str),
    Version,
    NsProxy(Box<NsProxy>),
    Agent(Box<Agent>),
    Node(Box<Node>),
    /// `node-register`: hold a registration with a node (no configuration file).
    NodeRegister(Box<Register>),
    Server(Box<Server>),
    Demo(Box<Demo>),
    /// `check-config FILE`.
    CheckConfig(PathBuf),
}

/// Where `--metrics-listen` (`--admin-listen`) serves: a TCP address, or a Unix socket (a
/// value that starts with `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for AdminListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminListen::Tcp(addr) => write!(f, "{addr}"),
            AdminListen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Settings of the process rather than of a role.
#[derive(Clone, Debug, Default)]
pub struct Process {
    /// `--runtime`.
    pub runtime: Runtime,
    pub pid_file: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub daemonize: bool,
    pub log_file: Option<PathBuf>,
    pub debug: bool,
    /// `--metrics-listen`: where the process's metrics are served, if anywhere.
    pub metrics_listen: Option<AdminListen>,
    /// `--handover-socket`: where a successor (`--upgrade`) asks for the listeners.
    pub handover_socket: Option<PathBuf>,
    /// `--upgrade`: take the listeners of the process at `handover_socket`.
    pub upgrade: bool,
    /// Debug lines about settings accepted but not used (a flag that does nothing here, a key
    /// of Neutron's INI files mdproxy does not take).
    pub ignored: Vec<String>,
}

/// What a role's endpoint takes from the flags besides the role's own settings: the limits on
/// what clients send and on connections, and the timeouts. Every role's `EndpointConfig` is
/// made of one of these, in one place (`serve::endpoint`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointArgs {
    /// `--max-head-bytes`, `--max-headers`, `--max-body-bytes`, `--max-chunk-line-bytes`.
    pub limits: Limits,
    /// `--max-conns` and `--max-conns-per-ip`, where the role takes them.
    pub conns: ConnLimits,
    /// `--timeout-*`.
    pub timeouts: Timeouts,
}

/// The flags every role takes (see [`common_help`]), collected while a role's flags are parsed.
#[derive(Debug)]
pub struct Common {
    pub process: Process,
    /// The role's parser sets the connection limits, whose defaults differ by role.
    pub endpoint: EndpointArgs,
    pub drain_timeout: Duration,
    log_dir: Option<PathBuf>,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            process: Process::default(),
            endpoint: EndpointArgs::default(),
            drain_timeout: Duration::from_secs(10),
            log_dir: None,
        }
    }
}

impl Common {
    /// Takes the flag `name` (spelled `flag` on the command line) if it is a shared one;
    /// `Ok(false)` leaves it to the role.
    fn parse(&mut self, name: &str, flag: &str, p: &mut Args) -> Result<bool, String> {
        let (t, process) = (&mut self.endpoint.timeouts, &mut self.process);
        let l = &mut self.endpoint.limits;
        match name {
            "runtime" => {
                process.runtime =
                    Runtime::parse(&value(p, flag)?).map_err(|e| format!("{flag}: {e}"))?
            }
            "max-head-bytes" => l.max_head = range::HEAD_BYTES.parse(flag, &value(p, flag)?)?,
            "max-headers" => l.max_headers = range::HEADERS.parse(flag, &value(p, flag)?)?,
            "max-body-bytes" => l.max_body = range::BODY_BYTES.parse(flag, &value(p, flag)?)?,
            "max-chunk-line-bytes" => {
                l.max_chunk_line = range::CHUNK_LINE_BYTES.parse(flag, &value(p, flag)?)?
            }
            "timeout-head" => t.head = range::TIMEOUT.parse(flag, &value(p, flag)?)?,
            "timeout-idle" => t.idle = range::TIMEOUT.parse(flag, &value(p, flag)?)?,
            "timeout-connect" => t.connect = range::TIMEOUT.parse(flag, &value(p, flag)?)?,
            "timeout-response" => t.response = range::TIMEOUT.parse(flag, &value(p, flag)?)?,
            "drain-timeout" => {
                self.drain_timeout = range::DRAIN_TIMEOUT.parse(flag, &value(p, flag)?)?
            }
            "pid-file" => process.pid_file = Some(value(p, flag)?.into()),
            "user" => process.user = Some(value(p, flag)?),
            "group" => process.group = Some(value(p, flag)?),
            "daemonize" => process.daemonize = switch(p, flag)?,
            "nodaemonize" => process.daemonize = !switch(p, flag)?,
            "metrics-listen" | "admin-listen" => {
                let v = value(p, flag)?;
                process.metrics_listen = Some(match v.starts_with('/') {
                    true => AdminListen::Unix(v.into()),
                    false => AdminListen::Tcp(ns_proxy::addr(flag, &v)?),
                })
            }
            "handover-socket" => process.handover_socket = Some(value(p, flag)?.into()),
            "upgrade" => process.upgrade = switch(p, flag)?,
            "log-file" => process.log_file = Some(value(p, flag)?.into()),
            "log-dir" => self.log_dir = Some(value(p, flag)?.into()),
            "verbose" => {
                switch(p, flag)?;
            }
            "debug" => process.debug = switch(p, flag)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Resolves `--log-dir` against `--log-file`.
    fn finish(mut self) -> Common {
        self.process.log_file = match (self.process.log_file.take(), self.log_dir.take()) {
            (Some(file), Some(dir)) => Some(dir.join(file)),
            (None, Some(dir)) => Some(dir.join("mdproxy.log")),
            (file, None) => file,
        };
        self
    }
}

/// The command line the process was started with, for [`reparse`].
static STARTED_WITH: std::sync::OnceLock<Vec<OsString>> = std::sync::OnceLock::new();

/// Parses the whole command line, program name included, and the configuration files it
/// names. The first command line parsed is kept for [`reparse`].
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let args: Vec<OsString> = args.into_iter().collect();
    let _ = STARTED_WITH.set(args.clone());
    parse_args(args)
}

/// The command line the process was started with.
pub fn started_with() -> Vec<OsString> {
    STARTED_WITH.get().cloned().unwrap_or_default()
}

/// Parses `args` (e.g. [`started_with`] again, on SIGHUP), reading the files they name; keeps
/// nothing.
pub fn parse_args(args: Vec<OsString>) -> Result<Command, String> {
    let mut p = lexopt::Parser::from_iter(args);
    match p.bin_name() {
        Some(n) if n.ends_with("neutron-ns-metadata-proxy") => {
            return config::run(Role::NsProxy, true, None, p)
        }
        Some(n) if n.ends_with("neutron-metadata-agent") => {
            return config::run(Role::Agent, false, None, p)
        }
        _ => {}
    }
    let mut config = None;
    loop {
        let role = match p.next().map_err(|e| e.to_string())? {
            Some(Long("config")) => {
                config = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?));
                continue;
            }
            Some(Short('h') | Long("help")) => return Ok(Command::Help(TOP_HELP)),
            Some(Short('V') | Long("version")) => return Ok(Command::Version),
            Some(Value(cmd)) => match cmd.to_str() {
                Some("ns-proxy") => Role::NsProxy,
                Some("agent") => Role::Agent,
                Some("node") => Role::Node,
                Some("node-register") if config.is_none() => {
                    return node_register::parse_register(p)
                }
                Some("server") => Role::Server,
                Some("demo") => Role::Demo,
                Some("check-config") if config.is_none() => return check_config_args(p),
                _ => return Err(format!("unknown command {cmd:?} (try --help)")),
            },
            Some(arg) => {
                return Err(format!(
                    "{} before the command (try --help)",
                    unexpected(&arg)
                ))
            }
            None => return Err("missing command (try --help)".to_owned()),
        };
        return config::run(role, false, config, p);
    }
}

/// `check-config FILE`.
fn check_config_args(mut p: lexopt::Parser) -> Result<Command, String> {
    let usage = "usage: mdproxy check-config FILE";
    let file = match p.next().map_err(|e| e.to_string())? {
        Some(Value(file)) => PathBuf::from(file),
        Some(Short('h') | Long("help")) => return Ok(Command::Help(TOP_HELP)),
        _ => return Err(usage.to_owned()),
    };
    match p.next().map_err(|e| e.to_string())? {
        None => Ok(Command::CheckConfig(file)),
        Some(_) => Err(format!("{usage} (one file)")),
    }
}

fn unexpected(arg: &lexopt::Arg<'_>) -> String {
    match arg {
        Short(c) => format!("unknown option -{c}"),
        Long(name) => format!("unknown option --{name}"),
        Value(v) => format!("unexpected argument {v:?}"),
    }
}

/// The next setting of a role: its canonical name (`-h` is `help`, underscores become
/// dashes) and how to quote it in messages (`--name`, or a file's `` `name` ``); `None` at the
/// end.
fn next_flag(p: &mut Args) -> Result<Option<(String, String)>, String> {
    p.next_flag()
}

/// The value of `flag`, as UTF-8.
fn value(p: &mut Args, flag: &str) -> Result<String, String> {
    p.value(flag)
}

/// A switch (`--debug`): on when given on the command line; a file says `true` or `false`.
fn switch(p: &mut Args, flag: &str) -> Result<bool, String> {
    p.switch(flag)
}

/// Refuses a TLS flag (or an https URL) in a build without the `tls` feature.
fn needs_tls(what: &str) -> Result<(), String> {
    match cfg!(feature = "tls") {
        true => Ok(()),
        false => Err(format!(
            "{what}: this build has no TLS (it was built without the `tls` feature)"
        )),
    }
}

fn uuid(flag: &str, v: &str) -> Result<Uuid, String> {
    Uuid::parse(v.as_bytes()).ok_or_else(|| format!("{flag}: {v:?} is not a UUID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn top_level() {
        assert!(matches!(
            cmd(&["mdproxy", "--help"]),
            Ok(Command::Help(TOP_HELP))
        ));
        assert!(matches!(cmd(&["mdproxy", "-V"]), Ok(Command::Version)));
        assert!(matches!(cmd(&["mdproxy", "demo"]), Ok(Command::Demo(_))));
        for bad in [&["mdproxy"][..], &["mdproxy", "nope"], &["mdproxy", "--x"]] {
            assert!(cmd(bad).is_err(), "{bad:?}");
        }
    }

    /// The request limits: `Limits::default()` unless given (as the help says), and every
    /// role takes them.
    #[test]
    fn request_limits() {
        let d = Limits::default();
        for (flag, default) in [
            ("--max-head-bytes", d.max_head),
            ("--max-headers", d.max_headers),
            ("--max-body-bytes", d.max_body as usize),
            ("--max-chunk-line-bytes", d.max_chunk_line),
        ] {
            let help = ns_proxy::HELP;
            let at = help.find(&format!("{flag} N")).expect(flag);
            // The flag's entry: up to the next flag's.
            let end = help[at + 2..].find("--").map_or(help.len(), |i| at + 2 + i);
            let shown = &help[at..end];
            assert!(
                shown.contains(&format!("[default: {default};")),
                "{flag}: {shown}"
            );
        }
        let limits = |role: &str, extra: &[&str]| {
            let required: &[&str] = match role {
                "ns-proxy" => &["--router-id=0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01"],
                "agent" => &["--shared-secret-file=/s", "--static-map=/m"],
                "server" => &["--instances=/i", "--direct"],
                _ => &[],
            };
            let argv: Vec<&str> = ["mdproxy", role]
                .iter()
                .chain(required)
                .chain(extra)
                .copied()
                .collect();
            match cmd(&argv) {
                Ok(Command::NsProxy(c)) => c.endpoint.limits,
                Ok(Command::Agent(c)) => c.endpoint.limits,
                Ok(Command::Server(c)) => c.endpoint.limits,
                Ok(Command::Demo(c)) => c.endpoint.limits,
                other => panic!("{role} {extra:?}: {other:?}"),
            }
        };
        let given = [
            "--max-head-bytes=2048",
            "--max_headers=9",
            "--max-body-bytes=4096",
            "--max-chunk-line-bytes=128",
        ];
        let want = Limits {
            max_head: 2048,
            max_headers: 9,
            max_body: 4096,
            max_chunk_line: 128,
        };
        for role in ["ns-proxy", "agent", "server", "demo"] {
            assert_eq!(limits(role, &[]), d, "{role}");
            assert_eq!(limits(role, &given), want, "{role}");
        }
    }

    #[test]
    fn role_help_includes_the_shared_sections() {
        for role in ["ns-proxy", "agent", "server", "demo"] {
            let Ok(Command::Help(text)) = cmd(&["mdproxy", role, "-h"]) else {
                panic!("{role} -h")
            };
            for flag in ["--timeout-connect", "--pid-file", "--log-dir", "--runtime"] {
                assert!(text.contains(flag), "{role} --help lacks {flag}");
            }
        }
    }
}
