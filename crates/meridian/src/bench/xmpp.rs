//! The other server of the side-by-side benchmark: ejabberd, started by the
//! benchmark from Debian's package with a configuration of its own, and the
//! XMPP-over-WebSocket client (RFC 7395) the load speaks to it.
//!
//! ejabberd is started with `erl` directly rather than `ejabberdctl`, which
//! avoids its known pitfalls for a benchmark: `ejabberdctl.cfg` overriding
//! `--config`, `su` to the ejabberd user resetting the open-files limit
//! (the child inherits the benchmark's raised limit), and the listener's
//! backlog of 5 (set to 4,096 here). Its schedulers do not busy-wait
//! (`+sbwt none` and the dirty schedulers' likewise): a spinning idle
//! scheduler would count as ejabberd's CPU per message without doing any
//! of its work. It keeps online messages in memory and never fsyncs them:
//! what a message costs it is not what a durable one costs Meridian, and
//! the figures say so.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use quick_xml::events::Event;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::load::{Pair, Receiver as PairReceiver, Sender as PairSender};

/// The XMPP domain the benchmark's ejabberd serves.
const DOMAIN: &str = "localhost";
/// The resource a pair's sessions bind.
const RESOURCE: &str = "bench";
/// Idle sessions per account, as Meridian's idle phase opens 15 devices
/// per account.
const IDLE_PER_ACCOUNT: usize = 15;
/// Every benchmark account's password.
const PASSWORD: &str = "bench-password";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running ejabberd, killed when dropped.
pub(crate) struct Ejabberd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Where Debian installs ejabberd's applications (`ERL_LIBS`): the first
/// of the library folders holding an `ejabberd-*` application.
fn erl_libs() -> anyhow::Result<PathBuf> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ];
    candidates
        .iter()
        .map(Path::new)
        .find(|dir| {
            std::fs::read_dir(dir).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    e.file_name().to_string_lossy().starts_with("ejabberd-")
                        && e.path().join("ebin/ejabberd.app").exists()
                })
            })
        })
        .map(Path::to_path_buf)
        .context("ejabberd is not installed (apt-get install ejabberd): no ejabberd-*/ebin/ejabberd.app under /usr/lib")
}

/// ejabberd's configuration: one virtual host, one HTTP listener on
/// loopback for WebSocket sessions and the admin API that registers the
/// benchmark's accounts, no shaper, no per-user session limit.
fn config(port: u16) -> String {
    format!(
        r#"hosts: [{DOMAIN}]
loglevel: warning
certfiles: []
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_http
    backlog: 4096
    request_handlers:
      /ws: ejabberd_http_ws
      /api: mod_http_api
auth_method: [internal]
auth_password_format: plain
acl:
  loopback:
    ip: [127.0.0.0/8]
api_permissions:
  "the benchmark registers its accounts":
    from: [mod_http_api]
    who:
      acl: loopback
    what: ["register", "status"]
shaper_rules:
  max_user_sessions: 1000000
modules:
  mod_http_api: {{}}
  mod_roster: {{}}
  mod_offline: {{}}
  mod_disco: {{}}
"#
    )
}

impl Ejabberd {
    /// Starts ejabberd on a free loopback port and waits until its API
    /// answers.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let libs = erl_libs()?;
        let dir = tempfile::tempdir()?;
        let port =
            meridian_testbed::free_port(&meridian_seams::net::TokioNetwork::shared()).await?;
        let config_path = dir.path().join("ejabberd.yml");
        std::fs::write(&config_path, config(port))?;
        let spool = dir.path().join("spool");
        let log = dir.path().join("ejabberd.log");
        let child = Command::new("erl")
            .args(["-noinput", "+P", "2000000", "+Q", "1048576"])
            .args(["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"])
            .arg("-mnesia")
            .arg("dir")
            .arg(format!("\"{}\"", spool.display()))
            .args(["-s", "ejabberd"])
            .env("ERL_LIBS", libs)
            .env("EJABBERD_CONFIG_PATH", &config_path)
            .env("EJABBERD_LOG_PATH", &log)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting ejabberd (erl)")?;
        let mut server = Self {
            child,
            port,
            _dir: dir,
        };
        server.wait_ready(&log).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                bail!("ejabberd exited ({status}) before it was ready; its log:\n{log}");
            }
            let answered = client
                .post(format!("{}/status", self.api()))
                .body("{}")
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                return Ok(());
            }
            // Polling a child's readiness: it prints nothing to wait on.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("ejabberd did not answer on port {} within 30 s", self.port)
    }

    fn api(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// The server process (the Erlang VM: `erl` execs it).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Registers accounts `names`, 64 at a time, through the admin API.
    pub(crate) async fn register(&self, names: &[String]) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let limit = Arc::new(Semaphore::new(64));
        let requests = names.iter().map(|name| {
            let (client, limit, url) = (client.clone(), limit.clone(), self.api());
            async move {
                let _permit = limit.acquire().await?;
                let answer = client
                    .post(format!("{url}/register"))
                    .json(&serde_json::json!({"user": name, "host": DOMAIN, "password": PASSWORD}))
                    .send()
                    .await?;
                if !answer.status().is_success() {
                    bail!("registering {name}: {}", answer.text().await?);
                }
                Ok(())
            }
        });
        futures::future::try_join_all(requests).await?;
        Ok(())
    }

    /// `count` pairs: accounts `sender<i>` and `receiver<i>`, each signed
    /// in on its own WebSocket.
    pub(crate) async fn make_pairs(&self, count: usize) -> anyhow::Result<Vec<Pair>> {
        let names: Vec<String> = (0..count)
            .flat_map(|i| [format!("sender{i}"), format!("receiver{i}")])
            .collect();
        self.register(&names).await?;
        let mut pairs = Vec::with_capacity(count);
        for i in 0..count {
            let sender = Sender::connect(
                &self.ws_url(),
                &format!("sender{i}"),
                &format!("receiver{i}"),
            )
            .await?;
            let receiver =
                Receiver::connect(&self.ws_url(), &format!("receiver{i}"), RESOURCE).await?;
            pairs.push(Pair {
                sender: PairSender::Xmpp(sender),
                receiver: PairReceiver::Xmpp(receiver),
            });
        }
        Ok(pairs)
    }

    /// The accounts `count` idle sessions need ([`IDLE_PER_ACCOUNT`] each).
    pub(crate) fn idle_accounts(count: usize) -> Vec<String> {
        (0..count.div_ceil(IDLE_PER_ACCOUNT))
            .map(|i| format!("idle{i}"))
            .collect()
    }

    /// `count` signed-in sessions over the registered `accounts`
    /// ([`IDLE_PER_ACCOUNT`] resources each), left idle.
    pub(crate) async fn idle_sessions(
        &self,
        accounts: &[String],
        count: usize,
    ) -> anyhow::Result<Vec<Receiver>> {
        let limit = Arc::new(Semaphore::new(128));
        let url = self.ws_url();
        futures::future::try_join_all((0..count).map(|i| {
            let (limit, url) = (limit.clone(), url.clone());
            let account = accounts.get(i / IDLE_PER_ACCOUNT).cloned();
            async move {
                let _permit = limit.acquire().await?;
                let account = account.context("fewer accounts than idle sessions")?;
                Receiver::connect(&url, &account, &format!("idle{}", i % IDLE_PER_ACCOUNT)).await
            }
        }))
        .await
    }
}

/// What the benchmark reads of a stanza: its element's name, its `type`
/// and `id`, and the text of its first `<body>` and `<jid>` children.
#[derive(Debug, Default, PartialEq)]
struct Stanza {
    name: String,
    kind: Option<String>,
    id: Option<String>,
    body: Option<String>,
    jid: Option<String>,
}

/// The character an XML entity reference stands for: the five predefined
/// ones and character references (`#38`, `#x26`).
fn entity(name: &[u8]) -> Option<char> {
    match name {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        [b'#', b'x', hex @ ..] => u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16)
            .ok()
            .and_then(char::from_u32),
        [b'#', decimal @ ..] => std::str::from_utf8(decimal)
            .ok()?
            .parse()
            .ok()
            .and_then(char::from_u32),
        _ => None,
    }
}

/// The top-level elements of one WebSocket frame (RFC 7395 sends one per
/// frame; several are read all the same), entity references in text
/// resolved.
fn stanzas(frame: &str) -> anyhow::Result<Vec<Stanza>> {
    let mut reader = quick_xml::Reader::from_str(frame);
    let mut found: Vec<Stanza> = Vec::new();
    let mut depth = 0usize;
    // Inside a `<body>` or `<jid>`: which, and its text so far.
    let mut text_of: Option<(&'static str, String)> = None;
    let attribute = |element: &quick_xml::events::BytesStart<'_>, name: &str| {
        element
            .try_get_attribute(name)
            .map(|a| a.map(|a| String::from_utf8_lossy(&a.value).into_owned()))
    };
    loop {
        let event = reader
            .read_event()
            .with_context(|| format!("malformed XMPP frame: {frame}"))?;
        let opens = matches!(event, Event::Start(_));
        match event {
            Event::Start(element) | Event::Empty(element) if depth == 0 => {
                found.push(Stanza {
                    name: String::from_utf8_lossy(element.local_name().as_ref()).into_owned(),
                    kind: attribute(&element, "type")?,
                    id: attribute(&element, "id")?,
                    ..Stanza::default()
                });
                if opens {
                    depth = 1;
                }
            }
            Event::Start(element) => {
                depth += 1;
                text_of = match element.local_name().as_ref() {
                    b"body" => Some(("body", String::new())),
                    b"jid" => Some(("jid", String::new())),
                    _ => None,
                };
            }
            Event::Text(text) => {
                if let Some((_, so_far)) = &mut text_of {
                    so_far.push_str(&String::from_utf8_lossy(text.as_ref()));
                }
            }
            Event::GeneralRef(reference) => {
                if let Some((_, so_far)) = &mut text_of {
                    let name: &[u8] = reference.as_ref();
                    let resolved = entity(name).with_context(|| {
                        format!(
                            "unknown entity &{}; in {frame}",
                            String::from_utf8_lossy(name)
                        )
                    })?;
                    so_far.push(resolved);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if let (Some((field, text)), Some(stanza)) = (text_of.take(), found.last_mut()) {
                    let slot = if field == "body" {
                        &mut stanza.body
                    } else {
                        &mut stanza.jid
                    };
                    slot.get_or_insert(text);
                }
            }
            Event::Eof => return Ok(found),
            _ => {}
        }
    }
}

/// Reads frames until a stanza named `name` arrives; a stream error, a
/// SASL failure, an IQ error or the stream's close fails.
async fn expect(socket: &mut Socket, name: &'static str) -> anyhow::Result<Stanza> {
    while let Some(frame) = socket.next().await {
        let Message::Text(text) = frame? else {
            continue;
        };
        for stanza in stanzas(&text)? {
            match stanza.name.as_str() {
                "error" | "failure" | "close" => bail!("ejabberd refused: {text}"),
                "iq" if stanza.kind.as_deref() == Some("error") => {
                    bail!("ejabberd refused: {text}")
                }
                found if found == name => return Ok(stanza),
                _ => {}
            }
        }
    }
    Err(ClosedEarly { awaited: name }.into())
}

/// ejabberd closed the WebSocket without a word while `awaited` was due.
#[derive(Debug)]
struct ClosedEarly {
    awaited: &'static str,
}

impl std::fmt::Display for ClosedEarly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ejabberd closed the WebSocket while {} was awaited",
            self.awaited
        )
    }
}

impl std::error::Error for ClosedEarly {}

/// How many times a stream ejabberd closed before it began is opened:
/// opening thousands of sessions at once, it now and then drops a fresh
/// one unanswered.
const OPEN_ATTEMPTS: u32 = 3;

/// Opens an XMPP stream over WebSocket ([`open_stream_once`]), again when
/// ejabberd closed it before its features: nothing was measured yet, and
/// Meridian's sessions likewise wait out `busy` while they open. Returns
/// the socket and the `<open>` element, sent again after authentication.
async fn open_stream(url: &str) -> anyhow::Result<(Socket, String)> {
    let mut attempt = 1;
    loop {
        match open_stream_once(url).await {
            Err(error) if attempt < OPEN_ATTEMPTS && error.is::<ClosedEarly>() => {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Connects, sends the stream's `<open>` and waits for its features.
async fn open_stream_once(url: &str) -> anyhow::Result<(Socket, String)> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let open = format!(
        r#"<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="{DOMAIN}" version="1.0"/>"#
    );
    socket.send(Message::text(open.clone())).await?;
    expect(&mut socket, "features").await?;
    Ok((socket, open))
}

/// Opens an XMPP stream ([`open_stream`]) and signs `user` in: SASL PLAIN,
/// binding `resource`, initial presence. A stream closed after it opened
/// fails at once.
async fn sign_in(url: &str, user: &str, resource: &str) -> anyhow::Result<Socket> {
    let (mut socket, open) = open_stream(url).await?;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
    socket
        .send(Message::text(format!(
            r#"<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">{credentials}</auth>"#
        )))
        .await?;
    expect(&mut socket, "success").await?;
    socket.send(Message::text(open)).await?;
    expect(&mut socket, "features").await?;
    socket
        .send(Message::text(format!(
            r#"<iq xmlns="jabber:client" type="set" id="bind"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>{resource}</resource></bind></iq>"#
        )))
        .await?;
    let bound = expect(&mut socket, "iq").await?;
    let expected = format!("{user}@{DOMAIN}/{resource}");
    if bound.id.as_deref() != Some("bind")
        || bound.kind.as_deref() != Some("result")
        || bound.jid.as_deref() != Some(expected.as_str())
    {
        bail!("{user}: binding {resource} answered {bound:?}, not the JID {expected}");
    }
    socket
        .send(Message::text(r#"<presence xmlns="jabber:client"/>"#))
        .await?;
    Ok(socket)
}

/// A signed-in account that sends to one peer. Lanes share it; what the
/// server sends it (its own presence, and an error for a message it could
/// not route) is read by a task, which counts the errors.
#[derive(Clone)]
pub(crate) struct Sender {
    sink: Arc<Mutex<SplitSink<Socket, Message>>>,
    to: Arc<str>,
    bounced: Arc<AtomicU64>,
}

impl Sender {
    async fn connect(url: &str, user: &str, peer: &str) -> anyhow::Result<Self> {
        let (sink, mut stream): (_, SplitStream<Socket>) =
            sign_in(url, user, RESOURCE).await?.split();
        let bounced = Arc::new(AtomicU64::new(0));
        let counted = bounced.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                let errors = stanzas(&text).map_or(0, |stanzas| {
                    stanzas
                        .iter()
                        .filter(|s| s.name == "message" && s.kind.as_deref() == Some("error"))
                        .count()
                });
                counted.fetch_add(errors as u64, Ordering::Relaxed);
            }
        });
        Ok(Self {
            sink: Arc::new(Mutex::new(sink)),
            to: format!("{peer}@{DOMAIN}/{RESOURCE}").into(),
            bounced,
        })
    }

    /// Messages the server sent back as undeliverable so far.
    pub(crate) fn bounced(&self) -> u64 {
        self.bounced.load(Ordering::Relaxed)
    }

    /// Writes a chat message to the peer's bound resource.
    pub(crate) async fn send(&self, id: &str, body: &str) -> anyhow::Result<()> {
        let stanza = format!(
            r#"<message xmlns="jabber:client" to="{}" type="chat" id="{id}"><body>{body}</body></message>"#,
            self.to
        );
        self.sink.lock().await.send(Message::text(stanza)).await?;
        Ok(())
    }
}

/// A signed-in account that reads what it is sent.
pub(crate) struct Receiver {
    /// Boxed: a WebSocket's buffers are large beside a Meridian session.
    socket: Box<Socket>,
}

impl Receiver {
    pub(crate) async fn connect(url: &str, user: &str, resource: &str) -> anyhow::Result<Self> {
        Ok(Self {
            socket: Box::new(sign_in(url, user, resource).await?),
        })
    }

    /// The bodies of the next frame that carries messages; `None` once the
    /// stream has ended or failed.
    pub(crate) async fn next_bodies(&mut self) -> Option<Vec<String>> {
        loop {
            let Message::Text(text) = self.socket.next().await?.ok()? else {
                continue;
            };
            let stanzas = stanzas(&text).ok()?;
            if stanzas
                .iter()
                .any(|s| s.name == "close" || s.name == "error")
            {
                return None;
            }
            let bodies: Vec<String> = stanzas
                .into_iter()
                .filter(|s| s.name == "message")
                .filter_map(|s| s.body)
                .collect();
            if !bodies.is_empty() {
                return Some(bodies);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_frame_gives_its_body() {
        let frame = r#"<message xmlns="jabber:client" from="a@localhost/bench" to="b@localhost/bench" type="chat" id="l1"><body>t=123</body></message>"#;
        let read = stanzas(frame).expect("well-formed");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].name, "message");
        assert_eq!(read[0].kind.as_deref(), Some("chat"));
        assert_eq!(read[0].body.as_deref(), Some("t=123"));
    }

    #[test]
    fn a_bind_answer_gives_its_jid() {
        let frame = r#"<iq xmlns="jabber:client" type="result" id="bind"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><jid>b@localhost/bench</jid></bind></iq>"#;
        let read = stanzas(frame).expect("well-formed");
        assert_eq!(read[0].jid.as_deref(), Some("b@localhost/bench"));
        assert_eq!(read[0].body, None);
    }

    #[test]
    fn an_empty_element_and_a_prefixed_one_are_named_locally() {
        let read = stanzas(
            r#"<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/><stream:features xmlns:stream="http://etherx.jabber.org/streams"><mechanisms/></stream:features>"#,
        )
        .expect("well-formed");
        let names: Vec<&str> = read.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["success", "features"]);
    }

    #[test]
    fn entity_references_in_a_body_are_resolved() {
        let frame =
            r#"<message type="chat" id="l2"><body>a &amp; b &lt;&#x26;&#38;&gt;</body></message>"#;
        let read = stanzas(frame).expect("well-formed");
        assert_eq!(read[0].body.as_deref(), Some("a & b <&&>"));
        assert_eq!(read[0].id.as_deref(), Some("l2"));
        assert!(stanzas("<message><body>&nosuch;</body></message>").is_err());
    }

    #[test]
    fn a_malformed_frame_is_an_error() {
        assert!(stanzas("<message><body>x</message>").is_err());
    }
}
