//! One client connection and the exchange it has with an upstream on each request, for any
//! role: the connection owns framing, keep-alive, back-pressure, limits and timers, and asks
//! for every decision as an [`Output`] (what to do with this head, an upstream socket, whether
//! an answer stands); the answers come back as calls. It knows no role, header name or
//! status beyond HTTP's framing (h11's "does not know about what role we're playing").
//!
//! States (one request in flight per client; pipelined bytes wait in `inbuf`):
//!
//! | phase     | on                          | next                                         |
//! |-----------|-----------------------------|----------------------------------------------|
//! | Head      | complete head               | Exchange (routed by the owner)               |
//! | Head      | bad head / limit / timeout  | Closing (error answer queued)                |
//! | Head      | idle timeout, EOF           | Closed                                       |
//! | Exchange  | response complete, reusable | Head (upstream released clean)               |
//! | Exchange  | response complete, not      | Closing                                      |
//! | Exchange  | upstream fails before head  | Head or Closing (an error answer queued)     |
//! | Exchange  | …a GET/HEAD, servers left   | Exchange (sent again, to another server)     |
//! | Exchange  | request deadline passes     | Head or Closing (504, or a stale answer)     |
//! | Exchange  | upstream fails after head   | Closed                                       |
//! | Closing   | output flushed              | Lingering (write side shut down)             |
//! | Closing   | flushed, nothing unread     | Closed (the client asked to close)           |
//! | Lingering | EOF, timeout                | Closed                                       |

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

mod answer;
#[cfg(test)]
mod failover_tests;
#[cfg(test)]
mod tests;
mod timeout;
mod upstream;

use super::decision::{Output, Route, Ticket};
use super::exchange::{deadline_in, Exchange, Resp, Sink, Stage, HIGH_WATER};
use crate::config::Timeouts;
use crate::http::{
    normalize_target, Body, BodyDecoder, BodyKind, HeadScanner, Limits, Method, RequestHead,
};
use crate::listener::ListenerId;
use crate::scope::Scope;
use crate::socket::{Input, SockId};

/// How long a closed-for-writing connection may keep sending before it is cut off. Reading
/// what a client still sends avoids a TCP reset that could destroy our error answer.
const LINGER: Duration = Duration::from_secs(2);

/// What a connection is configured with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// Limits on what the client sends.
    pub(crate) limits: Limits,
    /// Timeouts.
    pub(crate) timeouts: Timeouts,
    /// Access lines at debug level (a scraper's requests would drown the others).
    pub(crate) quiet: bool,
    /// Servers a request may be tried on (GET and HEAD only, each once).
    pub(crate) attempts: usize,
    /// The request deadline (connect, retries, the answer's head), if any.
    pub(crate) deadline: Option<Duration>,
}

/// How long a drain waits for the first request of a connection that has sent nothing yet:
/// a client that has just connected sends within a round trip; one that holds a connection
/// open without a request (a preconnect) does not hold the drain for the head timeout.
pub const FRESH_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug)]
enum Phase {
    /// Waiting for a request head; `started` = its first byte arrived (else the conn is idle).
    Head {
        started: bool,
        deadline: Instant,
    },
    Exchange(Box<Exchange>),
    /// Writing a final answer; then the write side is shut down, or, when nothing the client
    /// sent can be left unread (`linger` false), the connection is simply closed.
    Closing {
        deadline: Instant,
        linger: bool,
    },
    /// Write side shut down; reading and discarding until EOF or the deadline.
    Lingering {
        deadline: Instant,
    },
    Closed,
}

/// One accepted client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    client: SockId,
    peer: Option<IpAddr>,
    peer_text: String,
    settings: Settings,
    inbuf: BytesMut,
    out: BytesMut,
    client_eof: bool,
    draining: bool,
    /// No exchange has ended on it yet: a client that has just connected, whose request is
    /// on its way. A drain does not close it as idle (that would reset a request the client
    /// sent before it saw our close: what a process handing its sockets to a successor must
    /// not do); it serves that one request, then closes.
    fresh: bool,
    scanner: HeadScanner,
    phase: Phase,
    /// Exchanges started, for their [`Ticket`]s.
    seq: u64,
    outputs: VecDeque<Output>,
    /// Counted against the endpoint's connection limits (until it starts closing).
    pub(crate) counted: bool,
    /// The scoped listener it came in on, and that listener's scope (kept after the listener
    /// is removed, so its last exchange finishes as it began).
    pub(crate) listener: Option<(ListenerId, Scope)>,
    /// It came in on the admin listener (see `endpoint::admin`).
    pub(crate) admin: bool,
}

impl Conn {
    pub(crate) fn new(now: Instant, client: SockId, peer: Option<IpAddr>, s: Settings) -> Self {
        Conn {
            client,
            peer,
            peer_text: peer.map_or_else(|| "unix-peer".to_owned(), |p| p.to_string()),
            settings: s,
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            client_eof: false,
            draining: false,
            fresh: true,
            scanner: HeadScanner::new(),
            seq: 0,
            outputs: VecDeque::new(),
            counted: false,
            listener: None,
            admin: false,
            // A fresh connection owes us a head within the head timeout (slowloris → 408).
            phase: Phase::Head {
                started: true,
                deadline: deadline_in(now, s.timeouts.head),
            },
        }
    }

    pub(crate) fn peer(&self) -> Option<IpAddr> {
        self.peer
    }

    /// The client's address as the logs name it.
    pub(crate) fn peer_text(&self) -> &str {
        &self.peer_text
    }

    /// The next thing for the owner to do; drain after every call.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Done with requests: flushing its last answer, lingering, or closed.
    pub(crate) fn is_finishing(&self) -> bool {
        matches!(
            self.phase,
            Phase::Closing { .. } | Phase::Lingering { .. } | Phase::Closed
        )
    }

    /// The current request's head, for [`Output::Route`] and [`Output::Serve`].
    pub(crate) fn request(&self) -> Option<&RequestHead> {
        match &self.phase {
            Phase::Exchange(x) => Some(&x.head),
            _ => None,
        }
    }

    /// The whole body of a request to answer locally ([`Output::Serve`]).
    pub(crate) fn served_body(&self) -> &[u8] {
        match &self.phase {
            Phase::Exchange(x) => match &x.sink {
                Sink::Serve(body) => body,
                _ => &[],
            },
            _ => &[],
        }
    }

    pub(crate) fn upstream_sock(&self) -> Option<SockId> {
        match &self.phase {
            Phase::Exchange(x) => x.up().map(|u| u.sock),
            _ => None,
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Head { deadline, .. }
            | Phase::Closing { deadline, .. }
            | Phase::Lingering { deadline } => Some(*deadline),
            Phase::Exchange(x) => Some(x.deadline),
            Phase::Closed => None,
        }
    }

    pub(crate) fn pending_write(&self, sock: SockId) -> &[u8] {
        if sock == self.client {
            return &self.out;
        }
        match &self.phase {
            Phase::Exchange(x) => match x.up() {
                Some(u) if u.sock == sock && u.connected => &u.out,
                _ => &[],
            },
            _ => &[],
        }
    }

    pub(crate) fn wants_read(&self, sock: SockId) -> bool {
        let max_head = self.settings.limits.max_head;
        if sock == self.client {
            if self.client_eof {
                return false;
            }
            return match &self.phase {
                // A client that pipelines requests but does not read the answers must not make
                // us buffer answers without end: past the mark, neither read nor answer more.
                Phase::Head { .. } => self.inbuf.len() <= max_head && self.out.len() < HIGH_WATER,
                // Pipelined requests wait in the buffer, bounded like one head.
                Phase::Exchange(x) if x.req_body.is_done() => self.inbuf.len() <= max_head,
                Phase::Exchange(x) => match (&x.stage, x.sink.is_stream()) {
                    (Stage::Relaying(u), _) => u.out.len() < HIGH_WATER,
                    // Into memory: the decoder bounds the body (413).
                    (_, false) => true,
                    // Waiting for a decision: a little of the body may wait in the buffer.
                    (_, true) => self.inbuf.len() <= max_head,
                },
                Phase::Closing { .. } | Phase::Closed => false,
                Phase::Lingering { .. } => true,
            };
        }
        match &self.phase {
            Phase::Exchange(x) => x.up().is_some_and(|u| {
                u.sock == sock
                    && u.connected
                    && !u.eof
                    && u.held.is_none()
                    && !matches!(x.resp, Resp::Done)
                    && self.out.len() < HIGH_WATER
            }),
            _ => false,
        }
    }

    pub(crate) fn consume_write(&mut self, now: Instant, sock: SockId, n: usize) {
        if sock == self.client {
            self.out.advance(n.min(self.out.len()));
        } else if let Phase::Exchange(x) = &mut self.phase {
            if let Some(u) = x.up_mut().filter(|u| u.sock == sock) {
                u.out.advance(n.min(u.out.len()));
            }
        }
        self.progress(now);
    }

    pub(crate) fn on_client(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Read(bytes) => {
                if let Phase::Lingering { .. } = self.phase {
                    return; // discarded: we already answered and are closing
                }
                self.inbuf.extend_from_slice(bytes);
                if let Phase::Head { started, deadline } = &mut self.phase {
                    if !*started {
                        *started = true;
                        *deadline = deadline_in(now, self.settings.timeouts.head);
                    }
                }
            }
            Input::Eof => self.client_eof = true,
            Input::Error => {
                self.abort("client connection error");
                return;
            }
            Input::Connected | Input::ConnectFailed(_) => {}
        }
        self.progress(now);
    }

    /// Graceful shutdown: an idle connection closes now; a busy one after its exchange; a
    /// fresh one (see `fresh`) after its first, if that begins within [`FRESH_GRACE`].
    pub(crate) fn drain(&mut self, now: Instant) {
        self.draining = true;
        if let Phase::Head { deadline, .. } = &mut self.phase {
            if !self.inbuf.is_empty() {
                return;
            }
            if self.fresh {
                *deadline = (*deadline).min(now + FRESH_GRACE);
            } else {
                self.finish(now, true);
                self.progress(now);
            }
        }
    }

    /// The owner's answer to [`Output::Route`] (or a later one, after [`Route::Pending`]).
    /// An answer for an exchange that has ended is dropped.
    pub(crate) fn route(&mut self, now: Instant, ticket: Ticket, route: Route) {
        let head_timeout = self.settings.timeouts.head;
        let Phase::Exchange(x) = &mut self.phase else {
            return;
        };
        if x.ticket != ticket || !matches!(x.stage, Stage::Routing) {
            return;
        }
        match route {
            Route::Forward(forward) => {
                x.forward = Some(forward);
                if matches!(x.sink, Sink::Gather(_)) {
                    x.stage = Stage::Gathering;
                } else {
                    self.ask_upstream(now, false);
                }
            }
            Route::Serve => {
                // The client owes us its body as promptly as its head.
                x.deadline = deadline_in(now, head_timeout);
                x.sink = match std::mem::replace(&mut x.sink, Sink::Stream) {
                    Sink::Gather(body) | Sink::Serve(body) => Sink::Serve(body),
                    Sink::Stream => Sink::Serve(Vec::new()),
                };
                x.replay_body = None;
                x.stage = Stage::Serving { asked: false };
            }
            Route::Refuse {
                status,
                message,
                why,
            } => {
                if !why.is_empty() {
                    log::warn!("{} {why}", self.peer_text);
                }
                // Routing, the exchange has no upstream yet (a re-route closed the old one).
                if let Some(mut x) = self.take_exchange() {
                    // The body (if any) is not read: the connection cannot continue after it.
                    let keep = x.client_keep_alive && x.req_body.is_done();
                    self.answer(now, &mut x, status, &message, &why, keep);
                }
            }
            Route::Answer(local) => {
                if let Some(mut x) = self.take_exchange() {
                    let keep = x.client_keep_alive && x.req_body.is_done();
                    self.send_local(now, &mut x, local, keep);
                }
            }
            Route::Reply(stored) => {
                // A body nobody reads cannot be followed by another request.
                if !x.req_body.is_done() {
                    x.client_keep_alive = false;
                }
                self.reply(now, &stored, false);
                return;
            }
            Route::Pending => return,
        }
        self.progress(now);
    }

    /// Answers the exchange with a kept answer (fresh, or `stale` instead of an error).
    pub(super) fn reply(&mut self, now: Instant, stored: &crate::upstream::Stored, stale: bool) {
        let Some(mut x) = self.take_exchange() else {
            return;
        };
        if let Some(up) = x.take_up() {
            self.outputs.push_back(Output::Close(up.sock));
        }
        let keep = x.client_keep_alive && !self.draining && x.req_body.is_done();
        let age = now.saturating_duration_since(stored.stored);
        let head_only = x.head.method == Method::Head;
        let mut buf = Vec::with_capacity(256 + stored.body.len());
        crate::upstream::write_stored(stored, age, stale, !keep, head_only, &mut buf);
        self.out.extend_from_slice(&buf);
        x.status = 200;
        x.body_len = stored.body.len() as u64;
        let why = if stale {
            self.outputs.push_back(Output::Stale);
            format!(
                "stale answer, {}s old (tried {})",
                age.as_secs(),
                x.tried_names
            )
        } else {
            String::new()
        };
        self.finished(None, &x, now, &why);
        let asked_close = !x.client_keep_alive && x.req_body.is_done();
        self.after_exchange(now, keep, asked_close);
        self.progress(now);
    }

    /// The servers the current request was sent to so far (indices), for the owner's choice
    /// of the next.
    pub(crate) fn tried(&self) -> &[usize] {
        match &self.phase {
            Phase::Exchange(x) => &x.tried,
            _ => &[],
        }
    }

    pub(super) fn ask_upstream(&mut self, now: Instant, fresh: bool) {
        let deadline = self.settings.deadline;
        if let Phase::Exchange(x) = &mut self.phase {
            x.stage = Stage::Connecting;
            if x.request_deadline.is_none() {
                // Set at the first attempt: the lookup before it has a timeout of its own.
                x.request_deadline = deadline.map(|d| deadline_in(now, d));
            }
            self.outputs.push_back(Output::Upstream { fresh });
        }
    }

    /// Moves as far as the buffered bytes allow.
    fn progress(&mut self, now: Instant) {
        loop {
            let advanced = match &mut self.phase {
                // The next (pipelined) request waits until the client took most of our answers.
                Phase::Head { .. } => self.out.len() < HIGH_WATER && self.try_start(now),
                Phase::Exchange(_) => self.pump(now),
                Phase::Closing { linger: false, .. } => {
                    if self.out.is_empty() {
                        self.abort("");
                    }
                    false
                }
                Phase::Closing { .. } => {
                    if self.out.is_empty() {
                        self.outputs.push_back(Output::Shutdown(self.client));
                        self.phase = Phase::Lingering {
                            deadline: now + LINGER,
                        };
                        true
                    } else {
                        false
                    }
                }
                Phase::Lingering { .. } => {
                    self.inbuf.clear();
                    if self.client_eof {
                        self.abort("");
                    }
                    false
                }
                Phase::Closed => false,
            };
            if !advanced {
                return;
            }
        }
    }

    /// In `Head`: parse a request head and start its exchange, asking the owner to route it.
    /// Returns whether the connection can move on at once (not while a route is asked for).
    fn try_start(&mut self, now: Instant) -> bool {
        let limits = self.settings.limits;
        let mut head = match self.scanner.parse_request(&self.inbuf, &limits) {
            Ok(Some((head, n))) => {
                self.inbuf.advance(n);
                self.scanner.reset();
                head
            }
            Ok(None) => {
                // A client that finished sending, or an idle one while we drain, is done.
                if self.client_eof || (self.draining && self.inbuf.is_empty() && !self.fresh) {
                    // After the client's EOF there is nothing left to read: no lingering.
                    self.finish(now, !self.client_eof);
                    return true;
                }
                return false;
            }
            Err(e) => {
                self.fail_client(now, e);
                return true;
            }
        };
        let line = format!(
            "{} {} {}",
            String::from_utf8_lossy(&head.method_str),
            String::from_utf8_lossy(&head.target),
            head.version.as_str()
        );
        // Every rule after this point (the owner's routing, a local answer's router) and every
        // next hop sees the one normalised target; a target with no single meaning is refused.
        if head.method != Method::Connect {
            match normalize_target(&head.target) {
                Ok(normalized) => head.target = normalized.into(),
                Err(e) => {
                    self.fail_client(now, e);
                    return true;
                }
            }
        }
        self.seq += 1;
        let ticket = Ticket {
            conn: self.client,
            seq: self.seq,
        };
        let mut x = Box::new(Exchange {
            ticket,
            started: now,
            line,
            req_body: BodyDecoder::new(head.body),
            client_keep_alive: head.keep_alive && !self.draining,
            head,
            resp: Resp::AwaitingHead,
            resp_started: false,
            upstream_keep_alive: false,
            status: 0,
            body_len: 0,
            deadline: deadline_in(now, self.settings.timeouts.response),
            forward: None,
            replay_body: Some(BytesMut::new()),
            sink: Sink::Stream,
            stage: Stage::Routing,
            rerouted: false,
            tried: Vec::new(),
            tried_names: String::new(),
            attempt_started: now,
            request_deadline: None,
            attempt_deadline: None,
            capture: None,
        });
        x.gather_chunked(now, self.settings.timeouts.head);
        self.phase = Phase::Exchange(x);
        self.outputs.push_back(Output::Route(ticket));
        // Nothing more happens to the request (its body stays unread) until it is routed.
        false
    }

    /// In `Exchange`: forward request body, read the response, finish.
    fn pump(&mut self, now: Instant) -> bool {
        let limits = self.settings.limits;
        let _draining = self.draining;
        let Phase::Exchange(x) = &mut self.phase else {
            return false;
        };
        // Request body → upstream (or into memory). `starved`: the decoder wants bytes the
        // client has not sent (as opposed to waiting for room, or for a decision).
        let mut starved = false;
        while !x.req_body.is_done() {
            let room = match (&x.sink, x.up()) {
                (Sink::Gather(_) | Sink::Serve(_), _) => true,
                (Sink::Stream, Some(up)) => up.out.len() < HIGH_WATER,
                (Sink::Stream, None) => false,
            };
            if !room {
                break;
            }
            match x.req_body.decode(&self.inbuf, &limits) {
                Ok((0, None)) => {
                    starved = true;
                    break;
                }
                Ok((n, piece)) => {
                    // Payload only: the framing consumed with it is never forwarded.
                    if let Some(Body::Data(d)) = piece {
                        match &mut x.sink {
                            Sink::Gather(body) | Sink::Serve(body) => body.extend_from_slice(d),
                            Sink::Stream => {
                                if let Some(up) = x.up_mut() {
                                    up.out.extend_from_slice(d);
                                }
                                x.keep_for_replay(d);
                            }
                        }
                    }
                    self.inbuf.advance(n);
                }
                Err(e) => {
                    if let Some(up) = self.take_exchange().and_then(|mut x| x.take_up()) {
                        self.outputs.push_back(Output::Close(up.sock));
                    }
                    self.fail_client(now, e);
                    return true;
                }
            }
        }
        if starved && self.client_eof {
            self.abort("client closed during the request body");
            return false;
        }
        match &mut x.sink {
            Sink::Stream => {}
            _ if !x.req_body.is_done() => return false,
            Sink::Serve(_) => {
                if let Stage::Serving { asked } = &mut x.stage {
                    if !*asked {
                        *asked = true;
                        self.outputs.push_back(Output::Serve(x.ticket));
                    }
                }
                return false;
            }
            Sink::Gather(body) => {
                // Whole: from now on it is a body of known length, sent (and replayed) as one.
                let body = std::mem::take(body);
                x.head.body = BodyKind::Length(body.len() as u64);
                // Kept whole (bounded by `max_body`): the head may wait for a decision yet.
                x.replay_body = Some(BytesMut::from(&body[..]));
                x.sink = Sink::Stream;
                if matches!(x.stage, Stage::Gathering) {
                    self.ask_upstream(now, false);
                    return false;
                }
            }
        }
        self.pump_upstream(now)
    }

    /// Stops taking requests: flush what is queued, then close; with `linger`, through a
    /// shutdown of the write side and reading until the client's EOF, so that bytes it sent
    /// and we did not read cannot turn our close into a reset that destroys the answer.
    fn finish(&mut self, now: Instant, linger: bool) {
        self.inbuf.clear();
        self.phase = Phase::Closing {
            deadline: deadline_in(now, self.settings.timeouts.idle),
            linger,
        };
    }

    /// The exchange is over: wait for the next request, or close. `asked_close`: the client
    /// asked to close and its request was read whole, so unless it sent more anyway (bytes
    /// in `inbuf`), closing needs no lingering (as nginx: lingering only when more may come).
    fn after_exchange(&mut self, now: Instant, keep: bool, asked_close: bool) {
        self.fresh = false;
        if !keep || self.draining {
            let linger = !(asked_close && self.inbuf.is_empty());
            self.finish(now, linger);
            return;
        }
        let pipelined = !self.inbuf.is_empty();
        let t = self.settings.timeouts;
        let timeout = if pipelined { t.head } else { t.idle };
        self.phase = Phase::Head {
            started: pipelined,
            deadline: deadline_in(now, timeout),
        };
    }

    fn take_exchange(&mut self) -> Option<Box<Exchange>> {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Exchange(x) => Some(x),
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// Closes everything at once, without an answer.
    fn abort(&mut self, why: &str) {
        if !why.is_empty() {
            log::info!("{} connection closed: {why}", self.peer_text);
        }
        if let Phase::Exchange(mut x) = std::mem::replace(&mut self.phase, Phase::Closed) {
            if let Some(up) = x.take_up() {
                self.outputs.push_back(Output::Close(up.sock));
            }
        }
        self.out.clear();
        self.outputs.push_back(Output::Close(self.client));
    }
}
