//! `--metrics-listen`: one more event loop in the process, whose endpoint (the core's metrics
//! role) serves the counters that every other loop of the process adds to. On a TCP address
//! or on a Unix socket (a path), which is created so that only its owner may connect (a
//! socket's `connect(2)` needs write permission: mode 0644, as `--socket-mode user`), and
//! removed on exit.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mdproxy_core::config::{EndpointConfig, Role, Timeouts};
use mdproxy_core::http::Limits;
use mdproxy_core::metrics::Metrics;

use crate::cli::{AdminListen, SocketMode};
use crate::runtime::{Listener, Loop, Options, Runtime};
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

    /// The loop that serves the metrics, and the socket file to keep until it ends.
    fn into_loop(
        self,
        timeouts: Timeouts,
        drain_timeout: Duration,
    ) -> (Loop, Option<os::SocketFile>) {
        let admin = Loop {
            cfg: EndpointConfig {
                role: Role::Metrics(self.metrics),
                limits: Limits::default(),
                conns: Default::default(),
                timeouts,
                tls: Default::default(),
                metrics: None,
            },
            listeners: vec![self.listener],
            options: Options {
                drain_timeout,
                ..Options::default()
            },
        };
        (admin, self.file)
    }
}

/// Runs one loop of `cfg` on `listeners`, and the exporter's loop beside it. Without an
/// exporter this is [`Runtime::run`] (on the calling thread).
pub fn run(
    rt: Runtime,
    cfg: EndpointConfig,
    listeners: Vec<Listener>,
    options: Options,
    exporter: Option<Exporter>,
) -> io::Result<()> {
    match exporter {
        None => rt.run(cfg, listeners, options),
        Some(exporter) => {
            let only = Loop {
                cfg,
                listeners,
                options,
            };
            run_loops(rt, vec![only], Some(exporter))
        }
    }
}

/// Runs `workers` loops of `cfg` sharing `listeners` (each with its own `options()`), and the
/// exporter's loop beside them. Without an exporter this is [`Runtime::run_workers`] (so one
/// worker runs on the calling thread).
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

/// Runs `loops` (each counting into the exporter's metrics) and the exporter's loop.
pub fn run_loops(rt: Runtime, mut loops: Vec<Loop>, exporter: Option<Exporter>) -> io::Result<()> {
    let metrics = exporter.as_ref().map(|e| e.metrics.clone());
    for l in &mut loops {
        l.cfg.metrics = metrics.clone();
    }
    let mut file = None;
    if let (Some(exporter), Some(first)) = (exporter, loops.first()) {
        let (timeouts, drain) = (first.cfg.timeouts, first.options.drain_timeout);
        let (admin, admin_file) = exporter.into_loop(timeouts, drain);
        loops.push(admin);
        file = admin_file;
    }
    let ran = rt.run_loops(loops);
    drop(file);
    ran
}
