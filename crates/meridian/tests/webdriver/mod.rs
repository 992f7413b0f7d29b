//! A small W3C WebDriver client over reqwest, enough to drive headless
//! Chromium through `chromedriver`: sessions, navigation, elements by CSS
//! selector, typing, clicking, text, script and screenshots.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The W3C key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A `chromedriver` process, killed when dropped.
pub struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts `chromedriver` on `port` and waits until it answers.
    pub async fn start(port: u16) -> Self {
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt: chromium-driver) on the PATH");
        let driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        for _ in 0..100 {
            if let Ok(answer) = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                && answer.status().is_success()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer on port {port}");
    }

    /// A new headless Chromium window with its own profile in `profile`.
    pub async fn browser(&self, profile: &Path) -> Browser {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let answer = call(
            &self.http,
            "POST",
            &format!("{}/session", self.base),
            Some(capabilities),
        )
        .await;
        let id = answer["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Browser {
            http: self.http.clone(),
            session: format!("{}/session/{id}", self.base),
        }
    }
}

/// One browser window (a WebDriver session).
pub struct Browser {
    http: reqwest::Client,
    session: String,
}

/// An element of the page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

async fn call(http: &reqwest::Client, method: &str, url: &str, body: Option<Value>) -> Value {
    let request = match method {
        "GET" => http.get(url),
        "DELETE" => http.delete(url),
        _ => http.post(url).json(&body.unwrap_or_else(|| json!({}))),
    };
    let answer: Value = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: not JSON: {e}"));
    if let Some(error) = answer["value"]["error"].as_str() {
        panic!("{method} {url}: {error}: {}", answer["value"]["message"]);
    }
    answer["value"].clone()
}

impl Browser {
    async fn post(&self, path: &str, body: Value) -> Value {
        call(
            &self.http,
            "POST",
            &format!("{}{path}", self.session),
            Some(body),
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        call(&self.http, "GET", &format!("{}{path}", self.session), None).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The first element matching `css`, waiting up to 30 s for one.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let mut last = Value::Null;
        for _ in 0..300 {
            let answer = self
                .http
                .post(format!("{}/element", self.session))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .expect("chromedriver answers");
            let value: Value = answer.json().await.expect("JSON");
            if let Some(id) = value["value"][ELEMENT_KEY].as_str() {
                return Element {
                    browser: self,
                    id: id.to_string(),
                };
            }
            last = value;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = self.get("/url").await;
        let page = self.text().await;
        panic!("no element matches {css} at {url} ({last}); the page shows:\n{page}");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Waits up to `seconds` for `script` to return true.
    pub async fn wait_for(&self, what: &str, script: &str, seconds: u64) {
        for _ in 0..seconds * 10 {
            if self.script(script, json!([])).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let page = self
            .script("return document.body.innerText", json!([]))
            .await;
        panic!("waited {seconds} s for {what}; the page shows:\n{page}");
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.script("return document.body.innerText", json!([]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let encoded = self.get("/screenshot").await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64"))
            .expect("a PNG")
    }

    pub async fn close(self) {
        call(&self.http, "DELETE", &self.session, None).await;
    }
}

impl Element<'_> {
    pub async fn type_text(&self, text: &str) {
        self.browser
            .post(
                &format!("/element/{}/value", self.id),
                json!({ "text": text }),
            )
            .await;
    }

    pub async fn click(&self) {
        self.browser
            .post(&format!("/element/{}/click", self.id), json!({}))
            .await;
    }

    pub async fn text(&self) -> String {
        self.browser
            .get(&format!("/element/{}/text", self.id))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}
