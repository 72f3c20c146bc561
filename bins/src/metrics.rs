//! `--admin-listen` (`--metrics-listen`): the admin listener, served by the role's first event
//! loop (tagged [`ADMIN`], see `mdproxy_core::config::EndpointConfig::admin`), so that its
//! `/explain` sees that loop's lookup state and its `/live` that the loop turns; `/metrics`
//! serves the counters every loop of the process adds to. On a TCP address or on a Unix socket
//! (a path), which is created so that only its owner may connect (a socket's `connect(2)`
//! needs write permission: mode 0644, as `--socket-mode user`), and removed on exit.

use std::io;
use std::sync::Arc;

use mdproxy_core::config::EndpointConfig;
use mdproxy_core::listener::ListenerId;
use mdproxy_core::metrics::Metrics;

use crate::cli::{AdminListen, SocketMode};
use crate::runtime::{Listener, Loop, Options, Runtime};

/// The admin listener's tag: the node's scoped listeners count up from 1, so they never
/// reach it.
const ADMIN: ListenerId = ListenerId(u64::MAX);
use crate::{cli, listen, os, Failure};

/// The process's counters and the listener that serves them.
pub struct Exporter {
    metrics: Arc<Metrics>,
    listener: Listener,
    /// A Unix socket's file, removed when the loops are over.
    file: Option<os::SocketFile>,
}

impl Exporter {
    /// Binds `--metrics-listen`, if it was given.
    pub fn bind(p: &cli::Process) -> Result<Option<Exporter>, Failure> {
        let (listener, file) = match &p.metrics_listen {
            None => return Ok(None),
            Some(AdminListen::Tcp(addr)) => {
                let listener = listen::tcp(*addr).map_err(|e| {
                    Failure::System(format!("cannot listen on {addr} (--metrics-listen): {e}"))
                })?;
                let shown = listener.local_addr().unwrap_or(*addr);
                log::info!("metrics at http://{shown}/metrics");
                (listener, None)
            }
            Some(AdminListen::Unix(path)) => {
                let (listener, file) = listen::bind_unix(path, Some(SocketMode::User), None)?;
                log::info!("metrics at unix:{} (/metrics)", path.display());
                (listener, Some(file))
            }
        };
        Ok(Some(Exporter {
            metrics: Arc::new(Metrics::new()),
            listener,
            file,
        }))
    }

    /// The counters (and health reports) it serves.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The listening socket's descriptor.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.listener)
    }
}

/// Runs one loop of `cfg` on `listeners` (and the admin listener) on the calling thread
/// ([`Runtime::run`]).
pub fn run(
    rt: Runtime,
    mut cfg: EndpointConfig,
    mut listeners: Vec<Listener>,
    options: Options,
    exporter: Option<Exporter>,
) -> io::Result<()> {
    let file = exporter.and_then(|e| e.attach(&mut cfg, &mut listeners));
    let ran = rt.run(cfg, listeners, options);
    drop(file);
    ran
}

/// Runs `workers` loops of `cfg` sharing `listeners` (each with its own `options()`), the
/// first with the admin listener. Without an exporter this is [`Runtime::run_workers`] (so
/// one worker runs on the calling thread).
pub fn run_workers(
    rt: Runtime,
    workers: usize,
    cfg: EndpointConfig,
    listeners: Vec<Listener>,
    options: impl FnMut() -> Options,
    exporter: Option<Exporter>,
) -> io::Result<()> {
    let Some(exporter) = exporter else {
        return rt.run_workers(workers, cfg, listeners, options);
    };
    let loops = Loop::workers(workers, cfg, listeners, options)?;
    run_loops(rt, loops, Some(exporter))
}

/// Runs `loops`, each on a thread of its own, the first with the admin listener.
pub fn run_loops(rt: Runtime, mut loops: Vec<Loop>, exporter: Option<Exporter>) -> io::Result<()> {
    let file = match (exporter, loops.split_first_mut()) {
        (Some(exporter), Some((first, rest))) => {
            for l in rest {
                l.cfg.metrics = Some(exporter.metrics());
            }
            exporter.attach(&mut first.cfg, &mut first.listeners)
        }
        _ => None,
    };
    let ran = rt.run_loops(loops);
    drop(file);
    ran
}

impl Exporter {
    /// Makes `cfg` count into the exporter's metrics and serve its listener, added to
    /// `listeners` under [`ADMIN`]; the socket file is to be kept until the loop ends.
    fn attach(
        self,
        cfg: &mut EndpointConfig,
        listeners: &mut Vec<Listener>,
    ) -> Option<os::SocketFile> {
        cfg.metrics = Some(self.metrics);
        cfg.admin = Some(ADMIN);
        listeners.push(self.listener.scoped(ADMIN));
        self.file
    }
}
