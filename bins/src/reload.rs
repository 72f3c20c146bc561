//! SIGHUP for the agent (and the node, which runs the agent in-process): the whole
//! configuration is read again — the command line as it was given, the TOML and Neutron INI
//! files it names, the secret, token key and static map files — and whatever of it can change
//! without dropping a connection is handed to the running endpoints
//! ([`mdproxy_core::config::AgentReload`]): the shared secret, the IMDSv2 modes and keys, the
//! static map, the lookup cache's lifetimes, the request limits and timeouts, the connection
//! limits (from the next accept: a lower one never closes a connection already open), the
//! metadata servers with their TLS, probe interval and request deadline (requests in flight
//! finish where they are; a plain-HTTP server named again keeps its health and pool), the log
//! level.
//! A file with an error refuses the whole reload (logged with its `FILE:LINE` where the parser
//! gives one) and the running configuration stays. A changed setting that needs a restart
//! (the socket, the workers, the response cache, the lookup backend's connection, …) is
//! logged as such and kept.
//!
//! Every worker runs the hook on its own thread; the first to see a SIGHUP reads the files
//! and the others take its result, so one signal is one read and every worker applies the
//! same configuration.

use std::ffi::OsString;
use std::sync::{Arc, Mutex, PoisonError};

use log::LevelFilter;
use mdproxy_core::agent::{AgentImds, Issuer};
use mdproxy_core::config::{AgentReload, Reload};
use mdproxy_core::sign::Signer;

use crate::runtime::Hook;
use crate::secret::load_secret;
use crate::{agent, cli};

/// Reads the configuration again on SIGHUP: see the [module docs](self).
pub struct Reloader {
    running: Arc<Running>,
    /// The number of the last SIGHUP read, and what it gave (`None`: refused).
    last: Arc<Mutex<(u64, Option<Reload>)>>,
}

/// What the reload compares with or keeps from the running configuration.
struct Running {
    /// The command line read again.
    argv: Vec<OsString>,
    restart_only: Vec<(&'static str, String)>,
    debug: bool,
    /// Without a key file, the random key of this process: kept, so that a reload does not
    /// invalidate every token issued.
    random_issuer: Option<Issuer>,
    /// The node's (a node flag, not an agent one).
    hop_limit: u8,
    /// The metadata servers' settings last applied ([`servers_text`]): a reload that leaves
    /// them alone leaves the endpoints' server sets alone.
    servers: Mutex<String>,
}

impl Reloader {
    /// For an agent started with `args` (parsed from the process's command line), whose
    /// IMDSv2 settings came out as `imds`.
    pub fn new(args: &cli::Agent, imds: &AgentImds) -> Reloader {
        Reloader::of(cli::started_with(), args, imds)
    }

    /// [`Reloader::new`] for an agent parsed from `argv`.
    fn of(argv: Vec<OsString>, args: &cli::Agent, imds: &AgentImds) -> Reloader {
        let random_issuer = match &args.token_key_file {
            None => imds.issuer.clone(),
            Some(_) => None,
        };
        let running = Running {
            argv,
            restart_only: restart_only(args),
            debug: args.process.debug,
            random_issuer,
            hop_limit: imds.hop_limit,
            servers: Mutex::new(servers_text(args)),
        };
        Reloader {
            running: Arc::new(running),
            last: Arc::new(Mutex::new((0, None))),
        }
    }

    /// One worker's SIGHUP hook.
    pub fn hook(&self) -> Hook {
        let (running, last) = (self.running.clone(), self.last.clone());
        let mut hangups = 0u64;
        Box::new(move || {
            hangups += 1;
            let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.0 < hangups {
                let reload = match read(&running) {
                    Ok(reload) => Some(Reload::Agent(Box::new(reload))),
                    Err(e) => {
                        log::error!("SIGHUP: {e}; the running configuration stays");
                        None
                    }
                };
                *last = (hangups, reload);
            }
            last.1.clone()
        })
    }
}

/// Parses the command line again and reads the files it names.
fn read(running: &Running) -> Result<AgentReload, String> {
    let args = match cli::parse_args(running.argv.clone())? {
        cli::Command::Agent(args) => *args,
        cli::Command::Node(node) => node.agent,
        _ => return Err("the command line no longer names the agent".into()),
    };
    let secret = load_secret(&args.shared_secret, "shared secret")?;
    let static_map = match &args.backend {
        cli::LookupBackend::Static(path) => Some(agent::load_map(path)?),
        _ => None,
    };
    let mut imds = agent::agent_imds(&args)?;
    if args.token_key_file.is_none() {
        if let Some(issuer) = &running.random_issuer {
            imds.issuer = Some(issuer.clone());
        }
    }
    imds.hop_limit = running.hop_limit;
    let text = servers_text(&args);
    let mut applied = running
        .servers
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let servers = match *applied == text {
        true => None,
        false => Some(agent::metadata_servers(&args)?),
    };
    warn_restart_only(&running.restart_only, restart_only(&args));
    apply_debug(running.debug, args.process.debug);
    if servers.is_some() {
        *applied = text;
        let urls: Vec<String> = args.metadata.iter().map(|u| u.to_string()).collect();
        log::info!("SIGHUP: metadata servers now {}", urls.join(", "));
    }
    log::info!(
        "SIGHUP: configuration read again: shared secret, IMDSv2 ({}), {}{}lookup cache lifetimes, limits, connection limits and timeouts applied",
        describe_imds(&args),
        if static_map.is_some() { "static map, " } else { "" },
        if servers.is_some() { "metadata servers, " } else { "" },
    );
    Ok(AgentReload {
        signer: Signer::new(&secret),
        imds,
        static_map,
        cache_ttl: args.cache_ttl,
        negative_ttl: args.negative_ttl,
        limits: args.endpoint.limits,
        timeouts: args.endpoint.timeouts,
        conns: args.endpoint.conns,
        servers,
    })
}

/// The settings of the metadata servers that a reload applies, as a text to compare.
fn servers_text(a: &cli::Agent) -> String {
    format!(
        "{:?} {:?} {:?} {:?}",
        a.metadata, a.metadata_tls, a.probe_interval, a.request_deadline
    )
}

fn describe_imds(args: &cli::Agent) -> String {
    let keys = match &args.token_key_file {
        Some(path) => format!("keys from {}", path.display()),
        None => "this process's key".to_owned(),
    };
    format!("{:?}, {keys}", args.imdsv2).to_lowercase()
}

/// Logs each setting of `was` (a restart-only list) that `now` changed: kept as it was.
pub(crate) fn warn_restart_only(was: &[(&'static str, String)], now: Vec<(&'static str, String)>) {
    for ((what, was), (_, now)) in was.iter().zip(now) {
        if *was != now {
            log::warn!("SIGHUP: {what} changed; that takes a restart: kept as it was");
        }
    }
}

/// `--debug` read again: the log level follows it, unless `RUST_LOG` decides the level.
pub(crate) fn apply_debug(was: bool, now: bool) {
    if was != now && std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(match now {
            true => LevelFilter::Debug,
            false => LevelFilter::Info,
        });
    }
}

/// The process settings no role takes in place, as one entry of a restart-only list.
pub(crate) fn process_settings(p: &cli::Process) -> (&'static str, String) {
    let process = (
        &p.runtime.to_string(),
        &p.pid_file,
        &p.user,
        &p.group,
        p.daemonize,
        &p.log_file,
        &p.metrics_listen,
        &p.handover_socket,
    );
    (
        "a process setting (runtime, pid file, user, group, log file, metrics)",
        format!("{process:?}"),
    )
}

/// The settings a running agent cannot take in place, each with a text to compare.
fn restart_only(a: &cli::Agent) -> Vec<(&'static str, String)> {
    vec![
        ("--listen-socket", format!("{:?}", a.listen_socket)),
        ("--backlog", a.backlog.to_string()),
        ("--socket-mode", format!("{:?}", a.socket_mode)),
        ("--workers", a.workers.to_string()),
        (
            "--response-cache-ttl/--stale-if-error",
            format!("{:?} {:?}", a.response_cache_ttl, a.stale_if_error),
        ),
        ("the lookup backend's settings", format!("{:?}", a.backend)),
        ("--cache-size", a.cache_size.to_string()),
        ("--drain-timeout", format!("{:?}", a.drain_timeout)),
        process_settings(&a.process),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::{Path, PathBuf};

    fn temp(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mdp-reload-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, contents).unwrap();
        path
    }

    /// `mdproxy agent` with `flags` (none of them read yet).
    fn agent_args(flags: &[String]) -> (Vec<OsString>, cli::Agent) {
        let mut argv: Vec<OsString> = ["mdproxy", "agent"].map(OsString::from).to_vec();
        argv.extend(flags.iter().map(OsString::from));
        let cli::Command::Agent(args) = cli::parse_args(argv.clone()).unwrap() else {
            panic!("not the agent")
        };
        (argv, *args)
    }

    /// Flags that parse, naming files nobody reads.
    fn some_agent() -> cli::Agent {
        agent_args(&["--shared-secret-file=/s".into(), "--static-map=/m".into()]).1
    }

    /// An agent on `map` and `secret`, and its reloader.
    fn reloader(map: &Path, secret: &Path, extra: &[&str]) -> Reloader {
        let mut flags = vec![
            format!("--shared-secret-file={}", secret.display()),
            format!("--static-map={}", map.display()),
        ];
        flags.extend(extra.iter().map(|s| s.to_string()));
        let (argv, args) = agent_args(&flags);
        let imds = agent::agent_imds(&args).unwrap();
        Reloader::of(argv, &args, &imds)
    }

    #[test]
    fn workers_share_one_read_per_hangup_and_a_bad_file_refuses_it_all() {
        let (map, secret) = (temp("m.toml", ""), temp("s", "one\n"));
        let r = reloader(&map, &secret, &[]);
        let (mut a, mut b) = (r.hook(), r.hook());
        let Some(Reload::Agent(first)) = a() else {
            panic!("no reload")
        };
        assert_eq!(
            first.signer.sign("i").as_str(),
            Signer::new(b"one").sign("i").as_str()
        );
        fs::write(&secret, "two\n").unwrap();
        fs::write(&map, "[[router]]\nid = \"bad\"\n").unwrap();
        // b's first SIGHUP is the one `a` already read: it takes that, not the new files.
        let Some(Reload::Agent(same)) = b() else {
            panic!("no reload")
        };
        assert_eq!(
            same.signer.sign("i").as_str(),
            Signer::new(b"one").sign("i").as_str()
        );
        // The second: a bad map refuses the whole reload, the new secret too.
        assert!(a().is_none() && b().is_none());
        fs::write(&map, "").unwrap();
        let Some(Reload::Agent(third)) = a() else {
            panic!("no reload")
        };
        assert_eq!(
            third.signer.sign("i").as_str(),
            Signer::new(b"two").sign("i").as_str()
        );
    }

    #[test]
    fn a_random_token_key_survives_a_reload() {
        let (map, secret) = (temp("m2.toml", ""), temp("s2", "s\n"));
        let r = reloader(&map, &secret, &["--imdsv2=required"]);
        let kept = r.running.random_issuer.clone().expect("a random key");
        let now = std::time::Instant::now();
        let ttl = std::time::Duration::from_secs(60);
        let token = kept.tokens.issue(now, ttl, "i-1", kept.entropy.as_ref());
        let Some(Reload::Agent(got)) = r.hook()() else {
            panic!("no reload")
        };
        let reloaded = got.imds.issuer.expect("tokens still on");
        assert!(reloaded.tokens.check(now, token.as_bytes(), "i-1").is_ok());
        // Whereas a key drawn again would not know it.
        let other = agent::agent_imds(&some_agent())
            .unwrap()
            .issuer
            .expect("a key");
        assert!(other.tokens.check(now, token.as_bytes(), "i-1").is_err());
    }

    #[test]
    fn every_restart_only_setting_has_a_name_of_its_own() {
        let names: Vec<&str> = restart_only(&some_agent())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.contains(&"--workers") && names.contains(&"--cache-size"));
        assert!(!names.contains(&"--metadata-url"), "applied in place");
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "a name twice");
    }
}
