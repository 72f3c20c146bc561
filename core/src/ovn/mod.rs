//! The OVN Southbound replica the agent answers from, and its index.
//!
//! The anchor (`neutron-ovn-metadata-agent`) replicates every `Port_Binding` of the cloud and,
//! for each request, scans them all. Here the monitor replicates only what this chassis needs
//! ([`ChassisFilter`], conditions in [`Southbound::monitors`] and [`Southbound::apply`]) and
//! every update keeps an index current: (network, IP) → ports and (network, MAC) → ports,
//! where "network" is both the port's datapath UUID and the Neutron network UUID in its
//! `Datapath_Binding`'s `external_ids:name` (`neutron-<uuid>`). A lookup is one map lookup.
//!
//! Neutron's matching rules, kept: only bound ports (`chassis` set); the client's address
//! must be one of the IPs of `mac[0]` (`"MAC IP [IP…]"`); an IPv6 link-local client by the MAC
//! its address embeds ([`port_search`], the rule every backend shares); exactly one port is
//! the instance (`external_ids` `neutron:device_id`, `neutron:project_id`), none or several
//! is not found, several logged once.

mod row;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use log::warn;

use crate::lookup::{port_search, PortSearch};
use crate::ovsdb::{Atom, Condition, Datum, RowOp, TableMonitor, TableUpdates};
use crate::scope::{Instance, Uuid};
use row::{DatapathRow, PortRow};

/// Whose ports to replicate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChassisFilter {
    /// Ports bound to this chassis (by `Chassis.name`), or to be bound here by a live
    /// migration (`additional_chassis`).
    Named(Box<str>),
    /// Every bound port (an agent serving many nodes).
    Any,
}

/// The outcome of a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// Exactly one bound port.
    Found(Instance),
    /// No port, or one without a `neutron:device_id`.
    NotFound,
    /// Several ports (their logical ports): Neutron's DB and OVN's disagree.
    Ambiguous(Vec<Box<str>>),
}

/// The replica's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Port_Binding rows replicated.
    pub ports: usize,
    /// Datapath_Binding rows replicated.
    pub datapaths: usize,
    /// Chassis rows replicated.
    pub chassis: usize,
}

const PORT_BINDING: &str = "Port_Binding";
const DATAPATH_BINDING: &str = "Datapath_Binding";
const CHASSIS: &str = "Chassis";

/// The replica and its index.
#[derive(Debug)]
pub struct Southbound {
    filter: ChassisFilter,
    /// Chassis rows: UUID → name.
    chassis: HashMap<Uuid, Box<str>>,
    ports: HashMap<Uuid, PortRow>,
    datapaths: HashMap<Uuid, DatapathRow>,
    /// Ports by datapath, to re-index them when the datapath's name arrives or changes.
    on_datapath: HashMap<Uuid, HashSet<Uuid>>,
    by_ip: HashMap<(Uuid, IpAddr), Vec<Uuid>>,
    by_mac: HashMap<(Uuid, [u8; 6]), Vec<Uuid>>,
    /// The conditions last asked for, per table.
    asked: HashMap<&'static str, Vec<Condition>>,
    /// Ambiguities already logged, until the index changes.
    logged: HashSet<(Uuid, IpAddr)>,
}

impl Southbound {
    /// An empty replica for `filter`.
    pub fn new(filter: ChassisFilter) -> Southbound {
        let mut sb = Southbound {
            filter,
            chassis: HashMap::new(),
            ports: HashMap::new(),
            datapaths: HashMap::new(),
            on_datapath: HashMap::new(),
            by_ip: HashMap::new(),
            by_mac: HashMap::new(),
            asked: HashMap::new(),
            logged: HashSet::new(),
        };
        sb.asked = sb.wanted();
        sb
    }

    /// The monitor requests: tables, the columns the lookup needs, initial conditions.
    pub fn monitors(&self) -> Vec<TableMonitor> {
        let columns = |c: &[&str]| c.iter().map(|&c| c.into()).collect();
        let conditions = |table| self.asked.get(table).cloned();
        let mut monitors = vec![
            TableMonitor {
                table: PORT_BINDING.into(),
                columns: columns(row::PORT_COLUMNS),
                conditions: conditions(PORT_BINDING),
            },
            TableMonitor {
                table: DATAPATH_BINDING.into(),
                columns: columns(row::DATAPATH_COLUMNS),
                conditions: conditions(DATAPATH_BINDING),
            },
        ];
        if let ChassisFilter::Named(_) = self.filter {
            monitors.push(TableMonitor {
                table: CHASSIS.into(),
                columns: columns(&["name"]),
                conditions: conditions(CHASSIS),
            });
        }
        monitors
    }

    /// A full snapshot follows: forget everything (the conditions asked stay).
    pub fn reset(&mut self) {
        self.chassis.clear();
        self.ports.clear();
        self.datapaths.clear();
        self.on_datapath.clear();
        self.by_ip.clear();
        self.by_mac.clear();
        self.logged.clear();
    }

    /// Applies one message's updates; returns the tables whose conditions must change, with
    /// their new full list.
    pub fn apply(&mut self, updates: &TableUpdates) -> Vec<(Box<str>, Vec<Condition>)> {
        // Chassis first (it decides the ports' condition), then datapaths (their names key
        // the ports), then ports.
        for table in [CHASSIS, DATAPATH_BINDING, PORT_BINDING] {
            for update in updates.iter().filter(|u| &*u.table == table) {
                for row in &update.rows {
                    match table {
                        CHASSIS => self.chassis_row(row.uuid, &row.op),
                        DATAPATH_BINDING => self.datapath_row(row.uuid, &row.op),
                        _ => self.port_row(row.uuid, &row.op),
                    }
                }
            }
        }
        let wanted = self.wanted();
        let mut changes = Vec::new();
        for (table, conditions) in wanted {
            if self.asked.get(table) != Some(&conditions) {
                changes.push((table.into(), conditions.clone()));
                self.asked.insert(table, conditions);
            }
        }
        changes
    }

    /// The conditions each table should have now.
    fn wanted(&self) -> HashMap<&'static str, Vec<Condition>> {
        let uuid = |u: Uuid| Datum::Set(vec![Atom::Uuid(u)]);
        let mut wanted = HashMap::new();
        match &self.filter {
            ChassisFilter::Any => {
                let bound = Condition::clause("chassis", "!=", Datum::Set(Vec::new()));
                wanted.insert(PORT_BINDING, vec![bound]);
                wanted.insert(DATAPATH_BINDING, vec![Condition::True]);
            }
            ChassisFilter::Named(name) => {
                let name = Datum::Set(vec![Atom::String(name.clone())]);
                wanted.insert(CHASSIS, vec![Condition::clause("name", "==", name)]);
                let ours: BTreeSet<Uuid> = self.chassis.keys().copied().collect();
                let ports = ours
                    .iter()
                    .flat_map(|&u| {
                        [
                            Condition::clause("chassis", "==", uuid(u)),
                            Condition::clause("additional_chassis", "includes", uuid(u)),
                        ]
                    })
                    .collect();
                wanted.insert(PORT_BINDING, ports);
                let used: BTreeSet<Uuid> = self.on_datapath.keys().copied().collect();
                let datapaths = used
                    .into_iter()
                    .map(|dp| Condition::clause("_uuid", "==", uuid(dp)))
                    .collect();
                wanted.insert(DATAPATH_BINDING, datapaths);
            }
        }
        wanted
    }

    fn chassis_row(&mut self, uuid: Uuid, op: &RowOp) {
        match op {
            RowOp::Delete => {
                self.chassis.remove(&uuid);
            }
            RowOp::Initial(c) | RowOp::Insert(c) | RowOp::Modify(c) => {
                let name = c.iter().find(|(n, _)| &**n == "name");
                if let Some(name) = name.and_then(|(_, d)| d.scalar()).and_then(Atom::as_str) {
                    self.chassis.insert(uuid, name.into());
                }
            }
        }
    }

    fn datapath_row(&mut self, uuid: Uuid, op: &RowOp) {
        let ports: Vec<Uuid> = self
            .on_datapath
            .get(&uuid)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default();
        for port in &ports {
            self.unindex(*port);
        }
        match op {
            RowOp::Delete => {
                self.datapaths.remove(&uuid);
            }
            RowOp::Initial(c) | RowOp::Insert(c) => {
                self.datapaths.insert(uuid, DatapathRow::new(c));
            }
            RowOp::Modify(c) => self.datapaths.entry(uuid).or_default().modify(c),
        }
        for port in &ports {
            self.index(*port);
        }
    }

    fn port_row(&mut self, uuid: Uuid, op: &RowOp) {
        self.unindex(uuid);
        let old_dp = self.ports.get(&uuid).and_then(|p| p.datapath);
        match op {
            RowOp::Delete => {
                self.ports.remove(&uuid);
            }
            RowOp::Initial(c) | RowOp::Insert(c) => {
                self.ports.insert(uuid, PortRow::new(c));
            }
            RowOp::Modify(c) => self.ports.entry(uuid).or_default().modify(c),
        }
        let new_dp = self.ports.get(&uuid).and_then(|p| p.datapath);
        if old_dp != new_dp {
            if let Some(dp) = old_dp {
                if let Some(set) = self.on_datapath.get_mut(&dp) {
                    set.remove(&uuid);
                    if set.is_empty() {
                        self.on_datapath.remove(&dp);
                    }
                }
            }
            if let Some(dp) = new_dp {
                self.on_datapath.entry(dp).or_default().insert(uuid);
            }
        }
        self.index(uuid);
    }

    /// The networks port `p` is on: its datapath, and the Neutron network that datapath is.
    fn networks(&self, p: &PortRow) -> Vec<Uuid> {
        let Some(dp) = p.datapath else {
            return Vec::new();
        };
        let mut nets = vec![dp];
        if let Some(net) = self.datapaths.get(&dp).and_then(|d| d.network) {
            if net != dp {
                nets.push(net);
            }
        }
        nets
    }

    fn index(&mut self, uuid: Uuid) {
        self.keys(uuid, true);
    }

    fn unindex(&mut self, uuid: Uuid) {
        self.keys(uuid, false);
    }

    /// Adds (or removes) the index entries of port `uuid`: one per network it is on and IP
    /// of its `mac[0]`, and one for its MAC; none for an unbound port.
    fn keys(&mut self, uuid: Uuid, add: bool) {
        let Some(p) = self.ports.get(&uuid) else {
            return;
        };
        if !p.bound() {
            return;
        }
        let (ips, mac) = p.addresses();
        for net in self.networks(p) {
            for &ip in &ips {
                entry(&mut self.by_ip, (net, ip), uuid, add);
            }
            if let Some(mac) = mac {
                entry(&mut self.by_mac, (net, mac), uuid, add);
            }
        }
        self.logged.clear();
    }

    /// The instance behind `ip` on `network` (the UUID of `X-OVN-Network-ID`).
    pub fn lookup(&mut self, network: Uuid, ip: IpAddr) -> Match {
        let found: &[Uuid] = match port_search(ip) {
            PortSearch::Ip(ip) => self.by_ip.get(&(network, ip)).map_or(&[], Vec::as_slice),
            PortSearch::LinkLocal(v6, mac) => match self.by_ip.get(&(network, IpAddr::V6(v6))) {
                Some(ports) => ports,
                None => mac
                    .and_then(|m| self.by_mac.get(&(network, m)))
                    .map_or(&[], Vec::as_slice),
            },
        };
        match found {
            [] => Match::NotFound,
            [one] => match self.ports.get(one).and_then(PortRow::instance) {
                Some(instance) => Match::Found(instance),
                None => Match::NotFound,
            },
            several => {
                let names: Vec<Box<str>> = several
                    .iter()
                    .filter_map(|u| self.ports.get(u))
                    .map(|p| p.logical_port.clone())
                    .collect();
                if self.logged.insert((network, ip)) {
                    warn!(
                        "{} bound ports have {ip} on network {network} ({}): answering not \
                         found; Neutron's and OVN's databases disagree (run \
                         neutron-ovn-db-sync-util)",
                        names.len(),
                        names.join(", ")
                    );
                }
                Match::Ambiguous(names)
            }
        }
    }

    /// The index recomputed from the replicated rows (a naive scan) compared with the one kept
    /// incrementally: the fuzz target's main invariant.
    #[cfg(any(test, fuzzing, feature = "testing"))]
    pub fn check_index(&self) -> Result<(), String> {
        let mut by_ip: HashMap<(Uuid, IpAddr), Vec<Uuid>> = HashMap::new();
        let mut by_mac: HashMap<(Uuid, [u8; 6]), Vec<Uuid>> = HashMap::new();
        for (&uuid, p) in self.ports.iter().filter(|(_, p)| p.bound()) {
            let (ips, mac) = p.addresses();
            for net in self.networks(p) {
                for &ip in &ips {
                    by_ip.entry((net, ip)).or_default().push(uuid);
                }
                if let Some(mac) = mac {
                    by_mac.entry((net, mac)).or_default().push(uuid);
                }
            }
        }
        fn sorted<K: Clone + Ord>(m: &HashMap<K, Vec<Uuid>>) -> Vec<(K, Vec<Uuid>)> {
            let mut v: Vec<(K, Vec<Uuid>)> = m
                .iter()
                .map(|(k, ports)| {
                    let mut ports = ports.clone();
                    ports.sort_unstable();
                    (k.clone(), ports)
                })
                .collect();
            v.sort();
            v
        }
        if sorted(&by_ip) != sorted(&self.by_ip) {
            return Err(format!("by_ip {:?} != scan {:?}", self.by_ip, by_ip));
        }
        if sorted(&by_mac) != sorted(&self.by_mac) {
            return Err(format!("by_mac {:?} != scan {:?}", self.by_mac, by_mac));
        }
        let mut on_dp: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
        for (&uuid, p) in &self.ports {
            if let Some(dp) = p.datapath {
                on_dp.entry(dp).or_default().insert(uuid);
            }
        }
        if on_dp != self.on_datapath {
            return Err(format!(
                "on_datapath {:?} != scan {on_dp:?}",
                self.on_datapath
            ));
        }
        Ok(())
    }

    /// The replica's size.
    pub fn stats(&self) -> ReplicaStats {
        ReplicaStats {
            ports: self.ports.len(),
            datapaths: self.datapaths.len(),
            chassis: self.chassis.len(),
        }
    }
}

/// Adds `uuid` to the entry of `key`, or removes it (and the entry when it empties).
fn entry<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<Uuid>>, key: K, uuid: Uuid, add: bool) {
    if add {
        map.entry(key).or_default().push(uuid);
        return;
    }
    if let Some(ports) = map.get_mut(&key) {
        ports.retain(|&p| p != uuid);
        if ports.is_empty() {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests;
