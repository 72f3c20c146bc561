//! The files behind TLS: PEM certificates and keys, and the system's CA bundle, read once at
//! startup into the core's TLS settings ([`mdproxy_core::tls`]), which only take parsed values.
//! Reading files is IO, so it happens here; everything after is the core's.

#[cfg(feature = "tls")]
pub use on::*;

#[cfg(not(feature = "tls"))]
pub use off::*;

/// A build without TLS: the command line refuses every TLS flag and https URL, so these are
/// never reached; they say why if they are.
#[cfg(not(feature = "tls"))]
mod off {
    use mdproxy_core::tls::{ClientTls, ServerTls};

    use crate::cli;

    pub fn client(_args: &cli::ClientTlsArgs, flag: &str) -> Result<ClientTls, String> {
        Err(format!("{flag}: this build has no TLS"))
    }

    pub fn server(_args: &cli::ServerTlsArgs) -> Result<ServerTls, String> {
        Err("--tls-cert: this build has no TLS".to_owned())
    }

    pub fn ovn_client(_ssl: &cli::OvnSsl) -> Result<ClientTls, String> {
        Err("--ovn-sb-private-key: this build has no TLS".to_owned())
    }

    pub fn system_roots_present() -> bool {
        false
    }
}

#[cfg(feature = "tls")]
mod on {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, OnceLock};
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    use mdproxy_core::tls::pki_types::pem::PemObject;
    use mdproxy_core::tls::pki_types::{CertificateDer, PrivateKeyDer};
    use mdproxy_core::tls::{ClientTls, Identity, ServerAuth, ServerTls, WallClock};

    use crate::cli;

    fn shown(path: &Path) -> std::path::Display<'_> {
        path.display()
    }

    /// Where distributions keep the system's CA bundle, in the order tried (Debian/Ubuntu,
    /// Fedora/RHEL, openSUSE, Alpine/BSD). `$SSL_CERT_FILE`, when set, comes first.
    const SYSTEM_BUNDLES: [&str; 4] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];

    /// The process's one wall clock for rustls, anchored at its first use (see the core's
    /// `tls` module docs: the core derives wall-clock time from the instants it is given).
    fn clock() -> Arc<WallClock> {
        static CLOCK: OnceLock<Arc<WallClock>> = OnceLock::new();
        CLOCK
            .get_or_init(|| {
                let unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                WallClock::new(Instant::now(), unix)
            })
            .clone()
    }

    /// Client TLS settings from `args`; `flag` (`--metadata`, `--neutron`) names the flags in
    /// messages and logs. `insecure` is logged as a warning here, once.
    pub fn client(args: &cli::ClientTlsArgs, flag: &str) -> Result<ClientTls, String> {
        let auth = if args.insecure {
            log::warn!(
                "{flag}-insecure: TLS certificates are not checked; anyone on the path can \
                 impersonate the server"
            );
            ServerAuth::Insecure
        } else {
            let (path, certs) = match &args.ca_file {
                Some(path) => (path.clone(), read_certs(path, &format!("{flag}-ca-file"))?),
                None => system_roots()?,
            };
            log::debug!(
                "{flag}: {} CA certificates from {}",
                certs.len(),
                shown(&path)
            );
            ServerAuth::Roots(certs)
        };
        let identity = match &args.client_cert {
            Some((cert, key)) => Some(Identity {
                chain: read_certs(cert, &format!("{flag}-client-cert"))?,
                key: read_key(key, &format!("{flag}-client-key"))?,
            }),
            None => None,
        };
        ClientTls::new(auth, identity, clock()).map_err(|e| format!("{flag}: {e}"))
    }

    /// TLS to OVN's databases (`ssl:` remotes): the CA must have signed the server's
    /// certificate, whose name is not checked, as OVS's own clients do; our certificate and
    /// key are presented (OVN's servers ask for them).
    pub fn ovn_client(ssl: &cli::OvnSsl) -> Result<ClientTls, String> {
        let auth = ServerAuth::RootsAnyName(read_certs(&ssl.ca_cert, "--ovn-sb-ca-cert")?);
        let identity = Identity {
            chain: read_certs(&ssl.certificate, "--ovn-sb-certificate")?,
            key: read_key(&ssl.private_key, "--ovn-sb-private-key")?,
        };
        ClientTls::new(auth, Some(identity), clock()).map_err(|e| format!("--ovn-sb: {e}"))
    }

    /// Server TLS settings from `args`.
    pub fn server(args: &cli::ServerTlsArgs) -> Result<ServerTls, String> {
        let identity = Identity {
            chain: read_certs(&args.cert, "--tls-cert")?,
            key: read_key(&args.key, "--tls-key")?,
        };
        let client_roots = match &args.client_ca {
            Some(path) => Some(read_certs(path, "--tls-client-ca")?),
            None => None,
        };
        ServerTls::new(identity, client_roots, clock()).map_err(|e| format!("--tls-cert: {e}"))
    }

    /// Whether a CA bundle is where the system keeps one (for a soft fallback).
    pub fn system_roots_present() -> bool {
        bundle_paths().iter().any(|p| p.is_file())
    }

    fn bundle_paths() -> Vec<PathBuf> {
        let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        env.into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
            .collect()
    }

    /// The system's CA certificates: the first bundle file that exists.
    fn system_roots() -> Result<(PathBuf, Vec<CertificateDer<'static>>), String> {
        let paths = bundle_paths();
        let Some(path) = paths.iter().find(|p| p.is_file()) else {
            let tried: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return Err(format!(
                "no system CA bundle (tried {}); give a CA file",
                tried.join(", ")
            ));
        };
        let certs = read_certs(path, "the system CA bundle")?;
        Ok((path.clone(), certs))
    }

    fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
        fs::read(path).map_err(|e| format!("{what}: cannot read {}: {e}", shown(path)))
    }

    /// Every `CERTIFICATE` block of a PEM file (other blocks are skipped); none is an error.
    pub(crate) fn read_certs(
        path: &Path,
        what: &str,
    ) -> Result<Vec<CertificateDer<'static>>, String> {
        let pem = read(path, what)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what}: {}: {e}", shown(path)))?;
        if certs.is_empty() {
            return Err(format!("{what}: {} holds no PEM certificate", shown(path)));
        }
        Ok(certs)
    }

    /// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
    pub(crate) fn read_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, String> {
        let pem = read(path, what)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            format!(
                "{what}: {} holds no usable PEM private key: {e}",
                shown(path)
            )
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn temp(name: &str, contents: &[u8]) -> PathBuf {
            let dir = std::env::temp_dir().join(format!("mdp-tls-unit-{}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            fs::write(&path, contents).unwrap();
            path
        }

        #[test]
        fn pem_files() {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let both = format!("{}{}", key.serialize_pem(), cert.pem());
            let path = temp("both.pem", both.as_bytes());
            assert_eq!(read_certs(&path, "--x").unwrap().len(), 1);
            assert!(read_key(&path, "--x").is_ok());
            let server = cli::ServerTlsArgs {
                cert: path.clone(),
                key: path.clone(),
                client_ca: Some(path.clone()),
            };
            assert!(server.cert.exists() && super::server(&server).is_ok());
            let client = cli::ClientTlsArgs {
                ca_file: Some(path.clone()),
                insecure: false,
                client_cert: Some((path.clone(), path.clone())),
            };
            assert!(super::client(&client, "--metadata").is_ok());

            let empty = temp("empty.pem", b"not PEM at all\n");
            let e = read_certs(&empty, "--metadata-ca-file").unwrap_err();
            assert!(
                e.contains("--metadata-ca-file") && e.contains("no PEM"),
                "{e}"
            );
            let e = read_key(&empty, "--tls-key").unwrap_err();
            assert!(e.contains("--tls-key") && e.contains("private key"), "{e}");
            let e = read_certs(Path::new("/nonexistent.pem"), "--tls-cert").unwrap_err();
            assert!(e.contains("cannot read /nonexistent.pem"), "{e}");
            // A key that does not match the certificate.
            let other = temp(
                "other-key.pem",
                rcgen::KeyPair::generate()
                    .unwrap()
                    .serialize_pem()
                    .as_bytes(),
            );
            let mismatched = cli::ServerTlsArgs {
                cert: path.clone(),
                key: other,
                client_ca: None,
            };
            let e = super::server(&mismatched).err().unwrap();
            assert!(e.contains("--tls-cert"), "{e}");
        }
    }
}
