//! The reconnecting, deduplicating, ordering client.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use meridian_seams::{Backoff, Rng};
use meridian_wire::frames::{Delivered, DeliveryItem, WireMessage};

use crate::{Discovery, Event, Rest, SdkError, SentInfo, Session};

/// One conversation in display order: `(hlc, origin_region, msg_id)`.
pub type Timeline = BTreeMap<(u64, String, String), WireMessage>;

/// A byte stream to a gateway.
pub trait GatewayStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> GatewayStream for T {}

/// Opens byte streams to the gateway: lets the simulation (or a proxy)
/// supply the transport instead of the operating system's TCP.
pub type Connector = std::sync::Arc<
    dyn Fn() -> futures::future::BoxFuture<'static, std::io::Result<Box<dyn GatewayStream>>>
        + Send
        + Sync,
>;

/// A device's client: reconnects, resumes, retries, dedupes, orders.
pub struct Client {
    rest: Rest,
    token: String,
    session: Option<Session>,
    rng: Rng,
    seen: HashSet<String>,
    timelines: BTreeMap<String, Timeline>,
    other: Vec<Delivered>,
    gaps: Vec<String>,
    max_hlc: u64,
    sends: u64,
    /// Raw duplicates received (same `msg_id` delivered twice), for reports.
    pub wire_duplicates: u64,
    /// The last cursor this client acknowledged.
    pub last_acked: Option<String>,
    /// Deliveries that did not continue where the previous one ended (a
    /// frame lost on the way), each answered by a reconnect.
    pub chain_breaks: u64,
    /// The cursor the next delivery must continue from.
    expected: Option<String>,
    connector: Option<Connector>,
    keepalive: crate::session::Keepalive,
    /// Every gateway this client may use, its own first: a connect that
    /// fails moves on to the next (what a client does with the several
    /// addresses GeoDNS answers).
    gateways: Vec<Rest>,
    /// Where to ask for gateways instead (GeoDNS): asked before each
    /// round of connects, afresh after a round that reached none.
    discovery: Option<Discovery>,
    /// The next connect asks discovery past its cache (told to go away).
    fresh_discovery: bool,
    /// Connections opened, the first included.
    pub connects: u64,
    /// Times the client was told to come back later (a refused upgrade, a
    /// session shed by its core, a `go_away`) and waited as told.
    pub sent_away: u64,
}

impl Client {
    /// A client for the device holding `token` at the gateway `rest` points to.
    /// `seed` drives backoff jitter and `client_msg_id`s.
    pub fn new(rest: &Rest, token: &str, seed: u64) -> Self {
        Self {
            rest: rest.with_token(token),
            token: token.into(),
            session: None,
            rng: Rng::seeded(seed),
            seen: HashSet::new(),
            timelines: BTreeMap::new(),
            other: Vec::new(),
            gaps: Vec::new(),
            max_hlc: 0,
            sends: 0,
            wire_duplicates: 0,
            last_acked: None,
            chain_breaks: 0,
            expected: None,
            connector: None,
            keepalive: crate::session::Keepalive::default(),
            gateways: vec![rest.with_token(token)],
            discovery: None,
            fresh_discovery: false,
            connects: 0,
            sent_away: 0,
        }
    }

    /// Finds gateways through `discovery` (GeoDNS) instead of the one
    /// given: each round of connects tries the answers in order, and a
    /// round that reached none asks again, past any cached answer.
    pub fn with_discovery(mut self, discovery: Discovery) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// Asks discovery for the gateways to try, when the client has it;
    /// keeps the ones it knew if DNS does not answer.
    async fn rediscover(&mut self, fresh: bool) -> Result<(), SdkError> {
        let Some(discovery) = &self.discovery else {
            return Ok(());
        };
        let found = discovery.gateways(fresh).await?;
        self.gateways = found
            .iter()
            .map(|rest| rest.with_token(&self.token))
            .collect();
        Ok(())
    }

    /// Adds gateways to fall back on, in order, when the first cannot be
    /// reached: each connect starts at the first again, so a client comes
    /// home once its own gateway is back.
    pub fn with_fallbacks(mut self, fallbacks: &[Rest]) -> Self {
        self.gateways
            .extend(fallbacks.iter().map(|rest| rest.with_token(&self.token)));
        self
    }

    /// Uses `keepalive` for every connection this client opens.
    pub fn with_keepalive(mut self, keepalive: crate::session::Keepalive) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Opens connections through `connector` instead of the OS's TCP.
    pub fn with_connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Opens and authenticates a session, giving up after the request
    /// timeout: a connect or handshake into a silently dead network would
    /// otherwise wait forever (found by simulation seeds 436, 726, 851, 937).
    async fn open_session(&self) -> Result<Session, SdkError> {
        let open = async {
            match &self.connector {
                None => {
                    Session::connect_with(
                        &self.rest.ws_url(),
                        &self.token,
                        self.rest.tls(),
                        self.keepalive,
                    )
                    .await
                }
                Some(connector) => {
                    let stream = connector()
                        .await
                        .map_err(|e| SdkError::WebSocket(e.to_string()))?;
                    Session::connect_over(stream, &self.rest.ws_url(), &self.token, self.keepalive)
                        .await
                }
            }
        };
        tokio::time::timeout(self.keepalive.request_timeout, open)
            .await
            .map_err(|_| SdkError::Timeout)?
    }

    /// The REST client with this device's token.
    pub fn rest(&self) -> &Rest {
        &self.rest
    }

    /// Connects, retrying with jittered exponential backoff (50 ms doubling to 2 s)
    /// for up to `attempts` tries. Non-transient refusals (a revoked token) end at once.
    ///
    /// # Errors
    /// The last error.
    pub async fn connect(&mut self, attempts: u32) -> Result<&mut Session, SdkError> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
            .with_jitter(self.rng.clone());
        let mut last = SdkError::Closed;
        let mut round = 0;
        let mut next = 0;
        for _ in 0..attempts.max(1) {
            // Round the gateways from the first: a refused connect to a
            // dead one costs little, and the client comes home when its
            // own serves again. With discovery, each round starts with
            // what DNS answers (afresh after a failed round).
            let fresh = round > 0 || std::mem::take(&mut self.fresh_discovery);
            if next == 0
                && let Err(error) = self.rediscover(fresh).await
            {
                tracing::debug!(%error, "gateway discovery failed; trying the gateways known");
            }
            let gateway = next % self.gateways.len().max(1);
            next = (gateway + 1) % self.gateways.len().max(1);
            if next == 0 {
                round += 1;
            }
            if let Some(rest) = self.gateways.get(gateway) {
                self.rest = rest.clone();
            }
            match self.open_session().await {
                Ok(session) => {
                    self.connects += 1;
                    self.expected = Some(session.cursor.clone());
                    self.session = Some(session);
                    return self.session.as_mut().ok_or(SdkError::Closed);
                }
                Err(SdkError::Busy {
                    retry_after,
                    status,
                }) if next == 0 || status == 0 => {
                    // Every gateway of the round is busy, or the home core
                    // (the same behind every gateway) shed the session:
                    // wait as told (each client its own wait), not just
                    // the backoff.
                    self.sent_away += 1;
                    tokio::time::sleep(retry_after).await;
                    last = SdkError::Busy {
                        status,
                        retry_after,
                    };
                    continue;
                }
                Err(error) if error.is_transient() => last = error,
                Err(error) => return Err(error),
            }
            backoff.wait().await;
        }
        Err(last)
    }

    /// Drops the connection (as a network failure would).
    pub fn disconnect(&mut self) {
        self.session = None;
    }

    /// This device's id, once a session has told it.
    pub fn device_id(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.device_id.as_str())
    }

    /// The current session, if connected.
    pub fn session(&mut self) -> Option<&mut Session> {
        self.session.as_mut()
    }

    /// A fresh idempotency key.
    pub fn new_client_msg_id(&mut self) -> String {
        self.sends += 1;
        format!("{:016x}-{}", self.rng.next_u64(), self.sends)
    }

    /// Sends under `client_msg_id`, reconnecting and retrying the same key on
    /// transient failures, so the message exists exactly once.
    ///
    /// # Errors
    /// A non-transient refusal, or the last error after `attempts`.
    pub async fn send(
        &mut self,
        conv_id: &str,
        client_msg_id: &str,
        payload: &str,
        reply_to: Option<&str>,
    ) -> Result<SentInfo, SdkError> {
        self.send_with_attachments(conv_id, client_msg_id, payload, reply_to, &[])
            .await
    }

    /// As [`Self::send`], carrying media (ready uploads of this user).
    ///
    /// # Errors
    /// As [`Self::send`].
    pub async fn send_with_attachments(
        &mut self,
        conv_id: &str,
        client_msg_id: &str,
        payload: &str,
        reply_to: Option<&str>,
        attachments: &[String],
    ) -> Result<SentInfo, SdkError> {
        let mut last = SdkError::Closed;
        // Waits out `clock_skew`: this client's last-seen stamp came from a
        // region whose clock ran ahead and was since corrected; the refusal
        // ends when real time reaches the stamp (found by the chaos suite's
        // clock-skew scenario).
        let mut skew_wait = Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
            .with_jitter(self.rng.clone());
        for _ in 0..8 {
            if self.session.is_none() {
                self.connect(8).await?;
            }
            let max_hlc = self.max_hlc;
            let Some(session) = self.session.as_ref() else {
                continue;
            };
            match session
                .send_with_attachments(
                    conv_id,
                    client_msg_id,
                    payload,
                    reply_to,
                    max_hlc,
                    attachments,
                )
                .await
            {
                Ok(sent) => {
                    self.max_hlc = self.max_hlc.max(sent.hlc);
                    return Ok(sent);
                }
                Err(error) if error.code() == Some(meridian_wire::ErrorCode::ClockSkew) => {
                    last = error;
                    skew_wait.wait().await;
                }
                Err(error) if error.is_transient() => {
                    self.session = None;
                    last = error;
                }
                Err(error) => return Err(error),
            }
        }
        Err(last)
    }

    fn absorb(&mut self, items: Vec<DeliveryItem>) -> Vec<WireMessage> {
        let mut fresh = Vec::new();
        for item in items {
            match item.item {
                Delivered::Message { message } => {
                    if !self.seen.insert(message.msg_id.clone()) {
                        self.wire_duplicates += 1;
                        continue;
                    }
                    self.max_hlc = self.max_hlc.max(message.hlc);
                    let key = (
                        message.hlc,
                        message.origin_region.clone(),
                        message.msg_id.clone(),
                    );
                    self.timelines
                        .entry(message.conv_id.clone())
                        .or_default()
                        .insert(key, message.clone());
                    fresh.push(message);
                }
                other => self.other.push(other),
            }
        }
        fresh
    }

    /// Waits up to `wait` for deliveries, stores them (dropping duplicates),
    /// acknowledges them, and returns the new messages. Reconnects when the
    /// connection dropped.
    ///
    /// # Errors
    /// When reconnecting fails.
    pub async fn poll(&mut self, wait: Duration) -> Result<Vec<WireMessage>, SdkError> {
        if self.session.is_none() {
            self.connect(8).await?;
        }
        let Some(session) = self.session.as_mut() else {
            return Err(SdkError::Closed);
        };
        let event = match tokio::time::timeout(wait, session.next_event()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => {
                self.session = None;
                return Ok(Vec::new());
            }
            Ok(Some(event)) => event,
        };
        match event {
            Event::Deliver {
                after,
                through,
                items,
            } => {
                if self.expected.as_deref() != Some(after.as_str()) {
                    // A frame went missing on the way: acking past it would
                    // skip its entries for good. Reconnect and be served
                    // again from the stored cursor instead.
                    self.chain_breaks += 1;
                    self.session = None;
                    return Ok(Vec::new());
                }
                let fresh = self.absorb(items);
                if let Some(session) = self.session.as_ref() {
                    session.ack(&through).await?;
                    self.last_acked = Some(through.clone());
                }
                self.expected = Some(through);
                Ok(fresh)
            }
            Event::Gap(through) => {
                // Told again until acknowledged: recorded once.
                if !self.gaps.contains(&through) {
                    self.gaps.push(through.clone());
                }
                // Heard: acknowledged like a delivery, so the server stops
                // telling it (it tells a gap again until it is acknowledged).
                if let Some(session) = self.session.as_ref() {
                    session.ack(&through).await?;
                    self.last_acked = Some(through.clone());
                }
                self.expected = Some(through);
                Ok(Vec::new())
            }
            Event::Error { .. } => Ok(Vec::new()),
            Event::GoAway {
                reason,
                retry_after,
            } => {
                // Leave as asked, wait as told (each client its own wait,
                // so a region's clients do not all arrive at once), and
                // ask DNS afresh: a drained region is out of its answers
                // (a busy core is the same wherever the client connects).
                self.session = None;
                self.fresh_discovery |= reason != meridian_wire::frames::GoAwayReason::Busy;
                self.sent_away += 1;
                tokio::time::sleep(retry_after).await;
                Ok(Vec::new())
            }
        }
    }

    /// Polls until `done` says the timeline is complete or `deadline` passes.
    ///
    /// # Errors
    /// As [`Client::poll`].
    pub async fn poll_until(
        &mut self,
        deadline: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<bool, SdkError> {
        let work = async {
            while !done(self) {
                self.poll(Duration::from_millis(500)).await?;
            }
            Ok::<_, SdkError>(())
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(result) => result.map(|()| true),
            Err(_) => Ok(false),
        }
    }

    /// A conversation's messages in display order.
    pub fn timeline(&self, conv_id: &str) -> Vec<&WireMessage> {
        self.timelines
            .get(conv_id)
            .map(|t| t.values().collect())
            .unwrap_or_default()
    }

    /// Number of distinct messages received.
    pub fn received(&self) -> usize {
        self.seen.len()
    }

    /// Non-message deliveries (receipts, conversation changes), in arrival order.
    pub fn other_deliveries(&self) -> &[Delivered] {
        &self.other
    }

    /// Gaps reported by the server.
    pub fn gaps(&self) -> &[String] {
        &self.gaps
    }
}
