//! What the devices observed, and the invariants of `docs/simulation.md`
//! checked over it once a seed has run.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_rpc::core as pb;

use crate::workload::{ConvPlan, DevicePlan, HEALED_BY, Plan};

/// What a passing seed measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Hash of everything every device observed, in order.
    pub trace_hash: u64,
    /// Messages acknowledged to their senders.
    pub messages: usize,
    /// Distinct deliveries to devices.
    pub deliveries: usize,
    /// Raw duplicates on the wire (dropped by the SDK's dedupe).
    pub wire_duplicates: u64,
    /// Delivery frames lost on the way (a broken `after`/`through` chain),
    /// each answered by the device reconnecting.
    pub chain_breaks: u64,
    /// Times devices were told to come back later (sessions shed by a
    /// core's admission, `go_away`) and waited as told.
    pub sent_away: u64,
    /// Faults injected.
    pub faults: usize,
    /// Whether a member was added or removed mid-run.
    pub membership_change: bool,
    /// Read receipts sent.
    pub receipts: usize,
    /// Stamps beyond the maximum clock offset that were refused (as they must be).
    pub refused_stamps: usize,
    /// Simulated time from the last heal to the last device complete.
    pub convergence: Duration,
    /// Simulated time of the whole run.
    pub sim_time: Duration,
    /// Sites the seed ran (regions, or shards of a region).
    pub regions: usize,
    /// Whether us-east ran in two shards (sites us-east_0 and us-east_1).
    pub sharded: bool,
    /// Delivered copies of messages carrying media, each checked to carry
    /// exactly the attached media.
    pub media_copies: usize,
    /// `gap` notices devices were given (short-retention seeds only).
    pub gaps: usize,
    /// Copies of messages the retention sweep took before their device
    /// read them, each covered by a `gap` that device was told.
    pub expired: usize,
}

/// How a seed ended.
pub type SeedOutcome = Result<SeedReport, String>;

/// A message acknowledged to its sender.
#[derive(Debug, Clone)]
pub(crate) struct Acked {
    pub(crate) conv: usize,
    /// The sender's home region (whose core accepted it).
    pub(crate) region: usize,
    pub(crate) hlc: u64,
    pub(crate) reply_to: Option<String>,
    /// When the sender started sending it (before its first attempt).
    pub(crate) started: Duration,
    /// When the sender got `sent`.
    pub(crate) acked_at: Duration,
}

#[derive(Default)]
pub(crate) struct DeviceOutcome {
    /// (msg_id, hlc) in arrival order (after dedupe).
    pub(crate) arrivals: Vec<(String, u64)>,
    /// conv index → msg_id → (hlc, origin region).
    pub(crate) seen: BTreeMap<usize, BTreeMap<String, (u64, String)>>,
    /// msg_id → (media id, sha256) of every attachment, as delivered.
    pub(crate) attachments: BTreeMap<String, Vec<(String, String)>>,
    pub(crate) wire_duplicates: u64,
    pub(crate) chain_breaks: u64,
    pub(crate) sent_away: u64,
    /// When each `gap` notice reached the device.
    pub(crate) gaps_at: Vec<Duration>,
    pub(crate) done_at: Option<Duration>,
}

#[derive(Default)]
pub(crate) struct Shared {
    /// Device tokens by device index, conversation ids by plan index.
    pub(crate) tokens: Vec<String>,
    pub(crate) conv_ids: Vec<String>,
    pub(crate) setup_done: bool,
    pub(crate) acked: BTreeMap<String, Acked>,
    pub(crate) outcomes: BTreeMap<usize, DeviceOutcome>,
    /// Sends whose `last_seen_hlc` was beyond the maximum offset, refused.
    pub(crate) refused_stamps: usize,
    /// Read receipts sent.
    pub(crate) receipts_sent: usize,
    /// Callers by user index (for the admin's membership change).
    pub(crate) callers: Vec<pb::Caller>,
    /// The ready media of setup: (media id, SHA-256 hex).
    pub(crate) media: Option<(String, String)>,
    /// Messages acknowledged with that media attached.
    pub(crate) with_media: BTreeSet<String>,
    /// When the membership change was first asked for, and acknowledged.
    pub(crate) membership_started: Option<Duration>,
    pub(crate) membership_done: Option<Duration>,
}

impl Shared {
    /// Whether `user`'s devices must end up with `message`: members receive
    /// every acknowledged send; a user added mid-run receives what was sent
    /// after the addition was acknowledged; a user removed mid-run receives
    /// what was acknowledged before the removal was asked for.
    ///
    /// With several regions a membership change takes effect in each region
    /// when that region applies it: a message accepted elsewhere in the
    /// meantime is concurrent with the change. So "an added member gets what
    /// follows the addition" and "a removed member gets nothing after the
    /// removal" are promised for messages accepted by the group's owner
    /// region, which made the change (docs/architecture.md, Convergence).
    pub(crate) fn must_receive(&self, plan: &Plan, user: usize, message: &Acked) -> bool {
        match &plan.membership {
            Some(change) if change.conv == message.conv && change.user == user => {
                if change.join {
                    message.region == Self::owner_region(plan, change.conv)
                        && self
                            .membership_done
                            .is_some_and(|done| message.started > done)
                } else {
                    self.membership_started
                        .is_none_or(|asked| message.acked_at < asked)
                }
            }
            _ => plan.conversations[message.conv].members().contains(&user),
        }
    }

    /// Whether `user`'s devices must never see `message`: a removed user sees
    /// nothing sent after the removal was acknowledged.
    fn must_not_receive(&self, plan: &Plan, user: usize, message: &Acked) -> bool {
        match &plan.membership {
            Some(change) if change.conv == message.conv && change.user == user && !change.join => {
                message.region == Self::owner_region(plan, change.conv)
                    && self
                        .membership_done
                        .is_some_and(|done| message.started > done)
            }
            _ => false,
        }
    }

    /// The region that owns a group: its creator's (the first member's) home.
    fn owner_region(plan: &Plan, conv: usize) -> usize {
        match &plan.conversations[conv] {
            ConvPlan::Group(members) => plan.home(members[0]),
            ConvPlan::Direct(a, _) => plan.home(*a),
        }
    }

    /// Whether `user`'s devices see `conv` (its membership may change).
    pub(crate) fn tracks(plan: &Plan, user: usize, conv: usize) -> bool {
        plan.conversations[conv].members().contains(&user)
            || plan
                .membership
                .as_ref()
                .is_some_and(|c| c.conv == conv && c.user == user)
    }
}

/// How far the region clocks' jumps (±450 ms) and the sweep's cautious
/// reading of them may move a sweep from when the simulation's time says.
const SWEEP_CLOCK_TOLERANCE: Duration = Duration::from_secs(1);

/// Whether the retention sweep may have taken `message` from a device that
/// was told `gap` at `gaps_at`: only an entry older than `retention` is
/// swept, so only a gap told after `message` was that old covers it.
/// Without retention (every other seed) nothing expires.
pub(crate) fn expired_for(
    message: &Acked,
    gaps_at: &[Duration],
    retention: Option<Duration>,
) -> bool {
    retention.is_some_and(|retention| {
        gaps_at
            .iter()
            .any(|told| *told + SWEEP_CLOCK_TOLERANCE >= message.started + retention)
    })
}

pub(crate) type SharedState = Arc<Mutex<Shared>>;

pub(crate) fn lock(shared: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// A message's place in display order: `(hlc, origin_region, msg_id)`.
type DisplayKey = (u64, String, String);

/// The invariants of docs/simulation.md.
pub(crate) fn check(
    seed: u64,
    plan: &Plan,
    state: &Shared,
    retention: Option<Duration>,
    faults: usize,
    sim_time: Duration,
) -> SeedOutcome {
    let fail = |what: String| format!("seed {seed}: {what}");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut deliveries = 0;
    let mut wire_duplicates = 0;
    let mut chain_breaks = 0;
    let mut sent_away = 0;
    let (mut gaps, mut expired) = (0, 0);
    let mut last_done = Duration::ZERO;
    let media_copies = check_media(plan, state).map_err(fail)?;
    // 1. Every acknowledged send reached every member device.
    for (index, device) in plan.devices.iter().enumerate() {
        let Some(outcome) = state.outcomes.get(&index) else {
            if state
                .acked
                .values()
                .any(|a| state.must_receive(plan, device.user, a))
            {
                return Err(fail(format!("{} received nothing", device.name)));
            }
            continue;
        };
        expired += check_device(plan, state, device, outcome, retention).map_err(fail)?;
        gaps += outcome.gaps_at.len();
        deliveries += outcome.arrivals.len();
        wire_duplicates += outcome.wire_duplicates;
        chain_breaks += outcome.chain_breaks;
        sent_away += outcome.sent_away;
        last_done = last_done.max(outcome.done_at.unwrap_or_default());
        device.name.hash(&mut hasher);
        outcome.arrivals.hash(&mut hasher);
    }
    check_order(plan, state, retention.is_some()).map_err(fail)?;
    check_replies(state).map_err(fail)?;
    state.acked.len().hash(&mut hasher);
    Ok(SeedReport {
        seed,
        trace_hash: hasher.finish(),
        messages: state.acked.len(),
        deliveries,
        wire_duplicates,
        chain_breaks,
        sent_away,
        faults,
        refused_stamps: state.refused_stamps,
        media_copies,
        gaps,
        expired,
        membership_change: state.membership_done.is_some(),
        regions: plan.regions,
        sharded: plan.sharded,
        receipts: state.receipts_sent,
        convergence: last_done.saturating_sub(HEALED_BY),
        sim_time,
    })
}

/// Step 0 of [`check`]: every copy of a message carries its media. Answers
/// how many delivered copies carry media.
fn check_media(plan: &Plan, state: &Shared) -> Result<usize, String> {
    // 0. Media: a message carries exactly what its sender attached, in every
    //    member's copy in every region.
    let expected = state.media.clone().map(|m| vec![m]).unwrap_or_default();
    let mut media_copies = 0;
    for (index, device) in plan.devices.iter().enumerate() {
        let Some(outcome) = state.outcomes.get(&index) else {
            continue;
        };
        for seen in outcome.seen.values() {
            for msg_id in seen.keys() {
                let carried = outcome.attachments.get(msg_id).cloned().unwrap_or_default();
                let attached = state.with_media.contains(msg_id);
                media_copies += usize::from(attached);
                if (attached && carried != expected) || (!attached && !carried.is_empty()) {
                    return Err(format!(
                        "{} sees {msg_id} carrying {carried:?} (attached: {attached})",
                        device.name
                    ));
                }
            }
        }
    }
    Ok(media_copies)
}

/// Steps 1 to 3 of [`check`] for one device that observed something: what
/// it must have received, with the stamps the senders were given, each
/// once. Answers how many it lost to retention, each covered by a `gap`.
fn check_device(
    plan: &Plan,
    state: &Shared,
    device: &DevicePlan,
    outcome: &DeviceOutcome,
    retention: Option<Duration>,
) -> Result<usize, String> {
    let mut expired = 0;
    for (msg_id, acked) in &state.acked {
        let got = outcome.seen.get(&acked.conv).and_then(|s| s.get(msg_id));
        // 1b. A removed member never sees what was sent after its removal.
        if got.is_some() && state.must_not_receive(plan, device.user, acked) {
            return Err(format!("{} was removed but received {msg_id}", device.name));
        }
        if !state.must_receive(plan, device.user, acked) {
            if let Some((hlc, _)) = got
                && *hlc != acked.hlc
            {
                return Err(format!(
                    "{} sees {msg_id} at hlc {hlc}, sender got {}",
                    device.name, acked.hlc
                ));
            }
            continue;
        }
        match got {
            // 1c. Lost to retention only with a `gap` told after it expired.
            None if expired_for(acked, &outcome.gaps_at, retention) => expired += 1,
            None => {
                return Err(format!(
                    "acknowledged {msg_id} never reached {} (gaps told at {:?})",
                    device.name, outcome.gaps_at
                ));
            }
            // 3. Everyone sees the stamp the sender was given.
            Some((hlc, _)) if *hlc != acked.hlc => {
                return Err(format!(
                    "{} sees {msg_id} at hlc {hlc}, sender got {}",
                    device.name, acked.hlc
                ));
            }
            Some(_) => {}
        }
    }
    // 2. No duplicate shown: arrivals are distinct after dedupe.
    let distinct: BTreeSet<&String> = outcome.arrivals.iter().map(|(id, _)| id).collect();
    if distinct.len() != outcome.arrivals.len() {
        return Err(format!("{} shows a message twice", device.name));
    }
    Ok(expired)
}

/// Step 3 of [`check`]: the members of a conversation agree on its order
/// (with retention, on the order of the messages both hold: each may have
/// lost different ones).
fn check_order(plan: &Plan, state: &Shared, lossy: bool) -> Result<(), String> {
    // 3. Every member of a conversation sees one order: the same messages
    // with the same stamps sort identically by (hlc, region, id).
    for (conv_index, conv) in plan.conversations.iter().enumerate() {
        let mut views: Vec<(String, Vec<DisplayKey>)> = Vec::new();
        for (index, device) in plan.devices.iter().enumerate() {
            let changing = plan
                .membership
                .as_ref()
                .is_some_and(|c| c.conv == conv_index && c.user == device.user);
            if !conv.members().contains(&device.user) || changing {
                continue;
            }
            let Some(seen) = state
                .outcomes
                .get(&index)
                .and_then(|o| o.seen.get(&conv_index))
            else {
                continue;
            };
            let mut order: Vec<DisplayKey> = seen
                .iter()
                .map(|(id, (hlc, region))| (*hlc, region.clone(), id.clone()))
                .collect();
            order.sort();
            views.push((device.name.clone(), order));
        }
        if let Some((first_name, first)) = views.first() {
            for (name, view) in &views[1..] {
                let (view, first) = if lossy {
                    let common = |a: &[DisplayKey], b: &[DisplayKey]| -> Vec<DisplayKey> {
                        a.iter().filter(|k| b.contains(k)).cloned().collect()
                    };
                    (common(view, first), common(first, view))
                } else {
                    (view.clone(), first.clone())
                };
                if view != first {
                    return Err(format!(
                        "conversation {conv_index}: {name} and {first_name} disagree on the order"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Step 4 of [`check`]: replies follow their parents.
fn check_replies(state: &Shared) -> Result<(), String> {
    // 4. No reply precedes its parent.
    for (msg_id, acked) in &state.acked {
        if let Some(parent) = acked.reply_to.as_ref().and_then(|p| state.acked.get(p))
            && acked.hlc <= parent.hlc
        {
            return Err(format!(
                "reply {msg_id} (hlc {}) does not follow its parent (hlc {})",
                acked.hlc, parent.hlc
            ));
        }
    }
    Ok(())
}
