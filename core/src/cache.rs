//! The agent's lookup cache: (router or network, client IP) → instance, with LRU eviction,
//! separate positive and negative TTLs, and single-flight misses.
//!
//! # Expiry
//!
//! Each entry stores the `Instant` it was inserted. An entry is **expired when
//! `now >= inserted + ttl`** (the negative TTL for "no such instance" entries), so it is served
//! during `[inserted, inserted + ttl)` and never at the deadline itself. A TTL of zero therefore
//! disables caching of that kind (single-flight still applies). Expiry is lazy: an expired entry
//! is dropped when a [`get`](LookupCache::get) or [`lookup`](LookupCache::lookup) finds it, or
//! when LRU eviction reaches it; there is no sweeper, so [`len`](LookupCache::len) counts expired
//! entries that were not looked at since.
//!
//! # Single-flight
//!
//! A burst of requests for one uncached key must make one backend query (DESIGN.md). The cache
//! therefore also tracks queries in flight: [`lookup`](LookupCache::lookup) answers
//! [`Lookup::Query`] to the first caller (who must start the query) and queues the later ones'
//! waiter tokens ([`Lookup::Queued`]); [`complete`](LookupCache::complete) or
//! [`fail`](LookupCache::fail) hands all queued waiters back, in arrival order. Every `Query`
//! must eventually be answered by one of those two calls, or later lookups of that key queue
//! forever.

use core::fmt;
use core::num::NonZeroUsize;
use core::time::Duration;
use std::collections::{btree_map, BTreeMap};
use std::net::IpAddr;
use std::time::Instant;

use lru::LruCache;

use crate::scope::{Instance, LookupKey, Scope};

/// Answer of [`LookupCache::get`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cached<'a> {
    /// A live positive entry.
    Hit(&'a Instance),
    /// A live negative entry: the backend recently said there is no such instance.
    Negative,
    /// Nothing live for this key.
    Miss,
}

/// Answer of [`LookupCache::lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A live positive entry; the waiter was not registered.
    Hit(&'a Instance),
    /// A live negative entry; the waiter was not registered.
    Negative,
    /// First miss: the waiter was registered and the caller must start a backend query, then
    /// report it with [`LookupCache::complete`] or [`LookupCache::fail`].
    Query,
    /// A query for this key is already running; the waiter was queued behind it.
    Queued,
}

/// Answer of [`LookupCache::peek`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek<'a> {
    /// A live entry (`None`: negative) and its age.
    Kept(Option<&'a Instance>, Duration),
    /// No live entry; a query for the key is running.
    InFlight,
    /// No live entry, no query.
    Nothing,
}

struct Entry {
    /// `None` is a negative entry.
    value: Option<Instance>,
    inserted: Instant,
}

/// LRU + TTL lookup cache with single-flight misses, generic over the caller's waiter token `W`
/// (e.g. a connection id). See the [module docs](self) for the expiry rule.
pub struct LookupCache<W> {
    lru: LruCache<PackedKey, Entry>,
    ttl: Duration,
    negative_ttl: Duration,
    /// Keys whose backend query is running, with their waiters in arrival order. A `BTreeMap`
    /// (not a hash map) keeps everything about it deterministic.
    inflight: BTreeMap<LookupKey, Vec<W>>,
}

impl<W> LookupCache<W> {
    /// An empty cache of at most `cap` entries. `ttl` applies to positive entries, `negative_ttl`
    /// to "not found" entries; zero disables caching of that kind.
    pub fn new(cap: NonZeroUsize, ttl: Duration, negative_ttl: Duration) -> Self {
        LookupCache {
            lru: LruCache::new(cap),
            ttl,
            negative_ttl,
            inflight: BTreeMap::new(),
        }
    }

    /// New lifetimes, for the entries kept already too (an entry's age is checked when read).
    pub fn set_ttls(&mut self, ttl: Duration, negative_ttl: Duration) {
        self.ttl = ttl;
        self.negative_ttl = negative_ttl;
    }

    /// Checks `key` at `now`, promoting a live entry to most recently used and dropping an
    /// expired one (so an expired entry is never a hit). Touches no waiter bookkeeping.
    pub fn get(&mut self, now: Instant, key: &LookupKey) -> Cached<'_> {
        match live_entry(&mut self.lru, self.ttl, self.negative_ttl, now, key.into()) {
            Some(Some(instance)) => Cached::Hit(instance),
            Some(None) => Cached::Negative,
            None => Cached::Miss,
        }
    }

    /// What is kept for `key` at `now`, touching nothing (no promotion, no expiry): a live
    /// entry's value (`None`: negative) and age, or whether a query is in flight. For
    /// `/explain`.
    pub fn peek(&self, now: Instant, key: &LookupKey) -> Peek<'_> {
        let live = (self.lru.peek(&PackedKey::from(key)))
            .filter(|e| !e.is_expired(now, self.ttl, self.negative_ttl));
        match live {
            Some(e) => Peek::Kept(e.value.as_ref(), now.saturating_duration_since(e.inserted)),
            None if self.inflight.contains_key(key) => Peek::InFlight,
            None => Peek::Nothing,
        }
    }

    /// The single-flight entry point. A live entry answers [`Lookup::Hit`] or
    /// [`Lookup::Negative`] (and `waiter` is not kept). Otherwise `waiter` is registered for
    /// `key` and the answer is [`Lookup::Query`] if no query for `key` is running (the caller
    /// must start one) or [`Lookup::Queued`] if one is.
    pub fn lookup(&mut self, now: Instant, key: LookupKey, waiter: W) -> Lookup<'_> {
        // Borrows only `self.lru`, so the miss path below may still use `self.inflight`.
        match live_entry(
            &mut self.lru,
            self.ttl,
            self.negative_ttl,
            now,
            (&key).into(),
        ) {
            Some(Some(instance)) => return Lookup::Hit(instance),
            Some(None) => return Lookup::Negative,
            None => {}
        }
        match self.inflight.entry(key) {
            btree_map::Entry::Occupied(mut waiters) => {
                waiters.get_mut().push(waiter);
                Lookup::Queued
            }
            btree_map::Entry::Vacant(slot) => {
                slot.insert(vec![waiter]);
                Lookup::Query
            }
        }
    }

    /// The backend answered for `key`: `Some` is cached with the positive TTL, `None` with the
    /// negative TTL, both from `now`. Returns every waiter registered for `key`, in arrival
    /// order (empty if none was, e.g. all went away or no query was running; the answer is
    /// cached all the same).
    pub fn complete(&mut self, now: Instant, key: LookupKey, v: Option<Instance>) -> Vec<W> {
        self.insert(now, key, v);
        self.inflight.remove(&key).unwrap_or_default()
    }

    /// The backend failed for `key`: nothing is cached, entries already cached stay as they
    /// are, and the query is no longer in flight. Returns the waiters (in arrival order) so the
    /// caller can answer them 503.
    pub fn fail(&mut self, key: &LookupKey) -> Vec<W> {
        self.inflight.remove(key).unwrap_or_default()
    }

    /// Forgets the cached entry for `key`, if any (Nova answered 404 for a cached instance: look
    /// it up again, Neutron LP#1868867). A query in flight for `key` is unaffected.
    pub fn invalidate(&mut self, key: &LookupKey) {
        self.lru.pop(&PackedKey::from(key));
    }

    /// A waiting client went away: drop `waiter` from `key`'s queue. The query stays in flight
    /// even when no waiter remains, because the backend will still answer: that answer is
    /// cached by [`complete`](Self::complete), and new lookups of `key` meanwhile are
    /// [`Lookup::Queued`] rather than starting a second query.
    pub fn remove_waiter(&mut self, key: &LookupKey, waiter: &W)
    where
        W: PartialEq,
    {
        if let Some(waiters) = self.inflight.get_mut(key) {
            waiters.retain(|w| w != waiter);
        }
    }

    /// Cached entries, live or expired-but-not-yet-dropped.
    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// Whether no entry is cached.
    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    /// Keys whose backend query is in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Caches `v` for `key` from `now` (replacing any entry), evicting the least recently used
    /// entry when full. Does not touch waiters; see [`complete`](Self::complete).
    pub fn insert(&mut self, now: Instant, key: LookupKey, v: Option<Instance>) {
        self.lru.put(
            PackedKey::from(&key),
            Entry {
                value: v,
                inserted: now,
            },
        );
    }
}

/// The live value cached for `key` (`Some(None)` is a live negative entry), promoted to most
/// recently used; an expired entry is dropped (without being promoted first) and is `None`.
fn live_entry(
    lru: &mut LruCache<PackedKey, Entry>,
    ttl: Duration,
    negative_ttl: Duration,
    now: Instant,
    key: PackedKey,
) -> Option<&Option<Instance>> {
    // Peek, then get: returning the borrow from a single `get` while popping in the other branch
    // is what today's borrow checker rejects (NLL problem case #3).
    if lru.peek(&key)?.is_expired(now, ttl, negative_ttl) {
        lru.pop(&key);
        return None;
    }
    lru.get(&key).map(|entry| &entry.value)
}

/// [`LookupKey`] as the LRU stores it: 34 bytes with alignment 1 instead of 64 (a `u128` is
/// 16-aligned, so `Scope` pads to 32 bytes and the key to 64). With 100 000 entries that is
/// ~3 MiB of the agent's memory budget (DESIGN.md: < 32 MiB), for a copy of a few bytes per
/// call.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PackedKey {
    /// Byte 0: 0 = router, 1 = network; bytes 1..17: the UUID, big-endian.
    scope: [u8; 17],
    ip: IpAddr,
}

impl core::hash::Hash for PackedKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        // Fixed-size: no length prefix (the derived `Hash` of an array hashes its length too).
        state.write(&self.scope);
        match self.ip {
            IpAddr::V4(ip) => state.write(&ip.octets()),
            IpAddr::V6(ip) => state.write(&ip.octets()),
        }
    }
}

impl From<&LookupKey> for PackedKey {
    fn from(key: &LookupKey) -> Self {
        let (kind, id) = match key.scope {
            Scope::Router(id) => (0, id),
            Scope::Network(id) => (1, id),
            Scope::OvnNetwork(id) => (2, id),
        };
        let mut scope = [kind; 17];
        scope[1..].copy_from_slice(&id.0.to_be_bytes());
        PackedKey { scope, ip: key.ip }
    }
}

impl Entry {
    fn is_expired(&self, now: Instant, ttl: Duration, negative_ttl: Duration) -> bool {
        let ttl = if self.value.is_some() {
            ttl
        } else {
            negative_ttl
        };
        // `now - inserted >= ttl` ⇔ `now >= inserted + ttl`, without overflowing on huge TTLs.
        // A `now` earlier than `inserted` counts as age zero.
        now.saturating_duration_since(self.inserted) >= ttl
    }
}

impl<W> fmt::Debug for LookupCache<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupCache")
            .field("len", &self.lru.len())
            .field("cap", &self.lru.cap())
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("inflight", &self.inflight.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Uuid;
    use crate::testing::epoch;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    const TTL: Duration = Duration::from_secs(5);
    const NEG_TTL: Duration = Duration::from_secs(1);
    const NS: Duration = Duration::from_nanos(1);

    fn key(n: u8) -> LookupKey {
        LookupKey {
            scope: Scope::Router(Uuid(0x6f9c_1b1e_3c4a_4b8e_9d2a_1f2e_3d4c_5b6a)),
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        }
    }

    fn inst(n: u8) -> Instance {
        Instance {
            instance_id: format!("instance-{n}"),
            project_id: format!("project-{n}"),
        }
    }

    fn cache(cap: usize) -> LookupCache<u64> {
        LookupCache::new(NonZeroUsize::new(cap).unwrap(), TTL, NEG_TTL)
    }

    #[test]
    fn peek_shows_without_touching() {
        let t0 = epoch();
        let mut c = cache(2);
        assert_eq!(c.peek(t0, &key(1)), Peek::Nothing);
        assert_eq!(c.lookup(t0, key(1), 1), Lookup::Query);
        assert_eq!(c.peek(t0, &key(1)), Peek::InFlight);
        c.complete(t0, key(1), Some(inst(1)));
        c.insert(t0, key(2), None);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            c.peek(later, &key(1)),
            Peek::Kept(Some(&inst(1)), Duration::from_secs(2))
        );
        // Expired for the negative TTL, but kept (nothing dropped by a peek).
        assert_eq!(c.peek(later, &key(2)), Peek::Nothing);
        assert_eq!(c.len(), 2);
        // Nor promoted: key 1 is still the least recently used, evicted first.
        c.insert(later, key(3), None);
        assert_eq!(c.get(later, &key(1)), Cached::Miss);
    }

    #[test]
    fn hit_and_miss() {
        let t0 = epoch();
        let mut c = cache(10);
        assert!(c.is_empty());
        assert_eq!(c.get(t0, &key(1)), Cached::Miss);
        c.insert(t0, key(1), Some(inst(1)));
        c.insert(t0, key(2), None);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(t0, &key(1)), Cached::Hit(&inst(1)));
        assert_eq!(c.get(t0, &key(2)), Cached::Negative);
        assert_eq!(c.get(t0, &key(3)), Cached::Miss);
        // Same IP on another router, and on a network with the same UUID, are other keys.
        let other_router = LookupKey {
            scope: Scope::Router(Uuid(7)),
            ..key(1)
        };
        let network = LookupKey {
            scope: Scope::Network(key(1).scope.id()),
            ..key(1)
        };
        assert_eq!(c.get(t0, &other_router), Cached::Miss);
        assert_eq!(c.get(t0, &network), Cached::Miss);
        let v6 = LookupKey {
            ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
            ..key(1)
        };
        c.insert(t0, v6, Some(inst(6)));
        assert_eq!(c.get(t0, &v6), Cached::Hit(&inst(6)));
        // Lookups of cached keys register no waiter.
        assert_eq!(c.lookup(t0, key(1), 1), Lookup::Hit(&inst(1)));
        assert_eq!(c.lookup(t0, key(2), 2), Lookup::Negative);
        assert_eq!(c.inflight(), 0);
    }

    #[test]
    fn positive_expiry_boundary() {
        let t0 = epoch();
        let mut c = cache(10);
        c.insert(t0, key(1), Some(inst(1)));
        assert_eq!(c.get(t0 + TTL - NS, &key(1)), Cached::Hit(&inst(1)));
        assert_eq!(c.lookup(t0 + TTL - NS, key(1), 9), Lookup::Hit(&inst(1)));
        // Expired exactly at inserted + ttl, and dropped.
        assert_eq!(c.get(t0 + TTL, &key(1)), Cached::Miss);
        assert_eq!(c.len(), 0);
        // A positive entry outlives the negative TTL.
        c.insert(t0, key(2), Some(inst(2)));
        assert_eq!(c.get(t0 + NEG_TTL, &key(2)), Cached::Hit(&inst(2)));
        // lookup() also treats the deadline as expired and starts a query.
        assert_eq!(c.lookup(t0 + TTL, key(2), 1), Lookup::Query);
    }

    #[test]
    fn negative_expiry_boundary() {
        let t0 = epoch();
        let mut c = cache(10);
        c.insert(t0, key(1), None);
        assert_eq!(c.get(t0 + NEG_TTL - NS, &key(1)), Cached::Negative);
        assert_eq!(c.get(t0 + NEG_TTL, &key(1)), Cached::Miss);
        assert!(c.is_empty());
        c.insert(t0, key(1), None);
        assert_eq!(c.lookup(t0 + NEG_TTL - NS, key(1), 1), Lookup::Negative);
        assert_eq!(c.lookup(t0 + NEG_TTL, key(1), 1), Lookup::Query);
    }

    #[test]
    fn reinsert_restarts_ttl_and_now_before_insert_is_fresh() {
        let t0 = epoch();
        let mut c = cache(10);
        c.insert(t0, key(1), Some(inst(1)));
        c.insert(t0 + TTL - NS, key(1), Some(inst(2)));
        assert_eq!(c.get(t0 + TTL, &key(1)), Cached::Hit(&inst(2)));
        // A `now` earlier than the insertion counts as age zero.
        assert_eq!(c.get(t0, &key(1)), Cached::Hit(&inst(2)));
        assert_eq!(c.get(t0 + 2 * TTL - 2 * NS, &key(1)), Cached::Hit(&inst(2)));
        assert_eq!(c.get(t0 + 2 * TTL - NS, &key(1)), Cached::Miss);
        // Positive replaced by negative uses the negative TTL.
        c.insert(t0 + TTL, key(1), None);
        assert_eq!(c.get(t0 + TTL + NEG_TTL, &key(1)), Cached::Miss);
    }

    #[test]
    fn zero_ttl_disables_caching_and_huge_ttl_never_overflows() {
        let t0 = epoch();
        let mut c: LookupCache<u64> =
            LookupCache::new(NonZeroUsize::new(4).unwrap(), Duration::ZERO, Duration::MAX);
        c.insert(t0, key(1), Some(inst(1)));
        assert_eq!(c.get(t0, &key(1)), Cached::Miss);
        c.insert(t0, key(2), None);
        let far = t0 + Duration::from_secs(100 * 365 * 24 * 3600);
        assert_eq!(c.get(far, &key(2)), Cached::Negative);
    }

    #[test]
    fn lru_eviction_order() {
        let t0 = epoch();
        let mut c = cache(3);
        for n in 1..=3 {
            c.insert(t0, key(n), Some(inst(n)));
        }
        // Touch 1 (get) and 2 (lookup hit): 3 is now least recently used.
        assert_eq!(c.get(t0, &key(1)), Cached::Hit(&inst(1)));
        assert_eq!(c.lookup(t0, key(2), 0), Lookup::Hit(&inst(2)));
        c.insert(t0, key(4), Some(inst(4)));
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(t0, &key(3)), Cached::Miss);
        // Order now (LRU first): 1, 2, 4. Re-inserting 1 promotes it; 2 goes next.
        c.insert(t0, key(1), None);
        c.insert(t0, key(5), Some(inst(5)));
        assert_eq!(c.get(t0, &key(2)), Cached::Miss);
        assert_eq!(c.get(t0, &key(1)), Cached::Negative);
        assert_eq!(c.get(t0, &key(4)), Cached::Hit(&inst(4)));
        assert_eq!(c.get(t0, &key(5)), Cached::Hit(&inst(5)));
        // Expired entries still take room until evicted or looked at.
        c.insert(t0, key(6), Some(inst(6)));
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(t0 + TTL, &key(4)), Cached::Miss);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn capacity_one() {
        let t0 = epoch();
        let mut c = cache(1);
        c.insert(t0, key(1), Some(inst(1)));
        c.insert(t0, key(2), None);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(t0, &key(1)), Cached::Miss);
        assert_eq!(c.get(t0, &key(2)), Cached::Negative);
        assert_eq!(c.complete(t0, key(3), Some(inst(3))), Vec::<u64>::new());
        assert_eq!(c.get(t0, &key(2)), Cached::Miss);
        assert_eq!(c.get(t0, &key(3)), Cached::Hit(&inst(3)));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn thousand_concurrent_misses_make_one_query() {
        let t0 = epoch();
        let mut c = cache(10);
        let mut queries = 0;
        let mut queued = 0;
        for w in 0..1000u64 {
            match c.lookup(t0 + Duration::from_micros(w), key(1), w) {
                Lookup::Query => queries += 1,
                Lookup::Queued => queued += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((queries, queued), (1, 999));
        assert_eq!(c.inflight(), 1);
        assert!(c.is_empty());
        let waiters = c.complete(t0 + Duration::from_millis(5), key(1), Some(inst(1)));
        assert_eq!(waiters, (0..1000).collect::<Vec<u64>>());
        assert_eq!(c.inflight(), 0);
        assert_eq!(c.lookup(t0 + TTL, key(1), 1000), Lookup::Hit(&inst(1)));
        assert_eq!(c.inflight(), 0);
    }

    #[test]
    fn complete_none_caches_negative_and_keys_are_independent() {
        let t0 = epoch();
        let mut c = cache(10);
        assert_eq!(c.lookup(t0, key(1), 1), Lookup::Query);
        assert_eq!(c.lookup(t0, key(2), 2), Lookup::Query);
        assert_eq!(c.lookup(t0, key(1), 3), Lookup::Queued);
        assert_eq!(c.inflight(), 2);
        assert_eq!(c.complete(t0, key(1), None), vec![1, 3]);
        assert_eq!(c.lookup(t0, key(1), 4), Lookup::Negative);
        assert_eq!(c.lookup(t0, key(2), 5), Lookup::Queued);
        assert_eq!(c.complete(t0, key(2), Some(inst(2))), vec![2, 5]);
        assert_eq!(c.inflight(), 0);
    }

    #[test]
    fn fail_returns_waiters_and_caches_nothing() {
        let t0 = epoch();
        let mut c = cache(10);
        assert_eq!(c.lookup(t0, key(1), 1), Lookup::Query);
        assert_eq!(c.lookup(t0, key(1), 2), Lookup::Queued);
        assert_eq!(c.fail(&key(1)), vec![1, 2]);
        assert_eq!(c.inflight(), 0);
        assert!(c.is_empty());
        assert_eq!(c.get(t0, &key(1)), Cached::Miss);
        // The next lookup starts a fresh query.
        assert_eq!(c.lookup(t0, key(1), 3), Lookup::Query);
        // A failure leaves other cached entries alone, and failing twice is harmless.
        c.insert(t0, key(2), Some(inst(2)));
        assert_eq!(c.fail(&key(1)), vec![3]);
        assert_eq!(c.fail(&key(1)), Vec::<u64>::new());
        assert_eq!(c.get(t0, &key(2)), Cached::Hit(&inst(2)));
    }

    #[test]
    fn fail_keeps_a_cached_entry_for_the_same_key() {
        // The Nova-404 retry case: an entry was cached, invalidated, re-inserted by someone else
        // while a new query runs, and that query then fails.
        let t0 = epoch();
        let mut c = cache(10);
        assert_eq!(c.lookup(t0, key(1), 1), Lookup::Query);
        c.insert(t0, key(1), Some(inst(1)));
        assert_eq!(c.fail(&key(1)), vec![1]);
        assert_eq!(c.get(t0, &key(1)), Cached::Hit(&inst(1)));
    }

    #[test]
    fn invalidate_forgets_one_entry() {
        let t0 = epoch();
        let mut c = cache(10);
        c.insert(t0, key(1), Some(inst(1)));
        c.insert(t0, key(2), Some(inst(2)));
        c.invalidate(&key(1));
        c.invalidate(&key(3)); // absent: no-op
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(t0, &key(1)), Cached::Miss);
        assert_eq!(c.get(t0, &key(2)), Cached::Hit(&inst(2)));
        // After invalidation the next lookup queries again.
        assert_eq!(c.lookup(t0, key(1), 7), Lookup::Query);
        // Invalidation does not touch a query in flight.
        c.invalidate(&key(1));
        assert_eq!(c.inflight(), 1);
        assert_eq!(c.lookup(t0, key(1), 8), Lookup::Queued);
        assert_eq!(c.complete(t0, key(1), Some(inst(1))), vec![7, 8]);
    }

    #[test]
    fn remove_waiter_keeps_query_in_flight() {
        let t0 = epoch();
        let mut c = cache(10);
        assert_eq!(c.lookup(t0, key(1), 1), Lookup::Query);
        assert_eq!(c.lookup(t0, key(1), 2), Lookup::Queued);
        assert_eq!(c.lookup(t0, key(1), 3), Lookup::Queued);
        c.remove_waiter(&key(1), &2);
        c.remove_waiter(&key(1), &42); // unknown waiter: no-op
        c.remove_waiter(&key(9), &1); // unknown key: no-op
        assert_eq!(c.inflight(), 1);
        c.remove_waiter(&key(1), &1);
        c.remove_waiter(&key(1), &3);
        // No waiter left, but the query is still running: don't start another.
        assert_eq!(c.inflight(), 1);
        assert_eq!(c.lookup(t0, key(1), 4), Lookup::Queued);
        c.remove_waiter(&key(1), &4);
        assert_eq!(c.complete(t0, key(1), Some(inst(1))), Vec::<u64>::new());
        assert_eq!(c.inflight(), 0);
        assert_eq!(c.get(t0, &key(1)), Cached::Hit(&inst(1)));
    }

    #[test]
    fn debug_shows_sizes() {
        let c = cache(3);
        let s = format!("{c:?}");
        assert!(s.contains("len: 0") && s.contains("cap: 3"), "{s}");
    }

    // ---- model-based property test ----

    /// Keys that differ only in scope kind, in UUID or in address family, so that the packed
    /// representation must keep them apart.
    fn pkey(k: u8) -> LookupKey {
        let id = key(0).scope.id();
        match k % 6 {
            0 | 1 => key(k),
            2 => LookupKey {
                scope: Scope::Network(id),
                ..key(1)
            },
            3 => LookupKey {
                scope: Scope::Router(Uuid(id.0 ^ 1)),
                ..key(1)
            },
            4 => LookupKey {
                ip: IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
                ..key(1)
            },
            _ => LookupKey {
                scope: Scope::Network(Uuid(id.0 ^ (1 << 127))),
                ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            },
        }
    }

    /// Reference model: a Vec in recency order (least recently used first).
    struct Model {
        cap: usize,
        entries: Vec<(LookupKey, Option<Instance>, Instant)>,
        inflight: Vec<(LookupKey, Vec<u64>)>,
    }

    /// The model's answers, owned so they can be compared with the cache's.
    #[derive(Debug, PartialEq)]
    enum Out {
        Hit(Instance),
        Negative,
        Miss,
        Query,
        Queued,
        Waiters(Vec<u64>),
        Unit,
    }

    impl Model {
        fn live(&mut self, now: Instant, key: &LookupKey) -> Option<Option<Instance>> {
            let i = self.entries.iter().position(|e| e.0 == *key)?;
            let ttl = if self.entries[i].1.is_some() {
                TTL_P
            } else {
                NEG_TTL_P
            };
            if now >= self.entries[i].2 + ttl {
                self.entries.remove(i);
                return None;
            }
            let e = self.entries.remove(i);
            let v = e.1.clone();
            self.entries.push(e);
            Some(v)
        }

        fn insert(&mut self, now: Instant, key: LookupKey, v: Option<Instance>) {
            if let Some(i) = self.entries.iter().position(|e| e.0 == key) {
                self.entries.remove(i);
            } else if self.entries.len() == self.cap {
                self.entries.remove(0);
            }
            self.entries.push((key, v, now));
        }

        fn take_waiters(&mut self, key: &LookupKey) -> Vec<u64> {
            match self.inflight.iter().position(|f| f.0 == *key) {
                Some(i) => self.inflight.remove(i).1,
                None => Vec::new(),
            }
        }

        fn apply(&mut self, now: Instant, op: &Op) -> Out {
            match op {
                Op::Advance(_) => Out::Unit,
                Op::Get(k) => match self.live(now, &pkey(*k)) {
                    Some(Some(i)) => Out::Hit(i),
                    Some(None) => Out::Negative,
                    None => Out::Miss,
                },
                Op::Lookup(k, w) => match self.live(now, &pkey(*k)) {
                    Some(Some(i)) => Out::Hit(i),
                    Some(None) => Out::Negative,
                    None => match self.inflight.iter_mut().find(|f| f.0 == pkey(*k)) {
                        Some(f) => {
                            f.1.push(*w);
                            Out::Queued
                        }
                        None => {
                            self.inflight.push((pkey(*k), vec![*w]));
                            Out::Query
                        }
                    },
                },
                Op::Complete(k, v) => {
                    self.insert(now, pkey(*k), v.map(inst));
                    Out::Waiters(self.take_waiters(&pkey(*k)))
                }
                Op::Fail(k) => Out::Waiters(self.take_waiters(&pkey(*k))),
                Op::Invalidate(k) => {
                    self.entries.retain(|e| e.0 != pkey(*k));
                    Out::Unit
                }
                Op::RemoveWaiter(k, w) => {
                    if let Some(f) = self.inflight.iter_mut().find(|f| f.0 == pkey(*k)) {
                        f.1.retain(|x| x != w);
                    }
                    Out::Unit
                }
                Op::Insert(k, v) => {
                    self.insert(now, pkey(*k), v.map(inst));
                    Out::Unit
                }
            }
        }
    }

    fn apply_real(c: &mut LookupCache<u64>, now: Instant, op: &Op) -> Out {
        let cached = |x: Cached<'_>| match x {
            Cached::Hit(i) => Out::Hit(i.clone()),
            Cached::Negative => Out::Negative,
            Cached::Miss => Out::Miss,
        };
        match op {
            Op::Advance(_) => Out::Unit,
            Op::Get(k) => cached(c.get(now, &pkey(*k))),
            Op::Lookup(k, w) => match c.lookup(now, pkey(*k), *w) {
                Lookup::Hit(i) => Out::Hit(i.clone()),
                Lookup::Negative => Out::Negative,
                Lookup::Query => Out::Query,
                Lookup::Queued => Out::Queued,
            },
            Op::Complete(k, v) => Out::Waiters(c.complete(now, pkey(*k), v.map(inst))),
            Op::Fail(k) => Out::Waiters(c.fail(&pkey(*k))),
            Op::Invalidate(k) => {
                c.invalidate(&pkey(*k));
                Out::Unit
            }
            Op::RemoveWaiter(k, w) => {
                c.remove_waiter(&pkey(*k), w);
                Out::Unit
            }
            Op::Insert(k, v) => {
                c.insert(now, pkey(*k), v.map(inst));
                Out::Unit
            }
        }
    }

    // Millisecond TTLs so that random steps land on the boundaries often.
    const TTL_P: Duration = Duration::from_millis(50);
    const NEG_TTL_P: Duration = Duration::from_millis(20);

    #[derive(Clone, Debug)]
    enum Op {
        Advance(u64),
        Get(u8),
        Lookup(u8, u64),
        Complete(u8, Option<u8>),
        Fail(u8),
        Invalidate(u8),
        RemoveWaiter(u8, u64),
        Insert(u8, Option<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        let k = 0u8..6;
        let w = 0u64..8;
        prop_oneof![
            3 => (0u64..60).prop_map(Op::Advance),
            3 => k.clone().prop_map(Op::Get),
            4 => (k.clone(), w.clone()).prop_map(|(k, w)| Op::Lookup(k, w)),
            2 => (k.clone(), proptest::option::of(0u8..4)).prop_map(|(k, v)| Op::Complete(k, v)),
            1 => k.clone().prop_map(Op::Fail),
            1 => k.clone().prop_map(Op::Invalidate),
            1 => (k.clone(), w).prop_map(|(k, w)| Op::RemoveWaiter(k, w)),
            2 => (k, proptest::option::of(0u8..4)).prop_map(|(k, v)| Op::Insert(k, v)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_vec_model(cap in 1usize..5, ops in proptest::collection::vec(op(), 0..200)) {
            let t0 = epoch();
            let mut now = t0;
            let mut real: LookupCache<u64> =
                LookupCache::new(NonZeroUsize::new(cap).unwrap(), TTL_P, NEG_TTL_P);
            let mut model = Model { cap, entries: Vec::new(), inflight: Vec::new() };
            for (i, op) in ops.iter().enumerate() {
                if let Op::Advance(ms) = op {
                    now += Duration::from_millis(*ms);
                }
                let want = model.apply(now, op);
                let got = apply_real(&mut real, now, op);
                prop_assert_eq!(got, want, "op #{} {:?}", i, op);
                prop_assert_eq!(real.len(), model.entries.len());
                prop_assert_eq!(real.is_empty(), model.entries.is_empty());
                prop_assert_eq!(real.inflight(), model.inflight.len());
            }
        }
    }
}
