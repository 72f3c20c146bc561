//! Deadlines of an endpoint's connections and pooled sockets, earliest first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::socket::SockId;

/// One deadline per id at most.
#[derive(Debug, Default)]
pub(super) struct Timers {
    by_time: BTreeSet<(Instant, SockId)>,
    of: BTreeMap<SockId, Instant>,
}

impl Timers {
    /// Sets (or, `None`, clears) the deadline of `id`.
    pub(super) fn set(&mut self, id: SockId, when: Option<Instant>) {
        let old = self.of.get(&id).copied();
        if old == when {
            return;
        }
        if let Some(old) = old {
            self.by_time.remove(&(old, id));
            self.of.remove(&id);
        }
        if let Some(when) = when {
            self.by_time.insert((when, id));
            self.of.insert(id, when);
        }
    }

    /// A connection's timer need only fire no later than its deadline: the connection ignores
    /// an early call, and the timer is armed again after it. So when the deadline moved later
    /// (every read and write of a busy connection pushes it on), the earlier entry stays,
    /// rather than moving in the timer map on every event.
    pub(super) fn arm(&mut self, id: SockId, when: Option<Instant>) {
        if let (Some(when), Some(armed)) = (when, self.of.get(&id)) {
            if *armed <= when {
                return;
            }
        }
        self.set(id, when);
    }

    /// The earliest deadline.
    pub(super) fn first(&self) -> Option<Instant> {
        self.by_time.first().map(|(when, _)| *when)
    }

    /// Takes the earliest id whose deadline is at or before `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<SockId> {
        let &(when, id) = self.by_time.first()?;
        if when > now {
            return None;
        }
        self.by_time.pop_first();
        self.of.remove(&id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_in_order_and_arming_keeps_the_earlier() {
        let t0 = crate::testing::epoch();
        let s = Duration::from_secs(1);
        let mut t = Timers::default();
        t.set(SockId(1), Some(t0 + 2 * s));
        t.set(SockId(2), Some(t0 + s));
        t.arm(SockId(2), Some(t0 + 5 * s)); // later: the earlier entry stays
        assert_eq!(t.first(), Some(t0 + s));
        t.arm(SockId(1), Some(t0)); // earlier: moves
        assert_eq!(t.pop_due(t0), Some(SockId(1)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.pop_due(t0 + s), Some(SockId(2)));
        t.set(SockId(3), Some(t0));
        t.set(SockId(3), None);
        assert_eq!(t.first(), None);
    }
}
