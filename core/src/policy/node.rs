//! The node: one hop where the L3 and OVN paths take two (ns-proxy → agent). What the instance
//! may not say about itself is never looked at: the agent's allowlist (`rewrite::AGENT`)
//! forwards none of the identity fields the ns-proxy deletes, nor any underscored name, so the
//! request the metadata server gets is byte for byte the one ns-proxy → agent would send. The
//! scope comes from the listener the connection arrived on and the address from the socket
//! (`Policy::route_scoped`); the lookup, the signing and the second look at the answer are the
//! agent's own code ([`Agent`]), so the two roles cannot drift apart. Rate limits and the
//! per-scope connection limits are the endpoint's, per listener.

use std::net::IpAddr;
use std::time::Instant;

use super::agent::Agent;
use super::ns_proxy::token_through_proxy;
use super::{Backend, Policy};
use crate::config::{AgentConfig, Reload, Resilience};
use crate::explain::Explained;
use crate::http::{Method, RequestHead};
use crate::metadata::path::is_token_target;
use crate::metadata::ImdsV2;
use crate::metrics::Meter;
use crate::proxy::decision::{Captured, Route, Ticket};
use crate::scope::LookupKey;
use crate::upstream::ServerSpec;

#[derive(Debug)]
pub(super) struct Node {
    agent: Agent,
}

impl Node {
    pub(super) fn new(now: Instant, c: &AgentConfig, meter: Meter) -> Node {
        Node {
            agent: Agent::new(now, c, meter),
        }
    }
}

impl Policy for Node {
    /// A connection of a listener without a scope: nothing says whose instance asks.
    fn route(&mut self, _: Instant, _: Ticket, _: Option<IpAddr>, _: &RequestHead) -> Route {
        Route::refuse(404, "This listener serves no network.")
    }

    fn route_scoped(
        &mut self,
        now: Instant,
        ticket: Ticket,
        key: LookupKey,
        imdsv2: Option<ImdsV2>,
        head: &RequestHead,
    ) -> Route {
        if let Some(refused) = token_through_proxy(head) {
            return refused;
        }
        self.agent.start(now, ticket, key, imdsv2, head)
    }

    fn check_scoped(
        &mut self,
        now: Instant,
        ticket: Ticket,
        key: LookupKey,
        imdsv2: Option<ImdsV2>,
        head: &RequestHead,
        status: u16,
        can_reroute: bool,
        peer: &str,
    ) -> Option<Route> {
        let key = || Some((key, imdsv2));
        (self.agent).second_look(now, ticket, key, head, status, can_reroute, peer)
    }

    /// The instance's own connection is the node's: a token PUT's answer leaves it with the
    /// hop limit (the ns-proxy's rule, here where the agent's half answers it).
    fn hop_limit(&self, head: &RequestHead) -> Option<u8> {
        (head.method == Method::Put && is_token_target(&head.target))
            .then_some(self.agent.token_hop_limit())
    }

    fn scoped(&self) -> bool {
        true
    }

    fn explain(
        &mut self,
        now: Instant,
        key: &LookupKey,
        imdsv2: Option<ImdsV2>,
    ) -> Option<Explained> {
        Some(self.agent.explain(now, key, imdsv2))
    }

    fn poll_routed(&mut self, now: Instant) -> Option<(Ticket, Route)> {
        self.agent.poll_routed(now)
    }

    fn servers(&self) -> Option<(Vec<ServerSpec>, Resilience)> {
        self.agent.servers()
    }

    fn captured(&mut self, now: Instant, captured: Captured) {
        self.agent.captured(now, captured)
    }

    fn reload(&mut self, reload: Reload) {
        self.agent.reload(reload)
    }

    fn backend(&mut self) -> Option<&mut dyn Backend> {
        self.agent.backend()
    }

    fn backend_ref(&self) -> Option<&dyn Backend> {
        self.agent.backend_ref()
    }
}

#[cfg(test)]
mod tests;
