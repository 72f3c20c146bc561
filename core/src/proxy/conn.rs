//! One client connection and the exchange it has with the upstream on each request.
//!
//! States (one request in flight per client; pipelined bytes wait in `inbuf`):
//!
//! | phase     | on                          | next                                         |
//! |-----------|-----------------------------|----------------------------------------------|
//! | Head      | complete head               | Exchange (upstream from the pool or connect) |
//! | Head      | bad head / limit / timeout  | Closing (error answer queued)                |
//! | Head      | idle timeout, EOF           | Closed                                       |
//! | Exchange  | response complete, reusable | Head (upstream back to the pool)             |
//! | Exchange  | response complete, not      | Closing                                      |
//! | Exchange  | upstream fails before head  | Head or Closing (503/502/504 queued)         |
//! | Exchange  | upstream fails after head   | Closed                                       |
//! | Closing   | output flushed              | Lingering (write side shut down)             |
//! | Closing   | flushed, nothing unread     | Closed (the client asked to close)           |
//! | Lingering | EOF, timeout                | Closed                                       |

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use super::error_page::{default_message, write_error, LOOKUP_UNAVAILABLE, UPSTREAM_UNAVAILABLE};
use super::rewrite::HopRules;
use crate::agent::request::not_found_message;
use crate::config::Role;
use crate::endpoint::Ctx;
use crate::http::{
    normalize_target, reason_phrase, write_request_head, write_response_head,
    write_simple_response, Body, BodyDecoder, BodyKind, HeadScanner, HttpError, Limits, Method,
    RequestHead, Rewrite, Version,
};
use crate::lookup::LookupError;
use crate::metadata::MetaResponse;
use crate::metrics::UpstreamError;
use crate::scope::{Instance, LookupKey};
use crate::socket::{ConnectError, Input, SockId};

/// `now + timeout`, for a configured timeout. The binary keeps every timeout within a day
/// (`bins/src/cli/range.rs`), so this is plain addition there; should a caller of the core pass
/// more, the deadline is a day away instead of a panic (`Instant + Duration` panics on
/// overflow), or `now` at the very end of `Instant`'s range. Defence in depth.
fn deadline_in(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// Above this many unsent bytes towards one side, the other side is not read (back-pressure).
const HIGH_WATER: usize = 64 * 1024;
/// Largest request (head + body) kept for one replay on a fresh upstream connection.
const MAX_REPLAY: usize = 64 * 1024;
/// Limits on upstream responses: heads may be larger than requests; bodies stream unbounded.
const RESPONSE_LIMITS: Limits = Limits {
    max_head: 64 * 1024,
    max_headers: 200,
    max_body: u64::MAX,
    max_chunk_line: 4096,
};
/// How long a closed-for-writing connection may keep sending before it is cut off. Reading
/// what a client still sends avoids a TCP reset that could destroy our error answer.
const LINGER: Duration = Duration::from_secs(2);

/// The upstream side of one exchange.
#[derive(Debug)]
struct Upstream {
    sock: SockId,
    connected: bool,
    /// Came from the pool: a failure before any response byte may be a stale connection.
    reused: bool,
    inbuf: BytesMut,
    /// Remembers how far `inbuf` was searched for the end of a response head, so a head that
    /// arrives in many small reads is not rescanned from the start each time.
    scanner: HeadScanner,
    out: BytesMut,
    eof: bool,
}

#[derive(Debug)]
enum Resp {
    /// No final response head yet.
    AwaitingHead,
    /// Streaming the body to the client: its payload only, re-chunked by us when `chunked`
    /// (never the upstream's chunk extensions or trailers).
    Body { dec: BodyDecoder, chunked: bool },
    /// Completely forwarded.
    Done,
}

#[derive(Debug)]
struct Exchange {
    started: Instant,
    /// `GET /path HTTP/1.1`, for the access log.
    line: String,
    head: RequestHead,
    req_body: BodyDecoder,
    resp: Resp,
    /// The response head has gone to the client: errors can no longer be answered.
    resp_started: bool,
    /// Response will be followed by another request on this client connection.
    client_keep_alive: bool,
    upstream_keep_alive: bool,
    status: u16,
    body_len: u64,
    /// Activity deadline: connect, then response.
    deadline: Instant,
    /// Fields this hop adds (identity), kept to encode the head again for a replay.
    fields: Vec<(&'static str, Vec<u8>)>,
    /// What this hop does to the client's fields.
    rules: &'static HopRules,
    /// Request payload forwarded so far, for a replay; `None` once too large.
    replay_body: Option<BytesMut>,
    /// Where the request body's payload goes.
    sink: Sink,
    /// The upstream was chosen while a gathered body was still arriving: send once it is whole.
    relay_waiting: bool,
    /// The agent's lookup key, and whether its answer came from the cache.
    key: Option<LookupKey>,
    from_cache: bool,
    /// The retry past the cache after the metadata server's 404 was made.
    retried_lookup: bool,
    /// `None` while the agent resolves the instance.
    up: Option<Upstream>,
}

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

/// Where a request body goes. Only its payload ever moves on: a chunked body's framing,
/// extensions and trailers stop here (eventlet before 0.40.3 reads trailer lines as a new
/// request), and the next hop gets a `Content-Length` we computed.
#[derive(Debug)]
enum Sink {
    /// To the upstream as it arrives, under the client's `Content-Length` (or no body).
    Stream,
    /// Into memory, then sent with a `Content-Length` once whole (a chunked body; bodies are
    /// bounded by `Limits::max_body`).
    Gather(Vec<u8>),
    /// Into memory, to answer locally (server, metrics).
    Serve(Vec<u8>),
}

impl Sink {
    fn is_stream(&self) -> bool {
        matches!(self, Sink::Stream)
    }
}

/// What the role decided for a request head.
pub(crate) enum Plan {
    /// Send it upstream with these fields added (after the identity fields were removed).
    Forward(Vec<(&'static str, Vec<u8>)>),
    /// Find the instance first (agent), then forward.
    Lookup(LookupKey),
    /// Read the whole body and answer locally (server).
    Serve,
    /// Answer locally with an error.
    Refuse(u16, String),
}

/// How a lookup started.
pub(crate) enum LookupStart {
    /// Answered at once: the instance (if any) and whether it came from the cache.
    Done(Option<Instance>, bool),
    /// A backend query runs; [`Conn::on_lookup`] follows.
    Pending,
}

/// One accepted client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    client: SockId,
    peer: Option<IpAddr>,
    peer_text: String,
    inbuf: BytesMut,
    out: BytesMut,
    client_eof: bool,
    scanner: HeadScanner,
    phase: Phase,
    /// Counted against the endpoint's connection limits (until it starts closing).
    pub(crate) counted: bool,
}

impl Conn {
    pub(crate) fn new(now: Instant, client: SockId, peer: Option<IpAddr>, ctx: &Ctx) -> Self {
        Conn {
            client,
            peer,
            peer_text: peer.map_or_else(|| "unix-peer".to_owned(), |p| p.to_string()),
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            client_eof: false,
            scanner: HeadScanner::new(),
            counted: false,
            // A fresh connection owes us a head within the head timeout (slowloris → 408).
            phase: Phase::Head {
                started: true,
                deadline: deadline_in(now, ctx.cfg.timeouts.head),
            },
        }
    }

    pub(crate) fn peer(&self) -> Option<IpAddr> {
        self.peer
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

    /// Answers at once and closes: used when a connection is over a limit on arrival.
    pub(crate) fn refuse(&mut self, now: Instant, status: u16, message: &str, ctx: &mut Ctx) {
        log::warn!("{} refused: {message}", self.peer_text);
        write_error(status, message, None, false, true, &mut self.out);
        ctx.metric(|m| m.request(status, None));
        self.phase = Phase::Closing {
            deadline: deadline_in(now, ctx.cfg.timeouts.idle),
            linger: true,
        };
        self.progress(now, ctx);
    }

    pub(crate) fn upstream_sock(&self) -> Option<SockId> {
        match &self.phase {
            Phase::Exchange(x) => x.up.as_ref().map(|u| u.sock),
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
            Phase::Exchange(x) => match &x.up {
                Some(u) if u.sock == sock && u.connected => &u.out,
                _ => &[],
            },
            _ => &[],
        }
    }

    pub(crate) fn wants_read(&self, sock: SockId, ctx: &Ctx) -> bool {
        if sock == self.client {
            if self.client_eof {
                return false;
            }
            return match &self.phase {
                // A client that pipelines requests but does not read the answers must not make
                // us buffer answers without end: past the mark, neither read nor answer more.
                Phase::Head { .. } => {
                    self.inbuf.len() <= ctx.cfg.limits.max_head && self.out.len() < HIGH_WATER
                }
                Phase::Exchange(x) => {
                    if x.req_body.is_done() {
                        // Pipelined requests wait in the buffer, bounded like one head.
                        self.inbuf.len() <= ctx.cfg.limits.max_head
                    } else {
                        match &x.up {
                            Some(u) => u.out.len() < HIGH_WATER,
                            // Into memory: the decoder bounds the body (413).
                            None if !x.sink.is_stream() => true,
                            // Resolving: a little of the body may wait in the buffer.
                            None => self.inbuf.len() <= ctx.cfg.limits.max_head,
                        }
                    }
                }
                Phase::Closing { .. } => false,
                Phase::Lingering { .. } => true,
                Phase::Closed => false,
            };
        }
        match &self.phase {
            Phase::Exchange(x) => x.up.as_ref().is_some_and(|u| {
                u.sock == sock
                    && u.connected
                    && !u.eof
                    && !matches!(x.resp, Resp::Done)
                    && self.out.len() < HIGH_WATER
            }),
            _ => false,
        }
    }

    pub(crate) fn consume_write(&mut self, now: Instant, sock: SockId, n: usize, ctx: &mut Ctx) {
        if sock == self.client {
            self.out.advance(n.min(self.out.len()));
        } else if let Phase::Exchange(x) = &mut self.phase {
            if let Some(u) = x.up.as_mut().filter(|u| u.sock == sock) {
                u.out.advance(n.min(u.out.len()));
            }
        }
        self.progress(now, ctx);
    }

    pub(crate) fn on_client(&mut self, now: Instant, input: Input<'_>, ctx: &mut Ctx) {
        match input {
            Input::Read(bytes) => {
                if let Phase::Lingering { .. } = self.phase {
                    return; // discarded: we already answered and are closing
                }
                self.inbuf.extend_from_slice(bytes);
                if let Phase::Head { started, deadline } = &mut self.phase {
                    if !*started {
                        *started = true;
                        *deadline = deadline_in(now, ctx.cfg.timeouts.head);
                    }
                }
            }
            Input::Eof => self.client_eof = true,
            Input::Error => {
                self.abort(ctx, "client connection error");
                return;
            }
            Input::Connected | Input::ConnectFailed(_) => {}
        }
        self.progress(now, ctx);
    }

    pub(crate) fn on_upstream(&mut self, now: Instant, input: Input<'_>, ctx: &mut Ctx) {
        let Phase::Exchange(x) = &mut self.phase else {
            return;
        };
        let Some(up) = x.up.as_mut() else {
            return;
        };
        match input {
            Input::Read(bytes) => {
                up.inbuf.extend_from_slice(bytes);
                // The head must be complete within the response timeout of the request going
                // out (a head dripped a byte at a time would otherwise hold both connections
                // for as long as the upstream likes); after it, each read restarts the clock.
                if x.resp_started {
                    x.deadline = deadline_in(now, ctx.cfg.timeouts.response);
                }
            }
            Input::Eof => up.eof = true,
            Input::Connected => {
                up.connected = true;
                x.deadline = deadline_in(now, ctx.cfg.timeouts.response);
            }
            Input::ConnectFailed(e) => {
                let (why, kind) = match e {
                    ConnectError::Refused => {
                        ("upstream refused the connection", UpstreamError::Refused)
                    }
                    ConnectError::Other => ("upstream unreachable", UpstreamError::Unreachable),
                };
                self.upstream_failed(now, kind, why, ctx);
                return;
            }
            Input::Error => {
                up.eof = true;
                up.inbuf.clear();
                if !x.resp_started && !retry(x, self.client, ctx) {
                    let why = "upstream connection broke";
                    self.upstream_failed(now, UpstreamError::Reset, why, ctx);
                    return;
                }
            }
        }
        self.progress(now, ctx);
    }

    /// The upstream's TLS session failed; `why` names the reason (certificate, host name,
    /// alert). Like a refused connection: 503 while no response went out, else the client is
    /// cut off.
    pub(crate) fn on_upstream_tls_failure(&mut self, now: Instant, why: &str, ctx: &mut Ctx) {
        self.upstream_failed(now, UpstreamError::Tls, why, ctx);
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, ctx: &mut Ctx) {
        match &self.phase {
            Phase::Head { started, deadline } if now >= *deadline => {
                if *started {
                    self.fail_client(now, 408, None, ctx);
                } else {
                    self.abort(ctx, "");
                }
            }
            Phase::Exchange(x) if now >= x.deadline => {
                let gathering = !x.sink.is_stream() && !x.req_body.is_done();
                if matches!(x.sink, Sink::Serve(_)) || gathering {
                    self.fail_client(now, 408, None, ctx);
                } else if x.resp_started {
                    let why = "upstream stalled mid-response";
                    self.upstream_cut(UpstreamError::Timeout, why, ctx);
                } else {
                    let why = if x.up.as_ref().is_some_and(|u| u.connected) {
                        "upstream did not answer in time"
                    } else {
                        "upstream connect timed out"
                    };
                    self.upstream_failed(now, UpstreamError::Timeout, why, ctx);
                }
            }
            Phase::Closing { deadline, .. } | Phase::Lingering { deadline } if now >= *deadline => {
                self.abort(ctx, "");
            }
            _ => {}
        }
    }

    /// Graceful shutdown: an idle connection closes now; a busy one after its exchange.
    pub(crate) fn drain(&mut self, now: Instant, ctx: &mut Ctx) {
        if let Phase::Head { .. } = self.phase {
            if self.inbuf.is_empty() {
                self.finish(now, true, ctx);
                self.progress(now, ctx);
            }
        }
    }

    /// Moves as far as the buffered bytes allow.
    fn progress(&mut self, now: Instant, ctx: &mut Ctx) {
        loop {
            let advanced = match &mut self.phase {
                // The next (pipelined) request waits until the client took most of our answers.
                Phase::Head { .. } => self.out.len() < HIGH_WATER && self.try_start(now, ctx),
                Phase::Exchange(_) => self.pump(now, ctx),
                Phase::Closing { linger: false, .. } => {
                    if self.out.is_empty() {
                        self.abort(ctx, "");
                    }
                    false
                }
                Phase::Closing { .. } => {
                    if self.out.is_empty() {
                        ctx.shutdown(self.client);
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
                        self.abort(ctx, "");
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

    /// In `Head`: parse a request head and start its exchange.
    fn try_start(&mut self, now: Instant, ctx: &mut Ctx) -> bool {
        let limits = ctx.cfg.limits;
        let mut head = match self.scanner.parse_request(&self.inbuf, &limits) {
            Ok(Some((head, n))) => {
                self.inbuf.advance(n);
                self.scanner.reset();
                head
            }
            Ok(None) => {
                // A client that finished sending, or an idle one while we drain, is done.
                if self.client_eof || (ctx.draining && self.inbuf.is_empty()) {
                    // After the client's EOF there is nothing left to read: no lingering.
                    self.finish(now, !self.client_eof, ctx);
                    return true;
                }
                return false;
            }
            Err(e) => {
                self.fail_client(now, e.status(), Some(e), ctx);
                return true;
            }
        };
        let line = format!(
            "{} {} {}",
            String::from_utf8_lossy(&head.method_str),
            String::from_utf8_lossy(&head.target),
            head.version.as_str()
        );
        // Every rule after this point (the ns-proxy's token rule, the server's router) and every
        // next hop sees the one normalised target; a target with no single meaning is refused.
        if head.method != Method::Connect {
            match normalize_target(&head.target) {
                Ok(normalized) => head.target = normalized.into(),
                Err(e) => {
                    self.fail_client(now, e.status(), Some(e), ctx);
                    return true;
                }
            }
        }
        let mut plan = ctx.plan(now, self.peer, &head);
        if head.method == Method::Connect && !matches!(plan, Plan::Serve) {
            // No role tunnels: relayed, a CONNECT would come back as a 2xx whose framing no
            // longer applies (RFC 9110 §9.3.6), desynchronising the client.
            plan = Plan::Refuse(405, "CONNECT is not supported.".to_owned());
        }
        let client_keep_alive = head.keep_alive && !ctx.draining;
        let mut x = Box::new(Exchange {
            started: now,
            line,
            req_body: BodyDecoder::new(head.body),
            head,
            resp: Resp::AwaitingHead,
            resp_started: false,
            client_keep_alive,
            upstream_keep_alive: false,
            status: 0,
            body_len: 0,
            deadline: deadline_in(now, ctx.cfg.timeouts.response),
            fields: Vec::new(),
            rules: ctx.hop_rules(),
            replay_body: Some(BytesMut::new()),
            sink: Sink::Stream,
            relay_waiting: false,
            key: None,
            from_cache: false,
            retried_lookup: false,
            up: None,
        });
        match plan {
            Plan::Refuse(status, message) => {
                // The body (if any) is not read: the connection cannot continue after it.
                let keep = client_keep_alive && x.req_body.is_done();
                self.answer(now, &mut x, status, &message, "", keep, ctx);
            }
            Plan::Forward(fields) => {
                x.fields = fields;
                gather_chunked(&mut x, now, ctx);
                relay(now, &mut x, self.client, ctx);
                self.phase = Phase::Exchange(x);
            }
            Plan::Lookup(key) => {
                x.key = Some(key);
                gather_chunked(&mut x, now, ctx);
                self.phase = Phase::Exchange(x);
                self.resolve(now, false, ctx);
            }
            Plan::Serve => {
                // The client owes us its body as promptly as its head.
                x.deadline = deadline_in(now, ctx.cfg.timeouts.head);
                x.sink = Sink::Serve(Vec::new());
                x.replay_body = None;
                self.phase = Phase::Exchange(x);
            }
        }
        true
    }

    /// Starts (or restarts, past the cache) the lookup of the current exchange's key.
    fn resolve(&mut self, now: Instant, skip_cache: bool, ctx: &mut Ctx) {
        let Phase::Exchange(x) = &mut self.phase else {
            return;
        };
        let Some(key) = x.key else { return };
        match ctx.lookup(now, key, self.client, skip_cache) {
            LookupStart::Done(found, from_cache) => {
                self.resolved(now, key, Ok(found), from_cache, ctx)
            }
            LookupStart::Pending => {}
        }
    }

    /// The backend answered the lookup of `key`: forward, or answer 404 / 503.
    pub(crate) fn on_lookup(
        &mut self,
        now: Instant,
        key: LookupKey,
        result: Result<Option<Instance>, LookupError>,
        ctx: &mut Ctx,
    ) {
        self.resolved(now, key, result, false, ctx);
        self.progress(now, ctx);
    }

    fn resolved(
        &mut self,
        now: Instant,
        key: LookupKey,
        result: Result<Option<Instance>, LookupError>,
        from_cache: bool,
        ctx: &mut Ctx,
    ) {
        let Phase::Exchange(x) = &mut self.phase else {
            return;
        };
        if x.key != Some(key) || x.up.is_some() || x.relay_waiting {
            return; // a late answer for a request that has moved on
        }
        match result {
            Ok(Some(instance)) => {
                x.fields = ctx.identity_fields(key.ip, &instance);
                x.from_cache = from_cache;
                relay(now, x, self.client, ctx);
            }
            Ok(None) => {
                let msg = not_found_message(&key.scope);
                self.local_error(now, 404, &msg, "", ctx);
            }
            Err(why) => {
                let why = format!("lookup failed: {why}");
                self.local_error(now, 503, LOOKUP_UNAVAILABLE, &why, ctx);
            }
        }
    }

    /// Sends the server role's answer and moves on.
    fn local_answer(&mut self, now: Instant, local: MetaResponse, ctx: &Ctx) {
        let Some(mut x) = self.take_exchange() else {
            return;
        };
        let keep = x.client_keep_alive && !ctx.draining;
        let mut fields: Vec<(&str, &[u8])> = vec![("Content-Type", local.content_type.as_bytes())];
        fields.extend(local.headers.iter().map(|(n, v)| (*n, v.as_bytes())));
        if !keep {
            fields.push(("Connection", b"close"));
        }
        let head_only = x.head.method == Method::Head;
        let mut buf = Vec::with_capacity(256 + local.body.len());
        write_simple_response(
            local.status,
            reason_phrase(local.status),
            &fields,
            &local.body,
            head_only,
            &mut buf,
        );
        self.out.extend_from_slice(&buf);
        x.status = local.status;
        x.body_len = local.body.len() as u64;
        // Nova's access log names the instance's address (X-Forwarded-For) and the peer.
        let who = match x.head.headers.get("X-Forwarded-For") {
            Some(xff) => format!("{},{}", String::from_utf8_lossy(xff), self.peer_text),
            None => self.peer_text.clone(),
        };
        finished(ctx, &who, &x, now, "");
        let asked_close = !x.client_keep_alive && x.req_body.is_done();
        self.after_exchange(now, keep, asked_close, ctx);
    }

    /// Answers the current exchange locally with an error, before anything went upstream.
    fn local_error(&mut self, now: Instant, status: u16, msg: &str, why: &str, ctx: &mut Ctx) {
        let Some(mut x) = self.take_exchange() else {
            return;
        };
        let keep = x.client_keep_alive && x.req_body.is_done();
        if let Some(up) = x.up.take() {
            ctx.close(up.sock);
        }
        if !why.is_empty() {
            log::warn!("{} {why}", self.peer_text);
        }
        self.answer(now, &mut x, status, msg, why, keep, ctx);
    }

    /// In `Exchange`: forward request body, read the response, finish.
    fn pump(&mut self, now: Instant, ctx: &mut Ctx) -> bool {
        let Phase::Exchange(x) = &mut self.phase else {
            return false;
        };
        let limits = ctx.cfg.limits;
        // Request body → upstream (or into memory, to answer locally).
        while !x.req_body.is_done() {
            let room = match (&x.sink, &x.up) {
                (Sink::Gather(_) | Sink::Serve(_), _) => true,
                (Sink::Stream, Some(up)) => up.out.len() < HIGH_WATER,
                (Sink::Stream, None) => false,
            };
            if !room {
                break;
            }
            match x.req_body.decode(&self.inbuf, &limits) {
                Ok((0, None)) => break,
                Ok((n, piece)) => {
                    // Payload only: the framing consumed with it is never forwarded.
                    if let Some(Body::Data(d)) = piece {
                        match &mut x.sink {
                            Sink::Gather(body) | Sink::Serve(body) => body.extend_from_slice(d),
                            Sink::Stream => {
                                if let Some(up) = x.up.as_mut() {
                                    up.out.extend_from_slice(d);
                                }
                                if let Some(r) = x.replay_body.as_mut() {
                                    if r.len() + d.len() <= MAX_REPLAY {
                                        r.extend_from_slice(d);
                                    } else {
                                        x.replay_body = None;
                                    }
                                }
                            }
                        }
                    }
                    self.inbuf.advance(n);
                }
                Err(e) => {
                    if let Some(x) = self.take_exchange() {
                        release(x, ctx, false);
                    }
                    self.fail_client(now, e.status(), Some(e), ctx);
                    return true;
                }
            }
        }
        if !x.req_body.is_done() && self.client_eof {
            self.abort(ctx, "client closed during the request body");
            return false;
        }
        match &mut x.sink {
            Sink::Stream => {}
            _ if !x.req_body.is_done() => return false,
            Sink::Serve(body) => {
                let body = std::mem::take(body);
                let local = ctx.serve(now, self.peer, &x.head, &body);
                self.local_answer(now, local, ctx);
                return true;
            }
            Sink::Gather(body) => {
                // Whole: from now on it is a body of known length, sent (and replayed) as one.
                let body = std::mem::take(body);
                x.head.body = BodyKind::Length(body.len() as u64);
                // Kept whole (bounded by `max_body`): the head may wait for a lookup yet.
                x.replay_body = Some(BytesMut::from(&body[..]));
                x.sink = Sink::Stream;
                if x.relay_waiting {
                    x.relay_waiting = false;
                    relay(now, x, self.client, ctx);
                }
            }
        }
        let Some(up) = x.up.as_mut() else {
            return false;
        };
        // Response head.
        while let Resp::AwaitingHead = x.resp {
            match up
                .scanner
                .parse_response(&up.inbuf, x.head.method, &RESPONSE_LIMITS)
            {
                Ok(Some((head, n))) => {
                    up.inbuf.advance(n);
                    up.scanner.reset();
                    if head.status == 101 {
                        return self.bad_upstream(now, "upstream switched protocols", ctx);
                    }
                    if let Some(key) = x.key {
                        if head.status == 404
                            && x.from_cache
                            && !x.retried_lookup
                            && is_idempotent(x.head.method)
                            && x.req_body.is_done()
                            && x.replay_body.is_some()
                        {
                            // The cached instance may be stale (IP reused, Neutron LP#1868867):
                            // ask the backend again, once, before believing the 404.
                            log::info!(
                                "{} metadata server does not know the cached instance for {}; looking it up again",
                                self.peer_text, key.ip
                            );
                            if let Some(up) = x.up.take() {
                                ctx.close(up.sock);
                            }
                            x.retried_lookup = true;
                            self.resolve(now, true, ctx);
                            return true;
                        }
                        if head.status == 403 {
                            log::warn!(
                                "{} the metadata server answered 403 Forbidden: the shared secrets of agent and server likely differ",
                                self.peer_text
                            );
                        }
                    }
                    let informational = head.status < 200;
                    if !informational {
                        x.status = head.status;
                        x.upstream_keep_alive = head.keep_alive;
                        if head.body == BodyKind::UntilClose || ctx.draining {
                            x.client_keep_alive = false;
                        }
                        x.resp = Resp::Body {
                            dec: BodyDecoder::new(head.body),
                            chunked: head.body == BodyKind::Chunked,
                        };
                    }
                    let conn_field: &[(&str, &[u8])] = if informational {
                        &[]
                    } else if !x.client_keep_alive {
                        &[("Connection", b"close")]
                    } else if head.version == Version::Http10 {
                        &[("Connection", b"keep-alive")]
                    } else {
                        &[]
                    };
                    let rw = Rewrite {
                        strip_hop_by_hop: true,
                        add: conn_field,
                        ..Rewrite::default()
                    };
                    let mut buf = Vec::with_capacity(256);
                    write_response_head(&head, &rw, &mut buf);
                    self.out.extend_from_slice(&buf);
                    x.resp_started = true;
                }
                Ok(None) => {
                    if up.eof {
                        if up.inbuf.is_empty() && retry(x, self.client, ctx) {
                            return true;
                        }
                        let why = "upstream closed before answering";
                        self.upstream_failed(now, UpstreamError::Reset, why, ctx);
                        return false;
                    }
                    return false;
                }
                Err(e) => {
                    return self.bad_upstream(
                        now,
                        &format!("malformed upstream response: {e}"),
                        ctx,
                    );
                }
            }
        }
        // Response body → client.
        if let Resp::Body { dec, chunked } = &mut x.resp {
            while self.out.len() < HIGH_WATER {
                match dec.decode(&up.inbuf, &RESPONSE_LIMITS) {
                    Ok((0, None)) => break,
                    Ok((n, piece)) => {
                        let done = matches!(piece, Some(Body::Done));
                        match piece {
                            Some(Body::Data(d)) => {
                                x.body_len += d.len() as u64;
                                write_payload(*chunked, d, &mut self.out);
                            }
                            Some(Body::Done) if *chunked => {
                                // The last chunk and an empty trailer section, both ours.
                                self.out.extend_from_slice(b"0\r\n\r\n");
                            }
                            _ => {}
                        }
                        up.inbuf.advance(n);
                        if done {
                            break;
                        }
                    }
                    Err(e) => {
                        log::warn!("{} bad upstream body: {e}", self.peer_text);
                        self.upstream_cut(UpstreamError::Malformed, "", ctx);
                        return false;
                    }
                }
            }
            if !dec.is_done() && up.eof && up.inbuf.is_empty() && dec.eof().is_err() {
                self.upstream_cut(UpstreamError::Reset, "upstream closed mid-response", ctx);
                return false;
            }
            if dec.is_done() {
                x.resp = Resp::Done;
            }
        }
        if !matches!(x.resp, Resp::Done) {
            return false;
        }
        // Finished: log, recycle, continue or close.
        let Some(x) = self.take_exchange() else {
            return false;
        };
        let req_done = x.req_body.is_done();
        let keep = x.client_keep_alive && req_done;
        finished(ctx, &self.peer_text, &x, now, "");
        let reusable = x.upstream_keep_alive && req_done;
        let asked_close = !x.client_keep_alive && req_done;
        release(x, ctx, reusable);
        self.after_exchange(now, keep, asked_close, ctx);
        true
    }

    fn bad_upstream(&mut self, now: Instant, why: &str, ctx: &mut Ctx) -> bool {
        self.upstream_failed(now, UpstreamError::Malformed, why, ctx);
        false
    }

    /// The upstream failed: answer as DESIGN.md's error table says if nothing was sent yet,
    /// else cut the client off.
    fn upstream_failed(&mut self, now: Instant, kind: UpstreamError, why: &str, ctx: &mut Ctx) {
        let Phase::Exchange(x) = &self.phase else {
            return;
        };
        if x.resp_started {
            self.upstream_cut(kind, why, ctx);
            return;
        }
        let (status, msg) = match kind {
            UpstreamError::Refused | UpstreamError::Unreachable | UpstreamError::Tls => {
                (503, UPSTREAM_UNAVAILABLE)
            }
            UpstreamError::Timeout => (504, default_message(504)),
            UpstreamError::Malformed | UpstreamError::Reset => (502, default_message(502)),
        };
        ctx.metric(|m| m.upstream_error(kind));
        let Some(mut x) = self.take_exchange() else {
            return;
        };
        let keep = x.client_keep_alive && x.req_body.is_done();
        if let Some(up) = x.up.take() {
            ctx.close(up.sock);
        }
        log::warn!("{} upstream failure: {why}", self.peer_text);
        self.answer(now, &mut x, status, msg, why, keep, ctx);
    }

    /// The upstream failed after its answer had started going to the client, who can only be
    /// cut off.
    fn upstream_cut(&mut self, kind: UpstreamError, why: &str, ctx: &mut Ctx) {
        ctx.metric(|m| m.upstream_error(kind));
        self.abort(ctx, why);
    }

    /// A client error: answer with its status and close.
    fn fail_client(&mut self, now: Instant, status: u16, err: Option<HttpError>, ctx: &mut Ctx) {
        let why = err.map_or_else(|| "timed out".to_owned(), |e| e.to_string());
        log::info!("{} bad request ({status}): {why}", self.peer_text);
        ctx.metric(|m| m.request(status, None));
        write_error(
            status,
            default_message(status),
            None,
            false,
            true,
            &mut self.out,
        );
        self.finish(now, true, ctx);
    }

    /// Stops taking requests: flush what is queued, then close; with `linger`, through a
    /// shutdown of the write side and reading until the client's EOF, so that bytes it sent
    /// and we did not read cannot turn our close into a reset that destroys the answer.
    fn finish(&mut self, now: Instant, linger: bool, ctx: &Ctx) {
        self.inbuf.clear();
        self.phase = Phase::Closing {
            deadline: deadline_in(now, ctx.cfg.timeouts.idle),
            linger,
        };
    }

    /// Queues a locally made answer to the current exchange and moves on.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        now: Instant,
        x: &mut Exchange,
        status: u16,
        msg: &str,
        why: &str,
        keep: bool,
        ctx: &mut Ctx,
    ) {
        let head_only = x.head.method == Method::Head;
        x.body_len = write_error(
            status,
            msg,
            Some(&x.head.headers),
            head_only,
            !keep,
            &mut self.out,
        );
        x.status = status;
        finished(ctx, &self.peer_text, x, now, why);
        self.after_exchange(now, keep, false, ctx);
    }

    /// The exchange is over: wait for the next request, or close. `asked_close`: the client
    /// asked to close and its request was read whole, so unless it sent more anyway (bytes
    /// in `inbuf`), closing needs no lingering (as nginx: lingering only when more may come).
    fn after_exchange(&mut self, now: Instant, keep: bool, asked_close: bool, ctx: &Ctx) {
        if !keep || ctx.draining {
            let linger = !(asked_close && self.inbuf.is_empty());
            self.finish(now, linger, ctx);
            return;
        }
        let pipelined = !self.inbuf.is_empty();
        let timeout = if pipelined {
            ctx.cfg.timeouts.head
        } else {
            ctx.cfg.timeouts.idle
        };
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
    fn abort(&mut self, ctx: &mut Ctx, why: &str) {
        if !why.is_empty() {
            log::info!("{} connection closed: {why}", self.peer_text);
        }
        if let Phase::Exchange(x) = std::mem::replace(&mut self.phase, Phase::Closed) {
            if let Some(up) = x.up {
                ctx.close(up.sock);
            }
        }
        self.out.clear();
        ctx.close(self.client);
    }
}

/// Hands the upstream back: to the pool when it is clean and reusable, else closed.
fn release(mut x: Box<Exchange>, ctx: &mut Ctx, reusable: bool) {
    if let Some(up) = x.up.take() {
        let clean = reusable && up.inbuf.is_empty() && up.out.is_empty() && !up.eof;
        ctx.release_upstream(up.sock, clean);
    }
}

/// A chunked request body is gathered before anything goes upstream, so that it can be sent
/// with a `Content-Length` (see [`Sink`]); it owes us its bytes as promptly as its head.
fn gather_chunked(x: &mut Exchange, now: Instant, ctx: &Ctx) {
    if x.head.body == BodyKind::Chunked {
        x.sink = Sink::Gather(Vec::new());
        x.replay_body = None;
        x.deadline = deadline_in(now, ctx.cfg.timeouts.head);
    }
}

/// Payload bytes of a response on their way to the client: as they are under a length (or
/// until close), as one chunk of ours when chunked. An empty piece writes nothing: a chunk of
/// size 0 would end the body.
fn write_payload(chunked: bool, data: &[u8], out: &mut BytesMut) {
    if !chunked {
        out.extend_from_slice(data);
    } else if !data.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// RFC 9110 §9.2.2: only these are sent again (on a fresh connection, or after a lookup past
/// the cache); a password POST is never sent twice.
fn is_idempotent(method: Method) -> bool {
    matches!(method, Method::Get | Method::Head)
}

/// Sends the exchange upstream: encodes its head with the hop's fields, takes a pooled or new
/// connection, and queues the head (and any body bytes already read). While a chunked body is
/// still being gathered, this only marks the exchange to be sent once it is whole.
fn relay(now: Instant, x: &mut Exchange, owner: SockId, ctx: &mut Ctx) {
    if matches!(x.sink, Sink::Gather(_)) {
        x.relay_waiting = true;
        return;
    }
    let (sock, reused) = ctx.acquire_upstream(owner);
    let timeout = if reused {
        ctx.cfg.timeouts.response
    } else {
        ctx.cfg.timeouts.connect
    };
    x.deadline = deadline_in(now, timeout);
    x.up = Some(Upstream {
        sock,
        connected: reused,
        reused,
        inbuf: BytesMut::new(),
        scanner: HeadScanner::new(),
        out: request_bytes(x),
        eof: false,
    });
}

/// The head as this hop sends it, followed by the body bytes read so far.
fn request_bytes(x: &Exchange) -> BytesMut {
    let add: Vec<(&str, &[u8])> = x.fields.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    let rw = x.rules.rewrite(&add);
    let mut head = Vec::with_capacity(512);
    write_request_head(&x.head, &rw, &mut head);
    let mut out = BytesMut::from(&head[..]);
    if let Some(body) = &x.replay_body {
        out.extend_from_slice(body);
    }
    out
}

/// A failure on a reused upstream before any response byte is most likely the pooled
/// connection having been closed by the other end: replay the request once on a new one.
fn retry(x: &mut Exchange, owner: SockId, ctx: &mut Ctx) -> bool {
    let Some(up) = x.up.as_ref() else {
        return false;
    };
    if !up.reused
        || !up.inbuf.is_empty()
        || x.replay_body.is_none()
        || !is_idempotent(x.head.method)
    {
        return false;
    }
    let out = request_bytes(x);
    ctx.close(up.sock);
    let sock = ctx.connect_upstream(owner);
    x.up = Some(Upstream {
        sock,
        connected: false,
        reused: false,
        inbuf: BytesMut::new(),
        scanner: HeadScanner::new(),
        out,
        eof: false,
    });
    true
}

/// An exchange is answered: the access log line, and the request counted.
fn finished(ctx: &Ctx, peer: &str, x: &Exchange, now: Instant, why: &str) {
    let took = now.saturating_duration_since(x.started);
    ctx.metric(|m| m.request(x.status, Some(took)));
    let secs = took.as_secs_f64();
    let sep = if why.is_empty() { "" } else { " " };
    // A scraper asks every few seconds: its requests would drown the others.
    let level = match ctx.cfg.role {
        Role::Metrics(_) => log::Level::Debug,
        _ => log::Level::Info,
    };
    log::log!(
        level,
        "{peer} \"{}\" status: {} len: {} time: {secs:.7}{sep}{why}",
        x.line,
        x.status,
        x.body_len
    );
}
