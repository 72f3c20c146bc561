//! The lookup index: (network, IP) → ports and (network, MAC) → ports, kept small so that a
//! lookup costs about the same with 100 ports as with 100 000 (a hit reads the network's
//! number, one table slot and the port's row).
//!
//! - A network UUID is numbered ([`NetId`], 4 bytes) while ports are on it, so keys are one
//!   or two machine words: an IPv4 key packs into a `u64`, a MAC key is (number, `u64`), an
//!   IPv6 key (number, `u128`).
//! - A port is its slot in the replica's row table ([`Slot`], 4 bytes), not its UUID; the
//!   one port an address almost always has is held in the entry itself.
//! - The hash is a multiply-and-mix of those words ([`Mix`]), not SipHash: the keys are the
//!   Southbound's own rows, and a client only chooses its address within its own subnet, so
//!   there is nobody to flood the table with chosen collisions.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use crate::scope::Uuid;

/// A port's place in the replica's row table.
pub(super) type Slot = u32;

/// A network's number while it is in use.
type NetId = u32;

/// A map hashed with [`Mix`].
pub(super) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Mix>>;
/// A set hashed with [`Mix`].
pub(super) type FastSet<K> = HashSet<K, BuildHasherDefault<Mix>>;

/// FxHash's word step with a final avalanche (the table uses both the low and the high bits).
#[derive(Default, Clone, Copy)]
pub(super) struct Mix(u64);

impl Hasher for Mix {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The ports of one key: nearly always one, held in place.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ports {
    One(Slot),
    Many(Vec<Slot>),
}

impl Ports {
    fn as_slice(&self) -> &[Slot] {
        match self {
            Ports::One(s) => std::slice::from_ref(s),
            Ports::Many(v) => v,
        }
    }

    /// Adds `slot`.
    fn add(&mut self, slot: Slot) {
        match self {
            Ports::One(s) => *self = Ports::Many(vec![*s, slot]),
            Ports::Many(v) => v.push(slot),
        }
    }

    /// Removes `slot`; false once nothing is left.
    fn remove(&mut self, slot: Slot) -> bool {
        match self {
            Ports::One(s) => *s != slot,
            Ports::Many(v) => {
                v.retain(|&s| s != slot);
                match *v.as_slice() {
                    [] => false,
                    [one] => {
                        *self = Ports::One(one);
                        true
                    }
                    _ => true,
                }
            }
        }
    }
}

/// A network's number and how many (port, network) memberships use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    id: NetId,
    refs: u32,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Index {
    nets: FastMap<Uuid, Net>,
    /// Numbers of networks no port is on any more, for the next new one.
    free: Vec<NetId>,
    v4: FastMap<u64, Ports>,
    v6: FastMap<(NetId, u128), Ports>,
    mac: FastMap<(NetId, u64), Ports>,
}

/// [`Index::dump`]: the networks with their references, the keys with their ports.
#[cfg(any(test, fuzzing, feature = "testing"))]
pub(super) type Dump = (Vec<(Uuid, u32)>, Vec<(Uuid, Key, Vec<Slot>)>);

/// One key, for [`Index::dump`].
#[cfg(any(test, fuzzing, feature = "testing"))]
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Key {
    Ip(IpAddr),
    Mac([u8; 6]),
}

fn mac_key(net: NetId, mac: [u8; 6]) -> (NetId, u64) {
    let [a, b, c, d, e, f] = mac;
    (net, u64::from_be_bytes([0, 0, a, b, c, d, e, f]))
}

/// Adds `slot` to the entry of `key` in `map`, or removes it (and the entry when it
/// empties).
fn change<K: std::hash::Hash + Eq>(map: &mut FastMap<K, Ports>, key: K, slot: Slot, add: bool) {
    use std::collections::hash_map::Entry;
    match (map.entry(key), add) {
        (Entry::Occupied(mut e), true) => e.get_mut().add(slot),
        (Entry::Vacant(e), true) => {
            e.insert(Ports::One(slot));
        }
        (Entry::Occupied(mut e), false) => {
            if !e.get_mut().remove(slot) {
                e.remove();
            }
        }
        (Entry::Vacant(_), false) => {}
    }
}

impl Index {
    /// Adds (or removes) the entries of port `slot` on network `net`: one per IP, one for
    /// the MAC.
    pub(super) fn change(
        &mut self,
        net: Uuid,
        ips: &[IpAddr],
        mac: Option<[u8; 6]>,
        slot: Slot,
        add: bool,
    ) {
        let Some(id) = self.number(net, add) else {
            return;
        };
        for ip in ips {
            match ip {
                IpAddr::V4(v4) => {
                    let key = u64::from(id) << 32 | u64::from(v4.to_bits());
                    change(&mut self.v4, key, slot, add);
                }
                IpAddr::V6(v6) => change(&mut self.v6, (id, v6.to_bits()), slot, add),
            }
        }
        if let Some(mac) = mac {
            change(&mut self.mac, mac_key(id, mac), slot, add);
        }
        if !add {
            self.release(net);
        }
    }

    /// The number of `net`, taking one more reference (`add`) and numbering it if it is new,
    /// or the number it has.
    fn number(&mut self, net: Uuid, add: bool) -> Option<NetId> {
        if let Some(n) = self.nets.get_mut(&net) {
            n.refs += u32::from(add);
            return Some(n.id);
        }
        if !add {
            return None;
        }
        // Numbers in use and free ones are 0..their count: without a free one, the next is
        // the count in use.
        let id = match self.free.pop() {
            Some(id) => id,
            None => NetId::try_from(self.nets.len()).ok()?,
        };
        self.nets.insert(net, Net { id, refs: 1 });
        Some(id)
    }

    /// Drops one reference to `net`, and its number with the last.
    fn release(&mut self, net: Uuid) {
        if let Some(n) = self.nets.get_mut(&net) {
            n.refs = n.refs.saturating_sub(1);
            if n.refs == 0 {
                self.free.push(n.id);
                self.nets.remove(&net);
            }
        }
    }

    /// The ports with `ip` on `net`.
    pub(super) fn ip(&self, net: Uuid, ip: IpAddr) -> &[Slot] {
        let Some(n) = self.nets.get(&net) else {
            return &[];
        };
        let ports = match ip {
            IpAddr::V4(v4) => self
                .v4
                .get(&(u64::from(n.id) << 32 | u64::from(v4.to_bits()))),
            IpAddr::V6(v6) => self.v6.get(&(n.id, v6.to_bits())),
        };
        ports.map_or(&[], Ports::as_slice)
    }

    /// The ports with `mac` on `net`.
    pub(super) fn mac(&self, net: Uuid, mac: [u8; 6]) -> &[Slot] {
        self.nets
            .get(&net)
            .and_then(|n| self.mac.get(&mac_key(n.id, mac)))
            .map_or(&[], Ports::as_slice)
    }

    /// Everything, in a canonical order: each network with its references, and each key with
    /// its ports, sorted (to compare an index kept incrementally with one built afresh).
    #[cfg(any(test, fuzzing, feature = "testing"))]
    pub(super) fn dump(&self) -> Dump {
        let by_id: HashMap<NetId, Uuid> = self.nets.iter().map(|(&u, n)| (n.id, u)).collect();
        let mut nets: Vec<(Uuid, u32)> = self.nets.iter().map(|(&u, n)| (u, n.refs)).collect();
        nets.sort();
        let mut keys = Vec::new();
        let mut push = |id: NetId, key: Key, ports: &Ports| {
            let mut slots = ports.as_slice().to_vec();
            slots.sort_unstable();
            let net = by_id.get(&id).copied().unwrap_or(Uuid(u128::MAX));
            keys.push((net, key, slots));
        };
        for (&k, ports) in &self.v4 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from_bits(k as u32));
            push((k >> 32) as NetId, Key::Ip(ip), ports);
        }
        for (&(id, v6), ports) in &self.v6 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from_bits(v6));
            push(id, Key::Ip(ip), ports);
        }
        for (&(id, mac), ports) in &self.mac {
            let [_, _, a, b, c, d, e, f] = mac.to_be_bytes();
            push(id, Key::Mac([a, b, c, d, e, f]), ports);
        }
        keys.sort();
        (nets, keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_and_network_numbers_come_and_go() {
        let mut index = Index::default();
        let (a, b) = (Uuid(0xa), Uuid(0xb));
        let mac = [0xfa, 0x16, 0x3e, 0, 0, 1];
        index.change(a, &[ip("10.0.0.5"), ip("fd00::5")], Some(mac), 1, true);
        index.change(a, &[ip("10.0.0.5")], None, 2, true);
        index.change(b, &[ip("10.0.0.5")], Some(mac), 3, true);
        assert_eq!(index.ip(a, ip("10.0.0.5")), &[1, 2]);
        assert_eq!(index.ip(a, ip("fd00::5")), &[1]);
        assert_eq!(index.ip(b, ip("10.0.0.5")), &[3]);
        assert_eq!(index.mac(a, mac), &[1]);
        assert_eq!(index.ip(Uuid(0xc), ip("10.0.0.5")), &[] as &[Slot]);
        index.change(a, &[ip("10.0.0.5"), ip("fd00::5")], Some(mac), 1, false);
        assert_eq!(index.ip(a, ip("10.0.0.5")), &[2]);
        assert_eq!(index.mac(a, mac), &[] as &[Slot]);
        index.change(a, &[ip("10.0.0.5")], None, 2, false);
        // Network a's number is free again, and the next new network takes it.
        assert_eq!(index.dump().0, vec![(b, 1)]);
        assert_eq!(index.free.len(), 1);
        index.change(Uuid(0xc), &[ip("10.0.0.9")], None, 4, true);
        assert!(index.free.is_empty());
        assert_eq!(index.ip(Uuid(0xc), ip("10.0.0.9")), &[4]);
        assert_eq!(index.ip(b, ip("10.0.0.5")), &[3]);
        assert_eq!(index.nets.len(), 2);
    }
}
