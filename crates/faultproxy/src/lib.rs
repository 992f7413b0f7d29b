//! A TCP proxy between two endpoints that can delay, cut and heal the path.
//!
//! The kernel here has no `netem`, so a cross-region delay or a partition is
//! made in user space: every byte goes through this proxy, which holds each
//! chunk for the configured one-way delay (per direction, pipelined, so the
//! delay adds latency without limiting throughput) and, when cut, closes
//! every open connection and closes each new one at once until healed — what a dead
//! link between regions looks like to both ends.
//!
//! Finer faults: the first two, like the delay, apply to both directions
//! (each direction of each connection paced on its own); a stall is per
//! direction.
//! - **jitter**: each chunk's delay is drawn from `delay ± jitter` (from a
//!   seeded generator; chunks keep their order, as TCP's bytes do);
//! - **bandwidth**: a direction forwards at most so many bytes a second;
//! - **one-way stall** ([`Proxy::stall`]): a direction forwards nothing
//!   while the other flows, connections stay open and new ones are
//!   accepted — what a path dropping one direction's packets looks like
//!   to TCP, which keeps retransmitting; once [resumed](Proxy::resume),
//!   what waited is delivered, as TCP's retransmissions would.
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

/// One direction of the proxied connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting client to the target.
    Forward,
    /// From the target back to the client.
    Backward,
}

struct State {
    /// `true` while cut.
    cut: watch::Sender<bool>,
    shape: Mutex<Shape>,
    /// Per direction ([`Direction::Forward`] first): `true` while stalled.
    stalled: [watch::Sender<bool>; 2],
    /// Draws each chunk's jitter.
    rng: Mutex<meridian_seams::Rng>,
}

/// How bytes are held on their way, in both directions.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    delay: Duration,
    jitter: Duration,
    /// Bytes a second per direction; `None`: unlimited.
    bandwidth: Option<u64>,
}

impl State {
    fn shape(&self) -> Shape {
        *self.shape.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reshape(&self, change: impl FnOnce(&mut Shape)) {
        change(&mut self.shape.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// This chunk's delay: `delay ± jitter`, uniformly.
    fn draw_delay(&self) -> Duration {
        let Shape { delay, jitter, .. } = self.shape();
        if jitter.is_zero() {
            return delay;
        }
        let span = jitter.as_micros() as u64;
        let offset = self
            .rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .below(2 * span + 1);
        (delay + Duration::from_micros(offset)).saturating_sub(jitter)
    }
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
            shape: Mutex::new(Shape {
                delay,
                ..Shape::default()
            }),
            stalled: [watch::channel(false).0, watch::channel(false).0],
            rng: Mutex::new(meridian_seams::Rng::seeded(0)),
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

    /// Closes every open connection, and each new one as soon as it is
    /// accepted, until [`Proxy::heal`].
    pub fn cut(&self) {
        self.state.cut.send_replace(true);
    }

    /// Accepts connections again.
    pub fn heal(&self) {
        self.state.cut.send_replace(false);
    }

    /// Changes the one-way delay of new chunks.
    pub fn set_delay(&self, delay: Duration) {
        self.state.reshape(|shape| shape.delay = delay);
    }

    /// Varies each new chunk's delay by up to `jitter` either way, drawn
    /// from a generator seeded with `seed`.
    pub fn set_jitter(&self, jitter: Duration, seed: u64) {
        *self.state.rng.lock().unwrap_or_else(|p| p.into_inner()) =
            meridian_seams::Rng::seeded(seed);
        self.state.reshape(|shape| shape.jitter = jitter);
    }

    /// Limits each direction of each connection to `bytes_per_second`
    /// (`None`: unlimited).
    pub fn set_bandwidth(&self, bytes_per_second: Option<u64>) {
        self.state
            .reshape(|shape| shape.bandwidth = bytes_per_second.filter(|rate| *rate > 0));
    }

    /// Forwards nothing in `direction` (the other flows) until
    /// [`Proxy::resume`].
    pub fn stall(&self, direction: Direction) {
        self.state.stalled[direction as usize].send_replace(true);
    }

    /// Forwards `direction` again, what waited first.
    pub fn resume(&self, direction: Direction) {
        self.state.stalled[direction as usize].send_replace(false);
    }
}

async fn relay(inbound: Io, outbound: Io, state: Arc<State>, clock: SharedClock) {
    let (in_read, in_write) = tokio::io::split(inbound);
    let (out_read, out_write) = tokio::io::split(outbound);
    let mut cut = state.cut.subscribe();
    let forward = pump(
        in_read,
        out_write,
        Direction::Forward,
        state.clone(),
        clock.clone(),
    );
    let backward = pump(out_read, in_write, Direction::Backward, state, clock);
    tokio::select! {
        _ = cut.wait_for(|cut| *cut) => {}
        () = async { tokio::join!(forward, backward); } => {}
    }
}

/// Copies one direction, holding each chunk until its delay has passed,
/// at most at the bandwidth, and not at all while the direction stalls.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    direction: Direction,
    state: Arc<State>,
    clock: SharedClock,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (chunks, mut due) = mpsc::channel::<(Duration, Bytes)>(BUFFERED_CHUNKS);
    let reader_clock = clock.clone();
    let reader_state = state.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        // Jitter never reorders: a chunk is due no earlier than the last.
        let mut last_due = Duration::ZERO;
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let at = (reader_clock.monotonic() + reader_state.draw_delay()).max(last_due);
                    last_due = at;
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
    let mut stalled = state.stalled[direction as usize].subscribe();
    let writer = async move {
        // When the bandwidth lets the next byte go.
        let mut free_at = Duration::ZERO;
        while let Some((at, chunk)) = due.recv().await {
            if stalled.wait_for(|stalled| !*stalled).await.is_err() {
                break;
            }
            let now = clock.monotonic();
            let mut ready = at.max(now);
            if let Some(rate) = state.shape().bandwidth {
                // A chunk arrives once its last byte would have: after the
                // previous one, plus its own time on the wire.
                let sending = Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
                free_at = ready.max(free_at) + sending;
                ready = free_at;
            }
            let wait = ready.saturating_sub(now);
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

    /// A proxy with `delay` in front of an echo server, and the clock.
    async fn echo_proxy(delay: Duration) -> (SharedNetwork, SharedClock, Proxy) {
        let network = TokioNetwork::shared();
        let clock: SharedClock = Arc::new(SystemClock::new());
        let target = echo_server(&network).await;
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let proxy = Proxy::start(
            network.clone(),
            clock.clone(),
            any,
            target.to_string(),
            delay,
        )
        .await
        .expect("proxy");
        (network, clock, proxy)
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
        let (network, _, proxy) = echo_proxy(Duration::ZERO).await;
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

    /// A stalled direction forwards nothing while the other flows, and
    /// delivers what waited once resumed.
    #[tokio::test]
    async fn a_stalled_direction_holds_its_bytes_until_resumed() {
        let (network, _, proxy) = echo_proxy(Duration::ZERO).await;
        let mut io = network
            .connect(proxy.addr().to_string())
            .await
            .expect("connect");
        proxy.stall(Direction::Backward);
        io.write_all(b"ping").await.expect("forward still flows");
        let mut got = [0u8; 4];
        let held = tokio::time::timeout(Duration::from_millis(200), io.read_exact(&mut got)).await;
        assert!(held.is_err(), "nothing comes back while stalled");
        proxy.resume(Direction::Backward);
        io.read_exact(&mut got).await.expect("what waited");
        assert_eq!(&got, b"ping");
    }

    /// With a bandwidth cap, 40 KiB at 20 KiB/s take about two seconds.
    #[tokio::test(start_paused = true)]
    async fn bandwidth_caps_a_direction() {
        let (network, clock, proxy) = echo_proxy(Duration::ZERO).await;
        proxy.set_bandwidth(Some(20 * 1024));
        let mut io = network
            .connect(proxy.addr().to_string())
            .await
            .expect("connect");
        let started = clock.monotonic();
        let sent = vec![7u8; 40 * 1024];
        let (mut read, mut write) = tokio::io::split(&mut io);
        let writing = async { write.write_all(&sent).await.expect("write") };
        let mut back = vec![0u8; sent.len()];
        let reading = async { read.read_exact(&mut back).await.expect("read") };
        tokio::join!(writing, reading);
        let took = clock.monotonic() - started;
        assert!(took >= Duration::from_millis(1500), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn delays_each_direction() {
        let (network, clock, proxy) = echo_proxy(Duration::from_millis(35)).await;
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
