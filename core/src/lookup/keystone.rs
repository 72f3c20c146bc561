//! Keystone v3 password authentication: the request, and what the answer tells us (the token,
//! how long it lives, where Neutron is).
//!
//! The token's lifetime is `expires_at - issued_at`, both from the token body and both in UTC,
//! so no wall clock is needed: the caller adds the lifetime (minus a safety margin) to the
//! monotonic `now` at which it asked for the token.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::KeystoneError;
use super::url::HttpTarget;
use crate::http::Headers;

/// Keystone v3 password credentials, project-scoped (the `[keystone_authtoken]`-style settings).
#[derive(Clone, PartialEq, Eq)]
pub struct KeystoneAuth {
    /// Keystone's endpoint. Its path prefix may or may not end in `/v3` (`http://ks:5000`,
    /// `http://ks:5000/v3`, `http://ks/identity/v3` all work).
    pub endpoint: HttpTarget,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Project to scope the token to.
    pub project_name: String,
    /// Domain of the user (usually `Default`).
    pub user_domain_name: String,
    /// Domain of the project (usually `Default`).
    pub project_domain_name: String,
}

impl fmt::Debug for KeystoneAuth {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeystoneAuth")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("project_name", &self.project_name)
            .field("user_domain_name", &self.user_domain_name)
            .field("project_domain_name", &self.project_domain_name)
            .finish()
    }
}

#[derive(Serialize)]
struct AuthRequest<'a> {
    auth: AuthBody<'a>,
}

#[derive(Serialize)]
struct AuthBody<'a> {
    identity: Identity<'a>,
    scope: AuthScope<'a>,
}

#[derive(Serialize)]
struct Identity<'a> {
    methods: [&'a str; 1],
    password: PasswordMethod<'a>,
}

#[derive(Serialize)]
struct PasswordMethod<'a> {
    user: User<'a>,
}

#[derive(Serialize)]
struct User<'a> {
    name: &'a str,
    domain: Named<'a>,
    password: &'a str,
}

#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct AuthScope<'a> {
    project: Project<'a>,
}

#[derive(Serialize)]
struct Project<'a> {
    name: &'a str,
    domain: Named<'a>,
}

impl KeystoneAuth {
    /// `POST …/v3/auth/tokens`, whether or not the configured prefix already ends in `/v3`.
    /// With `nocatalog` the answer leaves the service catalog out (we don't need it when
    /// `neutron_url` is configured, and it is the bulk of the response).
    pub(crate) fn token_path(&self, nocatalog: bool) -> String {
        let prefix = self.endpoint.path_prefix.trim_end_matches('/');
        let mut path = if prefix.ends_with("/v3") {
            format!("{prefix}/auth/tokens")
        } else {
            format!("{prefix}/v3/auth/tokens")
        };
        if nocatalog {
            path.push_str("?nocatalog");
        }
        path
    }

    /// The JSON body of the password authentication request.
    pub(crate) fn request_body(&self) -> Result<Vec<u8>, KeystoneError> {
        let req = AuthRequest {
            auth: AuthBody {
                identity: Identity {
                    methods: ["password"],
                    password: PasswordMethod {
                        user: User {
                            name: &self.username,
                            domain: Named {
                                name: &self.user_domain_name,
                            },
                            password: &self.password,
                        },
                    },
                },
                scope: AuthScope {
                    project: Project {
                        name: &self.project_name,
                        domain: Named {
                            name: &self.project_domain_name,
                        },
                    },
                },
            },
        };
        serde_json::to_vec(&req).map_err(|e| KeystoneError::Encode(e.to_string()))
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    expires_at: String,
    issued_at: String,
    #[serde(default)]
    catalog: Option<Vec<Service>>,
}

#[derive(Deserialize)]
struct Service {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    endpoints: Option<Vec<Endpoint>>,
}

#[derive(Deserialize)]
struct Endpoint {
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

/// What a successful authentication gave us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Issued {
    /// The `X-Subject-Token` value.
    pub(crate) token: String,
    /// `expires_at - issued_at` (zero if not positive).
    pub(crate) lifetime: Duration,
    /// The Neutron URL from the catalog, when one was asked for.
    pub(crate) neutron_url: Option<String>,
}

/// Which catalog endpoint to pick.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CatalogChoice<'a> {
    /// `public`, `internal` or `admin` (the old `publicURL` spellings work too).
    pub(crate) interface: &'a str,
    /// Region to match `region_id` (or the older `region`) against; `None` takes any.
    pub(crate) region: Option<&'a str>,
}

/// Reads a 2xx answer to the password request. `catalog` says whether (and how) to find the
/// Neutron endpoint; `None` skips the catalog entirely.
pub(crate) fn parse_issued(
    headers: &Headers,
    body: &[u8],
    catalog: Option<CatalogChoice<'_>>,
) -> Result<Issued, KeystoneError> {
    let token = match headers.count("x-subject-token") {
        1 => headers.get("x-subject-token").unwrap_or_default(),
        0 => return Err(KeystoneError::NoSubjectToken),
        _ => return Err(KeystoneError::SeveralSubjectTokens),
    };
    // The token goes back out in a header of ours: visible ASCII only.
    if token.is_empty() || !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(KeystoneError::BadSubjectToken);
    }
    let token = String::from_utf8_lossy(token).into_owned();
    let parsed: TokenResponse =
        serde_json::from_slice(body).map_err(|e| KeystoneError::BadJson(e.to_string()))?;
    let time = |field: &'static str, value: &str| {
        parse_timestamp(value).ok_or_else(|| KeystoneError::BadTime {
            field,
            value: value.to_owned(),
        })
    };
    let issued = time("issued_at", &parsed.token.issued_at)?;
    let expires = time("expires_at", &parsed.token.expires_at)?;
    let lifetime = u64::try_from(expires - issued).map_or(Duration::ZERO, Duration::from_nanos);
    let neutron_url = match catalog {
        None => None,
        Some(choice) => Some(find_network_endpoint(
            parsed.token.catalog.unwrap_or_default(),
            choice,
        )?),
    };
    Ok(Issued {
        token,
        lifetime,
        neutron_url,
    })
}

/// `public`, `publicURL`, `PUBLIC` → `public`.
fn interface_name(s: &str) -> &str {
    let n = s.len();
    match s.get(n.saturating_sub(3)..) {
        Some(tail) if n > 3 && tail.eq_ignore_ascii_case("url") => s.get(..n - 3).unwrap_or(s),
        _ => s,
    }
}

fn find_network_endpoint(
    catalog: Vec<Service>,
    choice: CatalogChoice<'_>,
) -> Result<String, KeystoneError> {
    let want = interface_name(choice.interface);
    let mut saw_network = false;
    for service in catalog {
        if service.kind.as_deref() != Some("network") {
            continue;
        }
        saw_network = true;
        for ep in service.endpoints.unwrap_or_default() {
            let interface_ok = ep
                .interface
                .as_deref()
                .is_some_and(|i| interface_name(i).eq_ignore_ascii_case(want));
            let region_ok = choice.region.is_none_or(|r| {
                ep.region_id.as_deref() == Some(r) || ep.region.as_deref() == Some(r)
            });
            if let (true, true, Some(url)) = (interface_ok, region_ok, ep.url) {
                if !url.is_empty() {
                    return Ok(url);
                }
            }
        }
    }
    if saw_network {
        Err(KeystoneError::NoNetworkEndpoint {
            interface: want.to_owned(),
            region: choice.region.map(str::to_owned),
        })
    } else {
        Err(KeystoneError::NoNetworkService)
    }
}

/// How long before its computed expiry a token stops being reused: a minute, or a tenth of the
/// lifetime for short-lived tokens (so a 5-minute token is used for 4½ minutes).
pub(crate) fn safety_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

/// Nanoseconds since 1970-01-01T00:00:00Z of an ISO 8601 / RFC 3339 date-time:
/// `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM|±HHMM]` (a missing offset means UTC, as Keystone's
/// older formats imply; `t` and a space are accepted for `T`). Leap seconds count as `:59`+1s.
pub fn parse_timestamp(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0')),
        )
    };
    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let hour = num(11, 2)?;
    let minute = num(14, 2)?;
    let second = num(17, 2)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i..)? {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => ([*h1, *h2], [*m1, *m2]),
                _ => return None,
            };
            let two = |d: [u8; 2]| -> Option<i64> {
                d.iter()
                    .all(u8::is_ascii_digit)
                    .then(|| i64::from(d[0] - b'0') * 10 + i64::from(d[1] - b'0'))
            };
            let (h, m) = (two(h)?, two(m)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HeadScanner, Limits, Method};
    use std::net::SocketAddr;

    const S: i128 = 1_000_000_000;

    #[test]
    fn timestamps() {
        const CASES: &[(&str, Option<i128>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01T00:00:00.000000Z", Some(0)),
            ("1970-01-01T00:00:01.5Z", Some(S + S / 2)),
            ("1970-01-01T00:00:00.123456789123Z", Some(123_456_789)),
            ("2000-03-01T00:00:00Z", Some(951_868_800 * S)),
            ("2026-11-25T23:59:59.000000Z", Some(1_795_651_199 * S)),
            ("2026-11-25T23:59:59", Some(1_795_651_199 * S)),
            ("2026-11-26T01:59:59+02:00", Some(1_795_651_199 * S)),
            ("2026-11-25T22:59:59-0100", Some(1_795_651_199 * S)),
            ("1969-12-31T23:59:59Z", Some(-S)),
            ("2024-02-29T00:00:00Z", Some(1_709_164_800 * S)),
            ("2023-02-29T00:00:00Z", None),
            ("2026-13-01T00:00:00Z", None),
            ("2026-11-25T24:00:00Z", None),
            ("2026-11-25T23:60:00Z", None),
            ("2026-11-25 23:59:59Z", Some(1_795_651_199 * S)),
            ("2026-11-25X23:59:59Z", None),
            ("2026-11-25T23:59:59.Z", None),
            ("2026-11-25T23:59:59ZZ", None),
            ("2026-11-25T23:59:59+2", None),
            ("2026-11-25T23:59", None),
            ("+026-11-25T23:59:59Z", None),
            ("", None),
            ("2026-11-25T23:59:59.000000Zé", None),
        ];
        for &(s, want) in CASES {
            assert_eq!(parse_timestamp(s), want, "{s}");
        }
    }

    #[test]
    fn margins() {
        assert_eq!(
            safety_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            safety_margin(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(safety_margin(Duration::ZERO), Duration::ZERO);
    }

    fn auth(prefix: &str) -> KeystoneAuth {
        KeystoneAuth {
            endpoint: HttpTarget {
                addr: SocketAddr::from(([10, 0, 0, 1], 5000)),
                host: "10.0.0.1:5000".into(),
                path_prefix: prefix.into(),
                tls_name: None,
            },
            username: "neutron".into(),
            password: "s3cr\"et".into(),
            project_name: "service".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
        }
    }

    #[test]
    fn token_paths() {
        assert_eq!(auth("").token_path(false), "/v3/auth/tokens");
        assert_eq!(auth("/v3").token_path(false), "/v3/auth/tokens");
        assert_eq!(
            auth("/identity").token_path(true),
            "/identity/v3/auth/tokens?nocatalog"
        );
        assert_eq!(
            auth("/identity/v3").token_path(false),
            "/identity/v3/auth/tokens"
        );
        assert_eq!(auth("/v3x").token_path(false), "/v3x/v3/auth/tokens");
    }

    #[test]
    fn request_body_and_redacted_debug() {
        let a = auth("");
        let body: serde_json::Value = serde_json::from_slice(&a.request_body().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "neutron", "domain": {"name": "Default"}, "password": "s3cr\"et"}}},
                "scope": {"project": {"name": "service", "domain": {"name": "Default"}}}}})
        );
        let dbg = format!("{a:?}");
        assert!(!dbg.contains("s3cr"), "{dbg}");
    }

    fn headers(raw: &str) -> Headers {
        let l = Limits::default();
        let (head, _) = HeadScanner::new()
            .parse_response(raw.as_bytes(), Method::Post, &l)
            .unwrap()
            .unwrap();
        head.headers
    }

    const CATALOG: &str = r#"{"token": {"issued_at": "2026-11-25T22:59:59.000000Z",
        "expires_at": "2026-11-25T23:59:59.000000Z", "methods": ["password"],
        "catalog": [
          {"type": "identity", "endpoints": [{"interface": "public", "url": "http://10.0.0.1:5000"}]},
          {"type": "network", "name": "neutron", "endpoints": [
             {"interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "http://10.0.0.9:9696"},
             {"interface": "internal", "region_id": "RegionTwo", "url": "http://10.2.0.2:9696"},
             {"interface": "internal", "region_id": "RegionOne", "url": "http://10.1.0.2:9696/"},
             {"interface": "admin", "region": "RegionOne", "url": "http://10.1.0.3:9696"},
             {"interface": "internal", "region_id": null, "url": null}]}]}}"#;

    #[test]
    fn issued_tokens_and_catalog_choice() {
        let h = headers("HTTP/1.1 201 Created\r\nX-Subject-Token: gAAAAAB\r\n\r\n");
        let pick = |interface, region| {
            parse_issued(
                &h,
                CATALOG.as_bytes(),
                Some(CatalogChoice { interface, region }),
            )
        };
        let got = pick("public", None).unwrap();
        assert_eq!(got.token, "gAAAAAB");
        assert_eq!(got.lifetime, Duration::from_secs(3600));
        assert_eq!(got.neutron_url.as_deref(), Some("http://10.0.0.9:9696"));
        let url = |i, r| pick(i, r).map(|x| x.neutron_url.unwrap_or_default());
        assert_eq!(
            url("internalURL", Some("RegionOne")).as_deref(),
            Ok("http://10.1.0.2:9696/")
        );
        assert_eq!(url("internal", None).as_deref(), Ok("http://10.2.0.2:9696"));
        assert_eq!(
            url("admin", Some("RegionOne")).as_deref(),
            Ok("http://10.1.0.3:9696")
        );
        assert_eq!(
            url("public", Some("RegionTwo")),
            Err(KeystoneError::NoNetworkEndpoint {
                interface: "public".into(),
                region: Some("RegionTwo".into())
            })
        );
        // Without a catalog request the catalog is not even looked at.
        let got = parse_issued(&h, CATALOG.as_bytes(), None).unwrap();
        assert_eq!(got.neutron_url, None);
    }

    #[test]
    fn bad_token_answers() {
        let body = CATALOG.as_bytes();
        let any = Some(CatalogChoice {
            interface: "public",
            region: None,
        });
        let cases: &[(&str, &[u8], &str)] = &[
            ("HTTP/1.1 201 Created\r\n\r\n", body, "no X-Subject-Token"),
            (
                "HTTP/1.1 201 Created\r\nX-Subject-Token: a\r\nX-Subject-Token: b\r\n\r\n",
                body,
                "several",
            ),
            (
                "HTTP/1.1 201 Created\r\nX-Subject-Token: \r\n\r\n",
                body,
                "empty",
            ),
            (
                "HTTP/1.1 201 Created\r\nX-Subject-Token: a b\r\n\r\n",
                body,
                "visible ASCII",
            ),
            ("HTTP/1.1 201 Created\r\nX-Subject-Token: a\r\n\r\n", b"{", "JSON"),
            (
                "HTTP/1.1 201 Created\r\nX-Subject-Token: a\r\n\r\n",
                br#"{"token": {"issued_at": "x", "expires_at": "2026-11-25T23:59:59Z"}}"#,
                "issued_at",
            ),
            (
                "HTTP/1.1 201 Created\r\nX-Subject-Token: a\r\n\r\n",
                br#"{"token": {"issued_at": "2026-11-25T23:59:59Z", "expires_at": "2026-11-25T23:59:59Z"}}"#,
                "no network (Neutron) service",
            ),
        ];
        for (head, body, word) in cases {
            let e = parse_issued(&headers(head), body, any).unwrap_err();
            assert!(e.to_string().contains(word), "{head:?}: {e}");
        }
        // An already-expired token has lifetime zero, not an error.
        let got = parse_issued(
            &headers("HTTP/1.1 201 Created\r\nX-Subject-Token: a\r\n\r\n"),
            br#"{"token": {"issued_at": "2026-11-25T23:59:59Z", "expires_at": "2026-11-25T23:00:00Z"}}"#,
            None,
        )
        .unwrap();
        assert_eq!(got.lifetime, Duration::ZERO);
    }
}
