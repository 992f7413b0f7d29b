//! A process's service credentials, from the plan's [`TlsPlan`]s: files
//! read (and, in the local profile, created with a local CA when missing),
//! or issued by a CA made in memory for the process.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use meridian_identity::pki::{self, LocalCa};
use meridian_identity::{EdgeCredentials, Identity, ServiceCredentials};

use crate::RegionCredentials;
use crate::config::{Deployment, RegionConfig, TlsConfig};
use crate::plan::{Plan, Profile, TlsPlan};

/// Credentials of the regions this process runs.
pub struct Identities<'a> {
    plan: &'a Plan,
    /// The in-memory CA of [`TlsPlan::Ephemeral`] regions, made once.
    ephemeral: OnceLock<LocalCa>,
}

impl<'a> Identities<'a> {
    /// For the regions of `plan`.
    pub fn new(plan: &'a Plan) -> Self {
        Self {
            plan,
            ephemeral: OnceLock::new(),
        }
    }

    /// Both identities of `region`, `None` when it runs insecure.
    ///
    /// # Errors
    /// Files missing (production) or not holding together, a production
    /// region without `[tls]`.
    pub fn region(&self, region: &RegionConfig) -> anyhow::Result<Option<RegionCredentials>> {
        let (Some(core), Some(gateway)) = (self.core(region)?, self.gateway(region)?) else {
            return Ok(None);
        };
        Ok(Some(RegionCredentials { core, gateway }))
    }

    /// `core.<region>`, `None` when it runs insecure.
    ///
    /// # Errors
    /// As [`Self::region`].
    pub fn core(&self, region: &RegionConfig) -> anyhow::Result<Option<ServiceCredentials>> {
        self.credentials(region, Identity::core(&region.name), |tls| {
            (&tls.core_cert, &tls.core_key)
        })
    }

    /// `gateway.<region>`, `None` when it runs insecure.
    ///
    /// # Errors
    /// As [`Self::region`].
    pub fn gateway(&self, region: &RegionConfig) -> anyhow::Result<Option<ServiceCredentials>> {
        self.credentials(region, Identity::gateway(&region.name), |tls| {
            (&tls.gateway_cert, &tls.gateway_key)
        })
    }

    /// The certificate `region`'s gateways serve clients TLS with, if its
    /// `[tls]` names one (`--insecure-core` does not change it).
    ///
    /// # Errors
    /// Unreadable or mismatched files.
    pub fn edge(&self, region: &RegionConfig) -> anyhow::Result<Option<EdgeCredentials>> {
        let Some(tls) = &region.tls else {
            return Ok(None);
        };
        let (Some(cert), Some(key)) = (&tls.edge_cert, &tls.edge_key) else {
            return Ok(None);
        };
        EdgeCredentials::load(cert, key)
            .map(Some)
            .with_context(|| format!("the edge certificate of region {}", region.name))
    }

    /// Whether every region of this process shares one in-memory CA (which
    /// another process cannot share).
    pub fn is_ephemeral(&self, region: &RegionConfig) -> bool {
        matches!(self.plan.tls(region), Ok(TlsPlan::Ephemeral))
    }

    fn credentials(
        &self,
        region: &RegionConfig,
        identity: Identity,
        pick: impl Fn(&TlsConfig) -> (&std::path::PathBuf, &std::path::PathBuf),
    ) -> anyhow::Result<Option<ServiceCredentials>> {
        let credentials = match self.plan.tls(region)? {
            TlsPlan::Insecure => return Ok(None),
            TlsPlan::Ephemeral => {
                let ca = match self.ephemeral.get() {
                    Some(ca) => ca,
                    None => {
                        let ca = LocalCa::generate().context("making an in-memory CA")?;
                        self.ephemeral.get_or_init(|| ca)
                    }
                };
                ca.issue(&identity)
                    .with_context(|| format!("issuing {identity}"))?
            }
            TlsPlan::Files(tls) => {
                if self.plan.options().profile == Profile::Local {
                    self.create_if_missing(&region.name, &tls)?;
                }
                let (cert, key) = pick(&tls);
                ServiceCredentials::load(identity.clone(), &tls.ca, cert, key).with_context(
                    || {
                        format!(
                            "the credentials of {identity} ([tls] of region {})",
                            region.name
                        )
                    },
                )?
            }
        };
        Ok(Some(credentials))
    }

    /// Local profile: files missing from where `meridian certs init`
    /// writes them are written now, for every region of the deployment;
    /// files elsewhere are the operator's, and one missing is an error
    /// naming it. (The production profile reads only the files of the
    /// identity it loads: a gateway host holds no core key.)
    fn create_if_missing(&self, region: &str, tls: &TlsConfig) -> anyhow::Result<()> {
        let Some((what, missing)) = tls.files().into_iter().find(|(_, path)| !path.exists()) else {
            return Ok(());
        };
        let dir = tls.ca.parent().unwrap_or(Path::new("."));
        let (core_cert, core_key) = pki::identity_files(dir, &Identity::core(region));
        let (gateway_cert, gateway_key) = pki::identity_files(dir, &Identity::gateway(region));
        let conventional = *tls
            == TlsConfig {
                ca: dir.join("ca.pem"),
                core_cert,
                core_key,
                gateway_cert,
                gateway_key,
                // The edge certificate is the operator's (a public CA's).
                edge_cert: tls.edge_cert.clone(),
                edge_key: tls.edge_key.clone(),
            };
        anyhow::ensure!(
            conventional,
            "tls.{what}: {} does not exist (`meridian certs init --out {}` writes a CA and every identity)",
            missing.display(),
            dir.display()
        );
        let report = pki::init_dir(dir, &deployment_identities(self.plan.deployment()))
            .with_context(|| format!("creating service identities in {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), issued = report.issued.len(), created_ca = report.created_ca, "local service identities written");
        Ok(())
    }
}

/// Every identity of `deployment`: each region's core and gateway.
pub fn deployment_identities(deployment: &Deployment) -> Vec<Identity> {
    deployment
        .regions
        .keys()
        .flat_map(|name| [Identity::core(name), Identity::gateway(name)])
        .collect()
}
