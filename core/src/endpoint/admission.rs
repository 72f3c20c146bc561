//! Who may connect: connection counts overall and per client IP against the limits.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::ConnLimits;

/// Connections that count against the limits (not yet closing), overall and per IP.
#[derive(Debug)]
pub(super) struct Admission {
    limits: ConnLimits,
    active: usize,
    per_ip: BTreeMap<IpAddr, usize>,
}

/// Why a connection is refused on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `max_conns` are open.
    Full,
    /// `max_conns_per_ip` are open from this address.
    FullForIp,
}

impl Refusal {
    /// The answer's message.
    pub(super) fn message(self) -> &'static str {
        match self {
            Refusal::Full => "Too many connections.",
            Refusal::FullForIp => "Too many connections from this address.",
        }
    }
}

impl Admission {
    pub(super) fn new(limits: ConnLimits) -> Admission {
        Admission {
            limits,
            active: 0,
            per_ip: BTreeMap::new(),
        }
    }

    /// Counts a new connection from `ip`, or says why it may not be.
    pub(super) fn admit(&mut self, ip: Option<IpAddr>) -> Result<(), Refusal> {
        let from_ip = ip.map_or(0, |ip| self.per_ip.get(&ip).copied().unwrap_or(0));
        if self.active >= self.limits.max_conns {
            return Err(Refusal::Full);
        }
        if from_ip >= self.limits.max_conns_per_ip {
            return Err(Refusal::FullForIp);
        }
        self.active += 1;
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_insert(0) += 1;
        }
        Ok(())
    }

    /// A counted connection from `ip` no longer counts.
    pub(super) fn release(&mut self, ip: Option<IpAddr>) {
        self.active = self.active.saturating_sub(1);
        if let Some(ip) = ip {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
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
        assert_eq!(a.admit(Some(x)), Ok(()));
        assert_eq!(a.admit(Some(x)), Ok(()));
        assert_eq!(a.admit(Some(x)), Err(Refusal::FullForIp));
        assert_eq!(a.admit(Some(y)), Ok(()));
        assert_eq!(a.admit(None), Err(Refusal::Full));
        a.release(Some(x));
        assert_eq!(a.admit(Some(x)), Ok(()));
        a.release(Some(y));
        assert!(
            !a.per_ip.contains_key(&y),
            "an address with no connection is forgotten"
        );
    }
}
