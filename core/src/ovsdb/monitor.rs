//! What a monitor asks for (ovsdb-server(7), `monitor_cond`): per table, the columns to
//! replicate and the conditions a row must meet to be replicated at all. A row is replicated
//! when it satisfies **any** of the table's conditions; no conditions (`None`) means every row.

use serde_json::{json, Value};

use super::datum::Datum;

/// One table of a monitor request.
#[derive(Clone, Debug, PartialEq)]
pub struct TableMonitor {
    /// The table's name.
    pub table: Box<str>,
    /// The columns to replicate (`_uuid` always comes as the row's key).
    pub columns: Vec<Box<str>>,
    /// Which rows: `None` every row, otherwise those meeting any condition (an empty list
    /// replicates nothing, as `[false]` does).
    pub conditions: Option<Vec<Condition>>,
}

/// One condition of a `monitor_cond` request.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `true`: every row (the literal condition).
    True,
    /// `false`: no row.
    False,
    /// `[column, function, value]`, e.g. `["chassis", "==", ["uuid", "…"]]`; `function` is one
    /// of RFC 7047's (`==`, `!=`, `includes`, `excludes`, `<`, …).
    Clause {
        /// The column (or `_uuid`).
        column: Box<str>,
        /// The comparison.
        function: &'static str,
        /// The value compared with.
        value: Datum,
    },
}

impl Condition {
    /// `[column, function, value]`.
    pub fn clause(column: &str, function: &'static str, value: Datum) -> Condition {
        Condition::Clause {
            column: column.into(),
            function,
            value,
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> Value {
        match self {
            Condition::True => Value::Bool(true),
            Condition::False => Value::Bool(false),
            Condition::Clause {
                column,
                function,
                value,
            } => json!([column.as_ref(), function, value.to_json()]),
        }
    }
}

/// The JSON `where` of a list of conditions: `[false]` for none, since ovsdb-server reads an
/// empty `where` as "every row".
pub fn where_json(conditions: &[Condition]) -> Value {
    if conditions.is_empty() {
        return json!([false]);
    }
    Value::Array(conditions.iter().map(Condition::to_json).collect())
}

impl TableMonitor {
    /// The `<monitor-cond-request>` of this table: `{"columns": […], "where": […]}`.
    pub fn request_json(&self) -> Value {
        let columns: Vec<&str> = self.columns.iter().map(AsRef::as_ref).collect();
        match &self.conditions {
            None => json!({ "columns": columns }),
            Some(c) => json!({ "columns": columns, "where": where_json(c) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::datum::Atom;
    use crate::scope::Uuid;

    #[test]
    fn json_forms() {
        let u = Uuid(11);
        let by_chassis = TableMonitor {
            table: "Port_Binding".into(),
            columns: vec!["mac".into(), "chassis".into()],
            conditions: Some(vec![
                Condition::clause("chassis", "==", Datum::Set(vec![Atom::Uuid(u)])),
                Condition::clause(
                    "additional_chassis",
                    "includes",
                    Datum::Set(vec![Atom::Uuid(u)]),
                ),
            ]),
        };
        assert_eq!(
            by_chassis.request_json(),
            json!({"columns": ["mac", "chassis"], "where": [
                ["chassis", "==", ["uuid", u.to_string()]],
                ["additional_chassis", "includes", ["uuid", u.to_string()]],
            ]})
        );
        let nothing = TableMonitor {
            conditions: Some(vec![]),
            ..by_chassis.clone()
        };
        assert_eq!(nothing.request_json()["where"], json!([false]));
        let all = TableMonitor {
            conditions: None,
            ..by_chassis
        };
        assert_eq!(all.request_json(), json!({"columns": ["mac", "chassis"]}));
    }
}
