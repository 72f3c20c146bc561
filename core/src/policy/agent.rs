//! The metadata agent: finds the instance behind (scope, client IP) — in a static map, or in
//! Neutron through the lookup cache — signs its ID and forwards with the agent's header table.
//! It takes a second look at the metadata server's answer: a 404 for a cached instance may mean
//! the cache is stale (an IP reused, Neutron LP#1868867), so the lookup is made again, once;
//! a 403 most likely means the shared secrets differ, which is worth a warning. IMDSv2 tokens
//! are answered and checked here, once the instance is known (`agent::imds`).

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use super::{ignored, Backend, Policy};
use crate::agent::imds::{judge, Ask, Token, Verdict};
use crate::agent::request::{lookup_key, not_found_message};
use crate::agent::{AgentImds, StaticMap};
use crate::cache::{Lookup, LookupCache};
use crate::config::{AgentConfig, Backend as LookupBackend, Reload};
use crate::http::RequestHead;
use crate::lookup::{BackendStats, ClientEvent, LookupError, NeutronClient, OvnClient, OvnStats};
use crate::metrics::{BackendService, CacheResult, Meter, RoleMetrics};
use crate::proxy::decision::{Forward, Route, Ticket};
use crate::proxy::error_page::LOOKUP_UNAVAILABLE;
use crate::proxy::rewrite::agent_fields;
use crate::scope::{Instance, LookupKey};
use crate::sign::Signer;
use crate::socket::Target;

/// Where instances are found.
#[derive(Debug)]
enum Source {
    /// Answers at once, so it bypasses the cache.
    Static(StaticMap),
    /// Neutron's API behind the cache; waiters are the tickets of the requests.
    Neutron {
        client: Box<NeutronClient>,
        cache: LookupCache<Ticket>,
    },
    /// The OVN Southbound replica: answers at once, so it bypasses the cache.
    Ovn(Box<OvnClient>),
}

#[derive(Debug)]
pub(super) struct Agent {
    metadata: Target,
    signer: Signer,
    source: Source,
    meter: Meter,
    /// Routes decided by a backend answer, for [`Policy::poll_routed`].
    routed: VecDeque<(Ticket, Route)>,
    /// The Neutron client's stats already added to the metrics.
    counted: BackendStats,
    /// The OVN client's state last shown in the metrics (shown again only when it changed).
    counted_ovn: Option<(OvnStats, Option<Instant>)>,
    /// IMDSv2 modes and keys.
    imds: AgentImds,
    /// What the token rules need of each request waiting for a lookup (one per waiter: the
    /// cache returns every waiter once, answered or failed).
    asks: BTreeMap<Ticket, Ask>,
}

impl Agent {
    pub(super) fn new(now: Instant, c: &AgentConfig, meter: Meter) -> Agent {
        let source = match &c.backend {
            LookupBackend::Static(map) => Source::Static(map.clone()),
            LookupBackend::Neutron(n) => Source::Neutron {
                client: Box::new(NeutronClient::new(n.clone())),
                cache: LookupCache::new(c.cache_capacity, c.cache_ttl, c.negative_ttl),
            },
            LookupBackend::Ovn(o) => Source::Ovn(Box::new(OvnClient::new(o.clone(), now))),
        };
        Agent {
            metadata: c.metadata.clone(),
            signer: c.signer.clone(),
            source,
            meter,
            routed: VecDeque::new(),
            counted: BackendStats::default(),
            counted_ovn: None,
            imds: c.imds.clone(),
            asks: BTreeMap::new(),
        }
    }

    /// The hop limit of an instance's connection after a token request (see
    /// [`AgentImds::hop_limit`]).
    pub(super) fn token_hop_limit(&self) -> u8 {
        self.imds.hop_limit
    }

    /// What the token rules need of `head`, in the scope of `key`.
    pub(super) fn ask(&self, key: &LookupKey, head: &RequestHead) -> Ask {
        let from_map = match &self.source {
            Source::Static(map) => map.imdsv2(&key.scope),
            _ => None,
        };
        Ask::of(self.imds.mode(&key.scope, from_map), head)
    }

    /// The route for a lookup's outcome (see [`decide`]), counting a request served without
    /// a token.
    fn decide(
        &self,
        now: Instant,
        key: LookupKey,
        found: Result<Option<Instance>, LookupError>,
        cached: bool,
        ask: &Ask,
    ) -> Route {
        let (route, tokenless) = decide(&self.signer, &self.imds, now, key, found, cached, ask);
        if let Some(instance) = tokenless {
            self.meter.count(|m| m.no_token(&instance));
        }
        route
    }

    /// Starts (or, `skip_cache`, restarts past the cache) the lookup of `key`.
    pub(super) fn resolve(
        &mut self,
        now: Instant,
        ticket: Ticket,
        key: LookupKey,
        ask: Ask,
        skip_cache: bool,
    ) -> Route {
        let (client, cache) = match &mut self.source {
            Source::Static(map) => {
                let found = Ok(map.resolve(&key));
                return self.decide(now, key, found, false, &ask);
            }
            Source::Ovn(client) => {
                let found = client.lookup(&key);
                self.count_ovn();
                return self.decide(now, key, found, false, &ask);
            }
            Source::Neutron { client, cache } => (client, cache),
        };
        if skip_cache {
            cache.invalidate(&key);
        }
        let (found, counted) = match cache.lookup(now, key, ticket) {
            Lookup::Hit(found) => (Some(Some(found.clone())), CacheResult::Hit),
            Lookup::Negative => (Some(None), CacheResult::Negative),
            Lookup::Query => {
                client.query(now, key);
                (None, CacheResult::Miss)
            }
            Lookup::Queued => (None, CacheResult::Coalesced),
        };
        self.meter.count(|m| m.cache(counted));
        match found {
            Some(found) => self.decide(now, key, Ok(found), true, &ask),
            None => {
                self.asks.insert(ticket, ask);
                Route::Pending
            }
        }
    }

    /// The second look at the metadata server's answer `status` (see the module docs) for
    /// the request whose lookup key `key` finds (the node knows it from its listener).
    #[allow(clippy::too_many_arguments)] // check's arguments and the key
    pub(super) fn second_look(
        &mut self,
        now: Instant,
        ticket: Ticket,
        key: impl FnOnce() -> Option<LookupKey>,
        head: &RequestHead,
        status: u16,
        can_reroute: bool,
        peer: &str,
    ) -> Option<Route> {
        if status == 404 && can_reroute {
            let key = key()?;
            log::info!(
                "{peer} metadata server does not know the cached instance for {}; looking it up again",
                key.ip
            );
            let ask = self.ask(&key, head);
            return Some(self.resolve(now, ticket, key, ask, true));
        }
        if status == 403 {
            log::warn!(
                "{peer} the metadata server answered 403 Forbidden: the shared secrets of agent and server likely differ"
            );
        }
        None
    }

    /// Shows the OVN replica's state in the metrics.
    fn count_ovn(&mut self) {
        let Source::Ovn(client) = &self.source else {
            return;
        };
        let (stats, last) = (client.stats(), client.last_update());
        if self.counted_ovn == Some((stats, last)) {
            return;
        }
        self.counted_ovn = Some((stats, last));
        self.meter.count(|m| m.ovn(&stats, last));
    }

    /// Adds the Keystone and Neutron requests the client started since the last call.
    fn count_backend(&mut self) {
        let Source::Neutron { client, .. } = &self.source else {
            return;
        };
        let (now, then) = (client.stats(), self.counted);
        if now == then {
            return;
        }
        self.counted = now;
        self.meter.count(|m| {
            let auths = now.keystone_auths - then.keystone_auths;
            m.backend_requests(BackendService::Keystone, auths);
            let queries = now.neutron_requests - then.neutron_requests;
            m.backend_requests(BackendService::Neutron, queries);
        });
    }
}

/// The route for a lookup's outcome: the token rules' answer, forward signed, or 404 / 503.
/// `cached`: the instance came from the cache, so the route may be taken again past it. With
/// the route, the instance when it is served without a token (for the migration counters).
fn decide(
    signer: &Signer,
    imds: &AgentImds,
    now: Instant,
    key: LookupKey,
    found: Result<Option<Instance>, LookupError>,
    cached: bool,
    ask: &Ask,
) -> (Route, Option<String>) {
    let route = match found {
        Ok(Some(instance)) => match judge(imds, now, ask, &instance.instance_id) {
            Verdict::Answer(route) => route,
            Verdict::Forward { rules, tokenless } => {
                let route = Route::Forward(Forward {
                    rules,
                    fields: agent_fields(signer, key.ip, &instance),
                    check: true,
                    reroutable: cached,
                });
                return (route, tokenless.then_some(instance.instance_id));
            }
        },
        Ok(None) => Route::refuse(404, not_found_message(&key.scope)),
        Err(why) => Route::Refuse {
            status: why.status(),
            message: LOOKUP_UNAVAILABLE.to_owned(),
            why: format!("lookup failed: {why}"),
        },
    };
    (route, None)
}

impl Policy for Agent {
    fn route(
        &mut self,
        now: Instant,
        ticket: Ticket,
        _: Option<IpAddr>,
        head: &RequestHead,
    ) -> Route {
        match lookup_key(&head.headers) {
            Ok(key) => {
                let ask = self.ask(&key, head);
                self.resolve(now, ticket, key, ask, false)
            }
            Err(why) => Route::refuse(why.status(), why.to_string()),
        }
    }

    fn check(
        &mut self,
        now: Instant,
        ticket: Ticket,
        head: &RequestHead,
        status: u16,
        can_reroute: bool,
        peer: &str,
    ) -> Option<Route> {
        let key = || lookup_key(&head.headers).ok();
        self.second_look(now, ticket, key, head, status, can_reroute, peer)
    }

    fn poll_routed(&mut self, now: Instant) -> Option<(Ticket, Route)> {
        loop {
            if let Some(routed) = self.routed.pop_front() {
                return Some(routed);
            }
            self.count_backend();
            self.count_ovn();
            let Source::Neutron { client, cache } = &mut self.source else {
                return None;
            };
            let (key, result) = match client.poll_event()? {
                ClientEvent::Answer(key, found) => {
                    self.meter.count(RoleMetrics::backend_answer);
                    (key, Ok(found))
                }
                ClientEvent::Failed(key, why) => {
                    self.meter.count(RoleMetrics::backend_failure);
                    (key, Err(why))
                }
            };
            let waiters = match &result {
                Ok(found) => cache.complete(now, key, found.clone()),
                Err(_) => cache.fail(&key),
            };
            for ticket in waiters {
                // Every waiter's ask was kept; were one missing, fail closed (a 401).
                let ask = self.asks.remove(&ticket).unwrap_or(Ask::Check {
                    required: true,
                    token: Token::Missing,
                });
                let route = self.decide(now, key, result.clone(), false, &ask);
                self.routed.push_back((ticket, route));
            }
        }
    }

    fn upstream(&self) -> Option<&Target> {
        Some(&self.metadata)
    }

    fn reload(&mut self, reload: Reload) {
        match (reload, &mut self.source) {
            (Reload::StaticMap(map), Source::Static(old)) => {
                log::info!("static map reloaded: {} ports", map.ports());
                *old = map;
            }
            (other, _) => ignored(&other),
        }
    }

    fn backend(&mut self) -> Option<&mut dyn Backend> {
        match &mut self.source {
            Source::Neutron { client, .. } => Some(client.as_mut()),
            Source::Ovn(client) => Some(client.as_mut()),
            Source::Static(_) => None,
        }
    }

    fn backend_ref(&self) -> Option<&dyn Backend> {
        match &self.source {
            Source::Neutron { client, .. } => Some(client.as_ref()),
            Source::Ovn(client) => Some(client.as_ref()),
            Source::Static(_) => None,
        }
    }
}
