//! One request and its answer, as a connection holds them: where the request's body goes,
//! which upstream carries it, how far the response got. Plain data and the pure steps on it
//! (encoding the head, re-chunking a payload); the connection drives them.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::decision::{Captured, Forward, Ticket};
use crate::http::{
    write_request_head, BodyDecoder, BodyKind, HeadScanner, Limits, Method, RequestHead,
    ResponseHead,
};
use crate::socket::SockId;

/// Above this many unsent bytes towards one side, the other side is not read (back-pressure).
pub(super) const HIGH_WATER: usize = 64 * 1024;
/// Largest request (head + body) kept for one replay on a fresh upstream connection.
pub(super) const MAX_REPLAY: usize = 64 * 1024;
/// Limits on upstream responses: heads may be larger than requests; bodies stream unbounded.
pub(crate) const RESPONSE_LIMITS: Limits = Limits {
    max_head: 64 * 1024,
    max_headers: 200,
    max_body: u64::MAX,
    max_chunk_line: 4096,
};

/// `now + timeout`, for a configured timeout. The binary keeps every timeout within a day
/// (`bins/src/cli/range.rs`), so this is plain addition there; should a caller of the core pass
/// more, the deadline is a day away instead of a panic (`Instant + Duration` panics on
/// overflow), or `now` at the very end of `Instant`'s range. Defence in depth.
pub(super) fn deadline_in(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// The upstream side of one exchange.
#[derive(Debug)]
pub(super) struct Upstream {
    pub(super) sock: SockId,
    pub(super) connected: bool,
    /// Came from the pool: a failure before any response byte may be a stale connection.
    pub(super) reused: bool,
    pub(super) inbuf: BytesMut,
    /// Remembers how far `inbuf` was searched for the end of a response head, so a head that
    /// arrives in many small reads is not rescanned from the start each time.
    pub(super) scanner: HeadScanner,
    pub(super) out: BytesMut,
    pub(super) eof: bool,
    /// A final response head held back while the policy checks its status.
    pub(super) held: Option<ResponseHead>,
}

impl Upstream {
    pub(super) fn new(sock: SockId, reused: bool, out: BytesMut) -> Upstream {
        Upstream {
            sock,
            connected: reused,
            reused,
            inbuf: BytesMut::new(),
            scanner: HeadScanner::new(),
            out,
            eof: false,
            held: None,
        }
    }
}

/// How far the response got.
#[derive(Debug)]
pub(super) enum Resp {
    /// No final response head yet.
    AwaitingHead,
    /// Streaming the body to the client: its payload only, re-chunked by us when `chunked`
    /// (never the upstream's chunk extensions or trailers).
    Body { dec: BodyDecoder, chunked: bool },
    /// Completely forwarded.
    Done,
}

/// Where the exchange stands towards its owner and its upstream.
// Lives in the boxed `Exchange`, and relaying is where nearly every exchange spends its life.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Stage {
    /// Asked the owner what to do with the head ([`super::decision::Output::Route`]).
    Routing,
    /// To be forwarded once the gathered body is whole.
    Gathering,
    /// Asked the owner for an upstream connection.
    Connecting,
    /// Relaying with this upstream.
    Relaying(Upstream),
    /// To be answered locally; `asked` once [`super::decision::Output::Serve`] went out.
    Serving { asked: bool },
}

/// Where a request body goes. Only its payload ever moves on: a chunked body's framing,
/// extensions and trailers stop here (eventlet before 0.40.3 reads trailer lines as a new
/// request), and the next hop gets a `Content-Length` we computed.
#[derive(Debug)]
pub(super) enum Sink {
    /// To the upstream as it arrives, under the client's `Content-Length` (or no body).
    Stream,
    /// Into memory, then sent with a `Content-Length` once whole (a chunked body; bodies are
    /// bounded by `Limits::max_body`).
    Gather(Vec<u8>),
    /// Into memory, to answer locally.
    Serve(Vec<u8>),
}

impl Sink {
    pub(super) fn is_stream(&self) -> bool {
        matches!(self, Sink::Stream)
    }
}

/// One request and its answer.
#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) ticket: Ticket,
    pub(super) started: Instant,
    /// `GET /path HTTP/1.1`, for the access log.
    pub(super) line: String,
    pub(super) head: RequestHead,
    pub(super) req_body: BodyDecoder,
    pub(super) resp: Resp,
    /// The response head has gone to the client: errors can no longer be answered.
    pub(super) resp_started: bool,
    /// Response will be followed by another request on this client connection.
    pub(super) client_keep_alive: bool,
    pub(super) upstream_keep_alive: bool,
    pub(super) status: u16,
    pub(super) body_len: u64,
    /// Activity deadline: body, connect, then response.
    pub(super) deadline: Instant,
    /// How it goes upstream, once routed there.
    pub(super) forward: Option<Forward>,
    /// Request payload forwarded so far, for a replay; `None` once too large.
    pub(super) replay_body: Option<BytesMut>,
    /// Where the request body's payload goes.
    pub(super) sink: Sink,
    pub(super) stage: Stage,
    /// Routed a second time after a [`super::decision::Output::Check`]: never a third.
    pub(super) rerouted: bool,
    /// Where it was sent so far: the servers' indices and, for the log, their names.
    pub(super) tried: Vec<usize>,
    pub(super) tried_names: String,
    /// When the current attempt started (for the server's latency).
    pub(super) attempt_started: Instant,
    /// The request deadline: connect, retries and the answer's head must fit before it.
    pub(super) request_deadline: Option<Instant>,
    /// The current attempt's share of what is left of the request deadline.
    pub(super) attempt_deadline: Option<Instant>,
    /// The answer being kept for the response cache (a 200 to a GET the route asked for).
    pub(super) capture: Option<Box<Captured>>,
}

impl Exchange {
    pub(super) fn up(&self) -> Option<&Upstream> {
        match &self.stage {
            Stage::Relaying(up) => Some(up),
            _ => None,
        }
    }

    pub(super) fn up_mut(&mut self) -> Option<&mut Upstream> {
        match &mut self.stage {
            Stage::Relaying(up) => Some(up),
            _ => None,
        }
    }

    /// The upstream socket, taken out of the exchange (to close or release it).
    pub(super) fn take_up(&mut self) -> Option<Upstream> {
        match std::mem::replace(&mut self.stage, Stage::Connecting) {
            Stage::Relaying(up) => Some(up),
            other => {
                self.stage = other;
                None
            }
        }
    }

    /// `deadline`, but no later than the current attempt's share of the request deadline
    /// (which stops mattering once the answer's head went to the client).
    pub(super) fn capped(&self, deadline: Instant) -> Instant {
        match self.attempt_deadline {
            Some(cap) if !self.resp_started => deadline.min(cap),
            _ => deadline,
        }
    }

    /// The request can be sent again: idempotent, read whole and kept whole.
    pub(super) fn replayable(&self) -> bool {
        is_idempotent(self.head.method) && self.req_body.is_done() && self.replay_body.is_some()
    }

    /// The head as this hop sends it, followed by the body bytes read so far.
    pub(super) fn request_bytes(&self) -> BytesMut {
        let mut head = Vec::with_capacity(512);
        if let Some(f) = &self.forward {
            let add: Vec<(&str, &[u8])> =
                f.fields.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            write_request_head(&self.head, &f.rules.rewrite(&add), &mut head);
        }
        let mut out = BytesMut::from(&head[..]);
        if let Some(body) = &self.replay_body {
            out.extend_from_slice(body);
        }
        out
    }

    /// A chunked body is gathered before anything goes upstream, so that it can be sent with
    /// a `Content-Length` (see [`Sink`]); it owes us its bytes as promptly as its head.
    pub(super) fn gather_chunked(&mut self, now: Instant, head_timeout: Duration) {
        if self.head.body == BodyKind::Chunked {
            self.sink = Sink::Gather(Vec::new());
            self.replay_body = None;
            self.deadline = deadline_in(now, head_timeout);
        }
    }

    /// Keeps forwarded payload for a replay, up to [`MAX_REPLAY`].
    pub(super) fn keep_for_replay(&mut self, data: &[u8]) {
        if let Some(r) = self.replay_body.as_mut() {
            if r.len() + data.len() <= MAX_REPLAY {
                r.extend_from_slice(data);
            } else {
                self.replay_body = None;
            }
        }
    }
}

/// Payload bytes of a response on their way to the client: as they are under a length (or
/// until close), as one chunk of ours when chunked. An empty piece writes nothing: a chunk of
/// size 0 would end the body.
pub(super) fn write_payload(chunked: bool, data: &[u8], out: &mut BytesMut) {
    if !chunked {
        out.extend_from_slice(data);
    } else if !data.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// RFC 9110 §9.2.2: only these are sent again (on a fresh connection, or routed again after
/// the policy's check); a password POST is never sent twice.
pub(super) fn is_idempotent(method: Method) -> bool {
    matches!(method, Method::Get | Method::Head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_rechunked_and_empty_pieces_vanish() {
        let mut out = BytesMut::new();
        write_payload(true, b"hello", &mut out);
        write_payload(true, b"", &mut out);
        write_payload(false, b"raw", &mut out);
        assert_eq!(&out[..], b"5\r\nhello\r\nraw");
    }

    #[test]
    fn only_get_and_head_are_replayed() {
        assert!(is_idempotent(Method::Get) && is_idempotent(Method::Head));
        assert!(!is_idempotent(Method::Post) && !is_idempotent(Method::Put));
    }

    #[test]
    fn deadlines_saturate() {
        let now = crate::testing::epoch();
        assert_eq!(
            deadline_in(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(deadline_in(now, Duration::MAX) >= now);
    }
}
