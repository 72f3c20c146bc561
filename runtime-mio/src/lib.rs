//! A mio event loop that drives [`mdproxy_core::endpoint::Endpoint`], for every role: the
//! [`Serve`](mdproxy_shell::Serve) of the mio runtime, run by [`mdproxy_shell`] (which owns the
//! listeners, signals, workers and hooks).
//!
//! The loop owns sockets and nothing else: it reports reads, EOFs, errors and connect results
//! to the endpoint, carries out the [`Action`]s it is given in order, and writes what
//! [`Endpoint::pending_write`] offers. Every protocol decision (framing, limits, rewrites,
//! timeouts, back-pressure) is the core's; this crate holds no byte beyond one scratch read.
//!
//! Readiness is edge-triggered: each socket is registered once for both directions and keeps
//! "readable"/"writable" flags that are set by events and cleared by `WouldBlock`. A socket
//! the core paused ([`Endpoint::wants_read`] false) keeps its readable flag, so the
//! [`Action::Wake`] that resumes it reads the bytes no new event would announce. For the same
//! reason a socket that used up its reads of the turn ([`turn::READS_PER_TURN`]) and a listener
//! that used up its accepts, or backs off after running out of descriptors ([`Acceptor`]), are
//! remembered and revisited by the loop itself: the next poll does not wait for them.
//!
//! Listeners may come and go while it runs ([`RunOptions::commands`]): a listener's token is
//! its slot in a table whose free slots are reused, so removing one renumbers none of the
//! others, and its sockets' connections are the endpoint's to finish.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::mem;
use std::net::Shutdown;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, Instant};

use mdproxy_core::config::EndpointConfig;
use mdproxy_core::endpoint::Endpoint;
use mdproxy_core::listener::ListenerId;
use mdproxy_core::socket::{Action, Input, SockId};
use mdproxy_shell::{
    connect_error, either, turn, AcceptFailed, Acceptor, Command, Commands, Control, Listener,
    RunOptions, Signalled,
};
use mio::event::Event;
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Registry, Token};

use net::{Listening, Stream};

mod net;

const SIGNALS: Token = Token(usize::MAX);
const COMMANDS: Token = Token(usize::MAX - 1);
/// Socket tokens start after the listeners' (`Token(i)` for listener `i`).
const FIRST_SOCK: usize = 1 << 16;

/// Runs one mio loop on the calling thread; see [`mdproxy_shell::Serve`].
pub fn serve(
    cfg: EndpointConfig,
    listeners: Vec<Listener>,
    mut opts: RunOptions,
    signals: StdUnixStream,
) -> io::Result<()> {
    let mut sig_rx = UnixStream::from_std(signals);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut sig_rx, SIGNALS, Interest::READABLE)?;
    let commands = opts.commands.take();
    // Registered for the wake-ups; `Commands::take` reads the bytes through its own handle.
    let _wake = match &commands {
        Some(c) => {
            let mut rx = UnixStream::from_std(c.wake_socket().try_clone()?);
            poll.registry()
                .register(&mut rx, COMMANDS, Interest::READABLE)?;
            Some(rx)
        }
        None => None,
    };
    let mut now = Instant::now();
    let mut d = Driver {
        ep: Endpoint::new(now, cfg),
        ctl: Control::new(now, opts),
        registry: poll.registry().try_clone()?,
        socks: HashMap::new(),
        scratch: vec![0; turn::READ_CHUNK],
        ports: Vec::with_capacity(listeners.len()),
        again: Vec::new(),
    };
    for l in listeners {
        d.add_port(l)?;
    }
    if d.ctl.on_time(now, &mut d.ep) {
        d.settle(now);
    }
    let mut events = Events::with_capacity(1024);
    loop {
        let polled = poll.poll(&mut events, d.timeout(now));
        now = Instant::now();
        match polled {
            Err(e) if e.kind() != ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS if d.on_signals(now, &mut sig_rx) => return Ok(()),
                SIGNALS => {}
                COMMANDS => {
                    if let Some(c) = &commands {
                        d.on_commands(now, c);
                    }
                }
                Token(i) if i < FIRST_SOCK => d.accept(now, i),
                Token(t) => d.on_event(now, SockId((t - FIRST_SOCK) as u64), ev),
            }
        }
        d.revisit(now);
        if d.ctl.on_time(now, &mut d.ep) {
            d.settle(now);
        }
        if d.ctl.finished(now, &d.ep) {
            return Ok(());
        }
    }
}

/// One listener and when the loop must come back to it without an event.
struct Port {
    /// The scoped listener it serves, if any.
    id: Option<ListenerId>,
    socket: Listening,
    acceptor: Acceptor,
    /// Connections may be queued: accept again at this instant (now, when the turn's accepts
    /// ran out; a little later, after running out of descriptors).
    retry: Option<Instant>,
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
    ctl: Control,
    registry: Registry,
    socks: HashMap<SockId, Sock>,
    scratch: Vec<u8>,
    /// `Token(i)` is `ports[i]`; a removed listener leaves its slot free for the next one.
    /// Empty once draining.
    ports: Vec<Option<Port>>,
    /// Sockets that used up their reads of the turn while still readable.
    again: Vec<SockId>,
}

impl Driver {
    /// How long the next poll may wait: not at all when a socket or listener has work left
    /// from this turn, else until the next deadline or retry.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() {
            return Some(Duration::ZERO);
        }
        let retry = self.ports.iter().flatten().filter_map(|p| p.retry).min();
        let next = [self.ctl.deadline(&self.ep), retry].into_iter().flatten();
        next.min().map(|t| t.saturating_duration_since(now))
    }

    /// Reads the signal socket; true asks the loop to return at once.
    fn on_signals(&mut self, now: Instant, rx: &mut UnixStream) -> bool {
        let mut sigs = [0u8; 16];
        while let Ok(n @ 1..) = rx.read(&mut sigs) {
            match self.ctl.on_signals(now, &sigs[..n], &mut self.ep) {
                Signalled::Exit => return true,
                Signalled::Drain => {
                    for mut p in self.ports.drain(..).flatten() {
                        let _ = self.registry.deregister(p.socket.source());
                    }
                }
                Signalled::Settle => {}
            }
            self.settle(now);
        }
        false
    }

    /// Serves the sockets and listeners left with work by the last turn.
    fn revisit(&mut self, now: Instant) {
        for id in mem::take(&mut self.again) {
            self.pump(now, id);
            self.settle(now);
        }
        for i in 0..self.ports.len() {
            let due = self.ports[i].as_ref().and_then(|p| p.retry);
            if due.is_some_and(|t| t <= now) {
                self.accept(now, i);
            }
        }
    }

    /// Registers listener `l` in the first free slot.
    fn add_port(&mut self, l: Listener) -> io::Result<()> {
        let free = self.ports.iter().position(Option::is_none);
        let i = free.unwrap_or(self.ports.len());
        if i >= FIRST_SOCK {
            return Err(io::Error::other("too many listeners"));
        }
        let (id, acceptor) = (l.id(), Acceptor::new(&l));
        let mut socket = Listening::new(l.into_socket());
        (self.registry).register(socket.source(), Token(i), Interest::READABLE)?;
        let port = Some(Port {
            id,
            socket,
            acceptor,
            retry: None,
        });
        match free {
            Some(_) => self.ports[i] = port,
            None => self.ports.push(port),
        }
        Ok(())
    }

    /// Carries out the queued listener commands. A listener registered with epoll reports
    /// the connections already queued on it, so an added one needs no accept here.
    fn on_commands(&mut self, now: Instant, commands: &Commands) {
        for cmd in commands.take() {
            match cmd {
                // Once draining, nothing new is served: the sockets are dropped (closed).
                Command::Add { .. } if self.ctl.draining() => {}
                Command::Add { id, scope, sockets } => {
                    self.ep.add_listener(id, scope);
                    for l in sockets {
                        let name = l.to_string();
                        if let Err(e) = self.add_port(l.scoped(id)) {
                            log::error!("cannot serve {name}: {e}");
                        }
                    }
                }
                Command::Remove(id) => {
                    for slot in &mut self.ports {
                        if slot.as_ref().is_some_and(|p| p.id == Some(id)) {
                            if let Some(mut p) = slot.take() {
                                let _ = self.registry.deregister(p.socket.source());
                            }
                        }
                    }
                    self.ep.remove_listener(now, id);
                }
            }
        }
        self.settle(now);
    }

    /// Accepts on listener `i` until its queue is empty, it fails, or its turn is over.
    fn accept(&mut self, now: Instant, i: usize) {
        for _ in 0..turn::ACCEPTS_PER_TURN {
            let Some(Some(p)) = self.ports.get_mut(i) else {
                return;
            };
            p.retry = None;
            match p.socket.accept() {
                Ok((stream, peer)) => {
                    p.acceptor.accepted();
                    let id = match p.id {
                        Some(listener) => self.ep.accept_on(now, peer, listener),
                        None => self.ep.accept(now, peer),
                    };
                    // Registering reports the current readiness, so no read is needed here.
                    self.add(id, stream, false);
                    self.settle(now);
                }
                Err(e) => match p.acceptor.failed(now, &e) {
                    AcceptFailed::Again => {}
                    AcceptFailed::Empty => return,
                    AcceptFailed::BackOff(at) => return p.retry = Some(at),
                },
            }
        }
        if let Some(Some(p)) = self.ports.get_mut(i) {
            p.retry = Some(now);
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
                Action::SetHopLimit { sock, hops } => {
                    if let Some(s) = self.socks.get(&sock) {
                        s.stream.set_hop_limit(hops);
                    }
                }
            }
        }
        self.ctl.on_events(&mut self.ep);
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
    /// would block or its reads of the turn are used up. Leaves the queued actions to the
    /// caller's `settle`, which keeps their order.
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
                    let _ = either!(Stream: &s.stream, x => x.shutdown(Shutdown::Write));
                }
                break;
            }
            let offered = buf.len();
            match either!(Stream: &mut s.stream, x => x.write(buf)) {
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
        let mut reads = 0;
        while s.readable && !s.eof && self.ep.wants_read(id) {
            if reads == turn::READS_PER_TURN {
                self.again.push(id);
                break;
            }
            reads += 1;
            match either!(Stream: &mut s.stream, x => x.read(&mut self.scratch)) {
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
