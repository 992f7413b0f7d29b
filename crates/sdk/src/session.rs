//! One authenticated WebSocket session.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use meridian_wire::ErrorCode;
use meridian_wire::frames::{ClientFrame, DeliveryItem, ReceiptKind, ServerFrame};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::{SdkError, TlsRoots};

/// Liveness of a session: a `ping` goes out every `interval`, and a
/// connection that brings nothing (no frame, no pong) for `timeout` is
/// treated as dead, so a half-open connection (a middlebox that silently
/// dropped it) ends in a reconnect instead of a silent stall.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// Ping period.
    pub interval: Duration,
    /// Silence after which the connection counts as dead.
    pub timeout: Duration,
    /// How long a request (a send) waits for its answer before the caller
    /// may retry it.
    pub request_timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(45),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// An accepted send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentInfo {
    /// Conversation.
    pub conv_id: String,
    /// Server id.
    pub msg_id: String,
    /// Stamp.
    pub hlc: u64,
}

/// Something the server pushed.
#[derive(Debug, Clone)]
pub enum Event {
    /// Inbox entries, in arrival order, covering cursors `(after, through]`.
    Deliver {
        /// Where this batch continues from.
        after: String,
        /// Where it ends (the cursor to ack).
        through: String,
        /// The entries.
        items: Vec<DeliveryItem>,
    },
    /// Entries up to this cursor expired before delivery.
    Gap(String),
    /// An error not tied to a pending request.
    Error {
        /// Code.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// The gateway asks the client to reconnect elsewhere after
    /// `retry_after` (it is draining or stopping); the connection ends.
    GoAway {
        /// Why.
        reason: meridian_wire::frames::GoAwayReason,
        /// How long to wait first.
        retry_after: std::time::Duration,
    },
}

type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Result<SentInfo, SdkError>>>>>;

/// An authenticated WebSocket session.
pub struct Session {
    outgoing: mpsc::Sender<Message>,
    events: mpsc::Receiver<Event>,
    pending: Pending,
    next_id: AtomicU64,
    /// User id from `ready`.
    pub user_id: String,
    /// Device id from `ready`.
    pub device_id: String,
    /// The stored cursor at connection time.
    pub cursor: String,
    request_timeout: Duration,
}

/// At most this many queued frames go out in one write.
const WRITE_BURST_FRAMES: usize = 64;

/// The socket's buffers. tungstenite's default read buffer (128 KiB) is
/// zero-filled before every read, which cost a busy client more than its
/// JSON parsing; frames are small, so 16 KiB reads lose nothing. Writes are
/// buffered up to 16 KiB until the writer flushes a burst.
fn socket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
}

fn lock(
    pending: &Pending,
) -> std::sync::MutexGuard<'_, BTreeMap<u64, oneshot::Sender<Result<SentInfo, SdkError>>>> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// Connects to `ws_url` and authenticates with `token`.
    ///
    /// # Errors
    /// Transport failures or the server's refusal (`invalid_token`, …).
    pub async fn connect(ws_url: &str, token: &str) -> Result<Self, SdkError> {
        Self::connect_tls(ws_url, token, &TlsRoots::system()).await
    }

    /// [`Session::connect`], trusting `tls`'s roots for a `wss://` URL.
    ///
    /// # Errors
    /// As [`Session::connect`].
    pub async fn connect_tls(ws_url: &str, token: &str, tls: &TlsRoots) -> Result<Self, SdkError> {
        Self::connect_with(ws_url, token, tls, Keepalive::default()).await
    }

    /// [`Session::connect_tls`] with `keepalive` instead of the default.
    ///
    /// # Errors
    /// As [`Session::connect`].
    pub async fn connect_with(
        ws_url: &str,
        token: &str,
        tls: &TlsRoots,
        keepalive: Keepalive,
    ) -> Result<Self, SdkError> {
        // Nagle off: small frames (sends, acks) must not wait for a delayed ACK.
        let connector = tokio_tungstenite::Connector::Rustls(tls.client_config());
        let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
            ws_url,
            Some(socket_config()),
            true,
            Some(connector),
        )
        .await
        .map_err(refused_upgrade)?;
        Self::start(socket, token, keepalive).await
    }

    /// Connects over an already open byte stream (a simulated network's, or
    /// a proxy's) to `ws_url` and authenticates with `token`.
    ///
    /// # Errors
    /// As [`Session::connect`].
    pub async fn connect_over<S>(
        stream: S,
        ws_url: &str,
        token: &str,
        keepalive: Keepalive,
    ) -> Result<Self, SdkError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(ws_url, stream, Some(socket_config()))
                .await
                .map_err(refused_upgrade)?;
        Self::start(socket, token, keepalive).await
    }

    async fn start<S>(
        socket: tokio_tungstenite::WebSocketStream<S>,
        token: &str,
        keepalive: Keepalive,
    ) -> Result<Self, SdkError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = socket.split();
        let auth = serde_json::to_string(&ClientFrame::Auth {
            token: token.into(),
        })
        .map_err(|e| SdkError::Protocol(e.to_string()))?;
        sink.send(Message::Text(auth.into()))
            .await
            .map_err(|e| SdkError::WebSocket(e.to_string()))?;
        let ready = loop {
            let message = tokio::time::timeout(keepalive.request_timeout, stream.next())
                .await
                .map_err(|_| SdkError::Timeout)?
                .ok_or(SdkError::Closed)?
                .map_err(|e| SdkError::WebSocket(e.to_string()))?;
            let Message::Text(text) = message else {
                continue;
            };
            match serde_json::from_str::<ServerFrame>(&text)
                .map_err(|e| SdkError::Protocol(e.to_string()))?
            {
                ServerFrame::Ready {
                    user_id,
                    device_id,
                    cursor,
                    ..
                } => break (user_id, device_id, cursor),
                ServerFrame::Error { code, message, .. } => {
                    return Err(SdkError::Api {
                        status: 0,
                        code,
                        message,
                    });
                }
                // Shed by the home core before it attached (or the gateway
                // stopping): the same wait as a refused upgrade.
                ServerFrame::GoAway { retry_after_ms, .. } => {
                    return Err(SdkError::Busy {
                        status: 0,
                        retry_after: Duration::from_millis(retry_after_ms),
                    });
                }
                _ => continue,
            }
        };
        let (outgoing, mut outgoing_rx) = mpsc::channel::<Message>(256);
        let (events_tx, events) = mpsc::channel(1024);
        let pending: Pending = Arc::default();
        tokio::spawn(async move {
            let ping = serde_json::to_string(&ClientFrame::Ping { nonce: 0 }).unwrap_or_default();
            let mut tick = tokio::time::interval(keepalive.interval);
            tick.tick().await;
            loop {
                let message = tokio::select! {
                    biased;
                    message = outgoing_rx.recv() => match message {
                        Some(message) => message,
                        None => break,
                    },
                    _ = tick.tick() => Message::Text(ping.clone().into()),
                };
                // Frames queued meanwhile (pipelined sends, acks) go out
                // in the same write.
                let mut burst = vec![message];
                while burst.len() < WRITE_BURST_FRAMES {
                    match outgoing_rx.try_recv() {
                        Ok(message) => burst.push(message),
                        Err(_) => break,
                    }
                }
                let written = async {
                    for message in burst {
                        sink.feed(message).await?;
                    }
                    sink.flush().await
                };
                if written.await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        tokio::spawn(read_frames(stream, pending.clone(), events_tx, keepalive));
        Ok(Self {
            outgoing,
            events,
            pending,
            next_id: AtomicU64::new(1),
            user_id: ready.0,
            device_id: ready.1,
            cursor: ready.2,
            request_timeout: keepalive.request_timeout,
        })
    }

    async fn write(&self, frame: &ClientFrame) -> Result<(), SdkError> {
        let text = serde_json::to_string(frame).map_err(|e| SdkError::Protocol(e.to_string()))?;
        self.send_raw(Message::Text(text.into())).await
    }

    /// Sends any WebSocket message as is (for protocol tests).
    ///
    /// # Errors
    /// [`SdkError::Closed`].
    pub async fn send_raw(&self, message: Message) -> Result<(), SdkError> {
        self.outgoing
            .send(message)
            .await
            .map_err(|_| SdkError::Closed)
    }

    /// Sends a message and waits for `sent` (or the typed refusal).
    ///
    /// # Errors
    /// The server's refusal, [`SdkError::Closed`], [`SdkError::Timeout`].
    pub async fn send(
        &self,
        conv_id: &str,
        client_msg_id: &str,
        payload: &str,
        reply_to: Option<&str>,
        last_seen_hlc: u64,
    ) -> Result<SentInfo, SdkError> {
        self.send_with_attachments(
            conv_id,
            client_msg_id,
            payload,
            reply_to,
            last_seen_hlc,
            &[],
        )
        .await
    }

    /// Sends a message carrying media (ready uploads of this user) and
    /// waits for `sent` (or the typed refusal).
    ///
    /// # Errors
    /// As [`Self::send`].
    pub async fn send_with_attachments(
        &self,
        conv_id: &str,
        client_msg_id: &str,
        payload: &str,
        reply_to: Option<&str>,
        last_seen_hlc: u64,
        attachments: &[String],
    ) -> Result<SentInfo, SdkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        lock(&self.pending).insert(id, waiter);
        self.write(&ClientFrame::Send {
            id,
            conv_id: conv_id.into(),
            client_msg_id: client_msg_id.into(),
            payload: payload.into(),
            reply_to: reply_to.map(Into::into),
            last_seen_hlc,
            attachments: attachments.to_vec(),
        })
        .await?;
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SdkError::Closed),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(SdkError::Timeout)
            }
        }
    }

    /// Acknowledges everything up to `cursor`.
    ///
    /// # Errors
    /// [`SdkError::Closed`].
    pub async fn ack(&self, cursor: &str) -> Result<(), SdkError> {
        self.write(&ClientFrame::Ack {
            cursor: cursor.into(),
            device_id: None,
        })
        .await
    }

    /// Sends receipts.
    ///
    /// # Errors
    /// [`SdkError::Closed`].
    pub async fn receipt(
        &self,
        conv_id: &str,
        msg_ids: &[String],
        kind: ReceiptKind,
    ) -> Result<(), SdkError> {
        self.write(&ClientFrame::Receipt {
            id: 0,
            conv_id: conv_id.into(),
            msg_ids: msg_ids.to_vec(),
            kind,
        })
        .await
    }

    /// Takes the stream of pushed events, so another task can consume it
    /// while this session is shared for sending.
    pub fn take_events(&mut self) -> mpsc::Receiver<Event> {
        let (_, closed) = mpsc::channel(1);
        std::mem::replace(&mut self.events, closed)
    }

    /// The next pushed event; `None` once the connection closed.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

/// The session's reader task: answers the waiters of sends, passes every
/// other frame on as an [`Event`], and fails the waiters left when the
/// connection ends or stays silent past the keepalive timeout.
async fn read_frames<S>(
    mut stream: futures::stream::SplitStream<tokio_tungstenite::WebSocketStream<S>>,
    pending: Pending,
    events_tx: mpsc::Sender<Event>,
    keepalive: Keepalive,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    while let Ok(Some(Ok(message))) = tokio::time::timeout(keepalive.timeout, stream.next()).await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<ServerFrame>(&text) else {
            continue;
        };
        let event = match frame {
            ServerFrame::Sent {
                id,
                conv_id,
                msg_id,
                hlc,
                ..
            } => {
                if let Some(waiter) = lock(&pending).remove(&id) {
                    let _ = waiter.send(Ok(SentInfo {
                        conv_id,
                        msg_id,
                        hlc,
                    }));
                }
                continue;
            }
            ServerFrame::Error {
                id: Some(id),
                code,
                message,
                ..
            } => match lock(&pending).remove(&id) {
                Some(waiter) => {
                    let _ = waiter.send(Err(SdkError::Api {
                        status: 0,
                        code,
                        message,
                    }));
                    continue;
                }
                None => Event::Error { code, message },
            },
            ServerFrame::Error {
                id: None,
                code,
                message,
                ..
            } => Event::Error { code, message },
            ServerFrame::Deliver {
                after,
                through,
                items,
            } => Event::Deliver {
                after,
                through,
                items,
            },
            ServerFrame::Gap { lost_through } => Event::Gap(lost_through),
            ServerFrame::GoAway {
                reason,
                retry_after_ms,
            } => Event::GoAway {
                reason,
                retry_after: std::time::Duration::from_millis(retry_after_ms),
            },
            ServerFrame::Ready { .. } | ServerFrame::Pong { .. } => continue,
        };
        if events_tx.send(event).await.is_err() {
            break;
        }
    }
    // Fail every waiter: the connection is gone.
    for (_, waiter) in std::mem::take(&mut *lock(&pending)) {
        let _ = waiter.send(Err(SdkError::Closed));
    }
}

/// A failed WebSocket upgrade as the SDK reports it: a refusal that says
/// when to come back (`retry_after_ms` in the body, else `Retry-After`)
/// is [`SdkError::Busy`].
fn refused_upgrade(error: tokio_tungstenite::tungstenite::Error) -> SdkError {
    if let tokio_tungstenite::tungstenite::Error::Http(response) = &error {
        let from_body = response
            .body()
            .as_deref()
            .and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok())
            .and_then(|body| body.get("retry_after_ms")?.as_u64())
            .map(std::time::Duration::from_millis);
        let from_header = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        if let Some(retry_after) = from_body.or(from_header) {
            return SdkError::Busy {
                status: response.status().as_u16(),
                retry_after,
            };
        }
    }
    SdkError::WebSocket(error.to_string())
}
