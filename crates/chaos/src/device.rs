//! One device of the workload, as an app runs it: a reconnecting SDK
//! client that reads its deliveries, sends at its share of the rate
//! (replies, media, read receipts), keeps an unacknowledged send in its
//! outbox and retries it under the same key until it is acknowledged,
//! goes offline when its schedule says, and obeys the runner's faults on
//! clients (a reconnect storm, a slow reader).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use meridian_sdk::frames::{ReceiptKind, WireMessage};
use meridian_sdk::{Client, Keepalive, Rest, SdkError};
use meridian_seams::Rng;
use sha2::Digest;

use crate::record::{Recorder, SendRecord};
use crate::scenario::REGIONS;
use crate::workload::Device;

/// Quicker than an app's defaults, so a dead or frozen gateway is left
/// within seconds.
const KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(2),
    timeout: Duration::from_secs(6),
    request_timeout: Duration::from_secs(5),
};

/// The longest a device waits for deliveries before looking at its
/// schedule again.
const TICK: Duration = Duration::from_millis(250);

/// The longest one try of a send (the SDK's reconnects and retries
/// included) may take before the device looks at its schedule again.
const SEND_PATIENCE: Duration = Duration::from_secs(20);

/// What the runner tells every device while the scenario runs.
#[derive(Debug)]
pub struct Control {
    /// Whether devices still start new sends (the load phase).
    pub sending: AtomicBool,
    /// Whether devices stop (the run is over).
    pub stop: AtomicBool,
    /// Per region: bumped to make every client of it reconnect at once.
    storms: [AtomicU64; REGIONS.len()],
    /// Per device: read one frame every this many ms (0: read freely).
    slow: Vec<AtomicU64>,
    /// Sends composed and not yet acknowledged or given up.
    pub outstanding: AtomicU64,
}

impl Control {
    /// Control of `devices` devices, sending.
    pub fn new(devices: usize) -> Self {
        Self {
            sending: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            storms: Default::default(),
            slow: (0..devices).map(|_| AtomicU64::new(0)).collect(),
            outstanding: AtomicU64::new(0),
        }
    }

    /// Makes every client of `region` reconnect at once.
    pub fn storm(&self, region: &str) {
        if let Some(i) = REGIONS.iter().position(|r| *r == region) {
            self.storms[i].fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How many storms `region` has had.
    pub fn storm_epoch(&self, region: &str) -> u64 {
        REGIONS
            .iter()
            .position(|r| *r == region)
            .map_or(0, |i| self.storms[i].load(Ordering::SeqCst))
    }

    /// How many devices there are.
    pub fn devices(&self) -> usize {
        self.slow.len()
    }

    /// Makes `device` read one frame every `every_ms` (0: freely again).
    pub fn set_slow(&self, device: usize, every_ms: u64) {
        if let Some(slot) = self.slow.get(device) {
            slot.store(every_ms, Ordering::SeqCst);
        }
    }
}

/// What one device ends with.
#[derive(Debug, Clone, Default)]
pub struct DeviceEnd {
    /// Each conversation's message ids in display order.
    pub timelines: std::collections::BTreeMap<String, Vec<String>>,
    /// Messages received twice on the wire (dropped by the SDK).
    pub wire_duplicates: u64,
    /// Connections opened, the first included.
    pub connects: u64,
    /// Deliveries that did not continue the previous one.
    pub chain_breaks: u64,
    /// Gaps the server reported.
    pub gaps: usize,
}

/// A device's part of the load.
#[derive(Debug, Clone)]
pub struct DevicePlan {
    /// Its index in the population.
    pub index: usize,
    /// The device.
    pub device: Device,
    /// The conversations its user is in.
    pub conversations: Vec<String>,
    /// Its sends per second.
    pub rate: f64,
    /// Share of its sends carrying media.
    pub media_share: f64,
    /// When it is offline: `[from, until)` seconds into the load.
    pub offline: Option<(f64, f64)>,
    /// Seed of its choices.
    pub seed: u64,
}

/// A send not yet acknowledged: retried under the same key.
struct Outbox {
    record: SendRecord,
    client_msg_id: String,
    payload: String,
    attachments: Vec<String>,
}

struct Runner {
    plan: DevicePlan,
    client: Client,
    rng: Rng,
    control: Arc<Control>,
    recorder: Arc<Recorder>,
    next_send: f64,
    outbox: Option<Outbox>,
    /// Connections the client had opened at the last look.
    connects: u64,
}

/// Runs one device until the runner stops it.
pub async fn run(plan: DevicePlan, control: Arc<Control>, recorder: Arc<Recorder>) -> DeviceEnd {
    let rests: Vec<Rest> = plan
        .device
        .gateways
        .iter()
        .cloned()
        .map(Rest::new)
        .collect();
    let client = Client::new(&rests[0], &plan.device.token, plan.seed)
        .with_keepalive(KEEPALIVE)
        .with_fallbacks(&rests[1..]);
    let rng = Rng::seeded(plan.seed ^ 0x5eed);
    let mut runner = Runner {
        next_send: recorder.now(),
        plan,
        client,
        rng,
        control,
        recorder,
        outbox: None,
        connects: 0,
    };
    runner.next_send += runner.interval();
    runner.run().await;
    runner.end()
}

impl Runner {
    /// Seconds to the next send: exponential, so sends arrive as a Poisson
    /// process at the device's rate.
    fn interval(&self) -> f64 {
        let uniform = (self.rng.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
        -uniform.ln() / self.plan.rate.max(1e-6)
    }

    async fn run(&mut self) {
        let region = self.plan.device.region.clone();
        let mut storm = self.control.storm_epoch(&region);
        while !self.control.stop.load(Ordering::SeqCst) {
            let now = self.recorder.now();
            if let Some((from, until)) = self.plan.offline
                && (from..until).contains(&now)
            {
                self.client.disconnect();
                self.pause(until - now).await;
                continue;
            }
            let epoch = self.control.storm_epoch(&region);
            if epoch != storm {
                storm = epoch;
                self.client.disconnect();
            }
            let slow = self
                .control
                .slow
                .get(self.plan.index)
                .map_or(0, |s| s.load(Ordering::SeqCst));
            if slow > 0 {
                // One frame, then nothing for `slow` ms: the socket backs up.
                self.read(Duration::from_millis(10)).await;
                self.pause(slow as f64 / 1000.0).await;
                continue;
            }
            let sending = self.control.sending.load(Ordering::SeqCst);
            let wait = if self.outbox.is_some() {
                Duration::from_millis(50)
            } else if sending {
                Duration::from_secs_f64((self.next_send - now).clamp(0.0, TICK.as_secs_f64()))
            } else {
                TICK
            };
            self.read(wait).await;
            if self.outbox.is_none() && sending && self.recorder.now() >= self.next_send {
                // Counted before the load's end is checked again: the runner
                // ends the load, then waits for what is outstanding, so a
                // send is either refused here or waited for there.
                self.control.outstanding.fetch_add(1, Ordering::SeqCst);
                if !self.control.sending.load(Ordering::SeqCst) {
                    self.control.outstanding.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                self.outbox = Some(self.compose().await);
                self.next_send = self.recorder.now() + self.interval();
            }
            if self.outbox.is_some() {
                self.try_send().await;
            }
            self.note_reconnects();
        }
    }

    /// A connection opened since the last look, after the first, is a
    /// symptom: the client lost one (inside a read or a send's retries).
    fn note_reconnects(&mut self) {
        let connects = self.client.connects;
        if connects > self.connects && self.connects > 0 {
            self.recorder.symptom(
                self.plan.index,
                format!("reconnected: to {}", self.client.rest().base()),
            );
        }
        self.connects = connects;
    }

    /// Sleeps `seconds`, waking early when the run stops.
    async fn pause(&self, seconds: f64) {
        let until = self.recorder.now() + seconds.max(0.0);
        while !self.control.stop.load(Ordering::SeqCst) && self.recorder.now() < until {
            tokio::time::sleep(self.recorder.until(until).min(TICK)).await;
        }
    }

    /// Reads deliveries for up to `wait`, recording each new message, and
    /// answers some with a read receipt or a download of their media.
    async fn read(&mut self, wait: Duration) {
        let was_connected = self.client.session().is_some();
        let polled = tokio::time::timeout(SEND_PATIENCE, self.client.poll(wait))
            .await
            .unwrap_or(Err(SdkError::Timeout));
        match polled {
            Ok(fresh) => {
                if was_connected && self.client.session().is_none() {
                    self.recorder
                        .symptom(self.plan.index, "connection lost".to_string());
                }
                for message in &fresh {
                    self.recorder
                        .delivered(self.plan.index, message.msg_id.clone());
                }
                self.answer(&fresh).await;
            }
            Err(error) => {
                self.recorder
                    .symptom(self.plan.index, format!("connect failed: {error}"));
                self.pause(0.2).await;
            }
        }
    }

    async fn answer(&mut self, fresh: &[WireMessage]) {
        let device_id = self.client.device_id().map(str::to_string);
        for message in fresh {
            if Some(&message.sender_device_id) == device_id.as_ref() {
                continue;
            }
            if self.rng.chance(0.3)
                && let Some(session) = self.client.session()
            {
                let _ = session
                    .receipt(
                        &message.conv_id,
                        std::slice::from_ref(&message.msg_id),
                        ReceiptKind::Read,
                    )
                    .await;
            }
            if let Some(attachment) = message.attachments.first()
                && self.rng.chance(0.25)
                && let Err(error) = self.download(message, &attachment.media_id).await
            {
                self.recorder
                    .symptom(self.plan.index, format!("download failed: {error}"));
            }
        }
    }

    async fn download(&self, message: &WireMessage, media_id: &str) -> Result<(), SdkError> {
        let rest = self.client.rest();
        let view = rest
            .media_download(&message.conv_id, &message.msg_id, media_id)
            .await?;
        let bytes = rest.presigned(&view.download, None).await?;
        if bytes.len() as u64 != view.attachment.size {
            return Err(SdkError::Protocol(format!(
                "downloaded {} bytes of {}",
                bytes.len(),
                view.attachment.size
            )));
        }
        Ok(())
    }

    /// A new send: a conversation of the user, sometimes a reply to what
    /// the device shows there, sometimes with media.
    async fn compose(&mut self) -> Outbox {
        let conversations = &self.plan.conversations;
        let conv = conversations[self.rng.below(conversations.len() as u64) as usize].clone();
        let reply_to = if self.rng.chance(0.2) {
            self.client
                .timeline(&conv)
                .last()
                .map(|message| message.msg_id.clone())
        } else {
            None
        };
        let mut attachments = Vec::new();
        let wants_media = self.rng.chance(self.plan.media_share);
        if wants_media {
            match self.upload().await {
                Ok(media_id) => attachments.push(media_id),
                Err(error) => self
                    .recorder
                    .symptom(self.plan.index, format!("upload failed: {error}")),
            }
        }
        let client_msg_id = self.client.new_client_msg_id();
        Outbox {
            record: SendRecord {
                started: self.recorder.now(),
                acknowledged: None,
                device: self.plan.index,
                conv,
                msg_id: None,
                reply_to,
                media: !attachments.is_empty(),
                tries: 0,
            },
            payload: format!("{} #{client_msg_id}", self.plan.device.name),
            client_msg_id,
            attachments,
        }
    }

    /// Uploads 1–32 KiB of bytes as the user's media.
    async fn upload(&self) -> Result<String, SdkError> {
        let mut bytes = vec![0u8; 1024 + self.rng.below(31 * 1024) as usize];
        self.rng.fill(&mut bytes);
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        let rest = self.client.rest();
        let slot = rest
            .create_upload(bytes.len() as u64, "application/octet-stream", &sha256)
            .await?;
        rest.presigned(&slot.upload, Some(bytes)).await?;
        let ready = rest.complete_upload(&slot.media.media_id).await?;
        Ok(ready.media_id)
    }

    /// Tries the outbox's send once (the SDK retries transient failures
    /// a few times inside); keeps it when it is still unacknowledged.
    async fn try_send(&mut self) {
        let Some(mut outbox) = self.outbox.take() else {
            return;
        };
        outbox.record.tries += 1;
        // Bounded, so a stop is never stuck behind the SDK's retries.
        let result = tokio::time::timeout(
            SEND_PATIENCE,
            self.client.send_with_attachments(
                &outbox.record.conv,
                &outbox.client_msg_id,
                &outbox.payload,
                outbox.record.reply_to.as_deref(),
                &outbox.attachments,
            ),
        )
        .await
        .unwrap_or(Err(SdkError::Timeout));
        match result {
            Ok(sent) => {
                outbox.record.acknowledged = Some(self.recorder.now());
                outbox.record.msg_id = Some(sent.msg_id);
                self.recorder.send(outbox.record);
                self.control.outstanding.fetch_sub(1, Ordering::SeqCst);
            }
            Err(error) if error.is_transient() => {
                self.recorder
                    .symptom(self.plan.index, format!("send refused: {error}"));
                self.outbox = Some(outbox);
                self.pause(0.2).await;
            }
            Err(error) => {
                self.recorder
                    .symptom(self.plan.index, format!("send rejected: {error}"));
                self.recorder.send(outbox.record);
                self.control.outstanding.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn end(self) -> DeviceEnd {
        if let Some(outbox) = self.outbox {
            self.recorder.send(outbox.record);
            self.control.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
        let timelines = self
            .plan
            .conversations
            .iter()
            .map(|conv| {
                let ids = self
                    .client
                    .timeline(conv)
                    .into_iter()
                    .map(|m| m.msg_id.clone())
                    .collect();
                (conv.clone(), ids)
            })
            .collect();
        DeviceEnd {
            timelines,
            wire_duplicates: self.client.wire_duplicates,
            connects: self.client.connects,
            chain_breaks: self.client.chain_breaks,
            gaps: self.client.gaps().len(),
        }
    }
}
