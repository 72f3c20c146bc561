//! `--metrics-listen`: one more event loop in the process, whose endpoint (the core's metrics
//! role) serves the counters that every other loop of the process adds to.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mdproxy_core::config::{EndpointConfig, Role, Timeouts};
use mdproxy_core::http::Limits;
use mdproxy_core::metrics::Metrics;

use crate::runtime::{Listener, Loop, Options, Runtime};
use crate::{cli, Failure};

/// The process's counters and the listener that serves them.
pub struct Exporter {
    metrics: Arc<Metrics>,
    listener: Listener,
}

impl Exporter {
    /// Binds `--metrics-listen`, if it was given.
    pub fn bind(p: &cli::Process) -> Result<Option<Exporter>, Failure> {
        let Some(addr) = p.metrics_listen else {
            return Ok(None);
        };
        let listener = crate::listen::tcp(addr).map_err(|e| {
            Failure::System(format!("cannot listen on {addr} (--metrics-listen): {e}"))
        })?;
        let shown = listener.local_addr().unwrap_or(addr);
        log::info!("metrics at http://{shown}/metrics");
        Ok(Some(Exporter {
            metrics: Arc::new(Metrics::new()),
            listener,
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

    /// The loop that serves the metrics.
    fn into_loop(self, timeouts: Timeouts, drain_timeout: Duration) -> Loop {
        Loop {
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
        }
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
    if let (Some(exporter), Some(first)) = (exporter, loops.first()) {
        let (timeouts, drain) = (first.cfg.timeouts, first.options.drain_timeout);
        loops.push(exporter.into_loop(timeouts, drain));
    }
    rt.run_loops(loops)
}
