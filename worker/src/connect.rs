//! What a client needs to reach the coordinator (its addresses, the token it sends,
//! the CA it trusts), and one tonic endpoint per address: TLS for `https://`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderValue;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// How CLI commands and workers connect to the coordinator.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// One URL, or a comma-separated list of the replicas' (`http://` or `https://`).
    pub coordinator: String,
    /// Sent as `authorization: Bearer <token>` on every call when set.
    pub token: Option<String>,
    /// PEM of the CA that signed the coordinator's certificate (setting `tls_ca`);
    /// without it `https://` addresses are checked against the system's roots.
    pub tls_ca: Option<PathBuf>,
}

impl ConnectOptions {
    /// A plain connection to `coordinator`, no token, the system's roots.
    pub fn new(coordinator: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            coordinator: coordinator.into(),
            ..ConnectOptions::default()
        }
    }

    /// The addresses of the list, in order.
    pub fn urls(&self) -> Vec<&str> {
        self.coordinator
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The `authorization` header value, if a token is set.
    pub(crate) fn authorization(&self) -> Result<Option<HeaderValue>, String> {
        let Some(token) = self.token.as_deref() else {
            return Ok(None);
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            "token: only visible ASCII characters can be sent in a header".to_string()
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// One endpoint per address, each connecting on first use.
    pub(crate) fn endpoints(&self) -> Result<Vec<(String, Endpoint)>, String> {
        let urls = self.urls();
        if urls.is_empty() {
            return Err("coordinator: no address given".into());
        }
        let ca = match &self.tls_ca {
            Some(path) if urls.iter().any(|u| u.starts_with("https://")) => Some(read_ca(path)?),
            _ => None,
        };
        urls.into_iter()
            .map(|url| Ok((url.to_string(), endpoint(url, ca.as_ref())?)))
            .collect()
    }
}

impl fmt::Display for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.urls().join(","))
    }
}

fn read_ca(path: &std::path::Path) -> Result<Certificate, String> {
    let pem = std::fs::read(path).map_err(|e| format!("tls_ca `{}`: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_ca `{}`: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_ca `{}`: no PEM CERTIFICATE in it",
            path.display()
        ));
    }
    Ok(Certificate::from_pem(pem))
}

fn endpoint(url: &str, ca: Option<&Certificate>) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("coordinator url `{url}`: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    match endpoint.uri().scheme_str() {
        Some("http") => Ok(endpoint),
        Some("https") => {
            let tls = match ca {
                Some(ca) => ClientTlsConfig::new().ca_certificate(ca.clone()),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint
                .tls_config(tls.timeout(Duration::from_secs(5)))
                .map_err(|e| format!("coordinator url `{url}`: TLS: {e}"))
        }
        _ => Err(format!(
            "coordinator url `{url}`: expected http://HOST:PORT or https://HOST:PORT"
        )),
    }
}
