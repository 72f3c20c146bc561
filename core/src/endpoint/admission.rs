//! Who may connect: connection counts overall, per scope and per client IP against the limits.
//!
//! A connection of a scoped listener (the node role) counts against its scope too, and its IP
//! is counted within that scope: `10.0.0.5` behind one router is not `10.0.0.5` behind another.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::ConnLimits;
use crate::scope::Scope;

/// Connections that count against the limits (not yet closing), overall, per scope and per IP.
#[derive(Debug)]
pub(super) struct Admission {
    limits: ConnLimits,
    active: usize,
    per_ip: BTreeMap<(Option<Scope>, IpAddr), usize>,
    per_scope: BTreeMap<Scope, usize>,
}

/// Why a connection is refused on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `max_conns` are open.
    Full,
    /// `max_conns_per_ip` are open from this address.
    FullForIp,
    /// The listener's own `max_conns` are open in its scope.
    FullForScope,
}

impl Refusal {
    /// The answer's message.
    pub(super) fn message(self) -> &'static str {
        match self {
            Refusal::Full => "Too many connections.",
            Refusal::FullForIp => "Too many connections from this address.",
            Refusal::FullForScope => "Too many connections on this network.",
        }
    }
}

impl Admission {
    pub(super) fn new(limits: ConnLimits) -> Admission {
        Admission {
            limits,
            active: 0,
            per_ip: BTreeMap::new(),
            per_scope: BTreeMap::new(),
        }
    }

    /// New limits (SIGHUP), from the next [`Admission::admit`]: the connections already
    /// counted stay, even past a lower limit; they only keep newer ones out until they close.
    pub(super) fn set_limits(&mut self, limits: ConnLimits) {
        self.limits = limits;
    }

    /// Counts a new connection from `ip`, or says why it may not be. `scoped`: the scope of
    /// its listener and that listener's own limit.
    pub(super) fn admit(
        &mut self,
        ip: Option<IpAddr>,
        scoped: Option<(Scope, usize)>,
    ) -> Result<(), Refusal> {
        let scope = scoped.map(|(s, _)| s);
        let from_ip = ip.map_or(0, |ip| count(&self.per_ip, &(scope, ip)));
        if self.active >= self.limits.max_conns {
            return Err(Refusal::Full);
        }
        if let Some((scope, max)) = scoped {
            if count(&self.per_scope, &scope) >= max {
                return Err(Refusal::FullForScope);
            }
        }
        if from_ip >= self.limits.max_conns_per_ip {
            return Err(Refusal::FullForIp);
        }
        self.active += 1;
        if let Some(ip) = ip {
            *self.per_ip.entry((scope, ip)).or_insert(0) += 1;
        }
        if let Some(scope) = scope {
            *self.per_scope.entry(scope).or_insert(0) += 1;
        }
        Ok(())
    }

    /// A counted connection from `ip` (in `scope`) no longer counts.
    pub(super) fn release(&mut self, ip: Option<IpAddr>, scope: Option<Scope>) {
        self.active = self.active.saturating_sub(1);
        if let Some(ip) = ip {
            uncount(&mut self.per_ip, (scope, ip));
        }
        if let Some(scope) = scope {
            uncount(&mut self.per_scope, scope);
        }
    }
}

fn count<K: Ord>(map: &BTreeMap<K, usize>, key: &K) -> usize {
    map.get(key).copied().unwrap_or(0)
}

/// One less under `key`; a key that reaches zero is forgotten.
fn uncount<K: Ord>(map: &mut BTreeMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_overall_and_per_ip() {
        let mut a = Admission::new(ConnLimits {
            max_conns: 3,
            max_conns_per_ip: 2,
        });
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(a.admit(Some(x), None), Ok(()));
        assert_eq!(a.admit(Some(x), None), Ok(()));
        assert_eq!(a.admit(Some(x), None), Err(Refusal::FullForIp));
        assert_eq!(a.admit(Some(y), None), Ok(()));
        assert_eq!(a.admit(None, None), Err(Refusal::Full));
        a.release(Some(x), None);
        assert_eq!(a.admit(Some(x), None), Ok(()));
        a.release(Some(y), None);
        assert!(
            !a.per_ip.contains_key(&(None, y)),
            "an address with no connection is forgotten"
        );
    }

    #[test]
    fn a_scope_has_its_own_limit_and_its_own_addresses() {
        use crate::scope::Uuid;
        let mut a = Admission::new(ConnLimits {
            max_conns: 10,
            max_conns_per_ip: 1,
        });
        let (r1, r2) = (Scope::Router(Uuid(1)), Scope::Router(Uuid(2)));
        let x: IpAddr = "10.0.0.5".parse().unwrap();
        let y: IpAddr = "10.0.0.6".parse().unwrap();
        assert_eq!(a.admit(Some(x), Some((r1, 2))), Ok(()));
        // The same address behind another router is another instance.
        assert_eq!(a.admit(Some(x), Some((r2, 2))), Ok(()));
        assert_eq!(a.admit(Some(x), Some((r1, 2))), Err(Refusal::FullForIp));
        assert_eq!(a.admit(Some(y), Some((r1, 2))), Ok(()));
        let z: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(a.admit(Some(z), Some((r1, 2))), Err(Refusal::FullForScope));
        assert_eq!(a.admit(Some(z), Some((r2, 2))), Ok(()));
        a.release(Some(y), Some(r1));
        assert_eq!(a.admit(Some(z), Some((r1, 2))), Ok(()));
        assert_eq!(a.active, 4);
    }

    #[test]
    fn a_lower_limit_refuses_the_next_but_keeps_the_counted() {
        let mut a = Admission::new(ConnLimits::default());
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(a.admit(Some(x), None), Ok(()));
        }
        a.set_limits(ConnLimits {
            max_conns: 2,
            max_conns_per_ip: 2,
        });
        assert_eq!(a.active, 3, "the open ones still count");
        assert_eq!(a.admit(Some(x), None), Err(Refusal::Full));
        a.release(Some(x), None);
        assert_eq!(a.admit(None, None), Err(Refusal::Full), "still two open");
        a.set_limits(ConnLimits {
            max_conns: 10,
            max_conns_per_ip: 2,
        });
        assert_eq!(a.admit(Some(x), None), Err(Refusal::FullForIp));
        a.release(Some(x), None);
        assert_eq!(a.admit(Some(x), None), Ok(()), "one open, under both");
        a.set_limits(ConnLimits::default());
        assert_eq!(a.admit(Some(x), None), Ok(()));
    }
}
