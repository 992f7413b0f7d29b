//! Idle connections: many authenticated devices that only hold their
//! WebSocket open (and come back when it drops), so a gateway under test
//! holds thousands of live connections as one in production does.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use meridian_sdk::{Client, Keepalive, Rest};

use crate::device::Control;
use crate::observe::Targets;
use crate::workload::SetupError;

/// Devices per account (the product's limit).
pub const DEVICES_PER_ACCOUNT: usize = 16;

/// Registrations in flight at once.
const PARALLEL: usize = 8;

/// Idle clients ping rarely: they are held, not exercised.
const KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(20),
    timeout: Duration::from_secs(60),
    request_timeout: Duration::from_secs(10),
};

/// Tokens of `count` devices registered at `gateway`, 16 to an account.
///
/// # Errors
/// The first registration that fails.
pub async fn register(gateway: &str, count: usize) -> Result<Vec<String>, SetupError> {
    let accounts = register_accounts(gateway, count, "idle-", PARALLEL).await?;
    Ok(accounts
        .into_iter()
        .flat_map(|(_, tokens)| tokens)
        .collect())
}

/// `count` devices registered at `gateway`, 16 to an account named
/// `{prefix}{n}`, `parallel` accounts at a time: each account's user id
/// and device tokens, in account order (only the last account may hold
/// fewer than 16).
///
/// # Errors
/// The first registration that fails.
pub async fn register_accounts(
    gateway: &str,
    count: usize,
    prefix: &str,
    parallel: usize,
) -> Result<Vec<(String, Vec<String>)>, SetupError> {
    let accounts = count.div_ceil(DEVICES_PER_ACCOUNT);
    futures::stream::iter(0..accounts)
        .map(|account| {
            let rest = Rest::new(gateway.to_string());
            let devices = DEVICES_PER_ACCOUNT.min(count - account * DEVICES_PER_ACCOUNT);
            let what = format!("registering account {prefix}{account}");
            async move {
                let failed = |source| SetupError {
                    what: what.clone(),
                    source,
                };
                let user = rest
                    .register(&format!("{prefix}{account}"))
                    .await
                    .map_err(failed)?;
                let mut tokens = vec![user.token.clone()];
                let with_token = rest.with_token(&user.token);
                for d in 1..devices {
                    let added = with_token
                        .add_device(&format!("{prefix}{d}"))
                        .await
                        .map_err(failed)?;
                    tokens.push(added.token);
                }
                Ok::<_, SetupError>((user.user_id, tokens))
            }
        })
        .buffered(parallel.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Holds one idle device's connection open through `gateways` (the first
/// preferred) until the run stops, keeping `targets.idle_connected` true;
/// it reconnects with the rest of `region`'s clients in a storm.
pub async fn hold(
    region: String,
    gateways: Vec<String>,
    token: String,
    seed: u64,
    targets: Arc<Targets>,
    control: Arc<Control>,
) {
    let rests: Vec<Rest> = gateways.into_iter().map(Rest::new).collect();
    let mut client = Client::new(&rests[0], &token, seed)
        .with_keepalive(KEEPALIVE)
        .with_fallbacks(&rests[1..]);
    let mut connected = false;
    let mut storm = control.storm_epoch(&region);
    while !control.stop.load(Ordering::SeqCst) {
        let epoch = control.storm_epoch(&region);
        if epoch != storm {
            storm = epoch;
            client.disconnect();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), client.poll(Duration::from_secs(1)))
            .await;
        let now = client.session().is_some();
        if now != connected {
            if now {
                targets.idle_connected.fetch_add(1, Ordering::SeqCst);
            } else {
                targets.idle_connected.fetch_sub(1, Ordering::SeqCst);
            }
            connected = now;
        }
    }
    if connected {
        targets.idle_connected.fetch_sub(1, Ordering::SeqCst);
    }
}
