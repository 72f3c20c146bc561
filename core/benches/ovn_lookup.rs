//! Lookup cost and replica memory of the OVN backend's `Southbound` with 100, 10 000 and
//! 100 000 bound `Port_Binding` rows (the sizes), shaped like the rows Neutron writes.
//!
//! Each size is one `Initial` snapshot (what a monitor reply carries) of a `Chassis`, one
//! `Datapath_Binding` per 100 ports (`external_ids:name` = `neutron-<uuid>`) and the ports
//! (`mac` "MAC IP", Neutron's `external_ids`), applied to an empty replica. The heap the
//! replica holds is counted by the global allocator below: bytes allocated minus bytes freed
//! from `Southbound::new` to the end of `apply` (the snapshot itself is built before and is
//! borrowed, so it is not counted). Lookups are timed over hits (every port, in a scattered
//! order) and misses (a free address on a known network), median of several runs. The
//! snapshot is also written as the JSON text a monitor reply carries and read back as the
//! session reads it (`UpdatesSeed`, the replica's map keys only): its size, the time, and the
//! heap the parsed rows hold until applied (the agent's transient besides the text).
//! No assertions: this prints a table. `cargo bench -p mdproxy-core --bench ovn_lookup`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use mdproxy_core::ovn::{ChassisFilter, Match, Southbound};
use mdproxy_core::ovsdb::update::{Columns, RowUpdate, TableUpdate};
use mdproxy_core::ovsdb::{Atom, Datum, MapKeys, RowOp, TableUpdates, UpdatesSeed};
use mdproxy_core::scope::Uuid;
use serde::de::DeserializeSeed;
use serde_json::{Map, Value};

/// `System`, counting the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SIZES: [usize; 3] = [100, 10_000, 100_000];
const PORTS_PER_NETWORK: usize = 100;
const CHASSIS: u128 = 0xc1;
const RUNS: usize = 7;
const LOOKUPS_PER_RUN: usize = 200_000;

fn s(v: &str) -> Atom {
    Atom::String(v.into())
}

fn set(atoms: Vec<Atom>) -> Datum {
    Datum::Set(atoms)
}

fn map(pairs: &[(&str, &str)]) -> Datum {
    Datum::Map(pairs.iter().map(|(k, v)| (s(k), s(v))).collect())
}

/// A UUID that looks random (splitmix64 of `n`, twice) but is reproducible.
fn uuid(kind: u64, n: u64) -> Uuid {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let hi = mix(kind << 40 ^ n);
    let lo = mix(hi ^ n);
    // Version 4, variant 1, as Neutron's and OVSDB's UUIDs.
    Uuid(
        ((hi as u128) << 64 | lo as u128) & !(0xf000u128 << 64) & !(0xc << 60)
            | (0x4000u128 << 64)
            | (0x8u128 << 60),
    )
}

fn network(n: usize) -> Uuid {
    uuid(1, n as u64)
}
fn datapath(n: usize) -> Uuid {
    uuid(2, n as u64)
}
fn port_uuid(i: usize) -> Uuid {
    uuid(3, i as u64)
}

/// Port `i`'s address: 10.x.y.(10 + i % 100) on network i / 100 (x.y = the network number).
fn address(i: usize) -> Ipv4Addr {
    let net = i / PORTS_PER_NETWORK;
    Ipv4Addr::new(
        10,
        (net >> 8) as u8,
        net as u8,
        (10 + i % PORTS_PER_NETWORK) as u8,
    )
}

fn port_row(i: usize) -> Columns {
    let net = i / PORTS_PER_NETWORK;
    let ip = address(i);
    let mac = format!(
        "fa:16:3e:{:02x}:{:02x}:{:02x} {ip}",
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8
    );
    let device = uuid(4, i as u64).to_string();
    let project = uuid(5, (net % 7) as u64).to_string();
    let cidrs = format!("{ip}/24");
    let net_name = format!("net-{net}");
    let port_name = format!("port-{i}");
    let sg = uuid(6, (net % 7) as u64).to_string();
    vec![
        (
            "logical_port".into(),
            set(vec![s(&port_uuid(i).to_string())]),
        ),
        ("mac".into(), set(vec![s(&mac)])),
        ("datapath".into(), set(vec![Atom::Uuid(datapath(net))])),
        ("chassis".into(), set(vec![Atom::Uuid(Uuid(CHASSIS))])),
        ("additional_chassis".into(), set(vec![])),
        (
            "external_ids".into(),
            map(&[
                ("neutron:device_id", &device),
                ("neutron:device_owner", "compute:nova"),
                ("neutron:project_id", &project),
                ("neutron:cidrs", &cidrs),
                ("neutron:network_name", &format!("neutron-{}", network(net))),
                ("neutron:port_name", &port_name),
                ("neutron:revision_number", "4"),
                ("neutron:security_group_ids", &sg),
                ("name", &net_name),
            ]),
        ),
    ]
}

fn datapath_row(net: usize) -> Columns {
    vec![(
        "external_ids".into(),
        map(&[
            ("name", &format!("neutron-{}", network(net))),
            ("name2", &format!("net-{net}")),
            ("logical-switch", &uuid(7, net as u64).to_string()),
        ]),
    )]
}

fn table(name: &str, rows: Vec<(Uuid, Columns)>) -> TableUpdate {
    TableUpdate {
        table: name.into(),
        rows: rows
            .into_iter()
            .map(|(uuid, c)| RowUpdate {
                uuid,
                op: RowOp::Initial(c),
            })
            .collect(),
    }
}

/// The monitor's initial snapshot for `ports` ports bound to `compute-1`.
fn snapshot(ports: usize) -> TableUpdates {
    let networks = ports.div_ceil(PORTS_PER_NETWORK);
    vec![
        table(
            "Chassis",
            vec![(
                Uuid(CHASSIS),
                vec![("name".into(), set(vec![s("compute-1")]))],
            )],
        ),
        table(
            "Datapath_Binding",
            (0..networks)
                .map(|n| (datapath(n), datapath_row(n)))
                .collect(),
        ),
        table(
            "Port_Binding",
            (0..ports).map(|i| (port_uuid(i), port_row(i))).collect(),
        ),
    ]
}

/// The snapshot as the monitor reply's `<table-updates2>` text.
fn snapshot_text(updates: &TableUpdates) -> Vec<u8> {
    let mut tables = Map::new();
    for t in updates {
        let mut rows = Map::new();
        for r in &t.rows {
            let RowOp::Initial(columns) = &r.op else {
                unreachable!("the snapshot is all initial rows")
            };
            let columns: Map<String, Value> = columns
                .iter()
                .map(|(n, d)| (n.to_string(), d.to_json()))
                .collect();
            let mut change = Map::new();
            change.insert("initial".into(), Value::Object(columns));
            rows.insert(r.uuid.to_string(), Value::Object(change));
        }
        tables.insert(t.table.to_string(), Value::Object(rows));
    }
    serde_json::to_vec(&Value::Object(tables)).unwrap()
}

/// Reads `text` as the session does (the replica's map keys only): the time, and the heap
/// its rows hold until they are applied.
#[allow(clippy::disallowed_methods)]
fn parse(text: &[u8]) -> (TableUpdates, Duration, isize) {
    let mut keys = MapKeys::default();
    for (table, column, kept) in Southbound::map_keys() {
        keys.keep(table, column, kept);
    }
    let before = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut de = serde_json::Deserializer::from_slice(text);
    let updates = UpdatesSeed(&keys).deserialize(&mut de).unwrap();
    (
        updates,
        start.elapsed(),
        LIVE.load(Ordering::Relaxed) - before,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per lookup of `keys`, visited `LOOKUPS_PER_RUN` times with a stride coprime to their
/// count (scattered, so the caches see what a real mix of clients gives them); median of
/// `RUNS`. `want` checks the first answer, so a broken replica cannot time fast.
// The core bans the clock (clippy.toml); a benchmark is exactly where reading it belongs.
#[allow(clippy::disallowed_methods)]
fn time_lookups(sb: &mut Southbound, keys: &[(Uuid, IpAddr)], want_found: bool) -> f64 {
    let first = sb.lookup(keys[0].0, keys[0].1);
    assert_eq!(matches!(first, Match::Found(_)), want_found, "{first:?}");
    let stride = 7919 % keys.len().max(1) + 1;
    let runs = (0..RUNS)
        .map(|_| {
            let mut k = 0usize;
            let start = Instant::now();
            for _ in 0..LOOKUPS_PER_RUN {
                let (net, ip) = keys[k];
                black_box(sb.lookup(black_box(net), black_box(ip)));
                k = (k + stride) % keys.len();
            }
            start.elapsed().as_nanos() as f64 / LOOKUPS_PER_RUN as f64
        })
        .collect();
    median(runs)
}

#[allow(clippy::disallowed_methods)]
fn main() {
    println!(
        "| Port_Binding rows | networks | snapshot text | parse (rows held) | apply snapshot | replica heap | per port | hit ns/lookup | miss ns/lookup |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut first_hit = None;
    for ports in SIZES {
        let text = snapshot_text(&snapshot(ports));
        let (updates, parsed, rows_heap) = parse(&text);
        let before = LIVE.load(Ordering::Relaxed);
        let start = Instant::now();
        let mut sb = Southbound::new(ChassisFilter::Named("compute-1".into()));
        sb.apply(&updates);
        let applied: Duration = start.elapsed();
        let heap = LIVE.load(Ordering::Relaxed) - before;
        drop(updates);
        let stats = sb.stats();
        assert_eq!(stats.ports, ports, "{stats:?}");

        let hits: Vec<(Uuid, IpAddr)> = (0..ports)
            .map(|i| (network(i / PORTS_PER_NETWORK), IpAddr::V4(address(i))))
            .collect();
        // .250 is never a port's address (ports use .10 to .109).
        let misses: Vec<(Uuid, IpAddr)> = (0..stats.datapaths)
            .map(|n| {
                let a = address(n * PORTS_PER_NETWORK).octets();
                (network(n), IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], 250)))
            })
            .collect();
        let hit = time_lookups(&mut sb, &hits, true);
        let miss = time_lookups(&mut sb, &misses, false);
        let base = *first_hit.get_or_insert(hit);
        println!(
            "| {ports} | {} | {:.2} MiB | {:.1} ms ({:.2} MiB) | {:.1} ms | {:.2} MiB | {} B | {hit:.0} ({:.2}× the 100-row figure) | {miss:.0} |",
            stats.datapaths,
            text.len() as f64 / (1024.0 * 1024.0),
            parsed.as_secs_f64() * 1e3,
            rows_heap as f64 / (1024.0 * 1024.0),
            applied.as_secs_f64() * 1e3,
            heap as f64 / (1024.0 * 1024.0),
            heap / ports as isize,
            hit / base,
        );
    }
}
