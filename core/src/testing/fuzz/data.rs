//! Fuzz bodies for what the roles parse besides HTTP framing: the server's path router, its
//! instance files and IMDSv2 tokens, the agent's static map, and Neutron's and Keystone's JSON.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::StaticMap;
use crate::http::{normalize_target, path_segments};
use crate::http::{HeadScanner, Limits, Method, RequestHead};
use crate::lookup::keystone::parse_issued;
use crate::lookup::{
    ClientAction, ClientEvent, HttpTarget, KeystoneAuth, NeutronClient, NeutronConfig,
};
use crate::metadata::path::{is_token_target, route, Route};
use crate::metadata::{
    parse_instance, Date, Entropy, Format, ImdsV2, InstanceData, MetaRequest, MetaResponse,
    MetadataService, ServerConfig, MAX_TTL_SECONDS, TOKEN_HEADER, TOKEN_TTL_HEADER,
};
use crate::scope::{LookupKey, Scope, Uuid};
use crate::sign::Signer;
use crate::socket::Input;

const UUID: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
const OTHER: &str = "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01";
const PROJECT: &str = "8a5ce0e4f2b84d8b9b1e2c3d4f5a6b7c";
const SECRET: &[u8] = b"s3cr3t";

/// A counter stretched into bytes: every token differs, runs are reproducible.
struct Counter(AtomicU64);

impl Entropy for Counter {
    fn fill(&self, buf: &mut [u8]) {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (n
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(i as u32 * 7)
                >> 3) as u8
                ^ (i as u8).wrapping_mul(31);
        }
    }
}

/// Always the same bytes: answers (with their `random_seed`) compare equal.
struct Fixed;

impl Entropy for Fixed {
    fn fill(&self, buf: &mut [u8]) {
        buf.fill(0x5a);
    }
}

fn server(imdsv2: ImdsV2, instances: Vec<InstanceData>) -> MetadataService {
    server_with(imdsv2, instances, Arc::new(Counter(AtomicU64::new(1))))
}

fn server_with(
    imdsv2: ImdsV2,
    instances: Vec<InstanceData>,
    entropy: Arc<dyn Entropy>,
) -> MetadataService {
    let mut s = MetadataService::new(ServerConfig {
        signer: Some(Signer::new(SECRET)),
        direct: false,
        imdsv2,
        dhcp_domain: "novalocal".to_owned(),
        today: Date::new(2026, 11, 25),
        tokens: crate::metadata::Tokens::new(
            crate::metadata::TokenKeys::random(entropy.as_ref()),
            crate::metadata::TokenClock::new(crate::testing::epoch(), std::time::Duration::ZERO),
        ),
        entropy,
    });
    s.set_instances(instances);
    s
}

fn sample(uuid: &str) -> InstanceData {
    static SAMPLE: std::sync::OnceLock<InstanceData> = std::sync::OnceLock::new();
    let mut d = SAMPLE
        .get_or_init(|| {
            let text = include_str!("../../../tests/golden/instance.toml");
            parse_instance(text, Format::Toml).expect("sample instance")
        })
        .clone();
    d.uuid = uuid.to_owned();
    d
}

/// A request head signed for `uuid`, with `extra` field lines; `None` if `extra` does not
/// parse (the fuzzer put a CR or NUL in a value).
fn signed_head(method: &str, uuid: &str, extra: &[u8]) -> Option<RequestHead> {
    let sig = Signer::new(SECRET).sign(uuid).to_string();
    let mut raw = format!(
        "{method} / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\nX-Instance-ID: {uuid}\r\nX-Tenant-ID: {PROJECT}\r\nX-Instance-ID-Signature: {sig}\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(extra);
    raw.extend_from_slice(b"\r\n");
    let l = Limits {
        max_head: 64 * 1024,
        ..Limits::default()
    };
    match HeadScanner::new().parse_request(&raw, &l) {
        Ok(Some((head, n))) if n == raw.len() => Some(head),
        _ => None,
    }
}

fn ask(
    s: &mut MetadataService,
    now: Instant,
    head: &RequestHead,
    method: Method,
    target: &[u8],
) -> MetaResponse {
    s.respond(
        now,
        &MetaRequest {
            method,
            target,
            headers: &head.headers,
            body: b"",
            peer: None,
        },
    )
}

/// `metadata_path`: the core's one target normaliser and the server's router on any target.
/// A normalised target is a fixed point (every hop that normalises again sees the same), its
/// segments are never empty, `.` or `..` (nothing above the tree's root can be named), the
/// ns-proxy's token rule agrees with the router, and every spelling of the same path (extra
/// slashes, `.`, `x/..`, escapes of unreserved bytes, a query, absolute form, a trailing slash)
/// normalises to a target that routes and is answered exactly like the canonical one. A target
/// the normaliser refuses is refused by the service too (400).
pub fn metadata_path(data: &[u8]) {
    let target = &data[..data.len().min(4096)];
    let Ok(normal) = normalize_target(target) else {
        let mut s = server_with(ImdsV2::Optional, vec![sample(UUID)], Arc::new(Fixed));
        let head = signed_head("GET", UUID, b"").expect("signed head");
        let now = crate::testing::epoch();
        assert_eq!(ask(&mut s, now, &head, Method::Get, target).status, 400);
        return;
    };
    assert_eq!(
        normalize_target(&normal).as_deref(),
        Ok(&normal[..]),
        "{:?} is not a fixed point",
        normal.escape_ascii().to_string()
    );
    let segs: Vec<&[u8]> = path_segments(&normal).collect();
    for s in &segs {
        assert!(
            !s.is_empty() && *s != b"." && *s != b"..",
            "segment {:?} survived normalisation of {:?}",
            s.escape_ascii().to_string(),
            target.escape_ascii().to_string()
        );
        assert!(!s.contains(&b'/') && !s.contains(&b'?') && !s.contains(&b'#'));
    }
    let want = route(&normal);
    assert_eq!(is_token_target(&normal), want == Route::Token);
    let canonical: Vec<u8> = std::iter::once(&b""[..])
        .chain(segs.iter().copied())
        .collect::<Vec<_>>()
        .join(&b'/');
    let canonical = if canonical.is_empty() {
        b"/".to_vec()
    } else {
        canonical
    };
    let same_route = |v: &[u8]| normalize_target(v).is_ok_and(|n| route(&n) == want);
    assert!(same_route(&canonical));

    let mut variants: Vec<Vec<u8>> = vec![
        [&canonical[..], b"/"].concat(),
        [&canonical[..], b"?a=/../b&c"].concat(),
        [b"http://169.254.169.254", &canonical[..]].concat(),
        [b"HTTPS://[fd00:ec2::254]", &canonical[..]].concat(),
        [b"/.//x/..", &canonical[..]].concat(),
        [b"/../..", &canonical[..]].concat(),
        canonical
            .iter()
            .flat_map(|&b| {
                if b == b'/' {
                    vec![b'/', b'.', b'/', b'/']
                } else {
                    vec![b]
                }
            })
            .collect(),
        canonical
            .iter()
            .flat_map(|&b| {
                // Not hex digits: those may belong to an escape kept as it is (`%C3`).
                if b.is_ascii_alphabetic() && !b.is_ascii_hexdigit() || b == b'.' {
                    format!("%{b:02x}").into_bytes()
                } else {
                    vec![b]
                }
            })
            .collect(),
    ];
    if target.first() == Some(&b'/') {
        variants.push([&b"/./"[..], target].concat());
    }
    for v in &variants {
        assert!(
            same_route(v),
            "{:?} routes unlike {:?}",
            v.escape_ascii().to_string(),
            canonical.escape_ascii().to_string()
        );
    }

    // Through the service: the same answer for every spelling (GET is read-only).
    let imdsv2 = match data.first().map(|b| b % 3) {
        Some(0) => ImdsV2::Off,
        Some(1) => ImdsV2::Optional,
        _ => ImdsV2::Required,
    };
    let mut s = server_with(imdsv2, vec![sample(UUID)], Arc::new(Fixed));
    let head = signed_head("GET", UUID, b"").expect("signed head");
    let now = crate::testing::epoch();
    let want = ask(&mut s, now, &head, Method::Get, &canonical);
    assert!(
        matches!(want.status, 200 | 401 | 404 | 405),
        "{}",
        want.status
    );
    let same = |r: MetaResponse, spelling: &[u8]| {
        assert!(
            r == want,
            "{:?} answered {} unlike {:?} ({})",
            spelling.escape_ascii().to_string(),
            r.status,
            canonical.escape_ascii().to_string(),
            want.status
        );
    };
    same(ask(&mut s, now, &head, Method::Get, target), target);
    for v in variants.iter().take(4) {
        same(ask(&mut s, now, &head, Method::Get, v), v);
    }
    let head_resp = ask(&mut s, now, &head, Method::Head, target);
    assert_eq!(head_resp.status, want.status);
}

fn lossy(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// `instance_file`: byte 0 bit 0 picks TOML or JSON, the rest is the file. A file that parses
/// survives a JSON round trip with its identity intact, and is served without panics.
pub fn instance_file(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let format = if sel & 1 == 0 {
        Format::Toml
    } else {
        Format::Json
    };
    let text = lossy(rest);
    let Ok(d) = parse_instance(&text, format) else {
        return;
    };
    assert!(!d.uuid.trim().is_empty() && !d.project_id.is_empty());

    let json = serde_json::to_string(&d).expect("an instance serialises");
    let again = parse_instance(&json, Format::Json).expect("its JSON parses");
    assert_eq!(
        (
            &again.uuid,
            &again.project_id,
            &again.user_data,
            &again.password
        ),
        (&d.uuid, &d.project_id, &d.user_data, &d.password)
    );
    assert_eq!(again.keys, d.keys);
    assert_eq!(again.fixed_ips, d.fixed_ips);

    let uuid = d.uuid.clone();
    let mut s = server(ImdsV2::Optional, vec![d]);
    if s.instance_count() == 0 {
        return;
    }
    // Only a uuid that survives as a header value (visible ASCII: no surrounding whitespace
    // to be trimmed off) can be asked for through the proxy headers.
    if !uuid.bytes().all(|b| b.is_ascii_graphic()) {
        return;
    }
    let Some(head) = signed_head("GET", &uuid, b"") else {
        return;
    };
    let now = crate::testing::epoch();
    for path in [
        &b"/latest/meta-data/"[..],
        b"/2009-04-04/meta-data/public-keys/0/openssh-key",
        b"/latest/meta-data/block-device-mapping/",
        b"/latest/meta-data/placement/availability-zone",
        b"/latest/user-data",
        b"/openstack/latest/meta_data.json",
        b"/openstack/2012-08-10/meta_data.json",
        b"/openstack/latest/network_data.json",
        b"/openstack/latest/vendor_data.json",
        b"/openstack/latest/vendor_data2.json",
        b"/openstack/latest/user_data",
        b"/openstack/latest/password",
    ] {
        let r = ask(&mut s, now, &head, Method::Get, path);
        assert!(matches!(r.status, 200 | 404), "{path:?}: {r:?}");
        if r.content_type == crate::metadata::APPLICATION_JSON && r.status == 200 {
            serde_json::from_slice::<serde_json::Value>(&r.body).expect("served JSON parses");
        }
    }
}

/// `static_map`: the agent's map file. Parsing is deterministic, an error names a line inside
/// the text, and a parsed map answers lookups (by IP and by MAC) without panicking.
pub fn static_map(data: &[u8]) {
    let text = lossy(data);
    let first = StaticMap::parse(&text);
    assert_eq!(first, StaticMap::parse(&text), "parsing is deterministic");
    let map = match first {
        Ok(map) => map,
        Err(e) => {
            assert!(e.line <= text.lines().count() + 1, "{e:?}");
            assert!(!e.problem.to_string().is_empty());
            return;
        }
    };
    // Every UUID and address the text mentions, as keys.
    let mut uuids = vec![Uuid(0)];
    let mut ips: Vec<IpAddr> = vec!["10.0.0.5".parse().expect("ip")];
    for word in text.split(|c: char| c == '"' || c == '\'' || c.is_whitespace()) {
        if let Some(u) = Uuid::parse(word.as_bytes()) {
            uuids.push(u);
        }
        if let Ok(ip) = word.parse::<IpAddr>() {
            ips.push(ip);
        }
    }
    uuids.truncate(16);
    ips.truncate(16);
    for &u in &uuids {
        for &ip in &ips {
            for scope in [Scope::Router(u), Scope::Network(u)] {
                let key = LookupKey { scope, ip };
                let found = map.resolve(&key);
                assert_eq!(found, map.resolve(&key), "lookups are pure");
            }
        }
    }
    let _ = map.ports();
}

/// Splits the input at NUL bytes (JSON never contains a raw NUL).
fn sections(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == 0).collect()
}

fn http_response(status: u16, token: bool, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if token {
        out.extend_from_slice(b"X-Subject-Token: gAAAAABfuzz-token\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// `neutron_json`: byte 0 configures (bit 0 Keystone, bit 1 Neutron from the catalog, bit 2
/// network scope, bits 3–4 the client address, bit 5 Neutron's first answer is 401), the rest
/// is NUL-separated JSON bodies: Keystone's token answer, the router's ports, the ports of the
/// address. They go to the real client as HTTP answers to the requests it makes. Exactly one
/// event answers the query; every connection it opened is closed; an instance it reports has
/// identifiers fit for a header; `parse_issued` and the timestamp parser are called directly
/// too.
pub fn neutron_json(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let parts = sections(rest);
    let part = |i: usize| parts.get(i).copied().unwrap_or(b"{}");
    let (ks_body, router_body, ports_body) = (part(0), part(1), part(2));

    // Keystone's answer on its own.
    let raw = http_response(201, true, ks_body);
    if let Ok(Some((head, _))) = HeadScanner::new().parse_response(
        &raw,
        Method::Post,
        &Limits {
            max_head: 4096,
            ..Limits::default()
        },
    ) {
        for catalog in [
            None,
            Some(crate::lookup::keystone::CatalogChoice {
                interface: "internalURL",
                region: (sel & 64 != 0).then_some("RegionOne"),
            }),
        ] {
            if let Ok(issued) = parse_issued(&head.headers, ks_body, catalog) {
                assert!(!issued.token.is_empty());
                assert!(issued.token.bytes().all(|b| b.is_ascii_graphic()));
                assert_eq!(issued.neutron_url.is_some(), catalog.is_some());
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(ks_body) {
        let _ = crate::lookup::keystone::parse_timestamp(text);
    }

    // The whole client.
    let keystone = (sel & 1 != 0).then(|| KeystoneAuth {
        endpoint: HttpTarget::parse_ip_url("http://10.0.0.1:5000/identity").expect("url"),
        username: "neutron".into(),
        password: "p4ss".into(),
        project_name: "service".into(),
        user_domain_name: "Default".into(),
        project_domain_name: "Default".into(),
    });
    let neutron = (sel & 2 == 0 || keystone.is_none())
        .then(|| HttpTarget::parse_ip_url("http://10.0.0.9:9696").expect("url"));
    let mut client = NeutronClient::new(NeutronConfig::new(neutron, keystone));
    let scope_id = Uuid::parse(b"5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6").expect("uuid");
    let ip: IpAddr = match (sel >> 3) & 3 {
        0 => "10.0.0.5",
        1 => "fe80::f816:3eff:fe00:5",
        2 => "::ffff:10.0.0.5",
        _ => "2001:db8::5",
    }
    .parse()
    .expect("ip");
    let key = LookupKey {
        scope: if sel & 4 == 0 {
            Scope::Router(scope_id)
        } else {
            Scope::Network(scope_id)
        },
        ip,
    };
    let mut now = crate::testing::epoch();
    client.query(now, key);
    let mut open = std::collections::BTreeSet::new();
    let mut events = Vec::new();
    let mut neutron_answers = 0;
    for _ in 0..32 {
        let mut progressed = false;
        while let Some(a) = client.poll_action() {
            progressed = true;
            match a {
                ClientAction::Connect(req, _) => {
                    assert!(open.insert(req), "{req:?} connected twice");
                    client.handle(now, req, Input::Connected);
                    let request = client.pending_write(req).to_vec();
                    assert!(!request.is_empty(), "nothing to send on {req:?}");
                    client.consume_write(req, request.len());
                    assert!(client.wants_read(req));
                    let resp = if request.starts_with(b"POST ") {
                        http_response(201, true, ks_body)
                    } else {
                        neutron_answers += 1;
                        let status = if sel & 32 != 0 && neutron_answers == 1 {
                            401
                        } else {
                            200
                        };
                        let is_router = request
                            .split(|&b| b == b'\n')
                            .next()
                            .is_some_and(|l| l.windows(10).any(|w| w == b"device_id="));
                        http_response(
                            status,
                            false,
                            if is_router { router_body } else { ports_body },
                        )
                    };
                    let cut = usize::from(sel >> 6) * 7 % (resp.len() + 1);
                    client.handle(now, req, Input::Read(&resp[..cut]));
                    client.handle(now, req, Input::Read(&resp[cut..]));
                }
                ClientAction::Close(req) => {
                    assert!(open.remove(&req), "{req:?} closed but not open");
                }
            }
        }
        while let Some(ev) = client.poll_event() {
            progressed = true;
            events.push(ev);
        }
        if !progressed {
            break;
        }
    }
    if events.is_empty() {
        // Stuck on something we never answered: time must end it.
        now += Duration::from_secs(3600);
        client.handle_timeout(now);
        while let Some(a) = client.poll_action() {
            if let ClientAction::Close(req) = a {
                assert!(open.remove(&req));
            }
        }
        events.extend(std::iter::from_fn(|| client.poll_event()));
    }
    assert_eq!(events.len(), 1, "one query, one event: {events:?}");
    match &events[0] {
        ClientEvent::Answer(k, Some(inst)) => {
            assert_eq!(*k, key);
            for id in [&inst.instance_id, &inst.project_id] {
                assert!(
                    !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_graphic()),
                    "{id:?} is not fit for a header"
                );
            }
        }
        ClientEvent::Answer(k, None) | ClientEvent::Failed(k, _) => assert_eq!(*k, key),
    }
    assert!(open.is_empty(), "connections left open: {open:?}");
    assert_eq!(client.poll_timeout(), None, "an idle client keeps no timer");
}

/// `imds_token`: byte 0 picks the mode (optional or required) and steps; then NUL-separated
/// fields: a TTL header value, a token to present. A token PUT is answered 200 exactly for a
/// TTL of 1..=21600 decimal seconds, and its token then opens the EC2 tree for that instance
/// until the TTL runs out, never for another instance; any other token string is refused
/// (unless it is the issued one); a missing token is fine only when tokens are optional.
pub fn imds_token(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let parts = sections(rest);
    let ttl_value = parts.first().copied().unwrap_or(b"21600");
    let presented = parts.get(1).copied().unwrap_or(b"");
    // Each field is one header value: a line break would add fields of its own (a second
    // X-Instance-ID, say) and test the identity checks instead.
    if [ttl_value, presented]
        .iter()
        .any(|f| f.contains(&b'\r') || f.contains(&b'\n'))
    {
        return;
    }
    let imdsv2 = if sel & 1 == 0 {
        ImdsV2::Optional
    } else {
        ImdsV2::Required
    };
    let mut s = server(imdsv2, vec![sample(UUID), sample(OTHER)]);
    let t0 = crate::testing::epoch();
    let path = b"/latest/meta-data/instance-id";

    let plain = signed_head("GET", UUID, b"").expect("signed head");
    let bare = ask(&mut s, t0, &plain, Method::Get, path);
    assert_eq!(
        bare.status,
        if imdsv2 == ImdsV2::Required { 401 } else { 200 }
    );

    let ttl_line = [TOKEN_TTL_HEADER.as_bytes(), b": ", ttl_value, b"\r\n"].concat();
    let Some(put) = signed_head("PUT", UUID, &ttl_line) else {
        return;
    };
    let resp = ask(&mut s, t0, &put, Method::Put, b"/latest/api/token");
    let value = put.headers.get(TOKEN_TTL_HEADER).unwrap_or_default();
    let valid = !value.is_empty()
        && value.len() <= 10
        && value.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| (1..=MAX_TTL_SECONDS).contains(&n));
    assert_eq!(
        resp.status,
        if valid { 200 } else { 400 },
        "{value:?}: {resp:?}"
    );

    // Whatever the client made up: refused unless it is a real token. The fuzz key is
    // deterministic (the same for every input), so the fuzzer can learn real tokens other
    // inputs were issued: those count too, as the scheme's own check (a verifier with the
    // same key) says; the scheme's unforgeability is the token module's own tests'.
    let line = [TOKEN_HEADER.as_bytes(), b": ", presented, b"\r\n"].concat();
    if let Some(head) = signed_head("GET", UUID, &line) {
        let r = ask(&mut s, t0, &head, Method::Get, path);
        let sent = head.headers.get(TOKEN_HEADER).unwrap_or_default();
        let verifier = crate::metadata::Tokens::new(
            crate::metadata::TokenKeys::random(&Counter(AtomicU64::new(1))),
            crate::metadata::TokenClock::new(crate::testing::epoch(), Duration::ZERO),
        );
        let learned = verifier.check(t0, sent, UUID).is_ok();
        let real = (valid && sent == &resp.body[..]) || learned;
        let expect = if real { 200 } else { 401 };
        if head.headers.count(TOKEN_HEADER) == 1 {
            assert_eq!(r.status, expect, "token {sent:?}");
        }
        // The OpenStack tree ignores tokens.
        let os = ask(
            &mut s,
            t0,
            &head,
            Method::Get,
            b"/openstack/latest/meta_data.json",
        );
        assert_eq!(os.status, 200);
    }
    if !valid {
        return;
    }
    let ttl: u64 = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("valid TTL");
    assert_eq!(
        resp.headers,
        vec![(TOKEN_TTL_HEADER, ttl.to_string())],
        "the granted TTL is echoed"
    );
    let token = resp.body.clone();
    assert_eq!(token.len(), 64, "base64url of expiry, nonce and tag");
    let line = [TOKEN_HEADER.as_bytes(), b": ", &token[..], b"\r\n"].concat();
    let with = signed_head("GET", UUID, &line).expect("token head");
    let step = Duration::from_millis(u64::from(sel >> 1) * 997);
    let at = t0 + step;
    let r = ask(&mut s, at, &with, Method::Get, path);
    let alive = step < Duration::from_secs(ttl);
    assert_eq!(
        r.status,
        if alive { 200 } else { 401 },
        "{step:?} of {ttl}s"
    );
    let expired = ask(
        &mut s,
        t0 + Duration::from_secs(ttl),
        &with,
        Method::Get,
        path,
    );
    assert_eq!(expired.status, 401, "a token dies with its TTL");
    // Another instance may not use it.
    let other = signed_head("GET", OTHER, &line).expect("token head");
    assert_eq!(ask(&mut s, t0, &other, Method::Get, path).status, 401);
    // Twice the header: refused.
    let twice = signed_head("GET", UUID, &[&line[..], &line[..]].concat()).expect("head");
    assert_eq!(ask(&mut s, t0, &twice, Method::Get, path).status, 401);
}
