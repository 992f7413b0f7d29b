//! The web client (`/app`) in headless Chromium, driven over WebDriver
//! (`chromedriver`): Alice registers at us-east's gateway and Bob at
//! eu-west's, through a proxy that stands for his network. They chat 1:1
//! and Alice sees her message marked read; Bob's network drops (the proxy
//! cut) while Alice sends five messages, and when it returns his page
//! reconnects and shows every message once, in order; Bob sends an image
//! that Alice's page shows. A second deployment keeps messages 3 s: Bob's
//! page, offline past that, is told of the gap when it comes back.
//! Screenshots of each step are written under the test's target
//! directory, taken when the page shows what it must.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use meridian_faultproxy::Proxy;
use meridian_seams::SystemClock;
use meridian_seams::net::TokioNetwork;
use serde_json::json;

mod common;
mod webdriver;

use webdriver::Browser;

/// Every local port moved by this much: the deployment of this test only,
/// every port (26010–28030) below the kernel's ephemeral range (32768 up),
/// from which other connections draw their local ports.
const PORT_OFFSET: u16 = 19_000;
/// The short-retention deployment's (22010–24030, clear of the other's).
const SHORT_RETENTION_PORT_OFFSET: u16 = 15_000;

/// A script that is true once the open conversation shows `text`.
fn shows(text: &str) -> String {
    format!(
        "return [...document.querySelectorAll('#messages li .text')].some(e => e.textContent === {})",
        serde_json::to_string(text).unwrap()
    )
}

/// Registers `name` in the page at `base`; the user id the page shows.
async fn register(browser: &Browser, base: &str, name: &str) -> String {
    browser.goto(&format!("{base}/app")).await;
    browser.find("#register-name").await.type_text(name).await;
    browser.find("#register-form button").await.click().await;
    browser
        .wait_for(
            "the session to open",
            "return document.getElementById('status').dataset.state === 'online' \
             && document.getElementById('my-user-id').textContent.length > 0",
            30,
        )
        .await;
    browser.find("#my-user-id").await.text().await
}

/// Types `text` into the open conversation, sends it, and waits until the
/// server acknowledged it (its mark is no longer `sending`).
async fn say(browser: &Browser, text: &str) {
    browser.find("#message-input").await.type_text(text).await;
    browser.find("#send-button").await.click().await;
    let acknowledged = format!(
        "return [...document.querySelectorAll('#messages li.mine')].some(li => \
         li.querySelector('.text').textContent === {} && !li.querySelector('.mark').textContent.includes('sending'))",
        serde_json::to_string(text).unwrap()
    );
    browser.wait_for(text, &acknowledged, 30).await;
}

/// A screenshot of `browser` saved as `name`.png, taken while the page's
/// text holds every one of `expected`.
async fn screenshot(browser: &Browser, name: &str, expected: &[&str]) {
    let text = browser.text().await;
    for needle in expected {
        assert!(
            text.contains(needle),
            "{name}: the page lacks {needle:?}:\n{text}"
        );
    }
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}: not a PNG");
    assert!(
        png.len() > 10_000,
        "{name}: a blank screenshot ({} bytes)",
        png.len()
    );
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-client");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Bob's network, a proxy to `gateway` (`host:port`) that the test cuts.
async fn network_to(gateway: String) -> Proxy {
    Proxy::start(
        TokioNetwork::shared(),
        SystemClock::shared(),
        "127.0.0.1:0".parse().unwrap(),
        gateway,
        Duration::ZERO,
    )
    .await
    .unwrap()
}

/// Cuts `network` and waits until `browser`'s page noticed.
async fn go_offline(network: &Proxy, browser: &Browser) {
    network.cut();
    browser
        .wait_for(
            "the page to notice the network is gone",
            "return document.getElementById('status').dataset.state !== 'online'",
            60,
        )
        .await;
}

/// Opens the direct conversation with `peer` in `browser`.
async fn open_direct(browser: &Browser, peer: &str) {
    browser.find("#peer-input").await.type_text(peer).await;
    browser.find("#direct-form button").await.click().await;
    browser
        .wait_for(
            "the chat to open",
            "return !document.getElementById('send-form').hidden",
            30,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_offline_past_retention_is_told_of_the_gap() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (_server, _) = common::dev_in(
        dir.path(),
        SHORT_RETENTION_PORT_OFFSET,
        &["--no-dns", "--retention-secs", "3", "--sweep-secs", "1"],
    );
    let offset = SHORT_RETENTION_PORT_OFFSET;
    let us_east = format!("http://127.0.1.1:{}", 8010 + offset);
    let network = network_to(format!("127.0.2.1:{}", 8020 + offset)).await;
    let bobs_gateway = format!("http://{}", network.addr());

    let driver = webdriver::Driver::start(common::free_port()).await;
    let profiles = tempfile::tempdir().unwrap();
    let alice = driver.browser(&profiles.path().join("alice")).await;
    let bob = driver.browser(&profiles.path().join("bob")).await;
    register(&alice, &us_east, "Alice").await;
    let bob_id = register(&bob, &bobs_gateway, "Bob").await;
    open_direct(&alice, &bob_id).await;
    say(&alice, "before the gap").await;
    bob.find("#conversations li").await.click().await;
    bob.wait_for("the first message", &shows("before the gap"), 30)
        .await;

    // Offline while Alice sends, until eu-west's sweep has passed the
    // messages Bob's device never acknowledged.
    go_offline(&network, &bob).await;
    say(&alice, "lost to retention").await;
    let metrics = format!("http://127.0.2.1:{}/metrics", 8020 + offset);
    let mut floors_moved = false;
    for _ in 0..300 {
        let (_, text) = common::get(&metrics).await;
        floors_moved = text.lines().any(|line| {
            line.starts_with("meridian_retention_floors_moved_total{region=\"eu-west\"}")
                && !line.ends_with(" 0")
        });
        if floors_moved {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        floors_moved,
        "eu-west's sweep moved Bob's floor within 30 s"
    );
    network.heal();
    bob.wait_for(
        "the gap notice",
        "return !document.getElementById('gap-notice').hidden",
        60,
    )
    .await;
    screenshot(&bob, "5-bob-told-of-a-gap", &["expired", "online"]).await;
    assert!(
        !bob.text().await.contains("lost to retention"),
        "the expired message is not shown"
    );
    // Delivery goes on after the gap.
    say(&alice, "after the gap").await;
    bob.wait_for("the message after the gap", &shows("after the gap"), 30)
        .await;

    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_chat_across_regions_and_one_comes_back_after_losing_its_network() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (_server, _) = common::dev_in(dir.path(), PORT_OFFSET, &["--no-dns"]);
    let us_east = format!("http://127.0.1.1:{}", 8010 + PORT_OFFSET);
    // Bob's network: everything his browser says to eu-west passes here.
    let network = network_to(format!("127.0.2.1:{}", 8020 + PORT_OFFSET)).await;
    let bobs_gateway = format!("http://{}", network.addr());

    let driver = webdriver::Driver::start(common::free_port()).await;
    let profiles = tempfile::tempdir().unwrap();
    let alice = driver.browser(&profiles.path().join("alice")).await;
    let bob = driver.browser(&profiles.path().join("bob")).await;
    let alice_id = register(&alice, &us_east, "Alice").await;
    let bob_id = register(&bob, &bobs_gateway, "Bob").await;
    assert!(alice_id.ends_with("@us-east"), "{alice_id}");
    assert!(bob_id.ends_with("@eu-west"), "{bob_id}");

    // Alice opens the chat with Bob and says hello; Bob's page lists the
    // conversation when the message arrives, and he answers.
    open_direct(&alice, &bob_id).await;
    say(&alice, "hello from us-east").await;
    bob.find("#conversations li").await.click().await;
    bob.wait_for("Alice's hello", &shows("hello from us-east"), 30)
        .await;
    say(&bob, "hi from eu-west").await;
    alice
        .wait_for("Bob's answer", &shows("hi from eu-west"), 30)
        .await;
    // Bob had the conversation open: Alice's hello is marked read.
    alice
        .wait_for(
            "the read mark",
            "return [...document.querySelectorAll('#messages li.mine .mark')]\
             .some(m => m.textContent.includes('read'))",
            30,
        )
        .await;
    screenshot(
        &alice,
        "1-alice-chats",
        &["hello from us-east", "hi from eu-west", "read", "online"],
    )
    .await;

    // Bob's network drops while Alice sends five messages.
    go_offline(&network, &bob).await;
    let away: Vec<String> = (1..=5)
        .map(|i| format!("while you were away {i}"))
        .collect();
    for text in &away {
        say(&alice, text).await;
    }
    screenshot(&bob, "2-bob-offline", &["hi from eu-west"]).await;
    network.heal();
    bob.wait_for(
        "Bob's page to reconnect",
        "return document.getElementById('status').dataset.state === 'online'",
        60,
    )
    .await;
    bob.wait_for("the last message", &shows(&away[4]), 60).await;
    let shown: Vec<String> = serde_json::from_value(
        bob.script(
            "return [...document.querySelectorAll('#messages li .text')].map(e => e.textContent)",
            json!([]),
        )
        .await,
    )
    .unwrap();
    let mut expected = vec![
        "hello from us-east".to_string(),
        "hi from eu-west".to_string(),
    ];
    expected.extend(away.iter().cloned());
    assert_eq!(shown, expected, "every message once, in order");
    screenshot(&bob, "3-bob-back", &["while you were away 5", "online"]).await;

    // Bob sends a picture; Alice's page shows it.
    let image =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gradient.png");
    bob.find("#image-input")
        .await
        .type_text(&image.display().to_string())
        .await;
    say(&bob, "a picture").await;
    alice
        .wait_for(
            "the picture",
            "return [...document.querySelectorAll('#messages img')]\
             .some(i => i.complete && i.naturalWidth > 0)",
            60,
        )
        .await;
    screenshot(&alice, "4-alice-sees-the-picture", &["a picture"]).await;

    alice.close().await;
    bob.close().await;
}
