//! The load the benchmark offers, the same whichever server takes it: pairs
//! of a sender and a receiver, a fixed-rate sender and a receiver that
//! times what it is delivered. A pair speaks Meridian's protocol or XMPP
//! over WebSocket (`xmpp.rs`); nothing here depends on which.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use meridian_sdk::frames::Delivered;
use meridian_sdk::{Event, Rest, Session};
use tokio::sync::Semaphore;

use super::now;
use super::xmpp;

pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One conversation's two ends: a sender and a receiver.
pub(crate) struct Pair {
    pub(crate) sender: Sender,
    pub(crate) receiver: Receiver,
}

impl Pair {
    pub(crate) fn meridian(sender: Arc<Session>, receiver: Session, conv: String) -> Self {
        Self {
            sender: Sender::Meridian {
                session: sender,
                conv,
            },
            receiver: Receiver::Meridian(receiver),
        }
    }
}

/// The sending end of a pair.
#[derive(Clone)]
pub(crate) enum Sender {
    Meridian { session: Arc<Session>, conv: String },
    Xmpp(xmpp::Sender),
}

impl Sender {
    /// Sends the server refused after accepting them: XMPP's error bounces
    /// (Meridian refuses a send in its answer, which `send` returns).
    fn bounced(&self) -> u64 {
        match self {
            Self::Meridian { .. } => 0,
            Self::Xmpp(sender) => sender.bounced(),
        }
    }

    /// Sends `payload` as message `id`. True when the server acknowledged
    /// it (Meridian answers `sent` once the message is durable); false
    /// when the protocol has no acknowledgement and the message was only
    /// written to the socket (XMPP without stream management).
    pub(crate) async fn send(&self, id: &str, payload: &str) -> anyhow::Result<bool> {
        match self {
            Self::Meridian { session, conv } => {
                session.send(conv, id, payload, None, 0).await?;
                Ok(true)
            }
            Self::Xmpp(sender) => {
                sender.send(id, payload).await?;
                Ok(false)
            }
        }
    }
}

/// The receiving end of a pair.
pub(crate) enum Receiver {
    Meridian(Session),
    Xmpp(xmpp::Receiver),
}

impl Receiver {
    /// The payloads of the next delivery and when it arrived (before it is
    /// acknowledged, where the protocol asks that); `None` once the
    /// connection has ended.
    async fn next_delivery(&mut self) -> Option<(Duration, Vec<String>)> {
        match self {
            Self::Meridian(session) => loop {
                let Event::Deliver { through, items, .. } = session.next_event().await? else {
                    continue;
                };
                let at = now();
                let _ = session.ack(&through).await;
                let payloads = items
                    .into_iter()
                    .filter_map(|item| match item.item {
                        Delivered::Message { message } => Some(message.payload),
                        _ => None,
                    })
                    .collect();
                return Some((at, payloads));
            },
            Self::Xmpp(receiver) => {
                let payloads = receiver.next_bodies().await?;
                Some((now(), payloads))
            }
        }
    }
}

/// Opens a session for `token`, waiting as told whenever the gateway or
/// the core sends it away (`busy`): opening thousands at once exceeds the
/// attach budgets, as a reconnect storm would.
pub(crate) async fn connect(ws: &str, token: &str) -> anyhow::Result<Session> {
    loop {
        match Session::connect(ws, token).await {
            Err(meridian_sdk::SdkError::Busy { retry_after, .. }) => {
                tokio::time::sleep(retry_after).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Connects `token` as a sender: its own echoes of what it sends (the sender
/// is a member too) are drained and acknowledged by a task of their own.
pub(crate) async fn sender_session(ws: &str, token: &str) -> anyhow::Result<Arc<Session>> {
    let mut session = connect(ws, token).await?;
    let mut events = session.take_events();
    let session = Arc::new(session);
    let acker = Arc::downgrade(&session);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let (Event::Deliver { through, .. }, Some(session)) = (event, acker.upgrade()) else {
                continue;
            };
            let _ = session.ack(&through).await;
        }
    });
    Ok(session)
}

/// `count` Meridian pairs: two fresh accounts and their 1:1 conversation each.
pub(crate) async fn make_pairs(rest: &Rest, count: usize) -> anyhow::Result<Vec<Pair>> {
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let a = rest.register(&format!("sender{i}")).await?;
        let b = rest.register(&format!("receiver{i}")).await?;
        let conv = rest.with_token(&a.token).direct(&b.user_id).await?.conv_id;
        let ws = rest.ws_url();
        pairs.push(Pair::meridian(
            sender_session(&ws, &a.token).await?,
            connect(&ws, &b.token).await?,
            conv,
        ));
    }
    Ok(pairs)
}

/// Where a receiver counts what it is delivered.
pub(crate) struct Counting {
    pub(crate) origin: Duration,
    /// Deliveries in `[warmup, until)` are counted: the measured seconds.
    pub(crate) warmup: Duration,
    pub(crate) until: Duration,
    /// The receiver stops reading at this time (at or after `until`: a
    /// message sent in the measured seconds is timed even if it arrives
    /// after them).
    pub(crate) stop: Duration,
    pub(crate) delivered: Arc<AtomicU64>,
    /// Given one permit per message delivered: its sender's window.
    pub(crate) credits: Option<Arc<Semaphore>>,
    pub(crate) anomalies: Arc<Anomalies>,
}

/// What went wrong during a phase, which would make its figures low
/// without it: printed, never hidden.
#[derive(Default)]
pub(crate) struct Anomalies {
    failed_sends: AtomicU64,
    receivers_ended_early: AtomicU64,
    bounced_sends: AtomicU64,
}

impl Anomalies {
    /// Adds what the server bounced of `senders`' messages, once the phase
    /// is over.
    fn count_bounces(&self, senders: &[Sender]) {
        let bounced: u64 = senders.iter().map(Sender::bounced).sum();
        self.bounced_sends.fetch_add(bounced, Ordering::Relaxed);
    }

    /// A line saying what went wrong, or `None` if nothing did.
    pub(crate) fn describe(&self) -> Option<String> {
        let failed = self.failed_sends.load(Ordering::Relaxed);
        let ended = self.receivers_ended_early.load(Ordering::Relaxed);
        let bounced = self.bounced_sends.load(Ordering::Relaxed);
        (failed + ended + bounced > 0).then(|| {
            format!(
                "anomalies: {failed} sends failed, {bounced} bounced by the server, {ended} receivers' connections ended early: the figures undercount"
            )
        })
    }
}

/// Receives until `counting.stop`; records `(sent, latency)` from payloads
/// `"t=<nanos since origin>"` and counts deliveries in the measured seconds.
pub(crate) fn spawn_receiver(
    mut receiver: Receiver,
    counting: Counting,
) -> tokio::task::JoinHandle<Vec<(u64, u64)>> {
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        loop {
            let next = tokio::time::timeout(
                counting.stop.saturating_sub(now()),
                receiver.next_delivery(),
            )
            .await;
            let Ok(delivery) = next else {
                break;
            };
            let Some((at, payloads)) = delivery else {
                counting
                    .anomalies
                    .receivers_ended_early
                    .fetch_add(1, Ordering::Relaxed);
                break;
            };
            if let Some(credits) = &counting.credits {
                credits.add_permits(payloads.len());
            }
            if at < counting.warmup {
                continue;
            }
            if at < counting.until {
                counting
                    .delivered
                    .fetch_add(payloads.len() as u64, Ordering::Relaxed);
            }
            for payload in payloads {
                if let Some(sent) = payload
                    .strip_prefix("t=")
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    let at = at.saturating_sub(counting.origin).as_nanos() as u64;
                    latencies.push((sent, at.saturating_sub(sent)));
                }
            }
        }
        latencies
    })
}

/// Sends at `rate` msg/s in total across `pairs` for `seconds` (after a
/// second of warm-up), never waiting for an acknowledgement, so the offered
/// rate stays fixed; receivers keep reading for `tail` more.
pub(crate) async fn fixed_rate_latency(
    pairs: Vec<Pair>,
    rate: u64,
    seconds: u64,
    tail: Duration,
) -> LatencySamples {
    let count = pairs.len();
    let origin = now();
    let warmup = origin + Duration::from_secs(1);
    let stop = warmup + Duration::from_secs(seconds);
    let delivered = Arc::new(AtomicU64::new(0));
    let anomalies = Arc::new(Anomalies::default());
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let per_sender = Duration::from_secs_f64(count as f64 / rate.max(1) as f64);
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let mut all_senders = Vec::new();
    for (index, pair) in pairs.into_iter().enumerate() {
        receivers.push(spawn_receiver(
            pair.receiver,
            Counting {
                origin,
                warmup,
                until: stop,
                stop: stop + tail,
                delivered: delivered.clone(),
                credits: None,
                anomalies: anomalies.clone(),
            },
        ));
        let sender = pair.sender;
        all_senders.push(sender.clone());
        let acknowledged = acknowledged.clone();
        let anomalies = anomalies.clone();
        senders.push(tokio::spawn(async move {
            // Senders start spread over one period, so the offered load is
            // even rather than every sender's send landing at once.
            let phase = per_sender.mul_f64(index as f64 / count.max(1) as f64);
            tokio::time::sleep(phase).await;
            let mut tick = tokio::time::interval(per_sender);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            while now() < stop {
                tick.tick().await;
                let sent_at = now().saturating_sub(origin).as_nanos();
                let sender = sender.clone();
                let acknowledged = acknowledged.clone();
                let anomalies = anomalies.clone();
                n += 1;
                let id = format!("l{n}");
                tokio::spawn(async move {
                    let sent = sender.send(&id, &format!("t={sent_at}")).await;
                    if sent.is_err() {
                        anomalies.failed_sends.fetch_add(1, Ordering::Relaxed);
                    }
                    let took = now().saturating_sub(origin).as_nanos() as u64;
                    if matches!(sent, Ok(true))
                        && sent_at >= warmup.saturating_sub(origin).as_nanos()
                        && let Ok(mut acknowledged) = acknowledged.lock()
                    {
                        acknowledged.push(took.saturating_sub(sent_at as u64));
                    }
                });
            }
        }));
    }
    join_all(senders).await;
    let timed: Vec<(u64, u64)> = join_all(receivers)
        .await
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    let mut latencies: Vec<u64> = timed.iter().map(|&(_, latency)| latency).collect();
    latencies.sort_unstable();
    let tail = tail_in_time(&timed, percentile(&latencies, 0.99));
    let mut acknowledged = acknowledged.lock().map(|a| a.clone()).unwrap_or_default();
    acknowledged.sort_unstable();
    anomalies.count_bounces(&all_senders);
    LatencySamples {
        delivered_latencies: latencies,
        tail,
        acknowledged_latencies: acknowledged,
        delivered: delivered.load(Ordering::Relaxed),
        anomalies: anomalies.describe(),
    }
}

/// Sends as fast as each pair's window allows from `origin` until
/// `counting.until`: `window` messages per pair sent and not yet delivered,
/// over as many lanes. The window counts deliveries, not acknowledgements,
/// so it means the same for a protocol that acknowledges sends and one that
/// does not.
pub(crate) async fn saturate(pairs: Vec<Pair>, window: usize, counting: &Counting) {
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let mut all_senders = Vec::new();
    let until = counting.until;
    for pair in pairs {
        let credits = Arc::new(Semaphore::new(window));
        all_senders.push(pair.sender.clone());
        receivers.push(spawn_receiver(
            pair.receiver,
            Counting {
                credits: Some(credits.clone()),
                delivered: counting.delivered.clone(),
                anomalies: counting.anomalies.clone(),
                ..*counting
            },
        ));
        for lane in 0..window {
            let (sender, credits) = (pair.sender.clone(), credits.clone());
            let anomalies = counting.anomalies.clone();
            senders.push(tokio::spawn(async move {
                let mut n = 0u64;
                while let Ok(Ok(permit)) =
                    tokio::time::timeout(until.saturating_sub(now()), credits.acquire()).await
                {
                    permit.forget();
                    let id = format!("t{lane}-{n}");
                    n += 1;
                    if now() >= until {
                        break;
                    }
                    if sender.send(&id, "throughput").await.is_err() {
                        anomalies.failed_sends.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }));
        }
    }
    join_all(senders).await;
    join_all(receivers).await;
    counting.anomalies.count_bounces(&all_senders);
}

/// Describes whether the samples at or above `threshold` (the p99) are
/// spread evenly or bunched into stalls: how many 100 ms windows (by send
/// time) hold them, and the worst windows. Bunched tails point at a pause
/// (an engine stall, a descheduled thread), spread ones at queueing.
pub(crate) fn tail_in_time(timed: &[(u64, u64)], threshold: u64) -> String {
    const WINDOW_NS: u64 = 100_000_000;
    let mut windows: std::collections::BTreeMap<u64, (usize, u64)> = Default::default();
    let mut all_windows = std::collections::BTreeSet::new();
    for &(sent, latency) in timed {
        all_windows.insert(sent / WINDOW_NS);
        if latency >= threshold {
            let window = windows.entry(sent / WINDOW_NS).or_default();
            window.0 += 1;
            window.1 = window.1.max(latency);
        }
    }
    let slow: usize = windows.values().map(|w| w.0).sum();
    let mut worst: Vec<(u64, (usize, u64))> = windows.iter().map(|(k, v)| (*k, *v)).collect();
    worst.sort_by_key(|(_, (count, _))| std::cmp::Reverse(*count));
    let top: Vec<String> = worst
        .iter()
        .take(4)
        .map(|(window, (count, max))| {
            format!(
                "t={:.1}s {count} (max {:.0} ms)",
                *window as f64 / 10.0,
                *max as f64 / 1e6
            )
        })
        .collect();
    let in_top = worst.iter().take(4).map(|(_, (c, _))| c).sum::<usize>();
    format!(
        "slowest 1% ({slow} samples >= {:.1} ms) in {} of {} 100-ms windows, {:.0}% in the worst 4: {}",
        threshold as f64 / 1e6,
        windows.len(),
        all_windows.len(),
        100.0 * in_top as f64 / slow.max(1) as f64,
        top.join(", ")
    )
}

/// What [`fixed_rate_latency`] measured.
pub(crate) struct LatencySamples {
    /// Sorted send→deliver latencies (ns), after warm-up.
    pub(crate) delivered_latencies: Vec<u64>,
    /// Where the slowest 1% sat in time (see [`tail_in_time`]).
    pub(crate) tail: String,
    /// Sorted send→`sent` latencies (ns): the sender's acknowledgement
    /// (empty where the protocol has none).
    pub(crate) acknowledged_latencies: Vec<u64>,
    /// Messages delivered in the measured seconds.
    pub(crate) delivered: u64,
    /// What went wrong, if anything ([`Anomalies::describe`]).
    pub(crate) anomalies: Option<String>,
}
