//! The upstream half of a connection: the upstream socket it is given, the response coming
//! back, a replay on a fresh connection, and what a failure becomes for the client.

use std::time::Instant;

use bytes::{Buf, BytesMut};

use super::super::decision::{Captured, Output, Route, Ticket};
use super::super::error_page::upstream_failure;
use super::super::exchange::{
    deadline_in, write_payload, Exchange, Resp, Stage, Upstream, HIGH_WATER, RESPONSE_LIMITS,
};
use super::{Conn, Phase};
use crate::http::{
    write_response_head, Body, BodyDecoder, BodyKind, Method, ResponseHead, Rewrite, Version,
};
use crate::metrics::UpstreamError;
use crate::socket::{ConnectError, Input, SockId};
use crate::upstream::MAX_ENTRY_BYTES;

impl Conn {
    pub(crate) fn on_upstream(&mut self, now: Instant, input: Input<'_>) {
        let timeouts = self.settings.timeouts;
        let Phase::Exchange(x) = &mut self.phase else {
            return;
        };
        let resp_started = x.resp_started;
        let Some(up) = x.up_mut() else {
            return;
        };
        match input {
            Input::Read(bytes) => {
                up.inbuf.extend_from_slice(bytes);
                // The head must be complete within the response timeout of the request going
                // out (a head dripped a byte at a time would otherwise hold both connections
                // for as long as the upstream likes); after it, each read restarts the clock.
                if resp_started {
                    x.deadline = deadline_in(now, timeouts.response);
                }
            }
            Input::Eof => up.eof = true,
            Input::Connected => {
                up.connected = true;
                x.deadline = x.capped(deadline_in(now, timeouts.response));
            }
            Input::ConnectFailed(e) => {
                let (why, kind) = match e {
                    ConnectError::Refused => {
                        ("upstream refused the connection", UpstreamError::Refused)
                    }
                    ConnectError::Other => ("upstream unreachable", UpstreamError::Unreachable),
                };
                self.upstream_failed(now, kind, why);
                return;
            }
            Input::Error => {
                up.eof = true;
                up.inbuf.clear();
                if !resp_started && !self.retry(now) {
                    self.upstream_failed(now, UpstreamError::Reset, "upstream connection broke");
                    return;
                }
            }
        }
        self.progress(now);
    }

    /// The upstream's TLS session failed; `why` names the reason (certificate, host name,
    /// alert). Like a refused connection: an error answer while no response went out, else
    /// the client is cut off.
    pub(crate) fn on_upstream_tls_failure(&mut self, now: Instant, why: &str) {
        self.upstream_failed(now, UpstreamError::Tls, why);
    }

    /// [`Conn::upstream_at`] for an owner with one server.
    #[cfg(test)]
    pub(crate) fn upstream(&mut self, now: Instant, sock: SockId, reused: bool) -> bool {
        self.upstream_at(now, sock, reused, 0, "")
    }

    /// The owner's upstream for [`Output::Upstream`]: `reused` when it comes from the pool,
    /// a connection to server `server` (named `name` in the logs). Returns `false` (the owner
    /// closes it) when no exchange asked for one.
    pub(crate) fn upstream_at(
        &mut self,
        now: Instant,
        sock: SockId,
        reused: bool,
        server: usize,
        name: &str,
    ) -> bool {
        let timeouts = self.settings.timeouts;
        let attempts = self.settings.attempts.max(1);
        let Phase::Exchange(x) = &mut self.phase else {
            return false;
        };
        if !matches!(x.stage, Stage::Connecting) {
            return false;
        }
        if !x.tried.contains(&server) {
            x.tried.push(server);
            if !x.tried_names.is_empty() {
                x.tried_names.push_str(", ");
            }
            x.tried_names.push_str(name);
        }
        x.attempt_started = now;
        // This attempt gets its share of what is left of the deadline, so that a server that
        // accepts and never answers leaves the others time to answer.
        let left = attempts.saturating_sub(x.tried.len()) + 1;
        let share = u32::try_from(left).unwrap_or(u32::MAX);
        x.attempt_deadline = (x.request_deadline)
            .map(|d| deadline_in(now, d.saturating_duration_since(now) / share));
        let timeout = if reused {
            timeouts.response
        } else {
            timeouts.connect
        };
        x.deadline = x.capped(deadline_in(now, timeout));
        x.stage = Stage::Relaying(Upstream::new(sock, reused, x.request_bytes()));
        self.progress(now);
        true
    }

    /// The owner's answer to [`Output::Check`]: `None` lets the answer through, a route sends
    /// the request again (once) on it.
    pub(crate) fn checked(&mut self, now: Instant, ticket: Ticket, reroute: Option<Route>) {
        let Phase::Exchange(x) = &mut self.phase else {
            return;
        };
        if x.ticket != ticket || x.up().is_none_or(|u| u.held.is_none()) {
            return;
        }
        match reroute {
            Some(route) if x.replayable() && !x.rerouted => {
                if let Some(up) = x.take_up() {
                    self.outputs.push_back(Output::Close(up.sock));
                }
                x.rerouted = true;
                x.forward = None;
                x.stage = Stage::Routing;
                self.route(now, ticket, route);
            }
            _ => {
                if let Some(head) = x.up_mut().and_then(|u| u.held.take()) {
                    start_response(x, head, self.draining, &mut self.out);
                }
                self.progress(now);
            }
        }
    }

    /// Upstream → client: the response head (held for a check when the route asked), then
    /// the body.
    pub(super) fn pump_upstream(&mut self, now: Instant) -> bool {
        let draining = self.draining;
        loop {
            let Phase::Exchange(x) = &mut self.phase else {
                return false;
            };
            if !matches!(x.resp, Resp::AwaitingHead) {
                break;
            }
            let ticket = x.ticket;
            let check = x.forward.as_ref().is_some_and(|f| f.check);
            let can_reroute =
                x.replayable() && !x.rerouted && x.forward.as_ref().is_some_and(|f| f.reroutable);
            let method = x.head.method;
            let Some(up) = x.up_mut() else {
                return false;
            };
            if up.held.is_some() {
                return false;
            }
            let head = match (up.scanner).parse_response(&up.inbuf, method, &RESPONSE_LIMITS) {
                Ok(Some((head, n))) => {
                    up.inbuf.advance(n);
                    up.scanner.reset();
                    head
                }
                Ok(None) => {
                    if up.eof {
                        if up.inbuf.is_empty() && self.retry(now) {
                            return true;
                        }
                        let why = "upstream closed before answering";
                        self.upstream_failed(now, UpstreamError::Reset, why);
                    }
                    return false;
                }
                Err(e) => {
                    let why = format!("malformed upstream response: {e}");
                    self.upstream_failed(now, UpstreamError::Malformed, &why);
                    return false;
                }
            };
            if head.status == 101 {
                self.upstream_failed(now, UpstreamError::Malformed, "upstream switched protocols");
                return false;
            }
            if head.status < 200 {
                start_response(x, head, draining, &mut self.out);
                continue;
            }
            let status = head.status;
            // A 5xx is one server's trouble (Nova's database, its memcached): another may
            // answer, and the client only sees it if none does.
            let failure = (status >= 500).then(|| format!("answered {status}"));
            self.attempt_over(now, failure.as_deref());
            if let Some(why) = &failure {
                if self.fail_over(now, why) {
                    return true;
                }
            }
            let Phase::Exchange(x) = &mut self.phase else {
                return false;
            };
            if check {
                if let Some(up) = x.up_mut() {
                    up.held = Some(head);
                }
                self.outputs.push_back(Output::Check {
                    ticket,
                    status,
                    can_reroute,
                });
                return false;
            }
            start_response(x, head, draining, &mut self.out);
        }
        self.pump_response(now)
    }

    /// Response body → client; at its end, the exchange is over.
    fn pump_response(&mut self, now: Instant) -> bool {
        let Phase::Exchange(x) = &mut self.phase else {
            return false;
        };
        let Stage::Relaying(up) = &mut x.stage else {
            return false;
        };
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
                                if let Some(c) = &mut x.capture {
                                    if c.body.len() + d.len() > MAX_ENTRY_BYTES {
                                        x.capture = None;
                                    } else {
                                        c.body.extend_from_slice(d);
                                    }
                                }
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
                        self.upstream_cut(UpstreamError::Malformed, "");
                        return false;
                    }
                }
            }
            if !dec.is_done() && up.eof && up.inbuf.is_empty() && dec.eof().is_err() {
                self.upstream_cut(UpstreamError::Reset, "upstream closed mid-response");
                return false;
            }
            if dec.is_done() {
                x.resp = Resp::Done;
            }
        }
        if !matches!(x.resp, Resp::Done) {
            return false;
        }
        // Finished: log, release, continue or close.
        let Some(mut x) = self.take_exchange() else {
            return false;
        };
        let req_done = x.req_body.is_done();
        let keep = x.client_keep_alive && req_done;
        if let Some(captured) = x.capture.take() {
            self.outputs.push_back(Output::Captured(captured));
        }
        self.finished(None, &x, now, "");
        if let Some(up) = x.take_up() {
            let clean = x.upstream_keep_alive
                && req_done
                && up.inbuf.is_empty()
                && up.out.is_empty()
                && !up.eof;
            self.outputs.push_back(Output::Release {
                sock: up.sock,
                clean,
            });
        }
        let asked_close = !x.client_keep_alive && req_done;
        self.after_exchange(now, keep, asked_close);
        true
    }

    /// A failure on a reused upstream before any response byte is most likely the pooled
    /// connection having been closed by the other end: replay the request once on a new one.
    fn retry(&mut self, now: Instant) -> bool {
        let Phase::Exchange(x) = &mut self.phase else {
            return false;
        };
        let Some(up) = x.up() else {
            return false;
        };
        if !up.reused || !up.inbuf.is_empty() || !x.replayable() {
            return false;
        }
        let sock = up.sock;
        self.outputs.push_back(Output::Close(sock));
        self.ask_upstream(now, true);
        true
    }

    /// The upstream failed: another server if the request may go again, else a stale answer
    /// or an error answer if nothing was sent yet, else cut the client off.
    pub(super) fn upstream_failed(&mut self, now: Instant, kind: UpstreamError, why: &str) {
        let Phase::Exchange(x) = &self.phase else {
            return;
        };
        if x.resp_started {
            self.upstream_cut(kind, why);
            return;
        }
        self.outputs.push_back(Output::UpstreamFailed(kind));
        self.attempt_over(now, Some(why));
        if !self.fail_over(now, why) {
            self.give_up(now, kind, why);
        }
    }

    /// The request deadline passed before an answer's head: 504 (or a stale answer), naming
    /// every server tried.
    pub(super) fn deadline_missed(&mut self, now: Instant) {
        let why = "request deadline passed";
        self.outputs.push_back(Output::DeadlineMissed);
        self.outputs
            .push_back(Output::UpstreamFailed(UpstreamError::Timeout));
        self.attempt_over(now, Some(why));
        self.give_up(now, UpstreamError::Timeout, why);
    }

    /// Tells the owner how the current attempt ended, when it has servers to choose between.
    fn attempt_over(&mut self, now: Instant, failure: Option<&str>) {
        if self.settings.attempts < 2 {
            return;
        }
        let Phase::Exchange(x) = &self.phase else {
            return;
        };
        let Some(&server) = x.tried.last() else {
            return;
        };
        self.outputs.push_back(Output::Attempt {
            server,
            took: now.saturating_duration_since(x.attempt_started),
            failure: failure.map(str::to_owned),
        });
    }

    /// Sends the request to another server, if it may go again: GET or HEAD (a POST is never
    /// sent twice), kept whole, nothing of an answer sent yet, a server left untried and the
    /// deadline not passed.
    fn fail_over(&mut self, now: Instant, why: &str) -> bool {
        let attempts = self.settings.attempts;
        let Phase::Exchange(x) = &mut self.phase else {
            return false;
        };
        let open = x.request_deadline.is_none_or(|d| now < d);
        let untried = !x.tried.is_empty() && x.tried.len() < attempts;
        if x.resp_started || !x.replayable() || !untried || !open || x.up().is_none() {
            return false;
        }
        if let Some(up) = x.take_up() {
            self.outputs.push_back(Output::Close(up.sock));
        }
        log::info!(
            "{} {why} (tried {}): trying another server",
            self.peer_text,
            x.tried_names
        );
        self.ask_upstream(now, true);
        true
    }

    /// No server answered: the route's stale answer while it lasts, else the error answer.
    fn give_up(&mut self, now: Instant, kind: UpstreamError, why: &str) {
        let Phase::Exchange(x) = &self.phase else {
            return;
        };
        let stale = x.forward.as_ref().and_then(|f| f.stale.clone());
        if let Some((stored, until)) = stale {
            if now < until {
                self.reply(now, &stored, true);
                return;
            }
        }
        let (status, msg) = upstream_failure(kind);
        let Some(mut x) = self.take_exchange() else {
            return;
        };
        let keep = x.client_keep_alive && x.req_body.is_done();
        if let Some(up) = x.take_up() {
            self.outputs.push_back(Output::Close(up.sock));
        }
        let why = match x.tried_names.is_empty() {
            true => why.to_owned(),
            false => format!("{why} (tried {})", x.tried_names),
        };
        log::warn!("{} upstream failure: {why}", self.peer_text);
        self.answer(now, &mut x, status, msg, &why, keep);
    }

    /// The upstream failed after its answer had started going to the client, who can only be
    /// cut off.
    pub(super) fn upstream_cut(&mut self, kind: UpstreamError, why: &str) {
        self.outputs.push_back(Output::UpstreamFailed(kind));
        self.abort(why);
    }
}

/// A response head from the upstream goes to the client, with our framing and `Connection`.
fn start_response(x: &mut Exchange, head: ResponseHead, draining: bool, out: &mut BytesMut) {
    let informational = head.status < 200;
    if !informational {
        x.status = head.status;
        x.upstream_keep_alive = head.keep_alive;
        if head.body == BodyKind::UntilClose || draining {
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
    if !informational && head.status == 200 && x.head.method == Method::Get {
        if let Some(key) = x.forward.as_ref().and_then(|f| f.capture.clone()) {
            x.capture = Some(Box::new(Captured {
                key,
                head: head.clone(),
                body: Vec::new(),
            }));
        }
    }
    let rw = Rewrite {
        strip_hop_by_hop: true,
        add: conn_field,
        ..Rewrite::default()
    };
    let mut buf = Vec::with_capacity(256);
    write_response_head(&head, &rw, &mut buf);
    out.extend_from_slice(&buf);
    x.resp_started = true;
}
