//! Metrics, moved by simulated exchanges of each role and served by the metrics role.

use std::sync::Arc;
use std::time::Duration;

use mdproxy_core::config::{EndpointConfig, NsProxyConfig, Role, Timeouts};
use mdproxy_core::http::Limits;
use mdproxy_core::metrics::Metrics;
use mdproxy_core::scope::{Scope, Uuid};
use mdproxy_core::socket::{ConnectError, Input, SockId, Target};

mod sim;
use sim::{neutron_agent, Sim, OK};

const ROUTER: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";
const NET: &str = "9c2b1a4e-0000-4000-8000-000000000001";
const GET: &[u8] = b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";

fn sim(role: Role, metrics: &Arc<Metrics>) -> Sim {
    Sim::new(EndpointConfig {
        role,
        limits: Limits::default(),
        conns: Default::default(),
        timeouts: Timeouts::default(),
        tls: Default::default(),
        metrics: Some(metrics.clone()),
    })
}

fn ns_proxy(metrics: &Arc<Metrics>) -> Sim {
    let ns = NsProxyConfig {
        scope: Scope::Router(Uuid::parse(ROUTER.as_bytes()).expect("uuid")),
        upstream: Target::Unix("/tmp/agent.sock".into()),
        rate_limit: None,
    };
    sim(Role::NsProxy(ns), metrics)
}

/// The value of one series (name and labels as rendered), or `None` if it is not rendered.
fn value(metrics: &Metrics, series: &str) -> Option<String> {
    let mut text = String::new();
    metrics.render(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_owned)
}

fn ns(metrics: &Metrics, series: &str, labels: &str) -> String {
    let series = format!("{series}{{role=\"ns-proxy\"{labels}}}");
    value(metrics, &series).unwrap_or_else(|| panic!("no {series}"))
}

#[test]
fn an_exchange_counts_its_status_latency_and_connection() {
    let metrics = Arc::new(Metrics::new());
    let mut s = ns_proxy(&metrics);
    let c = s.accept();
    assert_eq!(ns(&metrics, "mdproxy_open_connections", ""), "1");
    s.send(c, GET);
    let up = s.connect_ok();
    s.advance(Duration::from_millis(3));
    s.send(up, OK);
    assert!(s.take(c).starts_with("HTTP/1.1 200 OK\r\n"));

    assert_eq!(ns(&metrics, "mdproxy_requests_total", ",code=\"200\""), "1");
    let bucket = |le: &str| {
        let labels = format!(",le=\"{le}\"");
        ns(&metrics, "mdproxy_request_duration_seconds_bucket", &labels)
    };
    assert_eq!(["0.0025", "0.005", "+Inf"].map(bucket), ["0", "1", "1"]);
    assert_eq!(
        ns(&metrics, "mdproxy_request_duration_seconds_count", ""),
        "1"
    );
    assert_eq!(
        ns(&metrics, "mdproxy_request_duration_seconds_sum", ""),
        "0.003000000"
    );
    assert_eq!(ns(&metrics, "mdproxy_connections_total", ""), "1");
    // Only the roles this process runs are rendered.
    assert_eq!(
        value(&metrics, "mdproxy_connections_total{role=\"agent\"}"),
        None
    );

    s.input(c, Input::Eof);
    assert!(s.closed.contains(&c));
    assert_eq!(ns(&metrics, "mdproxy_open_connections", ""), "0");
}

#[test]
fn upstream_failures_count_by_kind() {
    let metrics = Arc::new(Metrics::new());
    let mut s = ns_proxy(&metrics);
    let kind = |kind: &str| {
        let labels = format!(",kind=\"{kind}\"");
        ns(&metrics, "mdproxy_upstream_errors_total", &labels)
    };
    let c = s.accept();

    s.send(c, GET);
    let up = *s.connects.last().unwrap();
    s.input(up, Input::ConnectFailed(ConnectError::Refused));
    assert!(s.take(c).starts_with("HTTP/1.1 503 "));

    s.send(c, GET);
    let up = s.connect_ok();
    s.send(up, b"HTTP/1.1 banana\r\n\r\n");
    assert!(s.take(c).starts_with("HTTP/1.1 502 "));

    s.send(c, GET);
    s.connect_ok();
    s.advance(Timeouts::default().response);
    assert!(s.take(c).starts_with("HTTP/1.1 504 "));

    assert_eq!(
        ["refused", "malformed", "timeout", "reset", "tls"].map(kind),
        ["1", "1", "1", "0", "0"]
    );
    for code in ["502", "503", "504"] {
        let labels = format!(",code=\"{code}\"");
        assert_eq!(ns(&metrics, "mdproxy_requests_total", &labels), "1");
    }
}

/// The metrics of an ns-proxy that answered one malformed request (400).
fn after_a_bad_request() -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new());
    let mut s = ns_proxy(&metrics);
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.1\r\nbad header\r\n\r\n");
    assert!(s.take(c).starts_with("HTTP/1.1 400 "));
    metrics
}

#[test]
fn answers_without_a_request_count_by_status_only() {
    let metrics = after_a_bad_request();
    assert_eq!(ns(&metrics, "mdproxy_requests_total", ",code=\"400\""), "1");
    assert_eq!(
        ns(&metrics, "mdproxy_request_duration_seconds_count", ""),
        "0"
    );
}

fn json(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Connects the newest pending socket and returns it.
fn open_newest(s: &mut Sim) -> SockId {
    let sock = *s.connects.last().expect("a connect");
    s.input(sock, Input::Connected);
    sock
}

#[test]
fn agent_lookups_count_cache_results_and_backend_requests() {
    let metrics = Arc::new(Metrics::new());
    let mut s = sim(Role::Agent(neutron_agent()), &metrics);
    let request = format!(
        "GET /latest/meta-data/ HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: {ROUTER}\r\n\r\n"
    );
    let agent_value = |series: &str, labels: &str| {
        let series = format!("{series}{{role=\"agent\"{labels}}}");
        value(&metrics, &series).unwrap_or_else(|| panic!("no {series}"))
    };
    let cache = |result: &str| {
        let labels = format!(",result=\"{result}\"");
        agent_value("mdproxy_cache_lookups_total", &labels)
    };

    let (a, b) = (s.ep.accept(s.now, None), s.ep.accept(s.now, None));
    s.drain();
    s.send(a, request.as_bytes());
    s.send(b, request.as_bytes());
    assert_eq!(["miss", "coalesced", "hit"].map(cache), ["1", "1", "0"]);
    let routers = open_newest(&mut s);
    s.send(
        routers,
        &json(&format!(r#"{{"ports": [{{"network_id": "{NET}"}}]}}"#)),
    );
    let ports = open_newest(&mut s);
    s.send(
        ports,
        &json(r#"{"ports": [{"device_id": "inst-1", "project_id": "p1"}]}"#),
    );
    let c = s.ep.accept(s.now, None);
    s.drain();
    s.send(c, request.as_bytes());
    assert_eq!(["miss", "coalesced", "hit"].map(cache), ["1", "1", "1"]);
    let backend = |b: &str| {
        let labels = format!(",backend=\"{b}\"");
        agent_value("mdproxy_backend_requests_total", &labels)
    };
    assert_eq!(["neutron", "keystone"].map(backend), ["2", "0"]);
    assert_eq!(agent_value("mdproxy_backend_failures_total", ""), "0");

    // A lookup Neutron cannot answer fails (503) and counts as a backend failure.
    let other = request.replace("10.0.0.5", "10.0.0.6");
    let d = s.ep.accept(s.now, None);
    s.drain();
    s.send(d, other.as_bytes());
    let ports = *s.connects.last().unwrap();
    s.input(ports, Input::ConnectFailed(ConnectError::Refused));
    assert!(s.take(d).starts_with("HTTP/1.1 503 "));
    assert_eq!(agent_value("mdproxy_backend_failures_total", ""), "1");
    assert_eq!(agent_value("mdproxy_requests_total", ",code=\"503\""), "1");
}

#[test]
fn the_metrics_role_serves_the_exposition() {
    let metrics = after_a_bad_request();
    let mut s = Sim::with_role(Role::Metrics(metrics.clone()), Timeouts::default());
    let c = s.accept();
    s.send(c, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let resp = s.take(c);
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(
        resp.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{resp}"
    );
    assert!(
        resp.contains("\r\n\r\n# HELP mdproxy_requests_total "),
        "{resp}"
    );
    assert!(
        resp.contains("\nmdproxy_requests_total{role=\"ns-proxy\",code=\"400\"} 1\n"),
        "{resp}"
    );

    // Keep-alive: more requests on the same connection.
    s.send(c, b"GET /?x=1 HTTP/1.1\r\n\r\n");
    assert!(s.take(c).starts_with("HTTP/1.1 200 OK\r\n"));
    s.send(c, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    let head = s.take(c);
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    s.send(c, b"GET /metricsx HTTP/1.1\r\n\r\n");
    assert!(s.take(c).starts_with("HTTP/1.1 404 "));
    s.send(c, b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
    let resp = s.take(c);
    assert!(resp.starts_with("HTTP/1.1 405 "), "{resp}");
    assert!(resp.contains("Allow: GET, HEAD\r\n"), "{resp}");
    // Scrapes are not counted: the metrics role has no series of its own.
    assert!(s.connects.is_empty());
    assert_eq!(
        value(&metrics, "mdproxy_connections_total{role=\"ns-proxy\"}").as_deref(),
        Some("1")
    );
}
