//! The OpenStack tree (reference §C6): version listings, `meta_data.json` per version and the
//! other JSON files, serialised byte for byte as Python's `json.dumps` (Nova's
//! `jsonutils.dump_as_bytes`) writes them.

use std::io;

use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::{Map, Value};

use super::instance::{InstanceData, JsonObject, Key};
use super::path::{OsFile, OsVersion, OPENSTACK_VERSIONS};

/// `/openstack`: versions released by `today` (an ISO date), then `latest`.
pub(crate) fn versions(today: &str) -> Vec<u8> {
    let mut lines: Vec<&str> = OPENSTACK_VERSIONS
        .iter()
        .copied()
        .filter(|v| *v <= today)
        .collect();
    lines.push("latest");
    lines.join("\n").into_bytes()
}

/// `/openstack/<version>`: the files of that version in Nova's order.
pub(crate) fn listing(v: OsVersion, has_user_data: bool) -> Vec<u8> {
    let names: Vec<&str> = OsFile::ALL
        .into_iter()
        .filter(|f| f.since() <= v && (*f != OsFile::UserData || has_user_data))
        .map(OsFile::name)
        .collect();
    names.join("\n").into_bytes()
}

/// The per-instance values `meta_data.json` is made of.
pub(crate) struct MetaSource<'a> {
    pub(crate) data: &'a InstanceData,
    pub(crate) hostname: &'a str,
    pub(crate) name: &'a str,
    pub(crate) availability_zone: &'a str,
}

/// `public_keys`: `{name: data}` in the order of the keys.
struct PublicKeys<'a>(&'a [Key]);

impl Serialize for PublicKeys<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for k in self.0 {
            map.serialize_entry(&k.name, &k.data)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct KeyJson<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    data: &'a str,
}

/// Field order is Nova's (`_metadata_as_json` builds a dict in this order).
#[derive(Serialize)]
struct MetaData<'a> {
    uuid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_keys: Option<PublicKeys<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<KeyJson<'a>>>,
    hostname: &'a str,
    name: &'a str,
    launch_index: u32,
    availability_zone: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    random_seed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    devices: Option<Vec<JsonObject>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dedicated_cpus: Option<[u32; 0]>,
}

/// `meta_data.json` at version `v`. `random_seed` is the base64 of 512 fresh random bytes,
/// passed in so the caller owns the entropy.
pub(crate) fn meta_data(s: &MetaSource<'_>, v: OsVersion, random_seed: Option<String>) -> Vec<u8> {
    let d = s.data;
    let has_keys = !d.keys.is_empty();
    let md = MetaData {
        uuid: &d.uuid,
        meta: (!d.meta.is_empty()).then_some(&d.meta),
        public_keys: has_keys.then_some(PublicKeys(&d.keys)),
        keys: has_keys.then(|| {
            d.keys
                .iter()
                .map(|k| KeyJson {
                    name: &k.name,
                    kind: &k.kind,
                    data: &k.data,
                })
                .collect()
        }),
        hostname: s.hostname,
        name: s.name,
        launch_index: d.launch_index,
        availability_zone: s.availability_zone,
        random_seed: random_seed.filter(|_| v >= OsVersion::GRIZZLY),
        project_id: (v >= OsVersion::LIBERTY).then_some(&d.project_id),
        devices: (v >= OsVersion::NEWTON_ONE).then(|| devices(&d.devices, v)),
        // Nova lists the pinned CPUs of a dedicated-CPU flavor; none here.
        dedicated_cpus: (v >= OsVersion::VICTORIA).then_some([]),
    };
    to_python_json(&md)
}

/// Devices as Nova's `_get_device_metadata` shows them at `v`: a nic's `vlan` appears from
/// 2017-02-22 on and its `vf_trusted` from 2018-08-27 on.
fn devices(devices: &[JsonObject], v: OsVersion) -> Vec<JsonObject> {
    devices
        .iter()
        .map(|dev| {
            let mut dev = dev.clone();
            if dev.get("type").and_then(Value::as_str) == Some("nic") {
                if v < OsVersion::OCATA {
                    dev.remove("vlan");
                }
                if v < OsVersion::ROCKY {
                    dev.remove("vf_trusted");
                }
            }
            dev
        })
        .collect()
}

/// `vendor_data.json`: the static vendor data, `{}` when none.
pub(crate) fn vendor_data(d: &InstanceData) -> Vec<u8> {
    to_python_json(&d.vendor_data.clone().unwrap_or_default())
}

/// `vendor_data2.json`: as configured, else what Nova's default provider list
/// (`['StaticJSON']`) gives: `{"static": <vendor_data.json>}`.
pub(crate) fn vendor_data2(d: &InstanceData) -> Vec<u8> {
    match &d.vendor_data2 {
        Some(v2) => to_python_json(v2),
        None => {
            let mut v2 = Map::new();
            v2.insert(
                "static".to_owned(),
                Value::Object(d.vendor_data.clone().unwrap_or_default()),
            );
            to_python_json(&v2)
        }
    }
}

/// `network_data.json`: as configured, `{}` when none.
pub(crate) fn network_data(d: &InstanceData) -> Vec<u8> {
    to_python_json(&d.network_data.clone().unwrap_or_default())
}

/// Python's `json.dumps(obj)` defaults: `", "` and `": "` separators, no newline at the end,
/// and `ensure_ascii=True` (everything outside printable ASCII as `\uXXXX`).
struct PythonJson;

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json already escaped `"`, `\` and C0 controls the way Python does; what is left
        // for `ensure_ascii` is DEL and everything beyond ASCII (as UTF-16 code units).
        let mut rest = fragment;
        while let Some(i) = rest.find(|c: char| c == '\u{7f}' || !c.is_ascii()) {
            w.write_all(&rest.as_bytes()[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            rest = &rest[i + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }
}

/// Serialises `value` as Python's `json.dumps` would.
pub(crate) fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonJson);
    // Only non-string map keys could fail, and every map here has string keys.
    if value.serialize(&mut ser).is_err() {
        return b"{}".to_vec();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(v: &Value) -> String {
        String::from_utf8(to_python_json(v)).unwrap()
    }

    #[test]
    fn python_json_format() {
        let v: Value = serde_json::from_str(
            r#"{"b": [1, 2.5, true, null, {}], "a": {"x": []}, "s": "q\"\\\n\t\u0001/é😀\u007f"}"#,
        )
        .unwrap();
        // python3 -c 'import json; print(json.dumps({"a": {"x": []}, "b": [1, 2.5, True, None, {}],
        //   "s": "q\"\\\n\t\x01/é😀\x7f"}))'
        assert_eq!(
            py(&v),
            r#"{"a": {"x": []}, "b": [1, 2.5, true, null, {}], "s": "q\"\\\n\t\u0001/\u00e9\ud83d\ude00\u007f"}"#
        );
    }

    #[test]
    fn listings() {
        assert_eq!(versions("2013-10-16"), b"2012-08-10\n2013-04-04\nlatest");
        assert_eq!(
            versions("2013-10-17"),
            b"2012-08-10\n2013-04-04\n2013-10-17\nlatest"
        );
        assert_eq!(versions("2000-01-01"), b"latest");
        assert_eq!(listing(OsVersion::FOLSOM, false), b"meta_data.json");
        assert_eq!(
            listing(OsVersion::FOLSOM, true),
            b"meta_data.json\nuser_data"
        );
        assert_eq!(
            listing(OsVersion::NEWTON_TWO, true),
            &b"meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json"[..]
        );
    }

    #[test]
    fn nic_fields_by_version() {
        let dev: JsonObject =
            serde_json::from_str(r#"{"type": "nic", "vlan": 5, "vf_trusted": true, "mac": "m"}"#)
                .unwrap();
        let disk: JsonObject = serde_json::from_str(r#"{"type": "disk", "vlan": 5}"#).unwrap();
        let both = [dev, disk];
        let keys = |v| -> Vec<Vec<String>> {
            devices(&both, v)
                .iter()
                .map(|d| d.keys().cloned().collect())
                .collect()
        };
        assert_eq!(
            keys(OsVersion::NEWTON_ONE),
            [vec!["mac", "type"], vec!["type", "vlan"]]
        );
        assert_eq!(
            keys(OsVersion::OCATA),
            [vec!["mac", "type", "vlan"], vec!["type", "vlan"]]
        );
        assert_eq!(
            keys(OsVersion::ROCKY),
            [
                vec!["mac", "type", "vf_trusted", "vlan"],
                vec!["type", "vlan"]
            ]
        );
    }
}
