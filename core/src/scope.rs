//! Who a request is for: the scope (router or network) an ns-proxy stamps on it, the client's
//! address within it, and the instance those resolve to. Every lookup backend, the cache, the
//! signer and the roles speak in these.

use core::fmt;
use std::net::IpAddr;

/// A UUID as a 128-bit number (Neutron router and network IDs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub u128);

impl Uuid {
    /// Parses the canonical `8-4-4-4-12` hex form, or 32 hex digits without dashes. Upper and
    /// lower case are both accepted. Anything else (braces, `urn:uuid:`, whitespace) is `None`.
    pub fn parse(s: &[u8]) -> Option<Uuid> {
        const DASHES: [usize; 4] = [8, 13, 18, 23];
        let dashed = match s.len() {
            36 => true,
            32 => false,
            _ => return None,
        };
        let mut value = 0u128;
        for (i, &c) in s.iter().enumerate() {
            if dashed && DASHES.contains(&i) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let nibble = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return None,
            };
            value = (value << 4) | u128::from(nibble);
        }
        Some(Uuid(value))
    }
}

impl fmt::Display for Uuid {
    /// Canonical lowercase form with dashes, as Neutron prints IDs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            v >> 96,
            (v >> 80) & 0xffff,
            (v >> 64) & 0xffff,
            (v >> 48) & 0xffff,
            v & 0xffff_ffff_ffff
        )
    }
}

/// Where a request came from: the router or the network whose ns-proxy forwarded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `X-Neutron-Router-ID`.
    Router(Uuid),
    /// `X-Neutron-Network-ID`.
    Network(Uuid),
    /// `X-OVN-Network-ID`: a Neutron network served by OVN, whose instances are looked up in
    /// the OVN Southbound database. The same network ID as [`Scope::Network`]; a separate
    /// scope because it names which agent path the request took (and Neutron's OVN agent
    /// accepts no other).
    OvnNetwork(Uuid),
}

impl Scope {
    /// The router or network ID.
    pub fn id(&self) -> Uuid {
        match *self {
            Scope::Router(id) | Scope::Network(id) | Scope::OvnNetwork(id) => id,
        }
    }
}

/// The cache key: which instance is `ip` behind this router or on this network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupKey {
    /// The router or network.
    pub scope: Scope,
    /// The client's address (from `X-Forwarded-For`).
    pub ip: IpAddr,
}

/// What the agent needs to sign and forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Nova's instance UUID, as Neutron reports the port's `device_id`.
    pub instance_id: String,
    /// The instance's project (tenant) ID.
    pub project_id: String,
}

/// The peer as the next hop should see it: IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a `[::]`
/// listener reports for IPv4 clients) becomes plain IPv4, as Neutron's agent expects.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uuid_parse_forms() {
        let want = Uuid(0x6f9c_1b1e_3c4a_4b8e_9d2a_1f2e_3d4c_5b6a);
        let ok: &[&[u8]] = &[
            b"6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a",
            b"6F9C1B1E-3C4A-4B8E-9D2A-1F2E3D4C5B6A",
            b"6f9c1b1e3c4a4b8e9d2a1f2e3d4c5b6a",
            b"6F9C1B1E3C4A4B8E9D2A1F2E3D4C5B6A",
            b"6f9C1b1E-3c4A-4b8E-9d2A-1f2E3d4C5b6A",
        ];
        for s in ok {
            assert_eq!(Uuid::parse(s), Some(want), "{}", String::from_utf8_lossy(s));
        }
        let bad: &[&[u8]] = &[
            b"",
            b"6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6",
            b"6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a0",
            b"6f9c1b1e3c4a-4b8e-9d2a-1f2e3d4c5b6a-",
            b"6f9c1b1e-3c4a-4b8e-9d2a_1f2e3d4c5b6a",
            b"6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6g",
            b"{6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6}",
            b"6f9c1b1e3c4a4b8e9d2a1f2e3d4c5b6-",
            b"6f9c1b1e3c4a4b8e9d2a1f2e3d4c5b6a ",
            b" 6f9c1b1e3c4a4b8e9d2a1f2e3d4c5b6",
            b"+f9c1b1e3c4a4b8e9d2a1f2e3d4c5b6a",
        ];
        for s in bad {
            assert_eq!(Uuid::parse(s), None, "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn uuid_display_is_canonical_lowercase() {
        let s = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
        let id = Uuid::parse(s.to_uppercase().as_bytes()).unwrap();
        assert_eq!(id.to_string(), s);
        assert_eq!(Uuid(0).to_string(), "00000000-0000-0000-0000-000000000000");
        assert_eq!(
            Uuid(u128::MAX).to_string(),
            "ffffffff-ffff-ffff-ffff-ffffffffffff"
        );
        assert_eq!(Uuid(1).to_string(), "00000000-0000-0000-0000-000000000001");
        assert_eq!(Scope::Network(id).id(), id);
    }

    proptest! {
    #[test]
        fn uuid_display_parse_roundtrip(v in any::<u128>()) {
            let s = Uuid(v).to_string();
            prop_assert_eq!(Uuid::parse(s.as_bytes()), Some(Uuid(v)));
            prop_assert_eq!(Uuid::parse(s.replace('-', "").as_bytes()), Some(Uuid(v)));
        }

        #[test]
        fn uuid_parse_never_panics(s in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Uuid::parse(&s);
        }
    }
}
