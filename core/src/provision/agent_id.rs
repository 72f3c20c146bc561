//! The metadata agent's id as `neutron-ovn-metadata-agent` derives it: a name-based (version
//! 5, RFC 4122 §4.3) UUID of the name `metadata_agent` in the namespace *the chassis name read
//! as a UUID*, so every restart of an agent on one chassis registers the same id. Version 5
//! hashes with SHA-1, which none of our dependencies carry; the 60 lines below are the whole of
//! FIPS 180-4's SHA-1, used for this one id (it protects nothing).

use crate::scope::Uuid;

/// The agent id Neutron's OVN metadata agent registers for chassis `chassis`; `None` when the
/// chassis name is not a UUID (the anchor cannot start on such a chassis either).
pub fn metadata_agent_id(chassis: &str) -> Option<Uuid> {
    let namespace = Uuid::parse(chassis.as_bytes())?;
    Some(uuid5(namespace, b"metadata_agent"))
}

/// RFC 4122 §4.3 with SHA-1: the hash of the namespace's 16 bytes and the name, its first 16
/// bytes with the version (5) and variant (10) bits set.
pub fn uuid5(namespace: Uuid, name: &[u8]) -> Uuid {
    let mut input = namespace.0.to_be_bytes().to_vec();
    input.extend_from_slice(name);
    let digest = sha1(&input);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x50;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid(u128::from_be_bytes(bytes))
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, x) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&x.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha1_vectors() {
        // FIPS 180-4 examples, and one longer than a block (Python's hashlib).
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(&[b'a'; 1000])),
            "291e9a6c66994949b57ba5e650361e98fc36b1ba"
        );
    }

    #[test]
    fn as_python_uuid5() {
        // python3 -c "import uuid; print(uuid.uuid5(uuid.UUID('6f9c…'), 'metadata_agent'))"
        assert_eq!(
            metadata_agent_id("6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a").map(|u| u.to_string()),
            Some("889fb688-51b3-540c-8ce8-a5d56b76b87e".into())
        );
        assert_eq!(metadata_agent_id("compute-1"), None);
    }
}
