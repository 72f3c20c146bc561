//! What the Southbound says this chassis needs, read in one `select` transaction (the one-shot
//! form of what `mdproxy node` keeps in its replica): every `Port_Binding` as a
//! [`PortRecord`] (network from its datapath's `external_ids:name`, `neutron-<uuid>`; bound
//! here when `chassis` or `additional_chassis` is this chassis' row), and `SB_Global.nb_cfg`.

use mdproxy_core::ovsdb::datum::{Atom, Datum};
use mdproxy_core::ovsdb::rpc::RpcError;
use mdproxy_core::ovsdb::transact::{parse_reply, OpResult, SOUTHBOUND};
use mdproxy_core::provision::PortRecord;
use mdproxy_core::scope::Uuid;
use serde_json::{json, Map, Value};

/// The request.
pub fn select(chassis: &str) -> Value {
    json!([
        SOUTHBOUND,
        {"op": "select", "table": "Chassis", "where": [["name", "==", chassis]], "columns": ["_uuid"]},
        {"op": "select", "table": "Datapath_Binding", "where": [], "columns": ["_uuid", "external_ids"]},
        {"op": "select", "table": "Port_Binding", "where": [],
         "columns": ["logical_port", "type", "chassis", "additional_chassis", "mac", "external_ids", "datapath"]},
        {"op": "select", "table": "SB_Global", "where": [], "columns": ["nb_cfg"]},
    ])
}

/// What the answer says: the ports, `nb_cfg`, and whether the chassis exists.
pub struct Southbound {
    pub ports: Vec<PortRecord>,
    pub nb_cfg: i64,
    /// The chassis has its `Chassis` row. Without it nothing reads as bound here, which is
    /// no reason to tear down what is served (ovn-controller may not have registered yet).
    pub chassis_found: bool,
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

/// Reads the answer to [`select`].
pub fn parse(reply: Result<&Value, &RpcError>) -> Result<Southbound, String> {
    let results = parse_reply(4, reply).map_err(|e| e.to_string())?;
    let rows = |i: usize| match results.get(i) {
        Some(OpResult::Rows(r)) => Ok(r.as_slice()),
        _ => Err("malformed Southbound answer".to_owned()),
    };
    let me = rows(0)?.first().and_then(|r| uuid(r, "_uuid"));
    let networks: Vec<(Uuid, Uuid)> = rows(1)?
        .iter()
        .filter_map(|r| {
            let name = text(col(r, "external_ids")?.get("name"));
            let net = Uuid::parse(name.strip_prefix("neutron-")?.as_bytes())?;
            Some((uuid(r, "_uuid")?, net))
        })
        .collect();
    let mut ports = Vec::new();
    for r in rows(2)? {
        let Some(dp) = uuid(r, "datapath") else {
            continue;
        };
        let Some(&(_, network)) = networks.iter().find(|(d, _)| *d == dp) else {
            continue;
        };
        let on = |c: &str| {
            col(r, c).is_some_and(|d| {
                d.atoms()
                    .iter()
                    .any(|a| a.as_uuid().is_some() && a.as_uuid() == me)
            })
        };
        let ids = col(r, "external_ids");
        ports.push(PortRecord {
            network,
            kind: text(col(r, "type").as_ref().and_then(Datum::scalar)),
            bound_here: me.is_some() && (on("chassis") || on("additional_chassis")),
            logical_port: text(col(r, "logical_port").as_ref().and_then(Datum::scalar)),
            mac: text(col(r, "mac").as_ref().and_then(|d| d.atoms().first())),
            cidrs: text(ids.as_ref().and_then(|d| d.get("neutron:cidrs"))),
        });
    }
    let nb_cfg = rows(3)?
        .first()
        .and_then(|r| match col(r, "nb_cfg")?.scalar()? {
            Atom::Integer(i) => Some(*i),
            _ => None,
        })
        .unwrap_or(0);
    Ok(Southbound {
        ports,
        nb_cfg,
        chassis_found: me.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "11111111-0000-4000-8000-000000000001";
    const OTHER: &str = "11111111-0000-4000-8000-000000000002";
    const DP: &str = "22222222-0000-4000-8000-000000000001";
    const NET: &str = "33333333-0000-4000-8000-000000000001";

    fn port(
        lp: &str,
        kind: &str,
        chassis: Value,
        additional: Value,
        mac: &str,
        cidrs: &str,
    ) -> Value {
        json!({
            "logical_port": lp, "type": kind, "chassis": chassis, "additional_chassis": additional,
            "mac": mac, "datapath": ["uuid", DP],
            "external_ids": ["map", [["neutron:cidrs", cidrs]]],
        })
    }

    #[test]
    fn ports_as_the_planner_reads_them() {
        let none = json!(["set", []]);
        let reply = json!([
            {"rows": [{"_uuid": ["uuid", ME]}]},
            {"rows": [
                {"_uuid": ["uuid", DP], "external_ids": ["map", [["name", format!("neutron-{NET}")]]]},
                // Not a Neutron network (a router's datapath): its ports are skipped.
                {"_uuid": ["uuid", OTHER], "external_ids": ["map", [["name", "lr"]]]},
            ]},
            {"rows": [
                port("vm-1", "", json!(["uuid", OTHER]), json!(["uuid", ME]), "fa:16:3e:00:00:01 10.0.0.5", "10.0.0.5/24"),
                port("vm-2", "", json!(["uuid", OTHER]), none.clone(), "fa:16:3e:00:00:02 10.0.0.6", "10.0.0.6/24"),
                port("lp", "localport", none.clone(), none, "fa:16:3e:00:00:03 10.0.0.2", "10.0.0.2/24"),
            ]},
            {"rows": [{"nb_cfg": 4}]},
        ]);
        let south = parse(Ok(&reply)).unwrap();
        assert_eq!(south.nb_cfg, 4);
        assert!(south.chassis_found);
        let here: Vec<(&str, bool)> = south
            .ports
            .iter()
            .map(|p| (p.logical_port.as_str(), p.bound_here))
            .collect();
        // Bound here through additional_chassis (a live migration's target) counts.
        assert_eq!(here, [("vm-1", true), ("vm-2", false), ("lp", false)]);
        assert_eq!(south.ports[2].kind, "localport");
        assert_eq!(south.ports[2].mac, "fa:16:3e:00:00:03 10.0.0.2");
        assert_eq!(south.ports[2].cidrs, "10.0.0.2/24");
        assert!(south.ports.iter().all(|p| p.network.to_string() == NET));
        // The chassis not (yet) registered: nothing is bound here.
        let mut unknown = reply.clone();
        unknown[0] = json!({"rows": []});
        let unknown = parse(Ok(&unknown)).unwrap();
        assert!(unknown.ports.iter().all(|p| !p.bound_here));
        assert!(!unknown.chassis_found);
        assert!(parse(Ok(&json!([{"rows": []}]))).is_err());
    }
}
