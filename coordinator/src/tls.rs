//! TLS for the gRPC port: the certificate chain and key from PEM files, each checked
//! on its own so that a bad file is named with the setting that points at it.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Identity, ServerTlsConfig};

use crate::error::{Error, Result};

/// The PEM files of the coordinator's certificate (chain) and private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Setting `tls_cert`: the server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// Setting `tls_key`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks both files; the gRPC server then speaks TLS only.
    pub fn server_config(&self) -> Result<ServerTlsConfig> {
        let cert = read("tls_cert", &self.cert)?;
        let certs = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("tls_cert", &self.cert, e))?;
        if certs.is_empty() {
            return Err(invalid("tls_cert", &self.cert, "no PEM CERTIFICATE in it"));
        }
        let key = read("tls_key", &self.key)?;
        PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
            invalid(
                "tls_key",
                &self.key,
                format!("no PEM private key in it ({e})"),
            )
        })?;
        Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
    }
}

fn read(setting: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| invalid(setting, path, e))
}

fn invalid(setting: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{setting} `{}`: {e}", path.display()))
}
