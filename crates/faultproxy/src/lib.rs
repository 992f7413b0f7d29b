//! A TCP proxy between two endpoints that can delay, cut and heal the path.
//!
//! The kernel here has no `netem`, so a cross-region delay or a partition is
//! made in user space: every byte goes through this proxy, which holds each
//! chunk for the configured one-way delay (per direction, pipelined, so the
//! delay adds latency without limiting throughput) and, when cut, closes
//! every open connection and refuses new ones until healed — what a dead
//! link between regions looks like to both ends.
//!
//! # What it must not touch
//! Meridian's protocols: it moves bytes. Sockets only through the network
//! seam, so it runs wherever the components it sits between run.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use meridian_seams::SharedClock;
use meridian_seams::net::{Io, SharedNetwork};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Bytes buffered per direction while delayed.
const BUFFERED_CHUNKS: usize = 4096;

struct State {
    /// `true` while cut.
    cut: watch::Sender<bool>,
    delay: Mutex<Duration>,
}

/// A running proxy; dropping it stops accepting (open connections end when
/// their peers close).
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("addr", &self.addr).finish()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.state.cut.send_replace(true);
    }
}

impl Proxy {
    /// Listens on `listen` and forwards every connection to `target`, each
    /// direction delayed by `delay`.
    ///
    /// # Errors
    /// When `listen` cannot be bound.
    pub async fn start(
        network: SharedNetwork,
        clock: SharedClock,
        listen: SocketAddr,
        target: String,
        delay: Duration,
    ) -> std::io::Result<Self> {
        let mut listener = network.bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            cut: watch::channel(false).0,
            delay: Mutex::new(delay),
        });
        let shared = state.clone();
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok(inbound) = listener.accept().await else {
                    continue;
                };
                if *shared.cut.borrow() {
                    drop(inbound); // refused while cut
                    continue;
                }
                let (network, target, state, clock) = (
                    network.clone(),
                    target.clone(),
                    shared.clone(),
                    clock.clone(),
                );
                tokio::spawn(async move {
                    match network.connect(target.clone()).await {
                        Ok(outbound) => relay(inbound, outbound, state, clock).await,
                        Err(error) => {
                            tracing::debug!(%error, %target, "proxy cannot reach its target")
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            state,
            acceptor,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.state.cut.send_replace(true);
    }

    /// Accepts connections again.
    pub fn heal(&self) {
        self.state.cut.send_replace(false);
    }

    /// Changes the one-way delay of new chunks.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }
}

async fn relay(inbound: Io, outbound: Io, state: Arc<State>, clock: SharedClock) {
    let (in_read, in_write) = tokio::io::split(inbound);
    let (out_read, out_write) = tokio::io::split(outbound);
    let mut cut = state.cut.subscribe();
    let forward = pump(in_read, out_write, state.clone(), clock.clone());
    let backward = pump(out_read, in_write, state, clock);
    tokio::select! {
        _ = cut.wait_for(|cut| *cut) => {}
        () = async { tokio::join!(forward, backward); } => {}
    }
}

/// Copies one direction, holding each chunk until its delay has passed.
async fn pump<R, W>(mut from: R, mut to: W, state: Arc<State>, clock: SharedClock)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (chunks, mut due) = mpsc::channel::<(Duration, Bytes)>(BUFFERED_CHUNKS);
    let reader_clock = clock.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let delay = *state.delay.lock().unwrap_or_else(|p| p.into_inner());
                    let at = reader_clock.monotonic() + delay;
                    if chunks
                        .send((at, Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            let wait = at.saturating_sub(clock.monotonic());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use meridian_seams::SystemClock;
    use meridian_seams::net::TokioNetwork;

    use super::*;

    async fn echo_server(network: &SharedNetwork) -> SocketAddr {
        let mut listener = network
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok(io) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = tokio::io::split(io);
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(network: &SharedNetwork, proxy: &Proxy) -> std::io::Result<Vec<u8>> {
        let mut io = network.connect(proxy.addr().to_string()).await?;
        io.write_all(b"ping").await?;
        let mut got = vec![0u8; 4];
        io.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn forwards_then_cuts_then_heals() {
        let network = TokioNetwork::shared();
        let clock: SharedClock = Arc::new(SystemClock::new());
        let target = echo_server(&network).await;
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let proxy = Proxy::start(
            network.clone(),
            clock,
            any,
            target.to_string(),
            Duration::ZERO,
        )
        .await
        .expect("proxy");
        assert_eq!(
            round_trip(&network, &proxy).await.expect("through"),
            b"ping"
        );

        let mut open = network
            .connect(proxy.addr().to_string())
            .await
            .expect("connect");
        open.write_all(b"a").await.expect("write");
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.expect("echo");
        proxy.cut();
        // The open connection is closed and a new one gets nowhere.
        let mut rest = Vec::new();
        let closed = open.read_to_end(&mut rest).await;
        assert!(closed.is_err() || rest.is_empty());
        assert!(round_trip(&network, &proxy).await.is_err());

        proxy.heal();
        assert_eq!(round_trip(&network, &proxy).await.expect("healed"), b"ping");
    }

    #[tokio::test(start_paused = true)]
    async fn delays_each_direction() {
        let network = TokioNetwork::shared();
        let clock: SharedClock = Arc::new(SystemClock::new());
        let target = echo_server(&network).await;
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let proxy = Proxy::start(
            network.clone(),
            clock.clone(),
            any,
            target.to_string(),
            Duration::from_millis(35),
        )
        .await
        .expect("proxy");
        let started = clock.monotonic();
        assert_eq!(
            round_trip(&network, &proxy).await.expect("through"),
            b"ping"
        );
        let took = clock.monotonic() - started;
        assert!(
            took >= Duration::from_millis(70),
            "round trip took {took:?}"
        );
    }
}
