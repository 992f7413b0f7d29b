//! The contract, checked on what the clients observed: no acknowledged
//! send lost, no duplicate shown, one order for every member, replies
//! after what they answer. Each failed check names its evidence: which
//! message, which device, which order.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// A send its sender saw acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    /// The conversation.
    pub conv: String,
    /// The server's id.
    pub msg_id: String,
    /// The message it answers, if any.
    pub reply_to: Option<String>,
}

/// What one device showed at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceView {
    /// Each conversation's messages in the order the device shows them
    /// (after the SDK's dedupe by id).
    pub timelines: BTreeMap<String, Vec<String>>,
    /// Messages the SDK dropped as repeats on the wire.
    pub wire_duplicates: u64,
}

/// Everything the checks read.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every acknowledged send.
    pub acknowledged: Vec<Acknowledged>,
    /// Each conversation's member devices: those that must show all of it.
    pub members: BTreeMap<String, BTreeSet<String>>,
    /// What each device showed, by device name.
    pub devices: BTreeMap<String, DeviceView>,
}

/// One invariant's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Which invariant.
    pub invariant: &'static str,
    /// Whether it held.
    pub held: bool,
    /// What was checked, in numbers.
    pub checked: String,
    /// Up to ten violations, each naming message, device and order, then
    /// a line with their number when there were more.
    pub evidence: Vec<String>,
}

/// Evidence kept per invariant; the count says how many there were.
const EVIDENCE: usize = 10;

/// A verdict on `violations` (held when there are none), keeping the
/// first ten as evidence.
pub fn verdict(invariant: &'static str, checked: String, violations: Vec<String>) -> Verdict {
    let held = violations.is_empty();
    let mut evidence: Vec<String> = violations.iter().take(EVIDENCE).cloned().collect();
    if violations.len() > EVIDENCE {
        evidence.push(format!("… {} in all", violations.len()));
    }
    Verdict {
        invariant,
        held,
        checked,
        evidence,
    }
}

/// Every invariant, in a fixed order.
pub fn check(observed: &Observed) -> Vec<Verdict> {
    vec![
        no_acknowledged_send_lost(observed),
        no_duplicate_shown(observed),
        one_order_for_every_member(observed),
        replies_follow_what_they_answer(observed),
    ]
}

fn timeline<'a>(observed: &'a Observed, device: &str, conv: &str) -> &'a [String] {
    observed
        .devices
        .get(device)
        .and_then(|view| view.timelines.get(conv))
        .map_or(&[], Vec::as_slice)
}

/// Every acknowledged send is shown by every member device.
fn no_acknowledged_send_lost(observed: &Observed) -> Verdict {
    let mut violations = Vec::new();
    let mut copies = 0;
    let shown: BTreeMap<(&str, &str), BTreeSet<&str>> = observed
        .devices
        .iter()
        .flat_map(|(device, view)| {
            view.timelines
                .iter()
                .map(move |(conv, ids)| ((device.as_str(), conv.as_str()), ids))
        })
        .map(|(key, ids)| (key, ids.iter().map(String::as_str).collect()))
        .collect();
    for sent in &observed.acknowledged {
        let Some(members) = observed.members.get(&sent.conv) else {
            violations.push(format!(
                "{} in {}: a conversation with no members",
                sent.msg_id, sent.conv
            ));
            continue;
        };
        for device in members {
            copies += 1;
            let has = shown
                .get(&(device.as_str(), sent.conv.as_str()))
                .is_some_and(|ids| ids.contains(sent.msg_id.as_str()));
            if !has {
                violations.push(format!(
                    "{} (acknowledged, in {}) never reached {device}",
                    sent.msg_id, sent.conv
                ));
            }
        }
    }
    verdict(
        "no acknowledged send lost",
        format!(
            "{} acknowledged sends, {copies} member copies",
            observed.acknowledged.len()
        ),
        violations,
    )
}

/// No device shows a message twice (raw repeats on the wire, which the SDK
/// drops, are counted apart).
fn no_duplicate_shown(observed: &Observed) -> Verdict {
    let mut violations = Vec::new();
    let mut wire = 0;
    for (device, view) in &observed.devices {
        wire += view.wire_duplicates;
        for (conv, ids) in &view.timelines {
            let mut seen = BTreeSet::new();
            for id in ids {
                if !seen.insert(id) {
                    violations.push(format!("{device} shows {id} twice in {conv}"));
                }
            }
        }
    }
    verdict(
        "no duplicate shown",
        format!(
            "{} devices; {wire} raw wire duplicates dropped by the SDK",
            observed.devices.len()
        ),
        violations,
    )
}

/// Every member device shows a conversation's messages in one order: the
/// order of the messages two devices both show is the same.
fn one_order_for_every_member(observed: &Observed) -> Verdict {
    let mut violations = Vec::new();
    let mut compared = 0;
    for (conv, members) in &observed.members {
        let mut members = members.iter();
        let Some(reference_device) = members.next() else {
            continue;
        };
        let reference = timeline(observed, reference_device, conv);
        for device in members {
            compared += 1;
            let other = timeline(observed, device, conv);
            let common: BTreeSet<&String> = reference.iter().collect::<BTreeSet<_>>();
            let theirs: Vec<&String> = other.iter().filter(|id| common.contains(id)).collect();
            let in_both: BTreeSet<&String> = theirs.iter().copied().collect();
            let ours: Vec<&String> = reference.iter().filter(|id| in_both.contains(id)).collect();
            if let Some(at) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
                violations.push(format!(
                    "{conv}: {reference_device} shows {} at position {at}, {device} shows {}",
                    ours[at], theirs[at]
                ));
            }
        }
    }
    verdict(
        "one order for every member",
        format!("{compared} device pairs compared"),
        violations,
    )
}

/// A reply is shown after the message it answers, on every device that
/// shows both.
fn replies_follow_what_they_answer(observed: &Observed) -> Verdict {
    let mut violations = Vec::new();
    let replies: Vec<&Acknowledged> = observed
        .acknowledged
        .iter()
        .filter(|sent| sent.reply_to.is_some())
        .collect();
    for (device, view) in &observed.devices {
        for reply in &replies {
            let Some(ids) = view.timelines.get(&reply.conv) else {
                continue;
            };
            let position = |id: &str| ids.iter().position(|shown| shown == id);
            let parent = reply.reply_to.as_deref().unwrap_or_default();
            if let (Some(child), Some(parent_at)) = (position(&reply.msg_id), position(parent))
                && child < parent_at
            {
                violations.push(format!(
                    "{device} shows reply {} (position {child}) before {parent} (position {parent_at}) in {}",
                    reply.msg_id, reply.conv
                ));
            }
        }
    }
    verdict(
        "replies follow what they answer",
        format!("{} replies", replies.len()),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(id: &str, reply_to: Option<&str>) -> Acknowledged {
        Acknowledged {
            conv: "c".into(),
            msg_id: id.into(),
            reply_to: reply_to.map(Into::into),
        }
    }

    fn view(ids: &[&str]) -> DeviceView {
        DeviceView {
            timelines: BTreeMap::from([(
                "c".to_string(),
                ids.iter().map(|id| id.to_string()).collect(),
            )]),
            wire_duplicates: 0,
        }
    }

    fn observed(devices: &[(&str, &[&str])]) -> Observed {
        Observed {
            acknowledged: vec![sent("m1", None), sent("m2", Some("m1")), sent("m3", None)],
            members: BTreeMap::from([(
                "c".to_string(),
                devices.iter().map(|(name, _)| name.to_string()).collect(),
            )]),
            devices: devices
                .iter()
                .map(|(name, ids)| (name.to_string(), view(ids)))
                .collect(),
        }
    }

    fn failed(observed: &Observed) -> Vec<&'static str> {
        check(observed)
            .into_iter()
            .filter(|v| !v.held)
            .map(|v| v.invariant)
            .collect()
    }

    #[test]
    fn a_converged_run_holds_every_invariant() {
        let run = observed(&[("a", &["m1", "m2", "m3"]), ("b", &["m1", "m2", "m3"])]);
        assert!(failed(&run).is_empty(), "{:?}", check(&run));
    }

    #[test]
    fn each_violation_fails_its_invariant_with_the_evidence() {
        let lost = observed(&[("a", &["m1", "m2", "m3"]), ("b", &["m1", "m2"])]);
        assert_eq!(failed(&lost), ["no acknowledged send lost"]);
        let evidence = &check(&lost)[0].evidence;
        assert_eq!(evidence, &["m3 (acknowledged, in c) never reached b"]);

        let twice = observed(&[("a", &["m1", "m2", "m3", "m3"]), ("b", &["m1", "m2", "m3"])]);
        assert_eq!(failed(&twice), ["no duplicate shown"]);

        let reordered = observed(&[("a", &["m1", "m2", "m3"]), ("b", &["m1", "m3", "m2"])]);
        assert_eq!(failed(&reordered), ["one order for every member"]);

        let orphan_first = observed(&[("a", &["m2", "m1", "m3"]), ("b", &["m2", "m1", "m3"])]);
        assert_eq!(failed(&orphan_first), ["replies follow what they answer"]);
    }
}
