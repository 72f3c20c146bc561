//! Why a backend lookup failed, per layer: one exchange ([`ExchangeError`]), Keystone's answer
//! ([`KeystoneError`]), Neutron's port lists ([`PortListError`]), and the lookup as a whole
//! ([`LookupError`], what [`ClientEvent::Failed`](super::ClientEvent::Failed) carries).
//!
//! The texts are the log lines operators have always read; the variants let callers (and
//! tests) tell a full queue from a refused token without reading them.

use std::fmt;
use std::time::Duration;

use crate::http::HttpError;
use crate::tls::TlsError;

use super::url::UrlError;

/// Why one HTTP exchange with Keystone or Neutron failed.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeError {
    /// The peer refused the connection.
    Refused,
    /// The connection could not be made for another reason.
    ConnectFailed,
    /// The connection broke (reset, a socket error).
    Broken,
    /// No complete answer within the backend timeout (connect included).
    Timeout(Duration),
    /// The response head breaks a framing rule.
    BadHead(HttpError),
    /// The response body breaks a framing rule, or ended early.
    BadBody(HttpError),
    /// `101 Switching Protocols`: no backend of ours upgrades.
    Upgrade,
    /// The peer closed before the response head was complete.
    ClosedEarly,
    /// The TLS session of the connection failed.
    Tls(TlsError),
    /// A bug of ours: the response was complete before its head was (never expected).
    NoHead,
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Refused => f.write_str("connection refused"),
            ExchangeError::ConnectFailed => f.write_str("connect failed"),
            ExchangeError::Broken => f.write_str("connection broke"),
            ExchangeError::Timeout(t) => write!(f, "no complete answer within {t:?}"),
            ExchangeError::BadHead(e) => write!(f, "bad response: {e}"),
            ExchangeError::BadBody(e) => write!(f, "bad response body: {e}"),
            ExchangeError::Upgrade => f.write_str("unexpected 101 Switching Protocols"),
            ExchangeError::ClosedEarly => {
                f.write_str("connection closed before a complete response")
            }
            ExchangeError::Tls(e) => e.fmt(f),
            ExchangeError::NoHead => f.write_str("internal: response finished without a head"),
        }
    }
}

impl std::error::Error for ExchangeError {}

/// What is wrong with Keystone's answer to the password request (or with the request).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeystoneError {
    /// The request body could not be encoded (serde_json's message).
    Encode(String),
    /// No `X-Subject-Token` field.
    NoSubjectToken,
    /// Several `X-Subject-Token` fields: which one is the token?
    SeveralSubjectTokens,
    /// The token is empty or not visible ASCII (it goes out again in a header of ours).
    BadSubjectToken,
    /// The body is not the token JSON (serde_json's message).
    BadJson(String),
    /// `issued_at` or `expires_at` (`field`) is not an ISO 8601 time.
    BadTime {
        /// `issued_at` or `expires_at`.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// The catalog has a network service, but no endpoint of the wanted interface (and
    /// region).
    NoNetworkEndpoint {
        /// `public`, `internal` or `admin`.
        interface: String,
        /// The region asked for, if one was.
        region: Option<String>,
    },
    /// The catalog has no network service at all.
    NoNetworkService,
}

impl fmt::Display for KeystoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeystoneError::Encode(e) => write!(f, "cannot encode the Keystone request: {e}"),
            KeystoneError::NoSubjectToken => {
                f.write_str("Keystone's answer has no X-Subject-Token")
            }
            KeystoneError::SeveralSubjectTokens => {
                f.write_str("Keystone's answer has several X-Subject-Token fields")
            }
            KeystoneError::BadSubjectToken => {
                f.write_str("Keystone's X-Subject-Token is empty or not visible ASCII")
            }
            KeystoneError::BadJson(e) => {
                write!(f, "Keystone's token body is not the expected JSON: {e}")
            }
            KeystoneError::BadTime { field, value } => write!(
                f,
                "Keystone's {field} `{}` is not an ISO 8601 time",
                value.escape_debug()
            ),
            KeystoneError::NoNetworkEndpoint { interface, region } => {
                write!(
                    f,
                    "Keystone's catalog has no `{interface}` network endpoint"
                )?;
                match region {
                    Some(r) => write!(f, " in region `{r}`"),
                    None => Ok(()),
                }
            }
            KeystoneError::NoNetworkService => {
                f.write_str("Keystone's catalog has no network (Neutron) service; set neutron_url")
            }
        }
    }
}

impl std::error::Error for KeystoneError {}

/// What is wrong with a Neutron port list.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortListError {
    /// Not the expected JSON (serde_json's message).
    BadJson(String),
    /// The one port found has no project to name.
    NoProject,
    /// `device_id` or `project_id` would not be a safe header value one hop later.
    NotPlainId,
}

impl fmt::Display for PortListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortListError::BadJson(e) => write!(f, "not the expected JSON: {e}"),
            PortListError::NoProject => {
                f.write_str("the port has neither project_id nor tenant_id")
            }
            PortListError::NotPlainId => {
                f.write_str("device_id or project_id is not a plain ASCII identifier")
            }
        }
    }
}

impl std::error::Error for PortListError {}

/// Why the backend could not answer a lookup. `what` fields name the request
/// (`GET https://host/path`, no query string, no credentials).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// Every query slot is busy and the queue behind them is full.
    QueueFull {
        /// Lookups already waiting.
        waiting: usize,
        /// Query slots.
        slots: usize,
    },
    /// The lookup waited the backend timeout for a query slot.
    NoSlot {
        /// The backend timeout.
        timeout: Duration,
        /// Queries running then.
        in_flight: usize,
    },
    /// Neither `neutron_url` nor Keystone credentials: nowhere to ask.
    NotConfigured,
    /// The OVN Southbound replica has not been loaded yet: no monitor has answered since the
    /// agent started.
    NotSynced {
        /// What the session is doing (e.g. "connecting to tcp:192.0.2.1:6642").
        state: String,
    },
    /// A Keystone authentication was needed without Keystone credentials.
    NoKeystone,
    /// An `https` URL without TLS settings.
    NoTlsSettings {
        /// `https://host/prefix`.
        url: String,
    },
    /// An `https` URL whose TLS settings cannot be made (a bad name, a build without TLS).
    Tls {
        /// `https://host/prefix`.
        url: String,
        /// Why.
        error: TlsError,
    },
    /// The exchange failed.
    Exchange {
        /// The request.
        what: String,
        /// Why.
        error: ExchangeError,
    },
    /// The backend answered with a status other than 2xx.
    Status {
        /// The request.
        what: String,
        /// The status.
        status: u16,
        /// What the status likely means here (` (credentials refused)`), or empty.
        hint: &'static str,
        /// A printable excerpt of the body.
        body: String,
    },
    /// The router's interface port list is unusable.
    RouterPorts {
        /// The request.
        what: String,
        /// Why.
        error: PortListError,
    },
    /// The port list is unusable.
    Ports {
        /// The request.
        what: String,
        /// Why.
        error: PortListError,
    },
    /// Keystone's answer is unusable.
    Keystone(KeystoneError),
    /// The catalog's Neutron URL is not one we can use.
    CatalogUrl {
        /// The URL as the catalog gave it.
        url: String,
        /// Why the URL parser refused it.
        error: UrlError,
    },
    /// The Neutron endpoint found in the Keystone catalog is unusable.
    CatalogEndpoint(Box<LookupError>),
    /// Keystone gave a token but no Neutron endpoint.
    NoNeutronEndpoint,
    /// Getting a Keystone token failed, so every lookup waiting for it fails.
    AuthFailed(Box<LookupError>),
}

impl LookupError {
    /// The status the agent answers a client whose lookup failed with (DESIGN.md: a failing
    /// backend is 503, and clients retry).
    pub fn status(&self) -> u16 {
        503
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::QueueFull { waiting, slots } => write!(
                f,
                "{waiting} lookups are waiting for one of {slots} Neutron query slots"
            ),
            LookupError::NoSlot { timeout, in_flight } => write!(
                f,
                "no Neutron query slot free within {timeout:?} ({in_flight} in flight)"
            ),
            LookupError::NotConfigured => {
                f.write_str("neither neutron_url nor Keystone credentials are configured")
            }
            LookupError::NoKeystone => f.write_str("no Keystone credentials configured"),
            LookupError::NotSynced { state } => {
                write!(f, "the OVN Southbound replica is not loaded yet ({state})")
            }
            LookupError::NoTlsSettings { url } => write!(f, "{url}: no TLS settings configured"),
            LookupError::Tls { url, error } => write!(f, "{url}: {error}"),
            LookupError::Exchange { what, error } => write!(f, "{what}: {error}"),
            LookupError::Status {
                what,
                status,
                hint,
                body,
            } => write!(f, "{what} answered {status}{hint}: {body}"),
            LookupError::RouterPorts { what, error } => write!(f, "{what}: router ports: {error}"),
            LookupError::Ports { what, error } => write!(f, "{what}: ports: {error}"),
            LookupError::Keystone(e) => e.fmt(f),
            LookupError::CatalogUrl { url, error } => write!(f, "{url}: {error}"),
            LookupError::CatalogEndpoint(e) => {
                write!(f, "unusable Neutron endpoint in the Keystone catalog: {e}")
            }
            LookupError::NoNeutronEndpoint => f.write_str("no Neutron endpoint"),
            LookupError::AuthFailed(e) => write!(f, "Keystone authentication failed: {e}"),
        }
    }
}

impl std::error::Error for LookupError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts are log lines operators know; a nested failure reads as it always did.
    #[test]
    fn texts() {
        let exchange = LookupError::Exchange {
            what: "POST http://10.0.0.1:5000/v3/auth/tokens".into(),
            error: ExchangeError::Timeout(Duration::from_secs(10)),
        };
        let cases: &[(LookupError, &str)] = &[
            (
                LookupError::AuthFailed(Box::new(exchange)),
                "Keystone authentication failed: POST http://10.0.0.1:5000/v3/auth/tokens: \
                 no complete answer within 10s",
            ),
            (
                LookupError::Status {
                    what: "GET http://n/v2.0/ports".into(),
                    status: 401,
                    hint: " (credentials refused)",
                    body: "no".into(),
                },
                "GET http://n/v2.0/ports answered 401 (credentials refused): no",
            ),
            (
                LookupError::Keystone(KeystoneError::NoNetworkEndpoint {
                    interface: "public".into(),
                    region: Some("RegionTwo".into()),
                }),
                "Keystone's catalog has no `public` network endpoint in region `RegionTwo`",
            ),
            (
                LookupError::Ports {
                    what: "GET http://n/v2.0/ports".into(),
                    error: PortListError::NoProject,
                },
                "GET http://n/v2.0/ports: ports: the port has neither project_id nor tenant_id",
            ),
            (
                LookupError::CatalogEndpoint(Box::new(LookupError::Tls {
                    url: "https://n/".into(),
                    error: TlsError::NotBuilt,
                })),
                "unusable Neutron endpoint in the Keystone catalog: https://n/: this build has \
                 no TLS",
            ),
            (
                LookupError::CatalogUrl {
                    url: "ftp://n/".into(),
                    error: UrlError::Scheme,
                },
                "ftp://n/: not an http:// or https:// URL",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), *want);
            assert_eq!(e.status(), 503);
        }
    }
}
