//! The framing layer used the way the ns-proxy uses it, through the public API only: parse a
//! head from a growing buffer, re-encode it with a rewrite, forward the body bytes verbatim,
//! then the next pipelined request.

use mdproxy_core::http::{
    reason_phrase, write_request_head, write_simple_response, Body, BodyDecoder, BodyKind,
    HeadScanner, HttpError, Limits, Method, Rewrite,
};

/// Forwards every complete request in `input` (fed `step` bytes at a time); returns what would
/// go upstream and how many requests went, or the first error.
fn forward(input: &[u8], step: usize, rw: &Rewrite<'_>) -> Result<(Vec<u8>, usize), HttpError> {
    let l = Limits::default();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut scanner = HeadScanner::new();
    let mut body: Option<BodyDecoder> = None;
    let mut requests = 0;
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            if let Some(dec) = body.as_mut() {
                let (n, piece) = dec.decode(&buf, &l)?;
                let (done, waiting) = (piece == Some(Body::Done), piece.is_none());
                out.extend_from_slice(&buf[..n]); // verbatim: framing and payload
                buf.drain(..n);
                if done {
                    body = None;
                } else if waiting && n == 0 {
                    break;
                }
            } else {
                let Some((head, n)) = scanner.parse_request(&buf, &l)? else {
                    break;
                };
                buf.drain(..n);
                scanner.reset();
                write_request_head(&head, rw, &mut out);
                requests += 1;
                body = Some(BodyDecoder::new(head.body));
            }
        }
    }
    Ok((out, requests))
}

const RW: Rewrite<'static> = Rewrite {
    remove: &["x-forwarded-for", "x-neutron-router-id", "x-instance-id"],
    strip_hop_by_hop: true,
    add: &[
        ("X-Forwarded-For", b"10.0.0.5"),
        ("X-Neutron-Router-ID", b"4f2c"),
    ],
    drop_underscored: true,
    keep_only: None,
};

#[test]
fn pipelined_requests_are_rewritten_and_bodies_forwarded_verbatim() {
    let input = b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n\
x-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n\
POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: keep-alive, X-Secret\r\n\
X-Secret: s\r\nTransfer-Encoding: chunked\r\n\r\n4;x\r\npass\r\n0\r\nT: 1\r\n\r\n\
GET /openstack HTTP/1.1\r\nHost: 169.254.169.254\r\nx-instance-id: spoof\r\n\r\n";
    let want = b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n\
x-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\
X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: 4f2c\r\n\r\n\
POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: chunked\r\n\
X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: 4f2c\r\n\r\n4;x\r\npass\r\n0\r\nT: 1\r\n\r\n\
GET /openstack HTTP/1.1\r\nHost: 169.254.169.254\r\n\
X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: 4f2c\r\n\r\n";
    for step in [1, 2, 3, 7, 64, input.len()] {
        let (out, n) = forward(input, step, &RW).unwrap();
        assert_eq!(n, 3, "step {step}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(want),
            "step {step}"
        );
    }
}

#[test]
fn smuggling_attempts_are_refused_with_400() {
    let attempts: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
    ];
    for a in attempts {
        let e = forward(a, 1, &RW).unwrap_err();
        assert_eq!(e.status(), 400, "{:?}: {e}", String::from_utf8_lossy(a));
    }
}

#[test]
fn limits_map_to_431_and_413() {
    let l = Limits::default();
    let big = [
        b"GET / HTTP/1.1\r\nX: ".as_slice(),
        &vec![b'a'; l.max_head],
        b"\r\n\r\n",
    ]
    .concat();
    assert_eq!(
        HeadScanner::new()
            .parse_request(&big, &l)
            .unwrap_err()
            .status(),
        431
    );
    let many: Vec<u8> = (0..=l.max_headers)
        .flat_map(|i| format!("X-{i}: v\r\n").into_bytes())
        .collect();
    let many = [b"GET / HTTP/1.1\r\n".as_slice(), &many, b"\r\n"].concat();
    assert_eq!(
        HeadScanner::new().parse_request(&many, &l).unwrap_err(),
        HttpError::TooManyHeaders
    );
    let long = b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n";
    assert_eq!(
        HeadScanner::new()
            .parse_request(long, &l)
            .unwrap_err()
            .status(),
        413
    );
}

#[test]
fn upstream_response_to_head_and_canned_errors() {
    let l = Limits::default();
    let (resp, n) = HeadScanner::new()
        .parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            Method::Head,
            &l,
        )
        .unwrap()
        .unwrap();
    assert_eq!((resp.body, resp.keep_alive, n), (BodyKind::Empty, true, 39));
    let mut out = Vec::new();
    write_simple_response(
        404,
        reason_phrase(404),
        &[("Content-Type", b"text/plain")],
        b"nope\n",
        false,
        &mut out,
    );
    let (h, n) = HeadScanner::new()
        .parse_response(&out, Method::Get, &l)
        .unwrap()
        .unwrap();
    assert_eq!(
        (h.status, &h.reason[..], h.body),
        (404, &b"Not Found"[..], BodyKind::Length(5))
    );
    assert_eq!(&out[n..], b"nope\n");
}
