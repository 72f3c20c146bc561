//! The planner against a simulated node: a world of namespaces, links (veth pairs delete
//! together, as the kernel does) and OVS rows, where every action the planner emits must be
//! possible (creating what exists or deleting what does not is an error, as it is for `ip`
//! and ovsdb-server). Properties: from any observation, applying the plan reaches the desired
//! state, leaves other namespaces alone, and planning again yields nothing.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::ovsdb::transact::{OvsBridge, OvsPort, OvsState};
use crate::scope::Uuid;

const NETS: [u128; 4] = [
    0x1111_1111_1111_4111_8111_1111_1111_1111,
    0x2222_2222_2222_4222_8222_2222_2222_2222,
    0x3333_3333_3333_4333_8333_3333_3333_3333,
    0x4444_4444_4444_4444_8444_4444_4444_4444,
];

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn cidr_pool() -> Vec<Cidr> {
    [
        "10.0.0.2/24",
        "10.0.1.2/26",
        "fd00::2/64",
        "169.254.169.254/32",
        "fe80::a9fe:a9fe/128",
        "fe80::1/64",
        "192.168.9.9/24",
    ]
    .iter()
    .map(|s| cidr(s))
    .collect()
}

/// The simulated node.
#[derive(Clone, Debug)]
struct World {
    obs: Observed,
    /// veth peers, by ifindex.
    pairs: Vec<(u32, u32)>,
    next: u128,
}

impl World {
    fn fresh_index(&mut self) -> u32 {
        self.next += 1;
        self.next as u32 + 1000
    }

    fn peer_of(&self, ifindex: u32) -> Option<u32> {
        self.pairs.iter().find_map(|&(a, b)| match () {
            _ if a == ifindex => Some(b),
            _ if b == ifindex => Some(a),
            _ => None,
        })
    }

    /// Removes link `ifindex` wherever it is, and its peer.
    fn remove_index(&mut self, ifindex: u32) {
        let peer = self.peer_of(ifindex);
        self.pairs.retain(|&(a, b)| a != ifindex && b != ifindex);
        for idx in [Some(ifindex), peer].into_iter().flatten() {
            self.obs.root_links.retain(|l| l.ifindex != idx);
            for ns in &mut self.obs.namespaces {
                ns.links.retain(|l| l.ifindex != idx);
            }
        }
    }

    fn links_mut(&mut self, ns: Option<&str>) -> Result<&mut Vec<Link>, String> {
        match ns {
            None => Ok(&mut self.obs.root_links),
            Some(name) => self
                .obs
                .namespaces
                .iter_mut()
                .find(|n| n.name == name)
                .map(|n| &mut n.links)
                .ok_or(format!("no namespace {name}")),
        }
    }

    fn link_mut(&mut self, ns: Option<&str>, link: &str) -> Result<&mut Link, String> {
        self.links_mut(ns)?
            .iter_mut()
            .find(|l| l.name == link)
            .ok_or(format!("no link {link} in {ns:?}"))
    }

    fn apply(&mut self, a: &Action) -> Result<(), String> {
        match a {
            Action::CreateNamespace { ns } => {
                if self.obs.namespace(ns).is_some() {
                    return Err(format!("{ns} exists"));
                }
                self.obs.namespaces.push(ObservedNamespace {
                    name: ns.clone(),
                    links: vec![],
                    checksum_fill: false,
                    checksum_fill_v6: false,
                });
            }
            Action::DeleteNamespace { ns } => {
                let found = self.obs.namespace(ns).ok_or(format!("no {ns}"))?.clone();
                for l in &found.links {
                    self.remove_index(l.ifindex);
                }
                self.obs.namespaces.retain(|n| &n.name != ns);
            }
            Action::DeleteLink { ns, link } => {
                let idx = self.link_mut(ns.as_deref(), link)?.ifindex;
                self.remove_index(idx);
            }
            Action::CreateVeth { outer, inner } => {
                if self.obs.root_link(outer).is_some() || self.obs.root_link(inner).is_some() {
                    return Err(format!("{outer} or {inner} exists"));
                }
                let (a, b) = (self.fresh_index(), self.fresh_index());
                for (name, idx) in [(outer, a), (inner, b)] {
                    self.obs.root_links.push(Link {
                        name: name.clone(),
                        ifindex: idx,
                        mac: Some(Mac([2, 0, 0, 0, 0, idx as u8])),
                        up: false,
                        addrs: vec![],
                    });
                }
                self.pairs.push((a, b));
            }
            Action::MoveLink { link, ns } => {
                let l = self.link_mut(None, link)?.clone();
                let target = self.links_mut(Some(ns))?;
                if target.iter().any(|t| t.name == *link) {
                    return Err(format!("{link} exists in {ns}"));
                }
                target.push(l);
                self.obs.root_links.retain(|r| r.name != *link);
            }
            Action::SetMac { ns, link, mac } => self.link_mut(Some(ns), link)?.mac = Some(*mac),
            Action::AddAddress { ns, link, cidr } => {
                let l = self.link_mut(Some(ns), link)?;
                if l.addrs.contains(cidr) {
                    return Err(format!("{cidr} already on {link}"));
                }
                l.addrs.push(*cidr);
            }
            Action::DelAddress { ns, link, cidr } => {
                let l = self.link_mut(Some(ns), link)?;
                if !l.addrs.contains(cidr) {
                    return Err(format!("{cidr} not on {link}"));
                }
                l.addrs.retain(|c| c != cidr);
            }
            Action::LinkUp { ns, link } => self.link_mut(ns.as_deref(), link)?.up = true,
            Action::OvsDelPort { port, .. } => {
                if !self.obs.ovs.ports.iter().any(|p| p.uuid == *port) {
                    return Err(format!("no port {port}"));
                }
                self.obs.ovs.ports.retain(|p| p.uuid != *port);
            }
            Action::OvsAddPort {
                bridge,
                name,
                iface_id,
            } => {
                if self.obs.ovs.ports.iter().any(|p| p.name == *name) {
                    return Err(format!("port {name} exists (unique index)"));
                }
                if !self.obs.ovs.bridges.iter().any(|b| b.name == *bridge) {
                    return Err(format!("no bridge {bridge}"));
                }
                self.next += 2;
                self.obs.ovs.ports.push(OvsPort {
                    uuid: Uuid(self.next),
                    name: name.clone(),
                    bridge: Some(bridge.clone()),
                    iface: Some(Uuid(self.next + 1)),
                    iface_id: Some(iface_id.clone()),
                });
            }
            Action::OvsSetIfaceId {
                iface, iface_id, ..
            } => {
                let p = self
                    .obs
                    .ovs
                    .ports
                    .iter_mut()
                    .find(|p| p.iface == Some(*iface))
                    .ok_or("no such interface")?;
                p.iface_id = Some(iface_id.clone());
            }
            Action::ChecksumFill { ns, ipv6 } => {
                let n = self
                    .obs
                    .namespaces
                    .iter_mut()
                    .find(|n| &n.name == ns)
                    .ok_or(format!("no {ns}"))?;
                let rule = if *ipv6 {
                    &mut n.checksum_fill_v6
                } else {
                    &mut n.checksum_fill
                };
                if *rule {
                    return Err(format!("duplicate checksum rule in {ns} (ipv6: {ipv6})"));
                }
                *rule = true;
            }
        }
        Ok(())
    }
}

/// Whether `w` is what `desired` asks for.
fn satisfies(desired: &[Network], w: &World) -> Result<(), String> {
    let o = &w.obs;
    for ns in &o.namespaces {
        let wanted = desired.iter().any(|n| namespace_name(n.id) == ns.name);
        if ns.name.starts_with(NS_PREFIX) && !wanted {
            return Err(format!("stale {} left", ns.name));
        }
    }
    let netdev = o
        .ovs
        .integration()
        .is_some_and(|b| b.datapath_type == "netdev");
    for n in desired {
        let name = namespace_name(n.id);
        let (outer, inner) = veth_names(n.id);
        let ns = o.namespace(&name).ok_or(format!("no {name}"))?;
        let i = ns.link(&inner).ok_or(format!("no {inner}"))?;
        let r = o.root_link(&outer).ok_or(format!("no {outer}"))?;
        if w.peer_of(i.ifindex) != Some(r.ifindex) {
            return Err(format!("{inner} and {outer} are not a pair"));
        }
        if !(i.up && r.up) || i.mac != Some(n.mac) {
            return Err(format!("{inner}/{outer}: up or MAC wrong"));
        }
        let mut got: Vec<Cidr> = i
            .addrs
            .iter()
            .filter(|a| !a.is_kernel_link_local())
            .copied()
            .collect();
        got.sort();
        if got != n.addresses() {
            return Err(format!("{inner}: addresses {got:?}"));
        }
        let p = o
            .ovs
            .ports
            .iter()
            .find(|p| p.name == outer)
            .ok_or(format!("no OVS port {outer}"))?;
        if p.bridge.as_deref() != Some(&o.ovs.integration_bridge)
            || p.iface_id.as_deref() != Some(&n.localport)
        {
            return Err(format!("OVS port {outer}: {p:?}"));
        }
        if netdev && !(ns.checksum_fill && (ns.checksum_fill_v6 || !n.has_ipv6())) {
            return Err(format!("{name}: a checksum rule is missing"));
        }
    }
    Ok(())
}

fn network(i: usize, mac: u8, cidrs: Vec<Cidr>) -> Network {
    Network {
        id: Uuid(NETS[i]),
        localport: format!("lp-{i}-{mac}"),
        mac: Mac([0xfa, 0x16, 0x3e, 0, 0, mac]),
        cidrs,
    }
}

fn arb_cidrs() -> impl Strategy<Value = Vec<Cidr>> {
    let pool = cidr_pool();
    proptest::sample::subsequence(pool[..3].to_vec(), 1..=3)
}

fn arb_desired() -> impl Strategy<Value = Vec<Network>> {
    proptest::collection::vec((0..NETS.len(), 0u8..3, arb_cidrs()), 0..4)
        .prop_map(|v| v.into_iter().map(|(i, m, c)| network(i, m, c)).collect())
}

/// One namespace's worth of mess: (net index or stale, has inner, inner up, mac, addrs,
/// checksum, has outer, outer up).
type NsMess = (usize, bool, bool, u8, Vec<Cidr>, bool, bool, bool);

fn arb_world() -> impl Strategy<Value = World> {
    let pool = cidr_pool();
    let ns = (
        0..NETS.len() + 1,
        any::<bool>(),
        any::<bool>(),
        0u8..3,
        proptest::sample::subsequence(pool, 0..=4),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    let port = (0..NETS.len(), 0u8..3, 0u8..3, any::<bool>());
    (
        proptest::collection::vec(ns, 0..5),
        proptest::collection::vec(port, 0..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(nss, ports, netdev, lone_outer)| build_world(nss, ports, netdev, lone_outer))
}

fn build_world(
    nss: Vec<NsMess>,
    ports: Vec<(usize, u8, u8, bool)>,
    netdev: bool,
    lone_outer: bool,
) -> World {
    let mut w = World {
        obs: Observed {
            ovs: OvsState {
                integration_bridge: "br-int".into(),
                system_id: None,
                bridges: vec![
                    OvsBridge {
                        name: "br-int".into(),
                        datapath_type: if netdev {
                            "netdev".into()
                        } else {
                            String::new()
                        },
                    },
                    OvsBridge {
                        name: "br-ex".into(),
                        datapath_type: String::new(),
                    },
                ],
                ports: vec![],
            },
            ..Observed::default()
        },
        pairs: vec![],
        next: 0,
    };
    // Not ours: must survive every plan.
    w.obs.namespaces.push(ObservedNamespace {
        name: "qrouter-x".into(),
        links: vec![],
        checksum_fill: false,
        checksum_fill_v6: false,
    });
    for (i, has_inner, inner_up, mac, addrs, checksum, has_outer, outer_up) in nss {
        let id = NETS.get(i).map_or(Uuid(0x5555_0000), |v| Uuid(*v));
        let name = namespace_name(id);
        if w.obs.namespace(&name).is_some() {
            continue;
        }
        let (outer, inner) = veth_names(id);
        let mut links = vec![];
        let inner_idx = w.fresh_index();
        if has_inner {
            links.push(Link {
                name: inner,
                ifindex: inner_idx,
                mac: Some(Mac([0xfa, 0x16, 0x3e, 0, 0, mac])),
                up: inner_up,
                addrs,
            });
        }
        w.obs.namespaces.push(ObservedNamespace {
            name,
            links,
            checksum_fill: checksum,
            // Either rule may be there without the other.
            checksum_fill_v6: checksum == (mac % 2 == 0),
        });
        if has_outer && w.obs.root_link(&outer).is_none() {
            let idx = w.fresh_index();
            w.obs.root_links.push(Link {
                name: outer,
                ifindex: idx,
                mac: None,
                up: outer_up,
                addrs: vec![],
            });
            if has_inner {
                w.pairs.push((inner_idx, idx));
            }
        }
    }
    if lone_outer {
        // A root end left over from a crash, its peer gone; and, for another network, a pair
        // created but not moved yet. (Ends that both exist are taken to be one pair:
        // observing peers is the runtime's.)
        for (net, pair) in [(NETS[0], false), (NETS[2], true)] {
            let (outer, inner) = veth_names(Uuid(net));
            let inner_exists = w.obs.namespaces.iter().any(|n| n.link(&inner).is_some());
            if w.obs.root_link(&outer).is_some() || inner_exists {
                continue;
            }
            let names = if pair {
                vec![outer, inner]
            } else {
                vec![outer]
            };
            let mut indexes = vec![];
            for name in names {
                let idx = w.fresh_index();
                indexes.push(idx);
                w.obs.root_links.push(Link {
                    name,
                    ifindex: idx,
                    mac: None,
                    up: false,
                    addrs: vec![],
                });
            }
            if let [a, b] = indexes[..] {
                w.pairs.push((a, b));
            }
        }
    }
    for (i, bridge, id, has_iface) in ports {
        let (outer, _) = veth_names(Uuid(NETS[i]));
        if w.obs.ovs.ports.iter().any(|p| p.name == outer) {
            continue;
        }
        w.next += 2;
        w.obs.ovs.ports.push(OvsPort {
            uuid: Uuid(w.next),
            name: outer,
            bridge: [Some("br-int".to_owned()), Some("br-ex".to_owned()), None]
                [usize::from(bridge)]
            .clone(),
            iface: has_iface.then_some(Uuid(w.next + 1)),
            iface_id: Some(format!("lp-{i}-{id}")),
        });
    }
    w
}

proptest! {
    #[test]
    fn plan_reaches_desired_and_then_rests(desired in arb_desired(), mut w in arb_world()) {
        let actions = plan(&desired, &w.obs);
        for a in &actions {
            if let Err(e) = w.apply(a) {
                prop_assert!(false, "{a:?} impossible: {e}\nplan: {actions:#?}");
            }
        }
        let mut unique = desired.clone();
        unique.sort_by_key(|n| n.id);
        unique.dedup_by_key(|n| n.id);
        if let Err(e) = satisfies(&unique, &w) {
            prop_assert!(false, "{e}\nplan: {actions:#?}\nworld: {w:#?}");
        }
        prop_assert!(w.obs.namespace("qrouter-x").is_some());
        let again = plan(&desired, &w.obs);
        prop_assert!(again.is_empty(), "second plan: {again:?}");
    }
}

#[test]
fn first_provision_in_order() {
    let n = network(0, 1, vec![cidr("10.0.0.2/24"), cidr("fd00::2/64")]);
    let w = build_world(vec![], vec![], true, false);
    let ns = namespace_name(n.id);
    let (outer, inner) = veth_names(n.id);
    assert_eq!(outer, "tap11111111-10");
    assert_eq!(ns, "ovnmeta-11111111-1111-4111-8111-111111111111");
    let a = |ns_: &str, c: &str| Action::AddAddress {
        ns: ns_.into(),
        link: inner.clone(),
        cidr: cidr(c),
    };
    assert_eq!(
        plan(std::slice::from_ref(&n), &w.obs),
        vec![
            Action::CreateNamespace { ns: ns.clone() },
            Action::CreateVeth {
                outer: outer.clone(),
                inner: inner.clone()
            },
            Action::MoveLink {
                link: inner.clone(),
                ns: ns.clone()
            },
            Action::SetMac {
                ns: ns.clone(),
                link: inner.clone(),
                mac: n.mac
            },
            a(&ns, "10.0.0.2/24"),
            a(&ns, "169.254.169.254/32"),
            a(&ns, "fd00::2/64"),
            a(&ns, "fe80::a9fe:a9fe/128"),
            Action::LinkUp {
                ns: None,
                link: outer.clone()
            },
            Action::LinkUp {
                ns: Some(ns.clone()),
                link: inner.clone()
            },
            Action::OvsAddPort {
                bridge: "br-int".into(),
                name: outer.clone(),
                iface_id: n.localport.clone()
            },
            Action::ChecksumFill {
                ns: ns.clone(),
                ipv6: false,
            },
            Action::ChecksumFill {
                ns: ns.clone(),
                ipv6: true,
            },
        ]
    );
}

#[test]
fn stale_namespace_torn_down_with_its_port() {
    let w = build_world(
        vec![(1, true, true, 0, vec![], true, true, true)],
        vec![(1, 0, 0, true)],
        false,
        false,
    );
    let (outer, _) = veth_names(Uuid(NETS[1]));
    let port = w.obs.ovs.ports[0].uuid;
    assert_eq!(
        plan(&[], &w.obs),
        vec![
            Action::OvsDelPort {
                name: outer.clone(),
                port
            },
            Action::DeleteLink {
                ns: None,
                link: outer
            },
            Action::DeleteNamespace {
                ns: namespace_name(Uuid(NETS[1]))
            },
        ]
    );
}

#[test]
fn desired_from_ports() {
    let net = Uuid(NETS[0]);
    let other = Uuid(NETS[1]);
    let port = |network, kind: &str, here, mac: &str, cidrs: &str| PortRecord {
        network,
        kind: kind.into(),
        bound_here: here,
        logical_port: format!("p-{kind}-{here}"),
        mac: mac.into(),
        cidrs: cidrs.into(),
    };
    let ports = [
        port(net, "", true, "fa:16:3e:00:00:01 10.0.0.5", "10.0.0.5/24"),
        port(
            net,
            "localport",
            false,
            "fa:16:3e:00:00:02 10.0.0.2",
            "10.0.0.2/24 fd00::2/64",
        ),
        // Bound elsewhere: no namespace for `other`.
        port(
            other,
            "",
            false,
            "fa:16:3e:00:00:03 10.1.0.5",
            "10.1.0.5/24",
        ),
        port(
            other,
            "localport",
            false,
            "fa:16:3e:00:00:04 10.1.0.2",
            "10.1.0.2/24",
        ),
    ];
    let d = desired(&ports);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].id, net);
    assert_eq!(d[0].localport, "p-localport-false");
    assert_eq!(d[0].mac.to_string(), "fa:16:3e:00:00:02");
    assert!(d[0].has_ipv6());
    // A localport without addresses (no subnet yet) or without a MAC: nothing to provision.
    let mut bare = ports.clone();
    bare[1].cidrs = String::new();
    assert!(desired(&bare).is_empty());
    bare[1].cidrs = "10.0.0.2/24".into();
    bare[1].mac = "unknown".into();
    assert!(desired(&bare).is_empty());
    let router_port = [port(net, "patch", true, "", ""), ports[1].clone()];
    assert!(desired(&router_port).is_empty());
}

#[test]
fn words() {
    assert_eq!(
        "FA-16-3E-0a-0B-0c".parse::<Mac>().map(|m| m.to_string()),
        Ok("fa:16:3e:0a:0b:0c".into())
    );
    for bad in [
        "",
        "fa:16:3e:0a:0b",
        "fa:16:3e:0a:0b:0c:0d",
        "fa:16:3e:0a:0b:zz",
        "fa:16:3e:0a:0b:0",
    ] {
        assert!(bad.parse::<Mac>().is_err(), "{bad}");
    }
    assert_eq!(
        cidr("fd00::2/64").addr,
        "fd00::2".parse::<IpAddr>().unwrap()
    );
    for bad in ["10.0.0.1", "10.0.0.1/33", "::1/129", "x/1", "10.0.0.1/-1"] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
    assert!(cidr("fe80::1/64").is_kernel_link_local());
    assert!(!METADATA_V6.is_kernel_link_local());
    assert_eq!(
        network_of_namespace("ovnmeta-11111111-1111-4111-8111-111111111111"),
        Some(Uuid(NETS[0]))
    );
    assert_eq!(
        network_of_namespace("qrouter-11111111-1111-4111-8111-111111111111"),
        None
    );
}

#[test]
fn listen_addresses_follow_the_subnets() {
    let v4 = network(0, 1, vec![cidr("10.0.0.2/24")]);
    assert_eq!(v4.listen(), ["169.254.169.254:80"]);
    let dual = network(0, 1, vec![cidr("10.0.0.2/24"), cidr("fd00::2/64")]);
    // The link-local address names the namespace end of the network's veth.
    assert_eq!(
        dual.listen(),
        ["169.254.169.254:80", "[fe80::a9fe:a9fe%tap11111111-11]:80"]
    );
}
