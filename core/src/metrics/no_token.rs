//! The IMDSv1 migration aid (AWS's `MetadataNoToken`): requests the agent served without a
//! token, per instance, so that an operator sees who still uses IMDSv1 before switching a
//! network to `required`.
//!
//! Cardinality is bounded: the first [`MAX_INSTANCES`] instances seen get a series each, any
//! later one counts in `instance="other"`. First come rather than top N: a counter that could
//! lose its series when another instance overtakes it would read as a reset to Prometheus.
//! Counted under a lock, but only for requests without a token (the ones to get rid of).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Instances with a series of their own.
pub const MAX_INSTANCES: usize = 256;

/// Requests served without a token, by instance.
#[derive(Debug, Default)]
pub(crate) struct NoToken {
    by_instance: BTreeMap<String, u64>,
    other: u64,
}

impl NoToken {
    /// One more from `instance`.
    pub(crate) fn count(&mut self, instance: &str) {
        if let Some(n) = self.by_instance.get_mut(instance) {
            *n += 1;
        } else if self.by_instance.len() < MAX_INSTANCES {
            self.by_instance.insert(instance.to_owned(), 1);
        } else {
            self.other += 1;
        }
    }

    /// The family, in the text format, under `role`'s label (always there for the agent and
    /// the node, so that "nobody" reads 0).
    pub(crate) fn render(&self, out: &mut String, role: &str) {
        let name = "mdproxy_imds_no_token_requests_total";
        let _ = write!(
            out,
            "# HELP {name} Requests the agent served without an IMDSv2 token (IMDSv1), by instance: the first {MAX_INSTANCES} instances, then \"other\".\n# TYPE {name} counter\n"
        );
        for (instance, n) in &self.by_instance {
            // Instance ids come from Neutron or a file: escape as the format requires.
            let label = instance
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(out, "{name}{{role=\"{role}\",instance=\"{label}\"}} {n}");
        }
        if self.other > 0 {
            let _ = writeln!(
                out,
                "{name}{{role=\"{role}\",instance=\"other\"}} {}",
                self.other
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_instance() {
        let mut c = NoToken::default();
        c.count("a");
        c.count("a");
        c.count("q\"x");
        for i in 0..MAX_INSTANCES + 10 {
            c.count(&format!("i-{i}"));
        }
        c.count("a");
        let mut out = String::new();
        c.render(&mut out, "agent");
        assert!(out.contains("instance=\"a\"} 3\n"), "{out}");
        assert!(out.contains("instance=\"q\\\"x\"} 1\n"), "{out}");
        // Two seen first, then MAX - 2 of the i-N; the other 12 are "other".
        assert!(out.contains("instance=\"other\"} 12\n"), "{out}");
        let series = out.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(series, MAX_INSTANCES + 1);
    }
}
