//! What the clients did and saw during a run, with the time of each:
//! every send (started, acknowledged or refused), every delivery, every
//! symptom of a fault a client met (a refused send, a lost connection,
//! a failed upload), and the probes of bad input. The report is computed
//! from this after the run, never while it runs.

use std::sync::Mutex;
use std::time::Duration;

use meridian_seams::SharedClock;

/// One send a device made (each retry of the same key is the same send).
#[derive(Debug, Clone)]
pub struct SendRecord {
    /// Seconds into the load when the device first tried it.
    pub started: f64,
    /// Seconds into the load when it was acknowledged; `None` when it
    /// never was.
    pub acknowledged: Option<f64>,
    /// The sending device (its index in the population).
    pub device: usize,
    /// The conversation.
    pub conv: String,
    /// The server's id, once acknowledged.
    pub msg_id: Option<String>,
    /// The message it answers.
    pub reply_to: Option<String>,
    /// Whether it carried media.
    pub media: bool,
    /// Tries it took (1 when the first was acknowledged).
    pub tries: u32,
}

/// One message a device received for the first time.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    /// Seconds into the load.
    pub at: f64,
    /// The receiving device.
    pub device: usize,
    /// The message.
    pub msg_id: String,
}

/// A fault's effect as a client met it.
#[derive(Debug, Clone)]
pub struct Symptom {
    /// Seconds into the load.
    pub at: f64,
    /// The device that met it.
    pub device: usize,
    /// What happened (`send refused: unavailable`, `connection lost`, …).
    pub what: String,
}

/// The answer a probe of bad input got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// A typed error (an error frame with a code, an HTTP 4xx with a code).
    Typed,
    /// Something else: a 5xx, an untyped answer, a closed connection.
    Untyped,
    /// Nothing could be reached (a fault was on).
    Unreachable,
}

/// A probe of bad input.
#[derive(Debug, Clone)]
pub struct ProbeRecord {
    /// Seconds into the load.
    pub at: f64,
    /// What was sent where.
    pub what: String,
    /// What came back.
    pub answer: ProbeAnswer,
    /// The answer, as text, for the evidence.
    pub detail: String,
}

/// Everything recorded, in the order it happened.
#[derive(Debug, Default)]
pub struct Records {
    /// Every send.
    pub sends: Vec<SendRecord>,
    /// Every first delivery.
    pub deliveries: Vec<DeliveryRecord>,
    /// Every symptom.
    pub symptoms: Vec<Symptom>,
    /// Every probe.
    pub probes: Vec<ProbeRecord>,
}

/// The shared recorder: one clock for every device, one lock per event.
pub struct Recorder {
    clock: SharedClock,
    zero: Duration,
    records: Mutex<Records>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("now", &self.now())
            .finish()
    }
}

impl Recorder {
    /// A recorder on `clock` whose time zero is now (the load's start).
    pub fn start(clock: SharedClock) -> Self {
        Self {
            zero: clock.monotonic(),
            clock,
            records: Mutex::new(Records::default()),
        }
    }

    /// Seconds since the load started.
    pub fn now(&self) -> f64 {
        self.clock
            .monotonic()
            .saturating_sub(self.zero)
            .as_secs_f64()
    }

    /// How long until `seconds` into the load (zero once past).
    pub fn until(&self, seconds: f64) -> Duration {
        Duration::from_secs_f64((seconds - self.now()).max(0.0))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Records) -> T) -> T {
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut records)
    }

    /// Records a send's outcome.
    pub fn send(&self, record: SendRecord) {
        self.with(|r| r.sends.push(record));
    }

    /// Records the first delivery of `msg_id` to `device`, now.
    pub fn delivered(&self, device: usize, msg_id: String) {
        let at = self.now();
        self.with(|r| {
            r.deliveries.push(DeliveryRecord { at, device, msg_id });
        });
    }

    /// Records a symptom `device` met, now.
    pub fn symptom(&self, device: usize, what: impl Into<String>) {
        let at = self.now();
        let what = what.into();
        self.with(|r| r.symptoms.push(Symptom { at, device, what }));
    }

    /// Records a probe's answer, now.
    pub fn probe(&self, what: impl Into<String>, answer: ProbeAnswer, detail: impl Into<String>) {
        let at = self.now();
        let (what, detail) = (what.into(), detail.into());
        self.with(|r| {
            r.probes.push(ProbeRecord {
                at,
                what,
                answer,
                detail,
            });
        });
    }

    /// How many (device, message) deliveries have been recorded.
    pub fn delivery_count(&self) -> usize {
        self.with(|r| r.deliveries.len())
    }

    /// Runs `f` over the records so far.
    pub fn read<T>(&self, f: impl FnOnce(&Records) -> T) -> T {
        self.with(|r| f(r))
    }

    /// The records, once every device has stopped.
    pub fn take(&self) -> Records {
        self.with(std::mem::take)
    }
}
