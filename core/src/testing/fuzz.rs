//! Fuzz target bodies. `fuzz/fuzz_targets/*.rs` are 3-line wrappers around these, and the unit
//! test at the bottom replays `fuzz/seeds/<target>/*` through them, so the harness compiles and
//! runs in every `cargo test`. Each body asserts invariants, not just "no panic".

use super::{
    feed_body, feed_head, feed_message, split_at_points, BodyEnd, Head, HeadKind, RequestSummary,
    ResponseSummary,
};
use crate::http::{
    write_request_head, write_response_head, BodyKind, HeadScanner, Headers, HttpError, Limits,
    Method, Rewrite,
};

mod data;
mod ovn;
mod ovsdb;
mod proxy_conn;

pub use data::{imds_token, instance_file, metadata_path, neutron_json, static_map};
pub use ovn::ovn_replica;
pub use ovsdb::{ovsdb_framing, ovsdb_session};
pub use proxy_conn::proxy_conn;

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// The fuzz targets: name (as in `fuzz/fuzz_targets/<name>.rs`) and body.
pub const TARGETS: &[(&str, Target)] = &[
    ("parse_request_head", parse_request_head),
    ("parse_response_head", parse_response_head),
    ("chunked_body", chunked_body),
    ("split_equivalence", split_equivalence),
    ("proxy_conn", proxy_conn),
    ("metadata_path", metadata_path),
    ("instance_file", instance_file),
    ("static_map", static_map),
    ("neutron_json", neutron_json),
    ("imds_token", imds_token),
    ("ovsdb_framing", ovsdb_framing),
    ("ovsdb_session", ovsdb_session),
    ("ovn_replica", ovn_replica),
];

/// Tight limits, so fuzz inputs reach every limit check.
const SMALL: Limits = Limits {
    max_head: 128,
    max_headers: 4,
    max_body: 64,
    max_chunk_line: 24,
};

fn limit_sets() -> [Limits; 2] {
    [Limits::default(), SMALL]
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
];

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_error(e: HttpError) {
    assert!(matches!(e.status(), 400 | 413 | 431), "{e:?}");
    assert!(e != HttpError::UnexpectedEof, "heads never report EOF");
}

/// What any parsed `Headers` must satisfy.
fn check_headers(h: &Headers) {
    assert_eq!(h.len(), h.iter().count());
    assert_eq!(h.is_empty(), h.iter().next().is_none());
    for (name, value) in h.iter() {
        assert!(
            !name.is_empty() && name.bytes().all(is_tchar),
            "bad name {name:?}"
        );
        assert!(
            !value.starts_with(b" ") && !value.starts_with(b"\t"),
            "untrimmed {value:?}"
        );
        assert!(
            !value.ends_with(b" ") && !value.ends_with(b"\t"),
            "untrimmed {value:?}"
        );
        assert!(
            value.iter().all(|&b| b == b'\t' || b >= b' ' && b != 0x7f),
            "CTL in {value:?}"
        );
        assert_eq!(h.get(name), h.get_all(name).next());
        assert!(h.count(name) >= 1);
        assert!(h.get(&name.to_ascii_uppercase()).is_some());
    }
}

/// Limits under which a re-encoded head (a little longer, maybe a field more) must parse.
fn roomy(l: &Limits, out: &[u8], fields: usize) -> Limits {
    Limits {
        max_head: out.len().max(l.max_head),
        max_headers: fields,
        ..*l
    }
}

/// A head rewritten the way the ns-proxy does it, with a value taken from the input.
fn proxy_rewrite(data: &[u8]) -> ([&'static str; 2], [(&'static str, &[u8]); 1]) {
    (
        ["x-forwarded-for", "HOST"],
        [("X-Forwarded-For", &data[..data.len().min(40)])],
    )
}

fn check_rewritten(h: &Headers) {
    assert_eq!(h.count("x-forwarded-for"), 1);
    assert_eq!(h.count("host"), 0);
    for name in HOP_BY_HOP {
        assert_eq!(h.count(name), 0, "{name} survived strip_hop_by_hop");
    }
}

/// Parses `data` as a request head; a parsed head must re-encode to a head that parses to the
/// same thing, and survive a proxy-style rewrite with its framing unchanged.
pub fn parse_request_head(data: &[u8]) {
    for l in limit_sets() {
        match HeadScanner::new().parse_request(data, &l) {
            Ok(Some((head, n))) => {
                assert!(n <= data.len() && n <= l.max_head);
                check_headers(&head.headers);
                assert!(!head.method_str.is_empty() && !head.target.is_empty());
                if let BodyKind::Length(len) = head.body {
                    assert!(len <= l.max_body);
                }
                assert!(
                    head.body != BodyKind::UntilClose,
                    "requests are never close-delimited"
                );

                let mut out = Vec::new();
                write_request_head(&head, &Rewrite::default(), &mut out);
                let ll = roomy(&l, &out, head.headers.len());
                let (again, m) = HeadScanner::new()
                    .parse_request(&out, &ll)
                    .expect("re-encoded head parses")
                    .expect("re-encoded head is complete");
                assert_eq!(m, out.len());
                assert_eq!(RequestSummary::from(&head), RequestSummary::from(&again));

                let (remove, add) = proxy_rewrite(data);
                let rw = Rewrite {
                    remove: &remove,
                    strip_hop_by_hop: true,
                    add: &add,
                    ..Rewrite::default()
                };
                out.clear();
                write_request_head(&head, &rw, &mut out);
                let ll = roomy(&l, &out, head.headers.len() + 1);
                let (rewritten, _) = HeadScanner::new()
                    .parse_request(&out, &ll)
                    .expect("rewritten head parses")
                    .expect("rewritten head is complete");
                check_rewritten(&rewritten.headers);
                assert_eq!(rewritten.body, head.body, "a rewrite changed the framing");

                let body = feed_body(head.body, &[&data[n..]], &l, false);
                assert!(body.consumed <= data.len() - n);
            }
            Ok(None) => assert!(data.len() <= l.max_head),
            Err(e) => check_error(e),
        }
    }
}

/// Parses `data` as a response head to GET, HEAD and CONNECT; same invariants as requests,
/// plus the no-body rules of RFC 9112 §6.3.
pub fn parse_response_head(data: &[u8]) {
    for l in limit_sets() {
        for method in [Method::Get, Method::Head, Method::Connect] {
            match HeadScanner::new().parse_response(data, method, &l) {
                Ok(Some((head, n))) => {
                    assert!(n <= data.len() && n <= l.max_head);
                    assert!((100..=999).contains(&head.status));
                    check_headers(&head.headers);
                    let no_body = method == Method::Head
                        || head.status < 200
                        || head.status == 204
                        || head.status == 304
                        || (method == Method::Connect && head.status < 300);
                    if no_body {
                        assert_eq!(head.body, BodyKind::Empty);
                    }
                    if head.body == BodyKind::UntilClose {
                        assert!(!head.keep_alive);
                    }

                    let mut out = Vec::new();
                    write_response_head(&head, &Rewrite::default(), &mut out);
                    let ll = roomy(&l, &out, head.headers.len());
                    let (again, m) = HeadScanner::new()
                        .parse_response(&out, method, &ll)
                        .expect("re-encoded head parses")
                        .expect("re-encoded head is complete");
                    assert_eq!(m, out.len());
                    assert_eq!(ResponseSummary::from(&head), ResponseSummary::from(&again));

                    let (remove, add) = proxy_rewrite(data);
                    let rw = Rewrite {
                        remove: &remove,
                        strip_hop_by_hop: true,
                        add: &add,
                        ..Rewrite::default()
                    };
                    out.clear();
                    write_response_head(&head, &rw, &mut out);
                    let ll = roomy(&l, &out, head.headers.len() + 1);
                    let (rewritten, _) = HeadScanner::new()
                        .parse_response(&out, method, &ll)
                        .expect("rewritten head parses")
                        .expect("rewritten head is complete");
                    check_rewritten(&rewritten.headers);
                    assert_eq!(rewritten.body, head.body, "a rewrite changed the framing");

                    let body = feed_body(head.body, &[&data[n..]], &l, true);
                    assert!(body.consumed <= data.len() - n);
                }
                Ok(None) => assert!(data.len() <= l.max_head),
                Err(e) => check_error(e),
            }
        }
    }
}

/// Writes `data` as a chunked body in pieces of `size` (a canonical encoding).
fn rechunk(data: &[u8], size: usize, out: &mut Vec<u8>) {
    for chunk in data.chunks(size.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
}

/// Decodes `data` as a chunked body. Whole and byte-at-a-time agree; a finished body needs
/// nothing after what it consumed; the payload re-chunked decodes to the same payload.
pub fn chunked_body(data: &[u8]) {
    for l in limit_sets() {
        let whole = feed_body(BodyKind::Chunked, &[data], &l, false);
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(whole, feed_body(BodyKind::Chunked, &bytes, &l, false));
        assert!(whole.consumed <= data.len());
        assert!(whole.data.len() as u64 <= l.max_body);
        if !matches!(whole.end, BodyEnd::Err(_)) {
            assert!(whole.data.len() <= whole.consumed);
        }
        match whole.end {
            BodyEnd::Done => {
                let prefix = feed_body(BodyKind::Chunked, &[&data[..whole.consumed]], &l, false);
                assert_eq!(prefix, whole);
                let mut again = Vec::new();
                rechunk(
                    &whole.data,
                    1 + usize::from(data.first().map_or(0, |b| b % 16)),
                    &mut again,
                );
                let re = feed_body(BodyKind::Chunked, &[&again], &l, false);
                assert_eq!(re.end, BodyEnd::Done);
                assert_eq!(re.data, whole.data);
                assert_eq!(re.consumed, again.len());
            }
            BodyEnd::NeedMore => {
                let with_eof = feed_body(BodyKind::Chunked, &[data], &l, true);
                assert_eq!(with_eof.end, BodyEnd::Err(HttpError::UnexpectedEof));
            }
            BodyEnd::Err(e) => assert!(matches!(e.status(), 400 | 413), "{e:?}"),
        }
    }
}

/// `data[0]` picks what to parse (request message, response message, chunked body,
/// close-delimited body; bit 2: tight limits), `data[1..5]` two cut points, the rest is the
/// input. Whole, cut, and byte-at-a-time feeding must all give the same outcome.
pub fn split_equivalence(data: &[u8]) {
    let [sel, a0, a1, b0, b1, input @ ..] = data else {
        return;
    };
    let cuts = [
        usize::from(u16::from_le_bytes([*a0, *a1])),
        usize::from(u16::from_le_bytes([*b0, *b1])),
    ];
    let l = if sel & 4 == 0 {
        Limits::default()
    } else {
        SMALL
    };
    let split = split_at_points(input, &cuts);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    match sel % 4 {
        0 | 1 => {
            let kind = if sel % 4 == 0 {
                HeadKind::Request
            } else {
                HeadKind::Response(Method::Get)
            };
            let eof = sel & 8 != 0;
            let whole = feed_message(kind, &[input], &l, eof);
            assert_eq!(
                whole,
                feed_message(kind, &split, &l, eof),
                "cut at {cuts:?}"
            );
            assert_eq!(whole, feed_message(kind, &bytes, &l, eof), "byte at a time");
            let head = feed_head(kind, &[input], &l);
            assert_eq!(head, whole.head, "head alone vs message");
            if let (Ok(Some((h, n))), Some(body)) = (&whole.head, &whole.body) {
                assert!(n + body.consumed + whole.rest.len() <= input.len());
                if body.end == BodyEnd::Done {
                    assert_eq!(n + body.consumed + whole.rest.len(), input.len());
                }
                if let Head::Request(r) = h {
                    assert!(r.body != BodyKind::UntilClose);
                }
            }
        }
        2 => {
            let whole = feed_body(BodyKind::Chunked, &[input], &l, false);
            assert_eq!(
                whole,
                feed_body(BodyKind::Chunked, &split, &l, false),
                "cut at {cuts:?}"
            );
            assert_eq!(
                whole,
                feed_body(BodyKind::Chunked, &bytes, &l, false),
                "byte at a time"
            );
        }
        _ => {
            let kind = if sel & 8 == 0 {
                BodyKind::UntilClose
            } else {
                BodyKind::Length(40)
            };
            let whole = feed_body(kind, &[input], &l, true);
            assert_eq!(whole, feed_body(kind, &split, &l, true), "cut at {cuts:?}");
            assert_eq!(whole, feed_body(kind, &bytes, &l, true), "byte at a time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TARGETS;

    /// Every checked-in seed (and every crash file turned seed) goes through its target.
    #[test]
    #[allow(clippy::disallowed_methods)] // test-only: reads the seed corpus
    fn seeds_replay() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds");
        for (name, body) in TARGETS {
            let dir = format!("{root}/{name}");
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{dir}: {e}"))
                .map(|e| e.expect("dir entry").path())
                .collect();
            files.sort();
            assert!(files.len() >= 5, "{dir}: only {} seeds", files.len());
            for f in files {
                let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                body(&data);
            }
        }
    }
}
