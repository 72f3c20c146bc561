//! `mdproxy node --backend ovn`: what `neutron-ovn-metadata-agent` does besides answering,
//! on a thread of its own (provisioning runs `ip` and `iptables` and waits on OVSDB; the
//! event loop must not). A round every `--ovn-poll-interval`, and at once when the ports
//! bound here change: between rounds the thread sits in an OVSDB `wait` that the Southbound
//! holds until the `chassis == me` rows differ from the last read (a long poll over the same
//! blocking client; the loop's replica is not consulted: it keeps no localports). One round:
//!
//! 1. read what the Southbound says this chassis needs (its ports, its networks' metadata
//!    localports, `SB_Global.nb_cfg`: three narrow `select`s, `provision/sb.rs`);
//! 2. stop serving each network no longer wanted (or whose addresses changed), before its
//!    namespace goes;
//! 3. reconcile the node with the provisioner (`crate::provision`: namespaces, veths, OVS
//!    ports, addresses, the checksum rule; at the first round this is the anchor's `sync()`:
//!    what is right is adopted, stale `ovnmeta-` namespaces removed) — when what is wanted
//!    changed, the last reconcile failed, or [`FULL_RESYNC`] passed: observing runs `ip` and
//!    `iptables` a few times per namespace, too many processes to start at every poll;
//! 4. serve each wanted network whose namespace is there: a listener in `ovnmeta-<network>`
//!    with scope `Scope::OvnNetwork(network)`;
//! 5. (right after the read, so a network that cannot be provisioned does not make the agent
//!    look dead) register on `Chassis_Private` (the agent id, `nb_cfg` followed) when the
//!    chassis or `nb_cfg` changed since the last registration.
//!
//! A round that fails (a database away, a command refused) is logged — once while the same
//! failure repeats — and leaves what is served as it is; the next round starts over with
//! fresh connections. A Southbound without this chassis' row (ovn-controller not registered
//! yet) tears nothing down.

use std::collections::BTreeMap;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use mdproxy_core::listener::{ListenerId, ScopedListener};
use mdproxy_core::provision::{desired, namespace_name, Network};
use mdproxy_core::scope::{Scope, Uuid};
use mdproxy_core::tls::ClientTls;
use serde_json::{Map, Value};

use super::listeners::{AddError, Listeners, Stopped};
use crate::provision::{self, Client};

/// How often the node is observed and repaired even when the Southbound did not change (a
/// namespace or link removed by hand, an OVS port deleted).
pub const FULL_RESYNC: Duration = Duration::from_secs(60);

/// The longest one `wait` the Southbound is asked to hold: well within the client's own
/// deadline for an answer (a longer pause is several waits).
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Where and how often.
pub struct Settings {
    /// The Southbound (`--ovn-sb-connection`).
    pub sb: String,
    /// TLS for its `ssl:` remotes (the `--ovn-sb-*` files).
    pub sb_tls: Option<ClientTls>,
    /// The local Open_vSwitch database (`--ovs-db`).
    pub ovs: String,
    /// `--chassis`; `None`: the local database's `external_ids:system-id`, read every round.
    pub chassis: Option<String>,
    pub interval: Duration,
    /// Connections open at once in one network's namespace.
    pub max_conns: usize,
}

/// One served network.
struct Served {
    id: ListenerId,
    /// The addresses it was bound on (a change means binding anew).
    listen: Vec<String>,
}

/// Why a round stopped early.
enum Failed {
    /// The loop is gone: the thread ends.
    Stopped,
    /// Logged; the next round tries again, over fresh connections (the failure may be theirs).
    Round(String),
    /// A listener could not be bound (logged); the connections are fine and kept.
    Bind(String),
}

impl From<Stopped> for Failed {
    fn from(_: Stopped) -> Failed {
        Failed::Stopped
    }
}

impl From<String> for Failed {
    fn from(e: String) -> Failed {
        Failed::Round(e)
    }
}

pub struct Provisioner {
    settings: Settings,
    listeners: Listeners,
    served: BTreeMap<Uuid, Served>,
    ovs: Option<Client>,
    sb: Option<Client>,
    /// What the last successful reconcile provisioned, and when.
    reconciled: Option<(Vec<Network>, Instant)>,
    /// This chassis' row and its bound ports as last read, for the long poll; `None` until
    /// a round read them, or once a wait proved unusable (then the thread sleeps instead).
    watch: Option<(Uuid, Vec<Map<String, Value>>)>,
    /// A wait answered "changed" and the next read found the same rows: the server does not
    /// compare as expected, so waiting would spin; sleeping from then on (logged once).
    wait_broken: bool,
    /// The last wait ended because the rows changed.
    woken: bool,
    /// The chassis and `nb_cfg` last registered.
    registered: Option<(String, i64)>,
    /// The last round's failure, logged once.
    failing: Option<String>,
}

impl Provisioner {
    pub fn new(settings: Settings, listeners: Listeners) -> Provisioner {
        Provisioner {
            settings,
            listeners,
            served: BTreeMap::new(),
            reconciled: None,
            watch: None,
            wait_broken: false,
            woken: false,
            ovs: None,
            sb: None,
            registered: None,
            failing: None,
        }
    }

    /// Runs a round now and then every interval, on a thread of its own, until the loop stops.
    pub fn spawn(mut self) -> io::Result<()> {
        thread::Builder::new()
            .name("node-ovn".to_owned())
            .spawn(move || {
                loop {
                    let start = Instant::now();
                    if self.round().is_err() {
                        break;
                    }
                    self.pause(start);
                }
                log::debug!("the node's loop has stopped: no more provisioning");
            })
            .map(drop)
    }

    /// Until the next round: the interval from `start` (between round starts, so a slow
    /// round is not followed by a full wait), cut short when the ports bound here change.
    fn pause(&mut self, start: Instant) {
        loop {
            let left = self.settings.interval.saturating_sub(start.elapsed());
            if left.is_zero() {
                return;
            }
            let (Some(sb), Some((me, rows)), false) =
                (self.sb.as_mut(), self.watch.as_ref(), self.wait_broken)
            else {
                thread::sleep(left);
                return;
            };
            match provision::wait_for_change(sb, *me, rows, left.min(MAX_WAIT)) {
                Ok(true) => {
                    self.woken = true;
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    // The round will reconnect (and log, if the Southbound is really away).
                    log::debug!("waiting on the Southbound: {e}");
                    self.sb = None;
                }
            }
        }
    }

    fn round(&mut self) -> Result<(), Stopped> {
        match self.try_round() {
            Ok(()) => {
                if self.failing.take().is_some() {
                    log::info!("OVN provisioning works again");
                }
                Ok(())
            }
            Err(Failed::Stopped) => Err(Stopped),
            Err(Failed::Round(e) | Failed::Bind(e)) => {
                if self.failing.as_ref() != Some(&e) {
                    log::warn!(
                        "OVN provisioning: {e}; trying again every {:?}",
                        self.settings.interval
                    );
                    self.failing = Some(e);
                }
                Ok(())
            }
        }
    }

    /// The Southbound's TLS configuration, its certificates' clock moved to now.
    fn sb_tls(&self) -> Option<provision::Tls> {
        #[cfg(feature = "tls")]
        return (self.settings.sb_tls.as_ref()).map(|t| t.rustls_config(Instant::now()));
        // Never set without TLS (`tls::ovn_client` refuses): nothing to configure.
        #[cfg(not(feature = "tls"))]
        return self.settings.sb_tls.as_ref().and(None);
    }

    /// A round over the connections of the last one (or fresh ones); a round that failed
    /// other than in binding drops them (the failure may be theirs).
    fn try_round(&mut self) -> Result<(), Failed> {
        let mut ovs = match self.ovs.take() {
            Some(c) => c,
            None => Client::connect(&self.settings.ovs, None)?,
        };
        let mut sb = match self.sb.take() {
            Some(c) => c,
            None => Client::connect(&self.settings.sb, self.sb_tls().as_ref())?,
        };
        let done = self.round_over(&mut ovs, &mut sb);
        if matches!(done, Ok(()) | Err(Failed::Bind(_))) {
            self.ovs = Some(ovs);
            self.sb = Some(sb);
        }
        done
    }

    fn round_over(&mut self, ovs: &mut Client, sb: &mut Client) -> Result<(), Failed> {
        let chassis = match &self.settings.chassis {
            Some(c) => c.clone(),
            None => provision::observe_ovs(ovs)?
                .system_id
                .ok_or_else(|| "no external_ids:system-id in the local OVS database".to_owned())?,
        };
        let south = provision::read_southbound(sb, &chassis)?;
        if std::mem::take(&mut self.woken) && self.watch == south.bound_here {
            log::warn!(
                "the Southbound ended a wait for a change it does not show; polling every {:?} \
                 from now on",
                self.settings.interval
            );
            self.wait_broken = true;
        }
        self.watch.clone_from(&south.bound_here);
        if !south.chassis_found {
            return Err(format!("the Southbound has no Chassis row {chassis} (yet)").into());
        }
        // Before provisioning: a network that cannot be provisioned does not make the agent
        // look dead to Neutron.
        if self.registered.as_ref() != Some(&(chassis.clone(), south.nb_cfg)) {
            provision::register(sb, &chassis, south.nb_cfg)?;
            log::info!(
                "registered as the metadata agent of chassis {chassis} (nb_cfg {})",
                south.nb_cfg
            );
            self.registered = Some((chassis, south.nb_cfg));
        }
        let want = desired(&south.ports);
        let due = match self.reconciled.take() {
            Some((last, at)) if last == want && at.elapsed() < FULL_RESYNC => {
                self.reconciled = Some((last, at));
                false
            }
            _ => true,
        };
        if due {
            self.unserve(&want)?;
            let done = provision::reconcile(&want, ovs)?;
            if !done.is_empty() {
                log::info!("OVN provisioning: {} actions performed", done.len());
            }
            self.reconciled = Some((want.clone(), Instant::now()));
        }
        self.serve(&want)?;
        Ok(())
    }

    /// Stops serving the networks not in `want`, and those whose addresses changed.
    fn unserve(&mut self, want: &[Network]) -> Result<(), Stopped> {
        let stale: Vec<Uuid> = (self.served.iter())
            .filter(|(net, s)| !want.iter().any(|n| n.id == **net && n.listen() == s.listen))
            .map(|(net, _)| *net)
            .collect();
        for net in stale {
            if let Some(s) = self.served.remove(&net) {
                log::info!("OVN network {net}: no longer served here");
                self.listeners.remove(s.id)?;
            }
        }
        Ok(())
    }

    /// Serves each network of `want` not served yet (its namespace was just reconciled); one
    /// that cannot be bound is logged and tried again next round.
    fn serve(&mut self, want: &[Network]) -> Result<(), Failed> {
        let mut unbound = None;
        for net in want {
            if self.served.contains_key(&net.id) {
                continue;
            }
            let ns = namespace_name(net.id);
            let listen = net.listen();
            let scope = ScopedListener {
                scope: Scope::OvnNetwork(net.id),
                rate_limit: None,
                max_conns: self.settings.max_conns,
                imdsv2: None,
            };
            match self.listeners.add(Some(&ns), &listen, scope) {
                Ok((id, bound)) => {
                    log::info!(
                        "OVN network {}: serving in {ns} on {}",
                        net.id,
                        bound.join(", ")
                    );
                    self.served.insert(net.id, Served { id, listen });
                }
                Err(AddError::Stopped) => return Err(Failed::Stopped),
                Err(AddError::Bind(e)) => unbound = Some(format!("OVN network {}: {e}", net.id)),
            }
        }
        unbound.map_or(Ok(()), |e| Err(Failed::Bind(e)))
    }
}
