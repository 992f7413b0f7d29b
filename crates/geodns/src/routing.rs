//! Which region a client is sent to: its address against every region's
//! client prefixes (longest match wins), else the region this server
//! stands in; then, when that region has no healthy gateway, the nearest
//! region that has one by the preferred region's latency table.
//!
//! Pure: health comes in as a function, so the rules are tested here and
//! reused by the server and the simulation alike.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// One gateway GeoDNS may answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gateway {
    /// Where clients connect (the answer: its IP in A/AAAA, its port in SRV).
    pub addr: SocketAddr,
    /// Where its `/readyz` is checked (the client port, or an admin port).
    pub check: SocketAddr,
}

/// One region as GeoDNS routes to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionRoute {
    /// The region's name.
    pub name: String,
    /// Client address prefixes sent here.
    pub prefixes: Vec<IpNet>,
    /// Round-trip time from this region to others, milliseconds: the order
    /// in which its clients fail over.
    pub latency_ms: BTreeMap<String, u32>,
    /// Its gateways, in the order of the region file.
    pub gateways: Vec<Gateway>,
}

/// A routing table that cannot route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// No region at all.
    #[error("no region to route to")]
    NoRegions,
    /// The server's own region is not one of them.
    #[error("unknown home region {0}")]
    UnknownHome(String),
    /// A region without a gateway.
    #[error("region {0} lists no gateway")]
    NoGateways(String),
    /// A latency table naming a region that does not exist.
    #[error("region {region}: latency to unknown region {to}")]
    UnknownLatencyTarget {
        /// The region whose table it is.
        region: String,
        /// The unknown name.
        to: String,
    },
    /// One prefix claimed by two regions.
    #[error("prefix {prefix} is claimed by {first} and {second}")]
    SharedPrefix {
        /// The prefix.
        prefix: IpNet,
        /// One region.
        first: String,
        /// The other.
        second: String,
    },
}

/// How the client's region was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The EDNS Client Subnet option matched a prefix.
    ClientSubnet,
    /// The resolver's own address matched a prefix.
    Resolver,
    /// Nothing matched: the region this server stands in.
    Home,
}

impl Via {
    /// Its metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::ClientSubnet => "client_subnet",
            Self::Resolver => "resolver",
            Self::Home => "home",
        }
    }
}

/// Where a client is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The region its address belongs to.
    pub preferred: String,
    /// The region answered: the preferred one, or the nearest healthy one.
    pub region: String,
    /// How the preferred region was found.
    pub via: Via,
    /// The prefix length the answer holds for (RFC 7871 SCOPE
    /// PREFIX-LENGTH), for the client subnet given.
    pub scope_prefix: u8,
    /// The gateways to answer with: the region's healthy ones.
    pub gateways: Vec<Gateway>,
    /// No region had a healthy gateway: every gateway of the preferred
    /// region is answered (failing open, as an empty answer helps nobody).
    pub fail_open: bool,
}

/// The regions and their prefixes.
#[derive(Debug, Clone)]
pub struct Routing {
    regions: Vec<RegionRoute>,
    home: usize,
}

impl Routing {
    /// A routing table over `regions`, sending clients that match no prefix
    /// to `home` (the region this server stands in).
    ///
    /// # Errors
    /// See [`RoutingError`].
    pub fn new(mut regions: Vec<RegionRoute>, home: &str) -> Result<Self, RoutingError> {
        if regions.is_empty() {
            return Err(RoutingError::NoRegions);
        }
        regions.sort_by(|a, b| a.name.cmp(&b.name));
        let mut owners: BTreeMap<IpNet, &str> = BTreeMap::new();
        for region in &regions {
            if region.gateways.is_empty() {
                return Err(RoutingError::NoGateways(region.name.clone()));
            }
            if let Some(to) = region
                .latency_ms
                .keys()
                .find(|to| !regions.iter().any(|r| &r.name == *to))
            {
                return Err(RoutingError::UnknownLatencyTarget {
                    region: region.name.clone(),
                    to: to.clone(),
                });
            }
            for prefix in &region.prefixes {
                let prefix = prefix.trunc();
                if let Some(first) = owners.insert(prefix, &region.name) {
                    return Err(RoutingError::SharedPrefix {
                        prefix,
                        first: first.to_string(),
                        second: region.name.clone(),
                    });
                }
            }
        }
        let home = regions
            .iter()
            .position(|r| r.name == home)
            .ok_or_else(|| RoutingError::UnknownHome(home.to_string()))?;
        Ok(Self { regions, home })
    }

    /// Every region, by name.
    pub fn regions(&self) -> &[RegionRoute] {
        &self.regions
    }

    /// The region of `client` (its subnet's address and the source prefix
    /// length it came with), else of `resolver`, else home.
    fn preferred(&self, client: Option<(IpAddr, u8)>, resolver: IpAddr) -> (usize, Via, u8) {
        match client {
            // A client subnet is where the client is; the resolver may be
            // anywhere (a public resolver's address says nothing).
            Some((address, _)) => match self.matching(address) {
                Some((region, scope)) => (region, Via::ClientSubnet, scope),
                // The answer for addresses in no prefix: valid for as much
                // of the client's neighbourhood as no prefix reaches into.
                None => (self.home, Via::Home, self.unclaimed_scope(address, 0)),
            },
            None => match self.matching(resolver) {
                Some((region, _)) => (region, Via::Resolver, 0),
                None => (self.home, Via::Home, 0),
            },
        }
    }

    /// The region whose longest prefix contains `address`, and the scope
    /// the answer holds for.
    fn matching(&self, address: IpAddr) -> Option<(usize, u8)> {
        let (region, longest) = self
            .regions
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.prefixes.iter().map(move |p| (i, p)))
            .filter(|(_, prefix)| prefix.contains(&address))
            .max_by_key(|(_, prefix)| prefix.prefix_len())?;
        let scope = self.unclaimed_scope(address, longest.prefix_len());
        Some((region, scope))
    }

    /// The shortest prefix length, at least `from`, at which `address`'s
    /// network overlaps no longer prefix that does not contain it: the
    /// answer for `address` then holds for that whole network.
    fn unclaimed_scope(&self, address: IpAddr, from: u8) -> u8 {
        self.regions
            .iter()
            .flat_map(|r| r.prefixes.iter())
            .filter(|p| p.prefix_len() > from && !p.contains(&address))
            .filter_map(|p| common_prefix_len(address, p.network()))
            .map(|common| common + 1)
            .fold(from, u8::max)
    }

    /// Where `client` is sent, given each gateway's health.
    pub fn choose(
        &self,
        client: Option<(IpAddr, u8)>,
        resolver: IpAddr,
        healthy: impl Fn(&Gateway) -> bool,
    ) -> Choice {
        let (preferred, via, scope_prefix) = self.preferred(client, resolver);
        let preferred_region = &self.regions[preferred];
        for candidate in self.failover_order(preferred) {
            let region = &self.regions[candidate];
            let gateways: Vec<Gateway> = region
                .gateways
                .iter()
                .filter(|g| healthy(g))
                .copied()
                .collect();
            if !gateways.is_empty() {
                return Choice {
                    preferred: preferred_region.name.clone(),
                    region: region.name.clone(),
                    via,
                    scope_prefix,
                    gateways,
                    fail_open: false,
                };
            }
        }
        Choice {
            preferred: preferred_region.name.clone(),
            region: preferred_region.name.clone(),
            via,
            scope_prefix,
            gateways: preferred_region.gateways.clone(),
            fail_open: true,
        }
    }

    /// The region itself, then the others by its latency table (unknown
    /// latencies last, by name).
    fn failover_order(&self, preferred: usize) -> Vec<usize> {
        let table = &self.regions[preferred].latency_ms;
        let mut others: Vec<usize> = (0..self.regions.len())
            .filter(|&i| i != preferred)
            .collect();
        others.sort_by_key(|&i| {
            let name = &self.regions[i].name;
            (table.get(name).copied().unwrap_or(u32::MAX), name.clone())
        });
        std::iter::once(preferred).chain(others).collect()
    }
}

/// How many leading bits `a` and `b` share; `None` across families.
fn common_prefix_len(a: IpAddr, b: IpAddr) -> Option<u8> {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            Some((u32::from(a) ^ u32::from(b)).leading_zeros().min(32) as u8)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            Some((u128::from(a) ^ u128::from(b)).leading_zeros().min(128) as u8)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(text: &str) -> Gateway {
        let addr = text.parse().expect("an address");
        Gateway { addr, check: addr }
    }

    fn region(name: &str, prefixes: &[&str], latency: &[(&str, u32)], gw: &[&str]) -> RegionRoute {
        RegionRoute {
            name: name.into(),
            prefixes: prefixes
                .iter()
                .map(|p| p.parse().expect("a prefix"))
                .collect(),
            latency_ms: latency.iter().map(|(n, ms)| ((*n).into(), *ms)).collect(),
            gateways: gw.iter().map(|g| gateway(g)).collect(),
        }
    }

    fn routing() -> Routing {
        Routing::new(
            vec![
                region(
                    "us-east",
                    &["3.0.0.0/8", "52.0.0.0/8"],
                    &[("eu-west", 75), ("ap-southeast", 210)],
                    &["127.0.1.1:8010", "127.0.1.2:8010"],
                ),
                region(
                    "eu-west",
                    &["18.130.0.0/16", "52.56.0.0/14"],
                    &[("us-east", 75), ("ap-southeast", 160)],
                    &["127.0.2.1:8020"],
                ),
                region(
                    "ap-southeast",
                    &["13.212.0.0/15"],
                    &[("eu-west", 160), ("us-east", 210)],
                    &["127.0.3.1:8030"],
                ),
            ],
            "eu-west",
        )
        .expect("a valid table")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    const RESOLVER: &str = "192.0.2.53";

    #[test]
    fn a_client_subnet_goes_to_its_region_with_the_prefix_as_scope() {
        let choice = routing().choose(Some((ip("3.4.5.0"), 24)), ip(RESOLVER), |_| true);
        assert_eq!(choice.region, "us-east");
        assert_eq!(choice.via, Via::ClientSubnet);
        assert_eq!(choice.scope_prefix, 8);
        assert_eq!(choice.gateways.len(), 2);
        assert!(!choice.fail_open);
    }

    #[test]
    fn the_longest_prefix_wins_and_narrows_the_scope_of_the_shorter() {
        let table = routing();
        // 52.56.0.0/14 is eu-west's inside us-east's 52.0.0.0/8.
        let inside = table.choose(Some((ip("52.57.1.0"), 24)), ip(RESOLVER), |_| true);
        assert_eq!(
            (inside.region.as_str(), inside.scope_prefix),
            ("eu-west", 14)
        );
        // 52.1.0.0 is us-east's, but the answer must not cover 52.56/14:
        // 52.1 and 52.56 share their first 10 bits, so it holds for /11.
        let outside = table.choose(Some((ip("52.1.0.0"), 24)), ip(RESOLVER), |_| true);
        assert_eq!(outside.region, "us-east");
        assert_eq!(outside.scope_prefix, 11);
        let covered: IpNet = format!("52.1.0.0/{}", outside.scope_prefix)
            .parse()
            .unwrap();
        let nested: IpNet = "52.56.0.0/14".parse().unwrap();
        assert!(!covered.contains(&nested) && !nested.contains(&covered));
    }

    #[test]
    fn without_a_client_subnet_the_resolver_address_decides() {
        let choice = routing().choose(None, ip("13.213.0.9"), |_| true);
        assert_eq!(
            (choice.region.as_str(), choice.via),
            ("ap-southeast", Via::Resolver)
        );
    }

    #[test]
    fn a_client_in_no_prefix_goes_home_with_a_scope_that_avoids_every_prefix() {
        let choice = routing().choose(Some((ip("100.64.1.0"), 24)), ip(RESOLVER), |_| true);
        assert_eq!((choice.region.as_str(), choice.via), ("eu-west", Via::Home));
        let covered: IpNet = format!("100.64.1.0/{}", choice.scope_prefix)
            .parse()
            .unwrap();
        for region in routing().regions() {
            for prefix in &region.prefixes {
                assert!(!covered.contains(prefix) && !prefix.contains(&covered.network()));
            }
        }
    }

    #[test]
    fn an_unhealthy_region_fails_over_by_its_latency_table() {
        let table = routing();
        let down = |g: &Gateway| g.addr.ip() != ip("127.0.1.1") && g.addr.ip() != ip("127.0.1.2");
        let choice = table.choose(Some((ip("3.4.5.0"), 24)), ip(RESOLVER), down);
        assert_eq!(
            (choice.preferred.as_str(), choice.region.as_str()),
            ("us-east", "eu-west")
        );
        // Only its healthy gateways are answered.
        let one_down = |g: &Gateway| g.addr.ip() != ip("127.0.1.1");
        let choice = table.choose(Some((ip("3.4.5.0"), 24)), ip(RESOLVER), one_down);
        assert_eq!(choice.gateways, vec![gateway("127.0.1.2:8010")]);
    }

    #[test]
    fn with_nothing_healthy_the_preferred_region_is_answered_whole() {
        let choice = routing().choose(Some((ip("3.4.5.0"), 24)), ip(RESOLVER), |_| false);
        assert!(choice.fail_open);
        assert_eq!(choice.region, "us-east");
        assert_eq!(choice.gateways.len(), 2);
    }

    #[test]
    fn bad_tables_are_refused() {
        let us = region("us-east", &["3.0.0.0/8"], &[], &["127.0.1.1:1"]);
        let eu = region("eu-west", &["3.0.0.0/8"], &[], &["127.0.2.1:1"]);
        assert!(matches!(
            Routing::new(vec![us.clone(), eu], "us-east"),
            Err(RoutingError::SharedPrefix { .. })
        ));
        assert_eq!(
            Routing::new(vec![us.clone()], "mars").unwrap_err(),
            RoutingError::UnknownHome("mars".into())
        );
        let lonely = region("eu-west", &[], &[("mars", 1)], &["127.0.2.1:1"]);
        assert!(matches!(
            Routing::new(vec![us, lonely], "us-east"),
            Err(RoutingError::UnknownLatencyTarget { .. })
        ));
        assert_eq!(
            Routing::new(vec![], "x").unwrap_err(),
            RoutingError::NoRegions
        );
    }
}
