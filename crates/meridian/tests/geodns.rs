//! GeoDNS over real sockets: `meridian geodns` in front of two regions run
//! as `meridian dev --region … --gateways 2` processes, asked over UDP and
//! TCP with and without an EDNS Client Subnet option; a region frozen
//! (SIGSTOP) leaves the answers and comes back once it answers again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command};
use std::time::Duration;

use meridian_geodns::dns::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use meridian_geodns::dns::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use meridian_geodns::dns::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod common;

const SERVICE: &str = "chat.meridian.test.";

/// A question for `name`, with `subnet` as its EDNS Client Subnet.
fn question(name: &str, kind: RecordType, subnet: Option<&str>) -> Message {
    let mut message = Message::new();
    message
        .set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some(subnet) = subnet {
        let subnet: ClientSubnet = subnet.parse().unwrap();
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
    }
    message.set_edns(edns);
    message
}

/// Asks `server` over UDP.
async fn ask(server: SocketAddr, name: &str, kind: RecordType, subnet: Option<&str>) -> Message {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bytes = question(name, kind, subnet).to_vec().unwrap();
    socket.send_to(&bytes, server).await.unwrap();
    let mut buffer = vec![0; 4096];
    let (read, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buffer))
        .await
        .expect("an answer within 3 s")
        .unwrap();
    Message::from_vec(&buffer[..read]).unwrap()
}

/// Asks `server` over TCP (two-byte length prefix, RFC 1035 §4.2.2).
async fn ask_tcp(server: SocketAddr, name: &str, kind: RecordType) -> Message {
    let seam = meridian_seams::net::TokioNetwork::shared();
    let mut stream = seam.connect(server.to_string()).await.unwrap();
    let bytes = question(name, kind, None).to_vec().unwrap();
    stream
        .write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let length = stream.read_u16().await.unwrap();
    let mut answer = vec![0; usize::from(length)];
    stream.read_exact(&mut answer).await.unwrap();
    Message::from_vec(&answer).unwrap()
}

/// The addresses of an answer's A records.
fn addresses(answer: &Message) -> BTreeSet<IpAddr> {
    answer
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// The scope prefix of the echoed client subnet option.
fn scope(answer: &Message) -> Option<u8> {
    match answer
        .extensions()
        .as_ref()?
        .options()
        .get(EdnsCode::Subnet)?
    {
        EdnsOption::Subnet(subnet) => Some(subnet.scope_prefix()),
        _ => None,
    }
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

/// Asks until the answer for `subnet` is `expected`, within `tries`
/// check intervals: health settles by checks, not by a clock the test
/// could read.
async fn answered_with(
    server: SocketAddr,
    subnet: &str,
    expected: &BTreeSet<IpAddr>,
    tries: u32,
) -> Message {
    let mut last = BTreeSet::new();
    for _ in 0..tries {
        let answer = ask(server, SERVICE, RecordType::A, Some(subnet)).await;
        last = addresses(&answer);
        if last == *expected {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{subnet}: answered {last:?}, expected {expected:?}");
}

struct Deployment {
    _regions: tempfile::TempDir,
    _data: tempfile::TempDir,
    us_east: Child,
    eu_west: Child,
    geodns: Child,
    dns: SocketAddr,
    /// GeoDNS's own admin listener (`/metrics`, `/readyz`).
    admin: SocketAddr,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in [&mut self.geodns, &mut self.us_east, &mut self.eu_west] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two regions of two gateways each, and GeoDNS (home eu-west) checking
/// them every 100 ms, back after 2 successes.
async fn deployment() -> Deployment {
    let regions = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_geo_regions(regions.path());
    let region = |name: &str| {
        common::spawn_until(
            &["dev", "--region", name, "--gateways", "2"],
            regions.path(),
            data.path(),
            "meridian dev:",
        )
    };
    let us_east = region("us-east");
    let eu_west = region("eu-west");
    let admin: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let (geodns, dns) = common::spawn_geodns(
        regions.path(),
        data.path(),
        "eu-west",
        &["--rise", "2", "--admin-listen", &admin.to_string()],
    );
    // Every gateway checked healthy first: until then GeoDNS fails open,
    // which would answer these tests right for the wrong reason.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let readyz = format!("http://{admin}/readyz");
    let mut healthy = String::new();
    for _ in 0..100 {
        if let Ok(answer) = reqwest::get(&readyz).await {
            healthy = answer.text().await.unwrap_or_default();
            if healthy == "4 of 4 gateways healthy" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(healthy, "4 of 4 gateways healthy");
    Deployment {
        _regions: regions,
        _data: data,
        us_east,
        eu_west,
        geodns,
        dns,
        admin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_answered_with_the_gateways_of_their_region() {
    let deployment = deployment().await;
    let dns = deployment.dns;
    let us = ips(&["127.0.1.1", "127.0.1.2"]);
    let eu = ips(&["127.0.2.1", "127.0.2.2"]);

    // By client subnet, the option echoed with the prefix that decided.
    let answer = answered_with(dns, "3.4.5.0/24", &us, 100).await;
    assert!(answer.authoritative());
    assert_eq!(scope(&answer), Some(8));
    let answer = answered_with(dns, "18.130.7.0/24", &eu, 100).await;
    assert_eq!(scope(&answer), Some(16));

    // A subnet no region claims goes to the server's home region.
    let unknown = ask(dns, SERVICE, RecordType::A, Some("100.64.9.0/24")).await;
    assert_eq!(addresses(&unknown), eu);
    assert!(scope(&unknown).is_some_and(|s| s <= 24));

    // Without the option, by the resolver's address (loopback: no region).
    let plain = question(SERVICE, RecordType::A, None);
    assert!(
        plain
            .extensions()
            .as_ref()
            .unwrap()
            .options()
            .get(EdnsCode::Subnet)
            .is_none()
    );
    assert_eq!(addresses(&ask(dns, SERVICE, RecordType::A, None).await), eu);

    // Over TCP too.
    assert_eq!(addresses(&ask_tcp(dns, SERVICE, RecordType::A).await), eu);

    // A resolver asking from a region's (loopback) block is taken for a
    // client there: the SDK's `Discovery::from_source`, as `meridian chat
    // --dns-source` uses it.
    let template = meridian_sdk::Rest::new("http://unused");
    let discovery = meridian_sdk::Discovery::new(dns, "chat.meridian.test", &template)
        .unwrap()
        .from_source("127.1.0.1".parse().unwrap());
    let found: BTreeSet<String> = discovery
        .gateways(true)
        .await
        .unwrap()
        .iter()
        .map(|rest| rest.base().to_string())
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found.iter().all(|base| base.starts_with("http://127.0.1.")),
        "us-east's gateways for a client in us-east: {found:?}"
    );

    // SRV: every gateway of the region with its port, addresses alongside.
    let srv = ask(
        dns,
        &format!("_meridian._tcp.{SERVICE}"),
        RecordType::SRV,
        Some("3.4.5.0/24"),
    )
    .await;
    let targets: BTreeSet<String> = srv
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::SRV(srv) => Some(srv.target().to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(
        targets,
        ["gw1.us-east.meridian.test.", "gw2.us-east.meridian.test."]
            .into_iter()
            .map(String::from)
            .collect()
    );
    assert_eq!(srv.additionals().len(), 2);

    // Names the zone lacks, and names outside it.
    let missing = ask(dns, "nope.meridian.test.", RecordType::A, None).await;
    assert_eq!(missing.response_code(), ResponseCode::NXDomain);
    assert!(
        !missing.name_servers().is_empty(),
        "the SOA says how long to remember"
    );
    let outside = ask(dns, "example.com.", RecordType::A, None).await;
    assert_eq!(outside.response_code(), ResponseCode::Refused);

    // Its own metrics and readiness.
    let base = format!("http://{}", deployment.admin);
    assert_eq!(common::get(&format!("{base}/readyz")).await.0, 200);
    let (_, metrics) = common::get(&format!("{base}/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("meridian_geodns_answers_total")
                && line.contains("region=\"us-east\"")
                && line.contains("via=\"client_subnet\"")),
        "{metrics}"
    );
    assert!(
        metrics.contains("meridian_geodns_region_up{region=\"eu-west\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_region_leaves_the_answers_and_comes_back() {
    let deployment = deployment().await;
    let dns = deployment.dns;
    let us = ips(&["127.0.1.1", "127.0.1.2"]);
    let eu = ips(&["127.0.2.1", "127.0.2.2"]);
    answered_with(dns, "3.4.5.0/24", &us, 100).await;

    // Every us-east gateway stops answering: its clients go to eu-west.
    let pid = deployment.us_east.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    answered_with(dns, "3.4.5.0/24", &eu, 50).await;

    // It answers again: back, after its successes.
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    answered_with(dns, "3.4.5.0/24", &us, 50).await;
}
