//! Test and fuzz support shared by unit tests, property tests, fuzz targets and benches.
//!
//! The drivers here behave like a real caller: bytes arrive in pieces, are appended to one
//! buffer, and whatever a parser did not consume is shown to it again with the next piece.
//! Their outcomes are plain comparable values, so "every split gives the same answer" is one
//! `assert_eq!`.

pub mod contract;
pub mod fuzz;
#[cfg(test)]
mod props;
pub mod sim;

use std::fmt::Debug;
use std::time::Instant;

use crate::http::{
    Body, BodyDecoder, BodyKind, HeadScanner, Headers, HttpError, Limits, Method, RequestHead,
    ResponseHead, Version,
};

/// An arbitrary instant for tests, harnesses and the simulator to count simulated time from:
/// they only ever add offsets to it, so nothing depends on the clock's reading. The one place
/// the core's test support asks the clock (the core itself never does).
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> Instant {
    Instant::now()
}

/// Runs `f` on `input` whole, one byte at a time, and cut in two at every position, and asserts
/// all outputs equal (h11's `t_body_reader`). Returns the whole-input output.
pub fn for_each_split<T: PartialEq + Debug>(input: &[u8], f: impl Fn(&[&[u8]]) -> T) -> T {
    let whole = f(&[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        f(&bytes),
        whole,
        "byte-at-a-time differs for {:?}",
        input.escape_ascii().to_string()
    );
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(
            f(&[a, b]),
            whole,
            "split at {cut} differs for {:?}",
            input.escape_ascii().to_string()
        );
    }
    whole
}

/// Cuts `input` at `cuts` (taken modulo `input.len() + 1`, in any order) into pieces.
pub fn split_at_points<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut last = 0;
    for c in cuts {
        pieces.push(&input[last..c]);
        last = c;
    }
    pieces.push(&input[last..]);
    pieces
}

/// A request head as plain owned values, for comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSummary {
    /// `RequestHead::method`.
    pub method: Method,
    /// `RequestHead::method_str`.
    pub method_str: Vec<u8>,
    /// `RequestHead::target`.
    pub target: Vec<u8>,
    /// `RequestHead::version`.
    pub version: Version,
    /// Every field, in order.
    pub fields: Vec<(String, Vec<u8>)>,
    /// `RequestHead::body`.
    pub body: BodyKind,
    /// `RequestHead::keep_alive`.
    pub keep_alive: bool,
}

impl From<&RequestHead> for RequestSummary {
    fn from(h: &RequestHead) -> Self {
        RequestSummary {
            method: h.method,
            method_str: h.method_str.to_vec(),
            target: h.target.to_vec(),
            version: h.version,
            fields: summary_fields(&h.headers),
            body: h.body,
            keep_alive: h.keep_alive,
        }
    }
}

/// Every field in order, with a framing field (`Content-Length`, `Transfer-Encoding`) kept as
/// a marker at its place: a proxy writes framing in its own spelling (the `body` kind says
/// what it means), so only its position is compared.
fn summary_fields(h: &Headers) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(n, v)| {
            if n.eq_ignore_ascii_case("content-length")
                || n.eq_ignore_ascii_case("transfer-encoding")
            {
                ("<framing>".to_owned(), Vec::new())
            } else {
                (n.to_owned(), v.to_vec())
            }
        })
        .collect()
}

/// A response head as plain owned values, for comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseSummary {
    /// `ResponseHead::status`.
    pub status: u16,
    /// `ResponseHead::reason`.
    pub reason: Vec<u8>,
    /// `ResponseHead::version`.
    pub version: Version,
    /// Every field, in order.
    pub fields: Vec<(String, Vec<u8>)>,
    /// `ResponseHead::body`.
    pub body: BodyKind,
    /// `ResponseHead::keep_alive`.
    pub keep_alive: bool,
}

impl From<&ResponseHead> for ResponseSummary {
    fn from(h: &ResponseHead) -> Self {
        ResponseSummary {
            status: h.status,
            reason: h.reason.to_vec(),
            version: h.version,
            fields: summary_fields(&h.headers),
            body: h.body,
            keep_alive: h.keep_alive,
        }
    }
}

/// Which kind of head to parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    /// A request.
    Request,
    /// A response to a request with this method.
    Response(Method),
}

/// A parsed head of either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    /// A request head.
    Request(RequestSummary),
    /// A response head.
    Response(ResponseSummary),
}

impl Head {
    /// How the head frames its body.
    pub fn body(&self) -> BodyKind {
        match self {
            Head::Request(r) => r.body,
            Head::Response(r) => r.body,
        }
    }
}

/// Feeds `pieces` one by one into a growing buffer, asking the scanner after each, as a
/// connection would. Returns the head and how many bytes it took, `Ok(None)` if the input ran
/// out first, or the error.
pub fn feed_head(
    kind: HeadKind,
    pieces: &[&[u8]],
    l: &Limits,
) -> Result<Option<(Head, usize)>, HttpError> {
    let mut scanner = HeadScanner::new();
    let mut buf = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        let r = match kind {
            HeadKind::Request => scanner
                .parse_request(&buf, l)
                .map(|o| o.map(|(h, n)| (Head::Request((&h).into()), n))),
            HeadKind::Response(m) => scanner
                .parse_response(&buf, m, l)
                .map(|o| o.map(|(h, n)| (Head::Response((&h).into()), n))),
        };
        match r {
            Ok(None) => assert!(
                buf.len() <= l.max_head,
                "scanner kept waiting past max_head"
            ),
            Ok(Some((h, n))) => {
                assert!(
                    n <= buf.len() && n <= l.max_head,
                    "head consumed {n} of {}",
                    buf.len()
                );
                return Ok(Some((h, n)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// How a body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// The decoder said `Body::Done`.
    Done,
    /// The input ran out first (and no EOF was signalled).
    NeedMore,
    /// The decoder (or `eof`) refused the input.
    Err(HttpError),
}

/// Everything a body decoder did with an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyOutcome {
    /// The payload, concatenated (data pieces are not compared one by one: their boundaries
    /// depend on the split).
    pub data: Vec<u8>,
    /// Bytes consumed (payload and framing). Zero after an error: how much framing was taken
    /// before the refusal depends on the split, and the connection is closed anyway.
    pub consumed: usize,
    /// How it ended.
    pub end: BodyEnd,
}

/// Feeds `pieces` to a decoder for `kind` the way a connection would: append, decode in a loop
/// until it needs more, drop what it consumed, repeat; then signal EOF if `eof`. Checks the
/// decoder's contract on every call (consumed within the buffer, data inside the consumed
/// bytes, progress).
pub fn feed_body(kind: BodyKind, pieces: &[&[u8]], l: &Limits, eof: bool) -> BodyOutcome {
    let mut dec = BodyDecoder::new(kind);
    let mut buf: Vec<u8> = Vec::new();
    let mut out = BodyOutcome {
        data: Vec::new(),
        consumed: 0,
        end: BodyEnd::NeedMore,
    };
    let empty: &[&[u8]] = &[&[]];
    let pieces = if pieces.is_empty() { empty } else { pieces };
    for piece in pieces {
        buf.extend_from_slice(piece);
        if let Some(end) = drain_body(&mut dec, &mut buf, l, &mut out) {
            out.end = end;
            return out;
        }
    }
    if eof {
        out.end = match dec.eof() {
            Ok(()) => {
                assert!(
                    dec.is_done(),
                    "eof() accepted but decoder not done: {dec:?}"
                );
                BodyEnd::Done
            }
            Err(e) => {
                out.consumed = 0;
                BodyEnd::Err(e)
            }
        };
    }
    out
}

/// One round of decode calls over `buf`; `Some(end)` when the body finished or failed.
fn drain_body(
    dec: &mut BodyDecoder,
    buf: &mut Vec<u8>,
    l: &Limits,
    out: &mut BodyOutcome,
) -> Option<BodyEnd> {
    loop {
        let (n, piece) = match dec.decode(buf, l) {
            Ok(r) => r,
            Err(e) => {
                out.consumed = 0;
                return Some(BodyEnd::Err(e));
            }
        };
        assert!(n <= buf.len(), "consumed {n} of {}", buf.len());
        let waiting = piece.is_none();
        let done = match piece {
            Some(Body::Data(d)) => {
                assert!(!d.is_empty(), "empty data piece");
                let off = (d.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
                assert!(
                    off + d.len() == n,
                    "data must end the consumed bytes and lie in buf"
                );
                out.data.extend_from_slice(d);
                false
            }
            Some(Body::Done) => {
                assert!(dec.is_done());
                true
            }
            None => false,
        };
        buf.drain(..n);
        out.consumed += n;
        assert!(
            out.data.len() as u64 <= l.max_body,
            "decoder handed out more than max_body"
        );
        if done {
            return Some(BodyEnd::Done);
        }
        if n == 0 && waiting {
            return None;
        }
    }
}

/// A head and its body, parsed from pieces as a connection would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageOutcome {
    /// The head (or why there is none).
    pub head: Result<Option<(Head, usize)>, HttpError>,
    /// The body, when a head was parsed.
    pub body: Option<BodyOutcome>,
    /// Input after the message (the next pipelined message), once the body is done.
    pub rest: Vec<u8>,
}

/// Parses one message (head, then body) from `pieces`; `eof` closes the input at the end.
pub fn feed_message(kind: HeadKind, pieces: &[&[u8]], l: &Limits, eof: bool) -> MessageOutcome {
    let mut scanner = HeadScanner::new();
    let mut buf = Vec::new();
    let mut iter = pieces.iter();
    let mut head = None;
    for piece in iter.by_ref() {
        buf.extend_from_slice(piece);
        let r = match kind {
            HeadKind::Request => scanner
                .parse_request(&buf, l)
                .map(|o| o.map(|(h, n)| (Head::Request((&h).into()), n))),
            HeadKind::Response(m) => scanner
                .parse_response(&buf, m, l)
                .map(|o| o.map(|(h, n)| (Head::Response((&h).into()), n))),
        };
        match r {
            Ok(None) => {}
            Ok(Some(h)) => {
                head = Some(h);
                break;
            }
            Err(e) => {
                return MessageOutcome {
                    head: Err(e),
                    body: None,
                    rest: Vec::new(),
                }
            }
        }
    }
    let Some((h, n)) = head else {
        return MessageOutcome {
            head: Ok(None),
            body: None,
            rest: Vec::new(),
        };
    };
    buf.drain(..n);
    let mut dec = BodyDecoder::new(h.body());
    let mut body = BodyOutcome {
        data: Vec::new(),
        consumed: 0,
        end: BodyEnd::NeedMore,
    };
    let mut ended = drain_body(&mut dec, &mut buf, l, &mut body);
    for piece in iter {
        buf.extend_from_slice(piece);
        if ended.is_none() {
            ended = drain_body(&mut dec, &mut buf, l, &mut body);
        }
    }
    body.end = match ended {
        Some(end) => end,
        None if eof => dec.eof().map_or_else(
            |e| {
                body.consumed = 0;
                BodyEnd::Err(e)
            },
            |()| BodyEnd::Done,
        ),
        None => BodyEnd::NeedMore,
    };
    let rest = if body.end == BodyEnd::Done {
        buf
    } else {
        Vec::new()
    };
    MessageOutcome {
        head: Ok(Some((h, n))),
        body: Some(body),
        rest,
    }
}
