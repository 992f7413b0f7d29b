//! The one multiplexed session stream from this gateway to a region's core.
//!
//! Every WebSocket session gets a number and a bounded channel; frames from
//! the core are routed by that number. A session whose channel is full (a
//! client not reading) is cut off: it reconnects and resumes from its stored
//! cursor, so nothing is lost and one slow client never stalls the others.
//! If the stream to the core breaks, every session is closed the same way
//! and the stream is re-established with backoff.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_seams::Backoff;

use meridian_rpc::core::core_client::CoreClient;
use meridian_rpc::core::{SessionDown, SessionUp, session_down, session_up};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Frames buffered per session before it counts as too slow.
const SESSION_BUFFER: usize = 256;
/// Bytes (of protobuf) buffered per session before it counts as too slow:
/// a few full `deliver` frames, so a session that stops reading holds
/// megabytes at most, never its whole backlog.
const SESSION_BYTES: usize = 4 * 1024 * 1024;
/// Frames buffered towards the core.
const UP_BUFFER: usize = 8192;

#[derive(Default)]
struct Routes {
    up: Option<mpsc::Sender<SessionUp>>,
    sessions: BTreeMap<u64, Route>,
}

/// A frame waiting for its session, with the size it counts for in the
/// session's byte budget (computed once, when it is queued).
struct Queued {
    frame: SessionDown,
    size: usize,
}

/// Where a session's frames go, and how many bytes wait there.
struct Route {
    /// Boxed: a channel allocates its first block of 32 slots when it is
    /// made, so unboxed frames (112 bytes each with their size) would cost
    /// every idle session about 3.5 KiB.
    sender: mpsc::Sender<Box<Queued>>,
    queued: Arc<AtomicUsize>,
}

struct Inner {
    routes: Mutex<Routes>,
    next_session: AtomicU64,
    /// The region of the core at the other end (labels the session gauge).
    region: String,
}

impl Inner {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The stream to the core, shared by every WebSocket session of a gateway.
#[derive(Clone)]
pub struct Mux {
    inner: Arc<Inner>,
}

/// The core is not reachable right now.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the core is not reachable")]
pub struct Unavailable;

/// One WebSocket session's view of the stream.
pub struct MuxSession {
    id: u64,
    up: mpsc::Sender<SessionUp>,
    /// Frames from the core for this session; ends when the session is cut off.
    down: mpsc::Receiver<Box<Queued>>,
    /// Bytes of the frames in `down`.
    queued: Arc<AtomicUsize>,
    inner: Arc<Inner>,
}

fn session_of(frame: &SessionDown) -> Option<u64> {
    Some(match frame.kind.as_ref()? {
        session_down::Kind::Ready(f) => f.session,
        session_down::Kind::Deliver(f) => f.session,
        session_down::Kind::Sent(f) => f.session,
        session_down::Kind::Gap(f) => f.session,
        session_down::Kind::Error(f) => f.session,
        session_down::Kind::Detached(f) => f.session,
    })
}

impl Mux {
    /// Starts the supervisor that keeps the stream to `region`'s `core` open.
    pub fn start(core: CoreClient<Channel>, region: String) -> Self {
        let inner = Arc::new(Inner {
            routes: Mutex::new(Routes::default()),
            next_session: AtomicU64::new(1),
            region: region.clone(),
        });
        tokio::spawn(supervise(core, region, Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Whether the stream to the core is up.
    pub fn is_connected(&self) -> bool {
        self.inner.routes().up.is_some()
    }

    /// Opens a session on the stream.
    ///
    /// # Errors
    /// [`Unavailable`] while the stream to the core is down.
    pub fn open(&self) -> Result<MuxSession, Unavailable> {
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let (sender, down) = mpsc::channel(SESSION_BUFFER);
        let queued = Arc::new(AtomicUsize::new(0));
        let mut routes = self.inner.routes();
        let up = routes.up.clone().ok_or(Unavailable)?;
        let route = Route {
            sender,
            queued: queued.clone(),
        };
        routes.sessions.insert(id, route);
        metrics::gauge!("meridian_gateway_sessions", "core_region" => self.inner.region.clone())
            .set(routes.sessions.len() as f64);
        Ok(MuxSession {
            id,
            up,
            down,
            queued,
            inner: self.inner.clone(),
        })
    }
}

impl MuxSession {
    /// This session's number on the stream.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next frame from the core; `None` once the session is cut off.
    pub async fn recv(&mut self) -> Option<SessionDown> {
        let queued = *self.down.recv().await?;
        Some(self.taken(queued))
    }

    /// A frame from the core if one waits.
    pub fn try_recv(&mut self) -> Option<SessionDown> {
        let queued = *self.down.try_recv().ok()?;
        Some(self.taken(queued))
    }

    fn taken(&self, queued: Queued) -> SessionDown {
        self.queued.fetch_sub(queued.size, Ordering::AcqRel);
        queued.frame
    }

    /// Sends a frame towards the core.
    ///
    /// # Errors
    /// [`Unavailable`] when the stream is gone.
    pub async fn send(&self, kind: session_up::Kind) -> Result<(), Unavailable> {
        self.up
            .send(SessionUp { kind: Some(kind) })
            .await
            .map_err(|_| Unavailable)
    }
}

impl Drop for MuxSession {
    fn drop(&mut self) {
        let mut routes = self.inner.routes();
        routes.sessions.remove(&self.id);
        metrics::gauge!("meridian_gateway_sessions", "core_region" => self.inner.region.clone())
            .set(routes.sessions.len() as f64);
        drop(routes);
        // Sent from a task so a full queue delays the detach rather than
        // dropping it (a lost detach would leave the core delivering to no one).
        let up = self.up.clone();
        let detach = SessionUp {
            kind: Some(session_up::Kind::Detach(meridian_rpc::core::Detach {
                session: self.id,
            })),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = up.send(detach).await;
            });
        }
    }
}

impl Route {
    /// Queues `frame` unless the session already holds its share of
    /// frames or bytes (one frame is always taken, however large).
    fn offer(&self, frame: SessionDown) -> bool {
        let size = prost::Message::encoded_len(&frame);
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued + size > SESSION_BYTES {
            return false;
        }
        self.queued.fetch_add(size, Ordering::AcqRel);
        if self
            .sender
            .try_send(Box::new(Queued { frame, size }))
            .is_err()
        {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return false;
        }
        true
    }
}

async fn supervise(mut core: CoreClient<Channel>, region: String, inner: std::sync::Weak<Inner>) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        if inner.strong_count() == 0 {
            return;
        }
        let (up, up_rx) = mpsc::channel(UP_BUFFER);
        match core.session(ReceiverStream::new(up_rx)).await {
            Ok(response) => {
                backoff.reset();
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                strong.routes().up = Some(up);
                drop(strong);
                stream_up(&region, true);
                let mut inbound = response.into_inner();
                while let Ok(Some(frame)) = inbound.message().await {
                    let Some(strong) = inner.upgrade() else {
                        return;
                    };
                    let Some(session) = session_of(&frame) else {
                        continue;
                    };
                    let mut routes = strong.routes();
                    if let Some(route) = routes.sessions.get(&session)
                        && !route.offer(frame)
                    {
                        // Full or closed: cut the session off; it resumes elsewhere.
                        routes.sessions.remove(&session);
                        metrics::counter!("meridian_gateway_slow_sessions_cut_total").increment(1);
                    }
                }
                tracing::warn!(%region, "session stream to the core ended; reconnecting");
                if let Some(strong) = inner.upgrade() {
                    let mut routes = strong.routes();
                    routes.up = None;
                    // Dropping the senders closes every session's socket.
                    routes.sessions.clear();
                }
                stream_up(&region, false);
            }
            Err(status) => {
                tracing::warn!(%region, %status, "cannot open the session stream to the core");
            }
        }
        backoff.wait().await;
    }
}

/// `meridian_gateway_core_stream_up{core_region}`: 1 while the session
/// stream to that core is open (a gateway whose own region's is 0 is not
/// ready).
fn stream_up(region: &str, up: bool) {
    metrics::gauge!("meridian_gateway_core_stream_up", "core_region" => region.to_string())
        .set(if up { 1.0 } else { 0.0 });
}
