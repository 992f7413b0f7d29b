//! Which certificate authorities the SDK trusts for `https://` and
//! `wss://` gateways: the system's, and any given (a deployment's own CA,
//! as a local run's `meridian certs`).

use std::sync::{Arc, OnceLock};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::SdkError;

/// A TLS client configuration: its trusted roots.
#[derive(Clone)]
pub struct TlsRoots {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRoots").finish_non_exhaustive()
    }
}

/// The system's roots, read once per process.
fn system_roots() -> &'static Vec<CertificateDer<'static>> {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    // An unreadable certificate store leaves only the roots given.
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

impl TlsRoots {
    /// The system's roots.
    pub fn system() -> Self {
        static SYSTEM: OnceLock<TlsRoots> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                Self::build(Vec::new()).unwrap_or_else(|_| Self {
                    config: Arc::new(Self::config(rustls::RootCertStore::empty())),
                })
            })
            .clone()
    }

    /// The system's roots and the certificates of `pem`.
    ///
    /// # Errors
    /// `pem` holds no certificate, or one that is not a usable root.
    pub fn with_pem(pem: &str) -> Result<Self, SdkError> {
        let extra = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SdkError::Tls(format!("CA certificates: {e}")))?;
        if extra.is_empty() {
            return Err(SdkError::Tls("no CA certificate in the PEM given".into()));
        }
        Self::build(extra)
    }

    fn build(extra: Vec<CertificateDer<'static>>) -> Result<Self, SdkError> {
        let mut roots = rustls::RootCertStore::empty();
        // The system's roots as far as they parse.
        roots.add_parsable_certificates(system_roots().iter().cloned());
        for certificate in extra {
            roots
                .add(certificate)
                .map_err(|e| SdkError::Tls(format!("CA certificate: {e}")))?;
        }
        Ok(Self {
            config: Arc::new(Self::config(roots)),
        })
    }

    fn config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // The default protocol versions cannot fail with the default
        // provider; the fallback only keeps this free of a panic.
        match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
            Err(_) => rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        }
    }

    /// The configuration, for the HTTP and WebSocket clients.
    pub(crate) fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}
