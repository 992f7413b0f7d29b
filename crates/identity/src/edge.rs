//! The gateway's certificate towards clients: the name clients dial
//! (`gw.us-east.example`), usually from a public CA. Unlike the service
//! identities, nobody's certificate is asked for in return: clients prove
//! who they are with their device tokens.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::credentials::CredentialsError;

/// A certificate chain and key serving the gateway's clients.
#[derive(Clone)]
pub struct EdgeCredentials {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for EdgeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeCredentials").finish_non_exhaustive()
    }
}

fn pem_error(
    what: &str,
    expected: &'static str,
    reason: impl std::fmt::Display,
) -> CredentialsError {
    CredentialsError::Pem {
        what: what.to_string(),
        expected,
        reason: reason.to_string(),
    }
}

impl EdgeCredentials {
    /// From a PEM certificate chain (leaf first) and its key.
    ///
    /// # Errors
    /// PEM that does not parse, or a key that does not match the
    /// certificate.
    pub fn from_pem(chain: &str, key: &str) -> Result<Self, CredentialsError> {
        let certificates = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error("the edge certificate", "certificate chain", e))?;
        if certificates.is_empty() {
            return Err(pem_error(
                "the edge certificate",
                "certificate chain",
                "empty",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| pem_error("the edge key", "private key", e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| pem_error("the edge TLS configuration", "usable setting", e))?
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .map_err(|e| pem_error("the edge key", "key of the certificate", e))?;
        // WebSocket upgrades are HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// From PEM files.
    ///
    /// # Errors
    /// An unreadable file, or as [`Self::from_pem`].
    pub fn load(chain: &Path, key: &Path) -> Result<Self, CredentialsError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        Self::from_pem(&read(chain)?, &read(key)?)
    }

    /// The TLS configuration serving clients.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}
