//! Where a backend lives (`http[s]://host[:port][/prefix]`) and how query strings are spelled.
//!
//! The core never resolves names: a URL either carries an IP literal
//! ([`HttpTarget::parse_ip_url`]) or the runtime resolved its host at startup and hands the
//! address in ([`HttpTarget::parse_resolved`]). An `https` URL is spoken to over TLS when the
//! client has TLS settings ([`NeutronConfig::tls`](super::NeutronConfig::tls)); its host is the
//! name the server's certificate must carry.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An HTTP service the lookup client talks to: where to connect, what to put in `Host`, and the
/// path every request path is appended to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// The `Host` header value: the URL's authority as written (`10.0.0.5:9696`,
    /// `[fd00::5]:9696`, `neutron.example`), port included when the URL names one.
    pub host: String,
    /// Path the API lives under, without a trailing slash: `""` or e.g. `"/networking"`.
    pub path_prefix: String,
    /// For an `https` URL, its host (IPv6 without brackets): the name the server's
    /// certificate must carry. `None` for `http`.
    pub tls_name: Option<String>,
}

/// The parts of an `http://` or `https://` URL we use.
struct UrlParts<'a> {
    /// `https`.
    https: bool,
    /// Host as written (IPv6 literal without brackets).
    host: &'a str,
    /// Whether the host was a bracketed IPv6 literal.
    bracketed: bool,
    /// Explicit port, if any.
    port: Option<u16>,
    /// `host[:port]` as written.
    authority: &'a str,
    /// Path without trailing slashes; `""` for none.
    path: &'a str,
}

impl HttpTarget {
    /// `http` or `https`, for messages.
    pub fn scheme(&self) -> &'static str {
        match self.tls_name {
            Some(_) => "https",
            None => "http",
        }
    }

    /// Parses `http[s]://host[:port][/prefix]` whose host the caller already resolved to `addr`
    /// (the runtime resolves names once, at startup). `addr` is used as given, port included;
    /// the URL only supplies `Host` and the path prefix. IP-literal hosts are accepted too.
    pub fn parse_resolved(url: &str, addr: SocketAddr) -> Result<Self, String> {
        let parts = split_url(url)?;
        if !parts.bracketed && parts.host.parse::<Ipv4Addr>().is_err() && !is_reg_name(parts.host) {
            return Err(format!("{url}: `{}` is not a valid host name", parts.host));
        }
        Ok(HttpTarget {
            addr,
            host: parts.authority.to_owned(),
            path_prefix: parts.path.to_owned(),
            tls_name: parts.tls_name(),
        })
    }

    /// Parses `http://1.2.3.4[:port][/prefix]` or `http://[fd00::1][:port][/prefix]` (port 80
    /// when absent; `https` too, port 443). A host name is refused: the core does no name resolution, so such a URL
    /// must be resolved by the runtime first ([`HttpTarget::parse_resolved`]).
    pub fn parse_ip_url(url: &str) -> Result<Self, String> {
        let parts = split_url(url)?;
        let ip = if parts.bracketed {
            let v6: Ipv6Addr = parts
                .host
                .parse()
                .map_err(|_| format!("{url}: `[{}]` is not an IPv6 address", parts.host))?;
            IpAddr::V6(v6)
        } else {
            match parts.host.parse::<Ipv4Addr>() {
                Ok(v4) => IpAddr::V4(v4),
                Err(_) => {
                    return Err(format!(
                        "{url}: host `{}` is not an IP address, and mdproxy resolves names only \
                         at startup; configure the URL with an IP address (or set neutron_url \
                         explicitly)",
                        parts.host
                    ))
                }
            }
        };
        let default_port = if parts.https { 443 } else { 80 };
        Ok(HttpTarget {
            addr: SocketAddr::new(ip, parts.port.unwrap_or(default_port)),
            host: parts.authority.to_owned(),
            path_prefix: parts.path.to_owned(),
            tls_name: parts.tls_name(),
        })
    }
}

impl UrlParts<'_> {
    fn tls_name(&self) -> Option<String> {
        self.https.then(|| self.host.to_owned())
    }
}

/// Splits and validates an `http://` or `https://` URL. Refuses other schemes, user info, query,
/// fragment, and any byte that could not go into a request line or a `Host` header verbatim.
fn split_url(url: &str) -> Result<UrlParts<'_>, String> {
    let (https, rest) = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
        _ => return Err(format!("{url}: not an http:// or https:// URL")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!("{url}: user info in URLs is not supported"));
    }
    if path.contains(['?', '#']) || authority.contains(['?', '#']) {
        return Err(format!("{url}: query or fragment in a base URL"));
    }
    if !path.bytes().all(is_path_byte) {
        return Err(format!("{url}: invalid character in the path"));
    }
    let (host, bracketed, port) = if let Some(after) = authority.strip_prefix('[') {
        let (host, tail) = after
            .split_once(']')
            .ok_or_else(|| format!("{url}: unclosed `[` in the host"))?;
        let port = match tail {
            "" => None,
            _ => Some(
                tail.strip_prefix(':')
                    .ok_or_else(|| format!("{url}: junk after `]`"))?,
            ),
        };
        (host, true, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, false, Some(port)),
            None => (authority, false, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).ok_or_else(|| format!("{url}: invalid port `{p}`"))?),
    };
    Ok(UrlParts {
        https,
        host,
        bracketed,
        port,
        authority,
        path: path.trim_end_matches('/'),
    })
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&n| n != 0)
}

/// A DNS-style host name: letters, digits, `-` and `.` (RFC 1123), nothing that needs escaping.
fn is_reg_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// RFC 3986 `pchar` and `/`: what may appear in the path part of a request target unescaped.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

/// A query string built pair by pair, each key and value percent-encoded (everything but RFC 3986
/// unreserved characters), so `network:router_interface` goes out as `network%3Arouter_interface`
/// as python's `urlencode` spells it. Pairs keep the order they were pushed in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Query(String);

impl Query {
    pub(crate) fn new() -> Self {
        Query(String::new())
    }

    /// Appends `key=value`.
    pub(crate) fn push(&mut self, key: &str, value: &str) -> &mut Self {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        percent_encode(key, &mut self.0);
        self.0.push('=');
        percent_encode(value, &mut self.0);
        self
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Appends `s` to `out`, percent-encoding every byte that is not RFC 3986 unreserved.
pub(crate) fn percent_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ip_urls() {
        // (url, addr, Host, prefix)
        const OK: &[(&str, &str, &str, &str)] = &[
            ("http://10.0.0.5:9696", "10.0.0.5:9696", "10.0.0.5:9696", ""),
            (
                "http://10.0.0.5:9696/",
                "10.0.0.5:9696",
                "10.0.0.5:9696",
                "",
            ),
            ("http://10.0.0.5", "10.0.0.5:80", "10.0.0.5", ""),
            (
                "HTTP://10.0.0.5/networking/",
                "10.0.0.5:80",
                "10.0.0.5",
                "/networking",
            ),
            (
                "http://[fd00::5]:9696/a/b",
                "[fd00::5]:9696",
                "[fd00::5]:9696",
                "/a/b",
            ),
            ("http://[::1]", "[::1]:80", "[::1]", ""),
            (
                "http://192.0.2.1:5000/v3",
                "192.0.2.1:5000",
                "192.0.2.1:5000",
                "/v3",
            ),
        ];
        for &(url, addr, host, prefix) in OK {
            let t = HttpTarget::parse_ip_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(t.addr, sa(addr), "{url}");
            assert_eq!(t.host, host, "{url}");
            assert_eq!(t.path_prefix, prefix, "{url}");
            assert_eq!((t.tls_name.as_deref(), t.scheme()), (None, "http"), "{url}");
        }
    }

    #[test]
    fn https_urls_name_the_certificate_host() {
        // (url, addr, name the certificate must carry)
        const OK: &[(&str, &str, &str)] = &[
            ("https://10.0.0.5", "10.0.0.5:443", "10.0.0.5"),
            ("HTTPS://10.0.0.5:9696/net", "10.0.0.5:9696", "10.0.0.5"),
            ("https://[fd00::5]", "[fd00::5]:443", "fd00::5"),
        ];
        for &(url, addr, name) in OK {
            let t = HttpTarget::parse_ip_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(t.addr, sa(addr), "{url}");
            assert_eq!(t.tls_name.as_deref(), Some(name), "{url}");
            assert_eq!(t.scheme(), "https");
        }
        let t = HttpTarget::parse_resolved("https://neutron.example/", sa("10.1.1.1:443")).unwrap();
        assert_eq!(t.host, "neutron.example");
        assert_eq!(t.tls_name.as_deref(), Some("neutron.example"));
        assert!(HttpTarget::parse_ip_url("https://neutron.example").is_err());
    }

    #[test]
    fn bad_urls() {
        // (url, a word the error must contain)
        const BAD: &[(&str, &str)] = &[
            ("ftp://10.0.0.5", "http://"),
            ("10.0.0.5:9696", "http://"),
            ("http://neutron.example:9696", "not an IP address"),
            ("http://", "no host"),
            ("http://:9696", "no host"),
            ("http://10.0.0.5:0", "port"),
            ("http://10.0.0.5:65536", "port"),
            ("http://10.0.0.5:", "port"),
            ("http://10.0.0.5:+80", "port"),
            ("http://[fd00::5", "unclosed"),
            ("http://[fd00::5]x", "junk"),
            ("http://[fe80::1%25eth0]", "IPv6"),
            ("http://[10.0.0.5]", "IPv6"),
            ("http://u:p@10.0.0.5", "user info"),
            ("http://10.0.0.5/x?y=1", "query"),
            ("http://10.0.0.5/x#y", "query"),
            ("http://10.0.0.5/a b", "character"),
            ("http://10.0.0.5/a\r\nX: y", "character"),
            ("http://010.0.0.5", "not an IP address"),
        ];
        for &(url, word) in BAD {
            let e = HttpTarget::parse_ip_url(url).expect_err(url);
            assert!(e.contains(word), "{url}: {e}");
        }
    }

    #[test]
    fn resolved_urls_keep_the_name_in_host() {
        let t = HttpTarget::parse_resolved("http://neutron.example:9696/net/", sa("10.1.1.1:9696"))
            .unwrap();
        assert_eq!(t.addr, sa("10.1.1.1:9696"));
        assert_eq!(t.host, "neutron.example:9696");
        assert_eq!(t.path_prefix, "/net");
        let t = HttpTarget::parse_resolved("http://10.0.0.5", sa("10.0.0.5:80")).unwrap();
        assert_eq!(t.host, "10.0.0.5");
        assert!(HttpTarget::parse_resolved("http://bad_host", sa("10.1.1.1:80")).is_err());
        assert!(HttpTarget::parse_resolved("http://a b", sa("10.1.1.1:80")).is_err());
    }

    #[test]
    fn query_encoding() {
        let mut q = Query::new();
        q.push("device_owner", "network:router_interface")
            .push("fixed_ips", "ip_address=fd00::5")
            .push("x y", "a&b~c.d_e-f/é");
        assert_eq!(
            q.as_str(),
            "device_owner=network%3Arouter_interface&fixed_ips=ip_address%3Dfd00%3A%3A5\
             &x%20y=a%26b~c.d_e-f%2F%C3%A9"
        );
    }
}
