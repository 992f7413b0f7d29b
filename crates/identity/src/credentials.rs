//! One identity's credentials: its certificate and key, and the CA that
//! signs every identity of the deployment. Checked when loaded (the
//! certificate must name the identity expected and chain to the CA), so a
//! misplaced file stops the process at start instead of failing every
//! handshake later.

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use tonic::transport::{Certificate, ClientTlsConfig, ServerTlsConfig};

use crate::Identity;

/// How long a connecting party may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why credentials could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{what}: not a PEM {expected} ({reason})")]
    Pem {
        /// Which file or value.
        what: String,
        /// What it should hold.
        expected: &'static str,
        /// The parser's reason.
        reason: String,
    },
    /// The certificate does not name the identity expected of it.
    #[error("the certificate names {found}, not {expected}")]
    WrongIdentity {
        /// The identity the process runs as.
        expected: Identity,
        /// What the certificate names (`no identity` when none).
        found: String,
    },
    /// The certificate does not chain to the deployment's CA, or has expired.
    #[error("the certificate of {identity} is not valid under the CA: {reason}")]
    Untrusted {
        /// The identity.
        identity: Identity,
        /// webpki's reason.
        reason: String,
    },
}

/// Signature algorithms a certificate of this deployment may use.
static ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ED25519,
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
];

/// The identity a certificate proves, if it names exactly one (a
/// certificate naming two identities proves neither).
pub fn identity_of(certificate: &CertificateDer<'_>) -> Option<Identity> {
    let parsed = webpki::EndEntityCert::try_from(certificate).ok()?;
    let mut identities = parsed.valid_dns_names().filter_map(Identity::parse);
    let first = identities.next()?;
    identities.next().is_none().then_some(first)
}

/// An identity's certificate and key, and the deployment's CA.
#[derive(Clone)]
pub struct ServiceCredentials {
    identity: Identity,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServiceCredentials")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, CredentialsError> {
    std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn certificate(what: &str, pem: &str) -> Result<CertificateDer<'static>, CredentialsError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|error| CredentialsError::Pem {
        what: what.to_string(),
        expected: "certificate",
        reason: error.to_string(),
    })
}

impl ServiceCredentials {
    /// Credentials of `identity` from PEM text, checked: the key parses,
    /// the certificate names `identity` and chains to `ca_pem`.
    ///
    /// # Errors
    /// As [`CredentialsError`] says.
    pub fn from_pem(
        identity: Identity,
        ca_pem: String,
        cert_pem: String,
        key_pem: String,
    ) -> Result<Self, CredentialsError> {
        let ca = certificate("the CA", &ca_pem)?;
        let cert = certificate(&format!("the certificate of {identity}"), &cert_pem)?;
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|error| {
            CredentialsError::Pem {
                what: format!("the key of {identity}"),
                expected: "private key",
                reason: error.to_string(),
            }
        })?;
        let found = identity_of(&cert);
        if found.as_ref() != Some(&identity) {
            return Err(CredentialsError::WrongIdentity {
                expected: identity,
                found: found.map_or_else(|| "no identity".to_string(), |i| i.to_string()),
            });
        }
        let untrusted = |reason: String| CredentialsError::Untrusted {
            identity: identity.clone(),
            reason,
        };
        let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| untrusted(e.to_string()))?;
        let parsed =
            webpki::EndEntityCert::try_from(&cert).map_err(|e| untrusted(e.to_string()))?;
        parsed
            .verify_for_usage(
                ALGORITHMS,
                &[anchor],
                &[],
                UnixTime::now(),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| untrusted(e.to_string()))?;
        Ok(Self {
            identity,
            ca_pem,
            cert_pem,
            key_pem,
        })
    }

    /// Credentials of `identity` from PEM files, checked as [`Self::from_pem`].
    ///
    /// # Errors
    /// An unreadable file, or as [`Self::from_pem`].
    pub fn load(
        identity: Identity,
        ca: &Path,
        cert: &Path,
        key: &Path,
    ) -> Result<Self, CredentialsError> {
        Self::from_pem(identity, read(ca)?, read(cert)?, read(key)?)
    }

    /// Whose credentials these are.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn tonic_identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// Serving TLS: this identity's certificate, and a client certificate
    /// signed by the CA required of every connection.
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.tonic_identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// Calling `server` (whatever its address): its certificate must be
    /// signed by the CA and name `server`; this identity's certificate is
    /// presented in turn.
    pub fn client_tls(&self, server: &Identity) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.tonic_identity())
            .domain_name(server.dns_name())
            .timeout(HANDSHAKE_TIMEOUT)
    }
}
