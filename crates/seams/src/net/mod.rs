//! The network seam: listeners and connectors are injected, never created
//! by components themselves.
//!
//! [`Network`] is the factory every component receives. [`TokioNetwork`] is
//! the real one (loopback or any interface); the simulation supplies one over
//! turmoil's TCP. Adapters here plug a [`Listener`] into `axum::serve` and
//! tonic's `serve_with_incoming`, and a [`Network`] into a tonic `Channel`.

mod prepared;
mod proxy;
mod tls;

pub use proxy::{Cidr, is_trusted, proxy_protocol_listener, read_header};
pub use tls::tls_listener;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte stream both ways: what a listener accepts and a connector opens.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

/// One accepted or opened connection, whatever the transport underneath.
pub struct Io {
    inner: Box<dyn AsyncStream>,
    peer: SocketAddr,
}

impl Io {
    /// Wraps a transport stream connected to `peer`.
    pub fn new(inner: impl AsyncStream, peer: SocketAddr) -> Self {
        Self {
            inner: Box::new(inner),
            peer,
        }
    }

    /// The remote address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Takes `peer` as the remote address: the client a trusted proxy
    /// named (PROXY protocol).
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
    }
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Io {
    type ConnectInfo = SocketAddr;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer
    }
}

/// Accepts connections on a bound address.
pub trait Listener: Send + 'static {
    /// Waits for the next connection.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Io>>;
    /// The address actually bound (port 0 resolved).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Binds listeners and opens connections: the one network door.
pub trait Network: Send + Sync + 'static {
    /// Binds a listener on `addr` (port 0 picks a free port).
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>>;
    /// Opens a connection to `addr` (`host:port`).
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Io>>;
}

/// A network shared between components.
pub type SharedNetwork = Arc<dyn Network>;

/// The operating system's TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioNetwork;

impl TokioNetwork {
    /// The shared form.
    pub fn shared() -> SharedNetwork {
        Arc::new(Self)
    }
}

impl TokioNetwork {
    /// A DNS server's sockets: UDP and TCP on one port of `addr` (port 0:
    /// one the kernel picks, the same for both). DNS is UDP first, which
    /// [`Network`] does not carry, and hickory's server takes tokio's own
    /// sockets; they are bound here, in the seam, like every listener.
    ///
    /// # Errors
    /// When either socket cannot be bound.
    #[allow(clippy::disallowed_methods)] // this is the seam
    pub async fn bind_dns(
        addr: SocketAddr,
    ) -> io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let tcp = tokio::net::TcpListener::bind(udp.local_addr()?).await?;
        Ok((udp, tcp))
    }
}

struct TokioListener(tokio::net::TcpListener);

impl Listener for TokioListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Io>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            // Small frames (acks, deliveries) must not wait for Nagle.
            stream.set_nodelay(true)?;
            Ok(Io::new(stream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Network for TokioNetwork {
    #[allow(clippy::disallowed_methods)] // this is the seam
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            Ok(Box::new(TokioListener(listener)) as Box<dyn Listener>)
        })
    }

    #[allow(clippy::disallowed_methods)] // this is the seam
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Io>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            let peer = stream.peer_addr()?;
            Ok(Io::new(stream, peer))
        })
    }
}

/// Adapts a [`Listener`] to `axum::serve`.
pub struct AxumListener {
    inner: Box<dyn Listener>,
}

impl AxumListener {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Listener>) -> Self {
        Self { inner }
    }
}

impl axum::serve::Listener for AxumListener {
    type Io = Io;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok(io) => {
                    let peer = io.peer();
                    return (io, peer);
                }
                // Running out of file descriptors or a reset during the
                // handshake must not stop the server: log, breathe, go on.
                Err(error) => {
                    tracing_free_log(&error);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

fn tracing_free_log(error: &io::Error) {
    // seams stays free of the tracing dependency; stderr is enough for a
    // condition operators see as "accept error" bursts.
    eprintln!("accept error: {error}");
}

/// Turns a [`Listener`] into the stream tonic's `serve_with_incoming` takes.
pub fn incoming(listener: Box<dyn Listener>) -> impl Stream<Item = io::Result<Io>> + Send {
    futures::stream::unfold(listener, |mut listener| async move {
        let next = listener.accept().await;
        Some((next, listener))
    })
}

/// HTTP/2 flow-control window per stream of Meridian's gRPC connections, bytes.
pub const STREAM_WINDOW: u32 = 4 << 20;
/// HTTP/2 flow-control window per connection, bytes.
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// A tonic channel to `addr` (`host:port`) whose connections go through
/// `network`, under TLS when `tls` is given (the peer's identity and this
/// side's certificate are in it: `meridian_identity`), else in plaintext.
///
/// The channel connects lazily and reconnects on its own after a failure.
/// HTTP/2 pings every `keepalive` (answer within half of it) detect a
/// connection that died silently, so streams on it fail and are re-opened.
///
/// # Errors
/// When `addr` does not form a valid URI.
pub fn tonic_channel(
    network: SharedNetwork,
    addr: &str,
    keepalive: std::time::Duration,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic_channel_with_deadline(network, addr, keepalive, None, tls)
}

/// [`tonic_channel`] whose every call must answer within `deadline`,
/// enforced on this side (it is not sent as `grpc-timeout`). For unary
/// calls only: a stream would be cut when the deadline passes.
///
/// # Errors
/// When `addr` does not form a valid URI.
pub fn tonic_channel_with_deadline(
    network: SharedNetwork,
    addr: &str,
    keepalive: std::time::Duration,
    deadline: Option<std::time::Duration>,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    // HTTP/2's default 64 KiB windows allow 64 KiB per round trip: across
    // a 70 ms cross-region round trip that is under 1 MB/s, less than one
    // replication link or session stream carries. Larger windows cost
    // nothing until data is actually in flight.
    // The connector below opens the TCP connection; tonic runs the TLS
    // handshake over it when the scheme says https.
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive / 2)
        .keep_alive_while_idle(true);
    if let Some(deadline) = deadline {
        endpoint = endpoint.timeout(deadline);
    }
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    let target = addr.to_string();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let network = network.clone();
        let target = target.clone();
        async move {
            let io = network.connect(target).await?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(io))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// The peer address of a connection accepted through [`AxumListener`], for
/// axum's `ConnectInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, AxumListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, AxumListener>) -> Self {
        Self(*stream.remote_addr())
    }
}
