//! `GET /explain?router=R&ip=IP` (or `network=N`, `ovn-network=N`) on the admin listener: what
//! the agent or node would do for that instance, worked out from what it already holds — the
//! static map, the OVN replica, the lookup cache, the metadata servers' health, the token and
//! rate rules — without forwarding anything, asking Neutron, or counting it anywhere. The
//! support question "why did this VM get no metadata" answered in one request.
//!
//! Only the admin listener answers it ([`crate::config::EndpointConfig::admin`]): an
//! instance-facing listener never routes a request here, whatever its path.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::metadata::{ImdsV2, MetaResponse};
use crate::scope::{canonical_ip, Instance, LookupKey, Scope, Uuid};

/// The path it answers on.
pub(crate) const PATH: &[u8] = b"/explain";

/// What a lookup backend knows of one key, without asking anyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exactly one port: this instance.
    Found(Instance),
    /// No port matches; why, in words.
    NotFound(String),
    /// Several ports match (each described): answered as not found.
    Ambiguous(Vec<String>),
    /// The scope has no network to look in (a router the map does not know, a router on OVN).
    NoNetwork(String),
    /// Not known without asking the backend (a Neutron lookup not cached): the next request
    /// asks.
    Unknown(String),
    /// The backend cannot answer now (the OVN replica not loaded yet).
    Unavailable(String),
}

/// A lookup backend's explanation of one key.
#[derive(Debug)]
pub(crate) struct Lookup {
    /// `static`, `neutron` or `ovn`.
    pub(crate) backend: &'static str,
    /// The networks the scope stands for, when the backend knows them.
    pub(crate) networks: Option<Vec<Uuid>>,
    /// What it found.
    pub(crate) outcome: Outcome,
    /// Other facts of the backend, shown as they are (the cache entry's age, the Southbound's
    /// state).
    pub(crate) facts: Map<String, Value>,
}

/// What a request of the key would get, before the metadata server is chosen.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forwarded, signed (the endpoint names the server).
    Forward,
    /// Refused with this status and message.
    Refuse(u16, String),
    /// Not known until the backend answers.
    Ask,
}

/// A role's explanation, for the endpoint to complete with what it holds (the listener's rate
/// limit, the metadata servers).
#[derive(Debug)]
pub(crate) struct Explained {
    /// The answer's fields so far.
    pub(crate) fields: Map<String, Value>,
    /// What the request would get.
    pub(crate) verdict: Verdict,
}

impl Explained {
    /// The fields of `lookup` and of the IMDSv2 `mode` of the scope, and the verdict they make
    /// (`not_found`: the 404's message for this scope).
    pub(crate) fn of(lookup: Lookup, mode: ImdsV2, not_found: String) -> Explained {
        let mut fields = lookup.facts;
        fields.insert("backend".into(), lookup.backend.into());
        if let Some(networks) = lookup.networks {
            let networks: Vec<Value> = networks.iter().map(|n| n.to_string().into()).collect();
            fields.insert("networks".into(), networks.into());
        }
        let (word, why, verdict) = match lookup.outcome {
            Outcome::Found(i) => {
                fields.insert("instance".into(), i.instance_id.into());
                fields.insert("project".into(), i.project_id.into());
                ("found", None, Verdict::Forward)
            }
            Outcome::NotFound(why) => ("not found", Some(why), Verdict::Refuse(404, not_found)),
            Outcome::Ambiguous(ports) => {
                let why = format!("{} ports match: answered as not found", ports.len());
                fields.insert("ports".into(), ports.into());
                ("ambiguous", Some(why), Verdict::Refuse(404, not_found))
            }
            Outcome::NoNetwork(why) => ("no network", Some(why), Verdict::Refuse(404, not_found)),
            Outcome::Unknown(why) => ("not cached", Some(why), Verdict::Ask),
            Outcome::Unavailable(why) => {
                let message = crate::proxy::error_page::LOOKUP_UNAVAILABLE.to_owned();
                ("unavailable", Some(why), Verdict::Refuse(503, message))
            }
        };
        fields.insert("lookup".into(), word.into());
        if let Some(why) = why {
            fields.insert("why".into(), why.into());
        }
        let (name, token) = match mode {
            ImdsV2::Off => ("off", "no tokens: token headers are ignored"),
            ImdsV2::Optional => ("optional", "a token is checked when one is sent"),
            ImdsV2::Required => (
                "required",
                "a request without a valid token is refused 401 (the token PUT is answered)",
            ),
        };
        fields.insert("imdsv2".into(), json!({ "mode": name, "rule": token }));
        Explained { fields, verdict }
    }
}

/// The key an explain target asks about; the error is the 400's message.
pub(crate) fn parse_query(target: &[u8]) -> Result<LookupKey, String> {
    const USAGE: &str = "ask /explain?router=ID&ip=IP (or network=ID, ovn-network=ID)";
    let query = match target.iter().position(|&b| b == b'?') {
        Some(at) => &target[at + 1..],
        None => return Err(format!("no query: {USAGE}")),
    };
    let (mut scope, mut ip) = (None, None);
    for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        let name = String::from_utf8_lossy(name);
        let value = percent_decode(value).ok_or_else(|| format!("{name}: bad %-escape"))?;
        let make: fn(Uuid) -> Scope = match name.as_ref() {
            "router" => Scope::Router,
            "network" => Scope::Network,
            "ovn-network" => Scope::OvnNetwork,
            "ip" => {
                let parsed = std::str::from_utf8(&value).ok();
                let parsed = parsed.and_then(|s| s.parse::<IpAddr>().ok());
                let parsed = parsed.ok_or_else(|| format!("ip: not an IP address: {USAGE}"))?;
                if ip.replace(canonical_ip(parsed)).is_some() {
                    return Err("ip given twice".into());
                }
                continue;
            }
            other => return Err(format!("unknown parameter {other:?}: {USAGE}")),
        };
        let id = Uuid::parse(&value).ok_or_else(|| format!("{name}: not a UUID"))?;
        if scope.replace(make(id)).is_some() {
            return Err(format!("more than one scope: {USAGE}"));
        }
    }
    match (scope, ip) {
        (Some(scope), Some(ip)) => Ok(LookupKey { scope, ip }),
        (None, _) => Err(format!("no router, network or ovn-network: {USAGE}")),
        (_, None) => Err(format!("no ip: {USAGE}")),
    }
}

/// `%XX` decoded (`+` is kept: no form encoding of IDs and addresses has one); `None` for a
/// malformed escape.
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.iter();
    while let Some(&b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = [*bytes.next()?, *bytes.next()?];
        let hex = std::str::from_utf8(&hex).ok()?;
        out.push(u8::from_str_radix(hex, 16).ok()?);
    }
    Some(out)
}

/// The query's key, as the answer repeats it.
pub(crate) fn query_fields(key: &LookupKey) -> Value {
    let kind = match key.scope {
        Scope::Router(_) => "router",
        Scope::Network(_) => "network",
        Scope::OvnNetwork(_) => "ovn-network",
    };
    json!({ kind: key.scope.id().to_string(), "ip": key.ip.to_string() })
}

/// Seconds, as a JSON number with millisecond precision.
pub(crate) fn seconds(d: Duration) -> Value {
    json!((d.as_millis() as f64) / 1000.0)
}

/// A JSON answer.
pub(crate) fn response(status: u16, body: &Value) -> MetaResponse {
    let mut body = serde_json::to_vec_pretty(body).unwrap_or_default();
    body.push(b'\n');
    MetaResponse {
        status,
        content_type: "application/json",
        body,
        headers: Vec::new(),
        store: None,
    }
}

/// The 400 for a query that does not parse.
pub(crate) fn bad_query(why: &str) -> MetaResponse {
    response(400, &json!({ "error": why }))
}

/// The answer of a role that looks nothing up (the ns-proxy, the server).
pub(crate) fn not_served() -> MetaResponse {
    let why = "this role looks no instance up: ask the admin listener of the agent or the node";
    response(404, &json!({ "error": why }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";

    fn uuid() -> Uuid {
        Uuid::parse(R.as_bytes()).unwrap()
    }

    #[test]
    fn each_scope_and_an_ip_make_a_key() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        for (name, scope) in [
            ("router", Scope::Router(uuid())),
            ("network", Scope::Network(uuid())),
            ("ovn-network", Scope::OvnNetwork(uuid())),
        ] {
            let target = format!("/explain?{name}={R}&ip=10.0.0.5");
            assert_eq!(
                parse_query(target.as_bytes()),
                Ok(LookupKey { scope, ip }),
                "{name}"
            );
        }
        // Either order, an escaped IPv6 address, a v4-mapped one made plain.
        let v6 = parse_query(format!("/explain?ip=fe80%3A%3A1&router={R}").as_bytes());
        assert_eq!(v6.map(|k| k.ip), Ok("fe80::1".parse().unwrap()));
        let mapped = parse_query(format!("/explain?router={R}&ip=::ffff:10.0.0.5").as_bytes());
        assert_eq!(mapped.map(|k| k.ip), Ok(ip));
    }

    #[test]
    fn every_bad_query_has_its_own_message() {
        for (query, says) in [
            ("/explain", "no query"),
            ("/explain?ip=10.0.0.5", "no router"),
            (&format!("/explain?router={R}")[..], "no ip"),
            (
                &format!("/explain?router={R}&ip=10.0.0.256")[..],
                "not an IP",
            ),
            ("/explain?router=nope&ip=10.0.0.5", "router: not a UUID"),
            (
                &format!("/explain?router={R}&network={R}&ip=1.2.3.4")[..],
                "more than one scope",
            ),
            (
                &format!("/explain?router={R}&ip=1.2.3.4&ip=1.2.3.5")[..],
                "ip given twice",
            ),
            (
                &format!("/explain?router={R}&ip=1.2.3.4&port=1")[..],
                "unknown parameter \"port\"",
            ),
            (&format!("/explain?router={R}&ip=1%2")[..], "bad %-escape"),
        ] {
            let got = parse_query(query.as_bytes());
            assert!(
                got.as_ref().is_err_and(|e| e.contains(says)),
                "{query}: {got:?}"
            );
        }
    }

    #[test]
    fn the_outcome_makes_the_verdict() {
        let lookup = |outcome| Lookup {
            backend: "static",
            networks: Some(vec![uuid()]),
            outcome,
            facts: Map::new(),
        };
        let found = Instance {
            instance_id: "i-1".into(),
            project_id: "p-1".into(),
        };
        let e = Explained::of(lookup(Outcome::Found(found)), ImdsV2::Required, "nf".into());
        assert_eq!(e.verdict, Verdict::Forward);
        assert_eq!(e.fields["instance"], "i-1");
        assert_eq!(e.fields["networks"][0], R);
        assert_eq!(e.fields["imdsv2"]["mode"], "required");
        let two = vec!["a".to_owned(), "b".to_owned()];
        let e = Explained::of(lookup(Outcome::Ambiguous(two)), ImdsV2::Off, "nf".into());
        assert_eq!(e.verdict, Verdict::Refuse(404, "nf".into()));
        assert_eq!(
            (e.fields["lookup"].as_str(), e.fields["ports"][1].as_str()),
            (Some("ambiguous"), Some("b"))
        );
        let e = Explained::of(
            lookup(Outcome::Unknown("x".into())),
            ImdsV2::Off,
            "nf".into(),
        );
        assert_eq!(e.verdict, Verdict::Ask);
        let e = Explained::of(
            lookup(Outcome::Unavailable("y".into())),
            ImdsV2::Off,
            "nf".into(),
        );
        assert!(matches!(e.verdict, Verdict::Refuse(503, _)));
        assert_eq!(e.fields["why"], "y");
    }
}
