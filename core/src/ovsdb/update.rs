//! What a monitor reports (`<table-updates2>`, the form of `update2`, `update3` and the replies
//! of `monitor_cond` and `monitor_cond_since`): for each table, for each row by UUID, one of
//! `initial`, `insert`, `modify` (the difference, see [`crate::ovsdb::datum::apply_set_diff`])
//! or `delete`.
//!
//! `{"Port_Binding": {"<uuid>": {"modify": {"chassis": ["uuid", "…"]}}}}`

use std::fmt;

use serde_json::{Map, Value};

use super::datum::{Datum, DatumError};
use crate::scope::Uuid;

/// Every table's changes in one message.
pub type TableUpdates = Vec<TableUpdate>;

/// One table's changes.
#[derive(Clone, Debug, PartialEq)]
pub struct TableUpdate {
    /// The table's name.
    pub table: Box<str>,
    /// The rows that changed.
    pub rows: Vec<RowUpdate>,
}

/// One row's change.
#[derive(Clone, Debug, PartialEq)]
pub struct RowUpdate {
    /// The row's `_uuid`.
    pub uuid: Uuid,
    /// What happened to it.
    pub op: RowOp,
}

/// The columns of a row, as reported (only those monitored; in `Modify` only those changed).
pub type Columns = Vec<(Box<str>, Datum)>;

/// What happened to a row.
#[derive(Clone, Debug, PartialEq)]
pub enum RowOp {
    /// Part of the monitor's initial contents: the whole row.
    Initial(Columns),
    /// A new row: the whole row.
    Insert(Columns),
    /// Changed columns: the new value of a scalar column, the difference for a set or map.
    Modify(Columns),
    /// The row is gone.
    Delete,
}

/// Why a message's `<table-updates2>` could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateError {
    /// Not the shape RFC 7047 and ovsdb-server(7) give.
    Malformed(&'static str),
    /// A row key that is not a UUID.
    BadRowUuid(String),
    /// A column value that is not a datum.
    Datum(String, DatumError),
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::Malformed(what) => write!(f, "malformed table update: {what}"),
            UpdateError::BadRowUuid(s) => {
                write!(f, "malformed table update: row {s:?} is not a uuid")
            }
            UpdateError::Datum(column, why) => write!(f, "column {column}: {why}"),
        }
    }
}

/// Reads a `<table-updates2>` object.
pub fn parse_table_updates2(v: &Value) -> Result<TableUpdates, UpdateError> {
    let tables = v
        .as_object()
        .ok_or(UpdateError::Malformed("not an object"))?;
    tables
        .iter()
        .map(|(table, rows)| {
            let rows = rows
                .as_object()
                .ok_or(UpdateError::Malformed("table is not an object"))?;
            let rows = rows
                .iter()
                .map(|(uuid, change)| parse_row(uuid, change))
                .collect::<Result<_, _>>()?;
            Ok(TableUpdate {
                table: table.as_str().into(),
                rows,
            })
        })
        .collect()
}

fn parse_row(uuid: &str, change: &Value) -> Result<RowUpdate, UpdateError> {
    let uuid =
        Uuid::parse(uuid.as_bytes()).ok_or_else(|| UpdateError::BadRowUuid(uuid.to_owned()))?;
    let change = change
        .as_object()
        .ok_or(UpdateError::Malformed("row change is not an object"))?;
    let mut ops = change.iter();
    let (Some((kind, columns)), None) = (ops.next(), ops.next()) else {
        return Err(UpdateError::Malformed(
            "row change without exactly one operation",
        ));
    };
    let op = match kind.as_str() {
        "initial" => RowOp::Initial(parse_columns(columns)?),
        "insert" => RowOp::Insert(parse_columns(columns)?),
        "modify" => RowOp::Modify(parse_columns(columns)?),
        "delete" => RowOp::Delete,
        _ => return Err(UpdateError::Malformed("unknown row operation")),
    };
    Ok(RowUpdate { uuid, op })
}

fn parse_columns(v: &Value) -> Result<Columns, UpdateError> {
    let empty = Map::new();
    let columns = match v {
        Value::Object(o) => o,
        // ovsdb-server sends `"insert": {}` for a row whose monitored columns are all default.
        Value::Null => &empty,
        _ => return Err(UpdateError::Malformed("columns are not an object")),
    };
    columns
        .iter()
        .map(|(name, value)| {
            Datum::from_json(value)
                .map(|d| (name.as_str().into(), d))
                .map_err(|why| UpdateError::Datum(name.clone(), why))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::datum::Atom;
    use serde_json::json;

    const A: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
    const B: &str = "00000000-0000-0000-0000-00000000000b";

    #[test]
    fn every_operation() {
        let v = json!({"Port_Binding": {
            A: {"insert": {"logical_port": "p1", "mac": ["set", ["fa:16:3e:00:00:01 10.0.0.5"]]}},
            B: {"delete": null},
        }, "Chassis": {A: {"modify": {"name": "ch"}}}});
        let mut updates = parse_table_updates2(&v).unwrap();
        updates.sort_by(|a, b| a.table.cmp(&b.table));
        assert_eq!(updates[0].table.as_ref(), "Chassis");
        assert_eq!(
            updates[0].rows[0].op,
            RowOp::Modify(vec![(
                "name".into(),
                Datum::Set(vec![Atom::String("ch".into())])
            )])
        );
        let pb = &updates[1].rows;
        let delete = pb
            .iter()
            .find(|r| r.uuid == Uuid::parse(B.as_bytes()).unwrap())
            .unwrap();
        assert_eq!(delete.op, RowOp::Delete);
        let insert = pb
            .iter()
            .find(|r| r.uuid == Uuid::parse(A.as_bytes()).unwrap())
            .unwrap();
        let RowOp::Insert(columns) = &insert.op else {
            panic!("{insert:?}")
        };
        assert_eq!(columns.len(), 2);
    }

    #[test]
    fn refused() {
        for v in [
            json!([]),
            json!({"T": []}),
            json!({"T": {"nope": {"insert": {}}}}),
            json!({"T": {A: {}}}),
            json!({"T": {A: {"insert": {}, "delete": null}}}),
            json!({"T": {A: {"upsert": {}}}}),
            json!({"T": {A: {"insert": {"c": null}}}}),
        ] {
            assert!(parse_table_updates2(&v).is_err(), "{v}");
        }
    }
}
