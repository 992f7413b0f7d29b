//! One simulated device: its script of sends, receipts and offline spells,
//! through the real SDK, and what it records of what it observed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meridian_sdk::{Client, Connector, GatewayStream, Rest};
use meridian_seams::net::SharedNetwork;

use crate::hosts::{EPOCH_MS, GATEWAY_PORT, HostResult, SHORT_RETENTION, short_retention};
use crate::invariants::{Acked, Shared, SharedState, expired_for, lock};
use crate::workload::{HEALED_BY, Plan, SendPlan, host};

pub(crate) struct DeviceTask {
    pub(crate) index: usize,
    pub(crate) seed: u64,
    pub(crate) plan: Plan,
    pub(crate) shared: SharedState,
    pub(crate) network: SharedNetwork,
    pub(crate) sends_remaining: Arc<AtomicUsize>,
}

impl DeviceTask {
    /// The gateway this device goes through.
    fn gateway(&self) -> String {
        let region = self.plan.gateway_of[self.index];
        format!(
            "{}:{GATEWAY_PORT}",
            host("gateway", self.plan.sites(), region)
        )
    }

    fn connector(&self) -> Connector {
        let network = self.network.clone();
        let gateway = self.gateway();
        Arc::new(move || {
            let (network, gateway) = (network.clone(), gateway.clone());
            Box::pin(async move {
                let io = network.connect(gateway).await?;
                Ok(Box::new(io) as Box<dyn GatewayStream>)
            })
        })
    }

    /// Sends with a `last_seen_hlc` a minute ahead of the truth: the core
    /// must refuse it (typed `clock_skew`) and store nothing.
    async fn probe_future_stamp(&self, client: &mut Client, conv_id: &str, n: usize) -> HostResult {
        let name = &self.plan.devices[self.index].name;
        let now = EPOCH_MS + turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
        let far = meridian_core::stamp_at(now + 60_000);
        loop {
            if client.session().is_none() && client.connect(8).await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let Some(session) = client.session() else {
                continue;
            };
            match session
                .send(conv_id, &format!("{name}-probe-{n}"), "probe", None, far)
                .await
            {
                Ok(sent) => {
                    return Err(format!(
                        "{name}: a stamp 60 s ahead was accepted as {}",
                        sent.msg_id
                    )
                    .into());
                }
                Err(error) if error.code() == Some(meridian_sdk::ErrorCode::NotFound) => {
                    return Ok(());
                }
                Err(error) if error.code() == Some(meridian_sdk::ErrorCode::ClockSkew) => {
                    lock(&self.shared).refused_stamps += 1;
                    return Ok(());
                }
                Err(_) => {
                    client.disconnect();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Whether this device is the first device of `user`.
    fn first_device_of(&self, user: usize) -> bool {
        self.plan.devices.iter().position(|d| d.user == user) == Some(self.index)
    }

    /// Records what arrived since the last call.
    fn absorb(&self, client: &Client, conv_of: &BTreeMap<String, usize>) {
        let mut state = lock(&self.shared);
        let outcome = state.outcomes.entry(self.index).or_default();
        outcome.wire_duplicates = client.wire_duplicates;
        outcome.chain_breaks = client.chain_breaks;
        outcome.sent_away = client.sent_away;
        let now = turmoil::sim_elapsed().unwrap_or_default();
        outcome
            .gaps_at
            .resize(client.gaps().len().max(outcome.gaps_at.len()), now);
        for (conv_id, conv) in conv_of {
            for message in client.timeline(conv_id) {
                let seen = outcome.seen.entry(*conv).or_default();
                if !seen.contains_key(&message.msg_id) {
                    if !message.attachments.is_empty() {
                        outcome.attachments.insert(
                            message.msg_id.clone(),
                            message
                                .attachments
                                .iter()
                                .map(|a| (a.media_id.clone(), a.sha256.clone()))
                                .collect(),
                        );
                    }
                    seen.insert(
                        message.msg_id.clone(),
                        (message.hlc, message.origin_region.clone()),
                    );
                    outcome.arrivals.push((message.msg_id.clone(), message.hlc));
                }
            }
        }
    }

    fn complete(&self) -> bool {
        if self.sends_remaining.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let state = lock(&self.shared);
        if self.plan.membership.is_some() && state.membership_done.is_none() {
            return false;
        }
        let user = self.plan.devices[self.index].user;
        let seen = |conv: usize, msg_id: &String| {
            state
                .outcomes
                .get(&self.index)
                .and_then(|o| o.seen.get(&conv))
                .is_some_and(|s| s.contains_key(msg_id))
        };
        let retention = short_retention(self.seed).then_some(SHORT_RETENTION);
        let gaps_at = state
            .outcomes
            .get(&self.index)
            .map(|o| o.gaps_at.as_slice())
            .unwrap_or_default();
        state.acked.iter().all(|(msg_id, acked)| {
            !state.must_receive(&self.plan, user, acked)
                || seen(acked.conv, msg_id)
                || expired_for(acked, gaps_at, retention)
        })
    }

    pub(crate) async fn run(self) -> HostResult {
        let device = self.plan.devices[self.index].clone();
        let (token, conv_ids, media) = {
            let state = lock(&self.shared);
            (
                state.tokens[self.index].clone(),
                state.conv_ids.clone(),
                state.media.clone(),
            )
        };
        let conv_of: BTreeMap<String, usize> = conv_ids
            .iter()
            .enumerate()
            .filter(|(i, _)| Shared::tracks(&self.plan, device.user, *i))
            .map(|(i, id)| (id.clone(), i))
            .collect();
        let mut client = self.client(&token);
        // Names the device in the cores' logs (RUST_LOG=debug replays).
        tracing::debug!(device = %device.name, id = token.split('.').next().unwrap_or_default(), "simulated device");
        let started = turmoil::sim_elapsed().unwrap_or_default();
        let mut offline = device.offline.iter().peekable();
        for (n, send) in device.sends.iter().enumerate() {
            tokio::time::sleep(send.delay).await;
            if let Some((start, length)) = offline.peek()
                && turmoil::sim_elapsed()
                    .unwrap_or_default()
                    .saturating_sub(started)
                    >= *start
            {
                client.disconnect();
                tokio::time::sleep(*length).await;
                offline.next();
            }
            let conv_id = &conv_ids[send.conv];
            let reply_to = if send.reply {
                client.timeline(conv_id).last().map(|m| m.msg_id.clone())
            } else {
                None
            };
            if send.future_probe {
                self.probe_future_stamp(&mut client, conv_id, n).await?;
            }
            // The first send of the first user's first device carries the
            // setup's media.
            let attach: Vec<String> = match (&media, n) {
                (Some((media_id, _)), 0) if self.first_device_of(0) => vec![media_id.clone()],
                _ => Vec::new(),
            };
            if !self
                .send_message(&mut client, n, send, conv_id, reply_to, &attach)
                .await?
            {
                // Removed from the group meanwhile: on to the next send.
                continue;
            }
            // Drain what arrived meanwhile (errors just mean reconnect later).
            let _ = client.poll(Duration::from_millis(10)).await;
            self.absorb(&client, &conv_of);
            if send.receipt {
                self.send_receipt(&mut client, conv_id).await;
            }
        }
        self.sends_remaining.fetch_sub(1, Ordering::SeqCst);
        self.wait_until_complete(&mut client, &conv_of).await
    }

    /// The device's SDK client, through its gateway.
    fn client(&self, token: &str) -> Client {
        let rest = Rest::new(format!("http://{}", self.gateway()));
        // Short keepalives: simulated partitions drop data silently, and a
        // device must notice a dead connection quickly to converge.
        let keepalive = meridian_sdk::Keepalive {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(1500),
            request_timeout: Duration::from_secs(2),
        };
        Client::new(&rest, token, self.seed ^ (self.index as u64) << 32)
            .with_connector(self.connector())
            .with_keepalive(keepalive)
    }

    /// Sends message `n` of the script (twice under one `client_msg_id` for
    /// a client-side retry) and records what its sender was told: `false`
    /// when this user was removed from the group meanwhile.
    async fn send_message(
        &self,
        client: &mut Client,
        n: usize,
        send: &SendPlan,
        conv_id: &str,
        mut reply_to: Option<String>,
        attach: &[String],
    ) -> Result<bool, Box<dyn std::error::Error>> {
        let mut attach = attach.to_vec();
        let device = &self.plan.devices[self.index];
        let client_msg_id = format!("{}-{n}", device.name);
        let payload = format!("{} #{n}", device.name);
        let attempts = if send.duplicate { 2 } else { 1 };
        let started_send = turmoil::sim_elapsed().unwrap_or_default();
        let removed_here = self
            .plan
            .membership
            .as_ref()
            .is_some_and(|c| !c.join && c.user == device.user && c.conv == send.conv);
        for _ in 0..attempts {
            let sent = loop {
                match client
                    .send_with_attachments(
                        conv_id,
                        &client_msg_id,
                        &payload,
                        reply_to.as_deref(),
                        &attach,
                    )
                    .await
                {
                    Ok(sent) => break sent,
                    Err(error) if error.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    // This user was removed from the group meanwhile.
                    Err(error)
                        if removed_here
                            && error.code() == Some(meridian_sdk::ErrorCode::NotFound) =>
                    {
                        return Ok(false);
                    }
                    // The message replied to expired (short retention):
                    // what a client does is send it as a plain message.
                    Err(error)
                        if reply_to.is_some()
                            && short_retention(self.seed)
                            && error.code() == Some(meridian_sdk::ErrorCode::NotFound)
                            && error.to_string().contains("to reply to") =>
                    {
                        reply_to = None;
                    }
                    // Likewise the setup's upload, once past its retention.
                    Err(error)
                        if !attach.is_empty()
                            && short_retention(self.seed)
                            && error.code() == Some(meridian_sdk::ErrorCode::NotFound)
                            && error.to_string().contains("no media") =>
                    {
                        attach.clear();
                    }
                    Err(error) => {
                        return Err(format!("{}: send refused: {error}", device.name).into());
                    }
                }
            };
            let mut state = lock(&self.shared);
            if !attach.is_empty() {
                state.with_media.insert(sent.msg_id.clone());
            }
            let first = state.acked.insert(
                sent.msg_id.clone(),
                Acked {
                    conv: send.conv,
                    region: self.plan.home(device.user),
                    hlc: sent.hlc,
                    reply_to: reply_to.clone(),
                    started: started_send,
                    acked_at: turmoil::sim_elapsed().unwrap_or_default(),
                },
            );
            if let Some(first) = first {
                if first.hlc != sent.hlc {
                    return Err(format!(
                        "{}: a retry of {} returned a different stamp",
                        device.name, sent.msg_id
                    )
                    .into());
                }
                // The message dates from its first send.
                state.acked.insert(sent.msg_id.clone(), first);
            }
        }
        Ok(true)
    }

    /// Sends a read receipt for the newest message of another sender seen
    /// in `conv_id`.
    async fn send_receipt(&self, client: &mut Client, conv_id: &str) {
        // Receipts ride the same session under the same faults; a
        // refusal or a lost frame only loses the receipt itself.
        let newest = client
            .timeline(conv_id)
            .iter()
            .rev()
            .find(|m| m.sender_device_id != session_device(client))
            .map(|m| m.msg_id.clone());
        if let (Some(msg_id), Some(session)) = (newest, client.session()) {
            let _ = session
                .receipt(conv_id, &[msg_id], meridian_sdk::frames::ReceiptKind::Read)
                .await;
            lock(&self.shared).receipts_sent += 1;
        }
    }

    /// Reads until the device holds everything it must, after every fault
    /// has healed.
    async fn wait_until_complete(
        &self,
        client: &mut Client,
        conv_of: &BTreeMap<String, usize>,
    ) -> HostResult {
        loop {
            if client.poll(Duration::from_millis(250)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.absorb(client, conv_of);
            let now = turmoil::sim_elapsed().unwrap_or_default();
            if now >= HEALED_BY && self.complete() {
                lock(&self.shared)
                    .outcomes
                    .entry(self.index)
                    .or_default()
                    .done_at = Some(now);
                return Ok(());
            }
        }
    }
}

/// The device id of the client's current session (empty when disconnected).
fn session_device(client: &Client) -> String {
    client.device_id().unwrap_or_default().to_string()
}
