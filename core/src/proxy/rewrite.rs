//! Header rules as data: which fields a hop deletes and which it sets (DESIGN.md, header contract).

use std::net::IpAddr;

/// Fields that claim an identity. A client may send any of them, in any case and any number of
/// copies; every hop that vouches for identity deletes them all before adding its own.
pub const IDENTITY_HEADERS: &[&str] = &[
    "X-Forwarded-For",
    "X-Neutron-Router-ID",
    "X-Neutron-Network-ID",
    "X-Instance-ID",
    "X-Instance-ID-Signature",
    "X-Tenant-ID",
    "X-Metadata-Provider",
    "X-Metadata-Provider-Signature",
];

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
