//! IMDSv2 session tokens, stateless: a token carries its expiry and an HMAC-SHA256 tag over
//! that expiry and the instance it was issued to, under a key drawn once per process.
//!
//! Nothing is stored per token, so there is no cap for one instance to fill and nothing any
//! instance can evict: a token is valid until its own expiry, whoever asks for how many others
//! (a store with a global cap let one tenant push out the others' tokens). The key comes from
//! the runtime's [`Entropy`] when the service starts, so tokens do not survive a restart, as
//! before; the core itself draws no randomness.
//!
//! Wire form: base64url without padding of `expiry (8 bytes, big-endian milliseconds since the
//! key's epoch) ‖ nonce (8 random bytes, so that every token differs) ‖ tag (32 bytes)`, 64
//! characters; the tag is `HMAC-SHA256(key, "mdproxy imdsv2 token\0" ‖ expiry ‖ nonce ‖
//! instance id)` and is compared in constant time. A token presented by another instance has a tag that does not match: it is
//! as unknown as a forged one. An instance removed and configured again within a token's TTL
//! finds its tokens still valid (they name the same instance).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::Entropy;

/// Longest TTL a client may ask for, in seconds (AWS: 6 hours).
pub const MAX_TTL_SECONDS: u64 = 21_600;

/// Bytes of key drawn from the runtime's entropy.
const KEY_BYTES: usize = 32;
const EXPIRY_BYTES: usize = 8;
const NONCE_BYTES: usize = 8;
const TAG_BYTES: usize = 32;
const HEAD_BYTES: usize = EXPIRY_BYTES + NONCE_BYTES;
const RAW_BYTES: usize = HEAD_BYTES + TAG_BYTES;
/// Length of a token on the wire: `RAW_BYTES` in base64url without padding.
const TOKEN_CHARS: usize = (RAW_BYTES * 4).div_ceil(3);
/// Separates this use of the key from any other.
const CONTEXT: &[u8] = b"mdproxy imdsv2 token\0";

/// Why a presented token does not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Not a token this process issued to this instance (format, forged, another instance's).
    Unknown,
    /// It was issued to this instance, but its TTL has run out.
    Expired,
}

/// Issues and checks tokens. See the [module docs](self).
pub(crate) struct Tokens {
    keyed: Hmac<Sha256>,
    /// What expiries count from: the first `now` a token was issued at.
    epoch: Option<Instant>,
}

impl std::fmt::Debug for Tokens {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens under a key drawn from `entropy`.
    pub(crate) fn new(entropy: &dyn Entropy) -> Self {
        let mut key = [0u8; KEY_BYTES];
        entropy.fill(&mut key);
        // `new_from_slice` cannot fail for HMAC: keys of any length are hashed or padded.
        let keyed = match Hmac::<Sha256>::new_from_slice(&key) {
            Ok(keyed) => keyed,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        Tokens { keyed, epoch: None }
    }

    /// The tag over `head` (expiry and nonce) and `instance`.
    fn tag(&self, head: &[u8], instance: &str) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(CONTEXT);
        mac.update(head);
        mac.update(instance.as_bytes());
        mac
    }

    /// A token for `instance`, valid until `now + ttl`; `entropy` makes it unlike any other.
    pub(crate) fn issue(
        &mut self,
        now: Instant,
        ttl: Duration,
        instance: &str,
        entropy: &dyn Entropy,
    ) -> String {
        let epoch = *self.epoch.get_or_insert(now);
        let expires = now.saturating_duration_since(epoch).saturating_add(ttl);
        let millis = u64::try_from(expires.as_millis()).unwrap_or(u64::MAX);
        let mut raw = [0u8; RAW_BYTES];
        raw[..EXPIRY_BYTES].copy_from_slice(&millis.to_be_bytes());
        entropy.fill(&mut raw[EXPIRY_BYTES..HEAD_BYTES]);
        let tag = self
            .tag(&raw[..HEAD_BYTES], instance)
            .finalize()
            .into_bytes();
        raw[HEAD_BYTES..].copy_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a presented token for `instance` at `now`.
    pub(crate) fn check(&self, now: Instant, token: &[u8], instance: &str) -> Result<(), Rejected> {
        // The engine refuses non-canonical trailing bits, so every token has one spelling.
        if token.len() != TOKEN_CHARS {
            return Err(Rejected::Unknown);
        }
        let mut raw = [0u8; RAW_BYTES + 2];
        if URL_SAFE_NO_PAD.decode_slice(token, &mut raw) != Ok(RAW_BYTES) {
            return Err(Rejected::Unknown);
        }
        let epoch = self.epoch.ok_or(Rejected::Unknown)?;
        let mut expiry = [0u8; EXPIRY_BYTES];
        expiry.copy_from_slice(&raw[..EXPIRY_BYTES]);
        self.tag(&raw[..HEAD_BYTES], instance)
            .verify_slice(&raw[HEAD_BYTES..RAW_BYTES])
            .map_err(|_| Rejected::Unknown)?;
        let expires = Duration::from_millis(u64::from_be_bytes(expiry));
        if now.saturating_duration_since(epoch) >= expires {
            return Err(Rejected::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::epoch;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Each fill writes a counter, so every key differs.
    struct Counter(AtomicU64);
    impl Entropy for Counter {
        fn fill(&self, buf: &mut [u8]) {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (n >> ((i % 8) * 8)) as u8 ^ (i as u8);
            }
        }
    }

    fn tokens() -> (Tokens, Counter) {
        (
            Tokens::new(&Counter(AtomicU64::new(1))),
            Counter(AtomicU64::new(100)),
        )
    }

    #[test]
    fn issue_check_expire() {
        let (mut s, e) = tokens();
        let now = epoch();
        assert_eq!(
            s.check(now, &[b'A'; TOKEN_CHARS], "a"),
            Err(Rejected::Unknown)
        );
        let tok = s.issue(now, Duration::from_secs(10), "a", &e);
        assert_eq!(tok.len(), TOKEN_CHARS);
        assert_eq!(TOKEN_CHARS, 64);
        assert_eq!(s.check(now, tok.as_bytes(), "a"), Ok(()));
        let twin = s.issue(now, Duration::from_secs(10), "a", &e);
        assert_ne!(tok, twin, "every token differs");
        assert_eq!(s.check(now, twin.as_bytes(), "a"), Ok(()));
        assert_eq!(
            s.check(now + Duration::from_millis(9_999), tok.as_bytes(), "a"),
            Ok(())
        );
        // Another instance's token is as good as forged.
        assert_eq!(s.check(now, tok.as_bytes(), "b"), Err(Rejected::Unknown));
        assert_eq!(
            s.check(now + Duration::from_secs(10), tok.as_bytes(), "a"),
            Err(Rejected::Expired)
        );
        // Issued later, counted from the same epoch.
        let later = s.issue(
            now + Duration::from_secs(100),
            Duration::from_secs(1),
            "a",
            &e,
        );
        assert_eq!(
            s.check(now + Duration::from_secs(100), later.as_bytes(), "a"),
            Ok(())
        );
        assert_eq!(
            s.check(now + Duration::from_secs(101), later.as_bytes(), "a"),
            Err(Rejected::Expired)
        );
    }

    #[test]
    fn tampered_tokens_are_unknown() {
        let (mut s, e) = tokens();
        let now = epoch();
        let tok = s.issue(now, Duration::from_secs(10), "a", &e);
        // Every single-character change, expiry bytes included (a longer life is a forgery).
        for i in 0..tok.len() {
            let mut bad = tok.clone().into_bytes();
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(s.check(now, &bad, "a"), Err(Rejected::Unknown), "char {i}");
        }
        assert_eq!(s.check(now, b"", "a"), Err(Rejected::Unknown));
        assert_eq!(
            s.check(now, format!("{tok}=").as_bytes(), "a"),
            Err(Rejected::Unknown)
        );
        assert_eq!(
            s.check(now, &tok.as_bytes()[..TOKEN_CHARS - 1], "a"),
            Err(Rejected::Unknown)
        );
        // Another process (another key) does not accept it.
        let mut other = Tokens::new(&Counter(AtomicU64::new(2)));
        other.issue(now, Duration::from_secs(1), "a", &e);
        assert_eq!(
            other.check(now, tok.as_bytes(), "a"),
            Err(Rejected::Unknown)
        );
    }

    /// Security: however many tokens other instances ask for, from however many instances, an
    /// instance's token stays valid until its own expiry (a store with a global cap of 100 000
    /// evicted it).
    #[test]
    fn no_instance_can_evict_another_instances_token() {
        let (mut s, e) = tokens();
        let now = epoch();
        let victim = s.issue(now, Duration::from_secs(1), "victim", &e);
        for i in 0..100_001 {
            let attacker = format!("attacker-{}", i % 200);
            s.issue(now, Duration::from_secs(MAX_TTL_SECONDS), &attacker, &e);
        }
        assert_eq!(s.check(now, victim.as_bytes(), "victim"), Ok(()));
    }

    #[test]
    fn a_huge_ttl_saturates() {
        let (mut s, e) = tokens();
        let now = epoch();
        let tok = s.issue(now, Duration::MAX, "a", &e);
        assert_eq!(
            s.check(now + Duration::from_secs(1 << 40), tok.as_bytes(), "a"),
            Ok(())
        );
    }
}
