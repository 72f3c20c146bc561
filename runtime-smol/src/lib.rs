//! A smol/async-io executor that drives [`mdproxy_core::endpoint::Endpoint`], for every role.
//!
//! The driver owns sockets and nothing else: it reports reads, EOFs, errors and connect
//! results to the endpoint, carries out the [`Action`]s it is given in order, and writes what
//! [`Endpoint::pending_write`] offers. Every protocol decision (framing, limits, rewrites,
//! timeouts, back-pressure) is the core's; this crate holds no byte beyond one scratch read.
//!
//! Shape: one single-threaded [`LocalExecutor`] per worker, whose tasks share the endpoint in
//! a `RefCell`, never borrowed across an `.await`. One task per socket (accepted or
//! connected) writes what the core offers, reads only while [`Endpoint::wants_read`] (so a
//! peer that does not read cannot make us buffer), then awaits readiness or its wake channel,
//! which [`Action::Wake`] and [`Action::Shutdown`] signal; [`Action::Close`] drops the task and
//! its socket. One task per listener accepts; a timer task sleeps until the earliest of
//! [`Endpoint::poll_timeout`], the drain deadline and the next tick, and is woken to re-arm
//! when that moves earlier; a signal task reads the self-pipe. Every mutation ends in
//! `Driver::settle`, the one place that drains [`Endpoint::poll_action`] and routes each
//! action to its task.
//!
//! Signals: [`run`] catches SIGTERM and SIGINT (drain, then return) and SIGHUP
//! ([`RunOptions::on_hangup`], whose [`Reload`] goes to [`Endpoint::reload`]); see `signal.rs`.
//! Hooks: [`RunOptions::tick`] runs on a timer (e.g. to notice changed files) and feeds its
//! [`Reload`] to the endpoint the same way; [`Event::Store`] goes to [`RunOptions::on_store`].
//! The hooks run on the executor's thread, between events: they should be quick.
//! Writes to a closed peer are errors, not SIGPIPE: std sends with `MSG_NOSIGNAL` on Linux,
//! and Rust binaries ignore SIGPIPE anyway.
//!
//! Workers: [`run_workers`] runs the same driver on N threads, each with its own [`Endpoint`]
//! on its own handle of the shared listeners; the calling thread relays caught signals to
//! them. [`run_loops`] does the same for different endpoints. See `workers.rs`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::os::unix::net::UnixStream;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use mdproxy_core::config::{EndpointConfig, Reload};
use mdproxy_core::endpoint::{Endpoint, Event};
use mdproxy_core::metadata::StoreRequest;
use mdproxy_core::socket::{Action, ConnectError, Input, SockId, Target};
use smol::channel::{self, Receiver, Sender};
use smol::future::{self, Future};
use smol::io::AsyncReadExt;
use smol::{LocalExecutor, Task};

pub use net::Listener;
use net::{AsyncListener, Stream};
use signal::SignalGuard;
pub use workers::{run_loops, run_workers, Loop};

mod net;
mod signal;
mod workers;

const SCRATCH: usize = 64 * 1024;
/// Reads one socket task makes before it lets the other tasks run.
const READS_PER_TURN: usize = 16;

/// How [`run`] behaves around the endpoint.
pub struct RunOptions {
    /// After SIGTERM/SIGINT, how long busy connections may take to finish before `run`
    /// returns anyway.
    pub drain_timeout: Duration,
    /// Called on SIGHUP, from the executor's thread (not from the signal handler). What it
    /// returns is handed to [`Endpoint::reload`]; `None` changes nothing (e.g. the new data was
    /// bad and the hook logged why).
    pub on_hangup: Box<dyn FnMut() -> Option<Reload> + Send>,
    /// Called for every [`Event::Store`] (a password the server accepted and already serves
    /// from memory), from the executor's thread. The default logs that nothing was persisted.
    pub on_store: Box<dyn FnMut(StoreRequest) + Send>,
    /// A periodic hook: called once when the driver starts, then at least every interval (the
    /// driver wakes for it), also while busy. What it returns goes to [`Endpoint::reload`], as
    /// for SIGHUP. Not called once draining.
    pub tick: Option<(Duration, Tick)>,
}

/// The hook of [`RunOptions::tick`].
pub type Tick = Box<dyn FnMut() -> Option<Reload> + Send>;

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            drain_timeout: Duration::from_secs(10),
            on_hangup: Box::new(|| None),
            // Never log the password itself.
            on_store: Box::new(|req| {
                log::warn!(
                    "the password of instance {} was not persisted: no store is configured",
                    req.instance_uuid
                )
            }),
            tick: None,
        }
    }
}

/// Serves `listeners` with one [`Endpoint`] built from `cfg` until SIGTERM/SIGINT, then
/// stops accepting, lets busy connections finish (up to [`RunOptions::drain_timeout`]) and
/// returns `Ok(())`. A second SIGTERM/SIGINT returns at once. Errors are failures to set up the
/// reactor. Installs process-wide handlers for SIGTERM, SIGINT and SIGHUP for its duration, so
/// call `run` (or [`run_workers`] or [`run_loops`], for several drivers) once per process.
pub fn run(cfg: EndpointConfig, listeners: Vec<Listener>, opts: RunOptions) -> io::Result<()> {
    let (sig_rx, sig_tx) = UnixStream::pair()?;
    let _signals = SignalGuard::install(sig_tx)?;
    serve(cfg, listeners, opts, sig_rx)
}

/// The driver itself, on the calling thread. `sig_rx` delivers caught signals, one byte (the
/// signal number) each: straight from the handler, or relayed by [`run_loops`].
fn serve(
    cfg: EndpointConfig,
    listeners: Vec<Listener>,
    opts: RunOptions,
    sig_rx: UnixStream,
) -> io::Result<()> {
    let sig_rx = Async::new(sig_rx)?;
    let listeners: Vec<AsyncListener> = listeners
        .into_iter()
        .map(Listener::into_async)
        .collect::<io::Result<_>>()?;
    let ex = Rc::new(LocalExecutor::new());
    let (rearm, rearmed) = channel::bounded(1);
    let (done, finished) = channel::bounded(1);
    let now = Instant::now();
    let d = Rc::new(Driver {
        ep: RefCell::new(Endpoint::new(now, cfg)),
        next_tick: Cell::new(opts.tick.is_some().then_some(now)),
        opts: RefCell::new(opts),
        ex: Rc::downgrade(&ex),
        socks: RefCell::default(),
        acceptors: RefCell::default(),
        scratch: RefCell::new(vec![0; SCRATCH]),
        drain_deadline: Cell::new(None),
        armed: Cell::new(None),
        rearm,
        done,
    });
    let main = async {
        let acceptors = listeners.into_iter().map(|l| d.spawn(d.clone().accept(l)));
        *d.acceptors.borrow_mut() = acceptors.collect();
        d.settle();
        d.tick(now);
        let _timers = d.spawn(d.clone().timers(rearmed));
        let _signals = d.spawn(d.clone().signals(sig_rx));
        let _ = finished.recv().await;
    };
    async_io::block_on(ex.run(main));
    // Dropping the executor drops every task, and with them every socket.
    drop(ex);
    Ok(())
}

/// One socket's entry: its task, and how the core's actions reach it.
struct Sock {
    _task: Task<()>,
    wake: Sender<()>,
    /// The core asked for a half-close; done once its pending bytes are written.
    shutdown: Cell<bool>,
}

/// How a socket task starts.
enum Start {
    Accepted(Stream),
    Connect(Target),
}

/// What every task of one executor shares.
struct Driver {
    ep: RefCell<Endpoint>,
    opts: RefCell<RunOptions>,
    /// Weak: the executor owns the tasks, which own the driver.
    ex: Weak<LocalExecutor<'static>>,
    socks: RefCell<HashMap<SockId, Sock>>,
    /// Dropped (and their listeners closed) once draining.
    acceptors: RefCell<Vec<Task<()>>>,
    scratch: RefCell<Vec<u8>>,
    drain_deadline: Cell<Option<Instant>>,
    /// When [`RunOptions::tick`] is due; `None` without one, or once draining.
    next_tick: Cell<Option<Instant>>,
    /// The deadline the timer task sleeps until.
    armed: Cell<Option<Instant>>,
    rearm: Sender<()>,
    /// What `run` returns, sent once.
    done: Sender<()>,
}

impl Driver {
    fn spawn(&self, task: impl Future<Output = ()> + 'static) -> Task<()> {
        let ex = self.ex.upgrade().expect("the executor outlives its tasks");
        ex.spawn(task)
    }

    /// Carries out every queued action, in order, then checks the drain and the timer.
    fn settle(self: &Rc<Self>) {
        loop {
            let Some(action) = self.ep.borrow_mut().poll_action() else {
                break;
            };
            match action {
                Action::Connect { sock, target } => self.add(sock, Start::Connect(target)),
                Action::Wake(sock) => self.wake(sock, false),
                Action::Shutdown(sock) => self.wake(sock, true),
                Action::Close(sock) => {
                    let gone = self.socks.borrow_mut().remove(&sock);
                    drop(gone);
                }
            }
        }
        while let Some(Event::Store(req)) = self.ep.borrow_mut().poll_event() {
            (self.opts.borrow_mut().on_store)(req);
        }
        if self.drain_deadline.get().is_some() && self.ep.borrow().is_drained() {
            let _ = self.done.try_send(());
        }
        let next = self.deadline();
        if next.is_some() && self.armed.get().is_none_or(|armed| next < Some(armed)) {
            let _ = self.rearm.try_send(());
        }
    }

    /// Feeds one input to the core and settles what it changed.
    fn handle(self: &Rc<Self>, now: Instant, id: SockId, input: Input<'_>) {
        self.ep.borrow_mut().handle(now, id, input);
        self.settle();
    }

    fn add(self: &Rc<Self>, id: SockId, start: Start) {
        let (wake, woken) = channel::bounded(1);
        let _task = self.spawn(self.clone().sock(id, start, woken));
        let shutdown = Cell::new(false);
        let sock = Sock {
            _task,
            wake,
            shutdown,
        };
        self.socks.borrow_mut().insert(id, sock);
    }

    fn wake(&self, id: SockId, shutdown: bool) {
        if let Some(s) = self.socks.borrow().get(&id) {
            s.shutdown.set(s.shutdown.get() || shutdown);
            // Full means a wake is already pending: one is enough.
            let _ = s.wake.try_send(());
        }
    }

    /// The earliest moment the timer task must act.
    fn deadline(&self) -> Option<Instant> {
        let ep = self.ep.borrow().poll_timeout();
        [ep, self.drain_deadline.get(), self.next_tick.get()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the tick hook if it is due, and schedules the next call.
    fn tick(self: &Rc<Self>, now: Instant) {
        if self.next_tick.get().is_none_or(|due| due > now) {
            return;
        }
        let mut opts = self.opts.borrow_mut();
        let Some((every, hook)) = opts.tick.as_mut() else {
            return;
        };
        self.next_tick.set(Some(now + *every));
        let reload = hook();
        drop(opts);
        if let Some(reload) = reload {
            self.ep.borrow_mut().reload(now, reload);
            self.settle();
        }
    }

    /// The task of one listener: accepts until dropped.
    async fn accept(self: Rc<Self>, l: AsyncListener) {
        loop {
            match l.accept().await {
                Ok((stream, peer)) => {
                    let now = Instant::now();
                    let id = self.ep.borrow_mut().accept(now, peer);
                    self.add(id, Start::Accepted(stream));
                    self.settle();
                    // Let the new socket's task run before the next accept, even in a flood.
                    future::yield_now().await;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                // EMFILE and friends: the connection stays queued; retry a little later rather
                // than spin on a listener that stays readable.
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The task of one socket: connects if asked to, then writes what the core offers, reads
    /// while the core wants bytes, and waits for readiness or a wake, until the core closes
    /// the socket (which drops this task) or the socket breaks.
    async fn sock(self: Rc<Self>, id: SockId, start: Start, woken: Receiver<()>) {
        let s = match start {
            Start::Accepted(s) => s,
            Start::Connect(target) => match Stream::connect(&target).await {
                Ok(s) => {
                    self.handle(Instant::now(), id, Input::Connected);
                    s
                }
                Err(e) => {
                    log::debug!("connect to {target:?} failed: {e}");
                    let failed = Input::ConnectFailed(connect_error(&e));
                    return self.handle(Instant::now(), id, failed);
                }
            },
        };
        let (mut eof, mut shut) = (false, false);
        loop {
            let _ = woken.try_recv();
            let now = Instant::now();
            let (mut read, mut write) = (false, false);
            loop {
                let wrote = {
                    let ep = self.ep.borrow();
                    let buf = ep.pending_write(id);
                    (!buf.is_empty()).then(|| s.write(buf))
                };
                match wrote {
                    None => {
                        let socks = self.socks.borrow();
                        if !shut && socks.get(&id).is_some_and(|x| x.shutdown.get()) {
                            shut = true;
                            let _ = s.shutdown_write();
                        }
                        break;
                    }
                    Some(Ok(n)) if n > 0 => self.ep.borrow_mut().consume_write(now, id, n),
                    Some(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                    Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => {
                        write = true;
                        break;
                    }
                    // A hard error: the socket is done; the core decides what follows.
                    Some(_) => return self.handle(now, id, Input::Error),
                }
            }
            let mut reads = 0;
            while !eof && reads < READS_PER_TURN && self.ep.borrow().wants_read(id) {
                reads += 1;
                let mut scratch = self.scratch.borrow_mut();
                match s.read(&mut scratch) {
                    Ok(0) => {
                        eof = true;
                        self.ep.borrow_mut().handle(now, id, Input::Eof);
                    }
                    Ok(n) => {
                        self.ep
                            .borrow_mut()
                            .handle(now, id, Input::Read(&scratch[..n]));
                        // A short read drained the socket: the next read would only say
                        // EAGAIN, so wait for readiness instead (re-arming the one-shot
                        // interest reports data that arrived meanwhile).
                        if n < scratch.len() {
                            read = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        read = true;
                        break;
                    }
                    Err(_) => {
                        drop(scratch);
                        return self.handle(now, id, Input::Error);
                    }
                }
            }
            self.settle();
            if reads == READS_PER_TURN && !read {
                // More to read, but the other tasks get their turn first.
                future::yield_now().await;
                continue;
            }
            let ready = future::or(
                async { woken.recv().await.map_err(|_| None) },
                future::or(when(read, s.readable()), when(write, s.writable())),
            );
            match ready.await {
                Ok(()) => {}
                // The sender went with the entry: the core closed this socket.
                Err(None) => return,
                Err(Some(e)) => {
                    log::debug!("socket readiness failed: {e}");
                    return self.handle(Instant::now(), id, Input::Error);
                }
            }
        }
    }

    /// The timer task: sleeps until [`Driver::deadline`], then expires the core's timers, runs
    /// the tick hook and ends a drain that took too long.
    async fn timers(self: Rc<Self>, rearmed: Receiver<()>) {
        loop {
            let _ = rearmed.try_recv();
            let next = self.deadline();
            self.armed.set(next);
            let timer = next.map_or_else(Timer::never, Timer::at);
            let rearmed = async {
                let _ = rearmed.recv().await;
            };
            future::or(
                async {
                    timer.await;
                },
                rearmed,
            )
            .await;
            let now = Instant::now();
            if self.ep.borrow().poll_timeout().is_some_and(|t| t <= now) {
                self.ep.borrow_mut().handle_timeout(now);
                self.settle();
            }
            self.tick(now);
            if self.drain_deadline.get().is_some_and(|t| t <= now) {
                log::warn!("drain timeout passed with connections still open");
                let _ = self.done.try_send(());
                return;
            }
            // A deadline that stays due (a core bug) must not starve the other tasks.
            future::yield_now().await;
        }
    }

    /// The signal task: reads caught signals off the self-pipe.
    async fn signals(self: Rc<Self>, mut rx: Async<UnixStream>) {
        let mut sigs = [0u8; 16];
        loop {
            let n = match rx.read(&mut sigs).await {
                // End of file: the relay is gone, and no signal can come any more.
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return log::error!("cannot read caught signals: {e}"),
            };
            let now = Instant::now();
            if sigs[..n].iter().any(|&sig| self.on_signal(now, sig.into())) {
                log::warn!("second stop signal: exiting without waiting");
                let _ = self.done.try_send(());
                return;
            }
        }
    }

    /// Handles one caught signal; true asks the driver to return at once.
    fn on_signal(self: &Rc<Self>, now: Instant, sig: libc::c_int) -> bool {
        if sig == libc::SIGHUP {
            log::debug!("SIGHUP received");
            let reload = (self.opts.borrow_mut().on_hangup)();
            if let Some(reload) = reload {
                self.ep.borrow_mut().reload(now, reload);
                self.settle();
            }
            return false;
        }
        if self.drain_deadline.get().is_some() {
            return true;
        }
        log::info!("stop signal received: draining connections");
        drop(self.acceptors.take());
        let drain_timeout = self.opts.borrow().drain_timeout;
        self.drain_deadline.set(Some(now + drain_timeout));
        self.next_tick.set(None);
        self.ep.borrow_mut().begin_drain(now);
        self.settle();
        false
    }
}

/// `ready` if `cond`, else never; errors carried for the socket task.
async fn when(
    cond: bool,
    ready: impl Future<Output = io::Result<()>>,
) -> Result<(), Option<io::Error>> {
    if !cond {
        return future::pending().await;
    }
    ready.await.map_err(Some)
}

fn connect_error(e: &io::Error) -> ConnectError {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED | libc::ENOENT) => ConnectError::Refused,
        _ => ConnectError::Other,
    }
}
