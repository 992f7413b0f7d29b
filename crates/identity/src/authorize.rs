//! Who may call what on a core: a tower layer on its gRPC server.
//!
//! With mutual TLS every connection arrived with a certificate the CA
//! signed (the handshake refused any other); this layer reads the identity
//! it names and checks the method against [`allowed`]:
//!
//! | method | callers |
//! |---|---|
//! | `Core/EnsureDirect` | cores (the creator's region making sure the peer's holds the chat) |
//! | `Core/GetUser` | gateways and cores (does a user homed here exist?) |
//! | every other `Core` method | gateways |
//! | `Replication/Link` | cores; the handler then checks that the link pulls for the caller's own region |
//! | anything else | nobody |
//!
//! The caller's [`Peer`] goes into the request's extensions, so a handler
//! can check what the request claims against who sent it. A refusal is a
//! gRPC status (`unauthenticated`, `permission_denied`) and counted in
//! `meridian_core_calls_refused_total`.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use rustls_pki_types::CertificateDer;
use tonic::transport::server::TlsConnectInfo;

use crate::credentials::identity_of;
use crate::{Identity, Role};

/// Who called, as established by [`AuthorizeLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Proven by a certificate of the deployment's CA.
    Verified(Identity),
    /// The server runs without TLS (`--insecure-core`): whoever reached
    /// the port, unproven.
    Insecure,
}

impl Peer {
    /// The caller of `request`; `None` when no [`AuthorizeLayer`] ran
    /// (a handler must then refuse: fail closed).
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Self> {
        request.extensions().get::<Self>()
    }

    /// Whether this caller may act for `region`: the core of that region,
    /// or anyone on an insecure server.
    pub fn is_core_of(&self, region: &str) -> bool {
        match self {
            Self::Verified(identity) => identity.role == Role::Core && identity.region == region,
            Self::Insecure => true,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Verified(identity) => identity.fmt(f),
            Self::Insecure => f.write_str("an unauthenticated caller"),
        }
    }
}

/// Whether `role` may call the gRPC method at `path`
/// (`/package.Service/Method`).
pub fn allowed(path: &str, role: Role) -> bool {
    let core = meridian_rpc::core::core_server::SERVICE_NAME;
    let replication = meridian_rpc::replication::replication_server::SERVICE_NAME;
    let Some((service, method)) = path.strip_prefix('/').and_then(|path| path.split_once('/'))
    else {
        return false;
    };
    if service == core {
        match method {
            "EnsureDirect" => role == Role::Core,
            "GetUser" => true,
            _ => role == Role::Gateway,
        }
    } else if service == replication {
        method == "Link" && role == Role::Core
    } else {
        false
    }
}

/// The identity a connection's address stands for, where addresses are
/// given out by whoever runs the network (the simulation).
pub type AddressIdentities = Arc<dyn Fn(IpAddr) -> Option<Identity> + Send + Sync>;

/// How a server learns who called.
#[derive(Clone)]
enum Callers {
    /// From the certificate of a mutual-TLS connection.
    MutualTls,
    /// From the connection's address (the simulation only).
    ByAddress(AddressIdentities),
    /// Not at all (`--insecure-core`).
    Insecure,
}

impl std::fmt::Debug for Callers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MutualTls => "MutualTls",
            Self::ByAddress(_) => "ByAddress",
            Self::Insecure => "Insecure",
        })
    }
}

/// The authorization layer of a core's gRPC server.
#[derive(Debug, Clone)]
pub struct AuthorizeLayer {
    callers: Callers,
}

impl AuthorizeLayer {
    /// For a server with mutual TLS: every call needs an identity allowed
    /// its method.
    pub fn mutual_tls() -> Self {
        Self {
            callers: Callers::MutualTls,
        }
    }

    /// For a server without TLS (`--insecure-core`): every call passes,
    /// as [`Peer::Insecure`].
    pub fn insecure() -> Self {
        Self {
            callers: Callers::Insecure,
        }
    }

    /// For a server whose callers are known by their address, each with
    /// the identity `identities` gives it, and then held to the same table
    /// as with mutual TLS. Only the deterministic simulation runs this:
    /// its TLS handshakes do not replay, and its hosts' addresses are its
    /// own to give.
    #[must_use]
    pub fn by_address(identities: AddressIdentities) -> Self {
        Self {
            callers: Callers::ByAddress(identities),
        }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            callers: self.callers.clone(),
        }
    }
}

/// The service [`AuthorizeLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    callers: Callers,
}

/// The identity of the certificates a TLS connection presented.
fn presented<B>(request: &http::Request<B>) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    // The seams' connections report their address as a `SocketAddr`; the
    // TLS layer wraps that.
    request
        .extensions()
        .get::<TlsConnectInfo<std::net::SocketAddr>>()
        .and_then(TlsConnectInfo::peer_certs)
}

/// The identity of the caller of `request` under `callers`; `None` on an
/// insecure server.
fn identify<B>(
    request: &http::Request<B>,
    callers: &Callers,
) -> Result<Option<Identity>, tonic::Status> {
    match callers {
        Callers::Insecure => Ok(None),
        Callers::MutualTls => {
            let certificates = presented(request).ok_or_else(|| {
                tonic::Status::unauthenticated("a client certificate is required")
            })?;
            let identity = certificates.first().and_then(identity_of).ok_or_else(|| {
                tonic::Status::permission_denied("the client certificate names no service identity")
            })?;
            Ok(Some(identity))
        }
        Callers::ByAddress(identities) => {
            let address = request
                .extensions()
                .get::<std::net::SocketAddr>()
                .ok_or_else(|| tonic::Status::unauthenticated("the caller's address is unknown"))?;
            let identity = identities(address.ip()).ok_or_else(|| {
                tonic::Status::unauthenticated(format!("no service identity at {}", address.ip()))
            })?;
            Ok(Some(identity))
        }
    }
}

/// The caller of `request` and whether it may call its method.
fn check<B>(request: &http::Request<B>, callers: &Callers) -> Result<Peer, tonic::Status> {
    let Some(identity) = identify(request, callers)? else {
        return Ok(Peer::Insecure);
    };
    let path = request.uri().path();
    if !allowed(path, identity.role) {
        return Err(tonic::Status::permission_denied(format!(
            "{identity} may not call {path}"
        )));
    }
    Ok(Peer::Verified(identity))
}

impl<S, B, R> tower::Service<http::Request<B>> for Authorize<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match check(&request, &self.callers) {
            Ok(peer) => {
                request.extensions_mut().insert(peer);
                self.inner.call(request).boxed()
            }
            Err(status) => {
                metrics::counter!(
                    "meridian_core_calls_refused_total",
                    "reason" => format!("{:?}", status.code())
                )
                .increment(1);
                tracing::warn!(
                    path = request.uri().path(),
                    reason = status.message(),
                    "call refused"
                );
                futures::future::ready(Ok(status.into_http())).boxed()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_table() {
        let core = |m: &str| format!("/meridian.core.v1.Core/{m}");
        assert!(allowed(&core("Session"), Role::Gateway));
        assert!(!allowed(&core("Session"), Role::Core));
        assert!(allowed(&core("EnsureDirect"), Role::Core));
        assert!(!allowed(&core("EnsureDirect"), Role::Gateway));
        assert!(allowed(&core("GetUser"), Role::Core));
        assert!(allowed(&core("GetUser"), Role::Gateway));
        let link = "/meridian.replication.v1.Replication/Link";
        assert!(allowed(link, Role::Core));
        assert!(!allowed(link, Role::Gateway));
        for path in [
            "/grpc.health.v1.Health/Check",
            "/meridian.replication.v1.Replication/Other",
            "",
            "/",
            "meridian.core.v1.Core/Session",
        ] {
            assert!(!allowed(path, Role::Core), "{path}");
            assert!(!allowed(path, Role::Gateway), "{path}");
        }
    }

    #[test]
    fn a_core_acts_only_for_its_region() {
        let peer = Peer::Verified(Identity::core("eu-west"));
        assert!(peer.is_core_of("eu-west"));
        assert!(!peer.is_core_of("us-east"));
        assert!(!Peer::Verified(Identity::gateway("eu-west")).is_core_of("eu-west"));
        assert!(Peer::Insecure.is_core_of("us-east"));
    }
}
