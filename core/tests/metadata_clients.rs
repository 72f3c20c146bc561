//! The request sequences of real clients (reference §D) get the answers those clients need:
//! cloud-init's OpenStack and EC2 datasources, and botocore's IMDS fetcher.
// Tests read golden files and take an opaque epoch: the sans-IO lints are for the library.
#![allow(clippy::disallowed_methods)]

mod metadata_support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mdproxy_core::metadata::ImdsV2;
use metadata_support::{other, sample, text, Harness};

/// cloud-init's `DataSourceOpenStack` (sources/helpers/openstack.py).
#[test]
fn cloud_init_openstack_datasource() {
    let mut h = Harness::new(ImdsV2::Optional);
    // (1) probe: success = 2xx with a non-empty body.
    let probe = h.get("/openstack");
    assert_eq!(probe.status, 200);
    assert!(!probe.body.is_empty());
    // (2) pick the newest version it knows that is listed.
    let listed: Vec<String> = text(&h.get("/openstack"))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed.last().map(String::as_str), Some("latest"));
    let known = [
        "2018-08-27",
        "2017-02-22",
        "2016-10-06",
        "2016-06-30",
        "2015-10-15",
        "2013-10-17",
        "2013-04-04",
        "2012-08-10",
    ];
    let v = known
        .iter()
        .find(|k| listed.iter().any(|l| l == *k))
        .expect("a known version is listed");
    assert_eq!(*v, "2018-08-27");
    // (3) meta_data.json is mandatory: JSON with uuid, random_seed valid base64.
    let md = h.get(&format!("/openstack/{v}/meta_data.json"));
    assert_eq!((md.status, md.content_type), (200, "application/json"));
    let md: serde_json::Value = serde_json::from_slice(&md.body).expect("meta_data.json is JSON");
    assert_eq!(md["uuid"], sample().uuid.as_str());
    let seed = STANDARD
        .decode(md["random_seed"].as_str().expect("random_seed is a string"))
        .expect("random_seed is base64");
    assert_eq!(seed.len(), 512);
    assert_eq!(md["hostname"], "demo-vm.novalocal");
    assert_eq!(
        md["public_keys"]["demo-key"],
        sample().keys[0].data.as_str()
    );
    // vlan appears from 2017-02-22 on, vf_trusted from 2018-08-27 on.
    assert_eq!(md["devices"][0]["vlan"], 100);
    assert_eq!(md["devices"][0]["vf_trusted"], false);
    // Optional files: all present for the sample.
    let ud = h.get(&format!("/openstack/{v}/user_data"));
    assert_eq!(ud.status, 200);
    assert_eq!(
        ud.body,
        sample().user_data.expect("sample has user data").as_bytes()
    );
    for f in ["vendor_data.json", "vendor_data2.json", "network_data.json"] {
        let r = h.get(&format!("/openstack/{v}/{f}"));
        assert_eq!(r.status, 200, "{f}");
        let _: serde_json::Value = serde_json::from_slice(&r.body).expect(f);
    }
    // (5) the EC2 crawl that follows.
    crawl_ec2_like_cloud_init(&mut h, "/latest/meta-data");
}

/// An instance without user data: `user_data` is a fast-failing 404 (not retried), the
/// listings leave it out, and `vendor_data2.json` is Nova's default.
#[test]
fn cloud_init_openstack_without_user_data() {
    let mut h = Harness::new(ImdsV2::Optional);
    let o = other();
    let listing = h.send_as(&o, "GET", "/openstack/latest", &[], b"");
    assert!(!text(&listing).contains("user_data"), "{}", text(&listing));
    let ud = h.send_as(&o, "GET", "/openstack/latest/user_data", &[], b"");
    assert_eq!(ud.status, 404);
    assert!(![408, 429, 500, 502, 503, 504].contains(&ud.status));
    let v2 = h.send_as(&o, "GET", "/openstack/latest/vendor_data2.json", &[], b"");
    assert_eq!(text(&v2), r#"{"static": {}}"#);
    for f in ["vendor_data.json", "network_data.json"] {
        assert_eq!(
            text(&h.send_as(&o, "GET", &format!("/openstack/latest/{f}"), &[], b"")),
            "{}"
        );
    }
    let md = h.send_as(&o, "GET", "/openstack/latest/meta_data.json", &[], b"");
    let md: serde_json::Value = serde_json::from_slice(&md.body).expect("JSON");
    assert!(
        md.get("meta").is_none() && md.get("keys").is_none() && md.get("public_keys").is_none()
    );
    assert_eq!(md["devices"], serde_json::json!([]));
    let ec2 = h.send_as(&o, "GET", "/latest", &[], b"");
    assert_eq!(text(&ec2), "meta-data/");
    assert_eq!(
        h.send_as(&o, "GET", "/latest/user-data", &[], b"").status,
        404
    );
    let keys = h.send_as(&o, "GET", "/latest/meta-data/public-keys/", &[], b"");
    assert_eq!(keys.status, 404, "no key pair, no public-keys/");
}

/// Recursive crawl as cloud-init's `ec2.MetadataMaterializer`: `x/` is a directory, `0=name`
/// means fetch `0/openssh-key`; every listed path must answer 200.
fn crawl_ec2_like_cloud_init(h: &mut Harness, base: &str) -> usize {
    let listing = h.get(&format!("{base}/"));
    assert_eq!(listing.status, 200, "{base}/");
    let mut leaves = 0;
    for line in text(&listing).to_owned().lines() {
        if let Some(dir) = line.strip_suffix('/') {
            if dir == "security-credentials" {
                continue;
            }
            leaves += crawl_ec2_like_cloud_init(h, &format!("{base}/{dir}"));
        } else if let Some((idx, name)) = line.split_once('=') {
            assert_eq!(name, "demo-key");
            let key = h.get(&format!("{base}/{idx}/openssh-key"));
            assert_eq!(key.status, 200);
            assert_eq!(text(&key), sample().keys[0].data);
            leaves += 1;
        } else {
            let r = h.get(&format!("{base}/{line}"));
            assert_eq!(r.status, 200, "{base}/{line}");
            leaves += 1;
        }
    }
    leaves
}

/// cloud-init's `DataSourceEc2` on a non-AWS cloud (no token).
#[test]
fn cloud_init_ec2_datasource() {
    let mut h = Harness::new(ImdsV2::Optional);
    let id = h.get("/2009-04-04/meta-data/instance-id");
    assert_eq!((id.status, text(&id)), (200, "i-0000002a"));
    // Extended-version probes must 404 so that it falls back to 2009-04-04.
    for v in ["2021-03-23", "2018-09-24", "2016-09-02"] {
        assert_eq!(
            h.get(&format!("/{v}/meta-data/instance-id")).status,
            404,
            "{v}"
        );
    }
    let ud = h.get("/2009-04-04/user-data");
    assert_eq!(ud.status, 200);
    assert!(text(&ud).starts_with("#cloud-config\n"));
    let leaves = crawl_ec2_like_cloud_init(&mut h, "/2009-04-04/meta-data");
    assert_eq!(leaves, 21);
    assert_eq!(text(&h.get("/2009-04-04/meta-data/local-ipv4")), "10.0.0.5");
    assert_eq!(
        text(&h.get("/2009-04-04/meta-data/public-ipv4")),
        "203.0.113.10"
    );
    assert_eq!(
        text(&h.get("/2009-04-04/meta-data/local-hostname")),
        "demo-vm.novalocal"
    );
}

/// cloud-init's AWS path: PUT a token, use it on every request.
#[test]
fn cloud_init_ec2_with_token() {
    let mut h = Harness::with(
        ImdsV2::Required,
        false,
        std::sync::Arc::new(metadata_support::Counter(1.into())),
    );
    let tok = h.send(
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
        b"",
    );
    assert_eq!(tok.status, 200);
    let token = text(&tok).to_owned();
    let with = [("X-aws-ec2-metadata-token", token.as_str())];
    let r = h.send("GET", "/2009-04-04/meta-data/instance-id", &with, b"");
    assert_eq!((r.status, text(&r)), (200, "i-0000002a"));
    assert_eq!(
        h.send("GET", "/2016-09-02/meta-data/instance-id", &with, b"")
            .status,
        404
    );
    // Token dropped → 401 (cloud-init then asks for a new one).
    assert_eq!(h.get("/2009-04-04/meta-data/instance-id").status, 401);
}

/// botocore's `IMDSFetcher`: token PUT (lower-case header), then GETs with the token.
#[test]
fn botocore_imds_fetcher() {
    for mode in [ImdsV2::Optional, ImdsV2::Required] {
        let mut h = Harness::with(
            mode,
            false,
            std::sync::Arc::new(metadata_support::Counter(7.into())),
        );
        let tok = h.send(
            "PUT",
            "/latest/api/token",
            &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
            b"",
        );
        assert_eq!(tok.status, 200, "{mode:?}");
        assert!(!tok.body.is_empty());
        assert_eq!(
            tok.headers,
            vec![("X-aws-ec2-metadata-token-ttl-seconds", "21600".to_owned())]
        );
        let token = text(&tok).to_owned();
        let with = [("x-aws-ec2-metadata-token", token.as_str())];
        // Region fetcher.
        let az = h.send(
            "GET",
            "/latest/meta-data/placement/availability-zone",
            &with,
            b"",
        );
        assert_eq!((az.status, text(&az)), (200, "nova"));
        // Credentials: Nova has no IAM; a 404 makes botocore give up quickly.
        let creds = h.send(
            "GET",
            "/latest/meta-data/iam/security-credentials/",
            &with,
            b"",
        );
        assert_eq!(creds.status, 404);
    }
}

/// botocore against a server without IMDSv2: the PUT must be 404/403/405 (never 400), then
/// IMDSv1 GETs work.
#[test]
fn botocore_falls_back_when_imdsv2_is_off() {
    let mut h = Harness::new(ImdsV2::Off);
    let tok = h.send(
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
        b"",
    );
    assert_eq!(tok.status, 404);
    let az = h.get("/latest/meta-data/placement/availability-zone");
    assert_eq!((az.status, text(&az)), (200, "nova"));
    // A stray token header is ignored when tokens are off.
    let r = h.send(
        "GET",
        "/latest/meta-data/instance-id",
        &[("X-aws-ec2-metadata-token", "bogus")],
        b"",
    );
    assert_eq!(r.status, 200);
}
