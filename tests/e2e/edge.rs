//! The client edge: the gateway serving TLS itself, and per-address limits
//! counting the client a trusted load balancer names (X-Forwarded-For, the
//! PROXY protocol) and never the address a client claims for itself.

use std::time::Duration;

use meridian_gateway::GatewayConfig;
use meridian_sdk::{ErrorCode, Rest};
use meridian_seams::net::TokioNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Harness, Options, send_many};

#[tokio::test]
async fn a_gateway_serves_https_and_wss_with_its_own_certificate() {
    let mut harness = Harness::start_with(Options {
        edge_tls: true,
        ..Options::default()
    })
    .await;
    assert!(harness.rest.base().starts_with("https://"));
    // REST over https, a session over wss: a message goes through.
    let (alice, bob, conv) = harness.direct_pair().await;
    let mut sender = harness.client(&alice.token).await;
    let mut receiver = harness.client(&bob.token).await;
    let sent = send_many(&mut sender, &conv, 1, "over TLS").await;
    let arrived = receiver
        .poll_until(Duration::from_secs(20), |c| {
            c.timeline(&conv).iter().any(|m| m.msg_id == sent[0])
        })
        .await
        .unwrap();
    assert!(arrived, "the message crossed the TLS edge");

    let addr = harness.region().gateway_addr;
    // A client that does not trust the certificate's CA is refused.
    let untrusting = Rest::new(format!("https://{addr}"));
    assert!(untrusting.register("eve").await.is_err());
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = Rest::new(format!("http://{addr}"));
    assert!(plain.register("eve").await.is_err());
    harness.stop().await;
}

/// A gateway allowing one registration per client address per minute,
/// behind a load balancer at 127.0.0.1.
async fn behind_a_balancer(proxy_protocol: bool) -> Harness {
    let mut gateway = GatewayConfig::new("us-east");
    gateway.registrations_per_minute = 1.0;
    gateway.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    gateway.proxy_protocol = proxy_protocol;
    Harness::start_with(Options {
        gateway: Some(gateway),
        ..Options::default()
    })
    .await
}

/// Registers through `base` as `forwarded_for` says; the HTTP status.
async fn register_as(base: &str, forwarded_for: &str) -> u16 {
    crate::support::http()
        .post(format!("{base}/v1/users"))
        .header("x-forwarded-for", forwarded_for)
        .json(&serde_json::json!({"display_name": "someone"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn limits_count_the_client_a_trusted_balancer_forwards() {
    let harness = behind_a_balancer(false).await;
    let base = harness.rest.base().to_string();
    assert_eq!(register_as(&base, "198.51.100.1").await, 201);
    // The same client again: over its limit.
    assert_eq!(register_as(&base, "198.51.100.1").await, 429);
    // Another client behind the same balancer has its own.
    assert_eq!(register_as(&base, "198.51.100.2").await, 201);
    // A client prepending an address of its choice is still itself.
    assert_eq!(register_as(&base, "203.0.113.9, 198.51.100.2").await, 429);
    harness.stop().await;
}

/// Registers over a raw connection that starts with a PROXY protocol v2
/// header naming `client`; the HTTP status.
async fn register_via_proxy_protocol(addr: std::net::SocketAddr, client: [u8; 4]) -> u16 {
    let mut stream = TokioNetwork::shared()
        .connect(addr.to_string())
        .await
        .unwrap();
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&client);
    header.extend_from_slice(&[127, 0, 0, 1, 0x30, 0x39, 0x1f, 0x90]);
    let body = r#"{"display_name":"someone"}"#;
    let request = format!(
        "POST /v1/users HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    header.extend_from_slice(request.as_bytes());
    stream.write_all(&header).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

#[tokio::test]
async fn limits_count_the_client_a_proxy_protocol_header_names() {
    let harness = behind_a_balancer(true).await;
    let addr = harness.region().gateway_addr;
    assert_eq!(
        register_via_proxy_protocol(addr, [198, 51, 100, 1]).await,
        201
    );
    assert_eq!(
        register_via_proxy_protocol(addr, [198, 51, 100, 1]).await,
        429
    );
    assert_eq!(
        register_via_proxy_protocol(addr, [198, 51, 100, 2]).await,
        201
    );
    // From the trusted balancer, a connection without its header is dropped.
    let refused = Rest::new(format!("http://{addr}")).register("eve").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.code() != Some(ErrorCode::RateLimited)),
        "{refused:?}"
    );
    harness.stop().await;
}
