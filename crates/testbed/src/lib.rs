//! Real external components for tests, started by the test tooling.
//!
//! [`Broker`] runs a tansu Kafka-protocol broker (one per region) on a free
//! loopback port with SQLite storage in a temporary directory (tansu's
//! `memory://` storage loses messages when a consumer starts past offset 0).
//! Tests of the Kafka path fail, never skip, when tansu is missing: the test
//! command installs it (`cargo install tansu --version 0.6.0 --locked
//! --features libsql`).
//!
//! # What it must not touch
//! Meridian's own crates: it starts processes and reports where they listen.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use meridian_seams::net::SharedNetwork;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a broker may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Starting a component failed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// The binary is not installed where the tooling looks.
    #[error("{0} not found: install it with `{1}` (or set {2})")]
    Missing(&'static str, &'static str, &'static str),
    /// The process could not run or did not become ready.
    #[error("{0}")]
    Start(String),
}

/// Where tansu is: `$TANSU`, else `~/.cargo/bin/tansu`, else `tansu` on PATH.
fn tansu_binary() -> Result<PathBuf, TestbedError> {
    if let Some(path) = std::env::var_os("TANSU") {
        return Ok(PathBuf::from(path));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = PathBuf::from(home).join(".cargo/bin/tansu");
        if path.exists() {
            return Ok(path);
        }
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("tansu"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.exists());
    on_path.ok_or(TestbedError::Missing(
        "tansu",
        "cargo install tansu --version 0.6.0 --locked --features libsql",
        "TANSU",
    ))
}

/// A free loopback port, found through the network seam (the caller's
/// process or child binds it right after).
///
/// # Errors
/// When no loopback port can be bound.
pub async fn free_port(network: &SharedNetwork) -> std::io::Result<u16> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    Ok(network.bind(any).await?.local_addr()?.port())
}

/// A running tansu broker; killed when dropped.
pub struct Broker {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("port", &self.port).finish()
    }
}

impl Broker {
    /// Starts a broker on a free loopback port (found through `network`)
    /// and waits until it reports ready, at most 60 s.
    ///
    /// # Errors
    /// tansu missing, or not ready.
    pub async fn start(network: &SharedNetwork) -> Result<Self, TestbedError> {
        let dir = tempfile::tempdir().map_err(|e| TestbedError::Start(e.to_string()))?;
        // A port taken between the probe and tansu's bind fails loudly
        // below ("exited before ready"); retried on a new port.
        for _ in 0..3 {
            let port = free_port(network)
                .await
                .map_err(|e| TestbedError::Start(format!("no free port: {e}")))?;
            if let Some(child) = spawn_ready(dir.path(), port).await? {
                return Ok(Self { child, port, dir });
            }
        }
        Err(TestbedError::Start(
            "tansu exited (or stayed silent for 60 s) before it was ready".into(),
        ))
    }

    /// `host:port` for Kafka clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILLs the broker (`kill -9`) and reaps it; its data stays for
    /// [`Broker::restart`].
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts the broker again on its port over its data, and waits until
    /// it is ready.
    ///
    /// # Errors
    /// Not ready within 60 s (the port taken meanwhile, among others).
    pub async fn restart(&mut self) -> Result<(), TestbedError> {
        let _ = self.child.kill().await;
        match spawn_ready(self.dir.path(), self.port).await? {
            Some(child) => {
                self.child = child;
                Ok(())
            }
            None => Err(TestbedError::Start(format!(
                "tansu did not come back on port {}",
                self.port
            ))),
        }
    }
}

/// Runs tansu on `port` with its data in `dir`; `None` when it exits or
/// stays silent before it says it is ready.
async fn spawn_ready(dir: &std::path::Path, port: u16) -> Result<Option<Child>, TestbedError> {
    let binary = tansu_binary()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let mut child = Command::new(&binary)
        .arg("broker")
        .arg("--listener-url")
        .arg(&url)
        .arg("--advertised-listener-url")
        .arg(&url)
        // tansu reads the SQLite path relative to its working directory
        // (an absolute path is mangled).
        .arg("--storage-engine")
        .arg(format!("sqlite://tansu-{port}.db"))
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| TestbedError::Start(format!("running {}: {e}", binary.display())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| TestbedError::Start("no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(READY_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("ready") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !ready {
        let _ = child.kill().await;
        return Ok(None);
    }
    // Keep draining so tansu never blocks on a full pipe; the task ends
    // when the broker exits.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Some(child))
}

impl Drop for Broker {
    fn drop(&mut self) {
        // The runtime reaps the process once it is gone.
        let _ = self.child.start_kill();
    }
}
