//! Per-client request rate limiting with Neutron's semantics (haproxy `http_req_rate` over a
//! base and a burst window, `deny_status 429` when either rate exceeds its limit).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// haproxy's stick tables hold 10k entries; past that we sweep idle clients.
const MAX_TRACKED: usize = 10_000;

/// A sliding-window counter as haproxy's `freq_ctr`: the previous period's count weighs in by
/// the share of it that still overlaps the window.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    current: u32,
    previous: u32,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            start: now,
            current: 0,
            previous: 0,
        }
    }

    /// Counts one request at `now` and returns the rate including it.
    fn hit(&mut self, now: Instant, period: Duration) -> u32 {
        let elapsed = now.saturating_duration_since(self.start);
        // Saturating: a window near `Duration::MAX` must not panic (the binary allows a day).
        if elapsed >= period.saturating_mul(2) {
            *self = Window::new(now);
        } else if elapsed >= period {
            self.previous = self.current;
            self.current = 0;
            self.start += period;
        }
        self.current = self.current.saturating_add(1);
        let into = now.saturating_duration_since(self.start).as_secs_f64();
        let overlap = 1.0 - (into / period.as_secs_f64()).min(1.0);
        self.current + (f64::from(self.previous) * overlap) as u32
    }
}

#[derive(Debug)]
struct Client {
    base: Window,
    burst: Window,
    last: Instant,
}

/// Tracks request rates per client IP.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    cfg: RateLimit,
    clients: BTreeMap<IpAddr, Client>,
}

impl RateLimiter {
    pub(crate) fn new(cfg: RateLimit) -> Self {
        RateLimiter {
            cfg,
            clients: BTreeMap::new(),
        }
    }

    /// Counts a request from `ip` at `now`; false when it is over either limit.
    pub(crate) fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.clients.len() >= MAX_TRACKED && !self.clients.contains_key(&ip) {
            let horizon = self
                .cfg
                .base_window
                .max(self.cfg.burst_window)
                .saturating_mul(2);
            self.clients
                .retain(|_, c| now.saturating_duration_since(c.last) < horizon);
        }
        let c = self.clients.entry(ip).or_insert_with(|| Client {
            base: Window::new(now),
            burst: Window::new(now),
            last: now,
        });
        c.last = now;
        let base = c.base.hit(now, self.cfg.base_window);
        let burst = c.burst.hit(now, self.cfg.burst_window);
        base <= self.cfg.base_limit && burst <= self.cfg.burst_limit
    }

    /// Whether a request from `ip` at `now` would be refused, counting nothing (`/explain`).
    pub(crate) fn would_refuse(&self, now: Instant, ip: IpAddr) -> bool {
        let Some(c) = self.clients.get(&ip) else {
            return false;
        };
        let (mut base, mut burst) = (c.base, c.burst);
        let base = base.hit(now, self.cfg.base_window);
        let burst = burst.hit(now, self.cfg.burst_window);
        base > self.cfg.base_limit || burst > self.cfg.burst_limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::epoch;

    fn cfg(base: u32, burst: u32) -> RateLimit {
        RateLimit {
            base_limit: base,
            base_window: Duration::from_secs(10),
            burst_limit: burst,
            burst_window: Duration::from_secs(1),
        }
    }

    #[test]
    fn allows_up_to_the_limit_then_denies() {
        let t = epoch();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut r = RateLimiter::new(cfg(10, 100));
        for i in 0..9 {
            assert!(r.allow(t + Duration::from_millis(i), ip), "request {i}");
        }
        // Asking counts nothing: the tenth is still allowed after being asked about twice.
        for _ in 0..2 {
            assert!(!r.would_refuse(t + Duration::from_millis(9), ip));
        }
        assert!(r.allow(t + Duration::from_millis(9), ip), "request 9");
        assert!(r.would_refuse(t + Duration::from_millis(10), ip));
        assert!(!r.allow(t + Duration::from_millis(10), ip));
        // Another client is unaffected.
        assert!(r.allow(t, "10.0.0.6".parse().unwrap()));
    }

    #[test]
    fn burst_window_limits_short_spikes() {
        let t = epoch();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut r = RateLimiter::new(cfg(100, 3));
        assert!(r.allow(t, ip) && r.allow(t, ip) && r.allow(t, ip));
        assert!(!r.allow(t, ip));
        // Two burst periods later the window is empty again.
        assert!(r.allow(t + Duration::from_secs(2), ip));
    }

    #[test]
    fn previous_period_weighs_in_proportionally() {
        let t = epoch();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut r = RateLimiter::new(cfg(10, 1000));
        for _ in 0..10 {
            assert!(r.allow(t, ip));
        }
        // Half-way through the next period, half of the previous 10 still count: 5 + 1.
        let mid = t + Duration::from_secs(15);
        for i in 0..5 {
            assert!(r.allow(mid, ip), "request {i}");
        }
        assert!(!r.allow(mid, ip));
    }
}
