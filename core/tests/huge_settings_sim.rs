//! Settings far past what the binary accepts (it keeps timeouts and windows within a day):
//! the core saturates its arithmetic instead of panicking on `Instant + Duration` or
//! `Duration * 2` overflow. Defence in depth behind `bins/src/cli/range.rs`.

use std::time::Duration;

use mdproxy_core::config::{RateLimit, Role, Timeouts};
use mdproxy_core::testing::sim::roles::{self, agent_socket, ns_proxy_addr};
use mdproxy_core::testing::sim::{Answer, Hop};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
const GET: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

fn ns_sim(rate_limit: Option<RateLimit>, timeouts: Timeouts) -> Hop {
    let mut cfg = roles::ns_proxy();
    cfg.rate_limit = rate_limit;
    let mut ep = roles::endpoint(Role::NsProxy(cfg));
    ep.timeouts = timeouts;
    Hop::new(ep, ns_proxy_addr(), agent_socket(), |_, _| {
        Answer::Respond(OK.to_vec())
    })
}

#[test]
fn timeouts_of_duration_max_serve_and_expire_a_day_later() {
    let forever = Duration::MAX;
    let timeouts = Timeouts {
        head: forever,
        idle: forever,
        connect: forever,
        response: forever,
    };
    let mut s = ns_sim(None, timeouts);
    s.exchange(GET).assert_is(200, "hello");
    // The idle deadline saturated to a day: the connection is open just before it.
    s.w.advance(Duration::from_secs(86_399));
    assert!(s.w.client(s.client).ended.is_empty(), "closed before a day");
    s.w.advance(Duration::from_secs(2));
    assert_eq!(
        s.w.client(s.client).ended.len(),
        1,
        "an idle connection outlived its deadline"
    );
}

#[test]
fn rate_windows_of_duration_max_still_limit() {
    let limit = RateLimit {
        base_limit: 2,
        base_window: Duration::MAX,
        burst_limit: 100,
        burst_window: Duration::MAX,
    };
    let mut s = ns_sim(Some(limit), Timeouts::default());
    let statuses: Vec<u16> = (0..3).map(|_| s.exchange(GET).status()).collect();
    assert_eq!(statuses, [200, 200, 429]);
}
