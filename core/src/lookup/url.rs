//! Where a backend lives (`http[s]://host[:port][/prefix]`) and how query strings are spelled.
//!
//! [`HttpUrl::parse`] is the one parser of such URLs: the lookup client's targets are built on
//! it, and the binary checks its `--metadata-url`, `--neutron-url` and `--auth-url` with it.
//! The core never resolves names: a URL either carries an IP literal
//! ([`HttpTarget::parse_ip_url`]) or the runtime resolved its host at startup and hands the
//! address in ([`HttpTarget::parse_resolved`]). An `https` URL is spoken to over TLS when the
//! client has TLS settings ([`NeutronConfig::tls`](super::NeutronConfig::tls)); its host is the
//! name the server's certificate must carry.

use std::fmt::{self, Write as _};
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

/// Why a URL was refused. The messages do not repeat the URL: the caller names it (and the
/// flag or key it came from).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// The scheme is not `http` or `https`.
    Scheme,
    /// `user@` before the host.
    UserInfo,
    /// A `?` or `#`: a base URL has neither.
    QueryOrFragment,
    /// A byte in the path that a request line cannot carry verbatim.
    PathCharacter,
    /// `[` without its `]`.
    UnclosedBracket,
    /// Something other than `:PORT` after `]`.
    AfterBracket,
    /// An empty host.
    NoHost,
    /// The port, as written, is not a number from 1 to 65535.
    Port(String),
    /// The bracketed host, as written, is not an IPv6 address.
    NotIpv6(String),
    /// The host is neither an IPv4 address nor a DNS-style name.
    HostName(String),
    /// The host is a name where an IP address is needed: the core resolves no names.
    NotAnIp(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme => f.write_str("not an http:// or https:// URL"),
            UrlError::UserInfo => f.write_str("user info in URLs is not supported"),
            UrlError::QueryOrFragment => f.write_str("query or fragment in a base URL"),
            UrlError::PathCharacter => f.write_str("invalid character in the path"),
            UrlError::UnclosedBracket => f.write_str("unclosed `[` in the host"),
            UrlError::AfterBracket => f.write_str("junk after `]`"),
            UrlError::NoHost => f.write_str("no host"),
            UrlError::Port(p) => write!(f, "invalid port `{p}`"),
            UrlError::NotIpv6(h) => write!(f, "`[{h}]` is not an IPv6 address"),
            UrlError::HostName(h) => write!(f, "`{h}` is not a valid host name"),
            UrlError::NotAnIp(h) => write!(
                f,
                "host `{h}` is not an IP address, and mdproxy resolves names only at startup; \
                 configure the URL with an IP address (or set neutron_url explicitly)"
            ),
        }
    }
}

impl std::error::Error for UrlError {}

/// An `http://` or `https://` URL, split and checked: nothing in it needs escaping to go into
/// a request line or a `Host` header verbatim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpUrl<'a> {
    /// `https`.
    pub https: bool,
    /// The host as written: an IPv4 address, a DNS-style name or (without its brackets) an
    /// IPv6 address.
    pub host: &'a str,
    /// Whether the host was a bracketed IPv6 address.
    pub bracketed: bool,
    /// The port the URL names, if it names one.
    pub explicit_port: Option<u16>,
    /// `host[:port]` as written.
    pub authority: &'a str,
    /// The path without trailing slashes; `""` for none.
    pub path: &'a str,
}

impl<'a> HttpUrl<'a> {
    /// Splits and checks `url`. Refuses other schemes, user info, query, fragment, a host
    /// that is not an IP address or a DNS-style name, and any byte that could not go into a
    /// request line or a `Host` header verbatim.
    pub fn parse(url: &'a str) -> Result<HttpUrl<'a>, UrlError> {
        let (https, rest) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            _ => return Err(UrlError::Scheme),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        if path.contains(['?', '#']) || authority.contains(['?', '#']) {
            return Err(UrlError::QueryOrFragment);
        }
        if !path.bytes().all(is_path_byte) {
            return Err(UrlError::PathCharacter);
        }
        let (host, bracketed, port) = if let Some(after) = authority.strip_prefix('[') {
            let (host, tail) = after.split_once(']').ok_or(UrlError::UnclosedBracket)?;
            let port = match tail {
                "" => None,
                _ => Some(tail.strip_prefix(':').ok_or(UrlError::AfterBracket)?),
            };
            (host, true, port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, false, Some(port)),
                None => (authority, false, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        if bracketed && host.parse::<Ipv6Addr>().is_err() {
            return Err(UrlError::NotIpv6(host.to_owned()));
        }
        if !bracketed && host.parse::<Ipv4Addr>().is_err() && !is_reg_name(host) {
            return Err(UrlError::HostName(host.to_owned()));
        }
        let explicit_port = match port {
            None => None,
            Some(p) => Some(parse_port(p).ok_or_else(|| UrlError::Port(p.to_owned()))?),
        };
        Ok(HttpUrl {
            https,
            host,
            bracketed,
            explicit_port,
            authority,
            path: path.trim_end_matches('/'),
        })
    }

    /// The port to connect to: the URL's, else 80 (443 for `https`).
    pub fn port(&self) -> u16 {
        match (self.explicit_port, self.https) {
            (Some(p), _) => p,
            (None, true) => 443,
            (None, false) => 80,
        }
    }

    /// For `https`, the name the server's certificate must carry.
    fn tls_name(&self) -> Option<String> {
        self.https.then(|| self.host.to_owned())
    }

    /// The target at `addr`, which the caller found for this URL's host.
    fn at(&self, addr: SocketAddr) -> HttpTarget {
        HttpTarget {
            addr,
            host: self.authority.to_owned(),
            path_prefix: self.path.to_owned(),
            tls_name: self.tls_name(),
        }
    }
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
    pub fn parse_resolved(url: &str, addr: SocketAddr) -> Result<Self, UrlError> {
        Ok(HttpUrl::parse(url)?.at(addr))
    }

    /// Parses `http://1.2.3.4[:port][/prefix]` or `http://[fd00::1][:port][/prefix]` (port 80
    /// when absent; `https` too, port 443). A host name is refused: the core does no name
    /// resolution, so such a URL must be resolved by the runtime first
    /// ([`HttpTarget::parse_resolved`]).
    pub fn parse_ip_url(url: &str) -> Result<Self, UrlError> {
        let parts = HttpUrl::parse(url)?;
        let ip = match parts.bracketed {
            true => parts.host.parse::<Ipv6Addr>().map(IpAddr::V6),
            false => parts.host.parse::<Ipv4Addr>().map(IpAddr::V4),
        };
        let ip = ip.map_err(|_| UrlError::NotAnIp(parts.host.to_owned()))?;
        Ok(parts.at(SocketAddr::new(ip, parts.port())))
    }
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
            let e = HttpTarget::parse_ip_url(url).expect_err(url).to_string();
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
    fn urls_split_into_their_parts() {
        // (url, https, host, bracketed, explicit port, port, authority, path)
        type Parts = (
            bool,
            &'static str,
            bool,
            Option<u16>,
            u16,
            &'static str,
            &'static str,
        );
        const OK: &[(&str, Parts)] = &[
            (
                "http://nova.example:8775",
                (
                    false,
                    "nova.example",
                    false,
                    Some(8775),
                    8775,
                    "nova.example:8775",
                    "",
                ),
            ),
            (
                "HTTPS://10.0.0.1/",
                (true, "10.0.0.1", false, None, 443, "10.0.0.1", ""),
            ),
            (
                "http://[::1]/a/b//",
                (false, "::1", true, None, 80, "[::1]", "/a/b"),
            ),
        ];
        for &(url, want) in OK {
            let u = HttpUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            let got = (
                u.https,
                u.host,
                u.bracketed,
                u.explicit_port,
                u.port(),
                u.authority,
                u.path,
            );
            assert_eq!(got, want, "{url}");
        }
    }

    #[test]
    fn errors_are_typed() {
        let cases: &[(&str, UrlError)] = &[
            ("ftp://h", UrlError::Scheme),
            ("http://u@h", UrlError::UserInfo),
            ("http://h/x?y", UrlError::QueryOrFragment),
            ("http://h/a b", UrlError::PathCharacter),
            ("http://[::1", UrlError::UnclosedBracket),
            ("http://[::1]8775", UrlError::AfterBracket),
            ("http://::1:8775", UrlError::NoHost),
            ("http://h:x", UrlError::Port("x".into())),
            ("http://h:0", UrlError::Port("0".into())),
            ("http://[nope]:1", UrlError::NotIpv6("nope".into())),
            ("http://bad_host", UrlError::HostName("bad_host".into())),
        ];
        for (url, want) in cases {
            assert_eq!(HttpUrl::parse(url).as_ref(), Err(want), "{url}");
        }
        assert_eq!(
            HttpTarget::parse_ip_url("http://nova.example"),
            Err(UrlError::NotAnIp("nova.example".into()))
        );
        assert_eq!(UrlError::Port("x".into()).to_string(), "invalid port `x`");
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
