//! The hostile-input matrix: the real `mdproxy ns-proxy` (on both runtimes) in front of a
//! recording Unix-socket upstream, fed what a hostile instance might send. Every row asserts
//! the statuses that come back (or the bare close), that the connection ends, and what the
//! upstream saw: for smuggling attempts it must never see a second request. After every row a
//! normal request on a new connection must still be served.
//!
//! Beyond the table: slowloris, a client that never reads a large answer (the proxy's memory
//! stays bounded), half-closed clients, connection floods up to and past `--max-conns` and
//! `--max-conns-per-ip`, and path traversal against `mdproxy server`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use common::*;

runtime_tests! {
    hostile_request_matrix,
    slowloris_one_byte_per_second_gets_408,
    client_that_never_reads_keeps_memory_bounded,
    pipelining_client_that_never_reads_keeps_memory_bounded,
    half_closed_client_still_gets_its_response,
    connection_flood_past_the_limits,
    path_traversal_at_the_server_finds_nothing,
}

/// What the upstream may see of one row.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Up {
    /// Nothing at all.
    Nothing,
    /// Exactly one request, which the row's check inspects.
    One,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// Statuses on the connection, in order (empty: closed without an answer).
    want: &'static [u16],
    up: Up,
    /// Inspects the one request the upstream saw.
    check: fn(&Recorded),
}

fn nothing(_: &Recorded) {}

fn only_proxy_identity(r: &Recorded) {
    assert_eq!(
        r.header_values("x-forwarded-for"),
        ["127.0.0.1"],
        "{}",
        r.head
    );
    assert_eq!(
        r.header_values("x-neutron-router-id"),
        [ROUTER],
        "{}",
        r.head
    );
    for gone in ["x-instance-id", "x-tenant-id", "x-instance-id-signature"] {
        assert!(r.header_values(gone).is_empty(), "{gone}: {}", r.head);
    }
}

fn body_hello(r: &Recorded) {
    only_proxy_identity(r);
    assert_eq!(r.body, b"hello", "{}", r.head);
}

fn no_smuggled_body_as_request(r: &Recorded) {
    assert!(r.path().starts_with("/latest"), "{}", r.head);
    assert_eq!(r.body, b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
}

fn no_hop_by_hop(r: &Recorded) {
    for gone in ["upgrade", "te", "keep-alive", "proxy-connection"] {
        assert!(r.header_values(gone).is_empty(), "{gone}: {}", r.head);
    }
}

fn s(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// A POST with `fields` (CRLF-terminated lines) and then `body`.
fn post(fields: &str, body: &str) -> Vec<u8> {
    s(&format!(
        "POST /latest/x HTTP/1.1\r\nHost: 169.254.169.254\r\n{fields}\r\n{body}"
    ))
}

/// The second request hidden in a smuggling attempt.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

fn cases() -> Vec<Case> {
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
        Case { name: "cl_te_both", bytes: post(cl_te, &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_cl_both", bytes: post(te_cl, &format!("5c\r\n{SMUGGLED}\r\n0\r\n\r\n")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_xchunked", bytes: post("Transfer-Encoding: xchunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_xchunked_with_cl", bytes: post("Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_leading_space_with_cl", bytes: post("Content-Length: 5\r\nTransfer-Encoding:  chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_leading_space_alone_is_chunked", bytes: post("Transfer-Encoding:  chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), want: &[200], up: Up::One, check: body_hello },
        Case { name: "te_chunked_identity", bytes: post("Transfer-Encoding: chunked, identity\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_identity_chunked_list", bytes: post("Transfer-Encoding: identity, chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_tab_before_value_is_chunked", bytes: post("Transfer-Encoding:\tchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), want: &[200], up: Up::One, check: body_hello },
        Case { name: "te_tab_with_cl", bytes: post("Content-Length: 5\r\nTransfer-Encoding:\tchunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_duplicated_field", bytes: post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_duplicated_with_xchunked", bytes: post("Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_space_before_colon", bytes: post("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_obs_folded", bytes: post("Transfer-Encoding:\r\n chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_on_http10", bytes: s(&format!("POST /latest/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "te_uppercase_chunked_is_chunked", bytes: post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"), want: &[200], up: Up::One, check: body_hello },
        // Content-Length games.
        Case { name: "cl_duplicate_equal", bytes: post("Content-Length: 5\r\nContent-Length: 5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "cl_duplicate_differing", bytes: post("Content-Length: 5\r\nContent-Length: 40\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "cl_list_value", bytes: post("Content-Length: 5, 5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "cl_plus_sign", bytes: post("Content-Length: +5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "cl_minus_sign", bytes: post("Content-Length: -1\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "cl_hex", bytes: post("Content-Length: 0x5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "cl_leading_space_is_ows", bytes: post("Content-Length:   5\r\n", "hello"), want: &[200], up: Up::One, check: body_hello },
        Case { name: "cl_space_inside_digits", bytes: post("Content-Length: 1 5\r\n", &format!("hello{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "cl_huge", bytes: post("Content-Length: 99999999999999999999999\r\n", "hello"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "cl_over_body_limit", bytes: post("Content-Length: 1000000\r\n", "hello"), want: &[413], up: Up::Nothing, check: nothing },
        Case { name: "cl_get_body_is_not_a_request", bytes: s(&format!("GET /latest/x HTTP/1.1\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len())), want: &[200], up: Up::One, check: no_smuggled_body_as_request },
        // Bad bytes and bad syntax in the head.
        Case { name: "bare_cr_in_value", bytes: s("GET /latest/ HTTP/1.1\r\nX-A: a\rb\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "bare_cr_line_end", bytes: s("GET /latest/ HTTP/1.1\rHost: x\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "nul_in_value", bytes: nul_value, want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "nul_in_name", bytes: nul_name, want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "space_before_colon", bytes: s("GET /latest/ HTTP/1.1\r\nHost : x\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "empty_field_name", bytes: s("GET /latest/ HTTP/1.1\r\n: x\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "obs_fold", bytes: s("GET /latest/ HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "obs_fold_identity_header", bytes: s("GET /latest/ HTTP/1.1\r\nX-A: a\r\n\tX-Forwarded-For: 10.9.9.9\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "ten_thousand_headers", bytes: many, want: &[431], up: Up::Nothing, check: nothing },
        Case { name: "hundred_and_one_headers", bytes: hundred_one, want: &[431], up: Up::Nothing, check: nothing },
        Case { name: "one_mib_header_line", bytes: huge_line, want: &[431], up: Up::Nothing, check: nothing },
        Case { name: "twenty_kib_target", bytes: long_target, want: &[431], up: Up::Nothing, check: nothing },
        // Targets and methods.
        Case { name: "absolute_form_target", bytes: s("GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"), want: &[200], up: Up::One, check: only_proxy_identity },
        Case { name: "authority_form_target", bytes: s("GET 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "connect_method", bytes: s("CONNECT 10.0.0.1:22 HTTP/1.1\r\nHost: 10.0.0.1:22\r\n\r\n"), want: &[405], up: Up::Nothing, check: nothing },
        // No path, so no single meaning for the rules that look at paths (the core's normaliser).
        Case { name: "options_asterisk", bytes: s("OPTIONS * HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        // The head never completes, so the half-close ends it without an answer (an HTTP/0.9
        // client could not read one); with more lines it is refused.
        Case { name: "http09_request", bytes: s("GET /latest/meta-data/\r\n"), want: &[], up: Up::Nothing, check: nothing },
        Case { name: "http09_request_then_lines", bytes: s("GET /latest/meta-data/\r\nHost: x\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "http2_preface", bytes: s("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "http2_version_line", bytes: s("GET /latest/ HTTP/2.0\r\nHost: x\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "tls_client_hello", bytes: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03hello-not-http\r\n\r\n".to_vec(), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "non_ascii_utf8_path", bytes: utf8_path, want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "non_ascii_latin1_path", bytes: latin1_path, want: &[400], up: Up::Nothing, check: nothing },
        // Identity and hop-by-hop fields.
        Case { name: "forged_identity_every_case", bytes: s("GET /latest/x HTTP/1.1\r\nx-forwarded-for: 10.9.9.9\r\nX-FORWARDED-FOR: 10.8.8.8\r\nX-Neutron-Router-ID: evil\r\nx-instance-id: i-evil\r\nX-Tenant-ID: t\r\nx-instance-id-signature: s\r\n\r\n"), want: &[200], up: Up::One, check: only_proxy_identity },
        Case { name: "upgrade_h2c_is_stripped", bytes: s("GET /latest/x HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings, Keep-Alive\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nKeep-Alive: 5\r\nTE: trailers\r\n\r\n"), want: &[200], up: Up::One, check: no_hop_by_hop },
        // Chunked framing.
        Case { name: "chunk_size_overflow", bytes: post("Transfer-Encoding: chunked\r\n", "ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "chunk_bare_lf", bytes: post("Transfer-Encoding: chunked\r\n", &format!("5\nhello\n0\n\n{SMUGGLED}")), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "chunk_negative_size", bytes: post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"), want: &[400], up: Up::Nothing, check: nothing },
        Case { name: "chunk_long_extension", bytes: post("Transfer-Encoding: chunked\r\n", &format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(4096))), want: &[400], up: Up::Nothing, check: nothing },
        // RFC 9112 §2.2: empty lines before a request line are ignored.
        Case { name: "leading_empty_lines", bytes: s("\r\n\r\nGET /latest/x HTTP/1.1\r\n\r\n"), want: &[200], up: Up::One, check: only_proxy_identity },
    ]
}

fn start_matrix(rt: Runtime, dir: &TempDir) -> (Upstream, Proxy) {
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let proxy = Proxy::start(rt, &up.path, &["--timeout-head", "2"]);
    (up, proxy)
}

/// One normal request on a new connection: served, and seen upstream.
fn assert_still_serves(proxy: &Proxy, up: &Upstream, after: &str) {
    let path = format!("/latest/meta-data/after-{after}");
    let before = up.count();
    let resp = request(proxy.addr, &get(&path));
    assert_eq!(resp.status, 200, "after {after}: {resp:?}");
    let seen = up.wait_for(before + 1);
    assert_eq!(seen.last().unwrap().path(), path, "after {after}");
}

fn hostile_request_matrix(rt: Runtime) {
    let dir = TempDir::new();
    let (up, proxy) = start_matrix(rt, &dir);
    let mut failures = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for case in cases {
        let before = up.count();
        let out = raw_exchange(proxy.addr, case.bytes.clone(), true);
        let seen: Vec<Recorded> = up.recorded()[before..].to_vec();
        let mut problems = Vec::new();
        if out.statuses != case.want {
            problems.push(format!(
                "statuses {:?}, want {:?}: {:?}",
                out.statuses,
                case.want,
                String::from_utf8_lossy(&out.raw[..out.raw.len().min(200)])
            ));
        }
        if !out.closed {
            problems.push("connection not closed".to_owned());
        }
        if seen.iter().any(|r| r.path().contains("smuggled")) {
            problems.push("the smuggled request reached the upstream".to_owned());
        }
        match (case.up, seen.len()) {
            (Up::Nothing, 0) => {}
            (Up::One, 1) => {
                let check = case.check;
                let r = seen[0].clone();
                if let Err(e) = std::panic::catch_unwind(move || check(&r)) {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| "check failed".to_owned());
                    problems.push(msg);
                }
            }
            (want, n) => problems.push(format!(
                "upstream saw {n} requests ({want:?} wanted): {:?}",
                seen.iter()
                    .map(|r| r.head.lines().next().unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
            )),
        }
        assert_still_serves(&proxy, &up, case.name);
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}\nlog:\n{}",
        failures.len(),
        failures.join("\n"),
        proxy
            .log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn slowloris_one_byte_per_second_gets_408(rt: Runtime) {
    let dir = TempDir::new();
    let (up, proxy) = start_matrix(rt, &dir);
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    let mut reader = stream.try_clone().unwrap();
    let trickle = thread::spawn(move || {
        for b in b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n" {
            if stream.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_secs(1));
        }
    });
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got);
    let took = started.elapsed();
    let statuses = parse_statuses(&got);
    assert_eq!(statuses, [408], "{:?}", String::from_utf8_lossy(&got));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "408 after {took:?} with --timeout-head 2"
    );
    let _ = trickle.join();
    assert_eq!(up.count(), 0, "a partial head reached the upstream");
    assert_still_serves(&proxy, &up, "slowloris");
}

fn client_that_never_reads_keeps_memory_bounded(rt: Runtime) {
    const BIG: usize = 64 << 20;
    let dir = TempDir::new();
    let up = Upstream::start(dir.join("up.sock"), |req| {
        if req.path() == "/big" {
            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
            r.resize(r.len() + BIG, b'x');
            Reply::Send(r)
        } else {
            Reply::Send(ok_response(b"ok"))
        }
    });
    let proxy = Proxy::start(rt, &up.path, &[]);
    assert_still_serves(&proxy, &up, "warm-up");
    let pid = proxy.pid();
    let rss_before = vm_rss_kib(pid);
    let mut stuck = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(proxy.addr).unwrap();
        c.set_recv_buffer_size_hint();
        c.write_all(&get("/big")).unwrap();
        stuck.push(c);
    }
    up.wait_for(5);
    // Let the proxy fill what it will; it must stop reading the upstream.
    thread::sleep(Duration::from_secs(2));
    let rss_during = vm_rss_kib(pid);
    assert!(
        rss_during < rss_before + 8 * 1024,
        "VmRSS {rss_before} KiB → {rss_during} KiB with 4 clients not reading {BIG}-byte answers"
    );
    assert_still_serves(&proxy, &up, "never-reads");
    // A reader that resumes gets the answer whole.
    let mut c = stuck.pop().unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = [0u8; 64];
    let n = c.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    drop(stuck);
    eprintln!("VmRSS {rss_before} KiB before, {rss_during} KiB with 4 stalled {BIG}-byte answers");
}

/// Locally made answers (here 429s: the rate limit is spent) to pipelined requests that the
/// client never reads must not pile up in the proxy: it stops reading the client instead.
/// (The kernel's socket buffers hold several MiB, so the client sends far more than that.)
fn pipelining_client_that_never_reads_keeps_memory_bounded(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let proxy = Proxy::start(rt, &up.path, &["--rate-limit", "1/60,1/60"]);
    let out = raw_exchange(proxy.addr, get("/latest/meta-data/"), true);
    assert_eq!(out.statuses, [200]);
    let pid = proxy.pid();
    let rss_before = vm_rss_kib(pid);
    let client = TcpStream::connect(proxy.addr).unwrap();
    client.set_recv_buffer_size_hint();
    let writer = client.try_clone().unwrap();
    // Up to 1 000 000 requests (40 MiB); their answers would be over 150 MiB.
    let sender = thread::spawn(move || {
        let one = get("/latest/meta-data/");
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        let mut w = &writer;
        let mut sent = 0;
        for _ in 0..1000 {
            if w.write_all(&batch).is_err() {
                break;
            }
            sent += 1000;
        }
        sent
    });
    thread::sleep(Duration::from_secs(4));
    let rss_during = vm_rss_kib(pid);
    client.shutdown(std::net::Shutdown::Both).unwrap();
    let sent = sender.join().unwrap();
    eprintln!(
        "VmRSS {rss_before} KiB before, {rss_during} KiB with {sent}+ unread pipelined requests"
    );
    assert!(
        rss_during < rss_before + 8 * 1024,
        "VmRSS {rss_before} KiB → {rss_during} KiB with {sent}+ unread pipelined requests"
    );
    let out = raw_exchange(proxy.addr, get("/latest/meta-data/"), true);
    assert_eq!(out.statuses, [429], "still answering");
}

/// Small receive buffers make "not reading" bite early.
trait RecvHint {
    fn set_recv_buffer_size_hint(&self);
}

impl RecvHint for TcpStream {
    fn set_recv_buffer_size_hint(&self) {
        use std::os::fd::AsRawFd;
        let size: libc::c_int = 4096;
        // SAFETY: setsockopt with a valid fd and an int option value.
        unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

fn half_closed_client_still_gets_its_response(rt: Runtime) {
    let dir = TempDir::new();
    let (up, proxy) = start_matrix(rt, &dir);
    for (name, bytes) in [
        ("get", get("/latest/meta-data/")),
        ("post_with_body", post("Content-Length: 5\r\n", "hello")),
        (
            "two_pipelined",
            [get("/latest/a"), get("/latest/b")].concat(),
        ),
    ] {
        let out = raw_exchange(proxy.addr, bytes, true);
        let want: &[u16] = if name == "two_pipelined" {
            &[200, 200]
        } else {
            &[200]
        };
        assert_eq!(
            out.statuses,
            want,
            "{name}: {:?}",
            String::from_utf8_lossy(&out.raw)
        );
        assert!(
            out.closed,
            "{name}: the proxy must close after answering a half-closed client"
        );
    }
    assert_still_serves(&proxy, &up, "half-close");
}

/// Opens a connection from `ip` (any 127/8 address) with a partial head, so it counts.
fn hold(addr: SocketAddr, ip: [u8; 4]) -> TcpStream {
    let sock = socket_from(ip);
    let s = connect_from(sock, addr);
    (&s).write_all(b"GET /latest/").unwrap();
    s
}

fn socket_from(ip: [u8; 4]) -> std::net::SocketAddr {
    SocketAddr::from((ip, 0))
}

/// A TCP connection bound to `local` first (std has no bind-then-connect: use libc).
fn connect_from(local: SocketAddr, to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let (SocketAddr::V4(local), SocketAddr::V4(to)) = (local, to) else {
        panic!("IPv4 only");
    };
    let sin = |a: std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: plain socket calls on a fresh descriptor that the TcpStream then owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let l = sin(local);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, (&l as *const libc::sockaddr_in).cast(), len),
            0
        );
        let t = sin(to);
        assert_eq!(
            libc::connect(fd, (&t as *const libc::sockaddr_in).cast(), len),
            0
        );
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }
}

fn status_on(s: &TcpStream, rest: &[u8]) -> Option<u16> {
    let mut s = s;
    let _ = s.write_all(rest);
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    parse_statuses(&got).first().copied()
}

fn connection_flood_past_the_limits(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let proxy = Proxy::start(
        rt,
        &up.path,
        &["--max-conns", "8", "--max-conns-per-ip", "4"],
    );
    let addr = proxy.addr;
    // Up to the per-IP limit from 127.0.0.1: all held open.
    let mut held: Vec<TcpStream> = (0..4).map(|_| hold(addr, [127, 0, 0, 1])).collect();
    // Past it: 503, from the same address only.
    let past_ip = connect_from(socket_from([127, 0, 0, 1]), addr);
    assert_eq!(
        status_on(&past_ip, b"GET / HTTP/1.1\r\n\r\n"),
        Some(503),
        "5th from one IP"
    );
    // Other addresses fill the rest of --max-conns.
    for ip in [
        [127, 0, 0, 2],
        [127, 0, 0, 3],
        [127, 0, 0, 4],
        [127, 0, 0, 5],
    ] {
        held.push(hold(addr, ip));
    }
    let past_total = connect_from(socket_from([127, 0, 0, 9]), addr);
    assert_eq!(
        status_on(&past_total, b"GET / HTTP/1.1\r\n\r\n"),
        Some(503),
        "9th connection"
    );
    // A flood far past the limit: every one answered 503 or refused by the backlog, none served.
    let flood: Vec<_> = (0..200)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    for s in &flood {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    let answered: Vec<Option<u16>> = flood
        .iter()
        .map(|s| status_on(s, b"GET / HTTP/1.1\r\n\r\n"))
        .collect();
    assert!(
        answered.iter().all(|a| *a == Some(503) || a.is_none()),
        "{answered:?}"
    );
    drop(flood);
    // Below the limits, the held connections are served.
    assert_eq!(
        status_on(
            &held[0],
            b"meta-data/ HTTP/1.1\r\nConnection: close\r\n\r\n"
        ),
        Some(200)
    );
    assert_eq!(
        status_on(
            &held[5],
            b"meta-data/ HTTP/1.1\r\nConnection: close\r\n\r\n"
        ),
        Some(200)
    );
    drop(held);
    drop((past_ip, past_total));
    // Once they are gone, a normal request is served again.
    let served = eventually(|| request(addr, &get("/latest/meta-data/")).status == 200);
    assert!(served, "not served after the flood: {}", proxy.log());
    assert_still_serves(&proxy, &up, "flood");
}

const SECRET: &str = "s3cr3t";
const UUID: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
const PROJECT: &str = "8a5ce0e4f2b84d8b9b1e2c3d4f5a6b7c";

fn signed(path: &str) -> Vec<u8> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(UUID.as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "GET {path} HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\nX-Instance-ID: {UUID}\r\n\
         X-Tenant-ID: {PROJECT}\r\nX-Instance-ID-Signature: {sig}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

fn path_traversal_at_the_server_finds_nothing(rt: Runtime) {
    let dir = TempDir::new();
    let instances = dir.join("instances");
    fs::create_dir(&instances).unwrap();
    let marker = "TOP-SECRET-MARKER";
    fs::write(
        instances.join(format!("{UUID}.toml")),
        format!("uuid = \"{UUID}\"\nproject_id = \"{PROJECT}\"\nuser_data = \"ud\"\n"),
    )
    .unwrap();
    fs::write(dir.join("secret"), format!("{SECRET}\n")).unwrap();
    fs::write(dir.join("private.txt"), marker).unwrap();
    fs::write(instances.join("notes.txt"), marker).unwrap();
    let server = Proxy::start_with(rt, |port| {
        vec![
            "server".to_owned(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--instances={}", instances.display()),
            format!("--shared-secret-file={}", dir.join("secret").display()),
        ]
    });
    let ok = request(server.addr, &signed("/openstack/latest/user_data"));
    assert_eq!((ok.status, ok.body_text().as_str()), (200, "ud"));
    for path in [
        "/../secret",
        "/../../../../etc/passwd",
        "/openstack/latest/../../../private.txt",
        "/openstack/latest/../../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/openstack/%2e%2e/%2e%2e/secret",
        "/openstack/latest/%2E%2E%2F%2E%2E%2Fsecret",
        "/openstack/latest/..%2f..%2fprivate.txt",
        "/openstack/content/../../notes.txt",
        "/latest/meta-data/../../../secret",
        "/openstack/latest/meta_data.json/../../../../instances/notes.txt",
        "//etc/passwd",
        "/openstack/latest/user_data/..%00/secret",
    ] {
        let resp = request(server.addr, &signed(path));
        let body = resp.body_text();
        assert!(
            !body.contains(marker) && !body.contains(SECRET) && !body.contains("root:"),
            "{path} leaked: {body}"
        );
        // Refused (400: an escaped `/` or NUL has no single meaning) or not in the tree (404).
        let want = if path.contains("%2F") || path.contains("%2f") || path.contains("%00") {
            400
        } else {
            404
        };
        assert_eq!(resp.status, want, "{path}: {body}");
    }
    let ok = request(server.addr, &signed("/openstack/latest/user_data"));
    assert_eq!(ok.status, 200);
}
