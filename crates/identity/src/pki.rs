//! The local CA: what `meridian certs init` writes for a deployment's
//! regions, and in-memory credentials for tests and the simulation.
//!
//! Keys are Ed25519: small, fast, and signatures of a fixed length. A
//! directory holds `ca.pem` and `ca.key`, and `<identity>.pem` and
//! `<identity>.key` per identity (`core.us-east.pem`, …); keys are written
//! readable by their owner only. Running init again keeps the CA and every
//! identity still valid under it, and issues only what is missing, so
//! adding a region is adding its file and re-running it.
//!
//! Production deployments may use their own PKI instead: any CA works, as
//! long as each certificate names its identity as a DNS subject
//! alternative name (`docs/operations.md`, "Service identities").

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519,
};
use rustls_pki_types::UnixTime;
use sha2::Digest as _;

use crate::credentials::CredentialsError;
use crate::{Identity, ServiceCredentials};

/// Years a local CA is valid.
const CA_YEARS: i32 = 10;
/// Years an identity's certificate is valid.
const IDENTITY_YEARS: i32 = 3;

/// Why the local CA could not issue or write credentials.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating or signing failed.
    #[error("generating {what}: {source}")]
    Generate {
        /// What was being made.
        what: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Credentials on disk do not hold together.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// `ca.pem` is there without `ca.key`, and something must be issued.
    #[error(
        "{dir}: ca.pem without ca.key: put the CA key back to issue identities \
         (or remove ca.pem to start a new CA, which every region must then trust)"
    )]
    CaKeyMissing {
        /// The directory.
        dir: PathBuf,
    },
}

/// The current calendar year, roughly (validity starts on January 1st of
/// it, so a day's error does not matter).
fn current_year() -> i32 {
    let seconds = UnixTime::now().as_secs();
    1970 + i32::try_from(seconds / 31_556_952).unwrap_or(0)
}

fn validity(params: &mut CertificateParams, years: i32) {
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

/// The CA's parameters: fixed apart from validity, so a CA key read back
/// from disk signs exactly as the CA that made its certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Meridian");
    name.push(DnType::CommonName, "Meridian service CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A serial number of exactly 20 bytes, from `key`: unique per key, and of
/// one length always, so every certificate of a kind has the same size
/// (rcgen's own drops leading zero bytes; the simulation needs handshakes
/// of the same bytes whatever keys a run draws).
fn serial_of(key: &KeyPair) -> rcgen::SerialNumber {
    let digest = sha2::Sha256::digest(key.public_key_raw());
    let mut serial = digest[..20].to_vec();
    // Positive, and no leading zero byte to drop.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    rcgen::SerialNumber::from(serial)
}

fn generate(what: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_string(),
        source,
    }
}

/// A CA able to issue service identities.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl LocalCa {
    /// A new CA with a fresh key.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(generate("the CA key"))?;
        let mut params = ca_params();
        validity(&mut params, CA_YEARS);
        params.serial_number = Some(serial_of(&key));
        let cert = params.self_signed(&key).map_err(generate("the CA"))?;
        Ok(Self {
            issuer: Issuer::new(ca_params(), key),
            cert_pem: cert.pem(),
        })
    }

    /// The CA of `ca.pem` and `ca.key` in `dir`: `None` when neither is
    /// there, an error when only the certificate is (the key kept offline:
    /// a new CA would silently replace the one every region trusts).
    fn read(dir: &Path) -> Result<Option<Self>, PkiError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !cert_path.exists() && !key_path.exists() {
            return Ok(None);
        }
        if !key_path.exists() {
            return Err(PkiError::CaKeyMissing {
                dir: dir.to_path_buf(),
            });
        }
        let cert_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?)
            .map_err(generate(&format!("(reading) {}", key_path.display())))?;
        Ok(Some(Self {
            issuer: Issuer::new(ca_params(), key),
            cert_pem,
        }))
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate and key naming `identity`, signed by this CA, valid
    /// for client and server authentication: `(certificate, key)` as PEM.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn issue_pem(&self, identity: &Identity) -> Result<(String, String), PkiError> {
        let usages = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(&identity.to_string(), vec![identity.dns_name()], &usages)
    }

    /// A certificate and key for a gateway's clients to reach it at
    /// `names` (DNS names or IP addresses), signed by this CA: for local
    /// runs and tests, whose clients trust this CA. `(chain, key)` as PEM.
    ///
    /// # Errors
    /// A name rcgen refuses, or as [`Self::issue_pem`].
    pub fn issue_edge_pem(&self, names: &[&str]) -> Result<(String, String), PkiError> {
        let what = format!("an edge certificate for {names:?}");
        let names = names.iter().map(|name| name.to_string()).collect();
        self.sign(&what, names, &[ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// A new key and its certificate for `names` (the first also its
    /// common name), for `usages`, signed by this CA: `(certificate, key)`
    /// as PEM.
    fn sign(
        &self,
        what: &str,
        names: Vec<String>,
        usages: &[ExtendedKeyUsagePurpose],
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(generate(what))?;
        let common_name = names.first().cloned().unwrap_or_default();
        let mut params = CertificateParams::new(names).map_err(generate(what))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages.to_vec();
        validity(&mut params, IDENTITY_YEARS);
        params.serial_number = Some(serial_of(&key));
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate(what))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// In-memory credentials of `identity`.
    ///
    /// # Errors
    /// As [`Self::issue_pem`].
    pub fn issue(&self, identity: &Identity) -> Result<ServiceCredentials, PkiError> {
        let (cert, key) = self.issue_pem(identity)?;
        Ok(ServiceCredentials::from_pem(
            identity.clone(),
            self.cert_pem.clone(),
            cert,
            key,
        )?)
    }
}

/// What [`init_dir`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    /// Whether the CA was created (else the one in the directory was used).
    pub created_ca: bool,
    /// Identities issued now.
    pub issued: Vec<Identity>,
    /// Identities whose valid credentials were already there.
    pub kept: Vec<Identity>,
}

/// The certificate and key files of `identity` in `dir`.
pub fn identity_files(dir: &Path, identity: &Identity) -> (PathBuf, PathBuf) {
    let name = identity.dns_name();
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// Makes `dir` hold a CA and credentials for every one of `identities`:
/// creates the CA when absent, keeps every identity valid under it, and
/// issues the others (missing, expired or signed by another CA).
///
/// # Errors
/// An unwritable directory, an unreadable CA key, a generation failure.
pub fn init_dir(dir: &Path, identities: &[Identity]) -> Result<InitReport, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    // Processes starting together (`meridian dev` per region) must not
    // each make a CA: one writes, the others then find its files.
    let lock_path = dir.join(".init.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| PkiError::Io {
            path: lock_path.clone(),
            source,
        })?;
    lock.lock().map_err(|source| PkiError::Io {
        path: lock_path,
        source,
    })?;
    let mut report = InitReport::default();
    let ca_path = dir.join("ca.pem");
    let missing: Vec<&Identity> = identities
        .iter()
        .filter(|identity| {
            let (cert, key) = identity_files(dir, identity);
            ServiceCredentials::load((*identity).clone(), &ca_path, &cert, &key).is_err()
        })
        .collect();
    if missing.is_empty() && ca_path.exists() {
        // Everything valid: the CA key is not needed (it may be offline).
        report.kept = identities.to_vec();
        return Ok(report);
    }
    let ca = match LocalCa::read(dir)? {
        Some(ca) => ca,
        None => {
            let ca = LocalCa::generate()?;
            write(&dir.join("ca.key"), &ca.issuer.key().serialize_pem(), true)?;
            write(&ca_path, ca.cert_pem(), false)?;
            report.created_ca = true;
            ca
        }
    };
    for identity in identities {
        let (cert_path, key_path) = identity_files(dir, identity);
        if !missing.contains(&identity) {
            report.kept.push(identity.clone());
            continue;
        }
        let (cert, key) = ca.issue_pem(identity)?;
        write(&key_path, &key, true)?;
        write(&cert_path, &cert, false)?;
        report.issued.push(identity.clone());
    }
    Ok(report)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `text` to `path` through a new file renamed into place; a
/// `secret` is readable by its owner only from its first byte.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let staging = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&staging).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&staging, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_credentials_name_their_identity() {
        let ca = LocalCa::generate().unwrap();
        let credentials = ca.issue(&Identity::core("eu-west")).unwrap();
        assert_eq!(credentials.identity(), &Identity::core("eu-west"));
    }

    /// Why credentials of `core.eu-west` made of `issued`, signed by
    /// `issuer`, are refused under `ca`.
    fn refusal(ca: &LocalCa, issuer: &LocalCa, issued: &Identity) -> CredentialsError {
        let (cert, key) = issuer.issue_pem(issued).unwrap();
        let expected = Identity::core("eu-west");
        ServiceCredentials::from_pem(expected, ca.cert_pem().to_string(), cert, key).unwrap_err()
    }

    #[test]
    fn a_certificate_of_another_ca_or_identity_is_refused() {
        let (ours, theirs) = (LocalCa::generate().unwrap(), LocalCa::generate().unwrap());
        let error = refusal(&ours, &theirs, &Identity::core("eu-west"));
        assert!(
            matches!(error, CredentialsError::Untrusted { .. }),
            "{error}"
        );
        let error = refusal(&ours, &ours, &Identity::gateway("eu-west"));
        assert!(
            matches!(error, CredentialsError::WrongIdentity { .. }),
            "{error}"
        );
    }

    #[test]
    fn init_keeps_what_is_valid_and_issues_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let first = [Identity::core("us-east"), Identity::gateway("us-east")];
        let report = init_dir(dir.path(), &first).unwrap();
        assert!(report.created_ca);
        assert_eq!(report.issued, first.to_vec());

        // A new region: the CA and the first identities stay.
        let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let mut all = first.to_vec();
        all.push(Identity::core("eu-west"));
        let report = init_dir(dir.path(), &all).unwrap();
        assert!(!report.created_ca);
        assert_eq!(report.kept, first.to_vec());
        assert_eq!(report.issued, vec![Identity::core("eu-west")]);
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);

        // What the re-read CA issued chains to the CA written first.
        let (cert, key) = identity_files(dir.path(), &Identity::core("eu-west"));
        ServiceCredentials::load(
            Identity::core("eu-west"),
            &dir.path().join("ca.pem"),
            &cert,
            &key,
        )
        .unwrap();

        // With the CA key offline, what is valid is kept; nothing new can
        // be issued, and no new CA replaces the one the regions trust.
        std::fs::rename(dir.path().join("ca.key"), dir.path().join("offline.key")).unwrap();
        let report = init_dir(dir.path(), &all).unwrap();
        assert_eq!(report.kept, all);
        all.push(Identity::core("ap-southeast"));
        let error = init_dir(dir.path(), &all).unwrap_err();
        assert!(matches!(error, PkiError::CaKeyMissing { .. }), "{error}");
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "a key readable by others: {mode:o}");
        }
    }
}
