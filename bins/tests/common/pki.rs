//! Certificates for the OVN SSL tests, made here by rcgen: a CA, and leaves it signed named as
//! `ovs-pki` names components (a common name, no host name: OVN checks no names).

use std::fs;
use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;

use super::TempDir;

pub type Ca = CertifiedIssuer<'static, KeyPair>;

/// A self-signed CA named `name`.
pub fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `cn` signed by `ca`: its PEM, DER and key.
pub fn leaf(ca: &Ca, cn: &str) -> (String, CertificateDer<'static>, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), cert.der().clone(), key)
}

/// One component's PEM files, as OVN's daemons and mdproxy's `--ovn-sb-*` flags take them.
#[derive(Clone, Debug)]
pub struct PemFiles {
    pub key: PathBuf,
    pub cert: PathBuf,
    /// The CA the peer's certificate must lead to.
    pub ca: PathBuf,
}

/// A certificate for `cn` signed by `ca`, written to `dir` as `<name>-key.pem`,
/// `<name>-cert.pem`, with the CA as `ca.pem`.
pub fn write_leaf(dir: &TempDir, ca: &Ca, name: &str, cn: &str) -> PemFiles {
    let (pem, _, key) = leaf(ca, cn);
    let write = |file: String, text: String| {
        let path = dir.join(&file);
        fs::write(&path, text).unwrap();
        path
    };
    PemFiles {
        key: write(format!("{name}-key.pem"), key.serialize_pem()),
        cert: write(format!("{name}-cert.pem"), pem),
        ca: write("ca.pem".to_owned(), ca.pem()),
    }
}
