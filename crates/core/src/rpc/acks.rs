//! The acks of one gateway stream: queued as they arrive, written in
//! batches by one writer task, each written ack opening its session's
//! flow-control window.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use meridian_store::keys::Stamp;

use super::convert::{Down, error_frame};
use super::delivery::DeliveryState;
use crate::{Caller, Messaging};

/// Closes the stream's ack batch when dropped.
pub(super) struct CloseOnDrop(pub(super) Arc<AckBatch>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// An acknowledgement waiting to be written.
pub(super) struct PendingAck {
    pub(super) session: u64,
    pub(super) caller: Caller,
    pub(super) cursor: Stamp,
    pub(super) state: Arc<DeliveryState>,
    pub(super) down: Down,
}

/// The acks of one gateway stream, written together: those that arrive
/// while one write commits go into the next, as one transaction, and a
/// session's later ack replaces its earlier one. An ack is a blind byte-max
/// of the device's cursor, so batching changes no outcome, only the number
/// of commits: with one ack per delivered frame, acks were two of every
/// three commits of 1:1 traffic.
#[derive(Default)]
pub(super) struct AckBatch {
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

    pub(super) fn push(&self, session: u64, ack: PendingAck) {
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

    pub(super) fn close(&self) {
        self.queue().closed = true;
        self.wake.notify_one();
    }

    /// Writes waiting acks until the stream closed and nothing waits.
    pub(super) async fn write_until_closed(self: Arc<Self>, messaging: Arc<Messaging>) {
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
                    // Only a written ack opens the flow-control window.
                    ack.state.unacked().release_through(&ack.cursor);
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
