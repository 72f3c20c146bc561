//! The replicated rows, typed, with only what the lookup uses: a few hundred bytes a port, no
//! JSON kept, identifiers in 16 bytes where they are UUIDs. Of `external_ids` only the keys used are kept. That is still exact under
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

/// The keys of Port_Binding's `external_ids` read ([`PortRow`]).
pub(super) const PORT_EXTERNAL_IDS: &[&str] = &["neutron:device_id", "neutron:project_id"];

/// The keys of Datapath_Binding's `external_ids` read ([`DatapathRow`]).
pub(super) const DATAPATH_EXTERNAL_IDS: &[&str] = &["name"];

/// An identifier as Neutron writes them, in 16 bytes when it is a UUID in its canonical
/// lowercase form (device and logical port ids: dashed; project ids: 32 hex digits) and as a
/// string otherwise. Exact: the form kept is chosen only when printing it gives back the same
/// text, so equal texts are equal identifiers and the answer carries the text received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Ident {
    /// `8-4-4-4-12`, lowercase.
    Dashed(u128),
    /// 32 lowercase hex digits.
    Hex(u128),
    /// Anything else.
    Other(Box<str>),
}

impl Ident {
    pub(super) fn new(s: &str) -> Ident {
        let lower = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-';
        match Uuid::parse(s.as_bytes()) {
            Some(u) if s.bytes().all(lower) && s.len() == 36 => Ident::Dashed(u.0),
            Some(u) if s.bytes().all(lower) => Ident::Hex(u.0),
            _ => Ident::Other(s.into()),
        }
    }

    /// The text received. Written digit by digit: it is on every answer's path, and
    /// `format!`'s machinery costs more than the whole index lookup.
    pub(super) fn text(&self) -> String {
        let (v, dashed) = match self {
            Ident::Dashed(u) => (*u, true),
            Ident::Hex(u) => (*u, false),
            Ident::Other(s) => return s.to_string(),
        };
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 36];
        let mut at = 0;
        for (i, byte) in v.to_be_bytes().into_iter().enumerate() {
            if dashed && matches!(i, 4 | 6 | 8 | 10) {
                text[at] = b'-';
                at += 1;
            }
            text[at] = DIGITS[usize::from(byte >> 4)];
            text[at + 1] = DIGITS[usize::from(byte & 0xf)];
            at += 2;
        }
        // Hex digits and dashes: always UTF-8.
        std::str::from_utf8(&text[..at])
            .unwrap_or_default()
            .to_owned()
    }
}

/// One Port_Binding row: the sets kept as received (an `update2` difference toggles their
/// elements), the addresses of `mac[0]` parsed once when the `mac` column changes.
#[derive(Clone, Debug)]
pub(super) struct PortRow {
    pub(super) logical_port: Ident,
    /// The `mac` column: `"MAC IP [IP…]"` entries.
    macs: Vec<Box<str>>,
    pub(super) datapath: Option<Uuid>,
    chassis: Vec<Uuid>,
    additional: Vec<Uuid>,
    device_id: Option<Ident>,
    project_id: Option<Ident>,
    /// The IPs of `mac[0]`, sorted, once each.
    pub(super) ips: Box<[IpAddr]>,
    /// The MAC of `mac[0]`.
    pub(super) mac: Option<[u8; 6]>,
}

impl Default for PortRow {
    fn default() -> PortRow {
        PortRow {
            logical_port: Ident::Other("".into()),
            macs: Vec::new(),
            datapath: None,
            chassis: Vec::new(),
            additional: Vec::new(),
            device_id: None,
            project_id: None,
            ips: Box::new([]),
            mac: None,
        }
    }
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
        let strings = || value.atoms().iter().filter_map(Atom::as_str).map(Box::from);
        let uuids = || value.atoms().iter().filter_map(Atom::as_uuid);
        match name {
            "logical_port" => {
                if let Some(s) = value.scalar().and_then(Atom::as_str) {
                    self.logical_port = Ident::new(s);
                }
            }
            "datapath" => self.datapath = value.scalar().and_then(Atom::as_uuid),
            "mac" => {
                set_column(&mut self.macs, strings(), diff);
                self.parse_addresses();
            }
            "chassis" => set_column(&mut self.chassis, uuids(), diff),
            "additional_chassis" => set_column(&mut self.additional, uuids(), diff),
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
                    let v = v.as_str().map(Ident::new);
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
    fn parse_addresses(&mut self) {
        let first = self.macs.iter().min();
        let mut words = first.map_or("", |s| s).split_ascii_whitespace();
        self.mac = words.next().and_then(parse_mac);
        let mut ips: Vec<IpAddr> = words.filter_map(|w| w.parse().ok()).collect();
        ips.sort_unstable();
        ips.dedup();
        self.ips = ips.into_boxed_slice();
    }

    /// The instance, when the port names one.
    pub(super) fn instance(&self) -> Option<Instance> {
        let device = self.device_id.as_ref()?.text();
        if device.is_empty() {
            return None;
        }
        Some(Instance {
            instance_id: device,
            project_id: self
                .project_id
                .as_ref()
                .map(Ident::text)
                .unwrap_or_default(),
        })
    }
}

/// A set column's new value, or (`diff`) the `update2` difference ([`apply_set_diff`]).
fn set_column<T: PartialEq>(set: &mut Vec<T>, elements: impl Iterator<Item = T>, diff: bool) {
    match diff {
        true => apply_set_diff(set, elements),
        false => *set = elements.collect(),
    }
    set.shrink_to_fit();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_keep_their_text() {
        for (text, compact) in [
            ("6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a", true),
            ("0123456789abcdef0123456789abcdef", true),
            ("6F9C1B1E-3C4A-4B8E-9D2A-1F2E3D4C5B6A", false),
            ("0123456789ABCDEF0123456789abcdef", false),
            ("vm-1", false),
            ("", false),
        ] {
            let id = Ident::new(text);
            assert_eq!(id.text(), text);
            assert_eq!(!matches!(id, Ident::Other(_)), compact, "{text}");
        }
        assert_ne!(
            Ident::new("0123456789abcdef0123456789abcdef"),
            Ident::new("01234567-89ab-cdef-0123-456789abcdef"),
            "the same number in two forms is two texts"
        );
    }
}
