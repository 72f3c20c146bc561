use super::*;
use crate::ovsdb::update::{Columns, RowUpdate, TableUpdate};

const NET: u128 = 0x9c2b_1a4e_0000_4000_8000_0000_0000_0001;
const DP: u128 = 0xd0;
const CH: u128 = 0xc1;

fn s(v: &str) -> Atom {
    Atom::String(v.into())
}

fn map(pairs: &[(&str, &str)]) -> Datum {
    Datum::Map(pairs.iter().map(|(k, v)| (s(k), s(v))).collect())
}

fn set(atoms: Vec<Atom>) -> Datum {
    Datum::Set(atoms)
}

fn update(table: &str, uuid: u128, op: RowOp) -> TableUpdates {
    vec![TableUpdate {
        table: table.into(),
        rows: vec![RowUpdate {
            uuid: Uuid(uuid),
            op,
        }],
    }]
}

fn port(name: &str, mac: &str, dp: u128, chassis: Option<u128>, device: &str) -> Columns {
    vec![
        ("logical_port".into(), set(vec![s(name)])),
        ("mac".into(), set(vec![s(mac)])),
        ("datapath".into(), set(vec![Atom::Uuid(Uuid(dp))])),
        (
            "chassis".into(),
            set(chassis.map(|c| Atom::Uuid(Uuid(c))).into_iter().collect()),
        ),
        ("additional_chassis".into(), set(vec![])),
        (
            "external_ids".into(),
            map(&[
                ("neutron:device_id", device),
                ("neutron:project_id", "proj"),
                ("neutron:cidrs", "10.0.0.5/24"),
            ]),
        ),
    ]
}

fn datapath(net: u128) -> Columns {
    let name = format!("neutron-{}", Uuid(net));
    vec![(
        "external_ids".into(),
        map(&[("name", &name), ("name2", "private")]),
    )]
}

fn ip(v: &str) -> IpAddr {
    v.parse().unwrap()
}

fn found(sb: &mut Southbound, net: u128, addr: &str) -> Option<String> {
    match sb.lookup(Uuid(net), ip(addr)) {
        Match::Found(i) => Some(i.instance_id),
        _ => None,
    }
}

/// A replica of every bound port, with one network and one instance on it.
fn any() -> Southbound {
    let mut sb = Southbound::new(ChassisFilter::Any);
    sb.apply(&update(DATAPATH_BINDING, DP, RowOp::Initial(datapath(NET))));
    let p = port(
        "p1",
        "fa:16:3e:00:00:05 10.0.0.5 fd00::5",
        DP,
        Some(CH),
        "vm-1",
    );
    sb.apply(&update(PORT_BINDING, 1, RowOp::Initial(p)));
    sb
}

#[test]
fn network_by_name_and_by_datapath() {
    let mut sb = any();
    assert_eq!(found(&mut sb, NET, "10.0.0.5").as_deref(), Some("vm-1"));
    assert_eq!(found(&mut sb, DP, "10.0.0.5").as_deref(), Some("vm-1"));
    assert_eq!(found(&mut sb, NET, "fd00::5").as_deref(), Some("vm-1"));
    assert_eq!(
        found(&mut sb, NET, "::ffff:10.0.0.5").as_deref(),
        Some("vm-1")
    );
    assert_eq!(
        sb.lookup(Uuid(7), ip("10.0.0.5")),
        Match::NotFound,
        "another network"
    );
    assert_eq!(sb.lookup(Uuid(NET), ip("10.0.0.6")), Match::NotFound);
    // Link-local: by the MAC its EUI-64 identifier embeds.
    assert_eq!(
        found(&mut sb, NET, "fe80::f816:3eff:fe00:5").as_deref(),
        Some("vm-1")
    );
    assert_eq!(found(&mut sb, NET, "fe80::f816:3eff:fe00:6"), None);
    // A global address with the same identifier is only ever its own fixed IP.
    assert_eq!(found(&mut sb, NET, "2001:db8::f816:3eff:fe00:5"), None);
}

#[test]
fn same_ip_on_another_network_and_unbound_ports() {
    let mut sb = any();
    sb.apply(&update(
        DATAPATH_BINDING,
        0xd1,
        RowOp::Insert(datapath(NET + 1)),
    ));
    let other = port("p2", "fa:16:3e:00:00:06 10.0.0.5", 0xd1, Some(CH), "vm-2");
    sb.apply(&update(PORT_BINDING, 2, RowOp::Insert(other)));
    assert_eq!(found(&mut sb, NET, "10.0.0.5").as_deref(), Some("vm-1"));
    assert_eq!(found(&mut sb, NET + 1, "10.0.0.5").as_deref(), Some("vm-2"));
    let unbound = port("p3", "fa:16:3e:00:00:07 10.0.0.7", DP, None, "vm-3");
    sb.apply(&update(PORT_BINDING, 3, RowOp::Insert(unbound)));
    assert_eq!(found(&mut sb, NET, "10.0.0.7"), None, "unbound");
    // Bound later (ovn-controller claims it): found on the very next lookup.
    let bind = vec![("chassis".into(), set(vec![Atom::Uuid(Uuid(CH))]))];
    sb.apply(&update(PORT_BINDING, 3, RowOp::Modify(bind.clone())));
    assert_eq!(found(&mut sb, NET, "10.0.0.7").as_deref(), Some("vm-3"));
    // Unbound again: a set difference toggles the chassis out.
    sb.apply(&update(PORT_BINDING, 3, RowOp::Modify(bind)));
    assert_eq!(found(&mut sb, NET, "10.0.0.7"), None);
}

#[test]
fn moved_ip_and_ambiguity() {
    let mut sb = any();
    let p2 = port("p2", "fa:16:3e:00:00:06 10.0.0.6", DP, Some(CH), "vm-2");
    sb.apply(&update(PORT_BINDING, 2, RowOp::Insert(p2)));
    // 10.0.0.5 moves from p1 to p2: the set difference removes the old entry, adds the new.
    let diff = |old: &str, new: &str| vec![("mac".into(), set(vec![s(old), s(new)]))];
    sb.apply(&update(
        PORT_BINDING,
        1,
        RowOp::Modify(diff(
            "fa:16:3e:00:00:05 10.0.0.5 fd00::5",
            "fa:16:3e:00:00:05 10.0.0.9",
        )),
    ));
    sb.apply(&update(
        PORT_BINDING,
        2,
        RowOp::Modify(diff(
            "fa:16:3e:00:00:06 10.0.0.6",
            "fa:16:3e:00:00:06 10.0.0.5",
        )),
    ));
    assert_eq!(found(&mut sb, NET, "10.0.0.5").as_deref(), Some("vm-2"));
    assert_eq!(found(&mut sb, NET, "10.0.0.9").as_deref(), Some("vm-1"));
    assert_eq!(found(&mut sb, NET, "10.0.0.6"), None);
    // Two ports with one IP: not found, with both named.
    let p3 = port("p3", "fa:16:3e:00:00:07 10.0.0.5", DP, Some(CH), "vm-3");
    sb.apply(&update(PORT_BINDING, 3, RowOp::Insert(p3)));
    let Match::Ambiguous(mut names) = sb.lookup(Uuid(NET), ip("10.0.0.5")) else {
        panic!("not ambiguous")
    };
    names.sort();
    assert_eq!(names, ["p2".into(), "p3".into()] as [Box<str>; 2]);
    sb.apply(&update(PORT_BINDING, 3, RowOp::Delete));
    assert_eq!(found(&mut sb, NET, "10.0.0.5").as_deref(), Some("vm-2"));
}

#[test]
fn external_ids_differences_and_datapath_renames() {
    let mut sb = any();
    // The device id changes (a port reused by another instance): the map difference
    // replaces the value of a key we keep; keys we dropped change nothing.
    let ids = vec![(
        "external_ids".into(),
        map(&[
            ("neutron:device_id", "vm-9"),
            ("neutron:revision_number", "4"),
        ]),
    )];
    sb.apply(&update(PORT_BINDING, 1, RowOp::Modify(ids)));
    assert_eq!(found(&mut sb, NET, "10.0.0.5").as_deref(), Some("vm-9"));
    // Removing the key (same value in the difference): no instance.
    let drop = vec![("external_ids".into(), map(&[("neutron:device_id", "vm-9")]))];
    sb.apply(&update(PORT_BINDING, 1, RowOp::Modify(drop)));
    assert_eq!(sb.lookup(Uuid(NET), ip("10.0.0.5")), Match::NotFound);
    // The datapath's name arrives later than its ports (a conditional monitor): re-keyed.
    let mut sb = Southbound::new(ChassisFilter::Any);
    let p = port("p1", "fa:16:3e:00:00:05 10.0.0.5", DP, Some(CH), "vm-1");
    sb.apply(&update(PORT_BINDING, 1, RowOp::Initial(p)));
    assert_eq!(found(&mut sb, NET, "10.0.0.5"), None);
    assert_eq!(found(&mut sb, DP, "10.0.0.5").as_deref(), Some("vm-1"));
    sb.apply(&update(DATAPATH_BINDING, DP, RowOp::Insert(datapath(NET))));
    assert_eq!(found(&mut sb, NET, "10.0.0.5").as_deref(), Some("vm-1"));
    sb.apply(&update(DATAPATH_BINDING, DP, RowOp::Delete));
    assert_eq!(found(&mut sb, NET, "10.0.0.5"), None);
    sb.reset();
    assert_eq!(sb.stats(), ReplicaStats::default());
}

#[test]
fn conditions_follow_the_chassis_and_the_ports_datapaths() {
    let mut sb = Southbound::new(ChassisFilter::Named("compute-1".into()));
    let monitors = sb.monitors();
    let pb = monitors.iter().find(|m| &*m.table == PORT_BINDING).unwrap();
    assert_eq!(
        pb.conditions,
        Some(vec![]),
        "nothing before the chassis is known"
    );
    let chassis = vec![("name".into(), set(vec![s("compute-1")]))];
    let changes = sb.apply(&update(CHASSIS, CH, RowOp::Initial(chassis)));
    let (table, conditions) = &changes[0];
    assert_eq!(&**table, PORT_BINDING);
    assert_eq!(conditions.len(), 2, "{conditions:?}");
    assert_eq!(
        conditions[1].to_json(),
        serde_json::json!([
            "additional_chassis",
            "includes",
            ["uuid", Uuid(CH).to_string()]
        ])
    );
    let p = port("p1", "fa:16:3e:00:00:05 10.0.0.5", DP, Some(CH), "vm-1");
    let changes = sb.apply(&update(PORT_BINDING, 1, RowOp::Initial(p)));
    assert_eq!(changes.len(), 1);
    assert_eq!(&*changes[0].0, DATAPATH_BINDING);
    assert_eq!(
        changes[0].1[0].to_json(),
        serde_json::json!(["_uuid", "==", ["uuid", Uuid(DP).to_string()]])
    );
    // Nothing new: nothing to send.
    assert!(sb
        .apply(&update(DATAPATH_BINDING, DP, RowOp::Initial(datapath(NET))))
        .is_empty());
    assert_eq!(found(&mut sb, NET, "10.0.0.5").as_deref(), Some("vm-1"));
    // The last port leaves its datapath: the datapath is not wanted any more.
    let changes = sb.apply(&update(PORT_BINDING, 1, RowOp::Delete));
    assert_eq!(changes, vec![(DATAPATH_BINDING.into(), vec![])]);
}

/// A naive scan, the anchor's way, for the property test.
fn scan(sb: &Southbound, net: Uuid, addr: IpAddr) -> Vec<Uuid> {
    let mut hits: Vec<Uuid> = sb
        .live()
        .filter(|(_, (_, p))| p.bound() && sb.networks(p).contains(&Some(net)))
        .filter(|(_, (_, p))| p.ips.contains(&addr))
        .map(|(_, (u, _))| *u)
        .collect();
    hits.sort();
    hits
}

/// The ports the index has for `addr` on `net`.
fn indexed(sb: &Southbound, net: Uuid, addr: IpAddr) -> Vec<Uuid> {
    let mut hits: Vec<Uuid> = sb
        .index
        .ip(net, addr)
        .iter()
        .filter_map(|&s| sb.live().find(|(slot, _)| *slot == s))
        .map(|(_, (u, _))| *u)
        .collect();
    hits.sort();
    hits
}

proptest::proptest! {
    #[test]
    fn index_equals_a_scan(ops in proptest::collection::vec((0u128..6, 0u8..8, 0u8..3, proptest::bool::ANY, 0u8..4), 1..60)) {
        let mut sb = Southbound::new(ChassisFilter::Any);
        sb.apply(&update(DATAPATH_BINDING, DP, RowOp::Initial(datapath(NET))));
        for (uuid, last, dp, bound, kind) in ops {
            let mac = format!("fa:16:3e:00:00:{last:02x} 10.0.0.{last} 10.0.1.{}", last % 3);
            let dps = [DP, 0xd1, NET];
            let op = match kind {
                0 => RowOp::Delete,
                1 => RowOp::Modify(vec![("chassis".into(), set(vec![Atom::Uuid(Uuid(CH))]))]),
                _ => RowOp::Insert(port("p", &mac, dps[dp as usize], bound.then_some(CH), "vm")),
            };
            sb.apply(&update(PORT_BINDING, uuid, op));
            for net in [NET, DP, 0xd1] {
                for a in ["10.0.0.1", "10.0.0.5", "10.0.1.0", "10.0.1.2"] {
                    proptest::prop_assert_eq!(indexed(&sb, Uuid(net), ip(a)), scan(&sb, Uuid(net), ip(a)));
                    proptest::prop_assert_eq!(sb.check_index(), Ok(()));
                }
            }
        }
    }
}

/// The map keys the replica lets the session drop are all it reads: the same rows read
/// with and without dropping answer alike, `modify` differences included.
#[test]
fn dropped_map_keys_change_no_answer() {
    use crate::ovsdb::update::{MapKeys, UpdatesSeed};
    use serde::de::DeserializeSeed;
    let dp = Uuid(DP).to_string();
    let messages = [
        serde_json::json!({"Datapath_Binding": {dp.clone(): {"initial": {"external_ids":
            ["map", [["name", format!("neutron-{}", Uuid(NET))], ["name2", "private"]]]}}}}),
        serde_json::json!({"Port_Binding": {Uuid(1).to_string(): {"initial": {
            "logical_port": "p1", "mac": "fa:16:3e:00:00:05 10.0.0.5", "datapath": ["uuid", dp],
            "chassis": ["uuid", Uuid(CH).to_string()],
            "external_ids": ["map", [["neutron:device_id", "vm-1"], ["neutron:project_id", "p"],
                ["neutron:cidrs", "10.0.0.5/24"], ["neutron:port_name", "x"]]]}}}}),
        serde_json::json!({"Port_Binding": {Uuid(1).to_string(): {"modify": {
            "external_ids": ["map", [["neutron:device_id", "vm-2"], ["neutron:cidrs", "10.0.0.5/24"]]]}}}}),
        serde_json::json!({"Port_Binding": {Uuid(1).to_string(): {"modify": {
            "external_ids": ["map", [["neutron:device_id", "vm-2"], ["neutron:port_name", "y"]]]}}}}),
    ];
    let mut dropping = MapKeys::default();
    for (table, column, keys) in Southbound::map_keys() {
        dropping.keep(table, column, keys);
    }
    let (mut all, mut some) = (any(), any());
    all.reset();
    some.reset();
    let mut answers = Vec::new();
    for m in &messages {
        let full = UpdatesSeed(&MapKeys::default()).deserialize(m).unwrap();
        let kept = UpdatesSeed(&dropping).deserialize(m).unwrap();
        assert_ne!(full, kept, "something is dropped");
        all.apply(&full);
        some.apply(&kept);
        let answer = all.lookup(Uuid(NET), ip("10.0.0.5"));
        assert_eq!(some.lookup(Uuid(NET), ip("10.0.0.5")), answer);
        answers.push(answer);
    }
    let vm = |id: &str| {
        Match::Found(Instance {
            instance_id: id.into(),
            project_id: "p".into(),
        })
    };
    assert_eq!(
        answers,
        [Match::NotFound, vm("vm-1"), vm("vm-2"), Match::NotFound]
    );
}
