//! The agent endpoint with two metadata servers, on the simulator (time is the simulator's):
//! a refused server is passed over and left alone for its backoff, a probe brings a server
//! back, and the response cache answers while both are gone.

use std::num::NonZeroUsize;
use std::time::Duration;

use crate::config::{Resilience, Role};
use crate::socket::Target;
use crate::testing::sim::roles::{self, agent_socket, INSTANCE_IP, ROUTER};
use crate::testing::sim::{Answer, HttpServer, Message, NodeId, World};
use crate::upstream::{CacheLimits, ServerSpec, BACKOFF_MIN};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const FAIL: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";

fn nova(i: u8) -> Target {
    Target::Tcp(([127, 0, 0, 10 + i], 8775).into())
}

struct Rig {
    w: World,
    client: NodeId,
    novas: [NodeId; 2],
}

impl Rig {
    fn new(resilience: Resilience) -> Rig {
        let mut agent = roles::static_agent();
        agent.metadata = (0..2)
            .map(|i| ServerSpec::plain(nova(i), format!("nova-{i}")))
            .collect();
        agent.resilience = resilience;
        let mut w = World::new();
        w.endpoint_on(agent_socket(), roles::endpoint(Role::Agent(agent)));
        let novas = [0, 1].map(|i| w.peer_on(nova(i), HttpServer::answering(OK)));
        let client = w.add_client("127.0.0.1", agent_socket());
        Rig { w, client, novas }
    }

    fn get(&mut self, path: &str) -> Message {
        let req = format!(
            "GET {path} HTTP/1.1\r\nX-Forwarded-For: {INSTANCE_IP}\r\n\
             X-Neutron-Router-ID: {ROUTER}\r\n\r\n"
        );
        self.w.exchange(self.client, req)
    }

    /// Requests server `i` received (health probes, `GET /`, too).
    fn seen(&self, i: usize) -> Vec<String> {
        let requests = &self.w.server(self.novas[i]).requests;
        requests
            .iter()
            .map(|m| m.raw.lines().next().unwrap_or("").to_owned())
            .collect()
    }
}

#[test]
fn a_refused_server_is_left_alone_for_its_backoff_then_tried_again() {
    let mut r = Rig::new(Resilience::default());
    r.w.unlisten(&nova(0));
    for _ in 0..4 {
        r.get("/latest/meta-data/").assert_is(200, "ok");
    }
    let at_one = r.seen(1).len();
    assert_eq!(at_one, 4, "every request answered by the other");
    // Back, but still inside its backoff: not tried.
    r.w.listen(nova(0), r.novas[0]);
    for _ in 0..3 {
        r.get("/latest/meta-data/").assert_is(200, "ok");
    }
    assert!(r.seen(0).is_empty(), "{:?}", r.seen(0));
    // Past the backoff: a trial, which succeeds, and it takes its share again.
    r.w.advance(BACKOFF_MIN);
    for _ in 0..4 {
        r.get("/latest/meta-data/").assert_is(200, "ok");
    }
    assert!(r.seen(0).len() >= 2, "{:?}", r.seen(0));
}

#[test]
fn a_probe_brings_a_failing_server_back_before_any_request_does() {
    let every = Duration::from_secs(2);
    let mut r = Rig::new(Resilience {
        probe_interval: Some(every),
        ..Resilience::default()
    });
    let fail = |_: usize, _: &Message| Answer::Respond(FAIL.to_vec());
    r.w.peer_mut::<HttpServer>(r.novas[0]).set_script(fail);
    // The first probes and requests: 500s, so down.
    r.w.advance(every);
    for _ in 0..4 {
        r.get("/latest/meta-data/").assert_is(200, "ok");
    }
    let ok = |_: usize, _: &Message| Answer::Respond(OK.to_vec());
    r.w.peer_mut::<HttpServer>(r.novas[0]).set_script(ok);
    let before = r.seen(0).len();
    // With no request at all, a probe finds it answering.
    r.w.advance(every * 2);
    let probes: Vec<String> = r.seen(0).split_off(before);
    assert!(!probes.is_empty(), "probed");
    assert!(probes.iter().all(|l| l.starts_with("GET / ")), "{probes:?}");
    let now_at_zero = r.seen(0).len();
    for _ in 0..4 {
        r.get("/latest/meta-data/").assert_is(200, "ok");
    }
    let requests_at_zero = r.seen(0).len() - now_at_zero;
    assert!(requests_at_zero >= 1, "{:?}", r.seen(0));
}

#[test]
fn with_both_gone_the_cache_answers_stale_then_503() {
    let mut r = Rig::new(Resilience {
        response_cache: Some(CacheLimits {
            ttl: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(60),
            max_entries: NonZeroUsize::MIN.saturating_add(99),
            max_bytes: 1 << 20,
        }),
        ..Resilience::default()
    });
    r.get("/latest/meta-data/").assert_is(200, "ok");
    // Fresh: from the cache, no server asked.
    let asked = r.seen(0).len() + r.seen(1).len();
    let hit = r.get("/latest/meta-data/");
    hit.assert_is(200, "ok");
    assert_eq!(hit.header("Age"), "0");
    assert_eq!(r.seen(0).len() + r.seen(1).len(), asked);
    r.w.unlisten(&nova(0));
    r.w.unlisten(&nova(1));
    r.w.advance(Duration::from_secs(30));
    let stale = r.get("/latest/meta-data/");
    stale.assert_is(200, "ok");
    assert_eq!(stale.header("Age"), "30");
    assert_eq!(stale.header("Warning"), "110 - \"Response is Stale\"");
    // Never kept for another path, and past the stale limit: the error.
    assert_eq!(r.get("/latest/meta-data/hostname").status(), 503);
    r.w.advance(Duration::from_secs(41));
    assert_eq!(r.get("/latest/meta-data/").status(), 503);
}
