//! What the Southbound says this chassis needs, read narrowly (a node polls it, see
//! `node/ovn.rs`): three small `select` transactions rather than every `Port_Binding` of the
//! cloud — this chassis' `Chassis` row; the ports bound to it (`chassis` or
//! `additional_chassis`) and `SB_Global.nb_cfg`; then, for each datapath those ports are on,
//! its `Datapath_Binding` (the network: `external_ids:name`, `neutron-<uuid>`) and its
//! metadata localports (`type == "localport"`). Each as a [`PortRecord`] for the planner.

use mdproxy_core::ovsdb::datum::{Atom, Datum};
use mdproxy_core::ovsdb::rpc::RpcError;
use mdproxy_core::ovsdb::transact::{parse_reply, OpResult, TransactError, SOUTHBOUND};
use mdproxy_core::provision::PortRecord;
use mdproxy_core::scope::Uuid;
use serde_json::{json, Map, Value};

/// The `Port_Binding` columns read.
const PORT_COLUMNS: [&str; 5] = ["logical_port", "type", "mac", "external_ids", "datapath"];

/// Step 1: the chassis' row.
pub fn select_chassis(chassis: &str) -> Value {
    json!([
        SOUTHBOUND,
        {"op": "select", "table": "Chassis", "where": [["name", "==", chassis]], "columns": ["_uuid"]},
    ])
}

/// Reads the answer to [`select_chassis`]: the row's uuid, `None` when it is not there.
pub fn parse_chassis(reply: Result<&Value, &RpcError>) -> Result<Option<Uuid>, String> {
    let results = parse_reply(1, reply).map_err(|e| e.to_string())?;
    Ok(rows(&results, 0)?.first().and_then(|r| uuid(r, "_uuid")))
}

/// Step 2: the ports bound to chassis row `me` (a single-element set is written as its atom,
/// RFC 7047 §5.1), and `nb_cfg`.
pub fn select_bound(me: Uuid) -> Value {
    let me = json!(["uuid", me.to_string()]);
    json!([
        SOUTHBOUND,
        {"op": "select", "table": "Port_Binding", "where": [["chassis", "==", me]], "columns": PORT_COLUMNS},
        {"op": "select", "table": "Port_Binding", "where": [["additional_chassis", "includes", me]],
         "columns": PORT_COLUMNS},
        {"op": "select", "table": "SB_Global", "where": [], "columns": ["nb_cfg"]},
    ])
}

/// The rows of the ports bound here and `nb_cfg`, from the answer to [`select_bound`].
pub struct Bound {
    rows: Vec<Map<String, Value>>,
    nb_cfg: i64,
    /// What the `chassis == me` select returned, as it returned it (for [`wait_bound`]).
    by_chassis: Vec<Map<String, Value>>,
}

impl Bound {
    /// The datapaths the ports bound here are on, each once.
    pub fn datapaths(&self) -> Vec<Uuid> {
        let mut d: Vec<Uuid> = self
            .rows
            .iter()
            .filter_map(|r| uuid(r, "datapath"))
            .collect();
        d.sort();
        d.dedup();
        d
    }
}

/// Reads the answer to [`select_bound`].
pub fn parse_bound(reply: Result<&Value, &RpcError>) -> Result<Bound, String> {
    let results = parse_reply(3, reply).map_err(|e| e.to_string())?;
    let by_chassis = rows(&results, 0)?.to_vec();
    let mut bound = by_chassis.clone();
    for r in rows(&results, 1)? {
        // Bound through both columns (a live migration to here, or a dual-chassis port): once.
        if !bound
            .iter()
            .any(|b| b.get("logical_port") == r.get("logical_port"))
        {
            bound.push(r.clone());
        }
    }
    let nb_cfg = rows(&results, 2)?
        .first()
        .and_then(|r| match col(r, "nb_cfg")?.scalar()? {
            Atom::Integer(i) => Some(*i),
            _ => None,
        })
        .unwrap_or(0);
    Ok(Bound {
        rows: bound,
        nb_cfg,
        by_chassis,
    })
}

/// Step 3: for each of `datapaths`, its binding and its localports.
pub fn select_networks(datapaths: &[Uuid]) -> Value {
    let mut ops = vec![json!(SOUTHBOUND)];
    for dp in datapaths {
        let dp = json!(["uuid", dp.to_string()]);
        ops.push(
            json!({"op": "select", "table": "Datapath_Binding", "where": [["_uuid", "==", dp]],
                        "columns": ["_uuid", "external_ids"]}),
        );
        ops.push(json!({"op": "select", "table": "Port_Binding",
                        "where": [["datapath", "==", dp], ["type", "==", "localport"]],
                        "columns": PORT_COLUMNS}));
    }
    Value::Array(ops)
}

/// A long poll: a transaction of one `wait` (RFC 7047 §5.2.6) that ovsdb-server holds until
/// the ports bound to chassis row `me` differ from `rows` (what step 2 read), or `timeout_ms`
/// passed. A port binding here wakes the node at once, rather than at its next poll.
pub fn wait_bound(me: Uuid, rows: &[Map<String, Value>], timeout_ms: u64) -> Value {
    let me = json!(["uuid", me.to_string()]);
    json!([
        SOUTHBOUND,
        {"op": "wait", "timeout": timeout_ms, "table": "Port_Binding",
         "where": [["chassis", "==", me]], "columns": PORT_COLUMNS, "until": "!=", "rows": rows},
    ])
}

/// Reads the answer to [`wait_bound`]: `true` when the ports changed, `false` when the wait
/// timed out (ovsdb-server's `timed out` error).
pub fn parse_wait(reply: Result<&Value, &RpcError>) -> Result<bool, String> {
    match parse_reply(1, reply) {
        Ok(_) => Ok(true),
        Err(TransactError::Op { error, .. }) if error == "timed out" => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// What the Southbound says: the ports, `nb_cfg`, and whether the chassis exists.
pub struct Southbound {
    pub ports: Vec<PortRecord>,
    pub nb_cfg: i64,
    /// This chassis' row and what [`wait_bound`] waits to change; `None` without the row.
    pub bound_here: Option<(Uuid, Vec<Map<String, Value>>)>,
    /// The chassis has its `Chassis` row. Without it nothing reads as bound here, which is
    /// no reason to tear down what is served (ovn-controller may not have registered yet).
    pub chassis_found: bool,
}

impl Southbound {
    /// What a chassis without its `Chassis` row needs: nothing yet.
    pub fn unknown_chassis() -> Southbound {
        Southbound {
            ports: Vec::new(),
            nb_cfg: 0,
            bound_here: None,
            chassis_found: false,
        }
    }
}

/// Reads the answer to [`select_networks`] for `datapaths`, with `bound` from step 2 for
/// chassis row `me`: the bound ports and the localports of every datapath that is a Neutron
/// network.
pub fn parse_networks(
    me: Uuid,
    bound: Bound,
    datapaths: &[Uuid],
    reply: Result<&Value, &RpcError>,
) -> Result<Southbound, String> {
    let results = parse_reply(2 * datapaths.len(), reply).map_err(|e| e.to_string())?;
    let mut networks: Vec<(Uuid, Uuid)> = Vec::new();
    let mut localports = Vec::new();
    for i in 0..datapaths.len() {
        let Some(dp) = rows(&results, 2 * i)?.first() else {
            continue;
        };
        let name = text(col(dp, "external_ids").as_ref().and_then(|d| d.get("name")));
        let Some(net) = name
            .strip_prefix("neutron-")
            .and_then(|n| Uuid::parse(n.as_bytes()))
        else {
            // Not a Neutron network (a router's datapath): nothing to serve on it.
            continue;
        };
        if let Some(id) = uuid(dp, "_uuid") {
            networks.push((id, net));
        }
        localports.extend(rows(&results, 2 * i + 1)?.iter().cloned());
    }
    let record = |r: &Map<String, Value>, bound_here: bool| {
        let dp = uuid(r, "datapath")?;
        let &(_, network) = networks.iter().find(|(d, _)| *d == dp)?;
        let ids = col(r, "external_ids");
        Some(PortRecord {
            network,
            kind: text(col(r, "type").as_ref().and_then(Datum::scalar)),
            bound_here,
            logical_port: text(col(r, "logical_port").as_ref().and_then(Datum::scalar)),
            mac: text(col(r, "mac").as_ref().and_then(|d| d.atoms().first())),
            cidrs: text(ids.as_ref().and_then(|d| d.get("neutron:cidrs"))),
        })
    };
    let mut ports: Vec<PortRecord> = bound.rows.iter().filter_map(|r| record(r, true)).collect();
    ports.extend(localports.iter().filter_map(|r| record(r, false)));
    Ok(Southbound {
        ports,
        nb_cfg: bound.nb_cfg,
        bound_here: Some((me, bound.by_chassis)),
        chassis_found: true,
    })
}

fn rows(results: &[OpResult], i: usize) -> Result<&[Map<String, Value>], String> {
    match results.get(i) {
        Some(OpResult::Rows(r)) => Ok(r.as_slice()),
        _ => Err("malformed Southbound answer".to_owned()),
    }
}

fn col(row: &Map<String, Value>, c: &str) -> Option<Datum> {
    row.get(c).and_then(|v| Datum::from_json(v).ok())
}

fn uuid(row: &Map<String, Value>, c: &str) -> Option<Uuid> {
    col(row, c)?.scalar()?.as_uuid()
}

fn text(d: Option<&Atom>) -> String {
    d.and_then(Atom::as_str).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "11111111-0000-4000-8000-000000000001";
    const DP: &str = "22222222-0000-4000-8000-000000000001";
    const ROUTER_DP: &str = "22222222-0000-4000-8000-000000000002";
    const NET: &str = "33333333-0000-4000-8000-000000000001";

    fn port(lp: &str, kind: &str, dp: &str, mac: &str, cidrs: &str) -> Value {
        json!({
            "logical_port": lp, "type": kind, "mac": mac, "datapath": ["uuid", dp],
            "external_ids": ["map", [["neutron:cidrs", cidrs]]],
        })
    }

    fn id(s: &str) -> Uuid {
        Uuid::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn ports_as_the_planner_reads_them() {
        assert_eq!(
            parse_chassis(Ok(&json!([{"rows": [{"_uuid": ["uuid", ME]}]}]))),
            Ok(Some(id(ME)))
        );
        assert_eq!(parse_chassis(Ok(&json!([{"rows": []}]))), Ok(None));
        // Where clauses name this chassis' row, as an atom.
        let q = select_bound(id(ME));
        assert_eq!(q[1]["where"][0], json!(["chassis", "==", ["uuid", ME]]));
        assert_eq!(q[2]["where"][0][1], "includes");

        let vm1 = port("vm-1", "", DP, "fa:16:3e:00:00:01 10.0.0.5", "10.0.0.5/24");
        let vm2 = port("vm-2", "", DP, "fa:16:3e:00:00:02 10.0.0.6", "10.0.0.6/24");
        let patch = port("rp", "patch", ROUTER_DP, "router", "");
        let reply = json!([
            {"rows": [vm1.clone(), patch]},
            // vm-1 in both columns, vm-2 a live migration's target (additional_chassis).
            {"rows": [vm1, vm2]},
            {"rows": [{"nb_cfg": 4}]},
        ]);
        let bound = parse_bound(Ok(&reply)).unwrap();
        let dps = bound.datapaths();
        assert_eq!(dps, [id(DP), id(ROUTER_DP)]);
        let q = select_networks(&dps);
        assert_eq!(q.as_array().map(Vec::len), Some(5));
        assert_eq!(q[2]["where"][1], json!(["type", "==", "localport"]));

        let reply = json!([
            {"rows": [{"_uuid": ["uuid", DP], "external_ids": ["map", [["name", format!("neutron-{NET}")]]]}]},
            {"rows": [port("lp", "localport", DP, "fa:16:3e:00:00:03 10.0.0.2", "10.0.0.2/24")]},
            // Not a Neutron network (a router's datapath): its ports are skipped.
            {"rows": [{"_uuid": ["uuid", ROUTER_DP], "external_ids": ["map", [["name", "lr"]]]}]},
            {"rows": []},
        ]);
        let south = parse_networks(id(ME), bound, &dps, Ok(&reply)).unwrap();
        assert_eq!(south.nb_cfg, 4);
        assert!(south.chassis_found);
        let here: Vec<(&str, bool)> = south
            .ports
            .iter()
            .map(|p| (p.logical_port.as_str(), p.bound_here))
            .collect();
        assert_eq!(here, [("vm-1", true), ("vm-2", true), ("lp", false)]);
        assert_eq!(south.ports[2].kind, "localport");
        assert_eq!(south.ports[2].mac, "fa:16:3e:00:00:03 10.0.0.2");
        assert_eq!(south.ports[2].cidrs, "10.0.0.2/24");
        assert!(south.ports.iter().all(|p| p.network.to_string() == NET));
        let short = json!([{"rows": []}]);
        let bound = parse_bound(Ok(&json!([{"rows": []}, {"rows": []}, {"rows": []}]))).unwrap();
        assert!(parse_networks(id(ME), bound, &dps, Ok(&short)).is_err());
        assert!(parse_bound(Ok(&short)).is_err());
    }

    #[test]
    fn a_wait_that_times_out_is_no_change() {
        let q = wait_bound(id(ME), &[], 500);
        assert_eq!(q[1]["until"], "!=");
        assert_eq!(q[1]["timeout"], 500);
        assert_eq!(parse_wait(Ok(&json!([{}]))), Ok(true));
        let timed_out = json!([{"error": "timed out", "details": "..."}]);
        assert_eq!(parse_wait(Ok(&timed_out)), Ok(false));
        let other = json!([{"error": "syntax error"}]);
        assert!(parse_wait(Ok(&other)).is_err());
    }
}
