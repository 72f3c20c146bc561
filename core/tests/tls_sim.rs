//! TLS inside the endpoint, with both ends in memory: an agent endpoint whose metadata server is
//! `https://` and a server endpoint that serves HTTPS, wired back to back by a scripted runtime
//! that only moves bytes (in chunks of a chosen size), plus a scripted HTTPS Neutron for the
//! lookup client. Certificates come from rcgen; time is the anchor of a `WallClock`.
#![cfg(feature = "tls")]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mdproxy_core::agent::StaticMap;
use mdproxy_core::config::{AgentConfig, Backend, EndpointConfig, Reload, Role, Timeouts};
use mdproxy_core::endpoint::Endpoint;
use mdproxy_core::http::Limits;
use mdproxy_core::lookup::{HttpTarget, NeutronConfig};
use mdproxy_core::metadata::{parse_instance, Date, Entropy, Format, ImdsV2, ServerConfig};
use mdproxy_core::sign::Signer;
use mdproxy_core::socket::{Action, Input, SockId, Target};
use mdproxy_core::tls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use mdproxy_core::tls::{
    ClientTls, EndpointTls, Identity, ServerAuth, ServerTls, TlsTarget, WallClock,
};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

const ROUTER: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";
const NET: &str = "9c2b1a4e-0000-4000-8000-000000000001";
/// The golden instance (`golden/instance.toml`).
const UUID: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
const PROJECT: &str = "8a5ce0e4f2b84d8b9b1e2c3d4f5a6b7c";
const SECRET: &[u8] = b"s3cr3t";
const SERVER_ADDR: &str = "127.0.0.1:8775";
const NEUTRON_ADDR: &str = "127.0.0.1:9696";
/// 2026-06-01T00:00:00Z: "now" for every test that does not move the clock.
const JUNE_2026: u64 = 1_780_272_000;

// ---- certificates ----

type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn ca_der(ca: &Ca) -> CertificateDer<'static> {
    AsRef::<rcgen::Certificate>::as_ref(ca).der().clone()
}

/// A leaf certificate for `names`, signed by `ca`, valid 2026-01-01 .. 2027-01-01.
fn leaf(ca: &Ca, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> Identity {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, "leaf");
    params.extended_key_usages = vec![purpose];
    params.not_before = date_time_ymd(2026, 1, 1);
    params.not_after = date_time_ymd(2027, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    Identity {
        chain: vec![cert.der().clone(), ca_der(ca)],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn server_identity(ca: &Ca) -> Identity {
    leaf(
        ca,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

fn client_identity(ca: &Ca) -> Identity {
    leaf(ca, &["agent"], ExtendedKeyUsagePurpose::ClientAuth)
}

// ---- the two endpoints ----

struct Pattern;
impl Entropy for Pattern {
    fn fill(&self, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
    }
}

fn static_map() -> StaticMap {
    StaticMap::parse(&format!(
        "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NET}\"]\n\n[[port]]\nnetwork = \"{NET}\"\n\
         ip = \"10.0.0.5\"\ndevice_id = \"{UUID}\"\nproject_id = \"{PROJECT}\"\n"
    ))
    .unwrap()
}

fn agent_role(backend: Backend) -> Role {
    Role::Agent(AgentConfig {
        metadata: Target::Tcp(SERVER_ADDR.parse().unwrap()),
        signer: Signer::new(SECRET),
        backend,
        cache_capacity: NonZeroUsize::new(10).unwrap(),
        cache_ttl: Duration::from_secs(5),
        negative_ttl: Duration::from_secs(1),
    })
}

fn server_endpoint(t0: Instant, tls: ServerTls) -> Endpoint {
    let role = Role::Server(ServerConfig {
        signer: Some(Signer::new(SECRET)),
        direct: false,
        imdsv2: ImdsV2::Optional,
        dhcp_domain: "novalocal".to_owned(),
        today: Date::new(2026, 6, 1),
        entropy: Arc::new(Pattern),
    });
    let mut ep = Endpoint::new(t0, config(role, None, Some(tls)));
    let inst = parse_instance(include_str!("golden/instance.toml"), Format::Toml).unwrap();
    ep.reload(t0, Reload::Instances(vec![inst], Date::new(2026, 6, 1)));
    ep
}

fn config(role: Role, upstream: Option<TlsTarget>, accept: Option<ServerTls>) -> EndpointConfig {
    EndpointConfig {
        role,
        limits: Limits::default(),
        conns: Default::default(),
        timeouts: Timeouts::default(),
        tls: EndpointTls { accept, upstream },
        metrics: None,
    }
}

/// A scripted HTTPS server on one connection (the Neutron of these tests): answers the first
/// complete request head with `answer(head)`, then says `close_notify`.
struct Scripted {
    conn: rustls::ServerConnection,
    head: Vec<u8>,
    answered: bool,
    answer: Answer,
    failed: Option<String>,
}

impl Scripted {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.failed.is_none() {
            if self.conn.read_tls(&mut data).unwrap() == 0 {
                return;
            }
            if let Err(e) = self.conn.process_new_packets() {
                self.failed = Some(e.to_string());
                return;
            }
            let _ = self.conn.reader().read_to_end(&mut self.head);
        }
        let text = String::from_utf8_lossy(&self.head).into_owned();
        if !self.answered && text.contains("\r\n\r\n") {
            self.answered = true;
            self.conn.writer().write_all(&(self.answer)(&text)).unwrap();
            self.conn.send_close_notify();
        }
    }

    fn take(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out).unwrap();
        }
        out
    }
}

enum Remote {
    Server(SockId),
    Scripted(Box<Scripted>),
}

/// One TCP connection between the agent and a remote, as two byte queues.
struct Link {
    agent: SockId,
    remote: Remote,
    to_remote: Vec<u8>,
    to_agent: Vec<u8>,
    /// The agent (or the remote) shut down its write side or closed the socket.
    agent_done: bool,
    remote_done: bool,
    agent_closed: bool,
    remote_closed: bool,
    eof_to_remote: bool,
    eof_to_agent: bool,
}

/// How the scripted Neutron answers a request head.
type Answer = fn(&str) -> Vec<u8>;

/// The runtime stand-in: moves bytes between the agent and its remotes, `chunk` bytes per read.
struct World {
    now: Instant,
    agent: Endpoint,
    server: Option<Endpoint>,
    /// The scripted Neutron's TLS settings and answers.
    neutron: Option<(Arc<rustls::ServerConfig>, Answer)>,
    links: Vec<Link>,
    /// The agent's clients (the ns-proxies' connections).
    clients: Vec<SockId>,
    /// What the agent wrote to each of them.
    replies: BTreeMap<SockId, Vec<u8>>,
    chunk: usize,
}

fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)] // an opaque epoch; the world moves time itself
    Instant::now()
}

fn clock(t0: Instant, unix_secs: u64) -> Arc<WallClock> {
    WallClock::new(t0, Duration::from_secs(unix_secs))
}

impl World {
    fn new(t0: Instant, agent: EndpointConfig, server: Option<ServerTls>) -> World {
        World {
            now: t0,
            agent: Endpoint::new(t0, agent),
            server: server.map(|tls| server_endpoint(t0, tls)),
            neutron: None,
            links: Vec::new(),
            clients: Vec::new(),
            replies: BTreeMap::new(),
            chunk: usize::MAX,
        }
    }

    /// A request from a new ns-proxy connection; runs until quiet and returns the reply.
    fn request(&mut self, req: &[u8]) -> String {
        let c = self.accept();
        self.ask(c, req)
    }

    fn accept(&mut self) -> SockId {
        let c = self.agent.accept(self.now, None);
        self.clients.push(c);
        c
    }

    fn ask(&mut self, c: SockId, req: &[u8]) -> String {
        self.agent.handle(self.now, c, Input::Read(req));
        self.run();
        String::from_utf8_lossy(&self.replies.remove(&c).unwrap_or_default()).into_owned()
    }

    fn run(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the world never became quiet");
    }

    fn step(&mut self) -> bool {
        let mut progress = false;
        while let Some(a) = self.agent.poll_action() {
            progress = true;
            match a {
                Action::Connect { sock, target } => self.connect(sock, target),
                Action::Shutdown(s) | Action::Close(s) => {
                    let close = matches!(a, Action::Close(_));
                    if let Some(l) = self.links.iter_mut().find(|l| l.agent == s) {
                        l.agent_done = true;
                        l.agent_closed |= close;
                    }
                }
                Action::Wake(_) => {}
            }
        }
        if let Some(server) = self.server.as_mut() {
            while let Some(a) = server.poll_action() {
                progress = true;
                if let Action::Shutdown(s) | Action::Close(s) = a {
                    let close = matches!(a, Action::Close(_));
                    let link = self
                        .links
                        .iter_mut()
                        .find(|l| matches!(l.remote, Remote::Server(r) if r == s));
                    if let Some(l) = link {
                        l.remote_done = true;
                        l.remote_closed |= close;
                    }
                }
            }
        }
        // The agent's replies to its clients.
        for &c in &self.clients {
            let out = self.agent.pending_write(c).to_vec();
            if !out.is_empty() {
                progress = true;
                self.agent.consume_write(self.now, c, out.len());
                self.replies.entry(c).or_default().extend(out);
            }
        }
        for i in 0..self.links.len() {
            progress |= self.move_link(i);
        }
        progress
    }

    fn connect(&mut self, sock: SockId, target: Target) {
        let Target::Tcp(addr) = target else {
            panic!("{target:?}")
        };
        let remote = if addr == NEUTRON_ADDR.parse::<SocketAddr>().unwrap() {
            let (cfg, answer) = self.neutron.clone().expect("a Neutron");
            Remote::Scripted(Box::new(Scripted {
                conn: rustls::ServerConnection::new(cfg).unwrap(),
                head: Vec::new(),
                answered: false,
                answer,
                failed: None,
            }))
        } else {
            let server = self.server.as_mut().expect("a metadata server");
            let s = server.accept(self.now, Some("127.0.0.1:40000".parse().unwrap()));
            Remote::Server(s)
        };
        self.links.push(Link {
            agent: sock,
            remote,
            to_remote: Vec::new(),
            to_agent: Vec::new(),
            agent_done: false,
            remote_done: false,
            agent_closed: false,
            remote_closed: false,
            eof_to_remote: false,
            eof_to_agent: false,
        });
        self.agent.handle(self.now, sock, Input::Connected);
    }

    /// Writes what each end offers into the link, and reads from it as far as each end wants.
    fn move_link(&mut self, i: usize) -> bool {
        let (now, chunk) = (self.now, self.chunk);
        let l = &mut self.links[i];
        let mut progress = false;
        if !l.agent_closed {
            let out = self.agent.pending_write(l.agent).to_vec();
            if !out.is_empty() {
                progress = true;
                self.agent.consume_write(now, l.agent, out.len());
                l.to_remote.extend(out);
            }
        }
        match &mut l.remote {
            Remote::Server(s) => {
                let (s, server) = (*s, self.server.as_mut().unwrap());
                if !l.remote_closed {
                    let out = server.pending_write(s).to_vec();
                    if !out.is_empty() {
                        progress = true;
                        server.consume_write(now, s, out.len());
                        l.to_agent.extend(out);
                    }
                    while !l.to_remote.is_empty() && server.wants_read(s) {
                        let n = chunk.min(l.to_remote.len());
                        let piece: Vec<u8> = l.to_remote.drain(..n).collect();
                        server.handle(now, s, Input::Read(&piece));
                        progress = true;
                    }
                    if l.to_remote.is_empty() && l.agent_done && !l.eof_to_remote {
                        l.eof_to_remote = true;
                        server.handle(now, s, Input::Eof);
                        progress = true;
                    }
                }
            }
            Remote::Scripted(script) => {
                if !l.to_remote.is_empty() {
                    script.feed(&std::mem::take(&mut l.to_remote));
                    progress = true;
                }
                let out = script.take();
                if !out.is_empty() {
                    l.to_agent.extend(out);
                    progress = true;
                }
                if script.answered || script.failed.is_some() {
                    l.remote_done = true;
                }
            }
        }
        if !l.agent_closed {
            while !l.to_agent.is_empty() && self.agent.wants_read(l.agent) {
                let n = chunk.min(l.to_agent.len());
                let piece: Vec<u8> = l.to_agent.drain(..n).collect();
                self.agent.handle(now, l.agent, Input::Read(&piece));
                progress = true;
            }
            if l.to_agent.is_empty() && l.remote_done && !l.eof_to_agent {
                l.eof_to_agent = true;
                self.agent.handle(now, l.agent, Input::Eof);
                progress = true;
            }
        }
        progress
    }

    /// Connections the agent opened.
    fn connections(&self) -> usize {
        self.links.len()
    }
}

fn request() -> Vec<u8> {
    format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: {ROUTER}\r\n\r\n"
    )
    .into_bytes()
}

fn status(reply: &str) -> &str {
    reply.get(9..12).unwrap_or(reply)
}

fn body(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The usual setup: one CA for both sides, the server requiring client certificates.
struct Pki {
    ca: Ca,
    clock: Arc<WallClock>,
    t0: Instant,
}

impl Pki {
    fn new() -> Pki {
        let t0 = t0();
        Pki {
            ca: ca("mdproxy test CA"),
            clock: clock(t0, JUNE_2026),
            t0,
        }
    }

    fn server(&self, client_auth: bool) -> ServerTls {
        let roots = client_auth.then(|| vec![ca_der(&self.ca)]);
        ServerTls::new(server_identity(&self.ca), roots, self.clock.clone()).unwrap()
    }

    fn client(&self, auth: ServerAuth, with_cert: bool) -> ClientTls {
        let id = with_cert.then(|| client_identity(&self.ca));
        ClientTls::new(auth, id, self.clock.clone()).unwrap()
    }

    fn trusting(&self) -> ServerAuth {
        ServerAuth::Roots(vec![ca_der(&self.ca)])
    }

    fn world(&self, client: ClientTls, name: &str, server: ServerTls) -> World {
        let target = TlsTarget::new(client, name).unwrap();
        let agent = config(
            agent_role(Backend::Static(static_map())),
            Some(target),
            None,
        );
        World::new(self.t0, agent, Some(server))
    }
}

#[test]
fn agent_relays_over_mutual_tls_and_reuses_the_connection() {
    let pki = Pki::new();
    let client = pki.client(pki.trusting(), true);
    let mut w = pki.world(client, "localhost", pki.server(true));
    let reply = w.request(&request());
    assert_eq!(status(&reply), "200", "{reply}");
    assert_eq!(body(&reply), "i-0000002a");
    // A second request on the same ns-proxy connection takes the pooled TLS connection.
    let c = w.accept();
    assert_eq!(status(&w.ask(c, &request())), "200");
    assert_eq!(status(&w.ask(c, &request())), "200");
    assert_eq!(w.connections(), 1, "one TLS connection for all requests");
}

#[test]
fn the_wire_carries_no_plaintext() {
    let pki = Pki::new();
    let client = pki.client(pki.trusting(), false);
    let mut w = pki.world(client, "127.0.0.1", pki.server(false));
    w.chunk = 1;
    let c = w.accept();
    w.agent.handle(w.now, c, Input::Read(&request()));
    // Step by step, watching what crosses the link.
    let mut seen = Vec::new();
    for _ in 0..100_000 {
        if let Some(l) = w.links.first() {
            seen.extend_from_slice(&l.to_remote);
            seen.extend_from_slice(&l.to_agent);
        }
        if !w.step() {
            break;
        }
    }
    let reply = String::from_utf8_lossy(&w.replies.remove(&c).unwrap()).into_owned();
    assert_eq!(body(&reply), "i-0000002a", "{reply}");
    let text = String::from_utf8_lossy(&seen);
    for word in ["GET /", "X-Instance-ID", UUID, "i-0000002a", "HTTP/1.1"] {
        assert!(!text.contains(word), "{word:?} crossed the wire in clear");
    }
}

#[test]
fn every_chunking_gives_the_same_reply() {
    let pki = Pki::new();
    let mut replies = Vec::new();
    for chunk in [1, 5, 64, 1000, usize::MAX] {
        let client = pki.client(pki.trusting(), true);
        let mut w = pki.world(client, "localhost", pki.server(true));
        w.chunk = chunk;
        replies.push((chunk, w.request(&request())));
    }
    for (chunk, r) in &replies {
        assert_eq!(r, &replies[0].1, "chunk {chunk}");
        assert_eq!(body(r), "i-0000002a", "{r}");
    }
}

/// 503 with the standard text (the reason goes to the log, not to the instance).
fn assert_unavailable(reply: &str) {
    assert_eq!(status(reply), "503", "{reply}");
    assert!(
        body(reply).contains("The remote metadata server is temporarily unavailable"),
        "{reply}"
    );
}

#[test]
fn an_unknown_ca_is_503() {
    let pki = Pki::new();
    let other = ca("somebody else");
    let client = pki.client(ServerAuth::Roots(vec![ca_der(&other)]), true);
    let mut w = pki.world(client, "localhost", pki.server(false));
    assert_unavailable(&w.request(&request()));
}

#[test]
fn a_wrong_host_name_is_503() {
    let pki = Pki::new();
    let client = pki.client(pki.trusting(), false);
    let mut w = pki.world(client, "metadata.example", pki.server(false));
    assert_unavailable(&w.request(&request()));
}

#[test]
fn insecure_takes_any_certificate_and_name() {
    let pki = Pki::new();
    let client = pki.client(ServerAuth::Insecure, false);
    assert!(client.is_insecure());
    let mut w = pki.world(client, "metadata.example", pki.server(false));
    assert_eq!(body(&w.request(&request())), "i-0000002a");
}

#[test]
fn a_server_requiring_a_client_certificate_refuses_an_agent_without_one() {
    let pki = Pki::new();
    let client = pki.client(pki.trusting(), false);
    let mut w = pki.world(client, "localhost", pki.server(true));
    assert_unavailable(&w.request(&request()));
    // A client certificate from another CA is refused too.
    let other = ca("somebody else");
    let id = client_identity(&other);
    let client = ClientTls::new(pki.trusting(), Some(id), pki.clock.clone()).unwrap();
    let mut w = pki.world(client, "localhost", pki.server(true));
    assert_unavailable(&w.request(&request()));
}

#[test]
fn certificate_validity_follows_the_clock_the_endpoint_is_given() {
    let pki = Pki::new();
    // The certificates are valid 2026-01-01 .. 2027-01-01. The clock is anchored in June
    // 2026, and the endpoint's `now` moves it: 400 days later the server's has expired.
    let client = pki.client(pki.trusting(), false);
    let mut w = pki.world(client, "localhost", pki.server(false));
    assert_eq!(status(&w.request(&request())), "200");
    w.now += Duration::from_secs(400 * 86_400);
    // The pooled connection is long gone (idle timeout); a new handshake checks again.
    w.agent.handle_timeout(w.now);
    w.server.as_mut().unwrap().handle_timeout(w.now);
    w.run();
    assert_unavailable(&w.request(&request()));
    assert_eq!(w.connections(), 2);
    // And before the certificates' time: not yet valid.
    let t0 = t0();
    let early = clock(t0, JUNE_2026 - 365 * 86_400);
    let id = server_identity(&pki.ca);
    let server = ServerTls::new(id, None, early.clone()).unwrap();
    let client = ClientTls::new(pki.trusting(), None, early).unwrap();
    let target = TlsTarget::new(client, "localhost").unwrap();
    let agent = config(
        agent_role(Backend::Static(static_map())),
        Some(target),
        None,
    );
    let mut w = World::new(t0, agent, Some(server));
    assert_unavailable(&w.request(&request()));
}

#[test]
fn the_handshake_counts_against_the_connect_timeout() {
    let pki = Pki::new();
    let client = pki.client(pki.trusting(), false);
    let target = TlsTarget::new(client, "localhost").unwrap();
    let agent = config(
        agent_role(Backend::Static(static_map())),
        Some(target),
        None,
    );
    let mut ep = Endpoint::new(pki.t0, agent);
    let c = ep.accept(pki.t0, None);
    ep.handle(pki.t0, c, Input::Read(&request()));
    let mut up = None;
    while let Some(a) = ep.poll_action() {
        if let Action::Connect { sock, .. } = a {
            up = Some(sock);
        }
    }
    let up = up.expect("a connect");
    ep.handle(pki.t0, up, Input::Connected);
    // The ClientHello goes out; the server never answers.
    assert!(
        ep.pending_write(up).starts_with(&[0x16, 0x03]),
        "a TLS record"
    );
    assert!(ep.wants_read(up), "the handshake reads");
    let n = ep.pending_write(up).len();
    ep.consume_write(pki.t0, up, n);
    while ep.poll_action().is_some() {}
    let deadline = ep.poll_timeout().expect("a deadline");
    assert_eq!(deadline, pki.t0 + Timeouts::default().connect);
    ep.handle_timeout(deadline);
    while ep.poll_action().is_some() {}
    let reply = String::from_utf8_lossy(ep.pending_write(c));
    assert_eq!(status(&reply), "504", "{reply}");
}

// ---- Neutron over https ----

fn neutron_answer(head: &str) -> Vec<u8> {
    let body = if head.contains("device_id=") && head.contains("fields=network_id") {
        format!(r#"{{"ports": [{{"network_id": "{NET}"}}]}}"#)
    } else {
        format!(r#"{{"ports": [{{"device_id": "{UUID}", "project_id": "{PROJECT}"}}]}}"#)
    };
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn neutron_world(pki: &Pki, auth: ServerAuth) -> World {
    let url = format!("https://{NEUTRON_ADDR}");
    let mut neutron = NeutronConfig::new(Some(HttpTarget::parse_ip_url(&url).unwrap()), None);
    neutron.tls = Some(pki.client(auth, false));
    let metadata = TlsTarget::new(pki.client(pki.trusting(), true), "localhost").unwrap();
    let agent = config(agent_role(Backend::Neutron(neutron)), Some(metadata), None);
    let mut w = World::new(pki.t0, agent, Some(pki.server(true)));
    let id = server_identity(&pki.ca);
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(id.chain, id.key)
    .unwrap();
    w.neutron = Some((Arc::new(cfg), neutron_answer));
    w
}

#[test]
fn neutron_over_https_resolves_the_instance() {
    let pki = Pki::new();
    let mut w = neutron_world(&pki, pki.trusting());
    let reply = w.request(&request());
    assert_eq!(body(&reply), "i-0000002a", "{reply}");
    // Router networks, the port, the metadata server.
    assert_eq!(w.links.len(), 3);
}

#[test]
fn neutron_with_an_unknown_ca_fails_the_lookup() {
    let pki = Pki::new();
    let other = ca("somebody else");
    let mut w = neutron_world(&pki, ServerAuth::Roots(vec![ca_der(&other)]));
    let reply = w.request(&request());
    assert_eq!(status(&reply), "503", "{reply}");
    assert_eq!(w.links.len(), 1, "the metadata server was never asked");
}

#[test]
fn an_https_url_without_tls_settings_fails_saying_so() {
    let pki = Pki::new();
    let url = format!("https://{NEUTRON_ADDR}");
    let neutron = NeutronConfig::new(Some(HttpTarget::parse_ip_url(&url).unwrap()), None);
    let agent = config(agent_role(Backend::Neutron(neutron)), None, None);
    let mut w = World::new(pki.t0, agent, None);
    let reply = w.request(&request());
    assert_eq!(status(&reply), "503", "{reply}");
    assert!(w.links.is_empty(), "nothing was connected");
}

#[test]
fn a_client_that_half_closes_gets_the_whole_answer_before_the_close() {
    // Like a runtime, write on Wake and Shutdown; a Close drops whatever is still unwritten.
    let pki = Pki::new();
    let mut server = server_endpoint(pki.t0, pki.server(false));
    let now = pki.t0;
    let s = server.accept(now, Some("127.0.0.1:40000".parse().unwrap()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der(&pki.ca)).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sig = Signer::new(SECRET).sign(UUID).to_string();
    let req = format!(
        "GET /openstack/latest/meta_data.json HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\n\
         X-Instance-ID: {UUID}\r\nX-Tenant-ID: {PROJECT}\r\nX-Instance-ID-Signature: {sig}\r\n\r\n"
    );
    let (mut sent, mut eof_sent, mut closed) = (false, false, false);
    let mut answer = Vec::new();
    for _ in 0..1000 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        if !to_server.is_empty() {
            server.handle(now, s, Input::Read(&to_server));
        } else if sent && !eof_sent {
            eof_sent = true;
            server.handle(now, s, Input::Eof);
        }
        let mut to_client = Vec::new();
        while let Some(a) = server.poll_action() {
            match a {
                Action::Wake(x) | Action::Shutdown(x) if x == s => {
                    let out = server.pending_write(s).to_vec();
                    server.consume_write(now, s, out.len());
                    to_client.extend(out);
                }
                Action::Close(x) if x == s => {
                    assert!(
                        server.pending_write(s).is_empty(),
                        "bytes lost at the close"
                    );
                    closed = true;
                }
                _ => {}
            }
        }
        if !to_client.is_empty() {
            client.read_tls(&mut &to_client[..]).unwrap();
            client.process_new_packets().unwrap();
            let _ = client.reader().read_to_end(&mut answer);
        }
        if !client.is_handshaking() && !sent {
            sent = true;
            client.writer().write_all(req.as_bytes()).unwrap();
            client.send_close_notify();
        }
        if closed {
            break;
        }
    }
    assert!(closed, "the server closed the connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let json = body(&answer);
    let v: serde_json::Value = serde_json::from_str(json).expect("a whole JSON body");
    assert_eq!(v["uuid"], UUID);
}
