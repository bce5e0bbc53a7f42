//! TLS to PostgreSQL. A DSN with `sslmode=require` (or `prefer`) is
//! connected with TLS, verifying the server's certificate and host name
//! against the CA in `postgres.tls_root_cert` (like libpq's `verify-full`);
//! both the ordinary connections and the replication client use it.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// The root certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot use postgres.tls_root_cert {path}: {reason}; it must be a PEM file with the CA certificate")]
pub struct TlsError {
    path: String,
    reason: String,
}

static CLIENT: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// Loads the CA once at start; without it, TLS is not offered.
pub fn init(root_cert: &Path) -> Result<(), TlsError> {
    let error = |reason: String| TlsError {
        path: root_cert.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root_cert).map_err(|e| error(e.to_string()))? {
        roots
            .add(cert.map_err(|e| error(e.to_string()))?)
            .map_err(|e| error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(error("no certificate in the file".to_string()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = CLIENT.set(Arc::new(config));
    Ok(())
}

/// The TLS client configuration, when a root certificate was configured.
pub fn client_config() -> Option<Arc<ClientConfig>> {
    CLIENT.get().cloned()
}

/// The name the server certificate must carry (a host name or an IP).
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_string()).ok()
}
