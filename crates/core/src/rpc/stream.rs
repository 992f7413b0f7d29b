//! The multiplexed session stream of one gateway: sends, acks and receipts
//! in; deliveries, send results and errors out, for many devices at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use meridian_rpc::core::{self as pb, SessionDown, SessionUp, session_down, session_up};
use meridian_store::{self as store, ReceiptKind};
use meridian_wire::ErrorCode;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::acks::{AckBatch, CloseOnDrop, PendingAck};
use super::admission::Admission;
use super::convert::{Down, error_frame, refusal, to_caller};
use super::delivery::{DeliveryState, deliver};
use crate::{Caller, Messaging, SendInput};

/// Where each device is attached, across every gateway stream of this core,
/// so a revocation can end the device's live sessions at once.
#[derive(Default, Clone)]
pub(super) struct Registry {
    attached: Arc<Mutex<BTreeMap<String, Vec<Registration>>>>,
    next_stream: Arc<std::sync::atomic::AtomicU64>,
}

struct Registration {
    stream: u64,
    session: u64,
    down: Down,
    delivery: tokio::task::AbortHandle,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Registration>>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_stream(&self) -> u64 {
        self.next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Registers a session of `device`; past `most` sessions, the oldest
    /// is ended (`session_replaced`): a device's sessions each hold a
    /// delivery loop and gateway buffers, so they cannot be free.
    fn add(&self, device: &str, registration: Registration, most: usize) {
        let replaced = {
            let mut attached = self.lock();
            let list = attached.entry(device.to_string()).or_default();
            list.push(registration);
            let excess = list.len().saturating_sub(most.max(1));
            list.drain(..excess).collect::<Vec<_>>()
        };
        for old in replaced {
            metrics::counter!("meridian_core_sessions_replaced_total").increment(1);
            old.end(
                ErrorCode::SessionReplaced,
                "a newer session of this device replaced this one",
            );
        }
    }

    fn remove(&self, device: &str, stream: u64, session: u64) {
        let mut attached = self.lock();
        if let Some(list) = attached.get_mut(device) {
            list.retain(|r| !(r.stream == stream && r.session == session));
            if list.is_empty() {
                attached.remove(device);
            }
        }
    }

    /// Whether this session of `device` is still attached (revocation removes it).
    fn is_attached(&self, device: &str, stream: u64, session: u64) -> bool {
        self.lock().get(device).is_some_and(|list| {
            list.iter()
                .any(|r| r.stream == stream && r.session == session)
        })
    }

    /// Ends every live session of `device`, telling its gateway why.
    pub(super) fn detach_device(&self, device: &str, code: ErrorCode, message: &str) {
        let registrations = self.lock().remove(device).unwrap_or_default();
        for registration in registrations {
            registration.end(code, message);
        }
    }
}

impl Registration {
    /// Stops the session's deliveries and tells its gateway why it ended
    /// (the session was already taken out of the registry, so its sends
    /// are refused).
    fn end(self, code: ErrorCode, message: &str) {
        self.delivery.abort();
        let frame = SessionDown {
            kind: Some(session_down::Kind::Detached(pb::Detached {
                session: self.session,
                code: code.as_str().to_string(),
                message: message.to_string(),
                retry_after_ms: 0,
            })),
        };
        // From a task: a full stream delays the notice instead of losing it.
        tokio::spawn(async move {
            let _ = self.down.send(Ok(frame)).await;
        });
    }
}

struct Attached {
    caller: Caller,
    state: Arc<DeliveryState>,
    task: JoinHandle<()>,
}

/// Serves one gateway's session stream until it ends.
pub(super) async fn serve_stream(
    messaging: Arc<Messaging>,
    registry: Registry,
    admission: Arc<Admission>,
    inbound: tonic::Streaming<SessionUp>,
    down: Down,
) {
    Stream::open(messaging, registry, admission, inbound, down)
        .run()
        .await;
}

/// One gateway's session stream: the device sessions attached on it, the
/// sends it has in flight, and its acks waiting to be written.
///
/// The fields are declared in the order they are to be dropped: a stream
/// dropped at shutdown first closes its acks (the writer then writes what
/// waits), then lets go of the writer, the sessions, the outgoing channel
/// and the inbound stream.
struct Stream {
    // Closed however this stream ends, including by being dropped at
    // shutdown: the writer then writes what waits and stops.
    _close_acks: CloseOnDrop,
    /// Taken when the stream closes, to wait for it.
    ack_writer: Option<JoinHandle<()>>,
    acks: Arc<AckBatch>,
    inflight: Arc<Semaphore>,
    sessions: BTreeMap<u64, Attached>,
    stream: u64,
    down: Down,
    inbound: tonic::Streaming<SessionUp>,
    registry: Registry,
    admission: Arc<Admission>,
    messaging: Arc<Messaging>,
}

impl Stream {
    /// Registers a new stream and starts its ack writer.
    fn open(
        messaging: Arc<Messaging>,
        registry: Registry,
        admission: Arc<Admission>,
        inbound: tonic::Streaming<SessionUp>,
        down: Down,
    ) -> Self {
        let stream = registry.new_stream();
        let sessions: BTreeMap<u64, Attached> = BTreeMap::new();
        let inflight = Arc::new(Semaphore::new(messaging.config().max_inflight_per_stream));
        let acks = Arc::new(AckBatch::default());
        let ack_writer = tokio::spawn(acks.clone().write_until_closed(messaging.clone()));
        Self {
            _close_acks: CloseOnDrop(acks.clone()),
            ack_writer: Some(ack_writer),
            acks,
            inflight,
            sessions,
            stream,
            down,
            inbound,
            registry,
            admission,
            messaging,
        }
    }

    /// Handles what the gateway sends, in order, until the stream ends.
    async fn run(mut self) {
        while let Ok(Some(up)) = self.inbound.message().await {
            let Some(kind) = up.kind else { continue };
            match kind {
                session_up::Kind::Attach(attach) => self.on_attach(attach).await,
                session_up::Kind::Detach(detach) => self.on_detach(&detach),
                session_up::Kind::Send(send) => self.on_send(send).await,
                session_up::Kind::Ack(ack) => self.on_ack(&ack).await,
                session_up::Kind::Receipt(receipt) => self.on_receipt(receipt).await,
            }
        }
        self.close().await;
    }

    /// Starts delivering to a device session (replacing an earlier
    /// attachment of the same session number).
    async fn on_attach(&mut self, attach: pb::Attach) {
        let Some(caller) = attach.caller.map(to_caller) else {
            let _ = self
                .down
                .send(Ok(refusal(
                    attach.session,
                    0,
                    ErrorCode::BadRequest,
                    "attach without caller",
                )))
                .await;
            return;
        };
        if let Some(old) = self.sessions.remove(&attach.session) {
            old.task.abort();
            self.registry
                .remove(&old.caller.device_id, self.stream, attach.session);
        }
        if let Err(shed) = self.admission.admit(&caller.device_id) {
            metrics::counter!("meridian_core_attaches_shed_total", "why" => shed.why).increment(1);
            let _ = self.down.send(Ok(shed_frame(attach.session, shed))).await;
            return;
        }
        let state = Arc::new(DeliveryState::new());
        let task = tokio::spawn(deliver(
            self.messaging.clone(),
            self.admission.clone(),
            attach.session,
            caller.clone(),
            state.clone(),
            self.down.clone(),
        ));
        self.registry.add(
            &caller.device_id,
            Registration {
                stream: self.stream,
                session: attach.session,
                down: self.down.clone(),
                delivery: task.abort_handle(),
            },
            self.messaging.config().max_sessions_per_device,
        );
        self.sessions.insert(
            attach.session,
            Attached {
                caller,
                state,
                task,
            },
        );
    }

    /// Ends a device session.
    fn on_detach(&mut self, detach: &pb::Detach) {
        if let Some(old) = self.sessions.remove(&detach.session) {
            old.task.abort();
            self.registry
                .remove(&old.caller.device_id, self.stream, detach.session);
        }
    }

    /// Admits a send of an attached session and runs it in a task of its
    /// own; its result or error goes down when it is done.
    async fn on_send(&mut self, send: pb::SendRequest) {
        let attached = self.sessions.get(&send.session).filter(|a| {
            self.registry
                .is_attached(&a.caller.device_id, self.stream, send.session)
        });
        let Some(attached) = attached else {
            let _ = self
                .down
                .send(Ok(refusal(
                    send.session,
                    send.request,
                    ErrorCode::Unauthenticated,
                    "unknown or ended session",
                )))
                .await;
            return;
        };
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            let _ = self
                .down
                .send(Ok(refusal(
                    send.session,
                    send.request,
                    ErrorCode::RateLimited,
                    "too many sends in flight",
                )))
                .await;
            return;
        };
        let caller = attached.caller.clone();
        let (messaging, down) = (self.messaging.clone(), self.down.clone());
        tokio::spawn(async move {
            let input = SendInput {
                conv_id: send.conv_id,
                client_msg_id: send.client_msg_id.clone(),
                payload: send.payload,
                reply_to: send.reply_to,
                last_seen_hlc: send.last_seen_hlc,
                attachments: send.attachments,
            };
            let frame = match messaging.send(&caller, &input).await {
                Ok(record) => SessionDown {
                    kind: Some(session_down::Kind::Sent(pb::SendResult {
                        session: send.session,
                        request: send.request,
                        conv_id: record.conv_id,
                        client_msg_id: send.client_msg_id,
                        msg_id: record.msg_id,
                        hlc: record.hlc,
                        sent_ms: record.sent_ms,
                    })),
                },
                Err(error) => error_frame(send.session, send.request, &error),
            };
            let _ = down.send(Ok(frame)).await;
            drop(permit);
        });
    }

    /// Queues an ack of a delivered cursor for the stream's ack writer.
    async fn on_ack(&mut self, ack: &pb::AckRequest) {
        let Some(attached) = self.sessions.get(&ack.session) else {
            return;
        };
        let Some(cursor) = store::stamp_from_hex(&ack.cursor) else {
            let _ = self
                .down
                .send(Ok(refusal(
                    ack.session,
                    0,
                    ErrorCode::BadCursor,
                    "cursor is not a delivered cursor",
                )))
                .await;
            return;
        };
        let known = attached.state.unacked().holds(&cursor);
        if !known {
            let _ = self
                .down
                .send(Ok(refusal(
                    ack.session,
                    0,
                    ErrorCode::BadCursor,
                    "cursor was not delivered to this device or was already acknowledged",
                )))
                .await;
            return;
        }
        self.acks.push(
            ack.session,
            PendingAck {
                session: ack.session,
                caller: attached.caller.clone(),
                cursor,
                state: attached.state.clone(),
                down: self.down.clone(),
            },
        );
    }

    /// Runs a receipt of an attached session in a task of its own; only an
    /// error goes down.
    async fn on_receipt(&mut self, receipt: pb::ReceiptRequest) {
        let attached = self.sessions.get(&receipt.session).filter(|a| {
            self.registry
                .is_attached(&a.caller.device_id, self.stream, receipt.session)
        });
        let Some(attached) = attached else {
            return;
        };
        let kind = match receipt.kind.as_str() {
            "delivered" => ReceiptKind::Delivered,
            "read" => ReceiptKind::Read,
            _ => {
                let _ = self
                    .down
                    .send(Ok(refusal(
                        receipt.session,
                        receipt.request,
                        ErrorCode::BadRequest,
                        "kind must be delivered or read",
                    )))
                    .await;
                return;
            }
        };
        let (messaging, caller, down) = (
            self.messaging.clone(),
            attached.caller.clone(),
            self.down.clone(),
        );
        tokio::spawn(async move {
            if let Err(error) = messaging
                .receipt(&caller, &receipt.conv_id, &receipt.msg_ids, kind)
                .await
            {
                let _ = down
                    .send(Ok(error_frame(receipt.session, receipt.request, &error)))
                    .await;
            }
        });
    }

    /// Ends every session of the ended stream, then waits for its acks to
    /// be written.
    async fn close(mut self) {
        self.detach_all();
        // Acks already received are still written (the devices would otherwise
        // be sent those items again when they resume).
        self.acks.close();
        if let Some(writer) = self.ack_writer.take() {
            let _ = writer.await;
        }
    }

    /// Stops delivering to every session of the stream. Their delivery
    /// tasks hold the outgoing channel: until they end, the gateway's end
    /// of the stream stays open.
    fn detach_all(&mut self) {
        for (session, attached) in std::mem::take(&mut self.sessions) {
            attached.task.abort();
            self.registry
                .remove(&attached.caller.device_id, self.stream, session);
        }
    }
}

/// A stream dropped without closing (its core shutting down, or failed)
/// still ends its sessions' deliveries, so the gateway sees it end.
impl Drop for Stream {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Ends a session the core would not admit, telling its gateway how long
/// the device should wait before it comes back.
fn shed_frame(session: u64, shed: super::admission::Shed) -> SessionDown {
    SessionDown {
        kind: Some(session_down::Kind::Detached(pb::Detached {
            session,
            code: ErrorCode::Unavailable.as_str().to_string(),
            message: "the core is admitting sessions as fast as it can; come back after the wait"
                .to_string(),
            retry_after_ms: u64::try_from(shed.retry_after.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        })),
    }
}
