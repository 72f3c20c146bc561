//! OVSDB values as they travel in JSON (RFC 7047 §5.1): an atom is an integer, real, boolean,
//! string or `["uuid", "…"]`; a set is `["set", [atoms]]` or, with one element, the bare atom;
//! a map is `["map", [[key, value], …]]`. Named UUIDs (`["named-uuid", …]`) only appear in
//! transactions we send, never in what a monitor reports, so they are refused here.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::Value;

use crate::scope::Uuid;

/// One OVSDB atom.
#[derive(Clone, Debug, PartialEq)]
pub enum Atom {
    /// `integer`.
    Integer(i64),
    /// `real`.
    Real(f64),
    /// `boolean`.
    Boolean(bool),
    /// `string`.
    String(Box<str>),
    /// `uuid`: a reference to a row.
    Uuid(Uuid),
}

/// A column's value: every OVSDB column is a set or a map of atoms (a scalar column is a set
/// of exactly one).
#[derive(Clone, Debug, PartialEq)]
pub enum Datum {
    /// A set (or a scalar: one element).
    Set(Vec<Atom>),
    /// A map, in the order the server sent it.
    Map(Vec<(Atom, Atom)>),
}

/// Why a JSON value is not an OVSDB datum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatumError {
    /// Not an atom, `["set", …]`, `["map", …]` or `["uuid", …]`.
    Malformed(&'static str),
    /// `["uuid", s]` where `s` is not a UUID.
    BadUuid(String),
}

impl fmt::Display for DatumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatumError::Malformed(what) => write!(f, "malformed OVSDB value: {what}"),
            DatumError::BadUuid(s) => write!(f, "malformed OVSDB uuid {s:?}"),
        }
    }
}

impl Atom {
    /// Parses one atom.
    pub fn from_json(v: &Value) -> Result<Atom, DatumError> {
        match v {
            Value::Bool(b) => Ok(Atom::Boolean(*b)),
            Value::String(s) => Ok(Atom::String(s.as_str().into())),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Atom::Integer(i)),
                None => n
                    .as_f64()
                    .map(Atom::Real)
                    .ok_or(DatumError::Malformed("number out of range")),
            },
            Value::Array(a) => match a.as_slice() {
                [Value::String(tag), Value::String(s)] if tag == "uuid" => {
                    Uuid::parse(s.as_bytes())
                        .map(Atom::Uuid)
                        .ok_or_else(|| DatumError::BadUuid(s.clone()))
                }
                _ => Err(DatumError::Malformed("array that is not [\"uuid\", …]")),
            },
            Value::Null | Value::Object(_) => Err(DatumError::Malformed("null or object")),
        }
    }

    /// The JSON form, as a request carries it.
    pub fn to_json(&self) -> Value {
        match self {
            Atom::Integer(i) => Value::from(*i),
            Atom::Real(r) => Value::from(*r),
            Atom::Boolean(b) => Value::Bool(*b),
            Atom::String(s) => Value::String(s.to_string()),
            Atom::Uuid(u) => Value::Array(vec!["uuid".into(), u.to_string().into()]),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    /// The UUID, if this is one.
    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }
}

impl Datum {
    /// Parses a column's value.
    pub fn from_json(v: &Value) -> Result<Datum, DatumError> {
        if let Value::Array(a) = v {
            match a.as_slice() {
                [Value::String(tag), Value::Array(items)] if tag == "set" => {
                    return items
                        .iter()
                        .map(Atom::from_json)
                        .collect::<Result<_, _>>()
                        .map(Datum::Set)
                }
                [Value::String(tag), Value::Array(pairs)] if tag == "map" => {
                    return pairs
                        .iter()
                        .map(|p| match p.as_array().map(Vec::as_slice) {
                            Some([k, v]) => Ok((Atom::from_json(k)?, Atom::from_json(v)?)),
                            _ => Err(DatumError::Malformed("map entry that is not [key, value]")),
                        })
                        .collect::<Result<_, _>>()
                        .map(Datum::Map)
                }
                _ => {}
            }
        }
        Atom::from_json(v).map(|a| Datum::Set(vec![a]))
    }

    /// The JSON form, as a request carries it.
    pub fn to_json(&self) -> Value {
        match self {
            Datum::Set(atoms) if atoms.len() == 1 => atoms[0].to_json(),
            Datum::Set(atoms) => Value::Array(vec![
                "set".into(),
                Value::Array(atoms.iter().map(Atom::to_json).collect()),
            ]),
            Datum::Map(pairs) => Value::Array(vec![
                "map".into(),
                Value::Array(
                    pairs
                        .iter()
                        .map(|(k, v)| Value::Array(vec![k.to_json(), v.to_json()]))
                        .collect(),
                ),
            ]),
        }
    }

    /// The elements of a set column (empty for a map).
    pub fn atoms(&self) -> &[Atom] {
        match self {
            Datum::Set(atoms) => atoms,
            Datum::Map(_) => &[],
        }
    }

    /// The value of a scalar (or at most one) column: its only element.
    pub fn scalar(&self) -> Option<&Atom> {
        match self.atoms() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The value under string key `key` of a map column.
    pub fn get(&self, key: &str) -> Option<&Atom> {
        match self {
            Datum::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            Datum::Set(_) => None,
        }
    }
}

/// A datum read straight from JSON text (a monitor's reply is parsed without building a
/// `Value` of the whole message first: that tree is several times the size of the text). The
/// same rules as [`Datum::from_json`].
impl<'de> Deserialize<'de> for Datum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Datum, D::Error> {
        d.deserialize_any(DatumVisitor)
    }
}

/// See [`Datum`]'s `Deserialize`.
impl<'de> Deserialize<'de> for Atom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Atom, D::Error> {
        d.deserialize_any(AtomVisitor)
    }
}

/// The tag that starts an array value.
enum Tag {
    Uuid,
    Set,
    Map,
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tag, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Tag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"uuid\", \"set\" or \"map\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Tag, E> {
                match v {
                    "uuid" => Ok(Tag::Uuid),
                    "set" => Ok(Tag::Set),
                    "map" => Ok(Tag::Map),
                    _ => Err(E::custom(DatumError::Malformed(
                        "array that is not [\"uuid\", …], [\"set\", …] or [\"map\", …]",
                    ))),
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// A UUID in its string form, parsed without an intermediate `String`.
pub(crate) struct UuidStr(pub(crate) Uuid);

impl<'de> Deserialize<'de> for UuidStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UuidStr, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = UuidStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a uuid")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UuidStr, E> {
                Uuid::parse(v.as_bytes())
                    .map(UuidStr)
                    .ok_or_else(|| E::custom(DatumError::BadUuid(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The rest of `["uuid", "…"]` once its tag is read.
fn uuid_rest<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Uuid, A::Error> {
    let UuidStr(u) = seq
        .next_element()?
        .ok_or_else(|| de::Error::custom(DatumError::Malformed("[\"uuid\"] without a uuid")))?;
    end(seq)?;
    Ok(u)
}

/// Refuses elements past the expected ones.
fn end<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    match seq.next_element::<de::IgnoredAny>()? {
        None => Ok(()),
        Some(_) => Err(de::Error::custom(DatumError::Malformed(
            "array with extra elements",
        ))),
    }
}

struct AtomVisitor;

impl<'de> Visitor<'de> for AtomVisitor {
    type Value = Atom;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OVSDB atom")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Atom, E> {
        Ok(Atom::Boolean(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Atom, E> {
        Ok(Atom::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Atom, E> {
        // As `Value::as_i64` then `as_f64`: past i64 it is a real.
        Ok(i64::try_from(v).map_or(Atom::Real(v as f64), Atom::Integer))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Atom, E> {
        Ok(Atom::Real(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Atom, E> {
        Ok(Atom::String(v.into()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Atom, A::Error> {
        match seq.next_element()? {
            Some(Tag::Uuid) => uuid_rest(seq).map(Atom::Uuid),
            _ => Err(de::Error::custom(DatumError::Malformed(
                "array that is not [\"uuid\", …]",
            ))),
        }
    }
}

struct DatumVisitor;

impl<'de> Visitor<'de> for DatumVisitor {
    type Value = Datum;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OVSDB datum")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Datum, E> {
        AtomVisitor.visit_bool(v).map(|a| Datum::Set(vec![a]))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Datum, E> {
        AtomVisitor.visit_i64(v).map(|a| Datum::Set(vec![a]))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Datum, E> {
        AtomVisitor.visit_u64(v).map(|a| Datum::Set(vec![a]))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Datum, E> {
        AtomVisitor.visit_f64(v).map(|a| Datum::Set(vec![a]))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Datum, E> {
        AtomVisitor.visit_str(v).map(|a| Datum::Set(vec![a]))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Datum, A::Error> {
        let missing = || de::Error::custom(DatumError::Malformed("set or map without elements"));
        let datum = match seq.next_element()? {
            Some(Tag::Uuid) => return uuid_rest(seq).map(|u| Datum::Set(vec![Atom::Uuid(u)])),
            Some(Tag::Set) => Datum::Set(seq.next_element()?.ok_or_else(missing)?),
            Some(Tag::Map) => Datum::Map(seq.next_element()?.ok_or_else(missing)?),
            None => return Err(de::Error::custom(DatumError::Malformed("empty array"))),
        };
        end(seq)?;
        Ok(datum)
    }
}

/// Applies an `update2` "modify" difference to a set column: every element of `diff` is
/// toggled (removed if present, added if not), RFC 7047's extension for `update2`. Any
/// element type: a consumer may keep a set's atoms in its own form (UUIDs, strings).
pub fn apply_set_diff<T: PartialEq>(set: &mut Vec<T>, diff: impl IntoIterator<Item = T>) {
    for element in diff {
        match set.iter().position(|e| *e == element) {
            Some(i) => {
                set.swap_remove(i);
            }
            None => set.push(element),
        }
    }
}

/// Applies an `update2` "modify" difference to a map column: a key absent is inserted, a key
/// present with the same value is removed, a key present with another value takes the new one.
pub fn apply_map_diff(map: &mut Vec<(Atom, Atom)>, diff: &[(Atom, Atom)]) {
    for (key, value) in diff {
        match map.iter().position(|(k, _)| k == key) {
            Some(i) if map[i].1 == *value => {
                map.swap_remove(i);
            }
            Some(i) => map[i].1 = value.clone(),
            None => map.push((key.clone(), value.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const U: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";

    #[test]
    fn forms() {
        let uuid = Atom::Uuid(Uuid::parse(U.as_bytes()).unwrap());
        assert_eq!(
            Datum::from_json(&json!(["uuid", U])).unwrap(),
            Datum::Set(vec![uuid.clone()])
        );
        assert_eq!(
            Datum::from_json(&json!(["set", []])).unwrap(),
            Datum::Set(vec![])
        );
        assert_eq!(
            Datum::from_json(&json!(["set", ["a", 2, true]])).unwrap(),
            Datum::Set(vec![
                Atom::String("a".into()),
                Atom::Integer(2),
                Atom::Boolean(true)
            ])
        );
        let map = Datum::from_json(&json!(["map", [["k", "v"], ["c", ["uuid", U]]]])).unwrap();
        assert_eq!(map.get("k"), Some(&Atom::String("v".into())));
        assert_eq!(map.get("c"), Some(&uuid));
        assert_eq!(map.get("x"), None);
        assert_eq!(
            Datum::from_json(&json!(1.5)).unwrap().scalar(),
            Some(&Atom::Real(1.5))
        );
        for v in [
            json!(map.to_json()),
            json!(["set", ["a", "b"]]),
            json!("x"),
            json!(["uuid", U]),
        ] {
            assert_eq!(Datum::from_json(&v).unwrap().to_json(), v);
        }
    }

    /// Read from text, a datum is what `from_json` makes of the same JSON, and is refused
    /// where it is.
    #[test]
    fn from_text_as_from_value() {
        for text in [
            r#"["uuid", "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a"]"#,
            r#"["set", []]"#,
            r#"["set", ["a", 2, true, 1.5, ["uuid", "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a"]]]"#,
            r#"["map", [["k", "v"], [1, ["uuid", "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a"]]]]"#,
            r#""x\"y""#,
            "18446744073709551615",
            "-3",
            "null",
            "{}",
            r#"["named-uuid", "row1"]"#,
            r#"["uuid", "nope"]"#,
            r#"["uuid"]"#,
            r#"["uuid", "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a", 1]"#,
            r#"["map", [["k"]]]"#,
            r#"["map", [["k", "v", "w"]]]"#,
            r#"["set", [null]]"#,
            r#"["set", [["set", []]]]"#,
            r#"["set"]"#,
            r#"["set", [], []]"#,
            "[]",
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let streamed = serde_json::from_str::<Datum>(text).ok();
            assert_eq!(streamed, Datum::from_json(&value).ok(), "{text}");
        }
    }

    #[test]
    fn refused() {
        for v in [
            json!(null),
            json!({}),
            json!(["named-uuid", "row1"]),
            json!(["uuid", "nope"]),
            json!(["map", [["k"]]]),
            json!(["set", [null]]),
            json!(["set"]),
        ] {
            assert!(Datum::from_json(&v).is_err(), "{v}");
        }
    }

    #[test]
    fn diffs() {
        let s = |v: &[&str]| {
            v.iter()
                .map(|x| Atom::String((*x).into()))
                .collect::<Vec<_>>()
        };
        let mut set = s(&["a", "b"]);
        apply_set_diff(&mut set, s(&["b", "c"]));
        set.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
        assert_eq!(set, s(&["a", "c"]));

        let kv = |k: &str, v: &str| (Atom::String(k.into()), Atom::String(v.into()));
        let mut map = vec![kv("keep", "1"), kv("drop", "2"), kv("change", "3")];
        apply_map_diff(
            &mut map,
            &[kv("drop", "2"), kv("change", "4"), kv("new", "5")],
        );
        map.sort_by(|x, y| x.0.as_str().cmp(&y.0.as_str()));
        assert_eq!(
            map,
            vec![kv("change", "4"), kv("keep", "1"), kv("new", "5")]
        );
    }
}
