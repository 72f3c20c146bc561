//! OVSDB remotes as OVN configures them (`ovsdb(7)`, "Connection Methods"): `tcp:IP[:PORT]`,
//! `ssl:IP[:PORT]` (port 6640 when omitted), `unix:PATH`, IPv6 in brackets
//! (`tcp:[::1]:6642`), and a comma-separated list of cluster members
//! (`ovn-remote="tcp:10.0.0.1:6642,tcp:10.0.0.2:6642"`).
//!
//! Host names are refused: the core never resolves a name (that would be I/O), so an IP
//! literal is required where ovsdb itself would look one up.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use crate::socket::Target;

/// `ovsdb(7)`'s default port for TCP-based methods.
pub const DEFAULT_PORT: u16 = 6640;

/// One server to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    /// `tcp:IP:PORT`.
    Tcp(SocketAddr),
    /// `ssl:IP:PORT`: TLS over TCP.
    Ssl(SocketAddr),
    /// `unix:PATH`.
    Unix(PathBuf),
}

/// Why a remote cannot be used; each carries the offending text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteError {
    /// No remote at all (an empty string or an empty list member).
    Empty,
    /// A method other than `tcp`, `ssl`, `unix`.
    Method(String),
    /// A listening method (`ptcp:`, `pssl:`, `punix:`): we only connect.
    Passive(String),
    /// The host is not an IP address.
    NotAnIp(String),
    /// The port is not a number in 1..=65535.
    Port(String),
    /// `unix:` without a path.
    NoPath(String),
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::Empty => f.write_str("empty OVSDB remote"),
            RemoteError::Method(r) => write!(
                f,
                "OVSDB remote {r:?}: unknown method (expected tcp:, ssl: or unix:)"
            ),
            RemoteError::Passive(r) => write!(
                f,
                "OVSDB remote {r:?} is a listening method: give the server's address"
            ),
            RemoteError::NotAnIp(r) => write!(
                f,
                "OVSDB remote {r:?}: the host must be an IP address (names are not resolved; \
                 IPv6 goes in brackets, as tcp:[::1]:6642)"
            ),
            RemoteError::Port(r) => write!(f, "OVSDB remote {r:?}: bad port"),
            RemoteError::NoPath(r) => write!(f, "OVSDB remote {r:?}: no socket path"),
        }
    }
}

impl std::error::Error for RemoteError {}

impl FromStr for Remote {
    type Err = RemoteError;

    fn from_str(s: &str) -> Result<Remote, RemoteError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(RemoteError::Empty);
        }
        let Some((method, rest)) = s.split_once(':') else {
            return Err(RemoteError::Method(s.to_owned()));
        };
        match method {
            "tcp" => ip_port(s, rest).map(Remote::Tcp),
            "ssl" => ip_port(s, rest).map(Remote::Ssl),
            "unix" if rest.is_empty() => Err(RemoteError::NoPath(s.to_owned())),
            "unix" => Ok(Remote::Unix(PathBuf::from(rest))),
            "ptcp" | "pssl" | "punix" => Err(RemoteError::Passive(s.to_owned())),
            _ => Err(RemoteError::Method(s.to_owned())),
        }
    }
}

/// `IP[:PORT]` or `[IPv6][:PORT]` of remote `whole`.
fn ip_port(whole: &str, rest: &str) -> Result<SocketAddr, RemoteError> {
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| RemoteError::NotAnIp(whole.to_owned()))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(RemoteError::Port(whole.to_owned())),
                },
            }
        }
        None => match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let ip: IpAddr = host
        .parse()
        .map_err(|_| RemoteError::NotAnIp(whole.to_owned()))?;
    // An IPv6 address outside brackets would have been cut at its first colon above.
    if ip.is_ipv6() && !rest.starts_with('[') {
        return Err(RemoteError::NotAnIp(whole.to_owned()));
    }
    let port = match port {
        None => DEFAULT_PORT,
        // `u16::from_str` would take `+80`.
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse() {
            Ok(p) if p != 0 => p,
            _ => return Err(RemoteError::Port(whole.to_owned())),
        },
        Some(_) => return Err(RemoteError::Port(whole.to_owned())),
    };
    Ok(SocketAddr::new(ip, port))
}

/// A comma-separated list of remotes, in order (OVN's `ovn-remote`, a cluster's members).
pub fn parse_remotes(s: &str) -> Result<Vec<Remote>, RemoteError> {
    s.split(',').map(Remote::from_str).collect()
}

impl Remote {
    /// Where the runtime connects.
    pub fn target(&self) -> Target {
        match self {
            Remote::Tcp(a) | Remote::Ssl(a) => Target::Tcp(*a),
            Remote::Unix(p) => Target::Unix(p.clone()),
        }
    }
}

impl fmt::Display for Remote {
    /// The form it was written in (`tcp:[::1]:6642`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Tcp(a) => write!(f, "tcp:{a}"),
            Remote::Ssl(a) => write!(f, "ssl:{a}"),
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        let tcp = |s: &str| Remote::Tcp(s.parse().unwrap());
        for (text, remote, shown) in [
            ("tcp:127.0.0.1:6642", tcp("127.0.0.1:6642"), None),
            ("tcp:[::1]:6642", tcp("[::1]:6642"), None),
            (
                "tcp:10.0.0.1",
                tcp("10.0.0.1:6640"),
                Some("tcp:10.0.0.1:6640"),
            ),
            (
                "tcp:[fe80::1]",
                tcp("[fe80::1]:6640"),
                Some("tcp:[fe80::1]:6640"),
            ),
            (
                "ssl:192.0.2.1:6642",
                Remote::Ssl("192.0.2.1:6642".parse().unwrap()),
                None,
            ),
            (
                "unix:/var/run/ovn/ovnsb_db.sock",
                Remote::Unix("/var/run/ovn/ovnsb_db.sock".into()),
                None,
            ),
        ] {
            assert_eq!(text.parse::<Remote>(), Ok(remote.clone()), "{text}");
            assert_eq!(remote.to_string(), shown.unwrap_or(text));
        }
        assert_eq!(
            parse_remotes("tcp:127.0.0.1:6641, tcp:127.0.0.1:6643,unix:db.sock"),
            Ok(vec![
                tcp("127.0.0.1:6641"),
                tcp("127.0.0.1:6643"),
                Remote::Unix("db.sock".into())
            ])
        );
        assert_eq!(
            Remote::Unix("/s".into()).target(),
            Target::Unix("/s".into())
        );
    }

    #[test]
    fn refused() {
        use RemoteError::*;
        type Expect = fn(String) -> RemoteError;
        let cases: &[(&str, Expect)] = &[
            ("tcp:ovn-central:6642", NotAnIp),
            ("tcp:::1:6642", NotAnIp),
            ("tcp:[::1", NotAnIp),
            ("tcp:[::1]6642", Port),
            ("tcp:127.0.0.1:", Port),
            ("tcp:127.0.0.1:0", Port),
            ("tcp:127.0.0.1:65536", Port),
            ("tcp:127.0.0.1:+80", Port),
            ("tcp:127.0.0.1:x", Port),
            ("unix:", NoPath),
            ("ptcp:6642", Passive),
            ("punix:/s", Passive),
            ("http://127.0.0.1", Method),
            ("127.0.0.1:6642", Method),
            ("/var/run/db.sock", Method),
        ];
        for (text, err) in cases {
            assert_eq!(text.parse::<Remote>(), Err(err(text.to_string())), "{text}");
        }
        assert_eq!(parse_remotes(""), Err(Empty));
        assert_eq!(parse_remotes("tcp:127.0.0.1:1,"), Err(Empty));
        assert!(NotAnIp("tcp:x:1".into())
            .to_string()
            .contains("names are not resolved"));
    }
}
