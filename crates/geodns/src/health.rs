//! The gateways' health: each gateway's `/readyz` checked at an interval,
//! a gateway taken out after `fall` failed checks in a row and put back
//! after `rise` successes in a row (one flapping check does not move
//! clients back and forth). A drained gateway answers `/readyz` 503, so a
//! drain reaches the answers through the same checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::routing::{Gateway, Routing};

/// How gateways are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Between two rounds of checks.
    pub interval: Duration,
    /// One check's limit: a gateway that does not answer by then failed.
    pub timeout: Duration,
    /// Successes in a row that bring an unhealthy gateway back.
    pub rise: u32,
    /// Failures in a row that take a healthy gateway out.
    pub fall: u32,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 3,
            fall: 1,
        }
    }
}

/// One gateway's check, as the checker sees it.
pub trait Probe: Send + Sync + 'static {
    /// Resolves `Ok` when `target`'s `/readyz` answered 200.
    fn check(&self, target: SocketAddr) -> BoxFuture<'static, Result<(), String>>;
}

/// One gateway's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct GatewayState {
    /// Never checked yet: unhealthy until the first answer.
    checked: bool,
    healthy: bool,
    /// Results in a row that disagree with `healthy`.
    streak: u32,
    flaps: u64,
}

/// A change of a gateway's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It answers again (or answered for the first time).
    Up,
    /// It stopped answering.
    Down,
}

impl GatewayState {
    /// Folds one check's result in.
    fn record(&mut self, ok: bool, settings: &HealthSettings) -> Option<Transition> {
        if !self.checked {
            // The first answer is believed: a server starting up should
            // not wait `rise` intervals to answer anything.
            self.checked = true;
            self.healthy = ok;
            self.streak = 0;
            return ok.then_some(Transition::Up);
        }
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { settings.rise } else { settings.fall };
        if self.streak < needed.max(1) {
            return None;
        }
        self.healthy = ok;
        self.streak = 0;
        self.flaps += 1;
        Some(if ok { Transition::Up } else { Transition::Down })
    }
}

/// Every gateway's health, shared by the checker (writes) and the DNS
/// server (reads).
#[derive(Debug)]
pub struct HealthBoard {
    settings: HealthSettings,
    /// Gateway address → its region's name.
    regions: BTreeMap<SocketAddr, String>,
    states: RwLock<BTreeMap<SocketAddr, GatewayState>>,
}

impl HealthBoard {
    /// A board for every gateway of `routing`, all unchecked.
    pub fn new(routing: &Routing, settings: HealthSettings) -> Self {
        let regions = routing
            .regions()
            .iter()
            .flat_map(|r| r.gateways.iter().map(|g| (g.addr, r.name.clone())))
            .collect();
        Self {
            settings,
            regions,
            states: RwLock::new(BTreeMap::new()),
        }
    }

    /// How gateways are checked.
    pub fn settings(&self) -> HealthSettings {
        self.settings
    }

    /// Whether DNS may answer with `gateway`: it passes its checks.
    pub fn is_healthy(&self, gateway: &Gateway) -> bool {
        self.states
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&gateway.addr)
            .is_some_and(|s| s.healthy)
    }

    /// Healthy gateways, of all.
    pub fn healthy_count(&self) -> (usize, usize) {
        let states = self
            .states
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let healthy = states.values().filter(|s| s.healthy).count();
        (healthy, self.regions.len())
    }

    /// Folds one check of `gateway` in; the change of health, if any.
    pub fn record(&self, gateway: &Gateway, ok: bool) -> Option<Transition> {
        let mut states = self
            .states
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = states.entry(gateway.addr).or_default();
        let transition = state.record(ok, &self.settings);
        let region = self.regions.get(&gateway.addr).cloned().unwrap_or_default();
        let address = gateway.addr.to_string();
        metrics::gauge!("meridian_geodns_gateway_up", "region" => region.clone(), "gateway" => address.clone())
            .set(if state.healthy { 1.0 } else { 0.0 });
        if transition.is_some() && state.flaps > 0 {
            metrics::counter!("meridian_geodns_gateway_flaps_total", "region" => region, "gateway" => address)
                .increment(1);
        }
        transition
    }
}

/// Checks every gateway of `routing` each interval, forever, folding the
/// results into `board`. Checks of one round run concurrently, each bounded
/// by the timeout, so one hung gateway delays nobody else's.
pub async fn run_checks(routing: Arc<Routing>, board: Arc<HealthBoard>, probe: Arc<dyn Probe>) {
    let settings = board.settings();
    let gateways: Vec<(String, Gateway)> = routing
        .regions()
        .iter()
        .flat_map(|r| r.gateways.iter().map(|g| (r.name.clone(), *g)))
        .collect();
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let round = gateways.iter().map(|(region, gateway)| {
            let check = probe.check(gateway.check);
            async move {
                let result = match tokio::time::timeout(settings.timeout, check).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer in {} ms", settings.timeout.as_millis())),
                };
                (region, gateway, result)
            }
        });
        // Each result is folded in as it comes: a gateway that hangs until
        // the timeout delays nobody else's.
        let mut round: futures::stream::FuturesUnordered<_> = round.collect();
        while let Some((region, gateway, result)) = futures::StreamExt::next(&mut round).await {
            let ok = result.is_ok();
            match board.record(gateway, ok) {
                Some(Transition::Up) => {
                    tracing::info!(%region, gateway = %gateway.addr, "gateway healthy: answered again");
                }
                Some(Transition::Down) => {
                    let reason = result.err().unwrap_or_default();
                    tracing::warn!(%region, gateway = %gateway.addr, %reason, "gateway unhealthy: left the answers");
                }
                None => {}
            }
        }
        for region in routing.regions() {
            let up = region.gateways.iter().any(|g| board.is_healthy(g));
            metrics::gauge!("meridian_geodns_region_up", "region" => region.name.clone())
                .set(if up { 1.0 } else { 0.0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: HealthSettings = HealthSettings {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        rise: 3,
        fall: 1,
    };

    #[test]
    fn the_first_answer_is_believed() {
        let mut up = GatewayState::default();
        assert_eq!(up.record(true, &SETTINGS), Some(Transition::Up));
        let mut down = GatewayState::default();
        assert_eq!(down.record(false, &SETTINGS), None);
        assert!(!down.healthy);
    }

    #[test]
    fn one_failure_takes_a_gateway_out_and_three_successes_bring_it_back() {
        let mut state = GatewayState::default();
        state.record(true, &SETTINGS);
        assert_eq!(state.record(false, &SETTINGS), Some(Transition::Down));
        assert_eq!(state.record(true, &SETTINGS), None);
        assert_eq!(state.record(true, &SETTINGS), None);
        assert!(!state.healthy, "two successes are not enough");
        assert_eq!(state.record(true, &SETTINGS), Some(Transition::Up));
        assert_eq!(state.flaps, 2);
    }

    #[test]
    fn a_failure_in_the_middle_of_a_recovery_starts_it_again() {
        let mut state = GatewayState::default();
        state.record(true, &SETTINGS);
        state.record(false, &SETTINGS);
        state.record(true, &SETTINGS);
        state.record(true, &SETTINGS);
        state.record(false, &SETTINGS);
        state.record(true, &SETTINGS);
        state.record(true, &SETTINGS);
        assert!(!state.healthy);
        assert_eq!(state.record(true, &SETTINGS), Some(Transition::Up));
    }

    #[test]
    fn a_higher_fall_forgives_a_single_failure() {
        let settings = HealthSettings {
            fall: 2,
            ..SETTINGS
        };
        let mut state = GatewayState::default();
        state.record(true, &settings);
        assert_eq!(state.record(false, &settings), None);
        assert_eq!(state.record(true, &settings), None);
        assert_eq!(state.record(false, &settings), None);
        assert_eq!(state.record(false, &settings), Some(Transition::Down));
    }
}
