//! Certificates made at test time: a CA of its own and a server certificate it signs,
//! written as PEM files, for coordinators that serve TLS.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files: the CA clients trust, and the coordinator's certificate and key.
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A new CA, and a server certificate signed by it for `localhost`, `127.0.0.1` and
/// each of `names` (IP addresses or DNS names, e.g. a network namespace's address),
/// written into `dir` as `<prefix>-ca.pem`, `<prefix>-cert.pem`, `<prefix>-key.pem`.
pub fn make_certs(dir: &Path, prefix: &str, names: &[&str]) -> Certs {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("atelier test CA {prefix}"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    sans.extend(names.iter().map(|n| n.to_string()));
    let mut server = CertificateParams::new(sans).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "atelier coordinator");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let cert_pem = server.signed_by(&server_key, &issuer).unwrap().pem();

    let certs = Certs {
        ca: dir.join(format!("{prefix}-ca.pem")),
        cert: dir.join(format!("{prefix}-cert.pem")),
        key: dir.join(format!("{prefix}-key.pem")),
    };
    std::fs::write(&certs.ca, ca_pem).unwrap();
    std::fs::write(&certs.cert, cert_pem).unwrap();
    std::fs::write(&certs.key, server_key.serialize_pem()).unwrap();
    certs
}
