//! Provisioning the `ovnmeta-<network>` namespaces of a chassis, as
//! `neutron-ovn-metadata-agent` does (`provision_datapath`, `teardown_datapath`, `sync`), as a
//! pure function: from what should exist ([`Network`]s: every network with at least one VIF
//! port bound here, see [`desired`]) and what does ([`Observed`]: the `ovnmeta-` namespaces,
//! their links and addresses, the root ends of the veth pairs, the local OVS ports), [`plan`]
//! returns the [`Action`]s that make the one the other. A runtime performs them in order, then
//! observes again; what is already right yields no action (a restart adopts what it finds),
//! and a namespace `ovnmeta-*` no network wants is torn down (the anchor's `sync()` at start).
//!
//! For each network `N` (its localport `L`, the port Neutron made for metadata):
//!
//! ```text
//! namespace ovnmeta-N
//! veth      tap<N[..10]>0 (root namespace, up)  ⇄  tap<N[..10]>1 (in ovnmeta-N, up)
//! ns end    MAC of L; L's neutron:cidrs; 169.254.169.254/32; fe80::a9fe:a9fe/128 with IPv6
//! OVS       Port + Interface tap<N[..10]>0 on the integration bridge, external_ids:iface-id=L
//! netdev    mangle POSTROUTING -p tcp -j CHECKSUM --checksum-fill in ovnmeta-N (the userspace
//!           datapath leaves TCP checksums of veth traffic unfilled); with IPv6 the same rule
//!           in ip6tables too, which the anchor lacks (verified on a real chassis: without
//!           it no TCP reaches [fe80::a9fe:a9fe]:80 over netdev)
//! ```

mod agent_id;
mod model;
mod plan;
#[cfg(test)]
mod tests;

pub use agent_id::{metadata_agent_id, uuid5};
pub use model::{
    desired, namespace_name, network_of_namespace, veth_names, Cidr, Link, Mac, Network, Observed,
    ObservedNamespace, PortRecord, METADATA_V4, METADATA_V6, NS_PREFIX,
};
pub use plan::{plan, Action};
