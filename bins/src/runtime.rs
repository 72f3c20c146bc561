//! The one place that knows which runtimes this build has (Cargo features `mio` and `smol`)
//! and which one `--runtime` chose. The roles bind [`Listener`]s, fill [`Options`] and call
//! [`Runtime::run`], [`Runtime::run_workers`] or [`Runtime::run_loops`], which hand the chosen
//! crate's loop to [`mdproxy_shell`]: listeners, hooks and workers are the shell's, the same
//! whichever runtime serves. Nothing else in the binary names a runtime crate or a runtime
//! feature.

use std::fmt;
use std::io;

use mdproxy_core::config::EndpointConfig;
use mdproxy_shell::Serve;
pub use mdproxy_shell::{Hook, Listener, Loop, RunOptions as Options};

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

impl Runtime {
    /// The chosen crate's loop.
    fn serve(self) -> Serve {
        match self {
            #[cfg(feature = "mio")]
            Runtime::Mio => mdproxy_mio::serve,
            #[cfg(feature = "smol")]
            Runtime::Smol => mdproxy_smol::serve,
        }
    }

    /// Serves `listeners` with one endpoint on the calling thread until SIGTERM/SIGINT and
    /// the drain that follows ([`mdproxy_shell::run`]).
    pub fn run(
        self,
        cfg: EndpointConfig,
        listeners: Vec<Listener>,
        opts: Options,
    ) -> io::Result<()> {
        mdproxy_shell::run(self.serve(), cfg, listeners, opts)
    }

    /// Like [`Runtime::run`] on `workers` threads sharing `listeners`, each with its own copy
    /// of the endpoint and its own `options()` ([`mdproxy_shell::run_workers`]).
    pub fn run_workers(
        self,
        workers: usize,
        cfg: EndpointConfig,
        listeners: Vec<Listener>,
        options: impl FnMut() -> Options,
    ) -> io::Result<()> {
        mdproxy_shell::run_workers(self.serve(), workers, cfg, listeners, options)
    }

    /// Runs each of `loops` on a thread of its own until all have stopped
    /// ([`mdproxy_shell::run_loops`]).
    pub fn run_loops(self, loops: Vec<Loop>) -> io::Result<()> {
        mdproxy_shell::run_loops(self.serve(), loops)
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
}
