//! A mio event loop that drives [`mdproxy_core::endpoint::Endpoint`], for every role.
//!
//! The loop owns sockets and nothing else: it reports reads, EOFs, errors and connect results
//! to the endpoint, carries out the [`Action`]s it is given in order, and writes what
//! [`Endpoint::pending_write`] offers. Every protocol decision (framing, limits, rewrites,
//! timeouts, back-pressure) is the core's; this crate holds no byte beyond one scratch read.
//!
//! Readiness is edge-triggered: each socket is registered once for both directions and keeps
//! "readable"/"writable" flags that are set by events and cleared by `WouldBlock`. A socket
//! the core paused ([`Endpoint::wants_read`] false) keeps its readable flag, so the
//! [`Action::Wake`] that resumes it reads the bytes no new event would announce.
//!
//! Signals: [`run`] catches SIGTERM and SIGINT (drain, then return) and SIGHUP
//! ([`RunOptions::on_hangup`], whose [`Reload`] goes to [`Endpoint::reload`]); see `signal.rs`.
//! Hooks: [`RunOptions::tick`] runs on a timer (e.g. to notice changed files) and feeds its
//! [`Reload`] to the endpoint the same way; [`endpoint::Event::Store`] goes to [`RunOptions::on_store`].
//! The hooks run on the loop's thread, between events: they should be quick.
//! Writes to a closed peer are errors, not SIGPIPE: std sends with `MSG_NOSIGNAL` on Linux,
//! and Rust binaries ignore SIGPIPE anyway.
//!
//! Workers: [`run_workers`] runs the same loop on N threads, each with its own [`Endpoint`]
//! (so its own connections, pool and cache) on its own handle of the shared listeners; the
//! calling thread only relays each caught signal to every worker. [`run_loops`] does the same
//! for loops of different endpoints (the demo's three roles). See `workers.rs`.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::mem;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mdproxy_core::config::{EndpointConfig, Reload};
use mdproxy_core::endpoint::{self, Endpoint};
use mdproxy_core::metadata::StoreRequest;
use mdproxy_core::socket::{Action, ConnectError, Input, SockId};
use mio::event::Event;
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Registry, Token};

pub use net::Listener;
use net::Stream;
use signal::SignalGuard;
pub use workers::{run_loops, run_workers, Loop};

#[macro_use]
mod net;
mod signal;
mod workers;

const SIGNALS: Token = Token(usize::MAX);
/// Socket tokens start after the listeners' (`Token(i)` for listener `i`).
const FIRST_SOCK: usize = 1 << 16;
const SCRATCH: usize = 64 * 1024;

/// How [`run`] behaves around the endpoint.
pub struct RunOptions {
    /// After SIGTERM/SIGINT, how long busy connections may take to finish before `run`
    /// returns anyway.
    pub drain_timeout: Duration,
    /// Called on SIGHUP, from the loop's thread (not from the signal handler). What it returns
    /// is handed to [`Endpoint::reload`]; `None` changes nothing (e.g. the new data was bad and
    /// the hook logged why).
    pub on_hangup: Box<dyn FnMut() -> Option<Reload> + Send>,
    /// Called for every [`endpoint::Event::Store`] (a password the server accepted and already serves
    /// from memory), from the loop's thread. The default logs that nothing was persisted.
    pub on_store: Box<dyn FnMut(StoreRequest) + Send>,
    /// A periodic hook: called once when the loop starts, then at least every interval (the
    /// loop wakes for it), also while busy. What it returns goes to [`Endpoint::reload`], as
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
/// returns `Ok(())`. A second SIGTERM/SIGINT returns at once. Errors are failures of the
/// poller itself. Installs process-wide handlers for SIGTERM, SIGINT and SIGHUP for its
/// duration, so call `run` (or [`run_workers`] or [`run_loops`], for several loops) once per
/// process.
pub fn run(cfg: EndpointConfig, listeners: Vec<Listener>, opts: RunOptions) -> io::Result<()> {
    let (sig_rx, sig_tx) = UnixStream::pair()?;
    let _signals = SignalGuard::install(sig_tx)?;
    serve(cfg, listeners, opts, sig_rx)
}

/// The loop itself. `sig_rx` delivers caught signals, one byte (the signal number) each:
/// straight from the handler, or relayed by [`run_loops`].
fn serve(
    cfg: EndpointConfig,
    listeners: Vec<Listener>,
    opts: RunOptions,
    mut sig_rx: UnixStream,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut sig_rx, SIGNALS, Interest::READABLE)?;
    let mut listeners: Vec<Option<Listener>> = listeners.into_iter().map(Some).collect();
    for (i, l) in listeners.iter_mut().flatten().enumerate() {
        poll.registry()
            .register(l.source(), Token(i), Interest::READABLE)?;
    }
    let mut now = Instant::now();
    let mut d = Driver {
        ep: Endpoint::new(now, cfg),
        registry: poll.registry().try_clone()?,
        socks: HashMap::new(),
        scratch: vec![0; SCRATCH],
        listeners,
        drain_deadline: None,
        next_tick: opts.tick.is_some().then_some(now),
        opts,
    };
    d.settle(now);
    d.tick(now);
    let mut events = Events::with_capacity(1024);
    loop {
        let deadline = [d.ep.poll_timeout(), d.drain_deadline, d.next_tick]
            .into_iter()
            .flatten()
            .min();
        let timeout = deadline.map(|t| t.saturating_duration_since(now));
        let polled = poll.poll(&mut events, timeout);
        now = Instant::now();
        match polled {
            Err(e) if e.kind() != ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => {
                    let mut sigs = [0u8; 16];
                    while let Ok(n @ 1..) = sig_rx.read(&mut sigs) {
                        if sigs[..n].iter().any(|&sig| d.on_signal(now, sig.into())) {
                            log::warn!("second stop signal: exiting without waiting");
                            return Ok(());
                        }
                    }
                }
                Token(i) if i < FIRST_SOCK => d.accept_all(now, i),
                Token(t) => d.on_event(now, SockId((t - FIRST_SOCK) as u64), ev),
            }
        }
        if d.ep.poll_timeout().is_some_and(|t| t <= now) {
            d.ep.handle_timeout(now);
            d.settle(now);
        }
        d.tick(now);
        match d.drain_deadline {
            Some(_) if d.ep.is_drained() => return Ok(()),
            Some(t) if t <= now => {
                log::warn!("drain timeout passed with connections still open");
                return Ok(());
            }
            _ => {}
        }
    }
}

/// One socket and what the last events and `WouldBlock`s said about it.
struct Sock {
    stream: Stream,
    connecting: bool,
    readable: bool,
    writable: bool,
    /// The peer's FIN (or an error) was reported: read until end of stream, since no further
    /// edge will announce it.
    read_closed: bool,
    eof: bool,
    /// The core asked for a half-close; done once its pending bytes are written.
    shutdown: bool,
}

struct Driver {
    ep: Endpoint,
    registry: Registry,
    socks: HashMap<SockId, Sock>,
    scratch: Vec<u8>,
    /// `Token(i)` is `listeners[i]`; `None` once draining.
    listeners: Vec<Option<Listener>>,
    opts: RunOptions,
    drain_deadline: Option<Instant>,
    /// When [`RunOptions::tick`] is due; `None` without one, or once draining.
    next_tick: Option<Instant>,
}

impl Driver {
    /// Runs the tick hook if it is due, and schedules the next call.
    fn tick(&mut self, now: Instant) {
        let (Some(due), Some((every, hook))) = (self.next_tick, self.opts.tick.as_mut()) else {
            return;
        };
        if due > now {
            return;
        }
        self.next_tick = Some(now + *every);
        if let Some(reload) = hook() {
            self.ep.reload(now, reload);
            self.settle(now);
        }
    }

    /// Handles one caught signal; true asks the loop to return at once.
    fn on_signal(&mut self, now: Instant, sig: libc::c_int) -> bool {
        if sig == libc::SIGHUP {
            log::debug!("SIGHUP received");
            if let Some(reload) = (self.opts.on_hangup)() {
                self.ep.reload(now, reload);
                self.settle(now);
            }
            return false;
        }
        if self.drain_deadline.is_some() {
            return true;
        }
        log::info!("stop signal received: draining connections");
        for mut l in self.listeners.iter_mut().filter_map(Option::take) {
            let _ = self.registry.deregister(l.source());
        }
        self.drain_deadline = Some(now + self.opts.drain_timeout);
        self.next_tick = None;
        self.ep.begin_drain(now);
        self.settle(now);
        false
    }

    fn accept_all(&mut self, now: Instant, i: usize) {
        while let Some(Some(l)) = self.listeners.get(i) {
            match l.accept() {
                Ok((stream, peer)) => {
                    let id = self.ep.accept(now, peer);
                    // Registering reports the current readiness, so no read is needed here.
                    self.add(id, stream, false);
                    self.settle(now);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // EMFILE and friends leave the connection queued for the next wake-up.
                Err(e) => return log::warn!("accept failed: {e}"),
            }
        }
    }

    fn add(&mut self, id: SockId, mut stream: Stream, connecting: bool) {
        let token = Token(FIRST_SOCK + id.0 as usize);
        let both = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.registry.register(stream.source(), token, both) {
            log::warn!("cannot register socket: {e}");
        }
        let ready = !connecting;
        let sock = Sock {
            stream,
            connecting,
            readable: ready,
            writable: ready,
            read_closed: false,
            eof: false,
            shutdown: false,
        };
        self.socks.insert(id, sock);
    }

    /// Carries out every queued action, in order. Wakes are served inline so that a later
    /// `Shutdown` or `Close` of the same socket never overtakes its bytes.
    fn settle(&mut self, now: Instant) {
        while let Some(action) = self.ep.poll_action() {
            match action {
                Action::Connect { sock, target } => match Stream::connect(&target) {
                    Ok(stream) => self.add(sock, stream, true),
                    Err(e) => {
                        log::debug!("connect to {target:?} failed: {e}");
                        let failed = Input::ConnectFailed(connect_error(&e));
                        self.ep.handle(now, sock, failed);
                    }
                },
                Action::Wake(sock) => self.pump(now, sock),
                Action::Shutdown(sock) => {
                    if let Some(s) = self.socks.get_mut(&sock) {
                        s.shutdown = true;
                        self.pump(now, sock);
                    }
                }
                // Closing the descriptor takes it out of epoll's interest list (descriptors
                // are never duplicated here), so no deregister: a syscall less per connection.
                Action::Close(sock) => drop(self.socks.remove(&sock)),
            }
        }
        while let Some(endpoint::Event::Store(req)) = self.ep.poll_event() {
            (self.opts.on_store)(req);
        }
    }

    fn on_event(&mut self, now: Instant, id: SockId, ev: &Event) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        s.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
        s.read_closed |= ev.is_read_closed() || ev.is_error();
        s.writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
        if s.connecting && s.writable {
            match s.stream.connected() {
                Ok(()) => {
                    s.connecting = false;
                    self.ep.handle(now, id, Input::Connected);
                }
                Err(e) if e.kind() == ErrorKind::NotConnected => {
                    s.writable = false; // spurious wake-up: still connecting
                    return;
                }
                Err(e) => {
                    // The core closes the socket: nothing more to read or write on it.
                    self.ep
                        .handle(now, id, Input::ConnectFailed(connect_error(&e)));
                    return self.settle(now);
                }
            }
        }
        self.pump(now, id);
        self.settle(now);
    }

    /// Writes what the core offers, then reads while the core wants bytes, until the socket
    /// would block. Leaves the queued actions to the caller's `settle`, which keeps their order.
    fn pump(&mut self, now: Instant, id: SockId) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        if s.connecting {
            return;
        }
        while s.writable {
            let buf = self.ep.pending_write(id);
            if buf.is_empty() {
                if mem::take(&mut s.shutdown) {
                    let _ = either!(&s.stream, x => x.shutdown(Shutdown::Write));
                }
                break;
            }
            let offered = buf.len();
            match either!(&mut s.stream, x => x.write(buf)) {
                Ok(n) if n > 0 => {
                    // A short write means the send buffer is full: skip the write that would
                    // only say WouldBlock; the next writable edge resumes.
                    s.writable = n == offered;
                    self.ep.consume_write(now, id, n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => s.writable = false,
                _ => return broken(&mut self.ep, now, id, s),
            }
        }
        while s.readable && !s.eof && self.ep.wants_read(id) {
            match either!(&mut s.stream, x => x.read(&mut self.scratch)) {
                Ok(0) => {
                    s.eof = true;
                    self.ep.handle(now, id, Input::Eof);
                }
                Ok(n) => {
                    // A short read drained the socket: on Linux's edge-triggered epoll, more
                    // data raises a new edge, so the read that would only say WouldBlock is
                    // skipped (a syscall per wake-up). A pending FIN raises none: keep reading.
                    if n < self.scratch.len() && !s.read_closed {
                        s.readable = false;
                    }
                    self.ep.handle(now, id, Input::Read(&self.scratch[..n]));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => s.readable = false,
                Err(_) => return broken(&mut self.ep, now, id, s),
            }
        }
    }
}

/// A hard read or write error: the socket is done; the core decides what follows.
fn broken(ep: &mut Endpoint, now: Instant, id: SockId, s: &mut Sock) {
    (s.readable, s.writable) = (false, false);
    ep.handle(now, id, Input::Error);
}

fn connect_error(e: &io::Error) -> ConnectError {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED | libc::ENOENT) => ConnectError::Refused,
        _ => ConnectError::Other,
    }
}
