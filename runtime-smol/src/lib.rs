//! A smol/async-io executor that drives [`mdproxy_core::endpoint::Endpoint`], for every role:
//! the [`Serve`](mdproxy_shell::Serve) of the smol runtime.
//!
//! The driver owns sockets and nothing else: it reports reads, EOFs, errors and connect
//! results to the endpoint, carries out the [`Action`]s it is given in order, and writes what
//! [`Endpoint::pending_write`] offers. Every protocol decision (framing, limits, rewrites,
//! timeouts, back-pressure) is the core's; this crate holds no byte beyond one scratch read.
//!
//! Shape: one single-threaded [`LocalExecutor`] per worker, whose tasks share the endpoint in
//! a `RefCell`, never borrowed across an `.await`. One task per socket (accepted or
//! connected) writes what the core offers, reads only while [`Endpoint::wants_read`] (so a
//! peer that does not read cannot make us buffer) and at most [`turn::READS_PER_TURN`] times
//! before it lets the others run, then awaits readiness or its wake channel,
//! which [`Action::Wake`] and [`Action::Shutdown`] signal; [`Action::Close`] drops the task and
//! its socket. One task per listener accepts, yielding after every connection and sleeping
//! through the [`Acceptor`]'s back-off; a timer task sleeps until the earliest of
//! [`Endpoint::poll_timeout`], the drain deadline and the next tick, and is woken to re-arm
//! when that moves earlier; a signal task reads the self-pipe. Every mutation ends in
//! `Driver::settle`, the one place that drains [`Endpoint::poll_action`] and routes each
//! action to its task.
//!
//! Listeners may come and go while it runs ([`RunOptions::commands`]): a commands task waits
//! on the queue's wake socket and starts or drops the accept tasks of a scoped listener;
//! dropping them closes its sockets, and its connections are the endpoint's to finish.
//!
//! The listeners, signals, workers and hooks are [`mdproxy_shell`]'s, which runs [`serve`];
//! the tick, signal and drain bookkeeping is its [`Control`], the accept policy its
//! [`Acceptor`] and the per-turn caps its [`turn`] constants, the same as the mio loop's.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, ErrorKind};
use std::os::unix::net::UnixStream;
use std::rc::{Rc, Weak};
use std::time::Instant;

use async_io::{Async, Timer};
use mdproxy_core::config::EndpointConfig;
use mdproxy_core::endpoint::Endpoint;
use mdproxy_core::listener::ListenerId;
use mdproxy_core::socket::{Action, Input, SockId, Target};
use mdproxy_shell::{
    connect_error, turn, AcceptFailed, Acceptor, Command, Commands, Control, Listener, RunOptions,
    Signalled,
};
use smol::channel::{self, Receiver, Sender};
use smol::future::{self, Future};
use smol::io::AsyncReadExt;
use smol::{LocalExecutor, Task};

use net::{AsyncListener, Stream};

mod net;

/// Runs one executor on the calling thread; see [`mdproxy_shell::Serve`].
pub fn serve(
    cfg: EndpointConfig,
    listeners: Vec<Listener>,
    mut opts: RunOptions,
    signals: UnixStream,
) -> io::Result<()> {
    let sig_rx = Async::new(signals)?;
    let commands = match opts.commands.take() {
        Some(c) => Some((Async::new(c.wake_socket().try_clone()?)?, c)),
        None => None,
    };
    let mut ports = Vec::with_capacity(listeners.len());
    for l in listeners {
        let acceptor = Acceptor::new(&l);
        ports.push((l.id(), AsyncListener::new(l.into_socket())?, acceptor));
    }
    let ex = Rc::new(LocalExecutor::new());
    let (rearm, rearmed) = channel::bounded(1);
    let (done, finished) = channel::bounded(1);
    let now = Instant::now();
    let d = Rc::new(Driver {
        ep: RefCell::new(Endpoint::new(now, cfg)),
        ctl: RefCell::new(Control::new(now, opts)),
        ex: Rc::downgrade(&ex),
        socks: RefCell::default(),
        acceptors: RefCell::default(),
        scoped: RefCell::default(),
        scratch: RefCell::new(vec![0; turn::READ_CHUNK]),
        armed: Cell::new(None),
        rearm,
        done,
    });
    let main = async {
        let acceptors = ports
            .into_iter()
            .map(|(id, l, a)| d.spawn(d.clone().accept(id, l, a)));
        *d.acceptors.borrow_mut() = acceptors.collect();
        d.on_time(now);
        let _timers = d.spawn(d.clone().timers(rearmed));
        let _signals = d.spawn(d.clone().signals(sig_rx));
        let _commands = commands.map(|(wake, c)| d.spawn(d.clone().commands(wake, c)));
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
    /// A hop limit the core asked for, which the task (owner of the socket) sets before it
    /// writes again.
    hop_limit: Cell<Option<u8>>,
}

/// How a socket task starts.
enum Start {
    Accepted(Stream),
    Connect(Target),
}

/// What every task of one executor shares.
struct Driver {
    ep: RefCell<Endpoint>,
    ctl: RefCell<Control>,
    /// Weak: the executor owns the tasks, which own the driver.
    ex: Weak<LocalExecutor<'static>>,
    socks: RefCell<HashMap<SockId, Sock>>,
    /// Dropped (and their listeners closed) once draining.
    acceptors: RefCell<Vec<Task<()>>>,
    /// The accept tasks of each scoped listener added by a command; the same.
    scoped: RefCell<BTreeMap<ListenerId, Vec<Task<()>>>>,
    scratch: RefCell<Vec<u8>>,
    /// The deadline the timer task sleeps until.
    armed: Cell<Option<Instant>>,
    rearm: Sender<()>,
    /// Tells `serve` to return; sent once.
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
                Action::SetHopLimit { sock, hops } => {
                    if let Some(s) = self.socks.borrow().get(&sock) {
                        s.hop_limit.set(Some(hops));
                    }
                    self.wake(sock, false);
                }
                Action::Close(sock) => {
                    let gone = self.socks.borrow_mut().remove(&sock);
                    drop(gone);
                }
            }
        }
        self.ctl.borrow_mut().on_events(&mut self.ep.borrow_mut());
        let (ctl, ep) = (self.ctl.borrow(), self.ep.borrow());
        // The clock only once draining: settling is the hot path.
        if ctl.draining() && ctl.finished(Instant::now(), &ep) {
            let _ = self.done.try_send(());
        }
        let next = ctl.deadline(&ep);
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
            hop_limit: Cell::new(None),
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

    /// Expires the core's due timers and runs the tick hook if due.
    fn on_time(self: &Rc<Self>, now: Instant) {
        if self
            .ctl
            .borrow_mut()
            .on_time(now, &mut self.ep.borrow_mut())
        {
            self.settle();
        }
    }

    /// The task of one listener (of the scoped listener `listener`, if any): accepts until
    /// dropped.
    async fn accept(
        self: Rc<Self>,
        listener: Option<ListenerId>,
        l: AsyncListener,
        mut acceptor: Acceptor,
    ) {
        loop {
            match l.accept().await {
                Ok((stream, peer)) => {
                    acceptor.accepted();
                    let now = Instant::now();
                    let id = match listener {
                        Some(scoped) => self.ep.borrow_mut().accept_on(now, peer, scoped),
                        None => self.ep.borrow_mut().accept(now, peer),
                    };
                    self.add(id, Start::Accepted(stream));
                    self.settle();
                    // One connection per turn (within turn::ACCEPTS_PER_TURN): the new socket's
                    // task reads before the next accept, even in a flood, so that a connection
                    // that has already ended leaves the core's limits before the next is judged.
                    future::yield_now().await;
                }
                // The async accept waits for readiness itself: `Empty` does not reach here.
                Err(e) => match acceptor.failed(Instant::now(), &e) {
                    AcceptFailed::Again | AcceptFailed::Empty => {}
                    AcceptFailed::BackOff(at) => {
                        Timer::at(at).await;
                    }
                },
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
            let hops = (self.socks.borrow().get(&id)).and_then(|x| x.hop_limit.take());
            if let Some(hops) = hops {
                s.set_hop_limit(hops);
            }
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
            while !eof && reads < turn::READS_PER_TURN && self.ep.borrow().wants_read(id) {
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
            if reads == turn::READS_PER_TURN && !read {
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

    /// The timer task: sleeps until [`Control::deadline`], then expires the core's timers, runs
    /// the tick hook and ends a drain that took too long.
    async fn timers(self: Rc<Self>, rearmed: Receiver<()>) {
        loop {
            let _ = rearmed.try_recv();
            let next = self.ctl.borrow().deadline(&self.ep.borrow());
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
            self.on_time(now);
            if self.ctl.borrow().finished(now, &self.ep.borrow()) {
                let _ = self.done.try_send(());
                return;
            }
            // A deadline that stays due (a core bug) must not starve the other tasks.
            future::yield_now().await;
        }
    }

    /// The commands task: carries out the listener commands queued for this loop.
    async fn commands(self: Rc<Self>, wake: Async<UnixStream>, commands: Commands) {
        loop {
            if let Err(e) = wake.readable().await {
                return log::error!("cannot wait for listener commands: {e}");
            }
            for cmd in commands.take() {
                match cmd {
                    // Once draining, nothing new is served: the sockets are dropped (closed).
                    Command::Add { .. } if self.ctl.borrow().draining() => {}
                    Command::Add { id, scope, sockets } => self.add_scoped(id, scope, sockets),
                    Command::Remove(id) => {
                        drop(self.scoped.borrow_mut().remove(&id));
                        self.ep.borrow_mut().remove_listener(Instant::now(), id);
                    }
                }
            }
            self.settle();
        }
    }

    /// Registers `scope` as `id` and starts accepting on its sockets.
    fn add_scoped(
        self: &Rc<Self>,
        id: ListenerId,
        scope: mdproxy_core::listener::ScopedListener,
        sockets: Vec<Listener>,
    ) {
        self.ep.borrow_mut().add_listener(id, scope);
        for l in sockets {
            let (name, acceptor) = (l.to_string(), Acceptor::new(&l));
            match AsyncListener::new(l.into_socket()) {
                Ok(l) => {
                    let task = self.spawn(self.clone().accept(Some(id), l, acceptor));
                    self.scoped.borrow_mut().entry(id).or_default().push(task);
                }
                Err(e) => log::error!("cannot serve {name}: {e}"),
            }
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
            let asked =
                self.ctl
                    .borrow_mut()
                    .on_signals(now, &sigs[..n], &mut self.ep.borrow_mut());
            match asked {
                Signalled::Exit => {
                    let _ = self.done.try_send(());
                    return;
                }
                // Closes the listeners before the endpoint's closes of idle connections.
                Signalled::Drain => {
                    drop(self.acceptors.take());
                    drop(self.scoped.take());
                }
                Signalled::Settle => {}
            }
            self.settle();
        }
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
