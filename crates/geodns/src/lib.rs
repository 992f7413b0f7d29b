//! GeoDNS for Meridian's clients: an authoritative DNS server for the
//! service name whose answers are the healthy gateways of the client's
//! region, so clients land on their nearest healthy region and leave a
//! failed one within one check interval plus the answers' TTL.
//!
//! # What this crate owns
//! - [`routing`]: the regions (client prefixes, gateways, latency table)
//!   and the choice of a region for a client address, failing over by
//!   latency when a region has no healthy gateway. Pure.
//! - [`health`]: each gateway's `/readyz` checked at an interval, with
//!   rise/fall thresholds (a drained gateway fails its check).
//! - [`probe`]: the HTTP check itself, over the network seam.
//! - [`server`]: the DNS protocol: A/AAAA/SRV/SOA/NS, EDNS Client Subnet
//!   echoed with its scope; [`serve`] runs it over UDP and TCP.
//!
//! # What it must not touch
//! Messaging, stores, sessions: a gateway is an address and a `/readyz`.
//! The region files are read by `meridian-region`, which builds the
//! [`routing::Routing`] this crate takes.

pub mod health;
pub mod probe;
pub mod routing;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use hickory_server::ServerFuture;

pub use health::{HealthBoard, HealthSettings, Probe};
/// The DNS protocol types (hickory's), for clients and tests of the server.
pub use hickory_server::proto as dns;
pub use routing::{Gateway, RegionRoute, Routing, RoutingError};
pub use server::{GeoDns, Zone};

/// How long a TCP client may take to send its question.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running GeoDNS server and its checker.
pub struct Running {
    server: ServerFuture<GeoDns>,
    checker: tokio::task::JoinHandle<()>,
    /// The gateways' health, for drains and for status.
    pub board: Arc<HealthBoard>,
}

impl Running {
    /// Stops answering and checking.
    pub async fn stop(mut self) {
        self.checker.abort();
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::debug!(%error, "GeoDNS stopped with an error");
        }
    }
}

/// Serves `zone` on `udp` and `tcp` (bound by the caller: DNS needs UDP,
/// which the network seam does not carry), checking every gateway of
/// `routing` with `probe`.
///
/// # Errors
/// When the zone's names are not valid DNS names.
pub fn serve(
    zone: Zone,
    routing: Routing,
    settings: HealthSettings,
    probe: Arc<dyn Probe>,
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
) -> Result<Running, server::ZoneError> {
    let routing = Arc::new(routing);
    let board = Arc::new(HealthBoard::new(&routing, settings));
    let handler = GeoDns::new(zone, routing.clone(), board.clone())?;
    let checker = tokio::spawn(health::run_checks(routing, board.clone(), probe));
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT);
    Ok(Running {
        server,
        checker,
        board,
    })
}
