//! The one sequence every role runs, written once: logging starts; the role loads and checks
//! what it reads (secrets, maps, instance files), so that a bad file stops it before anything
//! is bound; [`start`] binds its listeners and the metrics exporter, daemonizes, writes the pid
//! file and drops privileges; one log line says what runs; the event loops run with the role's
//! hooks until SIGTERM. A role supplies only what differs, as a [`Serve`].

use std::any::Any;
use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mdproxy_core::config::{EndpointConfig, Role};
use mdproxy_core::health;
use mdproxy_core::metrics::Metrics;
use mdproxy_core::tls::EndpointTls;

use crate::metrics::Exporter;
use crate::runtime::{Listener, Loop, Options, Runtime};
use crate::{activation, cli, handover, metrics, notify, os, Failure};

/// What one role brings to [`main`]; each method is one step of the sequence.
pub trait Serve: Sized {
    /// The role's command-line settings.
    type Args;
    /// What the role binds before privileges are dropped.
    type Bound;
    /// The role's name, for the line that says it stopped.
    const NAME: &'static str;

    /// Reads and checks everything the role needs before it binds.
    fn load(args: Self::Args) -> Result<Self, Failure>;
    /// Binds the role's listeners (still with the privileges the process began with).
    fn bind(&self) -> Result<Self::Bound, Failure>;
    /// The start-up log line: what runs, where (the runtime is appended).
    fn describe(&self, bound: &Self::Bound) -> String;
    /// The event loops to run on what was bound.
    fn work(self, bound: Self::Bound) -> Result<Work, Failure>;
}

/// The event loops of a role, and what must outlive them.
pub struct Work {
    loops: Loops,
    /// Dropped after the loops end: the agent's socket file, the demo's directory.
    keep: Vec<Box<dyn Any>>,
}

enum Loops {
    /// One loop (the server's tokens and passwords live in one endpoint's memory).
    One(Loop),
    /// One endpoint on `workers` threads sharing its listeners, each with hooks of its own.
    Workers {
        workers: usize,
        cfg: EndpointConfig,
        listeners: Vec<Listener>,
        hooks: Box<dyn FnMut() -> Options>,
    },
    /// Loops of their own (the demo's three roles).
    Each(Vec<Loop>),
}

impl Work {
    pub fn one(cfg: EndpointConfig, listeners: Vec<Listener>, options: Options) -> Work {
        Work::from(Loops::One(Loop {
            cfg,
            listeners,
            options,
        }))
    }

    /// `workers` copies of `cfg` sharing `listeners`, each worker with its own `hooks()`.
    pub fn workers(
        workers: usize,
        cfg: EndpointConfig,
        listeners: Vec<Listener>,
        hooks: impl FnMut() -> Options + 'static,
    ) -> Work {
        Work::from(Loops::Workers {
            workers,
            cfg,
            listeners,
            hooks: Box::new(hooks),
        })
    }

    pub fn each(loops: Vec<Loop>) -> Work {
        Work::from(Loops::Each(loops))
    }

    /// The descriptors of every listener of the loops.
    fn listener_fds(&self) -> Vec<RawFd> {
        let fds = |ls: &[Listener]| ls.iter().map(AsRawFd::as_raw_fd).collect::<Vec<_>>();
        match &self.loops {
            Loops::One(l) => fds(&l.listeners),
            Loops::Workers { listeners, .. } => fds(listeners),
            Loops::Each(loops) => loops.iter().flat_map(|l| fds(&l.listeners)).collect(),
        }
    }

    /// Keeps `value` until the loops have ended.
    pub fn keeping(mut self, value: impl Any) -> Work {
        self.keep.push(Box::new(value));
        self
    }

    fn run(self, rt: Runtime, exporter: Option<Exporter>) -> Result<(), Failure> {
        let loops = match &self.loops {
            Loops::One(_) => 1,
            Loops::Workers { workers, .. } => *workers,
            Loops::Each(loops) => loops.len(),
        };
        let health = exporter.as_ref().map(Exporter::metrics);
        if let Some(metrics) = &health {
            metrics.health().started();
        }
        let mut manager = Manager::new(loops, health);
        let ran = match self.loops {
            Loops::One(l) => {
                let options = manager.wrap(l.options);
                metrics::run(rt, l.cfg, l.listeners, options, exporter)
            }
            Loops::Workers {
                workers,
                cfg,
                listeners,
                mut hooks,
            } => {
                let hooks = move || manager.wrap(hooks());
                metrics::run_workers(rt, workers, cfg, listeners, hooks, exporter)
            }
            Loops::Each(loops) => {
                let loops = (loops.into_iter())
                    .map(|l| Loop {
                        options: manager.wrap(l.options),
                        ..l
                    })
                    .collect();
                metrics::run_loops(rt, loops, exporter)
            }
        };
        drop(self.keep);
        ran.map_err(|e| Failure::System(format!("event loop failed: {e}")))
    }
}

/// What the service manager and the admin listener hear from the loops (`notify.rs`,
/// `mdproxy_core::health`): a SIGHUP is framed by `RELOADING=1` and `READY=1`, the drain
/// starts with `STOPPING=1`; with `WatchdogSec=` each `WATCHDOG=1` waits until **every** loop
/// has turned since the last one, so that one stuck worker is caught even while the others
/// serve; with an admin listener each loop reports its turns for `/live` and `/ready`.
struct Manager {
    watchdog: Option<(Duration, Arc<Beats>)>,
    health: Option<Arc<Metrics>>,
    next_loop: usize,
}

/// Which loops have ticked since the last `WATCHDOG=1`.
struct Beats {
    loops: usize,
    ticked: Mutex<BTreeSet<usize>>,
}

impl Manager {
    fn new(loops: usize, health: Option<Arc<Metrics>>) -> Manager {
        let watchdog = notify::watchdog_interval().map(|every| {
            let ticked = Mutex::new(BTreeSet::new());
            (every, Arc::new(Beats { loops, ticked }))
        });
        Manager {
            watchdog,
            health,
            next_loop: 0,
        }
    }

    /// `options` with the notifications around its hooks; call once per loop.
    fn wrap(&mut self, mut options: Options) -> Options {
        let mut on_hangup = options.on_hangup;
        options.on_hangup = Box::new(move || {
            notify::reloading();
            let reload = on_hangup();
            notify::ready();
            reload
        });
        let mut on_stop = options.on_stop;
        options.on_stop = Box::new(move || {
            notify::stopping();
            on_stop();
        });
        let every = match (&self.watchdog, &self.health) {
            (None, None) => return options,
            (Some((every, _)), None) => *every,
            (Some((every, _)), Some(_)) => (*every).min(health::TURN_INTERVAL),
            (None, Some(_)) => health::TURN_INTERVAL,
        };
        let beats = self.watchdog.as_ref().map(|(_, beats)| beats.clone());
        let (health, me) = (self.health.clone(), self.next_loop);
        self.next_loop += 1;
        // The role's own tick keeps its contract: called on the loop's first turn, then when
        // its interval has passed, however often the reports wake the loop.
        let mut role_tick = (options.tick.take()).map(|(interval, hook)| (interval, hook, None));
        let interval = role_tick.as_ref().map_or(every, |(i, ..)| every.min(*i));
        options.tick = Some((
            interval,
            Box::new(move || {
                if let Some(beats) = &beats {
                    beats.beat(me);
                }
                if let Some(metrics) = &health {
                    metrics.health().turned(me, Instant::now());
                }
                let (interval, hook, last) = role_tick.as_mut()?;
                if last.is_some_and(|at: Instant| at.elapsed() < *interval) {
                    return None;
                }
                *last = Some(Instant::now());
                hook()
            }),
        ));
        options
    }
}

impl Beats {
    /// Loop `me` turned; the last loop to turn since the previous ping sends the next one.
    fn beat(&self, me: usize) {
        let Ok(mut ticked) = self.ticked.lock() else {
            return;
        };
        ticked.insert(me);
        if ticked.len() >= self.loops {
            ticked.clear();
            notify::watchdog();
        }
    }
}

impl From<Loops> for Work {
    fn from(loops: Loops) -> Work {
        Work {
            loops,
            keep: Vec::new(),
        }
    }
}

/// The endpoint of `role` with the limits, connection limits and timeouts of the flags: the
/// one place a role's [`EndpointConfig`] is made.
pub fn endpoint(role: Role, args: &cli::EndpointArgs, tls: EndpointTls) -> EndpointConfig {
    EndpointConfig {
        role,
        limits: args.limits,
        conns: args.conns,
        timeouts: args.timeouts,
        tls,
        metrics: None,
        admin: None,
    }
}

/// Runs role `R` with `args` (whose process settings are `process`) and turns how it ended
/// into the exit status.
pub fn main<R: Serve>(process: cli::Process, args: R::Args) -> ExitCode {
    let logging = (process.log_file.clone(), process.debug);
    launch(logging, move || serve::<R>(&process, args))
}

fn serve<R: Serve>(process: &cli::Process, args: R::Args) -> Result<(), Failure> {
    let rt = process.runtime;
    let role = R::load(args)?;
    let (bound, exporter, started) = start(process, || role.bind())?;
    log::info!("{} ({rt} runtime)", role.describe(&bound));
    let work = role.work(bound)?;
    if let Some(offer) = started.offer {
        let mut fds = work.listener_fds();
        fds.extend(exporter.as_ref().map(Exporter::raw_fd));
        offer.serve(fds);
    }
    if let Some(taken) = started.taken {
        taken.ready();
    }
    work.run(rt, exporter)?;
    log::info!("{} stopped", R::NAME);
    Ok(())
}

/// What [`start`] leaves for the rest of the run besides the role's sockets.
struct Started {
    /// Removed when dropped.
    _pid_file: Option<os::PidFile>,
    /// `--handover-socket`, to serve once the listeners are known.
    offer: Option<handover::Offer>,
    /// `--upgrade`: the predecessor, told once we serve.
    taken: Option<handover::Taken>,
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
) -> Result<(T, Option<Exporter>, Started), Failure> {
    // One line, so the settings a deployment's files carry for other agents are seen once.
    if !p.ignored.is_empty() {
        log::info!(
            "{} settings not used: {}",
            p.ignored.len(),
            p.ignored.join("; ")
        );
    }
    let identity =
        os::resolve_identity(p.user.as_deref(), p.group.as_deref()).map_err(Failure::Config)?;
    os::raise_fd_limit();
    let mut passed = activation::take_from_env().map_err(Failure::System)?;
    let taken = match (p.upgrade, &p.handover_socket) {
        (false, _) => None,
        (true, None) => {
            let msg = "--upgrade needs --handover-socket PATH (the running process's)";
            return Err(Failure::Config(msg.into()));
        }
        (true, Some(path)) => {
            let (taken, count) = handover::take(path).map_err(Failure::System)?;
            log::info!(
                "--upgrade: took {count} listening sockets from {}",
                path.display()
            );
            passed += count;
            Some(taken)
        }
    };
    let bound = bind()?;
    let exporter = Exporter::bind(p)?;
    if passed > 0 {
        let unused = activation::close_unclaimed();
        log::info!(
            "socket activation: {} of {passed} passed sockets used",
            passed - unused
        );
    }
    let offer = (p.handover_socket.as_deref())
        .map(handover::Offer::bind)
        .transpose()
        .map_err(Failure::System)?;
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
    let started = Started {
        _pid_file: pid_file,
        offer,
        taken,
    };
    Ok((bound, exporter, started))
}
