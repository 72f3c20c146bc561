//! What a monitor reports (`<table-updates2>`, the form of `update2`, `update3` and the replies
//! of `monitor_cond` and `monitor_cond_since`): for each table, for each row by UUID, one of
//! `initial`, `insert`, `modify` (the difference, see [`crate::ovsdb::datum::apply_set_diff`])
//! or `delete`.
//!
//! `{"Port_Binding": {"<uuid>": {"modify": {"chassis": ["uuid", "…"]}}}}`

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::datum::{Datum, UuidStr};
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

/// Why a message's `<table-updates2>` could not be read: not the shape RFC 7047 and
/// ovsdb-server(7) give, a row key that is not a UUID, or a column value that is not a datum
/// (serde_json's message, which says where).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateError(pub String);

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed table update: {}", self.0)
    }
}

/// Reads a `<table-updates2>` object already parsed into a `Value`.
pub fn parse_table_updates2(v: &Value) -> Result<TableUpdates, UpdateError> {
    Updates::deserialize(v)
        .map(|u| u.0)
        .map_err(|e| UpdateError(e.to_string()))
}

/// A `<table-updates2>` read straight from JSON text, or from a `Value`: a snapshot of
/// 10 000 ports is 6 MB of text, and a `Value` of it several times that, all of it thrown
/// away once the rows are read.
#[derive(Debug)]
pub struct Updates(pub TableUpdates);

impl<'de> Deserialize<'de> for Updates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Updates, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Updates;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of tables")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Updates, A::Error> {
                let mut tables = Vec::new();
                while let Some(table) = map.next_key::<Box<str>>()? {
                    let Rows(rows) = map.next_value()?;
                    tables.push(TableUpdate { table, rows });
                }
                Ok(Updates(tables))
            }
        }
        d.deserialize_map(V)
    }
}

/// One table's rows, by UUID.
struct Rows(Vec<RowUpdate>);

impl<'de> Deserialize<'de> for Rows {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rows, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Rows;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table: an object of rows by uuid")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Rows, A::Error> {
                let mut rows = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                while let Some(UuidStr(uuid)) = map.next_key()? {
                    let Change(op) = map.next_value()?;
                    rows.push(RowUpdate { uuid, op });
                }
                Ok(Rows(rows))
            }
        }
        d.deserialize_map(V)
    }
}

/// `{"initial": columns}`, `{"insert": …}`, `{"modify": …}` or `{"delete": …}`.
struct Change(RowOp);

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Change, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Change;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a row change: an object with one operation")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Change, A::Error> {
                let one = || de::Error::custom("row change without exactly one operation");
                let kind: Box<str> = map.next_key()?.ok_or_else(one)?;
                let op = match &*kind {
                    "initial" => RowOp::Initial(map.next_value::<Cols>()?.0),
                    "insert" => RowOp::Insert(map.next_value::<Cols>()?.0),
                    "modify" => RowOp::Modify(map.next_value::<Cols>()?.0),
                    "delete" => {
                        map.next_value::<de::IgnoredAny>()?;
                        RowOp::Delete
                    }
                    _ => return Err(de::Error::custom("unknown row operation")),
                };
                match map.next_key::<de::IgnoredAny>()? {
                    None => Ok(Change(op)),
                    Some(_) => Err(one()),
                }
            }
        }
        d.deserialize_map(V)
    }
}

/// A row's columns; `null` for none (ovsdb-server sends `"insert": {}` or `null` for a row
/// whose monitored columns are all default).
struct Cols(Columns);

impl<'de> Deserialize<'de> for Cols {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cols, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cols;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("columns: an object, or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Cols, E> {
                Ok(Cols(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Cols, A::Error> {
                let mut columns = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(name) = map.next_key::<Box<str>>()? {
                    let datum: Datum = map.next_value()?;
                    columns.push((name, datum));
                }
                Ok(Cols(columns))
            }
        }
        d.deserialize_any(V)
    }
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
            let text = v.to_string();
            assert!(serde_json::from_str::<Updates>(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn from_text_as_from_value() {
        let v = json!({"Port_Binding": {
            A: {"initial": {"logical_port": "p1", "chassis": ["uuid", B], "tag": 7,
                "external_ids": ["map", [["k", "v"]]]}},
            B: {"insert": null},
        }, "Chassis": {A: {"delete": null}, B: {"modify": {"name": "ch"}}}});
        let streamed = serde_json::from_str::<Updates>(&v.to_string()).unwrap().0;
        assert_eq!(streamed, parse_table_updates2(&v).unwrap());
        assert_eq!(streamed.len(), 2);
    }
}
