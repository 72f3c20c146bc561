//! IMDSv2 session tokens, stateless, one scheme for the server and the agent: a token carries
//! its expiry and an HMAC-SHA256 tag over that expiry and the instance it was issued to, under
//! a key every process that holds it shares ([`TokenKeys`]: a key file, or a random key of
//! this process).
//!
//! Nothing is stored per token, so there is no cap for one instance to fill and nothing any
//! instance can evict: a token is valid until its own expiry, whoever asks for how many others
//! (the server's former store had a global cap of 100 000 tokens, past which a tenant asking
//! for many pushed out the others'). Any process with the key validates any token — several
//! ns-proxies, agents on several network nodes behind one Nova, a restarted agent — with no
//! shared state.
//!
//! Wire form: base64url without padding of `expiry (8 bytes, big-endian milliseconds since the
//! Unix epoch) ‖ nonce (8 random bytes, so that every token differs) ‖ tag (32 bytes)`, 64
//! characters; the tag is `HMAC-SHA256(key, "mdproxy imdsv2 token\0" ‖ expiry ‖ nonce ‖
//! instance id)` and is compared in constant time. The length and layout are those of the
//! tokens the server issued before; the expiry now counts from the Unix epoch instead of the
//! process's first token, because a token must mean the same to another process and after a
//! restart. The core reads no clock: [`TokenClock`] turns the `now: Instant` of each input into
//! Unix time from an anchor the binary takes at startup (as [`crate::tls`] does for rustls).
//!
//! A token presented by another instance has a tag that does not match: it is as unknown as a
//! forged one, so an IP address reused by another instance inherits nothing. An instance
//! removed and configured again within a token's TTL finds its tokens still valid (they name
//! the same instance).
//!
//! Rotation: [`TokenKeys`] holds one or two keys; the first signs, both verify. Put the new
//! key second everywhere, then first, and drop the old one once the longest TTL (6 hours) has
//! passed since it last signed.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::Entropy;
use crate::http::Headers;

/// Longest TTL a client may ask for, in seconds (AWS: 6 hours).
pub const MAX_TTL_SECONDS: u64 = 21_600;
/// Fewest bytes a key from a file may have: shorter ones are guessable.
pub const MIN_KEY_BYTES: usize = 16;
/// Most bytes of one key (a longer line is more likely a wrong file than a key).
pub const MAX_KEY_BYTES: usize = 1024;
/// Keys a key file may hold: the signing key and, during a rotation, one more that verifies.
pub const MAX_KEYS: usize = 2;

/// Bytes of a random key.
const RANDOM_KEY_BYTES: usize = 32;
const EXPIRY_BYTES: usize = 8;
const NONCE_BYTES: usize = 8;
const TAG_BYTES: usize = 32;
const HEAD_BYTES: usize = EXPIRY_BYTES + NONCE_BYTES;
const RAW_BYTES: usize = HEAD_BYTES + TAG_BYTES;
/// Length of a token on the wire: `RAW_BYTES` in base64url without padding.
pub const TOKEN_CHARS: usize = (RAW_BYTES * 4).div_ceil(3);
/// Separates this use of the key from any other.
const CONTEXT: &[u8] = b"mdproxy imdsv2 token\0";

/// Why a presented token does not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not a token any of the keys issued to this instance (format, forged, another
    /// instance's).
    Unknown,
    /// It was issued to this instance, but its TTL has run out.
    Expired,
}

impl Rejected {
    /// For the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Unknown => "unknown (or another instance's)",
            Rejected::Expired => "expired",
        }
    }
}

/// Why a key file's contents are not keys.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenKeyError {
    /// No key in it.
    Empty,
    /// More lines than [`MAX_KEYS`].
    TooMany(usize),
    /// The key on this line (1-based) is shorter than [`MIN_KEY_BYTES`].
    TooShort(usize),
    /// The key on this line (1-based) is longer than [`MAX_KEY_BYTES`].
    TooLong(usize),
    /// The same key is on both lines (a rotation that forgot the new key).
    Repeated,
}

impl fmt::Display for TokenKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKeyError::Empty => f.write_str("it holds no key (one key per line: the first signs, a second one only verifies)"),
            TokenKeyError::TooMany(n) => write!(f, "it holds {n} keys; at most {MAX_KEYS} (the signing key, and the previous one during a rotation)"),
            TokenKeyError::TooShort(line) => write!(f, "the key on line {line} has fewer than {MIN_KEY_BYTES} bytes (make one with: openssl rand -base64 32)"),
            TokenKeyError::TooLong(line) => write!(f, "the key on line {line} has more than {MAX_KEY_BYTES} bytes"),
            TokenKeyError::Repeated => f.write_str("both lines hold the same key"),
        }
    }
}

impl std::error::Error for TokenKeyError {}

/// The keys tokens are signed and checked with: the first signs, every one verifies. Cheap to
/// clone (the key schedules are shared).
#[derive(Clone)]
pub struct TokenKeys {
    macs: Arc<[Hmac<Sha256>]>,
    /// Drawn by this process, not read from a file: tokens die with it.
    random: bool,
}

impl fmt::Debug for TokenKeys {
    /// Never prints a key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("keys", &self.macs.len())
            .field("random", &self.random)
            .finish()
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // `new_from_slice` cannot fail for HMAC: keys of any length are hashed or padded.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(keyed) => keyed,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

impl TokenKeys {
    /// A key file's contents: one key per line (its bytes, without the line end; blank lines
    /// are skipped), at most [`MAX_KEYS`].
    pub fn parse(contents: &[u8]) -> Result<TokenKeys, TokenKeyError> {
        let mut keys: Vec<&[u8]> = Vec::new();
        for (i, line) in contents.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if line.len() < MIN_KEY_BYTES {
                return Err(TokenKeyError::TooShort(i + 1));
            }
            if line.len() > MAX_KEY_BYTES {
                return Err(TokenKeyError::TooLong(i + 1));
            }
            keys.push(line);
        }
        match keys.as_slice() {
            [] => Err(TokenKeyError::Empty),
            [a, b] if a == b => Err(TokenKeyError::Repeated),
            k if k.len() > MAX_KEYS => Err(TokenKeyError::TooMany(k.len())),
            k => Ok(TokenKeys {
                macs: k.iter().map(|key| mac(key)).collect(),
                random: false,
            }),
        }
    }

    /// One key drawn from `entropy`: this process's tokens are valid only in this process and
    /// until it stops.
    pub fn random(entropy: &dyn Entropy) -> TokenKeys {
        let mut key = [0u8; RANDOM_KEY_BYTES];
        entropy.fill(&mut key);
        TokenKeys {
            macs: Arc::new([mac(&key)]),
            random: true,
        }
    }

    /// How many keys verify (1 or 2).
    pub fn len(&self) -> usize {
        self.macs.len()
    }

    /// Never true: there is always a signing key (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.macs.is_empty()
    }

    /// Drawn by this process ([`TokenKeys::random`]), not read from a file.
    pub fn is_random(&self) -> bool {
        self.random
    }
}

/// Unix time at an `Instant`: the binary anchors it once (`Instant::now()` and
/// `SystemTime::now()` taken together); a test passes any date. Later steps of the system
/// clock are not followed: expiries only need to agree between processes to within the
/// clocks' skew, and an `Instant` never goes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenClock {
    anchor: Instant,
    unix: Duration,
}

impl TokenClock {
    /// A clock at which `anchor` was `unix` after the Unix epoch.
    pub fn new(anchor: Instant, unix: Duration) -> TokenClock {
        TokenClock { anchor, unix }
    }

    /// Unix time at `now` (an input before the anchor counts as the anchor).
    fn unix_at(&self, now: Instant) -> Duration {
        self.unix
            .saturating_add(now.saturating_duration_since(self.anchor))
    }
}

/// Issues and checks tokens. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Tokens {
    keys: TokenKeys,
    clock: TokenClock,
}

impl Tokens {
    /// Tokens under `keys`, with expiries in Unix time by `clock`.
    pub fn new(keys: TokenKeys, clock: TokenClock) -> Tokens {
        Tokens { keys, clock }
    }

    /// The keys.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// The tag over `head` (expiry and nonce) and `instance`, under `key`.
    fn tag(key: &Hmac<Sha256>, head: &[u8], instance: &str) -> Hmac<Sha256> {
        let mut mac = key.clone();
        mac.update(CONTEXT);
        mac.update(head);
        mac.update(instance.as_bytes());
        mac
    }

    /// A token for `instance`, valid until `now + ttl`; `entropy` makes it unlike any other.
    pub fn issue(
        &self,
        now: Instant,
        ttl: Duration,
        instance: &str,
        entropy: &dyn Entropy,
    ) -> String {
        let expires = self.clock.unix_at(now).saturating_add(ttl);
        let millis = u64::try_from(expires.as_millis()).unwrap_or(u64::MAX);
        let mut raw = [0u8; RAW_BYTES];
        raw[..EXPIRY_BYTES].copy_from_slice(&millis.to_be_bytes());
        entropy.fill(&mut raw[EXPIRY_BYTES..HEAD_BYTES]);
        // There is always a first key (a `TokenKeys` is never empty).
        if let Some(signing) = self.keys.macs.first() {
            let tag = Self::tag(signing, &raw[..HEAD_BYTES], instance)
                .finalize()
                .into_bytes();
            raw[HEAD_BYTES..].copy_from_slice(&tag);
        }
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a presented token for `instance` at `now`, under every key.
    pub fn check(&self, now: Instant, token: &[u8], instance: &str) -> Result<(), Rejected> {
        // The engine refuses non-canonical trailing bits, so every token has one spelling.
        if token.len() != TOKEN_CHARS {
            return Err(Rejected::Unknown);
        }
        let mut raw = [0u8; RAW_BYTES + 2];
        if URL_SAFE_NO_PAD.decode_slice(token, &mut raw) != Ok(RAW_BYTES) {
            return Err(Rejected::Unknown);
        }
        let (head, tag) = (&raw[..HEAD_BYTES], &raw[HEAD_BYTES..RAW_BYTES]);
        let genuine = (self.keys.macs.iter())
            .any(|key| Self::tag(key, head, instance).verify_slice(tag).is_ok());
        if !genuine {
            return Err(Rejected::Unknown);
        }
        let mut expiry = [0u8; EXPIRY_BYTES];
        expiry.copy_from_slice(&raw[..EXPIRY_BYTES]);
        let expires = Duration::from_millis(u64::from_be_bytes(expiry));
        if self.clock.unix_at(now) >= expires {
            return Err(Rejected::Expired);
        }
        Ok(())
    }
}

/// The answer to a TTL outside the range (400).
pub const TTL_REFUSED: &str =
    "X-aws-ec2-metadata-token-ttl-seconds must be a whole number of seconds from 1 to 21600.";
/// The answer to a request without a valid token where one is needed (401).
pub const TOKEN_REFUSED: &str = "Unauthorized: a valid IMDSv2 token is required.";

/// The TTL a token request asks for: exactly one `X-aws-ec2-metadata-token-ttl-seconds` of
/// decimal digits only, 1 ..= 21600; `None` is a 400.
pub fn requested_ttl(headers: &Headers) -> Option<u64> {
    let mut values = headers.get_all(super::TOKEN_TTL_HEADER);
    match (values.next(), values.next()) {
        (Some(v), None) => parse_ttl(v),
        _ => None,
    }
}

/// A TTL header value: decimal digits only, 1 ..= 21600.
fn parse_ttl(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(v).ok()?.parse::<u64>().ok()?;
    (1..=MAX_TTL_SECONDS).contains(&n).then_some(n)
}

/// The token a request presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// None.
    Missing,
    /// Exactly one.
    One(&'a [u8]),
    /// Several `X-aws-ec2-metadata-token` fields: which to trust is not ours to guess (401).
    Several,
}

/// The `X-aws-ec2-metadata-token` fields of `headers`.
pub fn presented(headers: &Headers) -> Presented<'_> {
    let mut values = headers.get_all(super::TOKEN_HEADER);
    match (values.next(), values.next()) {
        (None, _) => Presented::Missing,
        (Some(tok), None) => Presented::One(tok),
        (Some(_), Some(_)) => Presented::Several,
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

    /// 2023-11-14T22:13:20Z.
    const UNIX: Duration = Duration::from_secs(1_700_000_000);

    fn tokens() -> (Tokens, Counter) {
        let clock = TokenClock::new(epoch(), UNIX);
        (
            Tokens::new(TokenKeys::random(&Counter(AtomicU64::new(1))), clock),
            Counter(AtomicU64::new(100)),
        )
    }

    fn from_file(contents: &str, clock: TokenClock) -> Tokens {
        Tokens::new(TokenKeys::parse(contents.as_bytes()).unwrap(), clock)
    }

    #[test]
    fn issue_check_expire() {
        let (s, e) = tokens();
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

    /// The expiry is Unix time: another process with the same key, anchored at another
    /// instant of the same wall clock (a restart, an agent on another node), agrees.
    #[test]
    fn another_process_with_the_key_agrees() {
        let e = Counter(AtomicU64::new(7));
        let key = "0123456789abcdef0123456789abcdef";
        let t0 = epoch();
        let first = from_file(key, TokenClock::new(t0, UNIX));
        let tok = first.issue(t0, Duration::from_secs(60), "a", &e);
        // Started 30 s later: its anchor is another Instant, at Unix time + 30 s.
        let t1 = t0 + Duration::from_secs(30);
        let restarted = from_file(
            &format!("{key}\n"),
            TokenClock::new(t1, UNIX + Duration::from_secs(30)),
        );
        assert_eq!(restarted.check(t1, tok.as_bytes(), "a"), Ok(()));
        assert_eq!(
            restarted.check(t1 + Duration::from_secs(30), tok.as_bytes(), "a"),
            Err(Rejected::Expired)
        );
        assert_eq!(
            restarted.check(t1, tok.as_bytes(), "b"),
            Err(Rejected::Unknown)
        );
        // The wire form: the expiry is the Unix time in milliseconds, big-endian.
        let raw = URL_SAFE_NO_PAD.decode(&tok).unwrap();
        let want = (UNIX + Duration::from_secs(60)).as_millis() as u64;
        assert_eq!(raw[..8], want.to_be_bytes());
    }

    #[test]
    fn rotation_the_first_key_signs_both_verify() {
        let e = Counter(AtomicU64::new(9));
        let clock = TokenClock::new(epoch(), UNIX);
        let now = epoch();
        let (old, new) = ("old-key-old-key-old-key", "new-key-new-key-new-key");
        let before = from_file(old, clock);
        let during = from_file(&format!("{new}\r\n{old}\r\n"), clock);
        let after = from_file(new, clock);
        let old_tok = before.issue(now, Duration::from_secs(60), "a", &e);
        let new_tok = during.issue(now, Duration::from_secs(60), "a", &e);
        assert_eq!(
            during.check(now, old_tok.as_bytes(), "a"),
            Ok(()),
            "old key still verifies"
        );
        assert_eq!(during.check(now, new_tok.as_bytes(), "a"), Ok(()));
        assert_eq!(
            after.check(now, new_tok.as_bytes(), "a"),
            Ok(()),
            "the new key signed"
        );
        assert_eq!(
            before.check(now, new_tok.as_bytes(), "a"),
            Err(Rejected::Unknown)
        );
        assert_eq!(
            after.check(now, old_tok.as_bytes(), "a"),
            Err(Rejected::Unknown)
        );
    }

    #[test]
    fn key_files() {
        let ok = |s: &str| TokenKeys::parse(s.as_bytes()).map(|k| k.len());
        let k = "k".repeat(MIN_KEY_BYTES);
        let k2 = "j".repeat(MAX_KEY_BYTES);
        assert_eq!(ok(&k), Ok(1));
        assert_eq!(ok(&format!("{k}\n")), Ok(1));
        assert_eq!(ok(&format!("\n{k}\n\n{k2}\n")), Ok(2));
        assert_eq!(ok(""), Err(TokenKeyError::Empty));
        assert_eq!(ok("\n\r\n"), Err(TokenKeyError::Empty));
        assert_eq!(
            ok(&format!("{k}\nshort\n")),
            Err(TokenKeyError::TooShort(2))
        );
        assert_eq!(ok(&format!("{k2}j")), Err(TokenKeyError::TooLong(1)));
        assert_eq!(
            ok(&format!("{k}\n{k2}\n{k}x\n")),
            Err(TokenKeyError::TooMany(3))
        );
        assert_eq!(ok(&format!("{k}\n{k}")), Err(TokenKeyError::Repeated));
        let keys = TokenKeys::parse(k.as_bytes()).unwrap();
        assert!(!keys.is_random() && !keys.is_empty());
        assert!(!format!("{keys:?}").contains(&k), "Debug never shows a key");
        assert!(TokenKeys::random(&Counter(AtomicU64::new(3))).is_random());
    }

    #[test]
    fn tampered_tokens_are_unknown() {
        let (s, e) = tokens();
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
        // Another process (another random key) does not accept it.
        let other = Tokens::new(
            TokenKeys::random(&Counter(AtomicU64::new(2))),
            TokenClock::new(now, UNIX),
        );
        assert_eq!(
            other.check(now, tok.as_bytes(), "a"),
            Err(Rejected::Unknown)
        );
    }

    /// Security: however many tokens other instances ask for, an instance's token stays valid
    /// until its own expiry (a store with a global cap of 100 000 evicted it).
    #[test]
    fn no_instance_can_evict_another_instances_token() {
        let (s, e) = tokens();
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
        let (s, e) = tokens();
        let now = epoch();
        let tok = s.issue(now, Duration::MAX, "a", &e);
        assert_eq!(
            s.check(now + Duration::from_secs(1 << 40), tok.as_bytes(), "a"),
            Ok(())
        );
    }

    #[test]
    fn ttl_parsing() {
        for (v, want) in [
            (&b"1"[..], Some(1)),
            (b"21600", Some(21600)),
            (b"060", Some(60)),
            (b"0", None),
            (b"21601", None),
            (b"", None),
            (b"-1", None),
            (b"+5", None),
            (b" 5", None),
            (b"5s", None),
            (b"99999999999999999999", None),
        ] {
            assert_eq!(parse_ttl(v), want, "{:?}", v.escape_ascii().to_string());
        }
    }
}
