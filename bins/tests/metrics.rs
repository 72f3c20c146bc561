//! `--metrics-listen`: the Prometheus endpoint of the real binary, after real requests
//! (issue 8's "curl on the metrics port shows non-zero request counters after a demo request").

mod common;

use std::cell::Cell;
use std::fs;
use std::net::{SocketAddr, TcpStream};

use common::*;

runtime_tests! {
    demo_counts_a_request_in_every_role,
    ns_proxy_counts_a_refused_upstream,
    agent_workers_share_one_set_of_counters,
}

/// Starts `args(port)` plus `--metrics-listen` on a free port; returns the role's listener
/// (as [`Proxy::start_with`] does) and the metrics address, once both accept.
fn start_with_metrics(rt: Runtime, args: impl Fn(u16) -> Vec<String>) -> (Proxy, SocketAddr) {
    let metrics_port = Cell::new(0);
    let proxy = Proxy::start_with(rt, |port| {
        metrics_port.set(free_port());
        let mut all = args(port);
        all.push(format!("--metrics-listen=127.0.0.1:{}", metrics_port.get()));
        all
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], metrics_port.get()));
    let accepts = eventually(|| TcpStream::connect(addr).is_ok());
    assert!(accepts, "the metrics port never accepted: {}", proxy.log());
    (proxy, addr)
}

/// GET /metrics: the exposition text.
fn scrape(addr: SocketAddr) -> String {
    let resp = request(addr, &get("/metrics"));
    assert_eq!(resp.status, 200, "{resp:?}");
    let ctype = header_values(&resp.head, "content-type");
    assert_eq!(
        ctype,
        ["text/plain; version=0.0.4; charset=utf-8"],
        "{}",
        resp.head
    );
    resp.body_text()
}

/// The value of one series (`name{labels}` as rendered) in `text`.
fn value(text: &str, series: &str) -> u64 {
    let found = text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '));
    let found = found.unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    // Whole counts only: the tests read no `_sum`.
    found
        .parse()
        .unwrap_or_else(|_| panic!("{series} = {found:?}"))
}

fn demo_counts_a_request_in_every_role(rt: Runtime) {
    let (demo, metrics) = start_with_metrics(rt, |port| {
        vec!["demo".to_owned(), format!("--listen=127.0.0.1:{port}")]
    });
    // A keep-alive client stays connected while the metrics are read.
    let mut client = Client::connect(demo.addr);
    let resp = client.exchange(&get("/latest/meta-data/instance-id"));
    assert_eq!(resp.status, 200, "{resp:?}");

    let text = scrape(metrics);
    for role in ["ns-proxy", "agent", "server"] {
        let requests = format!("mdproxy_requests_total{{role=\"{role}\",code=\"200\"}}");
        assert!(value(&text, &requests) >= 1, "{requests}:\n{text}");
        let count = format!("mdproxy_request_duration_seconds_count{{role=\"{role}\"}}");
        assert!(value(&text, &count) >= 1, "{count}:\n{text}");
        let inf = format!("mdproxy_request_duration_seconds_bucket{{role=\"{role}\",le=\"+Inf\"}}");
        assert_eq!(value(&text, &inf), value(&text, &count), "{text}");
        let accepted = format!("mdproxy_connections_total{{role=\"{role}\"}}");
        assert!(value(&text, &accepted) >= 1, "{accepted}:\n{text}");
    }
    // This client's connection, and the ns-proxy's pooled one to the agent.
    assert!(value(&text, "mdproxy_open_connections{role=\"ns-proxy\"}") >= 1);
    assert!(value(&text, "mdproxy_open_connections{role=\"agent\"}") >= 1);
    assert!(text.contains("# TYPE mdproxy_request_duration_seconds histogram\n"));
    assert!(text.contains("# TYPE mdproxy_open_connections gauge\n"));

    // Counters only grow; scrapes themselves are not counted.
    let again = client.exchange(&get("/latest/meta-data/instance-id"));
    assert_eq!(again.status, 200);
    let later = scrape(metrics);
    let series = "mdproxy_requests_total{role=\"ns-proxy\",code=\"200\"}";
    assert_eq!(value(&later, series), value(&text, series) + 1, "{later}");
    assert!(!later.contains("role=\"metrics\""), "{later}");

    let resp = request(metrics, &get("/nothing-here"));
    assert_eq!(resp.status, 404, "{resp:?}");
    let post = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(request(metrics, post).status, 405);
}

fn ns_proxy_counts_a_refused_upstream(rt: Runtime) {
    let dir = TempDir::new();
    let missing = dir.join("no-agent.sock");
    let (proxy, metrics) = start_with_metrics(rt, |port| {
        vec![
            "ns-proxy".to_owned(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--router-id={ROUTER}"),
            format!("--upstream-socket={}", missing.display()),
        ]
    });
    let resp = request(proxy.addr, &get("/latest/meta-data/"));
    assert_eq!(resp.status, 503, "{resp:?}");
    let text = scrape(metrics);
    let refused = "mdproxy_upstream_errors_total{role=\"ns-proxy\",kind=\"refused\"}";
    assert!(value(&text, refused) >= 1, "{text}");
    let code = "mdproxy_requests_total{role=\"ns-proxy\",code=\"503\"}";
    assert!(value(&text, code) >= 1, "{text}");
    // Only this process's role is reported.
    assert!(!text.contains("role=\"agent\""), "{text}");
}

fn agent_workers_share_one_set_of_counters(rt: Runtime) {
    let server = Upstream::start_tcp(|_| Reply::Send(ok_response(b"i-1")));
    let dir = TempDir::new();
    let (socket, map, secret) = (dir.join("a.sock"), dir.join("map"), dir.join("secret"));
    let ports = format!(
        "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NETWORK}\"]\n\n[[port]]\n\
         network = \"{NETWORK}\"\nip = \"10.0.0.5\"\ndevice_id = \"i-1\"\nproject_id = \"p\"\n"
    );
    fs::write(&map, ports).unwrap();
    fs::write(&secret, "s3cr3t\n").unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let agent = Agent::start(
        rt,
        &socket,
        &[
            format!("--shared-secret-file={}", secret.display()),
            format!("--static-map={}", map.display()),
            format!("--metadata-url={}", server.url()),
            "--workers=3".to_owned(),
            format!("--metrics-listen={metrics}"),
        ],
    );
    assert!(
        eventually(|| TcpStream::connect(metrics).is_ok()),
        "{}",
        agent.log()
    );
    let proxied = format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\n\
         X-Neutron-Router-ID: {ROUTER}\r\n\r\n"
    );
    const N: u64 = 12;
    for _ in 0..N {
        assert_eq!(request_unix(&socket, proxied.as_bytes()).status, 200);
    }
    let text = scrape(metrics);
    // However the kernel spread the connections over the workers, they add up in one place
    let ok = "mdproxy_requests_total{role=\"agent\",code=\"200\"}";
    assert_eq!(value(&text, ok), N, "{text}");
    // (and the harness's own connection, which checked that the agent listens).
    let accepted = value(&text, "mdproxy_connections_total{role=\"agent\"}");
    assert!(accepted >= N, "{text}");
}

#[test]
fn metrics_flag_is_in_every_role_help() {
    for role in ["ns-proxy", "agent", "server", "demo"] {
        assert_help_mentions(&[role, "--help"], &["--metrics-listen ADDR:PORT"]);
    }
    let (status, _, err) = run_binary(&["demo", "--metrics-listen=localhost"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--metrics-listen: \"localhost\" is not ADDR:PORT"),
        "{err}"
    );
}
