//! End-to-end test of `mdproxy demo`: the three roles in one process, exercised the way the
//! README's "Try it" does, with plain requests to the ns-proxy (issue 5's "Done when").

mod common;

use std::path::Path;

use common::*;

runtime_tests! {
    demo_serves_the_sample_through_all_three_roles,
}

/// The sample instance the demo bundles.
const SAMPLE: &str = include_str!("../../core/tests/golden/instance.toml");

/// The value of `key = "value"` in the sample.
fn sample(key: &str) -> String {
    let prefix = format!("{key} = \"");
    let line = SAMPLE.lines().find(|l| l.starts_with(&prefix)).unwrap();
    line[prefix.len()..].split('"').next().unwrap().to_owned()
}

fn demo_serves_the_sample_through_all_three_roles(rt: Runtime) {
    let mut demo = Proxy::start_with(rt, |port| {
        vec!["demo".to_owned(), format!("--listen=127.0.0.1:{port}")]
    });
    let resp = request(demo.addr, &get("/latest/meta-data/instance-id"));
    assert_eq!(
        (resp.status, resp.body_text()),
        (200, sample("ec2_id")),
        "{resp:?}"
    );

    let resp = request(demo.addr, &get("/openstack/latest/meta_data.json"));
    assert_eq!(resp.status, 200, "{resp:?}");
    let json: serde_json::Value = serde_json::from_slice(&resp.body).expect("valid JSON");
    assert_eq!(
        json["uuid"].as_str(),
        Some(sample("uuid").as_str()),
        "{json}"
    );

    let put = "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n\
               X-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n";
    let resp = request(demo.addr, put.as_bytes());
    assert_eq!(resp.status, 200, "{resp:?}");
    let token = resp.body_text();
    assert!(!token.is_empty());
    let with = format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-aws-ec2-metadata-token: {token}\r\n\r\n"
    );
    let resp = request(demo.addr, with.as_bytes());
    assert_eq!(
        (resp.status, resp.body_text()),
        (200, sample("ec2_id")),
        "{resp:?}"
    );
    let bad = with.replace(&token, "not-a-token");
    assert_eq!(request(demo.addr, bad.as_bytes()).status, 401);

    // Its temporary directory goes when it stops.
    // The agent's socket is in that directory, as the start-up line says.
    let log = demo.wait_for_log("agent on unix:");
    let dir = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("unix:"))
        .and_then(|sock| Path::new(sock).parent())
        .unwrap_or_else(|| panic!("no agent socket in the log:\n{log}"))
        .to_owned();
    assert!(dir.is_dir(), "{}", dir.display());
    demo.signal(libc::SIGTERM);
    assert_eq!(demo.wait_exit().code(), Some(0), "{}", demo.log());
    assert!(!dir.exists(), "{} left behind", dir.display());
}
