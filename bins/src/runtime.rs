//! The one place that knows which runtimes this build has (Cargo features `mio` and `smol`)
//! and which one `--runtime` chose. The roles bind [`Listener`]s, fill [`Options`] and call
//! [`Runtime::run`], [`Runtime::run_workers`] or [`Runtime::run_loops`]; each of those
//! converts to the chosen crate's own types (same shapes, other names) and calls it. Nothing
//! else in the binary names a runtime crate or a runtime feature.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mdproxy_core::config::{EndpointConfig, Reload};
use mdproxy_core::metadata::StoreRequest;

#[cfg(not(any(feature = "mio", feature = "smol")))]
compile_error!("mdproxy needs a runtime: build with feature `mio`, `smol` or both");

/// A runtime compiled into this build: a value of this type is one `--runtime` may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// `mdproxy-mio`: one mio event loop per worker.
    #[cfg(feature = "mio")]
    Mio,
    /// `mdproxy-smol`: one single-threaded smol executor per worker, a task per connection.
    #[cfg(feature = "smol")]
    Smol,
}

/// Every runtime mdproxy has, whether this build carries it or not.
const KNOWN: [&str; 2] = ["mio", "smol"];

impl Runtime {
    /// The runtimes of this build, the default first.
    pub const BUILT: &[Runtime] = &[
        #[cfg(feature = "mio")]
        Runtime::Mio,
        #[cfg(feature = "smol")]
        Runtime::Smol,
    ];

    /// Its `--runtime` name.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "mio")]
            Runtime::Mio => "mio",
            #[cfg(feature = "smol")]
            Runtime::Smol => "smol",
        }
    }

    /// The runtime `--runtime name` asks for; the error says what this build has.
    pub fn parse(name: &str) -> Result<Runtime, String> {
        if let Some(rt) = Runtime::BUILT.iter().find(|rt| rt.name() == name) {
            return Ok(*rt);
        }
        let built = Runtime::names();
        Err(match KNOWN.contains(&name) {
            true => format!("runtime {name:?} is not compiled into this build (it has: {built})"),
            false => format!("unknown runtime {name:?} (this build has: {built})"),
        })
    }

    /// The names of [`Runtime::BUILT`], comma-separated.
    pub fn names() -> String {
        let names: Vec<&str> = Runtime::BUILT.iter().map(|rt| rt.name()).collect();
        names.join(", ")
    }
}

/// `mio` when compiled in, else `smol`.
impl Default for Runtime {
    fn default() -> Runtime {
        Runtime::BUILT[0]
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `--runtime` line of every role's help (a macro, for `concat!`), true to this build.
#[cfg(all(feature = "mio", feature = "smol"))]
macro_rules! runtime_help {
    () => {
        "      --runtime NAME             Event loop to run on: mio or smol [default: mio]\n"
    };
}
#[cfg(all(feature = "mio", not(feature = "smol")))]
macro_rules! runtime_help {
    () => {
        "      --runtime NAME             Event loop to run on [only choice in this build: mio]\n"
    };
}
#[cfg(all(feature = "smol", not(feature = "mio")))]
macro_rules! runtime_help {
    () => {
        "      --runtime NAME             Event loop to run on [only choice in this build: smol]\n"
    };
}
#[cfg(not(any(feature = "mio", feature = "smol")))]
macro_rules! runtime_help {
    () => {
        ""
    };
}
pub(crate) use runtime_help;

/// Evaluates `$e` with `$krate` naming the crate of runtime `$rt`.
macro_rules! on {
    ($rt:expr, |$krate:ident| $e:expr) => {
        match $rt {
            #[cfg(feature = "mio")]
            Runtime::Mio => {
                use mdproxy_mio as $krate;
                $e
            }
            #[cfg(feature = "smol")]
            Runtime::Smol => {
                use mdproxy_smol as $krate;
                $e
            }
        }
    };
}

/// Evaluates `$e` with `$l` bound to the runtime's own listener inside `$listener`.
macro_rules! each {
    ($listener:expr, |$l:ident| $e:expr) => {
        match $listener {
            #[cfg(feature = "mio")]
            Listener::Mio($l) => $e,
            #[cfg(feature = "smol")]
            Listener::Smol($l) => $e,
        }
    };
}

/// A bound listening socket, of the runtime that bound it (see each crate's `Listener`).
pub enum Listener {
    #[cfg(feature = "mio")]
    Mio(mdproxy_mio::Listener),
    #[cfg(feature = "smol")]
    Smol(mdproxy_smol::Listener),
}

impl Listener {
    /// Binds a TCP listener for `rt`, with `SO_REUSEADDR` and a backlog of 4096.
    pub fn bind_tcp(rt: Runtime, addr: SocketAddr) -> io::Result<Listener> {
        on!(rt, |r| r::Listener::bind_tcp(addr).map(Listener::from))
    }

    /// Binds a Unix stream listener for `rt` at `path`, which must not exist yet.
    pub fn bind_unix(rt: Runtime, path: &Path) -> io::Result<Listener> {
        on!(rt, |r| r::Listener::bind_unix(path).map(Listener::from))
    }

    /// Sets the length of the queue of connections not yet accepted.
    pub fn set_backlog(&self, backlog: u32) -> io::Result<()> {
        each!(self, |l| l.set_backlog(backlog))
    }

    /// Another handle on the same listening socket (`dup(2)`).
    pub fn try_clone(&self) -> io::Result<Listener> {
        each!(self, |l| l.try_clone().map(Listener::from))
    }

    /// The bound address of a TCP listener (`None` for Unix listeners).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        each!(self, |l| l.local_addr())
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        each!(self, |l| l.fmt(f))
    }
}

/// A hook that may hand the endpoint new data: SIGHUP's and the tick's.
pub type Hook = Box<dyn FnMut() -> Option<Reload> + Send>;

/// How a loop behaves around its endpoint: each crate's `RunOptions`, whose docs say more.
pub struct Options {
    /// After SIGTERM/SIGINT, how long busy connections may take to finish.
    pub drain_timeout: Duration,
    /// Called on SIGHUP, from the loop's thread.
    pub on_hangup: Hook,
    /// Called for every password the server accepted, from the loop's thread.
    pub on_store: Box<dyn FnMut(StoreRequest) + Send>,
    /// Called once at the start, then at least every interval.
    pub tick: Option<(Duration, Hook)>,
}

/// The runtimes' own defaults (they are the same): 10 s to drain, hooks that do nothing but
/// log that a password was not persisted.
impl Default for Options {
    fn default() -> Options {
        on!(Runtime::default(), |r| r::RunOptions::default().into())
    }
}

/// One loop of [`Runtime::run_loops`]: an endpoint, its listeners and its hooks.
pub struct Loop {
    pub cfg: EndpointConfig,
    pub listeners: Vec<Listener>,
    pub options: Options,
}

/// The conversions between our types and those of runtime crate `$krate`, variant `$V`.
macro_rules! convert {
    ($feature:literal, $V:ident, $krate:ident) => {
        #[cfg(feature = $feature)]
        impl From<$krate::Listener> for Listener {
            fn from(l: $krate::Listener) -> Listener {
                Listener::$V(l)
            }
        }

        /// Fails for a listener another runtime bound: the roles bind and run with one.
        #[cfg(feature = $feature)]
        impl TryFrom<Listener> for $krate::Listener {
            type Error = io::Error;

            #[allow(unreachable_patterns)] // `other` cannot be, with one runtime compiled in
            fn try_from(l: Listener) -> io::Result<$krate::Listener> {
                match l {
                    Listener::$V(l) => Ok(l),
                    other => Err(io::Error::other(format!(
                        "listener {other} was bound for another runtime than {}",
                        $feature
                    ))),
                }
            }
        }

        #[cfg(feature = $feature)]
        impl From<Options> for $krate::RunOptions {
            fn from(o: Options) -> $krate::RunOptions {
                $krate::RunOptions {
                    drain_timeout: o.drain_timeout,
                    on_hangup: o.on_hangup,
                    on_store: o.on_store,
                    tick: o.tick,
                }
            }
        }

        #[cfg(feature = $feature)]
        impl From<$krate::RunOptions> for Options {
            fn from(o: $krate::RunOptions) -> Options {
                Options {
                    drain_timeout: o.drain_timeout,
                    on_hangup: o.on_hangup,
                    on_store: o.on_store,
                    tick: o.tick,
                }
            }
        }
    };
}

convert!("mio", Mio, mdproxy_mio);
convert!("smol", Smol, mdproxy_smol);

/// The chosen runtime's listeners, out of ours.
fn own<L: TryFrom<Listener, Error = io::Error>>(listeners: Vec<Listener>) -> io::Result<Vec<L>> {
    listeners.into_iter().map(L::try_from).collect()
}

impl Runtime {
    /// Serves `listeners` with one endpoint on the calling thread until SIGTERM/SIGINT and
    /// the drain that follows (each crate's `run`).
    pub fn run(
        self,
        cfg: EndpointConfig,
        listeners: Vec<Listener>,
        opts: Options,
    ) -> io::Result<()> {
        on!(self, |r| r::run(cfg, own(listeners)?, opts.into()))
    }

    /// Like [`Runtime::run`] on `workers` threads sharing `listeners`, each with its own copy
    /// of the endpoint and its own `options()` (each crate's `run_workers`).
    pub fn run_workers(
        self,
        workers: usize,
        cfg: EndpointConfig,
        listeners: Vec<Listener>,
        mut options: impl FnMut() -> Options,
    ) -> io::Result<()> {
        on!(self, |r| {
            let listeners = own(listeners)?;
            r::run_workers(workers, cfg, listeners, || options().into())
        })
    }

    /// Runs each of `loops` on a thread of its own until all have stopped (each crate's
    /// `run_loops`).
    pub fn run_loops(self, loops: Vec<Loop>) -> io::Result<()> {
        on!(self, |r| {
            let theirs = loops.into_iter().map(|l| {
                Ok(r::Loop {
                    cfg: l.cfg,
                    listeners: own(l.listeners)?,
                    options: l.options.into(),
                })
            });
            r::run_loops(theirs.collect::<io::Result<_>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_errors_list_the_build() {
        for &rt in Runtime::BUILT {
            assert_eq!(Runtime::parse(rt.name()), Ok(rt));
        }
        assert_eq!(Runtime::default(), Runtime::BUILT[0]);
        let e = Runtime::parse("tokio").unwrap_err();
        assert!(
            e.contains("unknown runtime") && e.contains(&Runtime::names()),
            "{e}"
        );
        for name in KNOWN {
            if !Runtime::BUILT.iter().any(|rt| rt.name() == name) {
                let e = Runtime::parse(name).unwrap_err();
                assert!(e.contains("not compiled into this build"), "{e}");
            }
        }
    }

    #[test]
    fn help_names_every_runtime_built() {
        for &rt in Runtime::BUILT {
            assert!(runtime_help!().contains(rt.name()));
        }
        assert!(runtime_help!().contains("--runtime NAME"));
    }

    #[test]
    fn listeners_bind_for_each_runtime() {
        let dir = std::env::temp_dir().join(format!("mdp-runtime-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for &rt in Runtime::BUILT {
            let l = Listener::bind_tcp(rt, "127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = l.local_addr().unwrap();
            assert_eq!(l.to_string(), addr.to_string());
            assert_eq!(l.try_clone().unwrap().local_addr(), Some(addr));
            l.set_backlog(8).unwrap();
            let path = dir.join(rt.name());
            let _ = std::fs::remove_file(&path);
            let u = Listener::bind_unix(rt, &path).unwrap();
            assert_eq!(u.to_string(), format!("unix:{}", path.display()));
            assert_eq!(u.local_addr(), None);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(all(feature = "mio", feature = "smol"))]
    #[test]
    fn a_runtime_refuses_the_listeners_of_another() {
        let l = Listener::bind_tcp(Runtime::Mio, "127.0.0.1:0".parse().unwrap()).unwrap();
        let e = own::<mdproxy_smol::Listener>(vec![l]).err().unwrap();
        assert!(e.to_string().contains("another runtime than smol"), "{e}");
    }
}
