//! Per-device rate limits: an error frame on the socket, 429 over REST.

use meridian_gateway::GatewayConfig;
use meridian_sdk::{ErrorCode, SdkError};

use crate::support::{Harness, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_requests_over_the_limit_are_refused_and_nothing_is_lost() {
    let mut gateway = GatewayConfig::new("us-east");
    gateway.sends_per_second = 0.001;
    gateway.send_burst = 3.0;
    gateway.requests_per_second = 0.001;
    gateway.request_burst = 5.0;
    let mut h = Harness::start_with(Options {
        gateway: Some(gateway),
        ..Options::default()
    })
    .await;
    let (alice, bob, conv) = h.direct_pair().await;
    let mut client = h.client(&alice.token).await;
    let session = client.session().unwrap();
    for i in 0..3 {
        session
            .send(&conv, &format!("ok{i}"), "within the burst", None, 0)
            .await
            .unwrap();
    }
    let refused = session
        .send(&conv, "over", "over the limit", None, 0)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited));
    // The connection survives the refusal.
    let again = session
        .send(&conv, "over2", "still over", None, 0)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::RateLimited));

    // REST: bob's device has a burst of 5 requests (direct_pair used none of his).
    let as_bob = h.rest.with_token(&bob.token);
    let mut statuses = Vec::new();
    for _ in 0..7 {
        match as_bob.members(&conv).await {
            Ok(_) => statuses.push(200),
            Err(SdkError::Api {
                status,
                code: ErrorCode::RateLimited,
                ..
            }) => statuses.push(status),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429]);
    let history = h
        .rest
        .with_token(&alice.token)
        .history(&conv, None, 10)
        .await;
    // Alice's device spent one request on direct(); her history shows exactly the accepted sends.
    assert_eq!(history.unwrap().messages.len(), 3);
}
