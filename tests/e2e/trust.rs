//! The core's trust boundary, tried as an attacker on the same network
//! would: mutual TLS refuses plaintext, foreign and missing certificates;
//! each identity calls only its methods; a region's core pulls only the
//! replication topic destined for its own region.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use meridian_identity::pki::LocalCa;
use meridian_identity::{Identity, ServiceCredentials};
use meridian_rpc::core::core_client::CoreClient;
use meridian_rpc::core::{self as pb};
use meridian_rpc::replication::replication_client::ReplicationClient;
use meridian_rpc::replication::{self as link_pb};
use meridian_seams::net::{TokioNetwork, tonic_channel};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::support::{Harness, Options, PATIENCE, Regions, TestLog, send_many};

fn channel(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Channel {
    tonic_channel(
        TokioNetwork::shared(),
        &addr.to_string(),
        Duration::from_secs(5),
        tls,
    )
    .expect("a channel")
}

fn core(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> CoreClient<Channel> {
    CoreClient::new(channel(addr, tls))
}

fn register() -> pb::RegisterUserRequest {
    pb::RegisterUserRequest {
        display_name: "mallory".into(),
        device_label: "laptop".into(),
    }
}

/// The status of a call that must fail.
async fn refused<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> tonic::Status {
    tokio::time::timeout(PATIENCE, call)
        .await
        .expect("an answer")
        .expect_err("refused")
}

/// A connection the TLS handshake refused: the call fails at the
/// transport, before any service sees it.
fn assert_refused_at_handshake(status: &tonic::Status) {
    let transport = std::error::Error::source(status)
        .is_some_and(|source| source.is::<tonic::transport::Error>());
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Unknown) && transport,
        "not a refusal at the transport: {status:?}"
    );
}

#[tokio::test]
async fn a_core_refuses_plaintext_and_certificates_its_ca_did_not_sign() {
    let harness = Harness::start().await;
    let addr = harness.region().core_addr;
    let gateway = harness.ca.issue(&Identity::gateway("us-east")).unwrap();
    let us_east = Identity::core("us-east");

    // The region's own gateway identity gets through: the refusals below
    // are the certificates', not a broken server's.
    core(addr, Some(gateway.client_tls(&us_east)))
        .register_user(register())
        .await
        .expect("the gateway's identity is served");

    let plaintext = refused(core(addr, None).register_user(register())).await;
    assert_refused_at_handshake(&plaintext);

    // A certificate naming the right identity, from another CA.
    let foreign = LocalCa::generate().unwrap();
    let (cert, key) = foreign.issue_pem(&Identity::gateway("us-east")).unwrap();
    let trusting_our_ca = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(harness.ca.cert_pem()))
        .domain_name(us_east.dns_name());
    let forged = trusting_our_ca
        .clone()
        .identity(tonic::transport::Identity::from_pem(cert, key));
    let status = refused(core(addr, Some(forged)).register_user(register())).await;
    assert_refused_at_handshake(&status);

    // No certificate at all.
    let status = refused(core(addr, Some(trusting_our_ca)).register_user(register())).await;
    assert_refused_at_handshake(&status);

    // The client checks the server in turn: us-east's core is not eu-west's.
    let wrong_server = gateway.client_tls(&Identity::core("eu-west"));
    let status = refused(core(addr, Some(wrong_server)).register_user(register())).await;
    assert_refused_at_handshake(&status);
    assert!(
        status.message().contains("not valid for name"),
        "{status:?}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn each_identity_calls_only_its_methods() {
    let harness = Harness::start().await;
    let addr = harness.region().core_addr;
    let us_east = Identity::core("us-east");
    let issue = |identity: Identity| -> ServiceCredentials { harness.ca.issue(&identity).unwrap() };
    let gateway = core(
        addr,
        Some(issue(Identity::gateway("eu-west")).client_tls(&us_east)),
    );
    let peer_core = core(
        addr,
        Some(issue(Identity::core("eu-west")).client_tls(&us_east)),
    );
    let alice = gateway
        .clone()
        .register_user(register())
        .await
        .expect("any region's gateway serves its users here")
        .into_inner();
    let alice_id = alice.user.expect("user").user_id;

    // Only cores make sure a direct chat exists in a peer's region.
    let ensure = pb::EnsureDirectRequest {
        user_a: alice_id.clone(),
        user_b: alice_id.clone(),
        created_ms: 1,
    };
    let status = refused(gateway.clone().ensure_direct(ensure)).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A core acts for no device: sessions, sends, registrations are the
    // gateways'.
    let status = refused(peer_core.clone().register_user(register())).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // It may ask whether a user exists.
    let caller = pb::Caller {
        user_id: alice_id.clone(),
        device_id: String::new(),
    };
    peer_core
        .clone()
        .get_user(pb::GetUserRequest {
            caller: Some(caller),
            user_id: alice_id,
        })
        .await
        .expect("a core looks up a user");

    // A gateway opens no replication link.
    let mut links = ReplicationClient::new(channel(
        addr,
        Some(issue(Identity::gateway("us-east")).client_tls(&us_east)),
    ));
    let status = refused(links.link(open("eu-west"))).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    harness.stop().await;
}

/// A link stream that opens for `destination`, then stays open.
fn open(destination: &str) -> impl futures::Stream<Item = link_pb::LinkUp> + Send + 'static {
    let open = link_pb::LinkUp {
        kind: Some(link_pb::link_up::Kind::Open(link_pb::Open {
            destination: destination.to_string(),
            from: Vec::new(),
            window: 16,
            epoch: 0,
            last: Vec::new(),
        })),
    };
    futures::stream::iter([open]).chain(futures::stream::pending())
}

#[tokio::test]
async fn a_core_pulls_only_the_log_destined_for_its_own_region() {
    let regions = Regions::start(
        &["us-east", "eu-west", "ap-southeast"],
        TestLog::Embedded,
        |_, _| {},
    )
    .await;
    let source = regions.handles["us-east"].core_addr;
    let eu_west = regions.ca.issue(&Identity::core("eu-west")).unwrap();
    let mut links = ReplicationClient::new(channel(
        source,
        Some(eu_west.client_tls(&Identity::core("us-east"))),
    ));

    // eu-west's certificate cannot read (or report applied, which trims)
    // ap-southeast's topic.
    let status = refused(links.link(open("ap-southeast"))).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Its own topic is served: the first frame (a heartbeat at least) comes.
    let mut down = links
        .link(open("eu-west"))
        .await
        .expect("eu-west pulls its own topic")
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, down.message())
        .await
        .expect("a frame in time")
        .expect("no error");
    assert!(first.is_some(), "the link ended at once");
    regions.stop().await;
}

#[tokio::test]
async fn an_insecure_core_serves_plaintext_callers() {
    let mut harness = Harness::start_with(Options {
        tls: false,
        ..Options::default()
    })
    .await;
    // What --insecure-core means: anyone reaching the port is served.
    core(harness.region().core_addr, None)
        .register_user(register())
        .await
        .expect("served in plaintext");
    // And the region works through its gateway.
    let (alice, _bob, conv) = harness.direct_pair().await;
    let mut client = harness.client(&alice.token).await;
    send_many(&mut client, &conv, 1, "hello").await;
    harness.stop().await;
}
