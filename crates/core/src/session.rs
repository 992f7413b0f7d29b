//! The multiplexed session stream of one gateway: sends, acks and receipts
//! in; deliveries, send results and errors out, for many devices at once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_proto::ErrorCode;
use meridian_proto::core::{
    self as pb, Delivery, SessionDown, SessionUp, delivery, session_down, session_up,
};
use meridian_store::keys::Stamp;
use meridian_store::{self as store, FeedRead, InboxEntry, InboxSubscription, ReceiptKind};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tonic::Status;

use crate::grpc::{message_info, to_caller};
use crate::messaging::{Caller, SendInput};
use crate::{CoreError, Messaging};

pub(crate) type Down = mpsc::Sender<Result<SessionDown, Status>>;

/// Where each device is attached, across every gateway stream of this core,
/// so a revocation can end the device's live sessions at once.
#[derive(Default, Clone)]
pub(crate) struct Registry {
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

    fn add(&self, device: &str, registration: Registration) {
        self.lock()
            .entry(device.to_string())
            .or_default()
            .push(registration);
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
    pub(crate) fn detach_device(&self, device: &str, code: ErrorCode, message: &str) {
        let registrations = self.lock().remove(device).unwrap_or_default();
        for registration in registrations {
            registration.delivery.abort();
            let frame = SessionDown {
                kind: Some(session_down::Kind::Detached(pb::Detached {
                    session: registration.session,
                    code: code.as_str().to_string(),
                    message: message.to_string(),
                })),
            };
            // From a task: a full stream delays the notice instead of losing
            // it (the session is refused below in any case).
            let down = registration.down.clone();
            tokio::spawn(async move {
                let _ = down.send(Ok(frame)).await;
            });
        }
    }
}

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
    registry: Registry,
    mut inbound: tonic::Streaming<SessionUp>,
    down: Down,
) {
    let stream = registry.new_stream();
    let mut sessions: BTreeMap<u64, Attached> = BTreeMap::new();
    let inflight = Arc::new(Semaphore::new(messaging.config().max_inflight_per_stream));
    let acks = Arc::new(AckBatch::default());
    let ack_writer = tokio::spawn(acks.clone().write_until_closed(messaging.clone()));
    // Closed however this stream ends, including by being dropped at
    // shutdown: the writer then writes what waits and stops.
    let _close_acks = CloseOnDrop(acks.clone());
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
                    registry.remove(&old.caller.device_id, stream, attach.session);
                }
                let (acked, _) = watch::channel(meridian_store::keys::STAMP_ZERO);
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
                registry.add(
                    &caller.device_id,
                    Registration {
                        stream,
                        session: attach.session,
                        down: down.clone(),
                        delivery: task.abort_handle(),
                    },
                );
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
                    registry.remove(&old.caller.device_id, stream, detach.session);
                }
            }
            session_up::Kind::Send(send) => {
                let attached = sessions
                    .get(&send.session)
                    .filter(|a| registry.is_attached(&a.caller.device_id, stream, send.session));
                let Some(attached) = attached else {
                    let _ = down
                        .send(Ok(refusal(
                            send.session,
                            send.request,
                            ErrorCode::Unauthenticated,
                            "unknown or ended session",
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
                acks.push(
                    ack.session,
                    PendingAck {
                        session: ack.session,
                        caller: attached.caller.clone(),
                        cursor,
                        state: attached.state.clone(),
                        down: down.clone(),
                    },
                );
            }
            session_up::Kind::Receipt(receipt) => {
                let attached = sessions
                    .get(&receipt.session)
                    .filter(|a| registry.is_attached(&a.caller.device_id, stream, receipt.session));
                let Some(attached) = attached else {
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
    for (session, attached) in sessions {
        attached.task.abort();
        registry.remove(&attached.caller.device_id, stream, session);
    }
    // Acks already received are still written (the devices would otherwise
    // be sent those items again when they resume).
    acks.close();
    let _ = ack_writer.await;
}

/// Closes the stream's ack batch when dropped.
struct CloseOnDrop(Arc<AckBatch>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// An acknowledgement waiting to be written.
struct PendingAck {
    session: u64,
    caller: Caller,
    cursor: Stamp,
    state: Arc<DeliveryState>,
    down: Down,
}

/// The acks of one gateway stream, written together: those that arrive
/// while one write commits go into the next, as one transaction, and a
/// session's later ack replaces its earlier one. An ack is a blind byte-max
/// of the device's cursor, so batching changes no outcome, only the number
/// of commits: with one ack per delivered frame, acks were two of every
/// three commits of 1:1 traffic.
#[derive(Default)]
struct AckBatch {
    pending: Mutex<AckQueue>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct AckQueue {
    /// Keyed by session and its delivery state: a session number attached
    /// again (a new state) keeps the old attachment's ack apart.
    by_session: BTreeMap<(u64, usize), PendingAck>,
    closed: bool,
}

/// Acks written per transaction, far below the transaction size limit.
const ACKS_PER_COMMIT: usize = 1024;

impl AckBatch {
    fn queue(&self) -> std::sync::MutexGuard<'_, AckQueue> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, session: u64, ack: PendingAck) {
        let key = (session, Arc::as_ptr(&ack.state) as usize);
        let mut queue = self.queue();
        match queue.by_session.get_mut(&key) {
            // Acks are cumulative: the higher cursor stands for both.
            Some(waiting) if waiting.cursor >= ack.cursor => {}
            Some(waiting) => *waiting = ack,
            None => {
                queue.by_session.insert(key, ack);
            }
        }
        drop(queue);
        self.wake.notify_one();
    }

    fn close(&self) {
        self.queue().closed = true;
        self.wake.notify_one();
    }

    /// Writes waiting acks until the stream closed and nothing waits.
    async fn write_until_closed(self: Arc<Self>, messaging: Arc<Messaging>) {
        loop {
            // Everything waiting, so no session waits behind others; written
            // in transactions of at most ACKS_PER_COMMIT.
            let (waiting, closed) = {
                let mut queue = self.queue();
                (std::mem::take(&mut queue.by_session), queue.closed)
            };
            if waiting.is_empty() {
                if closed {
                    return;
                }
                self.wake.notified().await;
                continue;
            }
            let waiting: Vec<PendingAck> = waiting.into_values().collect();
            for batch in waiting.chunks(ACKS_PER_COMMIT) {
                Self::write(&messaging, batch).await;
            }
        }
    }

    /// Writes `batch` in one transaction, then opens the flow-control window
    /// of each session in it (or tells it the write failed).
    async fn write(messaging: &Messaging, batch: &[PendingAck]) {
        let result = messaging
            .ack_many(batch.iter().map(|ack| (&ack.caller, &ack.cursor)))
            .await;
        for ack in batch {
            match &result {
                Ok(()) => {
                    // Only a durable ack opens the flow-control window.
                    ack.state.unacked().retain(|s| *s > ack.cursor);
                    ack.state.acked.send_if_modified(|current| {
                        let newer = ack.cursor > *current;
                        if newer {
                            *current = ack.cursor;
                        }
                        newer
                    });
                }
                Err(error) => {
                    let frame = error_frame(ack.session, 0, error);
                    let down = ack.down.clone();
                    tokio::spawn(async move {
                        let _ = down.send(Ok(frame)).await;
                    });
                }
            }
        }
    }
}

/// Delivers a device's inbox from its stored cursor: read a batch, push it,
/// and when the inbox is drained, watch the inbox head until something
/// arrives. Stops pushing while `max_unacked` deliveries await an ack.
/// Transient store failures are retried with backoff; the session is only
/// ended (with an error frame) by a failure that retrying cannot fix.
async fn deliver(
    messaging: Arc<Messaging>,
    session: u64,
    caller: Caller,
    state: Arc<DeliveryState>,
    down: Down,
) {
    // Checked after the registration above: a revocation that commits later
    // finds the registration and ends this session; one that committed
    // earlier is seen here.
    let mut cursor = match messaging.attach_cursor(&caller).await {
        Ok(cursor) => cursor,
        Err(error) => {
            let _ = down.send(Ok(error_frame(session, 0, &error))).await;
            return;
        }
    };
    let ready = SessionDown {
        kind: Some(session_down::Kind::Ready(pb::Ready {
            session,
            cursor: store::stamp_to_hex(&cursor),
        })),
    };
    if down.send(Ok(ready)).await.is_err() {
        return;
    }
    // Subscribed before the first look at the inbox, so that no commit
    // falls between the look and the wait.
    let feed = messaging
        .inbox_feed()
        .map(|feed| feed.subscribe(&caller.user_id, cursor));
    let mut acked = state.acked.subscribe();
    let mut backoff = Duration::from_millis(5);
    loop {
        while state.unacked().len() >= messaging.config().max_unacked {
            if acked.changed().await.is_err() {
                return;
            }
        }
        let step = deliver_step(
            &messaging,
            session,
            &caller,
            &state,
            &down,
            &mut cursor,
            feed.as_ref(),
        );
        match step.await {
            Ok(Flow::Continue) => backoff = Duration::from_millis(5),
            Ok(Flow::Stop) => return,
            Err(error) if error.code() == ErrorCode::Unavailable => {
                tracing::warn!(%error, device = %caller.device_id, "delivery retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(error) => {
                tracing::warn!(%error, device = %caller.device_id, "delivery stopped");
                let _ = down.send(Ok(error_frame(session, 0, &error))).await;
                return;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// One round of delivery: a gap, a batch, or a wait for the inbox to grow.
///
/// With an inbox feed (the native store), what commits append is taken from
/// the feed; the store is read only when the feed does not know the entries
/// after the cursor (just attached, far behind, or retention at work).
/// Without one (FoundationDB), the inbox is read from the store and a watch
/// on its head waits for more.
async fn deliver_step(
    messaging: &Messaging,
    session: u64,
    caller: &Caller,
    state: &DeliveryState,
    down: &Down,
    cursor: &mut Stamp,
    feed: Option<&InboxSubscription>,
) -> Result<Flow, CoreError> {
    let batch = messaging.config().delivery_batch;
    if let Some(feed) = feed
        && let FeedRead::Entries(entries) = feed.read(cursor, batch)
    {
        if entries.is_empty() {
            return wait_for_feed(feed, down).await;
        }
        // Opened only for an entry whose message its commit did not carry.
        let mut tx = None;
        let mut items = Vec::with_capacity(entries.len());
        for entry in &entries {
            let item = match (entry.message(), &entry.entry) {
                (Some(message), _) => Some(delivery::Item::Message(message_info(message?))),
                (None, InboxEntry::Message { .. }) => {
                    let tx = tx.get_or_insert_with(|| messaging.db().begin());
                    delivery_item(tx, &entry.entry).await?
                }
                (None, notice) => notice_item(notice),
            };
            items.push((entry.stamp, item));
        }
        return Ok(send_deliveries(session, state, down, cursor, items).await);
    }
    let tx = messaging.db().begin();
    let floor = store::get_inbox_floor(&tx, &caller.user_id).await?;
    if floor > *cursor {
        let gap = SessionDown {
            kind: Some(session_down::Kind::Gap(pb::Gap {
                session,
                lost_through: store::stamp_to_hex(&floor),
            })),
        };
        if down.send(Ok(gap)).await.is_err() {
            return Ok(Flow::Stop);
        }
        // The device has been told: move its cursor so it is told once.
        messaging.ack(caller, &floor).await?;
        *cursor = floor;
        return Ok(Flow::Continue);
    }
    let entries = store::read_inbox(&tx, &caller.user_id, cursor, batch).await?;
    // A short read saw the whole inbox at this snapshot: wait for it to grow
    // rather than reading it again to find it empty (half of all inbox range
    // reads, each of which visits every table of the LSM). A commit after
    // this snapshot signals the feed (kept as a permit until the wait);
    // without a feed, a watch registered at this snapshot (only snapshot
    // reads: the commit cannot conflict) fires at once for anything
    // appended after it.
    let caught_up = entries.len() < batch;
    let wake = (caught_up && feed.is_none())
        .then(|| tx.watch(&meridian_store::keys::inbox_head(&caller.user_id)));
    let mut items = Vec::with_capacity(entries.len());
    for (stamp, entry) in &entries {
        items.push((*stamp, delivery_item(&tx, entry).await?));
    }
    if wake.is_some() {
        tx.commit().await?;
    }
    if !items.is_empty() && send_deliveries(session, state, down, cursor, items).await == Flow::Stop
    {
        return Ok(Flow::Stop);
    }
    if !caught_up {
        return Ok(Flow::Continue);
    }
    match feed {
        Some(feed) => wait_for_feed(feed, down).await,
        None => wait_for_inbox(wake, down).await,
    }
}

/// Sends `items` (inbox entries after `cursor`, in order; `None` for an
/// entry skipped because retention removed its message) as one `deliver`
/// frame, records them as awaiting acks, and moves `cursor` past them.
async fn send_deliveries(
    session: u64,
    state: &DeliveryState,
    down: &Down,
    cursor: &mut Stamp,
    items: Vec<(Stamp, Option<delivery::Item>)>,
) -> Flow {
    let Some(&(last, _)) = items.last() else {
        return Flow::Continue;
    };
    let after = store::stamp_to_hex(cursor);
    let mut delivered = Vec::with_capacity(items.len());
    {
        let mut unacked = state.unacked();
        for (stamp, item) in items {
            if let Some(item) = item {
                delivered.push(Delivery {
                    cursor: store::stamp_to_hex(&stamp),
                    item: Some(item),
                });
                unacked.push_back(stamp);
            }
        }
        // The chain's end is ackable even when its entry was skipped.
        if unacked.back() != Some(&last) {
            unacked.push_back(last);
        }
    }
    *cursor = last;
    let frame = SessionDown {
        kind: Some(session_down::Kind::Deliver(pb::Deliver {
            session,
            items: delivered,
            after,
            through: store::stamp_to_hex(&last),
        })),
    };
    if down.send(Ok(frame)).await.is_err() {
        return Flow::Stop;
    }
    Flow::Continue
}

/// Waits for the feed to change, or for the session to end.
async fn wait_for_feed(feed: &InboxSubscription, down: &Down) -> Result<Flow, CoreError> {
    tokio::select! {
        biased;
        () = feed.changed() => Ok(Flow::Continue),
        () = down.closed() => Ok(Flow::Stop),
    }
}

/// Waits for `wake` (the inbox head moved), if there is one, or for the
/// session to end.
async fn wait_for_inbox(wake: Option<meridian_kv::Watch>, down: &Down) -> Result<Flow, CoreError> {
    let Some(wake) = wake else {
        return Ok(Flow::Continue);
    };
    tokio::select! {
        biased;
        fired = wake => fired?,
        () = down.closed() => return Ok(Flow::Stop),
    }
    Ok(Flow::Continue)
}

/// The delivery item of `entry`, reading its message from the store:
/// `None` for a message retention already removed from history.
async fn delivery_item(
    tx: &meridian_kv::Transaction,
    entry: &InboxEntry,
) -> Result<Option<delivery::Item>, CoreError> {
    Ok(match entry {
        InboxEntry::Message { .. } => store::get_entry_message(tx, entry)
            .await?
            .map(|message| delivery::Item::Message(message_info(message))),
        notice => notice_item(notice),
    })
}

/// The delivery item of an entry that carries all it says (a receipt or a
/// conversation change); `None` for a message entry.
fn notice_item(entry: &InboxEntry) -> Option<delivery::Item> {
    match entry {
        InboxEntry::Message { .. } => None,
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
    }
}
