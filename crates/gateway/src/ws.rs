//! The WebSocket session: `auth`, then sends, acks and receipts up and
//! deliveries down, in versioned JSON frames (`docs/protocol.md`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::SinkExt;
use meridian_rpc::core::{self as pb, session_up};
use meridian_wire::frames::{CLIENT_FRAME_TYPES, ClientFrame, GoAwayReason, ServerFrame};
use meridian_wire::{ErrorCode, PROTOCOL_VERSION};

use crate::convert::to_client;
use crate::extract::ClientIp;
use crate::mux::MuxSession;
use crate::{ApiError, AppState};

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/ws", get(upgrade))
        .with_state(state)
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
) -> Response {
    if state.drain.is_draining() {
        metrics::counter!("meridian_gateway_connections_refused_total", "why" => "draining")
            .increment(1);
        return ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::new(
                ErrorCode::Unavailable,
                "this gateway is draining; resolve the service name again",
            )
        }
        .into_response();
    }
    if let Err(wait) = state.limits.accept() {
        metrics::counter!("meridian_gateway_connections_refused_total", "why" => "accept_rate")
            .increment(1);
        return ApiError {
            retry_after: Some(wait),
            ..ApiError::new(
                ErrorCode::Unavailable,
                "this gateway is taking connections as fast as it can; retry after the time given",
            )
        }
        .into_response();
    }
    // Counted from the upgrade; the guard in `run` gives it back.
    let open = state.connections.fetch_add(1, Ordering::AcqRel);
    if open >= state.config.max_connections {
        state.connections.fetch_sub(1, Ordering::AcqRel);
        metrics::counter!("meridian_gateway_connections_refused_total", "why" => "full")
            .increment(1);
        return ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::new(
                ErrorCode::Unavailable,
                "this gateway holds all the connections it can; try another",
            )
        }
        .into_response();
    }
    let guard = ConnectionSlot(state.clone());
    let hard_max = state.config.hard_max_frame_bytes;
    // Small buffers: an idle connection should cost a few KiB, not the
    // 128 KiB tungstenite's defaults would hold per socket. The read buffer
    // is held for the connection's life and is also the most one read
    // takes: a larger frame reserves its whole length when its header is
    // read, then arrives in reads of this size (a 64 KiB payload in 64),
    // a cost paid by the rare large frame rather than by every idle
    // connection. The write buffer is only a threshold (tungstenite grows
    // its output buffer on demand): frames fed below it wait for the flush
    // that ends a burst.
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BURST_BYTES)
        .max_message_size(hard_max)
        .max_frame_size(hard_max)
        .on_upgrade(move |socket| run(socket, state, client, guard))
}

/// One of the gateway's connection slots, given back when dropped.
struct ConnectionSlot(Arc<AppState>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Frames queued for one socket go out in one write, up to about this many
/// bytes: under load a socket has several `sent` and `deliver` frames
/// waiting at once, and a write (and loopback receive) per frame cost a
/// tenth of the server's CPU. Small, because tungstenite never shrinks its
/// output buffer: a connection keeps about this much (plus its largest
/// frame) for its lifetime once a burst has filled it.
const WRITE_BURST_BYTES: usize = 8 * 1024;

/// What a connection holds to read frames into, and reads at a time: a few
/// client frames, which are mostly a few hundred bytes.
const READ_BUFFER_BYTES: usize = 1024;

/// At most this many queued frames join one burst.
const WRITE_BURST_FRAMES: usize = 64;

/// A refusal of one client frame.
struct Refusal {
    id: Option<u64>,
    code: ErrorCode,
    message: String,
    retry_after: Option<Duration>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id: None,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `rate_limited`, retryable after `wait`.
    fn limited(id: Option<u64>, message: impl Into<String>, wait: Duration) -> Self {
        Self {
            id,
            code: ErrorCode::RateLimited,
            message: message.into(),
            retry_after: Some(wait),
        }
    }

    fn frame(self) -> ServerFrame {
        ServerFrame::Error {
            id: self.id,
            code: self.code,
            message: self.message,
            retry_after_ms: self.retry_after.map(crate::error::millis),
        }
    }
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self {
            id: None,
            code: error.code,
            message: error.message,
            retry_after: error.retry_after,
        }
    }
}

/// Parses a client frame, telling malformed JSON, unknown types, unsupported
/// versions and bad fields apart.
fn parse(text: &str) -> Result<ClientFrame, Refusal> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Refusal::new(ErrorCode::InvalidJson, format!("frame is not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| Refusal::new(ErrorCode::BadRequest, "a frame is a JSON object"))?;
    if let Some(version) = object.get("v")
        && version.as_u64() != Some(u64::from(PROTOCOL_VERSION))
    {
        return Err(Refusal::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
            ),
        ));
    }
    let id = object.get("id").and_then(serde_json::Value::as_u64);
    let kind = object
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| Refusal::new(ErrorCode::BadRequest, "a frame needs a string \"type\""))?
        .to_string();
    if !CLIENT_FRAME_TYPES.contains(&kind.as_str()) {
        return Err(Refusal {
            id,
            code: ErrorCode::UnknownFrame,
            message: format!("unknown frame type {kind:?}"),
            retry_after: None,
        });
    }
    serde_json::from_value(value).map_err(|e| Refusal {
        id,
        code: ErrorCode::BadRequest,
        message: format!("malformed {kind} frame: {e}"),
        retry_after: None,
    })
}

/// Reads a data frame's text, refusing oversized and non-UTF-8 frames.
fn frame_text(message: Message, max: usize) -> Result<Option<String>, Refusal> {
    let bytes = match message {
        Message::Text(text) => {
            if text.len() > max {
                return Err(Refusal::new(
                    ErrorCode::FrameTooLarge,
                    format!("frame exceeds {max} bytes"),
                ));
            }
            return Ok(Some(text.to_string()));
        }
        Message::Binary(bytes) => bytes,
        _ => return Ok(None),
    };
    if bytes.len() > max {
        return Err(Refusal::new(
            ErrorCode::FrameTooLarge,
            format!("frame exceeds {max} bytes"),
        ));
    }
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| Refusal::new(ErrorCode::InvalidUtf8, "frame is not valid UTF-8"))
}

struct Connection {
    socket: WebSocket,
    state: Arc<AppState>,
    /// The client's address (behind a trusted proxy, the one it names).
    client: IpAddr,
}

impl Connection {
    /// Writes `frame` and flushes: `false` if the socket failed or timed out.
    async fn write(&mut self, frame: &ServerFrame) -> bool {
        match serde_json::to_string(frame) {
            Ok(text) => self.write_burst(vec![text]).await,
            Err(_) => false,
        }
    }

    /// Writes already serialized frames as one burst: buffered below
    /// [`WRITE_BURST_BYTES`], then one flush. `false` if the socket failed
    /// or timed out.
    async fn write_burst(&mut self, texts: Vec<String>) -> bool {
        self.write_messages(texts.into_iter().map(|text| Message::Text(text.into())))
            .await
    }

    /// Feeds `messages`, then flushes, all within the write timeout.
    ///
    /// The write and its timer are boxed while they run: every future
    /// that awaits a write would otherwise carry them inline, and a
    /// connection's task is at least as large as the largest state its
    /// future can be in, for the connection's whole life, idle or not.
    async fn write_messages(&mut self, messages: impl IntoIterator<Item = Message>) -> bool {
        let socket = &mut self.socket;
        let write = async move {
            for message in messages {
                socket.feed(message).await?;
            }
            socket.flush().await
        };
        matches!(
            Box::pin(tokio::time::timeout(self.state.config.write_timeout, write)).await,
            Ok(Ok(()))
        )
    }

    /// Sends a close frame, within the write timeout (boxed, as a write).
    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.to_string().into(),
        };
        let _ = Box::pin(tokio::time::timeout(
            self.state.config.write_timeout,
            self.socket.send(Message::Close(Some(frame))),
        ))
        .await;
    }

    /// Waits for a valid `auth` frame; answers other frames with errors.
    async fn authenticate(&mut self) -> Result<pb::Caller, (u16, ApiError)> {
        let max = self.state.config.max_frame_bytes;
        loop {
            let message = match self.socket.recv().await {
                Some(Ok(message)) => message,
                _ => {
                    let closed = ApiError::new(ErrorCode::Unauthenticated, "closed");
                    return Err((close_code::NORMAL, closed));
                }
            };
            let text = match frame_text(message, max) {
                Ok(Some(text)) => text,
                Ok(None) => continue,
                Err(refusal) => {
                    self.write(&refusal.frame()).await;
                    continue;
                }
            };
            match parse(&text) {
                Ok(ClientFrame::Auth { token }) => {
                    return crate::auth::authenticate(&self.state, self.client, &token)
                        .await
                        .map_err(|error| {
                            let close = match error.code {
                                ErrorCode::RateLimited | ErrorCode::Unavailable => {
                                    close_code::AGAIN
                                }
                                _ => close_code::POLICY,
                            };
                            (close, error)
                        });
                }
                Ok(ClientFrame::Ping { nonce }) => {
                    self.write(&ServerFrame::Pong { nonce }).await;
                }
                Ok(_) => {
                    self.write(
                        &Refusal::new(ErrorCode::Unauthenticated, "send an auth frame first")
                            .frame(),
                    )
                    .await;
                }
                Err(refusal) => {
                    self.write(&refusal.frame()).await;
                }
            }
        }
    }
}

async fn run(socket: WebSocket, state: Arc<AppState>, client: IpAddr, _slot: ConnectionSlot) {
    metrics::counter!("meridian_gateway_ws_connections_total").increment(1);
    let mut connection = Connection {
        socket,
        state,
        client,
    };
    // Boxed while it runs, as each frame's handling and each write are
    // (why: `Connection::write_messages`).
    let Some((caller, mux)) = Box::pin(attach(&mut connection)).await else {
        return;
    };
    let (code, reason) = serve(&mut connection, mux, &caller).await;
    connection.close(code, reason).await;
}

/// Authenticates the connection and attaches its session to its user's
/// core; `None` once the connection was refused and closed.
async fn attach(connection: &mut Connection) -> Option<(pb::Caller, MuxSession)> {
    let auth_timeout = connection.state.config.auth_timeout;
    let caller = match tokio::time::timeout(auth_timeout, connection.authenticate()).await {
        Ok(Ok(caller)) => caller,
        Ok(Err((close, error))) => {
            let code = error.code;
            connection.write(&Refusal::from(error).frame()).await;
            connection.close(close, code.as_str()).await;
            return None;
        }
        Err(_) => {
            connection
                .write(&Refusal::new(ErrorCode::Unauthenticated, "no auth frame in time").frame())
                .await;
            connection.close(close_code::POLICY, "auth timeout").await;
            return None;
        }
    };
    if let Err(wait) = connection
        .state
        .limits
        .connects
        .take(&caller.device_id, 1.0)
    {
        let message = "too many connection attempts; back off";
        connection
            .write(&Refusal::limited(None, message, wait).frame())
            .await;
        connection.close(close_code::AGAIN, "rate limited").await;
        return None;
    }
    let mux = match connection
        .state
        .cores
        .of(&caller.user_id)
        .map_err(|_| crate::mux::Unavailable)
        .and_then(|core| core.mux.open())
    {
        Ok(mux) => mux,
        Err(_) => {
            connection
                .write(
                    &Refusal::new(ErrorCode::Unavailable, "the core is unavailable; retry").frame(),
                )
                .await;
            connection.close(close_code::AGAIN, "unavailable").await;
            return None;
        }
    };
    let frame = session_up::Kind::Attach(pb::Attach {
        session: mux.id(),
        caller: Some(caller.clone()),
    });
    if mux.send(frame).await.is_err() {
        connection.close(close_code::AGAIN, "unavailable").await;
        return None;
    }
    Some((caller, mux))
}

/// The attached phase: returns the close code and reason.
async fn serve(
    connection: &mut Connection,
    mut mux: MuxSession,
    caller: &pb::Caller,
) -> (u16, &'static str) {
    let state = connection.state.clone();
    let max = state.config.max_frame_bytes;
    let mut ping = tokio::time::interval(state.config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut silent_ticks = 0u32;
    let allowed_silent = (state.config.idle_timeout.as_millis()
        / state.config.ping_interval.as_millis().max(1))
    .max(1) as u32;
    let mut stopping = state.stopping.subscribe();
    // This session's turn to leave if the gateway is drained.
    let leave = crate::drain::my_turn(state.drain.subscribe(), caller.device_id.clone());
    tokio::pin!(leave);
    // Deliveries come first (a client waits on them), but a device whose
    // queue never empties must still be read: after every burst written,
    // one frame the client already sent is taken before the next burst.
    let mut read_owed = false;
    loop {
        let ready = if std::mem::take(&mut read_owed) {
            futures::FutureExt::now_or_never(connection.socket.recv())
        } else {
            None
        };
        let event = match ready {
            Some(incoming) => Event::Incoming(incoming),
            None => tokio::select! {
                biased;
                () = async { let _ = stopping.wait_for(|s| *s).await; } => Event::Stopping,
                retry_after = &mut leave => Event::Leave(retry_after),
                down = mux.recv() => Event::Down(down),
                incoming = connection.socket.recv() => Event::Incoming(incoming),
                _ = ping.tick() => Event::Tick,
            },
        };
        match event {
            Event::Stopping => {
                let (_, retry_after) = crate::drain::departure(&caller.device_id, Duration::ZERO);
                connection
                    .write(&go_away(GoAwayReason::Stopping, retry_after))
                    .await;
                return (close_code::AWAY, "the gateway is stopping; reconnect");
            }
            Event::Leave(retry_after) => {
                metrics::counter!("meridian_gateway_drained_sessions_total").increment(1);
                connection
                    .write(&go_away(GoAwayReason::Draining, retry_after))
                    .await;
                return (close_code::AWAY, "draining: reconnect elsewhere");
            }
            Event::Down(down) => {
                let Some(first) = down else {
                    return (close_code::RESTART, "reconnect and resume");
                };
                let Ok((burst, ending)) = drain_burst(first, &mut mux, caller) else {
                    return (close_code::ERROR, "internal error");
                };
                if !burst.is_empty() && !connection.write_burst(burst).await {
                    return (close_code::AWAY, "write timed out");
                }
                if let Some(ending) = ending {
                    return ending;
                }
                read_owed = true;
            }
            Event::Incoming(incoming) => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => return close_for(error),
                    None => return (close_code::NORMAL, "closed"),
                };
                silent_ticks = 0;
                if let Message::Close(_) = message {
                    return (close_code::NORMAL, "bye");
                }
                let text = match frame_text(message, max) {
                    Ok(Some(text)) => text,
                    Ok(None) => continue,
                    Err(refusal) => {
                        if !connection.write(&refusal.frame()).await {
                            return (close_code::AWAY, "write timed out");
                        }
                        continue;
                    }
                };
                let outcome = match parse(&text) {
                    Ok(frame) => Box::pin(handle(&state, &mux, caller, frame)).await,
                    Err(refusal) => Err(refusal),
                };
                let reply = match outcome {
                    Ok(Some(reply)) => reply,
                    Ok(None) => continue,
                    Err(refusal) => refusal.frame(),
                };
                if !connection.write(&reply).await {
                    return (close_code::AWAY, "write timed out");
                }
            }
            Event::Tick => {
                silent_ticks += 1;
                if silent_ticks > allowed_silent {
                    return (close_code::AWAY, "idle timeout");
                }
                if !connection
                    .write_messages([Message::Ping(Default::default())])
                    .await
                {
                    return (close_code::AWAY, "write timed out");
                }
            }
        }
    }
}

/// What the attached session's loop woke for.
enum Event {
    /// The gateway is stopping.
    Stopping,
    /// The gateway is draining and this session's turn to leave came: the
    /// client is told to wait this long before it reconnects.
    Leave(Duration),
    /// A frame from the core for this socket (`None`: the core's stream ended).
    Down(Option<pb::SessionDown>),
    /// A frame from the client, a read error, or the end of the socket.
    Incoming(Option<Result<Message, axum::Error>>),
    /// The ping period passed.
    Tick,
}

/// The `go_away` frame.
fn go_away(reason: GoAwayReason, retry_after: Duration) -> ServerFrame {
    ServerFrame::GoAway {
        reason,
        retry_after_ms: retry_after.as_millis() as u64,
    }
}

/// A WebSocket close: its code and reason.
type Close = (u16, &'static str);

/// `first` and what else is already queued for this socket, serialized, up
/// to a burst's bytes or frames (which also bounds what one write timeout
/// covers), and the close code and reason if the last of them ends the
/// session: 1013 for a session the core shed (`go_away` `busy`), 1008 for
/// one it ended.
fn drain_burst(
    first: pb::SessionDown,
    mux: &mut MuxSession,
    caller: &pb::Caller,
) -> Result<(Vec<String>, Option<Close>), serde_json::Error> {
    let mut burst = Vec::new();
    let mut bytes = 0;
    let mut next = Some(first);
    while let Some(frame) = next.take() {
        if let Some((frame, ends_session)) = to_client(frame, caller) {
            let shed = matches!(frame, ServerFrame::GoAway { .. });
            let text = serde_json::to_string(&frame)?;
            bytes += text.len();
            burst.push(text);
            if ends_session {
                let ending = if shed {
                    (close_code::AGAIN, "busy: come back after the wait")
                } else {
                    (close_code::POLICY, "session ended")
                };
                return Ok((burst, Some(ending)));
            }
        }
        if bytes < WRITE_BURST_BYTES && burst.len() < WRITE_BURST_FRAMES {
            next = mux.try_recv();
        }
    }
    Ok((burst, None))
}

/// The close code for a failed read: 1009 for a frame over the hard cap
/// (tungstenite refuses it before we see it), 1002 for protocol violations,
/// 1007 for invalid UTF-8 in a text frame, 1000 otherwise.
fn close_for(error: axum::Error) -> (u16, &'static str) {
    use tokio_tungstenite::tungstenite::Error;
    match error.into_inner().downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => (close_code::SIZE, "frame too large"),
        Some(Error::Protocol(_)) => (close_code::PROTOCOL, "protocol violation"),
        Some(Error::Utf8(_)) => (close_code::INVALID, "invalid UTF-8"),
        _ => (close_code::NORMAL, "closed"),
    }
}

/// Handles one client frame; `Ok(Some(frame))` is an immediate reply.
async fn handle(
    state: &AppState,
    mux: &MuxSession,
    caller: &pb::Caller,
    frame: ClientFrame,
) -> Result<Option<ServerFrame>, Refusal> {
    let unavailable = |_| Refusal::new(ErrorCode::Unavailable, "the core is unavailable; retry");
    match frame {
        ClientFrame::Auth { .. } => {
            Err(Refusal::new(ErrorCode::BadRequest, "already authenticated"))
        }
        ClientFrame::Ping { nonce } => Ok(Some(ServerFrame::Pong { nonce })),
        ClientFrame::Send {
            id,
            conv_id,
            client_msg_id,
            payload,
            reply_to,
            last_seen_hlc,
            attachments,
        } => {
            let refuse = |code, message: &str| Refusal {
                id: Some(id),
                code,
                message: message.to_string(),
                retry_after: None,
            };
            if let Err(wait) = state.limits.sends.take(&caller.device_id, 1.0) {
                metrics::counter!("meridian_gateway_rate_limited_total", "what" => "send")
                    .increment(1);
                let message = "too many sends; slow down and retry";
                return Err(Refusal::limited(Some(id), message, wait));
            }
            if payload.is_empty() && attachments.is_empty() {
                return Err(refuse(
                    ErrorCode::PayloadEmpty,
                    "payload is empty and nothing is attached",
                ));
            }
            if payload.len() > state.config.max_payload_bytes {
                let message = format!("payload exceeds {} bytes", state.config.max_payload_bytes);
                return Err(refuse(ErrorCode::PayloadTooLarge, &message));
            }
            metrics::counter!("meridian_gateway_sends_total").increment(1);
            mux.send(session_up::Kind::Send(pb::SendRequest {
                session: mux.id(),
                request: id,
                conv_id,
                client_msg_id,
                payload,
                reply_to,
                last_seen_hlc,
                attachments,
            }))
            .await
            .map_err(unavailable)?;
            Ok(None)
        }
        ClientFrame::Ack { cursor, device_id } => {
            if device_id.is_some_and(|d| d != caller.device_id) {
                return Err(Refusal::new(
                    ErrorCode::Forbidden,
                    "a device can only acknowledge its own deliveries",
                ));
            }
            mux.send(session_up::Kind::Ack(pb::AckRequest {
                session: mux.id(),
                cursor,
            }))
            .await
            .map_err(unavailable)?;
            Ok(None)
        }
        ClientFrame::Receipt {
            id,
            conv_id,
            msg_ids,
            kind,
        } => {
            if let Err(wait) = state.limits.sends.take(&caller.device_id, 1.0) {
                let message = "too many receipts; slow down and retry";
                return Err(Refusal::limited(Some(id), message, wait));
            }
            mux.send(session_up::Kind::Receipt(pb::ReceiptRequest {
                session: mux.id(),
                request: id,
                conv_id,
                msg_ids,
                kind: kind.as_str().to_string(),
            }))
            .await
            .map_err(unavailable)?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_tells_errors_apart() {
        assert_eq!(
            parse("{").err().map(|r| r.code),
            Some(ErrorCode::InvalidJson)
        );
        assert_eq!(
            parse("[]").err().map(|r| r.code),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(
            parse(r#"{"type":"dance","id":4}"#)
                .err()
                .map(|r| (r.code, r.id)),
            Some((ErrorCode::UnknownFrame, Some(4)))
        );
        assert_eq!(
            parse(r#"{"v":2,"type":"ping"}"#).err().map(|r| r.code),
            Some(ErrorCode::UnsupportedVersion)
        );
        assert_eq!(
            parse(r#"{"type":"send","id":1}"#).err().map(|r| r.code),
            Some(ErrorCode::BadRequest)
        );
        assert!(matches!(
            parse(r#"{"v":1,"type":"ping","nonce":3}"#),
            Ok(ClientFrame::Ping { nonce: 3 })
        ));
    }

    #[test]
    fn ids_that_are_not_u64_are_refused_without_an_echo() {
        let send = |id: &str| {
            format!(
                r#"{{"type":"send","id":{id},"conv_id":"c","client_msg_id":"m","payload":"p"}}"#
            )
        };
        for id in ["-1", "1.5", "\"7\"", "18446744073709551616"] {
            let refusal = parse(&send(id)).expect_err(id);
            assert_eq!(
                (refusal.code, refusal.id),
                (ErrorCode::BadRequest, None),
                "{id}"
            );
        }
        assert!(matches!(
            parse(&send("18446744073709551615")),
            Ok(ClientFrame::Send { id: u64::MAX, .. })
        ));
    }

    #[test]
    fn stamps_are_read_as_strings_or_integers() {
        let send = |hlc: &str| {
            format!(
                r#"{{"type":"send","id":1,"conv_id":"c","client_msg_id":"m","payload":"p","last_seen_hlc":{hlc}}}"#
            )
        };
        for hlc in ["\"393857362384961537\"", "393857362384961537"] {
            assert!(matches!(
                parse(&send(hlc)),
                Ok(ClientFrame::Send {
                    last_seen_hlc: 393_857_362_384_961_537,
                    ..
                })
            ));
        }
        let refusal = parse(&send("\"-5\"")).expect_err("a signed stamp");
        assert_eq!((refusal.code, refusal.id), (ErrorCode::BadRequest, Some(1)));
        assert!(refusal.message.contains("64 bits"), "{}", refusal.message);
    }

    #[test]
    fn binary_frames_must_be_utf8() {
        let bad = Message::Binary(vec![0xff, 0xfe].into());
        assert_eq!(
            frame_text(bad, 10).err().map(|r| r.code),
            Some(ErrorCode::InvalidUtf8)
        );
        let big = Message::Text("x".repeat(11).into());
        assert_eq!(
            frame_text(big, 10).err().map(|r| r.code),
            Some(ErrorCode::FrameTooLarge)
        );
    }
}
