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

mod index;
mod row;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use index::{FastMap, FastSet, Index, Slot};

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
    /// Port_Binding rows by UUID: their slot in `rows`.
    slots: FastMap<Uuid, Slot>,
    /// The Port_Binding rows (`None`: a free slot, listed in `free`).
    rows: Vec<Option<(Uuid, PortRow)>>,
    free: Vec<Slot>,
    datapaths: HashMap<Uuid, DatapathRow>,
    /// Ports by datapath, to re-index them when the datapath's name arrives or changes.
    on_datapath: FastMap<Uuid, FastSet<Slot>>,
    index: Index,
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
            slots: FastMap::default(),
            rows: Vec::new(),
            free: Vec::new(),
            datapaths: HashMap::new(),
            on_datapath: FastMap::default(),
            index: Index::default(),
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

    /// The keys of map columns the replica reads, by table and column: the session may drop
    /// the others while reading ([`crate::ovsdb::Session::keep_map_keys`]).
    pub fn map_keys() -> [(&'static str, &'static str, &'static [&'static str]); 2] {
        [
            (PORT_BINDING, "external_ids", row::PORT_EXTERNAL_IDS),
            (DATAPATH_BINDING, "external_ids", row::DATAPATH_EXTERNAL_IDS),
        ]
    }

    /// A full snapshot follows: forget everything (the conditions asked stay).
    pub fn reset(&mut self) {
        // Fresh tables, not cleared ones: a snapshot after a resync may be much smaller, and
        // the old capacity would stay allocated.
        self.chassis = HashMap::new();
        self.slots = FastMap::default();
        self.rows = Vec::new();
        self.free = Vec::new();
        self.datapaths = HashMap::new();
        self.on_datapath = FastMap::default();
        self.index = Index::default();
        self.logged = HashSet::new();
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
        let ports: Vec<Slot> = self
            .on_datapath
            .get(&uuid)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default();
        for &port in &ports {
            self.keys(port, false);
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
        for &port in &ports {
            self.keys(port, true);
        }
    }

    fn port_row(&mut self, uuid: Uuid, op: &RowOp) {
        let slot = self.slots.get(&uuid).copied();
        if let Some(slot) = slot {
            self.keys(slot, false);
        }
        let old_dp = slot.and_then(|s| self.row(s)).and_then(|p| p.datapath);
        let slot = match (op, slot) {
            (RowOp::Delete, None) => return,
            (RowOp::Delete, Some(s)) => {
                self.slots.remove(&uuid);
                if let Some(row) = self.rows.get_mut(s as usize) {
                    *row = None;
                }
                self.free.push(s);
                s
            }
            (RowOp::Initial(c) | RowOp::Insert(c), s) => self.put(uuid, s, PortRow::new(c)),
            (RowOp::Modify(c), Some(s)) => {
                if let Some((_, row)) = self.rows.get_mut(s as usize).and_then(Option::as_mut) {
                    row.modify(c);
                }
                s
            }
            (RowOp::Modify(c), None) => {
                let mut row = PortRow::default();
                row.modify(c);
                self.put(uuid, None, row)
            }
        };
        let new_dp = self.row(slot).and_then(|p| p.datapath);
        if old_dp != new_dp {
            if let Some(dp) = old_dp {
                if let Some(set) = self.on_datapath.get_mut(&dp) {
                    set.remove(&slot);
                    if set.is_empty() {
                        self.on_datapath.remove(&dp);
                    }
                }
            }
            if let Some(dp) = new_dp {
                self.on_datapath.entry(dp).or_default().insert(slot);
            }
        }
        self.keys(slot, true);
    }

    /// Stores `row` in slot `slot`, or in a new one; returns the slot.
    fn put(&mut self, uuid: Uuid, slot: Option<Slot>, row: PortRow) -> Slot {
        let slot = match slot.or_else(|| self.free.pop()) {
            Some(s) => s,
            None => {
                self.rows.push(None);
                // More than 4 billion ports do not fit in memory long before this.
                Slot::try_from(self.rows.len() - 1).unwrap_or(Slot::MAX)
            }
        };
        if let Some(place) = self.rows.get_mut(slot as usize) {
            *place = Some((uuid, row));
        }
        self.slots.insert(uuid, slot);
        slot
    }

    /// The row in `slot`, if any.
    fn row(&self, slot: Slot) -> Option<&PortRow> {
        self.rows
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|(_, r)| r)
    }

    /// The networks port `p` is on: its datapath, and the Neutron network that datapath is.
    fn networks(&self, p: &PortRow) -> [Option<Uuid>; 2] {
        let Some(dp) = p.datapath else {
            return [None, None];
        };
        let net = self.datapaths.get(&dp).and_then(|d| d.network);
        [Some(dp), net.filter(|&n| n != dp)]
    }

    /// Adds (or removes) the index entries of the port in `slot`: one per network it is on
    /// and IP of its `mac[0]`, and one for its MAC; none for an unbound port.
    fn keys(&mut self, slot: Slot, add: bool) {
        let Some(p) = self.row(slot) else {
            return;
        };
        if !p.bound() {
            return;
        }
        let nets = self.networks(p);
        let Some((_, p)) = self.rows.get(slot as usize).and_then(Option::as_ref) else {
            return;
        };
        for net in nets.into_iter().flatten() {
            self.index.change(net, &p.ips, p.mac, slot, add);
        }
        self.logged.clear();
    }

    /// The instance behind `ip` on `network` (the UUID of `X-OVN-Network-ID`).
    pub fn lookup(&mut self, network: Uuid, ip: IpAddr) -> Match {
        let found: &[Slot] = match port_search(ip) {
            PortSearch::Ip(ip) => self.index.ip(network, ip),
            PortSearch::LinkLocal(v6, mac) => match self.index.ip(network, IpAddr::V6(v6)) {
                [] => mac.map_or(&[], |m| self.index.mac(network, m)),
                ports => ports,
            },
        };
        match found {
            [] => Match::NotFound,
            [one] => match self.row(*one).and_then(PortRow::instance) {
                Some(instance) => Match::Found(instance),
                None => Match::NotFound,
            },
            several => {
                let names: Vec<Box<str>> = several
                    .iter()
                    .filter_map(|&s| self.row(s))
                    .map(|p| p.logical_port.text().into())
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

    /// The index rebuilt from the replicated rows compared with the one kept incrementally,
    /// and the row table with its UUID map: the fuzz target's main invariant.
    #[cfg(any(test, fuzzing, feature = "testing"))]
    pub fn check_index(&self) -> Result<(), String> {
        let mut fresh = Index::default();
        for (slot, (_, p)) in self.live() {
            if p.bound() {
                for net in self.networks(p).into_iter().flatten() {
                    fresh.change(net, &p.ips, p.mac, slot, true);
                }
            }
        }
        if fresh.dump() != self.index.dump() {
            return Err(format!(
                "index {:?} != rebuilt {:?}",
                self.index.dump(),
                fresh.dump()
            ));
        }
        let slots: FastMap<Uuid, Slot> = self.live().map(|(s, (u, _))| (*u, s)).collect();
        if slots != self.slots {
            return Err(format!("slots {:?} != rows {slots:?}", self.slots));
        }
        let free: HashSet<Slot> = self.free.iter().copied().collect();
        let empty = (0..self.rows.len())
            .filter(|&i| self.rows[i].is_none())
            .count();
        if free.len() != self.free.len() || free.len() != empty {
            return Err(format!("free slots {:?}, {empty} empty", self.free));
        }
        let mut on_dp: FastMap<Uuid, FastSet<Slot>> = FastMap::default();
        for (slot, (_, p)) in self.live() {
            if let Some(dp) = p.datapath {
                on_dp.entry(dp).or_default().insert(slot);
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

    /// The rows in use, with their slots.
    #[cfg(any(test, fuzzing, feature = "testing"))]
    fn live(&self) -> impl Iterator<Item = (Slot, &(Uuid, PortRow))> {
        self.rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((Slot::try_from(i).ok()?, r.as_ref()?)))
    }

    /// The replica's size.
    pub fn stats(&self) -> ReplicaStats {
        ReplicaStats {
            ports: self.slots.len(),
            datapaths: self.datapaths.len(),
            chassis: self.chassis.len(),
        }
    }
}

#[cfg(test)]
mod tests;
