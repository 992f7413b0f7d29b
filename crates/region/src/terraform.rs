//! The Terraform variables of a deployment, from its region files: the
//! one source of truth for which regions exist and what each is
//! (`meridian terraform-vars` writes them into `terraform/envs/prod`; a
//! test fails when the committed files and `regions/` disagree).
//!
//! Two files: `regions.auto.tfvars.json`, each region's values, and
//! `regions.tf`, what Terraform cannot take from a variable — a provider
//! per AWS region, a module instance per region, a peering per pair.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use crate::config::{Deployment, RegionConfig};

/// A region VPC's IPv4 block: a /16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Block {
    network: u32,
    prefix: u32,
}

impl Ipv4Block {
    /// Parses `a.b.c.d/16`: a network address (no host bits) with the
    /// prefix the region module's subnet plan divides (three AZs, public
    /// and private subnets).
    ///
    /// # Errors
    /// Anything else, with the reason.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: expected a.b.c.d/n"))?;
        let address: std::net::Ipv4Addr = address
            .parse()
            .map_err(|_| format!("`{text}`: not an IPv4 address"))?;
        let prefix: u32 = prefix.parse().ok().filter(|p| *p == 16).ok_or_else(|| {
            format!("`{text}`: a region's VPC is a /16 (the region module's subnet plan)")
        })?;
        let network = u32::from(address);
        let host_bits = u32::MAX >> prefix;
        if network & host_bits != 0 {
            return Err(format!("`{text}`: host bits set (not a network address)"));
        }
        Ok(Self { network, prefix })
    }

    fn last(self) -> u32 {
        self.network | (u32::MAX >> self.prefix)
    }

    /// Whether the two blocks share an address.
    pub fn overlaps(self, other: Self) -> bool {
        self.network <= other.last() && other.network <= self.last()
    }
}

/// One region's variables, as `var.regions[NAME]` types them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionVars {
    /// The AWS region.
    pub aws_region: String,
    /// The VPC's block.
    pub vpc_cidr: String,
    /// The name clients dial for this region's gateways.
    pub gateway_host: String,
    /// The gateways' client port.
    pub gateway_port: u16,
    /// The name gateways and other regions dial for this region's cores.
    pub core_host: String,
    /// The cores' port (gateways, cross-region calls and replication).
    pub core_port: u16,
    /// The media bucket.
    pub bucket: String,
    /// The regions it replicates with.
    pub peers: Vec<String>,
    /// Client address blocks GeoDNS sends here.
    pub client_prefixes: Vec<String>,
    /// The clock offset beyond which stamps are refused.
    pub max_clock_offset_ms: u64,
    /// Partitions of each replication topic.
    pub log_partitions: u32,
    /// Replication factor of the topics.
    pub log_replication_factor: i32,
}

fn host_port(address: &str, what: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("{what} `{address}` has no port"))?;
    let port = port
        .parse()
        .with_context(|| format!("{what} `{address}`: the port is not a number"))?;
    Ok((host.to_string(), port))
}

fn region_vars(deployment: &Deployment, region: &RegionConfig) -> anyhow::Result<RegionVars> {
    let name = &region.name;
    let aws = region
        .aws
        .as_ref()
        .with_context(|| format!("region {name} has no [aws] section (region, vpc_cidr)"))?;
    let bucket = region
        .s3
        .as_ref()
        .with_context(|| format!("region {name} has no [s3] bucket"))?
        .bucket
        .clone();
    let (gateway_host, gateway_port) = host_port(
        &region.advertise.gateway,
        &format!("{name}: advertise.gateway"),
    )?;
    let (core_host, core_port) =
        host_port(&region.advertise.core, &format!("{name}: advertise.core"))?;
    let mut peers: Vec<String> = deployment
        .peers_of(name)
        .into_iter()
        .map(str::to_string)
        .collect();
    peers.sort();
    Ok(RegionVars {
        aws_region: aws.region.clone(),
        vpc_cidr: aws.vpc_cidr.clone(),
        gateway_host,
        gateway_port,
        core_host,
        core_port,
        bucket,
        peers,
        // Loopback blocks stand for local clients (`meridian chat
        // --dns-source`); no client on AWS asks from one.
        client_prefixes: region
            .geodns
            .client_prefixes
            .iter()
            .filter(|block| !is_loopback_block(block))
            .cloned()
            .collect(),
        max_clock_offset_ms: region.clock.max_offset_ms,
        log_partitions: region.log.partitions,
        log_replication_factor: region.log.replication_factor,
    })
}

/// Whether `block` (`ip/len`, checked when the file was read) lies in
/// loopback space.
fn is_loopback_block(block: &str) -> bool {
    block
        .split('/')
        .next()
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

/// Every region's variables, checked as a whole: every region has its
/// `[aws]` section and `[s3]` bucket, no two VPCs overlap, no two regions
/// share an AWS region.
///
/// # Errors
/// The first region that cannot be provisioned, with the reason.
pub fn region_vars_of(deployment: &Deployment) -> anyhow::Result<BTreeMap<String, RegionVars>> {
    let mut vars = BTreeMap::new();
    for region in deployment.regions.values() {
        vars.insert(region.name.clone(), region_vars(deployment, region)?);
    }
    let names: Vec<&String> = vars.keys().collect();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            let (va, vb) = (&vars[*a], &vars[*b]);
            let (ba, bb) = (
                Ipv4Block::parse(&va.vpc_cidr).map_err(anyhow::Error::msg)?,
                Ipv4Block::parse(&vb.vpc_cidr).map_err(anyhow::Error::msg)?,
            );
            anyhow::ensure!(
                !ba.overlaps(bb),
                "regions {a} and {b}: their VPCs {} and {} overlap (they are peered)",
                va.vpc_cidr,
                vb.vpc_cidr
            );
            anyhow::ensure!(
                va.aws_region != vb.aws_region,
                "regions {a} and {b} are both in AWS region {}: one Meridian region per AWS region",
                va.aws_region
            );
        }
    }
    Ok(vars)
}

/// `value` with every object's keys in order, whatever order serde_json's
/// map keeps: the file is stable.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let entries: BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            serde_json::Value::Object(entries.into_iter().collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

/// `regions.auto.tfvars.json`: `{"regions": {NAME: {…}}}`, keys sorted,
/// two-space indented, with a final newline.
///
/// # Errors
/// As [`region_vars_of`].
pub fn tfvars(deployment: &Deployment) -> anyhow::Result<String> {
    let regions = region_vars_of(deployment)?;
    let value = sorted(serde_json::json!({ "regions": regions }));
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    Ok(text)
}

/// The arguments every region's module instance takes from its settings
/// (`local.region_settings`: the environment's defaults with the region's
/// overrides), in the order written. Tags come from the provider.
const SHARED: [&str; 9] = [
    "release",
    "network",
    "edge",
    "gateways",
    "core",
    "foundationdb",
    "kafka",
    "media",
    "observability",
];

/// One region's provider and module instance.
fn region_block(name: &str) -> String {
    let mut text = format!(
        "provider \"aws\" {{\n  alias  = \"{name}\"\n  region = var.regions[\"{name}\"].aws_region\n\n  \
         default_tags {{\n    tags = var.tags\n  }}\n}}\n\n\
         module \"region_{name}\" {{\n  source = \"../../modules/region\"\n  providers = {{\n    aws = aws.{name}\n  }}\n\n"
    );
    let arguments: Vec<(&str, String)> = [
        ("name", format!("\"{name}\"")),
        ("regions", "var.regions".to_string()),
        (
            "internal_zone_id",
            "module.global.internal_zone_id".to_string(),
        ),
    ]
    .into_iter()
    .chain(
        SHARED
            .iter()
            .map(|a| (*a, format!("local.region_settings[\"{name}\"].{a}"))),
    )
    .collect();
    let width = arguments.iter().map(|(a, _)| a.len()).max().unwrap_or(0);
    for (argument, value) in arguments {
        text.push_str(&format!("  {argument:width$} = {value}\n"));
    }
    text.push_str("}\n\n");
    text
}

/// `regions.tf`: what Terraform cannot take from a variable — a provider
/// per region (providers cannot be made with `for_each`) and a module
/// instance per region using it, then every instance in one map.
pub fn regions_tf(deployment: &Deployment) -> String {
    let mut text = String::from(
        "# Generated by meridian terraform-vars from regions/*.toml: do not edit.\n\n",
    );
    for name in deployment.regions.keys() {
        text.push_str(&region_block(name));
    }
    text.push_str("locals {\n  region_stacks = merge(\n");
    for name in deployment.regions.keys() {
        text.push_str(&format!("    {{ \"{name}\" = module.region_{name} }},\n"));
    }
    text.push_str("  )\n}\n");
    text
}

/// Every generated file of `terraform/envs/prod`, by name.
///
/// # Errors
/// As [`region_vars_of`].
pub fn generated(deployment: &Deployment) -> anyhow::Result<Vec<(String, String)>> {
    Ok(vec![
        ("regions.auto.tfvars.json".to_string(), tfvars(deployment)?),
        ("regions.tf".to_string(), regions_tf(deployment)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_client_blocks_stay_out_of_terraform() {
        assert!(is_loopback_block("127.3.0.0/16"));
        assert!(is_loopback_block("::1/128"));
        assert!(!is_loopback_block("13.212.0.0/15"));
        let deployment = Deployment::new(
            crate::local::BUILTIN_REGIONS
                .iter()
                .map(|(_, text)| Deployment::parse(text).expect("a shipped region file")),
        );
        let region = deployment.region("ap-southeast").expect("shipped");
        assert!(
            region
                .geodns
                .client_prefixes
                .contains(&"127.3.0.0/16".to_string())
        );
        let vars = region_vars(&deployment, region).expect("vars");
        assert_eq!(vars.client_prefixes, ["13.212.0.0/15", "52.76.0.0/15"]);
    }

    #[test]
    fn a_vpc_block_is_a_16_bit_network() {
        assert!(Ipv4Block::parse("10.10.0.0/16").is_ok());
        for (text, reason) in [
            ("10.10.0.0", "a.b.c.d/n"),
            ("10.10.0.0/8", "is a /16"),
            ("10.10.0.0/20", "is a /16"),
            ("10.10.1.0/16", "host bits"),
            ("10.10.0.x/16", "not an IPv4"),
        ] {
            let error = Ipv4Block::parse(text).expect_err(text);
            assert!(error.contains(reason), "{text}: {error}");
        }
        let a = Ipv4Block::parse("10.10.0.0/16").unwrap_or_else(|e| panic!("{e}"));
        let inside = Ipv4Block {
            network: u32::from(std::net::Ipv4Addr::new(10, 10, 128, 0)),
            prefix: 20,
        };
        let apart = Ipv4Block::parse("10.20.0.0/16").unwrap_or_else(|e| panic!("{e}"));
        assert!(a.overlaps(inside) && inside.overlaps(a));
        assert!(!a.overlaps(apart));
    }
}
