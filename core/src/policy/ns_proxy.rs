//! The namespace proxy: deletes what the instance may not say about itself, stamps its address
//! and the scope, limits its rate, refuses token requests that came through a proxy, and
//! sends the answer to a token request with a low hop limit.

use std::net::IpAddr;
use std::time::Instant;

use super::Policy;
use crate::config::NsProxyConfig;
use crate::http::{Method, RequestHead};
use crate::metadata::path::is_token_target;
use crate::proxy::decision::{Forward, Route, Ticket};
use crate::proxy::ratelimit::RateLimiter;
use crate::proxy::rewrite::{is_forwarded_for, ns_proxy_fields, NS_PROXY};
use crate::scope::Scope;
use crate::socket::Target;

#[derive(Debug)]
pub(super) struct NsProxy {
    scope: Scope,
    upstream: Target,
    rate: Option<RateLimiter>,
    token_hop_limit: u8,
}

impl NsProxy {
    pub(super) fn new(c: &NsProxyConfig) -> NsProxy {
        NsProxy {
            scope: c.scope,
            upstream: c.upstream.clone(),
            rate: c.rate_limit.map(RateLimiter::new),
            token_hop_limit: c.token_hop_limit,
        }
    }
}

/// The refusal of an IMDSv2 token request that already passed through an HTTP proxy inside
/// the instance: AWS refuses these so a token cannot leak beyond the instance. The node's
/// rule too.
pub(super) fn token_through_proxy(head: &RequestHead) -> Option<Route> {
    // `head.target` is normalised (see `http::normalize_target`), as the server sees it.
    let through_proxy = head.method == Method::Put
        && is_token_target(&head.target)
        && head.headers.iter().any(|(name, _)| is_forwarded_for(name));
    through_proxy.then(|| Route::refuse(403, "Token requests through a proxy are refused."))
}

impl Policy for NsProxy {
    fn route(
        &mut self,
        now: Instant,
        _: Ticket,
        peer: Option<IpAddr>,
        head: &RequestHead,
    ) -> Route {
        let Some(ip) = peer else {
            return Route::refuse(400, "No client address.");
        };
        if let Some(rate) = self.rate.as_mut() {
            if !rate.allow(now, ip) {
                return Route::refuse(429, "Too many requests.");
            }
        }
        if let Some(refused) = token_through_proxy(head) {
            return refused;
        }
        Route::Forward(Forward::new(
            &NS_PROXY,
            ns_proxy_fields(ip, &self.scope),
            false,
            false,
        ))
    }

    /// A token request's answer leaves with the token hop limit, whatever the agent answers
    /// (only the agent knows whether it is a token).
    fn hop_limit(&self, head: &RequestHead) -> Option<u8> {
        (head.method == Method::Put && is_token_target(&head.target))
            .then_some(self.token_hop_limit)
    }

    fn upstream(&self) -> Option<&Target> {
        Some(&self.upstream)
    }
}
