//! The plan's edge: each region's gateways (several per region) and the
//! GeoDNS routing table built from the region files.
//!
//! With the local profile, a region's gateway `i` (1-based) listens on the
//! `[local] gateway` address moved up by `i - 1` in its last octet, same
//! port: `127.0.1.1:8010`, `127.0.1.2:8010`… Linux answers on all of
//! 127.0.0.0/8, so each region's gateways have addresses of their own and
//! a DNS answer says which region it sent a client to. With the production
//! profile they are `[geodns] gateways`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use meridian_geodns::{Gateway, RegionRoute, Routing};

use super::{Plan, Profile, parse_addr};
use crate::config::RegionConfig;

impl Plan {
    /// `region`'s gateways, in order: where clients reach each and where
    /// its `/readyz` is checked (its admin listener when the region file
    /// gives `[edge] gateway_admin_port`, else its client port).
    ///
    /// # Errors
    /// An address that does not parse; a local address that cannot be
    /// moved up (not IPv4, or past .255); a production region without
    /// `[geodns] gateways`.
    pub fn gateways(&self, region: &RegionConfig) -> anyhow::Result<Vec<Gateway>> {
        let addrs: Vec<SocketAddr> = match self.options.profile {
            Profile::Local => {
                let first = parse_addr(&region.local.gateway, "local gateway address")?;
                (0..self.options.gateways.max(1))
                    .map(|i| nth_local(first, i))
                    .collect::<anyhow::Result<_>>()
                    .with_context(|| format!("region {}", region.name))?
            }
            Profile::Production => {
                anyhow::ensure!(
                    !region.geodns.gateways.is_empty(),
                    "region {}: no [geodns] gateways (the addresses GeoDNS answers with)",
                    region.name
                );
                region
                    .geodns
                    .gateways
                    .iter()
                    .map(|text| parse_addr(text, "[geodns] gateway"))
                    .collect::<anyhow::Result<_>>()?
            }
        };
        Ok(addrs
            .into_iter()
            .map(|addr| Gateway {
                addr,
                check: SocketAddr::new(
                    addr.ip(),
                    region.edge.gateway_admin_port.unwrap_or(addr.port()),
                ),
            })
            .collect())
    }

    /// Where `region`'s gateway `index` (1-based) listens with the local
    /// profile.
    ///
    /// # Errors
    /// As [`Plan::gateways`], or an index beyond `--gateways`.
    pub fn local_gateway(&self, region: &RegionConfig, index: u8) -> anyhow::Result<SocketAddr> {
        anyhow::ensure!(index >= 1, "gateway indexes start at 1");
        let first = parse_addr(&region.local.gateway, "local gateway address")?;
        nth_local(first, index - 1).with_context(|| format!("region {}", region.name))
    }

    /// Where a gateway of `region` listening on `gateway` serves its admin
    /// listener, when the region file says (`[edge] gateway_admin_port`):
    /// the same address, that port.
    pub fn gateway_admin(&self, region: &RegionConfig, gateway: SocketAddr) -> Option<SocketAddr> {
        region
            .edge
            .gateway_admin_port
            .map(|port| SocketAddr::new(gateway.ip(), port))
    }

    /// The GeoDNS routing table of every region, for a server standing in
    /// `home` (where clients that match no prefix are sent).
    ///
    /// # Errors
    /// Bad prefixes or addresses in the region files, or a table
    /// [`Routing::new`] refuses.
    pub fn geodns_routing(&self, home: &str) -> anyhow::Result<Routing> {
        let mut regions = Vec::new();
        for region in self.deployment.regions.values() {
            let prefixes = region
                .geodns
                .client_prefixes
                .iter()
                .map(|text| {
                    text.parse()
                        .with_context(|| format!("region {}: client prefix `{text}`", region.name))
                })
                .collect::<anyhow::Result<_>>()?;
            regions.push(RegionRoute {
                name: region.name.clone(),
                prefixes,
                latency_ms: region.geodns.latency_ms.clone(),
                gateways: self.gateways(region)?,
            });
        }
        Ok(Routing::new(regions, home)?)
    }
}

/// `first` moved up by `steps` in its last octet.
fn nth_local(first: SocketAddr, steps: u8) -> anyhow::Result<SocketAddr> {
    let IpAddr::V4(v4) = first.ip() else {
        anyhow::bail!("several local gateways need an IPv4 [local] gateway address, not {first}");
    };
    let [a, b, c, d] = v4.octets();
    let last = d.checked_add(steps).with_context(|| {
        format!(
            "no room for {} gateways after {first}",
            u16::from(steps) + 1
        )
    })?;
    Ok(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(a, b, c, last)),
        first.port(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_gateways_follow_the_first_on_the_next_addresses() {
        let first: SocketAddr = "127.0.1.1:8010".parse().unwrap();
        assert_eq!(nth_local(first, 0).unwrap(), first);
        assert_eq!(
            nth_local(first, 2).unwrap(),
            "127.0.1.3:8010".parse().unwrap()
        );
        assert!(nth_local("127.0.1.250:1".parse().unwrap(), 10).is_err());
        assert!(nth_local("[::1]:1".parse().unwrap(), 1).is_err());
    }
}
