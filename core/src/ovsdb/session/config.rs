//! The settings of a [`Session`](super::Session), their ranges, and the reconnect backoff they
//! drive.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::ovsdb::monitor::TableMonitor;
use crate::ovsdb::remote::Remote;
use crate::tls::ClientTls;

/// What to monitor where, and how patiently.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The servers, tried in order, round robin (a cluster's members, or one server).
    pub remotes: Vec<Remote>,
    /// The database, e.g. `OVN_Southbound`.
    pub db: Box<str>,
    /// The tables to replicate (each table at most once).
    pub monitors: Vec<TableMonitor>,
    /// After this long without a byte from the server we send an `echo`; after twice this
    /// long we drop the connection and move on. It also bounds a connection attempt (twice).
    pub probe_interval: Duration,
    /// The first wait before reconnecting, and the wait again after a monitor succeeded.
    pub backoff_min: Duration,
    /// The wait doubles after each failure up to this.
    pub backoff_max: Duration,
    /// Entropy for the backoff's jitter (the core has no randomness of its own).
    pub seed: u64,
    /// The longest message accepted from the server (a monitor's first reply holds every
    /// replicated row, so this bounds the replica too).
    pub max_message: usize,
    /// TLS for `ssl:` remotes. Without it (or in a build without the `tls` feature) an
    /// `ssl:` remote is skipped, saying why.
    pub tls: Option<ClientTls>,
}

/// A setting outside its range, or a configuration that cannot monitor anything.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionConfigError {
    /// No remote.
    NoRemote,
    /// An empty database name.
    NoDatabase,
    /// No table to monitor.
    NoMonitor,
    /// The same table monitored twice.
    DuplicateTable(Box<str>),
    /// A duration outside its range.
    Duration {
        /// The setting's name.
        what: &'static str,
        /// The range.
        range: RangeInclusive<Duration>,
    },
    /// `backoff_min` above `backoff_max`.
    BackoffOrder,
    /// `max_message` outside [`SessionConfig::MAX_MESSAGE`].
    MaxMessage,
}

impl fmt::Display for SessionConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionConfigError::NoRemote => f.write_str("no OVSDB remote"),
            SessionConfigError::NoDatabase => f.write_str("no OVSDB database name"),
            SessionConfigError::NoMonitor => f.write_str("no table to monitor"),
            SessionConfigError::DuplicateTable(t) => write!(f, "table {t} monitored twice"),
            SessionConfigError::Duration { what, range } => {
                write!(
                    f,
                    "{what} must be within {:?}..={:?}",
                    range.start(),
                    range.end()
                )
            }
            SessionConfigError::BackoffOrder => {
                f.write_str("the minimum backoff is above the maximum")
            }
            SessionConfigError::MaxMessage => {
                let r = SessionConfig::MAX_MESSAGE;
                write!(f, "max_message must be within {}..={}", r.start(), r.end())
            }
        }
    }
}

impl std::error::Error for SessionConfigError {}

impl SessionConfig {
    /// ovsdb's default probe interval (`ovn-remote-probe-interval`, 5 s).
    pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(5);
    /// Accepted probe intervals.
    pub const PROBE_INTERVAL: RangeInclusive<Duration> =
        Duration::from_millis(100)..=Duration::from_secs(3600);
    /// ovsdb's reconnect defaults: 1 s doubling up to 8 s.
    pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_secs(1);
    /// See [`SessionConfig::DEFAULT_BACKOFF_MIN`].
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(8);
    /// Accepted backoffs (either bound).
    pub const BACKOFF: RangeInclusive<Duration> =
        Duration::from_millis(10)..=Duration::from_secs(3600);
    /// Default [`max_message`](Self::max_message).
    pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;
    /// Accepted [`max_message`](Self::max_message).
    pub const MAX_MESSAGE: RangeInclusive<usize> = 4096..=(1 << 30);

    /// A configuration with the defaults above.
    pub fn new(remotes: Vec<Remote>, db: &str, monitors: Vec<TableMonitor>) -> SessionConfig {
        SessionConfig {
            remotes,
            db: db.into(),
            monitors,
            probe_interval: Self::DEFAULT_PROBE_INTERVAL,
            backoff_min: Self::DEFAULT_BACKOFF_MIN,
            backoff_max: Self::DEFAULT_BACKOFF_MAX,
            seed: 0,
            max_message: Self::DEFAULT_MAX_MESSAGE,
            tls: None,
        }
    }

    /// Whether every setting is within its range. [`Session::new`](super::Session::new)
    /// clamps what is not, so this is the place to refuse a bad configuration.
    pub fn check(&self) -> Result<(), SessionConfigError> {
        if self.remotes.is_empty() {
            return Err(SessionConfigError::NoRemote);
        }
        if self.db.is_empty() {
            return Err(SessionConfigError::NoDatabase);
        }
        if self.monitors.is_empty() {
            return Err(SessionConfigError::NoMonitor);
        }
        for (i, m) in self.monitors.iter().enumerate() {
            if self.monitors[..i].iter().any(|o| o.table == m.table) {
                return Err(SessionConfigError::DuplicateTable(m.table.clone()));
            }
        }
        for (what, value, range) in [
            ("probe_interval", self.probe_interval, Self::PROBE_INTERVAL),
            ("backoff_min", self.backoff_min, Self::BACKOFF),
            ("backoff_max", self.backoff_max, Self::BACKOFF),
        ] {
            if !range.contains(&value) {
                return Err(SessionConfigError::Duration { what, range });
            }
        }
        if self.backoff_min > self.backoff_max {
            return Err(SessionConfigError::BackoffOrder);
        }
        if !Self::MAX_MESSAGE.contains(&self.max_message) {
            return Err(SessionConfigError::MaxMessage);
        }
        Ok(())
    }

    /// The same with every number forced into its range (a zero probe would spin).
    pub(super) fn clamped(mut self) -> SessionConfig {
        let clamp = |d: Duration, r: RangeInclusive<Duration>| d.clamp(*r.start(), *r.end());
        self.probe_interval = clamp(self.probe_interval, Self::PROBE_INTERVAL);
        self.backoff_min = clamp(self.backoff_min, Self::BACKOFF);
        self.backoff_max = clamp(self.backoff_max, Self::BACKOFF).max(self.backoff_min);
        let r = Self::MAX_MESSAGE;
        self.max_message = self.max_message.clamp(*r.start(), *r.end());
        self
    }
}

/// The wait before the next connection attempt: doubling from `backoff_min` to
/// `backoff_max`, each wait moved by up to ±25% so that many agents that lost the same server
/// at once do not come back in step, and never outside the configured bounds.
///
/// After a monitor that worked, waits stay at the minimum for [`Backoff::RESTART_WINDOW`]
/// before doubling starts: a lost connection is most often a server restarting, and doubling
/// from the first failure would leave the replica stale for up to twice the restart after
/// the server is back. A standalone Southbound of 20 000 rows measured 0.5 to 1.8 s from its
/// start to accepting (on a busy 2-core machine), plus the time it was down. A refused
/// connection costs the server nothing, and the jitter still spreads the agents.
#[derive(Debug)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    /// What is left of the restart window.
    flat: Duration,
    rng: u64,
}

impl Backoff {
    /// How long waits stay at the minimum after a monitor worked.
    pub(super) const RESTART_WINDOW: Duration = Duration::from_secs(3);

    pub(super) fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
            flat: Duration::ZERO,
            rng: seed,
        }
    }

    /// The wait to use now; the one after it is twice as long (up to the maximum), unless
    /// it is one of the waits kept at the minimum after a reset.
    pub(super) fn take(&mut self) -> Duration {
        let base = self.next;
        match self.flat.checked_sub(base) {
            Some(left) => self.flat = left,
            None => {
                self.flat = Duration::ZERO;
                self.next = (self.next * 2).min(self.max);
            }
        }
        // splitmix64: small, and good enough to spread reconnects.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(0.75 + 0.5 * unit).clamp(self.min, self.max)
    }

    /// A monitor succeeded: the next failures wait the minimum again, for a while.
    pub(super) fn reset(&mut self) {
        self.next = self.min;
        self.flat = Self::RESTART_WINDOW;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_within_bounds() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let waits = |seed| {
            let mut b = Backoff::new(min, max, seed);
            (0..12).map(|_| b.take()).collect::<Vec<_>>()
        };
        for seed in 0..50 {
            let w = waits(seed);
            let mut base = min;
            for &d in &w {
                assert!(d >= min && d <= max, "{d:?}");
                assert!(
                    d >= base.mul_f64(0.75) && d <= base.mul_f64(1.25),
                    "{d:?} vs {base:?}"
                );
                base = (base * 2).min(max);
            }
            // Late waits sit near the maximum; early ones far below it.
            assert!(w[0] < Duration::from_millis(126));
            assert!(w[11] >= max.mul_f64(0.75));
        }
        assert_ne!(waits(1), waits(2), "the seed moves the waits");
        assert_eq!(waits(7), waits(7), "the same seed gives the same waits");
    }

    #[test]
    fn after_a_reset_the_first_waits_stay_at_the_minimum() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let near_min = |d: Duration| d >= min && d <= min.mul_f64(1.25);
        let mut b = Backoff::new(min, max, 3);
        for _ in 0..10 {
            b.take();
        }
        b.reset();
        // 3 s of 100 ms waits, then the usual first one: 31 at the minimum.
        let flat = (Backoff::RESTART_WINDOW.as_millis() / min.as_millis()) as usize;
        let waits: Vec<Duration> = (0..flat + 3).map(|_| b.take()).collect();
        assert!(waits[..=flat].iter().all(|&d| near_min(d)), "{waits:?}");
        assert!(waits[flat + 2] >= min * 3, "doubling again: {waits:?}");
    }

    #[test]
    fn ranges() {
        let ok = SessionConfig::new(
            vec!["unix:/s".parse().unwrap()],
            "OVN_Southbound",
            vec![TableMonitor {
                table: "Chassis".into(),
                columns: vec![],
                conditions: None,
            }],
        );
        assert_eq!(ok.check(), Ok(()));
        let bad = |f: fn(&mut SessionConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.check().unwrap_err()
        };
        assert_eq!(bad(|c| c.remotes.clear()), SessionConfigError::NoRemote);
        assert_eq!(bad(|c| c.db = "".into()), SessionConfigError::NoDatabase);
        assert_eq!(bad(|c| c.monitors.clear()), SessionConfigError::NoMonitor);
        assert_eq!(
            bad(|c| c.monitors.push(c.monitors[0].clone())),
            SessionConfigError::DuplicateTable("Chassis".into())
        );
        assert!(matches!(
            bad(|c| c.probe_interval = Duration::ZERO),
            SessionConfigError::Duration {
                what: "probe_interval",
                ..
            }
        ));
        assert_eq!(
            bad(|c| c.backoff_min = c.backoff_max * 2),
            SessionConfigError::BackoffOrder
        );
        assert_eq!(bad(|c| c.max_message = 10), SessionConfigError::MaxMessage);
        let mut zero = ok.clone();
        zero.probe_interval = Duration::ZERO;
        zero.max_message = 0;
        let clamped = zero.clamped();
        assert_eq!(clamped.check(), Ok(()));
    }
}
