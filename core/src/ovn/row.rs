//! The replicated rows, typed, with only what the lookup uses: a few hundred bytes a port, no
//! JSON kept. Of `external_ids` only the keys used are kept. That is still exact under
//! `update2`'s map differences ([`apply_map_diff`]'s rule): a difference for a key we keep is
//! applied to the value we kept, and one for a key we dropped concerns nothing we hold.

use std::net::IpAddr;

use crate::ovsdb::datum::apply_set_diff;
use crate::ovsdb::update::Columns;
use crate::ovsdb::{Atom, Datum};
use crate::scope::{Instance, Uuid};

/// The Port_Binding columns monitored.
pub(super) const PORT_COLUMNS: &[&str] = &[
    "logical_port",
    "mac",
    "datapath",
    "chassis",
    "additional_chassis",
    "external_ids",
];

/// The Datapath_Binding columns monitored.
pub(super) const DATAPATH_COLUMNS: &[&str] = &["external_ids"];

/// One Port_Binding row.
#[derive(Clone, Debug, Default)]
pub(super) struct PortRow {
    pub(super) logical_port: Box<str>,
    /// The `mac` column: `"MAC IP [IP…]"` entries.
    macs: Vec<Atom>,
    pub(super) datapath: Option<Uuid>,
    chassis: Vec<Atom>,
    additional: Vec<Atom>,
    device_id: Option<Box<str>>,
    project_id: Option<Box<str>>,
}

impl PortRow {
    pub(super) fn new(columns: &Columns) -> PortRow {
        let mut row = PortRow::default();
        for (name, value) in columns {
            row.set(name, value, false);
        }
        row
    }

    /// Applies a `modify`: new values for scalar columns, differences for the others.
    pub(super) fn modify(&mut self, columns: &Columns) {
        for (name, value) in columns {
            self.set(name, value, true);
        }
    }

    fn set(&mut self, name: &str, value: &Datum, diff: bool) {
        let set = |old: &mut Vec<Atom>| match diff {
            true => apply_set_diff(old, value.atoms()),
            false => *old = value.atoms().to_vec(),
        };
        match name {
            "logical_port" => {
                if let Some(s) = value.scalar().and_then(Atom::as_str) {
                    self.logical_port = s.into();
                }
            }
            "datapath" => self.datapath = value.scalar().and_then(Atom::as_uuid),
            "mac" => set(&mut self.macs),
            "chassis" => set(&mut self.chassis),
            "additional_chassis" => set(&mut self.additional),
            "external_ids" => {
                let pairs: &[(Atom, Atom)] = match value {
                    Datum::Map(pairs) => pairs,
                    Datum::Set(_) => &[],
                };
                if !diff {
                    self.device_id = None;
                    self.project_id = None;
                }
                for (k, v) in pairs {
                    let slot = match k.as_str() {
                        Some("neutron:device_id") => &mut self.device_id,
                        Some("neutron:project_id") => &mut self.project_id,
                        _ => continue,
                    };
                    let v = v.as_str().map(Box::<str>::from);
                    *slot = match (diff, *slot == v) {
                        (true, true) => None,
                        _ => v,
                    };
                }
            }
            _ => {}
        }
    }

    /// Bound to a chassis (Neutron: `pb.chassis`), or about to be by a live migration.
    pub(super) fn bound(&self) -> bool {
        !self.chassis.is_empty() || !self.additional.is_empty()
    }

    /// The IPs and the MAC of `mac[0]` (OVSDB sends sets sorted: the first is the least).
    pub(super) fn addresses(&self) -> (Vec<IpAddr>, Option<[u8; 6]>) {
        let first = self.macs.iter().filter_map(Atom::as_str).min();
        let mut words = first.unwrap_or_default().split_ascii_whitespace();
        let mac = words.next().and_then(parse_mac);
        let mut ips: Vec<IpAddr> = words.filter_map(|w| w.parse().ok()).collect();
        ips.sort_unstable();
        ips.dedup();
        (ips, mac)
    }

    /// The instance, when the port names one.
    pub(super) fn instance(&self) -> Option<Instance> {
        let device = self.device_id.as_deref().filter(|d| !d.is_empty())?;
        Some(Instance {
            instance_id: device.to_owned(),
            project_id: self.project_id.as_deref().unwrap_or_default().to_owned(),
        })
    }
}

/// One Datapath_Binding row: the Neutron network it is, from `external_ids:name`.
#[derive(Clone, Debug, Default)]
pub(super) struct DatapathRow {
    name: Option<Box<str>>,
    pub(super) network: Option<Uuid>,
}

impl DatapathRow {
    pub(super) fn new(columns: &Columns) -> DatapathRow {
        let mut row = DatapathRow::default();
        for (name, value) in columns {
            row.set(name, value, false);
        }
        row
    }

    pub(super) fn modify(&mut self, columns: &Columns) {
        for (name, value) in columns {
            self.set(name, value, true);
        }
    }

    fn set(&mut self, name: &str, value: &Datum, diff: bool) {
        if name != "external_ids" {
            return;
        }
        if !diff {
            self.name = None;
        }
        if let Datum::Map(pairs) = value {
            for (k, v) in pairs {
                if k.as_str() != Some("name") {
                    continue;
                }
                let v = v.as_str().map(Box::<str>::from);
                self.name = match (diff, self.name == v) {
                    (true, true) => None,
                    _ => v,
                };
            }
        }
        self.network = self
            .name
            .as_deref()
            .and_then(|n| n.strip_prefix("neutron-"))
            .and_then(|id| Uuid::parse(id.as_bytes()));
    }
}

/// `fa:16:3e:12:34:56` (either case).
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
