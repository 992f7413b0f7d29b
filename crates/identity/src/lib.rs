//! Who is on the other end of a core's gRPC connection, proven by mutual
//! TLS, and what that party may call.
//!
//! Every service process holds one identity, named in its certificate as a
//! DNS subject alternative name: `gateway.<region>` for a region's
//! gateways, `core.<region>` for a region's cores (every shard of a sharded
//! region shares it). One CA, the deployment's, signs them all; a
//! connection is accepted only with a certificate it signed.
//!
//! - [`Identity`]: the names, parsed and printed.
//! - [`credentials`]: an identity's certificate, key and CA as tonic's TLS
//!   configuration for serving ([`ServiceCredentials::server_tls`]) and for
//!   calling a core of a given region ([`ServiceCredentials::client_tls`]),
//!   loaded from PEM files or issued in memory.
//! - [`pki`]: the local CA behind `meridian certs init`, and in-memory
//!   credentials for tests and the simulation.
//! - [`edge`]: the gateway's own certificate towards its clients (TLS at
//!   the edge), which asks nothing of them in return.
//! - [`authorize`]: the tower layer on a core's gRPC server that says which
//!   identity may call which method, and puts the caller's [`Peer`] in the
//!   request for handlers that check more (a replication link may only be
//!   opened by the core of the region it pulls for).
//!
//! # What it must not touch
//! Sockets, stores and domain rules: it names parties and decides access
//! by method; the network seam carries the bytes, and the services check
//! what the request itself claims against the [`Peer`] given here.

pub mod authorize;
pub mod credentials;
pub mod edge;
pub mod pki;

pub use authorize::{AddressIdentities, AuthorizeLayer, Peer};
pub use credentials::{CredentialsError, ServiceCredentials};
pub use edge::EdgeCredentials;

use std::fmt;

/// What a service process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A region's client edge: calls cores on behalf of authenticated
    /// devices.
    Gateway,
    /// A region's core: serves gateways, calls other regions' cores, pulls
    /// their replication logs.
    Core,
}

impl Role {
    /// The name's first label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Core => "core",
        }
    }
}

/// A service identity: a role in a region, written `<role>.<region>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// What the process is.
    pub role: Role,
    /// The region it belongs to (never a shard's site name).
    pub region: String,
}

impl Identity {
    /// `gateway.<region>`.
    pub fn gateway(region: impl Into<String>) -> Self {
        Self {
            role: Role::Gateway,
            region: region.into(),
        }
    }

    /// `core.<region>`.
    pub fn core(region: impl Into<String>) -> Self {
        Self {
            role: Role::Core,
            region: region.into(),
        }
    }

    /// The DNS name a certificate of this identity carries.
    pub fn dns_name(&self) -> String {
        format!("{}.{}", self.role.label(), self.region)
    }

    /// The identity a certificate name denotes, if it is one: a role label,
    /// a dot, and a region name (lowercase letters, digits and hyphens).
    pub fn parse(name: &str) -> Option<Self> {
        let (role, region) = name.split_once('.')?;
        let role = match role {
            "gateway" => Role::Gateway,
            "core" => Role::Core,
            _ => return None,
        };
        let valid_region = !region.is_empty()
            && region.len() <= 63
            && !region.starts_with('-')
            && !region.ends_with('-')
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        valid_region.then(|| Self {
            role,
            region: region.to_string(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.role.label(), self.region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for identity in [Identity::gateway("eu-west"), Identity::core("us-east")] {
            assert_eq!(Identity::parse(&identity.dns_name()), Some(identity));
        }
        assert_eq!(
            Identity::core("ap-southeast").to_string(),
            "core.ap-southeast"
        );
    }

    #[test]
    fn other_names_are_no_identity() {
        for name in [
            "core",
            "core.",
            "admin.us-east",
            "core.us-east.meridian.internal",
            "core.US-EAST",
            "core.us_east_1",
            "core.-us",
            "localhost",
        ] {
            assert_eq!(Identity::parse(name), None, "{name}");
        }
    }
}
