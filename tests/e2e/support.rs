//! A region on loopback sockets for each test.

use std::sync::Arc;
use std::time::Duration;

use meridian_core::CoreConfig;
use meridian_gateway::GatewayConfig;
use meridian_region::{RegionHandle, RegionOptions, StoreChoice, start_region};
use meridian_sdk::frames::RegisterResponse;
use meridian_sdk::{Client, Rest};
use meridian_seams::clock::ManualClock;
use meridian_seams::net::TokioNetwork;
use meridian_seams::{Rng, SharedClock, SystemClock};

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Harness {
    pub region: Option<RegionHandle>,
    pub rest: Rest,
    _dir: tempfile::TempDir,
    seed: u64,
}

pub struct Options {
    pub clock: Option<Arc<ManualClock>>,
    pub gateway: Option<GatewayConfig>,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(Options {
            clock: None,
            gateway: None,
        })
        .await
    }

    pub async fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: SharedClock = match options.clock {
            Some(clock) => clock,
            None => SystemClock::shared(),
        };
        let mut gateway = options
            .gateway
            .unwrap_or_else(|| GatewayConfig::new("us-east"));
        // Tests register many users from one address.
        gateway.registrations_per_minute = 100_000.0;
        let region = start_region(RegionOptions {
            core: CoreConfig::new("us-east"),
            gateway,
            store: StoreChoice::Fjall(dir.path().to_path_buf()),
            gateway_listen: "127.0.0.1:0".parse().expect("addr"),
            core_listen: "127.0.0.1:0".parse().expect("addr"),
            network: TokioNetwork::shared(),
            clock: clock.clone(),
            rng: Rng::seeded(7),
            metrics: None,
        })
        .await
        .expect("start region");
        let rest = Rest::new(format!("http://{}", region.gateway_addr));
        Self {
            region: Some(region),
            rest,
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
        let conv = self
            .rest
            .with_token(&alice.token)
            .direct(&bob.user_id)
            .await
            .expect("direct")
            .conv_id;
        (alice, bob, conv)
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
        let (mut socket, _) = tokio_tungstenite::connect_async(self.rest.ws_url())
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
