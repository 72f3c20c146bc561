//! The hostile-request table (smuggling, bad bytes, limits, odd targets, forged identity,
//! chunked framing) that `hostile.rs` sends to the ns-proxy in front of a recording upstream and
//! `lenient.rs` sends in front of real lenient parsers (eventlet.wsgi, wsgiref). What counts as
//! the right identity differs per hop, so each runner passes its own identity check to
//! [`Check::run`].

use super::Recorded;

/// What the upstream may see of one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Up {
    /// Nothing at all.
    Nothing,
    /// Exactly one request, which the row's check inspects.
    One,
}

pub struct Case {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    /// Statuses on the connection, in order (empty: closed without an answer).
    pub want: &'static [u16],
    pub up: Up,
    /// Inspects the one request the upstream saw.
    pub check: Check,
}

/// What a row asserts of the one request the upstream saw.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    Nothing,
    /// The hop's identity headers, and nothing the client claimed.
    Identity,
    /// The identity, and the body `hello` (however the client framed it).
    BodyHello,
    /// A GET's Content-Length body holding a request stays that request's body.
    SmuggledBodyStaysBody,
    /// No hop-by-hop field the client sent went on.
    NoHopByHop,
}

impl Check {
    /// Panics (with the head) if `r` breaks the row; `identity` is the hop's identity check.
    pub fn run(self, r: &Recorded, identity: fn(&Recorded)) {
        match self {
            Check::Nothing => {}
            Check::Identity => identity(r),
            Check::BodyHello => {
                identity(r);
                assert_eq!(r.body, b"hello", "{}", r.head);
            }
            Check::SmuggledBodyStaysBody => {
                assert!(r.path().starts_with("/latest"), "{}", r.head);
                assert_eq!(r.body, SMUGGLED.as_bytes());
            }
            Check::NoHopByHop => {
                for gone in ["upgrade", "te", "keep-alive", "proxy-connection"] {
                    assert!(r.header_values(gone).is_empty(), "{gone}: {}", r.head);
                }
            }
        }
    }
}

pub fn s(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// A POST with `fields` (CRLF-terminated lines) and then `body`.
pub fn post(fields: &str, body: &str) -> Vec<u8> {
    s(&format!(
        "POST /latest/x HTTP/1.1\r\nHost: 169.254.169.254\r\n{fields}\r\n{body}"
    ))
}

/// The second request hidden in a smuggling attempt.
pub const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

pub fn cases() -> Vec<Case> {
    let mut many = s("GET /latest/ HTTP/1.1\r\n");
    for i in 0..10_000 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let mut hundred_one = s("GET /latest/ HTTP/1.1\r\n");
    for i in 0..101 {
        hundred_one.extend_from_slice(format!("h{i}:1\r\n").as_bytes());
    }
    hundred_one.extend_from_slice(b"\r\n");
    let mut huge_line = s("GET /latest/ HTTP/1.1\r\nX-Big: ");
    huge_line.resize(huge_line.len() + (1 << 20), b'a');
    huge_line.extend_from_slice(b"\r\n\r\n");
    let long_target = s(&format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000)));
    let nul_value = s("GET /latest/ HTTP/1.1\r\nX-A: a\0b\r\n\r\n");
    let nul_name = s("GET /latest/ HTTP/1.1\r\nX\0A: ab\r\n\r\n");
    let utf8_path = s("GET /latest/meta-data/caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut latin1_path = s("GET /latest/meta-data/");
    latin1_path.extend_from_slice(b"\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n");
    let cl_te = "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n";
    let te_cl = "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n";

    vec![
        // Request smuggling: CL.TE, TE.CL, TE.TE.
        Case { name: "cl_te_both", bytes: post(cl_te, &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_cl_both", bytes: post(te_cl, &format!("5c\r\n{SMUGGLED}\r\n0\r\n\r\n")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_xchunked", bytes: post("Transfer-Encoding: xchunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_xchunked_with_cl", bytes: post("Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_leading_space_with_cl", bytes: post("Content-Length: 5\r\nTransfer-Encoding:  chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_leading_space_alone_is_chunked", bytes: post("Transfer-Encoding:  chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), want: &[200], up: Up::One, check: Check::BodyHello },
        Case { name: "te_chunked_identity", bytes: post("Transfer-Encoding: chunked, identity\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_identity_chunked_list", bytes: post("Transfer-Encoding: identity, chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_tab_before_value_is_chunked", bytes: post("Transfer-Encoding:\tchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), want: &[200], up: Up::One, check: Check::BodyHello },
        Case { name: "te_tab_with_cl", bytes: post("Content-Length: 5\r\nTransfer-Encoding:\tchunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_duplicated_field", bytes: post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_duplicated_with_xchunked", bytes: post("Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_space_before_colon", bytes: post("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_obs_folded", bytes: post("Transfer-Encoding:\r\n chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_on_http10", bytes: s(&format!("POST /latest/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "te_uppercase_chunked_is_chunked", bytes: post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"), want: &[200], up: Up::One, check: Check::BodyHello },
        // Content-Length games.
        Case { name: "cl_duplicate_equal", bytes: post("Content-Length: 5\r\nContent-Length: 5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "cl_duplicate_differing", bytes: post("Content-Length: 5\r\nContent-Length: 40\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "cl_list_value", bytes: post("Content-Length: 5, 5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "cl_plus_sign", bytes: post("Content-Length: +5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "cl_minus_sign", bytes: post("Content-Length: -1\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "cl_hex", bytes: post("Content-Length: 0x5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "cl_leading_space_is_ows", bytes: post("Content-Length:   5\r\n", "hello"), want: &[200], up: Up::One, check: Check::BodyHello },
        Case { name: "cl_space_inside_digits", bytes: post("Content-Length: 1 5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "cl_huge", bytes: post("Content-Length: 99999999999999999999999\r\n", "hello"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "cl_over_body_limit", bytes: post("Content-Length: 1000000\r\n", "hello"), want: &[413], up: Up::Nothing, check: Check::Nothing },
        Case { name: "cl_get_body_is_not_a_request", bytes: s(&format!("GET /latest/x HTTP/1.1\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len())), want: &[200], up: Up::One, check: Check::SmuggledBodyStaysBody },
        // Bad bytes and bad syntax in the head.
        Case { name: "bare_cr_in_value", bytes: s("GET /latest/ HTTP/1.1\r\nX-A: a\rb\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "bare_cr_line_end", bytes: s("GET /latest/ HTTP/1.1\rHost: x\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "nul_in_value", bytes: nul_value, want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "nul_in_name", bytes: nul_name, want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "space_before_colon", bytes: s("GET /latest/ HTTP/1.1\r\nHost : x\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "empty_field_name", bytes: s("GET /latest/ HTTP/1.1\r\n: x\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "obs_fold", bytes: s("GET /latest/ HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "obs_fold_identity_header", bytes: s("GET /latest/ HTTP/1.1\r\nX-A: a\r\n\tX-Forwarded-For: 10.9.9.9\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "ten_thousand_headers", bytes: many, want: &[431], up: Up::Nothing, check: Check::Nothing },
        Case { name: "hundred_and_one_headers", bytes: hundred_one, want: &[431], up: Up::Nothing, check: Check::Nothing },
        Case { name: "one_mib_header_line", bytes: huge_line, want: &[431], up: Up::Nothing, check: Check::Nothing },
        Case { name: "twenty_kib_target", bytes: long_target, want: &[431], up: Up::Nothing, check: Check::Nothing },
        // Targets and methods.
        Case { name: "absolute_form_target", bytes: s("GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"), want: &[200], up: Up::One, check: Check::Identity },
        Case { name: "authority_form_target", bytes: s("GET 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "connect_method", bytes: s("CONNECT 10.0.0.1:22 HTTP/1.1\r\nHost: 10.0.0.1:22\r\n\r\n"), want: &[405], up: Up::Nothing, check: Check::Nothing },
        // No path, so no single meaning for the rules that look at paths (the core's normaliser).
        Case { name: "options_asterisk", bytes: s("OPTIONS * HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        // The head never completes, so the half-close ends it without an answer (an HTTP/0.9
        // client could not read one); with more lines it is refused.
        Case { name: "http09_request", bytes: s("GET /latest/meta-data/\r\n"), want: &[], up: Up::Nothing, check: Check::Nothing },
        Case { name: "http09_request_then_lines", bytes: s("GET /latest/meta-data/\r\nHost: x\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "http2_preface", bytes: s("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "http2_version_line", bytes: s("GET /latest/ HTTP/2.0\r\nHost: x\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "tls_client_hello", bytes: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03hello-not-http\r\n\r\n".to_vec(), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "non_ascii_utf8_path", bytes: utf8_path, want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "non_ascii_latin1_path", bytes: latin1_path, want: &[400], up: Up::Nothing, check: Check::Nothing },
        // Identity and hop-by-hop fields.
        Case { name: "forged_identity_every_case", bytes: s("GET /latest/x HTTP/1.1\r\nx-forwarded-for: 10.9.9.9\r\nX-FORWARDED-FOR: 10.8.8.8\r\nX-Neutron-Router-ID: evil\r\nx-instance-id: i-evil\r\nX-Tenant-ID: t\r\nx-instance-id-signature: s\r\n\r\n"), want: &[200], up: Up::One, check: Check::Identity },
        Case { name: "upgrade_h2c_is_stripped", bytes: s("GET /latest/x HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings, Keep-Alive\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nKeep-Alive: 5\r\nTE: trailers\r\n\r\n"), want: &[200], up: Up::One, check: Check::NoHopByHop },
        // Chunked framing.
        Case { name: "chunk_size_overflow", bytes: post("Transfer-Encoding: chunked\r\n", "ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "chunk_bare_lf", bytes: post("Transfer-Encoding: chunked\r\n", &format!("5\nhello\n0\n\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "chunk_negative_size", bytes: post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"), want: &[400], up: Up::Nothing, check: Check::Nothing },
        Case { name: "chunk_long_extension", bytes: post("Transfer-Encoding: chunked\r\n", &format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(4096))), want: &[400], up: Up::Nothing, check: Check::Nothing },
        // RFC 9112 §2.2: empty lines before a request line are ignored.
        Case { name: "leading_empty_lines", bytes: s("\r\n\r\nGET /latest/x HTTP/1.1\r\n\r\n"), want: &[200], up: Up::One, check: Check::Identity },
    ]
}
