//! The instance-ID signature shared by the agent (which signs) and the server (which checks).
//!
//! Neutron's metadata agent sends `X-Instance-ID-Signature = hmac.new(secret, instance_id,
//! sha256).hexdigest()`; Nova recomputes the same string and compares the two with
//! `hmac.compare_digest`. So the wire form is exactly 64 **lowercase** hex digits, and anything
//! else (uppercase, other length, non-hex) is a mismatch, as it is in Nova.

use core::fmt;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Length of a signature on the wire: SHA-256 output as lowercase hex.
pub const SIG_HEX_LEN: usize = 64;

const SIG_LEN: usize = SIG_HEX_LEN / 2;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Signs instance IDs as Neutron does: lowercase hex HMAC-SHA256(key = shared secret,
/// msg = instance id).
///
/// The HMAC key schedule (padding and hashing the secret into the inner and outer states) is done
/// once in [`Signer::new`]; each signature clones that state on the stack, so signing and
/// verifying never allocate.
#[derive(Clone)]
pub struct Signer {
    keyed: Hmac<Sha256>,
}

impl Signer {
    /// A signer for `secret`. Any length is accepted, including empty (Neutron's and Nova's
    /// default `metadata_proxy_shared_secret` is `''`, and HMAC is defined for it).
    pub fn new(secret: &[u8]) -> Self {
        // `new_from_slice` cannot fail for HMAC: keys of any length are hashed or padded.
        let keyed = match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(keyed) => keyed,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        Signer { keyed }
    }

    fn mac(&self, instance_id: &str) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(instance_id.as_bytes());
        mac
    }

    /// The signature of `instance_id`, as the `X-Instance-ID-Signature` value. No allocation.
    pub fn sign(&self, instance_id: &str) -> SigHex {
        let digest = self.mac(instance_id).finalize().into_bytes();
        let mut out = [0u8; SIG_HEX_LEN];
        for (pair, byte) in out.chunks_exact_mut(2).zip(digest.iter()) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
        SigHex(out)
    }

    /// Whether `sig_hex` is the signature of `instance_id`.
    ///
    /// Only the exact form [`sign`](Self::sign) produces verifies: 64 lowercase hex digits, no
    /// surrounding whitespace. That matches Nova, which compares hexdigest strings, so an
    /// uppercase rendering of the right MAC is rejected there too. The comparison of the MAC is
    /// constant time ([`Mac::verify_slice`]) and so is the hex decoding; only the length check
    /// returns early, and the length of a signature is public.
    pub fn verify(&self, instance_id: &str, sig_hex: &[u8]) -> bool {
        if sig_hex.len() != SIG_HEX_LEN {
            return false;
        }
        let mut raw = [0u8; SIG_LEN];
        let mut valid = 0xffu8;
        for (byte, pair) in raw.iter_mut().zip(sig_hex.chunks_exact(2)) {
            let (hi, hi_ok) = lower_hex_nibble(pair[0]);
            let (lo, lo_ok) = lower_hex_nibble(pair[1]);
            *byte = (hi << 4) | lo;
            valid &= hi_ok & lo_ok;
        }
        // Always run the MAC comparison so bad hex and a wrong MAC take the same time.
        let mac_ok = self.mac(instance_id).verify_slice(&raw).is_ok();
        mac_ok & (valid == 0xff)
    }
}

/// The server's check of `X-Instance-ID-Signature` across a rotation of the shared secret.
///
/// Agents are given a new secret after the server (by hand or by configuration management,
/// minutes apart), so for a grace window after a rotation the previous secret still verifies;
/// past the window's deadline only the current one does. Only the latest previous secret is
/// kept: a second rotation inside the window closes the first one's.
#[derive(Clone, Debug)]
pub struct Verifier {
    current: Signer,
    /// The secret before the last rotation, and until when it still verifies.
    previous: Option<(Signer, Instant)>,
}

impl Verifier {
    /// Verifies with `current` only.
    pub fn new(current: Signer) -> Self {
        Verifier {
            current,
            previous: None,
        }
    }

    /// Installs `next` at `now`; when it differs from the current secret, the current one keeps
    /// verifying until `now + grace` (none with a zero grace). The same secret again changes
    /// nothing, so a reload that did not touch the secret file opens no window.
    pub fn rotate(&mut self, now: Instant, next: Signer, grace: Duration) {
        // Signers keep no secret to compare; equal keys give equal MACs, and two keys giving
        // the same MAC of a fixed message is an HMAC-SHA256 collision.
        const PROBE: &str = "mdproxy secret rotation probe";
        if next.sign(PROBE) == self.current.sign(PROBE) {
            return;
        }
        let old = core::mem::replace(&mut self.current, next);
        self.previous = (!grace.is_zero()).then(|| (old, now + grace));
    }

    /// Whether `sig_hex` is the signature of `instance_id` with the current secret, or with
    /// the previous one while its window is open at `now`.
    pub fn verify(&self, now: Instant, instance_id: &str, sig_hex: &[u8]) -> bool {
        let previous = match &self.previous {
            Some((old, until)) if now < *until => old.verify(instance_id, sig_hex),
            _ => false,
        };
        self.current.verify(instance_id, sig_hex) | previous
    }
}

/// Decodes one lowercase hex digit without branching on its value: returns the nibble (0 when
/// invalid) and a mask that is `0xff` when `c` is in `[0-9a-f]` and `0` otherwise.
fn lower_hex_nibble(c: u8) -> (u8, u8) {
    let digit = i16::from(c) - i16::from(b'0');
    let alpha = i16::from(c) - i16::from(b'a');
    // `x >> 15` of an i16 in -255..=255 is -1 (all ones) when x < 0, else 0.
    let is_digit = ((digit >> 15) ^ ((digit - 10) >> 15)) as u8; // 0 <= digit < 10
    let is_alpha = ((alpha >> 15) ^ ((alpha - 6) >> 15)) as u8; // 0 <= alpha < 6
    let value = ((digit as u8) & is_digit) | ((alpha as u8).wrapping_add(10) & is_alpha);
    (value, is_digit | is_alpha)
}

impl fmt::Debug for Signer {
    /// Never prints the secret (nor the keyed state derived from it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

/// A signature as 64 lowercase hex digits, on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SigHex([u8; SIG_HEX_LEN]);

impl SigHex {
    /// The signature as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored, so this cannot fail.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The signature as bytes, ready to be written as a header value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<str> for SigHex {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for SigHex {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Display for SigHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SigHex {
    /// The signature is not secret (it travels in a header), so Debug shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SigHex").field(&self.as_str()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (secret, message, expected lowercase hexdigest)
    const VECTORS: &[(&[u8], &str, &str)] = &[
        // RFC 4231 §4.3, test case 2.
        (
            b"Jefe",
            "what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        // python3: hmac.new(b"a965cd23ed2f4502", b"6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a",
        //                   hashlib.sha256).hexdigest()
        (
            b"a965cd23ed2f4502",
            "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a",
            "479ad8d2303c58f03b686b8e97811b5d990278bfb6b8906387863ba3c5bd7458",
        ),
        // python3: hmac.new(b"s3cr3t", b"0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01", sha256)
        (
            b"s3cr3t",
            "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01",
            "4cb436cf0ab047ac79fbd7d0e08d104931f00cd0d562ce344516ebf0aebcb949",
        ),
        // Neutron's default secret is ''. python3: hmac.new(b"", b"0d5e…6e01", sha256)
        (
            b"",
            "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01",
            "928184fd12834c9b805eb3f682ff8994f84c55b402b108c29752470c3fb509eb",
        ),
    ];

    #[test]
    fn sign_matches_python_hexdigest() {
        for &(secret, msg, want) in VECTORS {
            let sig = Signer::new(secret).sign(msg);
            assert_eq!(sig.as_str(), want, "secret {secret:?}");
            assert_eq!(AsRef::<str>::as_ref(&sig), want);
            assert_eq!(AsRef::<[u8]>::as_ref(&sig), want.as_bytes());
            assert_eq!(sig.to_string(), want);
            assert_eq!(format!("{sig:?}"), format!("SigHex({want:?})"));
        }
    }

    #[test]
    fn verify_accepts_exact_signature() {
        for &(secret, msg, want) in VECTORS {
            let signer = Signer::new(secret);
            assert!(signer.verify(msg, want.as_bytes()));
            assert!(signer.verify(msg, signer.sign(msg).as_bytes()));
        }
    }

    #[test]
    fn verify_rejects_everything_else() {
        let signer = Signer::new(b"s3cr3t");
        let id = "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01";
        let good = "4cb436cf0ab047ac79fbd7d0e08d104931f00cd0d562ce344516ebf0aebcb949";
        let flip = |i: usize| {
            let mut s = good.as_bytes().to_vec();
            s[i] = if s[i] == b'0' { b'1' } else { b'0' };
            s
        };
        let cases: &[(&str, Vec<u8>)] = &[
            ("first char flipped", flip(0)),
            ("last char flipped", flip(63)),
            ("middle char flipped", flip(31)),
            ("truncated by one", good.as_bytes()[..63].to_vec()),
            ("truncated to half", good.as_bytes()[..32].to_vec()),
            ("one char too many", format!("{good}0").into_bytes()),
            (
                "uppercase (Nova compares hexdigest strings)",
                good.to_uppercase().into_bytes(),
            ),
            (
                "one uppercase letter",
                good.replacen('c', "C", 1).into_bytes(),
            ),
            ("non-hex char", good.replacen('c', "g", 1).into_bytes()),
            ("empty", Vec::new()),
            ("trailing space", format!("{} ", &good[..63]).into_bytes()),
            ("leading space", format!(" {}", &good[1..]).into_bytes()),
            ("raw 32-byte MAC instead of hex", vec![0u8; 32]),
            (
                "other instance's signature",
                signer.sign("other").as_bytes().to_vec(),
            ),
            (
                "right id, other secret",
                Signer::new(b"s3cr3u").sign(id).as_bytes().to_vec(),
            ),
        ];
        for (name, sig) in cases {
            assert!(!signer.verify(id, sig), "{name} verified");
        }
        assert!(!signer.verify("0D5E3C1C-6F4B-4B0E-9B8A-2A7D4F5C6E01", good.as_bytes()));
    }

    #[test]
    fn hex_nibble_decoding_is_exact() {
        for c in 0..=255u8 {
            let (value, ok) = lower_hex_nibble(c);
            match c {
                b'0'..=b'9' => assert_eq!((value, ok), (c - b'0', 0xff)),
                b'a'..=b'f' => assert_eq!((value, ok), (c - b'a' + 10, 0xff)),
                _ => assert_eq!(ok, 0, "{c:#04x} accepted"),
            }
        }
    }

    #[test]
    fn debug_never_shows_secret() {
        let secret = "hunter2-very-secret";
        let signer = Signer::new(secret.as_bytes());
        let shown = format!("{signer:?} {signer:#?}");
        assert!(!shown.contains(secret), "{shown}");
        assert_eq!(format!("{signer:?}"), "Signer { .. }");
    }

    #[test]
    fn clones_sign_alike() {
        let a = Signer::new(b"k");
        let b = a.clone();
        assert_eq!(a.sign("x"), b.sign("x"));
        assert_ne!(a.sign("x"), a.sign("y"));
    }

    fn sig(secret: &[u8]) -> SigHex {
        Signer::new(secret).sign("i-1")
    }

    #[test]
    fn the_old_secret_verifies_inside_the_window_only() {
        let t0 = crate::testing::epoch();
        let mut v = Verifier::new(Signer::new(b"old"));
        let grace = Duration::from_secs(60);
        v.rotate(t0, Signer::new(b"new"), grace);
        assert!(v.verify(t0, "i-1", sig(b"new").as_bytes()));
        assert!(v.verify(t0 + grace / 2, "i-1", sig(b"old").as_bytes()));
        assert!(!v.verify(t0 + grace, "i-1", sig(b"old").as_bytes()));
        assert!(v.verify(t0 + grace * 2, "i-1", sig(b"new").as_bytes()));
        assert!(!v.verify(t0, "i-1", sig(b"other").as_bytes()));
    }

    #[test]
    fn a_second_rotation_keeps_only_the_latest_previous() {
        let t0 = crate::testing::epoch();
        let grace = Duration::from_secs(60);
        let mut v = Verifier::new(Signer::new(b"one"));
        v.rotate(t0, Signer::new(b"two"), grace);
        let t1 = t0 + Duration::from_secs(10);
        v.rotate(t1, Signer::new(b"three"), grace);
        assert!(!v.verify(t1, "i-1", sig(b"one").as_bytes()));
        assert!(v.verify(t1, "i-1", sig(b"two").as_bytes()));
        // The window counts from the second rotation.
        assert!(v.verify(t0 + grace, "i-1", sig(b"two").as_bytes()));
        assert!(!v.verify(t1 + grace, "i-1", sig(b"two").as_bytes()));
        assert!(v.verify(t1 + grace, "i-1", sig(b"three").as_bytes()));
    }

    #[test]
    fn an_unchanged_secret_opens_no_window_and_a_zero_grace_none_either() {
        let t0 = crate::testing::epoch();
        let grace = Duration::from_secs(60);
        let mut v = Verifier::new(Signer::new(b"one"));
        v.rotate(t0, Signer::new(b"one"), grace);
        assert!(v.previous.is_none());
        v.rotate(t0, Signer::new(b"two"), Duration::ZERO);
        assert!(!v.verify(t0, "i-1", sig(b"one").as_bytes()));
        // The same secret again keeps an open window as it was.
        v.rotate(t0, Signer::new(b"three"), grace);
        v.rotate(t0 + Duration::from_secs(1), Signer::new(b"three"), grace);
        assert!(v.verify(t0 + Duration::from_secs(30), "i-1", sig(b"two").as_bytes()));
        assert!(!v.verify(t0 + grace, "i-1", sig(b"two").as_bytes()));
    }
}
