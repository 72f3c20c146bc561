//! TLS inside the endpoint, in simulated time: an agent endpoint whose metadata server is
//! `https://` (the core's own server endpoint, serving HTTPS), a scripted HTTPS Neutron for the
//! lookup client, and an instance's HTTPS client of the server. The scripted sides speak TLS
//! through `sim::Tls`, rustls sessions of their own. Certificates come from rcgen; the wall
//! clock of every handshake is a `WallClock` anchored at the world's start.
#![cfg(feature = "tls")]

use std::sync::Arc;
use std::time::Duration;

use mdproxy_core::config::{Backend, EndpointConfig, Reload, Role, Timeouts};
use mdproxy_core::lookup::{HttpTarget, NeutronConfig};
use mdproxy_core::sign::Signer;
use mdproxy_core::socket::Target;
use mdproxy_core::testing::sim::roles::{
    self, agent_socket, metadata_addr, INSTANCE, INSTANCE_IP, NET, PROJECT, ROUTER, SECRET, TODAY,
};
use mdproxy_core::testing::sim::{
    Answer, HttpClient, HttpServer, Message, Mute, NodeId, Tls, World,
};
use mdproxy_core::tls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use mdproxy_core::tls::{ClientTls, Identity, ServerAuth, ServerTls, TlsTarget, WallClock};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

/// 2026-06-01T00:00:00Z: the wall clock when a world starts.
const JUNE_2026: u64 = 1_780_272_000;
const DAY: u64 = 86_400;

fn neutron_addr() -> Target {
    Target::Tcp(([127, 0, 0, 1], 9696).into())
}

// ---- certificates ----

type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA")
}

fn ca_der(ca: &Ca) -> CertificateDer<'static> {
    AsRef::<rcgen::Certificate>::as_ref(ca).der().clone()
}

/// A leaf certificate for `names`, signed by `ca`, valid 2026-01-01 .. 2027-01-01.
fn leaf(ca: &Ca, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> Identity {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("leaf parameters");
    params.distinguished_name.push(DnType::CommonName, "leaf");
    params.extended_key_usages = vec![purpose];
    params.not_before = date_time_ymd(2026, 1, 1);
    params.not_after = date_time_ymd(2027, 1, 1);
    let key = KeyPair::generate().expect("a key");
    let cert = params.signed_by(&key, ca).expect("a signed leaf");
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

/// One CA for every side, and the wall clock of one world.
struct Pki {
    ca: Ca,
    clock: Arc<WallClock>,
}

impl Pki {
    /// The clock reads `unix` seconds at the start of `w`.
    fn at(w: &World, unix: u64) -> Pki {
        Pki {
            ca: ca("mdproxy test CA"),
            clock: WallClock::new(w.now(), Duration::from_secs(unix)),
        }
    }

    fn new(w: &World) -> Pki {
        Pki::at(w, JUNE_2026)
    }

    fn server(&self, client_auth: bool) -> ServerTls {
        let roots = client_auth.then(|| vec![ca_der(&self.ca)]);
        ServerTls::new(server_identity(&self.ca), roots, self.clock.clone()).expect("server TLS")
    }

    fn client(&self, auth: ServerAuth, with_cert: bool) -> ClientTls {
        let id = with_cert.then(|| client_identity(&self.ca));
        ClientTls::new(auth, id, self.clock.clone()).expect("client TLS")
    }

    fn trusting(&self) -> ServerAuth {
        ServerAuth::Roots(vec![ca_der(&self.ca)])
    }

    /// The agent's settings for the metadata server: `client`, expecting the name `name`.
    fn target(&self, client: ClientTls, name: &str) -> TlsTarget {
        TlsTarget::new(client, name).expect("a TLS target")
    }
}

// ---- the nodes ----

/// The core's metadata server on [`metadata_addr`], serving the sample instance over `tls`.
fn metadata_server(w: &mut World, tls: ServerTls) -> NodeId {
    let mut cfg = roles::endpoint(Role::Server(roles::server()));
    cfg.tls.accept = Some(tls);
    let server = w.endpoint_on(metadata_addr(), cfg);
    w.with_endpoint(server, |ep, now| {
        ep.reload(
            now,
            Reload::Instances(vec![roles::sample_instance()], TODAY),
        )
    });
    server
}

/// An agent on the agent's socket with `backend`, relaying over `upstream` (plain without).
fn agent(w: &mut World, backend: Backend, upstream: Option<TlsTarget>) -> NodeId {
    let mut cfg: EndpointConfig = roles::endpoint(Role::Agent(roles::agent(backend)));
    cfg.tls.upstream = upstream;
    w.endpoint_on(agent_socket(), cfg)
}

/// An agent of the sample instance (static map) and an ns-proxy's connection to it (the
/// client); its metadata server is added by the test.
struct Relay {
    w: World,
    client: NodeId,
    agent: NodeId,
}

impl Relay {
    /// The agent relaying over `upstream` to the core's server speaking `server`.
    fn new(w: World, upstream: TlsTarget, server: ServerTls) -> Relay {
        let mut r = Relay::static_agent(w, upstream);
        metadata_server(&mut r.w, server);
        r
    }

    fn static_agent(mut w: World, upstream: TlsTarget) -> Relay {
        let backend = Backend::Static(roles::static_map(INSTANCE_IP, INSTANCE));
        let agent = agent(&mut w, backend, Some(upstream));
        Relay::front(w, agent)
    }

    fn front(mut w: World, agent: NodeId) -> Relay {
        let client = w.add_client("127.0.0.1", agent_socket());
        Relay { w, client, agent }
    }

    /// The instance's `instance-id`, as an ns-proxy asks for it.
    fn ask(&mut self) -> Message {
        self.w.exchange(self.client, request())
    }

    /// How many connections the agent opened (to the metadata server, to Neutron).
    fn upstreams(&self) -> usize {
        self.w.links_from(self.agent).len()
    }
}

fn request() -> String {
    format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-Forwarded-For: {INSTANCE_IP}\r\nX-Neutron-Router-ID: {ROUTER}\r\n\r\n"
    )
}

/// 503 with the standard text (the reason goes to the log, not to the instance).
fn assert_unavailable(resp: &Message) {
    assert_eq!(resp.status(), 503, "{}", resp.raw);
    assert!(
        resp.text()
            .contains("The remote metadata server is temporarily unavailable"),
        "{}",
        resp.raw
    );
}

// ---- the agent and an HTTPS metadata server ----

#[test]
fn agent_relays_over_mutual_tls_and_reuses_the_connection() {
    let w = World::new();
    let pki = Pki::new(&w);
    let client = pki.client(pki.trusting(), true);
    let mut r = Relay::new(w, pki.target(client, "localhost"), pki.server(true));
    r.ask().assert_is(200, "i-0000002a");
    // A second ns-proxy connection, two requests: both take the pooled TLS connection.
    let second = r.w.add_client("127.0.0.1", agent_socket());
    for _ in 0..2 {
        let resp = r.w.exchange(second, request());
        resp.assert_is(200, "i-0000002a");
    }
    assert_eq!(r.upstreams(), 1, "one TLS connection for all requests");
}

#[test]
fn the_wire_carries_no_plaintext() {
    let mut w = World::new();
    w.set_piece(1);
    let pki = Pki::new(&w);
    let client = pki.client(pki.trusting(), false);
    let mut r = Relay::new(w, pki.target(client, "127.0.0.1"), pki.server(false));
    r.ask().assert_is(200, "i-0000002a");
    let link = r.w.links_from(r.agent)[0];
    let wire = format!("{}{}", link.up.text(), link.down.text());
    assert!(wire.len() > 1000, "a handshake and an exchange crossed");
    for word in ["GET /", "X-Instance-ID", INSTANCE, "i-0000002a", "HTTP/1.1"] {
        assert!(!wire.contains(word), "{word:?} crossed the wire in clear");
    }
}

#[test]
fn every_piece_size_gives_the_same_reply() {
    let mut replies = Vec::new();
    for piece in [1, 5, 64, 1000, usize::MAX] {
        let mut w = World::new();
        w.set_piece(piece);
        let pki = Pki::new(&w);
        let client = pki.client(pki.trusting(), true);
        let mut r = Relay::new(w, pki.target(client, "localhost"), pki.server(true));
        let resp = r.ask();
        resp.assert_is(200, "i-0000002a");
        replies.push((piece, resp.raw));
    }
    for (piece, raw) in &replies {
        assert_eq!(raw, &replies[0].1, "piece {piece}");
    }
}

#[test]
fn an_unknown_ca_is_503() {
    let w = World::new();
    let pki = Pki::new(&w);
    let other = ca("somebody else");
    let client = pki.client(ServerAuth::Roots(vec![ca_der(&other)]), true);
    let mut r = Relay::new(w, pki.target(client, "localhost"), pki.server(false));
    assert_unavailable(&r.ask());
}

#[test]
fn a_wrong_host_name_is_503() {
    let w = World::new();
    let pki = Pki::new(&w);
    let client = pki.client(pki.trusting(), false);
    let mut r = Relay::new(w, pki.target(client, "metadata.example"), pki.server(false));
    assert_unavailable(&r.ask());
}

#[test]
fn insecure_takes_any_certificate_and_name() {
    let w = World::new();
    let pki = Pki::new(&w);
    let client = pki.client(ServerAuth::Insecure, false);
    assert!(client.is_insecure());
    let mut r = Relay::new(w, pki.target(client, "metadata.example"), pki.server(false));
    r.ask().assert_is(200, "i-0000002a");
}

#[test]
fn a_server_requiring_a_client_certificate_refuses_an_agent_without_one() {
    let w = World::new();
    let pki = Pki::new(&w);
    let client = pki.client(pki.trusting(), false);
    let mut r = Relay::new(w, pki.target(client, "localhost"), pki.server(true));
    assert_unavailable(&r.ask());
}

#[test]
fn a_server_requiring_a_client_certificate_refuses_one_from_another_ca() {
    let w = World::new();
    let pki = Pki::new(&w);
    let id = client_identity(&ca("somebody else"));
    let client = ClientTls::new(pki.trusting(), Some(id), pki.clock.clone()).expect("client TLS");
    let mut r = Relay::new(w, pki.target(client, "localhost"), pki.server(true));
    assert_unavailable(&r.ask());
}

#[test]
fn certificate_validity_follows_the_clock_the_endpoint_is_given() {
    // The certificates are valid 2026-01-01 .. 2027-01-01. The clock reads June 2026 at the
    // start, and the world's time moves it: 400 days later the server's has expired.
    let w = World::new();
    let pki = Pki::new(&w);
    let client = pki.client(pki.trusting(), false);
    let mut r = Relay::new(w, pki.target(client, "localhost"), pki.server(false));
    r.ask().assert_is(200, "i-0000002a");
    r.w.advance(Duration::from_secs(400 * DAY));
    // The pooled connection is long gone (idle timeout); a new handshake checks again.
    assert!(
        r.w.links_from(r.agent)[0].from.closed,
        "the pooled connection"
    );
    assert_unavailable(&r.ask());
    assert_eq!(r.upstreams(), 2);
    // And before the certificates' time: not yet valid.
    let w = World::new();
    let early = Pki::at(&w, JUNE_2026 - 365 * DAY);
    let client = early.client(early.trusting(), false);
    let mut r = Relay::new(w, early.target(client, "localhost"), early.server(false));
    assert_unavailable(&r.ask());
}

#[test]
fn the_handshake_counts_against_the_connect_timeout() {
    let mut w = World::new();
    let pki = Pki::new(&w);
    // The server accepts the connection and never answers the ClientHello.
    let server = w.peer_on(metadata_addr(), Mute);
    let client = pki.client(pki.trusting(), false);
    let mut r = Relay::static_agent(w, pki.target(client, "localhost"));
    r.w.client_mut(r.client).send(request());
    let agent = r.agent;
    r.w.run_until(Duration::from_secs(1), |w| {
        w.links_to(server)
            .first()
            .is_some_and(|l| !l.up.delivered.is_empty())
    });
    let link = r.w.links_to(server)[0];
    assert!(link.up.delivered.starts_with(&[0x16, 0x03]), "a TLS record");
    let sock = link.from.sock.expect("the agent's socket");
    assert!(r.w.endpoint(agent).wants_read(sock), "the handshake reads");
    let resp = r.w.response(r.client, 0);
    assert_eq!(resp.status(), 504, "{}", resp.raw);
    assert_eq!(
        r.w.elapsed(),
        Timeouts::default().connect,
        "at the connect timeout exactly"
    );
}

// ---- Neutron over https ----

/// Neutron's answers: the router's networks, then the instance's port.
fn neutron_answer(req: &Message) -> Answer {
    let body = if req.raw.contains(&format!("device_id={ROUTER}")) {
        format!(r#"{{"ports": [{{"network_id": "{NET}"}}]}}"#)
    } else {
        format!(r#"{{"ports": [{{"device_id": "{INSTANCE}", "project_id": "{PROJECT}"}}]}}"#)
    };
    Answer::Respond(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// An agent on an `https://` Neutron whose certificate it checks with `auth`, an HTTPS
/// Neutron, and the metadata server behind mutual TLS. The Neutron node is returned beside.
fn neutron_relay(auth: ServerAuth, pki: &Pki, mut w: World) -> (Relay, NodeId) {
    let url = HttpTarget::parse_ip_url("https://127.0.0.1:9696").expect("url");
    let mut neutron = NeutronConfig::new(Some(url), None);
    neutron.tls = Some(pki.client(auth, false));
    let metadata = pki.target(pki.client(pki.trusting(), true), "localhost");
    let agent = agent(&mut w, Backend::Neutron(neutron), Some(metadata));
    let script = HttpServer::new(|_, req| neutron_answer(req));
    let server = Tls::server(server_identity(&pki.ca), pki.clock.clone(), script);
    let neutron = w.peer_on(neutron_addr(), server);
    metadata_server(&mut w, pki.server(true));
    (Relay::front(w, agent), neutron)
}

#[test]
fn neutron_over_https_resolves_the_instance() {
    let w = World::new();
    let pki = Pki::new(&w);
    let (mut r, neutron) = neutron_relay(pki.trusting(), &pki, w);
    r.ask().assert_is(200, "i-0000002a");
    assert_eq!(r.w.server(neutron).requests.len(), 2, "networks, then port");
    let failures = &r.w.peer::<Tls<HttpServer>>(neutron).failures;
    assert!(failures.is_empty(), "{failures:?}");
    // Router networks, the port, the metadata server.
    assert_eq!(r.upstreams(), 3);
}

#[test]
fn neutron_with_an_unknown_ca_fails_the_lookup() {
    let w = World::new();
    let pki = Pki::new(&w);
    let other = ServerAuth::Roots(vec![ca_der(&ca("somebody else"))]);
    let (mut r, neutron) = neutron_relay(other, &pki, w);
    let resp = r.ask();
    assert_eq!(resp.status(), 503, "{}", resp.raw);
    assert_eq!(r.w.server(neutron).requests.len(), 0, "no request crossed");
    assert_eq!(r.upstreams(), 1, "the metadata server was never asked");
}

#[test]
fn an_https_url_without_tls_settings_fails_saying_so() {
    let mut w = World::new();
    let url = HttpTarget::parse_ip_url("https://127.0.0.1:9696").expect("url");
    let backend = Backend::Neutron(NeutronConfig::new(Some(url), None));
    let agent = agent(&mut w, backend, None);
    let mut r = Relay::front(w, agent);
    let resp = r.ask();
    assert_eq!(resp.status(), 503, "{}", resp.raw);
    assert_eq!(r.upstreams(), 0, "nothing was connected");
}

// ---- an instance's HTTPS client of the server ----

#[test]
fn a_client_that_half_closes_gets_the_whole_answer_before_the_close() {
    let mut w = World::new();
    let pki = Pki::new(&w);
    let server = metadata_server(&mut w, pki.server(false));
    let sig = Signer::new(SECRET).sign(INSTANCE).to_string();
    let mut client = HttpClient::new(metadata_addr());
    // The request, then `close_notify` and the FIN.
    client.half_close = true;
    client.send(format!(
        "GET /openstack/latest/meta_data.json HTTP/1.1\r\nX-Forwarded-For: {INSTANCE_IP}\r\n\
         X-Instance-ID: {INSTANCE}\r\nX-Tenant-ID: {PROJECT}\r\n\
         X-Instance-ID-Signature: {sig}\r\n\r\n"
    ));
    let roots = vec![ca_der(&pki.ca)];
    let tls = Tls::client(roots, "localhost", pki.clock.clone(), client);
    let client = w.add_peer(INSTANCE_IP.parse().expect("an address"), tls);
    let resp = w.response(client, 0);
    assert_eq!(resp.status(), 200, "{}", resp.raw);
    let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("a whole JSON body");
    assert_eq!(v["uuid"], INSTANCE);
    w.run_until(Duration::from_secs(1), |w| {
        !w.client(client).ended.is_empty()
    });
    let link = w.links_to(server)[0];
    assert!(link.from.shut, "the client half-closed");
    let end = link.to.expect("accepted");
    assert!(end.closed, "the server closed the connection");
    let failures = &w.peer::<Tls<HttpClient>>(client).failures;
    assert!(failures.is_empty(), "{failures:?}");
}
