//! Micro-benchmarks of the core's per-request hot paths: signing, verifying, the lookup cache,
//! HTTP head parse + rewrite + re-encode, and the server's EC2 listing render.
//!
//! A plain `harness = false` binary (no criterion, to keep the dependency tree small): each case
//! runs for about one second after a short warm-up and prints nanoseconds per operation.
//! `cargo bench -p mdproxy-core [-- FILTER]` runs the cases whose name contains FILTER.
//! These numbers are for spotting regressions on one machine, not for the DESIGN.md targets
//! (those are measured end to end with `bench/`).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mdproxy_core::cache::{Cached, Lookup, LookupCache};
use mdproxy_core::http::{write_request_head, HeadScanner, Limits, Rewrite};
use mdproxy_core::metadata::{
    parse_instance, Date, Entropy, Format, ImdsV2, MetaRequest, MetadataService, ServerConfig,
};
use mdproxy_core::scope::{Instance, LookupKey, Scope, Uuid};
use mdproxy_core::sign::Signer;

const RUN_FOR: Duration = Duration::from_secs(1);
const WARM_UP: Duration = Duration::from_millis(100);
const BATCH: u64 = 1_000;

const INSTANCE_ID: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
const ROUTER_ID: &str = "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01";

/// Runs `op` (whose argument is the iteration number) in batches until `RUN_FOR` has passed,
/// after a warm-up, and prints ns/op.
// The core bans the clock (clippy.toml); a benchmark is exactly where reading it belongs.
#[allow(clippy::disallowed_methods)]
fn bench(filter: Option<&str>, name: &str, mut op: impl FnMut(u64)) {
    if filter.is_some_and(|f| !name.contains(f)) {
        return;
    }
    let mut i = 0u64;
    let warm_up = Instant::now();
    while warm_up.elapsed() < WARM_UP {
        for _ in 0..BATCH {
            op(black_box(i));
            i += 1;
        }
    }
    let mut ops = 0u64;
    let start = Instant::now();
    let elapsed = loop {
        for _ in 0..BATCH {
            op(black_box(i));
            i += 1;
        }
        ops += BATCH;
        let elapsed = start.elapsed();
        if elapsed >= RUN_FOR {
            break elapsed;
        }
    };
    let ns = elapsed.as_nanos() as f64 / ops as f64;
    println!("{name:<44} {ns:>10.1} ns/op   ({ops} ops)");
}

fn bench_sign(filter: Option<&str>) {
    let signer = Signer::new(b"a965cd23ed2f4502");
    bench(filter, "sign instance id", |_| {
        black_box(signer.sign(black_box(INSTANCE_ID)));
    });
    let sig = signer.sign(INSTANCE_ID);
    bench(filter, "verify signature (match)", |_| {
        assert!(signer.verify(black_box(INSTANCE_ID), black_box(sig.as_bytes())));
    });
    let mut wrong = sig.as_bytes().to_vec();
    wrong[63] ^= 1;
    bench(filter, "verify signature (mismatch)", |_| {
        assert!(!signer.verify(black_box(INSTANCE_ID), black_box(&wrong)));
    });
}

/// A distinct key per `n`: the IP walks 10.0.0.0/8.
fn key(router: Uuid, n: u64) -> LookupKey {
    LookupKey {
        scope: Scope::Router(router),
        ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n as u32 & 0x00ff_ffff))),
    }
}

#[allow(clippy::disallowed_methods)]
fn bench_cache(filter: Option<&str>) {
    const CAP: usize = 10_000; // DESIGN.md default
    let router = Uuid::parse(ROUTER_ID.as_bytes()).expect("valid uuid");
    let instance = Instance {
        instance_id: INSTANCE_ID.to_owned(),
        project_id: "9f8e7d6c5b4a39281706f5e4d3c2b1a0".to_owned(),
    };
    let ttl = Duration::from_secs(5);
    let neg_ttl = Duration::from_secs(1);
    let cap = NonZeroUsize::new(CAP).expect("nonzero");
    // The cache only compares instants; a fixed `now` keeps every entry live.
    let now = Instant::now();

    let mut cache: LookupCache<u64> = LookupCache::new(cap, ttl, neg_ttl);
    for n in 0..CAP as u64 {
        cache.insert(now, key(router, n), Some(instance.clone()));
    }
    bench(filter, "cache hit (get, 10k entries)", |i| {
        let k = key(router, i % CAP as u64);
        assert!(matches!(cache.get(now, black_box(&k)), Cached::Hit(_)));
    });
    bench(filter, "cache hit (lookup, 10k entries)", |i| {
        let k = key(router, i % CAP as u64);
        assert!(matches!(cache.lookup(now, black_box(k), i), Lookup::Hit(_)));
    });

    // Keys never repeat within the cache's reach, so each get misses and each insert evicts the
    // least recently used entry (the steady state of a cache full of cold keys).
    let mut cache: LookupCache<u64> = LookupCache::new(cap, ttl, neg_ttl);
    bench(filter, "cache miss + insert (evicting)", |i| {
        let k = key(router, i);
        assert!(matches!(cache.get(now, black_box(&k)), Cached::Miss));
        cache.insert(now, k, Some(instance.clone()));
    });

    let mut cache: LookupCache<u64> = LookupCache::new(cap, ttl, neg_ttl);
    bench(filter, "cache miss single-flight (lookup+complete)", |i| {
        let k = key(router, i);
        assert!(matches!(cache.lookup(now, black_box(k), i), Lookup::Query));
        black_box(cache.complete(now, k, Some(instance.clone())));
    });
}

/// The identity headers an ns-proxy deletes before adding its own (DESIGN.md, header contract).
const IDENTITY_HEADERS: &[&str] = &[
    "X-Forwarded-For",
    "X-Neutron-Router-ID",
    "X-Neutron-Network-ID",
    "X-Instance-ID",
    "X-Instance-ID-Signature",
    "X-Tenant-ID",
    "X-Metadata-Provider",
    "X-Metadata-Provider-Signature",
];

/// HTTP head parse, and parse + rewrite + re-encode (the ns-proxy's per-request work on a head).
fn bench_http(filter: Option<&str>) {
    let request: &[u8] = b"GET /latest/meta-data/ HTTP/1.1\r\n\
        Host: 169.254.169.254\r\n\
        User-Agent: curl/8.5.0\r\n\
        Accept: */*\r\n\
        \r\n";
    let limits = Limits::default();
    let mut scanner = HeadScanner::new();
    let parse = |scanner: &mut HeadScanner| match scanner.parse_request(black_box(request), &limits)
    {
        Ok(Some((head, n))) => {
            assert_eq!(n, request.len());
            head
        }
        other => panic!("request did not parse: {other:?}"),
    };
    bench(filter, "http parse request head", |_| {
        black_box(parse(&mut scanner));
    });

    let add: [(&str, &[u8]); 2] = [
        ("X-Forwarded-For", b"10.0.0.5"),
        ("X-Neutron-Router-ID", ROUTER_ID.as_bytes()),
    ];
    let rewrite = Rewrite {
        remove: IDENTITY_HEADERS,
        strip_hop_by_hop: true,
        add: &add,
        ..Rewrite::default()
    };
    let mut out = Vec::with_capacity(1024);
    bench(filter, "http parse + rewrite + encode", |_| {
        let head = parse(&mut scanner);
        out.clear();
        write_request_head(&head, &rewrite, &mut out);
        black_box(&out);
    });
}

/// The sample instance of `mdproxy server`'s documentation (and its golden tests).
const SAMPLE_INSTANCE: &str = include_str!("../tests/golden/instance.toml");
const SAMPLE_UUID: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
const SAMPLE_PROJECT: &str = "8a5ce0e4f2b84d8b9b1e2c3d4f5a6b7c";
const SERVER_SECRET: &[u8] = b"s3cr3t";

/// Deterministic "randomness": the EC2 listing never asks for any.
struct Zeros;
impl Entropy for Zeros {
    fn fill(&self, buf: &mut [u8]) {
        buf.fill(0);
    }
}

/// The server's answer to `GET /latest/meta-data/` from the agent (signed headers, as the agent
/// sends them): identity check (HMAC verify), route, EC2 tree lookup and listing render.
#[allow(clippy::disallowed_methods)]
fn bench_server(filter: Option<&str>) {
    let cfg = ServerConfig {
        signer: Some(Signer::new(SERVER_SECRET)),
        direct: false,
        imdsv2: ImdsV2::Optional,
        dhcp_domain: "novalocal".to_owned(),
        today: Date::new(2026, 11, 25),
        entropy: Arc::new(Zeros),
        tokens: mdproxy_core::metadata::Tokens::new(
            mdproxy_core::metadata::TokenKeys::random(&Zeros),
            mdproxy_core::metadata::TokenClock::new(
                std::time::Instant::now(),
                std::time::Duration::ZERO,
            ),
        ),
    };
    let mut service = MetadataService::new(cfg);
    let inst = parse_instance(SAMPLE_INSTANCE, Format::Toml).expect("sample instance");
    service.set_instances(vec![inst]);
    let sig = Signer::new(SERVER_SECRET).sign(SAMPLE_UUID).to_string();
    let request = format!(
        "GET /latest/meta-data/ HTTP/1.1\r\n\
         Host: 169.254.169.254\r\n\
         X-Forwarded-For: 10.0.0.5\r\n\
         X-Instance-ID: {SAMPLE_UUID}\r\n\
         X-Tenant-ID: {SAMPLE_PROJECT}\r\n\
         X-Instance-ID-Signature: {sig}\r\n\
         \r\n"
    )
    .into_bytes();
    let limits = Limits::default();
    let mut scanner = HeadScanner::new();
    let head = match scanner.parse_request(&request, &limits) {
        Ok(Some((head, _))) => head,
        other => panic!("request did not parse: {other:?}"),
    };
    let peer = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let now = Instant::now();
    let req = MetaRequest {
        method: head.method,
        target: &head.target,
        headers: &head.headers,
        body: &[],
        peer,
    };
    let first = service.respond(now, &req);
    assert_eq!(
        first.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&first.body)
    );
    assert!(first.body.starts_with(b"ami-id\n"), "an EC2 listing");
    bench(filter, "server EC2 listing (signed, respond)", |_| {
        let resp = service.respond(now, black_box(&req));
        debug_assert_eq!(resp.status, 200);
        black_box(resp);
    });
    bench(filter, "server EC2 listing (parse + respond)", |_| {
        let head = match scanner.parse_request(black_box(&request), &limits) {
            Ok(Some((head, _))) => head,
            other => panic!("request did not parse: {other:?}"),
        };
        let req = MetaRequest {
            method: head.method,
            target: &head.target,
            headers: &head.headers,
            body: &[],
            peer,
        };
        black_box(service.respond(now, &req));
    });
}

fn main() {
    // `cargo bench` passes `--bench`; the first other argument, if any, is a name filter.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let filter = filter.as_deref();
    bench_sign(filter);
    bench_cache(filter);
    bench_http(filter);
    bench_server(filter);
}
