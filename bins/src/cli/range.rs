//! The accepted range of every numeric setting, in one table, checked where the setting is
//! read. Flags, TOML keys and Neutron's INI keys all reach the roles' parsers as the same
//! [`Setting`](super::args::Setting)s, so this one check covers every source, and an error in
//! a file names its `FILE:LINE`.
//!
//! Why ranges and not just "a number": the core adds timeouts to `Instant`s and multiplies
//! rate windows, and a value as large as `--timeout-head 1e19` used to pass the parser and
//! overflow on the first request (a panic: an abort, in release builds). Every bound below
//! keeps that arithmetic far from overflow (a day past any `Instant`), and each is wide enough
//! for any deployment an operator would run while still rejecting typos (`--max-conns 0`).
//! The defaults of DESIGN.md sit inside each range; `--help` and `mdproxy.example.toml` show
//! the ranges (a unit test holds the help to them).

use mdproxy_core::lookup::NeutronConfig;
use std::fmt;
use std::time::Duration;

/// The longest time any setting may be: long enough for every sane timeout, TTL or window,
/// short enough that `now + it` never overflows an `Instant`.
const DAY: Duration = Duration::from_secs(86_400);

/// Timeouts a connection waits for (`--timeout-*`, `--neutron-timeout`): from 1 ms (zero
/// would expire every connection at once) to a day.
pub const TIMEOUT: Range<Duration> = Range::new(Duration::from_millis(1), DAY);
/// `--drain-timeout`: zero means exit at once after SIGTERM.
pub const DRAIN_TIMEOUT: Range<Duration> = Range::new(Duration::ZERO, DAY);
/// `--cache-ttl`, `--negative-cache-ttl`: zero disables caching of that kind.
pub const CACHE_TTL: Range<Duration> = Range::new(Duration::ZERO, DAY);
/// `--rescan-interval`: each rescan stats every instance file, so not more often than ten
/// times a second.
pub const RESCAN_INTERVAL: Range<Duration> = Range::new(Duration::from_millis(100), DAY);
/// `--secret-grace`: how long the server still takes the previous shared secret after a
/// SIGHUP changed it; a day covers any hand-run rotation.
pub const SECRET_GRACE: Range<Duration> = Range::new(Duration::ZERO, DAY);
/// Connections open at once (`--max-conns`, `--max-conns-per-ip`).
pub const CONNS: Range<usize> = Range::new(1, 1_000_000);
/// `--backlog`: the kernel caps it at `net.core.somaxconn` anyway.
pub const BACKLOG: Range<u32> = Range::new(1, 65_535);
/// `--workers`: event-loop threads, each with its own preallocated lookup cache.
pub const WORKERS: Range<usize> = Range::new(1, 64);
/// `--cache-size`: entries, preallocated per worker (100 000 entries take ~28 MiB).
pub const CACHE_SIZE: Range<usize> = Range::new(1, 1_000_000);
/// The request counts of `--rate-limit`.
pub const RATE_COUNT: Range<u32> = Range::new(1, 1_000_000);
/// The windows of `--rate-limit`, in whole seconds.
pub const RATE_WINDOW: Range<u64> = Range::new(1, 86_400);
/// `--max-neutron-queries`: lookups talking to Neutron at once, per worker.
pub const NEUTRON_QUERIES: Range<usize> = Range::new(1, NeutronConfig::MAX_IN_FLIGHT);
/// `--max-head-bytes`: from 1 KiB, which holds any head cloud-init or botocore sends (a few
/// hundred bytes) with the hops' own fields, to 1 MiB; a connection may buffer this much, so
/// not more.
pub const HEAD_BYTES: Range<usize> = Range::new(1024, 1 << 20);
/// `--max-headers`: at least the handful a client and the hops before us send.
pub const HEADERS: Range<usize> = Range::new(8, 1000);
/// `--max-body-bytes`: from 1 KiB, so that Nova's largest password POST (1020 bytes) passes
/// every hop, to 16 MiB (a chunked body is gathered in memory before it is forwarded).
pub const BODY_BYTES: Range<u64> = Range::new(1024, 16 << 20);
/// `--max-chunk-line-bytes`: a chunk-size line of a large body takes a dozen bytes; the limit
/// also bounds a trailer section, which is read and dropped.
pub const CHUNK_LINE_BYTES: Range<usize> = Range::new(64, 65_536);
/// `--ovn-probe-interval`: silence on the Southbound connection this long sends an echo, twice
/// as long drops it. From 100 ms (the echo costs a few bytes) to a day.
pub const OVN_PROBE: Range<Duration> = Range::new(Duration::from_millis(100), DAY);
/// `--token-hop-limit` (AWS's HttpPutResponseHopLimit: 1 to 64).
pub const HOP_LIMIT: Range<u8> = Range::new(1, 64);
/// `--metadata-probe-interval`: a probe is one `GET /` per server; not more often than ten
/// times a second.
pub const PROBE_INTERVAL: Range<Duration> = Range::new(Duration::from_millis(100), DAY);
/// `--request-deadline`: connect, retries and the answer's head of one request, 1 ms to a day.
pub const REQUEST_DEADLINE: Range<Duration> = Range::new(Duration::from_millis(1), DAY);
/// `--response-cache-ttl`, `--stale-if-error`: zero turns each off.
pub const RESPONSE_TTL: Range<Duration> = Range::new(Duration::ZERO, DAY);
/// TCP ports (`--metadata-port`, the port of a URL).
pub const PORT: Range<u16> = Range::new(1, 65_535);

/// The inclusive range `min..=max` of a numeric setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range<T> {
    pub min: T,
    pub max: T,
}

impl<T: Bound> Range<T> {
    pub const fn new(min: T, max: T) -> Range<T> {
        Range { min, max }
    }

    /// The value `v` of `flag` (as messages quote it), if it is a number inside the range.
    pub fn parse(&self, flag: &str, v: &str) -> Result<T, String> {
        match T::read(v, self) {
            Ok(n) => Ok(n),
            Err(Bad::NotANumber) => Err(format!(
                "{flag}: {v:?} is not a valid number (accepted: {self})"
            )),
            Err(Bad::Outside) => Err(format!("{flag}: {v:?} is out of range (accepted: {self})")),
        }
    }

    /// Whether `n` is inside the range.
    pub fn contains(&self, n: T) -> bool {
        self.min <= n && n <= self.max
    }
}

impl<T: Bound> fmt::Display for Range<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}{}", self.min.show(), self.max.show(), T::UNIT)
    }
}

/// Why a value was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    NotANumber,
    Outside,
}

/// A kind of number a setting takes: how it is written and read.
pub trait Bound: Copy + PartialOrd + Sized {
    /// Appended to the range in messages and help (` seconds`).
    const UNIT: &'static str;
    /// `v` as a number inside `range`.
    fn read(v: &str, range: &Range<Self>) -> Result<Self, Bad>;
    fn show(self) -> String;
}

/// Integers: read wide, so that `-1` and `99999999999999999999` are "out of range", not "not a
/// number".
macro_rules! integer_bound {
    ($($t:ty),*) => {$(
        impl Bound for $t {
            const UNIT: &'static str = "";

            fn read(v: &str, range: &Range<Self>) -> Result<Self, Bad> {
                let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Bad::NotANumber);
                }
                let wide: i128 = v.parse().map_err(|_| Bad::Outside)?;
                let n = <$t>::try_from(wide).map_err(|_| Bad::Outside)?;
                match range.contains(n) {
                    true => Ok(n),
                    false => Err(Bad::Outside),
                }
            }

            fn show(self) -> String {
                self.to_string()
            }
        }
    )*};
}
integer_bound!(u8, u16, u32, u64, usize);

/// Durations, written in seconds with an optional fraction (`0.25`, `1e-3`).
impl Bound for Duration {
    const UNIT: &'static str = " seconds";

    fn read(v: &str, range: &Range<Self>) -> Result<Self, Bad> {
        let s: f64 = v.parse().map_err(|_| Bad::NotANumber)?;
        if s.is_nan() {
            return Err(Bad::NotANumber);
        }
        // Compared as seconds first: a value too large for a Duration is out of range too.
        if s < range.min.as_secs_f64() || s > range.max.as_secs_f64() {
            return Err(Bad::Outside);
        }
        let d = Duration::try_from_secs_f64(s).map_err(|_| Bad::Outside)?;
        // Rounding to nanoseconds may cross a bound by a hair: clamp, it is the value meant.
        Ok(d.clamp(range.min, range.max))
    }

    fn show(self) -> String {
        self.as_secs_f64().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        let r = Range::<u32>::new(1, 10);
        assert_eq!(r.parse("--n", "1"), Ok(1));
        assert_eq!(r.parse("--n", "10"), Ok(10));
        assert_eq!(r.parse("--n", "+7"), Ok(7));
        for (v, why) in [
            ("0", "out of range"),
            ("11", "out of range"),
            ("-1", "out of range"),
            ("18446744073709551616", "out of range"),
            (
                "99999999999999999999999999999999999999999999",
                "out of range",
            ),
            ("", "not a valid number"),
            ("1.5", "not a valid number"),
            ("one", "not a valid number"),
            (" 1", "not a valid number"),
            ("-", "not a valid number"),
        ] {
            let e = r.parse("--n", v).unwrap_err();
            assert_eq!(e, format!("--n: {v:?} is {why} (accepted: 1 to 10)"));
        }
        assert_eq!(PORT.parse("--p", "65535"), Ok(65_535));
        assert!(PORT
            .parse("--p", "65536")
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn seconds() {
        let ms = Duration::from_millis;
        assert_eq!(TIMEOUT.parse("--t", "0.001"), Ok(ms(1)));
        assert_eq!(TIMEOUT.parse("--t", "1e-3"), Ok(ms(1)));
        assert_eq!(TIMEOUT.parse("--t", "0.25"), Ok(ms(250)));
        assert_eq!(TIMEOUT.parse("--t", "86400"), Ok(DAY));
        assert_eq!(DRAIN_TIMEOUT.parse("--t", "0"), Ok(Duration::ZERO));
        assert_eq!(DRAIN_TIMEOUT.parse("--t", "-0"), Ok(Duration::ZERO));
        for v in [
            "0",
            "0.0009",
            "1e-400",
            "86400.001",
            "1e19",
            "inf",
            "-1",
            "-inf",
        ] {
            let e = TIMEOUT.parse("--t", v).unwrap_err();
            let want = format!("--t: {v:?} is out of range (accepted: 0.001 to 86400 seconds)");
            assert_eq!(e, want);
        }
        for v in ["nan", "", "30s", "1,5"] {
            let e = TIMEOUT.parse("--t", v).unwrap_err();
            assert!(e.contains("is not a valid number (accepted: 0.001"), "{e}");
        }
    }

    /// The defaults of DESIGN.md (and of `--help`) are inside their ranges.
    #[test]
    fn the_defaults_are_inside() {
        let secs = Duration::from_secs;
        for (range, default) in [
            (TIMEOUT, secs(30)),
            (TIMEOUT, secs(60)),
            (TIMEOUT, secs(10)),
            (DRAIN_TIMEOUT, secs(10)),
            (CACHE_TTL, secs(5)),
            (CACHE_TTL, secs(1)),
            (RESCAN_INTERVAL, secs(2)),
            (SECRET_GRACE, secs(600)),
        ] {
            assert!(range.contains(default), "{default:?} outside {range}");
        }
        for (range, default) in [
            (CONNS, 1024),
            (CONNS, 64),
            (CONNS, 4096),
            (CACHE_SIZE, 10_000),
        ] {
            assert!(range.contains(default), "{default} outside {range}");
        }
        assert!(BACKLOG.contains(4096) && WORKERS.contains(1) && PORT.contains(9697));
        let limits = mdproxy_core::http::Limits::default();
        assert!(HEAD_BYTES.contains(limits.max_head) && HEADERS.contains(limits.max_headers));
        assert!(BODY_BYTES.contains(limits.max_body));
        assert!(CHUNK_LINE_BYTES.contains(limits.max_chunk_line));
    }

    /// The value just outside each end of a range, for the tests.
    trait Outside: Bound {
        fn below(self) -> String;
        fn above(self) -> String;
    }

    macro_rules! integer_outside {
        ($($t:ty),*) => {$(
            impl Outside for $t {
                fn below(self) -> String {
                    (i128::from(self) - 1).to_string()
                }
                fn above(self) -> String {
                    (i128::from(self) + 1).to_string()
                }
            }
        )*};
    }
    integer_outside!(u8, u16, u32, u64);

    impl Outside for usize {
        fn below(self) -> String {
            (self as i128 - 1).to_string()
        }
        fn above(self) -> String {
            (self as i128 + 1).to_string()
        }
    }

    impl Outside for Duration {
        fn below(self) -> String {
            (self.as_secs_f64() - 1e-6).to_string()
        }
        fn above(self) -> String {
            (self.as_secs_f64() + 1e-6).to_string()
        }
    }

    /// One numeric flag: the role, the flag, the range as `--help` shows it, and its ends and
    /// the values just outside them.
    struct Row {
        role: &'static str,
        flag: &'static str,
        shown: String,
        inside: [String; 2],
        outside: [String; 2],
    }

    fn row<T: Outside>(role: &'static str, flag: &'static str, r: Range<T>) -> Row {
        Row {
            role,
            flag,
            shown: r.to_string(),
            inside: [r.min.show(), r.max.show()],
            outside: [r.min.below(), r.max.above()],
        }
    }

    /// Every numeric flag of every role.
    fn rows() -> Vec<Row> {
        let mut rows = Vec::new();
        for role in ["ns-proxy", "agent", "server", "demo"] {
            for flag in [
                "--timeout-head",
                "--timeout-idle",
                "--timeout-connect",
                "--timeout-response",
            ] {
                rows.push(row(role, flag, TIMEOUT));
            }
            rows.push(row(role, "--drain-timeout", DRAIN_TIMEOUT));
            rows.extend([
                row(role, "--max-head-bytes", HEAD_BYTES),
                row(role, "--max-headers", HEADERS),
                row(role, "--max-body-bytes", BODY_BYTES),
                row(role, "--max-chunk-line-bytes", CHUNK_LINE_BYTES),
            ]);
        }
        rows.extend([
            row("ns-proxy", "--max-conns", CONNS),
            row("ns-proxy", "--max-conns-per-ip", CONNS),
            row("ns-proxy", "--metadata_port", PORT),
            row("ns-proxy", "--token-hop-limit", HOP_LIMIT),
            row("node", "--token-hop-limit", HOP_LIMIT),
            row("agent", "--backlog", BACKLOG),
            row("agent", "--workers", WORKERS),
            row("agent", "--max-conns", CONNS),
            row("server", "--max-conns", CONNS),
            row("server", "--max-conns-per-ip", CONNS),
            row("agent", "--cache-size", CACHE_SIZE),
            row("agent", "--cache-ttl", CACHE_TTL),
            row("agent", "--negative-cache-ttl", CACHE_TTL),
            row("agent", "--neutron-timeout", TIMEOUT),
            row("agent", "--max-neutron-queries", NEUTRON_QUERIES),
            row("agent", "--ovn-probe-interval", OVN_PROBE),
            row("agent", "--metadata-probe-interval", PROBE_INTERVAL),
            row("agent", "--request-deadline", REQUEST_DEADLINE),
            row("agent", "--response-cache-ttl", RESPONSE_TTL),
            row("agent", "--stale-if-error", RESPONSE_TTL),
            row("server", "--rescan-interval", RESCAN_INTERVAL),
            row("server", "--secret-grace", SECRET_GRACE),
        ]);
        rows
    }

    fn help(role: &str) -> &'static str {
        match role {
            "ns-proxy" => super::super::ns_proxy::HELP,
            "agent" => super::super::agent::HELP,
            "server" => super::super::server::HELP,
            "node" => super::super::node::HELP,
            _ => super::super::demo::HELP,
        }
    }

    /// The entry of `flag` in `help`: its first line and the indented lines after it, with
    /// runs of spaces made one.
    fn entry(help: &str, flag: &str) -> Option<String> {
        let mut lines = help.lines().skip_while(|l| {
            let l = l.trim_start();
            !(l.starts_with(flag) && l[flag.len()..].starts_with(' '))
        });
        let first = lines.next()?;
        let more =
            lines.take_while(|l| l.starts_with("       ") && !l.trim_start().starts_with("--"));
        let text: Vec<&str> = std::iter::once(first).chain(more).collect();
        Some(
            text.join(" ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        )
    }

    /// The role's flags with a numeric value, read from its help (metavars S, N, PORT and the
    /// rate limit's).
    fn numeric_in_help(role: &str) -> Vec<String> {
        help(role)
            .lines()
            .filter_map(|l| l.strip_prefix("      --"))
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let (flag, metavar) = (words.next()?, words.next()?);
                let numeric = ["S", "N", "PORT", "B/BW,U/UW"].contains(&metavar);
                numeric.then(|| format!("--{flag}"))
            })
            .collect()
    }

    /// `--help` shows each range on its flag's entry, every numeric flag of the help has a
    /// range, and the parser takes exactly that range.
    #[test]
    fn the_help_tells_each_range_and_the_parser_keeps_to_it() {
        let rows = rows();
        for role in ["ns-proxy", "agent", "server", "demo"] {
            let numeric = numeric_in_help(role);
            assert!(numeric.len() >= 5, "{role}: {numeric:?}");
            for flag in numeric.iter().filter(|f| *f != "--rate-limit") {
                let known = rows.iter().any(|r| r.role == role && r.flag == *flag);
                assert!(known, "{role} {flag} takes a number but has no range here");
            }
        }
        let rate = entry(help("ns-proxy"), "--rate-limit").unwrap();
        let want = format!("B and U: {RATE_COUNT}, BW and UW: {RATE_WINDOW} seconds");
        assert!(rate.contains(&want), "{rate}");
        for r in &rows {
            let shown = entry(help(r.role), r.flag).unwrap_or_default();
            assert!(
                shown.contains(&r.shown),
                "{} {}: {shown:?} lacks {}",
                r.role,
                r.flag,
                r.shown
            );
            let required: &[&str] = match (r.role, r.flag) {
                ("ns-proxy", _) => &["--router-id", "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01"],
                ("agent", "--neutron-timeout" | "--max-neutron-queries") => &[
                    "--shared-secret-file=/s",
                    "--backend=neutron",
                    "--neutron-url=http://127.0.0.1:9696",
                ],
                ("agent", "--ovn-probe-interval") => &[
                    "--shared-secret-file=/s",
                    "--backend=ovn",
                    "--ovn-sb-connection=tcp:127.0.0.1:6642",
                ],
                ("agent", "--stale-if-error") => &[
                    "--shared-secret-file=/s",
                    "--static-map=/m",
                    "--response-cache-ttl=1",
                ],
                ("agent", _) => &["--shared-secret-file=/s", "--static-map=/m"],
                ("server", _) => &["--instances=/i", "--direct"],
                ("node", _) => &[
                    "--watch-dir=/w",
                    "--shared-secret-file=/s",
                    "--static-map=/m",
                ],
                _ => &[],
            };
            let parse = |v: &str| {
                let flag = format!("{}={v}", r.flag);
                let mut argv = vec!["mdproxy", r.role];
                argv.extend(required);
                argv.push(&flag);
                crate::cli::parse(argv.into_iter().map(std::ffi::OsString::from))
            };
            for v in &r.inside {
                assert!(
                    parse(v).is_ok(),
                    "{} {}={v}: {:?}",
                    r.role,
                    r.flag,
                    parse(v).err()
                );
            }
            for v in &r.outside {
                let e = parse(v).err().unwrap_or_default();
                let canonical = r.flag.replace('_', "-");
                let want = format!("{canonical}: {v:?} is out of range (accepted: {})", r.shown);
                assert_eq!(e, want, "{} {}={v}", r.role, r.flag);
            }
        }
    }
}
