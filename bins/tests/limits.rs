//! The request limits, set as flags (`--max-head-bytes`, `--max-headers`, `--max-body-bytes`,
//! `--max-chunk-line-bytes`) or as keys of a TOML file, through the real ns-proxy on each
//! runtime: a request exactly at a limit is served, one a byte (or a field) past it gets
//! DESIGN.md's status and never reaches the agent.

mod common;

use std::fs;

use common::*;

runtime_tests! {
    limits_given_as_flags_hold_at_their_edge,
    limits_given_in_a_file_hold_at_their_edge,
}

/// The smallest value of each limit (its range's lower end), far below the defaults, so that
/// a request past it would pass a proxy that ignored the setting.
const LIMITS: [(&str, usize); 4] = [
    ("max-head-bytes", 1024),
    ("max-headers", 8),
    ("max-body-bytes", 1024),
    ("max-chunk-line-bytes", 64),
];

/// A GET whose head is `len` bytes, the blank line included.
fn head_of(len: usize) -> Vec<u8> {
    let (start, end) = (
        "GET / HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Pad: ",
        "\r\n\r\n",
    );
    let pad = "a".repeat(len - start.len() - end.len());
    format!("{start}{pad}{end}").into_bytes()
}

/// A GET with `n` header fields.
fn with_fields(n: usize) -> Vec<u8> {
    let mut head = "GET / HTTP/1.1\r\nHost: 169.254.169.254\r\n".to_owned();
    for i in 1..n {
        head += &format!("X-Field-{i}: v\r\n");
    }
    (head + "\r\n").into_bytes()
}

/// A POST with a body of `len` bytes.
fn post_of(len: usize) -> Vec<u8> {
    let mut req = format!(
        "POST /openstack/latest/password HTTP/1.1\r\nHost: h\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    req.resize(req.len() + len, b'p');
    req
}

/// A chunked POST whose one chunk-size line (extension and CRLF included) is `len` bytes.
fn chunk_line_of(len: usize) -> Vec<u8> {
    let ext = "x".repeat(len - "5;\r\n".len());
    format!(
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;{ext}\r\nhello\r\n0\r\n\r\n"
    )
    .into_bytes()
}

/// Each limit's request at it and past it, and the status past it.
fn assert_limits_hold(proxy: &Proxy, up: &Upstream) {
    let [(_, head), (_, fields), (_, body), (_, line)] = LIMITS;
    let cases: [(&str, Vec<u8>, Vec<u8>, u16); 4] = [
        ("head", head_of(head), head_of(head + 1), 431),
        ("fields", with_fields(fields), with_fields(fields + 1), 431),
        ("body", post_of(body), post_of(body + 1), 413),
        (
            "chunk line",
            chunk_line_of(line),
            chunk_line_of(line + 1),
            400,
        ),
    ];
    for (what, at, past, status) in cases {
        let before = up.count();
        let resp = request(proxy.addr, &at);
        assert_eq!(resp.status, 200, "{what} at the limit: {resp:?}");
        assert_eq!(up.wait_for(before + 1).len(), before + 1, "{what}");
        let resp = request(proxy.addr, &past);
        assert_eq!(resp.status, status, "{what} past the limit: {resp:?}");
        assert_eq!(
            up.count(),
            before + 1,
            "{what} past the limit reached the agent"
        );
    }
}

fn limits_given_as_flags_hold_at_their_edge(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let flags: Vec<String> = LIMITS.iter().map(|(k, v)| format!("--{k}={v}")).collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let proxy = Proxy::start(rt, &up.path, &flags);
    assert_limits_hold(&proxy, &up);
}

/// The head limits from `[common]`, the body limits from `[ns-proxy]`.
fn limits_given_in_a_file_hold_at_their_edge(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let [(h, hv), (f, fv), (b, bv), (l, lv)] = LIMITS;
    let text = format!("[common]\n{h} = {hv}\n{f} = {fv}\n[ns-proxy]\n{b} = {bv}\n{l} = {lv}\n");
    let file = dir.join("limits.toml");
    fs::write(&file, text).unwrap();
    let proxy = Proxy::start_with(rt, |port| {
        [
            "--config",
            &file.display().to_string(),
            "ns-proxy",
            "--router-id",
            ROUTER,
            &format!("--listen=127.0.0.1:{port}"),
            &format!("--upstream-socket={}", up.path.display()),
        ]
        .map(String::from)
        .to_vec()
    });
    assert_limits_hold(&proxy, &up);
}
