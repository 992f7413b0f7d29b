//! Running the real `meridian` binary from a test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

#[allow(dead_code)] // not every test binary writes region files with [tls]
/// The `[tls]` table of `region`'s file, at the files `meridian certs
/// init` writes into `certs/` of the region directory.
pub fn tls_table(region: &str) -> String {
    format!(
        "[tls]\nca = \"certs/ca.pem\"\n\
         core_cert = \"certs/core.{region}.pem\"\ncore_key = \"certs/core.{region}.key\"\n\
         gateway_cert = \"certs/gateway.{region}.pem\"\ngateway_key = \"certs/gateway.{region}.key\"\n"
    )
}

#[allow(dead_code)] // nor runs certs init
/// Runs `meridian certs init` for the region files in `regions`.
pub fn certs_init(regions: &std::path::Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["certs", "init", "--regions-dir"])
        .arg(regions)
        .stdout(Stdio::null())
        .status()
        .expect("run meridian certs init");
    assert!(status.success(), "meridian certs init: {status}");
}

#[allow(dead_code)] // service_identities runs its own commands
/// Runs `meridian <args>`; returns the child and the REST base URL of the
/// first region it prints.
pub fn start_meridian<I, S>(args: I) -> (Child, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meridian");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("meridian printed its URLs")
            .expect("read");
        if let Some(rest) = line.trim().strip_prefix("REST") {
            let url = rest.split_whitespace().next().expect("url");
            break url.trim_end_matches("/v1").to_string();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe (a test
    // helper thread, outside any simulated path).
    #[allow(clippy::disallowed_methods)]
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}
