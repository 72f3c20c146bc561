//! What a monitor reports (`<table-updates2>`, the form of `update2`, `update3` and the replies
//! of `monitor_cond` and `monitor_cond_since`): for each table, for each row by UUID, one of
//! `initial`, `insert`, `modify` (the difference, see [`crate::ovsdb::datum::apply_set_diff`])
//! or `delete`.
//!
//! `{"Port_Binding": {"<uuid>": {"modify": {"chassis": ["uuid", "…"]}}}}`

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
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
    UpdatesSeed(&MapKeys::default())
        .deserialize(v)
        .map_err(|e| UpdateError(e.to_string()))
}

/// The keys to keep of some map columns, by table and column. A monitor cannot ask the
/// server for only some keys of a map, and Neutron's `external_ids` carry eight or nine where
/// a lookup needs two: the others are dropped while the text is read, before they take
/// memory (in a 10 000-port snapshot, 10 of its 15 MiB of rows). Exact for `update2`'s map
/// differences too: a difference for a dropped key concerns nothing kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapKeys(Vec<KeptKeys>);

/// A table, one of its map columns, and the keys kept.
type KeptKeys = (Box<str>, Box<str>, Vec<Box<str>>);

impl MapKeys {
    /// Keeps only `keys` of map column `column` of `table` (replacing what was kept before).
    pub fn keep(&mut self, table: &str, column: &str, keys: &[&str]) {
        self.0.retain(|(t, c, _)| (&**t, &**c) != (table, column));
        let keys = keys.iter().map(|&k| k.into()).collect();
        self.0.push((table.into(), column.into(), keys));
    }

    fn of(&self, table: &str, column: &str) -> Option<&[Box<str>]> {
        self.0
            .iter()
            .find(|(t, c, _)| (&**t, &**c) == (table, column))
            .map(|(_, _, keys)| keys.as_slice())
    }
}

/// A `<table-updates2>` read straight from JSON text (or from a `Value`), the map keys not
/// kept dropped: a snapshot of 10 000 ports is 6.5 MiB of text, a `Value` of it 35 MiB and
/// its rows 15 MiB, all of it thrown away once the replica has what it needs.
pub struct UpdatesSeed<'a>(pub &'a MapKeys);

impl<'de> DeserializeSeed<'de> for UpdatesSeed<'_> {
    type Value = TableUpdates;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TableUpdates, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for UpdatesSeed<'_> {
    type Value = TableUpdates;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of tables")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TableUpdates, A::Error> {
        let mut tables = Vec::new();
        while let Some(table) = map.next_key::<Box<str>>()? {
            let rows = map.next_value_seed(Rows {
                keys: self.0,
                table: &table,
            })?;
            tables.push(TableUpdate { table, rows });
        }
        Ok(tables)
    }
}

/// One table's rows, by UUID.
#[derive(Clone, Copy)]
struct Rows<'a> {
    keys: &'a MapKeys,
    table: &'a str,
}

impl<'de> DeserializeSeed<'de> for Rows<'_> {
    type Value = Vec<RowUpdate>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<RowUpdate>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Rows<'_> {
    type Value = Vec<RowUpdate>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table: an object of rows by uuid")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<RowUpdate>, A::Error> {
        let mut rows = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some(UuidStr(uuid)) = map.next_key()? {
            let op = map.next_value_seed(Change(self))?;
            rows.push(RowUpdate { uuid, op });
        }
        Ok(rows)
    }
}

/// `{"initial": columns}`, `{"insert": …}`, `{"modify": …}` or `{"delete": …}`.
struct Change<'a>(Rows<'a>);

impl<'de> DeserializeSeed<'de> for Change<'_> {
    type Value = RowOp;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RowOp, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Change<'_> {
    type Value = RowOp;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row change: an object with one operation")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowOp, A::Error> {
        let one = || de::Error::custom("row change without exactly one operation");
        let kind: Box<str> = map.next_key()?.ok_or_else(one)?;
        let cols = Cols(self.0);
        let op = match &*kind {
            "initial" => RowOp::Initial(map.next_value_seed(cols)?),
            "insert" => RowOp::Insert(map.next_value_seed(cols)?),
            "modify" => RowOp::Modify(map.next_value_seed(cols)?),
            "delete" => {
                map.next_value::<de::IgnoredAny>()?;
                RowOp::Delete
            }
            _ => return Err(de::Error::custom("unknown row operation")),
        };
        match map.next_key::<de::IgnoredAny>()? {
            None => Ok(op),
            Some(_) => Err(one()),
        }
    }
}

/// A row's columns; `null` for none (ovsdb-server sends `"insert": {}` or `null` for a row
/// whose monitored columns are all default).
struct Cols<'a>(Rows<'a>);

impl<'de> DeserializeSeed<'de> for Cols<'_> {
    type Value = Columns;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Columns, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Cols<'_> {
    type Value = Columns;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("columns: an object, or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Columns, E> {
        Ok(Vec::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Columns, A::Error> {
        let Rows { keys, table } = self.0;
        let mut columns = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(name) = map.next_key::<Box<str>>()? {
            let mut datum: Datum = map.next_value()?;
            if let (Some(keep), Datum::Map(pairs)) = (keys.of(table, &name), &mut datum) {
                pairs.retain(|(k, _)| k.as_str().is_some_and(|k| keep.iter().any(|w| **w == *k)));
                pairs.shrink_to_fit();
            }
            columns.push((name, datum));
        }
        Ok(columns)
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
            let mut de = serde_json::Deserializer::from_str(&text);
            let keys = MapKeys::default();
            assert!(UpdatesSeed(&keys).deserialize(&mut de).is_err(), "{text}");
        }
    }

    #[test]
    fn from_text_as_from_value() {
        let v = json!({"Port_Binding": {
            A: {"initial": {"logical_port": "p1", "chassis": ["uuid", B], "tag": 7,
                "external_ids": ["map", [["k", "v"]]]}},
            B: {"insert": null},
        }, "Chassis": {A: {"delete": null}, B: {"modify": {"name": "ch"}}}});
        let text = v.to_string();
        let keys = MapKeys::default();
        let streamed = UpdatesSeed(&keys)
            .deserialize(&mut serde_json::Deserializer::from_str(&text))
            .unwrap();
        assert_eq!(streamed, parse_table_updates2(&v).unwrap());
        assert_eq!(streamed.len(), 2);
    }

    #[test]
    fn map_keys_not_kept_are_dropped() {
        let v = json!({"Port_Binding": {A: {"modify": {
            "external_ids": ["map", [["neutron:device_id", "vm"], ["neutron:cidrs", "x"], [1, "n"]]],
            "options": ["map", [["neutron:cidrs", "kept: another column"]]],
        }}}, "Other": {A: {"insert": {"external_ids": ["map", [["neutron:cidrs", "y"]]]}}}});
        let mut keys = MapKeys::default();
        keys.keep("Port_Binding", "external_ids", &["nothing"]);
        keys.keep("Port_Binding", "external_ids", &["neutron:device_id"]);
        let mut updates = UpdatesSeed(&keys).deserialize(&v).unwrap();
        updates.sort_by(|a, b| a.table.cmp(&b.table));
        let columns = |u: &TableUpdate| match &u.rows[0].op {
            RowOp::Modify(c) | RowOp::Insert(c) => c.clone(),
            other => panic!("{other:?}"),
        };
        let other = columns(&updates[0]);
        assert_eq!(
            other[0].1.get("neutron:cidrs"),
            Some(&Atom::String("y".into()))
        );
        let pb = columns(&updates[1]);
        let ids = &pb.iter().find(|(n, _)| &**n == "external_ids").unwrap().1;
        assert_eq!(
            ids,
            &Datum::Map(vec![(
                Atom::String("neutron:device_id".into()),
                Atom::String("vm".into())
            )])
        );
        let options = &pb.iter().find(|(n, _)| &**n == "options").unwrap().1;
        assert!(options.get("neutron:cidrs").is_some());
    }
}
