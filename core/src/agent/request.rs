//! The agent's rules for what the namespace proxy must send (DESIGN.md, header contract):
//! exactly one `X-Forwarded-For` and exactly one of router or network ID.

use std::fmt;
use std::net::IpAddr;

use crate::http::Headers;
use crate::scope::{canonical_ip, LookupKey, Scope, Uuid};

/// Why a request cannot be attributed to an instance. The text is Neutron's agent's, which
/// operators and clients see in the 400 body.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No `X-Forwarded-For`: the namespace proxy did not say who asks.
    MissingForwardedFor,
    /// `X-Forwarded-For` is not one IP address.
    BadForwardedFor,
    /// The named header came more than once: which copy to trust is not ours to guess.
    Duplicate(&'static str),
    /// The named scope header is not a UUID.
    BadScopeId(&'static str),
    /// Both a router and a network scope (as the client sent them, for the message).
    BothScopes {
        /// The `X-Neutron-Network-ID` value.
        network: String,
        /// The `X-Neutron-Router-ID` value.
        router: String,
    },
    /// `X-OVN-Network-ID` beside a Neutron scope header (the names, for the message).
    OvnAndNeutron(&'static str),
    /// Neither scope header: nothing to search the port in.
    NoScope,
}

impl Rejection {
    /// The status the agent answers with: always 400, the proxy in front sent a bad request.
    pub fn status(&self) -> u16 {
        400
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::MissingForwardedFor => {
                f.write_str("X-Forwarded-For header is missing from request.")
            }
            Rejection::BadForwardedFor => f.write_str("X-Forwarded-For is not an IP address."),
            Rejection::Duplicate(name) => {
                write!(f, "Multiple {name} headers found within request.")
            }
            Rejection::BadScopeId(name) => write!(f, "{name} is not a valid ID."),
            Rejection::BothScopes { network, router } => {
                write!(f, "Both network {network} and router {router} defined.")
            }
            Rejection::OvnAndNeutron(other) => {
                write!(f, "Both X-OVN-Network-ID and {other} defined.")
            }
            Rejection::NoScope => f.write_str(
                "Neither X-Neutron-Router-ID nor X-Neutron-Network-ID found in request.",
            ),
        }
    }
}

impl std::error::Error for Rejection {}

fn one<'a>(headers: &'a Headers, name: &'static str) -> Result<Option<&'a [u8]>, Rejection> {
    let mut all = headers.get_all(name);
    let first = all.next();
    if all.next().is_some() {
        return Err(Rejection::Duplicate(name));
    }
    Ok(first)
}

fn scope_id(value: &[u8], name: &'static str) -> Result<Uuid, Rejection> {
    Uuid::parse(value).ok_or(Rejection::BadScopeId(name))
}

/// The lookup key a proxied request names.
pub(crate) fn lookup_key(headers: &Headers) -> Result<LookupKey, Rejection> {
    let xff = one(headers, "X-Forwarded-For")?.ok_or(Rejection::MissingForwardedFor)?;
    let ip: IpAddr = std::str::from_utf8(xff)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(Rejection::BadForwardedFor)?;
    let router = one(headers, "X-Neutron-Router-ID")?;
    let network = one(headers, "X-Neutron-Network-ID")?;
    if let Some(ovn) = one(headers, "X-OVN-Network-ID")? {
        if router.is_some() || network.is_some() {
            let other = match router {
                Some(_) => "X-Neutron-Router-ID",
                None => "X-Neutron-Network-ID",
            };
            return Err(Rejection::OvnAndNeutron(other));
        }
        return Ok(LookupKey {
            scope: Scope::OvnNetwork(scope_id(ovn, "X-OVN-Network-ID")?),
            ip: canonical_ip(ip),
        });
    }
    let scope = match (router, network) {
        (Some(r), Some(n)) => {
            return Err(Rejection::BothScopes {
                network: String::from_utf8_lossy(n).into_owned(),
                router: String::from_utf8_lossy(r).into_owned(),
            })
        }
        (Some(r), None) => Scope::Router(scope_id(r, "X-Neutron-Router-ID")?),
        (None, Some(n)) => Scope::Network(scope_id(n, "X-Neutron-Network-ID")?),
        (None, None) => return Err(Rejection::NoScope),
    };
    Ok(LookupKey {
        scope,
        ip: canonical_ip(ip),
    })
}

/// Neutron's 404 text for a request no port matches.
pub(crate) fn not_found_message(scope: &Scope) -> String {
    match scope {
        Scope::Router(r) => format!("Instance was not found on router {r}."),
        Scope::Network(n) | Scope::OvnNetwork(n) => {
            format!("Instance was not found on network {n}.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HeadScanner, Limits};

    const R: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";

    fn key(fields: &str) -> Result<LookupKey, Rejection> {
        let raw = format!("GET / HTTP/1.1\r\n{fields}\r\n");
        let (head, _) = HeadScanner::new()
            .parse_request(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        lookup_key(&head.headers)
    }

    #[test]
    fn rules() {
        let ok = key(&format!(
            "X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: {R}\r\n"
        ))
        .unwrap();
        assert_eq!(ok.ip, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(ok.scope, Scope::Router(Uuid::parse(R.as_bytes()).unwrap()));
        let mapped = key(&format!(
            "X-Forwarded-For: ::ffff:10.0.0.5\r\nX-Neutron-Network-ID: {R}\r\n"
        ))
        .unwrap();
        assert_eq!(
            mapped.ip,
            "10.0.0.5".parse::<IpAddr>().unwrap(),
            "v4-mapped becomes v4"
        );
        let ovn = key(&format!(
            "X-Forwarded-For: fe80::f816:3eff:fe12:3456\r\nX-OVN-Network-ID: {R}\r\n"
        ))
        .unwrap();
        assert_eq!(
            ovn.scope,
            Scope::OvnNetwork(Uuid::parse(R.as_bytes()).unwrap())
        );
        let cases: &[(&str, &str)] = &[
            ("X-Neutron-Router-ID: R\r\n", "X-Forwarded-For header is missing"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-Forwarded-For: 10.0.0.6\r\nX-Neutron-Router-ID: R\r\n", "Multiple X-Forwarded-For"),
            ("X-Forwarded-For: 10.0.0.5, 10.0.0.6\r\nX-Neutron-Router-ID: R\r\n", "not an IP"),
            ("X-Forwarded-For: 10.0.0.5\r\n", "Neither"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: R\r\nX-Neutron-Network-ID: R\r\n", "Both network"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: R\r\nx-neutron-router-id: R\r\n", "Multiple X-Neutron-Router-ID"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: spoofed\r\n", "not a valid ID"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-OVN-Network-ID: R\r\nX-Neutron-Router-ID: R\r\n", "Both X-OVN-Network-ID and X-Neutron-Router-ID"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-OVN-Network-ID: R\r\nX-Neutron-Network-ID: R\r\n", "Both X-OVN-Network-ID and X-Neutron-Network-ID"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-OVN-Network-ID: R\r\nx-ovn-network-id: R\r\n", "Multiple X-OVN-Network-ID"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-OVN-Network-ID: spoofed\r\n", "X-OVN-Network-ID is not a valid ID"),
        ];
        for (fields, want) in cases {
            let err = key(&fields.replace(": R", &format!(": {R}"))).unwrap_err();
            assert_eq!(err.status(), 400, "{err}");
            assert!(err.to_string().contains(want), "{fields:?}: {err}");
        }
    }
}
