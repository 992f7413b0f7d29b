//! The local profile's defaults: the three region files the repository
//! ships (`regions/*.toml`), built into the binary so that `meridian dev`
//! runs from any directory, and a port offset that moves every local
//! port at once so two local deployments run side by side.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use crate::config::Deployment;

/// The shipped region files, by file name.
pub const BUILTIN_REGIONS: [(&str, &str); 3] = [
    (
        "ap-southeast.toml",
        include_str!("../../../regions/ap-southeast.toml"),
    ),
    (
        "eu-west.toml",
        include_str!("../../../regions/eu-west.toml"),
    ),
    (
        "us-east.toml",
        include_str!("../../../regions/us-east.toml"),
    ),
];

/// Writes the built-in region files into `dir` (created if missing),
/// leaving any file already there as it is: an operator's edits survive.
///
/// # Errors
/// The directory or a file cannot be written.
pub fn write_builtin_regions(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in BUILTIN_REGIONS {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

impl Deployment {
    /// Moves every port of the local profile up by `offset`: each
    /// region's `[local]` gateway, core and S3 addresses and its gateways'
    /// admin port.
    ///
    /// # Errors
    /// A `[local]` address that is not `ip:port`, or a port pushed past
    /// 65535.
    pub fn shift_local_ports(&mut self, offset: u16) -> anyhow::Result<()> {
        if offset == 0 {
            return Ok(());
        }
        for region in self.regions.values_mut() {
            let name = region.name.clone();
            let local = &mut region.local;
            local.gateway = shifted(&local.gateway, offset, &name)?;
            local.core = shifted(&local.core, offset, &name)?;
            if let Some(s3) = &local.s3 {
                local.s3 = Some(shifted(s3, offset, &name)?);
            }
            if let Some(port) = region.edge.gateway_admin_port {
                region.edge.gateway_admin_port = Some(shift_port(port, offset, &name)?);
            }
        }
        Ok(())
    }
}

/// `address` with its port moved up by `offset`.
fn shifted(address: &str, offset: u16, region: &str) -> anyhow::Result<String> {
    let mut addr: SocketAddr = address
        .parse()
        .with_context(|| format!("region {region}: local address {address:?} is not ip:port"))?;
    addr.set_port(shift_port(addr.port(), offset, region)?);
    Ok(addr.to_string())
}

/// `port + offset`, if it is still a port.
///
/// # Errors
/// A sum past 65535.
pub fn shift_port(port: u16, offset: u16, region: &str) -> anyhow::Result<u16> {
    port.checked_add(offset).with_context(|| {
        format!("region {region}: port {port} moved by --port-offset {offset} is past 65535")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_regions_are_the_shipped_ones_and_load() {
        let dir = tempfile::tempdir().unwrap();
        write_builtin_regions(dir.path()).unwrap();
        let deployment = Deployment::load(dir.path()).unwrap();
        let names: Vec<&String> = deployment.regions.keys().collect();
        assert_eq!(names, ["ap-southeast", "eu-west", "us-east"]);
    }

    #[test]
    fn files_already_there_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("us-east.toml"), "edited").unwrap();
        write_builtin_regions(dir.path()).unwrap();
        let kept = std::fs::read_to_string(dir.path().join("us-east.toml")).unwrap();
        assert_eq!(kept, "edited");
    }

    #[test]
    fn an_offset_moves_every_local_port() {
        let dir = tempfile::tempdir().unwrap();
        write_builtin_regions(dir.path()).unwrap();
        let original = Deployment::load(dir.path()).unwrap();
        let mut moved = original.clone();
        moved.shift_local_ports(100).unwrap();
        for (name, region) in &moved.regions {
            let before = &original.regions[name];
            let port = |a: &str| a.parse::<SocketAddr>().unwrap().port();
            assert_eq!(
                port(&region.local.gateway),
                port(&before.local.gateway) + 100
            );
            assert_eq!(port(&region.local.core), port(&before.local.core) + 100);
            assert_eq!(
                region.local.s3.as_deref().map(port),
                before.local.s3.as_deref().map(|a| port(a) + 100)
            );
            assert_eq!(
                region.edge.gateway_admin_port,
                before.edge.gateway_admin_port.map(|p| p + 100)
            );
            assert_eq!(
                region.listen.gateway, before.listen.gateway,
                "production stays"
            );
        }
        let error = moved.shift_local_ports(65_000).unwrap_err();
        assert!(error.to_string().contains("past 65535"), "{error}");
    }
}
