//! The metadata agent: finds the instance behind (scope, client IP) — in a static map, or in
//! Neutron through the lookup cache — signs its ID and forwards with the agent's header table.
//! It takes a second look at the metadata server's answer: a 404 for a cached instance may mean
//! the cache is stale (an IP reused, Neutron LP#1868867), so the lookup is made again, once;
//! a 403 most likely means the shared secrets differ, which is worth a warning. IMDSv2 tokens
//! are answered and checked here, once the instance is known (`agent::imds`).
//!
//! With the response cache on, a GET's route also says where to keep a 200 answer, and is
//! answered from a fresh entry without forwarding; a stale entry rides along with the forward,
//! to be served if every metadata server fails (see [`crate::upstream::ResponseCache`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use serde_json::{json, Map};

use super::{ignored, Backend, Policy};
use crate::agent::imds::{judge, Ask, Token, Verdict};
use crate::agent::request::{lookup_key, not_found_message};
use crate::agent::{AgentImds, StaticMap};
use crate::cache::{Lookup as CacheLookup, LookupCache, Peek};
use crate::config::{AgentConfig, Backend as LookupBackend, Reload, Resilience};
use crate::explain::{Explained, Lookup, Outcome};
use crate::http::{BodyKind, RequestHead};
use crate::lookup::{BackendStats, ClientEvent, LookupError, NeutronClient, OvnClient, OvnStats};
use crate::metadata::ImdsV2;
use crate::metrics::{BackendService, CacheResult, Meter, ResponseCacheEvent, RoleMetrics};
use crate::proxy::decision::{Captured, Forward, Route, Ticket};
use crate::proxy::error_page::LOOKUP_UNAVAILABLE;
use crate::proxy::rewrite::agent_fields;
use crate::scope::{Instance, LookupKey};
use crate::sign::Signer;
use crate::upstream::{CacheKey, Cached, ResponseCache, ServerSpec};

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

/// What of a request the response cache's key takes: its normalised target and `Accept`.
type Cacheable = (Box<[u8]>, Option<Box<[u8]>>);

#[derive(Debug)]
pub(super) struct Agent {
    metadata: Vec<ServerSpec>,
    resilience: Resilience,
    /// The metadata server's answers kept (opt-in).
    responses: Option<ResponseCache>,
    /// The normalised target and `Accept` of cacheable requests still being routed: the
    /// cache key needs the instance, which the lookup finds later.
    cacheable: BTreeMap<Ticket, Cacheable>,
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
            resilience: c.resilience,
            responses: c.resilience.response_cache.map(ResponseCache::new),
            cacheable: BTreeMap::new(),
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

    /// Routes `head`, whose instance `key` finds (from its headers, or the node's listener):
    /// notes whether its answer may be kept, asks the token rules, starts the lookup.
    pub(super) fn start(
        &mut self,
        now: Instant,
        ticket: Ticket,
        key: LookupKey,
        imdsv2: Option<ImdsV2>,
        head: &RequestHead,
    ) -> Route {
        if self.responses.is_some()
            && matches!(head.body, BodyKind::Empty | BodyKind::Length(0))
            && ResponseCache::wants(head.method, &head.target, &head.headers)
        {
            let accept = head.headers.get("Accept").map(Box::from);
            (self.cacheable).insert(ticket, (head.target.as_ref().into(), accept));
        }
        let ask = self.ask(&key, imdsv2, head);
        self.resolve(now, ticket, key, ask, false)
    }

    /// What the token rules need of `head`, in the scope of `key` (see [`Agent::mode`]).
    fn ask(&self, key: &LookupKey, imdsv2: Option<ImdsV2>, head: &RequestHead) -> Ask {
        Ask::of(self.mode(key, imdsv2), head)
    }

    /// The IMDSv2 mode of `key`'s scope: the node listener's own mode `imdsv2` first, then
    /// the static map's, then the flags'.
    fn mode(&self, key: &LookupKey, imdsv2: Option<ImdsV2>) -> ImdsV2 {
        let from_map = match &self.source {
            Source::Static(map) => map.imdsv2(&key.scope),
            _ => None,
        };
        self.imds.mode(&key.scope, imdsv2.or(from_map))
    }

    /// What a request of `key` would get ([`crate::explain`]), from what the agent holds:
    /// Neutron is never asked, nothing is counted, the cache is not touched.
    pub(super) fn explain(
        &mut self,
        now: Instant,
        key: &LookupKey,
        imdsv2: Option<ImdsV2>,
    ) -> Explained {
        let mode = self.mode(key, imdsv2);
        let lookup = match &mut self.source {
            Source::Static(map) => map.explain(key),
            Source::Ovn(client) => client.explain(key),
            Source::Neutron { cache, .. } => neutron_explain(now, cache, key),
        };
        Explained::of(lookup, mode, not_found_message(&key.scope))
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
                return self.decided(now, ticket, key, found, false, &ask);
            }
            Source::Ovn(client) => {
                let found = client.lookup(&key);
                self.count_ovn();
                return self.decided(now, ticket, key, found, false, &ask);
            }
            Source::Neutron { client, cache } => (client, cache),
        };
        if skip_cache {
            cache.invalidate(&key);
        }
        let (found, counted) = match cache.lookup(now, key, ticket) {
            CacheLookup::Hit(found) => (Some(Some(found.clone())), CacheResult::Hit),
            CacheLookup::Negative => (Some(None), CacheResult::Negative),
            CacheLookup::Query => {
                client.query(now, key);
                (None, CacheResult::Miss)
            }
            CacheLookup::Queued => (None, CacheResult::Coalesced),
        };
        self.meter.count(|m| m.cache(counted));
        match found {
            Some(found) => self.decided(now, ticket, key, Ok(found), true, &ask),
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
        key: impl FnOnce() -> Option<(LookupKey, Option<ImdsV2>)>,
        head: &RequestHead,
        status: u16,
        can_reroute: bool,
        peer: &str,
    ) -> Option<Route> {
        if status == 404 && can_reroute {
            let (key, imdsv2) = key()?;
            log::info!(
                "{peer} metadata server does not know the cached instance for {}; looking it up again",
                key.ip
            );
            let ask = self.ask(&key, imdsv2, head);
            return Some(self.resolve(now, ticket, key, ask, true));
        }
        if status == 403 {
            log::warn!(
                "{peer} the metadata server answered 403 Forbidden: the shared secrets of agent and server likely differ"
            );
        }
        None
    }

    /// The route for a lookup's outcome ([`Agent::decide`]), through the response cache when the
    /// request may be answered from it: a fresh entry answers; otherwise the forward says
    /// where to keep the answer, and carries a stale entry for when every server fails.
    ///
    /// A fresh entry answers only when the instance comes from the backend itself, not from
    /// the lookup cache (`cached`): a cached lookup may be stale after the IP moved to another
    /// instance, which Nova's 404 for the deleted one reveals (and [`Policy::check`] then
    /// looks up again); an answer from the response cache would hide it.
    fn decided(
        &mut self,
        now: Instant,
        ticket: Ticket,
        key: LookupKey,
        found: Result<Option<Instance>, LookupError>,
        cached: bool,
        ask: &Ask,
    ) -> Route {
        let cacheable = self.cacheable.remove(&ticket);
        let instance = match &found {
            Ok(Some(i)) => Some(i.instance_id.clone()),
            _ => None,
        };
        let mut route = self.decide(now, key, found, cached, ask);
        let (Some(responses), Some((target, accept)), Some(instance)) =
            (&mut self.responses, cacheable, instance)
        else {
            return route;
        };
        let Route::Forward(forward) = &mut route else {
            return route;
        };
        let ckey = CacheKey::new(&instance, &target, accept.as_deref());
        match responses.get(now, &ckey) {
            Cached::Fresh(stored) if !cached => {
                self.meter
                    .count(|m| m.response_cache(ResponseCacheEvent::Fresh));
                return Route::Reply(stored);
            }
            // Not answered from (see above), but as good as a stale one when all else fails.
            Cached::Fresh(stored) => {
                let until = responses.usable_until(&stored);
                forward.stale = Some((stored, until));
            }
            Cached::Stale(stored, until) => forward.stale = Some((stored, until)),
            Cached::Nothing => {}
        }
        forward.capture = Some(ckey);
        route
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

/// What the lookup cache holds of `key` (Neutron itself is not asked).
fn neutron_explain(now: Instant, cache: &LookupCache<Ticket>, key: &LookupKey) -> Lookup {
    let (state, age, outcome) = match cache.peek(now, key) {
        Peek::Kept(Some(instance), age) => ("hit", Some(age), Outcome::Found(instance.clone())),
        Peek::Kept(None, age) => (
            "negative",
            Some(age),
            Outcome::NotFound(format!(
                "Neutron said no port has {} (a cached answer)",
                key.ip
            )),
        ),
        Peek::InFlight => (
            "in flight",
            None,
            Outcome::Unknown("a Neutron query for it is running".into()),
        ),
        Peek::Nothing => (
            "miss",
            None,
            Outcome::Unknown("not in the lookup cache: the next request asks Neutron".into()),
        ),
    };
    let mut facts = Map::new();
    let age = age.map(crate::explain::seconds);
    facts.insert(
        "cache".into(),
        json!({ "state": state, "age_seconds": age }),
    );
    Lookup {
        backend: "neutron",
        networks: None,
        outcome,
        facts,
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
                let fields = agent_fields(signer, key.ip, &instance);
                let route = Route::Forward(Forward::new(rules, fields, true, cached));
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
            Ok(key) => self.start(now, ticket, key, None, head),
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
        let key = || Some((lookup_key(&head.headers).ok()?, None));
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
                let route = self.decided(now, ticket, key, result.clone(), false, &ask);
                self.routed.push_back((ticket, route));
            }
        }
    }

    fn servers(&self) -> Option<(Vec<ServerSpec>, Resilience)> {
        Some((self.metadata.clone(), self.resilience))
    }

    fn explain(
        &mut self,
        now: Instant,
        key: &LookupKey,
        imdsv2: Option<ImdsV2>,
    ) -> Option<Explained> {
        Some(Agent::explain(self, now, key, imdsv2))
    }

    fn captured(&mut self, now: Instant, mut captured: Captured) {
        let Some(responses) = &mut self.responses else {
            return;
        };
        let body = captured.take_body();
        if responses.put(now, captured.key, &captured.head, body) {
            self.meter
                .count(|m| m.response_cache(ResponseCacheEvent::Stored));
        }
    }

    fn reload(&mut self, reload: Reload) {
        match (reload, &mut self.source) {
            (Reload::Agent(r), source) => {
                let r = *r;
                self.signer = r.signer;
                self.imds = r.imds;
                match (r.static_map, source) {
                    (Some(map), Source::Static(old)) => {
                        log::info!("static map reloaded: {} ports", map.ports());
                        *old = map;
                    }
                    (None, Source::Neutron { cache, .. }) => {
                        cache.set_ttls(r.cache_ttl, r.negative_ttl)
                    }
                    _ => {}
                }
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
