//! Finding gateways by name: the service's SRV record
//! (`_meridian._tcp.<service>`) through a configured DNS resolver, so a
//! client goes where GeoDNS sends it — its region's healthy gateways, or
//! the nearest healthy region's — and follows when that changes.
//!
//! Answers are cached for their TTL; [`Discovery::gateways`] with `fresh`
//! skips the cache, which a client does after every gateway it knew
//! failed.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Name, TokioResolver};

use crate::{Rest, SdkError};

/// The service's gateways, as DNS answers them.
#[derive(Clone)]
pub struct Discovery {
    resolver: TokioResolver,
    /// The DNS server asked.
    nameserver: SocketAddr,
    srv: Name,
    /// `http` or `https`.
    scheme: &'static str,
    /// The client settings (TLS roots) every gateway's client starts from.
    template: Rest,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("srv", &self.srv)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Resolves `service` (`chat.meridian.test`) through the DNS server at
    /// `nameserver`, over UDP (TCP when an answer is truncated). Gateway
    /// clients are made like `template` (its TLS roots; `https` when its
    /// base is).
    ///
    /// # Errors
    /// [`SdkError::Discovery`] when `service` is not a DNS name.
    pub fn new(nameserver: SocketAddr, service: &str, template: &Rest) -> Result<Self, SdkError> {
        let srv = Name::from_ascii(format!("_meridian._tcp.{}", service.trim_end_matches('.')))
            .map_err(|e| SdkError::Discovery(format!("`{service}` is not a DNS name: {e}")))?;
        let mut srv = srv;
        srv.set_fqdn(true);
        let resolver = resolver(nameserver, None);
        let scheme = if template.base().starts_with("https://") {
            "https"
        } else {
            "http"
        };
        Ok(Self {
            resolver,
            nameserver,
            srv,
            scheme,
            template: template.clone(),
        })
    }

    /// Asks from `source` (an address of this host, any port): the DNS
    /// server sees its questions come from there. A server that locates
    /// clients by the asking resolver's address (GeoDNS without an EDNS
    /// Client Subnet) then answers as it would a client there; locally,
    /// a loopback address in a region's `client_prefixes` stands for a
    /// client on that region's continent.
    #[must_use]
    pub fn from_source(mut self, source: IpAddr) -> Self {
        self.resolver = resolver(self.nameserver, Some(source));
        self
    }

    /// The gateways DNS answers now, in its order (which GeoDNS rotates).
    /// `fresh` skips answers cached from before.
    ///
    /// # Errors
    /// [`SdkError::Discovery`] when the name does not resolve or has no
    /// gateway.
    pub async fn gateways(&self, fresh: bool) -> Result<Vec<Rest>, SdkError> {
        if fresh {
            self.resolver.clear_cache();
        }
        let lookup = self
            .resolver
            .lookup(self.srv.clone(), RecordType::SRV)
            .await
            .map_err(|e| SdkError::Discovery(format!("{}: {e}", self.srv)))?;
        // Targets' addresses come in the additional section.
        let mut addresses: BTreeMap<Name, Vec<IpAddr>> = BTreeMap::new();
        let mut targets = Vec::new();
        for record in lookup.records() {
            match record.data() {
                RData::SRV(srv) => targets.push((srv.target().clone(), srv.port())),
                RData::A(a) => addresses
                    .entry(record.name().clone())
                    .or_default()
                    .push(IpAddr::V4(a.0)),
                RData::AAAA(a) => addresses
                    .entry(record.name().clone())
                    .or_default()
                    .push(IpAddr::V6(a.0)),
                _ => {}
            }
        }
        let mut gateways = Vec::new();
        for (target, port) in targets {
            let ips = match addresses.get(&target) {
                Some(ips) => ips.clone(),
                None => self
                    .resolver
                    .lookup_ip(target.clone())
                    .await
                    .map(|ips| ips.iter().collect())
                    .unwrap_or_default(),
            };
            for ip in ips {
                let addr = SocketAddr::new(ip, port);
                gateways.push(self.template.at(format!("{}://{addr}", self.scheme)));
            }
        }
        if gateways.is_empty() {
            return Err(SdkError::Discovery(format!(
                "{}: no gateway answered",
                self.srv
            )));
        }
        Ok(gateways)
    }
}

/// A resolver asking only `nameserver` (over UDP, TCP when an answer is
/// truncated), from `source` when given.
fn resolver(nameserver: SocketAddr, source: Option<IpAddr>) -> TokioResolver {
    let mut servers =
        NameServerConfigGroup::from_ips_clear(&[nameserver.ip()], nameserver.port(), true);
    for server in servers.iter_mut() {
        server.bind_addr = source.map(|ip| SocketAddr::new(ip, 0));
    }
    let config = ResolverConfig::from_parts(None, Vec::new(), servers);
    let mut options = ResolverOpts::default();
    // One server: ask it, and ask again soon.
    options.attempts = 2;
    options.timeout = std::time::Duration::from_secs(2);
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(options)
        .build()
}
