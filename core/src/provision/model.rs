//! The words of provisioning: what a network needs ([`Network`], derived from Southbound ports
//! by [`desired`]) and what the node found ([`Observed`]), with the names the anchor gives
//! them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::ovsdb::transact::OvsState;
use crate::scope::Uuid;

/// The prefix of every metadata namespace.
pub const NS_PREFIX: &str = "ovnmeta-";
/// The metadata address every namespace carries.
pub const METADATA_V4: Cidr = Cidr {
    addr: IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    prefix: 32,
};
/// The IPv6 metadata address, on networks with an IPv6 subnet.
pub const METADATA_V6: Cidr = Cidr {
    addr: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xa9fe, 0xa9fe)),
    prefix: 128,
};

/// `ovnmeta-<network>`.
pub fn namespace_name(network: Uuid) -> String {
    format!("{NS_PREFIX}{network}")
}

/// The network a namespace name stands for, if it is a metadata namespace.
pub fn network_of_namespace(name: &str) -> Option<Uuid> {
    Uuid::parse(name.strip_prefix(NS_PREFIX)?.as_bytes())
}

/// The veth pair of a network: `tap<first 10 of its uuid>0` (root end, plugged into OVS) and
/// `…1` (namespace end). Ten hex digits keep the names within IFNAMSIZ.
pub fn veth_names(network: Uuid) -> (String, String) {
    let id = network.to_string();
    let short = id.get(..10).unwrap_or(&id);
    (format!("tap{short}0"), format!("tap{short}1"))
}

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = ();

    /// `aa:bb:cc:dd:ee:ff` (or with `-`), any case: the anchor's `MAC_PATTERN`.
    fn from_str(s: &str) -> Result<Mac, ()> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let p = parts.next().ok_or(())?;
            if p.len() != 2 {
                return Err(());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| ())?;
        }
        match parts.next() {
            None => Ok(Mac(out)),
            Some(_) => Err(()),
        }
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// An address with its prefix length, as `neutron:cidrs` and `ip addr` write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length (≤ 32 or ≤ 128).
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = ();

    /// `IP/LEN`; the length must fit the family.
    fn from_str(s: &str) -> Result<Cidr, ()> {
        let (ip, len) = s.split_once('/').ok_or(())?;
        let addr: IpAddr = ip.parse().map_err(|_| ())?;
        let prefix: u8 = len.parse().map_err(|_| ())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// An IPv6 link-local address the kernel gives every interface by itself (`fe80::/10`),
    /// which provisioning neither adds nor removes — except the metadata one.
    pub fn is_kernel_link_local(&self) -> bool {
        match self.addr {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 && *self != METADATA_V6,
            IpAddr::V4(_) => false,
        }
    }
}

/// One network to serve metadata on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// The Neutron network id.
    pub id: Uuid,
    /// Its metadata localport's `logical_port`.
    pub localport: String,
    /// The localport's MAC.
    pub mac: Mac,
    /// The localport's `neutron:cidrs`.
    pub cidrs: Vec<Cidr>,
}

impl Network {
    /// Whether one of the network's subnets is IPv6.
    pub fn has_ipv6(&self) -> bool {
        self.cidrs.iter().any(|c| c.addr.is_ipv6())
    }

    /// Every address the namespace end carries, sorted: the localport's, `169.254.169.254/32`,
    /// and `fe80::a9fe:a9fe/128` with IPv6.
    pub fn addresses(&self) -> Vec<Cidr> {
        let mut a = self.cidrs.clone();
        a.push(METADATA_V4);
        if self.has_ipv6() {
            a.push(METADATA_V6);
        }
        a.sort();
        a.dedup();
        a
    }

    /// Where the node listens for this network's instances, inside its namespace:
    /// `169.254.169.254:80`, and with IPv6 `[fe80::a9fe:a9fe%<namespace end>]:80` (a
    /// link-local address names its link). The port is the one instances ask (no REDIRECT
    /// inside `ovnmeta-`, unlike the L3 path's 9697).
    pub fn listen(&self) -> Vec<String> {
        let mut l = vec![format!("{}:80", METADATA_V4.addr)];
        if self.has_ipv6() {
            let (_, inner) = veth_names(self.id);
            l.push(format!("[{}%{inner}]:80", METADATA_V6.addr));
        }
        l
    }
}

/// The facts of one Southbound `Port_Binding` that provisioning reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRecord {
    /// The Neutron network (from its datapath's `external_ids:name`, `neutron-<uuid>`).
    pub network: Uuid,
    /// `type`: `""` or `external` for a VIF, `localport` for the metadata port.
    pub kind: String,
    /// `chassis` (or `additional_chassis`) is this chassis.
    pub bound_here: bool,
    /// `logical_port`.
    pub logical_port: String,
    /// `mac[0]`: `"MAC IP…"`.
    pub mac: String,
    /// `external_ids:neutron:cidrs`, space-separated.
    pub cidrs: String,
}

/// The networks to provision, sorted by id: those with a VIF port bound here and a localport
/// with a MAC and at least one CIDR (the anchor tears down a network whose metadata port has
/// neither, so there is nothing to plan for it).
pub fn desired(ports: &[PortRecord]) -> Vec<Network> {
    let mut nets: Vec<Uuid> = ports
        .iter()
        .filter(|p| p.bound_here && matches!(p.kind.as_str(), "" | "external"))
        .map(|p| p.network)
        .collect();
    nets.sort();
    nets.dedup();
    nets.into_iter()
        .filter_map(|id| {
            let lp = ports
                .iter()
                .find(|p| p.network == id && p.kind == "localport")?;
            let mac = lp.mac.split(' ').next()?.parse().ok()?;
            let cidrs: Vec<Cidr> = lp.cidrs.split(' ').filter_map(|c| c.parse().ok()).collect();
            if cidrs.is_empty() {
                return None;
            }
            Some(Network {
                id,
                localport: lp.logical_port.clone(),
                mac,
                cidrs,
            })
        })
        .collect()
}

/// One network interface as the node found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Its name.
    pub name: String,
    /// Its index (what adoption keeps).
    pub ifindex: u32,
    /// Its MAC, if it has one.
    pub mac: Option<Mac>,
    /// Administratively up.
    pub up: bool,
    /// Its addresses.
    pub addrs: Vec<Cidr>,
}

/// One `ovnmeta-` namespace as the node found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedNamespace {
    /// `ovnmeta-<network>`.
    pub name: String,
    /// Its links.
    pub links: Vec<Link>,
    /// The checksum-fill rule is in its IPv4 mangle table.
    pub checksum_fill: bool,
    /// The checksum-fill rule is in its IPv6 mangle table.
    pub checksum_fill_v6: bool,
}

/// What exists on the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The `ovnmeta-` namespaces (others are not provisioning's business).
    pub namespaces: Vec<ObservedNamespace>,
    /// The root namespace's `tap…0` links (root ends of veth pairs).
    pub root_links: Vec<Link>,
    /// The local Open_vSwitch database.
    pub ovs: OvsState,
}

impl Observed {
    /// The namespace `name`, if it exists.
    pub fn namespace(&self, name: &str) -> Option<&ObservedNamespace> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    /// The root-namespace link `name`, if it exists.
    pub fn root_link(&self, name: &str) -> Option<&Link> {
        self.root_links.iter().find(|l| l.name == name)
    }
}

impl ObservedNamespace {
    /// Its link `name`, if it exists.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}
