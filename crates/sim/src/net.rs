//! The network seam over turmoil's simulated TCP.

use std::io;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use meridian_seams::net::{Io, Listener, Network};

/// Binds and connects on turmoil's simulated network (host names resolve
/// through turmoil's DNS).
#[derive(Debug, Default, Clone, Copy)]
pub struct TurmoilNetwork;

struct TurmoilListener(turmoil::net::TcpListener);

impl Listener for TurmoilListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Io>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            Ok(Io::new(stream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Network for TurmoilNetwork {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(addr).await?;
            Ok(Box::new(TurmoilListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Io>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr.as_str()).await?;
            let peer = stream.peer_addr()?;
            Ok(Io::new(stream, peer))
        })
    }
}
