//! What every mdproxy runtime needs besides its event loop, written once: the [`Listener`]s
//! the roles bind, the signal self-pipe, worker threads and the relay of signals to them
//! ([`run_workers`], [`run_loops`]), the hooks ([`RunOptions`]), and the policies both loops
//! must share: what a failed `accept(2)` means ([`Acceptor`]), how much one socket may do
//! per turn ([`turn`]), what a failed connect tells the core ([`connect_error`]), and the
//! tick, signal and drain bookkeeping around the endpoint ([`Control`]), the queue that
//! adds and removes listeners while a loop runs ([`command_queue`]), and the one socket
//! option the core asks for ([`set_hop_limit`]).
//!
//! A runtime plugs in as one function, [`Serve`]: it drives one
//! [`Endpoint`](mdproxy_core::endpoint::Endpoint) on its listeners until the signal socket
//! says stop, and the shell decides on which thread and with which signal socket it runs. A
//! plain `fn` rather than a trait because a runtime has no state to carry between loops: a
//! function pointer is `Copy` and `Send`, so it goes to every worker thread as it is, needs
//! no type parameter in the binary's choice of runtime, and a test names it as
//! `mdproxy_mio::serve`.
//!
//! Signals: [`run`] catches SIGTERM and SIGINT (drain, then return) and SIGHUP
//! ([`RunOptions::on_hangup`]) for its duration; writes to a closed peer are errors, not
//! SIGPIPE (std sends with `MSG_NOSIGNAL` on Linux, and Rust binaries ignore SIGPIPE anyway).
//!
//! With the `conformance` feature, `conformance_tests!` expands to the integration suite
//! every runtime must pass.

use std::io;
use std::os::unix::net::UnixStream;

use mdproxy_core::config::EndpointConfig;
use mdproxy_core::socket::ConnectError;

pub use accept::{AcceptFailed, Acceptor, ACCEPT_BACKOFF};
pub use commands::{command_queue, Command, Commands, ListenerControl};
pub use control::{Control, Signalled};
pub use hop_limit::{hop_limit, set_hop_limit};
pub use listener::{Listener, Socket};
pub use options::{Hook, RunOptions};
pub use workers::{run_loops, run_workers, Loop};

mod accept;
mod commands;
#[cfg(feature = "conformance")]
pub mod conformance;
mod control;
mod hop_limit;
mod listener;
mod options;
mod signal;
pub mod turn;
mod workers;

/// A runtime: serves `listeners` with one endpoint built from the config until a stop
/// signal arrives on `signals` (a non-blocking socket delivering one byte, the signal number,
/// per caught signal), then stops accepting, lets busy connections finish (up to
/// [`RunOptions::drain_timeout`]) and returns `Ok(())`; a second stop signal returns at once.
/// An error is a failure of the runtime's own machinery (its poller or reactor). End of file
/// on `signals` means no signal can come any more; the loop goes on serving.
pub type Serve = fn(EndpointConfig, Vec<Listener>, RunOptions, UnixStream) -> io::Result<()>;

/// Runs `serve` on the calling thread with the process's SIGTERM, SIGINT and SIGHUP routed
/// to it, which makes this (or [`run_workers`] or [`run_loops`], for several loops) a
/// once-per-process call: the handlers are process-wide (and restored when it returns).
pub fn run(
    serve: Serve,
    cfg: EndpointConfig,
    listeners: Vec<Listener>,
    opts: RunOptions,
) -> io::Result<()> {
    let (_signals, sig_rx) = signal::SignalGuard::install()?;
    serve(cfg, listeners, opts, sig_rx)
}

/// Runs `$e` with `$x` bound to whichever socket `$s` holds, `$s` being of a runtime's own
/// enum `$ty` with variants `Tcp` and `Unix` (its streams are of two types, used alike).
#[macro_export]
macro_rules! either {
    ($ty:ident: $s:expr, $x:ident => $e:expr) => {
        match $s {
            $ty::Tcp($x) => $e,
            $ty::Unix($x) => $e,
        }
    };
}

/// What a failed connect tells the core: nobody listens there (the upstream is down, which
/// may answer 503 at once), or something else went wrong.
pub fn connect_error(e: &io::Error) -> ConnectError {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED | libc::ENOENT) => ConnectError::Refused,
        _ => ConnectError::Other,
    }
}
