//! `meridian terraform-vars`: Terraform's per-region files come from the
//! region files alone. The committed ones are current; a fourth region is
//! one more file and a regeneration, which only adds; a region that
//! cannot be provisioned is refused with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn terraform_vars(regions: &Path, out: &Path, check: bool) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meridian"));
    command
        .arg("terraform-vars")
        .arg("--regions-dir")
        .arg(regions)
        .arg("--out")
        .arg(out);
    if check {
        command.arg("--check");
    }
    command.output().unwrap()
}

#[test]
fn the_committed_terraform_files_are_what_the_region_files_generate() {
    let output = terraform_vars(
        &repo().join("regions"),
        &repo().join("terraform/envs/prod"),
        true,
    );
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A copy of `regions/` (the region files only) in a temporary directory.
fn regions_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("regions")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// `regions/us-east.toml` renamed to `name`, in `aws_region`, on `cidr`.
fn region_file(name: &str, aws_region: &str, cidr: &str) -> String {
    std::fs::read_to_string(repo().join("regions/us-east.toml"))
        .unwrap()
        .replace("us-east-1", "AWS-REGION")
        .replace("us-east", name)
        .replace("AWS-REGION", aws_region)
        .replace("10.10.0.0/16", cidr)
}

#[test]
fn a_fourth_region_is_a_region_file_and_a_regeneration_that_only_adds() {
    let regions = regions_copy();
    let before = tempfile::tempdir().unwrap();
    assert!(
        terraform_vars(regions.path(), before.path(), false)
            .status
            .success()
    );
    std::fs::write(
        regions.path().join("sa-east.toml"),
        region_file("sa-east", "sa-east-1", "10.40.0.0/16"),
    )
    .unwrap();
    let after = tempfile::tempdir().unwrap();
    let output = terraform_vars(regions.path(), after.path(), false);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let vars: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(after.path().join("regions.auto.tfvars.json")).unwrap(),
    )
    .unwrap();
    let new = &vars["regions"]["sa-east"];
    assert_eq!(new["aws_region"], "sa-east-1");
    assert_eq!(new["vpc_cidr"], "10.40.0.0/16");
    assert_eq!(new["core_host"], "core.sa-east.meridian.internal");
    assert_eq!(
        vars["regions"]["us-east"]["peers"],
        serde_json::json!(["ap-southeast", "eu-west", "sa-east"]),
        "every region peers with the new one"
    );
    // Every line of the three-region files is still there: the change
    // only adds (the new region's instances, its pairs, its peer entries).
    for file in ["regions.tf"] {
        let old = std::fs::read_to_string(before.path().join(file)).unwrap();
        let new = std::fs::read_to_string(after.path().join(file)).unwrap();
        for line in old.lines() {
            assert!(new.contains(line), "{file}: `{line}` is gone");
        }
        assert!(new.contains("sa-east"), "{file} has the new region");
    }
}

#[test]
fn a_region_that_cannot_be_provisioned_is_refused_with_the_reason() {
    for (file, reason) in [
        (
            region_file("sa-east", "sa-east-1", "10.10.0.0/16"),
            "overlap",
        ),
        (
            region_file("sa-east", "us-east-1", "10.40.0.0/16"),
            "both in AWS region us-east-1",
        ),
        (
            {
                let file = region_file("sa-east", "sa-east-1", "10.40.0.0/16");
                file[..file.find("[aws]").unwrap()].to_string()
            },
            "no [aws] section",
        ),
        (
            region_file("sa-east", "sa-east-1", "10.40.0.1/16"),
            "host bits",
        ),
    ] {
        let regions = regions_copy();
        std::fs::write(regions.path().join("sa-east.toml"), file).unwrap();
        let out = tempfile::tempdir().unwrap();
        let output = terraform_vars(regions.path(), out.path(), false);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(reason),
            "{reason}: {stderr}"
        );
    }
}
