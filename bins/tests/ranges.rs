//! The ranges of the numeric settings, end to end. Every role runs, on each runtime, with
//! values drawn from the accepted ranges (both ends always among them), answers one request
//! and exits 0 on SIGTERM; and a value just outside a range, on the command line, in the TOML
//! file or in Neutron's INI files, exits 2 naming the setting and the range. Before the ranges,
//! `--timeout-head 1e19` and `--rate-limit 10/18446744073709551615,10/10` were accepted and
//! overflowed on the first request.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

runtime_tests! {
    ns_proxy_runs_with_values_from_its_ranges,
    agent_runs_with_values_from_its_ranges,
    server_runs_with_values_from_its_ranges,
    demo_runs_with_values_from_its_ranges,
}

const INSTANCE: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e5f";
const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";

/// Cases drawn per role and runtime, beyond the all-minimum and all-maximum ones: each case
/// starts the binary, so few, and every value is drawn at an end a third of the time.
const DRAWN: u32 = 6;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Seconds,
    Integer,
}

/// A numeric setting: its flag (without dashes, as a TOML key), its range, and the range as
/// the messages and `--help` write it.
#[derive(Clone, Copy)]
struct Opt {
    name: &'static str,
    kind: Kind,
    min: f64,
    max: f64,
    shown: &'static str,
}

const fn secs(name: &'static str, min: f64, max: f64, shown: &'static str) -> Opt {
    Opt {
        name,
        kind: Kind::Seconds,
        min,
        max,
        shown,
    }
}

const fn int(name: &'static str, min: f64, max: f64, shown: &'static str) -> Opt {
    Opt {
        name,
        kind: Kind::Integer,
        min,
        max,
        shown,
    }
}

const TIMEOUT: &str = "0.001 to 86400 seconds";
const DAY_OR_NONE: &str = "0 to 86400 seconds";
const MILLION: &str = "1 to 1000000";

/// Every role's.
const COMMON: [Opt; 9] = [
    secs("timeout-head", 0.001, 86_400.0, TIMEOUT),
    secs("timeout-idle", 0.001, 86_400.0, TIMEOUT),
    secs("timeout-connect", 0.001, 86_400.0, TIMEOUT),
    secs("timeout-response", 0.001, 86_400.0, TIMEOUT),
    secs("drain-timeout", 0.0, 86_400.0, DAY_OR_NONE),
    int("max-head-bytes", 1024.0, 1_048_576.0, "1024 to 1048576"),
    int("max-headers", 8.0, 1000.0, "8 to 1000"),
    int("max-body-bytes", 1024.0, 16_777_216.0, "1024 to 16777216"),
    int("max-chunk-line-bytes", 64.0, 65_536.0, "64 to 65536"),
];

const NS_PROXY: [Opt; 3] = [
    int("max-conns", 1.0, 1e6, MILLION),
    int("max-conns-per-ip", 1.0, 1e6, MILLION),
    int("token-hop-limit", 1.0, 64.0, "1 to 64"),
];

/// `--rate-limit B/BW,U/UW`: counts and windows.
const RATE_COUNT: Opt = int("rate-limit", 1.0, 1e6, MILLION);
const RATE_WINDOW: Opt = int("rate-limit", 1.0, 86_400.0, "1 to 86400");

const AGENT: [Opt; 6] = [
    int("backlog", 1.0, 65_535.0, "1 to 65535"),
    int("workers", 1.0, 64.0, "1 to 64"),
    int("cache-size", 1.0, 1e6, MILLION),
    secs("cache-ttl", 0.0, 86_400.0, DAY_OR_NONE),
    secs("negative-cache-ttl", 0.0, 86_400.0, DAY_OR_NONE),
    secs("neutron-timeout", 0.001, 86_400.0, TIMEOUT),
];

const SERVER: [Opt; 2] = [
    secs("rescan-interval", 0.1, 86_400.0, "0.1 to 86400 seconds"),
    secs("secret-grace", 0.0, 86_400.0, DAY_OR_NONE),
];

impl Opt {
    fn show(&self, v: f64) -> String {
        match self.kind {
            Kind::Integer => format!("{}", v.round() as u64),
            Kind::Seconds => format!("{v}"),
        }
    }

    /// A value: an end a third of the time, else log-uniform inside (so small timeouts are
    /// drawn as often as large ones).
    fn strategy(self) -> impl Strategy<Value = f64> {
        let low = self.min.max(0.001);
        let inside = (0.0f64..1.0).prop_map(move |u| low * (self.max / low).powf(u));
        prop_oneof![1 => Just(self.min), 1 => Just(self.max), 4 => inside]
    }
}

/// The settings of one run: `(flag, value)`, given as flags or as keys of a TOML file.
#[derive(Clone, Debug)]
struct Case {
    settings: Vec<(&'static str, f64, String)>,
    via_file: bool,
}

impl Case {
    fn at(opts: &[Opt], end: impl Fn(&Opt) -> f64, via_file: bool) -> Case {
        let settings = opts.iter().map(|o| (o.name, end(o), o.show(end(o))));
        Case {
            settings: settings.collect(),
            via_file,
        }
    }

    /// The value of `name`, in seconds or as a count.
    fn get(&self, name: &str) -> f64 {
        let found = self.settings.iter().find(|(n, ..)| *n == name);
        found.map_or(f64::INFINITY, |(_, v, _)| *v)
    }

    /// Whether a timeout on the request's path is short enough to expire on a busy machine:
    /// then 408, 503 and 504 are answers too.
    fn tight(&self, timeouts: &[&str]) -> bool {
        timeouts.iter().any(|t| self.get(t) < 1.0)
    }

    /// The command line: `before` and the settings around `role` and its `args`.
    fn command(&self, dir: &TempDir, role: &str, args: &[String]) -> Vec<String> {
        let mut all = Vec::new();
        if self.via_file {
            let path = dir.join("ranges.toml");
            let mut text = format!("[{role}]\n");
            for (name, v, shown) in &self.settings {
                match v.is_nan() {
                    // The rate limit, a string.
                    true => text += &format!("{name} = \"{shown}\"\n"),
                    false => text += &format!("{name} = {shown}\n"),
                }
            }
            fs::write(&path, text).unwrap();
            all.extend(["--config".to_owned(), path.display().to_string()]);
        }
        all.push(role.to_owned());
        all.extend_from_slice(args);
        if !self.via_file {
            for (name, _, shown) in &self.settings {
                all.push(format!("--{name}={shown}"));
            }
        }
        all
    }
}

/// A drawn case of `opts`.
fn drawn(opts: Vec<Opt>) -> impl Strategy<Value = Case> {
    let values: Vec<_> = opts.iter().map(|o| o.strategy()).collect();
    (values, any::<bool>()).prop_map(move |(values, via_file)| Case {
        settings: opts
            .iter()
            .zip(values)
            .map(|(o, v)| (o.name, v, o.show(v)))
            .collect(),
        via_file,
    })
}

/// Runs `check` with every setting of `opts` at its minimum (as flags), at its maximum (from
/// a TOML file), then on [`DRAWN`] drawn cases. `rate`: also a `--rate-limit`, drawn the same
/// way.
fn for_each_case(opts: &[Opt], rate: bool, check: impl Fn(&Case)) {
    let with_rate = move |mut case: Case, counts: [f64; 2], windows: [f64; 2]| {
        if rate {
            let v = format!(
                "{}/{},{}/{}",
                RATE_COUNT.show(counts[0]),
                RATE_WINDOW.show(windows[0]),
                RATE_COUNT.show(counts[1]),
                RATE_WINDOW.show(windows[1])
            );
            case.settings.push(("rate-limit", f64::NAN, v));
        }
        case
    };
    let (c, w) = (RATE_COUNT, RATE_WINDOW);
    check(&with_rate(
        Case::at(opts, |o| o.min, false),
        [c.min; 2],
        [w.min; 2],
    ));
    check(&with_rate(
        Case::at(opts, |o| o.max, true),
        [c.max; 2],
        [w.max; 2],
    ));
    let config = Config {
        cases: DRAWN,
        failure_persistence: None,
        max_shrink_iters: 8,
        ..Config::default()
    };
    let strategy = (
        drawn(opts.to_vec()),
        [c.strategy(), c.strategy()],
        [w.strategy(), w.strategy()],
    )
        .prop_map(move |(case, counts, windows)| with_rate(case, counts, windows));
    TestRunner::new(config)
        .run(&strategy, |case| {
            check(&case);
            Ok(())
        })
        .unwrap();
}

/// `resp` is 200 with `body`, or (when `tight`, or when `also` allows it) one of the answers
/// a short timeout or a full connection limit gives.
fn assert_answer(case: &Case, resp: &Response, body: &str, tight: bool, also: &[u16]) {
    let allowed = resp.status == 200 && resp.body_text() == body
        || tight && [408, 503, 504].contains(&resp.status)
        || also.contains(&resp.status);
    assert!(allowed, "{case:?}: {resp:?}");
}

/// SIGTERM: the role exits 0.
fn assert_stops(case: &Case, running: &mut Running) {
    running.signal(libc::SIGTERM);
    let status = running.wait_exit();
    assert_eq!(status.code(), Some(0), "{case:?}:\n{}", running.log());
}

fn mdproxy() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mdproxy"))
}

fn ns_proxy_runs_with_values_from_its_ranges(rt: Runtime) {
    let dir = TempDir::new();
    let agent = Upstream::ok(dir.join("agent.sock"), b"ok");
    let opts: Vec<Opt> = COMMON.iter().chain(&NS_PROXY).copied().collect();
    for_each_case(&opts, true, |case| {
        let files = TempDir::new();
        let mut proxy = Proxy::start_with(rt, |port| {
            let args = [
                "--router-id".to_owned(),
                ROUTER.to_owned(),
                format!("--listen=127.0.0.1:{port}"),
                format!("--upstream-socket={}", agent.path.display()),
            ];
            case.command(&files, "ns-proxy", &args)
        });
        let resp = request(proxy.addr, &get("/latest/meta-data/"));
        let tight = case.tight(&["timeout-head", "timeout-connect", "timeout-response"]);
        // The start-up probe's connection may still hold the only slot.
        let full = case.get("max-conns") < 2.0 || case.get("max-conns-per-ip") < 2.0;
        let also: &[u16] = if full { &[503] } else { &[] };
        assert_answer(case, &resp, "ok", tight, also);
        assert_stops(case, &mut proxy);
    });
}

fn agent_runs_with_values_from_its_ranges(rt: Runtime) {
    let os = FakeOpenStack::start(
        None,
        &[(ROUTER, &[NETWORK])],
        &[FakePort::new(NETWORK, "10.0.0.5", INSTANCE, PROJECT)],
    );
    let server = Upstream::start_tcp(|req| {
        let id = req.header_values("x-instance-id").join(",");
        Reply::Send(ok_response(id.as_bytes()))
    });
    let opts: Vec<Opt> = COMMON.iter().chain(&AGENT).copied().collect();
    for_each_case(&opts, false, |case| {
        let dir = TempDir::new();
        let (socket, secret) = (dir.join("agent.sock"), dir.join("secret"));
        fs::write(&secret, "s3cr3t\n").unwrap();
        let args = [
            format!("--listen-socket={}", socket.display()),
            format!("--shared-secret-file={}", secret.display()),
            "--backend=neutron".to_owned(),
            format!("--neutron-url={}", os.neutron_url()),
            format!("--metadata-url={}", server.url()),
        ];
        let command = case.command(&dir, "agent", &args);
        let mut agent = Agent::start_program(rt, mdproxy(), &command, &socket);
        let from_router = format!(
            "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
             X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: {ROUTER}\r\n\r\n"
        );
        let resp = request_unix(&socket, from_router.as_bytes());
        let path = [
            "timeout-head",
            "timeout-connect",
            "timeout-response",
            "neutron-timeout",
        ];
        assert_answer(case, &resp, INSTANCE, case.tight(&path), &[]);
        assert_stops(case, &mut agent);
    });
}

fn server_runs_with_values_from_its_ranges(rt: Runtime) {
    let dir = TempDir::new();
    let instance = format!(
        "uuid = \"{INSTANCE}\"\nproject_id = \"{PROJECT}\"\nec2_id = \"i-00000001\"\n\
         fixed_ips = [\"127.0.0.1\"]\n"
    );
    fs::write(dir.join("local.toml"), instance).unwrap();
    let opts: Vec<Opt> = COMMON.iter().chain(&SERVER).copied().collect();
    for_each_case(&opts, false, |case| {
        let files = TempDir::new();
        let mut server = Proxy::start_with(rt, |port| {
            let args = [
                "--direct".to_owned(),
                format!("--listen=127.0.0.1:{port}"),
                format!("--instances={}", dir.join("").display()),
            ];
            case.command(&files, "server", &args)
        });
        let resp = request(server.addr, &get("/latest/meta-data/instance-id"));
        let tight = case.tight(&["timeout-head"]);
        assert_answer(case, &resp, "i-00000001", tight, &[]);
        assert_stops(case, &mut server);
    });
}

fn demo_runs_with_values_from_its_ranges(rt: Runtime) {
    for_each_case(&COMMON, false, |case| {
        let files = TempDir::new();
        let mut demo = Proxy::start_with(rt, |port| {
            let args = [format!("--listen=127.0.0.1:{port}")];
            case.command(&files, "demo", &args)
        });
        let resp = request(demo.addr, &get("/latest/meta-data/instance-id"));
        let tight = case.tight(&["timeout-head", "timeout-connect", "timeout-response"]);
        assert_answer(case, &resp, "i-0000002a", tight, &[]);
        assert_stops(case, &mut demo);
    });
}

/// What each role needs besides the setting under test (none of it is read: the setting is
/// refused first).
fn required(role: &str, flag: &str) -> Vec<String> {
    let list: &[&str] = match (role, flag) {
        ("ns-proxy", _) => &["--router-id", ROUTER, "--listen=127.0.0.1:0"],
        ("agent", "neutron-timeout") => &[
            "--shared-secret-file=/nonexistent/secret",
            "--backend=neutron",
            "--neutron-url=http://127.0.0.1:9",
        ],
        ("agent", _) => &[
            "--shared-secret-file=/nonexistent/secret",
            "--static-map=/nonexistent/map.toml",
        ],
        ("server", _) => &["--instances=/nonexistent/instances", "--direct"],
        _ => &["--listen=127.0.0.1:0"],
    };
    list.iter().map(|s| s.to_string()).collect()
}

/// The value just below `min` and just above `max`.
fn just_outside(o: &Opt) -> [String; 2] {
    match o.kind {
        Kind::Integer => [o.show(o.min - 1.0), o.show(o.max + 1.0)],
        Kind::Seconds => [
            format!("{}", o.min - 0.000_001),
            format!("{}", o.max + 0.000_001),
        ],
    }
}

fn out_of_range(flag: &str, v: &str, shown: &str) -> String {
    format!("{flag}: {v:?} is out of range (accepted: {shown})")
}

/// Each numeric flag of each role, just outside either end, and the two values that used to
/// crash the first request, exit 2 naming the flag and its range.
#[test]
fn values_just_outside_a_range_exit_2_naming_the_flag_and_the_range() {
    let roles: [(&str, &[Opt]); 4] = [
        ("ns-proxy", &NS_PROXY),
        ("agent", &AGENT),
        ("server", &SERVER),
        ("demo", &[]),
    ];
    for (role, own) in roles {
        for o in COMMON.iter().chain(own) {
            for v in just_outside(o) {
                let mut args = vec![role.to_owned()];
                args.extend(required(role, o.name));
                args.push(format!("--{}={v}", o.name));
                assert_exit_2(&args, &out_of_range(&format!("--{}", o.name), &v, o.shown));
            }
        }
    }
    let ns_proxy = |extra: &[&str]| {
        let mut args = vec!["ns-proxy".to_owned()];
        args.extend(required("ns-proxy", ""));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // The reproducers of the crash, as they were reported.
    assert_exit_2(
        &ns_proxy(&["--timeout-head", "1e19"]),
        &out_of_range("--timeout-head", "1e19", TIMEOUT),
    );
    let window = "10/18446744073709551615,10/10";
    assert_exit_2(
        &ns_proxy(&["--rate-limit", window]),
        &format!(
            "--rate-limit: \"{window}\": the window (seconds): \"18446744073709551615\" is out \
             of range (accepted: 1 to 86400)"
        ),
    );
    for (v, part, shown) in [
        ("0/10,10/10", "the count", MILLION),
        ("10/10,1000001/10", "the count", MILLION),
        ("10/0,10/10", "the window (seconds)", "1 to 86400"),
        ("10/10,10/86401", "the window (seconds)", "1 to 86400"),
    ] {
        let want = format!("--rate-limit: \"{v}\": {part}: ");
        assert_exit_2(&ns_proxy(&["--rate-limit", v]), &want);
        assert_exit_2(
            &ns_proxy(&["--rate-limit", v]),
            &format!("(accepted: {shown})"),
        );
    }
    for port in ["0", "65536"] {
        let want = out_of_range("--metadata-port", port, "1 to 65535");
        assert_exit_2(&ns_proxy(&[&format!("--metadata_port={port}")]), &want);
    }
}

/// The same ranges hold for the keys of a TOML file and of Neutron's INI files: the role and
/// `check-config` both name the file's line.
#[test]
fn values_out_of_range_in_files_name_the_line_and_the_range() {
    let dir = TempDir::new();
    let toml = dir.join("mdproxy.toml");
    // (file text, role and its own flags, the line, the message after `FILE:LINE: `)
    let cases: [(&str, &[&str], usize, String); 6] = [
        (
            "timeout-head = 1e19\n",
            &["ns-proxy", "--router-id", ROUTER],
            1,
            out_of_range("`timeout-head`", "1e19", TIMEOUT),
        ),
        (
            "[ns-proxy]\nrate-limit = \"10/18446744073709551615,10/10\"\n",
            &["ns-proxy", "--router-id", ROUTER],
            2,
            "`rate-limit`: \"10/18446744073709551615,10/10\": the window (seconds): ".to_owned(),
        ),
        (
            "[agent]\nstatic-map = \"/m\"\nshared-secret-file = \"/s\"\n\nworkers = 65\n",
            &["agent"],
            5,
            out_of_range("`workers`", "65", "1 to 64"),
        ),
        (
            "[server]\ndirect = true\ninstances = \"/i\"\nrescan-interval = 0.05\n",
            &["server"],
            4,
            out_of_range("`rescan-interval`", "0.05", "0.1 to 86400 seconds"),
        ),
        (
            "[agent]\nstatic-map = \"/m\"\nshared-secret-file = \"/s\"\nmax-head-bytes = 1023\n",
            &["agent"],
            4,
            out_of_range("`max-head-bytes`", "1023", "1024 to 1048576"),
        ),
        (
            "[common]\ndrain-timeout = -1\n",
            &["demo"],
            2,
            out_of_range("`drain-timeout`", "-1", DAY_OR_NONE),
        ),
    ];
    for (text, role, line, msg) in cases {
        fs::write(&toml, text).unwrap();
        let want = format!("{}:{line}: {msg}", toml.display());
        let mut args = vec!["--config".to_owned(), toml.display().to_string()];
        args.extend(role.iter().map(|s| s.to_string()));
        assert_exit_2(&args, &want);
        assert_exit_2(
            &["check-config".to_owned(), toml.display().to_string()],
            &want,
        );
    }
    let ini = dir.join("metadata_agent.ini");
    for (key, v, shown) in [
        ("metadata_workers", "65", "1 to 64"),
        ("metadata_backlog", "0", "1 to 65535"),
        ("metadata_backlog", "65536", "1 to 65535"),
    ] {
        fs::write(&ini, format!("[DEFAULT]\n\n{key} = {v}\n")).unwrap();
        let want = format!("{}:3: {}", ini.display(), out_of_range(key, v, shown));
        let path = ini.display().to_string();
        let agent = ["agent", "--config-file", &path, "--static-map=/m"];
        assert_exit_2(&agent.map(String::from), &want);
        assert_exit_2(&["check-config".to_owned(), path], &want);
    }
    fs::write(&ini, "[DEFAULT]\nnova_metadata_port = 65536\n").unwrap();
    let path = ini.display().to_string();
    let want = format!("{path}:2: nova_metadata_port: ");
    let (status, _, err) = run_binary(&["agent", "--config-file", &path, "--static-map=/m"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&want), "{err}");
    let port = out_of_range("its port", "65536", "1 to 65535");
    assert!(err.contains(&port), "{err}");
}
