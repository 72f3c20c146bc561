//! Several drivers in one process: N threads each run [`serve`] with their own [`Endpoint`] on
//! their own listeners (for [`run_workers`], their own `dup` of every shared listener), and the
//! calling thread relays signals.
//!
//! Signal handlers are process-wide and write to one socket, so the calling thread reads that
//! socket and copies each signal byte to every worker's control socket; a worker reads its
//! control socket exactly as a lone driver reads the handler's. A worker that returns drops its
//! end, which the relay sees as end-of-file: that is how it learns a worker is done.
//!
//! [`Endpoint`]: mdproxy_core::endpoint::Endpoint

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};

use async_io::Async;
use mdproxy_core::config::EndpointConfig;
use smol::future;

use crate::signal::SignalGuard;
use crate::{run, serve, Listener, RunOptions};

/// One running worker: the relay's end of its control socket and its thread.
struct Worker {
    ctl: Async<UnixStream>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// Like [`run`], with `workers` executors on as many threads sharing `listeners`; the kernel
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
    workers: usize,
    cfg: EndpointConfig,
    listeners: Vec<Listener>,
    mut options: impl FnMut() -> RunOptions,
) -> io::Result<()> {
    if workers <= 1 {
        return run(cfg, listeners, options());
    }
    let mut loops = Vec::with_capacity(workers);
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
    run_loops(loops)
}

/// One driver of [`run_loops`]: an endpoint, its listeners and its hooks.
pub struct Loop {
    /// The endpoint this driver drives.
    pub cfg: EndpointConfig,
    /// The listeners it accepts on (its own: not shared with other drivers).
    pub listeners: Vec<Listener>,
    /// Its hooks and drain timeout.
    pub options: RunOptions,
}

/// Runs each of `loops` on a thread of its own (even a single one), as [`run_workers`] does
/// with copies of one endpoint: signals reach every driver, and this returns when all have
/// stopped, with the first error any of them had (a driver that fails makes the others drain
/// and stop too). Each driver has its own endpoint; the demo runs the three roles this way.
pub fn run_loops(loops: Vec<Loop>) -> io::Result<()> {
    let (sig_rx, sig_tx) = UnixStream::pair()?;
    let _signals = SignalGuard::install(sig_tx)?;
    let sig_rx = Async::new(sig_rx)?;
    let mut pool: Vec<Worker> = Vec::with_capacity(loops.len());
    for (i, l) in loops.into_iter().enumerate() {
        match spawn(i, l) {
            Ok(w) => pool.push(w),
            Err(e) => {
                stop_all(&pool);
                for w in &mut pool {
                    let _ = finish(w);
                }
                return Err(e);
            }
        }
    }
    async_io::block_on(relay(sig_rx, pool))
}

fn spawn(i: usize, l: Loop) -> io::Result<Worker> {
    let (ctl, theirs) = UnixStream::pair()?;
    let ctl = Async::new(ctl)?;
    let thread = thread::Builder::new()
        .name(format!("worker-{i}"))
        .spawn(move || serve(l.cfg, l.listeners, l.options, theirs))?;
    Ok(Worker {
        ctl,
        thread: Some(thread),
    })
}

/// What woke the relay.
enum Relay {
    Signals(usize),
    Ended(usize),
}

/// Copies signals to the workers until every worker has returned.
async fn relay(sig_rx: Async<UnixStream>, mut pool: Vec<Worker>) -> io::Result<()> {
    let mut first_error = None;
    let mut sigs = [0u8; 16];
    while pool.iter().any(|w| w.thread.is_some()) {
        let signals = async {
            let read = sig_rx.read_with(|mut rx| rx.read(&mut sigs)).await;
            match read {
                Ok(0) => Err(io::Error::other("the signal socket closed")),
                Ok(n) => Ok(Relay::Signals(n)),
                Err(e) if e.kind() == ErrorKind::Interrupted => Ok(Relay::Signals(0)),
                Err(e) => Err(e),
            }
        };
        let ended = future::poll_fn(|cx| poll_ended(&pool, cx).map(|i| Ok(Relay::Ended(i))));
        match future::or(signals, ended).await {
            // Without the relay the workers would never hear a signal: stop them now.
            Err(e) => {
                stop_all(&pool);
                pool.iter_mut().for_each(|w| drop(finish(w)));
                return Err(e);
            }
            Ok(Relay::Signals(n)) => {
                for w in pool.iter().filter(|w| w.thread.is_some()) {
                    // A full socket drops the byte, as the handler itself would.
                    let _ = w.ctl.get_ref().write(&sigs[..n]);
                }
            }
            Ok(Relay::Ended(i)) => {
                if let Err(e) = finish(&mut pool[i]) {
                    log::error!("a worker failed: {e}; stopping the others");
                    if first_error.is_none() {
                        first_error = Some(e);
                        stop_all(&pool);
                    }
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The index of a running worker that has dropped its end of the control socket, if any;
/// otherwise registers for readability of every running worker's socket.
fn poll_ended(pool: &[Worker], cx: &mut Context<'_>) -> Poll<usize> {
    for (i, w) in pool.iter().enumerate().filter(|(_, w)| w.thread.is_some()) {
        loop {
            if ended(w.ctl.get_ref()) {
                return Poll::Ready(i);
            }
            if w.ctl.poll_readable(cx).is_pending() {
                break;
            }
        }
    }
    Poll::Pending
}

/// Whether the worker behind `ctl` has dropped its end (it never writes to it).
fn ended(mut ctl: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    loop {
        match ctl.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Asks every running worker to drain, as SIGTERM does.
fn stop_all(pool: &[Worker]) {
    let sig = [libc::SIGTERM as u8];
    for w in pool.iter().filter(|w| w.thread.is_some()) {
        let _ = w.ctl.get_ref().write(&sig);
    }
}

/// Joins a worker's thread (once) and returns how it ended.
fn finish(w: &mut Worker) -> io::Result<()> {
    match w.thread.take().map(JoinHandle::join) {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(_)) => Err(io::Error::other("a worker thread panicked")),
    }
}
