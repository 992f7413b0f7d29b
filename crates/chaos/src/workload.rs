//! The scenario's users, through the SDK as an app would use it: users
//! homed in every region, several devices each, a direct conversation per
//! pair of neighbours and groups drawn from every region. [`Population`]
//! registers them before the load; [`crate::device`] runs each device.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_sdk::{Rest, SdkError};

use crate::scenario::{REGIONS, Workload};

/// How long a conversation may take to reach every member's region
/// before the load starts.
const MEMBERSHIP_PATIENCE: Duration = Duration::from_secs(60);

/// What went wrong registering the population.
#[derive(Debug, thiserror::Error)]
#[error("setting up the workload: {what}: {source}")]
pub struct SetupError {
    /// What was being done.
    pub what: String,
    /// Why it failed.
    pub source: SdkError,
}

fn failed(what: impl Into<String>) -> impl FnOnce(SdkError) -> SetupError {
    let what = what.into();
    move |source| SetupError { what, source }
}

/// One user.
#[derive(Debug, Clone)]
pub struct User {
    /// The server's id.
    pub user_id: String,
    /// Its home region.
    pub region: String,
    /// Its devices (indexes into [`Population::devices`]).
    pub devices: Vec<usize>,
}

/// One device: its own session, cursor and token.
#[derive(Debug, Clone)]
pub struct Device {
    /// `us-east/u2/d1`: region, user, device.
    pub name: String,
    /// Its user (index into [`Population::users`]).
    pub user: usize,
    /// Its user's home region.
    pub region: String,
    /// Its bearer token.
    pub token: String,
    /// The gateways it uses, in order: one of its region's first, the
    /// rest of its region's, then the other regions'.
    pub gateways: Vec<String>,
}

/// One conversation.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// The server's id.
    pub conv_id: String,
    /// A group (else a direct conversation).
    pub group: bool,
    /// Its members (indexes into [`Population::users`]).
    pub users: Vec<usize>,
}

/// Everyone the workload runs.
#[derive(Debug, Clone, Default)]
pub struct Population {
    /// Every user.
    pub users: Vec<User>,
    /// Every device.
    pub devices: Vec<Device>,
    /// Every conversation.
    pub conversations: Vec<Conversation>,
}

/// The gateway URLs of each region, as the cluster serves them.
pub type Gateways = BTreeMap<String, Vec<String>>;

/// The order `device`'s client tries gateways in: its own region's,
/// starting at `first`, then the other regions'.
fn gateway_order(gateways: &Gateways, region: &str, first: usize) -> Vec<String> {
    let own = gateways.get(region).cloned().unwrap_or_default();
    let mut order: Vec<String> = (0..own.len())
        .map(|i| own[(first + i) % own.len()].clone())
        .collect();
    for other in REGIONS.iter().filter(|name| **name != region) {
        order.extend(gateways.get(*other).cloned().unwrap_or_default());
    }
    order
}

impl Population {
    /// Registers every user and device at their region's gateways, opens
    /// the conversations, and waits until every member's region knows
    /// each of them.
    ///
    /// # Errors
    /// The first request that fails.
    pub async fn register(gateways: &Gateways, workload: &Workload) -> Result<Self, SetupError> {
        let mut population = Self::default();
        for region in REGIONS {
            let urls = gateways.get(region).cloned().unwrap_or_default();
            for u in 0..workload.users_per_region {
                let rest = Rest::new(urls[u % urls.len().max(1)].clone());
                let name = format!("{region}/u{u}");
                let registered = rest
                    .register(&name)
                    .await
                    .map_err(failed(format!("registering {name}")))?;
                let user = population.users.len();
                let mut tokens = vec![registered.token.clone()];
                let with_token = rest.with_token(&registered.token);
                for d in 1..workload.devices_per_user {
                    let added = with_token
                        .add_device(&format!("d{d}"))
                        .await
                        .map_err(failed(format!("adding device {d} of {name}")))?;
                    tokens.push(added.token);
                }
                let mut devices = Vec::new();
                for (d, token) in tokens.into_iter().enumerate() {
                    let index = population.devices.len();
                    devices.push(index);
                    population.devices.push(Device {
                        name: format!("{name}/d{d}"),
                        user,
                        region: region.to_string(),
                        token,
                        gateways: gateway_order(gateways, region, index),
                    });
                }
                population.users.push(User {
                    user_id: registered.user_id,
                    region: region.to_string(),
                    devices,
                });
            }
        }
        population.open_conversations(workload).await?;
        population.await_membership().await?;
        Ok(population)
    }

    /// The REST client of `user`'s first device at its first gateway.
    fn rest_of(&self, user: usize) -> Rest {
        let device = &self.devices[self.users[user].devices[0]];
        Rest::new(device.gateways[0].clone()).with_token(&device.token)
    }

    /// Users in the order regions take turns: `r0u0, r1u0, r2u0, r0u1, …`,
    /// so any run of them spans every region.
    fn interleaved(&self, per_region: usize) -> Vec<usize> {
        (0..per_region)
            .flat_map(|u| (0..REGIONS.len()).map(move |r| r * per_region + u))
            .collect()
    }

    async fn open_conversations(&mut self, workload: &Workload) -> Result<(), SetupError> {
        let order = self.interleaved(workload.users_per_region);
        let count = order.len();
        // A direct conversation per pair of neighbours: across regions.
        let pairs = if count > 2 { count } else { count - 1 };
        for i in 0..pairs {
            let (a, b) = (order[i], order[(i + 1) % count]);
            let view = self
                .rest_of(a)
                .direct(&self.users[b].user_id)
                .await
                .map_err(failed(format!("opening the direct conversation {a}-{b}")))?;
            self.conversations.push(Conversation {
                conv_id: view.conv_id,
                group: false,
                users: vec![a, b],
            });
        }
        for g in 0..workload.groups {
            let members: Vec<usize> = (0..workload.group_members)
                .map(|m| order[(g * 3 + m) % count])
                .collect();
            let others: Vec<String> = members[1..]
                .iter()
                .map(|&u| self.users[u].user_id.clone())
                .collect();
            let view = self
                .rest_of(members[0])
                .create_group(&format!("group {g}"), &others)
                .await
                .map_err(failed(format!("creating group {g}")))?;
            self.conversations.push(Conversation {
                conv_id: view.conv_id,
                group: true,
                users: members,
            });
        }
        Ok(())
    }

    /// Waits until each member sees each of its conversations through its
    /// own region, so no first send is refused as from a stranger.
    async fn await_membership(&self) -> Result<(), SetupError> {
        let clock = meridian_seams::SystemClock::shared();
        for conversation in &self.conversations {
            for &user in &conversation.users {
                let rest = self.rest_of(user);
                let deadline = clock.monotonic() + MEMBERSHIP_PATIENCE;
                loop {
                    match rest.conversation(&conversation.conv_id).await {
                        Ok(_) => break,
                        Err(error) if clock.monotonic() >= deadline => {
                            return Err(SetupError {
                                what: format!(
                                    "user {user} never saw conversation {}",
                                    conversation.conv_id
                                ),
                                source: error,
                            });
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        }
        Ok(())
    }

    /// The conversations `user` is in.
    pub fn conversations_of(&self, user: usize) -> Vec<String> {
        self.conversations
            .iter()
            .filter(|c| c.users.contains(&user))
            .map(|c| c.conv_id.clone())
            .collect()
    }

    /// Each conversation's member devices, by name.
    pub fn member_devices(&self) -> BTreeMap<String, std::collections::BTreeSet<String>> {
        self.conversations
            .iter()
            .map(|c| {
                let devices = c
                    .users
                    .iter()
                    .flat_map(|&u| self.users[u].devices.iter())
                    .map(|&d| self.devices[d].name.clone())
                    .collect();
                (c.conv_id.clone(), devices)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_tries_its_own_region_first_then_the_others() {
        let gateways: Gateways = REGIONS
            .iter()
            .map(|r| (r.to_string(), vec![format!("{r}-0"), format!("{r}-1")]))
            .collect();
        assert_eq!(
            gateway_order(&gateways, "eu-west", 1),
            [
                "eu-west-1",
                "eu-west-0",
                "us-east-0",
                "us-east-1",
                "ap-southeast-0",
                "ap-southeast-1"
            ]
        );
    }

    #[test]
    fn interleaved_users_span_every_region() {
        let population = Population::default();
        assert_eq!(population.interleaved(2), [0, 2, 4, 1, 3, 5]);
    }
}
