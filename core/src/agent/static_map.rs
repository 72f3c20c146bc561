//! The `static` lookup backend: Neutron's port model written down in a TOML file, for clouds
//! (and appliances) that want no Neutron API round trip.
//!
//! ```toml
//! [[router]]
//! id = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6"
//! networks = ["9c2b1a4e-0000-4000-8000-000000000001"]
//!
//! [[port]]
//! network = "9c2b1a4e-0000-4000-8000-000000000001"
//! ip = "10.0.0.5"                       # or: ips = ["10.0.0.5", "fd00::5"]
//! mac = "fa:16:3e:00:00:05"             # optional; for IPv6 link-local (fe80::/10) clients
//! device_id = "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01"
//! project_id = "8f14e45fceea167a5a36dedd4bea2543"
//!
//! # optional, per scope: IMDSv2 tokens off, optional or required there (the agent's
//! # --imdsv2 elsewhere); `imdsv2 = "..."` on a [[router]] does the same for a router scope
//! [[network]]
//! id = "9c2b1a4e-0000-4000-8000-000000000001"
//! imdsv2 = "required"
//! ```
//!
//! Resolution follows Neutron's agent: a router scope means "the networks of its interfaces",
//! and exactly one port with that fixed IP (or MAC) on those networks is the instance; zero or
//! several matches are "not found".

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Map;

use super::imds::parse_mode;
use crate::explain::{Lookup, Outcome};
use crate::lookup::{port_search, PortSearch};
use crate::metadata::ImdsV2;
use crate::scope::{Instance, LookupKey, Scope, Uuid};

/// A parse error with the 1-based line it was found on (0 when unknown).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapError {
    /// Line of the first error, 1-based; 0 if the error is not tied to a line.
    pub line: usize,
    /// What is wrong.
    pub problem: MapProblem,
}

/// What is wrong with a static map; the text names the entry, for the operator to find it.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapProblem {
    /// Not TOML, or not the map's shape (the TOML parser's message).
    Syntax(String),
    /// An id that must be a UUID is not one (`what` says which id).
    NotUuid {
        /// `router id`, `network` or `port network`.
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// The router id is listed twice (which list of networks is meant?).
    DuplicateRouter(String),
    /// The MAC address given is not `aa:bb:cc:dd:ee:ff`.
    BadMac(String),
    /// An `imdsv2` that is not `off`, `optional` or `required`.
    BadImdsV2(String),
    /// The port (of this device id) gives nothing to match a client by.
    NoAddress(String),
}

impl fmt::Display for MapProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapProblem::Syntax(message) => f.write_str(message),
            MapProblem::NotUuid { what, value } => write!(f, "{what} {value:?} is not a UUID"),
            MapProblem::DuplicateRouter(id) => write!(f, "router {id} is listed twice"),
            MapProblem::BadMac(mac) => write!(f, "mac {mac:?} is not aa:bb:cc:dd:ee:ff"),
            MapProblem::BadImdsV2(v) => {
                write!(f, "imdsv2 {v:?} is not off, optional or required")
            }
            MapProblem::NoAddress(device) => {
                write!(f, "port of {device} has neither ip, ips nor mac")
            }
        }
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}", self.line, self.problem)
        } else {
            self.problem.fmt(f)
        }
    }
}

impl std::error::Error for MapError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    router: Vec<RouterEntry>,
    #[serde(default)]
    port: Vec<PortEntry>,
    #[serde(default)]
    network: Vec<NetworkEntry>,
}

/// A network's own settings (so far only its IMDSv2 mode).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkEntry {
    id: String,
    imdsv2: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterEntry {
    id: String,
    #[serde(default)]
    networks: Vec<String>,
    imdsv2: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortEntry {
    network: String,
    ip: Option<IpAddr>,
    #[serde(default)]
    ips: Vec<IpAddr>,
    mac: Option<String>,
    device_id: String,
    project_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Port {
    network: Uuid,
    ips: Vec<IpAddr>,
    mac: Option<[u8; 6]>,
    instance: Instance,
}

/// A parsed static map, ready to answer lookups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticMap {
    routers: BTreeMap<Uuid, Vec<Uuid>>,
    ports: Vec<Port>,
    /// IMDSv2 modes of routers and networks that have their own.
    imdsv2: BTreeMap<Uuid, ImdsV2>,
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The line (1-based) a byte offset falls on.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn uuid(s: &str, what: &'static str) -> Result<Uuid, MapProblem> {
    Uuid::parse(s.as_bytes()).ok_or_else(|| MapProblem::NotUuid {
        what,
        value: s.to_owned(),
    })
}

impl StaticMap {
    /// Parses the TOML text of a static map. Errors name the line of the first problem.
    pub fn parse(text: &str) -> Result<StaticMap, MapError> {
        let file: File = toml::from_str(text).map_err(|e| MapError {
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            problem: MapProblem::Syntax(e.message().to_owned()),
        })?;
        // Semantic errors carry the line of the entry's id, found by searching the text.
        let at = |needle: &str, problem: MapProblem| MapError {
            line: text.find(needle).map_or(0, |o| line_of(text, o)),
            problem,
        };
        let mut map = StaticMap::default();
        for r in file.router {
            let id = uuid(&r.id, "router id").map_err(|m| at(&r.id, m))?;
            let nets = r
                .networks
                .iter()
                .map(|n| uuid(n, "network").map_err(|m| at(n, m)))
                .collect::<Result<Vec<_>, _>>()?;
            if map.routers.insert(id, nets).is_some() {
                return Err(at(&r.id, MapProblem::DuplicateRouter(r.id.clone())));
            }
            if let Some(mode) = &r.imdsv2 {
                let mode = parse_mode(mode)
                    .ok_or_else(|| at(mode, MapProblem::BadImdsV2(mode.clone())))?;
                map.imdsv2.insert(id, mode);
            }
        }
        for n in file.network {
            let id = uuid(&n.id, "network").map_err(|m| at(&n.id, m))?;
            let mode = parse_mode(&n.imdsv2)
                .ok_or_else(|| at(&n.imdsv2, MapProblem::BadImdsV2(n.imdsv2.clone())))?;
            map.imdsv2.insert(id, mode);
        }
        for p in file.port {
            let network = uuid(&p.network, "port network").map_err(|m| at(&p.device_id, m))?;
            let mut ips = p.ips;
            ips.extend(p.ip);
            let mac = match &p.mac {
                Some(m) => Some(parse_mac(m).ok_or_else(|| at(m, MapProblem::BadMac(m.clone())))?),
                None => None,
            };
            if ips.is_empty() && mac.is_none() {
                return Err(at(&p.device_id, MapProblem::NoAddress(p.device_id.clone())));
            }
            map.ports.push(Port {
                network,
                ips,
                mac,
                instance: Instance {
                    instance_id: p.device_id,
                    project_id: p.project_id,
                },
            });
        }
        Ok(map)
    }

    /// The IMDSv2 mode the map gives `scope`, if it gives one.
    pub fn imdsv2(&self, scope: &Scope) -> Option<ImdsV2> {
        self.imdsv2.get(&scope.id()).copied()
    }

    /// Number of ports in the map.
    pub fn ports(&self) -> usize {
        self.ports.len()
    }

    /// The instance behind `key`, found by [`port_search`]: by fixed IP, and for an IPv6
    /// link-local client by its MAC when no port lists the address itself. None or several
    /// ports is "not found".
    pub fn resolve(&self, key: &LookupKey) -> Option<Instance> {
        let found = self.matching(key).ok()?;
        if found.len() > 1 {
            log::warn!(
                "static map: several ports match {} in {:?}; treating as not found",
                key.ip,
                key.scope
            );
            return None;
        }
        found.first().map(|p| p.instance.clone())
    }

    /// What the map says of `key`, for `/explain` ([`crate::explain`]).
    pub(crate) fn explain(&self, key: &LookupKey) -> Lookup {
        let networks = self.networks(&key.scope).map(<[Uuid]>::to_vec);
        let outcome = match self.matching(key) {
            Err(why) => Outcome::NoNetwork(why),
            Ok(found) => match found[..] {
                [] => Outcome::NotFound(format!(
                    "no port of the map has {} on the scope's networks",
                    key.ip
                )),
                [one] => Outcome::Found(one.instance.clone()),
                _ => Outcome::Ambiguous(
                    (found.iter())
                        .map(|p| {
                            format!("network {} instance {}", p.network, p.instance.instance_id)
                        })
                        .collect(),
                ),
            },
        };
        Lookup {
            backend: "static",
            networks,
            outcome,
            facts: Map::new(),
        }
    }

    /// The networks `scope` stands for (a network itself, a router's from the map).
    fn networks<'a>(&'a self, scope: &'a Scope) -> Option<&'a [Uuid]> {
        match scope {
            Scope::Network(n) | Scope::OvnNetwork(n) => Some(std::slice::from_ref(n)),
            Scope::Router(r) => self.routers.get(r).map(Vec::as_slice),
        }
    }

    /// The ports that match `key` (see [`StaticMap::resolve`]); the error says why the scope
    /// has no network to look in.
    fn matching(&self, key: &LookupKey) -> Result<Vec<&Port>, String> {
        let networks = match self.networks(&key.scope) {
            None => {
                return Err(format!(
                    "router {} is not in the static map",
                    key.scope.id()
                ))
            }
            Some([]) => {
                return Err(format!(
                    "router {} has no networks in the map",
                    key.scope.id()
                ))
            }
            Some(networks) => networks,
        };
        let on_scope = || self.ports.iter().filter(|p| networks.contains(&p.network));
        Ok(match port_search(key.ip) {
            PortSearch::Ip(ip) => on_scope().filter(|p| p.ips.contains(&ip)).collect(),
            PortSearch::LinkLocal(ip, mac) => {
                let ip = IpAddr::V6(ip);
                let by_ip: Vec<&Port> = on_scope().filter(|p| p.ips.contains(&ip)).collect();
                match (by_ip.is_empty(), mac) {
                    (false, _) | (true, None) => by_ip,
                    (true, Some(mac)) => on_scope().filter(|p| p.mac == Some(mac)).collect(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"
[[router]]
id = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6"
networks = ["9c2b1a4e-0000-4000-8000-000000000001", "9c2b1a4e-0000-4000-8000-000000000002"]

[[port]]
network = "9c2b1a4e-0000-4000-8000-000000000001"
ip = "10.0.0.5"
mac = "fa:16:3e:00:00:05"
device_id = "inst-a"
project_id = "proj-a"

[[port]]
network = "9c2b1a4e-0000-4000-8000-000000000002"
ips = ["10.0.1.7", "fd00::7"]
device_id = "inst-b"
project_id = "proj-b"

[[port]]
network = "9c2b1a4e-0000-4000-8000-000000000003"
ip = "10.0.0.5"
device_id = "inst-c"
project_id = "proj-c"
"#;

    fn key(scope: Scope, ip: &str) -> LookupKey {
        LookupKey {
            scope,
            ip: ip.parse().unwrap(),
        }
    }

    fn router() -> Scope {
        Scope::Router(Uuid::parse(b"5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6").unwrap())
    }

    fn net(n: u8) -> Scope {
        Scope::Network(
            Uuid::parse(format!("9c2b1a4e-0000-4000-8000-00000000000{n}").as_bytes()).unwrap(),
        )
    }

    #[test]
    fn router_scope_searches_its_interface_networks_only() {
        let m = StaticMap::parse(MAP).unwrap();
        assert_eq!(
            m.resolve(&key(router(), "10.0.0.5")).unwrap().instance_id,
            "inst-a"
        );
        assert_eq!(
            m.resolve(&key(router(), "fd00::7")).unwrap().project_id,
            "proj-b"
        );
        assert_eq!(m.resolve(&key(router(), "10.9.9.9")), None);
        // The same IP on a network the router does not have is someone else's.
        assert_eq!(
            m.resolve(&key(net(3), "10.0.0.5")).unwrap().instance_id,
            "inst-c"
        );
    }

    #[test]
    fn explain_tells_found_not_found_ambiguous_and_no_network_apart() {
        let m = StaticMap::parse(&format!(
            "{MAP}\n[[port]]\nnetwork = \"9c2b1a4e-0000-4000-8000-000000000003\"\n\
             ip = \"10.0.0.5\"\ndevice_id = \"inst-d\"\nproject_id = \"proj-d\"\n"
        ))
        .unwrap();
        let found = m.explain(&key(router(), "10.0.0.5"));
        assert_eq!(found.networks.map(|n| n.len()), Some(2));
        assert!(matches!(found.outcome, Outcome::Found(i) if i.instance_id == "inst-a"));
        let missing = m.explain(&key(router(), "10.9.9.9")).outcome;
        assert!(matches!(missing, Outcome::NotFound(why) if why.contains("10.9.9.9")));
        // Two ports of network 3 have 10.0.0.5: both named, and resolve agrees it is none.
        let two = m.explain(&key(net(3), "10.0.0.5")).outcome;
        assert!(
            matches!(&two, Outcome::Ambiguous(p) if p.len() == 2),
            "{two:?}"
        );
        assert_eq!(m.resolve(&key(net(3), "10.0.0.5")), None);
        let stranger = Scope::Router(Uuid(7));
        let none = m.explain(&key(stranger, "10.0.0.5"));
        assert!(none.networks.is_none());
        assert!(matches!(none.outcome, Outcome::NoNetwork(why) if why.contains("not in the")));
    }

    /// An OVN network is a Neutron network: the map's network entries answer it.
    #[test]
    fn ovn_network_scope_is_the_network() {
        let m = StaticMap::parse(MAP).unwrap();
        let ovn = Scope::OvnNetwork(net(3).id());
        assert_eq!(
            m.resolve(&key(ovn, "10.0.0.5")).unwrap().instance_id,
            "inst-c"
        );
        assert_eq!(
            m.resolve(&key(Scope::OvnNetwork(Uuid(7)), "10.0.0.5")),
            None
        );
    }

    #[test]
    fn unknown_router_is_not_found() {
        let m = StaticMap::parse(MAP).unwrap();
        let other = Scope::Router(Uuid(7));
        assert_eq!(m.resolve(&key(other, "10.0.0.5")), None);
    }

    #[test]
    fn mac_matching_for_link_local_clients() {
        let m = StaticMap::parse(MAP).unwrap();
        let found = m.resolve(&key(router(), "fe80::f816:3eff:fe00:5")).unwrap();
        assert_eq!(found.instance_id, "inst-a");
        // No EUI-64 identifier, no MAC: not found.
        assert_eq!(m.resolve(&key(router(), "fe80::5")), None);
    }

    /// Security issue 14, item 4: a global address is its own fixed IP, never the MAC inside
    /// it; and a port listing a link-local address itself wins over the MAC.
    #[test]
    fn only_link_local_clients_are_matched_by_mac() {
        let map = r#"
[[port]]
network = "9c2b1a4e-0000-4000-8000-000000000001"
ips = ["2001:db8::f816:3eff:fe00:5", "fe80::f816:3eff:fe00:5"]
device_id = "port-a"
project_id = "proj-a"

[[port]]
network = "9c2b1a4e-0000-4000-8000-000000000001"
ip = "10.0.0.6"
mac = "fa:16:3e:00:00:05"
device_id = "port-b"
project_id = "proj-b"

[[port]]
network = "9c2b1a4e-0000-4000-8000-000000000001"
ip = "10.0.0.7"
mac = "fa:16:3e:00:00:07"
device_id = "port-c"
project_id = "proj-c"
"#;
        let m = StaticMap::parse(map).unwrap();
        let who = |ip: &str| m.resolve(&key(net(1), ip)).map(|i| i.instance_id);
        assert_eq!(who("2001:db8::f816:3eff:fe00:5").as_deref(), Some("port-a"));
        assert_eq!(who("fe80::f816:3eff:fe00:5").as_deref(), Some("port-a"));
        // Port B's MAC inside an address no port has: only link-local clients use it.
        assert_eq!(who("2001:db8::f816:3eff:fe00:7"), None);
        assert_eq!(who("fd00::f816:3eff:fe00:7"), None);
        assert_eq!(who("fe80::f816:3eff:fe00:7").as_deref(), Some("port-c"));
    }

    #[test]
    fn two_matching_ports_are_not_found() {
        let dup = format!(
            "{MAP}\n[[port]]\nnetwork = \"9c2b1a4e-0000-4000-8000-000000000001\"\nip = \"10.0.0.5\"\ndevice_id = \"x\"\nproject_id = \"y\"\n"
        );
        let m = StaticMap::parse(&dup).unwrap();
        assert_eq!(m.resolve(&key(router(), "10.0.0.5")), None);
    }

    #[test]
    fn errors_name_the_line() {
        let typo = "[[router]]\nid = \"5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6\"\nnetwork = []\n";
        let e = StaticMap::parse(typo).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(
            matches!(&e.problem, MapProblem::Syntax(m) if m.contains("network")),
            "{e}"
        );
        let bad_ip = "[[port]]\nnetwork = \"9c2b1a4e-0000-4000-8000-000000000001\"\nip = \"10.0.0.300\"\ndevice_id = \"a\"\nproject_id = \"b\"\n";
        assert_eq!(StaticMap::parse(bad_ip).unwrap_err().line, 3);
        let bad_uuid = "[[router]]\nid = \"r1\"\n";
        let e = StaticMap::parse(bad_uuid).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert_eq!(e.to_string(), r#"line 2: router id "r1" is not a UUID"#);
        let no_addr = "[[port]]\nnetwork = \"9c2b1a4e-0000-4000-8000-000000000001\"\ndevice_id = \"dev\"\nproject_id = \"b\"\n";
        let e = StaticMap::parse(no_addr).unwrap_err();
        assert_eq!(e.problem, MapProblem::NoAddress("dev".to_owned()));
        assert_eq!(
            e.to_string(),
            "line 3: port of dev has neither ip, ips nor mac"
        );
    }

    #[test]
    fn imdsv2_per_router_and_network() {
        let text = format!(
            "{MAP}\n[[network]]\nid = \"9c2b1a4e-0000-4000-8000-000000000003\"\nimdsv2 = \"off\"\n"
        )
        .replacen("networks = [", "imdsv2 = \"required\"\nnetworks = [", 1);
        let m = StaticMap::parse(&text).unwrap();
        assert_eq!(m.imdsv2(&router()), Some(ImdsV2::Required));
        assert_eq!(m.imdsv2(&net(3)), Some(ImdsV2::Off));
        assert_eq!(m.imdsv2(&net(1)), None);
        let bad = "[[network]]\nid = \"9c2b1a4e-0000-4000-8000-000000000003\"\nimdsv2 = \"v2\"\n";
        let e = StaticMap::parse(bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"line 3: imdsv2 "v2" is not off, optional or required"#
        );
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("fa:16:3e:00:00:05"),
            Some([0xfa, 0x16, 0x3e, 0, 0, 5])
        );
        for bad in [
            "fa:16:3e:00:00",
            "fa:16:3e:00:00:05:06",
            "fa:16:3e:00:00:5",
            "zz:16:3e:00:00:05",
            "",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
