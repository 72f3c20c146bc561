//! Property tests (proptest) for the HTTP framing layer: random splits, random bytes, and
//! parse → encode → parse round trips.

use proptest::prelude::*;

use super::{feed_message, fuzz, split_at_points, BodyEnd, Head, HeadKind};
use crate::http::{write_request_head, BodyKind, HeadScanner, Limits, Rewrite};

/// A field name that cannot collide with framing or connection fields.
fn name() -> impl Strategy<Value = String> {
    "X-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

/// A field value: visible ASCII, obs-text, inner SP/HTAB, random OWS around it.
fn value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![0x21u8..=0x7e, 0x80u8..=0xff, Just(b' '), Just(b'\t')];
    (
        prop::collection::vec(byte, 0..24),
        "[ \t]{0,2}",
        "[ \t]{0,2}",
    )
        .prop_map(|(v, pre, post)| [pre.as_bytes(), &v, post.as_bytes()].concat())
}

#[derive(Debug, Clone)]
enum TestBody {
    None,
    Length(Vec<u8>),
    Chunked {
        chunks: Vec<(Vec<u8>, String)>,
        trailers: Vec<(String, Vec<u8>)>,
    },
}

fn body() -> impl Strategy<Value = TestBody> {
    let chunk = (
        prop::collection::vec(any::<u8>(), 1..40),
        prop_oneof![Just(String::new()), "; ?[a-z]{1,5}(=[a-z0-9]{1,5})?"],
    );
    prop_oneof![
        Just(TestBody::None),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(TestBody::Length),
        (
            prop::collection::vec(chunk, 0..6),
            prop::collection::vec((name(), value()), 0..3)
        )
            .prop_map(|(chunks, trailers)| TestBody::Chunked { chunks, trailers }),
    ]
}

/// A valid request with its body, followed by a pipelined second request.
/// Returns (bytes, payload, bytes after the first message).
fn request() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<u8>)> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")],
        "/[a-z0-9/._?=&-]{0,24}",
        prop::collection::vec((name(), value()), 0..8),
        body(),
        any::<bool>(),
    )
        .prop_map(|(method, target, fields, body, leading_crlf)| {
            let mut out = Vec::new();
            if leading_crlf {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(
                format!("{method} {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n").as_bytes(),
            );
            for (n, v) in &fields {
                out.extend_from_slice(format!("{n}:").as_bytes());
                out.extend_from_slice(v);
                out.extend_from_slice(b"\r\n");
            }
            let mut payload = Vec::new();
            match body {
                TestBody::None => out.extend_from_slice(b"\r\n"),
                TestBody::Length(b) => {
                    out.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes(),
                    );
                    out.extend_from_slice(&b);
                    payload = b;
                }
                TestBody::Chunked { chunks, trailers } => {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    for (data, ext) in chunks {
                        out.extend_from_slice(format!("{:X}{ext}\r\n", data.len()).as_bytes());
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                        payload.extend_from_slice(&data);
                    }
                    out.extend_from_slice(b"0\r\n");
                    for (n, v) in trailers {
                        out.extend_from_slice(format!("{n}: ").as_bytes());
                        out.extend_from_slice(&v);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"\r\n");
                }
            }
            let next = b"GET /next HTTP/1.1\r\n\r\n".to_vec();
            out.extend_from_slice(&next);
            (out, payload, next)
        })
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let v = v.trim_ascii_start();
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &v[..end]
}

proptest! {
    #[test]
    fn random_splits_of_valid_requests_agree(
        (input, payload, next) in request(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let l = Limits::default();
        let whole = feed_message(HeadKind::Request, &[&input], &l, false);
        let Ok(Some((Head::Request(_), _))) = &whole.head else {
            panic!("valid request refused: {:?}", whole.head);
        };
        let body = whole.body.as_ref().expect("body outcome");
        prop_assert_eq!(body.end, BodyEnd::Done);
        prop_assert_eq!(&body.data, &payload);
        prop_assert_eq!(&whole.rest, &next);
        let split = split_at_points(&input, &cuts);
        prop_assert_eq!(&whole, &feed_message(HeadKind::Request, &split, &l, false));
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(&whole, &feed_message(HeadKind::Request, &bytes, &l, false));
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
        for (_, body) in fuzz::TARGETS {
            body(&data);
        }
    }

    #[test]
    fn near_valid_bytes_never_panic(
        prefix in prop_oneof![
            Just(&b"GET / HTTP/1.1\r\n"[..]),
            Just(&b"HTTP/1.1 200 OK\r\n"[..]),
            Just(&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..]),
            Just(&b"\x00\x10\x00\x20\x00"[..]),
        ],
        tail in "[0-9a-fA-F;=: \t\r\nxXHTP/.-]{0,80}",
    ) {
        let data = [prefix, tail.as_bytes()].concat();
        for (_, body) in fuzz::TARGETS {
            body(&data);
        }
    }

    #[test]
    fn parse_encode_parse_round_trips(
        fields in prop::collection::vec((name(), value()), 0..12),
        target in "/[!-~]{0,30}",
    ) {
        let mut raw = format!("GET {target} HTTP/1.1\r\n").into_bytes();
        for (n, v) in &fields {
            raw.extend_from_slice(n.as_bytes());
            raw.push(b':');
            raw.extend_from_slice(v);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        let l = Limits::default();
        let (head, n) = HeadScanner::new().parse_request(&raw, &l).unwrap().unwrap();
        prop_assert_eq!(n, raw.len());
        let want: Vec<(&str, &[u8])> = fields.iter().map(|(n, v)| (n.as_str(), trim_ows(v))).collect();
        prop_assert_eq!(head.headers.iter().collect::<Vec<_>>(), want);
        prop_assert_eq!(head.body, BodyKind::Empty);

        let mut out = Vec::new();
        write_request_head(&head, &Rewrite::default(), &mut out);
        let (again, m) = HeadScanner::new().parse_request(&out, &l).unwrap().unwrap();
        prop_assert_eq!(m, out.len());
        prop_assert_eq!(&again.headers, &head.headers);
        prop_assert_eq!(&again.target, &head.target);
        prop_assert_eq!(&again.method_str, &head.method_str);
        // Encoding is canonical: a second round trip changes nothing.
        let mut out2 = Vec::new();
        write_request_head(&again, &Rewrite::default(), &mut out2);
        prop_assert_eq!(out2, out);
    }
}
