//! The Neutron lookup client driven by a scripted fake runtime: every request it writes is
//! parsed and checked, every answer is a canned HTTP response, and time is simulated.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mdproxy_core::lookup::{
    BackendStats, ClientAction, ClientEvent, ExchangeError, HttpTarget, KeystoneAuth, LookupError,
    NeutronClient, NeutronConfig, ReqId,
};
use mdproxy_core::scope::{Instance, LookupKey, Scope, Uuid};
use mdproxy_core::socket::{ConnectError, Input, Target};

const ROUTER: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";
const NET1: &str = "0d2c7a1e-7b6f-4c3d-8e9f-a0b1c2d3e4f5";
const NET2: &str = "9e8d7c6b-5a49-4382-b1a0-f9e8d7c6b5a4";
const INSTANCE: &str = "3f2e1d0c-b9a8-4776-a5b4-c3d2e1f0a9b8";
const PROJECT: &str = "c0ffee00c0ffee00c0ffee00c0ffee00";
const TOKEN: &str = "gAAAAABtoken-1";

/// The counters after `keystone_auths` authentications and `neutron_requests` Neutron requests.
fn stats(keystone_auths: u64, neutron_requests: u64) -> BackendStats {
    BackendStats {
        keystone_auths,
        neutron_requests,
    }
}

const KEYSTONE: &str = "10.0.0.1:5000";
const NEUTRON: &str = "10.0.0.9:9696";

fn uuid(s: &str) -> Uuid {
    Uuid::parse(s.as_bytes()).expect("uuid")
}

fn router_key(ip: &str) -> LookupKey {
    LookupKey {
        scope: Scope::Router(uuid(ROUTER)),
        ip: ip.parse().expect("ip"),
    }
}

fn network_key(ip: &str) -> LookupKey {
    LookupKey {
        scope: Scope::Network(uuid(NET1)),
        ip: ip.parse().expect("ip"),
    }
}

fn instance() -> Option<Instance> {
    Some(Instance {
        instance_id: INSTANCE.into(),
        project_id: PROJECT.into(),
    })
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// Keystone at `http://10.0.0.1:5000/identity`, Neutron from the catalog.
fn keystone_cfg() -> NeutronConfig {
    NeutronConfig::new(
        None,
        Some(KeystoneAuth {
            endpoint: HttpTarget::parse_ip_url("http://10.0.0.1:5000/identity").expect("url"),
            username: "neutron".into(),
            password: "p4ss".into(),
            project_name: "service".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
        }),
    )
}

/// No authentication, Neutron at `http://10.0.0.9:9696`.
fn noauth_cfg() -> NeutronConfig {
    NeutronConfig::new(
        Some(HttpTarget::parse_ip_url("http://10.0.0.9:9696").expect("url")),
        None,
    )
}

/// A request as the client wrote it.
#[derive(Debug)]
struct Req {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        let mut all = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = all.next().map(|(_, v)| v.as_str());
        assert!(all.next().is_none(), "duplicate {name}");
        first
    }

    fn query_pairs(&self) -> Vec<(&str, &str)> {
        self.query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("hex");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            assert!(
                b[i].is_ascii_alphanumeric() || b"-._~".contains(&b[i]),
                "{s}"
            );
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// Parses one complete request (head with CRLF endings, body by Content-Length).
fn parse_request(raw: &[u8]) -> Req {
    let text = std::str::from_utf8(raw).expect("ascii request");
    let (head, body) = text.split_once("\r\n\r\n").expect("complete head");
    let mut lines = head.split("\r\n");
    let line = lines.next().expect("request line");
    let mut parts = line.split(' ');
    let (method, target, version) = (
        parts.next().expect("method"),
        parts.next().expect("target"),
        parts.next().expect("version"),
    );
    assert!(parts.next().is_none(), "{line}");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(": ").expect("field line");
            (n.to_owned(), v.to_owned())
        })
        .collect();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let req = Req {
        method: method.into(),
        path: path.into(),
        query,
        version: version.into(),
        headers,
        body: body.as_bytes().to_vec(),
    };
    let len: usize = req
        .header("Content-Length")
        .map_or(0, |v| v.parse().expect("CL"));
    assert_eq!(req.body.len(), len, "body length");
    req
}

/// A canned response, `Content-Length` or chunked (in 7-byte chunks).
fn response(status: &str, extra: &[(&str, &str)], body: &str, chunked: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\n");
    for (n, v) in extra {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if chunked {
        out.push_str("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        for piece in body.as_bytes().chunks(7) {
            out.push_str(&format!("{:x}\r\n", piece.len()));
            out.push_str(std::str::from_utf8(piece).expect("ascii body"));
            out.push_str("\r\n");
        }
        out.push_str("0\r\n\r\n");
    } else {
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
    }
    out.into_bytes()
}

fn ports_json(ports: &[(&str, Option<&str>, Option<&str>)]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|(dev, project, tenant)| {
            let mut s = format!(r#"{{"device_id": "{dev}""#);
            if let Some(p) = project {
                s.push_str(&format!(r#", "project_id": "{p}""#));
            }
            if let Some(t) = tenant {
                s.push_str(&format!(r#", "tenant_id": "{t}""#));
            }
            s.push('}');
            s
        })
        .collect();
    format!(r#"{{"ports": [{}]}}"#, items.join(", "))
}

fn networks_json(nets: &[&str]) -> String {
    let items: Vec<String> = nets
        .iter()
        .map(|n| format!(r#"{{"network_id": "{n}"}}"#))
        .collect();
    format!(r#"{{"ports": [{}]}}"#, items.join(", "))
}

/// Keystone's 201 with a token living `lifetime` seconds and a catalog whose public network
/// endpoint is `neutron_url`.
fn keystone_201(token: &str, lifetime: u64, neutron_url: &str) -> Vec<u8> {
    let issued = 1_795_651_199 - 86_400; // 2026-11-24T23:59:59Z
    let t = |secs: u64| {
        let (d, s) = (secs / 86_400, secs % 86_400);
        // 2026-11-24 is day 20_781 since 1970; only days 24..=30 of November occur here.
        let day = 24 + (d - 20_781);
        format!(
            "2026-11-{day:02}T{:02}:{:02}:{:02}.000000Z",
            s / 3600,
            s % 3600 / 60,
            s % 60
        )
    };
    let body = format!(
        r#"{{"token": {{"methods": ["password"], "user": {{"id": "u1", "name": "neutron"}},
        "issued_at": "{}", "expires_at": "{}",
        "catalog": [
          {{"type": "identity", "name": "keystone", "endpoints": [
             {{"interface": "public", "region_id": "RegionOne", "url": "http://10.0.0.1:5000/identity"}}]}},
          {{"type": "network", "name": "neutron", "endpoints": [
             {{"interface": "admin", "region_id": "RegionOne", "url": "http://10.0.0.7:9696"}},
             {{"interface": "public", "region_id": "RegionOne", "url": "{neutron_url}"}},
             {{"interface": "internal", "region_id": "RegionOne", "url": "http://10.0.0.8:9696"}}]}}]}}}}"#,
        t(issued),
        t(issued + lifetime)
    );
    response("201 Created", &[("X-Subject-Token", token)], &body, false)
}

/// A runtime stand-in: sockets are byte logs, time is a number.
struct Fake {
    c: NeutronClient,
    t0: Instant,
    now: Instant,
    targets: BTreeMap<ReqId, Target>,
    connected: BTreeSet<ReqId>,
    written: BTreeMap<ReqId, Vec<u8>>,
    closed: Vec<ReqId>,
    events: Vec<ClientEvent>,
    /// Connects the script has not looked at yet.
    new_conns: VecDeque<ReqId>,
    /// Writes are accepted this many bytes at a time.
    write_chunk: usize,
}

impl Fake {
    fn new(cfg: NeutronConfig) -> Fake {
        #[allow(clippy::disallowed_methods)] // an opaque epoch; the fake moves time itself
        let t0 = Instant::now();
        Fake {
            c: NeutronClient::new(cfg),
            t0,
            now: t0,
            targets: BTreeMap::new(),
            connected: BTreeSet::new(),
            written: BTreeMap::new(),
            closed: Vec::new(),
            events: Vec::new(),
            new_conns: VecDeque::new(),
            write_chunk: 13,
        }
    }

    /// Drains actions and events and writes what is pending, as a runtime would.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(a) = self.c.poll_action() {
                busy = true;
                match a {
                    ClientAction::Connect(id, t) => {
                        assert!(!self.targets.contains_key(&id), "id {id:?} reused");
                        self.targets.insert(id, t);
                        self.new_conns.push_back(id);
                    }
                    ClientAction::Close(id) => {
                        assert!(self.targets.contains_key(&id), "close of unknown {id:?}");
                        assert!(!self.closed.contains(&id), "double close of {id:?}");
                        self.closed.push(id);
                        self.connected.remove(&id);
                    }
                }
            }
            while let Some(e) = self.c.poll_event() {
                busy = true;
                self.events.push(e);
            }
            for &id in &self.connected {
                loop {
                    let pending = self.c.pending_write(id);
                    if pending.is_empty() {
                        break;
                    }
                    let n = pending.len().min(self.write_chunk);
                    self.written
                        .entry(id)
                        .or_default()
                        .extend_from_slice(&pending[..n]);
                    self.c.consume_write(id, n);
                    busy = true;
                }
            }
            if !busy {
                break;
            }
        }
        if let Some(t) = self.c.poll_timeout() {
            assert!(
                t > self.now,
                "a deadline in the past survived handle_timeout"
            );
        }
    }

    fn query(&mut self, key: LookupKey) {
        self.c.query(self.now, key);
        self.pump();
    }

    fn handle(&mut self, id: ReqId, input: Input<'_>) {
        self.c.handle(self.now, id, input);
        self.pump();
    }

    /// The next connection the client opened, which must go to `to`.
    fn next_conn(&mut self, to: &str) -> ReqId {
        let id = self.new_conns.pop_front().expect("a Connect action");
        assert_eq!(self.targets[&id], Target::Tcp(addr(to)), "target of {id:?}");
        assert!(
            self.c.pending_write(id).is_empty(),
            "bytes before Connected"
        );
        id
    }

    fn no_new_conn(&self) {
        assert!(self.new_conns.is_empty(), "unexpected {:?}", self.new_conns);
    }

    /// Completes the connect and returns the request the client wrote.
    fn connect(&mut self, id: ReqId) -> Req {
        self.connected.insert(id);
        self.handle(id, Input::Connected);
        assert!(self.c.wants_read(id));
        parse_request(self.written.get(&id).expect("request written"))
    }

    /// Feeds `bytes` in pieces of `piece` bytes (stops once the client closed the exchange).
    fn respond(&mut self, id: ReqId, bytes: &[u8], piece: usize) {
        for p in bytes.chunks(piece.max(1)) {
            assert!(
                !self.closed.contains(&id),
                "closed before the response ended"
            );
            self.handle(id, Input::Read(p));
        }
        assert!(
            self.closed.contains(&id),
            "exchange not closed after its response"
        );
        assert!(!self.c.wants_read(id));
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.c.handle_timeout(self.now);
        self.pump();
    }

    fn take_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.events)
    }

    /// Serves the Keystone exchange on the next connection; returns the request.
    fn serve_auth(&mut self, token: &str, lifetime: u64) -> Req {
        let id = self.next_conn(KEYSTONE);
        let req = self.connect(id);
        self.respond(
            id,
            &keystone_201(token, lifetime, "http://10.0.0.9:9696/networking/"),
            usize::MAX,
        );
        req
    }

    /// Serves the next Neutron request with `status` and `body`; returns the request.
    fn serve_neutron(&mut self, status: &str, body: &str) -> Req {
        let id = self.next_conn(NEUTRON);
        let req = self.connect(id);
        self.respond(id, &response(status, &[], body, false), usize::MAX);
        req
    }
}

fn assert_router_request(req: &Req, prefix: &str) {
    assert_eq!(
        (req.method.as_str(), req.version.as_str()),
        ("GET", "HTTP/1.1")
    );
    assert_eq!(req.path, format!("{prefix}/v2.0/ports"));
    assert_eq!(
        req.query_pairs(),
        [
            ("device_id", ROUTER),
            ("device_owner", "network:router_interface"),
            ("device_owner", "network:ha_router_replicated_interface"),
            ("device_owner", "network:router_interface_distributed"),
            ("fields", "network_id"),
        ]
    );
}

fn assert_ports_request(req: &Req, prefix: &str, filter: (&str, &str), nets: &[&str]) {
    assert_eq!(
        (req.method.as_str(), req.version.as_str()),
        ("GET", "HTTP/1.1")
    );
    assert_eq!(req.path, format!("{prefix}/v2.0/ports"));
    let mut want = vec![filter];
    want.extend(nets.iter().map(|n| ("network_id", *n)));
    want.extend([
        ("fields", "device_id"),
        ("fields", "project_id"),
        ("fields", "tenant_id"),
    ]);
    assert_eq!(req.query_pairs(), want);
}

fn assert_common_headers(req: &Req, host: &str, token: Option<&str>) {
    assert_eq!(req.header("Host"), Some(host));
    assert_eq!(req.header("Accept"), Some("application/json"));
    assert_eq!(req.header("User-Agent"), Some("mdproxy"));
    assert_eq!(req.header("Connection"), Some("close"));
    assert_eq!(req.header("X-Auth-Token"), token);
}

fn one_port() -> String {
    ports_json(&[(INSTANCE, Some(PROJECT), Some(PROJECT))])
}

#[test]
fn router_scope_authenticates_then_makes_two_queries() {
    let mut f = Fake::new(keystone_cfg());
    let key = router_key("10.0.1.5");
    f.query(key);

    let auth = f.serve_auth(TOKEN, 3600);
    assert_eq!(auth.method, "POST");
    assert_eq!(auth.path, "/identity/v3/auth/tokens");
    assert!(auth.query.is_empty(), "the catalog is needed: no nocatalog");
    assert_common_headers(&auth, KEYSTONE, None);
    assert_eq!(auth.header("Content-Type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&auth.body).expect("json body");
    assert_eq!(
        body,
        serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "neutron", "domain": {"name": "Default"}, "password": "p4ss"}}},
            "scope": {"project": {"name": "service", "domain": {"name": "Default"}}}}})
    );
    assert!(f.take_events().is_empty());

    let routers = f.serve_neutron("200 OK", &networks_json(&[NET1, NET2, NET1]));
    assert_router_request(&routers, "/networking");
    assert_common_headers(&routers, NEUTRON, Some(TOKEN));

    let ports = f.serve_neutron("200 OK", &one_port());
    assert_ports_request(
        &ports,
        "/networking",
        ("fixed_ips", "ip_address=10.0.1.5"),
        &[NET1, NET2],
    );
    assert_common_headers(&ports, NEUTRON, Some(TOKEN));

    assert_eq!(f.take_events(), [ClientEvent::Answer(key, instance())]);
    assert_eq!(f.c.stats(), stats(1, 2));
    assert_eq!(f.closed.len(), 3, "every exchange closed");
    assert_eq!(f.c.poll_timeout(), None);
    f.no_new_conn();
}

#[test]
fn network_scope_makes_one_query_without_auth() {
    let mut f = Fake::new(noauth_cfg());
    let key = network_key("10.0.1.5");
    f.query(key);
    let ports = f.serve_neutron("200 OK", &one_port());
    assert_ports_request(&ports, "", ("fixed_ips", "ip_address=10.0.1.5"), &[NET1]);
    assert_common_headers(&ports, NEUTRON, None);
    assert_eq!(f.take_events(), [ClientEvent::Answer(key, instance())]);
    assert_eq!(f.c.stats(), stats(0, 1));
    f.no_new_conn();
}

#[test]
fn zero_or_several_ports_is_not_found() {
    for body in [
        ports_json(&[]),
        ports_json(&[
            (INSTANCE, Some(PROJECT), None),
            ("other", Some(PROJECT), None),
        ]),
    ] {
        let mut f = Fake::new(noauth_cfg());
        let key = network_key("10.0.1.5");
        f.query(key);
        f.serve_neutron("200 OK", &body);
        assert_eq!(f.take_events(), [ClientEvent::Answer(key, None)], "{body}");
    }
}

#[test]
fn project_id_falls_back_to_tenant_id() {
    let mut f = Fake::new(noauth_cfg());
    let key = network_key("10.0.1.5");
    f.query(key);
    f.serve_neutron("200 OK", &ports_json(&[(INSTANCE, None, Some(PROJECT))]));
    assert_eq!(f.take_events(), [ClientEvent::Answer(key, instance())]);
}

#[test]
fn one_token_serves_many_queries() {
    let mut f = Fake::new(NeutronConfig {
        neutron: Some(HttpTarget::parse_ip_url("http://10.0.0.9:9696").expect("url")),
        ..keystone_cfg()
    });
    for (i, ip) in ["10.0.1.5", "10.0.1.6", "10.0.1.7"].into_iter().enumerate() {
        let key = network_key(ip);
        f.query(key);
        if i == 0 {
            let auth = f.serve_auth(TOKEN, 3600);
            // neutron_url is configured, so the catalog is not asked for.
            assert_eq!(auth.path, "/identity/v3/auth/tokens");
            assert_eq!(auth.query_pairs(), [("nocatalog", "")]);
        }
        let ports = f.serve_neutron("200 OK", &one_port());
        assert_eq!(ports.path, "/v2.0/ports", "the configured URL wins");
        assert_common_headers(&ports, NEUTRON, Some(TOKEN));
        assert_eq!(f.take_events(), [ClientEvent::Answer(key, instance())]);
        f.advance(Duration::from_secs(600));
    }
    assert_eq!(f.c.stats(), stats(1, 3));
}

#[test]
fn token_near_expiry_is_renewed() {
    let mut f = Fake::new(keystone_cfg());
    let start = f.now;
    f.query(network_key("10.0.1.5"));
    f.serve_auth(TOKEN, 3600);
    f.serve_neutron("200 OK", &one_port());
    // Reused up to lifetime - min(60 s, lifetime / 10) after the auth request started.
    f.now = start + Duration::from_secs(3539);
    f.query(network_key("10.0.1.6"));
    let req = f.serve_neutron("200 OK", &one_port());
    assert_eq!(req.header("X-Auth-Token"), Some(TOKEN));
    assert_eq!(f.c.stats(), stats(1, 2));

    f.now = start + Duration::from_secs(3540);
    f.query(network_key("10.0.1.7"));
    f.serve_auth("gAAAAABtoken-2", 3600);
    let req = f.serve_neutron("200 OK", &one_port());
    assert_eq!(req.header("X-Auth-Token"), Some("gAAAAABtoken-2"));
    assert_eq!(f.c.stats(), stats(2, 3));
    assert_eq!(f.take_events().len(), 3);
}

#[test]
fn unauthorized_reauthenticates_once_and_retries() {
    let mut f = Fake::new(keystone_cfg());
    let key = network_key("10.0.1.5");
    f.query(key);
    f.serve_auth(TOKEN, 3600);
    let first = f.serve_neutron("401 Unauthorized", r#"{"error": "expired"}"#);
    assert_eq!(first.header("X-Auth-Token"), Some(TOKEN));
    assert!(f.take_events().is_empty());
    f.serve_auth("gAAAAABtoken-2", 3600);
    let retry = f.serve_neutron("200 OK", &one_port());
    assert_eq!(retry.header("X-Auth-Token"), Some("gAAAAABtoken-2"));
    assert_eq!(retry.query, first.query, "the same request again");
    assert_eq!(f.take_events(), [ClientEvent::Answer(key, instance())]);
    assert_eq!(f.c.stats(), stats(2, 2));
}

#[test]
fn second_unauthorized_fails() {
    let mut f = Fake::new(keystone_cfg());
    let key = network_key("10.0.1.5");
    f.query(key);
    f.serve_auth(TOKEN, 3600);
    f.serve_neutron("401 Unauthorized", "{}");
    f.serve_auth("gAAAAABtoken-2", 3600);
    f.serve_neutron("401 Unauthorized", "{}");
    let ev = f.take_events();
    assert!(
        matches!(&ev[..], [ClientEvent::Failed(k, why)] if *k == key && why.to_string().contains("401")),
        "{ev:?}"
    );
    assert_eq!(f.c.stats(), stats(2, 2));
    f.no_new_conn();
    // The token from the second auth is still used for the next query.
    f.query(network_key("10.0.1.6"));
    let req = f.serve_neutron("200 OK", &one_port());
    assert_eq!(req.header("X-Auth-Token"), Some("gAAAAABtoken-2"));
}

#[test]
fn noauth_unauthorized_fails_at_once() {
    let mut f = Fake::new(noauth_cfg());
    let key = network_key("10.0.1.5");
    f.query(key);
    f.serve_neutron("401 Unauthorized", "{}");
    let ev = f.take_events();
    assert!(
        matches!(&ev[..], [ClientEvent::Failed(_, why)] if why.to_string().contains("no Keystone")),
        "{ev:?}"
    );
    f.no_new_conn();
}

#[test]
fn concurrent_queries_share_one_auth() {
    let mut f = Fake::new(keystone_cfg());
    let keys = [
        network_key("10.0.1.5"),
        network_key("10.0.1.6"),
        router_key("10.0.1.7"),
    ];
    for k in keys {
        f.query(k);
    }
    let auth = f.next_conn(KEYSTONE);
    f.no_new_conn();
    f.connect(auth);
    f.respond(
        auth,
        &keystone_201(TOKEN, 3600, "http://10.0.0.9:9696/networking"),
        usize::MAX,
    );
    // All three go out at once, in arrival order.
    let ids: Vec<ReqId> = (0..3).map(|_| f.next_conn(NEUTRON)).collect();
    let reqs: Vec<Req> = ids.iter().map(|&id| f.connect(id)).collect();
    assert_ports_request(
        &reqs[0],
        "/networking",
        ("fixed_ips", "ip_address=10.0.1.5"),
        &[NET1],
    );
    assert_ports_request(
        &reqs[1],
        "/networking",
        ("fixed_ips", "ip_address=10.0.1.6"),
        &[NET1],
    );
    assert_router_request(&reqs[2], "/networking");
    // Answer out of order.
    f.respond(
        ids[2],
        &response("200 OK", &[], &networks_json(&[NET2]), false),
        5,
    );
    f.respond(ids[1], &response("200 OK", &[], &one_port(), true), 5);
    f.respond(ids[0], &response("200 OK", &[], &ports_json(&[]), false), 5);
    let last = f.serve_neutron("200 OK", &one_port());
    assert_ports_request(
        &last,
        "/networking",
        ("fixed_ips", "ip_address=10.0.1.7"),
        &[NET2],
    );
    assert_eq!(
        f.take_events(),
        [
            ClientEvent::Answer(keys[1], instance()),
            ClientEvent::Answer(keys[0], None),
            ClientEvent::Answer(keys[2], instance()),
        ]
    );
    assert_eq!(f.c.stats(), stats(1, 4));
}

#[test]
fn concurrent_401s_share_one_reauth() {
    let mut f = Fake::new(keystone_cfg());
    let (a, b) = (network_key("10.0.1.5"), network_key("10.0.1.6"));
    f.query(a);
    f.query(b);
    f.serve_auth(TOKEN, 3600);
    let ia = f.next_conn(NEUTRON);
    let ib = f.next_conn(NEUTRON);
    f.connect(ia);
    f.connect(ib);
    f.respond(ia, &response("401 Unauthorized", &[], "{}", false), 64);
    f.respond(ib, &response("401 Unauthorized", &[], "{}", false), 64);
    // Both retries waited for the one re-auth and go out together, with the new token.
    f.serve_auth("gAAAAABtoken-2", 3600);
    let retries = [f.next_conn(NEUTRON), f.next_conn(NEUTRON)];
    f.no_new_conn();
    assert_eq!(f.c.stats(), stats(2, 4));
    for id in retries {
        let req = f.connect(id);
        assert_eq!(req.header("X-Auth-Token"), Some("gAAAAABtoken-2"));
        f.respond(id, &response("200 OK", &[], &one_port(), false), 64);
    }
    assert_eq!(
        f.take_events(),
        [
            ClientEvent::Answer(a, instance()),
            ClientEvent::Answer(b, instance())
        ]
    );
}

#[test]
fn failures_are_reported() {
    // (what Neutron does, a word the reason must contain)
    let garbage = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{\"p".to_vec();
    /// What Neutron (or the network) does to the exchange.
    type Act = Box<dyn Fn(&mut Fake, ReqId)>;
    let cases: Vec<(&str, Act, &str)> = vec![
        (
            "500",
            Box::new(|f, id| {
                f.connect(id);
                f.respond(
                    id,
                    &response(
                        "500 Internal Server Error",
                        &[],
                        r#"{"NeutronError": {}}"#,
                        false,
                    ),
                    usize::MAX,
                );
            }),
            "answered 500",
        ),
        (
            "malformed JSON",
            Box::new(move |f, id| {
                f.connect(id);
                f.respond(id, &garbage, usize::MAX);
            }),
            "JSON",
        ),
        (
            "wrong JSON shape",
            Box::new(|f, id| {
                f.connect(id);
                f.respond(
                    id,
                    &response("200 OK", &[], r#"{"ports": "nope"}"#, false),
                    usize::MAX,
                );
            }),
            "JSON",
        ),
        (
            "refused",
            Box::new(|f, id| f.handle(id, Input::ConnectFailed(ConnectError::Refused))),
            "refused",
        ),
        (
            "reset",
            Box::new(|f, id| {
                f.connect(id);
                f.handle(id, Input::Read(b"HTTP/1.1 200 OK\r\n"));
                f.handle(id, Input::Error);
            }),
            "broke",
        ),
        (
            "closed early",
            Box::new(|f, id| {
                f.connect(id);
                f.handle(
                    id,
                    Input::Read(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"),
                );
                f.handle(id, Input::Eof);
            }),
            "closed before",
        ),
        (
            "not HTTP",
            Box::new(|f, id| {
                f.connect(id);
                f.handle(id, Input::Read(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"));
            }),
            "bad response",
        ),
        (
            "timeout",
            Box::new(|f, id| {
                f.connect(id);
                f.advance(Duration::from_millis(9_999));
                assert!(f.events.is_empty());
                assert_eq!(f.c.poll_timeout(), Some(f.t0 + Duration::from_secs(10)));
                f.advance(Duration::from_millis(1));
                f.advance(Duration::from_millis(1)); // a second call is a no-op
            }),
            "within 10s",
        ),
    ];
    for (name, act, word) in cases {
        let mut f = Fake::new(noauth_cfg());
        let key = network_key("10.0.1.5");
        f.query(key);
        let id = f.next_conn(NEUTRON);
        act(&mut f, id);
        let ev = f.take_events();
        assert!(
            matches!(&ev[..], [ClientEvent::Failed(k, why)] if *k == key && why.to_string().contains(word)),
            "{name}: {ev:?}"
        );
        assert_eq!(f.closed, [id], "{name}: closed exactly once");
        assert!(!f.c.wants_read(id));
        assert!(f.c.pending_write(id).is_empty());
        assert_eq!(f.c.poll_timeout(), None, "{name}");
        f.no_new_conn();
        // Reports on a closed id are ignored.
        f.handle(id, Input::Eof);
        assert!(f.take_events().is_empty());
    }
}

#[test]
fn keystone_failures_fail_every_waiter() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            response(
                "401 Unauthorized",
                &[],
                r#"{"error": {"code": 401}}"#,
                false,
            ),
            "credentials refused",
        ),
        (
            keystone_201(TOKEN, 3600, "http://neutron.example:9696"),
            "not an IP address",
        ),
        (keystone_201(TOKEN, 3600, "https://10.0.0.9:9696"), "https"),
        (
            response("201 Created", &[], r#"{"token": {}}"#, false),
            "X-Subject-Token",
        ),
    ];
    for (answer, word) in cases {
        let mut f = Fake::new(keystone_cfg());
        let (a, b) = (network_key("10.0.1.5"), router_key("10.0.1.6"));
        f.query(a);
        f.query(b);
        let id = f.next_conn(KEYSTONE);
        f.connect(id);
        f.respond(id, &answer, 3);
        let ev = f.take_events();
        assert_eq!(ev.len(), 2, "{word}: {ev:?}");
        for (e, k) in ev.iter().zip([a, b]) {
            assert!(
                matches!(e, ClientEvent::Failed(ek, why) if *ek == k && why.to_string().contains(word)),
                "{word}: {e:?}"
            );
        }
        f.no_new_conn();
        // The next query tries again.
        f.query(a);
        f.serve_auth(TOKEN, 3600);
        f.serve_neutron("200 OK", &one_port());
        assert_eq!(f.take_events(), [ClientEvent::Answer(a, instance())]);
        assert_eq!(f.c.stats(), stats(2, 1));
    }
}

#[test]
fn keystone_unreachable_fails_and_retries_later() {
    let mut f = Fake::new(keystone_cfg());
    let key = network_key("10.0.1.5");
    f.query(key);
    let id = f.next_conn(KEYSTONE);
    f.handle(id, Input::ConnectFailed(ConnectError::Refused));
    let ev = f.take_events();
    assert!(
        matches!(&ev[..], [ClientEvent::Failed(_, LookupError::AuthFailed(why))]
            if matches!(**why, LookupError::Exchange { error: ExchangeError::Refused, .. })
                && why.to_string().ends_with(": connection refused")),
        "{ev:?}"
    );
    f.query(key);
    let id = f.next_conn(KEYSTONE);
    f.connect(id);
    f.advance(Duration::from_secs(10));
    let ev = f.take_events();
    assert!(
        matches!(&ev[..], [ClientEvent::Failed(_, why)] if why.to_string().contains("within")),
        "{ev:?}"
    );
    assert_eq!(f.c.stats(), stats(2, 0));
}

#[test]
fn router_networks_are_cached_within_ttl() {
    let mut cfg = noauth_cfg();
    cfg.router_networks_ttl = Duration::from_secs(5);
    let mut f = Fake::new(cfg);
    let start = f.now;
    f.query(router_key("10.0.1.5"));
    assert_router_request(
        &f.serve_neutron("200 OK", &networks_json(&[NET1, NET2])),
        "",
    );
    f.serve_neutron("200 OK", &one_port());

    f.now = start + Duration::from_millis(4_999);
    f.query(router_key("10.0.1.6"));
    let ports = f.serve_neutron("200 OK", &one_port());
    assert_ports_request(
        &ports,
        "",
        ("fixed_ips", "ip_address=10.0.1.6"),
        &[NET1, NET2],
    );
    assert_eq!(f.c.stats(), stats(0, 3));

    f.now = start + Duration::from_secs(5);
    f.query(router_key("10.0.1.7"));
    assert_router_request(&f.serve_neutron("200 OK", &networks_json(&[NET2])), "");
    let ports = f.serve_neutron("200 OK", &one_port());
    assert_ports_request(&ports, "", ("fixed_ips", "ip_address=10.0.1.7"), &[NET2]);
    assert_eq!(f.c.stats(), stats(0, 5));
    assert_eq!(f.take_events().len(), 3);
}

#[test]
fn router_without_networks_is_not_found() {
    let mut f = Fake::new(noauth_cfg());
    let key = router_key("10.0.1.5");
    f.query(key);
    f.serve_neutron("200 OK", &networks_json(&[]));
    assert_eq!(f.take_events(), [ClientEvent::Answer(key, None)]);
    f.no_new_conn();
    // Cached too: the next query answers without any request.
    f.query(router_key("10.0.1.6"));
    f.no_new_conn();
    assert_eq!(
        f.take_events(),
        [ClientEvent::Answer(router_key("10.0.1.6"), None)]
    );
    assert_eq!(f.c.stats(), stats(0, 1));
}

#[test]
fn ipv6_clients() {
    let mut f = Fake::new(noauth_cfg());
    // Link-local: by the address itself, then (no port has it) by the MAC inside its EUI-64
    // identifier.
    let key = network_key("fe80::f816:3eff:fe12:3456");
    f.query(key);
    let req = f.serve_neutron("200 OK", r#"{"ports": []}"#);
    let by_ip = ("fixed_ips", "ip_address=fe80::f816:3eff:fe12:3456");
    assert_ports_request(&req, "", by_ip, &[NET1]);
    assert_eq!(f.take_events(), []);
    let req = f.serve_neutron("200 OK", &one_port());
    assert_ports_request(&req, "", ("mac_address", "fa:16:3e:12:34:56"), &[NET1]);
    assert_eq!(f.take_events(), [ClientEvent::Answer(key, instance())]);

    // Global with an EUI-64 identifier: by IP only, never by the MAC inside.
    let key = network_key("2001:db8::f816:3eff:fe12:3456");
    f.query(key);
    let req = f.serve_neutron("200 OK", r#"{"ports": []}"#);
    let by_ip = ("fixed_ips", "ip_address=2001:db8::f816:3eff:fe12:3456");
    assert_ports_request(&req, "", by_ip, &[NET1]);
    f.no_new_conn();
    assert_eq!(f.take_events(), [ClientEvent::Answer(key, None)]);

    // Global: by IP, in compressed form.
    let key = network_key("fd00:0:0::5");
    f.query(key);
    let req = f.serve_neutron("200 OK", &one_port());
    assert_ports_request(&req, "", ("fixed_ips", "ip_address=fd00::5"), &[NET1]);

    // IPv4-mapped: by the IPv4 address.
    let key = network_key("::ffff:10.0.1.5");
    f.query(key);
    let req = f.serve_neutron("200 OK", &one_port());
    assert_ports_request(&req, "", ("fixed_ips", "ip_address=10.0.1.5"), &[NET1]);

    // Link-local without an EUI-64 MAC: by the address only.
    let key = network_key("fe80::1");
    f.query(key);
    let req = f.serve_neutron("200 OK", r#"{"ports": []}"#);
    assert_ports_request(&req, "", ("fixed_ips", "ip_address=fe80::1"), &[NET1]);
    f.no_new_conn();
    let ev = f.take_events();
    assert_eq!(ev.last(), Some(&ClientEvent::Answer(key, None)));
    assert_eq!(f.c.stats(), stats(0, 6));
}

/// The full router scenario with every response fed byte by byte, in both framings, and
/// the ports response cut in two at every position: the outcome never changes.
#[test]
fn responses_in_any_split_and_framing() {
    let run = |chunked: bool, piece: usize, cut: Option<usize>| {
        let mut f = Fake::new(keystone_cfg());
        f.write_chunk = 1;
        let key = router_key("10.0.1.5");
        f.query(key);
        let id = f.next_conn(KEYSTONE);
        f.connect(id);
        let mut ks = keystone_201(TOKEN, 3600, "http://10.0.0.9:9696");
        if chunked {
            // Re-frame Keystone's body as chunked.
            let text = String::from_utf8(ks).expect("ascii");
            let (_, body) = text.split_once("\r\n\r\n").expect("head");
            ks = response("201 Created", &[("X-Subject-Token", TOKEN)], body, true);
        }
        f.respond(id, &ks, piece);
        let id = f.next_conn(NEUTRON);
        f.connect(id);
        f.respond(
            id,
            &response("200 OK", &[], &networks_json(&[NET1]), chunked),
            piece,
        );
        let id = f.next_conn(NEUTRON);
        f.connect(id);
        let ports = response("200 OK", &[], &one_port(), chunked);
        match cut {
            None => f.respond(id, &ports, piece),
            Some(c) => {
                let (a, b) = ports.split_at(c);
                if !a.is_empty() {
                    f.handle(id, Input::Read(a));
                }
                if !b.is_empty() {
                    f.handle(id, Input::Read(b));
                }
                assert!(f.closed.contains(&id));
            }
        }
        assert_eq!(f.c.stats(), stats(1, 2));
        f.take_events()
    };
    let want = vec![ClientEvent::Answer(router_key("10.0.1.5"), instance())];
    for chunked in [false, true] {
        assert_eq!(
            run(chunked, 1, None),
            want,
            "byte at a time, chunked={chunked}"
        );
        assert_eq!(
            run(chunked, usize::MAX, None),
            want,
            "whole, chunked={chunked}"
        );
        let len = response("200 OK", &[], &one_port(), chunked).len();
        for cut in 0..=len {
            assert_eq!(run(chunked, usize::MAX, Some(cut)), want, "cut at {cut}");
        }
    }
}

#[test]
fn oversized_bodies_fail() {
    let mut f = Fake::new(noauth_cfg());
    let key = network_key("10.0.1.5");
    f.query(key);
    let id = f.next_conn(NEUTRON);
    f.connect(id);
    f.handle(
        id,
        Input::Read(b"HTTP/1.1 200 OK\r\nContent-Length: 4194305\r\n\r\n"),
    );
    let ev = f.take_events();
    assert!(
        matches!(&ev[..], [ClientEvent::Failed(_, why)] if why.to_string().contains("too large")),
        "{ev:?}"
    );
    // Close-delimited bodies are cut at the same limit.
    let mut f = Fake::new(noauth_cfg());
    f.query(key);
    let id = f.next_conn(NEUTRON);
    f.connect(id);
    f.handle(id, Input::Read(b"HTTP/1.0 200 OK\r\n\r\n"));
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..64 {
        f.handle(id, Input::Read(&chunk));
    }
    assert!(f.take_events().is_empty());
    f.handle(id, Input::Read(b" "));
    let ev = f.take_events();
    assert!(
        matches!(&ev[..], [ClientEvent::Failed(_, why)] if why.to_string().contains("too large")),
        "{ev:?}"
    );
}

#[test]
fn missing_endpoint_is_a_clear_failure() {
    let mut f = Fake::new(NeutronConfig::new(None, None));
    let key = network_key("10.0.1.5");
    f.query(key);
    f.no_new_conn();
    let ev = f.take_events();
    assert!(
        matches!(&ev[..], [ClientEvent::Failed(_, why @ LookupError::NotConfigured)]
            if why.to_string().contains("neutron_url")),
        "{ev:?}"
    );
}

#[test]
fn catalog_interface_and_region_are_honoured() {
    let mut cfg = keystone_cfg();
    cfg.interface = "internalURL".into();
    cfg.region = Some("RegionOne".into());
    let mut f = Fake::new(cfg);
    f.query(network_key("10.0.1.5"));
    let id = f.next_conn(KEYSTONE);
    f.connect(id);
    f.respond(id, &keystone_201(TOKEN, 3600, "http://10.0.0.9:9696"), 100);
    // The internal endpoint of keystone_201's catalog is 10.0.0.8:9696.
    let id = f.next_conn("10.0.0.8:9696");
    let req = f.connect(id);
    assert_eq!(req.header("Host"), Some("10.0.0.8:9696"));
}

#[test]
fn duplicate_query_is_ignored() {
    let mut f = Fake::new(noauth_cfg());
    let key = network_key("10.0.1.5");
    f.query(key);
    f.query(key);
    f.serve_neutron("200 OK", &one_port());
    f.no_new_conn();
    assert_eq!(f.take_events(), [ClientEvent::Answer(key, instance())]);
}

#[test]
fn debug_output_hides_secrets() {
    let mut f = Fake::new(keystone_cfg());
    f.query(network_key("10.0.1.5"));
    f.serve_auth(TOKEN, 3600);
    let dbg = format!("{:?}", f.c);
    assert!(!dbg.contains("p4ss") && !dbg.contains(TOKEN), "{dbg}");
}
