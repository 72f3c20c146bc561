//! Metrics, moved by simulated exchanges of each role and served by the metrics role.

use std::sync::Arc;
use std::time::Duration;

use mdproxy_core::config::{Backend, EndpointConfig, Role, Timeouts};
use mdproxy_core::listener::ListenerId;
use mdproxy_core::lookup::{HttpTarget, NeutronConfig};
use mdproxy_core::metrics::Metrics;
use mdproxy_core::socket::Target;
use mdproxy_core::testing::sim::roles::{
    self, agent_socket, metadata_addr, ns_proxy_addr, NET, ROUTER,
};
use mdproxy_core::testing::sim::{Answer, Hop, HttpServer, Message, World};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
const GET: &[u8] = b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";

fn counted(role: Role, metrics: &Arc<Metrics>) -> EndpointConfig {
    let mut cfg = roles::endpoint(role);
    cfg.metrics = Some(metrics.clone());
    cfg
}

/// A counted ns-proxy in front of an agent answering as `agent` says.
fn ns_proxy(metrics: &Arc<Metrics>, agent: impl FnMut(usize, &Message) -> Answer + 'static) -> Hop {
    let cfg = counted(Role::NsProxy(roles::ns_proxy()), metrics);
    Hop::new(cfg, ns_proxy_addr(), agent_socket(), agent)
}

/// The value of one series (name and labels as rendered), or `None` if it is not rendered.
fn value(metrics: &Metrics, series: &str) -> Option<String> {
    let mut text = String::new();
    metrics.render(mdproxy_core::testing::epoch(), &mut text);
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
    let mut s = ns_proxy(&metrics, |_, _| {
        Answer::Later(Duration::from_millis(3), OK.to_vec())
    });
    s.client().hold_open = true;
    s.w.settle();
    assert_eq!(ns(&metrics, "mdproxy_open_connections", ""), "1");
    s.exchange(GET).assert_is(200, "hello");

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

    s.client().close();
    s.w.settle();
    assert!(s.accepted(0).closed);
    assert_eq!(ns(&metrics, "mdproxy_open_connections", ""), "0");
}

#[test]
fn upstream_failures_count_by_kind() {
    let metrics = Arc::new(Metrics::new());
    let mut s = ns_proxy(&metrics, |n, _| {
        if n == 0 {
            Answer::Respond(b"HTTP/1.1 banana\r\n\r\n".to_vec())
        } else {
            Answer::Silence
        }
    });
    let kind = |kind: &str| {
        let labels = format!(",kind=\"{kind}\"");
        ns(&metrics, "mdproxy_upstream_errors_total", &labels)
    };
    s.w.unlisten(&agent_socket());
    assert_eq!(s.exchange(GET).status(), 503);
    s.w.listen(agent_socket(), s.server);
    assert_eq!(s.exchange(GET).status(), 502);
    assert_eq!(s.exchange(GET).status(), 504);
    assert_eq!(s.w.elapsed(), Timeouts::default().response);

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
    let mut s = ns_proxy(&metrics, |_, _| Answer::Respond(OK.to_vec()));
    assert_eq!(
        s.exchange(&b"GET / HTTP/1.1\r\nbad header\r\n\r\n"[..])
            .status(),
        400
    );
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

fn json(body: &str) -> Answer {
    Answer::Later(
        Duration::from_secs(1),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[test]
fn agent_lookups_count_cache_results_and_backend_requests() {
    let metrics = Arc::new(Metrics::new());
    let url = HttpTarget::parse_ip_url("http://127.0.0.1:9696").expect("url");
    let backend = Backend::Neutron(NeutronConfig::new(Some(url), None));
    let cfg = counted(Role::Agent(roles::agent(backend)), &metrics);
    let mut w = World::new();
    w.endpoint_on(agent_socket(), cfg);
    w.peer_on(metadata_addr(), HttpServer::answering(OK));
    let neutron_addr = Target::Tcp(([127, 0, 0, 1], 9696).into());
    let neutron = w.peer_on(
        neutron_addr.clone(),
        HttpServer::new(|n, _| {
            if n == 0 {
                json(&format!(r#"{{"ports": [{{"network_id": "{NET}"}}]}}"#))
            } else {
                json(r#"{"ports": [{"device_id": "inst-1", "project_id": "p1"}]}"#)
            }
        }),
    );
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

    let (a, b) = (
        w.add_client("127.0.0.1", agent_socket()),
        w.add_client("127.0.0.1", agent_socket()),
    );
    for c in [a, b] {
        w.client_mut(c).send(request.clone());
    }
    w.await_requests(neutron, 1);
    assert_eq!(["miss", "coalesced", "hit"].map(cache), ["1", "1", "0"]);
    w.response(a, 0).assert_is(200, "hello");
    w.response(b, 0).assert_is(200, "hello");
    let c = w.add_client("127.0.0.1", agent_socket());
    w.exchange(c, request.clone()).assert_is(200, "hello");
    assert_eq!(["miss", "coalesced", "hit"].map(cache), ["1", "1", "1"]);
    let backend = |b: &str| {
        let labels = format!(",backend=\"{b}\"");
        agent_value("mdproxy_backend_requests_total", &labels)
    };
    assert_eq!(["neutron", "keystone"].map(backend), ["2", "0"]);
    assert_eq!(agent_value("mdproxy_backend_failures_total", ""), "0");

    // A lookup Neutron cannot answer fails (503) and counts as a backend failure.
    w.unlisten(&neutron_addr);
    let d = w.add_client("127.0.0.1", agent_socket());
    let resp = w.exchange(d, request.replace("10.0.0.5", "10.0.0.6"));
    assert_eq!(resp.status(), 503, "{}", resp.raw);
    assert_eq!(agent_value("mdproxy_backend_failures_total", ""), "1");
    assert_eq!(agent_value("mdproxy_requests_total", ",code=\"503\""), "1");
}

#[test]
fn the_admin_listener_serves_the_exposition() {
    let metrics = after_a_bad_request();
    let mut w = World::new();
    let target = Target::Tcp(([127, 0, 0, 1], 9100).into());
    let mut cfg = counted(Role::NsProxy(roles::ns_proxy()), &metrics);
    cfg.admin = Some(ListenerId(7));
    let ep = w.endpoint_on(target.clone(), cfg);
    w.scope_target(target.clone(), ListenerId(7));
    let c = w.add_client("127.0.0.1", target);
    let resp = w.exchange(c, &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    assert_eq!(resp.status(), 200, "{}", resp.raw);
    assert_eq!(
        resp.header("Content-Type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        resp.text().starts_with("# HELP mdproxy_requests_total "),
        "{}",
        resp.raw
    );
    assert!(
        resp.text()
            .contains("\nmdproxy_requests_total{role=\"ns-proxy\",code=\"400\"} 1\n"),
        "{}",
        resp.raw
    );

    // Keep-alive: more requests on the same connection.
    assert_eq!(
        w.exchange(c, &b"GET /?x=1 HTTP/1.1\r\n\r\n"[..]).status(),
        200
    );
    let head = w.exchange(c, &b"HEAD /metrics HTTP/1.1\r\n\r\n"[..]);
    assert!(
        head.status() == 200 && head.raw.ends_with("\r\n\r\n"),
        "{}",
        head.raw
    );
    assert_eq!(
        w.exchange(c, &b"GET /metricsx HTTP/1.1\r\n\r\n"[..])
            .status(),
        404
    );
    let resp = w.exchange(
        c,
        &b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"[..],
    );
    assert_eq!(resp.status(), 405, "{}", resp.raw);
    assert_eq!(resp.header("Allow"), "GET, HEAD");
    assert_eq!(w.client(c).connections, 1);
    // Scrapes are not counted (the ns-proxy's one connection is the bad request's), nor
    // forwarded anywhere.
    assert!(w.links_from(ep).is_empty());
    assert_eq!(
        value(&metrics, "mdproxy_connections_total{role=\"ns-proxy\"}").as_deref(),
        Some("1")
    );
}
