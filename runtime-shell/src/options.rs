//! How a loop behaves around its endpoint: the drain timeout and the hooks.

use std::time::Duration;

use mdproxy_core::config::Reload;
use mdproxy_core::metadata::StoreRequest;

use crate::Commands;

/// A hook that may hand the endpoint new data: SIGHUP's and the tick's. What it returns goes
/// to [`Endpoint::reload`](mdproxy_core::endpoint::Endpoint::reload); `None` changes nothing
/// (e.g. the new data was bad and the hook logged why).
pub type Hook = Box<dyn FnMut() -> Option<Reload> + Send>;

/// How [`run`](crate::run) and the loops it starts behave around the endpoint. Every hook runs
/// on the loop's own thread, between events (never in a signal handler): it should be quick.
pub struct RunOptions {
    /// After SIGTERM/SIGINT, how long busy connections may take to finish before the loop
    /// returns anyway.
    pub drain_timeout: Duration,
    /// Called on SIGHUP.
    pub on_hangup: Hook,
    /// Called when the first stop signal begins the drain (e.g. to tell the service manager).
    pub on_stop: Box<dyn FnMut() + Send>,
    /// Called for every [`Event::Store`](mdproxy_core::socket::Event::Store): a password the
    /// server accepted and already serves from memory. The default logs that nothing was
    /// persisted.
    pub on_store: Box<dyn FnMut(StoreRequest) + Send>,
    /// A periodic hook (e.g. to notice changed files): called once when the loop starts, then
    /// at least every interval (the loop wakes for it), also while busy. What it returns is
    /// handled as for SIGHUP. Not called once draining.
    pub tick: Option<(Duration, Hook)>,
    /// Listeners to add and remove while running ([`command_queue`](crate::command_queue));
    /// `None`: the listeners are fixed at start. One loop per queue: the node role runs a
    /// single worker.
    pub commands: Option<Commands>,
}

/// 10 s to drain, hooks that do nothing but log that a password was not persisted.
impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            drain_timeout: Duration::from_secs(10),
            on_hangup: Box::new(|| None),
            on_stop: Box::new(|| ()),
            // Never log the password itself.
            on_store: Box::new(|req| {
                log::warn!(
                    "the password of instance {} was not persisted: no store is configured",
                    req.instance_uuid
                )
            }),
            tick: None,
            commands: None,
        }
    }
}
