//! The `meridian` binary's side of the core's trust boundary: the
//! production profile refuses a region without `[tls]` (unless told
//! `--insecure-core`), and `meridian certs init` issues what the region
//! files name, keeping what is valid when run again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

mod common;

fn region_file(dir: &Path, name: &str, tls: bool) {
    let tls = if tls {
        common::tls_table(name)
    } else {
        String::new()
    };
    let text = format!(
        "name = \"{name}\"\n[listen]\ngateway = \"127.0.0.1:0\"\ncore = \"127.0.0.1:0\"\n\
         [advertise]\ngateway = \"127.0.0.1:1\"\ncore = \"127.0.0.1:2\"\n\
         [local]\ngateway = \"127.0.0.1:0\"\ncore = \"127.0.0.1:0\"\n{tls}"
    );
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
}

fn meridian(args: &[&str], regions: &Path, data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .arg("--regions-dir")
        .arg(regions)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "error")
        .output()
        .expect("run meridian")
}

#[test]
fn the_production_profile_refuses_a_core_without_tls_and_says_why() {
    let (regions, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    region_file(regions.path(), "us-east", false);
    let output = meridian(
        &["core", "--profile", "production", "--region", "us-east"],
        regions.path(),
        data.path(),
    );
    assert!(!output.status.success(), "started without [tls]");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no [tls]") && stderr.contains("--insecure-core"),
        "{stderr}"
    );
    // Nothing was opened: the refusal comes before the store.
    assert!(std::fs::read_dir(data.path()).unwrap().next().is_none());
}

#[test]
fn certs_init_issues_what_the_region_files_name_and_keeps_it() {
    let regions = tempfile::tempdir().unwrap();
    region_file(regions.path(), "us-east", true);
    region_file(regions.path(), "eu-west", true);
    let init = || {
        let output = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["certs", "init", "--regions-dir"])
            .arg(regions.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let first = init();
    assert!(first.contains("new CA"), "{first}");
    for identity in [
        "core.us-east",
        "gateway.us-east",
        "core.eu-west",
        "gateway.eu-west",
    ] {
        assert!(first.contains(&format!("issued  {identity}")), "{first}");
        let key = regions.path().join(format!("certs/{identity}.key"));
        assert!(key.exists(), "{}", key.display());
    }
    let ca = std::fs::read(regions.path().join("certs/ca.pem")).unwrap();
    let again = init();
    assert!(
        again.contains("CA kept") && !again.contains("issued"),
        "{again}"
    );
    assert_eq!(
        std::fs::read(regions.path().join("certs/ca.pem")).unwrap(),
        ca
    );
}
