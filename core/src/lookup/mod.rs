//! Lookup backends: who is `ip` behind router R (or on network N)?
//!
//! [`NeutronClient`] asks the Neutron API the questions Neutron's own metadata agent asks
//! (reference §B2), authenticating with Keystone v3 when configured. It is a sans-IO state
//! machine like the rest of the core: it asks the runtime to open TCP connections
//! ([`ClientAction::Connect`]), offers request bytes through
//! [`NeutronClient::pending_write`], takes the response bytes in [`NeutronClient::handle`],
//! and reports answers as [`ClientEvent`]s. Single-flight per key is the cache's job
//! ([`crate::cache::LookupCache`]); this client assumes at most one query per key at a time.
//!
//! Limitation: the core never resolves host names. Configured URLs are resolved by the runtime
//! at startup ([`HttpTarget::parse_resolved`]); a Neutron URL found in the Keystone catalog must
//! have an IP-literal host, or every query fails with an error saying so — set `neutron_url`
//! explicitly in that case.

mod exchange;
pub mod keystone;
pub mod neutron;
pub mod url;

use std::net::Ipv6Addr;

pub use exchange::MAX_RESPONSE_BODY;
pub use keystone::KeystoneAuth;
pub use neutron::{ClientAction, ClientEvent, NeutronClient, NeutronConfig, ReqId};
pub use url::HttpTarget;

/// The MAC address embedded in a modified EUI-64 interface identifier (RFC 4291 appendix A):
/// the low 64 bits are `MAC[0..3] ff fe MAC[3..6]` with the universal/local bit of the first
/// byte inverted. `None` if the identifier does not carry the `ff fe` marker (privacy or
/// manually configured addresses), since no MAC can be recovered from those.
///
/// Neutron's agent (oslo `get_mac_addr_by_ipv6`) does the same arithmetic without the marker
/// check; a MAC derived from a non-EUI-64 address would match no port anyway.
pub fn mac_from_eui64(ip: Ipv6Addr) -> Option<[u8; 6]> {
    let o = ip.octets();
    if o[11] != 0xff || o[12] != 0xfe {
        return None;
    }
    Some([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]])
}

/// `fa:16:3e:00:00:01`: lowercase, colon-separated, as Neutron stores `mac_address`.
pub(crate) fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eui64_macs() {
        // (address, MAC)
        let cases: &[(&str, Option<[u8; 6]>)] = &[
            (
                "fe80::f816:3eff:fe12:3456",
                Some([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]),
            ),
            (
                "fe80::216:3eff:fe00:1",
                Some([0x00, 0x16, 0x3e, 0x00, 0x00, 0x01]),
            ),
            // The U/L bit flips both ways.
            (
                "2001:db8::ff:fe00:0",
                Some([0x02, 0x00, 0x00, 0x00, 0x00, 0x00]),
            ),
            ("fe80::1", None),
            ("fe80::f816:3eff:fd12:3456", None),
        ];
        for (ip, want) in cases {
            let ip: Ipv6Addr = ip.parse().unwrap();
            assert_eq!(mac_from_eui64(ip), *want, "{ip}");
        }
        assert_eq!(
            format_mac([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]),
            "fa:16:3e:12:34:56"
        );
    }
}
