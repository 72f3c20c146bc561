//! The agent's rules for what the namespace proxy must send (DESIGN.md, header contract):
//! exactly one `X-Forwarded-For` and exactly one of router or network ID.

use std::net::IpAddr;

use crate::http::Headers;
use crate::proxy::rewrite::canonical_ip;
use crate::scope::{LookupKey, Scope, Uuid};

/// Why a request cannot be attributed to an instance; always answered with 400.
pub(crate) type Rejection = String;

fn one<'a>(headers: &'a Headers, name: &'a str) -> Result<Option<&'a [u8]>, Rejection> {
    let mut all = headers.get_all(name);
    let first = all.next();
    if all.next().is_some() {
        return Err(format!("Multiple {name} headers found within request."));
    }
    Ok(first)
}

fn scope_id(value: &[u8], name: &str) -> Result<Uuid, Rejection> {
    Uuid::parse(value).ok_or_else(|| format!("{name} is not a valid ID."))
}

/// The lookup key a proxied request names.
pub(crate) fn lookup_key(headers: &Headers) -> Result<LookupKey, Rejection> {
    let xff = one(headers, "X-Forwarded-For")?
        .ok_or_else(|| "X-Forwarded-For header is missing from request.".to_owned())?;
    let ip: IpAddr = std::str::from_utf8(xff)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| "X-Forwarded-For is not an IP address.".to_owned())?;
    let router = one(headers, "X-Neutron-Router-ID")?;
    let network = one(headers, "X-Neutron-Network-ID")?;
    let scope = match (router, network) {
        (Some(r), Some(n)) => {
            return Err(format!(
                "Both network {} and router {} defined.",
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(r)
            ))
        }
        (Some(r), None) => Scope::Router(scope_id(r, "X-Neutron-Router-ID")?),
        (None, Some(n)) => Scope::Network(scope_id(n, "X-Neutron-Network-ID")?),
        (None, None) => {
            return Err(
                "Neither X-Neutron-Router-ID nor X-Neutron-Network-ID found in request.".to_owned(),
            )
        }
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
        Scope::Network(n) => format!("Instance was not found on network {n}."),
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
        let cases: &[(&str, &str)] = &[
            ("X-Neutron-Router-ID: R\r\n", "X-Forwarded-For header is missing"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-Forwarded-For: 10.0.0.6\r\nX-Neutron-Router-ID: R\r\n", "Multiple X-Forwarded-For"),
            ("X-Forwarded-For: 10.0.0.5, 10.0.0.6\r\nX-Neutron-Router-ID: R\r\n", "not an IP"),
            ("X-Forwarded-For: 10.0.0.5\r\n", "Neither"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: R\r\nX-Neutron-Network-ID: R\r\n", "Both network"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: R\r\nx-neutron-router-id: R\r\n", "Multiple X-Neutron-Router-ID"),
            ("X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: spoofed\r\n", "not a valid ID"),
        ];
        for (fields, want) in cases {
            let err = key(&fields.replace(": R", &format!(": {R}"))).unwrap_err();
            assert!(err.contains(want), "{fields:?}: {err}");
        }
    }
}
