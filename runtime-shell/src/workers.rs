//! Several loops in one process: N threads each run the runtime's [`Serve`] with their own
//! [`Endpoint`] on their own listeners (for [`run_workers`], their own `dup` of every shared
//! listener), and the calling thread relays signals.
//!
//! Signal handlers are process-wide and write to one socket, so the calling thread reads that
//! socket and copies each signal byte to every worker's control socket; a worker reads its
//! control socket exactly as a lone loop reads the handler's. A worker that returns drops its
//! end, which the relay sees as end-of-file: that is how it learns a worker is done. The relay
//! waits with plain `poll(2)`: it needs no runtime, so it is the same whichever serves.
//!
//! [`Endpoint`]: mdproxy_core::endpoint::Endpoint

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};

use mdproxy_core::config::EndpointConfig;

use crate::signal::SignalGuard;
use crate::{run, Listener, RunOptions, Serve};

/// One event loop of [`run_loops`]: an endpoint, its listeners and its hooks.
pub struct Loop {
    /// The endpoint this loop drives.
    pub cfg: EndpointConfig,
    /// The listeners it accepts on (its own: not shared with other loops).
    pub listeners: Vec<Listener>,
    /// Its hooks and drain timeout.
    pub options: RunOptions,
}

impl Loop {
    /// `workers` (at least one) loops of copies of `cfg`, each on its own handle of every one
    /// of `listeners` and with its own `options()`: what [`run_workers`] runs, for a caller
    /// that adds loops of its own beside them.
    pub fn workers(
        workers: usize,
        cfg: EndpointConfig,
        listeners: Vec<Listener>,
        mut options: impl FnMut() -> RunOptions,
    ) -> io::Result<Vec<Loop>> {
        let mut loops = Vec::with_capacity(workers.max(1));
        for _ in 1..workers {
            loops.push(Loop {
                cfg: cfg.clone(),
                listeners: listeners
                    .iter()
                    .map(Listener::try_clone)
                    .collect::<io::Result<_>>()?,
                options: options(),
            });
        }
        let options = options();
        loops.push(Loop {
            cfg,
            listeners,
            options,
        });
        Ok(loops)
    }
}

/// Like [`run`], with `workers` event loops on as many threads sharing `listeners`; the kernel
/// gives each new connection to one of them. `options` is called once per worker (on the
/// calling thread), so each has its own [`RunOptions::on_hangup`] hook, and SIGHUP reaches
/// every worker's endpoint through its hook. SIGTERM/SIGINT make every worker drain; this
/// returns when all have stopped, with the first error any of them had (a worker that fails
/// makes the others drain and stop too).
///
/// Each worker has its own endpoint, so nothing is shared between them: in the agent role each
/// keeps its own lookup cache and its own single-flight, and a burst of first requests for one
/// instance can make up to one backend query per worker.
///
/// `workers <= 1` is [`run`] on the calling thread.
pub fn run_workers(
    serve: Serve,
    workers: usize,
    cfg: EndpointConfig,
    listeners: Vec<Listener>,
    mut options: impl FnMut() -> RunOptions,
) -> io::Result<()> {
    if workers <= 1 {
        return run(serve, cfg, listeners, options());
    }
    run_loops(serve, Loop::workers(workers, cfg, listeners, options)?)
}

/// Runs each of `loops` on a thread of its own (even a single one), as [`run_workers`] does
/// with copies of one endpoint: signals reach every loop, and this returns when all have
/// stopped, with the first error any of them had (a loop that fails makes the others drain
/// and stop too). Each loop has its own endpoint; the demo runs the three roles this way.
pub fn run_loops(serve: Serve, loops: Vec<Loop>) -> io::Result<()> {
    let (_signals, sig_rx) = SignalGuard::install()?;
    let mut pool: Vec<Worker> = Vec::with_capacity(loops.len());
    for (i, l) in loops.into_iter().enumerate() {
        match Worker::spawn(serve, i, l) {
            Ok(w) => pool.push(w),
            Err(e) => {
                stop_all(&mut pool);
                pool.iter_mut().for_each(|w| drop(w.finish()));
                return Err(e);
            }
        }
    }
    relay(sig_rx, pool)
}

/// One running worker: the relay's end of its control socket and its thread.
struct Worker {
    ctl: UnixStream,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Worker {
    fn spawn(serve: Serve, i: usize, l: Loop) -> io::Result<Worker> {
        let (ctl, theirs) = UnixStream::pair()?;
        ctl.set_nonblocking(true)?;
        theirs.set_nonblocking(true)?;
        let thread = thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || serve(l.cfg, l.listeners, l.options, theirs))?;
        Ok(Worker {
            ctl,
            thread: Some(thread),
        })
    }

    fn running(&self) -> bool {
        self.thread.is_some()
    }

    /// Whether the worker has dropped its end of the control socket (it never writes to it).
    fn ended(&mut self) -> bool {
        let mut b = [0u8; 1];
        loop {
            match self.ctl.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    /// Joins the worker's thread (once) and returns how it ended.
    fn finish(&mut self) -> io::Result<()> {
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(io::Error::other("a worker thread panicked")),
        }
    }
}

/// Copies signals to the workers until every worker has returned.
fn relay(mut sig_rx: UnixStream, mut pool: Vec<Worker>) -> io::Result<()> {
    let mut first_error = None;
    while pool.iter().any(Worker::running) {
        // Entry 0 is the signal socket, entry `i + 1` worker `i`'s (ignored once it is done).
        let mut fds: Vec<libc::pollfd> = [&sig_rx]
            .into_iter()
            .chain(pool.iter().map(|w| &w.ctl))
            .zip([true].into_iter().chain(pool.iter().map(Worker::running)))
            .map(|(s, live)| libc::pollfd {
                fd: if live { s.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` is a valid array of `nfds` entries for the duration of the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), nfds, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            // Without the relay the workers would never hear a signal: stop them now.
            stop_all(&mut pool);
            pool.iter_mut().for_each(|w| drop(w.finish()));
            return Err(e);
        }
        if fds[0].revents != 0 {
            let mut sigs = [0u8; 16];
            while let Ok(n @ 1..) = sig_rx.read(&mut sigs) {
                for w in pool.iter_mut().filter(|w| w.running()) {
                    // A full socket drops the byte, as the handler itself would.
                    let _ = w.ctl.write(&sigs[..n]);
                }
            }
        }
        for i in 0..pool.len() {
            if fds[i + 1].revents == 0 || !pool[i].ended() {
                continue;
            }
            if let Err(e) = pool[i].finish() {
                log::error!("a worker failed: {e}; stopping the others");
                if first_error.is_none() {
                    first_error = Some(e);
                    stop_all(&mut pool);
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Asks every running worker to drain, as SIGTERM does.
fn stop_all(pool: &mut [Worker]) {
    let sig = [libc::SIGTERM as u8];
    for w in pool.iter_mut().filter(|w| w.running()) {
        let _ = w.ctl.write(&sig);
    }
}
