//! Writing heads back out. A proxy re-encodes the head it parsed (after a [`Rewrite`]) instead of
//! splicing bytes, so what goes out is exactly what was validated. Bodies are re-framed by the
//! proxy (payload only, never the received chunk framing, extensions or trailers), so the
//! framing fields written here are ours too: the received `Content-Length` and
//! `Transfer-Encoding` are dropped and one field for the body as it will be sent is written.

use super::Headers;
use super::{BodyKind, RequestHead, ResponseHead};

/// How to rewrite a head on its way through: header rules as data, not code.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rewrite<'a> {
    /// Drop every copy of these names (ASCII case-insensitive).
    pub remove: &'a [&'a str],
    /// Drop every field whose name contains `_`.
    pub drop_underscored: bool,
    /// When set, keep only fields with these names (and the framing we write).
    pub keep_only: Option<&'a [&'a str]>,
    /// Drop the hop-by-hop fields (RFC 9110 §7.6.1): `Connection`, `Keep-Alive`,
    /// `Proxy-Connection`, `TE`, `Upgrade`, and every field named in `Connection`. Framing is
    /// ours either way (a client naming `Content-Length` in `Connection` changes nothing).
    pub strip_hop_by_hop: bool,
    /// Appended after the kept fields, in order. CR, LF and other controls in them are written
    /// as spaces, so an added value can never start a new line.
    pub add: &'a [(&'a str, &'a [u8])],
}

/// Fixed hop-by-hop names (RFC 9110 §7.6.1; `Proxy-Connection` is the pre-standard spelling).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
];

/// Fields that frame the body: what is received is replaced by what we send.
const FRAMING: &[&str] = &["content-length", "transfer-encoding"];

fn is_framing(name: &str) -> bool {
    FRAMING.iter().any(|f| f.eq_ignore_ascii_case(name))
}

fn is_hop_by_hop(h: &Headers, name: &str) -> bool {
    HOP_BY_HOP.iter().any(|f| f.eq_ignore_ascii_case(name)) || h.has_token("connection", name)
}

impl Rewrite<'_> {
    /// Whether a received field named `name` is copied by the name rules (`remove`,
    /// `drop_underscored`, `keep_only`); hop-by-hop and framing rules come on top.
    pub fn keeps(&self, name: &str) -> bool {
        if self.drop_underscored && name.contains('_') {
            return false;
        }
        if let Some(keep) = self.keep_only {
            return keep.iter().any(|k| k.eq_ignore_ascii_case(name));
        }
        !self.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
    }
}

/// Writes `bytes`, turning controls (CR, LF, NUL, …; HTAB too unless `tab_ok`) into SP.
fn push_clean(out: &mut Vec<u8>, bytes: &[u8], tab_ok: bool) {
    out.extend(bytes.iter().map(|&b| {
        if (b < b' ' && !(tab_ok && b == b'\t')) || b == 0x7f {
            b' '
        } else {
            b
        }
    }));
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Copies the kept fields and writes `framing` (when the body is framed by us) where the first
/// received framing field stood (else after the kept fields), then `rw.add`. `framing: None`
/// copies the received framing fields as they are (a response to HEAD, a 304: they describe a
/// body that is not sent).
fn write_fields(h: &Headers, rw: &Rewrite<'_>, framing: Option<BodyKind>, out: &mut Vec<u8>) {
    let mut framed = false;
    for (name, value) in h.iter() {
        if is_framing(name) {
            if let Some(kind) = framing {
                if !framed {
                    write_framing(kind, out);
                    framed = true;
                }
                continue;
            }
        } else if !rw.keeps(name) || (rw.strip_hop_by_hop && is_hop_by_hop(h, name)) {
            continue;
        }
        // Parsed names and values are already valid field syntax: copy them byte for byte.
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let (Some(kind), false) = (framing, framed) {
        write_framing(kind, out);
    }
    write_added(rw.add, out);
}

/// The one field that frames a body we send.
fn write_framing(kind: BodyKind, out: &mut Vec<u8>) {
    match kind {
        BodyKind::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyKind::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyKind::Empty | BodyKind::UntilClose => {}
    }
}

fn write_added(fields: &[(&str, &[u8])], out: &mut Vec<u8>) {
    for (name, value) in fields {
        push_clean(out, name.as_bytes(), false);
        out.extend_from_slice(b": ");
        push_clean(out, value, true);
        out.extend_from_slice(b"\r\n");
    }
}

/// Re-encodes a request head: the request line as received (method, target, version), the kept
/// fields in their original order and casing, the framing of `head.body` as we send it
/// (`Content-Length: n`, `Transfer-Encoding: chunked`, or none for no body), then `rw.add`,
/// then the blank line.
pub fn write_request_head(head: &RequestHead, rw: &Rewrite<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&head.method_str);
    out.push(b' ');
    out.extend_from_slice(&head.target);
    out.push(b' ');
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(&head.headers, rw, Some(head.body), out);
    out.extend_from_slice(b"\r\n");
}

/// Re-encodes a response head: status line as received, kept fields, the framing of a body we
/// send (`Content-Length` or chunked; the received fields as they are when no body follows or
/// it runs until close), `rw.add`, blank line.
pub fn write_response_head(head: &ResponseHead, rw: &Rewrite<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.push(b' ');
    push_decimal(out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(&head.reason);
    out.extend_from_slice(b"\r\n");
    let framing = match head.body {
        BodyKind::Length(_) | BodyKind::Chunked => Some(head.body),
        BodyKind::Empty | BodyKind::UntilClose => None,
    };
    write_fields(&head.headers, rw, framing, out);
    out.extend_from_slice(b"\r\n");
}

/// Writes a complete locally generated response: `HTTP/1.1 <status> <reason>`, `fields`,
/// `Content-Length: <body.len()>`, the blank line, then `body` unless `head_only` (the answer
/// to a HEAD request keeps the length a GET would get, RFC 9110 §9.3.2).
///
/// 1xx, 204 and 304 responses get neither `Content-Length` nor a body (RFC 9110 §8.6, §15.3.5,
/// §15.4.5: a length there would be wrong or misleading). `status` must be 100..=999.
pub fn write_simple_response(
    status: u16,
    reason: &str,
    fields: &[(&str, &[u8])],
    body: &[u8],
    head_only: bool,
    out: &mut Vec<u8>,
) {
    debug_assert!(
        (100..=999).contains(&status),
        "status {status} is not 3 digits"
    );
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    push_clean(out, reason.as_bytes(), true);
    out.extend_from_slice(b"\r\n");
    write_added(fields, out);
    let has_body = status >= 200 && status != 204 && status != 304;
    if has_body {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if has_body && !head_only {
        out.extend_from_slice(body);
    }
}

/// The RFC 9110 §15 reason phrase for `status`, or `""` for codes it does not define (an empty
/// reason is valid: RFC 9112 §4).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HeadScanner, Limits, Method};

    fn req(raw: &[u8]) -> RequestHead {
        HeadScanner::new()
            .parse_request(raw, &Limits::default())
            .unwrap()
            .unwrap()
            .0
    }

    fn enc(raw: &[u8], rw: &Rewrite<'_>) -> String {
        let mut out = Vec::new();
        write_request_head(&req(raw), rw, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn untouched_fields_keep_order_and_casing() {
        let raw = b"GET /latest/meta-data/ HTTP/1.1\r\nhOsT: a\r\nX-b:2\r\nACCEPT:  */* \r\nx-B: 1\r\n\r\n";
        assert_eq!(
            enc(raw, &Rewrite::default()),
            "GET /latest/meta-data/ HTTP/1.1\r\nhOsT: a\r\nX-b: 2\r\nACCEPT: */*\r\nx-B: 1\r\n\r\n"
        );
    }

    #[test]
    fn remove_is_case_insensitive_and_drops_every_copy() {
        let raw = b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nHost: a\r\nx-forwarded-for: 5.6.7.8\r\nX-INSTANCE-ID: evil\r\n\r\n";
        let rw = Rewrite {
            remove: &["X-Forwarded-For", "x-instance-id"],
            add: &[
                ("X-Forwarded-For", b"10.0.0.5"),
                ("X-Neutron-Router-ID", b"r1"),
            ],
            ..Rewrite::default()
        };
        assert_eq!(
            enc(raw, &rw),
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: r1\r\n\r\n"
        );
    }

    #[test]
    fn hop_by_hop_fields_and_those_named_in_connection_are_stripped() {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, content-length, Transfer-Encoding\r\n\
Keep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nUpgrade: h2c\r\nx-secret: 1\r\nX-Kept: 2\r\nContent-Length: 3\r\n\r\n";
        let rw = Rewrite {
            strip_hop_by_hop: true,
            ..Rewrite::default()
        };
        // Content-Length survives even though Connection names it: the body goes out verbatim.
        assert_eq!(
            enc(raw, &rw),
            "POST / HTTP/1.1\r\nHost: a\r\nX-Kept: 2\r\nContent-Length: 3\r\n\r\n"
        );
        let raw = b"POST / HTTP/1.1\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            enc(raw, &rw),
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn added_values_cannot_inject_lines() {
        let raw = b"GET / HTTP/1.1\r\n\r\n";
        let rw = Rewrite {
            add: &[("X-A\r\nB", b"v\r\nEvil: 1\0\tz")],
            ..Rewrite::default()
        };
        let out = enc(raw, &rw);
        assert_eq!(out, "GET / HTTP/1.1\r\nX-A  B: v  Evil: 1 \tz\r\n\r\n");
    }

    #[test]
    fn response_heads_round_trip() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n";
        let (head, _) = HeadScanner::new()
            .parse_response(raw, Method::Get, &Limits::default())
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        write_response_head(&head, &Rewrite::default(), &mut out);
        assert_eq!(out, raw);
        let (head, _) = HeadScanner::new()
            .parse_response(
                b"HTTP/1.1 404\r\nA:b\r\n\r\n",
                Method::Get,
                &Limits::default(),
            )
            .unwrap()
            .unwrap();
        out.clear();
        write_response_head(
            &head,
            &Rewrite {
                remove: &["a"],
                ..Rewrite::default()
            },
            &mut out,
        );
        assert_eq!(out, b"HTTP/1.1 404 \r\n\r\n");
    }

    #[test]
    fn simple_responses() {
        #[rustfmt::skip]
        const CASES: &[(&str, u16, &[u8], bool, &str)] = &[
            ("body with its length", 404, b"Not Found\n", false, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nNot Found\n"),
            ("answer to HEAD keeps the length, drops the body", 404, b"Not Found\n", true, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"),
            ("empty body", 200, b"", false, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"),
            ("204 has neither length nor body", 204, b"x", false, "HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\n\r\n"),
            ("304 has neither length nor body", 304, b"x", false, "HTTP/1.1 304 Not Modified\r\nContent-Type: text/plain\r\n\r\n"),
            ("1xx has neither length nor body", 100, b"x", false, "HTTP/1.1 100 Continue\r\nContent-Type: text/plain\r\n\r\n"),
        ];
        for (name, status, body, head_only, want) in CASES {
            let mut out = Vec::new();
            let fields: &[(&str, &[u8])] = &[("Content-Type", b"text/plain")];
            write_simple_response(
                *status,
                reason_phrase(*status),
                fields,
                body,
                *head_only,
                &mut out,
            );
            assert_eq!(String::from_utf8(out).unwrap(), *want, "{name}");
        }
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(503), "Service Unavailable");
        assert_eq!(reason_phrase(599), "");
        let mut n = Vec::new();
        push_decimal(&mut n, 0);
        push_decimal(&mut n, u64::MAX);
        assert_eq!(n, b"018446744073709551615");
    }
}
