//! The `transact` requests (RFC 7047 §4.1.3, operations §5.2) the node sends, and the parsing
//! of their replies. Two databases are written:
//!
//! - the chassis' local `Open_vSwitch` database, where the metadata port is plugged as
//!   `neutron-ovn-metadata-agent` plugs it: a `Port` and its `Interface`, both named
//!   `tap<first 10 of the network uuid>0`, the interface carrying
//!   `external_ids:iface-id=<the network's metadata localport>` so `ovn-controller` binds it;
//!   and read, to see what is already plugged ([`select_ovs`], [`parse_ovs`]);
//! - the Southbound's `Chassis_Private` row of this chassis, where the agent registers
//!   (`neutron:ovn-metadata-id`) and reports itself alive (`neutron:ovn-metadata-sb-cfg`,
//!   following `SB_Global.nb_cfg`) for `openstack network agent list`.
//!
//! Each builder returns the `params` of a `transact` request (the database name, then the
//! operations); [`parse_reply`] turns the `result` into one [`OpResult`] per operation or a
//! typed error. Nothing here sends anything: a driver frames the request with
//! [`super::rpc::request`] and feeds the reply back.
//!
//! Every write is conditional on the row it changes existing: a `mutate` whose `where`
//! matches nothing reports `count: 0`, which [`expect_counts`] turns into
//! [`TransactError::NoRow`] (the bridge or the chassis is not there).

use std::fmt;

use serde_json::{json, Value};

use super::datum::{Atom, Datum};
use super::rpc::RpcError;
use crate::scope::Uuid;

/// The local database's name.
pub const OPEN_VSWITCH: &str = "Open_vSwitch";
/// The Southbound database's name.
pub const SOUTHBOUND: &str = "OVN_Southbound";
/// The Chassis_Private key of the agent's id.
pub const METADATA_ID_KEY: &str = "neutron:ovn-metadata-id";
/// The Chassis_Private key that follows `SB_Global.nb_cfg`.
pub const SB_CFG_KEY: &str = "neutron:ovn-metadata-sb-cfg";
/// The bridge ovn-controller uses when `external_ids:ovn-bridge` is not set.
pub const DEFAULT_BRIDGE: &str = "br-int";

/// Why a transaction did not do what it was sent for.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TransactError {
    /// The server refused the request as a whole (JSON-RPC `error`: unknown database, …).
    Rpc(String),
    /// The reply is not an array of operation results.
    Malformed(&'static str),
    /// Operation `index` failed (`constraint violation`, `referential integrity violation`,
    /// …); the transaction was not committed.
    Op {
        /// Its position in the request (the commit's own error has `index == ops`).
        index: usize,
        /// The `error` member.
        error: String,
        /// The `details` member, if any.
        details: Option<String>,
    },
    /// A `mutate` matched no row: what it was looking for (`bridge br-int`, `Chassis_Private
    /// row chassis-1`) does not exist.
    NoRow(String),
}

impl fmt::Display for TransactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransactError::Rpc(e) => write!(f, "transaction refused: {e}"),
            TransactError::Malformed(what) => write!(f, "malformed transaction reply: {what}"),
            TransactError::Op {
                index,
                error,
                details,
            } => {
                write!(f, "transaction operation {index} failed: {error}")?;
                match details {
                    Some(d) => write!(f, " ({d})"),
                    None => Ok(()),
                }
            }
            TransactError::NoRow(what) => write!(f, "no such row: {what}"),
        }
    }
}

impl std::error::Error for TransactError {}

/// One operation's result.
#[derive(Clone, Debug, PartialEq)]
pub enum OpResult {
    /// `insert`: the new row's uuid.
    Inserted(Uuid),
    /// `mutate`, `update`, `delete`: how many rows matched.
    Count(u64),
    /// `select`: the rows, as JSON objects by column.
    Rows(Vec<serde_json::Map<String, Value>>),
    /// An operation with an empty result (`comment`, `wait`, …).
    Empty,
}

/// Reads a `transact` reply for a request of `ops` operations: every operation's result, or
/// the first error (RFC 7047 §4.1.3: an error object in the place of the failing operation,
/// or one more element when the commit itself failed).
pub fn parse_reply(
    ops: usize,
    reply: Result<&Value, &RpcError>,
) -> Result<Vec<OpResult>, TransactError> {
    let reply = reply.map_err(|e| TransactError::Rpc(e.to_string()))?;
    let items = reply
        .as_array()
        .ok_or(TransactError::Malformed("not an array"))?;
    let mut results = Vec::with_capacity(ops);
    for (index, item) in items.iter().enumerate() {
        let Value::Object(o) = item else {
            // ovsdb-server leaves `null` for the operations after a failed one; the error
            // itself comes first, so reaching one means the error was elsewhere.
            if item.is_null() && index < ops {
                continue;
            }
            return Err(TransactError::Malformed(
                "an operation result is not an object",
            ));
        };
        if let Some(error) = o.get("error").filter(|e| !e.is_null()) {
            return Err(TransactError::Op {
                index,
                error: error
                    .as_str()
                    .map_or_else(|| error.to_string(), str::to_owned),
                details: o.get("details").and_then(Value::as_str).map(str::to_owned),
            });
        }
        if index >= ops {
            return Err(TransactError::Malformed("more results than operations"));
        }
        results.push(op_result(o)?);
    }
    if results.len() != ops {
        return Err(TransactError::Malformed("fewer results than operations"));
    }
    Ok(results)
}

fn op_result(o: &serde_json::Map<String, Value>) -> Result<OpResult, TransactError> {
    if let Some(uuid) = o.get("uuid") {
        return match Atom::from_json(uuid) {
            Ok(Atom::Uuid(u)) => Ok(OpResult::Inserted(u)),
            _ => Err(TransactError::Malformed("insert result without a uuid")),
        };
    }
    if let Some(count) = o.get("count") {
        return count
            .as_u64()
            .map(OpResult::Count)
            .ok_or(TransactError::Malformed("count is not a number"));
    }
    if let Some(rows) = o.get("rows") {
        let rows = rows
            .as_array()
            .ok_or(TransactError::Malformed("rows is not an array"))?;
        return rows
            .iter()
            .map(|r| match r {
                Value::Object(o) => Ok(o.clone()),
                _ => Err(TransactError::Malformed("a row is not an object")),
            })
            .collect::<Result<_, _>>()
            .map(OpResult::Rows);
    }
    Ok(OpResult::Empty)
}

/// Checks that the `mutate` at each of `indexes` matched a row; `what` names the row sought
/// for the error.
pub fn expect_counts(
    results: &[OpResult],
    indexes: &[usize],
    what: &str,
) -> Result<(), TransactError> {
    for &i in indexes {
        match results.get(i) {
            Some(OpResult::Count(n)) if *n > 0 => {}
            Some(OpResult::Count(_)) => return Err(TransactError::NoRow(what.to_owned())),
            _ => return Err(TransactError::Malformed("expected a count")),
        }
    }
    Ok(())
}

fn string_map(pairs: &[(&str, &str)]) -> Value {
    Datum::Map(
        pairs
            .iter()
            .map(|(k, v)| (Atom::String((*k).into()), Atom::String((*v).into())))
            .collect(),
    )
    .to_json()
}

/// A request plugging port `name` into `bridge`, its interface tagged
/// `external_ids:iface-id=<iface_id>` (what `ovs-vsctl add-port BRIDGE NAME -- set Interface
/// NAME external_ids:iface-id=ID` does, in one transaction). Operation 2 is the bridge's
/// `mutate`: check it with [`check_add_port`]. A port of that name already present anywhere
/// fails the transaction (`Port` and `Interface` names are unique indexes).
pub fn add_port(bridge: &str, name: &str, iface_id: &str) -> Value {
    json!([
        OPEN_VSWITCH,
        {
            "op": "insert",
            "table": "Interface",
            "uuid-name": "iface",
            "row": {"name": name, "external_ids": string_map(&[("iface-id", iface_id)])},
        },
        {
            "op": "insert",
            "table": "Port",
            "uuid-name": "port",
            "row": {"name": name, "interfaces": ["named-uuid", "iface"]},
        },
        {
            "op": "mutate",
            "table": "Bridge",
            "where": [["name", "==", bridge]],
            "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]],
        },
    ])
}

/// The new Port's uuid, from the reply to [`add_port`].
pub fn check_add_port(
    reply: Result<&Value, &RpcError>,
    bridge: &str,
) -> Result<Uuid, TransactError> {
    let results = parse_reply(3, reply)?;
    expect_counts(&results, &[2], &format!("bridge {bridge}"))?;
    match results.get(1) {
        Some(OpResult::Inserted(u)) => Ok(*u),
        _ => Err(TransactError::Malformed("the Port insert returned no uuid")),
    }
}

/// A request unplugging the Port row `port` from whichever bridge holds it (the Port and its
/// Interface are not root rows: once no bridge refers to them, the server deletes them).
pub fn delete_port(port: Uuid) -> Value {
    let port = Atom::Uuid(port).to_json();
    json!([
        OPEN_VSWITCH,
        {
            "op": "mutate",
            "table": "Bridge",
            "where": [["ports", "includes", ["set", [port.clone()]]]],
            "mutations": [["ports", "delete", ["set", [port]]]],
        },
    ])
}

/// Checks the reply to [`delete_port`]; a port no bridge held any more is not an error (it is
/// gone, which is what was asked).
pub fn check_delete_port(reply: Result<&Value, &RpcError>) -> Result<(), TransactError> {
    parse_reply(1, reply).map(|_| ())
}

/// A request setting `external_ids:iface-id` of the Interface row `iface` (a port that is
/// plugged but tagged for another localport: the network's metadata port was recreated).
pub fn set_iface_id(iface: Uuid, iface_id: &str) -> Value {
    json!([
        OPEN_VSWITCH,
        {
            "op": "mutate",
            "table": "Interface",
            "where": [["_uuid", "==", Atom::Uuid(iface).to_json()]],
            "mutations": [
                ["external_ids", "delete", ["set", ["iface-id"]]],
                ["external_ids", "insert", string_map(&[("iface-id", iface_id)])],
            ],
        },
    ])
}

/// Checks the reply to [`set_iface_id`].
pub fn check_set_iface_id(reply: Result<&Value, &RpcError>) -> Result<(), TransactError> {
    let results = parse_reply(1, reply)?;
    expect_counts(&results, &[0], "Interface row")
}

/// A request registering the metadata agent on `chassis`' `Chassis_Private` row:
/// `external_ids:neutron:ovn-metadata-id=<agent_id>`, added only where the key is absent (as
/// the anchor's `db_add`: an id already there is kept), and
/// `external_ids:neutron:ovn-metadata-sb-cfg=<nb_cfg>`, replaced (as its `db_set`).
pub fn register_agent(chassis: &str, agent_id: Uuid, nb_cfg: i64) -> Value {
    let cfg = nb_cfg.to_string();
    let id = agent_id.to_string();
    json!([
        SOUTHBOUND,
        {
            "op": "mutate",
            "table": "Chassis_Private",
            "where": [["name", "==", chassis]],
            "mutations": [
                ["external_ids", "insert", string_map(&[(METADATA_ID_KEY, &id)])],
                ["external_ids", "delete", ["set", [SB_CFG_KEY]]],
                ["external_ids", "insert", string_map(&[(SB_CFG_KEY, &cfg)])],
            ],
        },
    ])
}

/// A request following `SB_Global.nb_cfg` alone (the id is registered once).
pub fn report_sb_cfg(chassis: &str, nb_cfg: i64) -> Value {
    json!([
        SOUTHBOUND,
        {
            "op": "mutate",
            "table": "Chassis_Private",
            "where": [["name", "==", chassis]],
            "mutations": [
                ["external_ids", "delete", ["set", [SB_CFG_KEY]]],
                ["external_ids", "insert", string_map(&[(SB_CFG_KEY, &nb_cfg.to_string())])],
            ],
        },
    ])
}

/// Checks the reply to [`register_agent`] or [`report_sb_cfg`]: the chassis' row must exist
/// (ovn-controller creates it when it starts).
pub fn check_chassis_mutate(
    reply: Result<&Value, &RpcError>,
    chassis: &str,
) -> Result<(), TransactError> {
    let results = parse_reply(1, reply)?;
    expect_counts(&results, &[0], &format!("Chassis_Private row {chassis}"))
}

/// One `Port` of the local database, with its (first) interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvsPort {
    /// The Port row.
    pub uuid: Uuid,
    /// `name`.
    pub name: String,
    /// The bridge that holds it, if any.
    pub bridge: Option<String>,
    /// Its Interface row of the same name, if any.
    pub iface: Option<Uuid>,
    /// That interface's `external_ids:iface-id`.
    pub iface_id: Option<String>,
}

/// One `Bridge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvsBridge {
    /// `name`.
    pub name: String,
    /// `datapath_type` (`""` is the kernel's `system`; `netdev` is the userspace datapath).
    pub datapath_type: String,
}

/// What the local database says, as far as provisioning cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OvsState {
    /// `external_ids:ovn-bridge` of the Open_vSwitch row, else [`DEFAULT_BRIDGE`].
    pub integration_bridge: String,
    /// `external_ids:system-id`, the chassis name.
    pub system_id: Option<String>,
    /// Every bridge.
    pub bridges: Vec<OvsBridge>,
    /// Every port.
    pub ports: Vec<OvsPort>,
}

impl OvsState {
    /// The integration bridge's row, if it exists.
    pub fn integration(&self) -> Option<&OvsBridge> {
        self.bridges
            .iter()
            .find(|b| b.name == self.integration_bridge)
    }
}

/// A request reading [`OvsState`]: four `select`s in one (consistent) transaction.
pub fn select_ovs() -> Value {
    json!([
        OPEN_VSWITCH,
        {"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["external_ids"]},
        {"op": "select", "table": "Bridge", "where": [], "columns": ["name", "datapath_type", "ports"]},
        {"op": "select", "table": "Port", "where": [], "columns": ["_uuid", "name", "interfaces"]},
        {"op": "select", "table": "Interface", "where": [], "columns": ["_uuid", "name", "external_ids"]},
    ])
}

/// Reads the reply to [`select_ovs`].
pub fn parse_ovs(reply: Result<&Value, &RpcError>) -> Result<OvsState, TransactError> {
    let results = parse_reply(4, reply)?;
    let rows = |i: usize| match results.get(i) {
        Some(OpResult::Rows(r)) => Ok(r.as_slice()),
        _ => Err(TransactError::Malformed("a select returned no rows")),
    };
    let datum = |row: &serde_json::Map<String, Value>, col: &str| {
        row.get(col)
            .map(Datum::from_json)
            .transpose()
            .map_err(|_| TransactError::Malformed("a column is not an OVSDB value"))
    };
    let text = |d: &Option<Datum>| {
        d.as_ref()
            .and_then(Datum::scalar)
            .and_then(Atom::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut state = OvsState {
        integration_bridge: DEFAULT_BRIDGE.to_owned(),
        ..OvsState::default()
    };
    if let Some(row) = rows(0)?.first() {
        let ids = datum(row, "external_ids")?;
        let get = |k: &str| ids.as_ref().and_then(|d| d.get(k)).and_then(Atom::as_str);
        if let Some(b) = get("ovn-bridge").filter(|b| !b.is_empty()) {
            state.integration_bridge = b.to_owned();
        }
        state.system_id = get("system-id").map(str::to_owned);
    }
    let mut held: Vec<(Uuid, String)> = Vec::new();
    for row in rows(1)? {
        let name = text(&datum(row, "name")?);
        for port in datum(row, "ports")?.iter().flat_map(|d| d.atoms().to_vec()) {
            if let Some(u) = port.as_uuid() {
                held.push((u, name.clone()));
            }
        }
        state.bridges.push(OvsBridge {
            name,
            datapath_type: text(&datum(row, "datapath_type")?),
        });
    }
    let mut ifaces: Vec<(Uuid, Option<String>)> = Vec::new();
    for row in rows(3)? {
        let Some(uuid) = datum(row, "_uuid")?
            .as_ref()
            .and_then(Datum::scalar)
            .and_then(Atom::as_uuid)
        else {
            return Err(TransactError::Malformed("an Interface row without _uuid"));
        };
        let ids = datum(row, "external_ids")?;
        let iface_id = ids
            .as_ref()
            .and_then(|d| d.get("iface-id"))
            .and_then(Atom::as_str)
            .map(str::to_owned);
        ifaces.push((uuid, iface_id));
    }
    for row in rows(2)? {
        let Some(uuid) = datum(row, "_uuid")?
            .as_ref()
            .and_then(Datum::scalar)
            .and_then(Atom::as_uuid)
        else {
            return Err(TransactError::Malformed("a Port row without _uuid"));
        };
        let iface = datum(row, "interfaces")?
            .as_ref()
            .and_then(|d| d.atoms().first())
            .and_then(Atom::as_uuid);
        let iface_id = iface.and_then(|i| ifaces.iter().find(|(u, _)| *u == i)?.1.clone());
        state.ports.push(OvsPort {
            uuid,
            name: text(&datum(row, "name")?),
            bridge: held
                .iter()
                .find(|(u, _)| *u == uuid)
                .map(|(_, b)| b.clone()),
            iface,
            iface_id,
        });
    }
    state.ports.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
    const U2: &str = "0d4a4f4e-1c2b-4a3d-8e9f-0a1b2c3d4e5f";

    fn uuid(s: &str) -> Uuid {
        Uuid::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn add_port_shape() {
        let p = add_port("br-int", "tapabcdef01230", "lp-1");
        assert_eq!(p[0], "Open_vSwitch");
        assert_eq!(p[1]["op"], "insert");
        assert_eq!(p[1]["table"], "Interface");
        assert_eq!(
            p[1]["row"]["external_ids"],
            json!(["map", [["iface-id", "lp-1"]]])
        );
        assert_eq!(p[2]["row"]["interfaces"], json!(["named-uuid", "iface"]));
        assert_eq!(p[3]["where"], json!([["name", "==", "br-int"]]));
        assert_eq!(
            p[3]["mutations"],
            json!([["ports", "insert", ["set", [["named-uuid", "port"]]]]])
        );
    }

    #[test]
    fn add_port_replies() {
        let ok = json!([{"uuid": ["uuid", U1]}, {"uuid": ["uuid", U2]}, {"count": 1}]);
        assert_eq!(check_add_port(Ok(&ok), "br-int"), Ok(uuid(U2)));
        let no_bridge = json!([{"uuid": ["uuid", U1]}, {"uuid": ["uuid", U2]}, {"count": 0}]);
        assert_eq!(
            check_add_port(Ok(&no_bridge), "br-x"),
            Err(TransactError::NoRow("bridge br-x".into()))
        );
        // RFC 7047 §4.1.3: the failing operation's place holds the error; the commit's own
        // error is one element more.
        let dup = json!([{"uuid": ["uuid", U1]}, {"error": "constraint violation", "details": "Transaction causes multiple rows in \"Port\" table to have identical values"}, null]);
        let Err(TransactError::Op {
            index: 1,
            error,
            details: Some(_),
        }) = check_add_port(Ok(&dup), "br-int")
        else {
            panic!("{:?}", check_add_port(Ok(&dup), "br-int"))
        };
        assert_eq!(error, "constraint violation");
        let commit = json!([{"uuid": ["uuid", U1]}, {"uuid": ["uuid", U2]}, {"count": 1}, {"error": "referential integrity violation"}]);
        assert!(matches!(
            check_add_port(Ok(&commit), "br-int"),
            Err(TransactError::Op { index: 3, .. })
        ));
        let rpc = RpcError {
            error: json!("unknown database"),
            details: None,
        };
        assert_eq!(
            check_add_port(Err(&rpc), "br-int"),
            Err(TransactError::Rpc("unknown database".into()))
        );
        for bad in [
            json!({}),
            json!([{"uuid": 1}, {}, {}]),
            json!([{"count": 1}]),
            json!([1, 2, 3]),
        ] {
            assert!(check_add_port(Ok(&bad), "br-int").is_err(), "{bad}");
        }
    }

    #[test]
    fn delete_and_retag_shapes() {
        let d = delete_port(uuid(U1));
        assert_eq!(
            d[1]["where"],
            json!([["ports", "includes", ["set", [["uuid", U1]]]]])
        );
        assert_eq!(
            d[1]["mutations"],
            json!([["ports", "delete", ["set", [["uuid", U1]]]]])
        );
        assert_eq!(check_delete_port(Ok(&json!([{"count": 0}]))), Ok(()));
        let s = set_iface_id(uuid(U2), "lp-2");
        assert_eq!(s[1]["where"], json!([["_uuid", "==", ["uuid", U2]]]));
        assert_eq!(
            s[1]["mutations"][1],
            json!(["external_ids", "insert", ["map", [["iface-id", "lp-2"]]]])
        );
        assert_eq!(check_set_iface_id(Ok(&json!([{"count": 1}]))), Ok(()));
        assert!(check_set_iface_id(Ok(&json!([{"count": 0}]))).is_err());
    }

    #[test]
    fn register_shape() {
        let r = register_agent("chassis-1", uuid(U1), 7);
        assert_eq!(r[0], "OVN_Southbound");
        assert_eq!(r[1]["table"], "Chassis_Private");
        assert_eq!(r[1]["where"], json!([["name", "==", "chassis-1"]]));
        assert_eq!(
            r[1]["mutations"],
            json!([
                [
                    "external_ids",
                    "insert",
                    ["map", [["neutron:ovn-metadata-id", U1]]]
                ],
                [
                    "external_ids",
                    "delete",
                    ["set", ["neutron:ovn-metadata-sb-cfg"]]
                ],
                [
                    "external_ids",
                    "insert",
                    ["map", [["neutron:ovn-metadata-sb-cfg", "7"]]]
                ],
            ])
        );
        assert_eq!(
            report_sb_cfg("c", 3)[1]["mutations"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert_eq!(
            check_chassis_mutate(Ok(&json!([{"count": 1}])), "c"),
            Ok(())
        );
        assert_eq!(
            check_chassis_mutate(Ok(&json!([{"count": 0}])), "c"),
            Err(TransactError::NoRow("Chassis_Private row c".into()))
        );
    }

    #[test]
    fn ovs_state() {
        let port = "11111111-1111-4111-8111-111111111111";
        let iface = "22222222-2222-4222-8222-222222222222";
        let loose = "33333333-3333-4333-8333-333333333333";
        let reply = json!([
            {"rows": [{"external_ids": ["map", [["system-id", "ch1"], ["ovn-bridge", "br-x"]]]}]},
            {"rows": [{"name": "br-x", "datapath_type": "netdev", "ports": ["set", [["uuid", port]]]}]},
            {"rows": [
                {"_uuid": ["uuid", port], "name": "tapabc0", "interfaces": ["uuid", iface]},
                {"_uuid": ["uuid", loose], "name": "loose", "interfaces": ["set", []]},
            ]},
            {"rows": [{"_uuid": ["uuid", iface], "name": "tapabc0", "external_ids": ["map", [["iface-id", "lp"]]]}]},
        ]);
        let s = parse_ovs(Ok(&reply)).unwrap();
        assert_eq!(s.integration_bridge, "br-x");
        assert_eq!(s.system_id.as_deref(), Some("ch1"));
        assert_eq!(
            s.integration().map(|b| b.datapath_type.as_str()),
            Some("netdev")
        );
        assert_eq!(
            s.ports,
            vec![
                OvsPort {
                    uuid: uuid(loose),
                    name: "loose".into(),
                    bridge: None,
                    iface: None,
                    iface_id: None
                },
                OvsPort {
                    uuid: uuid(port),
                    name: "tapabc0".into(),
                    bridge: Some("br-x".into()),
                    iface: Some(uuid(iface)),
                    iface_id: Some("lp".into()),
                },
            ]
        );
        let empty = json!([{"rows": [{"external_ids": ["map", []]}]}, {"rows": []}, {"rows": []}, {"rows": []}]);
        assert_eq!(parse_ovs(Ok(&empty)).unwrap().integration_bridge, "br-int");
        assert!(parse_ovs(Ok(&json!([{"rows": []}]))).is_err());
    }
}
