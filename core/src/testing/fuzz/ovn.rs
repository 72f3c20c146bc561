//! Fuzz body for the OVN Southbound replica: monitor updates over a small universe of rows,
//! so collisions, moves, renames and ambiguities are frequent.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::ovn::{ChassisFilter, Match, Southbound};
use crate::ovsdb::update::{Columns, RowUpdate, TableUpdate};
use crate::ovsdb::{Atom, Condition, Datum, RowOp};
use crate::scope::Uuid;

const IPS: &[&str] = &[
    "10.0.0.5",
    "10.0.0.6",
    "fd00::5",
    "fe80::f816:3eff:fe12:3456",
    "fe80::f816:3eff:fe12:3457",
    "::ffff:10.0.0.5",
];
const MACS: &[&str] = &[
    "fa:16:3e:12:34:56",
    "fa:16:3e:12:34:57",
    "FA:16:3E:12:34:56",
    "zz",
];
const DEVICES: &[&str] = &["vm-a", "vm-b", ""];
const NAMES: &[&str] = &["node-1", "node-2"];

/// Network UUIDs: the datapaths themselves (0xd0..) and Neutron networks (0x9e..).
fn net(i: u8) -> Uuid {
    match i % 2 {
        0 => Uuid(0xd0 + u128::from(i / 2 % 3)),
        _ => Uuid(0x9e00 + u128::from(i / 2 % 3)),
    }
}

fn s(v: &str) -> Atom {
    Atom::String(v.into())
}

fn uuids(bits: u8, base: u128) -> Datum {
    Datum::Set(
        (0..3)
            .filter(|i| bits & (1 << i) != 0)
            .map(|i| Atom::Uuid(Uuid(base + i)))
            .collect(),
    )
}

/// Reads bytes, 0 once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
}

/// A Port_Binding row's columns, each present or not (a `modify` carries some).
fn port_columns(b: &mut Bytes) -> (Columns, Option<Option<Uuid>>) {
    let present = b.next();
    let mut cols: Columns = Vec::new();
    let mut dp_set = None;
    if present & 1 != 0 {
        let name = format!("lp-{}", b.next() % 4);
        cols.push(("logical_port".into(), Datum::Set(vec![s(&name)])));
    }
    if present & 2 != 0 {
        let n = b.next();
        let macs = (0..n % 3)
            .map(|_| {
                let x = b.next();
                let mut e = MACS[usize::from(x % 4)].to_owned();
                for k in 0..(x >> 2) % 4 {
                    e.push(' ');
                    e.push_str(IPS[usize::from((x >> 4).wrapping_add(k)) % IPS.len()]);
                }
                s(&e)
            })
            .collect();
        cols.push(("mac".into(), Datum::Set(macs)));
    }
    if present & 4 != 0 {
        let x = b.next();
        let dp = (x % 4 != 3).then(|| Uuid(0xd0 + u128::from(x % 4)));
        cols.push((
            "datapath".into(),
            Datum::Set(dp.map(Atom::Uuid).into_iter().collect()),
        ));
        dp_set = Some(dp);
    }
    if present & 8 != 0 {
        cols.push(("chassis".into(), uuids(b.next(), 0xc0)));
    }
    if present & 16 != 0 {
        cols.push(("additional_chassis".into(), uuids(b.next(), 0xc0)));
    }
    if present & 32 != 0 {
        let x = b.next();
        let mut pairs = Vec::new();
        if x & 1 != 0 {
            pairs.push((s("neutron:device_id"), s(DEVICES[usize::from(x >> 1) % 3])));
        }
        if x & 8 != 0 {
            pairs.push((s("neutron:project_id"), s("proj")));
        }
        if x & 16 != 0 {
            pairs.push((s("neutron:cidrs"), s("10.0.0.5/24")));
        }
        cols.push(("external_ids".into(), Datum::Map(pairs)));
    }
    (cols, dp_set)
}

fn row_op(kind: u8, cols: Columns) -> RowOp {
    match kind % 4 {
        0 => RowOp::Initial(cols),
        1 => RowOp::Insert(cols),
        2 => RowOp::Modify(cols),
        _ => RowOp::Delete,
    }
}

/// Decodes operations on a `Southbound` (byte 0 bit 0: `Any` or `Named`) and after each
/// checks: the index equals a scan of the rows; lookups are consistent; no condition change
/// repeats what was last asked; in `Named` mode the Datapath_Binding conditions name exactly
/// the datapaths of the replicated ports.
pub fn ovn_replica(data: &[u8]) {
    let mut b = Bytes(data);
    let named = b.next() & 1 == 1;
    let filter = match named {
        true => ChassisFilter::Named("node-1".into()),
        false => ChassisFilter::Any,
    };
    let mut sb = Southbound::new(filter);
    let mut asked: HashMap<Box<str>, Vec<Condition>> = sb
        .monitors()
        .into_iter()
        .filter_map(|m| Some((m.table, m.conditions?)))
        .collect();
    // Row → datapath, as the replica should hold it.
    let mut port_dp: HashMap<Uuid, Option<Uuid>> = HashMap::new();
    // A reset keeps the conditions asked until the snapshot that follows is applied.
    let mut reset = false;
    for _ in 0..64 {
        if b.0.is_empty() {
            break;
        }
        let op = b.next();
        let mut updates = Vec::new();
        match op % 8 {
            0..=3 => {
                let rows = (0..op / 8 % 3 + 1)
                    .map(|_| {
                        let x = b.next();
                        let uuid = Uuid(0x100 + u128::from(x % 5));
                        let (cols, dp) = port_columns(&mut b);
                        let op = row_op(x >> 3, cols);
                        match &op {
                            RowOp::Delete => {
                                port_dp.remove(&uuid);
                            }
                            RowOp::Initial(_) | RowOp::Insert(_) => {
                                port_dp.insert(uuid, dp.flatten());
                            }
                            RowOp::Modify(_) => {
                                let slot = port_dp.entry(uuid).or_default();
                                if let Some(dp) = dp {
                                    *slot = dp;
                                }
                            }
                        }
                        RowUpdate { uuid, op }
                    })
                    .collect();
                updates.push(TableUpdate {
                    table: "Port_Binding".into(),
                    rows,
                });
            }
            4 => {
                let x = b.next();
                let uuid = Uuid(0xd0 + u128::from(x % 4));
                let name = match x >> 2 & 3 {
                    0 => format!("neutron-{}", Uuid(0x9e00 + u128::from(x >> 4 & 3))),
                    1 => format!("neutron-{}", uuid),
                    2 => "neutron-garbage".to_owned(),
                    _ => "private".to_owned(),
                };
                let pairs = match x >> 6 & 1 {
                    0 => vec![(s("name"), s(&name))],
                    _ => Vec::new(),
                };
                let op = row_op(x >> 6, vec![("external_ids".into(), Datum::Map(pairs))]);
                updates.push(TableUpdate {
                    table: "Datapath_Binding".into(),
                    rows: vec![RowUpdate { uuid, op }],
                });
            }
            5 => {
                let x = b.next();
                let cols = vec![(
                    "name".into(),
                    Datum::Set(vec![s(NAMES[usize::from(x >> 2 & 1)])]),
                )];
                updates.push(TableUpdate {
                    table: "Chassis".into(),
                    rows: vec![RowUpdate {
                        uuid: Uuid(0xc0 + u128::from(x % 3)),
                        op: row_op(x >> 3, cols),
                    }],
                });
            }
            6 => {
                sb.reset();
                port_dp.clear();
                reset = true;
            }
            _ => {
                let x = b.next();
                let ip: IpAddr = IPS[usize::from(x % 6)]
                    .parse()
                    .unwrap_or_else(|_| unreachable!());
                let network = net(x >> 3);
                let first = sb.lookup(network, ip);
                match &first {
                    Match::Ambiguous(names) => assert!(names.len() >= 2, "{names:?}"),
                    Match::Found(i) => assert!(!i.instance_id.is_empty()),
                    Match::NotFound => {}
                }
                assert_eq!(sb.lookup(network, ip), first, "lookup changed on repeat");
            }
        }
        if !updates.is_empty() {
            for (table, conditions) in sb.apply(&updates) {
                assert_ne!(
                    asked.get(&table),
                    Some(&conditions),
                    "useless monitor_cond_change of {table}"
                );
                asked.insert(table, conditions);
            }
            reset = false;
        }
        if let Err(e) = sb.check_index() {
            panic!("index differs from the rows: {e}");
        }
        assert_eq!(sb.stats().ports, port_dp.len());
        if named && !reset {
            let want: BTreeSet<Uuid> = port_dp.values().flatten().copied().collect();
            let got: BTreeSet<Uuid> = asked
                .get("Datapath_Binding")
                .into_iter()
                .flatten()
                .filter_map(|c| match c {
                    Condition::Clause {
                        column,
                        function: "==",
                        value: Datum::Set(a),
                    } if &**column == "_uuid" => a.first().and_then(Atom::as_uuid),
                    _ => None,
                })
                .collect();
            assert_eq!(got.len(), asked.get("Datapath_Binding").map_or(0, Vec::len));
            assert_eq!(
                got, want,
                "Datapath_Binding conditions vs the ports' datapaths"
            );
        }
    }
}
