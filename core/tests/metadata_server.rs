//! Identity, methods, the password lifecycle and IMDSv2 tokens, through
//! `MetadataService::respond` with heads parsed by the real HTTP parser.
// Tests read golden files and take an opaque epoch: the sans-IO lints are for the library.
#![allow(clippy::disallowed_methods)]

mod metadata_support;

use std::net::IpAddr;
use std::sync::Arc;

use mdproxy_core::metadata::{
    parse_instance, Date, Format, ImdsV2, MetaResponse, StoreRequest, TEXT_PLAIN,
};
use metadata_support::{other, sample, sample_text, text, Counter, Harness};

const ID: &str = "X-Instance-ID";
const SIG: &str = "X-Instance-ID-Signature";
const TENANT: &str = "X-Tenant-ID";

fn status_text(r: &MetaResponse) -> (u16, &str) {
    (r.status, text(r))
}

// ---------------------------------------------------------------- identity (proxy mode)

#[test]
fn missing_and_duplicate_identity_headers_give_novas_400s() {
    let mut h = Harness::new(ImdsV2::Optional);
    let s = sample();
    let sig = h.signer.sign(&s.uuid).to_string();
    let (id, tenant) = (s.uuid.as_str(), s.project_id.as_str());
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "nothing",
            vec![],
            "X-Instance-ID header is missing from request.",
        ),
        (
            "no instance id",
            vec![(SIG, &sig), (TENANT, tenant)],
            "X-Instance-ID header is missing from request.",
        ),
        (
            "no signature",
            vec![(ID, id), (TENANT, tenant)],
            "X-Instance-ID-Signature header is missing from request.",
        ),
        (
            "no tenant",
            vec![(ID, id), (SIG, &sig)],
            "X-Tenant-ID header is missing from request.",
        ),
        (
            "missing signature wins over duplicate id (Nova's order)",
            vec![(ID, id), (ID, id), (TENANT, tenant)],
            "X-Instance-ID-Signature header is missing from request.",
        ),
        (
            "two instance ids",
            vec![(ID, id), (ID, id), (SIG, &sig), (TENANT, tenant)],
            "Multiple X-Instance-ID headers found within request.",
        ),
        (
            "two tenant ids",
            vec![(ID, id), (SIG, &sig), (TENANT, tenant), (TENANT, tenant)],
            "Multiple X-Tenant-ID headers found within request.",
        ),
        (
            "lower-case names are the same headers",
            vec![
                ("x-instance-id", id),
                ("X-INSTANCE-ID", id),
                (SIG, &sig),
                (TENANT, tenant),
            ],
            "Multiple X-Instance-ID headers found within request.",
        ),
    ];
    for (name, headers, msg) in cases {
        let r = h.raw("GET", "/latest/meta-data/instance-id", &headers, b"", None);
        assert_eq!(status_text(&r), (400, msg), "{name}");
        assert_eq!(r.content_type, TEXT_PLAIN);
    }
}

#[test]
fn bad_signatures_are_403() {
    let mut h = Harness::new(ImdsV2::Optional);
    let s = sample();
    let good = h.signer.sign(&s.uuid).to_string();
    let upper = good.to_uppercase();
    let other_sig = h.signer.sign(&other().uuid).to_string();
    let wrong_secret = mdproxy_core::sign::Signer::new(b"other")
        .sign(&s.uuid)
        .to_string();
    for (name, sigs) in [
        ("wrong secret", vec![wrong_secret.as_str()]),
        ("uppercase hex of the right MAC", vec![upper.as_str()]),
        ("another instance's signature", vec![other_sig.as_str()]),
        ("empty", vec![""]),
        ("truncated", vec![&good[..63]]),
        (
            "two copies of the right one",
            vec![good.as_str(), good.as_str()],
        ),
    ] {
        let mut headers = vec![(ID, s.uuid.as_str()), (TENANT, s.project_id.as_str())];
        headers.extend(sigs.iter().map(|sig| (SIG, *sig)));
        let r = h.raw("GET", "/latest/meta-data/instance-id", &headers, b"", None);
        assert_eq!(
            status_text(&r),
            (403, "Invalid proxy request signature."),
            "{name}"
        );
    }
    // The right one passes.
    let r = h.raw(
        "GET",
        "/latest/meta-data/instance-id",
        &[(ID, &s.uuid), (TENANT, &s.project_id), (SIG, &good)],
        b"",
        None,
    );
    assert_eq!(status_text(&r), (200, "i-0000002a"));
}

#[test]
fn unknown_instance_or_other_project_is_404() {
    let mut h = Harness::new(ImdsV2::Optional);
    let s = sample();
    // Correctly signed, but no such instance.
    let ghost = "11111111-2222-3333-4444-555555555555";
    let ghost_sig = h.signer.sign(ghost).to_string();
    let r = h.raw(
        "GET",
        "/latest/meta-data/instance-id",
        &[(ID, ghost), (TENANT, &s.project_id), (SIG, &ghost_sig)],
        b"",
        None,
    );
    assert_eq!(r.status, 404);
    // LP#1235450: right instance and signature, another project.
    let sig = h.signer.sign(&s.uuid).to_string();
    let r = h.raw(
        "GET",
        "/openstack/latest/meta_data.json",
        &[(ID, &s.uuid), (TENANT, "other-project"), (SIG, &sig)],
        b"",
        None,
    );
    assert_eq!(r.status, 404);
    assert!(!text(&r).contains(&s.uuid));
}

#[test]
fn root_needs_no_identity_and_everything_else_does() {
    let mut h = Harness::new(ImdsV2::Optional);
    let versions = "1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n2008-02-01\n2008-09-01\n2009-04-04\nlatest";
    for target in ["/", "//", "/?x=1", "/.."] {
        let r = h.raw("GET", target, &[], b"", None);
        assert_eq!(status_text(&r), (200, versions), "{target}");
    }
    for target in [
        "/ec2",
        "/latest",
        "/openstack",
        "/nonexistent",
        "/openstack/2099-01-01",
    ] {
        assert_eq!(h.raw("GET", target, &[], b"", None).status, 400, "{target}");
    }
}

#[test]
fn proxy_mode_without_signer_refuses_everyone() {
    let mut h = Harness::new(ImdsV2::Optional);
    let mut svc =
        mdproxy_core::metadata::MetadataService::new(mdproxy_core::metadata::ServerConfig {
            signer: None,
            direct: false,
            imdsv2: ImdsV2::Optional,
            dhcp_domain: String::new(),
            today: metadata_support::TODAY,
            entropy: Arc::new(metadata_support::Pattern),
            tokens: metadata_support::tokens(),
        });
    svc.set_instances(vec![sample()]);
    std::mem::swap(&mut h.svc, &mut svc);
    assert_eq!(h.get("/latest/meta-data/instance-id").status, 403);
}

// ---------------------------------------------------------------- direct mode

#[test]
fn direct_mode_identifies_by_peer_ip() {
    let mut h = Harness::with(ImdsV2::Optional, true, Arc::new(metadata_support::Pattern));
    let ip = |s: &str| -> Option<IpAddr> { Some(s.parse().expect("ip")) };
    let r = h.raw(
        "GET",
        "/latest/meta-data/instance-id",
        &[],
        b"",
        ip("10.0.0.5"),
    );
    assert_eq!(status_text(&r), (200, "i-0000002a"));
    // Any of the fixed IPs, IPv6 too; an IPv4-mapped peer counts as IPv4.
    assert_eq!(
        h.raw(
            "GET",
            "/latest/meta-data/instance-id",
            &[],
            b"",
            ip("fd00::5")
        )
        .status,
        200
    );
    assert_eq!(
        h.raw(
            "GET",
            "/latest/meta-data/instance-id",
            &[],
            b"",
            ip("::ffff:10.0.0.5")
        )
        .status,
        200
    );
    let r = h.raw(
        "GET",
        "/latest/meta-data/instance-id",
        &[],
        b"",
        ip("10.0.0.9"),
    );
    assert_eq!(
        status_text(&r),
        (200, "i-0d5e3c1c"),
        "the other instance, default ec2 id"
    );
    // Headers do not override the address.
    let s = sample();
    let sig = h.signer.sign(&s.uuid).to_string();
    let spoof = [
        (ID, s.uuid.as_str()),
        (TENANT, s.project_id.as_str()),
        (SIG, sig.as_str()),
    ];
    let r = h.raw(
        "GET",
        "/latest/meta-data/instance-id",
        &spoof,
        b"",
        ip("10.0.0.9"),
    );
    assert_eq!(text(&r), "i-0d5e3c1c");
    // Unknown or missing peer: 404.
    assert_eq!(
        h.raw(
            "GET",
            "/latest/meta-data/instance-id",
            &[],
            b"",
            ip("10.0.0.77")
        )
        .status,
        404
    );
    assert_eq!(
        h.raw("GET", "/latest/meta-data/instance-id", &[], b"", None)
            .status,
        404
    );
    assert_eq!(h.raw("GET", "/", &[], b"", None).status, 200);
}

#[test]
fn direct_mode_ambiguous_ip_identifies_nobody() {
    let mut h = Harness::with(ImdsV2::Optional, true, Arc::new(metadata_support::Pattern));
    let mut twin = other();
    twin.uuid = "twin".into();
    twin.fixed_ips = vec!["10.0.0.5".parse().expect("ip")];
    h.svc.set_instances(vec![sample(), twin]);
    let peer = Some("10.0.0.5".parse().expect("ip"));
    assert_eq!(
        h.raw("GET", "/latest/meta-data/instance-id", &[], b"", peer)
            .status,
        404
    );
    let peer6 = Some("fd00::5".parse().expect("ip"));
    assert_eq!(
        h.raw("GET", "/latest/meta-data/instance-id", &[], b"", peer6)
            .status,
        200
    );
}

#[test]
fn local_ipv4_falls_back_to_the_request_address() {
    let mut h = Harness::new(ImdsV2::Optional);
    let mut v6only = other();
    v6only.fixed_ips = vec!["fd00::9".parse().expect("ip")];
    h.svc.set_instances(vec![sample(), v6only.clone()]);
    let mut headers = h.identity(&v6only);
    headers[0].1 = "192.0.2.7".into(); // X-Forwarded-For
    let hv: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = h.raw("GET", "/latest/meta-data/local-ipv4", &hv, b"", None);
    assert_eq!(status_text(&r), (200, "192.0.2.7"));
}

// ---------------------------------------------------------------- paths and methods

#[test]
fn unknown_paths_and_traversal_are_404() {
    let mut h = Harness::new(ImdsV2::Optional);
    for target in [
        "/2016-09-02/meta-data/instance-id",
        "/latest/meta-data/nonexistent",
        "/latest/meta-data/ami-id/more",
        "/latest/meta-data/security-groups/default",
        "/latest/meta-data/public-keys/0=demo-key",
        "/latest/%2e%2e/%2e%2e/etc/passwd",
        "/openstack/2099-01-01/meta_data.json",
        "/openstack/latest/nope.json",
        "/openstack/2012-08-10/password",
        "/openstack/2013-04-04/vendor_data.json",
        "/openstack/2013-10-17/network_data.json",
        "/openstack/2016-06-30/vendor_data2.json",
        "/openstack/content/0000",
        "/openstack/latest/meta_data.json/uuid",
        "/ec2/ec2/latest",
    ] {
        let r = h.get(target);
        assert_eq!(r.status, 404, "{target}: {}", text(&r));
    }
    // An escaped `/` has no single meaning (eventlet decodes it, we would not): refused.
    assert_eq!(
        h.get("/latest/meta-data/placement%2favailability-zone")
            .status,
        400
    );
    // Escaped dots are dots (as behind eventlet, which decodes PATH_INFO), resolved in the tree.
    assert_eq!(
        text(&h.get("/latest/meta-data/%2e%2e/meta-data/ami-id")),
        "ami-00000001"
    );
    // `..` is resolved inside the tree, like posixpath.normpath: it can only reach tree paths.
    assert_eq!(
        text(&h.get("/latest/meta-data/../../../latest/meta-data/ami-id")),
        "ami-00000001"
    );
    assert_eq!(h.get("/../../../etc/passwd").status, 404);
}

#[test]
fn openstack_versions_hide_the_future() {
    let mut h = Harness::new(ImdsV2::Optional);
    h.svc.set_today(Date::new(2016, 6, 30));
    assert_eq!(
        text(&h.get("/openstack")),
        "2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\nlatest"
    );
    // Still resolvable explicitly, and `latest` is still the newest.
    assert_eq!(h.get("/openstack/2020-10-14/meta_data.json").status, 200);
    assert!(text(&h.get("/openstack/latest/meta_data.json")).contains("dedicated_cpus"));
}

#[test]
fn methods() {
    let mut h = Harness::new(ImdsV2::Optional);
    for m in ["GET", "HEAD", "POST"] {
        assert_eq!(
            h.send(m, "/latest/meta-data/ami-id", &[], b"").status,
            200,
            "{m}"
        );
    }
    for m in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = h.send(m, "/latest/meta-data/ami-id", &[], b"");
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.headers, vec![("Allow", "GET, HEAD, POST".to_owned())]);
        assert_eq!(h.send(m, "/", &[], b"").status, 405, "{m} /");
    }
    // GET on the token path when tokens are on.
    let r = h.send("GET", "/latest/api/token", &[], b"");
    assert_eq!(
        (r.status, r.headers.clone()),
        (405, vec![("Allow", "PUT".to_owned())])
    );
    // Off: the token path is an ordinary missing path, PUT included.
    let mut off = Harness::new(ImdsV2::Off);
    for m in ["GET", "PUT", "POST"] {
        assert_eq!(
            off.send(
                m,
                "/latest/api/token",
                &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
                b""
            )
            .status,
            404,
            "{m}"
        );
    }
    assert_eq!(off.send("PUT", "/latest/meta-data/", &[], b"").status, 405);
}

// ---------------------------------------------------------------- password

#[test]
fn password_lifecycle() {
    let mut h = Harness::new(ImdsV2::Optional);
    let url = "/openstack/latest/password";
    // Unset: empty 200.
    let r = h.get(url);
    assert_eq!(
        (r.status, r.body.as_slice(), r.content_type),
        (200, &b""[..], "text/html; charset=UTF-8")
    );
    // Too large (checked after "already set", which it isn't yet).
    let big = vec![b'a'; 1021];
    assert_eq!(
        status_text(&h.send("POST", url, &[], &big)),
        (400, "Request is too large.")
    );
    // Other methods: Nova's 400, HEAD included (Nova compares the method with GET and POST).
    for m in ["PUT", "DELETE", "HEAD"] {
        assert_eq!(
            status_text(&h.send(m, url, &[], b"x")),
            (400, "GET and POST only are supported."),
            "{m}"
        );
    }
    // Exactly 1020 bytes is fine; the effect is returned for the runtime to persist.
    let pw = "p".repeat(1020);
    let r = h.send("POST", url, &[], pw.as_bytes());
    assert_eq!((r.status, r.body.as_slice()), (200, &b""[..]));
    let sample_uuid = sample().uuid;
    assert_eq!(
        r.store,
        Some(StoreRequest {
            instance_uuid: sample_uuid.clone(),
            password: pw.clone()
        })
    );
    // In memory at once (Nova needs up to 15 s for its cache).
    assert_eq!(text(&h.get(url)), pw);
    assert_eq!(text(&h.get("/openstack/2013-04-04/password")), pw);
    assert_eq!(
        h.svc
            .instance(&sample_uuid)
            .and_then(|d| d.password.clone()),
        Some(pw.clone())
    );
    // Set once: 409, even for an oversized body (conflict is checked first, as in Nova).
    let r = h.send("POST", url, &[], b"again");
    assert_eq!(r.status, 409);
    assert!(r.store.is_none());
    assert_eq!(h.send("POST", url, &[], &big).status, 409);
    // Another instance is unaffected.
    let o = other();
    assert_eq!(h.send_as(&o, "GET", url, &[], b"").body, b"");

    // The runtime saves it and hands it back with the instance after a restart; then it is
    // served, and a reset still refused.
    let mut reloaded = parse_instance(&sample_text(), Format::Toml).expect("parses");
    reloaded.password = Some(pw.clone());
    let mut fresh = Harness::new(ImdsV2::Optional);
    fresh.svc.set_instances(vec![reloaded, other()]);
    assert_eq!(text(&fresh.get(url)), pw);
    assert_eq!(fresh.send("POST", url, &[], b"x").status, 409);
}

#[test]
fn password_edge_cases() {
    let mut h = Harness::new(ImdsV2::Optional);
    let url = "/openstack/latest/password";
    // An empty POST changes nothing (Nova stores '' which reads as unset).
    let r = h.send("POST", url, &[], b"");
    assert_eq!((r.status, r.store.clone()), (200, None));
    assert_eq!(h.send("POST", url, &[], b"x").status, 200);
    // Not UTF-8.
    let mut h = Harness::new(ImdsV2::Optional);
    assert_eq!(h.send("POST", url, &[], b"\xff\xfe").status, 400);
    // Identity comes first, as in Nova.
    assert_eq!(h.raw("DELETE", url, &[], b"", None).status, 400);
    assert_eq!(
        status_text(&h.raw("DELETE", url, &[], b"", None)).1,
        "X-Instance-ID header is missing from request."
    );
}

#[test]
fn set_instances_replaces_and_tokens_name_their_instance() {
    let mut h = Harness::with(ImdsV2::Required, false, Arc::new(Counter(3.into())));
    let ttl = [("X-aws-ec2-metadata-token-ttl-seconds", "60")];
    let s_tok = text(&h.send("PUT", "/latest/api/token", &ttl, b"")).to_owned();
    let o = other();
    let o_tok = text(&h.send_as(&o, "PUT", "/latest/api/token", &ttl, b"")).to_owned();
    assert_eq!(h.svc.instance_count(), 2);
    h.svc.set_instances(vec![sample()]);
    assert_eq!(h.svc.instance_count(), 1);
    let r = h.send(
        "GET",
        "/latest/meta-data/instance-id",
        &[("X-aws-ec2-metadata-token", &s_tok)],
        b"",
    );
    assert_eq!(r.status, 200);
    // The other instance is gone (404). Tokens are stateless (HMAC-tagged, carrying their
    // expiry): when the same instance comes back, its unexpired token names it again.
    assert_eq!(
        h.send_as(
            &o,
            "GET",
            "/latest/meta-data/instance-id",
            &[("X-aws-ec2-metadata-token", &o_tok)],
            b""
        )
        .status,
        404
    );
    h.svc.set_instances(vec![sample(), other()]);
    assert_eq!(
        h.send_as(
            &o,
            "GET",
            "/latest/meta-data/instance-id",
            &[("X-aws-ec2-metadata-token", &o_tok)],
            b""
        )
        .status,
        200
    );
}

// ---------------------------------------------------------------- IMDSv2 tokens

fn put_token(h: &mut Harness, ttl: &str) -> MetaResponse {
    h.send(
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", ttl)],
        b"",
    )
}

#[test]
fn token_issue_use_expire() {
    let mut h = Harness::with(ImdsV2::Optional, false, Arc::new(Counter(11.into())));
    let r = put_token(&mut h, "60");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers,
        vec![("X-aws-ec2-metadata-token-ttl-seconds", "60".to_owned())]
    );
    let token = text(&r).to_owned();
    assert!(
        token.len() >= 43
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let t2 = text(&put_token(&mut h, "60")).to_owned();
    assert_ne!(token, t2, "every token is fresh");

    let get = |h: &mut Harness, tok: &str| {
        h.send(
            "GET",
            "/latest/meta-data/instance-id",
            &[("X-aws-ec2-metadata-token", tok)],
            b"",
        )
        .status
    };
    assert_eq!(get(&mut h, &token), 200);
    h.advance(59);
    assert_eq!(get(&mut h, &token), 200);
    h.advance(1);
    assert_eq!(get(&mut h, &token), 401, "expired at issue + ttl");
    // Optional: no token is fine; a bad one is not.
    assert_eq!(h.get("/latest/meta-data/instance-id").status, 200);
    assert_eq!(get(&mut h, "garbage"), 401);
    let last = if token.ends_with('A') { 'B' } else { 'A' };
    assert_eq!(get(&mut h, &format!("{}{last}", &token[..42])), 401);
    // The OpenStack tree ignores tokens.
    assert_eq!(
        h.send(
            "GET",
            "/openstack/latest/meta_data.json",
            &[("X-aws-ec2-metadata-token", "garbage")],
            b""
        )
        .status,
        200
    );
}

#[test]
fn token_ttl_must_be_1_to_21600() {
    let mut h = Harness::with(ImdsV2::Optional, false, Arc::new(Counter(5.into())));
    for ttl in ["0", "21601", "-1", "abc", "", "1.5", "60 s"] {
        assert_eq!(put_token(&mut h, ttl).status, 400, "{ttl:?}");
    }
    assert_eq!(
        h.send("PUT", "/latest/api/token", &[], b"").status,
        400,
        "missing"
    );
    assert_eq!(
        h.send(
            "PUT",
            "/latest/api/token",
            &[
                ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
                ("X-aws-ec2-metadata-token-ttl-seconds", "60")
            ],
            b""
        )
        .status,
        400,
        "twice"
    );
    for ttl in ["1", "21600"] {
        assert_eq!(put_token(&mut h, ttl).status, 200, "{ttl}");
    }
    // The token PUT needs an identified instance like everything else.
    let r = h.raw(
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        b"",
        None,
    );
    assert_eq!(r.status, 400);
}

#[test]
fn required_mode_needs_a_token_on_the_ec2_tree_only() {
    let mut h = Harness::with(ImdsV2::Required, false, Arc::new(Counter(9.into())));
    for target in [
        "/latest/meta-data/instance-id",
        "/latest",
        "/ec2",
        "/2016-09-02/meta-data/instance-id",
    ] {
        assert_eq!(h.get(target).status, 401, "{target}");
    }
    assert_eq!(h.get("/").status, 200);
    assert_eq!(h.get("/openstack/latest/meta_data.json").status, 200);
    let tok = text(&put_token(&mut h, "100")).to_owned();
    let with = [("X-aws-ec2-metadata-token", tok.as_str())];
    assert_eq!(
        h.send("GET", "/latest/meta-data/instance-id", &with, b"")
            .status,
        200
    );
    assert_eq!(
        h.send("GET", "/2016-09-02/meta-data/instance-id", &with, b"")
            .status,
        404
    );
    let twice = [
        ("X-aws-ec2-metadata-token", tok.as_str()),
        ("X-aws-ec2-metadata-token", tok.as_str()),
    ];
    assert_eq!(
        h.send("GET", "/latest/meta-data/instance-id", &twice, b"")
            .status,
        401
    );
}

#[test]
fn tokens_are_bound_to_their_instance() {
    let mut h = Harness::with(ImdsV2::Optional, false, Arc::new(Counter(21.into())));
    let tok = text(&put_token(&mut h, "100")).to_owned();
    let o = other();
    let r = h.send_as(
        &o,
        "GET",
        "/latest/meta-data/instance-id",
        &[("X-aws-ec2-metadata-token", &tok)],
        b"",
    );
    assert_eq!(r.status, 401);
    let own = h.send_as(
        &o,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "100")],
        b"",
    );
    let own = text(&own).to_owned();
    let r = h.send_as(
        &o,
        "GET",
        "/latest/meta-data/instance-id",
        &[("X-aws-ec2-metadata-token", &own)],
        b"",
    );
    assert_eq!(status_text(&r), (200, "i-0d5e3c1c"));
}
