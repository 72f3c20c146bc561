//! The agent with several metadata servers, against the real binary on both runtimes: a
//! server killed mid-run, one that accepts and never answers, one answering 500 for a while,
//! every one down with the response cache on, a POST that must not go twice, and an IP reused
//! by another instance while answers are cached.
//!
//! The fake Nova here can be killed (its listener closed, its connections cut) and restarted
//! on the same port, and switched between answering, 500 and hanging.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common::*;

runtime_tests! {
    a_killed_server_leaves_the_other_answering,
    a_server_that_never_answers_leaves_time_for_the_other,
    a_failing_server_is_marked_down_probed_and_back,
    every_server_down_answers_stale_then_503,
    a_post_is_never_sent_twice,
    a_reused_ip_never_gets_the_other_instances_answer,
    a_deleted_instances_answer_is_not_served_from_a_cached_lookup,
}

const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";
const INSTANCE_A: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e5f";
const INSTANCE_B: &str = "7b1f2b63-4d2c-4b9f-8e80-1b2c3d4e5f60";
const IP: &str = "10.0.0.5";

const OK: u8 = 0;
const FIVE_HUNDRED: u8 = 1;
const HANG: u8 = 2;

/// One request a fake Nova received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
}

/// A fake Nova on a fixed loopback port: answers `200 <name> <X-Instance-ID>` (or 500, or
/// nothing), records what it got, and can be killed and restarted.
struct Nova {
    name: &'static str,
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    killed: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Nova {
    fn start(name: &'static str) -> Nova {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let nova = Nova {
            name,
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(AtomicU8::new(OK)),
            killed: Arc::new(AtomicBool::new(false)),
            seen: Arc::default(),
            conns: Arc::default(),
        };
        nova.serve(listener);
        nova
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// Requests seen so far, but the health probes (`GET /`).
    fn requests(&self) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap().clone();
        seen.into_iter().filter(|s| s.path != "/").collect()
    }

    /// Stops listening (connections are refused from now on) and cuts every connection.
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        // Wakes the accept, which sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
        let listening = eventually(|| TcpStream::connect(self.addr).is_err());
        assert!(listening, "{} still accepts", self.name);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port.
    fn restart(&self) {
        self.killed.store(false, Ordering::SeqCst);
        let mut listener = None;
        eventually(|| {
            listener = TcpListener::bind(self.addr).ok();
            listener.is_some()
        });
        self.serve(listener.expect("rebind the port"));
    }

    fn serve(&self, listener: TcpListener) {
        let (name, mode, killed) = (self.name, self.mode.clone(), self.killed.clone());
        let (seen, conns) = (self.seen.clone(), self.conns.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if killed.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    conns.lock().unwrap().push(c);
                }
                let (mode, seen) = (mode.clone(), seen.clone());
                thread::spawn(move || answer(name, conn, &mode, &seen));
            }
        });
    }
}

/// Serves one connection: each request is recorded, then answered as `mode` says.
fn answer(name: &str, conn: TcpStream, mode: &AtomicU8, seen: &Mutex<Vec<Seen>>) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head += &line;
            if line == "\r\n" {
                break;
            }
        }
        let mut words = head.split(' ');
        let method = words.next().unwrap_or("");
        let path = words.next().unwrap_or("");
        let len: usize = header_values(&head, "content-length")
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().unwrap().push(Seen {
            method: method.to_owned(),
            path: path.to_owned(),
        });
        let instance = header_values(&head, "x-instance-id").join(",");
        let reply = match mode.load(Ordering::SeqCst) {
            HANG => {
                let _ = reader.read_to_end(&mut Vec::new());
                return;
            }
            FIVE_HUNDRED => {
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops".to_vec()
            }
            _ => ok_response(format!("{name} {instance}").as_bytes()),
        };
        if writer.write_all(&reply).is_err() {
            return;
        }
    }
}

/// An agent's files: socket, secret, static map.
struct Files {
    _dir: TempDir,
    socket: PathBuf,
    map: PathBuf,
    secret: PathBuf,
}

fn map(instance: &str) -> String {
    format!(
        "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NETWORK}\"]\n\n[[port]]\n\
         network = \"{NETWORK}\"\nip = \"{IP}\"\ndevice_id = \"{instance}\"\n\
         project_id = \"{PROJECT}\"\n"
    )
}

impl Files {
    fn new() -> Files {
        let dir = TempDir::new();
        let files = Files {
            socket: dir.join("agent.sock"),
            map: dir.join("map.toml"),
            secret: dir.join("secret"),
            _dir: dir,
        };
        fs::write(&files.map, map(INSTANCE_A)).unwrap();
        fs::write(&files.secret, "s3cr3t\n").unwrap();
        files
    }

    /// An agent forwarding to `novas`, in that order, with `extra` flags.
    fn agent(&self, rt: Runtime, novas: &[&Nova], extra: &[&str]) -> Agent {
        let mut args = vec![
            format!("--shared-secret-file={}", self.secret.display()),
            format!("--static-map={}", self.map.display()),
        ];
        args.extend(novas.iter().map(|n| format!("--metadata-url={}", n.url())));
        args.extend(extra.iter().map(|s| s.to_string()));
        Agent::start(rt, &self.socket, &args)
    }
}

/// `method path` as an ns-proxy sends it to the agent, for the instance at [`IP`].
fn proxied(method: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Forwarded-For: {IP}\r\n\
         X-Neutron-Router-ID: {ROUTER}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(agent: &Agent, path: &str) -> Response {
    request_unix(&agent.socket, &proxied("GET", path, ""))
}

const PATH: &str = "/latest/meta-data/instance-id";

fn a_killed_server_leaves_the_other_answering(rt: Runtime) {
    let (a, b) = (Nova::start("a"), Nova::start("b"));
    let files = Files::new();
    let agent = files.agent(rt, &[&a, &b], &[]);
    // One keep-alive client and fresh connections alike: no request is in flight at the
    // kill, so none may fail.
    let mut client = Client::connect_unix(&agent.socket);
    for i in 0..40 {
        if i == 10 {
            assert!(!a.requests().is_empty() && !b.requests().is_empty());
            a.kill();
        }
        if i == 30 {
            a.restart();
        }
        let resp = match i % 2 {
            0 => client.exchange(&proxied("GET", PATH, "")),
            _ => get(&agent, PATH),
        };
        assert_eq!(resp.status, 200, "request {i}: {resp:?}\n{}", agent.log());
        assert!(resp.body_text().ends_with(INSTANCE_A), "{resp:?}");
    }
    let log = agent.log();
    let down = format!("metadata server {} is down", a.url());
    assert_eq!(
        log.matches(&down).count(),
        1,
        "one line when it goes down:\n{log}"
    );
    assert!(
        !log.contains(&format!("metadata server {} is down", b.url())),
        "{log}"
    );
    // Back after the restart (a trial once the backoff ran out, or on the next one).
    let back = format!("metadata server {} is back up", a.url());
    let came_back = eventually(|| get(&agent, PATH).status == 200 && agent.log().contains(&back));
    assert!(came_back, "{}", agent.log());
    assert_eq!(agent.log().matches(&back).count(), 1);
}

fn a_server_that_never_answers_leaves_time_for_the_other(rt: Runtime) {
    let (a, b) = (Nova::start("a"), Nova::start("b"));
    a.set(HANG);
    let files = Files::new();
    let agent = files.agent(rt, &[&a, &b], &["--request-deadline=2"]);
    for i in 0..4 {
        let resp = get(&agent, PATH);
        assert_eq!(resp.status, 200, "request {i}: {resp:?}\n{}", agent.log());
        assert!(resp.body_text().starts_with("b "), "{resp:?}");
    }
    assert!(!a.requests().is_empty(), "the hanging server was tried");
    agent.wait_for_log(&format!("metadata server {} is down", a.url()));
    // Both hang: the deadline holds, and its line names both servers.
    b.set(HANG);
    let resp = get(&agent, PATH);
    assert_eq!(resp.status, 504, "{resp:?}");
    let log = agent.wait_for_log("request deadline passed");
    let line = log
        .lines()
        .find(|l| l.contains("request deadline passed"))
        .unwrap();
    assert!(line.contains(&a.url()) && line.contains(&b.url()), "{line}");
}

fn a_failing_server_is_marked_down_probed_and_back(rt: Runtime) {
    let (a, b) = (Nova::start("a"), Nova::start("b"));
    a.set(FIVE_HUNDRED);
    let files = Files::new();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let flags = [
        "--metadata-probe-interval=0.2".to_owned(),
        format!("--metrics-listen={metrics}"),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let agent = files.agent(rt, &[&a, &b], &flags);
    let up = |nova: &Nova| {
        format!(
            "mdproxy_upstream_server_up{{role=\"agent\",server=\"{}\"}}",
            nova.url()
        )
    };
    // Every GET answered by b, a's 500s retried there.
    for i in 0..4 {
        let resp = get(&agent, PATH);
        assert_eq!(resp.status, 200, "request {i}: {resp:?}\n{}", agent.log());
        assert!(resp.body_text().starts_with("b "), "{resp:?}");
    }
    agent.wait_for_log(&format!("metadata server {} is down", a.url()));
    let text = scrape(metrics);
    assert!(text.contains(&format!("{} 0\n", up(&a))), "{text}");
    assert!(text.contains(&format!("{} 1\n", up(&b))), "{text}");
    let retried = format!(
        "mdproxy_upstream_retries_total{{role=\"agent\",server=\"{}\"}} 0",
        b.url()
    );
    assert!(
        !text.contains(&retried),
        "a's 500s were retried on b: {text}"
    );
    let before = a.requests().len();
    a.set(OK);
    // Probes (GET /) find it back without any request sent to it.
    agent.wait_for_log(&format!("metadata server {} is back up", a.url()));
    assert!(a.seen.lock().unwrap().iter().any(|s| s.path == "/"));
    assert_eq!(a.requests().len(), before, "brought back by probes alone");
    let served_by_a = eventually(|| get(&agent, PATH).body_text().starts_with("a "));
    assert!(served_by_a, "{}", agent.log());
    let text = scrape(metrics);
    assert!(text.contains(&format!("{} 1\n", up(&a))), "{text}");
}

/// GET /metrics on `addr`, once it accepts.
fn scrape(addr: SocketAddr) -> String {
    assert!(eventually(|| TcpStream::connect(addr).is_ok()));
    let resp = request(addr, &common::get("/metrics"));
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.body_text()
}

fn every_server_down_answers_stale_then_503(rt: Runtime) {
    let (a, b) = (Nova::start("a"), Nova::start("b"));
    let files = Files::new();
    let flags = ["--response-cache-ttl=0.3", "--stale-if-error=2"];
    let agent = files.agent(rt, &[&a, &b], &flags);
    let first = get(&agent, PATH);
    assert_eq!(first.status, 200, "{first:?}");
    a.kill();
    b.kill();
    // Past the TTL, every server refused: the last good answer, marked stale.
    let mut stale = None;
    let got = eventually(|| {
        let resp = get(&agent, PATH);
        let is_stale = !header_values(&resp.head, "warning").is_empty();
        stale = Some(resp);
        is_stale
    });
    let stale = stale.unwrap();
    assert!(got, "{stale:?}\n{}", agent.log());
    assert_eq!((stale.status, &stale.body), (200, &first.body), "{stale:?}");
    assert_eq!(
        header_values(&stale.head, "warning"),
        ["110 - \"Response is Stale\""]
    );
    let age: u64 = header_values(&stale.head, "age")[0].parse().unwrap();
    assert!(age <= 3, "{stale:?}");
    // Past the stale limit: the error every server's failure means.
    let unavailable = eventually(|| get(&agent, PATH).status == 503);
    assert!(unavailable, "{}", agent.log());
    // Never cached: a POST's path and the password path are no exception while all is down.
    let pw = get(&agent, "/openstack/latest/password");
    assert_eq!(pw.status, 503, "{pw:?}");
}

fn a_post_is_never_sent_twice(rt: Runtime) {
    let (a, b) = (Nova::start("a"), Nova::start("b"));
    a.set(HANG);
    let files = Files::new();
    let agent = files.agent(rt, &[&a, &b], &["--request-deadline=1"]);
    // The first request goes to the first server: a hangs on the POST.
    let post = proxied("POST", "/openstack/latest/password", "secret-pw");
    let resp = request_unix(&agent.socket, &post);
    assert_eq!(resp.status, 504, "{resp:?}");
    a.set(FIVE_HUNDRED);
    let resp = request_unix(&agent.socket, &post);
    let posts = |n: &Nova| n.requests().iter().filter(|s| s.method == "POST").count();
    // Wherever the second went, its 500 (or b's 200) came back as it was: never retried.
    match resp.status {
        500 => assert_eq!((posts(&a), posts(&b)), (2, 0)),
        200 => assert_eq!((posts(&a), posts(&b)), (1, 1)),
        other => panic!("{other}: {resp:?}"),
    }
    // A GET in the same state does go to the other server.
    let resp = get(&agent, PATH);
    assert_eq!(resp.status, 200, "{resp:?}");
}

fn a_reused_ip_never_gets_the_other_instances_answer(rt: Runtime) {
    let (a, b) = (Nova::start("a"), Nova::start("b"));
    let files = Files::new();
    let agent = files.agent(rt, &[&a, &b], &["--response-cache-ttl=600"]);
    let first = get(&agent, PATH);
    assert!(first.body_text().ends_with(INSTANCE_A), "{first:?}");
    let cached = get(&agent, PATH);
    assert_eq!(cached.body, first.body);
    assert_eq!(
        a.requests().len() + b.requests().len(),
        1,
        "the second came from the cache"
    );
    // The IP now belongs to another instance: its answer is its own, never A's entry.
    fs::write(&files.map, map(INSTANCE_B)).unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_for_log("static map reloaded");
    let resp = get(&agent, PATH);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body_text().ends_with(INSTANCE_B), "{resp:?}");
    assert_eq!(a.requests().len() + b.requests().len(), 2);
}

/// The neutron backend's lookup cache may still name a deleted instance after its IP went to
/// another: forwarding, Nova's 404 reveals it and the agent looks up again; a response-cache
/// hit would hide it, so a cached lookup is never answered from the response cache.
fn a_deleted_instances_answer_is_not_served_from_a_cached_lookup(rt: Runtime) {
    let os = FakeOpenStack::start(
        None,
        &[(ROUTER, &[NETWORK])],
        &[FakePort::new(NETWORK, IP, INSTANCE_A, PROJECT)],
    );
    let gone: Arc<Mutex<Vec<String>>> = Arc::default();
    let deleted = gone.clone();
    let nova = Upstream::start_tcp(move |req| {
        let id = req.header_values("x-instance-id").join(",");
        match deleted.lock().unwrap().contains(&id) {
            true => Reply::Send(http_response("404 Not Found", &[], b"")),
            false => Reply::Send(ok_response(id.as_bytes())),
        }
    });
    let dir = TempDir::new();
    fs::write(dir.join("secret"), "s3cr3t\n").unwrap();
    let args = [
        "--backend=neutron".to_owned(),
        format!("--neutron-url={}", os.neutron_url()),
        format!("--shared-secret-file={}", dir.join("secret").display()),
        format!("--metadata-url={}", nova.url()),
        "--cache-ttl=600".to_owned(),
        "--response-cache-ttl=600".to_owned(),
    ];
    let agent = Agent::start(rt, &dir.join("agent.sock"), &args);
    let first = get(&agent, PATH);
    assert_eq!(
        (first.status, first.body_text()),
        (200, INSTANCE_A.to_owned())
    );
    // The lookup now comes from the lookup cache: Nova is asked again.
    let second = get(&agent, PATH);
    assert_eq!(second.body, first.body);
    assert_eq!((nova.count(), os.port_queries().len()), (2, 1));
    // A is deleted and B has its IP; the lookup cache still says A, the response cache
    // holds A's answer: B gets its own.
    gone.lock().unwrap().push(INSTANCE_A.to_owned());
    os.reassign(IP, INSTANCE_B);
    let third = get(&agent, PATH);
    assert_eq!(
        (third.status, third.body_text()),
        (200, INSTANCE_B.to_owned())
    );
    assert_eq!(
        os.port_queries().len(),
        2,
        "looked up again after Nova's 404"
    );
}
