//! IMDSv2 session tokens: random, bound to one instance, expiring; memory bounded.
//!
//! A token is 32 random bytes, base64url without padding (43 characters). The first 16 bytes
//! name the entry (a map key: comparing them may take variable time), the last 16 are the
//! secret and are compared in constant time, so timing reveals nothing usable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::Entropy;

/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;
const ID: usize = 16;

/// Longest TTL a client may ask for, in seconds (AWS: 6 hours).
pub const MAX_TTL_SECONDS: u64 = 21_600;
/// Most live tokens kept at once; beyond it the soonest to expire is dropped.
pub const MAX_TOKENS: usize = 100_000;
/// Most live tokens per instance, so one instance cannot push out everybody else's.
pub const MAX_TOKENS_PER_INSTANCE: usize = 1_000;

type Id = [u8; ID];
type Secret = [u8; TOKEN_BYTES - ID];

#[derive(Debug)]
struct Entry {
    secret: Secret,
    instance: Arc<str>,
    expires: Instant,
    seq: u64,
}

/// The live tokens. Expired ones are pruned on every insert.
#[derive(Debug)]
pub(crate) struct TokenStore {
    max_tokens: usize,
    max_per_instance: usize,
    by_id: BTreeMap<Id, Entry>,
    /// (expiry, insertion counter) → id, oldest first: pruning and eviction order.
    by_expiry: BTreeMap<(Instant, u64), Id>,
    /// instance → its tokens' (expiry, counter): the per-instance cap.
    by_instance: BTreeMap<Arc<str>, BTreeSet<(Instant, u64)>>,
    seq: u64,
}

/// Why a presented token does not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Not a token this server could have issued (format, unknown, wrong secret).
    Unknown,
    /// It was issued, but its TTL has run out.
    Expired,
    /// It belongs to another instance.
    OtherInstance,
}

impl TokenStore {
    /// An empty store holding at most `max_tokens` tokens, `max_per_instance` per instance.
    pub(crate) fn new(max_tokens: usize, max_per_instance: usize) -> Self {
        TokenStore {
            max_tokens: max_tokens.max(1),
            max_per_instance: max_per_instance.max(1),
            by_id: BTreeMap::new(),
            by_expiry: BTreeMap::new(),
            by_instance: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Number of tokens held (live or not yet pruned).
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Issues a token for `instance`, valid until `now + ttl`.
    pub(crate) fn issue(
        &mut self,
        now: Instant,
        ttl: Duration,
        instance: &str,
        entropy: &dyn Entropy,
    ) -> String {
        self.prune(now);
        let instance: Arc<str> = match self.by_instance.get_key_value(instance) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(instance),
        };
        if self
            .by_instance
            .get(&instance)
            .is_some_and(|s| s.len() >= self.max_per_instance)
        {
            let oldest = self
                .by_instance
                .get(&instance)
                .and_then(|s| s.first().copied());
            if let Some(key) = oldest {
                self.remove_key(key);
            }
        }
        while self.by_id.len() >= self.max_tokens {
            let Some((&key, _)) = self.by_expiry.first_key_value() else {
                break;
            };
            self.remove_key(key);
        }

        let mut raw = [0u8; TOKEN_BYTES];
        entropy.fill(&mut raw);
        let mut id = Id::default();
        let mut secret = Secret::default();
        id.copy_from_slice(&raw[..ID]);
        secret.copy_from_slice(&raw[ID..]);
        // A repeated id (only with a broken entropy source) replaces the older token.
        if let Some(old) = self.by_id.get(&id) {
            let key = (old.expires, old.seq);
            self.remove_key(key);
        }
        // An Instant too far in the future to represent: the token simply never outlives now.
        let expires = now.checked_add(ttl).unwrap_or(now);
        self.seq += 1;
        let seq = self.seq;
        self.by_expiry.insert((expires, seq), id);
        self.by_instance
            .entry(Arc::clone(&instance))
            .or_default()
            .insert((expires, seq));
        self.by_id.insert(
            id,
            Entry {
                secret,
                instance,
                expires,
                seq,
            },
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a presented token for `instance` at `now`.
    pub(crate) fn check(&self, now: Instant, token: &[u8], instance: &str) -> Result<(), Rejected> {
        // 43 characters carry exactly 32 bytes; the engine refuses non-canonical trailing bits,
        // so every token has one spelling.
        if token.len() != 43 {
            return Err(Rejected::Unknown);
        }
        let mut raw = [0u8; 48];
        if URL_SAFE_NO_PAD.decode_slice(token, &mut raw) != Ok(TOKEN_BYTES) {
            return Err(Rejected::Unknown);
        }
        let mut id = Id::default();
        id.copy_from_slice(&raw[..ID]);
        let entry = self.by_id.get(&id).ok_or(Rejected::Unknown)?;
        if !ct_eq(&entry.secret, &raw[ID..TOKEN_BYTES]) {
            return Err(Rejected::Unknown);
        }
        if now >= entry.expires {
            return Err(Rejected::Expired);
        }
        if &*entry.instance != instance {
            return Err(Rejected::OtherInstance);
        }
        Ok(())
    }

    /// Drops the tokens of instances not in `keep`.
    pub(crate) fn retain_instances(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<Arc<str>> = self
            .by_instance
            .keys()
            .filter(|i| !keep(i))
            .cloned()
            .collect();
        for instance in gone {
            for key in self.by_instance.remove(&instance).unwrap_or_default() {
                if let Some(id) = self.by_expiry.remove(&key) {
                    self.by_id.remove(&id);
                }
            }
        }
    }

    /// Forgets every token that has expired by `now`.
    pub(crate) fn prune(&mut self, now: Instant) {
        while let Some((&key, _)) = self.by_expiry.first_key_value() {
            if key.0 > now {
                break;
            }
            self.remove_key(key);
        }
    }

    fn remove_key(&mut self, key: (Instant, u64)) {
        let Some(id) = self.by_expiry.remove(&key) else {
            return;
        };
        if let Some(entry) = self.by_id.remove(&id) {
            if let Some(set) = self.by_instance.get_mut(&entry.instance) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_instance.remove(&entry.instance);
                }
            }
        }
    }
}

/// Equality of two byte strings in time that depends only on their lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Each fill writes a counter, so every token differs.
    struct Counter(AtomicU64);
    impl Entropy for Counter {
        fn fill(&self, buf: &mut [u8]) {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (n >> ((i % 8) * 8)) as u8 ^ (i as u8);
            }
        }
    }

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn issue_check_expire() {
        let e = Counter(AtomicU64::new(1));
        let mut s = TokenStore::new(MAX_TOKENS, MAX_TOKENS_PER_INSTANCE);
        let now = t0();
        let tok = s.issue(now, Duration::from_secs(10), "a", &e);
        assert_eq!(tok.len(), 43);
        assert_eq!(s.check(now, tok.as_bytes(), "a"), Ok(()));
        assert_eq!(
            s.check(now + Duration::from_secs(9), tok.as_bytes(), "a"),
            Ok(())
        );
        assert_eq!(
            s.check(now, tok.as_bytes(), "b"),
            Err(Rejected::OtherInstance)
        );
        assert_eq!(
            s.check(now + Duration::from_secs(10), tok.as_bytes(), "a"),
            Err(Rejected::Expired)
        );
        let mut bad = tok.clone().into_bytes();
        bad[42] = if bad[42] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.check(now, &bad, "a"), Err(Rejected::Unknown));
        assert_eq!(s.check(now, b"", "a"), Err(Rejected::Unknown));
        assert_eq!(
            s.check(now, format!("{tok}=").as_bytes(), "a"),
            Err(Rejected::Unknown)
        );
        assert_eq!(
            s.check(now, &tok.as_bytes()[..42], "a"),
            Err(Rejected::Unknown)
        );
        // Pruned on the next insert.
        s.issue(
            now + Duration::from_secs(11),
            Duration::from_secs(1),
            "a",
            &e,
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn per_instance_cap_evicts_own_oldest() {
        let e = Counter(AtomicU64::new(1));
        let mut s = TokenStore::new(100, 10);
        let now = t0();
        let other = s.issue(now, Duration::from_secs(5), "victim", &e);
        let first = s.issue(now, Duration::from_secs(100), "greedy", &e);
        for i in 0..10 {
            s.issue(now, Duration::from_secs(200 + i), "greedy", &e);
        }
        assert_eq!(s.len(), 11);
        assert_eq!(
            s.check(now, first.as_bytes(), "greedy"),
            Err(Rejected::Unknown)
        );
        assert_eq!(s.check(now, other.as_bytes(), "victim"), Ok(()));
        s.retain_instances(|i| i != "greedy");
        assert_eq!(s.len(), 1);
        assert!(s.by_instance.len() == 1 && s.by_expiry.len() == 1);
    }

    #[test]
    fn global_cap_evicts_soonest_expiry() {
        let e = Counter(AtomicU64::new(1));
        let mut s = TokenStore::new(3, 10);
        let now = t0();
        let toks: Vec<String> = (0..4u64)
            .map(|i| s.issue(now, Duration::from_secs(100 - i), &format!("i{i}"), &e))
            .collect();
        assert_eq!(s.len(), 3);
        // toks[2] expired soonest among the first three: it made room for toks[3].
        assert_eq!(
            s.check(now, toks[2].as_bytes(), "i2"),
            Err(Rejected::Unknown)
        );
        for i in [0, 1, 3] {
            assert_eq!(s.check(now, toks[i].as_bytes(), &format!("i{i}")), Ok(()));
        }
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
