//! `proxy_conn`: the whole [`Endpoint`] of one role, driven by a byte string decoded into the
//! inputs a runtime would give it (accepts, reads in arbitrary splits, connect results, EOFs,
//! errors, partial writes, stalled readers, time steps, a graceful drain), with the runtime's
//! side of the contract checked after every mutation.
//!
//! Input: byte 0 picks the role (`% 3`: ns-proxy, agent with a static map, server; bit 2 tight
//! client limits; bit 3 a rate limit on the ns-proxy), then operations, each an opcode byte and
//! its arguments (missing bytes read as 0). Requests and responses come either raw from the
//! input or from tables of real ones (cloud-init's and botocore's, Nova's answers), cut at an
//! input-chosen point, so short inputs reach deep states.
//!
//! Invariants (the socket ones checked by [`Contract`], as in the simulator): unsent bytes per
//! socket stay within the client head limit plus the core's high-water mark (plus one read and
//! one upstream head); a closed socket is never mentioned again and nothing is written after a
//! shutdown; every connect id is new; after `handle_timeout(now)`, `poll_timeout()` is `None`
//! or later than `now`; and once the input ends, a drain with every peer hanging up closes
//! every socket the endpoint ever had.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::agent::StaticMap;
use crate::config::{
    AgentConfig, Backend, ConnLimits, EndpointConfig, NsProxyConfig, RateLimit, Reload, Resilience,
    Role, Timeouts,
};
use crate::endpoint::Endpoint;
use crate::http::Limits;
use crate::metadata::{parse_instance, Date, Entropy, Format, ImdsV2, InstanceData, ServerConfig};
use crate::scope::{Scope, Uuid};
use crate::sign::Signer;
use crate::socket::{Action, ConnectError, Input, SockId, Target};
use crate::testing::contract::{Contract, SockState};
use crate::upstream::ServerSpec;

/// The core's back-pressure mark (`proxy::conn::HIGH_WATER`), mirrored here.
const HIGH_WATER: usize = 64 * 1024;
/// Largest upstream response head the core accepts (`proxy::conn::RESPONSE_LIMITS`).
const RESPONSE_HEAD: usize = 64 * 1024;
/// Largest single read the harness delivers (a runtime's read buffer).
const MAX_READ: usize = 8 * 1024;
/// Most sockets one input may open: keeps a run short.
const MAX_ACCEPTS: usize = 24;

const ROUTER: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";
const NET: &str = "9c2b1a4e-0000-4000-8000-000000000001";
const INSTANCE: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
const PROJECT: &str = "8a5ce0e4f2b84d8b9b1e2c3d4f5a6b7c";
const SECRET: &[u8] = b"s3cr3t";

/// Deterministic "randomness" for the server's tokens and seeds.
struct Counter(std::sync::atomic::AtomicU64);

impl Entropy for Counter {
    fn fill(&self, buf: &mut [u8]) {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> ((i % 8) * 8)) as u8 ^ i as u8;
        }
    }
}

/// Requests as real clients send them (reference §D), per role.
fn client_requests(role: u8) -> Vec<Vec<u8>> {
    let plain: &[&str] = &[
        // cloud-init DataSourceOpenStack
        "GET /openstack HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Cloud-Init/23.4\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
        "GET /openstack/2018-08-27/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Cloud-Init/23.4\r\nAccept: */*\r\n\r\n",
        "GET /2009-04-04/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
        "GET /latest/meta-data/ HTTP/1.0\r\n\r\n",
        // botocore
        "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n",
        "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: 169.254.169.254\r\nx-aws-ec2-metadata-token: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\nConnection: close\r\n\r\n",
        // password posts, both framings
        "POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 8\r\n\r\nsecretpw",
        "POST /openstack/latest/password HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nsecr\r\n4;x=y\r\netpw\r\n0\r\nT: v\r\n\r\n",
        // hostile
        "GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /%2e%2e/x HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nX-Neutron-Router-ID: x\r\n\r\n",
    ];
    let mut out: Vec<Vec<u8>> = plain.iter().map(|s| s.as_bytes().to_vec()).collect();
    match role {
        1 => {
            for (ip, scope) in [
                ("10.0.0.5", format!("X-Neutron-Router-ID: {ROUTER}")),
                ("10.0.0.5", format!("X-Neutron-Network-ID: {NET}")),
                ("10.0.0.9", format!("X-Neutron-Router-ID: {ROUTER}")),
                (
                    "fe80::f816:3eff:fe00:5",
                    format!("X-Neutron-Network-ID: {NET}"),
                ),
            ] {
                out.push(
                    format!("GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Forwarded-For: {ip}\r\n{scope}\r\n\r\n")
                        .into_bytes(),
                );
            }
        }
        2 => {
            let sig = Signer::new(SECRET).sign(INSTANCE).to_string();
            for (method, path, tail) in [
                ("GET", "/latest/meta-data/instance-id", ""),
                ("GET", "/openstack/latest/meta_data.json", ""),
                ("HEAD", "/openstack/latest/user_data", ""),
                (
                    "PUT",
                    "/latest/api/token",
                    "X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n",
                ),
                (
                    "POST",
                    "/openstack/latest/password",
                    "Content-Length: 5\r\n",
                ),
            ] {
                let body = if method == "POST" { "hello" } else { "" };
                out.push(
                    format!("{method} {path} HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\nX-Instance-ID: {INSTANCE}\r\nX-Tenant-ID: {PROJECT}\r\nX-Instance-ID-Signature: {sig}\r\n{tail}\r\n{body}")
                        .into_bytes(),
                );
            }
        }
        _ => {}
    }
    out
}

/// Answers as agents and metadata servers give them.
const RESPONSES: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\ni-0000002a",
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nclose-delimited body",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Length: 14\r\n\r\n404 Not Found\n",
    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"garbage that is no response\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
];

/// Reads the operation stream; exhausted input reads as zeros.
struct Cursor<'a> {
    data: &'a [u8],
}

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The runtime's own state of a socket (the contract's is in [`Contract`]).
#[derive(Debug, Default)]
struct Io {
    eof_sent: bool,
    /// A peer that does not read: writes wait until it is unstalled.
    stalled: bool,
}

/// The runtime stand-in: every socket the endpoint ever named, and the checks.
struct Harness {
    ep: Endpoint,
    now: Instant,
    contract: Contract,
    io: BTreeMap<SockId, Io>,
    /// Bound on any socket's unsent bytes.
    bound: usize,
    accepted: usize,
}

impl Harness {
    fn ids(&self, client: bool) -> Vec<SockId> {
        self.contract
            .socks()
            .filter(|(_, s)| s.client == client)
            .map(|(id, _)| id)
            .collect()
    }

    /// Picks any socket of the kind (closed ones too: a runtime may still report on them).
    fn pick(&self, client: bool, b: u8) -> Option<SockId> {
        let ids = self.ids(client);
        (!ids.is_empty()).then(|| ids[usize::from(b) % ids.len()])
    }

    fn state(&self, sock: SockId) -> SockState {
        self.contract.get(sock).copied().unwrap_or_default()
    }

    fn stalled(&self, sock: SockId) -> bool {
        self.io.get(&sock).is_some_and(|s| s.stalled)
    }

    /// Carries out every queued action (writing to peers that read), checking each.
    fn drain(&mut self) {
        for _ in 0..100_000 {
            let Some(action) = self.ep.poll_action() else {
                return;
            };
            self.contract.action(&self.ep, &action);
            if let Action::Wake(sock) = action {
                // New bytes come with a wake-up: check the bound where it may be crossed.
                self.contract.check_bound(&self.ep, sock, self.bound);
                if !self.stalled(sock) && !self.state(sock).connecting {
                    self.write(sock, usize::MAX);
                }
            }
        }
        panic!("the endpoint never stopped producing actions");
    }

    /// Writes up to `max` pending bytes of `sock` (one `consume_write`).
    fn write(&mut self, sock: SockId, max: usize) {
        let n = self.ep.pending_write(sock).len().min(max);
        if n > 0 {
            self.ep.consume_write(self.now, sock, n);
        }
    }

    fn readable(&self, sock: SockId) -> bool {
        self.contract
            .get(sock)
            .is_some_and(|s| !s.closed && !s.connecting)
            && !self.io.get(&sock).is_some_and(|s| s.eof_sent)
            && self.ep.wants_read(sock)
    }

    /// Delivers `bytes` as reads of at most `cut` bytes, while the core wants them.
    fn read(&mut self, sock: SockId, bytes: &[u8], cut: usize) {
        for piece in bytes.chunks(cut.clamp(1, MAX_READ)) {
            if !self.readable(sock) {
                return;
            }
            self.ep.handle(self.now, sock, Input::Read(piece));
            self.drain();
        }
    }

    fn input(&mut self, sock: SockId, input: Input<'_>) {
        self.ep.handle(self.now, sock, input);
        self.drain();
    }

    fn eof(&mut self, sock: SockId) {
        if self.readable(sock) {
            self.io.entry(sock).or_default().eof_sent = true;
            self.input(sock, Input::Eof);
        }
    }

    fn connect_result(&mut self, sock: SockId, how: u8) {
        if !self.contract.connect_done(sock) {
            return;
        }
        let input = match how % 3 {
            0 => Input::Connected,
            1 => Input::ConnectFailed(ConnectError::Refused),
            _ => Input::ConnectFailed(ConnectError::Other),
        };
        self.input(sock, input);
        // A runtime writes once the connect completes.
        if how % 3 == 0 && !self.state(sock).closed && !self.stalled(sock) {
            self.write(sock, usize::MAX);
            self.drain();
        }
    }

    fn timeout(&mut self, spurious: bool) {
        let due = self.ep.poll_timeout().is_some_and(|t| t <= self.now);
        if due || spurious {
            self.ep.handle_timeout(self.now);
            self.drain();
            self.contract.after_timeout(&self.ep, self.now);
        }
    }

    /// End of input: drain; every peer hangs up, connects fail, time runs to each deadline.
    /// Every socket must end up closed.
    fn finish(&mut self) {
        self.ep.begin_drain(self.now);
        self.drain();
        for _ in 0..200 {
            let ids: Vec<SockId> = self.contract.socks().map(|(id, _)| id).collect();
            for id in ids {
                self.io.entry(id).or_default().stalled = false;
                self.connect_result(id, 1);
                if !self.state(id).closed {
                    self.write(id, usize::MAX);
                    self.drain();
                }
                self.eof(id);
            }
            if self.ep.is_drained() && self.contract.all_closed() {
                self.contract.check_closed(&self.ep);
                return;
            }
            if let Some(t) = self.ep.poll_timeout() {
                self.now = self.now.max(t);
            }
            self.timeout(false);
        }
        let open: Vec<_> = self.contract.socks().filter(|(_, s)| !s.closed).collect();
        panic!(
            "drained endpoint left sockets open: {open:?}; connections left: {}",
            self.ep.connections()
        );
    }
}

fn config(sel: u8) -> EndpointConfig {
    let limits = if sel & 4 == 0 {
        Limits::default()
    } else {
        Limits {
            max_head: 256,
            max_headers: 8,
            max_body: 16,
            max_chunk_line: 16,
        }
    };
    let timeouts = Timeouts {
        head: Duration::from_secs(2),
        idle: Duration::from_secs(3),
        connect: Duration::from_secs(1),
        response: Duration::from_secs(5),
    };
    let role = match sel % 3 {
        0 => Role::NsProxy(NsProxyConfig {
            scope: Scope::Router(Uuid::parse(ROUTER.as_bytes()).expect("uuid")),
            upstream: Target::Unix("/agent.sock".into()),
            rate_limit: (sel & 8 != 0).then_some(RateLimit {
                base_limit: 5,
                base_window: Duration::from_secs(10),
                burst_limit: 3,
                burst_window: Duration::from_secs(1),
            }),
            token_hop_limit: 1,
        }),
        1 => {
            static MAP: OnceLock<StaticMap> = OnceLock::new();
            let map = MAP.get_or_init(|| StaticMap::parse(&format!(
                "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NET}\"]\n\n[[port]]\nnetwork = \"{NET}\"\n\
                 ip = \"10.0.0.5\"\nmac = \"fa:16:3e:00:00:05\"\ndevice_id = \"{INSTANCE}\"\nproject_id = \"{PROJECT}\"\n"
            ))
            .expect("static map"));
            Role::Agent(AgentConfig {
                metadata: vec![ServerSpec::plain(
                    Target::Tcp(SocketAddr::from(([127, 0, 0, 1], 8775))),
                    "http://127.0.0.1:8775",
                )],
                resilience: Resilience::default(),
                signer: Signer::new(SECRET),
                backend: Backend::Static(map.clone()),
                cache_capacity: NonZeroUsize::MIN,
                cache_ttl: Duration::from_secs(5),
                negative_ttl: Duration::from_secs(1),
                // Tokens at the agent (optional or required) in three selections of four, so inputs
                // reach their rules too.
                imds: match sel & 24 {
                    0 => crate::agent::AgentImds::off(),
                    mode => crate::agent::AgentImds {
                        mode: if mode == 8 {
                            ImdsV2::Optional
                        } else {
                            ImdsV2::Required
                        },
                        scopes: Default::default(),
                        issuer: Some(crate::agent::Issuer {
                            tokens: crate::metadata::Tokens::new(
                                crate::metadata::TokenKeys::random(&Counter(0.into())),
                                crate::metadata::TokenClock::new(
                                    crate::testing::epoch(),
                                    Duration::ZERO,
                                ),
                            ),
                            entropy: Arc::new(Counter(1.into())),
                        }),
                        hop_limit: crate::agent::imds::DEFAULT_HOP_LIMIT,
                    },
                },
            })
        }
        _ => Role::Server(ServerConfig {
            signer: Some(Signer::new(SECRET)),
            direct: false,
            imdsv2: if sel & 8 == 0 {
                ImdsV2::Optional
            } else {
                ImdsV2::Required
            },
            dhcp_domain: "novalocal".to_owned(),
            today: Date::new(2026, 11, 25),
            entropy: Arc::new(Counter(0.into())),
            tokens: crate::metadata::Tokens::new(
                crate::metadata::TokenKeys::random(&Counter(0.into())),
                crate::metadata::TokenClock::new(crate::testing::epoch(), Duration::ZERO),
            ),
        }),
    };
    EndpointConfig {
        role,
        limits,
        // The ns-proxy's connection limits small enough to be reached.
        conns: match sel % 3 {
            0 => ConnLimits {
                max_conns: 6,
                max_conns_per_ip: 4,
            },
            _ => ConnLimits::default(),
        },
        timeouts,
        tls: Default::default(),
        metrics: None,
        admin: None,
    }
}

const PEERS: [Option<&str>; 6] = [
    Some("127.0.0.1:40000"),
    Some("127.0.0.2:40001"),
    Some("10.0.0.5:51515"),
    Some("[::1]:40002"),
    Some("[::ffff:10.0.0.5]:40003"),
    None,
];

const STEPS_MS: [u64; 10] = [0, 1, 10, 100, 500, 1_000, 2_000, 3_000, 6_000, 40_000];

/// The fuzz body: see the module docs.
pub fn proxy_conn(data: &[u8]) {
    let mut cur = Cursor { data };
    let sel = cur.byte();
    let cfg = config(sel);
    let role = sel % 3;
    let t0 = crate::testing::epoch();
    let head_limit = cfg.limits.max_head;
    let mut h = Harness {
        ep: Endpoint::new(t0, cfg),
        now: t0,
        contract: Contract::new(),
        io: BTreeMap::new(),
        bound: HIGH_WATER + head_limit + RESPONSE_HEAD + 2 * MAX_READ + 4096,
        accepted: 0,
    };
    if role == 2 {
        static INSTANCE_DATA: OnceLock<InstanceData> = OnceLock::new();
        let inst = INSTANCE_DATA.get_or_init(|| {
            let text = include_str!("../../../tests/golden/instance.toml");
            parse_instance(text, Format::Toml).expect("sample instance")
        });
        h.ep.reload(
            t0,
            Reload::Instances(vec![inst.clone()], Date::new(2026, 11, 25)),
        );
    }
    h.drain();
    static REQUESTS: OnceLock<[Vec<Vec<u8>>; 3]> = OnceLock::new();
    let requests = &REQUESTS.get_or_init(|| [0, 1, 2].map(client_requests))[usize::from(role)];
    let mut drained = false;
    let mut ops = 0;
    while !cur.is_empty() && ops < 256 {
        ops += 1;
        h.contract.check_buffers(&h.ep, h.bound);
        match cur.byte() % 16 {
            0 => {
                if h.accepted < MAX_ACCEPTS {
                    h.accepted += 1;
                    let peer = PEERS[usize::from(cur.byte()) % PEERS.len()]
                        .map(|p| p.parse().expect("peer address"));
                    let peer = if role == 0 {
                        peer.or(PEERS[0].and_then(|p| p.parse().ok()))
                    } else {
                        peer
                    };
                    let sock = h.ep.accept(h.now, peer);
                    h.contract.accepted(sock);
                    h.drain();
                }
            }
            1 => {
                let (which, len) = (cur.byte(), cur.byte());
                let bytes = cur.bytes(usize::from(len)).to_vec();
                if let Some(s) = h.pick(true, which) {
                    h.read(s, &bytes, MAX_READ);
                }
            }
            2 => {
                let (which, req, cut) = (cur.byte(), cur.byte(), cur.byte());
                let bytes = &requests[usize::from(req) % requests.len()];
                if let Some(s) = h.pick(true, which) {
                    h.read(s, &bytes.clone(), usize::from(cut));
                }
            }
            3 => {
                if let Some(s) = h.pick(true, cur.byte()) {
                    h.eof(s);
                }
            }
            4 | 9 => {
                let client = cur.byte() % 2 == 0;
                if let Some(s) = h.pick(client, cur.byte()) {
                    // A reset may be noticed at any time, even on a socket already closed.
                    h.input(s, Input::Error);
                }
            }
            5 => {
                let (which, how) = (cur.byte(), cur.byte());
                if let Some(s) = h.pick(false, which) {
                    h.connect_result(s, how);
                }
            }
            6 => {
                let (which, len) = (cur.byte(), cur.byte());
                let bytes = cur.bytes(usize::from(len)).to_vec();
                if let Some(s) = h.pick(false, which) {
                    h.read(s, &bytes, MAX_READ);
                }
            }
            7 => {
                let (which, resp, cut) = (cur.byte(), cur.byte(), cur.byte());
                let bytes = RESPONSES[usize::from(resp) % RESPONSES.len()];
                if let Some(s) = h.pick(false, which) {
                    h.read(s, bytes, usize::from(cut));
                }
            }
            8 => {
                if let Some(s) = h.pick(false, cur.byte()) {
                    h.eof(s);
                }
            }
            10 => {
                // A partial write of `amount` × 61 bytes (0: everything).
                let client = cur.byte() % 2 == 0;
                let (which, amount) = (cur.byte(), cur.byte());
                if let Some(s) = h.pick(client, which) {
                    let st = h.state(s);
                    if !st.closed && !st.connecting {
                        let max = if amount == 0 {
                            usize::MAX
                        } else {
                            usize::from(amount) * 61
                        };
                        h.write(s, max);
                        h.drain();
                    }
                }
            }
            11 => {
                let b = cur.byte();
                h.now += Duration::from_millis(STEPS_MS[usize::from(b % 10)]);
                h.timeout(b & 0x80 != 0);
            }
            12 => {
                if !drained && cur.byte() % 4 == 0 {
                    drained = true;
                    h.ep.begin_drain(h.now);
                    h.drain();
                }
            }
            13 => {
                // A large body or head: `k` KiB of one byte, in reads of `cut`.
                let (which, k, fill, cut) = (cur.byte(), cur.byte(), cur.byte(), cur.byte());
                let bytes = vec![fill; (usize::from(k) + 1) * 1024];
                let client = which % 2 == 0;
                if let Some(s) = h.pick(client, which / 2) {
                    h.read(s, &bytes, (usize::from(cut) + 1) * 64);
                }
            }
            14 => {
                let client = cur.byte() % 2 == 0;
                if let Some(s) = h.pick(client, cur.byte()) {
                    let io = h.io.entry(s).or_default();
                    io.stalled = !io.stalled;
                    let (stalled, st) = (io.stalled, h.state(s));
                    if !stalled && !st.closed && !st.connecting {
                        h.write(s, usize::MAX);
                        h.drain();
                    }
                }
            }
            _ => {
                // A whole upstream response body of `k` KiB, Content-Length framed.
                let (which, k) = (cur.byte(), cur.byte());
                let len = (usize::from(k) + 1) * 1024;
                let mut bytes =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
                bytes.resize(bytes.len() + len, b'x');
                if let Some(s) = h.pick(false, which) {
                    h.read(s, &bytes, MAX_READ);
                }
            }
        }
    }
    h.finish();
}
