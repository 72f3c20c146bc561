//! The admin listener's connections ([`EndpointConfig::admin`]): served by this endpoint
//! itself, so that `/explain` sees the very lookup state, server health and rate limiters the
//! role's requests meet, and `/live` proves that this loop turns. They are plain HTTP (never
//! the role's TLS), capped at [`MAX_CONNS`] apart from the role's limits, quiet in the access
//! log and left out of the role's metrics.
//!
//! [`EndpointConfig::admin`]: crate::config::EndpointConfig::admin

use std::time::Instant;

use serde_json::{json, Value};

use super::Endpoint;
use crate::explain::{self, Verdict};
use crate::http::{Method, RequestHead};
use crate::metadata::MetaResponse;
use crate::metrics;
use crate::policy::local_answer;
use crate::proxy::decision::Local;
use crate::scope::LookupKey;

/// Most admin connections open at once (scrapers and probes; more would be a loop).
pub(super) const MAX_CONNS: usize = 16;

impl Endpoint {
    /// Whether a connection tagged `listener` is the admin listener's.
    pub(super) fn is_admin(&self, listener: Option<crate::listener::ListenerId>) -> bool {
        listener.is_some() && listener == self.admin.as_ref().map(|(id, _)| *id)
    }

    /// Admin connections open now.
    pub(super) fn admin_conns(&self) -> usize {
        self.conns.values().filter(|c| c.admin).count()
    }

    /// The answer to a whole admin request.
    pub(super) fn admin_answer(&mut self, now: Instant, head: &RequestHead) -> Local {
        let path = head.target.split(|&b| b == b'?').next().unwrap_or_default();
        let resp = match (&self.admin, path == explain::PATH) {
            (_, true) => self.explain(now, head),
            (Some((_, metrics)), false) => metrics::answer(metrics, now, head),
            (None, false) => explain::response(404, &json!({ "error": "no admin listener" })),
        };
        local_answer(resp, None)
    }

    /// `GET /explain?…` (see [`crate::explain`]): the role's explanation, completed with the
    /// node listener of the scope and the metadata servers.
    fn explain(&mut self, now: Instant, head: &RequestHead) -> MetaResponse {
        if !matches!(head.method, Method::Get | Method::Head) {
            let mut resp = explain::response(405, &json!({ "error": "GET /explain only" }));
            resp.headers.push(("Allow", "GET, HEAD".to_owned()));
            return resp;
        }
        let key = match explain::parse_query(&head.target) {
            Ok(key) => key,
            Err(why) => return explain::bad_query(&why),
        };
        let listener = (self.listeners.iter()).find(|(_, l)| l.cfg.scope == key.scope);
        let imdsv2 = listener.and_then(|(_, l)| l.cfg.imdsv2);
        let Some(explained) = self.policy.explain(now, &key, imdsv2) else {
            return explain::not_served();
        };
        let mut fields = explained.fields;
        fields.insert("query".into(), explain::query_fields(&key));
        let refused = self.explain_listener(now, &key, &mut fields);
        let server = self.servers.choose(now, &[]).map(|i| self.servers.name(i));
        fields.insert("metadata_servers".into(), self.servers.describe(now).into());
        fields.insert("server".into(), server.into());
        let answer = refused.unwrap_or_else(|| match explained.verdict {
            Verdict::Refuse(status, message) => format!("{status}: {message}"),
            Verdict::Ask => "the backend is asked first; its answer decides".to_owned(),
            Verdict::Forward => match server {
                Some(name) => format!("forwarded to {name}, signed"),
                None => "503: no metadata server".to_owned(),
            },
        });
        fields.insert("answer".into(), answer.into());
        explain::response(200, &Value::Object(fields))
    }

    /// The scoped listener serving `key`'s scope and its rules, when the role has scoped
    /// listeners (the node): the answer instead of the lookup's when the node has no listener
    /// for the scope or its rate limiter would refuse the client now.
    fn explain_listener(
        &self,
        now: Instant,
        key: &LookupKey,
        fields: &mut serde_json::Map<String, Value>,
    ) -> Option<String> {
        if !self.policy.scoped() {
            let why = "not applied here: the ns-proxy in the namespace applies it";
            fields.insert("rate_limit".into(), why.into());
            return None;
        }
        let Some((id, l)) = self
            .listeners
            .iter()
            .find(|(_, l)| l.cfg.scope == key.scope)
        else {
            fields.insert("listener".into(), Value::Null);
            return Some("no listener: this node serves no namespace of the scope".into());
        };
        let limited = l.rate.as_ref().is_some_and(|r| r.would_refuse(now, key.ip));
        let rate = l.cfg.rate_limit.map(|r| {
            json!({
                "base": format!("{} per {:?}", r.base_limit, r.base_window),
                "burst": format!("{} per {:?}", r.burst_limit, r.burst_window),
                "would_refuse": limited,
            })
        });
        let listener = json!({ "id": id.0, "max_conns": l.cfg.max_conns, "rate_limit": rate });
        fields.insert("listener".into(), listener);
        limited.then(|| "429: Too many requests.".to_owned())
    }
}
