//! The node's blocking OVSDB client (`bins/src/provision/ovsdb.rs`, which provisions and
//! registers) over `ssl:` against a real `ovsdb-server` serving the Southbound schema on
//! `pssl:` only, with certificates made here by rcgen: a CA that signed the server's and the
//! client's certificates, and a CA nobody trusts. No root needed.

mod common;
// The binary's blocking one-shot client, as the node uses it.
#[cfg(feature = "tls")]
#[path = "../src/provision/ovsdb.rs"]
mod ovsdb_client;

#[cfg(feature = "tls")]
mod with_tls {
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    use mdproxy_core::ovsdb::transact::SOUTHBOUND;
    use mdproxy_core::tls::{ClientTls, Identity, ServerAuth, WallClock};
    use rcgen::KeyPair;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use serde_json::json;

    use crate::common::ovn::SslSb;
    use crate::common::pki::{leaf, new_ca, write_leaf, Ca};
    use crate::common::TempDir;
    use crate::ovsdb_client;

    /// The client configuration the node builds from `--ovn-sb-*` (the CA, not the name).
    fn client(ca: &Ca, cert: CertificateDer<'static>, key: &KeyPair) -> ovsdb_client::Tls {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let clock = WallClock::new(Instant::now(), unix);
        let identity = Identity {
            chain: vec![cert],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        };
        let auth = ServerAuth::RootsAnyName(vec![ca.der().clone()]);
        let tls = ClientTls::new(auth, Some(identity), clock).unwrap();
        tls.rustls_config(Instant::now())
    }

    #[test]
    fn the_provisioning_client_speaks_ssl_to_a_real_southbound() {
        let dir = TempDir::new();
        let ca = new_ca("mdproxy test CA");
        let sb_files = write_leaf(&dir, &ca, "sb", "ovsdb-server");
        let Some(sb) = SslSb::start(&dir, &sb_files) else {
            return;
        };
        let (_, client_cert, client_key) = leaf(&ca, "ovn-metadata id:test");
        let tls = client(&ca, client_cert, &client_key);

        let select = json!([SOUTHBOUND, {"op": "select", "table": "SB_Global", "where": []}]);
        let mut c = ovsdb_client::Client::connect(&sb.remote, Some(&tls))
            .unwrap_or_else(|e| panic!("connect over ssl: {e}"));
        let reply = c.transact(select.clone()).expect("an answer over ssl");
        let rows = reply.expect("no RPC error");
        assert!(rows[0]["rows"].is_array(), "{rows}");
        // Kept open, the session answers again (the framing goes on over TLS).
        assert!(c.transact(select.clone()).expect("a second answer").is_ok());

        // Without the SSL files the remote is refused, saying what it needs.
        let refused = ovsdb_client::Client::connect(&sb.remote, None).err();
        let refused = refused.expect("ssl: without TLS files");
        assert!(refused.contains("--ovn-sb-private-key"), "{refused}");

        // A server whose CA we do not trust: the handshake fails, and so does the connect.
        let other = new_ca("nobody's CA");
        let (_, cert, key) = leaf(&other, "ovn-metadata id:test");
        let distrusting = client(&other, cert, &key);
        let failed = ovsdb_client::Client::connect(&sb.remote, Some(&distrusting))
            .and_then(|mut c| c.transact(select).map(|_| ()));
        assert!(failed.is_err(), "a server of an untrusted CA answered");
    }
}
