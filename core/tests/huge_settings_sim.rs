//! Settings far past what the binary accepts (it keeps timeouts and windows within a day):
//! the core saturates its arithmetic instead of panicking on `Instant + Duration` or
//! `Duration * 2` overflow. Defence in depth behind `bins/src/cli/range.rs`.

use std::time::Duration;

use mdproxy_core::config::{NsProxyConfig, RateLimit, Role, Timeouts};
use mdproxy_core::scope::{Scope, Uuid};
use mdproxy_core::socket::Target;

mod sim;
use sim::{Sim, OK};

fn ns_sim(rate_limit: Option<RateLimit>, timeouts: Timeouts) -> Sim {
    let ns = NsProxyConfig {
        scope: Scope::Router(Uuid::parse(b"5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6").expect("uuid")),
        upstream: Target::Unix("/tmp/agent.sock".into()),
        rate_limit,
    };
    Sim::with_role(Role::NsProxy(ns), timeouts)
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
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.1\r\n\r\n");
    let up = s.connect_ok();
    s.send(up, OK);
    assert!(s.take(c).starts_with("HTTP/1.1 200 "));
    // The idle deadline saturated to a day: the connection is open just before it.
    s.advance(Duration::from_secs(86_399));
    assert!(!s.closed.contains(&c), "closed before a day");
    s.advance(Duration::from_secs(2));
    assert!(
        s.closed.contains(&c),
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
    let c = s.accept();
    s.send(c, b"GET / HTTP/1.1\r\n\r\n");
    let up = s.connect_ok();
    for _ in 0..2 {
        s.send(up, OK);
        assert!(s.take(c).starts_with("HTTP/1.1 200 "));
        s.send(c, b"GET / HTTP/1.1\r\n\r\n");
    }
    assert!(s.take(c).starts_with("HTTP/1.1 429 "));
}
