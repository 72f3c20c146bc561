//! TLS as a per-socket layer of the endpoint (`endpoint.rs`, which this module does not
//! import): rustls, driven in memory.
//!
//! A socket that must speak TLS gets a session when the endpoint opens or accepts it: the
//! agent's connections to an `https://` metadata server ([`EndpointTls::upstream`]), the Neutron
//! client's exchanges with an `https://` Neutron or Keystone
//! ([`NeutronConfig::tls`](crate::lookup::NeutronConfig::tls)), the connections a server with
//! [`EndpointTls::accept`] accepts. The runtime is not told: it moves bytes as for any socket.
//! The endpoint feeds the bytes it reads into the session (`read_tls`, `process_new_packets`)
//! and hands the plaintext (`reader()`) to the socket's owner; what the owner wants to send goes
//! into `writer()`, and the endpoint's `pending_write` offers the session's ciphertext
//! (`write_tls` into a buffer the session owns). rustls never sees a socket.
//!
//! What an owner sees of a session:
//! - a client session hides its handshake: the owner hears `Input::Connected` once the handshake
//!   is done (so the connect timeout covers it), and its request waits until then;
//! - a TLS failure (certificate, host name, an alert from the peer) reaches the owner with its
//!   reason: the agent answers its client 503 and logs the reason, a Neutron or Keystone
//!   exchange fails with it. A server session that fails sends its alert and ends like a
//!   connection the client closed;
//! - the peer's `close_notify`, or a TCP EOF after the handshake, is `Input::Eof`;
//! - back-pressure holds: plaintext is taken from the owner only while the session's unsent
//!   ciphertext is below [`HIGH_WATER`].
//!
//! # Time
//!
//! rustls checks certificate validity against the wall clock, which it asks its `TimeProvider`
//! (`rustls::time_provider`) for; the default one reads `SystemTime::now()`, a clock read hidden
//! inside the core. The configurations built here use a [`WallClock`] instead: it answers with
//! the wall-clock time derived from the `now: Instant` of the endpoint's latest input and an
//! anchor (an `Instant` and the Unix time at that instant) that the binary takes once at startup.
//! So the core reads no clock, and tests run handshakes at any date they choose (an expired
//! certificate is a matter of moving the anchor). The price: a step of the system clock after
//! startup (NTP fixing a wrong boot-time clock) is not seen until the process restarts; slewing
//! is, since the monotonic clock is slewed with it. Units start after `time-sync.target`.
//!
//! # Randomness
//!
//! A handshake needs unpredictable bytes (randoms, key shares); ring takes them from the
//! operating system (`getrandom`) itself. That is accepted as part of the cryptographic
//! provider: it decides no protocol step, and the plaintext either side sees does not depend on
//! it.

#[cfg(feature = "tls")]
pub use on::*;

#[cfg(not(feature = "tls"))]
pub use off::*;

use std::fmt;

use crate::socket::SockId;

pub(crate) mod shuttle;

/// Why TLS settings cannot be made, or why a session failed. rustls' own errors arrive as
/// their text: the type is the same in a build without the `tls` feature, where rustls is
/// absent.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsError {
    /// This build has no TLS (the `tls` feature is off).
    NotBuilt,
    /// No certificate was given where `what` (`CA`, `client CA`) certificates are needed.
    NoCertificate(&'static str),
    /// None of the `what` certificates given can be used as a trust anchor.
    NoUsableCertificate {
        /// `CA` or `client CA`.
        what: &'static str,
        /// How many were given.
        count: usize,
    },
    /// rustls refused part of a configuration: `what` names the part (`TLS versions`,
    /// `client certificate`, `client CA`, `server certificate`).
    Config {
        /// The part.
        what: &'static str,
        /// rustls' message.
        message: String,
    },
    /// A host that is neither a DNS name nor an IP address.
    BadName(String),
    /// rustls could not start a session (rustls' message).
    Start(String),
    /// A session failed: a certificate, a host name, an alert, garbage from the peer.
    Session {
        /// The server's name for a client session; empty for a server session.
        peer: String,
        /// It failed before the handshake was done.
        handshake: bool,
        /// rustls' message (or what the peer did).
        message: String,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::NotBuilt => f.write_str("this build has no TLS"),
            TlsError::NoCertificate(what) => write!(f, "no {what} certificate given"),
            TlsError::NoUsableCertificate { what, count } => {
                write!(f, "none of the {count} {what} certificates is usable")
            }
            TlsError::Config { what, message } => write!(f, "{what}: {message}"),
            TlsError::BadName(name) => write!(f, "`{name}` is not a valid TLS server name"),
            TlsError::Start(message) => write!(f, "cannot start a TLS session: {message}"),
            TlsError::Session {
                peer,
                handshake,
                message,
            } => {
                let stage = if *handshake { " handshake" } else { "" };
                match peer.is_empty() {
                    true => write!(f, "TLS{stage} failed: {message}"),
                    false => write!(f, "TLS{stage} with {peer} failed: {message}"),
                }
            }
        }
    }
}

impl std::error::Error for TlsError {}

/// Above this many unsent ciphertext bytes, no more plaintext is taken from a socket's owner
/// (the connection's own high-water mark then holds the rest back).
pub const HIGH_WATER: usize = 64 * 1024;

/// TLS on an endpoint's sockets; none by default (and always none in a build without the
/// `tls` feature, where these types have no values).
#[derive(Clone, Debug, Default)]
pub struct EndpointTls {
    /// Accepted connections speak TLS with these settings (`mdproxy server --tls-cert`).
    pub accept: Option<ServerTls>,
    /// Connections to the upstream (the agent's to the metadata server) speak TLS to this peer.
    pub upstream: Option<TlsTarget>,
}

/// What one read did to a session.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Decrypted application data, for the owner.
    pub(crate) plain: Vec<u8>,
    /// The handshake finished with this read.
    pub(crate) established: bool,
    /// The peer sent `close_notify`: it sends nothing more.
    pub(crate) closed: bool,
    /// The session failed (the reason is for the log and the owner).
    pub(crate) failed: Option<TlsError>,
}

/// What a TCP EOF means for a session.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) enum EofMeaning {
    /// Tell the owner.
    Eof,
    /// The owner already heard of the end (`close_notify`, a failure).
    Nothing,
    /// The peer left during the handshake.
    Failed(TlsError),
}

/// Sessions by socket (kept by the endpoint).
pub(crate) type Sessions = std::collections::BTreeMap<SockId, Session>;

#[cfg(feature = "tls")]
mod on {
    use std::collections::VecDeque;
    use std::fmt;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{self, CryptoProvider, WebPkiSupportedAlgorithms};
    pub use rustls::pki_types;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::time_provider::TimeProvider;
    use rustls::{
        CertificateError, ClientConfig, ClientConnection, Connection, DigitallySignedStruct,
        RootCertStore, ServerConfig, ServerConnection, SignatureScheme,
    };

    use super::{EofMeaning, Received, TlsError};

    /// The wall clock as rustls sees it in this core: the Unix time of an anchor plus the
    /// monotonic time elapsed since, up to the latest `now` an endpoint was given. See the
    /// [module docs](super#time).
    pub struct WallClock {
        anchor: Instant,
        anchor_unix: Duration,
        /// Seconds since the Unix epoch at the latest `now` seen (never goes back).
        latest: AtomicU64,
    }

    impl WallClock {
        /// A clock at which `anchor` was `unix` after the Unix epoch. The binary passes
        /// `Instant::now()` and `SystemTime::now()` taken together; a test passes any date.
        pub fn new(anchor: Instant, unix: Duration) -> Arc<WallClock> {
            Arc::new(WallClock {
                anchor,
                anchor_unix: unix,
                latest: AtomicU64::new(unix.as_secs()),
            })
        }

        /// Moves the clock to `now` (an endpoint's input time). Workers share one clock; it
        /// keeps the latest time any of them reported.
        pub(crate) fn advance(&self, now: Instant) {
            let elapsed = now.saturating_duration_since(self.anchor);
            let secs = self.anchor_unix.saturating_add(elapsed).as_secs();
            self.latest.fetch_max(secs, Ordering::Relaxed);
        }
    }

    impl fmt::Debug for WallClock {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("WallClock")
                .field("unix_secs", &self.latest.load(Ordering::Relaxed))
                .finish()
        }
    }

    impl TimeProvider for WallClock {
        fn current_time(&self) -> Option<UnixTime> {
            let secs = self.latest.load(Ordering::Relaxed);
            Some(UnixTime::since_unix_epoch(Duration::from_secs(secs)))
        }
    }

    /// How a client checks the server's certificate.
    #[derive(Clone, Debug)]
    pub enum ServerAuth {
        /// The chain must lead to one of these CA certificates and name the host.
        Roots(Vec<CertificateDer<'static>>),
        /// No check at all (`insecure = true`): any certificate, any name. The handshake
        /// signatures are still verified against the certificate presented.
        Insecure,
        /// The chain must lead to one of these CA certificates; the name it carries is not
        /// looked at. This is how OVS and OVN check their peers (`stream-ssl`: signed by the
        /// CA, and nothing about names), and what their PKI expects: `ovs-pki` certificates
        /// name a component (`CN=ovn-controller id:…`), not the address it is reached at.
        RootsAnyName(Vec<CertificateDer<'static>>),
    }

    /// A certificate chain (leaf first) and its private key: a server's, or a client's for
    /// mutual TLS.
    #[derive(Debug)]
    pub struct Identity {
        /// Leaf first, then intermediates.
        pub chain: Vec<CertificateDer<'static>>,
        /// The leaf's key (PKCS#8, PKCS#1 or SEC1).
        pub key: PrivateKeyDer<'static>,
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(crypto::ring::default_provider())
    }

    fn roots(
        certs: Vec<CertificateDer<'static>>,
        what: &'static str,
    ) -> Result<RootCertStore, TlsError> {
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(certs);
        match (added, ignored) {
            (0, 0) => Err(TlsError::NoCertificate(what)),
            (0, count) => Err(TlsError::NoUsableCertificate { what, count }),
            _ => Ok(store),
        }
    }

    /// rustls refused `what` of a configuration.
    fn config(what: &'static str, e: impl fmt::Display) -> TlsError {
        TlsError::Config {
            what,
            message: e.to_string(),
        }
    }

    /// The client side of TLS: verification, an optional client certificate, and the clock.
    /// Cheap to clone (shared configuration).
    #[derive(Clone)]
    pub struct ClientTls {
        config: Arc<ClientConfig>,
        clock: Arc<WallClock>,
        insecure: bool,
    }

    impl ClientTls {
        /// A client configuration: TLS 1.3 and 1.2, ring's algorithms, `auth` for the server's
        /// certificate, `identity` presented when the server asks for a certificate.
        pub fn new(
            auth: ServerAuth,
            identity: Option<Identity>,
            clock: Arc<WallClock>,
        ) -> Result<ClientTls, TlsError> {
            let provider = provider();
            let algorithms = provider.signature_verification_algorithms;
            let time: Arc<dyn TimeProvider> = clock.clone();
            let builder = ClientConfig::builder_with_details(provider.clone(), time)
                .with_safe_default_protocol_versions()
                .map_err(|e| config("TLS versions", e))?;
            let insecure = matches!(auth, ServerAuth::Insecure);
            let builder = match auth {
                ServerAuth::Roots(certs) => builder.with_root_certificates(roots(certs, "CA")?),
                ServerAuth::RootsAnyName(certs) => {
                    let store = Arc::new(roots(certs, "CA")?);
                    let verifier =
                        WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                            .build()
                            .map_err(|e| config("CA certificates", e))?;
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
                }
                ServerAuth::Insecure => builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyServer(algorithms))),
            };
            let config = match identity {
                Some(id) => builder
                    .with_client_auth_cert(id.chain, id.key)
                    .map_err(|e| config("client certificate", e))?,
                None => builder.with_no_client_auth(),
            };
            Ok(ClientTls {
                config: Arc::new(config),
                clock,
                insecure,
            })
        }

        /// Whether certificates go unchecked.
        pub fn is_insecure(&self) -> bool {
            self.insecure
        }

        /// The rustls configuration, for a client the binary drives itself (the node's
        /// blocking OVSDB client); `now` first moves the certificates' clock, as an
        /// endpoint's input time does.
        pub fn rustls_config(&self, now: Instant) -> Arc<ClientConfig> {
            self.clock.advance(now);
            self.config.clone()
        }
    }

    impl fmt::Debug for ClientTls {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ClientTls")
                .field("insecure", &self.insecure)
                .field(
                    "client_cert",
                    &self.config.client_auth_cert_resolver.has_certs(),
                )
                .finish_non_exhaustive()
        }
    }

    /// Two handles on the same configuration.
    impl PartialEq for ClientTls {
        fn eq(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.config, &other.config)
        }
    }

    impl Eq for ClientTls {}

    /// The wall clocks of an endpoint's TLS settings, moved to each input's `now` before any
    /// session is read or started (a session start reads the time too: for the age of a
    /// resumption ticket).
    #[derive(Debug, Default)]
    pub(crate) struct Clocks(Vec<Arc<WallClock>>);

    impl Clocks {
        pub(crate) fn new(endpoint: &super::EndpointTls, backend: Option<&ClientTls>) -> Clocks {
            let mut clocks: Vec<Arc<WallClock>> = Vec::new();
            let all = [
                endpoint.accept.as_ref().map(|t| &t.clock),
                endpoint.upstream.as_ref().map(|t| &t.client.clock),
                backend.map(|t| &t.clock),
            ];
            for c in all.into_iter().flatten() {
                if !clocks.iter().any(|k| Arc::ptr_eq(k, c)) {
                    clocks.push(c.clone());
                }
            }
            Clocks(clocks)
        }

        pub(crate) fn advance(&self, now: Instant) {
            for c in &self.0 {
                c.advance(now);
            }
        }
    }

    /// One server to speak TLS to: the client settings and the name its certificate must
    /// carry (sent as SNI when it is a DNS name).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct TlsTarget {
        client: ClientTls,
        name: ServerName<'static>,
    }

    impl TlsTarget {
        /// `name` is the URL's host: a DNS name or an IP address (IPv6 without brackets).
        pub fn new(client: ClientTls, name: &str) -> Result<TlsTarget, TlsError> {
            let name = ServerName::try_from(name.to_owned())
                .map_err(|_| TlsError::BadName(name.to_owned()))?;
            Ok(TlsTarget { client, name })
        }

        /// The server name, for messages.
        pub fn name(&self) -> String {
            self.name.to_str().into_owned()
        }

        /// The client settings.
        pub fn client(&self) -> &ClientTls {
            &self.client
        }
    }

    /// The server side of TLS: the server's certificate and key and, for mutual TLS, the CAs
    /// a client certificate must lead to. Cheap to clone.
    #[derive(Clone)]
    pub struct ServerTls {
        config: Arc<ServerConfig>,
        clock: Arc<WallClock>,
        client_auth: bool,
    }

    impl ServerTls {
        /// A server configuration: TLS 1.3 and 1.2, ring's algorithms; with `client_roots`,
        /// every client must present a certificate leading to one of them.
        pub fn new(
            identity: Identity,
            client_roots: Option<Vec<CertificateDer<'static>>>,
            clock: Arc<WallClock>,
        ) -> Result<ServerTls, TlsError> {
            let provider = provider();
            let time: Arc<dyn TimeProvider> = clock.clone();
            let builder = ServerConfig::builder_with_details(provider.clone(), time)
                .with_safe_default_protocol_versions()
                .map_err(|e| config("TLS versions", e))?;
            let client_auth = client_roots.is_some();
            let builder = match client_roots {
                Some(certs) => {
                    let store = Arc::new(roots(certs, "client CA")?);
                    let verifier = WebPkiClientVerifier::builder_with_provider(store, provider)
                        .build()
                        .map_err(|e| config("client CA", e))?;
                    builder.with_client_cert_verifier(verifier)
                }
                None => builder.with_no_client_auth(),
            };
            let config = builder
                .with_single_cert(identity.chain, identity.key)
                .map_err(|e| config("server certificate", e))?;
            Ok(ServerTls {
                config: Arc::new(config),
                clock,
                client_auth,
            })
        }

        /// Whether clients must present a certificate.
        pub fn requires_client_cert(&self) -> bool {
            self.client_auth
        }
    }

    impl fmt::Debug for ServerTls {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ServerTls")
                .field("client_auth", &self.client_auth)
                .finish_non_exhaustive()
        }
    }

    /// `insecure = true`: every certificate is accepted for every name; the handshake
    /// signatures must still match the certificate presented.
    #[derive(Debug)]
    struct AnyServer(WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }

    /// [`ServerAuth::RootsAnyName`]: webpki's verdict, but for a name mismatch. webpki checks
    /// the chain first and the name last, so a name error means the chain was good.
    #[derive(Debug)]
    struct AnyName(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for AnyName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let verdict = self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
            match verdict {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    /// One socket's TLS session and the ciphertext it has for the socket.
    pub(crate) struct Session {
        /// `None`: rustls refused to start one (the reason is in `failure`).
        conn: Option<Connection>,
        clock: Arc<WallClock>,
        /// A client session (else a server one).
        client: bool,
        /// The server's name for a client session (for messages); empty for a server session.
        peer: String,
        /// Ciphertext for the socket; `out[sent..]` is still to be written.
        out: Vec<u8>,
        sent: usize,
        /// Ciphertext bytes made and written since the start (stream offsets).
        produced: u64,
        written: u64,
        /// The owner's plaintext inside the session whose ciphertext is not all written yet:
        /// (offset where its ciphertext ends, plaintext bytes), oldest first.
        unacked: VecDeque<(u64, usize)>,
        /// Sum of `unacked`'s plaintext bytes.
        fed: usize,
        /// Plaintext bytes now on the wire (or dropped by a failed session), not yet reported
        /// to the owner (see [`Session::take_acked`]).
        acked: usize,
        established: bool,
        /// Why the session failed; it takes and gives no more data.
        failure: Option<TlsError>,
        /// The owner was told the stream ended.
        ended: bool,
    }

    impl fmt::Debug for Session {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Session")
                .field("peer", &self.peer)
                .field("unsent", &self.backlog())
                .field("established", &self.established)
                .field("failure", &self.failure)
                .finish_non_exhaustive()
        }
    }

    impl Session {
        /// A client session; its ClientHello waits in the buffer for the connection.
        pub(crate) fn client(target: &TlsTarget) -> Session {
            let peer = target.name();
            let conn = ClientConnection::new(target.client.config.clone(), target.name.clone());
            let clock = target.client.clock.clone();
            Session::start(conn.map(Connection::from), clock, true, peer)
        }

        /// A server session for a connection just accepted.
        pub(crate) fn server(tls: &ServerTls) -> Session {
            let conn = ServerConnection::new(tls.config.clone());
            let clock = tls.clock.clone();
            Session::start(conn.map(Connection::from), clock, false, String::new())
        }

        fn start(
            conn: Result<Connection, rustls::Error>,
            clock: Arc<WallClock>,
            client: bool,
            peer: String,
        ) -> Session {
            let (conn, failure) = match conn {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(TlsError::Start(e.to_string()))),
            };
            let mut s = Session {
                conn,
                clock,
                client,
                peer,
                out: Vec::new(),
                sent: 0,
                produced: 0,
                written: 0,
                unacked: VecDeque::new(),
                fed: 0,
                acked: 0,
                established: false,
                failure,
                ended: false,
            };
            s.flush();
            s
        }

        /// Why the session cannot be used, if it cannot.
        pub(crate) fn failure(&self) -> Option<&TlsError> {
            self.failure.as_ref()
        }

        /// Still handshaking (and not failed): the owner must not be asked about reads.
        pub(crate) fn handshaking(&self) -> bool {
            !self.established && self.failure.is_none()
        }

        /// Whether this is a client session.
        pub(crate) fn is_client(&self) -> bool {
            self.client
        }

        fn describe(&self, message: String) -> TlsError {
            TlsError::Session {
                peer: self.peer.clone(),
                handshake: !self.established,
                message,
            }
        }

        fn fail(&mut self, why: TlsError) -> TlsError {
            self.failure = Some(why.clone());
            // What the owner handed over will never arrive: done with, as far as it knows.
            self.acked += std::mem::take(&mut self.fed);
            self.unacked.clear();
            // The alert rustls queued for the peer.
            self.flush();
            why
        }

        /// Takes ciphertext read from the socket at `now`.
        pub(crate) fn read(&mut self, now: std::time::Instant, mut data: &[u8]) -> Received {
            let mut r = Received::default();
            if self.failure.is_some() || self.ended {
                return r; // nothing after the end counts
            }
            let Some(conn) = self.conn.as_mut() else {
                return r;
            };
            self.clock.advance(now);
            let mut error = None;
            while !data.is_empty() {
                match conn.read_tls(&mut data) {
                    Ok(0) => break, // close_notify came: the rest is ignored
                    Ok(_) => {}
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
                match conn.process_new_packets() {
                    Ok(state) => {
                        // Ends in WouldBlock (more may come) or Ok(0) (close_notify); either
                        // way every decrypted byte is in `plain`.
                        let _ = conn.reader().read_to_end(&mut r.plain);
                        if state.peer_has_closed() {
                            r.closed = true;
                            break;
                        }
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            if !self.established && !conn.is_handshaking() && error.is_none() {
                self.established = true;
                r.established = true;
            }
            if r.closed {
                self.ended = true;
            }
            match error {
                Some(e) => {
                    let why = self.describe(e);
                    r.failed = Some(self.fail(why));
                }
                None => self.flush(),
            }
            r
        }

        /// The socket reached EOF. After a failure the owner hears it as a plain EOF (a
        /// server session's owner was not told of the failure; a client session's owner has
        /// closed the socket by then).
        pub(crate) fn eof(&mut self) -> EofMeaning {
            if self.ended {
                return EofMeaning::Nothing;
            }
            if !self.established && self.failure.is_none() {
                let why = self.describe("the peer closed the connection".to_owned());
                return EofMeaning::Failed(self.fail(why));
            }
            self.ended = true;
            EofMeaning::Eof
        }

        /// Takes the owner's plaintext: `plain` is everything the owner has for the socket
        /// (its `pending_write`), of which the session already holds a prefix. Encrypts as much
        /// of the rest as fits under [`super::HIGH_WATER`] of unwritten ciphertext; nothing
        /// while the handshake runs. A failed session takes everything, to drop it. Returns
        /// whether it took anything; the owner learns what is written from
        /// [`Session::take_acked`].
        pub(crate) fn write(&mut self, plain: &[u8]) -> bool {
            let held = self.acked + self.fed;
            let fresh = plain.get(held..).unwrap_or_default();
            if fresh.is_empty() {
                return false;
            }
            let room = super::HIGH_WATER.saturating_sub(self.backlog());
            let conn = match (self.failure.as_ref(), self.conn.as_mut()) {
                (None, Some(conn)) => conn,
                _ => {
                    self.acked += fresh.len();
                    return true;
                }
            };
            if !self.established || room == 0 {
                return false;
            }
            let take = fresh.get(..room).unwrap_or(fresh);
            let n = conn.writer().write(take).unwrap_or(0);
            if n == 0 {
                return false;
            }
            self.flush();
            self.fed += n;
            self.unacked.push_back((self.produced, n));
            true
        }

        /// How many of the owner's plaintext bytes went out on the wire (or were dropped by a
        /// failed session) since the last call: what the owner may now consume.
        pub(crate) fn take_acked(&mut self) -> usize {
            std::mem::take(&mut self.acked)
        }

        /// Says goodbye (`close_notify`) before the owner half-closes the socket.
        pub(crate) fn close_notify(&mut self) {
            if let (Some(conn), None) = (self.conn.as_mut(), &self.failure) {
                conn.send_close_notify();
            }
            self.flush();
        }

        /// Moves rustls' queued records into the buffer the socket is written from.
        fn flush(&mut self) {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            if self.sent == self.out.len() {
                self.out.clear();
                self.sent = 0;
            }
            while conn.wants_write() {
                match conn.write_tls(&mut self.out) {
                    Ok(n) if n > 0 => self.produced += n as u64,
                    _ => break,
                }
            }
        }

        /// Ciphertext to write on the socket.
        pub(crate) fn pending(&self) -> &[u8] {
            self.out.get(self.sent..).unwrap_or_default()
        }

        /// `n` bytes of [`Session::pending`] were written.
        pub(crate) fn consume(&mut self, n: usize) {
            let n = n.min(self.backlog());
            self.written += n as u64;
            while let Some(&(end, len)) = self.unacked.front() {
                if end > self.written {
                    break;
                }
                self.unacked.pop_front();
                self.fed -= len;
                self.acked += len;
            }
            self.sent += n;
            if self.sent == self.out.len() {
                self.out.clear();
                self.sent = 0;
            } else if self.sent > super::HIGH_WATER {
                self.out.drain(..self.sent);
                self.sent = 0;
            }
        }

        /// Ciphertext not yet written.
        pub(crate) fn backlog(&self) -> usize {
            self.out.len() - self.sent
        }
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use std::time::{Duration, Instant};

    use crate::testing::epoch;

    use rcgen::{CertificateParams, KeyPair};

    use super::*;
    use pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    /// A client and a server session for `localhost`, with a self-signed certificate.
    fn pair(t0: Instant) -> (Session, Session) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let clock = WallClock::new(t0, Duration::from_secs(1_780_272_000));
        let id = Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        };
        let server = ServerTls::new(id, None, clock.clone()).unwrap();
        let auth = ServerAuth::Roots(vec![cert.der().clone()]);
        let client = ClientTls::new(auth, None, clock).unwrap();
        let target = TlsTarget::new(client, "localhost").unwrap();
        (Session::client(&target), Session::server(&server))
    }

    /// Whether a client checking with `auth` completes a handshake with a server whose
    /// self-signed certificate names `ovnsb.example`, reached as `127.0.0.1`.
    fn handshakes(auth: impl Fn(pki_types::CertificateDer<'static>) -> ServerAuth) -> bool {
        let now = epoch();
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["ovnsb.example".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let clock = WallClock::new(now, Duration::from_secs(1_780_272_000));
        let id = Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        };
        let server = ServerTls::new(id, None, clock.clone()).unwrap();
        let client = ClientTls::new(auth(cert.der().clone()), None, clock).unwrap();
        let target = TlsTarget::new(client, "127.0.0.1").unwrap();
        let (mut c, mut s) = (Session::client(&target), Session::server(&server));
        for _ in 0..4 {
            hop(now, &mut c, &mut s);
            hop(now, &mut s, &mut c);
        }
        let failed = c.failure().is_some() || s.failure().is_some();
        !failed && !c.handshaking() && !s.handshaking()
    }

    /// OVN's way: the CA must have signed the certificate, whatever name it carries.
    #[test]
    fn roots_any_name_checks_the_chain_not_the_name() {
        assert!(handshakes(|ca| ServerAuth::RootsAnyName(vec![ca])));
        assert!(
            !handshakes(|ca| ServerAuth::Roots(vec![ca])),
            "the name is checked"
        );
        let other = KeyPair::generate().unwrap();
        let other_ca = CertificateParams::new(vec!["ovnsb.example".to_owned()])
            .unwrap()
            .self_signed(&other)
            .unwrap();
        let other_ca = other_ca.der().clone();
        assert!(
            !handshakes(|_| ServerAuth::RootsAnyName(vec![other_ca.clone()])),
            "another CA's certificate is refused"
        );
    }

    /// Writes all of `from`'s ciphertext into `to`; returns the plaintext `to` got.
    fn hop(now: Instant, from: &mut Session, to: &mut Session) -> Received {
        let bytes = from.pending().to_vec();
        from.consume(bytes.len());
        to.read(now, &bytes)
    }

    #[test]
    fn plaintext_counts_as_written_when_its_ciphertext_is() {
        let now = epoch();
        let (mut c, mut s) = pair(now);
        assert!(c.handshaking() && c.is_client() && !s.is_client());
        // Nothing is taken before the handshake.
        assert!(!c.write(b"early"));
        let mut established = false;
        for _ in 0..4 {
            established |= hop(now, &mut c, &mut s).established;
            hop(now, &mut s, &mut c);
        }
        assert!(established && !c.handshaking() && !s.handshaking());
        // 200 KiB from the server's owner, which keeps offering all it has not consumed.
        let data: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        let (mut owner_pos, mut got) = (0, Vec::new());
        while got.len() < data.len() {
            s.write(&data[owner_pos..]);
            assert!(
                s.backlog() <= HIGH_WATER + 4096,
                "back-pressure: {}",
                s.backlog()
            );
            assert_eq!(s.take_acked(), 0, "nothing is acked before it is written");
            // The runtime writes half of what is pending, then the rest.
            let half = s.pending().len() / 2;
            let first = s.pending()[..half].to_vec();
            s.consume(half);
            got.extend(c.read(now, &first).plain);
            let rest = s.pending().to_vec();
            s.consume(rest.len());
            got.extend(c.read(now, &rest).plain);
            owner_pos += s.take_acked();
            assert!(
                owner_pos <= got.len(),
                "acked {owner_pos}, delivered {}",
                got.len()
            );
        }
        assert_eq!(got, data);
        assert_eq!(owner_pos, data.len());
        // close_notify ends the stream for the peer; a later TCP EOF says nothing more.
        s.close_notify();
        let r = hop(now, &mut s, &mut c);
        assert!(r.closed && r.plain.is_empty());
        assert_eq!(c.eof(), EofMeaning::Nothing);
    }

    #[test]
    fn eof_during_the_handshake_is_a_failure_and_a_failed_session_drops_writes() {
        let now = epoch();
        let (mut c, _s) = pair(now);
        let EofMeaning::Failed(why) = c.eof() else {
            panic!("not a failure")
        };
        assert_eq!(
            why.to_string(),
            "TLS handshake with localhost failed: the peer closed the connection"
        );
        assert_eq!(c.failure(), Some(&why));
        // The owner's bytes are dropped (acked at once) rather than held forever.
        assert!(c.write(b"GET / HTTP/1.1\r\n\r\n"));
        assert_eq!(c.take_acked(), 18);
        // Garbage from a server that does not speak TLS.
        let (mut c, _s) = pair(now);
        let r = c.read(now, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        let why = r.failed.expect("a failure");
        assert!(
            matches!(&why, TlsError::Session { peer, handshake: true, .. } if peer == "localhost"),
            "{why}"
        );
        assert!(
            why.to_string()
                .starts_with("TLS handshake with localhost failed: "),
            "{why}"
        );
        assert!(!c.pending().is_empty(), "an alert for the peer");
    }

    #[test]
    fn the_wall_clock_follows_the_instants_it_is_given() {
        use rustls::time_provider::TimeProvider;
        let t0 = epoch();
        let clock = WallClock::new(t0, Duration::from_secs(1_000));
        let secs = |c: &WallClock| c.current_time().unwrap().as_secs();
        assert_eq!(secs(&clock), 1_000);
        clock.advance(t0 + Duration::from_millis(2_500));
        assert_eq!(secs(&clock), 1_002);
        // An older instant (another worker behind) does not move it back.
        clock.advance(t0);
        assert_eq!(secs(&clock), 1_002);
    }
}

/// The types of a build without TLS: nothing outside this module can make a value of them, so
/// every `Option` of them is `None` and the endpoint never opens a session.
#[cfg(not(feature = "tls"))]
mod off {
    use super::{EofMeaning, Received, TlsError};

    /// What every session of this build would fail with (a static: `failure` lends it out).
    static NOT_BUILT: TlsError = TlsError::NotBuilt;

    /// Makes the types below impossible to build elsewhere.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Absent;

    /// The client side of TLS (this build has none).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ClientTls(Absent);

    /// The server side of TLS (this build has none).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ServerTls(Absent);

    /// A server to speak TLS to (this build has none).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct TlsTarget(Absent);

    impl TlsTarget {
        /// Always an error: this build has no TLS.
        pub fn new(_client: ClientTls, _name: &str) -> Result<TlsTarget, TlsError> {
            Err(TlsError::NotBuilt)
        }

        /// The server name, for messages.
        pub fn name(&self) -> String {
            String::new()
        }
    }

    /// No clocks in a build without TLS.
    #[derive(Debug, Default)]
    pub(crate) struct Clocks;

    impl Clocks {
        pub(crate) fn new(_endpoint: &super::EndpointTls, _backend: Option<&ClientTls>) -> Clocks {
            Clocks
        }
        pub(crate) fn advance(&self, _now: std::time::Instant) {}
    }

    /// A socket's TLS session (this build has none: never made).
    #[derive(Debug)]
    pub(crate) struct Session(Absent);

    #[allow(clippy::unused_self)]
    impl Session {
        pub(crate) fn client(_: &TlsTarget) -> Session {
            Session(Absent)
        }
        pub(crate) fn server(_: &ServerTls) -> Session {
            Session(Absent)
        }
        pub(crate) fn failure(&self) -> Option<&TlsError> {
            Some(&NOT_BUILT)
        }
        pub(crate) fn handshaking(&self) -> bool {
            false
        }
        pub(crate) fn is_client(&self) -> bool {
            false
        }
        pub(crate) fn read(&mut self, _now: std::time::Instant, _data: &[u8]) -> Received {
            Received::default()
        }
        pub(crate) fn eof(&mut self) -> EofMeaning {
            EofMeaning::Eof
        }
        pub(crate) fn write(&mut self, _plain: &[u8]) -> bool {
            false
        }
        pub(crate) fn take_acked(&mut self) -> usize {
            0
        }
        pub(crate) fn close_notify(&mut self) {}
        pub(crate) fn pending(&self) -> &[u8] {
            &[]
        }
        pub(crate) fn consume(&mut self, _n: usize) {}
    }
}
