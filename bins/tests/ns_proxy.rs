//! End-to-end tests of `mdproxy ns-proxy`: the real binary between a raw TCP client and a
//! scripted upstream on a Unix socket. Statuses follow DESIGN.md's error table.

mod common;

use std::fs;
use std::sync::Arc;

use common::*;

runtime_tests! {
    forged_identity_headers_never_reach_upstream,
    network_scope_sends_network_id_only,
    ovn_scope_sends_ovn_network_id_only,
    keep_alive_serves_three_requests,
    pipelined_requests_answered_in_order,
    chunked_request_body_reaches_upstream,
    trailers_never_become_a_request_upstream,
    underscored_and_origin_headers_never_reach_upstream,
    token_put_through_a_proxy_is_refused_in_every_spelling,
    upstream_sees_the_normalised_target,
    large_response_streams_through,
    missing_upstream_answers_503_and_keeps_serving,
    silent_upstream_times_out_with_504,
    garbage_from_upstream_gives_502,
    upstream_reset_mid_response_closes_client,
    slowloris_gets_408,
    oversized_head_gets_431,
    oversized_body_gets_413,
    content_length_with_chunked_gets_400,
    legacy_command_line_starts_and_writes_pid_file,
    router_and_network_id_together_exit_2,
    sigterm_finishes_in_flight_request_then_exits_0,
    drain_timeout_bounds_shutdown,
    second_stop_signal_exits_at_once,
    sighup_only_logs,
    max_conns_flag_limits_connections,
    rate_limit_flag_answers_429,
    dual_stack_listener_reports_ipv4_peer,
    help_version_and_usage_errors,
}

fn forged_identity_headers_never_reach_upstream(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"i-123");
    let proxy = Proxy::start(rt, &up.path, &[]);
    let forged = "GET /latest/meta-data/instance-id?x=1 HTTP/1.1\r\n\
        Host: 169.254.169.254\r\n\
        X-Forwarded-For: 10.9.9.9\r\n\
        x-forwarded-for: 10.8.8.8, 10.7.7.7\r\n\
        X-Neutron-Router-ID: 11111111-1111-1111-1111-111111111111\r\n\
        X-NEUTRON-ROUTER-ID: 22222222-2222-2222-2222-222222222222\r\n\
        X-Neutron-Network-ID: 33333333-3333-3333-3333-333333333333\r\n\
        X-Instance-ID: i-forged\r\n\
        x-instance-id: i-forged-too\r\n\
        X-Instance-ID-Signature: deadbeef\r\n\
        X-Tenant-ID: evil\r\n\
        X-Metadata-Provider: p\r\n\
        x-METADATA-provider-signature: s\r\n\
        X-Custom: kept\r\n\r\n";
    let resp = request(proxy.addr, forged.as_bytes());
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"i-123");
    let seen = &up.wait_for(1)[0];
    assert_eq!(seen.path(), "/latest/meta-data/instance-id?x=1");
    assert!(seen.head.starts_with("GET "), "{}", seen.head);
    assert_eq!(
        seen.header_values("x-forwarded-for"),
        ["127.0.0.1"],
        "{}",
        seen.head
    );
    assert_eq!(
        seen.header_values("x-neutron-router-id"),
        [ROUTER],
        "{}",
        seen.head
    );
    for gone in [
        "x-neutron-network-id",
        "x-instance-id",
        "x-instance-id-signature",
        "x-tenant-id",
        "x-metadata-provider",
        "x-metadata-provider-signature",
    ] {
        assert!(
            seen.header_values(gone).is_empty(),
            "{gone} reached upstream:\n{}",
            seen.head
        );
    }
    assert_eq!(seen.header_values("x-custom"), ["kept"]);
}

/// The OVN scope: every copy of `X-OVN-Network-ID` the instance sent is dropped (haproxy's
/// `add-header` in Neutron's OVN driver keeps them) and ours is the only one, with no Neutron
/// scope field beside it.
fn ovn_scope_sends_ovn_network_id_only(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let proxy = Proxy::start(rt, &up.path, &[&format!("--ovn-network-id={NETWORK}")]);
    let req = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-OVN-Network-ID: 44444444-4444-4444-4444-444444444444\r\n\
         x-ovn-network-id: {ROUTER}\r\nX-Neutron-Network-ID: {ROUTER}\r\n\r\n"
    );
    assert_eq!(request(proxy.addr, req.as_bytes()).status, 200);
    let seen = &up.wait_for(1)[0];
    assert_eq!(
        seen.header_values("x-ovn-network-id"),
        [NETWORK],
        "{}",
        seen.head
    );
    for other in ["x-neutron-network-id", "x-neutron-router-id"] {
        assert!(
            seen.header_values(other).is_empty(),
            "{other}: {}",
            seen.head
        );
    }
}

fn network_scope_sends_network_id_only(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let proxy = Proxy::start(rt, &up.path, &[&format!("--network-id={NETWORK}")]);
    let req = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Neutron-Router-ID: {ROUTER}\r\n\
         X-Neutron-Network-ID: 44444444-4444-4444-4444-444444444444\r\n\r\n"
    );
    assert_eq!(request(proxy.addr, req.as_bytes()).status, 200);
    let seen = &up.wait_for(1)[0];
    assert_eq!(
        seen.header_values("x-neutron-network-id"),
        [NETWORK],
        "{}",
        seen.head
    );
    assert!(
        seen.header_values("x-neutron-router-id").is_empty(),
        "{}",
        seen.head
    );
    assert_eq!(seen.header_values("x-forwarded-for"), ["127.0.0.1"]);
}

/// The upstream answers each request with its path, so order is visible.
fn echo_path(dir: &TempDir) -> Upstream {
    Upstream::start(dir.join("up.sock"), |req| {
        Reply::Send(ok_response(req.path().as_bytes()))
    })
}

fn keep_alive_serves_three_requests(rt: Runtime) {
    let dir = TempDir::new();
    let up = echo_path(&dir);
    let proxy = Proxy::start(rt, &up.path, &[]);
    let mut client = Client::connect(proxy.addr);
    for path in ["/a", "/b", "/c"] {
        let resp = client.exchange(&get(path));
        assert_eq!(
            (resp.status, resp.body_text().as_str()),
            (200, path),
            "{resp:?}"
        );
    }
    assert_eq!(up.wait_for(3).len(), 3);
}

fn pipelined_requests_answered_in_order(rt: Runtime) {
    let dir = TempDir::new();
    let up = echo_path(&dir);
    let proxy = Proxy::start(rt, &up.path, &[]);
    let mut client = Client::connect(proxy.addr);
    client
        .send(&[get("/one"), get("/two"), get("/three")].concat())
        .unwrap();
    for path in ["/one", "/two", "/three"] {
        let resp = client.response();
        assert_eq!(
            (resp.status, resp.body_text().as_str()),
            (200, path),
            "{resp:?}"
        );
    }
}

fn chunked_request_body_reaches_upstream(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"stored");
    let proxy = Proxy::start(rt, &up.path, &[]);
    let mut client = Client::connect(proxy.addr);
    let head = "POST /openstack/latest/password HTTP/1.1\r\nHost: h\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    client.send(head.as_bytes()).unwrap();
    client.send(b"5;ext=1\r\nhello\r\n").unwrap();
    client.send(b"6\r\n world\r\n0\r\n\r\n").unwrap();
    let resp = client.response();
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = &up.wait_for(1)[0];
    assert!(
        seen.head.starts_with("POST /openstack/latest/password "),
        "{}",
        seen.head
    );
    assert_eq!(seen.body, b"hello world");
    // Re-framed by us: the payload under our Content-Length, no chunk framing or extension.
    assert_eq!(
        seen.header_values("content-length"),
        ["11"],
        "{}",
        seen.head
    );
    assert!(
        seen.header_values("transfer-encoding").is_empty(),
        "{}",
        seen.head
    );
}

/// CVE-2025-58068's shape: eventlet before 0.40.3 reads one line after the last chunk and
/// takes the rest of the trailer section for the next request, whose identity the instance
/// wrote. No trailer byte may leave the ns-proxy: the upstream sees the POST, then the next
/// real request, and nothing in between.
fn trailers_never_become_a_request_upstream(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::start(dir.join("up.sock"), |req| {
        Reply::Send(ok_response(req.path().as_bytes()))
    });
    let proxy = Proxy::start(rt, &up.path, &[]);
    let mut client = Client::connect(proxy.addr);
    let smuggle = format!(
        "POST /openstack/latest/password HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
         2;x=1\r\npw\r\n0\r\nX-Eaten: 1\r\nGET: /openstack/latest/user_data HTTP/1.1\r\n\
         X-Forwarded-For: 10.0.0.7\r\nX-Neutron-Network-ID: {NETWORK}\r\n\r\n"
    );
    let resp = client.exchange(smuggle.as_bytes());
    assert_eq!(resp.status, 200, "{resp:?}");
    let next = client.exchange(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(next.body, b"/latest/meta-data/");
    let seen = up.wait_for(2);
    assert_eq!(up.count(), 2, "{seen:?}");
    assert_eq!(seen[0].body, b"pw");
    assert_eq!(
        seen[0].header_values("content-length"),
        ["2"],
        "{}",
        seen[0].head
    );
    assert!(
        seen[1].head.starts_with("GET /latest/meta-data/ "),
        "{}",
        seen[1].head
    );
    for r in &seen {
        assert_eq!(
            r.header_values("x-forwarded-for"),
            ["127.0.0.1"],
            "{}",
            r.head
        );
        assert!(
            !r.head.contains("10.0.0.7") && !r.head.contains(NETWORK),
            "{}",
            r.head
        );
    }
}

/// WSGI servers fold `_` into `-` (eventlet, wsgiref: `X_Forwarded_For` is read as
/// `X-Forwarded-For`), and Nova's `http_proxy_to_wsgi` takes the request's origin from
/// `Forwarded`, `X-Forwarded-Host`/`-Proto`; none of them may reach the agent.
fn underscored_and_origin_headers_never_reach_upstream(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let proxy = Proxy::start(rt, &up.path, &[]);
    let forged = format!(
        "GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X_Forwarded_For: 10.0.0.7\r\nx_forwarded-for: 10.0.0.8\r\nX_Instance_ID: i-forged\r\n\
         X_Metadata_Provider: p\r\nX_Neutron_Network_ID: {NETWORK}\r\nx_tenant_id: evil\r\n\
         X-OVN-Network-ID: {NETWORK}\r\nForwarded: for=10.0.0.7;host=nova;proto=https\r\n\
         X-Forwarded-Host: nova\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 10.0.0.7\r\n\
         Some_Other: x\r\nX-Custom: kept\r\n\r\n"
    );
    assert_eq!(request(proxy.addr, forged.as_bytes()).status, 200);
    let seen = &up.wait_for(1)[0];
    let head = seen.head.to_ascii_lowercase();
    for gone in [
        "x_",
        "some_other",
        "x-ovn-network-id",
        "forwarded:",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "10.0.0.7",
        "10.0.0.8",
        "i-forged",
        "evil",
        NETWORK,
    ] {
        assert!(
            !head.contains(gone),
            "{gone} reached upstream:\n{}",
            seen.head
        );
    }
    assert_eq!(seen.header_values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header_values("x-neutron-router-id"), [ROUTER]);
    assert_eq!(seen.header_values("x-custom"), ["kept"]);
}

/// AWS refuses a token PUT that passed through a proxy inside the instance; every spelling
/// of the token path is the token path (the core's one normaliser), so none slips past.
fn token_put_through_a_proxy_is_refused_in_every_spelling(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"token");
    let proxy = Proxy::start(rt, &up.path, &[]);
    let cases: &[(&str, &str, u16)] = &[
        ("/latest/api/token", "X-Forwarded-For", 403),
        ("/latest/api/./token", "X-Forwarded-For", 403),
        (
            "http://169.254.169.254/latest/api/token",
            "X-Forwarded-For",
            403,
        ),
        ("/x/../latest/api/token", "X-Forwarded-For", 403),
        ("//latest//api/token/", "X-Forwarded-For", 403),
        ("/latest/api/%74oken", "X-Forwarded-For", 403),
        ("/latest/api/%2e/token?x=1", "X-Forwarded-For", 403),
        ("/latest/api/token", "X_Forwarded_For", 403),
        ("/latest/api/token", "x-forwarded-for", 403),
        ("/latest/api/token#x", "X-Forwarded-For", 400),
        ("/latest/api%2ftoken", "X-Forwarded-For", 400),
    ];
    for (target, xff, want) in cases {
        let req = format!(
            "PUT {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n{xff}: 10.0.0.9\r\n\
             X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n"
        );
        let resp = request(proxy.addr, req.as_bytes());
        assert_eq!(resp.status, *want, "PUT {target} with {xff}: {resp:?}");
    }
    // Without X-Forwarded-For the token PUT goes through, as the normalised target.
    let req = "PUT /latest/api/./token HTTP/1.1\r\nHost: 169.254.169.254\r\n\
               X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(request(proxy.addr, req.as_bytes()).status, 200);
    let seen = up.wait_for(1);
    assert_eq!(
        up.count(),
        1,
        "only the allowed PUT went upstream: {seen:?}"
    );
    assert_eq!(seen[0].path(), "/latest/api/token");
}

fn upstream_sees_the_normalised_target(rt: Runtime) {
    let dir = TempDir::new();
    let up = echo_path(&dir);
    let proxy = Proxy::start(rt, &up.path, &[]);
    for (target, want) in [
        ("/x/../latest//meta-data/./", "/latest/meta-data/"),
        (
            "http://169.254.169.254/openstack/latest/meta_data.json",
            "/openstack/latest/meta_data.json",
        ),
        (
            "/openstack/latest/%6deta_data.json?a=../b",
            "/openstack/latest/meta_data.json?a=../b",
        ),
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        let resp = request(proxy.addr, req.as_bytes());
        assert_eq!(
            (resp.status, resp.body_text().as_str()),
            (200, want),
            "{target}"
        );
    }
}

fn large_response_streams_through(rt: Runtime) {
    const LEN: usize = 10 << 20;
    let body: Arc<Vec<u8>> = Arc::new((0..LEN).map(|i| (i * 7 % 251) as u8).collect());
    let dir = TempDir::new();
    let served = body.clone();
    let up = Upstream::start(dir.join("up.sock"), move |_| {
        Reply::Send(ok_response(&served))
    });
    let proxy = Proxy::start(rt, &up.path, &[]);
    let resp = request(proxy.addr, &get("/big"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), LEN);
    assert_eq!(fnv1a(&resp.body), fnv1a(&body), "content differs");
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn missing_upstream_answers_503_and_keeps_serving(rt: Runtime) {
    let dir = TempDir::new();
    let mut proxy = Proxy::start(rt, &dir.join("nobody.sock"), &[]);
    for _ in 0..2 {
        let resp = request(proxy.addr, &get("/latest/meta-data/"));
        assert_eq!(resp.status, 503, "{resp:?}");
        let ctype = header_values(&resp.head, "content-type");
        assert!(
            ctype.first().is_some_and(|t| t.starts_with("text/plain")),
            "{resp:?}"
        );
        assert!(
            resp.body_text().contains(
                "The remote metadata server is temporarily unavailable. Please try again later."
            ),
            "{resp:?}"
        );
    }
    assert!(proxy.is_running(), "{}", proxy.log());
}

fn silent_upstream_times_out_with_504(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::start(dir.join("up.sock"), |_| Reply::Hang);
    let proxy = Proxy::start(rt, &up.path, &["--timeout-response", "1"]);
    let resp = request(proxy.addr, &get("/slow"));
    assert_eq!(resp.status, 504, "{resp:?}");
}

fn garbage_from_upstream_gives_502(rt: Runtime) {
    let dir = TempDir::new();
    let garbage = b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff garbage\r\n\r\n".to_vec();
    let up = Upstream::start(dir.join("up.sock"), move |_| {
        Reply::SendAndClose(garbage.clone())
    });
    let proxy = Proxy::start(rt, &up.path, &[]);
    let resp = request(proxy.addr, &get("/"));
    assert_eq!(resp.status, 502, "{resp:?}");
}

fn upstream_reset_mid_response_closes_client(rt: Runtime) {
    let dir = TempDir::new();
    let partial = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b".to_vec();
    let up = Upstream::start(dir.join("up.sock"), move |_| {
        Reply::SendAndClose(partial.clone())
    });
    let mut proxy = Proxy::start(rt, &up.path, &[]);
    let mut client = Client::connect(proxy.addr);
    client.send(&get("/")).unwrap();
    // The head went out before the upstream failed: the client must see the connection end
    // early instead of a complete 100-byte body.
    match client.try_response() {
        Ok(resp) => panic!("a truncated body was passed off as complete: {resp:?}"),
        Err(e) => assert!(
            e.kind() != std::io::ErrorKind::WouldBlock,
            "proxy hung: {e}"
        ),
    }
    assert!(proxy.is_running());
}

fn slowloris_gets_408(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"x");
    let proxy = Proxy::start(rt, &up.path, &["--timeout-head", "1"]);
    let mut client = Client::connect(proxy.addr);
    client
        .send(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.2")
        .unwrap();
    let resp = client.response();
    assert_eq!(resp.status, 408, "{resp:?}");
    assert!(client.closed_by_peer());
    assert_eq!(up.count(), 0);
}

fn oversized_head_gets_431(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"x");
    let proxy = Proxy::start(rt, &up.path, &[]);
    let mut client = Client::connect(proxy.addr);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 << 10)
    );
    let _ = client.send(big.as_bytes());
    let resp = client.response();
    assert_eq!(resp.status, 431, "{resp:?}");
    assert_eq!(up.count(), 0);
}

fn oversized_body_gets_413(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"x");
    let proxy = Proxy::start(rt, &up.path, &[]);
    let mut client = Client::connect(proxy.addr);
    let len = 64 * 1024 + 1;
    let head = format!(
        "POST /openstack/latest/password HTTP/1.1\r\nHost: h\r\nContent-Length: {len}\r\n\r\n"
    );
    let _ = client.send(&[head.as_bytes(), &vec![b'p'; len]].concat());
    let resp = client.response();
    assert_eq!(resp.status, 413, "{resp:?}");
}

fn content_length_with_chunked_gets_400(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"x");
    let proxy = Proxy::start(rt, &up.path, &[]);
    let smuggle = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\
                   Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n";
    let mut client = Client::connect(proxy.addr);
    let resp = client.exchange(smuggle.as_bytes());
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(client.closed_by_peer());
    assert_eq!(up.count(), 0);
}

fn legacy_command_line_starts_and_writes_pid_file(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("mp.sock"), b"legacy");
    let (pid_file, state) = (dir.join("router.pid"), dir.join("state"));
    let upstream = up.path.to_str().unwrap().to_owned();
    let mut proxy = Proxy::start_with(rt, |port| {
        let mut args = vec!["ns-proxy".to_owned()];
        args.extend([
            format!("--pid_file={}", pid_file.display()),
            format!("--metadata_proxy_socket={upstream}"),
            format!("--router_id={ROUTER}"),
            format!("--state_path={}", state.display()),
            format!("--metadata_port={port}"),
            "--verbose".to_owned(),
            "--log-file=ns-proxy.log".to_owned(),
            format!("--log-dir={}", dir.join("").display()),
            "--metadata_proxy_watch_log=false".to_owned(),
        ]);
        args
    });
    // The listener accepts (in the kernel) before the pid file is written: wait for it.
    assert!(
        eventually(|| pid_file.exists()),
        "no pid file: {}",
        proxy.log()
    );
    let pid = fs::read_to_string(&pid_file).unwrap();
    assert_eq!(pid.trim(), proxy.pid().to_string());
    let resp = request(proxy.addr, &get("/2009-04-04/meta-data/"));
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"legacy"[..]));
    assert_eq!(
        up.wait_for(1)[0].header_values("x-neutron-router-id"),
        [ROUTER]
    );
    let log = || fs::read_to_string(dir.join("ns-proxy.log")).unwrap_or_default();
    assert!(eventually(|| log().contains(ROUTER)), "{}", log());
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.wait_exit().code(), Some(0));
    assert!(!pid_file.exists(), "pid file left behind");
}

fn router_and_network_id_together_exit_2(rt: Runtime) {
    let runtime = format!("--runtime={}", rt.name());
    let args = [
        "ns-proxy",
        &runtime,
        "--router-id",
        ROUTER,
        "--network-id",
        NETWORK,
    ];
    let (status, _, stderr) = run_binary(&args);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--router-id") && stderr.contains("--network-id"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

fn sigterm_finishes_in_flight_request_then_exits_0(rt: Runtime) {
    let dir = TempDir::new();
    let gate = Arc::new(Gate::default());
    let held = gate.clone();
    let up = Upstream::start(dir.join("up.sock"), move |_| {
        Reply::AfterGate(held.clone(), ok_response(b"worth the wait"))
    });
    let mut proxy = Proxy::start(rt, &up.path, &[]);
    let mut client = Client::connect(proxy.addr);
    client.send(&get("/latest/meta-data/hostname")).unwrap();
    up.wait_for(1);
    proxy.signal(libc::SIGTERM);
    // Draining closes the listener: wait (bounded) until connections are refused.
    let refused = || std::net::TcpStream::connect(proxy.addr).is_err();
    assert!(eventually(refused), "still accepting after SIGTERM");
    assert!(proxy.is_running(), "exited before its request finished");
    gate.open();
    let resp = client.response();
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, &b"worth the wait"[..]),
        "{resp:?}"
    );
    assert_eq!(proxy.wait_exit().code(), Some(0), "{}", proxy.log());
}

/// Starts a proxy whose upstream never answers and parks one request in it.
fn proxy_with_stuck_request(
    rt: Runtime,
    dir: &TempDir,
    extra: &[&str],
) -> (Proxy, Client, Upstream) {
    let up = Upstream::start(dir.join("up.sock"), |_| Reply::Hang);
    let proxy = Proxy::start(rt, &up.path, extra);
    let mut client = Client::connect(proxy.addr);
    client.send(&get("/stuck")).unwrap();
    up.wait_for(1);
    (proxy, client, up)
}

fn drain_timeout_bounds_shutdown(rt: Runtime) {
    let dir = TempDir::new();
    let (mut proxy, _client, _up) = proxy_with_stuck_request(rt, &dir, &["--drain-timeout", "1"]);
    let start = std::time::Instant::now();
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.wait_exit().code(), Some(0), "{}", proxy.log());
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(900),
        "did not wait for the request"
    );
}

fn second_stop_signal_exits_at_once(rt: Runtime) {
    let dir = TempDir::new();
    // The drain deadline is beyond WAIT, so only the second signal can end the process in time.
    let (mut proxy, _client, _up) = proxy_with_stuck_request(rt, &dir, &["--drain-timeout", "600"]);
    proxy.signal(libc::SIGTERM);
    proxy.signal(libc::SIGINT);
    assert_eq!(proxy.wait_exit().code(), Some(0), "{}", proxy.log());
}

fn sighup_only_logs(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"still here");
    let mut proxy = Proxy::start(rt, &up.path, &[]);
    // A served request proves the loop (and its signal handlers) is up, not just the socket.
    assert_eq!(request(proxy.addr, &get("/")).status, 200);
    proxy.signal(libc::SIGHUP);
    proxy.wait_for_log("SIGHUP");
    assert_eq!(request(proxy.addr, &get("/")).body, b"still here");
    assert!(proxy.is_running());
}

fn max_conns_flag_limits_connections(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let proxy = Proxy::start(rt, &up.path, &["--max-conns", "1"]);
    let mut first = Client::connect(proxy.addr);
    assert_eq!(first.exchange(&get("/")).status, 200); // accepted, and now idle but open
    let resp = request(proxy.addr, &get("/"));
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(first.exchange(&get("/")).status, 200);
}

fn rate_limit_flag_answers_429(rt: Runtime) {
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let proxy = Proxy::start(rt, &up.path, &["--rate-limit", "1/60,5/60"]);
    let mut client = Client::connect(proxy.addr);
    assert_eq!(client.exchange(&get("/")).status, 200);
    let resp = client.exchange(&get("/"));
    assert_eq!(resp.status, 429, "{resp:?}");
    assert_eq!(up.count(), 1);
}

fn dual_stack_listener_reports_ipv4_peer(rt: Runtime) {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("skipped: no IPv6 on this machine");
        return;
    }
    let dir = TempDir::new();
    let up = Upstream::ok(dir.join("up.sock"), b"ok");
    let upstream = up.path.to_str().unwrap().to_owned();
    let proxy = Proxy::start_with(rt, |port| {
        let listen = format!("--listen=[::]:{port}");
        [
            "ns-proxy",
            &listen,
            "--router-id",
            ROUTER,
            "--upstream-socket",
            &upstream,
        ]
        .map(String::from)
        .to_vec()
    });
    assert_eq!(request(proxy.addr, &get("/")).status, 200);
    assert_eq!(
        up.wait_for(1)[0].header_values("x-forwarded-for"),
        ["127.0.0.1"]
    );
}

fn help_version_and_usage_errors(rt: Runtime) {
    let (status, out, _) = run_binary(&["--version"]);
    assert!(status.success() && out.contains(rt.name()), "{out}");
    let flags = [
        "--router-id",
        "--listen",
        "--upstream-socket",
        "--rate-limit",
        "--metadata_port",
    ];
    assert_help_mentions(&["ns-proxy", "--help"], &flags);
    // A role without its required flags is a usage error (`demo` needs none: not run here).
    let (status, _, err) = run_binary(&["server"]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("--instances"), "{err}");
}
