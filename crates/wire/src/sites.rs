//! Sites: where an id lives. A region whose users are sharded over several
//! store clusters runs one *site* per cluster (a full core over it); an
//! unsharded region is a single site named after the region. Every id
//! (`{uuid}@{region}`) belongs to one site, computed from the id and the
//! deployment's shard counts alone, so gateways and cores route without a
//! lookup (docs/foundationdb.md, "Sharding").

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::region_of;

/// Separates a region's name from a shard number in a site's name. Region
/// names are `[a-z0-9-]`, so no region is mistaken for a site, and Kafka
/// topic names allow it.
pub const SHARD_SEPARATOR: char = '_';

/// Most shards a region may have.
pub const MAX_SHARDS: u32 = 64;

/// How many shards each region has (1 for regions not listed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    shards: BTreeMap<String, u32>,
}

impl Topology {
    /// Every region unsharded.
    pub fn unsharded() -> Self {
        Self::default()
    }

    /// Regions with their shard counts (clamped to 1..=[`MAX_SHARDS`]).
    pub fn new(shards: impl IntoIterator<Item = (String, u32)>) -> Self {
        Self {
            shards: shards
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(region, n)| (region, n.min(MAX_SHARDS)))
                .collect(),
        }
    }

    /// Shards of `region` (1 when unsharded).
    pub fn shards_of(&self, region: &str) -> u32 {
        self.shards.get(region).copied().unwrap_or(1)
    }

    /// The name of `region`'s shard `shard`: the region itself when it is
    /// unsharded, else `{region}_{shard}`.
    pub fn site_name(&self, region: &str, shard: u32) -> String {
        if self.shards_of(region) <= 1 {
            region.to_string()
        } else {
            format!("{region}{SHARD_SEPARATOR}{shard}")
        }
    }

    /// Every site of `region`, in shard order.
    pub fn sites_of(&self, region: &str) -> Vec<String> {
        (0..self.shards_of(region))
            .map(|shard| self.site_name(region, shard))
            .collect()
    }

    /// The site `id` belongs to: its region, and in a sharded region the
    /// shard FNV-1a of the whole id picks. `None` for ids without a region
    /// (direct conversations, which every site with a member holds).
    pub fn site_of<'a>(&self, id: &'a str) -> Option<Cow<'a, str>> {
        let region = region_of(id)?;
        let shards = self.shards_of(region);
        if shards <= 1 {
            return Some(Cow::Borrowed(region));
        }
        Some(Cow::Owned(format!(
            "{region}{SHARD_SEPARATOR}{}",
            fnv1a(id) % shards
        )))
    }
}

/// The region a site belongs to.
pub fn region_of_site(site: &str) -> &str {
    site.split_once(SHARD_SEPARATOR)
        .map_or(site, |(region, _)| region)
}

/// FNV-1a, 32-bit: stable across builds and processes. It places ids on
/// shards and conversations on log partitions, neither of which may move
/// while data exists.
pub fn fnv1a(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsharded_regions_are_their_own_site() {
        let topology = Topology::new([("eu-west".to_string(), 1)]);
        assert_eq!(topology.site_of("a@eu-west").as_deref(), Some("eu-west"));
        assert_eq!(topology.sites_of("eu-west"), vec!["eu-west".to_string()]);
        assert_eq!(topology.site_of("dm-0a1b"), None);
        assert_eq!(region_of_site("eu-west"), "eu-west");
    }

    #[test]
    fn sharded_regions_spread_ids_by_hash_and_stably() {
        let topology = Topology::new([("us-east".to_string(), 2)]);
        assert_eq!(
            topology.sites_of("us-east"),
            vec!["us-east_0".to_string(), "us-east_1".to_string()]
        );
        let mut seen = BTreeMap::new();
        for i in 0..200 {
            let id = format!("0193b0c2-7d1e-7a00-8000-{i:012}@us-east");
            let site = topology.site_of(&id).expect("site").into_owned();
            assert_eq!(region_of_site(&site), "us-east");
            *seen.entry(site).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2, "both shards get ids: {seen:?}");
        assert!(seen.values().all(|n| *n > 60), "roughly even: {seen:?}");
        // Known FNV-1a value: placement must never change between builds.
        assert_eq!(fnv1a("a"), 0xe40c_292c);
        assert_eq!(
            topology.site_of("a@us-east").as_deref(),
            Some(format!("us-east_{}", fnv1a("a@us-east") % 2).as_str())
        );
    }
}
