//! From (desired, observed) to the actions between them. Pure and total: any observation,
//! however odd (a root end without its peer, a port on the wrong bridge, a stale address),
//! yields the actions that repair it, and a correct one yields none.
//!
//! Order matters to the kernel and to OVS, and is fixed here: first every teardown (so a
//! name a stale namespace holds is free), then per network, in id order: namespace, veth
//! (after removing a root end whose peer is gone), move, MAC, addresses (removals first),
//! links up, the OVS port, the checksum rule.

use crate::ovsdb::transact::OvsPort;
use crate::scope::Uuid;

use super::model::{
    namespace_name, network_of_namespace, veth_names, Cidr, Mac, Network, Observed, NS_PREFIX,
};

/// One step a runtime performs. Names are complete (`ovnmeta-…`, `tap…0`); `ns: None` is the
/// root namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `ip netns add NS`.
    CreateNamespace {
        /// The namespace.
        ns: String,
    },
    /// Deletes a link (a veth end: its peer goes too).
    DeleteLink {
        /// The namespace (`None`: the root one).
        ns: Option<String>,
        /// The link.
        link: String,
    },
    /// Creates a veth pair in the root namespace.
    CreateVeth {
        /// The end that stays (`tap…0`).
        outer: String,
        /// The end that moves into the namespace (`tap…1`).
        inner: String,
    },
    /// Moves a root-namespace link into `ns`.
    MoveLink {
        /// The link.
        link: String,
        /// Where to.
        ns: String,
    },
    /// Sets a link's MAC.
    SetMac {
        /// The namespace.
        ns: String,
        /// The link.
        link: String,
        /// The address.
        mac: Mac,
    },
    /// Removes an address.
    DelAddress {
        /// The namespace.
        ns: String,
        /// The link.
        link: String,
        /// The address.
        cidr: Cidr,
    },
    /// Adds an address (IPv6 without duplicate address detection, so a listener can bind it
    /// at once).
    AddAddress {
        /// The namespace.
        ns: String,
        /// The link.
        link: String,
        /// The address.
        cidr: Cidr,
    },
    /// Sets a link up.
    LinkUp {
        /// The namespace (`None`: the root one).
        ns: Option<String>,
        /// The link.
        link: String,
    },
    /// Unplugs the OVS Port row `port` (transact::delete_port).
    OvsDelPort {
        /// Its name, for logs.
        name: String,
        /// The Port row.
        port: Uuid,
    },
    /// Plugs a port (transact::add_port).
    OvsAddPort {
        /// The integration bridge.
        bridge: String,
        /// The port and interface name (`tap…0`).
        name: String,
        /// `external_ids:iface-id`: the localport.
        iface_id: String,
    },
    /// Retags an interface (transact::set_iface_id).
    OvsSetIfaceId {
        /// Its name, for logs.
        name: String,
        /// The Interface row.
        iface: Uuid,
        /// The localport.
        iface_id: String,
    },
    /// Adds `-p tcp -m tcp -j CHECKSUM --checksum-fill` to mangle POSTROUTING in `ns`.
    ChecksumFill {
        /// The namespace.
        ns: String,
        /// In ip6tables (else iptables).
        ipv6: bool,
    },
    /// Deletes a namespace (its links go with it).
    DeleteNamespace {
        /// The namespace.
        ns: String,
    },
}

/// The actions that turn `observed` into what `desired` needs (see the module doc).
/// `desired` is taken as a set: order and duplicates do not matter.
pub fn plan(desired: &[Network], observed: &Observed) -> Vec<Action> {
    let mut nets: Vec<&Network> = desired.iter().collect();
    nets.sort_by_key(|n| n.id);
    nets.dedup_by_key(|n| n.id);
    let mut out = Vec::new();
    for ns in &observed.namespaces {
        let wanted =
            network_of_namespace(&ns.name).is_some_and(|id| nets.iter().any(|n| n.id == id));
        if ns.name.starts_with(NS_PREFIX) && !wanted {
            teardown(&ns.name, observed, &mut out);
        }
    }
    for n in nets {
        provision(n, observed, &mut out);
    }
    out
}

/// The anchor's `teardown_datapath`: the OVS port, the root end, the namespace.
fn teardown(ns: &str, observed: &Observed, out: &mut Vec<Action>) {
    if let Some(outer) = network_of_namespace(ns).map(|id| veth_names(id).0) {
        if let Some(p) = ovs_port(observed, &outer) {
            out.push(Action::OvsDelPort {
                name: outer.clone(),
                port: p.uuid,
            });
        }
        if observed.root_link(&outer).is_some() {
            out.push(Action::DeleteLink {
                ns: None,
                link: outer,
            });
        }
    }
    out.push(Action::DeleteNamespace { ns: ns.to_owned() });
}

fn ovs_port<'a>(observed: &'a Observed, name: &str) -> Option<&'a OvsPort> {
    observed.ovs.ports.iter().find(|p| p.name == name)
}

/// The anchor's `provision_datapath`, minus the proxy (the node's listener is not ours).
fn provision(n: &Network, observed: &Observed, out: &mut Vec<Action>) {
    let ns = namespace_name(n.id);
    let (outer, inner) = veth_names(n.id);
    let found = observed.namespace(&ns);
    if found.is_none() {
        out.push(Action::CreateNamespace { ns: ns.clone() });
    }
    let inner_link = found.and_then(|f| f.link(&inner));
    // A pair whose namespace end is missing is recreated whole.
    let fresh = inner_link.is_none() || observed.root_link(&outer).is_none();
    if fresh {
        // A namespace end still in the root namespace (a crash between creating the pair
        // and moving it) goes first, taking its peer with it; else a lone root end.
        if observed.root_link(&inner).is_some() {
            out.push(Action::DeleteLink {
                ns: None,
                link: inner.clone(),
            });
        } else if observed.root_link(&outer).is_some() {
            out.push(Action::DeleteLink {
                ns: None,
                link: outer.clone(),
            });
        }
        if inner_link.is_some() {
            // A namespace end whose peer is not where it belongs: replaced with the pair.
            out.push(Action::DeleteLink {
                ns: Some(ns.clone()),
                link: inner.clone(),
            });
        }
        out.push(Action::CreateVeth {
            outer: outer.clone(),
            inner: inner.clone(),
        });
        out.push(Action::MoveLink {
            link: inner.clone(),
            ns: ns.clone(),
        });
    }
    let (mac, addrs, inner_up, outer_up) = match (fresh, inner_link) {
        (false, Some(l)) => (
            l.mac,
            l.addrs.clone(),
            l.up,
            observed.root_link(&outer).is_some_and(|r| r.up),
        ),
        _ => (None, Vec::new(), false, false),
    };
    if mac != Some(n.mac) {
        out.push(Action::SetMac {
            ns: ns.clone(),
            link: inner.clone(),
            mac: n.mac,
        });
    }
    let want = n.addresses();
    for cidr in addrs
        .iter()
        .filter(|a| !a.is_kernel_link_local() && !want.contains(a))
    {
        out.push(Action::DelAddress {
            ns: ns.clone(),
            link: inner.clone(),
            cidr: *cidr,
        });
    }
    for cidr in want.iter().filter(|a| !addrs.contains(a)) {
        out.push(Action::AddAddress {
            ns: ns.clone(),
            link: inner.clone(),
            cidr: *cidr,
        });
    }
    if !outer_up {
        out.push(Action::LinkUp {
            ns: None,
            link: outer.clone(),
        });
    }
    if !inner_up {
        out.push(Action::LinkUp {
            ns: Some(ns.clone()),
            link: inner.clone(),
        });
    }
    let bridge = &observed.ovs.integration_bridge;
    match ovs_port(observed, &outer) {
        Some(p) if p.bridge.as_deref() == Some(bridge) && p.iface.is_some() => {
            if p.iface_id.as_deref() != Some(n.localport.as_str()) {
                if let Some(iface) = p.iface {
                    out.push(Action::OvsSetIfaceId {
                        name: outer.clone(),
                        iface,
                        iface_id: n.localport.clone(),
                    });
                }
            }
        }
        other => {
            // Absent, on another bridge (the anchor's ML2/OVS migration case), or without
            // its interface: plugged afresh.
            if let Some(p) = other {
                out.push(Action::OvsDelPort {
                    name: outer.clone(),
                    port: p.uuid,
                });
            }
            out.push(Action::OvsAddPort {
                bridge: bridge.clone(),
                name: outer.clone(),
                iface_id: n.localport.clone(),
            });
        }
    }
    let netdev = observed
        .ovs
        .integration()
        .is_some_and(|b| b.datapath_type == "netdev");
    if netdev && !found.is_some_and(|f| f.checksum_fill) {
        out.push(Action::ChecksumFill {
            ns: ns.clone(),
            ipv6: false,
        });
    }
    if netdev && n.has_ipv6() && !found.is_some_and(|f| f.checksum_fill_v6) {
        out.push(Action::ChecksumFill { ns, ipv6: true });
    }
}
