//! One instance as configured in `DIR/<uuid>.toml` or `DIR/<uuid>.json` (issue 5, item 1), and
//! the pure text transformations the runtime needs around those files.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JSON object as configured (`vendor_data`, `network_data`, one device, …). Keys come out
/// sorted: TOML tables have no order here, and JSON objects are read into the same type so both
/// formats serve identical bytes.
pub type JsonObject = Map<String, Value>;

/// One instance, field for field as in its file. Only `uuid` and `project_id` are required; the
/// rest default as documented on each field. Unknown fields are an error (a typo must not
/// silently drop data).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceData {
    /// The instance UUID (Nova's `X-Instance-ID`; `uuid` in `meta_data.json`).
    pub uuid: String,
    /// The owning project; must equal the proxy's `X-Tenant-ID`.
    pub project_id: String,
    /// Display name (`name` in `meta_data.json`). Defaults to `hostname`, or the uuid.
    #[serde(default)]
    pub name: Option<String>,
    /// Host name, served verbatim plus `.` + the server's DHCP domain when that is not empty,
    /// as Nova does (EC2 `hostname`, `local-hostname`, `public-hostname`; `hostname` in
    /// `meta_data.json`). Defaults to `name`, or the uuid.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Position in a multi-instance launch (`ami-launch-index`, `launch_index`). Default 0.
    #[serde(default)]
    pub launch_index: u32,
    /// Availability zone. Default `nova` (Nova's `default_availability_zone`).
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// EC2 instance id such as `i-0000002a`. Default: `i-` and the first 8 hex digits of the uuid.
    #[serde(default)]
    pub ec2_id: Option<String>,
    /// EC2 image id. Default `ami-00000000`.
    #[serde(default)]
    pub ami_id: Option<String>,
    /// EC2 reservation id. Default `r-00000000`.
    #[serde(default)]
    pub reservation_id: Option<String>,
    /// Flavor name (`instance-type`). Default empty.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// EC2 kernel id; the key exists only when set.
    #[serde(default)]
    pub kernel_id: Option<String>,
    /// EC2 ramdisk id; the key exists only when set.
    #[serde(default)]
    pub ramdisk_id: Option<String>,
    /// Fixed IPs. The first IPv4 one is `local-ipv4`; `--direct` mode identifies the instance
    /// by any of them.
    #[serde(default)]
    pub fixed_ips: Vec<IpAddr>,
    /// Floating IPs; the first IPv4 one is `public-ipv4` (empty when none).
    #[serde(default)]
    pub floating_ips: Vec<IpAddr>,
    /// Security group names (`security-groups`, one per line).
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// EC2 `block-device-mapping/`: name → device. When absent, Nova's default for an instance
    /// without a root device name: `ami=sda1, ephemeral0=sda2, root=/dev/sda1, swap=sda3`.
    #[serde(default)]
    pub block_device_mapping: Option<BTreeMap<String, String>>,
    /// User metadata (`meta` in `meta_data.json`, present only when not empty).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Key pairs. Nova has at most one; every one here is served (EC2 `public-keys/N`).
    #[serde(default)]
    pub keys: Vec<Key>,
    /// User data as text. At most one of `user_data` and `user_data_b64`.
    #[serde(default)]
    pub user_data: Option<String>,
    /// User data as base64 (for binary or gzip'd data; whitespace is ignored).
    #[serde(default)]
    pub user_data_b64: Option<String>,
    /// `vendor_data.json` (default `{}`).
    #[serde(default)]
    pub vendor_data: Option<JsonObject>,
    /// `vendor_data2.json`. Default as Nova with its default provider list:
    /// `{"static": <vendor_data>}`.
    #[serde(default)]
    pub vendor_data2: Option<JsonObject>,
    /// `network_data.json` (default `{}`).
    #[serde(default)]
    pub network_data: Option<JsonObject>,
    /// `devices` in `meta_data.json` (≥ 2016-06-30). A `"type": "nic"` device loses `vlan`
    /// before 2017-02-22 and `vf_trusted` before 2018-08-27, as in Nova.
    #[serde(default)]
    pub devices: Vec<JsonObject>,
    /// The instance's password (openstack `password`): the file's own, or the one it posted,
    /// which the runtime keeps elsewhere and hands back here; set once.
    #[serde(default)]
    pub password: Option<String>,
}

/// A key pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    /// Key pair name.
    pub name: String,
    /// `ssh` (default) or `x509`.
    #[serde(rename = "type", default = "ssh")]
    pub kind: String,
    /// The public key.
    pub data: String,
}

fn ssh() -> String {
    "ssh".to_owned()
}

/// The syntax of an instance file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.toml`
    Toml,
    /// `.json`
    Json,
}

impl Format {
    /// The format for a file name by its extension (`.toml` or `.json`), if it is one.
    pub fn from_file_name(name: &str) -> Option<Format> {
        if name.ends_with(".toml") {
            Some(Format::Toml)
        } else if name.ends_with(".json") {
            Some(Format::Json)
        } else {
            None
        }
    }
}

/// Why an instance file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstanceError {
    /// The text does not parse, or a field has the wrong name or type.
    Syntax {
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// 1-based column of the problem, when known.
        column: Option<usize>,
        /// What is wrong (names the field for unknown or missing fields).
        message: String,
    },
    /// It parses, but a value is unusable.
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl fmt::Display for InstanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceError::Syntax {
                line: Some(line),
                column: Some(column),
                message,
            } => write!(f, "line {line}, column {column}: {message}"),
            InstanceError::Syntax {
                line: Some(line),
                message,
                ..
            } => write!(f, "line {line}: {message}"),
            InstanceError::Syntax { message, .. } => f.write_str(message),
            InstanceError::Invalid { field, message } => write!(f, "`{field}`: {message}"),
        }
    }
}

impl std::error::Error for InstanceError {}

/// 1-based (line, column) of byte offset `at` in `text` (column counted in characters).
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn toml_error(text: &str, e: &toml::de::Error) -> InstanceError {
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = line_col(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    InstanceError::Syntax {
        line,
        column,
        message: e.message().trim_end().to_owned(),
    }
}

fn json_error(e: &serde_json::Error) -> InstanceError {
    // serde_json's Display appends " at line L column C"; keep the bare message.
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    };
    InstanceError::Syntax {
        line: (e.line() > 0).then_some(e.line()),
        column: (e.column() > 0).then_some(e.column()),
        message,
    }
}

/// Parses and checks one instance file.
///
/// Errors name the problem and, where the parser knows it, the line: an unknown field reads
/// ``line 4, column 1: unknown field `hostnme`, expected one of …``.
pub fn parse_instance(text: &str, format: Format) -> Result<InstanceData, InstanceError> {
    let mut data: InstanceData = match format {
        Format::Toml => toml::from_str(text).map_err(|e| toml_error(text, &e))?,
        // serde would also read the fields from an array, positionally; a file is an object.
        Format::Json
            if !text
                .trim_start_matches([' ', '\t', '\n', '\r'])
                .starts_with('{') =>
        {
            return Err(not_a_json_object());
        }
        Format::Json => serde_json::from_str(text).map_err(|e| json_error(&e))?,
    };
    // TOML date-times reach a JSON value as serde's private wrapper; serve them as strings.
    for obj in [
        &mut data.vendor_data,
        &mut data.vendor_data2,
        &mut data.network_data,
    ]
    .into_iter()
    .flatten()
    {
        obj.values_mut().for_each(unwrap_toml_datetimes);
    }
    for dev in &mut data.devices {
        dev.values_mut().for_each(unwrap_toml_datetimes);
    }
    validate(&data)?;
    Ok(data)
}

const TOML_DATETIME: &str = "$__toml_private_datetime";

fn unwrap_toml_datetimes(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.len() == 1 {
                if let Some(Value::String(s)) = map.get(TOML_DATETIME) {
                    *v = Value::String(s.clone());
                    return;
                }
            }
            map.values_mut().for_each(unwrap_toml_datetimes);
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_toml_datetimes),
        _ => {}
    }
}

/// The checks `parse_instance` makes after the syntax: what serde cannot express.
pub(crate) fn validate(d: &InstanceData) -> Result<(), InstanceError> {
    let invalid = |field, message: &str| {
        Err(InstanceError::Invalid {
            field,
            message: message.to_owned(),
        })
    };
    if d.uuid.trim().is_empty() {
        return invalid("uuid", "must not be empty");
    }
    if d.uuid.contains(['/', '\\', '\0']) {
        return invalid("uuid", "must not contain `/`, `\\` or NUL");
    }
    if d.project_id.is_empty() {
        return invalid("project_id", "must not be empty");
    }
    if d.user_data.is_some() && d.user_data_b64.is_some() {
        return invalid(
            "user_data_b64",
            "give `user_data` or `user_data_b64`, not both",
        );
    }
    if let Some(b64) = &d.user_data_b64 {
        if let Err(e) = decode_b64(b64) {
            return invalid("user_data_b64", &format!("not valid base64: {e}"));
        }
    }
    for (i, key) in d.keys.iter().enumerate() {
        if key.name.is_empty() {
            return invalid("keys", "a key has an empty `name`");
        }
        if d.keys[..i].iter().any(|k| k.name == key.name) {
            return invalid("keys", &format!("key name `{}` appears twice", key.name));
        }
    }
    Ok(())
}

/// Base64 as Python's `b64decode` takes it from Nova's database: standard alphabet, padding,
/// whitespace (line breaks) ignored.
pub(crate) fn decode_b64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    STANDARD.decode(compact)
}

fn not_a_json_object() -> InstanceError {
    InstanceError::Syntax {
        line: None,
        column: None,
        message: "an instance file must hold a JSON object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "uuid = \"u-1\"\nproject_id = \"p\"\n";

    #[test]
    fn minimal_file_parses_with_defaults() {
        let d = parse_instance(MIN, Format::Toml).unwrap();
        assert_eq!(d.uuid, "u-1");
        assert_eq!(d.launch_index, 0);
        assert!(d.keys.is_empty() && d.password.is_none());
    }

    #[test]
    fn errors_name_field_and_line() {
        let text = format!("{MIN}\nhostnme = \"x\"\n");
        let e = parse_instance(&text, Format::Toml).unwrap_err();
        let shown = e.to_string();
        assert!(shown.starts_with("line 4"), "{shown}");
        assert!(shown.contains("hostnme"), "{shown}");

        let e = parse_instance("project_id = \"p\"\n", Format::Toml).unwrap_err();
        assert!(e.to_string().contains("uuid"), "{e}");

        let e = parse_instance(
            "{\"uuid\": \"u\",\n \"project_id\": \"p\",\n \"nmae\": 1}",
            Format::Json,
        )
        .unwrap_err();
        assert!(
            matches!(e, InstanceError::Syntax { line: Some(3), .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("nmae"), "{e}");

        let e = parse_instance(
            &format!("{MIN}fixed_ips = [\"10.0.0.300\"]\n"),
            Format::Toml,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("line 3"), "{e}");
    }

    #[test]
    fn semantic_checks() {
        let cases = [
            ("uuid = \"\"\nproject_id = \"p\"\n", "uuid"),
            ("uuid = \"../x\"\nproject_id = \"p\"\n", "uuid"),
            ("uuid = \"u\"\nproject_id = \"\"\n", "project_id"),
            (
                "uuid = \"u\"\nproject_id = \"p\"\nuser_data = \"a\"\nuser_data_b64 = \"YQ==\"\n",
                "user_data_b64",
            ),
            ("uuid = \"u\"\nproject_id = \"p\"\nuser_data_b64 = \"!!\"\n", "user_data_b64"),
            (
                "uuid = \"u\"\nproject_id = \"p\"\n[[keys]]\nname = \"k\"\ndata = \"a\"\n[[keys]]\nname = \"k\"\ndata = \"b\"\n",
                "keys",
            ),
        ];
        for (text, field) in cases {
            match parse_instance(text, Format::Toml) {
                Err(InstanceError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn b64_ignores_whitespace() {
        assert_eq!(decode_b64("aGVs\nbG8=\n").unwrap(), b"hello");
        assert!(decode_b64("aGVsbG8").is_err());
    }

    #[test]
    fn toml_datetimes_become_strings() {
        let text = format!("{MIN}[vendor_data]\nwhen = 1979-05-27T07:32:00Z\n");
        let d = parse_instance(&text, Format::Toml).unwrap();
        assert_eq!(
            d.vendor_data.unwrap()["when"],
            Value::String("1979-05-27T07:32:00Z".into())
        );
    }

    /// Found by fuzzing: serde reads a struct from a JSON array too, so `["u", "p"]` was an
    /// instance.
    #[test]
    fn a_json_array_is_not_an_instance() {
        let err = parse_instance("\n [\"u\", \"p\"]", Format::Json).unwrap_err();
        assert!(err.to_string().contains("JSON object"), "{err}");
        assert!(
            parse_instance(" \t{\"uuid\": \"u\", \"project_id\": \"p\"}", Format::Json).is_ok()
        );
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncdé\nx", 0), (1, 1));
        assert_eq!(line_col("ab\ncdé\nx", 3), (2, 1));
        assert_eq!(line_col("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_col("é", 1), (1, 1));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
