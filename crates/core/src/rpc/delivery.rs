//! Delivery to one device session: its inbox from the stored cursor, read
//! from the inbox feed or the store, pushed in `deliver` frames under flow
//! control, with `gap` when retention passed the cursor.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_seams::Backoff;

use meridian_rpc::core::{self as pb, Delivery, SessionDown, delivery, session_down};
use meridian_store::keys::Stamp;
use meridian_store::{self as store, Armed, FeedRead, InboxEntry, InboxWait, ReceiptKind};
use meridian_wire::ErrorCode;
use tokio::sync::watch;

use super::admission::Admission;
use super::convert::{Down, error_frame, message_info};
use crate::{Caller, CoreError, Messaging};

/// What the delivery task and the ack path share for one device session.
pub(super) struct DeliveryState {
    /// Deliveries sent but not yet acknowledged.
    pub(super) unacked: Mutex<Unacked>,
    /// Latest acknowledged stamp, to wake a delivery task waiting on flow control.
    pub(super) acked: watch::Sender<Stamp>,
}

impl DeliveryState {
    pub(super) fn new() -> Self {
        let (acked, _) = watch::channel(store::keys::STAMP_ZERO);
        Self {
            unacked: Mutex::new(Unacked::default()),
            acked,
        }
    }

    pub(super) fn unacked(&self) -> std::sync::MutexGuard<'_, Unacked> {
        self.unacked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The flow-control window of one session: stamps delivered and not yet
/// acknowledged, oldest first, with the bytes each delivery weighed.
#[derive(Default)]
pub(super) struct Unacked {
    stamps: VecDeque<(Stamp, usize)>,
    bytes: usize,
}

impl Unacked {
    fn push(&mut self, stamp: Stamp, bytes: usize) {
        self.stamps.push_back((stamp, bytes));
        self.bytes += bytes;
    }

    /// Releases everything up to and including `cursor` (acks are cumulative).
    pub(super) fn release_through(&mut self, cursor: &Stamp) {
        while let Some(&(stamp, bytes)) = self.stamps.front() {
            if stamp > *cursor {
                break;
            }
            self.stamps.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Whether `cursor` ends a delivery this session was sent.
    pub(super) fn holds(&self, cursor: &Stamp) -> bool {
        self.stamps.iter().any(|(stamp, _)| stamp == cursor)
    }

    /// Whether the window is full: `max_count` deliveries or `max_bytes`
    /// of them await an ack. An empty window is never full, so one
    /// delivery larger than the byte window still goes.
    fn full(&self, max_count: usize, max_bytes: usize) -> bool {
        self.stamps.len() >= max_count || (self.bytes >= max_bytes && !self.stamps.is_empty())
    }
}

/// Delivers a device's inbox from its stored cursor: read a batch, push it,
/// and when the inbox is drained, watch the inbox head until something
/// arrives. Stops pushing while `max_unacked` deliveries, or
/// `max_unacked_bytes` of them, await an ack.
/// Transient store failures are retried with backoff; the session is only
/// ended (with an error frame) by a failure that retrying cannot fix.
pub(super) async fn deliver(
    messaging: Arc<Messaging>,
    admission: Arc<Admission>,
    session: u64,
    caller: Caller,
    state: Arc<DeliveryState>,
    down: Down,
) {
    // Checked after the registration (in `Stream::on_attach`): a revocation
    // that commits later finds the registration and ends this session; one
    // that committed earlier is seen here.
    //
    // Boxed while they run, as each round and error frame are: the
    // session's task is at least as large as the largest state its future
    // can be in, for the session's whole life, and an idle session waits
    // in none of these.
    let mut cursor = match Box::pin(messaging.attach_cursor(&caller)).await {
        Ok(cursor) => cursor,
        Err(error) => {
            send_error(&down, session, &error).await;
            return;
        }
    };
    let ready = SessionDown {
        kind: Some(session_down::Kind::Ready(pb::Ready {
            session,
            cursor: store::stamp_to_hex(&cursor),
        })),
    };
    if Box::pin(down.send(Ok(ready))).await.is_err() {
        return;
    }
    // Subscribed before the first look at the inbox, so that no commit
    // falls between the look and the wait.
    let inbox = messaging.inbox_waiter().subscribe(&caller.user_id, cursor);
    let mut window = Window {
        state: &state,
        acked: state.acked.subscribe(),
        max_count: messaging.config().max_unacked,
        max_bytes: messaging.config().max_unacked_bytes,
    };
    let mut backlog = Backlog {
        admission: &admission,
        behind: true,
    };
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
    loop {
        if window.open().await == Flow::Stop {
            return;
        }
        // Boxed for the round only: its future (reads, frames) is a few
        // times larger than the rest of the session, which idles in the
        // wait below instead, so an idle session does not hold it.
        let round = Box::pin(deliver_step(
            &messaging,
            &mut backlog,
            session,
            &caller,
            &mut window,
            &down,
            &mut cursor,
            &inbox,
        ));
        let step = match round.await {
            Ok(Round::Wait(armed)) => wait_for_inbox(&inbox, armed, &down).await,
            Ok(Round::Done(flow)) => Ok(flow),
            Err(error) => Err(error),
        };
        match step {
            Ok(Flow::Continue) => backoff.reset(),
            Ok(Flow::Stop) => return,
            Err(error) if error.code() == ErrorCode::Unavailable => {
                tracing::warn!(%error, device = %caller.device_id, "delivery retrying");
                backoff.wait().await;
            }
            Err(error) => {
                tracing::warn!(%error, device = %caller.device_id, "delivery stopped");
                send_error(&down, session, &error).await;
                return;
            }
        }
    }
}

/// Tells the gateway that the session's deliveries ended with `error`.
async fn send_error(down: &Down, session: u64, error: &CoreError) {
    let _ = Box::pin(down.send(Ok(error_frame(session, 0, error)))).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// How a round of delivery ended.
enum Round {
    /// Sent what there was (or the session ended).
    Done(Flow),
    /// The whole inbox was read: wait for it to grow, as armed.
    Wait(Option<Armed>),
}

/// A session's flow-control window as its delivery task sees it.
///
/// The byte bound is what keeps a session that reads but acks late from
/// being cut off as slow: the gateway buffers at most 4 MiB per session,
/// and everything it buffers for delivery is unacknowledged, so a window
/// below that buffer means that only a session that stops reading its
/// socket fills it.
struct Window<'a> {
    state: &'a DeliveryState,
    acked: watch::Receiver<Stamp>,
    max_count: usize,
    max_bytes: usize,
}

impl Window<'_> {
    /// Waits until the window has room; `Stop` when the session ended.
    async fn open(&mut self) -> Flow {
        while self.state.unacked().full(self.max_count, self.max_bytes) {
            if self.acked.changed().await.is_err() {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }
}

/// One round of delivery: a gap, a batch, or the end of the inbox, after
/// which the loop waits for it to grow.
///
/// What commits append is taken from the inbox's feed where the store has
/// one; the store is read whenever the feed does not know the entries after
/// the cursor (no feed, just attached, far behind, or retention at work),
/// and then the loop waits as the [`InboxWait`] arms it (see
/// [`store::InboxWaiter`]). A store read of a session that is behind holds
/// one of the core's backlog slots ([`Backlog`]) until its batch is read,
/// not while the batch waits for the device's window.
// The session's parts are borrowed from `deliver`'s loop, each separately.
#[allow(clippy::too_many_arguments)]
async fn deliver_step(
    messaging: &Messaging,
    backlog: &mut Backlog<'_>,
    session: u64,
    caller: &Caller,
    window: &mut Window<'_>,
    down: &Down,
    cursor: &mut Stamp,
    inbox: &InboxWait,
) -> Result<Round, CoreError> {
    let batch = messaging.config().delivery_batch;
    if let FeedRead::Entries(entries) = inbox.read(cursor, batch) {
        if entries.is_empty() {
            return Ok(Round::Wait(None));
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
        stop_at_lost(messaging, caller, &mut items).await?;
        return Ok(Round::Done(
            send_deliveries(session, window, down, cursor, items).await,
        ));
    }
    let slot = backlog.slot().await;
    let tx = messaging.db().begin();
    let floor = store::get_inbox_floor(&tx, &caller.user_id, &caller.device_id).await?;
    if floor > *cursor {
        tracing::debug!(device = %caller.device_id, floor = %store::stamp_to_hex(&floor), "gap");
        drop(slot);
        // Told, not yet known to be heard: the stored cursor stays until
        // the device acknowledges `lost_through` (or anything after it),
        // so a gap lost with its connection is told again on the next
        // session rather than never. Awaiting its ack like a delivery's.
        window.state.unacked().push(floor, 0);
        let gap = SessionDown {
            kind: Some(session_down::Kind::Gap(pb::Gap {
                session,
                lost_through: store::stamp_to_hex(&floor),
            })),
        };
        if down.send(Ok(gap)).await.is_err() {
            return Ok(Round::Done(Flow::Stop));
        }
        *cursor = floor;
        return Ok(Round::Done(Flow::Continue));
    }
    let entries = store::read_inbox(&tx, &caller.user_id, cursor, batch).await?;
    // A short read saw the whole inbox at this snapshot: wait for it to grow
    // rather than reading it again to find it empty (half of all inbox range
    // reads, each of which visits every table of the LSM): armed at this
    // snapshot, the wait wakes for anything appended after it.
    let caught_up = entries.len() < batch;
    backlog.behind = !caught_up;
    let armed = caught_up.then(|| inbox.arm(&tx));
    let mut items = Vec::with_capacity(entries.len());
    for (stamp, entry) in &entries {
        items.push((*stamp, delivery_item(&tx, entry).await?));
    }
    if let Some(armed) = &armed {
        armed.register(&tx).await?;
    }
    drop(slot);
    if stop_at_lost(messaging, caller, &mut items).await? {
        // The floor moved: the next round tells the device, then reads on.
        return Ok(Round::Done(
            send_deliveries(session, window, down, cursor, items).await,
        ));
    }
    if !items.is_empty()
        && send_deliveries(session, window, down, cursor, items).await == Flow::Stop
    {
        return Ok(Round::Done(Flow::Stop));
    }
    if !caught_up {
        return Ok(Round::Done(Flow::Continue));
    }
    Ok(Round::Wait(armed))
}

/// Stops `items` at the first entry whose message retention removed from
/// history before this device read it, and answers whether it did.
///
/// Retention removes a message by its age and an inbox entry by when it
/// was written: a message that reached this region late (a partition held
/// replication back) has entries younger than itself, which outlive it.
/// The device lost that message as surely as one whose entry retention
/// removed, and is told so the same way: its floor moves through the run
/// of such entries, and the next round sends `gap` (then reads on), rather
/// than skipping them in silence.
async fn stop_at_lost(
    messaging: &Messaging,
    caller: &Caller,
    items: &mut Vec<(Stamp, Option<delivery::Item>)>,
) -> Result<bool, CoreError> {
    let Some(first) = items.iter().position(|(_, item)| item.is_none()) else {
        return Ok(false);
    };
    let lost_through = items[first..]
        .iter()
        .take_while(|(_, item)| item.is_none())
        .last()
        .map(|(stamp, _)| *stamp);
    items.truncate(first);
    if let Some(lost_through) = lost_through {
        messaging.raise_floor(caller, &lost_through).await?;
    }
    Ok(true)
}

/// Whether a session is reading a backlog, and the core's budget for
/// those reads (`admission.rs`). A session is behind from its attach until
/// a store read finds the end of its inbox, and again when a read fills a
/// whole batch; reads after a wake-up of a caught-up session (every read,
/// where delivery watches the inbox head instead of following a feed) are
/// live deliveries and take no slot, so they never wait behind a storm's
/// backlogs.
struct Backlog<'a> {
    admission: &'a Admission,
    behind: bool,
}

impl Backlog<'_> {
    /// A backlog-read slot, when the session is behind.
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.behind {
            Some(self.admission.sync_slot().await)
        } else {
            None
        }
    }
}

/// Largest `deliver` frame, bytes of protobuf (one delivery may exceed
/// it alone): a batch of large messages is several frames, so neither the
/// gateway's queue nor its JSON holds megabytes for one session.
const MAX_DELIVER_BYTES: usize = 256 * 1024;

/// Sends `items` (inbox entries after `cursor`, in order; `None` for an
/// entry skipped because retention removed its message) as `deliver`
/// frames of at most [`MAX_DELIVER_BYTES`], each once the window has room,
/// records them as awaiting acks, and moves `cursor` past them.
async fn send_deliveries(
    session: u64,
    window: &mut Window<'_>,
    down: &Down,
    cursor: &mut Stamp,
    items: Vec<(Stamp, Option<delivery::Item>)>,
) -> Flow {
    let mut frame = Vec::new();
    let mut bytes = 0;
    for (stamp, item) in items {
        let delivery = item.map(|item| Delivery {
            cursor: store::stamp_to_hex(&stamp),
            item: Some(item),
        });
        let size = delivery.as_ref().map_or(0, prost::Message::encoded_len);
        if !frame.is_empty() && bytes + size > MAX_DELIVER_BYTES {
            let full = std::mem::take(&mut frame);
            if send_frame(session, window.state, down, cursor, full).await == Flow::Stop
                || window.open().await == Flow::Stop
            {
                return Flow::Stop;
            }
            bytes = 0;
        }
        bytes += size;
        frame.push((stamp, delivery, size));
    }
    send_frame(session, window.state, down, cursor, frame).await
}

/// Sends one `deliver` frame of `deliveries` after `cursor`.
async fn send_frame(
    session: u64,
    state: &DeliveryState,
    down: &Down,
    cursor: &mut Stamp,
    deliveries: Vec<(Stamp, Option<Delivery>, usize)>,
) -> Flow {
    let Some(&(last, _, _)) = deliveries.last() else {
        return Flow::Continue;
    };
    let after = store::stamp_to_hex(cursor);
    let mut delivered = Vec::with_capacity(deliveries.len());
    {
        let mut unacked = state.unacked();
        for (stamp, delivery, size) in deliveries {
            if let Some(delivery) = delivery {
                delivered.push(delivery);
                unacked.push(stamp, size);
            }
        }
        // The chain's end is ackable even when its entry was skipped.
        if unacked.stamps.back().map(|(stamp, _)| stamp) != Some(&last) {
            unacked.push(last, 0);
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

/// Waits for the inbox to grow (as `armed` at the last read, or by its
/// feed), or for the session to end.
async fn wait_for_inbox(
    inbox: &InboxWait,
    armed: Option<Armed>,
    down: &Down,
) -> Result<Flow, CoreError> {
    tokio::select! {
        biased;
        changed = inbox.changed(armed) => changed?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(n: u8) -> Stamp {
        let mut stamp = store::keys::STAMP_ZERO;
        stamp[11] = n;
        stamp
    }

    #[test]
    fn the_window_fills_by_count_or_by_bytes() {
        let mut unacked = Unacked::default();
        assert!(!unacked.full(2, 100), "an empty window has room");
        unacked.push(stamp(1), 60);
        assert!(!unacked.full(2, 100));
        unacked.push(stamp(2), 10);
        assert!(unacked.full(2, 1000), "two deliveries fill a window of two");
        assert!(!unacked.full(3, 100));
        unacked.push(stamp(3), 30);
        assert!(unacked.full(4, 100), "100 bytes fill a window of 100");
    }

    #[test]
    fn one_delivery_larger_than_the_window_still_goes() {
        let unacked = Unacked::default();
        assert!(!unacked.full(10, 0));
        let mut unacked = Unacked::default();
        unacked.push(stamp(1), 5_000);
        assert!(
            unacked.full(10, 100),
            "but nothing follows it unacknowledged"
        );
    }

    #[test]
    fn an_ack_releases_everything_through_its_cursor() {
        let mut unacked = Unacked::default();
        for n in 1..=4 {
            unacked.push(stamp(n), 25);
        }
        assert!(unacked.full(10, 100));
        unacked.release_through(&stamp(2));
        assert_eq!(unacked.bytes, 50);
        assert!(!unacked.holds(&stamp(2)));
        assert!(unacked.holds(&stamp(3)));
        assert!(!unacked.full(10, 100));
        unacked.release_through(&stamp(9));
        assert_eq!((unacked.stamps.len(), unacked.bytes), (0, 0));
    }
}
