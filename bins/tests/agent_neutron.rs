//! End-to-end tests of `mdproxy agent --backend neutron`: the real binary (one worker) between a
//! raw client on its Unix socket, a fake Keystone + Neutron that record and count every request
//! ([`FakeOpenStack`]), and a recording fake metadata server.

mod common;

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

runtime_tests! {
    full_path_asks_neutron_exactly_and_signs_the_port,
    unknown_ip_gets_404,
    thousand_concurrent_first_requests_make_one_port_query,
    cache_ttl_expiry_makes_a_new_query,
    one_token_serves_many_lookups,
    expiring_token_is_renewed_before_neutron_refuses_it,
    neutron_401_makes_exactly_one_reauth_and_retry,
    neutron_500_gives_503_while_cached_instances_are_served,
    refused_credentials_give_503_and_a_clear_log,
    hanging_neutron_gives_503_within_the_timeout,
    metadata_404_for_a_cached_instance_looks_it_up_again,
    bad_neutron_configuration_exits_2,
    explain_tells_the_lookup_cache_and_never_asks_neutron,
}

const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";
const INSTANCE_A: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e5f";
const INSTANCE_B: &str = "7b1f2b63-4d2c-4b9f-8e80-1b2c3d4e5f60";
const INSTANCE_C: &str = "9c3a4d75-6e5f-4a0b-9c1d-2e3f4a5b6c7d";
/// The router's second interface network ([`NETWORK`] is its first).
const NETWORK_B: &str = "e4d3c2b1-0a9f-4e8d-b7c6-a5b4c3d2e1f0";
const SECRET: &str = "s3cr3t";
/// Written with a trailing newline, which is not part of the password.
const PASSWORD: &str = "correct horse battery staple";

/// [`ROUTER`] with [`NETWORK`] and [`NETWORK_B`]; 10.0.0.5 is [`INSTANCE_A`], 10.0.0.6
/// [`INSTANCE_B`], 10.0.0.7 [`INSTANCE_C`] (on `NETWORK`), 10.1.0.7 is `INSTANCE_C` too
/// (on `NETWORK_B`).
fn openstack(password: Option<&str>) -> FakeOpenStack {
    FakeOpenStack::start(
        password,
        &[(ROUTER, &[NETWORK, NETWORK_B])],
        &[
            FakePort::new(NETWORK, "10.0.0.5", INSTANCE_A, PROJECT),
            FakePort::new(NETWORK, "10.0.0.6", INSTANCE_B, PROJECT),
            FakePort::new(NETWORK, "10.0.0.7", INSTANCE_C, PROJECT),
            FakePort::new(NETWORK_B, "10.1.0.7", INSTANCE_C, PROJECT),
        ],
    )
}

/// How the agent finds and authenticates to Neutron.
#[derive(Clone, Copy)]
enum Auth {
    /// Keystone, and Neutron from its catalog.
    Catalog,
    /// Keystone, and an explicit `--neutron-url`.
    Explicit,
    /// No Keystone: `--neutron-url` only.
    Noauth,
}

/// A metadata server that answers 200 with the X-Instance-ID it was sent, or 404 for the
/// instances in `gone`.
fn metadata_server(gone: Arc<Mutex<Vec<String>>>) -> Upstream {
    Upstream::start_tcp(move |req| {
        let id = req.header_values("x-instance-id").join(",");
        match gone.lock().unwrap().contains(&id) {
            true => Reply::Send(http_response("404 Not Found", &[], b"")),
            false => Reply::Send(ok_response(id.as_bytes())),
        }
    })
}

/// A running neutron-backed agent with its files.
struct Rig {
    agent: Agent,
    _dir: TempDir,
}

impl Rig {
    fn start(
        rt: Runtime,
        os: &FakeOpenStack,
        server: &Upstream,
        auth: Auth,
        extra: &[&str],
    ) -> Rig {
        let dir = TempDir::new();
        let (secret, password) = (dir.join("secret"), dir.join("password"));
        fs::write(&secret, format!("{SECRET}\n")).unwrap();
        fs::write(&password, format!("{PASSWORD}\n")).unwrap();
        let mut args = vec![
            "--workers=1".to_owned(),
            "--backend=neutron".to_owned(),
            format!("--shared-secret-file={}", secret.display()),
            format!("--metadata-url={}", server.url()),
        ];
        if let Auth::Catalog | Auth::Explicit = auth {
            args.extend([
                format!("--auth-url={}", os.auth_url()),
                "--username=mdproxy".to_owned(),
                format!("--password-file={}", password.display()),
                "--project-name=service".to_owned(),
                "--region-name=RegionOne".to_owned(),
            ]);
        }
        if let Auth::Explicit | Auth::Noauth = auth {
            args.push(format!("--neutron-url={}", os.neutron_url()));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let agent = Agent::start(rt, &dir.join("agent.sock"), &args);
        Rig { agent, _dir: dir }
    }

    /// One request from `ip` behind [`ROUTER`], on a fresh connection.
    fn get(&self, ip: &str) -> Response {
        request_unix(&self.agent.socket, &from_router(ip))
    }
}

/// A request as an ns-proxy sends it: from `ip`, behind [`ROUTER`].
fn from_router(ip: &str) -> Vec<u8> {
    proxied(ip, &format!("X-Neutron-Router-ID: {ROUTER}"))
}

fn proxied(ip: &str, scope: &str) -> Vec<u8> {
    format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-Forwarded-For: {ip}\r\n{scope}\r\n\r\n"
    )
    .into_bytes()
}

/// Asserts a 200 whose body (the metadata server's echo) is `instance`.
fn assert_served(resp: &Response, instance: &str) {
    assert_eq!(
        (resp.status, resp.body_text()),
        (200, instance.to_owned()),
        "{resp:?}"
    );
}

/// The X-Instance-ID of every request the metadata server received, in order.
fn instance_ids(server: &Upstream) -> Vec<String> {
    server
        .recorded()
        .iter()
        .map(|r| r.header_values("x-instance-id").join(","))
        .collect()
}

/// `pairs` sorted, for comparing query strings as multisets of pairs.
fn sorted(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

/// Asserts Neutron got exactly these query pairs (in any order, each as often as listed).
fn assert_query(req: &Recorded, want: &[(&str, &str)]) {
    let mut got = req.query_pairs();
    got.sort();
    assert_eq!(got, sorted(want), "{}", req.head);
}

/// The port query for `ip` on `networks`, as Neutron's agent asks it.
fn port_query<'a>(ip: &'a str, networks: &[&'a str]) -> Vec<(&'a str, String)> {
    let mut q = vec![("fixed_ips", format!("ip_address={ip}"))];
    q.extend(networks.iter().map(|n| ("network_id", n.to_string())));
    for f in ["device_id", "project_id", "tenant_id"] {
        q.push(("fields", f.to_owned()));
    }
    q
}

fn assert_port_query(req: &Recorded, ip: &str, networks: &[&str]) {
    let want = port_query(ip, networks);
    let want: Vec<(&str, &str)> = want.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_query(req, &want);
}

fn full_path_asks_neutron_exactly_and_signs_the_port(rt: Runtime) {
    let os = openstack(Some(PASSWORD));
    let server = metadata_server(Arc::default());
    let rig = Rig::start(rt, &os, &server, Auth::Catalog, &["--debug"]);
    assert_served(&rig.get("10.0.0.5"), INSTANCE_A);

    // Keystone: one password authentication, scoped to the project, asking for the catalog.
    let auths = os.keystone.recorded();
    assert_eq!(auths.len(), 1, "{auths:?}");
    let auth = &auths[0];
    assert_eq!(
        (auth.method(), auth.path()),
        ("POST", "/identity/v3/auth/tokens")
    );
    assert_eq!(auth.header_values("content-type"), ["application/json"]);
    let normalise = "import json, sys; print(json.dumps(json.loads(sys.argv[1]), sort_keys=True))";
    let want = format!(
        r#"{{"auth": {{"identity": {{"methods": ["password"], "password": {{"user": {{
            "name": "mdproxy", "domain": {{"name": "Default"}}, "password": "{PASSWORD}"}}}}}},
            "scope": {{"project": {{"name": "service", "domain": {{"name": "Default"}}}}}}}}}}"#
    );
    assert_eq!(
        python(normalise, &[&String::from_utf8_lossy(&auth.body)]),
        python(normalise, &[&want])
    );

    // Neutron, at the catalog's public RegionOne endpoint, with the token: the router's
    // interface networks, then the port.
    let asked = os.neutron.recorded();
    assert_eq!(asked.len(), 2, "{asked:?}");
    let token = os.tokens()[0].clone();
    let host = os.neutron.url().replace("http://", "");
    for req in &asked {
        assert_eq!(
            (req.method(), req.path_only()),
            ("GET", "/networking/v2.0/ports")
        );
        assert_eq!(req.header_values("x-auth-token"), [token.as_str()]);
        assert_eq!(req.header_values("host"), [host.as_str()]);
    }
    assert_query(
        &asked[0],
        &[
            ("device_id", ROUTER),
            ("device_owner", "network:router_interface"),
            ("device_owner", "network:ha_router_replicated_interface"),
            ("device_owner", "network:router_interface_distributed"),
            ("fields", "network_id"),
        ],
    );
    assert_port_query(&asked[1], "10.0.0.5", &[NETWORK, NETWORK_B]);

    // The metadata server: the port's instance and project, signed as Python would.
    let seen = &server.wait_for(1)[0];
    let hmac = "import hashlib, hmac, sys; \
                print(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest())";
    let signature = python(hmac, &[SECRET, INSTANCE_A]);
    for (name, want) in [
        ("X-Instance-ID", INSTANCE_A),
        ("X-Tenant-ID", PROJECT),
        ("X-Forwarded-For", "10.0.0.5"),
        ("X-Instance-ID-Signature", &signature),
    ] {
        assert_eq!(seen.header_values(name), [want], "{name}:\n{}", seen.head);
    }

    // Network scope: no router query, the port on that network only.
    let resp = request_unix(
        &rig.agent.socket,
        &proxied("10.1.0.7", &format!("X-Neutron-Network-ID: {NETWORK_B}")),
    );
    assert_served(&resp, INSTANCE_C);
    let asked = os.neutron.recorded();
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert_port_query(&asked[2], "10.1.0.7", &[NETWORK_B]);
    assert_eq!(os.keystone.count(), 1);

    let log = rig.agent.log();
    assert!(log.contains("neutron backend"), "{log}");
    assert!(!log.contains(PASSWORD), "the password was logged:\n{log}");
    assert!(!log.contains(&token), "the token was logged:\n{log}");
}

fn unknown_ip_gets_404(rt: Runtime) {
    let os = openstack(Some(PASSWORD));
    let server = metadata_server(Arc::default());
    let rig = Rig::start(rt, &os, &server, Auth::Catalog, &[]);
    let resp = rig.get("10.0.0.99");
    assert_eq!(resp.status, 404, "{resp:?}");
    let want = format!("Instance was not found on router {ROUTER}.");
    assert!(resp.body_text().contains(&want), "{resp:?}");
    let resp = request_unix(
        &rig.agent.socket,
        &proxied("10.0.0.99", &format!("X-Neutron-Network-ID: {NETWORK}")),
    );
    assert_eq!(resp.status, 404, "{resp:?}");
    let want = format!("Instance was not found on network {NETWORK}.");
    assert!(resp.body_text().contains(&want), "{resp:?}");
    let asked = os.port_queries();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_port_query(&asked[0], "10.0.0.99", &[NETWORK, NETWORK_B]);
    assert_port_query(&asked[1], "10.0.0.99", &[NETWORK]);
    assert_eq!(server.count(), 0);
}

/// Raises this process's open-file limit (inherited by the agent) as far as allowed: a
/// thousand connections take a few thousand descriptors on each side.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= 8192,
        "this test needs 8192 open files; the hard limit is {}",
        lim.rlim_cur
    );
}

fn thousand_concurrent_first_requests_make_one_port_query(rt: Runtime) {
    const CLIENTS: usize = 1000;
    const THREADS: usize = 4;
    raise_fd_limit();
    let os = openstack(Some(PASSWORD));
    let gate = Arc::new(Gate::default());
    os.set_port_gate(Some(gate.clone()));
    let server = metadata_server(Arc::default());
    let rig = Rig::start(rt, &os, &server, Auth::Catalog, &[]);
    // Each thread opens its share of the connections and sends on each, then hands back the
    // clients and a second handle on each socket to watch.
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let socket = rig.agent.socket.clone();
            thread::spawn(move || {
                (0..CLIENTS / THREADS)
                    .map(|_| {
                        let stream = UnixStream::connect(&socket).expect("connect to the agent");
                        let probe = stream.try_clone().unwrap();
                        let mut client = Client::over_unix(stream);
                        client.send(&from_router("10.0.0.5")).unwrap();
                        (client, probe)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let (clients, probes): (Vec<Client>, Vec<UnixStream>) =
        threads.into_iter().flat_map(|t| t.join().unwrap()).unzip();
    assert_eq!(clients.len(), CLIENTS);
    // The fake Neutron holds the port answer until the agent has read every request.
    assert!(
        eventually(|| !os.port_queries().is_empty()),
        "no port query"
    );
    let unread = || probes.iter().filter(|p| unread_by_peer(p) > 0).count();
    assert!(eventually(|| unread() == 0), "{} requests unread", unread());
    assert_eq!(os.port_queries().len(), 1);
    gate.open();
    // Read the answers from a few threads too.
    let mut clients = clients;
    let readers: Vec<_> = (0..THREADS)
        .map(|_| {
            let mine = clients.split_off(clients.len() - CLIENTS / THREADS);
            thread::spawn(move || {
                mine.into_iter()
                    .map(|mut c| c.response())
                    .collect::<Vec<Response>>()
            })
        })
        .collect();
    let responses: Vec<Response> = readers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(responses.len(), CLIENTS);
    for resp in &responses {
        assert_served(resp, INSTANCE_A);
    }
    assert_eq!(os.port_queries().len(), 1);
    assert_eq!(os.router_queries().len(), 1);
    assert_eq!(os.keystone.count(), 1);
    assert_eq!(server.count(), CLIENTS);
}

fn cache_ttl_expiry_makes_a_new_query(rt: Runtime) {
    let os = openstack(Some(PASSWORD));
    let server = metadata_server(Arc::default());
    let rig = Rig::start(rt, &os, &server, Auth::Catalog, &["--cache-ttl=1"]);
    assert_served(&rig.get("10.0.0.5"), INSTANCE_A);
    let answered = Instant::now();
    assert_eq!(os.port_queries().len(), 1);
    assert_served(&rig.get("10.0.0.5"), INSTANCE_A);
    if answered.elapsed() < Duration::from_millis(500) {
        assert_eq!(os.port_queries().len(), 1, "a cached answer was not used");
    }
    let requeried = eventually(|| {
        assert_served(&rig.get("10.0.0.5"), INSTANCE_A);
        os.port_queries().len() == 2
    });
    let waited = answered.elapsed();
    assert!(requeried, "no new query after the TTL");
    assert!(
        waited >= Duration::from_millis(800),
        "asked again after {waited:?}"
    );
    let asked = os.port_queries();
    assert_port_query(&asked[1], "10.0.0.5", &[NETWORK, NETWORK_B]);
}

fn one_token_serves_many_lookups(rt: Runtime) {
    let os = openstack(Some(PASSWORD));
    let server = metadata_server(Arc::default());
    let rig = Rig::start(rt, &os, &server, Auth::Catalog, &[]);
    for (ip, instance) in [
        ("10.0.0.5", INSTANCE_A),
        ("10.0.0.6", INSTANCE_B),
        ("10.0.0.7", INSTANCE_C),
    ] {
        assert_served(&rig.get(ip), instance);
    }
    assert_eq!(os.keystone.count(), 1);
    assert_eq!(os.port_queries().len(), 3);
    // The router's networks are cached too (for --cache-ttl).
    assert_eq!(os.router_queries().len(), 1);
    let token = os.tokens()[0].clone();
    for req in os.neutron.recorded() {
        assert_eq!(req.header_values("x-auth-token"), [token.as_str()]);
    }
    assert_eq!(os.unauthorized(), 0);
}

fn expiring_token_is_renewed_before_neutron_refuses_it(rt: Runtime) {
    let os = openstack(Some(PASSWORD));
    os.set_token_lifetime(Duration::from_secs(2));
    let server = metadata_server(Arc::default());
    let rig = Rig::start(rt, &os, &server, Auth::Catalog, &[]);
    assert_served(&rig.get("10.0.0.5"), INSTANCE_A);
    assert_eq!(os.keystone.count(), 1);
    assert!(eventually(|| os.token_expired(0)));
    assert_served(&rig.get("10.0.0.6"), INSTANCE_B);
    assert_eq!(os.keystone.count(), 2);
    assert_eq!(os.unauthorized(), 0, "the agent used an expired token");
    let last = os.port_queries().pop().unwrap();
    assert_eq!(
        last.header_values("x-auth-token"),
        [os.tokens()[1].as_str()]
    );
}

fn neutron_401_makes_exactly_one_reauth_and_retry(rt: Runtime) {
    let os = openstack(Some(PASSWORD));
    let server = metadata_server(Arc::default());
    let rig = Rig::start(rt, &os, &server, Auth::Explicit, &[]);
    assert_served(&rig.get("10.0.0.5"), INSTANCE_A);
    // With --neutron-url the catalog is not wanted.
    assert_eq!(os.keystone.recorded()[0].query(), "nocatalog");

    os.revoke_tokens();
    assert_served(&rig.get("10.0.0.6"), INSTANCE_B);
    assert_eq!((os.keystone.count(), os.unauthorized()), (2, 1));
    let asked = os.port_queries();
    assert_eq!(asked.len(), 3, "{asked:?}");
    let tokens = os.tokens();
    for (req, token) in asked[1..].iter().zip(&tokens) {
        assert_port_query(req, "10.0.0.6", &[NETWORK, NETWORK_B]);
        assert_eq!(req.header_values("x-auth-token"), [token.as_str()]);
    }

    // A Neutron that refuses every token: one re-auth, one retry, then 503.
    os.set_mode(NeutronMode::Status(401));
    let resp = rig.get("10.0.0.7");
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!((os.keystone.count(), os.unauthorized()), (3, 3));
    assert_eq!(os.port_queries().len(), 5);
    assert_eq!(server.count(), 2);
}

fn neutron_500_gives_503_while_cached_instances_are_served(rt: Runtime) {
    let os = openstack(None);
    let server = metadata_server(Arc::default());
    let rig = Rig::start(rt, &os, &server, Auth::Noauth, &["--cache-ttl=60"]);
    assert_served(&rig.get("10.0.0.5"), INSTANCE_A);
    os.set_mode(NeutronMode::Status(500));
    let resp = rig.get("10.0.0.6");
    assert_eq!(resp.status, 503, "{resp:?}");
    assert!(
        resp.body_text().contains("could not look up the instance"),
        "{resp:?}"
    );
    assert_served(&rig.get("10.0.0.5"), INSTANCE_A);
    // The failure is not remembered: once Neutron is back, the instance is found.
    os.set_mode(NeutronMode::Normal);
    assert_served(&rig.get("10.0.0.6"), INSTANCE_B);
    assert_eq!(instance_ids(&server), [INSTANCE_A, INSTANCE_A, INSTANCE_B]);
    // noauth: no Keystone, no token.
    assert_eq!(os.keystone.count(), 0);
    for req in os.neutron.recorded() {
        assert!(req.header_values("x-auth-token").is_empty(), "{}", req.head);
    }
    assert!(rig.agent.log().contains("500"), "{}", rig.agent.log());
}

fn refused_credentials_give_503_and_a_clear_log(rt: Runtime) {
    let os = openstack(Some("another password"));
    let server = metadata_server(Arc::default());
    let rig = Rig::start(rt, &os, &server, Auth::Catalog, &[]);
    for n in 1..=2 {
        let resp = rig.get("10.0.0.5");
        assert_eq!(resp.status, 503, "{resp:?}");
        // One authentication per lookup: no retry loop against Keystone.
        assert_eq!(os.keystone.count(), n);
    }
    assert_eq!((os.neutron.count(), server.count()), (0, 0));
    rig.agent.wait_for_log("credentials refused");
}

fn hanging_neutron_gives_503_within_the_timeout(rt: Runtime) {
    let os = openstack(Some(PASSWORD));
    let server = metadata_server(Arc::default());
    let extra = ["--neutron-timeout=1", "--cache-ttl=60"];
    let rig = Rig::start(rt, &os, &server, Auth::Catalog, &extra);
    assert_served(&rig.get("10.0.0.5"), INSTANCE_A);
    os.set_mode(NeutronMode::Hang);
    let mut waiting = Client::connect_unix(&rig.agent.socket);
    let started = Instant::now();
    waiting.send(&from_router("10.0.0.6")).unwrap();
    assert!(eventually(|| os.port_queries().len() == 2));
    // While that lookup hangs, the cached instance is served.
    assert_served(&rig.get("10.0.0.5"), INSTANCE_A);
    let resp = waiting.response();
    let took = started.elapsed();
    assert_eq!(resp.status, 503, "{resp:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "503 after {took:?}"
    );
    assert_eq!(server.count(), 2);
}

fn metadata_404_for_a_cached_instance_looks_it_up_again(rt: Runtime) {
    let os = openstack(Some(PASSWORD));
    let gone = Arc::new(Mutex::new(Vec::new()));
    let server = metadata_server(gone.clone());
    let rig = Rig::start(rt, &os, &server, Auth::Catalog, &["--cache-ttl=60"]);
    assert_served(&rig.get("10.0.0.5"), INSTANCE_A);
    assert_eq!(os.port_queries().len(), 1);
    // Instance A is deleted and B gets its address; the agent's cache still says A.
    gone.lock().unwrap().push(INSTANCE_A.to_owned());
    os.reassign("10.0.0.5", INSTANCE_B);
    assert_served(&rig.get("10.0.0.5"), INSTANCE_B);
    assert_eq!(os.port_queries().len(), 2);
    assert_eq!(instance_ids(&server), [INSTANCE_A, INSTANCE_A, INSTANCE_B]);
    // The new answer is cached.
    assert_served(&rig.get("10.0.0.5"), INSTANCE_B);
    assert_eq!(os.port_queries().len(), 2);
}

/// Runs `mdproxy agent --backend neutron` with `args`; it must exit 2 saying `want`, without
/// having bound its socket.
fn assert_config_error(rt: Runtime, args: &[String], want: &str) {
    let dir = TempDir::new();
    let socket = dir.join("agent.sock");
    let mut all = vec![
        "agent".to_owned(),
        format!("--runtime={}", rt.name()),
        format!("--listen-socket={}", socket.display()),
        "--shared-secret-file=/dev/null".to_owned(),
        "--backend=neutron".to_owned(),
    ];
    all.extend_from_slice(args);
    assert_exit_2(&all, want);
    assert!(!socket.exists(), "{args:?}: bound before failing");
}

fn bad_neutron_configuration_exits_2(rt: Runtime) {
    let dir = TempDir::new();
    let password: PathBuf = dir.join("password");
    fs::write(&password, [0xff, 0xfe]).unwrap();
    let keystone = |auth_url: &str, password: &str| -> Vec<String> {
        vec![
            format!("--auth-url={auth_url}"),
            "--username=u".to_owned(),
            format!("--password-file={password}"),
            "--project-name=p".to_owned(),
        ]
    };
    let ok_url = "http://127.0.0.1:5000/v3";
    // A build without TLS refuses https itself.
    let tls = |want| match cfg!(feature = "tls") {
        true => want,
        false => "this build has no TLS",
    };
    let mut https_keystone = keystone("https://127.0.0.1:5000/v3", "/p");
    https_keystone.extend(["--neutron-insecure".into(), "--neutron-ca-file=/ca".into()]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (https_keystone, tls("give one of them")),
        (
            vec![
                "--neutron-url=https://127.0.0.1:9696".to_owned(),
                "--neutron-ca-file=/nonexistent/ca.pem".to_owned(),
            ],
            tls("cannot read /nonexistent/ca.pem"),
        ),
        (
            keystone(ok_url, "/nonexistent/password"),
            "/nonexistent/password",
        ),
        (
            keystone(ok_url, &password.display().to_string()),
            "not UTF-8",
        ),
        (vec![format!("--auth-url={ok_url}")], "--username"),
        (vec![], "--neutron-url"),
    ];
    for (args, want) in cases {
        assert_config_error(rt, &args, want);
    }
    let flags = [
        "--backend",
        "--neutron-url",
        "--auth-url",
        "--username",
        "--password-file",
        "--project-name",
        "--user-domain-name",
        "--project-domain-name",
        "--region-name",
        "--interface",
        "--neutron-timeout",
        "noauth",
    ];
    assert_help_mentions(&["agent", "--help"], &flags);
}

/// `/explain` on the admin listener shows what the lookup cache holds — nothing, a hit with
/// its age, a negative answer — and never asks Neutron itself.
fn explain_tells_the_lookup_cache_and_never_asks_neutron(rt: Runtime) {
    let os = openstack(Some(PASSWORD));
    let server = metadata_server(Arc::default());
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let flag = format!("--admin-listen={admin}");
    let rig = Rig::start(rt, &os, &server, Auth::Explicit, &[&flag]);
    let explain = |ip: &str| -> serde_json::Value {
        let r = request(admin, &get(&format!("/explain?router={ROUTER}&ip={ip}")));
        assert_eq!(r.status, 200, "{r:?}");
        serde_json::from_str(&r.body_text()).unwrap()
    };
    let e = explain("10.0.0.5");
    assert_eq!(
        (e["backend"].as_str(), e["lookup"].as_str()),
        (Some("neutron"), Some("not cached")),
        "{e}"
    );
    assert_eq!(e["cache"]["state"], "miss", "{e}");
    assert!(
        e["answer"]
            .as_str()
            .unwrap_or_default()
            .contains("asked first"),
        "{e}"
    );
    assert_eq!(os.neutron.count(), 0, "explain asked Neutron");

    assert_served(&rig.get("10.0.0.5"), INSTANCE_A);
    assert_eq!(rig.get("10.9.9.9").status, 404);
    let asked = os.neutron.count();
    let e = explain("10.0.0.5");
    assert_eq!(
        (e["lookup"].as_str(), e["instance"].as_str()),
        (Some("found"), Some(INSTANCE_A)),
        "{e}"
    );
    assert_eq!(
        (e["project"].as_str(), e["cache"]["state"].as_str()),
        (Some(PROJECT), Some("hit")),
        "{e}"
    );
    assert!(
        e["cache"]["age_seconds"].as_f64().is_some_and(|a| a >= 0.0),
        "{e}"
    );
    let e = explain("10.9.9.9");
    assert_eq!(
        (e["lookup"].as_str(), e["cache"]["state"].as_str()),
        (Some("not found"), Some("negative")),
        "{e}"
    );
    assert!(
        e["answer"]
            .as_str()
            .unwrap_or_default()
            .starts_with("404: "),
        "{e}"
    );
    assert_eq!(os.neutron.count(), asked, "explain asked Neutron");
}
