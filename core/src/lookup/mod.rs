//! Lookup backends: who is `ip` behind router R (or on network N)?
//!
//! [`NeutronClient`] asks the Neutron API the questions Neutron's own metadata agent asks
//! (reference §B2), authenticating with Keystone v3 when configured. It is a sans-IO state
//! machine like the rest of the core: it asks the runtime to open TCP connections
//! ([`ClientAction::Connect`]), offers request bytes through
//! [`NeutronClient::pending_write`], takes the response bytes in [`NeutronClient::handle`],
//! and reports answers as [`ClientEvent`]s. Single-flight per key is the cache's job
//! ([`crate::cache::LookupCache`]); this client assumes at most one query per key at a time.
//!
//! Limitation: the core never resolves host names. Configured URLs are resolved by the runtime
//! at startup ([`HttpTarget::parse_resolved`]); a Neutron URL found in the Keystone catalog must
//! have an IP-literal host, or every query fails with an error saying so — set `neutron_url`
//! explicitly in that case.

mod address;
mod error;
mod exchange;
pub mod keystone;
pub mod neutron;
pub mod ovn;
pub mod url;

pub use address::{port_search, PortSearch};
pub use error::{ExchangeError, KeystoneError, LookupError, PortListError};
pub use exchange::MAX_RESPONSE_BODY;
pub use keystone::KeystoneAuth;
pub use neutron::{BackendStats, ClientAction, ClientEvent, NeutronClient, NeutronConfig, ReqId};
pub use ovn::{OvnClient, OvnConfig, OvnStats};
pub use url::{HttpTarget, HttpUrl, UrlError};

/// `fa:16:3e:00:00:01`: lowercase, colon-separated, as Neutron stores `mac_address`.
pub(crate) fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_format() {
        assert_eq!(
            format_mac([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]),
            "fa:16:3e:12:34:56"
        );
    }
}
