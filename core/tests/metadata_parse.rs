//! Instance files: errors that say what and where, and TOML ≡ JSON.
// Tests read golden files and take an opaque epoch: the sans-IO lints are for the library.
#![allow(clippy::disallowed_methods)]

mod metadata_support;

use mdproxy_core::metadata::{parse_instance, Format, InstanceError};
use metadata_support::{golden_dir, sample, sample_text};

#[test]
fn toml_and_json_samples_are_equal() {
    let json = std::fs::read_to_string(golden_dir().join("instance.json")).expect("json sample");
    let from_json = parse_instance(&json, Format::Json).expect("json parses");
    assert_eq!(from_json, sample());
    assert_eq!(Format::from_file_name("x/6f9c.toml"), Some(Format::Toml));
    assert_eq!(Format::from_file_name("6f9c.json"), Some(Format::Json));
    assert_eq!(Format::from_file_name("6f9c.toml~"), None);
}

#[test]
fn sample_has_every_field() {
    let s = sample();
    assert!(s.name.is_some() && s.hostname.is_some() && s.availability_zone.is_some());
    assert!(s.ec2_id.is_some() && s.ami_id.is_some() && s.reservation_id.is_some());
    assert!(s.instance_type.is_some() && s.kernel_id.is_some() && s.ramdisk_id.is_some());
    assert!(!s.fixed_ips.is_empty() && !s.floating_ips.is_empty() && !s.security_groups.is_empty());
    assert!(s.block_device_mapping.is_some() && !s.meta.is_empty() && !s.keys.is_empty());
    assert!(s.user_data.is_some() && s.vendor_data.is_some() && s.vendor_data2.is_some());
    assert!(s.network_data.is_some() && !s.devices.is_empty());
    // Documented in comments rather than set, so the demo guest can post a password.
    assert!(s.password.is_none() && s.user_data_b64.is_none());
    let text = sample_text();
    assert!(text.contains("# password = ") && text.contains("user_data_b64"));
}

#[test]
fn typo_names_the_field_and_its_line() {
    let text = sample_text().replacen("hostname = \"demo-vm\"", "hostnme = \"demo-vm\"", 1);
    let line = text
        .lines()
        .position(|l| l.starts_with("hostnme"))
        .expect("typo present")
        + 1;
    let err = parse_instance(&text, Format::Toml).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("hostnme"), "{shown}");
    assert!(shown.starts_with(&format!("line {line},")), "{shown}");
    assert!(matches!(err, InstanceError::Syntax { line: Some(l), .. } if l == line));

    // Inside a table, too.
    let text = sample_text().replacen("type = \"ssh\"", "typ = \"ssh\"", 1);
    let line = text
        .lines()
        .position(|l| l.starts_with("typ ="))
        .expect("typo present")
        + 1;
    let shown = parse_instance(&text, Format::Toml).unwrap_err().to_string();
    assert!(
        shown.contains("typ") && shown.starts_with(&format!("line {line},")),
        "{shown}"
    );

    let json = "{\n  \"uuid\": \"u\",\n  \"project_id\": \"p\",\n  \"flaoting_ips\": []\n}";
    let shown = parse_instance(json, Format::Json).unwrap_err().to_string();
    assert!(
        shown.contains("flaoting_ips") && shown.starts_with("line 4,"),
        "{shown}"
    );
}

#[test]
fn wrong_types_and_missing_fields() {
    for (text, needle) in [
        ("uuid = \"u\"\n", "project_id"),
        (
            "uuid = \"u\"\nproject_id = \"p\"\nlaunch_index = \"zero\"\n",
            "line 3",
        ),
        (
            "uuid = \"u\"\nproject_id = \"p\"\nfixed_ips = [\"10.0.0.256\"]\n",
            "line 3",
        ),
        (
            "uuid = \"u\"\nproject_id = \"p\"\n[meta]\nn = 1\n",
            "line 4",
        ),
        (
            "uuid = \"u\"\nproject_id = \"p\"\n[[keys]]\nname = \"k\"\n",
            "data",
        ),
        (
            "uuid = \"u\"\nproject_id = \"p\"\nvendor_data = [1]\n",
            "line 3",
        ),
        ("uuid = \"u\"\nproject_id = \"p\"\nuuid = \"v\"\n", "line 3"),
        (
            "uuid = \"u\"\nproject_id = \"p\"\nuser_data = \"a\"\nuser_data_b64 = \"YQ==\"\n",
            "user_data_b64",
        ),
    ] {
        let shown = parse_instance(text, Format::Toml).unwrap_err().to_string();
        assert!(shown.contains(needle), "{text:?} → {shown}");
    }
}
