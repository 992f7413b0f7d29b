//! The multiplexed session stream of one gateway: sends, acks and receipts
//! in; deliveries, send results and errors out, for many devices at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use meridian_proto::ErrorCode;
use meridian_proto::core::{
    self as pb, Delivery, SessionDown, SessionUp, delivery, session_down, session_up,
};
use meridian_store::keys::Stamp;
use meridian_store::{self as store, InboxEntry, ReceiptKind};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tonic::Status;

use crate::grpc::{message_info, to_caller};
use crate::messaging::{Caller, SendInput};
use crate::{CoreError, Messaging};

pub(crate) type Down = mpsc::Sender<Result<SessionDown, Status>>;

/// What the delivery task and the ack path share for one device session.
struct DeliveryState {
    /// Stamps delivered but not yet acknowledged, oldest first.
    unacked: Mutex<VecDeque<Stamp>>,
    /// Latest acknowledged stamp, to wake a delivery task waiting on flow control.
    acked: watch::Sender<Stamp>,
}

impl DeliveryState {
    fn unacked(&self) -> std::sync::MutexGuard<'_, VecDeque<Stamp>> {
        self.unacked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Attached {
    caller: Caller,
    state: Arc<DeliveryState>,
    task: JoinHandle<()>,
}

fn error_frame(session: u64, request: u64, error: &CoreError) -> SessionDown {
    SessionDown {
        kind: Some(session_down::Kind::Error(pb::SessionError {
            session,
            request,
            code: error.code().as_str().to_string(),
            message: match error {
                CoreError::Refused { message, .. } => message.clone(),
                CoreError::Store(_) => "storage is temporarily unavailable; retry".to_string(),
            },
        })),
    }
}

fn refusal(session: u64, request: u64, code: ErrorCode, message: &str) -> SessionDown {
    error_frame(session, request, &CoreError::refused(code, message))
}

/// Serves one gateway's session stream until it ends.
pub(crate) async fn serve_stream(
    messaging: Arc<Messaging>,
    mut inbound: tonic::Streaming<SessionUp>,
    down: Down,
) {
    let mut sessions: HashMap<u64, Attached> = HashMap::new();
    let inflight = Arc::new(Semaphore::new(messaging.config().max_inflight_per_stream));
    while let Ok(Some(up)) = inbound.message().await {
        let Some(kind) = up.kind else { continue };
        match kind {
            session_up::Kind::Attach(attach) => {
                let Some(caller) = attach.caller.map(to_caller) else {
                    let _ = down
                        .send(Ok(refusal(
                            attach.session,
                            0,
                            ErrorCode::BadRequest,
                            "attach without caller",
                        )))
                        .await;
                    continue;
                };
                if let Some(old) = sessions.remove(&attach.session) {
                    old.task.abort();
                }
                let (acked, _) = watch::channel([0u8; 10]);
                let state = Arc::new(DeliveryState {
                    unacked: Mutex::new(VecDeque::new()),
                    acked,
                });
                let task = tokio::spawn(deliver(
                    messaging.clone(),
                    attach.session,
                    caller.clone(),
                    state.clone(),
                    down.clone(),
                ));
                sessions.insert(
                    attach.session,
                    Attached {
                        caller,
                        state,
                        task,
                    },
                );
            }
            session_up::Kind::Detach(detach) => {
                if let Some(old) = sessions.remove(&detach.session) {
                    old.task.abort();
                }
            }
            session_up::Kind::Send(send) => {
                let Some(attached) = sessions.get(&send.session) else {
                    let _ = down
                        .send(Ok(refusal(
                            send.session,
                            send.request,
                            ErrorCode::Unauthenticated,
                            "unknown session",
                        )))
                        .await;
                    continue;
                };
                let Ok(permit) = inflight.clone().try_acquire_owned() else {
                    let _ = down
                        .send(Ok(refusal(
                            send.session,
                            send.request,
                            ErrorCode::RateLimited,
                            "too many sends in flight",
                        )))
                        .await;
                    continue;
                };
                let caller = attached.caller.clone();
                let (messaging, down) = (messaging.clone(), down.clone());
                tokio::spawn(async move {
                    let input = SendInput {
                        conv_id: send.conv_id,
                        client_msg_id: send.client_msg_id.clone(),
                        payload: send.payload,
                        reply_to: send.reply_to,
                        last_seen_hlc: send.last_seen_hlc,
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
            session_up::Kind::Ack(ack) => {
                let Some(attached) = sessions.get(&ack.session) else {
                    continue;
                };
                let Some(cursor) = store::stamp_from_hex(&ack.cursor) else {
                    let _ = down
                        .send(Ok(refusal(
                            ack.session,
                            0,
                            ErrorCode::BadCursor,
                            "cursor is not a delivered cursor",
                        )))
                        .await;
                    continue;
                };
                let known = attached.state.unacked().iter().any(|s| *s == cursor);
                if !known {
                    let _ = down
                        .send(Ok(refusal(
                            ack.session,
                            0,
                            ErrorCode::BadCursor,
                            "cursor was not delivered to this device or was already acknowledged",
                        )))
                        .await;
                    continue;
                }
                attached.state.unacked().retain(|s| *s > cursor);
                let (messaging, caller, state, down) = (
                    messaging.clone(),
                    attached.caller.clone(),
                    attached.state.clone(),
                    down.clone(),
                );
                let session = ack.session;
                tokio::spawn(async move {
                    match messaging.ack(&caller, &cursor).await {
                        Ok(()) => {
                            state.acked.send_if_modified(|current| {
                                let newer = cursor > *current;
                                if newer {
                                    *current = cursor;
                                }
                                newer
                            });
                        }
                        Err(error) => {
                            let _ = down.send(Ok(error_frame(session, 0, &error))).await;
                        }
                    }
                });
            }
            session_up::Kind::Receipt(receipt) => {
                let Some(attached) = sessions.get(&receipt.session) else {
                    continue;
                };
                let kind = match receipt.kind.as_str() {
                    "delivered" => ReceiptKind::Delivered,
                    "read" => ReceiptKind::Read,
                    _ => {
                        let _ = down
                            .send(Ok(refusal(
                                receipt.session,
                                receipt.request,
                                ErrorCode::BadRequest,
                                "kind must be delivered or read",
                            )))
                            .await;
                        continue;
                    }
                };
                let (messaging, caller, down) =
                    (messaging.clone(), attached.caller.clone(), down.clone());
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
        }
    }
    for (_, attached) in sessions {
        attached.task.abort();
    }
}

/// Delivers a device's inbox from its stored cursor: read a batch, push it,
/// and when the inbox is drained, watch the inbox head until something
/// arrives. Stops pushing while `max_unacked` deliveries await an ack.
async fn deliver(
    messaging: Arc<Messaging>,
    session: u64,
    caller: Caller,
    state: Arc<DeliveryState>,
    down: Down,
) {
    let result = deliver_loop(&messaging, session, &caller, &state, &down).await;
    if let Err(error) = result {
        tracing::warn!(%error, device = %caller.device_id, "delivery stopped");
        let _ = down.send(Ok(error_frame(session, 0, &error))).await;
    }
}

async fn deliver_loop(
    messaging: &Messaging,
    session: u64,
    caller: &Caller,
    state: &DeliveryState,
    down: &Down,
) -> Result<(), CoreError> {
    let config = messaging.config();
    let mut cursor = messaging.cursor(caller).await?;
    let ready = SessionDown {
        kind: Some(session_down::Kind::Ready(pb::Ready {
            session,
            cursor: store::stamp_to_hex(&cursor),
        })),
    };
    if down.send(Ok(ready)).await.is_err() {
        return Ok(());
    }
    let mut acked = state.acked.subscribe();
    loop {
        while state.unacked().len() >= config.max_unacked {
            if acked.changed().await.is_err() {
                return Ok(());
            }
        }
        let tx = messaging.db().begin();
        let floor = store::get_inbox_floor(&tx, &caller.user_id).await?;
        if floor > cursor {
            let gap = SessionDown {
                kind: Some(session_down::Kind::Gap(pb::Gap {
                    session,
                    lost_through: store::stamp_to_hex(&floor),
                })),
            };
            if down.send(Ok(gap)).await.is_err() {
                return Ok(());
            }
            messaging.ack(caller, &floor).await?;
            cursor = floor;
            continue;
        }
        let entries =
            store::read_inbox(&tx, &caller.user_id, &cursor, config.delivery_batch).await?;
        if entries.is_empty() {
            let wake = tx.watch(&meridian_store::keys::inbox_head(&caller.user_id));
            tx.commit().await?;
            tokio::select! {
                fired = wake => { fired?; }
                () = down.closed() => return Ok(()),
            }
            continue;
        }
        let mut items = Vec::with_capacity(entries.len());
        for (stamp, entry) in &entries {
            let item = match entry {
                InboxEntry::Message {
                    conv_id,
                    hlc,
                    msg_id,
                } => {
                    // None: pruned from history by retention, nothing to show.
                    store::get_message(&tx, conv_id, *hlc, msg_id)
                        .await?
                        .map(|message| delivery::Item::Message(message_info(message)))
                }
                InboxEntry::Receipt {
                    conv_id,
                    msg_id,
                    from_user,
                    kind,
                    at_ms,
                } => Some(delivery::Item::Receipt(pb::ReceiptInfo {
                    conv_id: conv_id.clone(),
                    msg_id: msg_id.clone(),
                    from_user_id: from_user.clone(),
                    kind: match kind {
                        ReceiptKind::Delivered => "delivered",
                        ReceiptKind::Read => "read",
                    }
                    .to_string(),
                    at_ms: *at_ms,
                })),
                InboxEntry::ConversationChanged { conv_id, version } => {
                    Some(delivery::Item::Changed(pb::ConversationChanged {
                        conv_id: conv_id.clone(),
                        version: *version,
                    }))
                }
            };
            items.push(Delivery {
                cursor: store::stamp_to_hex(stamp),
                item,
            });
        }
        if let Some((last, _)) = entries.last() {
            cursor = *last;
        }
        state
            .unacked()
            .extend(entries.iter().map(|(stamp, _)| *stamp));
        let frame = SessionDown {
            kind: Some(session_down::Kind::Deliver(pb::Deliver { session, items })),
        };
        if down.send(Ok(frame)).await.is_err() {
            return Ok(());
        }
    }
}
