//! HTTPS and WSS for `zms web --tls-cert FILE --tls-key FILE`: rustls with the ring provider,
//! TLS 1.2 and 1.3. Certificates come from the operator (a CA, or a self-signed one for a
//! lab); the gateway never makes one.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{errinput, Result};

/// The PEM files of a TLS server.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The rustls settings for `files`.
///
/// # Errors
/// An unreadable or malformed file, or a key that does not fit the certificate.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| {
            errinput!(
                "cannot read certificates from {}: {e}",
                files.cert.display()
            )
        })?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| errinput!("bad certificate in {}: {e}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(errinput!("no certificate in {}", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        errinput!(
            "cannot read a private key from {}: {e}",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| errinput!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            errinput!(
                "the key in {} does not fit the certificate: {e}",
                files.key.display()
            )
        })?;
    Ok(Arc::new(config))
}
