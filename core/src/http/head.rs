//! Heads: find the end of a head cheaply, let httparse check the syntax, then judge the framing
//! (RFC 9112 §6), which httparse leaves to us. Every framing rule lives in this file.

use bytes::Bytes;

use super::headers::trim_ows;
use super::{BodyKind, Headers, HttpError, Limits, Method, RequestHead, ResponseHead, Version};

/// Incremental head finder. Feed it the same buffer again as it grows; it resumes the search for
/// the blank line where it stopped (the h11 trick), so a head trickling in byte by byte costs
/// O(n), and httparse runs once, on a complete head.
///
/// While scanning it also enforces CRLF line endings: a bare CR or bare LF anywhere in a head is
/// refused (RFC 9112 §2.2 lets a recipient refuse bare CR and merely *allows* accepting bare LF;
/// accepting neither leaves no room for parsers to disagree about where a line ends).
#[derive(Default, Debug)]
pub struct HeadScanner {
    /// Next byte to examine; everything before it is validated and holds no terminator.
    scanned: usize,
    /// Where the start line begins (after any leading empty lines).
    start: usize,
    /// Whether a byte of the start line has been seen (leading CRLFs are skipped until then).
    past_leading: bool,
}

impl HeadScanner {
    /// A scanner at the start of a message.
    pub fn new() -> Self {
        HeadScanner::default()
    }

    /// Forget the position: call this after removing a parsed head (or anything) from the front
    /// of the buffer. (A returned head or error already resets it; calling again is harmless.)
    pub fn reset(&mut self) {
        *self = HeadScanner::default();
    }

    /// Looks for a complete request head at the front of `buf`.
    ///
    /// `Ok(None)`: need more bytes. `Ok(Some((head, n)))`: the head took `buf[..n]` (including any
    /// leading empty lines, RFC 9112 §2.2); the caller drops those bytes and the body follows.
    /// `Err(HeadTooLarge)` as soon as `buf` holds more than `l.max_head` bytes without a head.
    pub fn parse_request(
        &mut self,
        buf: &[u8],
        l: &Limits,
    ) -> Result<Option<(RequestHead, usize)>, HttpError> {
        let Some((start, end)) = self.scan(buf, l)? else {
            return Ok(None);
        };
        let raw = Bytes::copy_from_slice(&buf[start..end]);
        Ok(Some((request(raw, l)?, end)))
    }

    /// Looks for a complete response head to a request whose method was `req_method` (it decides
    /// whether a body follows: RFC 9112 §6.3). Same contract as [`HeadScanner::parse_request`].
    pub fn parse_response(
        &mut self,
        buf: &[u8],
        req_method: Method,
        l: &Limits,
    ) -> Result<Option<(ResponseHead, usize)>, HttpError> {
        let Some((start, end)) = self.scan(buf, l)? else {
            return Ok(None);
        };
        let raw = Bytes::copy_from_slice(&buf[start..end]);
        Ok(Some((response(raw, req_method, l)?, end)))
    }

    /// Finds `(start, end)` of the head: `start` after leading CRLFs, `end` just past the blank
    /// line. Only the first `max_head` bytes are looked at, so the answer for a given input is the
    /// same however it was split.
    fn scan(&mut self, buf: &[u8], l: &Limits) -> Result<Option<(usize, usize)>, HttpError> {
        let window = &buf[..buf.len().min(l.max_head)];
        if self.scanned > window.len() {
            // The caller shrank the buffer without reset(): start over rather than trust stale state.
            self.reset();
        }
        let mut i = self.scanned;
        while i < window.len() {
            match window[i] {
                b'\r' => match window.get(i + 1) {
                    None => break, // look at this CR again once its next byte is here
                    Some(b'\n') if !self.past_leading => {
                        i += 2;
                        self.start = i;
                    }
                    Some(b'\n') => {
                        if i >= self.start + 2 && window[i - 2..i] == *b"\r\n" {
                            let start = self.start;
                            self.reset();
                            return Ok(Some((start, i + 2)));
                        }
                        i += 2;
                    }
                    Some(_) => {
                        self.reset();
                        return Err(HttpError::Malformed("bare CR in head"));
                    }
                },
                // Every CRLF is stepped over as a pair, so any LF reached here is bare.
                b'\n' => {
                    self.reset();
                    return Err(HttpError::Malformed("bare LF in head"));
                }
                _ => {
                    self.past_leading = true;
                    i += 1;
                }
            }
        }
        self.scanned = i;
        if buf.len() > l.max_head {
            self.reset();
            return Err(HttpError::HeadTooLarge);
        }
        Ok(None)
    }
}

/// A complete head cut into its start line and field spans (one pass, before httparse runs).
struct Split {
    /// `(start, end)` of the start line, CRLF excluded.
    start_line: (usize, usize),
    /// `(name_start, name_end, value_start, value_end)` per field line, value OWS-trimmed.
    /// Computed before httparse validates the lines; only used once it has.
    spans: Vec<(u32, u32, u32, u32)>,
}

/// Cuts `raw` (ending with the blank line, CRLF endings only: the scanner checked) into lines,
/// refusing obs-fold and too many fields on the way.
fn split(raw: &[u8], l: &Limits) -> Result<Split, HttpError> {
    if u32::try_from(raw.len()).is_err() {
        return Err(HttpError::HeadTooLarge); // spans are u32
    }
    let mut start_line = None;
    let mut spans = Vec::new();
    let mut s = 0;
    let mut i = 0;
    while i + 1 < raw.len() {
        if raw[i] != b'\r' || raw[i + 1] != b'\n' {
            i += 1;
            continue;
        }
        if i == s {
            break; // the blank line
        }
        let line = &raw[s..i];
        if start_line.is_none() {
            start_line = Some((s, i));
        } else if matches!(line[0], b' ' | b'\t') {
            // RFC 9112 §5.2: obs-fold is refused; so is whitespace before the first field (§2.2).
            return Err(HttpError::Malformed(
                "obs-fold (field line starting with whitespace)",
            ));
        } else if spans.len() == l.max_headers {
            return Err(HttpError::TooManyHeaders);
        } else {
            let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
            let after = line.get(colon + 1..).unwrap_or_default();
            let lead = after
                .iter()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
            let vs = s + colon + 1 + lead;
            let ve = vs + trim_ows(after).len();
            // raw.len() fits in u32 (checked above), so these casts are exact.
            spans.push((s as u32, (s + colon) as u32, vs as u32, ve as u32));
        }
        i += 2;
        s = i;
    }
    Ok(Split {
        start_line: start_line.unwrap_or_default(),
        spans,
    })
}

/// Runs `f` with an httparse header array of exactly `n` entries (on the stack when small).
fn with_storage<'b, T>(n: usize, f: impl FnOnce(&mut [httparse::Header<'b>]) -> T) -> T {
    const STACK: usize = 32;
    if n <= STACK {
        let mut small = [httparse::EMPTY_HEADER; STACK];
        f(&mut small[..n])
    } else {
        f(&mut vec![httparse::EMPTY_HEADER; n])
    }
}

fn map_httparse(e: httparse::Error) -> HttpError {
    match e {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
        httparse::Error::HeaderName => HttpError::Malformed("invalid field name"),
        httparse::Error::HeaderValue => HttpError::Malformed("invalid character in field value"),
        httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
        httparse::Error::Status => HttpError::Malformed("invalid status line"),
        httparse::Error::Token => HttpError::Malformed("invalid request line"),
        httparse::Error::Version => HttpError::Malformed("unsupported HTTP version"),
    }
}

/// httparse must have taken exactly the whole head.
fn complete(
    r: Result<httparse::Status<usize>, httparse::Error>,
    len: usize,
) -> Result<(), HttpError> {
    match r.map_err(map_httparse)? {
        httparse::Status::Complete(n) if n == len => Ok(()),
        _ => Err(HttpError::Malformed("head not understood by httparse")),
    }
}

fn version(v: Option<u8>) -> Result<Version, HttpError> {
    match v {
        Some(0) => Ok(Version::Http10),
        Some(1) => Ok(Version::Http11),
        _ => Err(HttpError::Malformed("unsupported HTTP version")),
    }
}

/// How a message's own fields frame its body (RFC 9112 §6.1–6.3), before status and method
/// are taken into account.
struct Framing {
    chunked: bool,
    content_length: Option<u64>,
}

fn framing(h: &Headers, v: Version) -> Result<Framing, HttpError> {
    let mut chunked = false;
    if h.count("transfer-encoding") > 0 {
        // §6.1: TE in an HTTP/1.0 message means the framing is faulty.
        if v == Version::Http10 {
            return Err(HttpError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        // §6.1, §11.2: TE with CL is the classic smuggling vector; refuse rather than pick one.
        if h.count("content-length") > 0 {
            return Err(HttpError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        // We decode only `chunked`, and nothing else is sent by real clients; any other coding
        // (even `gzip, chunked`, even a repeated `chunked`) is refused, across all copies.
        let mut codings = h
            .get_all("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_ows);
        match (codings.next(), codings.next()) {
            (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => chunked = true,
            _ => {
                return Err(HttpError::Malformed(
                    "Transfer-Encoding other than exactly chunked",
                ))
            }
        }
    }
    // §6.3 item 5 allows accepting identical duplicates; we refuse every duplicate, equal or
    // not, so no two parsers can read two lengths out of one head.
    let content_length = match h.count("content-length") {
        0 => None,
        1 => Some(parse_content_length(
            h.get("content-length").unwrap_or_default(),
        )?),
        _ => return Err(HttpError::Malformed("duplicate Content-Length")),
    };
    Ok(Framing {
        chunked,
        content_length,
    })
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6): no sign, no inner spaces, no list, no overflow.
fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::Malformed("Content-Length not 1*DIGIT"));
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(HttpError::Malformed("Content-Length overflows u64"))
    })
}

/// RFC 9112 §9.3: 1.1 persists unless `Connection: close`; 1.0 only with `keep-alive`.
fn keep_alive(v: Version, h: &Headers) -> bool {
    let close = h.has_token("connection", "close");
    match v {
        Version::Http11 => !close,
        Version::Http10 => !close && h.has_token("connection", "keep-alive"),
    }
}

fn method(m: &[u8]) -> Method {
    match m {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"CONNECT" => Method::Connect,
        b"OPTIONS" => Method::Options,
        _ => Method::Other,
    }
}

fn request(raw: Bytes, l: &Limits) -> Result<RequestHead, HttpError> {
    let Split {
        start_line: (ls, le),
        spans,
    } = split(&raw, l)?;
    let line = &raw[ls..le];
    // HTTP/0.9's `GET /path` has no version; RFC 9112 §2.3 has us answer in 1.x, we refuse it.
    let mut sp = line
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b' ')
        .map(|(i, _)| i);
    let (sp1, sp2) = match (sp.next(), sp.next(), sp.next()) {
        (Some(a), Some(b), None) => (a, b),
        (_, None, _) => return Err(HttpError::Malformed("HTTP/0.9 request line (no version)")),
        _ => return Err(HttpError::Malformed("invalid request line")),
    };
    let version = with_storage(spans.len(), |storage| {
        let mut req = httparse::Request::new(storage);
        complete(req.parse(&raw), raw.len())?;
        version(req.version)
    })?;
    check_target(&line[..sp1], &line[sp1 + 1..sp2])?;
    let headers = Headers::from_parts(raw.clone(), spans);
    let f = framing(&headers, version)?;
    // §6.3 item 7: a request without CL or TE has no body; requests are never close-delimited.
    let body = if f.chunked {
        BodyKind::Chunked
    } else if let Some(n) = f.content_length {
        if n > l.max_body {
            return Err(HttpError::BodyTooLarge);
        }
        BodyKind::Length(n)
    } else {
        BodyKind::Empty
    };
    Ok(RequestHead {
        method: method(&line[..sp1]),
        method_str: raw.slice(ls..ls + sp1),
        target: raw.slice(ls + sp1 + 1..ls + sp2),
        version,
        keep_alive: keep_alive(version, &headers),
        headers,
        body,
    })
}

/// RFC 9112 §3.2: the request target is visible ASCII (a URI carries no raw non-ASCII or
/// control bytes) in origin-form or absolute-form (`http`/`https`); `*` only with OPTIONS
/// (§3.2.4) and authority-form only with CONNECT (§3.2.3). Anything else is refused here rather
/// than relayed to parsers further up the chain that may read it differently.
fn check_target(method: &[u8], target: &[u8]) -> Result<(), HttpError> {
    if !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(HttpError::Malformed("request target is not visible ASCII"));
    }
    let absolute = |scheme: &[u8]| {
        target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme)
    };
    let valid = target.first() == Some(&b'/')
        || absolute(b"http://")
        || absolute(b"https://")
        || (target == b"*" && method == b"OPTIONS")
        || method == b"CONNECT";
    if valid {
        Ok(())
    } else {
        Err(HttpError::Malformed(
            "request target in an unsupported form",
        ))
    }
}

fn response(raw: Bytes, req_method: Method, l: &Limits) -> Result<ResponseHead, HttpError> {
    let Split {
        start_line: (ls, le),
        spans,
    } = split(&raw, l)?;
    let (version, status) = with_storage(spans.len(), |storage| {
        let mut resp = httparse::Response::new(storage);
        complete(resp.parse(&raw), raw.len())?;
        Ok::<_, HttpError>((version(resp.version)?, resp.code.unwrap_or(0)))
    })?;
    // RFC 9110 §15: status-code = 3DIGIT; below 100 is never valid.
    if status < 100 {
        return Err(HttpError::Malformed("status code below 100"));
    }
    // status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4); httparse
    // also takes a missing final SP. Take the reason from our copy: httparse blanks obs-text.
    let reason = if le >= ls + 13 {
        raw.slice(ls + 13..le)
    } else {
        Bytes::new()
    };
    let headers = Headers::from_parts(raw.clone(), spans);
    // Framing fields are checked even when the status or method says "no body": a proxy forwards
    // them, and a bad one means the upstream is confused.
    let f = framing(&headers, version)?;
    let mut keep = keep_alive(version, &headers);
    // RFC 9112 §6.3, in its order.
    let body = if req_method == Method::Head || status < 200 || status == 204 || status == 304 {
        BodyKind::Empty
    } else if req_method == Method::Connect && (200..300).contains(&status) {
        // A tunnel starts after the head; we never splice tunnels, so the connection ends here.
        keep = false;
        BodyKind::Empty
    } else if f.chunked {
        BodyKind::Chunked
    } else if let Some(n) = f.content_length {
        if n > l.max_body {
            return Err(HttpError::BodyTooLarge);
        }
        BodyKind::Length(n)
    } else {
        keep = false;
        BodyKind::UntilClose
    };
    Ok(ResponseHead {
        status,
        reason,
        version,
        headers,
        body,
        keep_alive: keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{feed_head, for_each_split, Head, HeadKind};

    macro_rules! a200 {
        () => {
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        };
    }

    /// Small limits so the limit rows stay short.
    const L: Limits = Limits {
        max_head: 200,
        max_headers: 4,
        max_body: 1000,
        max_chunk_line: 64,
    };

    #[derive(Debug)]
    enum Expect {
        /// Parsed: method, body framing, keep-alive, and the whole input consumed.
        Req(Method, BodyKind, bool),
        /// Parsed: status, body framing, keep-alive, and the whole input consumed.
        Resp(u16, BodyKind, bool),
        Err(HttpError),
        NeedMore,
    }
    use Expect::*;

    const fn bad(rule: &'static str) -> Expect {
        Err(HttpError::Malformed(rule))
    }

    /// One row per rule (h11 SIMPLE_CASES style); the name is the rule.
    #[rustfmt::skip]
    const REQUESTS: &[(&str, &[u8], Expect)] = &[
        ("minimal GET", b"GET / HTTP/1.1\r\n\r\n", Req(Method::Get, BodyKind::Empty, true)),
        ("leading empty lines are skipped (RFC 9112 §2.2)", b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Req(Method::Get, BodyKind::Empty, true)),
        ("cloud-init openstack index", b"GET /openstack HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Cloud-Init/23.4\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\n\r\n", Req(Method::Get, BodyKind::Empty, true)),
        ("botocore IMDSv2 token PUT", b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n", Req(Method::Put, BodyKind::Length(0), true)),
        ("methods are case-sensitive", b"get / HTTP/1.1\r\n\r\n", Req(Method::Other, BodyKind::Empty, true)),
        ("obs-text and HTAB in a value are accepted", b"GET / HTTP/1.1\r\nX: a\tb \xff\r\n\r\n", Req(Method::Get, BodyKind::Empty, true)),
        ("exactly max_headers fields", b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", Req(Method::Get, BodyKind::Empty, true)),
        // keep-alive (RFC 9112 §9.3)
        ("HTTP/1.0 closes by default", b"GET / HTTP/1.0\r\n\r\n", Req(Method::Get, BodyKind::Empty, false)),
        ("HTTP/1.0 persists with Connection: keep-alive", b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", Req(Method::Get, BodyKind::Empty, true)),
        ("HTTP/1.1 closes with Connection: close", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", Req(Method::Get, BodyKind::Empty, false)),
        ("close found in any Connection copy and list element", b"GET / HTTP/1.1\r\nConnection: x\r\nconnection: foo, CLOSE\r\n\r\n", Req(Method::Get, BodyKind::Empty, false)),
        // framing (RFC 9112 §6)
        ("Content-Length frames the body", b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", Req(Method::Post, BodyKind::Length(5), true)),
        ("Content-Length OWS is trimmed", b"POST / HTTP/1.1\r\nContent-Length:  5 \t\r\n\r\n", Req(Method::Post, BodyKind::Length(5), true)),
        ("chunked frames the body", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", Req(Method::Post, BodyKind::Chunked, true)),
        ("chunked is case-insensitive and OWS-trimmed", b"POST / HTTP/1.1\r\nTransfer-Encoding:  ChUnKeD \r\n\r\n", Req(Method::Post, BodyKind::Chunked, true)),
        ("requests without CL or TE have no body (never close-delimited)", b"POST / HTTP/1.1\r\n\r\n", Req(Method::Post, BodyKind::Empty, true)),
        ("both Transfer-Encoding and Content-Length", b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", bad("both Transfer-Encoding and Content-Length")),
        ("duplicate Content-Length, equal values", b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", bad("duplicate Content-Length")),
        ("duplicate Content-Length, differing values", b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n", bad("duplicate Content-Length")),
        ("Content-Length with a plus sign", b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", bad("Content-Length not 1*DIGIT")),
        ("Content-Length negative", b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", bad("Content-Length not 1*DIGIT")),
        ("Content-Length with a space inside", b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", bad("Content-Length not 1*DIGIT")),
        ("Content-Length with a non-digit", b"POST / HTTP/1.1\r\nContent-Length: 5a\r\n\r\n", bad("Content-Length not 1*DIGIT")),
        ("Content-Length as a list", b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", bad("Content-Length not 1*DIGIT")),
        ("Content-Length empty", b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", bad("Content-Length not 1*DIGIT")),
        ("Content-Length overflows u64", b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n", bad("Content-Length overflows u64")),
        ("Content-Length above max_body is 413 at head time", b"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", Err(HttpError::BodyTooLarge)),
        ("Content-Length u64::MAX is 413", b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n", Err(HttpError::BodyTooLarge)),
        ("Transfer-Encoding chunked, identity", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n", bad("Transfer-Encoding other than exactly chunked")),
        ("Transfer-Encoding identity", b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", bad("Transfer-Encoding other than exactly chunked")),
        ("Transfer-Encoding xchunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", bad("Transfer-Encoding other than exactly chunked")),
        ("Transfer-Encoding chunked;x", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked;x\r\n\r\n", bad("Transfer-Encoding other than exactly chunked")),
        ("Transfer-Encoding gzip, chunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", bad("Transfer-Encoding other than exactly chunked")),
        ("Transfer-Encoding gzip then chunked in two copies", b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", bad("Transfer-Encoding other than exactly chunked")),
        ("Transfer-Encoding chunked twice", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", bad("Transfer-Encoding other than exactly chunked")),
        ("Transfer-Encoding chunked with an empty list element", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n", bad("Transfer-Encoding other than exactly chunked")),
        ("Transfer-Encoding empty", b"POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n", bad("Transfer-Encoding other than exactly chunked")),
        ("Transfer-Encoding in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", bad("Transfer-Encoding in HTTP/1.0")),
        // field syntax (RFC 9112 §5)
        ("obs-fold", b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", bad("obs-fold (field line starting with whitespace)")),
        ("obs-fold with HTAB", b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", bad("obs-fold (field line starting with whitespace)")),
        ("whitespace before the first field line", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", bad("obs-fold (field line starting with whitespace)")),
        ("whitespace between field name and colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", bad("invalid field name")),
        ("empty field name", b"GET / HTTP/1.1\r\n: a\r\n\r\n", bad("invalid field name")),
        ("NUL in a field name", b"GET / HTTP/1.1\r\nX\0Y: a\r\n\r\n", bad("invalid field name")),
        ("field line without a colon", b"GET / HTTP/1.1\r\nHost\r\n\r\n", bad("invalid field name")),
        ("NUL in a field value", b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", bad("invalid character in field value")),
        ("control character in a field value", b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", bad("invalid character in field value")),
        ("DEL in a field value", b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", bad("invalid character in field value")),
        ("bare CR in a field value", b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", bad("bare CR in head")),
        ("bare CR in the request line", b"GET /\r HTTP/1.1\r\n\r\n", bad("bare CR in head")),
        ("bare LF as a line ending", b"GET / HTTP/1.1\nHost: a\n\n", bad("bare LF in head")),
        ("bare LF ending the head", b"GET / HTTP/1.1\r\nHost: a\r\n\n", bad("bare LF in head")),
        // request line (RFC 9112 §3)
        ("HTTP/0.9 request line", b"GET /\r\n\r\n", bad("HTTP/0.9 request line (no version)")),
        ("HTTP/2 connection preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", bad("unsupported HTTP version")),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\n\r\n", bad("unsupported HTTP version")),
        ("HTTP/0.9 version string", b"GET / HTTP/0.9\r\n\r\n", bad("unsupported HTTP version")),
        ("lowercase protocol name", b"GET / http/1.1\r\n\r\n", bad("unsupported HTTP version")),
        // request target (RFC 9112 §3.2)
        ("non-ASCII target", b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", bad("request target is not visible ASCII")),
        ("authority-form without CONNECT", b"GET 169.254.169.254:80 HTTP/1.1\r\n\r\n", bad("request target in an unsupported form")),
        ("asterisk-form without OPTIONS", b"GET * HTTP/1.1\r\n\r\n", bad("request target in an unsupported form")),
        ("absolute-form of another scheme", b"GET ftp://h/x HTTP/1.1\r\n\r\n", bad("request target in an unsupported form")),
        ("two spaces in the request line", b"GET  / HTTP/1.1\r\n\r\n", bad("invalid request line")),
        ("non-token method", b"G(T / HTTP/1.1\r\n\r\n", bad("invalid request line")),
        ("control character in the target", b"GET /\x01 HTTP/1.1\r\n\r\n", bad("invalid request line")),
        // limits
        ("head larger than max_head is 431", concat!("GET / HTTP/1.1\r\nX: ", a200!(), "\r\n\r\n").as_bytes(), Err(HttpError::HeadTooLarge)),
        ("unfinished head past max_head is 431", concat!("GET / HTTP/1.1\r\nX: ", a200!()).as_bytes(), Err(HttpError::HeadTooLarge)),
        ("more than max_headers fields is 431", b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", Err(HttpError::TooManyHeaders)),
        ("an unfinished head needs more", b"GET / HTTP/1.1\r\nHost: a\r\n\r", NeedMore),
    ];

    /// Responses: (rule, request method, input, expectation).
    #[rustfmt::skip]
    const RESPONSES: &[(&str, Method, &[u8], Expect)] = &[
        ("Content-Length frames the body", Method::Get, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Resp(200, BodyKind::Length(5), true)),
        ("chunked frames the body", Method::Get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Resp(200, BodyKind::Chunked, true)),
        ("neither CL nor TE: until close, not persistent", Method::Get, b"HTTP/1.1 200 OK\r\n\r\n", Resp(200, BodyKind::UntilClose, false)),
        ("answer to HEAD has no body despite CL", Method::Head, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Resp(200, BodyKind::Empty, true)),
        ("answer to HEAD may announce more than max_body", Method::Head, b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n", Resp(200, BodyKind::Empty, true)),
        ("204 has no body", Method::Get, b"HTTP/1.1 204 No Content\r\n\r\n", Resp(204, BodyKind::Empty, true)),
        ("304 has no body despite CL", Method::Get, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", Resp(304, BodyKind::Empty, true)),
        ("1xx has no body", Method::Post, b"HTTP/1.1 100 Continue\r\n\r\n", Resp(100, BodyKind::Empty, true)),
        ("101 has no body", Method::Get, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", Resp(101, BodyKind::Empty, true)),
        ("2xx to CONNECT is a tunnel: no body, not reusable", Method::Connect, b"HTTP/1.1 200 OK\r\n\r\n", Resp(200, BodyKind::Empty, false)),
        ("HTTP/1.0 response closes by default", Method::Get, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Resp(200, BodyKind::Length(0), false)),
        ("HTTP/1.0 response persists with keep-alive", Method::Get, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", Resp(200, BodyKind::Length(0), true)),
        ("HTTP/1.1 response with Connection: close", Method::Get, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", Resp(200, BodyKind::Length(0), false)),
        ("missing reason phrase is accepted", Method::Get, b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", Resp(404, BodyKind::Length(0), true)),
        ("both Transfer-Encoding and Content-Length", Method::Get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", bad("both Transfer-Encoding and Content-Length")),
        ("duplicate Content-Length", Method::Get, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", bad("duplicate Content-Length")),
        ("invalid Content-Length", Method::Get, b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", bad("Content-Length not 1*DIGIT")),
        ("framing fields are checked even without a body", Method::Get, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5, 5\r\n\r\n", bad("Content-Length not 1*DIGIT")),
        ("Transfer-Encoding gzip", Method::Get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", bad("Transfer-Encoding other than exactly chunked")),
        ("Transfer-Encoding in an HTTP/1.0 response", Method::Get, b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", bad("Transfer-Encoding in HTTP/1.0")),
        ("Content-Length above max_body is 413", Method::Get, b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n", Err(HttpError::BodyTooLarge)),
        ("status below 100", Method::Get, b"HTTP/1.1 099 Odd\r\n\r\n", bad("status code below 100")),
        ("two-digit status", Method::Get, b"HTTP/1.1 20 OK\r\n\r\n", bad("invalid status line")),
        ("four-digit status", Method::Get, b"HTTP/1.1 2000 OK\r\n\r\n", bad("invalid status line")),
        ("control character in the reason", Method::Get, b"HTTP/1.1 200 O\x01K\r\n\r\n", bad("invalid status line")),
        ("HTTP/2 status line", Method::Get, b"HTTP/2 200 OK\r\n\r\n", bad("unsupported HTTP version")),
        ("obs-fold in a response", Method::Get, b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", bad("obs-fold (field line starting with whitespace)")),
        ("whitespace between field name and colon in a response", Method::Get, b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n", bad("invalid field name")),
        ("bare LF in a response", Method::Get, b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", bad("bare LF in head")),
        ("more than max_headers fields in a response", Method::Get, b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", Err(HttpError::TooManyHeaders)),
        ("response head larger than max_head", Method::Get, concat!("HTTP/1.1 200 OK\r\nX: ", a200!(), "\r\n\r\n").as_bytes(), Err(HttpError::HeadTooLarge)),
    ];

    fn check(name: &str, kind: HeadKind, input: &[u8], expect: &Expect) {
        // Same answer for every split of the input, fed as a growing buffer.
        let got = for_each_split(input, |pieces| feed_head(kind, pieces, &L));
        match (expect, got) {
            (Req(m, body, ka), Ok(Some((Head::Request(r), n)))) => {
                assert_eq!((r.method, r.body, r.keep_alive), (*m, *body, *ka), "{name}");
                assert_eq!(n, input.len(), "{name}: consumed");
            }
            (Resp(s, body, ka), Ok(Some((Head::Response(r), n)))) => {
                assert_eq!((r.status, r.body, r.keep_alive), (*s, *body, *ka), "{name}");
                assert_eq!(n, input.len(), "{name}: consumed");
            }
            (Err(e), Result::Err(got)) => assert_eq!(*e, got, "{name}"),
            (NeedMore, Ok(None)) => {}
            (expect, got) => panic!("{name}: expected {expect:?}, got {got:?}"),
        }
    }

    #[test]
    fn request_table() {
        for (name, input, expect) in REQUESTS {
            check(name, HeadKind::Request, input, expect);
        }
    }

    #[test]
    fn response_table() {
        for (name, method, input, expect) in RESPONSES {
            check(name, HeadKind::Response(*method), input, expect);
        }
    }

    #[test]
    fn request_fields_point_into_one_copy() {
        let input = b"\r\nPOST /a?b HTTP/1.1\r\nHost:  h \r\nX-Y:\r\nContent-Length: 3\r\n\r\nabc";
        let (h, n) = HeadScanner::new()
            .parse_request(input, &L)
            .unwrap()
            .unwrap();
        assert_eq!(n, input.len() - 3);
        assert_eq!(&h.method_str[..], b"POST");
        assert_eq!(&h.target[..], b"/a?b");
        assert_eq!(h.version, Version::Http11);
        let fields: Vec<_> = h.headers.iter().collect();
        assert_eq!(
            fields,
            [("Host", &b"h"[..]), ("X-Y", b""), ("Content-Length", b"3")]
        );
    }

    #[test]
    fn response_reason_keeps_obs_text() {
        let input = b"HTTP/1.1 200 Okay \xe2\x9c\x93\r\nContent-Length: 0\r\n\r\n";
        let (h, _) = HeadScanner::new()
            .parse_response(input, Method::Get, &L)
            .unwrap()
            .unwrap();
        assert_eq!(&h.reason[..], "Okay \u{2713}".as_bytes());
        let (h, _) = HeadScanner::new()
            .parse_response(b"HTTP/1.1 200\r\n\r\n", Method::Get, &L)
            .unwrap()
            .unwrap();
        assert_eq!(&h.reason[..], b"");
    }

    #[test]
    fn scanner_resumes_and_resets() {
        let mut sc = HeadScanner::new();
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
        assert!(sc.parse_request(&input[..10], &L).unwrap().is_none());
        assert_eq!(sc.scanned, 10);
        assert!(sc.parse_request(&input[..26], &L).unwrap().is_none());
        // A lone CR at the end is looked at again when its LF arrives.
        assert_eq!(sc.scanned, 25);
        let (_, n) = sc.parse_request(input, &L).unwrap().unwrap();
        assert_eq!(n, 27);
        sc.reset();
        let (h, m) = sc.parse_request(&input[n..], &L).unwrap().unwrap();
        assert_eq!((&h.target[..], m), (&b"/2"[..], input.len() - n));
        // A buffer that shrank without reset() is rescanned, not misread.
        let mut sc = HeadScanner::new();
        assert!(sc.parse_request(&input[..20], &L).unwrap().is_none());
        assert!(sc.parse_request(&input[..5], &L).unwrap().is_none());
    }

    #[test]
    fn head_limit_is_exact() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let exact = Limits {
            max_head: head.len(),
            ..L
        };
        assert!(HeadScanner::new()
            .parse_request(head, &exact)
            .unwrap()
            .is_some());
        let less = Limits {
            max_head: head.len() - 1,
            ..L
        };
        assert_eq!(
            HeadScanner::new().parse_request(head, &less).unwrap_err(),
            HttpError::HeadTooLarge
        );
        // Waiting at exactly max_head bytes: the next byte decides.
        assert!(HeadScanner::new()
            .parse_request(&head[..head.len() - 1], &less)
            .unwrap()
            .is_none());
    }
}
