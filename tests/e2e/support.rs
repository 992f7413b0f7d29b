//! A region on loopback sockets for each test.

use std::sync::Arc;
use std::time::Duration;

use meridian_gateway::GatewayConfig;
use meridian_identity::pki::LocalCa;
use meridian_identity::{EdgeCredentials, Identity};
use meridian_region::{
    HealthConfig, MemoryEngine, RegionCredentials, RegionHandle, RegionOptions, StoreChoice,
    start_region,
};
use meridian_sdk::frames::RegisterResponse;
use meridian_sdk::{Client, Rest, TlsRoots};
use meridian_seams::clock::ManualClock;
use meridian_seams::net::TokioNetwork;
use meridian_seams::{Rng, SharedClock, SystemClock};

/// An HTTP client. The build's one TLS provider (aws-lc-rs) is made the
/// process default first: reqwest, built without a provider of its own,
/// takes the default even for plain `http://`.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::new()
}

/// Both identities of `site`'s region, issued by `ca`.
pub fn credentials(ca: &LocalCa, site: &str) -> RegionCredentials {
    let region = meridian_wire::sites::region_of_site(site);
    RegionCredentials {
        core: ca.issue(&Identity::core(region)).expect("core identity"),
        gateway: ca
            .issue(&Identity::gateway(region))
            .expect("gateway identity"),
    }
}

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Harness {
    pub region: Option<RegionHandle>,
    pub rest: Rest,
    /// The CA of the region's identities (when it runs with TLS).
    pub ca: LocalCa,
    _dir: tempfile::TempDir,
    seed: u64,
}

pub struct Options {
    pub clock: Option<Arc<ManualClock>>,
    pub gateway: Option<GatewayConfig>,
    /// Whether delivery follows the store's inbox feed (the native engines'
    /// way) or watches the inbox head (FoundationDB's way).
    pub follow_inbox_feed: bool,
    /// Mutual TLS between the gateway and the core (as `meridian dev`
    /// runs); `false` runs the core as `--insecure-core` does.
    pub tls: bool,
    /// The gateway serves its clients TLS (a certificate for 127.0.0.1 of
    /// the harness's CA, which its REST client trusts).
    pub edge_tls: bool,
    /// Adjusts the core's configuration (limits).
    pub core: Option<fn(&mut meridian_core::CoreConfig)>,
    /// The store: fjall in a temporary directory unless this memory
    /// engine (whose faults a test injects) is given.
    pub store: Option<MemoryEngine>,
    /// How the core's watchdog looks at its store.
    pub health: HealthConfig,
}

/// Set to `watch` to run the tests with delivery watching the inbox head,
/// FoundationDB's way, on the native engine (`.ci/test` does, for the
/// delivery tests).
pub const INBOX_WAIT_VARIABLE: &str = "MERIDIAN_TEST_INBOX_WAIT";

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: None,
            gateway: None,
            follow_inbox_feed: std::env::var(INBOX_WAIT_VARIABLE).as_deref() != Ok("watch"),
            tls: true,
            edge_tls: false,
            core: None,
            store: None,
            health: HealthConfig::default(),
        }
    }
}

impl Options {
    /// Delivery watches the inbox head instead of following the feed.
    pub fn watching_inbox_head() -> Self {
        Self {
            follow_inbox_feed: false,
            ..Self::default()
        }
    }
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: SharedClock = match options.clock {
            Some(clock) => clock,
            None => SystemClock::shared(),
        };
        let gateway = options.gateway.unwrap_or_else(|| {
            let mut gateway = GatewayConfig::new("us-east");
            // Tests register many users from one address.
            gateway.registrations_per_minute = 100_000.0;
            gateway
        });
        let store = match options.store {
            Some(engine) => StoreChoice::Memory(engine),
            None => StoreChoice::Fjall(dir.path().to_path_buf()),
        };
        let mut region = RegionOptions::loopback(
            "us-east",
            store,
            TokioNetwork::shared(),
            clock.clone(),
            Rng::seeded(7),
        );
        region.gateway = gateway;
        region.health = options.health;
        region.core.follow_inbox_feed = options.follow_inbox_feed;
        if let Some(configure) = options.core {
            configure(&mut region.core);
        }
        let ca = LocalCa::generate().expect("a CA");
        if options.tls {
            region.tls = Some(credentials(&ca, "us-east"));
        }
        if options.edge_tls {
            let (chain, key) = ca
                .issue_edge_pem(&["127.0.0.1", "localhost"])
                .expect("edge");
            region.edge_tls = Some(EdgeCredentials::from_pem(&chain, &key).expect("edge"));
        }
        let region = start_region(region).await.expect("start region");
        let rest = if options.edge_tls {
            let roots = TlsRoots::with_pem(ca.cert_pem()).expect("the CA as a root");
            Rest::with_roots(format!("https://{}", region.gateway_addr), roots)
        } else {
            Rest::new(format!("http://{}", region.gateway_addr))
        };
        Self {
            region: Some(region),
            rest,
            ca,
            _dir: dir,
            seed: 0,
        }
    }

    pub fn region(&self) -> &RegionHandle {
        self.region.as_ref().expect("region running")
    }

    pub async fn user(&self, name: &str) -> RegisterResponse {
        self.rest.register(name).await.expect("register")
    }

    /// A client for a device token; connected.
    pub async fn client(&mut self, token: &str) -> Client {
        self.seed += 1;
        let mut client = Client::new(&self.rest, token, self.seed);
        client.connect(20).await.expect("connect");
        client
    }

    pub async fn stop(mut self) {
        if let Some(region) = self.region.take() {
            region.stop().await;
        }
    }
}

/// A raw WebSocket to the gateway.
pub type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Harness {
    /// Two users and their direct conversation.
    pub async fn direct_pair(&self) -> (RegisterResponse, RegisterResponse, String) {
        let alice = self.user("alice").await;
        let bob = self.user("bob").await;
        let conv = self.direct(&alice.token, &bob.user_id).await;
        (alice, bob, conv)
    }

    /// The direct conversation of the user holding `token` with `peer`.
    pub async fn direct(&self, token: &str, peer: &str) -> String {
        self.rest
            .with_token(token)
            .direct(peer)
            .await
            .expect("direct")
            .conv_id
    }

    /// Another device of the user holding `token`.
    pub async fn device(&self, token: &str, label: &str) -> meridian_sdk::frames::DeviceCreated {
        self.rest
            .with_token(token)
            .add_device(label)
            .await
            .expect("add device")
    }

    /// A raw WebSocket authenticated with `token`, past its `ready` frame.
    pub async fn raw_ready(&self, token: &str) -> RawSocket {
        raw_ready_at(&self.rest, token).await
    }
}

/// A raw WebSocket to `rest`'s gateway authenticated with `token`, past its
/// `ready` frame.
pub async fn raw_ready_at(rest: &Rest, token: &str) -> RawSocket {
    let (mut socket, _) = tokio_tungstenite::connect_async(rest.ws_url())
        .await
        .expect("connect");
    send_json(
        &mut socket,
        serde_json::json!({"v": 1, "type": "auth", "token": token}),
    )
    .await;
    let ready = next_json(&mut socket).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    socket
}

/// Sends `count` messages through `client`; returns their ids in order.
pub async fn send_many(client: &mut Client, conv: &str, count: usize, prefix: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let id = client.new_client_msg_id();
        ids.push(
            client
                .send(conv, &id, &format!("{prefix} {i}"), None)
                .await
                .expect("send")
                .msg_id,
        );
    }
    ids
}

/// Writes one JSON frame.
pub async fn send_json(socket: &mut RawSocket, frame: serde_json::Value) {
    use futures::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            frame.to_string().into(),
        ))
        .await
        .expect("write frame");
}

/// The next text frame, as JSON.
pub async fn next_json(socket: &mut RawSocket) -> serde_json::Value {
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON frame");
        }
    }
}

/// Which log carries replication in a multi-region test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestLog {
    /// The embedded log in each region's store.
    Embedded,
    /// A real Kafka-protocol broker (tansu) per region.
    Kafka,
}

/// Several regions in this process, each region's path to every other
/// region's core going through its own fault proxy (`proxy(from, to)`), so a
/// test can cut and heal the link between two regions.
pub struct Regions {
    pub handles: std::collections::BTreeMap<String, RegionHandle>,
    /// The CA of every region's identities.
    pub ca: LocalCa,
    pub clocks: std::collections::BTreeMap<String, Arc<SystemClock>>,
    proxies: std::collections::BTreeMap<(String, String), meridian_faultproxy::Proxy>,
    _brokers: Vec<meridian_testbed::Broker>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Regions {
    /// `names` regions; `configure` adjusts each region's options.
    pub async fn start(
        names: &[&str],
        log: TestLog,
        configure: impl Fn(&str, &mut RegionOptions),
    ) -> Self {
        use std::collections::BTreeMap;

        use meridian_region::Listen;

        let network = TokioNetwork::shared();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut listeners = BTreeMap::new();
        for name in names {
            let listener = network.bind(any).await.expect("bind core");
            listeners.insert(name.to_string(), listener);
        }
        let core_addrs: BTreeMap<String, String> = listeners
            .iter()
            .map(|(name, l)| (name.clone(), l.local_addr().expect("addr").to_string()))
            .collect();
        let proxy_clock: SharedClock = SystemClock::shared();
        let mut proxies = BTreeMap::new();
        for from in names {
            for (to, addr) in &core_addrs {
                if to != from {
                    let proxy = meridian_faultproxy::Proxy::start(
                        network.clone(),
                        proxy_clock.clone(),
                        any,
                        addr.clone(),
                        Duration::ZERO,
                    )
                    .await
                    .expect("proxy");
                    proxies.insert((from.to_string(), to.clone()), proxy);
                }
            }
        }
        let ca = LocalCa::generate().expect("a CA");
        let mut handles = BTreeMap::new();
        let mut clocks = BTreeMap::new();
        let mut dirs = Vec::new();
        let mut brokers = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let dir = tempfile::tempdir().expect("tempdir");
            let clock = Arc::new(SystemClock::new());
            let mut options = RegionOptions::loopback(
                name,
                StoreChoice::Fjall(dir.path().to_path_buf()),
                network.clone(),
                clock.clone(),
                Rng::seeded(100 + index as u64),
            );
            options.core_listen = Listen::Bound(listeners.remove(*name).expect("listener"));
            options.peers = proxies
                .iter()
                .filter(|((from, _), _)| from == name)
                .map(|((_, to), proxy)| (to.clone(), proxy.addr().to_string()))
                .collect();
            if log == TestLog::Kafka {
                let broker = meridian_testbed::Broker::start(&network)
                    .await
                    .expect("tansu broker");
                options.log = meridian_region::LogChoice::Kafka(
                    meridian_replication::kafka::KafkaConfig::new(broker.bootstrap(), 4),
                );
                brokers.push(broker);
            }
            options.gateway.registrations_per_minute = 100_000.0;
            options.gateway.sends_per_second = 10_000.0;
            options.gateway.send_burst = 10_000.0;
            // Short link timings: a cut is noticed and healed quickly.
            options.link.max_backoff = Duration::from_millis(500);
            options.link.stall_timeout = Duration::from_secs(3);
            options.tls = Some(credentials(&ca, name));
            configure(name, &mut options);
            handles.insert(
                name.to_string(),
                start_region(options).await.expect("region"),
            );
            clocks.insert(name.to_string(), clock);
            dirs.push(dir);
        }
        Self {
            handles,
            ca,
            clocks,
            proxies,
            _brokers: brokers,
            _dirs: dirs,
        }
    }

    /// The REST client of `region`'s gateway.
    pub fn rest(&self, region: &str) -> Rest {
        Rest::new(format!("http://{}", self.handles[region].gateway_addr))
    }

    /// Registers a user homed in `region` (through that region's gateway).
    pub async fn user(&self, region: &str, name: &str) -> RegisterResponse {
        self.rest(region).register(name).await.expect("register")
    }

    /// A connected client for `token` through `region`'s gateway.
    pub async fn client(&self, region: &str, token: &str, seed: u64) -> Client {
        let mut client = Client::new(&self.rest(region), token, seed);
        client.connect(20).await.expect("connect");
        client
    }

    /// The path `from` uses to reach `to`'s core (replication from `to`
    /// into `from`, and `from`'s calls to `to`).
    pub fn proxy(&self, from: &str, to: &str) -> &meridian_faultproxy::Proxy {
        &self.proxies[&(from.to_string(), to.to_string())]
    }

    pub async fn stop(self) {
        for (_, handle) in self.handles {
            handle.stop().await;
        }
    }
}

/// Polls `client` until it has a conversation change for `conv`.
pub async fn wait_for_conversation(client: &mut Client, conv: &str) {
    let seen = client
        .poll_until(PATIENCE, |c| {
            c.other_deliveries().iter().any(|d| {
                matches!(d, meridian_sdk::frames::Delivered::ConversationChanged { conv_id, .. } if conv_id == conv)
            })
        })
        .await
        .expect("poll");
    assert!(seen, "the conversation {conv} reached the device");
}

/// Message ids of a conversation in display order.
pub fn order(client: &Client, conv: &str) -> Vec<String> {
    client
        .timeline(conv)
        .iter()
        .map(|m| m.msg_id.clone())
        .collect()
}

/// Every reply in `client`'s timeline of `conv` comes after its parent.
pub fn assert_replies_follow_parents(client: &Client, conv: &str) {
    let timeline = client.timeline(conv);
    let position: std::collections::BTreeMap<&str, usize> = timeline
        .iter()
        .enumerate()
        .map(|(i, m)| (m.msg_id.as_str(), i))
        .collect();
    for (i, message) in timeline.iter().enumerate() {
        if let Some(parent) = &message.reply_to {
            let parent_at = position[parent.as_str()];
            assert!(
                parent_at < i,
                "reply {} (hlc {}) shown before its parent {parent}",
                message.msg_id,
                message.hlc
            );
        }
    }
}
