//! Last-known-good answers of the metadata server (opt-in): its `200` answers to GET, kept for
//! (instance id, normalised target, `Accept`), served fresh for the TTL (Nova's own
//! `metadata_cache_expiration` works the same way, per instance), and, while every server
//! fails, served stale up to the stale limit. Bounded in entries and in bytes; least recently
//! used goes first.
//!
//! The key starts with the instance id the lookup found, never the client's address: after an
//! IP is reused by another instance, the old instance's answers are simply never looked up
//! again.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;

use crate::http::{write_simple_response, Headers, Method, ResponseHead};
use crate::metadata::path::is_token_target;

/// Largest answer kept: Nova's answers are a few KiB; a larger one (a big user-data) is
/// forwarded, not cached.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// How long answers are kept and how much of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    /// Served without asking the metadata server for this long.
    pub ttl: Duration,
    /// Served past the TTL, while every server fails, for this much longer (zero: never).
    pub stale_if_error: Duration,
    /// Most answers kept.
    pub max_entries: NonZeroUsize,
    /// Most bytes kept (bodies, fields and keys).
    pub max_bytes: usize,
}

/// What an answer is kept under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    instance: Box<str>,
    target: Box<[u8]>,
    accept: Box<[u8]>,
}

impl CacheKey {
    /// The key of `target` (already normalised) asked by `instance` with this `Accept`.
    pub fn new(instance: &str, target: &[u8], accept: Option<&[u8]>) -> CacheKey {
        CacheKey {
            instance: instance.into(),
            target: target.into(),
            accept: accept.unwrap_or_default().into(),
        }
    }

    fn size(&self) -> usize {
        self.instance.len() + self.target.len() + self.accept.len()
    }
}

/// A kept answer.
#[derive(Debug)]
pub struct Stored {
    /// Its fields, but framing and hop-by-hop ones (ours are written when it is served).
    pub fields: Vec<(String, Vec<u8>)>,
    /// Its body.
    pub body: Bytes,
    /// When it was stored (its `Age` counts from here).
    pub stored: Instant,
}

impl Stored {
    fn size(&self) -> usize {
        let fields: usize = self.fields.iter().map(|(n, v)| n.len() + v.len()).sum();
        fields + self.body.len()
    }
}

/// What the cache holds for a key.
#[derive(Debug)]
pub enum Cached {
    /// An answer within its TTL.
    Fresh(Arc<Stored>),
    /// An answer past its TTL but within the stale limit: served only if every server fails,
    /// until `until`.
    Stale(Arc<Stored>, Instant),
    /// Nothing usable.
    Nothing,
}

/// The response cache of one endpoint.
#[derive(Debug)]
pub struct ResponseCache {
    lru: LruCache<CacheKey, Arc<Stored>>,
    bytes: usize,
    limits: CacheLimits,
}

impl ResponseCache {
    /// An empty cache.
    pub fn new(limits: CacheLimits) -> ResponseCache {
        ResponseCache {
            lru: LruCache::new(limits.max_entries),
            bytes: 0,
            limits,
        }
    }

    /// Whether a request may be answered from the cache, or its answer kept: a GET, not for
    /// the token path, the password path, or one that asked for no cache.
    pub fn wants(method: Method, target: &[u8], headers: &Headers) -> bool {
        method == Method::Get
            && !is_token_target(target)
            && !is_password_target(target)
            && !headers.has_token("Cache-Control", "no-store")
            && !headers.has_token("Cache-Control", "no-cache")
    }

    /// What is kept for `key` at `now`; an entry past both limits is dropped.
    pub fn get(&mut self, now: Instant, key: &CacheKey) -> Cached {
        let Some(stored) = self.lru.get(key) else {
            return Cached::Nothing;
        };
        let age = now.saturating_duration_since(stored.stored);
        if age < self.limits.ttl {
            return Cached::Fresh(stored.clone());
        }
        let until = stored.stored + self.limits.ttl + self.limits.stale_if_error;
        if now < until {
            return Cached::Stale(stored.clone(), until);
        }
        self.remove(key);
        Cached::Nothing
    }

    /// Until when `stored` may stand in for an error (its TTL and the stale limit).
    pub fn usable_until(&self, stored: &Stored) -> Instant {
        stored.stored + self.limits.ttl + self.limits.stale_if_error
    }

    /// Keeps the metadata server's answer `head` + `body` for `key`, if it may be kept: a 200
    /// without `Cache-Control: no-store` or `private`, within [`MAX_ENTRY_BYTES`]. Returns
    /// whether it was kept.
    pub fn put(&mut self, now: Instant, key: CacheKey, head: &ResponseHead, body: Bytes) -> bool {
        let h = &head.headers;
        if head.status != 200
            || h.has_token("Cache-Control", "no-store")
            || h.has_token("Cache-Control", "private")
            || body.len() > MAX_ENTRY_BYTES
        {
            return false;
        }
        let fields = (h.iter())
            .filter(|(n, _)| !SKIPPED.iter().any(|s| s.eq_ignore_ascii_case(n)))
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect();
        let stored = Stored {
            fields,
            body,
            stored: now,
        };
        let size = stored.size() + key.size();
        if size > self.limits.max_bytes {
            return false;
        }
        self.remove(&key);
        while self.bytes + size > self.limits.max_bytes {
            let Some((k, v)) = self.lru.pop_lru() else {
                break;
            };
            self.bytes -= v.size() + k.size();
        }
        self.bytes += size;
        if let Some((k, v)) = self.lru.push(key, Arc::new(stored)) {
            self.bytes -= v.size() + k.size();
        }
        true
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(v) = self.lru.pop(key) {
            self.bytes -= v.size() + key.size();
        }
    }

    /// Answers kept now.
    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    /// Bytes kept now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Writes `stored` as a complete answer, `age` old (its `Age`, RFC 9111 §5.1), with
/// `Warning: 110` when `stale` (RFC 7234 §5.5.1: clients and operators can tell a
/// last-known-good answer from a fresh one), and `Connection: close` when `close`.
pub(crate) fn write_stored(
    stored: &Stored,
    age: Duration,
    stale: bool,
    close: bool,
    head_only: bool,
    out: &mut Vec<u8>,
) {
    let age = age.as_secs().to_string();
    let mut fields: Vec<(&str, &[u8])> = (stored.fields.iter())
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    fields.push(("Age", age.as_bytes()));
    if stale {
        fields.push(("Warning", b"110 - \"Response is Stale\""));
    }
    if close {
        fields.push(("Connection", b"close"));
    }
    write_simple_response(200, "OK", &fields, &stored.body, head_only, out);
}

/// Fields not kept: framing and hop-by-hop ones, and those the cache writes itself.
const SKIPPED: [&str; 9] = [
    "Connection",
    "Keep-Alive",
    "Transfer-Encoding",
    "Content-Length",
    "Trailer",
    "Upgrade",
    "Date",
    "Age",
    "Warning",
];

/// `/openstack/<version>/password`: a GET there reads a secret that a POST may have changed
/// a moment ago.
fn is_password_target(target: &[u8]) -> bool {
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let mut segs = path.split(|&b| b == b'/').filter(|s| !s.is_empty());
    matches!(
        (segs.next(), segs.next(), segs.next(), segs.next()),
        (Some(b"openstack"), Some(_), Some(b"password"), None)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HeadScanner, Limits};

    fn head(raw: &[u8]) -> ResponseHead {
        let mut s = HeadScanner::new();
        let limits = Limits::default();
        s.parse_response(raw, Method::Get, &limits)
            .unwrap()
            .unwrap()
            .0
    }

    fn cache(max_entries: usize, max_bytes: usize) -> ResponseCache {
        ResponseCache::new(CacheLimits {
            ttl: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(20),
            max_entries: NonZeroUsize::new(max_entries).unwrap(),
            max_bytes,
        })
    }

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nDate: x\r\n\r\n";

    #[test]
    fn fresh_then_stale_then_gone() {
        let now = crate::testing::epoch();
        let mut c = cache(10, 1 << 20);
        let key = CacheKey::new("i-1", b"/latest/meta-data/", None);
        assert!(c.put(now, key.clone(), &head(OK), Bytes::from_static(b"ok")));
        let Cached::Fresh(s) = c.get(now + Duration::from_secs(9), &key) else {
            panic!("fresh within the ttl");
        };
        assert_eq!(&s.body[..], b"ok");
        assert_eq!(
            s.fields,
            [("Content-Type".to_owned(), b"text/plain".to_vec())]
        );
        let Cached::Stale(_, until) = c.get(now + Duration::from_secs(10), &key) else {
            panic!("stale past the ttl");
        };
        assert_eq!(until, now + Duration::from_secs(30));
        assert!(matches!(
            c.get(now + Duration::from_secs(30), &key),
            Cached::Nothing
        ));
        assert!(c.is_empty() && c.bytes() == 0);
    }

    #[test]
    fn the_instance_and_accept_are_part_of_the_key() {
        let now = crate::testing::epoch();
        let mut c = cache(10, 1 << 20);
        let target = b"/openstack/latest/meta_data.json";
        c.put(
            now,
            CacheKey::new("i-1", target, None),
            &head(OK),
            Bytes::new(),
        );
        // The same IP, now another instance's: a different key, nothing found.
        let other = CacheKey::new("i-2", target, None);
        assert!(matches!(c.get(now, &other), Cached::Nothing));
        let json = CacheKey::new("i-1", target, Some(b"application/json"));
        assert!(matches!(c.get(now, &json), Cached::Nothing));
    }

    #[test]
    fn only_plain_200s_are_kept() {
        let now = crate::testing::epoch();
        let mut c = cache(10, 1 << 20);
        let key = CacheKey::new("i", b"/", None);
        for raw in [
            &b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=5, private\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(!c.put(now, key.clone(), &head(raw), Bytes::new()));
        }
        let big = Bytes::from(vec![b'x'; MAX_ENTRY_BYTES + 1]);
        assert!(!c.put(now, key, &head(OK), big));
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_in_entries_and_bytes() {
        let now = crate::testing::epoch();
        let mut c = cache(3, 1 << 20);
        for i in 0..5 {
            c.put(
                now,
                CacheKey::new(&format!("i-{i}"), b"/", None),
                &head(OK),
                Bytes::new(),
            );
        }
        assert_eq!(c.len(), 3);
        let mut c = cache(100, 400);
        for i in 0..10 {
            let body = Bytes::from(vec![b'x'; 100]);
            c.put(
                now,
                CacheKey::new(&format!("i-{i}"), b"/", None),
                &head(OK),
                body,
            );
            assert!(c.bytes() <= 400, "{} bytes", c.bytes());
        }
        assert!(c.len() >= 2);
        assert!(matches!(
            c.get(now, &CacheKey::new("i-9", b"/", None)),
            Cached::Fresh(_)
        ));
    }

    #[test]
    fn token_password_and_no_store_requests_are_not_cached() {
        let h = Headers::default();
        assert!(ResponseCache::wants(Method::Get, b"/latest/meta-data/", &h));
        assert!(!ResponseCache::wants(
            Method::Post,
            b"/latest/meta-data/",
            &h
        ));
        assert!(!ResponseCache::wants(Method::Get, b"/latest/api/token", &h));
        assert!(!ResponseCache::wants(
            Method::Get,
            b"/openstack/2013-04-04/password",
            &h
        ));
        assert!(!ResponseCache::wants(
            Method::Get,
            b"/openstack/latest/password?x",
            &h
        ));
        assert!(ResponseCache::wants(
            Method::Get,
            b"/openstack/latest/meta_data.json",
            &h
        ));
    }
}
