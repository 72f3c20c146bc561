//! Which port a client address names: the one rule every lookup backend follows.
//!
//! A client is matched by its fixed IP. Only an IPv6 link-local client (`fe80::/10`) may also
//! be matched by the MAC its address embeds, because a link-local address is not a fixed IP
//! Neutron hands out: it is derived by the instance from its MAC (Neutron's agent,
//! `_get_instance_and_project_id`: `remote_ip.is_link_local()` → search by
//! `get_mac_addr_by_ipv6`). Any other address, global ones with an EUI-64 identifier included,
//! is only ever its own fixed IP: otherwise `2001:db8::f816:3eff:fe00:5`, the fixed IP of port
//! A, would name port B, whose MAC it happens to embed. Stricter than Neutron in two ways: a
//! port that lists the link-local address itself wins over the MAC, and an identifier without
//! the `ff fe` marker yields no MAC at all.

use std::net::{IpAddr, Ipv6Addr};

/// How the port behind one client address is searched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSearch {
    /// The port with this fixed IP, and nothing else.
    Ip(IpAddr),
    /// An IPv6 link-local client: the port with this exact address if any port has it; only if
    /// none does, the port with this MAC (`None`: the address embeds no MAC).
    LinkLocal(Ipv6Addr, Option<[u8; 6]>),
}

/// The search for client address `ip`. An IPv4-mapped IPv6 address is its IPv4 (haproxy
/// listening on both families reports IPv4 clients that way).
pub fn port_search(ip: IpAddr) -> PortSearch {
    match ip {
        IpAddr::V4(_) => PortSearch::Ip(ip),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => PortSearch::Ip(IpAddr::V4(v4)),
            None if is_link_local(v6) => PortSearch::LinkLocal(v6, mac_from_eui64(v6)),
            None => PortSearch::Ip(ip),
        },
    }
}

/// `fe80::/10`.
fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// The MAC address embedded in a modified EUI-64 interface identifier (RFC 4291 appendix A):
/// the low 64 bits are `MAC[0..3] ff fe MAC[3..6]` with the universal/local bit of the first
/// byte inverted. `None` if the identifier does not carry the `ff fe` marker (privacy or
/// manually configured addresses), since no MAC can be recovered from those.
///
/// Only [`port_search`] decides whether the MAC may be used (link-local clients only).
fn mac_from_eui64(ip: Ipv6Addr) -> Option<[u8; 6]> {
    let o = ip.octets();
    if o[11] != 0xff || o[12] != 0xfe {
        return None;
    }
    Some([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]])
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
    }

    #[test]
    fn only_link_local_clients_are_searched_by_mac() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let mac = Some([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]);
        let cases: &[(&str, PortSearch)] = &[
            ("10.0.0.5", PortSearch::Ip(ip("10.0.0.5"))),
            ("::ffff:10.0.0.5", PortSearch::Ip(ip("10.0.0.5"))),
            ("fd00::5", PortSearch::Ip(ip("fd00::5"))),
            // Global and unique-local addresses with an EUI-64 identifier: by IP only.
            (
                "2001:db8::f816:3eff:fe12:3456",
                PortSearch::Ip(ip("2001:db8::f816:3eff:fe12:3456")),
            ),
            (
                "fd00::f816:3eff:fe12:3456",
                PortSearch::Ip(ip("fd00::f816:3eff:fe12:3456")),
            ),
            // fec0::/10 (deprecated site-local) is outside fe80::/10.
            (
                "fec0::f816:3eff:fe12:3456",
                PortSearch::Ip(ip("fec0::f816:3eff:fe12:3456")),
            ),
            (
                "fe80::f816:3eff:fe12:3456",
                PortSearch::LinkLocal(v6("fe80::f816:3eff:fe12:3456"), mac),
            ),
            // The whole /10: fe80:: to febf::.
            (
                "febf::f816:3eff:fe12:3456",
                PortSearch::LinkLocal(v6("febf::f816:3eff:fe12:3456"), mac),
            ),
            ("fe80::1", PortSearch::LinkLocal(v6("fe80::1"), None)),
        ];
        for (addr, want) in cases {
            assert_eq!(port_search(ip(addr)), *want, "{addr}");
        }
    }
}
