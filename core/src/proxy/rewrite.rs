//! Header rules as data: which of the client's fields each hop deletes or keeps, and what it
//! sets in their place (DESIGN.md, header contract). One table per hop; the connection applies
//! whichever its role hands it, and the fields it sets are built beside the table.

use std::net::IpAddr;

use crate::http::Rewrite;
use crate::scope::{Instance, Scope};
use crate::sign::Signer;

/// Fields that claim an identity or an origin. A client may send any of them, in any case and
/// any number of copies; the ns-proxy deletes them all before adding its own. `Forwarded`,
/// `X-Forwarded-Host`, `X-Forwarded-Proto` and `X-Real-IP` are on the list because Nova's paste
/// pipeline runs `http_proxy_to_wsgi`, which rewrites the request's origin from them.
pub const IDENTITY_HEADERS: &[&str] = &[
    "X-Forwarded-For",
    "X-Neutron-Router-ID",
    "X-Neutron-Network-ID",
    "X-OVN-Network-ID",
    "X-Instance-ID",
    "X-Instance-ID-Signature",
    "X-Tenant-ID",
    "X-Metadata-Provider",
    "X-Metadata-Provider-Signature",
    "Forwarded",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Real-IP",
];

/// The only client fields the agent passes to the metadata server (Neutron's agent builds a
/// fresh request with its own fields only). Framing (`Content-Length`) is written by us, and
/// the identity fields are the agent's own. Each kept field, and why:
/// - `Host`: HTTP/1.1 requires one; Nova ignores its value.
/// - `Accept`: picks JSON or text error bodies.
/// - `Content-Type`: describes a posted password.
/// - `User-Agent`: names the client in the server's access log.
/// - `X-aws-ec2-metadata-token`, `X-aws-ec2-metadata-token-ttl-seconds`: IMDSv2, which
///   `mdproxy server` answers (Nova ignores them).
pub const AGENT_FORWARDS: &[&str] = &[
    "Host",
    "Accept",
    "Content-Type",
    "User-Agent",
    "X-aws-ec2-metadata-token",
    "X-aws-ec2-metadata-token-ttl-seconds",
];

/// What one hop does to the client's fields before it adds its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopRules {
    /// Drop every copy of these names (ASCII case-insensitive).
    pub remove: &'static [&'static str],
    /// Drop every field whose name contains `_`: WSGI servers (eventlet, wsgiref) fold `_` into
    /// `-`, so `X_Forwarded_For` would become `X-Forwarded-For` behind us (nginx's default,
    /// `underscores_in_headers off`).
    pub drop_underscored: bool,
    /// When set, keep only these names and drop all others.
    pub keep_only: Option<&'static [&'static str]>,
}

/// The ns-proxy (instance → agent): everything passes except identity and underscored names.
pub const NS_PROXY: HopRules = HopRules {
    remove: IDENTITY_HEADERS,
    drop_underscored: true,
    keep_only: None,
};

/// The agent (proxy → metadata server): an allowlist.
pub const AGENT: HopRules = HopRules {
    remove: &[],
    drop_underscored: true,
    keep_only: Some(AGENT_FORWARDS),
};

impl HopRules {
    /// The head rewrite of this hop: these rules, hop-by-hop fields stripped, `add` appended.
    pub fn rewrite<'a>(&self, add: &'a [(&'a str, &'a [u8])]) -> Rewrite<'a> {
        Rewrite {
            remove: self.remove,
            drop_underscored: self.drop_underscored,
            keep_only: self.keep_only,
            strip_hop_by_hop: true,
            add,
        }
    }

    /// Whether a client field named `name` goes on to the next hop.
    pub fn keeps(&self, name: &str) -> bool {
        self.rewrite(&[]).keeps(name)
    }
}

/// Whether `name` is `X-Forwarded-For` as a WSGI server would read it (`_` for `-`, any case).
pub fn is_forwarded_for(name: &str) -> bool {
    const XFF: &[u8] = b"x-forwarded-for";
    name.len() == XFF.len()
        && name.bytes().zip(XFF).all(|(a, &b)| {
            let a = if a == b'_' { b'-' } else { a };
            a.eq_ignore_ascii_case(&b)
        })
}

/// The fields the ns-proxy sets: exactly one `X-Forwarded-For` and one scope field.
pub fn ns_proxy_fields(peer: IpAddr, scope: &Scope) -> Vec<(&'static str, Vec<u8>)> {
    let (name, id) = match scope {
        Scope::Router(id) => ("X-Neutron-Router-ID", id),
        Scope::Network(id) => ("X-Neutron-Network-ID", id),
        Scope::OvnNetwork(id) => ("X-OVN-Network-ID", id),
    };
    vec![
        ("X-Forwarded-For", peer.to_string().into_bytes()),
        (name, id.to_string().into_bytes()),
    ]
}

/// The fields the agent sets for a resolved instance.
pub fn agent_fields(signer: &Signer, ip: IpAddr, inst: &Instance) -> Vec<(&'static str, Vec<u8>)> {
    let sig = signer.sign(&inst.instance_id);
    vec![
        ("X-Forwarded-For", ip.to_string().into_bytes()),
        ("X-Instance-ID", inst.instance_id.clone().into_bytes()),
        ("X-Tenant-ID", inst.project_id.clone().into_bytes()),
        (
            "X-Instance-ID-Signature",
            AsRef::<[u8]>::as_ref(&sig).to_vec(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_proxy_table() {
        const CASES: &[(&str, bool)] = &[
            ("Host", true),
            ("User-Agent", true),
            ("Accept-Encoding", true),
            ("X-aws-ec2-metadata-token", true),
            ("x-forwarded-for", false),
            ("X-FORWARDED-FOR", false),
            ("X_Forwarded_For", false),
            ("X-Forwarded_For", false),
            ("x_instance_id", false),
            ("X_Metadata_Provider", false),
            ("X_Neutron_Network_ID", false),
            ("X-OVN-Network-ID", false),
            ("Forwarded", false),
            ("X-Forwarded-Host", false),
            ("X-Forwarded-Proto", false),
            ("X-Real-IP", false),
            ("X-Tenant-ID", false),
            ("Any_Name", false),
        ];
        for (name, kept) in CASES {
            assert_eq!(NS_PROXY.keeps(name), *kept, "{name}");
        }
    }

    #[test]
    fn agent_allowlist() {
        for name in AGENT_FORWARDS {
            assert!(AGENT.keeps(name), "{name}");
            assert!(AGENT.keeps(&name.to_ascii_lowercase()), "{name}");
        }
        for name in [
            "X-Forwarded-For",
            "X-Neutron-Router-ID",
            "X-Instance-ID",
            "X-Metadata-Provider",
            "Forwarded",
            "X-Real-IP",
            "Cookie",
            "Authorization",
            "X_aws_ec2_metadata_token",
            "Accept-Encoding",
        ] {
            assert!(!AGENT.keeps(name), "{name}");
        }
    }

    #[test]
    fn forwarded_for_as_wsgi_reads_it() {
        for name in ["X-Forwarded-For", "x_forwarded_for", "X_FORWARDED-for"] {
            assert!(is_forwarded_for(name), "{name}");
        }
        for name in [
            "X-Forwarded-Fo",
            "X-Forwarded-Forr",
            "Forwarded",
            "X.Forwarded.For",
        ] {
            assert!(!is_forwarded_for(name), "{name}");
        }
    }
}
