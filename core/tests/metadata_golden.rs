//! Golden files: every path of the sample instance (`tests/golden/instance.toml`) in several
//! versions of both trees, crawled the way a client does, compared byte for byte with
//! `tests/golden/{root,ec2/,openstack/}`. A directory's listing is stored as `<dir>/.listing`.
//!
//! The expected files were written from the reference (§C5/§C6: Nova's `get_ec2_metadata`,
//! `ec2_md_print`, `_metadata_as_json`, Python's `json.dumps` format) rather than from this
//! code's output; `random_seed` is stable because the test entropy fills byte `i` with `i`.
//!
//! To rewrite them after an intended change: `UPDATE_GOLDEN=1 cargo test -p mdproxy-core --test
//! metadata_golden`, then review the diff (`git diff core/tests/golden`) line by line.
// Tests read golden files and take an opaque epoch: the sans-IO lints are for the library.
#![allow(clippy::disallowed_methods)]

mod metadata_support;

use std::collections::BTreeMap;
use std::path::Path;

use mdproxy_core::metadata::{MetaResponse, APPLICATION_JSON, TEXT_HTML_UTF8, TEXT_PLAIN};
use metadata_support::{golden_dir, Harness};

use mdproxy_core::metadata::ImdsV2;

const EC2_VERSIONS: &[&str] = &["1.0", "2007-12-15", "2009-04-04", "latest"];
const OS_VERSIONS: &[&str] = &[
    "2012-08-10",
    "2013-04-04",
    "2015-10-15",
    "2016-06-30",
    "2020-10-14",
    "latest",
];

/// Relative golden path → (request path, response).
type Crawl = BTreeMap<String, (String, MetaResponse)>;

fn fetch(h: &mut Harness, out: &mut Crawl, rel: String, path: String) -> MetaResponse {
    let r = h.get(&path);
    assert_eq!(
        r.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    // HEAD answers like GET (the connection drops the body).
    let head = h.send("HEAD", &path, &[], b"");
    if !path.ends_with("/password") {
        assert_eq!(head, r, "HEAD {path}");
    }
    out.insert(rel, (path, r.clone()));
    r
}

/// Walks an EC2 directory like cloud-init's crawler: `x/` is a directory, `N=name` names
/// directory `N`, anything else is a leaf.
fn crawl_ec2(h: &mut Harness, out: &mut Crawl, rel: &str, path: &str) {
    let listing = fetch(h, out, format!("{rel}/.listing"), format!("{path}/"));
    let text = String::from_utf8(listing.body).expect("listing is text");
    for line in text.split('\n') {
        if let Some(dir) = line.strip_suffix('/') {
            crawl_ec2(h, out, &format!("{rel}/{dir}"), &format!("{path}/{dir}"));
        } else if let Some((idx, _name)) = line.split_once('=') {
            crawl_ec2(h, out, &format!("{rel}/{idx}"), &format!("{path}/{idx}"));
        } else {
            fetch(h, out, format!("{rel}/{line}"), format!("{path}/{line}"));
        }
    }
}

fn crawl_all() -> Crawl {
    let mut h = Harness::new(ImdsV2::Optional);
    let mut out = Crawl::new();
    fetch(&mut h, &mut out, "root".into(), "/".into());
    fetch(&mut h, &mut out, "ec2/.listing".into(), "/ec2".into());
    for v in EC2_VERSIONS {
        crawl_ec2(&mut h, &mut out, &format!("ec2/{v}"), &format!("/{v}"));
    }
    fetch(
        &mut h,
        &mut out,
        "openstack/.listing".into(),
        "/openstack".into(),
    );
    for v in OS_VERSIONS {
        let listing = fetch(
            &mut h,
            &mut out,
            format!("openstack/{v}/.listing"),
            format!("/openstack/{v}"),
        );
        for file in String::from_utf8(listing.body).expect("text").split('\n') {
            fetch(
                &mut h,
                &mut out,
                format!("openstack/{v}/{file}"),
                format!("/openstack/{v}/{file}"),
            );
        }
    }
    out
}

fn golden_files(dir: &Path, rel: &str, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("golden dir")
        .map(|e| e.expect("entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().into_string().expect("utf-8 name");
        let rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if e.file_type().expect("type").is_dir() {
            golden_files(&e.path(), &rel, out);
        } else {
            out.push(rel);
        }
    }
}

fn tree_files() -> Vec<String> {
    let mut files = Vec::new();
    golden_files(&golden_dir(), "", &mut files);
    files.retain(|f| f == "root" || f.starts_with("ec2/") || f.starts_with("openstack/"));
    files
}

#[test]
fn every_path_matches_its_golden_file() {
    let crawl = crawl_all();
    let dir = golden_dir();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        for sub in ["ec2", "openstack"] {
            let _ = std::fs::remove_dir_all(dir.join(sub));
        }
        for (rel, (_, r)) in &crawl {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &r.body).expect("write golden");
        }
        return;
    }
    let mut mismatches = Vec::new();
    for (rel, (path, r)) in &crawl {
        match std::fs::read(dir.join(rel)) {
            Ok(want) if want == r.body => {}
            Ok(want) => mismatches.push(format!(
                "{path} ({rel}):\n  want {:?}\n  got  {:?}",
                String::from_utf8_lossy(&want),
                String::from_utf8_lossy(&r.body)
            )),
            Err(e) => mismatches.push(format!("{path}: no golden file {rel} ({e})")),
        }
    }
    let crawled: Vec<&String> = crawl.keys().collect();
    for f in tree_files() {
        if !crawl.contains_key(&f) {
            mismatches.push(format!("golden file {f} was not reached by the crawl"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches (crawled {}):\n{}",
        mismatches.len(),
        crawled.len(),
        mismatches.join("\n")
    );
}

#[test]
fn content_types() {
    for (rel, (path, r)) in crawl_all() {
        let want = if rel.ends_with(".json") {
            APPLICATION_JSON
        } else if rel.ends_with("/password") {
            TEXT_HTML_UTF8
        } else {
            TEXT_PLAIN
        };
        assert_eq!(r.content_type, want, "{path}");
        assert!(r.headers.is_empty() && r.store.is_none(), "{path}");
    }
}

#[test]
fn json_files_parse_and_carry_the_version_fields() {
    let crawl = crawl_all();
    let md = |v: &str| -> serde_json::Value {
        let (_, r) = &crawl[&format!("openstack/{v}/meta_data.json")];
        serde_json::from_slice(&r.body).expect("valid JSON")
    };
    let has = |v: &str, k: &str| md(v).get(k).is_some();
    for v in OS_VERSIONS {
        for k in [
            "uuid",
            "meta",
            "public_keys",
            "keys",
            "hostname",
            "name",
            "launch_index",
            "availability_zone",
        ] {
            assert!(has(v, k), "{v} lacks {k}");
        }
    }
    assert!(!has("2012-08-10", "random_seed") && has("2013-04-04", "random_seed"));
    assert!(!has("2013-04-04", "project_id") && has("2015-10-15", "project_id"));
    assert!(!has("2015-10-15", "devices") && has("2016-06-30", "devices"));
    assert!(!has("2016-06-30", "dedicated_cpus") && has("2020-10-14", "dedicated_cpus"));
    assert_eq!(md("latest"), md("2020-10-14"));
    for (rel, (_, r)) in &crawl {
        if rel.ends_with(".json") {
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect(rel);
            assert!(v.is_object(), "{rel}");
        }
    }
}

#[test]
fn equivalent_spellings_give_the_same_answer() {
    let mut h = Harness::new(ImdsV2::Optional);
    let base = h.get("/latest/meta-data/placement/availability-zone");
    for alias in [
        "/latest/meta-data/placement/availability-zone/",
        "/ec2/latest/meta-data/placement/availability-zone",
        "/2009-04-04//meta-data///placement/availability-zone",
        "/latest/./meta-data/x/../placement/availability-zone",
        "/latest/meta-data/placement/availability-zone?foo=bar",
        "http://169.254.169.254/latest/meta-data/placement/availability-zone",
    ] {
        assert_eq!(h.get(alias), base, "{alias}");
    }
    let versions = h.get("/");
    assert_eq!(h.get("/ec2/"), versions);
    assert_eq!(h.get("//"), versions);
    assert_eq!(
        h.get("/openstack/latest/meta_data.json/"),
        h.get("/openstack/2020-10-14/meta_data.json")
    );
}
